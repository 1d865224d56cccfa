//! Conversion feedback end to end: `POST /v1/verifications/{id}/feedback` records what
//! the app says became of a verification, on its report and audit trail; repeats
//! change nothing, changes are bounded, and bad input or another tenant's id is
//! refused.

use serde_json::{json, Value};

use crate::support::*;

async fn feedback(server: &TestServer, tenant: &Tenant, id: &str, body: Value) -> Reply {
    server
        .post(
            &format!("/v1/verifications/{id}/feedback"),
            &tenant.key,
            body,
        )
        .await
}

async fn feedback_events(server: &TestServer, tenant: &Tenant, id: &str) -> Vec<String> {
    let reply = server
        .get(&format!("/v1/verifications/{id}/events"), &tenant.key)
        .await;
    reply.expect(200)["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|event| event["trigger"] == "feedback")
        .map(|event| event["detail"].as_str().expect("detail").to_owned())
        .collect()
}

#[tokio::test]
async fn feedback_is_kept_on_the_report_and_the_audit_trail() {
    let (server, tenant) = TestServer::with_tenant().await;
    let sent = server.send(&tenant, UZ_BEELINE, "a").await;
    let id = sent["verification_id"].as_str().expect("id").to_owned();
    let report = server.report(&tenant, &id).await;
    assert_eq!(report["feedback"], Value::Null, "none yet");

    // The app checked the code itself and the user signed up.
    let given = feedback(&server, &tenant, &id, json!({"outcome": "verified"})).await;
    let given = given.expect(200).clone();
    assert_eq!(keys(&given), sorted(&["outcome", "at", "reports"]));
    assert_eq!(given["outcome"], "verified");
    assert_eq!(given["reports"], 1);
    let report = server.report(&tenant, &id).await;
    assert_eq!(report["feedback"], given);
    // Dialgate's own decision is not overwritten by the app's word.
    assert_eq!(report["phone"]["status"], "Not Finished");

    // The same outcome again changes nothing.
    let again = feedback(&server, &tenant, &id, json!({"outcome": "verified"})).await;
    assert_eq!(again.expect(200), &given);
    assert_eq!(feedback_events(&server, &tenant, &id).await, ["verified"]);

    // Another outcome replaces it and is on the trail too.
    let fraud = feedback(&server, &tenant, &id, json!({"outcome": "fraud"})).await;
    assert_eq!(fraud.expect(200)["reports"], 2);
    assert_eq!(
        feedback_events(&server, &tenant, &id).await,
        ["verified", "fraud"]
    );
}

#[tokio::test]
async fn feedback_changes_are_bounded_and_bad_feedback_is_refused() {
    let (server, tenant) = TestServer::with_tenant().await;
    let sent = server.send(&tenant, UZ_BEELINE, "a").await;
    let id = sent["verification_id"].as_str().expect("id").to_owned();

    let cases = [
        (json!({"outcome": "converted"}), "outcome"),
        (json!({}), "outcome"),
        (json!({"outcome": "fraud", "note": "x"}), "note"),
    ];
    for (body, field) in cases {
        let reply = feedback(&server, &tenant, &id, body.clone()).await;
        let error = reply.error(422, "invalid_field");
        assert!(
            error["message"].as_str().is_some_and(|m| m.contains(field)),
            "{body}: {}",
            reply.text
        );
    }
    feedback(
        &server,
        &tenant,
        "no-such-verification",
        json!({"outcome": "fraud"}),
    )
    .await
    .error(404, "not_found");
    // Another tenant cannot see or touch this verification.
    let other = server.tenant("other").await;
    feedback(&server, &other, &id, json!({"outcome": "fraud"}))
        .await
        .error(404, "not_found");

    // An app that flips the outcome forever is stopped after ten changes.
    let outcomes = ["verified", "not_verified"];
    for n in 0..10 {
        let reply = feedback(&server, &tenant, &id, json!({"outcome": outcomes[n % 2]})).await;
        assert_eq!(reply.expect(200)["reports"], n + 1);
    }
    let stopped = feedback(&server, &tenant, &id, json!({"outcome": "fraud"})).await;
    stopped.error(409, "feedback_limit");
    assert_eq!(feedback_events(&server, &tenant, &id).await.len(), 10);
    let report = server.report(&tenant, &id).await;
    assert_eq!(report["feedback"]["outcome"], "not_verified");
}
