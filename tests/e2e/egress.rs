//! The egress policy end to end: under the default policy a loopback listener is never
//! reached through adapter grants, provider base URLs, lookup-adapter URLs or webhook
//! URLs, in any spelling of the address (`127.1`, `2130706433`, `[::ffff:127.0.0.1]`,
//! `0.0.0.0`, `localhost`), whether the address is refused when configured or when
//! connected to; the errors say the egress policy refused it and leak nothing of the
//! listener's answer. With loopback allowed (the test servers' default, as
//! `--egress-allow 127.0.0.0/8,::1`) the same calls arrive; a grant without a port
//! reaches the default port only. All traffic stays on loopback: other ranges are
//! covered by the classification unit tests in `host/src/egress.rs`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// What the canary answers: were it ever to reach a tenant, it would show in an error.
const CANARY_ANSWER: &str = "CANARY-INTERNAL-ANSWER-do-not-leak";

/// A loopback listener that counts the connections it accepts and answers each
/// request 200 with [`CANARY_ANSWER`].
struct Canary {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Canary {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the canary");
        let addr = listener.local_addr().expect("address");
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    read_request(&mut stream).await;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{CANARY_ANSWER}",
                        CANARY_ANSWER.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { addr, connections }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn reached(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits (up to 10 s) until the canary was connected to.
    async fn wait_reached(&self) {
        let started = Instant::now();
        while self.reached() == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the canary was never reached"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Reads one request's head and its `content-length` body (bounded), so the answer is
/// not sent while the client still writes.
async fn read_request(stream: &mut tokio::net::TcpStream) {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while seen.len() < 1 << 20 {
        let Ok(read) = stream.read(&mut buffer).await else {
            return;
        };
        if read == 0 {
            return;
        }
        seen.extend_from_slice(&buffer[..read]);
        let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if seen.len() >= end + 4 + length {
            return;
        }
    }
}

/// Every spelling of a loopback (or unspecified) address on `port` that the default
/// policy must refuse.
fn loopback_spellings(port: u16) -> Vec<String> {
    [
        "127.0.0.1",
        "127.1",
        "2130706433",
        "0x7f.1",
        "0.0.0.0",
        "[::ffff:127.0.0.1]",
        "[::1]",
    ]
    .iter()
    .map(|host| format!("http://{host}:{port}/hook"))
    .collect()
}

fn assert_refused_by_policy(text: &str) {
    assert!(text.contains("egress policy refused"), "{text}");
    assert!(text.contains("--egress-allow"), "{text}");
    assert!(
        !text.contains(CANARY_ANSWER),
        "the internal answer leaked: {text}"
    );
}

/// The subscription's newest delivery once it recorded an attempt (waits up to 10 s).
async fn first_attempt(server: &TestServer, tenant: &Tenant, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let log = server
            .get(&format!("/v1/webhooks/{id}/deliveries"), &tenant.key)
            .await
            .expect(200)["deliveries"]
            .clone();
        if let Some(attempt) = log[0]["attempts"].as_array().and_then(|a| a.first()) {
            return attempt.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no attempt recorded: {log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn subscribe(server: &TestServer, tenant: &Tenant, url: &str) -> Reply {
    server
        .post(
            "/v1/webhooks",
            &tenant.key,
            json!({"url": url, "event_types": ["*"]}),
        )
        .await
}

async fn test_event(server: &TestServer, tenant: &Tenant, id: &str) {
    server
        .post(&format!("/v1/webhooks/{id}/test"), &tenant.key, json!({}))
        .await
        .expect(202);
}

#[tokio::test]
async fn webhook_urls_on_loopback_are_refused_in_every_spelling() {
    let server = TestServer::start_strict().await;
    let tenant = server.tenant("acme").await;
    let canary = Canary::start().await;
    for url in loopback_spellings(canary.port()) {
        let reply = subscribe(&server, &tenant, &url).await;
        let error = reply.invalid_field("url");
        assert_refused_by_policy(&error.to_string());
    }
    assert_eq!(canary.reached(), 0);
}

#[tokio::test]
async fn a_webhook_name_that_resolves_to_loopback_is_refused_when_connecting() {
    let server = TestServer::start_strict().await;
    let tenant = server.tenant("acme").await;
    let canary = Canary::start().await;
    // A name is checked on the address it resolves to, at every attempt.
    let url = format!("http://localhost:{}/hook", canary.port());
    let reply = subscribe(&server, &tenant, &url).await;
    let id = reply.expect(201)["id"].as_str().expect("id").to_owned();
    test_event(&server, &tenant, &id).await;
    let attempt = first_attempt(&server, &tenant, &id).await;
    assert!(attempt["status_code"].is_null(), "{attempt}");
    assert_eq!(attempt["succeeded"], false);
    let error = attempt["error"].as_str().expect("error");
    assert_refused_by_policy(error);
    assert!(error.contains("localhost"), "{error}");
    assert_eq!(canary.reached(), 0);
}

#[tokio::test]
async fn a_webhook_made_while_loopback_was_allowed_is_refused_once_it_is_not() {
    let server = TestServer::start().await;
    let tenant = server.tenant("acme").await;
    let canary = Canary::start().await;
    let mut ids = Vec::new();
    for host in ["127.0.0.1", "127.1", "2130706433"] {
        let url = format!("http://{host}:{}/hook", canary.port());
        let reply = subscribe(&server, &tenant, &url).await;
        ids.push(reply.expect(201)["id"].as_str().expect("id").to_owned());
    }
    let server = server
        .restart_with(|config| config.egress_allow = Default::default())
        .await;
    for id in &ids {
        test_event(&server, &tenant, id).await;
        let attempt = first_attempt(&server, &tenant, id).await;
        assert_refused_by_policy(attempt["error"].as_str().expect("error"));
    }
    assert_eq!(canary.reached(), 0);
}

#[tokio::test]
async fn with_loopback_allowed_webhooks_reach_loopback_in_each_spelling() {
    // The test servers allow 127.0.0.0/8 and ::1, as `--egress-allow` would.
    let server = TestServer::start().await;
    let tenant = server.tenant("acme").await;
    for host in ["127.0.0.1", "127.1", "2130706433", "localhost"] {
        let canary = Canary::start().await;
        let url = format!("http://{host}:{}/hook", canary.port());
        let reply = subscribe(&server, &tenant, &url).await;
        let id = reply.expect(201)["id"].as_str().expect("id").to_owned();
        test_event(&server, &tenant, &id).await;
        canary.wait_reached().await;
        let attempt = first_attempt(&server, &tenant, &id).await;
        assert_eq!(attempt["status_code"], 200, "{host}: {attempt}");
    }
    // 0.0.0.0 is not loopback: allowing 127.0.0.0/8 does not allow it.
    let reply = subscribe(&server, &tenant, "http://0.0.0.0:9/hook").await;
    assert_refused_by_policy(&reply.invalid_field("url").to_string());
}

/// Installs the catalogue's `http-sms` adapter.
async fn install_http_sms(server: &TestServer, tenant: &Tenant) {
    server
        .post("/v1/plugins/catalog/http-sms", &tenant.key, json!({}))
        .await
        .expect(201);
}

/// A Twilio-shaped provider on `base_url`, granted `hosts`.
fn provider_body(name: &str, base_url: &str, hosts: &[String]) -> Value {
    json!({
        "name": name,
        "plugin": "http-sms",
        "sender_id": "+15005550006",
        "config": {"shape": "twilio", "base_url": base_url, "account_sid": "AC42"},
        "secrets": {"auth_token": "twilio-secret"},
        "hosts": hosts,
    })
}

#[tokio::test]
async fn providers_cannot_be_pointed_at_loopback() {
    let server = TestServer::start_strict().await;
    let tenant = server.tenant("acme").await;
    install_http_sms(&server, &tenant).await;
    let canary = Canary::start().await;
    let port = canary.port();
    for url in loopback_spellings(port) {
        let reply = server
            .post("/v1/providers", &tenant.key, provider_body("p", &url, &[]))
            .await;
        assert_refused_by_policy(&reply.invalid_field("config.base_url").to_string());
    }
    for host in ["127.0.0.1", "0.0.0.0", "127.1", "2130706433"] {
        let reply = server
            .post(
                "/v1/providers",
                &tenant.key,
                provider_body("p", "https://sms.example.com", &[format!("{host}:{port}")]),
            )
            .await;
        assert_refused_by_policy(&reply.invalid_field("hosts[0]").to_string());
    }

    // A name is accepted here and refused on the address it resolves to: the send
    // fails with the policy's reason, and nothing of the listener comes back.
    let url = format!("http://localhost:{port}");
    server
        .post(
            "/v1/providers",
            &tenant.key,
            provider_body("named", &url, &[format!("localhost:{port}")]),
        )
        .await
        .expect(201);
    let reply = server
        .send_otp(
            &tenant,
            json!({"phone": uz_number(11), "applicant_id": "a"}),
        )
        .await;
    let error = reply.error(502, "provider_failed");
    assert_refused_by_policy(&error.to_string());
    assert_eq!(canary.reached(), 0);
}

#[tokio::test]
async fn with_loopback_allowed_a_provider_reaches_it_and_a_grant_without_a_port_does_not_open_others(
) {
    let server = TestServer::start().await;
    let tenant = server.tenant("acme").await;
    install_http_sms(&server, &tenant).await;
    let canary = Canary::start().await;
    let url = format!("http://127.0.0.1:{}", canary.port());
    // Granted the host alone: that means port 80, not the canary's port.
    let portless = server
        .post(
            "/v1/providers",
            &tenant.key,
            provider_body("portless", &url, &["127.0.0.1".to_owned()]),
        )
        .await;
    let portless = portless.expect(201)["id"].as_str().expect("id").to_owned();
    let reply = server
        .send_otp(
            &tenant,
            json!({"phone": uz_number(12), "applicant_id": "a"}),
        )
        .await;
    let error = reply.error(502, "provider_failed").to_string();
    assert!(error.contains("not granted"), "{error}");
    assert_eq!(canary.reached(), 0);

    // Granted host and port: the allowed loopback listener is called.
    server
        .delete(&format!("/v1/providers/{portless}"), &tenant.key)
        .await
        .expect(204);
    server
        .post(
            "/v1/providers",
            &tenant.key,
            provider_body("ported", &url, &[format!("127.0.0.1:{}", canary.port())]),
        )
        .await
        .expect(201);
    let _ = server
        .send_otp(
            &tenant,
            json!({"phone": uz_number(13), "applicant_id": "a"}),
        )
        .await;
    assert!(canary.reached() > 0, "the allowed listener was not called");
}

#[tokio::test]
async fn adapter_grants_and_lookup_urls_on_loopback_are_refused() {
    let server = TestServer::start_strict().await;
    let tenant = server.tenant("acme").await;
    let canary = Canary::start().await;
    let port = canary.port();
    let hosts = [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("0.0.0.0:{port}"),
        format!("[::1]:{port}"),
    ];
    let installed = server
        .post(
            "/v1/plugins/catalog/camara-lookup",
            &tenant.key,
            json!({"hosts": hosts}),
        )
        .await;
    let id = installed.expect(201)["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/plugins/{id}/config");
    // Literal addresses are refused when granted or configured.
    for host in [&hosts[0], &hosts[2], &hosts[3]] {
        let reply = server
            .put(&path, &tenant.key, json!({"granted_hosts": [host]}))
            .await;
        assert_refused_by_policy(&reply.invalid_field("granted_hosts").to_string());
    }
    for url in loopback_spellings(port) {
        let reply = server
            .put(&path, &tenant.key, json!({"config": {"base_url": url}}))
            .await;
        assert_refused_by_policy(&reply.invalid_field("config.base_url").to_string());
    }
    // A name is refused on the address it resolves to, when the lookup calls out.
    server
        .put(
            &path,
            &tenant.key,
            json!({
                "config": {"base_url": format!("http://localhost:{port}")},
                "secrets": {"access_token": "t"},
                "granted_hosts": [&hosts[1]],
            }),
        )
        .await
        .expect(200);
    server
        .settings(&tenant, json!({"sim_swap_check": true}))
        .await;
    let reply = server
        .post(
            "/v1/phone/lookup",
            &tenant.key,
            json!({"phone": uz_number(14)}),
        )
        .await;
    let answer = reply.expect(200);
    assert_eq!(
        answer["lookup_adapter"]["name"], "camara-lookup",
        "{answer}"
    );
    assert_refused_by_policy(&answer["lookup_adapter"]["error"].to_string());
    assert_eq!(canary.reached(), 0);
}

#[tokio::test]
async fn with_loopback_allowed_the_lookup_adapter_reaches_it() {
    let server = TestServer::start().await;
    let tenant = server.tenant("acme").await;
    let canary = Canary::start().await;
    let host = format!("127.0.0.1:{}", canary.port());
    let installed = server
        .post(
            "/v1/plugins/catalog/camara-lookup",
            &tenant.key,
            json!({"hosts": [&host]}),
        )
        .await;
    let id = installed.expect(201)["id"].as_str().expect("id").to_owned();
    server
        .put(
            &format!("/v1/plugins/{id}/config"),
            &tenant.key,
            json!({
                "config": {"base_url": format!("http://{host}")},
                "secrets": {"access_token": "t"},
                "granted_hosts": [&host],
            }),
        )
        .await
        .expect(200);
    server
        .settings(&tenant, json!({"sim_swap_check": true}))
        .await;
    server
        .post(
            "/v1/phone/lookup",
            &tenant.key,
            json!({"phone": uz_number(15)}),
        )
        .await
        .expect(200);
    assert!(canary.reached() > 0, "the allowed listener was not called");
}
