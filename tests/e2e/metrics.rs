//! `GET /metrics`, request ids and request logs: the exposition is parsed and matched
//! to the traffic each test made, on a server of its own.

use std::collections::BTreeMap;
use std::process::Stdio;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::sims::SmsSim;
use crate::support::{Api, TestServer, OPERATOR_KEY, UZ_BEELINE};

/// One sample of the exposition: its name, labels and value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition's samples (comment lines skipped), checking each line.
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| parse_line(line).unwrap_or_else(|| panic!("not a sample line: {line:?}")))
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return None;
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let end = loop {
            let (start, first) = chars.next()?;
            if first == '}' {
                break start + 1;
            }
            if first == ',' {
                continue;
            }
            let eq = inner[start..].find('=')? + start;
            let key = inner[start..eq].to_owned();
            while chars.peek().is_some_and(|(at, _)| *at <= eq) {
                chars.next();
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break,
                    other => value.push(other),
                }
            }
            labels.insert(key, value);
        };
        rest = &inner[end..];
    }
    let value = rest.trim().split(' ').next()?.parse().ok()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// A scrape: every sample, by name and labels.
#[derive(Debug)]
struct Scrape(Vec<Sample>);

impl Scrape {
    /// The value of `name` with exactly `labels`; 0 when there is no such sample.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.0
            .iter()
            .find(|sample| sample.name == name && sample.labels == wanted)
            .map_or(0.0, |sample| sample.value)
    }

    /// The samples of `name`.
    fn series(&self, name: &str) -> Vec<&Sample> {
        self.0.iter().filter(|sample| sample.name == name).collect()
    }
}

async fn scrape(api: &Api) -> Scrape {
    let reply = api
        .client
        .get(format!("{}/metrics", api.base))
        .bearer_auth(OPERATOR_KEY)
        .send()
        .await
        .expect("the server answers");
    assert_eq!(reply.status(), 200);
    let content_type = reply
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = reply.text().await.expect("the exposition");
    assert!(text.ends_with("# EOF\n"), "{text}");
    Scrape(parse(&text))
}

/// `GET path` without credentials, raw: the answer is not always JSON.
async fn get_raw(api: &Api, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = api.client.get(format!("{}{path}", api.base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("the server answers")
}

const LOOKUP: [(&str, &str); 3] = [
    ("method", "POST"),
    ("route", "/v1/phone/lookup"),
    ("status", "200"),
];

#[tokio::test]
async fn metrics_need_the_operator_key() {
    let (server, tenant) = TestServer::with_tenant().await;
    let none = get_raw(&server, "/metrics", &[]).await;
    assert_eq!(none.status(), 401);
    let body: Value = none.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    server.get("/metrics", &tenant.key).await.expect(401);
    let after = scrape(&server).await;
    assert_eq!(
        after.value(
            "dialgate_http_requests_total",
            &[("method", "GET"), ("route", "/metrics"), ("status", "401")]
        ),
        2.0
    );
}

#[tokio::test]
async fn lookups_are_counted_by_route_and_status() {
    let (server, tenant) = TestServer::with_tenant().await;
    let before = scrape(&server).await;
    const N: u32 = 7;
    for n in 0..N {
        server
            .post(
                "/v1/phone/lookup",
                &tenant.key,
                json!({"phone": UZ_BEELINE, "applicant_id": format!("m{n}")}),
            )
            .await
            .expect(200);
    }
    server
        .post(
            "/v1/phone/lookup",
            "dg_not_a_key",
            json!({"phone": UZ_BEELINE}),
        )
        .await
        .expect(401);
    let after = scrape(&server).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    assert_eq!(moved("dialgate_http_requests_total", &LOOKUP), f64::from(N));
    assert_eq!(
        moved("dialgate_http_request_duration_seconds_count", &LOOKUP),
        f64::from(N)
    );
    let mut le_inf = LOOKUP.to_vec();
    le_inf.push(("le", "+Inf"));
    assert_eq!(
        moved("dialgate_http_request_duration_seconds_bucket", &le_inf),
        f64::from(N)
    );
    assert!(moved("dialgate_http_request_duration_seconds_sum", &LOOKUP) > 0.0);
    assert_eq!(
        moved(
            "dialgate_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/v1/phone/lookup"),
                ("status", "401")
            ]
        ),
        1.0
    );
    // The store was read and written on the way.
    assert!(
        after.value(
            "dialgate_store_operation_duration_seconds_count",
            &[("op", "get")]
        ) > 0.0
    );
    assert!(
        after.value(
            "dialgate_store_operation_duration_seconds_count",
            &[("op", "sync")]
        ) > 0.0
    );
}

#[tokio::test]
async fn unknown_paths_are_counted_as_unmatched_and_series_stay_bounded() {
    let server = TestServer::start().await;
    let before = scrape(&server).await;
    const N: u32 = 1_000;
    for n in 0..N {
        let path = format!("/x{}/{n}/{}", uuid::Uuid::new_v4().simple(), n * 7919);
        let reply = get_raw(&server, &path, &[]).await;
        assert_eq!(reply.status(), 404, "{path}");
    }
    // A method no route knows is counted as `other`, on a route that exists.
    let brew = server
        .client
        .request(
            Method::from_bytes(b"BREW").expect("a method"),
            format!("{}/healthz", server.base),
        )
        .send()
        .await
        .expect("the server answers");
    assert_eq!(brew.status(), 405);
    let after = scrape(&server).await;
    let unmatched = [("method", "GET"), ("route", "unmatched"), ("status", "404")];
    assert_eq!(
        after.value("dialgate_http_requests_total", &unmatched)
            - before.value("dialgate_http_requests_total", &unmatched),
        f64::from(N)
    );
    let series = after.series("dialgate_http_requests_total");
    assert!(series.len() < 20, "series: {series:#?}");
    for sample in &series {
        assert!(!sample.labels["route"].starts_with("/x"), "{sample:?}");
    }
    assert!(
        after.value(
            "dialgate_http_requests_total",
            &[
                ("method", "other"),
                ("route", "/healthz"),
                ("status", "405")
            ]
        ) == 1.0,
        "{series:#?}"
    );
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let server = TestServer::start().await;
    let echoed = get_raw(&server, "/healthz", &[("x-request-id", "abc.DEF_123-x")]).await;
    assert_eq!(
        echoed
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("abc.DEF_123-x")
    );
    let generated = |reply: &reqwest::Response| {
        let id = reply
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .expect("a request id")
            .to_owned();
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        id
    };
    let long = "a".repeat(65);
    let replaced = [
        get_raw(&server, "/healthz", &[("x-request-id", &long)]).await,
        get_raw(&server, "/healthz", &[("x-request-id", "has space")]).await,
        get_raw(&server, "/healthz", &[("x-request-id", "")]).await,
        get_raw(&server, "/healthz", &[]).await,
        // Errors carry it too.
        get_raw(&server, "/no/such/route", &[]).await,
    ];
    let ids: Vec<String> = replaced.iter().map(generated).collect();
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");
    let at_most = "b".repeat(64);
    let kept = get_raw(&server, "/healthz", &[("x-request-id", &at_most)]).await;
    assert_eq!(
        kept.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some(at_most.as_str())
    );
}

#[tokio::test]
async fn plugin_calls_and_rate_limits_are_counted() {
    let (server, tenant) = TestServer::with_tenant().await;
    let plugin = server
        .post("/v1/plugins/catalog/otp-for-voip", &tenant.key, Value::Null)
        .await
        .expect(201)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    server
        .settings(
            &tenant,
            json!({"rate_limits": {"lookup": {"per_phone": {"per_minute": 1, "burst": 3}}}}),
        )
        .await;
    for n in 0..3 {
        server
            .post(
                "/v1/phone/lookup",
                &tenant.key,
                json!({"phone": UZ_BEELINE, "applicant_id": format!("p{n}")}),
            )
            .await
            .expect(200);
    }
    server
        .post(
            "/v1/phone/lookup",
            &tenant.key,
            json!({"phone": UZ_BEELINE, "applicant_id": "p3"}),
        )
        .await
        .error(429, "rate_limited");
    let after = scrape(&server).await;
    let by_plugin = [("plugin", plugin.as_str())];
    assert_eq!(after.value("dialgate_plugin_calls_total", &by_plugin), 3.0);
    assert!(after.value("dialgate_plugin_fuel_total", &by_plugin) > 0.0);
    assert!(after.value("dialgate_plugin_seconds_total", &by_plugin) > 0.0);
    assert!(after.series("dialgate_plugin_failures_total").is_empty());
    assert_eq!(
        after.value("dialgate_rate_limited_total", &[("scope", "number")]),
        1.0
    );
    assert_eq!(
        after.value(
            "dialgate_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/v1/phone/lookup"),
                ("status", "429")
            ]
        ),
        1.0
    );
    // No webhook is due, no provider has a breaker.
    assert_eq!(after.value("dialgate_webhook_backlog", &[]), 0.0);
    assert!(after.series("dialgate_provider_breakers").is_empty());
}

#[tokio::test]
async fn the_binary_logs_one_json_line_per_request() {
    let dir = tempfile::tempdir().expect("a data directory");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dialgate"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--operator-key", OPERATOR_KEY])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("DIALGATE_CONFIG")
        .env_remove("DIALGATE_PRODUCTION")
        .env_remove("DIALGATE_STORE")
        .env("DIALGATE_LOG", "info")
        .env("DIALGATE_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the dialgate binary");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr = loop {
        let line = stdout
            .next_line()
            .await
            .expect("read stdout")
            .expect("the binary announces its address");
        if let Some(rest) = line.strip_prefix("dialgate listening on http://") {
            break rest.split(' ').next().expect("an address").to_owned();
        }
    };
    let api = Api::new(format!("http://{addr}"));
    let tenant = api.create_tenant(OPERATOR_KEY, "json-logs").await;
    let reply = api
        .raw(
            Method::POST,
            "/v1/phone/lookup",
            Some(&tenant.key),
            Some((
                "application/json",
                serde_json::to_vec(&json!({"phone": UZ_BEELINE})).expect("a body"),
            )),
            &[("x-request-id", "e2e-json-log-1")],
        )
        .await;
    reply.expect(200);
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let line = loop {
        let line = stderr
            .next_line()
            .await
            .expect("read stderr")
            .expect("the request's line is logged");
        if !line.starts_with('{') {
            // The dev-mode banner is plain text on purpose.
            continue;
        }
        let parsed: Value = serde_json::from_str(&line)
            .unwrap_or_else(|err| panic!("not a JSON line ({err}): {line}"));
        if parsed["request_id"] == "e2e-json-log-1" {
            break parsed;
        }
    };
    assert_eq!(line["message"], "request");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["route"], "/v1/phone/lookup");
    assert_eq!(line["status"], 200);
    assert_eq!(line["tenant_id"], tenant.id.as_str());
    assert!(
        line["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{line}"
    );
    assert!(!line.to_string().contains(UZ_BEELINE), "{line}");
}

/// Scrapes until `check` holds of a scrape, for what background workers do.
async fn scrape_until(api: &Api, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    for _ in 0..400 {
        let scraped = scrape(api).await;
        if check(&scraped) {
            return scraped;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn breakers_and_webhook_failures_are_shown() {
    let (server, tenant) = TestServer::with_tenant().await;
    server
        .post("/v1/plugins/catalog/http-sms", &tenant.key, json!({}))
        .await
        .expect(201);
    let (a_sim, b_sim) = (SmsSim::start().await, SmsSim::start().await);
    let provider = |name: &str, sim: &SmsSim, priority: u32| {
        json!({
            "name": name,
            "plugin": "http-sms",
            "priority": priority,
            "sender_id": "+15005550006",
            "config": {"shape": "twilio", "base_url": sim.base_url(), "account_sid": "AC42"},
            "secrets": {"auth_token": "twilio-secret"},
            "hosts": [sim.host()],
        })
    };
    let mut ids = Vec::new();
    for (name, sim, priority) in [("a", &a_sim, 1), ("b", &b_sim, 2)] {
        let created = server
            .post("/v1/providers", &tenant.key, provider(name, sim, priority))
            .await;
        ids.push(created.expect(201)["id"].as_str().expect("id").to_owned());
    }
    server
        .put(
            "/v1/routing",
            &tenant.key,
            json!({"failure_threshold": 2, "open_seconds": 30}),
        )
        .await
        .expect(200);
    a_sim.fail_with(Some(500));
    for n in 0..3 {
        server
            .send(&tenant, &format!("+99890{:07}", 2_000_000 + n * 101), "a")
            .await;
    }
    let scraped = scrape(&server).await;
    let state = |scraped: &Scrape, id: &str, state: &str| {
        scraped.value(
            "dialgate_provider_breakers",
            &[("provider", id), ("state", state)],
        )
    };
    assert_eq!(state(&scraped, &ids[0], "open"), 1.0, "{scraped:#?}");
    assert_eq!(state(&scraped, &ids[1], "closed"), 1.0);
    assert_eq!(state(&scraped, &ids[0], "closed"), 0.0);
    // Read at scrape time: cooled down, the breaker is half open.
    server.advance(chrono::Duration::seconds(31));
    let scraped = scrape(&server).await;
    assert_eq!(state(&scraped, &ids[0], "half_open"), 1.0);
    assert_eq!(state(&scraped, &ids[0], "open"), 0.0);
    // The adapter's calls were counted, refused sends too (the provider's 500 is
    // the adapter's answer, not a failure of the plugin).
    let adapter_calls: f64 = scraped
        .series("dialgate_plugin_calls_total")
        .iter()
        .map(|sample| sample.value)
        .sum();
    assert!(adapter_calls >= 5.0, "{scraped:#?}");
    assert!(scraped.series("dialgate_plugin_failures_total").is_empty());

    // A receiver that refuses connections: the attempt fails and is counted.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let port = closed.local_addr().expect("an address").port();
    drop(closed);
    let hook = server
        .post(
            "/v1/webhooks",
            &tenant.key,
            json!({"url": format!("http://127.0.0.1:{port}/hook"), "event_types": ["*"]}),
        )
        .await;
    let hook = hook.expect(201)["id"].as_str().expect("id").to_owned();
    server
        .post(&format!("/v1/webhooks/{hook}/test"), &tenant.key, json!({}))
        .await
        .expect(202);
    let failed = [("outcome", "failed")];
    scrape_until(&server, "the webhook attempt failed", |scraped| {
        scraped.value("dialgate_webhook_attempts_total", &failed) >= 1.0
    })
    .await;
}

#[tokio::test]
async fn codes_are_counted_by_stage_channel_provider_and_country() {
    let (server, tenant) = TestServer::with_tenant().await;
    let gb = |i: u32| format!("+447911{:06}", 20_000 + i * 7_919);
    for i in 0..3 {
        server
            .send_and_verify(&tenant, &gb(i), &format!("m{i}"))
            .await;
    }
    server.send(&tenant, "+16502531000", "us").await;
    let messages = server.outbox(&tenant, &gb(0)).await;
    let id = messages[0]["id"].as_str().expect("message id");
    server
        .post(
            &format!("/v1/dev/outbox/{id}/delivery"),
            &tenant.key,
            serde_json::json!({"status": "delivered"}),
        )
        .await
        .expect(200);
    let scraped = scrape(&server.api).await;
    let codes = |stage: &str, country: &str| {
        scraped.value(
            "dialgate_codes_total",
            &[
                ("stage", stage),
                ("channel", "sms"),
                ("provider", "dev-outbox"),
                ("country", country),
            ],
        )
    };
    assert_eq!(codes("sent", "GB"), 3.0);
    assert_eq!(codes("verified", "GB"), 3.0);
    assert_eq!(codes("delivered", "GB"), 1.0);
    assert_eq!(codes("sent", "US"), 1.0);
    assert_eq!(codes("verified", "US"), 0.0);
}
