//! `sge://` and `sge+ssh://`: (Son of) Grid Engine. See `docs.md` beside this file.

use std::collections::HashMap;
use std::path::Path;

use crate::dialect::{Dialect, JobRef, ScriptJob, single_line};
use crate::transport::{Command, Output};
use crate::{AdaptorError, JobFile, JobState};

/// The parallel environment used for pilots of more than one core unless the resource
/// URL names another (`sge://?pe=mpi`).
pub const DEFAULT_PE: &str = "smp";

#[doc = include_str!("docs.md")]
#[derive(Debug, Default, Clone, Copy)]
pub struct GridEngine;

impl Dialect for GridEngine {
    fn name(&self) -> &'static str {
        "Grid Engine"
    }

    fn render(&self, job: &ScriptJob<'_>) -> Result<Vec<JobFile>, AdaptorError> {
        let d = job.description;
        let mut lines = vec!["#!/bin/sh".to_owned()];
        let mut directive = |option: String| lines.push(format!("#$ {option}"));
        directive(format!("-N {}", job.name));
        directive("-S /bin/sh".into());
        directive(format!("-wd {}", job.sandbox.display()));
        directive(format!("-o {}", job.stdout.display()));
        directive(format!("-e {}", job.stderr.display()));
        if d.cores > 1 || d.node_count() > 1 {
            let pe = job.options.get("pe").map_or(DEFAULT_PE, String::as_str);
            directive(format!("-pe {} {}", single_line("pe", pe)?, d.cores));
        }
        directive(format!("-l h_rt={}", job.walltime_hms()));
        if d.gpus > 0 {
            directive(format!("-l gpu={}", d.gpus));
        }
        if let Some(q) = &d.queue {
            directive(format!("-q {}", single_line("queue", q)?));
        }
        if let Some(p) = &d.project {
            directive(format!("-P {}", single_line("project", p)?));
        }
        if let Some(r) = &d.reservation {
            directive(format!("-ar {}", single_line("reservation", r)?));
        }
        for option in &d.scheduler_options {
            directive(single_line("scheduler_options", option)?.to_owned());
        }
        lines.push(String::new());
        lines.push(job.body.clone());
        Ok(vec![JobFile {
            name: "pilot.sge".into(),
            content: lines.join("\n"),
        }])
    }

    fn submit(&self, script: &Path) -> Command {
        Command::new("qsub", ["-terse".to_owned(), script.display().to_string()])
    }

    fn parse_submit(&self, out: &Output) -> Result<String, AdaptorError> {
        // `-terse` prints the job id alone (`42`, or `42.1-10:1` for an array).
        out.stdout
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .and_then(|l| l.split('.').next())
            .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()))
            .map(str::to_owned)
            .ok_or_else(|| {
                AdaptorError::Resource(format!("qsub printed no job id: {}", out.stdout.trim()))
            })
    }

    fn multi_node(&self) -> bool {
        true
    }

    fn status(&self, _jobs: &[JobRef<'_>]) -> Vec<Command> {
        // Every queued and running job of this user: one call for all of them.
        vec![Command::new("qstat", [] as [&str; 0])]
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
                let mut fields = line.split_whitespace();
                let id = fields.next()?;
                let job = jobs.iter().find(|j| j.id == id)?.id;
                let state = fields.nth(3)?;
                Some((job.to_owned(), map_state(job, state)))
            })
            .collect()
    }

    fn history(&self, job: JobRef<'_>) -> Vec<Command> {
        // An ended job, once its accounting record is written.
        vec![Command::new("qacct", ["-j", job.id])]
    }

    fn parse_history(&self, _index: usize, job: &str, out: &Output) -> Option<JobState> {
        if !out.success() {
            return None;
        }
        let field = |name: &str| {
            out.stdout.lines().find_map(|l| {
                let (k, v) = l.split_once(char::is_whitespace)?;
                (k == name).then(|| v.trim().to_owned())
            })
        };
        let failed = field("failed")?;
        // qacct pads columns: `137                  (Killed)`.
        let exit = field("exit_status")
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let ok = failed.split_whitespace().next() == Some("0") && exit == "0";
        let failed = failed.split_whitespace().collect::<Vec<_>>().join(" ");
        Some(JobState::Finished {
            ok,
            detail: (!ok).then(|| format!("job {job} failed `{failed}`, exit status {exit}")),
        })
    }

    fn cancel(&self, job: &str) -> Command {
        Command::new("qdel", [job])
    }
}

/// A `qstat` state column as a pilot job state.
fn map_state(job: &str, state: &str) -> JobState {
    if state.contains('E') {
        JobState::Finished {
            ok: false,
            detail: Some(format!(
                "job {job} is in error state `{state}` (see `qstat -j {job}`)"
            )),
        }
    } else if state.contains('q') {
        // qw, hqw, hRwq, dqw: still waiting (a pending delete included).
        JobState::Queued
    } else {
        // r, t, Rr, dr, s, S, T...: holding its slots.
        JobState::Running
    }
}

#[cfg(test)]
mod tests;
