//! `pstar simulate`: the workload through the manager's core on a virtual clock, no
//! processes. Part of the `cli` test binary.

use super::*;

fn simulate(scratch: &Scratch, workload: &Path, extra: &[&str]) -> Output {
    let mut cmd = pstar();
    cmd.current_dir(scratch.path())
        .env_remove("PSTAR_COORDINATION")
        .arg("simulate")
        .arg(workload)
        .args(extra);
    Running::start(cmd).wait(RUN_DEADLINE)
}

fn workload(pilots: &str, units: &str, simulation: &str) -> String {
    format!("[simulation]\n{simulation}\n\n{pilots}\n\n{units}\n")
}

#[test]
fn simulate_without_queue_waits_finishes_in_whole_waves_of_units() {
    let scratch = Scratch::new();
    // 10 pilots of 4 cores, 400 units of 60 s: 10 waves of 40 units, 600 virtual s.
    let file = scratch.write(
        "w.toml",
        &workload(
            "[[pilot]]\ncount = 10\nresource = \"slurm+ssh://login/\"\ncores = 4\nwalltime = \"1h\"",
            "[[unit]]\nexecutable = \"/no/such/program\"\ntime_request = \"60s\"\ncount = 400",
            "queue_wait = \"0s\"",
        ),
    );
    let report = scratch.path().join("r.json");
    let out = simulate(&scratch, &file, &["--report", report.to_str().unwrap()]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout
            .contains("400 units: 400 done, 0 failed, 0 canceled in 600.00 s"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("pilot utilisation: 100.0 % of 40 cores"),
        "{out}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["summary"]["done"], 400);
    assert_eq!(report["pilots"].as_array().map(Vec::len), Some(10));
    assert_eq!(report["pilots"][0]["utilisation"], 1.0);
    // No process ran: the executable does not even exist.
    assert!(!scratch.path().join("pstar.sandbox").exists());
}

#[test]
fn simulate_binds_long_units_only_to_pilots_with_that_much_walltime() {
    let scratch = Scratch::new();
    let file = scratch.write(
        "w.toml",
        &workload(
            "[[pilot]]\nname = \"short\"\nresource = \"local://\"\ncores = 1\nwalltime = \"10m\"\n\n\
             [[pilot]]\nname = \"long\"\nresource = \"local://\"\ncores = 1\nwalltime = \"2h\"",
            "[[unit]]\nname = \"long-{i}\"\nexecutable = \"/bin/true\"\ntime_request = \"20m\"\ncount = 3\n\n\
             [[unit]]\nname = \"short-{i}\"\nexecutable = \"/bin/true\"\ntime_request = \"5m\"\ncount = 2",
            "queue_wait = \"0s\"",
        ),
    );
    let report = scratch.path().join("r.json");
    let out = simulate(
        &scratch,
        &file,
        &["--report", report.to_str().unwrap(), "--prefetch", "0"],
    );
    assert_eq!(out.code(), Some(0), "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    for unit in report["units"].as_array().unwrap() {
        let name = unit["name"].as_str().unwrap();
        if name.starts_with("long-") {
            assert_eq!(unit["pilot"], "pilot.0001", "{name} needs the 2 h pilot");
        }
    }
}

#[test]
fn simulated_failures_and_lost_agents_lose_no_unit() {
    let scratch = Scratch::new();
    let file = scratch.write(
        "w.toml",
        &workload(
            "[[pilot]]\ncount = 40\nresource = \"local://\"\ncores = 2\nwalltime = \"30m\"",
            "[[unit]]\nexecutable = \"/bin/true\"\ntime_request = \"1m\"\ncount = 500",
            "queue_wait = \"1m..10m\"\nseed = 7\npilot_failure = 0.2\nagent_loss = 0.3",
        ),
    );
    let report = scratch.path().join("r.json");
    let out = simulate(&scratch, &file, &["--report", report.to_str().unwrap()]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let s = &report["summary"];
    // Every unit ended once, one way or another; none was left behind.
    assert_eq!(s["units"], 500, "{out}");
    assert_eq!(
        s["done"].as_u64().unwrap()
            + s["failed"].as_u64().unwrap()
            + s["canceled"].as_u64().unwrap(),
        500,
        "{out}"
    );
    let failed_pilots = report["pilots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "failed")
        .count();
    assert!(failed_pilots > 0, "the seed makes some pilots fail: {out}");
    // The same seed gives the same run.
    let again = simulate(&scratch, &file, &[]);
    let first_line = |o: &Output| o.stdout.lines().next().unwrap_or_default().to_owned();
    assert_eq!(first_line(&out), first_line(&again));
}

#[test]
fn simulate_refuses_a_bad_workload_with_its_location() {
    let scratch = Scratch::new();
    let file = scratch.write(
        "w.toml",
        "[simulation]\npilot_failure = 2\n\n[[pilot]]\nresource = \"local://\"\n\n\
         [[unit]]\nexecutable = \"/bin/true\"\n",
    );
    let out = simulate(&scratch, &file, &[]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("w.toml:2:"), "{out}");
}

/// What the testers met: a unit as long as the walltime is done (its end comes with the
/// walltime's), a unit that would be cut short is not started (it goes back, as a real
/// agent gives it back), durations as long as a file may write do not overflow, and a
/// cut-short unit is not said to have never run.
#[test]
fn simulate_agrees_with_real_agents_at_the_walltime_and_never_overflows() {
    let scratch = Scratch::new();
    let exact = scratch.write(
        "exact.toml",
        &workload(
            "[[pilot]]\nresource = \"local://\"\ncores = 1\nwalltime = \"1h\"",
            "[[unit]]\nexecutable = \"/bin/true\"\ntime_request = \"1h\"",
            "queue_wait = \"0s\"",
        ),
    );
    let out = simulate(&scratch, &exact, &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("1 unit: 1 done"), "{out}");

    // 1 core, 10 s, prefetch binds all 5 at once; 3 s each: 3 done, then 1 s left is too
    // short for a 3 s unit, and nothing else is left to run the last two.
    let tight = scratch.write(
        "tight.toml",
        &workload(
            "[[pilot]]\nresource = \"local://\"\ncores = 1\nwalltime = \"10s\"",
            "[[unit]]\nexecutable = \"/bin/true\"\ntime_request = \"3s\"\ncount = 5",
            "queue_wait = \"0s\"",
        ),
    );
    let out = simulate(&scratch, &tight, &[]);
    assert!(
        out.stdout
            .contains("5 units: 3 done, 0 failed, 2 canceled in 10.00 s"),
        "{out}"
    );
    assert!(out.stdout.contains("pilot utilisation: 90.0 %"), "{out}");

    let long = scratch.write(
        "long.toml",
        &workload(
            "[[pilot]]\nresource = \"local://\"\ncores = 1\nwalltime = \"584542years\"",
            "[[unit]]\nexecutable = \"/bin/true\"\ntime_request = \"584542years\"",
            "queue_wait = \"0s\"",
        ),
    );
    let out = simulate(&scratch, &long, &[]);
    assert!(!out.stderr.contains("panicked"), "{out}");
    assert!(out.code() == Some(0) || out.code() == Some(1), "{out}");

    // A run cut short by the walltime, and no pilot left: said as such.
    let cut = scratch.write(
        "cut.toml",
        &workload(
            "[[pilot]]\nresource = \"local://\"\ncores = 1\nwalltime = \"1h\"",
            "[[unit]]\nexecutable = \"/bin/true\"\ncount = 1",
            "queue_wait = \"0s\"\nunit_time = \"2h\"",
        ),
    );
    let out = simulate(&scratch, &cut, &[]);
    assert!(
        out.stdout.contains("in 3600.00 s"),
        "the clock stops with the last pilot, not at the cut run's end: {out}"
    );
    assert!(
        out.stdout
            .contains("canceled 1: no pilot was left to run it again after its run was cut short"),
        "{out}"
    );
}
