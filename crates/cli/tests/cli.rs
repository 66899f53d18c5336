//! End-to-end tests of the `pstar` binary: real workload files, real processes, real reports.
//!
//! Each test works in its own temporary directory and passes `--sandbox` and `--report`
//! there, so nothing is left in the source tree. Every wait has a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

#[path = "cli/checks.rs"]
mod checks;
#[path = "cli/data.rs"]
mod data;
#[path = "cli/redis_intruders.rs"]
mod redis_intruders;
#[path = "cli/redis_runs.rs"]
mod redis_runs;
#[path = "cli/redis_sessions.rs"]
mod redis_sessions;
#[path = "cli/resources.rs"]
mod resources;
#[path = "cli/run_ends.rs"]
mod run_ends;
#[path = "cli/simulate.rs"]
mod simulate;
#[path = "cli/workflows.rs"]
mod workflows;

/// Longest any `pstar` run in these tests may take.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// The lifecycle of a unit that ran to the end, in order.
const UNIT_LIFECYCLE: &[&str] = &["new", "scheduled", "pending", "running", "done"];

fn pstar() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pstar"));
    // A log filter from the environment would add lines to stderr.
    cmd.env_remove("PSTAR_LOG");
    cmd
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after the epoch")
        .as_secs_f64()
}

/// Calls `done` every 20 ms until it holds; panics naming `what` after `deadline`.
fn wait_until(deadline: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a finished `pstar` process left.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Output {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// A running `pstar` whose output is collected by two threads. Dropping it kills it.
struct Running {
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    /// What the process has written to its standard error so far.
    stderr_so_far: Arc<Mutex<Vec<u8>>>,
}

/// Reads `r` to its end in a thread, appending to `so_far` as it goes.
fn drain(mut r: impl Read + Send + 'static, so_far: Arc<Mutex<Vec<u8>>>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            if let Ok(mut all) = so_far.lock() {
                all.extend_from_slice(&chunk[..n]);
            }
        }
        let all = so_far.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&all).into_owned()
    })
}

impl Running {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pstar");
        let stdout = child.stdout.take().map(|r| drain(r, Arc::default()));
        let stderr_so_far = Arc::<Mutex<Vec<u8>>>::default();
        let stderr = child.stderr.take().map(|r| drain(r, stderr_so_far.clone()));
        Self {
            child,
            stdout,
            stderr,
            stderr_so_far,
        }
    }

    /// Waits until the process has written `text` to its standard error.
    fn wait_for_stderr(&self, deadline: Duration, text: &str) {
        wait_until(deadline, text, || {
            self.stderr_so_far
                .lock()
                .is_ok_and(|b| String::from_utf8_lossy(&b).contains(text))
        });
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to end; panics (killing it) after `deadline`.
    fn wait(mut self, deadline: Duration) -> Output {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for pstar") {
                break status;
            }
            if start.elapsed() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let out = self.collect_output();
                panic!(
                    "pstar did not end within {deadline:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    out.0, out.1
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (stdout, stderr) = self.collect_output();
        Output {
            status,
            stdout,
            stderr,
        }
    }

    fn collect_output(&mut self) -> (String, String) {
        let join = |h: Option<JoinHandle<String>>| h.map(|h| h.join().unwrap_or_default());
        (
            join(self.stdout.take()).unwrap_or_default(),
            join(self.stderr.take()).unwrap_or_default(),
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `pstar args...` in `dir` to the end.
fn run_in(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = pstar();
    cmd.current_dir(dir).args(args);
    Running::start(cmd).wait(RUN_DEADLINE)
}

/// A temporary directory holding one workload file, a sandbox root and a report path.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn sandbox(&self) -> PathBuf {
        self.path().join("sandbox")
    }

    fn report(&self) -> PathBuf {
        self.path().join("report.json")
    }

    /// Writes `text` to `name` in the directory and returns its path.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, text).expect("write workload file");
        path
    }

    /// `pstar run WORKLOAD --sandbox .. --report .. -q`, in this directory.
    fn run(&self, workload: &Path) -> Output {
        self.run_from(self.path(), workload)
    }

    /// The same, started in `dir`.
    fn run_from(&self, dir: &Path, workload: &Path) -> Output {
        let (sandbox, report) = (self.sandbox(), self.report());
        let args = ["run", s(workload), "--sandbox", s(&sandbox)];
        run_in(dir, &[&args[..], &["--report", s(&report), "-q"]].concat())
    }

    fn read_report(&self) -> Value {
        let text = std::fs::read_to_string(self.report()).expect("the report was written");
        serde_json::from_str(&text).expect("the report is JSON")
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn units(report: &Value) -> &Vec<Value> {
    report["units"].as_array().expect("`units` is an array")
}

/// The one session directory under the sandbox root, once it exists.
fn session_of(scratch: &Scratch) -> String {
    let mut found = None;
    wait_until(Duration::from_secs(30), "the session's sandbox", || {
        found = std::fs::read_dir(scratch.sandbox())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("pstar."));
        found.is_some()
    });
    found.unwrap_or_default()
}

fn pilots(report: &Value) -> &Vec<Value> {
    report["pilots"].as_array().expect("`pilots` is an array")
}

/// The units of a report by name (names must be unique).
fn units_by_name(report: &Value) -> BTreeMap<String, &Value> {
    let mut map = BTreeMap::new();
    for u in units(report) {
        let name = u["name"]
            .as_str()
            .expect("unit `name` is a string")
            .to_owned();
        assert!(
            map.insert(name.clone(), u).is_none(),
            "two units named {name}"
        );
    }
    map
}

/// A report path, taken relative to `dir` when relative.
fn report_path(dir: &Path, value: &Value) -> PathBuf {
    let p = Path::new(value.as_str().expect("a path string"));
    if p.is_absolute() {
        p.to_owned()
    } else {
        dir.join(p)
    }
}

/// The unit's standard output, as written to the file the report names.
fn unit_stdout(dir: &Path, unit: &Value) -> String {
    let path = report_path(dir, &unit["stdout"]);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("stdout {} of {unit}: {e}", path.display()))
}

/// Asserts that the unit ended `done` with exit code 0 on a pilot of the report, with its
/// output files under `sandbox`.
fn assert_unit_done(dir: &Path, sandbox: &Path, report: &Value, unit: &Value) {
    assert_eq!(unit["state"], "done", "{unit}");
    assert_eq!(unit["exit_code"], 0, "{unit}");
    let pilot = unit["pilot"].as_str().expect("a done unit names its pilot");
    assert!(
        pilots(report).iter().any(|p| p["id"] == pilot),
        "unit {unit} ran on pilot {pilot}, which the report does not list"
    );
    for stream in ["stdout", "stderr"] {
        let path = report_path(dir, &unit[stream]);
        assert!(path.is_file(), "{stream} {} of {unit}", path.display());
        let sandbox = sandbox.canonicalize().expect("sandbox exists");
        let path = path.canonicalize().expect("output file path");
        assert!(
            path.starts_with(&sandbox),
            "{stream} {} is not under the sandbox {}",
            path.display(),
            sandbox.display()
        );
    }
}

#[test]
fn every_example_runs_to_done() {
    let mut examples: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("examples directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    examples.sort();
    assert!(
        examples.len() >= 2,
        "expected the examples, found {examples:?}"
    );

    for example in &examples {
        let scratch = Scratch::new();
        let out = scratch.run(example);
        assert_eq!(out.code(), Some(0), "{}: {out}", example.display());
        let report = scratch.read_report();
        let units = units(&report);
        assert!(
            !units.is_empty(),
            "{}: no units in the report",
            example.display()
        );
        for unit in units {
            assert_unit_done(scratch.path(), &scratch.sandbox(), &report, unit);
        }
        assert_eq!(report["summary"]["units"], units.len());
        assert_eq!(report["summary"]["done"], units.len());

        let by_name = units_by_name(&report);
        match example.file_name().and_then(|n| n.to_str()) {
            Some("quickstart.toml") => {
                assert_eq!(by_name.len(), 8);
                for i in 0..8 {
                    let unit = by_name[&format!("hello-{i}")];
                    assert_eq!(unit_stdout(scratch.path(), unit), format!("hello {i}\n"));
                }
            }
            Some("ensemble.toml") => {
                assert_eq!(by_name.len(), 21);
                for i in 0..20 {
                    let unit = by_name[&format!("member-{i}")];
                    assert_eq!(
                        unit_stdout(scratch.path(), unit),
                        format!("member {i} of 20\n")
                    );
                }
                // `/usr/bin/env` shows the pilot's environment and the unit's own.
                let env = unit_stdout(scratch.path(), by_name["wide"]);
                let lines: BTreeSet<&str> = env.lines().collect();
                for var in ["ENSEMBLE=demo", "STEP=gather"] {
                    assert!(lines.contains(var), "`wide` does not see {var}:\n{env}");
                }
            }
            Some("pilot-data.toml") => {
                // The last unit counted the lines of what the three made: exported.
                let lines = examples_dir().join("data/results/lines.txt");
                assert_eq!(
                    std::fs::read_to_string(&lines).expect("the export").trim(),
                    "12"
                );
                assert!(report["summary"]["bytes_moved"].as_u64() > Some(0));
            }
            _ => {}
        }
    }
}

#[test]
fn report_has_the_documented_shape() {
    let scratch = Scratch::new();
    let workload = scratch.write(
        "shape.toml",
        r#"
[[pilot]]
name = "p"
resource = "local://"
cores = 2
walltime = "10m"

[[unit]]
name = "u-{i}"
executable = "/bin/echo"
arguments = ["u", "{i}"]
count = 5
"#,
    );
    let before = now_secs();
    let out = scratch.run(&workload);
    let after = now_secs();
    assert_eq!(out.code(), Some(0), "{out}");
    let report = scratch.read_report();

    for key in ["units", "pilots", "summary"] {
        assert!(report.get(key).is_some(), "no top-level `{key}`: {report}");
    }
    let summary = &report["summary"];
    assert_eq!(summary["units"], 5, "{summary}");
    assert_eq!(summary["done"], 5, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["canceled"], 0, "{summary}");

    // Every timestamp is seconds since the epoch, taken during the run.
    let in_run = |t: f64| t >= before - 1.0 && t <= after + 1.0;

    let pilots = pilots(&report);
    assert_eq!(pilots.len(), 1, "{report}");
    let pilot_ids: BTreeSet<&str> = pilots
        .iter()
        .map(|p| {
            let id = p["id"].as_str().expect("pilot `id` is a string");
            assert!(!id.is_empty());
            assert!(p["state"].is_string(), "pilot `state`: {p}");
            let stamps = p["timestamps"]
                .as_object()
                .expect("pilot `timestamps` object");
            for state in ["new", "pending", "running"] {
                let t = stamps
                    .get(state)
                    .and_then(Value::as_f64)
                    .unwrap_or_else(|| panic!("pilot timestamp `{state}` missing: {p}"));
                assert!(in_run(t), "pilot `{state}` at {t}, run {before}..{after}");
            }
            assert!(stamps["new"].as_f64() <= stamps["pending"].as_f64(), "{p}");
            assert!(
                stamps["pending"].as_f64() <= stamps["running"].as_f64(),
                "{p}"
            );
            id
        })
        .collect();

    let units = units(&report);
    assert_eq!(units.len(), 5);
    let mut ids = BTreeSet::new();
    for unit in units {
        for key in [
            "name",
            "id",
            "state",
            "exit_code",
            "pilot",
            "stdout",
            "stderr",
            "timestamps",
        ] {
            assert!(unit.get(key).is_some(), "unit without `{key}`: {unit}");
        }
        let id = unit["id"].as_str().expect("unit `id` is a string");
        assert!(ids.insert(id.to_owned()), "unit id {id} twice");
        assert_eq!(unit["state"], "done", "{unit}");
        assert_eq!(unit["exit_code"], 0, "{unit}");
        let pilot = unit["pilot"].as_str().expect("unit `pilot` is a string");
        assert!(pilot_ids.contains(pilot), "unknown pilot {pilot}");
        assert!(unit["stdout"].is_string() && unit["stderr"].is_string());

        let stamps = unit["timestamps"]
            .as_object()
            .expect("unit `timestamps` is an object");
        let times: Vec<f64> = UNIT_LIFECYCLE
            .iter()
            .map(|state| {
                stamps
                    .get(*state)
                    .and_then(Value::as_f64)
                    .unwrap_or_else(|| {
                        panic!("timestamp `{state}` missing or not a number: {unit}")
                    })
            })
            .collect();
        for key in stamps.keys() {
            assert!(
                UNIT_LIFECYCLE.contains(&key.as_str()),
                "unexpected timestamp key `{key}` for a done unit: {unit}"
            );
        }
        for (pair, states) in times.windows(2).zip(UNIT_LIFECYCLE.windows(2)) {
            assert!(
                pair[0] <= pair[1],
                "`{}` ({}) after `{}` ({}): {unit}",
                states[0],
                pair[0],
                states[1],
                pair[1]
            );
        }
        for t in &times {
            assert!(
                in_run(*t),
                "timestamp {t} outside the run {before}..{after}"
            );
        }
    }
    let names: BTreeSet<&str> = units.iter().filter_map(|u| u["name"].as_str()).collect();
    let expected: BTreeSet<String> = (0..5).map(|i| format!("u-{i}")).collect();
    assert_eq!(
        names,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
}

#[test]
fn failing_and_missing_units_fail_and_the_rest_is_done() {
    let scratch = Scratch::new();
    let workload = scratch.write(
        "failures.toml",
        r#"
[[pilot]]
resource = "local://"
cores = 2
walltime = "10m"

[[unit]]
name = "good-{i}"
executable = "/bin/echo"
arguments = ["good", "{i}"]
count = 4

[[unit]]
name = "exits-3"
executable = "/bin/sh"
arguments = ["-c", "echo boom >&2; exit 3"]

[[unit]]
name = "missing"
executable = "/nonexistent/tool"
"#,
    );
    let out = scratch.run(&workload);
    assert_eq!(out.code(), Some(1), "{out}");
    let report = scratch.read_report();
    let by_name = units_by_name(&report);
    assert_eq!(by_name.len(), 6, "{report}");

    for i in 0..4 {
        let unit = by_name[&format!("good-{i}")];
        assert_unit_done(scratch.path(), &scratch.sandbox(), &report, unit);
        assert_eq!(unit_stdout(scratch.path(), unit), format!("good {i}\n"));
    }

    let exits = by_name["exits-3"];
    assert_eq!(exits["state"], "failed", "{exits}");
    assert_eq!(exits["exit_code"], 3, "{exits}");
    let stderr = std::fs::read_to_string(report_path(scratch.path(), &exits["stderr"]))
        .expect("the failing unit's stderr file");
    assert_eq!(stderr, "boom\n");

    let missing = by_name["missing"];
    assert_eq!(missing["state"], "failed", "{missing}");
    assert_ne!(missing["exit_code"], 0, "{missing}");
    let detail = missing["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("the missing executable has no detail: {missing}"));
    assert!(detail.contains("/nonexistent/tool"), "{detail}");
    // The reason is also in the unit's stderr file, where a user looks first.
    let stderr = std::fs::read_to_string(report_path(scratch.path(), &missing["stderr"]))
        .expect("the missing executable's stderr file");
    assert!(stderr.contains("/nonexistent/tool"), "{stderr}");

    assert_eq!(report["summary"]["done"], 4);
    assert_eq!(report["summary"]["failed"], 2);
    assert_eq!(report["summary"]["canceled"], 0);

    assert!(
        out.stderr.contains("6 units: 4 done, 2 failed, 0 canceled"),
        "{out}"
    );
    let failed_lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("failed "))
        .collect();
    assert_eq!(failed_lines.len(), 2, "{out}");
    assert!(failed_lines.iter().any(|l| l.contains("exits-3")), "{out}");
    assert!(
        failed_lines
            .iter()
            .any(|l| l.contains("missing") && l.contains("/nonexistent/tool")),
        "{out}"
    );
}

/// `(what, workload text, line, column, part of the message)`: each is refused.
const MALFORMED: &[(&str, &str, usize, usize, &str)] = &[
    (
        "syntax error",
        "[[pilot]]\nresource = \"local://\"\ncores = = 2\n\n[[unit]]\nexecutable = \"/bin/true\"\n",
        3,
        9,
        "invalid",
    ),
    (
        "misspelled key",
        "[[pilot]]\nresource = \"local://\"\ncoers = 2\n\n[[unit]]\nexecutable = \"/bin/true\"\n",
        3,
        1,
        "unknown field `coers`",
    ),
    (
        "wrong type",
        "[[pilot]]\nresource = \"local://\"\ncores = \"two\"\n\n[[unit]]\nexecutable = \"/bin/true\"\n",
        3,
        9,
        "`cores` must be a whole number from 1 up, not \"two\"",
    ),
    (
        "zero cores",
        "[[pilot]]\nresource = \"local://\"\ncores = 2\n\n[[unit]]\nexecutable = \"/bin/true\"\ncores = 0\n",
        7,
        9,
        "`cores` must be at least 1",
    ),
    (
        "unit larger than every pilot",
        "[[pilot]]\nresource = \"local://\"\ncores = 2\n\n[[pilot]]\nresource = \"local://\"\ncores = 3\n\n[[unit]]\nexecutable = \"/bin/true\"\ncores = 8\n",
        11,
        9,
        "unit needs 8 cores but the largest pilot has 3",
    ),
];

#[test]
fn malformed_workloads_are_refused_before_anything_runs() {
    let scratch = Scratch::new();
    for (n, &(what, text, line, column, message)) in MALFORMED.iter().enumerate() {
        let workload = scratch.write(&format!("bad-{n}.toml"), text);
        let sandbox = scratch.path().join(format!("sandbox-{n}"));
        let report = scratch.path().join(format!("report-{n}.json"));
        let out = run_in(
            scratch.path(),
            &[
                "run",
                s(&workload),
                "--sandbox",
                s(&sandbox),
                "--report",
                s(&report),
                "-q",
            ],
        );
        assert_eq!(out.code(), Some(2), "{what}: {out}");
        let prefix = format!("{}:{line}:{column}:", workload.display());
        assert!(
            out.stderr.starts_with(&prefix),
            "{what}: stderr should start with {prefix:?}\n{out}"
        );
        let first = out.stderr.lines().next().unwrap_or_default();
        assert!(
            first.contains(message),
            "{what}: {first:?} should contain {message:?}"
        );
        assert!(
            !sandbox.exists(),
            "{what}: the sandbox {} was created",
            sandbox.display()
        );
        assert!(!report.exists(), "{what}: a report was written");
        assert!(
            !scratch.path().join("pstar.sandbox").exists(),
            "{what}: a default sandbox was created"
        );
    }
}

#[test]
fn an_ensemble_of_fifty_gets_distinct_indices() {
    let scratch = Scratch::new();
    let workload = scratch.write(
        "fifty.toml",
        r#"
[[pilot]]
resource = "local://"
cores = 2
walltime = "10m"

[[unit]]
name = "m-{i}"
executable = "/bin/sh"
arguments = ["-c", "echo arg={i} env=$IDX fixed=$FIXED"]
environment = { IDX = "{i}", FIXED = "same" }
count = 50
"#,
    );
    let out = scratch.run(&workload);
    assert_eq!(out.code(), Some(0), "{out}");
    let report = scratch.read_report();
    let by_name = units_by_name(&report);
    assert_eq!(by_name.len(), 50);
    let mut outputs = BTreeSet::new();
    for i in 0..50 {
        let unit = by_name
            .get(&format!("m-{i}"))
            .unwrap_or_else(|| panic!("no unit m-{i}"));
        assert_unit_done(scratch.path(), &scratch.sandbox(), &report, unit);
        let text = unit_stdout(scratch.path(), unit);
        assert_eq!(text, format!("arg={i} env={i} fixed=same\n"), "m-{i}");
        outputs.insert(text);
    }
    assert_eq!(outputs.len(), 50, "outputs are not all distinct");
    let ids: BTreeSet<&str> = units(&report)
        .iter()
        .filter_map(|u| u["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 50, "unit ids are not all distinct");
}

#[test]
fn check_accepts_good_files_and_refuses_bad_ones() {
    let scratch = Scratch::new();
    let good = scratch.write(
        "good.toml",
        "[[pilot]]\nresource = \"local://\"\ncores = 2\n\n[[pilot]]\nresource = \"local://\"\n\n[[unit]]\nexecutable = \"/bin/true\"\ncount = 4\n\n[[unit]]\nexecutable = \"/bin/false\"\n",
    );
    let out = run_in(scratch.path(), &["check", s(&good)]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("2 pilots, 5 units: ok"), "{out}");

    for example in ["quickstart.toml", "ensemble.toml"] {
        let path = examples_dir().join(example);
        let out = run_in(scratch.path(), &["check", s(&path)]);
        assert_eq!(out.code(), Some(0), "{example}: {out}");
    }

    for (n, &(what, text, line, column, _)) in MALFORMED.iter().enumerate() {
        let bad = scratch.write(&format!("bad-{n}.toml"), text);
        let out = run_in(scratch.path(), &["check", s(&bad)]);
        assert_eq!(out.code(), Some(2), "{what}: {out}");
        let prefix = format!("{}:{line}:{column}:", bad.display());
        assert!(out.stderr.starts_with(&prefix), "{what}: {out}");
    }

    let missing = scratch.path().join("missing.toml");
    let out = run_in(scratch.path(), &["check", s(&missing)]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr.starts_with(&format!("{}:", missing.display())),
        "{out}"
    );

    // Checking runs nothing.
    assert!(!scratch.path().join("pstar.sandbox").exists());
}

/// Live (not zombie) processes with `token` among their arguments.
fn processes_with_arg(token: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if !cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == token.as_bytes())
        {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // gone meanwhile
        };
        // `pid (comm) S ...`: the state follows the last `)`.
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next());
        if state != Some("Z") && state != Some("X") {
            found.push(pid);
        }
    }
    found
}

/// Kills, by pid, processes left with the test's unique argument (only after a failure).
struct KillLeftovers<'a>(&'a str);

impl Drop for KillLeftovers<'_> {
    fn drop(&mut self) {
        for pid in processes_with_arg(self.0) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// Every `stdout` file under `dir`, at any depth.
fn stdout_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "stdout") {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn ctrl_c_cancels_units_kills_their_processes_and_exits_130() {
    interrupted_run("-INT", 1);
}

#[test]
fn sigterm_cancels_units_kills_their_processes_and_exits_130() {
    interrupted_run("-TERM", 2);
}

#[test]
fn sighup_cancels_units_kills_their_processes_and_exits_130() {
    // The terminal closed, or the SSH connection `pstar run` was started from dropped.
    interrupted_run("-HUP", 3);
}

/// Interrupts a run of long units with `signal` (a `kill` option); `tag` keeps the
/// processes of concurrent tests apart.
fn interrupted_run(signal: &str, tag: u32) {
    let scratch = Scratch::new();
    // A duration no other process on the machine is sleeping for.
    let token = format!(
        "61.{tag}{}{:03}",
        std::process::id(),
        now_secs() as u64 % 1000
    );
    let _cleanup = KillLeftovers(&token);
    let workload = scratch.write(
        "long.toml",
        &format!(
            r#"
[[pilot]]
resource = "local://"
cores = 2
walltime = "10m"

[[unit]]
name = "long-{{i}}"
executable = "/bin/sleep"
arguments = ["{token}"]
count = 4
"#
        ),
    );
    let (sandbox, report) = (scratch.sandbox(), scratch.report());
    let mut cmd = pstar();
    cmd.current_dir(scratch.path()).args([
        "run",
        s(&workload),
        "--sandbox",
        s(&sandbox),
        "--report",
        s(&report),
        "-q",
    ]);
    let running = Running::start(cmd);

    // Two units fit on the pilot at a time: both start, the other two wait.
    wait_until(Duration::from_secs(30), "unit stdout files", || {
        !stdout_files(&sandbox).is_empty()
    });
    wait_until(Duration::from_secs(30), "two running sleeps", || {
        processes_with_arg(&token).len() >= 2
    });
    let sleeping = processes_with_arg(&token);
    assert_eq!(
        sleeping.len(),
        2,
        "more units run than the pilot has cores: {sleeping:?}"
    );

    let sent = Command::new("kill")
        .args([signal, &running.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill {signal} failed");
    let out = running.wait(Duration::from_secs(30));
    assert_eq!(out.code(), Some(130), "{out}");
    assert!(out.stderr.contains("interrupted"), "{out}");

    let report = scratch.read_report();
    let units = units(&report);
    assert_eq!(units.len(), 4, "{report}");
    for unit in units {
        assert_eq!(unit["state"], "canceled", "{unit}");
        assert!(
            unit["timestamps"]
                .get("canceled")
                .is_some_and(Value::is_f64),
            "no `canceled` timestamp: {unit}"
        );
    }
    assert_eq!(report["summary"]["canceled"], 4);
    // Canceled units never ran: they are not counted as work done per second.
    assert_eq!(report["summary"]["units_per_s"], 0.0, "{report}");

    // pstar has exited; its units' processes must not outlive it.
    wait_until(Duration::from_secs(5), "the sleeps to be gone", || {
        processes_with_arg(&token).is_empty()
    });
}

#[test]
fn an_unwritable_report_path_is_refused_before_anything_runs() {
    let scratch = Scratch::new();
    let quickstart = examples_dir().join("quickstart.toml");
    let sandbox = scratch.sandbox();
    let report = scratch.path().join("no-such-dir").join("report.json");
    let out = run_in(
        scratch.path(),
        &[
            "run",
            s(&quickstart),
            "--sandbox",
            s(&sandbox),
            "--report",
            s(&report),
            "-q",
        ],
    );
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("cannot write the report"), "{out}");
    assert!(
        !sandbox.exists(),
        "units ran although the report could not be written"
    );
}
