//! A running session meets what it did not start: a second `pstar agent` for a pilot that
//! has one, an agent whose lease another one took, values on the event stream that no
//! pstar of this version wrote. Against a real `redis-server` and real `pstar` processes;
//! part of the `cli` test binary.

use super::*;

use pstar_testbed::RedisServer;

use super::redis_runs::{agent_pids, counting_workload, done_lines, pstar_over, run_over};

/// The events of `session`'s stream, each batch decoded (batches that are not the current
/// format's JSON are left out).
fn stream_events(server: &RedisServer, session: &str) -> Vec<Value> {
    server
        .cli(&["XRANGE", &format!("pstar:{session}:events"), "-", "+"])
        .lines()
        .filter_map(|l| l.strip_prefix("v1:"))
        .filter_map(|json| serde_json::from_str::<Vec<Value>>(json).ok())
        .flatten()
        .collect()
}

/// The pilot events of `session`'s stream, as their states.
fn pilot_states(server: &RedisServer, session: &str) -> Vec<String> {
    stream_events(server, session)
        .iter()
        .filter_map(|e| e["Pilot"]["state"].as_str().map(str::to_owned))
        .collect()
}

/// The agent log of the run's first pilot.
fn first_agent_log(scratch: &Scratch) -> String {
    let session = std::fs::read_dir(scratch.sandbox())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .next()
        .unwrap_or_default();
    std::fs::read_to_string(session.join("pilot.0000").join("agent.log")).unwrap_or_default()
}

#[test]
fn a_second_agent_for_a_pilot_with_a_live_one_is_refused_and_publishes_nothing() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let workload = counting_workload(&scratch, &[2], 16, 0.3);
    let run = run_over(&server, &scratch, &workload, &[]);
    let session = session_of(&scratch);
    wait_until(Duration::from_secs(30), "units to finish", || {
        done_lines(&scratch) >= 2
    });
    let mut cmd = pstar();
    cmd.current_dir(scratch.path())
        .env("PSTAR_REDIS_PASSWORD", server.password())
        .env("PSTAR_COORDINATION", server.url())
        .args(["agent", "--session", &session, "--pilot", "pilot.0000"]);
    let second = Running::start(cmd).wait(Duration::from_secs(30));
    assert_ne!(second.code(), Some(0), "{second}");
    assert!(
        second
            .stderr
            .contains("pilot.0000 already has a live agent (pid "),
        "{second}"
    );
    assert!(
        second.stderr.contains("would run its units twice"),
        "{second}"
    );
    let out = run.wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(0), "{out}");
    let report = scratch.read_report();
    assert!(
        units(&report).iter().all(|u| u["state"] == "done"),
        "{report}"
    );
    // The refused agent said nothing about the pilot: one start, one end.
    let states = pilot_states(&server, &session);
    assert_eq!(
        states.iter().filter(|s| *s == "running").count(),
        1,
        "{states:?}"
    );
    let ends = ["done", "canceled", "failed"];
    assert_eq!(
        states.iter().filter(|s| ends.contains(&s.as_str())).count(),
        1,
        "{states:?}"
    );
}

#[test]
fn an_agent_whose_lease_another_took_gives_its_units_back_and_does_not_end_the_pilot() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let workload = counting_workload(&scratch, &[2], 8, 300.0);
    let run = run_over(&server, &scratch, &workload, &["--heartbeat-timeout", "1h"]);
    let session = session_of(&scratch);
    wait_until(Duration::from_secs(30), "units to run", || {
        stream_events(&server, &session)
            .iter()
            .any(|e| e["Unit"]["state"] == "running")
    });
    let agents = agent_pids(run.pid(), "pilot.0000");
    assert_eq!(agents.len(), 1);
    // Another agent has taken the pilot (this one was stopped past its lease, say).
    let other = r#"v1:{"token":7,"host":"elsewhere","pid":4242,"since":1700000000.0}"#;
    server.cli(&["SET", &format!("pstar:{session}:lease:0"), other]);
    let gone = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z'))
        })
    };
    wait_until(Duration::from_secs(60), "the agent to stop", || {
        gone(agents[0])
    });
    let log = first_agent_log(&scratch);
    assert!(
        log.contains("another agent runs this pilot now (pid 4242 on elsewhere"),
        "{log}"
    );
    // It did not end the pilot (the other agent will), and its units went back.
    // (The manager fails it once its job ends: here the job was that agent's process.)
    let by_agent: Vec<Value> = stream_events(&server, &session)
        .into_iter()
        .filter(|e| {
            let state = e["Pilot"]["state"].as_str().unwrap_or("");
            let detail = e["Pilot"]["detail"].as_str().unwrap_or("");
            ["done", "canceled", "failed"].contains(&state) && !detail.starts_with("agent process")
        })
        .collect();
    assert!(by_agent.is_empty(), "{by_agent:?}");
    let returned = stream_events(&server, &session)
        .iter()
        .filter(|e| {
            e["Unit"]["state"] == "new"
                && e["Unit"]["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("another agent runs pilot.0000 now"))
        })
        .count();
    assert_eq!(
        returned, 8,
        "every unit it held, running or waiting, went back"
    );
    // The lease is left to its holder.
    assert_eq!(
        server
            .cli(&["GET", &format!("pstar:{session}:lease:0")])
            .trim(),
        other
    );
    drop(run);
}

/// `pstar run --resume session` against `server`.
fn resume(server: &RedisServer, scratch: &Scratch, session: &str) -> Output {
    let mut cmd = pstar();
    cmd.current_dir(scratch.path())
        .env("PSTAR_REDIS_PASSWORD", server.password())
        .env("PSTAR_AGENT_BIN", env!("CARGO_BIN_EXE_pstar"))
        .args(["run", "--resume", session, "--coordination", &server.url()])
        .args(["--sandbox", s(&scratch.sandbox()), "-q"]);
    Running::start(cmd).wait(RUN_DEADLINE)
}

#[test]
fn an_event_batch_of_another_store_format_is_named_not_taken_for_a_lost_store() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let workload = counting_workload(&scratch, &[2], 30, 0.5);
    let run = run_over(&server, &scratch, &workload, &[]);
    let session = session_of(&scratch);
    wait_until(Duration::from_secs(30), "units to finish", || {
        done_lines(&scratch) >= 2
    });
    let agents = agent_pids(run.pid(), "pilot.0000");
    let stream = format!("pstar:{session}:events");
    server.cli(&["XADD", &stream, "*", "e", "v9:garbage"]);
    let out = run.wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(1), "{out}");
    let said = "the session's event stream holds a value this pstar cannot read";
    assert!(out.stderr.contains(said), "{out}");
    assert!(
        out.stderr
            .contains("written in pstar store format v9; this pstar reads v1"),
        "{out}"
    );
    assert!(!out.stderr.contains("lost the coordination store"), "{out}");
    assert!(!out.stderr.contains("pick the session up"), "{out}");
    // Nothing can follow the session past it: its pilots were stopped.
    let gone = |pid: &i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z'))
        })
    };
    wait_until(Duration::from_secs(30), "the agent to be stopped", || {
        agents.iter().all(gone)
    });
    let again = resume(&server, &scratch, &session);
    assert_ne!(again.code(), Some(0), "{again}");
    assert!(again.stderr.contains("store format v9"), "{again}");
    assert!(
        !again.stderr.contains("lost the coordination store"),
        "{again}"
    );
}

/// A run of units that take long, on one pilot of 2 cores, once two of them run.
fn long_units_running(server: &RedisServer, scratch: &Scratch) -> (Running, String) {
    let workload = counting_workload(scratch, &[2], 6, 300.0);
    let run = run_over(server, scratch, &workload, &[]);
    let session = session_of(scratch);
    wait_until(Duration::from_secs(30), "units to run", || {
        let out = pstar_over(
            server,
            scratch,
            &["units", "--session", &session, "--state", "running"],
        );
        out.stdout.lines().count() == 3
    });
    (run, session)
}

#[test]
fn a_stray_event_batch_is_skipped_by_status_units_and_cancel() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let (run, session) = long_units_running(&server, &scratch);
    let stream = format!("pstar:{session}:events");
    server.cli(&["XADD", &stream, "*", "e", r#"v1:[{"Weird":{}}]"#]);
    server.cli(&["XADD", &stream, "*", "e", "v1:not json"]);
    // A unit description that does not decode either (an agent that claims it fails it).
    server.cli(&[
        "HSET",
        &format!("pstar:{session}:units"),
        "99",
        "v1:not json",
    ]);
    let option = ["--session", session.as_str()];
    for args in [
        vec!["status"],
        vec!["units"],
        vec!["cancel", "unit.000005"],
        vec!["cancel", "--all"],
    ] {
        let args: Vec<&str> = args.iter().chain(&option).copied().collect();
        let out = pstar_over(&server, &scratch, &args);
        assert_eq!(out.code(), Some(0), "{args:?}: {out}");
        assert!(
            out.stderr
                .contains("skipped an event batch that cannot be read"),
            "{args:?}: {out}"
        );
        assert!(
            out.stderr
                .contains("skipped a unit whose description cannot be read"),
            "{args:?}: {out}"
        );
    }
    // The manager skipped them too, and carried the cancel out.
    let out = run.wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("(pstar cancel)"), "{out}");
    let report = scratch.read_report();
    assert!(
        units(&report).iter().all(|u| u["state"] == "canceled"),
        "{report}"
    );
}

#[test]
fn units_shows_a_canceled_unit_with_the_reason_of_its_cancel() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let (run, session) = long_units_running(&server, &scratch);
    let running = pstar_over(
        &server,
        &scratch,
        &["units", "--session", &session, "--state", "running"],
    );
    let unit = running
        .stdout
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("a running unit")
        .to_owned();
    let one = pstar_over(&server, &scratch, &["cancel", "--session", &session, &unit]);
    assert_eq!(one.code(), Some(0), "{one}");
    let me = pstar_coordination::redis::current_user();
    let reason = format!("canceled by {me} (pstar cancel)");
    wait_until(Duration::from_secs(30), "the unit's cancel", || {
        let out = pstar_over(
            &server,
            &scratch,
            &["units", "--session", &session, "--state", "canceled"],
        );
        out.stdout.contains(&unit)
    });
    // Canceled units whose detail is not the cancel's reason.
    let without_reason = || {
        let out = pstar_over(
            &server,
            &scratch,
            &["units", "--session", &session, "--state", "canceled"],
        );
        assert_eq!(out.code(), Some(0), "{out}");
        let lines: Vec<String> = out.stdout.lines().skip(1).map(str::to_owned).collect();
        assert!(!lines.is_empty(), "{out}");
        lines
            .into_iter()
            .filter(|l| !l.ends_with(&reason))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        without_reason(),
        Vec::<String>::new(),
        "a running unit, canceled alone"
    );
    // The rest: the whole session.
    let all = pstar_over(
        &server,
        &scratch,
        &["cancel", "--session", &session, "--all"],
    );
    assert_eq!(all.code(), Some(0), "{all}");
    let out = run.wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(1), "{out}");
    assert_eq!(
        without_reason(),
        Vec::<String>::new(),
        "every unit, running or waiting"
    );
    let status = pstar_over(&server, &scratch, &["units", "--session", &session]);
    assert_eq!(status.stdout.lines().count(), 7, "{status}");
}
