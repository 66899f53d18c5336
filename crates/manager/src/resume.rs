//! Picking a session up after its manager died (`pstar run --resume`).
//!
//! Everything a manager knows is in the store: the unit and pilot records, and the event
//! stream, which holds every transition and every decision in order. A resumed manager:
//!
//! 1. loads the pilot records (attaching the pilots without submitting anything) and the
//!    unit records;
//! 2. publishes the units' ends its agents journaled (`pstar_agent::read_journal`: ends an
//!    agent could not publish before it died), then a `Resumed` marker with a token of its
//!    own;
//! 3. replays the stream from its first event through the normal state table, taking no
//!    decision, until it meets its marker: the state is then exactly what the manager
//!    before saw, plus whatever agents reported since;
//! 4. goes live: units in `New` form the pool, what ended pilots still held is sent back,
//!    and scheduling resumes. Units already done are never run again.
//!
//! Agents do not notice: they kept running units and publishing while no manager listened.
//! Pilots whose agents died meanwhile are found by the heartbeat monitor like any other.

use pstar_coordination::{Event, PilotRecord};
use pstar_model::Timestamp;

use crate::error::{Error, Result};
use crate::{ComputeUnitService, PilotComputeService, Session, SessionBuilder, UnitPolicy};

/// A session picked up from its store.
pub struct Resumed {
    /// The session, following its stream live.
    pub session: Session,
    /// The session's pilots, in id order, in the states the history left them.
    pub pilots: PilotComputeService,
    /// Every unit of the session, in the states the history left them.
    pub units: ComputeUnitService,
    /// The pilot records as stored (to start like pilots again if none is left).
    pub records: Vec<PilotRecord>,
    /// Units `pstar submit` adds from now on (see
    /// [`ComputeUnitService::accept_submissions`]).
    pub submissions: tokio::sync::mpsc::UnboundedReceiver<crate::Submission>,
}

/// Resumes the session `builder` names (its id and its store are required).
pub async fn resume(builder: SessionBuilder, policy: UnitPolicy) -> Result<Resumed> {
    resume_rerunning(builder, policy, &[]).await
}

/// [`resume`], and the units that ended in one of `rerun` (`Failed`, `Canceled`) start
/// over in `New`, keeping their ids and history (`pstar run --resume S --rerun failed`):
/// the request is on the stream before this manager's marker, so the replay (this one and
/// any later one) resets them there.
pub async fn resume_rerunning(
    builder: SessionBuilder,
    policy: UnitPolicy,
    rerun: &[pstar_model::UnitState],
) -> Result<Resumed> {
    let session = builder.replay().build().await?;
    let coordination = session.coordination().clone();
    let records = coordination.all_pilots().await?;
    let units = coordination.all_units().await?;
    if records.is_empty() && units.is_empty() {
        return Err(Error::NoSuchSession(session.id().to_owned()));
    }

    let pilots = PilotComputeService::new(&session);
    for record in &records {
        pilots.attach(record.clone())?;
    }
    let token =
        u64::from(std::process::id()) << 32 | u64::from(Timestamp::now().as_micros() as u32);
    let (caught_up, replayed) = tokio::sync::oneshot::channel();
    let service = ComputeUnitService::with_policy(&session, policy);
    service.replay(token, caught_up);
    service.restore(units);
    let submissions = service.accept_submissions_after(Some(token));
    service.add_pilot_service(&pilots);
    // Units' ends an agent journaled but may not have published (the store was away, and
    // the agent died before it came back), where this machine sees the pilot's sandbox:
    // replayed before the marker, they count as the agent's reports; reports already on
    // the stream are refused as second reports.
    let mut journaled: Vec<Event> = records
        .iter()
        .flat_map(|r| pstar_agent::journal_reports(&r.sandbox))
        .collect();
    if !rerun.is_empty() {
        journaled.push(Event::RerunRequested {
            states: rerun.to_vec(),
            by: pstar_coordination::redis::current_user(),
            at: Timestamp::now(),
        });
    }
    journaled.push(Event::Resumed {
        token,
        at: Timestamp::now(),
    });
    coordination.publish(journaled).await?;
    session.start_dispatch();
    tokio::select! {
        r = replayed => r.map_err(|_| Error::ServiceClosed)?,
        reason = session.lost() => return Err(Error::StoreLost(reason)),
    }
    // Agents that died while no manager watched: their pilots fail now, and their units
    // go back to the pool.
    for pilot in pilots.pilots() {
        pilot.check_job().await;
    }
    Ok(Resumed {
        session,
        pilots,
        units: service,
        records,
        submissions,
    })
}
