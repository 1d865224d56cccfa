//! Trigger points: where the flows hand control to tenant programming.
//!
//! Every flow fires its triggers through [`TriggerHooks`], the seam where rule plugins
//! run, and records each firing on the verification's audit trail
//! (`GET /v1/verifications/{id}/events`).

use chrono::{DateTime, Utc};

use crate::model::{AuditEvent, ReportStatus};
use crate::store::StoreError;

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

impl AuditEvent {
    /// The audit record of a trigger firing.
    pub fn of(event: &TriggerEvent<'_>) -> Self {
        AuditEvent {
            at: event.at,
            trigger: event.trigger.name().to_owned(),
            status: event.status,
            detail: event.detail.clone(),
        }
    }
}

impl super::Engine {
    /// Fires a trigger through the hooks and notes it in `trail`; the flow stores the
    /// trail with the verification in the write it makes anyway.
    pub(crate) fn fire(
        &self,
        trail: &mut Vec<AuditEvent>,
        event: &TriggerEvent<'_>,
    ) -> Result<(), StoreError> {
        self.hooks.fire(event)?;
        trail.push(AuditEvent::of(event));
        Ok(())
    }
}
