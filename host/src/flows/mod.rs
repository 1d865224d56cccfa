//! The flows: where the pure domain (`phone`, `otp`, `warnings`, `templates`,
//! `workflows`) meets the store, the senders and the plugins. One room per domain,
//! each adding its methods to [`Engine`]; this file is only the wiring.
//!
//! - `verification/`: send, verify, the report, the analysis they share, idempotency;
//! - `lookup`: validate and look up a number;
//! - `rules/`: firing triggers (rules and their actions) and declarative rules;
//! - `review`: cases and review decisions;
//! - `messaging/`: stored providers and routing, routed sends, dispatch, delivery
//!   receipts, brands and templates;
//! - `webhooks/`: emitting events, subscriptions, the delivery worker;
//! - `jobs`: the durable scheduler and its worker;
//! - `tenancy`: tenants, keys, the operator credential, settings, blocklists;
//! - `caches`: what a replica keeps in memory of the store, and the change log;
//! - `pumping`: the SMS-pumping detector's counts, blocks and their API;
//! - `observe`: what a metrics scrape reads from the engine (breakers, webhook backlog).

pub mod alerts;
pub mod analytics;
pub mod caches;
pub mod jobs;
pub mod line_checks;
mod lookup;
pub mod messaging;
mod observe;
pub mod pumping;
pub mod retention;
mod review;
pub mod rules;
pub mod spend;
mod tenancy;
pub mod verification;
pub mod webhooks;

use std::sync::Arc;

use crate::clock::Clock;
use crate::disposable::DisposableList;
use crate::limits::Buckets;
use crate::otp::CodeHasher;
use crate::sending::{DevOutbox, Sender};

use crate::store::{key, Db};
pub use caches::Caches;

pub use crate::error::FlowError;
pub use lookup::{LookupRequest, LookupResponse, ValidateRequest, ValidateResponse};
pub use messaging::delivery::DeliveryRequest;
pub use messaging::dispatch::{CallbackError, MAX_CALLBACK_BYTES};
pub use review::{CasePatch, CaseQuery, ReviewRequest};
pub use rules::triggers::{Fired, Firing, Trigger};
pub use tenancy::{BlockRequest, CreatedKey, KeyView, OperatorKey, TenantView};
pub use verification::idempotency::IdempotencyKey;
pub use verification::send::SendRequest;
pub use verification::verify::VerifyRequest;

/// Everything the flows need, shared by all requests. The truth is in `db` (and, on a
/// shared store, the rate-limit buckets `limits` keep there); what this process keeps
/// for itself is in `replica`.
pub struct Engine {
    pub db: Db,
    pub clock: Arc<dyn Clock>,
    pub hasher: CodeHasher,
    /// The host's own sender of codes (the dev outbox, or a test's); `None` when
    /// none is configured, and tenants send through their providers and adapters.
    pub sender: Option<Arc<dyn Sender>>,
    /// The dev outbox when it is enabled (development mode).
    pub outbox: Option<DevOutbox>,
    /// The tenants' plugins: rules run at the triggers, adapters enrich lookups.
    pub plugins: Arc<crate::plugins::registry::Registry>,
    pub limits: Buckets,
    pub disposable: DisposableList,
    /// What this process keeps for itself.
    pub replica: Replica,
    /// The change log replicas of a shared store keep their caches current by; `None`
    /// on the embedded store, which one process owns.
    pub changes: Option<Arc<crate::changes::ChangeLog>>,
    /// This process's metrics (`GET /metrics`); the store, the plugin runtime and the
    /// rate limits record into the same.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// State this process keeps for itself, beside the store that is the truth: caches of
/// stored records (kept current by the change log on a shared store), routing's
/// statistics and circuit breakers, and the wake-ups of this process's workers. On a
/// shared store every replica has its own; none of it is ever the only copy of anything
/// acknowledged, so a replica that dies loses nothing by losing it.
pub struct Replica {
    /// Read-through caches of hot, rarely changed records.
    pub caches: Caches,
    /// Providers, routing policies, and what routing learnt about each provider.
    pub routing: messaging::providers::RoutingState,
    /// The base URL providers reach this server at (set once the listener is bound).
    pub public_url: std::sync::OnceLock<String>,
    /// Wakes the scheduled-jobs worker when a job is stored.
    pub jobs_wake: tokio::sync::Notify,
    /// When the earliest scheduled job is due (ms since the epoch), as far as the
    /// worker knows: `i64::MIN` means "look", `i64::MAX` "nothing scheduled".
    pub jobs_next_due: std::sync::atomic::AtomicI64,
    /// Wakes the webhook delivery worker.
    pub webhooks: crate::webhooks::Hub,
    /// The SMS-pumping detector's counts (unflushed ones for at most a flush
    /// interval) and the tenants' blocks.
    pub pumping: pumping::Ledger,
    /// Conversion analytics' counts not yet merged into the store (a second's worth).
    pub analytics: analytics::Ledger,
    /// Rule statistics not yet merged into the store (a second's worth).
    pub rule_stats: rules::stats::RuleLedger,
    /// The tenants with a backtest running here.
    pub backtests: rules::backtest::Running,
}

impl Default for Replica {
    fn default() -> Self {
        Self {
            caches: Caches::default(),
            routing: Default::default(),
            public_url: std::sync::OnceLock::new(),
            jobs_wake: tokio::sync::Notify::new(),
            jobs_next_due: std::sync::atomic::AtomicI64::new(i64::MIN),
            webhooks: crate::webhooks::Hub::default(),
            pumping: pumping::Ledger::default(),
            analytics: analytics::Ledger::default(),
            rule_stats: rules::stats::RuleLedger::default(),
            backtests: rules::backtest::Running::default(),
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
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
    /// A new id for a verification, tenant or key: a UUID of version 7, whose first
    /// 48 bits are the time in ms. So a tenant's verifications are stored in the
    /// order they began, and a new one lands beside the last ones written rather than
    /// anywhere in the tree (which, on sled, halved the bytes a verified flow leaves on
    /// disk; see the README's Performance section). The other 74 bits are random.
    fn id() -> String {
        uuid::Uuid::now_v7().to_string()
    }

    /// A new id as [`Engine::id`], whose time is `at` (the flows' clock, which is the
    /// system's in production): a verification's id tells when it began as its
    /// `created_at` does, so the verification log reads a time range as a key range.
    pub(crate) fn id_at(at: chrono::DateTime<chrono::Utc>) -> String {
        let seconds = u64::try_from(at.timestamp()).unwrap_or(0);
        let timestamp =
            uuid::Timestamp::from_unix(uuid::NoContext, seconds, at.timestamp_subsec_nanos());
        uuid::Uuid::new_v7(timestamp).to_string()
    }

    fn verification_key(tenant_id: &str, id: &str) -> Vec<u8> {
        key(&[tenant_id, id])
    }
}
