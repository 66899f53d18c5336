//! The core's reactions to events and the decisions they lead to: applying reports,
//! pilots that end, cancels, withdraws, black holes, and catching up after a replay.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use pstar_coordination::{CancelTarget, Control, Event, LostRun, PilotEvent, UnitEvent};
use pstar_model::{PilotId, PilotState, State, Timestamp, UnitId, UnitState};

use super::{Applied, Core, Purpose, ServiceId, UnitEntry, is_stale, unit_event};
use crate::scheduler::NeverFits;

impl Core {
    pub(super) fn apply_event(&mut self, e: &Event) {
        match e {
            Event::Unit(u) => self.apply_unit(u),
            Event::Data(d) => self.apply_data(d),
            Event::Pilot(p) => self.apply_pilot(p),
            Event::PilotDraining { pilot, .. } => {
                let live = self.replay.is_none();
                let Some(p) = self.pilot_mut(*pilot) else {
                    return;
                };
                if p.draining {
                    return;
                }
                p.draining = true;
                if live && !p.ended {
                    self.ask_withdraw(
                        *pilot,
                        None,
                        Purpose::Return("pilot is draining before its walltime ends".into()),
                    );
                }
            }
            Event::Resumed { token, .. } => {
                if !self.observer && self.replay == Some(*token) {
                    self.caught_up();
                }
            }
            // Taken on by the unit service that accepts submissions, as new units.
            Event::SubmitRequested { .. } => {}
            Event::RerunRequested { states, at, .. } => self.rerun(states, *at),
            Event::CancelRequested { target, reason, .. } => {
                if self.observer {
                    self.note_cancel(target, reason);
                } else if self.replay.is_some() {
                    self.deferred_cancels.push((target.clone(), reason.clone()));
                } else {
                    self.cancel_from_outside(target.clone(), reason);
                }
            }
        }
    }

    fn apply_pilot(&mut self, e: &PilotEvent) {
        let replaying = self.replay.is_some();
        let Some(p) = self.pilot_mut(e.pilot) else {
            return;
        };
        if !p.state.can_transition_to(e.state) {
            return;
        }
        p.state = e.state;
        if e.state.is_final() {
            p.detail = e.detail.clone();
        }
        if e.state == PilotState::Running {
            p.running_since = Some(e.at);
        }
        if !e.state.is_final() || p.ended {
            return;
        }
        p.ended = true;
        if !replaying {
            // Settled once caught up, if the history does not settle it.
            self.settle(e.pilot, e.state, e.detail.as_deref());
        }
    }

    fn apply_unit(&mut self, e: &UnitEvent) {
        let ended = |p: PilotId| self.pilot(p).is_some_and(|p| p.ended);
        let Some(u) = self.units.get(&e.unit) else {
            return;
        };
        if is_stale(e, u.bound, ended) {
            return;
        }
        if !u.state.can_transition_to(e.state) {
            return;
        }
        let replaying = self.replay.is_some();
        let Some(u) = self.units.get_mut(&e.unit) else {
            return;
        };
        let from = u.state;
        let bound_before = u.bound;
        let service = u.service;
        let spec = u.spec;
        u.state = e.state;
        let was_stealing = std::mem::take(&mut u.stealing);
        if let Some(lost) = &e.lost_run {
            u.extra().lost.push(lost.reason.clone());
        }
        if e.failed_run {
            // "exit code 1; see .../stderr": the file is the same for every run.
            let how = e.detail.as_deref().unwrap_or("failed");
            let how = how.split("; see ").next().unwrap_or(how);
            let how = match e.pilot {
                Some(p) => format!("{how} (on {p})"),
                None => how.to_owned(),
            };
            u.extra().failed_runs.push((how, e.exit_code));
        }
        // A cancel's own reason wins over the agent's plain "canceled" (but not over the
        // reason the manager's own decision already carries).
        let plain = e.detail.as_deref().is_none_or(|d| d == "canceled");
        let detail = match e.state {
            UnitState::Canceled if plain => u.cancel_reason().or_else(|| e.detail.clone()),
            _ => e.detail.clone(),
        };
        u.set_detail(detail);
        if e.state == UnitState::Scheduled {
            u.bound = e.pilot;
        }
        let ran_for = match e.state {
            UnitState::Running => {
                u.running_since = Some(e.at);
                u.ran = true;
                None
            }
            UnitState::Failed => Some(
                u.running_since
                    .map_or(Duration::ZERO, |since| e.at.since(since)),
            ),
            UnitState::New if e.failed_run => Some(
                u.running_since
                    .map_or(Duration::ZERO, |since| e.at.since(since)),
            ),
            _ => None,
        };
        if e.state.is_final() || e.state == UnitState::New {
            u.running_since = None;
        }
        let detail = u.detail().cloned();
        if let Some(s) = self.service_mut(service) {
            s.counts.moved(from, e.state);
            if was_stealing {
                s.stealing_cores = s.stealing_cores.saturating_sub(spec.cores);
            }
        }
        self.counts_changed.insert(service);

        if let (UnitState::Scheduled, Some(pilot)) = (e.state, e.pilot)
            && let Some(p) = self.pilot_mut(pilot)
            && (replaying || !p.ended)
            && p.in_flight.insert(e.unit)
        {
            // Rebuilding what a pilot holds from the history (a bind of this core's
            // own is recorded when it is decided).
            p.cores_bound += spec.cores;
            p.gpus_bound += spec.gpus;
        }
        if let Some(pilot) = e.pilot {
            // A failed run given back to be tried again counts as a failure here.
            let outcome = match e.failed_run {
                true => UnitState::Failed,
                false => e.state,
            };
            self.account(pilot, service, outcome, ran_for);
        }
        if e.state.is_final() || e.state == UnitState::New {
            self.release(e.unit, bound_before);
        }
        if e.state.is_final() {
            self.unit_ended(e.unit, e.state);
        }
        let mut forgotten = false;
        if !replaying {
            if e.state.is_final() {
                let forget = self.service(service).is_some_and(|s| s.forget_finished);
                if forget {
                    self.units.remove(&e.unit);
                    self.data.forget(e.unit);
                    if e.state != UnitState::Done {
                        self.data.ended_badly(e.unit, e.state);
                    }
                    forgotten = true;
                } else if let Some(u) = self.units.get_mut(&e.unit) {
                    // Only its detail is still of use.
                    let detail = u.detail().cloned();
                    u.extra = None;
                    u.set_detail(detail);
                }
            } else if e.state == UnitState::New
                && let Some(used_up) = self.units.get(&e.unit).map(|u| self.retries_used_up(u))
                && let Some(u) = self.units.get_mut(&e.unit)
            {
                match (u.cancel_reason(), used_up) {
                    (Some(reason), _) => {
                        self.decide(e.unit, None, UnitState::Canceled, reason);
                    }
                    (None, Some(end)) => self.publish(end),
                    (None, None) => {
                        // Back to the head of its pool (with the others back this round,
                        // oldest first): it was submitted before what waits there.
                        u.pooled = true;
                        let spec = u.spec;
                        let view = self.view_of(&spec);
                        self.data.pooled(e.unit, e.at);
                        self.returning.push((service, view));
                    }
                }
            }
        }
        self.out.applied.push(Applied {
            unit: e.unit,
            service,
            state: e.state,
            at: e.at,
            pilot: if e.state == UnitState::Scheduled {
                e.pilot
            } else {
                None
            },
            exit_code: e.exit_code,
            detail,
            forgotten,
            failed_run: e.failed_run,
            rerun: false,
        });
    }

    /// The unit no longer holds room on `pilot`.
    fn release(&mut self, unit: UnitId, pilot: Option<PilotId>) {
        let Some(cores_gpus) = self.units.get(&unit).map(|u| (u.spec.cores, u.spec.gpus)) else {
            return;
        };
        let Some(p) = pilot.and_then(|p| self.pilot_mut(p)) else {
            return;
        };
        if p.in_flight.remove(&unit) {
            p.cores_bound = p.cores_bound.saturating_sub(cores_gpus.0);
            p.gpus_bound = p.gpus_bound.saturating_sub(cores_gpus.1);
        }
    }

    /// Keeps the black-hole count of `pilot` (see `UnitPolicy::black_hole_failures`).
    fn account(
        &mut self,
        pilot: PilotId,
        service: ServiceId,
        state: UnitState,
        ran_for: Option<Duration>,
    ) {
        let policy = self
            .service(service)
            .map(|s| s.policy.clone())
            .unwrap_or_default();
        let Some(&me) = self.pilot_index.get(&pilot) else {
            return;
        };
        // A suspect (a streak of quick failures) is a black hole once another pilot has
        // shown that units can succeed; until then it gets no new units (see `views`).
        // Only two events can make that so: a pilot's first `Done` (every other suspect is
        // judged), or a quick failure on a pilot (it alone is).
        let to_judge: Vec<usize> = {
            let p = &mut self.pilots[me];
            match (state, ran_for) {
                (UnitState::Done, _) => {
                    p.done += 1;
                    p.quick_failures = 0;
                    if p.done > 1 {
                        return;
                    }
                    (0..self.pilots.len()).filter(|&i| i != me).collect()
                }
                (UnitState::Failed, Some(ran)) if ran < policy.black_hole_window => {
                    p.quick_failures += 1;
                    vec![me]
                }
                (UnitState::Failed, _) => {
                    p.quick_failures = 0;
                    return;
                }
                _ => return,
            }
        };
        if self.replay.is_some() || policy.black_hole_failures == 0 {
            return;
        }
        for i in to_judge {
            let p = &self.pilots[i];
            if p.quick_failures < policy.black_hole_failures || p.out || p.ended {
                continue;
            }
            if !self
                .pilots
                .iter()
                .enumerate()
                .any(|(j, other)| j != i && other.done > 0)
            {
                continue;
            }
            let id = p.spec.id;
            let reason = format!(
                "black hole: {} in a row failed within {} of starting here \
                 while other pilots ran units to done",
                pstar_model::plural(u64::from(p.quick_failures), "unit"),
                humantime::format_duration(policy.black_hole_window)
            );
            self.pilots[i].out = true;
            self.ask_withdraw(
                id,
                None,
                Purpose::Return("pilot taken out of rotation".into()),
            );
            self.out.fail_pilots.push((id, reason));
        }
    }

    /// What is still bound to an ended pilot goes back to the pool, or fails: asks for
    /// its queue first (what is still there was never claimed).
    pub(super) fn settle(&mut self, pilot: PilotId, state: PilotState, detail: Option<&str>) {
        let Some(p) = self.pilot_mut(pilot) else {
            return;
        };
        // From now on, reports from this pilot are stale (see `is_stale`): what it held is
        // settled here, by the manager.
        let left: Vec<UnitId> = {
            let mut left: Vec<UnitId> = p.in_flight.drain().collect();
            left.sort();
            left
        };
        p.cores_bound = 0;
        p.gpus_bound = 0;
        self.data.pilot_ended(pilot);
        let why = match detail {
            Some(d) => format!("{pilot} ended ({state}: {d})"),
            None => format!("{pilot} ended ({state})"),
        };
        self.ask_withdraw(pilot, None, Purpose::Settle { left, state, why });
    }

    /// The store's answer to the withdraws asked for, in order.
    pub(super) fn withdrawn(&mut self, answers: Vec<(PilotId, Vec<UnitId>)>) {
        let asked = std::mem::take(&mut self.asked);
        let mut answers = answers.into_iter();
        for (pilot, _, purpose) in asked {
            let taken: Vec<UnitId> = match answers.next() {
                Some((p, units)) if p == pilot => units,
                _ => Vec::new(),
            };
            match purpose {
                Purpose::Return(why) => {
                    for u in taken {
                        self.decide(u, Some(pilot), UnitState::New, format!("{why} ({pilot})"));
                    }
                }
                Purpose::Cancel { units, reason } => {
                    let taken: HashSet<UnitId> = taken.into_iter().collect();
                    for u in &units {
                        if taken.contains(u) {
                            let reason = self
                                .units
                                .get(u)
                                .and_then(UnitEntry::cancel_reason)
                                .unwrap_or_else(|| reason.clone());
                            self.decide(*u, Some(pilot), UnitState::Canceled, reason);
                        } else {
                            self.out.controls.push((pilot, Control::CancelUnit(*u)));
                        }
                    }
                }
                Purpose::Steal { units } => {
                    let taken: HashSet<UnitId> = taken.into_iter().collect();
                    let why = format!("taken back from {pilot} for a pilot with idle cores");
                    let mut claimed = Vec::new();
                    for u in units {
                        if taken.contains(&u) {
                            self.decide(u, Some(pilot), UnitState::New, why.clone());
                        } else {
                            claimed.push(u);
                        }
                    }
                    if !claimed.is_empty() {
                        self.out
                            .controls
                            .push((pilot, Control::ReturnUnits(claimed)));
                    }
                }
                Purpose::Settle { left, state, why } => {
                    let unclaimed: HashSet<UnitId> = taken.into_iter().collect();
                    self.settled(pilot, left, &unclaimed, state, &why);
                }
            }
        }
    }

    fn settled(
        &mut self,
        pilot: PilotId,
        left: Vec<UnitId>,
        unclaimed: &HashSet<UnitId>,
        state: PilotState,
        why: &str,
    ) {
        for u in left {
            let Some(unit) = self.units.get(&u) else {
                continue;
            };
            let early = unit.spec.pilot == Some(pilot);
            let claimed = !unclaimed.contains(&u);
            if early {
                self.decide(u, None, UnitState::Failed, why.to_owned());
            } else if state == PilotState::Failed && claimed {
                // The run (begun or about to begin) was lost with its pilot: that uses up
                // one attempt, counted when the event comes back (`apply_unit`).
                let of = self.policy_of(unit).max_attempts.max(1);
                let attempt = unit.lost().len() as u32 + 1;
                let (next, detail) = if attempt >= of {
                    let list: Vec<String> = unit
                        .lost()
                        .iter()
                        .map(String::as_str)
                        .chain(std::iter::once(why))
                        .enumerate()
                        .map(|(i, r)| format!("({}) {r}", i + 1))
                        .collect();
                    let detail = format!(
                        "gave up after {}: {}",
                        pstar_model::plural(u64::from(attempt), "attempt"),
                        list.join("; ")
                    );
                    (UnitState::Failed, detail)
                } else {
                    (
                        UnitState::New,
                        format!("{why}; attempt {attempt} of {of} lost"),
                    )
                };
                let mut e = unit_event(u, None, next, self.now, detail);
                if let Event::Unit(e) = &mut e {
                    e.lost_run = Some(LostRun {
                        attempt,
                        of,
                        reason: why.to_owned(),
                    });
                }
                self.publish(e);
            } else {
                self.decide(u, None, UnitState::New, why.to_owned());
            }
        }
        // With fewer pilots alive, some waiting units may now never fit.
        self.fail_what_never_fits(Some(pilot));
    }

    /// Fails the units in the pools that no live pilot can ever fit. After `ended` ended,
    /// only if that can have changed anything.
    pub(super) fn fail_what_never_fits(&mut self, ended: Option<PilotId>) {
        for i in 0..self.services.len() {
            let service = self.services[i].0;
            if self.services[i].1.pool.is_empty() {
                continue;
            }
            if let Some(gone) = ended
                && !self.could_change_fit(service, gone)
            {
                continue;
            }
            let views = self.views(service);
            let mut never = NeverFits::new(&views);
            let pool = std::mem::take(&mut self.services[i].1.pool);
            let mut kept = std::collections::VecDeque::with_capacity(pool.len());
            let mut failed = Vec::new();
            for v in pool {
                let Some(u) = self.units.get_mut(&v.id) else {
                    continue;
                };
                if !u.pooled {
                    continue;
                }
                match never.check(&v) {
                    Some(reason) => {
                        u.pooled = false;
                        failed.push((v.id, reason));
                    }
                    None => kept.push_back(v),
                }
            }
            self.services[i].1.pool = kept;
            for (u, reason) in failed {
                self.decide(u, None, UnitState::Failed, reason);
            }
        }
    }

    /// Whether `gone` ending can make a waiting unit of `service` never fit: not if
    /// another live pilot of the service has the same shape and no waiting unit names it.
    fn could_change_fit(&self, service: ServiceId, gone: PilotId) -> bool {
        let Some(g) = self.pilot(gone) else {
            return false;
        };
        if !g.services.contains(&service) {
            return false;
        }
        let shape = (g.spec.cores, g.spec.gpus, g.spec.walltime);
        let twin = self.pilots.iter().any(|p| {
            p.spec.id != gone
                && p.alive()
                && p.services.contains(&service)
                && (p.spec.cores, p.spec.gpus, p.spec.walltime) == shape
        });
        let named = self
            .service(service)
            .is_some_and(|s| s.pool.iter().any(|v| v.pilot == Some(gone)));
        !twin || named
    }

    /// Units that ended in one of `states` start over in `New` (`--rerun`): their runs,
    /// attempts and cancel are forgotten, the data units they make may be made again, and
    /// once caught up (or at once, if live) they wait for what they need like new units.
    fn rerun(&mut self, states: &[UnitState], at: Timestamp) {
        // Cancels asked for before the request are history: they ended what now runs
        // again (carried out once caught up, they would end it once more).
        self.deferred_cancels.clear();
        let mut ids: Vec<UnitId> = self
            .units
            .iter()
            .filter(|(_, u)| u.state.is_final() && states.contains(&u.state))
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        for id in ids {
            let Some(u) = self.units.get_mut(&id) else {
                continue;
            };
            let (from, service) = (u.state, u.service);
            u.state = UnitState::New;
            u.bound = None;
            u.pooled = false;
            u.running_since = None;
            u.ran = false;
            u.stealing = false;
            u.extra = None;
            if let Some(s) = self.service_mut(service) {
                s.counts.moved(from, UnitState::New);
            }
            self.counts_changed.insert(service);
            self.data.rerun(id);
            self.out.applied.push(Applied {
                unit: id,
                service,
                state: UnitState::New,
                at,
                pilot: None,
                exit_code: None,
                detail: Some("asked to run again".into()),
                forgotten: false,
                failed_run: false,
                rerun: true,
            });
            if self.replay.is_none()
                && !self.observer
                && self.ready_or_held(id)
                && let Some(u) = self.units.get_mut(&id)
            {
                u.pooled = true;
                let spec = u.spec;
                let view = self.view_of(&spec);
                self.data.pooled(id, at);
                self.returning.push((service, view));
            }
        }
    }

    /// The failure that ends a unit whose failed runs are more than its retries, if they
    /// are: it keeps the last run's exit code and names how each run failed.
    pub(super) fn retries_used_up(&self, u: &UnitEntry) -> Option<Event> {
        let runs = u
            .extra
            .as_ref()
            .map_or(&[][..], |x| x.failed_runs.as_slice());
        if runs.is_empty() || runs.len() <= u.spec.retries as usize {
            return None;
        }
        let list: Vec<String> = runs
            .iter()
            .enumerate()
            .map(|(i, (how, _))| format!("({}) {how}", i + 1))
            .collect();
        let detail = format!(
            "failed {}: {}",
            pstar_model::plural(runs.len() as u64, "time"),
            list.join("; ")
        );
        let mut end = unit_event(u.spec.id, None, UnitState::Failed, self.now, detail);
        if let Event::Unit(e) = &mut end {
            e.exit_code = runs.last().and_then(|(_, code)| *code);
        }
        Some(end)
    }

    /// Cancels units wherever they are: in the pool at once; in a live pilot's queue by
    /// withdrawing them; claimed by an agent through a control message; on their way back
    /// (or on a pilot that is gone) when they come back.
    pub(super) fn cancel(&mut self, ids: Vec<UnitId>, reason: &str) {
        let mut per_pilot: BTreeMap<PilotId, Vec<UnitId>> = BTreeMap::new();
        let mut in_pool = Vec::new();
        for id in ids {
            let Some(u) = self.units.get_mut(&id) else {
                continue;
            };
            if u.state.is_final() {
                continue;
            }
            // In the pool, or waiting outside it for what it needs: nowhere else to reach.
            if u.pooled || self.data.stop_waiting(id) {
                u.pooled = false;
                in_pool.push(id);
                continue;
            }
            // The first reason asked for is the one a unit keeps (a cancel of the whole
            // session also cancels its pilots, whose units then come back stranded).
            u.ask_cancel(reason);
            if let Some(pilot) = u.bound {
                per_pilot.entry(pilot).or_default().push(id);
            }
        }
        for id in in_pool {
            self.decide(id, None, UnitState::Canceled, reason.to_owned());
        }
        for (pilot, units) in per_pilot {
            let Some(p) = self.pilot(pilot) else { continue };
            let units: Vec<UnitId> = units
                .into_iter()
                .filter(|u| p.in_flight.contains(u))
                .collect();
            if units.is_empty() || p.ended || p.state.is_final() {
                continue;
            }
            self.ask_withdraw(
                pilot,
                Some(units.clone()),
                Purpose::Cancel {
                    units,
                    reason: reason.to_owned(),
                },
            );
        }
    }

    /// `pstar cancel` from another terminal: units, a pilot, or the whole session.
    fn cancel_from_outside(&mut self, target: CancelTarget, reason: &str) {
        match target {
            CancelTarget::Units(ids) => self.cancel(ids, reason),
            CancelTarget::Pilot(pilot) => {
                if self.pilot(pilot).is_some() {
                    self.out.cancel_pilots.push(pilot);
                }
            }
            CancelTarget::Session => {
                let ids = self.unfinished(None);
                self.cancel(ids, reason);
                let all: Vec<PilotId> = self.pilots.iter().map(|p| p.spec.id).collect();
                self.out.cancel_pilots.extend(all);
            }
        }
    }

    /// For an observer: the units a cancel targets keep its reason, as a manager's do (the
    /// first one wins), so an agent's plain "canceled" shows it; nothing is decided.
    fn note_cancel(&mut self, target: &CancelTarget, reason: &str) {
        let ids = match target {
            CancelTarget::Units(ids) => ids.clone(),
            CancelTarget::Session => self.unfinished(None),
            // Its units go back to the pool, not canceled.
            CancelTarget::Pilot(_) => return,
        };
        for id in ids {
            if let Some(u) = self.units.get_mut(&id)
                && !u.state.is_final()
            {
                u.ask_cancel(reason);
            }
        }
    }

    /// Cancels what is left of `service` because no pilot is left to run it, each with
    /// why: it never ran, or its run was cut short and no pilot was left to run it again.
    pub(super) fn cancel_stranded(&mut self, service: ServiceId) {
        let mut why: BTreeMap<String, Vec<UnitId>> = BTreeMap::new();
        for id in self.unfinished(Some(service)) {
            let Some(u) = self.units.get(&id) else {
                continue;
            };
            let reason = match (u.detail(), u.ran) {
                (Some(cut), true) => {
                    format!("no pilot was left to run it again after its run was cut short: {cut}")
                }
                (None, true) => {
                    "no pilot was left to run it again after its run was cut short".to_owned()
                }
                _ => "every pilot ended before this unit could run".to_owned(),
            };
            why.entry(reason).or_default().push(id);
        }
        for (reason, ids) in why {
            self.cancel(ids, &reason);
        }
    }

    /// The replay reached this core's own `Resumed` marker: the state is what the manager
    /// before left, and decisions start. Units back in `New` form the pools again (oldest
    /// first); what ended pilots still held is settled as it would have been.
    fn caught_up(&mut self) {
        self.replay = None;
        self.out.caught_up = true;
        let new: Vec<UnitId> = self
            .units
            .iter()
            .filter(|(_, u)| u.state.is_held())
            .map(|(id, _)| *id)
            .collect();
        let mut waiting: Vec<(ServiceId, super::UnitView)> = Vec::with_capacity(new.len());
        let now = self.now;
        for id in new {
            // A failed run that used up the unit's retries, when the manager before died
            // between the run's report and its decision.
            if let Some(e) = self.units.get(&id).and_then(|u| self.retries_used_up(u)) {
                self.publish(e);
                continue;
            }
            // A unit whose needs are not all met waits for them outside the pool.
            if !self.ready_or_held(id) {
                continue;
            }
            self.data.pooled(id, now);
            let Some(u) = self.units.get_mut(&id) else {
                continue;
            };
            u.pooled = true;
            let (service, spec) = (u.service, u.spec);
            waiting.push((service, self.view_of(&spec)));
        }
        waiting.sort_by_key(|(_, v)| v.id);
        for (_, s) in &mut self.services {
            s.pool.clear();
        }
        for (service, view) in waiting {
            if let Some(s) = self.service_mut(service) {
                s.pool.push_back(view);
            }
        }
        let ended: Vec<(PilotId, PilotState, Option<String>)> = self
            .pilots
            .iter()
            .filter(|p| p.ended && !p.in_flight.is_empty())
            .map(|p| (p.spec.id, p.state, p.detail.clone()))
            .collect();
        for (pilot, state, detail) in ended {
            self.settle(pilot, state, detail.as_deref());
        }
        let draining: Vec<PilotId> = self
            .pilots
            .iter()
            .filter(|p| p.draining && !p.ended)
            .map(|p| p.spec.id)
            .collect();
        for pilot in draining {
            self.ask_withdraw(
                pilot,
                None,
                Purpose::Return("pilot is draining before its walltime ends".into()),
            );
        }
        self.fail_what_never_fits(None);
        for (target, reason) in std::mem::take(&mut self.deferred_cancels) {
            self.cancel_from_outside(target, &reason);
        }
    }
}
