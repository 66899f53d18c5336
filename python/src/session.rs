//! `Session`: where a program's pilots and units live, with `pstar run`'s settings as
//! keyword arguments; and the default session of services made without one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString};

use crate::{Error, block, error};

/// What the `pstar` package sets at import: the interpreter local pilots run function
/// units with, and the agent program of agents that are processes of their own.
#[derive(Default)]
struct Defaults {
    python: Option<String>,
    agent_binary: Option<PathBuf>,
}

static DEFAULTS: Mutex<Defaults> = Mutex::new(Defaults {
    python: None,
    agent_binary: None,
});

/// Every session made here, to be closed at exit.
static SESSIONS: Mutex<Vec<Weak<SessionState>>> = Mutex::new(Vec::new());

/// The session services use when they are given none.
static DEFAULT: Mutex<Option<Py<Session>>> = Mutex::new(None);

#[pyfunction]
#[pyo3(signature = (python=None, agent_binary=None))]
pub(crate) fn set_defaults(python: Option<String>, agent_binary: Option<PathBuf>) {
    if let Ok(mut d) = DEFAULTS.lock() {
        d.python = python;
        d.agent_binary = agent_binary;
    }
}

/// The interpreter local pilots run function units with, unless they name one.
pub(crate) fn default_python() -> Option<String> {
    DEFAULTS.lock().ok().and_then(|d| d.python.clone())
}

/// The default session, made at its first use (with the environment's settings:
/// `PSTAR_COORDINATION` makes it a Redis session).
#[pyfunction]
pub(crate) fn default_session(py: Python<'_>) -> PyResult<Py<Session>> {
    let mut slot = DEFAULT
        .lock()
        .map_err(|_| Error::new_err("pstar: the default session's lock is poisoned"))?;
    if let Some(s) = slot.as_ref()
        && !s.get().state.closed.load(Ordering::Relaxed)
    {
        return Ok(s.clone_ref(py));
    }
    let s = Py::new(py, Session::open(py, None)?)?;
    *slot = Some(s.clone_ref(py));
    Ok(s)
}

/// Closes every session still open (at the interpreter's exit): their pilots are canceled.
#[pyfunction]
pub(crate) fn close_all(py: Python<'_>) {
    let states: Vec<Arc<SessionState>> = SESSIONS
        .lock()
        .map(|mut s| {
            s.retain(|w| w.strong_count() > 0);
            s.iter().filter_map(Weak::upgrade).collect()
        })
        .unwrap_or_default();
    for state in states {
        let _ = state.close(py);
    }
}

/// A session's services and whether it was closed.
pub(crate) struct SessionState {
    pub(crate) session: pstar::Session,
    /// Its id, shared by its handles (callbacks are told apart by session and id).
    sid: Arc<str>,
    pilot_services: Mutex<Vec<pstar::PilotComputeService>>,
    unit_services: Mutex<Vec<pstar::ComputeUnitService>>,
    pub(crate) closed: AtomicBool,
}

impl SessionState {
    /// Cancels the pilots of its services, and ends the session in its store.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let services: Vec<pstar::PilotComputeService> = self
            .pilot_services
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let units: Vec<pstar::ComputeUnitService> = self
            .unit_services
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let session = self.session.clone();
        // (Ctrl-C ends the wait here, not the closing: it goes on.)
        block(py, async move {
            // A session whose store is lost cannot ask its agents to stop: its pilots'
            // jobs are ended through their adaptors.
            let lost = tokio::time::timeout(Duration::ZERO, session.lost())
                .await
                .ok();
            if let Some(reason) = lost {
                let reason = format!("its session was closed after its store was lost: {reason}");
                for pcs in services {
                    pcs.abort(&reason).await;
                }
                return;
            }
            for cus in &units {
                cus.cancel_because("its session was closed");
            }
            for pcs in services {
                pcs.cancel().await;
            }
            for cus in &units {
                let _ = tokio::time::timeout(Duration::from_secs(10), cus.wait()).await;
            }
            let keep = session.settings().keep;
            let _ = session.coordination().finish(keep).await;
        })
    }
}

/// A session: its pilots, units and data, coordinated through one store.
///
/// `Session()` keeps everything in this process (the embedded store);
/// `Session(coordination="redis://host:6379")` uses Redis, and every pilot's agent is then
/// a process of its own. The other keyword arguments are `pstar run`'s settings. Used as
/// `with Session() as s:`, it cancels its pilots on exit, as `close()` does.
#[pyclass(module = "pstar", name = "Session", frozen)]
pub struct Session {
    pub(crate) state: Arc<SessionState>,
}

impl Session {
    pub(crate) fn inner(&self) -> &pstar::Session {
        &self.state.session
    }

    /// Its id, as handles keep it.
    pub(crate) fn sid(&self) -> &Arc<str> {
        &self.state.sid
    }

    /// The pilots of its pilot services.
    pub(crate) fn pilots(&self) -> Vec<pstar::PilotCompute> {
        self.state
            .pilot_services
            .lock()
            .map(|s| s.iter().flat_map(|pcs| pcs.pilots()).collect())
            .unwrap_or_default()
    }

    /// The ids of the units of its unit services.
    pub(crate) fn unit_ids(&self) -> std::collections::HashSet<pstar::UnitId> {
        self.state
            .unit_services
            .lock()
            .map(|s| {
                s.iter()
                    .flat_map(|cus| cus.units())
                    .map(|u| u.id())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Keeps `cus`, to cancel its units when the session is closed.
    pub(crate) fn keep_units(&self, cus: &pstar::ComputeUnitService) {
        if let Ok(mut s) = self.state.unit_services.lock() {
            s.push(cus.clone());
        }
    }

    /// Keeps `pcs`, to cancel its pilots when the session is closed.
    pub(crate) fn keep(&self, pcs: &pstar::PilotComputeService) {
        if let Ok(mut s) = self.state.pilot_services.lock() {
            s.push(pcs.clone());
        }
    }

    pub(crate) fn check_open(&self) -> PyResult<()> {
        if self.state.closed.load(Ordering::Relaxed) {
            return Err(Error::new_err(format!(
                "session {} is closed",
                self.state.session.id()
            )));
        }
        Ok(())
    }

    fn open(py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let mut layer = pstar::SettingsLayer::from(pstar::Origin::Api);
        let mut id: Option<String> = None;
        if let Some(kw) = kwargs {
            for (k, v) in kw.iter() {
                let k: String = k.extract()?;
                if v.is_none() {
                    continue;
                }
                setting(&mut layer, &mut id, &k, &v)?;
            }
        }
        if layer.agent_binary.is_none()
            && std::env::var_os(pstar_cli::settings::AGENT_BIN_VAR).is_none()
        {
            layer.agent_binary = DEFAULTS.lock().ok().and_then(|d| d.agent_binary.clone());
        }
        let environment = pstar_cli::settings::from_environment();
        let settings = pstar::Settings::layered([&environment, &layer]);
        let sandbox = settings.sandbox.to_string_lossy();
        if sandbox.is_empty() || sandbox.contains('\0') {
            return Err(Error::new_err(format!(
                "Session: `sandbox` {:?} is not a directory name",
                settings.sandbox
            )));
        }
        let given_id = id.is_some();
        let id = id.unwrap_or_else(pstar::new_session_id);
        // The embedded store knows no other session: two of the same id would share their
        // sandboxes. (Redis refuses an id it holds already.)
        if given_id && settings.coordination.is_none() {
            let open_here = SESSIONS.lock().ok().is_some_and(|all| {
                all.iter()
                    .filter_map(Weak::upgrade)
                    .any(|s| s.session.id() == id && !s.closed.load(Ordering::Relaxed))
            });
            let dir = std::path::absolute(&settings.sandbox)
                .unwrap_or_else(|_| settings.sandbox.clone())
                .join(&id);
            if open_here || dir.exists() {
                return Err(Error::new_err(format!(
                    "session `{id}` exists already ({}): choose another id, or leave `id` \
                     out for a new one",
                    match open_here {
                        true => "open in this program".to_owned(),
                        false => format!("its sandboxes are in {}", dir.display()),
                    }
                )));
            }
        }
        let session = block(py, async move {
            let mut builder = pstar::Session::builder().id(&id).settings(settings.clone());
            match &settings.coordination {
                Some(url) => {
                    let store = pstar_cli::store::connect(url, &id)
                        .await
                        .map_err(pstar::Error::from)?;
                    builder = builder.coordination(store);
                }
                None => {}
            }
            builder.build().await
        })?
        .map_err(error)?;
        let state = Arc::new(SessionState {
            sid: Arc::from(session.id()),
            session,
            pilot_services: Mutex::new(Vec::new()),
            unit_services: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        });
        if let Ok(mut all) = SESSIONS.lock() {
            all.retain(|w| w.strong_count() > 0);
            all.push(Arc::downgrade(&state));
        }
        if state.session.settings().coordination.is_some() {
            crate::runtime().spawn(confirm_session(Arc::downgrade(&state)));
        }
        Ok(Self { state })
    }
}

/// Asks the store, every quarter of the heartbeat timeout, whether it still holds the
/// session (as `pstar run` does): keys deleted or a Redis restarted empty make the session
/// lost, and every wait on it ends with that reason instead of lasting for ever.
async fn confirm_session(state: Weak<SessionState>) {
    loop {
        let Some(s) = state.upgrade() else { return };
        if s.closed.load(Ordering::Relaxed) {
            return;
        }
        let every = (s.session.settings().heartbeat_timeout / 4).max(Duration::from_millis(250));
        let session = s.session.clone();
        drop(s);
        if !session.confirm_session().await {
            return;
        }
        drop(session);
        tokio::time::sleep(every).await;
    }
}

/// A duration setting: seconds, a text such as `"30s"`, or a `timedelta`.
fn seconds(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let d = if v.is_instance_of::<PyBool>() {
        None
    } else if v.is_instance_of::<PyInt>() || v.is_instance_of::<PyFloat>() {
        let s: f64 = v.extract()?;
        (s.is_finite() && s >= 0.0 && s < 1e12).then(|| Duration::from_secs_f64(s))
    } else if let Ok(s) = v.cast::<PyString>() {
        humantime::parse_duration(s.to_string().trim()).ok()
    } else if v.hasattr("total_seconds")? {
        let s: f64 = v.call_method0("total_seconds")?.extract()?;
        (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s))
    } else {
        None
    };
    let d = d.ok_or_else(|| {
        Error::new_err(format!(
            "Session: `{key}` must be a duration (seconds, a text such as \"30s\", or a \
             timedelta), not {}",
            v.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    })?;

    Ok(d)
}

fn count(key: &str, v: &Bound<'_, PyAny>) -> PyResult<u32> {
    if v.is_instance_of::<PyBool>() || !v.is_instance_of::<PyInt>() {
        return Err(Error::new_err(format!(
            "Session: `{key}` must be a whole number, not {}",
            v.repr().map(|r| r.to_string()).unwrap_or_default()
        )));
    }
    v.extract().map_err(|_| {
        Error::new_err(format!(
            "Session: `{key}` must be a whole number from 0 to {}",
            u32::MAX
        ))
    })
}

fn text(key: &str, v: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(s.to_string());
    }
    if v.hasattr("__fspath__")? {
        return v.call_method0("__fspath__")?.extract();
    }
    Err(Error::new_err(format!(
        "Session: `{key}` must be a string, not {}",
        v.repr().map(|r| r.to_string()).unwrap_or_default()
    )))
}

const SESSION_KEYS: &[&str] = &[
    "id",
    "coordination",
    "coordination_url",
    "sandbox",
    "prefetch",
    "max_attempts",
    "attempts",
    "heartbeat_timeout",
    "black_hole_failures",
    "agent_start_timeout",
    "poll_interval",
    "locality_wait",
    "agent_binary",
    "keep",
    "claim_wait",
    "heartbeat_interval",
    "kill_grace",
    "drain_margin",
];

/// Sets one keyword argument of `Session(...)`.
fn setting(
    layer: &mut pstar::SettingsLayer,
    id: &mut Option<String>,
    key: &str,
    v: &Bound<'_, PyAny>,
) -> PyResult<()> {
    match key {
        "id" => *id = Some(text(key, v)?),
        "coordination" | "coordination_url" => layer.coordination = Some(text(key, v)?),
        "sandbox" => layer.sandbox = Some(PathBuf::from(text(key, v)?)),
        "prefetch" => layer.prefetch = Some(count(key, v)?),
        "max_attempts" | "attempts" => layer.max_attempts = Some(count(key, v)?),
        "heartbeat_timeout" => layer.heartbeat_timeout = Some(seconds(key, v)?),
        "black_hole_failures" => layer.black_hole_failures = Some(count(key, v)?),
        "agent_start_timeout" => layer.agent_start_timeout = Some(seconds(key, v)?),
        "poll_interval" => layer.poll_interval = Some(seconds(key, v)?),
        "locality_wait" => layer.locality_wait = Some(seconds(key, v)?),
        "agent_binary" => layer.agent_binary = Some(PathBuf::from(text(key, v)?)),
        "keep" => layer.keep = Some(seconds(key, v)?),
        "claim_wait" => layer.claim_wait = Some(seconds(key, v)?),
        "heartbeat_interval" => layer.heartbeat_interval = Some(seconds(key, v)?),
        "kill_grace" => layer.kill_grace = Some(seconds(key, v)?),
        "drain_margin" => layer.drain_margin = Some(seconds(key, v)?),
        other => return Err(crate::describe::unknown("Session", other, SESSION_KEYS)),
    }
    Ok(())
}

#[pymethods]
impl Session {
    #[new]
    #[pyo3(signature = (**kwargs))]
    fn new(py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        Self::open(py, kwargs)
    }

    /// The session's id (`pstar status --session ID` shows it from another terminal, with
    /// Redis).
    #[getter]
    fn id(&self) -> String {
        self.inner().id().to_owned()
    }

    /// The root directory of its pilots' sandboxes.
    #[getter]
    fn sandbox(&self) -> String {
        self.inner().sandbox_root().display().to_string()
    }

    /// The coordination store's URL, its password masked (`None`: embedded in this
    /// process).
    #[getter]
    fn coordination(&self) -> Option<String> {
        self.inner()
            .settings()
            .coordination
            .as_deref()
            .map(pstar_cli::store::shown)
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.state.closed.load(Ordering::Relaxed)
    }

    /// Cancels the pilots of its services and ends the session; its units that still run
    /// are canceled with them.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.state.close(py)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.state.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "Session(id={:?}, coordination={:?})",
            self.inner().id(),
            self.inner()
                .settings()
                .coordination
                .as_deref()
                .map(pstar_cli::store::shown)
                .unwrap_or_else(|| "embedded".into())
        )
    }
}

/// Refuses a service of another session than `mine` (its units would wait for ever).
pub(crate) fn same_session(mine: &Session, theirs: &Session, what: &str) -> PyResult<()> {
    if Arc::ptr_eq(&mine.state, &theirs.state) {
        return Ok(());
    }
    Err(Error::new_err(format!(
        "this {what} is of session {}, not of this service's session {}: create both with \
         the same session (services made without one share the default session)",
        theirs.inner().id(),
        mine.inner().id()
    )))
}

/// The session `session` names, or the default one.
pub(crate) fn or_default(py: Python<'_>, session: Option<Py<Session>>) -> PyResult<Py<Session>> {
    let s = match session {
        Some(s) => s,
        None => default_session(py)?,
    };
    s.get().check_open()?;
    Ok(s)
}
