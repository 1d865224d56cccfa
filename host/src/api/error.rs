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

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<InvalidReason>,
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
        let body = Body {
            error: Inner {
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
