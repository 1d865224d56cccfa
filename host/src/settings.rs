//! Per-tenant phone-verification settings: defaults, partial updates and validation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::otp::CODE_LENGTH_RANGE;
use crate::permissions::DeliveryPermissions;
use crate::phone::risk::{self, RiskPolicy};
use crate::warnings::RiskAction;

/// A tenant's phone-verification settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PhoneSettings {
    /// When false, a lookup that names an applicant is a complete verification on its own.
    pub require_otp: bool,
    pub otp_expiry_minutes: u32,
    /// Code entries allowed per verification (the attempt limit).
    pub max_otp_attempts: u32,
    /// Code resends allowed per number and applicant within 24 hours.
    pub max_resends_per_24h: u32,
    pub code_length: u8,
    /// Decline VoIP numbers outright.
    pub block_voip: bool,
    /// Raise `VOIP_NUMBER_DETECTED` for VoIP numbers.
    pub flag_voip: bool,
    /// Decline virtual (personal) numbers outright.
    pub block_virtual: bool,
    /// Ask lookup adapters for SIM-swap data and treat a swap within the threshold as a risk.
    pub sim_swap_check: bool,
    pub sim_swap_threshold_days: u32,
    /// Action per configurable risk.
    pub risk_actions: RiskActions,
    /// Scores at or above this raise `HIGH_RISK_PHONE_NUMBER` and are `high`.
    pub high_risk_threshold: u8,
    /// Scores at or above this are `medium`.
    pub medium_risk_threshold: u8,
    /// Overrides of the factor table's contributions.
    pub risk_contributions: BTreeMap<String, i32>,
    /// Carrier names that fire `known_fraud_carrier`.
    pub known_fraud_carriers: Vec<String>,
    /// The tenant's own disposable numbers or number prefixes, E.164 (`+4475…`).
    pub disposable_numbers: Vec<String>,
    pub rate_limits: RateLimits,
    /// What a failed rule plugin (trap, breached limit, own error) means for the
    /// verification: `continue` (fail open), `review`, or `decline` (fail closed).
    pub on_plugin_failure: PluginFailure,
    /// Wrong codes allowed per number across its verifications and applicants before
    /// code entry for the number is locked.
    pub guess_budget: GuessBudget,
    /// Where codes may be sent, per channel: countries, E.164 prefixes, number types.
    pub delivery_permissions: DeliveryPermissions,
    /// The SMS-pumping detector: its mode, windows, block length, exempt prefixes and
    /// country tiers.
    pub sms_pumping: crate::pumping::PumpingSettings,
    /// Budgets for what codes cost: daily, monthly, and daily per country.
    pub spend_caps: crate::spend::SpendCaps,
    /// How long the tenant's records are kept (see `flows/retention.rs`).
    pub retention: Retention,
    /// When conversion and delivery alerts fire (see `flows/alerts.rs`).
    pub alerts: Alerts,
}

/// The guess budget of a number: failed code entries are counted per tenant and
/// number over a sliding 24 hours, whichever verification or applicant they were
/// entered for; a new code does not reset the count (NIST SP 800-63B-4), a correct
/// entry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GuessBudget {
    /// Failed entries within 24 hours that lock the number.
    pub max_failures_per_24h: u32,
    /// How long a lock lasts. While the count within 24 hours stays at the maximum,
    /// every further failure after a lock ends locks again: about one guess per lock
    /// period.
    pub lockout_minutes: u32,
}

impl Default for GuessBudget {
    fn default() -> Self {
        Self {
            max_failures_per_24h: 10,
            lockout_minutes: 60,
        }
    }
}

/// How long a tenant's records are kept, in days from when each began. The purge
/// removes what is older; analytics' tallies hold no personal data and stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Verifications, with their index entries, message records and the record of
    /// who verified a number first.
    pub verifications_days: u32,
    /// Code messages: their delivery records and dev-outbox copies.
    pub messages_days: u32,
    /// A verification's audit trail (`/v1/verifications/{id}/events`); the
    /// verification itself stays until `verifications_days`.
    pub events_days: u32,
    /// Webhook deliveries and their attempts (the payloads carry numbers).
    pub webhook_deliveries_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            verifications_days: 365,
            messages_days: 90,
            events_days: 90,
            webhook_deliveries_days: 30,
        }
    }
}

/// Thresholds of the hourly alerts. Each completed hour's conversion and delivery
/// failures, per country and per provider, are compared with the week before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Alerts {
    /// `alert.conversion_dropped` when an hour's conversion is this many percent below
    /// the week's (0 turns it off).
    pub conversion_drop_percent: u32,
    /// `alert.delivery_failures_spiked` when an hour's share of failed deliveries is at
    /// least this many percent and at least twice the week's (0 turns it off).
    pub delivery_failure_percent: u32,
    /// Codes an hour needs (started for conversion, receipts for failures) before it
    /// is judged; the week needs five times as many.
    pub min_codes: u32,
}

impl Default for Alerts {
    fn default() -> Self {
        Self {
            conversion_drop_percent: 30,
            delivery_failure_percent: 20,
            min_codes: 20,
        }
    }
}

/// The longest retention period, in days (10 years).
pub const MAX_RETENTION_DAYS: u32 = 3_650;

/// What a failed rule plugin means for the verification.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PluginFailure {
    /// Fail open: record the failure and carry on as if the rule had asked nothing.
    #[default]
    Continue,
    /// Record the failure and send the verification to review.
    Review,
    /// Fail closed: record the failure and decline.
    Decline,
}

impl Default for PhoneSettings {
    fn default() -> Self {
        Self {
            require_otp: true,
            otp_expiry_minutes: 10,
            max_otp_attempts: 2,
            max_resends_per_24h: 2,
            code_length: 6,
            block_voip: false,
            flag_voip: true,
            block_virtual: false,
            sim_swap_check: false,
            sim_swap_threshold_days: 7,
            risk_actions: RiskActions::default(),
            high_risk_threshold: risk::DEFAULT_HIGH_THRESHOLD,
            medium_risk_threshold: risk::DEFAULT_MEDIUM_THRESHOLD,
            risk_contributions: BTreeMap::new(),
            known_fraud_carriers: Vec::new(),
            disposable_numbers: Vec::new(),
            rate_limits: RateLimits::default(),
            on_plugin_failure: PluginFailure::Continue,
            guess_budget: GuessBudget::default(),
            delivery_permissions: DeliveryPermissions::default(),
            sms_pumping: crate::pumping::PumpingSettings::default(),
            spend_caps: crate::spend::SpendCaps::default(),
            retention: Retention::default(),
            alerts: Alerts::default(),
        }
    }
}

/// Actions for the configurable risks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RiskActions {
    #[serde(rename = "VOIP_NUMBER_DETECTED")]
    pub voip_number_detected: RiskAction,
    #[serde(rename = "DISPOSABLE_NUMBER_DETECTED")]
    pub disposable_number_detected: RiskAction,
    #[serde(rename = "DUPLICATED_PHONE_NUMBER")]
    pub duplicated_phone_number: RiskAction,
    /// Raised on a verification when its number's guess budget locks code entry.
    #[serde(rename = "VERIFICATION_CODE_GUESS_BUDGET_EXHAUSTED")]
    pub guess_budget_exhausted: RiskAction,
}

impl Default for RiskActions {
    fn default() -> Self {
        Self {
            voip_number_detected: RiskAction::Review,
            disposable_number_detected: RiskAction::Decline,
            duplicated_phone_number: RiskAction::Review,
            guess_budget_exhausted: RiskAction::Review,
        }
    }
}

/// A token bucket: sustained rate and burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BucketLimit {
    pub per_minute: u32,
    pub burst: u32,
}

impl BucketLimit {
    const fn new(per_minute: u32, burst: u32) -> Self {
        Self { per_minute, burst }
    }
}

/// Buckets for one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointLimits {
    pub per_tenant: BucketLimit,
    pub per_phone: BucketLimit,
    pub per_ip: BucketLimit,
}

/// Abuse limits for the OTP endpoints, lookups, and the line checks (which ask the
/// tenant's lookup adapter, often a paid operator API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    pub send_otp: EndpointLimits,
    pub verify_otp: EndpointLimits,
    /// `POST /v1/phone/lookup`.
    pub lookup: EndpointLimits,
    /// `GET /v1/phone/porting-history` and `POST /v1/phone/sim-swap-check`.
    pub line_checks: EndpointLimits,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            send_otp: EndpointLimits {
                per_tenant: BucketLimit::new(6_000, 600),
                per_phone: BucketLimit::new(5, 5),
                per_ip: BucketLimit::new(60, 30),
            },
            verify_otp: EndpointLimits {
                per_tenant: BucketLimit::new(12_000, 1_200),
                per_phone: BucketLimit::new(20, 10),
                per_ip: BucketLimit::new(120, 60),
            },
            // Lookups usually come from the app's servers: the per-IP limit is the
            // tenant's.
            lookup: EndpointLimits {
                per_tenant: BucketLimit::new(60_000, 10_000),
                per_phone: BucketLimit::new(120, 60),
                per_ip: BucketLimit::new(60_000, 10_000),
            },
            line_checks: EndpointLimits {
                per_tenant: BucketLimit::new(600, 100),
                per_phone: BucketLimit::new(10, 10),
                per_ip: BucketLimit::new(600, 100),
            },
        }
    }
}

/// A setting that is out of range, naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSetting {
    pub field: String,
    pub message: String,
}

fn check(ok: bool, field: &str, message: impl Into<String>) -> Result<(), InvalidSetting> {
    if ok {
        Ok(())
    } else {
        Err(InvalidSetting {
            field: field.to_owned(),
            message: message.into(),
        })
    }
}

impl PhoneSettings {
    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        check(
            (1..=1440).contains(&self.otp_expiry_minutes),
            "otp_expiry_minutes",
            "must be between 1 and 1440",
        )?;
        check(
            (1..=20).contains(&self.max_otp_attempts),
            "max_otp_attempts",
            "must be between 1 and 20",
        )?;
        check(
            self.max_resends_per_24h <= 50,
            "max_resends_per_24h",
            "must be between 0 and 50",
        )?;
        check(
            CODE_LENGTH_RANGE.contains(&self.code_length),
            "code_length",
            "must be between 4 and 10",
        )?;
        check(
            (1..=365).contains(&self.sim_swap_threshold_days),
            "sim_swap_threshold_days",
            "must be between 1 and 365",
        )?;
        check(
            (1..=100).contains(&self.high_risk_threshold),
            "high_risk_threshold",
            "must be between 1 and 100",
        )?;
        check(
            self.medium_risk_threshold < self.high_risk_threshold,
            "medium_risk_threshold",
            "must be below high_risk_threshold",
        )?;
        for (factor, points) in &self.risk_contributions {
            let field = format!("risk_contributions.{factor}");
            check(risk::is_factor(factor), &field, "is not a risk factor")?;
            check(
                (-100..=100).contains(points),
                &field,
                "must be between -100 and 100",
            )?;
        }
        check(
            self.known_fraud_carriers.len() <= 1_000,
            "known_fraud_carriers",
            "at most 1000 entries",
        )?;
        check(
            self.disposable_numbers.len() <= 10_000,
            "disposable_numbers",
            "at most 10000 entries",
        )?;
        for (i, entry) in self.disposable_numbers.iter().enumerate() {
            let digits = entry.strip_prefix('+').unwrap_or("");
            check(
                (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()),
                &format!("disposable_numbers[{i}]"),
                "must be an E.164 number or prefix such as \"+4475\"",
            )?;
        }
        check(
            (1..=1_000).contains(&self.guess_budget.max_failures_per_24h),
            "guess_budget.max_failures_per_24h",
            "must be between 1 and 1000",
        )?;
        check(
            (1..=10_080).contains(&self.guess_budget.lockout_minutes),
            "guess_budget.lockout_minutes",
            "must be between 1 and 10080 (7 days)",
        )?;
        for (name, limits) in [
            ("send_otp", &self.rate_limits.send_otp),
            ("verify_otp", &self.rate_limits.verify_otp),
            ("lookup", &self.rate_limits.lookup),
            ("line_checks", &self.rate_limits.line_checks),
        ] {
            for (scope, bucket) in [
                ("per_tenant", limits.per_tenant),
                ("per_phone", limits.per_phone),
                ("per_ip", limits.per_ip),
            ] {
                let field = format!("rate_limits.{name}.{scope}");
                check(
                    (1..=10_000_000).contains(&bucket.per_minute),
                    &format!("{field}.per_minute"),
                    "must be between 1 and 10000000",
                )?;
                check(
                    (1..=1_000_000).contains(&bucket.burst),
                    &format!("{field}.burst"),
                    "must be between 1 and 1000000",
                )?;
            }
        }
        check(
            self.alerts.conversion_drop_percent <= 100,
            "alerts.conversion_drop_percent",
            "must be between 0 (off) and 100",
        )?;
        check(
            self.alerts.delivery_failure_percent <= 100,
            "alerts.delivery_failure_percent",
            "must be between 0 (off) and 100",
        )?;
        check(
            (1..=1_000_000).contains(&self.alerts.min_codes),
            "alerts.min_codes",
            "must be between 1 and 1000000",
        )?;
        let retention = &self.retention;
        for (name, days) in [
            ("verifications_days", retention.verifications_days),
            ("messages_days", retention.messages_days),
            ("events_days", retention.events_days),
            ("webhook_deliveries_days", retention.webhook_deliveries_days),
        ] {
            check(
                (1..=MAX_RETENTION_DAYS).contains(&days),
                &format!("retention.{name}"),
                "must be between 1 and 3650 days",
            )?;
        }
        for (name, days) in [
            ("messages_days", retention.messages_days),
            ("events_days", retention.events_days),
        ] {
            check(
                days <= retention.verifications_days,
                &format!("retention.{name}"),
                "must not exceed retention.verifications_days: a verification's parts go with it",
            )?;
        }
        self.delivery_permissions.validate()?;
        if let Some((field, message)) = self
            .sms_pumping
            .problem()
            .or_else(|| self.spend_caps.problem())
        {
            return Err(InvalidSetting { field, message });
        }
        Ok(())
    }

    /// The scoring policy these settings describe.
    pub fn risk_policy(&self) -> RiskPolicy {
        RiskPolicy {
            contributions: self.risk_contributions.clone(),
            medium_threshold: self.medium_risk_threshold,
            high_threshold: self.high_risk_threshold,
        }
    }

    /// Whether `e164` is on the tenant's disposable list (exact number or prefix).
    pub fn lists_disposable(&self, e164: &str) -> bool {
        self.disposable_numbers
            .iter()
            .any(|entry| e164.starts_with(entry.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_follow_the_documented_limits() {
        let settings = PhoneSettings::default();
        settings.validate().expect("defaults are valid");
        assert_eq!(settings.max_otp_attempts, 2);
        assert_eq!(settings.max_resends_per_24h, 2);
        assert_eq!(settings.code_length, 6);
        assert_eq!(settings.otp_expiry_minutes, 10);
        assert_eq!(settings.guess_budget.max_failures_per_24h, 10);
        assert_eq!(settings.guess_budget.lockout_minutes, 60);
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let cases: Vec<(PhoneSettings, &str)> = vec![
            (
                PhoneSettings {
                    code_length: 3,
                    ..Default::default()
                },
                "code_length",
            ),
            (
                PhoneSettings {
                    otp_expiry_minutes: 0,
                    ..Default::default()
                },
                "otp_expiry_minutes",
            ),
            (
                PhoneSettings {
                    max_otp_attempts: 0,
                    ..Default::default()
                },
                "max_otp_attempts",
            ),
            (
                PhoneSettings {
                    medium_risk_threshold: 80,
                    ..Default::default()
                },
                "medium_risk_threshold",
            ),
            (
                PhoneSettings {
                    disposable_numbers: vec!["4475".into()],
                    ..Default::default()
                },
                "disposable_numbers[0]",
            ),
            (
                PhoneSettings {
                    risk_contributions: [("made_up".to_owned(), 5)].into(),
                    ..Default::default()
                },
                "risk_contributions.made_up",
            ),
            (
                PhoneSettings {
                    guess_budget: GuessBudget {
                        max_failures_per_24h: 0,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                "guess_budget.max_failures_per_24h",
            ),
            (
                PhoneSettings {
                    guess_budget: GuessBudget {
                        lockout_minutes: 10_081,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                "guess_budget.lockout_minutes",
            ),
        ];
        for (settings, field) in cases {
            assert_eq!(
                settings.validate().map_err(|e| e.field),
                Err(field.to_owned())
            );
        }
    }

    #[test]
    fn disposable_list_matches_prefixes() {
        let settings = PhoneSettings {
            disposable_numbers: vec!["+44750".into()],
            ..Default::default()
        };
        assert!(settings.lists_disposable("+447501234567"));
        assert!(!settings.lists_disposable("+447401234567"));
    }
}
