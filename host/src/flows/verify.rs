//! `verify-otp`: check a submitted code and settle the verification.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{ApplicantNumber, ReportStatus, Verification, VerifiedOwner};
use crate::otp::CheckOutcome;
use crate::phone::risk::RiskLevel;
use crate::store::{key, Tree};
use crate::warnings::{Risk, RiskAction, Warning};

use super::analysis::parse_valid;
use super::lookup::check_applicant;
use super::triggers::{Firing, Trigger};
use super::{Caller, Engine, FlowError};

/// Body of `POST /v1/phone/verify-otp`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    pub phone: String,
    pub code: String,
    pub applicant_id: Option<String>,
    /// The end user's IP address as the calling app saw it, for per-IP limits.
    pub client_ip: Option<String>,
}

/// The `phone_intelligence` block of a successful check.
#[derive(Debug, Serialize)]
pub struct PhoneIntelligence {
    #[serde(rename = "type")]
    pub line_type: &'static str,
    pub carrier: Option<String>,
    pub country: Option<String>,
    pub risk_score: u8,
    pub risk_level: RiskLevel,
}

/// Answer of `POST /v1/phone/verify-otp`.
#[derive(Debug, Serialize)]
pub struct VerifyResponse {
    pub phone: String,
    /// `verified`, `incorrect_code`, `attempts_exceeded` or `expired`.
    pub verification_status: &'static str,
    pub verification_id: String,
    /// The report status after this check.
    pub status: ReportStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_intelligence: Option<PhoneIntelligence>,
    pub attempts_remaining: u32,
    pub warnings: Vec<Warning>,
}

impl Engine {
    /// Checks a code against the open verification of the number and applicant.
    pub async fn verify_otp(
        &self,
        caller: &Caller,
        request: VerifyRequest,
    ) -> Result<VerifyResponse, FlowError> {
        let tenant_id = caller.tenant_id.as_str();
        let number = parse_valid(&request.phone, "phone")?;
        let applicant_id = request
            .applicant_id
            .as_deref()
            .map(check_applicant)
            .transpose()?;
        let code = request.code.trim();
        let length_ok =
            u8::try_from(code.len()).is_ok_and(|len| crate::otp::CODE_LENGTH_RANGE.contains(&len));
        if !length_ok || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FlowError::invalid("code", "must be 4 to 10 digits"));
        }
        let settings = self.settings(tenant_id)?;
        let ip = request.client_ip.as_deref().unwrap_or(&caller.client_ip);
        self.check_limits(
            tenant_id,
            "verify-otp",
            &settings.rate_limits.verify_otp,
            &number.e164,
            ip,
        )?;
        let index_key = key(&[tenant_id, &number.e164, applicant_id.unwrap_or("")]);
        let entry: Option<ApplicantNumber> = self.db.get(Tree::VerificationIndex, &index_key)?;
        let id = entry
            .and_then(|entry| entry.verification_id)
            .ok_or(FlowError::NotFound(
                "verification for this phone number and applicant",
            ))?;
        let now = self.clock.now();
        // A number verified for another applicant meanwhile is a duplicate now.
        let duplicate = self.duplicate_warning(tenant_id, &settings, &number.e164, applicant_id)?;

        let (verification, outcome) = self.db.update::<Verification, FlowError, _>(
            Tree::Verifications,
            &Engine::verification_key(tenant_id, &id),
            |current| {
                let mut verification = current.ok_or(FlowError::NotFound("verification"))?;
                if !verification.status.is_open() {
                    return Err(FlowError::Conflict {
                        code: "verification_closed",
                        message: format!(
                            "the verification is already completed with status {}; send a new code to start another",
                            status_name(verification.status)
                        ),
                    });
                }
                let outcome = verification.code.check(&self.hasher, &verification.id, code, now);
                verification.updated_at = now;
                match outcome {
                    CheckOutcome::Verified => {
                        verification.otp_verified = true;
                        verification.verified_at = Some(now);
                        if let Some(warning) = duplicate.clone() {
                            if !verification.warnings.iter().any(|w| w.risk == warning.risk) {
                                verification.warnings.push(warning);
                            }
                        }
                        verification.status = verification.final_status();
                    }
                    CheckOutcome::AttemptsExceeded => {
                        verification.status = ReportStatus::Declined;
                        verification.warnings.push(Warning::new(
                            Risk::VerificationCodeAttemptsExceeded,
                            RiskAction::Decline,
                            Some(format!("{} attempts", verification.code.attempts)),
                        ));
                    }
                    CheckOutcome::Incorrect { .. } | CheckOutcome::Expired | CheckOutcome::NoActiveCode => {}
                }
                Ok((Some(verification.clone()), (verification, outcome)))
            },
        )?;

        // The rules run on the settled check; what they change, and the audit trail,
        // go into a second write.
        let label = label_of(outcome);
        let first_status = verification.status;
        let mut working = verification;
        let mut trail = Vec::new();
        let firing = |trigger| Firing {
            trigger,
            stored: true,
            applicant_country: None,
            resends: 0,
            at: now,
        };
        let first = if outcome == CheckOutcome::Verified {
            Trigger::OtpVerified
        } else {
            Trigger::OtpFailed
        };
        self.fire(
            &mut trail,
            firing(first),
            Some(label.to_owned()),
            &mut working,
            &settings,
        )
        .await?;
        settle(&mut working);
        if !working.status.is_open() {
            self.fire(
                &mut trail,
                firing(Trigger::VerificationCompleted),
                Some(label.to_owned()),
                &mut working,
                &settings,
            )
            .await?;
            settle(&mut working);
        }
        let verification = self.db.update::<Verification, FlowError, _>(
            Tree::Verifications,
            &Engine::verification_key(tenant_id, &id),
            |current| {
                let mut stored = current.ok_or(FlowError::NotFound("verification"))?;
                if !stored.status.is_open() && stored.status != first_status {
                    // A concurrent check closed the verification after this one's
                    // first write: its outcome stands. This request's firings stay
                    // on the audit trail.
                    stored.events.extend(trail.iter().cloned());
                    return Ok((Some(stored.clone()), stored));
                }
                let attempts = stored.code.attempts;
                let events = std::mem::take(&mut stored.events);
                stored = working.clone();
                stored.code.attempts = attempts.max(working.code.attempts);
                stored.events = events;
                stored.events.extend(trail.iter().cloned());
                Ok((Some(stored.clone()), stored))
            },
        )?;
        if outcome == CheckOutcome::Verified && verification.status != ReportStatus::Declined {
            self.record_owner(tenant_id, &verification)?;
        }
        self.emit_outcome(&verification);
        if label == "expired" {
            self.emit_webhook(crate::webhooks::EventType::Expired, &verification);
        }
        self.db.sync().await?;

        let verified = outcome == CheckOutcome::Verified;
        Ok(VerifyResponse {
            phone: verification.phone.e164.clone(),
            verification_status: label,
            verification_id: verification.id.clone(),
            status: verification.status,
            verified_at: verification.verified_at.filter(|_| verified),
            phone_intelligence: verified.then(|| PhoneIntelligence {
                line_type: verification.phone.line_type.as_str(),
                carrier: verification.phone.carrier_name.clone(),
                country: verification.phone.region.clone(),
                risk_score: verification.risk.risk_score,
                risk_level: verification.risk.risk_level,
            }),
            attempts_remaining: match outcome {
                CheckOutcome::Incorrect { attempts_remaining } => attempts_remaining,
                _ => 0,
            },
            warnings: verification.warnings,
        })
    }

    /// Remembers the first applicant a number was verified for, for duplicate detection.
    pub(crate) fn record_owner(
        &self,
        tenant_id: &str,
        verification: &Verification,
    ) -> Result<(), FlowError> {
        let (Some(applicant_id), Some(verified_at)) =
            (&verification.applicant_id, verification.verified_at)
        else {
            return Ok(());
        };
        let owner = VerifiedOwner {
            applicant_id: applicant_id.clone(),
            verification_id: verification.id.clone(),
            verified_at,
        };
        self.db.insert_new(
            Tree::VerifiedNumbers,
            &key(&[tenant_id, &verification.phone.e164]),
            &owner,
        )?;
        Ok(())
    }
}

/// The answer's `verification_status` for an outcome.
fn label_of(outcome: CheckOutcome) -> &'static str {
    match outcome {
        CheckOutcome::Verified => "verified",
        CheckOutcome::Incorrect { .. } => "incorrect_code",
        CheckOutcome::AttemptsExceeded => "attempts_exceeded",
        CheckOutcome::Expired | CheckOutcome::NoActiveCode => "expired",
    }
}

/// Applies the rules' verdict after a check: a decline closes the verification (an
/// open one loses its code), a review turns an approval into a review.
fn settle(verification: &mut Verification) {
    match verification.verdict() {
        RiskAction::Decline if verification.status != ReportStatus::Declined => {
            verification.status = ReportStatus::Declined;
            verification.code.active = None;
        }
        RiskAction::Review if verification.status == ReportStatus::Approved => {
            verification.status = ReportStatus::InReview;
        }
        _ => {}
    }
}

pub(crate) fn status_name(status: ReportStatus) -> &'static str {
    match status {
        ReportStatus::Approved => "Approved",
        ReportStatus::Declined => "Declined",
        ReportStatus::InReview => "In Review",
        ReportStatus::NotFinished => "Not Finished",
    }
}
