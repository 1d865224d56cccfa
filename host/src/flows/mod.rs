//! The verification flows: lookup, send-otp, verify-otp, reports, and the tenant
//! administration they rest on. This is where the pure domain (`phone`, `otp`,
//! `warnings`) meets storage, providers and the trigger seam.

mod admin;
mod analysis;
mod idempotency;
mod lookup;
mod report;
mod send;
pub mod triggers;
mod verify;

use std::sync::Arc;

use crate::clock::Clock;
use crate::disposable::DisposableList;
use crate::limits::Buckets;
use crate::otp::CodeHasher;
use crate::phone::InvalidReason;
use crate::providers::{DevOutbox, Provider};
use crate::settings::PhoneSettings;
use crate::store::{key, Db, StoreError, Tree};

pub use admin::{BlockRequest, CreatedKey, KeyView, OperatorKey, TenantView};
pub use idempotency::IdempotencyKey;
pub use lookup::{LookupRequest, ValidateRequest};
pub use send::SendRequest;
pub use triggers::{AuditTrail, Trigger, TriggerEvent, TriggerHooks};
pub use verify::VerifyRequest;

/// Everything the flows need, shared by all requests.
pub struct Engine {
    pub db: Db,
    pub clock: Arc<dyn Clock>,
    pub hasher: CodeHasher,
    /// The provider that delivers codes; `None` when none is configured.
    pub provider: Option<Arc<dyn Provider>>,
    /// The dev outbox when it is enabled (development mode).
    pub outbox: Option<DevOutbox>,
    pub hooks: Arc<dyn TriggerHooks>,
    pub limits: Buckets,
    pub disposable: DisposableList,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

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

/// Caller context that flows need beyond the request body.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant_id: String,
    /// The end user's IP: the request's `client_ip` if given, else the peer address.
    pub client_ip: String,
}

impl Engine {
    /// The tenant's settings, or the defaults when the tenant never saved any.
    pub fn settings(&self, tenant_id: &str) -> Result<PhoneSettings, StoreError> {
        Ok(self
            .db
            .get(Tree::Settings, tenant_id.as_bytes())?
            .unwrap_or_default())
    }

    /// Validates and stores the tenant's settings.
    pub async fn put_settings(
        &self,
        tenant_id: &str,
        settings: PhoneSettings,
    ) -> Result<PhoneSettings, FlowError> {
        settings
            .validate()
            .map_err(|err| FlowError::invalid(err.field, err.message))?;
        self.db
            .put(Tree::Settings, tenant_id.as_bytes(), &settings)?;
        self.db.sync().await?;
        Ok(settings)
    }

    fn id() -> String {
        uuid::Uuid::new_v4().to_string()
    }

    fn verification_key(tenant_id: &str, id: &str) -> Vec<u8> {
        key(&[tenant_id, id])
    }
}
