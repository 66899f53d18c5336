//! `ComputeUnitService`: accepts compute units and drives them to a final state.
//!
//! The service is a handle on the session's manager (`shell::Shell` around
//! `core::Core`), which owns everything about the units of every service of the session:
//! the pools (units bound to no pilot yet), what each pilot has bound to it, and every
//! unit's state. The manager follows the session's event stream and applies each
//! transition through the state table; its own decisions (bind, withdraw, fail, cancel)
//! are published on the same stream and applied when they come back, so there is one
//! path by which a unit's state ever changes, whoever decided it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use pstar_coordination::Claimed;
use pstar_model::{ComputeUnitDescription, Timestamp, UnitId};

pub use crate::core::{ServiceId, UnitCounts, UnitPolicy};
use crate::error::{Error, Result};
use crate::pilot::{PilotCompute, PilotComputeService};
use crate::session::Session;
use crate::shell::{Command, HandOver, LiveUnits};
use crate::unit::{ComputeUnit, UnitShared};

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
    /// Which of the session's unit services this is, in the session's manager.
    service: ServiceId,
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

impl From<&pstar_model::Settings> for UnitPolicy {
    /// The policy `settings` give: their prefetch, attempts and black-hole failures.
    fn from(settings: &pstar_model::Settings) -> Self {
        UnitPolicy {
            prefetch: settings.prefetch,
            max_attempts: settings.max_attempts,
            black_hole_failures: settings.black_hole_failures,
            locality_wait: settings.locality_wait,
            ..UnitPolicy::default()
        }
    }
}

impl ComputeUnitService {
    /// A service with no pilots, with the policy of the session's settings
    /// ([`UnitPolicy::from`] them): by default binding to each pilot up to its slots plus
    /// four slot-worths of units waiting there (what its agent keeps at hand, so that short
    /// units flow without gaps). For long units over pilots that come and go, a smaller
    /// prefetch ([`with_prefetch`](Self::with_prefetch)) binds later.
    pub fn new(session: &Session) -> Self {
        Self::with_policy(session, UnitPolicy::from(session.settings()))
    }

    /// A service whose pilots may have `prefetch` times their slots of units bound to them
    /// beyond what they run (so an agent has its next units at hand); the rest of its
    /// policy from the session's settings.
    pub fn with_prefetch(session: &Session, prefetch: u32) -> Self {
        Self::with_policy(
            session,
            UnitPolicy {
                prefetch,
                ..UnitPolicy::from(session.settings())
            },
        )
    }

    /// A service with its own [`UnitPolicy`].
    pub fn with_policy(session: &Session, policy: UnitPolicy) -> Self {
        Self::start(session, policy)
    }

    fn start(session: &Session, policy: UnitPolicy) -> Self {
        let (counts_tx, counts) = watch::channel(UnitCounts::default());
        let live = LiveUnits::default();
        let hand_over = HandOver::default();
        let service = session.new_service_id();
        let commands = session.manager();
        let _ = commands.send(Command::AddService {
            service,
            policy,
            counts: counts_tx,
            hand_over: hand_over.clone(),
            live: live.clone(),
        });
        Self {
            inner: Arc::new(CusInner {
                session: session.clone(),
                service,
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

    /// Replays the session's history up to the `Resumed` marker with `token` before
    /// taking decisions; says so on `caught_up`.
    pub(crate) fn replay(&self, token: u64, caught_up: tokio::sync::oneshot::Sender<()>) {
        let _ = self.inner.commands.send(Command::Replay {
            token,
            done: caught_up,
        });
    }

    /// Takes on the units that `pstar submit` (an [`Event::SubmitRequested`] on the
    /// session's stream) adds to the session from now on: they join this service as if
    /// submitted here, and each request (with the pilots it asks for, which the caller
    /// creates) comes out of the returned receiver. For a resumed session, call it before
    /// the replay starts (see [`crate::resume`]): requests replayed from before this
    /// manager's `resumed` marker are history (their units are among the records).
    ///
    /// [`Event::SubmitRequested`]: pstar_coordination::Event::SubmitRequested
    pub fn accept_submissions(&self) -> mpsc::UnboundedReceiver<Submission> {
        self.accept_submissions_after(None)
    }

    pub(crate) fn accept_submissions_after(
        &self,
        marker: Option<u64>,
    ) -> mpsc::UnboundedReceiver<Submission> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut events = self.inner.session.listen();
        let service = self.clone();
        tokio::spawn(async move {
            let mut live = marker.is_none();
            while let Some(batch) = events.recv().await {
                for e in batch.iter() {
                    match e {
                        pstar_coordination::Event::Resumed { token, .. } => {
                            live |= Some(*token) == marker;
                        }
                        pstar_coordination::Event::SubmitRequested {
                            units, pilots, by, ..
                        } if live => {
                            let submission = service.adopt(units, pilots, by).await;
                            if tx.send(submission).is_err() {
                                return;
                            }
                        }
                        _ => {}
                    }
                }
            }
        });
        rx
    }

    /// Units someone else announced join this service, stored first (whoever announced
    /// them stores them too: a record written twice is the same record); an invalid
    /// description is left out, with why.
    async fn adopt(
        &self,
        units: &[(UnitId, ComputeUnitDescription)],
        pilots: &[pstar_model::PilotComputeDescription],
        by: &str,
    ) -> Submission {
        let now = Timestamp::now();
        let mut refused = Vec::new();
        let mut shared = Vec::with_capacity(units.len());
        for (id, d) in units {
            match d.validate() {
                Ok(()) => shared.push(UnitShared::new(*id, Arc::new(d.clone()), now)),
                Err(e) => refused.push((*id, e.to_string())),
            }
        }
        let stored: Vec<Claimed> = shared
            .iter()
            .map(|u| (u.id, u.description.clone()))
            .collect();
        if let Err(e) = self.inner.session.coordination().put_units(&stored).await {
            let why = format!("cannot be stored: {e}");
            refused.extend(shared.drain(..).map(|u| (u.id, why.clone())));
        }
        let ids: Vec<UnitId> = shared.iter().map(|u| u.id).collect();
        self.keep(&shared);
        if !shared.is_empty() {
            let _ = self
                .inner
                .commands
                .send(Command::Submit(self.inner.service, shared));
        }
        Submission {
            units: ids,
            refused,
            pilots: pilots.to_vec(),
            by: by.to_owned(),
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
        let service = self.inner.service;
        for pilot in pcs.pilots() {
            let _ = self.inner.commands.send(Command::AddPilot(service, pilot));
        }
        let commands = self.inner.commands.downgrade();
        let me = Arc::downgrade(&self.inner);
        pcs.on_new_pilot(Box::new(move |pilot| {
            match (commands.upgrade(), me.upgrade()) {
                (Some(tx), Some(_)) => tx.send(Command::AddPilot(service, pilot.clone())).is_ok(),
                _ => false,
            }
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
            .send(Command::RemovePilots(self.inner.service, ids, done))
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
        self.submit_batch_as(descriptions, None).await
    }

    /// Reserves the session's next `n` unit ids for units submitted later with
    /// [`submit_reserved`](Self::submit_reserved), in order: whoever must name units in
    /// each other's `after` before they are submitted (a workload file whose units are
    /// submitted as earlier ones end) knows their ids in advance.
    pub async fn reserve_unit_ids(&self, n: u64) -> Result<ReservedIds> {
        let first = self
            .inner
            .session
            .coordination()
            .reserve_unit_ids(n)
            .await?;
        Ok(ReservedIds {
            next: first.get(),
            end: first.get().saturating_add(n),
        })
    }

    /// Submits units as [`submit_batch`](Self::submit_batch) does, with the next ids of
    /// `ids`, in order. Fails, submitting none, if `ids` has fewer left than the batch.
    pub async fn submit_reserved(
        &self,
        ids: &mut ReservedIds,
        descriptions: impl IntoIterator<Item = ComputeUnitDescription>,
    ) -> Result<Vec<ComputeUnit>> {
        self.submit_batch_as(descriptions, Some(ids)).await
    }

    pub(crate) async fn submit_batch_as(
        &self,
        descriptions: impl IntoIterator<Item = ComputeUnitDescription>,
        reserved: Option<&mut ReservedIds>,
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
        let n = descriptions.len() as u64;
        let first = match reserved {
            Some(ids) => {
                if ids.end.saturating_sub(ids.next) < n {
                    return Err(Error::InvalidDescription {
                        what: format!("a batch of {n} units"),
                        source: pstar_model::DescriptionError::Reserved {
                            left: ids.end.saturating_sub(ids.next),
                        },
                    });
                }
                ids.next += n;
                ids.next - n
            }
            None => coordination.reserve_unit_ids(n).await?.get(),
        };
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
        self.keep(&shared);
        let handles = shared
            .iter()
            .map(|s| ComputeUnit {
                shared: s.clone(),
                commands: self.inner.commands.clone(),
            })
            .collect();
        self.inner
            .commands
            .send(Command::Submit(self.inner.service, shared))
            .map_err(|_| Error::ServiceClosed)?;
        Ok(handles)
    }

    /// Counts newly submitted units and keeps them: in `live` while units are handed
    /// over as they end, else in the list of every unit.
    fn keep(&self, shared: &[Arc<UnitShared>]) {
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
        let _ = self
            .inner
            .commands
            .send(Command::Restore(self.inner.service, shared));
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

    /// Cancels the units `units` that have not reached a final state (wherever they are:
    /// waiting for what they need, in the pool, queued, running), giving `reason` as their
    /// [`detail`](ComputeUnit::detail).
    pub fn cancel_units(&self, units: Vec<UnitId>, reason: impl Into<String>) {
        let _ = self
            .inner
            .commands
            .send(Command::Cancel(units, reason.into()));
    }

    /// Cancels every unit that has not reached a final state, giving `reason` as their
    /// [`detail`](ComputeUnit::detail).
    pub fn cancel_because(&self, reason: impl Into<String>) {
        let _ = self
            .inner
            .commands
            .send(Command::CancelAll(self.inner.service, reason.into()));
    }

    /// Cancels every unit that has not reached a final state because no pilot is left to
    /// run it (every pilot has ended). Each says why: it never ran, or its run was cut
    /// short (its pilot reached its walltime, say) and no pilot was left to run it again.
    pub fn cancel_stranded(&self) {
        let _ = self
            .inner
            .commands
            .send(Command::CancelStranded(self.inner.service));
    }
}

/// Unit ids reserved with [`ComputeUnitService::reserve_unit_ids`], used in order by
/// [`ComputeUnitService::submit_reserved`].
#[derive(Debug)]
pub struct ReservedIds {
    next: u64,
    end: u64,
}

impl ReservedIds {
    /// The id the next unit submitted with these will have, if any is left.
    pub fn next(&self) -> Option<UnitId> {
        (self.next < self.end).then(|| UnitId::new(self.next))
    }

    /// The id of the `k`-th of the ids left (from 0), if there are that many.
    pub fn nth(&self, k: u64) -> Option<UnitId> {
        let id = self.next.checked_add(k)?;
        (id < self.end).then(|| UnitId::new(id))
    }

    /// How many are left.
    pub fn left(&self) -> u64 {
        self.end - self.next
    }
}

/// Units (and pilots) someone added to the session with `pstar submit`, as
/// [`ComputeUnitService::accept_submissions`] took them on.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The units now in the service.
    pub units: Vec<UnitId>,
    /// Units left out, with why (an invalid description).
    pub refused: Vec<(UnitId, String)>,
    /// Pilots asked for, for the caller to create.
    pub pilots: Vec<pstar_model::PilotComputeDescription>,
    /// Who asked.
    pub by: String,
}
