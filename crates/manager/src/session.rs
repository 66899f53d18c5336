//! A session: one coordination store, one event dispatcher, the pilots created in it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{mpsc, watch};

use pstar_adaptors::ResourceAdaptor;
use pstar_adaptors::{AdaptorConfig, BootstrapTimeouts};
use pstar_agent::AgentConfig;
use pstar_coordination::{Coordination, CoordinationError, Embedded, Event};
use pstar_model::{Origin, PilotId, PilotState, Scheme, Settings, State, Timestamp, UnitId};

use crate::PilotCompute;
use crate::error::Result;

/// The context every Pilot-API service works in: a session id, the coordination store
/// shared with the agents, the resource adaptors and the root of the pilot sandboxes.
///
/// One task per session follows the store's event stream and hands each batch to the
/// pilots and services of the session, in order. Cloning a `Session` is cheap.
///
/// ```
/// # #[tokio::main] async fn main() -> pstar::Result<()> {
/// let session = pstar::Session::new().await?; // embedded coordination, ./pstar.sandbox
/// assert!(session.id().starts_with("pstar."));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session {
    pub(crate) inner: Arc<SessionInner>,
}

pub(crate) struct SessionInner {
    id: String,
    pub(crate) coordination: Arc<dyn Coordination>,
    sandbox_root: PathBuf,
    settings: Settings,
    adaptors: Vec<Arc<dyn ResourceAdaptor>>,
    pub(crate) pilots: Mutex<HashMap<PilotId, PilotCompute>>,
    listeners: Mutex<Vec<mpsc::UnboundedSender<Arc<[Event]>>>>,
    /// The session's manager: one core for all of its unit services.
    manager: mpsc::UnboundedSender<crate::shell::Command>,
    next_service: std::sync::atomic::AtomicU32,
    dispatcher: tokio::task::AbortHandle,
    /// Why the store was lost for good, once it was.
    lost: watch::Sender<Option<Lost>>,
    /// Lets a replaying dispatcher go.
    start: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    /// The data units and the bytes moved, as the stream tells them.
    pub(crate) data: Mutex<crate::ledger::DataLedger>,
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        self.dispatcher.abort();
    }
}

/// Builds a [`Session`] that differs from the defaults.
///
/// It holds the session's [`Settings`] whole ([`SessionBuilder::settings`]); the other
/// setters change one setting each.
///
/// ```
/// # #[tokio::main] async fn main() -> pstar::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let session = pstar::Session::builder().sandbox_root(dir.path()).build().await?;
/// assert!(session.sandbox_root().starts_with(dir.path()));
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct SessionBuilder {
    id: Option<String>,
    coordination: Option<Arc<dyn Coordination>>,
    settings: Settings,
    /// The bootstrap steps other than the agent's start (a setting of its own).
    bootstrap_timeouts: Option<BootstrapTimeouts>,
    replay: bool,
}

pub use pstar_model::settings::DEFAULT_HEARTBEAT_TIMEOUT;

impl SessionBuilder {
    /// Use this session id (default: `pstar.<date>.<time>.<nonce>`). It must pass
    /// [`pstar_model::check_session_id`] (letters, digits, `.`, `_`, `-`); `build` refuses
    /// it otherwise.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Coordinate through this store (default: a new embedded store).
    pub fn coordination(mut self, store: Arc<dyn Coordination>) -> Self {
        self.coordination = Some(store);
        self
    }

    /// Run with these settings, all of them (default: [`Settings::default`]). The
    /// setters below change one of them each; the store is given apart
    /// ([`SessionBuilder::coordination`]), since [`Settings::coordination`] is only its URL.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> pstar::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let settings = pstar::Settings {
    ///     sandbox: dir.path().into(),
    ///     max_attempts: 1,
    ///     ..Default::default()
    /// };
    /// let session = pstar::Session::builder().settings(settings).build().await?;
    /// assert_eq!(session.settings().max_attempts, 1);
    /// # Ok(()) }
    /// ```
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// Sets one setting, from the program.
    fn set(mut self, name: &'static str, change: impl FnOnce(&mut Settings)) -> Self {
        change(&mut self.settings);
        self.settings.set_origin(name, Origin::Api);
        self
    }

    /// Put pilot sandboxes under this directory unless a pilot names its own
    /// (default `./pstar.sandbox`).
    pub fn sandbox_root(self, root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        self.set("sandbox", |s| s.sandbox = root)
    }

    /// Tune the agents of this session's pilots ([`Settings::agent`]).
    pub fn agent_config(mut self, config: AgentConfig) -> Self {
        self.settings.agent = config;
        for name in [
            "claim_wait",
            "heartbeat_interval",
            "kill_grace",
            "drain_margin",
            "report_window",
            "remote_report_window",
        ] {
            self.settings.set_origin(name, Origin::Api);
        }
        self
    }

    /// How long each step of bringing a pilot up may take (SSH connect, binary copy,
    /// submission, agent start) before the pilot fails naming the step.
    pub fn bootstrap_timeouts(mut self, timeouts: BootstrapTimeouts) -> Self {
        self.bootstrap_timeouts = Some(timeouts);
        self.set("agent_start_timeout", |s| {
            s.agent_start_timeout = timeouts.agent_start
        })
    }

    /// How often batch pilot jobs' states are asked from their schedulers (default 2 s).
    pub fn poll_interval(self, every: Duration) -> Self {
        self.set("poll_interval", |s| s.poll_interval = every)
    }

    /// The `pstar` program agents run: started here for local pilots, copied to remote
    /// hosts for the others. Default: `$PSTAR_AGENT_BIN`, else this program if it is
    /// `pstar`, else the `pstar` beside it or on the `PATH`. A static build
    /// (`scripts/build-static.sh`) runs on any Linux host of its architecture.
    pub fn agent_binary(self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.set("agent_binary", |s| s.agent_binary = Some(path))
    }

    /// Declare a pilot lost (`Failed`, its units back to the pool) when its agent has sent
    /// no heartbeat for this long (default 30 s). Agents are told to beat at least three
    /// times per timeout.
    pub fn heartbeat_timeout(self, timeout: Duration) -> Self {
        self.set("heartbeat_timeout", |s| s.heartbeat_timeout = timeout)
    }

    /// Follow the stream from its first event, and only once
    /// [`Session::start_dispatch`] is called (for a resumed session: its services must be
    /// listening before the history flows).
    pub(crate) fn replay(mut self) -> Self {
        self.replay = true;
        self
    }

    /// Starts the session: subscribes to its store's event stream.
    pub async fn build(self) -> Result<Session> {
        let id = match (&self.id, &self.coordination) {
            (Some(id), _) => id.clone(),
            (None, Some(store)) => store.session().to_owned(),
            (None, None) => new_session_id(),
        };
        pstar_model::check_session_id(&id)?;
        // Refused before anything is opened or started.
        self.settings
            .check()
            .map_err(|source| crate::Error::InvalidSetting {
                origin: self.settings.origin(source.name()).clone(),
                source,
            })?;
        let coordination: Arc<dyn Coordination> = match self.coordination {
            Some(c) => c,
            None => Embedded::new(id.clone()),
        };
        let settings = self.settings;
        let root = settings.sandbox.clone();
        let sandbox_root = std::path::absolute(&root).unwrap_or(root);
        let heartbeat_timeout = settings.heartbeat_timeout;
        let adaptors = pstar_adaptors::available(AdaptorConfig {
            timeouts: BootstrapTimeouts {
                agent_start: settings.agent_start_timeout,
                ..self.bootstrap_timeouts.unwrap_or_default()
            },
            poll_interval: settings.poll_interval,
            agent_binary: settings.agent_binary.clone(),
        });
        let replay = self.replay;
        let mut subscription = if replay {
            coordination.subscribe_from_start().await?
        } else {
            coordination.subscribe().await?
        };
        let (lost, _) = watch::channel(None);
        let (start_tx, start_rx) = tokio::sync::oneshot::channel::<()>();
        let start = if self.replay {
            Some(start_tx)
        } else {
            let _ = start_tx.send(());
            None
        };

        let (manager_events, events) = mpsc::unbounded_channel();
        let manager = crate::shell::Shell::start(coordination.clone(), events);
        let inner = Arc::new_cyclic(|weak: &Weak<SessionInner>| {
            let weak_dispatch = weak.clone();
            let dispatcher = tokio::spawn(async move {
                if start_rx.await.is_err() {
                    return;
                }
                while let Some(delivery) = subscription.next_batch().await {
                    let Some(session) = weak_dispatch.upgrade() else {
                        break;
                    };
                    match delivery {
                        Ok(batch) => session.dispatch(batch),
                        // A batch of another store format: the store is fine, but this
                        // manager cannot follow the session past it (nor replay it).
                        Err(e @ CoordinationError::Incompatible { .. }) => {
                            let reason = format!(
                                "the session's event stream holds a value this pstar cannot \
                                 read: {e}. Another pstar version (or someone, by hand) wrote \
                                 it into the session; this manager cannot follow the session \
                                 past it, and a resumed manager would stop at it too"
                            );
                            tracing::error!(error = %e, "cannot follow the session's event stream");
                            session.lose(Lost {
                                reason,
                                session_gone: false,
                                unreadable: true,
                            });
                            break;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "lost the coordination store");
                            session.lose(Lost {
                                reason: e.to_string(),
                                session_gone: false,
                                unreadable: false,
                            });
                            break;
                        }
                    }
                }
            });
            let timeout_origin = settings.origin("heartbeat_timeout").clone();
            tokio::spawn(monitor_heartbeats(
                weak.clone(),
                heartbeat_timeout,
                timeout_origin,
            ));
            tokio::spawn(keep_manager_alive(weak.clone(), !replay));
            SessionInner {
                id,
                coordination,
                sandbox_root,
                settings,
                adaptors,
                pilots: Mutex::new(HashMap::new()),
                listeners: Mutex::new(vec![manager_events]),
                manager,
                next_service: std::sync::atomic::AtomicU32::new(0),
                dispatcher: dispatcher.abort_handle(),
                lost,
                start: Mutex::new(start),
                data: Mutex::default(),
            }
        });
        Ok(Session { inner })
    }
}

/// How the store was lost.
#[derive(Debug, Clone)]
struct Lost {
    reason: String,
    /// The store answers, but the session's data is gone from it.
    session_gone: bool,
    /// The store answers, but its event stream holds a value of another store format.
    unreadable: bool,
}

impl SessionInner {
    /// Records the first loss of the store; later ones change nothing. A session gone
    /// from its store is abandoned there: what was written into it since expires soon.
    fn lose(&self, lost: Lost) {
        let gone = lost.session_gone;
        let first = self.lost.send_if_modified(|l| {
            if l.is_none() {
                *l = Some(lost);
                true
            } else {
                false
            }
        });
        if first && gone {
            let store = self.coordination.clone();
            tokio::spawn(async move {
                if let Err(e) = store.abandon().await {
                    tracing::warn!(error = %e, "cannot abandon the lost session in the store");
                }
            });
        }
    }

    /// Pilots first (so a service that reacts to a pilot event sees the pilot's new
    /// state), then every listening service.
    fn dispatch(&self, batch: Arc<[Event]>) {
        let pilots: Vec<(PilotCompute, &pstar_coordination::PilotEvent)> = {
            let Ok(registry) = self.pilots.lock() else {
                return;
            };
            batch
                .iter()
                .filter_map(|e| match e {
                    Event::Pilot(p) => registry.get(&p.pilot).map(|pc| (pc.clone(), p)),
                    _ => None,
                })
                .collect()
        };
        for (pilot, event) in pilots {
            pilot.apply(event);
        }
        if batch.iter().any(|e| matches!(e, Event::Data(_)))
            && let Ok(mut ledger) = self.data.lock()
        {
            for e in batch.iter() {
                if let Event::Data(d) = e {
                    ledger.note(d);
                }
            }
        }
        if let Ok(mut listeners) = self.listeners.lock() {
            listeners.retain(|l| l.send(batch.clone()).is_ok());
        }
    }
}

impl Session {
    /// A session with the embedded coordination store and default settings.
    pub async fn new() -> Result<Session> {
        Self::builder().build().await
    }

    /// A builder for a session that differs from the defaults.
    pub fn builder() -> SessionBuilder {
        SessionBuilder::default()
    }

    /// The session id; sandboxes and store keys are named after it.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The store manager and agents coordinate through.
    pub fn coordination(&self) -> &Arc<dyn Coordination> {
        &self.inner.coordination
    }

    /// Returns once the coordination store is lost for good (unreachable past its
    /// retries), with the reason; never returns while it is fine. Nothing more will happen
    /// in the session after that, so whoever waits on units should wait on this too.
    pub async fn lost(&self) -> String {
        let mut rx = self.inner.lost.subscribe();
        match rx.wait_for(|l| l.is_some()).await {
            Ok(lost) => lost.as_ref().map(|l| l.reason.clone()).unwrap_or_default(),
            Err(_) => "the session ended".into(),
        }
    }

    /// Whether the store was lost because it no longer holds the session (Redis restarted
    /// without its data, or the session's keys were deleted), rather than because it could
    /// not be reached. Such a session cannot be resumed: nothing of it is left.
    pub fn session_gone(&self) -> bool {
        self.inner
            .lost
            .borrow()
            .as_ref()
            .is_some_and(|l| l.session_gone)
    }

    /// Whether the store was lost because its event stream holds a value of another store
    /// format, which this pstar cannot read: the store answers, but the session cannot be
    /// followed (or resumed by this pstar) past it.
    pub fn stream_unreadable(&self) -> bool {
        self.inner
            .lost
            .borrow()
            .as_ref()
            .is_some_and(|l| l.unreadable)
    }

    /// Asks the store whether it still holds this session (one of its pilots' records);
    /// if it answers that it does not, the store is lost as in [`Session::lost`] and
    /// [`Session::session_gone`] says so. For a decision that must not act on a session
    /// that is gone (marking it finished would write its keys back).
    pub async fn confirm_session(&self) -> bool {
        let probe = self
            .inner
            .pilots
            .lock()
            .ok()
            .and_then(|p| p.keys().min().copied());
        let Some(probe) = probe else { return true };
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            self.inner.coordination.pilot(probe),
        )
        .await;
        if let Ok(Err(CoordinationError::UnknownPilot(_))) = read {
            self.inner.lose(Lost {
                reason: gone_reason(&self.inner.id, probe),
                session_gone: true,
                unreadable: false,
            });
            return false;
        }
        true
    }

    /// The settings the session runs with.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// What the session's agents are given, in their pilots' records
    /// ([`Settings::agent_settings`]).
    pub fn agent_settings(&self) -> AgentConfig {
        self.inner.settings.agent_settings()
    }

    /// Where pilot sandboxes go unless a pilot names its own working directory.
    pub fn sandbox_root(&self) -> &Path {
        &self.inner.sandbox_root
    }

    /// The schemes this session can place pilots on.
    pub fn supported_schemes(&self) -> Vec<Scheme> {
        self.inner.adaptors.iter().map(|a| a.scheme()).collect()
    }

    /// The adaptor serving `scheme`, or the error naming the schemes this build serves.
    pub(crate) fn adaptor(&self, scheme: Scheme) -> crate::Result<Arc<dyn ResourceAdaptor>> {
        self.inner
            .adaptors
            .iter()
            .find(|a| a.scheme() == scheme)
            .cloned()
            .ok_or_else(|| crate::Error::UnsupportedResource {
                scheme,
                supported: self
                    .supported_schemes()
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// A pilot of this session, by id.
    pub fn pilot(&self, id: PilotId) -> Option<PilotCompute> {
        self.inner.pilots.lock().ok()?.get(&id).cloned()
    }

    pub(crate) fn register_pilot(&self, pilot: PilotCompute) {
        if let Ok(mut p) = self.inner.pilots.lock() {
            p.insert(pilot.id(), pilot);
        }
    }

    /// Lets the events flow (for a session built to replay its history).
    pub(crate) fn start_dispatch(&self) {
        if let Some(start) = self.inner.start.lock().ok().and_then(|mut s| s.take()) {
            let _ = start.send(());
        }
    }

    /// The session's manager, to which unit services send their commands.
    pub(crate) fn manager(&self) -> mpsc::UnboundedSender<crate::shell::Command> {
        self.inner.manager.clone()
    }

    /// An id for a new unit service of this session.
    pub(crate) fn new_service_id(&self) -> crate::core::ServiceId {
        crate::core::ServiceId(
            self.inner
                .next_service
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst),
        )
    }

    /// Hands events this process records without the store (which cannot carry them) to
    /// the pilots and the manager, as if they came from the stream.
    /// The session's data units and the bytes moved so far.
    pub fn data_ledger(&self) -> crate::ledger::DataLedger {
        self.inner
            .data
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Bytes staged in and out for `unit` (zero for a unit that reads and makes no data).
    pub fn data_moved_for(&self, unit: UnitId) -> (u64, u64) {
        self.inner
            .data
            .lock()
            .ok()
            .and_then(|l| l.by_unit.get(&unit).copied())
            .unwrap_or_default()
    }

    /// Every batch of the session's events from now on (from its first, for a resumed
    /// session whose dispatch has not started yet).
    pub(crate) fn listen(&self) -> mpsc::UnboundedReceiver<Arc<[Event]>> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut listeners) = self.inner.listeners.lock() {
            listeners.push(tx);
        }
        rx
    }

    pub(crate) fn dispatch_here(&self, batch: Vec<Event>) {
        self.inner.dispatch(batch.into());
    }
}

/// Watches the heartbeats of the session's running pilots; fails a pilot whose agent has
/// been silent for `timeout` (killed, its host gone, its network cut). Silence is measured
/// on this machine's clock, from when a heartbeat last *changed*, so clocks of other hosts
/// do not matter; while the store itself cannot be read, nobody is declared lost. The
/// failure names the timeout and where it was set (`origin`).
async fn monitor_heartbeats(session: Weak<SessionInner>, timeout: Duration, origin: Origin) {
    let every = (timeout / 4).max(Duration::from_millis(25));
    let mut beats: HashMap<PilotId, (Timestamp, Instant)> = HashMap::new();
    let mut alive_since: HashMap<PilotId, Instant> = HashMap::new();
    let mut last_read = Instant::now();
    let mut failing: HashSet<PilotId> = HashSet::new();
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = session.upgrade() else {
            return;
        };
        let live: Vec<PilotCompute> = inner
            .pilots
            .lock()
            .map(|p| {
                p.values()
                    .filter(|p| !p.state().is_final())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let Some(probe) = live.iter().map(PilotCompute::id).min() else {
            continue;
        };
        let coordination = inner.coordination.clone();
        drop(inner);
        // A store that answers but no longer knows a live pilot has lost the session
        // (restarted without its data, keys deleted): nothing would ever move again.
        if let Err(CoordinationError::UnknownPilot(_)) = coordination.pilot(probe).await {
            if let Some(inner) = session.upgrade() {
                let reason = gone_reason(&inner.id, probe);
                tracing::error!(%reason, "lost the session");
                inner.lose(Lost {
                    reason,
                    session_gone: true,
                    unreadable: false,
                });
            }
            return;
        }
        let running: Vec<PilotCompute> = live
            .into_iter()
            .filter(|p| p.state() == PilotState::Running)
            .collect();
        if running.is_empty() {
            continue;
        }
        let now = Instant::now();
        match coordination.heartbeats().await {
            Ok(read) => {
                if now.duration_since(last_read) > timeout / 2 {
                    // We were blind (the store was away): everyone gets a fresh start.
                    alive_since.values_mut().for_each(|t| *t = now);
                    beats.values_mut().for_each(|(_, t)| *t = now);
                }
                last_read = now;
                for (pilot, at) in read {
                    if beats.get(&pilot).is_none_or(|(last, _)| *last != at) {
                        beats.insert(pilot, (at, now));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read heartbeats");
                continue;
            }
        }
        for pilot in running {
            let since = *alive_since.entry(pilot.id()).or_insert(now);
            let last = beats
                .get(&pilot.id())
                .map_or(since, |(_, seen)| (*seen).max(since));
            let silent = now.duration_since(last);
            if silent > timeout && failing.insert(pilot.id()) {
                let reason = format!(
                    "agent lost: no heartbeat for {} (heartbeat_timeout {}: {origin})",
                    humantime::format_duration(Duration::from_secs(silent.as_secs())),
                    humantime::format_duration(timeout)
                );
                tokio::spawn(async move { pilot.fail(reason).await });
            }
        }
    }
}

/// Why a store that answers without `probe`'s record has lost session `id`.
fn gone_reason(id: &str, probe: PilotId) -> String {
    format!(
        "the coordination store no longer holds session {id} ({probe} is gone from it: the \
         store was restarted without its data, or the session's keys were deleted); it \
         cannot be resumed"
    )
}

/// How often the manager records itself alive.
const MANAGER_ALIVE_EVERY: Duration = Duration::from_secs(1);
/// How long each record of a live manager lasts: a manager that dies is seen gone this
/// long after its last record at most.
pub const MANAGER_ALIVE_FOR: Duration = Duration::from_secs(3);

/// Records the manager alive in the store ([`Coordination::manager_alive`]) every second,
/// for `pstar cancel` to tell whether anyone listens and `pstar run --resume` to refuse a
/// session whose manager still runs. A new session records it from its first moment; a
/// resumed one once it has a pilot (a resume that finds nothing writes nothing), looking
/// every 50 ms until then.
async fn keep_manager_alive(session: Weak<SessionInner>, new: bool) {
    loop {
        let Some(inner) = session.upgrade() else {
            return;
        };
        if inner.lost.borrow().is_some() {
            // Nobody can reach this manager through the store any more.
            return;
        }
        let has_pilots = new || inner.pilots.lock().is_ok_and(|p| !p.is_empty());
        let store = inner.coordination.clone();
        drop(inner);
        let pause = if has_pilots {
            let beat =
                tokio::time::timeout(MANAGER_ALIVE_EVERY, store.manager_alive(MANAGER_ALIVE_FOR))
                    .await;
            if let Ok(Err(e)) = beat {
                tracing::warn!(error = %e, "cannot record the manager alive");
            }
            MANAGER_ALIVE_EVERY
        } else {
            Duration::from_millis(50)
        };
        drop(store);
        tokio::time::sleep(pause).await;
    }
}

/// `pstar.20261123.142501.3f2a9c01d4e5b6a7`: sortable by time, then 64 random bits, so
/// that concurrent runs (on one host or many) do not pick the same id. A store that holds
/// the id already refuses it anyway (Redis: [`pstar_coordination::CoordinationError::SessionExists`]).
pub fn new_session_id() -> String {
    let now = std::time::SystemTime::now();
    let stamp = humantime::format_rfc3339_seconds(now).to_string(); // 2026-11-23T14:25:01Z
    let digits: String = stamp.chars().filter(|c| c.is_ascii_digit()).collect();
    format!(
        "pstar.{}.{}.{:016x}",
        &digits[..8.min(digits.len())],
        &digits[8.min(digits.len())..],
        random_u64()
    )
}

/// 64 bits from the kernel's random source; failing that (no `/dev/urandom` in a
/// container), from the standard library's randomly keyed hasher, which the kernel seeded
/// another way.
fn random_u64() -> u64 {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_ok() {
        return u64::from_ne_bytes(bytes);
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_made_at_once_are_all_distinct_and_valid() {
        let ids: HashSet<String> = (0..20_000).map(|_| new_session_id()).collect();
        assert_eq!(ids.len(), 20_000, "two session ids made at once were equal");
        for id in ids.iter().take(10) {
            assert_eq!(pstar_model::check_session_id(id), Ok(()), "{id}");
        }
    }

    /// `UnitPolicy::default`, which the core keeps for itself, agrees with the built-in
    /// settings, whose defaults are the ones pstar documents.
    #[test]
    fn the_default_settings_give_the_default_policy() {
        assert_eq!(
            crate::UnitPolicy::from(&Settings::default()),
            crate::UnitPolicy::default()
        );
    }

    /// A session built with settings runs with them: its unit services take their policy,
    /// its agents their settings (at most a third of the heartbeat timeout between beats).
    #[tokio::test]
    async fn a_session_hands_its_settings_to_its_services_and_agents() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let settings = Settings {
            sandbox: dir.path().into(),
            max_attempts: 7,
            prefetch: 0,
            heartbeat_timeout: Duration::from_secs(3),
            ..Settings::default()
        };
        let session = Session::builder()
            .settings(settings)
            .poll_interval(Duration::from_secs(9))
            .build()
            .await
            .expect("session");
        let s = session.settings();
        assert_eq!((s.max_attempts, s.prefetch), (7, 0));
        assert_eq!(s.poll_interval, Duration::from_secs(9));
        assert_eq!(s.origin("poll_interval"), &Origin::Api);
        assert_eq!(
            session.agent_settings().heartbeat_interval,
            Duration::from_secs(1)
        );
        let policy = crate::UnitPolicy::from(s);
        assert_eq!((policy.max_attempts, policy.prefetch), (7, 0));
        assert!(session.sandbox_root().starts_with(dir.path()));
        // Each pilot's record carries its agent's settings.
        let pcs = crate::PilotComputeService::new(&session);
        let pilot = pcs
            .create_pilot(pstar_model::PilotComputeDescription {
                cores: 1,
                ..Default::default()
            })
            .await
            .expect("pilot");
        let record = session
            .coordination()
            .pilot(pilot.id())
            .await
            .expect("pilot record");
        assert_eq!(record.agent, session.agent_settings());
        pcs.cancel().await;
    }

    #[tokio::test]
    async fn a_session_id_that_is_not_allowed_is_refused() {
        let dir = tempfile::tempdir().expect("temporary directory");
        for id in ["*", "../up", "-rf", "a b", "x\u{1b}[2J"] {
            let built = Session::builder()
                .id(id)
                .sandbox_root(dir.path())
                .build()
                .await;
            let Err(e) = built else {
                panic!("session id {id:?} was accepted");
            };
            assert!(e.to_string().contains("invalid session name"), "{e}");
        }
    }
}
