//! Looking at a session from another terminal: `pstar status`, `pstar units`,
//! `pstar cancel` and `pstar session list|rm`.
//!
//! A session's state is its event stream folded through the manager's own core
//! (`pstar::core::Core::observer`: the state table, the rule for stale reports, a report
//! from a pilot that has ended or that the unit is no longer bound to). So these commands
//! show the same states a manager does, whether or not one is running.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use pstar::core::{Core, Input, PilotSpec, ServiceId, UnitSpec};
use pstar::{PilotState, State, UnitState};
use pstar_coordination::redis::SessionEntry;
use pstar_coordination::{CancelTarget, Coordination, CoordinationError, Event, RedisStore};
use pstar_model::{Lifecycle, PilotId, Printable, Timestamp, UnitId, printable};

/// A session as its stream tells it.
pub struct SessionView {
    pub session: String,
    pub entry: SessionEntry,
    pub pilots: BTreeMap<PilotId, PilotView>,
    pub units: BTreeMap<UnitId, UnitView>,
    /// Times at which units ended done or failed, in order (for throughput; a canceled
    /// unit is not work done).
    pub finished_at: Vec<Timestamp>,
    pub heartbeats: BTreeMap<PilotId, Timestamp>,
    /// When the first event on the stream happened.
    pub first_event: Option<Timestamp>,
    /// The manager's core, folding the stream without deciding anything.
    core: Core,
    /// The session's data units and the bytes moved, folded from its data events.
    pub data: pstar::DataLedger,
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
        let core = observer(
            records.iter().map(|r| PilotSpec::of(r.id, &r.description)),
            descriptions.iter().map(|(id, d)| UnitSpec::of(*id, d)),
        );
        let mut view = Self {
            core,
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
            first_event: None,
            data: Default::default(),
        };
        view.apply_all(store.history().await?);
        Ok(view)
    }

    #[cfg(test)]
    fn apply(&mut self, event: &Event) {
        self.apply_all(vec![event.clone()]);
    }

    /// Folds a batch of the stream: pilots' lifecycles here, units through the core.
    fn apply_all(&mut self, events: Vec<Event>) {
        for event in &events {
            self.note(event);
        }
        self.core.handle(Input::Events(events.into()));
        for a in self.core.round().applied {
            let Some(unit) = self.units.get_mut(&a.unit) else {
                continue;
            };
            unit.life.backdate_start(a.at);
            // A unit run again (`--rerun`) starts over from its end.
            let moved = match a.rerun {
                true => unit.life.restart(a.at),
                false => unit.life.transition(a.state, a.at),
            };
            if moved.is_err() {
                continue;
            }
            if a.rerun {
                unit.exit_code = None;
            }
            if a.pilot.is_some() {
                unit.pilot = a.pilot;
            }
            if a.exit_code.is_some() {
                unit.exit_code = a.exit_code;
            }
            unit.detail = a.detail;
            if matches!(a.state, UnitState::Done | UnitState::Failed) {
                self.finished_at.push(a.at);
            }
        }
    }

    fn note(&mut self, event: &Event) {
        let at = match event {
            Event::Unit(e) => e.at,
            Event::Pilot(p) => p.at,
            Event::Data(d) => d.at,
            Event::PilotDraining { at, .. }
            | Event::Resumed { at, .. }
            | Event::SubmitRequested { at, .. }
            | Event::RerunRequested { at, .. }
            | Event::CancelRequested { at, .. } => *at,
        };
        self.first_event = Some(self.first_event.map_or(at, |t| t.min(at)));
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
            Event::Data(d) => self.data.note(d),
            Event::Unit(_)
            | Event::Resumed { .. }
            | Event::SubmitRequested { .. }
            | Event::RerunRequested { .. }
            | Event::CancelRequested { .. } => {}
        }
    }

    /// Units in each state.
    /// The state of unit `id`, if the session has it.
    pub fn unit_state(&self, id: UnitId) -> Option<UnitState> {
        self.units.get(&id).map(|u| u.life.state())
    }

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
            Printable(&self.session),
            Printable(&e.owner),
            Printable(&e.host),
            e.created,
            e.finished
                .map(|f| format!(", finished {f}"))
                .unwrap_or_default()
        );
        let _ = writeln!(out, "\npilots:");
        for (id, p) in &self.pilots {
            // An ended pilot runs nothing, whatever its last reports said: what it held is
            // settled by the manager (or by `pstar run --resume` if there is none).
            let running = if p.life.state().is_final() {
                0
            } else {
                self.units
                    .values()
                    .filter(|u| u.pilot == Some(*id) && u.life.state() == UnitState::Running)
                    .count()
            };
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
                Printable(&p.resource),
            );
            if let Some(d) = &p.detail {
                let _ = writeln!(out, "      {}", Printable(d));
            }
        }
        let counts = self.counts();
        let parts: Vec<String> = UnitState::ALL
            .iter()
            .map(|s| format!("{s} {}", counts.get(s).copied().unwrap_or(0)))
            .collect();
        let _ = writeln!(out, "\nunits: {} ({})", self.units.len(), parts.join(", "));
        let _ = writeln!(out, "throughput: {}", self.throughput(now));
        if !self.data.units.is_empty() {
            let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
            for d in self.data.units.values() {
                *by_state
                    .entry(d.state.map_or("new", |s| s.as_str()))
                    .or_default() += 1;
            }
            let parts: Vec<String> = by_state.iter().map(|(s, n)| format!("{s} {n}")).collect();
            let _ = writeln!(
                out,
                "data units: {} ({}); {} moved",
                self.data.units.len(),
                parts.join(", "),
                pstar::bytes_text(self.data.moved)
            );
            for (name, d) in self.data.units.iter().filter(|(_, d)| d.detail.is_some()) {
                let _ = writeln!(
                    out,
                    "  failed data unit {}: {}",
                    Printable(name),
                    Printable(d.detail.as_deref().unwrap_or(""))
                );
            }
        }
        out
    }

    /// Units finished per second over the last 10 s (or over the session's whole life
    /// when it is younger), and overall: from the session's start to its end, or to now.
    fn throughput(&self, now: Timestamp) -> String {
        if self.finished_at.is_empty() {
            return "no unit has finished yet".into();
        }
        let start = self.started();
        let end = self.entry.finished.unwrap_or(now).max(start);
        let window = Duration::from_secs(10).min(now.since(start));
        let recent = self
            .finished_at
            .iter()
            .filter(|t| now.since(**t) <= window)
            .count();
        let per_sec = |n: usize, d: Duration| n as f64 / d.as_secs_f64().max(1e-3);
        format!(
            "{:.1} units/s over the last {:.1} s; {} finished at {:.1} units/s overall",
            per_sec(recent, window),
            window.as_secs_f64(),
            self.finished_at.len(),
            per_sec(self.finished_at.len(), end.since(start))
        )
    }

    /// When the session started: its registry entry's creation, or its first recorded
    /// transition if that is earlier (a registry entry rewritten by hand, or lost).
    fn started(&self) -> Timestamp {
        self.first_event
            .map_or(self.entry.created, |t| t.min(self.entry.created))
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
                Printable(&u.name),
                u.life.state().to_string(),
                u.pilot.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                u.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                Printable(u.detail.as_deref().unwrap_or(""))
            );
        }
        out
    }
}

/// A core that folds a session of these pilots and units, as one unit service.
fn observer(
    pilots: impl Iterator<Item = PilotSpec>,
    units: impl Iterator<Item = UnitSpec>,
) -> Core {
    let service = ServiceId(0);
    let mut core = Core::observer(Timestamp::from_micros(0));
    core.handle(Input::AddService {
        service,
        policy: Default::default(),
    });
    core.handle(Input::Restore {
        service,
        units: units.collect(),
    });
    for pilot in pilots {
        core.handle(Input::AddPilot {
            service,
            pilot,
            state: PilotState::New,
            running_since: None,
        });
    }
    core
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
///
/// A session, unit or pilot that does not exist is an error, and so is a session that has
/// finished: nothing is written then. With no live manager, the request is recorded for
/// the manager that resumes the session, and the answer says so.
pub async fn cancel(store: &RedisStore, targets: &[String]) -> Result<String, String> {
    let session = store.session().to_owned();
    let view = SessionView::load(store).await.map_err(|e| e.to_string())?;
    let mut units = Vec::new();
    let mut requests = Vec::new();
    for t in targets {
        if let Ok(u) = t.parse::<UnitId>() {
            if !view.units.contains_key(&u) {
                return Err(format!(
                    "no {u} in session {session} (see `pstar units --session {session}`)"
                ));
            }
            units.push(u);
        } else if let Ok(p) = t.parse::<PilotId>() {
            if !view.pilots.contains_key(&p) {
                return Err(format!(
                    "no {p} in session {session} (see `pstar status --session {session}`)"
                ));
            }
            requests.push(CancelTarget::Pilot(p));
        } else {
            return Err(format!(
                "`{}` is neither a unit id (unit.N) nor a pilot id (pilot.N)",
                printable(t)
            ));
        }
    }
    if !units.is_empty() {
        requests.push(CancelTarget::Units(units));
    }
    if targets.is_empty() {
        requests.push(CancelTarget::Session);
    }
    if let Some(at) = view.entry.finished {
        return Err(format!(
            "session {session} has finished ({at}): nothing is left to cancel"
        ));
    }
    let alive = store.has_live_manager().await.map_err(|e| e.to_string())?;
    let user = pstar_coordination::redis::current_user();
    let reason = format!("canceled by {user} (pstar cancel)");
    let at = Timestamp::now();
    let described: Vec<String> = requests.iter().map(ToString::to_string).collect();
    let events = requests
        .into_iter()
        .map(|target| Event::CancelRequested {
            target,
            reason: reason.clone(),
            at,
        })
        .collect();
    store.publish(events).await.map_err(|e| e.to_string())?;
    let described = described.join(", ");
    Ok(if alive {
        format!("asked the manager of {session} to cancel: {described}\n")
    } else {
        format!(
            "no manager is running session {session} now (it was stopped, or died): the \
             cancel of {described} is recorded, and carried out when the session is resumed \
             (pstar run --resume {session})\n"
        )
    })
}

/// `pstar session rm`: deletes `sessions` from the Redis. A session of another user, or
/// one that has not finished, is refused unless `force`; one refusal refuses the whole
/// list, so that nothing is half done.
pub async fn remove_sessions(
    store: &RedisStore,
    sessions: &[String],
    force: bool,
) -> Result<String, String> {
    let known = store.sessions().await.map_err(|e| e.to_string())?;
    let me = pstar_coordination::redis::current_user();
    for session in sessions {
        let Some((entry, present)) = known.iter().find(|(e, _)| &e.session == session) else {
            return Err(format!(
                "no session `{session}` in this Redis (see `pstar session list --all`)"
            ));
        };
        if force {
            continue;
        }
        if entry.owner != me {
            return Err(format!(
                "session `{session}` belongs to {}, not to {}; use --force to remove it anyway",
                printable(&entry.owner),
                printable(&me)
            ));
        }
        if *present && entry.finished.is_none() {
            return Err(format!(
                "session `{session}` has not finished; its manager may still run (use --force \
                 to remove it anyway)"
            ));
        }
    }
    let mut out = String::new();
    for session in sessions {
        let n = store
            .remove_session(session)
            .await
            .map_err(|e| e.to_string())?;
        let _ = writeln!(out, "removed {session} ({})", pstar_model::plural(n, "key"));
    }
    Ok(out)
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
            Printable(&e.session),
            Printable(&e.owner),
            Printable(&e.host),
            e.created.to_string()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pstar_coordination::{PilotEvent, UnitEvent};

    fn at(t: Timestamp, secs: f64) -> Timestamp {
        let micros = t.as_micros() as i64 + (secs * 1e6) as i64;
        Timestamp::from_micros(micros.max(0) as u64)
    }

    /// A session created at `created` with one pilot of 4 cores and `units` units.
    fn session(created: Timestamp, n: u64) -> SessionView {
        let entry = SessionEntry {
            session: "s".into(),
            owner: "o".into(),
            host: "h".into(),
            created,
            finished: None,
        };
        let pilot = PilotView {
            resource: "local://".into(),
            cores: 4,
            gpus: 0,
            life: Lifecycle::new(created),
            detail: None,
            draining: false,
        };
        let units = (0..n)
            .map(|i| {
                let view = UnitView {
                    name: format!("u{i}"),
                    life: Lifecycle::new(created),
                    pilot: None,
                    exit_code: None,
                    detail: None,
                };
                (UnitId::new(i), view)
            })
            .collect();
        let core = observer(
            std::iter::once(PilotSpec {
                id: PilotId::new(0),
                cores: 4,
                gpus: 0,
                walltime: Duration::from_secs(3600),
            }),
            (0..n).map(|i| UnitSpec {
                id: UnitId::new(i),
                cores: 1,
                gpus: 0,
                pilot: None,
                time_request: None,
                retries: 0,
            }),
        );
        SessionView {
            core,
            session: "s".into(),
            entry,
            pilots: [(PilotId::new(0), pilot)].into_iter().collect(),
            units,
            finished_at: Vec::new(),
            heartbeats: BTreeMap::new(),
            first_event: None,
            data: Default::default(),
        }
    }

    fn pilot_to(view: &mut SessionView, state: PilotState, at: Timestamp) {
        view.apply(&Event::Pilot(PilotEvent {
            pilot: PilotId::new(0),
            state,
            at,
            detail: None,
        }));
    }

    fn unit_to(view: &mut SessionView, unit: u64, state: UnitState, at: Timestamp) {
        view.apply(&Event::Unit(UnitEvent {
            unit: UnitId::new(unit),
            pilot: Some(PilotId::new(0)),
            state,
            at,
            exit_code: (state == UnitState::Done).then_some(0),
            detail: None,
            lost_run: None,
            failed_run: false,
            result: None,
        }));
    }

    fn run_unit(view: &mut SessionView, unit: u64, upto: UnitState, t: Timestamp) {
        for state in [
            UnitState::Scheduled,
            UnitState::Pending,
            UnitState::Running,
            UnitState::Done,
        ] {
            unit_to(view, unit, state, t);
            if state == upto {
                break;
            }
        }
    }

    #[test]
    fn a_young_session_s_rate_is_over_its_age_not_the_whole_window() {
        let now = Timestamp::now();
        let created = at(now, -2.0);
        let mut view = session(created, 8);
        pilot_to(&mut view, PilotState::Pending, created);
        pilot_to(&mut view, PilotState::Running, created);
        for u in 0..4 {
            run_unit(&mut view, u, UnitState::Done, at(now, -1.0));
        }
        let status = view.render_status(now);
        assert!(
            status.contains("throughput: 2.0 units/s over the last 2.0 s"),
            "{status}"
        );
        // Units that were canceled are not work done.
        run_unit(&mut view, 4, UnitState::Running, at(now, -1.0));
        unit_to(&mut view, 4, UnitState::Canceled, at(now, -0.5));
        let status = view.render_status(now);
        assert!(
            status.contains("2.0 units/s over the last 2.0 s"),
            "{status}"
        );
        assert!(
            status.contains("4 finished at 2.0 units/s overall"),
            "{status}"
        );
    }

    #[test]
    fn an_ended_pilot_shows_no_running_units() {
        let now = Timestamp::now();
        let created = at(now, -5.0);
        let mut view = session(created, 2);
        pilot_to(&mut view, PilotState::Pending, created);
        pilot_to(&mut view, PilotState::Running, created);
        run_unit(&mut view, 0, UnitState::Running, at(now, -4.0));
        run_unit(&mut view, 1, UnitState::Running, at(now, -4.0));
        assert!(view.render_status(now).contains("2 running"));
        pilot_to(&mut view, PilotState::Failed, at(now, -3.0));
        let status = view.render_status(now);
        assert!(status.contains("pilot.0000  failed"), "{status}");
        assert!(status.contains(" 0 running"), "{status}");
    }

    #[test]
    fn registry_fields_are_shown_without_control_characters() {
        let now = Timestamp::now();
        let mut view = session(now, 1);
        view.entry.owner = "\u{1b}]0;x\u{7}".into();
        view.entry.host = "h\u{1b}[2J".into();
        let status = view.render_status(now);
        assert!(
            !status.chars().any(|c| c.is_control() && c != '\n'),
            "{status:?}"
        );
        let sessions = render_sessions(&[(view.entry.clone(), true)], true);
        assert!(
            !sessions.chars().any(|c| c.is_control() && c != '\n'),
            "{sessions:?}"
        );
    }
}
