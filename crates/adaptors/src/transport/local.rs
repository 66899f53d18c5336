//! The local transport: commands run as child processes of this one, without a shell.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::AdaptorError;
use crate::transport::{Command, Output};

/// Runs `command` here (no timeout: the caller's [`Transport::run`](super::Transport::run)
/// bounds it).
pub(crate) async fn run(command: &Command) -> Result<Output, AdaptorError> {
    let Some((program, args)) = command.argv.split_first() else {
        return Err(AdaptorError::Resource("empty command".into()));
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        // A batch system hands the submitter's environment to the job: not the password.
        .env_remove(pstar_coordination::redis::PASSWORD_ENV)
        .stdin(if command.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| AdaptorError::Resource(format!("cannot run `{program}`: {e}")))?;
    if let (Some(input), Some(mut stdin)) = (&command.stdin, child.stdin.take()) {
        stdin
            .write_all(input.as_bytes())
            .await
            .map_err(|e| AdaptorError::Resource(format!("cannot feed `{program}`: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| AdaptorError::Resource(format!("cannot wait for `{program}`: {e}")))?;
    Ok(Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Writes `content` to `path` here with permissions `mode`; see
/// [`Transport::write_file`](super::Transport::write_file).
pub(crate) fn write_file(path: &Path, content: &[u8], mode: u32) -> Result<(), AdaptorError> {
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| AdaptorError::Resource(format!("cannot write {}: {e}", path.display())))
}
