//! The HTTP API: one router per area, merged in [`app`], over a shared [`Engine`].
//!
//! Handlers are thin: they extract and authenticate, call a flow, and render JSON.

mod admin;
mod cases;
pub mod error;
pub mod extract;
mod phone;
mod plugins;
mod providers;
mod workflows;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
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
        .merge(phone::router())
        .merge(admin::router())
        .merge(plugins::router())
        .merge(workflows::router())
        .merge(cases::router())
        .merge(providers::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(CatchPanicLayer::custom(panicked))
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

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; see the server log",
    )
    .into_response()
}
