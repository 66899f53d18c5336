//! The `pstar` command line, as a library so its parts are tested alone.
//!
//! * [`workload`]: the workload file (pilots and units as TOML), parsed and checked;
//! * [`run`]: `pstar run`, which drives a workload through the Pilot-API;
//! * [`report`]: the end-of-run summary and the JSON report.

pub mod progress;
pub mod report;
pub mod run;
pub mod workload;
