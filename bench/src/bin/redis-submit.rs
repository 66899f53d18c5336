//! Submission over Redis: time `submit_batch` of N units (default 100000) into a session
//! kept in Redis, and the manager's memory; the same with the embedded store as the
//! baseline, in the same run.
//!
//! Usage: `redis-submit URL SESSION [N]`, the password in `PSTAR_REDIS_PASSWORD` (or
//! `PSTAR_REDIS_PASSWORD_FILE`). Each store is measured in a child process of its own, so
//! that each peak (VmHWM) is that store's alone.

use std::process::Command;
use std::time::Instant;

use pstar::{ComputeUnitService, Session};
use pstar_bench::proc_status_bytes;
use pstar_coordination::redis::password_from_environment;
use pstar_coordination::{RedisOptions, RedisStore};

/// Set in the child that measures one store: `redis` or `embedded`.
const ONLY_ENV: &str = "PSTAR_BENCH_SUBMIT_ONLY";

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(url), Some(session)) = (args.first(), args.get(1)) else {
        eprintln!("usage: redis-submit URL SESSION [N]  (password in PSTAR_REDIS_PASSWORD)");
        return std::process::ExitCode::from(2);
    };
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100_000);

    if let Ok(only) = std::env::var(ONLY_ENV) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let result = runtime.block_on(measure(&only, url, session, n));
        return match result {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("redis-submit ({only}): {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }

    // The parent: one child per store, Redis first, then the embedded baseline.
    let me = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("redis-submit: cannot find my own executable: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut ok = true;
    for only in ["redis", "embedded"] {
        let status = Command::new(&me)
            .args([url, session, &n.to_string()])
            .env(ONLY_ENV, only)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => {
                println!("{only}: n/a (measurement exited with {s})");
                ok = false;
            }
            Err(e) => {
                println!("{only}: n/a (cannot start the measurement: {e})");
                ok = false;
            }
        }
    }
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// Submits `n` units through a session on the store `which` and prints the figures.
async fn measure(which: &str, url: &str, session_id: &str, n: usize) -> pstar::Result<()> {
    let (session, label) = if which == "redis" {
        let password = password_from_environment()?;
        let store = RedisStore::connect(
            url,
            session_id,
            RedisOptions {
                password,
                ..Default::default()
            },
        )
        .await?;
        let session = Session::builder()
            .id(session_id)
            .coordination(store.clone())
            .build()
            .await?;
        (session, "over Redis")
    } else {
        (Session::new().await?, "with the embedded store")
    };
    let cus = ComputeUnitService::new(&session);
    let before = proc_status_bytes("VmRSS").unwrap_or(0);
    let start = Instant::now();
    let (units, submit) = pstar_bench::submit_nulls(&cus, n).await?;
    let queued = start.elapsed();
    let after = proc_status_bytes("VmRSS").unwrap_or(0);
    let peak = proc_status_bytes("VmHWM").unwrap_or(0);
    println!(
        "submitted {n} units {label} in {:.3} s: {:.0} units/s (all in the manager's pool after {:.3} s); manager RSS {:.1} MiB -> {:.1} MiB, peak (VmHWM) {:.1} MiB",
        submit.as_secs_f64(),
        n as f64 / submit.as_secs_f64(),
        queued.as_secs_f64(),
        mib(before),
        mib(after),
        mib(peak),
    );
    drop(units);
    Ok(())
}
