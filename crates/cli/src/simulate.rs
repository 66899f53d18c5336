//! `pstar simulate`: a workload's pilots and units played through the manager's core on a
//! virtual clock, with no processes and no store.
//!
//! The decisions are the real ones: the same [`Core`] and scheduler as `pstar run`, fed
//! the events virtual pilots and agents would publish. What is simulated is only what lies
//! outside the manager:
//! - each pilot waits in its batch queue for `[simulation] queue_wait` (fixed, or drawn
//!   uniformly per pilot), then runs for its walltime; with probability `pilot_failure` it
//!   fails instead of running, and with probability `agent_loss` its agent is lost at a
//!   time drawn uniformly within its walltime (its units' runs are lost with it);
//! - its agent claims the units bound to it in order, runs each as soon as its cores are
//!   free, for the unit's `time_request` (or `[simulation] unit_time`), and reports its
//!   end; at its walltime it returns what it still runs and the pilot ends `done`.
//!
//! Events at the same virtual instant are handed to the core as one batch, as a busy
//! store delivers them. The summary and the report are those of `pstar run`, in virtual
//! seconds, plus each pilot's utilisation: the share of its core-seconds while running
//! that units used.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use pstar::core::{Core, Input, PilotSpec, Round, ServiceId, UnitPolicy, UnitSpec};
use pstar::{PilotId, PilotState, State, Timestamp, UnitId, UnitState};
use pstar_coordination::{Control, Event, PilotEvent, UnitEvent};

use crate::report::{EndedUnit, PilotEntry, Summary, Tally, stamps};
use crate::workload::{Simulation, Workload};

const SERVICE: ServiceId = ServiceId(0);

/// What a simulation found.
pub struct Simulated {
    pub summary: Summary,
    /// The summary as `pstar run` shows it, plus utilisation.
    pub text: String,
    /// Core-seconds units used over core-seconds pilots ran, over all pilots.
    pub utilisation: f64,
    /// Scheduling rounds the core took, and the wall time they cost.
    pub rounds: u64,
    pub core_time: Duration,
    /// Whether the report was written (true when none was asked for).
    pub report_written: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Happening {
    /// The pilot leaves its batch queue: it runs, or fails.
    PilotStarts(u32),
    /// The pilot's agent is lost.
    AgentLost(u32),
    /// The pilot reaches its walltime.
    Walltime(u32),
    /// A unit's run ends (the run number tells a current run from one cut short).
    UnitEnds { unit: u64, pilot: u32, run: u32 },
}

struct SimPilot {
    id: PilotId,
    cores: u32,
    walltime: Duration,
    state: PilotState,
    fails: bool,
    /// Units bound to it, not claimed yet.
    queue: VecDeque<UnitId>,
    free: u32,
    /// Units its agent holds: claimed, waiting for cores or running.
    waiting: VecDeque<UnitId>,
    running: HashMap<UnitId, u32>,
    started: Option<Timestamp>,
    ended: Option<Timestamp>,
    busy: Duration,
    history: Vec<(PilotState, Timestamp)>,
    detail: Option<String>,
}

struct SimUnit {
    name: Box<str>,
    time: Duration,
    cores: u32,
    history: Vec<(UnitState, Timestamp)>,
    pilot: Option<PilotId>,
    detail: Option<String>,
    exit_code: Option<i32>,
    /// Bumped when a run starts, so the end of a run cut short is ignored.
    run: u32,
    running_since: Option<Timestamp>,
}

struct Sim {
    core: Core,
    now: Timestamp,
    start: Timestamp,
    pilots: Vec<SimPilot>,
    units: Vec<SimUnit>,
    agenda: BinaryHeap<Reverse<(Timestamp, u64, Happening)>>,
    seq: u64,
    /// Reports of the agents at this instant, handed to the core together.
    reports: Vec<Event>,
    ended: usize,
    tally: Tally,
    rounds: u64,
    core_time: Duration,
    stranded: bool,
}

fn secs(d: Duration) -> u64 {
    d.as_micros() as u64
}

fn plus(t: Timestamp, d: Duration) -> Timestamp {
    Timestamp::from_micros(t.as_micros() + secs(d))
}

/// Plays `workload` through the core. `tally` receives every unit as it ends.
pub fn simulate(workload: &Workload, policy: UnitPolicy, tally: Tally) -> Simulated {
    let settings = workload.simulation.clone().unwrap_or_default();
    let mut rng = fastrand::Rng::with_seed(settings.seed);
    let start = Timestamp::now();
    let mut sim = Sim {
        core: Core::new(start),
        now: start,
        start,
        pilots: Vec::with_capacity(workload.pilots.len()),
        units: Vec::with_capacity(workload.unit_count()),
        agenda: BinaryHeap::new(),
        seq: 0,
        reports: Vec::new(),
        ended: 0,
        tally,
        rounds: 0,
        core_time: Duration::ZERO,
        stranded: false,
    };
    sim.core.handle(Input::AddService {
        service: SERVICE,
        policy,
    });
    sim.core.handle(Input::ForgetFinished { service: SERVICE });
    sim.add_pilots(workload, &settings, &mut rng);
    sim.submit(workload, &settings);
    sim.run();
    sim.finish(workload)
}

impl Sim {
    fn at(&mut self, when: Timestamp, what: Happening) {
        self.seq += 1;
        self.agenda.push(Reverse((when, self.seq, what)));
    }

    fn add_pilots(&mut self, workload: &Workload, settings: &Simulation, rng: &mut fastrand::Rng) {
        for (i, d) in workload.pilots.iter().enumerate() {
            let id = PilotId::new(i as u64 + 1);
            let wait = settings.queue_wait.at(rng.f64());
            let fails = rng.f64() < settings.pilot_failure;
            let lost = !fails && rng.f64() < settings.agent_loss;
            let lost_after = d.walltime.mul_f64(rng.f64());
            self.pilots.push(SimPilot {
                id,
                cores: d.cores,
                walltime: d.walltime,
                state: PilotState::New,
                fails,
                queue: VecDeque::new(),
                free: d.cores,
                waiting: VecDeque::new(),
                running: HashMap::new(),
                started: None,
                ended: None,
                busy: Duration::ZERO,
                history: vec![(PilotState::New, self.now)],
                detail: None,
            });
            self.core.handle(Input::AddPilot {
                service: SERVICE,
                pilot: PilotSpec::of(id, d),
                state: PilotState::New,
                running_since: None,
            });
            self.pilot_to(i as u32, PilotState::Pending, None);
            let starts = plus(self.now, wait);
            self.at(starts, Happening::PilotStarts(i as u32));
            if lost {
                self.at(plus(starts, lost_after), Happening::AgentLost(i as u32));
            }
        }
    }

    fn submit(&mut self, workload: &Workload, settings: &Simulation) {
        let mut batch = Vec::new();
        for (i, unit) in workload.units().enumerate() {
            let d = &unit.description;
            let id = UnitId::new(i as u64);
            let mut spec = UnitSpec::of(id, d);
            spec.pilot = unit.pilot.map(|p| PilotId::new(p as u64 + 1));
            self.units.push(SimUnit {
                name: d.display_name().into(),
                time: d.time_request.unwrap_or(settings.unit_time),
                cores: d.cores,
                history: vec![(UnitState::New, self.now)],
                pilot: None,
                detail: None,
                exit_code: None,
                run: 0,
                running_since: None,
            });
            batch.push(spec);
            if batch.len() == 10_000 {
                self.core.handle(Input::Submit {
                    service: SERVICE,
                    units: std::mem::take(&mut batch),
                });
            }
        }
        self.core.handle(Input::Submit {
            service: SERVICE,
            units: batch,
        });
    }

    /// The main loop: one instant at a time, every happening of that instant, then the
    /// core's rounds until it and the agents have nothing more to do at that instant.
    fn run(&mut self) {
        self.settle();
        while self.ended < self.units.len() {
            let Some(Reverse((when, _, _))) = self.agenda.peek().copied() else {
                if self.stranded {
                    break;
                }
                // Every pilot has ended: what is left can never run (as `pstar run`).
                self.stranded = true;
                self.core.handle(Input::CancelStranded { service: SERVICE });
                self.settle();
                continue;
            };
            self.now = when;
            self.core.handle(Input::Tick(when));
            while let Some(Reverse((t, _, what))) = self.agenda.peek().copied() {
                if t != when {
                    break;
                }
                self.agenda.pop();
                self.happen(what);
            }
            self.settle();
        }
    }

    fn happen(&mut self, what: Happening) {
        match what {
            Happening::PilotStarts(i) => {
                if self.pilots[i as usize].state.is_final() {
                    return;
                }
                if self.pilots[i as usize].fails {
                    self.pilot_to(i, PilotState::Failed, Some("pilot job failed (simulated)"));
                    return;
                }
                let p = &mut self.pilots[i as usize];
                p.started = Some(self.now);
                let end = plus(self.now, p.walltime);
                self.pilot_to(i, PilotState::Running, None);
                self.at(end, Happening::Walltime(i));
            }
            Happening::AgentLost(i) => {
                if self.pilots[i as usize].state != PilotState::Running {
                    return;
                }
                // The agent dies with what it holds: no report; the runs are lost.
                self.stop_agent(i, false);
                self.pilot_to(i, PilotState::Failed, Some("agent lost (simulated)"));
            }
            Happening::Walltime(i) => {
                if self.pilots[i as usize].state != PilotState::Running {
                    return;
                }
                // The agent returns what it still holds, then the pilot ends.
                self.stop_agent(i, true);
                self.pilot_to(i, PilotState::Done, Some("walltime reached"));
            }
            Happening::UnitEnds { unit, pilot, run } => {
                let u = &self.units[unit as usize];
                if u.run != run || u.running_since.is_none() {
                    return;
                }
                let p = &mut self.pilots[pilot as usize];
                let id = UnitId::new(unit);
                if p.running.remove(&id).is_none() {
                    return;
                }
                p.free += self.units[unit as usize].cores;
                self.unit_ran(unit, pilot);
                self.report(id, p_id(pilot), UnitState::Done, Some(0));
                self.claim_and_start(pilot);
            }
        }
    }

    /// Adds the core-seconds of a run that ends now to its pilot's busy time.
    fn unit_ran(&mut self, unit: u64, pilot: u32) {
        let u = &mut self.units[unit as usize];
        if let Some(since) = u.running_since.take() {
            let cores = u.cores;
            self.pilots[pilot as usize].busy += self.now.since(since) * cores;
        }
    }

    fn stop_agent(&mut self, i: u32, report: bool) {
        let p = &mut self.pilots[i as usize];
        let mut held: Vec<UnitId> = p.waiting.drain(..).collect();
        held.extend(p.running.drain().map(|(u, _)| u));
        p.free = p.cores;
        held.sort();
        for u in held {
            self.unit_ran(u.get(), i);
            if report {
                self.report(u, p_id(i), UnitState::New, None);
            }
        }
    }

    fn pilot_to(&mut self, i: u32, state: PilotState, detail: Option<&str>) {
        let p = &mut self.pilots[i as usize];
        p.state = state;
        p.history.push((state, self.now));
        if state.is_final() {
            p.ended = Some(self.now);
            p.detail = detail.map(str::to_owned);
        }
        self.reports.push(Event::Pilot(PilotEvent {
            pilot: p.id,
            state,
            at: self.now,
            detail: detail.map(str::to_owned),
        }));
    }

    fn report(&mut self, unit: UnitId, pilot: PilotId, state: UnitState, exit_code: Option<i32>) {
        self.reports.push(Event::Unit(UnitEvent {
            unit,
            pilot: Some(pilot),
            state,
            at: self.now,
            exit_code,
            detail: None,
            lost_run: None,
        }));
    }

    /// The agent of pilot `i` claims what is queued for it and starts what its free cores
    /// allow, in order.
    fn claim_and_start(&mut self, i: u32) {
        let now = self.now;
        let p = &mut self.pilots[i as usize];
        if p.state != PilotState::Running {
            return;
        }
        let pilot = p.id;
        let claimed: Vec<UnitId> = p.queue.drain(..).collect();
        p.waiting.extend(claimed.iter().copied());
        for u in claimed {
            self.reports.push(Event::Unit(UnitEvent {
                unit: u,
                pilot: Some(pilot),
                state: UnitState::Pending,
                at: now,
                exit_code: None,
                detail: None,
                lost_run: None,
            }));
        }
        loop {
            let p = &mut self.pilots[i as usize];
            let Some(&next) = p.waiting.front() else {
                break;
            };
            let unit = &mut self.units[next.get() as usize];
            if unit.cores > p.free {
                break; // in order: the head waits for its cores
            }
            p.waiting.pop_front();
            p.free -= unit.cores;
            p.running.insert(next, unit.run);
            unit.run += 1;
            unit.running_since = Some(now);
            let run = unit.run;
            let end = plus(now, unit.time);
            self.reports.push(Event::Unit(UnitEvent {
                unit: next,
                pilot: Some(pilot),
                state: UnitState::Running,
                at: now,
                exit_code: None,
                detail: None,
                lost_run: None,
            }));
            self.at(
                end,
                Happening::UnitEnds {
                    unit: next.get(),
                    pilot: i,
                    run,
                },
            );
        }
    }

    /// Hands this instant's reports to the core and applies its rounds until nothing
    /// more happens at this instant.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let reports = std::mem::take(&mut self.reports);
            if !reports.is_empty() {
                self.core.handle(Input::Events(Arc::from(reports)));
            }
            let begun = std::time::Instant::now();
            let round = self.core.round();
            self.core_time += begun.elapsed();
            self.rounds += 1;
            let quiet = round.is_empty();
            self.apply(round);
            if quiet && self.reports.is_empty() {
                return;
            }
        }
    }

    fn apply(&mut self, round: Round) {
        let Round {
            withdraw,
            publish,
            enqueue,
            controls,
            cancel_pilots,
            fail_pilots,
            applied,
            ..
        } = round;
        if !withdraw.is_empty() {
            let answers = withdraw
                .into_iter()
                .map(|(pilot, which)| {
                    let q = &mut self.pilots[p_index(pilot)].queue;
                    let taken: Vec<UnitId> = match which {
                        None => q.drain(..).collect(),
                        Some(units) => {
                            let taken: Vec<UnitId> =
                                q.iter().filter(|u| units.contains(u)).copied().collect();
                            q.retain(|u| !units.contains(u));
                            taken
                        }
                    };
                    (pilot, taken)
                })
                .collect();
            self.core.handle(Input::Withdrawn(answers));
        }
        // The core's decisions come back to it as the stream would bring them.
        self.reports.extend(publish);
        let mut touched = Vec::new();
        for (pilot, units) in enqueue {
            let i = p_index(pilot);
            self.pilots[i].queue.extend(units);
            touched.push(i as u32);
        }
        for (pilot, control) in controls {
            let i = p_index(pilot) as u32;
            match control {
                Control::CancelUnit(unit) => self.cancel_on_agent(i, unit),
                Control::ReturnUnits(units) => self.give_back(i, &units),
                Control::CancelPilot => {}
            }
        }
        for pilot in cancel_pilots {
            let i = p_index(pilot) as u32;
            if self.pilots[i as usize].state == PilotState::Running {
                self.stop_agent(i, true);
            }
            if !self.pilots[i as usize].state.is_final() {
                self.pilot_to(i, PilotState::Canceled, Some("pilot canceled"));
            }
        }
        for (pilot, reason) in fail_pilots {
            let i = p_index(pilot) as u32;
            if !self.pilots[i as usize].state.is_final() {
                self.stop_agent(i, false);
                self.pilot_to(i, PilotState::Failed, Some(&reason));
            }
        }
        for a in applied {
            let Some(u) = self.units.get_mut(a.unit.get() as usize) else {
                continue;
            };
            u.history.push((a.state, a.at));
            if a.exit_code.is_some() {
                u.exit_code = a.exit_code;
            }
            u.detail = a.detail;
            if a.pilot.is_some() {
                u.pilot = a.pilot;
            }
            if a.state.is_final() {
                self.ended += 1;
                let ended = EndedUnit {
                    id: a.unit,
                    name: u.name.to_string(),
                    state: a.state,
                    exit_code: u.exit_code,
                    pilot: u.pilot,
                    stdout: None,
                    stderr: None,
                    detail: u.detail.take(),
                    history: std::mem::take(&mut u.history),
                };
                self.tally.add_at(&ended, self.now);
            }
        }
        touched.sort();
        touched.dedup();
        for i in touched {
            self.claim_and_start(i);
        }
    }

    /// The agent of pilot `i` gives back the units of `units` that wait there.
    fn give_back(&mut self, i: u32, units: &[UnitId]) {
        let p = &mut self.pilots[i as usize];
        let mut given = Vec::new();
        p.waiting.retain(|u| {
            let give = units.contains(u);
            if give {
                given.push(*u);
            }
            !give
        });
        for u in given {
            self.report(u, p_id(i), UnitState::New, None);
        }
    }

    fn cancel_on_agent(&mut self, i: u32, unit: UnitId) {
        let p = &mut self.pilots[i as usize];
        let held = if p.running.remove(&unit).is_some() {
            p.free += self.units[unit.get() as usize].cores;
            true
        } else if let Some(at) = p.waiting.iter().position(|u| *u == unit) {
            p.waiting.remove(at);
            true
        } else {
            false
        };
        if held {
            self.unit_ran(unit.get(), i);
            self.report(unit, p_id(i), UnitState::Canceled, None);
            self.claim_and_start(i);
        }
    }

    fn finish(mut self, workload: &Workload) -> Simulated {
        let end = self.now;
        let summary = self.tally.summary_at(0, None, end);
        let mut text = self.tally.render(&summary);
        let mut used = Duration::ZERO;
        let mut offered = Duration::ZERO;
        let mut entries = Vec::with_capacity(self.pilots.len());
        for (p, d) in self.pilots.iter().zip(&workload.pilots) {
            let ran = match p.started {
                Some(s) => p.ended.unwrap_or(end).since(s) * p.cores,
                None => Duration::ZERO,
            };
            used += p.busy;
            offered += ran;
            let share = |a: Duration, b: Duration| {
                if b.is_zero() {
                    0.0
                } else {
                    a.as_secs_f64() / b.as_secs_f64()
                }
            };
            entries.push(PilotEntry {
                name: d.name.clone(),
                id: p.id.to_string(),
                resource: d.resource.to_string(),
                cores: p.cores,
                gpus: d.gpus,
                state: p.state,
                detail: p.detail.clone(),
                job: None,
                sandbox: String::new(),
                timestamps: stamps(&p.history),
                utilisation: Some(share(p.busy, ran)),
            });
        }
        let utilisation = if offered.is_zero() {
            0.0
        } else {
            used.as_secs_f64() / offered.as_secs_f64()
        };
        let cores: u64 = self.pilots.iter().map(|p| u64::from(p.cores)).sum();
        text.push_str(&format!(
            "pilot utilisation: {:.1} % of {} over {:.0} virtual s (the time units ran, \
             over the time pilots ran)\n",
            utilisation * 100.0,
            crate::count(cores as usize, "core"),
            end.since(self.start).as_secs_f64(),
        ));
        let report_written = self.tally.finish_report_with(&summary, &entries);
        Simulated {
            summary,
            text,
            utilisation,
            rounds: self.rounds,
            core_time: self.core_time,
            report_written,
        }
    }
}

fn p_index(pilot: PilotId) -> usize {
    pilot.get() as usize - 1
}

fn p_id(i: u32) -> PilotId {
    PilotId::new(u64::from(i) + 1)
}
