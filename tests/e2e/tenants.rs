//! Tenants and credentials: the operator key, tenant API keys (create, list, revoke),
//! isolation between tenants, health endpoints, and production mode.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn tenant_administration_needs_the_operator_key() {
    let server = TestServer::start().await;
    let created = server
        .post("/v1/tenants", OPERATOR_KEY, json!({"name": "acme"}))
        .await;
    let tenant = created.expect(201).clone();
    assert_eq!(
        keys(&tenant),
        sorted(&["id", "name", "created_at", "api_key"])
    );
    assert_eq!(tenant["name"], "acme");
    let key = tenant["api_key"].as_str().expect("api key");
    assert!(key.starts_with("dg_"), "{key}");

    server
        .post("/v1/tenants", key, json!({"name": "evil"}))
        .await
        .error(401, "unauthorized");
    server
        .get("/v1/tenants", key)
        .await
        .error(401, "unauthorized");
    server
        .call(Method::GET, "/v1/tenants", None, None)
        .await
        .error(401, "unauthorized");
    server
        .post("/v1/tenants", "not-the-operator-key", json!({"name": "x"}))
        .await
        .error(401, "unauthorized");

    let list = server.get("/v1/tenants", OPERATOR_KEY).await;
    let tenants = list.expect(200)["tenants"]
        .as_array()
        .expect("tenants")
        .clone();
    assert_eq!(tenants.len(), 1);
    assert_eq!(tenants[0]["id"], tenant["id"]);
    assert_eq!(
        keys(&tenants[0]),
        sorted(&["id", "name", "created_at"]),
        "the key is never listed"
    );

    server
        .post("/v1/tenants", OPERATOR_KEY, json!({"name": "  "}))
        .await
        .invalid_field("name");
    server
        .post("/v1/tenants", OPERATOR_KEY, json!({}))
        .await
        .invalid_field("name");
    // The operator key is not a tenant key.
    server
        .get("/v1/keys", OPERATOR_KEY)
        .await
        .error(401, "unauthorized");
}

#[tokio::test]
async fn api_keys_are_shown_once_listed_without_secret_and_revocable() {
    let (server, tenant) = TestServer::with_tenant().await;
    let created = server
        .post("/v1/keys", &tenant.key, json!({"name": "ci"}))
        .await;
    let created = created.expect(201).clone();
    assert_eq!(
        keys(&created),
        sorted(&["id", "name", "prefix", "created_at", "api_key"])
    );
    let secret = created["api_key"].as_str().expect("secret").to_owned();
    let key_id = created["id"].as_str().expect("key id").to_owned();
    assert!(secret.starts_with(created["prefix"].as_str().expect("prefix")));
    assert_ne!(secret, tenant.key);

    // The new key works and sees the same tenant.
    server
        .send(
            &Tenant {
                id: tenant.id.clone(),
                key: secret.clone(),
            },
            UZ_BEELINE,
            "a",
        )
        .await;
    assert_eq!(server.outbox(&tenant, UZ_BEELINE).await.len(), 1);

    let list = server.get("/v1/keys", &tenant.key).await;
    let listed = list.expect(200)["keys"].as_array().expect("keys").clone();
    assert_eq!(listed.len(), 2);
    for key in &listed {
        assert_eq!(
            keys(key),
            sorted(&["id", "name", "prefix", "created_at"]),
            "no secret in {key}"
        );
    }
    assert!(!list.text.contains(&secret) && !list.text.contains(&tenant.key));

    let revoked = server
        .delete(&format!("/v1/keys/{key_id}"), &tenant.key)
        .await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    server
        .get("/v1/keys", &secret)
        .await
        .error(401, "unauthorized");
    server
        .get("/v1/dev/outbox", &secret)
        .await
        .error(401, "unauthorized");
    server
        .delete(&format!("/v1/keys/{key_id}"), &tenant.key)
        .await
        .error(404, "not_found");

    let remaining = server.get("/v1/keys", &tenant.key).await;
    let remaining = remaining.expect(200)["keys"]
        .as_array()
        .expect("keys")
        .clone();
    assert_eq!(remaining.len(), 1);
    let last_id = remaining[0]["id"].as_str().expect("id");
    server
        .delete(&format!("/v1/keys/{last_id}"), &tenant.key)
        .await
        .error(409, "last_key");
    server.get("/v1/keys", &tenant.key).await.expect(200);
}

#[tokio::test]
async fn a_key_can_revoke_itself_when_another_remains() {
    let (server, tenant) = TestServer::with_tenant().await;
    let created = server.post("/v1/keys", &tenant.key, json!({})).await;
    let created = created.expect(201).clone();
    let list = server
        .get("/v1/keys", &tenant.key)
        .await
        .expect(200)
        .clone();
    let first_id = list["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["id"] != created["id"])
        .and_then(|k| k["id"].as_str())
        .expect("first key id")
        .to_owned();
    let own = server
        .delete(&format!("/v1/keys/{first_id}"), &tenant.key)
        .await;
    assert_eq!(own.status, 204, "{}", own.text);
    server
        .get("/v1/keys", &tenant.key)
        .await
        .error(401, "unauthorized");
    server
        .get("/v1/keys", created["api_key"].as_str().expect("secret"))
        .await
        .expect(200);
}

#[tokio::test]
async fn tenants_cannot_reach_each_others_verifications() {
    let server = TestServer::start().await;
    let a = server.tenant("a").await;
    let b = server.tenant("b").await;
    let sent = server.send(&a, UZ_BEELINE, "applicant").await;
    let id = sent["verification_id"].as_str().expect("id");
    let code = server.latest_code(&a, UZ_BEELINE).await;

    server
        .get(&format!("/v1/verifications/{id}"), &b.key)
        .await
        .error(404, "not_found");
    server
        .get(&format!("/v1/verifications/{id}/events"), &b.key)
        .await
        .error(404, "not_found");
    assert!(server.outbox(&b, UZ_BEELINE).await.is_empty());
    let all = server.get("/v1/dev/outbox", &b.key).await;
    assert_eq!(all.expect(200)["messages"], json!([]));

    // B cannot use A's code, and trying does not touch A's verification.
    server
        .verify(&b, UZ_BEELINE, "applicant", &code)
        .await
        .error(404, "not_found");
    let report = server.report(&a, id).await;
    assert_eq!(report["phone"]["verification_attempts"], 0);
    let verified = server.verify(&a, UZ_BEELINE, "applicant", &code).await;
    assert_eq!(verified.expect(200)["status"], "Approved");

    // A's verified number is not a duplicate for B.
    let b_sent = server.send(&b, UZ_BEELINE, "someone-else").await;
    assert_eq!(b_sent["warnings"], json!([]));

    // Keys are per tenant: B cannot list or revoke A's.
    let a_keys = server.get("/v1/keys", &a.key).await.expect(200).clone();
    let a_key_id = a_keys["keys"][0]["id"].as_str().expect("id");
    server
        .delete(&format!("/v1/keys/{a_key_id}"), &b.key)
        .await
        .error(404, "not_found");
    let b_keys = server.get("/v1/keys", &b.key).await.expect(200).clone();
    assert_eq!(b_keys["keys"].as_array().expect("keys").len(), 1);
    assert_ne!(b_keys["keys"][0]["id"], a_keys["keys"][0]["id"]);
}

#[tokio::test]
async fn tenants_have_independent_blocklists_settings_and_idempotency_keys() {
    let server = TestServer::start().await;
    let a = server.tenant("a").await;
    let b = server.tenant("b").await;

    server
        .post("/v1/blocklist", &a.key, json!({"phone": UZ_BEELINE}))
        .await
        .expect(201);
    assert_eq!(
        server.get("/v1/blocklist", &b.key).await.expect(200)["entries"],
        json!([])
    );
    server
        .delete("/v1/blocklist/%2B998901234567", &b.key)
        .await
        .error(404, "not_found");
    let b_sent = server.send(&b, UZ_BEELINE, "x").await;
    assert_eq!(b_sent["warnings"], json!([]));
    let a_sent = server
        .send_otp(&a, json!({"phone": UZ_BEELINE, "applicant_id": "x"}))
        .await;
    assert_eq!(a_sent.expect(200)["status"], "declined");

    server.settings(&a, json!({"code_length": 8})).await;
    let b_settings = server.get("/v1/settings/phone-verification", &b.key).await;
    assert_eq!(b_settings.expect(200)["code_length"], 6);

    let with_key = |tenant: &Tenant, phone: String| {
        let api = server.api.clone();
        let key = tenant.key.clone();
        async move {
            let body =
                serde_json::to_vec(&json!({"phone": phone, "applicant_id": "y"})).expect("json");
            api.raw(
                Method::POST,
                "/v1/phone/send-otp",
                Some(&key),
                Some(("application/json", body)),
                &[("Idempotency-Key", "shared-key")],
            )
            .await
        }
    };
    let a_answer = with_key(&a, uz_number(1)).await.expect(200).clone();
    let b_answer = with_key(&b, uz_number(2)).await.expect(200).clone();
    assert_ne!(a_answer["verification_id"], b_answer["verification_id"]);
    assert_eq!(b_answer["phone"], uz_number(2));
}

#[tokio::test]
async fn a_bad_key_is_refused_on_every_tenant_endpoint() {
    let (server, tenant) = TestServer::with_tenant().await;
    let sent = server.send(&tenant, UZ_BEELINE, "a").await;
    let id = sent["verification_id"].as_str().expect("id").to_owned();
    let phone_body = json!({"phone": UZ_BEELINE});
    let endpoints: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::POST,
            "/v1/phone/validate".into(),
            Some(phone_body.clone()),
        ),
        (
            Method::POST,
            "/v1/phone/lookup".into(),
            Some(phone_body.clone()),
        ),
        (
            Method::POST,
            "/v1/phone/send-otp".into(),
            Some(phone_body.clone()),
        ),
        (
            Method::POST,
            "/v1/phone/verify-otp".into(),
            Some(json!({"phone": UZ_BEELINE, "code": "123456"})),
        ),
        (Method::GET, format!("/v1/verifications/{id}"), None),
        (Method::GET, format!("/v1/verifications/{id}/events"), None),
        (Method::POST, "/v1/keys".into(), Some(json!({"name": "k"}))),
        (Method::GET, "/v1/keys".into(), None),
        (Method::DELETE, "/v1/keys/whatever".into(), None),
        (Method::GET, "/v1/settings/phone-verification".into(), None),
        (
            Method::PUT,
            "/v1/settings/phone-verification".into(),
            Some(json!({"code_length": 4})),
        ),
        (
            Method::POST,
            "/v1/blocklist".into(),
            Some(phone_body.clone()),
        ),
        (Method::GET, "/v1/blocklist".into(), None),
        (Method::DELETE, "/v1/blocklist/%2B998901234567".into(), None),
        (Method::GET, "/v1/dev/outbox".into(), None),
    ];
    let wrong_tenant_key = format!("{}x", tenant.key);
    let bad_headers: Vec<Option<String>> = vec![
        None,
        Some("Bearer dg_not_a_real_key".into()),
        Some(format!("Bearer {wrong_tenant_key}")),
        Some(format!("Basic {}", tenant.key)),
        Some("Bearer".into()),
        Some(format!("Bearer {OPERATOR_KEY}")),
    ];
    for (method, path, body) in &endpoints {
        for header in &bad_headers {
            let bytes = body
                .as_ref()
                .map(|b| ("application/json", serde_json::to_vec(b).expect("json")));
            let headers: Vec<(&str, &str)> = header
                .iter()
                .map(|h| ("authorization", h.as_str()))
                .collect();
            let reply = server
                .raw(method.clone(), path, None, bytes, &headers)
                .await;
            assert_eq!(
                reply.status, 401,
                "{method} {path} with {header:?}: {}",
                reply.text
            );
            reply.error(401, "unauthorized");
        }
    }
    // Nothing changed behind the refusals.
    assert_eq!(server.outbox(&tenant, UZ_BEELINE).await.len(), 1);
    assert_eq!(
        server
            .get("/v1/settings/phone-verification", &tenant.key)
            .await
            .expect(200)["code_length"],
        6
    );
    assert_eq!(
        server.get("/v1/blocklist", &tenant.key).await.expect(200)["entries"],
        json!([])
    );
}

#[tokio::test]
async fn health_endpoints_answer_without_a_key() {
    let server = TestServer::start().await;
    let health = server.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(health.expect(200), &json!({"status": "ok"}));
    let ready = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.expect(200), &json!({"status": "ready"}));
}

#[tokio::test]
async fn production_mode_has_no_outbox_and_cannot_send_without_a_provider() {
    let server = TestServer::start_with(|config| config.production = true).await;
    let tenant = server.tenant("prod").await;
    server
        .get("/v1/dev/outbox", &tenant.key)
        .await
        .error(404, "not_found");
    let reply = server
        .send_otp(&tenant, json!({"phone": UZ_BEELINE, "applicant_id": "a"}))
        .await;
    reply.error(503, "unavailable");
    // Nothing was started: no verification to check a code against.
    server
        .verify(&tenant, UZ_BEELINE, "a", "123456")
        .await
        .error(404, "not_found");
    // The rest of the API works.
    server
        .post(
            "/v1/phone/lookup",
            &tenant.key,
            json!({"phone": UZ_BEELINE}),
        )
        .await
        .expect(200);
    server
        .call(Method::GET, "/readyz", None, None)
        .await
        .expect(200);
}

#[tokio::test]
async fn the_operator_key_is_checked_against_the_configured_one() {
    let server = TestServer::start_with(|config| {
        config.operator_key = Some("another-operator-key-123".into())
    })
    .await;
    server
        .get("/v1/tenants", OPERATOR_KEY)
        .await
        .error(401, "unauthorized");
    server
        .get("/v1/tenants", "another-operator-key-123")
        .await
        .expect(200);
}
