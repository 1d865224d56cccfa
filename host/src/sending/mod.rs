//! The host's own sending seam: a [`Sender`] delivers code messages for a tenant that
//! has no providers or messaging adapters of its own.
//!
//! The flows hand an [`OutboundMessage`] to a [`Sender`] and record the [`Dispatch`]
//! it returns. The built-in sender is the dev outbox; load tests plug in their own.
//! "Provider" names only a tenant's stored providers (`flows/messaging/providers.rs`,
//! `api/providers.rs`); the name a [`Dispatch`] or [`SendError`] carries is whoever
//! took the message.

mod outbox;

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::Channel;

pub use outbox::{outbox_bound, outbox_number_key, DevOutbox, OutboxMessage};

/// A code message ready to send.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    pub tenant_id: String,
    pub verification_id: String,
    pub phone: String,
    pub channel: Channel,
    pub language: String,
    pub body: String,
    /// The code itself; only development providers may keep it.
    pub code: String,
    pub created_at: DateTime<Utc>,
}

/// A provider's acknowledgement of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dispatch {
    pub provider: String,
    pub message_id: String,
    /// Whether it went through the tenant's providers, which keep a message record
    /// (receipts, expiry) under `message_id`.
    #[serde(default)]
    pub routed: bool,
    /// What the message cost: the provider's `cost_per_message` for a routed send, 0
    /// otherwise (the host's own sender and adapters without a provider record).
    #[serde(default)]
    pub cost: f64,
}

/// Why a provider could not take a message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("provider {provider} could not send: {message}")]
pub struct SendError {
    pub provider: String,
    pub message: String,
    /// Set when the failure was this host's own store's (the dev outbox keeps its
    /// messages there), not the provider's: the request answers as the store does.
    pub store: Option<crate::store::StoreError>,
}

/// A boxed future, so senders can be trait objects.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<Dispatch, SendError>> + Send + 'a>>;

/// Something that delivers code messages.
pub trait Sender: Send + Sync + 'static {
    /// A stable name for reports and logs.
    fn name(&self) -> &str;
    /// Hands `message` over for delivery.
    fn send(&self, message: OutboundMessage) -> SendFuture<'_>;
}
