//! Pilots on real resources (a loopback Slurm, Grid Engine cell and sshd, started here by
//! pstar-testbed, with a Redis store):
//!
//! (a) time from `create_pilot` to its first unit running, per adaptor, against the
//!     resource's own start latency measured in the same run (a trivial job's submit to
//!     start; an `ssh host true`; for local://, nothing);
//! (b) UNITS (default 1,000) null units over one Slurm pilot against the same units each
//!     submitted as its own Slurm job (`sbatch --wrap /bin/true`), the no-pilot baseline.
//!
//! Usage: `resources` (run by scripts/bench-resources.sh, which builds `pstar` beside it).
//! Env: ROUNDS (default 3) for (a), UNITS (default 1000) and CORES (default 4) for (b).
//! Prints figures; never fails on speed.

use std::path::Path;
use std::time::{Duration, Instant};

use pstar::{
    ComputeUnitDescription, ComputeUnitService, PilotComputeDescription, PilotComputeService,
    PilotState, Session, UnitState,
};
use pstar_coordination::{RedisOptions, RedisStore};
use pstar_testbed::{RedisServer, SgeCell, SlurmCluster, SshServer};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Waits for `file` to hold a timestamp (written by a trivial job when it starts).
fn wait_stamp(file: &Path, limit: Duration) -> Option<f64> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(t) = std::fs::read_to_string(file)
            && let Ok(t) = t.trim().parse::<f64>()
        {
            return Some(t);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The scheduler's own start latency: submit a job that writes the time it starts.
fn scheduler_latency(
    scheme: &str,
    slurm: &SlurmCluster,
    sge: &SgeCell,
    ssh: &SshServer,
    dir: &Path,
) -> Option<f64> {
    let stamp = dir.join(format!("stamp-{scheme}-{}", epoch_now()));
    let script = format!("date +%s.%N > {}", stamp.display());
    let start = epoch_now();
    match scheme {
        "local" => return Some(0.0),
        "ssh" => {
            let t = Instant::now();
            let ok = ssh.ssh().arg("true").status().ok()?.success();
            return ok.then(|| t.elapsed().as_secs_f64());
        }
        "slurm" => {
            let ok = slurm
                .command("sbatch")
                .args(["--parsable", "-o", "/dev/null", "--wrap", &script])
                .output()
                .ok()?
                .status
                .success();
            if !ok {
                return None;
            }
        }
        _ => {
            let file = dir.join(format!("stamp-{}.sh", epoch_now()));
            std::fs::write(&file, format!("#!/bin/sh\n{script}\n")).ok()?;
            let ok = sge
                .command("qsub")
                .args([
                    "-terse",
                    "-N",
                    "stamp",
                    "-o",
                    "/dev/null",
                    "-e",
                    "/dev/null",
                ])
                .arg(&file)
                .output()
                .ok()?
                .status
                .success();
            if !ok {
                return None;
            }
        }
    }
    wait_stamp(&stamp, Duration::from_secs(60)).map(|t| t - start)
}

async fn session(redis: &RedisServer, dir: &Path) -> pstar::Result<Session> {
    let id = pstar::new_session_id();
    let store = RedisStore::connect(
        &redis.url(),
        &id,
        RedisOptions {
            password: Some(redis.password().to_owned()),
            ..Default::default()
        },
    )
    .await?;
    Session::builder()
        .id(&id)
        .coordination(store)
        .sandbox_root(dir.join("sandbox"))
        .poll_interval(Duration::from_millis(500))
        .build()
        .await
}

/// Seconds from `create_pilot` to the first unit running on it.
async fn pilot_start(redis: &RedisServer, resource: &str, dir: &Path) -> pstar::Result<f64> {
    let session = session(redis, dir).await?;
    let pcs = PilotComputeService::new(&session);
    let cus = ComputeUnitService::new(&session);
    cus.add_pilot_service(&pcs);
    let unit = cus.submit(ComputeUnitDescription::new("/bin/true")).await?;
    let description = PilotComputeDescription {
        resource: resource
            .parse()
            .map_err(|e| pstar::Error::StoreLost(format!("{e}")))?,
        cores: 1,
        walltime: Duration::from_secs(600),
        working_directory: Some(dir.join("remote")),
        ..Default::default()
    };
    let start = epoch_now();
    let pilot = pcs.create_pilot(description).await?;
    let reached =
        tokio::time::timeout(Duration::from_secs(120), unit.wait_for(UnitState::Running)).await;
    let running = unit
        .history()
        .iter()
        .find(|(s, _)| *s == UnitState::Running)
        .map(|(_, t)| t.as_secs_f64());
    let result = match (reached, running) {
        (Ok(_), Some(t)) => Ok(t - start),
        _ => Err(pstar::Error::StoreLost(format!(
            "no unit ran on {resource}: pilot {} {:?}",
            pilot.state(),
            pilot.detail()
        ))),
    };
    unit.wait().await;
    pcs.cancel().await;
    result
}

/// Seconds for `units` null units over one Slurm pilot of `cores` cores, pilot start
/// included; and the units alone (first running to last done).
async fn slurm_pilot_units(
    redis: &RedisServer,
    units: usize,
    cores: u32,
    dir: &Path,
) -> pstar::Result<(f64, f64)> {
    let session = session(redis, dir).await?;
    let pcs = PilotComputeService::new(&session);
    let cus = ComputeUnitService::new(&session);
    cus.add_pilot_service(&pcs);
    let start = Instant::now();
    let pilot = pcs
        .create_pilot(PilotComputeDescription {
            resource: "slurm://"
                .parse()
                .map_err(|e| pstar::Error::StoreLost(format!("{e}")))?,
            cores,
            walltime: Duration::from_secs(1800),
            ..Default::default()
        })
        .await?;
    let (all, _) = pstar_bench::submit_nulls(&cus, units).await?;
    let first = pilot.wait_for(PilotState::Running).await;
    if first != PilotState::Running {
        return Err(pstar::Error::StoreLost(format!(
            "pilot {first}: {:?}",
            pilot.detail()
        )));
    }
    let running_at = Instant::now();
    for u in &all {
        u.wait().await;
    }
    let total = start.elapsed().as_secs_f64();
    let body = running_at.elapsed().as_secs_f64();
    let failed = all.iter().filter(|u| u.state() != UnitState::Done).count();
    if failed > 0 {
        eprintln!("  warning: {failed} units did not end done");
    }
    pcs.cancel().await;
    Ok((total, body))
}

/// Seconds for `units` jobs `sbatch --wrap /bin/true`, submitted one by one, to all end.
fn slurm_jobs(slurm: &SlurmCluster, units: usize) -> Option<f64> {
    let start = Instant::now();
    for _ in 0..units {
        let ok = slurm
            .command("sbatch")
            .args(["--parsable", "-o", "/dev/null", "--wrap", "/bin/true"])
            .output()
            .ok()?
            .status
            .success();
        if !ok {
            return None;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3600);
    while Instant::now() < deadline {
        let out = slurm
            .command("squeue")
            .args(["-h", "-o", "%i"])
            .output()
            .ok()?;
        if String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return Some(start.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn main() -> std::process::ExitCode {
    let rounds = env_or("ROUNDS", 3);
    let units = env_or("UNITS", 1000);
    let cores = env_or("CORES", 4) as u32;

    let dir = tempfile::tempdir().expect("a temporary directory");
    let redis = RedisServer::start();
    let slurm = SlurmCluster::start(1, cores.max(4));
    let sge = SgeCell::start(cores.max(4));
    let ssh = SshServer::start();
    let mut env: Vec<(String, String)> = slurm.env();
    env.extend(sge.env());
    env.push((
        "PSTAR_SSH_CONFIG".into(),
        ssh.config_file().display().to_string(),
    ));
    env.push(("PSTAR_REDIS_PASSWORD".into(), redis.password().to_owned()));
    for (k, v) in &env {
        // SAFETY: no other thread exists yet (the runtime is built below).
        unsafe { std::env::set_var(k, v) };
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");

    println!("(a) create_pilot to first unit running, median of {rounds} (seconds)");
    println!(
        "{:<32} {:>10} {:>12} {:>10}",
        "resource", "pilot", "scheduler", "beyond"
    );
    let resources = [
        ("local", "local://".to_owned()),
        ("ssh", format!("ssh://root@127.0.0.1:{}", ssh.port())),
        ("slurm", "slurm://".to_owned()),
        ("sge", "sge://".to_owned()),
    ];
    for (scheme, url) in &resources {
        let mut pilot = Vec::new();
        let mut sched = Vec::new();
        for _ in 0..rounds {
            if let Some(t) = scheduler_latency(scheme, &slurm, &sge, &ssh, dir.path()) {
                sched.push(t);
            }
            match runtime.block_on(pilot_start(&redis, url, dir.path())) {
                Ok(t) => pilot.push(t),
                Err(e) => eprintln!("  {scheme}: {e}"),
            }
        }
        let (p, s) = (median(pilot), median(sched));
        println!("{scheme:<32} {p:>10.2} {s:>12.2} {:>10.2}", p - s);
    }

    println!();
    println!("(b) {units} null units on a Slurm of {cores} CPUs");
    let pilot = runtime.block_on(slurm_pilot_units(&redis, units, cores, dir.path()));
    let jobs = slurm_jobs(&slurm, units);
    match (&pilot, jobs) {
        (Ok((total, body)), Some(jobs)) => {
            println!(
                "one pilot ({cores} cores), start included  {total:>8.2} s  ({:.0} units/s)",
                units as f64 / total
            );
            println!("  of which units, once running   {body:>8.2} s");
            println!(
                "one sbatch job per unit          {jobs:>8.2} s  ({:.1} units/s)",
                units as f64 / jobs
            );
            println!("ratio (jobs / pilot)             {:>8.1}x", jobs / total);
        }
        _ => {
            println!("pilot: {:?}", pilot.as_ref().map_err(|e| e.to_string()));
            println!("jobs: {jobs:?}");
            return std::process::ExitCode::FAILURE;
        }
    }
    std::process::ExitCode::SUCCESS
}
