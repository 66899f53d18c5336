//! Pilot-Data in the core: which data units exist, where they are, which units wait for
//! them, and what placing a unit on a pilot costs in moved data.
//!
//! The core learns of data units in three ways, all before or on the event stream, so a
//! replay rebuilds the same book:
//! * [`Input::DeclareData`](super::Input::DeclareData): the application's data units, by
//!   name, before units that read them are submitted;
//! * [`Input::UnitData`](super::Input::UnitData): what each unit reads and makes (a unit's
//!   outputs are declared with it);
//! * [`Event::Data`](pstar_coordination::Event::Data): a data unit is available in a
//!   store or a pilot's cache, or failed.
//!
//! A unit whose inputs are not all available waits outside the pool (state `New`). When
//! its last missing input becomes available it joins the pool; when one of them fails,
//! the unit fails naming it. When a unit ends in any way but `Done`, the data units it
//! was to make fail, and with them the units waiting for them.

use std::collections::HashMap;
use std::time::Duration;

use pstar_coordination::{DataEvent, Event};
use pstar_model::{Affinity, DataUnitState, PilotId, State, Timestamp, UnitId, UnitState};

use super::Core;
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
    /// Units waiting outside the pool: how many of their inputs are not available yet.
    missing: HashMap<UnitId, usize>,
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

    pub(super) fn unit_data(
        &mut self,
        unit: UnitId,
        inputs: Box<[String]>,
        outputs: Box<[String]>,
    ) {
        for name in outputs.iter() {
            self.data.entry(name.clone()).or_default().producer = Some(unit);
        }
        if !inputs.is_empty() {
            self.inputs.insert(unit, inputs);
        }
        if !outputs.is_empty() {
            self.outputs.insert(unit, outputs);
        }
    }

    pub(super) fn add_store(&mut self, name: String, affinity: Affinity) {
        self.stores.insert(name, affinity);
    }

    pub(super) fn add_site(&mut self, pilot: PilotId, affinity: Affinity) {
        self.sites.insert(pilot, affinity);
    }

    /// Whether no unit reads or makes data (the book costs nothing then).
    pub(super) fn is_empty(&self) -> bool {
        self.inputs.is_empty() && self.outputs.is_empty()
    }

    /// Whether `unit` reads input data.
    pub(super) fn reads(&self, unit: UnitId) -> bool {
        self.inputs.contains_key(&unit)
    }

    /// What `unit` still waits for: `Ok(true)` when all its inputs are available, and
    /// registers it as a waiter of the others; `Err` names a failed input.
    pub(super) fn wait_for_inputs(&mut self, unit: UnitId) -> Result<bool, String> {
        let Some(inputs) = self.inputs.get(&unit) else {
            return Ok(true);
        };
        let mut missing = 0;
        for name in inputs.iter() {
            let d = self.data.entry(name.clone()).or_default();
            if d.state == Some(DataUnitState::Failed) {
                return Err(failed_input(name, d));
            }
            if !d.available() {
                missing += 1;
            }
        }
        if missing == 0 {
            return Ok(true);
        }
        for name in inputs.iter() {
            if let Some(d) = self.data.get_mut(name)
                && !d.available()
            {
                d.waiters.push(unit);
            }
        }
        self.missing.insert(unit, missing);
        Ok(false)
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
                    let Some(left) = self.data.missing.get_mut(&unit) else {
                        continue;
                    };
                    *left = left.saturating_sub(1);
                    if *left == 0 {
                        self.data.missing.remove(&unit);
                        self.join_pool(unit);
                    }
                }
            }
            DataUnitState::Failed => {
                let why = failed_input(&e.name, d);
                let waiters = std::mem::take(&mut d.waiters);
                if self.replay.is_none() {
                    for unit in waiters {
                        if self.data.missing.remove(&unit).is_some()
                            && self
                                .units
                                .get(&unit)
                                .is_some_and(|u| u.state == UnitState::New)
                        {
                            self.decide(unit, None, UnitState::Failed, why.clone());
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
        if u.state != UnitState::New || u.pooled {
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

    /// A unit ended: if not `Done`, the data units it was to make fail.
    pub(super) fn unit_ended(&mut self, unit: UnitId, state: UnitState) {
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
