//! Pilot-Data: `PilotDataService`, `PilotData`, `DataUnit` and `ComputeDataService`.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::pilots::PilotComputeService;
use crate::session::{Session, or_default};
use crate::units::{ComputeUnit, ComputeUnitService};
use crate::{block, error, timed_out, wait_on};

/// Creates pilot stores: the seeds' `PilotDataService`.
#[pyclass(module = "pstar", name = "PilotDataService", frozen)]
pub struct PilotDataService {
    pub(crate) inner: pstar::PilotDataService,
    pub(crate) session: Py<Session>,
}

#[pymethods]
impl PilotDataService {
    #[new]
    #[pyo3(signature = (session=None))]
    fn new(py: Python<'_>, session: Option<Py<Session>>) -> PyResult<Self> {
        let session = or_default(py, session)?;
        let inner = pstar::PilotDataService::new(session.get().inner());
        Ok(Self { inner, session })
    }

    /// Opens (a directory: makes) a pilot store: from a `PilotDataDescription`, a dict of
    /// its keys, or keyword arguments (`create_pilot(name="scratch",
    /// url="file:///tmp/x")`). The store is reached before this returns.
    #[pyo3(signature = (pilot_data_description=None, **kwargs))]
    fn create_pilot(
        &self,
        py: Python<'_>,
        pilot_data_description: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PilotData> {
        self.session.get().check_open()?;
        let d = match (pilot_data_description, kwargs) {
            (Some(d), None) => crate::describe::store_description(d)?,
            (None, Some(kw)) => crate::describe::store_description(kw.as_any())?,
            _ => {
                return Err(crate::DescriptionError::new_err(
                    "create_pilot takes a PilotDataDescription or keyword arguments",
                ));
            }
        };
        let pds = self.inner.clone();
        let store = block(py, async move { pds.create_pilot_data(d).await })?.map_err(error)?;
        Ok(PilotData { inner: store })
    }

    /// `create_pilot`, under the Rust API's name.
    #[pyo3(signature = (pilot_data_description=None, **kwargs))]
    fn create_pilot_data(
        &self,
        py: Python<'_>,
        pilot_data_description: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PilotData> {
        self.create_pilot(py, pilot_data_description, kwargs)
    }

    /// Its stores.
    fn list_pilots(&self) -> Vec<PilotData> {
        self.inner
            .list()
            .into_iter()
            .map(|inner| PilotData { inner })
            .collect()
    }

    /// The store named `name`, if it has one.
    fn get(&self, name: &str) -> Option<PilotData> {
        self.inner.get(name).map(|inner| PilotData { inner })
    }

    fn __repr__(&self) -> String {
        format!("PilotDataService(stores={})", self.inner.list().len())
    }
}

/// A pilot store: the seeds' `PilotData`.
#[pyclass(module = "pstar", name = "PilotData", frozen)]
pub struct PilotData {
    pub(crate) inner: pstar::PilotData,
}

#[pymethods]
impl PilotData {
    /// Its name.
    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_owned()
    }

    /// Its URL (never with credentials).
    #[getter]
    fn url(&self) -> String {
        self.inner.url()
    }

    /// Its quota in bytes (`None`: none).
    #[getter]
    fn size(&self) -> Option<u64> {
        self.inner.size()
    }

    /// Bytes its data units hold.
    #[getter]
    fn used(&self) -> u64 {
        self.inner.used()
    }

    /// Places a data unit (a `DataUnitDescription`, a dict, or keyword arguments) in this
    /// store; returns once its files are there, checked.
    #[pyo3(signature = (data_unit_description=None, **kwargs))]
    fn submit_data_unit(
        &self,
        py: Python<'_>,
        data_unit_description: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<DataUnit> {
        let d = data_unit_arg(data_unit_description, kwargs)?;
        let store = self.inner.clone();
        let du = block(py, async move { store.submit_data_unit(d).await })?.map_err(error)?;
        Ok(DataUnit { inner: du })
    }

    fn __repr__(&self) -> String {
        format!("PilotData(name={:?}, url={:?})", self.name(), self.url())
    }
}

fn data_unit_arg(
    d: Option<&Bound<'_, PyAny>>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<pstar::DataUnitDescription> {
    match (d, kwargs) {
        (Some(d), None) => crate::describe::data_description(d),
        (None, Some(kw)) => crate::describe::data_description(kw.as_any()),
        _ => Err(crate::DescriptionError::new_err(
            "submit_data_unit takes a DataUnitDescription or keyword arguments",
        )),
    }
}

/// A data unit: a named, immutable set of files in one or more stores (the seeds'
/// `DataUnit`).
#[pyclass(module = "pstar", name = "DataUnit", frozen)]
pub struct DataUnit {
    pub(crate) inner: pstar::DataUnit,
}

#[pymethods]
impl DataUnit {
    /// Its name (what compute units name in `input_data`).
    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_owned()
    }

    /// Its state: `done` (a data unit handle is given once its files are in place).
    #[getter(state)]
    fn state_attr(&self) -> &'static str {
        "done"
    }

    /// Its state (the seeds' name).
    fn get_state(&self) -> &'static str {
        "done"
    }

    /// Returns at once: a data unit handle is given once its files are in place.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, timeout: Option<f64>) -> &'static str {
        let _ = timeout;
        "done"
    }

    /// Its files: dicts of `path`, `size` and `sha256`.
    #[getter]
    fn files(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        let list = PyList::empty(py);
        for f in self.inner.files() {
            let d = PyDict::new(py);
            d.set_item("path", &f.path)?;
            d.set_item("size", f.size)?;
            d.set_item("sha256", &f.sha256)?;
            list.append(d)?;
        }
        Ok(list.unbind())
    }

    /// Bytes of all its files.
    #[getter]
    fn size(&self) -> u64 {
        self.inner.size()
    }

    /// The stores (or pilot caches) that hold it.
    #[getter]
    fn stores(&self) -> Vec<String> {
        self.inner
            .replicas()
            .iter()
            .map(|r| r.store.clone())
            .collect()
    }

    /// Copies its files into the local directory `dir` (made if missing), each checked;
    /// returns the bytes copied.
    fn export(&self, py: Python<'_>, dir: PathBuf) -> PyResult<u64> {
        let du = self.inner.clone();
        let (bytes, _) = block(py, async move { du.export(&dir).await })?.map_err(error)?;
        Ok(bytes)
    }

    /// Copies it into `store` too; returns the bytes moved.
    fn replicate(&self, py: Python<'_>, store: &Bound<'_, PilotData>) -> PyResult<u64> {
        let mut du = self.inner.clone();
        let store = store.get().inner.clone();
        block(py, async move { du.replicate(&store).await })?.map_err(error)
    }

    fn __repr__(&self) -> String {
        format!(
            "DataUnit(name={:?}, files={}, size={})",
            self.name(),
            self.inner.files().len(),
            self.size()
        )
    }
}

/// Runs compute units next to their data: the seeds' `ComputeDataService`, accepting
/// both compute units and data units.
#[pyclass(module = "pstar", name = "ComputeDataService", frozen)]
pub struct ComputeDataService {
    units: Py<ComputeUnitService>,
    inner: Mutex<pstar::ComputeDataService>,
    session: Py<Session>,
    pilot_services: Mutex<Vec<pstar::PilotComputeService>>,
    data_added: std::sync::atomic::AtomicBool,
}

impl ComputeDataService {
    fn current(&self) -> PyResult<pstar::ComputeDataService> {
        self.inner
            .lock()
            .map(|c| c.clone())
            .map_err(|_| crate::Error::new_err("pstar: a lock is poisoned"))
    }
}

#[pymethods]
impl ComputeDataService {
    #[new]
    #[pyo3(signature = (session=None, prefetch=None))]
    fn new(py: Python<'_>, session: Option<Py<Session>>, prefetch: Option<u32>) -> PyResult<Self> {
        let session = or_default(py, session)?;
        let units = ComputeUnitService::make(py, session.clone_ref(py), prefetch)?;
        let data = pstar::PilotDataService::new(session.get().inner());
        let inner = pstar::ComputeDataService::new(&units.inner, &data);
        Ok(Self {
            units: Py::new(py, units)?,
            inner: Mutex::new(inner),
            session,
            pilot_services: Mutex::new(Vec::new()),
            data_added: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Lets its units run on the pilots of `pcs` (of the same session).
    fn add_pilot_compute_service(&self, pcs: &Bound<'_, PilotComputeService>) -> PyResult<()> {
        crate::session::same_session(
            self.session.get(),
            pcs.get().session_of(),
            "PilotComputeService",
        )?;
        self.units.get().inner.add_pilot_service(&pcs.get().inner);
        if let Ok(mut all) = self.pilot_services.lock() {
            all.push(pcs.get().inner.clone());
        }
        Ok(())
    }

    /// Lets its data units and outputs go to the stores of `pds` (one PilotDataService,
    /// of the same session, added before anything is submitted).
    fn add_pilot_data_service(&self, pds: &Bound<'_, PilotDataService>) -> PyResult<()> {
        crate::session::same_session(
            self.session.get(),
            pds.get().session.get(),
            "PilotDataService",
        )?;
        if self
            .data_added
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(crate::Error::new_err(
                "this ComputeDataService has its PilotDataService already: create every \
                 pilot store with that one",
            ));
        }
        let cds = pstar::ComputeDataService::new(&self.units.get().inner, &pds.get().inner);
        let mut slot = self
            .inner
            .lock()
            .map_err(|_| crate::Error::new_err("pstar: a lock is poisoned"))?;
        *slot = cds;
        Ok(())
    }

    /// Places a data unit in the store it names (`store`), or the first store.
    #[pyo3(signature = (data_unit_description=None, **kwargs))]
    fn submit_data_unit(
        &self,
        py: Python<'_>,
        data_unit_description: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<DataUnit> {
        self.session.get().check_open()?;
        let d = data_unit_arg(data_unit_description, kwargs)?;
        let cds = self.current()?;
        let du = block(py, async move { cds.submit_data_unit(d).await })?.map_err(error)?;
        Ok(DataUnit { inner: du })
    }

    /// Submits a compute unit that may read (`input_data`) and make (`output_data`) data
    /// units.
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
            _ => {
                return Err(crate::DescriptionError::new_err(
                    "submit_compute_unit takes a description or keyword arguments",
                ));
            }
        };
        let mut units = self.submit(py, vec![d])?;
        let inner = units
            .pop()
            .ok_or_else(|| crate::Error::new_err("pstar: a submission returned no unit"))?;
        Ok(ComputeUnit::new(inner, self.session.get()))
    }

    /// Submits many compute units at once; returns their handles in order.
    fn submit_compute_units(
        &self,
        py: Python<'_>,
        descriptions: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyList>> {
        let ds = crate::units::collect_descriptions(py, descriptions, self.session.get())?;
        let units = self.submit(py, ds)?;
        let list = PyList::empty(py);
        for u in units {
            list.append(Py::new(py, ComputeUnit::new(u, self.session.get()))?)?;
        }
        Ok(list.unbind())
    }

    /// A data unit of the session by name (placed, or made by a unit), if it exists.
    fn get_data_unit(&self, py: Python<'_>, name: String) -> PyResult<Option<DataUnit>> {
        let cds = self.current()?;
        let du = block(py, async move { cds.data_unit(&name).await })?.map_err(error)?;
        Ok(du.map(|inner| DataUnit { inner }))
    }

    /// Its compute unit service (for what only it has: `submit_function`, say).
    #[getter]
    fn units(&self, py: Python<'_>) -> Py<ComputeUnitService> {
        self.units.clone_ref(py)
    }

    /// Its session.
    #[getter]
    fn session(&self, py: Python<'_>) -> Py<Session> {
        self.session.clone_ref(py)
    }

    /// `add_pilot_compute_service`, the seeds' short name.
    fn add(&self, pcs: &Bound<'_, PilotComputeService>) -> PyResult<()> {
        self.add_pilot_compute_service(pcs)
    }

    /// Waits until every compute unit submitted here has ended (units left when every
    /// pilot has ended are canceled, as `ComputeUnitService.wait` does).
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let cus = self.units.get().inner.clone();
        let services = self
            .pilot_services
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let session = self.session.get().inner().clone();
        wait_on(
            py,
            timeout,
            crate::units::wait_or_cancel_stranded(cus, services, session),
        )?
        .ok_or_else(|| timed_out("the units", timeout))?
        .map_err(crate::Error::new_err)
    }

    /// Cancels every compute unit submitted here that has not ended.
    fn cancel(&self) {
        self.units.get().inner.cancel();
    }

    /// Its compute units.
    fn get_compute_units(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        let list = PyList::empty(py);
        for u in self.units.get().inner.units() {
            list.append(Py::new(py, ComputeUnit::new(u, self.session.get()))?)?;
        }
        Ok(list.unbind())
    }

    fn __repr__(&self) -> String {
        format!(
            "ComputeDataService(units={})",
            self.units.get().inner.units_submitted()
        )
    }
}

impl ComputeDataService {
    fn submit(
        &self,
        py: Python<'_>,
        ds: Vec<pstar::ComputeUnitDescription>,
    ) -> PyResult<Vec<pstar::ComputeUnit>> {
        self.session.get().check_open()?;
        let cds = self.current()?;
        block(py, async move { cds.submit_compute_units(ds).await })?.map_err(error)
    }
}
