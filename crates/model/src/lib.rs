//! The P* model, as data.
//!
//! This crate holds what every other part of pstar agrees on and nothing that does I/O:
//!
//! * the descriptions an application writes: [`PilotComputeDescription`] for a pilot and
//!   [`ComputeUnitDescription`] for a compute unit;
//! * identifiers ([`PilotId`], [`UnitId`]) and [`Timestamp`]s;
//! * the states of pilots and units and the one table of legal transitions between them
//!   ([`PilotState`], [`UnitState`], [`Lifecycle`]);
//! * the [`ResourceUrl`] that names where a pilot runs;
//! * the [`Settings`] of a run, layered, with their built-in defaults.
//!
//! ```
//! use pstar_model::{ComputeUnitDescription, Lifecycle, Timestamp, UnitState};
//!
//! let unit = ComputeUnitDescription::new("/bin/echo").with_arguments(["hello"]);
//! assert_eq!(unit.cores, 1);
//!
//! let mut life = Lifecycle::<UnitState>::new(Timestamp::now());
//! life.transition(UnitState::Scheduled, Timestamp::now()).unwrap();
//! assert!(life.transition(UnitState::Done, Timestamp::now()).is_err()); // must run first
//! ```

mod data;
mod description;
mod ids;
mod resource;
pub mod sandbox;
mod session_name;
pub mod settings;
mod state;
mod time;

pub use data::{
    DataFile, DataUnitDescription, InvalidDataName, InvalidDataPath, MAX_DATA_NAME_LEN, OutputData,
    PilotDataDescription, bytes_text, check_data_name, check_data_path, quota_refusal,
};
pub use description::{
    Affinity, ComputeUnitDescription, DescriptionError, FunctionCall, MAX_FUNCTION_BYTES,
    OnDependencyFailure, PilotComputeDescription,
};
pub use ids::{IdParseError, PilotId, UnitId};
pub use resource::{ResourceUrl, ResourceUrlError, Scheme};
pub use session_name::{
    InvalidSessionId, MAX_SESSION_ID_LEN, Printable, check_session_id, printable,
};
pub use settings::{AgentSettings, Origin, SettingError, Settings, SettingsLayer};
pub use state::{DataUnitState, IllegalTransition, Lifecycle, PilotState, State, UnitState};
pub use time::Timestamp;

/// `n` and `noun`, in the plural unless `n` is 1: `1 core`, `0 cores`, `4 cores`.
///
/// ```
/// assert_eq!(pstar_model::plural(1, "pilot"), "1 pilot");
/// assert_eq!(pstar_model::plural(3, "GPU"), "3 GPUs");
/// ```
pub fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        return format!("1 {noun}");
    }
    let mut chars = noun.chars().rev();
    match (chars.next(), chars.next()) {
        (Some('y'), Some(c)) if !"aeiou".contains(c) => {
            format!("{n} {}ies", &noun[..noun.len() - 1])
        }
        _ => format!("{n} {noun}s"),
    }
}
