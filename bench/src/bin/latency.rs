//! Latency from submit to done of one `/bin/true` unit on an idle local pilot, and what the
//! unit's own run (process start to exit, as the agent saw it) takes of it.
//! Usage: `latency [N]` (default 100 samples).

use std::time::{Duration, Instant};

use pstar::{
    ComputeUnitDescription, ComputeUnitService, PilotComputeDescription, PilotComputeService,
    PilotState, Session, UnitState,
};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> pstar::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let dir = std::env::temp_dir().join(format!("pstar-latency-{}", std::process::id()));
    let session = Session::builder().sandbox_root(&dir).build().await?;
    let pcs = PilotComputeService::new(&session);
    let pilot = pcs
        .create_pilot(PilotComputeDescription {
            cores: 2,
            ..Default::default()
        })
        .await?;
    pilot.wait_for(PilotState::Running).await;
    let cus = ComputeUnitService::new(&session);
    cus.add_pilot_service(&pcs);

    let mut total = Vec::with_capacity(n);
    let mut running = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let unit = cus.submit(ComputeUnitDescription::new("/bin/true")).await?;
        let state = unit.wait().await;
        total.push(start.elapsed());
        if state != UnitState::Done {
            eprintln!("unit ended {state}: {:?}", unit.detail());
            std::process::exit(1);
        }
        let h = unit.history();
        let at = |s| h.iter().rev().find(|(st, _)| *st == s).map(|(_, t)| *t);
        if let (Some(r), Some(d)) = (at(UnitState::Running), at(UnitState::Done)) {
            running.push(d.since(r));
        }
    }
    pcs.cancel().await;
    let _ = std::fs::remove_dir_all(&dir);
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let p90 = total.clone();
    let mut p90 = p90;
    p90.sort();
    println!(
        "submit-to-done latency over {n} units: median {:.2} ms, p90 {:.2} ms; of which the process itself (running -> done) median {:.2} ms",
        median(&mut total).as_secs_f64() * 1e3,
        p90[n * 9 / 10].as_secs_f64() * 1e3,
        median(&mut running).as_secs_f64() * 1e3,
    );
    Ok(())
}
