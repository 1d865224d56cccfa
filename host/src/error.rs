//! The error of the flows and of the domain modules they use (workflows, webhooks,
//! templates): what went wrong, in terms the API layer maps to an HTTP answer. A leaf,
//! so that domain modules can answer with it without depending on the flows.

use crate::phone::InvalidReason;
use crate::store::StoreError;

/// A flow's failure, mapped to an HTTP answer by the API layer.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("{field}: {}", reason.describe())]
    InvalidPhone {
        field: &'static str,
        reason: InvalidReason,
    },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{message}")]
    RateLimited {
        code: &'static str,
        message: String,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    Provider(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl FlowError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        FlowError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}
