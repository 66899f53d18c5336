//! S3 endpoint, region and credentials, from the environment only.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{DataError, Result};

/// Endpoint of an S3-compatible service (`http://127.0.0.1:9000`); else `AWS_ENDPOINT_URL`;
/// else AWS itself.
pub const S3_ENDPOINT_ENV: &str = "PSTAR_S3_ENDPOINT";
/// Region; else `AWS_REGION`; else `us-east-1`.
pub const S3_REGION_ENV: &str = "PSTAR_S3_REGION";
/// A private file with the access key and secret (see the crate documentation); else
/// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`).
pub const S3_CREDENTIALS_FILE_ENV: &str = "PSTAR_S3_CREDENTIALS_FILE";

/// The largest credentials file read.
const MAX_CREDENTIALS_FILE: u64 = 64 * 1024;

pub(crate) struct S3Settings {
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl S3Settings {
    pub fn from_env() -> Result<Self> {
        let endpoint = var(S3_ENDPOINT_ENV).or_else(|| var("AWS_ENDPOINT_URL"));
        if let Some(endpoint) = &endpoint {
            let url = url::Url::parse(endpoint).map_err(|e| {
                DataError::Credentials(format!("{S3_ENDPOINT_ENV} is not a URL: {e}"))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(DataError::Credentials(format!(
                    "{S3_ENDPOINT_ENV} must be an http:// or https:// URL"
                )));
            }
            if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
                return Err(DataError::Credentials(format!(
                    "{S3_ENDPOINT_ENV} must not hold credentials or a query"
                )));
            }
        }
        let region = var(S3_REGION_ENV)
            .or_else(|| var("AWS_REGION"))
            .unwrap_or_else(|| "us-east-1".to_owned());
        let (access_key_id, secret_access_key, session_token) =
            if let Some(file) = std::env::var_os(S3_CREDENTIALS_FILE_ENV) {
                let (id, secret) = read_credentials_file(Path::new(&file))?;
                (id, secret, None)
            } else {
                match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
                    (Some(id), Some(secret)) => (id, secret, var("AWS_SESSION_TOKEN")),
                    _ => {
                        return Err(DataError::Credentials(format!(
                            "none given: set {S3_CREDENTIALS_FILE_ENV} to a private file, or \
                             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                        )));
                    }
                }
            };
        Ok(S3Settings {
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            session_token,
        })
    }
}

/// Reads `access_key_id` and `secret_access_key` from a credentials file that must be a
/// regular file of at most 64 KiB, owned by this user and readable by nobody else.
pub(crate) fn read_credentials_file(path: &Path) -> Result<(String, String)> {
    let refuse = |why: String| {
        DataError::Credentials(format!(
            "{} ({S3_CREDENTIALS_FILE_ENV}): {why}",
            path.display()
        ))
    };
    // Not blocking on a FIFO (or a device) put in its place: non-blocking, and only a
    // regular file is read.
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| refuse(format!("cannot open: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| refuse(format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(refuse("not a regular file".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(refuse(format!(
            "owned by uid {}, not by this user (uid {me})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "mode {:o} lets others read it: chmod 600 it",
            meta.mode() & 0o777
        )));
    }
    if meta.len() > MAX_CREDENTIALS_FILE {
        return Err(refuse(format!(
            "{} bytes, more than a credentials file holds",
            meta.len()
        )));
    }
    let mut text = String::new();
    file.by_ref()
        .take(MAX_CREDENTIALS_FILE)
        .read_to_string(&mut text)
        .map_err(|e| refuse(format!("cannot read: {e}")))?;
    parse_credentials(&text).map_err(refuse)
}

/// `access_key_id = ...` and `secret_access_key = ...` lines (also spelt `aws_access_key_id`
/// and `aws_secret_access_key`, as in `~/.aws/credentials`); blank lines, `#`/`;` comments
/// and one `[section]` header are allowed.
fn parse_credentials(text: &str) -> Result<(String, String), String> {
    let (mut id, mut secret) = (None, None);
    let mut sections = 0;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            sections += 1;
            if sections > 1 {
                return Err("more than one [section]: keep one set of keys in it".into());
            }
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            // Never show the line: it may be a secret.
            return Err(format!("line {}: expected `name = value`", n + 1));
        };
        let value = value.trim().to_owned();
        match name.trim() {
            "access_key_id" | "aws_access_key_id" => id = Some(value),
            "secret_access_key" | "aws_secret_access_key" => secret = Some(value),
            other => return Err(format!("line {}: unknown setting `{other}`", n + 1)),
        }
    }
    match (id, secret) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => Ok((id, secret)),
        _ => Err("expected an `access_key_id = ...` and a `secret_access_key = ...` line".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_spellings() {
        let plain = "access_key_id = AKID\nsecret_access_key = s3cr=t\n";
        assert_eq!(
            parse_credentials(plain).unwrap(),
            ("AKID".into(), "s3cr=t".into())
        );
        let aws = "# mine\n[default]\naws_access_key_id=AKID\naws_secret_access_key = S\n";
        assert_eq!(parse_credentials(aws).unwrap(), ("AKID".into(), "S".into()));
    }

    #[test]
    fn refuses_incomplete_or_odd_files_without_showing_secrets() {
        for text in [
            "access_key_id = AKID\n",
            "hunter2\n",
            "access_key_id = A\nsecret_access_key = hunter2\nregion = x\n",
            "[a]\naccess_key_id = A\n[b]\nsecret_access_key = hunter2\n",
        ] {
            let e = parse_credentials(text).expect_err(text);
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
