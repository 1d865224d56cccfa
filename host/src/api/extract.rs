//! Request extractors that fail with [`ApiError`]: JSON bodies, query strings, and the
//! two kinds of bearer credential (tenant API key, operator key).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::flows::{Caller, Engine};

use super::error::ApiError;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON body; malformed JSON is 400, a wrong or missing field 422 naming it, too large 413.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        check_json_type(&req)?;
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// An optional JSON body: an empty one is `None`; any other must be JSON like
/// [`ApiJson`]'s (415 for another type, 400 malformed, 422 naming the field, 413).
#[derive(Debug)]
pub struct OptionalJson<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let type_error = check_json_type(&req).err();
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        if let Some(error) = type_error {
            return Err(error);
        }
        parse_json(&bytes).map(|value| OptionalJson(Some(value)))
    }
}

/// Refuses a body declared as anything but JSON (an undeclared one is read as JSON).
fn check_json_type(req: &Request) -> Result<(), ApiError> {
    let Some(content_type) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let json = content_type
        .to_str()
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false);
    if json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON (Content-Type: application/json)",
        ))
    }
}

/// The whole body, within the route's limit.
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than the limit of {BODY_LIMIT} bytes"),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                rejection.body_text(),
            )
        }
    })
}

/// Parses JSON, naming the offending field on a type error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "the request body is empty; send a JSON object",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {inner}"),
            );
        }
        // The parser stops at the first field it cannot use; a document that is broken
        // further on (truncated, trailing data) is still malformed, not a field error.
        if let Err(syntax) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {syntax}"),
            );
        }
        let text = inner.to_string();
        // The position refers to the parsed document, which the client may not have sent
        // verbatim (settings are merged first); the field path says where.
        let message = text
            .rsplit_once(" at line ")
            .map_or(text.as_str(), |(head, _)| head)
            .to_owned();
        let field = field_of(&path, &message);
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("{field}: {message}"),
        )
        .with_field(field)
    })?;
    deserializer.end().map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("trailing data after the JSON body: {err}"),
        )
    })?;
    Ok(value)
}

/// The field a deserialisation error is about: its path, or for a missing or unknown
/// field, the name serde quotes in backticks.
fn field_of(path: &str, message: &str) -> String {
    let quoted = message
        .split('`')
        .nth(1)
        .filter(|_| message.starts_with("missing field") || message.starts_with("unknown field"));
    match (path, quoted) {
        (".", Some(name)) => name.to_owned(),
        (prefix, Some(name)) if message.starts_with("missing field") => format!("{prefix}.{name}"),
        (".", None) => "body".to_owned(),
        (path, Some(name)) if message.starts_with("unknown field") && !path.ends_with(name) => {
            format!("{path}.{name}")
        }
        (path, _) => path.to_owned(),
    }
}

/// A query string decoded into `T`; a bad parameter is 422 naming it.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

/// The first parameter of a raw query string whose value begins with a literal `+`
/// and a digit: a number in E.164 form sent without encoding its `+`, which a query
/// string decodes as a space.
fn unencoded_plus(query: &str) -> Option<&str> {
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        let mut chars = value.chars();
        (chars.next() == Some('+') && chars.next().is_some_and(|c| c.is_ascii_digit()))
            .then_some(name)
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        if let Some(name) = unencoded_plus(query) {
            return Err(ApiError::invalid(
                name,
                format!(
                    "a `+` in a query string reads as a space: send the number's `+` as %2B \
                     ({name}=%2B14155552671), or let the client encode it \
                     (curl -G --data-urlencode '{name}=+14155552671')"
                ),
            ));
        }
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(ApiQuery)
            .map_err(|err| {
                let path = err.path().to_string();
                ApiError::invalid(
                    if path == "." {
                        "query".to_owned()
                    } else {
                        path
                    },
                    err.into_inner().to_string(),
                )
            })
    }
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("missing Authorization header; send Authorization: Bearer <api key>")
    })?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
    let (scheme, token) = value.split_once(' ').ok_or_else(|| {
        ApiError::unauthorized("the Authorization header must be \"Bearer <api key>\"")
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::unauthorized(
            "the Authorization header must be \"Bearer <api key>\"",
        ));
    }
    Ok(token.trim())
}

fn peer_ip(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip().to_string())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A request authenticated with a tenant API key.
#[derive(Debug)]
pub struct TenantCaller(pub Caller);

impl FromRequestParts<Arc<Engine>> for TenantCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        engine: &Arc<Engine>,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        let record = engine
            .tenant_for_key(token)?
            .ok_or_else(|| ApiError::unauthorized("the API key is not valid or was revoked"))?;
        if let Some(tenant) = parts.extensions.get::<super::observe::RequestTenant>() {
            tenant.set(&record.tenant_id);
        }
        Ok(TenantCaller(Caller {
            tenant_id: record.tenant_id,
            client_ip: peer_ip(parts),
        }))
    }
}

/// A request authenticated with a tenant API key that changes the tenant's
/// configuration (keys, settings, blocklist, plugins, rules, providers, templates,
/// webhooks): admitted only within the tenant's budget of such changes
/// ([`Engine::admit_change`]), so one tenant's stream of changes cannot flood the
/// change log every replica reads.
#[derive(Debug)]
pub struct TenantChange(pub Caller);

impl FromRequestParts<Arc<Engine>> for TenantChange {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        engine: &Arc<Engine>,
    ) -> Result<Self, Self::Rejection> {
        let TenantCaller(caller) = TenantCaller::from_request_parts(parts, engine).await?;
        engine.admit_change(&caller.tenant_id)?;
        Ok(TenantChange(caller))
    }
}

/// A request authenticated with the operator key.
#[derive(Debug)]
pub struct OperatorCaller;

impl FromRequestParts<Arc<Engine>> for OperatorCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        engine: &Arc<Engine>,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        if engine.is_operator(token)? {
            Ok(OperatorCaller)
        } else {
            Err(ApiError::unauthorized(
                "this endpoint needs the operator key",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        phone: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        n: u8,
    }

    fn field(json: &str) -> (StatusCode, Option<String>) {
        let err = parse_json::<Body>(json.as_bytes()).expect_err("invalid");
        (err.status, err.field)
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            field("{}"),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("phone".into()))
        );
        assert_eq!(
            field(r#"{"phone": 5}"#),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("phone".into()))
        );
        assert_eq!(
            field(r#"{"phone": "x", "inner": {"n": 300}}"#),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("inner.n".into()))
        );
        assert_eq!(
            field(r#"{"phone": "x", "extra": 1}"#),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("extra".into()))
        );
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        assert_eq!(field(r#"{"phone": "#).0, StatusCode::BAD_REQUEST);
        assert_eq!(field("").0, StatusCode::BAD_REQUEST);
        assert_eq!(
            field(r#"{"phone": "x"} trailing"#).0,
            StatusCode::BAD_REQUEST
        );
        // A field error early in a document that breaks further on is still malformed.
        assert_eq!(field(r#"{"phone": 5, "#).0, StatusCode::BAD_REQUEST);
        assert_eq!(
            field(r#"{"inner": {"n": 1}} trailing"#).0,
            StatusCode::BAD_REQUEST
        );
    }
}
