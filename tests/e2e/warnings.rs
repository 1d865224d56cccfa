//! Every verification warning end to end: what raises it, the action it leads to, the
//! report status that follows, and the fields each warning carries.

use serde_json::{json, Value};

use crate::support::*;

/// The trigger names of a verification's audit events, oldest first.
async fn triggers(server: &TestServer, tenant: &Tenant, id: &str) -> Vec<String> {
    let reply = server
        .get(&format!("/v1/verifications/{id}/events"), &tenant.key)
        .await;
    reply.expect(200)["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["trigger"].as_str().expect("trigger").to_owned())
        .collect()
}

#[tokio::test]
async fn a_blocklisted_number_is_declined_without_sending_a_code() {
    let (server, tenant) = TestServer::with_tenant().await;
    // Another number served while the tenant's blocklist is empty (which the server
    // remembers), so the first entry must end that at once.
    let before = server
        .send_otp(
            &tenant,
            json!({"phone": "+998901234568", "applicant_id": "a"}),
        )
        .await;
    assert_eq!(before.expect(200)["status"], "pending");
    let added = server
        .post(
            "/v1/blocklist",
            &tenant.key,
            json!({"phone": "+998 (90) 123-45-67", "reason": "chargeback"}),
        )
        .await;
    let entry = added.expect(201);
    assert_eq!(keys(entry), sorted(&["phone", "reason", "created_at"]));
    assert_eq!(entry["phone"], UZ_BEELINE, "stored in E.164");
    assert_eq!(entry["reason"], "chargeback");

    let list = server.get("/v1/blocklist", &tenant.key).await;
    let entries = list.expect(200)["entries"]
        .as_array()
        .expect("entries")
        .clone();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["phone"], UZ_BEELINE);

    let sent = server
        .send_otp(&tenant, json!({"phone": UZ_BEELINE, "applicant_id": "b"}))
        .await;
    let sent = sent.expect(200).clone();
    assert_eq!(sent["status"], "declined");
    assert_eq!(sent["expires_at"], Value::Null);
    assert_eq!(sent["resends_remaining"], 0);
    assert_eq!(risks(&sent["warnings"]), ["PHONE_NUMBER_IN_BLOCKLIST"]);
    let blocked = warning(&sent["warnings"], "PHONE_NUMBER_IN_BLOCKLIST");
    assert_warning(blocked, "PHONE_NUMBER_IN_BLOCKLIST", "Decline");
    assert_eq!(blocked["additional_data"], "chargeback");
    assert!(
        server.outbox(&tenant, UZ_BEELINE).await.is_empty(),
        "no code may be sent"
    );

    let id = sent["verification_id"].as_str().expect("id");
    let report = server.report(&tenant, id).await;
    assert_eq!(report["phone"]["status"], "Declined");
    assert_eq!(
        risks(&report["phone"]["warnings"]),
        ["PHONE_NUMBER_IN_BLOCKLIST"]
    );
    assert_eq!(
        triggers(&server, &tenant, id).await,
        [
            "phone_lookup_complete",
            "before_send_otp",
            "verification_completed"
        ]
    );
    server
        .verify(&tenant, UZ_BEELINE, "b", "123456")
        .await
        .error(409, "verification_closed");

    let removed = server
        .delete("/v1/blocklist/%2B998901234567", &tenant.key)
        .await;
    assert_eq!(removed.status, 204, "{}", removed.text);
    let list = server.get("/v1/blocklist", &tenant.key).await;
    assert_eq!(list.expect(200)["entries"], json!([]));
    server
        .delete("/v1/blocklist/+998901234567", &tenant.key)
        .await
        .error(404, "not_found");

    // The decision made for applicant b holds; another applicant is sent a code now.
    let held = server
        .send_otp(&tenant, json!({"phone": UZ_BEELINE, "applicant_id": "b"}))
        .await;
    let held = held.expect(200).clone();
    assert_eq!(held["status"], "declined");
    assert_eq!(held["verification_id"], id, "the decision holds");
    assert!(server.outbox(&tenant, UZ_BEELINE).await.is_empty());
    let again = server.send(&tenant, UZ_BEELINE, "c").await;
    assert_ne!(
        again["verification_id"], id,
        "a declined verification is not reopened"
    );
    assert_eq!(again["warnings"], json!([]));
}

#[tokio::test]
async fn a_blocklist_entry_can_be_removed_in_any_formatting() {
    let (server, tenant) = TestServer::with_tenant().await;
    // Lookups follow the blocklist as it changes (what they cached of it goes too).
    let blocked = || async {
        let looked = server
            .post(
                "/v1/phone/lookup",
                &tenant.key,
                json!({"phone": UZ_BEELINE}),
            )
            .await;
        risks(&looked.expect(200)["warnings"]).contains(&"PHONE_NUMBER_IN_BLOCKLIST".to_owned())
    };
    assert!(!blocked().await);
    server
        .post("/v1/blocklist", &tenant.key, json!({"phone": UZ_BEELINE}))
        .await
        .expect(201);
    assert!(blocked().await);
    let removed = server
        .delete("/v1/blocklist/+998%2090%20123%2045%2067", &tenant.key)
        .await;
    assert_eq!(removed.status, 204, "{}", removed.text);
    assert_eq!(
        server.get("/v1/blocklist", &tenant.key).await.expect(200)["entries"],
        json!([])
    );
    assert!(!blocked().await);
}

#[tokio::test]
async fn a_risk_score_at_the_high_threshold_declines_as_high_risk() {
    let (server, tenant) = TestServer::with_tenant().await;
    server
        .settings(&tenant, json!({"risk_contributions": {"voip_number": 60}}))
        .await;
    let sent = server
        .send_otp(&tenant, json!({"phone": UK_VOIP, "applicant_id": "a"}))
        .await;
    let sent = sent.expect(200).clone();
    assert_eq!(sent["status"], "declined");
    let high = warning(&sent["warnings"], "HIGH_RISK_PHONE_NUMBER");
    assert_warning(high, "HIGH_RISK_PHONE_NUMBER", "Decline");
    assert_eq!(high["additional_data"], "risk score 60 of 100");
    assert!(server.outbox(&tenant, UK_VOIP).await.is_empty());
    let report = server
        .report(&tenant, sent["verification_id"].as_str().expect("id"))
        .await;
    assert_eq!(report["phone"]["status"], "Declined");
}

#[tokio::test]
async fn a_lowered_high_risk_threshold_flags_a_country_mismatch_in_lookups() {
    let (server, tenant) = TestServer::with_tenant().await;
    let lookup = |country: &'static str| {
        let api = server.api.clone();
        let key = tenant.key.clone();
        async move {
            api.post(
                "/v1/phone/lookup",
                &key,
                json!({"phone": UZ_BEELINE, "applicant_country": country}),
            )
            .await
            .expect(200)
            .clone()
        }
    };
    assert_eq!(
        lookup("US").await["warnings"],
        json!([]),
        "15 is below the default threshold of 60"
    );

    server
        .settings(
            &tenant,
            json!({"medium_risk_threshold": 10, "high_risk_threshold": 15}),
        )
        .await;
    let flagged = lookup("US").await;
    assert_eq!(flagged["risk_assessment"]["risk_level"], "high");
    assert_eq!(risks(&flagged["warnings"]), ["HIGH_RISK_PHONE_NUMBER"]);
    assert_warning(&flagged["warnings"][0], "HIGH_RISK_PHONE_NUMBER", "Decline");
    assert_eq!(lookup("UZ").await["warnings"], json!([]));
}

#[tokio::test]
async fn a_number_on_the_built_in_disposable_list_is_declined() {
    let (server, tenant) = TestServer::with_tenant().await;
    let sent = server
        .send_otp(
            &tenant,
            json!({"phone": UK_DISPOSABLE, "applicant_id": "a"}),
        )
        .await;
    let sent = sent.expect(200).clone();
    assert_eq!(sent["status"], "declined");
    assert_eq!(risks(&sent["warnings"]), ["DISPOSABLE_NUMBER_DETECTED"]);
    assert_warning(
        &sent["warnings"][0],
        "DISPOSABLE_NUMBER_DETECTED",
        "Decline",
    );
    assert!(server.outbox(&tenant, UK_DISPOSABLE).await.is_empty());

    let report = server
        .report(&tenant, sent["verification_id"].as_str().expect("id"))
        .await;
    assert_eq!(report["phone"]["status"], "Declined");
    assert_eq!(report["phone"]["is_disposable"], true);
    assert_eq!(report["phone"]["carrier"]["type"], "landline");
}

#[tokio::test]
async fn the_ofcom_drama_mobile_range_is_refused_as_not_a_valid_number() {
    // +44 7700 900xxx is on the built-in disposable list, but libphonenumber does not
    // accept the range as a valid UK number, so it never reaches the disposable check.
    let (server, tenant) = TestServer::with_tenant().await;
    let reply = server
        .send_otp(
            &tenant,
            json!({"phone": "+447700900123", "applicant_id": "a"}),
        )
        .await;
    let error = reply.error(422, "invalid_phone_number");
    assert_eq!(error["reason"], "INVALID_FOR_REGION");
    assert_eq!(error["field"], "phone");
}

#[tokio::test]
async fn the_tenant_disposable_list_applies_with_the_configured_action() {
    let (server, tenant) = TestServer::with_tenant().await;
    server
        .settings(
            &tenant,
            json!({"disposable_numbers": ["+99890123"], "risk_actions": {"DISPOSABLE_NUMBER_DETECTED": "Review"}}),
        )
        .await;
    let sent = server.send(&tenant, UZ_BEELINE, "a").await;
    assert_warning(&sent["warnings"][0], "DISPOSABLE_NUMBER_DETECTED", "Review");
    let code = server.latest_code(&tenant, UZ_BEELINE).await;
    let verified = server.verify(&tenant, UZ_BEELINE, "a", &code).await;
    let verified = verified.expect(200);
    assert_eq!(verified["verification_status"], "verified");
    assert_eq!(verified["status"], "In Review");
    let report = server
        .report(&tenant, sent["verification_id"].as_str().expect("id"))
        .await;
    assert_eq!(report["phone"]["status"], "In Review");
    assert_eq!(report["phone"]["is_disposable"], true);

    // A number outside the listed prefix is clean.
    let clean = server.send(&tenant, "+998911234567", "a").await;
    assert_eq!(clean["warnings"], json!([]));

    // Approve keeps the warning for information only.
    server
        .settings(
            &tenant,
            json!({"risk_actions": {"DISPOSABLE_NUMBER_DETECTED": "Approve"}}),
        )
        .await;
    let phone = uz_number(50);
    let sent = server.send(&tenant, &phone, "b").await;
    assert_warning(
        &sent["warnings"][0],
        "DISPOSABLE_NUMBER_DETECTED",
        "Approve",
    );
    let code = server.latest_code(&tenant, &phone).await;
    let verified = server.verify(&tenant, &phone, "b", &code).await;
    assert_eq!(verified.expect(200)["status"], "Approved");
}

#[tokio::test]
async fn a_voip_number_is_flagged_for_review() {
    let (server, tenant) = TestServer::with_tenant().await;
    let valid = server
        .post("/v1/phone/validate", &tenant.key, json!({"phone": UK_VOIP}))
        .await;
    assert_eq!(valid.expect(200)["validation"]["type"], "voip");

    let sent = server.send(&tenant, UK_VOIP, "a").await;
    assert_eq!(risks(&sent["warnings"]), ["VOIP_NUMBER_DETECTED"]);
    assert_warning(&sent["warnings"][0], "VOIP_NUMBER_DETECTED", "Review");
    let code = server.latest_code(&tenant, UK_VOIP).await;
    let verified = server.verify(&tenant, UK_VOIP, "a", &code).await;
    let verified = verified.expect(200);
    assert_eq!(verified["status"], "In Review");
    assert_eq!(verified["phone_intelligence"]["type"], "voip");
    assert_eq!(verified["phone_intelligence"]["risk_score"], 15);

    let report = server
        .report(&tenant, sent["verification_id"].as_str().expect("id"))
        .await;
    let phone = &report["phone"];
    assert_eq!(phone["status"], "In Review");
    assert_eq!(phone["is_virtual"], true);
    assert_eq!(phone["carrier"]["type"], "voip");
    assert_eq!(phone["country_code"], "GB");
    assert_eq!(phone["country_iso3"], "GBR");
}

#[tokio::test]
async fn block_voip_declines_voip_numbers() {
    let (server, tenant) = TestServer::with_tenant().await;
    server.settings(&tenant, json!({"block_voip": true})).await;
    let sent = server
        .send_otp(&tenant, json!({"phone": UK_VOIP, "applicant_id": "a"}))
        .await;
    let sent = sent.expect(200);
    assert_eq!(sent["status"], "declined");
    assert_warning(&sent["warnings"][0], "VOIP_NUMBER_DETECTED", "Decline");
    assert!(server.outbox(&tenant, UK_VOIP).await.is_empty());
}

#[tokio::test]
async fn voip_numbers_pass_without_a_warning_when_flagging_is_off() {
    let (server, tenant) = TestServer::with_tenant().await;
    server.settings(&tenant, json!({"flag_voip": false})).await;
    let verified = server.send_and_verify(&tenant, UK_VOIP, "a").await;
    assert_eq!(verified["warnings"], json!([]));
    assert_eq!(verified["status"], "Approved");
}

#[tokio::test]
async fn a_number_verified_for_another_applicant_is_a_duplicate_for_review() {
    let (server, tenant) = TestServer::with_tenant().await;
    let first = server.send_and_verify(&tenant, UZ_BEELINE, "alice").await;
    assert_eq!(first["status"], "Approved");

    let sent = server.send(&tenant, UZ_BEELINE, "bob").await;
    let duplicate = warning(&sent["warnings"], "DUPLICATED_PHONE_NUMBER");
    assert_warning(duplicate, "DUPLICATED_PHONE_NUMBER", "Review");
    assert_eq!(duplicate["additional_data"], "verified for applicant alice");
    let code = server.latest_code(&tenant, UZ_BEELINE).await;
    let verified = server.verify(&tenant, UZ_BEELINE, "bob", &code).await;
    let verified = verified.expect(200);
    assert_eq!(verified["status"], "In Review");
    let report = server
        .report(&tenant, sent["verification_id"].as_str().expect("id"))
        .await;
    assert_eq!(report["phone"]["status"], "In Review");
    assert_eq!(
        risks(&report["phone"]["warnings"]),
        ["DUPLICATED_PHONE_NUMBER"]
    );

    // The first applicant verifying again is not a duplicate of itself.
    let again = server.send_and_verify(&tenant, UZ_BEELINE, "alice").await;
    assert_eq!(again["status"], "Approved");
    assert_eq!(again["warnings"], json!([]));
}

#[tokio::test]
async fn a_number_verified_meanwhile_for_another_applicant_is_caught_at_verify() {
    let (server, tenant) = TestServer::with_tenant().await;
    server.send(&tenant, UZ_BEELINE, "alice").await;
    let alice_code = server.latest_code(&tenant, UZ_BEELINE).await;
    let sent = server.send(&tenant, UZ_BEELINE, "bob").await;
    assert_eq!(sent["warnings"], json!([]));
    let bob_code = server.latest_code(&tenant, UZ_BEELINE).await;

    server
        .verify(&tenant, UZ_BEELINE, "alice", &alice_code)
        .await
        .expect(200);
    let verified = server.verify(&tenant, UZ_BEELINE, "bob", &bob_code).await;
    let verified = verified.expect(200);
    assert_eq!(verified["verification_status"], "verified");
    assert_eq!(verified["status"], "In Review");
    assert_warning(
        &verified["warnings"][0],
        "DUPLICATED_PHONE_NUMBER",
        "Review",
    );
}

#[tokio::test]
async fn duplicate_numbers_are_declined_when_the_tenant_says_so() {
    let (server, tenant) = TestServer::with_tenant().await;
    server
        .settings(
            &tenant,
            json!({"risk_actions": {"DUPLICATED_PHONE_NUMBER": "Decline"}}),
        )
        .await;
    server.send_and_verify(&tenant, UZ_BEELINE, "alice").await;

    let sent = server
        .send_otp(&tenant, json!({"phone": UZ_BEELINE, "applicant_id": "bob"}))
        .await;
    let sent = sent.expect(200).clone();
    assert_eq!(sent["status"], "declined");
    assert_warning(&sent["warnings"][0], "DUPLICATED_PHONE_NUMBER", "Decline");
    let report = server
        .report(&tenant, sent["verification_id"].as_str().expect("id"))
        .await;
    assert_eq!(report["phone"]["status"], "Declined");
    assert_eq!(
        server.outbox(&tenant, UZ_BEELINE).await.len(),
        1,
        "only alice's code was sent"
    );
}

#[tokio::test]
async fn several_warnings_combine_and_the_strongest_action_decides() {
    let (server, tenant) = TestServer::with_tenant().await;
    server
        .settings(
            &tenant,
            json!({"disposable_numbers": ["+4456"], "risk_actions": {"DISPOSABLE_NUMBER_DETECTED": "Approve"}}),
        )
        .await;
    let sent = server.send(&tenant, UK_VOIP, "a").await;
    let mut tags = risks(&sent["warnings"]);
    tags.sort();
    assert_eq!(tags, ["DISPOSABLE_NUMBER_DETECTED", "VOIP_NUMBER_DETECTED"]);
    let code = server.latest_code(&tenant, UK_VOIP).await;
    let verified = server.verify(&tenant, UK_VOIP, "a", &code).await;
    assert_eq!(
        verified.expect(200)["status"],
        "In Review",
        "Review beats Approve"
    );
}

#[tokio::test]
async fn block_virtual_declines_personal_numbers_as_voip() {
    let uk_personal = "+447012345678";
    let (server, tenant) = TestServer::with_tenant().await;
    let valid = server
        .post(
            "/v1/phone/validate",
            &tenant.key,
            json!({"phone": uk_personal}),
        )
        .await;
    assert_eq!(valid.expect(200)["validation"]["type"], "virtual");
    // Not blocked by default: a personal number only adds to the risk score.
    let allowed = server.send(&tenant, uk_personal, "a").await;
    assert_eq!(allowed["warnings"], json!([]));

    server
        .settings(&tenant, json!({"block_virtual": true}))
        .await;
    let sent = server
        .send_otp(&tenant, json!({"phone": uk_personal, "applicant_id": "b"}))
        .await;
    let sent = sent.expect(200).clone();
    assert_eq!(sent["status"], "declined");
    assert_warning(&sent["warnings"][0], "VOIP_NUMBER_DETECTED", "Decline");
    assert_eq!(
        sent["warnings"][0]["additional_data"],
        "virtual (personal) number"
    );
    let report = server
        .report(&tenant, sent["verification_id"].as_str().expect("id"))
        .await;
    assert_eq!(report["phone"]["is_virtual"], true);
    assert_eq!(report["phone"]["status"], "Declined");
}

#[tokio::test]
async fn a_listed_fraud_carrier_adds_its_factor_and_can_make_a_number_high_risk() {
    let (server, tenant) = TestServer::with_tenant().await;
    server
        .settings(&tenant, json!({"known_fraud_carriers": ["beeline"]}))
        .await;
    let lookup = server
        .post(
            "/v1/phone/lookup",
            &tenant.key,
            json!({"phone": UZ_BEELINE}),
        )
        .await;
    let lookup = lookup.expect(200).clone();
    assert_eq!(
        lookup["risk_assessment"]["factors"],
        json!([{"factor": "known_fraud_carrier", "contribution": 35, "details": "Beeline is listed as a fraud carrier"}])
    );
    assert_eq!(lookup["risk_assessment"]["risk_level"], "medium");
    assert_eq!(lookup["warnings"], json!([]));

    server
        .settings(
            &tenant,
            json!({"risk_contributions": {"known_fraud_carrier": 70}}),
        )
        .await;
    let sent = server
        .send_otp(&tenant, json!({"phone": UZ_BEELINE, "applicant_id": "a"}))
        .await;
    let sent = sent.expect(200);
    assert_eq!(sent["status"], "declined");
    assert_warning(&sent["warnings"][0], "HIGH_RISK_PHONE_NUMBER", "Decline");
}
