//! The verification report (`GET /v1/verifications/{id}`).
//!
//! Where the report's source document contradicts itself, the choices are: `country_code`
//! is the ISO 3166-1 alpha-2 code (as its type definition says) because the dialling code
//! already has its own field, `phone_number_prefix` (e.g. `+1`); a voice call is reported
//! as `call`; `verified_at` is `null` until a code was verified; and
//! `verification_attempts` counts code entries.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::rules::RuleRun;
use crate::model::{
    AuditEvent, CaseRef, Channel, ChannelWorkflow, CodeMessage, Decision, DeliveryEvent,
    DeliveryStatus, ReportStatus, Review, Verification,
};
use crate::phone::countries;
use crate::phone::risk::RiskAssessment;
use crate::warnings::Warning;

use crate::flows::messaging::routed::{MessageRecord, StatusChange};
use crate::flows::{Caller, Engine, FlowError};

/// The provider name of the dev outbox's messages on a report.
const DEV_OUTBOX: &str = "dev-outbox";

/// Carrier block of the report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReportCarrier {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub carrier_type: &'static str,
}

/// The `phone` object of the report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PhoneReport {
    pub status: ReportStatus,
    pub phone_number_prefix: String,
    pub phone_number: String,
    pub full_number: String,
    pub country_code: Option<String>,
    pub country_iso3: Option<&'static str>,
    pub country_name: Option<&'static str>,
    pub carrier: ReportCarrier,
    pub is_disposable: bool,
    pub is_virtual: bool,
    pub verification_method: Option<&'static str>,
    pub verification_attempts: u32,
    pub warnings: Vec<Warning>,
    pub verified_at: Option<DateTime<Utc>>,
}

/// The report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Report {
    pub verification_id: String,
    pub applicant_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub phone: PhoneReport,
    /// The number's score and the factors behind it (rules' `set_risk` included).
    pub risk_assessment: RiskAssessment,
    /// Flags rules set.
    pub flags: Vec<String>,
    /// Rules' decisions (and failed rules' outcomes, per the tenant's setting).
    pub decisions: Vec<Decision>,
    /// Cases rules opened.
    pub cases: Vec<CaseRef>,
    /// Information rules asked the applicant for.
    pub info_requested: Vec<String>,
    /// The channel a rule required a code on.
    pub otp_required: Option<Channel>,
    /// The provider a rule routed sends to.
    pub route: Option<String>,
    /// Providers rules forbade for this verification's sends.
    pub avoided_routes: Vec<String>,
    /// The send's channel workflow and what each started step did.
    pub channel_workflow: Option<ChannelWorkflow>,
    /// Every code message handed (or offered) to a provider: one per attempt, with
    /// its status history (queued, sent, delivered, failed, expired).
    pub messages: Vec<MessageRecord>,
    /// Delivery updates of the code messages.
    pub deliveries: Vec<DeliveryEvent>,
    /// Every rule that ran, at which trigger, with its actions or failure.
    pub rules_fired: Vec<RuleFired>,
    /// A reviewer's decision on the verification, once it was In Review and decided.
    pub review: Option<Review>,
    /// The last code message sent: `template_id` (`null` for the built-in text),
    /// `brand_id`, `locale`, `channel`, `encoding` (`GSM-7` or `UCS-2`) and
    /// `segments`; `null` until a code was sent.
    pub message: Option<CodeMessage>,
    /// The outcome the tenant's app reported (`POST /v1/verifications/{id}/feedback`).
    pub feedback: Option<crate::model::Feedback>,
}

/// One rule run on the report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RuleFired {
    pub trigger: String,
    #[serde(flatten)]
    pub run: RuleRun,
}

impl Engine {
    fn load(&self, caller: &Caller, id: &str) -> Result<Verification, FlowError> {
        self.db
            .get(
                crate::store::Tree::Verifications,
                &Engine::verification_key(&caller.tenant_id, id),
            )?
            .ok_or(FlowError::NotFound("verification"))
    }

    /// The report of one of the caller's verifications.
    pub fn report(&self, caller: &Caller, id: &str) -> Result<Report, FlowError> {
        let verification = self.load(caller, id)?;
        self.full_report(verification)
    }

    /// The report of `verification` with its code messages: those offered to
    /// providers and, in dev mode, those the dev outbox kept.
    pub(crate) fn full_report(&self, verification: Verification) -> Result<Report, FlowError> {
        let mut messages = self.messages_of(&verification.tenant_id, &verification.id)?;
        messages.extend(self.outbox_messages_of(&verification)?);
        messages.sort_by(|a, b| {
            (a.created_at, a.step, a.attempt).cmp(&(b.created_at, b.step, b.attempt))
        });
        let mut report = to_report(verification);
        report.messages = messages;
        Ok(report)
    }

    /// In dev mode, the codes of `verification` the dev outbox kept, as message records
    /// of the `dev-outbox` provider: sent when kept, then each delivery receipt played
    /// for them (`POST /v1/dev/outbox/{id}/delivery`).
    fn outbox_messages_of(
        &self,
        verification: &Verification,
    ) -> Result<Vec<MessageRecord>, FlowError> {
        let Some(outbox) = &self.outbox else {
            return Ok(Vec::new());
        };
        let kept = outbox.list(
            &verification.tenant_id,
            Some(&verification.phone.e164),
            1_000,
        )?;
        Ok(kept
            .into_iter()
            .filter(|message| message.verification_id == verification.id)
            .map(|message| {
                let mut history = vec![StatusChange {
                    status: DeliveryStatus::Sent,
                    at: message.created_at,
                    reason: None,
                }];
                history.extend(
                    verification
                        .deliveries
                        .iter()
                        .filter(|delivery| delivery.message_id == message.id)
                        .map(|delivery| StatusChange {
                            status: delivery.status,
                            at: delivery.at,
                            reason: delivery.reason.clone(),
                        }),
                );
                let last = history
                    .last()
                    .map_or((DeliveryStatus::Sent, message.created_at), |change| {
                        (change.status, change.at)
                    });
                MessageRecord {
                    id: message.id.clone(),
                    verification_id: message.verification_id,
                    provider_id: DEV_OUTBOX.to_owned(),
                    provider: DEV_OUTBOX.to_owned(),
                    channel: Channel::parse(&message.channel).unwrap_or(Channel::Sms),
                    to: message.phone,
                    country: verification.phone.region.clone(),
                    step: 0,
                    attempt: 0,
                    status: last.0,
                    error: None,
                    provider_message_id: Some(message.id),
                    segments: message.segments,
                    cost: 0.0,
                    latency_ms: None,
                    history,
                    created_at: message.created_at,
                    updated_at: last.1,
                    pending_receipts: Vec::new(),
                }
            })
            .collect())
    }

    /// The audit trail of one of the caller's verifications.
    pub fn events(&self, caller: &Caller, id: &str) -> Result<Vec<AuditEvent>, FlowError> {
        Ok(self.load(caller, id)?.events)
    }
}

pub(crate) fn to_report(verification: Verification) -> Report {
    let rules_fired = verification
        .events
        .iter()
        .flat_map(|event| {
            event.rules.iter().map(|run| RuleFired {
                trigger: event.trigger.clone(),
                run: run.clone(),
            })
        })
        .collect();
    let facts = &verification.phone;
    let country = facts.region.as_deref().and_then(countries::by_alpha2);
    Report {
        verification_id: verification.id.clone(),
        applicant_id: verification.applicant_id.clone(),
        created_at: verification.created_at,
        updated_at: verification.updated_at,
        phone: PhoneReport {
            status: verification.status,
            phone_number_prefix: format!("+{}", facts.calling_code),
            phone_number: facts.national_number.clone(),
            full_number: facts.e164.clone(),
            country_code: facts.region.clone(),
            country_iso3: country.and_then(|c| c.alpha3),
            country_name: country.map(|c| c.name),
            carrier: ReportCarrier {
                name: facts.carrier_name.clone(),
                carrier_type: facts.line_type.carrier_type(),
            },
            is_disposable: facts.is_disposable,
            is_virtual: facts.is_virtual(),
            verification_method: verification.channel.map(|c| c.report_method()),
            verification_attempts: verification.code.attempts,
            warnings: verification.warnings,
            verified_at: verification.verified_at,
        },
        risk_assessment: verification.risk,
        flags: verification.flags,
        decisions: verification.decisions,
        cases: verification.cases,
        info_requested: verification.info_requested,
        otp_required: verification.otp_required,
        route: verification.route,
        avoided_routes: verification.avoided_routes,
        channel_workflow: verification.channel_workflow,
        messages: Vec::new(),
        deliveries: verification.deliveries,
        rules_fired,
        review: verification.review,
        message: verification.message,
        feedback: verification.feedback,
    }
}
