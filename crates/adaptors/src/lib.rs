//! Resource adaptors: how a pilot is placed on a resource (the seeds' SAGA layer).
//!
//! Every adaptor implements [`ResourceAdaptor`] and lives in a folder of its own with a
//! `docs.md` (URL form, what must be installed, what is and is not supported). An adaptor
//! submits the *pilot job*, whose only task is to start a pilot agent; it knows nothing of
//! units, which reach the agent through the coordination store.
//!
//! | scheme | adaptor | status |
//! |---|---|---|
//! | `local://` | [`local::Local`] | available (agent in-process, or a `pstar agent` child over Redis) |
//! | `ssh://`, `slurm://`, `slurm+ssh://`, `sge://`, `pbs://`, `lsf://`, `condor://` | — | not yet |

use std::sync::Arc;

use async_trait::async_trait;

use pstar_coordination::{Coordination, PilotRecord};
use pstar_model::Scheme;

pub mod local;

/// What an adaptor needs to place one pilot.
pub struct PilotJob {
    /// The pilot's id, description and sandbox.
    pub record: PilotRecord,
    /// The store the agent will coordinate through.
    pub coordination: Arc<dyn Coordination>,
}

/// An adaptor's handle on a submitted pilot job (a batch job id, a process id...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobId(pub String);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The state of a pilot job as its resource sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Waiting in the resource's queue.
    Queued,
    /// Running (its agent may still be starting).
    Running,
    /// Gone; `detail` says why when it did not end cleanly.
    Finished { ok: bool, detail: Option<String> },
}

/// Why an adaptor could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum AdaptorError {
    /// The adaptor cannot serve this pilot in this configuration.
    #[error("{0}")]
    Unsupported(String),
    /// The resource refused or failed the request; the message is the resource's own.
    #[error("{0}")]
    Resource(String),
    #[error("unknown pilot job {0}")]
    UnknownJob(JobId),
}

/// One kind of resource: submit a pilot job, ask its state, cancel it.
#[async_trait]
pub trait ResourceAdaptor: Send + Sync + 'static {
    /// The URL scheme this adaptor serves.
    fn scheme(&self) -> Scheme;

    /// Submits the pilot job; returns once the resource accepted it.
    async fn submit(&self, job: PilotJob) -> Result<JobId, AdaptorError>;

    /// The job's state on the resource.
    async fn state(&self, job: &JobId) -> Result<JobState, AdaptorError>;

    /// Ends the job on the resource (the agent is asked to stop first, through the store;
    /// this is what makes sure it is gone).
    async fn cancel(&self, job: &JobId) -> Result<(), AdaptorError>;
}

/// The `pstar` program that runs agents as processes (`pstar agent`): `$PSTAR_AGENT_BIN`
/// if set; else this program if it is `pstar`; else a `pstar` beside this program or one
/// directory up (where cargo puts it for test programs); else `pstar` on the `PATH`.
pub fn agent_program() -> Result<std::path::PathBuf, AdaptorError> {
    if let Some(p) = std::env::var_os("PSTAR_AGENT_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()
        .map_err(|e| AdaptorError::Resource(format!("cannot find this program: {e}")))?;
    if exe.file_name().is_some_and(|n| n == "pstar") {
        return Ok(exe);
    }
    let beside = exe
        .parent()
        .into_iter()
        .flat_map(|d| [d.join("pstar"), d.join("../pstar")]);
    for candidate in beside {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("pstar"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            AdaptorError::Unsupported(
                "cannot find the `pstar` program to start an agent process; put it on the \
                 PATH or set PSTAR_AGENT_BIN"
                    .into(),
            )
        })
}

/// The adaptors of this build, one per scheme they serve; agents they start use
/// `agent_config`.
pub fn available(agent_config: pstar_agent::AgentConfig) -> Vec<Arc<dyn ResourceAdaptor>> {
    vec![Arc::new(local::Local::with_agent_config(agent_config))]
}

/// The schemes this build can place pilots on.
pub fn supported_schemes() -> Vec<Scheme> {
    available(Default::default())
        .iter()
        .map(|a| a.scheme())
        .collect()
}
