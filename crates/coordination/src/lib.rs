//! Coordination: the shared data space between the Pilot-Manager and the pilot agents.
//!
//! The seeds' coordination & communication characteristic: manager and agents never call
//! each other; they meet in a store that holds
//!
//! * **unit records**: the description of every submitted unit, written once at submission;
//! * **pilot queues**: one FIFO of unit ids per pilot. The manager's scheduler *binds* a unit
//!   by appending it to a pilot's queue; the pilot's agent *claims* units from it as its
//!   slots free up, and the manager can *withdraw* what is not claimed yet;
//! * the **event stream**: every state transition of a pilot or a unit, in order, which the
//!   manager follows instead of polling records;
//! * **control messages** from the manager to one agent (cancel a unit, stop the pilot);
//! * **heartbeats** of agents;
//! * **id counters**, so ids stay unique across all managers of a session.
//!
//! [`Coordination`] is that store as one trait. Backends live in one folder each
//! ([`embedded`], in-process, the default; [`redis`], for agents in other processes and on
//! other machines); the manager and the agent see only the trait.
//! Every method takes a whole batch, so a networked backend can make each call one round
//! trip however many units it carries.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use pstar_model::{
    AgentSettings, ComputeUnitDescription, DataFile, DataUnitState, PilotComputeDescription,
    PilotId, PilotState, Timestamp, UnitId, UnitState,
};

pub mod embedded;
pub mod redis;

pub use embedded::Embedded;
pub use redis::{RedisOptions, RedisStore};

/// What can go wrong talking to the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CoordinationError {
    /// The store was shut down (its session ended).
    #[error("the coordination store is closed")]
    Closed,
    /// The store does not know this pilot.
    #[error("{0} is not registered in this session")]
    UnknownPilot(PilotId),
    /// The store refused our credentials: retrying will not help.
    #[error("the coordination store refused the credentials: {0}")]
    Unauthorized(String),
    /// The password could not be read from where it was said to be (its file is missing,
    /// readable by others, not a small regular file): nothing was sent to the store.
    #[error("cannot read the Redis password: {0}")]
    Credentials(String),
    /// The store could not be reached, even after retrying for a while.
    #[error("the coordination store is unreachable: {0}")]
    Unreachable(String),
    /// This backend cannot do what was asked (e.g. resume a session it never stored).
    #[error("{0}")]
    Unsupported(String),
    /// The store no longer holds this session (its keys were deleted, or the store
    /// restarted without its data).
    #[error("the coordination store lost this session: {0}")]
    SessionLost(String),
    /// A backend-specific failure (a malformed record, a server error...).
    #[error("coordination backend: {0}")]
    Backend(String),
    /// The store holds `what` in another store format than this pstar reads (an older
    /// or a newer pstar wrote it): nothing of it is read. See
    /// [`WIRE_VERSION`](redis::WIRE_VERSION).
    #[error(
        "{what} was written in pstar store format {}; this pstar reads {}",
        redis::show_version(*found),
        redis::show_version(*reads)
    )]
    Incompatible {
        /// What was being read, e.g. "session `s`" or "unit.000004's description in
        /// session `s`".
        what: String,
        /// The format it was written in (0: from before values carried one).
        found: u32,
        /// The format this pstar reads.
        reads: u32,
    },
    /// A new session was given the id of one the store already holds.
    #[error("session `{0}` already exists in the coordination store; choose another id")]
    SessionExists(String),
}

pub type Result<T, E = CoordinationError> = std::result::Result<T, E>;

/// A unit description as stored, shared between the manager's record and the store.
pub type SharedDescription = Arc<ComputeUnitDescription>;

/// One transition of a unit, as an agent or the manager reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitEvent {
    pub unit: UnitId,
    /// The pilot the unit is bound to when the transition happened.
    pub pilot: Option<PilotId>,
    pub state: UnitState,
    pub at: Timestamp,
    /// The process's exit code, on `Done`/`Failed`.
    pub exit_code: Option<i32>,
    /// Why: the failure reason, or why the unit went back to the pool.
    pub detail: Option<String>,
    /// The unit's run was lost with its pilot (it had been claimed by an agent that was
    /// lost): this return to the pool, or this failure, uses up one attempt. On the stream
    /// so that a resumed manager counts attempts as the one before did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_run: Option<LostRun>,
    /// On a return to `New`: the run failed (`exit_code` and `detail` say how) and the
    /// unit has `retries`, so its agent gives it back to be tried again; the manager
    /// counts the failed runs and fails the unit once they exceed its retries.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failed_run: bool,
    /// On `Done` or `Failed` of a function unit: what the function returned, or the
    /// exception it raised, pickled by the pilot's Python worker.
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    pub result: Option<Vec<u8>>,
}

/// A run of a unit lost with its pilot: which attempt it was, and why it was lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostRun {
    /// This was the unit's `attempt`-th run (from 1) ...
    pub attempt: u32,
    /// ... of at most `of`.
    pub of: u32,
    /// Why the run was lost (its pilot's end).
    pub reason: String,
}

/// One transition of a pilot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PilotEvent {
    pub pilot: PilotId,
    pub state: PilotState,
    pub at: Timestamp,
    pub detail: Option<String>,
}

/// A data unit as the coordination store keeps it: its files and the pilot stores that
/// hold all of them. Written by whoever made it (the manager for data units placed from
/// the application's files, the agent that stored a unit's output), read by agents before
/// they stage it. Copies in pilots' caches are not listed here: agents find those of
/// pilots on their own machine in the file system, and the manager learns of them from
/// [`DataEvent`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataUnitRecord {
    pub name: String,
    pub files: Vec<DataFile>,
    /// Stores that hold every file, in order of placement.
    pub replicas: Vec<StoreReplica>,
}

impl DataUnitRecord {
    /// Bytes of all its files.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// A place that holds a data unit: its files are under `<url>/<prefix>/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreReplica {
    /// The pilot store's name (`[[pilot_data]]` name), or `pilot.NNNN` for a pilot's own
    /// cache.
    pub store: String,
    /// The store's URL (never with credentials).
    pub url: String,
    /// Where the data unit's files are below it (`<session>/<name>` in a pilot store,
    /// `<name>` in a pilot's cache).
    pub prefix: String,
}

/// A change of a data unit: it is being made, is available somewhere new, or failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataEvent {
    pub name: String,
    pub state: DataUnitState,
    pub at: Timestamp,
    /// Its size in bytes, once known.
    pub size: u64,
    /// The pilot whose cache now holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pilot: Option<PilotId>,
    /// The pilot store that now holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The compute unit it moved for (staged in for it, or stored as its output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<UnitId>,
    /// Bytes that crossed between places to get it here (0 when it was at hand).
    #[serde(default)]
    pub moved: u64,
    /// Where those bytes came from: a pilot store's name, `pilot.NNNN` (a pilot's cache),
    /// or `client` (the application's files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// What moved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<Transfer>,
}

/// Why bytes of a data unit moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transfer {
    /// Placed in a store from the application's files.
    Place,
    /// Brought to a pilot for a unit that reads it.
    StageIn,
    /// Stored from the sandbox of the unit that made it.
    StageOut,
    /// Copied from one store to another.
    Replicate,
    /// Copied out to a local directory.
    Export,
}

impl DataEvent {
    /// An event of data unit `name` entering `state` now.
    pub fn new(name: impl Into<String>, state: DataUnitState) -> Self {
        Self {
            name: name.into(),
            state,
            at: Timestamp::now(),
            size: 0,
            pilot: None,
            store: None,
            detail: None,
            unit: None,
            moved: 0,
            from: None,
            transfer: None,
        }
    }
}

/// Everything that flows on the event stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    Unit(UnitEvent),
    Pilot(PilotEvent),
    /// The pilot's agent takes no new units (its walltime nears its end). Not a state:
    /// the pilot stays `Running` while its last units finish.
    PilotDraining {
        pilot: PilotId,
        at: Timestamp,
    },
    /// A manager picked the session up from the store (`pstar run --resume`). Everything
    /// before this event on the stream is the history it replays; `token` tells it which
    /// marker is its own.
    Resumed {
        token: u64,
        at: Timestamp,
    },
    /// Someone asked, from outside the manager (`pstar cancel`), to cancel units, a pilot
    /// or the whole session; the manager carries it out.
    CancelRequested {
        target: CancelTarget,
        reason: String,
        at: Timestamp,
    },
    /// A data unit changed: made, cached at a pilot, stored, or failed.
    Data(DataEvent),
    /// Units that ended in one of `states` start over in `New` (`pstar run --resume S
    /// --rerun failed`), keeping their ids and history; whoever replays the stream resets
    /// the units in those states at this point.
    RerunRequested {
        states: Vec<UnitState>,
        by: String,
        at: Timestamp,
    },
    /// Someone added units (already in the store's unit records, with ids reserved in the
    /// session) and pilots to a running session (`pstar submit`); the manager takes them
    /// on. A resumed manager finds the units among the records and ignores the request.
    SubmitRequested {
        units: Vec<(UnitId, pstar_model::ComputeUnitDescription)>,
        pilots: Vec<pstar_model::PilotComputeDescription>,
        /// Who asked.
        by: String,
        at: Timestamp,
    },
}

/// What a [`Event::CancelRequested`] is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CancelTarget {
    Units(Vec<UnitId>),
    Pilot(PilotId),
    Session,
}

impl std::fmt::Display for CancelTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CancelTarget::Units(units) => {
                for (i, u) in units.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{u}")?;
                }
                Ok(())
            }
            CancelTarget::Pilot(p) => write!(f, "{p}"),
            CancelTarget::Session => f.write_str("the whole session"),
        }
    }
}

/// A message from the manager to one pilot's agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// Stop this unit (kill its whole process tree) and report it `Canceled`.
    CancelUnit(UnitId),
    /// Stop the pilot: units still running go back to the pool, then the pilot is `Canceled`.
    CancelPilot,
    /// Give these units back if they still wait for cores here (not started): report
    /// each `New`, so the manager can bind it to a pilot that idles. Units already
    /// running, or not held here, are left alone.
    ReturnUnits(Vec<UnitId>),
}

/// What an agent needs to know about its pilot, stored when the pilot is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PilotRecord {
    pub id: PilotId,
    pub description: PilotComputeDescription,
    /// The pilot's sandbox directory on its resource.
    pub sandbox: PathBuf,
    /// The pilot job's id on its resource, once submitted (so that a resumed manager can
    /// still end it).
    #[serde(default)]
    pub job: Option<String>,
    /// The settings its agent runs with (a record without them gives the defaults). The
    /// agent reads them here, so its command line names only the store, the session and
    /// the pilot.
    #[serde(default)]
    pub agent: AgentSettings,
    /// Started by a resumed manager in place of this pilot of the session's (none had
    /// been left alive): the session's own pilots are those without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_of: Option<PilotId>,
}

/// An agent's hold on its pilot: one live agent per pilot. `pstar agent` takes it before
/// it publishes anything, renews it with every heartbeat and releases it at its end; a
/// second agent for a pilot whose lease is held refuses to start (it would run the pilot's
/// units a second time, and its end would end the pilot under the first one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentLease {
    /// Random: tells this agent from every other one, even of the same host and pid.
    pub token: u64,
    /// Where the agent runs, for messages.
    pub host: String,
    pub pid: u32,
    /// When it took the lease.
    pub since: Timestamp,
}

impl std::fmt::Display for AgentLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on {}, since {}",
            self.pid,
            pstar_model::printable(&self.host),
            self.since
        )
    }
}

/// What to take back from one pilot's queue: the given units, or all with `None`.
pub type Withdrawal = (PilotId, Option<Vec<UnitId>>);

/// A unit claimed by an agent: its id and description.
pub type Claimed = (UnitId, SharedDescription);

/// One item of a subscription: a batch of events, or the error that ended it.
pub type Delivery = Result<Arc<[Event]>>;

/// Batches of events, in publication order, for one subscriber.
///
/// Each subscriber gets every event published after it subscribed, exactly once, in order.
/// If the store is lost for good (unreachable past its retries), the last item is the
/// error, so a follower never waits silently on a dead store.
pub struct Subscription {
    rx: mpsc::UnboundedReceiver<Delivery>,
}

impl Subscription {
    /// A subscription fed by `rx`; backends forward their stream into it.
    pub fn new(rx: mpsc::UnboundedReceiver<Delivery>) -> Self {
        Self { rx }
    }

    /// The next batch; an error if the store was lost; `None` once the store is closed.
    pub async fn next_batch(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }
}

/// How a pilot's queue is bound to: the units appended to it, in order.
pub type Binding = (PilotId, Vec<UnitId>);

/// The shared data space. See the crate documentation for its parts.
#[async_trait]
pub trait Coordination: Send + Sync + 'static {
    /// The session whose data this store holds.
    fn session(&self) -> &str;

    /// How an agent in another process reaches this store, or `None` when the store lives
    /// only inside this process (agents must then run in-process too).
    fn url(&self) -> Option<String>;

    /// Environment variables an agent process needs to reach this store (its password),
    /// passed through the environment, never on a command line.
    fn agent_environment(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Hands out `n` consecutive unit ids; returns the first.
    async fn reserve_unit_ids(&self, n: u64) -> Result<UnitId>;

    /// Hands out one pilot id.
    async fn reserve_pilot_id(&self) -> Result<PilotId>;

    /// Registers a pilot so its agent can read its description.
    async fn put_pilot(&self, record: PilotRecord) -> Result<()>;

    /// The record of a registered pilot.
    async fn pilot(&self, id: PilotId) -> Result<PilotRecord>;

    /// Stores unit descriptions, so agents can claim the units later.
    async fn put_units(&self, units: &[Claimed]) -> Result<()>;

    /// Binds units to a pilot: appends them to its queue, in order.
    async fn enqueue(&self, pilot: PilotId, units: &[UnitId]) -> Result<()>;

    /// Takes back units from a pilot's queue that its agent has not claimed: the given
    /// ones, or all with `None`. Returns those actually removed, in queue order.
    async fn withdraw(&self, pilot: PilotId, units: Option<&[UnitId]>) -> Result<Vec<UnitId>>;

    /// Takes back units from several pilots' queues in one round trip where the backend
    /// can: for each `(pilot, units)`, as [`withdraw`](Self::withdraw). Returns, in the
    /// same order, the units actually removed from each.
    async fn withdraw_batch(
        &self,
        requests: Vec<Withdrawal>,
    ) -> Result<Vec<(PilotId, Vec<UnitId>)>> {
        let mut out = Vec::with_capacity(requests.len());
        for (pilot, units) in requests {
            let removed = self.withdraw(pilot, units.as_deref()).await?;
            out.push((pilot, removed));
        }
        Ok(out)
    }

    /// For an agent: takes up to `max` units from the head of its pilot's queue, waiting up
    /// to `wait` for the first one. An empty result means none came in time.
    async fn claim(&self, pilot: PilotId, max: usize, wait: Duration) -> Result<Vec<Claimed>>;

    /// Appends events to the stream, in order, as one batch.
    async fn publish(&self, events: Vec<Event>) -> Result<()>;

    /// Publishes the manager's decisions, then appends bound units to their pilots'
    /// queues. A backend that can makes the two one atomic step, so a unit is never
    /// `Scheduled` on the stream without being in its pilot's queue (or claimed from it),
    /// even if the manager dies in between.
    async fn publish_and_enqueue(&self, events: Vec<Event>, bindings: Vec<Binding>) -> Result<()> {
        if !events.is_empty() {
            self.publish(events).await?;
        }
        for (pilot, units) in bindings {
            self.enqueue(pilot, &units).await?;
        }
        Ok(())
    }

    /// Follows the event stream from now on.
    async fn subscribe(&self) -> Result<Subscription>;

    /// Follows the event stream from its very first event: what a resumed manager replays
    /// to rebuild the session. Only stores that keep the stream can.
    async fn subscribe_from_start(&self) -> Result<Subscription> {
        Err(CoordinationError::Unsupported(
            "this coordination store keeps no history; only a Redis session can be resumed".into(),
        ))
    }

    /// Every unit ever stored in the session, in id order (for a resumed manager).
    async fn all_units(&self) -> Result<Vec<Claimed>> {
        Err(CoordinationError::Unsupported(
            "this coordination store keeps no history".into(),
        ))
    }

    /// Every pilot registered in the session, in id order.
    async fn all_pilots(&self) -> Result<Vec<PilotRecord>> {
        Err(CoordinationError::Unsupported(
            "this coordination store keeps no history".into(),
        ))
    }

    /// The session has ended: a store that outlives its sessions keeps its data for
    /// `keep`, then drops it. The embedded store forgets everything with its process.
    async fn finish(&self, _keep: Duration) -> Result<()> {
        Ok(())
    }

    /// Queues a control message for one pilot's agent.
    async fn send_control(&self, pilot: PilotId, message: Control) -> Result<()>;

    /// Queues control messages for many pilots' agents, in one round trip where the
    /// backend can.
    async fn send_controls(&self, messages: Vec<(PilotId, Control)>) -> Result<()> {
        for (pilot, message) in messages {
            self.send_control(pilot, message).await?;
        }
        Ok(())
    }

    /// For an agent: takes its pending control messages, waiting up to `wait` for one.
    async fn recv_control(&self, pilot: PilotId, wait: Duration) -> Result<Vec<Control>>;

    /// Stores data unit records (replacing those of the same names).
    async fn put_data_units(&self, records: &[DataUnitRecord]) -> Result<()>;

    /// The records of these data units, `None` for a name the store does not hold.
    async fn data_units(&self, names: &[String]) -> Result<Vec<Option<DataUnitRecord>>>;

    /// Reserves `bytes` of pilot store `store`'s space for this session, if that keeps
    /// its use within `quota` (any use with `None`): `Ok(Ok(used))` with the use after,
    /// or `Ok(Err(used))` with the use that left too little room (nothing reserved).
    async fn reserve_space(
        &self,
        store: &str,
        bytes: u64,
        quota: Option<u64>,
    ) -> Result<std::result::Result<u64, u64>>;

    /// Gives back `bytes` of pilot store `store`'s space.
    async fn release_space(&self, store: &str, bytes: u64) -> Result<()>;

    /// Records that the pilot's agent is alive at `at`.
    async fn heartbeat(&self, pilot: PilotId, at: Timestamp) -> Result<()>;

    /// The last heartbeat of every pilot that sent one.
    async fn heartbeats(&self) -> Result<Vec<(PilotId, Timestamp)>>;

    /// For an agent: takes its pilot's [`AgentLease`] for `ttl` if no other agent holds
    /// it, or renews it if `lease` holds it already; returns the other holder otherwise
    /// (nothing is changed then). A lease whose holder stopped renewing it is free once its
    /// `ttl` has passed. A store that cannot lose its agents (the embedded one, whose agents
    /// live in its process) grants it.
    async fn hold_agent_lease(
        &self,
        _pilot: PilotId,
        _lease: &AgentLease,
        _ttl: Duration,
    ) -> Result<Option<AgentLease>> {
        Ok(None)
    }

    /// For an agent at its end: gives its pilot's lease up, if `lease` still holds it.
    async fn release_agent_lease(&self, _pilot: PilotId, _lease: &AgentLease) -> Result<()> {
        Ok(())
    }

    /// Records that a manager of the session is alive, for `ttl` (so that `pstar cancel`
    /// can tell a live manager from a dead one). The embedded store has no other reader.
    async fn manager_alive(&self, _ttl: Duration) -> Result<()> {
        Ok(())
    }

    /// The store no longer holds the session (its keys were deleted, or it restarted
    /// without its data): what this manager wrote into it since then is left to expire
    /// soon, and nothing marks it alive or finished, so that no trace of a session that
    /// is gone comes back. The embedded store cannot lose a session.
    async fn abandon(&self) -> Result<()> {
        Ok(())
    }
}
