//! Store formats compared: the encoded size, and the time to encode, decode and do both,
//! of each kind of value pstar keeps in Redis, in JSON (what pstar writes) and in
//! MessagePack (rmp-serde), with field names (`to_vec_named`) and without (`to_vec`,
//! fields by position, as postcard and bincode write them too). Every value is first
//! checked to round-trip; a format that does not is said so, and not timed.
//!
//! Usage: `wire-formats [REPS]` (default 200: each figure is the fastest of 5 timings of
//! REPS passes over its values, per value).

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use pstar_coordination::{CancelTarget, Control, Event, PilotEvent, PilotRecord, UnitEvent};
use pstar_model::{
    ComputeUnitDescription, PilotComputeDescription, PilotId, PilotState, Timestamp, UnitId,
    UnitState,
};

#[derive(Clone, Copy)]
enum Format {
    Json,
    MsgPackNamed,
    MsgPackPositional,
}

const FORMATS: [Format; 3] = [
    Format::Json,
    Format::MsgPackNamed,
    Format::MsgPackPositional,
];

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Json => "JSON (serde_json)",
            Format::MsgPackNamed => "MessagePack, named fields",
            Format::MsgPackPositional => "MessagePack, positional",
        }
    }

    fn encode<T: Serialize>(self, value: &T) -> Result<Vec<u8>, String> {
        match self {
            Format::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
            Format::MsgPackNamed => rmp_serde::to_vec_named(value).map_err(|e| e.to_string()),
            Format::MsgPackPositional => rmp_serde::to_vec(value).map_err(|e| e.to_string()),
        }
    }

    fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, String> {
        match self {
            Format::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            Format::MsgPackNamed | Format::MsgPackPositional => {
                rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
            }
        }
    }
}

/// How many times each figure is measured; the fastest is kept (the others lost time to
/// whatever else ran on the machine).
const TRIES: usize = 5;

/// Nanoseconds per item of `per` items per value, over `reps` passes of `f` over `n` values.
fn ns(elapsed: Duration, reps: usize, n: usize, per: usize) -> f64 {
    elapsed.as_nanos() as f64 / (reps * n * per) as f64
}

/// The shortest of [`TRIES`] timings of `reps` calls of `pass`.
fn best_of(reps: usize, mut pass: impl FnMut()) -> Duration {
    (0..TRIES)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                pass();
            }
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// Measures `values` (each `per` items, e.g. the events of a batch) in every format.
fn measure<T>(what: &str, values: &[T], per: usize, reps: usize)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    println!("{what}");
    for format in FORMATS {
        let checked: Result<Vec<Vec<u8>>, String> = values
            .iter()
            .map(|v| {
                let bytes = format.encode(v)?;
                let back: T = format.decode(&bytes)?;
                if &back == v {
                    Ok(bytes)
                } else {
                    Err(format!("{back:?} came back for {v:?}"))
                }
            })
            .collect();
        let encoded = match checked {
            Ok(e) => e,
            Err(e) => {
                let mut e = e;
                e.truncate(160);
                println!("  {:<27} does not round-trip: {e}", format.name());
                continue;
            }
        };
        let size = encoded.iter().map(Vec::len).sum::<usize>() as f64 / (values.len() * per) as f64;

        let best = |pass: &mut dyn FnMut()| best_of(reps, pass);
        let enc = best(&mut || {
            for v in values {
                black_box(format.encode(black_box(v)).ok());
            }
        });
        let dec = best(&mut || {
            for b in &encoded {
                black_box(format.decode::<T>(black_box(b)).ok());
            }
        });
        let trip = best(&mut || {
            for v in values {
                let bytes = format.encode(black_box(v)).unwrap_or_default();
                black_box(format.decode::<T>(&bytes).ok());
            }
        });
        let [enc, dec, trip] = [enc, dec, trip].map(|t| ns(t, reps, values.len(), per));
        println!(
            "  {:<27} {size:>7.1} bytes  encode {enc:>7.0} ns  decode {dec:>7.0} ns  round trip {trip:>7.0} ns",
            format.name()
        );
    }
}

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let at = Timestamp::now();
    let pilot = PilotId::new(1);

    // A workload's null unit, as `pstar run` stores it.
    let nulls: Vec<ComputeUnitDescription> = (0..1000)
        .map(|i| ComputeUnitDescription {
            name: Some(format!("null-{i}")),
            ..ComputeUnitDescription::new("/bin/true")
        })
        .collect();
    // A fuller one: arguments, environment, a working directory, a time request.
    let full: Vec<ComputeUnitDescription> = (0..1000)
        .map(|i| {
            let mut d = ComputeUnitDescription::new("/usr/bin/bfast")
                .with_arguments(["match", "-t4", &format!("/data/file{i}")])
                .with_cores(4);
            d.name = Some(format!("match-{i}"));
            d.environment.insert("OMP_NUM_THREADS".into(), "4".into());
            d.working_directory = Some(format!("/scratch/run/{i}").into());
            d.time_request = Some(Duration::from_secs(1800));
            d.tags = vec!["bfast".into()];
            d
        })
        .collect();
    // What agents publish for null units: Running then Done, 100 events a batch.
    let batches: Vec<Vec<Event>> = (0..100u64)
        .map(|b| {
            (0..50u64)
                .flat_map(|i| {
                    let unit = UnitId::new(b * 50 + i);
                    let event = |state, exit_code| {
                        Event::Unit(UnitEvent {
                            unit,
                            pilot: Some(pilot),
                            state,
                            at,
                            exit_code,
                            detail: None,
                            lost_run: None,
                            failed_run: false,
                            result: None,
                        })
                    };
                    [
                        event(UnitState::Running, None),
                        event(UnitState::Done, Some(0)),
                    ]
                })
                .collect()
        })
        .collect();
    // Every kind of event, as the stream may carry them.
    let every_kind = vec![vec![
        Event::Unit(UnitEvent {
            unit: UnitId::new(7),
            pilot: Some(pilot),
            state: UnitState::Failed,
            at,
            exit_code: Some(1),
            detail: Some("lost with its pilot".into()),
            lost_run: Some(pstar_coordination::LostRun {
                attempt: 1,
                of: 3,
                reason: "lost with its pilot".into(),
            }),
            failed_run: false,
            result: None,
        }),
        Event::Pilot(PilotEvent {
            pilot,
            state: PilotState::Running,
            at,
            detail: None,
        }),
        Event::PilotDraining { pilot, at },
        Event::Resumed { token: 42, at },
        Event::CancelRequested {
            target: CancelTarget::Units(vec![UnitId::new(1), UnitId::new(2)]),
            reason: "by hand".into(),
            at,
        },
        Event::CancelRequested {
            target: CancelTarget::Pilot(pilot),
            reason: String::new(),
            at,
        },
        Event::CancelRequested {
            target: CancelTarget::Session,
            reason: "r".into(),
            at,
        },
    ]];
    let pilots: Vec<PilotRecord> = (0..100)
        .map(|i| PilotRecord {
            id: PilotId::new(i),
            description: PilotComputeDescription {
                cores: 16,
                ..Default::default()
            },
            sandbox: format!("/home/u/pstar.sandbox/s/pilot.{i:04}").into(),
            job: Some(format!("slurm:{}", 1000 + i)),
            agent: Default::default(),
            restart_of: None,
        })
        .collect();
    let controls: Vec<Control> = (0..100)
        .map(|i| {
            if i % 2 == 0 {
                Control::CancelUnit(UnitId::new(i))
            } else {
                Control::CancelPilot
            }
        })
        .collect();

    println!(
        "figures per value (per event for event batches): the fastest of {TRIES} timings of {reps} passes"
    );
    measure("unit description, a null unit", &nulls, 1, reps);
    measure(
        "unit description, a fuller one (time_request set)",
        &full,
        1,
        reps,
    );
    measure(
        "event batch of 100 (Running, Done)",
        &batches,
        100,
        reps / 10 + 1,
    );
    measure(
        "every kind of event, one batch",
        &every_kind,
        every_kind[0].len(),
        reps * 10,
    );
    measure("pilot record", &pilots, 1, reps);
    measure("control message", &controls, 1, reps * 10);
}
