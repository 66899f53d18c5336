//! The pilot agent: the process side of a pilot.
//!
//! Once a pilot runs on its resource, its agent holds the pilot's cores and GPUs as
//! [`Slots`] and runs the units bound to it:
//!
//! 1. it **claims** units from its pilot's queue in the coordination store in batches,
//!    keeping up to four pilots' worth of cores waiting at hand (late binding: the manager
//!    binds a unit to a pilot only when that pilot has room, and the agent pulls it);
//! 2. claimed units wait, in claim order, in the agent (`Pending`) until their cores and
//!    GPUs are free; the agent starts them **strictly in order**, so a multi-core unit at the
//!    head is never overtaken by the small units behind it (the starvation-free policy);
//! 3. one executor thread per core runs the units, each as a real process in its own
//!    sandbox directory and its own process group, with stdout/stderr in files; see
//!    [`launch`];
//! 4. every transition goes back to the manager as an event on the store's stream, batched;
//! 5. shortly before the walltime ends (the smaller of 60 s and a tenth of the walltime) it
//!    stops claiming and returns its waiting units to the pool; at the end it stops the units
//!    still running, which go back to the pool too, and the pilot is `Done`.
//!
//! The agent knows nothing of the scheduler or the Pilot-API: it sees only the
//! [`Coordination`] trait, so the same code runs in-process (embedded store, today) or, with
//! a networked store, as a process of its own (planned with the Redis backend).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use pstar_coordination::{
    AgentLease, Claimed, Control, Coordination, CoordinationError, Event, PilotEvent, PilotRecord,
};
use pstar_model::{PilotId, PilotState, State, Timestamp, UnitId, UnitState};

pub mod allocation;
pub mod descendants;
mod execute;
mod journal;
pub mod launch;
pub mod layout;
mod python;
mod slots;
mod stage;

use execute::{Executors, Stop, unit_event};

pub use journal::{JOURNAL, journal_reports, read_journal};
pub use slots::{Placement, Slots};

use journal::{Journal, Reports};

/// The fewest cores' worth of units an agent keeps waiting at hand (when the manager binds
/// that many to it): a small pilot over a networked store needs a few round trips' worth.
const MIN_WAITING: u32 = 16;

/// How long an agent that has ended keeps trying to deliver what it has not yet published
/// (units' ends held while the store was unreachable) before it gives up, naming its
/// journal.
const FINAL_DELIVERY: Duration = Duration::from_secs(60);

/// How often the agent looks for processes its units left behind (see [`descendants`]).
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// A publication that takes this long means the store is not answering (it is being
/// retried): the agent starts no unit until it is through.
const STALLED: Duration = Duration::from_secs(2);

/// Tunables of an agent; the defaults suit both tests and production. They are part of
/// the session's [`pstar_model::Settings`], and reach an agent in its pilot's record
/// ([`PilotRecord::agent`]).
pub type AgentConfig = pstar_model::AgentSettings;

/// Why an agent could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Coordination(#[from] CoordinationError),
    #[error("{0}")]
    Executors(String),
    #[error("cannot create pilot sandbox {path}: {source}")]
    Sandbox {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The store no longer holds the session (keys deleted, Redis restarted without its
    /// data): there is no one to report to; the agent killed its units.
    #[error(
        "the coordination store lost this session ({0}): its keys were deleted or Redis \
         restarted without its data; the agent stopped and killed its units"
    )]
    SessionLost(String),
    /// The store stayed unreachable after the agent ended: some units' ends were never
    /// published. They are in the journal.
    #[error(
        "the coordination store stayed unreachable: some events were never published; \
         the units' ends are in {journal}"
    )]
    Undelivered { journal: std::path::PathBuf },
    /// Another agent took the pilot's lease while this one could not renew it (it was
    /// stopped, or cut off from the store, for longer than the lease lasts): that one runs
    /// the pilot now. This one gave its units back and did not end the pilot.
    #[error(
        "another agent runs this pilot now ({0}): this one lost its lease, gave its units \
         back to the pool and stopped without ending the pilot"
    )]
    Superseded(AgentLease),
}

/// One pilot's agent. Build it with [`Agent::new`], then [`run`](Agent::run) it.
pub struct Agent {
    coordination: Arc<dyn Coordination>,
    record: Arc<PilotRecord>,
    config: AgentConfig,
    /// The pilot's lease this agent holds, renewed with its heartbeats.
    lease: Option<AgentLease>,
}

impl Agent {
    /// The agent of `record`'s pilot, with the settings the record carries.
    pub fn for_record(coordination: Arc<dyn Coordination>, record: PilotRecord) -> Self {
        let config = record.agent.clone();
        Self::new(coordination, record, config)
    }

    /// The agent of `record`'s pilot, with `config` instead of the record's settings.
    pub fn new(
        coordination: Arc<dyn Coordination>,
        record: PilotRecord,
        config: AgentConfig,
    ) -> Self {
        Self {
            coordination,
            record: Arc::new(record),
            config,
            lease: None,
        }
    }

    /// This agent holds `lease` (taken with [`Coordination::hold_agent_lease`] for
    /// [`lease_ttl`]): it renews it with each heartbeat, and stops if another agent took it.
    pub fn holding(mut self, lease: AgentLease) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Runs the pilot until its walltime ends or it is canceled; returns its final state.
    ///
    /// Every transition, the pilot's own included, is published on the event stream; the
    /// pilot's final event is published after the final events of all its units.
    pub async fn run(self) -> Result<PilotState, AgentError> {
        let pilot = self.record.id;
        let started = Instant::now();
        let walltime = self.record.description.walltime;
        let margin = self
            .config
            .drain_margin
            .unwrap_or_else(|| (walltime / 10).min(Duration::from_secs(60)));

        static SUBREAPER: std::sync::Once = std::sync::Once::new();
        SUBREAPER.call_once(|| {
            descendants::become_subreaper();
        });

        let free = Arc::new(AtomicU32::new(self.record.description.cores));
        let remote = self.coordination.url().is_some();
        // Whether the store answers: set by every call that reaches it or gives up on it.
        let (health, mut health_rx) = watch::channel(true);
        let health = Arc::new(health);
        let journal = Arc::new(Journal::new(&self.record.sandbox));
        let (events, reporter) = spawn_reporter(
            self.coordination.clone(),
            self.config.report_window,
            remote.then_some(self.config.remote_report_window),
            free.clone(),
            remote.then(|| journal.clone()),
            health.clone(),
        );
        if let Err(source) = std::fs::create_dir_all(&self.record.sandbox) {
            let err = AgentError::Sandbox {
                path: self.record.sandbox.clone(),
                source,
            };
            pilot_event(&events, pilot, PilotState::Failed, Some(err.to_string()));
            drop(events);
            deliver(reporter, journal.path()).await?;
            return Err(err);
        }
        pilot_event(&events, pilot, PilotState::Running, None);

        // Helper tasks die with the agent, even if the agent itself is aborted.
        let mut helpers = tokio::task::JoinSet::new();
        let (lost_tx, lost_rx) = mpsc::channel(1);
        helpers.spawn(heartbeats(
            self.coordination.clone(),
            pilot,
            self.config.heartbeat_interval,
            health.clone(),
            // Over a networked store the session may vanish (keys deleted, Redis restarted
            // empty): the agent checks that its record is still there.
            remote.then_some(lost_tx),
            self.lease.clone(),
        ));
        let (claim_tx, claim_rx) = mpsc::channel::<usize>(1);
        let (claimed_tx, claimed_rx) = mpsc::channel(1);
        helpers.spawn(claimer(
            self.coordination.clone(),
            pilot,
            self.config.claim_wait,
            claim_rx,
            claimed_tx,
        ));
        let (control_tx, control_rx) = mpsc::channel(16);
        helpers.spawn(controls(
            self.coordination.clone(),
            pilot,
            self.config.claim_wait,
            control_tx,
        ));

        let layout = match layout::Layout::for_pilot(&self.record.description) {
            Ok(layout) => Arc::new(layout),
            Err(msg) => {
                pilot_event(&events, pilot, PilotState::Failed, Some(msg.clone()));
                drop(events);
                deliver(reporter, journal.path()).await?;
                return Err(AgentError::Executors(msg));
            }
        };
        if layout.nodes.len() > 1 {
            tracing::info!(%pilot, nodes = ?layout.nodes, cores = ?layout.cores, "multi-node pilot");
        }
        let stager = Arc::new(stage::Stager::new(
            self.coordination.clone(),
            self.record.clone(),
            events.clone(),
        ));
        let executors = Executors::new(
            self.record.clone(),
            layout,
            events.clone(),
            free,
            stager.clone(),
        );
        let (staged_tx, staged_rx) = mpsc::unbounded_channel();
        let sweeper = descendants::Sweeper::new(self.record.sandbox.clone());
        helpers.spawn(sweep_orphans(sweeper, executors.clone()));
        let mut run = Run {
            record: self.record.clone(),
            kill_grace: self.config.kill_grace,
            events: events.clone(),
            executors,
            canceled_early: HashSet::new(),
            claimed_ever: HashSet::new(),
            draining: false,
            claim_outstanding: false,
            health,
            stager,
            staging: HashMap::new(),
            staged_tx,
        };
        let ends_at = (started + walltime).into_std();
        run.executors.with(|q| q.ends_at = Some(ends_at));
        let end = run
            .main_loop(
                Channels {
                    claim_tx,
                    claimed_rx,
                    control_rx,
                    lost_rx,
                    health_rx: &mut health_rx,
                    staged_rx,
                },
                started + walltime.saturating_sub(margin),
                started + walltime,
            )
            .await;
        let (final_state, reason) = match end {
            End::Pilot(state, reason) => (Ok(state), reason),
            // The pilot is the other agent's now: its end is that one's to report.
            End::Superseded(by) => {
                let reason = format!("another agent runs {pilot} now ({by})");
                (Err(by), reason)
            }
            End::SessionLost(why) => {
                // Nothing to report to: kill the units (dropping `run` does) and say so.
                tracing::error!(%pilot, why, "the coordination store lost this session");
                helpers.abort_all();
                drop(run);
                reporter.abort();
                return Err(AgentError::SessionLost(why));
            }
        };

        // Stop what still runs and wait for each unit to report its end.
        run.stop_all(&reason);
        loop {
            let idle = run.executors.changed.notified();
            if run.executors.with(|q| q.running.is_empty()).unwrap_or(true) {
                break;
            }
            idle.await;
        }
        helpers.abort_all();
        if let Ok(state) = &final_state {
            pilot_event(&events, pilot, *state, Some(reason));
        }
        drop(run);
        drop(events);
        deliver(reporter, journal.path()).await?;
        final_state.map_err(AgentError::Superseded)
    }
}

/// Waits for the reporter to publish what is left, for [`FINAL_DELIVERY`] at most.
async fn deliver(
    reporter: tokio::task::JoinHandle<()>,
    journal: &std::path::Path,
) -> Result<(), AgentError> {
    let abort = reporter.abort_handle();
    match tokio::time::timeout(FINAL_DELIVERY, reporter).await {
        Ok(_) => Ok(()),
        Err(_) => {
            abort.abort();
            Err(AgentError::Undelivered {
                journal: journal.to_owned(),
            })
        }
    }
}

/// The channels the main loop listens to.
struct Channels<'a> {
    claim_tx: mpsc::Sender<usize>,
    claimed_rx: mpsc::Receiver<Result<Vec<Claimed>, CoordinationError>>,
    control_rx: mpsc::Receiver<Control>,
    /// Why the agent must stop at once (the session is gone, the lease taken), if it must.
    lost_rx: mpsc::Receiver<Lost>,
    health_rx: &'a mut watch::Receiver<bool>,
    /// Units whose inputs were staged (or could not be).
    staged_rx: mpsc::UnboundedReceiver<Staged>,
}

/// A unit's inputs staged, or why they could not be.
type Staged = (
    UnitId,
    pstar_coordination::SharedDescription,
    Result<stage::Moved, String>,
);

/// How the main loop ended.
enum End {
    /// The pilot ends in this state, for this reason.
    Pilot(PilotState, String),
    /// The store no longer holds the session.
    SessionLost(String),
    /// Another agent holds the pilot's lease now.
    Superseded(AgentLease),
}

/// The agent's working state; owned by its main loop alone.
struct Run {
    record: Arc<PilotRecord>,
    kill_grace: Duration,
    events: Reports,
    /// The waiting units, the slots and the threads that run units.
    executors: Arc<Executors>,
    /// Cancels that arrived before their unit was claimed.
    canceled_early: HashSet<UnitId>,
    /// Every unit this agent has claimed. An agent gets the same unit again only after it
    /// gave it back (`Queue::given_back`), so any other second copy in its queue (a store
    /// call retried after its reply was lost) is dropped rather than run twice.
    claimed_ever: HashSet<UnitId>,
    draining: bool,
    claim_outstanding: bool,
    /// Whether the store answers; the main loop marks it down when a claim gives up.
    health: Arc<watch::Sender<bool>>,
    /// The pilot's data cache and stores.
    stager: Arc<stage::Stager>,
    /// Units whose inputs are being staged, with the task staging them.
    staging: HashMap<UnitId, tokio::task::AbortHandle>,
    staged_tx: mpsc::UnboundedSender<Staged>,
}

impl Drop for Run {
    /// No unit outlives its agent, even an aborted one: its process groups, and any
    /// process that carries one of its units' markers (daemons that left their group); the
    /// executor threads end.
    fn drop(&mut self) {
        self.executors.with(|q| {
            q.closed = true;
            for control in q.running.values() {
                control.kill();
            }
        });
        self.executors.python.close();
        // Twice: a unit's process may fork while the first scan runs.
        for _ in 0..2 {
            if descendants::kill_marked(&self.record.sandbox) == 0 {
                break;
            }
        }
    }
}

impl Run {
    async fn main_loop(
        &mut self,
        channels: Channels<'_>,
        drain_at: Instant,
        end_at: Instant,
    ) -> End {
        let Channels {
            claim_tx,
            mut claimed_rx,
            mut control_rx,
            mut lost_rx,
            health_rx,
            mut staged_rx,
        } = channels;
        let pilot = self.record.id;
        let cores = self.record.description.cores;
        loop {
            // Keep up to four pilots' worth of cores (and at least 16) waiting here, so
            // executors never wait on the store, however far it is; ask again once less
            // than half of that is left.
            let changed = self.executors.changed.notified();
            if !self.draining && !self.claim_outstanding {
                let waiting = self.executors.with(|q| q.pending_cores).unwrap_or(0);
                let target = cores.saturating_mul(4).max(MIN_WAITING);
                let low = target / 2;
                if waiting < low
                    && claim_tx
                        .try_send(target.saturating_sub(waiting) as usize)
                        .is_ok()
                {
                    self.claim_outstanding = true;
                }
            }
            tokio::select! {
                _ = changed => {}
                Some((id, desc, result)) = staged_rx.recv() => self.staged(id, desc, result),
                claimed = claimed_rx.recv() => {
                    self.claim_outstanding = false;
                    match claimed {
                        Some(Ok(units)) => {
                            self.health.send_if_modified(|up| !std::mem::replace(up, true));
                            self.claimed(units)
                        }
                        // Units that run go on, and their ends are kept until the store
                        // is back; the claim is tried again.
                        Some(Err(CoordinationError::Unreachable(e))) => {
                            self.health.send_if_modified(|up| std::mem::replace(up, false));
                            tracing::warn!(%pilot, error = %e, "cannot claim units");
                        }
                        Some(Err(CoordinationError::SessionLost(why))) => return End::SessionLost(why),
                        Some(Err(e)) => {
                            tracing::error!(%pilot, error = %e, "agent lost the coordination store");
                            return End::Pilot(PilotState::Failed, format!("coordination store failed: {e}"));
                        }
                        None => return End::Pilot(PilotState::Failed, "claim task ended".into()),
                    }
                }
                Some(lost) = lost_rx.recv() => return match lost {
                    Lost::Session(why) => End::SessionLost(why),
                    Lost::Lease(by) => End::Superseded(by),
                },
                Ok(()) = health_rx.changed() => {
                    let up = *health_rx.borrow_and_update();
                    let running = self.executors.with(|q| {
                        q.paused = !up;
                        q.running.len()
                    });
                    if up {
                        tracing::warn!(%pilot, "the coordination store is back: starting units again");
                    } else {
                        tracing::warn!(
                            %pilot, running = running.unwrap_or(0),
                            "the coordination store is unreachable: not starting units until it \
                             is back; the ends of those that run are kept (and journaled) until \
                             they are published"
                        );
                    }
                }
                control = control_rx.recv() => match control {
                    Some(Control::CancelUnit(unit)) => self.cancel_unit(unit),
                    Some(Control::ReturnUnits(units)) => self.give_back(&units),
                    Some(Control::CancelPilot) => return End::Pilot(PilotState::Canceled, "pilot canceled".into()),
                    None => return End::Pilot(PilotState::Failed, "control task ended".into()),
                },
                _ = tokio::time::sleep_until(drain_at), if !self.draining => {
                    self.draining = true;
                    let _ = self.events.send(Event::PilotDraining { pilot, at: Timestamp::now() });
                    self.return_pending("pilot is draining before its walltime ends");
                }
                _ = tokio::time::sleep_until(end_at) => {
                    return End::Pilot(PilotState::Done, "pilot reached its walltime".into());
                }
            }
        }
    }

    fn unit_event(
        &self,
        unit: UnitId,
        state: UnitState,
        exit_code: Option<i32>,
        detail: Option<String>,
    ) {
        let _ = self
            .events
            .send(unit_event(unit, self.record.id, state, exit_code, detail));
    }

    fn claimed(&mut self, units: Vec<Claimed>) {
        let mut accepted = Vec::with_capacity(units.len());
        for (id, desc) in units {
            let again = || {
                self.executors
                    .with(|q| q.given_back.remove(&id))
                    .unwrap_or(false)
            };
            if !self.claimed_ever.insert(id) && !again() {
                tracing::warn!(unit = %id, "dropped a second copy of a unit already claimed");
                continue;
            }
            let stages = !desc.input_data.is_empty();
            self.unit_event(
                id,
                if stages {
                    UnitState::StagingInput
                } else {
                    UnitState::Pending
                },
                None,
                None,
            );
            let d = &self.record.description;
            if self.canceled_early.remove(&id) {
                self.unit_event(id, UnitState::Canceled, None, Some("canceled".into()));
            } else if desc.cores > d.cores || desc.gpus > d.gpus {
                let n = |k: u32, noun| pstar_model::plural(u64::from(k), noun);
                let msg = format!(
                    "unit needs {} and {}; pilot {} has {} and {}",
                    n(desc.cores, "core"),
                    n(desc.gpus, "GPU"),
                    self.record.id,
                    n(d.cores, "core"),
                    n(d.gpus, "GPU")
                );
                self.unit_event(id, UnitState::Failed, None, Some(msg));
            } else if self.draining {
                let why = "pilot is draining before its walltime ends".to_owned();
                self.unit_event(id, UnitState::New, None, Some(why));
            } else if stages {
                let (stager, done) = (self.stager.clone(), self.staged_tx.clone());
                let task = tokio::spawn(async move {
                    let result = stager.stage_in(id, &desc).await;
                    let _ = done.send((id, desc, result));
                });
                self.staging.insert(id, task.abort_handle());
            } else {
                accepted.push((id, desc));
            }
        }
        self.executors.with(|q| {
            for (id, desc) in accepted {
                q.pending_cores += desc.cores;
                q.pending.push_back((id, desc));
            }
        });
    }

    /// A unit's inputs are staged (or failed to be): it waits for its slots like any
    /// other, unless it was canceled or the pilot drains meanwhile.
    fn staged(
        &mut self,
        id: UnitId,
        desc: pstar_coordination::SharedDescription,
        result: Result<stage::Moved, String>,
    ) {
        if self.staging.remove(&id).is_none() {
            return; // given back or canceled meanwhile
        }
        match result {
            Err(why) => {
                self.unit_event(id, UnitState::Failed, None, Some(why));
            }
            Ok(_) if self.canceled_early.remove(&id) => {
                self.unit_event(id, UnitState::Canceled, None, Some("canceled".into()));
            }
            Ok(_) if self.draining => {
                let why = "pilot is draining before its walltime ends".to_owned();
                self.unit_event(id, UnitState::New, None, Some(why));
            }
            Ok(_) => {
                self.unit_event(id, UnitState::Pending, None, None);
                self.executors.with(|q| {
                    q.pending_cores += desc.cores;
                    q.pending.push_back((id, desc));
                });
            }
        }
    }

    /// Units still staging their inputs go back to the pool (the pilot ends or drains).
    fn return_staging(&mut self, reason: &str) {
        for (id, task) in std::mem::take(&mut self.staging) {
            task.abort();
            self.unit_event(id, UnitState::New, None, Some(reason.to_owned()));
        }
    }

    fn cancel_unit(&mut self, unit: UnitId) {
        enum Found {
            Running,
            Waiting,
            Nowhere,
        }
        let grace = self.kill_grace;
        let found = self.executors.with(|q| {
            if let Some(control) = q.running.get(&unit) {
                control.stop(Stop::Cancel, grace);
                return Found::Running;
            }
            let Some(pos) = q.pending.iter().position(|(id, _)| *id == unit) else {
                return Found::Nowhere;
            };
            if let Some((_, desc)) = q.pending.remove(pos) {
                q.pending_cores -= desc.cores;
            }
            Found::Waiting
        });
        match found {
            Some(Found::Waiting) => {
                self.unit_event(unit, UnitState::Canceled, None, Some("canceled".into()))
            }
            Some(Found::Nowhere) if self.staging.contains_key(&unit) => {
                if let Some(task) = self.staging.remove(&unit) {
                    task.abort();
                }
                self.unit_event(unit, UnitState::Canceled, None, Some("canceled".into()));
            }
            Some(Found::Nowhere) => {
                self.canceled_early.insert(unit);
            }
            Some(Found::Running) | None => {}
        }
    }

    /// Gives back the units of `units` that still wait here (the manager takes them for
    /// a pilot that idles); started ones run on.
    fn give_back(&mut self, units: &[UnitId]) {
        let asked: std::collections::HashSet<UnitId> = units.iter().copied().collect();
        let given = self
            .executors
            .with(|q| {
                let mut given = Vec::new();
                q.pending.retain(|(id, desc)| {
                    let give = asked.contains(id);
                    if give {
                        given.push(*id);
                        q.pending_cores -= desc.cores;
                    }
                    !give
                });
                q.given_back.extend(given.iter().copied());
                given
            })
            .unwrap_or_default();
        let why = format!(
            "given back by {} for a pilot with idle cores",
            self.record.id
        );
        for id in given {
            self.unit_event(id, UnitState::New, None, Some(why.clone()));
        }
    }

    fn return_pending(&mut self, reason: &str) {
        let waiting = self
            .executors
            .with(|q| {
                q.pending_cores = 0;
                std::mem::take(&mut q.pending)
            })
            .unwrap_or_default();
        for (id, _) in waiting {
            self.unit_event(id, UnitState::New, None, Some(reason.to_owned()));
        }
    }

    /// Sends every waiting and running unit back to the pool: whether the pilot reached its
    /// walltime or was canceled, its units did nothing wrong and run again elsewhere.
    fn stop_all(&mut self, reason: &str) {
        self.return_staging(reason);
        self.return_pending(reason);
        let grace = self.kill_grace;
        self.executors.with(|q| {
            for control in q.running.values() {
                control.stop(Stop::Return(reason.to_owned()), grace);
            }
        });
    }
}

fn pilot_event(events: &Reports, pilot: PilotId, state: PilotState, detail: Option<String>) {
    let _ = events.send(Event::Pilot(PilotEvent {
        pilot,
        state,
        at: Timestamp::now(),
        detail,
    }));
}

/// Publishes events in batches. While every core is busy (`free` is 0: the manager is in
/// no hurry for news), whatever comes within `window` after the first event of a batch
/// rides along: one store round trip and one wake-up of the manager for many
/// transitions. An agent with a free core reports at once, so an idle pilot answers in
/// well under a millisecond; over a networked store (`remote_window` set) it always
/// gathers for that long. A batch that holds a unit's end is published at once.
///
/// Nothing is dropped: a batch the store does not take is kept and tried again (with the
/// events that come meanwhile) until it is published, and `health` says the store is
/// down meanwhile. With a `journal`, units' ends are appended to it before they are
/// published.
fn spawn_reporter(
    coordination: Arc<dyn Coordination>,
    window: Duration,
    remote_window: Option<Duration>,
    free: Arc<AtomicU32>,
    journal: Option<Arc<Journal>>,
    health: Arc<watch::Sender<bool>>,
) -> (Reports, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let reports = Reports::new(tx, journal.clone());
    let task = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(256);
        while rx.recv_many(&mut batch, 4096).await > 0 {
            // A unit's end goes out at once: while it waits here, a killed agent would take
            // the news with it, and a unit that has finished would run again elsewhere.
            let ends = batch.iter().any(is_end);
            let gather = match remote_window {
                _ if ends => Duration::ZERO,
                Some(remote) => remote.max(window),
                None if free.load(Ordering::Relaxed) == 0 => window,
                None => Duration::ZERO,
            };
            if !gather.is_zero() {
                tokio::time::sleep(gather).await;
                while let Ok(e) = rx.try_recv() {
                    batch.push(e);
                }
            }
            let mut failures = 0u32;
            loop {
                let attempt = if journal.is_some() {
                    batch.clone()
                } else {
                    std::mem::take(&mut batch)
                };
                let publish = coordination.publish(attempt);
                tokio::pin!(publish);
                let published = tokio::select! {
                    r = &mut publish => r,
                    _ = tokio::time::sleep(STALLED) => {
                        // The store is being retried: no unit starts until it answers.
                        health.send_if_modified(|up| std::mem::replace(up, false));
                        publish.await
                    }
                };
                match published {
                    Ok(()) => {
                        if let Some(journal) = &journal {
                            let ends = batch.iter().filter(|e| is_end(e)).count();
                            journal.published(ends as u64);
                        }
                        batch.clear();
                        health.send_if_modified(|up| !std::mem::replace(up, true));
                        break;
                    }
                    // Without a journal (the embedded store) there is nothing to wait for.
                    Err(e) if journal.is_none() => {
                        tracing::error!(error = %e, "cannot publish events");
                        break;
                    }
                    Err(e) => {
                        if failures == 0 {
                            tracing::error!(
                                error = %e, events = batch.len(),
                                "cannot publish events; keeping them and trying again"
                            );
                        }
                        failures += 1;
                        health.send_if_modified(|up| std::mem::replace(up, false));
                        // What came meanwhile (ends already journaled) rides along.
                        while let Ok(e) = rx.try_recv() {
                            batch.push(e);
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            if failures > 0 {
                tracing::warn!(
                    attempts = failures + 1,
                    "published the events kept while the store was unreachable"
                );
            }
        }
    });
    (reports, task)
}

fn is_end(e: &Event) -> bool {
    matches!(e, Event::Unit(u) if u.state.is_final())
}

/// Kills, every [`SWEEP_EVERY`], the processes that ended units left behind.
async fn sweep_orphans(sweeper: descendants::Sweeper, executors: Arc<Executors>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        sweeper.sweep(|| executors.running_sandboxes());
    }
}

/// Claims units when the main loop asks, one claim at a time, so a claim in flight is never
/// dropped halfway (whatever the backend).
async fn claimer(
    coordination: Arc<dyn Coordination>,
    pilot: PilotId,
    wait: Duration,
    mut requests: mpsc::Receiver<usize>,
    claimed: mpsc::Sender<Result<Vec<Claimed>, CoordinationError>>,
) {
    while let Some(max) = requests.recv().await {
        let got = coordination.claim(pilot, max, wait).await;
        if claimed.send(got).await.is_err() {
            break;
        }
    }
}

async fn controls(
    coordination: Arc<dyn Coordination>,
    pilot: PilotId,
    wait: Duration,
    tx: mpsc::Sender<Control>,
) {
    loop {
        match coordination.recv_control(pilot, wait).await {
            Ok(messages) => {
                for m in messages {
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::error!(%pilot, error = %e, "cannot receive control messages");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// How long an agent's lease on its pilot lasts unless renewed: a few heartbeats, so that a
/// heartbeat late or retried does not lose it, and at least 10 s.
pub fn lease_ttl(heartbeat_interval: Duration) -> Duration {
    heartbeat_interval
        .saturating_mul(3)
        .max(Duration::from_secs(10))
}

/// Why the heartbeats tell the agent to stop at once.
enum Lost {
    /// The store no longer holds the session.
    Session(String),
    /// Another agent holds the pilot's lease now.
    Lease(AgentLease),
}

/// Beats every `every`, and says whether the store answers. With `lost`, first checks that
/// the pilot's record is still in the store: if it is gone, so is the session, and `lost`
/// is told why (the heartbeat is not written into a session that no longer exists). With a
/// `lease`, each beat renews it; if another agent holds it now, `lost` is told who.
async fn heartbeats(
    coordination: Arc<dyn Coordination>,
    pilot: PilotId,
    every: Duration,
    health: Arc<watch::Sender<bool>>,
    lost: Option<mpsc::Sender<Lost>>,
    lease: Option<AgentLease>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if let Some(lost) = &lost {
            match coordination.pilot(pilot).await {
                Err(CoordinationError::UnknownPilot(_)) => {
                    let why = format!("the record of {pilot} is gone");
                    let _ = lost.send(Lost::Session(why)).await;
                    return;
                }
                Err(CoordinationError::SessionLost(why)) => {
                    let _ = lost.send(Lost::Session(why)).await;
                    return;
                }
                _ => {}
            }
        }
        if let Some(lease) = &lease {
            match coordination
                .hold_agent_lease(pilot, lease, lease_ttl(every))
                .await
            {
                Ok(None) => {}
                Ok(Some(other)) => {
                    tracing::error!(%pilot, %other, "another agent took this pilot's lease");
                    if let Some(lost) = &lost {
                        let _ = lost.send(Lost::Lease(other)).await;
                    }
                    return;
                }
                Err(e) => tracing::warn!(%pilot, error = %e, "cannot renew the pilot's lease"),
            }
        }
        match coordination.heartbeat(pilot, Timestamp::now()).await {
            Ok(()) => {
                health.send_if_modified(|up| !std::mem::replace(up, true));
            }
            Err(e) => {
                if matches!(e, CoordinationError::Unreachable(_)) {
                    health.send_if_modified(|up| std::mem::replace(up, false));
                }
                tracing::warn!(%pilot, error = %e, "cannot send heartbeat");
            }
        }
    }
}
