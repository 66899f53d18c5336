//! Pilot-Data, as data: the descriptions of pilot stores and data units, the files a data
//! unit holds, and the rules every name and path of them must follow.
//!
//! A **pilot store** ([`PilotDataDescription`], the seeds' Pilot-Data / Pilot-Store) is a
//! place that reserves space for data units: a directory, a path over SFTP, an S3 prefix.
//! A **data unit** ([`DataUnitDescription`]) is a named, immutable set of files. Compute
//! units name data units as `input_data` and make new ones as `output_data`
//! ([`OutputData`]). Once a data unit's files are in a store, its [`DataFile`]s say what
//! they are (relative path, size, SHA-256), and every arrival elsewhere is checked
//! against them.
//!
//! ```
//! use pstar_model::{check_data_name, check_data_path};
//!
//! check_data_name("reads-7").unwrap();
//! assert!(check_data_name("../etc").is_err());
//! check_data_path("ref/chr1.fa").unwrap();
//! assert!(check_data_path("/etc/passwd").is_err());
//! assert!(check_data_path("a/../../b").is_err());
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::description::Affinity;

/// The longest data unit or pilot store name.
pub const MAX_DATA_NAME_LEN: usize = 200;

/// A data unit or pilot store name that is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{name:?} is not a valid name: use 1 to {MAX_DATA_NAME_LEN} letters, digits, '.', '_' or \
     '-', not starting with '.' or '-'"
)]
pub struct InvalidDataName {
    pub name: String,
}

/// Checks a data unit or pilot store name. Names become directory names in sandboxes and
/// stores and keys in the coordination store, so only a safe alphabet is allowed.
pub fn check_data_name(name: &str) -> Result<(), InvalidDataName> {
    let ok = !name.is_empty()
        && name.len() <= MAX_DATA_NAME_LEN
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidDataName {
            name: name.to_owned(),
        })
    }
}

/// A file path inside a data unit that is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path:?} is not a relative path inside a data unit ({why})")]
pub struct InvalidDataPath {
    pub path: String,
    pub why: &'static str,
}

/// Checks a file's path inside a data unit: relative, `/`-separated, no `.` or `..`
/// component, no empty component, no NUL or control character.
pub fn check_data_path(path: &str) -> Result<(), InvalidDataPath> {
    let bad = |why| {
        Err(InvalidDataPath {
            path: path.to_owned(),
            why,
        })
    };
    if path.is_empty() {
        return bad("empty");
    }
    if path.starts_with('/') {
        return bad("absolute");
    }
    if path.chars().any(char::is_control) {
        return bad("a control character");
    }
    for part in path.split('/') {
        match part {
            "" => return bad("an empty component"),
            "." | ".." => return bad("a '.' or '..' component"),
            _ => {}
        }
    }
    Ok(())
}

/// One file of a data unit, as it is in every store that holds the data unit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DataFile {
    /// Path inside the data unit, relative, `/`-separated ([`check_data_path`]).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lower-case hex.
    pub sha256: String,
}

/// A pilot store to create: the seeds' `PilotDataDescription`.
///
/// `url` is `file:///path`, `sftp://user@host[:port]/path` or `s3://bucket/prefix`.
/// Credentials never go in it: SFTP uses the same SSH keys and `~/.ssh/config` as
/// `ssh://` pilots; S3 reads them from the environment or a private file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PilotDataDescription {
    /// Name data units and output data use to point at this store.
    pub name: String,
    /// Where the store is.
    pub url: String,
    /// Quota in bytes: data units that would go beyond it are refused. `None`: no quota.
    pub size: Option<u64>,
    /// Data-center and machine labels, matched against pilots' labels when choosing
    /// where a unit that reads from this store runs.
    pub affinity: Affinity,
}

/// A data unit to create from files the application has: the seeds' `DataUnitDescription`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataUnitDescription {
    /// Name compute units use in `input_data` ([`check_data_name`]).
    pub name: String,
    /// Local files, directories (taken whole) or globs. Each file keeps its name, a
    /// directory's files their path below it.
    pub files: Vec<PathBuf>,
    /// The pilot store it is placed in first. `None`: the first pilot store.
    pub store: Option<String>,
}

/// A data unit a compute unit makes from files it leaves in its sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputData {
    /// Name of the new data unit ([`check_data_name`]).
    pub name: String,
    /// Glob patterns relative to the unit's sandbox (`*.bam`, `out` for a whole directory,
    /// `out/**/*.txt`).
    pub files: Vec<String>,
    /// Pilot store to keep it in. `None`: the first pilot store, or else the pilot's own
    /// cache.
    pub store: Option<String>,
    /// Local directory it is copied to when the run ends.
    pub export: Option<PathBuf>,
    /// Whether a pattern matching nothing is allowed (`false`: the unit fails).
    pub allow_empty: bool,
    /// The URL of `store`, filled in when the unit is submitted (agents do not know
    /// stores by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_url: Option<String>,
    /// The quota of `store`, filled in with its URL: the agent reserves the output's size
    /// against it before storing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_quota: Option<u64>,
}

impl OutputData {
    /// An output data unit of the files matching `patterns`.
    pub fn new<I, S>(name: impl Into<String>, patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        OutputData {
            name: name.into(),
            files: patterns.into_iter().map(Into::into).collect(),
            store: None,
            export: None,
            allow_empty: false,
            store_url: None,
            store_quota: None,
        }
    }
}

/// Why `bytes` more do not fit in pilot store `store`, with `used` of its `quota` used.
pub fn quota_refusal(bytes: u64, store: &str, used: u64, quota: u64) -> String {
    format!(
        "needs {} but pilot store {store} has {} left of its {} quota",
        bytes_text(bytes),
        bytes_text(quota.saturating_sub(used)),
        bytes_text(quota)
    )
}

/// `n` bytes, in the largest binary unit that keeps it above 1.
pub fn bytes_text(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_to_a_safe_alphabet() {
        for ok in ["a", "reads-1", "ref.fa", "A_b.c-9", &"x".repeat(200)] {
            check_data_name(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "-x",
            ".hidden",
            "a/b",
            "a b",
            "a*",
            "é",
            &"x".repeat(201),
        ] {
            assert!(check_data_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_stay_inside_their_data_unit() {
        for ok in ["a", "a/b.txt", "dir/sub/file", "x..y"] {
            check_data_path(ok).unwrap();
        }
        for bad in [
            "", "/a", "a//b", "a/", "./a", "a/./b", "../a", "a/..", "a\nb", "a\0b",
        ] {
            assert!(check_data_path(bad).is_err(), "{bad:?}");
        }
    }
}
