//! Verification warnings and the decisions they lead to.
//!
//! Each warning carries the risk tag, optional data, a `log_type` derived from the
//! action the tenant configured for that risk, and short and long descriptions.

use serde::{Deserialize, Serialize};

/// What a tenant wants done when a configurable risk is detected.
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
pub enum RiskAction {
    Approve,
    Review,
    Decline,
}

impl RiskAction {
    /// The severity a warning with this action is logged at.
    pub fn log_type(self) -> LogType {
        match self {
            RiskAction::Approve => LogType::Information,
            RiskAction::Review => LogType::Warning,
            RiskAction::Decline => LogType::Error,
        }
    }
}

/// Severity of a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogType {
    Information,
    Warning,
    Error,
}

/// The risks a verification can raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Risk {
    VerificationCodeAttemptsExceeded,
    HighRiskPhoneNumber,
    PhoneNumberInBlocklist,
    DisposableNumberDetected,
    VoipNumberDetected,
    DuplicatedPhoneNumber,
    VerificationCodeGuessBudgetExhausted,
    DestinationNotPermitted,
    SmsPumpingSuspected,
}

impl Risk {
    /// The tag as it appears on the wire.
    pub fn tag(self) -> &'static str {
        match self {
            Risk::VerificationCodeAttemptsExceeded => "VERIFICATION_CODE_ATTEMPTS_EXCEEDED",
            Risk::HighRiskPhoneNumber => "HIGH_RISK_PHONE_NUMBER",
            Risk::PhoneNumberInBlocklist => "PHONE_NUMBER_IN_BLOCKLIST",
            Risk::DisposableNumberDetected => "DISPOSABLE_NUMBER_DETECTED",
            Risk::VoipNumberDetected => "VOIP_NUMBER_DETECTED",
            Risk::DuplicatedPhoneNumber => "DUPLICATED_PHONE_NUMBER",
            Risk::VerificationCodeGuessBudgetExhausted => {
                "VERIFICATION_CODE_GUESS_BUDGET_EXHAUSTED"
            }
            Risk::DestinationNotPermitted => "DESTINATION_NOT_PERMITTED",
            Risk::SmsPumpingSuspected => "SMS_PUMPING_SUSPECTED",
        }
    }

    fn descriptions(self) -> (&'static str, &'static str) {
        match self {
            Risk::VerificationCodeAttemptsExceeded => (
                "Verification code attempts exceeded",
                "The user has exceeded the maximum number of attempts to enter the correct verification code.",
            ),
            Risk::HighRiskPhoneNumber => (
                "High risk phone number",
                "The phone number is identified as a high risk number.",
            ),
            Risk::PhoneNumberInBlocklist => (
                "Phone number in blocklist",
                "The phone number is in the blocklist.",
            ),
            Risk::DisposableNumberDetected => (
                "Disposable number detected",
                "The phone number has been identified as temporary or disposable, often used to avoid verification traceability.",
            ),
            Risk::VoipNumberDetected => (
                "VoIP number detected",
                "The phone number appears to be a Voice over IP (VoIP) number rather than a standard mobile or landline number.",
            ),
            Risk::DuplicatedPhoneNumber => (
                "Duplicated phone number",
                "The phone number has been identified as a duplicate of a previously verified number.",
            ),
            Risk::VerificationCodeGuessBudgetExhausted => (
                "Verification code guess budget exhausted",
                "Too many wrong verification codes were entered for this phone number across its verifications, so code entry for the number is locked for a while.",
            ),
            Risk::DestinationNotPermitted => (
                "Destination not permitted",
                "The tenant's delivery permissions do not allow codes to this phone number on this channel (its country, prefix or number type); nothing was sent.",
            ),
            Risk::SmsPumpingSuspected => (
                "SMS pumping suspected",
                "The SMS-pumping detector judged the number's prefix under attack (artificially inflated traffic); while the block lasts no code goes to the prefix. The data names the prefix, until when and why.",
            ),
        }
    }
}

/// One warning on a verification or lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Warning {
    /// The risk's tag, e.g. `VOIP_NUMBER`.
    #[schema(value_type = String)]
    pub risk: Risk,
    pub additional_data: Option<String>,
    #[schema(value_type = String)]
    pub log_type: LogType,
    pub short_description: String,
    pub long_description: String,
    /// The action this warning leads to (`Decline`, `Review` or `Approve`).
    #[schema(value_type = String)]
    pub action: RiskAction,
}

impl Warning {
    /// A warning for `risk` that leads to `action`.
    pub fn new(risk: Risk, action: RiskAction, additional_data: Option<String>) -> Self {
        let (short, long) = risk.descriptions();
        Self {
            risk,
            additional_data,
            log_type: action.log_type(),
            short_description: short.to_owned(),
            long_description: long.to_owned(),
            action,
        }
    }
}

/// The strongest action among `warnings` (decline over review over approve).
pub fn strongest(warnings: &[Warning]) -> RiskAction {
    warnings
        .iter()
        .map(|warning| warning.action)
        .max()
        .unwrap_or(RiskAction::Approve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_type_follows_the_action() {
        let warning = Warning::new(Risk::VoipNumberDetected, RiskAction::Review, None);
        assert_eq!(warning.log_type, LogType::Warning);
        let json = serde_json::to_value(&warning).expect("serialises");
        assert_eq!(json["risk"], "VOIP_NUMBER_DETECTED");
        assert_eq!(json["log_type"], "warning");
        assert_eq!(json["action"], "Review");
    }

    #[test]
    fn decline_beats_review_beats_approve() {
        let w = |action| Warning::new(Risk::DuplicatedPhoneNumber, action, None);
        assert_eq!(strongest(&[]), RiskAction::Approve);
        assert_eq!(
            strongest(&[w(RiskAction::Approve), w(RiskAction::Review)]),
            RiskAction::Review
        );
        assert_eq!(
            strongest(&[
                w(RiskAction::Review),
                w(RiskAction::Decline),
                w(RiskAction::Approve)
            ]),
            RiskAction::Decline
        );
    }
}
