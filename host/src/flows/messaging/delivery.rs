//! Delivery updates: a provider (or, in development, the dev outbox) reports where a
//! code message is; the verification records it and `otp_delivery_update` fires.

use serde::{Deserialize, Serialize};

use crate::analytics::Fact;
use crate::flows::analytics::groups_of;
use crate::model::{AuditEvent, DeliveryEvent, DeliveryStatus, Verification};
use crate::store::Tree;

use crate::flows::rules::triggers::{Firing, Trigger};
use crate::flows::{Caller, Engine, FlowError};

/// Body of a delivery update.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryRequest {
    pub status: DeliveryStatus,
    pub reason: Option<String>,
}

impl Engine {
    /// Counts a delivery update for analytics: a message's first `delivered` (with the
    /// time since it was sent), or its first `failed` or `expired`.
    fn tally_delivery(
        &self,
        stored: &Verification,
        message_id: &str,
        status: DeliveryStatus,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        let terminal = |s: DeliveryStatus| match s {
            DeliveryStatus::Delivered => Some(true),
            DeliveryStatus::Failed | DeliveryStatus::Expired => Some(false),
            DeliveryStatus::Queued | DeliveryStatus::Sent => None,
        };
        let Some(delivered) = terminal(status) else {
            return;
        };
        // The update just recorded is the last of its message's; an earlier one of the
        // same kind was counted already.
        let earlier = stored.deliveries.iter().rev().skip(1).any(|update| {
            update.message_id == message_id && terminal(update.status) == Some(delivered)
        });
        if earlier {
            return;
        }
        let sent = stored
            .sent
            .iter()
            .find(|sent| sent.message_id == message_id);
        let fact = if delivered {
            Fact::Delivered {
                latency_ms: sent.map(|sent| (now - sent.at).num_milliseconds()),
            }
        } else {
            Fact::Failed
        };
        let groups = groups_of(stored, sent.or(stored.sent.first()));
        self.tally(&stored.tenant_id, now, groups, fact);
    }

    /// Records a delivery update of message `message_id` of verification
    /// `verification_id` and fires `otp_delivery_update`.
    pub async fn delivery_update(
        &self,
        caller: &Caller,
        verification_id: &str,
        message_id: &str,
        request: DeliveryRequest,
    ) -> Result<Verification, FlowError> {
        let tenant_id = caller.tenant_id.as_str();
        if request.reason.as_ref().is_some_and(|r| r.len() > 512) {
            return Err(FlowError::invalid("reason", "at most 512 characters"));
        }
        let key = Engine::verification_key(tenant_id, verification_id);
        let now = self.clock.now();
        let detail = format!("{message_id} {}", request.status.as_str());
        let delivery = DeliveryEvent {
            message_id: message_id.to_owned(),
            status: request.status,
            reason: request.reason.clone(),
            at: now,
        };
        let ruled = self
            .plugins
            .live(tenant_id)
            .is_some_and(|live| live.has_rules(Trigger::OtpDeliveryUpdate));
        if !ruled {
            // No rule can change the verification: the receipt and the firing's entry
            // on the audit trail are appended in one read-modify-write.
            self.plugins.runtime().admission().note(tenant_id);
            let stored = self.db.update::<Verification, FlowError, _>(
                Tree::Verifications,
                &key,
                |current| {
                    let mut current = current.ok_or(FlowError::NotFound("verification"))?;
                    current.deliveries.push(delivery.clone());
                    current.events.push(AuditEvent {
                        at: now,
                        trigger: Trigger::OtpDeliveryUpdate.name().to_owned(),
                        status: current.status,
                        detail: Some(detail.clone()),
                        rules: Vec::new(),
                    });
                    Ok((Some(current.clone()), current))
                },
            )?;
            self.emit_delivery(&stored, request.status);
            self.tally_delivery(&stored, message_id, request.status, now);
            self.db.sync().await?;
            return Ok(stored);
        }
        let settings = self.settings(tenant_id)?;
        let mut working: Verification = self
            .db
            .get(Tree::Verifications, &key)?
            .ok_or(FlowError::NotFound("verification"))?;
        let was_open = working.status.is_open();
        working.deliveries.push(delivery.clone());
        let mut trail = Vec::new();
        self.fire(
            &mut trail,
            Firing {
                trigger: Trigger::OtpDeliveryUpdate,
                stored: true,
                applicant_country: None,
                resends: 0,
                at: now,
            },
            Some(detail),
            &mut working,
            &settings,
        )
        .await?;
        if working.status.is_open() && working.verdict() == crate::warnings::RiskAction::Decline {
            working.status = crate::model::ReportStatus::Declined;
            working.code.active = None;
        }
        let stored =
            self.db
                .update::<Verification, FlowError, _>(Tree::Verifications, &key, |current| {
                    let mut current = current.ok_or(FlowError::NotFound("verification"))?;
                    current.deliveries.push(delivery.clone());
                    current.flags = working.flags.clone();
                    current.decisions = working.decisions.clone();
                    current.cases = working.cases.clone();
                    current.info_requested = working.info_requested.clone();
                    current.risk = working.risk.clone();
                    current.warnings = working.warnings.clone();
                    current.route = working.route.clone();
                    current.avoided_routes = working.avoided_routes.clone();
                    if current.status.is_open() && !working.status.is_open() {
                        current.status = working.status;
                        current.code.active = None;
                    }
                    current.events.extend(trail.iter().cloned());
                    Ok((Some(current.clone()), current))
                })?;
        self.emit_delivery(&stored, request.status);
        self.tally_delivery(&stored, message_id, request.status, now);
        if was_open && !working.status.is_open() && stored.status == working.status {
            self.emit_outcome(&stored);
        }
        self.db.sync().await?;
        Ok(stored)
    }
}
