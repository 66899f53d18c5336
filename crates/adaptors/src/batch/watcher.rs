//! One watcher per (transport host, dialect): every pilot job of one batch system on one
//! host is asked about together, in one status query per interval (`squeue --jobs=1,2,3`,
//! one `qstat` for all...), and each job's answer goes to that job's own follower.
//!
//! The watcher only asks; the followers decide, one per pilot job, as a pilot's watch
//! always did: a job that runs must have its agent reach the store within the agent-start
//! timeout, a job that ends badly fails its pilot with the scheduler's words and the tail
//! of its output, and a job the scheduler no longer knows for [`UNKNOWN_GRACE`] counts as
//! gone. A job no status command knows is asked of the dialect's history commands (its
//! accounting), alone, as before.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use pstar_coordination::{Coordination, Event, PilotEvent, PilotRecord};
use pstar_model::{PilotState, Timestamp};

use crate::JobState;
use crate::dialect::{Dialect, JobRef};
use crate::transport::Transport;

/// How long the answers of a scheduler may be missing before a job counts as gone (a job
/// leaves the queue before its accounting record is written).
pub(crate) const UNKNOWN_GRACE: Duration = Duration::from_secs(60);

/// How long one status or history command may take.
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a cancel command asked by the manager may take.
pub(crate) const CANCEL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the cancel of a job whose agent never came may take.
const HUNG_CANCEL_TIMEOUT: Duration = Duration::from_secs(30);

/// How many bytes of a job's output go into a failed pilot's message.
const OUTPUT_TAIL: u64 = 1500;

/// What one interval says of a job: its state, `None` when the scheduler does not know
/// it, or why it could not be asked.
type Answer = Result<Option<JobState>, String>;

/// A pilot job to follow.
pub(crate) struct Follow {
    pub system: Arc<dyn Dialect>,
    pub transport: Transport,
    pub job: String,
    pub record: PilotRecord,
    pub coordination: Arc<dyn Coordination>,
    pub agent_start: Duration,
    /// The store URL its agent was given (for messages).
    pub url: String,
}

/// A job as its host's watcher holds it: what to ask, and where the answers go.
struct Followed {
    job: String,
    sandbox: PathBuf,
    answers: mpsc::UnboundedSender<Answer>,
}

/// The watchers of one adaptor (one dialect), one per host.
pub(crate) struct Watchers {
    system: Arc<dyn Dialect>,
    poll: Duration,
    /// Host (as [`Transport`] displays it) → its watcher's inbox.
    hosts: std::sync::Mutex<HashMap<String, mpsc::UnboundedSender<(Transport, Followed)>>>,
}

impl Watchers {
    pub(crate) fn new(system: Arc<dyn Dialect>, poll: Duration) -> Self {
        Self {
            system,
            poll,
            hosts: Default::default(),
        }
    }

    /// Follows `follow`'s job until it ends: its host's watcher (started if there is none)
    /// asks about it with the others, a follower task of its own reads the answers.
    pub(crate) fn follow(&self, follow: Follow) {
        let (tx, rx) = mpsc::unbounded_channel();
        let host = follow.transport.to_string();
        let item = (
            follow.transport.clone(),
            Followed {
                job: follow.job.clone(),
                sandbox: follow.record.sandbox.clone(),
                answers: tx,
            },
        );
        {
            // A poisoned registry is a bug of this module: surface it.
            let mut hosts = self
                .hosts
                .lock()
                .expect("the watcher registry is not poisoned");
            // A watcher that is gone (its runtime ended) is replaced.
            let item = match hosts.get(&host) {
                Some(inbox) => inbox.send(item).err().map(|back| back.0),
                None => Some(item),
            };
            if let Some(first) = item {
                let (inbox, jobs) = mpsc::unbounded_channel();
                let _ = inbox.send(first);
                hosts.insert(host.clone(), inbox);
                tracing::debug!(%host, system = self.system.name(), "watcher started");
                tokio::spawn(watch_host(self.system.clone(), self.poll, jobs));
            }
        }
        tokio::spawn(follow_job(follow, rx));
    }
}

/// A host's watcher: each interval, one status query for every job followed there, and
/// each answer sent to its follower. Idle (no query) while it follows no job.
async fn watch_host(
    system: Arc<dyn Dialect>,
    poll: Duration,
    mut inbox: mpsc::UnboundedReceiver<(Transport, Followed)>,
) {
    let mut jobs: Vec<Followed> = Vec::new();
    let mut transport = Transport::Local;
    loop {
        if jobs.is_empty() {
            let Some((t, first)) = inbox.recv().await else {
                return;
            };
            transport = t;
            jobs.push(first);
        }
        tokio::time::sleep(poll).await;
        // The newest connection to the host is the one to use.
        while let Ok((t, more)) = inbox.try_recv() {
            transport = t;
            jobs.push(more);
        }
        // A follower that has decided has dropped its end.
        jobs.retain(|j| !j.answers.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let mut refs: Vec<JobRef<'_>> = Vec::with_capacity(jobs.len());
        for j in &jobs {
            if !refs.iter().any(|r| r.id == j.job) {
                refs.push(JobRef {
                    id: &j.job,
                    sandbox: &j.sandbox,
                });
            }
        }
        let answers = ask(&*system, &transport, &refs).await;
        tracing::debug!(host = %transport, system = system.name(), jobs = refs.len(),
            "asked the jobs' states");
        for j in &jobs {
            let answer = answers.get(&j.job).cloned().unwrap_or(Ok(None));
            let _ = j.answers.send(answer);
        }
    }
}

/// The states of `jobs`: the dialect's status commands for all of them together, then
/// its history commands for each one they did not know. A command that could not be run
/// leaves every job it was asked about with the error.
pub(crate) async fn ask(
    system: &dyn Dialect,
    transport: &Transport,
    jobs: &[JobRef<'_>],
) -> HashMap<String, Answer> {
    let mut answers: HashMap<String, Answer> = HashMap::new();
    let mut unknown: Vec<JobRef<'_>> = jobs.to_vec();
    for index in 0.. {
        if unknown.is_empty() {
            break;
        }
        let Some(command) = system.status(&unknown).into_iter().nth(index) else {
            break;
        };
        match transport.run(&command, QUERY_TIMEOUT).await {
            Ok(out) => {
                let known = system.parse_status(index, &unknown, &out);
                unknown.retain(|j| !known.contains_key(j.id));
                answers.extend(known.into_iter().map(|(job, s)| (job, Ok(Some(s)))));
            }
            Err(e) => {
                for j in unknown {
                    answers.insert(j.id.to_owned(), Err(e.to_string()));
                }
                return answers;
            }
        }
    }
    for job in unknown {
        answers.insert(job.id.to_owned(), history(system, transport, job).await);
    }
    answers
}

/// Asks `job` of the dialect's history commands: the first that knows it answers.
async fn history(system: &dyn Dialect, transport: &Transport, job: JobRef<'_>) -> Answer {
    for (i, command) in system.history(job).iter().enumerate() {
        let out = transport
            .run(command, QUERY_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(state) = system.parse_history(i, job.id, &out) {
            return Ok(Some(state));
        }
    }
    Ok(None)
}

/// Follows a pilot job until it ends, on the answers its host's watcher sends: fails the
/// pilot if its agent never reaches the store once the job runs, or if the job ends badly
/// (the agent may not have been able to say).
async fn follow_job(w: Follow, mut answers: mpsc::UnboundedReceiver<Answer>) {
    let pilot = w.record.id;
    let name = w.system.name();
    let mut running_since: Option<Instant> = None;
    let mut contacted = false;
    let mut unknown_since: Option<Instant> = None;
    while let Some(answer) = answers.recv().await {
        let state = match answer {
            Ok(Some(state)) => {
                unknown_since = None;
                state
            }
            Ok(None) => {
                let since = *unknown_since.get_or_insert_with(Instant::now);
                if since.elapsed() < UNKNOWN_GRACE {
                    continue;
                }
                JobState::Finished {
                    ok: false,
                    detail: Some(format!("{name} no longer knows job {}", w.job)),
                }
            }
            Err(e) => {
                tracing::warn!(%pilot, job = %w.job, error = %e, "cannot ask the job's state");
                continue;
            }
        };
        match state {
            JobState::Queued => {}
            JobState::Running => {
                let since = *running_since.get_or_insert_with(Instant::now);
                if !contacted {
                    contacted = w
                        .coordination
                        .heartbeats()
                        .await
                        .is_ok_and(|h| h.iter().any(|(p, _)| *p == pilot));
                }
                if !contacted && since.elapsed() > w.agent_start {
                    let output = job_output(&w.transport, &w.record.sandbox).await;
                    let detail = format!(
                        "bootstrap failed at `agent start`: {name} job {} has run for {} but \
                         its agent never reached the store at {}{output}",
                        w.job,
                        humantime::format_duration(Duration::from_secs(since.elapsed().as_secs())),
                        w.url
                    );
                    // The job goes first: once the pilot has failed, a manager with
                    // nothing left to run may exit and leave a hanging job behind.
                    match w
                        .transport
                        .run(&w.system.cancel(&w.job), HUNG_CANCEL_TIMEOUT)
                        .await
                    {
                        Ok(out) if out.success() => {}
                        Ok(out) => tracing::warn!(%pilot, job = %w.job,
                            error = %out.failure(), "cannot cancel the job"),
                        Err(e) => tracing::warn!(%pilot, job = %w.job, error = %e,
                            "cannot cancel the job"),
                    }
                    fail(&w.coordination, pilot, detail).await;
                    return;
                }
            }
            JobState::Finished { ok, detail } => {
                if !ok {
                    let output = job_output(&w.transport, &w.record.sandbox).await;
                    let why = detail.unwrap_or_else(|| "it failed".into());
                    fail(
                        &w.coordination,
                        pilot,
                        format!("{name} job {} ended: {why}{output}", w.job),
                    )
                    .await;
                }
                return;
            }
        }
    }
}

/// `; job output: ...` with the tail of the job's standard error and output, if any.
async fn job_output(transport: &Transport, sandbox: &Path) -> String {
    let mut parts = Vec::new();
    for file in ["pilot.err", "pilot.out"] {
        if let Some(text) = transport.tail(&sandbox.join(file), OUTPUT_TAIL).await {
            let text = text.trim();
            if !text.is_empty() {
                let lines: Vec<&str> = text.lines().collect();
                let last = &lines[lines.len().saturating_sub(6)..];
                parts.push(format!("{file}: {}", last.join(" | ")));
            }
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("; {}", parts.join("; "))
    }
}

/// Fails `pilot` (ignored by the state table if it already ended).
async fn fail(coordination: &Arc<dyn Coordination>, pilot: pstar_model::PilotId, detail: String) {
    tracing::warn!(%pilot, %detail, "pilot job failed");
    let event = PilotEvent {
        pilot,
        state: PilotState::Failed,
        at: Timestamp::now(),
        detail: Some(detail),
    };
    if let Err(e) = coordination.publish(vec![Event::Pilot(event)]).await {
        tracing::error!(%pilot, error = %e, "cannot report the pilot job's end");
    }
}
