//! Workflows on pilots: units that run after others (a diamond, a fan-in of a thousand,
//! a failing stage, a pipeline in one Slurm job, a manager killed mid-workflow and
//! resumed over a real Redis), retries, sweeps and max_fails, all with real processes.

use super::*;

use pstar_testbed::{RedisServer, SlurmCluster};

use super::redis_runs::{nix_kill, resume_over, run_over};
use super::resources::{Services, run_with};

/// Seconds since the epoch at which `unit` entered `state`.
fn stamp(unit: &Value, state: &str) -> f64 {
    unit["timestamps"][state]
        .as_f64()
        .unwrap_or_else(|| panic!("{unit} has no `{state}` timestamp"))
}

/// A unit that appends its name to `order.log` in the scratch directory.
fn logging_unit(scratch: &Scratch, name: &str, extra: &str) -> String {
    format!(
        "[[unit]]\nname = \"{name}\"\nexecutable = \"/bin/sh\"\n\
         arguments = [\"-c\", \"sleep 0.1; echo {name} >> {}\"]\n{extra}\n",
        scratch.path().join("order.log").display()
    )
}

#[test]
fn a_diamond_runs_each_unit_after_its_dependencies_on_the_same_pilots() {
    let scratch = Scratch::new();
    let mut text = "[[pilot]]\nresource = \"local://\"\ncores = 2\n\n".to_owned();
    // Written last first: the order of the file is not the order of the run.
    text.push_str(&logging_unit(&scratch, "d", "after = [\"b\", \"c\"]"));
    text.push_str(&logging_unit(&scratch, "b", "after = [\"a\"]"));
    text.push_str(&logging_unit(&scratch, "c", "after = [\"a\"]"));
    text.push_str(&logging_unit(&scratch, "a", ""));
    let workload = scratch.write("diamond.toml", &text);
    let check = run_in(scratch.path(), &["check", s(&workload)]);
    assert_eq!(check.code(), Some(0), "{check}");
    assert!(
        check.stdout.contains("4 units, 4 dependencies: ok"),
        "{check}"
    );

    let out = scratch.run(&workload);
    assert_eq!(out.code(), Some(0), "{out}");
    let order = std::fs::read_to_string(scratch.path().join("order.log")).expect("order.log");
    let order: Vec<&str> = order.lines().collect();
    assert_eq!(order.len(), 4, "{order:?}");
    assert_eq!(order[0], "a");
    assert_eq!(order[3], "d");
    let report = scratch.read_report();
    let by = units_by_name(&report);
    for (unit, deps) in [("b", &["a"][..]), ("c", &["a"]), ("d", &["b", "c"])] {
        for dep in deps {
            assert!(
                stamp(by[unit], "running") >= stamp(by[*dep], "done"),
                "{unit} ran before {dep} was done"
            );
        }
    }
    // One set of pilots for the whole workflow.
    assert_eq!(pilots(&report).len(), 1);
}

#[test]
fn a_fan_in_of_a_thousand_units_runs_its_sink_last() {
    let scratch = Scratch::new();
    let workload = scratch.write(
        "fan.toml",
        "[[pilot]]\nresource = \"local://\"\ncores = 2\n\n\
         [[unit]]\nname = \"leaf-{i}\"\nexecutable = \"/bin/true\"\ncount = 1000\n\
         tags = [\"leaves\"]\n\n\
         [[unit]]\nname = \"sink\"\nexecutable = \"/bin/true\"\nafter = [\"tag:leaves\"]\n",
    );
    let out = scratch.run(&workload);
    assert_eq!(out.code(), Some(0), "{out}");
    let report = scratch.read_report();
    let all = units(&report);
    assert_eq!(all.len(), 1001);
    let sink = all.iter().find(|u| u["name"] == "sink").expect("the sink");
    let last_leaf = all
        .iter()
        .filter(|u| u["name"] != "sink")
        .map(|u| stamp(u, "done"))
        .fold(0.0, f64::max);
    assert!(
        stamp(sink, "scheduled") >= last_leaf,
        "the sink was bound early"
    );
    assert!(all.iter().all(|u| u["state"] == "done"));
}

#[test]
fn a_failing_stage_cancels_its_dependents_naming_it_and_run_anyway_runs() {
    let scratch = Scratch::new();
    let workload = scratch.write(
        "stages.toml",
        "[[pilot]]\nresource = \"local://\"\ncores = 2\n\n\
         [[unit]]\nname = \"prep\"\nexecutable = \"/bin/false\"\n\n\
         [[unit]]\nname = \"work-{i}\"\nexecutable = \"/bin/true\"\ncount = 3\n\
         after = [\"prep\"]\n\n\
         [[unit]]\nname = \"report\"\nexecutable = \"/bin/true\"\nafter = [\"work-*\"]\n\n\
         [[unit]]\nname = \"cleanup\"\nexecutable = \"/bin/true\"\nafter = [\"prep\"]\n\
         on_dependency_failure = \"run\"\n",
    );
    let out = scratch.run(&workload);
    assert_eq!(out.code(), Some(1), "{out}");
    let report = scratch.read_report();
    let by = units_by_name(&report);
    assert_eq!(by["prep"]["state"], "failed");
    for i in 0..3 {
        let w = by[format!("work-{i}").as_str()];
        assert_eq!(w["state"], "canceled", "{w}");
        let detail = w["detail"].as_str().expect("a reason");
        assert!(
            detail.contains("which it runs after, ended failed"),
            "{detail}"
        );
        assert!(w["timestamps"].get("running").is_none(), "{w}");
    }
    let r = by["report"];
    assert_eq!(r["state"], "canceled");
    assert!(
        r["detail"]
            .as_str()
            .is_some_and(|d| d.contains("ended canceled")),
        "{r}"
    );
    assert_eq!(by["cleanup"]["state"], "done");
}

#[test]
fn a_flaky_unit_succeeds_on_its_second_try_and_every_attempt_is_reported() {
    let scratch = Scratch::new();
    let flag = scratch.path().join("tried");
    let workload = scratch.write(
        "flaky.toml",
        &format!(
            "[[pilot]]\nresource = \"local://\"\ncores = 1\n\n\
             [[unit]]\nname = \"flaky\"\nexecutable = \"/bin/sh\"\n\
             arguments = [\"-c\", \"test -e {0} && exit 0; touch {0}; exit 3\"]\n\
             retries = 2\nretry_on_exit_codes = [3]\n\n\
             [[unit]]\nname = \"broken\"\nexecutable = \"/bin/sh\"\n\
             arguments = [\"-c\", \"exit 5\"]\nretries = 1\n\n\
             [[unit]]\nname = \"other-code\"\nexecutable = \"/bin/sh\"\n\
             arguments = [\"-c\", \"exit 4\"]\nretries = 3\nretry_on_exit_codes = [3]\n",
            flag.display()
        ),
    );
    let out = scratch.run(&workload);
    assert_eq!(out.code(), Some(1), "{out}");
    let report = scratch.read_report();
    let by = units_by_name(&report);
    let flaky = by["flaky"];
    assert_eq!(flaky["state"], "done", "{flaky}");
    let attempts = flaky["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{flaky}");
    assert_eq!(attempts[0]["end"], "failed");
    assert_eq!(attempts[0]["exit_code"], 3);
    assert_eq!(attempts[1]["end"], "done");
    assert!(attempts.iter().all(|a| a["pilot"].is_string()));

    let broken = by["broken"];
    assert_eq!(broken["state"], "failed");
    assert_eq!(broken["exit_code"], 5);
    assert_eq!(broken["attempts"].as_array().map(Vec::len), Some(2));
    assert!(
        broken["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("failed 2 times: (1) exit code 5")),
        "{broken}"
    );
    // An exit code it is not told to retry ends it at once.
    let other = by["other-code"];
    assert_eq!(other["state"], "failed");
    assert!(other.get("attempts").is_none(), "{other}");
}

#[test]
fn a_sweep_from_a_csv_runs_one_unit_per_row_with_its_values() {
    let scratch = Scratch::new();
    scratch.write("params.csv", "alpha,mode\n0.1,fast\n0.2,slow\n0.3,fast\n");
    let workload = scratch.write(
        "sweep.toml",
        "[[pilot]]\nresource = \"local://\"\ncores = 2\n\n\
         [[unit]]\nname = \"sim-{alpha}-{mode}\"\nexecutable = \"/bin/echo\"\n\
         arguments = [\"alpha={alpha}\", \"mode={mode}\", \"i={i}\"]\n\
         parameters_from = \"params.csv\"\n",
    );
    let out = scratch.run(&workload);
    assert_eq!(out.code(), Some(0), "{out}");
    let report = scratch.read_report();
    let by = units_by_name(&report);
    assert_eq!(by.len(), 3);
    assert_eq!(
        unit_stdout(scratch.path(), by["sim-0.2-slow"]),
        "alpha=0.2 mode=slow i=1\n"
    );
}

#[test]
fn max_fails_cancels_the_rest_of_its_table_once_reached() {
    let scratch = Scratch::new();
    let workload = scratch.write(
        "fails.toml",
        "[[pilot]]\nresource = \"local://\"\ncores = 1\n\n\
         [[unit]]\nname = \"bad-{i}\"\nexecutable = \"/bin/sh\"\n\
         arguments = [\"-c\", \"sleep 0.2; exit 1\"]\ncount = 30\nmax_fails = 3\n\n\
         [[unit]]\nname = \"good\"\nexecutable = \"/bin/true\"\n",
    );
    let out = scratch.run(&workload);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("max_fails reached"), "{out}");
    let report = scratch.read_report();
    let all = units(&report);
    let failed = all.iter().filter(|u| u["state"] == "failed").count();
    let canceled: Vec<&Value> = all.iter().filter(|u| u["state"] == "canceled").collect();
    assert!((3..=5).contains(&failed), "{failed} failed");
    assert_eq!(failed + canceled.len(), 30);
    assert!(canceled.iter().all(|u| {
        u["detail"]
            .as_str()
            .is_some_and(|d| d.contains("max_fails = 3"))
    }));
    assert_eq!(units_by_name(&report)["good"]["state"], "done");
}

#[test]
fn a_three_stage_pipeline_runs_in_one_slurm_job() {
    let slurm = SlurmCluster::start(1, 4);
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let log = scratch.path().join("stages.log");
    let stage = |name: &str, count: u32, after: &str| {
        format!(
            "[[unit]]\nname = \"{name}-{{i}}\"\nexecutable = \"/bin/sh\"\ncount = {count}\n\
             arguments = [\"-c\", \"echo {name} $SLURM_JOB_ID >> {}\"]\n{after}\n",
            log.display()
        )
    };
    let workload = scratch.write(
        "pipeline.toml",
        &format!(
            "[[pilot]]\nresource = \"slurm://\"\ncores = 2\nwalltime = \"10m\"\n\n{}{}{}",
            stage("split", 4, ""),
            stage("align", 4, "after = [\"split-{i}\"]"),
            stage("merge", 1, "after = [\"align-*\"]"),
        ),
    );
    let services = Services {
        slurm: Some(&slurm),
        ..Default::default()
    };
    let out = run_with(&redis, &services, &scratch, &workload, &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    let report = scratch.read_report();
    assert_eq!(pilots(&report).len(), 1, "one pilot, one batch job");
    let lines = std::fs::read_to_string(&log).expect("stages.log");
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), 9);
    let jobs: BTreeSet<&str> = lines.iter().filter_map(|l| l.split(' ').nth(1)).collect();
    assert_eq!(
        jobs.len(),
        1,
        "every stage in the same Slurm job: {lines:?}"
    );
    assert!(lines[8].starts_with("merge"), "{lines:?}");
    let by = units_by_name(&report);
    for i in 0..4 {
        let (split, align) = (
            by[format!("split-{i}").as_str()],
            by[format!("align-{i}").as_str()],
        );
        assert!(stamp(align, "running") >= stamp(split, "done"));
        assert!(stamp(by["merge-0"], "running") >= stamp(align, "done"));
    }
}

#[test]
fn a_manager_killed_mid_workflow_is_resumed_over_redis_and_runs_each_unit_once() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let log = scratch.path().join("done.log");
    let stage = |name: &str, base: u32, after: &str| {
        format!(
            "[[unit]]\nname = \"{name}-{{i}}\"\nexecutable = \"/bin/sh\"\ncount = 10\n\
             arguments = [\"-c\", \"sleep 0.3; echo $(( {base} + {{i}} )) >> {}\"]\n{after}\n",
            log.display()
        )
    };
    let workload = scratch.write(
        "resume.toml",
        &format!(
            "[[pilot]]\nresource = \"local://\"\ncores = 2\nwalltime = \"10m\"\n\n{}{}{}",
            stage("first", 0, ""),
            stage("second", 10, "after = [\"first-{i}\"]"),
            stage("third", 20, "after = [\"second-*\"]"),
        ),
    );
    let mut run = run_over(&server, &scratch, &workload, &[]);
    let session = session_of(&scratch);
    wait_until(Duration::from_secs(60), "the first units", || {
        super::redis_runs::done_lines(&scratch) >= 4
    });
    nix_kill(run.pid() as i32, "KILL");
    let _ = run.child.wait();

    let out = resume_over(&server, &scratch, &session, &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    let text = std::fs::read_to_string(&log).expect("done.log");
    let mut seen = BTreeMap::<u32, usize>::new();
    for line in text.lines() {
        *seen
            .entry(line.trim().parse().expect("a number"))
            .or_default() += 1;
    }
    assert_eq!(seen.len(), 30, "every unit ran: {seen:?}");
    assert!(seen.values().all(|n| *n == 1), "a unit ran twice: {seen:?}");
    let report = scratch.read_report();
    let by = units_by_name(&report);
    let last_second = (0..10)
        .map(|i| stamp(by[format!("second-{i}").as_str()], "done"))
        .fold(0.0, f64::max);
    for i in 0..10 {
        let (first, second) = (
            by[format!("first-{i}").as_str()],
            by[format!("second-{i}").as_str()],
        );
        assert!(stamp(second, "running") >= stamp(first, "done"));
        assert!(stamp(by[format!("third-{i}").as_str()], "running") >= last_second);
    }
}

#[test]
fn pstar_submit_adds_units_and_a_pilot_to_a_running_session() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let workload = scratch.write(
        "first.toml",
        "[[pilot]]\nresource = \"local://\"\ncores = 1\nwalltime = \"10m\"\n\n\
         [[unit]]\nname = \"slow-{i}\"\nexecutable = \"/bin/sleep\"\narguments = [\"2\"]\n\
         count = 3\ntags = [\"first\"]\n",
    );
    let run = run_over(&server, &scratch, &workload, &[]);
    let session = session_of(&scratch);
    let more = scratch.write(
        "more.toml",
        "[[pilot]]\nresource = \"local://\"\ncores = 1\nwalltime = \"10m\"\n\n\
         [[unit]]\nname = \"added-{i}\"\nexecutable = \"/bin/echo\"\narguments = [\"{i}\"]\n\
         count = 2\n\n\
         [[unit]]\nname = \"after-all\"\nexecutable = \"/bin/true\"\n\
         after = [\"tag:first\", \"added-*\"]\n",
    );
    let submit = |file: &Path| {
        let mut cmd = pstar();
        cmd.current_dir(scratch.path())
            .env("PSTAR_REDIS_PASSWORD", server.password())
            .args([
                "submit",
                "--session",
                &session,
                "--coordination",
                &server.url(),
            ])
            .arg(file);
        Running::start(cmd).wait(RUN_DEADLINE)
    };
    // Once the session's manager is up (it records itself alive).
    wait_until(Duration::from_secs(30), "the first unit to start", || {
        std::fs::read_dir(scratch.sandbox().join(&session))
            .map(|d| d.count() > 0)
            .unwrap_or(false)
    });
    let out = submit(&more);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout
            .contains("added 3 units (unit.000003 to unit.000005) and 1 pilot"),
        "{out}"
    );
    let bad = scratch.write(
        "bad.toml",
        "[[unit]]\nname = \"x\"\nexecutable = \"/bin/true\"\nafter = [\"nothing-*\"]\n",
    );
    let refused = submit(&bad);
    assert_eq!(refused.code(), Some(2), "{refused}");
    assert!(refused.stderr.contains("bad.toml:4:"), "{refused}");

    let out = run.wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stderr.contains("added 3 units and 1 pilot"), "{out}");
    let report = scratch.read_report();
    let by = units_by_name(&report);
    assert_eq!(by.len(), 6, "{report}");
    assert!(by.values().all(|u| u["state"] == "done"));
    let last_first = (0..3)
        .map(|i| stamp(by[format!("slow-{i}").as_str()], "done"))
        .fold(0.0, f64::max);
    assert!(stamp(by["after-all"], "running") >= last_first);
    assert_eq!(pilots(&report).len(), 2);

    // Nothing runs what is added to a finished session: refused.
    let late = submit(&more);
    assert_eq!(late.code(), Some(1), "{late}");
    assert!(late.stderr.contains("has finished"), "{late}");
}

#[test]
fn rerun_runs_again_the_failed_and_canceled_units_of_a_finished_session() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let flag = scratch.path().join("fixed");
    let log = scratch.path().join("done.log");
    let workload = scratch.write(
        "rerun.toml",
        &format!(
            "[[pilot]]\nresource = \"local://\"\ncores = 2\nwalltime = \"10m\"\n\n\
             [[unit]]\nname = \"fragile\"\nexecutable = \"/bin/sh\"\n\
             arguments = [\"-c\", \"test -e {flag} && echo fragile >> {log}\"]\n\n\
             [[unit]]\nname = \"next\"\nexecutable = \"/bin/sh\"\nafter = [\"fragile\"]\n\
             arguments = [\"-c\", \"echo next >> {log}\"]\n\n\
             [[unit]]\nname = \"steady\"\nexecutable = \"/bin/sh\"\n\
             arguments = [\"-c\", \"echo steady >> {log}\"]\n",
            flag = flag.display(),
            log = log.display()
        ),
    );
    let out = run_over(&server, &scratch, &workload, &[]).wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(1), "{out}");
    let session = session_of(&scratch);
    let first = scratch.read_report();
    let ids: BTreeMap<String, String> = units(&first)
        .iter()
        .map(|u| {
            (
                u["name"].as_str().unwrap().to_owned(),
                u["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(units_by_name(&first)["next"]["state"], "canceled");

    // The cause is fixed; what failed, and what was canceled because of it, runs again.
    std::fs::write(&flag, "").expect("fix");
    let out = resume_over(
        &server,
        &scratch,
        &session,
        &["--rerun", "failed", "--rerun", "canceled"],
    );
    assert_eq!(out.code(), Some(0), "{out}");
    let report = scratch.read_report();
    let by = units_by_name(&report);
    assert_eq!(by.len(), 3);
    for (name, u) in &by {
        assert_eq!(u["state"], "done", "{u}");
        assert_eq!(u["id"].as_str(), Some(ids[name].as_str()), "ids are kept");
    }
    let lines = std::fs::read_to_string(&log).expect("done.log");
    let mut lines: Vec<&str> = lines.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        ["fragile", "next", "steady"],
        "steady did not run twice"
    );
    // Its history keeps the failed run.
    let history = by["fragile"]["timestamps"].as_object().expect("timestamps");
    assert!(history.contains_key("failed"), "{history:?}");

    let bad = resume_over(&server, &scratch, &session, &["--rerun", "done"]);
    assert_eq!(bad.code(), Some(2), "{bad}");
    assert!(
        bad.stderr.contains("--rerun takes `failed` or `canceled`"),
        "{bad}"
    );
}

#[test]
fn of_two_resumes_started_at_once_one_manages_the_session_and_no_unit_runs_twice() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let log = scratch.path().join("runs.log");
    let workload = scratch.write(
        "twice.toml",
        &format!(
            "[[pilot]]\nresource = \"local://\"\ncores = 2\nwalltime = \"10m\"\n\n\
             [[unit]]\nname = \"f-{{i}}\"\nexecutable = \"/bin/sh\"\ncount = 2\n\
             arguments = [\"-c\", \"echo $0 >> {}; sleep 6; exit 1\", \"f-{{i}}\"]\n",
            log.display()
        ),
    );
    let out = run_over(&server, &scratch, &workload, &[]).wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(1), "{out}");
    let session = session_of(&scratch);
    let resume = || {
        let mut cmd = pstar();
        cmd.current_dir(scratch.path())
            .env("PSTAR_REDIS_PASSWORD", server.password())
            .env("PSTAR_AGENT_BIN", env!("CARGO_BIN_EXE_pstar"))
            .args(["run", "--resume", &session, "--coordination", &server.url()])
            .args([
                "--sandbox",
                s(&scratch.sandbox()),
                "-q",
                "--rerun",
                "failed",
            ]);
        Running::start(cmd)
    };
    let (a, b) = (resume(), resume());
    let (a, b) = (a.wait(RUN_DEADLINE), b.wait(RUN_DEADLINE));
    let refused = [&a, &b]
        .iter()
        .filter(|o| o.stderr.contains("has a live manager"))
        .count();
    assert_eq!(refused, 1, "one of them manages it:\n{a}\n{b}");
    let runs = std::fs::read_to_string(&log).expect("runs.log");
    assert_eq!(
        runs.lines().count(),
        4,
        "each unit ran once, then once again: {runs}"
    );
}
