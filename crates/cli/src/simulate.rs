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
//! - its agent, like a real one, claims the units bound to it in order and runs each as
//!   soon as its cores are free, for the unit's `time_request` (or `[simulation]
//!   unit_time`): exactly that long. It gives back a unit whose `time_request` does not
//!   fit in the walltime left, and units the manager asks back for an idle pilot; it
//!   drains `drain_margin` before the walltime (returning what waits), and at the walltime
//!   returns what still runs; then the pilot ends `done`.
//!
//! Units are submitted as earlier ones end, as `pstar run` does, so memory follows the
//! units in flight, not the size of the workload. Events at the same virtual instant are
//! handed to the core as one batch, as a busy store delivers them; a unit's end at the
//! instant its pilot's walltime ends counts (it made it). The summary and the report are
//! those of `pstar run`, in virtual seconds, plus pilot figures: failures, losses and
//! utilisation (the core-seconds of runs that reached their end, over the core-seconds
//! pilots ran; runs cut short are counted apart).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use pstar::core::{Core, Input, PilotSpec, Round, ServiceId, UnitPolicy, UnitSpec};
use pstar::{PilotId, PilotState, State, Timestamp, UnitId, UnitState};
use pstar_coordination::{Control, Event, PilotEvent, UnitEvent};

use crate::report::{EndedUnit, PilotEntry, Summary, Tally, stamps};
use crate::workload::{Simulation, Workload, WorkloadUnit};

const SERVICE: ServiceId = ServiceId(0);

/// At least this many units are in flight (submitted, not ended) while more wait.
const MIN_WINDOW: usize = 100_000;

/// What a simulation found.
pub struct Simulated {
    pub summary: Summary,
    /// The summary as `pstar run` shows it, plus the pilots' figures.
    pub text: String,
    /// Core-seconds of runs that reached their end, over core-seconds pilots ran.
    pub utilisation: f64,
    /// Units without a `time_request` that ran for `[simulation] unit_time`.
    pub untimed: usize,
    /// Scheduling rounds the core took, and the wall time they cost.
    pub rounds: u64,
    pub core_time: Duration,
    /// Whether the report was written (true when none was asked for).
    pub report_written: bool,
}

/// What happens at an instant; at the same instant, units' ends come first (a unit that
/// ends as its pilot's walltime does made it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Happening {
    /// A unit's run ends (the run number tells a current run from one cut short).
    UnitEnds { unit: u64, pilot: u32, run: u32 },
    /// The pilot leaves its batch queue: it runs, or fails.
    PilotStarts(u32),
    /// The pilot's agent stops taking units before the walltime.
    Drain(u32),
    /// The pilot's agent is lost.
    AgentLost(u32),
    /// The pilot reaches its walltime.
    Walltime(u32),
}

struct SimPilot {
    id: PilotId,
    cores: u32,
    walltime: Duration,
    state: PilotState,
    fails: bool,
    draining: bool,
    /// Units bound to it, not claimed yet.
    queue: VecDeque<UnitId>,
    free: u32,
    /// Units its agent holds: claimed, waiting for cores; and those running.
    waiting: VecDeque<UnitId>,
    running: HashMap<UnitId, u32>,
    started: Option<Timestamp>,
    ended: Option<Timestamp>,
    /// Core-seconds of runs that reached their end, and of runs cut short.
    busy: Duration,
    wasted: Duration,
    lost_agent: bool,
    history: Vec<(PilotState, Timestamp)>,
    detail: Option<String>,
}

struct SimUnit {
    name: Box<str>,
    /// How long it runs here: its `time_request`, else `[simulation] unit_time`.
    time: Duration,
    /// Whether that is its own `time_request` (what an agent checks against the walltime).
    requested: bool,
    cores: u32,
    history: Vec<(UnitState, Timestamp)>,
    pilot: Option<PilotId>,
    detail: Option<String>,
    exit_code: Option<i32>,
    /// Bumped when a run starts, so the end of a run cut short is ignored.
    run: u32,
    running_since: Option<Timestamp>,
}

struct Sim<'w> {
    core: Core,
    now: Timestamp,
    start: Timestamp,
    pilots: Vec<SimPilot>,
    /// Units submitted and not ended.
    units: HashMap<u64, SimUnit>,
    /// The workload's units not submitted yet.
    source: Box<dyn Iterator<Item = WorkloadUnit> + 'w>,
    settings: Simulation,
    next_unit: u64,
    total: usize,
    window: usize,
    untimed: usize,
    agenda: BinaryHeap<Reverse<(Timestamp, Happening, u64)>>,
    seq: u64,
    drain_margin: Option<Duration>,
    /// Reports of the agents at this instant, handed to the core together.
    reports: Vec<Event>,
    ended: usize,
    tally: Tally,
    rounds: u64,
    core_time: Duration,
    stranded: bool,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `t + d`, saturating: durations as long as a workload may write never overflow.
fn plus(t: Timestamp, d: Duration) -> Timestamp {
    Timestamp::from_micros(t.as_micros().saturating_add(micros(d)))
}

/// Core-seconds of `cores` for `d`, saturating.
fn core_time(d: Duration, cores: u32) -> Duration {
    d.checked_mul(cores).unwrap_or(Duration::MAX)
}

/// Plays `workload` through the core with `policy`; agents drain `drain_margin` before
/// their walltime (by default, as real agents: the smaller of 60 s and a tenth of it).
/// `tally` receives every unit as it ends.
pub fn simulate(
    workload: &Workload,
    policy: UnitPolicy,
    drain_margin: Option<Duration>,
    tally: Tally,
) -> Simulated {
    let settings = workload.simulation.clone().unwrap_or_default();
    let mut rng = fastrand::Rng::with_seed(settings.seed);
    let start = Timestamp::now();
    let cores: usize = workload.pilots.iter().map(|p| p.cores as usize).sum();
    let window = cores
        .saturating_mul(policy.prefetch as usize + 1)
        .saturating_mul(2)
        .max(MIN_WINDOW);
    let mut sim = Sim {
        core: Core::new(start),
        now: start,
        start,
        pilots: Vec::with_capacity(workload.pilots.len()),
        units: HashMap::new(),
        source: Box::new(workload.units()),
        settings,
        next_unit: 0,
        total: workload.unit_count(),
        window,
        untimed: 0,
        agenda: BinaryHeap::new(),
        seq: 0,
        drain_margin,
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
    sim.add_pilots(workload, &mut rng);
    sim.submit_more();
    sim.run();
    sim.finish(workload)
}

impl Sim<'_> {
    fn at(&mut self, when: Timestamp, what: Happening) {
        self.seq += 1;
        self.agenda.push(Reverse((when, what, self.seq)));
    }

    fn add_pilots(&mut self, workload: &Workload, rng: &mut fastrand::Rng) {
        for (i, d) in workload.pilots.iter().enumerate() {
            let id = p_id(i as u32);
            let wait = self.settings.queue_wait.at(rng.f64());
            let fails = rng.f64() < self.settings.pilot_failure;
            let lost = !fails && rng.f64() < self.settings.agent_loss;
            let lost_after = d.walltime.mul_f64(rng.f64());
            self.pilots.push(SimPilot {
                id,
                cores: d.cores,
                walltime: d.walltime,
                state: PilotState::New,
                fails,
                draining: false,
                queue: VecDeque::new(),
                free: d.cores,
                waiting: VecDeque::new(),
                running: HashMap::new(),
                started: None,
                ended: None,
                busy: Duration::ZERO,
                wasted: Duration::ZERO,
                lost_agent: false,
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

    /// Submits units until the window of units in flight is full or none is left.
    fn submit_more(&mut self) {
        if self.stranded {
            return;
        }
        let in_flight = self.next_unit as usize - self.ended;
        if in_flight > self.window / 2 {
            return;
        }
        let mut batch = Vec::new();
        let mut needs = Vec::new();
        while (self.next_unit as usize - self.ended) < self.window {
            let Some(unit) = self.source.next() else {
                break;
            };
            let d = &unit.description;
            let id = UnitId::new(self.next_unit);
            // Units are numbered in the order the workload gives them, as `run` does.
            if !unit.after.is_empty() {
                needs.push(pstar::core::UnitNeeds {
                    unit: id,
                    inputs: Box::new([]),
                    outputs: Box::new([]),
                    after: unit.after.iter().map(|p| UnitId::new(*p)).collect(),
                    run_anyway: d.on_dependency_failure == pstar::OnDependencyFailure::Run,
                });
            }
            let mut spec = UnitSpec::of(id, d);
            spec.pilot = unit.pilot.map(|p| p_id(p as u32));
            if d.time_request.is_none() {
                self.untimed += 1;
            }
            self.units.insert(
                self.next_unit,
                SimUnit {
                    name: d.display_name().into(),
                    time: d.time_request.unwrap_or(self.settings.unit_time),
                    requested: d.time_request.is_some(),
                    cores: d.cores,
                    history: vec![(UnitState::New, self.now)],
                    pilot: None,
                    detail: None,
                    exit_code: None,
                    run: 0,
                    running_since: None,
                },
            );
            self.next_unit += 1;
            batch.push(spec);
        }
        if !needs.is_empty() {
            self.core.handle(Input::UnitNeeds(needs));
        }
        if !batch.is_empty() {
            self.core.handle(Input::Submit {
                service: SERVICE,
                units: batch,
            });
        }
    }

    /// Whether a happening no longer means anything (the end of a run cut short): it
    /// must not move the clock.
    fn stale(&self, what: &Happening) -> bool {
        match *what {
            Happening::UnitEnds { unit, run, .. } => self
                .units
                .get(&unit)
                .is_none_or(|u| u.run != run || u.running_since.is_none()),
            _ => false,
        }
    }

    /// The main loop: one instant at a time, every happening of that instant, then the
    /// core's rounds until it and the agents have nothing more to do at that instant.
    fn run(&mut self) {
        self.settle();
        while self.ended < self.total {
            while let Some(Reverse((_, what, _))) = self.agenda.peek() {
                if !self.stale(what) {
                    break;
                }
                self.agenda.pop();
            }
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
            while let Some(Reverse((t, what, _))) = self.agenda.peek().copied() {
                if t != when {
                    break;
                }
                self.agenda.pop();
                self.happen(what);
            }
            self.settle();
            self.submit_more();
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
                let walltime = p.walltime;
                let margin = self
                    .drain_margin
                    .unwrap_or_else(|| (walltime / 10).min(Duration::from_secs(60)));
                self.pilot_to(i, PilotState::Running, None);
                self.at(
                    plus(self.now, walltime.saturating_sub(margin)),
                    Happening::Drain(i),
                );
                self.at(plus(self.now, walltime), Happening::Walltime(i));
            }
            Happening::Drain(i) => {
                let p = &mut self.pilots[i as usize];
                if p.state != PilotState::Running || p.draining {
                    return;
                }
                p.draining = true;
                let id = p.id;
                self.reports.push(Event::PilotDraining {
                    pilot: id,
                    at: self.now,
                });
                let waiting: Vec<UnitId> = p.waiting.drain(..).collect();
                for u in waiting {
                    self.report_why(
                        u,
                        id,
                        UnitState::New,
                        "pilot is draining before its walltime ends",
                    );
                }
            }
            Happening::AgentLost(i) => {
                if self.pilots[i as usize].state != PilotState::Running {
                    return;
                }
                // The agent dies with what it holds: no report; the runs are lost.
                self.pilots[i as usize].lost_agent = true;
                self.stop_agent(i, None);
                self.pilot_to(i, PilotState::Failed, Some("agent lost (simulated)"));
            }
            Happening::Walltime(i) => {
                if self.pilots[i as usize].state != PilotState::Running {
                    return;
                }
                // The agent returns what it still holds, then the pilot ends.
                self.stop_agent(i, Some("pilot reached its walltime"));
                self.pilot_to(i, PilotState::Done, Some("pilot reached its walltime"));
            }
            Happening::UnitEnds { unit, pilot, .. } => {
                if self.stale(&what) {
                    return;
                }
                let id = UnitId::new(unit);
                let cores = self.units.get(&unit).map_or(0, |u| u.cores);
                let p = &mut self.pilots[pilot as usize];
                if p.running.remove(&id).is_none() {
                    return;
                }
                p.free += cores;
                self.unit_ran(unit, pilot, true);
                self.report(id, p_id(pilot), UnitState::Done, Some(0));
                self.claim_and_start(pilot);
            }
        }
    }

    /// Adds the core-seconds of a run that ends now to its pilot's figures: `done` if
    /// it reached its end, else cut short.
    fn unit_ran(&mut self, unit: u64, pilot: u32, done: bool) {
        let Some(u) = self.units.get_mut(&unit) else {
            return;
        };
        if let Some(since) = u.running_since.take() {
            let used = core_time(self.now.since(since), u.cores);
            let p = &mut self.pilots[pilot as usize];
            if done {
                p.busy = p.busy.saturating_add(used);
            } else {
                p.wasted = p.wasted.saturating_add(used);
            }
        }
    }

    /// The agent of pilot `i` stops: with a reason, it returns what it holds (a walltime);
    /// without, it is lost with it.
    fn stop_agent(&mut self, i: u32, returning: Option<&str>) {
        let p = &mut self.pilots[i as usize];
        let mut held: Vec<UnitId> = p.waiting.drain(..).collect();
        held.extend(p.running.drain().map(|(u, _)| u));
        p.free = p.cores;
        held.sort();
        for u in held {
            self.unit_ran(u.get(), i, false);
            if let Some(why) = returning {
                self.report_why(u, p_id(i), UnitState::New, why);
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
        self.push_report(unit, pilot, state, exit_code, None);
    }

    fn report_why(&mut self, unit: UnitId, pilot: PilotId, state: UnitState, why: &str) {
        self.push_report(unit, pilot, state, None, Some(why.to_owned()));
    }

    /// What the agent of `pilot` publishes about `unit`, at this instant.
    fn push_report(
        &mut self,
        unit: UnitId,
        pilot: PilotId,
        state: UnitState,
        exit_code: Option<i32>,
        detail: Option<String>,
    ) {
        self.reports.push(Event::Unit(UnitEvent {
            unit,
            pilot: Some(pilot),
            state,
            at: self.now,
            exit_code,
            detail,
            lost_run: None,
            failed_run: false,
            result: None,
        }));
    }

    /// The agent of pilot `i` claims what is queued for it and starts what its free cores
    /// allow, in order; a unit that needs more than the walltime left is given back.
    fn claim_and_start(&mut self, i: u32) {
        let now = self.now;
        let p = &mut self.pilots[i as usize];
        if p.state != PilotState::Running || p.draining {
            return;
        }
        let pilot = p.id;
        let ends = p.started.map(|s| plus(s, p.walltime));
        let claimed: Vec<UnitId> = p.queue.drain(..).collect();
        p.waiting.extend(claimed.iter().copied());
        for u in claimed {
            self.report(u, pilot, UnitState::Pending, None);
        }
        loop {
            let p = &mut self.pilots[i as usize];
            let Some(&next) = p.waiting.front() else {
                break;
            };
            let Some(unit) = self.units.get_mut(&next.get()) else {
                p.waiting.pop_front();
                continue;
            };
            let left = ends.map_or(Duration::MAX, |e| e.since(now));
            if unit.requested && unit.time > left {
                p.waiting.pop_front();
                let why = format!(
                    "needs {} of run time (time_request) and {pilot} has {} of walltime left",
                    humantime::format_duration(unit.time),
                    humantime::format_duration(Duration::from_secs(left.as_secs()))
                );
                self.report_why(next, pilot, UnitState::New, &why);
                continue;
            }
            if unit.cores > p.free {
                break; // in order: the head waits for its cores
            }
            p.waiting.pop_front();
            p.free -= unit.cores;
            unit.run += 1;
            p.running.insert(next, unit.run);
            unit.running_since = Some(now);
            let run = unit.run;
            let end = plus(now, unit.time);
            self.report(next, pilot, UnitState::Running, None);
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
                self.stop_agent(i, Some("pilot canceled"));
            }
            if !self.pilots[i as usize].state.is_final() {
                self.pilot_to(i, PilotState::Canceled, Some("pilot canceled"));
            }
        }
        for (pilot, reason) in fail_pilots {
            let i = p_index(pilot) as u32;
            if !self.pilots[i as usize].state.is_final() {
                self.stop_agent(i, None);
                self.pilot_to(i, PilotState::Failed, Some(&reason));
            }
        }
        for a in applied {
            let key = a.unit.get();
            let Some(u) = self.units.get_mut(&key) else {
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
            if a.state.is_final()
                && let Some(u) = self.units.remove(&key)
            {
                self.ended += 1;
                let ended = EndedUnit {
                    id: a.unit,
                    name: u.name.into(),
                    state: a.state,
                    exit_code: u.exit_code,
                    pilot: u.pilot,
                    stdout: None,
                    stderr: None,
                    detail: u.detail,
                    history: u.history,
                    bytes: None,
                    attempts: Vec::new(),
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
            self.report_why(
                u,
                p_id(i),
                UnitState::New,
                "given back for a pilot with idle cores",
            );
        }
    }

    fn cancel_on_agent(&mut self, i: u32, unit: UnitId) {
        let cores = self.units.get(&unit.get()).map_or(0, |u| u.cores);
        let p = &mut self.pilots[i as usize];
        let held = if p.running.remove(&unit).is_some() {
            p.free += cores;
            true
        } else if let Some(at) = p.waiting.iter().position(|u| *u == unit) {
            p.waiting.remove(at);
            true
        } else {
            false
        };
        if held {
            self.unit_ran(unit.get(), i, false);
            self.report(unit, p_id(i), UnitState::Canceled, None);
            self.claim_and_start(i);
        }
    }

    fn finish(mut self, workload: &Workload) -> Simulated {
        let end = self.now;
        let not_submitted = self.total.saturating_sub(self.next_unit as usize);
        let summary = self.tally.summary_at(not_submitted, None, end);
        let mut text = self.tally.render(&summary);
        let mut used = Duration::ZERO;
        let mut wasted = Duration::ZERO;
        let mut offered = Duration::ZERO;
        let mut entries = Vec::with_capacity(self.pilots.len());
        let share = |a: Duration, b: Duration| {
            if b.is_zero() {
                0.0
            } else {
                a.as_secs_f64() / b.as_secs_f64()
            }
        };
        for (p, d) in self.pilots.iter().zip(&workload.pilots) {
            let ran = match p.started {
                Some(s) => core_time(p.ended.unwrap_or(end).since(s), p.cores),
                None => Duration::ZERO,
            };
            used = used.saturating_add(p.busy);
            wasted = wasted.saturating_add(p.wasted);
            offered = offered.saturating_add(ran);
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
        let utilisation = share(used, offered);
        let cores: u64 = self.pilots.iter().map(|p| u64::from(p.cores)).sum();
        let failed = self.pilots.iter().filter(|p| p.fails).count();
        let lost = self.pilots.iter().filter(|p| p.lost_agent).count();
        let other = self
            .pilots
            .iter()
            .filter(|p| p.state == PilotState::Failed && !p.fails && !p.lost_agent)
            .count();
        let mut parts = Vec::new();
        if failed > 0 {
            parts.push(format!("{failed} failed to start"));
        }
        if lost > 0 {
            parts.push(format!("{lost} lost their agent"));
        }
        if other > 0 {
            parts.push(format!("{other} failed (black holes)"));
        }
        text.push_str(&format!(
            "{}{}\n",
            crate::count(self.pilots.len(), "pilot"),
            if parts.is_empty() {
                String::new()
            } else {
                format!(" ({})", parts.join(", "))
            }
        ));
        text.push_str(&format!(
            "pilot utilisation: {:.1} % of {} over {:.0} virtual s (runs that reached their \
             end, over the time pilots ran)",
            utilisation * 100.0,
            crate::count(cores as usize, "core"),
            end.since(self.start).as_secs_f64(),
        ));
        if !wasted.is_zero() {
            text.push_str(&format!(
                "; {:.2} % more went to runs cut short",
                share(wasted, offered) * 100.0
            ));
        }
        text.push('\n');
        let report_written = self.tally.finish_report_with(&summary, &entries);
        Simulated {
            summary,
            text,
            utilisation,
            untimed: self.untimed,
            rounds: self.rounds,
            core_time: self.core_time,
            report_written,
        }
    }
}

fn p_index(pilot: PilotId) -> usize {
    pilot.get() as usize
}

fn p_id(i: u32) -> PilotId {
    PilotId::new(u64::from(i))
}
