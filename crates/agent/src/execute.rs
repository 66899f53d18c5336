//! Running one unit's process, on a blocking thread of its own.
//!
//! A thread per running unit forks, execs and waits exactly as a plain spawner would, so
//! the agent's async tasks never wait on a process and a slot is refilled the moment its
//! unit ends. The agent's main loop stops a unit through its [`UnitControl`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use tokio::sync::mpsc;

use pstar_coordination::{Event, PilotRecord, SharedDescription, UnitEvent};
use pstar_model::sandbox::unit_sandbox;
use pstar_model::{PilotId, Timestamp, UnitId, UnitState};

use crate::launch::{Launch, LaunchError};

/// Why a running unit is stopped.
#[derive(Debug, Clone)]
pub(crate) enum Stop {
    /// The application canceled it: it ends `Canceled`.
    Cancel,
    /// Its pilot ends: it goes back to the pool (`New`) to run elsewhere.
    Return(String),
}

/// What the unit's thread hands back when its process is gone.
pub(crate) struct Finished {
    pub unit: UnitId,
    pub cores: u32,
    pub gpus: Vec<u32>,
}

/// Shared between a unit's thread and the agent's main loop.
#[derive(Default)]
pub(crate) struct UnitControl {
    process: Mutex<Process>,
}

#[derive(Default)]
struct Process {
    /// The process (and process-group) id, once started.
    pid: Option<i32>,
    /// The process has been reaped: its group id may belong to someone else now.
    reaped: bool,
    stop: Option<Stop>,
}

impl UnitControl {
    /// Sends `sig` to the unit's process group, if it still owns it.
    fn signal(&self, sig: Signal) {
        if let Ok(p) = self.process.lock() {
            if let (Some(pid), false) = (p.pid, p.reaped) {
                // ESRCH: the group is already gone.
                let _ = killpg(Pid::from_raw(pid), sig);
            }
        }
    }

    /// Stops the unit: SIGTERM to its process group, SIGKILL after `grace`.
    /// The unit's thread reports it `Canceled` or back in the pool, as `stop` says.
    pub(crate) fn stop(self: &Arc<Self>, stop: Stop, grace: Duration) {
        let started = match self.process.lock() {
            Ok(mut p) => {
                if p.reaped {
                    return;
                }
                p.stop = Some(stop);
                p.pid.is_some()
            }
            Err(_) => return,
        };
        if started {
            self.signal(Signal::SIGTERM);
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                me.signal(Signal::SIGKILL);
            });
        }
    }

    /// Kills the unit's process group at once (the agent is going away); the unit goes
    /// back to the pool.
    pub(crate) fn kill(&self) {
        if let Ok(mut p) = self.process.lock() {
            p.stop
                .get_or_insert_with(|| Stop::Return("pilot agent stopped".into()));
        }
        self.signal(Signal::SIGKILL);
    }
}

/// One unit to run.
pub(crate) struct UnitJob {
    pub id: UnitId,
    pub record: Arc<PilotRecord>,
    pub desc: SharedDescription,
    pub gpus: Vec<u32>,
}

pub(crate) fn unit_event(
    unit: UnitId,
    pilot: PilotId,
    state: UnitState,
    exit_code: Option<i32>,
    detail: Option<String>,
) -> Event {
    Event::Unit(UnitEvent {
        unit,
        pilot: Some(pilot),
        state,
        at: Timestamp::now(),
        exit_code,
        detail,
    })
}

/// Runs the unit to its end; blocking. Reports `Running` and the final state on `events`,
/// then hands the unit's slots back on `done`.
pub(crate) fn run(
    job: UnitJob,
    control: Arc<UnitControl>,
    events: mpsc::UnboundedSender<Event>,
    done: mpsc::UnboundedSender<Finished>,
) {
    let (id, pilot) = (job.id, job.record.id);
    let report = |state, exit_code, detail| {
        let _ = events.send(unit_event(id, pilot, state, exit_code, detail));
    };
    let outcome = execute(&job, &control, &report);
    if let Err(e) = outcome {
        let msg = e.to_string();
        // Also where a user looks first.
        let sandbox = unit_sandbox(&job.record.sandbox, id);
        let _ = std::fs::write(job.desc.stderr_path(&sandbox), format!("pstar: {msg}\n"));
        report(UnitState::Failed, None, Some(msg));
    }
    let _ = done.send(Finished {
        unit: id,
        cores: job.desc.cores,
        gpus: job.gpus,
    });
}

fn execute(
    job: &UnitJob,
    control: &UnitControl,
    report: &dyn Fn(UnitState, Option<i32>, Option<String>),
) -> Result<(), LaunchError> {
    let stopped = |stop: Option<Stop>| match stop {
        Some(Stop::Cancel) => report(UnitState::Canceled, None, Some("canceled".into())),
        Some(Stop::Return(why)) => report(UnitState::New, None, Some(why)),
        None => {}
    };
    if let Some(stop) = control.process.lock().ok().and_then(|p| p.stop.clone()) {
        stopped(Some(stop));
        return Ok(());
    }

    let sandbox = unit_sandbox(&job.record.sandbox, job.id);
    let launch = Launch {
        unit: job.id,
        pilot: job.record.id,
        description: &job.desc,
        pilot_environment: &job.record.description.environment,
        sandbox: &sandbox,
        gpus: &job.gpus,
        pilot_gpus: job.record.description.gpus,
    };
    let mut child = launch
        .prepare()?
        .spawn()
        .map_err(|e| launch.spawn_error(e))?;
    let pid = child.id() as i32;
    report(UnitState::Running, None, None);
    // A stop that came while the process was starting is carried out here.
    let stop_pending = match control.process.lock() {
        Ok(mut p) => {
            p.pid = Some(pid);
            p.stop.is_some()
        }
        Err(_) => false,
    };
    if stop_pending {
        control.signal(Signal::SIGTERM);
    }

    // Wait for the leader to exit without reaping it, so that its group id stays ours
    // while we kill whatever it left running in the group; then reap it.
    let exited = waitid(
        Id::Pid(Pid::from_raw(pid)),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
    );
    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    let status = child.wait();
    let stop = match control.process.lock() {
        Ok(mut p) => {
            p.reaped = true;
            p.stop.take()
        }
        Err(_) => None,
    };
    if stop.is_some() {
        stopped(stop);
        return Ok(());
    }
    let status = match (exited, status) {
        (_, Ok(s)) => s,
        (_, Err(source)) => return Err(LaunchError::Wait { source }),
    };
    let stderr = job.desc.stderr_path(&sandbox);
    match (
        status.success(),
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    ) {
        (true, _, _) => report(UnitState::Done, Some(0), None),
        (false, Some(code), _) => report(
            UnitState::Failed,
            Some(code),
            Some(format!("exit code {code}; see {}", stderr.display())),
        ),
        (false, None, Some(sig)) => report(
            UnitState::Failed,
            None,
            Some(format!("killed by signal {sig}; see {}", stderr.display())),
        ),
        (false, None, None) => report(
            UnitState::Failed,
            None,
            Some(format!("ended abnormally; see {}", stderr.display())),
        ),
    }
    Ok(())
}
