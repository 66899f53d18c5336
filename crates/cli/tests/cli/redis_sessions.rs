//! Sessions in a shared Redis as a careless or hostile user meets them: names that are
//! patterns or terminal escapes, sessions of other users, cancels of what does not exist,
//! secrets in the environment. Against a real `redis-server`; part of the `cli` test
//! binary.

use super::*;

use pstar_coordination::redis::WIRE_VERSION;
use pstar_testbed::RedisServer;

use super::redis_runs::{
    agent_pids, counting_workload, done_lines, nix_kill, pstar_over, run_over,
};

/// Records a session in the registry as a manager of `owner` would have, with one key of
/// data (and the key of its store format).
fn fake_session(server: &RedisServer, session: &str, owner: &str, finished: bool) {
    fake_session_of_format(server, session, owner, finished, Some(WIRE_VERSION));
}

/// [`fake_session`] as a pstar of store format `format` would have left it (`None`: one
/// from before sessions had a format).
fn fake_session_of_format(
    server: &RedisServer,
    session: &str,
    owner: &str,
    finished: bool,
    format: Option<u32>,
) {
    let mut entry = serde_json::json!({
        "session": session,
        "owner": owner,
        "host": "somewhere",
        "created": now_secs(),
        "finished": if finished { Some(now_secs()) } else { None },
    });
    let unit = match format {
        Some(v) => {
            entry["format"] = v.into();
            server.cli(&["SET", &format!("pstar:{session}:format"), &v.to_string()]);
            format!("v{v}:{{}}")
        }
        None => "{}".to_owned(),
    };
    server.cli(&["HSET", "pstar:sessions", session, &entry.to_string()]);
    server.cli(&["HSET", &format!("pstar:{session}:units"), "0", &unit]);
    server.cli(&["SET", &format!("pstar:{session}:next-unit"), "1"]);
}

#[test]
fn every_command_refuses_a_session_of_another_store_format_naming_both() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let me = pstar_coordination::redis::current_user();
    fake_session_of_format(&server, "old", &me, false, None);
    fake_session_of_format(&server, "new", &me, false, Some(WIRE_VERSION + 1));
    let before = server.keys();
    let newer = format!("store format v{}", WIRE_VERSION + 1);
    for (session, found) in [("old", "store format v0 (unversioned)"), ("new", &newer)] {
        let option = format!("--session={session}");
        let resume = format!("--resume={session}");
        let commands: [Vec<&str>; 5] = [
            vec!["run", &resume, "-q"],
            vec!["status", &option],
            vec!["units", &option],
            vec!["cancel", &option, "--all"],
            vec!["agent", &option, "--pilot", "pilot.0000"],
        ];
        for args in commands {
            let out = pstar_over(&server, &scratch, &args);
            assert_ne!(out.code(), Some(0), "{args:?}: {out}");
            let said = format!(
                "session `{session}` was written in pstar {found}; this pstar reads v{WIRE_VERSION}"
            );
            assert!(out.stderr.contains(&said), "{args:?}: {out}");
        }
    }
    assert_eq!(server.keys(), before, "a refused session was written to");
    // Listing and removing work whatever the format.
    let list = pstar_over(&server, &scratch, &["session", "list"]);
    assert!(
        list.stdout.contains("old") && list.stdout.contains("new"),
        "{list}"
    );
    let rm = pstar_over(
        &server,
        &scratch,
        &["session", "rm", "--force", "old", "new"],
    );
    assert_eq!(rm.code(), Some(0), "{rm}");
}

#[test]
fn hostile_session_names_are_refused_and_nothing_is_written() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let long = "a".repeat(101);
    let names = [
        "*",
        "a*",
        "?",
        "[a-z]*",
        "../../etc",
        "-x",
        ".x",
        "a:b",
        "a b",
        "\u{1b}[2J",
        "",
        &long,
    ];
    for name in names {
        let option = format!("--session={name}");
        let resume = format!("--resume={name}");
        let commands: [Vec<&str>; 7] = [
            vec!["run", &resume],
            vec!["status", &option],
            vec!["units", &option],
            vec!["cancel", &option, "--all"],
            vec!["pilot", "logs", &option, "pilot.0000"],
            vec!["session", "rm", "--", name],
            vec!["agent", &option, "--pilot", "pilot.0000"],
        ];
        for args in commands {
            let out = pstar_over(&server, &scratch, &args);
            assert_eq!(out.code(), Some(2), "{args:?}: {out}");
            assert!(
                out.stderr.contains("invalid session name"),
                "{args:?}: {out}"
            );
            assert!(
                !out.stderr.contains('\u{1b}'),
                "{args:?}: raw escape in {out}"
            );
        }
    }
    assert_eq!(server.keys(), Vec::<String>::new());
    assert!(!scratch.sandbox().exists());
}

#[test]
fn resuming_a_session_that_does_not_exist_writes_nothing() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let out = pstar_over(
        &server,
        &scratch,
        &["run", "--resume", "pstar.nosuch", "-q"],
    );
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("no session `pstar.nosuch`"), "{out}");
    assert_eq!(server.keys(), Vec::<String>::new());
}

#[test]
fn session_rm_removes_only_the_session_and_respects_other_users() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    // The owner is the account of the uid, whatever `USER` says.
    let me = pstar_coordination::redis::current_user();
    fake_session(&server, "mine", &me, true);
    fake_session(&server, "mine.2", &me, true);
    fake_session(&server, "live", &me, false);
    fake_session(&server, "theirs", "bob", true);
    server.cli(&["SET", "pstar:unrelated", "1"]);
    server.cli(&["SET", "pstar:mine", "1"]);
    let as_alice = |args: &[&str]| {
        let mut cmd = pstar();
        cmd.current_dir(scratch.path())
            .env("PSTAR_REDIS_PASSWORD", server.password())
            .env("PSTAR_COORDINATION", server.url())
            .env("USER", &me)
            .args(args);
        Running::start(cmd).wait(RUN_DEADLINE)
    };
    let before = server.keys();

    let theirs = as_alice(&["session", "rm", "theirs"]);
    assert_eq!(theirs.code(), Some(1), "{theirs}");
    assert!(theirs.stderr.contains("bob"), "{theirs}");
    assert!(theirs.stderr.contains("--force"), "{theirs}");
    let live = as_alice(&["session", "rm", "live"]);
    assert_eq!(live.code(), Some(1), "{live}");
    assert!(live.stderr.contains("--force"), "{live}");
    // Refused as a whole: nothing of the list is removed.
    let both = as_alice(&["session", "rm", "mine", "theirs"]);
    assert_eq!(both.code(), Some(1), "{both}");
    assert_eq!(server.keys(), before);

    let mine = as_alice(&["session", "rm", "mine"]);
    assert_eq!(mine.code(), Some(0), "{mine}");
    let left = server.keys();
    let gone: Vec<&String> = before.iter().filter(|k| !left.contains(k)).collect();
    assert_eq!(
        gone,
        [
            "pstar:mine:format",
            "pstar:mine:next-unit",
            "pstar:mine:units"
        ],
        "{left:?}"
    );
    let registry = server.cli(&["HKEYS", "pstar:sessions"]);
    assert!(!registry.lines().any(|l| l == "mine"), "{registry}");

    let forced = as_alice(&["session", "rm", "--force", "theirs", "live"]);
    assert_eq!(forced.code(), Some(0), "{forced}");
    let left = server.keys();
    for kept in [
        "pstar:unrelated",
        "pstar:mine",
        "pstar:mine.2:units",
        "pstar:sessions",
    ] {
        assert!(
            left.iter().any(|k| k == kept),
            "{kept} was removed: {left:?}"
        );
    }
    assert!(
        !left
            .iter()
            .any(|k| k.starts_with("pstar:theirs:") || k.starts_with("pstar:live:"))
    );
}

#[test]
fn session_list_shows_no_terminal_control_characters() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    // Written into the registry by someone who can write to the Redis.
    fake_session(&server, "ok", "\u{1b}]0;owned\u{7}\u{1b}[2J", true);
    let entry = serde_json::json!({
        "session": "evil\u{1b}[31m\r\n",
        "owner": "mallory",
        "host": "h\u{1b}[1A\u{8}",
        "created": now_secs(),
    });
    server.cli(&[
        "HSET",
        "pstar:sessions",
        "evil\u{1b}[31m\r\n",
        &entry.to_string(),
    ]);
    // An entry that is not one does not hide the others.
    server.cli(&["HSET", "pstar:sessions", "junk", "not json"]);
    let out = pstar_over(&server, &scratch, &["session", "list", "--all"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        !out.stdout.chars().any(|c| c.is_control() && c != '\n'),
        "control characters in {:?}",
        out.stdout
    );
    assert_eq!(
        out.stdout.lines().count(),
        3,
        "header and two sessions: {out}"
    );
    assert!(out.stdout.contains("evil\\u{1b}[31m\\r\\n"), "{out}");
}

/// A small session over `server`, run to its end; its id.
fn finished_session(server: &RedisServer, scratch: &Scratch) -> String {
    let workload = counting_workload(scratch, &[1], 2, 0.0);
    let run = run_over(server, scratch, &workload, &[]);
    let session = session_of(scratch);
    let out = run.wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(0), "{out}");
    session
}

#[test]
fn cancel_of_what_does_not_exist_fails_and_writes_nothing() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let session = finished_session(&server, &scratch);
    let before = server.keys();
    let cases: [(&[&str], &str); 5] = [
        (
            &["cancel", "--session", "pstar.nosuch", "--all"],
            "no session `pstar.nosuch`",
        ),
        (
            &["cancel", "--session", "pstar.nosuch", "unit.000000"],
            "no session `pstar.nosuch`",
        ),
        (
            &["cancel", "--session", &session, "unit.000099"],
            "no unit.000099 in session",
        ),
        (
            &["cancel", "--session", &session, "pilot.0042"],
            "no pilot.0042 in session",
        ),
        (&["cancel", "--session", &session, "--all"], "has finished"),
    ];
    for (args, says) in cases {
        let out = pstar_over(&server, &scratch, args);
        assert_eq!(out.code(), Some(1), "{args:?}: {out}");
        assert!(out.stderr.contains(says), "{args:?}: {out}");
        assert!(!out.stderr.contains("asked the manager"), "{args:?}: {out}");
    }
    let finished_unit = pstar_over(
        &server,
        &scratch,
        &["cancel", "--session", &session, "unit.000001"],
    );
    assert_eq!(finished_unit.code(), Some(1), "{finished_unit}");
    assert!(
        finished_unit.stderr.contains("has finished"),
        "{finished_unit}"
    );
    assert_eq!(server.keys(), before);
    let ttl = server.cli(&["TTL", &format!("pstar:{session}:events")]);
    assert!(
        ttl.trim().parse::<i64>().is_ok_and(|t| t > 0),
        "events key lost its expiry: {ttl}"
    );
}

/// Kills, by pid, agents left without their manager.
struct KillAgents(Vec<i32>);

impl Drop for KillAgents {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

#[test]
fn cancel_without_a_live_manager_says_so_and_names_its_targets() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let workload = counting_workload(&scratch, &[1], 20, 0.5);
    let mut run = run_over(&server, &scratch, &workload, &["--heartbeat-timeout", "1s"]);
    let session = session_of(&scratch);
    wait_until(Duration::from_secs(30), "a unit to finish", || {
        done_lines(&scratch) >= 1
    });

    // While the manager runs, the request goes to it.
    let live = pstar_over(
        &server,
        &scratch,
        &["cancel", "--session", &session, "unit.000019"],
    );
    assert_eq!(live.code(), Some(0), "{live}");
    assert!(live.stdout.contains("asked the manager"), "{live}");
    assert!(live.stdout.contains("unit.000019"), "{live}");
    assert!(!live.stdout.contains("Units("), "{live}");

    let _agents = KillAgents(agent_pids(run.pid(), "pilot.0000"));
    nix_kill(run.pid() as i32, "KILL");
    let _ = run.child.wait();
    let mut out = None;
    wait_until(Duration::from_secs(30), "cancel to see no manager", || {
        let o = pstar_over(
            &server,
            &scratch,
            &["cancel", "--session", &session, "unit.000018", "pilot.0000"],
        );
        let seen = o.stdout.contains("no manager");
        out = Some(o);
        seen
    });
    let out = out.expect("an answer");
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("--resume"), "{out}");
    assert!(
        out.stdout.contains("unit.000018") && out.stdout.contains("pilot.0000"),
        "{out}"
    );
    assert!(
        !out.stdout.contains("Units(") && !out.stdout.contains("Pilot("),
        "{out}"
    );
}

#[test]
fn units_see_no_redis_secret_of_any_kind() {
    use std::os::unix::fs::PermissionsExt;
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let password_file = scratch.write("redis.pw", &format!("{}\n", server.password()));
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600))
        .expect("chmod the password file");
    let env_file = scratch.path().join("env.txt");
    let workload = scratch.write(
        "env.toml",
        &format!(
            "[[pilot]]\nresource = \"local://\"\ncores = 1\nwalltime = \"10m\"\n\n\
             [[unit]]\nexecutable = \"/bin/sh\"\narguments = [\"-c\", \"env > {}\"]\n",
            env_file.display()
        ),
    );
    let with_password =
        server
            .url()
            .replacen("redis://", &format!("redis://:{}@", server.password()), 1);
    for (variable, value) in [
        ("PSTAR_REDIS_PASSWORD_FILE", s(&password_file).to_owned()),
        ("PSTAR_COORDINATION", with_password),
    ] {
        let mut cmd = pstar();
        cmd.current_dir(scratch.path())
            .env("PSTAR_AGENT_BIN", env!("CARGO_BIN_EXE_pstar"))
            .env("PSTAR_REDIS_PASSWORD_FILE", &password_file)
            .env("PSTAR_COORDINATION", server.url())
            .env(variable, &value)
            .args([
                "run",
                s(&workload),
                "--sandbox",
                s(&scratch.sandbox()),
                "-q",
            ]);
        let out = Running::start(cmd).wait(RUN_DEADLINE);
        assert_eq!(out.code(), Some(0), "{variable}: {out}");
        // A URL that carries the password is warned about, once, wherever it comes from.
        let warnings = out
            .stderr
            .lines()
            .filter(|l| l.contains("warning") && l.contains("PSTAR_COORDINATION"))
            .count();
        let expected = usize::from(variable == "PSTAR_COORDINATION");
        assert_eq!(warnings, expected, "{variable}: {out}");
        let env = std::fs::read_to_string(&env_file).expect("env.txt");
        assert!(env.contains("PSTAR_UNIT_ID="), "{env}");
        assert!(
            !env.contains(server.password()),
            "{variable}: a unit saw the password:\n{env}"
        );
        assert!(
            !env.contains("PSTAR_REDIS_PASSWORD"),
            "{variable}: a unit saw:\n{env}"
        );
        let _ = std::fs::remove_file(&env_file);
    }
}

#[test]
fn pilot_script_never_shows_the_password_of_the_store_url() {
    let scratch = Scratch::new();
    let workload = scratch.write(
        "slurm.toml",
        "[[pilot]]\nresource = \"slurm://\"\ncores = 1\nwalltime = \"10m\"\n\n\
         [[unit]]\nexecutable = \"/bin/true\"\n",
    );
    let out = run_in(
        scratch.path(),
        &[
            "pilot",
            "script",
            s(&workload),
            "--coordination",
            "redis://user:s3cret-pw@store.example:6379/0",
        ],
    );
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("store.example:6379"), "{out}");
    assert!(
        !out.stdout.contains("s3cret"),
        "the password shows in the script: {out}"
    );
}

#[test]
fn only_its_owner_resumes_a_session_whatever_user_says() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    fake_session(&server, "bobs", "bob", false);
    let before = server.keys();
    let mut cmd = pstar();
    cmd.current_dir(scratch.path())
        .env("PSTAR_REDIS_PASSWORD", server.password())
        .env("PSTAR_COORDINATION", server.url())
        .env("USER", "bob")
        .env("LOGNAME", "bob")
        .args(["run", "--resume", "bobs", "-q"]);
    let out = Running::start(cmd).wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("belongs to bob"), "{out}");
    assert_eq!(server.keys(), before, "{out}");
}
