//! Real services for pstar's tests and benchmarks, started on loopback.
//!
//! Nothing here is a fake: [`RedisServer`] runs Debian's `redis-server` (which
//! `scripts/test.sh` installs) on a free port of 127.0.0.1, with a password and
//! append-only persistence, in a temporary directory that goes away with it.
//!
//! Batch systems and remote hosts, each started by a script of `scripts/testbed/` (also
//! usable by hand) on free loopback ports, in a temporary directory of its own, so that
//! several run side by side (tests in parallel processes):
//! - [`SlurmCluster`]: Slurm 22.05 with its own munged, a slurmctld and one slurmd per fake
//!   node, all on this host;
//! - [`SgeCell`]: a Grid Engine 8.1.9 cell with its own sge_qmaster and sge_execd;
//! - [`SshServer`]: a key-only sshd for `root@127.0.0.1`.
//!
//! Storage: [`S3Server`] runs `s3s-fs` (from crates.io; `scripts/test.sh` installs it), an
//! S3-compatible server keeping objects as plain files, on a free loopback port.

mod s3;
mod sge;
mod slurm;
mod sshd;

pub use s3::{S3S_FS_VERSION, S3Server};
pub use sge::SgeCell;
pub use slurm::SlurmCluster;
pub use sshd::SshServer;

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of one's own. Stopped (SIGKILL) when dropped.
pub struct RedisServer {
    dir: tempfile::TempDir,
    port: u16,
    password: String,
    child: Option<Child>,
    /// Serve TLS only (`rediss://`), with a certificate for 127.0.0.1 signed by a CA of
    /// this server's own (`ca_file`).
    tls: bool,
    /// Listen on this address too (a test network's host side), and name it in `url`.
    also_on: Option<Ipv4Addr>,
}

impl RedisServer {
    /// Starts a server on a free loopback port with a random password; waits until it
    /// answers. Panics if `redis-server` is missing (run `bash scripts/test.sh`, which
    /// installs it).
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pstar-redis.")
            .tempdir()
            .expect("temporary directory for redis-server");
        let password = format!("pw-{:x}-{}", std::process::id(), nanos());
        let mut server = Self {
            dir,
            port: 0,
            password,
            child: None,
            tls: false,
            also_on: None,
        };
        server.port = free_port();
        server.spawn();
        server
    }

    /// Like [`start`](Self::start), listening on `addr` as well as on loopback (the host
    /// side of a [`Netns`] link, so agents in the namespace can reach it); `url` names
    /// `addr`.
    pub fn start_on(addr: Ipv4Addr) -> Self {
        let mut server = Self::start();
        server.stop();
        server.also_on = Some(addr);
        server.spawn();
        server
    }

    /// Like [`start`](Self::start), serving only TLS: a certificate authority and a server
    /// certificate for 127.0.0.1 are made with `openssl` in the server's directory.
    pub fn start_tls() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pstar-redis-tls.")
            .tempdir()
            .expect("temporary directory for redis-server");
        let d = dir.path();
        std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("san.ext");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .unwrap_or_else(|e| panic!("cannot run openssl (install openssl): {e}"));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=pstar test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        let mut server = Self {
            dir,
            port: free_port(),
            password: format!("pw-{:x}-{}", std::process::id(), nanos()),
            child: None,
            tls: true,
            also_on: None,
        };
        server.spawn();
        server
    }

    /// The certificate authority that signed a TLS server's certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn spawn(&mut self) {
        let log = self.dir.path().join("redis.log");
        let d = self.dir.path();
        let mut command = Command::new(redis_server());
        command.args(["--bind", "127.0.0.1"]);
        if let Some(addr) = self.also_on {
            command.arg(addr.to_string());
        }
        if self.tls {
            command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(d.join("server.crt"))
                .arg("--tls-key-file")
                .arg(d.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(d.join("ca.crt"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            command.args(["--port", &self.port.to_string()]);
        }
        let child = command
            .args(["--requirepass", &self.password])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server (install redis-server): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.addr()).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {} within 10 s; see {}",
                self.addr(),
                log.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port)
    }

    /// `redis://127.0.0.1:PORT/0` (`rediss://` for TLS): no password (give it through
    /// [`password`](Self::password)).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let host = self.also_on.unwrap_or(Ipv4Addr::LOCALHOST);
        format!("{scheme}://{host}:{}/0", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// Where the server keeps its data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server the way an operator would (SIGTERM: it writes its data and exits).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `redis-cli ARGS...` against this server (raw replies); its standard output. Panics
    /// if redis-cli fails: it is for tests, to look inside or break the store.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["--no-auth-warning", "--raw", "-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-a", &self.password])
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every key in the server, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .cli(&["KEYS", "*"])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
    }

    /// Starts the server again on the same port, with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port nobody listens on (now).
pub fn free_port() -> u16 {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `scripts/testbed/` of this checkout: the start and stop scripts of the services.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/testbed")
}

/// Runs `bash scripts/testbed/SCRIPT ARGS..`; on failure, the script's own error (it prints
/// the failing daemon's log) as `Err`.
fn run_script(script: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Result<(), String> {
    let path = scripts_dir().join(script);
    let mut command = Command::new("bash");
    command.arg(&path);
    for arg in args {
        command.arg(arg);
    }
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash {}: {e}", path.display()));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{script} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn redis_server() -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = Path::new(dir).join("redis-server");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("redis-server")
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A network namespace joined to this host by a veth pair: a "host" whose link a test can
/// cut. The host side is `host_addr`, the namespace side `ns_addr`. Needs root and `ip`
/// (iproute2). Deleted, with every process still inside, when dropped.
pub struct Netns {
    pub name: String,
    pub host_addr: Ipv4Addr,
    pub ns_addr: Ipv4Addr,
    ns_link: String,
}

impl Netns {
    /// Creates the namespace and its link; `id` (0 to 249) keeps concurrent tests apart.
    pub fn create(id: u8) -> Self {
        let tag = format!("{}{}", std::process::id() % 1000, id);
        let name = format!("pstar-ns{tag}");
        let (host_link, ns_link) = (format!("psh{tag}"), format!("psn{tag}"));
        let net = 200 + (std::process::id() % 50) as u8;
        let host_addr = Ipv4Addr::new(10, net, id, 1);
        let ns_addr = Ipv4Addr::new(10, net, id, 2);
        let me = Self {
            name: name.clone(),
            host_addr,
            ns_addr,
            ns_link: ns_link.clone(),
        };
        let ip = |args: &[&str]| {
            let out = Command::new("ip")
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("cannot run ip (install iproute2): {e}"));
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_link, "type", "veth", "peer", "name", &ns_link,
        ]);
        ip(&["link", "set", &ns_link, "netns", &name]);
        ip(&["addr", "add", &format!("{host_addr}/24"), "dev", &host_link]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{ns_addr}/24"),
            "dev",
            &ns_link,
        ]);
        ip(&["link", "set", &host_link, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ip(&["-n", &name, "link", "set", &ns_link, "up"]);
        me
    }

    /// Cuts (`false`) or restores (`true`) the namespace's link to the host.
    pub fn set_link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        let status = Command::new("ip")
            .args(["-n", &self.name, "link", "set", &self.ns_link, state])
            .status()
            .expect("ip link set");
        assert!(status.success(), "ip link set {state}");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        // Deleting the namespace removes both ends of the veth pair.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
