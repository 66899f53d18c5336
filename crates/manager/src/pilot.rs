//! `PilotComputeService` and `PilotCompute`: creating pilots and following them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use pstar_adaptors::{JobId, PilotJob, ResourceAdaptor};
use pstar_coordination::{Event, PilotEvent, PilotRecord};
use pstar_model::sandbox::pilot_sandbox;
use pstar_model::{Lifecycle, PilotComputeDescription, PilotId, PilotState, State, Timestamp};

use crate::error::{Error, Result};
use crate::session::Session;

/// How long a canceled pilot's agent gets to stop its units before its job is killed.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long ending a pilot's job through its resource may take (an `scancel` over SSH).
const JOB_END_TIMEOUT: Duration = Duration::from_secs(60);

/// A factory and registry of pilots (the seeds' `PilotComputeService`).
///
/// ```
/// # #[tokio::main] async fn main() -> pstar::Result<()> {
/// use pstar::{PilotComputeDescription, PilotComputeService, PilotState, Session};
///
/// let dir = tempfile::tempdir().unwrap();
/// let session = Session::builder().sandbox_root(dir.path()).build().await?;
/// let pcs = PilotComputeService::new(&session);
/// let pilot = pcs.create_pilot(PilotComputeDescription { cores: 2, ..Default::default() }).await?;
/// assert_eq!(pilot.wait_for(PilotState::Running).await, PilotState::Running);
/// assert_eq!(pcs.pilots().len(), 1);
/// pcs.cancel().await;
/// assert_eq!(pilot.state(), PilotState::Canceled);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PilotComputeService {
    inner: Arc<PcsInner>,
}

type PilotListener = Box<dyn Fn(&PilotCompute) -> bool + Send + Sync>;

struct PcsInner {
    session: Session,
    pilots: Mutex<Vec<PilotCompute>>,
    listeners: Mutex<Vec<PilotListener>>,
}

impl PilotComputeService {
    /// A service with no pilots yet.
    pub fn new(session: &Session) -> Self {
        Self {
            inner: Arc::new(PcsInner {
                session: session.clone(),
                pilots: Mutex::new(Vec::new()),
                listeners: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Creates a pilot and submits it to its resource.
    ///
    /// Returns once the resource accepted (or refused) the pilot job; the pilot becomes
    /// `Running` when its agent is up. A refused submission gives a `Failed` pilot whose
    /// [`detail`](PilotCompute::detail) is the resource's message; a description that can
    /// never work is an error.
    pub async fn create_pilot(&self, description: PilotComputeDescription) -> Result<PilotCompute> {
        self.create_pilot_as(description, None).await
    }

    /// Creates a pilot like the session's pilot `record` (a resumed session with none
    /// left alive): the new record says which one it stands in for, so that a later
    /// resume starts pilots like the session's own again, not like these too.
    pub async fn restart_pilot(&self, record: &PilotRecord) -> Result<PilotCompute> {
        let of = record.restart_of.unwrap_or(record.id);
        self.create_pilot_as(record.description.clone(), Some(of))
            .await
    }

    async fn create_pilot_as(
        &self,
        description: PilotComputeDescription,
        restart_of: Option<PilotId>,
    ) -> Result<PilotCompute> {
        let session = &self.inner.session;
        let what = || {
            format!(
                "pilot description{}",
                description
                    .name
                    .as_ref()
                    .map(|n| format!(" `{n}`"))
                    .unwrap_or_default()
            )
        };
        description
            .validate()
            .map_err(|source| Error::InvalidDescription {
                what: what(),
                source,
            })?;
        // An agent that drains from its start would never take a unit.
        if let Some(margin) = session.settings().agent.drain_margin {
            let pilot = match &description.name {
                Some(name) => format!("pilot `{name}`"),
                None => "the pilot".to_owned(),
            };
            pstar_model::settings::check_drain_margin(margin, description.walltime, pilot)
                .map_err(|source| Error::InvalidSetting {
                    origin: session.settings().origin("drain_margin").clone(),
                    source,
                })?;
        }
        let adaptor = session.adaptor(description.resource.scheme())?;
        // The same refusals as `pstar check`'s, before anything is created.
        pstar_adaptors::check_pilot(&description, session.coordination().url().is_some()).map_err(
            |e| match e {
                pstar_adaptors::AdaptorError::NeedsNetworkedStore { scheme } => {
                    Error::NeedsNetworkedStore { scheme }
                }
                e => Error::Adaptor(e),
            },
        )?;

        let coordination = session.coordination().clone();
        let id = coordination.reserve_pilot_id().await?;
        // A pilot that cannot even be reached is still created, and fails saying why.
        let (root, unreachable) = match adaptor
            .sandbox_root(&description, session.sandbox_root())
            .await
        {
            Ok(root) => (root, None),
            Err(e) => (
                pstar_adaptors::local_root(&description, session.sandbox_root()),
                Some(e),
            ),
        };
        let record = PilotRecord {
            id,
            description,
            sandbox: pilot_sandbox(&root, session.id(), id),
            job: None,
            agent: session.agent_settings(),
            restart_of,
        };
        coordination.put_pilot(record.clone()).await?;

        let (changed, _) = watch::channel(PilotState::New);
        let pilot = PilotCompute {
            inner: Arc::new(PilotInner {
                id,
                description: record.description.clone(),
                sandbox: record.sandbox.clone(),
                session: session.clone(),
                adaptor: adaptor.clone(),
                status: Mutex::new(PilotStatus {
                    life: Lifecycle::new(Timestamp::now()),
                    detail: None,
                    job: None,
                }),
                changed,
            }),
        };
        session.register_pilot(pilot.clone());
        if let Ok(mut pilots) = self.inner.pilots.lock() {
            pilots.push(pilot.clone());
        }
        if let Ok(mut listeners) = self.inner.listeners.lock() {
            listeners.retain(|l| l(&pilot));
        }

        if let Some(e) = unreachable {
            tracing::warn!(pilot = %id, error = %e, "pilot resource unreachable");
            pilot
                .publish(PilotState::Failed, Some(e.to_string()))
                .await?;
            return Ok(pilot);
        }
        // Pending from the moment it is handed over: the agent may report Running at once.
        pilot.publish(PilotState::Pending, None).await?;
        match adaptor
            .submit(PilotJob {
                record: record.clone(),
                coordination: coordination.clone(),
            })
            .await
        {
            Ok(job) => {
                // Stored with the pilot, so that a resumed manager can still end the job.
                let stored = PilotRecord {
                    job: Some(job.0.clone()),
                    ..record
                };
                if let Err(e) = coordination.put_pilot(stored).await {
                    tracing::warn!(pilot = %id, error = %e, "cannot record the pilot job id");
                }
                if let Ok(mut s) = pilot.inner.status.lock() {
                    s.job = Some(job);
                }
            }
            Err(e) => {
                tracing::warn!(pilot = %id, error = %e, "pilot submission refused");
                let detail = match e {
                    pstar_adaptors::AdaptorError::Bootstrap { .. } => e.to_string(),
                    e => format!("submission refused: {e}"),
                };
                pilot.publish(PilotState::Failed, Some(detail)).await?;
            }
        }
        Ok(pilot)
    }

    /// Takes over a pilot already in the session's store (a resumed manager's): nothing is
    /// submitted; its state comes from the session's history.
    pub(crate) fn attach(&self, record: PilotRecord) -> Result<PilotCompute> {
        let session = &self.inner.session;
        let adaptor = session.adaptor(record.description.resource.scheme())?;
        let (changed, _) = watch::channel(PilotState::New);
        let pilot = PilotCompute {
            inner: Arc::new(PilotInner {
                id: record.id,
                description: record.description,
                sandbox: record.sandbox,
                session: session.clone(),
                adaptor,
                status: Mutex::new(PilotStatus {
                    life: Lifecycle::new(Timestamp::now()),
                    detail: None,
                    job: record.job.map(JobId),
                }),
                changed,
            }),
        };
        session.register_pilot(pilot.clone());
        if let Ok(mut pilots) = self.inner.pilots.lock() {
            pilots.push(pilot.clone());
        }
        Ok(pilot)
    }

    /// Every pilot created by this service.
    pub fn pilots(&self) -> Vec<PilotCompute> {
        self.inner
            .pilots
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    /// Cancels every pilot of this service, all at once; returns when all have ended.
    pub async fn cancel(&self) {
        let mut all = tokio::task::JoinSet::new();
        for pilot in self.pilots() {
            all.spawn(async move { pilot.cancel().await });
        }
        while all.join_next().await.is_some() {}
    }

    /// Kills every pilot of this service through its resource, all at once, without a
    /// word through the coordination store (see [`PilotCompute::abort`]).
    pub async fn abort(&self, reason: &str) {
        let mut all = tokio::task::JoinSet::new();
        for pilot in self.pilots() {
            let reason = reason.to_owned();
            all.spawn(async move { pilot.abort(&reason).await });
        }
        while all.join_next().await.is_some() {}
    }

    /// Waits until every pilot of this service has ended.
    pub async fn wait(&self) {
        for pilot in self.pilots() {
            pilot.wait().await;
        }
    }

    /// Calls `listener` for every pilot created from now on, until it returns false.
    pub(crate) fn on_new_pilot(&self, listener: PilotListener) {
        if let Ok(mut l) = self.inner.listeners.lock() {
            l.push(listener);
        }
    }

    pub(crate) fn same_as(&self, other: &PilotComputeService) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// One pilot: a placeholder job holding cores and GPUs on a resource (the seeds'
/// `PilotCompute`). Cheap to clone; all clones see the same pilot.
///
/// Every method appears in this example:
///
/// ```
/// # #[tokio::main] async fn main() -> pstar::Result<()> {
/// use pstar::{PilotComputeDescription, PilotComputeService, PilotState, Session};
///
/// # let dir = tempfile::tempdir().unwrap();
/// let session = Session::builder().sandbox_root(dir.path()).build().await?;
/// let pcs = PilotComputeService::new(&session);
/// let description = PilotComputeDescription { name: Some("p".into()), cores: 2, ..Default::default() };
/// let pilot = pcs.create_pilot(description).await?;
///
/// assert_eq!(pilot.id().to_string(), "pilot.0000");
/// assert_eq!(pilot.description().cores, 2);
/// assert!(pilot.sandbox().starts_with(session.sandbox_root()));
/// assert_eq!(pilot.wait_for(PilotState::Running).await, PilotState::Running);
/// assert_eq!(pilot.state(), PilotState::Running);
/// assert_eq!(pilot.job_id().as_deref(), Some("local:pilot.0000"));
///
/// pilot.cancel().await;
/// assert_eq!(pilot.wait().await, PilotState::Canceled);
/// assert_eq!(pilot.detail().as_deref(), Some("pilot canceled"));
/// let states: Vec<PilotState> = pilot.history().iter().map(|(s, _)| *s).collect();
/// assert_eq!(states, [PilotState::New, PilotState::Pending, PilotState::Running, PilotState::Canceled]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PilotCompute {
    inner: Arc<PilotInner>,
}

struct PilotInner {
    id: PilotId,
    description: PilotComputeDescription,
    sandbox: PathBuf,
    session: Session,
    adaptor: Arc<dyn ResourceAdaptor>,
    status: Mutex<PilotStatus>,
    changed: watch::Sender<PilotState>,
}

struct PilotStatus {
    life: Lifecycle<PilotState>,
    detail: Option<String>,
    job: Option<JobId>,
}

impl std::fmt::Debug for PilotCompute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PilotCompute")
            .field("id", &self.id())
            .field("state", &self.state())
            .finish()
    }
}

impl PilotCompute {
    /// The pilot's id in its session (`pilot.0000`).
    pub fn id(&self) -> PilotId {
        self.inner.id
    }

    /// What the pilot was created from.
    pub fn description(&self) -> &PilotComputeDescription {
        &self.inner.description
    }

    /// The pilot's sandbox directory on its resource; each unit gets a directory inside.
    pub fn sandbox(&self) -> &Path {
        &self.inner.sandbox
    }

    /// The pilot's current state.
    pub fn state(&self) -> PilotState {
        self.inner
            .status
            .lock()
            .map(|s| s.life.state())
            .unwrap_or(PilotState::Failed)
    }

    /// Why the pilot is in its state, when there is more to say (a failure, the walltime).
    pub fn detail(&self) -> Option<String> {
        self.inner.status.lock().ok()?.detail.clone()
    }

    /// Every state the pilot went through, with when it entered it.
    pub fn history(&self) -> Vec<(PilotState, Timestamp)> {
        self.inner
            .status
            .lock()
            .map(|s| s.life.history().to_vec())
            .unwrap_or_default()
    }

    /// The pilot job's id on its resource, once submitted.
    pub fn job_id(&self) -> Option<String> {
        self.inner
            .status
            .lock()
            .ok()?
            .job
            .as_ref()
            .map(|j| j.0.clone())
    }

    /// Its state, now and at each later change (changes in quick succession may be seen
    /// as one: the last of them).
    pub fn watch_state(&self) -> watch::Receiver<PilotState> {
        self.inner.changed.subscribe()
    }

    /// Waits until the pilot has ended; returns its final state.
    pub async fn wait(&self) -> PilotState {
        let mut rx = self.inner.changed.subscribe();
        match rx.wait_for(|s| s.is_final()).await {
            Ok(s) => *s,
            Err(_) => self.state(),
        }
    }

    /// Waits until the pilot is in `state` or has ended; returns the state it is in then.
    pub async fn wait_for(&self, state: PilotState) -> PilotState {
        let mut rx = self.inner.changed.subscribe();
        match rx.wait_for(|s| *s == state || s.is_final()).await {
            Ok(s) => *s,
            Err(_) => self.state(),
        }
    }

    /// Cancels the pilot and returns once it has ended.
    ///
    /// A running agent is asked to stop: the units it still runs are killed and go back to
    /// the pool, to finish on other pilots. If it does not stop in time, or never started,
    /// the pilot job is ended through its adaptor.
    pub async fn cancel(&self) {
        let state = self.state();
        if state == PilotState::Failed {
            // Failed here (lost, a black hole) while its job may still be there, hung:
            // make sure it is gone, at once (whatever it would report is ignored now). Most
            // such jobs have ended already: nothing to say.
            if let Some(record) = self.record() {
                let ended =
                    tokio::time::timeout(JOB_END_TIMEOUT, self.inner.adaptor.kill(&record)).await;
                tracing::debug!(pilot = %self.id(), ?ended, "ended the job of a failed pilot");
            }
            return;
        }
        if state.is_final() {
            return;
        }
        let coordination = self.inner.session.coordination();
        if state == PilotState::Running {
            let asked = tokio::time::timeout(
                CANCEL_TIMEOUT,
                coordination.send_control(self.id(), pstar_coordination::Control::CancelPilot),
            )
            .await;
            match asked {
                Ok(Ok(())) => {
                    if tokio::time::timeout(CANCEL_TIMEOUT, self.wait())
                        .await
                        .is_ok()
                    {
                        return;
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(pilot = %self.id(), error = %e, "cannot ask the agent to stop")
                }
                Err(_) => tracing::warn!(pilot = %self.id(), "cannot ask the agent to stop: the \
                    coordination store did not answer in time"),
            }
        }
        self.end_job().await;
        let published = tokio::time::timeout(
            CANCEL_TIMEOUT,
            self.publish(PilotState::Canceled, Some("pilot canceled".into())),
        )
        .await;
        if let Ok(Err(e)) = &published {
            tracing::warn!(pilot = %self.id(), error = %e, "cannot record the cancel");
        }
        if published.is_err()
            || tokio::time::timeout(CANCEL_TIMEOUT, self.wait())
                .await
                .is_err()
        {
            // The store did not bring the cancel back: its job is ended all the same.
            self.record_here(
                PilotState::Canceled,
                "pilot canceled (the coordination store did not confirm it)",
            );
        }
    }

    /// Kills the pilot job through its resource now, without asking its agent through the
    /// coordination store: for when the store is gone or a second Ctrl-C asks for an end
    /// at once. The agent is killed and its units with it (a local agent's whole process
    /// session; a batch job through its scheduler). Recorded here (not on the stream) as
    /// `Canceled` with `reason`.
    pub async fn abort(&self, reason: &str) {
        if self.state().is_final() {
            return;
        }
        if let Some(record) = self.record() {
            match tokio::time::timeout(JOB_END_TIMEOUT, self.inner.adaptor.kill(&record)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(pilot = %self.id(), error = %e, "cannot kill the pilot job")
                }
                Err(_) => tracing::warn!(pilot = %self.id(), job = ?record.job,
                    "cannot kill the pilot job: its resource did not answer in time"),
            }
        }
        self.record_here(PilotState::Canceled, reason);
    }

    /// Ends the pilot's job through its adaptor, if it has one; bounded in time.
    async fn end_job(&self) {
        let Some(record) = self.record() else { return };
        match tokio::time::timeout(JOB_END_TIMEOUT, self.inner.adaptor.cancel(&record)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(pilot = %self.id(), error = %e, "cannot cancel the pilot job")
            }
            Err(_) => tracing::warn!(pilot = %self.id(), job = ?record.job,
                "cannot cancel the pilot job: its resource did not answer in time"),
        }
    }

    /// A transition this process records without the store (which cannot carry it).
    fn record_here(&self, state: PilotState, detail: &str) {
        let event = PilotEvent {
            pilot: self.id(),
            state,
            at: Timestamp::now(),
            detail: Some(detail.to_owned()),
        };
        self.apply(&event);
        self.inner.session.dispatch_here(vec![Event::Pilot(event)]);
    }

    /// For a pilot taken over by a resumed manager: if its job is gone from its resource,
    /// the pilot fails at once (rather than after the heartbeat timeout); else its job is
    /// followed from now on as if this manager had submitted it.
    pub(crate) async fn check_job(&self) {
        if self.state().is_final() {
            return;
        }
        let gone = match self.record() {
            Some(record) => match self.inner.adaptor.state(&record).await {
                Ok(pstar_adaptors::JobState::Finished { detail, .. }) => Some(detail),
                _ => {
                    let job = PilotJob {
                        record,
                        coordination: self.inner.session.coordination().clone(),
                    };
                    if let Err(e) = self.inner.adaptor.follow(job).await {
                        tracing::warn!(pilot = %self.id(), error = %e,
                            "cannot follow the pilot job");
                    }
                    None
                }
            },
            None => Some(Some("its job was never recorded".into())),
        };
        if let Some(detail) = gone {
            let why = detail.unwrap_or_else(|| "its job ended".into());
            self.fail(format!(
                "pilot job gone while no manager was watching: {why}"
            ))
            .await;
            self.wait().await;
        }
    }

    /// Fails the pilot now, with `reason` (its agent stopped sending heartbeats, or its
    /// units keep failing at once): the failure is recorded first, so the units it held go
    /// back to the pool at once and whatever its agent reports later is ignored; then the
    /// agent is told to stop and the pilot job is ended.
    pub async fn fail(&self, reason: impl Into<String>) {
        if self.state().is_final() {
            return;
        }
        let reason = reason.into();
        tracing::warn!(pilot = %self.id(), %reason, "failing pilot");
        if let Err(e) = self.publish(PilotState::Failed, Some(reason)).await {
            tracing::warn!(pilot = %self.id(), error = %e, "cannot record the failure");
        }
        let coordination = self.inner.session.coordination();
        if let Err(e) = coordination
            .send_control(self.id(), pstar_coordination::Control::CancelPilot)
            .await
        {
            tracing::warn!(pilot = %self.id(), error = %e, "cannot ask the agent to stop");
        }
        self.end_job().await;
    }

    /// What the pilot's resource kept of its job: the job's output and the agent's log.
    pub async fn logs(&self) -> Result<String> {
        let record = self.record().unwrap_or_else(|| PilotRecord {
            id: self.id(),
            description: self.inner.description.clone(),
            sandbox: self.inner.sandbox.clone(),
            job: None,
            agent: self.inner.session.agent_settings(),
            restart_of: None,
        });
        Ok(self.inner.adaptor.logs(&record).await?)
    }

    /// The pilot as its adaptor knows it, once it has a job.
    fn record(&self) -> Option<PilotRecord> {
        let job = self.inner.status.lock().ok()?.job.clone()?;
        Some(PilotRecord {
            id: self.id(),
            description: self.inner.description.clone(),
            sandbox: self.inner.sandbox.clone(),
            job: Some(job.0),
            agent: self.inner.session.agent_settings(),
            restart_of: None,
        })
    }

    async fn publish(&self, state: PilotState, detail: Option<String>) -> Result<()> {
        let event = PilotEvent {
            pilot: self.id(),
            state,
            at: Timestamp::now(),
            detail,
        };
        self.inner
            .session
            .coordination()
            .publish(vec![Event::Pilot(event)])
            .await?;
        Ok(())
    }

    /// Applies a transition from the event stream, through the state table.
    pub(crate) fn apply(&self, event: &PilotEvent) {
        let Ok(mut s) = self.inner.status.lock() else {
            return;
        };
        s.life.backdate_start(event.at);
        match s.life.transition(event.state, event.at) {
            Ok(()) => {
                if event.detail.is_some() {
                    s.detail = event.detail.clone();
                }
                let state = s.life.state();
                drop(s);
                match &event.detail {
                    Some(detail) => {
                        tracing::info!(pilot = %self.id(), %state, %detail, "pilot state")
                    }
                    None => tracing::info!(pilot = %self.id(), %state, "pilot state"),
                }
                self.inner.changed.send_replace(state);
            }
            // A second report of an end already recorded (agent and manager both saw it).
            Err(e) => tracing::debug!(pilot = %self.id(), error = %e, "ignored pilot event"),
        }
    }
}
