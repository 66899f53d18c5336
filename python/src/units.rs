//! `ComputeUnitService` and `ComputeUnit`.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use pstar::State;

use crate::pilots::PilotComputeService;
use crate::session::{Session, or_default};
use crate::{block, error, timed_out, wait_on};

/// Runs compute units on the pilots of the services added to it: the seeds'
/// `ComputeUnitService`. `ComputeUnitService()` uses the default session.
#[pyclass(module = "pstar", name = "ComputeUnitService", frozen)]
pub struct ComputeUnitService {
    pub(crate) inner: pstar::ComputeUnitService,
    session: Py<Session>,
    /// The pilot services added to it (a wait ends when all their pilots have).
    pilot_services: std::sync::Mutex<Vec<pstar::PilotComputeService>>,
}

impl ComputeUnitService {
    pub(crate) fn make(
        py: Python<'_>,
        session: Py<Session>,
        prefetch: Option<u32>,
    ) -> PyResult<Self> {
        let s = session.get();
        let mut policy = pstar::UnitPolicy::from(s.inner().settings());
        if let Some(p) = prefetch {
            policy.prefetch = p;
        }
        let _ = py;
        let inner = pstar::ComputeUnitService::with_policy(s.inner(), policy);
        s.keep_units(&inner);
        Ok(Self {
            inner,
            session,
            pilot_services: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Submits Rust descriptions; the handles as Python objects.
    pub(crate) fn submit_all(
        &self,
        py: Python<'_>,
        descriptions: Vec<pstar::ComputeUnitDescription>,
    ) -> PyResult<Vec<pstar::ComputeUnit>> {
        self.session.get().check_open()?;
        let cus = self.inner.clone();
        let units =
            block(py, async move { cus.submit_batch(descriptions).await })?.map_err(error)?;
        // Closed meanwhile (by another thread): what landed after the close's cancel is
        // canceled too, not left in the pool.
        if self
            .session
            .get()
            .state
            .closed
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            self.inner.cancel_units(
                units.iter().map(|u| u.id()).collect(),
                "its session was closed",
            );
        }
        Ok(units)
    }
}

/// Waits for every unit of `cus`; if every pilot of `services` ends first (there was
/// one), cancels the units left (nothing will run them) and waits for that.
pub(crate) async fn wait_or_cancel_stranded(
    cus: pstar::ComputeUnitService,
    services: Vec<pstar::PilotComputeService>,
    session: pstar::Session,
) -> Result<(), String> {
    tokio::select! {
        _ = wait_or_cancel(cus, services) => Ok(()),
        reason = session.lost() => Err(format!(
            "the units cannot end: the session's coordination store was lost: {reason}"
        )),
    }
}

async fn wait_or_cancel(cus: pstar::ComputeUnitService, services: Vec<pstar::PilotComputeService>) {
    let pilots_ended = async {
        loop {
            let pilots: Vec<_> = services.iter().flat_map(|s| s.pilots()).collect();
            if !pilots.is_empty() && pilots.iter().all(|p| p.state().is_final()) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = cus.wait() => return,
        _ = pilots_ended => {}
    }
    cus.cancel_stranded();
    cus.wait().await;
}

/// Descriptions from a list (or any iterable) of descriptions or dicts.
pub(crate) fn collect_descriptions(
    py: Python<'_>,
    items: &Bound<'_, PyAny>,
    session: &Session,
) -> PyResult<Vec<pstar::ComputeUnitDescription>> {
    let by = crate::describe::Submitter::new(session);
    let mut out = Vec::with_capacity(items.len().unwrap_or(0));
    for (i, item) in items.try_iter()?.enumerate() {
        let item = item?;
        out.push(
            crate::describe::unit_description(py, &item, &by).map_err(|e| {
                // Which one, in a batch.
                let msg = e.value(py).str().map(|s| s.to_string()).unwrap_or_default();
                let key = e.value(py).getattr("key").ok();
                let err = crate::DescriptionError::new_err(format!("unit {i} of the batch: {msg}"));
                if let Some(key) = key {
                    let _ = err.value(py).setattr("key", key);
                }
                err
            })?,
        );
    }
    Ok(out)
}

pub(crate) fn handles(
    py: Python<'_>,
    session: &Session,
    units: Vec<pstar::ComputeUnit>,
) -> PyResult<Py<PyList>> {
    let list = PyList::empty(py);
    for u in units {
        list.append(Py::new(py, ComputeUnit::new(u, session))?)?;
    }
    Ok(list.unbind())
}

#[pymethods]
impl ComputeUnitService {
    #[new]
    #[pyo3(signature = (session=None, prefetch=None))]
    fn new(py: Python<'_>, session: Option<Py<Session>>, prefetch: Option<u32>) -> PyResult<Self> {
        let session = or_default(py, session)?;
        Self::make(py, session, prefetch)
    }

    /// Lets its units run on the pilots of `pcs` (those it has and will have); `pcs`
    /// must be of the same session.
    fn add_pilot_compute_service(&self, pcs: &Bound<'_, PilotComputeService>) -> PyResult<()> {
        crate::session::same_session(
            self.session.get(),
            pcs.get().session_of(),
            "PilotComputeService",
        )?;
        self.inner.add_pilot_service(&pcs.get().inner);
        if let Ok(mut all) = self.pilot_services.lock() {
            all.push(pcs.get().inner.clone());
        }
        Ok(())
    }

    /// `add_pilot_compute_service`, the seeds' short name.
    fn add(&self, pcs: &Bound<'_, PilotComputeService>) -> PyResult<()> {
        self.add_pilot_compute_service(pcs)
    }

    /// Its units no longer go to the pilots of `pcs`.
    fn remove_pilot_compute_service(
        &self,
        py: Python<'_>,
        pcs: &Bound<'_, PilotComputeService>,
    ) -> PyResult<()> {
        let cus = self.inner.clone();
        let pcs = pcs.get().inner.clone();
        block(py, async move { cus.remove_pilot_service(&pcs).await })
    }

    /// `remove_pilot_compute_service`, the seeds' short name.
    fn remove(&self, py: Python<'_>, pcs: &Bound<'_, PilotComputeService>) -> PyResult<()> {
        self.remove_pilot_compute_service(py, pcs)
    }

    /// Submits one unit: a `ComputeUnitDescription`, a dict of its keys, or keyword
    /// arguments (`submit_compute_unit(executable="/bin/date")`).
    #[pyo3(signature = (compute_unit_description=None, **kwargs))]
    fn submit_compute_unit(
        &self,
        py: Python<'_>,
        compute_unit_description: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<ComputeUnit> {
        let by = crate::describe::Submitter::new(self.session.get());
        let d = match (compute_unit_description, kwargs) {
            (Some(d), None) => crate::describe::unit_description(py, d, &by)?,
            (None, Some(kw)) => crate::describe::unit_description(py, kw.as_any(), &by)?,
            (None, None) => crate::describe::unit_description(py, PyDict::new(py).as_any(), &by)?,
            (Some(_), Some(_)) => {
                return Err(crate::DescriptionError::new_err(
                    "submit_compute_unit takes a description or keyword arguments, not both",
                ));
            }
        };
        let mut units = self.submit_all(py, vec![d])?;
        let inner = units
            .pop()
            .ok_or_else(|| crate::Error::new_err("pstar: a submission returned no unit"))?;
        Ok(ComputeUnit::new(inner, self.session.get()))
    }

    /// `submit_compute_unit`, the seeds' short name.
    #[pyo3(signature = (compute_unit_description=None, **kwargs))]
    fn submit(
        &self,
        py: Python<'_>,
        compute_unit_description: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<ComputeUnit> {
        self.submit_compute_unit(py, compute_unit_description, kwargs)
    }

    /// Submits many units at once (descriptions or dicts); returns their handles, in
    /// order. Nothing is submitted if one of them is refused.
    fn submit_compute_units(
        &self,
        py: Python<'_>,
        descriptions: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyList>> {
        let ds = collect_descriptions(py, descriptions, self.session.get())?;
        let units = self.submit_all(py, ds)?;
        handles(py, self.session.get(), units)
    }

    /// Runs `function(*args, **kwargs)` on a pilot, in one of its Python workers; the
    /// unit's `result()` (or `future()`) is what it returns, or raises what it raised.
    /// (To give the unit other keys, cores or `after` say, submit a
    /// `ComputeUnitDescription(function=..., args=..., kwargs=...)`.)
    #[pyo3(signature = (function, /, *args, **kwargs))]
    fn submit_function(
        &self,
        py: Python<'_>,
        function: Py<PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<ComputeUnit> {
        if !function.bind(py).is_callable() {
            return Err(crate::DescriptionError::new_err(format!(
                "submit_function: {} is not callable",
                function.bind(py).repr()?
            )));
        }
        let d = crate::describe::ComputeUnitDescription::of_function(
            function,
            args.clone().into_any().unbind(),
            kwargs.map(|k| k.clone().into_any().unbind()),
        );
        let d = d.to_rust(py, &crate::describe::Submitter::new(self.session.get()))?;
        let mut units = self.submit_all(py, vec![d])?;
        let inner = units
            .pop()
            .ok_or_else(|| crate::Error::new_err("pstar: a submission returned no unit"))?;
        Ok(ComputeUnit::new(inner, self.session.get()))
    }

    /// Waits until every unit submitted here has ended (`timeout` in seconds:
    /// `TimeoutError`). When every pilot of its pilot services has ended with units left,
    /// nothing can run those: they are canceled, saying why, as `pstar run` does.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let cus = self.inner.clone();
        let services = self
            .pilot_services
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let no_pilots = services.is_empty();
        let session = self.session.get().inner().clone();
        wait_on(py, timeout, wait_or_cancel_stranded(cus, services, session))?
            .ok_or_else(|| match no_pilots {
                true => timed_out(
                    "the units (this service has no pilots: add a PilotComputeService with \
                     cus.add(pcs))",
                    timeout,
                ),
                false => timed_out("the units", timeout),
            })?
            .map_err(crate::Error::new_err)
    }

    /// Cancels every unit submitted here that has not ended.
    fn cancel(&self) {
        self.inner.cancel();
    }

    /// Its units, in the order they were submitted.
    fn get_compute_units(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        handles(py, self.session.get(), self.inner.units())
    }

    /// Its units.
    #[getter]
    fn units(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        self.get_compute_units(py)
    }

    /// Its session.
    #[getter]
    fn session(&self, py: Python<'_>) -> Py<Session> {
        self.session.clone_ref(py)
    }

    fn __repr__(&self) -> String {
        format!(
            "ComputeUnitService(session={:?}, units={})",
            self.session.get().inner().id(),
            self.inner.units_submitted()
        )
    }
}

/// A submitted unit: the seeds' `ComputeUnit`. `await unit` in asyncio, or
/// `unit.future()`, gives its result.
#[pyclass(module = "pstar", name = "ComputeUnit", frozen)]
pub struct ComputeUnit {
    pub(crate) inner: pstar::ComputeUnit,
    session: Arc<str>,
    /// Its session, whose loss ends a wait on it.
    store: pstar::Session,
}

impl ComputeUnit {
    fn process_path(&self, p: Option<std::path::PathBuf>) -> Option<String> {
        match self.inner.description().function {
            Some(_) => None,
            None => p.map(|p| p.display().to_string()),
        }
    }

    /// Its session's id.
    pub(crate) fn session(&self) -> &Arc<str> {
        &self.session
    }

    pub(crate) fn new(inner: pstar::ComputeUnit, session: &Session) -> Self {
        Self {
            inner,
            session: session.sid().clone(),
            store: session.inner().clone(),
        }
    }

    fn final_state(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<pstar::UnitState> {
        if let Some(t) = timeout
            && !(t >= 0.0 && t.is_finite())
        {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "timeout must be a number of seconds >= 0, not {t}"
            )));
        }
        let state = self.inner.state();
        if state.is_final() {
            return Ok(state);
        }
        let unit = self.inner.clone();
        let session = self.store.clone();
        wait_on(py, timeout, async move {
            tokio::select! {
                state = unit.wait() => Ok(state),
                reason = session.lost() => Err(reason),
            }
        })?
        .ok_or_else(|| timed_out(&format!("unit {}", self.inner.id()), timeout))?
        .map_err(|reason| {
            crate::Error::new_err(format!(
                "unit {} cannot end: the session's coordination store was lost: {reason}",
                self.inner.id()
            ))
        })
    }
}

#[pymethods]
impl ComputeUnit {
    /// Its id, e.g. `unit.000003`.
    #[getter]
    fn id(&self) -> String {
        self.inner.id().to_string()
    }

    /// Its name (or its executable's, or its function's).
    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_owned()
    }

    /// Its state: `new`, `waiting`, `scheduled`, `staging_input`, `pending`, `running`,
    /// `staging_output`, `done`, `failed` or `canceled`.
    #[getter(state)]
    fn state_attr(&self) -> &'static str {
        self.inner.state().as_str()
    }

    /// Its state (the seeds' name).
    /// (A `str` that equals the state in any case: `"done"` and the seeds' `"Done"`.)
    fn get_state(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        crate::state_name(py, self.state_attr())
    }

    /// Its exit code, once its process has ended.
    #[getter]
    fn exit_code(&self) -> Option<i32> {
        self.inner.exit_code()
    }

    /// Why it is in its state (why it failed, say).
    #[getter]
    fn detail(&self) -> Option<String> {
        self.inner.detail()
    }

    /// The pilot it is (or was last) bound to.
    #[getter]
    fn pilot(&self) -> Option<String> {
        self.inner.pilot().map(|p| p.to_string())
    }

    /// Its sandbox directory, once bound to a pilot (`None` for a function unit: it runs
    /// in a worker, in the pilot's sandbox).
    #[getter]
    fn sandbox(&self) -> Option<String> {
        self.process_path(self.inner.sandbox())
    }

    /// The file of its standard output, once bound to a pilot (`None` for a function
    /// unit: what functions print goes to `<pilot sandbox>/python-workers.log`).
    #[getter]
    fn stdout(&self) -> Option<String> {
        self.process_path(self.inner.stdout())
    }

    /// The file of its standard error, once bound to a pilot (`None` for a function
    /// unit).
    #[getter]
    fn stderr(&self) -> Option<String> {
        self.process_path(self.inner.stderr())
    }

    /// The seeds' `get_details()`: a dict of its id, name, state, exit code, detail,
    /// pilot and output files.
    fn get_details(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let d = PyDict::new(py);
        d.set_item("id", self.id())?;
        d.set_item("name", self.name())?;
        d.set_item("state", self.state_attr())?;
        d.set_item("exit_code", self.exit_code())?;
        d.set_item("detail", self.detail())?;
        d.set_item("pilot", self.pilot())?;
        d.set_item("stdout", self.stdout())?;
        d.set_item("stderr", self.stderr())?;
        Ok(d.into_any().unbind())
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<ComputeUnit>()
            .is_ok_and(|o| o.get().session == self.session && o.get().inner.id() == self.inner.id())
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&*self.session, self.inner.id().to_string()).hash(&mut h);
        h.finish()
    }

    /// Whether it runs a Python function (not a program).
    #[getter]
    fn is_function(&self) -> bool {
        self.inner.description().function.is_some()
    }

    /// Its states so far, with when each began (seconds since the epoch).
    #[getter]
    fn history(&self) -> Vec<(&'static str, f64)> {
        crate::history(self.inner.history())
    }

    /// Its runs: dicts of `pilot`, `started`, `ended`, `end`, `exit_code`, `detail`.
    #[getter]
    fn attempts(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        let list = PyList::empty(py);
        for a in self.inner.attempts() {
            let d = PyDict::new(py);
            d.set_item("pilot", a.pilot.map(|p| p.to_string()))?;
            d.set_item("started", a.started.as_secs_f64())?;
            d.set_item("ended", a.ended.map(|t| t.as_secs_f64()))?;
            d.set_item("end", a.end.map(|e| e.as_str()))?;
            d.set_item("exit_code", a.exit_code)?;
            d.set_item("detail", a.detail)?;
            list.append(d)?;
        }
        Ok(list.unbind())
    }

    /// A function unit's pickled answer (what it returned or raised), once it has ended.
    fn _answer<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.inner.answer().map(|a| PyBytes::new(py, &a))
    }

    /// Waits until it has ended; returns its final state (`timeout` in seconds:
    /// `TimeoutError`). Ctrl-C interrupts the wait (not the unit).
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<&'static str> {
        Ok(self.final_state(py, timeout)?.as_str())
    }

    /// Cancels it: out of the pool, or its process (or call) stopped.
    fn cancel(&self) {
        self.inner.cancel();
    }

    /// Waits for its end and gives its result: what a function unit returned (or raises
    /// what it raised, with the remote traceback), a program's exit code 0; raises
    /// `pstar.UnitFailed` if it failed, `concurrent.futures.CancelledError` if canceled.
    #[pyo3(signature = (timeout=None))]
    fn result(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        slf.get().final_state(py, timeout)?;
        Ok(py
            .import("pstar._glue")?
            .call_method1("outcome", (slf,))?
            .unbind())
    }

    /// A `concurrent.futures.Future` of its `result()`; canceling the future cancels the
    /// unit.
    fn future(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let fut = py
            .import("pstar._glue")?
            .call_method1("new_future", (slf,))?;
        crate::notify::watch_unit(
            py,
            &slf.get().session,
            &slf.get().inner,
            slf.as_any(),
            None,
            Some(fut.clone().unbind()),
        )?;
        Ok(fut.unbind())
    }

    /// `await unit`: its `result()`, in asyncio.
    fn __await__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let fut = Self::future(slf)?;
        let wrapped = py.import("asyncio")?.call_method1("wrap_future", (fut,))?;
        Ok(wrapped.call_method0("__await__")?.unbind())
    }

    /// Calls `callback(unit, state)` (on the `pstar-notify` thread) at each later change.
    fn on_state_change(slf: &Bound<'_, Self>, callback: Py<PyAny>) -> PyResult<()> {
        crate::notify::check_callable(slf.py(), &callback)?;
        crate::notify::watch_unit(
            slf.py(),
            &slf.get().session,
            &slf.get().inner,
            slf.as_any(),
            Some(callback),
            None,
        )
    }

    /// `on_state_change` under the seeds' name.
    fn register_callback(slf: &Bound<'_, Self>, callback: Py<PyAny>) -> PyResult<()> {
        Self::on_state_change(slf, callback)
    }

    fn __repr__(&self) -> String {
        format!(
            "ComputeUnit(id={:?}, name={:?}, state={:?})",
            self.id(),
            self.name(),
            self.state_attr()
        )
    }
}
