//! Seed 004's line checks end to end: `GET /v1/phone/porting-history` and
//! `POST /v1/phone/sim-swap-check`, answered by a real lookup adapter (a scripted test
//! adapter, and the first-party CAMARA adapter against a loopback operator), the
//! errors without one, and the rate limits that checks and lookups are taken from.

use reqwest::Method;
use serde_json::{json, Value};

use dialgate::clock::Clock;
use dialgate::plugins::testing::guest_component;

use crate::sims::CamaraSim;
use crate::support::*;

const DAY_MS: i64 = 86_400_000;

/// Installs the scripted lookup adapter with `config`.
async fn scripted(server: &TestServer, tenant: &Tenant, config: Value) {
    let reply = server
        .raw(
            Method::POST,
            "/v1/plugins?name=line&kind=lookup_adapter&version=1",
            Some(&tenant.key),
            Some(("application/wasm", guest_component("guest_line"))),
            &[],
        )
        .await;
    let id = reply.expect(201)["id"].as_str().expect("id").to_owned();
    server
        .put(
            &format!("/v1/plugins/{id}/config"),
            &tenant.key,
            json!({ "config": config }),
        )
        .await
        .expect(200);
}

async fn porting(server: &TestServer, tenant: &Tenant, phone: &str) -> Reply {
    let path = format!("/v1/phone/porting-history?phone={}", encode(phone));
    server.get(&path, &tenant.key).await
}

async fn sim_swap(server: &TestServer, tenant: &Tenant, phone: &str) -> Reply {
    server
        .post(
            "/v1/phone/sim-swap-check",
            &tenant.key,
            json!({ "phone": phone }),
        )
        .await
}

#[tokio::test]
async fn without_a_lookup_adapter_the_checks_say_which_adapter_is_needed() {
    let (server, tenant) = TestServer::with_tenant().await;
    let error = porting(&server, &tenant, UZ_BEELINE)
        .await
        .error(409, "lookup_adapter_required")
        .clone();
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("porting")),
        "{error}"
    );
    let error = sim_swap(&server, &tenant, UZ_BEELINE)
        .await
        .error(409, "lookup_adapter_required")
        .clone();
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("camara-lookup")),
        "{error}"
    );
    // Bad input is named before any adapter is asked.
    let short = sim_swap(&server, &tenant, "+1 555").await;
    assert_eq!(short.error(422, "invalid_phone_number")["field"], "phone");
    let missing = server.get("/v1/phone/porting-history", &tenant.key).await;
    let error = missing.invalid_field("query");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("phone")),
        "{error}"
    );
    // An installed adapter that lacks its configuration is named with what it lacks.
    server
        .post("/v1/plugins/catalog/camara-lookup", &tenant.key, json!({}))
        .await
        .expect(201);
    let error = sim_swap(&server, &tenant, UZ_BEELINE)
        .await
        .error(409, "lookup_adapter_required")
        .clone();
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("camara-lookup") && m.contains("lacks")),
        "{error}"
    );
}

#[tokio::test]
async fn the_porting_history_and_a_sim_swap_check_come_from_the_tenants_adapter() {
    let (server, tenant) = TestServer::with_tenant().await;
    let now = server.clock.now().timestamp_millis();
    scripted(
        &server,
        &tenant,
        json!({
            "carrier": "Verizon",
            "ports": format!(">AT&T@{};AT&T>Verizon@{}", now - 400 * DAY_MS, now - 36 * DAY_MS),
            "sim_change": (now - 2 * DAY_MS).to_string(),
        }),
    )
    .await;
    let history = porting(&server, &tenant, "+1 (415) 555-2671").await;
    let history = history.expect(200).clone();
    assert_eq!(
        keys(&history),
        sorted(&[
            "phone",
            "current_carrier",
            "porting_history",
            "recently_ported",
            "risk_factor"
        ])
    );
    assert_eq!(history["phone"], "+14155552671");
    assert_eq!(history["current_carrier"], "Verizon");
    assert_eq!(history["recently_ported"], true);
    assert_eq!(
        history["risk_factor"], "medium",
        "36 days: recent, not within 30"
    );
    let ports = history["porting_history"].as_array().expect("list");
    assert_eq!(ports.len(), 2);
    assert_eq!(
        keys(&ports[1]),
        sorted(&["from_carrier", "to_carrier", "ported_at", "days_ago"])
    );
    assert_eq!(ports[0]["from_carrier"], Value::Null);
    assert_eq!(ports[1]["from_carrier"], "AT&T");
    assert_eq!(ports[1]["to_carrier"], "Verizon");
    assert_eq!(ports[1]["days_ago"], 36);
    let day = (server.clock.now() - chrono::Duration::days(36))
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(ports[1]["ported_at"], day);

    // The SIM changed two days ago: within the default seven days.
    let check = sim_swap(&server, &tenant, "+14155552671").await;
    let check = check.expect(200).clone();
    assert_eq!(
        keys(&check),
        sorted(&[
            "phone",
            "sim_swap_detected",
            "last_sim_change",
            "days_since_change",
            "risk_assessment"
        ])
    );
    assert_eq!(check["sim_swap_detected"], true);
    assert_eq!(check["days_since_change"], 2);
    assert_eq!(check["risk_assessment"]["risk_level"], "high");
    // With a one-day threshold the same change is not recent.
    server
        .settings(&tenant, json!({"sim_swap_threshold_days": 1}))
        .await;
    let check = sim_swap(&server, &tenant, "+14155552671").await;
    let check = check.expect(200).clone();
    assert_eq!(check["sim_swap_detected"], false);
    assert_eq!(
        check["risk_assessment"],
        json!({"risk_level": "low", "details": "No recent SIM changes detected"})
    );

    // The operator failing is a 502 that says so, not a made-up answer.
    let failed = sim_swap(&server, &tenant, "+14155552670").await;
    let error = failed.error(502, "provider_failed");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("the operator is down")),
        "{error}"
    );
}

#[tokio::test]
async fn the_camara_adapter_answers_sim_swap_checks_and_reports_no_porting() {
    let (server, tenant) = TestServer::with_tenant().await;
    let sim = CamaraSim::start().await;
    install_camara(&server, &tenant, &sim, true).await;
    let recent = "+998901234571";
    sim.swapped(recent, Some(server.clock.now() - chrono::Duration::days(3)));
    let check = sim_swap(&server, &tenant, recent).await;
    let check = check.expect(200).clone();
    assert_eq!(check["sim_swap_detected"], true, "{check}");
    assert_eq!(check["days_since_change"], 3);
    assert_eq!(sim.seen()[0].path, "/sim-swap/v2/retrieve-date");
    assert_eq!(sim.seen()[0].body, json!({"phoneNumber": recent}));

    // An operator that does not know the date: unknown, not "no swap".
    let quiet = "+998901234572";
    sim.swapped(quiet, None);
    let check = sim_swap(&server, &tenant, quiet).await;
    let check = check.expect(200).clone();
    assert_eq!(check["sim_swap_detected"], false);
    assert_eq!(check["last_sim_change"], Value::Null);
    assert_eq!(check["risk_assessment"]["risk_level"], "unknown", "{check}");

    // CAMARA has no porting API: an empty history, said plainly.
    let history = porting(&server, &tenant, recent).await;
    let history = history.expect(200).clone();
    assert_eq!(history["porting_history"], json!([]));
    assert_eq!(history["recently_ported"], false);
    assert_eq!(history["risk_factor"], "low");
}

#[tokio::test]
async fn sim_swap_check_without_an_adapter_that_can_answer_is_stored_with_a_notice() {
    let (server, tenant) = TestServer::with_tenant().await;
    let path = "/v1/settings/phone-verification";
    let on = json!({"sim_swap_check": true});
    let put = server.put(path, &tenant.key, on.clone()).await;
    let answer = put.expect(200).clone();
    assert_eq!(answer["sim_swap_check"], true);
    let notices = answer["notices"].as_array().expect("notices").clone();
    assert_eq!(notices.len(), 1);
    assert!(
        notices[0]
            .as_str()
            .is_some_and(|n| n.contains("no lookup adapter") && n.contains("camara-lookup")),
        "{answer}"
    );
    // The notice is the answer's, not a setting.
    let read = server.get(path, &tenant.key).await;
    assert!(read.expect(200).get("notices").is_none());

    // An adapter without its configuration is named with what it lacks.
    let sim = CamaraSim::start().await;
    let installed = server
        .post(
            "/v1/plugins/catalog/camara-lookup",
            &tenant.key,
            json!({"hosts": [sim.host()]}),
        )
        .await;
    let id = installed.expect(201)["id"].as_str().expect("id").to_owned();
    let put = server.put(path, &tenant.key, on.clone()).await;
    let notice = put.expect(200)["notices"][0].clone();
    assert!(
        notice
            .as_str()
            .is_some_and(|n| n.contains("camara-lookup") && n.contains("lacks")),
        "{notice}"
    );
    // Configured: no notice.
    configure_camara(&server, &tenant, &id, &sim, true).await;
    let put = server.put(path, &tenant.key, on).await;
    assert!(put.expect(200).get("notices").is_none(), "{}", put.text);
}

#[tokio::test]
async fn line_checks_and_lookups_are_rate_limited_before_the_adapter_is_asked() {
    let (server, tenant) = TestServer::with_tenant().await;
    scripted(&server, &tenant, json!({"carrier": "Verizon"})).await;
    server
        .settings(
            &tenant,
            json!({"rate_limits": {
                "line_checks": {
                    "per_tenant": {"per_minute": 1, "burst": 3},
                    "per_phone": {"per_minute": 1, "burst": 2},
                },
                "lookup": {"per_phone": {"per_minute": 1, "burst": 2}},
            }}),
        )
        .await;
    porting(&server, &tenant, UZ_BEELINE).await.expect(200);
    sim_swap(&server, &tenant, UZ_BEELINE).await.expect(200);
    let limited = porting(&server, &tenant, UZ_BEELINE).await;
    let error = limited.error(429, "rate_limited").clone();
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("line-checks") && m.contains("phone number")),
        "{error}"
    );
    assert!(limited.header("retry-after").is_some());
    // Another number has its own bucket, until the tenant's is empty.
    sim_swap(&server, &tenant, &uz_number(1)).await.expect(200);
    let error = sim_swap(&server, &tenant, &uz_number(2))
        .await
        .error(429, "rate_limited")
        .clone();
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("tenant")),
        "{error}"
    );

    // Lookups have buckets of their own.
    let lookup = |phone: String| {
        let api = server.api.clone();
        let tenant = tenant.clone();
        async move {
            api.post("/v1/phone/lookup", &tenant.key, json!({"phone": phone}))
                .await
        }
    };
    lookup(UZ_BEELINE.to_owned()).await.expect(200);
    lookup(UZ_BEELINE.to_owned()).await.expect(200);
    lookup(UZ_BEELINE.to_owned())
        .await
        .error(429, "rate_limited");
    lookup(uz_number(3)).await.expect(200);
    // A minute on, the number's bucket has a token again.
    server.advance(chrono::Duration::minutes(1));
    lookup(UZ_BEELINE.to_owned()).await.expect(200);
}
