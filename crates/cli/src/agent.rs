//! `pstar agent`: one pilot's agent as a process of its own.
//!
//! Resource adaptors start it inside the pilot job (a child process for `local://` with a
//! Redis store; a batch job elsewhere). It reads its pilot's record from the store, runs
//! the pilot's units until the walltime, a cancel, or a signal, and exits.
//!
//! Its settings come from the pilot's record ([`pstar_coordination::PilotRecord::agent`]),
//! so its command line names only the store, the session and the pilot. Flags for single
//! settings are still taken, hidden, over the record's.

use std::time::Duration;

use pstar::{Coordination, PilotState, Settings, SettingsLayer};
use pstar_agent::Agent;
use pstar_coordination::{AgentLease, Control};
use pstar_model::PilotId;

use crate::store;

/// What `pstar agent` was asked to do.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub coordination: String,
    pub session: String,
    pub pilot: PilotId,
    /// Settings given on the command line, over the record's.
    pub overrides: SettingsLayer,
}

/// Runs the agent to its end; returns the pilot's final state.
///
/// SIGTERM or SIGINT stop it the way a cancel does: running units are killed and go back
/// to the pool, and the pilot reports `Canceled`.
pub async fn run(options: AgentOptions) -> Result<PilotState, String> {
    // This process runs nothing but the pilot's units: every orphan is theirs.
    pstar_agent::descendants::adopt_all_orphans();
    let store = store::open_existing(&options.coordination, &options.session)
        .await
        .map_err(|e| e.to_string())?;
    let record = store
        .pilot(options.pilot)
        .await
        .map_err(|e| e.to_string())?;
    let config = Settings {
        agent: record.agent.clone(),
        ..Settings::default()
    }
    .with(&options.overrides)
    .agent;
    // One live agent per pilot: a second one would run the pilot's units again, and its
    // end would end the pilot under the first. Taken before anything is published.
    let lease = AgentLease {
        token: fastrand::u64(..),
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default(),
        pid: std::process::id(),
        since: pstar_model::Timestamp::now(),
    };
    let ttl = pstar_agent::lease_ttl(config.heartbeat_interval);
    match store.hold_agent_lease(options.pilot, &lease, ttl).await {
        Ok(None) => {}
        Ok(Some(other)) => {
            return Err(format!(
                "{} already has a live agent ({other}); a second one would run its units \
                 twice: this one did not start (it may start once that agent has ended, or \
                 {} after it last renewed its lease)",
                options.pilot,
                humantime::format_duration(ttl)
            ));
        }
        Err(e) => return Err(format!("cannot take the pilot's agent lease: {e}")),
    }
    crate::settings::check_agent_settings(store.as_ref(), &record, &config).await?;
    tracing::info!(pilot = %record.id, session = %options.session, ?config, "agent starting");
    let kill_grace = config.kill_grace;
    let agent = Agent::new(store.clone(), record, config).holding(lease.clone());
    let outcome = drive(agent, &store, &options, kill_grace).await;
    // Whatever the end, the pilot's lease goes (if this agent still holds it).
    if let Err(e) = store.release_agent_lease(options.pilot, &lease).await {
        tracing::warn!(error = %e, "cannot release the pilot's agent lease (it expires by itself)");
    }
    outcome
}

/// Runs `agent` to its end, stopping it as a cancel does on SIGTERM or SIGINT.
async fn drive(
    agent: Agent,
    store: &pstar_coordination::RedisStore,
    options: &AgentOptions,
    kill_grace: Duration,
) -> Result<PilotState, String> {
    let mut running = tokio::spawn(agent.run());
    let outcome = tokio::select! {
        end = &mut running => end,
        signal = crate::run::interruption() => {
            tracing::warn!(%signal, "agent interrupted; returning its units");
            if let Err(e) = store.send_control(options.pilot, Control::CancelPilot).await {
                tracing::error!(error = %e, "cannot stop through the store; exiting");
                running.abort();
            }
            // The units get their kill grace, then the agent reports; never wait forever.
            let limit = kill_grace + Duration::from_secs(20);
            match tokio::time::timeout(limit, &mut running).await {
                Ok(end) => end,
                Err(_) => {
                    running.abort();
                    return Err(format!("interrupted by {signal}; the agent did not stop in time"));
                }
            }
        }
    };
    match outcome {
        Ok(Ok(state)) => Ok(state),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("agent task ended abnormally: {e}")),
    }
}
