//! The fork dialect: no batch system, the pilot script started as a process of its own on
//! the host. With the SSH transport, `ssh://user@host[:port]`. See `docs.md` beside this
//! file.

use std::collections::HashMap;
use std::path::Path;

use crate::dialect::{Dialect, JobRef, ScriptJob};
use crate::transport::{Command, Output};
use crate::{AdaptorError, JobFile, JobState};

/// Starts the pilot script as a process of its own session on the host (`setsid`), with
/// its output in the sandbox; the job id is its process id.
#[doc = include_str!("docs.md")]
#[derive(Debug, Default, Clone, Copy)]
pub struct Fork;

impl Dialect for Fork {
    fn name(&self) -> &'static str {
        "ssh"
    }

    fn render(&self, job: &ScriptJob<'_>) -> Result<Vec<JobFile>, AdaptorError> {
        let d = job.description;
        if d.node_count() > 1 {
            return Err(AdaptorError::Unsupported(format!(
                "`{}` is one host: `nodes` must be 1 (use a batch system for more)",
                d.resource
            )));
        }
        Ok(vec![JobFile {
            name: "pilot.sh".into(),
            content: format!("#!/bin/sh\n\n{}", job.body),
        }])
    }

    fn submit(&self, script: &Path) -> Command {
        let dir = script.parent().unwrap_or(Path::new("."));
        Command::sh(
            r#"cd "$2" && setsid sh "$1" > pilot.out 2> pilot.err < /dev/null & echo "$!""#,
            [script.display().to_string(), dir.display().to_string()],
        )
    }

    fn parse_submit(&self, out: &Output) -> Result<String, AdaptorError> {
        out.stdout
            .trim()
            .parse::<u32>()
            .map(|pid| pid.to_string())
            .map_err(|_| {
                AdaptorError::Resource(format!(
                    "the pilot process did not start: {}",
                    out.failure()
                ))
            })
    }

    fn multi_node(&self) -> bool {
        false
    }

    fn is_batch(&self) -> bool {
        false
    }

    fn status(&self, jobs: &[JobRef<'_>]) -> Vec<Command> {
        // One shell for every process: `PID answer` per pair of (PID, exit file).
        vec![Command::sh(
            r#"while [ "$#" -ge 2 ]; do if kill -0 "$1" 2>/dev/null; then echo "$1 running"; elif test -f "$2"; then echo "$1 exit $(cat "$2")"; else echo "$1 gone"; fi; shift 2; done"#,
            jobs.iter().flat_map(|j| {
                [
                    j.id.to_owned(),
                    j.sandbox.join("pilot.exit").display().to_string(),
                ]
            }),
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
                let (pid, answer) = line.trim().split_once(' ')?;
                let job = jobs.iter().find(|j| j.id == pid)?.id;
                Some((job.to_owned(), state_of(job, answer.trim())))
            })
            .collect()
    }

    fn cancel(&self, job: &str) -> Command {
        // The pilot script leads its own process group; the agent in it returns its units.
        Command::sh(
            r#"kill -TERM -- "-$1" 2>/dev/null || kill -TERM "$1""#,
            [job],
        )
    }
}

/// A process's state from the status script's answer about it.
fn state_of(job: &str, answer: &str) -> JobState {
    match answer {
        "running" => JobState::Running,
        "exit 0" => JobState::Finished {
            ok: true,
            detail: None,
        },
        "gone" => JobState::Finished {
            ok: false,
            detail: Some(format!(
                "process {job} is gone without an exit status (killed?)"
            )),
        },
        other => JobState::Finished {
            ok: false,
            detail: Some(format!(
                "process {job} exited with status {}",
                other.trim_start_matches("exit ")
            )),
        },
    }
}

#[cfg(test)]
mod tests;
