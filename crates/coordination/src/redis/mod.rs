//! The Redis backend. See `docs.md` beside this file.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, RedisError};
use tokio::sync::mpsc;
use tokio::time::Instant;

use pstar_model::{ComputeUnitDescription, PilotId, Timestamp, UnitId};

use crate::{
    AgentLease, Binding, Claimed, Control, Coordination, CoordinationError, DataUnitRecord, Event,
    PilotRecord, Result, Subscription, Withdrawal,
};

mod keys;
mod secret;
mod wire;

use keys::StoredEntry;
pub use keys::{Keys, SessionEntry, current_user};
pub use secret::{
    CA_FILE_ENV, COORDINATION_ENV, PASSWORD_ENV, PASSWORD_FILE_ENV, password_from_environment,
    secret_variables,
};
pub use wire::{WIRE_VERSION, show_version};

/// How a store connects, and how long it keeps trying when Redis goes away.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// How long a call keeps retrying a lost connection (with backoff) before it fails
    /// with [`CoordinationError::Unreachable`]. Long enough for Redis to restart.
    pub retry_for: Duration,
    /// The password, when it is not in the URL. Read it with
    /// [`password_from_environment`], never from a command line.
    pub password: Option<String>,
    /// For `rediss://`: a PEM file of the certificate authority to trust (else the system's
    /// trusted roots). See [`CA_FILE_ENV`].
    pub ca_file: Option<std::path::PathBuf>,
    /// The first part of every key (default `pstar`).
    pub prefix: String,
    /// Record the session in the registry of sessions: a manager starting a new session
    /// does, and is refused ([`CoordinationError::SessionExists`]) if the id is taken;
    /// agents, resumed managers and commands that only look at sessions do not.
    pub register: bool,
    /// How long the first connection keeps retrying, when not `retry_for` (a new session
    /// gives up sooner on a Redis it never reached: more likely a wrong address than a
    /// restart).
    pub connect_for: Option<Duration>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            retry_for: Duration::from_secs(60),
            password: None,
            ca_file: None,
            prefix: "pstar".into(),
            register: true,
            connect_for: None,
        }
    }
}

/// Most units one claim takes (keeps each Lua call's argument list small).
const CLAIM_MAX: usize = 1000;
/// How long a subscriber's blocking read waits before it looks again whether anyone
/// still listens.
const STREAM_BLOCK: Duration = Duration::from_secs(5);
/// Fields per `HSET` when storing many units.
const PUT_CHUNK: usize = 5000;

#[doc = include_str!("docs.md")]
pub struct RedisStore {
    session: String,
    /// The URL without its password: what agents are given.
    public_url: String,
    keys: Keys,
    client: redis::Client,
    /// Shared by every non-blocking command (Redis pipelines them on one connection).
    conn: ConnectionManager,
    /// Connections for blocking commands (claims, control messages, the stream), one per
    /// concurrent blocking call: a blocked connection would hold up everything else on it.
    blocking: Mutex<Vec<ConnectionManager>>,
    retry_for: Duration,
    /// Handed to agent processes through their environment.
    password: Option<String>,
    ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.public_url)
            .field("session", &self.session)
            .finish()
    }
}

static CLAIM: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
local ids = redis.call('LPOP', KEYS[1], ARGV[1])
if not ids then return {{}, {}} end
return {ids, redis.call('HMGET', KEYS[2], unpack(ids))}
"#,
    )
});

/// Takes or renews a pilot's agent lease: `KEYS[1]` is the lease, `ARGV[1]` the asker's
/// lease as stored, `ARGV[2]` its time to live in milliseconds. Free or already the
/// asker's: set for that long, nothing returned. Held by another: left alone, the holder
/// returned.
static HOLD_LEASE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"#,
    )
});

/// Reserves space in a pilot store: `KEYS[1]` the session's `space` hash, `ARGV[1]` the
/// store, `ARGV[2]` the bytes, `ARGV[3]` the quota (`-1`: none). Returns `{1, used after}`,
/// or `{0, used}` when the bytes do not fit (nothing reserved).
static RESERVE_SPACE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
local used = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local want = tonumber(ARGV[2])
local quota = tonumber(ARGV[3])
if quota >= 0 and used + want > quota then return {0, used} end
return {1, redis.call('HINCRBY', KEYS[1], ARGV[1], want)}
"#,
    )
});

/// Gives space back: `KEYS[1]` the `space` hash, `ARGV[1]` the store, `ARGV[2]` the bytes;
/// never below zero.
static RELEASE_SPACE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
local used = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local left = used - tonumber(ARGV[2])
if left < 0 then left = 0 end
redis.call('HSET', KEYS[1], ARGV[1], left)
return left
"#,
    )
});

/// Deletes a pilot's agent lease if `ARGV[1]` (the asker's, as stored) still holds it.
static RELEASE_LEASE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"#,
    )
});

/// Withdraws from several queues in one step. `KEYS` are the queues; `ARGV` holds, for
/// each key in turn, a count `n` (`-1`: the whole queue) then `n` unit numbers. Returns,
/// per key, the units removed, in queue order (each asked-for unit at most once).
static WITHDRAW: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
local out = {}
local a = 1
for k = 1, #KEYS do
  local n = tonumber(ARGV[a])
  a = a + 1
  if n < 0 then
    out[k] = redis.call('LRANGE', KEYS[k], 0, -1)
    redis.call('DEL', KEYS[k])
  elseif n == 0 then
    out[k] = {}
  else
    local wanted = {}
    for i = a, a + n - 1 do wanted[ARGV[i]] = true end
    a = a + n
    local removed, kept = {}, {}
    for _, id in ipairs(redis.call('LRANGE', KEYS[k], 0, -1)) do
      if wanted[id] then
        wanted[id] = nil
        removed[#removed + 1] = id
      else
        kept[#kept + 1] = id
      end
    end
    if #removed > 32 then
      -- Many: the queue is rewritten once.
      redis.call('DEL', KEYS[k])
      for i = 1, #kept, 1000 do
        redis.call('RPUSH', KEYS[k], unpack(kept, i, math.min(i + 999, #kept)))
      end
    else
      -- A few: each goes where it is, the rest stays untouched.
      for _, id in ipairs(removed) do redis.call('LREM', KEYS[k], 1, id) end
    end
    out[k] = removed
  end
end
return out
"#,
    )
});

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://[user[:password]@]host:port[/db]`) for
    /// `session`, whose id must pass [`pstar_model::check_session_id`]. Fails at once on a
    /// wrong password; retries an unreachable server for `options.retry_for`.
    pub async fn connect(url: &str, session: &str, options: RedisOptions) -> Result<Arc<Self>> {
        pstar_model::check_session_id(session)
            .map_err(|e| CoordinationError::Unsupported(e.to_string()))?;
        Self::open(url, session, options).await
    }

    /// Connects to the Redis at `url` to list or remove sessions ([`sessions`],
    /// [`remove_session`]), for no session of its own.
    ///
    /// [`sessions`]: Self::sessions
    /// [`remove_session`]: Self::remove_session
    pub async fn connect_registry(url: &str, options: RedisOptions) -> Result<Arc<Self>> {
        Self::open(
            url,
            "",
            RedisOptions {
                register: false,
                ..options
            },
        )
        .await
    }

    async fn open(url: &str, session: &str, options: RedisOptions) -> Result<Arc<Self>> {
        // Until the URL is known to be well formed, it is shown with its user-info masked.
        let shown = redact_url(url);
        let parsed = url::Url::parse(url)
            .map_err(|e| CoordinationError::Backend(format!("bad Redis URL `{shown}`: {e}")))?;
        if !matches!(parsed.scheme(), "redis" | "rediss") || !parsed.has_host() {
            return Err(CoordinationError::Backend(format!(
                "bad Redis URL `{shown}`: expected redis://HOST:PORT[/DB] or rediss://..."
            )));
        }
        let mut public = parsed.clone();
        let _ = public.set_password(None);
        let public_url = public.to_string();

        let mut info: redis::ConnectionInfo = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| {
                CoordinationError::Backend(format!("bad Redis URL `{public_url}`: {e}"))
            })?;
        if let Some(password) = &options.password
            && info.redis_settings().password().is_none()
        {
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let ca = options.ca_file.clone();
        if parsed.scheme() == "rediss" {
            // One process-wide choice of TLS implementation; a second install is a no-op.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = match (&ca, parsed.scheme()) {
            (Some(path), "rediss") => {
                let pem = std::fs::read(path).map_err(|e| {
                    CoordinationError::Backend(format!("CA file {}: {e}", path.display()))
                })?;
                redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
            _ => redis::Client::open(info),
        }
        .map_err(|e| CoordinationError::Backend(format!("Redis at {public_url}: {e}")))?;

        let deadline = Instant::now() + options.connect_for.unwrap_or(options.retry_for);
        let conn = connect_retrying(&client, &public_url, deadline, None).await?;
        let store = Arc::new(Self {
            session: session.to_owned(),
            public_url,
            keys: Keys::new(&options.prefix, session),
            client,
            conn,
            blocking: Mutex::new(Vec::new()),
            retry_for: options.retry_for,
            password: parsed.password().map(str::to_owned).or(options.password),
            ca_file: ca,
        });
        if options.register {
            store.register().await?;
        } else if !store.session.is_empty() {
            store.check_format().await?;
        }
        Ok(store)
    }

    /// Records the session in the registry of sessions (for `pstar session list`); refuses
    /// an id the registry already holds, so that two runs never share keys.
    async fn register(&self) -> Result<()> {
        let json = entry_json(&SessionEntry::new(&self.session))?;
        let registry = self.keys.registry();
        let session = self.session.clone();
        let added: bool = self
            .retrying("register the session", |mut c| {
                let (registry, session, json) = (registry.clone(), session.clone(), json.clone());
                async move { c.hset_nx(registry, session, json).await }
            })
            .await?;
        if !added {
            return Err(CoordinationError::SessionExists(self.session.clone()));
        }
        let key = self.keys.format();
        self.retrying("record the session's store format", |mut c| {
            let key = key.clone();
            async move { c.set::<_, _, ()>(key, WIRE_VERSION).await }
        })
        .await
    }

    /// Refuses a session written in another store format than this pstar's: its `format`
    /// key says which. A session with data but no such key is from before sessions had
    /// one (format 0) when its registry entry says so too; with neither the key nor an
    /// entry of another format, its keys were deleted (some have come back since, written
    /// by someone still at work in it): the session is lost. A session the store does not
    /// hold passes (whoever opens it says it is missing).
    async fn check_format(&self) -> Result<()> {
        let format = self.keys.format();
        let data = [
            self.keys.units(),
            self.keys.events(),
            self.keys.pilots(),
            self.keys.unit_counter(),
        ];
        let (registry, session) = (self.keys.registry(), self.session.clone());
        let (found, present, entry): (Option<String>, u64, Option<String>) = self
            .retrying("read the session's store format", |mut c| {
                let (format, data) = (format.clone(), data.clone());
                let (registry, session) = (registry.clone(), session.clone());
                async move {
                    redis::pipe()
                        .get(format)
                        .exists(&data)
                        .hget(registry, session)
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        let what = || format!("session `{}`", pstar_model::printable(&self.session));
        let found = match (found, present) {
            (Some(text), _) => text.trim().parse::<u32>().map_err(|_| {
                CoordinationError::Backend(format!(
                    "malformed store format of {} in Redis: `{}`",
                    what(),
                    pstar_model::printable(&text)
                ))
            })?,
            (None, 0) => return Ok(()),
            (None, _) => {
                let entry = entry.and_then(|j| serde_json::from_str::<StoredEntry>(&j).ok());
                match entry {
                    Some(e) if e.format != WIRE_VERSION => e.format,
                    _ => {
                        return Err(CoordinationError::SessionLost(format!(
                            "{} has data but not its store format (its keys were deleted)",
                            what()
                        )));
                    }
                }
            }
        };
        if found == WIRE_VERSION {
            Ok(())
        } else {
            Err(wire::incompatible(what(), found))
        }
    }

    /// What messages call a stored value of this session.
    fn of_session(&self, what: impl std::fmt::Display) -> String {
        format!(
            "{what} in session `{}`",
            pstar_model::printable(&self.session)
        )
    }

    /// Every session recorded in this Redis under `prefix`, oldest first, with whether its
    /// data is still there.
    pub async fn sessions(&self) -> Result<Vec<(SessionEntry, bool)>> {
        let registry = self.keys.registry();
        let all: Vec<(String, String)> = self
            .retrying("list sessions", |mut c| {
                let registry = registry.clone();
                async move { c.hgetall(registry).await }
            })
            .await?;
        // An entry that is not one (written by hand, or by someone hostile) is skipped,
        // not allowed to hide the others.
        let entries: Vec<SessionEntry> = all
            .iter()
            .filter_map(|(name, json)| match serde_json::from_str::<StoredEntry>(json) {
                // The registry's field is the session's id, whatever the entry says. The
                // sessions of every store format are listed.
                Ok(stored) => Some(SessionEntry {
                    session: name.clone(),
                    ..stored.entry
                }),
                Err(e) => {
                    let name = pstar_model::printable(name);
                    tracing::warn!(session = %name, error = %e, "skipping a malformed session entry");
                    None
                }
            })
            .collect();
        if entries.is_empty() {
            // An empty pipeline is no command at all: Redis would refuse it.
            return Ok(Vec::new());
        }
        // Whether each session's data is still there (or has expired): one pipeline.
        let mut pipe = redis::pipe();
        for e in &entries {
            let keys = self.keys.for_session(&e.session);
            pipe.cmd("EXISTS").arg(keys.units()).arg(keys.events());
        }
        let present: Vec<u64> = self
            .retrying("look up sessions", |mut c| {
                let pipe = pipe.clone();
                async move { pipe.query_async(&mut c).await }
            })
            .await?;
        let mut out: Vec<(SessionEntry, bool)> = entries
            .into_iter()
            .zip(present)
            .map(|(e, n)| (e, n > 0))
            .collect();
        out.sort_by_key(|a| a.0.created);
        Ok(out)
    }

    /// Deletes every key of `session` and its registry entry; returns how many keys went.
    /// Only keys under `<prefix>:<session>:` go: the id is checked, and matched literally.
    pub async fn remove_session(&self, session: &str) -> Result<u64> {
        pstar_model::check_session_id(session)
            .map_err(|e| CoordinationError::Unsupported(e.to_string()))?;
        let keys = self.keys.for_session(session);
        let pattern = keys.pattern();
        let mut removed = 0u64;
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .retrying("scan session keys", |mut c| {
                    let pattern = pattern.clone();
                    async move {
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(1000)
                            .query_async(&mut c)
                            .await
                    }
                })
                .await?;
            if !batch.is_empty() {
                removed += self
                    .retrying("delete session keys", |mut c| {
                        let batch = batch.clone();
                        async move { c.del::<_, u64>(batch).await }
                    })
                    .await?;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let registry = self.keys.registry();
        let session = session.to_owned();
        self.retrying("unregister the session", |mut c| {
            let (registry, session) = (registry.clone(), session.clone());
            async move { c.hdel::<_, _, ()>(registry, session).await }
        })
        .await?;
        Ok(removed)
    }

    /// Runs `op` on the shared connection; on a lost connection, retries with backoff
    /// until `retry_for` has passed.
    async fn retrying<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        retry(&self.conn, &self.public_url, what, self.retry_for, op).await
    }

    /// Runs a blocking command on a connection of its own.
    async fn blocking<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let taken = self.blocking.lock().ok().and_then(|mut pool| pool.pop());
        let conn = match taken {
            Some(c) => c,
            None => {
                let deadline = Instant::now() + self.retry_for;
                connect_retrying(&self.client, &self.public_url, deadline, None).await?
            }
        };
        let out = retry(&conn, &self.public_url, what, self.retry_for, op).await;
        if let Ok(mut pool) = self.blocking.lock() {
            pool.push(conn);
        }
        out
    }

    /// The claimed units `ids` with their stored descriptions `descs`. A claimed unit
    /// without a description means the session's keys are gone (deleted, or Redis
    /// restarted without its data): that is an error, not a unit to skip.
    ///
    /// A description that cannot be read (written into the store by hand, or by someone
    /// hostile) fails its unit, with the reason, on the stream: it is out of its queue now,
    /// and must not wait there for ever.
    async fn describe(
        &self,
        pilot: PilotId,
        ids: &[String],
        descs: Vec<Option<Vec<u8>>>,
    ) -> Result<Vec<Claimed>> {
        let mut unreadable = Vec::new();
        let claimed = self.describe_all(ids, descs, &mut unreadable)?;
        if !unreadable.is_empty() {
            let at = pstar_model::Timestamp::now();
            let events = unreadable
                .into_iter()
                .map(|(unit, why)| {
                    Event::Unit(crate::UnitEvent {
                        unit,
                        pilot: Some(pilot),
                        state: pstar_model::UnitState::Failed,
                        at,
                        exit_code: None,
                        detail: Some(format!(
                            "its description in the coordination store cannot be read: {why}"
                        )),
                        lost_run: None,
                        failed_run: false,
                        result: None,
                    })
                })
                .collect();
            self.publish(events).await?;
        }
        Ok(claimed)
    }

    fn describe_all(
        &self,
        ids: &[String],
        descs: Vec<Option<Vec<u8>>>,
        unreadable: &mut Vec<(UnitId, String)>,
    ) -> Result<Vec<Claimed>> {
        let mut claimed = Vec::with_capacity(ids.len());
        for (id, bytes) in ids.iter().zip(descs) {
            let Some(id) = parse_unit(id) else { continue };
            let Some(bytes) = bytes else {
                return Err(CoordinationError::SessionLost(format!(
                    "{id} was in a queue but its description is not in the store"
                )));
            };
            match wire::decode::<ComputeUnitDescription>(&bytes, || {
                self.of_session(format_args!("{id}'s description"))
            }) {
                Ok(d) => claimed.push((id, Arc::new(d))),
                // Another format is the whole session's matter: said, never skipped.
                Err(e @ CoordinationError::Incompatible { .. }) => return Err(e),
                Err(e) => {
                    tracing::error!(unit = %id, error = %e, "malformed unit description in Redis");
                    unreadable.push((id, e.to_string()));
                }
            }
        }
        Ok(claimed)
    }
}

/// A batch of events as the stream holds it; `what` names it for messages.
fn read_batch(value: &redis::Value, what: impl Fn() -> String) -> Result<Vec<Event>> {
    let bytes: Vec<u8> = redis::from_redis_value_ref(value)
        .map_err(|e| CoordinationError::Backend(format!("malformed {}: {e}", what())))?;
    wire::decode::<Vec<Event>>(&bytes, what)
}

/// What every reader of the stream says of a batch in this format that does not decode:
/// it is skipped, not fatal, so that a stray value cannot stop a session (or its cancel).
fn skipped_batch(entry: &str, error: &CoordinationError) {
    tracing::warn!(%entry, %error, "skipped an event batch that cannot be read");
}

/// Opens a connection manager, retrying an unreachable server until `deadline`; a refused
/// password fails at once.
async fn connect_retrying(
    client: &redis::Client,
    url: &str,
    deadline: Instant,
    response_timeout: Option<Duration>,
) -> Result<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(response_timeout)
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(2));
    let mut delay = Duration::from_millis(50);
    // Said once per connection attempt; each further try only at debug level.
    let mut warned = false;
    loop {
        match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
            Ok(c) => return Ok(c),
            Err(e) => match classify(&e) {
                Failure::Auth => {
                    return Err(CoordinationError::Unauthorized(format!(
                        "Redis at {url}: {e}{AUTH_HINT}"
                    )));
                }
                Failure::Transient if Instant::now() + delay < deadline => {
                    if std::mem::replace(&mut warned, true) {
                        tracing::debug!(%url, error = %e, "Redis unreachable; retrying");
                    } else {
                        let left = humantime::format_duration(Duration::from_secs(
                            deadline.saturating_duration_since(Instant::now()).as_secs(),
                        ));
                        tracing::warn!(%url, error = %e, "Redis unreachable; retrying for up to {left}");
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Failure::Transient => {
                    return Err(CoordinationError::Unreachable(format!(
                        "Redis at {url}: {e} (gave up retrying)"
                    )));
                }
                Failure::Other => {
                    return Err(CoordinationError::Backend(format!("Redis at {url}: {e}")));
                }
            },
        }
    }
}

async fn retry<T, F, Fut>(
    conn: &ConnectionManager,
    url: &str,
    what: &str,
    retry_for: Duration,
    mut op: F,
) -> Result<T>
where
    F: FnMut(ConnectionManager) -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
{
    let deadline = Instant::now() + retry_for;
    let mut delay = Duration::from_millis(50);
    // Said once per call; each further try only at debug level.
    let mut warned = false;
    loop {
        match op(conn.clone()).await {
            Ok(v) => return Ok(v),
            Err(e) => match classify(&e) {
                Failure::Auth => {
                    return Err(CoordinationError::Unauthorized(format!(
                        "Redis at {url} ({what}): {e}{AUTH_HINT}"
                    )));
                }
                Failure::Transient if Instant::now() + delay < deadline => {
                    if std::mem::replace(&mut warned, true) {
                        tracing::debug!(%url, error = %e, "cannot {what}; retrying");
                    } else {
                        tracing::warn!(%url, error = %e, "cannot {what}; retrying");
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Failure::Transient => {
                    return Err(CoordinationError::Unreachable(format!(
                        "Redis at {url}: cannot {what}: {e} (gave up after {})",
                        humantime::format_duration(retry_for)
                    )));
                }
                Failure::Other => {
                    return Err(CoordinationError::Backend(format!(
                        "Redis at {url}: cannot {what}: {e}"
                    )));
                }
            },
        }
    }
}

/// What a refused password or a missing one says to do.
const AUTH_HINT: &str = " (give the Redis password in PSTAR_REDIS_PASSWORD, or in a file \
     of mode 0600 named by PSTAR_REDIS_PASSWORD_FILE)";

/// `url` as agents are given it: without its password (which reaches them through their
/// environment instead). A URL that does not parse is masked as by [`redact_url`].
pub fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.has_host() => {
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        _ => redact_url(url),
    }
}

/// `url` with the password of its user-info masked, for messages: works on text that is
/// not a valid URL too (a malformed URL is exactly the one that gets printed).
pub fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    // The last `@` ends the user-info even when the password holds `/`, `?` or `@`.
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let user = rest[..at].split(':').next().unwrap_or_default();
    if user.len() == at {
        // `user@host`: no password.
        return url.to_owned();
    }
    format!("{}{user}:***{}", &url[..start], &rest[at..])
}

enum Failure {
    Auth,
    Transient,
    Other,
}

fn classify(e: &RedisError) -> Failure {
    let code = e.code().unwrap_or_default();
    // A pipeline's failure carries its commands' codes in its text only.
    let text = e.to_string();
    if e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(code, "WRONGPASS" | "NOAUTH" | "NOPERM")
        || ["\"NOAUTH\"", "\"WRONGPASS\"", "\"NOPERM\""]
            .iter()
            .any(|c| text.contains(c))
    {
        Failure::Auth
    } else if e.to_string().to_lowercase().contains("certificate") {
        // An untrusted or mismatched TLS certificate does not get better by retrying.
        Failure::Other
    } else if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(code, "LOADING" | "TRYAGAIN" | "MASTERDOWN")
    {
        Failure::Transient
    } else {
        Failure::Other
    }
}

/// A session's registry entry as stored, in this pstar's store format.
fn entry_json(entry: &SessionEntry) -> Result<String> {
    let stored = StoredEntry {
        format: WIRE_VERSION,
        entry: entry.clone(),
    };
    serde_json::to_string(&stored)
        .map_err(|e| CoordinationError::Backend(format!("cannot encode a session entry: {e}")))
}

fn parse_unit(text: &str) -> Option<UnitId> {
    text.parse().ok().map(UnitId::new)
}

#[async_trait]
impl Coordination for RedisStore {
    fn session(&self) -> &str {
        &self.session
    }

    fn url(&self) -> Option<String> {
        Some(self.public_url.clone())
    }

    fn agent_environment(&self) -> Vec<(String, String)> {
        let password = self
            .password
            .iter()
            .map(|p| (PASSWORD_ENV.to_owned(), p.clone()));
        let ca = self
            .ca_file
            .iter()
            .map(|p| (CA_FILE_ENV.to_owned(), p.display().to_string()));
        password.chain(ca).collect()
    }

    async fn reserve_unit_ids(&self, n: u64) -> Result<UnitId> {
        let key = self.keys.unit_counter();
        let last: u64 = self
            .retrying("reserve unit ids", |mut c| {
                let key = key.clone();
                async move { c.incr(key, n).await }
            })
            .await?;
        Ok(UnitId::new(last - n))
    }

    async fn reserve_pilot_id(&self) -> Result<PilotId> {
        let key = self.keys.pilot_counter();
        let last: u64 = self
            .retrying("reserve a pilot id", |mut c| {
                let key = key.clone();
                async move { c.incr(key, 1u64).await }
            })
            .await?;
        Ok(PilotId::new(last - 1))
    }

    async fn put_pilot(&self, record: PilotRecord) -> Result<()> {
        let bytes = wire::encode(&record)?;
        let key = self.keys.pilots();
        let field = record.id.get();
        self.retrying("store a pilot", |mut c| {
            let (key, bytes) = (key.clone(), bytes.clone());
            async move { c.hset::<_, _, _, ()>(key, field, bytes).await }
        })
        .await
    }

    async fn pilot(&self, id: PilotId) -> Result<PilotRecord> {
        let key = self.keys.pilots();
        let bytes: Option<Vec<u8>> = self
            .retrying("read a pilot", |mut c| {
                let key = key.clone();
                async move { c.hget(key, id.get()).await }
            })
            .await?;
        match bytes {
            Some(b) => wire::decode(&b, || self.of_session(format_args!("{id}'s record"))),
            None => Err(CoordinationError::UnknownPilot(id)),
        }
    }

    async fn reserve_space(
        &self,
        store: &str,
        bytes: u64,
        quota: Option<u64>,
    ) -> Result<std::result::Result<u64, u64>> {
        let key = self.keys.space();
        let quota: i64 = quota.map_or(-1, |q| i64::try_from(q).unwrap_or(i64::MAX));
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let (ok, used): (i64, i64) = self
            .retrying("reserve space in a pilot store", |mut c| {
                let key = key.clone();
                async move {
                    RESERVE_SPACE
                        .key(key)
                        .arg(store)
                        .arg(bytes)
                        .arg(quota)
                        .invoke_async(&mut c)
                        .await
                }
            })
            .await?;
        let used = u64::try_from(used).unwrap_or(0);
        Ok(if ok == 1 { Ok(used) } else { Err(used) })
    }

    async fn release_space(&self, store: &str, bytes: u64) -> Result<()> {
        let key = self.keys.space();
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.retrying("give back space in a pilot store", |mut c| {
            let key = key.clone();
            async move {
                RELEASE_SPACE
                    .key(key)
                    .arg(store)
                    .arg(bytes)
                    .invoke_async::<i64>(&mut c)
                    .await
                    .map(|_| ())
            }
        })
        .await
    }

    async fn put_data_units(&self, records: &[DataUnitRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let key = self.keys.data();
        let mut fields = Vec::with_capacity(records.len());
        for r in records {
            fields.push((r.name.clone(), wire::encode(r)?));
        }
        self.retrying("store data units", |mut c| {
            let (key, fields) = (key.clone(), fields.clone());
            async move { c.hset_multiple::<_, _, _, ()>(key, &fields).await }
        })
        .await
    }

    async fn data_units(&self, names: &[String]) -> Result<Vec<Option<DataUnitRecord>>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.keys.data();
        let all: Vec<Option<Vec<u8>>> = self
            .retrying("read data units", |mut c| {
                let key = key.clone();
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(key).arg(names);
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        all.into_iter()
            .zip(names)
            .map(|(bytes, name)| match bytes {
                None => Ok(None),
                Some(b) => wire::decode(&b, || {
                    self.of_session(format_args!("data unit {name}'s record"))
                })
                .map(Some),
            })
            .collect()
    }

    async fn put_units(&self, units: &[Claimed]) -> Result<()> {
        let key = self.keys.units();
        let mut fields = Vec::with_capacity(units.len());
        for (id, desc) in units {
            fields.push((id.get(), wire::encode(desc.as_ref())?));
        }
        // One round trip: every chunk's HSET in one pipeline.
        let mut pipe = redis::pipe();
        for chunk in fields.chunks(PUT_CHUNK) {
            pipe.hset_multiple(&key, chunk).ignore();
        }
        self.retrying("store units", |mut c| {
            let pipe = pipe.clone();
            async move { pipe.query_async::<()>(&mut c).await }
        })
        .await
    }

    async fn enqueue(&self, pilot: PilotId, units: &[UnitId]) -> Result<()> {
        if units.is_empty() {
            return Ok(());
        }
        let key = self.keys.queue(pilot);
        let ids: Vec<u64> = units.iter().map(|u| u.get()).collect();
        self.retrying("enqueue units", |mut c| {
            let (key, ids) = (key.clone(), ids.clone());
            async move { c.rpush::<_, _, ()>(key, ids).await }
        })
        .await
    }

    async fn withdraw(&self, pilot: PilotId, units: Option<&[UnitId]>) -> Result<Vec<UnitId>> {
        let mut out = self
            .withdraw_batch(vec![(pilot, units.map(<[UnitId]>::to_vec))])
            .await?;
        Ok(out.pop().map(|(_, removed)| removed).unwrap_or_default())
    }

    async fn withdraw_batch(
        &self,
        requests: Vec<Withdrawal>,
    ) -> Result<Vec<(PilotId, Vec<UnitId>)>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let mut keys = Vec::with_capacity(requests.len());
        let mut args: Vec<i64> = Vec::new();
        for (pilot, units) in &requests {
            keys.push(self.keys.queue(*pilot));
            match units {
                None => args.push(-1),
                Some(ids) => {
                    args.push(ids.len() as i64);
                    args.extend(ids.iter().map(|u| u.get() as i64));
                }
            }
        }
        // One script for every queue: one round trip, and no claim slips in between.
        let removed: Vec<Vec<String>> = self
            .retrying("withdraw units", |mut c| {
                let (keys, args) = (keys.clone(), args.clone());
                async move {
                    let mut call = WITHDRAW.prepare_invoke();
                    for key in &keys {
                        call.key(key);
                    }
                    for arg in &args {
                        call.arg(*arg);
                    }
                    call.invoke_async(&mut c).await
                }
            })
            .await?;
        if removed.len() != requests.len() {
            return Err(CoordinationError::Backend(format!(
                "withdrawing from {} queues answered for {}",
                requests.len(),
                removed.len()
            )));
        }
        Ok(requests
            .into_iter()
            .zip(removed)
            .map(|((pilot, _), ids)| (pilot, ids.iter().filter_map(|s| parse_unit(s)).collect()))
            .collect())
    }

    async fn claim(&self, pilot: PilotId, max: usize, wait: Duration) -> Result<Vec<Claimed>> {
        let max = max.clamp(1, CLAIM_MAX);
        let queue = self.keys.queue(pilot);
        let units = self.keys.units();
        // The usual case, units waiting: pop them and read their descriptions in one step.
        let (ids, descs): (Vec<String>, Vec<Option<Vec<u8>>>) = self
            .retrying("claim units", |mut c| {
                let (queue, units) = (queue.clone(), units.clone());
                async move {
                    CLAIM
                        .key(queue)
                        .key(units)
                        .arg(max)
                        .invoke_async(&mut c)
                        .await
                }
            })
            .await?;
        if !ids.is_empty() || wait.is_zero() {
            return self.describe(pilot, &ids, descs).await;
        }
        // None waiting: block until some come (or `wait` ends), on a connection of its own.
        let popped: Option<(String, Vec<String>)> = self
            .blocking("wait for units", |mut c| {
                let queue = queue.clone();
                async move {
                    c.blmpop(wait.as_secs_f64(), 1, queue, redis::Direction::Left, max)
                        .await
                }
            })
            .await?;
        let Some((_, ids)) = popped else {
            return Ok(Vec::new());
        };
        let descs: Vec<Option<Vec<u8>>> = self
            .retrying("read claimed units", |mut c| {
                let (units, ids) = (units.clone(), ids.clone());
                async move {
                    redis::cmd("HMGET")
                        .arg(units)
                        .arg(ids)
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        self.describe(pilot, &ids, descs).await
    }

    async fn publish(&self, events: Vec<Event>) -> Result<()> {
        self.publish_and_enqueue(events, Vec::new()).await
    }

    async fn publish_and_enqueue(&self, events: Vec<Event>, bindings: Vec<Binding>) -> Result<()> {
        if events.is_empty() && bindings.iter().all(|(_, u)| u.is_empty()) {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        // Events alone are one command; with bindings, one transaction.
        if bindings.iter().any(|(_, u)| !u.is_empty()) {
            pipe.atomic();
        }
        if !events.is_empty() {
            pipe.xadd(self.keys.events(), "*", &[("e", wire::encode(&events)?)])
                .ignore();
        }
        for (pilot, units) in &bindings {
            if !units.is_empty() {
                let ids: Vec<u64> = units.iter().map(|u| u.get()).collect();
                pipe.rpush(self.keys.queue(*pilot), ids).ignore();
            }
        }
        self.retrying("publish events", |mut c| {
            let pipe = pipe.clone();
            async move { pipe.query_async::<()>(&mut c).await }
        })
        .await
    }

    async fn subscribe(&self) -> Result<Subscription> {
        let key = self.keys.events();
        let last: redis::streams::StreamRangeReply = self
            .retrying("read the event stream", |mut c| {
                let key = key.clone();
                async move { c.xrevrange_count(key, "+", "-", 1).await }
            })
            .await?;
        let from = last
            .ids
            .first()
            .map(|e| e.id.clone())
            .unwrap_or_else(|| "0-0".into());
        self.follow(from).await
    }

    async fn subscribe_from_start(&self) -> Result<Subscription> {
        self.follow("0-0".into()).await
    }

    async fn all_units(&self) -> Result<Vec<Claimed>> {
        let key = self.keys.units();
        let mut out = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<(String, Vec<u8>)>) = self
                .retrying("read units", |mut c| {
                    let key = key.clone();
                    async move {
                        redis::cmd("HSCAN")
                            .arg(key)
                            .arg(cursor)
                            .arg("COUNT")
                            .arg(5000)
                            .query_async(&mut c)
                            .await
                    }
                })
                .await?;
            for (id, bytes) in batch {
                let Some(id) = parse_unit(&id) else { continue };
                let what = || self.of_session(format_args!("{id}'s description"));
                match wire::decode(&bytes, what) {
                    Ok(d) => out.push((id, Arc::new(d))),
                    Err(e @ CoordinationError::Incompatible { .. }) => return Err(e),
                    // Written by hand, or by someone hostile: as an event batch that does
                    // not decode, it must not stop a session's inspection or its cancel.
                    // (An agent that claims it fails it with the reason.)
                    Err(e) => {
                        tracing::warn!(unit = %id, error = %e, "skipped a unit whose description cannot be read")
                    }
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        out.sort_by_key(|(id, _)| *id);
        out.dedup_by_key(|(id, _)| *id);
        Ok(out)
    }

    async fn all_pilots(&self) -> Result<Vec<PilotRecord>> {
        let key = self.keys.pilots();
        let all: Vec<(u64, Vec<u8>)> = self
            .retrying("read pilots", |mut c| {
                let key = key.clone();
                async move { c.hgetall(key).await }
            })
            .await?;
        let mut pilots = all
            .iter()
            .map(|(n, bytes)| {
                let what = || self.of_session(format_args!("{}'s record", PilotId::new(*n)));
                wire::decode::<PilotRecord>(bytes, what)
            })
            .collect::<Result<Vec<_>>>()?;
        pilots.sort_by_key(|p| p.id);
        Ok(pilots)
    }

    async fn finish(&self, keep: Duration) -> Result<()> {
        let keys = self.keys.session_keys(&self.all_pilots().await?);
        // At most a century: Redis refuses (or, past its range, wraps) larger expiries.
        let secs = keep.as_secs().clamp(1, 100 * 365 * 24 * 3600) as i64;
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.expire(key, secs).ignore();
        }
        // The manager is done: nobody is alive to act on requests any more.
        pipe.del(self.keys.manager()).ignore();
        let registry = self.keys.registry();
        let mut entry = self.session_entry().await?;
        entry.finished = Some(Timestamp::now());
        pipe.hset(&registry, &self.session, entry_json(&entry)?)
            .ignore();
        self.retrying("set the session's expiry", |mut c| {
            let pipe = pipe.clone();
            async move { pipe.query_async::<()>(&mut c).await }
        })
        .await
    }

    async fn send_control(&self, pilot: PilotId, message: Control) -> Result<()> {
        self.send_controls(vec![(pilot, message)]).await
    }

    async fn send_controls(&self, messages: Vec<(PilotId, Control)>) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        // One RPUSH per pilot, each pilot's messages in the order given; all in one
        // transaction, so a retried call never delivers half of them twice.
        let mut per_pilot: Vec<(PilotId, Vec<Vec<u8>>)> = Vec::new();
        let mut slot: std::collections::HashMap<PilotId, usize> = Default::default();
        for (pilot, message) in &messages {
            let encoded = wire::encode(message)?;
            let i = *slot.entry(*pilot).or_insert_with(|| {
                per_pilot.push((*pilot, Vec::new()));
                per_pilot.len() - 1
            });
            per_pilot[i].1.push(encoded);
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (pilot, list) in &per_pilot {
            pipe.rpush(self.keys.control(*pilot), list).ignore();
        }
        self.retrying("send control messages", |mut c| {
            let pipe = pipe.clone();
            async move { pipe.query_async::<()>(&mut c).await }
        })
        .await
    }

    async fn recv_control(&self, pilot: PilotId, wait: Duration) -> Result<Vec<Control>> {
        let key = self.keys.control(pilot);
        let popped: Option<(String, Vec<Vec<u8>>)> = self
            .blocking("wait for control messages", |mut c| {
                let key = key.clone();
                async move {
                    c.blmpop(wait.as_secs_f64(), 1, key, redis::Direction::Left, 100)
                        .await
                }
            })
            .await?;
        let Some((_, messages)) = popped else {
            return Ok(Vec::new());
        };
        messages
            .iter()
            .map(|m| {
                wire::decode(m, || {
                    self.of_session(format_args!("a control message for {pilot}"))
                })
            })
            .collect()
    }

    async fn heartbeat(&self, pilot: PilotId, at: Timestamp) -> Result<()> {
        let key = self.keys.heartbeats();
        let value = at.as_micros();
        self.retrying("send a heartbeat", |mut c| {
            let key = key.clone();
            async move { c.hset::<_, _, _, ()>(key, pilot.get(), value).await }
        })
        .await
    }

    async fn hold_agent_lease(
        &self,
        pilot: PilotId,
        lease: &AgentLease,
        ttl: Duration,
    ) -> Result<Option<AgentLease>> {
        let key = self.keys.lease(pilot);
        let value = wire::encode(lease)?;
        let ms = (ttl.as_millis() as u64).max(1);
        let held: Option<Vec<u8>> = self
            .retrying("hold the agent's lease", |mut c| {
                let (key, value) = (key.clone(), value.clone());
                async move {
                    HOLD_LEASE
                        .key(key)
                        .arg(value)
                        .arg(ms)
                        .invoke_async(&mut c)
                        .await
                }
            })
            .await?;
        held.map(|bytes| {
            wire::decode::<AgentLease>(&bytes, || {
                self.of_session(format_args!("the agent lease of {pilot}"))
            })
        })
        .transpose()
    }

    async fn release_agent_lease(&self, pilot: PilotId, lease: &AgentLease) -> Result<()> {
        let key = self.keys.lease(pilot);
        let value = wire::encode(lease)?;
        self.retrying("release the agent's lease", |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                RELEASE_LEASE
                    .key(key)
                    .arg(value)
                    .invoke_async::<()>(&mut c)
                    .await
            }
        })
        .await
    }

    async fn abandon(&self) -> Result<()> {
        let keys = self.keys.session_keys(&self.all_pilots().await?);
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.expire(key, 60).ignore();
        }
        pipe.del(self.keys.manager()).ignore();
        self.retrying("abandon the session", |mut c| {
            let pipe = pipe.clone();
            async move { pipe.query_async::<()>(&mut c).await }
        })
        .await
    }

    async fn manager_alive(&self, ttl: Duration) -> Result<()> {
        let key = self.keys.manager();
        let value = Timestamp::now().as_micros();
        let ms = (ttl.as_millis() as u64).max(1);
        self.retrying("record the manager alive", |mut c| {
            let key = key.clone();
            async move { c.pset_ex::<_, _, ()>(key, value, ms).await }
        })
        .await
    }

    async fn heartbeats(&self) -> Result<Vec<(PilotId, Timestamp)>> {
        let key = self.keys.heartbeats();
        let all: Vec<(u64, u64)> = self
            .retrying("read heartbeats", |mut c| {
                let key = key.clone();
                async move { c.hgetall(key).await }
            })
            .await?;
        Ok(all
            .into_iter()
            .map(|(p, t)| (PilotId::new(p), Timestamp::from_micros(t)))
            .collect())
    }
}

impl RedisStore {
    /// Every event of the session so far, in order (for `pstar status` and `pstar units`).
    ///
    /// As a manager following the stream: a batch of another store format fails (nothing
    /// after it could be trusted to be complete); a batch in this format that does not
    /// decode (written by hand, or by someone hostile) is skipped with a warning.
    pub async fn history(&self) -> Result<Vec<Event>> {
        let key = self.keys.events();
        let mut events = Vec::new();
        let mut from = "-".to_owned();
        loop {
            let page: redis::streams::StreamRangeReply = self
                .retrying("read the event stream", |mut c| {
                    let (key, from) = (key.clone(), from.clone());
                    async move { c.xrange_count(key, from, "+", 1000).await }
                })
                .await?;
            let Some(last) = page.ids.last() else { break };
            from = format!("({}", last.id);
            let full = page.ids.len() == 1000;
            for entry in &page.ids {
                let Some(value) = entry.map.get("e") else {
                    continue;
                };
                let what = || self.of_session(format_args!("event batch {}", entry.id));
                match read_batch(value, what) {
                    Ok(batch) => events.extend(batch),
                    Err(e @ CoordinationError::Incompatible { .. }) => return Err(e),
                    Err(e) => skipped_batch(&entry.id, &e),
                }
            }
            if !full {
                break;
            }
        }
        Ok(events)
    }

    /// Whether a manager of this session is alive: one recorded itself
    /// ([`Coordination::manager_alive`]) and its record has not expired.
    /// Takes the session's manager record for `ttl` if no live manager holds it, in one
    /// step (`SET NX`): of two managers that ask at once, one gets it. Whether this did.
    pub async fn claim_manager(&self, ttl: Duration) -> Result<bool> {
        let key = self.keys.manager();
        let value = Timestamp::now().as_micros();
        let ms = (ttl.as_millis() as u64).max(1);
        self.retrying("claim the session's manager", |mut c| {
            let key = key.clone();
            async move {
                let set: Option<String> = redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut c)
                    .await?;
                Ok(set.is_some())
            }
        })
        .await
    }

    pub async fn has_live_manager(&self) -> Result<bool> {
        let key = self.keys.manager();
        self.retrying("look for the session's manager", |mut c| {
            let key = key.clone();
            async move { c.exists(key).await }
        })
        .await
    }

    /// Whether the store holds anything of this session (its units or its events).
    pub async fn exists(&self) -> Result<bool> {
        let (units, events) = (self.keys.units(), self.keys.events());
        let n: u64 = self
            .retrying("look up the session", |mut c| {
                let (units, events) = (units.clone(), events.clone());
                async move {
                    redis::cmd("EXISTS")
                        .arg(units)
                        .arg(events)
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        Ok(n > 0)
    }

    /// This session's entry in the registry (a fresh one if it is missing).
    pub async fn session_entry(&self) -> Result<SessionEntry> {
        let registry = self.keys.registry();
        let session = self.session.clone();
        let json: Option<String> = self
            .retrying("read the session entry", |mut c| {
                let (registry, session) = (registry.clone(), session.clone());
                async move { c.hget(registry, session).await }
            })
            .await?;
        let what = || {
            format!(
                "the registry entry of session `{}`",
                pstar_model::printable(&self.session)
            )
        };
        let Some(json) = json else {
            return Ok(SessionEntry::new(&self.session));
        };
        let stored: StoredEntry = serde_json::from_str(&json).map_err(|e| {
            CoordinationError::Backend(format!("malformed {} in Redis: {e}", what()))
        })?;
        if stored.format != WIRE_VERSION {
            return Err(wire::incompatible(what(), stored.format));
        }
        Ok(stored.entry)
    }

    /// Follows the stream from just after entry `from`, on a connection of its own.
    async fn follow(&self, from: String) -> Result<Subscription> {
        let deadline = Instant::now() + self.retry_for;
        let timeout = Some(STREAM_BLOCK + Duration::from_secs(5));
        let conn = connect_retrying(&self.client, &self.public_url, deadline, timeout).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let key = self.keys.events();
        let url = self.public_url.clone();
        let retry_for = self.retry_for;
        let session = pstar_model::printable(&self.session).to_string();
        tokio::spawn(async move {
            let mut last = from;
            while !tx.is_closed() {
                let read = retry(&conn, &url, "read the event stream", retry_for, |mut c| {
                    let (key, last) = (key.clone(), last.clone());
                    let options = redis::streams::StreamReadOptions::default()
                        .block(STREAM_BLOCK.as_millis() as usize)
                        .count(1000);
                    async move {
                        c.xread_options::<_, _, Option<redis::streams::StreamReadReply>>(
                            &[key],
                            &[last],
                            &options,
                        )
                        .await
                    }
                })
                .await;
                let reply = match read {
                    Ok(Some(reply)) => reply,
                    Ok(None) => continue,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let mut batch: Vec<Event> = Vec::new();
                for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
                    last = entry.id.clone();
                    let Some(value) = entry.map.get("e") else {
                        continue;
                    };
                    let parsed = read_batch(value, || {
                        format!("event batch {} in session `{session}`", entry.id)
                    });
                    match parsed {
                        Ok(events) => batch.extend(events),
                        // Another format ends the subscription with the error (after what
                        // came before it): a follower must not go on without those events.
                        Err(e @ CoordinationError::Incompatible { .. }) => {
                            if !batch.is_empty() {
                                let _ = tx.send(Ok(std::mem::take(&mut batch).into()));
                            }
                            let _ = tx.send(Err(e));
                            return;
                        }
                        Err(e) => skipped_batch(&entry.id, &e),
                    }
                }
                if !batch.is_empty() && tx.send(Ok(batch.into())).is_err() {
                    return;
                }
            }
        });
        Ok(Subscription::new(rx))
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn urls_are_shown_without_their_password() {
        let cases = [
            ("redis://u:pw@h:1/0", "redis://u:***@h:1/0"),
            ("redis://:pw@h:1", "redis://:***@h:1"),
            ("redis://u:p/w@d@h:1/0", "redis://u:***@h:1/0"),
            ("u:pw@h:1", "u:***@h:1"),
            ("redis://u@h:1/0", "redis://u@h:1/0"),
            ("redis://h:1/0", "redis://h:1/0"),
            ("", ""),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
