//! `ComputeUnit`: the application's handle on one submitted unit.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};

use pstar_model::sandbox::unit_sandbox;
use pstar_model::{
    ComputeUnitDescription, Lifecycle, PilotId, State, Timestamp, UnitId, UnitState,
};

use crate::shell::Command;

/// A state-change callback: called with the unit and its new state, on the manager's task.
pub type Callback = Arc<dyn Fn(&ComputeUnit, UnitState) + Send + Sync>;

/// What the manager knows of one unit; shared by the manager task and the handles.
pub(crate) struct UnitShared {
    pub(crate) id: UnitId,
    pub(crate) description: Arc<ComputeUnitDescription>,
    pub(crate) record: Mutex<UnitRecord>,
    pub(crate) changed: Notify,
}

impl UnitShared {
    /// A unit that has just entered `New` at `now`.
    pub(crate) fn new(
        id: UnitId,
        description: Arc<ComputeUnitDescription>,
        now: pstar_model::Timestamp,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            description,
            record: Mutex::new(UnitRecord {
                life: pstar_model::Lifecycle::new(now),
                pilot: None,
                exit_code: None,
                detail: None,
                attempts: Vec::new(),
                callbacks: Vec::new(),
                answer: None,
            }),
            changed: Notify::new(),
        })
    }
}

pub(crate) struct UnitRecord {
    pub(crate) life: Lifecycle<UnitState>,
    /// The pilot it is (or was last) bound to, and that pilot's sandbox.
    pub(crate) pilot: Option<(PilotId, Arc<Path>)>,
    pub(crate) exit_code: Option<i32>,
    pub(crate) detail: Option<String>,
    /// Its runs, the last one first to end last.
    pub(crate) attempts: Vec<Attempt>,
    pub(crate) callbacks: Vec<Callback>,
    /// A function unit's answer, once it ended: the pickled return value (`Done`) or
    /// exception (`Failed`).
    pub(crate) answer: Option<Arc<[u8]>>,
}

impl UnitRecord {
    /// Keeps the unit's runs: one begins when it starts running on a pilot and ends with
    /// the next return to the pool or final state.
    pub(crate) fn note_run(
        &mut self,
        state: UnitState,
        at: Timestamp,
        exit_code: Option<i32>,
        failed_run: bool,
    ) {
        if state == UnitState::Running {
            self.attempts.push(Attempt {
                pilot: self.pilot.as_ref().map(|(p, _)| *p),
                started: at,
                ended: None,
                end: None,
                exit_code: None,
                detail: None,
            });
            return;
        }
        if !(state.is_final() || state == UnitState::New) {
            return;
        }
        let Some(last) = self.attempts.last_mut().filter(|a| a.ended.is_none()) else {
            return;
        };
        last.ended = Some(at);
        last.exit_code = exit_code;
        last.detail = self.detail.clone();
        last.end = Some(match state {
            UnitState::Done => RunEnd::Done,
            UnitState::Canceled => RunEnd::Canceled,
            UnitState::New if !failed_run => RunEnd::Returned,
            _ => RunEnd::Failed,
        });
    }
}

/// One run of a unit: where and when it ran and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The pilot it ran on.
    pub pilot: Option<PilotId>,
    /// When it started running.
    pub started: Timestamp,
    /// When the run ended, if it has.
    pub ended: Option<Timestamp>,
    /// How it ended, if it has.
    pub end: Option<RunEnd>,
    /// The process's exit code, if it had one.
    pub exit_code: Option<i32>,
    /// Why it ended so, when there is more to say.
    pub detail: Option<String>,
}

/// How one run of a unit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// The unit is `Done`.
    Done,
    /// The run failed (tried again if the unit had retries left).
    Failed,
    /// The unit was canceled while it ran.
    Canceled,
    /// It went back to the pool unfinished (its pilot ended, drained, or was lost).
    Returned,
}

impl RunEnd {
    /// Its name in reports: `done`, `failed`, `canceled`, `returned`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunEnd::Done => "done",
            RunEnd::Failed => "failed",
            RunEnd::Canceled => "canceled",
            RunEnd::Returned => "returned",
        }
    }
}

/// One compute unit (the seeds' `ComputeUnit`): its id, state, exit code and output files.
///
/// Every method but [`on_state_change`](Self::on_state_change) (which has its own example)
/// appears in this one:
///
/// ```
/// # #[tokio::main] async fn main() -> pstar::Result<()> {
/// use pstar::{ComputeUnitDescription, ComputeUnitService, PilotComputeDescription,
///             PilotComputeService, Session, Timestamp, UnitState};
///
/// let dir = tempfile::tempdir().unwrap();
/// let session = Session::builder().sandbox_root(dir.path()).build().await?;
/// let pcs = PilotComputeService::new(&session);
/// let pilot = pcs.create_pilot(PilotComputeDescription::default()).await?;
/// let cus = ComputeUnitService::new(&session);
/// cus.add_pilot_service(&pcs);
///
/// let unit = cus.submit(ComputeUnitDescription::new("/bin/echo").with_arguments(["hi"])).await?;
/// assert_eq!(unit.id().to_string(), "unit.000000");
/// assert_eq!(unit.name(), "echo");
/// assert_eq!(unit.description().arguments, ["hi"]);
/// assert_eq!(unit.wait().await, UnitState::Done);
/// assert_eq!(unit.state(), UnitState::Done);
/// assert_eq!(unit.exit_code(), Some(0));
/// assert_eq!(unit.detail(), None);
/// assert_eq!(unit.pilot(), Some(pilot.id()));
/// let sandbox = unit.sandbox().unwrap();
/// assert_eq!(std::fs::read_to_string(unit.stdout().unwrap()).unwrap(), "hi\n");
/// assert_eq!(unit.stderr().unwrap(), sandbox.join("stderr"));
/// assert_eq!(unit.history().len(), 5); // new, scheduled, pending, running, done
/// assert!(unit.time_in_states(Timestamp::now()).iter().any(|(s, _)| *s == UnitState::Running));
///
/// let sleeper = cus.submit(ComputeUnitDescription::new("/bin/sleep").with_arguments(["60"])).await?;
/// assert_eq!(sleeper.wait_for(UnitState::Running).await, UnitState::Running);
/// sleeper.cancel(); // kills its process group
/// assert_eq!(sleeper.wait().await, UnitState::Canceled);
/// # pcs.cancel().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ComputeUnit {
    pub(crate) shared: Arc<UnitShared>,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for ComputeUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputeUnit")
            .field("id", &self.id())
            .field("state", &self.state())
            .finish()
    }
}

impl ComputeUnit {
    /// The unit's id in its session (`unit.000000`).
    pub fn id(&self) -> UnitId {
        self.shared.id
    }

    /// The unit's name: its description's name, else its executable's file name.
    pub fn name(&self) -> &str {
        self.shared.description.display_name()
    }

    /// What the unit was submitted as.
    pub fn description(&self) -> &ComputeUnitDescription {
        &self.shared.description
    }

    fn with<T>(&self, f: impl FnOnce(&UnitRecord) -> T) -> Option<T> {
        self.shared.record.lock().ok().map(|r| f(&r))
    }

    /// The unit's current state, as the manager last applied it.
    pub fn state(&self) -> UnitState {
        self.with(|r| r.life.state()).unwrap_or(UnitState::Failed)
    }

    /// The process's exit code, once it ended.
    pub fn exit_code(&self) -> Option<i32> {
        self.with(|r| r.exit_code).flatten()
    }

    /// Why the unit is in its state, when there is more to say: the failure reason, or why
    /// it went back to the pool.
    pub fn detail(&self) -> Option<String> {
        self.with(|r| r.detail.clone()).flatten()
    }

    /// The pilot the unit is, or was last, bound to.
    pub fn pilot(&self) -> Option<PilotId> {
        self.with(|r| r.pilot.as_ref().map(|(p, _)| *p)).flatten()
    }

    /// The unit's sandbox directory on its pilot's resource, once bound.
    pub fn sandbox(&self) -> Option<PathBuf> {
        self.with(|r| r.pilot.as_ref().map(|(_, s)| unit_sandbox(s, self.id())))
            .flatten()
    }

    /// Where the unit's standard output is (or will be), once bound to a pilot.
    pub fn stdout(&self) -> Option<PathBuf> {
        self.sandbox()
            .map(|s| self.shared.description.stdout_path(&s))
    }

    /// Where the unit's standard error is (or will be), once bound to a pilot.
    pub fn stderr(&self) -> Option<PathBuf> {
        self.sandbox()
            .map(|s| self.shared.description.stderr_path(&s))
    }

    /// Each time the unit ran: on which pilot, when, and how the run ended (with
    /// `retries`, or after its pilots were lost, there may be several).
    pub fn attempts(&self) -> Vec<Attempt> {
        self.with(|r| r.attempts.clone()).unwrap_or_default()
    }

    /// Every state the unit went through, with when it entered it.
    pub fn history(&self) -> Vec<(UnitState, Timestamp)> {
        self.with(|r| r.life.history().to_vec()).unwrap_or_default()
    }

    /// How long the unit spent in each state it went through (the current one until `now`).
    pub fn time_in_states(&self, now: Timestamp) -> Vec<(UnitState, std::time::Duration)> {
        self.with(|r| r.life.time_in_states(now))
            .unwrap_or_default()
    }

    /// Waits until the unit has reached a final state (`Done`, `Failed`, `Canceled`).
    pub async fn wait(&self) -> UnitState {
        self.wait_until(|s| s.is_final()).await
    }

    /// Waits until the unit is in `state` or in a final state; returns the state then.
    pub async fn wait_for(&self, state: UnitState) -> UnitState {
        self.wait_until(|s| s == state || s.is_final()).await
    }

    async fn wait_until(&self, done: impl Fn(UnitState) -> bool) -> UnitState {
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let s = self.state();
            if done(s) || self.commands.is_closed() {
                return s;
            }
            notified.await;
        }
    }

    /// Asks for the unit to be canceled: taken out of the pool or its pilot's queue, or its
    /// process tree killed. Returns at once; [`wait`](Self::wait) to see it `Canceled`.
    pub fn cancel(&self) {
        let _ = self
            .commands
            .send(Command::Cancel(vec![self.id()], "canceled".into()));
    }

    /// A function unit's answer, once it has ended: what its function returned (`Done`),
    /// or the exception it raised with its traceback (`Failed`), pickled by the pilot's
    /// Python worker. `None` for a unit that runs a program, or that ended without an
    /// answer (canceled, its worker lost).
    pub fn answer(&self) -> Option<Arc<[u8]>> {
        self.with(|r| r.answer.clone()).flatten()
    }

    /// Calls `callback` on every later state change of this unit.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> pstar::Result<()> {
    /// # use pstar::*;
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let session = Session::builder().sandbox_root(dir.path()).build().await?;
    /// # let pcs = PilotComputeService::new(&session);
    /// # pcs.create_pilot(PilotComputeDescription::default()).await?;
    /// # let cus = ComputeUnitService::new(&session);
    /// # cus.add_pilot_service(&pcs);
    /// use std::sync::{Arc, Mutex};
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let unit = cus.submit(ComputeUnitDescription::new("/bin/true")).await?;
    /// let log = seen.clone();
    /// unit.on_state_change(move |_, state| log.lock().unwrap().push(state));
    /// unit.wait().await;
    /// assert_eq!(seen.lock().unwrap().last(), Some(&UnitState::Done));
    /// # pcs.cancel().await;
    /// # Ok(()) }
    /// ```
    pub fn on_state_change(
        &self,
        callback: impl Fn(&ComputeUnit, UnitState) + Send + Sync + 'static,
    ) {
        if let Ok(mut r) = self.shared.record.lock() {
            r.callbacks.push(Arc::new(callback));
        }
    }
}
