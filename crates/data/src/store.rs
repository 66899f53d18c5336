//! A pilot store, opened: streamed, checksummed transfers in and out of it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use opendal::Operator;
use tokio::sync::mpsc;

use pstar_model::DataFile;

use crate::S3_ENDPOINT_ENV;
use crate::error::{DataError, Result};
use crate::files::{CHUNK, Digest, Hasher};
use crate::s3env::S3Settings;
use crate::sftp::{SftpStore, SftpUpload, unique};
use crate::url::{Kind, StoreUrl};

/// How long one step of a transfer (connecting, a chunk read or written, a listing) may
/// take before the store counts as gone.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Chunks handed between the local file and the store at once (each [`CHUNK`] bytes).
const PIPELINE: usize = 4;
/// Parallel part uploads and ranged reads on S3.
const S3_CONCURRENCY: usize = 4;
/// Where the file store keeps files being written (renamed into place when whole).
const FS_PARTIAL_DIR: &str = ".pstar-partial";

/// An open pilot store. Keys are `/`-separated relative paths under the URL's directory
/// or prefix (checked with [`pstar_model::check_data_path`]). Cheap to share behind an
/// `Arc`; every method takes `&self`.
pub struct Store {
    url: StoreUrl,
    /// The URL as shown in messages.
    name: String,
    backend: Backend,
    timeout: Duration,
}

enum Backend {
    /// `file://` and `s3://`, through OpenDAL.
    Dal(Operator),
    Sftp(SftpStore),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.name).finish()
    }
}

impl Store {
    /// Opens the store at `url`. A `file://` directory is created if missing; S3 settings
    /// are read from the environment now; an SFTP connection is made on first use.
    pub async fn open(url: &StoreUrl) -> Result<Store> {
        Self::open_with_timeout(url, DEFAULT_TIMEOUT).await
    }

    /// Like [`open`](Self::open), with another limit for each step of a transfer.
    pub async fn open_with_timeout(url: &StoreUrl, timeout: Duration) -> Result<Store> {
        let name = url.to_string();
        let dal = |e: opendal::Error| DataError::Store {
            store: name.clone(),
            op: "open",
            key: String::new(),
            reason: e.to_string(),
        };
        let layer = opendal::layers::TimeoutLayer::new()
            .with_timeout(timeout)
            .with_io_timeout(timeout);
        let backend = match &url.kind {
            Kind::File { root } => {
                let partial = root.join(FS_PARTIAL_DIR);
                tokio::fs::create_dir_all(&partial)
                    .await
                    .map_err(|e| DataError::Store {
                        store: name.clone(),
                        op: "open",
                        key: String::new(),
                        reason: format!("cannot create the directory: {e}"),
                    })?;
                let Some(root_text) = root.to_str() else {
                    return Err(DataError::Url {
                        url: name.clone(),
                        reason: "not a UTF-8 path".into(),
                    });
                };
                // Transfers read and write the files directly; OpenDAL lists and deletes.
                let builder = opendal::services::Fs::default().root(root_text);
                Backend::Dal(Operator::new(builder).map_err(dal)?.layer(layer))
            }
            Kind::S3 { bucket, prefix } => {
                let s3 = S3Settings::from_env()?;
                let mut builder = opendal::services::S3::default()
                    .bucket(bucket)
                    .root(&format!("/{prefix}"))
                    .region(&s3.region)
                    .access_key_id(&s3.access_key_id)
                    .secret_access_key(&s3.secret_access_key)
                    .disable_config_load()
                    .disable_ec2_metadata();
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.endpoint(endpoint);
                }
                if let Some(token) = &s3.session_token {
                    builder = builder.session_token(token);
                }
                let op = Operator::new(builder).map_err(dal)?;
                let http = http_client(timeout).map_err(|reason| DataError::Store {
                    store: name.clone(),
                    op: "open",
                    key: String::new(),
                    reason,
                })?;
                let context = op.context().with_http_transport(http);
                Backend::Dal(op.with_context(context).layer(layer))
            }
            Kind::Sftp {
                user,
                host,
                port,
                root,
            } => Backend::Sftp(SftpStore::new(
                name.clone(),
                user.clone(),
                host.clone(),
                *port,
                root.clone(),
                timeout,
            )),
        };
        // An S3 store's messages say which server they went to.
        let name = match &url.kind {
            Kind::S3 { .. } => match S3Settings::from_env()?.endpoint {
                Some(endpoint) => format!("{name} at {endpoint}"),
                None => format!(
                    "{name} at AWS (no {S3_ENDPOINT_ENV} or AWS_ENDPOINT_URL names another server)"
                ),
            },
            _ => name,
        };
        Ok(Store {
            url: url.clone(),
            name,
            backend,
            timeout,
        })
    }

    /// Checks that the store is there and usable now: the directory exists (made if
    /// missing, for file and SFTP stores), the SFTP host lets us in, the S3 bucket exists
    /// and the credentials are accepted. Within the store's time limit.
    pub async fn check(&self) -> Result<()> {
        match &self.backend {
            Backend::Sftp(s) => s.check().await,
            Backend::Dal(op) => {
                let listed = async {
                    let mut lister = op.lister_with("").limit(1).await?;
                    lister.try_next().await.map(|_| ())
                }
                .await;
                match listed {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == opendal::ErrorKind::NotFound => Err(DataError::Store {
                        store: self.name.clone(),
                        op: "check",
                        key: String::new(),
                        reason: match self.url.local_root() {
                            Some(_) => "the directory is gone".to_owned(),
                            None => "no such bucket".to_owned(),
                        },
                    }),
                    Err(e) => Err(self.dal_error("check", "", e)),
                }
            }
        }
    }

    /// The store's URL.
    pub fn url(&self) -> &StoreUrl {
        &self.url
    }

    /// For a `file://` store, where a key's file is (or would be) on this machine, so that
    /// a sandbox can link to it instead of copying it. `None` for other stores or a bad
    /// key.
    pub fn local_path(&self, key: &str) -> Option<PathBuf> {
        let root = self.url.local_root()?;
        pstar_model::check_data_path(key).ok()?;
        Some(root.join(key))
    }

    /// Uploads a local file as `key`, streaming it in chunks and computing its size and
    /// SHA-256 on the way. The key appears whole or not at all. The [`DataFile`]'s path
    /// is the key.
    pub async fn put_file(&self, local: &Path, key: &str) -> Result<DataFile> {
        self.check_key(key)?;
        let source = local_source(local)?;
        let sink = self.sink(key).await?;
        let digest = pump(source, sink, None).await?;
        Ok(DataFile {
            path: key.to_owned(),
            size: digest.size,
            sha256: digest.sha256,
        })
    }

    /// Downloads `key` to `local`: streamed to a temporary file beside it, checked against
    /// `expect`'s size and SHA-256, then renamed to `local` (parent directories are
    /// made). On a mismatch ([`DataError::Checksum`]) or any other failure nothing is left
    /// behind. Returns the bytes received.
    pub async fn get_file(&self, key: &str, local: &Path, expect: &DataFile) -> Result<u64> {
        self.check_key(key)?;
        let parent = local
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let Some(name) = local.file_name().and_then(|n| n.to_str()) else {
            return Err(DataError::local(local, "names no file"));
        };
        let source = self.source(key).await?;
        let tmp = parent.join(format!(".{name}.pstar-part.{}", unique()));
        let sink = Sink::Local(LocalSink::create(tmp, local.to_owned())?);
        let digest = pump(source, sink, Some((self, key, expect))).await?;
        Ok(digest.size)
    }

    /// Copies `key` to `dest_key` of another store (or this one), streamed through this
    /// process and checked against `expect` before the copy becomes visible there.
    /// Returns the bytes moved.
    pub async fn copy_to(
        &self,
        key: &str,
        dest: &Store,
        dest_key: &str,
        expect: &DataFile,
    ) -> Result<u64> {
        self.check_key(key)?;
        dest.check_key(dest_key)?;
        let source = self.source(key).await?;
        let sink = dest.sink(dest_key).await?;
        let digest = pump(source, sink, Some((self, key, expect))).await?;
        Ok(digest.size)
    }

    /// Every file under `prefix` (a key's directory, or "" for the whole store),
    /// recursively, with its size; keys relative to the store, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let prefix = self.check_prefix(prefix)?;
        let mut out = match &self.backend {
            Backend::Sftp(s) => s.list(prefix).await?,
            Backend::Dal(op) => {
                let dir = if prefix.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}/")
                };
                let listed = op.lister_with(&dir).recursive(true).await;
                let entries = match listed {
                    Ok(lister) => lister.try_collect::<Vec<_>>().await,
                    Err(e) => Err(e),
                };
                let entries = match entries {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == opendal::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(self.dal_error("list", prefix, e)),
                };
                let mut files = Vec::new();
                for entry in entries {
                    if !entry.metadata().is_file() {
                        continue;
                    }
                    let key = entry.path().trim_start_matches('/');
                    if key.starts_with(FS_PARTIAL_DIR) && self.url.local_root().is_some() {
                        continue;
                    }
                    let size = if entry.metadata().content_length() > 0 {
                        entry.metadata().content_length()
                    } else {
                        // Some listings leave the size out: ask.
                        op.stat(entry.path())
                            .await
                            .map(|m| m.content_length())
                            .unwrap_or(0)
                    };
                    files.push((key.to_owned(), size));
                }
                files
            }
        };
        out.sort();
        Ok(out)
    }

    /// Deletes every file under `prefix` (a key's directory or a key); "" empties the
    /// store. Deleting what is not there is not an error.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let prefix = self.check_prefix(prefix)?;
        match &self.backend {
            Backend::Sftp(s) => s.delete_prefix(prefix).await,
            Backend::Dal(op) => {
                let keys = self.list(prefix).await?;
                for (key, _) in &keys {
                    match op.delete(key).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == opendal::ErrorKind::NotFound => {}
                        Err(e) => return Err(self.dal_error("delete", key, e)),
                    }
                }
                if !prefix.is_empty() && keys.is_empty() {
                    // A single key named as the prefix.
                    match op.delete(prefix).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == opendal::ErrorKind::NotFound => {}
                        Err(e) => return Err(self.dal_error("delete", prefix, e)),
                    }
                }
                if let (Some(root), false) = (self.url.local_root(), prefix.is_empty()) {
                    // Directories left empty go too (the store's own stays).
                    remove_empty_dirs(&root.join(prefix));
                }
                Ok(())
            }
        }
    }

    /// Bytes held under `prefix` ("" for the whole store).
    pub async fn usage(&self, prefix: &str) -> Result<u64> {
        Ok(self.list(prefix).await?.iter().map(|(_, size)| size).sum())
    }

    fn check_key(&self, key: &str) -> Result<()> {
        pstar_model::check_data_path(key).map_err(|source| DataError::Key {
            store: self.name.clone(),
            source,
        })
    }

    /// "" or a key; trailing `/` allowed.
    fn check_prefix<'a>(&self, prefix: &'a str) -> Result<&'a str> {
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            self.check_key(prefix)?;
        }
        Ok(prefix)
    }

    fn verify(&self, key: &str, expect: &DataFile, found: &Digest, received: u64) -> Result<()> {
        if received == expect.size && found.size == expect.size && found.sha256 == expect.sha256 {
            return Ok(());
        }
        Err(DataError::Checksum {
            store: self.name.clone(),
            key: key.to_owned(),
            expected: expect.sha256.clone(),
            found: if received > expect.size {
                "(not computed: more bytes than expected)".to_owned()
            } else {
                found.sha256.clone()
            },
            expected_size: expect.size,
            found_size: received.max(found.size),
        })
    }

    fn dal_error(&self, op: &'static str, key: &str, e: opendal::Error) -> DataError {
        match e.kind() {
            opendal::ErrorKind::NotFound => DataError::NotFound {
                store: self.name.clone(),
                key: key.to_owned(),
            },
            _ if e.message().contains("timeout") || e.to_string().contains("timed out") => {
                DataError::Timeout {
                    store: self.name.clone(),
                    op,
                    key: key.to_owned(),
                    after: self.timeout,
                }
            }
            _ => DataError::Store {
                store: self.name.clone(),
                op,
                key: key.to_owned(),
                reason: dal_reason(&e),
            },
        }
    }

    /// The key's content, chunk by chunk.
    async fn source(&self, key: &str) -> Result<BoxStream<'static, Result<Bytes>>> {
        if let Some(root) = self.url.local_root() {
            // A file store's files are read directly, by a thread of their own.
            let path = root.join(key);
            let not_found = || DataError::NotFound {
                store: self.name.clone(),
                key: key.to_owned(),
            };
            return match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => local_source(&path),
                Ok(_) => Err(not_found()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(not_found()),
                Err(e) => Err(DataError::Store {
                    store: self.name.clone(),
                    op: "read",
                    key: key.to_owned(),
                    reason: e.to_string(),
                }),
            };
        }
        match &self.backend {
            Backend::Sftp(s) => s.read(key).await,
            Backend::Dal(op) => {
                // Ask first: a missing key is told apart from a broken store, and the size
                // bounds the ranged reads.
                let meta = op
                    .stat(key)
                    .await
                    .map_err(|e| self.dal_error("read", key, e))?;
                let size = meta.content_length();
                let reader = op
                    .reader_with(key)
                    .chunk(CHUNK)
                    .concurrent(S3_CONCURRENCY)
                    .await
                    .map_err(|e| self.dal_error("read", key, e))?;
                let stream = reader
                    .into_bytes_stream(0..size)
                    .await
                    .map_err(|e| self.dal_error("read", key, e))?;
                let name = self.name.clone();
                let key = key.to_owned();
                let timeout = self.timeout;
                Ok(stream
                    .map_err(move |e| io_error(&name, &key, timeout, e))
                    .boxed())
            }
        }
    }

    /// A writer of the key, which appears only on `commit`.
    async fn sink(&self, key: &str) -> Result<Sink<'_>> {
        if let Some(root) = self.url.local_root() {
            // A file store's files are written directly, by a thread of their own.
            let tmp =
                root.join(FS_PARTIAL_DIR)
                    .join(format!("{}.{}", unique(), key.replace('/', "_")));
            return Ok(Sink::Local(LocalSink::create(tmp, root.join(key))?));
        }
        match &self.backend {
            Backend::Sftp(s) => Ok(Sink::Sftp {
                upload: s.write(key).await?,
                store: s,
            }),
            Backend::Dal(op) => {
                let writer = op
                    .writer_with(key)
                    .chunk(CHUNK)
                    .concurrent(S3_CONCURRENCY)
                    .await
                    .map_err(|e| self.dal_error("write", key, e))?;
                Ok(Sink::Dal {
                    writer,
                    key: key.to_owned(),
                    store: self,
                })
            }
        }
    }
}

/// Moves a stream into a sink, hashing it on the way. With `expect` (the source store and
/// key, for the message), commits only what matches it, else drops what was written.
async fn pump(
    mut source: BoxStream<'static, Result<Bytes>>,
    mut sink: Sink<'_>,
    expect: Option<(&Store, &str, &DataFile)>,
) -> Result<Digest> {
    let mut hasher = Hasher::default();
    let limit = expect.map(|(_, _, f)| f.size).unwrap_or(u64::MAX);
    let mut received = 0u64;
    let moved: Result<()> = async {
        while let Some(chunk) = source.next().await {
            let chunk = chunk?;
            received += chunk.len() as u64;
            if received > limit {
                // Do not fetch gigabytes that cannot be right.
                break;
            }
            hasher.update(&chunk);
            sink.write(chunk).await?;
        }
        Ok(())
    }
    .await;
    drop(source);
    let digest = hasher.finish();
    let checked = moved.and_then(|()| match expect {
        Some((store, key, file)) => store.verify(key, file, &digest, received),
        None => Ok(()),
    });
    match checked {
        Ok(()) => {
            sink.commit().await?;
            Ok(digest)
        }
        Err(e) => {
            sink.abort().await;
            Err(e)
        }
    }
}

enum Sink<'a> {
    Dal {
        writer: opendal::Writer,
        key: String,
        store: &'a Store,
    },
    Sftp {
        upload: SftpUpload,
        store: &'a SftpStore,
    },
    Local(LocalSink),
}

impl Sink<'_> {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        match self {
            Sink::Dal { writer, key, store } => writer
                .write(chunk)
                .await
                .map_err(|e| store.dal_error("write", key, e)),
            Sink::Sftp { upload, store } => upload.write(store, chunk).await,
            Sink::Local(local) => local.write(chunk).await,
        }
    }

    async fn commit(self) -> Result<()> {
        match self {
            Sink::Dal {
                mut writer,
                key,
                store,
            } => writer
                .close()
                .await
                .map(|_| ())
                .map_err(|e| store.dal_error("write", &key, e)),
            Sink::Sftp { upload, store } => upload.commit(store).await,
            Sink::Local(local) => local.commit().await,
        }
    }

    /// Drops what was written (best effort: the store may be gone).
    async fn abort(self) {
        match self {
            Sink::Dal {
                mut writer, store, ..
            } => {
                let _ = tokio::time::timeout(store.timeout, writer.abort()).await;
            }
            Sink::Sftp { upload, store } => upload.abort(store).await,
            Sink::Local(local) => local.abort().await,
        }
    }
}

/// A local file being written by a thread of its own, under a temporary name until
/// `commit` renames it (making the final name's directories).
struct LocalSink {
    tx: Option<mpsc::Sender<Bytes>>,
    thread: Option<tokio::task::JoinHandle<Result<()>>>,
    tmp: PathBuf,
    dest: PathBuf,
    /// Renamed into place, or removed: nothing for `drop` to clean.
    done: bool,
}

impl LocalSink {
    fn create(tmp: PathBuf, dest: PathBuf) -> Result<Self> {
        if let Some(parent) = tmp.parent() {
            std::fs::create_dir_all(parent).map_err(|e| DataError::local(parent, e))?;
        }
        let file = std::fs::File::create(&tmp).map_err(|e| DataError::local(&tmp, e))?;
        let (tx, rx) = mpsc::channel::<Bytes>(PIPELINE);
        let path = tmp.clone();
        let thread = tokio::task::spawn_blocking(move || write_local(file, &path, rx));
        Ok(LocalSink {
            tx: Some(tx),
            thread: Some(thread),
            tmp,
            dest,
            done: false,
        })
    }

    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The writer stopped: it says why.
        self.finish().await?;
        Err(DataError::local(&self.tmp, "the writing thread stopped"))
    }

    async fn finish(&mut self) -> Result<()> {
        self.tx = None;
        match self.thread.take() {
            Some(thread) => thread.await.map_err(|e| {
                DataError::local(&self.tmp, format!("the writing thread failed: {e}"))
            })?,
            None => Ok(()),
        }
    }

    async fn commit(mut self) -> Result<()> {
        let result = async {
            self.finish().await?;
            if let Some(parent) = self.dest.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| DataError::local(parent, e))?;
            }
            tokio::fs::rename(&self.tmp, &self.dest)
                .await
                .map_err(|e| DataError::local(&self.dest, e))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&self.tmp).await;
        }
        self.done = true;
        result
    }

    async fn abort(mut self) {
        let _ = self.finish().await;
        let _ = tokio::fs::remove_file(&self.tmp).await;
        self.done = true;
    }
}

impl Drop for LocalSink {
    /// A transfer dropped half-way (cancelled) leaves no temporary file behind.
    fn drop(&mut self) {
        if !self.done {
            self.tx = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A local file's content, read in chunks by a thread of its own.
fn local_source(path: &Path) -> Result<BoxStream<'static, Result<Bytes>>> {
    let file = std::fs::File::open(path).map_err(|e| DataError::local(path, e))?;
    let (tx, rx) = mpsc::channel::<Result<Bytes>>(PIPELINE);
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || read_local(file, &path, tx));
    Ok(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed())
}

/// Reads a local file in chunks and hands them on; an error ends the stream.
fn read_local(mut file: std::fs::File, path: &Path, tx: mpsc::Sender<Result<Bytes>>) {
    use std::io::Read;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(DataError::local(path, e)));
                    return;
                }
            }
        }
        if filled == 0 {
            return;
        }
        buf.truncate(filled);
        // A closed channel: the receiver gave up, and says why.
        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() || filled < CHUNK {
            return;
        }
    }
}

/// Writes chunks to a local file until the channel closes.
fn write_local(mut file: std::fs::File, path: &Path, mut rx: mpsc::Receiver<Bytes>) -> Result<()> {
    use std::io::Write;
    while let Some(chunk) = rx.blocking_recv() {
        file.write_all(&chunk)
            .map_err(|e| DataError::local(path, e))?;
    }
    file.flush().map_err(|e| DataError::local(path, e))
}

fn remove_empty_dirs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_empty_dirs(&entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

fn io_error(store: &str, key: &str, timeout: Duration, e: std::io::Error) -> DataError {
    let text = e.to_string();
    if e.kind() == std::io::ErrorKind::TimedOut || text.contains("timeout") {
        return DataError::Timeout {
            store: store.to_owned(),
            op: "read",
            key: key.to_owned(),
            after: timeout,
        };
    }
    DataError::Store {
        store: store.to_owned(),
        op: "read",
        key: key.to_owned(),
        reason: format!("the transfer broke: {text}"),
    }
}

/// The telling part of an OpenDAL error: an S3 server's error code, else the innermost
/// cause (a refused connection, say), else OpenDAL's own message.
fn dal_reason(e: &opendal::Error) -> String {
    use std::error::Error;
    let full = format!("{e}");
    if let Some(code) = full
        .split_once("code: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(code, _)| code)
        .filter(|code| !code.is_empty())
    {
        let hint = match code {
            "NoSuchBucket" => " (no such bucket)",
            _ if full.contains("status: 403") => " (check the S3 credentials)",
            _ => "",
        };
        return format!("the S3 server answers {code}{hint}");
    }
    let mut innermost = None;
    let mut source = e.source();
    while let Some(s) = source {
        innermost = Some(s.to_string());
        source = s.source();
    }
    match innermost {
        Some(cause) => format!("{}: {cause}", e.message()),
        None => e.message().to_owned(),
    }
}

/// The HTTP client of S3 stores: connections bounded in time; TLS (https:// endpoints)
/// by rustls with ring, as for the coordination store's rediss://.
fn http_client(timeout: Duration) -> Result<opendal::HttpTransporter, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(30)))
        .read_timeout(timeout)
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    Ok(opendal::HttpTransporter::new(
        opendal_http_transport_reqwest::ReqwestTransport::new(client),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent shares stores between tasks and spawns transfers.
    #[test]
    fn stores_and_transfers_can_cross_tasks() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: T) {}
        let store: Option<Store> = None;
        send_sync(&store);
        if let Some(s) = &store {
            let file = DataFile {
                path: String::new(),
                size: 0,
                sha256: String::new(),
            };
            send(s.put_file(Path::new("x"), "x"));
            send(s.get_file("x", Path::new("x"), &file));
            send(s.copy_to("x", s, "y", &file));
            send(s.list(""));
            send(s.delete_prefix(""));
            send(s.usage(""));
        }
    }
}
