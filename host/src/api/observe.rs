//! Observing requests: the request id, the span every request's logs nest under, one
//! log line per request, the HTTP metrics, and `GET /metrics`.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::flows::Engine;
use crate::metrics::UNMATCHED;

use super::extract::OperatorCaller;

/// The header a request id comes in and goes back out in.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest request id taken from a client.
pub const MAX_REQUEST_ID: usize = 64;

/// The tenant a request was authenticated as, set by the credential extractor, for
/// the request's log line.
#[derive(Debug, Clone, Default)]
pub struct RequestTenant(Arc<OnceLock<String>>);

impl RequestTenant {
    /// Notes the request's tenant (once), on its log line and its span.
    pub fn set(&self, tenant_id: &str) {
        if self.0.set(tenant_id.to_owned()).is_ok() {
            tracing::Span::current().record("tenant_id", tenant_id);
        }
    }
}

/// The client's request id when it is 1 to [`MAX_REQUEST_ID`] characters of
/// `[A-Za-z0-9._-]`; anything else is replaced.
fn given_id(value: &HeaderValue) -> Option<String> {
    let bytes = value.as_bytes();
    let valid = (1..=MAX_REQUEST_ID).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    valid.then(|| String::from_utf8_lossy(bytes).into_owned())
}

/// Wraps every request: takes or makes its id, runs it in its span, counts it by its
/// route's template (never its raw path), logs one line, and echoes the id.
pub async fn observe(
    State(engine): State<Arc<Engine>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(given_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let shown_route = route.as_deref().unwrap_or(UNMATCHED);
    let tenant = RequestTenant::default();
    request.extensions_mut().insert(tenant.clone());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %method,
        route = shown_route,
        tenant_id = tracing::field::Empty,
    );
    let mut response = next.run(request).instrument(span).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    engine
        .metrics
        .http_request(method.as_str(), route.as_deref(), status, took);
    tracing::info!(
        request_id = %id,
        method = %method,
        route = shown_route,
        status,
        latency_ms = took.as_secs_f64() * 1e3,
        tenant_id = tenant.0.get().map(String::as_str),
        "request"
    );
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// `GET /metrics`: every series in the OpenMetrics text format, for the operator.
#[utoipa::path(get, path = "/metrics", tag = "health",
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "the process's metrics in the OpenMetrics text format",
            content_type = "application/openmetrics-text", body = String),
        crate::api::error::doc::Unauthorized,
    ))]
pub async fn metrics(_: OperatorCaller, State(engine): State<Arc<Engine>>) -> Response {
    let text = engine
        .metrics
        .encode(|gauges| engine.refresh_gauges(gauges));
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_checked() {
        let id = |text: &str| given_id(&HeaderValue::from_str(text).expect("a header value"));
        assert_eq!(id("abc-DEF_1.2").as_deref(), Some("abc-DEF_1.2"));
        assert_eq!(id(&"a".repeat(64)).map(|id| id.len()), Some(64));
        assert_eq!(id(&"a".repeat(65)), None);
        assert_eq!(id(""), None);
        assert_eq!(id("a b"), None);
        assert_eq!(id("a/b"), None);
        assert_eq!(id("ünï"), None);
    }
}
