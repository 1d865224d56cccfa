//! Records the host keeps: tenants, API keys, verifications and their parts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::otp::CodeState;
use crate::phone::risk::RiskAssessment;
use crate::phone::LineType;
use crate::warnings::Warning;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// The overall status of a verification, as the report names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl PhoneFacts {
    /// Virtual for the report: a VoIP or personal (virtual) number.
    pub fn is_virtual(&self) -> bool {
        matches!(self.line_type, LineType::Voip | LineType::Virtual)
    }
}

/// One phone verification of an applicant.
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
    /// The audit trail: every trigger fired for this verification, in order. It is
    /// stored with the verification, so recording it costs no extra write.
    #[serde(default)]
    pub events: Vec<AuditEvent>,
}

/// What the host keeps per tenant, number and applicant: the latest verification and
/// the times of recent sends (for the resend limit, which spans verifications).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicantNumber {
    pub verification_id: Option<String>,
    pub sends: Vec<DateTime<Utc>>,
}

/// A number on a tenant's blocklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    pub trigger: String,
    pub status: ReportStatus,
    pub detail: Option<String>,
}
