//! Validation and passive lookup of numbers.

use serde::{Deserialize, Serialize};

use crate::model::{PhoneFacts, ReportStatus};
use crate::phone::risk::RiskAssessment;
use crate::phone::{self, InvalidReason};
use crate::store::{key, Tree};
use crate::warnings::{self, RiskAction, Warning};

use super::analysis::{parse_country, parse_valid};
use super::triggers::{Trigger, TriggerEvent};
use super::{Caller, Engine, FlowError};

/// Body of `POST /v1/phone/validate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    pub phone: String,
    pub country: Option<String>,
}

/// The validation block.
#[derive(Debug, Serialize)]
pub struct Validation {
    pub valid: bool,
    pub formatted_e164: Option<String>,
    pub formatted_national: Option<String>,
    pub formatted_international: Option<String>,
    pub country_code: Option<String>,
    pub country: Option<String>,
    #[serde(rename = "type")]
    pub line_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<InvalidReason>,
}

/// Answer of `POST /v1/phone/validate`.
#[derive(Debug, Serialize)]
pub struct ValidateResponse {
    pub phone: String,
    pub validation: Validation,
}

/// Body of `POST /v1/phone/lookup`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    pub phone: String,
    pub applicant_id: Option<String>,
    pub applicant_country: Option<String>,
}

/// Carrier block of a lookup.
#[derive(Debug, Serialize)]
pub struct CarrierView {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub carrier_type: &'static str,
    /// True while `name` is the operator the range was allocated to, not a confirmed current one.
    pub original_operator: bool,
}

/// Location block of a lookup.
#[derive(Debug, Serialize)]
pub struct LocationView {
    pub country: Option<String>,
    pub country_code: String,
    /// Sub-national region; needs a geocoding source, so `null` for now.
    pub region: Option<String>,
}

/// Answer of `POST /v1/phone/lookup`.
#[derive(Debug, Serialize)]
pub struct LookupResponse {
    pub phone: String,
    pub valid: bool,
    #[serde(rename = "type")]
    pub line_type: &'static str,
    pub carrier: CarrierView,
    pub location: LocationView,
    pub risk_assessment: RiskAssessment,
    /// `active`, `inactive` or `unknown`; only a lookup adapter can say more than `unknown`.
    pub line_status: &'static str,
    pub ported: Option<bool>,
    pub roaming: Option<bool>,
    pub warnings: Vec<Warning>,
    /// Set when the tenant does not require OTP and the lookup decided a verification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ReportStatus>,
}

impl Engine {
    /// Validates a number's format.
    pub fn validate(&self, request: ValidateRequest) -> Result<ValidateResponse, FlowError> {
        let parsed = phone::parse(&request.phone, request.country.as_deref())
            .map_err(|err| FlowError::invalid("country", err.to_string()))?;
        let validation = match parsed {
            Ok(number) => Validation {
                valid: number.is_valid(),
                line_type: number.is_valid().then_some(number.line_type.as_str()),
                formatted_national: Some(number.formatted_national()),
                formatted_international: Some(number.formatted_international()),
                formatted_e164: Some(number.e164),
                country_code: Some(number.calling_code.to_string()),
                country: number.region,
                reason: number.invalid_reason,
            },
            Err(reason) => Validation {
                valid: false,
                formatted_e164: None,
                formatted_national: None,
                formatted_international: None,
                country_code: None,
                country: None,
                line_type: None,
                reason: Some(reason),
            },
        };
        Ok(ValidateResponse {
            phone: request.phone,
            validation,
        })
    }

    /// Looks a number up without sending anything.
    pub async fn lookup(
        &self,
        caller: &Caller,
        request: LookupRequest,
    ) -> Result<LookupResponse, FlowError> {
        let number = parse_valid(&request.phone, "phone")?;
        let applicant_country =
            parse_country(request.applicant_country.as_deref(), "applicant_country")?;
        let applicant_id = request
            .applicant_id
            .as_deref()
            .map(check_applicant)
            .transpose()?;
        let tenant_id = caller.tenant_id.as_str();
        let settings = self.settings(tenant_id)?;
        let analysis = self.analyse(
            tenant_id,
            &settings,
            number,
            applicant_id,
            applicant_country.as_deref(),
        )?;
        let now = self.clock.now();

        let mut decided = None;
        if let (false, Some(applicant)) = (settings.require_otp, applicant_id) {
            let status = decide_without_otp(&analysis.warnings);
            let mut verification = analysis.start_verification(
                tenant_id,
                Some(applicant),
                settings.max_otp_attempts,
                now,
            );
            verification.status = status;
            verification.verified_at = (status != ReportStatus::Declined).then_some(now);
            decided = Some(verification);
        }
        let mut trail = Vec::new();
        for trigger in [Trigger::PhoneLookupComplete, Trigger::VerificationCompleted] {
            if trigger == Trigger::VerificationCompleted && decided.is_none() {
                continue;
            }
            self.fire(
                &mut trail,
                &TriggerEvent {
                    trigger,
                    tenant_id,
                    verification_id: decided.as_ref().map(|v| v.id.as_str()),
                    phone: &analysis.number.e164,
                    applicant_id,
                    status: decided
                        .as_ref()
                        .map_or(ReportStatus::NotFinished, |v| v.status),
                    detail: None,
                    at: now,
                },
            )?;
        }
        let (verification_id, status) = match decided {
            Some(mut verification) => {
                verification.events = trail;
                self.db.put(
                    Tree::Verifications,
                    &Engine::verification_key(tenant_id, &verification.id),
                    &verification,
                )?;
                let index_key = key(&[
                    tenant_id,
                    &verification.phone.e164,
                    applicant_id.unwrap_or(""),
                ]);
                self.record_in_index(&index_key, &verification.id, None)?;
                if verification.status != ReportStatus::Declined {
                    self.record_owner(tenant_id, &verification)?;
                }
                self.db.sync().await?;
                (Some(verification.id), Some(verification.status))
            }
            None => (None, None),
        };
        Ok(lookup_response(
            &analysis.facts(),
            analysis.risk,
            analysis.warnings,
            verification_id,
            status,
        ))
    }
}

/// The status of a verification decided by lookup alone.
fn decide_without_otp(warnings: &[Warning]) -> ReportStatus {
    match warnings::strongest(warnings) {
        RiskAction::Decline => ReportStatus::Declined,
        RiskAction::Review => ReportStatus::InReview,
        RiskAction::Approve => ReportStatus::Approved,
    }
}

/// Applicant ids are opaque to the host but bounded and free of control characters.
pub(crate) fn check_applicant(id: &str) -> Result<&str, FlowError> {
    if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control() || c == '/') {
        return Err(FlowError::invalid(
            "applicant_id",
            "must be 1 to 128 characters without control characters or '/'",
        ));
    }
    Ok(id)
}

pub(crate) fn lookup_response(
    facts: &PhoneFacts,
    risk: RiskAssessment,
    warnings: Vec<Warning>,
    verification_id: Option<String>,
    status: Option<ReportStatus>,
) -> LookupResponse {
    LookupResponse {
        phone: facts.e164.clone(),
        valid: true,
        line_type: facts.line_type.as_str(),
        carrier: CarrierView {
            name: facts.carrier_name.clone(),
            carrier_type: facts.line_type.carrier_type(),
            original_operator: facts.carrier_name.is_some(),
        },
        location: LocationView {
            country: facts.region.clone(),
            country_code: facts.calling_code.to_string(),
            region: None,
        },
        risk_assessment: risk,
        line_status: "unknown",
        ported: None,
        roaming: None,
        warnings,
        verification_id,
        status,
    }
}
