//! Risk scoring with the factor table of the lookup API.
//!
//! Pure: the caller gathers [`Signals`] (offline facts plus whatever lookup adapters
//! supplied) and a tenant's [`RiskPolicy`]; [`assess`] adds up the contributions of the
//! factors that apply, clamps the score to 0–100 and maps it to a level. A factor whose
//! signal is unknown does not fire: nothing is guessed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::LineType;

/// Every factor of the table, with its default contribution and description.
pub const FACTORS: &[(&str, i32, &str)] = &[
    ("fraud_history", 40, "Phone linked to fraud"),
    ("premium_rate", 30, "Premium rate number"),
    ("recently_ported", 20, "Number ported in last 30 days"),
    ("known_fraud_carrier", 35, "Carrier associated with fraud"),
    ("voip_number", 15, "VoIP provider number"),
    ("virtual_number", 20, "Virtual phone service"),
    ("prepaid", 10, "Prepaid SIM card"),
    (
        "country_mismatch",
        15,
        "Phone country differs from applicant",
    ),
    ("new_number", 5, "Number recently activated"),
    ("unusual_carrier", 5, "Less common carrier"),
];

/// Days within which a port or an activation counts as recent.
pub const RECENT_DAYS: u32 = 30;

/// Default lower bound of `medium` (inclusive).
pub const DEFAULT_MEDIUM_THRESHOLD: u8 = 30;
/// Default lower bound of `high` (inclusive).
pub const DEFAULT_HIGH_THRESHOLD: u8 = 60;

/// Whether `name` is a factor of the table.
pub fn is_factor(name: &str) -> bool {
    FACTORS.iter().any(|(factor, _, _)| *factor == name)
}

/// A tenant's scoring policy: contribution overrides and level thresholds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskPolicy {
    /// Overrides of the table's contributions, by factor name.
    pub contributions: BTreeMap<String, i32>,
    /// Scores at or above this are `medium`.
    pub medium_threshold: u8,
    /// Scores at or above this are `high`.
    pub high_threshold: u8,
}

impl Default for RiskPolicy {
    fn default() -> Self {
        Self {
            contributions: BTreeMap::new(),
            medium_threshold: DEFAULT_MEDIUM_THRESHOLD,
            high_threshold: DEFAULT_HIGH_THRESHOLD,
        }
    }
}

impl RiskPolicy {
    fn contribution(&self, factor: &str) -> i32 {
        self.contributions.get(factor).copied().unwrap_or_else(|| {
            FACTORS
                .iter()
                .find(|(name, _, _)| *name == factor)
                .map_or(0, |(_, points, _)| *points)
        })
    }

    /// The level of a clamped score.
    pub fn level(&self, score: u8) -> RiskLevel {
        if score >= self.high_threshold {
            RiskLevel::High
        } else if score >= self.medium_threshold {
            RiskLevel::Medium
        } else {
            RiskLevel::Low
        }
    }
}

/// Risk level of a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RiskLevel {
    Low,
    Medium,
    High,
}

impl RiskLevel {
    /// The wire name: `low`, `medium` or `high`.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
        }
    }
}

/// What is known about a number when it is scored. `None` means unknown.
#[derive(Debug, Clone, Default)]
pub struct Signals<'a> {
    pub line_type: Option<LineType>,
    /// Region of the number (alpha-2).
    pub phone_country: Option<&'a str>,
    /// Country the applicant declared (alpha-2).
    pub applicant_country: Option<&'a str>,
    /// Carrier name as best known (current if an adapter said so, else original).
    pub carrier_name: Option<&'a str>,
    /// Carriers the tenant lists as associated with fraud.
    pub fraud_carriers: &'a [String],
    /// The number is linked to fraud (from a lookup adapter or the tenant's history).
    pub fraud_history: Option<bool>,
    /// Days since the number was last ported.
    pub ported_days_ago: Option<u32>,
    /// Prepaid subscription.
    pub prepaid: Option<bool>,
    /// Days since the line was activated.
    pub activated_days_ago: Option<u32>,
    /// The carrier is uncommon for the number's country (from a lookup adapter).
    pub unusual_carrier: Option<bool>,
}

/// One factor that fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FactorHit {
    pub factor: String,
    pub contribution: i32,
    pub details: String,
}

/// The outcome of scoring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RiskAssessment {
    pub risk_score: u8,
    pub risk_level: RiskLevel,
    pub factors: Vec<FactorHit>,
}

impl RiskAssessment {
    /// Adds a factor (e.g. set by a rule) and recomputes score and level.
    pub fn with_factor(mut self, hit: FactorHit, policy: &RiskPolicy) -> Self {
        self.factors
            .retain(|existing| existing.factor != hit.factor);
        self.factors.push(hit);
        let (score, level) = total(&self.factors, policy);
        self.risk_score = score;
        self.risk_level = level;
        self
    }

    /// Drops the factors `drop` names (e.g. those rules set) and recomputes score and
    /// level.
    pub fn without_factors(mut self, drop: impl Fn(&str) -> bool, policy: &RiskPolicy) -> Self {
        self.factors.retain(|existing| !drop(&existing.factor));
        let (score, level) = total(&self.factors, policy);
        self.risk_score = score;
        self.risk_level = level;
        self
    }
}

fn total(factors: &[FactorHit], policy: &RiskPolicy) -> (u8, RiskLevel) {
    let sum: i32 = factors.iter().map(|hit| hit.contribution).sum();
    let score = u8::try_from(sum.clamp(0, 100)).unwrap_or(100);
    (score, policy.level(score))
}

/// Scores a number.
pub fn assess(signals: &Signals<'_>, policy: &RiskPolicy) -> RiskAssessment {
    let mut factors = Vec::new();
    let mut hit = |factor: &str, details: String| {
        factors.push(FactorHit {
            factor: factor.to_owned(),
            contribution: policy.contribution(factor),
            details,
        });
    };
    let carrier = signals.carrier_name.unwrap_or("unknown carrier");
    if signals.fraud_history == Some(true) {
        hit("fraud_history", "Number linked to earlier fraud".to_owned());
    }
    match signals.line_type {
        Some(LineType::Premium) => hit("premium_rate", "Premium rate number".to_owned()),
        Some(LineType::Voip) => hit("voip_number", format!("{carrier} VoIP number")),
        Some(LineType::Virtual) => hit("virtual_number", "Personal or virtual number".to_owned()),
        _ => {}
    }
    if let Some(days) = signals.ported_days_ago.filter(|days| *days <= RECENT_DAYS) {
        hit("recently_ported", format!("Ported {days} days ago"));
    }
    if let Some(name) = signals.carrier_name {
        if signals
            .fraud_carriers
            .iter()
            .any(|listed| listed.eq_ignore_ascii_case(name))
        {
            hit(
                "known_fraud_carrier",
                format!("{name} is listed as a fraud carrier"),
            );
        }
    }
    if signals.prepaid == Some(true) {
        hit("prepaid", "Prepaid SIM card".to_owned());
    }
    if let (Some(phone), Some(applicant)) = (signals.phone_country, signals.applicant_country) {
        if !phone.eq_ignore_ascii_case(applicant) {
            hit(
                "country_mismatch",
                format!(
                    "Phone country {phone} differs from applicant country {}",
                    applicant.to_ascii_uppercase()
                ),
            );
        }
    }
    if let Some(days) = signals
        .activated_days_ago
        .filter(|days| *days <= RECENT_DAYS)
    {
        hit("new_number", format!("Activated {days} days ago"));
    }
    if signals.unusual_carrier == Some(true) {
        hit(
            "unusual_carrier",
            format!("{carrier} is uncommon for this country"),
        );
    }
    factors.retain(|hit| hit.contribution != 0);
    let (risk_score, risk_level) = total(&factors, policy);
    RiskAssessment {
        risk_score,
        risk_level,
        factors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(assessment: &RiskAssessment) -> Vec<&str> {
        assessment
            .factors
            .iter()
            .map(|hit| hit.factor.as_str())
            .collect()
    }

    #[test]
    fn clean_mobile_scores_zero_and_low() {
        let signals = Signals {
            line_type: Some(LineType::Mobile),
            phone_country: Some("US"),
            applicant_country: Some("us"),
            ..Signals::default()
        };
        let assessment = assess(&signals, &RiskPolicy::default());
        assert_eq!(assessment.risk_score, 0);
        assert_eq!(assessment.risk_level, RiskLevel::Low);
        assert!(assessment.factors.is_empty());
    }

    #[test]
    fn voip_contributes_fifteen_with_carrier_in_details() {
        let signals = Signals {
            line_type: Some(LineType::Voip),
            carrier_name: Some("Google Voice"),
            ..Signals::default()
        };
        let assessment = assess(&signals, &RiskPolicy::default());
        assert_eq!(
            assessment.factors,
            vec![FactorHit {
                factor: "voip_number".into(),
                contribution: 15,
                details: "Google Voice VoIP number".into(),
            }]
        );
        assert_eq!(assessment.risk_score, 15);
    }

    #[test]
    fn every_factor_fires_with_its_table_contribution() {
        let fraud = vec!["BadTel".to_owned()];
        let signals = Signals {
            line_type: Some(LineType::Premium),
            phone_country: Some("GB"),
            applicant_country: Some("DE"),
            carrier_name: Some("badtel"),
            fraud_carriers: &fraud,
            fraud_history: Some(true),
            ported_days_ago: Some(3),
            prepaid: Some(true),
            activated_days_ago: Some(10),
            unusual_carrier: Some(true),
        };
        let assessment = assess(&signals, &RiskPolicy::default());
        for hit in &assessment.factors {
            let (_, points, _) = FACTORS
                .iter()
                .find(|(name, _, _)| *name == hit.factor)
                .expect("known factor");
            assert_eq!(hit.contribution, *points, "{}", hit.factor);
        }
        // Premium excludes the VoIP and virtual factors: the line has one type.
        assert_eq!(assessment.factors.len(), 8, "{:?}", names(&assessment));
        // 40+30+20+35+10+15+5+5 = 160 is clamped.
        assert_eq!(assessment.risk_score, 100);
        assert_eq!(assessment.risk_level, RiskLevel::High);
    }

    #[test]
    fn virtual_numbers_score_twenty() {
        let signals = Signals {
            line_type: Some(LineType::Virtual),
            ..Signals::default()
        };
        assert_eq!(
            names(&assess(&signals, &RiskPolicy::default())),
            ["virtual_number"]
        );
    }

    #[test]
    fn old_ports_and_activations_do_not_fire() {
        let signals = Signals {
            ported_days_ago: Some(31),
            activated_days_ago: Some(400),
            ..Signals::default()
        };
        assert!(assess(&signals, &RiskPolicy::default()).factors.is_empty());
    }

    #[test]
    fn unknown_signals_never_fire() {
        let assessment = assess(&Signals::default(), &RiskPolicy::default());
        assert!(assessment.factors.is_empty());
    }

    #[test]
    fn thresholds_split_levels_at_their_bounds() {
        let policy = RiskPolicy::default();
        assert_eq!(policy.level(29), RiskLevel::Low);
        assert_eq!(policy.level(30), RiskLevel::Medium);
        assert_eq!(policy.level(59), RiskLevel::Medium);
        assert_eq!(policy.level(60), RiskLevel::High);
    }

    #[test]
    fn tenant_overrides_change_contributions_and_levels() {
        let mut policy = RiskPolicy {
            medium_threshold: 10,
            high_threshold: 40,
            ..RiskPolicy::default()
        };
        policy.contributions.insert("voip_number".into(), 45);
        let signals = Signals {
            line_type: Some(LineType::Voip),
            ..Signals::default()
        };
        let assessment = assess(&signals, &policy);
        assert_eq!(assessment.risk_score, 45);
        assert_eq!(assessment.risk_level, RiskLevel::High);
    }

    #[test]
    fn a_zero_override_disables_a_factor_and_negatives_clamp_at_zero() {
        let mut policy = RiskPolicy::default();
        policy.contributions.insert("country_mismatch".into(), 0);
        policy.contributions.insert("voip_number".into(), -50);
        let signals = Signals {
            line_type: Some(LineType::Voip),
            phone_country: Some("US"),
            applicant_country: Some("FR"),
            ..Signals::default()
        };
        let assessment = assess(&signals, &policy);
        assert_eq!(names(&assessment), ["voip_number"]);
        assert_eq!(assessment.risk_score, 0);
    }

    #[test]
    fn with_factor_replaces_and_rescores() {
        let policy = RiskPolicy::default();
        let base = assess(
            &Signals {
                line_type: Some(LineType::Voip),
                ..Signals::default()
            },
            &policy,
        );
        let updated = base.with_factor(
            FactorHit {
                factor: "fraud_history".into(),
                contribution: 50,
                details: "rule".into(),
            },
            &policy,
        );
        assert_eq!(updated.risk_score, 65);
        assert_eq!(updated.risk_level, RiskLevel::High);
    }

    proptest::proptest! {
        #[test]
        fn score_is_always_within_bounds(
            contribution in -500i32..500,
            ported in proptest::option::of(0u32..100),
            mismatch in proptest::bool::ANY,
        ) {
            let mut policy = RiskPolicy::default();
            policy.contributions.insert("recently_ported".into(), contribution);
            let signals = Signals {
                line_type: Some(LineType::Premium),
                ported_days_ago: ported,
                phone_country: Some("US"),
                applicant_country: Some(if mismatch { "FR" } else { "US" }),
                ..Signals::default()
            };
            let assessment = assess(&signals, &policy);
            proptest::prop_assert!(assessment.risk_score <= 100);
            proptest::prop_assert_eq!(assessment.risk_level, policy.level(assessment.risk_score));
        }
    }
}
