//! Resource adaptors: how a pilot is placed on a resource (the seeds' SAGA layer).
//!
//! Every adaptor implements [`ResourceAdaptor`]. An adaptor submits the *pilot job*,
//! whose only task is to start a pilot agent; it knows nothing of units, which reach the
//! agent through the coordination store.
//!
//! Apart from `local://` (the agent in this process or a child of it), an adaptor is a
//! [`batch::BatchAdaptor`]: a **transport** ([`transport`]: this host, or a host over SSH)
//! composed with a **dialect** ([`dialect`]: fork, Slurm, Grid Engine, PBS, LSF,
//! HTCondor), each dialect in a folder of its own with a `docs.md` (URL form, what must be
//! installed, what is and is not supported). The two are independent; [`composition`]
//! is the one place that says which scheme is which pair, and [`Capabilities`] is what
//! the rest of pstar asks of a resource instead of matching scheme names.
//!
//! | scheme | transport | dialect | tested against |
//! |---|---|---|---|
//! | `local://` | ([`local::Local`]: agent in-process, or a `pstar agent` child over Redis) | | this machine |
//! | `ssh://` | SSH | [`dialect::fork::Fork`] | a real sshd |
//! | `slurm://`, `slurm+ssh://` | local, SSH | [`dialect::slurm::Slurm`] | a real Slurm 22.05 |
//! | `sge://`, `sge+ssh://` | local, SSH | [`dialect::sge::GridEngine`] | a real Grid Engine 8.1 |
//! | `pbs://`, `pbs+ssh://` | local, SSH | [`dialect::pbs::Pbs`] | recorded outputs only |
//! | `lsf://` | local | [`dialect::lsf::Lsf`] | recorded outputs only |
//! | `condor://` | local | [`dialect::condor::Condor`] | recorded outputs only |

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use pstar_coordination::{Coordination, PilotRecord};
use pstar_model::{PilotComputeDescription, Scheme};

pub mod batch;
pub mod dialect;
pub mod local;
pub mod transport;

pub use transport::SSH_CONFIG_ENV;

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
    pub fn bootstrap(step: &'static str, reason: impl StepFailure) -> Self {
        reason.at_step(step)
    }
}

/// What can make a bootstrap step fail: a message, or an adaptor error (which keeps the
/// step it already names, if it is a bootstrap failure of its own).
pub trait StepFailure {
    /// The failure of `step` this is.
    fn at_step(self, step: &'static str) -> AdaptorError;
}

impl StepFailure for AdaptorError {
    fn at_step(self, step: &'static str) -> AdaptorError {
        match self {
            named @ AdaptorError::Bootstrap { .. } => named,
            other => AdaptorError::Bootstrap {
                step,
                reason: other.to_string(),
            },
        }
    }
}

impl StepFailure for String {
    fn at_step(self, step: &'static str) -> AdaptorError {
        AdaptorError::Bootstrap { step, reason: self }
    }
}

impl StepFailure for &str {
    fn at_step(self, step: &'static str) -> AdaptorError {
        self.to_owned().at_step(step)
    }
}

impl StepFailure for std::io::Error {
    fn at_step(self, step: &'static str) -> AdaptorError {
        self.to_string().at_step(step)
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

    /// What the resource can do ([`Capabilities::of`] its scheme).
    fn capabilities(&self) -> Capabilities {
        Capabilities::of(self.scheme())
    }

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

/// How a scheme's commands reach the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Commands run on this machine.
    Local,
    /// Commands run on a host over SSH (a login node, or the host itself).
    Ssh,
}

/// The transport and dialect that place `scheme`'s pilots; `None` for `local://`, whose
/// agent runs in (or beside) this process. The one place that pairs them: whether a
/// scheme goes over SSH is the model's [`Scheme::over_ssh`], read here and nowhere else
/// in the adaptors.
pub fn composition(scheme: Scheme) -> Option<(TransportKind, Arc<dyn dialect::Dialect>)> {
    use dialect::*;
    let dialect: Arc<dyn Dialect> = match scheme {
        Scheme::Local => return None,
        Scheme::Ssh => Arc::new(fork::Fork),
        Scheme::Slurm | Scheme::SlurmSsh => Arc::new(slurm::Slurm),
        Scheme::Sge | Scheme::SgeSsh => Arc::new(sge::GridEngine),
        Scheme::Pbs | Scheme::PbsSsh => Arc::new(pbs::Pbs::default()),
        Scheme::Lsf => Arc::new(lsf::Lsf),
        Scheme::Condor => Arc::new(condor::Condor),
    };
    let transport = if scheme.over_ssh() {
        TransportKind::Ssh
    } else {
        TransportKind::Local
    };
    Some((transport, dialect))
}

/// What a resource can do: asked of it ([`ResourceAdaptor::capabilities`], or
/// [`Capabilities::of`] a scheme) instead of matching scheme names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Commands, files and the agent are on another machine reached over SSH.
    pub over_ssh: bool,
    /// Paths of the pilot (`working_directory`, its sandbox) are on that machine: taken
    /// as written there (relative to the remote home), not resolved here.
    pub remote_paths: bool,
    /// The agent can reach the store through an SSH tunnel (`tunnel = true`).
    pub tunnel: bool,
    /// A pilot can span several nodes (`nodes > 1`).
    pub multi_node: bool,
    /// A batch system places the pilot job (it has a queue, a walltime it enforces, a
    /// node list the agent reads).
    pub batch: bool,
    /// The agent runs outside this process, so the store must be networked (Redis).
    pub needs_networked_store: bool,
}

impl Capabilities {
    /// What `scheme`'s resources can do, from its transport and dialect.
    pub fn of(scheme: Scheme) -> Self {
        match composition(scheme) {
            None => Self {
                over_ssh: false,
                remote_paths: false,
                tunnel: false,
                multi_node: false,
                batch: false,
                needs_networked_store: false,
            },
            Some((transport, dialect)) => {
                let over_ssh = transport == TransportKind::Ssh;
                Self {
                    over_ssh,
                    remote_paths: over_ssh,
                    tunnel: over_ssh,
                    multi_node: dialect.multi_node(),
                    batch: dialect.is_batch(),
                    needs_networked_store: true,
                }
            }
        }
    }
}

/// The adaptors of this build, one per scheme they serve, sharing `config` and one pool
/// of SSH connections.
pub fn available(config: AdaptorConfig) -> Vec<Arc<dyn ResourceAdaptor>> {
    use batch::BatchAdaptor;
    let ssh = Arc::new(transport::SshHosts::default());
    let mut adaptors: Vec<Arc<dyn ResourceAdaptor>> =
        vec![Arc::new(local::Local::with_config(&config))];
    for (scheme, _) in Scheme::ALL {
        if let Some((transport, dialect)) = composition(*scheme) {
            adaptors.push(Arc::new(BatchAdaptor::new(
                *scheme,
                dialect,
                (transport == TransportKind::Ssh).then(|| ssh.clone()),
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
    let can = Capabilities::of(scheme);
    if can.needs_networked_store && !networked_store {
        return Err(AdaptorError::NeedsNetworkedStore { scheme });
    }
    if description.tunnel && !can.tunnel {
        return Err(AdaptorError::Unsupported(format!(
            "`tunnel` needs an SSH connection to the resource; `{scheme}://` has none"
        )));
    }
    let Some((_, system)) = composition(scheme) else {
        if !can.multi_node && description.node_count() > 1 {
            return Err(AdaptorError::Unsupported(format!(
                "a `{scheme}://` pilot is one host: `nodes` must be 1"
            )));
        }
        return Ok(());
    };
    let root = description
        .working_directory
        .clone()
        .unwrap_or_else(|| PathBuf::from(pstar_model::sandbox::DEFAULT_SANDBOX_ROOT));
    let sandbox = root.join("SESSION").join("pilot.0000");
    // The dialect refuses what it cannot express in its own words (one node only
    // included: "HTCondor's vanilla universe runs a job on one machine").
    system
        .render(&dialect::ScriptJob {
            name: "pstar.SESSION.pilot.0000".into(),
            description,
            sandbox: &sandbox,
            stdout: sandbox.join("pilot.out"),
            stderr: sandbox.join("pilot.err"),
            body: String::new(),
            options: &dialect::query_options(description),
        })
        .map(drop)?;
    if !can.multi_node && description.node_count() > 1 {
        return Err(AdaptorError::Unsupported(format!(
            "a `{scheme}://` pilot is one host: `nodes` must be 1"
        )));
    }
    Ok(())
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

    #[test]
    fn what_each_resource_can_do_follows_from_its_transport_and_dialect() {
        // scheme: over SSH (remote paths, tunnel), several nodes, a batch system
        let table = [
            ("local://", false, false, false),
            ("ssh://me@host", true, false, false),
            ("slurm://", false, true, true),
            ("slurm+ssh://me@login", true, true, true),
            ("sge://", false, true, true),
            ("sge+ssh://me@login", true, true, true),
            ("pbs://", false, true, true),
            ("pbs+ssh://me@login", true, true, true),
            ("lsf://", false, true, true),
            ("condor://", false, false, true),
        ];
        assert_eq!(table.len(), Scheme::ALL.len(), "a scheme is missing here");
        for (url, over_ssh, multi_node, batch) in table {
            let scheme = pilot(url).resource.scheme();
            let can = Capabilities::of(scheme);
            assert_eq!(can.over_ssh, over_ssh, "{url}");
            assert_eq!(can.remote_paths, over_ssh, "{url}");
            assert_eq!(can.tunnel, over_ssh, "{url}");
            assert_eq!(can.multi_node, multi_node, "{url}");
            assert_eq!(can.batch, batch, "{url}");
            assert_eq!(can.needs_networked_store, scheme != Scheme::Local, "{url}");
            // The adaptor answers the same.
            let adaptor = available(Default::default())
                .into_iter()
                .find(|a| a.scheme() == scheme)
                .expect("an adaptor for every scheme");
            assert_eq!(adaptor.capabilities(), can, "{url}");
        }
    }

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

#[cfg(test)]
mod step_tests {
    use super::*;

    #[test]
    fn a_step_failure_keeps_the_step_it_names_and_nothing_is_read_from_text() {
        let inner = AdaptorError::bootstrap("connect", "host unreachable");
        match AdaptorError::bootstrap("copy", inner) {
            AdaptorError::Bootstrap { step, reason } => {
                assert_eq!((step, reason.as_str()), ("connect", "host unreachable"))
            }
            other => panic!("{other:?}"),
        }
        // A message that merely looks like a bootstrap failure is a reason, not a step.
        match AdaptorError::bootstrap("submit", "bootstrap failed at `x`: y") {
            AdaptorError::Bootstrap { step, .. } => assert_eq!(step, "submit"),
            other => panic!("{other:?}"),
        }
        match AdaptorError::bootstrap("submit", AdaptorError::Resource("sbatch: no".into())) {
            AdaptorError::Bootstrap { step, reason } => {
                assert_eq!((step, reason.as_str()), ("submit", "sbatch: no"))
            }
            other => panic!("{other:?}"),
        }
    }
}
