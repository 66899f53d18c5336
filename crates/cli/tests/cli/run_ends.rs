//! How a run ends when things go wrong: the report (kept whole, never an input), a run
//! interrupted while its store is unreachable, a store that lost the session, a unit cut
//! short by its pilot's walltime. Redis cases run against a real `redis-server`.

use super::*;

use pstar_testbed::RedisServer;

use super::redis_runs::{pstar_over, run_over_with};

/// A workload of `count` units that each sleep for `token` seconds (a duration no other
/// process sleeps for, so that the test can find them).
fn sleepers(scratch: &Scratch, cores: u32, count: u32, token: &str, walltime: &str) -> PathBuf {
    scratch.write(
        "sleepers.toml",
        &format!(
            r#"
[[pilot]]
resource = "local://"
cores = {cores}
walltime = "{walltime}"

[[unit]]
name = "sleeper-{{i}}"
executable = "/bin/sleep"
arguments = ["{token}"]
count = {count}
"#
        ),
    )
}

/// A sleep duration unique to this test process and `tag`.
fn token(tag: u32) -> String {
    format!(
        "71.{tag}{}{:03}",
        std::process::id(),
        now_secs() as u64 % 1000
    )
}

#[test]
fn the_previous_report_stays_whole_until_the_new_one_replaces_it() {
    let scratch = Scratch::new();
    let old = "{\"previous\": true}\n";
    std::fs::write(scratch.report(), old).expect("write the previous report");
    let workload = scratch.write(
        "slow.toml",
        "[[pilot]]\nresource = \"local://\"\n\n[[unit]]\nexecutable = \"/bin/sleep\"\narguments = [\"2\"]\n",
    );
    let (sandbox, report) = (scratch.sandbox(), scratch.report());
    let mut cmd = pstar();
    cmd.current_dir(scratch.path())
        .args(["run", s(&workload), "--sandbox", s(&sandbox)])
        .args(["--report", s(&report), "-q"]);
    let running = Running::start(cmd);
    wait_until(Duration::from_secs(30), "the unit to start", || {
        !stdout_files(&sandbox).is_empty()
    });
    assert_eq!(
        std::fs::read_to_string(&report).expect("the previous report"),
        old,
        "the previous report was touched before the new one was complete"
    );
    let out = running.wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(0), "{out}");
    let new = scratch.read_report();
    assert_eq!(units(&new).len(), 1, "{new}");
    assert_eq!(new["summary"]["done"], 1, "{new}");
    // No temporary file is left beside it.
    let left: Vec<_> = std::fs::read_dir(scratch.path())
        .expect("list the directory")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[test]
fn a_report_path_that_is_an_input_or_a_directory_is_refused() {
    let scratch = Scratch::new();
    let text = "[[pilot]]\nresource = \"local://\"\n\n[[unit]]\nexecutable = \"/bin/true\"\n";
    let workload = scratch.write("w.toml", text);
    let sandbox = scratch.sandbox();
    let run_reporting_to = |report: &Path| {
        let args = [
            "run",
            s(&workload),
            "--sandbox",
            s(&sandbox),
            "--report",
            s(report),
        ];
        run_in(scratch.path(), &args)
    };
    // The workload file itself, also through another name for it.
    let link = scratch.path().join("link.toml");
    std::os::unix::fs::symlink(&workload, &link).expect("symlink");
    for report in [&workload, &link] {
        let out = run_reporting_to(report);
        assert_eq!(out.code(), Some(2), "{out}");
        assert!(out.stderr.contains("an input of this run"), "{out}");
        assert_eq!(
            std::fs::read_to_string(&workload).expect("the workload"),
            text,
            "the workload file was overwritten"
        );
    }
    let out = run_reporting_to(scratch.path());
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("is a directory"), "{out}");
    // A pipe (like a device) would be replaced by the rename: refused, and left a pipe.
    let fifo = scratch.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let out = run_reporting_to(&fifo);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("not a regular file"), "{out}");
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::metadata(&fifo)
            .expect("fifo")
            .file_type()
            .is_fifo()
    );
    // A program, be it this very one.
    let program = scratch.path().join("tool");
    std::fs::copy(env!("CARGO_BIN_EXE_pstar"), &program).expect("copy pstar");
    for report in [&program, Path::new(env!("CARGO_BIN_EXE_pstar"))] {
        let out = run_reporting_to(report);
        assert_eq!(out.code(), Some(2), "{out}");
    }
    let copy = Command::new(&program)
        .arg("--version")
        .output()
        .expect("the copy runs");
    assert!(copy.status.success(), "the program was overwritten");
    assert!(
        !sandbox.exists(),
        "units ran although the report was refused"
    );
    // A link to a report is followed: the link stays, the file it names is replaced.
    let real = scratch.path().join("real.json");
    std::fs::write(&real, "old").expect("write");
    let link = scratch.path().join("report-link.json");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let out = run_reporting_to(&link);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(std::fs::symlink_metadata(&link).expect("link").is_symlink());
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&real).expect("report"))
        .expect("the report is JSON");
    assert_eq!(report["summary"]["done"], 1, "{report}");
}

#[test]
fn a_unit_cut_short_by_the_walltime_says_so_when_no_pilot_is_left() {
    let scratch = Scratch::new();
    let token = token(1);
    let _cleanup = KillLeftovers(&token);
    let workload = sleepers(&scratch, 1, 1, &token, "4s");
    let out = scratch.run(&workload);
    assert_eq!(out.code(), Some(1), "{out}");
    let report = scratch.read_report();
    let unit = &units(&report)[0];
    assert_eq!(unit["state"], "canceled", "{unit}");
    let detail = unit["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("cut short") && detail.contains("walltime"),
        "the unit ran and was stopped at the walltime, but its detail says: {detail}"
    );
    assert!(
        unit["timestamps"].get("running").is_some(),
        "the unit never ran: {unit}"
    );
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Four sleepers over a Redis that is stopped once two of them run, with `retry` as the
/// store's retry window.
fn sleepers_cut_off(token: &str, retry: &str) -> (RedisServer, Scratch, Running) {
    let mut server = RedisServer::start();
    let scratch = Scratch::new();
    let workload = sleepers(&scratch, 2, 4, token, "10m");
    let env = [("PSTAR_REDIS_RETRY", retry)];
    let running = run_over_with(&server, &scratch, &workload, &env, &[]);
    wait_until(Duration::from_secs(60), "two running sleeps", || {
        processes_with_arg(token).len() >= 2
    });
    server.stop();
    (server, scratch, running)
}

/// The run ended with 130, its sleepers are gone and its report lists its four units.
fn assert_interrupted_and_cleaned_up(out: &Output, token: &str, scratch: &Scratch) {
    assert_eq!(out.code(), Some(130), "{out}");
    wait_until(Duration::from_secs(10), "the sleeps to be gone", || {
        processes_with_arg(token).is_empty()
    });
    let report = scratch.read_report();
    assert_eq!(units(&report).len(), 4, "{report}");
}

#[test]
fn ctrl_c_ends_a_run_whose_store_is_unreachable() {
    let token = token(2);
    let _cleanup = KillLeftovers(&token);
    let (_server, scratch, running) = sleepers_cut_off(&token, "3s");
    signal(running.pid(), "-INT");
    // The cancel cannot reach the agents; once the store is given up on, the pilots are
    // killed through their resource, and their units with them.
    let out = running.wait(Duration::from_secs(60));
    assert_interrupted_and_cleaned_up(&out, &token, &scratch);
}

#[test]
fn a_second_ctrl_c_kills_the_units_at_once() {
    let token = token(3);
    let _cleanup = KillLeftovers(&token);
    // The store's retry window is long: only the second Ctrl-C can end the run soon.
    let (_server, scratch, running) = sleepers_cut_off(&token, "10m");
    signal(running.pid(), "-INT");
    running.wait_for_stderr(Duration::from_secs(10), "again to kill them");
    signal(running.pid(), "-INT");
    // At once: no grace for the agents to report to a store that is not there.
    wait_until(Duration::from_secs(5), "the sleeps to be killed", || {
        processes_with_arg(&token).is_empty()
    });
    let out = running.wait(Duration::from_secs(15));
    assert_interrupted_and_cleaned_up(&out, &token, &scratch);
}

#[test]
fn a_store_that_lost_the_session_ends_the_run_with_a_clear_error() {
    // The manager finds out first (it probes every second).
    store_loses_the_session(6, &["--heartbeat-timeout", "4s"]);
}

#[test]
fn a_session_lost_under_its_agents_first_is_not_written_back() {
    // The agents find out first (they look before every heartbeat, every 5 s; the
    // manager every 7.5 s): their pilots end, and nothing of the session comes back.
    store_loses_the_session(7, &[]);
}

/// Four sleepers over a Redis that is flushed once two of them run.
fn store_loses_the_session(tag: u32, extra: &[&str]) {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let token = token(tag);
    let _cleanup = KillLeftovers(&token);
    let workload = sleepers(&scratch, 2, 4, &token, "10m");
    let running = run_over_with(&server, &scratch, &workload, &[], extra);
    wait_until(Duration::from_secs(60), "two running sleeps", || {
        processes_with_arg(&token).len() >= 2
    });
    server.cli(&["FLUSHALL"]);
    let out = running.wait(Duration::from_secs(60));
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("no longer holds session"), "{out}");
    // Nothing can resume it: its units are killed with its pilots.
    wait_until(Duration::from_secs(10), "the sleeps to be gone", || {
        processes_with_arg(&token).is_empty()
    });
    let report = scratch.read_report();
    assert_eq!(units(&report).len(), 4, "{report}");
    assert_eq!(report["summary"]["canceled"], 0, "{report}");
    // Not marked finished, nor listed: what was written into it meanwhile expires soon.
    let listed = server.cli(&["HKEYS", "pstar:sessions"]);
    assert_eq!(listed.trim(), "", "{out}");
    for key in server.keys() {
        let ttl: i64 = server.cli(&["TTL", &key]).trim().parse().expect("a TTL");
        assert!((1..=60).contains(&ttl), "{key} has TTL {ttl}");
    }
}

#[test]
fn a_session_whose_manager_lives_is_not_resumed_and_takes_cancels_at_once() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let token = token(5);
    let _cleanup = KillLeftovers(&token);
    let workload = sleepers(&scratch, 2, 4, &token, "10m");
    let running = run_over_with(&server, &scratch, &workload, &[], &[]);
    // From the session's first moments, not only after a heartbeat round.
    let session = session_of(&scratch);
    wait_until(Duration::from_secs(30), "a running sleep", || {
        !processes_with_arg(&token).is_empty()
    });
    let cancel = ["cancel", "--session", &session, "unit.000003"];
    let out = pstar_over(&server, &scratch, &cancel);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("asked the manager"), "{out}");
    let sandbox = scratch.sandbox();
    let resume = ["run", "--resume", &session, "--sandbox", s(&sandbox), "-q"];
    let resumed = pstar_over(&server, &scratch, &resume);
    assert_eq!(resumed.code(), Some(1), "{resumed}");
    assert!(resumed.stderr.contains("has a live manager"), "{resumed}");
    assert!(!resumed.stderr.contains("resumed session"), "{resumed}");
    signal(running.pid(), "-INT");
    let out = running.wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(130), "{out}");
}

#[test]
fn units_see_where_they_run_and_relative_executables_are_the_workload_file_s() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new();
    for i in 0..2 {
        let tool = scratch.write(
            &format!("tool-{i}.sh"),
            &format!("#!/bin/sh\necho tool {i}\n"),
        );
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let workload = scratch.write(
        "w.toml",
        r#"
[[pilot]]
resource = "local://"

[[unit]]
name = "env"
executable = "/usr/bin/env"

[[unit]]
name = "tool-{i}"
executable = "./tool-{i}.sh"
count = 2
"#,
    );
    // Started from elsewhere: neither `PWD` nor `./` may be taken from there.
    let elsewhere = scratch.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    let out = scratch.run_from(&elsewhere, &workload);
    assert_eq!(out.code(), Some(0), "{out}");
    let report = scratch.read_report();
    let by_name = units_by_name(&report);
    let env = unit_stdout(&elsewhere, by_name["env"]);
    let pwd = env
        .lines()
        .find_map(|l| l.strip_prefix("PWD="))
        .expect("a PWD line");
    let stdout = report_path(&elsewhere, &by_name["env"]["stdout"]);
    let unit_sandbox = stdout.parent().expect("the unit's sandbox");
    assert_eq!(Path::new(pwd), unit_sandbox, "{env}");
    for i in 0..2 {
        let out = unit_stdout(&elsewhere, by_name[&format!("tool-{i}")]);
        assert_eq!(out, format!("tool {i}\n"));
    }
}

#[test]
fn a_closed_standard_error_does_not_stop_a_run() {
    let scratch = Scratch::new();
    let workload = examples_dir().join("quickstart.toml");
    let (sandbox, report) = (scratch.sandbox(), scratch.report());
    // `pstar run ... 2>&1 | head -1`: whoever read the output has gone.
    let mut child = pstar()
        .current_dir(scratch.path())
        .args([
            "run",
            s(&workload),
            "--sandbox",
            s(&sandbox),
            "--report",
            s(&report),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pstar");
    drop(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(start.elapsed() < RUN_DEADLINE, "pstar did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{status}");
    assert_eq!(scratch.read_report()["summary"]["done"], 8);
}

#[test]
fn a_session_canceled_while_no_manager_ran_is_canceled_for_that_reason_on_resume() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let token = token(8);
    let _cleanup = KillLeftovers(&token);
    let workload = sleepers(&scratch, 4, 4, &token, "10m");
    let mut running = run_over_with(&server, &scratch, &workload, &[], &[]);
    let session = session_of(&scratch);
    wait_until(Duration::from_secs(30), "four running sleeps", || {
        processes_with_arg(&token).len() >= 4
    });
    let _ = running.child.kill();
    let _ = running.child.wait();
    let out = pstar_over(
        &server,
        &scratch,
        &["cancel", "--session", &session, "--all"],
    );
    assert_eq!(out.code(), Some(0), "{out}");
    let sandbox = scratch.sandbox();
    let report = scratch.report();
    let resume = [
        "run",
        "--resume",
        &session,
        "--sandbox",
        s(&sandbox),
        "--report",
        s(&report),
        "-q",
    ];
    let out = pstar_over(&server, &scratch, &resume);
    assert_eq!(out.code(), Some(1), "{out}");
    let report = scratch.read_report();
    for unit in units(&report) {
        assert_eq!(unit["state"], "canceled", "{unit}");
        let detail = unit["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("pstar cancel"), "{unit}");
    }
    wait_until(Duration::from_secs(10), "the sleeps to be gone", || {
        processes_with_arg(&token).is_empty()
    });
}

#[test]
fn the_summary_shows_no_terminal_control_characters() {
    let scratch = Scratch::new();
    let workload = scratch.write(
        "w.toml",
        "[[pilot]]\nresource = \"local://\"\n\n[[unit]]\nname = \"evil\\u001b[2J\\r\"\nexecutable = \"/bin/false\"\n",
    );
    let out = scratch.run(&workload);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains("failed unit.000000 evil\\u{1b}[2J\\r"),
        "{out}"
    );
    assert!(!out.stderr.contains('\u{1b}'), "{out}");
}
