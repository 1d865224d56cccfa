//! Emitting events: the flows call one of these after they wrote the state the event
//! reports, before their group commit. Each matching enabled subscription gets a
//! delivery in the outbox and a place in the schedule, due at once. Emission never
//! fails the flow: a storage failure is logged and the flow goes on.

use serde_json::{json, Value as Json};

use crate::flows::{Engine, FlowError};
use crate::model::{Case, DeliveryStatus as MessageStatus, ReportStatus, Verification};
use crate::store::Tree;

use crate::webhooks::{
    delivery_id, delivery_key, new_id, queue_key, Delivery, DeliveryStatus, EventType, QueueRef,
    Subscription,
};

/// The `data` of a verification event.
fn verification_data(verification: &Verification, event: EventType) -> Json {
    let mut data = json!({
        "verification_id": verification.id,
        "applicant_id": verification.applicant_id,
        "phone": verification.phone.e164,
        "country": verification.phone.region,
        "status": verification.status,
        "otp_verified": verification.otp_verified,
        "channel": verification.channel,
        "sends": verification.sends,
        "risk_score": verification.risk.risk_score,
        "risk_level": verification.risk.risk_level,
        "warnings": verification
            .warnings
            .iter()
            .map(|warning| warning.risk.tag())
            .collect::<Vec<_>>(),
        "flags": verification.flags,
        "cases": verification
            .cases
            .iter()
            .map(|case| case.case_id.as_str())
            .collect::<Vec<_>>(),
        "created_at": verification.created_at,
        "updated_at": verification.updated_at,
        "verified_at": verification.verified_at,
    });
    if let (Some(review), Json::Object(map)) = (&verification.review, &mut data) {
        map.insert("review".into(), json!(review));
    }
    if matches!(event, EventType::Delivered | EventType::Failed) {
        if let (Some(delivery), Json::Object(map)) = (verification.deliveries.last(), &mut data) {
            map.insert("delivery".into(), json!(delivery));
        }
    }
    data
}

/// The `data` of a case event: the case as `GET /v1/cases/{id}` shows it.
fn case_data(case: &Case) -> Json {
    let mut case = case.clone();
    case.updated_at.get_or_insert(case.created_at);
    json!(case)
}

impl Engine {
    /// Emits `event` about `verification` to the tenant's subscriptions.
    pub(crate) fn emit_webhook(&self, event: EventType, verification: &Verification) {
        let data = verification_data(verification, event);
        self.emit(&verification.tenant_id, event, data);
    }

    /// Emits the event a settled verification's status means: `verified` (a code
    /// matched), `approved` (approved without one, or by a reviewer), `declined` or
    /// `in_review`. An open verification emits nothing.
    pub(crate) fn emit_outcome(&self, verification: &Verification) {
        let event = match verification.status {
            ReportStatus::NotFinished => return,
            ReportStatus::Declined => EventType::Declined,
            ReportStatus::InReview => EventType::InReview,
            ReportStatus::Approved
                if verification.review.is_none() && verification.otp_verified =>
            {
                EventType::Verified
            }
            ReportStatus::Approved => EventType::Approved,
        };
        self.emit_webhook(event, verification);
    }

    /// Emits the event a delivery update means: `delivered`, or `failed` for a failed
    /// or expired message; other updates emit nothing.
    pub(crate) fn emit_delivery(&self, verification: &Verification, status: MessageStatus) {
        match status {
            MessageStatus::Delivered => self.emit_webhook(EventType::Delivered, verification),
            MessageStatus::Failed | MessageStatus::Expired => {
                self.emit_webhook(EventType::Failed, verification);
            }
            MessageStatus::Queued | MessageStatus::Sent => {}
        }
    }

    /// Emits `event` (`case.created`, `case.updated`) about `case`.
    pub(crate) fn emit_case(&self, event: EventType, case: &Case) {
        self.emit(&case.tenant_id, event, case_data(case));
    }

    /// Emits `event` with `data` to the tenant's subscriptions that want it.
    pub(crate) fn emit(&self, tenant_id: &str, event: EventType, data: Json) {
        let queued = self.subscriptions(tenant_id).and_then(|all| {
            let wanted: Vec<Subscription> = all
                .iter()
                .filter(|subscription| subscription.enabled && subscription.wants(event))
                .cloned()
                .collect();
            self.queue_event(tenant_id, event, data, &wanted)
        });
        match queued {
            Ok(deliveries) if deliveries.is_empty() => {}
            Ok(_) => self.replica.webhooks.wake(),
            Err(err) => tracing::error!(
                tenant = %tenant_id,
                event = event.as_str(),
                error = %err,
                "webhook event not queued"
            ),
        }
    }

    /// Writes one delivery of `event` per subscription, due now, under one message id.
    pub(crate) fn queue_event(
        &self,
        tenant_id: &str,
        event: EventType,
        data: Json,
        subscriptions: &[Subscription],
    ) -> Result<Vec<Delivery>, FlowError> {
        if subscriptions.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        let payload = json!({
            "type": event.as_str(),
            "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": data,
        })
        .to_string();
        let message_id = new_id("msg");
        let mut queued = Vec::with_capacity(subscriptions.len());
        for subscription in subscriptions {
            let delivery = Delivery {
                id: delivery_id(now),
                message_id: message_id.clone(),
                tenant_id: tenant_id.to_owned(),
                subscription_id: subscription.id.clone(),
                event_type: event.as_str().to_owned(),
                payload: payload.clone(),
                status: DeliveryStatus::Pending,
                attempts: Vec::new(),
                next_attempt_at: Some(now),
                last_error: None,
                created_at: now,
                updated_at: now,
            };
            self.db.put(
                Tree::WebhookDeliveries,
                &delivery_key(tenant_id, &subscription.id, &delivery.id),
                &delivery,
            )?;
            self.db.put(
                Tree::WebhookQueue,
                &queue_key(now, &delivery.id),
                &QueueRef {
                    tenant_id: tenant_id.to_owned(),
                    subscription_id: subscription.id.clone(),
                    delivery_id: delivery.id.clone(),
                },
            )?;
            queued.push(delivery);
        }
        Ok(queued)
    }
}
