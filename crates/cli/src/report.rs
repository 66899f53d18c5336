//! What a run leaves behind: the summary on the terminal and the JSON report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use pstar::{ComputeUnit, PilotCompute, PilotState, State, Timestamp, UnitState};

/// Figures of a finished run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub session: String,
    pub units: usize,
    pub done: usize,
    pub failed: usize,
    pub canceled: usize,
    /// From the first submission to the last unit's end.
    pub wall_time_s: f64,
    pub units_per_s: f64,
    /// Time spent in each state, summed over all units and divided by their number, in
    /// seconds (a unit that never entered a state adds zero).
    pub mean_time_in_state_s: BTreeMap<String, f64>,
}

impl Summary {
    pub fn new(session: &str, units: &[ComputeUnit], wall: Duration) -> Self {
        let count = |s| units.iter().filter(|u| u.state() == s).count();
        let now = Timestamp::now();
        let mut totals: Vec<(UnitState, Duration)> = Vec::new();
        for (state, d) in units.iter().flat_map(|u| u.time_in_states(now)) {
            match totals.iter_mut().find(|(t, _)| *t == state) {
                Some((_, total)) => *total += d,
                None => totals.push((state, d)),
            }
        }
        let n = units.len().max(1) as f64;
        let wall_s = wall.as_secs_f64();
        Self {
            session: session.to_owned(),
            units: units.len(),
            done: count(UnitState::Done),
            failed: count(UnitState::Failed),
            canceled: count(UnitState::Canceled),
            wall_time_s: wall_s,
            units_per_s: if wall_s > 0.0 {
                units.len() as f64 / wall_s
            } else {
                0.0
            },
            mean_time_in_state_s: UnitState::ALL
                .iter()
                .filter_map(|s| totals.iter().find(|(t, _)| t == s))
                .map(|(s, d)| (s.as_str().to_owned(), d.as_secs_f64() / n))
                .collect(),
        }
    }

    /// Every unit ended `Done`.
    pub fn all_done(&self) -> bool {
        self.done == self.units
    }

    /// The summary as shown at the end of `pstar run`.
    pub fn render(&self, units: &[ComputeUnit]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} units: {} done, {} failed, {} canceled in {:.2} s ({:.1} units/s)",
            self.units, self.done, self.failed, self.canceled, self.wall_time_s, self.units_per_s
        );
        let mut states: Vec<(&String, &f64)> = self.mean_time_in_state_s.iter().collect();
        states.sort_by_key(|(s, _)| UnitState::ALL.iter().position(|u| u.as_str() == s.as_str()));
        let parts: Vec<String> = states
            .iter()
            .map(|(s, t)| format!("{s} {}", human(**t)))
            .collect();
        let _ = writeln!(out, "mean time per unit: {}", parts.join(", "));
        let unlucky: Vec<&ComputeUnit> = units
            .iter()
            .filter(|u| matches!(u.state(), UnitState::Failed))
            .collect();
        const SHOWN: usize = 10;
        for u in unlucky.iter().take(SHOWN) {
            let _ = writeln!(
                out,
                "  failed {} {}: {}",
                u.id(),
                u.name(),
                u.detail().unwrap_or_default()
            );
        }
        if unlucky.len() > SHOWN {
            let _ = writeln!(
                out,
                "  ... and {} more failed units (see the report)",
                unlucky.len() - SHOWN
            );
        }
        // Canceled units, grouped by why.
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for u in units.iter().filter(|u| u.state() == UnitState::Canceled) {
            *reasons
                .entry(u.detail().unwrap_or_else(|| "canceled".into()))
                .or_default() += 1;
        }
        for (reason, n) in reasons {
            let _ = writeln!(out, "  canceled {n}: {reason}");
        }
        out
    }
}

fn human(secs: f64) -> String {
    if secs >= 1.0 {
        format!("{secs:.2} s")
    } else {
        format!("{:.2} ms", secs * 1e3)
    }
}

#[derive(Serialize)]
struct UnitEntry {
    name: String,
    id: String,
    state: UnitState,
    exit_code: Option<i32>,
    pilot: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    detail: Option<String>,
    timestamps: BTreeMap<&'static str, Timestamp>,
}

#[derive(Serialize)]
struct PilotEntry {
    name: Option<String>,
    id: String,
    resource: String,
    cores: u32,
    gpus: u32,
    state: PilotState,
    detail: Option<String>,
    /// The pilot job's id on its resource (a batch job id, a process id).
    job: Option<String>,
    sandbox: String,
    timestamps: BTreeMap<&'static str, Timestamp>,
}

#[derive(Serialize)]
struct Report<'a> {
    summary: &'a Summary,
    units: Vec<UnitEntry>,
    pilots: Vec<PilotEntry>,
}

fn stamps<S: State>(history: &[(S, Timestamp)]) -> BTreeMap<&'static str, Timestamp> {
    // The last time each state was entered (a unit returned to the pool enters some twice).
    history.iter().map(|(s, t)| (s.as_str(), *t)).collect()
}

/// Writes the JSON report of a run to `path`.
pub fn write(
    path: &Path,
    summary: &Summary,
    units: &[ComputeUnit],
    pilots: &[PilotCompute],
) -> io::Result<()> {
    let path_str = |p: Option<std::path::PathBuf>| p.map(|p| p.display().to_string());
    let report = Report {
        summary,
        units: units
            .iter()
            .map(|u| UnitEntry {
                name: u.name().to_owned(),
                id: u.id().to_string(),
                state: u.state(),
                exit_code: u.exit_code(),
                pilot: u.pilot().map(|p| p.to_string()),
                stdout: path_str(u.stdout()),
                stderr: path_str(u.stderr()),
                detail: u.detail(),
                timestamps: stamps(&u.history()),
            })
            .collect(),
        pilots: pilots
            .iter()
            .map(|p| PilotEntry {
                name: p.description().name.clone(),
                id: p.id().to_string(),
                resource: p.description().resource.to_string(),
                cores: p.description().cores,
                gpus: p.description().gpus,
                state: p.state(),
                detail: p.detail(),
                job: p.job_id(),
                sandbox: p.sandbox().display().to_string(),
                timestamps: stamps(&p.history()),
            })
            .collect(),
    };
    let file = std::fs::File::create(path)?;
    let mut w = io::BufWriter::new(file);
    serde_json::to_writer_pretty(&mut w, &report).map_err(io::Error::other)?;
    io::Write::write_all(&mut w, b"\n")?;
    io::Write::flush(&mut w)
}
