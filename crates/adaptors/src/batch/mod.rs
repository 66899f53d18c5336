//! Pilots as jobs: a transport composed with a dialect.
//!
//! A [`Dialect`] knows one scheduler's language (how a pilot description becomes a job
//! script, which command submits it and what that command prints, how to ask for many
//! jobs' states at once and how to read the answer, how to cancel); a [`Transport`] runs
//! commands and writes files, on this host or on a login node over SSH. The two are
//! independent: [`BatchAdaptor`] composes one of each and does the rest the same way for
//! every pair:
//!
//! 1. **connect** (`+ssh` schemes): one multiplexed SSH connection per host;
//! 2. **copy**: over SSH, the `pstar` binary is copied to `<sandbox root>/bin/` unless the
//!    same build is already there (its name carries a hash of its content);
//! 3. **credentials**: the store's password goes into a file only the user can read, named
//!    to the agent by `PSTAR_REDIS_PASSWORD_FILE`, never on a command line;
//! 4. **submit**: the job script is written to the pilot's sandbox and submitted;
//! 5. **agent start**: the job is watched; once it runs, its agent must reach the store
//!    within the agent-start timeout, or the pilot fails with the job's output and the job
//!    is canceled.
//!
//! Jobs are watched by one watcher (`watcher.rs`) per (transport host, dialect): every pilot job of
//! that batch system on that host is asked about in one status query per interval, and
//! each answer goes to the job's own follower.
//!
//! Each step has a timeout ([`BootstrapTimeouts`](crate::BootstrapTimeouts)); a pilot that does not come up fails
//! naming the step and the reason. The batch job ending tells the manager too: a job that
//! ends badly (the scheduler killed it, the node died) fails its pilot with the
//! scheduler's own words, even when the agent could not report.

mod bootstrap;
pub(crate) mod watcher;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use pstar_coordination::PilotRecord;
use pstar_model::{PilotComputeDescription, Scheme};

use crate::dialect::{Dialect, JobRef, ScriptJob, query_options};
use crate::transport::{Command, SshHosts, Transport};
use crate::{
    AdaptorConfig, AdaptorError, Capabilities, JobFile, JobId, JobState, PilotJob, ResourceAdaptor,
};
use watcher::{CANCEL_TIMEOUT, Follow, Watchers};

pub use bootstrap::{Bootstrap, agent_binary_name};

/// A resource adaptor: one [`Dialect`] over one transport (this host, or SSH).
pub struct BatchAdaptor {
    scheme: Scheme,
    system: Arc<dyn Dialect>,
    ssh: Option<Arc<SshHosts>>,
    config: AdaptorConfig,
    /// One binary copy at a time per process (pilots to one host share it).
    copying: tokio::sync::Mutex<()>,
    /// The watchers of this adaptor's jobs, one per host.
    watchers: Watchers,
}

impl BatchAdaptor {
    /// An adaptor for `scheme` speaking `system`'s dialect; `ssh` is the connection pool
    /// when the scheme goes through SSH (its transport), `None` for this host.
    pub fn new(
        scheme: Scheme,
        system: Arc<dyn Dialect>,
        ssh: Option<Arc<SshHosts>>,
        config: AdaptorConfig,
    ) -> Self {
        Self {
            scheme,
            watchers: Watchers::new(system.clone(), config.poll_interval),
            system,
            ssh,
            config,
            copying: tokio::sync::Mutex::new(()),
        }
    }

    /// The transport commands run through for a pilot with `description`.
    async fn transport(
        &self,
        description: &PilotComputeDescription,
    ) -> Result<Transport, AdaptorError> {
        match &self.ssh {
            None => Ok(Transport::Local),
            Some(pool) => pool
                .connect(&description.resource, self.config.timeouts.connect)
                .await
                .map(Transport::Ssh)
                .map_err(|e| AdaptorError::bootstrap("connect", e)),
        }
    }

    fn job_name(session: &str, record: &PilotRecord) -> String {
        let clean: String = session
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("pstar.{clean}.{}", record.id)
    }

    /// The agent program on the host: this machine's `pstar` locally; over SSH a copy in
    /// `<root>/bin`, sent only if that exact build is not there yet, and kept only if it
    /// runs there.
    async fn agent_on(&self, host: &Transport, root: &Path) -> Result<PathBuf, AdaptorError> {
        let local = crate::agent_program(self.config.agent_binary.as_deref())?;
        let Transport::Ssh(_) = host else {
            return Ok(local);
        };
        let name = agent_binary_name(&local)?;
        let remote = root.join("bin").join(&name);
        let timeout = self.config.timeouts.copy;
        let _one = self.copying.lock().await;
        let probe = Command::sh(
            r#"uname -sm; if test -x "$1"; then echo present; else echo absent; fi"#,
            [remote.display().to_string()],
        );
        let answer = host
            .check(&probe, timeout)
            .await
            .map_err(|e| AdaptorError::bootstrap("copy", e))?;
        let mut lines = answer.lines();
        let platform = lines.next().unwrap_or_default().trim().to_owned();
        let here = format!("Linux {}", std::env::consts::ARCH);
        if platform != here {
            return Err(AdaptorError::bootstrap(
                "copy",
                format!(
                    "{host} is `{platform}`, this pstar is built for `{here}`: name a pstar \
                     built for `{platform}` as the agents' program (setting `agent_binary`)"
                ),
            ));
        }
        if lines.next().map(str::trim) == Some("present") {
            return Ok(remote);
        }
        let bytes = std::fs::read(&local).map_err(|e| {
            AdaptorError::bootstrap("copy", format!("cannot read {}: {e}", local.display()))
        })?;
        let started = Instant::now();
        host.write_file(&remote, &bytes, 0o755, timeout)
            .await
            .map_err(|e| AdaptorError::bootstrap("copy", e))?;
        tracing::info!(%host, path = %remote.display(), bytes = bytes.len(),
            secs = started.elapsed().as_secs_f64(), "copied the pstar binary");
        // A build linked against a newer C library than the host's fails here, not in a
        // job that would then never start its agent.
        // Through a shell that turns status 127 (which the SSH client takes for a command
        // it could not start) into 1, keeping the words of the shell or the loader.
        let check = Command::sh(
            r#""$1" --version 2>&1 || exit 1"#,
            [remote.display().to_string()],
        );
        let out = host
            .run(&check, timeout)
            .await
            .map_err(|e| AdaptorError::bootstrap("copy", e))?;
        if !out.success() || !out.stdout.starts_with("pstar ") {
            let _ = host
                .run(
                    &Command::sh(r#"rm -f "$1""#, [remote.display().to_string()]),
                    timeout,
                )
                .await;
            return Err(AdaptorError::bootstrap(
                "copy",
                format!(
                    "{} does not run on {host}: {}; a static pstar runs on any {here} \
                     (`bash scripts/build-static.sh`), name it as the agents' program \
                     (setting `agent_binary`)",
                    local.display(),
                    out.failure()
                ),
            ));
        }
        Ok(remote)
    }

    /// The agent's store URL: the manager's, or a tunnel's end on the login node.
    async fn store_url(
        &self,
        host: &Transport,
        url: &str,
        description: &PilotComputeDescription,
    ) -> Result<String, AdaptorError> {
        if !description.tunnel {
            return Ok(url.to_owned());
        }
        let Transport::Ssh(ssh) = host else {
            return Err(AdaptorError::Unsupported(format!(
                "`tunnel` needs an SSH connection; `{}` has none",
                description.resource
            )));
        };
        let mut parsed = url::Url::parse(url)
            .map_err(|e| AdaptorError::Unsupported(format!("store URL `{url}`: {e}")))?;
        let store_host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
        let store_port = parsed.port().unwrap_or(6379);
        let port = ssh
            .tunnel(&store_host, store_port)
            .await
            .map_err(|e| AdaptorError::bootstrap("tunnel", e))?;
        let rewritten = parsed
            .set_host(Some("127.0.0.1"))
            .ok()
            .and_then(|()| parsed.set_port(Some(port)).ok());
        if rewritten.is_none() {
            return Err(AdaptorError::Unsupported(format!(
                "cannot point `{url}` at the tunnel"
            )));
        }
        Ok(parsed.to_string())
    }

    /// The files of `record`'s job, with the agent started from `agent` against `url`.
    fn render(
        &self,
        record: &PilotRecord,
        session: &str,
        url: &str,
        agent: &Path,
        secrets: &bootstrap::Secrets,
    ) -> Result<Vec<JobFile>, AdaptorError> {
        let d = &record.description;
        let boot = Bootstrap {
            agent,
            url,
            session,
            pilot: record.id,
            sandbox: &record.sandbox,
            secrets,
            first_contact: self.config.timeouts.agent_start,
        };
        let options = query_options(d);
        self.system.render(&ScriptJob {
            name: Self::job_name(session, record),
            description: d,
            sandbox: &record.sandbox,
            stdout: record.sandbox.join("pilot.out"),
            stderr: record.sandbox.join("pilot.err"),
            body: boot.body(),
            options: &options,
        })
    }

    async fn submit_job(&self, job: PilotJob) -> Result<JobId, AdaptorError> {
        let Some(url) = job.coordination.url() else {
            return Err(AdaptorError::NeedsNetworkedStore {
                scheme: self.scheme,
            });
        };
        let record = &job.record;
        let host = self.transport(&record.description).await?;
        let root = record
            .sandbox
            .parent()
            .and_then(Path::parent)
            .unwrap_or(&record.sandbox);
        let agent = self.agent_on(&host, root).await?;
        let url = self.store_url(&host, &url, &record.description).await?;
        let t = &self.config.timeouts;

        let secrets = bootstrap::Secrets::of(&job.coordination, &record.sandbox);
        for (path, content) in secrets.files() {
            host.write_file(&path, &content, 0o600, t.submit)
                .await
                .map_err(|e| AdaptorError::bootstrap("credentials", e))?;
        }
        let files = self.render(record, job.coordination.session(), &url, &agent, &secrets)?;
        for file in &files {
            host.write_file(
                &record.sandbox.join(&file.name),
                file.content.as_bytes(),
                0o700,
                t.submit,
            )
            .await
            .map_err(|e| AdaptorError::bootstrap("submit", e))?;
        }
        let Some(first) = files.first() else {
            return Err(AdaptorError::Unsupported("no job script".into()));
        };
        let command = self.system.submit(&record.sandbox.join(&first.name));
        let out = host
            .run(&command, t.submit)
            .await
            .map_err(|e| AdaptorError::bootstrap("submit", e))?;
        if !out.success() {
            return Err(AdaptorError::bootstrap(
                "submit",
                format!(
                    "{} refused the pilot job: {}",
                    self.system.name(),
                    out.failure()
                ),
            ));
        }
        let id = self
            .system
            .parse_submit(&out)
            .map_err(|e| AdaptorError::bootstrap("submit", e))?;
        tracing::info!(pilot = %record.id, job = %id, %host, "pilot job submitted");
        self.spawn_watch(host, id.clone(), &job, url);
        Ok(JobId(id))
    }

    /// Hands `job`'s batch job `id` to the watcher of its host.
    fn spawn_watch(&self, transport: Transport, id: String, job: &PilotJob, url: String) {
        self.watchers.follow(Follow {
            system: self.system.clone(),
            transport,
            job: id,
            record: job.record.clone(),
            coordination: job.coordination.clone(),
            agent_start: self.config.timeouts.agent_start,
            url,
        });
    }

    /// `job`'s state, asked of the scheduler alone (status, then history), or `None` if
    /// it no longer knows it.
    async fn query(
        &self,
        transport: &Transport,
        job: &str,
        sandbox: &Path,
    ) -> Result<Option<JobState>, AdaptorError> {
        let one = [JobRef { id: job, sandbox }];
        watcher::ask(&*self.system, transport, &one)
            .await
            .remove(job)
            .unwrap_or(Ok(None))
            .map_err(AdaptorError::Resource)
    }
}

#[async_trait]
impl ResourceAdaptor for BatchAdaptor {
    fn scheme(&self) -> Scheme {
        self.scheme
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::of(self.scheme)
    }

    async fn sandbox_root(
        &self,
        description: &PilotComputeDescription,
        default: &Path,
    ) -> Result<PathBuf, AdaptorError> {
        let host = self.transport(description).await?;
        match host {
            Transport::Local => Ok(crate::local_root(description, default)),
            Transport::Ssh(_) => {
                // Relative to the remote home unless absolute; resolved there.
                let dir = description
                    .working_directory
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("pstar.sandbox"));
                let resolve = Command::sh(
                    r#"mkdir -p "$1" && cd "$1" && pwd -P"#,
                    [dir.display().to_string()],
                );
                let out = host
                    .check(&resolve, self.config.timeouts.connect)
                    .await
                    .map_err(|e| AdaptorError::bootstrap("connect", e))?;
                Ok(PathBuf::from(out.trim()))
            }
        }
    }

    async fn submit(&self, job: PilotJob) -> Result<JobId, AdaptorError> {
        self.submit_job(job).await
    }

    async fn follow(&self, job: PilotJob) -> Result<(), AdaptorError> {
        let id = crate::job_of(&job.record)?;
        let host = self.transport(&job.record.description).await?;
        let url = job.coordination.url().unwrap_or_default();
        self.spawn_watch(host, id.0, &job, url);
        Ok(())
    }

    async fn state(&self, pilot: &PilotRecord) -> Result<JobState, AdaptorError> {
        let job = crate::job_of(pilot)?;
        let host = self.transport(&pilot.description).await?;
        Ok(self
            .query(&host, &job.0, &pilot.sandbox)
            .await?
            .unwrap_or(JobState::Finished {
                ok: false,
                detail: Some(format!("{} no longer knows job {job}", self.system.name())),
            }))
    }

    async fn cancel(&self, pilot: &PilotRecord) -> Result<(), AdaptorError> {
        let job = crate::job_of(pilot)?;
        let host = self.transport(&pilot.description).await?;
        let out = host
            .run(&self.system.cancel(&job.0), CANCEL_TIMEOUT)
            .await?;
        if out.success() {
            return Ok(());
        }
        // Canceling a job that already ended is not an error.
        match self.query(&host, &job.0, &pilot.sandbox).await {
            Ok(Some(JobState::Finished { .. }) | None) => Ok(()),
            _ => Err(AdaptorError::Resource(format!(
                "cannot cancel {} job {job}: {}",
                self.system.name(),
                out.failure()
            ))),
        }
    }

    async fn logs(&self, pilot: &PilotRecord) -> Result<String, AdaptorError> {
        let host = self.transport(&pilot.description).await?;
        let mut text = String::new();
        for file in ["pilot.out", "pilot.err", "agent.log"] {
            if let Some(t) = host.tail(&pilot.sandbox.join(file), 64 * 1024).await {
                text.push_str(&format!("==> {file} <==\n{t}\n"));
            }
        }
        Ok(text)
    }

    fn script(
        &self,
        record: &PilotRecord,
        session: &str,
        url: &str,
    ) -> Result<Vec<JobFile>, AdaptorError> {
        let local = crate::agent_program(self.config.agent_binary.as_deref())
            .unwrap_or_else(|_| PathBuf::from("pstar"));
        let agent = match &self.ssh {
            None => local,
            Some(_) => {
                let root = record
                    .sandbox
                    .parent()
                    .and_then(Path::parent)
                    .unwrap_or(&record.sandbox);
                root.join("bin")
                    .join(agent_binary_name(&local).unwrap_or_else(|_| "pstar".into()))
            }
        };
        let secrets = bootstrap::Secrets::describe(&record.sandbox, url);
        self.render(record, session, url, &agent, &secrets)
    }
}
