//! `GET /openapi.json` on the real server: served without a key, OpenAPI 3.1, and every
//! operation it describes is routed (the server neither answers `route_not_found` nor
//! 405 for it).

use reqwest::Method;
use serde_json::Value;

use crate::support::TestServer;

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
