//! The OTP lifecycle over HTTP: send, read the code from the dev outbox, verify; code
//! reuse, attempt and resend limits, expiry, code length, idempotent sends, and the
//! audit trail.

use chrono::Duration;
use dialgate::clock::Clock;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn send_then_verify_with_the_code_from_the_outbox_approves() {
    let (server, tenant) = TestServer::with_tenant().await;
    let now = server.clock.now();

    let sent = server
        .send(&tenant, "+998 90 123-45-67", "applicant-1")
        .await;
    assert_eq!(
        keys(&sent),
        sorted(&[
            "verification_id",
            "phone",
            "status",
            "channel",
            "expires_at",
            "flags",
            "resends_remaining",
            "warnings"
        ])
    );
    assert_eq!(sent["phone"], UZ_BEELINE);
    assert_eq!(sent["channel"], "sms");
    assert_eq!(timestamp(&sent["expires_at"]), now + Duration::minutes(10));
    assert_eq!(sent["resends_remaining"], 2);
    assert_eq!(sent["warnings"], json!([]));
    let id = sent["verification_id"].as_str().expect("verification id");

    let messages = server.outbox(&tenant, UZ_BEELINE).await;
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(
        keys(message),
        sorted(&[
            "id",
            "verification_id",
            "phone",
            "channel",
            "body",
            "code",
            "encoding",
            "segments",
            "created_at"
        ])
    );
    assert_eq!(message["phone"], UZ_BEELINE);
    assert_eq!(message["channel"], "sms");
    assert_eq!(message["verification_id"], id);
    assert_eq!(timestamp(&message["created_at"]), now);
    let code = message["code"].as_str().expect("code");
    assert_eq!(code.len(), 6);
    assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
    let body = message["body"].as_str().expect("body");
    // In Uzbek, the number's language: "valid for 10 minutes".
    assert!(body.contains(code) && body.contains("10 daqiqa"), "{body}");

    let verified = server
        .verify(&tenant, UZ_BEELINE, "applicant-1", code)
        .await;
    let verified = verified.expect(200);
    assert_eq!(verified["phone"], UZ_BEELINE);
    assert_eq!(verified["verification_status"], "verified");
    assert_eq!(verified["verification_id"], id);
    assert_eq!(verified["status"], "Approved");
    assert_eq!(timestamp(&verified["verified_at"]), now);
    assert_eq!(
        verified["phone_intelligence"],
        json!({"type": "mobile", "carrier": "Beeline", "country": "UZ", "risk_score": 0, "risk_level": "low"})
    );
    assert_eq!(verified["warnings"], json!([]));

    let report = server.report(&tenant, id).await;
    assert_eq!(report["phone"]["status"], "Approved");
}

#[tokio::test]
async fn a_message_takes_the_request_s_language_else_the_number_s_country_and_reports_its_encoding()
{
    let (server, tenant) = TestServer::with_tenant().await;
    let body_of = |messages: &[Value]| messages[0].clone();
    // No language asked: an Uzbek number gets Uzbek, which GSM-7 carries.
    server.send(&tenant, UZ_BEELINE, "a").await;
    let uzbek = body_of(&server.outbox(&tenant, UZ_BEELINE).await);
    assert!(
        uzbek["body"]
            .as_str()
            .expect("body")
            .starts_with("Tasdiqlash kodingiz"),
        "{uzbek}"
    );
    assert_eq!(uzbek["encoding"], "GSM-7");
    assert_eq!(uzbek["segments"], 1);
    // A language without a built-in text: the country decides (Russia: Russian, UCS-2).
    let russia = "+79161234567";
    server
        .send_otp(
            &tenant,
            json!({"phone": russia, "applicant_id": "b", "language": "tlh"}),
        )
        .await
        .expect(200);
    let russian = body_of(&server.outbox(&tenant, russia).await);
    assert!(
        russian["body"]
            .as_str()
            .expect("body")
            .starts_with("Ваш код"),
        "{russian}"
    );
    assert_eq!(russian["encoding"], "UCS-2");
    assert_eq!(russian["segments"], 1);
    // A language asked for wins over the country.
    let us = "+14155552671";
    server
        .send_otp(
            &tenant,
            json!({"phone": us, "applicant_id": "c", "language": "zh-TW"}),
        )
        .await
        .expect(200);
    let chinese = body_of(&server.outbox(&tenant, us).await);
    assert!(
        chinese["body"]
            .as_str()
            .expect("body")
            .starts_with("您的验证码"),
        "{chinese}"
    );
    assert_eq!(chinese["encoding"], "UCS-2");
}

#[tokio::test]
async fn the_outbox_lists_messages_newest_first_in_the_requested_language() {
    let (server, tenant) = TestServer::with_tenant().await;
    server.send(&tenant, &uz_number(1), "a").await;
    server.advance(Duration::seconds(5));
    let reply = server
        .send_otp(
            &tenant,
            json!({"phone": uz_number(2), "applicant_id": "b", "language": "ru-RU"}),
        )
        .await;
    reply.expect(200);

    let all = server.get("/v1/dev/outbox", &tenant.key).await;
    let messages = all.expect(200)["messages"]
        .as_array()
        .expect("messages")
        .clone();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["phone"], uz_number(2));
    assert_eq!(messages[1]["phone"], uz_number(1));
    assert!(timestamp(&messages[0]["created_at"]) > timestamp(&messages[1]["created_at"]));
    let russian = messages[0]["body"].as_str().expect("body");
    assert!(russian.starts_with("Ваш код"), "{russian}");
    assert!(
        russian.contains(messages[0]["code"].as_str().expect("code")),
        "{russian}"
    );

    let limited = server.get("/v1/dev/outbox?limit=1", &tenant.key).await;
    let limited = limited.expect(200)["messages"]
        .as_array()
        .expect("messages")
        .clone();
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0]["phone"], uz_number(2));

    let one_phone = server.outbox(&tenant, &uz_number(1)).await;
    assert_eq!(one_phone.len(), 1);
    assert_eq!(one_phone[0]["phone"], uz_number(1));
}

#[tokio::test]
async fn messages_sent_at_the_same_instant_are_still_listed_newest_first() {
    // The manual clock does not move between these sends, so their timestamps are equal.
    let (server, tenant) = TestServer::with_tenant().await;
    let mut sent = Vec::new();
    for n in 0..6 {
        sent.push(server.send(&tenant, &uz_number(n), "a").await["verification_id"].clone());
    }
    let all = server.get("/v1/dev/outbox", &tenant.key).await;
    let listed: Vec<Value> = all.expect(200)["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["verification_id"].clone())
        .collect();
    sent.reverse();
    assert_eq!(listed, sent);
}

#[tokio::test]
async fn a_resend_keeps_the_verification_and_replaces_the_code() {
    let (server, tenant) = TestServer::with_tenant().await;
    let first = server.send(&tenant, UZ_BEELINE, "a").await;
    let old_code = server.latest_code(&tenant, UZ_BEELINE).await;
    server.advance(Duration::seconds(30));
    let second = server.send(&tenant, UZ_BEELINE, "a").await;
    assert_eq!(second["verification_id"], first["verification_id"]);
    assert_eq!(second["resends_remaining"], 1);
    let new_code = server.latest_code(&tenant, UZ_BEELINE).await;
    assert_eq!(server.outbox(&tenant, UZ_BEELINE).await.len(), 2);

    if old_code != new_code {
        let stale = server.verify(&tenant, UZ_BEELINE, "a", &old_code).await;
        assert_eq!(stale.expect(200)["verification_status"], "incorrect_code");
    }
    let fresh = server.verify(&tenant, UZ_BEELINE, "a", &new_code).await;
    assert_eq!(fresh.expect(200)["verification_status"], "verified");
}

#[tokio::test]
async fn a_used_code_cannot_be_reused() {
    let (server, tenant) = TestServer::with_tenant().await;
    let verified = server.send_and_verify(&tenant, UZ_BEELINE, "a").await;
    assert_eq!(verified["verification_status"], "verified");
    // A first-try success says nothing of attempts: none are left to count.
    assert!(verified.get("attempts_remaining").is_none(), "{verified}");
    let code = server.latest_code(&tenant, UZ_BEELINE).await;

    let again = server.verify(&tenant, UZ_BEELINE, "a", &code).await;
    let error = again.error(409, "verification_closed");
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("Approved"),
        "{error}"
    );
    let report = server
        .report(&tenant, verified["verification_id"].as_str().expect("id"))
        .await;
    assert_eq!(report["phone"]["status"], "Approved");
    assert_eq!(report["phone"]["verification_attempts"], 1);
}

#[tokio::test]
async fn wrong_codes_until_attempts_are_exceeded_decline_the_verification() {
    let (server, tenant) = TestServer::with_tenant().await;
    let sent = server.send(&tenant, UZ_BEELINE, "a").await;
    let id = sent["verification_id"].as_str().expect("id");
    let code = server.latest_code(&tenant, UZ_BEELINE).await;
    let wrong = wrong_code(&code);

    let first = server.verify(&tenant, UZ_BEELINE, "a", &wrong).await;
    let first = first.expect(200);
    assert_eq!(first["verification_status"], "incorrect_code");
    assert_eq!(first["attempts_remaining"], 1);
    assert_eq!(first["status"], "Not Finished");
    assert!(
        first.get("verified_at").is_none() && first.get("phone_intelligence").is_none(),
        "{first}"
    );

    let second = server.verify(&tenant, UZ_BEELINE, "a", &wrong).await;
    let second = second.expect(200);
    assert_eq!(second["verification_status"], "attempts_exceeded");
    assert_eq!(second["attempts_remaining"], 0);
    assert_eq!(second["status"], "Declined");
    assert_warning(
        warning(&second["warnings"], "VERIFICATION_CODE_ATTEMPTS_EXCEEDED"),
        "VERIFICATION_CODE_ATTEMPTS_EXCEEDED",
        "Decline",
    );

    // The right code is too late now.
    server
        .verify(&tenant, UZ_BEELINE, "a", &code)
        .await
        .error(409, "verification_closed");

    let report = server.report(&tenant, id).await;
    assert_eq!(report["phone"]["status"], "Declined");
    assert_eq!(report["phone"]["verification_attempts"], 2);
    assert_eq!(report["phone"]["verified_at"], Value::Null);
    assert_eq!(
        risks(&report["phone"]["warnings"]),
        ["VERIFICATION_CODE_ATTEMPTS_EXCEEDED"]
    );
}

#[tokio::test]
async fn a_wrong_code_then_the_right_one_verifies() {
    let (server, tenant) = TestServer::with_tenant().await;
    server.send(&tenant, UZ_BEELINE, "a").await;
    let code = server.latest_code(&tenant, UZ_BEELINE).await;
    let wrong = server
        .verify(&tenant, UZ_BEELINE, "a", &wrong_code(&code))
        .await;
    assert_eq!(wrong.expect(200)["verification_status"], "incorrect_code");
    let right = server.verify(&tenant, UZ_BEELINE, "a", &code).await;
    let right = right.expect(200);
    assert_eq!(right["verification_status"], "verified");
    assert_eq!(right["status"], "Approved");
    let report = server
        .report(&tenant, right["verification_id"].as_str().expect("id"))
        .await;
    assert_eq!(report["phone"]["verification_attempts"], 2);
}

#[tokio::test]
async fn a_code_that_is_not_4_to_10_digits_is_refused_without_using_an_attempt() {
    let (server, tenant) = TestServer::with_tenant().await;
    server
        .settings(&tenant, json!({"max_otp_attempts": 1}))
        .await;
    let sent = server.send(&tenant, UZ_BEELINE, "a").await;
    for malformed in ["123", "1", "12ab56", "12345678901", " "] {
        let reply = server.verify(&tenant, UZ_BEELINE, "a", malformed).await;
        let error = reply.invalid_field("code");
        assert!(
            error["message"]
                .as_str()
                .expect("message")
                .contains("4 to 10 digits"),
            "{error}"
        );
    }
    let report = server
        .report(&tenant, sent["verification_id"].as_str().expect("id"))
        .await;
    assert_eq!(report["phone"]["verification_attempts"], 0);
    assert_eq!(report["phone"]["status"], "Not Finished");
    let code = server.latest_code(&tenant, UZ_BEELINE).await;
    let verified = server.verify(&tenant, UZ_BEELINE, "a", &code).await;
    assert_eq!(verified.expect(200)["verification_status"], "verified");
}

#[tokio::test]
async fn the_fourth_send_within_24_hours_is_refused_until_a_day_has_passed() {
    let (server, tenant) = TestServer::with_tenant().await;
    for remaining in [2, 1, 0] {
        let sent = server.send(&tenant, UZ_BEELINE, "a").await;
        assert_eq!(sent["resends_remaining"], remaining);
        server.advance(Duration::minutes(1));
    }

    let refused = server
        .send_otp(&tenant, json!({"phone": UZ_BEELINE, "applicant_id": "a"}))
        .await;
    refused.error(429, "resend_limit_exceeded");
    let retry: i64 = refused
        .header("retry-after")
        .expect("Retry-After header")
        .parse()
        .expect("seconds");
    // The oldest send was 3 minutes ago: it leaves the 24-hour window in 23 h 57 min.
    assert_eq!(
        retry,
        (Duration::hours(24) - Duration::minutes(3)).num_seconds()
    );
    assert_eq!(server.outbox(&tenant, UZ_BEELINE).await.len(), 3);

    // The limit is per number and applicant.
    server.send(&tenant, UZ_BEELINE, "b").await;

    server.advance(Duration::hours(24));
    let again = server.send(&tenant, UZ_BEELINE, "a").await;
    assert_eq!(again["resends_remaining"], 2);
    assert_eq!(server.outbox(&tenant, UZ_BEELINE).await.len(), 5);
}

#[tokio::test]
async fn verify_after_expiry_is_rejected() {
    let (server, tenant) = TestServer::with_tenant().await;
    let sent = server.send(&tenant, UZ_BEELINE, "a").await;
    let id = sent["verification_id"].as_str().expect("id");
    let code = server.latest_code(&tenant, UZ_BEELINE).await;

    server.advance(Duration::minutes(10));
    let late = server.verify(&tenant, UZ_BEELINE, "a", &code).await;
    let late = late.expect(200);
    assert_eq!(late["verification_status"], "expired");
    assert_eq!(late["status"], "Not Finished");
    assert!(late.get("verified_at").is_none(), "{late}");
    assert!(late.get("attempts_remaining").is_none(), "{late}");

    let report = server.report(&tenant, id).await;
    assert_eq!(report["phone"]["status"], "Not Finished");
    assert_eq!(report["phone"]["verified_at"], Value::Null);
    assert_eq!(
        report["phone"]["verification_attempts"], 0,
        "an expired code does not use an attempt"
    );

    // A fresh code works.
    server.send(&tenant, UZ_BEELINE, "a").await;
    let fresh = server.latest_code(&tenant, UZ_BEELINE).await;
    let verified = server.verify(&tenant, UZ_BEELINE, "a", &fresh).await;
    assert_eq!(verified.expect(200)["verification_status"], "verified");
}

#[tokio::test]
async fn a_code_is_accepted_until_the_moment_it_expires() {
    let (server, tenant) = TestServer::with_tenant().await;
    server.send(&tenant, UZ_BEELINE, "a").await;
    let code = server.latest_code(&tenant, UZ_BEELINE).await;
    server.advance(Duration::minutes(10) - Duration::seconds(1));
    let verified = server.verify(&tenant, UZ_BEELINE, "a", &code).await;
    assert_eq!(verified.expect(200)["verification_status"], "verified");
}

#[tokio::test]
async fn custom_code_length_gives_codes_of_that_length() {
    let (server, tenant) = TestServer::with_tenant().await;
    for (n, length) in [(1, 4), (2, 10)] {
        server
            .settings(&tenant, json!({"code_length": length}))
            .await;
        let phone = uz_number(n);
        server.send(&tenant, &phone, "a").await;
        let code = server.latest_code(&tenant, &phone).await;
        assert_eq!(code.len(), length, "{code}");
        assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
        let verified = server.verify(&tenant, &phone, "a", &code).await;
        assert_eq!(verified.expect(200)["verification_status"], "verified");
    }
}

#[tokio::test]
async fn a_retried_send_with_the_same_idempotency_key_replays_the_first_answer() {
    let (server, tenant) = TestServer::with_tenant().await;
    let body = json!({"phone": UZ_BEELINE, "applicant_id": "a"});
    let bytes = serde_json::to_vec(&body).expect("json");
    let send = || {
        server.raw(
            Method::POST,
            "/v1/phone/send-otp",
            Some(&tenant.key),
            Some(("application/json", bytes.clone())),
            &[("Idempotency-Key", "signup-42")],
        )
    };
    let first = send().await;
    first.expect(200);
    server.advance(Duration::seconds(10));
    let retried = send().await;
    retried.expect(200);
    assert_eq!(
        retried.text, first.text,
        "the retry must get the identical body"
    );
    assert_eq!(
        server.outbox(&tenant, UZ_BEELINE).await.len(),
        1,
        "only one message is sent"
    );

    // Without the key, the same body is a real resend.
    server.send(&tenant, UZ_BEELINE, "a").await;
    assert_eq!(server.outbox(&tenant, UZ_BEELINE).await.len(), 2);
}

#[tokio::test]
async fn an_idempotency_key_reused_with_a_different_body_is_refused() {
    let (server, tenant) = TestServer::with_tenant().await;
    let send = |phone: String| {
        let bytes =
            serde_json::to_vec(&json!({"phone": phone, "applicant_id": "a"})).expect("json");
        let key = tenant.key.clone();
        let api = server.api.clone();
        async move {
            api.raw(
                Method::POST,
                "/v1/phone/send-otp",
                Some(&key),
                Some(("application/json", bytes)),
                &[("Idempotency-Key", "signup-43")],
            )
            .await
        }
    };
    send(uz_number(1)).await.expect(200);
    send(uz_number(2))
        .await
        .error(409, "idempotency_key_reused");
    assert!(server.outbox(&tenant, &uz_number(2)).await.is_empty());
}

#[tokio::test]
async fn a_replayed_send_is_not_rate_limited_and_the_key_expires_after_a_day() {
    let (server, tenant) = TestServer::with_tenant().await;
    server
        .settings(
            &tenant,
            json!({"rate_limits": {"send_otp": {"per_phone": {"per_minute": 1, "burst": 1}}}}),
        )
        .await;
    let send = || {
        server.raw(
            Method::POST,
            "/v1/phone/send-otp",
            Some(&tenant.key),
            Some((
                "application/json",
                br#"{"phone": "+998901234567", "applicant_id": "a"}"#.to_vec(),
            )),
            &[("Idempotency-Key", "signup-44")],
        )
    };
    let first = send().await;
    first.expect(200);
    let replayed = send().await;
    assert_eq!(replayed.text, first.text, "a replay needs no token");

    server.advance(Duration::hours(24) + Duration::seconds(1));
    let fresh = send().await;
    assert_ne!(
        fresh.text, first.text,
        "after 24 hours the key starts a new send"
    );
    assert_eq!(fresh.expect(200)["status"], "pending");
    assert_eq!(server.outbox(&tenant, UZ_BEELINE).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_with_one_idempotency_key_send_one_code() {
    let (server, tenant) = TestServer::with_tenant().await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let api = server.api.clone();
            let key = tenant.key.clone();
            tokio::spawn(async move {
                api.raw(
                    Method::POST,
                    "/v1/phone/send-otp",
                    Some(&key),
                    Some((
                        "application/json",
                        br#"{"phone": "+998901234567", "applicant_id": "a"}"#.to_vec(),
                    )),
                    &[("Idempotency-Key", "double-click")],
                )
                .await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        let reply = task.await.expect("request task");
        if reply.status == 409 {
            reply.error(409, "idempotency_key_in_use");
        } else {
            answers.push(reply.expect(200).clone());
        }
    }
    assert!(!answers.is_empty());
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "every answer is the first one: {answers:?}"
    );
    assert_eq!(server.outbox(&tenant, UZ_BEELINE).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_wrong_codes_cannot_exceed_the_attempt_limit() {
    let (server, tenant) = TestServer::with_tenant().await;
    let sent = server.send(&tenant, UZ_BEELINE, "a").await;
    let code = server.latest_code(&tenant, UZ_BEELINE).await;
    let wrong = wrong_code(&code);
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let api = server.api.clone();
            let tenant = tenant.clone();
            let wrong = wrong.clone();
            tokio::spawn(async move { api.verify(&tenant, UZ_BEELINE, "a", &wrong).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        let reply = task.await.expect("request task");
        if reply.status == 409 {
            reply.error(409, "verification_closed");
            outcomes.push("closed".to_owned());
        } else {
            outcomes.push(
                reply.expect(200)["verification_status"]
                    .as_str()
                    .expect("status")
                    .to_owned(),
            );
        }
    }
    outcomes.sort();
    let mut expected = vec!["closed".to_owned(); 8];
    expected.extend(["attempts_exceeded".to_owned(), "incorrect_code".to_owned()]);
    expected.sort();
    assert_eq!(outcomes, expected);
    let report = server
        .report(&tenant, sent["verification_id"].as_str().expect("id"))
        .await;
    assert_eq!(report["phone"]["verification_attempts"], 2);
    assert_eq!(report["phone"]["status"], "Declined");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_code_submitted_concurrently_verifies_exactly_once() {
    let (server, tenant) = TestServer::with_tenant().await;
    server.send(&tenant, UZ_BEELINE, "a").await;
    let code = server.latest_code(&tenant, UZ_BEELINE).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let api = server.api.clone();
            let tenant = tenant.clone();
            let code = code.clone();
            tokio::spawn(async move { api.verify(&tenant, UZ_BEELINE, "a", &code).await })
        })
        .collect();
    let mut verified = 0;
    for task in tasks {
        let reply = task.await.expect("request task");
        if reply.status == 409 {
            reply.error(409, "verification_closed");
        } else {
            assert_eq!(reply.expect(200)["verification_status"], "verified");
            verified += 1;
        }
    }
    assert_eq!(verified, 1);
}

#[tokio::test]
async fn a_failed_send_releases_its_idempotency_key() {
    let (server, tenant) = TestServer::with_tenant().await;
    server
        .settings(&tenant, json!({"max_resends_per_24h": 0}))
        .await;
    server.send(&tenant, UZ_BEELINE, "a").await;
    let send = || {
        server.raw(
            Method::POST,
            "/v1/phone/send-otp",
            Some(&tenant.key),
            Some((
                "application/json",
                br#"{"phone": "+998901234567", "applicant_id": "a"}"#.to_vec(),
            )),
            &[("Idempotency-Key", "retry-me")],
        )
    };
    send().await.error(429, "resend_limit_exceeded");
    server.advance(Duration::hours(25));
    // The refused request did not pin its answer to the key: the retry is served afresh.
    let retried = send().await;
    assert_eq!(retried.expect(200)["status"], "pending");
}

#[tokio::test]
async fn the_audit_trail_lists_the_triggers_in_order() {
    let (server, tenant) = TestServer::with_tenant().await;
    let verified = server.send_and_verify(&tenant, UZ_BEELINE, "a").await;
    let id = verified["verification_id"].as_str().expect("id");

    let reply = server
        .get(&format!("/v1/verifications/{id}/events"), &tenant.key)
        .await;
    let events = reply.expect(200)["events"]
        .as_array()
        .expect("events")
        .clone();
    let triggers: Vec<&str> = events
        .iter()
        .map(|e| e["trigger"].as_str().expect("trigger"))
        .collect();
    assert_eq!(
        triggers,
        [
            "phone_lookup_complete",
            "before_send_otp",
            "otp_sent",
            "otp_verified",
            "verification_completed"
        ]
    );
    for event in &events {
        assert_eq!(
            keys(event),
            sorted(&["at", "trigger", "status", "detail"]),
            "{event}"
        );
        timestamp(&event["at"]);
    }
    assert_eq!(events[1]["detail"], "sms");
    assert_eq!(events[2]["status"], "Not Finished");
    assert_eq!(events[4]["status"], "Approved");
}

#[tokio::test]
async fn the_audit_trail_records_failed_attempts_between_sends() {
    let (server, tenant) = TestServer::with_tenant().await;
    let sent = server.send(&tenant, UZ_BEELINE, "a").await;
    let id = sent["verification_id"].as_str().expect("id");
    let code = server.latest_code(&tenant, UZ_BEELINE).await;
    server
        .verify(&tenant, UZ_BEELINE, "a", &wrong_code(&code))
        .await
        .expect(200);
    server.advance(Duration::seconds(1));
    server.send(&tenant, UZ_BEELINE, "a").await;
    server.advance(Duration::seconds(1));
    let code = server.latest_code(&tenant, UZ_BEELINE).await;
    server
        .verify(&tenant, UZ_BEELINE, "a", &code)
        .await
        .expect(200);

    let reply = server
        .get(&format!("/v1/verifications/{id}/events"), &tenant.key)
        .await;
    let events = reply.expect(200)["events"]
        .as_array()
        .expect("events")
        .clone();
    let triggers: Vec<&str> = events
        .iter()
        .map(|e| e["trigger"].as_str().expect("trigger"))
        .collect();
    assert_eq!(
        triggers,
        [
            "phone_lookup_complete",
            "before_send_otp",
            "otp_sent",
            "otp_failed",
            "phone_lookup_complete",
            "before_send_otp",
            "otp_sent",
            "otp_verified",
            "verification_completed",
        ]
    );
    assert_eq!(events[3]["detail"], "incorrect_code");
}
