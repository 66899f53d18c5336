//! `condor://`: HTCondor (vanilla universe). See `docs.md` beside this file.

use std::collections::HashMap;
use std::path::Path;

use crate::dialect::{Dialect, JobRef, ScriptJob, path_line, single_line};
use crate::transport::{Command, Output};
use crate::{AdaptorError, JobFile, JobState};

/// The submit description's name in the sandbox (the file `condor_submit` is given).
pub const SUBMIT_FILE: &str = "pilot.sub";
/// The pilot's shell script, the job's executable.
pub const SCRIPT_FILE: &str = "pilot.sh";
/// HTCondor's event log of the job, in the sandbox.
pub const EVENT_LOG: &str = "pilot.condor.log";

#[doc = include_str!("docs.md")]
#[derive(Debug, Default, Clone, Copy)]
pub struct Condor;

impl Dialect for Condor {
    fn name(&self) -> &'static str {
        "HTCondor"
    }

    fn render(&self, job: &ScriptJob<'_>) -> Result<Vec<JobFile>, AdaptorError> {
        let d = job.description;
        if d.node_count() > 1 {
            return Err(AdaptorError::Unsupported(format!(
                "HTCondor's vanilla universe runs a job on one machine: a `condor://` pilot \
                 cannot span {} nodes (ask for `nodes = 1` and at most one machine's cores)",
                d.node_count()
            )));
        }
        if let Some(q) = &d.queue {
            return Err(AdaptorError::Unsupported(format!(
                "HTCondor has no queues: remove `queue` (`{}`) and select machines with \
                 `scheduler_options` (e.g. `requirements = ...`)",
                q.escape_debug()
            )));
        }
        if let Some(r) = &d.reservation {
            return Err(AdaptorError::Unsupported(format!(
                "HTCondor has no advance reservations: remove `reservation` (`{}`)",
                r.escape_debug()
            )));
        }
        let sandbox = path_line(job.sandbox)?;
        let script = path_line(&job.sandbox.join(SCRIPT_FILE))?;
        let mut lines = vec![
            format!("# pstar pilot job {}", job.name),
            "universe = vanilla".to_owned(),
            format!("executable = {script}"),
            format!("initialdir = {sandbox}"),
            format!("output = {}", path_line(&job.stdout)?),
            format!("error = {}", path_line(&job.stderr)?),
            format!("log = {}", path_line(&job.sandbox.join(EVENT_LOG))?),
            format!("batch_name = {}", job.name),
            format!("request_cpus = {}", d.cores),
        ];
        if d.gpus > 0 {
            lines.push(format!("request_gpus = {}", d.gpus));
        }
        // The walltime: removed once it has run that long (a running spell; the agent stops
        // taking work before that).
        lines.push(format!(
            "periodic_remove = (JobStatus == 2) && ((time() - EnteredCurrentStatus) > {})",
            walltime_secs(job)
        ));
        if let Some(p) = &d.project {
            lines.push(format!("accounting_group = {}", single_line("project", p)?));
        }
        for option in &d.scheduler_options {
            lines.push(single_line("scheduler_options", option)?.to_owned());
        }
        lines.push("queue 1".into());
        Ok(vec![
            JobFile {
                name: SUBMIT_FILE.into(),
                content: lines.join("\n") + "\n",
            },
            JobFile {
                name: SCRIPT_FILE.into(),
                content: format!("#!/bin/sh\n{}", job.body),
            },
        ])
    }

    fn submit(&self, script: &Path) -> Command {
        Command::new(
            "condor_submit",
            ["-terse".to_owned(), script.display().to_string()],
        )
    }

    fn parse_submit(&self, out: &Output) -> Result<String, AdaptorError> {
        // `-terse` prints the first and last job id of the cluster: `123.0 - 123.0`.
        out.stdout
            .lines()
            .find_map(|line| {
                let first = line.trim().split(" - ").next()?.trim();
                let (cluster, proc) = first.split_once('.')?;
                let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
                (digits(cluster) && digits(proc)).then(|| first.to_owned())
            })
            .ok_or_else(|| {
                AdaptorError::Resource(format!(
                    "condor_submit printed no job id: {}",
                    out.stdout.trim()
                ))
            })
    }

    fn multi_node(&self) -> bool {
        // The vanilla universe runs a job on one machine.
        false
    }

    fn status(&self, jobs: &[JobRef<'_>]) -> Vec<Command> {
        // Jobs in the queue, each on a line of its own led by its id (`-af:j`); a job that
        // has left the queue gets no line.
        vec![Command::new(
            "condor_q",
            jobs.iter()
                .map(|j| j.id.to_owned())
                .chain(["-af:j", "JobStatus", "HoldReason"].map(str::to_owned)),
        )]
    }

    fn parse_status(
        &self,
        _index: usize,
        jobs: &[JobRef<'_>],
        out: &Output,
    ) -> HashMap<String, JobState> {
        if !out.success() {
            return HashMap::new();
        }
        out.stdout
            .lines()
            .filter_map(|line| {
                let (id, rest) = line.trim().split_once(' ')?;
                let job = jobs.iter().find(|j| j.id == id)?.id;
                let (status, reason) = rest.split_once(' ').unwrap_or((rest, ""));
                let status: u32 = status.parse().ok()?;
                Some((
                    job.to_owned(),
                    map_state(job, status, None, defined(reason).as_deref()),
                ))
            })
            .collect()
    }

    fn history(&self, job: JobRef<'_>) -> Vec<Command> {
        // A job that has left the queue.
        vec![Command::new(
            "condor_history",
            [
                job.id,
                "-limit",
                "1",
                "-af",
                "JobStatus",
                "ExitCode",
                "RemoveReason",
            ],
        )]
    }

    fn parse_history(&self, _index: usize, job: &str, out: &Output) -> Option<JobState> {
        if !out.success() {
            return None;
        }
        let line = out.stdout.lines().map(str::trim).find(|l| !l.is_empty())?;
        // `-af` prints the values space-separated; strings as they are, `undefined` if unset.
        let (status, rest) = line.split_once(' ').unwrap_or((line, ""));
        let status: u32 = status.parse().ok()?;
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        Some(map_state(
            job,
            status,
            defined(code).as_deref(),
            defined(reason).as_deref(),
        ))
    }

    fn cancel(&self, job: &str) -> Command {
        Command::new("condor_rm", [job])
    }
}

/// A value `-af` printed, or `None` for an empty or `undefined` one.
fn defined(value: &str) -> Option<String> {
    Some(value.trim())
        .filter(|v| !v.is_empty() && *v != "undefined")
        .map(str::to_owned)
}

/// The walltime in whole seconds, rounded up.
fn walltime_secs(job: &ScriptJob<'_>) -> u64 {
    let w = job.description.walltime;
    w.as_secs() + u64::from(w.subsec_nanos() > 0)
}

/// An HTCondor `JobStatus` (1 idle ... 7 suspended) as a pilot job state; `reason` is the
/// `HoldReason` of a held job or the `RemoveReason` of a removed one.
fn map_state(job: &str, status: u32, exit_code: Option<&str>, reason: Option<&str>) -> JobState {
    let failed = |what: String| JobState::Finished {
        ok: false,
        detail: Some(format!("job {job} {what}")),
    };
    let because = |r: Option<&str>| r.map(|r| format!(": {r}")).unwrap_or_default();
    match status {
        // Unexpanded, idle.
        0 | 1 => JobState::Queued,
        // Running, transferring output, suspended.
        2 | 6 | 7 => JobState::Running,
        3 => failed(format!("was removed{}", because(reason))),
        4 => match exit_code {
            Some("0") => JobState::Finished {
                ok: true,
                detail: None,
            },
            Some(code) => failed(format!("completed with exit code {code}")),
            None => failed("completed without an exit code (killed by a signal?)".into()),
        },
        // A held job never runs until someone releases it.
        5 => failed(format!(
            "is held{} (a held job does not run until someone releases it)",
            because(reason)
        )),
        other => failed(format!("has a JobStatus pstar does not know: {other}")),
    }
}

#[cfg(test)]
mod tests;
