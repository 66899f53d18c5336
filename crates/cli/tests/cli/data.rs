//! Pilot-Data through `pstar run`: units read data units from and write them to real
//! stores: a directory, a path over SFTP (the testbed's sshd) and an S3 bucket (the
//! testbed's S3 server, s3s-fs), and their outputs are exported when the run ends.

use super::*;

/// A workload: two data units in the store `url`, three units each reading the shared one
/// and its own, each making an output kept in the store; a last unit reading all three
/// outputs and exported.
fn pipeline(url: &str, dir: &Path) -> String {
    std::fs::create_dir_all(dir.join("in/reads")).expect("input directory");
    std::fs::write(dir.join("in/ref.fa"), ">chr\nACGT\n").expect("reference");
    for i in 0..3 {
        std::fs::write(dir.join(format!("in/reads/{i}.fq")), format!("read {i}\n")).expect("reads");
    }
    format!(
        r#"
[[pilot_data]]
name = "archive"
url = "{url}"
size = "1MiB"

[[pilot]]
resource = "local://"
cores = 2
walltime = "10m"

[[data_unit]]
name = "reference"
files = ["in/ref.fa"]

[[data_unit]]
name = "reads-{{i}}"
files = ["in/reads/{{i}}.fq"]
count = 3

[[unit]]
name = "join-{{i}}"
executable = "/bin/sh"
arguments = ["-c", "cat \"$PSTAR_DATA/reference/ref.fa\" \"$PSTAR_DATA/reads-$1/$1.fq\" > joined.txt", "sh", "{{i}}"]
count = 3
input_data = ["reference", "reads-{{i}}"]
output_data = [{{ name = "joined-{{i}}", files = ["joined.txt"] }}]

[[unit]]
name = "gather"
executable = "/bin/sh"
arguments = ["-c", "cat \"$PSTAR_DATA\"/joined-*/joined.txt > all.txt"]
input_data = ["joined-0", "joined-1", "joined-2"]
output_data = [{{ name = "all", files = ["all.txt"], export = "results" }}]
"#
    )
}

/// Runs the pipeline against `url` with `env` and checks what it made and moved.
fn run_pipeline(url: &str, env: &[(&str, String)]) -> Value {
    run_pipeline_with(url, env, &[])
}

/// [`run_pipeline`] with more arguments to `pstar run`.
fn run_pipeline_with(url: &str, env: &[(&str, String)], extra: &[&str]) -> Value {
    let scratch = Scratch::new();
    let workload = scratch.write("work.toml", &pipeline(url, scratch.path()));
    let (sandbox, report) = (scratch.sandbox(), scratch.report());
    let mut cmd = pstar();
    cmd.current_dir(scratch.path())
        .args(["run", s(&workload), "--sandbox", s(&sandbox)])
        .args(["--report", s(&report), "-q"])
        .args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = Running::start(cmd).wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(0), "{out}");
    let report = scratch.read_report();
    for unit in units(&report) {
        assert_unit_done(scratch.path(), &scratch.sandbox(), &report, unit);
    }
    let expected: String = (0..3).map(|i| format!(">chr\nACGT\nread {i}\n")).collect();
    assert_eq!(
        std::fs::read_to_string(scratch.path().join("results/all.txt")).expect("exported"),
        expected
    );
    let summary = &report["summary"];
    let data_units = summary["data_units"].as_array().expect("data units listed");
    assert_eq!(data_units.len(), 1 + 3 + 3 + 1, "{summary}");
    for d in data_units {
        assert_eq!(d["state"], "done", "{d}");
        assert!(!d["files"].as_array().expect("files").is_empty(), "{d}");
        assert!(
            d["files"][0]["sha256"]
                .as_str()
                .is_some_and(|h| h.len() == 64),
            "{d}"
        );
    }
    let joined = data_units
        .iter()
        .find(|d| d["name"] == "joined-0")
        .expect("joined-0");
    assert_eq!(joined["stores"], serde_json::json!(["archive"]), "{joined}");
    // The reference (10 bytes) reached the one pilot once, whatever number of units read it.
    let by_name = units_by_name(&report);
    let staged_ref: u64 = (0..3)
        .map(|i| {
            by_name[&format!("join-{i}")]["bytes_in"]
                .as_u64()
                .expect("bytes_in")
                - 7
        })
        .sum();
    assert_eq!(staged_ref, 10, "{report}");
    assert!(summary["bytes_moved"].as_u64().expect("bytes_moved") > 0);
    report
}

#[test]
fn units_read_and_write_data_units_in_a_directory_store() {
    let dir = tempfile::tempdir().expect("store directory");
    let report = run_pipeline(&format!("file://{}/store", s(dir.path())), &[]);
    assert_eq!(
        report["summary"]["bytes_from"]["client"],
        10 + 3 * 7,
        "{report}"
    );
}

#[test]
fn units_read_and_write_data_units_in_a_store_over_sftp() {
    let sshd = pstar_testbed::SshServer::start();
    let remote = tempfile::tempdir().expect("remote directory");
    let url = format!(
        "sftp://root@127.0.0.1:{}{}/store",
        sshd.port(),
        s(remote.path())
    );
    let env = [("PSTAR_SSH_CONFIG", s(&sshd.config_file()).to_owned())];
    run_pipeline(&url, &env);
    assert!(
        remote
            .path()
            .join("store")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some()),
        "the store holds the session's data units"
    );
}

#[test]
fn over_redis_agents_of_their_own_stage_and_store_data_units() {
    let server = pstar_testbed::RedisServer::start();
    let dir = tempfile::tempdir().expect("store directory");
    let env = [
        ("PSTAR_REDIS_PASSWORD", server.password().to_owned()),
        ("PSTAR_AGENT_BIN", env!("CARGO_BIN_EXE_pstar").to_owned()),
    ];
    let report = run_pipeline_with(
        &format!("file://{}/store", s(dir.path())),
        &env,
        &["--coordination", &server.url()],
    );
    // `pstar status` shows the session's data units and what moved.
    let session = report["summary"]["session"]
        .as_str()
        .expect("session")
        .to_owned();
    let mut cmd = pstar();
    cmd.env("PSTAR_REDIS_PASSWORD", server.password()).args([
        "status",
        "--session",
        &session,
        "--coordination",
        &server.url(),
    ]);
    let out = Running::start(cmd).wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("data units: 8 (running 8); "), "{out}");
}

#[test]
fn units_read_and_write_data_units_in_an_s3_bucket() {
    let s3 = pstar_testbed::S3Server::start();
    s3.create_bucket("pstar-test");
    let url = s3.url("pstar-test", "runs");
    let env: Vec<(&str, String)> = s3.env();
    run_pipeline(&url, &env);
    assert!(
        s3.data_dir().join("pstar-test/runs").is_dir(),
        "the bucket holds the session's data units"
    );
}

#[test]
fn a_killed_manager_of_a_pipeline_is_resumed_and_every_unit_runs_once() {
    let server = pstar_testbed::RedisServer::start();
    let scratch = Scratch::new();
    std::fs::write(scratch.path().join("seed.txt"), "seed\n").expect("seed");
    let store = scratch.path().join("store");
    let workload = scratch.write(
        "work.toml",
        &format!(
            r#"
[[pilot_data]]
name = "archive"
url = "file://{}"

[[pilot]]
resource = "local://"
cores = 2
walltime = "10m"

[[data_unit]]
name = "seed"
files = ["seed.txt"]

[[unit]]
name = "part-{{i}}"
executable = "/bin/sh"
arguments = ["-c", "sleep 0.4; echo $1 >> \"$0\"; cat \"$PSTAR_DATA/seed/seed.txt\" > part.txt; echo $1 >> part.txt", "{}", "{{i}}"]
count = 8
input_data = ["seed"]
output_data = [{{ name = "part-{{i}}", files = ["part.txt"] }}]

[[unit]]
name = "gather"
executable = "/bin/sh"
arguments = ["-c", "cat \"$PSTAR_DATA\"/part-*/part.txt > all.txt"]
input_data = ["part-0", "part-1", "part-2", "part-3", "part-4", "part-5", "part-6", "part-7"]
output_data = [{{ name = "all", files = ["all.txt"], export = "results" }}]
"#,
            s(&store),
            s(&scratch.path().join("ran.log")),
        ),
    );
    let mut run = super::redis_runs::run_over(&server, &scratch, &workload, &[]);
    let session = session_of(&scratch);
    let ran = || {
        std::fs::read_to_string(scratch.path().join("ran.log"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    wait_until(Duration::from_secs(30), "parts to run", || ran() >= 2);
    let _ = run.child.kill();
    let _ = run.child.wait();

    let out = super::redis_runs::resume_over(&server, &scratch, &session, &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    let report = scratch.read_report();
    assert_eq!(units(&report).len(), 9, "{report}");
    for u in units(&report) {
        assert_eq!(u["state"], "done", "{u}");
    }
    let mut lines: Vec<String> = std::fs::read_to_string(scratch.path().join("ran.log"))
        .expect("ran.log")
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        (0..8).map(|i| i.to_string()).collect::<Vec<_>>(),
        "each part ran once"
    );
    let all = std::fs::read_to_string(scratch.path().join("results/all.txt")).expect("exported");
    assert_eq!(all.lines().filter(|l| *l == "seed").count(), 8, "{all}");
}

#[test]
fn exports_that_would_overwrite_each_other_or_fail_make_the_run_fail() {
    let scratch = Scratch::new();
    std::fs::write(scratch.path().join("in.txt"), "x\n").expect("input");
    let workload = scratch.write(
        "work.toml",
        r#"
[[pilot]]
resource = "local://"

[[unit]]
name = "w-{i}"
executable = "/bin/sh"
arguments = ["-c", "echo $0 > out.txt", "{i}"]
count = 2
output_data = [{ name = "o-{i}", files = ["out.txt"], export = "same/" }]
"#,
    );
    let out = scratch.run(&workload);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .contains("would overwrite what data unit o-0 exported there"),
        "{out}"
    );
    assert!(out.stderr.contains("1 data unit not exported"), "{out}");
    assert_eq!(
        std::fs::read_to_string(scratch.path().join("same/out.txt")).expect("the first export"),
        "0\n"
    );
}

#[test]
fn data_units_without_a_pilot_store_are_placed_under_the_sandbox_root() {
    let scratch = Scratch::new();
    std::fs::write(scratch.path().join("in.txt"), "hello\n").expect("input");
    let workload = scratch.write(
        "work.toml",
        r#"
[[pilot]]
resource = "local://"

[[data_unit]]
name = "greeting"
files = ["in.txt"]

[[unit]]
executable = "/bin/sh"
arguments = ["-c", "cat \"$PSTAR_DATA/greeting/in.txt\""]
input_data = ["greeting"]
"#,
    );
    let out = scratch.run(&workload);
    assert_eq!(out.code(), Some(0), "{out}");
    let report = scratch.read_report();
    let unit = &units(&report)[0];
    assert_eq!(unit_stdout(scratch.path(), unit), "hello\n");
    assert_eq!(
        report["summary"]["data_units"][0]["stores"],
        serde_json::json!(["sandbox"])
    );
    assert!(scratch.sandbox().join("pstar.data").is_dir());
}

#[test]
fn no_export_replaces_the_workload_file() {
    let scratch = Scratch::new();
    let text = r#"
[[pilot]]
resource = "local://"

[[unit]]
executable = "/bin/sh"
arguments = ["-c", "echo PWNED > work.toml"]
output_data = [{ name = "o", files = ["work.toml"], export = "." }]
"#;
    let workload = scratch.write("work.toml", text);
    let out = scratch.run(&workload);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains("an input or the report of this run"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&workload).expect("workload"), text);
}
