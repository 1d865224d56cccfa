//! What the host knows about a number for one tenant: classification, original
//! operator, risk score and warnings. Shared by lookup, send and verify.

use chrono::{DateTime, Utc};

use crate::model::{
    BlockedNumber, LineSignals, PhoneFacts, ReportStatus, Verification, VerifiedOwner,
};
use crate::otp::CodeState;
use crate::phone::risk::{self, RiskAssessment, Signals};
use crate::phone::{self, carrier, LineType, PhoneNumber};
use crate::settings::PhoneSettings;
use crate::store::{key, Tree};
use crate::warnings::{Risk, RiskAction, Warning};

use crate::flows::{Engine, FlowError};

/// The analysis of a valid number.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub number: PhoneNumber,
    pub carrier_name: Option<&'static str>,
    pub risk: RiskAssessment,
    pub warnings: Vec<Warning>,
    pub is_disposable: bool,
    /// What the tenant's lookup adapter said, if it has one.
    pub line: LineSignals,
}

impl Analysis {
    /// A new, open verification of the analysed number.
    pub fn start_verification(
        &self,
        tenant_id: &str,
        applicant_id: Option<&str>,
        max_attempts: u32,
        now: DateTime<Utc>,
    ) -> Verification {
        Verification {
            id: Engine::id_at(now),
            tenant_id: tenant_id.to_owned(),
            applicant_id: applicant_id.map(str::to_owned),
            phone: self.facts(),
            channel: None,
            language: "en".to_owned(),
            status: ReportStatus::NotFinished,
            otp_verified: false,
            code: CodeState {
                active: None,
                attempts: 0,
                max_attempts,
            },
            sends: 0,
            risk: self.risk.clone(),
            warnings: self.warnings.clone(),
            created_at: now,
            updated_at: now,
            verified_at: None,
            events: Vec::new(),
            flags: Vec::new(),
            decisions: Vec::new(),
            cases: Vec::new(),
            info_requested: Vec::new(),
            otp_required: None,
            route: None,
            avoided_routes: Vec::new(),
            channel_workflow: None,
            deliveries: Vec::new(),
            review: None,
            message: None,
            applicant_country: None,
            feedback: None,
            fraud: None,
            sent: Vec::new(),
        }
    }

    pub fn facts(&self) -> PhoneFacts {
        PhoneFacts {
            e164: self.number.e164.clone(),
            calling_code: self.number.calling_code,
            national_number: self.number.national_number.clone(),
            region: self.number.region.clone(),
            line_type: self.number.line_type,
            carrier_name: self.carrier_name.map(str::to_owned),
            is_disposable: self.is_disposable,
            line: self.line.clone(),
        }
    }
}

/// Parses `input` from field `field`, requiring a valid number.
pub fn parse_valid(input: &str, field: &'static str) -> Result<PhoneNumber, FlowError> {
    match phone::parse(input, None) {
        Ok(Ok(number)) => match number.invalid_reason {
            None => Ok(number),
            Some(reason) => Err(FlowError::InvalidPhone { field, reason }),
        },
        Ok(Err(reason)) => Err(FlowError::InvalidPhone { field, reason }),
        Err(err) => Err(FlowError::invalid(field, err.to_string())),
    }
}

/// Checks an optional ISO country from field `field`; returns it upper-cased.
pub fn parse_country(
    input: Option<&str>,
    field: &'static str,
) -> Result<Option<String>, FlowError> {
    input
        .map(|code| {
            phone::normalize_country(code).map_err(|err| FlowError::invalid(field, err.to_string()))
        })
        .transpose()
}

impl Engine {
    /// Scores `number` for the tenant and raises the warnings its settings ask for.
    pub(crate) fn analyse(
        &self,
        tenant_id: &str,
        settings: &PhoneSettings,
        number: PhoneNumber,
        applicant_id: Option<&str>,
        applicant_country: Option<&str>,
        line: LineSignals,
    ) -> Result<Analysis, FlowError> {
        let carrier_name = carrier::original_operator(&number.e164);
        let signals = Signals {
            line_type: Some(number.line_type),
            phone_country: number.region.as_deref(),
            applicant_country,
            carrier_name: line.current_carrier.as_deref().or(carrier_name),
            fraud_carriers: &settings.known_fraud_carriers,
            ported_days_ago: line.ported_days_ago,
            prepaid: line.prepaid,
            ..Signals::default()
        };
        let policy = settings.risk_policy();
        let risk = risk::assess(&signals, &policy);
        let mut warnings = Vec::new();

        let blocked: Option<BlockedNumber> = self.replica.caches.blocked(
            tenant_id,
            &number.e164,
            || {
                let entries = self
                    .db
                    .scan_raw(Tree::Blocklist, &key(&[tenant_id, ""]), 1)?;
                Ok(!entries.is_empty())
            },
            || {
                self.db.get(
                    Tree::Blocklist,
                    &self.db.number_key(tenant_id, &number.e164)?,
                )
            },
        )?;
        if let Some(entry) = blocked {
            warnings.push(Warning::new(
                Risk::PhoneNumberInBlocklist,
                RiskAction::Decline,
                entry.reason,
            ));
        }
        if risk.risk_score >= settings.high_risk_threshold {
            warnings.push(Warning::new(
                Risk::HighRiskPhoneNumber,
                RiskAction::Decline,
                Some(format!("risk score {} of 100", risk.risk_score)),
            ));
        }
        let is_disposable =
            self.disposable.contains(&number.e164) || settings.lists_disposable(&number.e164);
        if is_disposable {
            warnings.push(Warning::new(
                Risk::DisposableNumberDetected,
                settings.risk_actions.disposable_number_detected,
                None,
            ));
        }
        match number.line_type {
            LineType::Voip if settings.block_voip || settings.flag_voip => {
                let action = if settings.block_voip {
                    RiskAction::Decline
                } else {
                    settings.risk_actions.voip_number_detected
                };
                warnings.push(Warning::new(
                    Risk::VoipNumberDetected,
                    action,
                    carrier_name.map(str::to_owned),
                ));
            }
            LineType::Virtual if settings.block_virtual => {
                warnings.push(Warning::new(
                    Risk::VoipNumberDetected,
                    RiskAction::Decline,
                    Some("virtual (personal) number".to_owned()),
                ));
            }
            _ => {}
        }
        if let Some(warning) =
            self.duplicate_warning(tenant_id, settings, &number.e164, applicant_id)?
        {
            warnings.push(warning);
        }
        Ok(Analysis {
            number,
            carrier_name,
            risk,
            warnings,
            is_disposable,
            line,
        })
    }

    /// `DUPLICATED_PHONE_NUMBER` when the number is already verified for another applicant.
    pub(crate) fn duplicate_warning(
        &self,
        tenant_id: &str,
        settings: &PhoneSettings,
        e164: &str,
        applicant_id: Option<&str>,
    ) -> Result<Option<Warning>, FlowError> {
        let Some(applicant_id) = applicant_id else {
            return Ok(None);
        };
        let owner: Option<VerifiedOwner> = self
            .db
            .get(Tree::VerifiedNumbers, &self.db.number_key(tenant_id, e164)?)?;
        Ok(owner
            .filter(|owner| owner.applicant_id != applicant_id)
            .map(|owner| {
                Warning::new(
                    Risk::DuplicatedPhoneNumber,
                    settings.risk_actions.duplicated_phone_number,
                    Some(format!("verified for applicant {}", owner.applicant_id)),
                )
            }))
    }
}
