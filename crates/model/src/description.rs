//! What an application asks for: pilot and compute-unit descriptions.
//!
//! Descriptions are plain data with no state (the seeds' *description* objects); the
//! Pilot-API turns them into stateful [`PilotId`]-named pilots and [`UnitId`]-named units.
//!
//! [`UnitId`]: crate::UnitId

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{PilotId, ResourceUrl};

/// A description that can never be satisfied, found before anything is submitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptionError {
    #[error("`{field}` must be at least 1")]
    Zero { field: &'static str },
    #[error("`executable` is empty")]
    NoExecutable,
    #[error("`walltime` must be longer than zero")]
    NoWalltime,
    #[error("{cores} cores cannot be spread evenly over {nodes} nodes")]
    UnevenNodes { cores: u32, nodes: u32 },
    #[error("{gpus} GPUs cannot be spread evenly over {nodes} nodes")]
    UnevenGpus { gpus: u32, nodes: u32 },
    #[error("`{field}` names data units, but Pilot-Data is not part of this pstar yet")]
    DataNotSupported { field: &'static str },
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
    /// Where the pilot keeps its sandbox; default `./pstar.sandbox`.
    pub working_directory: Option<PathBuf>,
    /// Environment every unit of this pilot sees (a unit's own environment wins).
    pub environment: BTreeMap<String, String>,
    /// Placement labels.
    pub affinity: Affinity,
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
            Some(nodes) if self.cores % nodes != 0 => {
                return Err(DescriptionError::UnevenNodes {
                    cores: self.cores,
                    nodes,
                });
            }
            Some(nodes) if self.gpus % nodes != 0 => {
                return Err(DescriptionError::UnevenGpus {
                    gpus: self.gpus,
                    nodes,
                });
            }
            _ => {}
        }
        Ok(())
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
    /// Directory the process starts in; default: the unit's own sandbox.
    pub working_directory: Option<PathBuf>,
    /// Cores the unit needs (the seeds' `total_core_count`).
    pub cores: u32,
    /// GPUs the unit needs.
    pub gpus: u32,
    /// File for standard output; relative names are inside the unit's sandbox. Default `stdout`.
    pub stdout: Option<String>,
    /// File for standard error; default `stderr`.
    pub stderr: Option<String>,
    /// Shell lines run before the executable, e.g. `module load gromacs`.
    pub pre_exec: Vec<String>,
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
    /// Reserved for Pilot-Data: data units to stage in before the unit runs.
    pub input_data: Vec<String>,
    /// Reserved for Pilot-Data: data units the unit produces.
    pub output_data: Vec<String>,
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
            shell: false,
            mpi: false,
            tags: Vec::new(),
            pilot: None,
            input_data: Vec::new(),
            output_data: Vec::new(),
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

    /// The same unit, bound early to `pilot`.
    pub fn with_pilot(mut self, pilot: PilotId) -> Self {
        self.pilot = Some(pilot);
        self
    }

    /// The name shown in reports: `name`, else the executable's file name.
    pub fn display_name(&self) -> &str {
        match &self.name {
            Some(n) => n,
            None => self
                .executable
                .rsplit('/')
                .next()
                .unwrap_or(&self.executable),
        }
    }

    /// Refuses a unit that could never run.
    pub fn validate(&self) -> Result<(), DescriptionError> {
        if self.executable.trim().is_empty() {
            return Err(DescriptionError::NoExecutable);
        }
        if self.cores == 0 {
            return Err(DescriptionError::Zero { field: "cores" });
        }
        if !self.input_data.is_empty() {
            return Err(DescriptionError::DataNotSupported {
                field: "input_data",
            });
        }
        if !self.output_data.is_empty() {
            return Err(DescriptionError::DataNotSupported {
                field: "output_data",
            });
        }
        Ok(())
    }
}

/// Serde for `Duration` as a human-readable string (`"10m"`, `"1h 30m"`).
mod humantime_serde {
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
