//! An sshd of one's own: `scripts/testbed/sshd-up.sh` in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{free_port, run_script};

/// An OpenSSH server on 127.0.0.1 (a free port) that lets in `root` with one key only:
/// [`client_key`](Self::client_key). Public keys only, `sftp` (internal-sftp), up to 100
/// sessions per connection and 100 connections being set up at once.
///
/// [`config_file`](Self::config_file) is an ssh client configuration (`ssh -F`) with that
/// key, a known-hosts file that already holds this server's host key, `BatchMode yes` and
/// `IdentitiesOnly yes`, so `ssh -F CONFIG -p PORT root@127.0.0.1 CMD` needs nothing else
/// ([`ssh`](Self::ssh) builds it). Each fresh `ssh` costs ~0.3 s (key exchange).
///
/// Dropping it stops the server, its connections and every process started through it, as
/// if the host went away (`scripts/testbed/sshd-down.sh`: such processes carry
/// `PSTAR_TESTBED_SSHD=DIR` in their environment), then removes the directory.
pub struct SshServer {
    dir: tempfile::TempDir,
    port: u16,
    destination: String,
}

impl SshServer {
    /// Makes the keys and starts the server; returns once it listens (~0.1 s). Panics if it
    /// does not come up, or if `sshd` is missing (run `bash scripts/test.sh`, which installs
    /// openssh-server).
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pstar-sshd.")
            .tempdir()
            .expect("temporary directory for sshd");
        let mut server = Self {
            dir,
            port: 0,
            destination: "root@127.0.0.1".to_string(),
        };
        // A port found free may be taken by someone else before sshd binds it: try again
        // with another one.
        let mut error = String::new();
        for _ in 0..3 {
            server.port = free_port();
            match run_script(
                "sshd-up.sh",
                &[&server.dir.path(), &server.port.to_string()],
            ) {
                Ok(()) => return server,
                Err(e) => {
                    error = e;
                    server.stop();
                }
            }
        }
        panic!("sshd did not start:\n{error}");
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The private key that may log in as root (ed25519, no passphrase).
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// An ssh client configuration for `ssh -F`: a `Host *` block with `IdentityFile`
    /// [`client_key`](Self::client_key), `UserKnownHostsFile` [`known_hosts`](Self::known_hosts),
    /// `StrictHostKeyChecking accept-new`, `BatchMode yes`, `IdentitiesOnly yes`. It names
    /// no port: give `-p PORT`.
    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    /// A known-hosts file holding this server's host key (for `[127.0.0.1]:PORT`).
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// Where the server keeps its keys, configuration, `sshd.log` and PID file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whom to log in as, and where: `root@127.0.0.1`.
    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// `ssh -F CONFIG -p PORT root@127.0.0.1`: add the remote command as arguments.
    pub fn ssh(&self) -> Command {
        let mut command = Command::new("ssh");
        command
            .arg("-F")
            .arg(self.config_file())
            .arg("-p")
            .arg(self.port.to_string())
            .arg(&self.destination);
        command
    }

    fn stop(&self) {
        if let Err(e) = run_script("sshd-down.sh", &[&self.dir.path()]) {
            eprintln!("pstar-testbed: stopping sshd: {e}");
        }
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        self.stop();
    }
}
