//! Tests of the OpenAPI description: it is 3.1, every operation has its answers and
//! security, the README's API table and the description name the same routes, every
//! JSON answer but three names its fields, and every schema it refers to is defined.

use std::collections::BTreeSet;

/// `(METHOD, path)` of every operation in the description.
fn described() -> BTreeSet<(String, String)> {
    let doc = super::openapi();
    let json = serde_json::to_value(&doc).expect("the description serialises");
    let mut out = BTreeSet::new();
    for (path, item) in json["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            if matches!(
                method.as_str(),
                "get" | "put" | "post" | "delete" | "patch" | "head" | "options"
            ) {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// `(METHOD, path)` of every route the README's API table names: a cell lists
/// `` `METHOD /path` `` entries, `` `GET`/`PUT /path` `` for two methods on one path,
/// and `` `…/last` `` for a sibling of the previous path.
fn readme_routes() -> BTreeSet<(String, String)> {
    let readme = include_str!("../../../README.md");
    let table = readme
        .split("\n## API\n")
        .nth(1)
        .expect("the README has an API section");
    let methods = ["GET", "POST", "PUT", "PATCH", "DELETE"];
    let mut out = BTreeSet::new();
    for line in table.lines().skip_while(|line| !line.starts_with('|')) {
        if !line.starts_with('|') {
            break;
        }
        let Some(cell) = line.split(" | ").next() else {
            continue;
        };
        let mut pending: Vec<String> = Vec::new();
        let mut last_path = String::new();
        let mut last_methods: Vec<String> = Vec::new();
        for (at, token) in cell.split('`').enumerate() {
            if at % 2 == 0 {
                continue;
            }
            let token = token.trim();
            if methods.contains(&token) {
                pending.push(token.to_owned());
                continue;
            }
            let (method, rest) = match token.split_once(' ') {
                Some((method, rest)) if methods.contains(&method) => (Some(method), rest),
                _ => (None, token),
            };
            let path = if let Some(tail) = rest.strip_prefix('…') {
                let parent = last_path.rsplit_once('/').map_or("", |(head, _)| head);
                format!("{parent}{tail}")
            } else if rest.starts_with('/') {
                rest.to_owned()
            } else {
                continue;
            };
            let path = path.split('?').next().unwrap_or_default().to_owned();
            let mut these = std::mem::take(&mut pending);
            match method {
                Some(method) => these.push(method.to_owned()),
                None if these.is_empty() => these = last_methods.clone(),
                None => {}
            }
            for method in &these {
                out.insert((method.clone(), path.clone()));
            }
            last_path = path;
            last_methods = these;
        }
    }
    out
}

#[test]
fn every_route_is_described_and_in_the_readme() {
    let described = described();
    let mut readme = readme_routes();
    // Routes the README names outside its table.
    readme.insert(("GET".into(), "/openapi.json".into()));
    // The web console is a page, not part of the API it describes.
    readme.retain(|(_, path)| !path.starts_with("/console"));
    let undocumented: Vec<_> = readme.difference(&described).collect();
    let unlisted: Vec<_> = described.difference(&readme).collect();
    assert!(
        undocumented.is_empty() && unlisted.is_empty(),
        "README routes missing from the description: {undocumented:?}; \
         described routes missing from the README's API table: {unlisted:?}"
    );
    assert!(described.len() >= 75, "{} operations", described.len());
}

#[test]
fn every_operation_has_answers_errors_and_security() {
    let doc = super::openapi();
    assert_eq!(
        serde_json::to_value(&doc.openapi).expect("version"),
        "3.1.0"
    );
    let schemes = &doc
        .components
        .as_ref()
        .expect("components")
        .security_schemes;
    assert!(schemes.contains_key("tenant_key") && schemes.contains_key("operator_key"));
    for (path, item) in &doc.paths.paths {
        for (method, operation) in [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
        ] {
            let Some(operation) = operation else { continue };
            let codes: Vec<&String> = operation.responses.responses.keys().collect();
            assert!(
                codes.iter().any(|code| code.starts_with('2')),
                "{method} {path}: no success answer"
            );
            let public = ["/healthz", "/readyz", "/openapi.json"].contains(&path.as_str())
                || path.starts_with("/v1/callbacks/");
            if !public {
                assert!(
                    operation.security.as_ref().is_some_and(|s| !s.is_empty()),
                    "{method} {path}: no security"
                );
                assert!(
                    codes.iter().any(|code| *code == "401"),
                    "{method} {path}: no 401"
                );
            }
            if operation.request_body.is_some() && !path.starts_with("/v1/callbacks/") {
                for code in ["400", "413", "415", "422"] {
                    assert!(
                        codes.iter().any(|c| *c == code),
                        "{method} {path}: a body but no {code}"
                    );
                }
            }
            for segment in path.split('/').filter(|s| s.starts_with('{')) {
                let name = segment.trim_matches(|c| c == '{' || c == '}');
                let declared = operation.parameters.iter().flatten().any(|parameter| {
                    serde_json::to_value(parameter).expect("a parameter")["name"] == name
                });
                assert!(declared, "{method} {path}: {name} is not a parameter");
            }
        }
    }
}

/// Success answers described only as "an object": the description itself and two
/// catalogues the answer is built for as JSON (`webhooks::catalogue`,
/// `workflows::catalogue`). Every other JSON answer names its fields.
const LOOSE_ANSWERS: [(&str, &str); 3] = [
    ("get", "/openapi.json"),
    ("get", "/v1/webhooks/events"),
    ("get", "/v1/workflows/fields"),
];

#[test]
fn every_json_answer_is_described_field_by_field() {
    let doc = serde_json::to_value(super::openapi()).expect("the description serialises");
    let schemas = &doc["components"]["schemas"];
    let mut loose = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            let Some(responses) = operation["responses"].as_object() else {
                continue;
            };
            for (status, response) in responses {
                let schema = &response["content"]["application/json"]["schema"];
                if !status.starts_with('2') || schema.is_null() {
                    continue;
                }
                let named = schema["$ref"]
                    .as_str()
                    .and_then(|at| at.strip_prefix("#/components/schemas/"));
                match named {
                    Some(name) => {
                        let target = &schemas[name];
                        assert!(
                            target["properties"].is_object() || target["allOf"].is_array(),
                            "{method} {path} {status}: {name} names no fields: {target}"
                        );
                    }
                    None => loose.push((method.clone(), path.clone())),
                }
            }
        }
    }
    let expected: Vec<(String, String)> = LOOSE_ANSWERS
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    loose.sort();
    assert_eq!(loose, expected, "answers described only as an object");
}

#[test]
fn every_reference_resolves() {
    let doc = serde_json::to_value(super::openapi()).expect("the description serialises");
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap_or_default();
        assert!(
            schemas.contains_key(name),
            "{name} is referenced, not defined"
        );
    }
}
