//! One SSH connection per host, shared by every pilot placed through it.
//!
//! pstar uses the OpenSSH client of the machine (through the `openssh` crate): one master
//! connection per `user@host:port`, multiplexed, so each command costs a round trip rather
//! than a handshake, and the user's `~/.ssh/config`, keys and agent work as they do for
//! `ssh` itself. `PSTAR_SSH_CONFIG` names another client configuration file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openssh::{ForwardType, KnownHosts, Session, SessionBuilder, Socket, Stdio};
use tokio::io::AsyncWriteExt;

use pstar_model::ResourceUrl;

use crate::AdaptorError;
use crate::transport::{Command, Output};

/// Names an SSH client configuration file to use instead of `~/.ssh/config`.
pub const SSH_CONFIG_ENV: &str = "PSTAR_SSH_CONFIG";

/// A connected host.
pub struct SshHost {
    destination: String,
    session: Session,
    /// Remote forwards opened for agents' store connections: store address → port on the
    /// host's loopback.
    tunnels: tokio::sync::Mutex<HashMap<(String, u16), u16>>,
}

impl SshHost {
    /// `user@host:port`, as in messages.
    pub fn destination(&self) -> &str {
        &self.destination
    }

    pub(crate) async fn run(&self, command: &Command) -> Result<Output, AdaptorError> {
        let Some((program, args)) = command.argv.split_first() else {
            return Err(AdaptorError::Resource("empty command".into()));
        };
        let mut remote = self.session.command(program.as_str());
        remote
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if command.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = remote.spawn().await.map_err(|e| self.error(program, e))?;
        if let (Some(input), Some(mut stdin)) = (&command.stdin, child.stdin().take()) {
            stdin
                .write_all(input.as_bytes())
                .await
                .map_err(|e| AdaptorError::Resource(format!("cannot feed `{program}`: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| self.error(program, e))?;
        Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Writes a file through `cat`, created with `mode` and renamed into place when whole.
    pub(crate) async fn write_file(
        &self,
        path: &Path,
        content: &[u8],
        mode: u32,
    ) -> Result<(), AdaptorError> {
        // The path is a positional parameter of a constant script.
        const SCRIPT: &str = r#"umask 077 && mkdir -p "$(dirname "$1")" && cat > "$1.part" && chmod "$2" "$1.part" && mv -f "$1.part" "$1""#;
        let mut remote = self.session.command("sh");
        remote
            .args(["-c", SCRIPT, "sh"])
            .arg(path.display().to_string())
            .arg(format!("{mode:o}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = remote.spawn().await.map_err(|e| self.error("sh", e))?;
        if let Some(mut stdin) = child.stdin().take() {
            stdin.write_all(content).await.map_err(|e| {
                AdaptorError::Resource(format!(
                    "cannot send {} to {}: {e}",
                    path.display(),
                    self.destination
                ))
            })?;
            stdin.shutdown().await.ok();
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| self.error("sh", e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(AdaptorError::Resource(format!(
                "cannot write {} on {}: {}",
                path.display(),
                self.destination,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// A port on the host's loopback that leads to `store_host:store_port` as this
    /// machine reaches it (a remote forward over this connection), opened once per store.
    pub(crate) async fn tunnel(
        &self,
        store_host: &str,
        store_port: u16,
    ) -> Result<u16, AdaptorError> {
        let mut tunnels = self.tunnels.lock().await;
        let key = (store_host.to_owned(), store_port);
        if let Some(port) = tunnels.get(&key) {
            return Ok(*port);
        }
        // The remote side cannot be asked for a free port through the multiplexer: try a
        // few random ones in the dynamic range.
        let mut last = None;
        for attempt in 0..8u32 {
            let port = 49152 + (nanos().wrapping_add(attempt * 7919) % 16000) as u16;
            match self
                .session
                .request_port_forward(
                    ForwardType::Remote,
                    Socket::new("127.0.0.1", port),
                    Socket::new(store_host, store_port),
                )
                .await
            {
                Ok(()) => {
                    tunnels.insert(key, port);
                    return Ok(port);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(AdaptorError::Resource(format!(
            "cannot open a tunnel from {} to the store at {store_host}:{store_port}: {}",
            self.destination,
            last.map(|e| e.to_string()).unwrap_or_default()
        )))
    }

    fn error(&self, program: &str, e: openssh::Error) -> AdaptorError {
        AdaptorError::Resource(format!("`{program}` on {}: {e}", self.destination))
    }
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0)
}

/// The connections of this process, one per destination.
#[derive(Default)]
pub struct SshHosts {
    hosts: tokio::sync::Mutex<HashMap<String, Arc<SshHost>>>,
}

impl SshHosts {
    /// The connection to the host `url` names, opened (within `timeout`) if there is
    /// none yet or the old one broke.
    pub async fn connect(
        &self,
        url: &ResourceUrl,
        timeout: Duration,
    ) -> Result<Arc<SshHost>, AdaptorError> {
        let host = url.host().ok_or_else(|| {
            AdaptorError::Unsupported(format!(
                "`{url}` names no host (expected e.g. `{}://user@host`)",
                url.scheme()
            ))
        })?;
        let destination = match (url.user(), url.port()) {
            (Some(u), Some(p)) => format!("{u}@{host}:{p}"),
            (Some(u), None) => format!("{u}@{host}"),
            (None, Some(p)) => format!("{host}:{p}"),
            (None, None) => host.to_owned(),
        };
        let mut hosts = self.hosts.lock().await;
        if let Some(existing) = hosts.get(&destination) {
            if existing.session.check().await.is_ok() {
                return Ok(existing.clone());
            }
            tracing::warn!(%destination, "SSH connection broke; reconnecting");
            hosts.remove(&destination);
        }
        let mut builder = SessionBuilder::default();
        builder
            .known_hosts_check(KnownHosts::Add)
            .connect_timeout(timeout)
            .server_alive_interval(Duration::from_secs(15))
            .control_directory(std::env::temp_dir());
        if let Some(user) = url.user() {
            builder.user(user.to_owned());
        }
        if let Some(port) = url.port() {
            builder.port(port);
        }
        if let Some(config) = std::env::var_os(SSH_CONFIG_ENV) {
            builder.config_file(PathBuf::from(config));
        }
        let connect = builder.connect(host);
        let session = tokio::time::timeout(timeout + Duration::from_secs(5), connect)
            .await
            .map_err(|_| {
                AdaptorError::Resource(format!(
                    "no SSH connection to {destination} within {}",
                    humantime::format_duration(timeout)
                ))
            })?
            .map_err(|e| {
                AdaptorError::Resource(format!(
                    "cannot connect to {destination}: {}",
                    ssh_reason(&e)
                ))
            })?;
        let connected = Arc::new(SshHost {
            destination: destination.clone(),
            session,
            tunnels: Default::default(),
        });
        hosts.insert(destination, connected.clone());
        Ok(connected)
    }
}

/// The most telling part of an `openssh` error (ssh's own message when there is one).
fn ssh_reason(e: &openssh::Error) -> String {
    use std::error::Error;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}
