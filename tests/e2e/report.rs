//! The documents the server answers with, field by field: the verification report
//! (seed 003), the lookup answer and the validation answer (seed 004).

use chrono::Duration;
use dialgate::clock::Clock;
use serde_json::{json, Value};

use crate::support::*;

/// The document's fields, then what rules and providers add.
const REPORT_FIELDS: &[&str] = &[
    "verification_id",
    "applicant_id",
    "created_at",
    "updated_at",
    "phone",
    "risk_assessment",
    "flags",
    "decisions",
    "cases",
    "info_requested",
    "otp_required",
    "route",
    "avoided_routes",
    "channel_workflow",
    "messages",
    "deliveries",
    "rules_fired",
    "review",
    "message",
    "feedback",
];
const PHONE_FIELDS: &[&str] = &[
    "status",
    "phone_number_prefix",
    "phone_number",
    "full_number",
    "country_code",
    "country_iso3",
    "country_name",
    "carrier",
    "is_disposable",
    "is_virtual",
    "verification_method",
    "verification_attempts",
    "warnings",
    "verified_at",
];

#[tokio::test]
async fn the_report_follows_the_report_document_from_not_finished_to_approved() {
    let (server, tenant) = TestServer::with_tenant().await;
    let created = server.clock.now();
    let sent = server.send(&tenant, UZ_BEELINE, "applicant-7").await;
    let id = sent["verification_id"].as_str().expect("id").to_owned();

    let report = server.report(&tenant, &id).await;
    assert_eq!(keys(&report), sorted(REPORT_FIELDS));
    assert_eq!(keys(&report["phone"]), sorted(PHONE_FIELDS));
    assert_eq!(report["verification_id"], id.as_str());
    assert_eq!(report["applicant_id"], "applicant-7");
    assert_eq!(timestamp(&report["created_at"]), created);
    let phone = &report["phone"];
    assert_eq!(phone["status"], "Not Finished");
    assert_eq!(phone["phone_number_prefix"], "+998");
    assert_eq!(phone["phone_number"], "901234567");
    assert_eq!(phone["full_number"], UZ_BEELINE);
    // The document's type says ISO 3166-1 alpha-2; the dialling code is the prefix.
    assert_eq!(phone["country_code"], "UZ");
    assert_eq!(phone["country_iso3"], "UZB");
    assert_eq!(phone["country_name"], "Uzbekistan");
    assert_eq!(
        phone["carrier"],
        json!({"name": "Beeline", "type": "mobile"})
    );
    assert_eq!(phone["is_disposable"], false);
    assert_eq!(phone["is_virtual"], false);
    assert_eq!(phone["verification_method"], "sms");
    assert_eq!(phone["verification_attempts"], 0);
    assert_eq!(phone["warnings"], json!([]));
    assert_eq!(phone["verified_at"], Value::Null);

    server.advance(Duration::minutes(2));
    let code = server.latest_code(&tenant, UZ_BEELINE).await;
    let verified = server
        .verify(&tenant, UZ_BEELINE, "applicant-7", &code)
        .await;
    let verified = verified.expect(200).clone();

    let report = server.report(&tenant, &id).await;
    assert_eq!(keys(&report["phone"]), sorted(PHONE_FIELDS));
    let phone = &report["phone"];
    assert_eq!(phone["status"], "Approved");
    assert_eq!(phone["verification_attempts"], 1);
    assert_eq!(phone["verified_at"], verified["verified_at"]);
    assert_eq!(
        timestamp(&phone["verified_at"]),
        created + Duration::minutes(2)
    );
    assert_eq!(timestamp(&report["created_at"]), created);
    assert_eq!(
        timestamp(&report["updated_at"]),
        created + Duration::minutes(2)
    );
}

#[tokio::test]
async fn a_voice_channel_is_reported_as_call() {
    let (server, tenant) = TestServer::with_tenant().await;
    for (n, channel) in [(1, "voice"), (2, "call")] {
        let phone = uz_number(n);
        let reply = server
            .send_otp(
                &tenant,
                json!({"phone": phone, "applicant_id": "a", "channel": channel}),
            )
            .await;
        let sent = reply.expect(200).clone();
        assert_eq!(sent["channel"], "voice");
        assert_eq!(server.outbox(&tenant, &phone).await[0]["channel"], "voice");
        let report = server
            .report(&tenant, sent["verification_id"].as_str().expect("id"))
            .await;
        assert_eq!(report["phone"]["verification_method"], "call");
    }
}

#[tokio::test]
async fn other_channels_are_reported_by_name() {
    let (server, tenant) = TestServer::with_tenant().await;
    for (n, channel) in [(1, "whatsapp"), (2, "viber"), (3, "telegram")] {
        let phone = uz_number(n);
        let reply = server
            .send_otp(
                &tenant,
                json!({"phone": phone, "applicant_id": "a", "channel": channel}),
            )
            .await;
        let sent = reply.expect(200).clone();
        let report = server
            .report(&tenant, sent["verification_id"].as_str().expect("id"))
            .await;
        assert_eq!(report["phone"]["verification_method"], channel);
    }
}

#[tokio::test]
async fn a_send_without_applicant_has_a_null_applicant_in_the_report() {
    let (server, tenant) = TestServer::with_tenant().await;
    let reply = server.send_otp(&tenant, json!({"phone": UZ_BEELINE})).await;
    let sent = reply.expect(200).clone();
    let code = server.latest_code(&tenant, UZ_BEELINE).await;
    let verified = server
        .post(
            "/v1/phone/verify-otp",
            &tenant.key,
            json!({"phone": UZ_BEELINE, "code": code}),
        )
        .await;
    assert_eq!(verified.expect(200)["verification_status"], "verified");
    let report = server
        .report(&tenant, sent["verification_id"].as_str().expect("id"))
        .await;
    assert_eq!(report["applicant_id"], Value::Null);
    assert_eq!(report["phone"]["status"], "Approved");
}

#[tokio::test]
async fn lookup_answers_in_the_documented_shape_with_a_country_mismatch_factor() {
    let (server, tenant) = TestServer::with_tenant().await;
    let reply = server
        .post(
            "/v1/phone/lookup",
            &tenant.key,
            json!({"phone": "+998 90 123 45 67", "applicant_id": "a", "applicant_country": "us"}),
        )
        .await;
    let lookup = reply.expect(200);
    assert_eq!(
        keys(lookup),
        sorted(&[
            "phone",
            "valid",
            "type",
            "carrier",
            "flags",
            "location",
            "risk_assessment",
            "line_status",
            "ported",
            "roaming",
            "warnings"
        ])
    );
    assert_eq!(lookup["phone"], UZ_BEELINE);
    assert_eq!(lookup["valid"], true);
    assert_eq!(lookup["type"], "mobile");
    assert_eq!(
        lookup["carrier"],
        json!({"name": "Beeline", "type": "mobile", "original_operator": true})
    );
    assert_eq!(
        lookup["location"],
        json!({"country": "UZ", "country_code": "998", "region": null})
    );
    assert_eq!(
        lookup["risk_assessment"],
        json!({
            "risk_score": 15,
            "risk_level": "low",
            "factors": [{
                "factor": "country_mismatch",
                "contribution": 15,
                "details": "Phone country UZ differs from applicant country US",
            }],
        })
    );
    assert_eq!(lookup["line_status"], "unknown");
    assert_eq!(lookup["ported"], Value::Null);
    assert_eq!(lookup["roaming"], Value::Null);
    assert_eq!(lookup["warnings"], json!([]));
}

#[tokio::test]
async fn lookup_of_a_matching_country_has_no_factors() {
    let (server, tenant) = TestServer::with_tenant().await;
    let reply = server
        .post(
            "/v1/phone/lookup",
            &tenant.key,
            json!({"phone": UZ_BEELINE, "applicant_country": "UZ"}),
        )
        .await;
    let lookup = reply.expect(200);
    assert_eq!(
        lookup["risk_assessment"],
        json!({"risk_score": 0, "risk_level": "low", "factors": []})
    );
}

#[tokio::test]
async fn lookup_scores_a_voip_number_and_an_unknown_carrier_honestly() {
    let (server, tenant) = TestServer::with_tenant().await;
    let reply = server
        .post("/v1/phone/lookup", &tenant.key, json!({"phone": UK_VOIP}))
        .await;
    let lookup = reply.expect(200);
    assert_eq!(lookup["type"], "voip");
    assert_eq!(
        lookup["carrier"],
        json!({"name": null, "type": "voip", "original_operator": false})
    );
    assert_eq!(lookup["location"]["country"], "GB");
    assert_eq!(lookup["risk_assessment"]["risk_score"], 15);
    assert_eq!(
        lookup["risk_assessment"]["factors"][0]["factor"],
        "voip_number"
    );
    assert_eq!(lookup["risk_assessment"]["factors"][0]["contribution"], 15);
}

#[tokio::test]
async fn lookup_rejects_an_unknown_applicant_country() {
    let (server, tenant) = TestServer::with_tenant().await;
    let reply = server
        .post(
            "/v1/phone/lookup",
            &tenant.key,
            json!({"phone": UZ_BEELINE, "applicant_country": "Narnia"}),
        )
        .await;
    reply.invalid_field("applicant_country");
}

#[tokio::test]
async fn lookup_decides_a_verification_when_otp_is_not_required() {
    let (server, tenant) = TestServer::with_tenant().await;
    server
        .settings(&tenant, json!({"require_otp": false}))
        .await;
    let reply = server
        .post(
            "/v1/phone/lookup",
            &tenant.key,
            json!({"phone": UZ_BEELINE, "applicant_id": "a"}),
        )
        .await;
    let lookup = reply.expect(200).clone();
    assert_eq!(lookup["status"], "Approved");
    let id = lookup["verification_id"].as_str().expect("verification id");
    let report = server.report(&tenant, id).await;
    assert_eq!(report["phone"]["status"], "Approved");
    assert_eq!(report["phone"]["verification_method"], Value::Null);
    assert_eq!(report["phone"]["verification_attempts"], 0);

    // Without an applicant, a lookup stays passive.
    let passive = server
        .post(
            "/v1/phone/lookup",
            &tenant.key,
            json!({"phone": uz_number(1)}),
        )
        .await;
    let passive = passive.expect(200);
    assert!(
        passive.get("verification_id").is_none() && passive.get("status").is_none(),
        "{passive}"
    );
    assert!(server.outbox(&tenant, UZ_BEELINE).await.is_empty());
}

#[tokio::test]
async fn validate_formats_a_valid_number_like_the_seed() {
    let (server, tenant) = TestServer::with_tenant().await;
    let reply = server
        .post(
            "/v1/phone/validate",
            &tenant.key,
            json!({"phone": "+1 (415) 555-1234"}),
        )
        .await;
    let body = reply.expect(200);
    assert_eq!(keys(body), sorted(&["phone", "validation"]));
    assert_eq!(body["phone"], "+1 (415) 555-1234");
    let validation = &body["validation"];
    assert_eq!(validation["valid"], true);
    assert_eq!(validation["formatted_e164"], "+14155551234");
    assert_eq!(validation["formatted_national"], "(415) 555-1234");
    assert_eq!(validation["formatted_international"], "+1 415-555-1234");
    assert_eq!(validation["country_code"], "1");
    assert_eq!(validation["country"], "US");
    assert!(validation.get("reason").is_none(), "{validation}");

    let uz = server
        .post(
            "/v1/phone/validate",
            &tenant.key,
            json!({"phone": UZ_BEELINE}),
        )
        .await;
    let uz = &uz.expect(200)["validation"];
    assert_eq!(uz["formatted_national"], "90 123 45 67");
    assert_eq!(uz["formatted_international"], "+998 90 123 45 67");
    assert_eq!(uz["country_code"], "998");
    assert_eq!(uz["country"], "UZ");
    assert_eq!(uz["type"], "mobile");
}

#[tokio::test]
async fn validate_names_the_reason_an_input_is_invalid() {
    let (server, tenant) = TestServer::with_tenant().await;
    for (input, reason) in [
        ("+1 415", "TOO_SHORT"),
        ("+1 415 555 1234 5678", "TOO_LONG"),
        ("+999 123456", "INVALID_COUNTRY_CODE"),
        ("hello", "NOT_A_NUMBER"),
        ("+1 123 555 1234", "INVALID_FOR_REGION"),
    ] {
        let reply = server
            .post("/v1/phone/validate", &tenant.key, json!({"phone": input}))
            .await;
        let body = reply.expect(200);
        assert_eq!(body["phone"], input);
        assert_eq!(body["validation"]["valid"], false, "{input}: {body}");
        assert_eq!(body["validation"]["reason"], reason, "{input}: {body}");
    }
}

#[tokio::test]
async fn validate_with_a_country_reads_national_numbers_and_checks_the_region() {
    let (server, tenant) = TestServer::with_tenant().await;
    let national = server
        .post(
            "/v1/phone/validate",
            &tenant.key,
            json!({"phone": "90 123 45 67", "country": "uz"}),
        )
        .await;
    let validation = &national.expect(200)["validation"];
    assert_eq!(validation["valid"], true);
    assert_eq!(validation["formatted_e164"], UZ_BEELINE);

    let other = server
        .post(
            "/v1/phone/validate",
            &tenant.key,
            json!({"phone": "+442079460000", "country": "US"}),
        )
        .await;
    let validation = &other.expect(200)["validation"];
    assert_eq!(validation["valid"], false);
    assert_eq!(validation["reason"], "INVALID_FOR_REGION");

    let unknown = server
        .post(
            "/v1/phone/validate",
            &tenant.key,
            json!({"phone": UZ_BEELINE, "country": "XX"}),
        )
        .await;
    unknown.invalid_field("country");
}

#[tokio::test]
async fn in_dev_mode_the_report_lists_the_outbox_messages_with_their_receipts() {
    let (server, tenant) = TestServer::with_tenant().await;
    let sent = server.send(&tenant, UZ_BEELINE, "dev").await;
    let id = sent["verification_id"].as_str().expect("an id");
    // A resend: a second message of the same verification.
    server.advance(chrono::Duration::seconds(61));
    server.send(&tenant, UZ_BEELINE, "dev").await;
    let kept = server.outbox(&tenant, UZ_BEELINE).await;
    assert_eq!(kept.len(), 2);
    let first = kept[1]["id"].as_str().expect("an id").to_owned();
    server
        .post(
            &format!("/v1/dev/outbox/{first}/delivery"),
            &tenant.key,
            serde_json::json!({"status": "delivered"}),
        )
        .await
        .expect(200);

    let report = server.report(&tenant, id).await;
    let messages = report["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 2, "{report}");
    // Oldest first, each the dev outbox's, the first delivered.
    assert_eq!(messages[0]["id"], first.as_str(), "{report}");
    for message in messages {
        assert_eq!(message["provider"], "dev-outbox", "{message}");
        assert_eq!(message["to"], UZ_BEELINE, "{message}");
        assert_eq!(message["channel"], "sms", "{message}");
        assert_eq!(message["verification_id"], id, "{message}");
    }
    assert_eq!(messages[0]["status"], "delivered", "{report}");
    let history: Vec<&str> = messages[0]["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|change| change["status"].as_str().expect("a status"))
        .collect();
    assert_eq!(history, ["sent", "delivered"]);
    assert_eq!(messages[1]["status"], "sent", "{report}");
}
