//! `local://`: this machine. See `docs.md` beside this file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::AbortHandle;

use pstar_agent::Agent;
use pstar_coordination::{Coordination, Event, PilotEvent, PilotRecord};
use pstar_model::{PilotId, PilotState, Scheme, Timestamp};

use crate::{AdaptorError, JobId, JobState, PilotJob, ResourceAdaptor, agent_program};

/// How long an agent process gets to return its units after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[doc = include_str!("docs.md")]
#[derive(Default)]
pub struct Local {
    /// The `pstar` program agent processes run (see [`agent_program`]).
    agent_binary: Option<PathBuf>,
    jobs: Arc<Mutex<HashMap<JobId, Job>>>,
    /// A pilot has been told that it declares more cores than this machine has.
    warned_cores: std::sync::atomic::AtomicBool,
}

struct Job {
    handle: Handle,
    state: JobState,
}

enum Handle {
    /// The agent runs as a task of this process (embedded store).
    Task(AbortHandle),
    /// The agent runs as a child process (`pstar agent`), leader of its own process group.
    Process(u32),
}

impl Local {
    /// A local adaptor with `config`'s agent program (agents take their settings from
    /// their pilot's record).
    pub fn with_config(config: &crate::AdaptorConfig) -> Self {
        Self {
            agent_binary: config.agent_binary.clone(),
            jobs: Arc::default(),
            warned_cores: Default::default(),
        }
    }

    /// Warns (once) about a pilot that declares more cores than this machine has: its
    /// units would share the cores the machine has.
    fn check_cores(&self, job: &PilotJob) {
        let declared = job.record.description.cores;
        let Ok(machine) = std::thread::available_parallelism() else {
            return;
        };
        if declared as usize > machine.get()
            && !self
                .warned_cores
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                pilot = %job.record.id,
                "{} declares {declared} cores; this machine has {machine}: up to {declared} \
                 units will run at once on {machine} cores",
                job.record.id
            );
        }
    }

    fn insert(&self, id: &JobId, handle: Handle) -> Result<(), AdaptorError> {
        self.jobs
            .lock()
            .map_err(|_| AdaptorError::Resource("adaptor lock poisoned".into()))?
            .insert(
                id.clone(),
                Job {
                    handle,
                    state: JobState::Running,
                },
            );
        Ok(())
    }

    /// With the embedded store: the agent is a task on this runtime.
    fn submit_task(&self, job: PilotJob) -> Result<JobId, AdaptorError> {
        let pilot = job.record.id;
        let id = JobId(format!("local:{pilot}"));
        let coordination = job.coordination.clone();
        let agent = Agent::for_record(job.coordination, job.record);
        let task = tokio::spawn(agent.run());
        self.insert(&id, Handle::Task(task.abort_handle()))?;

        // Watch the agent: if it dies without saying so, its pilot fails, which sends the
        // units it held back to the pool.
        let jobs = self.jobs.clone();
        let watched = id.clone();
        tokio::spawn(async move {
            let (ok, detail) = match task.await {
                Ok(Ok(_)) => (true, None),
                Ok(Err(e)) => (false, Some(format!("agent failed: {e}"))),
                Err(e) if e.is_cancelled() => {
                    (false, Some("agent stopped by its adaptor".to_owned()))
                }
                Err(e) => (false, Some(format!("agent crashed: {e}"))),
            };
            finished(&jobs, &watched, &coordination, pilot, ok, detail).await;
        });
        Ok(id)
    }

    /// With a networked store: the agent is a `pstar agent` child process that leads a
    /// session of its own. A Ctrl-C meant for the manager does not reach it, and it outlives
    /// a manager that dies, which `pstar run --resume` relies on. Its units run in that
    /// session (each in a process group of its own), so when the agent ends, whatever is
    /// left of them is found by session id and killed: a killed agent leaves no unit
    /// running that would then run a second time elsewhere.
    fn submit_process(&self, job: PilotJob, url: String) -> Result<JobId, AdaptorError> {
        let pilot = job.record.id;
        let sandbox = &job.record.sandbox;
        std::fs::create_dir_all(sandbox).map_err(|e| {
            AdaptorError::Resource(format!("cannot create {}: {e}", sandbox.display()))
        })?;
        let log_path = sandbox.join("agent.log");
        let log = std::fs::File::create(&log_path).map_err(|e| {
            AdaptorError::Resource(format!("cannot create {}: {e}", log_path.display()))
        })?;
        let log2 = log
            .try_clone()
            .map_err(|e| AdaptorError::Resource(format!("agent log: {e}")))?;
        let program = agent_program(self.agent_binary.as_deref())?;
        let mut command = tokio::process::Command::new(&program);
        command
            .arg("agent")
            .arg("--coordination")
            .arg(&url)
            .arg("--session")
            .arg(job.coordination.session())
            .arg("--pilot")
            .arg(pilot.to_string())
            .envs(job.coordination.agent_environment())
            .current_dir(sandbox)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid()?;
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| {
            AdaptorError::Resource(format!("cannot start {} agent: {e}", program.display()))
        })?;
        let pid = child
            .id()
            .ok_or_else(|| AdaptorError::Resource("agent process exited at once".into()))?;
        let pilot_sandbox = job.record.sandbox.clone();
        let id = JobId(format!("local:{pid}"));
        self.insert(&id, Handle::Process(pid))?;

        let jobs = self.jobs.clone();
        let watched = id.clone();
        let coordination = job.coordination.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            // Its units' session, and the daemons they started in sessions of their own.
            let killed = kill_session(pid as i32, false)
                + pstar_agent::descendants::kill_marked(&pilot_sandbox);
            if killed > 0 {
                tracing::warn!(%pilot, killed, "killed unit processes the agent left behind");
            }
            let (ok, detail) = match status {
                Ok(status) if status.success() => (true, None),
                Ok(status) => (
                    false,
                    Some(format!(
                        "agent process {pid} {}; see {}",
                        describe_exit(status),
                        log_path.display()
                    )),
                ),
                Err(e) => (
                    false,
                    Some(format!("cannot wait for agent process {pid}: {e}")),
                ),
            };
            finished(&jobs, &watched, &coordination, pilot, ok, detail).await;
        });
        Ok(id)
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => format!("ended ({status})"),
    }
}

/// Records a job's end; a job that did not end cleanly fails its pilot (a second final
/// report of a pilot that already ended is ignored by the state table).
async fn finished(
    jobs: &Mutex<HashMap<JobId, Job>>,
    job: &JobId,
    coordination: &Arc<dyn Coordination>,
    pilot: PilotId,
    ok: bool,
    detail: Option<String>,
) {
    if !ok {
        let event = PilotEvent {
            pilot,
            state: PilotState::Failed,
            at: Timestamp::now(),
            detail: detail.clone(),
        };
        if let Err(e) = coordination.publish(vec![Event::Pilot(event)]).await {
            tracing::error!(%pilot, error = %e, "cannot report the agent's end");
        }
    }
    if let Ok(mut jobs) = jobs.lock()
        && let Some(j) = jobs.get_mut(job)
    {
        j.state = JobState::Finished { ok, detail };
    }
}

/// The process id in a `local:<pid>` job id, if it still names a `pstar agent` process.
fn agent_pid(job: &JobId) -> Option<i32> {
    let pid: i32 = job.0.strip_prefix("local:")?.parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.iter().any(|a| *a == b"agent").then_some(pid)
}

/// Sends SIGKILL to every process of session `sid` (an agent's units, once the agent is
/// gone); returns how many there were. With `units_only`, only processes that carry a
/// unit's environment (`PSTAR_UNIT_ID`) are touched: for a session whose leader this
/// process never started, whose number may have been reused since.
fn kill_session(sid: i32, units_only: bool) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the command name in parentheses: state, ppid, pgrp, session, ...
        let session = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(3))
            .and_then(|s| s.parse::<i32>().ok());
        let is_unit = || {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|v| v.starts_with(b"PSTAR_UNIT_ID="))
            })
        };
        if session == Some(sid)
            && (!units_only || is_unit())
            && nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
        {
            killed += 1;
        }
    }
    killed
}

fn signal_group(pid: i32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal);
}

#[async_trait]
impl ResourceAdaptor for Local {
    fn scheme(&self) -> Scheme {
        Scheme::Local
    }

    async fn submit(&self, job: PilotJob) -> Result<JobId, AdaptorError> {
        self.check_cores(&job);
        match job.coordination.url() {
            None => self.submit_task(job),
            Some(url) => self.submit_process(job, url),
        }
    }

    async fn state(&self, pilot: &PilotRecord) -> Result<JobState, AdaptorError> {
        let job = &crate::job_of(pilot)?;
        let jobs = self
            .jobs
            .lock()
            .map_err(|_| AdaptorError::Resource("adaptor lock poisoned".into()))?;
        match jobs.get(job) {
            Some(j) => Ok(j.state.clone()),
            // A job of an earlier manager of this session (`pstar run --resume`).
            None if agent_pid(job).is_some() => Ok(JobState::Running),
            None if job.0.starts_with("local:") => Ok(JobState::Finished {
                ok: false,
                detail: Some("agent process is gone".into()),
            }),
            None => Err(AdaptorError::UnknownJob(job.clone())),
        }
    }

    async fn kill(&self, pilot: &PilotRecord) -> Result<(), AdaptorError> {
        self.end(pilot, false).await
    }

    async fn cancel(&self, pilot: &PilotRecord) -> Result<(), AdaptorError> {
        self.end(pilot, true).await
    }
}

impl Local {
    /// Ends a pilot's agent: with `grace`, SIGTERM first (it returns its units and
    /// reports) and SIGKILL if it does not end in time; without, SIGKILL at once. Either
    /// way every process of its session and every process marked as one of its units' is
    /// killed after.
    async fn end(&self, pilot: &PilotRecord, grace: bool) -> Result<(), AdaptorError> {
        let job = &crate::job_of(pilot)?;
        let pid = {
            let jobs = self
                .jobs
                .lock()
                .map_err(|_| AdaptorError::Resource("adaptor lock poisoned".into()))?;
            match jobs.get(job).map(|j| &j.handle) {
                // Dropping the agent's future kills its units' process groups.
                Some(Handle::Task(abort)) => {
                    abort.abort();
                    return Ok(());
                }
                Some(Handle::Process(pid)) => *pid as i32,
                None => match agent_pid(job) {
                    Some(pid) => pid,
                    None => {
                        // An earlier manager's agent, gone: units it left may still run.
                        if let Some(sid) = job.0.strip_prefix("local:").and_then(|p| p.parse().ok())
                        {
                            kill_session(sid, true);
                            pstar_agent::descendants::kill_marked(&pilot.sandbox);
                            return Ok(());
                        }
                        return Err(AdaptorError::UnknownJob(job.clone()));
                    }
                },
            }
        };
        // SIGTERM: the agent returns its units and reports; SIGKILL if it does not end.
        if grace {
            signal_group(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let deadline =
            tokio::time::Instant::now() + if grace { STOP_GRACE } else { Duration::ZERO };
        while tokio::time::Instant::now() < deadline {
            if !PathBuf::from(format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        signal_group(pid, nix::sys::signal::Signal::SIGKILL);
        kill_session(pid, false);
        pstar_agent::descendants::kill_marked(&pilot.sandbox);
        Ok(())
    }
}
