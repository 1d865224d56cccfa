//! Webhooks end to end: subscriptions over the API, events of real flows posted to a
//! loopback receiver and their Standard Webhooks signatures checked by an independent
//! implementation in this file, event-type filtering, retries on the backoff as the
//! manual clock moves (same `webhook-id`, both attempts in the delivery log), giving up
//! and a manual retry, pending deliveries surviving a restart, deletion stopping
//! deliveries, tenant isolation, and refused input.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::Duration;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use dialgate::clock::Clock as _;

use crate::support::*;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    content_type: String,
    body: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("the body is JSON")
    }

    fn event_type(&self) -> String {
        self.json()["type"].as_str().expect("type").to_owned()
    }
}

#[derive(Debug, Default)]
struct ReceiverState {
    received: Vec<Received>,
    /// Statuses to answer, in order; once used up, `then`.
    script: Vec<u16>,
    then: u16,
}

/// A webhook receiver on 127.0.0.1 that records every request and answers the
/// statuses it is told to.
#[derive(Debug, Clone)]
struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1]) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut state = state.lock().expect("lock");
    state.received.push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        content_type: header("content-type"),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let status = if state.script.is_empty() {
        state.then
    } else {
        state.script.remove(0)
    };
    // A redirect (when scripted) points back here; it must not be followed.
    (
        StatusCode::from_u16(status).expect("a status"),
        [("location", "/hook")],
    )
}

impl Receiver {
    async fn start() -> Self {
        let state = Arc::new(Mutex::new(ReceiverState {
            then: 200,
            ..ReceiverState::default()
        }));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(Arc::clone(&state));
        let addr = serve_on_loopback(app).await;
        Self { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers `script` first, then `then` for every later request.
    fn answer(&self, script: &[u16], then: u16) {
        let mut state = self.state.lock().expect("lock");
        state.script = script.to_vec();
        state.then = then;
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().expect("lock").received.clone()
    }

    /// Waits (up to 10 s) until at least `count` requests arrived; returns them all.
    async fn wait_for(&self, count: usize) -> Vec<Received> {
        let started = Instant::now();
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(
                started.elapsed() < StdDuration::from_secs(10),
                "expected {count} webhook requests, got {}: {received:?}",
                received.len()
            );
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
    }

    /// Waits for a request of event type `event` and returns it.
    async fn wait_for_type(&self, event: &str) -> Received {
        let started = Instant::now();
        loop {
            if let Some(found) = self
                .received()
                .into_iter()
                .find(|r| r.event_type() == event)
            {
                return found;
            }
            assert!(
                started.elapsed() < StdDuration::from_secs(10),
                "no {event} event arrived: {:?}",
                self.received()
            );
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
    }

    /// Asserts that no more than `count` requests arrive within a second (the worker
    /// polls four times a second).
    async fn stays_at(&self, count: usize) {
        tokio::time::sleep(StdDuration::from_millis(1200)).await;
        let received = self.received();
        assert_eq!(received.len(), count, "unexpected requests: {received:?}");
    }
}

/// How far a `webhook-timestamp` may be from the receiver's clock.
const TOLERANCE_SECS: i64 = 300;

/// The Standard Webhooks check, written here independently of the server: the
/// timestamp within the tolerance of `now`, and one of the space-separated `v1,`
/// signatures equal to base64(HMAC-SHA256(base64-decoded secret, "id.timestamp.body")).
fn check_signature(
    secret: &str,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &str,
    now: i64,
) -> Result<(), String> {
    let sent: i64 = timestamp
        .parse()
        .map_err(|_| format!("timestamp {timestamp:?} is not a number"))?;
    if (now - sent).abs() > TOLERANCE_SECS {
        return Err(format!("timestamp {sent} is too far from {now}"));
    }
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").ok_or("no whsec_ prefix")?)
        .map_err(|err| format!("secret is not base64: {err}"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|err| err.to_string())?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    let matched = signatures
        .split(' ')
        .filter_map(|one| one.strip_prefix("v1,"))
        .any(|signature| signature == expected);
    if matched {
        Ok(())
    } else {
        Err(format!("no signature in {signatures:?} matches"))
    }
}

fn now_secs(server: &TestServer) -> i64 {
    server.clock.now().timestamp()
}

/// Checks a received request's signature with `secret` against the server's clock.
#[track_caller]
fn assert_signed(server: &TestServer, secret: &str, received: &Received) {
    assert_eq!(received.content_type, "application/json");
    assert!(received.id.starts_with("msg_"), "{received:?}");
    check_signature(
        secret,
        &received.id,
        &received.timestamp,
        &received.signature,
        &received.body,
        now_secs(server),
    )
    .unwrap_or_else(|err| panic!("signature check failed: {err}: {received:?}"));
}

/// Creates a subscription; returns its id and secret.
async fn subscribe(
    server: &TestServer,
    tenant: &Tenant,
    url: &str,
    event_types: &[&str],
) -> (String, String) {
    let reply = server
        .post(
            "/v1/webhooks",
            &tenant.key,
            json!({"url": url, "event_types": event_types, "description": "e2e"}),
        )
        .await;
    let body = reply.expect(201);
    let secret = body["secret"].as_str().expect("secret shown on creation");
    assert!(secret.starts_with("whsec_"), "{body}");
    (
        body["id"].as_str().expect("id").to_owned(),
        secret.to_owned(),
    )
}

/// The subscription's delivery log, newest first.
async fn deliveries(server: &TestServer, tenant: &Tenant, id: &str) -> Vec<Value> {
    server
        .get(&format!("/v1/webhooks/{id}/deliveries"), &tenant.key)
        .await
        .expect(200)["deliveries"]
        .as_array()
        .expect("deliveries")
        .clone()
}

/// Waits (up to 10 s) until the subscription's newest delivery has `status`.
async fn newest_becomes(server: &TestServer, tenant: &Tenant, id: &str, status: &str) -> Value {
    let started = Instant::now();
    loop {
        let log = deliveries(server, tenant, id).await;
        if let Some(newest) = log.first().filter(|d| d["status"] == status) {
            return newest.clone();
        }
        assert!(
            started.elapsed() < StdDuration::from_secs(10),
            "the newest delivery never became {status}: {log:?}"
        );
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
}

/// Waits (up to 10 s) until the subscription's newest delivery has recorded `count`
/// attempts; returns it.
async fn attempts_recorded(server: &TestServer, tenant: &Tenant, id: &str, count: usize) -> Value {
    let started = Instant::now();
    loop {
        let log = deliveries(server, tenant, id).await;
        if let Some(newest) = log
            .first()
            .filter(|d| d["attempts"].as_array().is_some_and(|a| a.len() >= count))
        {
            return newest.clone();
        }
        assert!(
            started.elapsed() < StdDuration::from_secs(10),
            "the newest delivery never recorded {count} attempts: {log:?}"
        );
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
}

async fn test_event(server: &TestServer, tenant: &Tenant, id: &str) -> Value {
    server
        .post(&format!("/v1/webhooks/{id}/test"), &tenant.key, json!({}))
        .await
        .expect(202)
        .clone()
}

#[tokio::test]
async fn a_full_flow_posts_signed_sent_and_verified_events() {
    let (server, tenant) = TestServer::with_tenant().await;
    let receiver = Receiver::start().await;
    let (id, secret) = subscribe(&server, &tenant, &receiver.url(), &["*"]).await;

    let shown = server.get(&format!("/v1/webhooks/{id}"), &tenant.key).await;
    let shown = shown.expect(200);
    assert!(
        shown.get("secret").is_none(),
        "the secret is shown once: {shown}"
    );
    assert_eq!(shown["event_types"], json!(["*"]));
    assert_eq!(shown["enabled"], true);

    let verified = server.send_and_verify(&tenant, UZ_BEELINE, "app-1").await;
    let verification_id = verified["verification_id"].as_str().expect("id");

    let sent = receiver.wait_for_type("verification.sent").await;
    let done = receiver.wait_for_type("verification.verified").await;
    for received in [&sent, &done] {
        assert_signed(&server, &secret, received);
        assert_eq!(received.timestamp, now_secs(&server).to_string());
    }
    assert_ne!(sent.id, done.id, "each event is its own message");

    let body = done.json();
    assert_eq!(
        keys(&body),
        sorted(&["type", "timestamp", "data"]),
        "{body}"
    );
    timestamp(&body["timestamp"]);
    let data = &body["data"];
    assert_eq!(data["verification_id"], verification_id);
    assert_eq!(data["phone"], UZ_BEELINE);
    assert_eq!(data["applicant_id"], "app-1");
    assert_eq!(data["status"], "Approved");
    assert_eq!(data["channel"], "sms");
    assert_eq!(data["otp_verified"], true);
    assert_eq!(data["country"], "UZ");
    assert!(data["verified_at"].is_string(), "{data}");
    let sent_data = sent.json()["data"].clone();
    assert_eq!(sent_data["verification_id"], verification_id);
    assert_eq!(sent_data["status"], "Not Finished");
    assert_eq!(sent_data["otp_verified"], false);

    // The check rejects what was not signed: a changed body, another id, an old or a
    // future timestamp, another secret.
    let now = now_secs(&server);
    let check = |id: &str, ts: &str, body: &str, now: i64| {
        check_signature(&secret, id, ts, &done.signature, body, now)
    };
    assert!(check(&done.id, &done.timestamp, &done.body, now).is_ok());
    let tampered = done.body.replace("Approved", "Declined");
    assert!(check(&done.id, &done.timestamp, &tampered, now).is_err());
    assert!(check(&sent.id, &done.timestamp, &done.body, now).is_err());
    let shifted = (now - 1).to_string();
    assert!(check(&done.id, &shifted, &done.body, now).is_err());
    assert!(check(&done.id, &done.timestamp, &done.body, now + 600).is_err());
    assert!(check(&done.id, &done.timestamp, &done.body, now - 600).is_err());
    let (_, other_secret) = subscribe(&server, &tenant, &receiver.url(), &["case.created"]).await;
    assert!(check_signature(
        &other_secret,
        &done.id,
        &done.timestamp,
        &done.signature,
        &done.body,
        now
    )
    .is_err());

    // The log shows both deliveries, newest first, each delivered on its first attempt.
    let verified_delivery = newest_becomes(&server, &tenant, &id, "delivered").await;
    let log = deliveries(&server, &tenant, &id).await;
    assert_eq!(log.len(), 2, "{log:?}");
    let types: Vec<&str> = log
        .iter()
        .map(|d| d["event_type"].as_str().expect("type"))
        .collect();
    assert!(types.contains(&"verification.sent") && types.contains(&"verification.verified"));
    for delivery in &log {
        assert_eq!(delivery["status"], "delivered", "{delivery}");
        let attempts = delivery["attempts"].as_array().expect("attempts");
        assert_eq!(attempts.len(), 1, "{delivery}");
        assert_eq!(attempts[0]["attempt"], 1);
        assert_eq!(attempts[0]["status_code"], 200);
        assert_eq!(attempts[0]["succeeded"], true);
        assert!(attempts[0]["duration_ms"].is_u64(), "{delivery}");
    }
    assert!(verified_delivery["payload"]["data"].is_object());
}

#[tokio::test]
async fn subscriptions_get_only_the_event_types_they_name() {
    let (server, tenant) = TestServer::with_tenant().await;
    let verified_only = Receiver::start().await;
    let cases_only = Receiver::start().await;
    let disabled = Receiver::start().await;
    let (_, secret) = subscribe(
        &server,
        &tenant,
        &verified_only.url(),
        &["verification.verified"],
    )
    .await;
    let (cases_id, _) = subscribe(&server, &tenant, &cases_only.url(), &["case.created"]).await;
    let (disabled_id, _) = subscribe(&server, &tenant, &disabled.url(), &["*"]).await;
    server
        .call(
            Method::PATCH,
            &format!("/v1/webhooks/{disabled_id}"),
            Some(&tenant.key),
            Some(&json!({"enabled": false})),
        )
        .await
        .expect(200);

    server.send_and_verify(&tenant, UZ_BEELINE, "app-1").await;
    let received = verified_only.wait_for(1).await;
    assert_eq!(received[0].event_type(), "verification.verified");
    assert_signed(&server, &secret, &received[0]);
    verified_only.stays_at(1).await;
    cases_only.stays_at(0).await;
    disabled.stays_at(0).await;
    assert!(deliveries(&server, &tenant, &cases_id).await.is_empty());
    assert!(deliveries(&server, &tenant, &disabled_id).await.is_empty());
}

#[tokio::test]
async fn a_failed_attempt_is_retried_after_the_backoff_with_the_same_message_id() {
    let (server, tenant) = TestServer::with_tenant().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[500], 200);
    let (id, secret) = subscribe(&server, &tenant, &receiver.url(), &["*"]).await;
    let queued = test_event(&server, &tenant, &id).await;
    assert_eq!(queued["event_type"], "webhook.test");
    assert_eq!(queued["status"], "pending");

    let first = receiver.wait_for(1).await[0].clone();
    assert_signed(&server, &secret, &first);
    assert_eq!(first.json()["type"], "webhook.test");
    assert_eq!(first.json()["data"]["webhook_id"], id.as_str());
    let failed = attempts_recorded(&server, &tenant, &id, 1).await;
    let attempt = &failed["attempts"][0];
    assert_eq!(attempt["status_code"], 500, "{failed}");
    assert_eq!(attempt["succeeded"], false);
    assert_eq!(
        timestamp(&failed["next_attempt_at"]) - timestamp(&attempt["at"]),
        Duration::seconds(5),
        "{failed}"
    );

    // Not before the backoff has passed on the server's clock…
    server.advance(Duration::seconds(4));
    receiver.stays_at(1).await;
    // …and then at once.
    server.advance(Duration::seconds(2));
    let both = receiver.wait_for(2).await;
    let second = &both[1];
    assert_eq!(second.id, first.id, "a retry keeps the webhook-id");
    assert_eq!(second.body, first.body, "a retry sends the same body");
    assert_eq!(
        second.timestamp.parse::<i64>().expect("ts") - first.timestamp.parse::<i64>().expect("ts"),
        6,
        "each attempt is signed at its own time"
    );
    assert_signed(&server, &secret, second);

    let delivered = newest_becomes(&server, &tenant, &id, "delivered").await;
    let attempts = delivered["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{delivered}");
    assert_eq!(attempts[0]["attempt"], 1);
    assert_eq!(attempts[0]["status_code"], 500);
    assert_eq!(attempts[1]["attempt"], 2);
    assert_eq!(attempts[1]["status_code"], 200);
    assert_eq!(attempts[1]["succeeded"], true);
    assert!(delivered["next_attempt_at"].is_null());
    assert_eq!(delivered["message_id"], first.id.as_str());
    receiver.stays_at(2).await;
}

#[tokio::test]
async fn a_delivery_gives_up_after_eight_attempts_and_a_manual_retry_sends_it_again() {
    let (server, tenant) = TestServer::with_tenant().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[], 503);
    let (id, _) = subscribe(&server, &tenant, &receiver.url(), &["*"]).await;
    let delivery_id = test_event(&server, &tenant, &id).await["id"]
        .as_str()
        .expect("delivery id")
        .to_owned();
    let schedule = [5, 30, 120, 600, 1800, 3600, 7200];
    for (index, delay) in schedule.iter().enumerate() {
        receiver.wait_for(index + 1).await;
        // The worker records the attempt before the clock moves.
        attempts_recorded(&server, &tenant, &id, index + 1).await;
        server.advance(Duration::seconds(delay + 1));
    }
    receiver.wait_for(8).await;
    let failed = newest_becomes(&server, &tenant, &id, "failed").await;
    assert_eq!(failed["attempts"].as_array().map(Vec::len), Some(8));
    assert!(
        failed["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{failed}"
    );
    server.advance(Duration::days(1));
    receiver.stays_at(8).await;

    // Only a failed delivery can be retried; a retry is one more attempt now.
    receiver.answer(&[], 200);
    let retried = server
        .post(
            &format!("/v1/webhooks/{id}/deliveries/{delivery_id}/retry"),
            &tenant.key,
            json!({}),
        )
        .await;
    assert_eq!(retried.expect(202)["status"], "pending");
    let all = receiver.wait_for(9).await;
    assert_eq!(all[8].id, all[0].id);
    let delivered = newest_becomes(&server, &tenant, &id, "delivered").await;
    assert_eq!(delivered["attempts"].as_array().map(Vec::len), Some(9));
    server
        .post(
            &format!("/v1/webhooks/{id}/deliveries/{delivery_id}/retry"),
            &tenant.key,
            json!({}),
        )
        .await
        .error(409, "delivery_not_failed");
    server
        .post(
            &format!("/v1/webhooks/{id}/deliveries/dlv_0000000000000nothere/retry"),
            &tenant.key,
            json!({}),
        )
        .await
        .error(404, "not_found");
}

#[tokio::test]
async fn pending_deliveries_survive_a_restart_and_go_out_after_it() {
    let (server, tenant) = TestServer::with_tenant().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[], 500);
    let (id, secret) = subscribe(&server, &tenant, &receiver.url(), &["*"]).await;
    server.send(&tenant, UZ_BEELINE, "app-1").await;
    let first = receiver.wait_for(1).await[0].clone();
    assert_eq!(first.event_type(), "verification.sent");
    attempts_recorded(&server, &tenant, &id, 1).await;

    let server = server.restart().await;
    receiver.answer(&[], 200);
    receiver.stays_at(1).await;
    let log = deliveries(&server, &tenant, &id).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["status"], "pending", "{log:?}");

    server.advance(Duration::seconds(6));
    let both = receiver.wait_for(2).await;
    assert_eq!(both[1].id, first.id);
    assert_signed(&server, &secret, &both[1]);
    let delivered = newest_becomes(&server, &tenant, &id, "delivered").await;
    assert_eq!(delivered["attempts"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn deleting_a_subscription_stops_its_deliveries() {
    let (server, tenant) = TestServer::with_tenant().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[], 500);
    let (id, _) = subscribe(&server, &tenant, &receiver.url(), &["*"]).await;
    test_event(&server, &tenant, &id).await;
    receiver.wait_for(1).await;
    attempts_recorded(&server, &tenant, &id, 1).await;

    server
        .delete(&format!("/v1/webhooks/{id}"), &tenant.key)
        .await
        .expect(204);
    receiver.answer(&[], 200);
    server.advance(Duration::seconds(60));
    server.send(&tenant, UZ_BEELINE, "app-1").await;
    receiver.stays_at(1).await;
    for path in [
        format!("/v1/webhooks/{id}"),
        format!("/v1/webhooks/{id}/deliveries"),
    ] {
        server.get(&path, &tenant.key).await.error(404, "not_found");
    }
    let listed = server.get("/v1/webhooks", &tenant.key).await;
    assert_eq!(listed.expect(200)["webhooks"], json!([]));
}

#[tokio::test]
async fn review_delivery_and_case_events_reach_their_subscribers() {
    let (server, tenant) = TestServer::with_tenant().await;
    let receiver = Receiver::start().await;
    let (_, secret) = subscribe(
        &server,
        &tenant,
        &receiver.url(),
        &[
            "verification.in_review",
            "verification.approved",
            "verification.delivered",
            "verification.failed",
            "case.created",
            "case.updated",
        ],
    )
    .await;
    upload_echo(
        &server,
        &tenant,
        ALL_TRIGGERS,
        json!({"action": "create_case", "on": "otp_verified"}),
    )
    .await;

    // A VoIP number goes to review after its code; the echo rule opens a case.
    server.send(&tenant, UK_VOIP, "app-1").await;
    let message = server.outbox(&tenant, UK_VOIP).await[0].clone();
    let message_id = message["id"].as_str().expect("message id");
    server
        .post(
            &format!("/v1/dev/outbox/{message_id}/delivery"),
            &tenant.key,
            json!({"status": "delivered"}),
        )
        .await
        .expect(200);
    let delivered = receiver.wait_for_type("verification.delivered").await;
    assert_eq!(delivered.json()["data"]["delivery"]["status"], "delivered");
    server
        .post(
            &format!("/v1/dev/outbox/{message_id}/delivery"),
            &tenant.key,
            json!({"status": "failed", "reason": "handset off"}),
        )
        .await
        .expect(200);
    let failed = receiver.wait_for_type("verification.failed").await;
    assert_eq!(failed.json()["data"]["delivery"]["reason"], "handset off");

    let code = message["code"].as_str().expect("code");
    let verified = server.verify(&tenant, UK_VOIP, "app-1", code).await;
    let verified = verified.expect(200);
    assert_eq!(verified["status"], "In Review", "{verified}");
    let verification_id = verified["verification_id"].as_str().expect("id");

    let in_review = receiver.wait_for_type("verification.in_review").await;
    assert_eq!(in_review.json()["data"]["verification_id"], verification_id);
    assert_eq!(in_review.json()["data"]["status"], "In Review");
    let created = receiver.wait_for_type("case.created").await;
    let case = created.json()["data"].clone();
    assert_eq!(case["verification_id"], verification_id);
    assert_eq!(case["status"], "open");
    let case_id = case["id"].as_str().expect("case id").to_owned();
    assert_eq!(in_review.json()["data"]["cases"], json!([case_id]));

    server
        .post(
            &format!("/v1/verifications/{verification_id}/review"),
            &tenant.key,
            json!({"decision": "approve", "note": "known customer", "reviewer": "ana"}),
        )
        .await
        .expect(200);
    let approved = receiver.wait_for_type("verification.approved").await;
    let data = approved.json()["data"].clone();
    assert_eq!(data["status"], "Approved");
    assert_eq!(data["review"]["decision"], "approve");
    assert_eq!(data["review"]["reviewer"], "ana");
    let resolved = receiver.wait_for_type("case.updated").await;
    assert_eq!(resolved.json()["data"]["id"], case_id.as_str());
    assert_eq!(resolved.json()["data"]["status"], "resolved");

    server
        .call(
            Method::PATCH,
            &format!("/v1/cases/{case_id}"),
            Some(&tenant.key),
            Some(&json!({"note": "closed by hand", "author": "ana"})),
        )
        .await
        .expect(200);
    let all = receiver.wait_for(7).await;
    let updates: Vec<&Received> = all
        .iter()
        .filter(|r| r.event_type() == "case.updated")
        .collect();
    assert_eq!(updates.len(), 2, "{all:?}");
    for received in &all {
        assert_signed(&server, &secret, received);
        let event = received.event_type();
        assert!(
            !event.starts_with("verification.sent") && event != "verification.verified",
            "an event not subscribed to arrived: {event}"
        );
    }
}

#[tokio::test]
async fn a_declined_send_emits_declined_and_a_wrong_code_after_expiry_emits_expired() {
    let (server, tenant) = TestServer::with_tenant().await;
    let receiver = Receiver::start().await;
    subscribe(
        &server,
        &tenant,
        &receiver.url(),
        &["verification.declined", "verification.expired"],
    )
    .await;
    let declined = server
        .send_otp(
            &tenant,
            json!({"phone": UK_DISPOSABLE, "applicant_id": "app-1"}),
        )
        .await;
    assert_eq!(declined.expect(200)["status"], "declined");
    let event = receiver.wait_for_type("verification.declined").await;
    assert_eq!(event.json()["data"]["status"], "Declined");
    assert_eq!(event.json()["data"]["phone"], UK_DISPOSABLE);
    assert!(event.json()["data"]["warnings"]
        .as_array()
        .is_some_and(|w| w.iter().any(|w| w == "DISPOSABLE_NUMBER_DETECTED")));

    server.send(&tenant, UZ_BEELINE, "app-2").await;
    let code = server.latest_code(&tenant, UZ_BEELINE).await;
    server.advance(Duration::minutes(11));
    let late = server.verify(&tenant, UZ_BEELINE, "app-2", &code).await;
    assert_eq!(late.expect(200)["verification_status"], "expired");
    let expired = receiver.wait_for_type("verification.expired").await;
    assert_eq!(expired.json()["data"]["status"], "Not Finished");
    receiver.stays_at(2).await;
}

#[tokio::test]
async fn another_tenants_events_and_webhooks_stay_apart() {
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let globex = server.tenant("globex").await;
    let receiver = Receiver::start().await;
    let (acme_hook, _) = subscribe(&server, &acme, &receiver.url(), &["*"]).await;

    server.send_and_verify(&globex, UZ_BEELINE, "app-1").await;
    receiver.stays_at(0).await;

    let own = Receiver::start().await;
    let (globex_hook, _) = subscribe(&server, &globex, &own.url(), &["*"]).await;
    for (method, path) in [
        (Method::GET, format!("/v1/webhooks/{acme_hook}")),
        (Method::PATCH, format!("/v1/webhooks/{acme_hook}")),
        (Method::DELETE, format!("/v1/webhooks/{acme_hook}")),
        (
            Method::POST,
            format!("/v1/webhooks/{acme_hook}/rotate-secret"),
        ),
        (Method::POST, format!("/v1/webhooks/{acme_hook}/test")),
        (Method::GET, format!("/v1/webhooks/{acme_hook}/deliveries")),
    ] {
        let body = (method == Method::PATCH).then(|| json!({"enabled": false}));
        server
            .call(method.clone(), &path, Some(&globex.key), body.as_ref())
            .await
            .error(404, "not_found");
    }
    let listed = server.get("/v1/webhooks", &globex.key).await;
    let listed = listed.expect(200)["webhooks"].clone();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["id"], globex_hook.as_str());
    assert_eq!(
        server
            .get(&format!("/v1/webhooks/{acme_hook}"), &acme.key)
            .await
            .expect(200)["enabled"],
        true
    );
    receiver.stays_at(0).await;
    server
        .get("/v1/webhooks", "dg_not_a_key")
        .await
        .error(401, "unauthorized");
}

#[tokio::test]
async fn rotating_the_secret_signs_later_attempts_with_the_new_one() {
    let (server, tenant) = TestServer::with_tenant().await;
    let receiver = Receiver::start().await;
    let (id, old) = subscribe(&server, &tenant, &receiver.url(), &["*"]).await;
    let rotated = server
        .post(
            &format!("/v1/webhooks/{id}/rotate-secret"),
            &tenant.key,
            json!({}),
        )
        .await;
    let new = rotated.expect(200)["secret"]
        .as_str()
        .expect("new secret")
        .to_owned();
    assert_ne!(new, old);
    test_event(&server, &tenant, &id).await;
    let received = receiver.wait_for(1).await[0].clone();
    assert_signed(&server, &new, &received);
    let now = now_secs(&server);
    assert!(check_signature(
        &old,
        &received.id,
        &received.timestamp,
        &received.signature,
        &received.body,
        now
    )
    .is_err());
}

#[tokio::test]
async fn the_catalogue_lists_every_event() {
    let (server, tenant) = TestServer::with_tenant().await;
    let reply = server.get("/v1/webhooks/events", &tenant.key).await;
    let body = reply.expect(200);
    let types: Vec<&str> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        types,
        [
            "verification.sent",
            "verification.delivered",
            "verification.failed",
            "verification.verified",
            "verification.declined",
            "verification.in_review",
            "verification.approved",
            "verification.expired",
            "case.created",
            "case.updated",
            "fraud.prefix_blocked",
            "spend.threshold_reached",
            "alert.conversion_dropped",
            "alert.delivery_failures_spiked"
        ]
    );
    assert_eq!(
        body["retry_schedule_seconds"],
        json!([5, 30, 120, 600, 1800, 3600, 7200])
    );
    server
        .get("/v1/webhooks/events", "dg_nope")
        .await
        .error(401, "unauthorized");
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field() {
    let (server, tenant) = TestServer::with_tenant().await;
    let create = |body: Value| {
        let server = &server;
        let tenant = &tenant;
        async move { server.post("/v1/webhooks", &tenant.key, body).await }
    };
    let long_url = format!("https://example.test/{}", "a".repeat(2048));
    let cases = [
        (
            json!({"url": "ftp://example.test/", "event_types": ["*"]}),
            "url",
        ),
        (json!({"url": "not a url", "event_types": ["*"]}), "url"),
        (json!({"url": long_url, "event_types": ["*"]}), "url"),
        (
            json!({"url": "https://u:p@example.test/", "event_types": ["*"]}),
            "url",
        ),
        (json!({"event_types": ["*"]}), "url"),
        (json!({"url": 5, "event_types": ["*"]}), "url"),
        (
            json!({"url": "https://example.test/", "event_types": []}),
            "event_types",
        ),
        (
            json!({"url": "https://example.test/", "event_types": ["verification.sent", "verification.nope"]}),
            "event_types[1]",
        ),
        (
            json!({"url": "https://example.test/", "event_types": ["case.created", "case.created"]}),
            "event_types[1]",
        ),
        (
            json!({"url": "https://example.test/", "event_types": ["*", "case.created"]}),
            "event_types",
        ),
        (
            json!({"url": "https://example.test/", "event_types": ["*"], "description": "x".repeat(501)}),
            "description",
        ),
        (
            json!({"url": "https://example.test/", "event_types": ["*"], "enabled": "yes"}),
            "enabled",
        ),
    ];
    for (body, field) in cases {
        create(body.clone()).await.invalid_field(field);
    }
    let unknown =
        create(json!({"url": "https://example.test/", "event_types": ["*"], "secret": "x"})).await;
    assert_eq!(unknown.status, 422, "{}", unknown.text);
    assert_error_shape(&unknown.body);
    let listed = server.get("/v1/webhooks", &tenant.key).await;
    assert_eq!(
        listed.expect(200)["webhooks"],
        json!([]),
        "nothing was stored"
    );

    let receiver = Receiver::start().await;
    let (id, _) = subscribe(&server, &tenant, &receiver.url(), &["*"]).await;
    let patch = |body: Value| {
        let server = &server;
        let tenant = &tenant;
        let id = id.clone();
        async move {
            server
                .call(
                    Method::PATCH,
                    &format!("/v1/webhooks/{id}"),
                    Some(&tenant.key),
                    Some(&body),
                )
                .await
        }
    };
    patch(json!({})).await.invalid_field("body");
    patch(json!({"url": "gopher://x/"}))
        .await
        .invalid_field("url");
    patch(json!({"event_types": ["nope"]}))
        .await
        .invalid_field("event_types[0]");
    let changed = patch(json!({"description": null, "event_types": ["case.created"]})).await;
    let changed = changed.expect(200);
    assert!(changed["description"].is_null(), "{changed}");
    assert_eq!(changed["event_types"], json!(["case.created"]));
    assert!(changed.get("secret").is_none());

    for query in ["limit=0", "limit=201", "status=lost", "limit=x", "other=1"] {
        let reply = server
            .get(
                &format!("/v1/webhooks/{id}/deliveries?{query}"),
                &tenant.key,
            )
            .await;
        assert_eq!(reply.status, 422, "{query}: {}", reply.text);
        assert_error_shape(&reply.body);
    }
    for bad in ["nope", "whk_..%2F..", "whk_0000"] {
        server
            .get(&format!("/v1/webhooks/{bad}"), &tenant.key)
            .await
            .error(404, "not_found");
    }

    // At most 20 subscriptions per tenant.
    for _ in 1..20 {
        subscribe(&server, &tenant, &receiver.url(), &["*"]).await;
    }
    server
        .post(
            "/v1/webhooks",
            &tenant.key,
            json!({"url": receiver.url(), "event_types": ["*"]}),
        )
        .await
        .error(409, "too_many_webhooks");

    // A disabled subscription cannot be tested.
    patch(json!({"enabled": false})).await.expect(200);
    server
        .post(&format!("/v1/webhooks/{id}/test"), &tenant.key, json!({}))
        .await
        .error(409, "webhook_disabled");
}

#[tokio::test]
async fn redirects_are_not_followed_and_unreachable_receivers_are_retried() {
    let (server, tenant) = TestServer::with_tenant().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[307], 200);
    let (id, _) = subscribe(&server, &tenant, &receiver.url(), &["*"]).await;
    test_event(&server, &tenant, &id).await;
    receiver.wait_for(1).await;
    let redirected = attempts_recorded(&server, &tenant, &id, 1).await;
    assert_eq!(redirected["status"], "pending", "{redirected}");
    assert_eq!(redirected["attempts"][0]["status_code"], 307);
    assert_eq!(redirected["attempts"][0]["succeeded"], false);
    receiver.stays_at(1).await;

    // Nothing listens on a port just released: the attempt fails without an answer.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let (closed, _) = subscribe(
        &server,
        &tenant,
        &format!("http://127.0.0.1:{port}/hook"),
        &["*"],
    )
    .await;
    test_event(&server, &tenant, &closed).await;
    let refused = attempts_recorded(&server, &tenant, &closed, 1).await;
    assert_eq!(refused["status"], "pending", "{refused}");
    assert!(refused["attempts"][0]["status_code"].is_null(), "{refused}");
    assert!(
        refused["attempts"][0]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("connection failed: ") && e.contains("refused")),
        "{refused}"
    );
}

#[tokio::test]
async fn disabling_fails_pending_deliveries_until_they_are_retried() {
    let (server, tenant) = TestServer::with_tenant().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[500], 200);
    let (id, _) = subscribe(&server, &tenant, &receiver.url(), &["*"]).await;
    let delivery_id = test_event(&server, &tenant, &id).await["id"]
        .as_str()
        .expect("delivery id")
        .to_owned();
    receiver.wait_for(1).await;
    attempts_recorded(&server, &tenant, &id, 1).await;
    let path = format!("/v1/webhooks/{id}");
    let disable = |enabled: bool| {
        let server = &server;
        let tenant = &tenant;
        let path = path.clone();
        async move {
            server
                .call(
                    Method::PATCH,
                    &path,
                    Some(&tenant.key),
                    Some(&json!({ "enabled": enabled })),
                )
                .await
                .expect(200)
                .clone()
        }
    };
    assert_eq!(disable(false).await["enabled"], false);
    server.advance(Duration::seconds(6));
    let failed = newest_becomes(&server, &tenant, &id, "failed").await;
    assert_eq!(failed["last_error"], "the webhook was disabled");
    assert_eq!(failed["attempts"].as_array().map(Vec::len), Some(1));
    receiver.stays_at(1).await;
    let retry = format!("/v1/webhooks/{id}/deliveries/{delivery_id}/retry");
    server
        .post(&retry, &tenant.key, json!({}))
        .await
        .error(409, "webhook_disabled");

    disable(true).await;
    server
        .post(&retry, &tenant.key, json!({}))
        .await
        .expect(202);
    receiver.wait_for(2).await;
    let delivered = newest_becomes(&server, &tenant, &id, "delivered").await;
    assert_eq!(delivered["attempts"].as_array().map(Vec::len), Some(2));
    let only_failed = server
        .get(
            &format!("/v1/webhooks/{id}/deliveries?status=failed"),
            &tenant.key,
        )
        .await;
    assert_eq!(only_failed.expect(200)["deliveries"], json!([]));
}
