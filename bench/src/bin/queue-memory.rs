//! The manager's memory per queued unit: submit N units (default 100000) with no pilot, so
//! they all wait in the pool, and compare resident memory before and after.

use pstar::{ComputeUnitService, Session};
use pstar_bench::proc_status_bytes;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> pstar::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let session = Session::new().await?;
    let cus = ComputeUnitService::new(&session);
    let before = proc_status_bytes("VmRSS").unwrap_or(0);
    let (units, submit) = pstar_bench::submit_nulls(&cus, n).await?;
    let after = proc_status_bytes("VmRSS").unwrap_or(0);
    let peak = proc_status_bytes("VmHWM").unwrap_or(0);
    println!(
        "{n} queued units: submitted in {:.3} s ({:.0} units/s); RSS {:.1} MiB -> {:.1} MiB (peak {:.1} MiB): {:.0} bytes per queued unit",
        submit.as_secs_f64(),
        n as f64 / submit.as_secs_f64(),
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        (after.saturating_sub(before)) as f64 / n as f64,
    );
    drop(units);
    Ok(())
}
