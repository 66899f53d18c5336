//! What a run leaves behind: the summary on the terminal and the JSON report.
//!
//! Units are folded into a [`Tally`] one by one as they end, and, with `--report`, their
//! entries go straight to the report's temporary file, so a run of millions of units keeps
//! none of them in memory. The report appears under its name only once complete (a
//! temporary file beside it is renamed), and it is written however the run ends.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use pstar::{ComputeUnit, PilotCompute, PilotId, PilotState, State, Timestamp, UnitId, UnitState};

/// Figures of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub session: String,
    /// Units submitted.
    pub units: usize,
    pub done: usize,
    pub failed: usize,
    pub canceled: usize,
    /// Units that had not ended when the run did (the store was lost).
    pub unfinished: usize,
    /// Units of the workload never submitted (the run ended first).
    pub not_submitted: usize,
    /// From the session's first submission to the last unit's end (for a resumed
    /// session, its whole life, both managers' parts).
    pub wall_time_s: f64,
    /// Units that ran to an end (done or failed) per second of `wall_time_s`.
    pub units_per_s: f64,
    /// Time spent in each state, summed over all units and divided by their number, in
    /// seconds (a unit that never entered a state adds zero).
    pub mean_time_in_state_s: BTreeMap<String, f64>,
    /// For a resumed session: what this run did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub this_run: Option<ThisRun>,
    /// Pilot-Data: what moved, and the data units (absent when the run had none).
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub data: Option<DataSummary>,
}

/// What a run's data units are and what moved between stores, pilots and the client.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataSummary {
    /// Every byte that crossed between stores, pilots and the client (exports included).
    pub bytes_moved: u64,
    /// Those bytes by where they came from: a pilot store, `pilot.NNNN`, `client`.
    pub bytes_from: BTreeMap<String, u64>,
    /// Those bytes by where they went: a pilot store, `pilot.NNNN`, `export`.
    pub bytes_to: BTreeMap<String, u64>,
    /// Every data unit: state, files, and the places that hold it.
    pub data_units: Vec<DataUnitReport>,
    /// Exports asked for that did not happen (the run does not count as all done).
    pub export_failures: usize,
}

/// One data unit in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataUnitReport {
    pub name: String,
    pub state: String,
    pub size: u64,
    pub files: Vec<pstar::DataFile>,
    /// Pilot stores that hold it.
    pub stores: Vec<String>,
    /// Pilots whose cache holds it.
    pub pilots: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Where it was exported to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exported_to: Option<String>,
}

impl DataSummary {
    /// The summary's line: bytes moved, from where.
    pub fn render(&self) -> String {
        let from: Vec<String> = self
            .bytes_from
            .iter()
            .map(|(k, v)| format!("{} from {k}", pstar::bytes_text(*v)))
            .collect();
        let failed = self
            .data_units
            .iter()
            .filter(|d| d.state == "failed")
            .count();
        let mut line = format!(
            "data: {} moved{}; {}",
            pstar::bytes_text(self.bytes_moved),
            if from.is_empty() {
                String::new()
            } else {
                format!(" ({})", from.join(", "))
            },
            crate::count(self.data_units.len(), "data unit"),
        );
        if failed > 0 {
            line.push_str(&format!(", {failed} failed"));
        }
        if self.export_failures > 0 {
            line.push_str(&format!(
                "; {} not exported",
                crate::count(self.export_failures, "data unit")
            ));
        }
        line
    }
}

/// The part of a resumed session that this run carried.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThisRun {
    /// Units that ended while this run watched.
    pub units_ended: usize,
    pub wall_time_s: f64,
    pub units_per_s: f64,
}

impl Summary {
    /// Every unit ended `Done`.
    pub fn all_done(&self) -> bool {
        self.done == self.units
            && self.not_submitted == 0
            && self.data.as_ref().is_none_or(|d| d.export_failures == 0)
    }
}

/// Units folded in one by one as they end: the figures of the summary, the failed units it
/// names, and (with a report) their entries written out at once.
pub struct Tally {
    session: String,
    units: usize,
    done: usize,
    failed: usize,
    canceled: usize,
    unfinished: usize,
    first: Option<Timestamp>,
    last_end: Option<Timestamp>,
    time_in: BTreeMap<UnitState, Duration>,
    failed_shown: Vec<(UnitId, String, String)>,
    failed_more: usize,
    canceled_why: BTreeMap<String, usize>,
    report: Option<ReportFile>,
    /// The session, for the bytes each unit moved (runs with Pilot-Data).
    data: Option<pstar::Session>,
}

/// How many failed units the summary names.
const FAILED_SHOWN: usize = 10;

impl Tally {
    pub fn new(session: &str, report: Option<ReportFile>) -> Self {
        Self {
            session: session.to_owned(),
            units: 0,
            done: 0,
            failed: 0,
            canceled: 0,
            unfinished: 0,
            first: None,
            last_end: None,
            time_in: BTreeMap::new(),
            failed_shown: Vec::new(),
            failed_more: 0,
            canceled_why: BTreeMap::new(),
            report,
            data: None,
        }
    }

    /// Units' entries carry the bytes `session`'s agents moved for them.
    pub fn with_data(mut self, session: &pstar::Session) -> Self {
        self.data = Some(session.clone());
        self
    }

    /// Units folded in so far.
    pub fn len(&self) -> usize {
        self.units
    }

    pub fn is_empty(&self) -> bool {
        self.units == 0
    }

    /// Folds in one unit (normally once it has ended; one that has not counts as
    /// unfinished).
    pub fn add(&mut self, unit: &ComputeUnit) {
        let path = |p: Option<PathBuf>| p.map(|p| p.display().to_string());
        self.add_ended(&EndedUnit {
            id: unit.id(),
            name: unit.name().to_owned(),
            state: unit.state(),
            exit_code: unit.exit_code(),
            pilot: unit.pilot(),
            stdout: path(unit.stdout()),
            stderr: path(unit.stderr()),
            detail: unit.detail(),
            history: unit.history(),
            bytes: self.data.as_ref().map(|s| s.data_moved_for(unit.id())),
            attempts: unit
                .attempts()
                .into_iter()
                .map(|a| AttemptEntry {
                    pilot: a.pilot.map(|p| p.to_string()),
                    started: a.started,
                    ended: a.ended,
                    end: a.end.map(pstar::RunEnd::as_str),
                    exit_code: a.exit_code,
                    detail: a.detail,
                })
                .collect(),
        });
    }

    /// Folds in one unit from its record (a simulated run has no handles), at `now`.
    pub fn add_ended(&mut self, unit: &EndedUnit) {
        self.add_at(unit, Timestamp::now());
    }

    /// [`add_ended`](Self::add_ended) on a clock of the caller's (the simulator's).
    pub fn add_at(&mut self, unit: &EndedUnit, now: Timestamp) {
        let history = &unit.history;
        let state = unit.state;
        self.units += 1;
        if let Some((_, at)) = history.first() {
            self.first = Some(self.first.map_or(*at, |f| f.min(*at)));
        }
        if state.is_final()
            && let Some((_, at)) = history.last()
        {
            self.last_end = Some(self.last_end.map_or(*at, |l| l.max(*at)));
        }
        for (i, (s, at)) in history.iter().enumerate() {
            let until = history.get(i + 1).map_or(now, |(_, t)| *t);
            // A final state is not time spent (a unit run again, `--rerun`, left one).
            if !s.is_final() {
                *self.time_in.entry(*s).or_default() += until.since(*at);
            }
        }
        match state {
            UnitState::Done => self.done += 1,
            UnitState::Failed => {
                self.failed += 1;
                if self.failed_shown.len() < FAILED_SHOWN {
                    self.failed_shown.push((
                        unit.id,
                        unit.name.clone(),
                        unit.detail.clone().unwrap_or_default(),
                    ));
                } else {
                    self.failed_more += 1;
                }
            }
            UnitState::Canceled => {
                self.canceled += 1;
                *self
                    .canceled_why
                    .entry(unit.detail.clone().unwrap_or_else(|| "canceled".into()))
                    .or_default() += 1;
            }
            _ => self.unfinished += 1,
        }
        if let Some(report) = &mut self.report
            && let Err(e) = report.add(unit)
        {
            say!(
                "pstar: cannot write the report {}: {e}",
                report.path.display()
            );
            self.report = None;
        }
    }

    /// The summary, given how many units were never submitted and, for a resumed session,
    /// how long this run watched and how many units ended meanwhile.
    pub fn summary(&self, not_submitted: usize, this_run: Option<(Duration, usize)>) -> Summary {
        self.summary_at(not_submitted, this_run, Timestamp::now())
    }

    /// [`summary`](Self::summary) on a clock of the caller's.
    pub fn summary_at(
        &self,
        not_submitted: usize,
        this_run: Option<(Duration, usize)>,
        now: Timestamp,
    ) -> Summary {
        let wall = match (self.first, self.last_end) {
            (Some(first), Some(last)) => last.since(first),
            (Some(first), None) => now.since(first),
            _ => Duration::ZERO,
        };
        let wall_s = wall.as_secs_f64();
        let rate = |n: usize, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        let n = self.units.max(1) as f64;
        Summary {
            session: self.session.clone(),
            units: self.units,
            done: self.done,
            failed: self.failed,
            canceled: self.canceled,
            unfinished: self.unfinished,
            not_submitted,
            wall_time_s: wall_s,
            units_per_s: rate(self.done + self.failed, wall_s),
            mean_time_in_state_s: self
                .time_in
                .iter()
                .map(|(s, d)| (s.as_str().to_owned(), d.as_secs_f64() / n))
                .collect(),
            this_run: this_run.map(|(wall, ended)| ThisRun {
                units_ended: ended,
                wall_time_s: wall.as_secs_f64(),
                units_per_s: rate(ended, wall.as_secs_f64()),
            }),
            data: None,
        }
    }

    /// The summary as shown at the end of `pstar run`.
    pub fn render(&self, summary: &Summary) -> String {
        let mut out = String::new();
        let mut parts = vec![
            format!("{} done", summary.done),
            format!("{} failed", summary.failed),
            format!("{} canceled", summary.canceled),
        ];
        if summary.unfinished > 0 {
            parts.push(format!("{} unfinished", summary.unfinished));
        }
        let _ = writeln!(
            out,
            "{}: {} in {:.2} s ({} units/s)",
            crate::count(summary.units, "unit"),
            parts.join(", "),
            summary.wall_time_s,
            per_second(summary.units_per_s)
        );
        if summary.not_submitted > 0 {
            let _ = writeln!(
                out,
                "{} of the workload never submitted (the run ended first)",
                crate::count(summary.not_submitted, "unit")
            );
        }
        if let Some(this) = &summary.this_run {
            let _ = writeln!(
                out,
                "this run (resumed): {} ended in {:.2} s ({:.1} units/s)",
                crate::count(this.units_ended, "unit"),
                this.wall_time_s,
                this.units_per_s
            );
        }
        if let Some(data) = &summary.data {
            let _ = writeln!(out, "{}", data.render());
            for d in data.data_units.iter().filter(|d| d.state == "failed") {
                let _ = writeln!(
                    out,
                    "  failed data unit {}: {}",
                    pstar_model::printable(&d.name),
                    pstar_model::printable(d.detail.as_deref().unwrap_or("")),
                );
            }
        }
        let mut states: Vec<(&String, &f64)> = summary.mean_time_in_state_s.iter().collect();
        states.sort_by_key(|(s, _)| UnitState::ALL.iter().position(|u| u.as_str() == s.as_str()));
        let parts: Vec<String> = states
            .iter()
            .map(|(s, t)| format!("{s} {}", human(**t)))
            .collect();
        if !parts.is_empty() {
            let _ = writeln!(out, "mean time per unit: {}", parts.join(", "));
        }
        // Names and reasons come from workload files and processes: shown without
        // terminal control characters.
        use pstar_model::printable;
        for (id, name, detail) in &self.failed_shown {
            let _ = writeln!(
                out,
                "  failed {id} {}: {}",
                printable(name),
                printable(detail)
            );
        }
        if self.failed_more > 0 {
            let _ = writeln!(
                out,
                "  ... and {} more (see the report)",
                crate::count(self.failed_more, "failed unit")
            );
        }
        // The most frequent reasons first; past ten, the rest are in the report.
        let mut why: Vec<(&String, &usize)> = self.canceled_why.iter().collect();
        why.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        for (reason, n) in why.iter().take(FAILED_SHOWN) {
            let _ = writeln!(out, "  canceled {n}: {}", printable(reason));
        }
        if why.len() > FAILED_SHOWN {
            let more: usize = why.iter().skip(FAILED_SHOWN).map(|(_, n)| **n).sum();
            let _ = writeln!(
                out,
                "  ... and {} for {} more reasons (see the report)",
                crate::count(more, "canceled unit"),
                why.len() - FAILED_SHOWN
            );
        }
        out
    }

    /// Writes the report, if one was asked for: what was folded in, the summary and the
    /// pilots. Returns whether it was written (true when none was asked for).
    pub fn finish_report(&mut self, summary: &Summary, pilots: &[PilotCompute]) -> bool {
        let pilots: Vec<PilotEntry> = pilots.iter().map(PilotEntry::of).collect();
        self.finish_report_with(summary, &pilots)
    }

    /// [`finish_report`](Self::finish_report) with the pilots' entries made by the caller.
    pub fn finish_report_with(&mut self, summary: &Summary, pilots: &[PilotEntry]) -> bool {
        let Some(report) = self.report.take() else {
            return true;
        };
        let path = report.path.clone();
        match report.finish(summary, pilots) {
            Ok(()) => {
                say!("report: {}", path.display());
                true
            }
            Err(e) => {
                say!("pstar: cannot write the report {}: {e}", path.display());
                false
            }
        }
    }
}

/// A rate with as many digits as it needs to say something: `2381`, `12.5`, `0.0166`.
fn per_second(rate: f64) -> String {
    if rate >= 100.0 {
        format!("{rate:.0}")
    } else if rate >= 1.0 {
        format!("{rate:.1}")
    } else if rate > 0.0 {
        // Three significant digits.
        let digits = (2 - rate.log10().floor() as i32).clamp(3, 12) as usize;
        format!("{rate:.digits$}")
    } else {
        "0".into()
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
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_out: Option<u64>,
    /// Seconds staging its inputs in and its outputs out (the seeds' T_X), and running
    /// (T_C).
    #[serde(skip_serializing_if = "Option::is_none")]
    staging_in_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    staging_out_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    running_s: Option<f64>,
    /// Every run of a unit that ran more than once (retries, runs lost with their pilot).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    attempts: Vec<AttemptEntry>,
}

/// One run of a unit, in the report.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptEntry {
    pub pilot: Option<String>,
    pub started: Timestamp,
    pub ended: Option<Timestamp>,
    /// `done`, `failed`, `canceled`, or `returned` (back to the pool unfinished).
    pub end: Option<&'static str>,
    pub exit_code: Option<i32>,
    pub detail: Option<String>,
}

/// Seconds spent in `state` over a unit's history.
fn seconds_in(history: &[(UnitState, Timestamp)], state: UnitState) -> f64 {
    history
        .windows(2)
        .filter(|w| w[0].0 == state)
        .map(|w| w[1].1.since(w[0].1).as_secs_f64())
        .sum()
}

/// A unit as the report and the summary see it once it has ended.
#[derive(Debug, Clone)]
pub struct EndedUnit {
    pub id: UnitId,
    pub name: String,
    pub state: UnitState,
    pub exit_code: Option<i32>,
    pub pilot: Option<PilotId>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub detail: Option<String>,
    /// Every state it entered, with when.
    pub history: Vec<(UnitState, Timestamp)>,
    /// Bytes staged in and out for it (runs with Pilot-Data).
    pub bytes: Option<(u64, u64)>,
    /// Each of its runs.
    pub attempts: Vec<AttemptEntry>,
}

/// A pilot's entry in the report.
#[derive(Debug, Clone, Serialize)]
pub struct PilotEntry {
    pub name: Option<String>,
    pub id: String,
    pub resource: String,
    pub cores: u32,
    pub gpus: u32,
    pub state: PilotState,
    pub detail: Option<String>,
    /// The pilot job's id on its resource (a batch job id, a process id).
    pub job: Option<String>,
    pub sandbox: String,
    pub timestamps: BTreeMap<&'static str, Timestamp>,
    /// Of a simulated pilot: the share of its core-seconds while running that units used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utilisation: Option<f64>,
}

impl PilotEntry {
    fn of(p: &PilotCompute) -> Self {
        Self {
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
            utilisation: None,
        }
    }
}

pub fn stamps<S: State>(history: &[(S, Timestamp)]) -> BTreeMap<&'static str, Timestamp> {
    // The last time each state was entered (a unit returned to the pool enters some twice).
    history.iter().map(|(s, t)| (s.as_str(), *t)).collect()
}

/// Refuses a report path before anything runs, and says where the report will go: a
/// symbolic link is followed (the report replaces the file it names, never the link), and
/// refused are a path that names an input of the run (the workload file, this program, the
/// agent binary), anything but a regular file (a directory, a device such as `/dev/null`, a
/// pipe), an executable file, and a place where no file can be made. Nothing is created
/// or truncated.
pub fn check_path(path: &Path, inputs: &[PathBuf]) -> Result<PathBuf, String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let shown = path.display();
    // Where the report goes: through a link to what it names (a dangling link to the
    // place it names).
    let target = match std::fs::canonicalize(path) {
        Ok(real) => real,
        Err(_) => match std::fs::read_link(path) {
            Ok(to) => parent(path).join(to),
            Err(_) => path.to_path_buf(),
        },
    };
    if let Ok(meta) = std::fs::metadata(&target) {
        if meta.is_dir() {
            return Err(format!("the report {shown} is a directory"));
        }
        if !meta.is_file() {
            return Err(format!(
                "the report {shown} is not a regular file (a device, a pipe or a socket): \
                 it is written beside its path and renamed over it, which would replace it"
            ));
        }
        for input in inputs {
            if let Ok(other) = std::fs::metadata(input)
                && other.dev() == meta.dev()
                && other.ino() == meta.ino()
            {
                return Err(format!(
                    "the report {shown} is {}, an input of this run: it would be overwritten",
                    input.display()
                ));
            }
        }
        if meta.permissions().mode() & 0o111 != 0 {
            return Err(format!(
                "the report {shown} is an executable file: a report never replaces a program"
            ));
        }
    }
    let dir = parent(&target);
    if !dir.is_dir() {
        return Err(format!(
            "cannot write the report {shown}: the directory {} does not exist",
            dir.display()
        ));
    }
    // Whether a file can be made beside it (where the temporary file goes).
    match tempfile::Builder::new()
        .prefix(".pstar-report-check")
        .tempfile_in(&dir)
    {
        Ok(_) => Ok(target),
        Err(e) => {
            // Without the probe's own name, which means nothing to the user.
            let why = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<io::Error>())
                .map_or_else(|| e.kind().to_string(), io::Error::to_string);
            Err(format!(
                "cannot write the report {shown}: cannot make a file in {}: {why}",
                dir.display()
            ))
        }
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The report being written: a temporary file beside its final path, renamed into place
/// once complete; removed if the run drops it unfinished.
pub struct ReportFile {
    path: PathBuf,
    out: io::BufWriter<tempfile::NamedTempFile>,
    first: bool,
}

impl ReportFile {
    /// Starts the report that will be `path`. The file at `path`, if any, is left alone
    /// until the report replaces it.
    pub fn create(path: &Path) -> io::Result<Self> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "report".into());
        // Readable like any file the user makes (the mode goes through the umask).
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(parent(path))?;
        let mut out = io::BufWriter::new(tmp);
        out.write_all(b"{\n  \"units\": [")?;
        Ok(Self {
            path: path.to_path_buf(),
            out,
            first: true,
        })
    }

    fn add(&mut self, unit: &EndedUnit) -> io::Result<()> {
        let entry = UnitEntry {
            name: unit.name.clone(),
            id: unit.id.to_string(),
            state: unit.state,
            exit_code: unit.exit_code,
            pilot: unit.pilot.map(|p| p.to_string()),
            stdout: unit.stdout.clone(),
            stderr: unit.stderr.clone(),
            detail: unit.detail.clone(),
            timestamps: stamps(&unit.history),
            bytes_in: unit.bytes.map(|b| b.0),
            bytes_out: unit.bytes.map(|b| b.1),
            staging_in_s: unit
                .bytes
                .map(|_| seconds_in(&unit.history, UnitState::StagingInput)),
            staging_out_s: unit
                .bytes
                .map(|_| seconds_in(&unit.history, UnitState::StagingOutput)),
            running_s: unit
                .bytes
                .map(|_| seconds_in(&unit.history, UnitState::Running)),
            attempts: match unit.attempts.len() {
                0 | 1 => Vec::new(),
                _ => unit.attempts.clone(),
            },
        };
        self.out
            .write_all(if self.first { b"\n    " } else { b",\n    " })?;
        self.first = false;
        serde_json::to_writer(&mut self.out, &entry).map_err(io::Error::other)
    }

    fn finish(mut self, summary: &Summary, pilots: &[PilotEntry]) -> io::Result<()> {
        self.out.write_all(b"\n  ],\n  \"summary\": ")?;
        serde_json::to_writer_pretty(&mut self.out, summary).map_err(io::Error::other)?;
        self.out.write_all(b",\n  \"pilots\": ")?;
        serde_json::to_writer_pretty(&mut self.out, &pilots).map_err(io::Error::other)?;
        self.out.write_all(b"\n}\n")?;
        let tmp = self.out.into_inner().map_err(|e| e.into_error())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}
