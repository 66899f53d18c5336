//! Opening the coordination store a command names.

use std::sync::Arc;
use std::time::Duration;

use pstar::Coordination;
use pstar_coordination::redis::password_from_environment;
use pstar_coordination::{CoordinationError, RedisOptions, RedisStore};

/// Where the store is given: `--coordination URL`, else `PSTAR_COORDINATION`.
pub const COORDINATION_ENV: &str = "PSTAR_COORDINATION";

/// How long calls keep retrying a lost Redis (`PSTAR_REDIS_RETRY`, e.g. `30s`; default
/// 60 s).
pub fn retry_for() -> Duration {
    std::env::var("PSTAR_REDIS_RETRY")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .unwrap_or(RedisOptions::default().retry_for)
}

/// Connects to the Redis at `url` for `session`, the password coming from the URL or the
/// environment (`PSTAR_REDIS_PASSWORD`, `PSTAR_REDIS_PASSWORD_FILE`).
pub async fn connect_redis(url: &str, session: &str) -> Result<Arc<RedisStore>, CoordinationError> {
    open(url, session, true).await
}

/// Connects to look at `session` (or at the registry of sessions) without recording it.
pub async fn inspect(url: &str, session: &str) -> Result<Arc<RedisStore>, CoordinationError> {
    open(url, session, false).await
}

async fn open(
    url: &str,
    session: &str,
    register: bool,
) -> Result<Arc<RedisStore>, CoordinationError> {
    let password = password_from_environment()?;
    RedisStore::connect(
        url,
        session,
        RedisOptions {
            password,
            ca_file: std::env::var_os(pstar_coordination::redis::CA_FILE_ENV).map(Into::into),
            retry_for: retry_for(),
            register,
            ..Default::default()
        },
    )
    .await
}

/// The store at `url` as the trait the Pilot-API takes.
pub async fn connect(url: &str, session: &str) -> Result<Arc<dyn Coordination>, CoordinationError> {
    Ok(connect_redis(url, session).await?)
}

/// A warning for a password written into a URL on the command line, where `ps` shows it.
pub fn warn_if_password_in_url(url: &str) {
    if url::Url::parse(url).is_ok_and(|u| u.password().is_some()) {
        eprintln!(
            "pstar: warning: the Redis password in --coordination is visible to every user \
             through `ps`; give it in PSTAR_REDIS_PASSWORD or PSTAR_REDIS_PASSWORD_FILE instead"
        );
    }
}
