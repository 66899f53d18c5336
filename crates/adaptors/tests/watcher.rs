//! The watcher of a batch system: pilots' jobs on one host and one batch system are
//! followed together, with one status query per interval for all of them, against a real
//! Slurm (crates/testbed).
//!
//! Every Slurm client command the adaptor runs goes through a wrapper first on the `PATH`
//! that writes its command line to a log, then runs the real command: the log is what the
//! scheduler was asked.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pstar_adaptors::{AdaptorConfig, BootstrapTimeouts, PilotJob, ResourceAdaptor};
use pstar_coordination::redis::{RedisOptions, RedisStore};
use pstar_coordination::{Coordination, PilotRecord};
use pstar_model::{PilotComputeDescription, PilotId, Scheme};
use pstar_testbed::{RedisServer, SlurmCluster};

/// A script at `dir/name` with `text`, executable.
fn executable(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Wrappers of Slurm's client commands that log each command line to `log`.
fn logging_wrappers(dir: &Path, log: &Path) {
    for program in ["sbatch", "squeue", "scontrol", "sacct", "scancel"] {
        let real = format!("/usr/bin/{program}");
        assert!(Path::new(&real).exists(), "{real} is not installed");
        executable(
            dir,
            program,
            &format!(
                "#!/bin/sh\necho \"{program} $*\" >> '{}'\nexec {real} \"$@\"\n",
                log.display()
            ),
        );
    }
}

/// The status queries in the log (what asks about jobs already submitted).
fn status_queries(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("squeue") || l.starts_with("scontrol show job"))
        .map(str::to_owned)
        .collect()
}

/// Whether `query` names every job of `jobs` (as a whole word of its arguments).
fn names_all(query: &str, jobs: &[String]) -> bool {
    let words: Vec<&str> = query
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
        .collect();
    jobs.iter().all(|j| words.contains(&j.as_str()))
}

#[test]
fn one_status_query_per_interval_serves_every_pilot_job_on_a_slurm() {
    let slurm = SlurmCluster::start(1, 4);
    let redis = RedisServer::start();
    let scratch = tempfile::tempdir().expect("scratch directory");
    let bin = scratch.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin directory");
    let log = scratch.path().join("slurm-commands.log");
    logging_wrappers(&bin, &log);
    // The "agent": a job that keeps running (it never reaches the store, which the long
    // agent-start timeout below lets pass).
    let agent = executable(&bin, "fake-agent", "#!/bin/sh\nexec sleep 600\n");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // SAFETY: no other thread runs yet (the runtime is built below).
    unsafe {
        for (k, v) in slurm.env() {
            std::env::set_var(k, v);
        }
        std::env::set_var("PATH", path);
    }

    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let store = RedisStore::connect(
            &redis.url(),
            "watcher-test",
            RedisOptions {
                password: Some(redis.password().to_owned()),
                ..Default::default()
            },
        )
        .await
        .expect("connect to redis");
        let coordination: Arc<dyn Coordination> = store;
        let config = AdaptorConfig {
            timeouts: BootstrapTimeouts {
                agent_start: Duration::from_secs(3600),
                ..Default::default()
            },
            poll_interval: Duration::from_millis(300),
            agent_binary: Some(agent.clone()),
        };
        let adaptor = pstar_adaptors::available(config)
            .into_iter()
            .find(|a| a.scheme() == Scheme::Slurm)
            .expect("a slurm:// adaptor");

        let mut jobs = Vec::new();
        for i in 0..3 {
            let id = PilotId::new(i);
            let record = PilotRecord {
                id,
                description: PilotComputeDescription {
                    resource: "slurm://".parse().expect("a resource URL"),
                    cores: 1,
                    walltime: Duration::from_secs(600),
                    ..Default::default()
                },
                sandbox: scratch
                    .path()
                    .join("sandbox/watcher-test")
                    .join(id.to_string()),
                job: None,
                agent: Default::default(),
                restart_of: None,
            };
            let job = adaptor
                .submit(PilotJob {
                    record,
                    coordination: coordination.clone(),
                })
                .await
                .expect("Slurm takes the pilot job");
            jobs.push(job.0);
        }

        // Once the last job is submitted, one query names all three...
        let deadline = Instant::now() + Duration::from_secs(60);
        let first = loop {
            let queries = status_queries(&log);
            if let Some(i) = queries.iter().position(|q| names_all(q, &jobs)) {
                break i;
            }
            assert!(
                Instant::now() < deadline,
                "no status query named all of the jobs {jobs:?} within 60 s; the queries \
                 were:\n{}",
                queries.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // ...and every query after it does: one per interval, none per job.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let queries = status_queries(&log);
            let after = &queries[first..];
            for q in after {
                assert!(
                    names_all(q, &jobs),
                    "a status query for part of the jobs {jobs:?}: `{q}`; the queries \
                     were:\n{}",
                    after.join("\n")
                );
            }
            if after.len() >= 5 {
                break;
            }
            assert!(Instant::now() < deadline, "the watcher stopped asking");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        for (i, job) in jobs.iter().enumerate() {
            let record = PilotRecord {
                id: PilotId::new(i as u64),
                description: PilotComputeDescription {
                    resource: "slurm://".parse().expect("a resource URL"),
                    ..Default::default()
                },
                sandbox: scratch.path().to_owned(),
                job: Some(job.clone()),
                agent: Default::default(),
                restart_of: None,
            };
            adaptor.cancel(&record).await.expect("scancel");
        }
    });
}

/// The next failure of a pilot published in `events`, within 30 s.
async fn next_failure(events: &mut pstar_coordination::Subscription) -> (PilotId, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let batch = tokio::time::timeout_at(deadline, events.next_batch())
            .await
            .expect("a pilot failure within 30 s")
            .expect("the store is open")
            .expect("the store is reachable");
        for event in batch.iter() {
            if let pstar_coordination::Event::Pilot(p) = event
                && p.state == pstar_model::PilotState::Failed
            {
                return (p.pilot, p.detail.clone().unwrap_or_default());
            }
        }
    }
}

#[test]
fn the_fork_dialect_over_the_local_transport_follows_each_of_its_processes() {
    // A transport and a dialect are independent: the `ssh://` dialect (a process started
    // with `setsid`, its state asked with `kill -0` and `pilot.exit`) over this host's
    // transport, no sshd. One watcher asks about every process at once; each answer goes
    // to its own pilot.
    let redis = RedisServer::start();
    let scratch = tempfile::tempdir().expect("scratch directory");
    // The "agent" of pilot.0002 exits with status 3 at once; the others keep running.
    let agent = executable(
        scratch.path(),
        "fake-agent",
        "#!/bin/sh\ncase \"$*\" in\n*pilot.0002*) echo 'agent: cannot start' >&2; exit 3;;\n\
         *) exec sleep 600;;\nesac\n",
    );
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let store = RedisStore::connect(
            &redis.url(),
            "fork-test",
            RedisOptions {
                password: Some(redis.password().to_owned()),
                ..Default::default()
            },
        )
        .await
        .expect("connect to redis");
        let coordination: Arc<dyn Coordination> = store;
        let mut events = coordination.subscribe().await.expect("subscribe");
        let config = AdaptorConfig {
            timeouts: BootstrapTimeouts {
                agent_start: Duration::from_secs(3600),
                ..Default::default()
            },
            poll_interval: Duration::from_millis(200),
            agent_binary: Some(agent.clone()),
        };
        let adaptor = pstar_adaptors::batch::BatchAdaptor::new(
            Scheme::Ssh,
            Arc::new(pstar_adaptors::dialect::fork::Fork),
            None,
            config,
        );
        let mut records = Vec::new();
        for i in 0..3 {
            let id = PilotId::new(i);
            let mut record = PilotRecord {
                id,
                description: PilotComputeDescription {
                    resource: "ssh://nobody@nowhere".parse().expect("a resource URL"),
                    ..Default::default()
                },
                sandbox: scratch
                    .path()
                    .join("sandbox/fork-test")
                    .join(id.to_string()),
                job: None,
                agent: Default::default(),
                restart_of: None,
            };
            let job = adaptor
                .submit(PilotJob {
                    record: record.clone(),
                    coordination: coordination.clone(),
                })
                .await
                .expect("the pilot process starts");
            record.job = Some(job.0);
            records.push(record);
        }
        let pid = |i: usize| records[i].job.clone().unwrap_or_default();

        // The process that exited badly fails its pilot, with its status and its words.
        let (pilot, detail) = next_failure(&mut events).await;
        assert_eq!(pilot, PilotId::new(2), "{detail}");
        assert!(
            detail.contains(&format!("process {} exited with status 3", pid(2))),
            "{detail}"
        );
        assert!(detail.contains("agent: cannot start"), "{detail}");
        // The others run on.
        for record in &records[..2] {
            assert_eq!(
                adaptor.state(record).await.expect("state"),
                pstar_adaptors::JobState::Running
            );
        }
        // Canceled without their agent reporting, each ends its own pilot.
        adaptor.cancel(&records[0]).await.expect("cancel");
        let (pilot, detail) = next_failure(&mut events).await;
        assert_eq!(pilot, PilotId::new(0), "{detail}");
        assert!(detail.contains(&format!("process {}", pid(0))), "{detail}");
        adaptor.cancel(&records[1]).await.expect("cancel");
        let (pilot, detail) = next_failure(&mut events).await;
        assert_eq!(pilot, PilotId::new(1), "{detail}");
        assert!(detail.contains(&format!("process {}", pid(1))), "{detail}");
    });
}
