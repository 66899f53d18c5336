//! The core's policies as plain decisions: no processes, no store, no async.
//!
//! [`Harness`] plays the store and the agents around one [`Core`]: what the core
//! publishes comes back to it as the stream would bring it, enqueued units wait in a
//! queue per pilot until an "agent" claims them, and withdraws take from those queues.
//! After every step the core's invariants are checked.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use super::*;
use pstar_coordination::{DataEvent, LostRun};
use pstar_model::{Affinity, DataUnitState};

pub(crate) const T0: u64 = 1_700_000_000_000_000;

pub(crate) fn at(secs: u64) -> Timestamp {
    Timestamp::from_micros(T0 + secs * 1_000_000)
}

pub(crate) fn u(i: u64) -> UnitId {
    UnitId::new(i)
}

pub(crate) fn p(i: u64) -> PilotId {
    PilotId::new(i)
}

pub(crate) fn spec(i: u64, cores: u32) -> UnitSpec {
    UnitSpec {
        id: u(i),
        cores,
        gpus: 0,
        pilot: None,
        time_request: None,
        retries: 0,
    }
}

/// The store and the agents around a core.
pub(crate) struct Harness {
    pub core: Core,
    pub now: Timestamp,
    pub queues: BTreeMap<PilotId, VecDeque<UnitId>>,
    pub controls: Vec<(PilotId, Control)>,
    pub canceled_pilots: Vec<PilotId>,
    pub failed_pilots: Vec<(PilotId, String)>,
    /// Every event the core published, in order.
    pub published: Vec<Event>,
    /// Every transition the core applied, in order.
    pub applied: Vec<Applied>,
    /// Final states seen per unit (more than one is a bug).
    pub finals: HashMap<UnitId, Vec<UnitState>>,
}

pub(crate) const S: ServiceId = ServiceId(0);

impl Harness {
    pub fn new(policy: UnitPolicy) -> Self {
        let mut core = Core::new(at(0));
        core.handle(Input::AddService { service: S, policy });
        Self {
            core,
            now: at(0),
            queues: BTreeMap::new(),
            controls: Vec::new(),
            canceled_pilots: Vec::new(),
            failed_pilots: Vec::new(),
            published: Vec::new(),
            applied: Vec::new(),
            finals: HashMap::new(),
        }
    }

    /// A harness with the default policy.
    pub fn default_policy() -> Self {
        Self::new(UnitPolicy::default())
    }

    pub fn at(&mut self, secs: u64) {
        self.now = at(secs);
        self.core.handle(Input::Tick(self.now));
    }

    /// Feeds an input, then runs rounds (bringing published events back, answering
    /// withdraws from the queues) until the core has nothing more to say.
    pub fn input(&mut self, input: Input) {
        self.core.handle(input);
        self.settle();
    }

    pub fn settle(&mut self) {
        for _ in 0..100 {
            let round = self.core.round();
            if round.is_empty() && round.counts_changed.is_empty() {
                return;
            }
            self.take(round);
            let broken = self.core.check_invariants();
            assert!(broken.is_empty(), "invariants broken: {broken:#?}");
        }
        panic!("the core never settled");
    }

    fn take(&mut self, round: Round) {
        if !round.withdraw.is_empty() {
            let answers = round
                .withdraw
                .iter()
                .map(|(pilot, which)| {
                    let q = self.queues.entry(*pilot).or_default();
                    let taken: Vec<UnitId> = match which {
                        None => q.drain(..).collect(),
                        Some(units) => {
                            let taken: Vec<UnitId> =
                                q.iter().filter(|u| units.contains(u)).copied().collect();
                            q.retain(|u| !units.contains(u));
                            taken
                        }
                    };
                    (*pilot, taken)
                })
                .collect();
            self.core.handle(Input::Withdrawn(answers));
        }
        for (pilot, units) in &round.enqueue {
            self.queues.entry(*pilot).or_default().extend(units);
        }
        self.controls.extend(round.controls);
        self.canceled_pilots.extend(round.cancel_pilots);
        self.failed_pilots.extend(round.fail_pilots);
        for a in &round.applied {
            if a.state.is_final() {
                self.finals.entry(a.unit).or_default().push(a.state);
            }
        }
        self.applied.extend(round.applied);
        if !round.publish.is_empty() {
            self.published.extend(round.publish.iter().cloned());
            self.core.handle(Input::Events(Arc::from(round.publish)));
        }
    }

    pub fn events(&mut self, events: Vec<Event>) {
        self.input(Input::Events(Arc::from(events)));
    }

    pub fn add_pilot(&mut self, id: u64, cores: u32) {
        self.add_pilot_to(S, id, cores, Duration::from_secs(3600));
    }

    pub fn add_pilot_to(&mut self, service: ServiceId, id: u64, cores: u32, walltime: Duration) {
        self.input(Input::AddPilot {
            service,
            pilot: PilotSpec {
                id: p(id),
                cores,
                gpus: 0,
                walltime,
            },
            state: PilotState::Running,
            running_since: Some(self.now),
        });
    }

    pub fn submit(&mut self, units: Vec<UnitSpec>) {
        self.submit_to(S, units);
    }

    pub fn submit_to(&mut self, service: ServiceId, units: Vec<UnitSpec>) {
        self.input(Input::Submit { service, units });
    }

    pub fn unit_event(&mut self, unit: u64, pilot: u64, state: UnitState) {
        let e = UnitEvent {
            unit: u(unit),
            pilot: Some(p(pilot)),
            state,
            at: self.now,
            exit_code: match state {
                UnitState::Done => Some(0),
                UnitState::Failed => Some(1),
                _ => None,
            },
            detail: None,
            lost_run: None,
            failed_run: false,
            result: None,
        };
        self.events(vec![Event::Unit(e)]);
    }

    /// The agent of `pilot` claims up to `n` units and reports them pending.
    pub fn claim(&mut self, pilot: u64, n: usize) -> Vec<u64> {
        let q = self.queues.entry(p(pilot)).or_default();
        let taken: Vec<UnitId> = (0..n).filter_map(|_| q.pop_front()).collect();
        for unit in &taken {
            self.unit_event(unit.get(), pilot, UnitState::Pending);
        }
        taken.iter().map(|u| u.get()).collect()
    }

    /// The agent runs `unit` to `end`.
    pub fn run(&mut self, unit: u64, pilot: u64, end: UnitState) {
        self.unit_event(unit, pilot, UnitState::Running);
        self.unit_event(unit, pilot, end);
    }

    pub fn pilot_event(&mut self, pilot: u64, state: PilotState, detail: &str) {
        self.events(vec![Event::Pilot(pstar_coordination::PilotEvent {
            pilot: p(pilot),
            state,
            at: self.now,
            detail: Some(detail.to_owned()),
        })]);
    }

    pub fn state(&self, unit: u64) -> Option<UnitState> {
        self.core.unit_state(u(unit))
    }

    /// The last detail applied to `unit`.
    pub fn detail(&self, unit: u64) -> Option<String> {
        self.applied
            .iter()
            .rev()
            .find(|a| a.unit == u(unit))
            .and_then(|a| a.detail.clone())
    }

    pub fn queued(&self, pilot: u64) -> Vec<u64> {
        self.queues
            .get(&p(pilot))
            .map(|q| q.iter().map(|u| u.get()).collect())
            .unwrap_or_default()
    }

    pub fn no_unit_ended_twice(&self) {
        for (unit, finals) in &self.finals {
            assert_eq!(finals.len(), 1, "{unit} ended {finals:?}");
        }
    }
}

fn policy(prefetch: u32) -> UnitPolicy {
    UnitPolicy {
        prefetch,
        ..Default::default()
    }
}

#[test]
fn units_bind_up_to_slots_plus_prefetch_and_the_rest_wait_in_order() {
    let mut h = Harness::new(policy(1));
    h.add_pilot(1, 2);
    h.submit((0..10).map(|i| spec(i, 1)).collect());
    // 2 cores with prefetch 1: max(2*2, 2+4) = 6 cores' worth.
    assert_eq!(h.queued(1), [0, 1, 2, 3, 4, 5]);
    assert_eq!(h.core.cores_bound(p(1)), 6);
    assert_eq!(h.core.waiting(S), 4);
    // One ends: the next in line is bound.
    h.claim(1, 1);
    h.run(0, 1, UnitState::Done);
    assert_eq!(h.queued(1), [1, 2, 3, 4, 5, 6]);
    assert_eq!(h.state(0), Some(UnitState::Done));
}

#[test]
fn a_unit_too_big_for_every_pilot_fails_at_once_and_one_that_fits_waits() {
    let mut h = Harness::default_policy();
    h.add_pilot(1, 4);
    h.submit(vec![spec(0, 8), spec(1, 4)]);
    assert_eq!(h.state(0), Some(UnitState::Failed));
    assert_eq!(
        h.detail(0).as_deref(),
        Some("unit needs 8 cores but the largest pilot has 4 cores")
    );
    assert_eq!(h.queued(1), [1]);
}

#[test]
fn walltime_a_unit_is_bound_only_where_its_time_request_fits_what_is_left() {
    let mut h = Harness::new(policy(0));
    h.add_pilot(1, 1);
    // Pilot 1: one hour of walltime from t=0. Pilot 2: ten hours.
    h.add_pilot_to(S, 2, 1, Duration::from_secs(36_000));
    h.at(3000); // 10 minutes left on pilot 1
    let mut long = spec(0, 1);
    long.time_request = Some(Duration::from_secs(1800));
    let mut short = spec(1, 1);
    short.time_request = Some(Duration::from_secs(300));
    h.submit(vec![long, short]);
    assert_eq!(h.queued(2), [0], "30 min goes to the pilot with hours left");
    assert_eq!(h.queued(1), [1], "5 min fits the 10 min left");
}

#[test]
fn walltime_a_unit_longer_than_every_pilot_fails_naming_both_durations() {
    let mut h = Harness::default_policy();
    h.add_pilot(1, 4);
    let mut unit = spec(0, 1);
    unit.time_request = Some(Duration::from_secs(7200));
    h.submit(vec![unit]);
    assert_eq!(h.state(0), Some(UnitState::Failed));
    assert_eq!(
        h.detail(0).as_deref(),
        Some("unit asks for 2h of run time (time_request) but the longest pilot walltime is 1h")
    );
}

#[test]
fn walltime_a_unit_that_fits_no_pilot_now_waits_for_a_longer_one() {
    let mut h = Harness::new(policy(0));
    h.add_pilot(1, 1);
    h.at(3500);
    let mut unit = spec(0, 1);
    unit.time_request = Some(Duration::from_secs(600));
    h.submit(vec![unit]);
    assert!(h.queued(1).is_empty(), "100 s left is too short for 10 min");
    assert_eq!(h.state(0), Some(UnitState::New));
    h.add_pilot(2, 1);
    assert_eq!(h.queued(2), [0]);
}

#[test]
fn cancel_in_the_pool_in_a_queue_claimed_and_on_a_gone_pilot() {
    let mut h = Harness::new(policy(0));
    h.add_pilot(1, 2);
    h.add_pilot(2, 1);
    h.submit((0..5).map(|i| spec(i, 1)).collect());
    // Most room first, ties to the older pilot: pilot 1 holds 0 and 1, pilot 2 holds 2;
    // 3 and 4 wait.
    assert_eq!((h.queued(1), h.queued(2)), (vec![0, 1], vec![2]));
    h.claim(1, 1); // unit 0 claimed by pilot 1's agent
    h.claim(2, 1); // unit 2 claimed by pilot 2's agent
    h.input(Input::Cancel {
        units: vec![u(3)],
        reason: "in the pool".into(),
    });
    assert_eq!(h.state(3), Some(UnitState::Canceled));
    assert_eq!(h.detail(3).as_deref(), Some("in the pool"));
    h.input(Input::Cancel {
        units: vec![u(1)],
        reason: "in a queue".into(),
    });
    assert_eq!(h.state(1), Some(UnitState::Canceled));
    assert_eq!(
        h.queued(1),
        [4],
        "withdrawn from the queue; unit 4 took its place"
    );
    h.input(Input::Cancel {
        units: vec![u(0)],
        reason: "claimed".into(),
    });
    assert_eq!(h.controls, [(p(1), Control::CancelUnit(u(0)))]);
    assert_eq!(
        h.state(0),
        Some(UnitState::Pending),
        "until its agent says so"
    );
    h.unit_event(0, 1, UnitState::Canceled);
    assert_eq!(h.state(0), Some(UnitState::Canceled));
    assert_eq!(
        h.detail(0).as_deref(),
        Some("claimed"),
        "the cancel's reason wins"
    );
    // Unit 2: its pilot is lost before the cancel is carried out; the unit is canceled
    // when it comes back from the settle.
    h.core.handle(Input::Cancel {
        units: vec![u(2)],
        reason: "on a gone pilot".into(),
    });
    h.pilot_event(2, PilotState::Failed, "agent lost");
    assert_eq!(h.state(2), Some(UnitState::Canceled));
    assert_eq!(h.detail(2).as_deref(), Some("on a gone pilot"));
    h.no_unit_ended_twice();
}

#[test]
fn the_first_cancel_reason_is_the_one_a_unit_keeps() {
    let mut h = Harness::new(policy(0));
    h.add_pilot(1, 1);
    h.submit(vec![spec(0, 1)]);
    h.claim(1, 1);
    h.input(Input::Cancel {
        units: vec![u(0)],
        reason: "first".into(),
    });
    h.input(Input::Cancel {
        units: vec![u(0)],
        reason: "second".into(),
    });
    h.unit_event(0, 1, UnitState::Canceled);
    assert_eq!(h.detail(0).as_deref(), Some("first"));
}

#[test]
fn attempts_a_lost_claimed_unit_runs_again_until_its_attempts_are_used_up() {
    let mut h = Harness::new(UnitPolicy {
        prefetch: 0,
        max_attempts: 2,
        ..Default::default()
    });
    h.add_pilot(1, 1);
    h.submit(vec![spec(0, 1), spec(1, 1)]);
    assert_eq!(h.queued(1), [0]);
    h.claim(1, 1);
    h.unit_event(0, 1, UnitState::Running);
    h.pilot_event(1, PilotState::Failed, "heartbeat lost");
    // Claimed: one attempt used, back to the pool (its head).
    assert_eq!(h.state(0), Some(UnitState::New));
    assert_eq!(
        h.detail(0).as_deref(),
        Some("pilot.0001 ended (failed: heartbeat lost); attempt 1 of 2 lost")
    );
    let lost = h.published.iter().rev().find_map(|e| match e {
        Event::Unit(e) if e.unit == u(0) => e.lost_run.clone(),
        _ => None,
    });
    assert_eq!(
        lost,
        Some(LostRun {
            attempt: 1,
            of: 2,
            reason: "pilot.0001 ended (failed: heartbeat lost)".into()
        })
    );
    h.add_pilot(2, 1);
    assert_eq!(h.queued(2), [0], "the returned unit goes first");
    h.claim(2, 1);
    h.pilot_event(2, PilotState::Failed, "node crashed");
    assert_eq!(h.state(0), Some(UnitState::Failed));
    assert_eq!(
        h.detail(0).as_deref(),
        Some(
            "gave up after 2 attempts: (1) pilot.0001 ended (failed: heartbeat lost); \
             (2) pilot.0002 ended (failed: node crashed)"
        )
    );
    // Unit 1 was never claimed: it waits, no attempt used.
    assert_eq!(h.state(1), Some(UnitState::New));
}

#[test]
fn attempts_units_still_queued_on_a_failed_pilot_use_up_none() {
    let mut h = Harness::new(UnitPolicy {
        prefetch: 4,
        max_attempts: 1,
        ..Default::default()
    });
    h.add_pilot(1, 1);
    h.submit((0..3).map(|i| spec(i, 1)).collect());
    h.pilot_event(1, PilotState::Failed, "gone");
    for i in 0..3 {
        assert_eq!(h.state(i), Some(UnitState::New), "unit {i}");
    }
}

#[test]
fn an_early_bound_unit_fails_with_its_pilot_and_one_for_an_ended_pilot_fails_at_once() {
    let mut h = Harness::default_policy();
    h.add_pilot(1, 1);
    h.add_pilot(2, 1);
    let mut early = spec(0, 1);
    early.pilot = Some(p(1));
    h.submit(vec![early]);
    assert_eq!(h.queued(1), [0]);
    h.claim(1, 1);
    h.pilot_event(1, PilotState::Failed, "gone");
    assert_eq!(h.state(0), Some(UnitState::Failed));
    let mut late = spec(1, 1);
    late.pilot = Some(p(1));
    h.submit(vec![late]);
    assert_eq!(
        h.detail(1).as_deref(),
        Some("unit is bound to pilot.0001, which has ended or left the service")
    );
}

#[test]
fn drain_queued_units_come_back_and_go_to_another_pilot() {
    let mut h = Harness::new(policy(4));
    h.add_pilot(1, 1);
    h.submit((0..3).map(|i| spec(i, 1)).collect());
    h.claim(1, 1);
    h.unit_event(0, 1, UnitState::Running);
    h.events(vec![Event::PilotDraining {
        pilot: p(1),
        at: h.now,
    }]);
    assert!(h.queued(1).is_empty());
    assert_eq!(h.state(1), Some(UnitState::New));
    assert_eq!(
        h.detail(1).as_deref(),
        Some("pilot is draining before its walltime ends (pilot.0001)")
    );
    // The running unit finishes there; nothing new is bound to the draining pilot.
    h.unit_event(0, 1, UnitState::Done);
    assert!(h.queued(1).is_empty());
    h.add_pilot(2, 1);
    assert_eq!(h.queued(2), [1, 2]);
}

#[test]
fn stale_reports_from_an_ended_pilot_or_an_earlier_binding_change_nothing() {
    let mut h = Harness::new(policy(0));
    h.add_pilot(1, 1);
    h.submit(vec![spec(0, 1)]);
    h.claim(1, 1);
    h.pilot_event(1, PilotState::Failed, "presumed gone");
    assert_eq!(h.state(0), Some(UnitState::New));
    // The agent was alive after all and reports late.
    h.unit_event(0, 1, UnitState::Done);
    assert_eq!(h.state(0), Some(UnitState::New), "stale: its pilot ended");
    h.add_pilot(2, 1);
    h.claim(2, 1);
    h.unit_event(0, 1, UnitState::Running);
    assert_eq!(
        h.state(0),
        Some(UnitState::Pending),
        "stale: bound elsewhere now"
    );
    h.run(0, 2, UnitState::Done);
    assert_eq!(h.state(0), Some(UnitState::Done));
    // A second final report is refused by the state table.
    h.unit_event(0, 2, UnitState::Failed);
    h.no_unit_ended_twice();
}

#[test]
fn the_stale_rule_is_one_function() {
    let e = |state, pilot| UnitEvent {
        unit: u(0),
        pilot: Some(p(pilot)),
        state,
        at: at(0),
        exit_code: None,
        detail: None,
        lost_run: None,
        failed_run: false,
        result: None,
    };
    let alive = |_| false;
    assert!(!is_stale(&e(UnitState::Running, 1), Some(p(1)), alive));
    assert!(is_stale(&e(UnitState::Running, 2), Some(p(1)), alive));
    assert!(is_stale(&e(UnitState::Done, 1), Some(p(1)), |_| true));
    assert!(!is_stale(&e(UnitState::Scheduled, 2), Some(p(1)), |_| true));
}

#[test]
fn black_hole_a_pilot_whose_units_fail_at_once_while_others_succeed_is_taken_out() {
    let mut h = Harness::new(UnitPolicy {
        prefetch: 0,
        black_hole_failures: 3,
        ..Default::default()
    });
    h.add_pilot(1, 1);
    h.add_pilot(2, 1);
    h.submit((0..8).map(|i| spec(i, 1)).collect());
    // Pilot 2 runs one to done.
    let on2 = h.claim(2, 1);
    h.run(on2[0], 2, UnitState::Done);
    // Pilot 1 fails three in a row at once.
    for _ in 0..3 {
        let on1 = h.claim(1, 1);
        h.run(on1[0], 1, UnitState::Failed);
    }
    assert_eq!(h.failed_pilots.len(), 1);
    assert_eq!(h.failed_pilots[0].0, p(1));
    assert!(
        h.failed_pilots[0]
            .1
            .starts_with("black hole: 3 units in a row failed within 10s"),
        "{}",
        h.failed_pilots[0].1
    );
    assert!(h.queued(1).is_empty(), "its queue was taken back");
}

#[test]
fn black_hole_if_every_pilot_fails_units_the_units_are_what_fails() {
    let mut h = Harness::new(UnitPolicy {
        prefetch: 0,
        black_hole_failures: 2,
        ..Default::default()
    });
    h.add_pilot(1, 1);
    h.submit((0..4).map(|i| spec(i, 1)).collect());
    for _ in 0..4 {
        let on1 = h.claim(1, 1);
        h.run(on1[0], 1, UnitState::Failed);
    }
    assert!(h.failed_pilots.is_empty());
    for i in 0..4 {
        assert_eq!(h.state(i), Some(UnitState::Failed));
    }
}

#[test]
fn cancel_stranded_says_whether_a_unit_ran() {
    let mut h = Harness::new(policy(0));
    h.add_pilot(1, 1);
    h.submit(vec![spec(0, 1), spec(1, 1)]);
    h.claim(1, 1);
    h.unit_event(0, 1, UnitState::Running);
    h.pilot_event(1, PilotState::Done, "walltime reached");
    assert_eq!(h.state(0), Some(UnitState::New));
    h.input(Input::CancelStranded { service: S });
    assert_eq!(
        h.detail(0).as_deref(),
        Some(
            "no pilot was left to run it again after its run was cut short: \
             pilot.0001 ended (done: walltime reached)"
        )
    );
    assert_eq!(
        h.detail(1).as_deref(),
        Some("every pilot ended before this unit could run")
    );
}

#[test]
fn m_to_n_two_services_share_a_pilot_without_over_binding_it() {
    let mut h = Harness::new(policy(0));
    let other = ServiceId(1);
    h.input(Input::AddService {
        service: other,
        policy: policy(0),
    });
    h.add_pilot_to(S, 1, 4, Duration::from_secs(3600));
    h.add_pilot_to(other, 1, 4, Duration::from_secs(3600));
    h.submit((0..4).map(|i| spec(i, 1)).collect());
    h.submit_to(other, (10..14).map(|i| spec(i, 1)).collect());
    assert_eq!(
        h.core.cores_bound(p(1)),
        4,
        "4 cores, no prefetch: 4 units at once"
    );
    assert_eq!(h.core.counts(S).total(), 4);
    assert_eq!(h.core.counts(other).total(), 4);
    assert_eq!(
        h.core.waiting(S) + h.core.waiting(other),
        4,
        "the rest wait in their own pools"
    );
}

#[test]
fn m_to_n_removing_a_pilot_from_one_service_takes_back_only_its_units() {
    let mut h = Harness::new(policy(4));
    let other = ServiceId(1);
    h.input(Input::AddService {
        service: other,
        policy: policy(4),
    });
    h.add_pilot_to(S, 1, 1, Duration::from_secs(3600));
    h.add_pilot_to(other, 1, 1, Duration::from_secs(3600));
    h.submit(vec![spec(0, 1), spec(1, 1)]);
    h.submit_to(other, vec![spec(10, 1), spec(11, 1)]);
    assert_eq!(h.queued(1).len(), 4);
    h.input(Input::RemovePilots {
        service: S,
        pilots: vec![p(1)],
    });
    assert_eq!(
        h.queued(1),
        [10, 11],
        "the other service's units stay queued"
    );
    assert_eq!(h.state(0), Some(UnitState::New));
    assert_eq!(h.core.waiting(S), 2);
}

#[test]
fn resume_a_replayed_history_rebuilds_the_state_and_settles_what_an_ended_pilot_held() {
    // A first core runs a session: unit 0 done, unit 1 running on pilot 1, unit 2 queued.
    let mut first = Harness::new(policy(4));
    first.add_pilot(1, 1);
    first.submit((0..3).map(|i| spec(i, 1)).collect());
    first.claim(1, 2);
    first.run(0, 1, UnitState::Done);
    first.unit_event(1, 1, UnitState::Running);
    let mut history = first.published.clone();
    // The manager dies; the pilot fails while no manager watches.
    history.push(Event::Pilot(pstar_coordination::PilotEvent {
        pilot: p(1),
        state: PilotState::Failed,
        at: at(5),
        detail: Some("agent killed".into()),
    }));
    history.push(Event::Resumed {
        token: 7,
        at: at(6),
    });
    // The history the stream holds also has the agent's reports (the harness published
    // them to the first core only): rebuild them from what the first core applied.
    let mut stream: Vec<Event> = Vec::new();
    for a in &first.applied {
        stream.push(Event::Unit(UnitEvent {
            unit: a.unit,
            pilot: if a.state == UnitState::Scheduled || a.state == UnitState::New {
                a.pilot
            } else {
                Some(p(1))
            },
            state: a.state,
            at: a.at,
            exit_code: a.exit_code,
            detail: a.detail.clone(),
            lost_run: None,
            failed_run: false,
            result: None,
        }));
    }
    stream.extend(history.into_iter().filter(|e| !matches!(e, Event::Unit(_))));

    let mut second = Harness::new(policy(4));
    second.input(Input::Replay { token: 7 });
    second.input(Input::Restore {
        service: S,
        units: (0..3).map(|i| spec(i, 1)).collect(),
    });
    second.input(Input::AddPilot {
        service: S,
        pilot: PilotSpec {
            id: p(1),
            cores: 1,
            gpus: 0,
            walltime: Duration::from_secs(3600),
        },
        state: PilotState::Failed,
        running_since: None,
    });
    second.queues.insert(p(1), first.queues[&p(1)].clone());
    second.at(6);
    second.events(stream);
    assert!(!second.core.replaying());
    assert_eq!(
        second.state(0),
        Some(UnitState::Done),
        "done is never run again"
    );
    assert_eq!(
        second.state(1),
        Some(UnitState::New),
        "the claimed run was lost: back to the pool"
    );
    assert_eq!(second.state(2), Some(UnitState::New), "never claimed: back");
    assert_eq!(second.core.counts(S).get(UnitState::Done), 1);
    assert!(second.published.iter().any(|e| matches!(e,
        Event::Unit(e) if e.unit == u(1) && e.lost_run.is_some())));
}

#[test]
fn cancels_asked_during_a_replay_are_carried_out_once_caught_up() {
    let mut h = Harness::default_policy();
    h.input(Input::Replay { token: 1 });
    h.input(Input::Restore {
        service: S,
        units: vec![spec(0, 1)],
    });
    h.events(vec![
        Event::CancelRequested {
            target: CancelTarget::Units(vec![u(0)]),
            reason: "from outside".into(),
            at: at(0),
        },
        Event::Resumed {
            token: 1,
            at: at(1),
        },
    ]);
    assert_eq!(h.state(0), Some(UnitState::Canceled));
    assert_eq!(h.detail(0).as_deref(), Some("from outside"));
}

#[test]
fn forgotten_units_leave_the_core_when_they_end() {
    let mut h = Harness::new(policy(0));
    h.input(Input::ForgetFinished { service: S });
    h.add_pilot(1, 1);
    h.submit(vec![spec(0, 1)]);
    h.claim(1, 1);
    h.run(0, 1, UnitState::Done);
    assert_eq!(h.state(0), None);
    assert_eq!(h.core.counts(S).get(UnitState::Done), 1);
    assert!(h.applied.last().is_some_and(|a| a.forgotten));
}

#[test]
fn steal_a_pilot_with_idle_cores_gets_units_that_wait_on_a_busy_one() {
    let mut h = Harness::default_policy();
    h.add_pilot(1, 1);
    // A small workload: the 1-core pilot, alone, gets it all (prefetch) and its agent
    // claims it all ahead.
    h.submit((0..10).map(|i| spec(i, 1)).collect());
    assert_eq!(h.queued(1).len(), 10);
    let claimed = h.claim(1, 8);
    h.unit_event(claimed[0], 1, UnitState::Running);
    // A 4-core pilot comes up: nothing waits in the pool, but 9 units wait on pilot 1.
    h.add_pilot(2, 4);
    // The 2 still queued are withdrawn at once; the agent is asked for claimed ones.
    let asked: Vec<UnitId> = h
        .controls
        .iter()
        .filter_map(|(p1, c)| match c {
            Control::ReturnUnits(units) if *p1 == p(1) => Some(units.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(h.queued(1).is_empty(), "queued units were withdrawn");
    assert_eq!(h.queued(2), [8, 9], "and bound to the idle pilot");
    assert_eq!(
        asked,
        [u(7), u(6)],
        "the last claimed are asked back, for 2 idle cores"
    );
    assert!(
        !asked.contains(&u(claimed[0])),
        "a running unit is never asked back"
    );
    // The agent gives them back: they go to the idle pilot, not back to pilot 1.
    for unit in [7, 6] {
        h.unit_event(unit, 1, UnitState::New);
    }
    assert_eq!(h.queued(2), [8, 9, 7, 6]);
    // Asked once: a unit the agent did not give back (it started meanwhile) is not asked
    // again while its state stays.
    let before = h.controls.len();
    h.settle();
    assert_eq!(h.controls.len(), before);
}

#[test]
fn steal_never_takes_early_bound_units_or_moves_work_between_busy_pilots() {
    let mut h = Harness::new(policy(1));
    h.add_pilot(1, 1);
    h.add_pilot(2, 1);
    let mut early = spec(0, 1);
    early.pilot = Some(p(1));
    h.submit(vec![early, spec(1, 1), spec(2, 1), spec(3, 1)]);
    h.claim(1, 4);
    h.claim(2, 4);
    // Both pilots have units bound beyond their cores and none idles: nothing moves.
    assert!(h.controls.is_empty());
    h.add_pilot(3, 1);
    let asked: Vec<UnitId> = h
        .controls
        .iter()
        .filter_map(|(_, c)| match c {
            Control::ReturnUnits(units) => Some(units.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(!asked.contains(&u(0)), "early-bound: stays on its pilot");
    assert_eq!(asked.len(), 1, "one idle core: one unit asked back");
}

#[test]
fn observer_a_canceled_unit_shows_the_reason_of_the_first_cancel_that_targets_it() {
    // How `pstar units` folds a session: an observer, fed the stream.
    let mut h = Harness::new(policy(0));
    h.core = Core::observer(at(0));
    h.core.handle(Input::AddService {
        service: S,
        policy: policy(0),
    });
    h.input(Input::Restore {
        service: S,
        units: (0..5).map(|i| spec(i, 1)).collect(),
    });
    h.input(Input::AddPilot {
        service: S,
        pilot: PilotSpec {
            id: p(1),
            cores: 8,
            gpus: 0,
            walltime: Duration::from_secs(3600),
        },
        state: PilotState::New,
        running_since: None,
    });
    h.pilot_event(1, PilotState::Running, "up");
    for unit in 0..5 {
        h.unit_event(unit, 1, UnitState::Scheduled);
        h.unit_event(unit, 1, UnitState::Pending);
    }
    h.run(2, 1, UnitState::Done);
    let cancel = |target, reason: &str| Event::CancelRequested {
        target,
        reason: reason.into(),
        at: at(1),
    };
    h.events(vec![
        cancel(CancelTarget::Units(vec![u(0)]), "canceled by alice"),
        cancel(CancelTarget::Pilot(p(1)), "not a unit's reason"),
        cancel(CancelTarget::Session, "canceled by bob"),
        cancel(
            CancelTarget::Units(vec![u(1)]),
            "too late: bob's came first",
        ),
    ]);
    assert!(h.published.is_empty(), "an observer decides nothing");
    assert!(h.controls.is_empty() && h.canceled_pilots.is_empty());
    // The agent reports them canceled, plainly or with its own reason.
    let canceled = |h: &mut Harness, unit: u64, detail: Option<&str>| {
        h.events(vec![Event::Unit(UnitEvent {
            unit: u(unit),
            pilot: Some(p(1)),
            state: UnitState::Canceled,
            at: at(2),
            exit_code: None,
            detail: detail.map(str::to_owned),
            lost_run: None,
            failed_run: false,
            result: None,
        })]);
    };
    canceled(&mut h, 0, Some("canceled"));
    canceled(&mut h, 1, None);
    canceled(&mut h, 3, Some("killed: its pilot was canceled"));
    let table = [
        (0, UnitState::Canceled, Some("canceled by alice")),
        (1, UnitState::Canceled, Some("canceled by bob")),
        (2, UnitState::Done, None),
        (
            3,
            UnitState::Canceled,
            Some("killed: its pilot was canceled"),
        ),
        (4, UnitState::Pending, None),
    ];
    for (unit, state, detail) in table {
        assert_eq!(h.state(unit), Some(state), "unit {unit}");
        assert_eq!(h.detail(unit).as_deref(), detail, "unit {unit}");
    }
}

/// Random interleavings of commands, agents' reports, pilot ends and cancels, for two
/// services sharing pilots; after every step the core's invariants hold (the harness
/// checks them), no unit ends twice, and at the end, once a big pilot runs whatever is
/// left, every unit has ended exactly once: none is lost.
mod interleavings {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Step {
        Submit {
            service: u32,
            n: u8,
            cores: u32,
            time: Option<u16>,
        },
        AddPilot {
            service: u32,
            cores: u32,
        },
        ShareLastPilot,
        Obey,
        Claim {
            pilot: u8,
            n: u8,
        },
        Start {
            pick: u16,
        },
        End {
            pick: u16,
            ok: bool,
        },
        PilotEnd {
            pilot: u8,
            how: u8,
        },
        Drain {
            pilot: u8,
        },
        Cancel {
            pick: u16,
        },
        CancelAll {
            service: u32,
        },
        RemovePilot {
            service: u32,
            pilot: u8,
        },
        Tick {
            secs: u16,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0..2u32, 1..6u8, 1..4u32, proptest::option::of(1..4000u16))
                .prop_map(|(service, n, cores, time)| Step::Submit { service, n, cores, time }),
            1 => (0..2u32, 1..5u32).prop_map(|(service, cores)| Step::AddPilot { service, cores }),
            1 => Just(Step::ShareLastPilot),
            4 => (0..6u8, 1..4u8).prop_map(|(pilot, n)| Step::Claim { pilot, n }),
            3 => any::<u16>().prop_map(|pick| Step::Start { pick }),
            4 => (any::<u16>(), any::<bool>()).prop_map(|(pick, ok)| Step::End { pick, ok }),
            1 => (0..6u8, 0..3u8).prop_map(|(pilot, how)| Step::PilotEnd { pilot, how }),
            1 => (0..6u8).prop_map(|pilot| Step::Drain { pilot }),
            1 => any::<u16>().prop_map(|pick| Step::Cancel { pick }),
            1 => (0..2u32).prop_map(|service| Step::CancelAll { service }),
            1 => (0..2u32, 0..6u8).prop_map(|(service, pilot)| Step::RemovePilot { service, pilot }),
            1 => (1..600u16).prop_map(|secs| Step::Tick { secs }),
            2 => Just(Step::Obey),
        ]
    }

    /// What the agents hold: claimed units per pilot and whether each started.
    #[derive(Default)]
    struct Agents {
        claimed: Vec<(u64, u64, bool)>,
    }

    /// The agents carry out the control messages the core sent: a unit to cancel is
    /// killed or dropped; a unit to give back is, if it has not started.
    fn obey(h: &mut Harness, agents: &mut Agents) {
        for (_, control) in std::mem::take(&mut h.controls) {
            match control {
                Control::CancelUnit(unit) => {
                    if let Some(i) = agents.claimed.iter().position(|c| u(c.0) == unit) {
                        let (unit, pilot, _) = agents.claimed.remove(i);
                        h.unit_event(unit, pilot, UnitState::Canceled);
                    }
                }
                Control::ReturnUnits(units) => {
                    for unit in units {
                        if let Some(i) = agents.claimed.iter().position(|c| u(c.0) == unit && !c.2)
                        {
                            let (unit, pilot, _) = agents.claimed.remove(i);
                            h.unit_event(unit, pilot, UnitState::New);
                        }
                    }
                }
                Control::CancelPilot => {}
            }
        }
    }

    fn play(steps: Vec<Step>) {
        let mut h = Harness::new(UnitPolicy {
            prefetch: 1,
            max_attempts: 2,
            black_hole_failures: 3,
            ..Default::default()
        });
        h.input(Input::AddService {
            service: ServiceId(1),
            policy: UnitPolicy {
                prefetch: 0,
                ..Default::default()
            },
        });
        let mut agents = Agents::default();
        let mut next_unit = 0u64;
        let mut pilots: Vec<(u64, u32)> = Vec::new();
        let mut secs = 0u64;
        for s in steps {
            match s {
                Step::Submit {
                    service,
                    n,
                    cores,
                    time,
                } => {
                    let units = (0..u64::from(n))
                        .map(|i| UnitSpec {
                            time_request: time.map(|t| Duration::from_secs(u64::from(t))),
                            ..spec(next_unit + i, cores)
                        })
                        .collect();
                    next_unit += u64::from(n);
                    h.submit_to(ServiceId(service), units);
                }
                Step::AddPilot { service, cores } => {
                    let id = pilots.len() as u64 + 1;
                    pilots.push((id, cores));
                    h.add_pilot_to(ServiceId(service), id, cores, Duration::from_secs(3600));
                }
                Step::ShareLastPilot => {
                    if let Some(&(id, cores)) = pilots.last() {
                        for service in 0..2 {
                            h.add_pilot_to(
                                ServiceId(service),
                                id,
                                cores,
                                Duration::from_secs(3600),
                            );
                        }
                    }
                }
                Step::Claim { pilot, n } => {
                    let pilot = u64::from(pilot);
                    if h.core.pilot_state(p(pilot)) == Some(PilotState::Running) {
                        for unit in h.claim(pilot, usize::from(n)) {
                            agents.claimed.push((unit, pilot, false));
                        }
                    }
                }
                Step::Start { pick } => {
                    if !agents.claimed.is_empty() {
                        let i = usize::from(pick) % agents.claimed.len();
                        let (unit, pilot, started) = agents.claimed[i];
                        if !started {
                            agents.claimed[i].2 = true;
                            h.unit_event(unit, pilot, UnitState::Running);
                        }
                    }
                }
                Step::End { pick, ok } => {
                    if !agents.claimed.is_empty() {
                        let i = usize::from(pick) % agents.claimed.len();
                        let (unit, pilot, started) = agents.claimed.remove(i);
                        if !started {
                            h.unit_event(unit, pilot, UnitState::Running);
                        }
                        let end = if ok {
                            UnitState::Done
                        } else {
                            UnitState::Failed
                        };
                        h.unit_event(unit, pilot, end);
                    }
                }
                Step::PilotEnd { pilot, how } => {
                    let state = [PilotState::Failed, PilotState::Done, PilotState::Canceled]
                        [usize::from(how)];
                    let pilot = u64::from(pilot);
                    // An agent that ends on its own returns its units first (what a real
                    // agent does on walltime or cancel); a failed one returns nothing.
                    if state != PilotState::Failed {
                        let mine: Vec<(u64, u64, bool)> = agents
                            .claimed
                            .iter()
                            .filter(|c| c.1 == pilot)
                            .copied()
                            .collect();
                        for (unit, _, _) in mine {
                            h.unit_event(unit, pilot, UnitState::New);
                        }
                    }
                    agents.claimed.retain(|c| c.1 != pilot);
                    h.queues.remove(&p(pilot));
                    h.pilot_event(pilot, state, "ended");
                }
                Step::Drain { pilot } => h.events(vec![Event::PilotDraining {
                    pilot: p(u64::from(pilot)),
                    at: h.now,
                }]),
                Step::Cancel { pick } => {
                    if next_unit > 0 {
                        let unit = u64::from(pick) % next_unit;
                        h.input(Input::Cancel {
                            units: vec![u(unit)],
                            reason: "canceled".into(),
                        });
                        obey(&mut h, &mut agents);
                    }
                }
                Step::CancelAll { service } => {
                    h.input(Input::CancelAll {
                        service: ServiceId(service),
                        reason: "all".into(),
                    });
                    obey(&mut h, &mut agents);
                }
                Step::RemovePilot { service, pilot } => h.input(Input::RemovePilots {
                    service: ServiceId(service),
                    pilots: vec![p(u64::from(pilot))],
                }),
                Step::Obey => obey(&mut h, &mut agents),
                Step::Tick { secs: more } => {
                    secs += u64::from(more);
                    h.at(secs);
                }
            }
            h.no_unit_ended_twice();
            for service in [ServiceId(0), ServiceId(1)] {
                let counts = h.core.counts(service);
                let held = h
                    .core
                    .unit_states()
                    .filter(|(_, s, _)| *s == service)
                    .count();
                assert_eq!(counts.total(), held, "counts match the units held");
            }
        }
        // The end: agents finish what they hold, a fresh big pilot with a long walltime
        // serves both services, and everything left runs. No unit may be lost.
        for (unit, pilot, started) in std::mem::take(&mut agents.claimed) {
            if h.core.pilot_state(p(pilot)).is_some_and(|s| !s.is_final()) {
                if !started {
                    h.unit_event(unit, pilot, UnitState::Running);
                }
                h.unit_event(unit, pilot, UnitState::Done);
            }
        }
        for (id, _) in &pilots {
            if h.core.pilot_state(p(*id)).is_some_and(|s| !s.is_final()) {
                h.queues.remove(&p(*id));
                h.pilot_event(*id, PilotState::Canceled, "end of the test");
            }
        }
        let big = pilots.len() as u64 + 1;
        for service in 0..2 {
            h.add_pilot_to(ServiceId(service), big, 16, Duration::from_secs(100_000));
        }
        for _ in 0..10_000 {
            let claimed = h.claim(big, 64);
            if claimed.is_empty() {
                break;
            }
            for unit in claimed {
                h.run(unit, big, UnitState::Done);
            }
        }
        for i in 0..next_unit {
            let state = h.state(i);
            assert!(
                state.is_some_and(|s| s.is_final()),
                "unit {i} was lost: it is {state:?}"
            );
        }
        h.no_unit_ended_twice();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn no_interleaving_loses_a_unit_or_ends_one_twice(steps in proptest::collection::vec(step(), 1..60)) {
            play(steps);
        }
    }
}

#[test]
fn steal_then_the_thief_fails_and_every_unit_still_ends() {
    let mut h = Harness::default_policy();
    h.add_pilot(1, 1);
    h.submit((0..12).map(|i| spec(i, 1)).collect());
    let claimed = h.claim(1, 16);
    assert_eq!(claimed.len(), 12);
    h.unit_event(0, 1, UnitState::Running);
    h.add_pilot(2, 2);
    let asked: Vec<UnitId> = h
        .controls
        .drain(..)
        .filter_map(|(_, c)| match c {
            Control::ReturnUnits(units) => Some(units),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(asked.len(), 2);
    for unit in &asked {
        h.unit_event(unit.get(), 1, UnitState::New);
    }
    let on2 = h.claim(2, 16);
    assert_eq!(on2.len(), 2, "{:?}", h.queued(2));
    for unit in &on2 {
        h.unit_event(*unit, 2, UnitState::Running);
    }
    h.pilot_event(2, PilotState::Failed, "agent killed");
    // Pilot 1 runs everything left, one by one.
    h.unit_event(0, 1, UnitState::Done);
    for _ in 0..50 {
        h.claim(1, 16);
        let next = (0..12).find(|i| {
            matches!(h.state(*i), Some(UnitState::Pending))
                && h.core.unit_pilot(u(*i)) == Some(p(1))
        });
        match next {
            Some(i) => h.run(i, 1, UnitState::Done),
            None => break,
        }
    }
    for i in 0..12 {
        assert_eq!(
            h.state(i),
            Some(UnitState::Done),
            "unit {i}: {:?}",
            h.detail(i)
        );
    }
}

// --- Pilot-Data: units that wait for their inputs, and placement next to data ---------

fn names(list: &[&str]) -> Box<[String]> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn data_event(
    name: &str,
    state: DataUnitState,
    size: u64,
    pilot: Option<u64>,
    store: Option<&str>,
) -> Event {
    Event::Data(DataEvent {
        at: at(0),
        size,
        pilot: pilot.map(p),
        store: store.map(Into::into),
        ..DataEvent::new(name, state)
    })
}

fn labels(dc: Option<&str>, machine: Option<&str>) -> Affinity {
    Affinity {
        datacenter: dc.map(Into::into),
        machine: machine.map(Into::into),
    }
}

impl Harness {
    /// Submits `unit` reading `inputs` and making `outputs`.
    fn submit_data(&mut self, unit: u64, inputs: &[&str], outputs: &[&str]) {
        self.input(Input::UnitNeeds(vec![UnitNeeds {
            unit: u(unit),
            inputs: names(inputs),
            outputs: names(outputs),
            after: Box::new([]),
            run_anyway: false,
        }]));
        self.submit(vec![spec(unit, 1)]);
    }
}

#[test]
fn data_a_unit_waits_outside_the_pool_until_its_input_is_available() {
    let mut h = Harness::new(policy(0));
    h.add_pilot(1, 2);
    h.input(Input::DeclareData(vec!["ref".into()]));
    h.submit_data(0, &["ref"], &[]);
    h.submit(vec![spec(1, 1)]);
    assert_eq!(h.queued(1), [1], "the unit without inputs goes first");
    assert_eq!(h.state(0), Some(UnitState::Waiting));
    h.events(vec![data_event(
        "ref",
        DataUnitState::Running,
        100,
        None,
        Some("archive"),
    )]);
    assert_eq!(h.queued(1), [1, 0]);
}

#[test]
fn data_an_output_read_by_a_later_unit_releases_it_and_a_failed_producer_cancels_it() {
    let mut h = Harness::new(policy(0));
    h.add_pilot(1, 4);
    h.submit_data(0, &[], &["a"]);
    h.submit_data(1, &["a"], &["b"]);
    h.submit_data(2, &["b"], &[]);
    assert_eq!(h.queued(1), [0]);
    h.claim(1, 1);
    h.unit_event(0, 1, UnitState::Pending);
    h.unit_event(0, 1, UnitState::Running);
    h.events(vec![data_event(
        "a",
        DataUnitState::Running,
        10,
        Some(1),
        None,
    )]);
    h.unit_event(0, 1, UnitState::Done);
    assert_eq!(h.queued(1), [1], "the output made, its reader is bound");
    h.claim(1, 1);
    h.unit_event(1, 1, UnitState::Pending);
    h.unit_event(1, 1, UnitState::Running);
    h.unit_event(1, 1, UnitState::Failed);
    h.settle();
    // Its producer failed: the reader is canceled, as with any failed dependency.
    assert_eq!(h.state(2), Some(UnitState::Canceled));
    assert_eq!(
        h.detail(2).as_deref(),
        Some("input data unit b failed: unit.000001, which makes it, ended failed")
    );
    h.no_unit_ended_twice();
}

#[test]
fn data_a_unit_goes_to_the_pilot_that_holds_its_input() {
    let mut h = Harness::new(policy(0));
    h.add_pilot(1, 4);
    h.add_pilot(2, 4);
    h.input(Input::DeclareData(vec!["ref".into()]));
    h.events(vec![
        data_event(
            "ref",
            DataUnitState::Running,
            1 << 30,
            None,
            Some("archive"),
        ),
        data_event("ref", DataUnitState::Running, 1 << 30, Some(2), None),
    ]);
    h.submit_data(0, &["ref"], &[]);
    assert_eq!((h.queued(1), h.queued(2)), (vec![], vec![0]));
}

#[test]
fn data_units_sharing_an_input_follow_the_first_one_bound() {
    let mut h = Harness::new(policy(0));
    h.add_pilot(1, 4);
    h.add_pilot(2, 4);
    h.input(Input::DeclareData(vec!["ref".into()]));
    h.events(vec![data_event(
        "ref",
        DataUnitState::Running,
        1 << 30,
        None,
        Some("archive"),
    )]);
    for i in 0..3 {
        h.submit_data(i, &["ref"], &[]);
    }
    // Without placement the two idle pilots would share them; the first bound makes its
    // pilot the one where the reference will be.
    let (a, b) = (h.queued(1), h.queued(2));
    assert!(
        a.len() == 3 || b.len() == 3,
        "all on one pilot: {a:?} {b:?}"
    );
}

#[test]
fn data_a_machine_label_match_beats_a_datacenter_match_beats_none() {
    let mut h = Harness::new(policy(0));
    for (id, affinity) in [
        (1, labels(Some("dc2"), None)),
        (2, labels(Some("dc1"), Some("m2"))),
        (3, labels(Some("dc1"), Some("m1"))),
    ] {
        h.add_pilot(id, 1);
        h.input(Input::PilotAffinity {
            pilot: p(id),
            affinity,
        });
    }
    h.input(Input::AddStore {
        name: "archive".into(),
        affinity: labels(Some("dc1"), Some("m1")),
    });
    h.input(Input::DeclareData(vec!["ref".into()]));
    h.events(vec![data_event(
        "ref",
        DataUnitState::Running,
        1000,
        None,
        Some("archive"),
    )]);
    for i in 0..3 {
        h.submit_data(i, &["ref"], &[]);
    }
    // The first unit goes to the pilot on the store's machine; the next, with pilot 3
    // holding it now but full, wait for it (locality_wait) rather than move the data.
    assert_eq!(
        (h.queued(1), h.queued(2), h.queued(3)),
        (vec![], vec![], vec![0])
    );
    h.at(5); // past locality_wait (3 s): take the nearest pilot with room
    h.input(Input::Tick(at(5)));
    assert_eq!(
        (h.queued(1), h.queued(2), h.queued(3)),
        (vec![2], vec![1], vec![0])
    );
}

#[test]
fn data_without_locality_wait_a_unit_takes_a_pilot_with_room_at_once() {
    let mut h = Harness::new(UnitPolicy {
        locality_wait: Duration::ZERO,
        ..policy(0)
    });
    h.add_pilot(1, 1);
    h.add_pilot(2, 1);
    h.input(Input::DeclareData(vec!["ref".into()]));
    h.events(vec![data_event(
        "ref",
        DataUnitState::Running,
        1000,
        Some(1),
        None,
    )]);
    h.submit_data(0, &["ref"], &[]);
    h.submit_data(1, &["ref"], &[]);
    assert_eq!((h.queued(1), h.queued(2)), (vec![0], vec![1]));
}

#[test]
fn data_a_failed_input_fails_its_readers_and_a_resumed_core_keeps_waiters_out_of_the_pool() {
    let mut h = Harness::new(policy(0));
    h.add_pilot(1, 1);
    h.input(Input::DeclareData(vec!["x".into(), "y".into()]));
    h.submit_data(0, &["x"], &[]);
    h.submit_data(1, &["y"], &[]);
    let mut failed = data_event("x", DataUnitState::Failed, 0, None, None);
    if let Event::Data(d) = &mut failed {
        d.detail = Some("checksum mismatch".into());
    }
    h.events(vec![failed]);
    h.settle();
    assert_eq!(h.state(0), Some(UnitState::Failed));
    assert_eq!(
        h.detail(0).as_deref(),
        Some("input data unit x failed: checksum mismatch")
    );
    assert_eq!(h.state(1), Some(UnitState::Waiting));
    assert!(h.queued(1).is_empty());
}

#[test]
fn a_cancel_between_a_bind_and_its_scheduled_event_reaches_the_unit() {
    let mut h = Harness::new(policy(0));
    h.add_pilot(1, 2);
    // Bound in a round whose events have not come back yet.
    h.core.handle(Input::Submit {
        service: S,
        units: vec![spec(0, 1)],
    });
    let round = h.core.round();
    assert_eq!(round.enqueue, [(p(1), vec![u(0)])]);
    h.core.handle(Input::Cancel {
        units: vec![u(0)],
        reason: "canceled".into(),
    });
    let next = h.core.round();
    assert_eq!(
        next.withdraw.len(),
        1,
        "the cancel asks the unit back from its pilot's queue"
    );
}

// --- Dependencies: units that run after others, and retries -------------------------

impl Harness {
    /// Submits, as one batch, units each running after those listed with it.
    fn submit_after(&mut self, units: &[(u64, &[u64])], run_anyway: bool) {
        self.input(Input::UnitNeeds(
            units
                .iter()
                .filter(|(_, after)| !after.is_empty())
                .map(|(unit, after)| UnitNeeds {
                    unit: u(*unit),
                    inputs: Box::new([]),
                    outputs: Box::new([]),
                    after: after.iter().map(|i| u(*i)).collect(),
                    run_anyway,
                })
                .collect(),
        ));
        self.submit(units.iter().map(|(unit, _)| spec(*unit, 1)).collect());
    }

    /// The agent of `pilot` reports a failed run of `unit` that it gives back to be tried
    /// again (the unit has retries).
    fn failed_run(&mut self, unit: u64, pilot: u64, exit_code: i32) {
        self.events(vec![Event::Unit(UnitEvent {
            unit: u(unit),
            pilot: Some(p(pilot)),
            state: UnitState::New,
            at: self.now,
            exit_code: Some(exit_code),
            detail: Some(format!("exit code {exit_code}")),
            lost_run: None,
            failed_run: true,
            result: None,
        })]);
    }
}

#[test]
fn deps_a_diamond_runs_in_order_each_unit_once_its_dependencies_are_done() {
    let mut h = Harness::new(policy(0));
    h.add_pilot(1, 4);
    // 0 -> {1, 2} -> 3, submitted in one batch, the last first.
    h.submit_after(&[(3, &[1, 2]), (1, &[0]), (2, &[0]), (0, &[])], false);
    assert_eq!(h.queued(1), [0], "only the root is bound");
    assert_eq!(h.state(3), Some(UnitState::Waiting));
    h.claim(1, 1);
    h.run(0, 1, UnitState::Done);
    assert_eq!(h.queued(1), [1, 2]);
    h.claim(1, 2);
    h.run(1, 1, UnitState::Done);
    assert!(h.queued(1).is_empty(), "3 still waits for 2");
    h.run(2, 1, UnitState::Done);
    assert_eq!(h.queued(1), [3]);
    h.claim(1, 1);
    h.run(3, 1, UnitState::Done);
    h.no_unit_ended_twice();
}

#[test]
fn deps_a_failed_dependency_cancels_its_dependents_and_theirs_naming_it() {
    let mut h = Harness::new(policy(0));
    h.add_pilot(1, 4);
    h.submit_after(&[(0, &[]), (1, &[0]), (2, &[1]), (3, &[])], false);
    h.claim(1, 2);
    h.run(0, 1, UnitState::Failed);
    assert_eq!(h.state(1), Some(UnitState::Canceled));
    assert_eq!(
        h.detail(1).as_deref(),
        Some("unit.000000, which it runs after, ended failed")
    );
    assert_eq!(h.state(2), Some(UnitState::Canceled));
    assert_eq!(
        h.detail(2).as_deref(),
        Some("unit.000001, which it runs after, ended canceled")
    );
    h.run(3, 1, UnitState::Done);
    // A unit submitted later after one that failed is canceled at once.
    h.submit_after(&[(4, &[0])], false);
    assert_eq!(h.state(4), Some(UnitState::Canceled));
    h.no_unit_ended_twice();
}

#[test]
fn deps_a_unit_that_runs_anyway_runs_once_its_failed_dependency_has_ended() {
    let mut h = Harness::new(policy(0));
    h.add_pilot(1, 4);
    h.submit_after(&[(0, &[]), (1, &[0])], true);
    h.claim(1, 1);
    h.unit_event(0, 1, UnitState::Running);
    assert!(
        h.queued(1).is_empty(),
        "it waits for the end, whatever it is"
    );
    h.unit_event(0, 1, UnitState::Failed);
    assert_eq!(h.queued(1), [1]);
}

#[test]
fn deps_a_waiting_unit_is_canceled_where_it_waits_and_its_dependents_with_it() {
    let mut h = Harness::new(policy(0));
    h.add_pilot(1, 1);
    h.submit_after(&[(0, &[]), (1, &[0]), (2, &[1])], false);
    h.input(Input::Cancel {
        units: vec![u(1)],
        reason: "not wanted".into(),
    });
    assert_eq!(h.state(1), Some(UnitState::Canceled));
    assert_eq!(h.detail(1).as_deref(), Some("not wanted"));
    assert_eq!(h.state(2), Some(UnitState::Canceled));
    h.claim(1, 1);
    h.run(0, 1, UnitState::Done);
    assert!(h.queued(1).is_empty());
    h.no_unit_ended_twice();
}

#[test]
fn deps_a_unit_after_one_the_core_forgot_knows_how_it_ended() {
    let mut h = Harness::new(policy(0));
    h.add_pilot(1, 2);
    h.input(Input::ForgetFinished { service: S });
    h.submit_after(&[(0, &[]), (1, &[])], false);
    h.claim(1, 2);
    h.run(0, 1, UnitState::Done);
    h.run(1, 1, UnitState::Failed);
    assert_eq!(h.state(0), None, "forgotten");
    h.submit_after(&[(2, &[0]), (3, &[1])], false);
    assert_eq!(h.queued(1), [2]);
    assert_eq!(h.finals.get(&u(3)), Some(&vec![UnitState::Canceled]));
    assert_eq!(
        h.detail(3).as_deref(),
        Some("unit.000001, which it runs after, ended failed")
    );
}

#[test]
fn retries_a_failed_run_goes_back_to_the_pool_until_the_retries_are_used_up() {
    let mut h = Harness::new(policy(0));
    h.add_pilot(1, 1);
    h.add_pilot(2, 1);
    let mut s = spec(0, 1);
    s.retries = 1;
    h.submit(vec![s]);
    let first = if h.queued(1) == [0] { 1 } else { 2 };
    h.claim(first, 1);
    h.unit_event(0, first, UnitState::Running);
    h.failed_run(0, first, 3);
    assert_eq!(h.state(0), Some(UnitState::Scheduled), "tried again");
    let second = if h.queued(1) == [0] { 1 } else { 2 };
    h.claim(second, 1);
    h.unit_event(0, second, UnitState::Running);
    h.failed_run(0, second, 4);
    assert_eq!(h.state(0), Some(UnitState::Failed));
    assert_eq!(
        h.detail(0).as_deref(),
        Some(
            format!(
                "failed 2 times: (1) exit code 3 (on pilot.{first:04}); \
                 (2) exit code 4 (on pilot.{second:04})"
            )
            .as_str()
        )
    );
    let last = h
        .applied
        .iter()
        .rev()
        .find(|a| a.unit == u(0))
        .map(|a| a.exit_code);
    assert_eq!(last, Some(Some(4)), "the last run's exit code");
    h.no_unit_ended_twice();
}

#[test]
fn retries_a_unit_whose_retries_were_used_up_when_the_manager_died_fails_on_resume() {
    // The history a manager killed between a failed run's report and its decision leaves:
    // two failed runs of a unit with one retry.
    let mut s = spec(0, 1);
    s.retries = 1;
    let e = |state, exit_code, failed_run| {
        Event::Unit(UnitEvent {
            unit: u(0),
            pilot: Some(p(1)),
            state,
            at: at(1),
            exit_code,
            detail: exit_code.map(|c| format!("exit code {c}")),
            lost_run: None,
            failed_run,
            result: None,
        })
    };
    let mut stream = Vec::new();
    for code in [1, 2] {
        stream.push(e(UnitState::Scheduled, None, false));
        stream.push(e(UnitState::Pending, None, false));
        stream.push(e(UnitState::Running, None, false));
        stream.push(e(UnitState::New, Some(code), true));
    }
    stream.push(Event::Resumed {
        token: 7,
        at: at(2),
    });
    let mut h = Harness::new(policy(0));
    h.input(Input::Replay { token: 7 });
    h.input(Input::Restore {
        service: S,
        units: vec![s],
    });
    h.add_pilot(1, 1);
    h.events(stream);
    assert!(!h.core.replaying());
    assert_eq!(h.state(0), Some(UnitState::Failed));
    assert!(h.queued(1).is_empty(), "not run a third time");
    let last = h
        .applied
        .iter()
        .rev()
        .find(|a| a.unit == u(0))
        .map(|a| a.exit_code);
    assert_eq!(last, Some(Some(2)));
}

#[test]
fn rerun_a_failed_unit_starts_over_and_its_canceled_dependent_with_it() {
    let mut h = Harness::new(policy(0));
    h.add_pilot(1, 2);
    h.submit_after(&[(0, &[]), (1, &[0]), (2, &[])], false);
    h.claim(1, 2);
    h.run(0, 1, UnitState::Failed);
    h.run(2, 1, UnitState::Done);
    assert_eq!(h.state(1), Some(UnitState::Canceled));
    h.events(vec![Event::RerunRequested {
        states: vec![UnitState::Failed, UnitState::Canceled],
        by: "me".into(),
        at: at(1),
    }]);
    assert_eq!(h.state(0), Some(UnitState::Scheduled), "run again");
    assert_eq!(h.state(1), Some(UnitState::Waiting), "waits for it again");
    assert_eq!(h.state(2), Some(UnitState::Done), "done stays done");
    assert_eq!(h.core.counts(S).get(UnitState::Failed), 0);
    h.claim(1, 1);
    h.run(0, 1, UnitState::Done);
    assert_eq!(h.queued(1), [1]);
    h.claim(1, 1);
    h.run(1, 1, UnitState::Done);
    assert_eq!(h.core.counts(S).get(UnitState::Done), 3);
}

#[test]
fn rerun_is_not_undone_by_a_cancel_asked_before_it() {
    // The history: a unit canceled from outside, then a resume that reruns it.
    let e = |state| {
        Event::Unit(UnitEvent {
            unit: u(0),
            pilot: None,
            state,
            at: at(1),
            exit_code: None,
            detail: None,
            lost_run: None,
            failed_run: false,
            result: None,
        })
    };
    let stream = vec![
        Event::CancelRequested {
            target: pstar_coordination::CancelTarget::Units(vec![u(0)]),
            reason: "canceled by me".into(),
            at: at(1),
        },
        e(UnitState::Canceled),
        Event::RerunRequested {
            states: vec![UnitState::Canceled],
            by: "me".into(),
            at: at(2),
        },
        Event::Resumed {
            token: 7,
            at: at(3),
        },
    ];
    let mut h = Harness::new(policy(0));
    h.input(Input::Replay { token: 7 });
    h.input(Input::Restore {
        service: S,
        units: vec![spec(0, 1)],
    });
    h.add_pilot(1, 1);
    h.events(stream);
    assert!(!h.core.replaying());
    assert_eq!(h.state(0), Some(UnitState::New), "it runs again");
    assert_eq!(h.core.waiting(S), 1, "in the pool, not canceled once more");
}
