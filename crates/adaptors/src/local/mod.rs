//! `local://`: this machine. See `docs.md` beside this file.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::task::AbortHandle;

use pstar_agent::{Agent, AgentConfig};
use pstar_coordination::{Event, PilotEvent};
use pstar_model::{PilotState, Scheme, Timestamp};

use crate::{AdaptorError, JobId, JobState, PilotJob, ResourceAdaptor};

#[doc = include_str!("docs.md")]
#[derive(Default)]
pub struct Local {
    agent_config: AgentConfig,
    jobs: Arc<Mutex<HashMap<JobId, Job>>>,
}

struct Job {
    abort: AbortHandle,
    state: JobState,
}

impl Local {
    /// A local adaptor whose agents use `agent_config`.
    pub fn with_agent_config(agent_config: AgentConfig) -> Self {
        Self {
            agent_config,
            jobs: Arc::default(),
        }
    }
}

#[async_trait]
impl ResourceAdaptor for Local {
    fn scheme(&self) -> Scheme {
        Scheme::Local
    }

    async fn submit(&self, job: PilotJob) -> Result<JobId, AdaptorError> {
        if job.coordination.url().is_some() {
            return Err(AdaptorError::Unsupported(
                "local pilots with an out-of-process coordination store are not supported yet"
                    .into(),
            ));
        }
        let pilot = job.record.id;
        let id = JobId(format!("local:{pilot}"));
        let coordination = job.coordination.clone();
        let agent = Agent::new(job.coordination, job.record, self.agent_config.clone());
        let task = tokio::spawn(agent.run());
        let abort = task.abort_handle();
        self.jobs
            .lock()
            .map_err(|_| AdaptorError::Resource("adaptor lock poisoned".into()))?
            .insert(
                id.clone(),
                Job {
                    abort,
                    state: JobState::Running,
                },
            );

        // Watch the agent: if it dies without saying so, its pilot fails, which sends the
        // units it held back to the pool.
        let jobs = self.jobs.clone();
        let watched = id.clone();
        tokio::spawn(async move {
            let (ok, detail) = match task.await {
                Ok(Ok(_)) => (true, None),
                Ok(Err(e)) => (false, Some(format!("agent failed: {e}"))),
                Err(e) if e.is_cancelled() => {
                    (false, Some("agent stopped by its adaptor".to_owned()))
                }
                Err(e) => (false, Some(format!("agent crashed: {e}"))),
            };
            if !ok {
                let event = PilotEvent {
                    pilot,
                    state: PilotState::Failed,
                    at: Timestamp::now(),
                    detail: detail.clone(),
                };
                if let Err(e) = coordination.publish(vec![Event::Pilot(event)]).await {
                    tracing::error!(%pilot, error = %e, "cannot report the agent's end");
                }
            }
            if let Ok(mut jobs) = jobs.lock()
                && let Some(job) = jobs.get_mut(&watched)
            {
                job.state = JobState::Finished { ok, detail };
            }
        });
        Ok(id)
    }

    async fn state(&self, job: &JobId) -> Result<JobState, AdaptorError> {
        let jobs = self
            .jobs
            .lock()
            .map_err(|_| AdaptorError::Resource("adaptor lock poisoned".into()))?;
        jobs.get(job)
            .map(|j| j.state.clone())
            .ok_or_else(|| AdaptorError::UnknownJob(job.clone()))
    }

    async fn cancel(&self, job: &JobId) -> Result<(), AdaptorError> {
        let jobs = self
            .jobs
            .lock()
            .map_err(|_| AdaptorError::Resource("adaptor lock poisoned".into()))?;
        let j = jobs
            .get(job)
            .ok_or_else(|| AdaptorError::UnknownJob(job.clone()))?;
        // Dropping the agent's future drops its unit tasks, which kill their process groups.
        j.abort.abort();
        Ok(())
    }
}
