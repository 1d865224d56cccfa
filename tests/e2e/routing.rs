//! Providers and routing end to end: provider CRUD and its refusals, each routing
//! strategy's choice, failover during injected outages (no code lost, none sent twice
//! by one provider), timeouts, the breaker's transitions, rules forcing and
//! forbidding providers, receipts through `/v1/callbacks/{provider_id}` (token and
//! HMAC), channel workflows with fallback steps that survive a restart, and message
//! expiry. Providers are the real `http-sms` Wasm adapter against loopback simulators.

use std::collections::HashSet;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::sims::SmsSim;
use crate::support::{Tenant, TestServer};

/// A distinct Uzbek Beeline number per `n`, 101 apart (a run of neighbouring numbers
/// would be blocked by the SMS-pumping detector).
fn uz(n: u32) -> String {
    format!("+99890{:07}", 1_000_000 + n * 101)
}

/// Installs the first-party `http-sms` adapter for the tenant.
async fn install_http_sms(server: &TestServer, tenant: &Tenant) {
    server
        .post("/v1/plugins/catalog/http-sms", &tenant.key, json!({}))
        .await
        .expect(201);
}

/// A Twilio-shaped provider named `name` on `sim`, with `extra` fields merged in.
fn twilio(name: &str, sim: &SmsSim, extra: Value) -> Value {
    let mut body = json!({
        "name": name,
        "plugin": "http-sms",
        "sender_id": "+15005550006",
        "config": {"shape": "twilio", "base_url": sim.base_url(), "account_sid": "AC42"},
        "secrets": {"auth_token": "twilio-secret"},
        "hosts": [sim.host()],
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            body.insert(key.clone(), value.clone());
        }
    }
    body
}

async fn provider(server: &TestServer, tenant: &Tenant, body: Value) -> Value {
    server
        .post("/v1/providers", &tenant.key, body)
        .await
        .expect(201)
        .clone()
}

async fn policy(server: &TestServer, tenant: &Tenant, body: Value) {
    server
        .put("/v1/routing", &tenant.key, body)
        .await
        .expect(200);
}

async fn plan(server: &TestServer, tenant: &Tenant, body: Value) -> Value {
    server
        .post("/v1/routing/plan", &tenant.key, body)
        .await
        .expect(200)
        .clone()
}

fn order(plan: &Value) -> Vec<String> {
    plan["order"]
        .as_array()
        .expect("order")
        .iter()
        .map(|id| id.as_str().expect("id").to_owned())
        .collect()
}

fn id(provider: &Value) -> String {
    provider["id"].as_str().expect("id").to_owned()
}

/// The statistics of provider `name` for Uzbekistan in a `/v1/routing/stats` list.
fn stats_of(stats: &Value, name: &str) -> Value {
    stats
        .as_array()
        .expect("stats")
        .iter()
        .find(|c| c["provider"] == name && c["country"] == "UZ")
        .unwrap_or_else(|| panic!("no stats for {name}: {stats}"))
        .clone()
}

/// The code in a message text.
fn code_in(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).take(6).collect()
}

/// No simulator accepted the same text for the same number twice.
fn assert_no_duplicates(sims: &[&SmsSim]) {
    for sim in sims {
        let mut seen = HashSet::new();
        for sms in sim.accepted() {
            assert!(
                seen.insert((sms.to.clone(), sms.text.clone())),
                "{} got {} twice",
                sim.host(),
                sms.to
            );
        }
    }
}

/// Posts to an absolute callback URL of this server.
async fn post_callback(
    server: &TestServer,
    url: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> u16 {
    let path = url
        .split_once("/v1/")
        .map(|(_, rest)| format!("/v1/{rest}"))
        .expect("a callback path");
    let reply = server
        .raw(
            Method::POST,
            &path,
            None,
            Some((
                "application/x-www-form-urlencoded",
                body.as_bytes().to_vec(),
            )),
            headers,
        )
        .await;
    reply.status
}

/// Waits until the verification's channel workflow recorded step `step` as current.
async fn step_recorded(server: &TestServer, tenant: &Tenant, verification: &str, step: u32) {
    let mut current = Value::Null;
    for _ in 0..200 {
        let report = server.report(tenant, verification).await;
        current = report["channel_workflow"]["current"].clone();
        if current == step {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("step {step} was not recorded; current is {current}");
}

/// Waits (on the wall clock) until `check` holds, for background jobs.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn providers_are_created_listed_updated_disabled_and_deleted_with_checked_input() {
    let (server, tenant) = TestServer::with_tenant().await;
    let sim = SmsSim::start().await;
    // The adapter must be installed first, and the error says how.
    let refused = server
        .post("/v1/providers", &tenant.key, twilio("a", &sim, json!({})))
        .await;
    let message = refused.invalid_field("plugin")["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(
        message.contains("POST /v1/plugins/catalog/http-sms"),
        "{message}"
    );
    install_http_sms(&server, &tenant).await;

    let created = provider(
        &server,
        &tenant,
        twilio("a", &sim, json!({"countries": ["uz"], "prefixes": ["+99890"], "priority": 5, "weight": 3, "cost_per_message": 0.02, "channels": ["sms", "whatsapp"]})),
    )
    .await;
    let a = id(&created);
    assert!(a.starts_with("prv_"), "{created}");
    assert_eq!(created["countries"], json!(["UZ"]));
    assert_eq!(
        created["callback_url"],
        format!("{}/v1/callbacks/{a}", server.api.base)
    );
    assert_eq!(created["callback_auth"], json!({"type": "token"}));
    assert_eq!(
        created["secret_names"],
        json!(["auth_token", "callback_token"])
    );
    assert!(
        !created.to_string().contains("twilio-secret"),
        "secrets never come back"
    );

    // Each refusal names its field, and nothing is stored.
    for (body, field) in [
        (json!({"name": "a"}), "name"),
        (json!({"countries": ["XX"]}), "countries[0]"),
        (json!({"prefixes": ["+998", "998"]}), "prefixes[1]"),
        (json!({"weight": 0}), "weight"),
        (json!({"priority": 5000}), "priority"),
        (json!({"cost_per_message": -1.0}), "cost_per_message"),
        (json!({"channels": []}), "channels"),
        (
            json!({"config": {"shape": "twilio", "callback_url": "http://x"}}),
            "config.callback_url",
        ),
        (
            json!({"callback_auth": {"type": "hmac_sha256"}}),
            "secrets.callback_secret",
        ),
        (json!({"hosts": ["bad host"]}), "hosts[0]"),
        (json!({"timeout_ms": 50}), "timeout_ms"),
        (json!({"sender_id": ""}), "sender_id"),
    ] {
        let mut fields = twilio("b", &sim, body.clone());
        if body.get("name").is_some() {
            fields["name"] = json!("a");
        }
        let reply = server.post("/v1/providers", &tenant.key, fields).await;
        if field == "name" {
            reply.error(409, "provider_exists");
        } else {
            reply.invalid_field(field);
        }
    }
    server
        .post(
            "/v1/providers",
            &tenant.key,
            json!({"name": "c", "plugin": "http-sms", "colour": "red"}),
        )
        .await
        .invalid_field("colour");
    let listed = server.get("/v1/providers", &tenant.key).await;
    assert_eq!(
        listed.expect(200)["providers"]
            .as_array()
            .expect("list")
            .len(),
        1
    );

    let b = id(&provider(&server, &tenant, twilio("b", &sim, json!({"priority": 1}))).await);
    let listed = server.get("/v1/providers", &tenant.key).await;
    let names: Vec<&str> = listed.expect(200)["providers"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["b", "a"], "priority order");

    let patched = server
        .patch(
            &format!("/v1/providers/{a}"),
            &tenant.key,
            json!({"priority": 0, "secrets": {"auth_token": "rotated"}}),
        )
        .await;
    assert_eq!(patched.expect(200)["priority"], 0);
    server
        .patch(
            &format!("/v1/providers/{a}"),
            &tenant.key,
            json!({"name": "b"}),
        )
        .await
        .error(409, "provider_exists");
    let uz = json!({"phone": "+998901234567"});
    assert_eq!(
        order(&plan(&server, &tenant, uz.clone()).await),
        [a.clone(), b.clone()]
    );
    server
        .post(
            &format!("/v1/providers/{a}/disable"),
            &tenant.key,
            json!({}),
        )
        .await
        .expect(200);
    let disabled = plan(&server, &tenant, uz.clone()).await;
    assert_eq!(order(&disabled), vec![b.clone()]);
    assert_eq!(
        disabled["considered"][0]["verdict"], "disabled",
        "{disabled}"
    );
    server
        .post(&format!("/v1/providers/{a}/enable"), &tenant.key, json!({}))
        .await
        .expect(200);
    // `a` serves only +99890: a +99893 number goes to `b` alone.
    let other = plan(&server, &tenant, json!({"phone": "+998931234567"})).await;
    assert_eq!(order(&other), vec![b.clone()]);

    // Another tenant sees none of it.
    let other_tenant = server.tenant("other").await;
    server
        .get(&format!("/v1/providers/{a}"), &other_tenant.key)
        .await
        .error(404, "not_found");
    server
        .delete(&format!("/v1/providers/{a}"), &other_tenant.key)
        .await
        .error(404, "not_found");
    server
        .delete(&format!("/v1/providers/{a}"), &tenant.key)
        .await
        .expect(204);
    server
        .get(&format!("/v1/providers/{a}"), &tenant.key)
        .await
        .error(404, "not_found");
    server
        .put("/v1/routing", &tenant.key, json!({"strategy": "cheapest"}))
        .await
        .invalid_field("strategy");
    server
        .put("/v1/routing", &tenant.key, json!({"open_seconds": 0}))
        .await
        .invalid_field("open_seconds");
}

#[tokio::test]
async fn each_strategy_chooses_its_provider_and_sends_through_it() {
    let (server, tenant) = TestServer::with_tenant().await;
    // Fifty sends from one client address: lift the per-IP limit.
    server
        .settings(
            &tenant,
            json!({"rate_limits": {"send_otp": {"per_ip": {"per_minute": 1000, "burst": 1000}}}}),
        )
        .await;
    install_http_sms(&server, &tenant).await;
    let (one, two, three) = (
        SmsSim::start().await,
        SmsSim::start().await,
        SmsSim::start().await,
    );
    let first = id(&provider(
        &server,
        &tenant,
        twilio(
            "first",
            &one,
            json!({"priority": 1, "cost_per_message": 0.05, "weight": 1}),
        ),
    )
    .await);
    let cheap = id(&provider(
        &server,
        &tenant,
        twilio(
            "cheap",
            &two,
            json!({"priority": 2, "cost_per_message": 0.01, "weight": 1}),
        ),
    )
    .await);
    let heavy = id(&provider(
        &server,
        &tenant,
        twilio(
            "heavy",
            &three,
            json!({"priority": 3, "cost_per_message": 0.03, "weight": 6}),
        ),
    )
    .await);

    // priority
    server.send(&tenant, &uz(1), "a").await;
    assert_eq!(
        (
            one.accepted().len(),
            two.accepted().len(),
            three.accepted().len()
        ),
        (1, 0, 0)
    );
    // least cost
    policy(&server, &tenant, json!({"strategy": "least_cost"})).await;
    let planned = plan(&server, &tenant, json!({"phone": uz(2)})).await;
    assert_eq!(planned["strategy"], "least_cost");
    assert_eq!(
        order(&planned),
        [cheap.clone(), heavy.clone(), first.clone()]
    );
    server.send(&tenant, &uz(2), "a").await;
    assert_eq!(two.accepted().len(), 1);
    // weighted: 6 of 8 expected on `heavy`.
    policy(&server, &tenant, json!({"strategy": "weighted"})).await;
    let before = three.accepted().len();
    for n in 0..40 {
        server.send(&tenant, &uz(100 + n), "a").await;
    }
    let heavy_got = three.accepted().len() - before;
    assert!(
        (22..=40).contains(&heavy_got),
        "heavy got {heavy_got} of 40 with 6/8 of the weight"
    );
    // best performance: `first` is slow and fails half its sends; `cheap` delivers.
    policy(&server, &tenant, json!({"strategy": "priority"})).await;
    one.delay(Duration::from_millis(400));
    for n in 0..4 {
        one.fail_with((n % 2 == 0).then_some(500));
        server.send(&tenant, &uz(200 + n), "a").await;
    }
    one.fail_with(None);
    // `cheap` gets traffic and delivery receipts.
    server
        .patch(
            &format!("/v1/providers/{cheap}"),
            &tenant.key,
            json!({"priority": 0}),
        )
        .await
        .expect(200);
    for n in 0..4 {
        server.send(&tenant, &uz(300 + n), "a").await;
    }
    for sms in two.accepted() {
        let url = sms.callback.clone().expect("a status callback");
        let status = post_callback(
            &server,
            &url,
            &format!("MessageSid={}&MessageStatus=delivered", sms.id),
            &[],
        )
        .await;
        assert_eq!(status, 200);
    }
    server
        .patch(
            &format!("/v1/providers/{cheap}"),
            &tenant.key,
            json!({"priority": 2}),
        )
        .await
        .expect(200);
    policy(&server, &tenant, json!({"strategy": "best_performance"})).await;
    let planned = plan(&server, &tenant, json!({"phone": uz(400)})).await;
    assert_eq!(order(&planned)[0], cheap, "{planned}");
    assert_eq!(order(&planned).last(), Some(&first), "{planned}");
    let stats = server.get("/v1/routing/stats", &tenant.key).await;
    let stats = stats.expect(200)["stats"].clone();
    let cell = |name: &str| stats_of(&stats, name);
    assert!(cell("first")["errors"].as_u64().expect("errors") >= 2);
    let latency = |name: &str| cell(name)["mean_latency_ms"].as_f64().expect("latency");
    // Two of its accepted sends took 400 ms; how many others it carried depends on
    // the weighted draw above, so the mean is checked against its own count.
    let accepted = cell("first")["accepted"].as_f64().expect("accepted");
    assert!(
        latency("first") * accepted >= 2.0 * 400.0 && latency("first") > latency("cheap"),
        "{stats:?}"
    );
    assert_eq!(cell("cheap")["delivery_rate"], 1.0);
    assert_eq!(cell("cheap")["delivered"], two.accepted().len());
}

#[tokio::test]
async fn an_outage_in_one_country_fails_over_loses_no_code_and_opens_only_that_breaker() {
    let (server, tenant) = TestServer::with_tenant().await;
    install_http_sms(&server, &tenant).await;
    let (a_sim, b_sim) = (SmsSim::start().await, SmsSim::start().await);
    let a = id(&provider(
        &server,
        &tenant,
        twilio("a", &a_sim, json!({"priority": 1})),
    )
    .await);
    let b = id(&provider(
        &server,
        &tenant,
        twilio("b", &b_sim, json!({"priority": 2})),
    )
    .await);
    policy(
        &server,
        &tenant,
        json!({"failure_threshold": 3, "open_seconds": 60}),
    )
    .await;
    a_sim.down_for(&["+998"]);
    let mut ids = Vec::new();
    for n in 0..10 {
        let phone = uz(500 + n);
        let sent = server.send(&tenant, &phone, "a").await;
        ids.push((
            phone,
            sent["verification_id"].as_str().expect("id").to_owned(),
        ));
    }
    // Every code reached `b`; `a` was tried until its breaker opened, then skipped.
    assert_eq!(
        a_sim.refused(),
        3,
        "the breaker stops calls after three failures"
    );
    assert_eq!(b_sim.accepted().len(), 10);
    for (phone, verification) in &ids {
        let report = server.report(&tenant, verification).await;
        let messages = report["messages"].as_array().expect("messages");
        let delivered: Vec<&Value> = messages.iter().filter(|m| m["status"] == "sent").collect();
        assert_eq!(delivered.len(), 1, "{report}");
        assert_eq!(delivered[0]["provider_id"], b.as_str());
        assert!(messages.iter().all(|m| m["status"] == "sent"
            || (m["status"] == "failed" && m["provider_id"] == a.as_str())));
        let code = code_in(
            &b_sim
                .accepted()
                .iter()
                .find(|s| &s.to == phone)
                .expect("sent")
                .text,
        );
        let verified = server.verify(&tenant, phone, "a", &code).await;
        assert_eq!(verified.expect(200)["verification_status"], "verified");
    }
    // Kazakhstan still goes through `a`: the breaker is per country.
    server.send(&tenant, "+77012345678", "kz").await;
    assert_eq!(a_sim.accepted().len(), 1);
    let planned = plan(&server, &tenant, json!({"phone": uz(600)})).await;
    assert_eq!(order(&planned), vec![b.clone()]);
    assert_eq!(planned["considered"][0]["verdict"], "breaker_open");

    // Both down: the send is refused with every attempt named, never silently dropped.
    b_sim.fail_with(Some(503));
    let reply = server
        .send_otp(&tenant, json!({"phone": uz(601), "applicant_id": "a"}))
        .await;
    let error = reply.error(502, "provider_failed");
    let message = error["message"].as_str().expect("message");
    assert!(
        message.contains("not tried: a (breaker_open)") && message.contains("b:"),
        "{message}"
    );
    assert_no_duplicates(&[&a_sim, &b_sim]);
}

#[tokio::test]
async fn a_slow_provider_times_out_and_the_next_one_sends() {
    let (server, tenant) = TestServer::with_tenant().await;
    install_http_sms(&server, &tenant).await;
    let (slow, fast) = (SmsSim::start().await, SmsSim::start().await);
    provider(
        &server,
        &tenant,
        twilio("slow", &slow, json!({"priority": 1, "timeout_ms": 300})),
    )
    .await;
    provider(
        &server,
        &tenant,
        twilio("fast", &fast, json!({"priority": 2})),
    )
    .await;
    slow.delay(Duration::from_secs(3));
    let sent = server.send(&tenant, &uz(700), "a").await;
    assert_eq!(fast.accepted().len(), 1);
    let report = server
        .report(&tenant, sent["verification_id"].as_str().expect("id"))
        .await;
    let messages = report["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 2, "{report}");
    assert_eq!(messages[0]["provider"], "slow");
    assert_eq!(messages[0]["status"], "failed");
    assert_eq!(messages[1]["provider"], "fast");
    assert_eq!(messages[1]["attempt"], 1);
    let stats = server.get("/v1/routing/stats", &tenant.key).await;
    let slow_cell = stats_of(&stats.expect(200)["stats"], "slow");
    assert_eq!(slow_cell["timeouts"], 1, "{slow_cell}");
}

#[tokio::test]
async fn the_breaker_opens_lets_one_probe_through_and_closes_or_reopens() {
    let (server, tenant) = TestServer::with_tenant().await;
    install_http_sms(&server, &tenant).await;
    let (a_sim, b_sim) = (SmsSim::start().await, SmsSim::start().await);
    let a = id(&provider(
        &server,
        &tenant,
        twilio("a", &a_sim, json!({"priority": 1})),
    )
    .await);
    provider(
        &server,
        &tenant,
        twilio("b", &b_sim, json!({"priority": 2})),
    )
    .await;
    policy(
        &server,
        &tenant,
        json!({"failure_threshold": 2, "open_seconds": 30}),
    )
    .await;
    let breaker = |plan: &Value| {
        plan["considered"][0]["breaker"]
            .as_str()
            .expect("state")
            .to_owned()
    };
    a_sim.fail_with(Some(500));
    for n in 0..3 {
        server.send(&tenant, &uz(800 + n), "a").await;
    }
    assert_eq!(a_sim.refused(), 2);
    assert_eq!(b_sim.accepted().len(), 3);
    assert_eq!(
        breaker(&plan(&server, &tenant, json!({"phone": uz(1)})).await),
        "open"
    );
    // Cooled down, a probe goes to `a`; it fails, so the breaker opens again.
    server.advance(chrono::Duration::seconds(31));
    assert_eq!(
        breaker(&plan(&server, &tenant, json!({"phone": uz(1)})).await),
        "half_open"
    );
    server.send(&tenant, &uz(810), "a").await;
    assert_eq!(a_sim.refused(), 3, "one probe");
    assert_eq!(
        breaker(&plan(&server, &tenant, json!({"phone": uz(1)})).await),
        "open"
    );
    // The next probe succeeds and closes it.
    server.advance(chrono::Duration::seconds(31));
    a_sim.fail_with(None);
    server.send(&tenant, &uz(811), "a").await;
    assert_eq!(a_sim.accepted().len(), 1);
    let planned = plan(&server, &tenant, json!({"phone": uz(1)})).await;
    assert_eq!(breaker(&planned), "closed");
    assert_eq!(order(&planned)[0], a);
    let stats = server.get("/v1/routing/stats", &tenant.key).await;
    let cell = stats_of(&stats.expect(200)["stats"], "a");
    assert_eq!(cell["breaker_trips"], 1, "{cell}");
}

#[tokio::test]
async fn rules_force_and_forbid_providers_before_a_send() {
    let (server, tenant) = TestServer::with_tenant().await;
    install_http_sms(&server, &tenant).await;
    let (a_sim, b_sim, c_sim) = (
        SmsSim::start().await,
        SmsSim::start().await,
        SmsSim::start().await,
    );
    provider(
        &server,
        &tenant,
        twilio("a", &a_sim, json!({"priority": 1})),
    )
    .await;
    provider(
        &server,
        &tenant,
        twilio("b", &b_sim, json!({"priority": 2})),
    )
    .await;
    provider(
        &server,
        &tenant,
        twilio("c", &c_sim, json!({"priority": 3})),
    )
    .await;
    let rule = |id: &str, prefix: &str, route: &str| {
        json!({
            "rule_id": id,
            "trigger": "before_send_otp",
            "conditions": {"all": [{"field": "phone", "operator": "starts_with", "value": prefix}]},
            "actions": [{"type": "route", "provider": route}],
        })
    };
    server
        .post(
            "/v1/workflows/rules",
            &tenant.key,
            rule("force-c", "+99890", "c"),
        )
        .await
        .expect(201);
    server
        .post(
            "/v1/workflows/rules",
            &tenant.key,
            rule("avoid-a", "+99891", "!a"),
        )
        .await
        .expect(201);
    let forced = server.send(&tenant, "+998901111111", "a").await;
    assert_eq!(c_sim.accepted().len(), 1);
    let report = server
        .report(&tenant, forced["verification_id"].as_str().expect("id"))
        .await;
    assert_eq!(report["route"], "c");
    let avoided = server.send(&tenant, "+998911111111", "a").await;
    assert_eq!(b_sim.accepted().len(), 1);
    assert!(a_sim.accepted().is_empty());
    let report = server
        .report(&tenant, avoided["verification_id"].as_str().expect("id"))
        .await;
    assert_eq!(report["avoided_routes"], json!(["a"]));
    // A forbidden provider is never the fallback either: with `b` and `c` down the
    // send fails rather than reaching `a`.
    b_sim.fail_with(Some(503));
    c_sim.fail_with(Some(503));
    server
        .send_otp(
            &tenant,
            json!({"phone": "+998912222222", "applicant_id": "a"}),
        )
        .await
        .error(502, "provider_failed");
    assert!(a_sim.accepted().is_empty());
}

#[tokio::test]
async fn receipts_move_messages_through_their_statuses_with_token_or_signature() {
    let (server, tenant) = TestServer::with_tenant().await;
    install_http_sms(&server, &tenant).await;
    let sim = SmsSim::start().await;
    let created = provider(
        &server,
        &tenant,
        twilio("tok", &sim, json!({"priority": 1})),
    )
    .await;
    let token_provider = id(&created);
    // The full callback URL, token included, is shown once: in the creation's answer.
    let shown = created["callback_url_with_token"]
        .as_str()
        .expect("the callback URL with its token")
        .to_owned();
    let read = server
        .get(&format!("/v1/providers/{token_provider}"), &tenant.key)
        .await
        .expect(200)
        .clone();
    assert!(read.get("callback_url_with_token").is_none(), "{read}");
    assert!(!read.to_string().contains("cbt_"), "{read}");
    let sent = server.send(&tenant, &uz(900), "a").await;
    let verification = sent["verification_id"].as_str().expect("id").to_owned();
    let sms = sim.accepted()[0].clone();
    let url = sms
        .callback
        .clone()
        .expect("the adapter passed the callback URL");
    assert!(
        url.contains(&format!("/v1/callbacks/{token_provider}?token=cbt_")),
        "{url}"
    );
    assert_eq!(url, shown, "the URL shown is the one the provider gets");
    let body = |status: &str| format!("MessageSid={}&MessageStatus={status}", sms.id);
    assert_eq!(post_callback(&server, &url, &body("sent"), &[]).await, 200);
    assert_eq!(
        post_callback(&server, &url, &body("delivered"), &[]).await,
        200
    );
    // A late failure does not undo a delivery.
    assert_eq!(
        post_callback(&server, &url, &body("failed"), &[]).await,
        200
    );
    let wrong = url.replace("token=cbt_", "token=guess");
    assert_eq!(
        post_callback(&server, &wrong, &body("failed"), &[]).await,
        401
    );
    let no_token = url.split('?').next().expect("path").to_owned();
    assert_eq!(
        post_callback(&server, &no_token, &body("failed"), &[]).await,
        401
    );
    assert_eq!(
        post_callback(&server, "/v1/callbacks/prv_unknown", &body("sent"), &[]).await,
        404
    );
    let report = server.report(&tenant, &verification).await;
    let message = &report["messages"][0];
    assert_eq!(message["status"], "delivered", "{report}");
    let history: Vec<&str> = message["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["status"].as_str().expect("status"))
        .collect();
    assert_eq!(history, ["queued", "sent", "sent", "delivered", "failed"]);

    // A rotated token is shown once; the old one is refused from then on.
    let rotated = server
        .post(
            &format!("/v1/providers/{token_provider}/rotate-callback-token"),
            &tenant.key,
            json!({}),
        )
        .await
        .expect(200)
        .clone();
    let fresh = rotated["callback_url_with_token"]
        .as_str()
        .expect("the new URL")
        .to_owned();
    assert_ne!(fresh, url);
    assert_eq!(
        post_callback(&server, &url, &body("delivered"), &[]).await,
        401
    );
    assert_eq!(
        post_callback(&server, &fresh, &body("delivered"), &[]).await,
        200
    );
    assert_eq!(report["deliveries"][1]["status"], "delivered");
    assert!(report["rules_fired"].as_array().is_some());

    // A provider whose receipts carry an HMAC of the body.
    let signed_sim = SmsSim::start().await;
    server
        .post(
            &format!("/v1/providers/{token_provider}/disable"),
            &tenant.key,
            json!({}),
        )
        .await
        .expect(200);
    let signed = id(&provider(
        &server,
        &tenant,
        twilio("signed", &signed_sim, json!({"callback_auth": {"type": "hmac_sha256", "header": "X-Provider-Signature"}, "secrets": {"auth_token": "t", "callback_secret": "sig-secret"}})),
    )
    .await);
    server.send(&tenant, &uz(901), "a").await;
    let sms = signed_sim.accepted()[0].clone();
    let url = sms.callback.clone().expect("callback");
    assert!(!url.contains("token="), "{url}");
    // Signed receipts have no token to rotate.
    server
        .post(
            &format!("/v1/providers/{signed}/rotate-callback-token"),
            &tenant.key,
            json!({}),
        )
        .await
        .error(409, "callback_auth_not_token");
    assert!(url.ends_with(&format!("/v1/callbacks/{signed}")), "{url}");
    let payload = format!("MessageSid={}&MessageStatus=delivered", sms.id);
    let mut mac = Hmac::<Sha256>::new_from_slice(b"sig-secret").expect("key");
    mac.update(payload.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        post_callback(
            &server,
            &url,
            &payload,
            &[("X-Provider-Signature", "sha256=00")]
        )
        .await,
        401
    );
    assert_eq!(
        post_callback(
            &server,
            &url,
            &payload,
            &[("X-Provider-Signature", &signature)]
        )
        .await,
        200
    );
}

#[tokio::test]
async fn a_channel_workflow_falls_back_until_the_code_is_verified_and_survives_a_restart() {
    let (server, tenant) = TestServer::with_tenant().await;
    install_http_sms(&server, &tenant).await;
    let (sms_sim, wa_sim, voice_sim) = (
        SmsSim::start().await,
        SmsSim::start().await,
        SmsSim::start().await,
    );
    provider(
        &server,
        &tenant,
        twilio("sms", &sms_sim, json!({"channels": ["sms"]})),
    )
    .await;
    provider(
        &server,
        &tenant,
        twilio("wa", &wa_sim, json!({"channels": ["whatsapp"]})),
    )
    .await;
    provider(
        &server,
        &tenant,
        twilio("voice", &voice_sim, json!({"channels": ["voice"]})),
    )
    .await;
    let workflow = json!([
        {"channel": "sms", "timeout_seconds": 30},
        {"channel": "whatsapp", "timeout_seconds": 30},
        {"channel": "voice"},
    ]);
    let phone = uz(950);
    let sent = server
        .send_otp(
            &tenant,
            json!({"phone": phone, "applicant_id": "a", "workflow": workflow}),
        )
        .await;
    let verification = sent.expect(200)["verification_id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(sms_sim.accepted().len(), 1);
    // Before the timeout nothing else goes out.
    server.advance(chrono::Duration::seconds(20));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(wa_sim.accepted().is_empty());
    // The scheduled step survives a restart.
    let server = server.restart().await;
    server.advance(chrono::Duration::seconds(11));
    eventually("the WhatsApp step went out", || {
        wa_sim.accepted().len() == 1
    })
    .await;
    let whatsapp = wa_sim.accepted()[0].clone();
    assert_eq!(whatsapp.to, format!("whatsapp:{phone}"));
    // The step's code takes over once the step is recorded, just after the send.
    step_recorded(&server, &tenant, &verification, 1).await;
    // The SMS code was superseded; the WhatsApp code verifies.
    let sms_code = code_in(&sms_sim.accepted()[0].text);
    let wa_code = code_in(&whatsapp.text);
    if sms_code != wa_code {
        let stale = server.verify(&tenant, &phone, "a", &sms_code).await;
        assert_eq!(stale.expect(200)["verification_status"], "incorrect_code");
    }
    let verified = server.verify(&tenant, &phone, "a", &wa_code).await;
    assert_eq!(verified.expect(200)["verification_status"], "verified");
    // Verified: the voice step never starts.
    server.advance(chrono::Duration::seconds(60));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(voice_sim.accepted().is_empty());
    let report = server.report(&tenant, &verification).await;
    assert_eq!(
        report["phone"]["verification_method"], "whatsapp",
        "{report}"
    );
    assert_eq!(report["phone"]["status"], "Approved");
    let outcomes = report["channel_workflow"]["outcomes"]
        .as_array()
        .expect("outcomes");
    assert_eq!(outcomes.len(), 2, "{report}");
    assert_eq!(outcomes[1]["channel"], "whatsapp");
    assert_eq!(outcomes[1]["provider"], "wa");

    // A step nobody can carry is skipped at once: no SMS provider answers, so
    // WhatsApp goes out with the request; a voice call follows its timeout.
    sms_sim.fail_with(Some(503));
    let phone = uz(951);
    let sent = server
        .send_otp(
            &tenant,
            json!({"phone": phone, "applicant_id": "a", "workflow": workflow}),
        )
        .await;
    let second = sent.expect(200).clone();
    assert_eq!(second["channel"], "whatsapp");
    let second = second["verification_id"].as_str().expect("id").to_owned();
    assert_eq!(wa_sim.accepted().len(), 2);
    server.advance(chrono::Duration::seconds(31));
    eventually("the voice step went out", || {
        voice_sim.accepted().len() == 1
    })
    .await;
    let call = voice_sim.accepted()[0].clone();
    assert_eq!(call.kind, "call");
    assert!(call.text.starts_with("<Response><Say"), "{}", call.text);
    let code = code_in(&call.text.replace(' ', ""));
    step_recorded(&server, &tenant, &second, 2).await;
    let verified = server.verify(&tenant, &phone, "a", &code).await;
    assert_eq!(verified.expect(200)["verification_status"], "verified");

    // Workflow input is checked.
    for (workflow, field) in [
        (json!([]), "workflow"),
        (
            json!([{"channel": "sms", "timeout_seconds": 0}]),
            "workflow[0].timeout_seconds",
        ),
        (json!([{"channel": "fax"}]), "workflow[0].channel"),
    ] {
        server
            .send_otp(&tenant, json!({"phone": uz(952), "workflow": workflow}))
            .await
            .invalid_field(field);
    }
}

#[tokio::test]
async fn messages_on_their_way_expire_with_their_code() {
    let (server, tenant) = TestServer::with_tenant().await;
    install_http_sms(&server, &tenant).await;
    let sim = SmsSim::start().await;
    provider(&server, &tenant, twilio("a", &sim, json!({}))).await;
    let sent = server.send(&tenant, &uz(990), "a").await;
    let verification = sent["verification_id"].as_str().expect("id").to_owned();
    server.advance(chrono::Duration::minutes(11));
    let mut status = String::new();
    for _ in 0..100 {
        let report = server.report(&tenant, &verification).await;
        status = report["messages"][0]["status"]
            .as_str()
            .expect("status")
            .to_owned();
        if status == "expired" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status, "expired");
}
