//! A data unit's local files: which files a list of specs names, and their checksums.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::{DataError, Result};

/// Size and SHA-256 of a file's content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    /// Bytes.
    pub size: u64,
    /// SHA-256, lower-case hex.
    pub sha256: String,
}

/// The chunk size of local reads and writes (also the unit of hashing).
pub(crate) const CHUNK: usize = 8 * 1024 * 1024;

/// Reads a file through once, in chunks, and returns its size and SHA-256.
pub fn hash_file(path: &Path) -> Result<Digest> {
    let mut file = std::fs::File::open(path).map_err(|e| DataError::local(path, e))?;
    let mut hasher = Hasher::default();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DataError::local(path, e)),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

/// SHA-256 and byte count of a stream, fed chunk by chunk.
#[derive(Default)]
pub(crate) struct Hasher {
    sha: Sha256,
    size: u64,
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.size += bytes.len() as u64;
    }

    pub fn finish(self) -> Digest {
        Digest {
            size: self.size,
            sha256: hex(&self.sha.finalize()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The files a data unit's specs name, each with its path in the data unit, sorted by that
/// path.
///
/// Each spec is a path relative to `base` (or absolute):
/// - a file keeps its file name (`data/ref/chr1.fa` → `chr1.fa`);
/// - a directory is taken whole, its files keeping their path below it, under the
///   directory's name (`data/ref` → `ref/chr1.fa`, `ref/sub/x`);
/// - a glob (`*`, `?`, `[..]`, `**`) stands for what it matches, each match taken as above.
///
/// Symbolic links are followed, but only to regular files; a link to a directory or
/// anything else, a spec that matches nothing, or two files with the same path in the data
/// unit are errors that name them.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # std::fs::create_dir_all(dir.path().join("data/ref")).unwrap();
/// # std::fs::write(dir.path().join("data/ref/chr1.fa"), "ACGT").unwrap();
/// # std::fs::write(dir.path().join("data/reads.fq"), "@r").unwrap();
/// use std::path::PathBuf;
///
/// let files = pstar_data::expand_files(
///     dir.path(),
///     &[PathBuf::from("data/ref"), PathBuf::from("data/*.fq")],
/// )
/// .unwrap();
/// let names: Vec<&str> = files.iter().map(|(_, path)| path.as_str()).collect();
/// assert_eq!(names, ["reads.fq", "ref/chr1.fa"]);
/// ```
pub fn expand_files(base: &Path, specs: &[PathBuf]) -> Result<Vec<(PathBuf, String)>> {
    let mut found = Found::default();
    for spec in specs {
        let full = if spec.is_absolute() {
            spec.clone()
        } else {
            base.join(spec)
        };
        let text = full
            .to_str()
            .ok_or_else(|| DataError::Files(format!("{}: not a UTF-8 path", spec.display())))?;
        let before = found.hits;
        if is_glob(spec) {
            let matches = glob::glob(text).map_err(|e| {
                DataError::Files(format!("{}: not a valid pattern: {e}", spec.display()))
            })?;
            for entry in matches {
                let path = entry.map_err(|e| {
                    DataError::local(e.path().to_owned(), format!("cannot read: {}", e.error()))
                })?;
                take(&path, &mut found)?;
            }
        } else {
            if std::fs::symlink_metadata(&full).is_err() {
                return Err(DataError::Files(format!(
                    "{}: no such file or directory ({})",
                    spec.display(),
                    full.display()
                )));
            }
            take(&full, &mut found)?;
        }
        if found.hits == before {
            return Err(DataError::Files(format!(
                "{}: matches no file",
                spec.display()
            )));
        }
    }
    let mut files: Vec<(PathBuf, String)> = found
        .files
        .into_iter()
        .map(|(path, local)| (local, path))
        .collect();
    files.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(files)
}

/// The files taken so far, by path in the data unit, and how many times a spec named one.
#[derive(Default)]
struct Found {
    files: HashMap<String, PathBuf>,
    hits: usize,
}

fn is_glob(spec: &Path) -> bool {
    spec.to_str().is_some_and(|s| s.contains(['*', '?', '[']))
}

/// Takes a file under its name, or a directory whole under its name.
fn take(path: &Path, found: &mut Found) -> Result<()> {
    let name = file_name(path)?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| DataError::local(path, e))?;
    if meta.is_dir() {
        walk(path, &name, found)
    } else {
        add(path, name, found)
    }
}

fn walk(dir: &Path, prefix: &str, found: &mut Found) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::local(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::local(dir, e))?;
        let path = entry.path();
        let name = format!("{prefix}/{}", file_name(&path)?);
        let kind = entry.file_type().map_err(|e| DataError::local(&path, e))?;
        if kind.is_dir() {
            walk(&path, &name, found)?;
        } else {
            add(&path, name, found)?;
        }
    }
    Ok(())
}

/// Adds a regular file, or a link to one.
fn add(path: &Path, name: String, found: &mut Found) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::local(path, e))?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a link to a directory (only links to regular files are followed)"
        } else {
            "not a regular file"
        };
        return Err(DataError::local(path, what));
    }
    pstar_model::check_data_path(&name).map_err(|e| DataError::local(path, e))?;
    found.hits += 1;
    if let Some(first) = found.files.get(&name) {
        if first != path {
            return Err(DataError::Files(format!(
                "{} and {} would both be `{name}` in the data unit: rename one, or name its \
                 directory instead",
                first.display(),
                path.display()
            )));
        }
        return Ok(());
    }
    found.files.insert(name, path.to_owned());
    Ok(())
}

fn file_name(path: &Path) -> Result<String> {
    let name = path
        .file_name()
        .ok_or_else(|| DataError::local(path, "names no file or directory"))?;
    name.to_str()
        .map(str::to_owned)
        .ok_or_else(|| DataError::local(path, "not a UTF-8 file name"))
}
