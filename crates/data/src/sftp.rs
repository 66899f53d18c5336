//! `sftp://` stores: the system's OpenSSH client (through the `openssh` crate, as for
//! `ssh://` pilots) and the SFTP protocol of `openssh-sftp-client`, with pipelined writes
//! and parallel reads.
//!
//! OpenDAL's own SFTP service takes no ssh client configuration file, port-less known-hosts
//! file or connection timeout; this one connects exactly like
//! `pstar_adaptors::transport::ssh` (user and port from the URL, `PSTAR_SSH_CONFIG`,
//! known hosts added on first use, server-alive probes), so a host that works for an
//! `ssh://` pilot works as a store.

use std::io::SeekFrom;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use openssh::{KnownHosts, SessionBuilder};
use openssh_sftp_client::error::SftpErrorKind;
use openssh_sftp_client::file::{File, TokioCompatFile};
use openssh_sftp_client::{Error as SftpError, Sftp, SftpOptions};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::error::{DataError, Result};

/// Names an SSH client configuration file to use instead of `~/.ssh/config` (the same
/// variable as for `ssh://` pilots).
pub const SSH_CONFIG_ENV: &str = "PSTAR_SSH_CONFIG";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Reads in flight at once per download.
const READS_IN_FLIGHT: usize = 16;
/// Bytes asked for by one read request (OpenSSH's sftp-server serves up to 255 KiB).
const READ_CHUNK: u64 = 255 * 1024;
/// Bytes a writer may have sent and not yet seen acknowledged.
const WRITE_WINDOW: usize = 8 * 1024 * 1024;
/// Name prefix of files being uploaded (renamed into place when whole).
pub(crate) const PART_PREFIX: &str = ".pstar-part.";

pub(crate) struct SftpStore {
    /// The store URL, for messages.
    pub store: String,
    user: Option<String>,
    host: String,
    port: Option<u16>,
    root: String,
    timeout: Duration,
    conn: tokio::sync::Mutex<Option<Arc<Sftp>>>,
}

impl SftpStore {
    pub fn new(
        store: String,
        user: Option<String>,
        host: String,
        port: Option<u16>,
        root: String,
        timeout: Duration,
    ) -> Self {
        SftpStore {
            store,
            user,
            host,
            port,
            root,
            timeout,
            conn: Default::default(),
        }
    }

    /// The connection, opened if there is none or the last one broke.
    async fn sftp(&self, op: &'static str, key: &str) -> Result<Arc<Sftp>> {
        let mut conn = self.conn.lock().await;
        if let Some(sftp) = conn.as_ref() {
            return Ok(sftp.clone());
        }
        let mut builder = SessionBuilder::default();
        builder
            .known_hosts_check(KnownHosts::Add)
            .connect_timeout(CONNECT_TIMEOUT)
            .server_alive_interval(Duration::from_secs(15))
            .control_directory(std::env::temp_dir());
        if let Some(user) = &self.user {
            builder.user(user.clone());
        }
        if let Some(port) = self.port {
            builder.port(port);
        }
        if let Some(config) = std::env::var_os(SSH_CONFIG_ENV) {
            builder.config_file(PathBuf::from(config));
        }
        let failed = |reason: String| DataError::Store {
            store: self.store.clone(),
            op,
            key: key.to_owned(),
            reason,
        };
        let connect = async {
            let session = builder
                .connect(&self.host)
                .await
                .map_err(|e| failed(format!("cannot connect over SSH: {}", chain(&e))))?;
            let options = SftpOptions::new()
                .tokio_compat_file_write_limit(
                    NonZeroUsize::new(WRITE_WINDOW).unwrap_or(NonZeroUsize::MIN),
                )
                .max_pending_requests(
                    std::num::NonZeroU16::new(64).unwrap_or(std::num::NonZeroU16::MIN),
                );
            Sftp::from_session(session, options)
                .await
                .map_err(|e| failed(format!("no SFTP on the host: {}", chain(&e))))
        };
        let sftp = tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(5), connect)
            .await
            .map_err(|_| DataError::Timeout {
                store: self.store.clone(),
                op,
                key: key.to_owned(),
                after: CONNECT_TIMEOUT,
            })??;
        let sftp = Arc::new(sftp);
        *conn = Some(sftp.clone());
        Ok(sftp)
    }

    /// Turns an SFTP error into ours; a connection that broke is dropped, so the next
    /// operation connects again.
    async fn error(&self, op: &'static str, key: &str, e: SftpError) -> DataError {
        match &e {
            SftpError::SftpError(SftpErrorKind::NoSuchFile, _) => DataError::NotFound {
                store: self.store.clone(),
                key: key.to_owned(),
            },
            SftpError::SftpError(..) => DataError::Store {
                store: self.store.clone(),
                op,
                key: key.to_owned(),
                reason: chain(&e),
            },
            _ => {
                self.conn.lock().await.take();
                DataError::Store {
                    store: self.store.clone(),
                    op,
                    key: key.to_owned(),
                    reason: format!("the connection broke: {}", chain(&e)),
                }
            }
        }
    }

    /// Runs an SFTP call within the store's time limit.
    async fn bounded<T>(
        &self,
        op: &'static str,
        key: &str,
        call: impl Future<Output = Result<T, SftpError>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.error(op, key, e).await),
            Err(_) => {
                self.conn.lock().await.take();
                Err(DataError::Timeout {
                    store: self.store.clone(),
                    op,
                    key: key.to_owned(),
                    after: self.timeout,
                })
            }
        }
    }

    /// The remote path of a key ("" is the store's directory).
    fn path(&self, key: &str) -> String {
        match (self.root.as_str(), key) {
            ("", "") => ".".to_owned(),
            ("", key) => key.to_owned(),
            (root, "") => root.to_owned(),
            (root, key) => format!("{}/{key}", root.trim_end_matches('/')),
        }
    }

    /// Connects, makes the store's directory if missing and checks it is one.
    pub async fn check(&self) -> Result<()> {
        let sftp = self.sftp("check", "").await?;
        if !self.root.is_empty() {
            self.mkdir_all(&sftp, &self.root, "").await?;
        }
        let path = self.path("");
        let meta = self
            .bounded("check", "", async { sftp.fs().metadata(&path).await })
            .await?;
        if meta.file_type().is_some_and(|t| t.is_dir()) {
            Ok(())
        } else {
            Err(DataError::Store {
                store: self.store.clone(),
                op: "check",
                key: String::new(),
                reason: format!("{path} is not a directory"),
            })
        }
    }

    /// The file's content as a stream of chunks, read with several requests in flight.
    pub async fn read(&self, key: &str) -> Result<BoxStream<'static, Result<Bytes>>> {
        let sftp = self.sftp("read", key).await?;
        let path = self.path(key);
        let file = self.bounded("read", key, sftp.open(&path)).await?;
        let size = {
            let mut f = file.clone();
            self.bounded("read", key, async move { f.metadata().await })
                .await?
                .len()
                .unwrap_or(0)
        };
        let chunk = READ_CHUNK;
        let chunks = size.div_ceil(chunk);
        let ctx = Arc::new(ReadCtx {
            store: self.store.clone(),
            key: key.to_owned(),
            timeout: self.timeout,
            _sftp: sftp,
        });
        let reads = stream::iter(0..chunks)
            .map(move |i| {
                let file = file.clone();
                let ctx = ctx.clone();
                let offset = i * chunk;
                let len = chunk.min(size - offset);
                async move { ctx.read_at(file, offset, len).await }
            })
            .buffered(READS_IN_FLIGHT);
        Ok(reads.boxed())
    }

    /// A writer to a temporary file beside the key, renamed into place by `commit`.
    pub async fn write(&self, key: &str) -> Result<SftpUpload> {
        let sftp = self.sftp("write", key).await?;
        let path = self.path(key);
        let (dir, name) = match path.rsplit_once('/') {
            Some((dir, name)) => (Some(dir.to_owned()), name.to_owned()),
            None => (None, path.clone()),
        };
        if let Some(dir) = &dir {
            self.mkdir_all(&sftp, dir, key).await?;
        }
        let tmp = match &dir {
            Some(dir) => format!("{dir}/{PART_PREFIX}{}.{name}", unique()),
            None => format!("{PART_PREFIX}{}.{name}", unique()),
        };
        // Made first, so that a transfer cancelled while the file is being opened still
        // removes it (requests reach the server in order).
        let mut upload = SftpUpload {
            file: None,
            tmp,
            path,
            key: key.to_owned(),
            sftp: sftp.clone(),
            done: false,
        };
        let file = self
            .bounded("write", key, async {
                sftp.options()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&upload.tmp)
                    .await
            })
            .await?;
        upload.file = Some(Box::pin(TokioCompatFile::with_capacity(
            file,
            NonZeroUsize::new(256 * 1024).unwrap_or(NonZeroUsize::MIN),
        )));
        Ok(upload)
    }

    async fn mkdir_all(&self, sftp: &Sftp, dir: &str, key: &str) -> Result<()> {
        let mut fs = sftp.fs();
        // Most often it is there already.
        if let Ok(Ok(meta)) = tokio::time::timeout(self.timeout, fs.metadata(dir)).await
            && meta.file_type().is_some_and(|t| t.is_dir())
        {
            return Ok(());
        }
        let mut current = String::new();
        let mut refused = None;
        for part in dir.split('/') {
            if current.is_empty() && part.is_empty() {
                current.push('/');
                continue;
            }
            if !current.is_empty() && !current.ends_with('/') {
                current.push('/');
            }
            current.push_str(part);
            match tokio::time::timeout(self.timeout, fs.create_dir(&current)).await {
                Ok(Ok(())) => {}
                // There already, or not ours to make: told apart below.
                Ok(Err(e @ SftpError::SftpError(..))) => refused = Some((current.clone(), e)),
                Ok(Err(e)) => return Err(self.error("write", key, e).await),
                Err(_) => {
                    return Err(DataError::Timeout {
                        store: self.store.clone(),
                        op: "write",
                        key: key.to_owned(),
                        after: self.timeout,
                    });
                }
            }
        }
        let made = matches!(
            tokio::time::timeout(self.timeout, fs.metadata(dir)).await,
            Ok(Ok(meta)) if meta.file_type().is_some_and(|t| t.is_dir())
        );
        if made {
            return Ok(());
        }
        let reason = match refused {
            Some((at, e)) => format!("cannot make the directory {at}: {e}"),
            None => format!("cannot make the directory {dir}"),
        };
        Err(DataError::Store {
            store: self.store.clone(),
            op: "write",
            key: key.to_owned(),
            reason,
        })
    }

    /// Every file under `prefix` ("" for all), with its size; keys relative to the store.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let sftp = self.sftp("list", prefix).await?;
        let mut out = Vec::new();
        let mut todo = vec![prefix.to_owned()];
        while let Some(dir) = todo.pop() {
            let path = self.path(&dir);
            let entries = self
                .bounded("list", &dir, async {
                    let mut fs = sftp.fs();
                    let d = fs.open_dir(&path).await?;
                    d.read_dir().try_collect::<Vec<_>>().await
                })
                .await;
            let entries = match entries {
                Ok(entries) => entries,
                Err(DataError::NotFound { .. }) if dir == prefix => return Ok(out),
                Err(e) => return Err(e),
            };
            for entry in entries {
                let Some(name) = entry.filename().to_str() else {
                    continue;
                };
                if name == "." || name == ".." || name.starts_with(PART_PREFIX) {
                    continue;
                }
                let key = if dir.is_empty() {
                    name.to_owned()
                } else {
                    format!("{dir}/{name}")
                };
                match entry.file_type() {
                    Some(t) if t.is_dir() => todo.push(key),
                    Some(t) if t.is_file() => out.push((key, entry.metadata().len().unwrap_or(0))),
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// Removes every file under `prefix`, and the directories left empty.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let sftp = self.sftp("delete", prefix).await?;
        if !prefix.is_empty() {
            let path = self.path(prefix);
            let meta = self
                .bounded("delete", prefix, async {
                    sftp.fs().symlink_metadata(&path).await
                })
                .await;
            match meta {
                Err(DataError::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e),
                Ok(meta) if !meta.file_type().is_some_and(|t| t.is_dir()) => {
                    // A single key.
                    return match self
                        .bounded("delete", prefix, async {
                            sftp.fs().remove_file(&path).await
                        })
                        .await
                    {
                        Ok(()) | Err(DataError::NotFound { .. }) => Ok(()),
                        Err(e) => Err(e),
                    };
                }
                Ok(_) => {}
            }
        }
        // Whole directories, deepest first, after their files.
        let mut dirs = vec![prefix.to_owned()];
        let mut todo = vec![prefix.to_owned()];
        while let Some(dir) = todo.pop() {
            let path = self.path(&dir);
            let entries = self
                .bounded("delete", &dir, async {
                    let mut fs = sftp.fs();
                    let d = fs.open_dir(&path).await?;
                    d.read_dir().try_collect::<Vec<_>>().await
                })
                .await;
            let entries = match entries {
                Ok(entries) => entries,
                Err(DataError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let Some(name) = entry.filename().to_str() else {
                    continue;
                };
                if name == "." || name == ".." {
                    continue;
                }
                let key = if dir.is_empty() {
                    name.to_owned()
                } else {
                    format!("{dir}/{name}")
                };
                if entry.file_type().is_some_and(|t| t.is_dir()) {
                    dirs.push(key.clone());
                    todo.push(key);
                } else {
                    let file = self.path(&key);
                    match self
                        .bounded("delete", &key, async { sftp.fs().remove_file(&file).await })
                        .await
                    {
                        Ok(()) | Err(DataError::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        // The store's own directory stays.
        for dir in dirs.iter().rev().filter(|d| !d.is_empty()) {
            let path = self.path(dir);
            match self
                .bounded("delete", dir, async { sftp.fs().remove_dir(&path).await })
                .await
            {
                Ok(()) | Err(DataError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

struct ReadCtx {
    store: String,
    key: String,
    timeout: Duration,
    /// Keeps the connection open while the stream lives.
    _sftp: Arc<Sftp>,
}

impl ReadCtx {
    /// `len` bytes at `offset` (fewer only at the end of the file).
    async fn read_at(&self, mut file: File, offset: u64, len: u64) -> Result<Bytes> {
        let failed = |reason: String| DataError::Store {
            store: self.store.clone(),
            op: "read",
            key: self.key.clone(),
            reason,
        };
        let read = async {
            file.seek(SeekFrom::Start(offset))
                .await
                .map_err(|e| failed(e.to_string()))?;
            let mut out = BytesMut::with_capacity(len as usize);
            while (out.len() as u64) < len {
                let want = (len - out.len() as u64) as u32;
                let buf = BytesMut::with_capacity(want as usize);
                match file.read(want, buf).await {
                    Ok(Some(bytes)) if !bytes.is_empty() => out.extend_from_slice(&bytes),
                    Ok(_) => break,
                    Err(e) => return Err(failed(format!("the transfer broke: {}", chain(&e)))),
                }
            }
            Ok(out.freeze())
        };
        tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| DataError::Timeout {
                store: self.store.clone(),
                op: "read",
                key: self.key.clone(),
                after: self.timeout,
            })?
    }
}

/// A file being written: a temporary name until `commit`.
pub(crate) struct SftpUpload {
    file: Option<Pin<Box<TokioCompatFile>>>,
    tmp: String,
    path: String,
    key: String,
    sftp: Arc<Sftp>,
    /// Renamed into place, or removed: nothing for `drop` to clean.
    done: bool,
}

impl SftpUpload {
    pub async fn write(&mut self, store: &SftpStore, bytes: Bytes) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        store
            .bounded("write", &self.key, async {
                file.write_all(&bytes).await.map_err(SftpError::from)
            })
            .await
    }

    pub async fn commit(mut self, store: &SftpStore) -> Result<()> {
        if let Some(mut file) = self.file.take() {
            let key = self.key.clone();
            let flushed = store
                .bounded("write", &key, async {
                    file.flush().await.map_err(SftpError::from)?;
                    file.shutdown().await.map_err(SftpError::from)?;
                    Ok(())
                })
                .await;
            if let Err(e) = flushed {
                drop(file);
                self.abort(store).await;
                return Err(e);
            }
            // Dropping it closes the handle (the server handles requests in order).
            drop(file);
        }
        let renamed = store
            .bounded("write", &self.key, async {
                self.sftp.fs().rename(&self.tmp, &self.path).await
            })
            .await;
        if renamed.is_err() {
            // SFTP v3 rename refuses to replace a file: remove the old one and try again.
            let _ = store
                .bounded("write", &self.key, async {
                    self.sftp.fs().remove_file(&self.path).await
                })
                .await;
            if let Err(e) = store
                .bounded("write", &self.key, async {
                    self.sftp.fs().rename(&self.tmp, &self.path).await
                })
                .await
            {
                self.abort(store).await;
                return Err(e);
            }
        }
        self.done = true;
        Ok(())
    }

    /// Drops what was written (best effort: the store may be gone).
    pub async fn abort(mut self, store: &SftpStore) {
        drop(self.file.take());
        let _ = tokio::time::timeout(store.timeout, self.sftp.fs().remove_file(&self.tmp)).await;
        self.done = true;
    }
}

impl Drop for SftpUpload {
    /// An upload dropped half-way (its transfer cancelled) removes its temporary file in
    /// the background.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        drop(self.file.take());
        let (sftp, tmp) = (self.sftp.clone(), std::mem::take(&mut self.tmp));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(CONNECT_TIMEOUT, sftp.fs().remove_file(&tmp)).await;
            });
        }
    }
}

/// A name part no other upload uses at the same time.
pub(crate) fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// An error with its sources, as one line.
fn chain(e: &dyn std::error::Error) -> String {
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
