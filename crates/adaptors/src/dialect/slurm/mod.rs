//! `slurm://` and `slurm+ssh://`: Slurm. See `docs.md` beside this file.

use std::collections::HashMap;
use std::path::Path;

use crate::dialect::{Dialect, JobRef, ScriptJob, single_line};
use crate::transport::{Command, Output};
use crate::{AdaptorError, JobFile, JobState};

/// The fields asked of `squeue --format`: job id, state, reason.
pub const SQUEUE_FORMAT: &str = "%i|%T|%r";

#[doc = include_str!("docs.md")]
#[derive(Debug, Default, Clone, Copy)]
pub struct Slurm;

impl Dialect for Slurm {
    fn name(&self) -> &'static str {
        "Slurm"
    }

    fn multi_node(&self) -> bool {
        true
    }

    fn render(&self, job: &ScriptJob<'_>) -> Result<Vec<JobFile>, AdaptorError> {
        let d = job.description;
        let mut lines = vec!["#!/bin/sh".to_owned()];
        let mut directive = |option: String| lines.push(format!("#SBATCH {option}"));
        directive(format!("--job-name={}", job.name));
        directive(format!("--nodes={}", d.node_count()));
        directive(format!("--ntasks-per-node={}", d.cores_per_node()));
        if d.gpus > 0 && d.node_count() > 1 {
            // The agent counts GPUs node by node: each node must hold its share.
            directive(format!("--gpus-per-node={}", d.gpus_per_node()));
        } else if d.gpus > 0 {
            directive(format!("--gpus={}", d.gpus));
        }
        directive(format!("--time={}", job.walltime_hms()));
        if let Some(q) = &d.queue {
            directive(format!("--partition={}", single_line("queue", q)?));
        }
        if let Some(p) = &d.project {
            directive(format!("--account={}", single_line("project", p)?));
        }
        if let Some(r) = &d.reservation {
            directive(format!("--reservation={}", single_line("reservation", r)?));
        }
        directive(format!("--chdir={}", job.sandbox.display()));
        directive(format!("--output={}", job.stdout.display()));
        directive(format!("--error={}", job.stderr.display()));
        for option in &d.scheduler_options {
            directive(single_line("scheduler_options", option)?.to_owned());
        }
        lines.push(String::new());
        lines.push(job.body.clone());
        Ok(vec![JobFile {
            name: "pilot.sbatch".into(),
            content: lines.join("\n"),
        }])
    }

    fn submit(&self, script: &Path) -> Command {
        Command::new(
            "sbatch",
            ["--parsable".to_owned(), script.display().to_string()],
        )
    }

    fn parse_submit(&self, out: &Output) -> Result<String, AdaptorError> {
        // `--parsable` prints `<id>` or `<id>;<cluster>`.
        out.stdout
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .and_then(|l| l.split(';').next())
            .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit() || c == '_'))
            .map(str::to_owned)
            .ok_or_else(|| {
                AdaptorError::Resource(format!("sbatch printed no job id: {}", out.stdout.trim()))
            })
    }

    fn status(&self, jobs: &[JobRef<'_>]) -> Vec<Command> {
        let ids: Vec<&str> = jobs.iter().map(|j| j.id).collect();
        // Queued, running and recently ended jobs (MinJobAge, 300 s by default); jobs it
        // does not know are left out (an error only when it knows none of one job asked).
        vec![Command::new(
            "squeue",
            [
                "--noheader".to_owned(),
                "--states=all".to_owned(),
                format!("--jobs={}", ids.join(",")),
                format!("--format={SQUEUE_FORMAT}"),
            ],
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
                let mut fields = line.trim().split('|');
                let id = fields.next()?;
                let job = jobs.iter().find(|j| j.id == id)?.id;
                let state = fields.next()?.split_whitespace().next()?;
                let reason = fields.next().filter(|r| !r.is_empty() && *r != "None");
                // An ended job's exit code is not in squeue's answer: `history` tells it.
                match map_state(job, state, reason, None) {
                    s @ (JobState::Queued | JobState::Running) => Some((job.to_owned(), s)),
                    JobState::Finished { .. } => None,
                }
            })
            .collect()
    }

    fn history(&self, job: JobRef<'_>) -> Vec<Command> {
        vec![
            // An ended job Slurm still remembers (MinJobAge), with its exit code.
            Command::new("scontrol", ["show", "job", "-o", job.id]),
            // Older ones, where accounting is on.
            Command::new(
                "sacct",
                [
                    "-X",
                    "-n",
                    "-P",
                    "-j",
                    job.id,
                    "-o",
                    "State,ExitCode,Reason",
                ],
            ),
        ]
    }

    fn parse_history(&self, index: usize, job: &str, out: &Output) -> Option<JobState> {
        if !out.success() {
            return None;
        }
        match index {
            0 => {
                let field = |name: &str| {
                    out.stdout.split_whitespace().find_map(|kv| {
                        kv.strip_prefix(name)
                            .and_then(|v| v.strip_prefix('='))
                            .map(str::to_owned)
                    })
                };
                let state = field("JobState")?;
                let reason = field("Reason").filter(|r| r != "None");
                let exit = field("ExitCode");
                Some(map_state(job, &state, reason.as_deref(), exit.as_deref()))
            }
            _ => {
                let line = out.stdout.lines().find(|l| !l.trim().is_empty())?;
                let mut parts = line.split('|');
                let state = parts.next()?.split_whitespace().next()?.to_owned();
                let exit = parts.next().map(str::to_owned);
                let reason = parts.next().filter(|r| !r.is_empty() && *r != "None");
                Some(map_state(job, &state, reason, exit.as_deref()))
            }
        }
    }

    fn cancel(&self, job: &str) -> Command {
        Command::new("scancel", [job])
    }
}

/// A Slurm job state (`JOB_STATE_CODES` in squeue(1)) as a pilot job state.
fn map_state(job: &str, state: &str, reason: Option<&str>, exit: Option<&str>) -> JobState {
    let why = || {
        let mut text = state.to_owned();
        if let Some(r) = reason {
            text.push_str(&format!(" ({r})"));
        }
        if let Some(e) = exit.filter(|e| *e != "0:0") {
            text.push_str(&format!(", exit code {e}"));
        }
        text
    };
    match state {
        "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED"
        | "RESV_DEL_HOLD" => JobState::Queued,
        "RUNNING" | "COMPLETING" | "SUSPENDED" | "STOPPED" | "SIGNALING" | "STAGE_OUT"
        | "RESIZING" => JobState::Running,
        "COMPLETED" if exit.is_none_or(|e| e == "0:0") => JobState::Finished {
            ok: true,
            detail: None,
        },
        _ => JobState::Finished {
            ok: false,
            detail: Some(format!("job {job} {}", why())),
        },
    }
}

#[cfg(test)]
mod tests;
