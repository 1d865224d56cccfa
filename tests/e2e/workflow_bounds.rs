//! Declarative rules run natively in the host, bounded like a sandboxed call: valid
//! rules whose worst case needs more evaluation steps than the budget fail on a real
//! lookup, the failure is recorded on the report, and the tenant's
//! `on_plugin_failure` decides as it does when a sandboxed rule fails.

use serde_json::{json, Value};

use crate::support::*;

/// A rule at `phone_lookup_complete` whose 61 comparisons each look for a 64-byte
/// needle in the applicant id, and never find it: `any` of `any`s, so every one is
/// evaluated. Against a 128-byte applicant id each costs 65 windows of 64 bytes at
/// worst (4,160 steps); six such rules need about 1.5 million steps, past the default
/// budget of one million, while a short applicant id costs them almost nothing.
fn costly_rule(n: usize) -> Value {
    let needle = |i: usize| format!("{}{i:02}", "b".repeat(62));
    let tests = |range: std::ops::Range<usize>| -> Vec<Value> {
        range
            .map(|i| json!({"field": "applicant_id", "operator": "contains", "value": needle(i)}))
            .collect()
    };
    json!({
        "rule_id": format!("costly_{n}"),
        "trigger": "phone_lookup_complete",
        "conditions": {"any": [{"any": tests(0..31)}, {"any": tests(31..61)}]},
        "actions": [{"type": "add_flag", "flag": format!("costly_{n}")}]
    })
}

/// A lookup naming `applicant`, and its report.
async fn decided(
    server: &TestServer,
    tenant: &Tenant,
    phone: &str,
    applicant: &str,
) -> (Value, Value) {
    let answer = server
        .post(
            "/v1/phone/lookup",
            &tenant.key,
            json!({"phone": phone, "applicant_id": applicant}),
        )
        .await
        .expect(200)
        .clone();
    let id = answer["verification_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no verification id: {answer}"));
    let report = server.report(tenant, id).await;
    (answer, report)
}

/// The rule runs recorded at `phone_lookup_complete`.
fn runs(report: &Value) -> Vec<Value> {
    report["rules_fired"]
        .as_array()
        .unwrap_or_else(|| panic!("no rules_fired: {report}"))
        .iter()
        .filter(|run| run["trigger"] == "phone_lookup_complete")
        .cloned()
        .collect()
}

#[tokio::test]
async fn rules_over_the_step_budget_fail_and_the_tenant_s_failure_setting_decides() {
    let (server, tenant) = TestServer::with_tenant().await;
    // A lookup that names an applicant then decides a stored verification.
    server
        .settings(&tenant, json!({"require_otp": false}))
        .await;
    for n in 0..6 {
        server
            .post("/v1/workflows/rules", &tenant.key, costly_rule(n))
            .await
            .expect(201);
    }
    let long_applicant = "a".repeat(128);

    // Within the budget: a short applicant id; nothing matches and nothing failed.
    let (answer, report) = decided(&server, &tenant, &uz_number(1), "a").await;
    assert_ne!(answer["status"], "Declined", "{answer}");
    assert!(runs(&report).is_empty(), "{report}");

    // Fail open (the default): the failure is recorded, the lookup goes on.
    let (answer, report) = decided(&server, &tenant, &uz_number(2), &long_applicant).await;
    assert_ne!(answer["status"], "Declined", "{answer}");
    let failed = runs(&report);
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["source"], "workflow", "{report}");
    assert_eq!(failed[0]["name"], "workflow rules (6)", "{report}");
    assert_eq!(failed[0]["actions"], json!([]), "{report}");
    assert_eq!(failed[0]["error"]["kind"], "step_budget", "{report}");
    assert_eq!(failed[0]["error"]["steps"], 1_000_000, "{report}");
    assert_eq!(report["flags"], json!([]), "{report}");

    // Fail closed: the same failure declines.
    server
        .settings(&tenant, json!({"on_plugin_failure": "decline"}))
        .await;
    let (answer, report) = decided(&server, &tenant, &uz_number(3), &long_applicant).await;
    assert_eq!(answer["status"], "Declined", "{answer}");
    assert_eq!(runs(&report)[0]["error"]["kind"], "step_budget", "{report}");

    // The rule-test endpoint reports the same failure.
    let tested = server
        .post(
            "/v1/workflows/rules/test",
            &tenant.key,
            json!({"phone": uz_number(4), "applicant_id": long_applicant}),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(tested["error"]["kind"], "step_budget", "{tested}");
    assert_eq!(tested["matched"], json!([]), "{tested}");
}
