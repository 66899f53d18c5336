//! `pstar._pstar`: the Pilot-API of the `pstar` crate, as a Python module.
//!
//! Every class here wraps the Rust type of the same name (`Session`,
//! `PilotComputeService`, `ComputeUnit`...); nothing of pstar's logic is written again.
//! The manager and the in-process agents run on one tokio runtime of the module
//! ([`runtime`]); a Python call that waits on them releases the GIL and wakes every 100 ms
//! to let Ctrl-C through ([`wait_on`]). Callbacks and futures are served by one Python
//! thread ([`notify`]). The `pstar` package (python/pstar) re-exports these classes and
//! adds the little that is Python's own: pickling calls, futures, asyncio.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTimeoutError};
use pyo3::prelude::*;

mod data;
mod describe;
mod notify;
mod pilots;
mod session;
mod units;

create_exception!(
    pstar,
    Error,
    PyException,
    "What pstar refuses or could not do; the message says where and why."
);
create_exception!(
    pstar,
    DescriptionError,
    Error,
    "A description with an unknown key, a value of the wrong type, or values that can never \
     run (`key` names the key)."
);
create_exception!(
    pstar,
    UnitFailed,
    Error,
    "A unit that ended failed (or canceled) was asked for its result."
);
create_exception!(
    pstar,
    FunctionError,
    Error,
    "A function unit raised an exception that cannot be rebuilt here; the message and the \
     remote traceback say what it was."
);

/// The module's runtime: the manager's tasks and the in-process agents run on it.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("pstar")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("pstar cannot start its runtime: {e}"))
    })
}

/// Runs `fut`, a wait, on the module's runtime and waits for it with the GIL released,
/// waking every 100 ms for signals (Ctrl-C raises `KeyboardInterrupt` here). `Ok(None)`:
/// `timeout` passed first. Either way the wait is dropped.
pub(crate) fn wait_on<T: Send + 'static>(
    py: Python<'_>,
    timeout: Option<f64>,
    fut: impl Future<Output = T> + Send + 'static,
) -> PyResult<Option<T>> {
    run_on(py, timeout, true, fut)
}

/// Runs `fut` on the module's runtime; `abort`: drop it on Ctrl-C or timeout (a wait),
/// else it goes on (an action: creating or canceling a pilot must not stop half-way).
fn run_on<T: Send + 'static>(
    py: Python<'_>,
    timeout: Option<f64>,
    abort: bool,
    fut: impl Future<Output = T> + Send + 'static,
) -> PyResult<Option<T>> {
    let deadline = match timeout {
        Some(t) if !(t >= 0.0 && t.is_finite()) => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "timeout must be a number of seconds >= 0, not {t}"
            )));
        }
        Some(t) => Some(Instant::now() + Duration::from_secs_f64(t.min(1e9))),
        None => None,
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    // (A receiver is not `Sync`; the GIL-free closure borrows it through a lock.)
    let rx = std::sync::Mutex::new(rx);
    let task = runtime().spawn(async move {
        let _ = tx.send(fut.await);
    });
    loop {
        let step = match deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100)),
            None => Duration::from_millis(100),
        };
        let got = py.detach(|| match rx.lock() {
            Ok(rx) => rx.recv_timeout(step),
            Err(_) => Err(std::sync::mpsc::RecvTimeoutError::Disconnected),
        });
        match got {
            Ok(v) => return Ok(Some(v)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = py.check_signals() {
                    if abort {
                        task.abort();
                    }
                    return Err(e);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    if abort {
                        task.abort();
                    }
                    return Ok(None);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::new_err("pstar's runtime stopped"));
            }
        }
    }
}

/// Runs an action to its end and gives its outcome; Ctrl-C raises `KeyboardInterrupt`
/// here, and the action goes on to its end.
pub(crate) fn block<T: Send + 'static>(
    py: Python<'_>,
    fut: impl Future<Output = T> + Send + 'static,
) -> PyResult<T> {
    run_on(py, None, false, fut)?.ok_or_else(|| Error::new_err("pstar: a wait ended early"))
}

/// A state as the seeds' `get_state()` gives it: a `str` equal to it in any case
/// (`"done"` and `"Done"`).
pub(crate) fn state_name(py: Python<'_>, state: &str) -> PyResult<Py<PyAny>> {
    Ok(py
        .import("pstar._glue")?
        .getattr("StateName")?
        .call1((state,))?
        .unbind())
}

/// A history as Python gives it: each state with when it began (seconds since the epoch).
pub(crate) fn history<S: pstar::State>(
    history: Vec<(S, pstar::Timestamp)>,
) -> Vec<(&'static str, f64)> {
    history
        .into_iter()
        .map(|(s, at)| (s.as_str(), at.as_secs_f64()))
        .collect()
}

/// `TimeoutError` for a wait that ran out.
pub(crate) fn timed_out(what: &str, timeout: Option<f64>) -> PyErr {
    PyTimeoutError::new_err(format!(
        "{what} did not end within {} s",
        timeout.unwrap_or(0.0)
    ))
}

/// A pstar error as a Python exception of pstar's own, with the same message as the CLI.
pub(crate) fn error(e: pstar::Error) -> PyErr {
    match &e {
        pstar::Error::InvalidDescription { source, .. } => {
            let err = DescriptionError::new_err(e.to_string());
            Python::attach(|py| {
                let key = source.fields().first().copied().unwrap_or("");
                let _ = err.value(py).setattr("key", key);
            });
            err
        }
        pstar::Error::NeedsNetworkedStore { scheme }
        | pstar::Error::Adaptor(pstar::AdaptorError::NeedsNetworkedStore { scheme }) => {
            Error::new_err(format!(
                "`{}` pilots run their agents elsewhere, so their session needs a networked \
                 coordination store: make it with pstar.Session(coordination=\"redis://HOST:PORT\") \
                 (or set PSTAR_COORDINATION before the default session is made)",
                scheme.as_str()
            ))
        }
        _ => Error::new_err(pstar_cli::settings::explain(&e)),
    }
}

/// Runs `pstar agent` in this process: the `pstar-agent` program of the package (the
/// agent program of pilots whose agents are processes of their own).
#[pyfunction]
fn run_agent(py: Python<'_>, args: Vec<String>) -> PyResult<i32> {
    const USAGE: &str = "usage: pstar-agent agent --coordination URL --session SESSION \
                         --pilot PILOT\n\nRuns one pilot's agent: pstar starts it (with Redis), \
                         not you.";
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(0);
    }
    let mut args = args.into_iter().peekable();
    if args.peek().is_some_and(|a| a == "agent") {
        args.next();
    }
    let (mut coordination, mut session, mut pilot) = (None, None, None);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| Error::new_err(format!("pstar-agent: {flag} needs a value")))?;
        match flag.as_str() {
            "--coordination" => coordination = Some(value),
            "--session" => session = Some(value),
            "--pilot" => pilot = Some(value),
            other => {
                return Err(Error::new_err(format!(
                    "pstar-agent: unknown option {other} (usage: pstar-agent agent \
                     --coordination URL --session SESSION --pilot PILOT)"
                )));
            }
        }
    }
    let (Some(coordination), Some(session), Some(pilot)) = (coordination, session, pilot) else {
        return Err(Error::new_err(
            "usage: pstar-agent agent --coordination URL --session SESSION --pilot PILOT",
        ));
    };
    let pilot: pstar::PilotId = pilot
        .parse()
        .map_err(|e| Error::new_err(format!("pstar-agent: --pilot {pilot}: {e}")))?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PSTAR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("pstar=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let options = pstar_cli::agent::AgentOptions {
        coordination,
        session,
        pilot,
        overrides: pstar::SettingsLayer::default(),
    };
    let ended = py.detach(|| runtime().block_on(pstar_cli::agent::run(options)));
    match ended {
        Ok(state) => {
            eprintln!("pstar agent: pilot {pilot} ended {state}");
            Ok(0)
        }
        Err(e) => {
            eprintln!("pstar agent: {e}");
            Ok(1)
        }
    }
}

#[pymodule]
fn _pstar(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("DescriptionError", py.get_type::<DescriptionError>())?;
    m.add("UnitFailed", py.get_type::<UnitFailed>())?;
    m.add("FunctionError", py.get_type::<FunctionError>())?;
    m.add_function(wrap_pyfunction!(run_agent, m)?)?;
    m.add_function(wrap_pyfunction!(session::default_session, m)?)?;
    m.add_function(wrap_pyfunction!(session::close_all, m)?)?;
    m.add_function(wrap_pyfunction!(session::set_defaults, m)?)?;
    m.add_function(wrap_pyfunction!(notify::stop_notifier, m)?)?;
    m.add_class::<session::Session>()?;
    m.add_class::<describe::ComputeUnitDescription>()?;
    m.add_class::<describe::PilotComputeDescription>()?;
    m.add_class::<describe::PilotDataDescription>()?;
    m.add_class::<describe::DataUnitDescription>()?;
    m.add_class::<pilots::PilotComputeService>()?;
    m.add_class::<pilots::PilotCompute>()?;
    m.add_class::<units::ComputeUnitService>()?;
    m.add_class::<units::ComputeUnit>()?;
    m.add_class::<data::PilotDataService>()?;
    m.add_class::<data::PilotData>()?;
    m.add_class::<data::DataUnit>()?;
    m.add_class::<data::ComputeDataService>()?;
    m.add_class::<notify::Notifier>()?;
    Ok(())
}
