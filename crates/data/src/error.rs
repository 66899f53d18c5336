//! What can go wrong with a pilot store, a transfer or a file list.

use std::path::PathBuf;
use std::time::Duration;

/// An error of a pilot store, a transfer or a file list. Every variant names the store by
/// its URL (which never holds a secret) and the key or local path concerned.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A store URL that is not allowed (malformed, with credentials, unknown scheme).
    /// `url` is shown without any password or query.
    #[error("store URL `{url}`: {reason}")]
    Url { url: String, reason: String },

    /// S3 credentials or settings missing or refused (for example a credentials file
    /// that others can read).
    #[error("S3 credentials: {0}")]
    Credentials(String),

    /// The key is not in the store.
    #[error("{store}: no `{key}` in the store")]
    NotFound { store: String, key: String },

    /// The bytes that arrived are not the ones expected: the file changed in the store
    /// behind pstar's back, or was damaged on the way. Nothing was kept of them.
    #[error(
        "{store}: `{key}` does not match its checksum: expected {expected_size} bytes with \
         SHA-256 {expected}, found {found_size} bytes with SHA-256 {found}"
    )]
    Checksum {
        store: String,
        key: String,
        expected: String,
        found: String,
        expected_size: u64,
        found_size: u64,
    },

    /// The store failed or went away (connection refused or closed, permission denied,
    /// server error).
    #[error("{store}: cannot {op}{}: {reason}", quoted(.key))]
    Store {
        store: String,
        op: &'static str,
        key: String,
        reason: String,
    },

    /// The store did not answer in time.
    #[error(
        "{store}: no answer to {op}{} within {}s (is the store still there?)",
        quoted(.key),
        .after.as_secs()
    )]
    Timeout {
        store: String,
        op: &'static str,
        key: String,
        after: Duration,
    },

    /// A key or prefix that is not a relative `/`-separated path inside the store.
    #[error("{store}: bad key: {source}")]
    Key {
        store: String,
        source: pstar_model::InvalidDataPath,
    },

    /// A local file or directory could not be read or written.
    #[error("{}: {reason}", .path.display())]
    Local { path: PathBuf, reason: String },

    /// A data unit's file list that cannot be taken: a spec matching nothing, two files
    /// with the same path in the data unit, a link to something other than a file.
    #[error("{0}")]
    Files(String),
}

/// ` `key`` for a key, nothing for the store as a whole.
fn quoted(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!(" `{key}`")
    }
}

impl DataError {
    pub(crate) fn local(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        DataError::Local {
            path: path.into(),
            reason: e.to_string(),
        }
    }
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;
