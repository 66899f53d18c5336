//! Workload files: the pilots to start and the compute units to run on them, in TOML.
//!
//! A workload file declares one or more `[[pilot]]` tables and one or more `[[unit]]`
//! tables, and optionally one `[session]` table (its layer of the run's settings: it wins
//! over the built-in defaults; the environment and the command line win over it), one
//! `[simulation]` table (for `pstar simulate` only), and for Pilot-Data `[[pilot_data]]`
//! tables (pilot stores) and `[[data_unit]]` tables (data units made from local files):
//!
//! ```toml
//! [session]
//! coordination = "redis://redis-host:6379/0"  # default: the embedded store
//! heartbeat_timeout = "30s" # declare an agent lost after this long without a heartbeat
//! max_attempts = 3          # runs a unit gets when the pilots running it are lost
//! black_hole_failures = 5   # quick failures in a row that make a pilot a black hole
//! agent_start_timeout = "2m"  # a batch pilot's agent must reach the store this soon once its job runs
//! poll_interval = "2s"      # how often batch pilot jobs' states are asked
//! locality_wait = "3s"      # how long a unit reading data waits for a busy pilot nearer
//!                           # its data before moving the data to a free one (0s: never)
//! agent_binary = "bin/pstar"  # the pstar agents run, copied to remote hosts (relative to
//!                           # this file's directory); default: the running pstar
//! prefetch = 4              # pilots' worth of cores of units bound to a pilot beyond its cores
//! keep = "7days"            # how long Redis keeps a finished session's data
//! drain_margin = "5m"       # agents stop taking units this long before their walltime
//!                           # ends; default: the smaller of 60 s and a tenth of the walltime;
//!                           # shorter than every pilot's walltime
//!
//! [simulation]              # `pstar simulate` only; `pstar run` checks it and leaves it aside
//! queue_wait = "1m..10m"    # each pilot's wait in its queue: "5m", or a range drawn
//!                           # uniformly per pilot; default "0s"
//! seed = 7                  # seed of every random draw; default 0
//! pilot_failure = 0.05      # probability that a pilot fails instead of running; default 0
//! agent_loss = 0.01         # probability that a running pilot's agent is lost; default 0
//! unit_time = "1m"          # run time of units without `time_request`; default "0s"
//!
//! [[pilot]]
//! name = "big"              # optional; lets units bind early with `pilot = "big"`
//! count = 1                 # this many identical pilots; default 1, at least 1
//! resource = "local://"     # required: where the pilot runs (local://, ssh://user@host,
//!                           # slurm://, slurm+ssh://user@login, sge://, sge+ssh://, pbs://,
//!                           # pbs+ssh://, lsf://, condor://)
//! cores = 2                 # default 1, at least 1; over all nodes
//! nodes = 1                 # batch resources: cores are spread evenly over this many nodes
//! gpus = 0                  # default 0; over all nodes, spread evenly like cores
//! walltime = "10m"          # "10m", "1h 30m", "HH:MM:SS" or "MM:SS"; default "1h"; > 0
//! queue = "short"           # optional
//! project = "abc123"        # optional
//! reservation = "resv1"     # optional
//! scheduler_options = ["--constraint=haswell"]  # batch directives passed as they are
//! tunnel = false            # ssh-based resources: reach the store over the SSH connection
//! working_directory = "sandbox"  # optional; relative to the workload file's directory
//!                           # (on a host reached over SSH: as written, relative to the home)
//! environment = { OMP_NUM_THREADS = "1" }
//! affinity = { datacenter = "dc1", machine = "node7" }
//! cache = "50GiB"           # most the pilot's data cache holds (least recently used data
//!                           # units are evicted); default: no limit
//!
//! [[unit]]
//! name = "hello-{i}"        # optional; reports fall back to the executable's name
//! executable = "/bin/echo"  # required, not empty
//! arguments = ["hello", "{i}"]
//! environment = { IDX = "{i}" }
//! working_directory = "out" # optional; relative to the workload file's directory
//! cores = 1                 # default 1, at least 1
//! gpus = 0                  # default 0
//! stdout = "out.txt"        # optional; relative to the unit's sandbox
//! stderr = "err.txt"        # optional
//! pre_exec = ["module load x"]
//! post_exec = ["gzip -f out.txt"]  # after the executable, whatever its exit code (kept)
//! shell = false             # run `executable` as a `/bin/sh` command line
//! ranks = 4                 # an MPI unit of 4 ranks (one core each; sets `cores`)
//! mpi = false               # an MPI unit with one rank per core (`ranks` implies it)
//! tags = ["a"]
//! pilot = "big"             # early binding: the `name` of a [[pilot]]
//! count = 8                 # an ensemble of 8 units; default 1, at least 1
//! time_request = "30m"      # expected run time, in the forms of `walltime`; > 0
//! timeout = "10m"           # its process tree is killed when it runs longer; it fails
//!                           # with "timeout after 10m"; in the forms of `walltime`; > 0
//! input_data = ["reference", "reads-{i}"]  # data units made present in the sandbox,
//!                           # under $PSTAR_DATA/<name>/, before the unit runs
//! output_data = [{ name = "aligned-{i}", files = ["*.bam"], export = "results/{i}/" }]
//!
//! [[pilot_data]]            # a pilot store: space for data units
//! name = "archive"          # required; data units and output_data name it in `store`
//! url = "sftp://user@login.example.org/scratch/pstar"  # required: file:///path,
//!                           # sftp://[user@]host[:port]/path, s3://bucket/prefix, or a
//!                           # directory (relative to this file's directory unless absolute)
//! size = "100GiB"           # optional quota: "500MB", "1.5TiB" or a number of bytes; > 0
//! affinity = { datacenter = "dc1", machine = "login1" }
//!
//! [[data_unit]]             # a named, immutable set of files
//! name = "reads-{i}"        # required
//! files = ["data/reads/{i}.fq"]  # required, not empty: files, directories or patterns
//!                           # (`*`, `?`, `[a-z]`, `**`), relative to this file's directory
//! store = "archive"         # optional: the [[pilot_data]] it is placed in first
//! count = 128               # this many data units; default 1, at least 1
//! ```
//!
//! A unit with `count = N` becomes `N` units, in file order; in each, `{i}` in `name`,
//! `arguments`, `environment` *values*, `stdout`, `stderr`, `working_directory`,
//! `pre_exec`, `post_exec`, `input_data` names and `output_data` `name`, `files` and `export` becomes
//! the member's index, `0` to `N - 1` (with the default `count = 1` it becomes `0`). In
//! those fields `{{` and `}}` are literal braces (`${{HOME}}` is the shell's `${HOME}`,
//! `{{i}}` is `{i}`); any other brace is kept as it is. An ensemble is kept as its
//! template and expanded one unit at a time ([`Workload::units`]), so a large `count`
//! costs nothing until its units are submitted; a workload holds at most [`MAX_UNITS`]
//! units.
//!
//! A pilot with `count = N` becomes `N` identical pilots, in file order, at most
//! [`MAX_PILOTS`] in all. With a `name` and `N` more than 1, they are named `name-1` to
//! `name-N`: a unit binds early to one of them (`pilot = "name-2"`); `pilot = "name"` is
//! refused, since a unit is bound to one pilot (leave `pilot` out to let the scheduler
//! place the unit on any pilot). No other pilot may take the group's name or a member's.
//!
//! A unit's `time_request` is its expected run time: the scheduler binds it only to a
//! pilot with that much walltime left, and a unit whose `time_request` is longer than the
//! walltime of every pilot it may run on is refused here.
//!
//! Pilot-Data. Each `output_data` entry is a table (a bare name is refused): `name` and
//! `files` (patterns relative to the unit's sandbox, such as `"*.bam"`, `"out"` for a whole directory, or `"out/**/*.txt"`) are
//! required; `store` (the `[[pilot_data]]` to keep it in), `export` (a directory it is
//! copied to when the run ends, relative to this file's directory) and `allow_empty`
//! (default `false`: a pattern matching nothing fails the unit) are optional. A unit finds
//! each of its `input_data` under `$PSTAR_DATA/<name>/` in its sandbox.
//!
//! In a `[[data_unit]]` with `count = N`, `{i}` in `name` and `files` becomes `0` to
//! `N - 1`, with the same escapes as in units; a workload declares at most
//! [`MAX_DATA_UNITS`] data units, expanded when the file is read
//! ([`Workload::data_units`]). A data unit's `files` must be on the disk when the file is
//! [`load`]ed (`pstar check`, `pstar run`): a path that does not exist, or a pattern that
//! matches nothing, is refused at its entry.
//!
//! Data must flow: every data unit is made once, by one `[[data_unit]]` member or by one
//! unit's `output_data` (two members of an ensemble making one name is refused: put `{i}`
//! in it), and every `input_data` name of every member is made somewhere in the file, by a
//! `[[data_unit]]` or by a unit's `output_data` (in any table, before or after; the unit
//! then waits until it is made). A unit reading its own output is refused, and so are
//! units waiting for each other in a cycle. These checks expand the names of ensembles of
//! up to a million units in all, and compare larger ensembles' names as templates, so a
//! huge `count` stays cheap (cycles are only looked for when every name is expanded).
//!
//! A pilot store's `url` without a scheme is a directory, relative to this file's unless
//! absolute, and becomes a `file:///` URL (a relative directory whose name has a `:` is
//! written `./name`). A `url` carrying a password, a user name (`s3://`), a `?` query or
//! a `#` fragment is refused: SFTP uses SSH keys and `~/.ssh/config`, S3 credentials come
//! from the environment or a private file. `size` is in bytes, or with a unit: kB, MB, GB,
//! TB, PB are powers of 1000, KiB, MiB, GiB, TiB, PiB powers of 1024 (in any case).
//!
//! Relative paths (`working_directory` of pilots and units, `agent_binary`, a data unit's
//! `files`, an output's `export`, a pilot store given as a directory) are resolved here,
//! once, against the workload file's directory, into absolute paths: a unit starts in
//! the same directory whatever store and agent run it.
//!
//! Everything is checked before anything runs, and every mistake is reported with the
//! file, line and column of the offending key or value, followed by the source line:
//!
//! ```text
//! work.toml:7:9: `cores` must be at least 1
//!   |
//! 7 | cores = 0
//!   |         ^
//! ```
//!
//! Checked are: TOML syntax, unknown or misspelled keys (anywhere), values of the wrong
//! kind (said in plain words with what the key takes, one table for every key: `Takes`),
//! `[session]` durations outside their ranges
//! ([`pstar_model::settings::DURATION_RANGES`]), a `drain_margin` that is not shorter
//! than a pilot's walltime (at the key, naming the pilot), zero
//! `cores` or `count`, empty `executable`, a `walltime` or `time_request` that is not a
//! duration or is zero, a `resource` that does not parse or whose scheme this pstar cannot
//! place pilots on, duplicate pilot names (members of a counted pilot included),
//! `pilot = "x"` naming no pilot or a group of pilots, a unit needing more cores, GPUs or
//! run time than any pilot it may run on has, a file without any pilot or without any
//! unit, more than [`MAX_UNITS`] units, [`MAX_PILOTS`] pilots or [`MAX_DATA_UNITS`] data
//! units, Pilot-Data mistakes (a data unit or pilot store name that is not valid
//! ([`pstar_model::check_data_name`]) for some member, two pilot stores of one name, a
//! `url` or `size` that is not one, a `store` naming no `[[pilot_data]]`, empty `files`,
//! an output pattern reaching outside the sandbox, a data unit made twice, a unit naming a
//! data unit twice or reading its own output, an `input_data` name nothing makes, units
//! waiting for each other's output in a cycle), a data
//! unit's file that does not exist or pattern that matches nothing (by [`load`]), a
//! `[simulation]` value out of range (a `queue_wait` that is not a duration or a rising
//! range, a probability outside 0 to 1), every refusal of
//! [`ComputeUnitDescription::validate`] and [`PilotComputeDescription::validate`] (NUL
//! bytes, bad environment variable names, empty or shared `stdout`/`stderr`) for every
//! member of every ensemble, and every refusal of [`pstar_adaptors::check_pilot`] (what a
//! resource could never place, a non-local pilot without a networked store): everything
//! `pstar run` and the Pilot-API would refuse later.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pstar_model::{
    Affinity, ComputeUnitDescription, DataUnitDescription, DescriptionError, OnDependencyFailure,
    OutputData, PilotComputeDescription, PilotDataDescription, ResourceUrl, Scheme,
    check_data_name,
};
use serde::Deserialize;
use toml::Spanned;

mod deps;
mod sweep;

/// A parsed and checked workload file.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// The file the workload was read from.
    pub path: PathBuf,
    /// The `[session]` table.
    pub session: SessionSettings,
    /// The pilots, in file order; a `[[pilot]]` table with `count = N` gives `N` of them.
    pub pilots: Vec<PilotComputeDescription>,
    /// The `[[unit]]` tables, in file order, each kept as a template of `count` units.
    pub ensembles: Vec<Ensemble>,
    /// The `[simulation]` table, if the file has one (used by `pstar simulate` only).
    pub simulation: Option<Simulation>,
    /// The pilot stores (`[[pilot_data]]` tables), in file order, each `url` absolute
    /// (`file:///...`, `sftp://...` or `s3://...`).
    pub pilot_data: Vec<PilotDataDescription>,
    /// The data units (`[[data_unit]]` tables, `count`s expanded and `{i}` replaced), in
    /// file order, each of `files` absolute.
    pub data_units: Vec<DataUnitDescription>,
    /// Where `[session] agent_binary` is written, for [`load`]'s look at the file.
    agent_binary_at: Option<Range<usize>>,
    /// Where each of `data_units[k].files` is written, for [`load`]'s look at the disk.
    data_files_at: Vec<Vec<Range<usize>>>,
    /// The units' dependencies (`after`, and `input_data` made by other units), if any
    /// unit has an `after`.
    deps: Option<deps::Deps>,
}

/// The most units a workload may hold, over all its ensembles.
pub const MAX_UNITS: usize = 100_000_000;

/// The most pilots a workload may hold, over all its `[[pilot]]` tables and their `count`s.
pub const MAX_PILOTS: usize = 100_000;

/// The most data units a workload may declare, over all its `[[data_unit]]` tables and
/// their `count`s. They are expanded when the file is read (each is checked on the disk).
pub const MAX_DATA_UNITS: usize = 100_000;

impl Workload {
    /// How many units the workload holds, ensembles counted in full.
    pub fn unit_count(&self) -> usize {
        self.ensembles.iter().map(|e| e.count as usize).sum()
    }

    /// Every unit, in file order, each made when it is asked for.
    /// Whether the workload has pilot stores, data units, or units that read or make
    /// data.
    pub fn uses_data(&self) -> bool {
        !self.pilot_data.is_empty()
            || !self.data_units.is_empty()
            || self.ensembles.iter().any(|e| {
                let d = e.unit(0).description;
                !d.input_data.is_empty() || !d.output_data.is_empty()
            })
    }

    pub fn units(&self) -> Box<dyn Iterator<Item = WorkloadUnit> + Send + '_> {
        match &self.deps {
            None => Box::new(self.ensembles.iter().enumerate().flat_map(|(k, e)| {
                (0..e.count).map(move |i| WorkloadUnit {
                    ensemble: k,
                    ..e.unit(i)
                })
            })),
            // Each unit after what it depends on; `after` by position in this order.
            Some(deps) => Box::new((0..self.unit_count() as u64).map(move |position| {
                let (e, i) = deps.member_at(position);
                let mut unit = self.ensembles[e].unit(i);
                unit.after = deps.after(e, i);
                unit.ensemble = e;
                unit
            })),
        }
    }

    /// What `pstar check` warns about without refusing the file: an executable given as a
    /// path (a relative one is taken against the workload file's directory) that is not
    /// on this machine (pilots elsewhere may still have it).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (k, e) in self.ensembles.iter().enumerate() {
            if e.template.fixed.shell {
                continue;
            }
            let unit = e.unit(0).description;
            let exe = lexical(Path::new(&unit.executable));
            if unit.executable.contains('/') && !exe.exists() {
                warnings.push(format!(
                    "the executable of [[unit]] #{} ({}) is not on this machine: {} (a \
                     relative path is taken against the workload file's directory)",
                    k + 1,
                    unit.display_name(),
                    exe.display()
                ));
            }
        }
        warnings
    }

    /// The unit of the session that position `p` of a [`WorkloadUnit::after`] names,
    /// when it is past this file's units (a file read by [`load_more`]).
    pub fn session_unit(&self, p: u64) -> Option<pstar::UnitId> {
        self.deps.as_ref().and_then(|d| d.session_unit(p))
    }

    /// How many `after` dependencies the units have.
    pub fn dependencies(&self) -> u64 {
        self.deps.as_ref().map_or(0, |d| d.edges)
    }
}

/// One `[[unit]]` table: `count` units made from one template.
#[derive(Debug, Clone, PartialEq)]
pub struct Ensemble {
    template: UnitTemplate,
    /// How many units (at least 1).
    pub count: u32,
    /// Early binding: the index into [`Workload::pilots`] every member must run on.
    pub pilot: Option<usize>,
    /// A parameter sweep: the values of each member's `{name}`s.
    sweep: Option<std::sync::Arc<sweep::Sweep>>,
    /// Stop the ensemble once this many of its units have failed.
    pub max_fails: Option<u32>,
}

impl Ensemble {
    /// Member `i`: `{i}` replaced by `i` (and `{{`, `}}` by braces) in the name, arguments,
    /// environment values, output file names, working directory and pre-exec lines.
    pub fn unit(&self, i: u32) -> WorkloadUnit {
        let values = self.sweep.as_ref().map(|s| s.values(i)).unwrap_or_default();
        WorkloadUnit {
            description: self.template.member(i, &values),
            pilot: self.pilot,
            after: Vec::new(),
            ensemble: 0,
        }
    }
}

/// A unit description whose text fields may hold `{i}`.
#[derive(Debug, Clone, PartialEq)]
struct UnitTemplate {
    /// The fields that are not templates (the others are left empty here; the executable
    /// is there as written, for the checks).
    fixed: ComputeUnitDescription,
    /// A path with a `/` that is not absolute is joined to `base` once expanded (unless
    /// it is a shell command line); a bare name is looked up in `PATH`.
    executable: Template,
    name: Option<Template>,
    arguments: Vec<Template>,
    environment: Vec<(String, Template)>,
    /// As written; joined to `base` once expanded.
    working_directory: Option<Template>,
    /// The workload file's directory, absolute.
    base: PathBuf,
    stdout: Option<Template>,
    stderr: Option<Template>,
    pre_exec: Vec<Template>,
    post_exec: Vec<Template>,
    /// Names of the data units the unit reads.
    input_data: Vec<Template>,
    /// The data units the unit makes.
    output_data: Vec<OutputTemplate>,
}

/// One `output_data` entry of a unit, whose name, patterns and export may hold `{i}`.
#[derive(Debug, Clone, PartialEq)]
struct OutputTemplate {
    name: Template,
    files: Vec<Template>,
    store: Option<String>,
    /// As written; joined to the workload file's directory once expanded.
    export: Option<Template>,
    allow_empty: bool,
}

impl UnitTemplate {
    /// Member `i`, whose sweep parameters (if any) have `values`.
    fn member(&self, i: u32, values: &[String]) -> ComputeUnitDescription {
        let index = i.to_string();
        let expand = |t: &Template| t.expand_member(&index, values);
        let mut executable = expand(&self.executable);
        if !self.fixed.shell && executable.contains('/') && !executable.starts_with('/') {
            executable = self.base.join(&executable).display().to_string();
        }
        ComputeUnitDescription {
            executable,
            name: self.name.as_ref().map(expand),
            arguments: self.arguments.iter().map(expand).collect(),
            environment: self
                .environment
                .iter()
                .map(|(k, v)| (k.clone(), expand(v)))
                .collect(),
            working_directory: self
                .working_directory
                .as_ref()
                .map(|d| self.base.join(expand(d))),
            stdout: self.stdout.as_ref().map(expand),
            stderr: self.stderr.as_ref().map(expand),
            pre_exec: self.pre_exec.iter().map(expand).collect(),
            post_exec: self.post_exec.iter().map(expand).collect(),
            input_data: self.input_data.iter().map(expand).collect(),
            output_data: self
                .output_data
                .iter()
                .map(|o| OutputData {
                    name: expand(&o.name),
                    files: o.files.iter().map(expand).collect(),
                    store: o.store.clone(),
                    export: o.export.as_ref().map(|e| self.base.join(expand(e))),
                    allow_empty: o.allow_empty,
                    store_url: None,
                    store_quota: None,
                })
                .collect(),
            ..self.fixed.clone()
        }
    }

    /// The first member, from 1 on, whose `stdout` and `stderr` are one file, with that
    /// file's name. (Member 0 is checked with the others' refusals.)
    fn shared_output(&self, count: u32) -> Option<(u32, String)> {
        let default = |name: &str| Template::parse(name);
        let stdout = self.stdout.clone().unwrap_or_else(|| default("stdout"));
        let stderr = self.stderr.clone().unwrap_or_else(|| default("stderr"));
        let (stdout, stderr) = (stdout.lexical(), stderr.lexical());
        let i = Template::first_equal(&stdout, &stderr, 1, count)?;
        Some((i, stdout.expand(&i.to_string())))
    }
}

/// A text in which `{i}` stands for an ensemble member's index, `{{` for `{` and `}}`
/// for `}`; any other brace is itself.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Index,
    /// A sweep parameter, by its place in the sweep's names (see [`sweep::Sweep`]).
    Param(usize),
}

/// One character of an expanded template: a literal, or digit `k` of the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    Char(char),
    Digit(usize),
}

impl Template {
    fn parse(text: &str) -> Self {
        Self::parse_with(text, &[])
    }

    /// A template in which `{name}` stands for sweep parameter `name` too, for each of
    /// `params`.
    fn parse_with(text: &str, params: &[String]) -> Self {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        'next: while let Some(c) = rest.chars().next() {
            if c == '{' && !rest.starts_with("{{") {
                for (k, name) in params.iter().enumerate() {
                    if let Some(after) = rest[1..].strip_prefix(name.as_str())
                        && let Some(after) = after.strip_prefix('}')
                    {
                        if !literal.is_empty() {
                            pieces.push(Piece::Text(std::mem::take(&mut literal)));
                        }
                        pieces.push(Piece::Param(k));
                        rest = after;
                        continue 'next;
                    }
                }
            }
            if rest.starts_with("{{") {
                literal.push('{');
                rest = &rest[2..];
            } else if rest.starts_with("}}") {
                literal.push('}');
                rest = &rest[2..];
            } else if rest.starts_with("{i}") {
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Index);
                rest = &rest[3..];
            } else {
                literal.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Template(pieces)
    }

    /// `text` as it is, braces and all.
    fn literal(text: &str) -> Self {
        Template(vec![Piece::Text(text.to_owned())])
    }

    /// Whether `{i}` is in it: if so, no two members expand to the same text (their
    /// indices differ in a digit at the same place, or in length).
    fn has_index(&self) -> bool {
        self.0.contains(&Piece::Index)
    }

    /// Whether a sweep parameter is in it.
    fn has_param(&self) -> bool {
        self.0.iter().any(|p| matches!(p, Piece::Param(_)))
    }

    /// Whether it is the same for every member.
    fn is_fixed(&self) -> bool {
        !self.has_index() && !self.has_param()
    }

    fn expand(&self, index: &str) -> String {
        self.expand_member(index, &[])
    }

    /// Member `index`'s text, whose sweep parameters have `values`.
    fn expand_member(&self, index: &str, values: &[String]) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Index => out.push_str(index),
                Piece::Param(k) => out.push_str(values.get(*k).map_or("", String::as_str)),
            }
        }
        out
    }

    /// The same path template without `.` components, repeated or trailing slashes (so
    /// that its members are compared as `Path::components` would). An index never
    /// expands to `.` or `/`, so this commutes with expansion.
    fn lexical(&self) -> Template {
        // Split the pieces into path components at the slashes of their text.
        let mut components: Vec<Vec<Piece>> = vec![Vec::new()];
        for piece in &self.0 {
            match piece {
                Piece::Index | Piece::Param(_) => components
                    .last_mut()
                    .into_iter()
                    .for_each(|c| c.push(piece.clone())),
                Piece::Text(t) => {
                    for (k, part) in t.split('/').enumerate() {
                        if k > 0 {
                            components.push(Vec::new());
                        }
                        if !part.is_empty() {
                            components
                                .last_mut()
                                .into_iter()
                                .for_each(|c| c.push(Piece::Text(part.to_owned())));
                        }
                    }
                }
            }
        }
        let absolute = matches!(self.0.first(), Some(Piece::Text(t)) if t.starts_with('/'));
        let mut pieces = Vec::new();
        if absolute {
            pieces.push(Piece::Text("/".into()));
        }
        // `.` goes, and `x/..` goes with it (as the kernel would, but for links).
        let mut kept: Vec<Vec<Piece>> = Vec::new();
        for c in components {
            if c.is_empty() || c == [Piece::Text(".".into())] {
                continue;
            }
            let up = c == [Piece::Text("..".into())];
            match kept.last() {
                Some(last) if up && *last != [Piece::Text("..".into())] => {
                    kept.pop();
                }
                None if up && absolute => {}
                _ => kept.push(c),
            }
        }
        for (k, component) in kept.into_iter().enumerate() {
            if k > 0 {
                pieces.push(Piece::Text("/".into()));
            }
            pieces.extend(component);
        }
        // Merge neighbouring texts, so that equal templates compare equal.
        let mut merged: Vec<Piece> = Vec::new();
        for piece in pieces {
            match (merged.last_mut(), piece) {
                (Some(Piece::Text(a)), Piece::Text(b)) => a.push_str(&b),
                (_, piece) => merged.push(piece),
            }
        }
        Template(merged)
    }

    /// The characters of a member whose index has `digits` digits.
    fn cells(&self, digits: usize) -> Vec<Cell> {
        self.cells_from(digits, 0)
    }

    /// The characters of a member whose index has `digits` digits, numbered from `first`.
    fn cells_from(&self, digits: usize, first: usize) -> Vec<Cell> {
        let mut cells = Vec::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => cells.extend(t.chars().map(Cell::Char)),
                Piece::Index => cells.extend((first..first + digits).map(Cell::Digit)),
                // Sweep parameters are not in the names these compare (refused there).
                Piece::Param(_) => cells.push(Cell::Char('\u{fffd}')),
            }
        }
        cells
    }

    /// Indices `(i, j)`, `i < na` and `j < nb`, at which `a` and `b` expand to the same
    /// text, found without expanding them: for each pair of index lengths the characters
    /// are matched up as in [`Template::first_equal`], with the digits of `i` and `j` told
    /// apart; each class of tied digits then takes its smallest value (at least 1 when it
    /// holds a leading digit), which makes both indices as small as they can be at once.
    fn meet(a: &Template, na: u32, b: &Template, nb: u32) -> Option<(u32, u32)> {
        let width = |n: u32| n.checked_sub(1).map(|last| last.to_string().len());
        let (wa, wb) = (width(na)?, width(nb)?);
        for da in 1..=wa {
            for db in 1..=wb {
                let (x, y) = (a.cells_from(da, 0), b.cells_from(db, da));
                if x.len() != y.len() {
                    continue;
                }
                let Some(mut ties) = Ties::between(&x, &y, da + db) else {
                    continue;
                };
                let roots: Vec<usize> = (0..da + db).map(|k| ties.root(k)).collect();
                let leading = |k: usize| (k == 0 && da > 1) || (k == da && db > 1);
                let mut least = vec![0; da + db];
                for k in (0..da + db).filter(|k| leading(*k)) {
                    least[roots[k]] = 1;
                }
                let digit = |k: usize| ties.value[roots[k]].unwrap_or(least[roots[k]]);
                if (0..da + db).any(|k| leading(k) && digit(k) == 0) {
                    continue;
                }
                let number = |ks: Range<usize>| ks.fold(0u64, |n, k| n * 10 + u64::from(digit(k)));
                let (i, j) = (number(0..da), number(da..da + db));
                if i < u64::from(na) && j < u64::from(nb) {
                    return Some((u32::try_from(i).ok()?, u32::try_from(j).ok()?));
                }
            }
        }
        None
    }

    /// The smallest index in `from..count` at which `a` and `b` expand to the same text,
    /// found without expanding them for every index: for each number of digits, the
    /// characters of both members are matched up, which ties digits of the index to
    /// fixed values or to each other; the smallest index within range that meets those
    /// ties is then built digit by digit.
    fn first_equal(a: &Template, b: &Template, from: u32, count: u32) -> Option<u32> {
        let last = u64::from(count).checked_sub(1)?;
        for digits in 1..=10usize {
            let smallest = if digits == 1 {
                0
            } else {
                10u64.pow(digits as u32 - 1)
            };
            let lo = smallest.max(u64::from(from));
            let hi = (10u64.pow(digits as u32) - 1).min(last);
            if lo > hi {
                if smallest > last {
                    break;
                }
                continue;
            }
            let (x, y) = (a.cells(digits), b.cells(digits));
            if x.len() != y.len() {
                continue;
            }
            let Some(ties) = Ties::between(&x, &y, digits) else {
                continue;
            };
            if let Some(n) = ties.smallest_from(lo, digits).filter(|n| *n <= hi) {
                return u32::try_from(n).ok();
            }
        }
        None
    }
}

/// What matching two members' characters asks of the index's digits: digit `k` belongs to
/// class `class[k]` (digits of one class are equal), and a class may have a fixed value.
struct Ties {
    class: Vec<usize>,
    value: Vec<Option<u32>>,
}

impl Ties {
    fn between(x: &[Cell], y: &[Cell], digits: usize) -> Option<Ties> {
        let mut t = Ties {
            class: (0..digits).collect(),
            value: vec![None; digits],
        };
        for (p, q) in x.iter().zip(y) {
            match (*p, *q) {
                (Cell::Char(c), Cell::Char(e)) => {
                    if c != e {
                        return None;
                    }
                }
                (Cell::Char(c), Cell::Digit(k)) | (Cell::Digit(k), Cell::Char(c)) => {
                    let v = c.to_digit(10)?;
                    let r = t.root(k);
                    match t.value[r] {
                        Some(w) if w != v => return None,
                        _ => t.value[r] = Some(v),
                    }
                }
                (Cell::Digit(j), Cell::Digit(k)) => {
                    let (rj, rk) = (t.root(j), t.root(k));
                    if rj != rk {
                        match (t.value[rj], t.value[rk]) {
                            (Some(v), Some(w)) if v != w => return None,
                            (v, w) => t.value[rk] = v.or(w),
                        }
                        t.class[rj] = rk;
                    }
                }
            }
        }
        Some(t)
    }

    fn root(&mut self, mut k: usize) -> usize {
        while self.class[k] != k {
            k = self.class[k];
        }
        k
    }

    /// The smallest number of `digits` digits, at least `lo`, that meets the ties.
    fn smallest_from(mut self, lo: u64, digits: usize) -> Option<u64> {
        let lo_digits: Vec<u32> = format!("{lo:0digits$}")
            .chars()
            .filter_map(|c| c.to_digit(10))
            .collect();
        let roots: Vec<usize> = (0..digits).map(|k| self.root(k)).collect();
        let mut chosen = Vec::with_capacity(digits);
        fn go(
            k: usize,
            tight: bool,
            roots: &[usize],
            lo: &[u32],
            value: &mut [Option<u32>],
            chosen: &mut Vec<u32>,
        ) -> bool {
            if k == roots.len() {
                return true;
            }
            let r = roots[k];
            let choices = match value[r] {
                Some(v) => v..=v,
                None => 0..=9,
            };
            for v in choices {
                if tight && v < lo[k] {
                    continue;
                }
                let before = value[r];
                value[r] = Some(v);
                chosen.push(v);
                if go(k + 1, tight && v == lo[k], roots, lo, value, chosen) {
                    return true;
                }
                chosen.pop();
                value[r] = before;
            }
            false
        }
        if !go(0, true, &roots, &lo_digits, &mut self.value, &mut chosen) {
            return None;
        }
        Some(chosen.iter().fold(0u64, |n, d| n * 10 + u64::from(*d)))
    }
}

/// The `[session]` table of a workload file: its layer of the run's settings, above the
/// built-in defaults and below the environment and the command line. Each setting it sets
/// remembers the file and line of its key; `agent_binary` is resolved against the file's
/// directory.
pub type SessionSettings = pstar::SettingsLayer;

/// The `[simulation]` table: how `pstar simulate` plays the workload on a virtual clock.
/// `pstar run` checks it and leaves it aside.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulation {
    /// How long each pilot waits in its batch queue before it runs.
    pub queue_wait: QueueWait,
    /// The seed of every random draw (queue waits, failures, losses): one seed, one run.
    pub seed: u64,
    /// The probability, from 0 to 1, that a pilot fails instead of running.
    pub pilot_failure: f64,
    /// The probability, from 0 to 1, that a running pilot's agent is lost before the
    /// pilot's walltime is over.
    pub agent_loss: f64,
    /// How long a unit without a `time_request` runs.
    pub unit_time: Duration,
}

impl Default for Simulation {
    /// No queue wait, seed 0, no failures or losses, units without `time_request` done at
    /// once.
    fn default() -> Self {
        Self {
            queue_wait: QueueWait::Fixed(Duration::ZERO),
            seed: 0,
            pilot_failure: 0.0,
            agent_loss: 0.0,
            unit_time: Duration::ZERO,
        }
    }
}

/// How long a simulated pilot waits in its queue: `queue_wait = "5m"` or `"1m..10m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueWait {
    /// Every pilot waits this long.
    Fixed(Duration),
    /// Each pilot waits a time drawn uniformly from `min` to `max` (`min <= max`).
    Uniform { min: Duration, max: Duration },
}

impl QueueWait {
    /// The wait at `fraction` of the way from the shortest wait to the longest: a uniform
    /// draw in `0..1` gives a uniform wait. A fraction outside 0 to 1 is taken as the
    /// nearest end, NaN as 0.
    pub fn at(&self, fraction: f64) -> Duration {
        match *self {
            QueueWait::Fixed(d) => d,
            QueueWait::Uniform { min, max } => {
                let fraction = if fraction.is_nan() {
                    0.0
                } else {
                    fraction.clamp(0.0, 1.0)
                };
                // Rounding may step past `max` (or past what a `Duration` holds).
                Duration::try_from_secs_f64((max - min).as_secs_f64() * fraction)
                    .ok()
                    .and_then(|d| min.checked_add(d))
                    .map_or(max, |d| d.min(max))
            }
        }
    }
}

/// One compute unit of a [`Workload`].
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadUnit {
    /// What to run. `description.pilot` is always `None`: pilot ids only exist once the
    /// pilots are submitted, so early binding is expressed by [`WorkloadUnit::pilot`].
    pub description: ComputeUnitDescription,
    /// Early binding: the index into [`Workload::pilots`] of the pilot this unit must run on.
    pub pilot: Option<usize>,
    /// The units it runs after, by their place in the order [`Workload::units`] gives
    /// (always before this one's): unit ids only exist once units are submitted.
    pub after: Vec<u64>,
    /// The index of its `[[unit]]` table in [`Workload::ensembles`].
    pub ensemble: usize,
}

/// Why a workload file was refused: where, and what is wrong.
///
/// Its [`Display`](fmt::Display) is `path:line:column: message`, then the offending source
/// line with a caret under the column; without a location (an unreadable file) it is
/// `path: message`.
#[derive(Debug)]
pub struct WorkloadError {
    path: PathBuf,
    location: Option<Location>,
    message: String,
    source: Option<io::Error>,
}

/// Where in the file a [`WorkloadError`] points, with what to show there.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Location {
    /// 1-based line.
    line: usize,
    /// 1-based column, in characters.
    column: usize,
    /// The text of the line, without its line ending.
    source_line: String,
    /// How many characters of the line to underline (at least 1).
    width: usize,
}

impl WorkloadError {
    /// The workload file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The 1-based line of the mistake, if it has a place in the file.
    pub fn line(&self) -> Option<usize> {
        self.location.as_ref().map(|l| l.line)
    }

    /// The 1-based column (in characters) of the mistake, if it has a place in the file.
    pub fn column(&self) -> Option<usize> {
        self.location.as_ref().map(|l| l.column)
    }

    /// What is wrong, without the location.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for WorkloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.path.display())?;
        let Some(loc) = &self.location else {
            return write!(f, " {}", self.message);
        };
        write!(f, "{}:{}: {}", loc.line, loc.column, self.message)?;
        let gutter = " ".repeat(loc.line.to_string().len());
        // Keep tabs so the caret lines up however wide the terminal draws them.
        let pad: String = loc
            .source_line
            .chars()
            .take(loc.column - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let src = if loc.source_line.is_empty() {
            String::new()
        } else {
            format!(" {}", loc.source_line)
        };
        write!(
            f,
            "\n{gutter} |\n{line} |{src}\n{gutter} | {pad}{carets}",
            line = loc.line,
            carets = "^".repeat(loc.width),
        )
    }
}

impl std::error::Error for WorkloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// Reads and checks the workload file at `path`; pilots may only use `supported` schemes.
/// `networked_store`: a networked coordination store is given outside the file
/// (`--coordination`, `PSTAR_COORDINATION`); the file's `[session] coordination` counts too.
pub fn load(
    path: &Path,
    supported: &[Scheme],
    networked_store: bool,
) -> Result<Workload, WorkloadError> {
    load_with(path, supported, networked_store, &More::default())
}

/// A unit already in a session, that the `after` of units added to it (`pstar submit`)
/// may name.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownUnit {
    pub id: pstar::UnitId,
    pub name: String,
    pub tags: Vec<String>,
}

/// How a workload file is read: on its own (`pstar run`, `pstar check`), or as more work
/// for a session (`pstar submit`).
#[derive(Debug, Clone, Default)]
pub struct More {
    /// It adds to a session: it may have no `[[pilot]]`, it may not bind units early
    /// (the session's pilots have no names in it) nor use Pilot-Data, and its `after`
    /// entries may name these units of the session.
    pub session_units: Option<Vec<KnownUnit>>,
    /// The session's pilots, which its units may run on as well as the file's.
    pub session_pilots: Vec<PilotComputeDescription>,
}

/// [`load`] a file that adds to a session (`pstar submit`).
pub fn load_more(
    path: &Path,
    supported: &[Scheme],
    session_units: Vec<KnownUnit>,
    session_pilots: Vec<PilotComputeDescription>,
) -> Result<Workload, WorkloadError> {
    load_with(
        path,
        supported,
        true,
        &More {
            session_units: Some(session_units),
            session_pilots,
        },
    )
}

fn load_with(
    path: &Path,
    supported: &[Scheme],
    networked_store: bool,
    more: &More,
) -> Result<Workload, WorkloadError> {
    let text = std::fs::read_to_string(path).map_err(|e| WorkloadError {
        path: path.to_owned(),
        location: None,
        message: format!("cannot read workload file: {e}"),
        source: Some(e),
    })?;
    let workload = parse_with(path, &text, supported, networked_store, more)?;
    let src = Source { path, text: &text };
    // The checks that look at the disk: the agents' program must be there, and so must
    // the files of the data units (a run would fail on them).
    if let (Some(program), Some(span)) = (&workload.session.agent_binary, &workload.agent_binary_at)
    {
        use std::os::unix::fs::PermissionsExt;
        let runnable = std::fs::metadata(program)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !runnable {
            return Err(src.error(
                span.clone(),
                format!(
                    "`agent_binary` {} is not a program pstar can run",
                    program.display()
                ),
            ));
        }
    }
    // What each store will hold, against its quota, as the run would place it.
    let mut placed: HashMap<&str, u64> = HashMap::new();
    for (unit, spans) in workload.data_units.iter().zip(&workload.data_files_at) {
        for (file, span) in unit.files.iter().zip(spans) {
            let missing = if is_pattern(file) {
                (!matches_any(file)).then_some("matches no file")
            } else {
                (!file.exists()).then_some("does not exist")
            };
            if let Some(missing) = missing {
                return Err(src.error(
                    span.clone(),
                    format!("data unit `{}`: {} {missing}", unit.name, file.display()),
                ));
            }
        }
        // The files as `pstar run` takes them (the same expansion), for the quota.
        let Some(store) = unit
            .store
            .as_deref()
            .or(workload.pilot_data.first().map(|s| s.name.as_str()))
        else {
            continue;
        };
        let Some(quota) = workload
            .pilot_data
            .iter()
            .find(|s| s.name == store)
            .and_then(|s| s.size)
        else {
            continue;
        };
        let at = spans.first().cloned().unwrap_or(0..0);
        let files = pstar_data::expand_files(Path::new("."), &unit.files)
            .map_err(|e| src.error(at.clone(), format!("data unit `{}`: {e}", unit.name)))?;
        let size: u64 = files
            .iter()
            .filter_map(|(f, _)| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        let total = placed.entry(store).or_default();
        *total += size;
        if *total > quota {
            return Err(src.error(
                at,
                format!(
                    "data unit `{}`: pilot store `{store}` would hold {} bytes of data units \
                     by now, more than its size of {quota} bytes",
                    unit.name, *total
                ),
            ));
        }
    }
    Ok(workload)
}

/// Whether `url` can name a coordination store: a `redis://` or `rediss://` URL (the
/// `[session] coordination` key and `--coordination` alike).
pub fn is_store_url(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "redis" | "rediss"))
}

/// Checks the workload `text`, read from `path`; pilots may only use `supported` schemes.
///
/// `path` names the file in errors, and relative working directories are taken relative
/// to its directory (made absolute against the current directory). `networked_store` as
/// for [`load`].
pub fn parse(
    path: &Path,
    text: &str,
    supported: &[Scheme],
    networked_store: bool,
) -> Result<Workload, WorkloadError> {
    parse_with(path, text, supported, networked_store, &More::default())
}

/// [`parse`], as `more` says.
pub fn parse_with(
    path: &Path,
    text: &str,
    supported: &[Scheme],
    networked_store: bool,
    more: &More,
) -> Result<Workload, WorkloadError> {
    let src = Source { path, text };
    let raw: RawWorkload = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        // Syntax errors come as "what\nexpected ..."; keep the header on one line.
        let message: Vec<&str> = e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let message = message.join(": ");
        let message = src.plain_words(&message, span.clone()).unwrap_or(message);
        src.error(span, message)
    })?;
    // Absolute once and for all: agents may run elsewhere, in other directories.
    let base = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_owned))
        .unwrap_or_else(|| path.parent().unwrap_or(Path::new("")).to_owned());
    let base = base.as_path();

    if more.session_units.is_some() {
        let data = raw
            .pilot_data
            .first()
            .map(Spanned::span)
            .or_else(|| raw.data_unit.first().map(Spanned::span));
        if let Some(span) = data {
            return Err(src.error(
                span,
                "`pstar submit` adds compute units and pilots; Pilot-Data tables are only \
                 read by `pstar run`",
            ));
        }
    }
    if raw.pilot.is_empty() && more.session_units.is_none() {
        return Err(src.error(
            0..0,
            "no [[pilot]] declared: a workload needs at least one pilot",
        ));
    }
    let agent_binary_at = raw
        .session
        .as_ref()
        .and_then(|s| s.0.agent_binary.as_ref())
        .map(Spanned::span);
    let drain_margin_at = raw
        .session
        .as_ref()
        .and_then(|s| s.0.drain_margin.as_ref())
        .map(Spanned::span);
    let session = match raw.session {
        Some(s) => s.0.check(&src, base)?,
        None => SessionSettings::default(),
    };
    let simulation = raw.simulation.map(|s| s.0.check(&src)).transpose()?;
    let networked_store = networked_store || session.coordination.is_some();
    let mut pilots = Pilots::default();
    // Units added to a session must fit its pilots or the file's: the session's come
    // first, unnamed, and are not the file's.
    for p in &more.session_pilots {
        pilots.add(
            PilotComputeDescription {
                name: None,
                ..p.clone()
            },
            1,
            0,
        );
    }
    let session_pilots = more.session_pilots.len();
    for pilot in raw.pilot {
        let table_span = pilot.span();
        let mut pilot = pilot.into_inner();
        let count_span = pilot
            .count
            .as_ref()
            .map_or(table_span.clone(), Spanned::span);
        let count = at_least_one(&src, pilot.count.take(), "count", 1)?;
        let total = pilots.all.len().saturating_add(count as usize);
        if total > MAX_PILOTS {
            return Err(src.error(
                count_span,
                format!(
                    "a workload holds at most {MAX_PILOTS} pilots; this `count` brings it to \
                     {total}"
                ),
            ));
        }
        let line = match &pilot.name {
            Some(name) => pilots.claim(&src, name, count)?,
            None => 0,
        };
        let (description, keys) = pilot.check(&src, base, supported)?;
        // A pilot whose agent would drain from the start never runs a unit.
        if let (Some(margin), Some(span)) = (session.drain_margin, &drain_margin_at) {
            let table_line = src.locate(table_span.clone()).line;
            let pilot = match &description.name {
                Some(name) => format!("pilot `{name}` (line {table_line})"),
                None => format!("the [[pilot]] at line {table_line}"),
            };
            pstar_model::settings::check_drain_margin(margin, description.walltime, pilot)
                .map_err(|e| src.error(span.clone(), e.to_string()))?;
        }
        // The members differ in their names only, which the checks find no fault with
        // if they find none with the table's: one check stands for all of them.
        description
            .validate()
            .map_err(|e| src.error(keys.of(&e.fields(), table_span.clone()), e.to_string()))?;
        pstar_adaptors::check_pilot(&description, networked_store).map_err(|e| {
            let message = match e {
                pstar_adaptors::AdaptorError::NeedsNetworkedStore { .. } => {
                    format!("{e}: {}", crate::settings::STORE_ADVICE)
                }
                e => e.to_string(),
            };
            src.error(table_span.clone(), message)
        })?;
        pilots.add(description, count, line);
    }

    let mut stores = Stores::default();
    let mut pilot_data = Vec::new();
    for store in raw.pilot_data {
        pilot_data.push(store.into_inner().check(&src, base, &mut stores)?);
    }

    // Data units are few (at most `MAX_DATA_UNITS`): expanded here, once.
    let mut data_tables = Vec::new();
    let mut data_units = Vec::new();
    let mut data_files_at = Vec::new();
    for table in raw.data_unit {
        let table_span = table.span();
        let table = table.into_inner().check(&src, &stores, table_span)?;
        let total = data_units.len().saturating_add(table.count as usize);
        if total > MAX_DATA_UNITS {
            return Err(src.error(
                table.count_span.clone(),
                format!(
                    "a workload declares at most {MAX_DATA_UNITS} data units; this `count` \
                     brings it to {total}"
                ),
            ));
        }
        data_units.reserve(table.count as usize);
        for i in 0..table.count {
            let index = i.to_string();
            data_units.push(DataUnitDescription {
                name: table.name.expand(&index),
                files: table
                    .files
                    .iter()
                    .map(|(f, _)| base.join(f.expand(&index)))
                    .collect(),
                store: table.store.clone(),
            });
            data_files_at.push(table.files.iter().map(|(_, span)| span.clone()).collect());
        }
        data_tables.push(table);
    }

    if raw.unit.is_empty() {
        return Err(src.error(
            0..0,
            "no [[unit]] declared: a workload needs at least one unit",
        ));
    }
    let mut ensembles = Vec::new();
    let mut afters = Vec::new();
    let mut unit_data = Vec::new();
    let mut total: usize = 0;
    for unit in raw.unit {
        let table_span = unit.span();
        let unit = unit.into_inner();
        if more.session_units.is_some()
            && let Some(pilot) = &unit.pilot
        {
            return Err(src.error(
                pilot.span(),
                "`pstar submit` cannot bind units to a pilot by name yet: leave `pilot` out \
                 and the units run on any of the session's pilots (or the file's)",
            ));
        }
        let CheckedUnit {
            template,
            pilot,
            count,
            count_span,
            keys,
            data,
            sweep,
            after,
            max_fails,
        } = unit.check(&src, base, &pilots, &stores, table_span.clone())?;
        total = total.saturating_add(count as usize);
        if total > MAX_UNITS {
            return Err(src.error(
                count_span,
                format!(
                    "a workload holds at most {MAX_UNITS} units; this `count` brings it to \
                     {total}"
                ),
            ));
        }
        // Every member is refused where one would be: substituting the index only puts
        // digits where `{i}` was and one brace where two were, so a NUL byte, an empty
        // `stdout`/`stderr`, a bad environment variable name (names are not templates) or
        // a field that is too small is in every member if it is in member 0. Only whether
        // `stdout` and `stderr` are one file can change with the index: that is solved
        // for the whole ensemble at once.
        // A data unit name is checked at both ends: the last member's is the longest.
        // A sweep's values are any text: each of its members is checked.
        let last = (!data.is_empty() && count > 1).then_some(count - 1);
        let members: Box<dyn Iterator<Item = u32>> = match &sweep {
            Some(_) => Box::new(0..count),
            None => Box::new(std::iter::once(0).chain(last)),
        };
        for i in members {
            let values = sweep.as_ref().map(|s| s.values(i)).unwrap_or_default();
            let member = template.member(i, &values);
            member.validate().map_err(|e| {
                let whose = match (&sweep, count > 1) {
                    (Some(_), true) => format!("member {i}: "),
                    _ => String::new(),
                };
                src.error(
                    keys.of(&e.fields(), table_span.clone()),
                    format!("{whose}{e}"),
                )
            })?;
            if sweep.is_some() {
                let (out, err) = (member.stdout_path(base), member.stderr_path(base));
                if lexical(&out) == lexical(&err) {
                    return Err(src.error(
                        keys.of(&["stderr", "stdout"], table_span),
                        format!(
                            "member {i}: `stdout` and `stderr` name the same file `{}`: give \
                             them different names",
                            member.stdout.as_deref().unwrap_or("stdout").escape_debug()
                        ),
                    ));
                }
            }
        }
        let shared = match sweep {
            None => template.shared_output(count),
            Some(_) => None,
        };
        if let Some((i, file)) = shared {
            return Err(src.error(
                keys.of(&["stderr", "stdout"], table_span),
                format!(
                    "member {i}: `stdout` and `stderr` name the same file `{}`: give them \
                     different names",
                    file.escape_debug()
                ),
            ));
        }
        ensembles.push(Ensemble {
            template,
            count,
            pilot,
            sweep,
            max_fails,
        });
        afters.push((after, table_span.clone()));
        if !data.is_empty() {
            unit_data.push((count, data));
        }
    }
    if more.session_units.is_some() {
        // Units added to a session bind to no pilot by name, and move no data.
        for (e, (_, table)) in ensembles.iter().zip(&afters) {
            let d = e.unit(0).description;
            let why = if e.pilot.is_some() {
                Some("binds to a pilot by name (`pilot`)")
            } else if !d.input_data.is_empty() || !d.output_data.is_empty() {
                Some("reads or makes data units")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(src.error(
                    table.clone(),
                    format!("this [[unit]] {why}: `pstar submit` cannot add such units yet"),
                ));
            }
        }
    }
    check_data_flow(&src, &data_tables, &unit_data)?;
    let known = more.session_units.as_deref().unwrap_or_default();
    let deps = deps::resolve(&src, &ensembles, afters, known)?;

    Ok(Workload {
        deps,
        path: path.to_owned(),
        session,
        pilots: pilots.all.split_off(session_pilots),
        ensembles,
        simulation,
        pilot_data,
        data_units,
        agent_binary_at,
        data_files_at,
    })
}

/// The workload's pilots as they are checked, with what their names stand for.
#[derive(Default)]
struct Pilots {
    /// Every pilot, `count`s expanded, in file order.
    all: Vec<PilotComputeDescription>,
    /// The `[[pilot]]` tables, in file order.
    tables: Vec<PilotTable>,
    /// Every name a unit's `pilot` may give, and the name of every table of more than one
    /// pilot (kept so that no pilot takes it).
    names: HashMap<String, Named>,
}

/// One `[[pilot]]` table: `count` pilots from `all[start]` on.
struct PilotTable {
    start: usize,
    count: u32,
    /// Its `name`; its pilots are named `name-1` to `name-N` when `count` is more than 1.
    name: Option<String>,
    /// The line its `name` is written on (0 without a name).
    line: usize,
}

impl PilotTable {
    /// `` `w` `` for one pilot, `` `w-1` to `w-3` `` for more.
    fn names(&self) -> Option<String> {
        let name = self.name.as_ref()?;
        Some(if self.count == 1 {
            format!("`{name}`")
        } else {
            format!("`{name}-1` to `{name}-{}`", self.count)
        })
    }
}

/// What a pilot name stands for, and the index of the table that declares it.
#[derive(Clone, Copy)]
enum Named {
    /// The pilot `all[index]`.
    Pilot { index: usize, table: usize },
    /// All the pilots of a table with `count` more than 1, which no unit can bind to.
    Group { table: usize },
}

impl Pilots {
    /// Claims the names of the next table, named `name` with `count` pilots: its name, and
    /// its members' names when it has more than one; returns the line of `name`. Each
    /// name is looked up once, so the claims cost time in proportion to the number of
    /// pilots.
    fn claim(
        &mut self,
        src: &Source<'_>,
        name: &Spanned<String>,
        count: u32,
    ) -> Result<usize, WorkloadError> {
        let table = self.tables.len();
        let start = self.all.len();
        let base = name.get_ref();
        if let Some(first) = self.names.get(base) {
            return Err(src.error(
                name.span(),
                format!(
                    "a pilot named `{base}` is already declared on {}",
                    self.about(*first)
                ),
            ));
        }
        if count == 1 {
            self.names.insert(
                base.clone(),
                Named::Pilot {
                    index: start,
                    table,
                },
            );
            return Ok(src.locate(name.span()).line);
        }
        self.names.insert(base.clone(), Named::Group { table });
        self.names.reserve(count as usize);
        for k in 1..=count {
            let member = format!("{base}-{k}");
            if let Some(first) = self.names.get(&member) {
                return Err(src.error(
                    name.span(),
                    format!(
                        "`count = {count}` names these pilots `{base}-1` to `{base}-{count}`, \
                         but a pilot named `{member}` is already declared on {}",
                        self.about(*first)
                    ),
                ));
            }
            let index = start + (k - 1) as usize;
            self.names.insert(member, Named::Pilot { index, table });
        }
        Ok(src.locate(name.span()).line)
    }

    /// Where a name was declared, and for a group's name or member, which pilots it is
    /// part of: `line 2`, `line 2 (the 3 pilots `w-1` to `w-3`)`.
    fn about(&self, named: Named) -> String {
        let (table, group) = match named {
            Named::Pilot { table, .. } => (table, false),
            Named::Group { table } => (table, true),
        };
        let Some(t) = self.tables.get(table) else {
            return "an earlier line".to_owned();
        };
        let line = t.line;
        match (t.count, t.names()) {
            (1, _) | (_, None) => format!("line {line}"),
            (n, Some(names)) if group => format!("line {line} (the {n} pilots {names})"),
            (n, Some(names)) => format!("line {line} (one of the {n} pilots {names})"),
        }
    }

    /// Adds a checked table of `count` pilots like `description` (whose name, if any, is
    /// the table's, written on `line`); with a name and more than one pilot, the members
    /// are named `name-1` to `name-N`.
    fn add(&mut self, description: PilotComputeDescription, count: u32, line: usize) {
        self.all.reserve(count as usize);
        let start = self.all.len();
        let name = description.name.clone();
        if count == 1 {
            self.all.push(description);
        } else {
            for k in 1..=count {
                let mut member = description.clone();
                member.name = name.as_ref().map(|n| format!("{n}-{k}"));
                self.all.push(member);
            }
        }
        self.tables.push(PilotTable {
            start,
            count,
            name,
            line,
        });
    }
}

/// The text being parsed, to turn byte spans into located errors.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    /// An error pointing at the bytes `span` of the text.
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> WorkloadError {
        let mut location = self.locate(span);
        // Whatever the mistake, a password written in a URL on its line is not shown.
        location.source_line = mask_passwords(&location.source_line);
        WorkloadError {
            path: self.path.to_owned(),
            location: Some(location),
            message: message.into(),
            source: None,
        }
    }

    /// `message`, a value of the wrong kind as serde says it (`invalid type: integer
    /// `3600`, expected a string`), in plain words: what the key at `span` takes, and the
    /// value as written. `None` for any other message, or a key it cannot tell.
    fn plain_words(&self, message: &str, span: Range<usize>) -> Option<String> {
        let expected = message
            .strip_prefix("invalid type: ")
            .or_else(|| message.strip_prefix("invalid value: "))?
            .rsplit_once(", expected ")?
            .1;
        let start = span.start.min(self.text.len());
        let end = span.end.clamp(start, self.text.len());
        let written = self.text.get(start..end)?.lines().next()?.trim();
        // The key is the name before the `=` that starts the value, on its line.
        let before = self.text.get(..start)?;
        let line = &before[before.rfind('\n').map_or(0, |n| n + 1)..];
        let key = line.rsplit_once('=')?.0.trim();
        let key = key
            .rsplit(['{', ',', '.'])
            .next()?
            .trim()
            .trim_matches(['"', '\'']);
        let takes = match Takes::of(key) {
            Some(takes) => takes.words(written),
            None => Takes::from_serde(expected)?.to_owned(),
        };
        Some(format!("`{key}` must be {takes}, not {written}"))
    }

    /// Line, column and source line of the start of `span`.
    fn locate(&self, span: Range<usize>) -> Location {
        let text = self.text;
        let mut start = span.start.min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let line_start = text[..start].rfind('\n').map_or(0, |n| n + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |n| start + n);
        let line = text[..start].matches('\n').count() + 1;
        let column = text[line_start..start].chars().count() + 1;
        let mut end = span.end.clamp(start, line_end);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let width = text[start..end].chars().count().max(1);
        Location {
            line,
            column,
            source_line: text[line_start..line_end].trim_end_matches('\r').to_owned(),
            width,
        }
    }
}

/// What a key of a workload file takes, in the words its errors use.
enum Takes {
    /// A whole number from `least` up to `most`.
    Whole { least: u64, most: u64 },
    /// Anything else, said once.
    Words(&'static str),
}

impl Takes {
    /// What key `key` (of any table) takes; `None` for a key it does not know.
    fn of(key: &str) -> Option<Takes> {
        let u32_from = |least| Takes::Whole {
            least,
            most: u64::from(u32::MAX),
        };
        Some(match key {
            "count" | "cores" | "nodes" | "ranks" | "max_attempts" => u32_from(1),
            "gpus" | "prefetch" | "black_hole_failures" => u32_from(0),
            "seed" => Takes::Whole {
                least: 0,
                most: u64::MAX,
            },
            "walltime" | "time_request" | "timeout" => {
                Takes::Words("a duration in quotes such as \"1h\" or \"01:00:00\"")
            }
            "heartbeat_timeout"
            | "agent_start_timeout"
            | "poll_interval"
            | "locality_wait"
            | "keep"
            | "drain_margin"
            | "unit_time" => Takes::Words("a duration in quotes such as \"30s\""),
            "queue_wait" => {
                Takes::Words("a duration in quotes such as \"5m\", or a range such as \"1m..10m\"")
            }
            "pilot_failure" | "agent_loss" => Takes::Words("a number from 0 to 1 (10 % is 0.1)"),
            "shell" | "mpi" | "tunnel" | "allow_empty" => Takes::Words("true or false"),
            "arguments" | "pre_exec" | "post_exec" | "tags" | "scheduler_options" => {
                Takes::Words("a list of strings in quotes such as [\"-v\", \"x\"]")
            }
            "input_data" => Takes::Words(
                "a list of data unit names in quotes such as [\"reference\", \"reads-{i}\"]",
            ),
            "output_data" => Takes::Words(
                "a list of tables such as [{ name = \"out-{i}\", files = [\"*.out\"] }]",
            ),
            "files" => {
                Takes::Words("a list of paths or patterns in quotes such as [\"data/*.fa\"]")
            }
            "size" | "cache" => Takes::Words(SIZE_WORDS),
            "environment" => {
                Takes::Words("a table of names and texts such as { OMP_NUM_THREADS = \"4\" }")
            }
            "affinity" => Takes::Words("a table such as { datacenter = \"dc1\" }"),
            "name" | "executable" | "resource" | "queue" | "project" | "reservation"
            | "working_directory" | "stdout" | "stderr" | "pilot" | "coordination"
            | "agent_binary" | "datacenter" | "machine" | "url" | "store" | "export" => {
                Takes::Words("text in quotes")
            }
            _ => return None,
        })
    }

    /// What serde's `expected ...` asks for, for a key [`Takes::of`] does not know.
    fn from_serde(expected: &str) -> Option<&'static str> {
        Some(match expected {
            "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number from 0 up",
            "f32" | "f64" => "a number",
            "a string" => "text in quotes",
            "a boolean" => "true or false",
            "a sequence" => "a list",
            _ => return None,
        })
    }

    /// In words, for the value `written`: a whole number too large says the most.
    fn words(&self, written: &str) -> String {
        match self {
            Takes::Whole { least, most } => {
                let too_large = written
                    .replace('_', "")
                    .parse::<i128>()
                    .is_ok_and(|n| n > i128::from(*most));
                if too_large {
                    format!("a whole number from {least} up to {most}")
                } else {
                    format!("a whole number from {least} up")
                }
            }
            Takes::Words(words) => (*words).to_owned(),
        }
    }
}

/// The whole file, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    session: Option<TableOnly<RawSession>>,
    #[serde(default)]
    pilot: Vec<Spanned<RawPilot>>,
    #[serde(default)]
    unit: Vec<Spanned<RawUnit>>,
    #[serde(default)]
    pilot_data: Vec<Spanned<RawPilotData>>,
    #[serde(default)]
    data_unit: Vec<Spanned<RawDataUnit>>,
    simulation: Option<TableOnly<RawSimulation>>,
}

/// A table that must be written as one table: serde would also take a struct from an
/// array (`[[simulation]]`) and fill its fields in order, with a baffling message.
struct TableOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for TableOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = TableOnly<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("one table, written with single brackets")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(TableOnly)
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// The `[session]` table, as written: a key per setting of a run (see [`pstar::Settings`])
/// but `sandbox` (the command line's) and the agents' finer settings (their defaults suit).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    coordination: Option<Spanned<String>>,
    heartbeat_timeout: Option<Spanned<String>>,
    max_attempts: Option<Spanned<u32>>,
    black_hole_failures: Option<Spanned<u32>>,
    prefetch: Option<Spanned<u32>>,
    agent_start_timeout: Option<Spanned<String>>,
    poll_interval: Option<Spanned<String>>,
    locality_wait: Option<Spanned<String>>,
    agent_binary: Option<Spanned<String>>,
    keep: Option<Spanned<String>>,
    drain_margin: Option<Spanned<String>>,
}

/// The keys of a `[session]` table being checked, each remembered with its line.
struct SessionKeys<'s, 'a> {
    src: &'s Source<'a>,
    at: std::collections::BTreeMap<&'static str, pstar::Origin>,
}

impl SessionKeys<'_, '_> {
    /// Key `name` is written at `span`.
    fn note(&mut self, name: &'static str, span: Range<usize>) {
        let line = self.src.locate(span).line;
        self.at.insert(
            name,
            pstar::Origin::Workload {
                path: self.src.path.to_owned(),
                line,
            },
        );
    }

    /// A duration key, within its range ([`pstar_model::settings::DURATION_RANGES`]).
    fn duration(
        &mut self,
        name: &'static str,
        value: Option<Spanned<String>>,
    ) -> Result<Option<Duration>, WorkloadError> {
        let Some(t) = value else {
            return Ok(None);
        };
        self.note(name, t.span());
        let d = humantime::parse_duration(t.get_ref()).map_err(|_| {
            self.src.error(
                t.span(),
                format!(
                    "`{name}` `{}` is not a duration such as \"30s\"",
                    t.get_ref().escape_debug()
                ),
            )
        })?;
        pstar_model::settings::check_duration(name, d)
            .map_err(|e| self.src.error(t.span(), e.to_string()))?;
        Ok(Some(d))
    }

    /// A count key of at least `least`.
    fn count(
        &mut self,
        name: &'static str,
        value: Option<Spanned<u32>>,
        least: u32,
    ) -> Result<Option<u32>, WorkloadError> {
        let Some(n) = value else {
            return Ok(None);
        };
        self.note(name, n.span());
        if *n.get_ref() < least {
            return Err(self
                .src
                .error(n.span(), format!("`{name}` must be at least {least}")));
        }
        Ok(Some(n.into_inner()))
    }
}

impl RawSession {
    fn check(self, src: &Source, base: &Path) -> Result<SessionSettings, WorkloadError> {
        // Not echoed: a URL may hold a password (the caret shows where it is).
        if let Some(url) = &self.coordination
            && !is_store_url(url.get_ref())
        {
            return Err(src.error(
                url.span(),
                "`coordination` is not a redis://host:port/db or rediss:// URL",
            ));
        }
        if let Some(path) = &self.agent_binary
            && path.get_ref().is_empty()
        {
            return Err(src.error(path.span(), "`agent_binary` must not be empty"));
        }
        let mut keys = SessionKeys {
            src,
            at: Default::default(),
        };
        for (name, span) in [
            (
                "coordination",
                self.coordination.as_ref().map(Spanned::span),
            ),
            (
                "agent_binary",
                self.agent_binary.as_ref().map(Spanned::span),
            ),
        ] {
            if let Some(span) = span {
                keys.note(name, span);
            }
        }
        let layer = SessionSettings {
            heartbeat_timeout: keys.duration("heartbeat_timeout", self.heartbeat_timeout)?,
            max_attempts: keys.count("max_attempts", self.max_attempts, 1)?,
            black_hole_failures: keys.count("black_hole_failures", self.black_hole_failures, 0)?,
            prefetch: keys.count("prefetch", self.prefetch, 0)?,
            agent_start_timeout: keys.duration("agent_start_timeout", self.agent_start_timeout)?,
            poll_interval: keys.duration("poll_interval", self.poll_interval)?,
            locality_wait: keys.duration("locality_wait", self.locality_wait)?,
            keep: keys.duration("keep", self.keep)?,
            drain_margin: keys.duration("drain_margin", self.drain_margin)?,
            agent_binary: self.agent_binary.map(|p| base.join(p.into_inner())),
            coordination: self.coordination.map(Spanned::into_inner),
            // Every value has its own line; this is the file's.
            origin: pstar::Origin::Workload {
                path: src.path.to_owned(),
                line: 0,
            },
            ..Default::default()
        };
        Ok(SessionSettings {
            at: keys.at,
            ..layer
        })
    }
}

/// The `[simulation]` table, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSimulation {
    queue_wait: Option<Spanned<String>>,
    seed: Option<u64>,
    pilot_failure: Option<Spanned<f64>>,
    agent_loss: Option<Spanned<f64>>,
    unit_time: Option<Spanned<String>>,
}

impl RawSimulation {
    fn check(self, src: &Source<'_>) -> Result<Simulation, WorkloadError> {
        let defaults = Simulation::default();
        let queue_wait = match &self.queue_wait {
            None => defaults.queue_wait,
            Some(q) => parse_queue_wait(q.get_ref()).map_err(|e| src.error(q.span(), e))?,
        };
        let unit_time = match &self.unit_time {
            None => defaults.unit_time,
            Some(t) => parse_time("unit_time", t.get_ref()).map_err(|e| src.error(t.span(), e))?,
        };
        let probability = |field: &str, value: Option<Spanned<f64>>, default: f64| match value {
            None => Ok(default),
            Some(p) if (0.0..=1.0).contains(p.get_ref()) => Ok(p.into_inner()),
            Some(p) => Err(src.error(
                p.span(),
                format!(
                    "`{field}` must be a probability from 0 to 1, not {}",
                    p.get_ref()
                ),
            )),
        };
        Ok(Simulation {
            queue_wait,
            seed: self.seed.unwrap_or(defaults.seed),
            pilot_failure: probability(
                "pilot_failure",
                self.pilot_failure,
                defaults.pilot_failure,
            )?,
            agent_loss: probability("agent_loss", self.agent_loss, defaults.agent_loss)?,
            unit_time,
        })
    }
}

/// A `queue_wait`: one duration, or a range `min..max` of them.
fn parse_queue_wait(text: &str) -> Result<QueueWait, String> {
    let text = text.trim();
    let bad = |why: String| {
        format!(
            "`queue_wait` `{text}` is not a duration: {why} (expected e.g. \"5m\", or \
             \"1m..10m\" for waits drawn uniformly in that range)"
        )
    };
    if text.contains("...") {
        let mut two = text.to_owned();
        while two.contains("...") {
            two = two.replace("...", "..");
        }
        return Err(format!(
            "`queue_wait` range must be written \"{}\" (two dots), not \"{}\"",
            two.escape_debug(),
            text.escape_debug()
        ));
    }
    match text.split("..").collect::<Vec<_>>()[..] {
        [one] => duration(one).map(QueueWait::Fixed).map_err(bad),
        [min, max] => {
            let (min, max) = (duration(min).map_err(bad)?, duration(max).map_err(bad)?);
            if min > max {
                return Err(format!(
                    "`queue_wait` range `{text}` goes down: write the shorter wait first"
                ));
            }
            Ok(QueueWait::Uniform { min, max })
        }
        _ => Err(bad("a range has two ends".to_owned())),
    }
}

/// A `[[pilot]]` table, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPilot {
    name: Option<Spanned<String>>,
    resource: Spanned<String>,
    cores: Option<Spanned<u32>>,
    nodes: Option<Spanned<u32>>,
    #[serde(default)]
    gpus: u32,
    walltime: Option<Spanned<String>>,
    queue: Option<Spanned<String>>,
    project: Option<Spanned<String>>,
    reservation: Option<Spanned<String>>,
    scheduler_options: Option<Spanned<Vec<String>>>,
    tunnel: Option<Spanned<bool>>,
    working_directory: Option<Spanned<PathBuf>>,
    environment: Option<Spanned<BTreeMap<String, String>>>,
    affinity: Option<Spanned<Affinity>>,
    cache: Option<Spanned<toml::Value>>,
    pre_exec: Option<Spanned<Vec<String>>>,
    /// Taken out by [`parse`] before the rest is checked.
    count: Option<Spanned<u32>>,
}

impl RawPilot {
    /// The description this table asks for and where its keys are, or the first mistake
    /// in it.
    fn check(
        self,
        src: &Source<'_>,
        base: &Path,
        supported: &[Scheme],
    ) -> Result<(PilotComputeDescription, Keys), WorkloadError> {
        let defaults = PilotComputeDescription::default();
        let mut keys = Keys::default();
        keys.note("name", &self.name);
        keys.note("resource", &Some(self.resource.clone()));
        keys.note("cores", &self.cores);
        keys.note("nodes", &self.nodes);
        keys.note("walltime", &self.walltime);
        keys.note("queue", &self.queue);
        keys.note("project", &self.project);
        keys.note("reservation", &self.reservation);
        keys.note("scheduler_options", &self.scheduler_options);
        keys.note("working_directory", &self.working_directory);
        keys.note("environment", &self.environment);
        keys.note("affinity", &self.affinity);
        keys.note("cache", &self.cache);
        keys.note("pre_exec", &self.pre_exec);
        let cache_size = self
            .cache
            .as_ref()
            .map(|c| size_value(src, c, "cache", "a pilot without a cache limit"))
            .transpose()?;

        let resource: ResourceUrl =
            self.resource
                .get_ref()
                .parse()
                .map_err(|e: pstar_model::ResourceUrlError| {
                    src.error(self.resource.span(), e.to_string())
                })?;
        if !supported.contains(&resource.scheme()) {
            let list = supported
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(src.error(
                self.resource.span(),
                format!(
                    "resource scheme `{}` is not supported by this pstar yet (supported: {list})",
                    resource.scheme()
                ),
            ));
        }

        let cores = at_least_one(src, self.cores, "cores", defaults.cores)?;
        let over_ssh = pstar_adaptors::Capabilities::of(resource.scheme()).remote_paths;
        let nodes = match self.nodes {
            None => None,
            Some(n) => {
                let span = n.span();
                let nodes = at_least_one(src, Some(n), "nodes", 1)?;
                if cores % nodes != 0 {
                    return Err(src.error(
                        span,
                        DescriptionError::UnevenNodes { cores, nodes }.to_string(),
                    ));
                }
                if !self.gpus.is_multiple_of(nodes) {
                    let gpus = self.gpus;
                    return Err(src.error(
                        span,
                        DescriptionError::UnevenGpus { gpus, nodes }.to_string(),
                    ));
                }
                if nodes > 1 && !pstar_adaptors::Capabilities::of(resource.scheme()).batch {
                    return Err(src.error(
                        span,
                        format!(
                            "a `{}` pilot is one host: `nodes` must be 1",
                            resource.scheme()
                        ),
                    ));
                }
                Some(nodes)
            }
        };
        let tunnel = self.tunnel.as_ref().is_some_and(|t| *t.get_ref());
        if let Some(t) = self.tunnel.as_ref().filter(|_| tunnel && !over_ssh) {
            return Err(src.error(
                t.span(),
                format!(
                    "`tunnel` needs an SSH connection to the resource; `{}://` has none",
                    resource.scheme()
                ),
            ));
        }

        let walltime = match self.walltime {
            None => defaults.walltime,
            Some(w) => {
                let d = parse_time("walltime", w.get_ref()).map_err(|e| src.error(w.span(), e))?;
                if d.is_zero() {
                    return Err(src.error(w.span(), DescriptionError::NoWalltime.to_string()));
                }
                d
            }
        };

        let description = PilotComputeDescription {
            name: self.name.map(Spanned::into_inner),
            resource,
            cores,
            nodes,
            gpus: self.gpus,
            walltime,
            queue: self.queue.map(Spanned::into_inner),
            project: self.project.map(Spanned::into_inner),
            reservation: self.reservation.map(Spanned::into_inner),
            scheduler_options: value_or_default(self.scheduler_options),
            tunnel,
            working_directory: self
                .working_directory
                .map(Spanned::into_inner)
                .map(|d| if over_ssh { d } else { base.join(d) }),
            environment: value_or_default(self.environment),
            affinity: value_or_default(self.affinity),
            cache_size,
            pre_exec: value_or_default(self.pre_exec),
            python: None,
        };
        Ok((description, keys))
    }
}

/// A `[[unit]]` table, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnit {
    name: Option<Spanned<String>>,
    executable: Spanned<String>,
    arguments: Option<Spanned<Vec<String>>>,
    environment: Option<Spanned<BTreeMap<String, String>>>,
    working_directory: Option<Spanned<String>>,
    cores: Option<Spanned<u32>>,
    gpus: Option<Spanned<u32>>,
    stdout: Option<Spanned<String>>,
    stderr: Option<Spanned<String>>,
    pre_exec: Option<Spanned<Vec<String>>>,
    post_exec: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    shell: bool,
    #[serde(default)]
    mpi: bool,
    ranks: Option<Spanned<u32>>,
    tags: Option<Spanned<Vec<String>>>,
    pilot: Option<Spanned<String>>,
    count: Option<Spanned<u32>>,
    time_request: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    input_data: Option<Spanned<Vec<Spanned<String>>>>,
    output_data: Option<Spanned<Vec<Spanned<RawOutputData>>>>,
    after: Option<Spanned<Vec<Spanned<String>>>>,
    on_dependency_failure: Option<Spanned<String>>,
    retries: Option<Spanned<u32>>,
    retry_on_exit_codes: Option<Spanned<Vec<i32>>>,
    max_fails: Option<Spanned<u32>>,
    parameters: Option<sweep::RawParameters>,
    parameters_from: Option<Spanned<String>>,
}

/// One `output_data` entry of a `[[unit]]`, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutputData {
    name: Spanned<String>,
    files: Spanned<Vec<Spanned<String>>>,
    store: Option<Spanned<String>>,
    export: Option<Spanned<String>>,
    #[serde(default)]
    allow_empty: bool,
}

impl RawUnit {
    /// The template of the table's units, its early-bound pilot index, its `count` and
    /// where that is written (the table, without one), or the first mistake in the table.
    /// `pilots` are the workload's checked pilots.
    fn check(
        self,
        src: &Source<'_>,
        base: &Path,
        pilots: &Pilots,
        stores: &Stores,
        table_span: Range<usize>,
    ) -> Result<CheckedUnit, WorkloadError> {
        let defaults = ComputeUnitDescription::default();
        let mut keys = Keys::default();
        keys.note("name", &self.name);
        keys.note("executable", &Some(self.executable.clone()));
        keys.note("arguments", &self.arguments);
        keys.note("environment", &self.environment);
        keys.note("working_directory", &self.working_directory);
        keys.note("cores", &self.cores);
        keys.note("stdout", &self.stdout);
        keys.note("stderr", &self.stderr);
        keys.note("pre_exec", &self.pre_exec);
        keys.note("post_exec", &self.post_exec);
        keys.note("tags", &self.tags);
        keys.note("time_request", &self.time_request);
        keys.note("timeout", &self.timeout);
        keys.note("input_data", &self.input_data);
        keys.note("output_data", &self.output_data);
        keys.note("after", &self.after);
        keys.note("on_dependency_failure", &self.on_dependency_failure);
        keys.note("retries", &self.retries);
        keys.note("retry_on_exit_codes", &self.retry_on_exit_codes);
        keys.note("max_fails", &self.max_fails);
        keys.note("parameters", &self.parameters);
        keys.note("parameters_from", &self.parameters_from);

        if self.executable.get_ref().trim().is_empty() {
            return Err(src.error(
                self.executable.span(),
                DescriptionError::NoExecutable.to_string(),
            ));
        }
        let cores_span = self
            .cores
            .as_ref()
            .map_or(table_span.clone(), Spanned::span);
        let ranks_given = self.ranks.is_some();
        let (cores, cores_span) = match self.ranks {
            None => (
                at_least_one(src, self.cores, "cores", defaults.cores)?,
                cores_span,
            ),
            Some(ranks) => {
                let span = ranks.span();
                let n = at_least_one(src, Some(ranks), "ranks", 1)?;
                if let Some(c) = &self.cores
                    && *c.get_ref() != n
                {
                    return Err(src.error(
                        c.span(),
                        format!(
                            "an MPI unit has one core per rank: with `ranks = {n}`, leave \
                             `cores` out"
                        ),
                    ));
                }
                (n, span)
            }
        };
        let mpi = self.mpi || ranks_given;
        let gpus_span = self.gpus.as_ref().map_or(table_span.clone(), Spanned::span);
        let gpus = self.gpus.map_or(defaults.gpus, Spanned::into_inner);
        let count_span = self
            .count
            .as_ref()
            .map_or(table_span.clone(), Spanned::span);
        // A sweep makes one unit per combination (or row) of its parameters' values.
        let sweep = match (self.parameters, &self.parameters_from) {
            (Some(_), Some(file)) => {
                return Err(src.error(
                    file.span(),
                    "give `parameters` or `parameters_from`, not both",
                ));
            }
            (Some(lists), None) => Some(sweep::Sweep::from_lists(src, lists)?),
            (None, Some(file)) => Some(sweep::Sweep::from_file(src, base, file)?),
            (None, None) => None,
        };
        let count = match &sweep {
            Some(sweep) => {
                if let Some(c) = &self.count {
                    return Err(src.error(
                        c.span(),
                        format!(
                            "`count` comes from the sweep's parameters ({} units): leave it out",
                            sweep.count()
                        ),
                    ));
                }
                sweep.count() as u32
            }
            None => at_least_one(src, self.count, "count", 1)?,
        };
        let params: Vec<String> = sweep.as_ref().map(|s| s.names.clone()).unwrap_or_default();
        let on_dependency_failure = match &self.on_dependency_failure {
            None => OnDependencyFailure::Cancel,
            Some(v) => match v.get_ref().as_str() {
                "cancel" => OnDependencyFailure::Cancel,
                "run" => OnDependencyFailure::Run,
                other => {
                    return Err(src.error(
                        v.span(),
                        format!(
                            "`on_dependency_failure` is \"cancel\" (the default) or \"run\", \
                             not {other:?}"
                        ),
                    ));
                }
            },
        };
        if let Some(codes) = &self.retry_on_exit_codes
            && codes.get_ref().is_empty()
        {
            return Err(src.error(
                codes.span(),
                "`retry_on_exit_codes` is empty: leave it out to try any failed run again",
            ));
        }
        let max_fails = self
            .max_fails
            .map(|m| at_least_one(src, Some(m), "max_fails", 1))
            .transpose()?;
        let mut after = Vec::new();
        for pattern in value_or_default(self.after) {
            let text = pattern.get_ref();
            let target = text.strip_prefix("tag:").unwrap_or(text);
            if target.trim().is_empty() {
                return Err(src.error(
                    pattern.span(),
                    "an `after` entry names units by name (a pattern such as \"prep-*\") or \
                     by tag (\"tag:stage1\"): this one is empty",
                ));
            }
            after.push((Template::parse_with(text, &params), pattern.span()));
        }
        // Zero is refused by `validate`, with the other refusals of the description.
        let timeout = match &self.timeout {
            None => None,
            Some(t) => {
                Some(parse_time("timeout", t.get_ref()).map_err(|e| src.error(t.span(), e))?)
            }
        };
        let time_request = match &self.time_request {
            None => None,
            Some(t) => {
                Some(parse_time("time_request", t.get_ref()).map_err(|e| src.error(t.span(), e))?)
            }
        };

        let (data, input_data, output_data) = check_unit_data(
            src,
            stores,
            count,
            &params,
            self.input_data,
            self.output_data,
        )?;

        let pilot = match &self.pilot {
            None => None,
            Some(wanted) => match pilots.names.get(wanted.get_ref()) {
                Some(Named::Pilot { index, .. }) => Some(*index),
                Some(Named::Group { table }) => {
                    let t = &pilots.tables[*table];
                    let names = t.names().unwrap_or_default();
                    return Err(src.error(
                        wanted.span(),
                        format!(
                            "`{}` names {} pilots (`count = {}`): bind to one of them, {names}, \
                             or leave `pilot` out to run on any pilot",
                            wanted.get_ref(),
                            t.count,
                            t.count
                        ),
                    ));
                }
                None => {
                    let known: Vec<String> =
                        pilots.tables.iter().filter_map(PilotTable::names).collect();
                    let known = if known.is_empty() {
                        "no pilot has a `name`".to_owned()
                    } else {
                        format!("named pilots: {}", known.join(", "))
                    };
                    return Err(src.error(
                        wanted.span(),
                        format!("no pilot is named `{}` ({known})", wanted.get_ref()),
                    ));
                }
            },
        };
        let pilots_all = &pilots.all;

        // The unit must fit on the pilot it is bound to, or on at least one pilot.
        let bound_name = |p: usize| pilots_all[p].name.as_deref().unwrap_or_default();
        let fit_error = |span: Range<usize>, need: u32, what: &str, have: u32| {
            let whom = match pilot {
                Some(p) => format!("pilot `{}`", bound_name(p)),
                None => "the largest pilot".to_owned(),
            };
            src.error(
                span,
                format!(
                    "unit needs {} but {whom} has {}",
                    amount(need, what),
                    amount(have, what)
                ),
            )
        };
        // One pilot of each table stands for the table: its pilots differ in name only.
        let candidates: Vec<&PilotComputeDescription> = match pilot {
            Some(p) => vec![&pilots_all[p]],
            None => pilots.tables.iter().map(|t| &pilots_all[t.start]).collect(),
        };
        // Ranks of an MPI unit may span nodes; any other unit runs on one node.
        let room = |p: &PilotComputeDescription| if mpi { p.cores } else { p.cores_per_node() };
        let max_cores = candidates.iter().map(|p| room(p)).max().unwrap_or(0);
        let max_gpus = candidates.iter().map(|p| p.gpus).max().unwrap_or(0);
        if cores > max_cores {
            return Err(fit_error(cores_span, cores, "core", max_cores));
        }
        if gpus > max_gpus {
            return Err(fit_error(gpus_span, gpus, "GPU", max_gpus));
        }
        if let (Some(time), Some(t)) = (time_request, &self.time_request) {
            let longest = candidates
                .iter()
                .map(|p| p.walltime)
                .max()
                .unwrap_or_default();
            if time > longest {
                let whom = match pilot {
                    Some(p) => format!("pilot `{}`", bound_name(p)),
                    None => "the longest pilot".to_owned(),
                };
                return Err(src.error(
                    t.span(),
                    format!(
                        "`time_request` {} is longer than the walltime of {whom} ({})",
                        humantime::format_duration(time),
                        humantime::format_duration(longest)
                    ),
                ));
            }
        }
        let fits = |p: &PilotComputeDescription| {
            room(p) >= cores && p.gpus >= gpus && time_request.is_none_or(|t| p.walltime >= t)
        };
        if !candidates.iter().any(|p| fits(p)) {
            // At least two of the needs are met by some pilot each, never by one.
            let mut needs = vec![amount(cores, "core")];
            if gpus > 0 || time_request.is_none() {
                needs.push(amount(gpus, "GPU"));
            }
            if let Some(t) = time_request {
                needs.push(format!("a walltime of {}", humantime::format_duration(t)));
            }
            let (all, last) = if needs.len() > 2 {
                ("all three", needs.pop().unwrap_or_default())
            } else {
                ("both", needs.pop().unwrap_or_default())
            };
            return Err(src.error(
                cores_span,
                format!(
                    "unit needs {} and {last} but no pilot has {all}",
                    needs.join(", ")
                ),
            ));
        }

        let fixed = ComputeUnitDescription {
            executable: self.executable.into_inner(),
            cores,
            gpus,
            shell: self.shell,
            mpi,
            tags: value_or_default(self.tags),
            time_request,
            timeout,
            on_dependency_failure,
            retries: self.retries.map_or(0, Spanned::into_inner),
            retry_on_exit_codes: value_or_default(self.retry_on_exit_codes),
            ..ComputeUnitDescription::default()
        };
        let one =
            |t: Option<Spanned<String>>| t.map(|t| Template::parse_with(t.get_ref(), &params));
        let all = |t: Option<Spanned<Vec<String>>>| -> Vec<Template> {
            value_or_default(t)
                .iter()
                .map(|t| Template::parse_with(t, &params))
                .collect()
        };
        let template = UnitTemplate {
            executable: Template::parse_with(&fixed.executable, &params),
            fixed,
            name: one(self.name),
            arguments: all(self.arguments),
            environment: value_or_default(self.environment)
                .into_iter()
                .map(|(k, v)| (k, Template::parse_with(&v, &params)))
                .collect(),
            working_directory: one(self.working_directory),
            base: base.to_owned(),
            stdout: one(self.stdout),
            stderr: one(self.stderr),
            pre_exec: all(self.pre_exec),
            post_exec: all(self.post_exec),
            input_data,
            output_data,
        };
        Ok(CheckedUnit {
            template,
            pilot,
            count,
            count_span,
            keys,
            data,
            sweep: sweep.map(std::sync::Arc::new),
            after,
            max_fails,
        })
    }
}

/// A `[[unit]]` table, checked.
struct CheckedUnit {
    template: UnitTemplate,
    /// Its parameter sweep, if it is one.
    sweep: Option<std::sync::Arc<sweep::Sweep>>,
    /// Its `after` patterns, and where each is written.
    after: Vec<(Template, Range<usize>)>,
    max_fails: Option<u32>,
    /// Early binding: the index of the pilot.
    pilot: Option<usize>,
    count: u32,
    /// Where `count` is written (the table, without one).
    count_span: Range<usize>,
    keys: Keys,
    /// Its `input_data` and `output_data` names, for the checks across the file.
    data: UnitData,
}

/// Where the keys of one table are written, to point at the one a refusal is about.
#[derive(Default)]
struct Keys(Vec<(&'static str, Range<usize>)>);

impl Keys {
    fn note<T>(&mut self, key: &'static str, value: &Option<Spanned<T>>) {
        if let Some(v) = value {
            self.0.push((key, v.span()));
        }
    }

    /// The span of the first of `fields` the table writes, else `table`.
    fn of(&self, fields: &[&str], table: Range<usize>) -> Range<usize> {
        fields
            .iter()
            .find_map(|f| self.0.iter().find(|(k, _)| k == f))
            .map_or(table, |(_, span)| span.clone())
    }
}

/// The pilot stores declared so far: their names, with the line each is declared on.
#[derive(Default)]
struct Stores {
    lines: HashMap<String, usize>,
    /// The names in file order, to list them.
    order: Vec<String>,
}

impl Stores {
    /// Refuses a `store` that names no `[[pilot_data]]`.
    fn check(&self, src: &Source<'_>, store: &Spanned<String>) -> Result<(), WorkloadError> {
        if self.lines.contains_key(store.get_ref()) {
            return Ok(());
        }
        let known = if self.order.is_empty() {
            "the file declares no [[pilot_data]]".to_owned()
        } else {
            let names: Vec<String> = self.order.iter().map(|n| format!("`{n}`")).collect();
            format!("pilot stores: {}", names.join(", "))
        };
        Err(src.error(
            store.span(),
            format!(
                "no [[pilot_data]] is named `{}` ({known})",
                store.get_ref().escape_debug()
            ),
        ))
    }
}

/// A `[[pilot_data]]` table, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPilotData {
    name: Spanned<String>,
    url: Spanned<String>,
    /// A whole number of bytes or a text such as `"100GiB"`.
    size: Option<Spanned<toml::Value>>,
    affinity: Option<Spanned<Affinity>>,
}

impl RawPilotData {
    /// The pilot store this table declares, its name added to `stores`.
    fn check(
        self,
        src: &Source<'_>,
        base: &Path,
        stores: &mut Stores,
    ) -> Result<PilotDataDescription, WorkloadError> {
        let name = self.name.get_ref();
        check_data_name(name).map_err(|e| src.error(self.name.span(), format!("`name`: {e}")))?;
        if let Some(line) = stores.lines.get(name) {
            return Err(src.error(
                self.name.span(),
                format!("a [[pilot_data]] named `{name}` is already declared on line {line}"),
            ));
        }
        // Not echoed: a URL may hold a password (the caret shows where it is, and the
        // line shown has it masked).
        let url = store_url(self.url.get_ref(), base).map_err(|e| {
            let mut e = src.error(self.url.span(), e);
            if let Some(loc) = &mut e.location {
                loc.source_line = mask_passwords(&loc.source_line);
            }
            e
        })?;
        let reserved = ["client", "export", "unknown"];
        if reserved.contains(&name.as_str()) || name.starts_with("pilot.") {
            return Err(src.error(
                self.name.span(),
                format!(
                    "`name` `{name}` is kept for what reports count besides stores \
                     (`client`, `export`, `unknown` and pilots' caches `pilot.NNNN`): choose another"
                ),
            ));
        }
        let size = self.size.map(|s| store_size(src, &s)).transpose()?;
        let line = src.locate(self.name.span()).line;
        stores.lines.insert(name.clone(), line);
        stores.order.push(name.clone());
        Ok(PilotDataDescription {
            name: self.name.into_inner(),
            url,
            size,
            affinity: value_or_default(self.affinity),
        })
    }
}

/// `line` with the password of every `scheme://user:password@` in it masked.
fn mask_passwords(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let end = rest.find(['/', '"', '\'', ' ']).unwrap_or(rest.len());
        let authority = &rest[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..=colon]);
                out.push_str("****");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// What a pilot store's `url` may be, said in the errors about it.
const STORE_URL_FORMS: &str = "a directory (relative to the workload file's), \
                               file:///path, sftp://user@host/path or s3://bucket/prefix";

/// The URL of a pilot store written as `text`: `file:///path`,
/// `sftp://[user@]host[:port]/path`, `s3://bucket/prefix`, or a directory on this machine
/// (a path without a scheme, relative to `base` unless absolute), which becomes a
/// `file:///` URL. A URL carrying credentials, a query or a fragment is refused; errors
/// never repeat the URL (it may hold a password).
fn store_url(text: &str, base: &Path) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err(format!("`url` is empty: give {STORE_URL_FORMS}"));
    }
    if text.contains('\0') {
        return Err("`url` contains a NUL byte".to_owned());
    }
    let url = match url::Url::parse(text) {
        Ok(url) => url,
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            if text.starts_with('~') {
                return Err(
                    "`url` starts with `~`, which pstar does not expand: write the \
                     directory's path in full, or relative to the workload file's"
                        .to_owned(),
                );
            }
            let path = lexical(&base.join(text));
            return url::Url::from_file_path(&path)
                .map(String::from)
                .map_err(|()| format!("`url`: {} is not a usable directory", path.display()));
        }
        Err(e) => {
            return Err(format!(
                "`url` is not a valid URL ({e}): give {STORE_URL_FORMS}"
            ));
        }
    };
    if url.password().is_some() {
        return Err(
            "`url` holds a password: pilot stores never take credentials in their URL (SFTP \
             uses your SSH keys and ~/.ssh/config, S3 the environment or a private file)"
                .to_owned(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "`url` has a `?` query or a `#` fragment, which no pilot store takes: give \
             {STORE_URL_FORMS}"
        ));
    }
    match url.scheme() {
        "file" => {
            // `file:x` would be read as `/x`.
            if !text
                .get(..7)
                .is_some_and(|t| t.eq_ignore_ascii_case("file://"))
            {
                return Err(
                    "write a file URL as file:///absolute/path, or give the directory \
                            alone (relative to the workload file's)"
                        .to_owned(),
                );
            }
            if url
                .host_str()
                .is_some_and(|h| !h.is_empty() && h != "localhost")
            {
                return Err("a file:// URL is a directory on this machine: write \
                            file:///path (three slashes), or the path alone"
                    .to_owned());
            }
            let path = url
                .to_file_path()
                .map_err(|()| "`url`: a file:// URL needs an absolute path".to_owned())?;
            url::Url::from_file_path(&path)
                .map(String::from)
                .map_err(|()| format!("`url`: {} is not a usable directory", path.display()))
        }
        "sftp" => {
            if url.host_str().is_none_or(str::is_empty) {
                return Err("an sftp:// URL needs a host: sftp://user@host/path".to_owned());
            }
            Ok(url.into())
        }
        "s3" => {
            if url.host_str().is_none_or(str::is_empty) {
                return Err("an s3:// URL needs a bucket: s3://bucket/prefix".to_owned());
            }
            if !url.username().is_empty() {
                return Err(
                    "`url` holds a user name: S3 credentials come from the environment \
                            or a private file, never from the URL"
                        .to_owned(),
                );
            }
            Ok(url.into())
        }
        scheme => Err(format!(
            "`url` scheme `{scheme}` is not a pilot store: give {STORE_URL_FORMS} (write a \
             relative directory whose name has a `:` as ./name)"
        )),
    }
}

/// `path` without `.` components, and `x/..` taken out (as the kernel would, but for links).
fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut kept: Vec<Component> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match kept.last() {
                Some(Component::Normal(_)) => {
                    kept.pop();
                }
                Some(Component::RootDir) => {}
                _ => kept.push(c),
            },
            _ => kept.push(c),
        }
    }
    kept.iter().collect()
}

/// What `size` takes, in the words its errors use.
const SIZE_WORDS: &str =
    "a size in quotes such as \"100GiB\" or \"500MB\", or a whole number of bytes";

/// A pilot store's `size`: a whole number of bytes, or a text such as `"100GiB"`; more
/// than zero.
fn store_size(src: &Source<'_>, value: &Spanned<toml::Value>) -> Result<u64, WorkloadError> {
    size_value(src, value, "size", "a store without a quota")
}

/// A size written at `key`: a whole number of bytes, or a text such as `"100GiB"`; more
/// than zero (`without` says what leaving the key out gives).
fn size_value(
    src: &Source<'_>,
    value: &Spanned<toml::Value>,
    key: &str,
    without: &str,
) -> Result<u64, WorkloadError> {
    let bytes = match value.get_ref() {
        toml::Value::Integer(n) => u64::try_from(*n).ok(),
        toml::Value::String(t) => Some(parse_size(t).map_err(|e| src.error(value.span(), e))?),
        _ => None,
    };
    match bytes {
        Some(0) => Err(src.error(
            value.span(),
            format!("`{key}` must be more than zero (leave it out for {without})"),
        )),
        Some(n) => Ok(n),
        None => {
            let written = src
                .text
                .get(value.span())
                .and_then(|t| t.lines().next())
                .unwrap_or_default()
                .trim();
            Err(src.error(
                value.span(),
                format!("`{key}` must be {SIZE_WORDS}, not {written}"),
            ))
        }
    }
}

/// The bytes of a size such as `"100GiB"`, `"500 MB"`, `"1.5TiB"` or `"4096"`: kB, MB, GB,
/// TB and PB are powers of 1000, KiB, MiB, GiB, TiB and PiB powers of 1024 (units in any
/// case); a fraction of a byte is dropped.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = |why: String| {
        format!(
            "`size` `{}` is not a size: {why} (expected e.g. \"100GiB\", \"500MB\" or \"1TiB\")",
            t.escape_debug()
        )
    };
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    let factor: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000u128.pow(2),
        "gb" => 1000u128.pow(3),
        "tb" => 1000u128.pow(4),
        "pb" => 1000u128.pow(5),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "pib" => 1 << 50,
        _ => {
            return Err(bad(format!(
                "unknown unit `{}` (units: B, kB, MB, GB, TB, PB, KiB, MiB, GiB, TiB, PiB)",
                unit.escape_debug()
            )));
        }
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return Err(bad("it does not start with a number".to_owned()));
    }
    if fraction.len() > 18 {
        return Err(bad("too many decimals".to_owned()));
    }
    let too_large = || bad("it is too large".to_owned());
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_large())?
    };
    let fraction_bytes = if fraction.is_empty() {
        0
    } else {
        let n: u128 = fraction.parse().map_err(|_| too_large())?;
        n * factor / 10u128.pow(fraction.len() as u32)
    };
    whole
        .checked_mul(factor)
        .and_then(|b| b.checked_add(fraction_bytes))
        .and_then(|b| u64::try_from(b).ok())
        .ok_or_else(too_large)
}

/// A `[[data_unit]]` table, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataUnit {
    name: Spanned<String>,
    files: Spanned<Vec<Spanned<String>>>,
    store: Option<Spanned<String>>,
    count: Option<Spanned<u32>>,
}

/// A `[[data_unit]]` table, checked: `count` data units made from one template.
struct DataUnitTable {
    name: Template,
    name_span: Range<usize>,
    /// Each path or pattern, as written (relative to the workload file's directory unless
    /// absolute), and where.
    files: Vec<(Template, Range<usize>)>,
    store: Option<String>,
    count: u32,
    /// Where `count` is written (the table, without one).
    count_span: Range<usize>,
}

impl RawDataUnit {
    fn check(
        self,
        src: &Source<'_>,
        stores: &Stores,
        table_span: Range<usize>,
    ) -> Result<DataUnitTable, WorkloadError> {
        let count_span = self.count.as_ref().map_or(table_span, Spanned::span);
        let count = at_least_one(src, self.count, "count", 1)?;
        let name = Template::parse(self.name.get_ref());
        check_name_template(src, "name", &name, count, self.name.span())?;
        if self.files.get_ref().is_empty() {
            return Err(src.error(
                self.files.span(),
                "`files` is empty: give at least one path or pattern such as \"data/*.fa\" \
                 (relative to the workload file's directory)",
            ));
        }
        let mut files = Vec::new();
        for file in self.files.into_inner() {
            let text = file.get_ref();
            let refuse = |why: &str| Err(src.error(file.span(), format!("`files`: {why}")));
            if text.trim().is_empty() {
                return refuse("a path is empty");
            }
            if text.contains('\0') {
                return refuse("a path contains a NUL byte");
            }
            if text.contains("://") {
                return refuse(
                    "a URL is not a file on this machine: give paths (relative to the \
                     workload file's directory), and put remote data in a [[pilot_data]] store",
                );
            }
            files.push((Template::parse(text), file.span()));
        }
        if let Some(store) = &self.store {
            stores.check(src, store)?;
        }
        Ok(DataUnitTable {
            name,
            name_span: self.name.span(),
            files,
            store: self.store.map(Spanned::into_inner),
            count,
            count_span,
        })
    }
}

/// The data unit names of one `[[unit]]` table, with where each is written.
#[derive(Default)]
struct UnitData {
    inputs: Vec<(Template, Range<usize>)>,
    /// Each `output_data` entry's `name`.
    outputs: Vec<(Template, Range<usize>)>,
}

impl UnitData {
    fn is_empty(&self) -> bool {
        self.inputs.is_empty() && self.outputs.is_empty()
    }
}

/// ` (member 3)` in an ensemble, nothing for a lone unit.
fn member(i: u32, count: u32) -> String {
    if count > 1 {
        format!(" (member {i})")
    } else {
        String::new()
    }
}

/// The `input_data` and `output_data` of a `[[unit]]` table of `count` units, checked
/// within the table: names, stores, patterns, no data unit named twice by one member, no
/// member reading what it makes.
fn check_unit_data(
    src: &Source<'_>,
    stores: &Stores,
    count: u32,
    params: &[String],
    input_data: Option<Spanned<Vec<Spanned<String>>>>,
    output_data: Option<Spanned<Vec<Spanned<RawOutputData>>>>,
) -> Result<(UnitData, Vec<Template>, Vec<OutputTemplate>), WorkloadError> {
    // Data unit names are checked across the file as templates of `{i}`: a sweep's
    // parameters are not allowed in them.
    let no_param =
        |text: &Spanned<String>| match Template::parse_with(text.get_ref(), params).has_param() {
            true => Err(src.error(
                text.span(),
                "a data unit name cannot hold a sweep parameter: name it with {i}, the \
                 unit's index in its table",
            )),
            false => Ok(()),
        };
    let mut data = UnitData::default();
    for name in value_or_default(input_data) {
        no_param(&name)?;
        let template = Template::parse(name.get_ref());
        check_name_template(src, "input_data", &template, count, name.span())?;
        for (earlier, _) in &data.inputs {
            if let Some(i) = Template::first_equal(earlier, &template, 0, count) {
                return Err(src.error(
                    name.span(),
                    format!(
                        "`input_data` names data unit `{}` twice{}",
                        template.expand(&i.to_string()),
                        member(i, count)
                    ),
                ));
            }
        }
        data.inputs.push((template, name.span()));
    }
    let mut outputs = Vec::new();
    for out in value_or_default(output_data) {
        let out = out.into_inner();
        no_param(&out.name)?;
        let name = Template::parse(out.name.get_ref());
        check_name_template(src, "output_data", &name, count, out.name.span())?;
        // A unit would wait for ever for what it makes itself.
        for (input, span) in &data.inputs {
            if let Some(i) = Template::first_equal(input, &name, 0, count) {
                return Err(src.error(
                    span.clone(),
                    format!(
                        "input_data \"{}\" is this unit's own output_data{}: a unit cannot read \
                         what it makes",
                        input.expand(&i.to_string()),
                        member(i, count)
                    ),
                ));
            }
        }
        if out.files.get_ref().is_empty() {
            return Err(src.error(
                out.files.span(),
                "`files` is empty: give at least one pattern such as \"*.out\" (relative to \
                 the unit's sandbox)",
            ));
        }
        let mut files = Vec::new();
        for pattern in out.files.into_inner() {
            let template = Template::parse_with(pattern.get_ref(), params);
            // The Pilot-API's rules, at the pattern: an index only adds digits, so member 0
            // stands for all.
            let probe = ComputeUnitDescription {
                executable: "probe".to_owned(),
                output_data: vec![OutputData::new(name.expand("0"), [template.expand("0")])],
                ..ComputeUnitDescription::default()
            };
            probe
                .validate()
                .map_err(|e| src.error(pattern.span(), e.to_string()))?;
            files.push(template);
        }
        if let Some(store) = &out.store {
            stores.check(src, store)?;
        }
        let export = match out.export {
            None => None,
            Some(e) if e.get_ref().trim().is_empty() => {
                return Err(src.error(
                    e.span(),
                    "`export` is empty: give a directory (relative to the workload file's)",
                ));
            }
            Some(e) if e.get_ref().contains('\0') => {
                return Err(src.error(e.span(), "`export` contains a NUL byte"));
            }
            Some(e) => Some(Template::parse_with(e.get_ref(), params)),
        };
        outputs.push(OutputTemplate {
            name: name.clone(),
            files,
            store: out.store.map(Spanned::into_inner),
            export,
            allow_empty: out.allow_empty,
        });
        data.outputs.push((name, out.name.span()));
    }
    let inputs = data.inputs.iter().map(|(t, _)| t.clone()).collect();
    Ok((data, inputs, outputs))
}

/// Refuses a data unit name (`field`, at `span`) that some member of `count` would not
/// have as a valid name. The first and the last member stand for all: an index only adds
/// digits, and the last member's is the longest.
fn check_name_template(
    src: &Source<'_>,
    field: &str,
    name: &Template,
    count: u32,
    span: Range<usize>,
) -> Result<(), WorkloadError> {
    let last = (count > 1).then(|| count - 1);
    for i in std::iter::once(0).chain(last) {
        check_data_name(&name.expand(&i.to_string()))
            .map_err(|e| src.error(span.clone(), format!("`{field}`: {e}")))?;
    }
    Ok(())
}

/// A data unit name the file makes: a `[[data_unit]]`'s or an `output_data`'s, for
/// `count` members.
struct Maker<'t> {
    name: &'t Template,
    count: u32,
    /// Where the name is written.
    span: Range<usize>,
    /// The `[[unit]]` table (its index among those with data) whose `output_data` it is;
    /// `None` for a `[[data_unit]]`.
    table: Option<usize>,
}

/// The most data unit names [`check_data_flow`] expands; the names of larger ensembles
/// are kept as templates and compared as such.
const EXPANDED_NAMES: usize = 1_000_000;

/// Checks the data across the file: each data unit is made once (by one `[[data_unit]]`
/// member or one unit's `output_data`), and every `input_data` of every member names one
/// that is made. Tables without data cost nothing; `{i}` names are compared as templates
/// where an ensemble is too large to expand.
fn check_data_flow(
    src: &Source<'_>,
    data_tables: &[DataUnitTable],
    unit_data: &[(u32, UnitData)],
) -> Result<(), WorkloadError> {
    let mut makers: Vec<Maker> = data_tables
        .iter()
        .map(|t| Maker {
            name: &t.name,
            count: t.count,
            span: t.name_span.clone(),
            table: None,
        })
        .chain(unit_data.iter().enumerate().flat_map(|(t, (count, data))| {
            data.outputs.iter().map(move |(name, span)| Maker {
                name,
                count: *count,
                span: span.clone(),
                table: Some(t),
            })
        }))
        .collect();
    // The later of two makers of one name is the one at fault.
    makers.sort_by_key(|m| m.span.start);

    // Each expanded name, with its maker and the member that makes it.
    let mut names: HashMap<String, (usize, u32)> = HashMap::new();
    let mut templates: Vec<usize> = Vec::new();
    let mut budget = EXPANDED_NAMES;
    for (k, m) in makers.iter().enumerate() {
        if m.count > 1 && !m.name.has_index() {
            let name = m.name.expand("0");
            let message = if m.table.is_none() {
                format!(
                    "the {} data units of this table would all be named `{name}`: put {{i}} \
                     in the name",
                    m.count
                )
            } else {
                format!(
                    "the {} units of this table would all make output_data `{name}`: put {{i}} \
                     in the name",
                    m.count
                )
            };
            return Err(src.error(m.span.clone(), message));
        }
        let twice = |earlier: &Maker, name: &str| {
            let line = src.locate(earlier.span.clone()).line;
            let by = if earlier.table.is_none() {
                "the [[data_unit]]"
            } else {
                "the output_data"
            };
            src.error(
                m.span.clone(),
                format!(
                    "data unit `{name}` is already made by {by} on line {line}: each data \
                     unit is made once"
                ),
            )
        };
        let made_by_template = |e: usize, name: &str| {
            Template::first_equal(makers[e].name, &Template::literal(name), 0, makers[e].count)
                .is_some()
        };
        if m.count as usize <= budget {
            budget -= m.count as usize;
            names.reserve(m.count as usize);
            for i in 0..m.count {
                let name = m.name.expand(&i.to_string());
                if let Some(&(e, _)) = names.get(&name) {
                    return Err(twice(&makers[e], &name));
                }
                if let Some(&e) = templates.iter().find(|&&e| made_by_template(e, &name)) {
                    return Err(twice(&makers[e], &name));
                }
                names.insert(name, (k, i));
            }
        } else {
            for &e in &templates {
                let other = &makers[e];
                if let Some((i, _)) = Template::meet(m.name, m.count, other.name, other.count) {
                    return Err(twice(other, &m.name.expand(&i.to_string())));
                }
            }
            // The first clash in file order, then by index, whatever the map's order.
            let clash = names
                .iter()
                .filter(|(name, _)| {
                    Template::first_equal(m.name, &Template::literal(name), 0, m.count).is_some()
                })
                .min_by_key(|(name, (e, _))| (*e, name.len(), name.as_str()));
            if let Some((name, (e, _))) = clash {
                return Err(twice(&makers[*e], name));
            }
            templates.push(k);
        }
    }

    let made = |name: &str| {
        names.contains_key(name)
            || templates.iter().any(|&e| {
                Template::first_equal(makers[e].name, &Template::literal(name), 0, makers[e].count)
                    .is_some()
            })
    };
    for (count, data) in unit_data {
        for (input, span) in &data.inputs {
            let unmade = |name: String| {
                src.error(
                    span.clone(),
                    format!(
                        "input_data \"{name}\" names no [[data_unit]] and no unit's output_data"
                    ),
                )
            };
            if !input.has_index() {
                let name = input.expand("0");
                if !made(&name) {
                    return Err(unmade(name));
                }
                continue;
            }
            // A maker of the same template makes the members below its count at once.
            let covered = templates
                .iter()
                .map(|&e| &makers[e])
                .filter(|m| m.name == input)
                .map(|m| m.count)
                .max()
                .unwrap_or(0);
            for i in covered..*count {
                let name = input.expand(&i.to_string());
                if !made(&name) {
                    return Err(unmade(name));
                }
            }
        }
    }
    if templates.is_empty() {
        check_no_cycle(src, unit_data, &makers, &names)?;
    }
    Ok(())
}

/// Refuses units that wait for each other in a cycle (each reads what the next one makes),
/// none of which could ever run. Members are the nodes: only those of tables that both
/// read and make data can be on a cycle, and each of them makes an expanded name, so
/// there are at most [`EXPANDED_NAMES`] of them; each is visited once.
fn check_no_cycle(
    src: &Source<'_>,
    unit_data: &[(u32, UnitData)],
    makers: &[Maker],
    names: &HashMap<String, (usize, u32)>,
) -> Result<(), WorkloadError> {
    // The first node of each table that reads and makes.
    let mut first = vec![None; unit_data.len()];
    let mut nodes = 0usize;
    for (t, (count, data)) in unit_data.iter().enumerate() {
        if !data.inputs.is_empty() && !data.outputs.is_empty() {
            first[t] = Some(nodes);
            nodes += *count as usize;
        }
    }
    let mut table_of = Vec::new();
    for (t, start) in first.iter().enumerate() {
        if let Some(start) = start {
            table_of.push((*start, t));
        }
    }
    let member_of = |node: usize| {
        let k = table_of.partition_point(|(start, _)| *start <= node) - 1;
        let (start, t) = table_of[k];
        (t, (node - start) as u32)
    };
    // The node that makes `name`, if it is on a table that reads and makes.
    let maker_of = |name: &str| {
        let (k, j) = *names.get(name)?;
        let t = makers[k].table?;
        first[t].map(|start| start + j as usize)
    };

    const NEW: u8 = 0;
    const OPEN: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![NEW; nodes];
    for root in 0..nodes {
        if state[root] != NEW {
            continue;
        }
        // Each entry: a node, the next of its inputs to follow, and the name that led to it.
        let mut stack: Vec<(usize, usize, String)> = vec![(root, 0, String::new())];
        state[root] = OPEN;
        while let Some((node, next, _)) = stack.last_mut() {
            let (t, i) = member_of(*node);
            let inputs = &unit_data[t].1.inputs;
            let Some((input, span)) = inputs.get(*next) else {
                state[*node] = DONE;
                stack.pop();
                continue;
            };
            *next += 1;
            let name = input.expand(&i.to_string());
            let Some(to) = maker_of(&name) else {
                continue;
            };
            match state[to] {
                NEW => {
                    state[to] = OPEN;
                    stack.push((to, 0, name));
                }
                OPEN => {
                    let at = stack.iter().position(|(n, _, _)| *n == to).unwrap_or(0);
                    let mut chain = vec![name.clone()];
                    chain.extend(stack[at + 1..].iter().map(|(_, _, via)| via.clone()));
                    chain.push(name.clone());
                    return Err(src.error(
                        span.clone(),
                        format!(
                            "input_data \"{name}\" closes a cycle ({}): each of these data \
                             units is made by a unit that waits for the next, so none of those \
                             units could ever run",
                            chain.join(" → ")
                        ),
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Whether a data unit's path is a pattern: it holds `*`, `?` or `[`.
fn is_pattern(path: &Path) -> bool {
    path.to_string_lossy().contains(['*', '?', '['])
}

/// Whether anything on the disk matches `pattern`: in each component, `*` is any run of
/// characters, `?` one character, `[a-z]` / `[!a]` one character of (or not of) a set; a
/// component `**` is any number of directories. Symbolic links to directories are not
/// followed by `**`.
fn matches_any(pattern: &Path) -> bool {
    let parts: Vec<&std::ffi::OsStr> = pattern.iter().collect();
    walk(PathBuf::new(), &parts)
}

fn walk(at: PathBuf, parts: &[&std::ffi::OsStr]) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return at.exists();
    };
    let text = first.to_string_lossy();
    let entries = |dir: &Path| {
        std::fs::read_dir(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
    };
    if text == "**" {
        return walk(at.clone(), rest)
            || entries(&at)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .any(|e| walk(at.join(e.file_name()), parts));
    }
    if !text.contains(['*', '?', '[']) {
        return walk(at.join(first), rest);
    }
    let pattern: Vec<char> = text.chars().collect();
    entries(&at).any(|e| {
        let name: Vec<char> = e.file_name().to_string_lossy().chars().collect();
        wildcard(&pattern, &name) && walk(at.join(e.file_name()), rest)
    })
}

/// Whether `name` matches the shell pattern `pattern` (see [`matches_any`]); a `[` without
/// its `]` is itself.
fn wildcard(pattern: &[char], name: &[char]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) => (0..=name.len()).any(|k| wildcard(rest, &name[k..])),
        Some(('?', rest)) => !name.is_empty() && wildcard(rest, &name[1..]),
        Some(('[', rest)) if rest.iter().skip(1).any(|c| *c == ']') => {
            let (negated, set) = match rest.first() {
                Some('!' | '^') => (true, &rest[1..]),
                _ => (false, rest),
            };
            // A `]` first in the set is itself.
            let Some(end) = set.iter().skip(1).position(|c| *c == ']').map(|p| p + 1) else {
                return name.first() == Some(&'[') && wildcard(rest, &name[1..]);
            };
            let (class, after) = (&set[..end], &set[end + 1..]);
            let Some((c, name_rest)) = name.split_first() else {
                return false;
            };
            let mut k = 0;
            let mut hit = false;
            while k < class.len() {
                if k + 2 < class.len() && class[k + 1] == '-' {
                    hit |= (class[k]..=class[k + 2]).contains(c);
                    k += 3;
                } else {
                    hit |= class[k] == *c;
                    k += 1;
                }
            }
            hit != negated && wildcard(after, name_rest)
        }
        Some((p, rest)) => name.first() == Some(p) && wildcard(rest, &name[1..]),
    }
}

/// The value of an optional key, or its type's default.
fn value_or_default<T: Default>(value: Option<Spanned<T>>) -> T {
    value.map(Spanned::into_inner).unwrap_or_default()
}

/// `1 core`, `4 cores`.
fn amount(n: u32, what: &str) -> String {
    if n == 1 {
        format!("{n} {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The value of a count-like `field` that must be at least 1, or `default` when absent.
fn at_least_one(
    src: &Source<'_>,
    value: Option<Spanned<u32>>,
    field: &'static str,
    default: u32,
) -> Result<u32, WorkloadError> {
    match value {
        None => Ok(default),
        Some(v) if *v.get_ref() == 0 => {
            Err(src.error(v.span(), DescriptionError::Zero { field }.to_string()))
        }
        Some(v) => Ok(v.into_inner()),
    }
}

/// The duration `text` gives for `field` (a `walltime` or a `time_request`), or what is
/// wrong with it.
fn parse_time(field: &str, text: &str) -> Result<Duration, String> {
    duration(text).map_err(|why| {
        format!(
            "`{field}` `{}` is not a duration: {why} (expected e.g. \"10m\", \"1h 30m\" or \
             \"01:30:00\")",
            text.trim()
        )
    })
}

/// A humantime duration (`"10m"`, `"1h 30m"`) or `HH:MM:SS` / `MM:SS`, or why `text` is
/// not one.
fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.contains(':') {
        return humantime::parse_duration(text).map_err(|e| e.to_string());
    }
    let parts: Vec<&str> = text.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return Err("a clock time is `HH:MM:SS` or `MM:SS`".to_owned());
    }
    let mut secs: u64 = 0;
    for (k, part) in parts.iter().enumerate() {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("`{part}` is not a number"));
        }
        let n: u64 = part.parse().map_err(|_| format!("`{part}` is too large"))?;
        if k > 0 && n >= 60 {
            return Err(format!("`{part}` must be below 60"));
        }
        secs = secs
            .checked_mul(60)
            .and_then(|s| s.checked_add(n))
            .ok_or_else(|| "it is too long".to_owned())?;
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &[Scheme] = &[Scheme::Local];

    /// `path` made absolute against the current directory, as the parser does.
    fn abs(path: &str) -> PathBuf {
        std::path::absolute(path).expect("absolute path")
    }

    fn parse_ok(text: &str) -> Workload {
        match parse(Path::new("dir/work.toml"), text, LOCAL, false) {
            Ok(w) => w,
            Err(e) => panic!("expected the workload to parse, got:\n{e}"),
        }
    }

    fn parse_err(text: &str) -> WorkloadError {
        match parse(Path::new("work.toml"), text, LOCAL, false) {
            Ok(w) => panic!("expected an error, got {w:?}"),
            Err(e) => e,
        }
    }

    const GOOD: &str = r#"
[[pilot]]
name = "small"
resource = "local://"

[[pilot]]
name = "big"
resource = "local://"
cores = 4
gpus = 1
walltime = "1h 30m"
queue = "short"
project = "p42"
working_directory = "sandbox"
environment = { OMP_NUM_THREADS = "4" }
affinity = { datacenter = "dc1", machine = "m7" }

[[unit]]
name = "hello-{i}"
executable = "/bin/echo"
arguments = ["hello", "{i}"]
environment = { IDX = "{i}", FIXED = "x" }
count = 3
tags = ["ensemble"]

[[unit]]
executable = "/usr/bin/nvidia-smi"
cores = 4
gpus = 1
pilot = "big"
working_directory = "/abs"
stdout = "out.txt"
stderr = "err.txt"
pre_exec = ["module load cuda"]
shell = true
input_data = []
output_data = []
"#;

    #[test]
    fn good_file_parses_with_defaults_ensembles_and_binding() {
        let w = parse_ok(GOOD);
        assert_eq!(w.path, Path::new("dir/work.toml"));

        assert_eq!(w.pilots.len(), 2);
        let small = &w.pilots[0];
        assert_eq!(small.name.as_deref(), Some("small"));
        assert_eq!(small.cores, 1);
        assert_eq!(small.gpus, 0);
        assert_eq!(small.walltime, Duration::from_secs(3600));
        assert_eq!(small.working_directory, None);
        let big = &w.pilots[1];
        assert_eq!(big.resource.scheme(), Scheme::Local);
        assert_eq!((big.cores, big.gpus), (4, 1));
        assert_eq!(big.walltime, Duration::from_secs(90 * 60));
        assert_eq!(big.queue.as_deref(), Some("short"));
        assert_eq!(big.project.as_deref(), Some("p42"));
        assert_eq!(
            big.working_directory.as_deref(),
            Some(abs("dir/sandbox").as_path())
        );
        assert_eq!(
            big.environment.get("OMP_NUM_THREADS").map(String::as_str),
            Some("4")
        );
        assert_eq!(big.affinity.datacenter.as_deref(), Some("dc1"));
        assert_eq!(big.affinity.machine.as_deref(), Some("m7"));

        assert_eq!(w.unit_count(), 4);
        let units: Vec<WorkloadUnit> = w.units().collect();
        for (i, unit) in units[..3].iter().enumerate() {
            let d = &unit.description;
            assert_eq!(unit.pilot, None);
            assert_eq!(d.name, Some(format!("hello-{i}")));
            assert_eq!(d.executable, "/bin/echo");
            assert_eq!(d.arguments, vec!["hello".to_owned(), i.to_string()]);
            assert_eq!(d.environment.get("IDX"), Some(&i.to_string()));
            assert_eq!(d.environment.get("FIXED").map(String::as_str), Some("x"));
            assert_eq!(d.tags, vec!["ensemble".to_owned()]);
            assert_eq!(d.cores, 1);
        }

        let gpu = &units[3];
        assert_eq!(gpu.pilot, Some(1));
        let d = &gpu.description;
        assert_eq!(d.name, None);
        assert_eq!(d.pilot, None);
        assert_eq!((d.cores, d.gpus), (4, 1));
        assert_eq!(d.working_directory.as_deref(), Some(Path::new("/abs")));
        assert_eq!(d.stdout.as_deref(), Some("out.txt"));
        assert_eq!(d.stderr.as_deref(), Some("err.txt"));
        assert_eq!(d.pre_exec, vec!["module load cuda".to_owned()]);
        assert!(d.shell);
    }

    #[test]
    fn walltime_forms() {
        let cases = [
            ("10m", 600),
            ("1h 30m", 5400),
            ("01:30:00", 5400),
            ("90:00", 5400),
            ("0:00:05", 5),
            ("45s", 45),
        ];
        for (text, secs) in cases {
            assert_eq!(
                parse_time("walltime", text),
                Ok(Duration::from_secs(secs)),
                "walltime {text:?}"
            );
        }
        for text in [
            "",
            "ten minutes",
            "1:60:00",
            "1:2:3:4",
            "a:00",
            ":30",
            "10x",
        ] {
            assert!(
                parse_time("walltime", text).is_err(),
                "walltime {text:?} should be refused"
            );
        }
    }

    /// `(what, file, line, column, part of the message)`.
    const BAD: &[(&str, &str, usize, usize, &str)] = &[
        (
            "syntax error",
            "[[pilot]]\nresource = \"local://\"\ncores = = 2\n",
            3,
            9,
            "invalid string: expected `\"`, `'`",
        ),
        (
            "unterminated string",
            "[[pilot]]\nresource = \"local://\n",
            2,
            21,
            "invalid basic string",
        ),
        (
            "misspelled pilot key",
            "[[pilot]]\nresource = \"local://\"\ncorse = 2\n",
            3,
            1,
            "unknown field `corse`, expected one of",
        ),
        (
            "misspelled unit key",
            "[[pilot]]\nresource = \"local://\"\n[[unit]]\nexecutable = \"/bin/true\"\nargs = []\n",
            5,
            1,
            "unknown field `args`",
        ),
        (
            "unknown top-level key",
            "[[pilots]]\nresource = \"local://\"\n",
            1,
            3,
            "unknown field `pilots`, expected one of `session`, `pilot`, `unit`",
        ),
        (
            "unknown affinity key",
            "[[pilot]]\nresource = \"local://\"\naffinity = { rack = \"r1\" }\n",
            3,
            14,
            "unknown field `rack`",
        ),
        (
            "wrong type",
            "[[pilot]]\nresource = \"local://\"\ncores = \"two\"\n",
            3,
            9,
            "`cores` must be a whole number from 1 up, not \"two\"",
        ),
        (
            "negative cores",
            "[[pilot]]\nresource = \"local://\"\ncores = -1\n",
            3,
            9,
            "`cores` must be a whole number from 1 up, not -1",
        ),
        (
            "zero pilot cores",
            "[[pilot]]\nresource = \"local://\"\ncores = 0\n",
            3,
            9,
            "`cores` must be at least 1",
        ),
        (
            "zero unit cores",
            "[[pilot]]\nresource = \"local://\"\n[[unit]]\nexecutable = \"/bin/true\"\ncores = 0\n",
            5,
            9,
            "`cores` must be at least 1",
        ),
        (
            "zero count",
            "[[pilot]]\nresource = \"local://\"\n[[unit]]\nexecutable = \"/bin/true\"\ncount = 0\n",
            5,
            9,
            "`count` must be at least 1",
        ),
        (
            "empty executable",
            "[[pilot]]\nresource = \"local://\"\n[[unit]]\nexecutable = \"  \"\n",
            4,
            14,
            "`executable` is empty",
        ),
        (
            "missing executable",
            "[[pilot]]\nresource = \"local://\"\n[[unit]]\nname = \"x\"\n",
            3,
            1,
            "missing field `executable`",
        ),
        (
            "missing resource",
            "[[pilot]]\ncores = 2\n",
            1,
            1,
            "missing field `resource`",
        ),
        (
            "bad walltime",
            "[[pilot]]\nresource = \"local://\"\nwalltime = \"ten minutes\"\n",
            3,
            12,
            "`walltime` `ten minutes` is not a duration",
        ),
        (
            "zero walltime",
            "[[pilot]]\nresource = \"local://\"\nwalltime = \"0s\"\n",
            3,
            12,
            "`walltime` must be longer than zero",
        ),
        (
            "resource that does not parse",
            "[[pilot]]\nresource = \"not a url\"\n",
            2,
            12,
            "`not a url` is not a URL",
        ),
        (
            "unknown scheme",
            "[[pilot]]\nresource = \"gram://host\"\n",
            2,
            12,
            "unknown resource scheme `gram`",
        ),
        (
            "unsupported scheme",
            "[[pilot]]\nresource = \"local://\"\n\n[[pilot]]\n  resource = \"slurm://\"\n",
            5,
            14,
            "resource scheme `slurm` is not supported by this pstar yet (supported: local://)",
        ),
        (
            "duplicate pilot name",
            "[[pilot]]\nname = \"a\"\nresource = \"local://\"\n[[pilot]]\nname = \"a\"\nresource = \"local://\"\n",
            5,
            8,
            "a pilot named `a` is already declared on line 2",
        ),
        (
            "binding to no pilot",
            "[[pilot]]\nname = \"big\"\nresource = \"local://\"\n[[unit]]\nexecutable = \"/bin/true\"\npilot = \"bgi\"\n",
            6,
            9,
            "no pilot is named `bgi` (named pilots: `big`)",
        ),
        (
            "unit larger than every pilot",
            "[[pilot]]\nresource = \"local://\"\ncores = 2\n[[pilot]]\nresource = \"local://\"\n[[unit]]\nexecutable = \"/bin/true\"\ncores = 4\n",
            8,
            9,
            "unit needs 4 cores but the largest pilot has 2 cores",
        ),
        (
            "unit larger than its bound pilot",
            "[[pilot]]\nresource = \"local://\"\ncores = 8\n[[pilot]]\nname = \"small\"\nresource = \"local://\"\ncores = 2\n[[unit]]\nexecutable = \"/bin/true\"\ncores = 4\npilot = \"small\"\n",
            10,
            9,
            "unit needs 4 cores but pilot `small` has 2",
        ),
        (
            "unit needing gpus no pilot has",
            "[[pilot]]\nresource = \"local://\"\n[[unit]]\nexecutable = \"/bin/true\"\ngpus = 1\n",
            5,
            8,
            "unit needs 1 GPU but the largest pilot has 0 GPUs",
        ),
        (
            "cores and gpus on different pilots",
            "[[pilot]]\nresource = \"local://\"\ncores = 4\n[[pilot]]\nresource = \"local://\"\ngpus = 1\n[[unit]]\nexecutable = \"/bin/true\"\ncores = 4\ngpus = 1\n",
            9,
            9,
            "unit needs 4 cores and 1 GPU but no pilot has both",
        ),
        (
            "no pilot",
            "# nothing but units\n[[unit]]\nexecutable = \"/bin/true\"\n",
            1,
            1,
            "no [[pilot]] declared",
        ),
        (
            "no unit",
            "[[pilot]]\nresource = \"local://\"\n",
            1,
            1,
            "no [[unit]] declared",
        ),
        ("empty file", "", 1, 1, "no [[pilot]] declared"),
        (
            "NUL in a pilot's queue",
            "[[pilot]]\nresource = \"local://\"\nqueue = \"a\\u0000\"\n",
            3,
            9,
            "`queue` contains a NUL byte",
        ),
        (
            "pilot environment variable with =",
            "[[pilot]]\nresource = \"local://\"\nenvironment = { \"A=1\" = \"x\" }\n",
            3,
            15,
            "environment variable name `A=1` contains `=`",
        ),
    ];

    #[test]
    fn bad_files_are_refused_at_the_right_place() {
        let mut failures = Vec::new();
        for &(what, text, line, column, message) in BAD {
            let e = parse_err(text);
            let got = (e.line(), e.column());
            if got != (Some(line), Some(column)) || !e.message().contains(message) {
                failures.push(format!(
                    "{what}: expected {line}:{column} containing {message:?}, got {got:?}:\n{e}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn display_shows_file_location_and_caret() {
        let text = "[[pilot]]\nresource = \"local://\"\n\n[[unit]]\nexecutable = \"/bin/true\"\n\ncores = 0\n";
        let e = parse_err(text);
        assert_eq!(
            e.to_string(),
            "work.toml:7:9: `cores` must be at least 1\n  |\n7 | cores = 0\n  |         ^"
        );
    }

    #[test]
    fn display_underlines_the_whole_value() {
        let text = "[[pilot]]\nresource = \"slurm://\"\n[[unit]]\nexecutable = \"/bin/true\"\n";
        let e = parse_err(text);
        let rendered = e.to_string();
        let last = rendered.lines().last().unwrap_or_default();
        assert_eq!(last, "  |            ^^^^^^^^^^");
    }

    #[test]
    fn display_widens_the_gutter_for_long_line_numbers() {
        let mut text =
            "[[pilot]]\nresource = \"local://\"\n[[unit]]\nexecutable = \"/bin/true\"\n".to_owned();
        text.push_str(&"\n".repeat(6));
        text.push_str("count = 0\n");
        let e = parse_err(&text);
        assert_eq!(e.line(), Some(11));
        assert!(
            e.to_string()
                .ends_with("\n   |\n11 | count = 0\n   |         ^"),
            "{e}"
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let text =
            "[[pilot]]\nresource = \"local://\"\naffinity = { machine = \"é\", rack = \"r1\" }\n";
        let e = parse_err(text);
        assert_eq!((e.line(), e.column()), (Some(3), Some(29)), "{e}");
    }

    #[test]
    fn binding_to_a_pilot_without_names_says_so() {
        let text = "[[pilot]]\nresource = \"local://\"\n[[unit]]\nexecutable = \"/bin/true\"\npilot = \"x\"\n";
        let e = parse_err(text);
        assert!(e.message().contains("no pilot has a `name`"), "{e}");
    }

    #[test]
    fn the_session_table_sets_how_the_workload_runs() {
        let body = "[[pilot]]\nresource = \"local://\"\n[[unit]]\nexecutable = \"/bin/true\"\n";
        let w = parse_ok(&format!(
            "[session]\ncoordination = \"redis://h:6379/2\"\nheartbeat_timeout = \"45s\"\n\
             max_attempts = 5\nblack_hole_failures = 0\nagent_start_timeout = \"3m\"\n\
             poll_interval = \"500ms\"\nagent_binary = \"bin/pstar\"\nprefetch = 0\n\
             keep = \"1day\"\ndrain_margin = \"0s\"\n{body}"
        ));
        let session = SessionSettings {
            origin: Default::default(),
            at: Default::default(),
            ..w.session.clone()
        };
        assert_eq!(
            session,
            SessionSettings {
                coordination: Some("redis://h:6379/2".into()),
                heartbeat_timeout: Some(Duration::from_secs(45)),
                max_attempts: Some(5),
                black_hole_failures: Some(0),
                agent_start_timeout: Some(Duration::from_secs(180)),
                poll_interval: Some(Duration::from_millis(500)),
                agent_binary: Some(abs("dir/bin/pstar")),
                prefetch: Some(0),
                keep: Some(Duration::from_secs(24 * 3600)),
                drain_margin: Some(Duration::ZERO),
                ..Default::default()
            }
        );
        // Each setting remembers the line of its key.
        let settings = pstar::Settings::layered([&w.session]);
        for (name, line) in [
            ("coordination", 2),
            ("max_attempts", 4),
            ("agent_binary", 8),
            ("drain_margin", 11),
        ] {
            assert_eq!(
                settings.origin(name),
                &pstar::Origin::Workload {
                    path: "dir/work.toml".into(),
                    line
                },
                "{name}"
            );
        }
        assert_eq!(parse_ok(body).session, SessionSettings::default());

        let cases = [
            (
                "[session]\ncoordination = \"http://h\"\n",
                2,
                16,
                "not a redis://",
            ),
            (
                "[session]\nheartbeat_timeout = \"soon\"\n",
                2,
                21,
                "not a duration",
            ),
            ("[session]\nmax_attempts = 0\n", 2, 16, "at least 1"),
            (
                "[session]\nkeep = \"0s\"\n",
                2,
                8,
                "`keep` must be from 1s to 1year, not 0s",
            ),
            (
                "[session]\nagent_binary = \"\"\n",
                2,
                16,
                "must not be empty",
            ),
            ("[session]\nretries = 2\n", 2, 1, "unknown field `retries`"),
            (
                "[[session]]\nmax_attempts = 2\n",
                1,
                1,
                "invalid type: sequence, expected one table, written with single brackets",
            ),
        ];
        for (head, line, column, message) in cases {
            let e = parse_err(&format!("{head}{body}"));
            assert_eq!((e.line(), e.column()), (Some(line), Some(column)), "{e}");
            assert!(e.message().contains(message), "{e}");
        }
    }

    #[test]
    fn nodes_must_divide_cores_and_gpus() {
        let cases = [
            (
                "cores = 6\nnodes = 4\n",
                4,
                "6 cores cannot be spread evenly over 4 nodes",
            ),
            (
                "cores = 4\ngpus = 3\nnodes = 2\n",
                5,
                "3 GPUs cannot be spread evenly over 2 nodes",
            ),
        ];
        for (fields, line, message) in cases {
            let text = format!(
                "[[pilot]]\nresource = \"slurm://\"\n{fields}[[unit]]\nexecutable = \"/bin/true\"\n"
            );
            let e = match parse(Path::new("w.toml"), &text, &[Scheme::Slurm], false) {
                Ok(_) => panic!("expected {message}"),
                Err(e) => e,
            };
            assert_eq!((e.line(), e.column()), (Some(line), Some(9)), "{e}");
            assert!(e.message().contains(message), "{e}");
        }
    }

    #[test]
    fn supported_schemes_are_listed() {
        let text = "[[pilot]]\nresource = \"pbs://\"\n[[unit]]\nexecutable = \"/bin/true\"\n";
        let e = match parse(
            Path::new("w.toml"),
            text,
            &[Scheme::Local, Scheme::Ssh],
            false,
        ) {
            Ok(w) => panic!("expected an error, got {w:?}"),
            Err(e) => e,
        };
        assert_eq!(
            e.message(),
            "resource scheme `pbs` is not supported by this pstar yet (supported: local://, ssh://)"
        );
        let ok = "[[pilot]]\nresource = \"ssh://me@host\"\n[[unit]]\nexecutable = \"/bin/true\"\n";
        let w = parse(Path::new("w.toml"), ok, &[Scheme::Local, Scheme::Ssh], true)
            .map_err(|e| e.to_string());
        assert_eq!(w.map(|w| w.pilots[0].resource.scheme()), Ok(Scheme::Ssh));
    }

    #[test]
    fn load_reads_the_file_and_names_it_when_it_cannot() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("w.toml");
        std::fs::write(&path, "[[pilot]]\nresource = \"local://\"\nworking_directory = \"sb\"\n[[unit]]\nexecutable = \"/bin/true\"\n")
            .expect("write workload");
        let w = load(&path, LOCAL, false)
            .map_err(|e| e.to_string())
            .expect("workload loads");
        assert_eq!(w.pilots[0].working_directory, Some(dir.path().join("sb")));
        assert_eq!(w.unit_count(), 1);

        let missing = dir.path().join("missing.toml");
        let e = load(&missing, LOCAL, false).expect_err("a missing file is an error");
        assert_eq!((e.line(), e.column()), (None, None));
        assert!(
            e.to_string()
                .starts_with(&format!("{}: cannot read workload file", missing.display())),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn every_example_parses() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples"));
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("examples directory") {
            let path = entry.expect("directory entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                if let Err(e) = load(&path, LOCAL, false) {
                    panic!("{e}");
                }
                seen += 1;
            }
        }
        assert!(
            seen >= 2,
            "expected the examples, found {seen} workload files in {}",
            dir.display()
        );
    }

    #[test]
    fn quickstart_is_eight_echoes_on_one_pilot() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/quickstart.toml"
        ));
        let w = load(path, LOCAL, false)
            .map_err(|e| e.to_string())
            .expect("quickstart loads");
        assert_eq!(w.pilots.len(), 1);
        assert_eq!(w.pilots[0].cores, 2);
        assert_eq!(w.pilots[0].walltime, Duration::from_secs(600));
        assert_eq!(w.unit_count(), 8);
        assert_eq!(
            w.units().nth(7).map(|u| u.description.arguments),
            Some(vec!["hello".to_owned(), "7".to_owned()])
        );
    }

    #[test]
    fn what_if_is_two_counted_pilots_timed_units_and_a_simulation() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/what-if.toml"
        ));
        let w = load(path, LOCAL, false)
            .map_err(|e| e.to_string())
            .expect("what-if loads");
        let names: Vec<Option<&str>> = w.pilots.iter().map(|p| p.name.as_deref()).collect();
        assert_eq!(names, [Some("node-1"), Some("node-2")]);
        assert_eq!(w.unit_count(), 7);
        let units: Vec<WorkloadUnit> = w.units().collect();
        assert_eq!(
            units[0].description.time_request,
            Some(Duration::from_secs(60))
        );
        assert_eq!(units[6].pilot, Some(0));
        let simulation = w.simulation.expect("a [simulation] table");
        assert_eq!(
            simulation.queue_wait,
            QueueWait::Uniform {
                min: Duration::from_secs(60),
                max: Duration::from_secs(300)
            }
        );
        assert_eq!(simulation.unit_time, Duration::from_secs(30));
    }

    #[test]
    fn queue_waits_are_spread_over_the_range() {
        let (min, max) = (Duration::from_secs(60), Duration::from_secs(300));
        let range = QueueWait::Uniform { min, max };
        assert_eq!(range.at(0.0), min);
        assert_eq!(range.at(0.5), Duration::from_secs(180));
        assert_eq!(range.at(1.0), max);
        assert_eq!(range.at(7.0), max);
        assert_eq!(range.at(f64::NAN), min);
        assert_eq!(QueueWait::Fixed(max).at(0.3), max);
        let longest = QueueWait::Uniform {
            min: Duration::ZERO,
            max: Duration::MAX,
        };
        assert_eq!(longest.at(1.0), Duration::MAX);
    }

    #[test]
    fn ensemble_index_reaches_output_files_working_directory_and_pre_exec() {
        let text = r#"
[[pilot]]
resource = "local://"

[[unit]]
executable = "/bin/true"
stdout = "out-{i}.txt"
stderr = "logs/{i}/err"
working_directory = "/data/run-{i}"
pre_exec = ["echo {i}"]
count = 2
"#;
        let w = parse(Path::new("dir/work.toml"), text, &[Scheme::Local], false).unwrap();
        for (i, unit) in w.units().enumerate() {
            let d = &unit.description;
            assert_eq!(d.stdout, Some(format!("out-{i}.txt")));
            assert_eq!(d.stderr, Some(format!("logs/{i}/err")));
            assert_eq!(
                d.working_directory,
                Some(PathBuf::from(format!("/data/run-{i}")))
            );
            assert_eq!(d.pre_exec, vec![format!("echo {i}")]);
        }
    }

    #[test]
    fn braces_escape_and_other_braces_stay() {
        let cases = [
            ("{i}", "7"),
            ("{{i}}", "{i}"),
            ("${{X}}", "${X}"),
            ("{{{i}}}", "{7}"),
            ("{{}}", "{}"),
            ("awk '{print $1}'", "awk '{print $1}'"),
            ("{", "{"),
            ("a{i}b{i}", "a7b7"),
            ("é{i}ü", "é7ü"),
        ];
        for (text, expanded) in cases {
            assert_eq!(Template::parse(text).expand("7"), expanded, "{text}");
        }
    }

    #[test]
    fn a_huge_ensemble_is_one_template() {
        let w = parse_ok(
            "[[pilot]]\nresource = \"local://\"\n[[unit]]\nname = \"u{i}\"\n\
             executable = \"/bin/true\"\ncount = 10000000\n",
        );
        assert_eq!(w.unit_count(), 10_000_000);
        assert_eq!(w.ensembles.len(), 1);
        let last = w.ensembles[0].unit(9_999_999);
        assert_eq!(last.description.name.as_deref(), Some("u9999999"));
        let first: Vec<String> = w
            .units()
            .take(3)
            .filter_map(|u| u.description.name)
            .collect();
        assert_eq!(first, ["u0", "u1", "u2"]);
    }

    #[test]
    fn shared_output_files_are_found_for_any_member_without_expanding_all() {
        // Against expanding every member, on small ensembles.
        let texts = [
            "o",
            "o{i}",
            "o1",
            "o12",
            "{i}",
            "{i}{i}",
            "1{i}",
            "{i}1",
            "11",
            "out/./o{i}",
            "out/o3",
            "stderr",
            "./stderr",
            "x{{i}}",
            "x{i}",
            "{i}0",
            "100",
            "{i}{i}1",
            "111",
            "55",
            "/a//b{i}",
            "/a/b7",
            "x/../o1",
            "o{i}/../out/o3",
            "../o{i}",
            "/../a/b7",
        ];
        let count = 120;
        for a in texts {
            for b in texts {
                let (ta, tb) = (Template::parse(a).lexical(), Template::parse(b).lexical());
                let brute = (1..count).find(|i| {
                    let i = i.to_string();
                    lexical_text(&Template::parse(a).expand(&i))
                        == lexical_text(&Template::parse(b).expand(&i))
                });
                assert_eq!(
                    Template::first_equal(&ta, &tb, 1, count),
                    brute,
                    "{a:?} against {b:?}"
                );
            }
        }
        // Large indices, found at once.
        let (a, b) = (Template::parse("o{i}"), Template::parse("o9999998"));
        assert_eq!(
            Template::first_equal(&a, &b, 1, 10_000_000),
            Some(9_999_998)
        );
        assert_eq!(Template::first_equal(&a, &b, 1, 9_999_998), None);
        let (a, b) = (Template::parse("{i}{i}"), Template::parse("{i}"));
        assert_eq!(Template::first_equal(&a, &b, 0, u32::MAX), None);
    }

    fn lexical_text(path: &str) -> PathBuf {
        use std::path::Component;
        let mut kept: Vec<Component> = Vec::new();
        for c in Path::new(path).components() {
            match c {
                Component::CurDir => {}
                Component::ParentDir => match kept.last() {
                    Some(Component::Normal(_)) => {
                        kept.pop();
                    }
                    Some(Component::RootDir) => {}
                    _ => kept.push(c),
                },
                _ => kept.push(c),
            }
        }
        kept.iter().collect()
    }

    #[test]
    fn members_are_refused_as_the_pilot_api_would() {
        // `(fields, line and column of the key at fault, message)`.
        let cases = [
            (
                "stdout = \"o{i}\"\nstderr = \"o2\"\ncount = 3\n",
                (6, 10),
                "member 2: `stdout` and `stderr` name the same file `o2`",
            ),
            (
                "stdout = \"o{i}\"\nstderr = \"o{i}\"\n",
                (6, 10),
                "name the same file `o0`",
            ),
            (
                "stdout = \"stderr\"\n",
                (5, 10),
                "name the same file `stderr`",
            ),
            (
                "arguments = [\"{i}\\u0000\"]\n",
                (5, 13),
                "`arguments` contains a NUL byte",
            ),
            (
                "environment = { \"A=\" = \"{i}\" }\n",
                (5, 15),
                "environment variable name `A=` contains `=`",
            ),
            ("stdout = \"\"\ncount = 5\n", (5, 10), "`stdout` is empty"),
            (
                "tags = [\"a\\u0000\"]\n",
                (5, 8),
                "`tags` contains a NUL byte",
            ),
        ];
        for (fields, (line, column), message) in cases {
            let text = format!(
                "[[pilot]]\nresource = \"local://\"\n[[unit]]\nexecutable = \"/bin/true\"\n{fields}"
            );
            let e = parse_err(&text);
            assert_eq!((e.line(), e.column()), (Some(line), Some(column)), "{e}");
            assert!(e.message().contains(message), "{fields}: {e}");
        }
        let ok = "[[pilot]]\nresource = \"local://\"\n[[unit]]\nexecutable = \"/bin/true\"\n\
                  stdout = \"o{i}\"\nstderr = \"o2\"\ncount = 2\n";
        assert_eq!(parse_ok(ok).unit_count(), 2);
    }

    #[test]
    fn relative_paths_become_absolute_against_the_workload_directory() {
        let w = parse_ok(
            "[[pilot]]\nresource = \"local://\"\n[[unit]]\nexecutable = \"/bin/true\"\n\
             working_directory = \".\"\n",
        );
        let unit = w.units().next().expect("one unit");
        let dir = unit
            .description
            .working_directory
            .expect("a working directory");
        assert!(dir.is_absolute(), "{}", dir.display());
        assert_eq!(dir, abs("dir"));
    }

    const ONE_PILOT: &str = "[[pilot]]\nresource = \"local://\"\n";
    const ONE_UNIT: &str = "[[unit]]\nexecutable = \"/bin/true\"\n";

    /// Checks that each `(what, file, line, column, message)` is refused at that place
    /// with exactly that message.
    fn assert_refused_exactly(cases: &[(&str, String, usize, usize, &str)]) {
        let mut failures = Vec::new();
        for (what, text, line, column, message) in cases {
            match parse(Path::new("work.toml"), text, LOCAL, false) {
                Ok(_) => failures.push(format!("{what}: accepted")),
                Err(e) => {
                    if (e.line(), e.column()) != (Some(*line), Some(*column))
                        || e.message() != *message
                    {
                        failures.push(format!(
                            "{what}: expected {line}:{column}: {message}\n  got {:?}:{:?}: {}",
                            e.line(),
                            e.column(),
                            e.message()
                        ));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn time_request_takes_the_walltime_forms_for_every_member() {
        for (text, secs) in [
            ("30m", 1800),
            ("1h 30m", 5400),
            ("00:45:00", 2700),
            ("90:00", 5400),
            ("10s", 10),
            ("2h", 7200),
        ] {
            let w = parse_ok(&format!(
                "[[pilot]]\nresource = \"local://\"\nwalltime = \"2h\"\n[[unit]]\n\
                 executable = \"/bin/true\"\ncount = 3\ntime_request = \"{text}\"\n"
            ));
            let times: Vec<Option<Duration>> =
                w.units().map(|u| u.description.time_request).collect();
            assert_eq!(times, vec![Some(Duration::from_secs(secs)); 3], "{text}");
        }
        let w = parse_ok(&format!("{ONE_PILOT}{ONE_UNIT}"));
        assert_eq!(
            w.units().next().map(|u| u.description.time_request),
            Some(None)
        );
        // A unit fits the one pilot that is long enough, even when another is larger.
        let w = parse_ok(
            "[[pilot]]\nresource = \"local://\"\ncores = 8\nwalltime = \"10m\"\n\
             [[pilot]]\nresource = \"local://\"\nwalltime = \"3h\"\n\
             [[unit]]\nexecutable = \"/bin/true\"\ntime_request = \"2h\"\n",
        );
        assert_eq!(w.unit_count(), 1);
    }

    #[test]
    fn time_requests_no_pilot_can_meet_are_refused_at_the_key() {
        let unit =
            |fields: &str| format!("{ONE_PILOT}[[unit]]\nexecutable = \"/bin/true\"\n{fields}");
        assert_refused_exactly(&[
            (
                "not a duration",
                unit("time_request = \"soon\"\n"),
                5,
                16,
                "`time_request` `soon` is not a duration: expected number at 0 \
                 (expected e.g. \"10m\", \"1h 30m\" or \"01:30:00\")",
            ),
            (
                "a clock time out of range",
                unit("time_request = \"1:75:00\"\n"),
                5,
                16,
                "`time_request` `1:75:00` is not a duration: `75` must be below 60 \
                 (expected e.g. \"10m\", \"1h 30m\" or \"01:30:00\")",
            ),
            (
                "zero",
                unit("time_request = \"0s\"\n"),
                5,
                16,
                "`time_request` must be longer than zero (leave it out when the run time is \
                 not known)",
            ),
            (
                "zero as a clock time",
                unit("count = 4\ntime_request = \"00:00\"\n"),
                6,
                16,
                "`time_request` must be longer than zero (leave it out when the run time is \
                 not known)",
            ),
            (
                "not a string",
                unit("time_request = 30\n"),
                5,
                16,
                "`time_request` must be a duration in quotes such as \"1h\" or \"01:00:00\", not 30",
            ),
            (
                "longer than every pilot's walltime",
                format!(
                    "{ONE_PILOT}[[pilot]]\nresource = \"local://\"\nwalltime = \"2h\"\n\
                     [[unit]]\nexecutable = \"/bin/true\"\ntime_request = \"3h\"\n"
                ),
                8,
                16,
                "`time_request` 3h is longer than the walltime of the longest pilot (2h)",
            ),
            (
                "longer than its bound pilot's walltime",
                "[[pilot]]\nname = \"short\"\nresource = \"local://\"\nwalltime = \"10m\"\n\
                 [[pilot]]\nresource = \"local://\"\nwalltime = \"3h\"\n[[unit]]\n\
                 executable = \"/bin/true\"\npilot = \"short\"\ntime_request = \"1h\"\n"
                    .to_owned(),
                11,
                16,
                "`time_request` 1h is longer than the walltime of pilot `short` (10m)",
            ),
            (
                "long pilots too small, large pilots too short",
                "[[pilot]]\nresource = \"local://\"\ncores = 4\nwalltime = \"1h\"\n\
                 [[pilot]]\nresource = \"local://\"\nwalltime = \"5h\"\n[[unit]]\n\
                 executable = \"/bin/true\"\ncores = 4\ntime_request = \"2h\"\n"
                    .to_owned(),
                10,
                9,
                "unit needs 4 cores and a walltime of 2h but no pilot has both",
            ),
            (
                "three needs no pilot meets at once",
                "[[pilot]]\nresource = \"local://\"\ncores = 4\ngpus = 1\nwalltime = \"1h\"\n\
                 [[pilot]]\nresource = \"local://\"\ncores = 4\nwalltime = \"5h\"\n\
                 [[unit]]\nexecutable = \"/bin/true\"\ncores = 4\ngpus = 1\n\
                 time_request = \"2h\"\n"
                    .to_owned(),
                12,
                9,
                "unit needs 4 cores, 1 GPU and a walltime of 2h but no pilot has all three",
            ),
        ]);
    }

    #[test]
    fn pilot_count_makes_identical_pilots_with_numbered_names() {
        let w = parse_ok(
            "[[pilot]]\nname = \"w\"\nresource = \"local://\"\ncores = 2\ncount = 3\n\
             [[pilot]]\nresource = \"local://\"\ncount = 2\n\
             [[pilot]]\nname = \"solo\"\nresource = \"local://\"\ncount = 1\n\
             [[unit]]\nexecutable = \"/bin/true\"\npilot = \"w-3\"\n\
             [[unit]]\nexecutable = \"/bin/true\"\npilot = \"solo\"\n\
             [[unit]]\nexecutable = \"/bin/true\"\n",
        );
        let names: Vec<Option<&str>> = w.pilots.iter().map(|p| p.name.as_deref()).collect();
        assert_eq!(
            names,
            [
                Some("w-1"),
                Some("w-2"),
                Some("w-3"),
                None,
                None,
                Some("solo")
            ]
        );
        let cores: Vec<u32> = w.pilots.iter().map(|p| p.cores).collect();
        assert_eq!(cores, [2, 2, 2, 1, 1, 1]);
        let bound: Vec<Option<usize>> = w.units().map(|u| u.pilot).collect();
        assert_eq!(bound, [Some(2), Some(5), None]);
    }

    #[test]
    fn pilot_counts_that_cannot_be_met_or_named_are_refused_at_the_key() {
        let unit = ONE_UNIT;
        assert_refused_exactly(&[
            (
                "zero",
                format!("[[pilot]]\nresource = \"local://\"\ncount = 0\n{unit}"),
                3,
                9,
                "`count` must be at least 1",
            ),
            (
                "negative",
                format!("[[pilot]]\nresource = \"local://\"\ncount = -2\n{unit}"),
                3,
                9,
                "`count` must be a whole number from 1 up, not -2",
            ),
            (
                "beyond the limit in one table",
                format!("[[pilot]]\nresource = \"local://\"\ncount = 100001\n{unit}"),
                3,
                9,
                "a workload holds at most 100000 pilots; this `count` brings it to 100001",
            ),
            (
                "beyond the limit over two tables",
                format!(
                    "{ONE_PILOT}count = 60000\n[[pilot]]\nresource = \"local://\"\n\
                     count = 60000\n{unit}"
                ),
                6,
                9,
                "a workload holds at most 100000 pilots; this `count` brings it to 120000",
            ),
            (
                "binding to a group",
                "[[pilot]]\nname = \"w\"\nresource = \"local://\"\ncount = 3\n[[unit]]\n\
                 executable = \"/bin/true\"\npilot = \"w\"\n"
                    .to_owned(),
                7,
                9,
                "`w` names 3 pilots (`count = 3`): bind to one of them, `w-1` to `w-3`, or \
                 leave `pilot` out to run on any pilot",
            ),
            (
                "binding to a name no pilot has lists groups by their range",
                "[[pilot]]\nname = \"w\"\nresource = \"local://\"\ncount = 3\n[[pilot]]\n\
                 name = \"solo\"\nresource = \"local://\"\n[[unit]]\n\
                 executable = \"/bin/true\"\npilot = \"w-4\"\n"
                    .to_owned(),
                10,
                9,
                "no pilot is named `w-4` (named pilots: `w-1` to `w-3`, `solo`)",
            ),
            (
                "a group member named like an earlier pilot",
                format!(
                    "[[pilot]]\nname = \"w-2\"\nresource = \"local://\"\n[[pilot]]\n\
                     name = \"w\"\nresource = \"local://\"\ncount = 3\n{unit}"
                ),
                5,
                8,
                "`count = 3` names these pilots `w-1` to `w-3`, but a pilot named `w-2` is \
                 already declared on line 2",
            ),
            (
                "a pilot named like an earlier group member",
                format!(
                    "[[pilot]]\nname = \"w\"\nresource = \"local://\"\ncount = 2\n[[pilot]]\n\
                     name = \"w-1\"\nresource = \"local://\"\n{unit}"
                ),
                6,
                8,
                "a pilot named `w-1` is already declared on line 2 (one of the 2 pilots \
                 `w-1` to `w-2`)",
            ),
            (
                "a pilot named like an earlier group",
                format!(
                    "[[pilot]]\nname = \"w\"\nresource = \"local://\"\ncount = 2\n[[pilot]]\n\
                     name = \"w\"\nresource = \"local://\"\n{unit}"
                ),
                6,
                8,
                "a pilot named `w` is already declared on line 2 (the 2 pilots `w-1` to \
                 `w-2`)",
            ),
            (
                "two groups of one name",
                format!(
                    "[[pilot]]\nname = \"w\"\nresource = \"local://\"\ncount = 2\n[[pilot]]\n\
                     name = \"w\"\nresource = \"local://\"\ncount = 5\n{unit}"
                ),
                6,
                8,
                "a pilot named `w` is already declared on line 2 (the 2 pilots `w-1` to \
                 `w-2`)",
            ),
            (
                "a unit too large for a group member",
                "[[pilot]]\nname = \"w\"\nresource = \"local://\"\ncount = 3\n[[unit]]\n\
                 executable = \"/bin/true\"\ncores = 2\npilot = \"w-2\"\n"
                    .to_owned(),
                7,
                9,
                "unit needs 2 cores but pilot `w-2` has 1 core",
            ),
        ]);
    }

    #[test]
    fn the_largest_pilot_count_loads_without_work_per_pair_of_pilots() {
        // 100,000 pilots: checking names or binding pair by pair would take minutes.
        let w = parse_ok(
            "[[pilot]]\nname = \"p\"\nresource = \"local://\"\ncores = 16\ncount = 90000\n\
             [[pilot]]\nresource = \"local://\"\ncount = 10000\n\
             [[unit]]\nexecutable = \"/bin/true\"\npilot = \"p-90000\"\n\
             [[unit]]\nexecutable = \"/bin/true\"\ncores = 16\ncount = 1000000\n",
        );
        assert_eq!(w.pilots.len(), MAX_PILOTS);
        assert_eq!(w.pilots[89_999].name.as_deref(), Some("p-90000"));
        assert_eq!(w.pilots[90_000].name, None);
        assert_eq!(w.units().next().map(|u| u.pilot), Some(Some(89_999)));
        assert_eq!(w.unit_count(), 1_000_001);
    }

    #[test]
    fn the_simulation_table_is_read_into_typed_fields() {
        let body = format!("{ONE_PILOT}{ONE_UNIT}");
        assert_eq!(parse_ok(&body).simulation, None);
        assert_eq!(
            parse_ok(&format!("[simulation]\n{body}")).simulation,
            Some(Simulation::default())
        );
        assert_eq!(
            Simulation::default(),
            Simulation {
                queue_wait: QueueWait::Fixed(Duration::ZERO),
                seed: 0,
                pilot_failure: 0.0,
                agent_loss: 0.0,
                unit_time: Duration::ZERO,
            }
        );
        let w = parse_ok(&format!(
            "[simulation]\nqueue_wait = \"1m..10m\"\nseed = 42\npilot_failure = 0.25\n\
             agent_loss = 1\nunit_time = \"1m\"\n{body}"
        ));
        assert_eq!(
            w.simulation,
            Some(Simulation {
                queue_wait: QueueWait::Uniform {
                    min: Duration::from_secs(60),
                    max: Duration::from_secs(600),
                },
                seed: 42,
                pilot_failure: 0.25,
                agent_loss: 1.0,
                unit_time: Duration::from_secs(60),
            })
        );
        for (text, wait) in [
            ("0s", QueueWait::Fixed(Duration::ZERO)),
            ("5m", QueueWait::Fixed(Duration::from_secs(300))),
            ("00:05:00", QueueWait::Fixed(Duration::from_secs(300))),
            (
                "30s .. 01:00",
                QueueWait::Uniform {
                    min: Duration::from_secs(30),
                    max: Duration::from_secs(60),
                },
            ),
            (
                "0s..2m",
                QueueWait::Uniform {
                    min: Duration::ZERO,
                    max: Duration::from_secs(120),
                },
            ),
            (
                "2m..2m",
                QueueWait::Uniform {
                    min: Duration::from_secs(120),
                    max: Duration::from_secs(120),
                },
            ),
        ] {
            let w = parse_ok(&format!("[simulation]\nqueue_wait = \"{text}\"\n{body}"));
            assert_eq!(w.simulation.map(|s| s.queue_wait), Some(wait), "{text}");
        }
        let w = parse_ok(&format!("[simulation]\nseed = 9223372036854775807\n{body}"));
        assert_eq!(w.simulation.map(|s| s.seed), Some(i64::MAX as u64));
    }

    #[test]
    fn simulation_settings_out_of_range_are_refused_at_the_key() {
        let sim = |fields: &str| format!("[simulation]\n{fields}{ONE_PILOT}{ONE_UNIT}");
        assert_refused_exactly(&[
            (
                "unknown key",
                sim("failure = 0.1\n"),
                2,
                1,
                "unknown field `failure`, expected one of `queue_wait`, `seed`, \
                 `pilot_failure`, `agent_loss`, `unit_time`",
            ),
            (
                "queue wait not a duration",
                sim("queue_wait = \"soon\"\n"),
                2,
                14,
                "`queue_wait` `soon` is not a duration: expected number at 0 (expected \
                 e.g. \"5m\", or \"1m..10m\" for waits drawn uniformly in that range)",
            ),
            (
                "queue wait range with an end missing",
                sim("queue_wait = \"1m..\"\n"),
                2,
                14,
                "`queue_wait` `1m..` is not a duration: value was empty (expected e.g. \
                 \"5m\", or \"1m..10m\" for waits drawn uniformly in that range)",
            ),
            (
                "queue wait range of three",
                sim("queue_wait = \"1m..2m..3m\"\n"),
                2,
                14,
                "`queue_wait` `1m..2m..3m` is not a duration: a range has two ends \
                 (expected e.g. \"5m\", or \"1m..10m\" for waits drawn uniformly in that range)",
            ),
            (
                "queue wait range going down",
                sim("queue_wait = \"10m..1m\"\n"),
                2,
                14,
                "`queue_wait` range `10m..1m` goes down: write the shorter wait first",
            ),
            (
                "queue wait not a string",
                sim("queue_wait = 5\n"),
                2,
                14,
                "`queue_wait` must be a duration in quotes such as \"5m\", or a range such as \"1m..10m\", not 5",
            ),
            (
                "negative seed",
                sim("seed = -1\n"),
                2,
                8,
                "`seed` must be a whole number from 0 up, not -1",
            ),
            (
                "pilot failure above 1",
                sim("pilot_failure = 1.5\n"),
                2,
                17,
                "`pilot_failure` must be a probability from 0 to 1, not 1.5",
            ),
            (
                "agent loss below 0",
                sim("agent_loss = -0.1\n"),
                2,
                14,
                "`agent_loss` must be a probability from 0 to 1, not -0.1",
            ),
            (
                "agent loss not a number",
                sim("agent_loss = nan\n"),
                2,
                14,
                "`agent_loss` must be a probability from 0 to 1, not NaN",
            ),
            (
                "probability as a string",
                sim("pilot_failure = \"0.1\"\n"),
                2,
                17,
                "`pilot_failure` must be a number from 0 to 1 (10 % is 0.1), not \"0.1\"",
            ),
            (
                "unit time not a duration",
                sim("unit_time = \"a while\"\n"),
                2,
                13,
                "`unit_time` `a while` is not a duration: expected number at 0 (expected \
                 e.g. \"10m\", \"1h 30m\" or \"01:30:00\")",
            ),
            (
                "two simulation tables",
                format!("[[simulation]]\n{ONE_PILOT}{ONE_UNIT}"),
                1,
                1,
                "invalid type: sequence, expected one table, written with single brackets",
            ),
        ]);
    }

    /// Every duration key of `[session]` is refused outside its range
    /// ([`pstar::settings::DURATION_RANGES`]), at the value, naming the range.
    #[test]
    fn session_durations_out_of_range_are_refused_at_the_key() {
        let body = "[[pilot]]\nresource = \"local://\"\nwalltime = \"1h\"\n\
                    [[unit]]\nexecutable = \"/bin/true\"\n";
        let cases: Vec<(&str, String, usize, usize, &str)> = vec![
            (
                "zero heartbeat timeout",
                format!("[session]\nheartbeat_timeout = \"0s\"\n{body}"),
                2,
                21,
                "`heartbeat_timeout` must be from 100ms to 1day, not 0s",
            ),
            (
                "a poll every year",
                format!("[session]\npoll_interval = \"1year\"\n{body}"),
                2,
                17,
                "`poll_interval` must be from 100ms to 10m, not 1year",
            ),
            (
                "keep nothing",
                format!("[session]\nkeep = \"0s\"\n{body}"),
                2,
                8,
                "`keep` must be from 1s to 1year, not 0s",
            ),
            (
                "a drain margin of centuries",
                format!("[session]\ndrain_margin = \"1000years\"\n{body}"),
                2,
                16,
                "`drain_margin` must be from 0s to 1year, not 1000years",
            ),
        ];
        assert_refused_exactly(&cases);
    }

    /// A drain margin as long as a pilot's walltime leaves its agent no time to take a
    /// unit: refused at the key, naming the pilot and both durations.
    #[test]
    fn a_drain_margin_not_shorter_than_a_walltime_is_refused_at_the_key() {
        let head = "[session]\ndrain_margin = \"30m\"\n\
                    [[pilot]]\nname = \"long\"\nresource = \"local://\"\nwalltime = \"2h\"\n";
        let unit = "[[unit]]\nexecutable = \"/bin/true\"\n";
        let cases: Vec<(&str, String, usize, usize, &str)> = vec![
            (
                "as long as a named pilot's walltime",
                format!(
                    "{head}[[pilot]]\nname = \"short\"\nresource = \"local://\"\nwalltime = \"30m\"\n{unit}"
                ),
                2,
                16,
                "`drain_margin` 30m is not shorter than the walltime 30m of pilot `short` \
                 (line 7): its agent would never take a unit; make it shorter than every \
                 pilot's walltime",
            ),
            (
                "longer than an unnamed pilot's",
                format!("{head}[[pilot]]\nresource = \"local://\"\nwalltime = \"10m\"\n{unit}"),
                2,
                16,
                "`drain_margin` 30m is not shorter than the walltime 10m of the [[pilot]] at \
                 line 7: its agent would never take a unit; make it shorter than every \
                 pilot's walltime",
            ),
        ];
        assert_refused_exactly(&cases);
        let w = parse_ok(&format!("{head}{unit}"));
        assert_eq!(w.session.drain_margin, Some(Duration::from_secs(1800)));
    }

    /// A value of the wrong type is said in plain words, with what the key takes and a
    /// hint, at the value: never serde's `expected u32`.
    #[test]
    fn values_of_the_wrong_kind_are_said_in_plain_words() {
        let pilot = "[[pilot]]\nresource = \"local://\"\n";
        let unit = "[[unit]]\nexecutable = \"/bin/true\"\n";
        let cases: Vec<(&str, String, usize, usize, &str)> = vec![
            (
                "negative count",
                format!("{pilot}{unit}count = -1\n"),
                5,
                9,
                "`count` must be a whole number from 1 up, not -1",
            ),
            (
                "cores in words",
                format!("[[pilot]]\nresource = \"local://\"\ncores = \"two\"\n{unit}"),
                3,
                9,
                "`cores` must be a whole number from 1 up, not \"two\"",
            ),
            (
                "too many gpus",
                format!("{pilot}gpus = 5000000000\n{unit}"),
                3,
                8,
                "`gpus` must be a whole number from 0 up to 4294967295, not 5000000000",
            ),
            (
                "walltime in seconds",
                format!("[[pilot]]\nresource = \"local://\"\nwalltime = 3600\n{unit}"),
                3,
                12,
                "`walltime` must be a duration in quotes such as \"1h\" or \"01:00:00\", not \
                 3600",
            ),
            (
                "session duration unquoted",
                format!("[session]\nheartbeat_timeout = 30\n{pilot}{unit}"),
                2,
                21,
                "`heartbeat_timeout` must be a duration in quotes such as \"30s\", not 30",
            ),
            (
                "a percentage",
                format!("{pilot}{unit}[simulation]\nagent_loss = \"10%\"\n"),
                6,
                14,
                "`agent_loss` must be a number from 0 to 1 (10 % is 0.1), not \"10%\"",
            ),
            (
                "a shell of yes",
                format!("{pilot}{unit}shell = \"yes\"\n"),
                5,
                9,
                "`shell` must be true or false, not \"yes\"",
            ),
            (
                "arguments as one string",
                format!("{pilot}{unit}arguments = \"-v x\"\n"),
                5,
                13,
                "`arguments` must be a list of strings in quotes such as [\"-v\", \"x\"], not \
                 \"-v x\"",
            ),
            (
                "a number for a name",
                format!("{pilot}{unit}name = 7\n"),
                5,
                8,
                "`name` must be text in quotes, not 7",
            ),
            (
                "a negative seed",
                format!("{pilot}{unit}[simulation]\nseed = -1\n"),
                6,
                8,
                "`seed` must be a whole number from 0 up, not -1",
            ),
            (
                "three dots",
                format!("{pilot}{unit}[simulation]\nqueue_wait = \"5m...30m\"\n"),
                6,
                14,
                "`queue_wait` range must be written \"5m..30m\" (two dots), not \"5m...30m\"",
            ),
        ];
        assert_refused_exactly(&cases);
    }

    const DATA: &str = r#"
[[pilot_data]]
name = "archive"
url = "sftp://me@login.example.org:2222/scratch/pstar"
size = "100GiB"
affinity = { datacenter = "dc1" }

[[pilot_data]]
name = "local"
url = "store/../stores/here"
size = 4096

[[pilot_data]]
name = "bucket"
url = "s3://bucket/prefix"

[[pilot_data]]
name = "abs"
url = "file:///srv/pstar/"

[[pilot]]
resource = "local://"

[[data_unit]]
name = "reference"
files = ["data/ref/*.fa", "/abs/ref.idx"]
store = "archive"

[[data_unit]]
name = "reads-{i}"
files = ["data/reads/{i}.fq", "data/{{odd}}/{i}"]
count = 3

[[unit]]
name = "align-{i}"
executable = "/bin/true"
count = 3
input_data = ["reference", "reads-{i}"]
output_data = [
    { name = "aligned-{i}", files = ["*.bam", "logs/{i}/*"], export = "results/{i}/", store = "local" },
    { name = "stats-{i}", files = ["stats"], allow_empty = true },
]

[[unit]]
executable = "/bin/true"
input_data = ["aligned-0", "aligned-2", "stats-1", "merged-x"]

[[unit]]
executable = "/bin/true"
output_data = [{ name = "merged-x", files = ["out/**"] }]
"#;

    #[test]
    fn pilot_stores_data_units_and_unit_data_parse_with_index_and_absolute_paths() {
        let w = parse_ok(DATA);
        let stores: Vec<(&str, &str, Option<u64>)> = w
            .pilot_data
            .iter()
            .map(|s| (s.name.as_str(), s.url.as_str(), s.size))
            .collect();
        let here = format!("file://{}", abs("dir/stores/here").display());
        assert_eq!(
            stores,
            [
                (
                    "archive",
                    "sftp://me@login.example.org:2222/scratch/pstar",
                    Some(100 << 30)
                ),
                ("local", here.as_str(), Some(4096)),
                ("bucket", "s3://bucket/prefix", None),
                ("abs", "file:///srv/pstar", None),
            ]
        );
        assert_eq!(w.pilot_data[0].affinity.datacenter.as_deref(), Some("dc1"));
        assert_eq!(w.pilot_data[1].affinity, Affinity::default());

        let names: Vec<&str> = w.data_units.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["reference", "reads-0", "reads-1", "reads-2"]);
        assert_eq!(
            w.data_units[0].files,
            [abs("dir/data/ref/*.fa"), PathBuf::from("/abs/ref.idx")]
        );
        assert_eq!(w.data_units[0].store.as_deref(), Some("archive"));
        assert_eq!(
            w.data_units[2].files,
            [abs("dir/data/reads/1.fq"), abs("dir/data/{odd}/1")]
        );
        assert_eq!(w.data_units[2].store, None);

        let units: Vec<ComputeUnitDescription> = w.units().map(|u| u.description).collect();
        assert_eq!(units.len(), 5);
        for (i, d) in units[..3].iter().enumerate() {
            assert_eq!(d.input_data, ["reference".to_owned(), format!("reads-{i}")]);
            assert_eq!(
                d.output_data,
                [
                    OutputData {
                        name: format!("aligned-{i}"),
                        files: vec!["*.bam".to_owned(), format!("logs/{i}/*")],
                        store: Some("local".to_owned()),
                        export: Some(abs(&format!("dir/results/{i}/"))),
                        allow_empty: false,
                        store_url: None,
                        store_quota: None,
                    },
                    OutputData {
                        allow_empty: true,
                        ..OutputData::new(format!("stats-{i}"), ["stats"])
                    },
                ]
            );
        }
        assert_eq!(
            units[3].input_data,
            ["aligned-0", "aligned-2", "stats-1", "merged-x"]
        );
        assert_eq!(units[3].output_data, []);
        assert_eq!(
            units[4].output_data,
            [OutputData::new("merged-x", ["out/**"])]
        );
    }

    #[test]
    fn a_password_in_a_store_url_is_masked_in_the_line_shown() {
        let text = format!(
            "[[pilot_data]]\nname = \"s\"\nurl = \"sftp://me:hunter2@host/x\"\n{ONE_PILOT}{ONE_UNIT}"
        );
        let e = parse_err(&text).to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("url = \"sftp://me:****@host/x\""), "{e}");
        assert_eq!(
            mask_passwords("a s3://k:v@b/x and sftp://u@h/p"),
            "a s3://k:****@b/x and sftp://u@h/p"
        );
        // Whatever the mistake on the line, the password is not shown: here a syntax error.
        let text = format!(
            "[[pilot_data]]\nname = \"s\"\nurl = \"sftp://me:hunter2@host/x\" oops\n{ONE_PILOT}{ONE_UNIT}"
        );
        let e = parse_err(&text).to_string();
        assert!(e.starts_with("work.toml:3:"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn pilot_store_mistakes_are_refused_at_the_key() {
        let store = |fields: &str| format!("[[pilot_data]]\n{fields}{ONE_PILOT}{ONE_UNIT}");
        assert_refused_exactly(&[
            (
                "no name",
                store("url = \"s\"\n"),
                1,
                1,
                "missing field `name`",
            ),
            (
                "no url",
                store("name = \"s\"\n"),
                1,
                1,
                "missing field `url`",
            ),
            (
                "a name with a slash",
                store("name = \"a/b\"\nurl = \"s\"\n"),
                2,
                8,
                "`name`: \"a/b\" is not a valid name: use 1 to 200 letters, digits, '.', '_' \
                 or '-', not starting with '.' or '-'",
            ),
            (
                "two stores of one name",
                "[[pilot_data]]\nname = \"s\"\nurl = \"a\"\n[[pilot_data]]\nname = \"s\"\n\
                 url = \"b\"\n[[pilot]]\nresource = \"local://\"\n[[unit]]\nexecutable = \"/bin/true\"\n"
                    .to_owned(),
                5,
                8,
                "a [[pilot_data]] named `s` is already declared on line 2",
            ),
            (
                "a password",
                store("name = \"s\"\nurl = \"sftp://me:secret@host/x\"\n"),
                3,
                7,
                "`url` holds a password: pilot stores never take credentials in their URL \
                 (SFTP uses your SSH keys and ~/.ssh/config, S3 the environment or a private \
                 file)",
            ),
            (
                "a home directory",
                store("name = \"s\"\nurl = \"~/pstar-store\"\n"),
                3,
                7,
                "`url` starts with `~`, which pstar does not expand: write the directory's \
                 path in full, or relative to the workload file's",
            ),
            (
                "a name reports keep for themselves",
                store("name = \"client\"\nurl = \"s\"\n"),
                2,
                8,
                "`name` `client` is kept for what reports count besides stores (`client`, \
                 `export`, `unknown` and pilots' caches `pilot.NNNN`): choose another",
            ),
            (
                "a name like a pilot's cache",
                store("name = \"pilot.0001\"\nurl = \"s\"\n"),
                2,
                8,
                "`name` `pilot.0001` is kept for what reports count besides stores \
                 (`client`, `export`, `unknown` and pilots' caches `pilot.NNNN`): choose another",
            ),
            (
                "a query",
                store("name = \"s\"\nurl = \"s3://b/p?key=x\"\n"),
                3,
                7,
                "`url` has a `?` query or a `#` fragment, which no pilot store takes: give a \
                 directory (relative to the workload file's), file:///path, \
                 sftp://user@host/path or s3://bucket/prefix",
            ),
            (
                "an s3 user",
                store("name = \"s\"\nurl = \"s3://AKIA@bucket/p\"\n"),
                3,
                7,
                "`url` holds a user name: S3 credentials come from the environment or a \
                 private file, never from the URL",
            ),
            (
                "an unknown scheme",
                store("name = \"s\"\nurl = \"http://host/x\"\n"),
                3,
                7,
                "`url` scheme `http` is not a pilot store: give a directory (relative to the \
                 workload file's), file:///path, sftp://user@host/path or s3://bucket/prefix \
                 (write a relative directory whose name has a `:` as ./name)",
            ),
            (
                "a file URL with a host",
                store("name = \"s\"\nurl = \"file://host/x\"\n"),
                3,
                7,
                "a file:// URL is a directory on this machine: write file:///path (three \
                 slashes), or the path alone",
            ),
            (
                "a file URL without slashes",
                store("name = \"s\"\nurl = \"file:./store\"\n"),
                3,
                7,
                "write a file URL as file:///absolute/path, or give the directory alone \
                 (relative to the workload file's)",
            ),
            (
                "sftp without a host",
                store("name = \"s\"\nurl = \"sftp:///x\"\n"),
                3,
                7,
                "an sftp:// URL needs a host: sftp://user@host/path",
            ),
            (
                "an empty url",
                store("name = \"s\"\nurl = \" \"\n"),
                3,
                7,
                "`url` is empty: give a directory (relative to the workload file's), \
                 file:///path, sftp://user@host/path or s3://bucket/prefix",
            ),
            (
                "a zero size",
                store("name = \"s\"\nurl = \"x\"\nsize = 0\n"),
                4,
                8,
                "`size` must be more than zero (leave it out for a store without a quota)",
            ),
            (
                "a zero size in words",
                store("name = \"s\"\nurl = \"x\"\nsize = \"0GiB\"\n"),
                4,
                8,
                "`size` must be more than zero (leave it out for a store without a quota)",
            ),
            (
                "a negative size",
                store("name = \"s\"\nurl = \"x\"\nsize = -5\n"),
                4,
                8,
                "`size` must be a size in quotes such as \"100GiB\" or \"500MB\", or a whole \
                 number of bytes, not -5",
            ),
            (
                "a size of a float",
                store("name = \"s\"\nurl = \"x\"\nsize = 1.5\n"),
                4,
                8,
                "`size` must be a size in quotes such as \"100GiB\" or \"500MB\", or a whole \
                 number of bytes, not 1.5",
            ),
            (
                "a size in an unknown unit",
                store("name = \"s\"\nurl = \"x\"\nsize = \"10 GiBs\"\n"),
                4,
                8,
                "`size` `10 GiBs` is not a size: unknown unit `GiBs` (units: B, kB, MB, GB, \
                 TB, PB, KiB, MiB, GiB, TiB, PiB) (expected e.g. \"100GiB\", \"500MB\" or \
                 \"1TiB\")",
            ),
            (
                "an unknown key",
                store("name = \"s\"\nurl = \"x\"\nquota = \"1GB\"\n"),
                4,
                1,
                "unknown field `quota`, expected one of `name`, `url`, `size`, `affinity`",
            ),
            (
                "an unknown affinity key",
                store("name = \"s\"\nurl = \"x\"\naffinity = { rack = \"r\" }\n"),
                4,
                14,
                "unknown field `rack`, expected `datacenter` or `machine`",
            ),
            (
                "a url that is not text",
                store("name = \"s\"\nurl = 7\n"),
                3,
                7,
                "`url` must be text in quotes, not 7",
            ),
        ]);
    }

    #[test]
    fn a_unit_s_timeout_is_a_duration_above_zero() {
        let pilot = "[[pilot]]\nresource = \"local://\"\n";
        let w = parse_ok(&format!(
            "{pilot}[[unit]]\nexecutable = \"/bin/true\"\ntimeout = \"10m\"\n"
        ));
        assert_eq!(
            w.units().next().map(|u| u.description.timeout),
            Some(Some(Duration::from_secs(600)))
        );
        let e = parse_err(&format!(
            "{pilot}[[unit]]\nexecutable = \"/bin/true\"\ntimeout = \"soon\"\n"
        ));
        assert!(
            e.to_string()
                .starts_with("work.toml:5:11: `timeout` `soon` is not a duration"),
            "{e}"
        );
        let e = parse_err(&format!(
            "{pilot}[[unit]]\nexecutable = \"/bin/true\"\ntimeout = \"0s\"\n"
        ));
        assert!(
            e.to_string().contains("`timeout` must be longer than zero"),
            "{e}"
        );
    }

    #[test]
    fn a_pilot_s_cache_limit_is_a_size() {
        let unit = "[[unit]]\nexecutable = \"/bin/true\"\n";
        let w = parse_ok(&format!(
            "[[pilot]]\nresource = \"local://\"\ncache = \"2GiB\"\n{unit}"
        ));
        assert_eq!(w.pilots[0].cache_size, Some(2 << 30));
        assert_eq!(
            parse_ok(&format!("[[pilot]]\nresource = \"local://\"\n{unit}")).pilots[0].cache_size,
            None
        );
        let e = parse_err(&format!(
            "[[pilot]]\nresource = \"local://\"\ncache = 0\n{unit}"
        ));
        assert!(
            e.to_string().starts_with("work.toml:3:9: `cache` must be more than zero (leave it out for a pilot without a cache limit)"),
            "{e}"
        );
        let e = parse_err(&format!(
            "[[pilot]]\nresource = \"local://\"\ncache = \"lots\"\n{unit}"
        ));
        assert!(e.to_string().starts_with("work.toml:3:9: "), "{e}");
    }

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        for (text, bytes) in [
            ("1", 1),
            ("4096", 4096),
            ("500MB", 500_000_000),
            ("500 mb", 500_000_000),
            ("1kB", 1000),
            ("1KiB", 1024),
            ("100GiB", 100 << 30),
            ("1TiB", 1 << 40),
            ("2TB", 2_000_000_000_000),
            ("1.5GiB", 3 << 29),
            ("0.5KiB", 512),
            (" 8 B ", 8),
            ("16383PiB", 16383 << 50),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text:?}");
        }
        for text in [
            "",
            "GiB",
            "1 2GB",
            "-1GB",
            "1.2.3GB",
            "1e9",
            "16384.0001PiB",
            "1Gb/s",
        ] {
            assert!(parse_size(text).is_err(), "{text:?} should be refused");
        }
        assert!(
            parse_size("16384PiB").is_err_and(|e| e.contains("too large")),
            "beyond 2^64 bytes"
        );
    }

    #[test]
    fn data_unit_mistakes_are_refused_at_the_key() {
        let store = "[[pilot_data]]\nname = \"s\"\nurl = \"x\"\n";
        let data = |fields: &str| format!("{ONE_PILOT}{ONE_UNIT}[[data_unit]]\n{fields}");
        assert_refused_exactly(&[
            (
                "no files",
                data("name = \"d\"\n"),
                5,
                1,
                "missing field `files`",
            ),
            (
                "empty files",
                data("name = \"d\"\nfiles = []\n"),
                7,
                9,
                "`files` is empty: give at least one path or pattern such as \"data/*.fa\" \
                 (relative to the workload file's directory)",
            ),
            (
                "an empty path",
                data("name = \"d\"\nfiles = [\"a\", \"\"]\n"),
                7,
                15,
                "`files`: a path is empty",
            ),
            (
                "a URL",
                data("name = \"d\"\nfiles = [\"https://example.org/x\"]\n"),
                7,
                10,
                "`files`: a URL is not a file on this machine: give paths (relative to the \
                 workload file's directory), and put remote data in a [[pilot_data]] store",
            ),
            (
                "files as one string",
                data("name = \"d\"\nfiles = \"a\"\n"),
                7,
                9,
                "`files` must be a list of paths or patterns in quotes such as [\"data/*.fa\"], \
                 not \"a\"",
            ),
            (
                "a store no pilot store has",
                format!(
                    "{store}{}",
                    data("name = \"d\"\nfiles = [\"a\"]\nstore = \"t\"\n")
                ),
                11,
                9,
                "no [[pilot_data]] is named `t` (pilot stores: `s`)",
            ),
            (
                "a store without any pilot store",
                data("name = \"d\"\nfiles = [\"a\"]\nstore = \"t\"\n"),
                8,
                9,
                "no [[pilot_data]] is named `t` (the file declares no [[pilot_data]])",
            ),
            (
                "a bad name",
                data("name = \"-d\"\nfiles = [\"a\"]\n"),
                6,
                8,
                "`name`: \"-d\" is not a valid name: use 1 to 200 letters, digits, '.', '_' or \
                 '-', not starting with '.' or '-'",
            ),
            (
                "a name too long for the last member",
                data(&format!(
                    "name = \"{}{{i}}\"\nfiles = [\"a\"]\ncount = 11\n",
                    "x".repeat(199)
                )),
                6,
                8,
                &format!(
                    "`name`: \"{}10\" is not a valid name: use 1 to 200 letters, digits, '.', \
                     '_' or '-', not starting with '.' or '-'",
                    "x".repeat(199)
                ),
            ),
            (
                "zero count",
                data("name = \"d\"\nfiles = [\"a\"]\ncount = 0\n"),
                8,
                9,
                "`count` must be at least 1",
            ),
            (
                "a count without an index",
                data("name = \"d\"\nfiles = [\"a\"]\ncount = 2\n"),
                6,
                8,
                "the 2 data units of this table would all be named `d`: put {i} in the name",
            ),
            (
                "beyond the limit",
                data("name = \"d{i}\"\nfiles = [\"a\"]\ncount = 100001\n"),
                8,
                9,
                "a workload declares at most 100000 data units; this `count` brings it to \
                 100001",
            ),
            (
                "two data units of one name",
                data(
                    "name = \"d-{i}\"\nfiles = [\"a\"]\ncount = 5\n[[data_unit]]\n\
                     name = \"d-3\"\nfiles = [\"b\"]\n",
                ),
                10,
                8,
                "data unit `d-3` is already made by the [[data_unit]] on line 6: each data \
                 unit is made once",
            ),
            (
                "an unknown key",
                data("name = \"d\"\nfiles = [\"a\"]\npath = \"x\"\n"),
                8,
                1,
                "unknown field `path`, expected one of `name`, `files`, `store`, `count`",
            ),
        ]);
    }

    #[test]
    fn unit_data_mistakes_are_refused_at_the_entry() {
        let data = "[[data_unit]]\nname = \"reads-{i}\"\nfiles = [\"r/{i}\"]\ncount = 4\n";
        let unit = |fields: &str| {
            format!("{ONE_PILOT}{data}[[unit]]\nexecutable = \"/bin/true\"\n{fields}")
        };
        assert_refused_exactly(&[
            (
                "an input nothing makes",
                unit("input_data = [\"reads-1\", \"reads-9\"]\n"),
                9,
                26,
                "input_data \"reads-9\" names no [[data_unit]] and no unit's output_data",
            ),
            (
                "a member's input nothing makes",
                unit("count = 8\ninput_data = [\"reads-{i}\"]\n"),
                10,
                15,
                "input_data \"reads-4\" names no [[data_unit]] and no unit's output_data",
            ),
            (
                "an input made by no one, with escaped braces",
                unit("input_data = [\"reads-{{i}}\"]\n"),
                9,
                15,
                "`input_data`: \"reads-{i}\" is not a valid name: use 1 to 200 letters, \
                 digits, '.', '_' or '-', not starting with '.' or '-'",
            ),
            (
                "the same input twice in one member",
                unit("count = 3\ninput_data = [\"reads-{i}\", \"reads-2\"]\n"),
                10,
                28,
                "`input_data` names data unit `reads-2` twice (member 2)",
            ),
            (
                "reading its own output",
                unit(
                    "count = 3\ninput_data = [\"reads-0\", \"out-{i}\"]\n\
                     output_data = [{ name = \"out-{i}\", files = [\"*\"] }]\n",
                ),
                10,
                26,
                "input_data \"out-0\" is this unit's own output_data (member 0): a unit cannot \
                 read what it makes",
            ),
            (
                "one member reading its own output",
                unit(
                    "count = 3\ninput_data = [\"out-2\"]\n\
                     output_data = [{ name = \"out-{i}\", files = [\"*\"] }]\n",
                ),
                10,
                15,
                "input_data \"out-2\" is this unit's own output_data (member 2): a unit cannot \
                 read what it makes",
            ),
            (
                "an output as a plain string",
                unit("output_data = [\"out\"]\n"),
                9,
                16,
                "`output_data` must be a list of tables such as [{ name = \"out-{i}\", files = \
                 [\"*.out\"] }], not \"out\"",
            ),
            (
                "an output without files",
                unit("output_data = [{ name = \"out\" }]\n"),
                9,
                16,
                "missing field `files`",
            ),
            (
                "an output with no patterns",
                unit("output_data = [{ name = \"out\", files = [] }]\n"),
                9,
                40,
                "`files` is empty: give at least one pattern such as \"*.out\" (relative to \
                 the unit's sandbox)",
            ),
            (
                "an absolute pattern",
                unit("output_data = [{ name = \"out\", files = [\"x\", \"/etc/*\"] }]\n"),
                9,
                46,
                "`output_data` `out`: pattern \"/etc/*\" is absolute: patterns are relative to \
                 the unit's sandbox",
            ),
            (
                "a pattern going up",
                unit("output_data = [{ name = \"out\", files = [\"../{i}\"] }]\n"),
                9,
                41,
                "`output_data` `out`: pattern \"../0\" has a '..' component: it would reach \
                 outside the sandbox",
            ),
            (
                "an unknown output key",
                unit("output_data = [{ name = \"out\", files = [\"*\"], keep = true }]\n"),
                9,
                47,
                "unknown field `keep`, expected one of `name`, `files`, `store`, `export`, \
                 `allow_empty`",
            ),
            (
                "an output store no pilot store has",
                unit("output_data = [{ name = \"out\", files = [\"*\"], store = \"s\" }]\n"),
                9,
                55,
                "no [[pilot_data]] is named `s` (the file declares no [[pilot_data]])",
            ),
            (
                "an empty export",
                unit("output_data = [{ name = \"out\", files = [\"*\"], export = \"\" }]\n"),
                9,
                56,
                "`export` is empty: give a directory (relative to the workload file's)",
            ),
            (
                "one output made by every member",
                unit("count = 2\noutput_data = [{ name = \"out\", files = [\"*\"] }]\n"),
                10,
                25,
                "the 2 units of this table would all make output_data `out`: put {i} in the \
                 name",
            ),
            (
                "an output named like a data unit",
                unit("output_data = [{ name = \"reads-3\", files = [\"*\"] }]\n"),
                9,
                25,
                "data unit `reads-3` is already made by the [[data_unit]] on line 4: each \
                 data unit is made once",
            ),
            (
                "two units making one output",
                unit(
                    "count = 5\noutput_data = [{ name = \"o-{i}\", files = [\"*\"] }]\n\
                     [[unit]]\nexecutable = \"/bin/true\"\n\
                     output_data = [{ name = \"o-4\", files = [\"*\"] }]\n",
                ),
                13,
                25,
                "data unit `o-4` is already made by the output_data on line 10: each data \
                 unit is made once",
            ),
            (
                "a data unit declared after an output of its name",
                format!(
                    "{ONE_PILOT}[[unit]]\nexecutable = \"/bin/true\"\n\
                     output_data = [{{ name = \"x\", files = [\"*\"] }}]\n\
                     [[data_unit]]\nname = \"x\"\nfiles = [\"a\"]\n"
                ),
                7,
                8,
                "data unit `x` is already made by the output_data on line 5: each data unit \
                 is made once",
            ),
            (
                "input data not a list",
                unit("input_data = \"reads-1\"\n"),
                9,
                14,
                "`input_data` must be a list of data unit names in quotes such as \
                 [\"reference\", \"reads-{i}\"], not \"reads-1\"",
            ),
        ]);
    }

    #[test]
    fn inputs_may_name_outputs_of_any_unit_of_the_file() {
        // Made by an earlier table or by a later one.
        let w = parse_ok(
            "[[pilot]]\nresource = \"local://\"\n\
             [[unit]]\nexecutable = \"/bin/true\"\ncount = 3\n\
             output_data = [{ name = \"step-{i}\", files = [\"*\"] }]\n\
             [[unit]]\nexecutable = \"/bin/true\"\ninput_data = [\"late\", \"step-2\"]\n\
             [[unit]]\nexecutable = \"/bin/true\"\n\
             output_data = [{ name = \"late\", files = [\"*\"] }]\n",
        );
        let inputs: Vec<Vec<String>> = w.units().map(|u| u.description.input_data).collect();
        assert_eq!(inputs[3], ["late", "step-2"]);
        // Member 0 would read its own output: refused, however large the ensemble.
        let e = parse_err(
            "[[pilot]]\nresource = \"local://\"\n\
             [[unit]]\nexecutable = \"/bin/true\"\ncount = 3\ninput_data = [\"step-0\"]\n\
             output_data = [{ name = \"step-{i}\", files = [\"*\"] }]\n",
        );
        assert_eq!((e.line(), e.column()), (Some(6), Some(15)), "{e}");
        assert!(e.message().contains("own output_data (member 0)"), "{e}");
    }

    #[test]
    fn units_waiting_for_each_other_are_refused() {
        let unit = |fields: &str| format!("[[unit]]\nexecutable = \"/bin/true\"\n{fields}");
        assert_refused_exactly(&[
            (
                "two ensembles, member by member",
                format!(
                    "{ONE_PILOT}{}{}",
                    unit(
                        "count = 2\ninput_data = [\"b-{i}\"]\n\
                         output_data = [{ name = \"a-{i}\", files = [\"*\"] }]\n"
                    ),
                    unit(
                        "count = 2\ninput_data = [\"a-{i}\"]\n\
                         output_data = [{ name = \"b-{i}\", files = [\"*\"] }]\n"
                    ),
                ),
                11,
                15,
                "input_data \"a-0\" closes a cycle (a-0 → b-0 → a-0): each of these data \
                 units is made by a unit that waits for the next, so none of those units \
                 could ever run",
            ),
            (
                "three units in a ring",
                format!(
                    "{ONE_PILOT}{}{}{}",
                    unit(
                        "input_data = [\"z\"]\noutput_data = [{ name = \"x\", files = [\"*\"] }]\n"
                    ),
                    unit(
                        "input_data = [\"x\"]\noutput_data = [{ name = \"y\", files = [\"*\"] }]\n"
                    ),
                    unit(
                        "input_data = [\"y\"]\noutput_data = [{ name = \"z\", files = [\"*\"] }]\n"
                    ),
                ),
                9,
                15,
                "input_data \"x\" closes a cycle (x → z → y → x): each of these data units is \
                 made by a unit that waits for the next, so none of those units could ever run",
            ),
        ]);
        // Chains and diamonds are no cycles.
        let w = parse_ok(&format!(
            "{ONE_PILOT}{}{}{}{}",
            unit("output_data = [{ name = \"a\", files = [\"*\"] }]\n"),
            unit(
                "count = 3\ninput_data = [\"a\"]\noutput_data = [{ name = \"b-{i}\", files = [\"*\"] }]\n"
            ),
            unit(
                "input_data = [\"a\", \"b-0\", \"b-2\"]\noutput_data = [{ name = \"c\", files = [\"*\"] }]\n"
            ),
            unit("input_data = [\"c\", \"b-1\"]\n"),
        ));
        assert_eq!(w.unit_count(), 6);
    }

    #[test]
    fn data_of_huge_ensembles_is_checked_as_templates() {
        let pilot = "[[pilot]]\nresource = \"local://\"\n";
        // Ten million units reading what ten million others make: no name is expanded.
        let w = parse_ok(&format!(
            "{pilot}[[unit]]\nexecutable = \"/bin/true\"\ncount = 10000000\n\
             output_data = [{{ name = \"part-{{i}}\", files = [\"*\"] }}]\n\
             [[unit]]\nexecutable = \"/bin/true\"\ncount = 10000000\n\
             input_data = [\"part-{{i}}\", \"ref\"]\n\
             output_data = [{{ name = \"sum-{{i}}\", files = [\"*\"] }}]\n\
             [[unit]]\nexecutable = \"/bin/true\"\ninput_data = [\"sum-123\"]\n\
             [[data_unit]]\nname = \"ref\"\nfiles = [\"ref\"]\n"
        ));
        assert_eq!(w.unit_count(), 20_000_001);
        let last = w.ensembles[1].unit(9_999_999).description;
        assert_eq!(last.input_data, ["part-9999999", "ref"]);
        assert_refused_exactly(&[
            (
                "a reader larger than its maker",
                format!(
                    "{pilot}[[unit]]\nexecutable = \"/bin/true\"\ncount = 2000000\n\
                     output_data = [{{ name = \"part-{{i}}\", files = [\"*\"] }}]\n\
                     [[unit]]\nexecutable = \"/bin/true\"\ncount = 3000000\n\
                     input_data = [\"part-{{i}}\"]\n"
                ),
                10,
                15,
                "input_data \"part-2000000\" names no [[data_unit]] and no unit's output_data",
            ),
            (
                "two large makers of one name",
                format!(
                    "{pilot}[[unit]]\nexecutable = \"/bin/true\"\ncount = 2000000\n\
                     output_data = [{{ name = \"p{{i}}1\", files = [\"*\"] }}]\n\
                     [[unit]]\nexecutable = \"/bin/true\"\ncount = 3000000\n\
                     output_data = [{{ name = \"p1{{i}}\", files = [\"*\"] }}]\n"
                ),
                10,
                25,
                "data unit `p11` is already made by the output_data on line 6: each data unit \
                 is made once",
            ),
            (
                "a large maker of a data unit's name",
                format!(
                    "{pilot}[[data_unit]]\nname = \"r-1234567\"\nfiles = [\"a\"]\n\
                     [[unit]]\nexecutable = \"/bin/true\"\ncount = 2000000\n\
                     output_data = [{{ name = \"r-{{i}}\", files = [\"*\"] }}]\n"
                ),
                9,
                25,
                "data unit `r-1234567` is already made by the [[data_unit]] on line 4: each \
                 data unit is made once",
            ),
        ]);
    }

    #[test]
    fn meet_finds_a_shared_name_of_two_ensembles_like_expanding_them() {
        let texts = [
            "o", "o{i}", "o1", "{i}", "{i}{i}", "1{i}", "{i}1", "11", "o{i}1", "o1{i}", "{i}0",
            "10", "100",
        ];
        for a in texts {
            for b in texts {
                for (na, nb) in [(1, 1), (3, 12), (12, 3), (120, 15)] {
                    let (ta, tb) = (Template::parse(a), Template::parse(b));
                    let names_b: HashMap<String, u32> = (0..nb)
                        .rev()
                        .map(|j| (tb.expand(&j.to_string()), j))
                        .collect();
                    let brute = (0..na)
                        .find_map(|i| names_b.get(&ta.expand(&i.to_string())).map(|&j| (i, j)));
                    let met = Template::meet(&ta, na, &tb, nb);
                    assert_eq!(
                        met.is_some(),
                        brute.is_some(),
                        "{a:?} ({na}) and {b:?} ({nb})"
                    );
                    if let Some((i, j)) = met {
                        assert!(i < na && j < nb);
                        assert_eq!(ta.expand(&i.to_string()), tb.expand(&j.to_string()));
                    }
                }
            }
        }
    }

    #[test]
    fn load_refuses_data_files_that_are_not_there() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let d = dir.path();
        for f in [
            "data/ref/a.fa",
            "data/reads/0.fq",
            "data/reads/1.fq",
            "data/deep/x/y/z.bin",
        ] {
            let path = d.join(f);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(&path, "x").expect("write");
        }
        let head = "[[pilot]]\nresource = \"local://\"\n[[unit]]\nexecutable = \"/bin/true\"\n";
        let load_text = |body: &str| {
            let path = d.join("w.toml");
            std::fs::write(&path, format!("{head}{body}")).expect("write workload");
            load(&path, LOCAL, false)
        };
        let good = "[[data_unit]]\nname = \"ref\"\nfiles = [\"data/ref/*.fa\", \"data/ref\"]\n\
                    [[data_unit]]\nname = \"reads-{i}\"\nfiles = [\"data/reads/{i}.fq\", \
                    \"data/r[e]ads/[!x]?fq\", \"data/**/z.bin\", \"data/**\"]\ncount = 2\n";
        let w = load_text(good)
            .map_err(|e| e.to_string())
            .expect("files are there");
        assert_eq!(w.data_units[2].files[0], d.join("data/reads/1.fq"));
        for (body, line, column, message) in [
            (
                "[[data_unit]]\nname = \"reads-{i}\"\nfiles = [\"data/reads/{i}.fq\"]\ncount = 3\n",
                7,
                10,
                format!(
                    "data unit `reads-2`: {} does not exist",
                    d.join("data/reads/2.fq").display()
                ),
            ),
            (
                "[[data_unit]]\nname = \"ref\"\nfiles = [\"data/ref\", \"data/ref/*.fq\"]\n",
                7,
                22,
                format!(
                    "data unit `ref`: {} matches no file",
                    d.join("data/ref/*.fq").display()
                ),
            ),
            (
                "[[data_unit]]\nname = \"ref\"\nfiles = [\"data/**/y.bin\"]\n",
                7,
                10,
                format!(
                    "data unit `ref`: {} matches no file",
                    d.join("data/**/y.bin").display()
                ),
            ),
        ] {
            let e = load_text(body).expect_err("a missing file is refused");
            assert_eq!((e.line(), e.column()), (Some(line), Some(column)), "{e}");
            assert_eq!(e.message(), message);
        }
    }

    #[test]
    fn wildcards_match_like_the_shell() {
        let yes = [
            ("*", "abc"),
            ("*", ""),
            ("a*c", "abbbc"),
            ("*.fa", "x.fa"),
            ("?", "é"),
            ("[abc]x", "bx"),
            ("[a-c]", "b"),
            ("[!a-c]", "d"),
            ("[^a]", "b"),
            ("[]]", "]"),
            ("[", "["),
            ("a[", "a["),
            ("*a*b*", "xaybz"),
        ];
        let no = [
            ("a*c", "abd"),
            ("?", ""),
            ("[abc]", "d"),
            ("[!a-c]", "b"),
            ("*.fa", "x.fasta"),
            ("[", "a"),
        ];
        let chars = |s: &str| s.chars().collect::<Vec<char>>();
        for (p, n) in yes {
            assert!(wildcard(&chars(p), &chars(n)), "{p:?} should match {n:?}");
        }
        for (p, n) in no {
            assert!(
                !wildcard(&chars(p), &chars(n)),
                "{p:?} should not match {n:?}"
            );
        }
    }

    #[test]
    fn pilot_data_example_stages_in_and_exports() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/pilot-data.toml"
        ));
        let w = load(path, LOCAL, false)
            .map_err(|e| e.to_string())
            .expect("pilot-data loads");
        assert_eq!(w.pilot_data.len(), 1);
        assert!(
            w.pilot_data[0].url.starts_with("file:///"),
            "{:?}",
            w.pilot_data
        );
        assert!(!w.data_units.is_empty());
        assert!(w.units().any(|u| !u.description.input_data.is_empty()));
        assert!(
            w.units()
                .any(|u| u.description.output_data.iter().any(|o| o.export.is_some()))
        );
    }
}

#[cfg(test)]
mod workflow_tests;
