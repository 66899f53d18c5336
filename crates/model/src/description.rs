//! What an application asks for: pilot and compute-unit descriptions.
//!
//! Descriptions are plain data with no state (the seeds' *description* objects); the
//! Pilot-API turns them into stateful [`PilotId`]-named pilots and [`UnitId`]-named units.
//!
//! [`UnitId`]: crate::UnitId

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{PilotId, ResourceUrl, UnitId};

/// A description that can never be satisfied, found before anything is submitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptionError {
    #[error("`{field}` must be at least 1")]
    Zero { field: &'static str },
    #[error("`executable` is empty")]
    NoExecutable,
    #[error("`walltime` must be longer than zero")]
    NoWalltime,
    #[error(
        "`time_request` must be longer than zero (leave it out when the run time is not known)"
    )]
    NoTimeRequest,
    #[error("`timeout` must be longer than zero (leave it out for no limit)")]
    NoTimeout,
    #[error(
        "{} cannot be spread evenly over {nodes} nodes",
        crate::plural(u64::from(*.cores), "core")
    )]
    UnevenNodes { cores: u32, nodes: u32 },
    #[error(
        "{} cannot be spread evenly over {nodes} nodes",
        crate::plural(u64::from(*.gpus), "GPU")
    )]
    UnevenGpus { gpus: u32, nodes: u32 },
    /// A data unit name in `input_data` or `output_data` that is not allowed.
    #[error("`{field}`: {source}")]
    DataName {
        field: &'static str,
        source: crate::InvalidDataName,
    },
    /// The same data unit named twice in one unit's `input_data` or `output_data`.
    #[error("`{field}` names data unit `{name}` twice")]
    DataTwice { field: &'static str, name: String },
    /// An output pattern that could reach outside the unit's sandbox, or is empty.
    #[error("`output_data` `{name}`: pattern {pattern:?} {why}")]
    OutputPattern {
        name: String,
        pattern: String,
        why: &'static str,
    },
    /// No process can be given a string with a NUL byte (arguments, environment, paths).
    #[error("`{field}` contains a NUL byte (`{}`)", .value.escape_debug())]
    Nul { field: &'static str, value: String },
    /// An environment variable's name must be non-empty and free of `=` and NUL.
    #[error(
        "environment variable name `{}` {why}", .name.escape_debug()
    )]
    BadVariable { name: String, why: &'static str },
    #[error("`{field}` is empty: leave it out to use the default `{field}` file")]
    EmptyOutput { field: &'static str },
    /// Both streams would be opened (and truncated) separately: one would lose its output.
    #[error(
        "`stdout` and `stderr` name the same file `{}`: give them different names",
        .path.escape_debug()
    )]
    SameOutput { path: String },
    /// More units submitted with reserved ids than were reserved.
    #[error("only {left} reserved unit ids are left")]
    Reserved { left: u64 },
    /// More retries than [`MAX_RETRIES`].
    #[error("`retries` is {0}: at most {MAX_RETRIES} (every run is kept in the unit's record)")]
    TooManyRetries(u32),
    /// An exit code a failed run cannot have (1 to 255; 0 is success).
    #[error(
        "`retry_on_exit_codes` holds {0}: a failed run exits with 1 to 255 (a run killed by \
         a signal or a timeout has no exit code, and is tried again only without \
         `retry_on_exit_codes`)"
    )]
    RetryCode(i32),
    /// `retry_on_exit_codes` without `retries`: no run would be tried again.
    #[error("`retry_on_exit_codes` needs `retries` above zero")]
    RetryCodesWithoutRetries,
    /// A function unit with a field that only a process has.
    #[error(
        "`{field}` is for units that run a program; a function unit (`function`) runs in \
         its pilot's Python worker and has none"
    )]
    FunctionWith { field: &'static str },
    /// A function call bigger than [`MAX_FUNCTION_BYTES`].
    #[error(
        "the function and its arguments pickle to {} bytes: at most {} (pass large data \
         as files, or through Pilot-Data)",
        .0, MAX_FUNCTION_BYTES
    )]
    FunctionTooBig(usize),
    #[error("`python` is empty: leave it out for `python3`")]
    EmptyPython,
}

impl DescriptionError {
    /// The fields of the description that are at fault, most telling first.
    pub fn fields(&self) -> Vec<&'static str> {
        use DescriptionError::*;
        match self {
            Zero { field }
            | DataName { field, .. }
            | DataTwice { field, .. }
            | Nul { field, .. }
            | EmptyOutput { field } => vec![*field],
            NoExecutable => vec!["executable"],
            NoWalltime => vec!["walltime"],
            NoTimeRequest => vec!["time_request"],
            NoTimeout => vec!["timeout"],
            UnevenNodes { .. } => vec!["nodes", "cores"],
            UnevenGpus { .. } => vec!["nodes", "gpus"],
            BadVariable { .. } => vec!["environment"],
            SameOutput { .. } => vec!["stderr", "stdout"],
            OutputPattern { .. } => vec!["output_data"],
            Reserved { .. } => vec![],
            RetryCodesWithoutRetries => vec!["retry_on_exit_codes", "retries"],
            RetryCode(_) => vec!["retry_on_exit_codes"],
            TooManyRetries(_) => vec!["retries"],
            FunctionWith { field } => vec![*field],
            FunctionTooBig(_) => vec!["function"],
            EmptyPython => vec!["python"],
        }
    }
}

/// Refuses a string no process can be given.
fn no_nul(field: &'static str, value: &str) -> Result<(), DescriptionError> {
    if value.contains('\0') {
        return Err(DescriptionError::Nul {
            field,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// Refuses an environment a process cannot be given: names empty or with `=` or NUL, and
/// values with NUL.
fn check_environment(environment: &BTreeMap<String, String>) -> Result<(), DescriptionError> {
    for (name, value) in environment {
        let why = if name.is_empty() {
            Some("is empty")
        } else if name.contains('=') {
            Some("contains `=`")
        } else if name.contains('\0') {
            Some("contains a NUL byte")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(DescriptionError::BadVariable {
                name: name.clone(),
                why,
            });
        }
        no_nul("environment", value)?;
    }
    Ok(())
}

/// Refuses a path no process can be given.
fn no_nul_path(field: &'static str, path: &Option<PathBuf>) -> Result<(), DescriptionError> {
    match path {
        Some(p) => no_nul(field, &p.to_string_lossy()),
        None => Ok(()),
    }
}

/// `path` without `.` components (`./out` and `out` are one file).
fn lexical(path: &str) -> PathBuf {
    Path::new(path)
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

/// Data-center and machine labels a scheduler may use to place work next to data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Affinity {
    /// Data-center label (the seeds' `affinity_datacenter_label`).
    pub datacenter: Option<String>,
    /// Machine label (the seeds' `affinity_machine_label`).
    pub machine: Option<String>,
}

/// How to place one pilot: the seeds' `PilotComputeDescription`.
///
/// ```
/// use std::time::Duration;
/// use pstar_model::PilotComputeDescription;
///
/// let pilot = PilotComputeDescription {
///     cores: 4,
///     walltime: Duration::from_secs(600),
///     ..PilotComputeDescription::default() // local://, 1 core, no GPU
/// };
/// assert_eq!(pilot.resource.as_str(), "local://");
/// pilot.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PilotComputeDescription {
    /// A name the application chooses, e.g. for early binding in a workload file.
    pub name: Option<String>,
    /// Where the pilot runs (the seeds' `service_url`).
    pub resource: ResourceUrl,
    /// Cores the pilot holds for its units, over all its nodes (the seeds'
    /// `number_of_processes`).
    pub cores: u32,
    /// Nodes the cores are spread over, `cores / nodes` on each; default 1. Batch
    /// resources only: a `local://` or `ssh://` pilot is one host.
    pub nodes: Option<u32>,
    /// GPUs the pilot holds.
    pub gpus: u32,
    /// How long the pilot may live; its agent stops taking work shortly before the end.
    #[serde(with = "humantime_serde")]
    pub walltime: Duration,
    /// Batch queue or partition.
    pub queue: Option<String>,
    /// Project or account to charge.
    pub project: Option<String>,
    /// Advance reservation to run in.
    pub reservation: Option<String>,
    /// Extra options handed to the batch system as they are, one per directive line
    /// (e.g. `--constraint=haswell` for Slurm, `-l h_vmem=2G` for Grid Engine).
    #[serde(default)]
    pub scheduler_options: Vec<String>,
    /// Reach the coordination store through the SSH connection the manager holds to the
    /// resource (for compute nodes that cannot reach it); `ssh`-based resources only.
    #[serde(default)]
    pub tunnel: bool,
    /// Where the pilot keeps its sandbox; default `./pstar.sandbox`. A relative path is
    /// taken against the manager's working directory (on a host reached over SSH, against
    /// the home directory there); workload files make theirs absolute first.
    pub working_directory: Option<PathBuf>,
    /// Environment every unit of this pilot sees (a unit's own environment wins).
    pub environment: BTreeMap<String, String>,
    /// Placement labels.
    pub affinity: Affinity,
    /// Most bytes the pilot's data cache (its own store, in its sandbox) may hold: the
    /// data units used least recently are evicted to make room. `None`: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_size: Option<u64>,
    /// Shell lines every unit of this pilot runs before its own `pre_exec` (module loads,
    /// a conda activation), in the same `/bin/sh`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre_exec: Vec<String>,
    /// The Python interpreter that runs this pilot's function units (a name looked up in
    /// the pilot's `PATH`, or a path on its host); default `python3`. It needs
    /// `cloudpickle`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
}

impl Default for PilotComputeDescription {
    fn default() -> Self {
        Self {
            name: None,
            resource: ResourceUrl::local(),
            cores: 1,
            nodes: None,
            gpus: 0,
            walltime: Duration::from_secs(3600),
            queue: None,
            project: None,
            reservation: None,
            scheduler_options: Vec::new(),
            tunnel: false,
            working_directory: None,
            environment: BTreeMap::new(),
            affinity: Affinity::default(),
            cache_size: None,
            pre_exec: Vec::new(),
            python: None,
        }
    }
}

impl PilotComputeDescription {
    /// Refuses a pilot that could never hold a unit.
    pub fn validate(&self) -> Result<(), DescriptionError> {
        if self.cores == 0 {
            return Err(DescriptionError::Zero { field: "cores" });
        }
        if self.walltime.is_zero() {
            return Err(DescriptionError::NoWalltime);
        }
        match self.nodes {
            Some(0) => return Err(DescriptionError::Zero { field: "nodes" }),
            Some(nodes) if !self.cores.is_multiple_of(nodes) => {
                return Err(DescriptionError::UnevenNodes {
                    cores: self.cores,
                    nodes,
                });
            }
            Some(nodes) if !self.gpus.is_multiple_of(nodes) => {
                return Err(DescriptionError::UnevenGpus {
                    gpus: self.gpus,
                    nodes,
                });
            }
            _ => {}
        }
        for (field, value) in [
            ("name", &self.name),
            ("queue", &self.queue),
            ("project", &self.project),
            ("reservation", &self.reservation),
            ("affinity", &self.affinity.datacenter),
            ("affinity", &self.affinity.machine),
        ] {
            if let Some(v) = value {
                no_nul(field, v)?;
            }
        }
        for option in &self.scheduler_options {
            no_nul("scheduler_options", option)?;
        }
        for line in &self.pre_exec {
            no_nul("pre_exec", line)?;
        }
        if let Some(python) = &self.python {
            if python.trim().is_empty() {
                return Err(DescriptionError::EmptyPython);
            }
            no_nul("python", python)?;
        }
        no_nul_path("working_directory", &self.working_directory)?;
        check_environment(&self.environment)?;
        Ok(())
    }

    /// The Python interpreter of its function units.
    pub fn python(&self) -> &str {
        self.python.as_deref().unwrap_or("python3")
    }

    /// Nodes the pilot asks for (1 unless `nodes` says more).
    pub fn node_count(&self) -> u32 {
        self.nodes.unwrap_or(1).max(1)
    }

    /// Cores on each node.
    pub fn cores_per_node(&self) -> u32 {
        self.cores / self.node_count()
    }

    /// GPUs on each node.
    pub fn gpus_per_node(&self) -> u32 {
        self.gpus / self.node_count()
    }
}

/// One task: the seeds' `ComputeUnitDescription`.
///
/// The executable runs without a shell, with `arguments` passed as they are, unless
/// `shell` is set (then `executable` is a shell command line and `arguments` become its
/// positional parameters `$1`, `$2`...). `pre_exec` lines run in `/bin/sh` before it.
///
/// ```
/// use pstar_model::ComputeUnitDescription;
///
/// let unit = ComputeUnitDescription::new("/usr/bin/bfast")
///     .with_arguments(["match", "-t4", "/data/file1"])
///     .with_cores(4);
/// assert_eq!(unit.arguments.len(), 3);
/// unit.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComputeUnitDescription {
    /// A label for reports; defaults to the executable's file name.
    pub name: Option<String>,
    /// Path (or name looked up in `PATH`) of the program to run.
    pub executable: String,
    pub arguments: Vec<String>,
    /// Added to the pilot's environment; these win.
    pub environment: BTreeMap<String, String>,
    /// Directory the process starts in; default: the unit's own sandbox. A relative path
    /// is taken inside the unit's sandbox, wherever the agent runs (workload files make
    /// theirs absolute, against the file's directory).
    pub working_directory: Option<PathBuf>,
    /// Cores the unit needs (the seeds' `total_core_count`).
    pub cores: u32,
    /// GPUs the unit needs.
    pub gpus: u32,
    /// File for standard output; relative names are inside the unit's sandbox (an
    /// absolute name, or one with `..`, may be outside it). Default `stdout`; not empty.
    pub stdout: Option<String>,
    /// File for standard error; default `stderr`; not empty, and not `stdout`'s file.
    pub stderr: Option<String>,
    /// Shell lines run before the executable, e.g. `module load gromacs`.
    pub pre_exec: Vec<String>,
    /// Shell lines run in `/bin/sh` after the executable, whatever its exit code (which
    /// stays the unit's unless a line fails).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_exec: Vec<String>,
    /// Run `executable` as a `/bin/sh` command line.
    pub shell: bool,
    /// An MPI program: one rank per core, started over the unit's cores with the
    /// pilot's launcher (`srun` inside Slurm, `mpirun` elsewhere); ranks may span nodes.
    #[serde(default)]
    pub mpi: bool,
    /// Free-form labels.
    pub tags: Vec<String>,
    /// Early binding: run only on this pilot.
    pub pilot: Option<PilotId>,
    /// How long the unit is expected to run. The scheduler binds it only to a pilot
    /// with at least this much walltime left; a unit whose `time_request` exceeds every
    /// live pilot's whole walltime fails at once. `pstar simulate` runs it for this long.
    #[serde(
        default,
        with = "opt_humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub time_request: Option<Duration>,
    /// Kill the unit's whole process tree when it has run this long; it fails with
    /// "timeout after <timeout>". `None`: no limit.
    #[serde(
        default,
        with = "opt_humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Data units made present in the unit's sandbox, under `$PSTAR_DATA/<name>/`, before
    /// it runs. The unit waits in the pool until each of them exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_data: Vec<String>,
    /// Data units made of the files the unit leaves in its sandbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_data: Vec<crate::OutputData>,
    /// Units of the same session this one runs after: it waits outside the pool until
    /// each of them is `Done`. (A unit that reads another's `output_data` waits for it
    /// without naming it here.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<UnitId>,
    /// What the unit does when a unit it runs after (or whose output it reads) fails or is
    /// canceled: by default it is canceled, with a reason naming that unit.
    #[serde(default, skip_serializing_if = "OnDependencyFailure::is_cancel")]
    pub on_dependency_failure: OnDependencyFailure,
    /// How many more times a failed run is tried, on any pilot (0: none). Each attempt is
    /// kept in the unit's `attempts`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// Only runs that exit with one of these codes are tried again (empty: any failure of
    /// the run, a timeout or a signal included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on_exit_codes: Vec<i32>,
    /// A function unit: instead of a program, a Python call run by one of its pilot's
    /// Python workers (see [`FunctionCall`]); `executable` stays empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCall>,
}

/// The most `retries` a unit may have.
pub const MAX_RETRIES: u32 = 100;

/// The most bytes a function call, or what it returns, may pickle to.
pub const MAX_FUNCTION_BYTES: usize = 64 << 20;

/// A Python call a function unit runs: the function and its arguments, pickled by the
/// client (with cloudpickle, as `(function, args, kwargs)`), unpickled and called by a
/// Python worker of the pilot the unit runs on. What it returns (or raises) comes back,
/// pickled, with the unit's final state.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The function's name, for reports (`module.qualname`).
    pub name: String,
    /// The pickled `(function, args, kwargs)`.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

impl std::fmt::Debug for FunctionCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionCall")
            .field("name", &self.name)
            .field("payload", &format_args!("{} bytes", self.payload.len()))
            .finish()
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What a unit does when a unit it depends on ends other than `Done`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDependencyFailure {
    /// It is canceled, naming the dependency (the default).
    #[default]
    Cancel,
    /// It runs anyway once every dependency has ended (an input data unit that was never
    /// made still cancels it: there is nothing to stage).
    Run,
}

impl OnDependencyFailure {
    fn is_cancel(&self) -> bool {
        *self == OnDependencyFailure::Cancel
    }
}

impl Default for ComputeUnitDescription {
    fn default() -> Self {
        Self {
            name: None,
            executable: String::new(),
            arguments: Vec::new(),
            environment: BTreeMap::new(),
            working_directory: None,
            cores: 1,
            gpus: 0,
            stdout: None,
            stderr: None,
            pre_exec: Vec::new(),
            post_exec: Vec::new(),
            shell: false,
            mpi: false,
            tags: Vec::new(),
            pilot: None,
            time_request: None,
            timeout: None,
            input_data: Vec::new(),
            output_data: Vec::new(),
            after: Vec::new(),
            on_dependency_failure: OnDependencyFailure::Cancel,
            retries: 0,
            retry_on_exit_codes: Vec::new(),
            function: None,
        }
    }
}

impl ComputeUnitDescription {
    /// A one-core unit running `executable`.
    pub fn new(executable: impl Into<String>) -> Self {
        Self {
            executable: executable.into(),
            ..Self::default()
        }
    }

    /// The same unit with these arguments.
    pub fn with_arguments<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.arguments = args.into_iter().map(Into::into).collect();
        self
    }

    /// The same unit needing `cores` cores.
    pub fn with_cores(mut self, cores: u32) -> Self {
        self.cores = cores;
        self
    }

    /// The same unit, expected to run for `time`.
    pub fn with_time_request(mut self, time: Duration) -> Self {
        self.time_request = Some(time);
        self
    }

    /// The same unit, bound early to `pilot`.
    pub fn with_pilot(mut self, pilot: PilotId) -> Self {
        self.pilot = Some(pilot);
        self
    }

    /// The same unit, run only after each of `units` is `Done` (units of the same
    /// session, already submitted).
    pub fn after(mut self, units: impl IntoIterator<Item = UnitId>) -> Self {
        self.after.extend(units);
        self
    }

    /// The same unit, tried up to `retries` more times when a run fails.
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Whether a run that ended with `exit_code` (`None`: a signal, a timeout, a launch
    /// error) is one that `retry_on_exit_codes` lets be tried again.
    pub fn retries_exit(&self, exit_code: Option<i32>) -> bool {
        self.retries > 0
            && (self.retry_on_exit_codes.is_empty()
                || exit_code.is_some_and(|c| self.retry_on_exit_codes.contains(&c)))
    }

    /// A function unit calling `call` (its name shown as the unit's, unless named).
    pub fn function(call: FunctionCall) -> Self {
        Self {
            function: Some(call),
            ..Self::default()
        }
    }

    /// The name shown in reports: `name`, else the executable's file name (a function
    /// unit's function).
    pub fn display_name(&self) -> &str {
        match (&self.name, &self.function) {
            (Some(n), _) => n,
            (None, Some(call)) => &call.name,
            (None, None) => self
                .executable
                .rsplit('/')
                .next()
                .unwrap_or(&self.executable),
        }
    }

    /// Refuses a unit that could never run.
    /// Refuses what a function unit cannot have: the fields of a process.
    fn validate_function(&self, call: &FunctionCall) -> Result<(), DescriptionError> {
        let with = |field| Err(DescriptionError::FunctionWith { field });
        if !self.executable.is_empty() {
            return with("executable");
        }
        for (field, set) in [
            ("arguments", !self.arguments.is_empty()),
            ("environment", !self.environment.is_empty()),
            ("working_directory", self.working_directory.is_some()),
            ("stdout", self.stdout.is_some()),
            ("stderr", self.stderr.is_some()),
            ("pre_exec", !self.pre_exec.is_empty()),
            ("post_exec", !self.post_exec.is_empty()),
            ("shell", self.shell),
            ("mpi", self.mpi),
            ("gpus", self.gpus > 0),
            ("input_data", !self.input_data.is_empty()),
            ("output_data", !self.output_data.is_empty()),
        ] {
            if set {
                return with(field);
            }
        }
        if call.payload.len() > MAX_FUNCTION_BYTES {
            return Err(DescriptionError::FunctionTooBig(call.payload.len()));
        }
        no_nul("function", &call.name)
    }

    /// Checks `input_data` and `output_data`: names, no name twice, output patterns that
    /// stay inside the sandbox.
    fn validate_data(&self) -> Result<(), DescriptionError> {
        let mut seen = std::collections::HashSet::new();
        for name in &self.input_data {
            crate::check_data_name(name).map_err(|source| DescriptionError::DataName {
                field: "input_data",
                source,
            })?;
            if !seen.insert(name.as_str()) {
                return Err(DescriptionError::DataTwice {
                    field: "input_data",
                    name: name.clone(),
                });
            }
        }
        let mut seen = std::collections::HashSet::new();
        for out in &self.output_data {
            crate::check_data_name(&out.name).map_err(|source| DescriptionError::DataName {
                field: "output_data",
                source,
            })?;
            if !seen.insert(out.name.as_str()) {
                return Err(DescriptionError::DataTwice {
                    field: "output_data",
                    name: out.name.clone(),
                });
            }
            let bad = |pattern: &String, why| DescriptionError::OutputPattern {
                name: out.name.clone(),
                pattern: pattern.clone(),
                why,
            };
            if out.files.is_empty() {
                return Err(DescriptionError::OutputPattern {
                    name: out.name.clone(),
                    pattern: String::new(),
                    why: "is missing: give at least one pattern such as \"*.out\"",
                });
            }
            for pattern in &out.files {
                if pattern.is_empty() {
                    return Err(bad(pattern, "is empty"));
                }
                if pattern.starts_with('/') {
                    return Err(bad(
                        pattern,
                        "is absolute: patterns are relative to the unit's sandbox",
                    ));
                }
                if pattern.split('/').any(|c| c == "..") {
                    return Err(bad(
                        pattern,
                        "has a '..' component: it would reach outside the sandbox",
                    ));
                }
                if pattern.contains('\0') {
                    return Err(bad(pattern, "contains a NUL byte"));
                }
                if glob::Pattern::new(pattern).is_err() {
                    return Err(bad(
                        pattern,
                        "is not a valid pattern (`*`, `?`, `[abc]` and `**` are; a lone `[` is not)",
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), DescriptionError> {
        if let Some(call) = &self.function {
            self.validate_function(call)?;
        } else if self.executable.trim().is_empty() {
            return Err(DescriptionError::NoExecutable);
        }
        if self.cores == 0 {
            return Err(DescriptionError::Zero { field: "cores" });
        }
        if self.time_request == Some(Duration::ZERO) {
            return Err(DescriptionError::NoTimeRequest);
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(DescriptionError::NoTimeout);
        }
        if self.retries > MAX_RETRIES {
            return Err(DescriptionError::TooManyRetries(self.retries));
        }
        if self.retries == 0 && !self.retry_on_exit_codes.is_empty() {
            return Err(DescriptionError::RetryCodesWithoutRetries);
        }
        if let Some(code) = self
            .retry_on_exit_codes
            .iter()
            .find(|c| !(1..=255).contains(*c))
        {
            return Err(DescriptionError::RetryCode(*code));
        }
        self.validate_data()?;
        no_nul("executable", &self.executable)?;
        if let Some(name) = &self.name {
            no_nul("name", name)?;
        }
        for (field, values) in [
            ("arguments", &self.arguments),
            ("pre_exec", &self.pre_exec),
            ("post_exec", &self.post_exec),
            ("tags", &self.tags),
        ] {
            for v in values {
                no_nul(field, v)?;
            }
        }
        check_environment(&self.environment)?;
        no_nul_path("working_directory", &self.working_directory)?;
        for (field, value) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            match value {
                Some(v) if v.is_empty() => return Err(DescriptionError::EmptyOutput { field }),
                Some(v) => no_nul(field, v)?,
                None => {}
            }
        }
        let stdout = self.stdout.as_deref().unwrap_or("stdout");
        let stderr = self.stderr.as_deref().unwrap_or("stderr");
        if lexical(stdout) == lexical(stderr) {
            return Err(DescriptionError::SameOutput {
                path: stdout.to_owned(),
            });
        }
        Ok(())
    }
}

/// Serde for `Option<Duration>` as a human-readable string.
pub(crate) mod opt_humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::humantime_serde::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => humantime::parse_duration(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// Serde for `Duration` as a human-readable string (`"10m"`, `"1h 30m"`).
pub(crate) mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn output_patterns_must_be_valid_and_stay_in_the_sandbox() {
        let with = |pattern: &str| {
            let mut d = ComputeUnitDescription::new("/bin/true");
            d.output_data = vec![crate::OutputData::new("out", [pattern])];
            d.validate()
        };
        for ok in ["*.bam", "out/**", "a?.txt", "[ab].txt", "plain"] {
            with(ok).unwrap();
        }
        for bad in ["[", "/etc/*", "../x", "a/../../b", ""] {
            let e = with(bad).expect_err(bad).to_string();
            assert!(e.starts_with("`output_data` `out`: pattern"), "{bad}: {e}");
        }
    }

    use super::*;

    #[test]
    fn a_function_unit_has_no_field_of_a_process_and_a_bounded_call() {
        let call = |n: usize| FunctionCall {
            name: "f".into(),
            payload: vec![0; n],
        };
        let unit = ComputeUnitDescription::function(call(10));
        unit.validate().unwrap();
        assert_eq!(unit.display_name(), "f");
        let with = |change: fn(&mut ComputeUnitDescription)| {
            let mut d = unit.clone();
            change(&mut d);
            d.validate().map_err(|e| (e.fields(), e.to_string()))
        };
        for (field, change) in [
            (
                "executable",
                (|d: &mut ComputeUnitDescription| d.executable = "/bin/true".into())
                    as fn(&mut ComputeUnitDescription),
            ),
            ("arguments", |d| d.arguments = vec!["x".into()]),
            ("shell", |d| d.shell = true),
            ("mpi", |d| d.mpi = true),
            ("pre_exec", |d| d.pre_exec = vec!["module load x".into()]),
            ("stdout", |d| d.stdout = Some("out".into())),
            ("input_data", |d| d.input_data = vec!["du".into()]),
        ] {
            let (fields, message) = with(change).expect_err(field);
            assert_eq!(fields, vec![field]);
            assert!(message.contains("function unit"), "{message}");
        }
        let big = ComputeUnitDescription::function(call(MAX_FUNCTION_BYTES + 1));
        let e = big.validate().unwrap_err();
        assert_eq!(e.fields(), vec!["function"]);
        assert!(e.to_string().contains("at most"), "{e}");
        // Without a function, an executable is needed as before.
        assert_eq!(
            ComputeUnitDescription::default().validate(),
            Err(DescriptionError::NoExecutable)
        );
    }

    #[test]
    fn units_no_process_could_be_given_are_refused() {
        let unit = || ComputeUnitDescription::new("/bin/true");
        let env = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        let cases = [
            (
                "executable",
                ComputeUnitDescription::new("/bin/t\0rue"),
                "`executable` contains a NUL byte",
            ),
            (
                "argument",
                unit().with_arguments(["a\0"]),
                "`arguments` contains a NUL byte",
            ),
            (
                "pre_exec",
                ComputeUnitDescription {
                    pre_exec: vec!["\0".into()],
                    ..unit()
                },
                "`pre_exec`",
            ),
            (
                "env value",
                ComputeUnitDescription {
                    environment: env("A", "\0"),
                    ..unit()
                },
                "`environment` contains a NUL",
            ),
            (
                "empty name",
                ComputeUnitDescription {
                    environment: env("", "x"),
                    ..unit()
                },
                "name `` is empty",
            ),
            (
                "= in name",
                ComputeUnitDescription {
                    environment: env("A=B", "x"),
                    ..unit()
                },
                "name `A=B` contains `=`",
            ),
            (
                "NUL in name",
                ComputeUnitDescription {
                    environment: env("A\0", "x"),
                    ..unit()
                },
                "contains a NUL byte",
            ),
            (
                "working dir",
                ComputeUnitDescription {
                    working_directory: Some("a\0".into()),
                    ..unit()
                },
                "`working_directory`",
            ),
            (
                "empty stdout",
                ComputeUnitDescription {
                    stdout: Some(String::new()),
                    ..unit()
                },
                "`stdout` is empty",
            ),
            (
                "empty stderr",
                ComputeUnitDescription {
                    stderr: Some(String::new()),
                    ..unit()
                },
                "`stderr` is empty",
            ),
            (
                "same output",
                ComputeUnitDescription {
                    stdout: Some("o".into()),
                    stderr: Some("./o".into()),
                    ..unit()
                },
                "name the same file `o`",
            ),
            (
                "stdout on default stderr",
                ComputeUnitDescription {
                    stdout: Some("stderr".into()),
                    ..unit()
                },
                "name the same file",
            ),
            (
                "zero time_request",
                unit().with_time_request(Duration::ZERO),
                "`time_request` must be longer than zero",
            ),
            (
                "stderr on default stdout",
                ComputeUnitDescription {
                    stderr: Some("stdout".into()),
                    ..unit()
                },
                "name the same file",
            ),
        ];
        for (what, d, message) in cases {
            match d.validate() {
                Ok(()) => panic!("{what}: accepted"),
                Err(e) => assert!(e.to_string().contains(message), "{what}: {e}"),
            }
        }
        let swapped = ComputeUnitDescription {
            stdout: Some("stderr".into()),
            stderr: Some("stdout".into()),
            ..unit()
        };
        assert_eq!(swapped.validate(), Ok(()));
    }

    #[test]
    fn pilots_no_process_could_be_given_are_refused() {
        let pilot = PilotComputeDescription::default;
        let cases = [
            PilotComputeDescription {
                queue: Some("q\0".into()),
                ..pilot()
            },
            PilotComputeDescription {
                scheduler_options: vec!["\0".into()],
                ..pilot()
            },
            PilotComputeDescription {
                environment: BTreeMap::from([("A=".to_owned(), String::new())]),
                ..pilot()
            },
            PilotComputeDescription {
                working_directory: Some("\0".into()),
                ..pilot()
            },
        ];
        for d in cases {
            assert!(d.validate().is_err(), "{d:?}");
        }
    }
}
