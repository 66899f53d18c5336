//! Work stealing: units bound to a pilot that cannot start them soon go to a pilot whose
//! cores idle.
//!
//! Late binding gives a pilot its units before it needs them (the prefetch), and its
//! agent claims ahead too, so that short units flow without a round trip each. The price
//! shows at the end of a workload, or when a big pilot comes up after a small one: the
//! small one holds units it will run one after the other while the big one has nothing.
//! When a service's pool is empty and one of its pilots has idle cores, the core takes
//! back units that wait on another of its pilots (more bound there than it has cores):
//! still queued, they are withdrawn; claimed and waiting for cores, their agent is asked
//! to give them back (`Control::ReturnUnits`); either way they come back to the pool as
//! `New` and are bound again, where there is room. A unit that has started is never
//! taken back, and a unit asked back is not asked again until its state changes.

use std::time::Duration;

use pstar_model::{PilotId, UnitId, UnitState};

use super::{Core, Purpose};

impl Core {
    pub(super) fn steal(&mut self) {
        for i in 0..self.services.len() {
            let service = self.services[i].0;
            if !self.pool_is_empty(i) {
                continue;
            }
            // Pilots the scheduler would give units to now, with idle cores: their idle
            // cores, GPUs and walltime left (the scheduler's own view, so a unit taken
            // for one is bound there, not back where it came from).
            let mut idle: Vec<(u32, u32, Option<Duration>)> = self
                .views(service)
                .into_iter()
                .filter(|v| v.accepting && v.idle_cores > 0)
                .map(|v| (v.idle_cores, v.free_gpus, v.remaining))
                .collect();
            if idle.is_empty() {
                continue;
            }
            idle.sort_unstable_by_key(|s| std::cmp::Reverse(s.0));
            // What was asked back already and is on its way takes that room.
            let mut promised = self.services[i].1.stealing_cores;
            for slot in &mut idle {
                let used = slot.0.min(promised);
                slot.0 -= used;
                promised -= used;
            }
            if idle.iter().all(|s| s.0 == 0) {
                continue;
            }
            // Donors: pilots with more bound than their cores (units wait there). A unit
            // is taken only for an idle pilot it fits (cores, GPUs, walltime left), so it
            // cannot bounce back to where it came from.
            let mut taken: Vec<(PilotId, Vec<UnitId>)> = Vec::new();
            for p in &self.pilots {
                if idle.iter().all(|s| s.0 == 0) {
                    break;
                }
                if !p.services.contains(&service) || p.ended || p.cores_bound <= p.spec.cores {
                    continue;
                }
                let mut excess = p.cores_bound - p.spec.cores;
                // The last bound first: they would wait longest.
                let mut candidates: Vec<UnitId> = p
                    .in_flight
                    .iter()
                    .copied()
                    .filter(|u| {
                        self.units.get(u).is_some_and(|u| {
                            u.service == service
                                && !u.stealing
                                && u.spec.pilot.is_none()
                                && matches!(u.state, UnitState::Scheduled | UnitState::Pending)
                        })
                    })
                    .collect();
                candidates.sort_unstable_by(|a, b| b.cmp(a));
                let mut mine = Vec::new();
                for id in candidates {
                    let Some(u) = self.units.get(&id) else {
                        continue;
                    };
                    let (cores, gpus, time) = (u.spec.cores, u.spec.gpus, u.spec.time_request);
                    if cores > excess {
                        continue;
                    }
                    let home = idle.iter_mut().find(|(c, g, left)| {
                        cores <= *c
                            && gpus <= *g
                            && time.is_none_or(|t| left.is_none_or(|l| t <= l))
                    });
                    let Some(home) = home else { continue };
                    home.0 -= cores;
                    home.1 -= gpus;
                    excess -= cores;
                    mine.push(id);
                    if excess == 0 || idle.iter().all(|s| s.0 == 0) {
                        break;
                    }
                }
                if !mine.is_empty() {
                    taken.push((p.spec.id, mine));
                }
            }
            for (pilot, units) in taken {
                let mut cores = 0;
                for u in &units {
                    if let Some(u) = self.units.get_mut(u) {
                        u.stealing = true;
                        cores += u.spec.cores;
                    }
                }
                self.services[i].1.stealing_cores += cores;
                self.ask_withdraw(pilot, Some(units.clone()), Purpose::Steal { units });
            }
        }
    }

    /// Whether service `i`'s pool holds no unit (its entries may be stale).
    fn pool_is_empty(&self, i: usize) -> bool {
        let pool = &self.services[i].1.pool;
        // A long pool is taken as holding units without looking through it.
        pool.len() < 64
            && pool
                .iter()
                .all(|v| self.units.get(&v.id).is_none_or(|u| !u.pooled))
    }
}
