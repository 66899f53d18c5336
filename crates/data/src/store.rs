//! A pilot store, opened: streamed, checksummed transfers in and out of it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use opendal::Operator;
use tokio::sync::mpsc;

use pstar_model::DataFile;

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
                let (Some(root_text), Some(partial_text)) = (root.to_str(), partial.to_str())
                else {
                    return Err(DataError::Url {
                        url: name.clone(),
                        reason: "not a UTF-8 path".into(),
                    });
                };
                let builder = opendal::services::Fs::default()
                    .root(root_text)
                    .atomic_write_dir(partial_text);
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
        Ok(Store {
            url: url.clone(),
            name,
            backend,
            timeout,
        })
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
        let file = std::fs::File::open(local).map_err(|e| DataError::local(local, e))?;
        // A thread reads and hashes; this task sends.
        let (tx, mut rx) = mpsc::channel::<Bytes>(PIPELINE);
        let path = local.to_owned();
        let reader = tokio::task::spawn_blocking(move || read_local(file, &path, tx));
        let mut sink = self.sink(key).await?;
        let mut sent = Ok(());
        while let Some(chunk) = rx.recv().await {
            if let Err(e) = sink.write(self, chunk).await {
                sent = Err(e);
                break;
            }
        }
        drop(rx);
        let read = reader
            .await
            .map_err(|e| DataError::local(local, format!("the reading thread failed: {e}")));
        match (sent, read) {
            (Ok(()), Ok(Ok(digest))) => {
                sink.commit(self).await?;
                Ok(DataFile {
                    path: key.to_owned(),
                    size: digest.size,
                    sha256: digest.sha256,
                })
            }
            (Err(e), _) | (_, Err(e)) | (_, Ok(Err(e))) => {
                sink.abort(self).await;
                Err(e)
            }
        }
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
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| DataError::local(parent, e))?;
        let tmp = parent.join(format!(".{name}.pstar-part.{}", unique()));
        let file = std::fs::File::create(&tmp).map_err(|e| DataError::local(&tmp, e))?;
        let result = self.get_to(key, file, &tmp, expect).await;
        match result {
            Ok(size) => match tokio::fs::rename(&tmp, local).await {
                Ok(()) => Ok(size),
                Err(e) => {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    Err(DataError::local(local, e))
                }
            },
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    async fn get_to(
        &self,
        key: &str,
        file: std::fs::File,
        tmp: &Path,
        expect: &DataFile,
    ) -> Result<u64> {
        let mut source = self.source(key).await?;
        // A thread writes and hashes; this task receives.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(PIPELINE);
        let path = tmp.to_owned();
        let writer = tokio::task::spawn_blocking(move || write_local(file, &path, rx));
        let mut received = 0u64;
        let mut failed = None;
        while let Some(chunk) = source.next().await {
            match chunk {
                Ok(chunk) => {
                    received += chunk.len() as u64;
                    if received > expect.size {
                        // Do not fetch gigabytes that cannot be right.
                        break;
                    }
                    if tx.send(chunk).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        drop(source);
        let written = writer
            .await
            .map_err(|e| DataError::local(tmp, format!("the writing thread failed: {e}")))?;
        if let Some(e) = failed {
            return Err(e);
        }
        let digest = written?;
        self.verify(key, expect, &digest, received)?;
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
        let mut source = self.source(key).await?;
        let mut sink = dest.sink(dest_key).await?;
        let mut hasher = Hasher::default();
        let mut received = 0u64;
        let outcome: Result<()> = async {
            while let Some(chunk) = source.next().await {
                let chunk = chunk?;
                received += chunk.len() as u64;
                if received > expect.size {
                    break;
                }
                hasher.update(&chunk);
                sink.write(dest, chunk).await?;
            }
            Ok(())
        }
        .await;
        drop(source);
        let digest = hasher.finish();
        let checked = outcome.and_then(|()| self.verify(key, expect, &digest, received));
        match checked {
            Ok(()) => {
                sink.commit(dest).await?;
                Ok(digest.size)
            }
            Err(e) => {
                sink.abort(dest).await;
                Err(e)
            }
        }
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
                if let Some(root) = self.url.local_root() {
                    // Directories left empty go too (the store's own stays).
                    if !prefix.is_empty() {
                        remove_empty_dirs(&root.join(prefix));
                    }
                } else if !prefix.is_empty() && keys.is_empty() {
                    // A single key named as the prefix.
                    match op.delete(prefix).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == opendal::ErrorKind::NotFound => {}
                        Err(e) => return Err(self.dal_error("delete", prefix, e)),
                    }
                }
                if self.url.local_root().is_some() && !prefix.is_empty() && keys.is_empty() {
                    match op.delete(prefix).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == opendal::ErrorKind::NotFound => {}
                        Err(e) => return Err(self.dal_error("delete", prefix, e)),
                    }
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
                let concurrent = if self.url.local_root().is_some() {
                    1
                } else {
                    S3_CONCURRENCY
                };
                let reader = op
                    .reader_with(key)
                    .chunk(CHUNK)
                    .concurrent(concurrent)
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
    async fn sink(&self, key: &str) -> Result<Sink> {
        match &self.backend {
            Backend::Sftp(s) => Ok(Sink::Sftp(s.write(key).await?)),
            Backend::Dal(op) => {
                let concurrent = if self.url.local_root().is_some() {
                    1
                } else {
                    S3_CONCURRENCY
                };
                let writer = op
                    .writer_with(key)
                    .chunk(CHUNK)
                    .concurrent(concurrent)
                    .await
                    .map_err(|e| self.dal_error("write", key, e))?;
                Ok(Sink::Dal {
                    writer,
                    key: key.to_owned(),
                })
            }
        }
    }
}

enum Sink {
    Dal {
        writer: opendal::Writer,
        key: String,
    },
    Sftp(SftpUpload),
}

impl Sink {
    async fn write(&mut self, store: &Store, chunk: Bytes) -> Result<()> {
        match (self, &store.backend) {
            (Sink::Dal { writer, key }, _) => writer
                .write(chunk)
                .await
                .map_err(|e| store.dal_error("write", key, e)),
            (Sink::Sftp(upload), Backend::Sftp(s)) => upload.write(s, chunk).await,
            (Sink::Sftp(_), Backend::Dal(_)) => unreachable!("an SFTP upload of an SFTP store"),
        }
    }

    async fn commit(self, store: &Store) -> Result<()> {
        match (self, &store.backend) {
            (Sink::Dal { mut writer, key }, _) => writer
                .close()
                .await
                .map(|_| ())
                .map_err(|e| store.dal_error("write", &key, e)),
            (Sink::Sftp(upload), Backend::Sftp(s)) => upload.commit(s).await,
            (Sink::Sftp(_), Backend::Dal(_)) => unreachable!("an SFTP upload of an SFTP store"),
        }
    }

    /// Drops what was written (best effort: the store may be gone).
    async fn abort(self, store: &Store) {
        match (self, &store.backend) {
            (Sink::Dal { mut writer, .. }, _) => {
                let _ = tokio::time::timeout(store.timeout, writer.abort()).await;
            }
            (Sink::Sftp(upload), Backend::Sftp(s)) => upload.abort(s).await,
            (Sink::Sftp(_), Backend::Dal(_)) => {}
        }
    }
}

/// Reads a local file in chunks, hashing each, and hands them on.
fn read_local(mut file: std::fs::File, path: &Path, tx: mpsc::Sender<Bytes>) -> Result<Digest> {
    use std::io::Read;
    let mut hasher = Hasher::default();
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DataError::local(path, e)),
            }
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        hasher.update(&buf);
        if tx.blocking_send(Bytes::from(buf)).is_err() {
            // The sender gave up; it says why.
            break;
        }
        if filled < CHUNK {
            break;
        }
    }
    Ok(hasher.finish())
}

/// Writes chunks to a local file, hashing each.
fn write_local(
    mut file: std::fs::File,
    path: &Path,
    rx: std::sync::mpsc::Receiver<Bytes>,
) -> Result<Digest> {
    use std::io::Write;
    let mut hasher = Hasher::default();
    while let Ok(chunk) = rx.recv() {
        hasher.update(&chunk);
        file.write_all(&chunk)
            .map_err(|e| DataError::local(path, e))?;
    }
    file.flush().map_err(|e| DataError::local(path, e))?;
    let _ = hasher.size();
    Ok(hasher.finish())
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

/// OpenDAL's message with its sources (the connection error is in a source).
fn dal_reason(e: &opendal::Error) -> String {
    use std::error::Error;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text = format!("{text}: {s_text}");
        }
        source = s.source();
    }
    text
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
