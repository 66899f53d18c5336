//! Pilot-Data at the agent: making a unit's input data units present in its sandbox, and
//! storing the files it leaves as its output data units.
//!
//! **The pilot's cache.** Every data unit that arrives at a pilot is kept in the pilot's
//! cache, `<pilot sandbox>/data/<name>/`, with a `.complete` marker once all of its files
//! arrived and matched their SHA-256. A data unit is moved to a pilot at most once: units
//! that read it after the first (or while the first is staging it) wait for that one
//! transfer. Each unit sees its inputs under `$PSTAR_DATA/<name>/` (`<unit sandbox>/data`),
//! hard links to the cache's files (copies across file systems), which are made read-only.
//!
//! **Where a data unit comes from**, nearest first: this pilot's cache; the cache of
//! another pilot on this machine (a peer whose cache this agent can read: same resource
//! host and machine label); then the pilot stores listed in its record, in order. Every
//! arrival is checked against the data unit's checksums. The agent publishes a
//! [`DataEvent`] for each data unit that arrives, naming the unit it came for, the bytes
//! moved and where from, so the manager places later units next to it and the report
//! counts what moved.
//!
//! **Outputs.** After a unit's process ended well, each of its `output_data` is the set
//! of files matching its patterns in the unit's sandbox. They go into this pilot's cache
//! and, when the output names a pilot store, into that store; the data unit's record goes
//! to the coordination store and a [`DataEvent`] says where it is, before the unit is
//! reported `Done`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use pstar_coordination::{
    Coordination, DataEvent, DataUnitRecord, Event, PilotRecord, StoreReplica, Transfer,
};
use pstar_data::{Store, StoreUrl};
use pstar_model::{
    ComputeUnitDescription, DataFile, DataUnitState, OutputData, PilotId, UnitId, sandbox,
};
use tokio::sync::OnceCell;

use crate::journal::Reports;

/// The name of the marker of a data unit complete in a cache.
const COMPLETE: &str = ".complete";

/// What arrived for one unit.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Moved {
    pub bytes: u64,
}

/// A data unit present in this pilot's cache.
#[derive(Debug)]
struct Cached {
    dir: PathBuf,
    files: Vec<DataFile>,
    /// The unit it was moved here for, and the bytes that moved.
    fetched_for: Option<UnitId>,
    moved: u64,
    /// Each file's modification time when it was checked, to tell a file changed in the
    /// cache since (a unit can write through its links despite their mode).
    stamps: Vec<Option<std::time::SystemTime>>,
}

impl Cached {
    fn new(dir: PathBuf, files: Vec<DataFile>, fetched_for: Option<UnitId>, moved: u64) -> Self {
        let stamps = files.iter().map(|f| stamp(&dir.join(&f.path))).collect();
        Self {
            dir,
            files,
            fetched_for,
            moved,
            stamps,
        }
    }

    /// Every file is still as it was checked: same size, not modified since.
    fn intact(&self) -> bool {
        self.files.iter().zip(&self.stamps).all(|(f, at)| {
            let path = self.dir.join(&f.path);
            at.is_some()
                && std::fs::metadata(&path).is_ok_and(|m| m.len() == f.size)
                && stamp(&path) == *at
        })
    }
}

fn stamp(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A data unit in (or on its way into) the cache: one transfer, its result shared.
type Present = Arc<OnceCell<Result<Arc<Cached>, String>>>;

/// The pilot's cache and the stores it reads from and writes to.
pub(crate) struct Stager {
    coordination: Arc<dyn Coordination>,
    record: Arc<PilotRecord>,
    events: Reports,
    /// `<pilot sandbox>/data`.
    cache: PathBuf,
    /// Data units in (or on their way into) the cache: one transfer each.
    present: Mutex<HashMap<String, Present>>,
    /// Open stores, by URL.
    stores: tokio::sync::Mutex<HashMap<String, Arc<Store>>>,
    /// What the cache holds, for its limit (`cache_size`): size and last use of each data
    /// unit in it.
    held: Mutex<HashMap<String, (u64, std::time::Instant)>>,
}

impl Stager {
    pub(crate) fn new(
        coordination: Arc<dyn Coordination>,
        record: Arc<PilotRecord>,
        events: Reports,
    ) -> Self {
        Self {
            cache: cache_dir(&record.sandbox),
            coordination,
            record,
            events,
            present: Mutex::new(HashMap::new()),
            stores: tokio::sync::Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
        }
    }

    fn me(&self) -> PilotId {
        self.record.id
    }

    async fn store(&self, url: &str) -> Result<Arc<Store>, String> {
        let mut stores = self.stores.lock().await;
        if let Some(s) = stores.get(url) {
            return Ok(s.clone());
        }
        let parsed: StoreUrl = url
            .parse()
            .map_err(|e: pstar_data::DataError| e.to_string())?;
        let store = Arc::new(Store::open(&parsed).await.map_err(|e| e.to_string())?);
        stores.insert(url.to_owned(), store.clone());
        Ok(store)
    }

    /// Makes every input data unit of `desc` present in `unit`'s sandbox.
    pub(crate) async fn stage_in(
        &self,
        unit: UnitId,
        desc: &ComputeUnitDescription,
    ) -> Result<Moved, String> {
        let records = self
            .coordination
            .data_units(&desc.input_data)
            .await
            .map_err(|e| format!("cannot read the input data units' records: {e}"))?;
        let unit_dir = sandbox::unit_sandbox(&self.record.sandbox, unit).join("data");
        let mut moved = Moved::default();
        for (name, record) in desc.input_data.iter().zip(records) {
            let record = record.ok_or_else(|| {
                format!("input data unit {name} is not in the coordination store")
            })?;
            let mut tries = 0;
            let cached = loop {
                tries += 1;
                let cell = {
                    let mut present = self.present.lock().map_err(|_| "cache lock poisoned")?;
                    present.entry(name.clone()).or_default().clone()
                };
                let cached = cell.get_or_init(|| self.fetch(&record, unit)).await.clone();
                let forget = || {
                    if let Ok(mut present) = self.present.lock()
                        && present.get(name).is_some_and(|c| Arc::ptr_eq(c, &cell))
                    {
                        present.remove(name);
                    }
                };
                match cached {
                    Ok(c) if c.intact() => break c,
                    Ok(_) if tries < 2 => {
                        // Changed in the cache since it arrived (a unit wrote through its
                        // links): it is fetched again, and checked again.
                        tracing::warn!(pilot = %self.me(), data_unit = %name, "changed in the cache: fetching it again");
                        forget();
                        let _ = std::fs::remove_dir_all(self.cache.join(name));
                    }
                    Ok(_) => {
                        forget();
                        return Err(format!(
                            "input data unit {name} changed in {}'s cache as it was staged",
                            self.me()
                        ));
                    }
                    Err(e) => {
                        // A later unit tries again.
                        forget();
                        return Err(e);
                    }
                }
            };
            if cached.fetched_for == Some(unit) {
                moved.bytes += cached.moved;
            }
            self.used(name, record.size());
            link_into(&cached, &unit_dir.join(name))
                .map_err(|e| format!("input data unit {name}: {e}"))?;
        }
        Ok(moved)
    }

    /// Brings a data unit into this pilot's cache for `unit`.
    async fn fetch(&self, record: &DataUnitRecord, unit: UnitId) -> Result<Arc<Cached>, String> {
        let dir = self.cache.join(&record.name);
        let cached = |moved| {
            Arc::new(Cached::new(
                dir.clone(),
                record.files.clone(),
                Some(unit),
                moved,
            ))
        };
        if dir.join(COMPLETE).exists() {
            // Left by an earlier agent of this pilot: taken if its files are whole.
            let found = cached(0);
            let whole = record
                .files
                .iter()
                .all(|f| std::fs::metadata(dir.join(&f.path)).is_ok_and(|m| m.len() == f.size));
            if whole {
                return Ok(found);
            }
        }
        self.make_room(&record.name, record.size())?;
        let _ = std::fs::remove_dir_all(&dir);
        let mut errors = Vec::new();
        // A peer on this machine first.
        for (peer, peer_cache) in self.peers().await {
            let there = peer_cache.join(&record.name);
            if !there.join(COMPLETE).exists() {
                continue;
            }
            match copy_local(&there, &dir, &record.files).await {
                Ok(bytes) => {
                    self.arrived(record, unit, bytes, &peer.to_string());
                    return Ok(cached(bytes));
                }
                Err(e) => errors.push(format!("{peer}'s cache: {e}")),
            }
        }
        for replica in &record.replicas {
            match self.download(replica, &dir, &record.files).await {
                Ok(bytes) => {
                    self.arrived(record, unit, bytes, &replica.store);
                    return Ok(cached(bytes));
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    errors.push(e);
                }
            }
        }
        if errors.is_empty() {
            errors.push("no store holds it".into());
        }
        Err(format!(
            "input data unit {} could not be staged: {}",
            record.name,
            errors.join("; ")
        ))
    }

    async fn download(
        &self,
        replica: &StoreReplica,
        dir: &Path,
        files: &[DataFile],
    ) -> Result<u64, String> {
        let store = self.store(&replica.url).await?;
        let mut bytes = 0;
        for f in files {
            let key = format!("{}/{}", replica.prefix, f.path);
            bytes += store
                .get_file(&key, &dir.join(&f.path), f)
                .await
                .map_err(|e| e.to_string())?;
            read_only(&dir.join(&f.path));
        }
        std::fs::write(dir.join(COMPLETE), b"").map_err(|e| e.to_string())?;
        Ok(bytes)
    }

    /// Notes that data unit `name` of `size` bytes is in the cache and was used now.
    fn used(&self, name: &str, size: u64) {
        if let Ok(mut held) = self.held.lock() {
            held.insert(name.to_owned(), (size, std::time::Instant::now()));
        }
    }

    /// Makes room in the cache for `size` more bytes (data unit `name`), evicting the data
    /// units used least recently; units that run with an evicted one keep their links to
    /// its files. Fails if `size` alone is beyond the cache's limit.
    fn make_room(&self, name: &str, size: u64) -> Result<(), String> {
        let Some(limit) = self.record.description.cache_size else {
            return Ok(());
        };
        if size > limit {
            return Err(format!(
                "data unit {name} ({size} bytes) is larger than {}'s cache ({limit} bytes, \
                 its `cache` setting)",
                self.me()
            ));
        }
        let Ok(mut held) = self.held.lock() else {
            return Ok(());
        };
        let mut total: u64 = held.values().map(|(s, _)| s).sum();
        while total + size > limit {
            let Some(oldest) = held
                .iter()
                .filter(|(n, _)| n.as_str() != name)
                .min_by_key(|(_, (_, at))| *at)
                .map(|(n, _)| n.clone())
            else {
                break;
            };
            if let Some((s, _)) = held.remove(&oldest) {
                total -= s;
            }
            if let Ok(mut present) = self.present.lock() {
                present.remove(&oldest);
            }
            let _ = std::fs::remove_dir_all(self.cache.join(&oldest));
            tracing::info!(pilot = %self.me(), data_unit = %oldest, "evicted from the cache");
        }
        Ok(())
    }

    /// Stores an output's files (in `dir`) under `<session>/<name>/` of the store at `url`;
    /// returns that prefix and the bytes sent.
    async fn upload(
        &self,
        url: &str,
        name: &str,
        dir: &Path,
        files: &[DataFile],
    ) -> Result<(String, u64), String> {
        let store = self.store(url).await?;
        let prefix = format!("{}/{}", self.coordination.session(), name);
        let mut bytes = 0;
        for f in files {
            let key = format!("{prefix}/{}", f.path);
            let stored = store
                .put_file(&dir.join(&f.path), &key)
                .await
                .map_err(|e| format!("output data unit {name}: {e}"))?;
            if stored.sha256 != f.sha256 {
                let _ = store.delete_prefix(&prefix).await;
                return Err(format!(
                    "output data unit {name}: {} changed while it was stored",
                    f.path
                ));
            }
            bytes += stored.size;
        }
        Ok((prefix, bytes))
    }

    /// A data unit arrived in the cache: the manager hears where it is and what moved.
    fn arrived(&self, record: &DataUnitRecord, unit: UnitId, bytes: u64, from: &str) {
        let _ = self.events.send(Event::Data(DataEvent {
            size: record.size(),
            pilot: Some(self.me()),
            unit: Some(unit),
            moved: bytes,
            from: Some(from.to_owned()),
            transfer: Some(Transfer::StageIn),
            ..DataEvent::new(&record.name, DataUnitState::Running)
        }));
    }

    /// Caches of other pilots on this machine that this agent can read (asked at each
    /// miss of this pilot's cache: pilots come and go).
    async fn peers(&self) -> Vec<(PilotId, PathBuf)> {
        let Ok(all) = self.coordination.all_pilots().await else {
            return Vec::new();
        };
        let mine = &self.record.description;
        all.into_iter()
            .filter(|p| p.id != self.me())
            .filter(|p| {
                p.description.resource.host() == mine.resource.host()
                    && p.description.affinity.machine == mine.affinity.machine
            })
            .map(|p| (p.id, cache_dir(&p.sandbox)))
            .collect()
    }

    /// Whether `desc`'s inputs in this pilot's cache are still as they arrived (a unit
    /// that ran meanwhile may have written through its links): checked right before the
    /// unit starts.
    pub(crate) fn inputs_intact(&self, desc: &ComputeUnitDescription) -> Result<(), String> {
        let Ok(present) = self.present.lock() else {
            return Ok(());
        };
        for name in &desc.input_data {
            if let Some(Ok(cached)) = present.get(name).and_then(|cell| cell.get())
                && !cached.intact()
            {
                return Err(format!(
                    "input data unit {name} changed in {}'s cache after it was staged for \
                     this unit: it is staged again",
                    self.me()
                ));
            }
        }
        Ok(())
    }

    /// Stores `desc`'s output data units from `unit`'s sandbox; returns the bytes moved.
    pub(crate) async fn stage_out(
        &self,
        unit: UnitId,
        desc: &ComputeUnitDescription,
    ) -> Result<Moved, String> {
        let sandbox = sandbox::unit_sandbox(&self.record.sandbox, unit);
        let mut moved = Moved::default();
        let mut records = Vec::new();
        let mut events = Vec::new();
        for out in &desc.output_data {
            let (record, bytes, event) = self.store_output(unit, &sandbox, out).await?;
            moved.bytes += bytes;
            records.push(record);
            events.push(event);
        }
        self.coordination
            .put_data_units(&records)
            .await
            .map_err(|e| format!("cannot record the output data units: {e}"))?;
        for e in events {
            let _ = self.events.send(e);
        }
        Ok(moved)
    }

    async fn store_output(
        &self,
        unit: UnitId,
        sandbox: &Path,
        out: &OutputData,
    ) -> Result<(DataUnitRecord, u64, Event), String> {
        let name = &out.name;
        let mut found: Vec<(PathBuf, String)> = Vec::new();
        for pattern in &out.files {
            let files = match_outputs(sandbox, pattern)
                .map_err(|e| format!("output data unit {name}: {e}"))?;
            if files.is_empty() && !out.allow_empty {
                return Err(format!(
                    "output data unit {name}: pattern {pattern:?} matched no file in {}",
                    sandbox.display()
                ));
            }
            found.extend(files);
        }
        found.sort_by(|a, b| a.1.cmp(&b.1));
        found.dedup_by(|a, b| a.1 == b.1);
        // Into this pilot's cache first (a later unit here reads it from there).
        let dir = self.cache.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("output data unit {name}: {}: {e}", dir.display()))?;
        let mut files = Vec::with_capacity(found.len());
        for (local, path) in &found {
            let to = dir.join(path);
            let f = {
                let (local, to, path) = (local.clone(), to.clone(), path.clone());
                tokio::task::spawn_blocking(move || -> Result<DataFile, String> {
                    if let Some(parent) = to.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                    }
                    // A file only the sandbox holds is linked into the cache (no copy);
                    // a link's target, or a file with other names (a hard link to a file
                    // elsewhere), is copied, so that nothing outside the sandbox is
                    // shared with the cache or its readers.
                    use std::os::unix::fs::MetadataExt;
                    let own = std::fs::symlink_metadata(&local)
                        .is_ok_and(|m| m.file_type().is_file() && m.nlink() == 1);
                    if !own || std::fs::hard_link(&local, &to).is_err() {
                        std::fs::copy(&local, &to).map_err(|e| {
                            format!("cannot copy {} to {}: {e}", local.display(), to.display())
                        })?;
                    }
                    read_only(&to);
                    let d = pstar_data::hash_file(&to).map_err(|e| e.to_string())?;
                    Ok(DataFile {
                        path,
                        size: d.size,
                        sha256: d.sha256,
                    })
                })
                .await
                .map_err(|e| e.to_string())??
            };
            files.push(f);
        }
        std::fs::write(dir.join(COMPLETE), b"")
            .map_err(|e| format!("output data unit {name}: {}: {e}", dir.display()))?;
        let size: u64 = files.iter().map(|f| f.size).sum();
        // An output beyond the cache's limit is kept anyway (it is the only copy until
        // stored); older data units make room for it.
        let _ = self.make_room(
            name,
            size.min(self.record.description.cache_size.unwrap_or(u64::MAX)),
        );
        self.used(name, size);
        let me = self.me().to_string();
        let mut replicas = Vec::new();
        let mut bytes = 0;
        let mut store_name = None;
        if let Some(url) = &out.store_url {
            let target = out.store.clone().unwrap_or_else(|| url.clone());
            // The store's quota is shared with the manager and the other agents: the
            // output's size is reserved first.
            let reserved = self
                .coordination
                .reserve_space(&target, size, out.store_quota)
                .await
                .map_err(|e| format!("output data unit {name}: {e}"))?;
            if let Err(used) = reserved {
                return Err(format!(
                    "output data unit {name} {}",
                    pstar_model::quota_refusal(
                        size,
                        &target,
                        used,
                        out.store_quota.unwrap_or(u64::MAX)
                    )
                ));
            }
            let stored = self.upload(url, name, &dir, &files).await;
            let (prefix, sent) = match stored {
                Ok(done) => done,
                Err(e) => {
                    let _ = self.coordination.release_space(&target, size).await;
                    return Err(e);
                }
            };
            bytes += sent;
            let store = target;
            replicas.push(StoreReplica {
                store: store.clone(),
                url: url.clone(),
                prefix,
            });
            store_name = Some(store);
        }
        replicas.push(StoreReplica {
            store: me.clone(),
            url: format!("file://{}", self.cache.display()),
            prefix: name.clone(),
        });
        if let Ok(mut present) = self.present.lock() {
            let cell = OnceCell::new_with(Some(Ok(Arc::new(Cached::new(
                dir.clone(),
                files.clone(),
                None,
                0,
            )))));
            present.insert(name.clone(), Arc::new(cell));
        }
        let record = DataUnitRecord {
            name: name.clone(),
            files,
            replicas,
        };
        let event = Event::Data(DataEvent {
            size: record.size(),
            pilot: Some(self.me()),
            store: store_name,
            unit: Some(unit),
            moved: bytes,
            from: Some(me),
            transfer: Some(Transfer::StageOut),
            ..DataEvent::new(name.clone(), DataUnitState::Running)
        });
        Ok((record, bytes, event))
    }
}

/// The regular files `pattern` matches in `sandbox`, with their paths relative to it; a
/// matched directory stands for every file below it. The unit's inputs (`data/`) are left
/// out unless the pattern names them (`data/...`).
fn match_outputs(sandbox: &Path, pattern: &str) -> Result<Vec<(PathBuf, String)>, String> {
    let full = sandbox.join(pattern);
    let text = full
        .to_str()
        .ok_or_else(|| format!("pattern {pattern:?} is not UTF-8"))?;
    let escaped = glob::Pattern::escape(&sandbox.to_string_lossy());
    let rel_pattern = text
        .strip_prefix(sandbox.to_string_lossy().as_ref())
        .unwrap_or(text);
    let spec = format!("{escaped}{rel_pattern}");
    let matches = glob::glob(&spec).map_err(|e| format!("pattern {pattern:?}: {e}"))?;
    let inputs = sandbox.join("data");
    let mut found = Vec::new();
    let mut stack: Vec<PathBuf> = Vec::new();
    for m in matches {
        let path = m.map_err(|e| e.to_string())?;
        if path.starts_with(&inputs) && !pattern.starts_with("data/") {
            continue;
        }
        stack.push(path);
    }
    // Links are taken only to regular files inside the sandbox (a unit cannot make
    // pstar store what lies outside it); links to directories are not followed (no loops).
    let root = sandbox
        .canonicalize()
        .map_err(|e| format!("{}: {e}", sandbox.display()))?;
    while let Some(path) = stack.pop() {
        // Whatever the path, what it names must be inside the sandbox: a pattern can pass
        // through a linked directory (`a/b/*` with `a/b` a link elsewhere).
        let real = path
            .canonicalize()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if !real.starts_with(&root) {
            return Err(format!(
                "{} is {}, not a file of the unit's sandbox (through a link)",
                path.display(),
                real.display()
            ));
        }
        let meta =
            std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.file_type().is_symlink() {
            let target = path.canonicalize().ok();
            let inside = target.as_ref().filter(|t| t.starts_with(&root));
            if inside.is_some_and(|t| t.is_dir()) {
                continue; // not followed: it is in the sandbox, its files are matched as such
            }
            if !inside.is_some_and(|t| t.is_file()) {
                return Err(format!(
                    "{} is a link to {}, not to a file of the unit's sandbox",
                    path.display(),
                    target.map_or_else(|| "nothing".to_owned(), |t| t.display().to_string())
                ));
            }
        } else if meta.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(|e| format!("{}: {e}", path.display()))? {
                stack.push(entry.map_err(|e| e.to_string())?.path());
            }
            continue;
        } else if !meta.is_file() {
            continue; // a FIFO, a socket, a device: not data
        }
        let rel = path
            .strip_prefix(sandbox)
            .map_err(|_| format!("{} is outside the sandbox", path.display()))?;
        let rel = rel
            .to_str()
            .ok_or_else(|| format!("{} is not UTF-8", rel.display()))?
            .to_owned();
        pstar_model::check_data_path(&rel).map_err(|e| e.to_string())?;
        found.push((path, rel));
    }
    Ok(found)
}

/// A pilot's cache directory.
fn cache_dir(pilot_sandbox: &Path) -> PathBuf {
    pilot_sandbox.join("data")
}

fn read_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444));
}

/// Puts a cached data unit's files under `to` (hard links, or copies across file systems).
fn link_into(cached: &Cached, to: &Path) -> Result<(), String> {
    for f in &cached.files {
        let from = cached.dir.join(&f.path);
        let dest = to.join(&f.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let _ = std::fs::remove_file(&dest);
        if std::fs::hard_link(&from, &dest).is_err() {
            std::fs::copy(&from, &dest).map_err(|e| {
                format!("cannot copy {} to {}: {e}", from.display(), dest.display())
            })?;
        }
    }
    Ok(())
}

/// Copies a data unit from another pilot's cache on this machine, checking every file.
async fn copy_local(from: &Path, to: &Path, files: &[DataFile]) -> Result<u64, String> {
    let (from, to, files) = (from.to_owned(), to.to_owned(), files.to_vec());
    tokio::task::spawn_blocking(move || {
        let mut bytes = 0;
        for f in &files {
            let (src, dest) = (from.join(&f.path), to.join(&f.path));
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::copy(&src, &dest).map_err(|e| format!("{}: {e}", src.display()))?;
            let d = pstar_data::hash_file(&dest).map_err(|e| e.to_string())?;
            if d.sha256 != f.sha256 || d.size != f.size {
                let _ = std::fs::remove_dir_all(&to);
                return Err(format!(
                    "{} does not match its checksum (expected {}, found {})",
                    src.display(),
                    f.sha256,
                    d.sha256
                ));
            }
            read_only(&dest);
            bytes += d.size;
        }
        std::fs::write(to.join(COMPLETE), b"").map_err(|e| e.to_string())?;
        Ok(bytes)
    })
    .await
    .map_err(|e| e.to_string())?
}
