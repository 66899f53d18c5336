//! A Grid Engine cell of one's own: `scripts/testbed/sge-up.sh` in a temporary directory.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use crate::{free_port, run_script};

/// A Grid Engine (Son of Grid Engine 8.1.9) cell `pstar` of its own: `SGE_ROOT` in a
/// temporary directory, an `sge_qmaster` and an `sge_execd` for this host on free loopback
/// ports. This host is submit and execution host; the queue `all.q` has `slots` slots (no
/// load thresholds: it oversubscribes the CPUs); the parallel environment `smp`
/// (`allocation_rule $pe_slots`) is in it; root may run jobs; the scheduler runs every
/// second; `qacct` sees a finished job about a second later.
///
/// Every Grid Engine client must run with this cell's [`env`](Self::env) (or
/// [`command`](Self::command)): without the ports it would talk to the machine's default cell.
/// Jobs write their output to the submitter's home directory unless told otherwise: give
/// `-o`/`-e` (or `-cwd`, with [`command`](Self::command) running in [`dir`](Self::dir)).
///
/// `qstat -j ID` exits 1 once a job is gone. Only one execution host: Grid Engine allows
/// one `sge_execd` per host name, so there is no fake multi-node cell.
///
/// Dropping it deletes every job of this cell and kills its daemons
/// (`scripts/testbed/sge-down.sh`), then removes the directory.
pub struct SgeCell {
    dir: tempfile::TempDir,
    slots: u32,
    qmaster_port: u16,
    execd_port: u16,
}

impl SgeCell {
    /// Makes and starts a cell whose queue `all.q` has `slots` slots; returns once the queue
    /// takes jobs (~2.5 s). Panics, with the daemons' messages, if it does not come up, or if
    /// Grid Engine is missing (run `bash scripts/test.sh`, which installs gridengine-master,
    /// gridengine-exec and gridengine-client).
    pub fn start(slots: u32) -> Self {
        assert!(slots >= 1, "a Grid Engine queue needs at least one slot");
        let dir = tempfile::Builder::new()
            .prefix("pstar-sge.")
            .tempdir()
            .expect("temporary directory for a Grid Engine cell");
        let mut cell = Self {
            dir,
            slots,
            qmaster_port: 0,
            execd_port: 0,
        };
        // A port found free may be taken by someone else before the daemon binds it: try
        // again with other ports (and a fresh cell).
        let mut error = String::new();
        for _ in 0..3 {
            cell.qmaster_port = free_port();
            cell.execd_port = free_port();
            match run_script(
                "sge-up.sh",
                &[
                    &cell.dir.path(),
                    &slots.to_string(),
                    &cell.qmaster_port.to_string(),
                    &cell.execd_port.to_string(),
                ],
            ) {
                Ok(()) => return cell,
                Err(e) => {
                    error = e;
                    cell.stop();
                    clear_dir(cell.dir.path());
                }
            }
        }
        panic!("Grid Engine cell did not start:\n{error}");
    }

    /// The environment Grid Engine clients need: `SGE_ROOT`, `SGE_CELL`,
    /// `SGE_QMASTER_PORT`, `SGE_EXECD_PORT`.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "SGE_ROOT".to_string(),
                self.dir.path().join("root").to_string_lossy().into_owned(),
            ),
            ("SGE_CELL".to_string(), "pstar".to_string()),
            (
                "SGE_QMASTER_PORT".to_string(),
                self.qmaster_port.to_string(),
            ),
            ("SGE_EXECD_PORT".to_string(), self.execd_port.to_string()),
        ]
    }

    /// A command for `program` (`qsub`, `qstat`, `qdel`, `qacct`, `qconf`, ...) with this
    /// cell's [`env`](Self::env), run in [`dir`](Self::dir).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        command.envs(self.env()).current_dir(self.dir.path());
        command
    }

    /// Where the cell lives: `root/` (`SGE_ROOT`; `root/pstar/common/accounting` is what
    /// `qacct` reads), `spool/` (qmaster and execd spool, `messages` logs), `env.sh` (the
    /// client environment, for a shell), `tmp/` (the jobs' `TMPDIR`s).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// How many slots the queue `all.q` has.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// The port of `sge_qmaster` on this host.
    pub fn qmaster_port(&self) -> u16 {
        self.qmaster_port
    }

    /// The port of `sge_execd` on this host.
    pub fn execd_port(&self) -> u16 {
        self.execd_port
    }

    fn stop(&self) {
        if let Err(e) = run_script("sge-down.sh", &[&self.dir.path()]) {
            eprintln!("pstar-testbed: stopping the Grid Engine cell: {e}");
        }
    }
}

impl Drop for SgeCell {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Empties `dir` (for a fresh cell after a failed start).
fn clear_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let _ = if path.is_dir() && !path.is_symlink() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}
