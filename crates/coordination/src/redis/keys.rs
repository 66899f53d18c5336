//! Where each part of a session lives in Redis.

use serde::{Deserialize, Serialize};

use pstar_model::{PilotId, Timestamp};

use crate::PilotRecord;

/// The key names of one session: every key starts with `<prefix>:<session>:`, so sessions
/// sharing one Redis never touch each other's data (and a Redis ACL can confine a user to
/// `~<prefix>:<their sessions>*`).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    base: String,
}

impl Keys {
    pub fn new(prefix: &str, session: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            base: format!("{prefix}:{session}:"),
        }
    }

    /// The keys of another session under the same prefix.
    pub fn for_session(&self, session: &str) -> Self {
        Self::new(&self.prefix, session)
    }

    /// The hash of every session under the prefix: session id -> [`SessionEntry`].
    pub fn registry(&self) -> String {
        format!("{}:sessions", self.prefix)
    }

    /// A `SCAN` pattern that matches every key of the session and nothing else: the
    /// prefix and the session id are matched literally (glob characters escaped).
    pub fn pattern(&self) -> String {
        format!("{}*", glob_escape(&self.base))
    }

    /// String: the session's store format ([`super::WIRE_VERSION`] of the pstar that
    /// created it). Named the same in every format, so any pstar can tell.
    pub fn format(&self) -> String {
        format!("{}format", self.base)
    }

    /// Counter behind unit ids (`INCRBY`).
    pub fn unit_counter(&self) -> String {
        format!("{}next-unit", self.base)
    }

    /// Counter behind pilot ids.
    pub fn pilot_counter(&self) -> String {
        format!("{}next-pilot", self.base)
    }

    /// Hash: unit number -> description (see `wire`).
    pub fn units(&self) -> String {
        format!("{}units", self.base)
    }

    /// Hash: pilot number -> [`PilotRecord`] (see `wire`).
    pub fn pilots(&self) -> String {
        format!("{}pilots", self.base)
    }

    /// Hash: data unit name -> [`crate::DataUnitRecord`] (see `wire`).
    pub fn data(&self) -> String {
        format!("{}data", self.base)
    }

    /// Hash: pilot store name -> bytes of this session's data units in it (its quota's
    /// use, shared by the manager and the agents).
    pub fn space(&self) -> String {
        format!("{}space", self.base)
    }

    /// List: the unit numbers bound to a pilot and not claimed yet, in order.
    pub fn queue(&self, pilot: PilotId) -> String {
        format!("{}queue:{}", self.base, pilot.get())
    }

    /// List: control messages for one pilot's agent (see `wire`).
    pub fn control(&self, pilot: PilotId) -> String {
        format!("{}control:{}", self.base, pilot.get())
    }

    /// Stream: one entry per published batch, field `e` = the events (see `wire`).
    pub fn events(&self) -> String {
        format!("{}events", self.base)
    }

    /// Hash: pilot number -> last heartbeat (microseconds since the epoch).
    pub fn heartbeats(&self) -> String {
        format!("{}heartbeats", self.base)
    }

    /// String: the [`crate::AgentLease`] of the live agent of a pilot (see `wire`), set
    /// with an expiry that its agent's heartbeats renew. It expires by itself, so it is not
    /// among [`Keys::session_keys`] (whose expiry would outlast its agent).
    pub fn lease(&self, pilot: PilotId) -> String {
        format!("{}lease:{}", self.base, pilot.get())
    }

    /// String: set (with an expiry) while a manager of the session is alive.
    pub fn manager(&self) -> String {
        format!("{}manager", self.base)
    }

    /// Every key the session may have, given its pilots.
    pub fn session_keys(&self, pilots: &[PilotRecord]) -> Vec<String> {
        let mut keys = vec![
            self.format(),
            self.unit_counter(),
            self.pilot_counter(),
            self.units(),
            self.pilots(),
            self.data(),
            self.space(),
            self.events(),
            self.heartbeats(),
        ];
        for p in pilots {
            keys.push(self.queue(p.id));
            keys.push(self.control(p.id));
        }
        keys
    }
}

/// `text` as a Redis glob pattern that matches only itself.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A session's entry in the registry as stored: the entry and the session's store format.
/// The registry is shared by the sessions of every format, so it stays JSON with these
/// fields in every version (an entry from before formats has no `format`: 0).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredEntry {
    #[serde(default)]
    pub format: u32,
    #[serde(flatten)]
    pub entry: SessionEntry,
}

/// A session as `pstar session list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEntry {
    pub session: String,
    /// The user who started it.
    pub owner: String,
    /// The host its first manager ran on.
    pub host: String,
    pub created: Timestamp,
    /// When its manager finished it (its keys expire some time after).
    #[serde(default)]
    pub finished: Option<Timestamp>,
}

impl SessionEntry {
    pub fn new(session: &str) -> Self {
        Self {
            session: session.to_owned(),
            owner: current_user(),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default(),
            created: Timestamp::now(),
            finished: None,
        }
    }
}

/// The user running this process: the account its uid names (not `$USER`, which anyone
/// can set), else `uid N`.
pub fn current_user() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid {uid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_their_session_literally() {
        assert_eq!(Keys::new("pstar", "a-b").pattern(), "pstar:a\\-b:*");
        assert_eq!(Keys::new("p*", "s").pattern(), "p\\*:s:*");
        assert_eq!(Keys::new("x", "[a]?\\").pattern(), "x:\\[a\\]\\?\\\\:*");
    }
}
