//! `pstar submit`: more units (and pilots) for a session a manager is running.
//!
//! The units are checked like a workload file's (their `after` may also name the
//! session's units, by name or tag), given ids reserved in the session, stored with the
//! session's units, and announced on its stream (`Event::SubmitRequested`); the running
//! manager takes them on, with their dependencies, and creates the pilots. A manager
//! resumed later finds them among the session's units.

use std::path::Path;
use std::sync::Arc;

use pstar::{Scheme, State, Timestamp, UnitId};
use pstar_coordination::{Claimed, Coordination, Event, RedisStore};

use crate::workload::{self, KnownUnit, WorkloadError};

/// The most units one `pstar submit` adds (they travel in one event).
pub const MAX_SUBMIT: usize = 100_000;

/// Why nothing was added.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The file was refused (exit 2).
    #[error("{0}")]
    Workload(#[from] WorkloadError),
    /// The session cannot take them, or the store failed.
    #[error("{0}")]
    Session(String),
}

/// Adds the units and pilots of the workload file `path` to `session`, whose store is
/// `store`; returns what it says on success.
pub async fn submit(
    store: Arc<RedisStore>,
    session: &str,
    path: &Path,
    supported: &[Scheme],
) -> Result<String, SubmitError> {
    let fail = |e: &dyn std::fmt::Display| SubmitError::Session(e.to_string());
    let existing = store.all_units().await.map_err(|e| fail(&e))?;
    let records = store.all_pilots().await.map_err(|e| fail(&e))?;
    if existing.is_empty() && records.is_empty() {
        return Err(SubmitError::Session(format!(
            "no session `{session}` in the coordination store (see `pstar session list`)"
        )));
    }
    let known: Vec<KnownUnit> = existing
        .iter()
        .map(|(id, d)| KnownUnit {
            id: *id,
            name: d.display_name().to_owned(),
            tags: d.tags.clone(),
        })
        .collect();
    drop(existing);
    // The session's live pilots: what the units may run on (besides the file's own).
    let pilots: Vec<pstar::PilotComputeDescription> =
        records.into_iter().map(|r| r.description).collect();
    let workload = workload::load_more(path, supported, known, pilots)?;
    // The file first (exit 2 for a bad one, whatever the session), then the session.
    let entry = store.session_entry().await.map_err(|e| fail(&e))?;
    if let Some(at) = entry.finished {
        return Err(SubmitError::Session(format!(
            "session {session} has finished ({at}): no manager would run what is added; \
             start a new run"
        )));
    }
    let me = pstar_coordination::redis::current_user();
    if entry.owner != me {
        return Err(SubmitError::Session(format!(
            "session {session} belongs to {}, not to {me}: only its owner adds to it",
            entry.owner
        )));
    }
    if !store.has_live_manager().await.map_err(|e| fail(&e))? {
        return Err(SubmitError::Session(format!(
            "no manager is running session {session} now: `pstar submit` adds to a running \
             session (`pstar run --resume {session}` runs it again; submit then)"
        )));
    }
    let n = workload.unit_count();
    if n > MAX_SUBMIT {
        return Err(SubmitError::Session(format!(
            "{} adds {n} units; one `pstar submit` adds at most {MAX_SUBMIT}",
            path.display()
        )));
    }
    let first = store
        .reserve_unit_ids(n as u64)
        .await
        .map_err(|e| fail(&e))?
        .get();
    let units: Vec<(UnitId, pstar::ComputeUnitDescription)> = workload
        .units()
        .enumerate()
        .map(|(k, u)| {
            let mut d = u.description;
            d.after = u
                .after
                .iter()
                .map(|p| {
                    workload
                        .session_unit(*p)
                        .unwrap_or_else(|| UnitId::new(first + p))
                })
                .collect();
            (UnitId::new(first + k as u64), d)
        })
        .collect();
    // Announced first, in one event: cut short before it, nothing was added; after it,
    // the manager stores them (as this does next) and runs them.
    let claimed: Vec<Claimed> = units
        .iter()
        .map(|(id, d)| (*id, Arc::new(d.clone())))
        .collect();
    let ids: Vec<UnitId> = units.iter().map(|(id, _)| *id).collect();
    let pilots = workload.pilots.len();
    store
        .publish(vec![Event::SubmitRequested {
            units,
            pilots: workload.pilots,
            by: me,
            at: Timestamp::now(),
        }])
        .await
        .map_err(|e| fail(&e))?;
    store.put_units(&claimed).await.map_err(|e| fail(&e))?;
    drop(claimed);
    // A session whose manager ended as they were announced did not take them.
    if let Some(left) = not_taken(&store, &ids).await {
        return Err(SubmitError::Session(format!(
            "session {session} ended as {} were added, and {left} of them did not run: \
             `pstar run --resume {session}` runs them",
            crate::count(n, "unit")
        )));
    }
    let ids = match n {
        0 => String::new(),
        1 => format!(" ({})", UnitId::new(first)),
        _ => format!(
            " ({} to {})",
            UnitId::new(first),
            UnitId::new(first + n as u64 - 1)
        ),
    };
    Ok(format!(
        "added {}{ids} and {} to session {session}\n",
        crate::count(n, "unit"),
        crate::count(pilots, "pilot"),
    ))
}

/// How long `pstar submit` watches for a session that ends as its units are announced.
const WATCH_END: std::time::Duration = std::time::Duration::from_secs(1);

/// How many of `ids` did not end in a session that finished (watched for a moment after
/// they were announced); `None` while its manager runs, or if all of them ended.
async fn not_taken(store: &Arc<RedisStore>, ids: &[UnitId]) -> Option<usize> {
    let until = std::time::Instant::now() + WATCH_END;
    loop {
        let finished = store.session_entry().await.ok()?.finished.is_some();
        if finished {
            break;
        }
        if std::time::Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let view = crate::inspect::SessionView::load(store).await.ok()?;
    let left = ids
        .iter()
        .filter(|id| view.unit_state(**id).is_none_or(|s| !s.is_final()))
        .count();
    (left > 0).then_some(left)
}
