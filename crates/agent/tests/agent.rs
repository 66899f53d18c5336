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
        agent: Default::default(),
        restart_of: None,
    }
}

async fn next_unit_state(
    events: &mut Subscription,
    unit: UnitId,
    state: UnitState,
) -> pstar_coordination::UnitEvent {
    let mut reached = units_reach(events, &[(unit, state)]).await;
    reached.remove(0)
}

/// Waits until each unit has reached its state; their events, in the order asked.
async fn units_reach(
    events: &mut Subscription,
    wanted: &[(UnitId, UnitState)],
) -> Vec<pstar_coordination::UnitEvent> {
    let mut found: Vec<Option<pstar_coordination::UnitEvent>> = vec![None; wanted.len()];
    tokio::time::timeout(DEADLINE, async {
        while found.iter().any(Option::is_none) {
            let batch = events
                .next_batch()
                .await
                .expect("store closed")
                .expect("store lost");
            for e in batch.iter() {
                if let Event::Unit(u) = e
                    && let Some(i) = wanted.iter().position(|w| *w == (u.unit, u.state))
                {
                    found[i] = Some(u.clone());
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not every unit of {wanted:?} got there"));
    found.into_iter().flatten().collect()
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

/// Queues one unit of `/bin/sh -c script` for pilot 0; returns its id.
async fn queue_script(store: &Arc<Embedded>, script: &str) -> UnitId {
    let unit = store.reserve_unit_ids(1).await.unwrap();
    let desc = ComputeUnitDescription::new("/bin/sh").with_arguments(["-c", script]);
    store.put_units(&[(unit, Arc::new(desc))]).await.unwrap();
    store.enqueue(PilotId::new(0), &[unit]).await.unwrap();
    unit
}

/// The pid a unit wrote to `file` in its sandbox.
async fn pid_in(sandbox: &std::path::Path, file: &str) -> i32 {
    let path = sandbox.join(file);
    eventually(&format!("{}", path.display()), || {
        std::fs::read_to_string(&path).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    std::fs::read_to_string(&path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A daemon started with `setsid` and one started through a double fork (its parent exits,
/// its own session): neither is in the unit's process group.
const DAEMONS: &str = "setsid sleep 1000 & echo $! > setsid.pid; \
    sh -c 'setsid sleep 1000 & echo $! > forked.pid' & wait $!";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_daemon_outlives_its_unit() {
    // This test process starts no child of its own, as `pstar agent` does not.
    pstar_agent::descendants::adopt_all_orphans();
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::new("s");
    let mut events = store.subscribe().await.unwrap();
    let unit = queue_script(&store, DAEMONS).await;
    let rec = record(dir.path(), 1);
    let sandbox = rec.sandbox.join(unit.to_string());
    let agent = tokio::spawn(Agent::new(store.clone(), rec, AgentConfig::default()).run());
    next_unit_state(&mut events, unit, UnitState::Done).await;
    let (a, b) = (
        pid_in(&sandbox, "setsid.pid").await,
        pid_in(&sandbox, "forked.pid").await,
    );
    eventually("the setsid daemon to die", || !alive(a)).await;
    eventually("the double-forked daemon to die", || !alive(b)).await;
    // Reparented to this process (the agent's host), killed, and reaped: no zombie left.
    let gone = |pid: i32| !std::path::Path::new(&format!("/proc/{pid}")).exists();
    eventually("the daemons to be reaped", || gone(a) && gone(b)).await;
    agent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_keeps_the_exit_status_of_its_own_children() {
    // Even where every dead child of the main thread is reaped.
    pstar_agent::descendants::adopt_all_orphans();
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::new("s");
    let mut events = store.subscribe().await.unwrap();
    // Its child ends while the agent sweeps for orphans: the unit, not the agent, reaps it.
    let unit = queue_script(&store, "(sleep 0.6; exit 7) & wait $!; exit $?").await;
    let agent = tokio::spawn(
        Agent::new(store.clone(), record(dir.path(), 1), AgentConfig::default()).run(),
    );
    let failed = next_unit_state(&mut events, unit, UnitState::Failed).await;
    assert_eq!(failed.exit_code, Some(7), "{failed:?}");
    agent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_daemon_outlives_a_canceled_unit_or_its_agent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::new("s");
    let mut events = store.subscribe().await.unwrap();
    let script = format!("{DAEMONS}; sleep 1000");
    let canceled = queue_script(&store, &script).await;
    let left = queue_script(&store, &script).await;
    let rec = record(dir.path(), 2);
    let (s1, s2) = (
        rec.sandbox.join(canceled.to_string()),
        rec.sandbox.join(left.to_string()),
    );
    let config = AgentConfig {
        kill_grace: Duration::from_millis(200),
        ..AgentConfig::default()
    };
    let agent = tokio::spawn(Agent::new(store.clone(), rec, config).run());
    let daemons = [
        pid_in(&s1, "setsid.pid").await,
        pid_in(&s1, "forked.pid").await,
        pid_in(&s2, "setsid.pid").await,
        pid_in(&s2, "forked.pid").await,
    ];
    store
        .send_control(
            PilotId::new(0),
            pstar_coordination::Control::CancelUnit(canceled),
        )
        .await
        .unwrap();
    next_unit_state(&mut events, canceled, UnitState::Canceled).await;
    eventually("the canceled unit's daemons to die", || {
        !alive(daemons[0]) && !alive(daemons[1])
    })
    .await;
    assert!(
        alive(daemons[2]) && alive(daemons[3]),
        "a running unit's daemons stay"
    );

    agent.abort();
    let _ = agent.await;
    eventually("the aborted agent's daemons to die", || {
        !alive(daemons[2]) && !alive(daemons[3])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_interpreter_is_named() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("job.sh");
    std::fs::write(&script, "#!/nonexistent/interp -x\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = Embedded::new("s");
    let mut events = store.subscribe().await.unwrap();
    let first = store.reserve_unit_ids(2).await.unwrap();
    let (direct, behind_shell) = (first, UnitId::new(first.get() + 1));
    let desc = ComputeUnitDescription::new(script.to_str().unwrap());
    // With `pre_exec` the script is started by a shell, which would only say "not found".
    let mut with_pre_exec = desc.clone();
    with_pre_exec.pre_exec = vec!["true".into()];
    store
        .put_units(&[
            (direct, Arc::new(desc)),
            (behind_shell, Arc::new(with_pre_exec)),
        ])
        .await
        .unwrap();
    store
        .enqueue(PilotId::new(0), &[direct, behind_shell])
        .await
        .unwrap();
    let agent = tokio::spawn(
        Agent::new(store.clone(), record(dir.path(), 1), AgentConfig::default()).run(),
    );
    // Both at once: one batch may carry both ends.
    let ends = units_reach(
        &mut events,
        &[
            (direct, UnitState::Failed),
            (behind_shell, UnitState::Failed),
        ],
    )
    .await;
    for (unit, failed) in [direct, behind_shell].into_iter().zip(ends) {
        let detail = failed.detail.unwrap_or_default();
        assert!(
            detail.contains("/nonexistent/interp") && detail.contains("job.sh"),
            "{unit}: {detail}"
        );
    }
    agent.abort();
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_grow_with_what_runs_not_with_declared_cores() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::new("s");
    let mut events = store.subscribe().await.unwrap();
    let before = threads();
    let running = queue_script(&store, "sleep 1000").await;
    let quick = queue_script(&store, "true").await;
    let agent = tokio::spawn(
        Agent::new(
            store.clone(),
            record(dir.path(), 100_000),
            AgentConfig::default(),
        )
        .run(),
    );
    // `running` starts first (claim order), and `quick` after it. (Waiting for one event
    // and then the other could miss the second: one batch may carry both.)
    next_unit_state(&mut events, quick, UnitState::Done).await;
    let sleeping = std::fs::read_to_string(
        record(dir.path(), 1)
            .sandbox
            .join(running.to_string())
            .join("stderr"),
    );
    assert!(sleeping.is_ok(), "{running} never started");
    let during = threads();
    assert!(
        during < before + 32,
        "{during} threads for 2 units (before the agent: {before})"
    );
    agent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_and_stderr_that_are_one_file_keep_both_streams() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("out.txt");
    let alias = dir.path().join("alias.txt");
    std::fs::write(&real, "").unwrap();
    std::os::unix::fs::symlink(&real, &alias).unwrap();
    let store = Embedded::new("s");
    let mut events = store.subscribe().await.unwrap();
    let unit = store.reserve_unit_ids(1).await.unwrap();
    let desc = ComputeUnitDescription {
        stdout: Some(real.display().to_string()),
        stderr: Some(alias.display().to_string()),
        ..ComputeUnitDescription::new("/bin/sh").with_arguments(["-c", "echo OUT; echo ERR >&2"])
    };
    store.put_units(&[(unit, Arc::new(desc))]).await.unwrap();
    store.enqueue(PilotId::new(0), &[unit]).await.unwrap();
    let agent = tokio::spawn(
        Agent::new(store.clone(), record(dir.path(), 1), AgentConfig::default()).run(),
    );
    next_unit_state(&mut events, unit, UnitState::Done).await;
    assert_eq!(std::fs::read_to_string(&real).unwrap(), "OUT\nERR\n");
    agent.abort();
}

/// A unit the manager asks back (for a pilot whose cores idle) is given back if it still
/// waits for cores here, reported `New` with why; one already running runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_asked_back_are_given_back_only_if_they_have_not_started() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::new("s");
    let mut events = store.subscribe().await.unwrap();
    let running = queue_script(&store, "sleep 0.5").await;
    let waiting = queue_script(&store, "sleep 0.5").await;
    let agent = tokio::spawn(
        Agent::new(store.clone(), record(dir.path(), 1), AgentConfig::default()).run(),
    );
    units_reach(
        &mut events,
        &[(running, UnitState::Running), (waiting, UnitState::Pending)],
    )
    .await;
    store
        .send_control(
            PilotId::new(0),
            pstar_coordination::Control::ReturnUnits(vec![running, waiting]),
        )
        .await
        .unwrap();
    let got = units_reach(
        &mut events,
        &[(waiting, UnitState::New), (running, UnitState::Done)],
    )
    .await;
    assert_eq!(
        got[0].detail.as_deref(),
        Some("given back by pilot.0000 for a pilot with idle cores")
    );
    // The manager may bind a unit given back to this pilot again (its new pilot failed,
    // say): that claim runs it, it is not a second copy.
    store.enqueue(PilotId::new(0), &[waiting]).await.unwrap();
    units_reach(&mut events, &[(waiting, UnitState::Done)]).await;
    agent.abort();
}

/// A unit whose `time_request` does not fit in the walltime its pilot has left is given
/// back (reported `New`, with both durations), not started and cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_that_needs_more_time_than_the_pilot_has_left_is_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::new("s");
    let mut events = store.subscribe().await.unwrap();
    let unit = store.reserve_unit_ids(1).await.unwrap();
    let desc =
        ComputeUnitDescription::new("/bin/true").with_time_request(Duration::from_secs(3600));
    store.put_units(&[(unit, Arc::new(desc))]).await.unwrap();
    store.enqueue(PilotId::new(0), &[unit]).await.unwrap();
    let mut rec = record(dir.path(), 1);
    rec.description.walltime = Duration::from_secs(600);
    let agent = tokio::spawn(Agent::new(store.clone(), rec, AgentConfig::default()).run());
    let got = units_reach(&mut events, &[(unit, UnitState::New)]).await;
    let detail = got[0].detail.as_deref().unwrap_or_default();
    assert!(
        detail.starts_with("needs 1h of run time (time_request) and pilot.0000 has 9m"),
        "{detail}"
    );
    agent.abort();
}
