//! Looking at a session from another terminal: `pstar status`, `pstar units`,
//! `pstar cancel` and `pstar session list|rm`.
//!
//! A session's state is its event stream folded through the state table, with the
//! manager's rule for stale reports (a report from a pilot that has ended, or that the
//! unit is no longer bound to, does not count). So these commands show the same states a
//! manager does, whether or not one is running.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use pstar::{PilotState, State, UnitState};
use pstar_coordination::redis::SessionEntry;
use pstar_coordination::{CancelTarget, Coordination, CoordinationError, Event, RedisStore};
use pstar_model::{Lifecycle, PilotId, Timestamp, UnitId};

/// A session as its stream tells it.
pub struct SessionView {
    pub session: String,
    pub entry: SessionEntry,
    pub pilots: BTreeMap<PilotId, PilotView>,
    pub units: BTreeMap<UnitId, UnitView>,
    /// Times at which units reached a final state, in order (for throughput).
    pub finished_at: Vec<Timestamp>,
    pub heartbeats: BTreeMap<PilotId, Timestamp>,
}

pub struct PilotView {
    pub resource: String,
    pub cores: u32,
    pub gpus: u32,
    pub life: Lifecycle<PilotState>,
    pub detail: Option<String>,
    pub draining: bool,
}

pub struct UnitView {
    pub name: String,
    pub life: Lifecycle<UnitState>,
    pub pilot: Option<PilotId>,
    pub exit_code: Option<i32>,
    pub detail: Option<String>,
}

impl SessionView {
    /// Reads the whole session from `store`.
    pub async fn load(store: &RedisStore) -> Result<Self, CoordinationError> {
        let session = store.session().to_owned();
        let records = store.all_pilots().await?;
        let descriptions = store.all_units().await?;
        if records.is_empty() && descriptions.is_empty() {
            return Err(CoordinationError::Unsupported(format!(
                "no session `{session}` in this Redis (see `pstar session list`)"
            )));
        }
        let start = Timestamp::from_micros(0);
        let mut view = Self {
            entry: store.session_entry().await?,
            session,
            pilots: records
                .into_iter()
                .map(|r| {
                    let view = PilotView {
                        resource: r.description.resource.to_string(),
                        cores: r.description.cores,
                        gpus: r.description.gpus,
                        life: Lifecycle::new(start),
                        detail: None,
                        draining: false,
                    };
                    (r.id, view)
                })
                .collect(),
            units: descriptions
                .into_iter()
                .map(|(id, d)| {
                    let view = UnitView {
                        name: d.display_name().to_string(),
                        life: Lifecycle::new(start),
                        pilot: None,
                        exit_code: None,
                        detail: None,
                    };
                    (id, view)
                })
                .collect(),
            finished_at: Vec::new(),
            heartbeats: store.heartbeats().await?.into_iter().collect(),
        };
        for event in store.history().await? {
            view.apply(&event);
        }
        Ok(view)
    }

    fn apply(&mut self, event: &Event) {
        match event {
            Event::Pilot(p) => {
                if let Some(pilot) = self.pilots.get_mut(&p.pilot) {
                    pilot.life.backdate_start(p.at);
                    if pilot.life.transition(p.state, p.at).is_ok() && p.detail.is_some() {
                        pilot.detail = p.detail.clone();
                    }
                }
            }
            Event::PilotDraining { pilot, .. } => {
                if let Some(p) = self.pilots.get_mut(pilot) {
                    p.draining = true;
                }
            }
            Event::Unit(e) => {
                let ended = |p: PilotId| {
                    self.pilots
                        .get(&p)
                        .is_some_and(|v| v.life.state().is_final())
                };
                let Some(unit) = self.units.get(&e.unit) else {
                    return;
                };
                let stale = e.state != UnitState::Scheduled
                    && e.pilot.is_some_and(|p| unit.pilot != Some(p) || ended(p));
                if stale {
                    return;
                }
                let Some(unit) = self.units.get_mut(&e.unit) else {
                    return;
                };
                unit.life.backdate_start(e.at);
                if unit.life.transition(e.state, e.at).is_err() {
                    return;
                }
                if e.state == UnitState::Scheduled {
                    unit.pilot = e.pilot;
                }
                if e.exit_code.is_some() {
                    unit.exit_code = e.exit_code;
                }
                unit.detail = e.detail.clone();
                if e.state.is_final() {
                    self.finished_at.push(e.at);
                }
            }
            Event::Resumed { .. } | Event::CancelRequested { .. } => {}
        }
    }

    /// Units in each state.
    pub fn counts(&self) -> BTreeMap<UnitState, usize> {
        let mut counts = BTreeMap::new();
        for u in self.units.values() {
            *counts.entry(u.life.state()).or_default() += 1;
        }
        counts
    }

    /// `pstar status`: pilots with their slots, units per state, throughput.
    pub fn render_status(&self, now: Timestamp) -> String {
        let mut out = String::new();
        let e = &self.entry;
        let _ = writeln!(
            out,
            "session {}  (owner {}, host {}, created {}{})",
            self.session,
            e.owner,
            e.host,
            e.created,
            e.finished
                .map(|f| format!(", finished {f}"))
                .unwrap_or_default()
        );
        let _ = writeln!(out, "\npilots:");
        for (id, p) in &self.pilots {
            let running = self
                .units
                .values()
                .filter(|u| u.pilot == Some(*id) && u.life.state() == UnitState::Running)
                .count();
            let beat = self
                .heartbeats
                .get(id)
                .filter(|_| p.life.state() == PilotState::Running)
                .map(|t| format!(", heartbeat {} ago", ago(now.since(*t))))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {id}  {:<9} {:>10} {:>7}  {} running{}{}  {}",
                p.life.state().to_string(),
                pstar_model::plural(u64::from(p.cores), "core"),
                pstar_model::plural(u64::from(p.gpus), "GPU"),
                running,
                if p.draining { ", draining" } else { "" },
                beat,
                p.resource,
            );
            if let Some(d) = &p.detail {
                let _ = writeln!(out, "      {d}");
            }
        }
        let counts = self.counts();
        let parts: Vec<String> = UnitState::ALL
            .iter()
            .map(|s| format!("{s} {}", counts.get(s).copied().unwrap_or(0)))
            .collect();
        let _ = writeln!(out, "\nunits: {} ({})", self.units.len(), parts.join(", "));
        let _ = writeln!(out, "throughput: {}", self.throughput(now));
        out
    }

    fn throughput(&self, now: Timestamp) -> String {
        let (Some(first), Some(last)) = (self.finished_at.first(), self.finished_at.last()) else {
            return "no unit has finished yet".into();
        };
        let recent = self
            .finished_at
            .iter()
            .filter(|t| now.since(**t) <= Duration::from_secs(10))
            .count();
        let span = last.since(*first).as_secs_f64().max(1e-3);
        format!(
            "{:.1} units/s over the last 10 s; {} finished at {:.1} units/s overall",
            recent as f64 / 10.0,
            self.finished_at.len(),
            self.finished_at.len() as f64 / span
        )
    }

    /// `pstar units`: one line per unit, optionally only those in `state` or on `pilot`.
    pub fn render_units(&self, state: Option<UnitState>, pilot: Option<PilotId>) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<13} {:<24} {:<9} {:<10} {:>4}  detail",
            "unit", "name", "state", "pilot", "exit"
        );
        for (id, u) in &self.units {
            if state.is_some_and(|s| u.life.state() != s)
                || pilot.is_some_and(|p| u.pilot != Some(p))
            {
                continue;
            }
            let _ = writeln!(
                out,
                "{:<13} {:<24} {:<9} {:<10} {:>4}  {}",
                id.to_string(),
                u.name,
                u.life.state().to_string(),
                u.pilot.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                u.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                u.detail.as_deref().unwrap_or("")
            );
        }
        out
    }
}

fn ago(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// `pstar cancel`: asks the session's manager, through the stream, to cancel `targets`
/// (`unit.N` and `pilot.N` ids), or everything when `targets` is empty.
pub async fn cancel(store: &RedisStore, targets: &[String]) -> Result<String, String> {
    let mut units = Vec::new();
    let mut requests = Vec::new();
    for t in targets {
        if let Ok(u) = t.parse::<UnitId>() {
            units.push(u);
        } else if let Ok(p) = t.parse::<PilotId>() {
            store
                .pilot(p)
                .await
                .map_err(|e| format!("cannot cancel {p}: {e}"))?;
            requests.push(CancelTarget::Pilot(p));
        } else {
            return Err(format!(
                "`{t}` is neither a unit id (unit.N) nor a pilot id (pilot.N)"
            ));
        }
    }
    if !units.is_empty() {
        requests.push(CancelTarget::Units(units));
    }
    if targets.is_empty() {
        requests.push(CancelTarget::Session);
    }
    let user = pstar_coordination::redis::current_user();
    let reason = format!("canceled by {user} (pstar cancel)");
    let at = Timestamp::now();
    let described: Vec<String> = requests.iter().map(|r| format!("{r:?}")).collect();
    let events = requests
        .into_iter()
        .map(|target| Event::CancelRequested {
            target,
            reason: reason.clone(),
            at,
        })
        .collect();
    store.publish(events).await.map_err(|e| e.to_string())?;
    Ok(format!(
        "asked the manager of {} to cancel: {}\n",
        store.session(),
        described.join(", ")
    ))
}

/// `pstar session list`.
pub fn render_sessions(sessions: &[(SessionEntry, bool)], everyone: bool) -> String {
    let me = pstar_coordination::redis::current_user();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<30} {:<10} {:<12} {:<28} status",
        "session", "owner", "host", "created"
    );
    for (e, present) in sessions {
        if !everyone && e.owner != me {
            continue;
        }
        let status = match (present, e.finished) {
            (false, _) => "expired".to_owned(),
            (true, Some(f)) => format!("finished {f}"),
            (true, None) => "running (or its manager died: pstar run --resume)".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<30} {:<10} {:<12} {:<28} {status}",
            e.session,
            e.owner,
            e.host,
            e.created.to_string()
        );
    }
    out
}
