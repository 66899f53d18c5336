//! The Redis password: from the environment or a private file, never a command line.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::{CoordinationError, Result};

/// Holds the password itself.
pub const PASSWORD_ENV: &str = "PSTAR_REDIS_PASSWORD";
/// Names a file whose first line is the password; the file must be readable by its owner
/// only (mode 0600 or stricter), as with ssh keys.
pub const PASSWORD_FILE_ENV: &str = "PSTAR_REDIS_PASSWORD_FILE";

/// For `rediss://`: names a PEM file of the certificate authority that signed the Redis
/// server's certificate, when it is not among the system's trusted roots.
pub const CA_FILE_ENV: &str = "PSTAR_REDIS_CA";

/// The password from `PSTAR_REDIS_PASSWORD`, else from the file `PSTAR_REDIS_PASSWORD_FILE`
/// names; `None` if neither is set.
pub fn password_from_environment() -> Result<Option<String>> {
    if let Ok(password) = std::env::var(PASSWORD_ENV) {
        return Ok(Some(password));
    }
    match std::env::var_os(PASSWORD_FILE_ENV) {
        Some(path) => read_password_file(Path::new(&path)).map(Some),
        None => Ok(None),
    }
}

/// Reads a password file, refusing one that others can read.
pub fn read_password_file(path: &Path) -> Result<String> {
    let refuse = |why: String| {
        CoordinationError::Unauthorized(format!("password file {}: {why}", path.display()))
    };
    let meta = std::fs::metadata(path).map_err(|e| refuse(e.to_string()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(refuse(format!(
            "readable by others (mode {:o}); run `chmod 600 {}`",
            mode & 0o777,
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| refuse(e.to_string()))?;
    let password = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_owned();
    if password.is_empty() {
        return Err(refuse("empty".into()));
    }
    Ok(password)
}

/// Where commands look for the store's URL when `--coordination` is not given.
pub const COORDINATION_ENV: &str = "PSTAR_COORDINATION";

/// The variables of this process's environment that carry a Redis secret, for an agent to
/// withhold from the units it starts: the password, the file that holds it, and a store
/// URL with a password in it.
pub fn secret_variables() -> Vec<&'static str> {
    let mut names = vec![PASSWORD_ENV, PASSWORD_FILE_ENV];
    if std::env::var(COORDINATION_ENV).is_ok_and(|url| super::redact_url(&url) != url) {
        names.push(COORDINATION_ENV);
    }
    names
}
