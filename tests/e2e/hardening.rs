//! Hardening against a hostile client or tenant: the guess budget per number, the
//! refusal of a `client_ip` that is not an IP address, slow and idle connections and
//! the connection cap, the framework's own rejections in the JSON error shape, and
//! what a new user ran into (a decided verification holding against a new send,
//! `applicant_country` on send-otp, an unconfigured catalogue adapter in dev mode).

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::Duration;
use dialgate::clock::ManualClock;
use dialgate::config::Config;
use dialgate::server::RunningServer;
use reqwest::Method;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::sims::SmsSim;
use crate::support::*;

/// A safety net for awaiting a condition that should come soon; never an assertion
/// on timing (a slow machine only waits longer).
const PATIENCE: StdDuration = StdDuration::from_secs(60);

/// A server whose `RunningServer` the test keeps (for its connection figures and
/// shutdown), started like the support's with `configure` applied to its config.
struct Held {
    api: Api,
    running: RunningServer,
    _dir: TempDir,
}

impl Held {
    async fn start(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = test_config(&dir.path().join("data"));
        configure(&mut config);
        let running = dialgate::server::spawn(&config, Arc::new(ManualClock::new()))
            .await
            .expect("the server starts");
        let api = Api::new(format!("http://{}", running.addr));
        Self {
            api,
            running,
            _dir: dir,
        }
    }
}

/// Settings that keep the per-number and per-IP rate limits out of the way, so the
/// guess budget is what answers.
fn generous_limits() -> Value {
    let wide = json!({"per_minute": 100_000, "burst": 100_000});
    json!({
        "max_resends_per_24h": 10,
        "rate_limits": {
            "send_otp": {"per_tenant": wide, "per_phone": wide, "per_ip": wide},
            "verify_otp": {"per_tenant": wide, "per_phone": wide, "per_ip": wide},
        }
    })
}

/// Enters a wrong code for the applicant's open verification; returns the answer.
async fn wrong(server: &TestServer, tenant: &Tenant, phone: &str, applicant: &str) -> Value {
    let code = server.latest_code(tenant, phone).await;
    server
        .verify(tenant, phone, applicant, &wrong_code(&code))
        .await
        .expect(200)
        .clone()
}

const LOCK: &str = "VERIFICATION_CODE_GUESS_BUDGET_EXHAUSTED";

#[tokio::test]
async fn wrong_codes_across_applicants_and_resends_lock_the_number() {
    let (server, tenant) = TestServer::with_tenant().await;
    server.settings(&tenant, generous_limits()).await;
    let phone = uz_number(40);

    // Nine wrong codes over five applicants, new verifications (after the attempts
    // of one ran out) and resends...
    for applicant in ["a1", "a2", "a3", "a4"] {
        server.send(&tenant, &phone, applicant).await;
        wrong(&server, &tenant, &phone, applicant).await;
        server.send(&tenant, &phone, applicant).await;
        wrong(&server, &tenant, &phone, applicant).await;
    }
    server.send(&tenant, &phone, "a4").await;
    let ninth = wrong(&server, &tenant, &phone, "a4").await;
    assert_eq!(ninth["verification_status"], "incorrect_code");
    assert!(
        !risks(&ninth["warnings"]).contains(&LOCK.to_owned()),
        "{ninth}"
    );
    // ...then a correct one clears the count.
    server.send(&tenant, &phone, "a5").await;
    let code = server.latest_code(&tenant, &phone).await;
    let verified = server.verify(&tenant, &phone, "a5", &code).await;
    assert_eq!(verified.expect(200)["verification_status"], "verified");

    // Ten more wrong codes, spread the same way: the tenth locks the number.
    let mut answers = Vec::new();
    let mut late = (Value::Null, String::new());
    for applicant in ["b1", "b2", "b3", "b4", "b5"] {
        server.send(&tenant, &phone, applicant).await;
        answers.push(wrong(&server, &tenant, &phone, applicant).await);
        if applicant == "b5" {
            // An open verification whose right code will come too late.
            let sent = server.send(&tenant, &phone, "late").await;
            late = (sent, server.latest_code(&tenant, &phone).await);
        }
        server.send(&tenant, &phone, applicant).await;
        answers.push(wrong(&server, &tenant, &phone, applicant).await);
    }
    for answer in &answers[..9] {
        assert!(
            !risks(&answer["warnings"]).contains(&LOCK.to_owned()),
            "{answer}"
        );
    }
    let tenth = &answers[9];
    assert_eq!(tenth["verification_status"], "attempts_exceeded", "{tenth}");
    assert_warning(warning(&tenth["warnings"], LOCK), LOCK, "Review");

    // Code entry is locked for the number: even the right code is refused.
    let refused = server.verify(&tenant, &phone, "late", &late.1).await;
    let error = refused.error(429, "guess_budget_exhausted");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("locked until")),
        "{error}"
    );
    let retry: i64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=3600).contains(&retry), "{retry}");
    // So is a new code for it, which could not be entered.
    server
        .send_otp(&tenant, json!({"phone": phone, "applicant_id": "c1"}))
        .await
        .error(429, "guess_budget_exhausted");

    // The lock shows on the reports: the verification whose wrong code locked the
    // number, and the one whose entry was refused.
    let locked_id = tenth["verification_id"].as_str().expect("id");
    let report = server.report(&tenant, locked_id).await;
    assert!(
        risks(&report["phone"]["warnings"]).contains(&LOCK.to_owned()),
        "{report}"
    );
    let late_id = late.0["verification_id"].as_str().expect("id");
    let report = server.report(&tenant, late_id).await;
    assert_warning(warning(&report["phone"]["warnings"], LOCK), LOCK, "Review");
    assert_eq!(report["phone"]["status"], "Not Finished");

    // Another number of the tenant, and the same number at another tenant, are free.
    let other = uz_number(41);
    let verified = server.send_and_verify(&tenant, &other, "b1").await;
    assert_eq!(verified["verification_status"], "verified");
    let neighbour = server.tenant("neighbour").await;
    let verified = server.send_and_verify(&neighbour, &phone, "b1").await;
    assert_eq!(verified["verification_status"], "verified");

    // After the lockout one more guess is allowed; with the count still full within
    // 24 hours, a wrong one locks again at once, and a right one clears the count.
    server.advance(Duration::minutes(61));
    server.send(&tenant, &phone, "d1").await;
    let relocked = wrong(&server, &tenant, &phone, "d1").await;
    assert!(
        risks(&relocked["warnings"]).contains(&LOCK.to_owned()),
        "{relocked}"
    );
    server
        .send_otp(&tenant, json!({"phone": phone, "applicant_id": "d1"}))
        .await
        .error(429, "guess_budget_exhausted");
    server.advance(Duration::minutes(61));
    server.send(&tenant, &phone, "d2").await;
    let code = server.latest_code(&tenant, &phone).await;
    let verified = server.verify(&tenant, &phone, "d2", &code).await;
    assert_eq!(verified.expect(200)["verification_status"], "verified");
    server.send(&tenant, &phone, "d3").await;
    let after = wrong(&server, &tenant, &phone, "d3").await;
    assert!(
        !risks(&after["warnings"]).contains(&LOCK.to_owned()),
        "{after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_wrong_codes_cannot_overspend_the_guess_budget() {
    let (server, tenant) = TestServer::with_tenant().await;
    let mut settings = generous_limits();
    settings["max_otp_attempts"] = json!(20);
    settings["guess_budget"] = json!({"max_failures_per_24h": 3, "lockout_minutes": 30});
    server.settings(&tenant, settings).await;
    let phone = uz_number(42);
    server.send(&tenant, &phone, "a").await;
    let wrong = wrong_code(&server.latest_code(&tenant, &phone).await);
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let api = server.api.clone();
            let tenant = tenant.clone();
            let (phone, wrong) = (phone.clone(), wrong.clone());
            tokio::spawn(async move { api.verify(&tenant, &phone, "a", &wrong).await })
        })
        .collect();
    let (mut checked, mut refused) = (0, 0);
    for task in tasks {
        let reply = task.await.expect("request task");
        if reply.status == 429 {
            reply.error(429, "guess_budget_exhausted");
            refused += 1;
        } else {
            assert_eq!(reply.expect(200)["verification_status"], "incorrect_code");
            checked += 1;
        }
    }
    assert_eq!((checked, refused), (3, 9));
}

#[tokio::test]
async fn the_guess_budget_is_a_validated_setting() {
    let (server, tenant) = TestServer::with_tenant().await;
    let path = "/v1/settings/phone-verification";
    server
        .put(
            path,
            &tenant.key,
            json!({"guess_budget": {"max_failures_per_24h": 0}}),
        )
        .await
        .invalid_field("guess_budget.max_failures_per_24h");
    server
        .put(
            path,
            &tenant.key,
            json!({"guess_budget": {"lockout_minutes": 20_000}}),
        )
        .await
        .invalid_field("guess_budget.lockout_minutes");
    let saved = server
        .settings(&tenant, json!({"guess_budget": {"lockout_minutes": 1440}}))
        .await;
    assert_eq!(
        saved["guess_budget"],
        json!({"max_failures_per_24h": 10, "lockout_minutes": 1440})
    );
}

#[tokio::test]
async fn a_client_ip_must_be_an_ip_address() {
    let (server, tenant) = TestServer::with_tenant().await;
    let phone = uz_number(43);
    let huge = "1".repeat(60_000);
    for bad in ["not-an-ip", "10.0.0.1:80", "", huge.as_str()] {
        server
            .send_otp(
                &tenant,
                json!({"phone": phone, "applicant_id": "a", "client_ip": bad}),
            )
            .await
            .invalid_field("client_ip");
        server
            .post(
                "/v1/phone/verify-otp",
                &tenant.key,
                json!({"phone": phone, "applicant_id": "a", "code": "123456", "client_ip": bad}),
            )
            .await
            .invalid_field("client_ip");
    }
    assert!(server.outbox(&tenant, &phone).await.is_empty());
    for good in ["203.0.113.7", "2001:db8::7", "::ffff:203.0.113.7"] {
        let sent = server
            .send_otp(
                &tenant,
                json!({"phone": phone, "applicant_id": good, "client_ip": good}),
            )
            .await;
        assert_eq!(sent.expect(200)["status"], "pending");
    }
}

// --- connections -------------------------------------------------------------

/// Reads until the server closes the connection; `true` when it did (end of stream
/// or a reset), within [`PATIENCE`].
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    let closing = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(PATIENCE, closing)
        .await
        .unwrap_or(false)
}

/// Sends `GET path` on a kept-alive connection and reads the answer's status.
async fn get_on(stream: &mut TcpStream, path: &str) -> u16 {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: dialgate\r\n\r\n").as_bytes())
        .await
        .expect("write the request");
    read_answer(stream).await
}

/// Reads one HTTP/1.1 answer with a `Content-Length` body; returns its status.
async fn read_answer(stream: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("read the answer");
        assert_eq!(n, 1, "the connection closed mid-answer: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).expect("text head");
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.expect("read the body");
    head.split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .expect("a status line")
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed() {
    let server = Held::start(|config| {
        config.http.header_read_timeout = StdDuration::from_millis(300);
        config.http.idle_timeout = StdDuration::from_millis(300);
    })
    .await;
    let addr = server.running.addr;

    // Half a request head, then nothing: closed after the header-read timeout.
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"POST /v1/phone/lookup HTTP/1.1\r\nHost: dialgate\r\nContent-Le")
        .await
        .expect("write half a head");
    assert!(closed_by_server(&mut slow).await, "a slow head is cut off");

    // A connection that never says anything is closed too.
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    assert!(
        closed_by_server(&mut silent).await,
        "a silent connection is cut off"
    );

    // A kept-alive connection is served, then closed once idle.
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(get_on(&mut idle, "/healthz").await, 200);
    assert_eq!(get_on(&mut idle, "/healthz").await, 200, "kept alive");
    assert!(
        closed_by_server(&mut idle).await,
        "an idle connection is closed"
    );

    // The server still serves new connections.
    let reply = server.api.get("/healthz", "unused").await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn a_trickled_request_body_is_cut_off_at_its_deadline() {
    let server = Held::start(|config| {
        config.http.body_read_timeout = StdDuration::from_millis(300);
    })
    .await;
    let tenant = server.api.create_tenant(OPERATOR_KEY, "slowbody").await;
    let mut slow = TcpStream::connect(server.running.addr)
        .await
        .expect("connect");
    // The head in full, then a tenth of the announced body, then nothing.
    let head = format!(
        "POST /v1/phone/lookup HTTP/1.1\r\nHost: dialgate\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"phone\":",
        tenant.key
    );
    slow.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, slow.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("application/json"), "{answer}");
    assert!(answer.contains("did not arrive within"), "{answer}");

    // The server still serves.
    let reply = server
        .api
        .post(
            "/v1/phone/lookup",
            &tenant.key,
            json!({"phone": UZ_BEELINE}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let server = Held::start(|config| config.http.max_connections = 2).await;
    let addr = server.running.addr;
    let stats = Arc::clone(&server.running.connections);
    let mut first = TcpStream::connect(addr).await.expect("connect");
    let mut second = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(get_on(&mut first, "/healthz").await, 200);
    assert_eq!(get_on(&mut second, "/healthz").await, 200);
    assert_eq!(stats.open(), 2);

    // A third connection completes its TCP handshake in the backlog, but is not
    // served while the other two are open.
    let third = tokio::spawn(async move {
        let mut third = TcpStream::connect(addr).await.expect("connect");
        get_on(&mut third, "/healthz").await
    });
    // A full round trip on an open connection after the third one asked.
    for _ in 0..3 {
        tokio::task::yield_now().await;
        assert_eq!(get_on(&mut second, "/healthz").await, 200);
    }
    assert!(!third.is_finished(), "the third connection was served");
    assert_eq!(stats.accepted(), 2, "the third connection was accepted");

    // One closes: the third is served.
    drop(first);
    let status = tokio::time::timeout(PATIENCE, third)
        .await
        .expect("the third connection is served once one closes")
        .expect("task");
    assert_eq!(status, 200);
    assert_eq!(stats.accepted(), 3);
}

#[tokio::test]
async fn shutdown_closes_kept_alive_connections() {
    let server = Held::start(|_| {}).await;
    let mut idle = TcpStream::connect(server.running.addr)
        .await
        .expect("connect");
    assert_eq!(get_on(&mut idle, "/healthz").await, 200);
    let Held { running, .. } = server;
    tokio::time::timeout(PATIENCE, running.shutdown())
        .await
        .expect("shutdown finishes with an idle connection open");
    assert!(closed_by_server(&mut idle).await);
}

// --- error shapes ------------------------------------------------------------

#[tokio::test]
async fn framework_rejections_answer_in_the_json_error_shape() {
    let (server, tenant) = TestServer::with_tenant().await;

    // A path segment that is not UTF-8.
    let reply = server.get("/v1/verifications/%FF%FE", &tenant.key).await;
    assert_eq!(reply.error(400, "invalid_path")["field"], "path");
    let reply = server
        .call(Method::POST, "/v1/callbacks/%FF/x", None, Some(&json!({})))
        .await;
    reply.error(400, "invalid_path");

    // A body over a route's limit, on a JSON route and the catalogue's install route.
    let big = vec![b' '; 100 << 10];
    for path in ["/v1/phone/lookup", "/v1/plugins/catalog/http-sms"] {
        let reply = server
            .raw(
                Method::POST,
                path,
                Some(&tenant.key),
                Some(("application/json", big.clone())),
                &[],
            )
            .await;
        reply.error(413, "payload_too_large");
    }
    // A malformed multipart upload.
    let reply = server
        .raw(
            Method::POST,
            "/v1/plugins",
            Some(&tenant.key),
            Some(("multipart/form-data", b"--x\r\nbroken".to_vec())),
            &[],
        )
        .await;
    assert_error_shape(&reply.body);
    assert_eq!(reply.status, 400, "{}", reply.text);

    // The catalogue's install route: malformed JSON is 400, text is 415, a field
    // error is 422 naming it, and an empty body installs.
    let install = "/v1/plugins/catalog/http-sms";
    let reply = server
        .raw(
            Method::POST,
            install,
            Some(&tenant.key),
            Some(("application/json", b"{\"hosts\": [".to_vec())),
            &[],
        )
        .await;
    reply.error(400, "malformed_json");
    let reply = server
        .raw(
            Method::POST,
            install,
            Some(&tenant.key),
            Some(("text/plain", b"{\"hosts\": []}".to_vec())),
            &[],
        )
        .await;
    reply.error(415, "unsupported_media_type");
    server
        .post(install, &tenant.key, json!({"hosts": "api.example.test"}))
        .await
        .invalid_field("hosts");
    let reply = server
        .raw(Method::POST, install, Some(&tenant.key), None, &[])
        .await;
    assert_eq!(reply.expect(201)["name"], "http-sms");
}

// --- what a new user ran into --------------------------------------------------

#[tokio::test]
async fn a_decided_verification_holds_against_a_new_send() {
    let (server, tenant) = TestServer::with_tenant().await;
    // No code required, and a country mismatch alone is high risk.
    server
        .settings(
            &tenant,
            json!({"require_otp": false, "high_risk_threshold": 15, "medium_risk_threshold": 10}),
        )
        .await;
    let looked = server
        .post(
            "/v1/phone/lookup",
            &tenant.key,
            json!({"phone": UZ_BEELINE, "applicant_id": "a", "applicant_country": "US"}),
        )
        .await;
    let looked = looked.expect(200).clone();
    assert_eq!(looked["status"], "Declined", "{looked}");
    let id = looked["verification_id"].as_str().expect("id").to_owned();

    // A send without the country would see no mismatch: the decision holds anyway.
    let sent = server
        .send_otp(&tenant, json!({"phone": UZ_BEELINE, "applicant_id": "a"}))
        .await;
    let sent = sent.expect(200).clone();
    assert_eq!(sent["status"], "declined", "{sent}");
    assert_eq!(sent["verification_id"], id.as_str());
    assert_eq!(risks(&sent["warnings"]), ["HIGH_RISK_PHONE_NUMBER"]);
    assert_eq!(sent["expires_at"], Value::Null);
    assert!(
        server.outbox(&tenant, UZ_BEELINE).await.is_empty(),
        "no code sent"
    );
    // A lookup without the country answers the same decision, without a new one.
    let again = server
        .post(
            "/v1/phone/lookup",
            &tenant.key,
            json!({"phone": UZ_BEELINE, "applicant_id": "a"}),
        )
        .await;
    let again = again.expect(200).clone();
    assert_eq!(again["verification_id"], id.as_str());
    assert_eq!(again["status"], "Declined");
    let report = server.report(&tenant, &id).await;
    assert_eq!(report["phone"]["status"], "Declined");
    server
        .verify(&tenant, UZ_BEELINE, "a", "123456")
        .await
        .error(409, "verification_closed");

    // Another applicant is decided on its own.
    let other = server.send(&tenant, UZ_BEELINE, "b").await;
    assert_ne!(other["verification_id"], id.as_str());
}

#[tokio::test]
async fn applicant_country_on_send_otp_reaches_the_risk_factors() {
    let (server, tenant) = TestServer::with_tenant().await;
    let sent = server
        .send_otp(
            &tenant,
            json!({"phone": UZ_BEELINE, "applicant_id": "a", "applicant_country": "us"}),
        )
        .await;
    let sent = sent.expect(200).clone();
    assert_eq!(sent["status"], "pending");
    let report = server
        .report(&tenant, sent["verification_id"].as_str().expect("id"))
        .await;
    assert_eq!(
        report["risk_assessment"]["factors"],
        json!([{
            "factor": "country_mismatch",
            "contribution": 15,
            "details": "Phone country UZ differs from applicant country US",
        }]),
        "{report}"
    );
    server
        .send_otp(
            &tenant,
            json!({"phone": UZ_BEELINE, "applicant_id": "b", "applicant_country": "Narnia"}),
        )
        .await
        .invalid_field("applicant_country");
}

#[tokio::test]
async fn a_catalogue_adapter_without_its_configuration_is_not_used() {
    let (server, tenant) = TestServer::with_tenant().await;
    let sim = SmsSim::start().await;
    let installed = server
        .post(
            "/v1/plugins/catalog/http-sms",
            &tenant.key,
            json!({"hosts": [sim.host()]}),
        )
        .await;
    let id = installed.expect(201)["id"].as_str().expect("id").to_owned();

    // Installed but unconfigured: the dev outbox still gets the code.
    let phone = uz_number(44);
    server.send(&tenant, &phone, "a").await;
    assert_eq!(server.outbox(&tenant, &phone).await.len(), 1);

    // Configured with a placeholder and no secret: still not used.
    server
        .put(
            &format!("/v1/plugins/{id}/config"),
            &tenant.key,
            json!({
                "config": {"shape": "twilio", "base_url": sim.base_url(), "sender": "Acme",
                           "account_sid": "<your account sid>"},
                "granted_hosts": [sim.host()],
            }),
        )
        .await
        .expect(200);
    let phone = uz_number(45);
    server.send(&tenant, &phone, "a").await;
    assert_eq!(server.outbox(&tenant, &phone).await.len(), 1);
    // A provider on it that lacks the secret is not used either.
    server
        .post(
            "/v1/providers",
            &tenant.key,
            json!({"name": "twilio", "plugin": "http-sms", "sender_id": "Acme",
                   "config": {"shape": "twilio", "base_url": sim.base_url(), "account_sid": "AC42"},
                   "hosts": [sim.host()]}),
        )
        .await
        .expect(201);
    let phone = uz_number(46);
    server.send(&tenant, &phone, "a").await;
    assert_eq!(server.outbox(&tenant, &phone).await.len(), 1);
    assert!(sim.accepted().is_empty(), "nothing reached the provider");

    // Complete: now the adapter sends, and the outbox gets nothing.
    server
        .put(
            &format!("/v1/plugins/{id}/config"),
            &tenant.key,
            json!({
                "config": {"shape": "twilio", "base_url": sim.base_url(), "sender": "Acme",
                           "account_sid": "AC42"},
                "secrets": {"auth_token": "twilio-secret"},
            }),
        )
        .await
        .expect(200);
    let phone = uz_number(47);
    server.send(&tenant, &phone, "a").await;
    assert!(server.outbox(&tenant, &phone).await.is_empty());
    assert_eq!(sim.accepted().len(), 1, "the provider got the code");
}

#[tokio::test]
async fn in_production_an_unconfigured_adapter_is_named_in_the_refusal() {
    let server = Held::start(|config| config.production = true).await;
    let tenant = server.api.create_tenant(OPERATOR_KEY, "acme").await;
    server
        .api
        .post("/v1/plugins/catalog/kannel", &tenant.key, json!({}))
        .await
        .expect(201);
    let reply = server
        .api
        .send_otp(&tenant, json!({"phone": UZ_BEELINE, "applicant_id": "a"}))
        .await;
    let error = reply.error(503, "unavailable");
    let message = error["message"].as_str().expect("message");
    assert!(
        message.contains("kannel")
            && message.contains("base_url")
            && message.contains("secret password"),
        "{message}"
    );
}

/// A tenant that floods configuration changes (here blocklist entries, each a write
/// and an entry of the change log every replica reads) is refused past its budget,
/// before anything is written; another tenant's changes, and the flooding tenant's own
/// sends, go on; the budget refills with time.
#[tokio::test]
async fn a_flood_of_configuration_changes_is_refused_past_the_tenants_budget() {
    let server = TestServer::start().await;
    let (flooder, other) = (server.tenant("flooder").await, server.tenant("other").await);
    let blocked = |n: u32| format!("+99890{n:07}");
    let mut admitted = 0;
    let refused = loop {
        let reply = server
            .post(
                "/v1/blocklist",
                &flooder.key,
                json!({"phone": blocked(admitted)}),
            )
            .await;
        if reply.status != 201 && reply.status != 200 {
            break reply;
        }
        admitted += 1;
        assert!(admitted <= 1_000, "never refused");
    };
    assert_eq!(admitted, 300, "the burst, and no more");
    let error = refused.error(429, "rate_limited");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("configuration changes")),
        "{error}"
    );
    let retry: u64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert_eq!(retry, 1);
    // Nothing of the refused change was written.
    let list = server.get("/v1/blocklist", &flooder.key).await;
    let listed = list.expect(200)["entries"]
        .as_array()
        .expect("entries")
        .len();
    assert_eq!(listed, 300, "{}", list.text);
    // Another tenant's change goes through at once, and the flooder's sends still do.
    server
        .post("/v1/blocklist", &other.key, json!({"phone": blocked(0)}))
        .await
        .expect(201);
    server.send(&flooder, &uz_number(7), "a").await;
    // A second later, 20 more changes are admitted.
    server.advance(Duration::seconds(1));
    for n in 0..20 {
        server
            .post(
                "/v1/blocklist",
                &flooder.key,
                json!({"phone": blocked(1_000 + n)}),
            )
            .await
            .expect(201);
    }
    server
        .post(
            "/v1/blocklist",
            &flooder.key,
            json!({"phone": blocked(2_000)}),
        )
        .await
        .error(429, "rate_limited");
}
