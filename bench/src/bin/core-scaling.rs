//! The manager core's cost per scheduling decision as the number of pilots grows.
//!
//! For each pilot count P: a core with P running pilots of 16 cores (prefetch 0), and
//! P × 16 one-core units submitted at once; the round that binds them all is timed, then
//! every unit ends and the round that binds the next P × 16 is timed again (the steady
//! state of a busy session: room appears on every pilot at once). Prints nanoseconds per
//! bound unit. A scheduler that scanned every pilot per unit would grow linearly with P.
//!
//! Usage: core-scaling [P...]   (default 10 100 1000 10000)

use std::sync::Arc;
use std::time::{Duration, Instant};

use pstar::core::{Core, Input, PilotSpec, ServiceId, UnitPolicy, UnitSpec};
use pstar_coordination::{Event, UnitEvent};
use pstar_model::{PilotId, PilotState, Timestamp, UnitId, UnitState};

const CORES: u32 = 16;

fn main() {
    let counts: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
        vec![10, 100, 1000, 10_000]
    } else {
        counts
    };
    println!("pilots  units/round  first round ns/bind  steady round ns/bind");
    for p in counts {
        let (first, steady) = measure(p);
        println!(
            "{p:>6}  {:>11}  {:>19.0}  {:>20.0}",
            p * u64::from(CORES),
            first,
            steady
        );
    }
}

fn measure(pilots: u64) -> (f64, f64) {
    let s = ServiceId(0);
    let t0 = Timestamp::from_micros(1_700_000_000_000_000);
    let mut core = Core::new(t0);
    core.handle(Input::AddService {
        service: s,
        policy: UnitPolicy {
            prefetch: 0,
            ..Default::default()
        },
    });
    for i in 0..pilots {
        core.handle(Input::AddPilot {
            service: s,
            pilot: PilotSpec {
                id: PilotId::new(i),
                cores: CORES,
                gpus: 0,
                walltime: Duration::from_secs(36_000),
            },
            state: PilotState::Running,
            running_since: Some(t0),
        });
    }
    let per_round = pilots * u64::from(CORES);
    let spec = |i: u64| UnitSpec {
        id: UnitId::new(i),
        cores: 1,
        gpus: 0,
        pilot: None,
        time_request: None,
        retries: 0,
    };
    core.handle(Input::Submit {
        service: s,
        units: (0..2 * per_round).map(spec).collect(),
    });
    let begun = Instant::now();
    let round = core.round();
    let first = begun.elapsed();
    let bound: Vec<(PilotId, Vec<UnitId>)> = round.enqueue;
    let n: usize = bound.iter().map(|(_, u)| u.len()).sum();
    assert_eq!(n as u64, per_round, "every core gets a unit");
    // The core's decisions come back, then every unit runs to its end.
    core.handle(Input::Events(Arc::from(round.publish)));
    let _ = core.round();
    let mut ends = Vec::with_capacity(3 * n);
    for (pilot, units) in &bound {
        for u in units {
            for state in [UnitState::Pending, UnitState::Running, UnitState::Done] {
                ends.push(Event::Unit(UnitEvent {
                    unit: *u,
                    pilot: Some(*pilot),
                    state,
                    at: t0,
                    exit_code: None,
                    detail: None,
                    lost_run: None,
                    failed_run: false,
                    result: None,
                }));
            }
        }
    }
    core.handle(Input::Events(Arc::from(ends)));
    let begun = Instant::now();
    let round = core.round();
    let steady = begun.elapsed();
    let n2: usize = round.enqueue.iter().map(|(_, u)| u.len()).sum();
    assert_eq!(n2 as u64, per_round, "the second wave is bound");
    (
        first.as_nanos() as f64 / n as f64,
        steady.as_nanos() as f64 / n2 as f64,
    )
}
