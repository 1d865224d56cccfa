//! The one error type of the HTTP API: every failure renders as
//! `{"error": {"code", "message", "field"?}}` with the right status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::flows::FlowError;
use crate::phone::InvalidReason;

/// An API failure.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub reason: Option<InvalidReason>,
    pub retry_after_secs: Option<u64>,
}

/// The body of every error answer (`Error` in the OpenAPI description).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

/// What went wrong: a stable `code`, a human `message`, and the `field` at fault.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail<'a> {
    /// A stable, machine-readable code (`invalid_field`, `not_found`, `rate_limited`, …).
    code: &'a str,
    message: &'a str,
    /// The field, parameter or header at fault (`phone`, `variants[1].text`, `path`).
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    /// Why a phone number is invalid (`TOO_SHORT`, `TOO_LONG`, `INVALID_COUNTRY_CODE`,
    /// `NOT_A_NUMBER`, `INVALID_FOR_REGION`), on `invalid_phone_number` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    reason: Option<InvalidReason>,
}

/// The error answers operations list in the OpenAPI description, one per status, each
/// with the shared `Error` body ([`ErrorBody`]).
pub mod doc {
    // The types only carry the description: no answer is built from them.
    #![allow(dead_code)]

    use super::ErrorBody;

    /// 400: the body is not valid JSON, or the request could not be read.
    #[derive(utoipa::IntoResponses)]
    #[response(status = 400)]
    pub struct BadRequest(ErrorBody<'static>);

    /// 401: a missing, malformed, wrong or revoked key (or callback token).
    #[derive(utoipa::IntoResponses)]
    #[response(status = 401)]
    pub struct Unauthorized(ErrorBody<'static>);

    /// 404: no such resource for this caller.
    #[derive(utoipa::IntoResponses)]
    #[response(status = 404)]
    pub struct NotFound(ErrorBody<'static>);

    /// 409: the request conflicts with the resource's state (the code says how).
    #[derive(utoipa::IntoResponses)]
    #[response(status = 409)]
    pub struct Conflict(ErrorBody<'static>);

    /// 413: the body is larger than this endpoint accepts.
    #[derive(utoipa::IntoResponses)]
    #[response(status = 413)]
    pub struct TooLarge(ErrorBody<'static>);

    /// 415: the body is not of a type this endpoint accepts.
    #[derive(utoipa::IntoResponses)]
    #[response(status = 415)]
    pub struct UnsupportedMediaType(ErrorBody<'static>);

    /// 422: a field or parameter is missing or not valid; `field` names it.
    #[derive(utoipa::IntoResponses)]
    #[response(status = 422)]
    pub struct Invalid(ErrorBody<'static>);

    /// 429: a limit was reached; retry after `Retry-After` seconds.
    #[derive(utoipa::IntoResponses)]
    #[response(
        status = 429,
        headers(("Retry-After" = u64, description = "seconds to wait before retrying"))
    )]
    pub struct RateLimited(ErrorBody<'static>);

    /// 502: the tenant's provider or adapter failed.
    #[derive(utoipa::IntoResponses)]
    #[response(status = 502)]
    pub struct ProviderFailed(ErrorBody<'static>);

    /// 503: the store (or a needed service) is unavailable for now; retry shortly.
    #[derive(utoipa::IntoResponses)]
    #[response(status = 503)]
    pub struct Unavailable(ErrorBody<'static>);

    /// The errors of a JSON body: 400 malformed, 413 too large, 415 not JSON, 422 a
    /// field at fault.
    #[derive(utoipa::IntoResponses)]
    pub enum JsonBody {
        /// The body is not valid JSON.
        #[response(status = 400)]
        Malformed(ErrorBody<'static>),
        /// The body is larger than this endpoint accepts.
        #[response(status = 413)]
        TooLarge(ErrorBody<'static>),
        /// The body is declared as something other than JSON.
        #[response(status = 415)]
        NotJson(ErrorBody<'static>),
        /// A field is missing, unknown or not valid; `field` names it.
        #[response(status = 422)]
        Invalid(ErrorBody<'static>),
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            reason: None,
            retry_after_secs: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("{field}: {message}"),
        )
        .with_field(field)
    }
}

impl From<FlowError> for ApiError {
    fn from(err: FlowError) -> Self {
        let message = err.to_string();
        match err {
            FlowError::InvalidPhone { field, reason } => Self {
                reason: Some(reason),
                ..Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_phone_number",
                    message,
                )
                .with_field(field)
            },
            FlowError::Invalid { field, .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
                    .with_field(field)
            }
            FlowError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            FlowError::Conflict { code, .. } => Self::new(StatusCode::CONFLICT, code, message),
            FlowError::RateLimited {
                code,
                retry_after_secs,
                ..
            } => Self {
                retry_after_secs: Some(retry_after_secs),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, message)
            },
            FlowError::Provider(_) => {
                Self::new(StatusCode::BAD_GATEWAY, "provider_failed", message)
            }
            FlowError::Unavailable(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            FlowError::Store(crate::store::StoreError::Unavailable(err)) => {
                tracing::warn!(error = %err, "storage unavailable");
                Self {
                    retry_after_secs: Some(1),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "store_unavailable",
                        "the store is unavailable for now; retry shortly",
                    )
                }
            }
            FlowError::Store(err) => {
                tracing::error!(error = %err, "storage failure");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal storage error; see the server log",
                )
            }
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        FlowError::Store(err).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
                reason: self.reason,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}
