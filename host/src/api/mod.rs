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
#[cfg(test)]
mod openapi_tests;
mod phone;
mod plugins;
mod providers;
mod templates;
mod webhooks;
mod workflows;

use std::sync::{Arc, LazyLock};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::flows::Engine;
use crate::store::Tree;

use self::error::doc::Unavailable;
use self::error::ApiError;

/// The description's root: what no handler says (title, security schemes, the shared
/// error schema). Every path comes from the handlers' `#[utoipa::path]`.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Dialgate",
        description = "Phone validation and lookup, one-time codes, verification reports, \
            rules, providers, templates and webhooks. Errors are \
            `{\"error\": {\"code\", \"message\", \"field\"?}}`; see the README."
    ),
    components(schemas(error::ErrorBody)),
    modifiers(&Security)
)]
struct ApiDoc;

/// The two bearer credentials: a tenant's API key and the operator key.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, what) in [
            ("tenant_key", "a tenant's API key (`dg_…`)"),
            ("operator_key", "the operator key (`dgop_…`)"),
        ] {
            let mut scheme = Http::new(HttpAuthScheme::Bearer);
            scheme.description = Some(what.to_owned());
            components.add_security_scheme(name, SecurityScheme::Http(scheme));
        }
    }
}

/// Every route with its description: the routers register each handler through
/// `routes!`, which takes the path and methods from the handler's `#[utoipa::path]`,
/// so a route cannot be served without being described.
fn routes() -> (Router<Arc<Engine>>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(observe::metrics))
        .routes(routes!(openapi_json))
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
        .split_for_parts()
}

/// The OpenAPI 3.1 description of the whole API, as `GET /openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().1
}

/// The description rendered once.
static OPENAPI_JSON: LazyLock<String> = LazyLock::new(|| {
    openapi()
        .to_json()
        .expect("the OpenAPI description renders as JSON")
});

/// The whole API over `engine`.
pub fn app(engine: Arc<Engine>) -> Router {
    routes()
        .0
        // The console's page and assets are not part of the API's description.
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

/// Renders `answer`, a typed answer whose schema the description gives, through
/// `serde_json::Value` as the `json!` answers it replaced were: every object's keys
/// come out sorted, so what the route answers is unchanged byte for byte.
fn as_value<T: serde::Serialize>(answer: &T) -> Result<Json<serde_json::Value>, ApiError> {
    serde_json::to_value(answer).map(Json).map_err(|err| {
        tracing::error!(error = %err, "an answer could not be rendered as JSON");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the answer could not be rendered; see the server log",
        )
    })
}

/// The status of a liveness or readiness probe.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Status {
    /// `ok` (live) or `ready` (the store answers).
    status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "the process is live", body = Status)))]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the store answers a read.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "the store answers", body = Status), Unavailable))]
async fn readyz(State(engine): State<Arc<Engine>>) -> Result<Json<serde_json::Value>, ApiError> {
    engine
        .db
        .get::<String>(Tree::Meta, b"operator_key_sha256")?;
    Ok(Json(json!({"status": "ready"})))
}

/// This description: every route, its parameters, bodies and answers (OpenAPI 3.1).
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "the OpenAPI 3.1 document", body = Object)))]
async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        OPENAPI_JSON.as_str(),
    )
        .into_response()
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
