//! The Pilot-API: pilots and compute units over many resources, after the P* model.
//!
//! * [`PilotComputeService`] creates [`PilotCompute`]s (pilots) from
//!   [`PilotComputeDescription`]s and places them on resources through adaptors;
//! * [`ComputeUnitService`] accepts [`ComputeUnitDescription`]s, turns each into a
//!   scheduling unit in its pool, and binds it to a pilot with room ([`scheduler`]);
//! * a [`ComputeUnit`] follows one unit to its end: state, exit code, output files,
//!   callbacks.
//!
//! ```
//! # #[tokio::main] async fn main() -> pstar::Result<()> {
//! use pstar::{ComputeUnitDescription, ComputeUnitService, PilotComputeDescription,
//!             PilotComputeService, Session, UnitState};
//!
//! # let dir = tempfile::tempdir().unwrap();
//! let session = Session::builder().sandbox_root(dir.path()).build().await?;
//! let pcs = PilotComputeService::new(&session);
//! pcs.create_pilot(PilotComputeDescription { cores: 2, ..Default::default() }).await?;
//!
//! let cus = ComputeUnitService::new(&session);
//! cus.add_pilot_service(&pcs);
//! let unit = cus.submit(ComputeUnitDescription::new("/bin/hostname")).await?;
//! assert_eq!(unit.wait().await, UnitState::Done);
//! pcs.cancel().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod core;
mod data;
mod error;
mod ledger;
mod pilot;
pub mod placement;
mod resume;
pub mod scheduler;
mod session;
mod shell;
mod unit;
mod unit_service;

pub use data::{
    CLIENT, ComputeDataService, DataUnit, PilotData, PilotDataService, bytes_text, export_dir,
    quota_refusal,
};
pub use error::{Error, Result};
pub use ledger::{DataLedger, DataUnitEntry};
pub use pilot::{PilotCompute, PilotComputeService};
pub use resume::{Resumed, resume, resume_rerunning};
pub use session::{
    DEFAULT_HEARTBEAT_TIMEOUT, MANAGER_ALIVE_FOR, Session, SessionBuilder, new_session_id,
};
pub use unit::{Attempt, Callback, ComputeUnit, RunEnd};
pub use unit_service::{
    ComputeUnitService, ReservedIds, ServiceId, Submission, UnitCounts, UnitPolicy,
};

pub use pstar_adaptors::{AdaptorError, BootstrapTimeouts, JobFile};
pub use pstar_agent::AgentConfig;
pub use pstar_coordination::{Coordination, DataEvent, DataUnitRecord, Embedded, StoreReplica};
pub use pstar_model::{
    Affinity, AgentSettings, ComputeUnitDescription, DataFile, DataUnitDescription, DataUnitState,
    FunctionCall, MAX_FUNCTION_BYTES, OnDependencyFailure, Origin, OutputData,
    PilotComputeDescription, PilotDataDescription, PilotId, PilotState, ResourceUrl, Scheme,
    Settings, SettingsLayer, State, Timestamp, UnitId, UnitState,
};

/// The Rust examples of the README, compiled and run as doc tests so it never lies.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
