//! The manager core: every decision about a session's pilots and units, as a pure state
//! machine.
//!
//! [`Core`] owns what the manager knows of every pilot and unit of one session, for all
//! of its unit services at once (one pilot may serve several services: M:N). It takes a
//! closed set of [`Input`]s (commands from the Pilot-API, batches of events from the
//! store, results of the store calls it asked for, and the time) through
//! [`Core::handle`], and [`Core::round`] returns what to do about them as one [`Round`] of
//! effects: events to publish, units to enqueue or withdraw, control messages, pilots to
//! fail or cancel. It does no I/O, spawns nothing and reads no clock: the async shell
//! (`unit_service::Shell`) applies each round with batched store calls, the simulator
//! (`pstar simulate`) applies it to virtual pilots, and tests look at it directly.
//!
//! The manager's own decisions travel the same path as every report: a decision is
//! published as an event, and the unit's state changes when that event comes back
//! through [`Input::Events`]. So replaying a session's stream (`--resume`, `pstar status`)
//! is the same core fed the same events, with no decisions taken until it has caught up.
//!
//! A withdraw is the one decision that needs an answer from the store (which units were
//! still queued, and which the agent had claimed): the core asks for it in
//! [`Round::withdraw`] and finishes the decision when [`Input::Withdrawn`] brings the
//! answer, before anything else is fed to it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use pstar_coordination::{CancelTarget, Control, Event, UnitEvent, Withdrawal};
use pstar_model::{PilotId, PilotState, State, Timestamp, UnitId, UnitState};

use crate::scheduler::{self, Decision, PilotView, UnitView};

mod data;
mod decide;
mod steal;
#[cfg(test)]
mod tests;

/// A unit service within the session's core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(pub u32);

/// How a unit service binds units and what it does when pilots fail them.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitPolicy {
    /// How many times its slots of units a pilot may have bound to it beyond what it runs,
    /// so its agent has the next units at hand (default 4, for short units; 0 binds a unit
    /// only to a free core, for long units over pilots that come and go). A pilot with a
    /// prefetch holds at least four cores' worth per unit of prefetch beyond its cores.
    pub prefetch: u32,
    /// How many runs a unit gets when the pilots running it are lost (their agent stopped
    /// heartbeating, crashed, or was killed): after that many, it fails with the reason of
    /// each (default 3). A unit sent back because its pilot reached its walltime or was
    /// canceled does not use up a run.
    pub max_attempts: u32,
    /// A pilot on which this many units in a row fail within `black_hole_window` of
    /// starting, while other pilots run units to `Done`, is a *black hole* (a broken node,
    /// a missing library): it gets no more units and is failed with that reason
    /// (default 5; 0 turns the check off).
    pub black_hole_failures: u32,
    /// What "fails at once" means for `black_hole_failures` (default 10 s).
    pub black_hole_window: Duration,
    /// How long a unit that reads input data may wait for a pilot nearer its data that
    /// has no room now, before it takes a pilot with room that must move more data
    /// (default 3 s; 0 never waits). See [`crate::placement`].
    pub locality_wait: Duration,
}

impl Default for UnitPolicy {
    /// The policy of the default settings (`pstar_model::Settings`, where every default
    /// is written once), with a black-hole window of 10 s.
    fn default() -> Self {
        let settings = pstar_model::Settings::default();
        Self {
            prefetch: settings.prefetch,
            max_attempts: settings.max_attempts,
            black_hole_failures: settings.black_hole_failures,
            black_hole_window: Duration::from_secs(10),
            locality_wait: settings.locality_wait,
        }
    }
}

/// How many cores' worth of units a pilot of `cores` may have bound to it with `prefetch`:
/// its cores times `prefetch + 1`, and with any prefetch at least its cores plus four per
/// unit of prefetch (a one-core pilot over Redis needs more than five units at hand to
/// never wait on a round trip).
pub fn prefetched(cores: u32, prefetch: u32) -> u32 {
    let scaled = cores.saturating_mul(prefetch.saturating_add(1));
    if prefetch == 0 {
        scaled
    } else {
        scaled.max(cores.saturating_add(prefetch.saturating_mul(4)))
    }
}

/// How many units of each state a service holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitCounts {
    by_state: [usize; UnitState::ALL.len()],
}

impl UnitCounts {
    fn index(state: UnitState) -> usize {
        UnitState::ALL.iter().position(|s| *s == state).unwrap_or(0)
    }

    /// Units now in `state`.
    pub fn get(&self, state: UnitState) -> usize {
        self.by_state[Self::index(state)]
    }

    /// Units in a final state.
    pub fn finished(&self) -> usize {
        UnitState::ALL
            .iter()
            .filter(|s| s.is_final())
            .map(|s| self.get(*s))
            .sum()
    }

    /// All units the service knows.
    pub fn total(&self) -> usize {
        self.by_state.iter().sum()
    }

    fn add(&mut self, state: UnitState, n: usize) {
        self.by_state[Self::index(state)] += n;
    }

    fn moved(&mut self, from: UnitState, to: UnitState) {
        let from = &mut self.by_state[Self::index(from)];
        *from = from.saturating_sub(1);
        self.by_state[Self::index(to)] += 1;
    }
}

/// What the core needs of a unit's description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitSpec {
    /// Which unit.
    pub id: UnitId,
    /// Cores it needs.
    pub cores: u32,
    /// GPUs it needs.
    pub gpus: u32,
    /// Early binding: the pilot it must run on.
    pub pilot: Option<PilotId>,
    /// How long it is expected to run.
    pub time_request: Option<Duration>,
    /// How many more times a failed run is tried.
    pub retries: u32,
}

impl UnitSpec {
    /// The spec of a unit with this id and description.
    pub fn of(id: UnitId, d: &pstar_model::ComputeUnitDescription) -> Self {
        Self {
            id,
            cores: d.cores,
            gpus: d.gpus,
            pilot: d.pilot,
            time_request: d.time_request,
            retries: d.retries,
        }
    }

    fn view(&self) -> UnitView {
        UnitView {
            id: self.id,
            cores: self.cores,
            gpus: self.gpus,
            pilot: self.pilot,
            time: self.time_request,
            data: false,
        }
    }
}

/// What the core needs of a pilot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PilotSpec {
    /// Which pilot.
    pub id: PilotId,
    /// Its cores.
    pub cores: u32,
    /// Its GPUs.
    pub gpus: u32,
    /// How long it may run once running.
    pub walltime: Duration,
}

impl PilotSpec {
    /// The spec of a pilot with this id and description.
    pub fn of(id: PilotId, d: &pstar_model::PilotComputeDescription) -> Self {
        Self {
            id,
            cores: d.cores,
            gpus: d.gpus,
            walltime: d.walltime,
        }
    }
}

/// What one unit waits for before it runs, and what it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitNeeds {
    /// Which unit.
    pub unit: UnitId,
    /// The data units it reads.
    pub inputs: Box<[String]>,
    /// The data units it makes.
    pub outputs: Box<[String]>,
    /// The units it runs after.
    pub after: Box<[UnitId]>,
    /// It runs even when a unit it runs after did not end `Done`.
    pub run_anyway: bool,
}

impl UnitNeeds {
    /// What `d` says unit `unit` needs, if anything.
    pub fn of(unit: UnitId, d: &pstar_model::ComputeUnitDescription) -> Option<Self> {
        if d.input_data.is_empty() && d.output_data.is_empty() && d.after.is_empty() {
            return None;
        }
        Some(Self {
            unit,
            inputs: d.input_data.clone().into_boxed_slice(),
            outputs: d.output_data.iter().map(|o| o.name.clone()).collect(),
            after: d.after.clone().into_boxed_slice(),
            run_anyway: d.on_dependency_failure == pstar_model::OnDependencyFailure::Run,
        })
    }
}

/// Everything the core reacts to.
#[derive(Debug, Clone)]
pub enum Input {
    /// The clock: timestamps the core's decisions from now on and tells it how much
    /// walltime its pilots have left.
    Tick(Timestamp),
    /// A unit service joins the session's core (its units are scheduled with `policy`).
    AddService {
        /// Its id, unique in the session.
        service: ServiceId,
        /// Its policy.
        policy: UnitPolicy,
    },
    /// New units of a service: they join its pool (or fail at once if no live pilot of
    /// the service can ever run them).
    Submit {
        /// Whose.
        service: ServiceId,
        /// What they need.
        units: Vec<UnitSpec>,
    },
    /// Units of a resumed session, loaded from the store: they start `New` and take their
    /// states from the replayed history, not from the pool.
    Restore {
        /// Whose.
        service: ServiceId,
        /// What they need.
        units: Vec<UnitSpec>,
    },
    /// Data units the application made, by name: units may read them.
    DeclareData(Vec<String>),
    /// What units wait for (data units they read, units they run after) and what they
    /// make: fed before the units' `Submit` or `Restore`.
    UnitNeeds(Vec<UnitNeeds>),
    /// A pilot store's labels.
    AddStore {
        /// Its name.
        name: String,
        /// Its labels.
        affinity: pstar_model::Affinity,
    },
    /// A pilot's labels (placement puts units next to their data with them).
    PilotAffinity {
        /// Which pilot.
        pilot: PilotId,
        /// Its labels.
        affinity: pstar_model::Affinity,
    },
    /// A pilot becomes available to a service (the same pilot may serve several).
    AddPilot {
        /// To whom.
        service: ServiceId,
        /// The pilot.
        pilot: PilotSpec,
        /// Its state now, and when it entered `Running` if it has.
        state: PilotState,
        /// When it started running, if it has.
        running_since: Option<Timestamp>,
    },
    /// A service stops binding units to these pilots: its units still queued there come
    /// back; what runs there finishes there. Other services keep using them.
    RemovePilots {
        /// Whose.
        service: ServiceId,
        /// Which.
        pilots: Vec<PilotId>,
    },
    /// Cancel these units wherever they are, with `reason`.
    Cancel {
        /// Which.
        units: Vec<UnitId>,
        /// Why: the detail they keep.
        reason: String,
    },
    /// Cancel every unit of a service that has not ended.
    CancelAll {
        /// Whose.
        service: ServiceId,
        /// Why.
        reason: String,
    },
    /// Cancel what is left of a service because no pilot is left to run it.
    CancelStranded {
        /// Whose.
        service: ServiceId,
    },
    /// Units of this service that end are forgotten (their handles were handed over).
    ForgetFinished {
        /// Whose.
        service: ServiceId,
    },
    /// A batch of events from the session's stream.
    Events(std::sync::Arc<[Event]>),
    /// The answer to the last round's [`Round::withdraw`], in the same order: the units
    /// actually taken back from each queue (empty if the store could not be asked).
    Withdrawn(Vec<(PilotId, Vec<UnitId>)>),
    /// A resumed core replays the history up to the `Resumed` marker carrying this token,
    /// taking no decisions until then.
    Replay {
        /// The token of the marker.
        token: u64,
    },
}

/// What to do after a round of inputs: the effects, in the order to apply them.
#[derive(Debug, Default)]
pub struct Round {
    /// Units to take back from pilots' queues; answer with [`Input::Withdrawn`].
    pub withdraw: Vec<Withdrawal>,
    /// Events to publish, in order: decisions about units (bind, back to the pool, fail,
    /// cancel).
    pub publish: Vec<Event>,
    /// Units to append to pilots' queues, after their `Scheduled` is published.
    pub enqueue: Vec<(PilotId, Vec<UnitId>)>,
    /// Control messages for agents.
    pub controls: Vec<(PilotId, Control)>,
    /// Pilots to cancel (asked from outside: `pstar cancel`).
    pub cancel_pilots: Vec<PilotId>,
    /// Pilots to fail, with the reason (black holes).
    pub fail_pilots: Vec<(PilotId, String)>,
    /// Unit transitions applied this round, in order, for handles and callbacks.
    pub applied: Vec<Applied>,
    /// Services whose counts changed this round.
    pub counts_changed: Vec<ServiceId>,
    /// The replay reached its marker this round: decisions start.
    pub caught_up: bool,
}

impl Round {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.withdraw.is_empty()
            && self.publish.is_empty()
            && self.enqueue.is_empty()
            && self.controls.is_empty()
            && self.cancel_pilots.is_empty()
            && self.fail_pilots.is_empty()
            && self.applied.is_empty()
            && !self.caught_up
    }
}

/// One transition of a unit, as the core applied it.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// Which unit.
    pub unit: UnitId,
    /// Its service.
    pub service: ServiceId,
    /// Its new state.
    pub state: UnitState,
    /// When.
    pub at: Timestamp,
    /// On `Scheduled`: the pilot it is bound to.
    pub pilot: Option<PilotId>,
    /// The process's exit code, if the report had one.
    pub exit_code: Option<i32>,
    /// The detail the unit now shows (a cancel's own reason wins over a plain
    /// "canceled").
    pub detail: Option<String>,
    /// The unit was forgotten by the core after this (its service hands units over).
    pub forgotten: bool,
    /// A return to `New` of a run that failed, to be tried again.
    pub failed_run: bool,
    /// A unit that had ended starts over (`--rerun`): `state` is `New`.
    pub rerun: bool,
}

/// Whether a unit event is a stale report: one (other than `Scheduled`) from a pilot the
/// unit is not bound to, or from a pilot that has ended (an agent presumed gone that
/// reports late). The one rule, for the manager and for `pstar status`.
pub fn is_stale(
    event: &UnitEvent,
    bound: Option<PilotId>,
    ended: impl Fn(PilotId) -> bool,
) -> bool {
    event.state != UnitState::Scheduled && event.pilot.is_some_and(|p| bound != Some(p) || ended(p))
}

/// What a withdraw was asked for, so its answer can be acted on.
#[derive(Debug, Clone)]
enum Purpose {
    /// Back to the pool, with this reason.
    Return(String),
    /// Cancel those withdrawn; ask the agent to cancel the rest of `units`.
    Cancel { units: Vec<UnitId>, reason: String },
    /// Give units queued or waiting on a busy pilot to one with idle cores: those
    /// withdrawn come back at once, the agent is asked to give back the rest.
    Steal { units: Vec<UnitId> },
    /// Settle an ended pilot: what it still held.
    Settle {
        left: Vec<UnitId>,
        state: PilotState,
        why: String,
    },
}

#[derive(Debug)]
struct UnitEntry {
    service: ServiceId,
    spec: UnitSpec,
    state: UnitState,
    /// The pilot it is (or was last) bound to.
    bound: Option<PilotId>,
    /// In its service's pool (entries of the pool whose unit is not are skipped).
    pooled: bool,
    /// When its current run started (for black holes).
    running_since: Option<Timestamp>,
    /// It has run (been `Running`) at least once.
    ran: bool,
    /// Asked back from its pilot for one with idle cores (not asked again meanwhile).
    stealing: bool,
    /// What only some units have (lost runs, a cancel, a detail): boxed, so that a unit
    /// waiting in a pool of millions costs a pointer for them.
    extra: Option<Box<UnitExtra>>,
}

/// The rarer facts about a unit.
#[derive(Debug, Default)]
struct UnitExtra {
    /// Why each earlier run was lost, for units that lost any.
    lost: Vec<String>,
    /// How each earlier run failed (for units with retries), and its exit code.
    failed_runs: Vec<(String, Option<i32>)>,
    /// A cancel asked for: the reason it keeps.
    cancel: Option<String>,
    /// The detail it shows now (why it came back, say).
    detail: Option<String>,
}

impl UnitEntry {
    fn extra(&mut self) -> &mut UnitExtra {
        self.extra.get_or_insert_with(Default::default)
    }

    fn lost(&self) -> &[String] {
        self.extra.as_ref().map_or(&[], |x| x.lost.as_slice())
    }

    fn cancel_reason(&self) -> Option<String> {
        self.extra.as_ref().and_then(|x| x.cancel.clone())
    }

    fn detail(&self) -> Option<&String> {
        self.extra.as_ref().and_then(|x| x.detail.as_ref())
    }

    fn set_detail(&mut self, detail: Option<String>) {
        match detail {
            Some(d) => self.extra().detail = Some(d),
            None => {
                if let Some(x) = &mut self.extra {
                    x.detail = None;
                }
            }
        }
    }

    fn ask_cancel(&mut self, reason: &str) {
        self.extra().cancel.get_or_insert_with(|| reason.to_owned());
    }
}

#[derive(Debug)]
struct PilotEntry {
    spec: PilotSpec,
    state: PilotState,
    /// Why it ended, once it has.
    detail: Option<String>,
    running_since: Option<Timestamp>,
    draining: bool,
    /// Its end was seen: what it held is (being) settled by the core.
    ended: bool,
    /// Taken out of rotation (a black hole).
    out: bool,
    /// The services it serves.
    services: Vec<ServiceId>,
    cores_bound: u32,
    gpus_bound: u32,
    /// Units bound to it that have not come back or ended.
    in_flight: HashSet<UnitId>,
    /// Units in a row that failed at once here.
    quick_failures: u32,
    /// Units it ran to `Done`.
    done: u64,
}

#[derive(Debug)]
struct ServiceEntry {
    policy: UnitPolicy,
    /// Cores of this service's units asked back from busy pilots and not back yet: room
    /// of idle pilots already promised to them.
    stealing_cores: u32,
    pool: VecDeque<UnitView>,
    counts: UnitCounts,
    forget_finished: bool,
}

/// The state machine of one session's manager. See the module documentation.
#[derive(Debug)]
pub struct Core {
    now: Timestamp,
    units: HashMap<UnitId, UnitEntry>,
    pilots: Vec<PilotEntry>,
    pilot_index: HashMap<PilotId, usize>,
    services: Vec<(ServiceId, ServiceEntry)>,
    /// While replaying: the token of the marker that ends it.
    replay: Option<u64>,
    /// Only folds the stream (`pstar status`): replays for ever, never decides.
    observer: bool,
    /// Cancels asked for in the replayed history, carried out once caught up.
    deferred_cancels: Vec<(CancelTarget, String)>,
    /// Withdraws asked for and not answered yet, in order: from which pilot, which units
    /// (all with `None`), and what for.
    asked: Vec<(PilotId, Option<Vec<UnitId>>, Purpose)>,
    /// Where each pilot's binding is in this round's `enqueue`.
    enqueue_index: HashMap<PilotId, usize>,
    /// Units back in the pool this round, to put at the head of their pools.
    returning: Vec<(ServiceId, UnitView)>,
    /// Where scheduling starts next round (services take turns).
    turn: usize,
    out: Round,
    counts_changed: HashSet<ServiceId>,
    /// Data units and the units that read and make them.
    data: data::DataBook,
}

fn unit_event(
    unit: UnitId,
    pilot: Option<PilotId>,
    state: UnitState,
    at: Timestamp,
    detail: impl Into<Option<String>>,
) -> Event {
    Event::Unit(UnitEvent {
        unit,
        pilot,
        state,
        at,
        exit_code: None,
        detail: detail.into(),
        lost_run: None,
        failed_run: false,
        result: None,
    })
}

impl Core {
    /// An empty core at time `now`.
    pub fn new(now: Timestamp) -> Self {
        Self {
            now,
            units: HashMap::new(),
            pilots: Vec::new(),
            pilot_index: HashMap::new(),
            services: Vec::new(),
            replay: None,
            observer: false,
            deferred_cancels: Vec::new(),
            asked: Vec::new(),
            enqueue_index: HashMap::new(),
            returning: Vec::new(),
            turn: 0,
            out: Round::default(),
            counts_changed: HashSet::new(),
            data: data::DataBook::default(),
        }
    }

    /// A core that only folds a session's stream, as a replaying one does, and never takes
    /// a decision: how `pstar status` and `pstar units` see a session, with the manager's
    /// own rules (the state table, stale reports).
    pub fn observer(now: Timestamp) -> Self {
        let mut core = Self::new(now);
        core.replay = Some(0);
        core.observer = true;
        core
    }

    /// Feeds one input. Effects accumulate until [`round`](Self::round).
    pub fn handle(&mut self, input: Input) {
        match input {
            Input::Tick(now) => self.now = self.now.max(now),
            Input::AddService { service, policy } => {
                if self.service(service).is_none() {
                    self.services.push((
                        service,
                        ServiceEntry {
                            policy,
                            stealing_cores: 0,
                            pool: VecDeque::new(),
                            counts: UnitCounts::default(),
                            forget_finished: false,
                        },
                    ));
                }
            }
            Input::Submit { service, units } => self.submit(service, units),
            Input::DeclareData(names) => self.data.declare(names),
            Input::UnitNeeds(units) => {
                for needs in units {
                    self.data.unit_needs(needs);
                }
            }
            Input::AddStore { name, affinity } => self.data.add_store(name, affinity),
            Input::PilotAffinity { pilot, affinity } => self.data.add_site(pilot, affinity),
            Input::Restore { service, units } => {
                let Some(s) = self.service_mut(service) else {
                    return;
                };
                s.counts.add(UnitState::New, units.len());
                self.units.reserve(units.len());
                for spec in units {
                    self.units.insert(spec.id, UnitEntry::new(service, spec));
                }
                self.counts_changed.insert(service);
            }
            Input::AddPilot {
                service,
                pilot,
                state,
                running_since,
            } => self.add_pilot(service, pilot, state, running_since),
            Input::RemovePilots { service, pilots } => {
                for id in pilots {
                    let Some(&i) = self.pilot_index.get(&id) else {
                        continue;
                    };
                    let p = &mut self.pilots[i];
                    if !p.services.contains(&service) {
                        continue;
                    }
                    p.services.retain(|s| *s != service);
                    // This service's units queued there come back; another service's stay.
                    let mine: Vec<UnitId> = p
                        .in_flight
                        .iter()
                        .filter(|u| self.units.get(u).is_some_and(|u| u.service == service))
                        .copied()
                        .collect();
                    if !mine.is_empty() && !p.ended && !p.state.is_final() {
                        self.ask_withdraw(
                            id,
                            Some(mine),
                            Purpose::Return("pilot removed from the service".into()),
                        );
                    }
                }
            }
            Input::Cancel { units, reason } => self.cancel(units, &reason),
            Input::CancelAll { service, reason } => {
                let ids = self.unfinished(Some(service));
                self.cancel(ids, &reason);
            }
            Input::CancelStranded { service } => self.cancel_stranded(service),
            Input::ForgetFinished { service } => {
                if let Some(s) = self.service_mut(service) {
                    s.forget_finished = true;
                }
            }
            Input::Events(batch) => {
                for e in batch.iter() {
                    self.apply_event(e);
                }
            }
            Input::Withdrawn(answers) => self.withdrawn(answers),
            Input::Replay { token } => self.replay = Some(token),
        }
    }

    /// Takes the decisions the inputs so far call for (binds units with room) and returns
    /// every effect accumulated since the last round.
    pub fn round(&mut self) -> Round {
        if !self.returning.is_empty() {
            let mut back = std::mem::take(&mut self.returning);
            back.sort_by_key(|(_, v)| std::cmp::Reverse(v.id));
            for (service, view) in back {
                if let Some(s) = self.service_mut(service) {
                    s.pool.push_front(view);
                }
            }
        }
        if self.replay.is_none() && self.asked.is_empty() {
            self.schedule();
            self.steal();
        }
        let mut out = std::mem::take(&mut self.out);
        self.enqueue_index.clear();
        out.withdraw = self
            .asked
            .iter()
            .map(|(pilot, units, _)| (*pilot, units.clone()))
            .collect();
        let mut changed: Vec<ServiceId> = self.counts_changed.drain().collect();
        changed.sort();
        out.counts_changed = changed;
        out
    }

    /// The counts of a service's units.
    pub fn counts(&self, service: ServiceId) -> UnitCounts {
        self.service(service)
            .map(|s| s.counts.clone())
            .unwrap_or_default()
    }

    /// The state of a unit the core still holds.
    pub fn unit_state(&self, unit: UnitId) -> Option<UnitState> {
        self.units.get(&unit).map(|u| u.state)
    }

    /// The pilot a unit is (or was last) bound to.
    pub fn unit_pilot(&self, unit: UnitId) -> Option<PilotId> {
        self.units.get(&unit).and_then(|u| u.bound)
    }

    /// A pilot's state as the core knows it.
    pub fn pilot_state(&self, pilot: PilotId) -> Option<PilotState> {
        self.pilot(pilot).map(|p| p.state)
    }

    /// Cores bound to a pilot now (units queued there or run there).
    pub fn cores_bound(&self, pilot: PilotId) -> u32 {
        self.pilot(pilot).map_or(0, |p| p.cores_bound)
    }

    /// The most cores a pilot may have bound to it: its cores with the largest prefetch
    /// of the services it serves (or has served).
    pub fn pilot_capacity(&self, pilot: PilotId) -> u32 {
        let Some(p) = self.pilot(pilot) else { return 0 };
        let prefetch = self
            .services
            .iter()
            .map(|(_, s)| s.policy.prefetch)
            .max()
            .unwrap_or(0);
        prefetched(p.spec.cores, prefetch)
    }

    /// Every pilot the core knows.
    pub fn pilot_ids(&self) -> impl Iterator<Item = PilotId> + '_ {
        self.pilots.iter().map(|p| p.spec.id)
    }

    /// Every unit the core still holds, with its service and state.
    pub fn unit_states(&self) -> impl Iterator<Item = (UnitId, ServiceId, UnitState)> + '_ {
        self.units.iter().map(|(id, u)| (*id, u.service, u.state))
    }

    /// Units in a service's pool (bound to no pilot, waiting).
    pub fn waiting(&self, service: ServiceId) -> usize {
        self.service(service).map_or(0, |s| {
            s.pool
                .iter()
                .filter(|v| self.units.get(&v.id).is_some_and(|u| u.pooled))
                .count()
        })
    }

    /// Whether the core replays history (takes no decisions yet).
    pub fn replaying(&self) -> bool {
        self.replay.is_some()
    }

    /// Checks the core's invariants; returns what is broken. For tests and the simulator.
    pub fn check_invariants(&self) -> Vec<String> {
        let mut broken = Vec::new();
        let mut counts: HashMap<ServiceId, UnitCounts> = HashMap::new();
        for (id, u) in &self.units {
            counts.entry(u.service).or_default().add(u.state, 1);
            if u.pooled && !u.state.is_held() {
                broken.push(format!("{id} is in the pool but {}", u.state));
            }
        }
        for (sid, s) in &self.services {
            let held = counts.remove(sid).unwrap_or_default();
            if !s.forget_finished && held != s.counts {
                broken.push(format!(
                    "service {} counts {:?} but holds {:?}",
                    sid.0, s.counts, held
                ));
            }
        }
        for p in &self.pilots {
            let capacity = self.pilot_capacity(p.spec.id);
            if p.cores_bound > capacity {
                broken.push(format!(
                    "{} has {} cores bound, more than its {capacity}",
                    p.spec.id, p.cores_bound
                ));
            }
            let sum: u32 = p
                .in_flight
                .iter()
                .filter_map(|u| self.units.get(u))
                .map(|u| u.spec.cores)
                .sum();
            if sum != p.cores_bound {
                broken.push(format!(
                    "{} counts {} cores bound, its units need {sum}",
                    p.spec.id, p.cores_bound
                ));
            }
            for u in &p.in_flight {
                if let Some(unit) = self.units.get(u)
                    && unit.state.is_final()
                {
                    broken.push(format!("{u} ended but still holds room on {}", p.spec.id));
                }
            }
        }
        broken
    }

    fn service(&self, id: ServiceId) -> Option<&ServiceEntry> {
        self.services.iter().find(|(s, _)| *s == id).map(|(_, s)| s)
    }

    fn service_mut(&mut self, id: ServiceId) -> Option<&mut ServiceEntry> {
        self.services
            .iter_mut()
            .find(|(s, _)| *s == id)
            .map(|(_, s)| s)
    }

    fn pilot(&self, id: PilotId) -> Option<&PilotEntry> {
        self.pilot_index.get(&id).map(|&i| &self.pilots[i])
    }

    fn pilot_mut(&mut self, id: PilotId) -> Option<&mut PilotEntry> {
        self.pilot_index.get(&id).map(|&i| &mut self.pilots[i])
    }

    fn policy_of(&self, unit: &UnitEntry) -> UnitPolicy {
        self.service(unit.service)
            .map(|s| s.policy.clone())
            .unwrap_or_default()
    }

    fn publish(&mut self, e: Event) {
        self.out.publish.push(e);
    }

    fn decide(&mut self, unit: UnitId, pilot: Option<PilotId>, state: UnitState, detail: String) {
        let at = self.now;
        self.publish(unit_event(unit, pilot, state, at, detail));
    }

    fn unfinished(&self, service: Option<ServiceId>) -> Vec<UnitId> {
        let mut ids: Vec<UnitId> = self
            .units
            .iter()
            .filter(|(_, u)| !u.state.is_final() && service.is_none_or(|s| s == u.service))
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    fn add_pilot(
        &mut self,
        service: ServiceId,
        spec: PilotSpec,
        state: PilotState,
        running_since: Option<Timestamp>,
    ) {
        if self.service(service).is_none() {
            return;
        }
        let i = match self.pilot_index.get(&spec.id) {
            Some(&i) => i,
            None => {
                self.pilots.push(PilotEntry {
                    spec,
                    // A replaying core takes the pilot's states from the history.
                    state: if self.replay.is_some() {
                        PilotState::New
                    } else {
                        state
                    },
                    detail: None,
                    running_since: if self.replay.is_some() {
                        None
                    } else {
                        running_since
                    },
                    draining: false,
                    ended: false,
                    out: false,
                    services: Vec::new(),
                    cores_bound: 0,
                    gpus_bound: 0,
                    in_flight: HashSet::new(),
                    quick_failures: 0,
                    done: 0,
                });
                self.pilot_index.insert(spec.id, self.pilots.len() - 1);
                self.pilots.len() - 1
            }
        };
        let p = &mut self.pilots[i];
        if !p.services.contains(&service) {
            p.services.push(service);
        }
        if p.state.is_final() && !p.ended && self.replay.is_none() {
            // Attached after its end: nothing is bound to it, nothing to settle.
            p.ended = true;
        }
    }

    fn submit(&mut self, service: ServiceId, units: Vec<UnitSpec>) {
        let views = self.views(service);
        let mut why = scheduler::NeverFits::new(&views);
        let Some(s) = self.service_mut(service) else {
            return;
        };
        s.counts.add(UnitState::New, units.len());
        let mut failed = Vec::new();
        let mut pooled = Vec::with_capacity(units.len());
        for spec in units {
            let view = spec.view();
            match why.check(&view) {
                Some(reason) => failed.push((spec, reason)),
                None => pooled.push(spec),
            }
        }
        // Every unit is entered first, so that one may wait for another of the same batch.
        self.units.reserve(pooled.len() + failed.len());
        for spec in pooled.iter().chain(failed.iter().map(|(spec, _)| spec)) {
            self.units.insert(spec.id, UnitEntry::new(service, *spec));
        }
        // Units that read data or run after others wait outside the pool until what they
        // need is there.
        if !self.data.is_empty() {
            let now = self.now;
            let mut ready = Vec::with_capacity(pooled.len());
            for spec in pooled {
                if self.ready_or_held(spec.id) {
                    self.data.pooled(spec.id, now);
                    ready.push(spec);
                }
            }
            pooled = ready;
        }
        let views: Vec<UnitView> = pooled.iter().map(|spec| self.view_of(spec)).collect();
        let s = self.service_mut(service).expect("checked above");
        s.pool.extend(views);
        for spec in pooled {
            if let Some(u) = self.units.get_mut(&spec.id) {
                u.pooled = true;
            }
        }
        for (spec, reason) in failed {
            self.decide(spec.id, None, UnitState::Failed, reason);
        }
        self.counts_changed.insert(service);
    }

    /// What `service`'s scheduler sees of the pilots it may use.
    fn views(&self, service: ServiceId) -> Vec<PilotView> {
        let prefetch = self.service(service).map_or(0, |s| s.policy.prefetch);
        let threshold = self
            .service(service)
            .map_or(0, |s| s.policy.black_hole_failures);
        let suspect = |p: &PilotEntry| threshold > 0 && p.quick_failures >= threshold;
        let mine = |p: &&PilotEntry| p.services.contains(&service);
        let all_suspect = self
            .pilots
            .iter()
            .filter(mine)
            .filter(|p| p.alive())
            .all(suspect);
        self.pilots
            .iter()
            .filter(mine)
            .map(|p| {
                let alive = p.alive();
                // Suspects get no units while a pilot that is not one can take them; if
                // every pilot is a suspect, the units are what fails, not the pilots.
                let held_back = suspect(p) && !all_suspect;
                let remaining = p
                    .running_since
                    .map(|since| p.spec.walltime.saturating_sub(self.now.since(since)));
                PilotView {
                    id: p.spec.id,
                    accepting: alive && !p.draining && !held_back && p.state == PilotState::Running,
                    alive,
                    cores: p.spec.cores,
                    gpus: p.spec.gpus,
                    free_cores: prefetched(p.spec.cores, prefetch).saturating_sub(p.cores_bound),
                    idle_cores: p.spec.cores.saturating_sub(p.cores_bound),
                    free_gpus: p
                        .spec
                        .gpus
                        .saturating_mul(prefetch.saturating_add(1))
                        .saturating_sub(p.gpus_bound),
                    walltime: p.spec.walltime,
                    remaining,
                }
            })
            .collect()
    }

    fn schedule(&mut self) {
        let n = self.services.len();
        for k in 0..n {
            let i = (self.turn + k) % n;
            let service = self.services[i].0;
            if self.services[i].1.pool.is_empty() {
                continue;
            }
            let mut views = self.views(service);
            let mut pool = std::mem::take(&mut self.services[i].1.pool);
            let units = &self.units;
            let mut placed = data::Placed {
                book: &self.data,
                now: self.now,
                wait: self.services[i].1.policy.locality_wait,
            };
            let decisions = scheduler::schedule_live(
                &mut pool,
                &mut views,
                |id| units.get(&id).is_some_and(|u| u.pooled),
                &mut placed,
            );
            self.services[i].1.pool = pool;
            for d in decisions {
                match d {
                    Decision::Bind { unit, pilot } => self.bind(unit, pilot),
                    Decision::Fail { unit, reason } => {
                        if let Some(u) = self.units.get_mut(&unit)
                            && u.pooled
                        {
                            u.pooled = false;
                            self.decide(unit, None, UnitState::Failed, reason);
                        }
                    }
                }
            }
        }
        if n > 0 {
            self.turn = (self.turn + 1) % n;
        }
    }

    fn bind(&mut self, unit: UnitId, pilot: PilotId) {
        let Some(u) = self.units.get_mut(&unit) else {
            return;
        };
        if !u.pooled {
            return;
        }
        u.pooled = false;
        // Bound from now on, not only once its `Scheduled` comes back on the stream: a
        // cancel meanwhile must find it on its pilot.
        u.bound = Some(pilot);
        let (cores, gpus) = (u.spec.cores, u.spec.gpus);
        let Some(p) = self.pilot_mut(pilot) else {
            return;
        };
        p.in_flight.insert(unit);
        p.cores_bound += cores;
        p.gpus_bound += gpus;
        self.data.bound(unit, pilot);
        let at = self.now;
        self.publish(unit_event(
            unit,
            Some(pilot),
            UnitState::Scheduled,
            at,
            None,
        ));
        // One binding per pilot per round, found through an index (not a pass over the
        // round's bindings: with thousands of pilots that would cost per unit).
        match self.enqueue_index.get(&pilot) {
            Some(&i) => self.out.enqueue[i].1.push(unit),
            None => {
                self.enqueue_index.insert(pilot, self.out.enqueue.len());
                self.out.enqueue.push((pilot, vec![unit]));
            }
        }
    }

    /// What the scheduler sees of a unit.
    fn view_of(&self, spec: &UnitSpec) -> UnitView {
        UnitView {
            data: self.data.reads(spec.id),
            ..spec.view()
        }
    }

    fn ask_withdraw(&mut self, pilot: PilotId, units: Option<Vec<UnitId>>, purpose: Purpose) {
        self.asked.push((pilot, units, purpose));
    }
}

impl UnitEntry {
    fn new(service: ServiceId, spec: UnitSpec) -> Self {
        Self {
            service,
            spec,
            state: UnitState::New,
            bound: None,
            pooled: false,
            running_since: None,
            ran: false,
            stealing: false,
            extra: None,
        }
    }
}

impl PilotEntry {
    fn alive(&self) -> bool {
        !self.out && !self.ended && !self.state.is_final()
    }
}
