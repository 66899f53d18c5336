//! Store URLs: `file:///abs/path`, `sftp://[user@]host[:port]/path`, `s3://bucket/prefix`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{DataError, Result};

/// Where a pilot store is. Parsed and checked once; never holds a secret, so its
/// `Display` form can go into messages, logs and reports as it is.
///
/// - `file:///abs/path`: a directory (also on a shared file system).
/// - `sftp://[user@]host[:port]/path`: a directory over SFTP, through the system's `ssh`
///   (keys, agent, `~/.ssh/config` and known hosts as for `ssh://` pilots).
///   `sftp://host/~/dir` is `dir` in the login directory.
/// - `s3://bucket/prefix`: keys under a prefix of an S3 bucket; endpoint, region and
///   credentials come from the environment (see the crate documentation).
///
/// A password (`user:secret@`), a query (`?X-Amz-Credential=..`) or a fragment is
/// refused: credentials never go in a URL.
///
/// ```
/// use pstar_data::StoreUrl;
///
/// let url: StoreUrl = "sftp://alice@login.example.org:2222/scratch/pstar".parse().unwrap();
/// assert_eq!(url.to_string(), "sftp://alice@login.example.org:2222/scratch/pstar");
/// let err = "sftp://alice:hunter2@login.example.org/x".parse::<StoreUrl>().unwrap_err();
/// assert!(!err.to_string().contains("hunter2"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoreUrl {
    pub(crate) kind: Kind,
}

/// The kinds of store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreKind {
    /// `file:///path`
    File,
    /// `sftp://[user@]host[:port]/path`
    Sftp,
    /// `s3://bucket/prefix`
    S3,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    File {
        root: PathBuf,
    },
    Sftp {
        user: Option<String>,
        host: String,
        port: Option<u16>,
        /// Absolute (`/scratch/pstar`) or relative to the login directory (`pstar`, from
        /// `/~/pstar`); empty: the login directory.
        root: String,
    },
    S3 {
        bucket: String,
        /// Without leading or trailing `/`; empty: the whole bucket.
        prefix: String,
    },
}

impl StoreUrl {
    /// Parses and checks a store URL.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |reason: &str| DataError::Url {
            url: redact(text),
            reason: reason.to_owned(),
        };
        let url = url::Url::parse(text).map_err(|e| bad(&format!("not a URL ({e})")))?;
        if url.password().is_some() {
            return Err(bad(
                "a password in the URL is refused: SFTP uses SSH keys, S3 reads its credentials \
                 from the environment or a private file",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad(
                "a query or fragment is refused (credentials never go in a store URL)",
            ));
        }
        let kind = match url.scheme() {
            "file" => {
                if url
                    .host_str()
                    .is_some_and(|h| !h.is_empty() && h != "localhost")
                {
                    return Err(bad("a file:// URL names no host: use file:///abs/path"));
                }
                let root = url
                    .to_file_path()
                    .map_err(|()| bad("not an absolute path: use file:///abs/path"))?;
                if root == Path::new("/") {
                    return Err(bad("the root directory cannot be a store"));
                }
                Kind::File { root }
            }
            "sftp" => {
                let host = url
                    .host_str()
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| bad("no host: use sftp://[user@]host[:port]/path"))?;
                let user = Some(url.username())
                    .filter(|u| !u.is_empty())
                    .map(|u| decode(u).map_err(|r| bad(&r)))
                    .transpose()?;
                let path = decode(url.path()).map_err(|r| bad(&r))?;
                let root = match path.strip_prefix("/~") {
                    Some("") => String::new(),
                    Some(rest) if rest.starts_with('/') => rest.trim_matches('/').to_owned(),
                    _ => path.trim_end_matches('/').to_owned(),
                };
                if root.is_empty() && !path.starts_with("/~") {
                    return Err(bad(
                        "no directory: use sftp://host/abs/path (or sftp://host/~/dir)",
                    ));
                }
                check_components(&root).map_err(|r| bad(&r))?;
                Kind::Sftp {
                    user,
                    host: host.to_owned(),
                    port: url.port(),
                    root,
                }
            }
            "s3" => {
                if !url.username().is_empty() || url.port().is_some() {
                    return Err(bad(
                        "an s3:// URL is s3://bucket/prefix: the endpoint and credentials come \
                         from the environment",
                    ));
                }
                let bucket = url
                    .host_str()
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| bad("no bucket: use s3://bucket/prefix"))?;
                let ok_bucket = (3..=63).contains(&bucket.len())
                    && bucket.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b)
                    });
                if !ok_bucket {
                    return Err(bad(
                        "not a bucket name (3 to 63 lower-case letters, digits, '-' or '.')",
                    ));
                }
                let prefix = decode(url.path()).map_err(|r| bad(&r))?;
                let prefix = prefix.trim_matches('/').to_owned();
                check_components(&prefix).map_err(|r| bad(&r))?;
                Kind::S3 {
                    bucket: bucket.to_owned(),
                    prefix,
                }
            }
            other => {
                return Err(bad(&format!(
                    "unknown scheme `{other}`: use file:///path, sftp://[user@]host[:port]/path \
                     or s3://bucket/prefix"
                )));
            }
        };
        Ok(StoreUrl { kind })
    }

    /// Which kind of store.
    pub fn kind(&self) -> StoreKind {
        match self.kind {
            Kind::File { .. } => StoreKind::File,
            Kind::Sftp { .. } => StoreKind::Sftp,
            Kind::S3 { .. } => StoreKind::S3,
        }
    }

    /// The directory of a `file://` store.
    pub fn local_root(&self) -> Option<&Path> {
        match &self.kind {
            Kind::File { root } => Some(root),
            _ => None,
        }
    }

    /// The host of an `sftp://` store.
    pub fn host(&self) -> Option<&str> {
        match &self.kind {
            Kind::Sftp { host, .. } => Some(host),
            _ => None,
        }
    }
}

impl FromStr for StoreUrl {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::File { root } => write!(f, "file://{}", root.display()),
            Kind::Sftp {
                user,
                host,
                port,
                root,
            } => {
                f.write_str("sftp://")?;
                if let Some(user) = user {
                    write!(f, "{user}@")?;
                }
                f.write_str(host)?;
                if let Some(port) = port {
                    write!(f, ":{port}")?;
                }
                if root.starts_with('/') {
                    f.write_str(root)
                } else if root.is_empty() {
                    f.write_str("/~")
                } else {
                    write!(f, "/~/{root}")
                }
            }
            Kind::S3 { bucket, prefix } => {
                write!(f, "s3://{bucket}")?;
                if !prefix.is_empty() {
                    write!(f, "/{prefix}")?;
                }
                Ok(())
            }
        }
    }
}

/// The URL as it may be shown: no password, no query, no fragment.
fn redact(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            if url.query().is_some() {
                url.set_query(Some("***"));
            }
            url.set_fragment(None);
            url.to_string()
        }
        // Not a URL: show only what comes before anything that may be a secret.
        Err(_) => {
            let cut = text.find(['@', '?', '#']).unwrap_or(text.len());
            let shown = &text[..cut];
            if cut < text.len() {
                format!("{shown}...")
            } else {
                shown.to_owned()
            }
        }
    }
}

/// Percent-decodes a URL part (a user name or path may hold `%20` and the like).
fn decode(part: &str) -> Result<String, String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|_| bytes[i] == b'%')
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 once decoded".to_owned())
}

/// A store path must not climb out of itself or hold control characters.
fn check_components(path: &str) -> Result<(), String> {
    if path.chars().any(char::is_control) {
        return Err("a control character in the path".into());
    }
    if path
        .split('/')
        .any(|part| part == "." || part == ".." || part == "~")
    {
        return Err("a '.', '..' or '~' component in the path".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_and_shows_it_back() {
        for (text, shown, kind) in [
            ("file:///tmp/store", "file:///tmp/store", StoreKind::File),
            ("file:///tmp/store/", "file:///tmp/store/", StoreKind::File),
            (
                "sftp://alice@host.example.org:2222/scratch/pstar/",
                "sftp://alice@host.example.org:2222/scratch/pstar",
                StoreKind::Sftp,
            ),
            (
                "sftp://host/~/pstar",
                "sftp://host/~/pstar",
                StoreKind::Sftp,
            ),
            ("sftp://host/~", "sftp://host/~", StoreKind::Sftp),
            ("s3://my-bucket/a/b/", "s3://my-bucket/a/b", StoreKind::S3),
            ("s3://my-bucket", "s3://my-bucket", StoreKind::S3),
        ] {
            let url = StoreUrl::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(url.kind(), kind, "{text}");
            assert_eq!(url.to_string(), shown, "{text}");
        }
    }

    #[test]
    fn refuses_secrets_without_showing_them() {
        for text in [
            "sftp://alice:hunter2@host/x",
            "s3://AKID:hunter2@bucket/x",
            "s3://bucket/x?X-Amz-Signature=hunter2",
            "sftp://host/x#hunter2",
            "file:///tmp/x?token=hunter2",
        ] {
            let e = StoreUrl::parse(text).expect_err(text).to_string();
            assert!(!e.contains("hunter2"), "{text}: {e}");
            assert!(e.contains("refused"), "{text}: {e}");
        }
    }

    #[test]
    fn refuses_malformed_urls() {
        for (text, why) in [
            ("ftp://host/x", "unknown scheme"),
            ("file://host/x", "names no host"),
            ("file:///", "root directory"),
            ("sftp:///x", "no host"),
            ("sftp://host", "no directory"),
            ("sftp://host/a/~/b", "'~'"),
            ("s3://Bucket_Name/x", "bucket name"),
            ("s3://user@bucket/x", "s3://bucket/prefix"),
            ("/tmp/x", "not a URL"),
        ] {
            let e = StoreUrl::parse(text).expect_err(text).to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
