//! Unit tests of the backtest's replay and comparison: taking the rules' effects off,
//! merging a candidate's runs into a recorded chain, the outcome and would-be status,
//! flag and case differences, and the tally's bounds.

use serde_json::json;

use super::*;
use crate::model::rules::Failure;

/// A stored verification of a VOIP number with `status` and no audit trail.
fn stored(status: &str) -> Verification {
    serde_json::from_value(json!({
        "id": "0190a000-0000-7000-8000-000000000001",
        "tenant_id": "t",
        "applicant_id": "a",
        "phone": {
            "e164": "+445612345678", "calling_code": 44, "national_number": "5612345678",
            "region": "GB", "line_type": "voip", "carrier_name": null, "is_disposable": false
        },
        "channel": "sms",
        "language": "en",
        "status": status,
        "otp_verified": status == "Approved",
        "code": {"active": null, "attempts": 1, "max_attempts": 5},
        "sends": 1,
        "risk": {"risk_score": 20, "risk_level": "low", "factors": []},
        "warnings": [],
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "verified_at": null,
    }))
    .expect("a verification")
}

fn audit(trigger: &str, status: ReportStatus, rules: Vec<RuleRun>) -> AuditEvent {
    AuditEvent {
        at: "2026-01-01T00:00:00Z".parse().expect("time"),
        trigger: trigger.to_owned(),
        status,
        detail: None,
        rules,
    }
}

fn run(source: RuleSource, id: &str, actions: Vec<RuleAction>) -> RuleRun {
    RuleRun {
        source,
        plugin_id: id.to_owned(),
        name: id.to_owned(),
        version: "1".to_owned(),
        actions,
        error: None,
        fuel: 0,
        micros: 0,
    }
}

fn decline() -> RuleAction {
    RuleAction::Decline {
        reason: "no".to_owned(),
    }
}

fn flag(name: &str) -> RuleAction {
    RuleAction::AddFlag {
        flag: name.to_owned(),
    }
}

/// Replays `events` of `verification` with the recorded runs (baseline) and with
/// `fresh(trigger)` in place of every declarative rule (candidate).
fn replay(
    mut verification: Verification,
    events: Vec<AuditEvent>,
    fresh: impl Fn(Trigger) -> Vec<RuleRun>,
    orders: &Orders,
) -> Compared {
    let settings = PhoneSettings::default();
    let status = verification.status;
    strip_rule_effects(&mut verification, &events, &settings);
    let mut baseline = Replay::new(verification.clone());
    let mut candidate = Replay::new(verification);
    for event in &events {
        let trigger = Trigger::from_name(&event.trigger).expect("a trigger");
        baseline
            .apply(trigger, event, &event.rules, &settings, true)
            .expect("applies");
        if candidate.stopped {
            continue;
        }
        let _ = candidate.event(trigger, event, false);
        let runs = merge(
            &event.rules,
            &|run| run.source == RuleSource::Workflow,
            fresh(trigger),
            orders,
        );
        candidate
            .apply(trigger, event, &runs, &settings, blocks(&event.rules))
            .expect("applies");
    }
    compare(status, &baseline, &candidate)
}

#[test]
fn a_declining_candidate_would_decline_an_approved_verification() {
    let events = vec![
        audit("phone_lookup_complete", ReportStatus::NotFinished, vec![]),
        audit("verification_completed", ReportStatus::Approved, vec![]),
    ];
    let compared = replay(
        stored("Approved"),
        events,
        |trigger| match trigger {
            Trigger::PhoneLookupComplete => {
                vec![run(RuleSource::Workflow, "no_voip", vec![decline()])]
            }
            _ => vec![],
        },
        &Orders::default(),
    );
    assert_eq!(compared.outcome, Outcome::WouldDecline);
    assert_eq!(compared.recorded_verdict, RiskAction::Approve);
    assert_eq!(compared.would_be_verdict, RiskAction::Decline);
    assert_eq!(compared.would_be_status, ReportStatus::Declined);
}

#[test]
fn the_same_rules_change_nothing() {
    let recorded = vec![run(
        RuleSource::Workflow,
        "review_voip",
        vec![RuleAction::Review, flag("voip")],
    )];
    let events = vec![audit(
        "phone_lookup_complete",
        ReportStatus::NotFinished,
        recorded.clone(),
    )];
    let mut verification = stored("In Review");
    verification.flags = vec!["voip".to_owned()];
    let compared = replay(
        verification,
        events,
        |_| recorded.clone(),
        &Orders::default(),
    );
    assert_eq!(compared.outcome, Outcome::Unchanged);
    assert_eq!(compared.would_be_status, ReportStatus::InReview);
    assert!(compared.flags_added.is_empty() && compared.flags_removed.is_empty());
}

#[test]
fn removing_a_reviewing_rule_would_approve_and_drop_its_flag_and_case() {
    let case = RuleAction::CreateCase {
        case_type: "fraud".to_owned(),
        priority: "high".to_owned(),
        title: "VOIP".to_owned(),
    };
    let events = vec![
        audit(
            "phone_lookup_complete",
            ReportStatus::NotFinished,
            vec![run(
                RuleSource::Workflow,
                "review_voip",
                vec![RuleAction::Review, flag("voip"), case],
            )],
        ),
        audit("verification_completed", ReportStatus::InReview, vec![]),
    ];
    let compared = replay(stored("In Review"), events, |_| vec![], &Orders::default());
    assert_eq!(compared.outcome, Outcome::WouldApprove);
    assert_eq!(compared.would_be_status, ReportStatus::Approved);
    assert_eq!(compared.flags_removed, vec!["voip".to_owned()]);
    assert_eq!(compared.cases_removed, vec!["fraud".to_owned()]);
}

#[test]
fn an_open_verification_stays_open_unless_declined() {
    let events = vec![audit(
        "phone_lookup_complete",
        ReportStatus::NotFinished,
        vec![],
    )];
    let compared = replay(
        stored("Not Finished"),
        events,
        |_| vec![run(RuleSource::Workflow, "r", vec![RuleAction::Review])],
        &Orders::default(),
    );
    assert_eq!(compared.outcome, Outcome::WouldReview);
    assert_eq!(compared.would_be_status, ReportStatus::NotFinished);
}

#[test]
fn code_plugins_stay_as_recorded_and_a_new_block_ends_the_replay() {
    // The recorded chain: a code plugin that flags, then (at a later trigger) one that
    // declines. A candidate block at the first trigger, ordered before the plugin,
    // ends the chain there: the plugin's flag and the later decline never happen.
    let plugin = run(RuleSource::Plugin, "flagger", vec![flag("seen")]);
    let events = vec![
        audit(
            "phone_lookup_complete",
            ReportStatus::NotFinished,
            vec![plugin],
        ),
        audit(
            "otp_sent",
            ReportStatus::NotFinished,
            vec![run(RuleSource::Plugin, "late", vec![flag("late")])],
        ),
    ];
    let orders = Orders {
        workflows: [("blocker".to_owned(), 1)].into(),
        plugins: [("flagger".to_owned(), 5), ("late".to_owned(), 5)].into(),
        failed_workflows: 1,
    };
    let compared = replay(
        stored("Not Finished"),
        events,
        |trigger| match trigger {
            Trigger::PhoneLookupComplete => vec![run(
                RuleSource::Workflow,
                "blocker",
                vec![RuleAction::Block {
                    reason: "blocked".to_owned(),
                }],
            )],
            _ => vec![],
        },
        &orders,
    );
    assert_eq!(compared.outcome, Outcome::WouldDecline);
    assert_eq!(
        compared.flags_removed,
        vec!["seen".to_owned(), "late".to_owned()]
    );
}

#[test]
fn merge_puts_fresh_runs_in_run_order_and_keeps_unknown_runs_in_place() {
    let recorded = vec![
        run(RuleSource::Plugin, "first", vec![]),
        run(RuleSource::Workflow, "old_rule", vec![]),
        run(RuleSource::Plugin, "gone", vec![]),
        run(RuleSource::Plugin, "last", vec![]),
    ];
    let orders = Orders {
        workflows: [("new_rule".to_owned(), 50)].into(),
        plugins: [("first".to_owned(), 10), ("last".to_owned(), 90)].into(),
        failed_workflows: 0,
    };
    let merged = merge(
        &recorded,
        &|run| run.source == RuleSource::Workflow,
        vec![run(RuleSource::Workflow, "new_rule", vec![])],
        &orders,
    );
    let names: Vec<&str> = merged.iter().map(|run| run.name.as_str()).collect();
    assert_eq!(names, ["first", "gone", "new_rule", "last"]);
}

#[test]
fn a_rule_set_risk_and_its_warning_are_taken_off_before_the_replay() {
    let mut verification = stored("Declined");
    let settings = PhoneSettings::default();
    verification.risk = verification.risk.clone().with_factor(
        crate::phone::risk::FactorHit {
            factor: "rule_risk".to_owned(),
            contribution: 80,
            details: "set".to_owned(),
        },
        &settings.risk_policy(),
    );
    verification.warnings.push(crate::warnings::Warning::new(
        Risk::HighRiskPhoneNumber,
        RiskAction::Decline,
        Some("risk score 100 of 100 after rule r".to_owned()),
    ));
    let events = vec![audit(
        "phone_lookup_complete",
        ReportStatus::NotFinished,
        vec![run(
            RuleSource::Workflow,
            "r",
            vec![RuleAction::SetRisk {
                factor: "rule_risk".to_owned(),
                contribution: 80,
                details: "set".to_owned(),
            }],
        )],
    )];
    let mut base = verification.clone();
    strip_rule_effects(&mut base, &events, &settings);
    assert!(base.warnings.is_empty());
    assert!(base.risk.factors.is_empty());
    assert_eq!(base.risk.risk_score, 0);
    let compared = replay(verification, events, |_| vec![], &Orders::default());
    assert_eq!(compared.outcome, Outcome::WouldApprove);
}

#[test]
fn the_tally_counts_bounds_names_and_keeps_a_few_examples() {
    let mut tally = Tally::default();
    let failed = RuleRun {
        error: Some(Failure::Timeout { ms: 10 }),
        ..run(RuleSource::Plugin, "p", vec![])
    };
    for n in 0..(MAX_NAMES + 10) {
        let compared = Compared {
            outcome: Outcome::WouldDecline,
            recorded_status: ReportStatus::Approved,
            recorded_verdict: RiskAction::Approve,
            would_be_status: ReportStatus::Declined,
            would_be_verdict: RiskAction::Decline,
            flags_added: vec![format!("flag{n}")],
            flags_removed: vec![],
            cases_added: vec![],
            cases_removed: vec![],
        };
        let mut part = Tally::default();
        part.note(
            &compared,
            &[(Trigger::OtpSent, failed.clone())],
            |compared| Example {
                verification_id: format!("v{n}"),
                created_at: chrono::Utc::now(),
                recorded_status: compared.recorded_status,
                recorded_verdict: compared.recorded_verdict,
                would_be_status: compared.would_be_status,
                would_be_verdict: compared.would_be_verdict,
                responsible: vec![],
                flags_added: vec![],
                flags_removed: vec![],
                cases_added: vec![],
                cases_removed: vec![],
            },
        );
        tally.merge(part);
    }
    let total = (MAX_NAMES + 10) as u64;
    assert_eq!(tally.scanned, total);
    assert_eq!(tally.outcomes[&Outcome::WouldDecline], total);
    assert_eq!(tally.flags_added.len(), MAX_NAMES + 1);
    assert_eq!(tally.flags_added["(other)"], 10);
    assert_eq!(tally.failures["timeout"], total);
    assert_eq!(tally.failed_verifications, total);
    let examples = &tally.examples[&Outcome::WouldDecline];
    assert_eq!(examples.len(), MAX_EXAMPLES);
    assert_eq!(examples[0].verification_id, "v0", "newest first, in order");
}
