//! Delivery permissions end to end: which countries, prefixes and number types a
//! tenant's codes may go to, per channel; what a refused send answers and records;
//! and that no refused code reaches the outbox, first step or fallback step.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

/// Sends a code and expects a decline by the permissions, naming `why`; nothing is
/// sent. Returns the answer.
async fn refused(server: &TestServer, tenant: &Tenant, body: Value, why: &str) -> Value {
    let phone = body["phone"].as_str().expect("phone").to_owned();
    let sent = server.send_otp(tenant, body).await.expect(200).clone();
    assert_eq!(sent["status"], "declined", "{sent}");
    assert_eq!(sent["expires_at"], Value::Null);
    let refusal = warning(&sent["warnings"], "DESTINATION_NOT_PERMITTED");
    assert_warning(refusal, "DESTINATION_NOT_PERMITTED", "Decline");
    assert_eq!(refusal["additional_data"], why, "{sent}");
    assert!(
        server.outbox(tenant, &phone).await.is_empty(),
        "no code may be sent to {phone}"
    );
    sent
}

#[tokio::test]
async fn premium_satellite_pager_and_international_network_numbers_get_no_code_by_default() {
    let (server, tenant) = TestServer::with_tenant().await;
    // What SMS-pumping traffic goes to: Iridium, an international network, UK and US
    // premium rate, a UK pager.
    for (phone, channel, why) in [
        (
            "+881612345678",
            "sms",
            "number type satellite is refused for sms",
        ),
        (
            "+8821612345678",
            "sms",
            "number type international_network is refused for sms",
        ),
        (
            "+19005550123",
            "voice",
            "number type premium_rate is refused for voice",
        ),
        (
            "+449091234567",
            "sms",
            "number type premium_rate is refused for sms",
        ),
        (
            "+447640123456",
            "sms",
            "number type pager is refused for sms",
        ),
    ] {
        let sent = refused(
            &server,
            &tenant,
            json!({"phone": phone, "applicant_id": "a", "channel": channel}),
            why,
        )
        .await;
        let id = sent["verification_id"].as_str().expect("id");
        let report = server.report(&tenant, id).await;
        assert_eq!(report["phone"]["status"], "Declined", "{report}");
        assert!(risks(&report["phone"]["warnings"])
            .iter()
            .any(|risk| risk == "DESTINATION_NOT_PERMITTED"));
    }
    // Ordinary mobile numbers are sent to as before.
    let sent = server.send(&tenant, UZ_BEELINE, "a").await;
    assert_eq!(sent["status"], "pending");
    assert!(risks(&sent["warnings"]).is_empty(), "{sent}");
}

#[tokio::test]
async fn a_tenant_allows_countries_blocks_prefixes_and_sets_a_channel_apart() {
    let (server, tenant) = TestServer::with_tenant().await;
    let put = server
        .put(
            "/v1/settings/phone-verification",
            &tenant.key,
            json!({"delivery_permissions": {
                "allowed_countries": ["UZ", "US"],
                "blocked_prefixes": ["+99890123456"],
                "channels": {"voice": {"allowed_countries": ["UZ"]}}
            }}),
        )
        .await;
    let settings = put.expect(200)["delivery_permissions"].clone();
    assert_eq!(settings["allowed_countries"], json!(["UZ", "US"]));
    assert_eq!(
        settings["refused_number_types"],
        json!([
            "premium_rate",
            "shared_cost",
            "uan",
            "pager",
            "satellite",
            "international_network"
        ]),
        "the defaults stay"
    );
    let read = server
        .get("/v1/settings/phone-verification", &tenant.key)
        .await;
    assert_eq!(read.expect(200)["delivery_permissions"], settings);

    refused(
        &server,
        &tenant,
        json!({"phone": "+4915123456789", "applicant_id": "a"}),
        "country DE is not among the allowed countries for sms",
    )
    .await;
    refused(
        &server,
        &tenant,
        json!({"phone": "+998901234561", "applicant_id": "a"}),
        "prefix +99890123456 is blocked for sms",
    )
    .await;
    refused(
        &server,
        &tenant,
        json!({"phone": "+14155552671", "applicant_id": "a", "channel": "voice"}),
        "country US is not among the allowed countries for voice",
    )
    .await;
    // Allowed: a US number by SMS, a UZ number by voice.
    let sms = server
        .send_otp(
            &tenant,
            json!({"phone": "+14155552671", "applicant_id": "b"}),
        )
        .await;
    assert_eq!(sms.expect(200)["status"], "pending", "{}", sms.text);
    let voice = server
        .send_otp(
            &tenant,
            json!({"phone": "+998901234577", "applicant_id": "b", "channel": "voice"}),
        )
        .await;
    assert_eq!(voice.expect(200)["status"], "pending", "{}", voice.text);

    // Premium rate allowed again: the other permissions stay as they were.
    let put = server
        .put(
            "/v1/settings/phone-verification",
            &tenant.key,
            json!({"delivery_permissions": {"refused_number_types": ["satellite"]}}),
        )
        .await;
    assert_eq!(
        put.expect(200)["delivery_permissions"]["allowed_countries"],
        json!(["UZ", "US"])
    );
    let premium = server
        .send_otp(
            &tenant,
            json!({"phone": "+19005550123", "applicant_id": "c"}),
        )
        .await;
    assert_eq!(premium.expect(200)["status"], "pending", "{}", premium.text);
    assert_eq!(server.outbox(&tenant, "+19005550123").await.len(), 1);
}

#[tokio::test]
async fn bad_delivery_permissions_are_refused_naming_the_field_and_change_nothing() {
    let (server, tenant) = TestServer::with_tenant().await;
    for (body, field) in [
        (
            json!({"allowed_countries": ["uz"]}),
            "delivery_permissions.allowed_countries[0]",
        ),
        (
            json!({"blocked_countries": ["XX"]}),
            "delivery_permissions.blocked_countries[0]",
        ),
        (
            json!({"blocked_prefixes": ["+44", "447"]}),
            "delivery_permissions.blocked_prefixes[1]",
        ),
        (
            json!({"channels": {"voice": {"blocked_prefixes": ["+"]}}}),
            "delivery_permissions.channels.voice.blocked_prefixes[0]",
        ),
    ] {
        let reply = server
            .put(
                "/v1/settings/phone-verification",
                &tenant.key,
                json!({ "delivery_permissions": body }),
            )
            .await;
        let error = reply.error(422, "invalid_field");
        assert_eq!(error["field"], field, "{}", reply.text);
    }
    // An unknown number type or channel is named by the parser.
    for body in [
        json!({"refused_number_types": ["lottery"]}),
        json!({"channels": {"pigeon": {}}}),
        json!({"countries": ["US"]}),
    ] {
        let reply = server
            .put(
                "/v1/settings/phone-verification",
                &tenant.key,
                json!({ "delivery_permissions": body }),
            )
            .await;
        let error = reply.error(422, "invalid_field");
        assert!(
            error["field"]
                .as_str()
                .is_some_and(|field| field.starts_with("delivery_permissions")),
            "{}",
            reply.text
        );
    }
    let read = server
        .get("/v1/settings/phone-verification", &tenant.key)
        .await;
    assert_eq!(
        read.expect(200)["delivery_permissions"],
        json!({
            "allowed_countries": null,
            "blocked_countries": [],
            "blocked_prefixes": [],
            "refused_number_types": ["premium_rate", "shared_cost", "uan", "pager", "satellite", "international_network"],
            "channels": {}
        })
    );
}

#[tokio::test]
async fn a_fallback_step_on_a_refused_channel_sends_nothing() {
    let (server, tenant) = TestServer::with_tenant().await;
    server
        .put(
            "/v1/settings/phone-verification",
            &tenant.key,
            json!({"delivery_permissions": {"channels": {"voice": {"blocked_countries": ["UZ"]}}}}),
        )
        .await
        .expect(200);
    let workflow = json!([
        {"channel": "sms", "timeout_seconds": 30},
        {"channel": "voice"},
    ]);
    let sent = server
        .send_otp(
            &tenant,
            json!({"phone": UZ_BEELINE, "applicant_id": "a", "workflow": workflow}),
        )
        .await;
    let sent = sent.expect(200).clone();
    assert_eq!(sent["status"], "pending", "{sent}");
    assert_eq!(sent["channel"], "sms");
    let id = sent["verification_id"].as_str().expect("id").to_owned();
    server.advance(chrono::Duration::seconds(31));
    let mut outcomes = Value::Null;
    for _ in 0..200 {
        let report = server.report(&tenant, &id).await;
        outcomes = report["channel_workflow"]["outcomes"].clone();
        if outcomes.as_array().is_some_and(|list| list.len() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let step = &outcomes[1];
    assert_eq!(step["channel"], "voice", "{outcomes}");
    assert!(
        step["error"]
            .as_str()
            .is_some_and(|error| error.contains("country UZ is blocked for voice")),
        "{outcomes}"
    );
    let messages = server.outbox(&tenant, UZ_BEELINE).await;
    assert_eq!(messages.len(), 1, "only the SMS: {messages:?}");
}
