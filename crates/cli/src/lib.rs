//! The `pstar` command line, as a library so its parts are tested alone.

pub mod workload;
