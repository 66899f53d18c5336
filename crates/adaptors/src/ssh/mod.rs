//! `ssh://user@host[:port]`: a host over SSH, no batch system. See `docs.md` beside this
//! file. Also the SSH connections every `+ssh` scheme goes through.

mod connection;

use std::path::Path;

pub use connection::{SSH_CONFIG_ENV, SshHost, SshHosts};

use crate::batch::{BatchSystem, ScriptJob};
use crate::host::{Command, Output};
use crate::{AdaptorError, JobFile, JobState};

/// Starts the pilot script as a process of its own session on the host (`setsid`), with
/// its output in the sandbox; the job id is its process id.
#[doc = include_str!("docs.md")]
#[derive(Debug, Default, Clone, Copy)]
pub struct Fork;

impl BatchSystem for Fork {
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

    fn queries(&self, job: &str, sandbox: &Path) -> Vec<Command> {
        vec![Command::sh(
            r#"if kill -0 "$1" 2>/dev/null; then echo running; elif test -f "$2"; then echo "exit $(cat "$2")"; else echo gone; fi"#,
            [
                job.to_owned(),
                sandbox.join("pilot.exit").display().to_string(),
            ],
        )]
    }

    fn parse_query(&self, _index: usize, job: &str, out: &Output) -> Option<JobState> {
        let answer = out.stdout.trim();
        if !out.success() {
            return None;
        }
        Some(match answer {
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
        })
    }

    fn cancel(&self, job: &str) -> Command {
        // The pilot script leads its own process group; the agent in it returns its units.
        Command::sh(
            r#"kill -TERM -- "-$1" 2>/dev/null || kill -TERM "$1""#,
            [job],
        )
    }
}
