//! Trigger points: where the flows hand control to tenant programming.
//!
//! Every flow fires its triggers through [`TriggerHooks`], the seam where rule plugins
//! run, and records each firing on the verification's [`AuditTrail`]
//! (`GET /v1/verifications/{id}/events`).

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

use crate::model::{AuditEvent, ReportStatus};
use crate::store::{key, Db, StoreError, Tree};

/// The trigger points of the flows; the names are shared with plugins through the SDK.
pub use dialgate_sdk::Trigger;

/// What a trigger reports about the flow at that point.
#[derive(Debug, Clone)]
pub struct TriggerEvent<'a> {
    pub trigger: Trigger,
    pub tenant_id: &'a str,
    pub verification_id: Option<&'a str>,
    pub phone: &'a str,
    pub applicant_id: Option<&'a str>,
    pub status: ReportStatus,
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

/// Receives every trigger the flows fire, in order, while the flow waits: this is the
/// seam where tenant rule plugins run.
pub trait TriggerHooks: Send + Sync + 'static {
    fn fire(&self, event: &TriggerEvent<'_>) -> Result<(), StoreError>;
}

/// The hooks of a host without rule plugins: firing a trigger only records it.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRules;

impl TriggerHooks for NoRules {
    fn fire(&self, _event: &TriggerEvent<'_>) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The audit trail: every trigger fired for a verification, stored one record per
/// request (the triggers a request fires are written together, in firing order).
#[derive(Debug, Clone)]
pub struct AuditTrail;

impl AuditTrail {
    /// The audit trail of one verification, oldest first.
    pub fn events(
        db: &Db,
        tenant_id: &str,
        verification_id: &str,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let batches: Vec<Vec<AuditEvent>> = db.scan(
            Tree::Audit,
            &key(&[tenant_id, verification_id, ""]),
            10_000,
            false,
        )?;
        Ok(batches.into_iter().flatten().collect())
    }

    /// Stores the triggers one request fired for a verification.
    pub(crate) fn record(
        db: &Db,
        tenant_id: &str,
        verification_id: &str,
        events: &[AuditEvent],
    ) -> Result<(), StoreError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        // Requests at the same instant are kept apart and in order by a sequence number.
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let seq = format!("{:016}", SEQUENCE.fetch_add(1, Ordering::Relaxed));
        let at = format!("{:020}", first.at.timestamp_nanos_opt().unwrap_or_default());
        db.put(
            Tree::Audit,
            &key(&[tenant_id, verification_id, &at, &seq]),
            &events,
        )
    }
}

impl super::Engine {
    /// Fires a trigger through the hooks and notes it in `trail` for the audit trail.
    pub(crate) fn fire(
        &self,
        trail: &mut Vec<AuditEvent>,
        event: &TriggerEvent<'_>,
    ) -> Result<(), StoreError> {
        self.hooks.fire(event)?;
        trail.push(AuditEvent {
            at: event.at,
            trigger: event.trigger.name().to_owned(),
            status: event.status,
            detail: event.detail.clone(),
        });
        Ok(())
    }
}
