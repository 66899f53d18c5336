//! The agent alone: N null units already in its pilot's queue in the embedded store, no
//! manager, no scheduler. What is left of pstar's overhead once the Pilot-Manager is out of
//! the way. Usage: `agent-throughput [N] [SANDBOX_ROOT]` (default 10000, /tmp).

use std::sync::Arc;
use std::time::Instant;

use pstar_agent::{Agent, AgentConfig};
use pstar_coordination::{Coordination, Embedded, Event, PilotRecord};
use pstar_model::{ComputeUnitDescription, PilotComputeDescription, PilotId, State, UnitId};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let root = std::path::PathBuf::from(args.next().unwrap_or_else(|| "/tmp".into()));
    let sandbox = root.join(format!("pstar-agent-bench-{}", std::process::id()));
    let store = Embedded::new("bench");
    let mut events = store.subscribe().await?;
    let first = store.reserve_unit_ids(n).await?.get();
    let desc = Arc::new(ComputeUnitDescription::new("/bin/true"));
    let units: Vec<(UnitId, _)> = (0..n)
        .map(|i| (UnitId::new(first + i), desc.clone()))
        .collect();
    store.put_units(&units).await?;
    let ids: Vec<UnitId> = units.iter().map(|(id, _)| *id).collect();
    store.enqueue(PilotId::new(0), &ids).await?;

    let record = PilotRecord {
        id: PilotId::new(0),
        description: PilotComputeDescription {
            cores: 2,
            ..Default::default()
        },
        sandbox: sandbox.clone(),
        job: None,
        agent: AgentConfig::default(),
        restart_of: None,
    };
    let start = Instant::now();
    let agent = tokio::spawn(Agent::new(store.clone(), record, AgentConfig::default()).run());
    let mut finished = 0;
    while finished < n {
        let Some(Ok(batch)) = events.next_batch().await else {
            break;
        };
        finished += batch
            .iter()
            .filter(|e| matches!(e, Event::Unit(u) if u.state.is_final()))
            .count() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    agent.abort();
    let _ = std::fs::remove_dir_all(&sandbox);
    println!(
        "agent alone ran {n} /bin/true in {secs:.3} s: {:.0} /s",
        n as f64 / secs
    );
    Ok(())
}
