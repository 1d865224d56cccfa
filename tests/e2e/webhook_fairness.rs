//! Webhook delivery is fair between subscriptions: a tenant's receiver that accepts
//! and never answers holds only its own deliveries (at most two in flight), another
//! tenant's delivery goes out while those still hang, and the test route is
//! rate-limited per tenant.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::support::*;

/// Polls `ready` until it holds; fails after 10 s, so a broken server ends the test
/// instead of hanging it (a bound on waiting, not a timing assertion).
async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < StdDuration::from_secs(10),
            "gave up waiting: {what}"
        );
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
}

/// A receiver on 127.0.0.1 that accepts every connection, reads the request's head,
/// and never answers, holding the connection open.
struct Hanging {
    addr: SocketAddr,
    requests: Arc<Mutex<usize>>,
}

impl Hanging {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("address");
        let requests = Arc::new(Mutex::new(0));
        let counted = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buffer = [0u8; 4096];
                    let mut counted_once = false;
                    // Reads until the peer gives up; never writes.
                    while let Ok(read) = socket.read(&mut buffer).await {
                        if read == 0 {
                            break;
                        }
                        head.extend_from_slice(&buffer[..read]);
                        if !counted_once && head.windows(4).any(|w| w == b"\r\n\r\n") {
                            counted_once = true;
                            *counted.lock().expect("lock") += 1;
                        }
                    }
                });
            }
        });
        Self { addr, requests }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn requests(&self) -> usize {
        *self.requests.lock().expect("lock")
    }
}

/// A receiver on 127.0.0.1 that answers 200 and keeps every body.
#[derive(Clone)]
struct Recorder {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
}

async fn record(State(bodies): State<Arc<Mutex<Vec<Value>>>>, body: Bytes) -> &'static str {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    bodies.lock().expect("lock").push(body);
    "ok"
}

impl Recorder {
    async fn start() -> Self {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/hook", post(record))
            .with_state(Arc::clone(&bodies));
        let addr = serve_on_loopback(app).await;
        Self { addr, bodies }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().expect("lock").clone()
    }
}

/// Subscribes `url` to every event; returns the subscription's id.
async fn subscribe(server: &TestServer, tenant: &Tenant, url: &str) -> String {
    server
        .post(
            "/v1/webhooks",
            &tenant.key,
            json!({"url": url, "event_types": ["*"]}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// Sends the subscription a test event; returns the route's answer.
async fn test_event(server: &TestServer, tenant: &Tenant, id: &str) -> Reply {
    server
        .post(&format!("/v1/webhooks/{id}/test"), &tenant.key, json!({}))
        .await
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

#[tokio::test]
async fn a_receiver_that_never_answers_does_not_delay_another_tenant_s_delivery() {
    let server = TestServer::start().await;
    let slow_tenant = server.tenant("slow").await;
    let other_tenant = server.tenant("other").await;
    let hanging = Hanging::start().await;
    let recorder = Recorder::start().await;
    let slow = subscribe(&server, &slow_tenant, &hanging.url()).await;
    let other = subscribe(&server, &other_tenant, &recorder.url()).await;

    // Three deliveries to the receiver that never answers: two go out and hang.
    for _ in 0..3 {
        test_event(&server, &slow_tenant, &slow).await.expect(202);
    }
    until("two requests reach the hanging receiver", || {
        hanging.requests() >= 2
    })
    .await;

    // Another tenant's delivery arrives while they still hang.
    let queued = test_event(&server, &other_tenant, &other).await;
    let delivery_id = queued.expect(202)["id"].as_str().expect("id").to_owned();
    until("the other tenant's delivery arrives", || {
        !recorder.bodies().is_empty()
    })
    .await;
    let received = recorder.bodies();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["type"], "webhook.test");
    assert_eq!(received[0]["data"]["webhook_id"], other.as_str());

    // The slow subscription's deliveries are all pending, none answered yet, and only
    // two of them were ever posted: its cap holds the third back.
    let log = deliveries(&server, &slow_tenant, &slow).await;
    assert_eq!(log.len(), 3, "{log:?}");
    for delivery in &log {
        assert_eq!(delivery["status"], "pending", "{delivery}");
        assert_eq!(delivery["attempts"], json!([]), "{delivery}");
    }
    assert_eq!(hanging.requests(), 2);

    // The other delivery's attempt is recorded as it was answered.
    let mut recorded = Value::Null;
    for _ in 0..500 {
        let log = deliveries(&server, &other_tenant, &other).await;
        if log[0]["status"] == "delivered" {
            recorded = log[0].clone();
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    assert_eq!(recorded["id"], delivery_id.as_str(), "{recorded}");
    assert_eq!(recorded["attempts"][0]["status_code"], 200, "{recorded}");
}

#[tokio::test]
async fn the_test_route_is_rate_limited_per_tenant() {
    let server = TestServer::start().await;
    let busy = server.tenant("busy").await;
    let calm = server.tenant("calm").await;
    let recorder = Recorder::start().await;
    let busy_hook = subscribe(&server, &busy, &recorder.url()).await;
    let calm_hook = subscribe(&server, &calm, &recorder.url()).await;

    // A burst of ten goes through; the eleventh is refused until a token returns.
    for _ in 0..10 {
        test_event(&server, &busy, &busy_hook).await.expect(202);
    }
    let refused = test_event(&server, &busy, &busy_hook).await;
    let error = refused.error(429, "rate_limited");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|message| message.contains("test event")),
        "{error}"
    );
    let retry_after: u64 = refused
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // A refused test queued nothing.
    until("the ten test events arrive", || {
        recorder.bodies().len() >= 10
    })
    .await;
    assert_eq!(deliveries(&server, &busy, &busy_hook).await.len(), 10);

    // Another tenant has its own budget, and the busy one gets a token back in time.
    test_event(&server, &calm, &calm_hook).await.expect(202);
    server.advance(chrono::Duration::seconds(
        i64::try_from(retry_after).expect("small"),
    ));
    test_event(&server, &busy, &busy_hook).await.expect(202);
}
