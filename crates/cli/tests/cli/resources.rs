//! Pilots on real resources: a single-node (or fake multi-node) Slurm, a Grid Engine cell
//! and a key-only sshd, each started on loopback by pstar-testbed, with a real Redis as the
//! coordination store. Part of the `cli` test binary.

use super::*;

use pstar_testbed::{RedisServer, SgeCell, SlurmCluster, SshServer};

/// The services one run may use, with the environment `pstar run` needs for them.
#[derive(Default)]
pub(super) struct Services<'a> {
    pub(super) slurm: Option<&'a SlurmCluster>,
    pub(super) sge: Option<&'a SgeCell>,
    pub(super) ssh: Option<&'a SshServer>,
}

impl Services<'_> {
    fn env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(slurm) = self.slurm {
            env.extend(slurm.env());
        }
        if let Some(sge) = self.sge {
            env.extend(sge.env());
        }
        if let Some(ssh) = self.ssh {
            env.push(("PSTAR_SSH_CONFIG".into(), s(&ssh.config_file()).to_owned()));
        }
        env
    }
}

/// The `pstar run WORKLOAD` command against `redis`, with the services' environment and
/// fast polling.
fn run_command(
    redis: &RedisServer,
    services: &Services<'_>,
    scratch: &Scratch,
    workload: &Path,
) -> Command {
    let (sandbox, report) = (scratch.sandbox(), scratch.report());
    let mut cmd = pstar();
    cmd.current_dir(scratch.path())
        .env("PSTAR_REDIS_PASSWORD", redis.password())
        .envs(services.env())
        .args(["run", s(workload), "--coordination", &redis.url()])
        .args(["--sandbox", s(&sandbox), "--report", s(&report), "-q"])
        .args(["--poll-interval", "500ms"]);
    cmd
}

/// Runs [`run_command`] with `extra` arguments to its end.
pub(super) fn run_with(
    redis: &RedisServer,
    services: &Services<'_>,
    scratch: &Scratch,
    workload: &Path,
    extra: &[&str],
) -> Output {
    let mut cmd = run_command(redis, services, scratch, workload);
    cmd.args(extra);
    Running::start(cmd).wait(RUN_DEADLINE)
}

/// A unit ensemble that writes where it ran: `$SLURMD_NODENAME`, else the host name.
fn where_units(count: usize, cores: u32) -> String {
    format!(
        "[[unit]]\nname = \"w{{i}}\"\nexecutable = \"/bin/sh\"\ncores = {cores}\n\
         arguments = [\"-c\", \"echo ${{SLURMD_NODENAME:-$(hostname)}}; sleep 0.2\"]\n\
         count = {count}\n"
    )
}

/// Every unit of the report done; returns how many ran on each pilot.
fn done_per_pilot(report: &Value) -> BTreeMap<String, usize> {
    let mut per = BTreeMap::new();
    for u in units(report) {
        assert_eq!(u["state"], "done", "{u}");
        *per.entry(u["pilot"].as_str().expect("pilot").to_owned())
            .or_default() += 1;
    }
    per
}

fn pilot_dir(scratch: &Scratch, report: &Value, i: usize) -> PathBuf {
    let p = &pilots(report)[i];
    report_path(scratch.path(), &p["sandbox"])
}

#[test]
fn a_slurm_pilot_runs_units_and_keeps_its_credentials_private() {
    let slurm = SlurmCluster::start(1, 4);
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let workload = scratch.write(
        "w.toml",
        &format!(
            "[[pilot]]\nresource = \"slurm://\"\ncores = 2\nwalltime = \"10m\"\n\n{}",
            where_units(12, 1)
        ),
    );
    let services = Services {
        slurm: Some(&slurm),
        ..Default::default()
    };
    let out = run_with(&redis, &services, &scratch, &workload, &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    let report = scratch.read_report();
    assert_eq!(done_per_pilot(&report).values().sum::<usize>(), 12);
    let pilot = &pilots(&report)[0];
    let job = pilot["job"].as_str().expect("the pilot's Slurm job id");
    assert!(job.chars().all(|c| c.is_ascii_digit()), "job id {job}");

    // The job ran through Slurm: Slurm knows it, and it ran the script pstar wrote.
    let shown = slurm
        .command("scontrol")
        .args(["show", "job", job])
        .output()
        .expect("scontrol");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("JobName=pstar."), "{shown}");
    let dir = pilot_dir(&scratch, &report, 0);
    let script = std::fs::read_to_string(dir.join("pilot.sbatch")).expect("job script");
    assert!(script.contains("#SBATCH --ntasks-per-node=2"), "{script}");
    // The password is in a file only its owner can read, named in the script.
    assert!(
        !script.contains(redis.password()),
        "password in the job script"
    );
    let secret = dir.join("coordination.secret");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&secret)
        .expect("credentials file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "credentials file mode {mode:o}");
    assert!(script.contains("PSTAR_REDIS_PASSWORD_FILE"), "{script}");
    // Ending the run canceled the pilot, and with it its batch job.
    wait_until(Duration::from_secs(30), "the pilot job to end", || {
        let out = slurm
            .command("squeue")
            .args(["-h", "-j", job, "-o", "%T"])
            .output()
            .expect("squeue");
        String::from_utf8_lossy(&out.stdout).trim().is_empty()
    });
}

#[test]
fn a_two_node_slurm_pilot_uses_both_nodes_and_runs_mpi_units_over_them() {
    let slurm = SlurmCluster::start(2, 2);
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let workload = scratch.write(
        "w.toml",
        &format!(
            "[[pilot]]\nresource = \"slurm://\"\ncores = 4\nnodes = 2\nwalltime = \"10m\"\n\n\
             {}\n[[unit]]\nname = \"mpi\"\nexecutable = \"/bin/sh\"\nranks = 4\n\
             arguments = [\"-c\", \"echo rank $SLURM_PROCID on $SLURMD_NODENAME\"]\n",
            where_units(6, 2)
        ),
    );
    let services = Services {
        slurm: Some(&slurm),
        ..Default::default()
    };
    let out = run_with(&redis, &services, &scratch, &workload, &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    let report = scratch.read_report();
    done_per_pilot(&report);
    let by_name = units_by_name(&report);
    let nodes: BTreeSet<String> = (0..6)
        .map(|i| {
            unit_stdout(scratch.path(), by_name[&format!("w{i}")])
                .trim()
                .to_owned()
        })
        .collect();
    assert_eq!(
        nodes,
        BTreeSet::from(["n1".to_owned(), "n2".to_owned()]),
        "two-core units on a pilot of two two-core nodes"
    );
    let mpi = unit_stdout(scratch.path(), by_name["mpi"]);
    let ranks: BTreeSet<&str> = mpi.lines().collect();
    assert_eq!(ranks.len(), 4, "four ranks:\n{mpi}");
    assert!(
        mpi.contains("on n1") && mpi.contains("on n2"),
        "ranks over both nodes:\n{mpi}"
    );
}

#[test]
fn a_grid_engine_pilot_runs_units() {
    let sge = SgeCell::start(4);
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let workload = scratch.write(
        "w.toml",
        &format!(
            "[[pilot]]\nresource = \"sge://\"\ncores = 2\nwalltime = \"10m\"\n\n{}",
            where_units(10, 1)
        ),
    );
    let services = Services {
        sge: Some(&sge),
        ..Default::default()
    };
    let out = run_with(&redis, &services, &scratch, &workload, &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    let report = scratch.read_report();
    assert_eq!(done_per_pilot(&report).values().sum::<usize>(), 10);
    let dir = pilot_dir(&scratch, &report, 0);
    let script = std::fs::read_to_string(dir.join("pilot.sge")).expect("job script");
    assert!(script.contains("#$ -pe smp 2"), "{script}");
}

/// A workload of one pilot on `ssh` with these extra `fields`, its sandbox root under
/// `scratch/remote` (returned too), and `units` null units.
fn ssh_workload(
    scratch: &Scratch,
    ssh: &SshServer,
    fields: &str,
    units: usize,
) -> (PathBuf, PathBuf) {
    let remote = scratch.path().join("remote");
    let workload = scratch.write(
        "w.toml",
        &format!(
            "[[pilot]]\nresource = \"ssh://root@127.0.0.1:{}\"\n{fields}\
             working_directory = \"{}\"\n\n{}",
            ssh.port(),
            remote.display(),
            where_units(units, 1)
        ),
    );
    (workload, remote)
}

/// The copies of pstar under a remote sandbox root (none if the directory is missing).
fn copies_in(remote: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(remote.join("bin"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// `text` as an executable file `name` in `scratch`.
fn executable(scratch: &Scratch, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = scratch.write(name, text);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn an_ssh_pilot_gets_the_binary_copied_once_and_runs_units() {
    let ssh = SshServer::start();
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let (workload, remote) = ssh_workload(&scratch, &ssh, "cores = 2\nwalltime = \"10m\"\n", 10);
    let services = Services {
        ssh: Some(&ssh),
        ..Default::default()
    };
    let out = run_with(&redis, &services, &scratch, &workload, &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(
        done_per_pilot(&scratch.read_report())
            .values()
            .sum::<usize>(),
        10
    );
    let copies = copies_in(&remote);
    assert_eq!(copies.len(), 1, "{copies:?}");
    let name = copies[0]
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    assert!(name.starts_with("pstar-"), "{name}");
    let copied_at = std::fs::metadata(&copies[0])
        .and_then(|m| m.modified())
        .expect("mtime");

    // A second run finds the same build there and does not send it again.
    let out = run_with(&redis, &services, &scratch, &workload, &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    let again = std::fs::metadata(&copies[0])
        .and_then(|m| m.modified())
        .expect("mtime");
    assert_eq!(copied_at, again, "the binary was copied a second time");
}

/// The static pstar that `scripts/test.sh` builds (scripts/build-static.sh) and names in
/// `PSTAR_STATIC_BIN`.
fn static_pstar() -> PathBuf {
    let path = std::env::var_os("PSTAR_STATIC_BIN")
        .map(PathBuf::from)
        .expect(
            "PSTAR_STATIC_BIN is not set: run the tests through `bash scripts/test.sh`, or set it \
         to the path `bash scripts/build-static.sh` prints",
        );
    assert!(
        path.is_file(),
        "PSTAR_STATIC_BIN {} is missing",
        path.display()
    );
    path
}

#[test]
fn a_static_pstar_named_with_agent_binary_is_copied_over_ssh_and_runs_the_agent() {
    let binary = static_pstar();
    let ldd = Command::new("ldd").arg(&binary).output().expect("ldd");
    assert!(
        String::from_utf8_lossy(&ldd.stdout).contains("statically linked"),
        "{} is not static: {ldd:?}",
        binary.display()
    );
    let ssh = SshServer::start();
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let (workload, remote) = ssh_workload(&scratch, &ssh, "cores = 2\n", 6);
    let services = Services {
        ssh: Some(&ssh),
        ..Default::default()
    };
    let out = run_with(
        &redis,
        &services,
        &scratch,
        &workload,
        &["--agent-binary", s(&binary)],
    );
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(
        done_per_pilot(&scratch.read_report())
            .values()
            .sum::<usize>(),
        6
    );
    let copies = copies_in(&remote);
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(
        std::fs::read(&copies[0]).expect("copy") == std::fs::read(&binary).expect("static"),
        "{} is not the static build",
        copies[0].display()
    );
    let report = scratch.read_report();
    let script = std::fs::read_to_string(pilot_dir(&scratch, &report, 0).join("pilot.sh"))
        .expect("pilot script");
    assert!(
        script.contains(s(&copies[0])),
        "the job starts the copy:\n{script}"
    );
}

#[test]
fn a_binary_that_does_not_run_on_the_host_fails_the_copy_step_and_is_not_kept() {
    let ssh = SshServer::start();
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    // Stands for a build linked against a newer C library than the host's: it refuses to
    // start with the loader's words (as ld.so prints them) and status 1.
    let foreign = executable(
        &scratch,
        "pstar-foreign",
        "#!/bin/sh\necho \"$0: /lib/x86_64-linux-gnu/libc.so.6: version \\`GLIBC_2.99' not \
         found (required by $0)\" >&2\nexit 1\n",
    );
    let (workload, remote) = ssh_workload(&scratch, &ssh, "", 1);
    let services = Services {
        ssh: Some(&ssh),
        ..Default::default()
    };
    let out = run_with(
        &redis,
        &services,
        &scratch,
        &workload,
        &["--agent-binary", s(&foreign)],
    );
    assert_eq!(out.code(), Some(1), "{out}");
    let report = scratch.read_report();
    let detail = pilots(&report)[0]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(detail.contains("bootstrap failed at `copy`"), "{detail}");
    assert!(detail.contains("does not run on"), "{detail}");
    assert!(detail.contains("GLIBC_2.99"), "the host's words: {detail}");
    assert!(detail.contains("build-static.sh"), "the way out: {detail}");
    let left = copies_in(&remote);
    assert!(
        left.is_empty(),
        "a copy that does not run is removed: {left:?}"
    );
}

#[test]
fn an_ssh_pilot_can_reach_the_store_through_a_tunnel() {
    let ssh = SshServer::start();
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let (workload, _) = ssh_workload(&scratch, &ssh, "cores = 1\ntunnel = true\n", 3);
    let services = Services {
        ssh: Some(&ssh),
        ..Default::default()
    };
    let out = run_with(&redis, &services, &scratch, &workload, &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    let report = scratch.read_report();
    done_per_pilot(&report);
    let script = std::fs::read_to_string(pilot_dir(&scratch, &report, 0).join("pilot.sh"))
        .expect("pilot script");
    let port = redis.port();
    assert!(
        script.contains("--coordination 'redis://127.0.0.1:"),
        "{script}"
    );
    assert!(
        !script.contains(&format!("127.0.0.1:{port}/")),
        "the agent was pointed at the store itself, not the tunnel:\n{script}"
    );
}

#[test]
fn one_run_draws_on_slurm_grid_engine_and_ssh_pilots_at_once() {
    let slurm = SlurmCluster::start(1, 2);
    let sge = SgeCell::start(2);
    let ssh = SshServer::start();
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let example =
        std::fs::read_to_string(examples_dir().join("resources/three-infrastructures.toml"))
            .expect("the example");
    let text = example
        .replace("127.0.0.1:2222", &format!("127.0.0.1:{}", ssh.port()))
        .replace(
            "\"remote-sandbox\"",
            &format!("\"{}\"", scratch.path().join("remote").display()),
        );
    let workload = scratch.write("w.toml", &text);
    let services = Services {
        slurm: Some(&slurm),
        sge: Some(&sge),
        ssh: Some(&ssh),
    };
    let out = run_with(&redis, &services, &scratch, &workload, &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    let report = scratch.read_report();
    let per = done_per_pilot(&report);
    assert_eq!(pilots(&report).len(), 3);
    assert_eq!(per.len(), 3, "units ran on every pilot: {per:?}");
}

#[test]
fn a_partition_slurm_refuses_fails_the_pilot_with_slurms_words() {
    let slurm = SlurmCluster::start(1, 2);
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let workload = scratch.write(
        "w.toml",
        &format!(
            "[[pilot]]\nresource = \"slurm://\"\nqueue = \"nosuch\"\n\n{}",
            where_units(2, 1)
        ),
    );
    let services = Services {
        slurm: Some(&slurm),
        ..Default::default()
    };
    let out = run_with(&redis, &services, &scratch, &workload, &[]);
    assert_eq!(out.code(), Some(1), "{out}");
    let report = scratch.read_report();
    let pilot = &pilots(&report)[0];
    assert_eq!(pilot["state"], "failed", "{pilot}");
    let detail = pilot["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("bootstrap failed at `submit`") && detail.contains("nosuch"),
        "{detail}"
    );
}

#[test]
fn an_agent_that_never_reaches_the_store_fails_its_pilot_naming_the_step() {
    let slurm = SlurmCluster::start(1, 2);
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    // An "agent" that starts and hangs without a word.
    let fake = executable(&scratch, "hang.sh", "#!/bin/sh\nsleep 600\n");
    let workload = scratch.write(
        "w.toml",
        &format!(
            "[[pilot]]\nresource = \"slurm://\"\n\n{}",
            where_units(1, 1)
        ),
    );
    let services = Services {
        slurm: Some(&slurm),
        ..Default::default()
    };
    let mut cmd = run_command(&redis, &services, &scratch, &workload);
    cmd.env("PSTAR_AGENT_BIN", &fake)
        .args(["--agent-start-timeout", "3s"]);
    let out = Running::start(cmd).wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(1), "{out}");
    let report = scratch.read_report();
    let pilot = &pilots(&report)[0];
    let detail = pilot["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("bootstrap failed at `agent start`"),
        "{detail}"
    );
    assert!(
        detail.contains("agent starting on"),
        "the job's output is quoted: {detail}"
    );
    // The hanging job was canceled: it is gone from the queue, or on its way out
    // (COMPLETING/CANCELLED linger while slurmd reaps the job on a loaded machine).
    let job = pilot["job"].as_str().expect("job id").to_owned();
    let squeue = || {
        let out = slurm
            .command("squeue")
            .args(["-h", "-j", &job, "-o", "%T %r"])
            .output()
            .expect("squeue");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let stopped = |state: &str| {
        state.is_empty() || state.starts_with("COMPLETING") || state.starts_with("CANCELLED")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut state = squeue();
    while !stopped(&state) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        state = squeue();
    }
    let show = slurm
        .command("scontrol")
        .args(["show", "job", &job])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        stopped(&state),
        "job {job} still `{state}` 60 s after its pilot failed\n{out}\n{show}"
    );
}

#[test]
fn an_unreachable_ssh_host_fails_its_pilot_at_connect() {
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let closed = pstar_testbed::free_port();
    let workload = scratch.write(
        "w.toml",
        &format!(
            "[[pilot]]\nresource = \"ssh://root@127.0.0.1:{closed}\"\n\n{}",
            where_units(1, 1)
        ),
    );
    let out = run_with(&redis, &Services::default(), &scratch, &workload, &[]);
    assert_eq!(out.code(), Some(1), "{out}");
    let report = scratch.read_report();
    let detail = pilots(&report)[0]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(detail.contains("bootstrap failed at `connect`"), "{detail}");
}

#[test]
fn a_slurm_job_whose_agent_dies_fails_its_pilot_and_its_units_run_elsewhere() {
    let slurm = SlurmCluster::start(1, 2);
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let workload = scratch.write(
        "w.toml",
        "[[pilot]]\nname = \"batch\"\nresource = \"slurm://\"\ncores = 2\n\n\
         [[pilot]]\nname = \"here\"\nresource = \"local://\"\ncores = 1\n\n\
         [[unit]]\nname = \"u{i}\"\nexecutable = \"/bin/sleep\"\narguments = [\"1\"]\ncount = 12\n",
    );
    let services = Services {
        slurm: Some(&slurm),
        ..Default::default()
    };
    let running = Running::start(run_command(&redis, &services, &scratch, &workload));
    // Once the pilot job runs, kill its agent: it reports nothing more, the job script
    // ends with the agent's status, and only Slurm can tell that the pilot is gone.
    let mut job = String::new();
    wait_until(Duration::from_secs(60), "the pilot job to run", || {
        let out = slurm
            .command("squeue")
            .args(["-h", "-t", "R", "-o", "%i"])
            .output()
            .expect("squeue");
        job = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        !job.is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    let url = redis.url();
    let agents: Vec<u32> = processes_with_arg(&url)
        .into_iter()
        .filter(|p| processes_with_arg("agent").contains(p))
        .filter(|p| processes_with_arg("pilot.0000").contains(p))
        .collect();
    assert_eq!(agents.len(), 1, "one agent process: {agents:?}");
    let killed = Command::new("kill")
        .args(["-KILL", &agents[0].to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let out = running.wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(0), "every unit still done: {out}");
    let report = scratch.read_report();
    done_per_pilot(&report);
    let batch = pilots(&report)
        .iter()
        .find(|p| p["name"] == "batch")
        .expect("the batch pilot");
    assert_eq!(batch["state"], "failed", "{batch}");
    let detail = batch["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("Slurm job {job} ended")),
        "{detail}"
    );
}

#[test]
fn a_resumed_manager_follows_the_batch_job_of_a_pilot_it_took_over() {
    let slurm = SlurmCluster::start(1, 2);
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let workload = scratch.write(
        "w.toml",
        "[[pilot]]\nname = \"batch\"\nresource = \"slurm://\"\ncores = 2\n\n\
         [[pilot]]\nname = \"here\"\nresource = \"local://\"\ncores = 2\n\n\
         [[unit]]\nname = \"u{i}\"\nexecutable = \"/bin/sleep\"\narguments = [\"1\"]\ncount = 40\n",
    );
    let services = Services {
        slurm: Some(&slurm),
        ..Default::default()
    };
    let mut first = Running::start(run_command(&redis, &services, &scratch, &workload));
    let session = session_of(&scratch);
    let mut job = String::new();
    wait_until(Duration::from_secs(60), "the pilot job to run", || {
        let out = slurm
            .command("squeue")
            .args(["-h", "-t", "R", "-o", "%i"])
            .output()
            .expect("squeue");
        job = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        !job.is_empty()
    });
    // The manager dies; the agents go on.
    let _ = first.child.kill();
    let _ = first.child.wait();

    // A new manager takes the session over, with a heartbeat timeout too long to matter:
    // only the batch job can tell it that the pilot is gone.
    let mut resume = pstar();
    resume
        .current_dir(scratch.path())
        .env("PSTAR_REDIS_PASSWORD", redis.password())
        .envs(services.env())
        .args(["run", "--resume", &session, "--coordination", &redis.url()])
        .args([
            "--sandbox",
            s(&scratch.sandbox()),
            "--report",
            s(&scratch.report()),
        ])
        .args([
            "-q",
            "--poll-interval",
            "500ms",
            "--heartbeat-timeout",
            "10m",
        ]);
    let resumed = Running::start(resume);
    // Printed once the new manager has taken the pilots over (and started following
    // their jobs).
    resumed.wait_for_stderr(Duration::from_secs(60), "pstar: resumed session");
    let agents: Vec<u32> = processes_with_arg(&redis.url())
        .into_iter()
        .filter(|p| processes_with_arg("agent").contains(p))
        .filter(|p| processes_with_arg("pilot.0000").contains(p))
        .collect();
    assert_eq!(agents.len(), 1, "one agent process: {agents:?}");
    let killed = Command::new("kill")
        .args(["-KILL", &agents[0].to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());

    let out = resumed.wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(0), "every unit still done: {out}");
    let report = scratch.read_report();
    let batch = pilots(&report)
        .iter()
        .find(|p| p["name"] == "batch")
        .expect("the batch pilot");
    assert_eq!(batch["state"], "failed", "{batch}");
    let detail = batch["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("Slurm job {job} ended")),
        "{detail}"
    );
    assert_eq!(done_per_pilot(&report).values().sum::<usize>(), 40);
}

#[test]
fn pilot_script_shows_the_job_without_submitting() {
    let scratch = Scratch::new();
    let workload = scratch.write(
        "w.toml",
        "[[pilot]]\nresource = \"slurm://\"\ncores = 8\nnodes = 2\nwalltime = \"1h 30m\"\n\
         queue = \"debug\"\nproject = \"abc\"\nscheduler_options = [\"--constraint=haswell\"]\n\n\
         [[pilot]]\nresource = \"sge://?pe=mpi\"\ncores = 4\n\n\
         [[unit]]\nexecutable = \"/bin/true\"\n",
    );
    let out = run_in(scratch.path(), &["pilot", "script", s(&workload)]);
    assert_eq!(out.code(), Some(0), "{out}");
    for line in [
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --time=01:30:00",
        "#SBATCH --partition=debug",
        "#SBATCH --account=abc",
        "#SBATCH --constraint=haswell",
        "#$ -pe mpi 4",
        "#$ -l h_rt=01:00:00",
        " agent --coordination 'redis://STORE-HOST:6379' --session SESSION --pilot pilot.0000",
    ] {
        assert!(
            out.stdout.contains(line),
            "missing `{line}` in\n{}",
            out.stdout
        );
    }
}

#[test]
fn a_local_pilot_declaring_more_cores_than_the_machine_runs_with_a_warning() {
    let scratch = Scratch::new();
    let workload = scratch.write(
        "workload.toml",
        "[[pilot]]\nresource = \"local://\"\ncores = 100000\n\n\
         [[unit]]\nexecutable = \"/bin/true\"\ncount = 4\n",
    );
    let out = run_in(
        scratch.path(),
        &["run", s(&workload), "--sandbox", s(&scratch.sandbox())],
    );
    assert_eq!(out.code(), Some(0), "{out}");
    let machine = std::thread::available_parallelism().map_or(0, |n| n.get());
    let warning = format!("declares 100000 cores; this machine has {machine}");
    assert_eq!(out.stderr.matches(&warning).count(), 1, "{out}");
}

/// A workload whose units each start a `setsid` daemon (its pid in `daemons.log`) and run
/// on; and the daemons' pids once `n` of them are up.
fn daemon_workload(scratch: &Scratch, n: usize) -> (PathBuf, PathBuf) {
    let pids = scratch.path().join("daemons.log");
    let workload = scratch.write(
        "daemons.toml",
        &format!(
            "[[pilot]]\nresource = \"local://\"\ncores = {n}\nwalltime = \"10m\"\n\n\
             [[unit]]\nexecutable = \"/bin/sh\"\n\
             arguments = [\"-c\", \"setsid sleep 1000 & echo $! >> {}; exec sleep 1000\"]\n\
             count = {n}\n",
            pids.display()
        ),
    );
    (workload, pids)
}

fn pids_in(file: &Path, n: usize) -> Vec<i32> {
    wait_until(Duration::from_secs(60), "the daemons to start", || {
        std::fs::read_to_string(file).is_ok_and(|p| p.lines().count() >= n)
    });
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn dead(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z'))
    })
}

#[test]
fn ctrl_c_of_pstar_run_leaves_no_daemon_of_a_unit() {
    ctrl_c_leaves_no_daemon(None);
}

#[test]
fn ctrl_c_of_pstar_run_over_redis_leaves_no_daemon_of_a_unit() {
    let server = RedisServer::start();
    ctrl_c_leaves_no_daemon(Some(&server));
}

/// Interrupts a run whose units started daemons, on the embedded store or over `redis`.
fn ctrl_c_leaves_no_daemon(redis: Option<&RedisServer>) {
    let scratch = Scratch::new();
    let (workload, pids) = daemon_workload(&scratch, 2);
    let mut cmd = pstar();
    cmd.current_dir(scratch.path()).args([
        "run",
        s(&workload),
        "--sandbox",
        s(&scratch.sandbox()),
        "-q",
    ]);
    if let Some(server) = redis {
        cmd.env("PSTAR_REDIS_PASSWORD", server.password())
            .env("PSTAR_AGENT_BIN", env!("CARGO_BIN_EXE_pstar"))
            .args(["--coordination", &server.url()]);
    }
    let run = Running::start(cmd);
    let daemons = pids_in(&pids, 2);
    let sent = Command::new("kill")
        .args(["-INT", &run.pid().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let out = run.wait(RUN_DEADLINE);
    assert_eq!(out.code(), Some(130), "{out}");
    wait_until(Duration::from_secs(30), "the daemons to die", || {
        daemons.iter().all(|p| dead(*p))
    });
}

#[test]
fn a_killed_agent_process_leaves_no_daemon_of_its_units() {
    let server = RedisServer::start();
    let scratch = Scratch::new();
    let (workload, pids) = daemon_workload(&scratch, 2);
    let mut cmd = pstar();
    cmd.current_dir(scratch.path())
        .env("PSTAR_REDIS_PASSWORD", server.password())
        .env("PSTAR_AGENT_BIN", env!("CARGO_BIN_EXE_pstar"))
        .args(["run", s(&workload), "--coordination", &server.url()])
        .args(["--sandbox", s(&scratch.sandbox()), "-q"]);
    let run = Running::start(cmd);
    let daemons = pids_in(&pids, 2);
    // The agent: the run's child that runs `pstar agent`.
    let agent = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit(") ")
                .next()
                .and_then(|r| r.split_whitespace().nth(1));
            ppid == Some(&run.pid().to_string())
                && cmdline.split(|b| *b == 0).any(|a| a == b"agent")
        })
        .expect("the agent process");
    let killed = Command::new("kill")
        .args(["-KILL", &agent.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    wait_until(Duration::from_secs(30), "the daemons to die", || {
        daemons.iter().all(|p| dead(*p))
    });
    drop(run);
}
