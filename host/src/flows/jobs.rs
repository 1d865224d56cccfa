//! Scheduled work that must survive a restart: the next step of a channel workflow,
//! and expiring the messages of a code that can no longer be used. Jobs live in the
//! store, keyed by due time; one background task per replica runs those that are due
//! by the engine's clock. On a shared store a replica claims due jobs before running
//! them, each under a lease of [`JOB_LEASE`], so of several replicas exactly one runs
//! a job, and a job whose runner died is claimed again once its lease has ended. On
//! PostgreSQL the claim is one statement over the job table's lease column that skips
//! rows another replica is claiming at that moment (`FOR UPDATE SKIP LOCKED`). (The
//! embedded store has one process: nothing to claim.) A
//! job is removed only after it ran, by its runner while its lease holds, and each job
//! checks the verification's state first, so running one again after a crash changes
//! nothing. On a shared store a replica looks for due jobs at least every second,
//! since jobs scheduled by other replicas do not wake it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::StepOutcome;
use crate::store::{StoreError, Tree};

use crate::flows::{Engine, FlowError};

/// How often the worker looks for due jobs when nobody wakes it.
const POLL: Duration = Duration::from_millis(100);
/// Jobs run per pass.
const BATCH: usize = 256;
/// How long a claimed job is its runner's; past it, another replica may run it.
pub const JOB_LEASE: chrono::Duration = chrono::Duration::seconds(60);
/// On a shared store, the longest a replica waits (clock milliseconds) before it
/// looks for jobs other replicas scheduled.
const SHARED_RESCAN_MS: i64 = 1_000;

/// A job as stored: plain; earlier versions wrote a lease into it when a replica
/// claimed it, which is still read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum Stored {
    Leased { lease_until_ms: i64, job: Job },
    Plain(Job),
}

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

/// The due time, in milliseconds, at the start of a job's key.
fn due_of(key: &[u8]) -> i64 {
    std::str::from_utf8(key.get(..20).unwrap_or_default())
        .ok()
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(i64::MIN)
}

fn job_key(due: DateTime<Utc>, id: &str) -> Vec<u8> {
    let millis = u64::try_from(due.timestamp_millis()).unwrap_or(0);
    format!("{millis:020}/{id}").into_bytes()
}

impl Engine {
    /// Stores `job` to run at `due`. The worker is woken only when the job is due
    /// before every job it knows of.
    pub(crate) fn schedule(&self, job: &Job, due: DateTime<Utc>) -> Result<(), FlowError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.db.put(Tree::Jobs, &job_key(due, &id), job)?;
        let due_ms = due.timestamp_millis();
        if due_ms
            < self
                .replica
                .jobs_next_due
                .fetch_min(due_ms, Ordering::AcqRel)
        {
            self.replica.jobs_wake.notify_one();
        }
        Ok(())
    }

    /// Runs every job due by now; returns how many ran. Costs one atomic read while
    /// the earliest job is not due: the store is read only when one is.
    pub async fn run_due_jobs(&self) -> Result<usize, FlowError> {
        let now = self.clock.now();
        if now.timestamp_millis() < self.replica.jobs_next_due.load(Ordering::Acquire) {
            return Ok(0);
        }
        // Forget the hint before reading, so a job scheduled meanwhile lowers it again.
        self.replica
            .jobs_next_due
            .store(i64::MAX, Ordering::Release);
        let now_key = job_key(now, "~");
        if self.changes.is_some() {
            // Replicas share the jobs: the store claims them for this one.
            let until_ms = (now + JOB_LEASE).timestamp_millis();
            let claimed = self
                .db
                .claim_due(
                    Tree::Jobs,
                    &now_key,
                    now.timestamp_millis(),
                    until_ms,
                    BATCH,
                )?
                .ok_or_else(|| {
                    StoreError::Backend("the shared store keeps no job leases".into())
                })?;
            return self.run_claimed(claimed, until_ms, now).await;
        }
        // The embedded store has one process and one worker: nothing to claim.
        let scanned = self.db.scan_raw(Tree::Jobs, b"", BATCH)?;
        let full = scanned.len() == BATCH;
        let mut due = Vec::new();
        for (key, bytes) in scanned {
            if key.as_slice() <= now_key.as_slice() {
                due.push((key, bytes));
            } else {
                self.replica
                    .jobs_next_due
                    .fetch_min(due_of(&key), Ordering::AcqRel);
                break;
            }
        }
        if full && due.len() == BATCH {
            // More may be due than one pass takes: come back at once.
            self.replica
                .jobs_next_due
                .store(i64::MIN, Ordering::Release);
        }
        let mut ran = 0;
        for (key, bytes) in due {
            let Some(job) = self.readable_job(&key, &bytes)? else {
                continue;
            };
            if let Err(err) = self.run_job(&job).await {
                tracing::warn!(?job, "scheduled job failed: {err}");
            }
            self.db.remove(Tree::Jobs, &key)?;
            ran += 1;
        }
        if ran > 0 {
            self.db.sync().await?;
        }
        Ok(ran)
    }

    /// Runs the jobs the store claimed for this replica (leased until `until_ms`) and
    /// removes each that is still under that lease once it ran.
    async fn run_claimed(
        &self,
        claimed: Vec<(Vec<u8>, Vec<u8>)>,
        until_ms: i64,
        now: DateTime<Utc>,
    ) -> Result<usize, FlowError> {
        // Jobs other replicas scheduled, and jobs whose runner died, are found by
        // claiming again soon; a full batch means more are due now.
        if claimed.len() == BATCH {
            self.replica
                .jobs_next_due
                .store(i64::MIN, Ordering::Release);
        } else {
            self.replica.jobs_next_due.fetch_min(
                now.timestamp_millis().saturating_add(SHARED_RESCAN_MS),
                Ordering::AcqRel,
            );
        }
        let mut ran = 0;
        for (key, bytes) in claimed {
            let Some(job) = self.readable_job(&key, &bytes)? else {
                continue;
            };
            if let Err(err) = self.run_job(&job).await {
                tracing::warn!(?job, "scheduled job failed: {err}");
            }
            if !self.db.finish_claimed(Tree::Jobs, &key, until_ms)? {
                tracing::warn!(
                    ?job,
                    "a scheduled job outran its lease and was claimed again"
                );
            }
            ran += 1;
        }
        if ran > 0 {
            self.db.sync().await?;
        }
        Ok(ran)
    }

    /// The job stored under `key`, or `None` when it does not decode (it is dropped).
    /// A lease inside the value (written by earlier versions, which claimed by
    /// compare-and-swap) no longer holds: the claim is the store's.
    fn readable_job(&self, key: &[u8], bytes: &[u8]) -> Result<Option<Job>, FlowError> {
        match serde_json::from_slice::<Stored>(bytes) {
            Ok(Stored::Plain(job) | Stored::Leased { job, .. }) => Ok(Some(job)),
            Err(err) => {
                tracing::error!("dropping an unreadable job: {err}");
                self.db.remove(Tree::Jobs, key)?;
                Ok(None)
            }
        }
    }

    async fn run_job(&self, job: &Job) -> Result<(), FlowError> {
        // A job's logs (a fallback step's send) nest under a span of its own.
        let span = match job {
            Job::FallbackStep {
                tenant_id,
                verification_id,
                step,
            } => {
                tracing::info_span!("job", kind = "fallback_step", %tenant_id, %verification_id, step)
            }
            Job::ExpireMessages {
                tenant_id,
                verification_id,
            } => tracing::info_span!("job", kind = "expire_messages", %tenant_id, %verification_id),
        };
        tracing::Instrument::instrument(self.run_job_in_span(job), span).await
    }

    /// What [`Engine::run_job`] does, inside its span.
    async fn run_job_in_span(&self, job: &Job) -> Result<(), FlowError> {
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
                () = self.replica.jobs_wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}
