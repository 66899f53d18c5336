//! The agent alone, on the embedded store: no manager, real processes.

use std::sync::Arc;
use std::time::Duration;

use pstar_agent::{Agent, AgentConfig};
use pstar_coordination::{Coordination, Embedded, Event, PilotRecord, Subscription};
use pstar_model::{
    ComputeUnitDescription, PilotComputeDescription, PilotId, PilotState, State, UnitId, UnitState,
};

const DEADLINE: Duration = Duration::from_secs(30);

fn record(dir: &std::path::Path, cores: u32) -> PilotRecord {
    PilotRecord {
        id: PilotId::new(0),
        description: PilotComputeDescription {
            cores,
            ..Default::default()
        },
        sandbox: dir.join("pilot.0000"),
        job: None,
    }
}

async fn next_unit_state(events: &mut Subscription, unit: UnitId, state: UnitState) {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let batch = events
                .next_batch()
                .await
                .expect("store closed")
                .expect("store lost");
            if batch
                .iter()
                .any(|e| matches!(e, Event::Unit(u) if u.unit == unit && u.state == state))
            {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{unit} never became {state}"));
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_unit_process_outlives_an_aborted_agent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::new("s");
    let mut events = store.subscribe().await.unwrap();
    let unit = store.reserve_unit_ids(1).await.unwrap();
    let script = "sleep 300 & echo $! > child.pid; wait";
    let desc = ComputeUnitDescription::new("/bin/sh").with_arguments(["-c", script]);
    store.put_units(&[(unit, Arc::new(desc))]).await.unwrap();
    store.enqueue(PilotId::new(0), &[unit]).await.unwrap();

    let rec = record(dir.path(), 1);
    let pid_file = rec.sandbox.join(unit.to_string()).join("child.pid");
    let agent = tokio::spawn(Agent::new(store.clone(), rec, AgentConfig::default()).run());
    next_unit_state(&mut events, unit, UnitState::Running).await;
    eventually("the child's pid", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    let child: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(child));

    agent.abort();
    assert!(agent.await.unwrap_err().is_cancelled());
    eventually("the unit's background child to die", || !alive(child)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_pilot_returns_its_units_before_it_reports_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::new("s");
    let mut events = store.subscribe().await.unwrap();
    let first = store.reserve_unit_ids(3).await.unwrap();
    let ids: Vec<UnitId> = (0..3).map(|i| UnitId::new(first.get() + i)).collect();
    let units: Vec<_> = ids
        .iter()
        .map(|id| {
            (
                *id,
                Arc::new(ComputeUnitDescription::new("/bin/sleep").with_arguments(["300"])),
            )
        })
        .collect();
    store.put_units(&units).await.unwrap();
    store.enqueue(PilotId::new(0), &ids).await.unwrap();

    let config = AgentConfig {
        kill_grace: Duration::from_millis(200),
        ..AgentConfig::default()
    };
    let agent = tokio::spawn(Agent::new(store.clone(), record(dir.path(), 1), config).run());
    next_unit_state(&mut events, ids[0], UnitState::Running).await;
    store
        .send_control(PilotId::new(0), pstar_coordination::Control::CancelPilot)
        .await
        .unwrap();
    let end = tokio::time::timeout(DEADLINE, agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(end, PilotState::Canceled);

    // Everything the agent said, in order: each unit goes back to the pool (`New`) before
    // the pilot's final event, and none of them ends `Failed` or `Done`.
    let mut seen = Vec::new();
    while let Ok(Some(Ok(batch))) =
        tokio::time::timeout(Duration::from_millis(200), events.next_batch()).await
    {
        seen.extend(batch.iter().cloned());
    }
    let end_at = seen
        .iter()
        .position(|e| matches!(e, Event::Pilot(p) if p.state == PilotState::Canceled))
        .expect("the pilot reported its end");
    for id in &ids {
        let back = seen.iter().position(
            |e| matches!(e, Event::Unit(u) if u.unit == *id && u.state == UnitState::New),
        );
        assert!(
            back.is_some_and(|b| b < end_at),
            "{id} was not returned before the pilot ended: {seen:?}"
        );
        assert!(
            !seen
                .iter()
                .any(|e| matches!(e, Event::Unit(u) if u.unit == *id && u.state.is_final()))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_queued_twice_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::new("s");
    let mut events = store.subscribe().await.unwrap();
    let first = store.reserve_unit_ids(2).await.unwrap();
    let (dup, last) = (first, UnitId::new(first.get() + 1));
    let log = dir.path().join("runs.log");
    let append = |id: UnitId| {
        let script = format!("echo {id} >> {}", log.display());
        (
            id,
            Arc::new(
                ComputeUnitDescription::new("/bin/sh").with_arguments(["-c", script.as_str()]),
            ),
        )
    };
    store.put_units(&[append(dup), append(last)]).await.unwrap();
    // What a retried enqueue whose first reply was lost would leave in the queue.
    store
        .enqueue(PilotId::new(0), &[dup, dup, last])
        .await
        .unwrap();
    let agent = tokio::spawn(
        Agent::new(store.clone(), record(dir.path(), 1), AgentConfig::default()).run(),
    );
    next_unit_state(&mut events, last, UnitState::Done).await;
    agent.abort();
    let runs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        runs.lines().filter(|l| *l == dup.to_string()).count(),
        1,
        "{runs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_working_directory_is_taken_inside_the_unit_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::new("s");
    let mut events = store.subscribe().await.unwrap();
    let unit = store.reserve_unit_ids(1).await.unwrap();
    let desc = ComputeUnitDescription {
        working_directory: Some("..".into()),
        ..ComputeUnitDescription::new("/bin/pwd")
    };
    store.put_units(&[(unit, Arc::new(desc))]).await.unwrap();
    store.enqueue(PilotId::new(0), &[unit]).await.unwrap();

    let rec = record(dir.path(), 1);
    let pilot_sandbox = rec.sandbox.clone();
    let agent = tokio::spawn(Agent::new(store.clone(), rec, AgentConfig::default()).run());
    next_unit_state(&mut events, unit, UnitState::Done).await;
    let printed = std::fs::read_to_string(pilot_sandbox.join(unit.to_string()).join("stdout"))
        .expect("the unit's stdout");
    // `..` of the unit's sandbox, not of the agent's working directory.
    assert_eq!(
        std::path::Path::new(printed.trim_end()),
        pilot_sandbox.canonicalize().unwrap()
    );
    agent.abort();
}
