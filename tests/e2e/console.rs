//! The web console in a real browser: headless Chromium, driven over WebDriver.

use serde_json::{json, Value};

use crate::support::*;

/// Traffic for the console to show.
async fn traffic(server: &TestServer, tenant: &Tenant) {
    upload_echo(
        server,
        tenant,
        ALL_TRIGGERS,
        json!({"action": "create_case", "on": "otp_verified"}),
    )
    .await;
    server
        .post(
            "/v1/workflows/rules",
            &tenant.key,
            json!({"rule_id": "otp_for_voip", "trigger": "phone_lookup_complete",
                "conditions": {"all": [{"field": "phone_type", "operator": "eq", "value": "voip"}]},
                "actions": [{"type": "request_info", "info_needed": "Phone verification required"}]}),
        )
        .await
        .expect(201);
    for n in 0..3 {
        server
            .send_and_verify(tenant, &uz_number(n), &format!("app-{n}"))
            .await;
    }
    server.send(tenant, &uz_number(10), "pending-1").await;
    let review = server.send_and_verify(tenant, UK_VOIP, "<img src=x onerror=alert(1)>").await;
    println!("review {review}");
    let out = server.outbox(tenant, &uz_number(0)).await;
    let id = out[0]["id"].as_str().unwrap().to_owned();
    server
        .post(&format!("/v1/dev/outbox/{id}/delivery"), &tenant.key, json!({"status": "delivered"}))
        .await
        .expect(200);
    server
        .post("/v1/webhooks", &tenant.key, json!({"url": "http://127.0.0.1:9/hook", "event_types": ["*"]}))
        .await
        .expect(201);
    server
        .post("/v1/templates", &tenant.key, json!({"name": "<script>alert(1)</script>", "variants": [{"locale": "en", "text": "Code {code}"}]}))
        .await
        .expect(201);
}

#[tokio::test]
async fn dump_shapes() {
    let (server, tenant) = TestServer::with_tenant().await;
    traffic(&server, &tenant).await;
    let log = server.get("/v1/verifications", &tenant.key).await.body.clone();
    let first = log["verifications"][0]["verification_id"].as_str().unwrap().to_owned();
    let webhooks = server.get("/v1/webhooks", &tenant.key).await.body.clone();
    let wh = webhooks["webhooks"][0]["id"].as_str().unwrap_or("x").to_owned();
    let plugins = server.get("/v1/plugins", &tenant.key).await.body.clone();
    let pid = plugins["plugins"][0]["id"].as_str().unwrap_or("x").to_owned();
    let mut all = serde_json::Map::new();
    for path in [
        "/v1/analytics/conversion".to_owned(),
        "/v1/analytics/conversion?group_by=country".to_owned(),
        "/v1/analytics/conversion?group_by=provider&interval=hour".to_owned(),
        "/v1/verifications".to_owned(),
        format!("/v1/verifications/{first}"),
        format!("/v1/verifications/{first}/events"),
        "/v1/cases".to_owned(),
        "/v1/plugins".to_owned(),
        format!("/v1/plugins/{pid}"),
        "/v1/workflows/rules".to_owned(),
        "/v1/providers".to_owned(),
        "/v1/routing".to_owned(),
        "/v1/routing/stats".to_owned(),
        "/v1/webhooks".to_owned(),
        format!("/v1/webhooks/{wh}/deliveries"),
        "/v1/settings/phone-verification".to_owned(),
        "/v1/spend".to_owned(),
        "/v1/fraud/blocks".to_owned(),
        "/v1/templates".to_owned(),
        "/v1/verifications?status=In%20Review".to_owned(),
    ] {
        all.insert(path.clone(), server.get(&path, &tenant.key).await.body.clone());
    }
    for path in ["/v1/tenants", "/v1/admin/fraud/blocks", "/v1/admin/analytics/conversion"] {
        all.insert(path.to_owned(), server.get(path, OPERATOR_KEY).await.body.clone());
    }
    std::fs::write("/tmp/dump/shapes.json", serde_json::to_string_pretty(&Value::Object(all)).unwrap()).unwrap();
}
