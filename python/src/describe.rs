//! The descriptions: Python objects with attributes, made from keyword arguments or a
//! dict, over the Rust descriptions of `pstar-model`.
//!
//! Each key has pstar's name and, where the seeds' Pilot-API says it otherwise, the seeds'
//! name too (`total_core_count` for `cores`, `service_url` for `resource`...). A key that
//! is not one, or a value of the wrong type, raises `pstar.DescriptionError` naming the key
//! (its `key` attribute) and what was expected; whether the description can run at all is
//! checked by pstar itself when it is submitted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::DescriptionError;

/// The error for `key` of `what`: `expected`, and what was given.
fn wrong(what: &str, key: &str, expected: &str, v: &Bound<'_, PyAny>) -> PyErr {
    let given = v
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into());
    let shown = v
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "?".into());
    let shown: String = shown.chars().take(80).collect();
    keyed(
        key,
        format!("{what}: `{key}` must be {expected}, not {given} {shown}"),
    )
}

/// A `DescriptionError` whose `key` attribute is `key`.
pub(crate) fn keyed(key: &str, message: String) -> PyErr {
    let err = DescriptionError::new_err(message);
    Python::attach(|py| {
        let _ = err.value(py).setattr("key", key);
    });
    err
}

/// The error for a key `what` does not have, with the nearest key it has.
pub(crate) fn unknown(what: &str, key: &str, keys: &[&str]) -> PyErr {
    // Other tools' names for cores first, then the nearest key, then a key that begins
    // with what was written (`retry` for `retries`).
    let synonym = [
        "cpus",
        "cpu",
        "ncpus",
        "ncores",
        "num_cores",
        "nprocs",
        "processes",
    ]
    .contains(&key)
    .then_some("cores")
    .filter(|c| keys.contains(c));
    let nearest = keys
        .iter()
        .map(|k| (distance(key, k), *k))
        .min()
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .map(|(_, k)| k);
    let prefix = keys
        .iter()
        .copied()
        .find(|k| key.len() >= 3 && k.starts_with(key));
    let near = synonym
        .or(nearest)
        .or(prefix)
        .map(|k| format!("; did you mean `{k}`?"))
        .unwrap_or_default();
    keyed(
        key,
        format!(
            "{what} has no key `{key}`{near} (its keys: {})",
            keys.join(", ")
        ),
    )
}

/// Edit distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(prev + usize::from(ca != *cb));
            prev = cur;
        }
    }
    row[b.len()]
}

fn int(what: &str, key: &str, v: &Bound<'_, PyAny>, min: u64, max: u64) -> PyResult<u64> {
    let expected = format!("a whole number from {min} to {max}");
    if v.is_instance_of::<PyBool>() || !v.is_instance_of::<PyInt>() {
        return Err(wrong(what, key, &expected, v));
    }
    match v.extract::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(wrong(what, key, &expected, v)),
    }
}

fn small(what: &str, key: &str, v: &Bound<'_, PyAny>, min: u32) -> PyResult<u32> {
    Ok(int(what, key, v, u64::from(min), u64::from(u32::MAX))? as u32)
}

fn string(what: &str, key: &str, v: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = v.cast::<PyString>() {
        // Its value (a `str` subclass's own `__str__` is not asked), as UTF-8: a lone
        // surrogate is refused, not replaced.
        return s
            .extract::<String>()
            .map_err(|e| keyed(key, format!("{what}: `{key}` is not valid text: {e}")));
    }
    // Paths (pathlib) are strings here too.
    if v.hasattr("__fspath__")? {
        let p = v.call_method0("__fspath__")?;
        if let Ok(s) = p.cast::<PyString>() {
            return Ok(s.to_string());
        }
    }
    Err(wrong(what, key, "a string", v))
}

fn opt_string(what: &str, key: &str, v: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    if v.is_none() {
        return Ok(None);
    }
    string(what, key, v).map(Some)
}

/// A list (or tuple) of strings; numbers are written as Python writes them (`arguments`).
fn strings(
    what: &str,
    key: &str,
    v: &Bound<'_, PyAny>,
    numbers_too: bool,
) -> PyResult<Vec<String>> {
    let expected = if numbers_too {
        "a list of strings (or numbers)"
    } else {
        "a list of strings"
    };
    if v.is_instance_of::<PyString>() {
        return Err(keyed(
            key,
            format!(
                "{what}: `{key}` must be {expected}, not a string: write [{}]",
                v.repr().map(|r| r.to_string()).unwrap_or_default()
            ),
        ));
    }
    if !(v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>()) {
        return Err(wrong(what, key, expected, v));
    }
    let mut out = Vec::new();
    for item in v.try_iter()? {
        let item = item?;
        if numbers_too
            && !item.is_instance_of::<PyBool>()
            && (item.is_instance_of::<PyInt>() || item.is_instance_of::<PyFloat>())
        {
            out.push(item.str()?.to_string());
            continue;
        }
        out.push(string(what, key, &item).map_err(|_| wrong(what, key, expected, &item))?);
    }
    Ok(out)
}

fn environment(what: &str, key: &str, v: &Bound<'_, PyAny>) -> PyResult<BTreeMap<String, String>> {
    let Ok(d) = v.cast::<PyDict>() else {
        return Err(wrong(what, key, "a dict of strings to strings", v));
    };
    let mut out = BTreeMap::new();
    for (k, val) in d.iter() {
        let k = string(what, key, &k)
            .map_err(|_| wrong(what, key, "a dict of strings to strings", &k))?;
        let val = match val.is_instance_of::<PyBool>() {
            false if val.is_instance_of::<PyInt>() || val.is_instance_of::<PyFloat>() => {
                val.str()?.to_string()
            }
            _ => string(what, key, &val)
                .map_err(|_| wrong(what, key, "a dict of strings to strings", &val))?,
        };
        out.insert(k, val);
    }
    Ok(out)
}

fn boolean(what: &str, key: &str, v: &Bound<'_, PyAny>) -> PyResult<bool> {
    if v.is_instance_of::<PyBool>() {
        return v.extract();
    }
    Err(wrong(what, key, "True or False", v))
}

/// A duration: a number of `unit` (seconds, or minutes for a pilot's walltime as in the
/// seeds), a text such as `"30m"`, or a `datetime.timedelta`.
fn duration(what: &str, key: &str, v: &Bound<'_, PyAny>, unit: f64) -> PyResult<Duration> {
    let unit_name = if unit == 60.0 { "minutes" } else { "seconds" };
    let expected = format!(
        "a duration: a number of {unit_name}, a text such as \"30m\", or a datetime.timedelta"
    );
    let seconds = if v.is_instance_of::<PyBool>() {
        return Err(wrong(what, key, &expected, v));
    } else if v.is_instance_of::<PyInt>() || v.is_instance_of::<PyFloat>() {
        v.extract::<f64>()? * unit
    } else if let Ok(s) = v.cast::<PyString>() {
        let text = s.to_string();
        if let Some(d) = clock(text.trim()) {
            return Ok(d);
        }
        return humantime::parse_duration(text.trim()).map_err(|e| {
            keyed(
                key,
                format!("{what}: `{key}` = {text:?} is not a duration such as \"30m\" or \"01:30:00\": {e}"),
            )
        });
    } else if v.hasattr("total_seconds")? {
        v.call_method0("total_seconds")?.extract::<f64>()?
    } else {
        return Err(wrong(what, key, &expected, v));
    };
    if !(seconds.is_finite() && seconds >= 0.0 && seconds < 1e12) {
        return Err(wrong(what, key, &expected, v));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `HH:MM:SS` or `MM:SS`, as batch systems write walltimes.
fn clock(text: &str) -> Option<Duration> {
    let parts: Vec<&str> = text.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return None;
    }
    let mut seconds: u64 = 0;
    for part in parts {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        seconds = seconds.checked_mul(60)?.checked_add(part.parse().ok()?)?;
    }
    Some(Duration::from_secs(seconds))
}

fn opt_duration(
    what: &str,
    key: &str,
    v: &Bound<'_, PyAny>,
    unit: f64,
) -> PyResult<Option<Duration>> {
    if v.is_none() {
        return Ok(None);
    }
    duration(what, key, v, unit).map(Some)
}

/// A size: a number of bytes, or a text such as `"100GiB"`.
fn size(what: &str, key: &str, v: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
    if v.is_none() {
        return Ok(None);
    }
    if let Ok(s) = v.cast::<PyString>() {
        return pstar_cli::workload::parse_size(&s.to_string())
            .map(Some)
            .map_err(|e| keyed(key, format!("{what}: {e}")));
    }
    int(what, key, v, 1, u64::MAX).map(Some).map_err(|_| {
        wrong(
            what,
            key,
            "a size: a number of bytes, or a text such as \"100GiB\"",
            v,
        )
    })
}

fn opt_path(what: &str, key: &str, v: &Bound<'_, PyAny>) -> PyResult<Option<PathBuf>> {
    Ok(opt_string(what, key, v)?.map(PathBuf::from))
}

fn affinity(what: &str, key: &str, v: &Bound<'_, PyAny>) -> PyResult<pstar::Affinity> {
    if v.is_none() {
        return Ok(pstar::Affinity::default());
    }
    let Ok(d) = v.cast::<PyDict>() else {
        return Err(wrong(
            what,
            key,
            "a dict with `datacenter` and `machine` labels",
            v,
        ));
    };
    let mut a = pstar::Affinity::default();
    for (k, val) in d.iter() {
        let k: String = string(what, key, &k)?;
        match k.as_str() {
            "datacenter" => a.datacenter = opt_string(what, "affinity.datacenter", &val)?,
            "machine" => a.machine = opt_string(what, "affinity.machine", &val)?,
            other => {
                return Err(unknown(
                    &format!("{what}'s `affinity`"),
                    other,
                    &["datacenter", "machine"],
                ));
            }
        }
    }
    Ok(a)
}

fn affinity_dict(py: Python<'_>, a: &pstar::Affinity) -> PyResult<Py<PyAny>> {
    let d = PyDict::new(py);
    d.set_item("datacenter", &a.datacenter)?;
    d.set_item("machine", &a.machine)?;
    Ok(d.into_any().unbind())
}

fn timedelta(py: Python<'_>, d: Duration) -> PyResult<Py<PyAny>> {
    let td = py.import("datetime")?.getattr("timedelta")?;
    Ok(td.call1((0, d.as_secs_f64()))?.unbind())
}

fn opt_timedelta(py: Python<'_>, d: Option<Duration>) -> PyResult<Py<PyAny>> {
    match d {
        Some(d) => timedelta(py, d),
        None => Ok(py.None()),
    }
}

fn to_py<'py, T: IntoPyObject<'py>>(py: Python<'py>, v: T) -> PyResult<Py<PyAny>> {
    pyo3::IntoPyObjectExt::into_py_any(v, py)
}

/// Sets every key of `dict` (a dict, or `None`) and of `kwargs` on `target`.
fn set_all(
    dict: Option<&Bound<'_, PyAny>>,
    kwargs: Option<&Bound<'_, PyDict>>,
    what: &str,
    mut set: impl FnMut(&str, &Bound<'_, PyAny>) -> PyResult<()>,
) -> PyResult<()> {
    if let Some(d) = dict.filter(|d| !d.is_none()) {
        let Ok(d) = d.cast::<PyDict>() else {
            return Err(DescriptionError::new_err(format!(
                "{what}(...) takes a dict of keys or keyword arguments, not {}",
                d.get_type().name()?
            )));
        };
        for (k, v) in d.iter() {
            let k: String = k.extract().map_err(|_| {
                DescriptionError::new_err(format!("{what}: a key is not a string: {k}"))
            })?;
            set(&k, &v)?;
        }
    }
    if let Some(kw) = kwargs {
        for (k, v) in kw.iter() {
            let k: String = k.extract()?;
            set(&k, &v)?;
        }
    }
    Ok(())
}

/// The Python methods every description has, and `extra` ones: made from keyword
/// arguments or a dict (`new`), keys as attributes (`__setattr__`, `__getattr__`), the
/// keys in `dir()` (`dir`, for completion in IPython and Jupyter). Each type has `empty`,
/// `set`, `get` and its name as `WHAT`.
macro_rules! described {
    ($t:ident, $dir:expr, { $($extra:tt)* }) => {
        #[pymethods]
        impl $t {
            #[new]
            #[pyo3(signature = (description=None, **kwargs))]
            fn new(
                description: Option<&Bound<'_, PyAny>>,
                kwargs: Option<&Bound<'_, PyDict>>,
            ) -> PyResult<Self> {
                let mut d = Self::empty();
                set_all(description, kwargs, Self::WHAT, |k, v| d.set(k, v))?;
                Ok(d)
            }

            fn __setattr__(&mut self, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
                self.set(name, value)
            }

            fn __getattr__(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
                self.get(py, name)
            }

            fn __dir__(&self) -> Vec<&'static str> {
                $dir.to_vec()
            }

            $($extra)*
        }
    };
}

/// The error for an attribute `what` does not have.
fn no_attribute(what: &str, keys: &[&str], other: &str) -> PyErr {
    pyo3::exceptions::PyAttributeError::new_err(format!(
        "{what} has no attribute `{other}` (its keys: {})",
        keys.join(", ")
    ))
}

// ---------------------------------------------------------------------------------------
// ComputeUnitDescription
// ---------------------------------------------------------------------------------------

const CUD: &str = "ComputeUnitDescription";
const CUD_KEYS: &[&str] = &[
    "name",
    "executable",
    "arguments",
    "environment",
    "working_directory",
    "cores",
    "total_core_count",
    "number_of_processes",
    "gpus",
    "stdout",
    "output",
    "stderr",
    "error",
    "pre_exec",
    "post_exec",
    "shell",
    "mpi",
    "spmd_variation",
    "tags",
    "pilot",
    "time_request",
    "timeout",
    "input_data",
    "output_data",
    "after",
    "on_dependency_failure",
    "retries",
    "retry_on_exit_codes",
    "function",
    "args",
    "kwargs",
];

/// A compute unit to submit: the seeds' `ComputeUnitDescription`.
///
/// `ComputeUnitDescription(executable="/bin/date")`, `ComputeUnitDescription({...})`, or
/// made empty and given attributes. A function unit sets `function` (and `args`,
/// `kwargs`) instead of `executable`.
#[pyclass(module = "pstar", name = "ComputeUnitDescription")]
pub struct ComputeUnitDescription {
    pub(crate) inner: pstar::ComputeUnitDescription,
    function: Option<Py<PyAny>>,
    args: Option<Py<PyAny>>,
    kwargs: Option<Py<PyAny>>,
    /// The pilot it binds to, as given (resolved against the session at submission).
    pilot: Option<PilotRef>,
    /// The sessions of the `ComputeUnit`s given in `after` (each must be the submitter's).
    after_sessions: Vec<std::sync::Arc<str>>,
}

/// A pilot named in a description.
#[derive(Clone)]
enum PilotRef {
    Id(pstar::PilotId),
    Name(String),
    Handle(std::sync::Arc<str>, pstar::PilotId),
}

/// What a submission checks descriptions against: the submitting service's session.
pub(crate) struct Submitter<'a> {
    pub(crate) session: &'a crate::session::Session,
    /// The session's units, gathered once, when a description names some in `after`.
    known: std::cell::OnceCell<std::collections::HashSet<pstar::UnitId>>,
    /// The session's pilots, gathered once, when a description names one by id or name.
    pilots: std::cell::OnceCell<Vec<pstar::PilotCompute>>,
}

impl<'a> Submitter<'a> {
    pub(crate) fn new(session: &'a crate::session::Session) -> Self {
        Self {
            session,
            known: std::cell::OnceCell::new(),
            pilots: std::cell::OnceCell::new(),
        }
    }

    fn pilot(&self, r: &PilotRef) -> PyResult<pstar::PilotId> {
        let sid = self.session.sid();
        let pilots = || self.pilots.get_or_init(|| self.session.pilots());
        let names = || {
            let listed: Vec<String> = pilots()
                .iter()
                .map(|p| match &p.description().name {
                    Some(n) => format!("{} ({n})", p.id()),
                    None => p.id().to_string(),
                })
                .collect();
            match listed.is_empty() {
                true => "it has none yet: create the pilot first".to_owned(),
                false => format!("its pilots: {}", listed.join(", ")),
            }
        };
        match r {
            PilotRef::Handle(s, id) if s != sid => Err(keyed(
                "pilot",
                format!("{CUD}: `pilot` {id} is a pilot of session {s}, not of this session {sid}"),
            )),
            PilotRef::Handle(_, id) => Ok(*id),
            PilotRef::Id(id) => match pilots().iter().any(|p| p.id() == *id) {
                true => Ok(*id),
                false => Err(keyed(
                    "pilot",
                    format!(
                        "{CUD}: `pilot` = {id:?}: this session has no such pilot ({})",
                        names()
                    )
                    .replace(&format!("{id:?}"), &format!("\"{id}\"")),
                )),
            },
            PilotRef::Name(n) => {
                let found: Vec<_> = pilots()
                    .iter()
                    .filter(|p| p.description().name.as_deref() == Some(n.as_str()))
                    .collect();
                match found.as_slice() {
                    [one] => Ok(one.id()),
                    [] => Err(keyed(
                        "pilot",
                        format!(
                            "{CUD}: `pilot` = {n:?}: no pilot of this session has that id or \
                             name ({})",
                            names()
                        ),
                    )),
                    _ => Err(keyed(
                        "pilot",
                        format!(
                            "{CUD}: `pilot` = {n:?}: {} pilots have that name; give the \
                             pilot itself (or its id)",
                            found.len()
                        ),
                    )),
                }
            }
        }
    }

    fn after(&self, d: &ComputeUnitDescription) -> PyResult<()> {
        let sid = self.session.sid();
        if let Some(other) = d.after_sessions.iter().find(|s| *s != sid) {
            return Err(keyed(
                "after",
                format!(
                    "{CUD}: `after` holds a unit of session {other}, not of this session {sid}"
                ),
            ));
        }
        if d.inner.after.is_empty() {
            return Ok(());
        }
        let known = self.known.get_or_init(|| self.session.unit_ids());
        if let Some(missing) = d.inner.after.iter().find(|u| !known.contains(u)) {
            return Err(keyed(
                "after",
                format!(
                    "{CUD}: `after` names {missing}, which this session does not have (a \
                     unit runs after units already submitted)"
                ),
            ));
        }
        Ok(())
    }
}

impl ComputeUnitDescription {
    const WHAT: &str = CUD;

    fn empty() -> Self {
        Self {
            inner: pstar::ComputeUnitDescription::default(),
            function: None,
            args: None,
            kwargs: None,
            pilot: None,
            after_sessions: Vec::new(),
        }
    }

    fn set(&mut self, key: &str, v: &Bound<'_, PyAny>) -> PyResult<()> {
        let d = &mut self.inner;
        match key {
            "name" => d.name = opt_string(CUD, key, v)?,
            "executable" => d.executable = opt_string(CUD, key, v)?.unwrap_or_default(),
            "arguments" => d.arguments = strings(CUD, key, v, true)?,
            "environment" => d.environment = environment(CUD, key, v)?,
            "working_directory" => d.working_directory = opt_path(CUD, key, v)?,
            "cores" | "total_core_count" | "number_of_processes" => {
                d.cores = small(CUD, key, v, 1)?
            }
            "gpus" => d.gpus = small(CUD, key, v, 0)?,
            "stdout" | "output" => d.stdout = opt_string(CUD, key, v)?,
            "stderr" | "error" => d.stderr = opt_string(CUD, key, v)?,
            "pre_exec" => d.pre_exec = strings(CUD, key, v, false)?,
            "post_exec" => d.post_exec = strings(CUD, key, v, false)?,
            "shell" => d.shell = boolean(CUD, key, v)?,
            "mpi" => d.mpi = boolean(CUD, key, v)?,
            "spmd_variation" => {
                d.mpi = match opt_string(CUD, key, v)?.as_deref() {
                    None | Some("single") => false,
                    Some("mpi") => true,
                    Some(other) => {
                        return Err(keyed(
                            key,
                            format!(
                                "{CUD}: `spmd_variation` is \"single\" or \"mpi\", not {other:?}"
                            ),
                        ));
                    }
                }
            }
            "tags" => d.tags = strings(CUD, key, v, false)?,
            "pilot" => {
                self.pilot = pilot_ref(CUD, key, v)?;
                d.pilot = None;
            }
            "time_request" => d.time_request = opt_duration(CUD, key, v, 1.0)?,
            "timeout" => d.timeout = opt_duration(CUD, key, v, 1.0)?,
            "input_data" => d.input_data = data_names(key, v)?,
            "output_data" => d.output_data = output_data(key, v)?,
            "after" => {
                let (ids, sessions) = unit_ids(key, v)?;
                d.after = ids;
                self.after_sessions = sessions;
            }
            "on_dependency_failure" => {
                d.on_dependency_failure = match string(CUD, key, v)?.as_str() {
                    "cancel" => pstar::OnDependencyFailure::Cancel,
                    "run" => pstar::OnDependencyFailure::Run,
                    other => {
                        return Err(keyed(
                            key,
                            format!(
                                "{CUD}: `on_dependency_failure` is \"cancel\" or \"run\", not \
                                 {other:?}"
                            ),
                        ));
                    }
                }
            }
            "retries" => d.retries = small(CUD, key, v, 0)?,
            "retry_on_exit_codes" => {
                if v.is_instance_of::<PyString>()
                    || !(v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>())
                {
                    return Err(wrong(CUD, key, "a list of exit codes (1 to 255)", v));
                }
                let mut codes = Vec::new();
                for c in v.try_iter()? {
                    codes.push(int(CUD, key, &c?, 1, 255)? as i32);
                }
                d.retry_on_exit_codes = codes;
            }
            "function" => {
                if !v.is_none() && !v.is_callable() {
                    return Err(wrong(CUD, key, "a function (something callable)", v));
                }
                self.function = (!v.is_none()).then(|| v.clone().unbind());
            }
            "args" => {
                if !(v.is_none() || v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>()) {
                    return Err(wrong(CUD, key, "a tuple or list of arguments", v));
                }
                self.args = (!v.is_none()).then(|| v.clone().unbind());
            }
            "kwargs" => {
                if !(v.is_none() || v.is_instance_of::<PyDict>()) {
                    return Err(wrong(CUD, key, "a dict of keyword arguments", v));
                }
                if let Ok(d) = v.cast::<PyDict>()
                    && let Some(k) = d.keys().iter().find(|k| !k.is_instance_of::<PyString>())
                {
                    return Err(wrong(CUD, key, "a dict whose keys are strings", &k));
                }
                self.kwargs = (!v.is_none()).then(|| v.clone().unbind());
            }
            other => return Err(unknown(CUD, other, CUD_KEYS)),
        }
        Ok(())
    }

    fn get(&self, py: Python<'_>, key: &str) -> PyResult<Py<PyAny>> {
        let d = &self.inner;
        Ok(match key {
            "name" => to_py(py, &d.name)?,
            "executable" => to_py(py, &d.executable)?,
            "arguments" => to_py(py, &d.arguments)?,
            "environment" => to_py(py, &d.environment)?,
            "working_directory" => to_py(
                py,
                d.working_directory
                    .as_ref()
                    .map(|p| p.display().to_string()),
            )?,
            "cores" | "total_core_count" | "number_of_processes" => to_py(py, d.cores)?,
            "gpus" => to_py(py, d.gpus)?,
            "stdout" | "output" => to_py(py, &d.stdout)?,
            "stderr" | "error" => to_py(py, &d.stderr)?,
            "pre_exec" => to_py(py, &d.pre_exec)?,
            "post_exec" => to_py(py, &d.post_exec)?,
            "shell" => to_py(py, d.shell)?,
            "mpi" => to_py(py, d.mpi)?,
            "spmd_variation" => to_py(py, if d.mpi { "mpi" } else { "single" })?,
            "tags" => to_py(py, &d.tags)?,
            "pilot" => to_py(
                py,
                self.pilot.as_ref().map(|p| match p {
                    PilotRef::Id(id) | PilotRef::Handle(_, id) => id.to_string(),
                    PilotRef::Name(n) => n.clone(),
                }),
            )?,
            "time_request" => opt_timedelta(py, d.time_request)?,
            "timeout" => opt_timedelta(py, d.timeout)?,
            "input_data" => to_py(py, &d.input_data)?,
            "output_data" => {
                let list = PyList::empty(py);
                for o in &d.output_data {
                    let x = PyDict::new(py);
                    x.set_item("name", &o.name)?;
                    x.set_item("files", &o.files)?;
                    x.set_item("store", &o.store)?;
                    x.set_item("allow_empty", o.allow_empty)?;
                    list.append(x)?;
                }
                list.into_any().unbind()
            }
            "after" => to_py(
                py,
                d.after.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
            )?,
            "on_dependency_failure" => to_py(
                py,
                match d.on_dependency_failure {
                    pstar::OnDependencyFailure::Cancel => "cancel",
                    pstar::OnDependencyFailure::Run => "run",
                },
            )?,
            "retries" => to_py(py, d.retries)?,
            "retry_on_exit_codes" => to_py(py, &d.retry_on_exit_codes)?,
            "function" => opt_obj(py, &self.function),
            "args" => opt_obj(py, &self.args),
            "kwargs" => opt_obj(py, &self.kwargs),
            other => return Err(no_attribute(CUD, CUD_KEYS, other)),
        })
    }

    /// The Rust description to submit, checked against the submitter's session; a
    /// function unit's call pickled.
    pub(crate) fn to_rust(
        &self,
        py: Python<'_>,
        by: &Submitter<'_>,
    ) -> PyResult<pstar::ComputeUnitDescription> {
        by.after(self)?;
        let mut d = self.inner.clone();
        if let Some(p) = &self.pilot {
            d.pilot = Some(by.pilot(p)?);
        }
        if let Some(f) = &self.function {
            let glue = py.import("pstar._glue")?;
            let (name, payload): (String, Vec<u8>) = glue
                .call_method1(
                    "dumps_call",
                    (
                        f.bind(py),
                        opt_obj(py, &self.args),
                        opt_obj(py, &self.kwargs),
                    ),
                )?
                .extract()?;
            d.function = Some(pstar::FunctionCall { name, payload });
        } else if self.args.is_some() || self.kwargs.is_some() {
            return Err(keyed(
                "args",
                format!("{CUD}: `args` and `kwargs` are for a function unit: set `function`"),
            ));
        }
        Ok(d)
    }

    /// A function unit's description: `function(*args, **kwargs)`.
    pub(crate) fn of_function(
        function: Py<PyAny>,
        args: Py<PyAny>,
        kwargs: Option<Py<PyAny>>,
    ) -> Self {
        Self {
            function: Some(function),
            args: Some(args),
            kwargs,
            ..Self::empty()
        }
    }
}

fn opt_obj(py: Python<'_>, o: &Option<Py<PyAny>>) -> Py<PyAny> {
    o.as_ref().map_or_else(|| py.None(), |o| o.clone_ref(py))
}

/// A pilot: a `PilotCompute`, its id (`"pilot.0000"`) or its name.
fn pilot_ref(what: &str, key: &str, v: &Bound<'_, PyAny>) -> PyResult<Option<PilotRef>> {
    if v.is_none() {
        return Ok(None);
    }
    if let Ok(p) = v.cast::<crate::pilots::PilotCompute>() {
        let p = p.get();
        return Ok(Some(PilotRef::Handle(p.session.clone(), p.inner.id())));
    }
    let text = string(what, key, v)
        .map_err(|_| wrong(what, key, "a PilotCompute, its id or its name", v))?;
    Ok(Some(match text.parse() {
        Ok(id) => PilotRef::Id(id),
        Err(_) => PilotRef::Name(text),
    }))
}

/// Units: `ComputeUnit`s or their ids; and the sessions of the `ComputeUnit`s.
fn unit_ids(
    key: &str,
    v: &Bound<'_, PyAny>,
) -> PyResult<(Vec<pstar::UnitId>, Vec<std::sync::Arc<str>>)> {
    if v.is_instance_of::<PyString>()
        || !(v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>())
    {
        return Err(wrong(CUD, key, "a list of ComputeUnits (or their ids)", v));
    }
    let mut out = Vec::new();
    let mut sessions: Vec<std::sync::Arc<str>> = Vec::new();
    for item in v.try_iter()? {
        let item = item?;
        if let Ok(u) = item.cast::<crate::units::ComputeUnit>() {
            out.push(u.get().inner.id());
            if !sessions.contains(u.get().session()) {
                sessions.push(u.get().session().clone());
            }
            continue;
        }
        let text = string(CUD, key, &item)
            .map_err(|_| wrong(CUD, key, "a list of ComputeUnits (or their ids)", &item))?;
        out.push(
            text.parse()
                .map_err(|e| keyed(key, format!("{CUD}: `{key}` holds {text:?}: {e}")))?,
        );
    }
    Ok((out, sessions))
}

/// Data units: `DataUnit`s or their names.
fn data_names(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if v.is_instance_of::<PyString>()
        || !(v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>())
    {
        return Err(wrong(CUD, key, "a list of DataUnits (or their names)", v));
    }
    let mut out = Vec::new();
    for item in v.try_iter()? {
        let item = item?;
        if let Ok(u) = item.cast::<crate::data::DataUnit>() {
            out.push(u.get().inner.name().to_owned());
            continue;
        }
        out.push(
            string(CUD, key, &item)
                .map_err(|_| wrong(CUD, key, "a list of DataUnits (or their names)", &item))?,
        );
    }
    Ok(out)
}

/// Output data: dicts of `name`, `files`, and optionally `store`, `export`, `allow_empty`.
fn output_data(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Vec<pstar::OutputData>> {
    let expected = "a list of dicts with `name` and `files` (and optionally `store`, \
                    `allow_empty`)";
    if !(v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>()) {
        return Err(wrong(CUD, key, expected, v));
    }
    let mut out = Vec::new();
    for item in v.try_iter()? {
        let item = item?;
        let Ok(d) = item.cast::<PyDict>() else {
            return Err(wrong(CUD, key, expected, &item));
        };
        let mut o = pstar::OutputData::new(String::new(), Vec::<String>::new());
        let mut named = false;
        for (k, val) in d.iter() {
            let k: String = string(CUD, key, &k)?;
            let what = format!("{CUD}'s `output_data`");
            match k.as_str() {
                "name" => {
                    o.name = string(&what, "name", &val)?;
                    named = true;
                }
                "files" => o.files = strings(&what, "files", &val, false)?,
                "store" => o.store = opt_string(&what, "store", &val)?,
                // Exports are `pstar run`'s, at the end of a run; a program exports a data
                // unit when it wants (`DataUnit.export`).
                "export" => {
                    return Err(keyed(
                        "export",
                        format!(
                            "{what}: `export` is for workload files (`pstar run` exports at \
                             the end of the run); from Python, export the data unit when you \
                             want it: `cds.get_data_unit(name).export(dir)`"
                        ),
                    ));
                }
                "allow_empty" => o.allow_empty = boolean(&what, "allow_empty", &val)?,
                other => {
                    return Err(unknown(
                        &what,
                        other,
                        &["name", "files", "store", "allow_empty"],
                    ));
                }
            }
        }
        if !named {
            return Err(keyed(
                key,
                format!("{CUD}: an `output_data` entry has no `name`"),
            ));
        }
        out.push(o);
    }
    Ok(out)
}

described!(
    ComputeUnitDescription,
    [CUD_KEYS, &["as_dict", "validate"][..]].concat(),
    {
        /// Its keys and values, with pstar's names.
        fn as_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
            let d = PyDict::new(py);
            for key in [
                "name",
                "executable",
                "arguments",
                "environment",
                "working_directory",
                "cores",
                "gpus",
                "stdout",
                "stderr",
                "pre_exec",
                "post_exec",
                "shell",
                "mpi",
                "tags",
                "pilot",
                "time_request",
                "timeout",
                "input_data",
                "output_data",
                "after",
                "on_dependency_failure",
                "retries",
                "retry_on_exit_codes",
                "function",
                "args",
                "kwargs",
            ] {
                d.set_item(key, self.get(py, key)?)?;
            }
            Ok(d.into_any().unbind())
        }

        /// Checks the description as submitting it would, without submitting it.
        fn validate(&self) -> PyResult<()> {
            let mut d = self.inner.clone();
            if self.function.is_some() {
                d.function = Some(pstar::FunctionCall {
                    name: String::new(),
                    payload: Vec::new(),
                });
            }
            d.validate().map_err(|source| {
                crate::error(pstar::Error::InvalidDescription {
                    what: "compute unit".into(),
                    source,
                })
            })
        }

        fn __repr__(&self) -> String {
            let d = &self.inner;
            match &self.function {
                Some(_) => format!("ComputeUnitDescription(function=..., cores={})", d.cores),
                None => format!(
                    "ComputeUnitDescription(executable={:?}, arguments={:?}, cores={})",
                    d.executable, d.arguments, d.cores
                ),
            }
        }
    }
);

/// The Rust description of `obj`: a `ComputeUnitDescription` or a dict of its keys.
pub(crate) fn unit_description(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    by: &Submitter<'_>,
) -> PyResult<pstar::ComputeUnitDescription> {
    if let Ok(d) = obj.cast::<ComputeUnitDescription>() {
        return d.borrow().to_rust(py, by);
    }
    if obj.is_instance_of::<PyDict>() {
        let mut d = ComputeUnitDescription::empty();
        set_all(Some(obj), None, CUD, |k, v| d.set(k, v))?;
        let plain = d.function.is_none()
            && d.args.is_none()
            && d.kwargs.is_none()
            && d.pilot.is_none()
            && d.inner.after.is_empty();
        if plain {
            // Nothing to pickle or check: the description as it is, not a copy.
            return Ok(d.inner);
        }
        return d.to_rust(py, by);
    }
    Err(DescriptionError::new_err(format!(
        "expected a ComputeUnitDescription or a dict of its keys, not {}",
        obj.get_type().name()?
    )))
}

// ---------------------------------------------------------------------------------------
// PilotComputeDescription
// ---------------------------------------------------------------------------------------

const PCD: &str = "PilotComputeDescription";
const PCD_KEYS: &[&str] = &[
    "name",
    "resource",
    "service_url",
    "cores",
    "number_of_processes",
    "nodes",
    "gpus",
    "walltime",
    "queue",
    "project",
    "allocation",
    "reservation",
    "scheduler_options",
    "tunnel",
    "working_directory",
    "environment",
    "affinity",
    "affinity_datacenter_label",
    "affinity_machine_label",
    "cache",
    "pre_exec",
    "python",
];

/// A pilot to create: the seeds' `PilotComputeDescription`. `walltime` as a number is in
/// minutes, as in the seeds.
#[pyclass(module = "pstar", name = "PilotComputeDescription")]
pub struct PilotComputeDescription {
    pub(crate) inner: pstar::PilotComputeDescription,
    /// `python` was given (else a local pilot runs this interpreter).
    pub(crate) python_set: bool,
}

impl PilotComputeDescription {
    const WHAT: &str = PCD;

    fn empty() -> Self {
        Self {
            inner: pstar::PilotComputeDescription::default(),
            python_set: false,
        }
    }

    fn set(&mut self, key: &str, v: &Bound<'_, PyAny>) -> PyResult<()> {
        let d = &mut self.inner;
        match key {
            "name" => d.name = opt_string(PCD, key, v)?,
            "resource" | "service_url" => {
                let url = string(PCD, key, v)?;
                d.resource = url
                    .parse()
                    .map_err(|e| keyed(key, format!("{PCD}: `{key}` = {url:?}: {e}")))?;
            }
            "cores" | "number_of_processes" => d.cores = small(PCD, key, v, 1)?,
            "nodes" => d.nodes = (!v.is_none()).then(|| small(PCD, key, v, 1)).transpose()?,
            "gpus" => d.gpus = small(PCD, key, v, 0)?,
            "walltime" => d.walltime = duration(PCD, key, v, 60.0)?,
            "queue" => d.queue = opt_string(PCD, key, v)?,
            "project" | "allocation" => d.project = opt_string(PCD, key, v)?,
            "reservation" => d.reservation = opt_string(PCD, key, v)?,
            "scheduler_options" => d.scheduler_options = strings(PCD, key, v, false)?,
            "tunnel" => d.tunnel = boolean(PCD, key, v)?,
            "working_directory" => d.working_directory = opt_path(PCD, key, v)?,
            "environment" => d.environment = environment(PCD, key, v)?,
            "affinity" => d.affinity = affinity(PCD, key, v)?,
            "affinity_datacenter_label" => d.affinity.datacenter = opt_string(PCD, key, v)?,
            "affinity_machine_label" => d.affinity.machine = opt_string(PCD, key, v)?,
            "cache" => d.cache_size = size(PCD, key, v)?,
            "pre_exec" => d.pre_exec = strings(PCD, key, v, false)?,
            "python" => {
                d.python = opt_string(PCD, key, v)?;
                self.python_set = true;
            }
            other => return Err(unknown(PCD, other, PCD_KEYS)),
        }
        Ok(())
    }

    fn get(&self, py: Python<'_>, key: &str) -> PyResult<Py<PyAny>> {
        let d = &self.inner;
        Ok(match key {
            "name" => to_py(py, &d.name)?,
            "resource" | "service_url" => to_py(py, d.resource.as_str())?,
            "cores" | "number_of_processes" => to_py(py, d.cores)?,
            "nodes" => to_py(py, d.nodes)?,
            "gpus" => to_py(py, d.gpus)?,
            "walltime" => timedelta(py, d.walltime)?,
            "queue" => to_py(py, &d.queue)?,
            "project" | "allocation" => to_py(py, &d.project)?,
            "reservation" => to_py(py, &d.reservation)?,
            "scheduler_options" => to_py(py, &d.scheduler_options)?,
            "tunnel" => to_py(py, d.tunnel)?,
            "working_directory" => to_py(
                py,
                d.working_directory
                    .as_ref()
                    .map(|p| p.display().to_string()),
            )?,
            "environment" => to_py(py, &d.environment)?,
            "affinity" => affinity_dict(py, &d.affinity)?,
            "affinity_datacenter_label" => to_py(py, &d.affinity.datacenter)?,
            "affinity_machine_label" => to_py(py, &d.affinity.machine)?,
            "cache" => to_py(py, d.cache_size)?,
            "pre_exec" => to_py(py, &d.pre_exec)?,
            "python" => to_py(py, &d.python)?,
            other => return Err(no_attribute(PCD, PCD_KEYS, other)),
        })
    }
}

described!(
    PilotComputeDescription,
    [PCD_KEYS, &["as_dict"][..]].concat(),
    {
        /// Its keys and values, with pstar's names.
        fn as_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
            let d = PyDict::new(py);
            for key in [
                "name",
                "resource",
                "cores",
                "nodes",
                "gpus",
                "walltime",
                "queue",
                "project",
                "reservation",
                "scheduler_options",
                "tunnel",
                "working_directory",
                "environment",
                "affinity",
                "cache",
                "pre_exec",
                "python",
            ] {
                d.set_item(key, self.get(py, key)?)?;
            }
            Ok(d.into_any().unbind())
        }

        fn __repr__(&self) -> String {
            let d = &self.inner;
            format!(
                "PilotComputeDescription(resource={:?}, cores={}, walltime={:?})",
                d.resource.as_str(),
                d.cores,
                humantime::format_duration(d.walltime).to_string()
            )
        }
    }
);

/// The variable whose directories a Python worker puts first on its `sys.path`.
const WORKER_PATH: &str = "PSTAR_PYTHONPATH";

/// The Rust description of `obj`: a `PilotComputeDescription` or a dict of its keys; a
/// local pilot runs function units with `python` unless it says otherwise, and its
/// workers import from this program's `sys.path`.
pub(crate) fn pilot_description(
    obj: &Bound<'_, PyAny>,
    python: Option<&str>,
) -> PyResult<pstar::PilotComputeDescription> {
    let (mut d, python_set) = if let Ok(d) = obj.cast::<PilotComputeDescription>() {
        let d = d.borrow();
        (d.inner.clone(), d.python_set)
    } else if obj.is_instance_of::<PyDict>() {
        let mut d = PilotComputeDescription {
            inner: pstar::PilotComputeDescription::default(),
            python_set: false,
        };
        set_all(Some(obj), None, PCD, |k, v| d.set(k, v))?;
        (d.inner, d.python_set)
    } else {
        return Err(DescriptionError::new_err(format!(
            "expected a PilotComputeDescription or a dict of its keys, not {}",
            obj.get_type().name()?
        )));
    };
    if !python_set && d.resource.scheme() == pstar::Scheme::Local {
        d.python = python.map(str::to_owned);
        // Its workers import what this program imports (functions of the program's own
        // modules are pickled by reference): its `sys.path`, for the workers only.
        if d.python.is_some() && !d.environment.contains_key(WORKER_PATH) {
            let py = obj.py();
            let path: Vec<String> = py.import("sys")?.getattr("path")?.extract()?;
            let cwd = std::env::current_dir().ok();
            let dirs: Vec<String> = path
                .into_iter()
                .filter_map(|p| match (p.is_empty(), &cwd) {
                    (true, Some(c)) => Some(c.display().to_string()),
                    (true, None) => None,
                    (false, _) => Some(p),
                })
                .filter(|p| !p.contains(':'))
                .collect();
            d.environment.insert(WORKER_PATH.to_owned(), dirs.join(":"));
        }
    }
    Ok(d)
}

/// A `PilotComputeDescription` from keyword arguments.
pub(crate) fn pilot_from_kwargs(
    kwargs: &Bound<'_, PyDict>,
    python: Option<&str>,
) -> PyResult<pstar::PilotComputeDescription> {
    pilot_description(kwargs.as_any(), python)
}

// ---------------------------------------------------------------------------------------
// PilotDataDescription and DataUnitDescription
// ---------------------------------------------------------------------------------------

const PDD: &str = "PilotDataDescription";
const PDD_KEYS: &[&str] = &[
    "name",
    "url",
    "service_url",
    "size",
    "affinity",
    "affinity_datacenter_label",
    "affinity_machine_label",
];

/// A pilot store to create: the seeds' `PilotDataDescription` (`url` is `file:///dir`,
/// `sftp://user@host/path` or `s3://bucket/prefix`; `size` a quota).
#[pyclass(module = "pstar", name = "PilotDataDescription")]
pub struct PilotDataDescription {
    pub(crate) inner: pstar::PilotDataDescription,
}

impl PilotDataDescription {
    const WHAT: &str = PDD;

    fn empty() -> Self {
        Self {
            inner: pstar::PilotDataDescription {
                name: String::new(),
                url: String::new(),
                size: None,
                affinity: pstar::Affinity::default(),
            },
        }
    }

    fn set(&mut self, key: &str, v: &Bound<'_, PyAny>) -> PyResult<()> {
        let d = &mut self.inner;
        match key {
            "name" => d.name = string(PDD, key, v)?,
            "url" | "service_url" => d.url = string(PDD, key, v)?,
            "size" => d.size = size(PDD, key, v)?,
            "affinity" => d.affinity = affinity(PDD, key, v)?,
            "affinity_datacenter_label" => d.affinity.datacenter = opt_string(PDD, key, v)?,
            "affinity_machine_label" => d.affinity.machine = opt_string(PDD, key, v)?,
            other => return Err(unknown(PDD, other, PDD_KEYS)),
        }
        Ok(())
    }

    fn get(&self, py: Python<'_>, key: &str) -> PyResult<Py<PyAny>> {
        let d = &self.inner;
        Ok(match key {
            "name" => to_py(py, &d.name)?,
            "url" | "service_url" => to_py(py, &d.url)?,
            "size" => to_py(py, d.size)?,
            "affinity" => affinity_dict(py, &d.affinity)?,
            "affinity_datacenter_label" => to_py(py, &d.affinity.datacenter)?,
            "affinity_machine_label" => to_py(py, &d.affinity.machine)?,
            other => return Err(no_attribute(PDD, PDD_KEYS, other)),
        })
    }
}

described!(PilotDataDescription, PDD_KEYS, {
    fn __repr__(&self) -> String {
        format!(
            "PilotDataDescription(name={:?}, url={:?})",
            self.inner.name, self.inner.url
        )
    }
});

/// The Rust description of a `PilotDataDescription` or dict.
pub(crate) fn store_description(obj: &Bound<'_, PyAny>) -> PyResult<pstar::PilotDataDescription> {
    let d = if let Ok(d) = obj.cast::<PilotDataDescription>() {
        d.borrow().inner.clone()
    } else if obj.is_instance_of::<PyDict>() {
        let mut d = PilotDataDescription::empty();
        set_all(Some(obj), None, PDD, |k, v| d.set(k, v))?;
        d.inner
    } else {
        return Err(DescriptionError::new_err(format!(
            "expected a PilotDataDescription or a dict of its keys, not {}",
            obj.get_type().name()?
        )));
    };
    for (key, empty) in [("name", d.name.is_empty()), ("url", d.url.is_empty())] {
        if empty {
            return Err(keyed(
                key,
                format!(
                    "{PDD} needs a `{key}` (a pilot store has a name that data units and \
                     outputs use, and a url such as \"file:///scratch/data\")"
                ),
            ));
        }
    }
    Ok(d)
}

const DUD: &str = "DataUnitDescription";
const DUD_KEYS: &[&str] = &["name", "files", "file_urls", "store"];

/// A data unit to place: the seeds' `DataUnitDescription` (`files`: local files,
/// directories or globs).
#[pyclass(module = "pstar", name = "DataUnitDescription")]
pub struct DataUnitDescription {
    pub(crate) inner: pstar::DataUnitDescription,
}

impl DataUnitDescription {
    const WHAT: &str = DUD;

    fn empty() -> Self {
        Self {
            inner: pstar::DataUnitDescription {
                name: String::new(),
                files: Vec::new(),
                store: None,
            },
        }
    }

    fn set(&mut self, key: &str, v: &Bound<'_, PyAny>) -> PyResult<()> {
        let d = &mut self.inner;
        match key {
            "name" => d.name = string(DUD, key, v)?,
            "files" | "file_urls" => {
                d.files = strings(DUD, key, v, false)?
                    .into_iter()
                    .map(PathBuf::from)
                    .collect()
            }
            "store" => {
                d.store = match v.cast::<crate::data::PilotData>() {
                    Ok(p) => Some(p.get().inner.name().to_owned()),
                    Err(_) => opt_string(DUD, key, v)?,
                }
            }
            other => return Err(unknown(DUD, other, DUD_KEYS)),
        }
        Ok(())
    }

    fn get(&self, py: Python<'_>, key: &str) -> PyResult<Py<PyAny>> {
        let d = &self.inner;
        Ok(match key {
            "name" => to_py(py, &d.name)?,
            "files" | "file_urls" => to_py(
                py,
                d.files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>(),
            )?,
            "store" => to_py(py, &d.store)?,
            other => return Err(no_attribute(DUD, DUD_KEYS, other)),
        })
    }
}

described!(DataUnitDescription, DUD_KEYS, {
    fn __repr__(&self) -> String {
        format!(
            "DataUnitDescription(name={:?}, files={:?})",
            self.inner.name, self.inner.files
        )
    }
});

/// The Rust description of a `DataUnitDescription` or dict.
pub(crate) fn data_description(obj: &Bound<'_, PyAny>) -> PyResult<pstar::DataUnitDescription> {
    if let Ok(d) = obj.cast::<DataUnitDescription>() {
        return Ok(d.borrow().inner.clone());
    }
    if obj.is_instance_of::<PyDict>() {
        let mut d = DataUnitDescription::empty();
        set_all(Some(obj), None, DUD, |k, v| d.set(k, v))?;
        return Ok(d.inner);
    }
    Err(DescriptionError::new_err(format!(
        "expected a DataUnitDescription or a dict of its keys, not {}",
        obj.get_type().name()?
    )))
}
