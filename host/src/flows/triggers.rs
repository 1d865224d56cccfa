//! Trigger points: where the flows hand control to tenant programming.
//!
//! Every flow fires its triggers through [`TriggerHooks`]. The host's own
//! implementation, [`AuditTrail`], records each firing on the verification's audit
//! trail (`GET /v1/verifications/{id}/events`); the plugin host wraps it to run rule
//! plugins at the same points.

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

/// Receives every trigger the flows fire.
pub trait TriggerHooks: Send + Sync + 'static {
    fn fire(&self, event: &TriggerEvent<'_>) -> Result<(), StoreError>;
}

/// Records triggers on the verification's audit trail.
#[derive(Debug, Clone)]
pub struct AuditTrail {
    db: Db,
}

impl AuditTrail {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The audit trail of one verification, oldest first.
    pub fn events(
        db: &Db,
        tenant_id: &str,
        verification_id: &str,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        db.scan(
            Tree::Audit,
            &key(&[tenant_id, verification_id, ""]),
            10_000,
            false,
        )
    }
}

impl TriggerHooks for AuditTrail {
    fn fire(&self, event: &TriggerEvent<'_>) -> Result<(), StoreError> {
        let Some(verification_id) = event.verification_id else {
            return Ok(());
        };
        // Events of one request share a timestamp; the sequence keeps them in firing order.
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let seq = format!("{:016}", SEQUENCE.fetch_add(1, Ordering::Relaxed));
        let at = format!("{:020}", event.at.timestamp_nanos_opt().unwrap_or_default());
        let record = AuditEvent {
            at: event.at,
            trigger: event.trigger.name().to_owned(),
            status: event.status,
            detail: event.detail.clone(),
        };
        self.db.put(
            Tree::Audit,
            &key(&[event.tenant_id, verification_id, &at, &seq]),
            &record,
        )
    }
}
