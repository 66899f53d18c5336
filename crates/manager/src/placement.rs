//! Where a unit's input data is nearest: the data-aware half of scheduling, as a pure
//! function over labels, caches and sizes.
//!
//! The seeds' affinity-aware scheduler placed a unit on a pilot only when both the
//! data-center and the machine labels of the pilot and the data were equal. pstar grades
//! instead how near each input data unit is to each pilot ([`Nearness`]):
//!
//! 1. **here**: the pilot's own cache holds it (it was staged there for an earlier unit,
//!    or one bound there is staging it now), nothing moves;
//! 2. **same machine**: a pilot store or another pilot's cache with the pilot's machine
//!    label holds it (a peer transfer or a local copy);
//! 3. **same data center**: a store or cache with the pilot's data-center label holds it;
//! 4. **elsewhere**: it crosses data centers.
//!
//! A pilot's [`transfer_cost`] for a unit is the sum over the unit's inputs of their size
//! times the weight of their nearness ([`Nearness::weight`]), so a big reference at hand
//! outweighs a small file far away. The scheduler binds a unit to the pilot with room of
//! least cost; when a pilot of lower cost exists but has no room now, the unit may wait
//! for it up to the service's `locality_wait` (as Spark's `spark.locality.wait`), then
//! takes the best pilot with room.
//!
//! ```
//! use pstar::placement::{transfer_cost, DataSite, Nearness, Site};
//! use pstar_model::{Affinity, PilotId};
//!
//! let dc1 = Affinity { datacenter: Some("dc1".into()), machine: None };
//! let here = Site { pilot: PilotId::new(0), affinity: &dc1 };
//! let reference = DataSite { size: 1 << 30, cached_at: &[], stores: &[&dc1] };
//! assert_eq!(reference.nearness(&here), Nearness::SameDatacenter);
//! assert_eq!(transfer_cost(&here, [&reference]), 4 << 30);
//! ```

use pstar_model::{Affinity, PilotId};

/// How near a data unit is to a pilot, nearest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Nearness {
    /// In the pilot's own cache.
    Here,
    /// On the pilot's machine (a store or a peer's cache with its machine label).
    SameMachine,
    /// In the pilot's data center.
    SameDatacenter,
    /// Anywhere else.
    Elsewhere,
}

impl Nearness {
    /// What moving one byte this far costs, relative to a local copy.
    pub fn weight(self) -> u64 {
        match self {
            Nearness::Here => 0,
            Nearness::SameMachine => 1,
            Nearness::SameDatacenter => 4,
            Nearness::Elsewhere => 16,
        }
    }
}

/// A pilot, as placement sees it.
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    /// Which pilot.
    pub pilot: PilotId,
    /// Its labels.
    pub affinity: &'a Affinity,
}

/// Where a data unit is.
#[derive(Debug, Clone, Copy)]
pub struct DataSite<'a> {
    /// Its bytes.
    pub size: u64,
    /// Pilots whose cache holds it (or will, once what is bound there is staged), with
    /// their labels.
    pub cached_at: &'a [(PilotId, &'a Affinity)],
    /// Labels of the pilot stores that hold it.
    pub stores: &'a [&'a Affinity],
}

/// Whether two labels are both given and equal.
fn same(a: &Option<String>, b: &Option<String>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a == b)
}

/// How near a place with labels `there` is to a pilot with labels `here`. A machine label
/// counts as the same machine only within the same data center (or when neither says its
/// data center).
fn labels(here: &Affinity, there: &Affinity) -> Nearness {
    let dc_same = same(&here.datacenter, &there.datacenter);
    let dc_differs = matches!((&here.datacenter, &there.datacenter), (Some(a), Some(b)) if a != b);
    if same(&here.machine, &there.machine) && !dc_differs {
        Nearness::SameMachine
    } else if dc_same {
        Nearness::SameDatacenter
    } else {
        Nearness::Elsewhere
    }
}

impl DataSite<'_> {
    /// How near it is to `pilot`: the nearest of its copies.
    pub fn nearness(&self, pilot: &Site<'_>) -> Nearness {
        if self.cached_at.iter().any(|(p, _)| *p == pilot.pilot) {
            return Nearness::Here;
        }
        self.cached_at
            .iter()
            .map(|(_, a)| *a)
            .chain(self.stores.iter().copied())
            .map(|there| labels(pilot.affinity, there))
            .min()
            .unwrap_or(Nearness::Elsewhere)
    }
}

/// What running a unit with these inputs on `pilot` costs in moved bytes, weighted by
/// how far each input travels. Zero when every input is in the pilot's cache.
pub fn transfer_cost<'a>(
    pilot: &Site<'_>,
    inputs: impl IntoIterator<Item = &'a DataSite<'a>>,
) -> u64 {
    inputs
        .into_iter()
        .map(|d| d.size.saturating_mul(d.nearness(pilot).weight()))
        .fold(0, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aff(dc: Option<&str>, m: Option<&str>) -> Affinity {
        Affinity {
            datacenter: dc.map(Into::into),
            machine: m.map(Into::into),
        }
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn nearness_is_graded_by_cache_then_machine_then_datacenter() {
        let none = aff(None, None);
        let dc1 = aff(Some("dc1"), None);
        let dc2 = aff(Some("dc2"), None);
        let dc1_m1 = aff(Some("dc1"), Some("m1"));
        let dc1_m2 = aff(Some("dc1"), Some("m2"));
        let dc2_m1 = aff(Some("dc2"), Some("m1"));
        let m1 = aff(None, Some("m1"));
        let p = PilotId::new(1);
        let q = PilotId::new(2);
        // (pilot labels, cached at, store labels, expected)
        let table: Vec<(
            &Affinity,
            Vec<(PilotId, &Affinity)>,
            Vec<&Affinity>,
            Nearness,
        )> = vec![
            (&none, vec![(p, &none)], vec![], Nearness::Here),
            (
                &dc1_m1,
                vec![(q, &dc1_m2)],
                vec![&dc1_m1],
                Nearness::SameMachine,
            ),
            (
                &dc1_m1,
                vec![(q, &dc1_m1)],
                vec![&dc2],
                Nearness::SameMachine,
            ), // peer on my machine
            (&dc1_m1, vec![], vec![&dc1_m2], Nearness::SameDatacenter),
            (&dc1_m1, vec![], vec![&dc1], Nearness::SameDatacenter),
            (&dc1_m1, vec![], vec![&dc2_m1], Nearness::Elsewhere), // same machine name, other dc
            (&m1, vec![], vec![&m1], Nearness::SameMachine),
            (&dc1, vec![], vec![&dc2], Nearness::Elsewhere),
            (&none, vec![], vec![&none], Nearness::Elsewhere), // no labels: no claim of nearness
            (&dc1, vec![], vec![], Nearness::Elsewhere),
            (
                &dc1_m1,
                vec![(q, &dc2)],
                vec![&dc1],
                Nearness::SameDatacenter,
            ),
        ];
        for (i, (here, cached, stores, want)) in table.iter().enumerate() {
            let site = Site {
                pilot: p,
                affinity: here,
            };
            let d = DataSite {
                size: 1,
                cached_at: cached,
                stores,
            };
            assert_eq!(d.nearness(&site), *want, "row {i}");
        }
    }

    #[test]
    fn cost_weighs_bytes_by_distance() {
        let dc1 = aff(Some("dc1"), None);
        let dc2 = aff(Some("dc2"), None);
        let p = PilotId::new(1);
        let q = PilotId::new(2);
        let cached_p = [(p, &dc1)];
        let big_at_p = DataSite {
            size: 1000,
            cached_at: &cached_p,
            stores: &[&dc2],
        };
        let small_far = DataSite {
            size: 10,
            cached_at: &[],
            stores: &[&dc2],
        };
        let on_p = Site {
            pilot: p,
            affinity: &dc1,
        };
        let on_q = Site {
            pilot: q,
            affinity: &dc1,
        };
        // On p the big input is at hand: only the small one moves, across data centers.
        assert_eq!(transfer_cost(&on_p, [&big_at_p, &small_far]), 160);
        // On q, the big one comes from p's cache in the same data center.
        assert_eq!(transfer_cost(&on_q, [&big_at_p, &small_far]), 4000 + 160);
        assert_eq!(transfer_cost(&on_p, []), 0);
    }
}
