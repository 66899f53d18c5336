//! The `pstar` command line, as a library so its parts are tested alone.
//!
//! * [`workload`]: the workload file (pilots and units as TOML), parsed and checked;
//! * [`run`]: `pstar run`, which drives a workload through the Pilot-API;
//! * [`report`]: the end-of-run summary and the JSON report;
//! * [`agent`]: `pstar agent`, one pilot's agent as its own process;
//! * [`store`]: opening the coordination store a command names;
//! * [`inspect`]: `pstar status`, `units`, `cancel` and `session`, from another terminal.

pub mod agent;
pub mod inspect;
pub mod progress;
pub mod report;
pub mod run;
pub mod script;
pub mod store;
pub mod workload;

/// `1 unit`, `2 units`, `0 units`: a count with its noun, for messages.
pub fn count(n: usize, what: &str) -> String {
    pstar_model::plural(n as u64, what)
}
