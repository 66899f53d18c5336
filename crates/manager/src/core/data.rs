//! Pilot-Data in the core: which data units exist, where they are, which units wait for
//! them, and what placing a unit on a pilot costs in moved data.
//!
//! The core learns of data units in three ways, all before or on the event stream, so a
//! replay rebuilds the same book:
//! * [`Input::DeclareData`](super::Input::DeclareData): the application's data units, by
//!   name, before units that read them are submitted;
//! * [`Input::UnitNeeds`](super::Input::UnitNeeds): what each unit reads and makes (a unit's
//!   outputs are declared with it);
//! * [`Event::Data`](pstar_coordination::Event::Data): a data unit is available in a
//!   store or a pilot's cache, or failed.
//!
//! Dependencies between units are the same mechanism: a unit that runs `after` others
//! waits for each of their ends as it waits for each missing input.
//!
//! A unit whose needs are not all met waits outside the pool (state `New`). When the last
//! of them is met it joins the pool. When a unit it runs after ends in any way but
//! `Done`, it is canceled naming that unit (unless it runs anyway); when an input data
//! unit fails, it fails naming it, or is canceled if the data unit failed because the
//! unit making it did not end `Done`. When a unit ends in any way but `Done`, the data
//! units it was to make fail, and with them the units waiting for them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use pstar_coordination::{DataEvent, Event};
use pstar_model::{Affinity, DataUnitState, PilotId, State, Timestamp, UnitId, UnitState};

use super::{Core, UnitNeeds};
use crate::placement::{DataSite, Site, transfer_cost};
use crate::scheduler::{PilotView, Placement};

/// One data unit, as the core knows it.
#[derive(Debug, Default)]
pub(super) struct DataEntry {
    state: Option<DataUnitState>,
    size: u64,
    /// Labels of the stores that hold it.
    stores: Vec<(String, Affinity)>,
    /// Pilots whose cache holds it, or will once what is bound there is staged.
    cached: Vec<PilotId>,
    /// The unit that makes it.
    producer: Option<UnitId>,
    /// Units waiting for it.
    waiters: Vec<UnitId>,
    detail: Option<String>,
}

impl DataEntry {
    fn available(&self) -> bool {
        self.state == Some(DataUnitState::Running)
    }
}

/// The core's book of data units.
#[derive(Debug, Default)]
pub(super) struct DataBook {
    data: HashMap<String, DataEntry>,
    /// What each unit reads.
    inputs: HashMap<UnitId, Box<[String]>>,
    /// What each unit makes.
    outputs: HashMap<UnitId, Box<[String]>>,
    /// Units waiting outside the pool: how many of their inputs are not available yet
    /// and how many of the units they run after have not ended.
    missing: HashMap<UnitId, usize>,
    /// What each unit runs after.
    after: HashMap<UnitId, Box<[UnitId]>>,
    /// Units that run even when one they run after did not end `Done`.
    run_anyway: HashSet<UnitId>,
    /// Units waiting for each unit's end.
    dependents: HashMap<UnitId, Vec<UnitId>>,
    /// Units forgotten after ending other than `Done`, and how they ended: a unit
    /// submitted later that runs after one of them is canceled. (A unit that runs after
    /// one the core does not hold runs after a unit forgotten once `Done`.)
    ended_badly: HashMap<UnitId, UnitState>,
    /// When each unit that reads data joined its pool (for `locality_wait`).
    pooled_at: HashMap<UnitId, Timestamp>,
    /// Pilots' labels.
    sites: HashMap<PilotId, Affinity>,
    /// Pilot stores' labels.
    stores: HashMap<String, Affinity>,
}

impl DataBook {
    /// Data units are known to this session.
    pub(super) fn declare(&mut self, names: Vec<String>) {
        for name in names {
            self.data.entry(name).or_default();
        }
    }

    pub(super) fn unit_needs(&mut self, needs: UnitNeeds) {
        let UnitNeeds {
            unit,
            inputs,
            outputs,
            after,
            run_anyway,
        } = needs;
        for name in outputs.iter() {
            self.data.entry(name.clone()).or_default().producer = Some(unit);
        }
        if !inputs.is_empty() {
            self.inputs.insert(unit, inputs);
        }
        if !outputs.is_empty() {
            self.outputs.insert(unit, outputs);
        }
        if !after.is_empty() {
            self.after.insert(unit, after);
        }
        if run_anyway {
            self.run_anyway.insert(unit);
        }
    }

    /// A unit runs again (`--rerun`): the data units it makes that failed may be made
    /// again, and it is no longer one that ended badly.
    pub(super) fn rerun(&mut self, unit: UnitId) {
        self.ended_badly.remove(&unit);
        if let Some(outputs) = self.outputs.get(&unit) {
            for name in outputs.iter() {
                if let Some(d) = self.data.get_mut(name)
                    && d.state == Some(DataUnitState::Failed)
                {
                    d.state = None;
                    d.detail = None;
                }
            }
        }
    }

    /// A unit waiting outside the pool stops waiting (it is canceled): whether it was.
    pub(super) fn stop_waiting(&mut self, unit: UnitId) -> bool {
        self.missing.remove(&unit).is_some()
    }

    /// A unit ended other than `Done` and is forgotten.
    pub(super) fn ended_badly(&mut self, unit: UnitId, state: UnitState) {
        self.ended_badly.insert(unit, state);
    }

    pub(super) fn add_store(&mut self, name: String, affinity: Affinity) {
        self.stores.insert(name, affinity);
    }

    pub(super) fn add_site(&mut self, pilot: PilotId, affinity: Affinity) {
        self.sites.insert(pilot, affinity);
    }

    /// Whether no unit reads or makes data or runs after another (the book costs nothing
    /// then).
    pub(super) fn is_empty(&self) -> bool {
        self.inputs.is_empty() && self.outputs.is_empty() && self.after.is_empty()
    }

    /// Whether `unit` reads input data.
    pub(super) fn reads(&self, unit: UnitId) -> bool {
        self.inputs.contains_key(&unit)
    }

    /// A unit that read data was bound to `pilot`: its inputs will be in that pilot's
    /// cache, so units that read them too prefer that pilot.
    pub(super) fn bound(&mut self, unit: UnitId, pilot: PilotId) {
        self.pooled_at.remove(&unit);
        let Some(inputs) = self.inputs.get(&unit) else {
            return;
        };
        for name in inputs.iter() {
            if let Some(d) = self.data.get_mut(name)
                && !d.cached.contains(&pilot)
            {
                d.cached.push(pilot);
            }
        }
    }

    /// A pilot ended: its cache is no longer a place to run next to.
    pub(super) fn pilot_ended(&mut self, pilot: PilotId) {
        for d in self.data.values_mut() {
            d.cached.retain(|p| *p != pilot);
        }
    }

    pub(super) fn pooled(&mut self, unit: UnitId, at: Timestamp) {
        if self.inputs.contains_key(&unit) {
            self.pooled_at.entry(unit).or_insert(at);
        }
    }

    pub(super) fn forget(&mut self, unit: UnitId) {
        self.after.remove(&unit);
        self.run_anyway.remove(&unit);
        self.dependents.remove(&unit);
        self.inputs.remove(&unit);
        self.outputs.remove(&unit);
        self.missing.remove(&unit);
        self.pooled_at.remove(&unit);
    }

    /// The data units `unit` makes that are not available (to fail when it ends badly).
    fn unmade(&self, unit: UnitId) -> Vec<String> {
        self.outputs.get(&unit).map_or_else(Vec::new, |outs| {
            outs.iter()
                .filter(|n| {
                    self.data
                        .get(*n)
                        .is_none_or(|d| !d.available() && d.state != Some(DataUnitState::Failed))
                })
                .cloned()
                .collect()
        })
    }
}

/// Whether a unit waits for what it needs.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Wait {
    /// It has all it needs: it joins the pool.
    Ready,
    /// It waits outside the pool, for what this says.
    Waiting(String),
    /// It fails, for this reason (an input data unit failed).
    Fail(String),
    /// It is canceled, for this reason (a unit it depends on did not end `Done`).
    Cancel(String),
}

fn dependency_ended(dep: UnitId, state: UnitState) -> String {
    format!("{dep}, which it runs after, ended {state}")
}

fn failed_input(name: &str, d: &DataEntry) -> String {
    match &d.detail {
        Some(why) => format!("input data unit {name} failed: {why}"),
        None => format!("input data unit {name} failed"),
    }
}

/// Placement over the book: a unit's cost on a pilot is [`transfer_cost`] of its inputs.
pub(super) struct Placed<'a> {
    pub book: &'a DataBook,
    pub now: Timestamp,
    pub wait: Duration,
}

impl Placement for Placed<'_> {
    fn cost(&mut self, unit: UnitId, pilot: &PilotView) -> u64 {
        let Some(inputs) = self.book.inputs.get(&unit) else {
            return 0;
        };
        let none = Affinity::default();
        let site = Site {
            pilot: pilot.id,
            affinity: self.book.sites.get(&pilot.id).unwrap_or(&none),
        };
        let mut cost = 0u64;
        for name in inputs.iter() {
            let Some(d) = self.book.data.get(name) else {
                continue;
            };
            let cached: Vec<(PilotId, &Affinity)> = d
                .cached
                .iter()
                .map(|p| (*p, self.book.sites.get(p).unwrap_or(&none)))
                .collect();
            let stores: Vec<&Affinity> = d.stores.iter().map(|(_, a)| a).collect();
            let site_of_data = DataSite {
                size: d.size,
                cached_at: &cached,
                stores: &stores,
            };
            cost = cost.saturating_add(transfer_cost(&site, [&site_of_data]));
        }
        cost
    }

    fn may_wait(&mut self, unit: UnitId) -> bool {
        self.book
            .pooled_at
            .get(&unit)
            .is_some_and(|since| self.now.since(*since) < self.wait)
    }
}

impl Core {
    /// How `unit` ended, if it has (a unit the core no longer holds ended `Done`, unless
    /// the book says otherwise).
    fn end_of(&self, unit: UnitId) -> Option<UnitState> {
        match self.units.get(&unit) {
            Some(u) => u.state.is_final().then_some(u.state),
            None => Some(
                self.data
                    .ended_badly
                    .get(&unit)
                    .copied()
                    .unwrap_or(UnitState::Done),
            ),
        }
    }

    /// Whether a failed data unit failed because the unit making it did not end `Done`.
    fn producer_ended_badly(&self, d: &DataEntry) -> bool {
        d.producer
            .and_then(|p| self.end_of(p))
            .is_some_and(|s| s != UnitState::Done)
    }

    /// What `unit` still waits for; registers it as a waiter of each need not met.
    pub(super) fn wait_for_needs(&mut self, unit: UnitId) -> Wait {
        let mut missing = 0;
        if let Some(inputs) = self.data.inputs.get(&unit) {
            for name in inputs.iter() {
                match self.data.data.get(name) {
                    Some(d) if d.state == Some(DataUnitState::Failed) => {
                        let why = failed_input(name, d);
                        return match self.producer_ended_badly(d) {
                            true => Wait::Cancel(why),
                            false => Wait::Fail(why),
                        };
                    }
                    Some(d) if d.available() => {}
                    _ => missing += 1,
                }
            }
        }
        let run_anyway = self.data.run_anyway.contains(&unit);
        let mut running = Vec::new();
        if let Some(after) = self.data.after.get(&unit) {
            for dep in after.iter() {
                match self.end_of(*dep) {
                    None => running.push(*dep),
                    Some(UnitState::Done) => {}
                    Some(_) if run_anyway => {}
                    Some(state) => return Wait::Cancel(dependency_ended(*dep, state)),
                }
            }
        }
        if missing == 0 && running.is_empty() {
            return Wait::Ready;
        }
        if let Some(inputs) = self.data.inputs.get(&unit) {
            for name in inputs.iter() {
                let d = self.data.data.entry(name.clone()).or_default();
                if !d.available() {
                    d.waiters.push(unit);
                }
            }
        }
        for dep in &running {
            self.data.dependents.entry(*dep).or_default().push(unit);
        }
        self.data.missing.insert(unit, missing + running.len());
        let mut what = Vec::new();
        if let Some(first) = running.first() {
            what.push(match running.len() {
                1 => format!("{first}"),
                n => format!("{first} and {} more units", n - 1),
            });
        }
        if missing > 0 {
            what.push(pstar_model::plural(missing as u64, "input data unit"));
        }
        Wait::Waiting(format!("waits for {}", what.join(" and ")))
    }

    /// Whether `unit` may join the pool now; if not, publishes what it comes to: waiting
    /// (unless it already is), failed or canceled.
    pub(super) fn ready_or_held(&mut self, unit: UnitId) -> bool {
        match self.wait_for_needs(unit) {
            Wait::Ready => return true,
            Wait::Waiting(what) => {
                if self
                    .units
                    .get(&unit)
                    .is_some_and(|u| u.state == UnitState::New)
                {
                    self.decide(unit, None, UnitState::Waiting, what);
                }
            }
            Wait::Fail(reason) => self.decide(unit, None, UnitState::Failed, reason),
            Wait::Cancel(reason) => self.decide(unit, None, UnitState::Canceled, reason),
        }
        false
    }

    /// One need of a waiting unit is met: it joins the pool once it has all.
    fn need_met(&mut self, unit: UnitId) {
        let Some(left) = self.data.missing.get_mut(&unit) else {
            return;
        };
        *left = left.saturating_sub(1);
        if *left == 0 {
            self.data.missing.remove(&unit);
            self.join_pool(unit);
        }
    }

    /// A data unit changed (an event on the stream).
    pub(super) fn apply_data(&mut self, e: &DataEvent) {
        let d = self.data.data.entry(e.name.clone()).or_default();
        let from = d.state.unwrap_or(DataUnitState::New);
        if e.size > 0 {
            d.size = e.size;
        }
        if let Some(p) = e.pilot
            && e.state == DataUnitState::Running
            && !d.cached.contains(&p)
        {
            d.cached.push(p);
        }
        if let Some(store) = &e.store
            && e.state == DataUnitState::Running
            && !d.stores.iter().any(|(s, _)| s == store)
        {
            let labels = self.data.stores.get(store).cloned().unwrap_or_default();
            let d = self.data.data.get_mut(&e.name).expect("entered above");
            d.stores.push((store.clone(), labels));
        }
        let d = self.data.data.get_mut(&e.name).expect("entered above");
        if from != e.state && from.can_transition_to(e.state) {
            d.state = Some(e.state);
            if e.state == DataUnitState::Failed {
                d.detail = e.detail.clone();
            }
        } else if from == e.state {
            d.state = Some(from);
        } else {
            return;
        }
        match e.state {
            DataUnitState::Running => {
                let waiters = std::mem::take(&mut d.waiters);
                for unit in waiters {
                    self.need_met(unit);
                }
            }
            DataUnitState::Failed => {
                let why = failed_input(&e.name, d);
                let waiters = std::mem::take(&mut d.waiters);
                let d = self.data.data.get(&e.name).expect("entered above");
                let outcome = match self.producer_ended_badly(d) {
                    true => UnitState::Canceled,
                    false => UnitState::Failed,
                };
                if self.replay.is_none() {
                    for unit in waiters {
                        if self.data.missing.remove(&unit).is_some()
                            && self.units.get(&unit).is_some_and(|u| u.state.is_held())
                        {
                            self.decide(unit, None, outcome, why.clone());
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// A unit waiting for its inputs has them all: it joins its service's pool.
    fn join_pool(&mut self, unit: UnitId) {
        let now = self.now;
        let Some(u) = self.units.get_mut(&unit) else {
            return;
        };
        if !u.state.is_held() || u.pooled {
            return;
        }
        u.pooled = true;
        let (service, spec) = (u.service, u.spec);
        let view = self.view_of(&spec);
        self.data.pooled(unit, now);
        if let Some(s) = self.service_mut(service) {
            s.pool.push_back(view);
        }
    }

    /// A unit ended: the units waiting for its end have one need fewer, or are canceled;
    /// if it did not end `Done`, the data units it was to make fail.
    pub(super) fn unit_ended(&mut self, unit: UnitId, state: UnitState) {
        if self.replay.is_none()
            && let Some(dependents) = self.data.dependents.remove(&unit)
        {
            for d in dependents {
                if state == UnitState::Done || self.data.run_anyway.contains(&d) {
                    self.need_met(d);
                } else if self.data.missing.remove(&d).is_some()
                    && self.units.get(&d).is_some_and(|u| u.state.is_held())
                {
                    self.decide(d, None, UnitState::Canceled, dependency_ended(unit, state));
                }
            }
        }
        if state != UnitState::Done && self.replay.is_none() {
            let at = self.now;
            for name in self.data.unmade(unit) {
                self.publish(Event::Data(DataEvent {
                    at,
                    detail: Some(format!("{unit}, which makes it, ended {state}")),
                    unit: Some(unit),
                    ..DataEvent::new(name, DataUnitState::Failed)
                }));
            }
        }
    }
}
