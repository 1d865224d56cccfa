//! Records the host keeps: tenants, API keys, verifications and their parts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod rules;

use crate::otp::CodeState;
use crate::phone::risk::RiskAssessment;
use crate::phone::LineType;
use crate::warnings::{RiskAction, Warning};

use self::rules::RuleRun;

/// A tenant: one customer of the host, owning keys, settings and verifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// An API key; the secret itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// The first characters of the secret, to recognise a key in a list.
    pub prefix: String,
    pub hash: String,
    pub created_at: DateTime<Utc>,
}

/// A delivery channel for codes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Sms,
    #[serde(alias = "call")]
    Voice,
    Whatsapp,
    Viber,
    Telegram,
}

impl Channel {
    /// The channel named `name` (`sms`, `whatsapp`, `voice`, ...).
    pub fn parse(name: &str) -> Option<Channel> {
        serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
    }

    /// The request spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Voice => "voice",
            Channel::Whatsapp => "whatsapp",
            Channel::Viber => "viber",
            Channel::Telegram => "telegram",
        }
    }

    /// The report's `verification_method` spelling (a voice call is `call`).
    pub fn report_method(self) -> &'static str {
        match self {
            Channel::Voice => "call",
            other => other.as_str(),
        }
    }
}

/// What the tenant's app says became of a verification (conversion feedback): the
/// user proved the number (`verified`, e.g. the code was checked elsewhere or sign-up
/// completed), never did (`not_verified`), or the traffic was fraud (`fraud`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackOutcome {
    Verified,
    NotVerified,
    Fraud,
}

impl FeedbackOutcome {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackOutcome::Verified => "verified",
            FeedbackOutcome::NotVerified => "not_verified",
            FeedbackOutcome::Fraud => "fraud",
        }
    }
}

/// The latest feedback on a verification, and how many changes of it were reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Feedback {
    pub outcome: FeedbackOutcome,
    pub at: DateTime<Utc>,
    pub reports: u32,
}

/// The overall status of a verification, as the report names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ReportStatus {
    Approved,
    Declined,
    #[serde(rename = "In Review")]
    InReview,
    #[serde(rename = "Not Finished")]
    NotFinished,
}

impl ReportStatus {
    /// Whether the verification can still change (codes sent, checked).
    pub fn is_open(self) -> bool {
        self == ReportStatus::NotFinished
    }
}

/// What was learned about a number when a verification started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhoneFacts {
    pub e164: String,
    pub calling_code: u32,
    pub national_number: String,
    pub region: Option<String>,
    pub line_type: LineType,
    pub carrier_name: Option<String>,
    pub is_disposable: bool,
    /// What a lookup adapter said about the line; empty when none was asked (and then
    /// not stored).
    #[serde(default, skip_serializing_if = "LineSignals::is_empty")]
    pub line: LineSignals,
}

/// What a lookup adapter reported about a line. Absent values are unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineSignals {
    /// The adapter that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_carrier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ported: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ported_days_ago: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim_swap_days_ago: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sim_change: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roaming: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepaid: Option<bool>,
    /// Why the adapter gave no answer, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl LineSignals {
    /// Whether no adapter said anything (nothing to store).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl PhoneFacts {
    /// Virtual for the report: a VoIP or personal (virtual) number.
    pub fn is_virtual(&self) -> bool {
        matches!(self.line_type, LineType::Voip | LineType::Virtual)
    }
}

/// One phone verification of an applicant. Empty lists and absent values of the
/// later parts are not stored (they read back as empty), which keeps the record, written
/// several times a flow, small.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub id: String,
    pub tenant_id: String,
    pub applicant_id: Option<String>,
    pub phone: PhoneFacts,
    /// The channel of the last send; `None` for a verification decided by lookup alone.
    pub channel: Option<Channel>,
    pub language: String,
    pub status: ReportStatus,
    pub otp_verified: bool,
    pub code: CodeState,
    /// Codes sent for this verification.
    pub sends: u32,
    pub risk: RiskAssessment,
    pub warnings: Vec<Warning>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub verified_at: Option<DateTime<Utc>>,
    /// The audit trail: every trigger fired for this verification, in order, with the
    /// rules that ran. It is stored with the verification.
    #[serde(default)]
    pub events: Vec<AuditEvent>,
    /// Flags set by rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// Decisions of rules (and of failed rules, per the tenant's failure setting).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<Decision>,
    /// Cases rules opened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cases: Vec<CaseRef>,
    /// Information rules asked the applicant for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub info_requested: Vec<String>,
    /// The channel a rule requires a code on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otp_required: Option<Channel>,
    /// The provider a rule routed sends to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Providers rules forbade (`route` actions naming `!provider`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub avoided_routes: Vec<String>,
    /// The send's channel workflow, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_workflow: Option<ChannelWorkflow>,
    /// Delivery updates of the code messages, in arrival order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<DeliveryEvent>,
    /// A person's decision on a verification that was In Review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<Review>,
    /// The last code message sent: its template, brand, locale and SMS encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<CodeMessage>,
    /// The applicant's country (ISO alpha-2) the client gave with the send, for the
    /// rules of later triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applicant_country: Option<String>,
    /// The outcome the tenant's app reported for this verification, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Feedback>,
    /// The fraud signals the send's triggers see; worked out per request, never
    /// stored.
    #[serde(skip)]
    pub fraud: Option<rules::FraudSignals>,
    /// The code messages sent, for analytics: the first (whose choices the
    /// verification's conversion is counted under) and the latest ones, up to
    /// [`MAX_SENT_KEPT`] in all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent: Vec<SentCode>,
}

/// Code messages a verification keeps in [`Verification::sent`].
pub const MAX_SENT_KEPT: usize = 8;

/// One code message as analytics counts it: when it went, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentCode {
    pub message_id: String,
    pub at: DateTime<Utc>,
    pub channel: Channel,
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    pub locale: String,
}

impl Verification {
    /// Keeps `sent` among the verification's sent messages: the first always, then the
    /// latest, up to [`MAX_SENT_KEPT`].
    pub fn note_sent(&mut self, sent: SentCode) {
        if self.sent.len() >= MAX_SENT_KEPT {
            self.sent.remove(1);
        }
        self.sent.push(sent);
    }
}

/// What the report tells about the last code message of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CodeMessage {
    /// The tenant's template the text came from; `None` for the built-in text.
    pub template_id: Option<String>,
    /// The brand the send named.
    pub brand_id: Option<String>,
    /// The locale of the text: the template variant's (`pt-br`), or the built-in
    /// text's language.
    pub locale: String,
    pub channel: Channel,
    /// `GSM-7` or `UCS-2`: how an SMS carries the text.
    pub encoding: crate::messages::Encoding,
    /// The SMS segments the text takes.
    pub segments: u32,
}

/// What a reviewer decided about a verification In Review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReviewDecision {
    Approve,
    Decline,
}

impl ReviewDecision {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewDecision::Approve => "approve",
            ReviewDecision::Decline => "decline",
        }
    }

    /// The status the decision gives the verification.
    pub fn status(self) -> ReportStatus {
        match self {
            ReviewDecision::Approve => ReportStatus::Approved,
            ReviewDecision::Decline => ReportStatus::Declined,
        }
    }
}

/// A reviewer's decision, recorded on the verification and shown on its report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Review {
    pub decision: ReviewDecision,
    pub note: String,
    pub reviewer: Option<String>,
    pub decided_at: DateTime<Utc>,
}

/// One step of a channel workflow: send on `channel`, and if the code is not
/// verified within `timeout_seconds`, go on to the next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowStep {
    pub channel: Channel,
    #[serde(default = "default_step_timeout")]
    pub timeout_seconds: u32,
}

fn default_step_timeout() -> u32 {
    60
}

/// An ordered fallback of channels (e.g. sms → whatsapp → voice) and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChannelWorkflow {
    pub steps: Vec<WorkflowStep>,
    /// The step whose code is the active one.
    pub current: u32,
    /// What happened at each step started so far: `sent`, or why it was skipped.
    #[serde(default)]
    pub outcomes: Vec<StepOutcome>,
    /// When the next step starts, while one remains and the code is not verified.
    pub next_step_at: Option<DateTime<Utc>>,
    /// The request's choice of text, so later steps render theirs the same way.
    #[serde(default)]
    pub choice: MessageChoice,
}

/// What a send asked of its message's text: locale, brand, template, app hash.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageChoice {
    pub locale: Option<String>,
    pub brand_id: Option<String>,
    pub template_id: Option<String>,
    pub app_hash: Option<String>,
}

/// What one started step of a channel workflow did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepOutcome {
    pub step: u32,
    pub channel: Channel,
    pub at: DateTime<Utc>,
    /// `sent` or `failed`.
    pub status: String,
    pub provider: Option<String>,
    pub message_id: Option<String>,
    pub error: Option<String>,
}

/// Where a code message is on its way to the handset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Queued,
    Sent,
    Delivered,
    Failed,
    Expired,
}

impl DeliveryStatus {
    /// The status an adapter's delivery update names (`expired` for anything else).
    pub fn from_update(name: &str) -> Self {
        match name {
            "queued" => DeliveryStatus::Queued,
            "sent" => DeliveryStatus::Sent,
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            _ => DeliveryStatus::Expired,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Expired => "expired",
        }
    }
}

/// A delivery update of one code message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryEvent {
    pub message_id: String,
    pub status: DeliveryStatus,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

impl Verification {
    /// The strongest of the warnings' actions and the rules' decisions.
    pub fn verdict(&self) -> RiskAction {
        crate::warnings::strongest(&self.warnings).max(
            self.decisions
                .iter()
                .map(|decision| decision.action)
                .max()
                .unwrap_or(RiskAction::Approve),
        )
    }

    /// The final status the verdict gives a verification that is done.
    pub fn final_status(&self) -> ReportStatus {
        match self.verdict() {
            RiskAction::Decline => ReportStatus::Declined,
            RiskAction::Review => ReportStatus::InReview,
            RiskAction::Approve => ReportStatus::Approved,
        }
    }
}

/// A rule's decision on a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Decision {
    pub action: RiskAction,
    pub reason: Option<String>,
    /// The rule plugin that decided.
    pub plugin: String,
    pub trigger: String,
}

/// A case opened for a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CaseRef {
    pub case_id: String,
    pub case_type: String,
    pub priority: String,
    pub title: String,
}

/// Where a case is in its work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    #[default]
    Open,
    InProgress,
    Resolved,
}

impl CaseStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseStatus::Open => "open",
            CaseStatus::InProgress => "in_progress",
            CaseStatus::Resolved => "resolved",
        }
    }

    /// The status named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            CaseStatus::Open,
            CaseStatus::InProgress,
            CaseStatus::Resolved,
        ]
        .into_iter()
        .find(|status| status.as_str() == name)
    }
}

/// A note on a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CaseNote {
    pub at: DateTime<Utc>,
    /// Who wrote it: the patch's `author`, else the case's assignee, else unknown.
    pub author: Option<String>,
    pub text: String,
}

/// One change to a case: who changed which field from what to what, and when. A note
/// is recorded as a change of `notes` with the note's text as `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CaseChange {
    pub at: DateTime<Utc>,
    pub by: Option<String>,
    /// `assignee`, `status` or `notes`.
    pub field: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// The priorities a case can have, lowest first.
pub const CASE_PRIORITIES: [&str; 4] = ["low", "medium", "high", "critical"];

/// A case for people to work, opened by a rule. Fields added after the first release
/// default, so cases stored before them still load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Case {
    pub id: String,
    pub tenant_id: String,
    pub verification_id: Option<String>,
    pub phone: String,
    pub applicant_id: Option<String>,
    pub case_type: String,
    pub priority: String,
    pub title: String,
    pub status: CaseStatus,
    pub flags: Vec<String>,
    /// The rule plugin that opened it.
    pub opened_by: String,
    pub created_at: DateTime<Utc>,
    /// Who works the case; `None` while unassigned.
    #[serde(default)]
    pub assignee: Option<String>,
    #[serde(default)]
    pub notes: Vec<CaseNote>,
    /// Every change made to the case, oldest first.
    #[serde(default)]
    pub history: Vec<CaseChange>,
    /// The last change; `None` for a case never changed (its creation time stands).
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
    /// When it was last resolved; `None` while not resolved.
    #[serde(default)]
    pub resolved_at: Option<DateTime<Utc>>,
}

/// What the host keeps per tenant, number and applicant: the latest verification and
/// the times of recent sends (for the resend limit, which spans verifications).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicantNumber {
    pub verification_id: Option<String>,
    pub sends: Vec<DateTime<Utc>>,
}

/// Failed code entries for one number of a tenant, across its verifications and
/// applicants (tree `guess_budgets`): the guess budget's count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuessLog {
    /// Failures of the last 24 hours, oldest first; at most the budget's maximum.
    pub failures: Vec<GuessFailure>,
}

/// One counted code entry: charged before the code is checked, so concurrent
/// entries cannot all pass a budget that has one guess left; refunded when the
/// entry turns out not to have checked a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuessFailure {
    pub at: DateTime<Utc>,
    /// Tells this entry's charge apart from others at the same instant.
    pub ticket: u64,
}

/// A number on a tenant's blocklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BlockedNumber {
    pub phone: String,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The applicant a number was first verified for, per tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedOwner {
    pub applicant_id: String,
    pub verification_id: String,
    pub verified_at: DateTime<Utc>,
}

/// An entry of a verification's audit trail: a trigger that fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    pub trigger: String,
    pub status: ReportStatus,
    pub detail: Option<String>,
    /// The rules that ran at this trigger: their actions or failures, fuel and time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleRun>,
}
