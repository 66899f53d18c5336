//! The manager's async shell around the [`Core`]: one task per session.
//!
//! It feeds the core what happens (commands of the Pilot-API's services, event batches
//! from the store, the time) and applies each [`Round`] of effects with batched store
//! calls: one withdraw call for every pilot the round takes units back from, one
//! publication (with the round's bindings, in the same transaction where the store can),
//! one call for every control message. No store call is awaited while the core decides;
//! what a withdraw answers is fed back as the next input before anything else. The shell
//! also keeps the application's handles up to date (states, callbacks, counts, units
//! handed over).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use pstar_coordination::{Coordination, Event};
use pstar_model::{PilotId, PilotState, State, Timestamp, UnitId};

use crate::core::{
    Applied, Core, Input, PilotSpec, Round, ServiceId, UnitCounts, UnitNeeds, UnitPolicy, UnitSpec,
};
use crate::pilot::PilotCompute;
use crate::unit::{ComputeUnit, UnitShared};

/// How often, at most, a service's [`UnitCounts`] are updated while units run.
const COUNTS_EVERY: Duration = Duration::from_millis(10);

/// Units submitted while ended ones are handed over, until they end.
pub(crate) type LiveUnits = Arc<Mutex<std::collections::BTreeMap<UnitId, Arc<UnitShared>>>>;

/// Where units that end are handed over, once asked for (shared by the service and the
/// shell).
pub(crate) type HandOver = Arc<Mutex<Option<mpsc::UnboundedSender<ComputeUnit>>>>;

/// What the Pilot-API asks of the session's manager.
pub(crate) enum Command {
    AddService {
        service: ServiceId,
        policy: UnitPolicy,
        counts: watch::Sender<UnitCounts>,
        hand_over: HandOver,
        live: LiveUnits,
    },
    Submit(ServiceId, Vec<Arc<UnitShared>>),
    /// Units of a resumed session, loaded from the store: their states come from the
    /// replayed history, not from the pool.
    Restore(ServiceId, Vec<Arc<UnitShared>>),
    Cancel(Vec<UnitId>, String),
    CancelAll(ServiceId, String),
    AddPilot(ServiceId, PilotCompute),
    RemovePilots(ServiceId, Vec<PilotId>, oneshot::Sender<()>),
    /// Cancel what is left because no pilot is left to run it.
    CancelStranded(ServiceId),
    /// Pilot-Data facts for the core as they are: a store's labels, data units made.
    Data(Input),
    /// Replay the history up to the `Resumed` marker with `token`; say so on `done`.
    Replay {
        token: u64,
        done: oneshot::Sender<()>,
    },
}

struct ServiceShell {
    counts: watch::Sender<UnitCounts>,
    counts_sent: Instant,
    hand_over: HandOver,
    live: LiveUnits,
    /// The core was told to forget this service's units once they end.
    forgetting: bool,
}

/// The session's manager task.
pub(crate) struct Shell {
    core: Core,
    coordination: Arc<dyn Coordination>,
    /// For the handles given out (to cancel through them).
    commands: mpsc::WeakUnboundedSender<Command>,
    units: HashMap<UnitId, Arc<UnitShared>>,
    services: HashMap<ServiceId, ServiceShell>,
    pilots: HashMap<PilotId, PilotCompute>,
    replay_done: Option<oneshot::Sender<()>>,
    /// Services whose counts changed and were not sent yet.
    counts_due: HashSet<ServiceId>,
    /// Told once the round that removes their pilots is applied.
    removed: Vec<oneshot::Sender<()>>,
    /// Function units' answers (pickled return values or exceptions) from their agents'
    /// reports, until the core applies the unit's end: then they are its handle's.
    answers: HashMap<UnitId, Arc<[u8]>>,
}

impl Shell {
    pub(crate) fn start(
        coordination: Arc<dyn Coordination>,
        events: mpsc::UnboundedReceiver<Arc<[Event]>>,
    ) -> mpsc::UnboundedSender<Command> {
        let (tx, rx) = mpsc::unbounded_channel();
        let shell = Shell {
            core: Core::new(Timestamp::now()),
            coordination,
            commands: tx.downgrade(),
            units: HashMap::new(),
            services: HashMap::new(),
            pilots: HashMap::new(),
            replay_done: None,
            counts_due: HashSet::new(),
            removed: Vec::new(),
            answers: HashMap::new(),
        };
        tokio::spawn(shell.run(rx, events));
        tx
    }

    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut events: mpsc::UnboundedReceiver<Arc<[Event]>>,
    ) {
        loop {
            let due = self.next_counts_due();
            tokio::select! {
                // Commands first: a resumed service gets its pilots and units before the
                // history that speaks of them.
                biased;
                command = commands.recv() => match command {
                    Some(c) => {
                        self.core.handle(Input::Tick(Timestamp::now()));
                        self.command(c);
                        // Whatever else was asked joins this round.
                        while let Ok(c) = commands.try_recv() {
                            self.command(c);
                        }
                    }
                    None => break,
                },
                batch = events.recv() => match batch {
                    Some(batch) => {
                        self.core.handle(Input::Tick(Timestamp::now()));
                        self.keep_answers(&batch);
                        self.core.handle(Input::Events(batch));
                        // Whatever else has arrived joins this round: one scheduling pass
                        // and one publication for all of it.
                        while let Ok(more) = events.try_recv() {
                            self.keep_answers(&more);
                            self.core.handle(Input::Events(more));
                        }
                    }
                    None => break,
                },
                _ = sleep_until(due), if due.is_some() => {}
            }
            self.apply_rounds().await;
            for done in self.removed.drain(..) {
                let _ = done.send(());
            }
            self.send_counts(false);
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::AddService {
                service,
                policy,
                counts,
                hand_over,
                live,
            } => {
                self.services.insert(
                    service,
                    ServiceShell {
                        counts,
                        counts_sent: Instant::now(),
                        hand_over,
                        live,
                        forgetting: false,
                    },
                );
                self.core.handle(Input::AddService { service, policy });
            }
            Command::Submit(service, units) | Command::Restore(service, units)
                if !self.services.contains_key(&service) =>
            {
                drop(units);
            }
            Command::Submit(service, units) => {
                let specs = self.take_units(units);
                self.core.handle(Input::Submit {
                    service,
                    units: specs,
                });
            }
            Command::Restore(service, units) => {
                let specs = self.take_units(units);
                self.core.handle(Input::Restore {
                    service,
                    units: specs,
                });
            }
            Command::Cancel(units, reason) => self.core.handle(Input::Cancel { units, reason }),
            Command::CancelAll(service, reason) => {
                self.core.handle(Input::CancelAll { service, reason })
            }
            Command::AddPilot(service, pilot) => {
                let spec = PilotSpec::of(pilot.id(), pilot.description());
                let state = pilot.state();
                let running_since = pilot
                    .history()
                    .iter()
                    .find(|(s, _)| *s == PilotState::Running)
                    .map(|(_, at)| *at);
                let affinity = pilot.description().affinity.clone();
                if affinity != Default::default() {
                    self.core.handle(Input::PilotAffinity {
                        pilot: pilot.id(),
                        affinity,
                    });
                }
                self.pilots.insert(pilot.id(), pilot);
                self.core.handle(Input::AddPilot {
                    service,
                    pilot: spec,
                    state,
                    running_since,
                });
            }
            Command::RemovePilots(service, pilots, done) => {
                self.core.handle(Input::RemovePilots { service, pilots });
                // Answered once the round is applied: their queues are taken back.
                self.removed.push(done);
            }
            Command::CancelStranded(service) => self.core.handle(Input::CancelStranded { service }),
            Command::Data(input) => self.core.handle(input),
            Command::Replay { token, done } => {
                self.replay_done = Some(done);
                self.core.handle(Input::Replay { token });
            }
        }
    }

    /// Records the units' handles and returns what the core needs of them; what units
    /// need and make goes to the core first (`Input::UnitNeeds`).
    fn take_units(&mut self, units: Vec<Arc<UnitShared>>) -> Vec<UnitSpec> {
        self.units.reserve(units.len());
        let mut data = Vec::new();
        let specs = units
            .into_iter()
            .map(|u| {
                let spec = UnitSpec::of(u.id, &u.description);
                if let Some(needs) = UnitNeeds::of(u.id, &u.description) {
                    data.push(needs);
                }
                self.units.insert(u.id, u);
                spec
            })
            .collect();
        if !data.is_empty() {
            self.core.handle(Input::UnitNeeds(data));
        }
        specs
    }

    /// Applies the core's rounds until it has nothing more to do: a round that takes
    /// units back from pilots needs the store's answer before the next.
    async fn apply_rounds(&mut self) {
        loop {
            let round = self.core.round();
            let asked = !round.withdraw.is_empty();
            self.apply(round).await;
            if !asked {
                break;
            }
        }
    }

    async fn apply(&mut self, round: Round) {
        let Round {
            withdraw,
            publish,
            enqueue,
            controls,
            cancel_pilots,
            fail_pilots,
            applied,
            counts_changed,
            caught_up,
        } = round;
        if !withdraw.is_empty() {
            let answers = match self.coordination.withdraw_batch(withdraw).await {
                Ok(answers) => answers,
                Err(e) => {
                    tracing::error!(error = %e, "cannot take units back from pilots' queues");
                    Vec::new()
                }
            };
            self.core.handle(Input::Withdrawn(answers));
        }
        if (!publish.is_empty() || !enqueue.is_empty())
            && let Err(e) = self
                .coordination
                .publish_and_enqueue(publish, enqueue)
                .await
        {
            tracing::error!(error = %e, "cannot publish scheduling decisions");
        }
        if !controls.is_empty()
            && let Err(e) = self.coordination.send_controls(controls).await
        {
            // The units are canceled when they come back, or with their pilot.
            tracing::error!(error = %e, "cannot ask agents to cancel units");
        }
        for pilot in cancel_pilots {
            if let Some(handle) = self.pilots.get(&pilot).cloned() {
                tokio::spawn(async move { handle.cancel().await });
            }
        }
        for (pilot, reason) in fail_pilots {
            if let Some(handle) = self.pilots.get(&pilot).cloned() {
                tokio::spawn(async move { handle.fail(reason).await });
            }
        }
        let replaying = self.core.replaying();
        for a in applied {
            self.applied(a, replaying);
        }
        self.counts_due.extend(counts_changed);
        if caught_up {
            tracing::info!(units = self.units.len(), "replayed the session's history");
            self.send_counts(true);
            if let Some(done) = self.replay_done.take() {
                let _ = done.send(());
            }
        }
    }

    /// Keeps the function units' answers a batch of reports carries (of this manager's
    /// units), for when the core applies their ends.
    fn keep_answers(&mut self, batch: &[Event]) {
        for e in batch {
            if let Event::Unit(u) = e
                && let Some(answer) = &u.result
                && self.units.contains_key(&u.unit)
            {
                self.answers.insert(u.unit, Arc::from(answer.as_slice()));
            }
        }
    }

    /// Brings a unit's handle up to date with a transition the core applied.
    fn applied(&mut self, a: Applied, replaying: bool) {
        let answer = match a.state.is_final() {
            true => self.answers.remove(&a.unit),
            false => None,
        };
        let Some(shared) = self.units.get(&a.unit).cloned() else {
            return;
        };
        let callbacks = {
            let Ok(mut rec) = shared.record.lock() else {
                return;
            };
            rec.life.backdate_start(a.at);
            let moved = match a.rerun {
                true => rec.life.restart(a.at),
                false => rec.life.transition(a.state, a.at),
            };
            if a.rerun {
                rec.exit_code = None;
                rec.answer = None;
            }
            if answer.is_some() {
                rec.answer = answer;
            }
            if let Err(err) = moved {
                tracing::debug!(unit = %a.unit, error = %err, "handle refused a transition");
                return;
            }
            if a.exit_code.is_some() {
                rec.exit_code = a.exit_code;
            }
            rec.detail = a.detail;
            if let Some(pilot) = a.pilot {
                let sandbox: Option<Arc<Path>> =
                    self.pilots.get(&pilot).map(|p| Arc::from(p.sandbox()));
                rec.pilot = sandbox.map(|s| (pilot, s));
            }
            rec.note_run(a.state, a.at, a.exit_code, a.failed_run);
            rec.callbacks.clone()
        };
        // Callbacks first: whoever `wait`s sees them all done.
        if !callbacks.is_empty()
            && let Some(commands) = self.commands.upgrade()
        {
            let handle = ComputeUnit {
                shared: shared.clone(),
                commands,
            };
            for cb in callbacks {
                cb(&handle, a.state);
            }
        }
        shared.changed.notify_waiters();
        if !a.state.is_final() || replaying {
            return;
        }
        let Some(service) = self.services.get_mut(&a.service) else {
            return;
        };
        let Some(tx) = service.hand_over.lock().ok().and_then(|h| h.clone()) else {
            return;
        };
        let Some(commands) = self.commands.upgrade() else {
            return;
        };
        // Handed over and forgotten: a late report of it finds nothing to change.
        self.units.remove(&a.unit);
        if let Ok(mut live) = service.live.lock() {
            live.remove(&a.unit);
        }
        if !service.forgetting {
            service.forgetting = true;
            self.core
                .handle(Input::ForgetFinished { service: a.service });
        }
        let _ = tx.send(ComputeUnit { shared, commands });
    }

    fn next_counts_due(&self) -> Option<Instant> {
        self.counts_due
            .iter()
            .filter_map(|s| self.services.get(s))
            .map(|s| s.counts_sent + COUNTS_EVERY)
            .min()
    }

    /// Counts feed progress displays and `wait`: sent at most every `COUNTS_EVERY`, and at
    /// once when every unit of the service has ended (or with `now`).
    fn send_counts(&mut self, now: bool) {
        if self.core.replaying() {
            return;
        }
        let at = Instant::now();
        let due: Vec<ServiceId> = self.counts_due.iter().copied().collect();
        for id in due {
            let Some(service) = self.services.get_mut(&id) else {
                self.counts_due.remove(&id);
                continue;
            };
            let counts = self.core.counts(id);
            let all_ended = counts.finished() == counts.total();
            if now || all_ended || at >= service.counts_sent + COUNTS_EVERY {
                service.counts.send_if_modified(|c| {
                    if *c != counts {
                        *c = counts;
                        true
                    } else {
                        false
                    }
                });
                service.counts_sent = at;
                self.counts_due.remove(&id);
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
