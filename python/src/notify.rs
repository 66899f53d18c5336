//! State-change callbacks and futures, served by one Python thread.
//!
//! The manager tells of a watched unit's (or pilot's) change on a channel, from its own
//! task, without the GIL; the thread `pstar-notify` waits on that channel with the GIL
//! released, then calls the callbacks and settles the futures. A callback that raises is
//! reported through `sys.unraisablehook` (printed, by default) and the others go on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pyo3::prelude::*;

use pstar::{PilotId, PilotState, State, UnitId, UnitState};

/// A unit or pilot of one session (ids start over in every session).
#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Unit(Arc<str>, UnitId),
    Pilot(Arc<str>, PilotId),
}

enum Note {
    Unit(Key, UnitState),
    Pilot(Key, PilotState),
    /// Settle the futures of a unit that had ended when they were asked for.
    Settle(Key),
    Stop,
}

/// What watches one unit or pilot: the Python handle passed to its callbacks, the
/// callbacks, and the futures to settle when it ends.
struct Watch {
    handle: Py<PyAny>,
    callbacks: Vec<Py<PyAny>>,
    futures: Vec<Py<PyAny>>,
}

struct Hub {
    tx: Sender<Note>,
    rx: Mutex<Receiver<Note>>,
    watches: Mutex<HashMap<Key, Watch>>,
    /// Units and pilots whose changes are already told on the channel.
    hooked: Mutex<std::collections::HashSet<Key>>,
    started: AtomicBool,
    stopped: AtomicBool,
}

fn hub() -> &'static Arc<Hub> {
    static HUB: OnceLock<Arc<Hub>> = OnceLock::new();
    HUB.get_or_init(|| {
        let (tx, rx) = channel();
        Arc::new(Hub {
            tx,
            rx: Mutex::new(rx),
            watches: Mutex::new(HashMap::new()),
            hooked: Mutex::new(Default::default()),
            started: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        })
    })
}

/// The thread's body, as a Python object (`pstar-notify` runs `Notifier().run()`).
#[pyclass(module = "pstar._pstar", frozen)]
pub struct Notifier;

#[pymethods]
impl Notifier {
    /// Serves the callbacks and futures until `stop_notifier()`.
    fn run(&self, py: Python<'_>) -> PyResult<()> {
        let hub = hub();
        loop {
            let batch: Vec<Note> = py.detach(|| {
                let Ok(rx) = hub.rx.lock() else {
                    return vec![Note::Stop];
                };
                match rx.recv_timeout(Duration::from_millis(500)) {
                    Ok(first) => {
                        let mut batch = vec![first];
                        batch.extend(rx.try_iter().take(10_000));
                        batch
                    }
                    Err(RecvTimeoutError::Timeout) => Vec::new(),
                    Err(RecvTimeoutError::Disconnected) => vec![Note::Stop],
                }
            });
            for note in batch {
                match note {
                    Note::Stop => return Ok(()),
                    Note::Unit(key, state) => {
                        serve(py, key, state.as_str(), state.is_final(), true)
                    }
                    Note::Pilot(key, state) => {
                        serve(py, key, state.as_str(), state.is_final(), true)
                    }
                    Note::Settle(key) => serve(py, key, "", true, false),
                }
            }
            if hub.stopped.load(Ordering::Relaxed) {
                return Ok(());
            }
        }
    }
}

/// Calls the callbacks of `key` with `state` (if `call`), and settles its futures when it
/// has ended.
fn serve(py: Python<'_>, key: Key, state: &str, ended: bool, call: bool) {
    let hub = hub();
    let (handle, callbacks, futures) = {
        let Ok(mut watches) = hub.watches.lock() else {
            return;
        };
        let Some(w) = watches.get_mut(&key) else {
            return;
        };
        let handle = w.handle.clone_ref(py);
        let callbacks: Vec<Py<PyAny>> = match call {
            true => w.callbacks.iter().map(|c| c.clone_ref(py)).collect(),
            false => Vec::new(),
        };
        let futures = match ended {
            true => std::mem::take(&mut w.futures),
            false => Vec::new(),
        };
        if ended && call {
            watches.remove(&key);
        }
        (handle, callbacks, futures)
    };
    for cb in callbacks {
        if let Err(e) = cb.call1(py, (handle.bind(py), state)) {
            // Reported, not fatal: the other callbacks and the futures go on.
            e.write_unraisable(py, Some(cb.bind(py)));
        }
    }
    if futures.is_empty() {
        return;
    }
    let settle = match py.import("pstar._glue").and_then(|g| g.getattr("settle")) {
        Ok(s) => s,
        Err(e) => {
            e.write_unraisable(py, None);
            return;
        }
    };
    for f in futures {
        if let Err(e) = settle.call1((f.bind(py), handle.bind(py))) {
            e.write_unraisable(py, Some(f.bind(py)));
        }
    }
}

/// Refuses a callback that cannot be called (at registration, not at each change).
pub(crate) fn check_callable(py: Python<'_>, callback: &Py<PyAny>) -> PyResult<()> {
    let cb = callback.bind(py);
    if cb.is_callable() {
        return Ok(());
    }
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "a callback must be callable as callback(handle, state), not {}",
        cb.repr().map(|r| r.to_string()).unwrap_or_default()
    )))
}

/// Starts the `pstar-notify` thread, once.
fn start(py: Python<'_>) -> PyResult<()> {
    let hub = hub();
    if hub.started.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let run = Py::new(py, Notifier)?.bind(py).getattr("run")?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("target", run)?;
    kwargs.set_item("name", "pstar-notify")?;
    kwargs.set_item("daemon", true)?;
    let thread = py
        .import("threading")?
        .getattr("Thread")?
        .call((), Some(&kwargs))?;
    thread.call_method0("start")?;
    py.import("pstar._glue")?
        .setattr("_notify_thread", thread)?;
    Ok(())
}

/// Ends the `pstar-notify` thread (at the interpreter's exit).
#[pyfunction]
pub(crate) fn stop_notifier() {
    let hub = hub();
    hub.stopped.store(true, Ordering::SeqCst);
    let _ = hub.tx.send(Note::Stop);
}

fn add(
    py: Python<'_>,
    key: Key,
    handle: &Bound<'_, PyAny>,
    callback: Option<Py<PyAny>>,
    future: Option<Py<PyAny>>,
) {
    if let Ok(mut watches) = hub().watches.lock() {
        let w = watches.entry(key).or_insert_with(|| Watch {
            handle: handle.clone().unbind(),
            callbacks: Vec::new(),
            futures: Vec::new(),
        });
        w.callbacks.extend(callback);
        w.futures.extend(future);
    }
    let _ = py;
}

fn hook(key: &Key) -> bool {
    hub()
        .hooked
        .lock()
        .map(|mut h| h.insert(key.clone()))
        .unwrap_or(false)
}

/// Watches a unit: `callback(unit, state)` at each later change, `future` settled at its
/// end (at once if it has ended).
pub(crate) fn watch_unit(
    py: Python<'_>,
    session: &Arc<str>,
    unit: &pstar::ComputeUnit,
    handle: &Bound<'_, PyAny>,
    callback: Option<Py<PyAny>>,
    future: Option<Py<PyAny>>,
) -> PyResult<()> {
    start(py)?;
    let key = Key::Unit(session.clone(), unit.id());
    let settle_now = future.is_some();
    add(py, key.clone(), handle, callback, future);
    if hook(&key) {
        let tx = hub().tx.clone();
        let told = key.clone();
        unit.on_state_change(move |_, state| {
            let _ = tx.send(Note::Unit(told.clone(), state));
        });
    }
    // Ended before (or while) it was hooked: its end would never be told.
    if settle_now && unit.state().is_final() {
        let _ = hub().tx.send(Note::Settle(key));
    }
    Ok(())
}

/// Watches a pilot: `callback(pilot, state)` at each later change.
pub(crate) fn watch_pilot(
    py: Python<'_>,
    session: &Arc<str>,
    pilot: &pstar::PilotCompute,
    handle: &Bound<'_, PyAny>,
    callback: Py<PyAny>,
) -> PyResult<()> {
    start(py)?;
    let key = Key::Pilot(session.clone(), pilot.id());
    add(py, key.clone(), handle, Some(callback), None);
    if hook(&key) {
        let tx = hub().tx.clone();
        let mut rx = pilot.watch_state();
        rx.borrow_and_update();
        crate::runtime().spawn(async move {
            while rx.changed().await.is_ok() {
                let state = *rx.borrow_and_update();
                let _ = tx.send(Note::Pilot(key.clone(), state));
                if state.is_final() {
                    break;
                }
            }
        });
    }
    Ok(())
}
