//! A Slurm cluster of one's own: `scripts/testbed/slurm-up.sh` in a temporary directory.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{free_port, run_script};

/// A Slurm 22.05 cluster on this host: its own `munged`, a `slurmctld` and one `slurmd` per
/// fake node (`n1` .. `nN`, every one with `cpus_per_node` CPUs whatever the hardware has),
/// on free loopback ports, all its state in a temporary directory. One partition `debug`
/// (the default) holds every node. No accounting database: `sacct -c` reads the job
/// completion file; `scontrol show job` keeps finished jobs for 300 s.
///
/// Every Slurm client command must run with this cluster's `SLURM_CONF`
/// ([`command`](Self::command) or [`env`](Self::env)): without it Slurm goes "configless"
/// and sends a DNS query off this machine.
///
/// Slurm schedules once a second (and the first time ~3 s after the start): a job runs 0 to
/// 1 s after it is submitted, the first one ~3 s after [`start`](Self::start).
///
/// Dropping it cancels every job of this cluster and stops its daemons
/// (`scripts/testbed/slurm-down.sh`), then removes the directory.
pub struct SlurmCluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
    nodes: u32,
    cpus_per_node: u32,
    ctld_port: u16,
    slurmd_base_port: u16,
}

impl SlurmCluster {
    /// Starts a cluster of `nodes` fake nodes with `cpus_per_node` CPUs each; returns once
    /// every node is idle (~0.15 s). Panics, with the daemons' log tails, if it does not
    /// come up, or if `slurmctld`/`munged` are missing (run `bash scripts/test.sh`, which
    /// installs slurm-wlm and munge).
    pub fn start(nodes: u32, cpus_per_node: u32) -> Self {
        assert!(nodes >= 1, "a Slurm cluster needs at least one node");
        assert!(cpus_per_node >= 1, "a Slurm node needs at least one CPU");
        let dir = tempfile::Builder::new()
            .prefix("pstar-slurm.")
            .tempdir()
            .expect("temporary directory for a Slurm cluster");
        let conf = dir.path().join("slurm.conf");
        let mut cluster = Self {
            dir,
            conf,
            nodes,
            cpus_per_node,
            ctld_port: 0,
            slurmd_base_port: 0,
        };
        // A port found free may be taken by someone else before the daemon binds it: try
        // again with other ports.
        let mut error = String::new();
        for _ in 0..3 {
            cluster.ctld_port = free_port();
            cluster.slurmd_base_port = free_port_range(nodes);
            match run_script(
                "slurm-up.sh",
                &[
                    &cluster.dir.path(),
                    &nodes.to_string(),
                    &cpus_per_node.to_string(),
                    &cluster.ctld_port.to_string(),
                    &cluster.slurmd_base_port.to_string(),
                ],
            ) {
                Ok(()) => return cluster,
                Err(e) => {
                    error = e;
                    cluster.stop();
                }
            }
        }
        panic!("Slurm cluster did not start:\n{error}");
    }

    /// The cluster's `slurm.conf` (give it as `SLURM_CONF` to every Slurm command).
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// The environment Slurm clients need: `SLURM_CONF`.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![(
            "SLURM_CONF".to_string(),
            self.conf.to_string_lossy().into_owned(),
        )]
    }

    /// Where the cluster keeps its configuration, state (`state/`), logs (`log/`: slurmctld,
    /// one slurmd per node, `jobcomp.txt`) and munge key and socket (`munge/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A command for `program` (`sbatch`, `squeue`, `scontrol`, ...) with this cluster's
    /// [`env`](Self::env), run in [`dir`](Self::dir) (where `sbatch` writes `slurm-ID.out`
    /// unless told otherwise).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        command.envs(self.env()).current_dir(self.dir.path());
        command
    }

    /// How many nodes the cluster has.
    pub fn nodes(&self) -> u32 {
        self.nodes
    }

    /// The nodes' names: `n1` .. `nN`.
    pub fn node_names(&self) -> Vec<String> {
        (1..=self.nodes).map(|i| format!("n{i}")).collect()
    }

    /// How many CPUs each node has.
    pub fn cpus_per_node(&self) -> u32 {
        self.cpus_per_node
    }

    /// The port of `slurmctld` on 127.0.0.1.
    pub fn ctld_port(&self) -> u16 {
        self.ctld_port
    }

    fn stop(&self) {
        if let Err(e) = run_script("slurm-down.sh", &[&self.dir.path()]) {
            eprintln!("pstar-testbed: stopping the Slurm cluster: {e}");
        }
    }
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The first of `n` consecutive loopback ports nobody listens on (now).
fn free_port_range(n: u32) -> u16 {
    let n = n as u16;
    for _ in 0..100 {
        let first = free_port();
        if first.checked_add(n).is_none() {
            continue;
        }
        let all_free = (1..n)
            .all(|i| TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, first + i)).is_ok());
        if all_free {
            return first;
        }
    }
    panic!("no {n} consecutive free loopback ports");
}
