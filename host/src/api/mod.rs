//! The HTTP API: one router per area, merged in [`app`], over a shared [`Engine`].
//!
//! Handlers are thin: they extract and authenticate, call a flow, and render JSON.

mod admin;
mod analytics;
mod cases;
mod console;
pub mod error;
pub mod extract;
mod fraud;
pub mod observe;
mod phone;
mod plugins;
mod providers;
mod templates;
mod webhooks;
mod workflows;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;

use crate::flows::Engine;
use crate::store::Tree;

use self::error::ApiError;

/// The whole API over `engine`.
pub fn app(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(observe::metrics))
        .merge(phone::router())
        .merge(admin::router())
        .merge(plugins::router())
        .merge(workflows::router())
        .merge(cases::router())
        .merge(providers::router())
        .merge(templates::router())
        .merge(webhooks::router())
        .merge(fraud::router())
        .merge(analytics::router())
        .merge(console::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(CatchPanicLayer::custom(panicked))
        .layer(axum::middleware::map_response(json_errors))
        // Outermost, so it sees the answer as the client gets it.
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&engine),
            observe::observe,
        ))
        .with_state(engine)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the store answers a read.
async fn readyz(State(engine): State<Arc<Engine>>) -> Result<Json<serde_json::Value>, ApiError> {
    engine
        .db
        .get::<String>(Tree::Meta, b"operator_key_sha256")?;
    Ok(Json(json!({"status": "ready"})))
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        "no such endpoint; see the README for the API",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
}

/// Largest framework error text carried into a JSON error's message.
const MAX_FRAMEWORK_TEXT: usize = 300;

/// Puts an error the framework answered itself (an extractor's rejection: a bad path
/// segment, a body over a route's limit, a malformed multipart body) into the
/// documented shape `{"error": {"code", "message", "field"?}}`. Answers already in
/// JSON pass as they are; headers such as `Allow` and `Retry-After` are kept.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    let mut rendered = framework_error(status, &text).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rendered.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rendered
}

/// The JSON error for a framework answer with `status` and plain `text`.
fn framework_error(status: StatusCode, text: &str) -> ApiError {
    let mut said: String = text.trim().chars().take(MAX_FRAMEWORK_TEXT).collect();
    while said.ends_with('.') {
        said.pop();
    }
    if let Some(first) = said.chars().next() {
        said = first.to_lowercase().chain(said.chars().skip(1)).collect();
    }
    let or = |fallback: &str| {
        if said.is_empty() {
            fallback.to_owned()
        } else {
            said.clone()
        }
    };
    match status {
        StatusCode::BAD_REQUEST if text.starts_with("Invalid URL") => ApiError::new(
            status,
            "invalid_path",
            format!("a path segment is not valid: {said}"),
        )
        .with_field("path"),
        StatusCode::BAD_REQUEST => {
            ApiError::new(status, "bad_request", or("the request could not be read"))
        }
        StatusCode::NOT_FOUND => ApiError::new(status, "not_found", or("not found")),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            status,
            "method_not_allowed",
            "this endpoint does not accept that method",
        ),
        StatusCode::REQUEST_TIMEOUT => ApiError::new(
            status,
            "request_timeout",
            "the request was not received in time; send it again",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            "payload_too_large",
            "the request body is larger than this endpoint accepts",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            status,
            "unsupported_media_type",
            or("unsupported content type"),
        ),
        StatusCode::UNPROCESSABLE_ENTITY => {
            ApiError::new(status, "invalid_request", or("the request is not valid"))
        }
        StatusCode::TOO_MANY_REQUESTS => {
            ApiError::new(status, "rate_limited", or("too many requests; retry later"))
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            ApiError::new(status, "unavailable", or("the service is unavailable"))
        }
        status if status.is_server_error() => {
            if !said.is_empty() {
                tracing::error!(status = status.as_u16(), "framework error: {said}");
            }
            ApiError::new(status, "internal", "internal error; see the server log")
        }
        status => ApiError::new(status, "http_error", or("the request failed")),
    }
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; see the server log",
    )
    .into_response()
}
