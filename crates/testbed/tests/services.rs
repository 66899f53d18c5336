//! The batch systems and the sshd of pstar-testbed, started for real: each runs a job (or a
//! command) to the end. Start and stop times go to stderr (`--nocapture` shows them).

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pstar_testbed::{S3Server, SgeCell, SlurmCluster, SshServer};

/// Runs `command`, panics unless it succeeds; its stdout.
fn run(command: &mut Command) -> String {
    let out = output(command);
    assert!(
        out.status.success(),
        "{command:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn output(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// `what` took how long: to stderr.
fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let value = f();
    eprintln!("timing: {what}: {:.3} s", t.elapsed().as_secs_f64());
    value
}

/// Waits (up to 60 s) until `done` says so, polling every 100 ms.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: still not done after 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Submits `sbatch --parsable ARGS`; the job id.
fn sbatch(cluster: &SlurmCluster, args: &[&str]) -> String {
    let out = run(cluster.command("sbatch").arg("--parsable").args(args));
    out.trim().split(';').next().unwrap().to_string()
}

/// Waits until the job has ended; its `JobState` (from `scontrol show job`).
fn wait_slurm_job(cluster: &SlurmCluster, id: &str) -> String {
    let mut state = String::new();
    wait_until(&format!("Slurm job {id}"), || {
        let out = run(cluster.command("scontrol").args(["show", "job", id]));
        state = out
            .split_whitespace()
            .find_map(|w| w.strip_prefix("JobState="))
            .unwrap_or("")
            .to_string();
        !matches!(
            state.as_str(),
            "PENDING" | "CONFIGURING" | "RUNNING" | "COMPLETING" | "SUSPENDED" | ""
        )
    });
    state
}

#[test]
fn slurm_cluster_runs_a_job_on_two_nodes() {
    let cluster = timed("SlurmCluster::start(2, 4)", || SlurmCluster::start(2, 4));
    assert_eq!(cluster.nodes(), 2);
    assert_eq!(cluster.cpus_per_node(), 4);
    assert!(cluster.conf().is_file());

    let nodes = run(cluster
        .command("sinfo")
        .args(["-h", "-N", "-o", "%N %t %c"]));
    assert_eq!(
        nodes.lines().collect::<Vec<_>>(),
        ["n1 idle 4", "n2 idle 4"]
    );

    let id = timed("slurm: 2-node job submitted -> ended (first job)", || {
        let id = sbatch(
            &cluster,
            &[
                "-N",
                "2",
                // stderr apart: under load the second step may wait a moment for the
                // first one's cleanup ("srun: Job 1 step creation temporarily disabled").
                "-e",
                "slurm-%j.err",
                "--wrap",
                "srun hostname; srun printenv SLURMD_NODENAME",
            ],
        );
        assert_eq!(wait_slurm_job(&cluster, &id), "COMPLETED");
        id
    });
    let out = std::fs::read_to_string(cluster.dir().join(format!("slurm-{id}.out")))
        .expect("the job's output file");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    let host = run(Command::new("hostname").arg("-s"));
    let host = host.trim();
    // `srun hostname` runs once per node; the fake nodes all are this host.
    assert_eq!(lines, ["n1", "n2", host, host], "job output:\n{out}");
    let job = run(cluster.command("scontrol").args(["show", "job", &id]));
    assert!(job.contains(" NodeList=n[1-2]"), "{job}");

    // No accounting database, but the job completion file: `sacct -c`.
    let sacct = run(cluster.command("sacct").args([
        "-c",
        "-p",
        "-n",
        "-j",
        &id,
        "-o",
        "jobid,state,nnodes",
    ]));
    assert_eq!(sacct.trim(), format!("{id}|COMPLETED|2|"));

    timed("SlurmCluster drop", || drop(cluster));
}

#[test]
fn two_slurm_clusters_side_by_side() {
    let (a, b) = timed("2 x SlurmCluster::start(1, 2), in parallel", || {
        std::thread::scope(|s| {
            let a = s.spawn(|| SlurmCluster::start(1, 2));
            let b = s.spawn(|| SlurmCluster::start(1, 2));
            (a.join().unwrap(), b.join().unwrap())
        })
    });
    assert_ne!(a.ctld_port(), b.ctld_port());
    let ids = timed("slurm: one job in each cluster, submitted -> ended", || {
        let id_a = sbatch(&a, &["--wrap", "echo cluster a: $SLURM_JOB_ID"]);
        let id_b = sbatch(&b, &["--wrap", "echo cluster b: $SLURM_JOB_ID"]);
        assert_eq!(wait_slurm_job(&a, &id_a), "COMPLETED");
        assert_eq!(wait_slurm_job(&b, &id_b), "COMPLETED");
        [id_a, id_b]
    });
    for (cluster, name, id) in [(&a, "a", &ids[0]), (&b, "b", &ids[1])] {
        let out = std::fs::read_to_string(cluster.dir().join(format!("slurm-{id}.out")))
            .expect("the job's output file");
        assert_eq!(out.trim(), format!("cluster {name}: {id}"));
    }
    // Each cluster knows only its own job.
    let only = |cluster: &SlurmCluster| {
        run(cluster
            .command("squeue")
            .args(["-h", "-t", "all", "-o", "%i %j"]))
    };
    assert_eq!(only(&a).lines().count(), 1, "{}", only(&a));
    assert_eq!(only(&b).lines().count(), 1, "{}", only(&b));
    timed("2 x SlurmCluster drop", || drop((a, b)));
}

#[test]
fn slurm_drop_cancels_running_jobs() {
    let cluster = SlurmCluster::start(1, 1);
    let id = sbatch(&cluster, &["--wrap", "sleep 300"]);
    wait_until("the sleep job running", || {
        run(cluster
            .command("squeue")
            .args(["-h", "-j", &id, "-o", "%T"]))
        .trim()
            == "RUNNING"
    });
    let marker = format!("SLURM_CONF={}", cluster.conf().display());
    timed("SlurmCluster drop with a running job", || drop(cluster));
    assert!(
        processes_with_env(&marker).is_empty(),
        "processes of the cluster left after drop"
    );
}

/// Submits `qsub -terse ARGS` in `cell`; the job id.
fn qsub(cell: &SgeCell, args: &[&str]) -> String {
    run(cell.command("qsub").arg("-terse").args(args))
        .trim()
        .to_string()
}

/// Waits until the job is gone from `qstat`, then until `qacct` knows it; its exit status.
fn wait_sge_job(cell: &SgeCell, id: &str) -> String {
    wait_until(&format!("Grid Engine job {id}"), || {
        !output(cell.command("qstat").args(["-j", id]))
            .status
            .success()
    });
    let mut exit_status = String::new();
    wait_until(&format!("qacct -j {id}"), || {
        let out = output(cell.command("qacct").args(["-j", id]));
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(line) = text.lines().find(|l| l.starts_with("exit_status")) {
            exit_status = line.split_whitespace().nth(1).unwrap_or("").to_string();
            true
        } else {
            false
        }
    });
    exit_status
}

#[test]
fn sge_cell_runs_a_job_and_a_parallel_job() {
    let cell = timed("SgeCell::start(4)", || SgeCell::start(4));
    let env = cell.env();
    for name in ["SGE_ROOT", "SGE_CELL", "SGE_QMASTER_PORT", "SGE_EXECD_PORT"] {
        assert!(
            env.iter().any(|(k, _)| k == name),
            "{name} missing in {env:?}"
        );
    }
    timed(
        "sge: a job and a -pe smp 2 job, submitted -> ended (qacct)",
        || {
            // -cwd: output files in the cell's directory, not in $HOME.
            let plain = qsub(&cell, &["-cwd", "-N", "t", "-b", "y", "/bin/true"]);
            let parallel = qsub(
                &cell,
                &[
                    "-cwd",
                    "-N",
                    "p",
                    "-pe",
                    "smp",
                    "2",
                    "-b",
                    "y",
                    "echo NSLOTS=$NSLOTS",
                ],
            );
            assert_eq!(wait_sge_job(&cell, &plain), "0");
            assert_eq!(wait_sge_job(&cell, &parallel), "0");
            let out = std::fs::read_to_string(cell.dir().join(format!("p.o{parallel}")))
                .expect("the parallel job's output file");
            assert_eq!(out.trim(), "NSLOTS=2");
        },
    );
    timed("SgeCell drop", || drop(cell));
}

#[test]
fn two_sge_cells_side_by_side() {
    let (a, b) = timed("2 x SgeCell::start(2), in parallel", || {
        std::thread::scope(|s| {
            let a = s.spawn(|| SgeCell::start(2));
            let b = s.spawn(|| SgeCell::start(2));
            (a.join().unwrap(), b.join().unwrap())
        })
    });
    assert_ne!(a.qmaster_port(), b.qmaster_port());
    timed("sge: one job in each cell, submitted -> gone", || {
        let id_a = qsub(&a, &["-cwd", "-N", "a", "-b", "y", "echo", "cell", "a"]);
        let id_b = qsub(&b, &["-cwd", "-N", "b", "-b", "y", "echo", "cell", "b"]);
        assert_eq!(wait_sge_job(&a, &id_a), "0");
        assert_eq!(wait_sge_job(&b, &id_b), "0");
        let read = |cell: &SgeCell, name: &str, id: &str| {
            std::fs::read_to_string(cell.dir().join(format!("{name}.o{id}")))
                .expect("the job's output file")
        };
        assert_eq!(read(&a, "a", &id_a).trim(), "cell a");
        assert_eq!(read(&b, "b", &id_b).trim(), "cell b");
    });
    timed("2 x SgeCell drop", || drop((a, b)));
}

#[test]
fn sge_drop_deletes_running_jobs() {
    let cell = SgeCell::start(1);
    let id = qsub(&cell, &["-cwd", "-N", "s", "-b", "y", "sleep", "300"]);
    wait_until("the sleep job running", || {
        let out = run(cell.command("qstat").args(["-s", "r"]));
        out.lines()
            .any(|l| l.split_whitespace().next() == Some(id.as_str()))
    });
    let marker = format!("SGE_ROOT={}", cell.dir().join("root").display());
    timed("SgeCell drop with a running job", || drop(cell));
    assert!(
        processes_with_env(&marker).is_empty(),
        "processes of the cell left after drop"
    );
}

#[test]
fn sshd_lets_the_client_key_in() {
    let server = timed("SshServer::start", SshServer::start);
    assert_eq!(server.destination(), "root@127.0.0.1");
    assert!(server.client_key().is_file());
    assert!(server.known_hosts().is_file());
    let out = timed("ssh -F config -p PORT root@127.0.0.1 echo ok", || {
        run(Command::new("ssh")
            .arg("-F")
            .arg(server.config_file())
            .arg("-p")
            .arg(server.port().to_string())
            .arg(server.destination())
            .args(["echo", "ok"]))
    });
    assert_eq!(out, "ok\n");
    assert_eq!(run(server.ssh().arg("echo $((6 * 7))")), "42\n");

    // sftp through the same configuration.
    let local = server.dir().join("local.txt");
    let back = server.dir().join("back.txt");
    let remote = server.dir().join("remote.txt");
    std::fs::write(&local, "over sftp\n").unwrap();
    let batch = format!(
        "put {} {}\nget {} {}\n",
        local.display(),
        remote.display(),
        remote.display(),
        back.display()
    );
    let mut sftp = Command::new("sftp")
        .arg("-F")
        .arg(server.config_file())
        .arg("-P")
        .arg(server.port().to_string())
        .args(["-b", "-"])
        .arg(server.destination())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sftp");
    use std::io::Write;
    sftp.stdin
        .take()
        .unwrap()
        .write_all(batch.as_bytes())
        .unwrap();
    let out = sftp.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sftp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "over sftp\n");

    // Any other key is refused.
    let other = server.dir().join("other_key");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other));
    // (A configuration of its own: `-i` would only add a key to the one -F names.)
    let config = server.dir().join("other_config");
    std::fs::write(
        &config,
        format!(
            "Host *\n    IdentityFile {}\n    UserKnownHostsFile {}\n    BatchMode yes\n    IdentitiesOnly yes\n",
            other.display(),
            server.known_hosts().display()
        ),
    )
    .unwrap();
    let refused = output(
        Command::new("ssh")
            .arg("-F")
            .arg(&config)
            .arg("-p")
            .arg(server.port().to_string())
            .arg(server.destination())
            .arg("true"),
    );
    assert_eq!(
        refused.status.code(),
        Some(255),
        "another key must be refused"
    );

    // A remote command still running when the server goes away ends with it.
    let mut remote = server
        .ssh()
        .arg("sleep 300")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("ssh");
    let marker = format!("PSTAR_TESTBED_SSHD={}", server.dir().display());
    wait_until("the remote sleep running", || {
        !processes_with_env(&marker).is_empty()
    });

    let port = server.port();
    timed("SshServer drop (one session open)", || drop(server));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "sshd still listens after drop"
    );
    assert!(
        processes_with_env(&marker).is_empty(),
        "processes started through sshd left after drop"
    );
    assert_eq!(
        remote.wait().unwrap().code(),
        Some(255),
        "ssh must lose its connection"
    );
}

/// The PIDs of processes whose environment holds `entry` (`NAME=VALUE`).
fn processes_with_env(entry: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for proc_entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = proc_entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(proc_entry.path().join("environ")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(proc_entry.path().join("stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true);
        if !zombie && environ.split(|&b| b == 0).any(|e| e == entry.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// `curl` signed as S3 (SigV4) with `user` (`KEY:SECRET`); its HTTP status.
fn s3_curl(server: &S3Server, user: &str, args: &[&str]) -> String {
    run(Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["--aws-sigv4", "aws:amz:us-east-1:s3", "--user", user])
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
        .args(args)
        .arg(format!("{}/bucket/dir/object", server.endpoint())))
}

#[test]
fn s3_server_keeps_objects_as_files_and_checks_signatures() {
    let mut server = timed("s3s-fs start", S3Server::start);
    server.create_bucket("bucket");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("object");
    std::fs::write(&file, "hello s3").expect("write");
    let user = format!("{}:{}", server.access_key(), server.secret_key());
    let file_arg = file.display().to_string();
    assert_eq!(s3_curl(&server, &user, &["-T", &file_arg]), "200");
    let on_disk = server.data_dir().join("bucket/dir/object");
    assert_eq!(
        std::fs::read_to_string(&on_disk).expect("object file"),
        "hello s3"
    );
    // A wrong secret is refused.
    let wrong = format!("{}:not-the-secret", server.access_key());
    assert_eq!(s3_curl(&server, &wrong, &["-T", &file_arg]), "403");
    // Killed, nothing answers; restarted, the object is still there.
    server.kill();
    let refused = output(
        Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .arg(server.endpoint()),
    );
    assert!(!refused.status.success(), "a killed server answered");
    server.restart();
    assert_eq!(s3_curl(&server, &user, &[]), "200");
}
