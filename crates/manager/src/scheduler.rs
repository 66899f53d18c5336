//! Binding scheduling units to pilots: a pure function over the pool and the pilots.
//!
//! [`schedule`] takes the pool (units bound to no pilot yet, oldest first) and a view of
//! each pilot, and decides which units to bind where now, and which can never run. It does
//! no I/O and keeps no state, so it is tested alone and can be swapped for a load- or
//! affinity-aware policy without touching the manager.
//!
//! # The default policy: FIFO late binding with head-of-line reservation
//!
//! * A unit is bound only to a pilot that is running, accepts work and has room for it
//!   now (late binding). A pilot's room is its slots plus a small prefetch (so its agent has
//!   the next unit at hand when one ends), minus what is already bound to it.
//! * Units are considered oldest first. Among the pilots with room, one with idle cores
//!   (nothing bound to them) comes first, then the one with the most room, so idle cores
//!   fill before units queue anywhere, and bigger or less loaded pilots take more.
//! * A unit that names a pilot (early binding) goes only to that pilot.
//! * A unit that fits nowhere *now* but fits some pilot once it drains **reserves** that
//!   pilot: no younger unit is bound to it until the reserving unit is. The agent runs its
//!   units strictly in order too. Together, a stream of one-core units can never starve a
//!   multi-core unit; the price is that cores may idle while a pilot drains for it (there
//!   is no backfilling without runtime estimates).
//! * A unit needing more cores or GPUs than any live pilot of the service has fails at
//!   once, as does an early-bound unit whose pilot has ended. With no live pilot at all,
//!   units wait: a pilot may still be added.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use pstar_model::{PilotId, UnitId};

/// What the scheduler knows of one pilot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PilotView {
    /// Which pilot.
    pub id: PilotId,
    /// Running, not draining, not removed from the service: may receive units now.
    pub accepting: bool,
    /// Not in a final state (a pending pilot is alive but not accepting).
    pub alive: bool,
    /// The pilot's cores.
    pub cores: u32,
    /// The pilot's GPUs.
    pub gpus: u32,
    /// Room left for more units (slots plus prefetch, minus what is bound to it).
    pub free_cores: u32,
    /// Cores with nothing bound to them (its cores minus what is bound, or 0): a pilot
    /// with idle cores gets units before one that would only queue them.
    pub idle_cores: u32,
    /// GPU room left, likewise.
    pub free_gpus: u32,
    /// Its whole walltime.
    pub walltime: Duration,
    /// Walltime left, once it runs (`None`: not running yet, all of it is left).
    pub remaining: Option<Duration>,
}

/// What the scheduler knows of one unit in the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitView {
    /// Which unit.
    pub id: UnitId,
    /// Cores it needs.
    pub cores: u32,
    /// GPUs it needs.
    pub gpus: u32,
    /// Early binding: the pilot the unit must run on.
    pub pilot: Option<PilotId>,
    /// How long it is expected to run (its `time_request`).
    pub time: Option<Duration>,
    /// It reads input data: where it runs is also a question of where its data is
    /// ([`Placement`]).
    pub data: bool,
}

/// The data-aware part of choosing a pilot, for units that read input data
/// ([`UnitView::data`]); the core implements it over [`crate::placement`].
pub trait Placement {
    /// What binding `unit` to `pilot` costs in moved data (0: all of it is there).
    fn cost(&mut self, unit: UnitId, pilot: &PilotView) -> u64;
    /// Whether `unit` may still wait for a pilot of lower cost that has no room now.
    fn may_wait(&mut self, unit: UnitId) -> bool;
}

/// Placement for pools without input data: every pilot costs the same.
pub struct Anywhere;

impl Placement for Anywhere {
    fn cost(&mut self, _: UnitId, _: &PilotView) -> u64 {
        0
    }
    fn may_wait(&mut self, _: UnitId) -> bool {
        false
    }
}

/// One decision of the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Bind the unit to the pilot (it leaves the pool).
    #[allow(missing_docs)]
    Bind { unit: UnitId, pilot: PilotId },
    /// The unit can never run; the reason says why (it leaves the pool).
    #[allow(missing_docs)]
    Fail { unit: UnitId, reason: String },
}

fn fits_ever(p: &PilotView, u: &UnitView) -> bool {
    u.cores <= p.cores && u.gpus <= p.gpus && u.time.is_none_or(|t| t <= p.walltime)
}

/// Fits the walltime the pilot has left.
fn in_time(p: &PilotView, u: &UnitView) -> bool {
    u.time
        .is_none_or(|t| t <= p.remaining.unwrap_or(p.walltime))
}

fn fits_now(p: &PilotView, u: &UnitView) -> bool {
    fits_ever(p, u) && u.cores <= p.free_cores && u.gpus <= p.free_gpus && in_time(p, u)
}

fn plural(n: u32, what: &str) -> String {
    pstar_model::plural(u64::from(n), what)
}

fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Why `unit` can never run on these pilots, if that is so.
pub fn never_fits(unit: &UnitView, pilots: &[PilotView]) -> Option<String> {
    NeverFits::new(pilots).check(unit)
}

/// [`never_fits`] for many units over the same pilots: the pilots are looked at once,
/// and units of the same shape share the answer, so checking a unit does not cost a pass
/// over every pilot.
pub struct NeverFits {
    pilots: Vec<PilotView>,
    by_id: HashMap<PilotId, usize>,
    alive: Vec<usize>,
    answers: HashMap<(u32, u32, Option<Duration>), Option<String>>,
}

impl NeverFits {
    /// Looks at `pilots` once.
    pub fn new(pilots: &[PilotView]) -> Self {
        Self {
            pilots: pilots.to_vec(),
            by_id: pilots.iter().enumerate().map(|(i, p)| (p.id, i)).collect(),
            alive: (0..pilots.len()).filter(|&i| pilots[i].alive).collect(),
            answers: HashMap::new(),
        }
    }

    /// Why `unit` can never run on these pilots, if that is so.
    pub fn check(&mut self, unit: &UnitView) -> Option<String> {
        if let Some(id) = unit.pilot {
            let p = &self.pilots[*self.by_id.get(&id)?];
            return Self::early(unit, p);
        }
        let key = (unit.cores, unit.gpus, unit.time);
        if let Some(answer) = self.answers.get(&key) {
            return answer.clone();
        }
        let answer = self.late(unit);
        self.answers.insert(key, answer.clone());
        answer
    }

    fn early(unit: &UnitView, p: &PilotView) -> Option<String> {
        let id = p.id;
        if !p.alive {
            return Some(format!(
                "unit is bound to {id}, which has ended or left the service"
            ));
        }
        if unit.cores > p.cores || unit.gpus > p.gpus {
            return Some(format!(
                "unit needs {} but its pilot {id} has {}",
                needs(unit),
                if unit.gpus > 0 {
                    format!("{} and {}", plural(p.cores, "core"), plural(p.gpus, "GPU"))
                } else {
                    plural(p.cores, "core")
                }
            ));
        }
        if let Some(t) = unit.time
            && t > p.walltime
        {
            return Some(format!(
                "unit asks for {} of run time (time_request) but its pilot {id} has a \
                 walltime of {}",
                duration(t),
                duration(p.walltime)
            ));
        }
        None
    }

    fn late(&self, unit: &UnitView) -> Option<String> {
        let alive = self.alive.iter().map(|&i| &self.pilots[i]);
        if self.alive.is_empty() || alive.clone().any(|p| fits_ever(p, unit)) {
            return None;
        }
        let max_cores = alive.clone().map(|p| p.cores).max().unwrap_or(0);
        let max_gpus = alive.clone().map(|p| p.gpus).max().unwrap_or(0);
        let max_wall = alive.clone().map(|p| p.walltime).max().unwrap_or_default();
        let needs = needs(unit);
        Some(if unit.cores > max_cores {
            format!(
                "unit needs {needs} but the largest pilot has {}",
                plural(max_cores, "core")
            )
        } else if unit.gpus > max_gpus {
            format!(
                "unit needs {needs} but the largest pilot has {}",
                plural(max_gpus, "GPU")
            )
        } else if let Some(t) = unit.time
            && t > max_wall
        {
            format!(
                "unit asks for {} of run time (time_request) but the longest pilot \
                 walltime is {}",
                duration(t),
                duration(max_wall)
            )
        } else {
            format!("unit needs {needs} but no pilot has all of it")
        })
    }
}

fn needs(unit: &UnitView) -> String {
    let mut needs = plural(unit.cores, "core");
    if unit.gpus > 0 {
        needs = format!("{needs} and {}", plural(unit.gpus, "GPU"));
    }
    if let Some(t) = unit.time {
        needs = format!("{needs} for {}", duration(t));
    }
    needs
}

/// Decides, for the units of `pool` in order, which to bind now and which can never run.
///
/// Bound and failed units are removed from `pool`; the others stay, in order. Each pilot's
/// `free_cores`/`free_gpus` are reduced by what is bound to it.
pub fn schedule(pool: &mut VecDeque<UnitView>, pilots: &mut [PilotView]) -> Vec<Decision> {
    schedule_live(pool, pilots, |_| true, &mut Anywhere)
}

/// [`schedule`] over a pool that may hold entries of units that have left it since they
/// were queued (`live` says which have not): those are dropped as they are met.
///
/// The cost of binding a unit does not grow with the number of pilots: the pilots with
/// room are kept in a heap by free cores, so the best one is found at once (only units
/// that need GPUs or walltime the best pilots lack look further). A unit that reads
/// input data looks at every pilot with room and takes the one of least
/// [`Placement::cost`] (then the usual order); if a pilot of lower cost has no room now
/// and the unit [`Placement::may_wait`], it stays in the pool, without holding anything.
pub fn schedule_live(
    pool: &mut VecDeque<UnitView>,
    pilots: &mut [PilotView],
    live: impl Fn(UnitId) -> bool,
    placement: &mut impl Placement,
) -> Vec<Decision> {
    let mut decisions = Vec::new();
    let mut kept = Vec::new();
    let mut reserved = vec![false; pilots.len()];
    let by_id: HashMap<PilotId, usize> =
        pilots.iter().enumerate().map(|(i, p)| (p.id, i)).collect();
    // Pilots with room, best first (idle cores, then room); an entry is current only
    // while the pilot's room is what it says and the pilot is not reserved (stale entries
    // are skipped).
    let mut open: BinaryHeap<(u32, u32, Reverse<usize>)> = pilots
        .iter()
        .enumerate()
        .filter(|(_, p)| p.accepting && p.free_cores > 0)
        .map(|(i, p)| (p.idle_cores, p.free_cores, Reverse(i)))
        .collect();
    let current = |e: &(u32, u32, Reverse<usize>), pilots: &[PilotView], reserved: &[bool]| {
        let i = e.2.0;
        pilots[i].idle_cores == e.0 && pilots[i].free_cores == e.1 && e.1 > 0 && !reserved[i]
    };
    let mut never = NeverFits::new(pilots);

    while let Some(unit) = pool.pop_front() {
        if !live(unit.id) {
            continue;
        }
        if let Some(reason) = never.check(&unit) {
            decisions.push(Decision::Fail {
                unit: unit.id,
                reason,
            });
            continue;
        }
        while open.peek().is_some_and(|e| !current(e, pilots, &reserved)) {
            open.pop();
        }
        if open.is_empty() {
            pool.push_front(unit);
            break;
        }
        let chosen = match unit.pilot {
            Some(id) => match by_id.get(&id) {
                Some(&i) if pilots[i].accepting && !reserved[i] && fits_now(&pilots[i], &unit) => {
                    Some(i)
                }
                Some(&i) => {
                    // Hold the pilot for this unit: FIFO on that pilot.
                    reserved[i] |= pilots[i].accepting;
                    None
                }
                None => None, // its pilot is not (yet) part of this service
            },
            None if unit.data => {
                let ideal = pilots
                    .iter()
                    .filter(|p| p.accepting && fits_ever(p, &unit) && in_time(p, &unit))
                    .map(|p| placement.cost(unit.id, p))
                    .min();
                let best = pilots
                    .iter()
                    .enumerate()
                    .filter(|(i, p)| p.accepting && !reserved[*i] && fits_now(p, &unit))
                    .map(|(i, p)| {
                        (
                            placement.cost(unit.id, p),
                            Reverse(p.idle_cores),
                            Reverse(p.free_cores),
                            i,
                        )
                    })
                    .min();
                match best {
                    Some((cost, .., i)) if ideal.is_none_or(|c| cost <= c) => Some(i),
                    Some((.., i)) if !placement.may_wait(unit.id) => Some(i),
                    _ => None,
                }
            }
            None => {
                // The best pilot with room that fits; pilots passed over (too few GPUs,
                // too little walltime left) go back for the next unit.
                let mut passed = Vec::new();
                let mut best = None;
                while let Some(e) = open.pop() {
                    if !current(&e, pilots, &reserved) {
                        continue;
                    }
                    if fits_now(&pilots[e.2.0], &unit) {
                        best = Some(e.2.0);
                        break;
                    }
                    passed.push(e);
                }
                open.extend(passed);
                if best.is_none() {
                    let hold = pilots
                        .iter()
                        .enumerate()
                        .filter(|(i, p)| {
                            p.accepting && !reserved[*i] && fits_ever(p, &unit) && in_time(p, &unit)
                        })
                        .max_by_key(|(i, p)| (p.idle_cores, p.free_cores, Reverse(*i)))
                        .map(|(i, _)| i);
                    if let Some(i) = hold {
                        reserved[i] = true;
                    }
                }
                best
            }
        };
        match chosen {
            Some(i) => {
                let p = &mut pilots[i];
                p.free_cores -= unit.cores;
                p.free_gpus -= unit.gpus;
                p.idle_cores = p.idle_cores.saturating_sub(unit.cores);
                if p.free_cores > 0 {
                    open.push((p.idle_cores, p.free_cores, Reverse(i)));
                }
                decisions.push(Decision::Bind {
                    unit: unit.id,
                    pilot: p.id,
                });
            }
            None => kept.push(unit),
        }
    }
    for unit in kept.into_iter().rev() {
        pool.push_front(unit);
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pilot(id: u64, cores: u32, free: u32) -> PilotView {
        PilotView {
            id: PilotId::new(id),
            accepting: true,
            alive: true,
            cores,
            gpus: 0,
            free_cores: free,
            idle_cores: free.min(cores),
            free_gpus: 0,
            walltime: Duration::from_secs(3600),
            remaining: None,
        }
    }

    fn unit(id: u64, cores: u32) -> UnitView {
        UnitView {
            id: UnitId::new(id),
            cores,
            gpus: 0,
            pilot: None,
            time: None,
            data: false,
        }
    }

    fn binds(d: &[Decision]) -> Vec<(u64, u64)> {
        d.iter()
            .filter_map(|d| match d {
                Decision::Bind { unit, pilot } => Some((unit.get(), pilot.get())),
                Decision::Fail { .. } => None,
            })
            .collect()
    }

    fn ids(pool: &VecDeque<UnitView>) -> Vec<u64> {
        pool.iter().map(|u| u.id.get()).collect()
    }

    #[test]
    fn fifo_late_binding_fills_free_room_in_order() {
        let mut pool: VecDeque<_> = (0..5).map(|i| unit(i, 1)).collect();
        let mut pilots = [pilot(0, 2, 3)];
        let d = schedule(&mut pool, &mut pilots);
        assert_eq!(binds(&d), [(0, 0), (1, 0), (2, 0)]);
        assert_eq!(ids(&pool), [3, 4]);
        assert_eq!(pilots[0].free_cores, 0);
        // Nothing more fits: a second pass binds nothing and keeps the order.
        assert!(schedule(&mut pool, &mut pilots).is_empty());
        assert_eq!(ids(&pool), [3, 4]);
    }

    #[test]
    fn units_go_to_the_pilot_with_most_room() {
        let mut pool: VecDeque<_> = (0..4).map(|i| unit(i, 1)).collect();
        let mut pilots = [pilot(0, 2, 1), pilot(1, 8, 3)];
        let d = schedule(&mut pool, &mut pilots);
        assert_eq!(binds(&d), [(0, 1), (1, 1), (2, 0), (3, 1)]);
    }

    #[test]
    fn pending_draining_and_full_pilots_get_nothing() {
        let mut pool: VecDeque<_> = (0..2).map(|i| unit(i, 1)).collect();
        let mut pending = pilot(0, 4, 8);
        pending.accepting = false;
        let mut pilots = [pending, pilot(1, 4, 0)];
        assert!(schedule(&mut pool, &mut pilots).is_empty());
        assert_eq!(ids(&pool), [0, 1]);
    }

    #[test]
    fn a_multi_core_unit_reserves_its_pilot_against_younger_small_units() {
        // Pilot 0 has 1 free core; unit 1 needs 2. Units 2 and 3 (1 core) must not take the
        // freed core before it; pilot 1 (also 2 cores, no room) is free to serve them later.
        let mut pool: VecDeque<_> = [unit(1, 2), unit(2, 1), unit(3, 1)].into();
        let mut pilots = [pilot(0, 2, 1)];
        let d = schedule(&mut pool, &mut pilots);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(ids(&pool), [1, 2, 3]);
        // Once the pilot has room for it, the big unit goes first.
        pilots[0].free_cores = 3;
        let d = schedule(&mut pool, &mut pilots);
        assert_eq!(binds(&d), [(1, 0), (2, 0)]);
    }

    #[test]
    fn a_reservation_blocks_only_the_reserved_pilot() {
        let mut pool: VecDeque<_> = [unit(1, 4), unit(2, 1)].into();
        let mut pilots = [pilot(0, 4, 2), pilot(1, 1, 1)];
        let d = schedule(&mut pool, &mut pilots);
        assert_eq!(binds(&d), [(2, 1)]);
        assert_eq!(ids(&pool), [1]);
    }

    #[test]
    fn early_binding_goes_only_to_the_named_pilot() {
        let mut u = unit(1, 1);
        u.pilot = Some(PilotId::new(1));
        let mut pool: VecDeque<_> = [u, unit(2, 1)].into();
        let mut pilots = [pilot(0, 4, 4), pilot(1, 1, 0)];
        let d = schedule(&mut pool, &mut pilots);
        assert_eq!(
            binds(&d),
            [(2, 0)],
            "pilot 1 is full, so unit 1 waits for it"
        );
        assert_eq!(ids(&pool), [1]);
        pilots[1].free_cores = 1;
        assert_eq!(binds(&schedule(&mut pool, &mut pilots)), [(1, 1)]);
    }

    #[test]
    fn units_that_can_never_run_fail_at_once_with_a_reason() {
        let mut big = unit(1, 16);
        big.gpus = 0;
        let mut gpu = unit(2, 1);
        gpu.gpus = 1;
        let mut orphan = unit(3, 1);
        orphan.pilot = Some(PilotId::new(7));
        let mut pool: VecDeque<_> = [big, gpu, orphan, unit(4, 1)].into();
        let mut dead = pilot(7, 4, 4);
        dead.alive = false;
        dead.accepting = false;
        let mut pilots = [pilot(0, 2, 0), pilot(1, 8, 0), dead];
        let d = schedule(&mut pool, &mut pilots);
        let fails: Vec<(u64, &str)> = d
            .iter()
            .filter_map(|d| match d {
                Decision::Fail { unit, reason } => Some((unit.get(), reason.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(
            fails,
            [
                (1, "unit needs 16 cores but the largest pilot has 8 cores"),
                (
                    2,
                    "unit needs 1 core and 1 GPU but the largest pilot has 0 GPUs"
                ),
                (
                    3,
                    "unit is bound to pilot.0007, which has ended or left the service"
                ),
            ]
        );
        assert_eq!(ids(&pool), [4], "a unit that fits waits for room");
    }

    #[test]
    fn without_any_live_pilot_units_wait() {
        let mut pool: VecDeque<_> = [unit(1, 64)].into();
        assert!(schedule(&mut pool, &mut []).is_empty());
        assert_eq!(ids(&pool), [1]);
    }
}
