//! Processes a unit started outside its process group: daemons (`setsid`, double forks).
//!
//! A unit's process group is killed when the unit ends, but a process that made a session
//! or group of its own escapes that. Two things find them:
//! - the process hosting the agent is a *child subreaper* (`PR_SET_CHILD_SUBREAPER`), so a
//!   unit's process whose parent dies is reparented to it (to its main thread) rather than
//!   to init: the agent's orphans are the main thread's children
//!   (`/proc/<pid>/task/<pid>/children`, one small read), and it reaps them;
//! - every unit's processes carry its sandbox in their environment (`PSTAR_SANDBOX`, set by
//!   [`crate::launch`] and inherited), the *marker* that says which unit (and so which
//!   pilot) a process belongs to, whoever its parent is.
//!
//! [`Sweeper::sweep`] kills the orphans whose unit is no longer running and reaps what it
//! killed; [`kill_marked`] kills every process of a pilot's units, its parent whatever
//! (a full `/proc` scan: when the agent ends).
//!
//! The units' own processes are never reaped here: a unit's leader is a child of the
//! executor thread that started it (not of the main thread), and only processes seen alive
//! with a unit's marker while they were the main thread's children are reaped (or every
//! dead child of the main thread, where the host says it starts none: see
//! [`adopt_all_orphans`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// The environment variable that carries a unit's sandbox: its marker.
pub const MARKER: &str = "PSTAR_SANDBOX";

/// Whether every dead child of the main thread may be reaped here; see
/// [`adopt_all_orphans`].
static ADOPT_ALL: AtomicBool = AtomicBool::new(false);

/// Declares that this process starts no child of its own from its main thread, so that
/// every dead child of the main thread is an orphan the agent may reap, even one it never
/// saw alive (a unit's `setsid` helper that exited at once, say). `pstar agent` and
/// `pstar run` on the embedded store call it; a program that hosts agents through the
/// Pilot-API and starts processes of its own must not. Without it such orphans stay
/// zombies until the process ends.
pub fn adopt_all_orphans() {
    ADOPT_ALL.store(true, Ordering::Relaxed);
}

/// Makes this process the reaper of its orphaned descendants; false where the kernel
/// refuses (then escaped processes are found by the full scan at the agent's end only).
pub fn become_subreaper() -> bool {
    match nix::sys::prctl::set_child_subreaper(true) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot become a child subreaper");
            false
        }
    }
}

/// The unit sandbox named by a process's marker, if it carries one.
pub fn marker(pid: i32) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{MARKER}=");
    environ
        .split(|b| *b == 0)
        .find_map(|v| v.strip_prefix(prefix.as_bytes()))
        .map(|value| PathBuf::from(std::ffi::OsStr::from_bytes(value)))
}

/// Whether `marker` names a unit sandbox inside `pilot_sandbox`.
fn of_pilot(marker: &Path, pilot_sandbox: &Path) -> bool {
    marker.parent() == Some(pilot_sandbox)
}

/// SIGKILLs every process whose marker names a unit of the pilot whose sandbox is
/// `pilot_sandbox`, wherever it is in the process tree; returns how many.
pub fn kill_marked(pilot_sandbox: &Path) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let me = std::process::id() as i32;
    let mut killed = 0;
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid != me
            && marker(pid).is_some_and(|m| of_pilot(&m, pilot_sandbox))
            && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}

/// The children of this process's main thread: where orphans are reparented.
fn orphans() -> Vec<i32> {
    let me = std::process::id();
    std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

/// One agent's view of the orphans of its units.
pub(crate) struct Sweeper {
    pilot_sandbox: PathBuf,
    /// Orphans seen alive with one of this pilot's markers: ours to reap once they die.
    adopted: Mutex<HashSet<i32>>,
}

impl Sweeper {
    pub(crate) fn new(pilot_sandbox: PathBuf) -> Self {
        Self {
            pilot_sandbox,
            adopted: Mutex::default(),
        }
    }

    /// Kills the orphans of this pilot's units that are not running any more (`running`
    /// says which unit sandboxes still are) and reaps the ones that have died; returns
    /// how many it killed.
    pub(crate) fn sweep(&self, running: impl Fn() -> HashSet<PathBuf>) -> usize {
        let children = orphans();
        if children.is_empty() {
            return 0;
        }
        let Ok(mut adopted) = self.adopted.lock() else {
            return 0;
        };
        let mut still_running: Option<HashSet<PathBuf>> = None;
        let mut killed = 0;
        for pid in children {
            if (adopted.contains(&pid) || ADOPT_ALL.load(Ordering::Relaxed)) && is_zombie(pid) {
                let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
                adopted.remove(&pid);
                continue;
            }
            let Some(m) = marker(pid).filter(|m| of_pilot(m, &self.pilot_sandbox)) else {
                continue;
            };
            adopted.insert(pid);
            let running = still_running.get_or_insert_with(&running);
            if !running.contains(&m) && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                tracing::info!(pid, unit = %m.display(), "killed a process its unit left running");
                killed += 1;
            }
        }
        // Reaped by someone else (it was not the main thread's child after all): forget it.
        adopted.retain(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        killed
    }
}
