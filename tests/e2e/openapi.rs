//! `GET /openapi.json` on the real server: served without a key, OpenAPI 3.1, and every
//! operation it describes is routed (the server neither answers `route_not_found` nor
//! 405 for it). The answers of the verification journey (validate, lookup, send, check,
//! report, feedback, audit trail, dev outbox), of the settings routes and of the
//! management routes (tenants, keys, blocklist, webhooks, providers and routing, brands
//! and templates, plugins, workflow rules and their test and backtest, cases, fraud and
//! spend) match the schemas the description gives them.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn openapi_describes_routes_the_server_serves() {
    let server = TestServer::start().await;
    let reply = server.call(Method::GET, "/openapi.json", None, None).await;
    let doc = reply.expect(200).clone();
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "the description is JSON"
    );
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        // Any value fills a templated segment: the routing is what is checked.
        let concrete: String = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "x"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for (method, operation) in item.as_object().expect("a path item") {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            if !operation.is_object() {
                continue;
            }
            operations += 1;
            let reply = server
                .api
                .raw(method.clone(), &concrete, None, None, &[])
                .await;
            let code = reply.body["error"]["code"].as_str().unwrap_or_default();
            assert!(
                code != "route_not_found" && reply.status != 405,
                "{method} {path} is described but not routed: {} {}",
                reply.status,
                reply.text
            );
            let statuses: Vec<&String> = operation["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .collect();
            assert!(
                statuses
                    .iter()
                    .any(|status| status.as_str() == reply.status.to_string())
                    || reply.status == 400,
                "{method} {path} without a key answered {}, not described: {statuses:?}",
                reply.status
            );
        }
    }
    assert!(operations >= 75, "{operations} operations");
    let error: &Value = &doc["components"]["schemas"]["Error"];
    assert_eq!(error["type"], "object", "the shared error schema: {error}");
}

/// The schema the description `doc` gives the 200 answer of `method` `path`, with the
/// description's components beside it so its references resolve.
/// The server's OpenAPI description.
async fn openapi_doc(server: &TestServer) -> Value {
    server
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .expect(200)
        .clone()
}

fn answer_schema(doc: &Value, method: &str, path: &str) -> Value {
    status_schema(doc, method, path, 200)
}

/// The schema the description `doc` gives the `status` answer of `method` `path`, with
/// the description's components beside it.
fn status_schema(doc: &Value, method: &str, path: &str, status: u16) -> Value {
    let schema = &doc["paths"][path][method]["responses"][status.to_string()]["content"]
        ["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} describes no JSON answer with {status}"
    );
    let mut schema = schema.clone();
    schema["components"] = doc["components"].clone();
    schema
}

/// Checks `answer` against the schema of `method` `path` in `doc`, naming every
/// mismatch; and that the schema says more than "an object".
fn assert_described(doc: &Value, method: &str, path: &str, answer: &Value) {
    assert_described_as(doc, method, path, 200, answer);
}

/// Like [`assert_described`], for the `status` answer.
fn assert_described_as(doc: &Value, method: &str, path: &str, status: u16, answer: &Value) {
    let schema = status_schema(doc, method, path, status);
    assert!(
        schema.get("$ref").is_some() || schema.get("properties").is_some(),
        "{method} {path}: the answer is described only as {schema}"
    );
    let validator = jsonschema::validator_for(&schema)
        .unwrap_or_else(|err| panic!("{method} {path}: the schema does not compile: {err}"));
    let errors: Vec<String> = validator
        .iter_errors(answer)
        .map(|err| format!("{} at {}", err, err.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} answered what its schema does not allow: {errors:#?}\n{answer}"
    );
}

/// Calls `method` on `path`, a concrete path of the description's `template`, with
/// `key` and `body`; expects `status` and an answer the description allows for it;
/// returns the answer.
#[allow(clippy::too_many_arguments)]
async fn described(
    server: &TestServer,
    doc: &Value,
    method: Method,
    template: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
    status: u16,
) -> Value {
    let reply = server
        .call(method.clone(), path, Some(key), body.as_ref())
        .await;
    let answer = reply.expect(status).clone();
    let method = method.as_str().to_lowercase();
    assert_described_as(doc, &method, template, status, &answer);
    answer
}

#[tokio::test]
async fn the_verification_journey_answers_as_described() {
    let (server, tenant) = TestServer::with_tenant().await;
    let doc = openapi_doc(&server).await;
    let settings = server
        .get("/v1/settings/phone-verification", &tenant.key)
        .await
        .expect(200)
        .clone();
    assert_described(&doc, "get", "/v1/settings/phone-verification", &settings);
    let stored = server
        .put(
            "/v1/settings/phone-verification",
            &tenant.key,
            json!({"otp_expiry_minutes": 5, "rate_limits": {"send_otp": {"per_phone": {"per_minute": 9, "burst": 9}}}}),
        )
        .await
        .expect(200)
        .clone();
    assert_described(&doc, "put", "/v1/settings/phone-verification", &stored);
    for phone in [UZ_BEELINE, "+44740", "not a number"] {
        let answer = server
            .post("/v1/phone/validate", &tenant.key, json!({"phone": phone}))
            .await
            .expect(200)
            .clone();
        assert_described(&doc, "post", "/v1/phone/validate", &answer);
    }
    for phone in [UZ_BEELINE, UK_VOIP, UK_DISPOSABLE] {
        let answer = server
            .post(
                "/v1/phone/lookup",
                &tenant.key,
                json!({"phone": phone, "applicant_id": "a-1", "applicant_country": "GB"}),
            )
            .await
            .expect(200)
            .clone();
        assert_described(&doc, "post", "/v1/phone/lookup", &answer);
        // The check has teeth: an answer the description does not allow is caught.
        let schema = answer_schema(&doc, "post", "/v1/phone/lookup");
        let mut bent = answer.clone();
        bent["risk_assessment"]["risk_level"] = json!("extreme");
        assert!(!jsonschema::is_valid(&schema, &bent));
        bent = answer.clone();
        bent["carrier"] = json!(null);
        assert!(!jsonschema::is_valid(&schema, &bent));
    }
    let sent = server.send(&tenant, UZ_BEELINE, "a-1").await;
    assert_described(&doc, "post", "/v1/phone/send-otp", &sent);
    let id = sent["verification_id"].as_str().expect("id").to_owned();
    let code = server.latest_code(&tenant, UZ_BEELINE).await;
    let report = server.report(&tenant, &id).await;
    assert_described(&doc, "get", "/v1/verifications/{id}", &report);
    let wrong = server
        .verify(&tenant, UZ_BEELINE, "a-1", &wrong_code(&code))
        .await
        .expect(200)
        .clone();
    assert_described(&doc, "post", "/v1/phone/verify-otp", &wrong);
    let right = server
        .verify(&tenant, UZ_BEELINE, "a-1", &code)
        .await
        .expect(200)
        .clone();
    assert_described(&doc, "post", "/v1/phone/verify-otp", &right);
    let report = server.report(&tenant, &id).await;
    assert_eq!(report["phone"]["status"], "Approved");
    assert_described(&doc, "get", "/v1/verifications/{id}", &report);
}

#[tokio::test]
async fn feedback_audit_trail_outbox_and_spend_answer_as_described() {
    let (server, tenant) = TestServer::with_tenant().await;
    let doc = openapi_doc(&server).await;
    let key = tenant.key.as_str();
    // Settings that ask for what the tenant's plugins cannot give answer `notices`
    // beside the settings' fields.
    let stored = described(
        &server,
        &doc,
        Method::PUT,
        "/v1/settings/phone-verification",
        "/v1/settings/phone-verification",
        key,
        Some(json!({"sim_swap_check": true})),
        200,
    )
    .await;
    assert!(stored["notices"].as_array().is_some_and(|n| !n.is_empty()));
    let sent = server.send(&tenant, UZ_BEELINE, "a-1").await;
    let id = sent["verification_id"].as_str().expect("id").to_owned();
    let outbox = described(
        &server,
        &doc,
        Method::GET,
        "/v1/dev/outbox",
        &format!("/v1/dev/outbox?phone={}", encode(UZ_BEELINE)),
        key,
        None,
        200,
    )
    .await;
    let message_id = outbox["messages"][0]["id"].as_str().expect("message id");
    described(
        &server,
        &doc,
        Method::POST,
        "/v1/dev/outbox/{id}/delivery",
        &format!("/v1/dev/outbox/{message_id}/delivery"),
        key,
        Some(json!({"status": "delivered"})),
        200,
    )
    .await;
    let code = server.latest_code(&tenant, UZ_BEELINE).await;
    server
        .verify(&tenant, UZ_BEELINE, "a-1", &code)
        .await
        .expect(200);
    described(
        &server,
        &doc,
        Method::POST,
        "/v1/verifications/{id}/feedback",
        &format!("/v1/verifications/{id}/feedback"),
        key,
        Some(json!({"outcome": "verified"})),
        200,
    )
    .await;
    let trail = described(
        &server,
        &doc,
        Method::GET,
        "/v1/verifications/{id}/events",
        &format!("/v1/verifications/{id}/events"),
        key,
        None,
        200,
    )
    .await;
    assert!(trail["events"].as_array().is_some_and(|e| e.len() > 1));
    described(
        &server,
        &doc,
        Method::GET,
        "/v1/cases",
        "/v1/cases",
        key,
        None,
        200,
    )
    .await;
    described(
        &server,
        &doc,
        Method::GET,
        "/v1/spend",
        "/v1/spend",
        key,
        None,
        200,
    )
    .await;
    described(
        &server,
        &doc,
        Method::GET,
        "/v1/fraud/blocks",
        "/v1/fraud/blocks?status=all",
        key,
        None,
        200,
    )
    .await;
}

#[tokio::test]
async fn the_management_routes_answer_as_described() {
    let (server, tenant) = TestServer::with_tenant().await;
    let doc = openapi_doc(&server).await;
    let key = tenant.key.as_str();
    // A recorded verification, so the backtest's examples are checked too.
    server
        .send_and_verify(&tenant, &uz_number(7), "backtested")
        .await;
    let get = |template: &'static str, path: String, key: &'static str| {
        let (server, doc) = (&server, &doc);
        async move { described(server, doc, Method::GET, template, &path, key, None, 200).await }
    };

    // The operator's routes.
    let created = described(
        &server,
        &doc,
        Method::POST,
        "/v1/tenants",
        "/v1/tenants",
        OPERATOR_KEY,
        Some(json!({"name": "described"})),
        201,
    )
    .await;
    assert!(created["api_key"].is_string());
    let tenants = get("/v1/tenants", "/v1/tenants".into(), OPERATOR_KEY).await;
    assert!(tenants["tenants"][0].get("api_key").is_none());
    get(
        "/v1/admin/fraud/blocks",
        "/v1/admin/fraud/blocks".into(),
        OPERATOR_KEY,
    )
    .await;
    let runtime = get(
        "/v1/plugin-runtime",
        "/v1/plugin-runtime".into(),
        OPERATOR_KEY,
    )
    .await;
    assert!(runtime["builtins"]
        .as_array()
        .is_some_and(|b| !b.is_empty()));

    // Keys and the blocklist.
    described(
        &server,
        &doc,
        Method::POST,
        "/v1/keys",
        "/v1/keys",
        key,
        Some(json!({"name": "second"})),
        201,
    )
    .await;
    described(
        &server,
        &doc,
        Method::GET,
        "/v1/keys",
        "/v1/keys",
        key,
        None,
        200,
    )
    .await;
    described(
        &server,
        &doc,
        Method::POST,
        "/v1/blocklist",
        "/v1/blocklist",
        key,
        Some(json!({"phone": UK_VOIP, "reason": "abuse"})),
        201,
    )
    .await;
    described(
        &server,
        &doc,
        Method::GET,
        "/v1/blocklist",
        "/v1/blocklist",
        key,
        None,
        200,
    )
    .await;

    // Webhooks: the secret only on creation, a test delivery and the log.
    let hook = described(
        &server,
        &doc,
        Method::POST,
        "/v1/webhooks",
        "/v1/webhooks",
        key,
        Some(json!({"url": "http://127.0.0.1:9/hook", "event_types": ["*"]})),
        201,
    )
    .await;
    assert!(hook["secret"].is_string());
    let hook_id = hook["id"].as_str().expect("id").to_owned();
    described(
        &server,
        &doc,
        Method::GET,
        "/v1/webhooks",
        "/v1/webhooks",
        key,
        None,
        200,
    )
    .await;
    let one = described(
        &server,
        &doc,
        Method::GET,
        "/v1/webhooks/{id}",
        &format!("/v1/webhooks/{hook_id}"),
        key,
        None,
        200,
    )
    .await;
    assert!(one.get("secret").is_none());
    described(
        &server,
        &doc,
        Method::POST,
        "/v1/webhooks/{id}/test",
        &format!("/v1/webhooks/{hook_id}/test"),
        key,
        Some(json!({})),
        202,
    )
    .await;
    described(
        &server,
        &doc,
        Method::GET,
        "/v1/webhooks/{id}/deliveries",
        &format!("/v1/webhooks/{hook_id}/deliveries"),
        key,
        None,
        200,
    )
    .await;

    // Plugins: the catalogue, an adapter installed, its versions; providers over it.
    let catalogue = described(
        &server,
        &doc,
        Method::GET,
        "/v1/plugins/catalog",
        "/v1/plugins/catalog",
        key,
        None,
        200,
    )
    .await;
    assert!(catalogue["plugins"]
        .as_array()
        .is_some_and(|p| !p.is_empty()));
    let plugin = described(
        &server,
        &doc,
        Method::POST,
        "/v1/plugins/catalog/{name}",
        "/v1/plugins/catalog/http-sms",
        key,
        Some(json!({})),
        201,
    )
    .await;
    let plugin_id = plugin["id"].as_str().expect("id").to_owned();
    described(
        &server,
        &doc,
        Method::GET,
        "/v1/plugins",
        "/v1/plugins",
        key,
        None,
        200,
    )
    .await;
    let one = described(
        &server,
        &doc,
        Method::GET,
        "/v1/plugins/{id}",
        &format!("/v1/plugins/{plugin_id}"),
        key,
        None,
        200,
    )
    .await;
    assert!(one["storage"].is_object());
    described(
        &server,
        &doc,
        Method::GET,
        "/v1/plugins/{id}/versions",
        &format!("/v1/plugins/{plugin_id}/versions"),
        key,
        None,
        200,
    )
    .await;
    let provider = described(
        &server,
        &doc,
        Method::POST,
        "/v1/providers",
        "/v1/providers",
        key,
        Some(json!({
            "name": "twilio",
            "plugin": "http-sms",
            "sender_id": "+15005550006",
            "config": {"shape": "twilio", "base_url": "http://127.0.0.1:9", "account_sid": "AC42"},
            "secrets": {"auth_token": "twilio-secret"},
            "hosts": ["127.0.0.1:9"],
        })),
        201,
    )
    .await;
    let provider_id = provider["id"].as_str().expect("id").to_owned();
    described(
        &server,
        &doc,
        Method::GET,
        "/v1/providers",
        "/v1/providers",
        key,
        None,
        200,
    )
    .await;
    described(
        &server,
        &doc,
        Method::POST,
        "/v1/providers/{provider_id}/disable",
        &format!("/v1/providers/{provider_id}/disable"),
        key,
        Some(json!({})),
        200,
    )
    .await;
    described(
        &server,
        &doc,
        Method::GET,
        "/v1/routing",
        "/v1/routing",
        key,
        None,
        200,
    )
    .await;
    described(
        &server,
        &doc,
        Method::GET,
        "/v1/routing/stats",
        "/v1/routing/stats",
        key,
        None,
        200,
    )
    .await;
    let plan = described(
        &server,
        &doc,
        Method::POST,
        "/v1/routing/plan",
        "/v1/routing/plan",
        key,
        Some(json!({"phone": UZ_BEELINE})),
        200,
    )
    .await;
    assert_eq!(plan["considered"][0]["verdict"], "disabled");

    // Templates and brands.
    described(
        &server,
        &doc,
        Method::POST,
        "/v1/templates",
        "/v1/templates",
        key,
        Some(json!({"id": "login", "name": "Login", "variants": [
            {"locale": "en", "text": "Your code is {code}"},
        ]})),
        201,
    )
    .await;
    described(
        &server,
        &doc,
        Method::GET,
        "/v1/templates",
        "/v1/templates",
        key,
        None,
        200,
    )
    .await;
    described(
        &server,
        &doc,
        Method::POST,
        "/v1/brands",
        "/v1/brands",
        key,
        Some(json!({"id": "acme", "name": "Acme", "template_id": "login"})),
        201,
    )
    .await;
    described(
        &server,
        &doc,
        Method::GET,
        "/v1/brands",
        "/v1/brands",
        key,
        None,
        200,
    )
    .await;

    // Workflow rules and their test.
    let rule = json!({
        "rule_id": "flag_voip",
        "trigger": "phone_lookup_complete",
        "conditions": {"all": [{"field": "phone_type", "operator": "eq", "value": "voip"}]},
        "actions": [{"type": "add_flag", "flag": "voip"}],
        "description": "flags VoIP numbers",
    });
    described(
        &server,
        &doc,
        Method::POST,
        "/v1/workflows/rules",
        "/v1/workflows/rules",
        key,
        Some(rule),
        201,
    )
    .await;
    described(
        &server,
        &doc,
        Method::GET,
        "/v1/workflows/rules",
        "/v1/workflows/rules",
        key,
        None,
        200,
    )
    .await;
    let tested = described(
        &server,
        &doc,
        Method::POST,
        "/v1/workflows/rules/test",
        "/v1/workflows/rules/test",
        key,
        Some(json!({"phone": UK_VOIP})),
        200,
    )
    .await;
    assert_eq!(tested["matched"], json!(["flag_voip"]));
    let backtested = described(
        &server,
        &doc,
        Method::POST,
        "/v1/workflows/rules/backtest",
        "/v1/workflows/rules/backtest",
        key,
        Some(json!({"rules": [{
            "rule_id": "decline_all",
            "trigger": "phone_lookup_complete",
            "conditions": {"field": "phone_type", "operator": "exists"},
            "actions": [{"type": "decline", "reason": "closed"}],
        }]})),
        200,
    )
    .await;
    assert_eq!(
        backtested["examples"]["would_decline"][0]["responsible"][0]["rule"], "decline_all",
        "{backtested}"
    );

    // The check has teeth here too: a provider without its callback URL is refused.
    let schema = status_schema(&doc, "post", "/v1/providers", 201);
    let mut bent = provider.clone();
    bent.as_object_mut().expect("object").remove("callback_url");
    assert!(!jsonschema::is_valid(&schema, &bent));
}
