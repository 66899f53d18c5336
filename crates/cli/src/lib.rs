//! The `pstar` command line, as a library so its parts are tested alone.
//!
//! * [`workload`]: the workload file (pilots and units as TOML), parsed and checked;
//! * [`run`]: `pstar run`, which drives a workload through the Pilot-API;
//! * [`report`]: the end-of-run summary and the JSON report;
//! * [`agent`]: `pstar agent`, one pilot's agent as its own process;
//! * [`store`]: opening the coordination store a command names;
//! * [`inspect`]: `pstar status`, `units`, `cancel` and `session`, from another terminal.

/// `eprintln!` that never panics: a closed standard error (`pstar run 2>&1 | head -1`)
/// must not stop a run half-way, before its units are canceled and its report written.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `eprint!` that never panics (see [`say!`]).
#[macro_export]
macro_rules! say_part {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

/// `print!` that never panics: `pstar status | head -1` ends quietly.
#[macro_export]
macro_rules! show {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

pub mod agent;
pub mod inspect;
pub mod progress;
pub mod report;
pub mod run;
pub mod script;
pub mod settings;
pub mod simulate;
pub mod store;
pub mod submit;
pub mod workload;

/// `1 unit`, `2 units`, `0 units`: a count with its noun, for messages.
pub fn count(n: usize, what: &str) -> String {
    pstar_model::plural(n as u64, what)
}
