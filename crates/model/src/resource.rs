//! Resource URLs: where a pilot is placed and through which scheduler.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The access scheme of a [`ResourceUrl`]: which resource adaptor places the pilot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `local://`: this machine.
    Local,
    /// `ssh://user@host[:port]`: a host over SSH.
    Ssh,
    /// `slurm://`: `sbatch` on this host.
    Slurm,
    /// `slurm+ssh://user@login-host`: Slurm through an SSH login node.
    SlurmSsh,
    /// `sge://`: Grid Engine on this host.
    Sge,
    /// `sge+ssh://`: Grid Engine through SSH.
    SgeSsh,
    /// `pbs://`: PBS/Torque on this host.
    Pbs,
    /// `pbs+ssh://`: PBS through SSH.
    PbsSsh,
    /// `lsf://`: LSF on this host.
    Lsf,
    /// `condor://`: HTCondor on this host.
    Condor,
}

impl Scheme {
    /// Every scheme pstar knows, with its URL spelling.
    pub const ALL: &'static [(Scheme, &'static str)] = &[
        (Scheme::Local, "local"),
        (Scheme::Ssh, "ssh"),
        (Scheme::Slurm, "slurm"),
        (Scheme::SlurmSsh, "slurm+ssh"),
        (Scheme::Sge, "sge"),
        (Scheme::SgeSsh, "sge+ssh"),
        (Scheme::Pbs, "pbs"),
        (Scheme::PbsSsh, "pbs+ssh"),
        (Scheme::Lsf, "lsf"),
        (Scheme::Condor, "condor"),
    ];

    /// The URL spelling (`slurm+ssh`).
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("local", |(_, n)| n)
    }

    /// Whether pilots of this scheme are reached over SSH (their paths are the host's).
    pub fn over_ssh(self) -> bool {
        matches!(
            self,
            Scheme::Ssh | Scheme::SlurmSsh | Scheme::SgeSsh | Scheme::PbsSsh
        )
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resource URL that does not parse or names no known scheme.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceUrlError {
    #[error(
        "`{input}` is not a URL: {reason} (expected e.g. `local://` or `slurm+ssh://user@host`)"
    )]
    Syntax { input: String, reason: String },
    #[error("unknown resource scheme `{scheme}` (known: {known})")]
    UnknownScheme { scheme: String, known: String },
}

/// Where a pilot runs: `local://`, `ssh://user@host:22`, `slurm+ssh://user@login/`...
///
/// ```
/// use pstar_model::{ResourceUrl, Scheme};
///
/// let url: ResourceUrl = "slurm+ssh://alice@login.example.org".parse().unwrap();
/// assert_eq!(url.scheme(), Scheme::SlurmSsh);
/// assert_eq!(url.host(), Some("login.example.org"));
/// assert_eq!(url.user(), Some("alice"));
/// assert!("gram://x".parse::<ResourceUrl>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ResourceUrl {
    scheme: Scheme,
    url: url::Url,
}

impl ResourceUrl {
    /// `local://`, this machine.
    pub fn local() -> Self {
        "local://"
            .parse()
            .unwrap_or_else(|_| unreachable!("`local://` is a valid resource URL"))
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    pub fn host(&self) -> Option<&str> {
        self.url.host_str().filter(|h| !h.is_empty())
    }

    pub fn user(&self) -> Option<&str> {
        Some(self.url.username()).filter(|u| !u.is_empty())
    }

    pub fn port(&self) -> Option<u16> {
        self.url.port()
    }

    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }
}

impl Default for ResourceUrl {
    fn default() -> Self {
        Self::local()
    }
}

impl FromStr for ResourceUrl {
    type Err = ResourceUrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = url::Url::parse(s).map_err(|e| ResourceUrlError::Syntax {
            input: s.to_owned(),
            reason: e.to_string(),
        })?;
        let scheme = Scheme::ALL
            .iter()
            .find(|(_, name)| *name == url.scheme())
            .map(|&(s, _)| s)
            .ok_or_else(|| ResourceUrlError::UnknownScheme {
                scheme: url.scheme().to_owned(),
                known: Scheme::ALL
                    .iter()
                    .map(|(_, n)| format!("{n}://"))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        Ok(Self { scheme, url })
    }
}

impl fmt::Display for ResourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str())
    }
}

impl fmt::Debug for ResourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceUrl({})", self.url)
    }
}

impl Serialize for ResourceUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.url.as_str())
    }
}

impl<'de> Deserialize<'de> for ResourceUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
