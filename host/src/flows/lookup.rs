//! Validation and passive lookup of numbers.

use serde::{Deserialize, Serialize};

use crate::model::{ApplicantNumber, CaseRef, Channel, Decision, ReportStatus, Verification};
use crate::phone::risk::RiskAssessment;
use crate::phone::{self, InvalidReason};
use crate::store::Tree;
use crate::warnings::{Risk, RiskAction, Warning};

use crate::flows::rules::triggers::{Firing, Trigger};
use crate::flows::verification::analysis::{parse_country, parse_valid};
use crate::flows::{Caller, Engine, FlowError};

/// Body of `POST /v1/phone/validate`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    pub phone: String,
    pub country: Option<String>,
}

/// The validation block.
#[derive(Debug, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ValidateResponse {
    pub phone: String,
    pub validation: Validation,
}

/// Body of `POST /v1/phone/lookup`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    pub phone: String,
    pub applicant_id: Option<String>,
    pub applicant_country: Option<String>,
}

/// Carrier block of a lookup.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CarrierView {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub carrier_type: &'static str,
    /// True while `name` is the operator the range was allocated to, not a confirmed current one.
    pub original_operator: bool,
}

/// Location block of a lookup.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LocationView {
    pub country: Option<String>,
    pub country_code: String,
    /// Sub-national region; needs a geocoding source, so `null` for now.
    pub region: Option<String>,
}

/// The lookup adapter block of a lookup.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdapterView {
    pub name: String,
    pub error: Option<String>,
}

/// The SIM-swap block of a lookup.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SimSwapView {
    /// The date of the last SIM change.
    pub last_sim_change: String,
    pub days_since_change: Option<u32>,
}

/// Answer of `POST /v1/phone/lookup`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LookupResponse {
    pub phone: String,
    pub valid: bool,
    #[serde(rename = "type")]
    pub line_type: &'static str,
    pub carrier: CarrierView,
    pub location: LocationView,
    pub risk_assessment: RiskAssessment,
    /// `active`, `inactive` or `unknown`; only a lookup adapter can say more than `unknown`.
    pub line_status: String,
    pub ported: Option<bool>,
    pub roaming: Option<bool>,
    /// The tenant's lookup adapter that was asked, and why it gave no answer if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lookup_adapter: Option<AdapterView>,
    /// The last SIM change, when the tenant's lookup adapter knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sim_swap: Option<SimSwapView>,
    pub warnings: Vec<Warning>,
    /// Flags rules set.
    pub flags: Vec<String>,
    /// Rules' decisions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<Decision>,
    /// Cases rules opened.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cases: Vec<CaseRef>,
    /// Information rules ask the applicant for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub info_requested: Vec<String>,
    /// The channel a rule requires a code on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otp_required: Option<Channel>,
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

    /// Checks a lookup's input and analyses the number for the tenant: parse, the
    /// tenant's lookup adapter, classification, score and warnings. Shared by the
    /// lookup flow and the workflow-rule test, which stores nothing.
    /// `limited_for`, the caller's IP, takes the request from the tenant's lookup rate
    /// limits before the tenant's lookup adapter is asked anything.
    pub(crate) async fn look_up<'a>(
        &self,
        tenant_id: &str,
        phone: &str,
        applicant_id: Option<&'a str>,
        applicant_country: Option<&str>,
        limited_for: Option<&str>,
    ) -> Result<Looked<'a>, FlowError> {
        let number = parse_valid(phone, "phone")?;
        let applicant_country = parse_country(applicant_country, "applicant_country")?;
        let applicant_id = applicant_id.map(check_applicant).transpose()?;
        let settings = self.settings(tenant_id)?;
        if let Some(ip) = limited_for {
            self.check_limits(
                tenant_id,
                "lookup",
                &settings.rate_limits.lookup,
                &number.e164,
                ip,
            )?;
        }
        let line = self.line_signals(tenant_id, &settings, &number.e164).await;
        let analysis = self.analyse(
            tenant_id,
            &settings,
            number,
            applicant_id,
            applicant_country.as_deref(),
            line,
        )?;
        Ok(Looked {
            settings,
            analysis,
            applicant_id,
            applicant_country,
        })
    }

    /// Looks a number up without sending anything. When the tenant does not require a
    /// code and the lookup names an applicant, the lookup decides a verification on its
    /// own, unless a rule requires a code, which leaves the verification open for one.
    pub async fn lookup(
        &self,
        caller: &Caller,
        request: LookupRequest,
    ) -> Result<LookupResponse, FlowError> {
        let tenant_id = caller.tenant_id.as_str();
        let Looked {
            settings,
            analysis,
            applicant_id,
            applicant_country,
        } = self
            .look_up(
                tenant_id,
                &request.phone,
                request.applicant_id.as_deref(),
                request.applicant_country.as_deref(),
                Some(&caller.client_ip),
            )
            .await?;
        let now = self.clock.now();
        let auto = !settings.require_otp && applicant_id.is_some();
        let index_key =
            self.db
                .applicant_key(tenant_id, &analysis.number.e164, applicant_id.unwrap_or(""))?;
        if auto {
            // A decision already made for this number and applicant holds: the lookup
            // answers it instead of deciding anew.
            if let Some(held) = self.held_decision(tenant_id, &index_key)? {
                let status = held.status;
                return Ok(lookup_response(&held, Some(held.id.clone()), Some(status)));
            }
        }
        let mut verification =
            analysis.start_verification(tenant_id, applicant_id, settings.max_otp_attempts, now);
        let mut trail = Vec::new();
        let firing = |trigger| Firing {
            trigger,
            stored: auto,
            applicant_country: applicant_country.as_deref(),
            resends: 0,
            at: now,
        };
        let fired = self
            .fire(
                &mut trail,
                firing(Trigger::PhoneLookupComplete),
                None,
                &mut verification,
                &settings,
            )
            .await?;
        if !auto {
            return Ok(lookup_response(&verification, None, None));
        }
        let needs_code = fired.otp_channel.is_some() && fired.blocked.is_none();
        if !needs_code {
            verification.status = verification.final_status();
            verification.verified_at =
                (verification.status != ReportStatus::Declined).then_some(now);
            self.fire(
                &mut trail,
                firing(Trigger::VerificationCompleted),
                None,
                &mut verification,
                &settings,
            )
            .await?;
            // A rule at completion may still decline or send to review.
            verification.status = verification.final_status();
            if verification.status == ReportStatus::Declined {
                verification.verified_at = None;
            }
        }
        verification.events = trail;
        self.db.put(
            Tree::Verifications,
            &Engine::verification_key(tenant_id, &verification.id),
            &verification,
        )?;
        self.record_in_index(&index_key, &verification.id, None)?;
        if !verification.status.is_open() && verification.status != ReportStatus::Declined {
            self.record_owner(tenant_id, &verification)?;
        }
        self.emit_outcome(&verification);
        self.db.sync().await?;
        let status = verification.status;
        Ok(lookup_response(
            &verification,
            Some(verification.id.clone()),
            Some(status),
        ))
    }
}

/// A lookup's input, checked, and the number analysed for the tenant.
pub(crate) struct Looked<'a> {
    pub settings: std::sync::Arc<crate::settings::PhoneSettings>,
    pub analysis: crate::flows::verification::analysis::Analysis,
    pub applicant_id: Option<&'a str>,
    pub applicant_country: Option<String>,
}

impl Engine {
    /// The verification the number and applicant of `index_key` point at, when its
    /// decision holds against a new send or lookup (see [`decision_holds`]).
    pub(crate) fn held_decision(
        &self,
        tenant_id: &str,
        index_key: &[u8],
    ) -> Result<Option<Verification>, FlowError> {
        let entry: Option<ApplicantNumber> = self.db.get(Tree::VerificationIndex, index_key)?;
        self.held_decision_of(tenant_id, entry.as_ref())
    }

    /// [`Engine::held_decision`] for an index entry already read.
    pub(crate) fn held_decision_of(
        &self,
        tenant_id: &str,
        entry: Option<&ApplicantNumber>,
    ) -> Result<Option<Verification>, FlowError> {
        let Some(id) = entry.and_then(|entry| entry.verification_id.as_deref()) else {
            return Ok(None);
        };
        let verification: Option<Verification> = self.db.get(
            Tree::Verifications,
            &Engine::verification_key(tenant_id, id),
        )?;
        Ok(verification.filter(decision_holds))
    }
}

/// Whether a closed verification's decision holds for its number and applicant, so
/// that a new send or lookup answers it rather than starting another: a decline by
/// policy (a declining warning other than too many wrong codes, a rule's decline, a
/// reviewer's) and a verification waiting in review. An approval does not hold (the
/// applicant may be verified again), nor does a decline for wrong codes alone (a new
/// code may be sent; the number's guess budget bounds the guessing).
pub(crate) fn decision_holds(verification: &Verification) -> bool {
    match verification.status {
        ReportStatus::InReview => true,
        ReportStatus::Declined => {
            verification.review.is_some()
                || verification
                    .decisions
                    .iter()
                    .any(|decision| decision.action == RiskAction::Decline)
                || verification.warnings.iter().any(|warning| {
                    warning.action == RiskAction::Decline
                        && warning.risk != Risk::VerificationCodeAttemptsExceeded
                })
        }
        ReportStatus::Approved | ReportStatus::NotFinished => false,
    }
}

/// The end user's IP for the per-IP limits: the request's `client_ip`, which must be
/// an IP address (its canonical text is used, so one address is one bucket), else the
/// peer's address.
pub(crate) fn client_ip(given: Option<&str>, peer: &str) -> Result<String, FlowError> {
    let Some(given) = given else {
        return Ok(peer.to_owned());
    };
    let ip: std::net::IpAddr = given.trim().parse().map_err(|_| {
        FlowError::invalid(
            "client_ip",
            "must be an IP address such as 203.0.113.7 or 2001:db8::7",
        )
    })?;
    Ok(ip.to_canonical().to_string())
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

/// The lookup answer for the (possibly unstored) verification a lookup built.
pub(crate) fn lookup_response(
    verification: &Verification,
    verification_id: Option<String>,
    status: Option<ReportStatus>,
) -> LookupResponse {
    let facts = &verification.phone;
    let line = &facts.line;
    LookupResponse {
        phone: facts.e164.clone(),
        valid: true,
        line_type: facts.line_type.as_str(),
        carrier: CarrierView {
            name: line
                .current_carrier
                .clone()
                .or_else(|| facts.carrier_name.clone()),
            carrier_type: facts.line_type.carrier_type(),
            original_operator: line.current_carrier.is_none() && facts.carrier_name.is_some(),
        },
        location: LocationView {
            country: facts.region.clone(),
            country_code: facts.calling_code.to_string(),
            region: None,
        },
        risk_assessment: verification.risk.clone(),
        line_status: line
            .line_status
            .clone()
            .unwrap_or_else(|| "unknown".to_owned()),
        ported: line.ported,
        roaming: line.roaming,
        lookup_adapter: line.source.clone().map(|name| AdapterView {
            name,
            error: line.error.clone(),
        }),
        sim_swap: line.last_sim_change.map(|at| SimSwapView {
            last_sim_change: at.date_naive().to_string(),
            days_since_change: line.sim_swap_days_ago,
        }),
        warnings: verification.warnings.clone(),
        flags: verification.flags.clone(),
        decisions: verification.decisions.clone(),
        cases: verification.cases.clone(),
        info_requested: verification.info_requested.clone(),
        otp_required: verification.otp_required,
        verification_id,
        status,
    }
}
