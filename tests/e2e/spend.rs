//! Spend caps end to end, through a real provider (the first-party `http-sms` adapter
//! against a loopback SMS simulator): a budget spent refuses further sends naming it
//! (429 with Retry-After until the period ends), `spend.threshold_reached` fires at the
//! alert share and at the whole budget, per-country and monthly budgets hold apart,
//! failed sends cost nothing, concurrent sends never overspend, and bad caps are
//! refused naming the field.

use serde_json::{json, Value};

use crate::pumping::{receiver, wait_until};
use crate::sims::SmsSim;
use crate::support::*;

/// A tenant whose codes go through one provider on `sim` at `cost` a message, with
/// `caps` as its spend caps.
async fn paying_tenant(server: &TestServer, sim: &SmsSim, cost: f64, caps: Value) -> Tenant {
    let tenant = server.tenant("paying").await;
    server
        .post("/v1/plugins/catalog/http-sms", &tenant.key, json!({}))
        .await
        .expect(201);
    server
        .post(
            "/v1/providers",
            &tenant.key,
            json!({
                "name": "sim", "plugin": "http-sms", "sender_id": "+15005550006",
                "cost_per_message": cost,
                "config": {"shape": "twilio", "base_url": sim.base_url(), "account_sid": "AC42"},
                "secrets": {"auth_token": "twilio-secret"},
                "hosts": [sim.host()],
            }),
        )
        .await
        .expect(201);
    server.settings(&tenant, json!({"spend_caps": caps})).await;
    tenant
}

async fn send(server: &TestServer, tenant: &Tenant, phone: &str) -> Reply {
    server
        .send_otp(tenant, json!({"phone": phone, "applicant_id": "a"}))
        .await
}

/// The budgets of `GET /v1/spend` by name: (cap, spent).
async fn budgets(server: &TestServer, tenant: &Tenant) -> Vec<(String, f64, f64)> {
    let spend = server
        .get("/v1/spend", &tenant.key)
        .await
        .expect(200)
        .clone();
    spend["budgets"]
        .as_array()
        .expect("budgets")
        .iter()
        .map(|b| {
            (
                b["budget"].as_str().expect("name").to_owned(),
                b["cap"].as_f64().expect("cap"),
                b["spent"].as_f64().expect("spent"),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_spent_daily_budget_refuses_sends_until_the_next_day_and_warns_on_the_way() {
    let server = TestServer::start().await;
    let sim = SmsSim::start().await;
    let tenant = paying_tenant(&server, &sim, 1.0, json!({"daily": 5.0})).await;
    let (url, kept) = receiver().await;
    server
        .post(
            "/v1/webhooks",
            &tenant.key,
            json!({"url": url, "event_types": ["spend.threshold_reached"]}),
        )
        .await
        .expect(201);

    for n in 0..5 {
        let sent = send(&server, &tenant, &uz_number(n)).await;
        assert_eq!(sent.expect(200)["status"], "pending");
    }
    let refused = send(&server, &tenant, &uz_number(5)).await;
    let error = refused.error(429, "spend_cap_reached");
    let message = error["message"].as_str().expect("message");
    assert!(
        message.starts_with("the daily budget of 5.0000 is spent until "),
        "{message}"
    );
    let retry: i64 = refused
        .header("retry-after")
        .and_then(|value| value.parse().ok())
        .expect("Retry-After");
    assert!((1..=86_400).contains(&retry), "{retry}");
    assert_eq!(
        sim.accepted().len(),
        5,
        "the refused code reached no provider"
    );
    assert_eq!(
        budgets(&server, &tenant).await,
        [("daily".into(), 5.0, 5.0)]
    );

    // At 80% (the fourth code) and at the whole budget (the fifth).
    let hooks = wait_until(|| {
        let kept = kept.lock().expect("lock");
        (kept.len() >= 2).then(|| kept.clone())
    })
    .await;
    let percents: Vec<&Value> = hooks.iter().map(|hook| &hook["data"]["percent"]).collect();
    assert_eq!(percents, [&json!(80), &json!(100)], "{hooks:?}");
    assert_eq!(hooks[0]["type"], "spend.threshold_reached");
    assert_eq!(hooks[0]["data"]["budget"], "daily");
    assert_eq!(hooks[0]["data"]["spent"], 4.0);

    // A new day, a new budget.
    server.advance(chrono::Duration::days(1));
    assert_eq!(
        send(&server, &tenant, &uz_number(6)).await.expect(200)["status"],
        "pending"
    );
    assert_eq!(
        budgets(&server, &tenant).await,
        [("daily".into(), 5.0, 1.0)]
    );
}

#[tokio::test]
async fn a_country_budget_and_the_monthly_budget_each_refuse_what_they_cover() {
    let server = TestServer::start().await;
    let sim = SmsSim::start().await;
    let tenant = paying_tenant(
        &server,
        &sim,
        0.5,
        json!({"monthly": 2.0, "countries_daily": {"UZ": 1.0}}),
    )
    .await;
    for n in 0..2 {
        send(&server, &tenant, &uz_number(n)).await.expect(200);
    }
    let refused = send(&server, &tenant, &uz_number(2)).await;
    let message = refused.error(429, "spend_cap_reached")["message"].clone();
    assert!(
        message
            .as_str()
            .expect("text")
            .starts_with("the daily:UZ budget"),
        "{message}"
    );
    // Other countries still send, until the month's budget is spent.
    for phone in ["+447400123456", "+447400123999"] {
        send(&server, &tenant, phone).await.expect(200);
    }
    let refused = send(&server, &tenant, "+447400124999").await;
    let message = refused.error(429, "spend_cap_reached")["message"].clone();
    assert!(
        message
            .as_str()
            .expect("text")
            .starts_with("the monthly budget"),
        "{message}"
    );
    assert_eq!(sim.accepted().len(), 4);
    let mut seen = budgets(&server, &tenant).await;
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        [("daily:UZ".into(), 1.0, 1.0), ("monthly".into(), 2.0, 2.0)]
    );
}

#[tokio::test]
async fn a_failed_send_costs_nothing_and_concurrent_sends_never_overspend() {
    let server = TestServer::start().await;
    let sim = SmsSim::start().await;
    let tenant = paying_tenant(&server, &sim, 1.0, json!({"daily": 5.0})).await;
    sim.fail_with(Some(500));
    send(&server, &tenant, &uz_number(0))
        .await
        .error(502, "provider_failed");
    assert_eq!(
        budgets(&server, &tenant).await,
        [("daily".into(), 5.0, 0.0)]
    );
    sim.fail_with(None);

    // Twenty sends at once against five codes' budget: five go out.
    let mut sends = tokio::task::JoinSet::new();
    for n in 1..21 {
        let api = server.api.clone();
        let tenant = tenant.clone();
        sends.spawn(async move {
            api.send_otp(&tenant, json!({"phone": uz_number(n), "applicant_id": "a"}))
                .await
                .status
        });
    }
    let statuses: Vec<u16> = sends.join_all().await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        15,
        "{statuses:?}"
    );
    assert_eq!(sim.accepted().len(), 5);
    assert_eq!(
        budgets(&server, &tenant).await,
        [("daily".into(), 5.0, 5.0)]
    );
}

#[tokio::test]
async fn bad_spend_caps_are_refused_naming_the_field() {
    let (server, tenant) = TestServer::with_tenant().await;
    for (caps, field) in [
        (json!({"daily": -1}), "spend_caps.daily"),
        (json!({"monthly": 1e12}), "spend_caps.monthly"),
        (
            json!({"countries_daily": {"uz": 1}}),
            "spend_caps.countries_daily.uz",
        ),
        (
            json!({"countries_daily": {"UZ": -5}}),
            "spend_caps.countries_daily.UZ",
        ),
        (json!({"alert_percent": 0}), "spend_caps.alert_percent"),
    ] {
        server
            .put(
                "/v1/settings/phone-verification",
                &tenant.key,
                json!({"spend_caps": caps}),
            )
            .await
            .invalid_field(field);
    }
    let settings = server
        .get("/v1/settings/phone-verification", &tenant.key)
        .await
        .expect(200)
        .clone();
    assert_eq!(
        settings["spend_caps"],
        json!({"daily": null, "monthly": null, "countries_daily": {}, "alert_percent": 80})
    );
    // Without budgets, nothing is counted.
    let spend = server
        .get("/v1/spend", &tenant.key)
        .await
        .expect(200)
        .clone();
    assert_eq!(spend["budgets"], json!([]), "{spend}");
}
