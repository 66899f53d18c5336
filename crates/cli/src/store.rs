//! Opening the coordination store a command names.

use std::sync::Arc;
use std::time::Duration;

use pstar::Coordination;
use pstar_coordination::redis::password_from_environment;
use pstar_coordination::{CoordinationError, RedisOptions, RedisStore};

/// Where the store is given: `--coordination URL`, else `PSTAR_COORDINATION`.
pub use pstar_coordination::redis::COORDINATION_ENV;

/// How long calls keep retrying a lost Redis (`PSTAR_REDIS_RETRY`, e.g. `30s`; default
/// 60 s).
pub fn retry_for() -> Duration {
    std::env::var("PSTAR_REDIS_RETRY")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .unwrap_or(RedisOptions::default().retry_for)
}

/// Connects to the Redis at `url` for an existing `session` (an agent's, a resumed
/// manager's, or one to look at), without recording it in the registry. The password
/// comes from the URL or the environment (`PSTAR_REDIS_PASSWORD`,
/// `PSTAR_REDIS_PASSWORD_FILE`).
pub async fn open_existing(url: &str, session: &str) -> Result<Arc<RedisStore>, CoordinationError> {
    RedisStore::connect(url, session, options(false, retry_for())?).await
}

/// How long a command that only looks at a session (or steers it from outside) keeps
/// retrying an unreachable Redis: a few seconds, not a restart's worth; a wrong URL is
/// said at once rather than after a minute.
const LOOK_RETRY: Duration = Duration::from_secs(5);

/// How long a new run tries to reach a Redis it has never reached (then the calls of the
/// run retry for [`retry_for`]).
const FIRST_CONNECT: Duration = Duration::from_secs(10);

/// [`open_existing`] for a command that looks at the session or steers it from another
/// terminal (`status`, `units`, `cancel`, `pilot logs`): it gives up on an unreachable
/// Redis after a few seconds.
pub async fn open_to_look(url: &str, session: &str) -> Result<Arc<RedisStore>, CoordinationError> {
    RedisStore::connect(url, session, options(false, retry_for().min(LOOK_RETRY))?).await
}

/// Connects to the Redis at `url` to list or remove sessions (giving up on an unreachable
/// one after a few seconds).
pub async fn open_registry(url: &str) -> Result<Arc<RedisStore>, CoordinationError> {
    RedisStore::connect_registry(url, options(false, retry_for().min(LOOK_RETRY))?).await
}

fn options(register: bool, retry_for: Duration) -> Result<RedisOptions, CoordinationError> {
    Ok(RedisOptions {
        password: password_from_environment()?,
        ca_file: std::env::var_os(pstar_coordination::redis::CA_FILE_ENV).map(Into::into),
        retry_for,
        register,
        ..Default::default()
    })
}

/// The store at `url` for a new `session`, recorded in the registry (refused if the
/// registry holds the id already), as the trait the Pilot-API takes.
pub async fn connect(url: &str, session: &str) -> Result<Arc<dyn Coordination>, CoordinationError> {
    let options = RedisOptions {
        connect_for: Some(retry_for().min(FIRST_CONNECT)),
        ..options(true, retry_for())?
    };
    Ok(RedisStore::connect(url, session, options).await?)
}

/// A warning for a password written into a URL on the command line, where `ps` shows it
/// (not for one that came from `PSTAR_COORDINATION`).
pub fn warn_if_password_in_url(url: &str) {
    let from_environment = std::env::var(COORDINATION_ENV).is_ok_and(|v| v == url);
    if !from_environment && pstar_coordination::redis::redact_url(url) != url {
        say!(
            "pstar: warning: the Redis password in --coordination is visible to every user \
             through `ps`; give it in PSTAR_REDIS_PASSWORD or PSTAR_REDIS_PASSWORD_FILE instead"
        );
    }
}
