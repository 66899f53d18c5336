//! `pstar run` and `pstar agent` over a real Redis (a `redis-server` started on loopback by
//! pstar-testbed): agents in processes of their own, killed agents, a restarted Redis, a
//! wrong password, an unreachable Redis. Part of the `cli` test binary.

use super::*;

use pstar_testbed::RedisServer;

/// `pstar run` against `server`, the password in the environment (never on the command line).
pub(super) fn run_over(
    server: &RedisServer,
    scratch: &Scratch,
    workload: &Path,
    extra: &[&str],
) -> Running {
    run_over_with(server, scratch, workload, &[], extra)
}

/// [`run_over`] with more variables in its environment.
pub(super) fn run_over_with(
    server: &RedisServer,
    scratch: &Scratch,
    workload: &Path,
    env: &[(&str, &str)],
    extra: &[&str],
) -> Running {
    let (sandbox, report) = (scratch.sandbox(), scratch.report());
    let mut cmd = pstar();
    cmd.current_dir(scratch.path())
        .env("PSTAR_REDIS_PASSWORD", server.password())
        .env("PSTAR_AGENT_BIN", env!("CARGO_BIN_EXE_pstar"))
        .envs(env.iter().copied())
        .args(["run", s(workload), "--coordination", &server.url()])
        .args(["--sandbox", s(&sandbox), "--report", s(&report), "-q"])
        .args(extra);
    Running::start(cmd)
}

/// The `pstar agent` processes whose command line names `pilot`, children of `parent`.
pub(super) fn agent_pids(parent: u32, pilot: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(") ")
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent)
            && args.iter().any(|a| a == "agent")
            && args.iter().any(|a| a == pilot)
        {
            pids.push(pid);
        }
    }
    pids
}

/// Units that each append their number to `done.log` after `secs` of work: a unit that
/// ran to the end twice shows up twice.
pub(super) fn counting_workload(
    scratch: &Scratch,
    pilots: &[u32],
    units: usize,
    secs: f64,
) -> PathBuf {
    let log = scratch.path().join("done.log");
    let mut text = String::new();
    for cores in pilots {
        text.push_str(&format!(
            "[[pilot]]\nresource = \"local://\"\ncores = {cores}\nwalltime = \"10m\"\n\n"
        ));
    }
    text.push_str(&format!(
        "[[unit]]\nname = \"u{{i}}\"\nexecutable = \"/bin/sh\"\n\
         arguments = [\"-c\", \"sleep {secs}; echo {{i}} >> {}\"]\ncount = {units}\n",
        log.display()
    ));
    scratch.write("workload.toml", &text)
}

/// Every unit done, each exactly once in the report and in `done.log`.
fn assert_each_done_once(scratch: &Scratch, units: usize) -> Value {
    let report = scratch.read_report();
    let all = super::units(&report);
    assert_eq!(all.len(), units);
    for u in all {
        assert_eq!(u["state"], "done", "unit {u}");
    }
    assert_each_ran_once(scratch, units);
    report
}

/// Each of the `units` counting units appears exactly once in `done.log`.
fn assert_each_ran_once(scratch: &Scratch, units: usize) {
    let log = std::fs::read_to_string(scratch.path().join("done.log")).expect("done.log");
    let mut seen = BTreeMap::<u64, usize>::new();
    for line in log.lines() {
        *seen
            .entry(line.trim().parse().expect("a unit number"))
            .or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "units that ran to the end twice: {twice:?}"
    );
    assert_eq!(seen.len(), units, "units that never ran to the end");
}

#[test]
fn several_agent_processes_share_one_pool() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let workload = counting_workload(&scratch, &[1, 2, 1], 60, 0.02);
    let text = std::fs::read_to_string(&workload).expect("workload");
    let env_file = scratch.path().join("env.txt");
    let workload = scratch.write(
        "workload.toml",
        &format!(
            "{text}\n[[unit]]\nname = \"env\"\nexecutable = \"/bin/sh\"\n\
             arguments = [\"-c\", \"env > {}\"]\n",
            env_file.display()
        ),
    );
    let out = run_over(&server, &scratch, &workload, &[]).wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(0), "{out}");
    let report = scratch.read_report();
    assert!(
        super::units(&report).iter().all(|u| u["state"] == "done"),
        "{report}"
    );
    assert_each_ran_once(&scratch, 60);
    // The store's password reaches the agents, not the units they run.
    let env = std::fs::read_to_string(scratch.path().join("env.txt")).expect("env.txt");
    assert!(env.contains("PSTAR_UNIT_ID="), "{env}");
    assert!(
        !env.contains(server.password()),
        "a unit saw the Redis password"
    );
    let mut per_pilot = BTreeMap::<String, usize>::new();
    for u in super::units(&report) {
        *per_pilot
            .entry(u["pilot"].as_str().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_pilot.len(), 3, "every pilot took units: {per_pilot:?}");
    // Each agent was a process of its own, with its log in its pilot sandbox.
    for p in pilots(&report) {
        let sandbox = PathBuf::from(p["sandbox"].as_str().unwrap());
        assert!(sandbox.join("agent.log").is_file(), "{p}");
    }
}

#[test]
fn a_killed_agent_loses_no_unit_and_none_runs_twice() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let workload = counting_workload(&scratch, &[2, 2], 40, 0.3);
    let run = run_over(&server, &scratch, &workload, &["--heartbeat-timeout", "3s"]);
    let parent = run.pid();
    wait_until(
        Duration::from_secs(30),
        "pilot.0000's agent to run units",
        || done_lines(&scratch) >= 4,
    );
    // Kill it mid-unit, not in the instant after a unit ended: a unit that has finished
    // and whose end is still on its way to Redis (well under a millisecond) is the one
    // case where a killed agent's unit runs again (see README, "Known limits").
    std::thread::sleep(Duration::from_millis(150));
    let victims = agent_pids(parent, "pilot.0000");
    assert_eq!(victims.len(), 1, "one agent process for pilot.0000");
    nix_kill(victims[0], "KILL");

    let out = run.wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(0), "{out}");
    let report = assert_each_done_once(&scratch, 40);
    let lost = &pilots(&report)[0];
    assert_eq!(lost["state"], "failed", "{lost}");
    assert!(
        lost["detail"]
            .as_str()
            .unwrap_or("")
            .contains("killed by signal 9"),
        "{lost}"
    );
}

#[test]
fn a_silent_agent_is_declared_lost_after_the_heartbeat_timeout() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let workload = counting_workload(&scratch, &[2, 2], 30, 0.3);
    let run = run_over(&server, &scratch, &workload, &["--heartbeat-timeout", "2s"]);
    let parent = run.pid();
    wait_until(Duration::from_secs(30), "units to run", || {
        done_lines(&scratch) >= 4
    });
    // A stopped agent is alive to the operating system but silent to the store: a hung
    // host, or one cut off from the network.
    let victims = agent_pids(parent, "pilot.0001");
    assert_eq!(victims.len(), 1);
    nix_kill(victims[0], "STOP");

    let out = run.wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(0), "{out}");
    let report = scratch.read_report();
    assert_lost_and_all_done(&report, "pilot.0001", "no heartbeat");
    // The reason names the timeout and where it was set.
    assert_lost_and_all_done(
        &report,
        "pilot.0001",
        "(heartbeat_timeout 2s: the command line)",
    );
    // The hung agent's job is ended with the run, not left stopped behind it.
    let gone = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |s| s.contains(") Z ") || s.contains(") X "))
    };
    wait_until(
        Duration::from_secs(10),
        "the stopped agent to be gone",
        || gone(victims[0]),
    );
}

#[test]
fn a_restarted_redis_does_not_stop_the_run() {
    let mut server = RedisServer::start();
    let scratch = Scratch::new();
    let workload = counting_workload(&scratch, &[2, 2], 40, 0.1);
    let run = run_over(&server, &scratch, &workload, &[]);
    wait_until(Duration::from_secs(30), "units to run", || {
        done_lines(&scratch) >= 4
    });
    server.stop();
    std::thread::sleep(Duration::from_millis(500));
    server.restart();
    let out = run.wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_each_done_once(&scratch, 40);
}

#[test]
fn a_wrong_password_is_refused_at_once() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let workload = counting_workload(&scratch, &[1], 1, 0.0);
    let mut cmd = pstar();
    cmd.current_dir(scratch.path())
        .env("PSTAR_REDIS_PASSWORD", "wrong")
        .args(["run", s(&workload), "--coordination", &server.url(), "-q"]);
    let start = Instant::now();
    let out = Running::start(cmd).wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("refused the credentials"), "{out}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn an_unreachable_redis_is_a_clear_error_after_bounded_retries() {
    let scratch = Scratch::new();
    let workload = counting_workload(&scratch, &[1], 1, 0.0);
    let port = pstar_testbed::free_port();
    let mut cmd = pstar();
    cmd.current_dir(scratch.path())
        .env("PSTAR_REDIS_RETRY", "2s")
        .args(["run", s(&workload), "-q", "--coordination"])
        .arg(format!("redis://127.0.0.1:{port}/0"));
    let start = Instant::now();
    let out = Running::start(cmd).wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("unreachable"), "{out}");
    assert!(out.stderr.contains(&port.to_string()), "{out}");
    assert!(start.elapsed() < Duration::from_secs(20));
}

pub(super) fn nix_kill(pid: i32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

pub(super) fn resume_over(
    server: &RedisServer,
    scratch: &Scratch,
    session: &str,
    extra: &[&str],
) -> Output {
    let (sandbox, report) = (scratch.sandbox(), scratch.report());
    let mut cmd = pstar();
    cmd.current_dir(scratch.path())
        .env("PSTAR_REDIS_PASSWORD", server.password())
        .env("PSTAR_AGENT_BIN", env!("CARGO_BIN_EXE_pstar"))
        .args(["run", "--resume", session, "--coordination", &server.url()])
        .args(["--sandbox", s(&sandbox), "--report", s(&report), "-q"])
        .args(extra);
    Running::start(cmd).wait(RUN_DEADLINE)
}

pub(super) fn done_lines(scratch: &Scratch) -> usize {
    std::fs::read_to_string(scratch.path().join("done.log")).map_or(0, |l| l.lines().count())
}

#[test]
fn a_killed_manager_is_resumed_without_running_anything_twice() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let workload = counting_workload(&scratch, &[2, 2], 40, 0.3);
    let mut run = run_over(&server, &scratch, &workload, &[]);
    let session = session_of(&scratch);
    wait_until(Duration::from_secs(30), "units to finish", || {
        done_lines(&scratch) >= 6
    });
    let _ = run.child.kill();
    let _ = run.child.wait();
    // The agents carry on without a manager.
    let before = done_lines(&scratch);
    wait_until(Duration::from_secs(30), "agents to go on alone", || {
        done_lines(&scratch) > before
    });

    let out = resume_over(&server, &scratch, &session, &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stderr.contains("resumed session"), "{out}");
    let report = assert_each_done_once(&scratch, 40);
    // The summary covers the whole session (both managers' parts), and says apart what
    // this run did.
    let summary = &report["summary"];
    let (whole, this) = (
        summary["wall_time_s"].as_f64().expect("wall time"),
        summary["this_run"]["wall_time_s"]
            .as_f64()
            .expect("this run's wall time"),
    );
    assert!(whole > this, "{summary}");
    let ended = summary["this_run"]["units_ended"]
        .as_u64()
        .expect("units ended");
    assert!(ended < 40, "{summary}");
    let first_new = super::units(&report)
        .iter()
        .filter_map(|u| u["timestamps"]["new"].as_f64())
        .fold(f64::INFINITY, f64::min);
    let last_done = super::units(&report)
        .iter()
        .filter_map(|u| u["timestamps"]["done"].as_f64())
        .fold(0.0, f64::max);
    assert!((whole - (last_done - first_new)).abs() < 0.01, "{summary}");
    assert!(out.stderr.contains("this run (resumed)"), "{out}");
}

#[test]
fn a_resumed_session_whose_agents_died_too_gets_new_pilots() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let workload = counting_workload(&scratch, &[2], 20, 0.3);
    let mut run = run_over(&server, &scratch, &workload, &[]);
    let session = session_of(&scratch);
    wait_until(Duration::from_secs(30), "units to finish", || {
        done_lines(&scratch) >= 4
    });
    let agents = agent_pids(run.pid(), "pilot.0000");
    let _ = run.child.kill();
    let _ = run.child.wait();
    // The host went down: the agent and every unit it ran (its whole session) are gone.
    for pid in agents {
        let status = Command::new("pkill")
            .args(["-KILL", "-s", &pid.to_string()])
            .status()
            .expect("pkill");
        assert!(status.success(), "pkill -s {pid}");
    }

    let out = resume_over(&server, &scratch, &session, &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stderr.contains("starting 1 new pilot like"), "{out}");
    let report = assert_each_done_once(&scratch, 20);
    let p = pilots(&report);
    assert_eq!(p.len(), 2, "{report}");
    assert_eq!(p[0]["state"], "failed");
}

/// `pstar <args>` against `server`, to its end.
pub(super) fn pstar_over(server: &RedisServer, scratch: &Scratch, args: &[&str]) -> Output {
    let mut cmd = pstar();
    cmd.current_dir(scratch.path())
        .env("PSTAR_REDIS_PASSWORD", server.password())
        .env("PSTAR_COORDINATION", server.url())
        .args(args);
    Running::start(cmd).wait(RUN_DEADLINE)
}

#[test]
fn another_terminal_sees_and_steers_a_running_session() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let workload = counting_workload(&scratch, &[2], 30, 0.5);
    let run = run_over(&server, &scratch, &workload, &[]);
    let session = session_of(&scratch);
    wait_until(Duration::from_secs(30), "units to finish", || {
        done_lines(&scratch) >= 2
    });

    let status = pstar_over(&server, &scratch, &["status", "--session", &session]);
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        status.stdout.contains(&format!("session {session}")),
        "{status}"
    );
    assert!(status.stdout.contains("pilot.0000  running"), "{status}");
    assert!(status.stdout.contains("units: 30 ("), "{status}");
    assert!(status.stdout.contains("heartbeat"), "{status}");

    let running = pstar_over(
        &server,
        &scratch,
        &["units", "--session", &session, "--state", "running"],
    );
    assert_eq!(running.code(), Some(0), "{running}");
    assert_eq!(
        running.stdout.lines().count(),
        3,
        "header + 2 running: {running}"
    );

    // One unit, then everything.
    let one = pstar_over(
        &server,
        &scratch,
        &["cancel", "--session", &session, "unit.000029"],
    );
    assert_eq!(one.code(), Some(0), "{one}");
    let bad = pstar_over(
        &server,
        &scratch,
        &["cancel", "--session", &session, "pilot.0042"],
    );
    assert_eq!(bad.code(), Some(1), "{bad}");
    wait_until(Duration::from_secs(30), "the unit's cancel", || {
        let out = pstar_over(
            &server,
            &scratch,
            &["units", "--session", &session, "--state", "canceled"],
        );
        out.stdout.contains("unit.000029")
    });
    let all = pstar_over(
        &server,
        &scratch,
        &["cancel", "--session", &session, "--all"],
    );
    assert_eq!(all.code(), Some(0), "{all}");
    let out = run.wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(1), "some units were canceled: {out}");
    assert!(out.stderr.contains("(pstar cancel)"), "{out}");

    // The finished session is listed, then removed.
    let list = pstar_over(&server, &scratch, &["session", "list"]);
    assert!(
        list.stdout.contains(&session) && list.stdout.contains("finished"),
        "{list}"
    );
    let rm = pstar_over(&server, &scratch, &["session", "rm", &session]);
    assert_eq!(rm.code(), Some(0), "{rm}");
    let gone = pstar_over(&server, &scratch, &["status", "--session", &session]);
    assert_eq!(gone.code(), Some(1), "{gone}");
    assert!(gone.stderr.contains("no session"), "{gone}");
}

#[test]
fn a_unit_that_keeps_killing_its_agent_fails_after_its_attempts() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let text = "\
[[pilot]]\nresource = \"local://\"\ncores = 1\nwalltime = \"10m\"\ncount = 1\n\n\
[[pilot]]\nresource = \"local://\"\ncores = 1\nwalltime = \"10m\"\n\n\
[[pilot]]\nresource = \"local://\"\ncores = 1\nwalltime = \"10m\"\n\n\
[[unit]]\nname = \"poison\"\nexecutable = \"/bin/sh\"\narguments = [\"-c\", \"kill -9 $PPID; sleep 5\"]\n\n\
[[unit]]\nname = \"fine-{i}\"\nexecutable = \"/bin/sleep\"\narguments = [\"0.1\"]\ncount = 6\n";
    let text = text.replace("count = 1\n\n", "\n");
    let workload = scratch.write("workload.toml", &text);
    let out = run_over(
        &server,
        &scratch,
        &workload,
        &["--max-attempts", "2", "--prefetch", "0"],
    )
    .wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(1), "{out}");
    let report = scratch.read_report();
    let by_name = units_by_name(&report);
    let poison = by_name["poison"];
    assert_eq!(poison["state"], "failed", "{poison}");
    let detail = poison["detail"].as_str().unwrap_or("");
    assert!(
        detail.starts_with("gave up after 2 attempts: (1) "),
        "{detail}"
    );
    assert!(detail.contains("(2) "), "{detail}");
    for i in 0..6 {
        assert_eq!(by_name[&format!("fine-{i}") as &str]["state"], "done");
    }
    let failed = pilots(&report)
        .iter()
        .filter(|p| p["state"] == "failed")
        .count();
    assert_eq!(failed, 2, "two agents were killed: {report}");
}

#[test]
fn a_black_hole_pilot_is_taken_out_of_rotation() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    // pilot.0000 is "broken": every unit fails at once there, and succeeds elsewhere.
    let text = "\
[[pilot]]\nresource = \"local://\"\ncores = 1\nwalltime = \"10m\"\nenvironment = { BROKEN = \"1\" }\n\n\
[[pilot]]\nresource = \"local://\"\ncores = 1\nwalltime = \"10m\"\n\n\
[[unit]]\nname = \"u{i}\"\nexecutable = \"/bin/sh\"\n\
arguments = [\"-c\", \"test -z \\\"$BROKEN\\\" && sleep 0.05\"]\ncount = 60\n";
    let workload = scratch.write("workload.toml", text);
    let out = run_over(
        &server,
        &scratch,
        &workload,
        &["--black-hole-failures", "3", "--prefetch", "0"],
    )
    .wait(RUN_DEADLINE);
    let report = scratch.read_report();
    let hole = &pilots(&report)[0];
    assert_eq!(hole["state"], "failed", "{out}\n{hole}");
    assert!(
        hole["detail"]
            .as_str()
            .unwrap_or("")
            .starts_with("black hole: "),
        "{hole}"
    );
    let all = super::units(&report);
    let failed = all.iter().filter(|u| u["state"] == "failed").count();
    let done = all.iter().filter(|u| u["state"] == "done").count();
    assert_eq!(failed + done, 60, "{report}");
    assert!(failed < 10, "the black hole ate {failed} units: {out}");
}

#[test]
fn the_workload_file_can_name_the_store() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let counting = counting_workload(&scratch, &[2], 6, 0.0);
    let text = std::fs::read_to_string(&counting).expect("workload");
    // The file's URL carries its own password: one from the environment would not be
    // sent to a store only a file names.
    let with_password =
        server
            .url()
            .replacen("redis://", &format!("redis://:{}@", server.password()), 1);
    let workload = scratch.write(
        "session.toml",
        &format!("[session]\ncoordination = \"{with_password}\"\n\n{text}"),
    );
    let (sandbox, report) = (scratch.sandbox(), scratch.report());
    let mut cmd = pstar();
    cmd.current_dir(scratch.path())
        .env_remove("PSTAR_REDIS_PASSWORD")
        .env_remove("PSTAR_REDIS_PASSWORD_FILE")
        .env("PSTAR_AGENT_BIN", env!("CARGO_BIN_EXE_pstar"))
        .env_remove("PSTAR_COORDINATION")
        .args([
            "run",
            s(&workload),
            "--sandbox",
            s(&sandbox),
            "--report",
            s(&report),
            "-q",
        ]);
    let out = Running::start(cmd).wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(0), "{out}");
    // Said once: the password is in a file others may read.
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("warning") && l.contains("password"))
        .collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(warnings[0].contains("session.toml:2"), "{out}");
    assert!(!out.stderr.contains(server.password()), "{out}");
    let report = assert_each_done_once(&scratch, 6);
    let sandbox = PathBuf::from(pilots(&report)[0]["sandbox"].as_str().unwrap());
    assert!(
        sandbox.join("agent.log").is_file(),
        "the agent ran as a process"
    );
}

#[test]
fn a_pilot_canceled_mid_run_hands_its_units_back_to_the_pool() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let workload = counting_workload(&scratch, &[1, 1], 30, 0.2);
    let run = run_over(&server, &scratch, &workload, &[]);
    let session = session_of(&scratch);
    wait_until(Duration::from_secs(30), "units to finish", || {
        done_lines(&scratch) >= 4
    });
    let cancel = pstar_over(
        &server,
        &scratch,
        &["cancel", "--session", &session, "pilot.0000"],
    );
    assert_eq!(cancel.code(), Some(0), "{cancel}");
    let out = run.wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(0), "{out}");
    let report = assert_each_done_once(&scratch, 30);
    assert_eq!(pilots(&report)[0]["state"], "canceled");
    // What pilot.0000 held when it was canceled finished on pilot.0001.
    let canceled_at = pilots(&report)[0]["timestamps"]["canceled"]
        .as_f64()
        .expect("cancel time");
    let later_on_the_other = super::units(&report)
        .iter()
        .filter(|u| u["pilot"] == "pilot.0001")
        .filter(|u| u["timestamps"]["done"].as_f64().unwrap_or(0.0) > canceled_at)
        .count();
    assert!(later_on_the_other > 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pilot_added_mid_run_starts_pulling_from_the_pool() {
    use pstar::{
        ComputeUnitDescription, ComputeUnitService, PilotComputeDescription, PilotComputeService,
        Session, UnitState,
    };
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let store = pstar_coordination::RedisStore::connect(
        &server.url(),
        "added-mid-run",
        pstar_coordination::RedisOptions {
            password: Some(server.password().to_owned()),
            ..Default::default()
        },
    )
    .await
    .expect("connect");
    let session = Session::builder()
        .coordination(store)
        .sandbox_root(scratch.sandbox())
        .build()
        .await
        .expect("session");
    let pcs = PilotComputeService::new(&session);
    let one = PilotComputeDescription {
        cores: 1,
        ..Default::default()
    };
    pcs.create_pilot(one.clone()).await.expect("first pilot");
    let cus = ComputeUnitService::with_prefetch(&session, 0);
    cus.add_pilot_service(&pcs);
    let units = cus
        .submit_batch(
            (0..20).map(|_| ComputeUnitDescription::new("/bin/sleep").with_arguments(["0.2"])),
        )
        .await
        .expect("submit");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = pcs
        .create_pilot(PilotComputeDescription {
            cores: 2,
            ..Default::default()
        })
        .await
        .expect("second pilot");
    tokio::time::timeout(RUN_DEADLINE, cus.wait())
        .await
        .expect("all units end");
    assert!(units.iter().all(|u| u.state() == UnitState::Done));
    let on_second = units
        .iter()
        .filter(|u| u.pilot() == Some(second.id()))
        .count();
    // The bigger pilot, though it came later, takes more of what was left.
    assert!(
        on_second >= 8,
        "{on_second} of 20 units ran on the pilot added mid-run"
    );
    pcs.cancel().await;
}

#[test]
fn an_agent_cut_off_from_the_network_is_declared_lost_and_its_late_reports_ignored() {
    // pilot.0001's agent runs in a network namespace: another "host", reaching Redis over
    // a veth link that the test cuts.
    let host = pstar_testbed::Netns::create(1);
    let server = RedisServer::start_on(host.host_addr);
    let scratch = Scratch::new();
    let pstar_bin = env!("CARGO_BIN_EXE_pstar");
    let wrapper = scratch.write(
        "agent-launcher.sh",
        &format!(
            "#!/bin/sh\ncase \" $* \" in *\" pilot.0001 \"*) exec ip netns exec {} {pstar_bin} \"$@\";; esac\n\
             exec {pstar_bin} \"$@\"\n",
            host.name
        ),
    );
    let status = Command::new("chmod")
        .arg("+x")
        .arg(&wrapper)
        .status()
        .expect("chmod");
    assert!(status.success());
    let workload = counting_workload(&scratch, &[1, 1], 30, 0.3);
    let (sandbox, report) = (scratch.sandbox(), scratch.report());
    let mut cmd = pstar();
    cmd.current_dir(scratch.path())
        .env("PSTAR_REDIS_PASSWORD", server.password())
        .env("PSTAR_AGENT_BIN", &wrapper)
        .args(["run", s(&workload), "--coordination", &server.url()])
        .args(["--sandbox", s(&sandbox), "--report", s(&report), "-q"])
        .args(["--heartbeat-timeout", "2s"]);
    let run = Running::start(cmd);
    let session = session_of(&scratch);
    wait_until(Duration::from_secs(30), "both agents to run units", || {
        let log = std::fs::read_to_string(sandbox_agent_log(&scratch, "pilot.0001"));
        log.is_ok() && done_lines(&scratch) >= 6
    });
    host.set_link(false);
    wait_until(
        Duration::from_secs(30),
        "pilot.0001 to be declared lost",
        || {
            let status = pstar_over(&server, &scratch, &["status", "--session", &session]);
            status.stdout.contains("pilot.0001  failed")
        },
    );
    // Back after the manager has given up on it: whatever it says now is too late.
    host.set_link(true);

    let out = run.wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(0), "{out}");
    let there = assert_lost_and_all_done(&scratch.read_report(), "pilot.0001", "no heartbeat");
    assert!(
        there > 0,
        "the agent on the other host ran units before the cut"
    );
}

/// Checks that `pilot` failed for `why` and every unit is done, what the lost pilot ran
/// having ended before it was declared lost (nothing it said later counted); returns how
/// many units that was.
fn assert_lost_and_all_done(report: &Value, pilot: &str, why: &str) -> usize {
    let lost = pilots(report)
        .iter()
        .find(|p| p["id"] == pilot)
        .expect("the pilot is in the report");
    assert_eq!(lost["state"], "failed", "{lost}");
    assert!(
        lost["detail"].as_str().unwrap_or("").contains(why),
        "{lost}"
    );
    let failed_at = lost["timestamps"]["failed"].as_f64().expect("failure time");
    let mut there = 0;
    for u in super::units(report) {
        assert_eq!(u["state"], "done", "{u}");
        if u["pilot"] == pilot {
            there += 1;
            assert!(u["timestamps"]["done"].as_f64().unwrap() < failed_at, "{u}");
        }
    }
    there
}

/// The agent log of `pilot` in the one session under the scratch sandbox.
fn sandbox_agent_log(scratch: &Scratch, pilot: &str) -> PathBuf {
    let session = std::fs::read_dir(scratch.sandbox())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .next()
        .unwrap_or_default();
    session.join(pilot).join("agent.log")
}

/// The agent log of the run's first pilot.
fn first_agent_log(scratch: &Scratch) -> String {
    std::fs::read_to_string(sandbox_agent_log(scratch, "pilot.0000")).unwrap_or_default()
}

/// `units` counting units on one pilot of 2 cores, over a Redis given up on after 3 s,
/// once some have run: the server, the scratch directory, the run and its session.
fn counting_with_short_retry(units: usize) -> (RedisServer, Scratch, Running, String) {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let workload = counting_workload(&scratch, &[2], units, 0.5);
    let env = [("PSTAR_REDIS_RETRY", "3s")];
    let run = run_over_with(&server, &scratch, &workload, &env, &[]);
    let session = session_of(&scratch);
    wait_until(Duration::from_secs(60), "units to run", || {
        done_lines(&scratch) >= 2
    });
    (server, scratch, run, session)
}

#[test]
fn a_long_redis_outage_runs_no_unit_to_completion_twice() {
    let units = 12;
    let (mut server, scratch, run, session) = counting_with_short_retry(units);

    // Longer than the retry window: the manager gives up, and the agent cannot publish the
    // ends of the units that were running.
    server.stop();
    let out = run.wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("unreachable"), "{out}");
    let start = Instant::now();
    // The agent's own line, not the store's retries ("...; retrying").
    let gave_up = |log: String| {
        log.lines()
            .any(|l| l.contains("cannot publish events") && !l.contains("retrying"))
    };
    while !gave_up(first_agent_log(&scratch)) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the agent never failed to publish:\n{}",
            first_agent_log(&scratch)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let during = done_lines(&scratch);

    server.restart();
    let out = resume_over(&server, &scratch, &session, &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(during >= 2);
    assert_each_done_once(&scratch, units);
    let log = first_agent_log(&scratch);
    assert!(log.contains("not starting units"), "{log}");
    // Once published, the ends leave the journal.
    let journal = sandbox_agent_log(&scratch, "pilot.0000").with_file_name("unit-ends.jsonl");
    let journaled = std::fs::read_to_string(&journal).unwrap_or_default();
    assert!(journaled.is_empty(), "{journaled}");
}

#[test]
fn an_agent_whose_session_was_wiped_ends_with_an_error_and_kills_its_units() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let pids = scratch.path().join("pids.log");
    let workload = scratch.write(
        "workload.toml",
        &format!(
            "[[pilot]]\nresource = \"local://\"\ncores = 2\nwalltime = \"10m\"\n\n\
             [[unit]]\nexecutable = \"/bin/sh\"\n\
             arguments = [\"-c\", \"echo $$ >> {}; exec sleep 300\"]\ncount = 2\n",
            pids.display()
        ),
    );
    let run = run_over(&server, &scratch, &workload, &["--heartbeat-timeout", "1h"]);
    wait_until(Duration::from_secs(60), "units to run", || {
        std::fs::read_to_string(&pids).is_ok_and(|p| p.lines().count() == 2)
    });
    let agents = agent_pids(run.pid(), "pilot.0000");
    assert_eq!(agents.len(), 1);
    let units: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();

    let out = Command::new("redis-cli")
        .args(["--no-auth-warning", "-p", &server.port().to_string()])
        .args(["-a", server.password(), "FLUSHALL"])
        .output()
        .unwrap();
    assert!(out.status.success());

    let gone = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z'))
        })
    };
    wait_until(Duration::from_secs(60), "the agent to end", || {
        gone(agents[0])
    });
    wait_until(Duration::from_secs(30), "its units to be killed", || {
        units.iter().all(|p| gone(*p))
    });
    let log = first_agent_log(&scratch);
    assert!(log.contains("lost this session"), "{log}");
    // What `pstar agent` prints when it exits with status 1.
    assert!(log.contains("pstar agent: pilot.0000:"), "{log}");
    drop(run);
}

#[test]
fn a_resumed_manager_reads_the_journal_of_an_agent_that_died_during_an_outage() {
    let units = 12;
    let (mut server, scratch, run, session) = counting_with_short_retry(units);
    let agents = agent_pids(run.pid(), "pilot.0000");
    assert_eq!(agents.len(), 1);

    server.stop();
    let out = run.wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(1), "{out}");
    // The ends it could not publish are in its journal; then it dies.
    let journal = sandbox_agent_log(&scratch, "pilot.0000").with_file_name("unit-ends.jsonl");
    wait_until(Duration::from_secs(60), "the agent to journal ends", || {
        std::fs::read_to_string(&journal).is_ok_and(|j| j.lines().count() >= 1)
            && first_agent_log(&scratch).contains("not starting units")
    });
    nix_kill(agents[0], "KILL");

    server.restart();
    let out = resume_over(&server, &scratch, &session, &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_each_done_once(&scratch, units);
}

/// An agent started with nothing but the store, the session and the pilot on its command
/// line runs with the settings its pilot's record carries: here a drain margin that makes
/// it stop taking units a second after it starts (by default it would drain a minute
/// before its hour of walltime ends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_runs_with_the_settings_of_its_pilot_record() {
    use pstar_coordination::{Control, Coordination, Event, PilotRecord};
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let session = "agent-settings";
    let store = pstar_coordination::RedisStore::connect(
        &server.url(),
        session,
        pstar_coordination::RedisOptions {
            password: Some(server.password().to_owned()),
            ..Default::default()
        },
    )
    .await
    .expect("connect");
    let pilot = store.reserve_pilot_id().await.expect("pilot id");
    let walltime = Duration::from_secs(3600);
    let record = PilotRecord {
        id: pilot,
        description: pstar::PilotComputeDescription {
            cores: 1,
            walltime,
            ..Default::default()
        },
        sandbox: scratch.sandbox().join(pilot.to_string()),
        job: None,
        agent: pstar::AgentSettings {
            drain_margin: Some(walltime - Duration::from_secs(1)),
            ..Default::default()
        },
        restart_of: None,
    };
    store.put_pilot(record).await.expect("record");
    let mut events = store.subscribe().await.expect("subscribe");
    std::fs::create_dir_all(scratch.sandbox()).expect("sandbox root");
    let mut cmd = pstar();
    cmd.current_dir(scratch.sandbox())
        .env("PSTAR_REDIS_PASSWORD", server.password())
        .env_remove("PSTAR_COORDINATION")
        .args(["agent", "--coordination", &server.url()])
        .args(["--session", session, "--pilot", &pilot.to_string()]);
    let agent = Running::start(cmd);

    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(batch) = events.next_batch().await {
            let batch = batch.expect("event stream");
            if batch
                .iter()
                .any(|e| matches!(e, Event::PilotDraining { pilot: p, .. } if *p == pilot))
            {
                return true;
            }
        }
        false
    })
    .await;
    store
        .send_control(pilot, Control::CancelPilot)
        .await
        .expect("cancel the pilot");
    let out = tokio::task::spawn_blocking(move || agent.wait(RUN_DEADLINE))
        .await
        .expect("agent waited for");
    assert_eq!(
        drained,
        Ok(true),
        "the agent did not drain as its record says\n{out}"
    );
    assert_eq!(out.code(), Some(0), "{out}");
}

/// A pilot record whose agent settings were changed in the store (by anyone holding the
/// Redis password) to values no agent can run with: the agent refuses to start, naming
/// the setting and its value, without a panic; the pilot fails and the run ends.
#[test]
fn an_agent_refuses_settings_out_of_range_in_its_pilot_record() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    // Rewrites one field of the record's agent settings, then starts the agent.
    let wrapper = scratch.write(
        "tamper.sh",
        "#!/bin/sh\n\
         # agent --coordination URL --session S --pilot pilot.N\n\
         n=$(expr \"${7#pilot.}\" + 0)\n\
         key=\"pstar:$5:pilots\"\n\
         cli() { redis-cli --no-auth-warning -p \"$TAMPER_PORT\" -a \"$PSTAR_REDIS_PASSWORD\" \"$@\"; }\n\
         record=$(cli HGET \"$key\" \"$n\")\n\
         tampered=$(printf '%s' \"$record\" | \
           sed -e \"s/\\\"$TAMPER_FIELD\\\":[^,}]*/\\\"$TAMPER_FIELD\\\":\\\"$TAMPER_VALUE\\\"/\")\n\
         cli HSET \"$key\" \"$n\" \"$tampered\" >/dev/null\n\
         exec \"$TAMPER_PSTAR\" \"$@\"\n",
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the wrapper");
    }
    let workload = scratch.write(
        "one.toml",
        "[[pilot]]\nresource = \"local://\"\ncores = 1\nwalltime = \"10m\"\n\n\
         [[unit]]\nexecutable = \"/bin/true\"\n",
    );
    let port = server.port().to_string();
    for (field, value) in [
        ("heartbeat_interval", "0s"),
        ("claim_wait", "0s"),
        ("drain_margin", "1000years"),
        ("report_window", "1000years"),
    ] {
        let _ = std::fs::remove_dir_all(scratch.sandbox());
        let run = run_over_with(
            &server,
            &scratch,
            &workload,
            &[
                ("PSTAR_AGENT_BIN", s(&wrapper)),
                ("TAMPER_PSTAR", env!("CARGO_BIN_EXE_pstar")),
                ("TAMPER_PORT", &port),
                ("TAMPER_FIELD", field),
                ("TAMPER_VALUE", value),
            ],
            &[],
        );
        let out = run.wait(RUN_DEADLINE);
        assert_eq!(out.code(), Some(1), "{field} = {value}: {out}");
        let log = first_agent_log(&scratch);
        assert!(
            log.contains(&format!("`{field}`")) && log.contains(value),
            "{field} = {value}: the agent's log does not name it:\n{log}"
        );
        assert!(!log.contains("panicked"), "{field} = {value}:\n{log}");
        let report = scratch.read_report();
        let pilot = &pilots(&report)[0];
        assert_eq!(pilot["state"], "failed", "{field} = {value}: {pilot}");
        let detail = pilot["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(field), "{field} = {value}: {pilot}");
    }
}
