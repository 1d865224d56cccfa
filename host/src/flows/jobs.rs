//! Scheduled work that must survive a restart: the next step of a channel workflow,
//! and expiring the messages of a code that can no longer be used. Jobs live in sled,
//! keyed by due time; one background task runs those that are due by the engine's
//! clock. A job is removed only after it ran, and each job checks the verification's
//! state first, so running one twice (a crash in between) changes nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::StepOutcome;
use crate::store::Tree;

use super::{Engine, FlowError};

/// How often the worker looks for due jobs when nobody wakes it.
const POLL: Duration = Duration::from_millis(100);
/// Jobs run per pass.
const BATCH: usize = 256;

/// A scheduled job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    /// Start step `step` of the verification's channel workflow unless its code was
    /// verified or the verification closed.
    FallbackStep {
        tenant_id: String,
        verification_id: String,
        step: u32,
    },
    /// Mark the verification's undelivered messages expired: their code expired.
    ExpireMessages {
        tenant_id: String,
        verification_id: String,
    },
}

fn job_key(due: DateTime<Utc>, id: &str) -> Vec<u8> {
    let millis = u64::try_from(due.timestamp_millis()).unwrap_or(0);
    format!("{millis:020}/{id}").into_bytes()
}

impl Engine {
    /// Stores `job` to run at `due`.
    pub(crate) fn schedule(&self, job: &Job, due: DateTime<Utc>) -> Result<(), FlowError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.db.put(Tree::Jobs, &job_key(due, &id), job)?;
        self.jobs_wake.notify_one();
        Ok(())
    }

    /// Runs every job due by now; returns how many ran.
    pub async fn run_due_jobs(&self) -> Result<usize, FlowError> {
        let now_key = job_key(self.clock.now(), "~");
        let due: Vec<(Vec<u8>, Vec<u8>)> = self
            .db
            .scan_raw(Tree::Jobs, b"", BATCH)?
            .into_iter()
            .take_while(|(key, _)| key.as_slice() <= now_key.as_slice())
            .collect();
        let mut ran = 0;
        for (key, bytes) in due {
            match serde_json::from_slice::<Job>(&bytes) {
                Ok(job) => {
                    if let Err(err) = self.run_job(&job).await {
                        tracing::warn!(?job, "scheduled job failed: {err}");
                    }
                }
                Err(err) => tracing::error!("dropping an unreadable job: {err}"),
            }
            self.db.remove(Tree::Jobs, &key)?;
            ran += 1;
        }
        if ran > 0 {
            self.db.sync().await?;
        }
        Ok(ran)
    }

    async fn run_job(&self, job: &Job) -> Result<(), FlowError> {
        match job {
            Job::FallbackStep {
                tenant_id,
                verification_id,
                step,
            } => self.fallback_step(tenant_id, verification_id, *step).await,
            Job::ExpireMessages {
                tenant_id,
                verification_id,
            } => {
                self.expire_messages(tenant_id, verification_id, "the code expired")?;
                Ok(())
            }
        }
    }

    /// Starts step `step` of a channel workflow: a fresh code on the step's channel,
    /// through routing; a step whose send fails moves on to the next at once.
    async fn fallback_step(
        &self,
        tenant_id: &str,
        verification_id: &str,
        step: u32,
    ) -> Result<(), FlowError> {
        let mut step = step;
        loop {
            let outcome = self.send_step(tenant_id, verification_id, step).await?;
            match outcome {
                Some(StepOutcome { status, .. }) if status == "failed" => step += 1,
                _ => return Ok(()),
            }
        }
    }

    /// Runs the background worker until `stop` turns true.
    pub async fn run_jobs(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            if let Err(err) = self.run_due_jobs().await {
                tracing::error!("scheduled jobs: {err}");
            }
            tokio::select! {
                _ = stop.changed() => return,
                () = self.jobs_wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}
