//! Transports: where an adaptor runs its commands and writes its files, this machine
//! ([`local`]) or a host over SSH ([`ssh`]). A transport knows nothing of batch systems:
//! the dialects (`crate::dialect`) build the commands, a transport runs them.
//!
//! Every command is an argument vector. Locally it is executed without a shell. Over SSH
//! the remote side always hands the command line to the user's shell, so every argument
//! is quoted for it (by `openssh`) and arrives as one word: nothing given to [`Transport::run`]
//! is ever interpreted by a shell. Where a shell feature is needed (a redirection, `&`),
//! the script is a constant and the values travel as its positional parameters (`"$1"`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub mod local;
pub mod ssh;

use crate::AdaptorError;
pub use ssh::{SSH_CONFIG_ENV, SshHost, SshHosts};

/// What a command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The exit status; `None` when it was killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// A one-line account of a failed command: its status and what it said.
    pub fn failure(&self) -> String {
        let said = [self.stderr.trim(), self.stdout.trim()]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or("no output");
        let said = said.lines().take(5).collect::<Vec<_>>().join(" | ");
        match self.code {
            Some(code) => format!("exit status {code}: {said}"),
            None => format!("killed by a signal: {said}"),
        }
    }
}

/// A command: program, arguments, and what to feed its standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub argv: Vec<String>,
    pub stdin: Option<String>,
}

impl Command {
    /// `program` with `args`, nothing on standard input.
    pub fn new<I, S>(program: &str, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            argv: std::iter::once(program.to_owned())
                .chain(args.into_iter().map(Into::into))
                .collect(),
            stdin: None,
        }
    }

    /// The same command, fed `input` on standard input.
    pub fn with_stdin(mut self, input: impl Into<String>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// `sh -c SCRIPT sh ARGS...`: a constant script whose values are its positional
    /// parameters.
    pub fn sh<I, S>(script: &str, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(
            "sh",
            ["-c".to_owned(), script.to_owned(), "sh".to_owned()]
                .into_iter()
                .chain(args.into_iter().map(Into::into)),
        )
    }
}

impl std::fmt::Display for Command {
    /// The command as a user would type it (for messages; never executed in this form).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let words: Vec<String> = self
            .argv
            .iter()
            .map(|a| shell_escape::unix::escape(a.into()).into_owned())
            .collect();
        f.write_str(&words.join(" "))
    }
}

/// This machine, or a host reached over SSH.
#[derive(Clone)]
pub enum Transport {
    Local,
    Ssh(Arc<SshHost>),
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Local => f.write_str("this host"),
            Transport::Ssh(h) => write!(f, "{}", h.destination()),
        }
    }
}

impl Transport {
    /// Runs `command`, giving up after `timeout`; a command that ran and failed is an
    /// `Ok` output with its status (the caller decides what a failure means).
    pub async fn run(&self, command: &Command, timeout: Duration) -> Result<Output, AdaptorError> {
        let run = async {
            match self {
                Transport::Local => local::run(command).await,
                Transport::Ssh(host) => host.run(command).await,
            }
        };
        tokio::time::timeout(timeout, run).await.map_err(|_| {
            AdaptorError::Resource(format!(
                "`{command}` on {self} did not finish within {}",
                humantime::format_duration(timeout)
            ))
        })?
    }

    /// Runs `command` and returns its standard output; a failure is an error naming the
    /// command and what it said.
    pub async fn check(
        &self,
        command: &Command,
        timeout: Duration,
    ) -> Result<String, AdaptorError> {
        let out = self.run(command, timeout).await?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(AdaptorError::Resource(format!(
                "`{command}` on {self} failed: {}",
                out.failure()
            )))
        }
    }

    /// Writes `content` to `path` with permissions `mode` (created so, never readable by
    /// others in between), making its directory if needed; the file appears whole.
    pub async fn write_file(
        &self,
        path: &Path,
        content: &[u8],
        mode: u32,
        timeout: Duration,
    ) -> Result<(), AdaptorError> {
        match self {
            Transport::Local => local::write_file(path, content, mode),
            Transport::Ssh(host) => {
                let write = host.write_file(path, content, mode);
                tokio::time::timeout(timeout, write).await.map_err(|_| {
                    AdaptorError::Resource(format!(
                        "writing {} on {self} did not finish within {}",
                        path.display(),
                        humantime::format_duration(timeout)
                    ))
                })?
            }
        }
    }

    /// The last `bytes` bytes of the text file at `path`, or `None` if it does not exist.
    pub async fn tail(&self, path: &Path, bytes: u64) -> Option<String> {
        let command = Command::new(
            "tail",
            [
                "-c".to_owned(),
                bytes.to_string(),
                path.display().to_string(),
            ],
        );
        let out = self.run(&command, Duration::from_secs(20)).await.ok()?;
        out.success().then_some(out.stdout)
    }
}
