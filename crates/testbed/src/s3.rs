//! An S3-compatible server of one's own: `s3s-fs` (crates.io) on loopback.

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, nanos};

/// The version of `s3s-fs` that `scripts/test.sh` installs (`cargo install s3s-fs
/// --version 0.14.1 --features binary --locked`; later ones need a newer rustc).
pub const S3S_FS_VERSION: &str = "0.14.1";

/// An `s3s-fs` server on a free port of 127.0.0.1, with an access key and secret of its
/// own, keeping its objects as plain files under [`data_dir`](Self::data_dir)
/// (`DATA/<bucket>/<key>`), so a test can look at them or change them behind the
/// client's back. It checks request signatures: a wrong secret is refused.
///
/// Stopped (SIGKILL) when dropped, and its directory removed.
pub struct S3Server {
    dir: tempfile::TempDir,
    port: u16,
    access_key: String,
    secret_key: String,
    child: Option<Child>,
}

impl S3Server {
    /// Starts the server; returns once it listens. Panics if `s3s-fs` is missing (run
    /// `bash scripts/test.sh`, which installs it) or does not come up.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pstar-s3.")
            .tempdir()
            .expect("temporary directory for s3s-fs");
        std::fs::create_dir_all(dir.path().join("data")).expect("s3s-fs data directory");
        let mut server = Self {
            dir,
            port: 0,
            access_key: format!("AKPSTAR{:x}", std::process::id()),
            secret_key: format!("sk-{:x}-{}", std::process::id(), nanos()),
            child: None,
        };
        let mut error = String::new();
        // A port found free may be taken before the server binds it: try another.
        for _ in 0..3 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => error = e,
            }
        }
        panic!("s3s-fs did not start: {error}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log_path = self.dir.path().join("s3s-fs.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut child = Command::new(s3s_fs())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", &self.access_key])
            .args(["--secret-key", &self.secret_key])
            .arg(self.data_dir())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start s3s-fs (run bash scripts/test.sh, which installs it with \
                     cargo install s3s-fs --version {S3S_FS_VERSION} --features binary --locked): {e}"
                )
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port);
        loop {
            if TcpStream::connect(addr).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("exited ({status}):\n{text}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "did not listen on {addr} within 10 s; see {}",
                    log_path.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `http://127.0.0.1:PORT`: the endpoint (`PSTAR_S3_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `s3://BUCKET/PREFIX` for a bucket made with [`create_bucket`](Self::create_bucket).
    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        format!("s3://{bucket}/{}", prefix.trim_matches('/'))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The environment a client needs: endpoint, region and keys
    /// (`PSTAR_S3_ENDPOINT`, `PSTAR_S3_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PSTAR_S3_ENDPOINT", self.endpoint()),
            ("PSTAR_S3_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
        ]
    }

    /// Makes a bucket (a directory of the data directory, which is what `s3s-fs` serves
    /// as one).
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.data_dir().join(name)).expect("bucket directory");
    }

    /// Where the objects are: `DATA/<bucket>/<key>`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's directory (data and `s3s-fs.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's process id while it runs (to freeze it with SIGSTOP, say).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server at once, as if its host went away.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed server again on the same port, with the same data.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.spawn() {
            panic!("s3s-fs did not start again: {e}");
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `s3s-fs` on the PATH, else where `cargo install` puts it.
fn s3s_fs() -> PathBuf {
    let in_path = std::env::var_os("PATH").into_iter().flat_map(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("s3s-fs"))
            .collect::<Vec<_>>()
    });
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    in_path
        .chain(cargo_home.map(|c| c.join("bin/s3s-fs")))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("s3s-fs"))
}
