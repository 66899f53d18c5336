//! Resource adaptors: how a pilot is placed on a resource (the seeds' SAGA layer).
//!
//! Every adaptor implements [`ResourceAdaptor`] and lives in a folder of its own with a
//! `docs.md` (URL form, what must be installed, what is and is not supported). An adaptor
//! submits the *pilot job*, whose only task is to start a pilot agent; it knows nothing of
//! units, which reach the agent through the coordination store.
//!
//! | scheme | adaptor | tested against |
//! |---|---|---|
//! | `local://` | [`local::Local`] (agent in-process, or a `pstar agent` child over Redis) | this machine |
//! | `ssh://` | [`batch::BatchAdaptor`] over [`ssh::Fork`] | a real sshd |
//! | `slurm://`, `slurm+ssh://` | [`batch::BatchAdaptor`] over [`slurm::Slurm`] | a real Slurm 22.05 |
//! | `sge://`, `sge+ssh://` | [`batch::BatchAdaptor`] over [`sge::GridEngine`] | a real Grid Engine 8.1 |
//! | `pbs://`, `pbs+ssh://` | [`batch::BatchAdaptor`] over [`pbs::Pbs`] | recorded outputs only |
//! | `lsf://` | [`batch::BatchAdaptor`] over [`lsf::Lsf`] | recorded outputs only |
//! | `condor://` | [`batch::BatchAdaptor`] over [`condor::Condor`] | recorded outputs only |

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use pstar_coordination::{Coordination, PilotRecord};
use pstar_model::{PilotComputeDescription, Scheme};

pub mod batch;
pub mod condor;
pub mod host;
pub mod local;
pub mod lsf;
pub mod pbs;
pub mod sge;
pub mod slurm;
pub mod ssh;

/// What an adaptor needs to place one pilot.
pub struct PilotJob {
    /// The pilot's id, description and sandbox.
    pub record: PilotRecord,
    /// The store the agent will coordinate through.
    pub coordination: Arc<dyn Coordination>,
}

/// An adaptor's handle on a submitted pilot job (a batch job id, a process id...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobId(pub String);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The state of a pilot job as its resource sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Waiting in the resource's queue.
    Queued,
    /// Running (its agent may still be starting).
    Running,
    /// Gone; `detail` says why when it did not end cleanly.
    Finished { ok: bool, detail: Option<String> },
}

/// Why an adaptor could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum AdaptorError {
    /// The adaptor cannot serve this pilot in this configuration.
    #[error("{0}")]
    Unsupported(String),
    /// The resource refused or failed the request; the message is the resource's own.
    #[error("{0}")]
    Resource(String),
    /// A step of bringing a pilot up failed or timed out.
    #[error("bootstrap failed at `{step}`: {reason}")]
    Bootstrap { step: &'static str, reason: String },
    #[error("unknown pilot job {0}")]
    UnknownJob(JobId),
    /// A pilot whose agent runs elsewhere, with a store only this process can reach.
    #[error(
        "`{scheme}://` pilots need a coordination store their agents can reach (a Redis), \
         not the in-process one"
    )]
    NeedsNetworkedStore { scheme: Scheme },
}

impl AdaptorError {
    /// A failure of bootstrap step `step` (`connect`, `copy`, `submit`...).
    pub fn bootstrap(step: &'static str, reason: impl std::fmt::Display) -> Self {
        match reason.to_string() {
            // Already names its step.
            r if r.starts_with("bootstrap failed at") => AdaptorError::Resource(r),
            reason => AdaptorError::Bootstrap { step, reason },
        }
    }
}

/// One file of a pilot job (a job script, a submit description), written into the
/// pilot's sandbox before submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFile {
    /// The file's name in the sandbox.
    pub name: String,
    pub content: String,
}

/// How long each step of bringing a pilot up may take before the pilot fails with the
/// step's name and the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootstrapTimeouts {
    /// Opening the SSH connection (and resolving the sandbox there).
    pub connect: Duration,
    /// Copying the `pstar` binary to a remote host.
    pub copy: Duration,
    /// Writing the job's files and running the submit command.
    pub submit: Duration,
    /// From the job running to its agent's first contact with the store.
    pub agent_start: Duration,
}

impl Default for BootstrapTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(30),
            copy: Duration::from_secs(300),
            submit: Duration::from_secs(60),
            agent_start: pstar_model::Settings::default().agent_start_timeout,
        }
    }
}

/// What the adaptors of a session share.
#[derive(Debug, Clone)]
pub struct AdaptorConfig {
    pub timeouts: BootstrapTimeouts,
    /// How often batch jobs' states are asked.
    pub poll_interval: Duration,
    /// The `pstar` program agents run: started here for local pilots, copied to remote
    /// hosts for the others (a static build runs on any Linux of the same architecture:
    /// `scripts/build-static.sh`). `None`: see [`agent_program`].
    pub agent_binary: Option<PathBuf>,
}

impl Default for AdaptorConfig {
    fn default() -> Self {
        Self {
            timeouts: Default::default(),
            poll_interval: pstar_model::Settings::default().poll_interval,
            agent_binary: None,
        }
    }
}

/// One kind of resource: submit a pilot job, ask its state, cancel it.
#[async_trait]
pub trait ResourceAdaptor: Send + Sync + 'static {
    /// The URL scheme this adaptor serves.
    fn scheme(&self) -> Scheme;

    /// The directory on the resource under which a pilot with `description` keeps its
    /// sandbox (`default` is the session's local sandbox root).
    async fn sandbox_root(
        &self,
        description: &PilotComputeDescription,
        default: &Path,
    ) -> Result<PathBuf, AdaptorError> {
        Ok(local_root(description, default))
    }

    /// Submits the pilot job; returns once the resource accepted it.
    async fn submit(&self, job: PilotJob) -> Result<JobId, AdaptorError>;

    /// The state of `pilot`'s job (named by `pilot.job`) on the resource.
    async fn state(&self, pilot: &PilotRecord) -> Result<JobState, AdaptorError>;

    /// Follows an already submitted job (a pilot a resumed manager takes over) as
    /// [`submit`](Self::submit) does for the jobs it starts: a job that ends badly fails
    /// its pilot through `job.coordination`. Returns at once; by default it does nothing.
    async fn follow(&self, job: PilotJob) -> Result<(), AdaptorError> {
        let _ = job;
        Ok(())
    }

    /// Ends `pilot`'s job on the resource (the agent is asked to stop first, through the
    /// store; this is what makes sure it is gone).
    async fn cancel(&self, pilot: &PilotRecord) -> Result<(), AdaptorError>;

    /// Ends `pilot`'s job at once, giving its agent no time to report (a second Ctrl-C, a
    /// store that is gone). Where the resource has nothing quicker, the same as `cancel`.
    async fn kill(&self, pilot: &PilotRecord) -> Result<(), AdaptorError> {
        self.cancel(pilot).await
    }

    /// What the resource kept of `pilot`'s job: its output and the agent's log.
    async fn logs(&self, pilot: &PilotRecord) -> Result<String, AdaptorError> {
        let mut text = String::new();
        for file in ["agent.log", "pilot.out", "pilot.err"] {
            if let Ok(t) = std::fs::read_to_string(pilot.sandbox.join(file)) {
                text.push_str(&format!("==> {file} <==\n{t}\n"));
            }
        }
        Ok(text)
    }

    /// The files that would be submitted for `pilot` with its agent reaching the store at
    /// `url`, without submitting anything (`pstar pilot script`).
    fn script(
        &self,
        pilot: &PilotRecord,
        session: &str,
        url: &str,
    ) -> Result<Vec<JobFile>, AdaptorError> {
        let _ = (pilot, session, url);
        Err(AdaptorError::Unsupported(format!(
            "`{}` pilots have no job script",
            self.scheme()
        )))
    }
}

/// The local sandbox root for `description`: its working directory, else `default`.
pub fn local_root(description: &PilotComputeDescription, default: &Path) -> PathBuf {
    match &description.working_directory {
        Some(dir) => std::path::absolute(dir).unwrap_or_else(|_| dir.clone()),
        None => default.to_owned(),
    }
}

/// The job id recorded for `pilot`.
pub fn job_of(pilot: &PilotRecord) -> Result<JobId, AdaptorError> {
    pilot
        .job
        .clone()
        .map(JobId)
        .ok_or_else(|| AdaptorError::Resource(format!("pilot {} has no job", pilot.id)))
}

/// The `pstar` program that runs agents (`pstar agent`): `configured` if given (the
/// session's `agent_binary`); else `$PSTAR_AGENT_BIN` if set; else this program if it is
/// `pstar`; else a `pstar` beside this program or one directory up (where cargo puts it
/// for test programs); else `pstar` on the `PATH`.
pub fn agent_program(configured: Option<&Path>) -> Result<PathBuf, AdaptorError> {
    if let Some(p) = configured {
        return Ok(std::path::absolute(p).unwrap_or_else(|_| p.to_owned()));
    }
    if let Some(p) = std::env::var_os("PSTAR_AGENT_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()
        .map_err(|e| AdaptorError::Resource(format!("cannot find this program: {e}")))?;
    if exe.file_name().is_some_and(|n| n == "pstar") {
        return Ok(exe);
    }
    let beside = exe
        .parent()
        .into_iter()
        .flat_map(|d| [d.join("pstar"), d.join("../pstar")]);
    for candidate in beside {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("pstar"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            AdaptorError::Unsupported(
                "cannot find the `pstar` program to start an agent process; put it on the \
                 PATH or set PSTAR_AGENT_BIN"
                    .into(),
            )
        })
}

/// The batch system that places `scheme`'s pilots (`None` for `local://`).
fn batch_system(scheme: Scheme) -> Option<Arc<dyn batch::BatchSystem>> {
    Some(match scheme {
        Scheme::Local => return None,
        Scheme::Ssh => Arc::new(ssh::Fork),
        Scheme::Slurm | Scheme::SlurmSsh => Arc::new(slurm::Slurm),
        Scheme::Sge | Scheme::SgeSsh => Arc::new(sge::GridEngine),
        Scheme::Pbs | Scheme::PbsSsh => Arc::new(pbs::Pbs::default()),
        Scheme::Lsf => Arc::new(lsf::Lsf),
        Scheme::Condor => Arc::new(condor::Condor),
    })
}

/// The adaptors of this build, one per scheme they serve, sharing `config` and one pool
/// of SSH connections.
pub fn available(config: AdaptorConfig) -> Vec<Arc<dyn ResourceAdaptor>> {
    use batch::BatchAdaptor;
    let ssh = Arc::new(ssh::SshHosts::default());
    let mut adaptors: Vec<Arc<dyn ResourceAdaptor>> =
        vec![Arc::new(local::Local::with_config(&config))];
    for scheme in [
        Scheme::Ssh,
        Scheme::Slurm,
        Scheme::SlurmSsh,
        Scheme::Sge,
        Scheme::SgeSsh,
        Scheme::Pbs,
        Scheme::PbsSsh,
        Scheme::Lsf,
        Scheme::Condor,
    ] {
        if let Some(system) = batch_system(scheme) {
            adaptors.push(Arc::new(BatchAdaptor::new(
                scheme,
                system,
                scheme.over_ssh().then(|| ssh.clone()),
                config.clone(),
            )));
        }
    }
    adaptors
}

/// Refuses, before anything is submitted or contacted, a pilot its resource could never
/// place: one outside `local://` when the session's store is not networked
/// (`networked_store` false), one spanning nodes on a single host, and whatever the
/// scheduler's job files cannot express (an HTCondor pilot over nodes or with a queue, a
/// directive value of two lines, an unknown PBS flavor...: the job files are rendered
/// with placeholders and thrown away). `pstar check`, `pstar run` and
/// `PilotComputeService::create_pilot` all refuse through this one function.
pub fn check_pilot(
    description: &PilotComputeDescription,
    networked_store: bool,
) -> Result<(), AdaptorError> {
    let scheme = description.resource.scheme();
    if scheme != Scheme::Local && !networked_store {
        return Err(AdaptorError::NeedsNetworkedStore { scheme });
    }
    if scheme == Scheme::Local && description.node_count() > 1 {
        return Err(AdaptorError::Unsupported(
            "a `local://` pilot is one host: `nodes` must be 1".into(),
        ));
    }
    if description.tunnel && !scheme.over_ssh() {
        return Err(AdaptorError::Unsupported(format!(
            "`tunnel` needs an SSH connection to the resource; `{scheme}://` has none"
        )));
    }
    let Some(system) = batch_system(scheme) else {
        return Ok(());
    };
    let root = description
        .working_directory
        .clone()
        .unwrap_or_else(|| PathBuf::from(pstar_model::sandbox::DEFAULT_SANDBOX_ROOT));
    let sandbox = root.join("SESSION").join("pilot.0000");
    system
        .render(&batch::ScriptJob {
            name: "pstar.SESSION.pilot.0000".into(),
            description,
            sandbox: &sandbox,
            stdout: sandbox.join("pilot.out"),
            stderr: sandbox.join("pilot.err"),
            body: String::new(),
            options: &batch::query_options(description),
        })
        .map(drop)
}

/// The schemes this build can place pilots on.
pub fn supported_schemes() -> Vec<Scheme> {
    available(Default::default())
        .iter()
        .map(|a| a.scheme())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pilot(resource: &str) -> PilotComputeDescription {
        PilotComputeDescription {
            resource: resource.parse().expect("a resource URL"),
            ..Default::default()
        }
    }

    #[test]
    fn pilots_no_resource_could_place_are_refused_before_anything_is_submitted() {
        let cases = [
            (pilot("slurm://"), false, "need a coordination store"),
            (pilot("ssh://me@host"), false, "need a coordination store"),
            (
                PilotComputeDescription {
                    nodes: Some(2),
                    cores: 2,
                    ..pilot("local://")
                },
                true,
                "one host",
            ),
            (
                PilotComputeDescription {
                    nodes: Some(2),
                    cores: 2,
                    ..pilot("ssh://me@host")
                },
                true,
                "one host",
            ),
            (
                PilotComputeDescription {
                    nodes: Some(2),
                    cores: 2,
                    ..pilot("condor://")
                },
                true,
                "cannot span 2 nodes",
            ),
            (
                PilotComputeDescription {
                    queue: Some("q".into()),
                    ..pilot("condor://")
                },
                true,
                "HTCondor has no queues",
            ),
            (
                PilotComputeDescription {
                    project: Some("a\nb".into()),
                    ..pilot("slurm://")
                },
                true,
                "must be one line",
            ),
            (pilot("pbs://?flavor=lsf"), true, "unknown PBS flavor"),
            (
                PilotComputeDescription {
                    tunnel: true,
                    ..pilot("slurm://")
                },
                true,
                "`tunnel` needs an SSH connection",
            ),
        ];
        for (description, networked, message) in cases {
            match check_pilot(&description, networked) {
                Ok(()) => panic!("{description:?} was accepted"),
                Err(e) => assert!(e.to_string().contains(message), "{e}"),
            }
        }
        for (resource, networked) in [
            ("local://", false),
            ("local://", true),
            ("slurm://", true),
            ("condor://", true),
            ("ssh://me@host", true),
            ("pbs+ssh://me@login?flavor=torque", true),
        ] {
            let d = pilot(resource);
            assert!(check_pilot(&d, networked).is_ok(), "{resource}");
        }
    }
}
