//! What `pstar check` and `pstar run` refuse before anything starts, how workload files
//! resolve paths and expand ensembles, and what reaches the log. Part of the `cli` test
//! binary.

use super::*;

use pstar_testbed::RedisServer;

/// `pstar check WORKLOAD extra...` in `dir`, without a store from the environment.
fn check_in(dir: &Path, workload: &Path, extra: &[&str]) -> Output {
    let mut cmd = pstar();
    cmd.current_dir(dir)
        .env_remove("PSTAR_COORDINATION")
        .arg("check")
        .arg(workload)
        .args(extra);
    Running::start(cmd).wait(RUN_DEADLINE)
}

#[test]
fn check_of_ten_million_units_does_not_expand_them() {
    let scratch = Scratch::new();
    let workload = scratch.write(
        "huge.toml",
        "[[pilot]]\nresource = \"local://\"\n\n[[unit]]\nname = \"u-{i}\"\n\
         executable = \"/bin/true\"\narguments = [\"{i}\"]\ncount = 10000000\n",
    );
    // 10 M expanded units take gigabytes; a template takes nothing. The limit is on the
    // address space, so an expansion fails instead of taking the machine's memory.
    let mut cmd = Command::new("/bin/sh");
    cmd.current_dir(scratch.path())
        .env_remove("PSTAR_COORDINATION")
        .args(["-c", "ulimit -v 1000000 && exec \"$@\"", "sh"])
        .arg(env!("CARGO_BIN_EXE_pstar"))
        .arg("check")
        .arg(&workload);
    let out = Running::start(cmd).wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("1 pilot, 10000000 units: ok"), "{out}");
}

#[test]
fn check_of_ten_million_units_reading_ten_million_outputs_does_not_expand_them() {
    let scratch = Scratch::new();
    let workload = scratch.write(
        "huge-data.toml",
        "[[pilot]]\nresource = \"local://\"\n\n\
         [[unit]]\nexecutable = \"/bin/true\"\ncount = 10000000\n\
         output_data = [{ name = \"part-{i}\", files = [\"out\"] }]\n\n\
         [[unit]]\nexecutable = \"/bin/true\"\ncount = 10000000\n\
         input_data = [\"part-{i}\"]\n\
         output_data = [{ name = \"sum-{i}\", files = [\"out\"] }]\n",
    );
    // As for the units themselves: names compared as templates, none expanded.
    let mut cmd = Command::new("/bin/sh");
    cmd.current_dir(scratch.path())
        .env_remove("PSTAR_COORDINATION")
        .args(["-c", "ulimit -v 1000000 && exec \"$@\"", "sh"])
        .arg(env!("CARGO_BIN_EXE_pstar"))
        .arg("check")
        .arg(&workload);
    let out = Running::start(cmd).wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("1 pilot, 20000000 units: ok"), "{out}");
}

#[test]
fn check_counts_every_pilot_of_a_pilot_count() {
    let scratch = Scratch::new();
    let workload = scratch.write(
        "many.toml",
        "[simulation]\nqueue_wait = \"0s..1m\"\n\n[[pilot]]\nname = \"n\"\n\
         resource = \"local://\"\ncount = 10000\n\n[[pilot]]\nresource = \"local://\"\n\n\
         [[unit]]\nexecutable = \"/bin/true\"\npilot = \"n-10000\"\n",
    );
    let out = check_in(scratch.path(), &workload, &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains(": 10001 pilots, 1 unit: ok"), "{out}");

    let example = examples_dir().join("what-if.toml");
    let out = check_in(scratch.path(), &example, &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains(": 2 pilots, 7 units: ok"), "{out}");
}

#[test]
fn ensembles_beyond_the_unit_limit_are_refused_where_they_cross_it() {
    let scratch = Scratch::new();
    let workload = scratch.write(
        "toomany.toml",
        "[[pilot]]\nresource = \"local://\"\n\n[[unit]]\nexecutable = \"/bin/true\"\n\
         count = 4000000000\n\n[[unit]]\nexecutable = \"/bin/true\"\ncount = 4000000000\n",
    );
    let out = check_in(scratch.path(), &workload, &[]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr
            .starts_with(&format!("{}:6:9:", workload.display())),
        "{out}"
    );
    assert!(out.stderr.contains("at most 100000000 units"), "{out}");
}

const BODY: &str = "[[unit]]\nexecutable = \"/bin/true\"\n";
const LOCAL: &str = "[[pilot]]\nresource = \"local://\"\n\n";

/// Files that `pstar run` used to refuse only once a session existed (or that ran and
/// lost output): `(what, file, line, column, part of the message)`.
fn refused() -> Vec<(&'static str, String, usize, usize, &'static str)> {
    vec![
        (
            "condor pilot over nodes",
            format!(
                "[session]\ncoordination = \"redis://127.0.0.1:1\"\n\n[[pilot]]\n\
                 resource = \"condor://\"\ncores = 4\nnodes = 2\n\n{BODY}"
            ),
            4,
            1,
            "cannot span 2 nodes",
        ),
        (
            "condor pilot with a queue",
            format!(
                "[session]\ncoordination = \"redis://127.0.0.1:1\"\n\n[[pilot]]\n\
                 resource = \"condor://\"\nqueue = \"gpu\"\n\n{BODY}"
            ),
            4,
            1,
            "HTCondor has no queues",
        ),
        (
            "slurm pilot without a networked store",
            format!("[[pilot]]\nresource = \"slurm://\"\n\n{BODY}"),
            1,
            1,
            "need a coordination store their agents can reach",
        ),
        (
            "slurm queue of two lines",
            format!(
                "[session]\ncoordination = \"redis://127.0.0.1:1\"\n\n[[pilot]]\n\
                 resource = \"slurm://\"\nqueue = \"a\\nb\"\n\n{BODY}"
            ),
            4,
            1,
            "`queue` must be one line",
        ),
        (
            "NUL in an argument",
            format!("{LOCAL}{BODY}arguments = [\"a\\u0000b\"]\n"),
            6,
            13,
            "`arguments` contains a NUL byte",
        ),
        (
            "NUL in the executable",
            format!("{LOCAL}[[unit]]\nexecutable = \"/bin/tr\\u0000ue\"\n"),
            5,
            14,
            "`executable` contains a NUL byte",
        ),
        (
            "NUL in an environment value",
            format!("{LOCAL}{BODY}environment = {{ A = \"x\\u0000\" }}\n"),
            6,
            15,
            "`environment` contains a NUL byte",
        ),
        (
            "NUL in a pilot environment value",
            format!(
                "[[pilot]]\nresource = \"local://\"\nenvironment = {{ A = \"\\u0000\" }}\n\n{BODY}"
            ),
            3,
            15,
            "`environment` contains a NUL byte",
        ),
        (
            "empty environment key",
            format!("{LOCAL}{BODY}environment = {{ \"\" = \"x\" }}\n"),
            6,
            15,
            "environment variable name `` is empty",
        ),
        (
            "environment key with =",
            format!("{LOCAL}{BODY}environment = {{ \"A=B\" = \"x\" }}\n"),
            6,
            15,
            "environment variable name `A=B` contains `=`",
        ),
        (
            "empty stdout",
            format!("{LOCAL}{BODY}stdout = \"\"\n"),
            6,
            10,
            "`stdout` is empty",
        ),
        (
            "empty stderr",
            format!("{LOCAL}{BODY}stderr = \"\"\n"),
            6,
            10,
            "`stderr` is empty",
        ),
        (
            "stdout and stderr the same file",
            format!("{LOCAL}{BODY}stdout = \"out\"\nstderr = \"out\"\n"),
            7,
            10,
            "`stdout` and `stderr` name the same file `out`",
        ),
        (
            "stdout on the default stderr",
            format!("{LOCAL}{BODY}stdout = \"./stderr\"\n"),
            6,
            10,
            "`stdout` and `stderr` name the same file",
        ),
        (
            "an agent program that is not there",
            format!("[session]\nagent_binary = \"missing/pstar\"\n\n{LOCAL}{BODY}"),
            2,
            16,
            "`agent_binary`",
        ),
        (
            "one member's stdout on its stderr",
            format!("{LOCAL}{BODY}stdout = \"o{{i}}\"\nstderr = \"o1\"\ncount = 3\n"),
            7,
            10,
            "member 1: `stdout` and `stderr` name the same file `o1`",
        ),
        (
            "input data nothing makes",
            format!(
                "{LOCAL}[[data_unit]]\nname = \"reads-{{i}}\"\nfiles = [\"*.toml\"]\n\
                 count = 4\n\n{BODY}count = 8\ninput_data = [\"reads-{{i}}\"]\n"
            ),
            12,
            15,
            "input_data \"reads-4\" names no [[data_unit]] and no unit's output_data",
        ),
        (
            "a data unit's file that is not there",
            format!(
                "{LOCAL}[[data_unit]]\nname = \"reads-{{i}}\"\nfiles = [\"reads/{{i}}.fq\"]\n\n\
                 {BODY}input_data = [\"reads-0\"]\n"
            ),
            6,
            10,
            "/reads/0.fq does not exist",
        ),
        (
            "an output kept in a store the file does not declare",
            format!(
                "[[pilot_data]]\nname = \"archive\"\nurl = \"store\"\n\n{LOCAL}{BODY}\
                 output_data = [{{ name = \"out\", files = [\"*\"], store = \"archvie\" }}]\n"
            ),
            10,
            55,
            "no [[pilot_data]] is named `archvie` (pilot stores: `archive`)",
        ),
        (
            "data units beyond their store's quota",
            format!(
                "[[pilot_data]]\nname = \"archive\"\nurl = \"store\"\nsize = 10\n\n{LOCAL}\
                 [[data_unit]]\nname = \"all\"\nfiles = [\"*.toml\"]\n\n{BODY}\
                 input_data = [\"all\"]\n"
            ),
            11,
            10,
            "data unit `all`: pilot store `archive` would hold",
        ),
    ]
}

#[test]
fn check_and_run_refuse_the_same_files_before_anything_starts() {
    let scratch = Scratch::new();
    for (n, (what, text, line, column, message)) in refused().into_iter().enumerate() {
        let workload = scratch.write(&format!("refused-{n}.toml"), &text);
        let prefix = format!("{}:{line}:{column}:", workload.display());

        let out = check_in(scratch.path(), &workload, &[]);
        assert_eq!(out.code(), Some(2), "check, {what}: {out}");
        assert!(out.stderr.starts_with(&prefix), "check, {what}: {out}");
        assert!(out.stderr.contains(message), "check, {what}: {out}");

        let sandbox = scratch.path().join(format!("sandbox-{n}"));
        let report = scratch.path().join(format!("report-{n}.json"));
        let mut cmd = pstar();
        cmd.current_dir(scratch.path())
            .env_remove("PSTAR_COORDINATION")
            .args(["run", s(&workload), "--sandbox", s(&sandbox)])
            .args(["--report", s(&report), "-q"]);
        let out = Running::start(cmd).wait(RUN_DEADLINE);
        assert_eq!(out.code(), Some(2), "run, {what}: {out}");
        assert!(out.stderr.starts_with(&prefix), "run, {what}: {out}");
        assert!(!sandbox.exists(), "run, {what}: a sandbox was created");
    }
}

#[test]
fn check_takes_the_store_as_run_does() {
    let scratch = Scratch::new();
    let workload = scratch.write(
        "slurm.toml",
        &format!("[[pilot]]\nresource = \"slurm://\"\n\n{BODY}"),
    );
    let out = check_in(scratch.path(), &workload, &[]);
    assert_eq!(out.code(), Some(2), "{out}");
    // Checking names the store but does not reach it.
    let out = check_in(
        scratch.path(),
        &workload,
        &["--coordination", "redis://127.0.0.1:1"],
    );
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("1 pilot, 1 unit: ok"), "{out}");
    let mut cmd = pstar();
    cmd.current_dir(scratch.path())
        .env("PSTAR_COORDINATION", "redis://127.0.0.1:1")
        .arg("check")
        .arg(&workload);
    let out = Running::start(cmd).wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(0), "{out}");

    // A store URL pstar cannot use is refused by both, named with its password masked.
    let url = "http://user:secret@h:1";
    let out = check_in(scratch.path(), &workload, &["--coordination", url]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr
            .contains("`http://user:***@h:1` is not a redis://"),
        "{out}"
    );
    assert!(!out.stderr.contains("secret"), "{out}");
    let sandbox = scratch.sandbox();
    let mut cmd = pstar();
    cmd.current_dir(scratch.path()).args([
        "run",
        s(&workload),
        "--coordination",
        url,
        "--sandbox",
        s(&sandbox),
    ]);
    let out = Running::start(cmd).wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(!sandbox.exists(), "a sandbox was created");
}

/// A workload in `scratch/work/`, run from `scratch/`: its units print where they start.
fn where_units_start(scratch: &Scratch) -> PathBuf {
    let dir = scratch.path().join("work");
    std::fs::create_dir_all(dir.join("data")).expect("data directory");
    let text = "[[pilot]]\nresource = \"local://\"\nworking_directory = \"pilots\"\n\n\
                [[unit]]\nname = \"dot\"\nexecutable = \"/bin/pwd\"\nworking_directory = \".\"\n\n\
                [[unit]]\nname = \"data\"\nexecutable = \"/bin/pwd\"\nworking_directory = \"data\"\n";
    let path = dir.join("w.toml");
    std::fs::write(&path, text).expect("write workload");
    path
}

fn assert_units_started_in_the_workload_directory(scratch: &Scratch, out: &Output) {
    assert_eq!(out.code(), Some(0), "{out}");
    let report = scratch.read_report();
    let by_name = units_by_name(&report);
    let work = scratch.path().join("work").canonicalize().expect("work");
    for (name, dir) in [("dot", work.clone()), ("data", work.join("data"))] {
        let unit = by_name.get(name).expect("unit in the report");
        let printed = unit_stdout(scratch.path(), unit);
        assert_eq!(printed.trim_end(), s(&dir), "{name}: {unit}");
    }
    for p in pilots(&report) {
        let sandbox = PathBuf::from(p["sandbox"].as_str().expect("sandbox"));
        assert!(sandbox.starts_with(work.join("pilots")), "{p}");
    }
}

#[test]
fn relative_working_directories_resolve_against_the_workload_file_on_the_embedded_store() {
    let scratch = Scratch::new();
    let workload = where_units_start(&scratch);
    let out = scratch.run(&workload);
    assert_units_started_in_the_workload_directory(&scratch, &out);
}

#[test]
fn relative_working_directories_resolve_against_the_workload_file_over_redis() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let workload = where_units_start(&scratch);
    let (sandbox, report) = (scratch.sandbox(), scratch.report());
    let mut cmd = pstar();
    cmd.current_dir(scratch.path())
        .env("PSTAR_REDIS_PASSWORD", server.password())
        .env("PSTAR_AGENT_BIN", env!("CARGO_BIN_EXE_pstar"))
        .args(["run", "work/w.toml", "--coordination", &server.url()])
        .args(["--sandbox", s(&sandbox), "--report", s(&report), "-q"]);
    assert!(workload.ends_with("work/w.toml"));
    let out = Running::start(cmd).wait(RUN_DEADLINE);
    assert_units_started_in_the_workload_directory(&scratch, &out);
}

fn has_escape(text: &str) -> bool {
    text.contains('\u{1b}')
}

#[test]
fn logs_carry_no_colour_codes_when_not_on_a_terminal() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let workload = scratch.write("w.toml", &format!("{LOCAL}{BODY}"));
    let (sandbox, report) = (scratch.sandbox(), scratch.report());
    let mut cmd = pstar();
    cmd.current_dir(scratch.path())
        .env("PSTAR_LOG", "pstar=debug,pstar_agent=debug")
        .env("PSTAR_REDIS_PASSWORD", server.password())
        .env("PSTAR_AGENT_BIN", env!("CARGO_BIN_EXE_pstar"))
        .args(["run", s(&workload), "--coordination", &server.url()])
        .args(["--sandbox", s(&sandbox), "--report", s(&report), "-q"]);
    let out = Running::start(cmd).wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stderr.contains("INFO"), "{out}");
    assert!(!has_escape(&out.stderr), "{out}");
    let report = scratch.read_report();
    for p in pilots(&report) {
        let log = PathBuf::from(p["sandbox"].as_str().expect("sandbox")).join("agent.log");
        let text = std::fs::read_to_string(&log).expect("agent.log");
        assert!(!has_escape(&text), "{}:\n{text}", log.display());
    }
}

#[test]
fn braces_escape_and_the_index_reaches_pre_exec() {
    let scratch = Scratch::new();
    let workload = scratch.write(
        "w.toml",
        &format!(
            "{LOCAL}[[unit]]\nname = \"b-{{i}}\"\nexecutable = \"/bin/echo\"\n\
             pre_exec = [\"X=x{{i}}\", \"echo \\\"${{{{X}}}} {{{{i}}}} {{i}}\\\"\"]\n\
             arguments = [\"{{{{}}}}\", \"{{{{{{i}}}}}}\"]\ncount = 2\n"
        ),
    );
    let out = scratch.run(&workload);
    assert_eq!(out.code(), Some(0), "{out}");
    let report = scratch.read_report();
    let by_name = units_by_name(&report);
    for i in 0..2 {
        let unit = by_name.get(&format!("b-{i}")).expect("unit");
        assert_eq!(
            unit_stdout(scratch.path(), unit),
            format!("x{i} {{i}} {i}\n{{}} {{{i}}}\n"),
            "{unit}"
        );
    }
}

#[test]
fn counts_are_in_the_singular_when_there_is_one() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let workload = scratch.write("w.toml", &format!("{LOCAL}{BODY}"));
    let sandbox = scratch.sandbox();
    let over_redis = |args: &[&str]| {
        let mut cmd = pstar();
        cmd.current_dir(scratch.path())
            .env("PSTAR_REDIS_PASSWORD", server.password())
            .env("PSTAR_AGENT_BIN", env!("CARGO_BIN_EXE_pstar"))
            .env("PSTAR_COORDINATION", server.url())
            .args(args);
        Running::start(cmd).wait(RUN_DEADLINE)
    };
    let out = over_redis(&["run", s(&workload), "--sandbox", s(&sandbox)]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stderr.contains("(1 pilot, 1 unit)"), "{out}");
    let session = session_of(&scratch);

    let status = over_redis(&["status", "--session", &session]);
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(status.stdout.contains(" 1 core "), "{status}");
    assert!(status.stdout.contains(" 0 GPUs "), "{status}");
    assert!(!status.stdout.contains("1 cores"), "{status}");

    let check = check_in(scratch.path(), &workload, &[]);
    assert!(check.stdout.contains(": 1 pilot, 1 unit: ok"), "{check}");
}

/// `pstar run WORKLOAD -v -q` with its standard error on a pseudo-terminal (util-linux
/// `script`), `env` added; what the terminal showed.
fn run_on_a_terminal(scratch: &Scratch, workload: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("script");
    // The command line is fixed text; the program and the file come from the environment.
    cmd.current_dir(scratch.path())
        .env("PSTAR_UNDER_TEST", env!("CARGO_BIN_EXE_pstar"))
        .env("WORKLOAD_UNDER_TEST", workload)
        .env("SANDBOX_UNDER_TEST", scratch.sandbox())
        .env_remove("NO_COLOR")
        .env_remove("PSTAR_LOG")
        .envs(env.iter().copied())
        .args([
            "-qec",
            "exec \"$PSTAR_UNDER_TEST\" run \"$WORKLOAD_UNDER_TEST\" --sandbox \
             \"$SANDBOX_UNDER_TEST\" -v -q",
            "/dev/null",
        ]);
    Running::start(cmd).wait(RUN_DEADLINE)
}

#[test]
fn colour_codes_only_on_a_terminal_and_never_with_no_color() {
    let scratch = Scratch::new();
    let workload = scratch.write("w.toml", &format!("{LOCAL}{BODY}"));
    let out = run_on_a_terminal(&scratch, &workload, &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("INFO"), "{out}");
    assert!(has_escape(&out.stdout), "no colour on a terminal:\n{out}");

    let out = run_on_a_terminal(&scratch, &workload, &[("NO_COLOR", "1")]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("INFO"), "{out}");
    assert!(!has_escape(&out.stdout), "colour with NO_COLOR set:\n{out}");
}

/// A plain TCP listener on loopback that keeps every byte sent to it, as a host named by
/// someone else's workload file would.
struct Eavesdropper {
    port: u16,
    heard: Arc<Mutex<Vec<u8>>>,
}

impl Eavesdropper {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
        let port = listener.local_addr().expect("its address").port();
        let heard = Arc::<Mutex<Vec<u8>>>::default();
        let keep = heard.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let keep = keep.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if let Ok(mut all) = keep.lock() {
                            all.extend_from_slice(&buf[..n]);
                        }
                    }
                });
            }
        });
        Self { port, heard }
    }

    fn heard(&self) -> String {
        String::from_utf8_lossy(&self.heard.lock().map(|h| h.clone()).unwrap_or_default())
            .into_owned()
    }
}

/// The store a workload file names is not given the password of the user's environment:
/// the file may come from anyone. `pstar run` refuses it, saying how to confirm the store,
/// and nothing reaches that host; named on the command line too, it is confirmed.
#[test]
fn a_store_named_by_the_workload_file_gets_no_password_from_the_environment() {
    let host = Eavesdropper::start();
    let scratch = Scratch::new();
    let url = format!("redis://127.0.0.1:{}/0", host.port);
    let workload = scratch.write(
        "foreign.toml",
        &format!(
            "[session]\ncoordination = \"{url}\"\n\n[[pilot]]\nresource = \"local://\"\n\n\
             [[unit]]\nexecutable = \"/bin/true\"\n"
        ),
    );
    let password = "pw-of-the-user-0123";
    let mut cmd = pstar();
    cmd.current_dir(scratch.path())
        .env("PSTAR_REDIS_PASSWORD", password)
        .env_remove("PSTAR_COORDINATION")
        .args([
            "run",
            s(&workload),
            "--sandbox",
            s(&scratch.sandbox()),
            "-q",
        ]);
    let out = Running::start(cmd).wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("foreign.toml:2"), "{out}");
    assert!(
        out.stderr.contains(&format!("--coordination {url}")),
        "{out}"
    );
    assert!(out.stderr.contains("PSTAR_REDIS_PASSWORD"), "{out}");
    assert!(!scratch.sandbox().exists(), "a sandbox was created");
    let heard = host.heard();
    assert!(
        !heard.contains(password),
        "the password reached the host: {heard}"
    );
    assert!(!heard.to_ascii_uppercase().contains("AUTH"), "{heard}");
}

/// A store URL pstar cannot use is named in the refusal (its password masked) with where
/// it came from; an empty `PSTAR_COORDINATION` is no store at all.
#[test]
fn a_bad_store_url_is_named_with_where_it_came_from() {
    let scratch = Scratch::new();
    let workload = scratch.write(
        "w.toml",
        "[[pilot]]\nresource = \"local://\"\n\n[[unit]]\nexecutable = \"/bin/true\"\n",
    );
    let out = check_in(scratch.path(), &workload, &["--coordination", "ftp://x"]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("`ftp://x`"), "{out}");
    assert!(out.stderr.contains("--coordination"), "{out}");

    let mut cmd = pstar();
    cmd.current_dir(scratch.path())
        .env("PSTAR_COORDINATION", "http://me:secret@h:1")
        .args(["check", s(&workload)]);
    let out = Running::start(cmd).wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("PSTAR_COORDINATION"), "{out}");
    assert!(!out.stderr.contains("--coordination"), "{out}");
    assert!(out.stderr.contains("http://me:***@h:1"), "{out}");
    assert!(!out.stderr.contains("secret"), "{out}");

    for command in [
        vec!["check", s(&workload)],
        vec!["pilot", "script", s(&workload)],
    ] {
        let mut cmd = pstar();
        cmd.current_dir(scratch.path())
            .env("PSTAR_COORDINATION", "")
            .args(&command);
        let out = Running::start(cmd).wait(RUN_DEADLINE);
        assert_eq!(out.code(), Some(0), "{command:?}: {out}");
    }
    let mut cmd = pstar();
    cmd.current_dir(scratch.path())
        .env("PSTAR_COORDINATION", "")
        .args([
            "run",
            s(&workload),
            "--sandbox",
            s(&scratch.sandbox()),
            "-q",
        ]);
    let out = Running::start(cmd).wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(0), "an empty PSTAR_COORDINATION: {out}");
}

/// A `PSTAR_REDIS_RETRY` that is not a duration is said, once, with what is used instead
/// (it was ignored without a word).
#[test]
fn a_redis_retry_that_is_not_a_duration_is_said_once() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let mut cmd = pstar();
    cmd.current_dir(scratch.path())
        .env("PSTAR_REDIS_PASSWORD", server.password())
        .env("PSTAR_REDIS_RETRY", "soon")
        .args([
            "status",
            "--session",
            "nosuch",
            "--coordination",
            &server.url(),
        ]);
    let out = Running::start(cmd).wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("no session `nosuch`"), "{out}");
    let said: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("PSTAR_REDIS_RETRY"))
        .collect();
    assert_eq!(said.len(), 1, "{out}");
    assert!(said[0].contains("`soon` is not a duration"), "{out}");
}

#[test]
fn check_warns_of_an_executable_path_that_is_not_on_this_machine() {
    let scratch = Scratch::new();
    let workload = scratch.write(
        "w.toml",
        "[[pilot]]\nresource = \"local://\"\n\n\
         [[unit]]\nname = \"mine\"\nexecutable = \"./bin/simulate\"\n",
    );
    let out = run_in(scratch.path(), &["check", s(&workload)]);
    assert_eq!(out.code(), Some(0), "{out}");
    let expected = scratch.path().join("bin/simulate");
    assert!(out.stderr.contains("warning"), "{out}");
    assert!(out.stderr.contains(s(&expected)), "{out}");
    // Once it is there, nothing to say.
    std::fs::create_dir_all(scratch.path().join("bin")).unwrap();
    std::fs::write(&expected, "#!/bin/sh\n").unwrap();
    let out = run_in(scratch.path(), &["check", s(&workload)]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(!out.stderr.contains("warning"), "{out}");
}
