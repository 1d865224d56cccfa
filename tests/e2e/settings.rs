//! Tenant settings over HTTP: documented defaults, merging partial updates, range
//! checks that name the field, and the settings taking effect (limits, expiry, attempts).

use chrono::Duration;
use dialgate::clock::Clock;
use serde_json::{json, Value};

use crate::support::*;

const PATH: &str = "/v1/settings/phone-verification";

fn defaults() -> Value {
    json!({
        "require_otp": true,
        "otp_expiry_minutes": 10,
        "max_otp_attempts": 2,
        "max_resends_per_24h": 2,
        "code_length": 6,
        "block_voip": false,
        "flag_voip": true,
        "block_virtual": false,
        "sim_swap_check": false,
        "sim_swap_threshold_days": 7,
        "risk_actions": {
            "VOIP_NUMBER_DETECTED": "Review",
            "DISPOSABLE_NUMBER_DETECTED": "Decline",
            "DUPLICATED_PHONE_NUMBER": "Review",
            "VERIFICATION_CODE_GUESS_BUDGET_EXHAUSTED": "Review",
        },
        "high_risk_threshold": 60,
        "medium_risk_threshold": 30,
        "risk_contributions": {},
        "known_fraud_carriers": [],
        "disposable_numbers": [],
        "on_plugin_failure": "continue",
        "guess_budget": {"max_failures_per_24h": 10, "lockout_minutes": 60},
        "delivery_permissions": {
            "allowed_countries": null,
            "blocked_countries": [],
            "blocked_prefixes": [],
            "refused_number_types": ["premium_rate", "shared_cost", "uan", "pager", "satellite", "international_network"],
            "channels": {},
        },
        "sms_pumping": {
            "mode": "standard",
            "window_seconds": 3600,
            "maturity_seconds": 300,
            "block_seconds": 43200,
            "exempt_prefixes": [],
            "country_tiers": {},
        },
        "spend_caps": {"daily": null, "monthly": null, "countries_daily": {}, "alert_percent": 80},
        "retention": {"verifications_days": 365, "messages_days": 90, "events_days": 90, "webhook_deliveries_days": 30},
        "alerts": {"conversion_drop_percent": 30, "delivery_failure_percent": 20, "min_codes": 20},
        "rate_limits": {
            "send_otp": {
                "per_tenant": {"per_minute": 6000, "burst": 600},
                "per_phone": {"per_minute": 5, "burst": 5},
                "per_ip": {"per_minute": 60, "burst": 30},
            },
            "verify_otp": {
                "per_tenant": {"per_minute": 12000, "burst": 1200},
                "per_phone": {"per_minute": 20, "burst": 10},
                "per_ip": {"per_minute": 120, "burst": 60},
            },
            "lookup": {
                "per_tenant": {"per_minute": 60000, "burst": 10000},
                "per_phone": {"per_minute": 120, "burst": 60},
                "per_ip": {"per_minute": 60000, "burst": 10000},
            },
            "line_checks": {
                "per_tenant": {"per_minute": 600, "burst": 100},
                "per_phone": {"per_minute": 10, "burst": 10},
                "per_ip": {"per_minute": 600, "burst": 100},
            },
        },
    })
}

#[tokio::test]
async fn a_new_tenant_gets_the_documented_defaults() {
    let (server, tenant) = TestServer::with_tenant().await;
    let settings = server.get(PATH, &tenant.key).await;
    assert_eq!(settings.expect(200), &defaults());
}

#[tokio::test]
async fn a_partial_update_changes_only_the_fields_given() {
    let (server, tenant) = TestServer::with_tenant().await;
    let updated = server
        .settings(
            &tenant,
            json!({
                "otp_expiry_minutes": 5,
                "risk_actions": {"VOIP_NUMBER_DETECTED": "Decline"},
                "rate_limits": {"send_otp": {"per_phone": {"per_minute": 2, "burst": 2}}},
                "known_fraud_carriers": ["BadTel"],
            }),
        )
        .await;
    let mut expected = defaults();
    expected["otp_expiry_minutes"] = json!(5);
    expected["risk_actions"]["VOIP_NUMBER_DETECTED"] = json!("Decline");
    expected["rate_limits"]["send_otp"]["per_phone"] = json!({"per_minute": 2, "burst": 2});
    expected["known_fraud_carriers"] = json!(["BadTel"]);
    assert_eq!(updated, expected);

    let second = server
        .settings(&tenant, json!({"max_otp_attempts": 4}))
        .await;
    expected["max_otp_attempts"] = json!(4);
    assert_eq!(second, expected, "the second update keeps the first");
    assert_eq!(server.get(PATH, &tenant.key).await.expect(200), &expected);
}

#[tokio::test]
async fn out_of_range_settings_are_rejected_naming_the_field() {
    let (server, tenant) = TestServer::with_tenant().await;
    let cases = [
        (json!({"code_length": 3}), "code_length"),
        (json!({"code_length": 11}), "code_length"),
        (json!({"code_length": 300}), "code_length"),
        (json!({"otp_expiry_minutes": 0}), "otp_expiry_minutes"),
        (json!({"otp_expiry_minutes": 1441}), "otp_expiry_minutes"),
        (json!({"max_otp_attempts": 0}), "max_otp_attempts"),
        (json!({"max_otp_attempts": 21}), "max_otp_attempts"),
        (json!({"max_resends_per_24h": 51}), "max_resends_per_24h"),
        (json!({"max_resends_per_24h": -1}), "max_resends_per_24h"),
        (
            json!({"sim_swap_threshold_days": 0}),
            "sim_swap_threshold_days",
        ),
        (
            json!({"medium_risk_threshold": 60}),
            "medium_risk_threshold",
        ),
        (
            json!({"medium_risk_threshold": 70}),
            "medium_risk_threshold",
        ),
        (json!({"high_risk_threshold": 101}), "high_risk_threshold"),
        (
            json!({"risk_contributions": {"made_up": 5}}),
            "risk_contributions.made_up",
        ),
        (
            json!({"risk_contributions": {"voip_number": 101}}),
            "risk_contributions.voip_number",
        ),
        (
            json!({"risk_actions": {"VOIP_NUMBER_DETECTED": "Maybe"}}),
            "risk_actions.VOIP_NUMBER_DETECTED",
        ),
        (
            json!({"risk_actions": {"SOMETHING_ELSE": "Review"}}),
            "risk_actions.SOMETHING_ELSE",
        ),
        (
            json!({"disposable_numbers": ["4475"]}),
            "disposable_numbers[0]",
        ),
        (
            json!({"rate_limits": {"send_otp": {"per_phone": {"burst": 0}}}}),
            "rate_limits.send_otp.per_phone.burst",
        ),
        (
            json!({"rate_limits": {"verify_otp": {"per_ip": {"per_minute": 0}}}}),
            "rate_limits.verify_otp.per_ip.per_minute",
        ),
        (json!({"colour": "blue"}), "colour"),
        (json!({"code_length": "six"}), "code_length"),
        (json!({"block_voip": "yes"}), "block_voip"),
        (
            json!({"known_fraud_carriers": "BadTel"}),
            "known_fraud_carriers",
        ),
    ];
    for (patch, field) in cases {
        let reply = server.put(PATH, &tenant.key, patch.clone()).await;
        assert_eq!(reply.status, 422, "{patch} was accepted: {}", reply.text);
        let error = reply.invalid_field(field);
        assert!(
            error["message"]
                .as_str()
                .expect("message")
                .starts_with(field),
            "{patch}: {error}"
        );
    }
    let not_an_object = server.put(PATH, &tenant.key, json!([1, 2])).await;
    not_an_object.invalid_field("body");

    assert_eq!(
        server.get(PATH, &tenant.key).await.expect(200),
        &defaults(),
        "nothing was stored"
    );
}

#[tokio::test]
async fn a_rejected_update_leaves_the_stored_settings_unchanged() {
    let (server, tenant) = TestServer::with_tenant().await;
    let stored = server
        .settings(&tenant, json!({"otp_expiry_minutes": 3}))
        .await;
    let rejected = server
        .put(
            PATH,
            &tenant.key,
            json!({"otp_expiry_minutes": 7, "block_voip": true, "code_length": 3}),
        )
        .await;
    rejected.invalid_field("code_length");
    assert_eq!(server.get(PATH, &tenant.key).await.expect(200), &stored);

    // And the stored settings are still the ones in force.
    let now = server.clock.now();
    let sent = server.send(&tenant, UZ_BEELINE, "a").await;
    assert_eq!(timestamp(&sent["expires_at"]), now + Duration::minutes(3));
}

#[tokio::test]
async fn a_per_phone_burst_of_one_rate_limits_the_second_send() {
    let (server, tenant) = TestServer::with_tenant().await;
    server
        .settings(
            &tenant,
            json!({"rate_limits": {"send_otp": {"per_phone": {"per_minute": 1, "burst": 1}}}}),
        )
        .await;
    server.send(&tenant, UZ_BEELINE, "a").await;
    let limited = server
        .send_otp(&tenant, json!({"phone": UZ_BEELINE, "applicant_id": "b"}))
        .await;
    limited.error(429, "rate_limited");
    assert_eq!(limited.header("retry-after"), Some("60"));
    assert_eq!(server.outbox(&tenant, UZ_BEELINE).await.len(), 1);

    // Other numbers have their own bucket, and the bucket refills with time.
    server.send(&tenant, &uz_number(1), "a").await;
    server.advance(Duration::seconds(60));
    server.send(&tenant, UZ_BEELINE, "b").await;
}

#[tokio::test]
async fn verify_attempts_are_rate_limited_per_number() {
    let (server, tenant) = TestServer::with_tenant().await;
    server
        .settings(
            &tenant,
            json!({
                "max_otp_attempts": 20,
                "rate_limits": {"verify_otp": {"per_phone": {"per_minute": 1, "burst": 2}}},
            }),
        )
        .await;
    server.send(&tenant, UZ_BEELINE, "a").await;
    let code = server.latest_code(&tenant, UZ_BEELINE).await;
    let wrong = wrong_code(&code);
    for _ in 0..2 {
        let reply = server.verify(&tenant, UZ_BEELINE, "a", &wrong).await;
        assert_eq!(reply.expect(200)["verification_status"], "incorrect_code");
    }
    let limited = server.verify(&tenant, UZ_BEELINE, "a", &code).await;
    limited.error(429, "rate_limited");
    assert_eq!(limited.header("retry-after"), Some("60"));

    server.advance(Duration::seconds(60));
    let verified = server.verify(&tenant, UZ_BEELINE, "a", &code).await;
    assert_eq!(verified.expect(200)["verification_status"], "verified");
}

#[tokio::test]
async fn the_per_ip_limit_follows_the_client_ip_given() {
    let (server, tenant) = TestServer::with_tenant().await;
    server
        .settings(
            &tenant,
            json!({"rate_limits": {"send_otp": {"per_ip": {"per_minute": 1, "burst": 1}}}}),
        )
        .await;
    let send = |n: u32, ip: &'static str| {
        let api = server.api.clone();
        let tenant = tenant.clone();
        async move {
            api.send_otp(
                &tenant,
                json!({"phone": uz_number(n), "applicant_id": "a", "client_ip": ip}),
            )
            .await
        }
    };
    send(1, "203.0.113.7").await.expect(200);
    send(2, "203.0.113.7").await.error(429, "rate_limited");
    send(3, "203.0.113.8").await.expect(200);
}

#[tokio::test]
async fn expiry_and_attempt_settings_take_effect() {
    let (server, tenant) = TestServer::with_tenant().await;
    server
        .settings(
            &tenant,
            json!({"otp_expiry_minutes": 1, "max_otp_attempts": 3}),
        )
        .await;
    let now = server.clock.now();
    let sent = server.send(&tenant, UZ_BEELINE, "a").await;
    assert_eq!(timestamp(&sent["expires_at"]), now + Duration::minutes(1));
    let message = &server.outbox(&tenant, UZ_BEELINE).await[0];
    assert!(
        message["body"]
            .as_str()
            .expect("body")
            // Uzbek, the number's language: "it is valid for 1 minute".
            .contains("U 1 daqiqa amal qiladi"),
        "{message}"
    );

    let code = server.latest_code(&tenant, UZ_BEELINE).await;
    let wrong = server
        .verify(&tenant, UZ_BEELINE, "a", &wrong_code(&code))
        .await;
    assert_eq!(wrong.expect(200)["attempts_remaining"], 2);

    server.advance(Duration::minutes(1));
    let late = server.verify(&tenant, UZ_BEELINE, "a", &code).await;
    assert_eq!(late.expect(200)["verification_status"], "expired");
}

#[tokio::test]
async fn zero_resends_allows_only_the_first_send() {
    let (server, tenant) = TestServer::with_tenant().await;
    server
        .settings(&tenant, json!({"max_resends_per_24h": 0}))
        .await;
    let sent = server.send(&tenant, UZ_BEELINE, "a").await;
    assert_eq!(sent["resends_remaining"], 0);
    let refused = server
        .send_otp(&tenant, json!({"phone": UZ_BEELINE, "applicant_id": "a"}))
        .await;
    refused.error(429, "resend_limit_exceeded");
    assert!(refused.header("retry-after").is_some());
}
