//! What a session's data units are and what moved: folded from the event stream's
//! [`DataEvent`]s by the session's dispatcher, for reports and `pstar status`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use pstar_coordination::{DataEvent, Transfer};
use pstar_model::{DataUnitState, PilotId, State, UnitId};

/// One data unit as the stream tells it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataUnitEntry {
    /// Its state (`None`: only named so far).
    pub state: Option<DataUnitState>,
    /// Its bytes, once known.
    pub size: u64,
    /// Pilot stores that hold it.
    pub stores: BTreeSet<String>,
    /// Pilots whose cache holds it.
    pub pilots: BTreeSet<PilotId>,
    /// Why it failed.
    pub detail: Option<String>,
}

/// A session's data units and the bytes that moved.
#[derive(Debug, Clone, Default)]
pub struct DataLedger {
    /// Every data unit, by name.
    pub units: BTreeMap<String, DataUnitEntry>,
    /// Every byte that crossed between stores, pilots and the client.
    pub moved: u64,
    /// Those bytes by where they came from (a store, `pilot.NNNN`, `client`).
    pub moved_from: BTreeMap<String, u64>,
    /// Those bytes by where they went (a store, `pilot.NNNN`, `export`).
    pub moved_to: BTreeMap<String, u64>,
    /// Bytes staged in and out for each unit that read or made data.
    pub by_unit: HashMap<UnitId, (u64, u64)>,
    /// Bytes copied out to local directories (`DataUnit::export`), by where they came
    /// from; not in `moved`.
    pub exported_from: BTreeMap<String, u64>,
}

impl DataLedger {
    /// Folds in one event.
    pub fn note(&mut self, e: &DataEvent) {
        let d = self.units.entry(e.name.clone()).or_default();
        let from = d.state.unwrap_or(DataUnitState::New);
        if from.can_transition_to(e.state) || d.state.is_none() {
            d.state = Some(e.state);
        }
        if e.size > 0 {
            d.size = e.size;
        }
        if e.state == DataUnitState::Running {
            if let Some(s) = &e.store {
                d.stores.insert(s.clone());
            }
            if let Some(p) = e.pilot {
                d.pilots.insert(p);
            }
        }
        if e.state == DataUnitState::Failed && e.detail.is_some() {
            d.detail = e.detail.clone();
        }
        if e.transfer == Some(Transfer::Export) {
            let from = e.from.clone().unwrap_or_else(|| "unknown".into());
            *self.exported_from.entry(from).or_default() += e.moved;
            return;
        }
        if e.moved > 0 {
            self.moved += e.moved;
            let from = e.from.clone().unwrap_or_else(|| "unknown".into());
            *self.moved_from.entry(from).or_default() += e.moved;
            let to = match (e.transfer, &e.store, e.pilot) {
                (Some(Transfer::StageIn), _, Some(p)) => p.to_string(),
                (_, Some(s), _) => s.clone(),
                (_, None, Some(p)) => p.to_string(),
                _ => "unknown".to_owned(),
            };
            *self.moved_to.entry(to).or_default() += e.moved;
            if let Some(u) = e.unit {
                let entry = self.by_unit.entry(u).or_default();
                match e.transfer {
                    Some(Transfer::StageOut) => entry.1 += e.moved,
                    _ => entry.0 += e.moved,
                }
            }
        }
    }
}
