//! The workflow interpreter: the first-party component that evaluates a tenant's
//! declarative workflow rules inside the sandbox.
//!
//! The host validates the rules bound to a trigger, compiles them into a
//! [`Program`](dialgate_sdk::workflow::Program) and passes its bytes with the
//! trigger's event; this component decodes the program, reads each field the rules
//! test from the event, and returns the indices of the rules that matched (and, when
//! asked, every condition's outcome). It knows nothing of actions: the host holds
//! each rule's actions and applies those of the rules that matched.

use dialgate_sdk::contract::types::VerificationStatus;
use dialgate_sdk::contract::workflow_types::ConditionOutcome;
use dialgate_sdk::workflow::{evaluate, Fact, Facts, Field, Program};

// Generates `Guest`, `export!` and the world's types: `Event`, `Evaluation`,
// `PluginError`.
dialgate_sdk::__generate_world!(workflow_interpreter);

/// The component's export.
pub struct Interpreter;

impl Guest for Interpreter {
    fn evaluate(program: Vec<u8>, event: Event, explain: bool) -> Result<Evaluation, PluginError> {
        // A panic traps without a message: nothing to write, so no WASI call.
        std::panic::set_hook(Box::new(|_| {}));
        let program = Program::decode(&program)
            .map_err(|err| PluginError::new("bad-program", err.to_string()))?;
        let facts = EventFacts::new(&event);
        let mut outcomes = Vec::new();
        let matched = evaluate(&program, &facts, explain.then_some(&mut outcomes));
        Ok(Evaluation {
            matched,
            explanation: outcomes
                .into_iter()
                .map(|outcome| ConditionOutcome {
                    rule: outcome.rule,
                    node: outcome.node,
                    matched: outcome.matched,
                    value: outcome.value,
                })
                .collect(),
        })
    }
}

export!(Interpreter);

/// The facts of one event, the fraud signals of its flow included (`event.fraud`).
pub struct EventFacts<'a> {
    event: &'a Event,
}

impl<'a> EventFacts<'a> {
    /// The facts `event` carries.
    pub fn new(event: &'a Event) -> Self {
        Self { event }
    }
}

fn text(value: &Option<String>) -> Fact<'_> {
    value.as_deref().map_or(Fact::Unknown, Fact::Text)
}

fn flag(value: Option<bool>) -> Fact<'static> {
    value.map_or(Fact::Unknown, Fact::Bool)
}

fn days(value: Option<u32>) -> Fact<'static> {
    value.map_or(Fact::Unknown, |days| Fact::Number(f64::from(days)))
}

impl Facts for EventFacts<'_> {
    fn fact(&self, field: Field) -> Fact<'_> {
        let event = self.event;
        let phone = &event.phone;
        let verification = &event.verification;
        match field {
            Field::Trigger => Fact::Text(event.trigger.name()),
            Field::VerificationStatus => Fact::Text(status_name(verification.status)),
            Field::PhoneOtpVerified => Fact::Bool(verification.otp_verified),
            Field::Channel => verification
                .channel
                .map_or(Fact::Unknown, |channel| Fact::Text(channel.name())),
            Field::OtpAttempts => Fact::Number(f64::from(verification.attempts)),
            Field::OtpResends => Fact::Number(f64::from(verification.resends)),
            Field::Flags => Fact::TextList(verification.flags.iter().map(String::as_str).collect()),
            Field::Phone => Fact::Text(&phone.e164),
            Field::PhoneType => Fact::Text(&phone.line_type),
            Field::Country => text(&phone.country),
            Field::CarrierName => text(&phone.carrier_name),
            Field::CarrierType => Fact::Text(&phone.carrier_type),
            Field::CarrierIsOriginal => Fact::Bool(phone.carrier_is_original),
            Field::RiskScore => Fact::Number(f64::from(phone.risk_score)),
            Field::RiskLevel => Fact::Text(&phone.risk_level),
            Field::RiskFactors => Fact::TextList(
                phone
                    .risk_factors
                    .iter()
                    .map(|factor| factor.factor.as_str())
                    .collect(),
            ),
            Field::Ported => flag(phone.ported),
            Field::PortedDaysAgo => days(phone.ported_days_ago),
            Field::SimSwapDaysAgo => days(phone.sim_swap_days_ago),
            Field::LineStatus => text(&phone.line_status),
            Field::Roaming => flag(phone.roaming),
            Field::ApplicantId => text(&event.applicant_id),
            Field::ApplicantCountry => text(&event.applicant_country),
            Field::CountryMismatch => match (&event.applicant_country, &phone.country) {
                (Some(applicant), Some(number)) => {
                    Fact::Bool(!applicant.eq_ignore_ascii_case(number))
                }
                _ => Fact::Unknown,
            },
            Field::PumpingRisk => event
                .fraud
                .as_ref()
                .map_or(Fact::Unknown, |f| Fact::Number(f64::from(f.pumping_risk))),
            Field::PrefixConversionRate => event
                .fraud
                .as_ref()
                .and_then(|f| f.prefix_conversion_rate)
                .map_or(Fact::Unknown, Fact::Number),
            Field::PrefixSends1h => event
                .fraud
                .as_ref()
                .map_or(Fact::Unknown, |f| Fact::Number(f.prefix_sends_hour as f64)),
            Field::GeoPermitted => event
                .fraud
                .as_ref()
                .map_or(Fact::Unknown, |f| Fact::Bool(f.geo_permitted)),
        }
    }
}

fn status_name(status: VerificationStatus) -> &'static str {
    match status {
        VerificationStatus::Approved => "Approved",
        VerificationStatus::Declined => "Declined",
        VerificationStatus::InReview => "In Review",
        VerificationStatus::NotFinished => "Not Finished",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dialgate_sdk::workflow::{Condition, Operator, Value};

    fn event() -> Event {
        let mut event = dialgate_sdk::rule::testing::event(
            dialgate_sdk::contract::types::Trigger::PhoneLookupComplete,
        );
        event.phone.line_type = "voip".to_owned();
        event.phone.carrier_type = "voip".to_owned();
        event.applicant_country = Some("GB".to_owned());
        event
    }

    #[test]
    fn the_seed_voip_rule_matches_an_unverified_voip_number() {
        let rule = Condition::All(vec![
            Condition::Test {
                field: Field::PhoneType,
                op: Operator::Eq,
                value: Value::Text("voip".into()),
            },
            Condition::Test {
                field: Field::PhoneOtpVerified,
                op: Operator::Eq,
                value: Value::Bool(false),
            },
        ]);
        let program = Program { rules: vec![rule] }.encode();
        let evaluation = Interpreter::evaluate(program.clone(), event(), false).expect("runs");
        assert_eq!(evaluation.matched, vec![0]);
        assert!(evaluation.explanation.is_empty());
        let mut verified = event();
        verified.verification.otp_verified = true;
        let evaluation = Interpreter::evaluate(program, verified, true).expect("runs");
        assert!(evaluation.matched.is_empty());
        assert_eq!(evaluation.explanation.len(), 3);
        assert_eq!(evaluation.explanation[2].value.as_deref(), Some("true"));
    }

    #[test]
    fn derived_and_unknown_fields() {
        let facts_event = event();
        let facts = EventFacts::new(&facts_event);
        assert_eq!(facts.fact(Field::CountryMismatch), Fact::Bool(true));
        assert_eq!(facts.fact(Field::SimSwapDaysAgo), Fact::Unknown);
        assert_eq!(
            facts.fact(Field::VerificationStatus),
            Fact::Text("Not Finished")
        );
    }

    #[test]
    fn a_malformed_program_is_the_interpreter_s_own_error() {
        let err =
            Interpreter::evaluate(vec![0xff, 0xff, 0xff], event(), false).expect_err("malformed");
        assert_eq!(err.code, "bad-program");
    }
}
