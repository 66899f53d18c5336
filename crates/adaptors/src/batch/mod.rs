//! Pilots as batch jobs: what every batch-system adaptor shares.
//!
//! A [`BatchSystem`] knows one scheduler's dialect: how a pilot description becomes a job
//! script, which command submits it and what that command prints, how to ask for a job's
//! state and how to read the answer, how to cancel. [`BatchAdaptor`] does the rest the
//! same way for all of them, on this host or through an SSH login node:
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
//! Each step has a timeout ([`BootstrapTimeouts`]); a pilot that does not come up fails
//! naming the step and the reason. The batch job ending tells the manager too: a job that
//! ends badly (the scheduler killed it, the node died) fails its pilot with the
//! scheduler's own words, even when the agent could not report.

mod bootstrap;
#[cfg(test)]
pub(crate) mod testing;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use pstar_coordination::{Coordination, Event, PilotEvent, PilotRecord};
use pstar_model::{PilotComputeDescription, PilotState, Scheme, Timestamp};

use crate::host::{Command, Host, Output};
use crate::ssh::SshHosts;
use crate::{AdaptorConfig, AdaptorError, JobFile, JobId, JobState, PilotJob, ResourceAdaptor};

pub use bootstrap::{Bootstrap, agent_binary_name};

/// Everything a [`BatchSystem`] needs to write a pilot's job script.
pub struct ScriptJob<'a> {
    /// The job's name in the scheduler (`pstar.<session>.<pilot>`).
    pub name: String,
    pub description: &'a PilotComputeDescription,
    /// The pilot's sandbox on the resource: the job's working directory.
    pub sandbox: &'a Path,
    /// Where the job's standard output and error go.
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// The shell lines that start the agent (after the directives).
    pub body: String,
    /// Options from the resource URL's query (`sge://?pe=mpi`).
    pub options: &'a HashMap<String, String>,
}

impl ScriptJob<'_> {
    /// The walltime as `HH:MM:SS` (hours may exceed 24), rounded up to whole seconds.
    pub fn walltime_hms(&self) -> String {
        let secs = self.description.walltime.as_secs()
            + u64::from(self.description.walltime.subsec_nanos() > 0);
        format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    }

    /// The walltime in whole minutes, rounded up (at least 1).
    pub fn walltime_minutes(&self) -> u64 {
        self.description.walltime.as_secs().div_ceil(60).max(1)
    }
}

/// One scheduler's dialect. Implementations are pure: they build commands and read
/// outputs, and are tested against recorded outputs of the real commands.
pub trait BatchSystem: Send + Sync + 'static {
    /// The scheduler's name in messages (`Slurm`).
    fn name(&self) -> &'static str;

    /// The files of one pilot job, to be written into its sandbox; the first is the one
    /// [`submit`](Self::submit) is given.
    fn render(&self, job: &ScriptJob<'_>) -> Result<Vec<JobFile>, AdaptorError>;

    /// The command that submits `script` (the first rendered file, in the sandbox).
    fn submit(&self, script: &Path) -> Command;

    /// The job id in the submit command's output.
    fn parse_submit(&self, out: &Output) -> Result<String, AdaptorError>;

    /// Commands that tell a job's state, asked in order until one knows the job.
    fn queries(&self, job: &str, sandbox: &Path) -> Vec<Command>;

    /// The job's state from the answer to query number `index`, or `None` if that command
    /// does not know the job (the next one is asked).
    fn parse_query(&self, index: usize, job: &str, out: &Output) -> Option<JobState>;

    /// The command that cancels a job.
    fn cancel(&self, job: &str) -> Command;
}

/// Refuses a value that would end a directive line and start another (or a command).
pub fn single_line<'a>(field: &str, value: &'a str) -> Result<&'a str, AdaptorError> {
    if value.contains(['\n', '\r', '\0']) {
        Err(AdaptorError::Unsupported(format!(
            "`{field}` must be one line; `{}` is not",
            value.escape_debug()
        )))
    } else {
        Ok(value)
    }
}

/// How long the answers of a scheduler may be missing before a job counts as gone (a job
/// leaves the queue before its accounting record is written).
const UNKNOWN_GRACE: Duration = Duration::from_secs(60);

/// How many bytes of a job's output go into a failed pilot's message.
const OUTPUT_TAIL: u64 = 1500;

/// A resource adaptor over one [`BatchSystem`], on this host or through SSH.
pub struct BatchAdaptor {
    scheme: Scheme,
    system: Arc<dyn BatchSystem>,
    ssh: Option<Arc<SshHosts>>,
    config: AdaptorConfig,
    /// One binary copy at a time per process (pilots to one host share it).
    copying: tokio::sync::Mutex<()>,
}

impl BatchAdaptor {
    /// An adaptor for `scheme` speaking `system`'s dialect; `ssh` is the connection pool
    /// when the scheme goes through a login node.
    pub fn new(
        scheme: Scheme,
        system: Arc<dyn BatchSystem>,
        ssh: Option<Arc<SshHosts>>,
        config: AdaptorConfig,
    ) -> Self {
        Self {
            scheme,
            system,
            ssh,
            config,
            copying: tokio::sync::Mutex::new(()),
        }
    }

    /// The host commands run on for a pilot with `description`.
    async fn host(&self, description: &PilotComputeDescription) -> Result<Host, AdaptorError> {
        match &self.ssh {
            None => Ok(Host::Local),
            Some(pool) => pool
                .connect(&description.resource, self.config.timeouts.connect)
                .await
                .map(Host::Ssh)
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
    async fn agent_on(&self, host: &Host, root: &Path) -> Result<PathBuf, AdaptorError> {
        let local = crate::agent_program(self.config.agent_binary.as_deref())?;
        let Host::Ssh(_) = host else {
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
        host: &Host,
        url: &str,
        description: &PilotComputeDescription,
    ) -> Result<String, AdaptorError> {
        if !description.tunnel {
            return Ok(url.to_owned());
        }
        let Host::Ssh(ssh) = host else {
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
        let host = self.host(&record.description).await?;
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

    /// Starts the watcher of `job`'s batch job `id`.
    fn spawn_watch(&self, host: Host, id: String, job: &PilotJob, url: String) {
        tokio::spawn(watch(Watch {
            system: self.system.clone(),
            host,
            job: id,
            record: job.record.clone(),
            coordination: job.coordination.clone(),
            poll: self.config.poll_interval,
            agent_start: self.config.timeouts.agent_start,
            url,
        }));
    }

    async fn query(
        &self,
        host: &Host,
        job: &str,
        sandbox: &Path,
    ) -> Result<Option<JobState>, AdaptorError> {
        query(&*self.system, host, job, sandbox).await
    }
}

/// Asks the scheduler about `job`: the first query that knows it answers.
async fn query(
    system: &dyn BatchSystem,
    host: &Host,
    job: &str,
    sandbox: &Path,
) -> Result<Option<JobState>, AdaptorError> {
    for (i, command) in system.queries(job, sandbox).iter().enumerate() {
        let out = host.run(command, Duration::from_secs(30)).await?;
        if let Some(state) = system.parse_query(i, job, &out) {
            return Ok(Some(state));
        }
    }
    Ok(None)
}

/// Options in the resource URL's query string (`sge://?pe=mpi`).
pub(crate) fn query_options(d: &PilotComputeDescription) -> HashMap<String, String> {
    url::Url::parse(d.resource.as_str())
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

struct Watch {
    system: Arc<dyn BatchSystem>,
    host: Host,
    job: String,
    record: PilotRecord,
    coordination: Arc<dyn Coordination>,
    poll: Duration,
    agent_start: Duration,
    url: String,
}

/// Follows a pilot job until it ends: fails the pilot if its agent never reaches the store
/// once the job runs, or if the job ends badly (the agent may not have been able to say).
async fn watch(w: Watch) {
    let pilot = w.record.id;
    let name = w.system.name();
    let mut running_since: Option<Instant> = None;
    let mut contacted = false;
    let mut unknown_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(w.poll).await;
        let state = match query(&*w.system, &w.host, &w.job, &w.record.sandbox).await {
            Ok(Some(state)) => {
                unknown_since = None;
                state
            }
            Ok(None) => {
                let since = *unknown_since.get_or_insert_with(Instant::now);
                if since.elapsed() < UNKNOWN_GRACE {
                    continue;
                }
                JobState::Finished {
                    ok: false,
                    detail: Some(format!("{name} no longer knows job {}", w.job)),
                }
            }
            Err(e) => {
                tracing::warn!(%pilot, job = %w.job, error = %e, "cannot ask the job's state");
                continue;
            }
        };
        match state {
            JobState::Queued => {}
            JobState::Running => {
                let since = *running_since.get_or_insert_with(Instant::now);
                if !contacted {
                    contacted = w
                        .coordination
                        .heartbeats()
                        .await
                        .is_ok_and(|h| h.iter().any(|(p, _)| *p == pilot));
                }
                if !contacted && since.elapsed() > w.agent_start {
                    let output = job_output(&w.host, &w.record.sandbox).await;
                    let detail = format!(
                        "bootstrap failed at `agent start`: {name} job {} has run for {} but \
                         its agent never reached the store at {}{output}",
                        w.job,
                        humantime::format_duration(Duration::from_secs(since.elapsed().as_secs())),
                        w.url
                    );
                    // The job goes first: once the pilot has failed, a manager with
                    // nothing left to run may exit and leave a hanging job behind.
                    match w
                        .host
                        .run(&w.system.cancel(&w.job), Duration::from_secs(30))
                        .await
                    {
                        Ok(out) if out.success() => {}
                        Ok(out) => tracing::warn!(%pilot, job = %w.job,
                            error = %out.failure(), "cannot cancel the job"),
                        Err(e) => tracing::warn!(%pilot, job = %w.job, error = %e,
                            "cannot cancel the job"),
                    }
                    fail(&w.coordination, pilot, detail).await;
                    return;
                }
            }
            JobState::Finished { ok, detail } => {
                if !ok {
                    let output = job_output(&w.host, &w.record.sandbox).await;
                    let why = detail.unwrap_or_else(|| "it failed".into());
                    fail(
                        &w.coordination,
                        pilot,
                        format!("{name} job {} ended: {why}{output}", w.job),
                    )
                    .await;
                }
                return;
            }
        }
    }
}

/// `; job output: ...` with the tail of the job's standard error and output, if any.
async fn job_output(host: &Host, sandbox: &Path) -> String {
    let mut parts = Vec::new();
    for file in ["pilot.err", "pilot.out"] {
        if let Some(text) = host.tail(&sandbox.join(file), OUTPUT_TAIL).await {
            let text = text.trim();
            if !text.is_empty() {
                let lines: Vec<&str> = text.lines().collect();
                let last = &lines[lines.len().saturating_sub(6)..];
                parts.push(format!("{file}: {}", last.join(" | ")));
            }
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("; {}", parts.join("; "))
    }
}

/// Fails `pilot` (ignored by the state table if it already ended).
async fn fail(coordination: &Arc<dyn Coordination>, pilot: pstar_model::PilotId, detail: String) {
    tracing::warn!(%pilot, %detail, "pilot job failed");
    let event = PilotEvent {
        pilot,
        state: PilotState::Failed,
        at: Timestamp::now(),
        detail: Some(detail),
    };
    if let Err(e) = coordination.publish(vec![Event::Pilot(event)]).await {
        tracing::error!(%pilot, error = %e, "cannot report the pilot job's end");
    }
}

#[async_trait]
impl ResourceAdaptor for BatchAdaptor {
    fn scheme(&self) -> Scheme {
        self.scheme
    }

    async fn sandbox_root(
        &self,
        description: &PilotComputeDescription,
        default: &Path,
    ) -> Result<PathBuf, AdaptorError> {
        let host = self.host(description).await?;
        match host {
            Host::Local => Ok(crate::local_root(description, default)),
            Host::Ssh(_) => {
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
        let host = self.host(&job.record.description).await?;
        let url = job.coordination.url().unwrap_or_default();
        self.spawn_watch(host, id.0, &job, url);
        Ok(())
    }

    async fn state(&self, pilot: &PilotRecord) -> Result<JobState, AdaptorError> {
        let job = crate::job_of(pilot)?;
        let host = self.host(&pilot.description).await?;
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
        let host = self.host(&pilot.description).await?;
        let out = host
            .run(&self.system.cancel(&job.0), Duration::from_secs(60))
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
        let host = self.host(&pilot.description).await?;
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
