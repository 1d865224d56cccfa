//! Span export end to end: `dialgate serve --otlp-endpoint` (the real binary) posts its
//! spans to a collector on loopback over OTLP/HTTP with JSON bodies: one `request`
//! span per request, with its route template, method, tenant and request id, under the
//! service name `dialgate`; log events never travel that way, so the number a request
//! carried appears in no export. And a bad endpoint is refused at start.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use serde_json::{json, Value};

use crate::crash::Binary;
use crate::support::*;

/// A collector on loopback: what was posted to `/v1/traces`, as JSON.
async fn collector() -> (String, Arc<Mutex<Vec<Value>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/v1/traces",
        post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let kept = Arc::clone(&kept);
                async move {
                    assert_eq!(
                        headers
                            .get("content-type")
                            .and_then(|value| value.to_str().ok()),
                        Some("application/json")
                    );
                    let export: Value = serde_json::from_slice(&body).expect("a JSON export");
                    kept.lock().expect("the list").push(export);
                    axum::Json(json!({}))
                }
            },
        ),
    );
    let addr = serve_on_loopback(app).await;
    (format!("http://{addr}"), received)
}

/// Every span of every export received: (service name, span name, attributes as
/// `key=value` strings).
fn spans(received: &Mutex<Vec<Value>>) -> Vec<(String, String, Vec<String>)> {
    let mut found = Vec::new();
    for export in received.lock().expect("the list").iter() {
        for resource in export["resourceSpans"].as_array().into_iter().flatten() {
            let service = resource["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|attribute| attribute["key"] == "service.name")
                .and_then(|attribute| attribute["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_owned();
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    let attributes = span["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|attribute| {
                            let value = &attribute["value"];
                            let shown = value["stringValue"]
                                .as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| value.to_string());
                            format!("{}={shown}", attribute["key"].as_str().unwrap_or_default())
                        })
                        .collect();
                    found.push((
                        service.clone(),
                        span["name"].as_str().unwrap_or_default().to_owned(),
                        attributes,
                    ));
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn the_binary_exports_request_spans_to_an_otlp_collector_without_numbers() {
    let (endpoint, received) = collector().await;
    let dir = tempfile::tempdir().expect("a data directory");
    let binary = Binary::start_with(dir.path(), &["--otlp-endpoint", &endpoint], "info").await;
    let tenant = binary.api.create_tenant(OPERATOR_KEY, "traced").await;
    let number = "+447911237001";
    let sent = binary.api.send(&tenant, number, "traced-applicant").await;
    let lookup = binary
        .api
        .post("/v1/phone/lookup", &tenant.key, json!({"phone": number}))
        .await;
    let request_id = lookup
        .header("x-request-id")
        .expect("a request id")
        .to_owned();
    lookup.expect(200);

    // Spans leave in batches (every 5 s): wait for the lookup's.
    let deadline = Instant::now() + Duration::from_secs(60);
    let lookup_span = loop {
        let found = spans(&received).into_iter().find(|(_, name, attributes)| {
            name == "request" && attributes.contains(&format!("request_id={request_id}"))
        });
        if let Some(span) = found {
            break span;
        }
        assert!(
            Instant::now() < deadline,
            "no span of the lookup was exported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (service, _, attributes) = &lookup_span;
    assert_eq!(service, "dialgate");
    for expected in [
        "route=/v1/phone/lookup".to_owned(),
        "method=POST".to_owned(),
        format!("tenant_id={}", tenant.id),
    ] {
        assert!(
            attributes.contains(&expected),
            "{expected} in {attributes:?}"
        );
    }
    let all = spans(&received);
    assert!(all.iter().any(|(_, name, attributes)| name == "request"
        && attributes.contains(&"route=/v1/phone/send-otp".to_owned())));
    // Nothing exported names the number, the applicant or the verification's code.
    let exported = received
        .lock()
        .expect("the list")
        .iter()
        .map(Value::to_string)
        .collect::<String>();
    assert!(!exported.contains(&number[1..]));
    assert!(!exported.contains("traced-applicant"));
    assert!(sent["verification_id"].is_string());
    drop(binary);
}

#[tokio::test]
async fn a_bad_otlp_endpoint_is_refused_at_start() {
    for bad in ["not a url", "ftp://127.0.0.1:4318", "http://"] {
        let dir = tempfile::tempdir().expect("a data directory");
        let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_dialgate"))
            .args(["serve", "--listen", "127.0.0.1:0", "--otlp-endpoint", bad])
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("DIALGATE_CONFIG")
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("the binary exits")
            .expect("run the binary");
        assert!(!output.status.success(), "{bad}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("otlp_endpoint"), "{bad}: {stderr}");
    }
}
