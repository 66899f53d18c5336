//! `ComputeUnitService`: accepts compute units and drives them to a final state.
//!
//! The service is a handle on one manager task, which owns everything about the units:
//! the pool (units bound to no pilot yet), what each pilot has bound to it, and every unit
//! record. The task follows the session's event stream and applies each transition
//! through the state table; its own decisions (bind, withdraw, fail, cancel) are
//! published on the same stream and applied when they come back, so there is one path by
//! which a unit's state ever changes, whoever decided it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use pstar_coordination::{CancelTarget, Claimed, Control, Coordination, Event, UnitEvent};
use pstar_model::{
    ComputeUnitDescription, PilotId, PilotState, State, Timestamp, UnitId, UnitState,
};

use crate::error::{Error, Result};
use crate::pilot::{PilotCompute, PilotComputeService};
use crate::scheduler::{self, Decision, PilotView, UnitView};
use crate::session::Session;
use crate::unit::{ComputeUnit, UnitShared};

/// How a [`ComputeUnitService`] binds units and what it does when pilots fail them.
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
}

impl Default for UnitPolicy {
    fn default() -> Self {
        Self {
            prefetch: 4,
            max_attempts: 3,
            black_hole_failures: 5,
            black_hole_window: Duration::from_secs(10),
        }
    }
}

/// How many cores' worth of units a pilot of `cores` may have bound to it with `prefetch`:
/// its cores times `prefetch + 1`, and with any prefetch at least its cores plus four per
/// unit of prefetch (a one-core pilot over Redis needs more than five units at hand to
/// never wait on a round trip).
fn prefetched(cores: u32, prefetch: u32) -> u32 {
    let scaled = cores.saturating_mul(prefetch.saturating_add(1));
    if prefetch == 0 {
        scaled
    } else {
        scaled.max(cores.saturating_add(prefetch.saturating_mul(4)))
    }
}

/// How often, at most, a service's [`UnitCounts`] are updated while units run.
const COUNTS_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// How many units of each state a service holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitCounts {
    by_state: [usize; 7],
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

    fn moved(&mut self, from: UnitState, to: UnitState) {
        self.by_state[Self::index(from)] -= 1;
        self.by_state[Self::index(to)] += 1;
    }
}

pub(crate) enum Command {
    Submit(Vec<Arc<UnitShared>>),
    /// Units of a resumed session, loaded from the store: their states come from the
    /// replayed history, not from the pool.
    Restore(Vec<Arc<UnitShared>>),
    Cancel(Vec<UnitId>),
    CancelAll(String),
    AddPilot(PilotCompute),
    RemovePilots(Vec<PilotId>, tokio::sync::oneshot::Sender<()>),
    /// Cancel what is left because no pilot is left to run it.
    CancelStranded,
}

/// Runs compute units on the pilots of the pilot services added to it (the seeds'
/// `ComputeUnitService`).
///
/// Units may be submitted at any time, before any pilot exists too: they wait in the pool
/// until a pilot has room. Pilot services can be added and removed while units run.
///
/// ```
/// # #[tokio::main] async fn main() -> pstar::Result<()> {
/// use pstar::{ComputeUnitDescription, ComputeUnitService, PilotComputeDescription,
///             PilotComputeService, Session, UnitState};
///
/// let dir = tempfile::tempdir().unwrap();
/// let session = Session::builder().sandbox_root(dir.path()).build().await?;
/// let cus = ComputeUnitService::new(&session);
/// let units = cus
///     .submit_batch((0..4).map(|i| ComputeUnitDescription::new("/bin/echo").with_arguments([i.to_string()])))
///     .await?;
/// // No pilot yet: the units wait in the pool.
/// let pcs = PilotComputeService::new(&session);
/// pcs.create_pilot(PilotComputeDescription { cores: 2, ..Default::default() }).await?;
/// cus.add_pilot_service(&pcs);
/// cus.wait().await;
/// assert!(units.iter().all(|u| u.state() == UnitState::Done));
/// assert_eq!(cus.counts().get(UnitState::Done), 4);
/// assert_eq!(cus.watch_counts().borrow().finished(), 4);
/// assert_eq!(cus.units().len(), 4);
///
/// // Cancel what is left, with a reason each unit keeps.
/// let sleeper = cus.submit(ComputeUnitDescription::new("/bin/sleep").with_arguments(["60"])).await?;
/// cus.cancel_because("enough");
/// cus.wait().await;
/// assert_eq!(sleeper.state(), UnitState::Canceled);
/// assert_eq!(sleeper.detail().as_deref(), Some("enough"));
///
/// // Pilots of a removed service get no more units; `cancel()` is `cancel_because("canceled")`.
/// cus.remove_pilot_service(&pcs).await;
/// let waiting = cus.submit(ComputeUnitDescription::new("/bin/true")).await?;
/// cus.cancel();
/// cus.wait().await;
/// assert_eq!((waiting.state(), waiting.pilot()), (UnitState::Canceled, None));
/// pcs.cancel().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ComputeUnitService {
    inner: Arc<CusInner>,
}

struct CusInner {
    session: Session,
    commands: mpsc::UnboundedSender<Command>,
    counts: watch::Receiver<UnitCounts>,
    submitted: AtomicUsize,
    units: Mutex<Vec<Arc<UnitShared>>>,
    /// Units that end are handed over ([`ComputeUnitService::hand_over_finished`]), so
    /// the service keeps no list of them: only of those that have not ended, in `live`.
    handing_over: std::sync::atomic::AtomicBool,
    live: LiveUnits,
    hand_over: HandOver,
    services: Mutex<Vec<PilotComputeService>>,
}

impl ComputeUnitService {
    /// A service with no pilots, binding to each pilot up to its slots plus four
    /// slot-worths of units waiting there (what its agent keeps at hand, so that short
    /// units flow without gaps). For long units over pilots that come and go, a smaller
    /// prefetch ([`with_prefetch`](Self::with_prefetch)) binds later.
    pub fn new(session: &Session) -> Self {
        Self::with_policy(session, UnitPolicy::default())
    }

    /// A service whose pilots may have `prefetch` times their slots of units bound to them
    /// beyond what they run (so an agent has its next units at hand).
    pub fn with_prefetch(session: &Session, prefetch: u32) -> Self {
        Self::with_policy(
            session,
            UnitPolicy {
                prefetch,
                ..Default::default()
            },
        )
    }

    /// A service with its own [`UnitPolicy`].
    pub fn with_policy(session: &Session, policy: UnitPolicy) -> Self {
        Self::start(session, policy, None)
    }

    /// A service that first replays the session's history up to the `Resumed` marker with
    /// `token`, and says so on `caught_up`.
    pub(crate) fn replaying(
        session: &Session,
        policy: UnitPolicy,
        token: u64,
        caught_up: tokio::sync::oneshot::Sender<()>,
    ) -> Self {
        Self::start(session, policy, Some((token, caught_up)))
    }

    fn start(
        session: &Session,
        policy: UnitPolicy,
        replay: Option<(u64, tokio::sync::oneshot::Sender<()>)>,
    ) -> Self {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (counts_tx, counts) = watch::channel(UnitCounts::default());
        let live = LiveUnits::default();
        let hand_over = HandOver::default();
        let manager = Manager {
            coordination: session.coordination().clone(),
            commands: commands.downgrade(),
            units: HashMap::new(),
            pool: VecDeque::new(),
            pilots: Vec::new(),
            cancel_requested: HashMap::new(),
            policy,
            attempts: HashMap::new(),
            black_holes: Vec::new(),
            replay,
            deferred_cancels: Vec::new(),
            counts: UnitCounts::default(),
            counts_tx,
            counts_sent: tokio::time::Instant::now(),
            outbox: Vec::new(),
            bound: HashMap::new(),
            hand_over: hand_over.clone(),
            live: live.clone(),
        };
        tokio::spawn(manager.run(command_rx, session.listen()));
        Self {
            inner: Arc::new(CusInner {
                session: session.clone(),
                commands,
                counts,
                submitted: AtomicUsize::new(0),
                units: Mutex::new(Vec::new()),
                handing_over: std::sync::atomic::AtomicBool::new(false),
                live,
                hand_over,
                services: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Makes the pilots of `pcs`, present and future, available to this service.
    pub fn add_pilot_service(&self, pcs: &PilotComputeService) {
        if let Ok(mut services) = self.inner.services.lock() {
            if services.iter().any(|s| s.same_as(pcs)) {
                return;
            }
            services.push(pcs.clone());
        }
        for pilot in pcs.pilots() {
            let _ = self.inner.commands.send(Command::AddPilot(pilot));
        }
        let commands = self.inner.commands.downgrade();
        pcs.on_new_pilot(Box::new(move |pilot| match commands.upgrade() {
            Some(tx) => tx.send(Command::AddPilot(pilot.clone())).is_ok(),
            None => false,
        }));
    }

    /// Stops binding units to the pilots of `pcs`; returns once no more will be. Units
    /// waiting in their queues go back to the pool; units they already run finish there.
    /// The pilots themselves keep running (cancel them through `pcs`).
    pub async fn remove_pilot_service(&self, pcs: &PilotComputeService) {
        if let Ok(mut services) = self.inner.services.lock() {
            services.retain(|s| !s.same_as(pcs));
        }
        let ids = pcs.pilots().iter().map(PilotCompute::id).collect();
        let (done, removed) = tokio::sync::oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::RemovePilots(ids, done))
            .is_ok()
        {
            let _ = removed.await;
        }
    }

    /// Submits one unit.
    pub async fn submit(&self, description: ComputeUnitDescription) -> Result<ComputeUnit> {
        let mut units = self.submit_batch([description]).await?;
        units.pop().ok_or(Error::ServiceClosed)
    }

    /// Submits units as one batch: one round trip to the coordination store, however many.
    /// If any description is invalid, none is submitted.
    pub async fn submit_batch(
        &self,
        descriptions: impl IntoIterator<Item = ComputeUnitDescription>,
    ) -> Result<Vec<ComputeUnit>> {
        let descriptions: Vec<Arc<ComputeUnitDescription>> =
            descriptions.into_iter().map(Arc::new).collect();
        for (i, d) in descriptions.iter().enumerate() {
            d.validate().map_err(|source| Error::InvalidDescription {
                what: format!("unit description #{i} (`{}`)", d.display_name()),
                source,
            })?;
        }
        if descriptions.is_empty() {
            return Ok(Vec::new());
        }
        let coordination = self.inner.session.coordination();
        let first = coordination
            .reserve_unit_ids(descriptions.len() as u64)
            .await?
            .get();
        let now = Timestamp::now();
        let shared: Vec<Arc<UnitShared>> = descriptions
            .into_iter()
            .enumerate()
            .map(|(i, description)| {
                UnitShared::new(UnitId::new(first + i as u64), description, now)
            })
            .collect();
        let stored: Vec<Claimed> = shared
            .iter()
            .map(|u| (u.id, u.description.clone()))
            .collect();
        coordination.put_units(&stored).await?;
        drop(stored);

        self.inner
            .submitted
            .fetch_add(shared.len(), Ordering::SeqCst);
        if self.inner.handing_over.load(Ordering::SeqCst) {
            if let Ok(mut live) = self.inner.live.lock() {
                live.extend(shared.iter().map(|u| (u.id, u.clone())));
            }
        } else if let Ok(mut all) = self.inner.units.lock() {
            all.extend(shared.iter().cloned());
        }
        let handles = shared
            .iter()
            .map(|s| ComputeUnit {
                shared: s.clone(),
                commands: self.inner.commands.clone(),
            })
            .collect();
        self.inner
            .commands
            .send(Command::Submit(shared))
            .map_err(|_| Error::ServiceClosed)?;
        Ok(handles)
    }

    /// Takes over units already stored in the session (a resumed manager's).
    pub(crate) fn restore(&self, units: Vec<pstar_coordination::Claimed>) {
        let now = Timestamp::now();
        let shared: Vec<Arc<UnitShared>> = units
            .into_iter()
            .map(|(id, description)| UnitShared::new(id, description, now))
            .collect();
        self.inner
            .submitted
            .fetch_add(shared.len(), Ordering::SeqCst);
        if let Ok(mut all) = self.inner.units.lock() {
            all.extend(shared.iter().cloned());
        }
        let _ = self.inner.commands.send(Command::Restore(shared));
    }

    /// Hands over every unit that reaches a final state from now on, once, on the
    /// returned receiver, and forgets it: the service then keeps only the units that have
    /// not ended, so its memory grows with the units in flight rather than with every unit
    /// ever submitted (for workloads of millions of units). [`units`](Self::units) no
    /// lists units submitted after this call only until they end. Counts and
    /// [`wait`](Self::wait) are unchanged.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> pstar::Result<()> {
    /// # use pstar::*;
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let session = Session::builder().sandbox_root(dir.path()).build().await?;
    /// # let pcs = PilotComputeService::new(&session);
    /// # pcs.create_pilot(PilotComputeDescription::default()).await?;
    /// let cus = ComputeUnitService::new(&session);
    /// cus.add_pilot_service(&pcs);
    /// let mut ended = cus.hand_over_finished();
    /// cus.submit_batch((0..3).map(|_| ComputeUnitDescription::new("/bin/true"))).await?;
    /// for _ in 0..3 {
    ///     let unit = ended.recv().await.expect("a unit");
    ///     assert_eq!(unit.state(), UnitState::Done);
    /// }
    /// assert!(cus.units().is_empty());
    /// cus.wait().await; // counts are published every 10 ms at most
    /// assert_eq!(cus.counts().get(UnitState::Done), 3);
    /// # pcs.cancel().await;
    /// # Ok(()) }
    /// ```
    pub fn hand_over_finished(&self) -> mpsc::UnboundedReceiver<ComputeUnit> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner.handing_over.store(true, Ordering::SeqCst);
        // Set here, not through a command: a unit that ends after this call is handed
        // over even if the manager is in the middle of a round.
        if let Ok(mut slot) = self.inner.hand_over.lock() {
            *slot = Some(tx);
        }
        rx
    }

    /// Every unit submitted to this service, in submission order (but those submitted
    /// after [`hand_over_finished`](Self::hand_over_finished) that have ended).
    pub fn units(&self) -> Vec<ComputeUnit> {
        let mut all = self
            .inner
            .units
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default();
        if let Ok(live) = self.inner.live.lock() {
            all.extend(live.values().cloned());
        }
        all.into_iter()
            .map(|shared| ComputeUnit {
                shared,
                commands: self.inner.commands.clone(),
            })
            .collect()
    }

    /// How many units were submitted to this service (or restored into it).
    pub fn units_submitted(&self) -> usize {
        self.inner.submitted.load(Ordering::SeqCst)
    }

    /// How many units are in each state: updated at most every 10 ms while units run, and
    /// at once when all have ended.
    pub fn counts(&self) -> UnitCounts {
        self.inner.counts.borrow().clone()
    }

    /// A receiver that changes whenever the counts do (for progress displays).
    pub fn watch_counts(&self) -> watch::Receiver<UnitCounts> {
        self.inner.counts.clone()
    }

    /// Waits until every unit submitted so far has reached a final state.
    pub async fn wait(&self) {
        let mut rx = self.inner.counts.clone();
        let submitted = &self.inner.submitted;
        let _ = rx
            .wait_for(|c| c.finished() >= submitted.load(Ordering::SeqCst))
            .await;
    }

    /// Cancels every unit that has not reached a final state.
    pub fn cancel(&self) {
        self.cancel_because("canceled");
    }

    /// Cancels every unit that has not reached a final state, giving `reason` as their
    /// [`detail`](ComputeUnit::detail).
    pub fn cancel_because(&self, reason: impl Into<String>) {
        let _ = self.inner.commands.send(Command::CancelAll(reason.into()));
    }

    /// Cancels every unit that has not reached a final state because no pilot is left to
    /// run it (every pilot has ended). Each says why: it never ran, or its run was cut
    /// short (its pilot reached its walltime, say) and no pilot was left to run it again.
    pub fn cancel_stranded(&self) {
        let _ = self.inner.commands.send(Command::CancelStranded);
    }
}

/// What the manager task knows of one pilot.
struct PilotSlot {
    pilot: PilotCompute,
    draining: bool,
    removed: bool,
    ended: bool,
    cores_bound: u32,
    gpus_bound: u32,
    /// Units bound to this pilot that have not come back or ended.
    in_flight: HashSet<UnitId>,
    /// Units in a row that failed at once here (see [`UnitPolicy::black_hole_failures`]).
    quick_failures: u32,
    /// Units this pilot ran to `Done`.
    done: u64,
}

/// The manager task: the only owner of the pool and the unit records' transitions.
struct Manager {
    coordination: Arc<dyn Coordination>,
    commands: mpsc::WeakUnboundedSender<Command>,
    units: HashMap<UnitId, Arc<UnitShared>>,
    pool: VecDeque<UnitView>,
    pilots: Vec<PilotSlot>,
    /// Units to cancel as soon as they are back from their pilot.
    cancel_requested: HashMap<UnitId, String>,
    policy: UnitPolicy,
    /// Why each earlier run of a unit was lost, for units that lost any.
    attempts: HashMap<UnitId, Vec<String>>,
    /// Pilots found to be black holes in this round, to take out of rotation.
    black_holes: Vec<(PilotId, String)>,
    /// While a resumed manager replays the session's history: the token of its own
    /// `Resumed` marker, and whom to tell once it has caught up. No decisions are taken
    /// while replaying: the history already holds those of the manager before.
    replay: Option<(u64, tokio::sync::oneshot::Sender<()>)>,
    /// Cancels asked for in the replayed history, carried out once caught up (those of
    /// units that ended meanwhile change nothing).
    deferred_cancels: Vec<(CancelTarget, String)>,
    counts: UnitCounts,
    counts_tx: watch::Sender<UnitCounts>,
    counts_sent: tokio::time::Instant,
    /// Decisions to publish at the end of this round.
    outbox: Vec<Event>,
    /// Units bound this round, per pilot, to enqueue after their `Scheduled` is published.
    bound: HashMap<PilotId, Vec<UnitId>>,
    /// Where units that end go, once someone asked for them (and then they are forgotten).
    hand_over: HandOver,
    /// The units handed over forget, while they have not ended (shared with the handles).
    live: LiveUnits,
}

/// Units submitted while ended ones are handed over, until they end.
type LiveUnits = Arc<Mutex<std::collections::BTreeMap<UnitId, Arc<UnitShared>>>>;

/// Where units that end are handed over, once asked for (shared by the service and its
/// manager task).
type HandOver = Arc<Mutex<Option<mpsc::UnboundedSender<ComputeUnit>>>>;

fn event(
    unit: UnitId,
    pilot: Option<PilotId>,
    state: UnitState,
    detail: impl Into<Option<String>>,
) -> Event {
    Event::Unit(UnitEvent {
        unit,
        pilot,
        state,
        at: Timestamp::now(),
        exit_code: None,
        detail: detail.into(),
        lost_run: false,
    })
}

impl Manager {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut events: mpsc::UnboundedReceiver<Arc<[Event]>>,
    ) {
        loop {
            let counts_due = self.counts_sent + COUNTS_EVERY;
            tokio::select! {
                // Commands first: a resumed service gets its pilots and units before the
                // history that speaks of them.
                biased;
                command = commands.recv() => match command {
                    Some(c) => self.command(c).await,
                    None => break,
                },
                batch = events.recv() => match batch {
                    Some(batch) => {
                        self.apply_events(&batch).await;
                        // Whatever else has arrived joins this round: one scheduling
                        // pass and one publication for all of it.
                        while let Ok(more) = events.try_recv() {
                            self.apply_events(&more).await;
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(counts_due), if self.counts != *self.counts_tx.borrow() => {}
            }
            self.schedule();
            self.flush().await;
        }
    }

    fn slot(&mut self, pilot: PilotId) -> Option<&mut PilotSlot> {
        self.pilots.iter_mut().find(|s| s.pilot.id() == pilot)
    }

    fn views(&self) -> Vec<PilotView> {
        let live = |s: &PilotSlot| !s.removed && !s.ended && !s.pilot.state().is_final();
        // Suspects get no units while a pilot that is not one can take them; if every
        // pilot is a suspect, the units are what fails, not the pilots.
        let all_suspect = self
            .pilots
            .iter()
            .filter(|s| live(s))
            .all(|s| self.is_suspect(s));
        self.pilots
            .iter()
            .map(|s| {
                let d = s.pilot.description();
                let state = s.pilot.state();
                let alive = live(s);
                let held_back = self.is_suspect(s) && !all_suspect;
                PilotView {
                    id: s.pilot.id(),
                    accepting: alive && !s.draining && !held_back && state == PilotState::Running,
                    alive,
                    cores: d.cores,
                    gpus: d.gpus,
                    free_cores: prefetched(d.cores, self.policy.prefetch)
                        .saturating_sub(s.cores_bound),
                    free_gpus: d
                        .gpus
                        .saturating_mul(self.policy.prefetch.saturating_add(1))
                        .saturating_sub(s.gpus_bound),
                }
            })
            .collect()
    }

    fn view(unit: &UnitShared) -> UnitView {
        let d = &unit.description;
        UnitView {
            id: unit.id,
            cores: d.cores,
            gpus: d.gpus,
            pilot: d.pilot,
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Submit(units) => {
                let views = self.views();
                self.units.reserve(units.len());
                for unit in units {
                    let view = Self::view(&unit);
                    self.counts.by_state[UnitCounts::index(UnitState::New)] += 1;
                    self.units.insert(unit.id, unit);
                    match scheduler::never_fits(&view, &views) {
                        Some(reason) => {
                            self.outbox
                                .push(event(view.id, None, UnitState::Failed, reason))
                        }
                        None => self.pool.push_back(view),
                    }
                }
            }
            Command::Restore(units) => {
                self.units.reserve(units.len());
                for unit in units {
                    self.counts.by_state[UnitCounts::index(UnitState::New)] += 1;
                    self.units.insert(unit.id, unit);
                }
            }
            Command::AddPilot(pilot) => {
                if self.slot(pilot.id()).is_none() {
                    self.pilots.push(PilotSlot {
                        pilot,
                        draining: false,
                        removed: false,
                        ended: false,
                        cores_bound: 0,
                        gpus_bound: 0,
                        in_flight: HashSet::new(),
                        quick_failures: 0,
                        done: 0,
                    });
                }
            }
            Command::RemovePilots(ids, done) => {
                for id in ids {
                    if let Some(slot) = self.slot(id) {
                        slot.removed = true;
                        self.withdraw(id, "pilot removed from the service").await;
                    }
                }
                let _ = done.send(());
            }
            Command::CancelStranded => {
                let mut why: HashMap<String, Vec<UnitId>> = HashMap::new();
                for u in self.units.values() {
                    let Ok(r) = u.record.lock() else { continue };
                    if r.life.state().is_final() {
                        continue;
                    }
                    let ran = r
                        .life
                        .history()
                        .iter()
                        .any(|(s, _)| *s == UnitState::Running);
                    let reason = match (&r.detail, ran) {
                        (Some(cut), true) => format!(
                            "no pilot was left to run it again after its run was cut short: {cut}"
                        ),
                        _ => "every pilot ended before this unit could run".to_owned(),
                    };
                    why.entry(reason).or_default().push(u.id);
                }
                for (reason, ids) in why {
                    self.cancel(ids, &reason).await;
                }
            }
            Command::Cancel(ids) => self.cancel(ids, "canceled").await,
            Command::CancelAll(reason) => {
                let ids = self
                    .units
                    .values()
                    .filter(|u| u.record.lock().is_ok_and(|r| !r.life.state().is_final()))
                    .map(|u| u.id)
                    .collect();
                self.cancel(ids, &reason).await;
            }
        }
    }

    async fn cancel(&mut self, ids: Vec<UnitId>, reason: &str) {
        let ids: HashSet<UnitId> = ids
            .into_iter()
            .filter(|id| self.units.contains_key(id))
            .collect();
        // Units in the pool: canceled here.
        let outbox = &mut self.outbox;
        let mut in_pool = HashSet::new();
        self.pool.retain(|u| {
            let hit = ids.contains(&u.id);
            if hit {
                outbox.push(event(u.id, None, UnitState::Canceled, reason.to_owned()));
                in_pool.insert(u.id);
            }
            !hit
        });
        // Every other one is canceled when it is back, if its pilot cannot do it first;
        // that covers units on their way back to the pool, in no pilot and not in it yet.
        // The first reason asked for is the one a unit keeps (a cancel of the whole session
        // also cancels its pilots, whose units then come back stranded).
        for id in ids.iter().filter(|id| !in_pool.contains(id)) {
            self.cancel_requested
                .entry(*id)
                .or_insert_with(|| reason.to_owned());
        }
        // Units out at a pilot: taken back from its queue if still there, else its agent
        // kills them; if the pilot is gone, they are canceled when they come back.
        let mut per_pilot: Vec<(PilotId, bool, Vec<UnitId>)> = Vec::new();
        for slot in &self.pilots {
            let mine: Vec<UnitId> = slot
                .in_flight
                .iter()
                .filter(|u| ids.contains(u))
                .copied()
                .collect();
            if !mine.is_empty() {
                per_pilot.push((
                    slot.pilot.id(),
                    !slot.ended && !slot.pilot.state().is_final(),
                    mine,
                ));
            }
        }
        for (pilot, alive, units) in per_pilot {
            for u in &units {
                self.cancel_requested
                    .entry(*u)
                    .or_insert_with(|| reason.to_owned());
            }
            if !alive {
                continue;
            }
            let withdrawn = match self.coordination.withdraw(pilot, Some(&units)).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(%pilot, error = %e, "cannot withdraw units to cancel");
                    Vec::new()
                }
            };
            for u in &withdrawn {
                self.outbox.push(event(
                    *u,
                    Some(pilot),
                    UnitState::Canceled,
                    reason.to_owned(),
                ));
            }
            let withdrawn: HashSet<UnitId> = withdrawn.into_iter().collect();
            for u in units.into_iter().filter(|u| !withdrawn.contains(u)) {
                if let Err(e) = self
                    .coordination
                    .send_control(pilot, Control::CancelUnit(u))
                    .await
                {
                    // Each further call would wait as long: the rest are canceled when
                    // they come back, or with their pilot.
                    tracing::error!(%pilot, unit = %u, error = %e, "cannot ask the agent to cancel");
                    break;
                }
            }
        }
    }

    /// `pstar cancel` from another terminal: units, a pilot, or the whole session.
    async fn cancel_requested_from_outside(&mut self, target: CancelTarget, reason: &str) {
        tracing::info!(?target, %reason, "cancel requested");
        match target {
            CancelTarget::Units(ids) => self.cancel(ids, reason).await,
            CancelTarget::Pilot(pilot) => {
                if let Some(slot) = self.slot(pilot) {
                    let handle = slot.pilot.clone();
                    tokio::spawn(async move { handle.cancel().await });
                }
            }
            CancelTarget::Session => {
                let ids = self
                    .units
                    .values()
                    .filter(|u| u.record.lock().is_ok_and(|r| !r.life.state().is_final()))
                    .map(|u| u.id)
                    .collect();
                self.cancel(ids, reason).await;
                for slot in &self.pilots {
                    let handle = slot.pilot.clone();
                    tokio::spawn(async move { handle.cancel().await });
                }
            }
        }
    }

    /// Takes back every unit still queued for `pilot`: they return to the pool when their
    /// `New` comes back on the stream.
    async fn withdraw(&mut self, pilot: PilotId, why: &str) {
        match self.coordination.withdraw(pilot, None).await {
            Ok(units) => {
                for u in units {
                    self.outbox.push(event(
                        u,
                        Some(pilot),
                        UnitState::New,
                        format!("{why} ({pilot})"),
                    ));
                }
            }
            Err(e) => tracing::error!(%pilot, error = %e, "cannot withdraw units"),
        }
    }

    async fn apply_events(&mut self, batch: &[Event]) {
        for e in batch {
            match e {
                Event::Unit(u) => self.apply_unit(u),
                Event::PilotDraining { pilot, .. } => {
                    let live = self.replay.is_none();
                    if let Some(slot) = self.slot(*pilot) {
                        slot.draining = true;
                        if live {
                            self.withdraw(*pilot, "pilot is draining before its walltime ends")
                                .await;
                        }
                    }
                }
                Event::Pilot(p) if p.state.is_final() && self.replay.is_some() => {
                    // What it held is settled by the history that follows, or after it.
                    if let Some(slot) = self.slot(p.pilot) {
                        slot.ended = true;
                    }
                }
                Event::Pilot(p) if p.state.is_final() => {
                    self.pilot_ended(p.pilot, p.state, p.detail.as_deref())
                        .await
                }
                Event::Pilot(_) => {}
                Event::Resumed { token, .. } => {
                    if self.replay.as_ref().is_some_and(|(t, _)| t == token) {
                        self.caught_up().await;
                        for (target, reason) in std::mem::take(&mut self.deferred_cancels) {
                            self.cancel_requested_from_outside(target, &reason).await;
                        }
                    }
                }
                Event::CancelRequested { target, reason, .. } => {
                    if self.replay.is_some() {
                        self.deferred_cancels.push((target.clone(), reason.clone()));
                    } else {
                        self.cancel_requested_from_outside(target.clone(), reason)
                            .await;
                    }
                }
            }
        }
        if self.replay.is_some() {
            self.black_holes.clear();
        }
        for (pilot, reason) in std::mem::take(&mut self.black_holes) {
            let Some(slot) = self.slot(pilot) else {
                continue;
            };
            slot.removed = true;
            let handle = slot.pilot.clone();
            self.withdraw(pilot, "pilot taken out of rotation").await;
            tokio::spawn(async move { handle.fail(reason).await });
        }
    }

    /// A pilot has ended: what is still bound to it goes back to the pool (or fails, if it
    /// was bound to that pilot early). Its agent returns what it ran before it reports its
    /// end, so what is left here is what it never reported (it crashed, or never started).
    async fn pilot_ended(&mut self, pilot: PilotId, state: PilotState, detail: Option<&str>) {
        let Some(slot) = self.slot(pilot) else { return };
        if slot.ended {
            return;
        }
        slot.ended = true;
        self.settle(pilot, state, detail).await;
    }

    /// Sends what is still bound to an ended pilot back to the pool (or fails it).
    async fn settle(&mut self, pilot: PilotId, state: PilotState, detail: Option<&str>) {
        let Some(slot) = self.slot(pilot) else { return };
        // From now on, reports from this pilot are stale (see `apply_unit`): what it held
        // is settled here, by the manager.
        let left: Vec<UnitId> = slot.in_flight.drain().collect();
        slot.cores_bound = 0;
        slot.gpus_bound = 0;
        // What is still in its queue was never claimed; the rest its agent had taken, and
        // may have started even if no report of it arrived before the agent died.
        let unclaimed: HashSet<UnitId> = match self.coordination.withdraw(pilot, None).await {
            Ok(units) => units.into_iter().collect(),
            Err(e) => {
                tracing::error!(%pilot, error = %e, "cannot withdraw units of an ended pilot");
                HashSet::new()
            }
        };
        let why = match detail {
            Some(d) => format!("{pilot} ended ({state}: {d})"),
            None => format!("{pilot} ended ({state})"),
        };
        for u in left {
            let Some(shared) = self.units.get(&u) else {
                continue;
            };
            let early = shared.description.pilot == Some(pilot);
            let claimed = !unclaimed.contains(&u);
            if early {
                self.outbox
                    .push(event(u, None, UnitState::Failed, why.clone()));
            } else if state == PilotState::Failed && claimed {
                // The run (begun or about to begin) was lost with its pilot: that uses up
                // one attempt, counted when the event comes back (`apply_unit`).
                let earlier: &[String] = self.attempts.get(&u).map_or(&[], |v| v.as_slice());
                let lost = earlier.len() + 1;
                let (next, detail) = if lost as u32 >= self.policy.max_attempts.max(1) {
                    let list: Vec<String> = earlier
                        .iter()
                        .chain(std::iter::once(&why))
                        .enumerate()
                        .map(|(i, r)| format!("({}) {r}", i + 1))
                        .collect();
                    let detail = format!(
                        "gave up after {}: {}",
                        pstar_model::plural(lost as u64, "attempt"),
                        list.join("; ")
                    );
                    (UnitState::Failed, detail)
                } else {
                    let detail =
                        format!("{why}; attempt {lost} of {} lost", self.policy.max_attempts);
                    (UnitState::New, detail)
                };
                let mut lost_run = event(u, None, next, detail);
                if let Event::Unit(e) = &mut lost_run {
                    e.lost_run = true;
                }
                self.outbox.push(lost_run);
            } else {
                self.outbox
                    .push(event(u, None, UnitState::New, why.clone()));
            }
        }
        // With fewer pilots alive, some waiting units may now never fit.
        self.fail_what_never_fits();
    }

    fn apply_unit(&mut self, e: &UnitEvent) {
        let Some(shared) = self.units.get(&e.unit).cloned() else {
            return;
        };
        let Ok(mut rec) = shared.record.lock() else {
            return;
        };
        let from = rec.life.state();
        let bound_before = rec.pilot.as_ref().map(|(p, _)| *p);
        let replaying = self.replay.is_some();
        // A report from a pilot the unit is no longer bound to, or from a pilot that has
        // ended (an agent that was presumed gone and reports late), is stale.
        let stale = e.state != UnitState::Scheduled
            && e.pilot.is_some_and(|p| {
                rec.pilot.as_ref().map(|(b, _)| *b) != Some(p)
                    || self.pilots.iter().any(|s| s.pilot.id() == p && s.ended)
            });
        if stale {
            tracing::debug!(unit = %e.unit, pilot = ?e.pilot, "ignored a stale report");
            return;
        }
        if replaying {
            rec.life.backdate_start(e.at);
        }
        if let Err(err) = rec.life.transition(e.state, e.at) {
            tracing::debug!(unit = %e.unit, error = %err, "ignored unit event");
            return;
        }
        self.counts.moved(from, e.state);
        if e.lost_run {
            // The reason, without the attempt count the detail adds.
            let why = e.detail.as_deref().unwrap_or("run lost");
            let why = why.rsplit_once("; attempt ").map_or(why, |(w, _)| w);
            self.attempts
                .entry(e.unit)
                .or_default()
                .push(why.to_owned());
        }
        if e.exit_code.is_some() {
            rec.exit_code = e.exit_code;
        }
        // A cancel's own reason wins over the agent's plain "canceled" (but not over the
        // reason the manager's own decision already carries).
        let plain = e.detail.as_deref().is_none_or(|d| d == "canceled");
        let reason = match e.state {
            UnitState::Canceled if plain => self.cancel_requested.get(&e.unit).cloned(),
            _ => None,
        };
        rec.detail = reason.or_else(|| e.detail.clone());
        if e.state == UnitState::Scheduled {
            let sandbox: Option<Arc<Path>> = e.pilot.and_then(|p| {
                self.pilots
                    .iter()
                    .find(|s| s.pilot.id() == p)
                    .map(|s| Arc::from(s.pilot.sandbox()))
            });
            rec.pilot = e.pilot.zip(sandbox);
        }
        let ran_for = match e.state {
            UnitState::Failed => Some(
                rec.life
                    .history()
                    .iter()
                    .rev()
                    .find(|(s, _)| *s == UnitState::Running)
                    .map_or(Duration::ZERO, |(_, at)| e.at.since(*at)),
            ),
            _ => None,
        };
        let callbacks = rec.callbacks.clone();
        drop(rec);
        if let Some(pilot) = e.pilot {
            self.account(pilot, e.state, ran_for);
        }

        if e.state.is_final() || e.state == UnitState::New {
            self.release(&shared, bound_before);
        }
        if replaying {
            // Rebuild what each pilot holds; the pool is rebuilt once caught up.
            if let (UnitState::Scheduled, Some(pilot)) = (e.state, e.pilot)
                && let Some(slot) = self.slot(pilot)
                && slot.in_flight.insert(e.unit)
            {
                slot.cores_bound += shared.description.cores;
                slot.gpus_bound += shared.description.gpus;
            }
        } else if e.state.is_final() {
            self.cancel_requested.remove(&e.unit);
        } else if e.state == UnitState::New {
            if let Some(reason) = self.cancel_requested.remove(&e.unit) {
                self.outbox
                    .push(event(e.unit, None, UnitState::Canceled, reason));
            } else {
                // Back to the head of the pool: it was submitted before what waits there.
                self.pool.push_front(Self::view(&shared));
            }
        }
        // Callbacks first: whoever `wait`s sees them all done.
        if !callbacks.is_empty()
            && let Some(commands) = self.commands.upgrade()
        {
            let handle = ComputeUnit {
                shared: shared.clone(),
                commands,
            };
            for cb in callbacks {
                cb(&handle, e.state);
            }
        }
        shared.changed.notify_waiters();
        if e.state.is_final()
            && !replaying
            && let Some(tx) = self.hand_over.lock().ok().and_then(|h| h.clone())
            && let Some(commands) = self.commands.upgrade()
        {
            // Handed over and forgotten: a late report of it finds nothing to change.
            self.units.remove(&e.unit);
            self.attempts.remove(&e.unit);
            if let Ok(mut live) = self.live.lock() {
                live.remove(&e.unit);
            }
            let _ = tx.send(ComputeUnit { shared, commands });
        }
    }

    /// The replay reached this manager's own `Resumed` marker: the state is what the
    /// manager before left, and decisions start. Units back in `New` form the pool again
    /// (oldest first); what ended pilots still held is settled as it would have been.
    async fn caught_up(&mut self) {
        let Some((_, done)) = self.replay.take() else {
            return;
        };
        let mut waiting: Vec<UnitView> = self
            .units
            .values()
            .filter(|u| {
                u.record
                    .lock()
                    .is_ok_and(|r| r.life.state() == UnitState::New)
            })
            .map(|u| Self::view(u))
            .collect();
        waiting.sort_by_key(|u| u.id);
        self.pool = waiting.into();
        let ended: Vec<(PilotId, PilotState, Option<String>)> = self
            .pilots
            .iter()
            .filter(|s| s.ended && !s.in_flight.is_empty())
            .map(|s| (s.pilot.id(), s.pilot.state(), s.pilot.detail()))
            .collect();
        for (pilot, state, detail) in ended {
            self.settle(pilot, state, detail.as_deref()).await;
        }
        let draining: Vec<PilotId> = self
            .pilots
            .iter()
            .filter(|s| s.draining && !s.ended)
            .map(|s| s.pilot.id())
            .collect();
        for pilot in draining {
            self.withdraw(pilot, "pilot is draining before its walltime ends")
                .await;
        }
        self.fail_what_never_fits();
        tracing::info!(
            units = self.units.len(),
            waiting = self.pool.len(),
            "replayed the session's history"
        );
        self.counts_tx.send_replace(self.counts.clone());
        self.counts_sent = tokio::time::Instant::now();
        let _ = done.send(());
    }

    /// Fails the units in the pool that no live pilot can ever fit.
    fn fail_what_never_fits(&mut self) {
        let views = self.views();
        let outbox = &mut self.outbox;
        self.pool
            .retain(|u| match scheduler::never_fits(u, &views) {
                Some(reason) => {
                    outbox.push(event(u.id, None, UnitState::Failed, reason));
                    false
                }
                None => true,
            });
    }

    /// Keeps the black-hole count of `pilot` (see [`UnitPolicy::black_hole_failures`]).
    fn account(&mut self, pilot: PilotId, state: UnitState, ran_for: Option<Duration>) {
        let window = self.policy.black_hole_window;
        let Some(slot) = self.slot(pilot) else { return };
        // A suspect (a streak of quick failures) is a black hole once another pilot has
        // shown that units can succeed; until then it gets no new units (see `views`).
        // Only two events can make that so: a pilot's first `Done` (every other suspect is
        // judged), or a quick failure on a pilot (it alone is).
        let to_judge: Vec<usize> = match (state, ran_for) {
            (UnitState::Done, _) => {
                slot.done += 1;
                slot.quick_failures = 0;
                if slot.done > 1 {
                    return;
                }
                (0..self.pilots.len())
                    .filter(|&i| self.pilots[i].pilot.id() != pilot)
                    .collect()
            }
            (UnitState::Failed, Some(ran)) if ran < window => {
                slot.quick_failures += 1;
                self.pilots
                    .iter()
                    .position(|s| s.pilot.id() == pilot)
                    .into_iter()
                    .collect()
            }
            (UnitState::Failed, _) => {
                slot.quick_failures = 0;
                return;
            }
            _ => return,
        };
        for i in to_judge {
            let me = self.pilots[i].pilot.id();
            if !self.is_suspect(&self.pilots[i]) || self.pilots[i].removed {
                continue;
            }
            if !self.pilots.iter().any(|s| s.pilot.id() != me && s.done > 0) {
                continue;
            }
            let slot = &mut self.pilots[i];
            let reason = format!(
                "black hole: {} in a row failed within {} of starting here \
                 while other pilots ran units to done",
                pstar_model::plural(u64::from(slot.quick_failures), "unit"),
                humantime::format_duration(window)
            );
            slot.removed = true;
            self.black_holes.push((me, reason));
        }
    }

    fn is_suspect(&self, slot: &PilotSlot) -> bool {
        let threshold = self.policy.black_hole_failures;
        threshold > 0 && slot.quick_failures >= threshold
    }

    /// The unit no longer holds room on `pilot`.
    fn release(&mut self, unit: &UnitShared, pilot: Option<PilotId>) {
        let Some(slot) = pilot.and_then(|p| self.pilots.iter_mut().find(|s| s.pilot.id() == p))
        else {
            return;
        };
        if slot.in_flight.remove(&unit.id) {
            slot.cores_bound = slot.cores_bound.saturating_sub(unit.description.cores);
            slot.gpus_bound = slot.gpus_bound.saturating_sub(unit.description.gpus);
        }
    }

    fn schedule(&mut self) {
        if self.pool.is_empty() || self.replay.is_some() {
            return;
        }
        let mut views = self.views();
        for decision in scheduler::schedule(&mut self.pool, &mut views) {
            match decision {
                Decision::Bind { unit, pilot } => {
                    let Some(shared) = self.units.get(&unit) else {
                        continue;
                    };
                    let (cores, gpus) = (shared.description.cores, shared.description.gpus);
                    if let Some(slot) = self.pilots.iter_mut().find(|s| s.pilot.id() == pilot) {
                        slot.in_flight.insert(unit);
                        slot.cores_bound += cores;
                        slot.gpus_bound += gpus;
                    }
                    self.outbox
                        .push(event(unit, Some(pilot), UnitState::Scheduled, None));
                    self.bound.entry(pilot).or_default().push(unit);
                }
                Decision::Fail { unit, reason } => {
                    self.outbox
                        .push(event(unit, None, UnitState::Failed, reason))
                }
            }
        }
    }

    /// Publishes this round's decisions, then enqueues the bound units: an agent can only
    /// claim a unit whose `Scheduled` is already on the stream.
    async fn flush(&mut self) {
        let bindings: Vec<_> = std::mem::take(&mut self.bound).into_iter().collect();
        if (!self.outbox.is_empty() || !bindings.is_empty())
            && let Err(e) = self
                .coordination
                .publish_and_enqueue(std::mem::take(&mut self.outbox), bindings)
                .await
        {
            tracing::error!(error = %e, "cannot publish scheduling decisions");
        }
        // Counts feed progress displays and `wait`: sent at most every `COUNTS_EVERY`, and
        // at once when every unit has ended.
        let now = tokio::time::Instant::now();
        let all_ended = self.counts.finished() == self.counts.total();
        if now >= self.counts_sent + COUNTS_EVERY || all_ended {
            let counts = &self.counts;
            let sent = self.counts_tx.send_if_modified(|c| {
                if c != counts {
                    c.clone_from(counts);
                    true
                } else {
                    false
                }
            });
            if sent {
                self.counts_sent = now;
            }
        }
    }
}
