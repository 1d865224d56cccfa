//! Containment of the plugin call path against a hostile tenant: rules that sleep
//! through WASI, a slow provider holding adapter calls, a rule that burns its whole
//! budget under load, and stopping a server with such calls in flight. Another
//! tenant's rules must keep applying, and load must be recorded, never skipped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use reqwest::Method;
use serde_json::{json, Value};

use dialgate::plugins::testing::guest_component;

use crate::support::*;

/// Uploads the in-tree guest `artifact` as the rule `name` bound to
/// `phone_lookup_complete` with `config`; returns its id.
async fn rule(server: &TestServer, tenant: &Tenant, artifact: &str, name: &str, config: Value) {
    upload_rule(
        server,
        tenant,
        artifact,
        name,
        "phone_lookup_complete",
        config,
    )
    .await;
}

/// A tenant whose lookups decide (and so store) a verification, with its audit trail.
async fn deciding_tenant(server: &TestServer, name: &str) -> Tenant {
    let tenant = server.tenant(name).await;
    server
        .settings(&tenant, json!({"require_otp": false}))
        .await;
    tenant
}

/// The victim: a tenant with the first-party `otp-for-voip` rule.
async fn victim(server: &TestServer) -> Tenant {
    let tenant = deciding_tenant(server, "victim").await;
    let reply = server
        .post("/v1/plugins/catalog/otp-for-voip", &tenant.key, Value::Null)
        .await;
    reply.expect(201);
    tenant
}

/// A VoIP lookup by the victim: its rule must have asked for a code, and its run must
/// be recorded without a failure.
async fn victim_lookup(server: &TestServer, tenant: &Tenant, applicant: &str) {
    let reply = server
        .post(
            "/v1/phone/lookup",
            &tenant.key,
            json!({"phone": UK_VOIP, "applicant_id": applicant}),
        )
        .await;
    let body = reply.expect(200);
    assert_eq!(
        body["otp_required"], "sms",
        "the victim's rule applied: {body}"
    );
    let id = body["verification_id"].as_str().expect("id");
    let report = server.report(tenant, id).await;
    let runs = report["rules_fired"].as_array().expect("rules_fired");
    let voip = runs
        .iter()
        .find(|run| run["name"] == "otp-for-voip")
        .unwrap_or_else(|| panic!("otp-for-voip ran: {report}"));
    assert!(voip.get("error").is_none(), "no failure: {report}");
}

/// Every run of the rule `name` on the verification behind a lookup answer, with the
/// kind of its failure (`None` for a run that succeeded).
async fn run_errors(
    server: &TestServer,
    tenant: &Tenant,
    answer: &Value,
    name: &str,
) -> Vec<Option<String>> {
    let id = answer["verification_id"].as_str().expect("id");
    let report = server.report(tenant, id).await;
    report["rules_fired"]
        .as_array()
        .expect("rules_fired")
        .iter()
        .filter(|run| run["name"] == name)
        .map(|run| run["error"]["kind"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_sleeping_rule_is_bounded_and_another_tenants_rule_still_applies() {
    let server = Arc::new(TestServer::start().await);
    let sleeper = deciding_tenant(&server, "sleeper").await;
    let victim = victim(&server).await;

    // One 2 s sleep: the guest's clock moves, no host thread waits; it returns. Its
    // 10 ms of real time include making the instance, which a loaded CI machine can
    // stretch past the bound: up to three tries, each a fresh number and applicant.
    rule(&server, &sleeper, "hostile_sleep", "sleep", Value::Null).await;
    let mut reports = Vec::new();
    for n in 1..=3 {
        let answer = server
            .post(
                "/v1/phone/lookup",
                &sleeper.key,
                json!({"phone": uz_number(n), "applicant_id": format!("first{n}")}),
            )
            .await;
        let answer = answer.expect(200).clone();
        let report = server
            .report(&sleeper, answer["verification_id"].as_str().expect("id"))
            .await;
        let slept = report["flags"]
            .as_array()
            .expect("flags")
            .iter()
            .any(|flag| flag == "slept_2000");
        reports.push(report);
        if slept {
            break;
        }
    }
    assert!(
        reports.last().is_some_and(|report| report["flags"]
            .as_array()
            .is_some_and(|flags| flags.iter().any(|flag| flag == "slept_2000"))),
        "{reports:?}"
    );

    // 300 calls sleeping 2 s each in flight while the victim's rule keeps applying.
    let mut sleeping = Vec::new();
    for n in 0..300u32 {
        let server = Arc::clone(&server);
        let key = sleeper.key.clone();
        sleeping.push(tokio::spawn(async move {
            let reply = server
                .post(
                    "/v1/phone/lookup",
                    &key,
                    json!({"phone": uz_number(n % 100), "applicant_id": format!("s{n}")}),
                )
                .await;
            reply.expect(200).clone()
        }));
    }
    for n in 0..10 {
        victim_lookup(&server, &victim, &format!("v{n}")).await;
    }
    for task in sleeping {
        let answer = task.await.expect("the lookup task");
        let errors = run_errors(&server, &sleeper, &answer, "sleep").await;
        assert_eq!(errors.len(), 1, "the rule is recorded, never skipped");
        if let Some(kind) = errors[0].as_deref() {
            assert_eq!(kind, "overloaded", "only load may stop it");
        }
    }

    // Sleeping forever ends at the call's deadline.
    let id = server.get("/v1/plugins", &sleeper.key).await.expect(200)["plugins"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    server
        .put(
            &format!("/v1/plugins/{id}/config"),
            &sleeper.key,
            json!({"config": {"forever": "yes", "sleep_ms": "1"}}),
        )
        .await
        .expect(200);
    for n in 0..3u32 {
        let answer = server
            .post(
                "/v1/phone/lookup",
                &sleeper.key,
                json!({"phone": uz_number(n), "applicant_id": format!("f{n}")}),
            )
            .await;
        let answer = answer.expect(200).clone();
        let errors = run_errors(&server, &sleeper, &answer, "sleep").await;
        let kind = errors[0].as_deref().expect("sleeping forever fails");
        assert!(
            ["timeout", "out_of_fuel", "overloaded"].contains(&kind),
            "{kind}"
        );
    }
    victim_lookup(&server, &victim, "after").await;
}

/// A Vonage-shaped SMS API on 127.0.0.1 that holds every request for `delay` before
/// accepting it, and counts the requests that arrived and the most it held at once.
struct SlowProvider {
    addr: std::net::SocketAddr,
    arrived: Arc<tokio::sync::watch::Sender<usize>>,
    most_held: Arc<AtomicUsize>,
}

impl SlowProvider {
    async fn start(delay: std::time::Duration) -> Self {
        let (arrived, _) = tokio::sync::watch::channel(0usize);
        let arrived = Arc::new(arrived);
        let counter = Arc::clone(&arrived);
        let held = Arc::new(AtomicUsize::new(0));
        let most_held = Arc::new(AtomicUsize::new(0));
        let most = Arc::clone(&most_held);
        let app = axum::Router::new().route(
            "/sms/json",
            axum::routing::post(move || {
                let counter = Arc::clone(&counter);
                let held = Arc::clone(&held);
                let most = Arc::clone(&most);
                async move {
                    counter.send_modify(|n| *n += 1);
                    let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    held.fetch_sub(1, Ordering::SeqCst);
                    axum::Json(json!({"message-count": "1", "messages": [
                        {"message-id": "slow-1", "status": "0", "message-parts": "1"}
                    ]}))
                }
            }),
        );
        let addr = serve_on_loopback(app).await;
        Self {
            addr,
            arrived,
            most_held,
        }
    }
}

#[tokio::test]
async fn a_slow_provider_does_not_make_another_tenants_rule_be_skipped() {
    let server = TestServer::start().await;
    let slow = server.tenant("slow").await;
    let victim = victim(&server).await;
    let provider = SlowProvider::start(std::time::Duration::from_secs(3)).await;
    let host = provider.addr.to_string();
    let reply = server
        .raw(
            Method::POST,
            &format!("/v1/plugins?name=slow-sms&kind=messaging_adapter&version=1&hosts={host}"),
            Some(&slow.key),
            Some(("application/wasm", guest_component("http_sms"))),
            &[],
        )
        .await;
    let id = reply.expect(201)["id"].as_str().expect("id").to_owned();
    server
        .put(
            &format!("/v1/plugins/{id}/config"),
            &slow.key,
            json!({
                "config": {"shape": "vonage", "base_url": format!("http://{host}"), "sender": "Dialgate", "api_key": "k"},
                "secrets": {"api_secret": "s", "callback_token": "cb-token"},
                "granted_hosts": [host],
            }),
        )
        .await
        .expect(200);

    // Many more sends than the tenant's adapter share, each held by the provider.
    let mut sends = Vec::new();
    for n in 0..80u32 {
        let api = server.api.clone();
        let slow = slow.clone();
        sends.push(tokio::spawn(async move {
            api.send_otp(
                &slow,
                json!({"phone": uz_number(n), "applicant_id": format!("a{n}")}),
            )
            .await
            .status
        }));
    }
    // Once the provider holds calls, the victim's rule must still run.
    let mut arrived = provider.arrived.subscribe();
    arrived
        .wait_for(|n| *n > 0)
        .await
        .expect("the provider is reached");
    for n in 0..10 {
        victim_lookup(&server, &victim, &format!("v{n}")).await;
    }
    for send in sends {
        send.await.expect("every send is answered");
    }
    // The tenant never held more adapter calls than its share (16 by default).
    let most = provider.most_held.load(Ordering::SeqCst);
    assert!((1..=16).contains(&most), "{most} calls held at once");
}

#[tokio::test]
async fn a_budget_burner_under_load_is_recorded_as_overloaded_and_follows_its_setting() {
    let server = Arc::new(
        TestServer::start_with(|config| {
            // A small budget, so the burner exhausts it within its first few calls.
            config.plugin_shares.cpu_ms_per_sec = 20;
        })
        .await,
    );
    let burner = deciding_tenant(&server, "burner").await;
    let victim = victim(&server).await;
    rule(&server, &burner, "hostile_spin", "spin", Value::Null).await;
    server
        .settings(&burner, json!({"on_plugin_failure": "review"}))
        .await;
    // The victim is active, so the burner's budget applies.
    victim_lookup(&server, &victim, "first").await;

    // Waves of concurrent burner lookups, each beside a victim lookup, so the victim
    // is active whenever the burner asks for a slot: the burner's spending outruns
    // its refill (20 ms a second) from the first waves, whatever the machine's speed.
    let mut burning = Vec::new();
    for wave in 0..16u32 {
        let mut tasks = Vec::new();
        for n in wave * 4..wave * 4 + 4 {
            let server = Arc::clone(&server);
            let key = burner.key.clone();
            tasks.push(tokio::spawn(async move {
                server
                    .post(
                        "/v1/phone/lookup",
                        &key,
                        json!({"phone": uz_number(n), "applicant_id": format!("b{n}")}),
                    )
                    .await
                    .expect(200)
                    .clone()
            }));
        }
        victim_lookup(&server, &victim, &format!("v{wave}")).await;
        for task in tasks {
            burning.push(task.await.expect("the lookup task"));
        }
    }
    let mut overloaded = 0;
    for answer in burning {
        // Every run failed, whether it ran out of budget inside the sandbox or was
        // not run at all; each follows the tenant's `review` setting.
        assert_eq!(answer["status"], "In Review", "{answer}");
        let errors = run_errors(&server, &burner, &answer, "spin").await;
        assert_eq!(errors.len(), 1, "recorded, never skipped: {answer}");
        let kind = errors[0].as_deref().expect("the spin rule fails");
        assert!(
            ["timeout", "out_of_fuel", "overloaded"].contains(&kind),
            "{kind}"
        );
        if kind == "overloaded" {
            overloaded += 1;
            let report = server
                .report(&burner, answer["verification_id"].as_str().expect("id"))
                .await;
            let decision = &report["decisions"][0];
            assert_eq!(decision["action"], "Review", "{report}");
            assert!(
                decision["reason"]
                    .as_str()
                    .is_some_and(|reason| reason.contains("did not run")),
                "{report}"
            );
        }
    }
    assert!(overloaded > 0, "the burner's budget ran out");
}

#[tokio::test]
async fn a_server_with_sleeping_and_spinning_calls_in_flight_stops() {
    let server = TestServer::start().await;
    let hostile = server.tenant("hostile").await;
    rule(
        &server,
        &hostile,
        "hostile_sleep",
        "sleep",
        json!({"forever": "yes", "sleep_ms": "1000"}),
    )
    .await;
    rule(&server, &hostile, "hostile_spin", "spin", Value::Null).await;
    let (answered, mut answers) = tokio::sync::mpsc::channel::<()>(200);
    let mut calls = Vec::new();
    for n in 0..100u32 {
        let api = server.api.clone();
        let key = hostile.key.clone();
        let answered = answered.clone();
        calls.push(tokio::spawn(async move {
            let body = serde_json::to_vec(&json!({"phone": uz_number(n), "applicant_id": "h"}))
                .expect("json");
            // Answered or cut off by the stop: either is fine here.
            let _ = api
                .try_raw(
                    Method::POST,
                    "/v1/phone/lookup",
                    Some(&key),
                    Some(("application/json", body)),
                    &[],
                )
                .await;
            let _ = answered.send(()).await;
        }));
    }
    // Hostile calls are running once the first lookup is answered.
    answers.recv().await.expect("a lookup was answered");
    tokio::time::timeout(std::time::Duration::from_secs(120), server.stop())
        .await
        .expect("the server stopped with hostile calls in flight");
    for call in calls {
        call.await.expect("the call task ends");
    }
}

#[tokio::test]
async fn dry_runs_take_a_slot_of_the_tenants_share() {
    let server = TestServer::start_with(|config| {
        config.plugin_shares.rule_calls_per_tenant = 1;
        config.plugin_shares.queue_ms = 10;
    })
    .await;
    let tenant = server.tenant("dry").await;
    let id = upload_echo(&server, &tenant, "before_send_otp", Value::Null).await;
    let dry_run = || async {
        server
            .post(
                &format!("/v1/plugins/{id}/dry-run"),
                &tenant.key,
                json!({"event": {"trigger": "before_send_otp", "phone": {"e164": "+14155552671"}}}),
            )
            .await
            .expect(200)
            .clone()
    };
    // The tenant's one slot is held: the dry run is refused for load, not run.
    let admission = server.engine().plugins.runtime().admission();
    let held = admission
        .admit(&tenant.id, dialgate::plugins::Lane::Rules)
        .await
        .expect("the tenant's slot");
    let refused = dry_run().await;
    assert_eq!(refused["error"]["kind"], "overloaded", "{refused}");
    // An unknown plugin is not found, whatever the load.
    let unknown = server
        .post(
            "/v1/plugins/plg_unknown/dry-run",
            &tenant.key,
            json!({"event": {"trigger": "before_send_otp", "phone": {"e164": "+14155552671"}}}),
        )
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    drop(held);
    let ran = dry_run().await;
    assert_eq!(ran["error"], Value::Null, "{ran}");
    assert!(ran["fuel"].as_u64().expect("fuel") > 0, "{ran}");
}
