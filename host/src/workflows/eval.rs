//! The native evaluation of a trigger's declarative rules: the facts of a rule event,
//! and one bounded call of the SDK's evaluator on the compiled program kept in the
//! tenant's live snapshot.
//!
//! Declarative rules are our own code running over a tenant's data, so they run in
//! the host rather than in a sandboxed instance (which cost more than the rules
//! themselves). They are bounded as strictly as a sandboxed call: the program's
//! encoded size by [`MAX_PROGRAM_BYTES`], the event's text by the
//! runtime's input cap, and the work by a budget of steps derived from the runtime's
//! fuel ([`step_budget`]), charged before each piece of work is done. Going over a
//! bound is a [`Failure`] like a sandbox's, which the trigger records and settles by
//! the tenant's `on_plugin_failure`.

use std::time::Instant;

use dialgate_sdk::workflow::{evaluate_bounded, Evaluation, Fact, Facts, Field, Program};

use crate::model::rules::RuleEvent;
use crate::model::rules::{Failure, Limits, Usage, MAX_PROGRAM_BYTES};
use crate::model::ReportStatus;

/// Units of sandbox fuel one evaluation step stands for. The interpreter component
/// spent well over ten WebAssembly instructions per node or byte compared (decoding
/// included), so a budget of `fuel / 10` steps allows no more work than the sandbox
/// did, and at about a nanosecond a step it ends far inside the call deadline.
pub const FUEL_PER_STEP: u64 = 10;

/// The step budget of one evaluation under `limits`: 1,000,000 with the defaults.
pub fn step_budget(limits: &Limits) -> u64 {
    (limits.fuel / FUEL_PER_STEP).max(1)
}

/// A trigger's compiled program, decoded once when the snapshot is built.
#[derive(Debug, Clone, Default)]
pub struct CompiledProgram {
    pub program: Program,
    /// The size of its encoded form, held to the sandbox's cap on programs.
    pub encoded_bytes: usize,
}

impl CompiledProgram {
    /// `program`, measured.
    pub fn new(program: Program) -> Self {
        let encoded_bytes = program.encode().len();
        Self {
            program,
            encoded_bytes,
        }
    }
}

/// Evaluates `program` on `event` under `limits`. With `explain`, every node's
/// outcome is returned as well (no short cut). The usage's `fuel` is the steps taken.
pub fn evaluate(
    program: &CompiledProgram,
    event: &RuleEvent,
    limits: &Limits,
    explain: bool,
) -> (Usage, Result<Evaluation, Failure>) {
    let input = event.text_len();
    if input > limits.max_input_bytes || program.encoded_bytes > MAX_PROGRAM_BYTES {
        return (
            Usage::default(),
            Err(Failure::InputTooLarge {
                bytes: input + program.encoded_bytes,
                limit: limits.max_input_bytes + MAX_PROGRAM_BYTES,
            }),
        );
    }
    let started = Instant::now();
    let budget = step_budget(limits);
    let facts = EventFacts::new(event);
    let result = evaluate_bounded(&program.program, &facts, explain, budget);
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    match result {
        Ok(evaluation) => (
            Usage {
                fuel: evaluation.steps,
                micros,
                peak_memory_bytes: 0,
            },
            Ok(evaluation),
        ),
        Err(exceeded) => (
            Usage {
                fuel: exceeded.budget,
                micros,
                peak_memory_bytes: 0,
            },
            Err(Failure::StepBudget {
                steps: exceeded.budget,
            }),
        ),
    }
}

/// The facts of one rule event, as the interpreter component reads them from the
/// event the sandbox is given (`rules/workflow-interpreter`): the same values, field
/// by field, so both evaluators decide alike.
pub struct EventFacts<'a> {
    event: &'a RuleEvent,
    /// Derived from the line type when the event does not say.
    carrier_type: String,
}

impl<'a> EventFacts<'a> {
    /// The facts `event` carries.
    pub fn new(event: &'a RuleEvent) -> Self {
        Self {
            event,
            carrier_type: event.phone.carrier_type(),
        }
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

fn status_name(status: ReportStatus) -> &'static str {
    match status {
        ReportStatus::Approved => "Approved",
        ReportStatus::Declined => "Declined",
        ReportStatus::InReview => "In Review",
        ReportStatus::NotFinished => "Not Finished",
    }
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
                .map_or(Fact::Unknown, |channel| Fact::Text(channel.as_str())),
            Field::OtpAttempts => Fact::Number(f64::from(verification.attempts)),
            Field::OtpResends => Fact::Number(f64::from(verification.resends)),
            Field::Flags => Fact::TextList(verification.flags.iter().map(String::as_str).collect()),
            Field::Phone => Fact::Text(&phone.e164),
            Field::PhoneType => Fact::Text(&phone.line_type),
            Field::Country => text(&phone.country),
            Field::CarrierName => text(&phone.carrier_name),
            Field::CarrierType => Fact::Text(&self.carrier_type),
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
            Field::PumpingRisk => fraud(event, |f| Some(Fact::Number(f64::from(f.pumping_risk)))),
            Field::PrefixConversionRate => {
                fraud(event, |f| f.prefix_conversion_rate.map(Fact::Number))
            }
            Field::PrefixSends1h => fraud(event, |f| Some(Fact::Number(f.prefix_sends_1h as f64))),
            Field::GeoPermitted => fraud(event, |f| Some(Fact::Bool(f.geo_permitted))),
        }
    }
}

/// A fact from the event's fraud signals; unknown without them.
fn fraud<'a>(
    event: &'a RuleEvent,
    read: impl FnOnce(&'a crate::model::rules::FraudSignals) -> Option<Fact<'a>>,
) -> Fact<'a> {
    event.fraud.as_ref().and_then(read).unwrap_or(Fact::Unknown)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{json, Value as Json};

    use super::*;
    use crate::model::rules::RuleSource;
    use crate::model::rules::{FactorView, RuleAction, Trigger};
    use crate::model::Channel;
    use crate::plugins::registry::Registry;
    use crate::plugins::testing::block_on;
    use crate::plugins::{testing, PluginRuntime, Scope};
    use crate::store::{key, Db, Tree};
    use crate::workflows::{compile, WorkflowRule};

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open_sled(dir.path()).expect("open sled");
        (dir, db)
    }

    /// An event with every field known.
    fn rich() -> RuleEvent {
        let mut event = testing::event("mobile");
        event.trigger = Trigger::OtpSent;
        event.verification.status = ReportStatus::InReview;
        event.verification.channel = Some(Channel::Whatsapp);
        event.verification.attempts = 2;
        event.verification.resends = 1;
        event.verification.flags = vec!["vip".into(), "Quoted \"one\"".into()];
        event.phone.country = Some("GB".into());
        event.phone.carrier_name = Some("Vodafone UK".into());
        event.phone.carrier_is_original = true;
        event.phone.risk_score = 45;
        event.phone.risk_level = "medium".into();
        event.phone.risk_factors = vec![FactorView {
            factor: "voip_number".into(),
            contribution: 25,
            details: String::new(),
        }];
        event.phone.ported = Some(true);
        event.phone.ported_days_ago = Some(12);
        event.phone.sim_swap_days_ago = Some(3);
        event.phone.line_status = Some("active".into());
        event.phone.roaming = Some(false);
        event.applicant_country = Some("gb".into());
        event.fraud = Some(crate::model::rules::FraudSignals {
            pumping_risk: 35,
            prefix_conversion_rate: Some(0.25),
            prefix_sends_1h: 40,
            geo_permitted: true,
        });
        event
    }

    fn program(conditions: &[Json]) -> CompiledProgram {
        CompiledProgram::new(Program {
            rules: conditions
                .iter()
                .map(|json| compile(json).expect("valid").condition)
                .collect(),
        })
    }

    #[test]
    fn every_field_reads_the_event_as_the_interpreter_does() {
        let event = rich();
        let facts = EventFacts::new(&event);
        let json = |field: &str| {
            facts
                .fact(Field::from_name(field).expect("a field"))
                .to_json()
        };
        let expected = [
            ("trigger", r#""otp_sent""#),
            ("verification_status", r#""In Review""#),
            ("phone_otp_verified", "false"),
            ("channel", r#""whatsapp""#),
            ("otp_attempts", "2"),
            ("otp_resends", "1"),
            ("flags", r#"["vip","Quoted \"one\""]"#),
            ("phone", r#""+14155552671""#),
            ("phone_type", r#""mobile""#),
            ("country", r#""GB""#),
            ("carrier_name", r#""Vodafone UK""#),
            ("carrier_type", r#""mobile""#),
            ("carrier_is_original", "true"),
            ("risk_score", "45"),
            ("risk_level", r#""medium""#),
            ("risk_factors", r#"["voip_number"]"#),
            ("ported", "true"),
            ("ported_days_ago", "12"),
            ("sim_swap_days_ago", "3"),
            ("line_status", r#""active""#),
            ("roaming", "false"),
            ("applicant_id", r#""applicant""#),
            ("applicant_country", r#""gb""#),
            ("country_mismatch", "false"),
            ("pumping_risk", "35"),
            ("prefix_conversion_rate", "0.25"),
            ("prefix_sends_1h", "40"),
            ("geo_permitted", "true"),
        ];
        assert_eq!(expected.len(), dialgate_sdk::workflow::FIELDS.len());
        for (field, value) in expected {
            assert_eq!(json(field), value, "{field}");
        }
        // What an event does not know is unknown; a given carrier type wins.
        let mut sparse = testing::event("virtual");
        sparse.applicant_id = None;
        let facts = EventFacts::new(&sparse);
        for field in [
            Field::Channel,
            Field::CarrierName,
            Field::Ported,
            Field::SimSwapDaysAgo,
            Field::ApplicantId,
            Field::CountryMismatch,
            Field::PumpingRisk,
            Field::PrefixConversionRate,
            Field::PrefixSends1h,
            Field::GeoPermitted,
        ] {
            assert_eq!(facts.fact(field), Fact::Unknown, "{field:?}");
        }
        assert_eq!(facts.fact(Field::CarrierType), Fact::Text("voip"));
        sparse.phone.carrier_type = Some("landline".into());
        assert_eq!(
            EventFacts::new(&sparse).fact(Field::CarrierType),
            Fact::Text("landline")
        );
    }

    #[test]
    fn a_program_over_its_step_budget_fails_and_one_within_it_runs() {
        let compiled = program(&[
            json!({"all": [
                {"field": "phone_type", "operator": "eq", "value": "mobile"},
                {"field": "country", "operator": "in", "value": ["US", "GB", "UZ"]}
            ]}),
            json!({"field": "applicant_id", "operator": "contains", "value": "plic"}),
        ]);
        let event = testing::event("mobile");
        let limits = Limits::default();
        let (usage, result) = evaluate(&compiled, &event, &limits, false);
        let evaluation = result.expect("fits the default budget");
        assert_eq!(evaluation.matched, vec![0, 1]);
        assert_eq!(usage.fuel, evaluation.steps);
        assert!(usage.fuel > 0);

        // The same program under a runtime with less fuel than it needs.
        let tight = Limits {
            fuel: (usage.fuel - 1) * FUEL_PER_STEP,
            ..limits
        };
        let (usage, result) = evaluate(&compiled, &event, &tight, false);
        let budget = step_budget(&tight);
        assert_eq!(result.err(), Some(Failure::StepBudget { steps: budget }));
        assert_eq!(usage.fuel, budget);
        assert_eq!(step_budget(&Limits::default()), 1_000_000);
    }

    #[test]
    fn the_input_caps_of_the_sandbox_hold() {
        let compiled = program(&[json!({"field": "phone", "operator": "exists", "value": true})]);
        let mut event = testing::event("mobile");
        event.applicant_id = Some("x".repeat(Limits::default().max_input_bytes + 1));
        let (_, result) = evaluate(&compiled, &event, &Limits::default(), false);
        assert!(
            matches!(result, Err(Failure::InputTooLarge { .. })),
            "{result:?}"
        );
        let mut huge = compiled.clone();
        huge.encoded_bytes = MAX_PROGRAM_BYTES + 1;
        let (_, result) = evaluate(&huge, &testing::event("mobile"), &Limits::default(), false);
        assert!(
            matches!(result, Err(Failure::InputTooLarge { .. })),
            "{result:?}"
        );
    }

    /// Stores an enabled rule at `phone_lookup_complete` as the API would.
    fn store_rule(
        db: &Db,
        tenant: &str,
        rule_id: &str,
        conditions: Json,
        actions: Vec<RuleAction>,
    ) {
        let now = chrono::Utc::now();
        let rule = WorkflowRule {
            rule_id: rule_id.to_owned(),
            tenant_id: tenant.to_owned(),
            trigger: Trigger::PhoneLookupComplete,
            conditions,
            actions,
            enabled: true,
            order: 100,
            description: None,
            revision: 1,
            created_at: now,
            updated_at: now,
        };
        db.put(Tree::WorkflowRules, &key(&[tenant, rule_id]), &rule)
            .expect("stored");
    }

    #[test]
    fn a_chain_over_the_step_budget_records_one_failed_run_for_the_declarative_rules() {
        let (_dir, db) = db();
        let flag = |flag: &str| RuleAction::AddFlag {
            flag: flag.to_owned(),
        };
        store_rule(
            &db,
            "t",
            "cheap",
            json!({"field": "phone_type", "operator": "eq", "value": "mobile"}),
            vec![flag("cheap")],
        );
        store_rule(
            &db,
            "t",
            "costly",
            json!({"any": [
                {"field": "applicant_id", "operator": "contains", "value": "zz"},
                {"field": "applicant_id", "operator": "contains", "value": "yy"},
                {"field": "applicant_id", "operator": "contains", "value": "xx"}
            ]}),
            vec![flag("costly")],
        );
        let run = |fuel: u64| {
            let runtime = PluginRuntime::new(
                db.clone(),
                Limits {
                    fuel,
                    ..Limits::default()
                },
            )
            .expect("runtime");
            let registry =
                Registry::open(Arc::new(runtime), db.clone(), Vec::new()).expect("registry");
            let mut event = testing::event("mobile");
            event.tenant_id = "t".to_owned();
            event.applicant_id = Some("a".repeat(100));
            block_on(registry.run_rules(&registry.live("t").expect("live"), event.clone(), 0, None))
        };
        // With the default budget the cheap rule matches and the costly one does not.
        let runs = run(Limits::default().fuel);
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(runs[0].source, RuleSource::Workflow);
        assert_eq!(runs[0].actions, vec![flag("cheap")]);
        assert!(runs[0].error.is_none());
        // Three `contains` over 100 bytes cost about 600 steps: with a budget of 100,
        // the evaluation fails, and one failed run stands for every declarative rule
        // of the trigger (none of their actions apply), as when the sandbox failed.
        let runs = run(100 * FUEL_PER_STEP);
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(runs[0].source, RuleSource::Workflow);
        assert_eq!(runs[0].name, "workflow rules (2)");
        assert!(runs[0].actions.is_empty());
        assert_eq!(runs[0].error, Some(Failure::StepBudget { steps: 100 }));
        assert_eq!(runs[0].fuel, 100);
        let message = runs[0].error.as_ref().expect("failed").to_string();
        assert!(message.contains("100 evaluation steps"), "{message}");
    }

    /// A table of conditions over every operator, and events that make them match or
    /// not, decided natively and by the interpreter component in the sandbox: the
    /// matches and every node's explanation are the same.
    #[test]
    #[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
    fn native_evaluation_agrees_with_the_sandboxed_interpreter() {
        let conditions = [
            json!({"all": [
                {"field": "phone_type", "operator": "eq", "value": "VOIP"},
                {"field": "phone_otp_verified", "operator": "eq", "value": false}
            ]}),
            json!({"any": [
                {"field": "sim_swap_days_ago", "operator": "lt", "value": 7},
                {"field": "ported_days_ago", "operator": "lte", "value": 12},
                {"field": "risk_score", "operator": "gt", "value": 44},
                {"field": "otp_attempts", "operator": "gte", "value": 3}
            ]}),
            json!({"not": {"field": "country", "operator": "in", "value": ["US", "gb"]}}),
            json!({"field": "country", "operator": "not_in", "value": ["UZ"]}),
            json!({"field": "otp_resends", "operator": "in", "value": [0, 1]}),
            json!({"field": "carrier_name", "operator": "contains", "value": "fone"}),
            json!({"field": "phone", "operator": "starts_with", "value": "+1415"}),
            json!({"field": "flags", "operator": "contains", "value": "VIP"}),
            json!({"field": "risk_factors", "operator": "contains", "value": "voip_number"}),
            json!({"field": "carrier_name", "operator": "exists", "value": false}),
            json!({"field": "country_mismatch", "operator": "ne", "value": true}),
            json!({"all": [
                {"field": "verification_status", "operator": "eq", "value": "In Review"},
                {"field": "channel", "operator": "eq", "value": "whatsapp"},
                {"field": "trigger", "operator": "eq", "value": "otp_sent"},
                {"field": "line_status", "operator": "eq", "value": "active"},
                {"field": "roaming", "operator": "eq", "value": false},
                {"field": "ported", "operator": "eq", "value": true},
                {"field": "carrier_is_original", "operator": "eq", "value": true},
                {"field": "carrier_type", "operator": "eq", "value": "mobile"},
                {"field": "risk_level", "operator": "eq", "value": "medium"},
                {"field": "applicant_id", "operator": "starts_with", "value": "APP"},
                {"field": "applicant_country", "operator": "eq", "value": "GB"}
            ]}),
            json!({"field": "otp_attempts", "operator": "ne", "value": 2}),
            json!({"field": "risk_level", "operator": "in", "value": ["HIGH", "medium"]}),
            json!({"all": [
                {"field": "pumping_risk", "operator": "gte", "value": 30},
                {"field": "prefix_conversion_rate", "operator": "lt", "value": 0.5},
                {"field": "prefix_sends_1h", "operator": "gt", "value": 10},
                {"field": "geo_permitted", "operator": "eq", "value": true}
            ]}),
            json!({"field": "pumping_risk", "operator": "exists", "value": false}),
        ];
        let compiled = program(&conditions);
        let encoded = compiled.program.encode();
        let (_dir, db) = db();
        let runtime = PluginRuntime::new(db, Limits::default()).expect("runtime");
        let interpreter = runtime
            .load_interpreter(&testing::guest_component("workflow_interpreter"))
            .expect("loads");
        let scope = Scope {
            tenant_id: "tenant".to_owned(),
            plugin_id: "workflow-interpreter".to_owned(),
        };
        let mut voip = testing::event("voip");
        voip.phone.country = None;
        let mut uz = testing::event("landline");
        uz.phone.country = Some("UZ".into());
        uz.applicant_country = Some("US".into());
        for event in [rich(), testing::event("mobile"), voip, uz] {
            for explain in [false, true] {
                let (_, native) = evaluate(&compiled, &event, &Limits::default(), explain);
                let native = native.expect("evaluates natively");
                let (_, sandboxed) = block_on(runtime.invoke_interpreter(
                    &interpreter,
                    &scope,
                    0,
                    &event,
                    &encoded,
                    conditions.len(),
                    explain,
                ));
                let sandboxed = sandboxed.expect("evaluates in the sandbox");
                assert_eq!(native.matched, sandboxed.matched, "{event:?}");
                let outcomes: Vec<(u32, u32, bool, Option<String>)> = sandboxed
                    .explanation
                    .into_iter()
                    .map(|o| (o.rule, o.node, o.matched, o.value))
                    .collect();
                let native: Vec<(u32, u32, bool, Option<String>)> = native
                    .explanation
                    .into_iter()
                    .map(|o| (o.rule, o.node, o.matched, o.value))
                    .collect();
                assert_eq!(native, outcomes, "{event:?}");
            }
        }
    }
}
