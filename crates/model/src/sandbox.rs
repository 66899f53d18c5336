//! Where things live on a pilot's resource.
//!
//! ```text
//! <pilot working directory, default ./pstar.sandbox>/<session>/<pilot id>/   the pilot sandbox
//!     <unit id>/            one per unit: its default working directory
//!         stdout, stderr    unless the unit names other files
//! ```
//! The agent creates these; the manager computes the same paths to tell the application
//! where a unit's output is.

use std::path::{Path, PathBuf};

use crate::{ComputeUnitDescription, PilotId, UnitId};

/// The default root of pilot sandboxes, relative to the manager's working directory.
pub const DEFAULT_SANDBOX_ROOT: &str = "pstar.sandbox";

/// The sandbox of pilot `pilot` of `session` under `root`.
pub fn pilot_sandbox(root: &Path, session: &str, pilot: PilotId) -> PathBuf {
    root.join(session).join(pilot.to_string())
}

/// The sandbox of one unit inside its pilot's sandbox.
pub fn unit_sandbox(pilot_sandbox: &Path, unit: UnitId) -> PathBuf {
    pilot_sandbox.join(unit.to_string())
}

impl ComputeUnitDescription {
    /// The file the unit's standard output goes to, given its sandbox.
    pub fn stdout_path(&self, unit_sandbox: &Path) -> PathBuf {
        unit_sandbox.join(self.stdout.as_deref().unwrap_or("stdout"))
    }

    /// The file the unit's standard error goes to, given its sandbox.
    pub fn stderr_path(&self, unit_sandbox: &Path) -> PathBuf {
        unit_sandbox.join(self.stderr.as_deref().unwrap_or("stderr"))
    }
}
