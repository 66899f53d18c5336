//! The lines of a pilot job that start its agent, and the files they need.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pstar_coordination::Coordination;
use pstar_coordination::redis::{CA_FILE_ENV, PASSWORD_ENV, PASSWORD_FILE_ENV};
use pstar_model::PilotId;

use crate::AdaptorError;

/// Quotes `value` as one word for `/bin/sh`.
pub(crate) fn quote(value: &str) -> String {
    shell_escape::unix::escape(value.into()).into_owned()
}

/// The credentials an agent needs, as files in its sandbox (mode 0600).
pub struct Secrets {
    /// Path of the password file and the password.
    password: Option<(PathBuf, String)>,
    /// Path of the copied CA certificate and its content.
    ca: Option<(PathBuf, Vec<u8>)>,
}

impl Secrets {
    /// What `coordination` hands its agents, as files under `sandbox`.
    pub(crate) fn of(coordination: &Arc<dyn Coordination>, sandbox: &Path) -> Self {
        let mut secrets = Self {
            password: None,
            ca: None,
        };
        for (name, value) in coordination.agent_environment() {
            if name == PASSWORD_ENV {
                secrets.password = Some((sandbox.join("coordination.secret"), value));
            } else if name == CA_FILE_ENV
                && let Ok(content) = std::fs::read(&value)
            {
                secrets.ca = Some((sandbox.join("coordination-ca.pem"), content));
            }
        }
        secrets
    }

    /// For showing a script without submitting it: the password file is named, not made.
    pub(crate) fn describe(sandbox: &Path, _url: &str) -> Self {
        let password = std::env::var_os(PASSWORD_ENV)
            .or_else(|| std::env::var_os(PASSWORD_FILE_ENV))
            .map(|_| (sandbox.join("coordination.secret"), String::new()));
        Self { password, ca: None }
    }

    /// The files to write: path and content.
    pub(crate) fn files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        if let Some((path, password)) = &self.password {
            files.push((path.clone(), password.as_bytes().to_vec()));
        }
        if let Some((path, content)) = &self.ca {
            files.push((path.clone(), content.clone()));
        }
        files
    }
}

/// The shell lines that start a pilot's agent inside its job.
pub struct Bootstrap<'a> {
    pub agent: &'a Path,
    pub url: &'a str,
    pub session: &'a str,
    pub pilot: PilotId,
    pub sandbox: &'a Path,
    pub secrets: &'a Secrets,
    /// How long the agent keeps trying to reach the store before it gives up.
    pub first_contact: Duration,
}

impl Bootstrap<'_> {
    /// The script body: every value quoted as one shell word.
    pub fn body(&self) -> String {
        let q = |p: &Path| quote(&p.display().to_string());
        let mut lines = vec![
            format!(
                "# pstar pilot {} of session {}: starts its agent.",
                self.pilot, self.session
            ),
            format!("cd {} || exit 1", q(self.sandbox)),
        ];
        if let Some((path, _)) = &self.secrets.password {
            lines.push(format!("export {PASSWORD_FILE_ENV}={}", q(path)));
        }
        if let Some((path, _)) = &self.secrets.ca {
            lines.push(format!("export {CA_FILE_ENV}={}", q(path)));
        }
        lines.push(format!(
            "export PSTAR_REDIS_RETRY={}",
            quote(&humantime::format_duration(self.first_contact).to_string())
        ));
        lines.push(r#"echo "pstar: agent starting on $(hostname) at $(date -u +%FT%TZ)""#.into());
        // Only where the store is and which pilot to run: the agent's settings are in its
        // pilot's record there.
        let command: [String; 8] = [
            q(self.agent),
            "agent".into(),
            "--coordination".into(),
            quote(self.url),
            "--session".into(),
            quote(self.session),
            "--pilot".into(),
            quote(&self.pilot.to_string()),
        ];
        lines.push(command.join(" "));
        lines.push("status=$?".into());
        lines.push(format!(
            "echo \"$status\" > {}",
            q(&self.sandbox.join("pilot.exit"))
        ));
        lines.push(r#"exit "$status""#.into());
        lines.join("\n") + "\n"
    }
}

/// `pstar-<version>-<hash>`: the name a copy of the binary at `path` gets on a remote host,
/// so that a host holding the same build is never sent it again.
pub fn agent_binary_name(path: &Path) -> Result<String, AdaptorError> {
    static NAME: OnceLock<(PathBuf, String)> = OnceLock::new();
    if let Some((p, name)) = NAME.get()
        && p == path
    {
        return Ok(name.clone());
    }
    let bytes = std::fs::read(path)
        .map_err(|e| AdaptorError::Resource(format!("cannot read {}: {e}", path.display())))?;
    // FNV-1a: a content fingerprint, not a security measure.
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let name = format!("pstar-{}-{hash:016x}", env!("CARGO_PKG_VERSION"));
    let _ = NAME.set((path.to_owned(), name.clone()));
    Ok(name)
}
