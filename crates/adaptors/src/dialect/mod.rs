//! Dialects: what one batch system (or a plain `setsid` on a host) is told and answers.
//!
//! A [`Dialect`] turns a pilot description into a job script, says which command submits
//! it and reads the job id from what that command prints, builds the one status query that
//! tells the states of many jobs at once and reads its answer, and cancels. It is pure: it
//! builds commands and reads outputs, and is tested against recorded outputs of the real
//! commands. It does not know where its commands run: a transport (`crate::transport`)
//! runs them here or over SSH, and `crate::batch` composes the two into an adaptor.
//!
//! One folder per dialect, each with its `docs.md`, `tests.rs` and recorded `fixtures/`.

pub mod condor;
pub mod fork;
pub mod lsf;
pub mod pbs;
pub mod sge;
pub mod slurm;
#[cfg(test)]
pub(crate) mod testing;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pstar_model::PilotComputeDescription;

use crate::transport::{Command, Output};
use crate::{AdaptorError, JobFile, JobState};

/// Everything a [`Dialect`] needs to write a pilot's job script.
pub struct ScriptJob<'a> {
    /// The job's name in the scheduler (`pstar.<session>.<pilot>`).
    pub name: String,
    pub description: &'a PilotComputeDescription,
    /// The pilot's sandbox on the resource: the job's working directory.
    pub sandbox: &'a Path,
    /// Where the job's standard output and error go.
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// The shell lines that start the agent (after the directives).
    pub body: String,
    /// Options from the resource URL's query (`sge://?pe=mpi`).
    pub options: &'a HashMap<String, String>,
}

impl ScriptJob<'_> {
    /// The walltime as `HH:MM:SS` (hours may exceed 24), rounded up to whole seconds.
    pub fn walltime_hms(&self) -> String {
        let secs = self.description.walltime.as_secs()
            + u64::from(self.description.walltime.subsec_nanos() > 0);
        format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    }

    /// The walltime in whole minutes, rounded up (at least 1).
    pub fn walltime_minutes(&self) -> u64 {
        self.description.walltime.as_secs().div_ceil(60).max(1)
    }
}

/// A submitted job, as the status commands are asked about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobRef<'a> {
    /// The job id the submit command printed.
    pub id: &'a str,
    /// The pilot's sandbox on the resource (where the job leaves `pilot.exit`).
    pub sandbox: &'a Path,
}

/// One scheduler's dialect. Implementations are pure: they build commands and read
/// outputs, and are tested against recorded outputs of the real commands.
pub trait Dialect: Send + Sync + 'static {
    /// The scheduler's name in messages (`Slurm`).
    fn name(&self) -> &'static str;

    /// Whether one job can hold several nodes (else a pilot must have `nodes = 1`).
    fn multi_node(&self) -> bool;

    /// Whether a batch system places the job (`false`: a process started on the host).
    fn is_batch(&self) -> bool {
        true
    }

    /// The files of one pilot job, to be written into its sandbox; the first is the one
    /// [`submit`](Self::submit) is given.
    fn render(&self, job: &ScriptJob<'_>) -> Result<Vec<JobFile>, AdaptorError>;

    /// The command that submits `script` (the first rendered file, in the sandbox).
    fn submit(&self, script: &Path) -> Command;

    /// The job id in the submit command's output.
    fn parse_submit(&self, out: &Output) -> Result<String, AdaptorError>;

    /// Commands that each tell the states of many jobs in one call: the first is asked
    /// about every job followed, each next one (if any) about the jobs the ones before did
    /// not know. Usually one command (`squeue --jobs=1,2,3`, `qstat`, `bjobs 1 2 3`).
    fn status(&self, jobs: &[JobRef<'_>]) -> Vec<Command>;

    /// The states, read from the answer to status command `index`, of those of `jobs`
    /// that the answer knows for sure; the others are asked of the next command, then of
    /// [`history`](Self::history).
    fn parse_status(
        &self,
        index: usize,
        jobs: &[JobRef<'_>],
        out: &Output,
    ) -> HashMap<String, JobState>;

    /// Commands that tell one job's state when no status command knew it (an ended job:
    /// its accounting record), asked in order until one knows it. None by default.
    fn history(&self, job: JobRef<'_>) -> Vec<Command> {
        let _ = job;
        Vec::new()
    }

    /// The job's state from the answer to history command `index`, or `None` if that
    /// command does not know the job (the next one is asked).
    fn parse_history(&self, index: usize, job: &str, out: &Output) -> Option<JobState> {
        let _ = (index, job, out);
        None
    }

    /// The command that cancels a job.
    fn cancel(&self, job: &str) -> Command;

    /// Every command that can tell `job`'s state, in the order they are asked when only
    /// this job is asked about: the status commands, then the history ones.
    fn queries(&self, job: &str, sandbox: &Path) -> Vec<Command> {
        let job = JobRef { id: job, sandbox };
        let mut all = self.status(&[job]);
        all.extend(self.history(job));
        all
    }

    /// `job`'s state from the answer to command `index` of [`queries`](Self::queries),
    /// or `None` if that command does not know it.
    fn parse_query(&self, index: usize, job: &str, out: &Output) -> Option<JobState> {
        let one = [JobRef {
            id: job,
            sandbox: Path::new(""),
        }];
        let status = self.status(&one).len();
        if index < status {
            self.parse_status(index, &one, out).remove(job)
        } else {
            self.parse_history(index - status, job, out)
        }
    }
}

/// Refuses a value that would end a directive line and start another (or a command).
pub fn single_line<'a>(field: &str, value: &'a str) -> Result<&'a str, AdaptorError> {
    if value.contains(['\n', '\r', '\0']) {
        Err(AdaptorError::Unsupported(format!(
            "`{field}` must be one line; `{}` is not",
            value.escape_debug()
        )))
    } else {
        Ok(value)
    }
}

/// Options in the resource URL's query string (`sge://?pe=mpi`).
pub(crate) fn query_options(d: &PilotComputeDescription) -> HashMap<String, String> {
    url::Url::parse(d.resource.as_str())
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

/// A path placed in a directive: one line, or refused.
pub(crate) fn path_line(path: &Path) -> Result<String, AdaptorError> {
    let text = path.display().to_string();
    single_line("working_directory", &text)?;
    Ok(text)
}
