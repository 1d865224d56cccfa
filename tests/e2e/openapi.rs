//! `GET /openapi.json` on the real server: served without a key, OpenAPI 3.1, and every
//! operation it describes is routed (the server neither answers `route_not_found` nor
//! 405 for it). The answers of the verification journey (validate, lookup, send, check,
//! report) and of the settings routes match the schemas the description gives them.

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
fn answer_schema(doc: &Value, method: &str, path: &str) -> Value {
    let schema =
        &doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} describes no JSON answer"
    );
    let mut schema = schema.clone();
    schema["components"] = doc["components"].clone();
    schema
}

/// Checks `answer` against the schema of `method` `path` in `doc`, naming every
/// mismatch; and that the schema says more than "an object".
fn assert_described(doc: &Value, method: &str, path: &str, answer: &Value) {
    let schema = answer_schema(doc, method, path);
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

#[tokio::test]
async fn the_verification_journey_answers_as_described() {
    let (server, tenant) = TestServer::with_tenant().await;
    let doc = server
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .expect(200)
        .clone();
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
