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

/// The largest password file read (a password is one line).
const MAX_PASSWORD_FILE: u64 = 64 * 1024;

/// Reads a password file, refusing one that others can read, and anything but a small
/// regular file.
pub fn read_password_file(path: &Path) -> Result<String> {
    let refuse = |why: String| {
        CoordinationError::Credentials(format!("password file {}: {why}", path.display()))
    };
    let meta = std::fs::metadata(path).map_err(|e| refuse(e.to_string()))?;
    // A pipe would block the read forever, a device or a huge file never end it.
    if !meta.is_file() {
        return Err(refuse("not a regular file".into()));
    }
    if meta.len() > MAX_PASSWORD_FILE {
        return Err(refuse(format!(
            "{} bytes; a password file holds one line",
            meta.len()
        )));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn private(path: &Path) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn only_a_small_private_regular_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, "s3cret\nignored\n").unwrap();
        private(&good);
        assert_eq!(read_password_file(&good).unwrap(), "s3cret");

        // A pipe nobody writes to would block the read forever.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        private(&fifo);
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 100_000]).unwrap();
        private(&big);
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        private(&sub);
        for (path, why) in [
            (&fifo, "not a regular file"),
            (&big, "holds one line"),
            (&sub, "not a regular file"),
        ] {
            let err = read_password_file(path).unwrap_err().to_string();
            assert!(err.contains(why), "{}: {err}", path.display());
            // Nothing reached the store: it is not the store that refused.
            assert!(err.starts_with("cannot read the Redis password"), "{err}");
        }
    }
}
