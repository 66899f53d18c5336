//! `PilotComputeService` and `PilotCompute`.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use pstar::State;

use crate::session::{Session, or_default};
use crate::{block, error, timed_out, wait_on};

impl PilotComputeService {
    pub(crate) fn session_of(&self) -> &Session {
        self.session.get()
    }

    fn handle(&self, inner: pstar::PilotCompute) -> PilotCompute {
        PilotCompute {
            inner,
            session: self.session.get().sid().clone(),
        }
    }
}

/// Creates pilots on resources: the seeds' `PilotComputeService`.
///
/// `PilotComputeService()` uses the default session; `PilotComputeService(session)` or
/// `PilotComputeService(coordination_url="redis://...")` (a new session over that store).
#[pyclass(module = "pstar", name = "PilotComputeService", frozen)]
pub struct PilotComputeService {
    pub(crate) inner: pstar::PilotComputeService,
    session: Py<Session>,
}

#[pymethods]
impl PilotComputeService {
    #[new]
    #[pyo3(signature = (session=None, coordination_url=None))]
    fn new(
        py: Python<'_>,
        session: Option<Py<Session>>,
        coordination_url: Option<String>,
    ) -> PyResult<Self> {
        let session = match (session, coordination_url) {
            (Some(s), _) => or_default(py, Some(s))?,
            (None, Some(url)) => {
                let kwargs = PyDict::new(py);
                kwargs.set_item("coordination", url)?;
                let cls = py.get_type::<Session>();
                cls.call((), Some(&kwargs))?.extract::<Py<Session>>()?
            }
            (None, None) => or_default(py, None)?,
        };
        let inner = pstar::PilotComputeService::new(session.get().inner());
        session.get().keep(&inner);
        Ok(Self { inner, session })
    }

    /// Creates a pilot: from a `PilotComputeDescription`, a dict of its keys, or keyword
    /// arguments (`create_pilot(cores=2, walltime=10)`). Returns once it is submitted to
    /// its resource; `wait()` on it, or just submit units.
    #[pyo3(signature = (pilot_compute_description=None, **kwargs))]
    fn create_pilot(
        &self,
        py: Python<'_>,
        pilot_compute_description: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PilotCompute> {
        self.session.get().check_open()?;
        let python = crate::session::default_python();
        let description = match (pilot_compute_description, kwargs) {
            (Some(d), None) => crate::describe::pilot_description(d, python.as_deref())?,
            (None, Some(kw)) => crate::describe::pilot_from_kwargs(kw, python.as_deref())?,
            (None, None) => {
                crate::describe::pilot_from_kwargs(&PyDict::new(py), python.as_deref())?
            }
            (Some(_), Some(_)) => {
                return Err(crate::DescriptionError::new_err(
                    "create_pilot takes a description or keyword arguments, not both",
                ));
            }
        };
        let pcs = self.inner.clone();
        let pilot =
            block(py, async move { pcs.create_pilot(description).await })?.map_err(error)?;
        Ok(self.handle(pilot))
    }

    /// Its pilots.
    fn list_pilots(&self) -> Vec<PilotCompute> {
        self.inner
            .pilots()
            .into_iter()
            .map(|inner| self.handle(inner))
            .collect()
    }

    /// Its pilots.
    #[getter]
    fn pilots(&self) -> Vec<PilotCompute> {
        self.list_pilots()
    }

    /// Its session.
    #[getter]
    fn session(&self, py: Python<'_>) -> Py<Session> {
        self.session.clone_ref(py)
    }

    /// Waits until every pilot has ended (`timeout` in seconds: `TimeoutError`).
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let pcs = self.inner.clone();
        wait_on(py, timeout, async move { pcs.wait().await })?
            .ok_or_else(|| timed_out("the pilots", timeout))
    }

    /// Cancels every pilot; returns once they have ended. Their running units go back to
    /// the pool (for other pilots) and are canceled with the session.
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        let pcs = self.inner.clone();
        block(py, async move { pcs.cancel().await })
    }

    fn __repr__(&self) -> String {
        format!(
            "PilotComputeService(session={:?}, pilots={})",
            self.session.get().inner().id(),
            self.inner.pilots().len()
        )
    }
}

/// A pilot: the seeds' `PilotCompute`.
#[pyclass(module = "pstar", name = "PilotCompute", frozen)]
pub struct PilotCompute {
    pub(crate) inner: pstar::PilotCompute,
    pub(crate) session: std::sync::Arc<str>,
}

#[pymethods]
impl PilotCompute {
    /// Its id, e.g. `pilot.0000`.
    #[getter]
    fn id(&self) -> String {
        self.inner.id().to_string()
    }

    /// Its state: `new`, `pending`, `running`, `done`, `failed` or `canceled`.
    #[getter(state)]
    fn state_attr(&self) -> &'static str {
        self.inner.state().as_str()
    }

    /// Its state (the seeds' name).
    /// (A `str` that equals the state in any case: `"done"` and the seeds' `"Done"`.)
    fn get_state(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        crate::state_name(py, self.state_attr())
    }

    /// Why it is in its state (why it failed, say).
    #[getter]
    fn detail(&self) -> Option<String> {
        self.inner.detail()
    }

    /// Its job's id at the resource (the Slurm job id, say).
    #[getter]
    fn job_id(&self) -> Option<String> {
        self.inner.job_id()
    }

    /// Its sandbox directory (on its host).
    #[getter]
    fn sandbox(&self) -> String {
        self.inner.sandbox().display().to_string()
    }

    /// Its resource's URL.
    #[getter]
    fn resource(&self) -> String {
        self.inner.description().resource.as_str().to_owned()
    }

    /// Cores it holds.
    #[getter]
    fn cores(&self) -> u32 {
        self.inner.description().cores
    }

    /// Its states so far, with when each began (seconds since the epoch).
    #[getter]
    fn history(&self) -> Vec<(&'static str, f64)> {
        crate::history(self.inner.history())
    }

    /// Its details, as the seeds' `get_details()`: a dict of its state and description.
    fn get_details(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let d = PyDict::new(py);
        d.set_item("id", self.id())?;
        d.set_item("state", self.state_attr())?;
        d.set_item("detail", self.detail())?;
        d.set_item("job_id", self.job_id())?;
        d.set_item("resource", self.resource())?;
        d.set_item("cores", self.cores())?;
        d.set_item("sandbox", self.sandbox())?;
        Ok(d.into_any().unbind())
    }

    /// Waits until it has ended, or is in `state` if given; returns its state then
    /// (`timeout` in seconds: `TimeoutError`).
    #[pyo3(signature = (state=None, timeout=None))]
    fn wait(
        &self,
        py: Python<'_>,
        state: Option<&str>,
        timeout: Option<f64>,
    ) -> PyResult<&'static str> {
        let pilot = self.inner.clone();
        let target = match state {
            None => None,
            Some(s) => Some(parse_state(s)?),
        };
        let ended = wait_on(py, timeout, async move {
            match target {
                Some(t) => pilot.wait_for(t).await,
                None => pilot.wait().await,
            }
        })?;
        ended
            .map(|s| s.as_str())
            .ok_or_else(|| timed_out(&format!("pilot {}", self.inner.id()), timeout))
    }

    /// Cancels it; returns once it has ended.
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        let pilot = self.inner.clone();
        block(py, async move { pilot.cancel().await })
    }

    /// Calls `callback(pilot, state)` (on the `pstar-notify` thread) at each later change.
    fn on_state_change(slf: &Bound<'_, Self>, callback: Py<PyAny>) -> PyResult<()> {
        crate::notify::check_callable(slf.py(), &callback)?;
        crate::notify::watch_pilot(
            slf.py(),
            &slf.get().session,
            &slf.get().inner,
            slf.as_any(),
            callback,
        )
    }

    /// `on_state_change` under the seeds' name.
    fn register_callback(slf: &Bound<'_, Self>, callback: Py<PyAny>) -> PyResult<()> {
        Self::on_state_change(slf, callback)
    }

    fn __repr__(&self) -> String {
        format!(
            "PilotCompute(id={:?}, state={:?}, resource={:?})",
            self.id(),
            self.state_attr(),
            self.resource()
        )
    }
}

fn parse_state(s: &str) -> PyResult<pstar::PilotState> {
    use pstar::PilotState::*;
    [New, Pending, Running, Done, Failed, Canceled]
        .into_iter()
        .find(|st| st.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            crate::Error::new_err(format!(
                "no pilot state {s:?} (new, pending, running, done, failed, canceled)"
            ))
        })
}
