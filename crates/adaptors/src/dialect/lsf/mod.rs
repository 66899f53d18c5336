//! `lsf://`: IBM Spectrum LSF. See `docs.md` beside this file.

use std::collections::HashMap;
use std::path::Path;

use crate::dialect::pbs::gpus_per_node;
use crate::dialect::{Dialect, JobRef, ScriptJob, path_line, single_line};
use crate::transport::{Command, Output};
use crate::{AdaptorError, JobFile, JobState};

/// The fields asked of `bjobs -o`, `|`-separated (an empty field prints as `-`).
pub const BJOBS_FORMAT: &str = "jobid stat exit_reason exit_code delimiter='|'";

#[doc = include_str!("docs.md")]
#[derive(Debug, Default, Clone, Copy)]
pub struct Lsf;

impl Dialect for Lsf {
    fn name(&self) -> &'static str {
        "LSF"
    }

    fn render(&self, job: &ScriptJob<'_>) -> Result<Vec<JobFile>, AdaptorError> {
        let d = job.description;
        let nodes = d.node_count();
        let gpus_per_node = gpus_per_node(d.gpus, nodes)?;
        let mut lines = vec!["#!/bin/sh".to_owned()];
        let mut directive = |option: String| lines.push(format!("#BSUB {option}"));
        directive(format!("-J {}", job.name));
        directive(format!("-n {}", d.cores));
        if nodes > 1 {
            directive(format!("-R \"span[ptile={}]\"", d.cores_per_node()));
        } else {
            directive("-R \"span[hosts=1]\"".into());
        }
        if gpus_per_node > 0 {
            // LSF counts GPUs per host.
            directive(format!("-gpu \"num={gpus_per_node}\""));
        }
        let minutes = job.walltime_minutes();
        directive(format!("-W {}:{:02}", minutes / 60, minutes % 60));
        if let Some(q) = &d.queue {
            directive(format!("-q {}", single_line("queue", q)?));
        }
        if let Some(p) = &d.project {
            directive(format!("-P {}", single_line("project", p)?));
        }
        if let Some(r) = &d.reservation {
            directive(format!("-U {}", single_line("reservation", r)?));
        }
        directive(format!("-cwd {}", path_line(job.sandbox)?));
        directive(format!("-o {}", path_line(&job.stdout)?));
        directive(format!("-e {}", path_line(&job.stderr)?));
        for option in &d.scheduler_options {
            directive(single_line("scheduler_options", option)?.to_owned());
        }
        lines.push(String::new());
        lines.push(job.body.clone());
        Ok(vec![JobFile {
            name: "pilot.lsf".into(),
            content: lines.join("\n"),
        }])
    }

    fn submit(&self, script: &Path) -> Command {
        // `bsub` reads `#BSUB` lines from a script given on its standard input (by default not
        // from one named as an argument).
        Command::sh(r#"exec bsub < "$1""#, [script.display().to_string()])
    }

    fn parse_submit(&self, out: &Output) -> Result<String, AdaptorError> {
        // `Job <123> is submitted to queue <normal>.` (or `to default queue <normal>.`)
        out.stdout
            .lines()
            .find_map(|line| {
                let rest = line.trim().strip_prefix("Job <")?;
                let (id, rest) = rest.split_once('>')?;
                (rest.trim_start().starts_with("is submitted")
                    && !id.is_empty()
                    && id.chars().all(|c| c.is_ascii_digit()))
                .then(|| id.to_owned())
            })
            .ok_or_else(|| {
                AdaptorError::Resource(format!("bsub printed no job id: {}", out.stdout.trim()))
            })
    }

    fn multi_node(&self) -> bool {
        true
    }

    fn status(&self, jobs: &[JobRef<'_>]) -> Vec<Command> {
        let ids = jobs.iter().map(|j| j.id.to_owned());
        let args = |first: &[&str]| -> Vec<String> {
            first
                .iter()
                .map(|a| a.to_string())
                .chain(ids.clone())
                .collect()
        };
        vec![
            // LSF 9.1 and later: state, and why and how an ended job ended.
            Command::new("bjobs", args(&["-a", "-noheader", "-o", BJOBS_FORMAT])),
            // Any LSF: the classic table (state only).
            Command::new("bjobs", args(&["-a", "-w"])),
        ]
    }

    fn parse_status(
        &self,
        index: usize,
        jobs: &[JobRef<'_>],
        out: &Output,
    ) -> HashMap<String, JobState> {
        // An unknown id gets its own line (`Job <123> is not found`), the others theirs.
        let known = |id: &str| jobs.iter().find(|j| j.id == id).map(|j| j.id);
        out.stdout
            .lines()
            .filter_map(|line| match index {
                0 => {
                    let mut fields = line.trim().split('|').map(str::trim);
                    let job = known(fields.next()?)?;
                    let stat = fields.next().filter(|s| !s.is_empty())?;
                    let reason = fields.next().filter(|r| !r.is_empty() && *r != "-");
                    let code = fields.next().filter(|c| c.parse::<i64>().is_ok());
                    Some((job.to_owned(), map_state(job, stat, reason, code)))
                }
                _ => {
                    // JOBID USER STAT QUEUE FROM_HOST EXEC_HOST JOB_NAME SUBMIT_TIME
                    let mut fields = line.split_whitespace();
                    let job = known(fields.next()?)?;
                    let stat = fields.nth(1)?;
                    Some((job.to_owned(), map_state(job, stat, None, None)))
                }
            })
            .collect()
    }

    fn cancel(&self, job: &str) -> Command {
        Command::new("bkill", [job])
    }
}

/// An LSF job state (bjobs(1), "Job states") as a pilot job state.
fn map_state(job: &str, stat: &str, reason: Option<&str>, code: Option<&str>) -> JobState {
    let failed = |what: String| JobState::Finished {
        ok: false,
        detail: Some(format!("job {job} {what}")),
    };
    match stat {
        // Pending, suspended while pending, chunk member waiting, being provisioned.
        "PEND" | "PSUSP" | "WAIT" | "PROV" => JobState::Queued,
        // Running, suspended by its owner or by LSF while running.
        "RUN" | "USUSP" | "SSUSP" => JobState::Running,
        "DONE" | "POST_DONE" => JobState::Finished {
            ok: true,
            detail: None,
        },
        "EXIT" | "POST_ERR" => {
            let mut what = format!("ended {stat}");
            if let Some(c) = code {
                what.push_str(&format!(" with exit code {c}"));
            }
            if let Some(r) = reason {
                what.push_str(&format!(" ({r})"));
            }
            failed(what)
        }
        "UNKWN" => failed("is UNKWN: LSF lost contact with the host running it".into()),
        "ZOMBI" => failed("is ZOMBI: killed, and its host unreachable".into()),
        other => failed(format!("is in a state pstar does not know: `{other}`")),
    }
}

#[cfg(test)]
mod tests;
