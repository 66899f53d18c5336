//! The Pilot-Data half of the Pilot-API: pilot stores, data units, and the service that
//! takes both compute and data units.
//!
//! * [`PilotDataService`] creates [`PilotData`]s (pilot stores, the seeds' Pilot-Data) from
//!   [`PilotDataDescription`]s: a directory, an SFTP path or an S3 prefix, with a quota and
//!   affinity labels.
//! * [`PilotData::submit_data_unit`] places a [`DataUnit`] (a named, immutable set of
//!   files) in the store: every file checksummed on the way, the quota checked before
//!   anything moves.
//! * [`ComputeDataService`] accepts compute units that read data units (`input_data`) and
//!   make new ones (`output_data`); the manager core holds each unit until its inputs
//!   exist and places it next to them ([`crate::placement`]).
//!
//! ```
//! # #[tokio::main] async fn main() -> pstar::Result<()> {
//! use pstar::{ComputeDataService, ComputeUnitDescription, ComputeUnitService,
//!             DataUnitDescription, PilotComputeDescription, PilotComputeService,
//!             PilotDataDescription, PilotDataService, Session, UnitState};
//!
//! # let dir = tempfile::tempdir().unwrap();
//! # std::fs::write(dir.path().join("input.txt"), "hello\n").unwrap();
//! let session = Session::builder().sandbox_root(dir.path().join("sandbox")).build().await?;
//! let pcs = PilotComputeService::new(&session);
//! pcs.create_pilot(PilotComputeDescription { cores: 2, ..Default::default() }).await?;
//! let pds = PilotDataService::new(&session);
//! pds.create_pilot_data(PilotDataDescription {
//!     name: "archive".into(),
//!     url: format!("file://{}/store", dir.path().display()),
//!     size: None,
//!     affinity: Default::default(),
//! }).await?;
//!
//! let cus = ComputeUnitService::new(&session);
//! cus.add_pilot_service(&pcs);
//! let cds = ComputeDataService::new(&cus, &pds);
//! cds.submit_data_unit(DataUnitDescription {
//!     name: "greeting".into(),
//!     files: vec![dir.path().join("input.txt")],
//!     store: None,
//! }).await?;
//! let mut cud = ComputeUnitDescription::new("/bin/cat").with_arguments(["data/greeting/input.txt"]);
//! cud.input_data = vec!["greeting".into()];
//! let units = cds.submit_compute_units(vec![cud]).await?;
//! assert_eq!(units[0].wait().await, UnitState::Done);
//! pcs.cancel().await;
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pstar_coordination::{DataEvent, DataUnitRecord, Event, StoreReplica, Transfer};
use pstar_data::{Store, StoreUrl};
use pstar_model::{
    Affinity, ComputeUnitDescription, DataFile, DataUnitDescription, DataUnitState,
    PilotDataDescription, check_data_name,
};

use crate::core::Input;
use crate::shell::Command;
use crate::{ComputeUnit, ComputeUnitService, Error, Result, Session};
pub use pstar_model::{bytes_text, quota_refusal};

/// The "store" a data unit placed from the application's own files comes from, in
/// [`DataEvent::from`] and the report.
pub const CLIENT: &str = "client";

/// Creates and holds a session's pilot stores: the seeds' `PilotDataService`.
#[derive(Clone)]
pub struct PilotDataService {
    session: Session,
    stores: Arc<Mutex<Vec<PilotData>>>,
}

/// One pilot store: a place that reserves space for data units (the seeds' Pilot-Data).
#[derive(Clone)]
pub struct PilotData {
    inner: Arc<PilotDataInner>,
}

struct PilotDataInner {
    description: PilotDataDescription,
    url: StoreUrl,
    store: Store,
    /// Bytes of this session's data units in the store (for the quota).
    used: AtomicU64,
    session: Session,
}

impl PilotDataService {
    /// A service with no stores yet.
    pub fn new(session: &Session) -> Self {
        Self {
            session: session.clone(),
            stores: Arc::default(),
        }
    }

    /// Opens (and, for a directory, makes) the store `description` names. Its URL and
    /// name are checked, and the store reached, before it is added.
    pub async fn create_pilot_data(&self, description: PilotDataDescription) -> Result<PilotData> {
        let bad = |reason: String| Error::PilotData {
            name: description.name.clone(),
            reason,
        };
        check_data_name(&description.name).map_err(|e| bad(e.to_string()))?;
        let name = description.name.as_str();
        if [CLIENT, "export", "unknown"].contains(&name) || name.starts_with("pilot.") {
            return Err(bad(
                "the name is kept for what reports count besides stores (`client`, `export`, \
                 `unknown` and pilots' caches `pilot.NNNN`): choose another"
                    .into(),
            ));
        }
        if self.get(&description.name).is_some() {
            return Err(bad("a pilot store of this name exists already".into()));
        }
        if description.size == Some(0) {
            return Err(bad("`size` must be more than 0 bytes".into()));
        }
        let url: StoreUrl = description
            .url
            .parse()
            .map_err(|e: pstar_data::DataError| bad(e.to_string()))?;
        let store = Store::open(&url).await.map_err(|e| bad(e.to_string()))?;
        // Reached (and its directory made, its bucket there, its credentials taken) before
        // anything else is asked of it.
        store.check().await.map_err(|e| bad(e.to_string()))?;
        let used = store
            .usage(self.session.id())
            .await
            .map_err(|e| bad(e.to_string()))?;
        let pd = PilotData {
            inner: Arc::new(PilotDataInner {
                description: description.clone(),
                url,
                store,
                used: AtomicU64::new(0),
                session: self.session.clone(),
            }),
        };
        // What this session has there already (a resumed one) counts against the quota.
        if used > 0 {
            let counted = self
                .session
                .coordination()
                .reserve_space(&description.name, 0, None)
                .await?
                .unwrap_or(0);
            if counted < used {
                let _ = self
                    .session
                    .coordination()
                    .reserve_space(&description.name, used - counted, None)
                    .await?;
            }
        }
        let now = self
            .session
            .coordination()
            .reserve_space(&description.name, 0, None)
            .await?
            .unwrap_or(used);
        pd.inner.used.store(now, Ordering::SeqCst);
        let _ = self.session.manager().send(Command::Data(Input::AddStore {
            name: description.name.clone(),
            affinity: description.affinity.clone(),
        }));
        if let Ok(mut stores) = self.stores.lock() {
            stores.push(pd.clone());
        }
        Ok(pd)
    }

    /// The store of this name.
    pub fn get(&self, name: &str) -> Option<PilotData> {
        self.stores
            .lock()
            .ok()?
            .iter()
            .find(|s| s.name() == name)
            .cloned()
    }

    /// Every store, in order of creation.
    pub fn list(&self) -> Vec<PilotData> {
        self.stores.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl PilotData {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.inner.description.name
    }

    /// Its URL (never with a secret).
    pub fn url(&self) -> String {
        self.inner.url.to_string()
    }

    /// Its labels.
    pub fn affinity(&self) -> &Affinity {
        &self.inner.description.affinity
    }

    /// Its quota, if it has one.
    pub fn size(&self) -> Option<u64> {
        self.inner.description.size
    }

    /// Bytes this session's data units take in it.
    pub fn used(&self) -> u64 {
        self.inner.used.load(Ordering::SeqCst)
    }

    /// Where data unit `name` lives in this store.
    fn prefix(&self, name: &str) -> String {
        format!("{}/{name}", self.inner.session.id())
    }

    /// Reserves `bytes` of the quota for data unit `name`, or says why not (nothing is
    /// reserved then). The use is kept in the coordination store, shared with the agents
    /// that store outputs here.
    async fn reserve(&self, name: &str, bytes: u64) -> Result<()> {
        let coordination = self.inner.session.coordination();
        match coordination
            .reserve_space(self.name(), bytes, self.size())
            .await?
        {
            Ok(used) => {
                self.inner.used.store(used, Ordering::SeqCst);
                Ok(())
            }
            Err(used) => {
                let quota = self.size().unwrap_or(u64::MAX);
                Err(Error::DataUnit {
                    name: name.to_owned(),
                    reason: quota_refusal(bytes, self.name(), used, quota),
                })
            }
        }
    }

    /// Gives back `bytes` of the quota.
    async fn release(&self, bytes: u64) {
        let coordination = self.inner.session.coordination();
        if let Err(e) = coordination.release_space(self.name(), bytes).await {
            tracing::warn!(store = self.name(), error = %e, "cannot give back space");
        }
        let used = &self.inner.used;
        let _ = used.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
            Some(u.saturating_sub(bytes))
        });
    }

    /// Places a data unit made of the files `description` names (relative paths against
    /// the current directory) in this store. The whole size is checked against the quota
    /// before anything moves; a failure removes what was stored and registers nothing.
    pub async fn submit_data_unit(&self, description: DataUnitDescription) -> Result<DataUnit> {
        let name = description.name.clone();
        let placed = self.place(description).await;
        if let Err(e) = &placed {
            // Units that read it (submitted or to come) fail naming why, not wait for it.
            let why = match e {
                Error::DataUnit { reason, .. } => reason.clone(),
                e => e.to_string(),
            };
            publish(
                &self.inner.session,
                DataEvent {
                    detail: Some(why),
                    store: Some(self.name().to_owned()),
                    ..DataEvent::new(&name, DataUnitState::Failed)
                },
            )
            .await;
        }
        placed
    }

    async fn place(&self, description: DataUnitDescription) -> Result<DataUnit> {
        let name = description.name.clone();
        let bad = |reason: String| Error::DataUnit {
            name: name.clone(),
            reason,
        };
        check_data_name(&name).map_err(|e| bad(e.to_string()))?;
        let session = &self.inner.session;
        // Data units do not change: a second one of the same name would mix its files
        // with the first's in the store and leave readers seeing either.
        if let Ok(existing) = session.coordination().data_units(&[name.clone()]).await
            && existing.into_iter().flatten().next().is_some()
        {
            return Err(bad(
                "the session has a data unit of that name already (data units do not change: \
                 give this one another name)"
                    .into(),
            ));
        }
        let specs = description.files.clone();
        let files =
            tokio::task::spawn_blocking(move || pstar_data::expand_files(Path::new("."), &specs))
                .await
                .map_err(|e| bad(e.to_string()))?
                .map_err(|e| bad(e.to_string()))?;
        let mut total = 0u64;
        for (local, _) in &files {
            total += std::fs::metadata(local)
                .map_err(|e| bad(format!("{}: {e}", local.display())))?
                .len();
        }
        self.reserve(&name, total).await?;
        let _ = session
            .manager()
            .send(Command::Data(Input::DeclareData(vec![name.clone()])));
        let prefix = self.prefix(&name);
        let mut stored = Vec::with_capacity(files.len());
        let mut moved = 0;
        for (local, path) in &files {
            match self
                .inner
                .store
                .put_file(local, &format!("{prefix}/{path}"))
                .await
            {
                Ok(f) => {
                    moved += f.size;
                    stored.push(DataFile {
                        path: path.clone(),
                        size: f.size,
                        sha256: f.sha256,
                    });
                }
                Err(e) => {
                    let _ = self.inner.store.delete_prefix(&prefix).await;
                    self.release(total).await;
                    return Err(bad(e.to_string()));
                }
            }
        }
        let record = DataUnitRecord {
            name: name.clone(),
            files: stored,
            replicas: vec![StoreReplica {
                store: self.name().to_owned(),
                url: self.url(),
                prefix,
            }],
        };
        session
            .coordination()
            .put_data_units(std::slice::from_ref(&record))
            .await?;
        publish(
            session,
            DataEvent {
                size: record.size(),
                store: Some(self.name().to_owned()),
                moved,
                from: Some(CLIENT.into()),
                ..DataEvent::new(&name, DataUnitState::Running)
            },
        )
        .await;
        Ok(DataUnit {
            record,
            session: session.clone(),
        })
    }
}

async fn publish(session: &Session, event: DataEvent) {
    if let Err(e) = session
        .coordination()
        .publish(vec![Event::Data(event)])
        .await
    {
        tracing::warn!(error = %e, "could not publish a data unit's event");
    }
}

/// A data unit: a named, immutable set of files in one or more stores.
#[derive(Clone)]
pub struct DataUnit {
    record: DataUnitRecord,
    session: Session,
}

impl DataUnit {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.record.name
    }

    /// Its files: path in the data unit, size, SHA-256.
    pub fn files(&self) -> &[DataFile] {
        &self.record.files
    }

    /// Bytes of all its files.
    pub fn size(&self) -> u64 {
        self.record.size()
    }

    /// The places that hold it.
    pub fn replicas(&self) -> &[StoreReplica] {
        &self.record.replicas
    }

    /// The data unit `name` of `session`, as the coordination store has it now.
    pub async fn get(session: &Session, name: &str) -> Result<Option<DataUnit>> {
        let record = session
            .coordination()
            .data_units(&[name.to_owned()])
            .await?
            .pop()
            .flatten();
        Ok(record.map(|record| DataUnit {
            record,
            session: session.clone(),
        }))
    }

    /// Copies it into `store` (from the first place that serves it), checking every file,
    /// and records the new replica. Returns the bytes moved.
    pub async fn replicate(&mut self, store: &PilotData) -> Result<u64> {
        if self.record.replicas.iter().any(|r| r.store == store.name()) {
            return Ok(0);
        }
        let name = self.record.name.clone();
        store.reserve(&name, self.size()).await?;
        let prefix = store.prefix(&name);
        let mut errors = Vec::new();
        for replica in self.record.replicas.clone() {
            let source = match open(&replica.url).await {
                Ok(s) => s,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let mut moved = 0;
            let mut failed = None;
            for f in &self.record.files {
                let from = format!("{}/{}", replica.prefix, f.path);
                let to = format!("{prefix}/{}", f.path);
                let expect = DataFile {
                    path: to.clone(),
                    ..f.clone()
                };
                match source
                    .copy_to(&from, &store.inner.store, &to, &expect)
                    .await
                {
                    Ok(n) => moved += n,
                    Err(e) => {
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                let _ = store.inner.store.delete_prefix(&prefix).await;
                errors.push(format!("from {}: {e}", replica.store));
                continue;
            }
            self.record.replicas.push(StoreReplica {
                store: store.name().to_owned(),
                url: store.url(),
                prefix,
            });
            self.session
                .coordination()
                .put_data_units(std::slice::from_ref(&self.record))
                .await?;
            publish(
                &self.session,
                DataEvent {
                    size: self.size(),
                    store: Some(store.name().to_owned()),
                    moved,
                    from: Some(replica.store.clone()),
                    ..DataEvent::new(&name, DataUnitState::Running)
                },
            )
            .await;
            return Ok(moved);
        }
        store.release(self.size()).await;
        Err(Error::DataUnit {
            name,
            reason: format!("could not be replicated: {}", errors.join("; ")),
        })
    }

    /// Deletes its files from every pilot store that holds it and records that no store
    /// does any more (copies in pilots' caches go with their pilots). Units that read it
    /// later can still have it from a pilot's cache on their machine, if one is left.
    pub async fn delete(&mut self, stores: &PilotDataService) -> Result<()> {
        let mut errors = Vec::new();
        let mut kept = Vec::new();
        for replica in std::mem::take(&mut self.record.replicas) {
            let Some(store) = stores.get(&replica.store) else {
                kept.push(replica); // a pilot's cache, or a store this service does not hold
                continue;
            };
            match store.inner.store.delete_prefix(&replica.prefix).await {
                Ok(()) => store.release(self.size()).await,
                Err(e) => {
                    errors.push(format!("{}: {e}", replica.store));
                    kept.push(replica);
                }
            }
        }
        self.record.replicas = kept;
        self.session
            .coordination()
            .put_data_units(std::slice::from_ref(&self.record))
            .await?;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::DataUnit {
                name: self.record.name.clone(),
                reason: format!("could not be deleted from {}", errors.join("; ")),
            })
        }
    }

    /// Copies its files into the local directory `dir` (made if missing), each checked
    /// against its checksum, from the first place that serves them. Returns the bytes
    /// moved and the place they came from.
    pub async fn export(&self, dir: &Path) -> Result<(u64, String)> {
        self.export_through(dir, None).await
    }

    /// [`export`](Self::export), reading through the stores of `stores` that it holds
    /// (open already: no new connection per data unit).
    async fn export_through(
        &self,
        dir: &Path,
        stores: Option<&PilotDataService>,
    ) -> Result<(u64, String)> {
        let mut errors = Vec::new();
        for replica in &self.record.replicas {
            let held = stores
                .and_then(|s| s.get(&replica.store))
                .filter(|s| s.url() == replica.url);
            let opened;
            let source = match &held {
                Some(pd) => &pd.inner.store,
                None => match open(&replica.url).await {
                    Ok(s) => {
                        opened = s;
                        &opened
                    }
                    Err(e) => {
                        errors.push(format!("from {}: {e}", replica.store));
                        continue;
                    }
                },
            };
            let mut moved = 0;
            let mut failed = None;
            for f in &self.record.files {
                let key = format!("{}/{}", replica.prefix, f.path);
                match source.get_file(&key, &dir.join(&f.path), f).await {
                    Ok(n) => moved += n,
                    Err(e) => {
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
            match failed {
                None => {
                    publish(
                        &self.session,
                        DataEvent {
                            moved,
                            from: Some(replica.store.clone()),
                            transfer: Some(Transfer::Export),
                            ..DataEvent::new(&self.record.name, DataUnitState::Running)
                        },
                    )
                    .await;
                    return Ok((moved, replica.store.clone()));
                }
                Some(e) => errors.push(format!("from {}: {e}", replica.store)),
            }
        }
        Err(Error::DataUnit {
            name: self.record.name.clone(),
            reason: format!(
                "could not be exported to {}: {}",
                dir.display(),
                errors.join("; ")
            ),
        })
    }
}

impl PilotDataService {
    /// Exports `unit` to `dir` like [`DataUnit::export`], through this service's open
    /// stores.
    pub async fn export(&self, unit: &DataUnit, dir: &Path) -> Result<(u64, String)> {
        unit.export_through(dir, Some(self)).await
    }
}

async fn open(url: &str) -> std::result::Result<Store, String> {
    let parsed: StoreUrl = url
        .parse()
        .map_err(|e: pstar_data::DataError| e.to_string())?;
    Store::open(&parsed).await.map_err(|e| e.to_string())
}

/// Takes compute units and data units together: the seeds' `ComputeDataService`.
///
/// Compute units may name in `input_data` any data unit submitted here (or through one of
/// its stores) and any data unit an earlier compute unit makes (`output_data`); a name
/// nothing defines is refused at submission. An output without a `store` goes to the
/// first pilot store, if there is one, else stays in the cache of the pilot that made it.
#[derive(Clone)]
pub struct ComputeDataService {
    units: ComputeUnitService,
    data: PilotDataService,
    known: Arc<Mutex<HashSet<String>>>,
}

impl ComputeDataService {
    /// A service over these compute units and pilot stores.
    pub fn new(units: &ComputeUnitService, data: &PilotDataService) -> Self {
        Self {
            units: units.clone(),
            data: data.clone(),
            known: Arc::default(),
        }
    }

    /// Its compute unit service.
    pub fn units(&self) -> &ComputeUnitService {
        &self.units
    }

    /// Its pilot data service.
    pub fn data(&self) -> &PilotDataService {
        &self.data
    }

    /// Places a data unit in the store it names (`store`), or else the first store.
    pub async fn submit_data_unit(&self, description: DataUnitDescription) -> Result<DataUnit> {
        let store = match &description.store {
            Some(name) => self.data.get(name).ok_or_else(|| Error::DataUnit {
                name: description.name.clone(),
                reason: format!("names pilot store {name}, which this service does not have"),
            })?,
            None => self
                .data
                .list()
                .into_iter()
                .next()
                .ok_or_else(|| Error::DataUnit {
                    name: description.name.clone(),
                    reason: "there is no pilot store to place it in: create one first".into(),
                })?,
        };
        // Known even if placing it fails: units that read it then fail naming why.
        if let Ok(mut known) = self.known.lock() {
            known.insert(description.name.clone());
        }
        store.submit_data_unit(description).await
    }

    /// Submits compute units that may read and make data units. Every `input_data` name
    /// must be a data unit submitted here or an `output_data` of a unit submitted here
    /// (before, or in this batch); output stores are resolved to their URLs.
    pub async fn submit_compute_units(
        &self,
        descriptions: impl IntoIterator<Item = ComputeUnitDescription>,
    ) -> Result<Vec<ComputeUnit>> {
        self.submit_compute_units_as(descriptions, None).await
    }

    /// Submits units as [`submit_compute_units`](Self::submit_compute_units) does, with
    /// the next ids of `ids` (see [`ComputeUnitService::reserve_unit_ids`]).
    pub async fn submit_reserved(
        &self,
        ids: &mut crate::ReservedIds,
        descriptions: impl IntoIterator<Item = ComputeUnitDescription>,
    ) -> Result<Vec<ComputeUnit>> {
        self.submit_compute_units_as(descriptions, Some(ids)).await
    }

    async fn submit_compute_units_as(
        &self,
        descriptions: impl IntoIterator<Item = ComputeUnitDescription>,
        reserved: Option<&mut crate::ReservedIds>,
    ) -> Result<Vec<ComputeUnit>> {
        let mut descriptions: Vec<ComputeUnitDescription> = descriptions.into_iter().collect();
        let stores: HashMap<String, (String, Option<u64>)> = self
            .data
            .list()
            .iter()
            .map(|s| (s.name().to_owned(), (s.url(), s.size())))
            .collect();
        let first = self.data.list().first().map(|s| s.name().to_owned());
        {
            let Ok(mut known) = self.known.lock() else {
                return Err(Error::ServiceClosed);
            };
            let mut batch: HashSet<String> = HashSet::new();
            for d in &descriptions {
                for o in &d.output_data {
                    if known.contains(&o.name) || !batch.insert(o.name.clone()) {
                        return Err(Error::DataUnit {
                            name: o.name.clone(),
                            reason:
                                "is made by more than one unit (output_data names must be unique)"
                                    .into(),
                        });
                    }
                }
            }
            for (i, d) in descriptions.iter_mut().enumerate() {
                for name in &d.input_data {
                    if !known.contains(name) && !batch.contains(name) {
                        return Err(Error::DataUnit {
                            name: name.clone(),
                            reason: format!(
                                "unit description #{i} (`{}`) reads it, but no data unit or \
                                 unit's output_data of this service has that name",
                                d.display_name()
                            ),
                        });
                    }
                }
                for o in &mut d.output_data {
                    let store = o.store.clone().or_else(|| first.clone());
                    if let Some(store) = store {
                        let (url, quota) = stores.get(&store).ok_or_else(|| Error::DataUnit {
                            name: o.name.clone(),
                            reason: format!(
                                "names pilot store {store}, which this service does not have"
                            ),
                        })?;
                        o.store = Some(store);
                        o.store_url = Some(url.clone());
                        o.store_quota = *quota;
                    }
                }
            }
            known.extend(batch);
        }
        self.units.submit_batch_as(descriptions, reserved).await
    }

    /// The data unit `name` as it is now (a unit's output once it is made).
    pub async fn data_unit(&self, name: &str) -> Result<Option<DataUnit>> {
        DataUnit::get(&self.data.session, name).await
    }
}

/// Where a data unit's export goes: `dir` made absolute against `base`.
pub fn export_dir(base: &Path, dir: &Path) -> PathBuf {
    if dir.is_absolute() {
        dir.to_owned()
    } else {
        base.join(dir)
    }
}
