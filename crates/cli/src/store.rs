//! Opening the coordination store a command names.

use std::sync::Arc;
use std::time::Duration;

use pstar::Coordination;
use pstar_coordination::redis::password_from_environment;
use pstar_coordination::{CoordinationError, RedisOptions, RedisStore};

/// Where the store is given: `--coordination URL`, else `PSTAR_COORDINATION`.
pub use pstar_coordination::redis::COORDINATION_ENV;

/// How long calls keep retrying a lost Redis (`PSTAR_REDIS_RETRY`, e.g. `30s`; default
/// 60 s). A value that is not a duration is said once, on stderr, and the default used.
pub fn retry_for() -> Duration {
    static RETRY: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *RETRY.get_or_init(|| {
        let default = RedisOptions::default().retry_for;
        let Some(text) = std::env::var("PSTAR_REDIS_RETRY")
            .ok()
            .filter(|v| !v.is_empty())
        else {
            return default;
        };
        humantime::parse_duration(&text).unwrap_or_else(|_| {
            say!(
                "pstar: warning: PSTAR_REDIS_RETRY `{}` is not a duration such as \"30s\"; \
                 retrying for {}",
                text.escape_debug(),
                humantime::format_duration(default)
            );
            default
        })
    })
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

/// Where a store URL given to a command came from: the flag, or `PSTAR_COORDINATION`
/// (clap reads both into one value; the same text in the variable means the variable).
pub fn origin_of_flag(url: &str) -> pstar::Origin {
    if std::env::var(COORDINATION_ENV).is_ok_and(|v| v == url) {
        pstar::Origin::Environment(COORDINATION_ENV.into())
    } else {
        pstar::Origin::CommandLine
    }
}

/// Where a store URL came from, as a message says it: `--coordination`,
/// `PSTAR_COORDINATION`, or `` `[session] coordination` at FILE:LINE ``.
pub fn said_where(origin: &pstar::Origin) -> String {
    match origin {
        pstar::Origin::Environment(var) if !var.is_empty() => var.clone(),
        pstar::Origin::Workload { path, line } => {
            format!("`[session] coordination` at {}:{line}", path.display())
        }
        pstar::Origin::Api => "the program".into(),
        _ => "--coordination".into(),
    }
}

/// `url` as messages show it: its password masked, control characters escaped.
pub fn shown(url: &str) -> String {
    pstar_coordination::redis::redact_url(url)
        .escape_debug()
        .to_string()
}

/// Refuses a store URL pstar cannot use, naming it (password masked) and where it came
/// from.
pub fn check_url(url: &str, origin: &pstar::Origin) -> Result<(), String> {
    if crate::workload::is_store_url(url) {
        return Ok(());
    }
    Err(format!(
        "{} `{}` is not a redis://host:port/db or rediss:// URL",
        said_where(origin),
        shown(url)
    ))
}

/// Whether `url` carries a password of its own.
fn has_password(url: &str) -> bool {
    pstar_coordination::redis::redact_url(url) != url
}

/// A store named only by a workload file is not sent the password of this environment
/// (`PSTAR_REDIS_PASSWORD`, `PSTAR_REDIS_PASSWORD_FILE`): a file may come from anyone, and
/// name anyone's host. Refused unless the user names the store too (`--coordination`,
/// `PSTAR_COORDINATION`, which then wins over the file) or the URL carries its own
/// password.
pub fn check_store_source(url: &str, origin: &pstar::Origin) -> Result<(), String> {
    let pstar::Origin::Workload { .. } = origin else {
        return Ok(());
    };
    let variable = [
        pstar_coordination::redis::PASSWORD_ENV,
        pstar_coordination::redis::PASSWORD_FILE_ENV,
    ]
    .into_iter()
    .find(|v| std::env::var_os(v).is_some());
    match variable {
        Some(variable) if !has_password(url) => Err(format!(
            "the store `{url}` is named by {where_} only; pstar does not send it the Redis \
             password of your environment ({variable}) unless you name that store yourself: \
             run with `--coordination {url}` (or set PSTAR_COORDINATION) to confirm it",
            url = shown(url),
            where_ = said_where(origin),
        )),
        _ => Ok(()),
    }
}

/// A warning, on stderr, for a password written into a store URL: `ps` shows a command
/// line to every user, a workload file may be read or shared, and the environment is
/// handed down to child processes. Said once per command (call it once, for the URL the
/// command uses).
pub fn warn_if_password_in_url(url: &str, origin: &pstar::Origin) {
    if !has_password(url) {
        return;
    }
    let why = match origin {
        pstar::Origin::Workload { .. } => "is in a file that others may read or be sent",
        pstar::Origin::Environment(_) => "is handed down to every process started from here",
        _ => "is visible to every user through `ps`",
    };
    say!(
        "pstar: warning: the Redis password in {} {why}; give it in PSTAR_REDIS_PASSWORD or \
         PSTAR_REDIS_PASSWORD_FILE instead",
        said_where(origin)
    );
}
