//! The verification flows: lookup, send-otp, verify-otp, reports, cases and review
//! decisions, and the tenant administration they rest on. This is where the pure
//! domain (`phone`, `otp`, `warnings`) meets storage, providers and the trigger seam.

mod admin;
mod analysis;
mod cases;
mod delivery;
mod dispatch;
mod idempotency;
pub mod jobs;
mod lookup;
pub mod providers;
mod report;
pub mod routed;
mod send;
mod templates;
pub mod triggers;
mod verify;
pub mod workflows;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::clock::Clock;
use crate::disposable::DisposableList;
use crate::limits::Buckets;
use crate::otp::CodeHasher;
use crate::phone::InvalidReason;
use crate::providers::{DevOutbox, Provider};
use crate::settings::PhoneSettings;
use crate::store::{key, Db, StoreError, Tree};

pub use admin::{BlockRequest, CreatedKey, KeyView, OperatorKey, TenantView};
pub use cases::{CasePatch, CaseQuery, ReviewRequest};
pub use delivery::DeliveryRequest;
pub use dispatch::{CallbackError, MAX_CALLBACK_BYTES};
pub use idempotency::IdempotencyKey;
pub use lookup::{LookupRequest, ValidateRequest};
pub use send::SendRequest;
pub use triggers::{Fired, Firing, Trigger};
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
    /// The tenants' plugins: rules run at the triggers, adapters enrich lookups.
    pub plugins: Arc<crate::plugins::registry::Registry>,
    pub limits: Buckets,
    pub disposable: DisposableList,
    /// Read-through caches of hot, rarely changed records.
    pub caches: Caches,
    /// Providers, routing policies, and what routing learnt about each provider.
    pub routing: providers::RoutingState,
    /// The base URL providers reach this server at (set once the listener is bound).
    pub public_url: std::sync::OnceLock<String>,
    /// Wakes the scheduled-jobs worker when a job is stored.
    pub jobs_wake: tokio::sync::Notify,
    /// When the earliest scheduled job is due (ms since the epoch), as far as the
    /// worker knows: `i64::MIN` means "look", `i64::MAX` "nothing scheduled".
    pub jobs_next_due: std::sync::atomic::AtomicI64,
    /// Wakes the webhook delivery worker.
    pub webhooks: crate::webhooks::Hub,
    /// The change log replicas of a shared store keep their caches current by; `None`
    /// on the embedded store, which one process owns.
    pub changes: Option<Arc<crate::changes::ChangeLog>>,
}

/// In-process caches of API keys, settings, blocklist entries and webhook
/// subscriptions. On the embedded
/// store only this process writes (sled locks its directory); on a shared store the
/// change log drops what other replicas changed. For keys and settings a miss loads
/// from the store, and a write updates the store, while holding the cache's write
/// lock, so a load can never put back a record older than a concurrent write. The
/// blocklist and subscription caches, whose misses are frequent (every new number) or
/// slow (a scan), load without the lock and keep what they loaded only if no change
/// came in meanwhile (a generation count), for the same guarantee.
#[derive(Debug, Default)]
pub struct Caches {
    keys: RwLock<HashMap<String, crate::model::ApiKey>>,
    settings: RwLock<HashMap<String, Arc<PhoneSettings>>>,
    /// `tenant id / e164` → the number's blocklist entry, or that it has none.
    blocked: Generational<Option<crate::model::BlockedNumber>>,
    /// `tenant id` → the tenant's webhook subscriptions (read by every event).
    subscriptions: Generational<Arc<Vec<crate::webhooks::Subscription>>>,
}

/// Generation counters of a [`Generational`] cache: a change bumps only its key's
/// shard, so one tenant's stream of changes does not keep every other key uncached.
const GENERATIONS: usize = 64;

/// A cache whose misses load without its lock: what a load found is kept only if no
/// change in its key's shard was noted meanwhile (a generation count), so a load that
/// raced a change never puts back what the change replaced.
#[derive(Debug)]
struct Generational<V> {
    entries: RwLock<HashMap<String, V>>,
    generations: [std::sync::atomic::AtomicU64; GENERATIONS],
}

impl<V> Default for Generational<V> {
    fn default() -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            generations: std::array::from_fn(|_| std::sync::atomic::AtomicU64::new(0)),
        }
    }
}

impl<V: Clone> Generational<V> {
    /// The generation counter of `key`'s shard.
    fn generation(&self, key: &str) -> &std::sync::atomic::AtomicU64 {
        use std::hash::BuildHasher;
        let hash =
            std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                .hash_one(key);
        &self.generations[(hash % GENERATIONS as u64) as usize]
    }

    fn get(
        &self,
        key: String,
        load: impl FnOnce() -> Result<V, StoreError>,
    ) -> Result<V, StoreError> {
        use std::sync::atomic::Ordering;
        if let Some(hit) = self.entries.read().get(&key) {
            return Ok(hit.clone());
        }
        let counter = self.generation(&key);
        let generation = counter.load(Ordering::SeqCst);
        let loaded = load()?;
        let mut entries = self.entries.write();
        if counter.load(Ordering::SeqCst) == generation {
            if entries.len() >= CACHE_LIMIT {
                entries.clear();
            }
            entries.insert(key, loaded.clone());
        }
        Ok(loaded)
    }

    /// Drops `key` after its record changed.
    fn forget(&self, key: &str) {
        let mut entries = self.entries.write();
        self.generation(key)
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        entries.remove(key);
    }

    fn clear(&self) {
        let mut entries = self.entries.write();
        for counter in &self.generations {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        entries.clear();
    }
}

/// Entries kept per cache; beyond this the cache starts over (a cheap bound).
const CACHE_LIMIT: usize = 100_000;

fn read_through<V: Clone>(
    cache: &RwLock<HashMap<String, V>>,
    key: &str,
    load: impl FnOnce() -> Result<Option<V>, StoreError>,
) -> Result<Option<V>, StoreError> {
    if let Some(hit) = cache.read().get(key) {
        return Ok(Some(hit.clone()));
    }
    let mut entries = cache.write();
    if let Some(hit) = entries.get(key) {
        return Ok(Some(hit.clone()));
    }
    let loaded = load()?;
    if let Some(value) = &loaded {
        if entries.len() >= CACHE_LIMIT {
            entries.clear();
        }
        entries.insert(key.to_owned(), value.clone());
    }
    Ok(loaded)
}

impl Caches {
    /// The API key with this hash, through the cache.
    pub(crate) fn key(
        &self,
        hash: &str,
        load: impl FnOnce() -> Result<Option<crate::model::ApiKey>, StoreError>,
    ) -> Result<Option<crate::model::ApiKey>, StoreError> {
        read_through(&self.keys, hash, load)
    }

    /// Removes a key from the store (`remove`) and the cache together.
    pub(crate) fn remove_key(
        &self,
        hash: &str,
        remove: impl FnOnce() -> Result<bool, StoreError>,
    ) -> Result<bool, StoreError> {
        let mut keys = self.keys.write();
        let removed = remove()?;
        keys.remove(hash);
        Ok(removed)
    }

    /// Drops the cached key with this hash (another replica revoked it).
    pub(crate) fn forget_key(&self, hash: &str) {
        self.keys.write().remove(hash);
    }

    /// Drops the tenant's cached settings (another replica changed them).
    pub(crate) fn forget_settings(&self, tenant_id: &str) {
        self.settings.write().remove(tenant_id);
    }

    /// The blocklist entry of `e164` for the tenant, or `None`, through the cache.
    pub(crate) fn blocked(
        &self,
        tenant_id: &str,
        e164: &str,
        load: impl FnOnce() -> Result<Option<crate::model::BlockedNumber>, StoreError>,
    ) -> Result<Option<crate::model::BlockedNumber>, StoreError> {
        self.blocked.get(format!("{tenant_id}/{e164}"), load)
    }

    /// Drops the cached blocklist entry of `e164` for the tenant, after the store's
    /// entry changed (here or on another replica).
    pub(crate) fn forget_blocked(&self, tenant_id: &str, e164: &str) {
        self.blocked.forget(&format!("{tenant_id}/{e164}"));
    }

    /// The tenant's webhook subscriptions, through the cache.
    pub(crate) fn subscriptions(
        &self,
        tenant_id: &str,
        load: impl FnOnce() -> Result<Arc<Vec<crate::webhooks::Subscription>>, StoreError>,
    ) -> Result<Arc<Vec<crate::webhooks::Subscription>>, StoreError> {
        self.subscriptions.get(tenant_id.to_owned(), load)
    }

    /// Drops the tenant's cached subscriptions, after one changed (here or on another
    /// replica).
    pub(crate) fn forget_subscriptions(&self, tenant_id: &str) {
        self.subscriptions.forget(tenant_id);
    }

    /// Drops every cached entry.
    pub(crate) fn clear(&self) {
        self.keys.write().clear();
        self.settings.write().clear();
        self.blocked.clear();
        self.subscriptions.clear();
    }

    fn settings(
        &self,
        tenant_id: &str,
        load: impl FnOnce() -> Result<Option<Arc<PhoneSettings>>, StoreError>,
    ) -> Result<Option<Arc<PhoneSettings>>, StoreError> {
        read_through(&self.settings, tenant_id, load)
    }

    fn store_settings(
        &self,
        tenant_id: &str,
        settings: Arc<PhoneSettings>,
        store: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut all = self.settings.write();
        store()?;
        if all.len() >= CACHE_LIMIT {
            all.clear();
        }
        all.insert(tenant_id.to_owned(), settings);
        Ok(())
    }
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
    pub fn settings(&self, tenant_id: &str) -> Result<Arc<PhoneSettings>, StoreError> {
        let loaded = self.caches.settings(tenant_id, || {
            let stored: Option<PhoneSettings> =
                self.db.get(Tree::Settings, tenant_id.as_bytes())?;
            Ok(Some(Arc::new(stored.unwrap_or_default())))
        })?;
        Ok(loaded.unwrap_or_default())
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
        self.caches
            .store_settings(tenant_id, Arc::new(settings.clone()), || {
                self.db.put(Tree::Settings, tenant_id.as_bytes(), &settings)
            })?;
        self.changed(&crate::changes::Change::Settings {
            tenant_id: tenant_id.to_owned(),
        })?;
        self.db.sync().await?;
        Ok(settings)
    }

    /// Records `change` for the other replicas of a shared store (nothing on the
    /// embedded store).
    pub(crate) fn changed(&self, change: &crate::changes::Change) -> Result<(), StoreError> {
        if let Some(log) = &self.changes {
            log.record(change)?;
        }
        Ok(())
    }

    /// Applies what other replicas changed to this replica's caches.
    pub(crate) fn apply_changes(&self, seen: crate::changes::Seen) {
        use crate::changes::{Change, Seen};
        let changes = match seen {
            Seen::Changes(changes) => changes,
            Seen::Everything => {
                self.caches.clear();
                self.routing.forget_all();
                if let Err(err) = self.plugins.refresh_all() {
                    tracing::error!("cannot reload the tenants' plugins: {err}");
                }
                return;
            }
        };
        for change in changes {
            match change {
                Change::Key { hash } => self.caches.forget_key(&hash),
                Change::Settings { tenant_id } => self.caches.forget_settings(&tenant_id),
                Change::Routing { tenant_id } => self.routing.forget(&tenant_id),
                Change::Blocklist { tenant_id, phone } => {
                    self.caches.forget_blocked(&tenant_id, &phone);
                }
                Change::Webhooks { tenant_id } => self.caches.forget_subscriptions(&tenant_id),
                Change::Plugins { tenant_id } => {
                    if let Err(err) = self.plugins.refresh(&tenant_id) {
                        tracing::error!(tenant = %tenant_id, "cannot reload the tenant's plugins: {err}");
                    }
                }
            }
        }
    }

    /// Keeps this replica's caches current with the change log until `stop`: polls it
    /// every [`crate::changes::POLL_INTERVAL`] (on a blocking thread: the store is
    /// synchronous), and sweeps the refilled shared rate-limit buckets every minute.
    pub async fn run_changes(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(log) = self.changes.clone() else {
            return;
        };
        let mut last_sweep = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(crate::changes::POLL_INTERVAL) => {}
            }
            if *stop.borrow() {
                return;
            }
            let engine = Arc::clone(&self);
            let log = Arc::clone(&log);
            // Once a minute, the shared rate-limit buckets that refilled go too.
            let sweep = last_sweep.elapsed() >= std::time::Duration::from_secs(60);
            if sweep {
                last_sweep = std::time::Instant::now();
            }
            let polled = tokio::task::spawn_blocking(move || {
                let seen = log.poll()?;
                engine.apply_changes(seen);
                if sweep {
                    engine.limits.sweep_shared(engine.clock.now())?;
                }
                Ok::<(), StoreError>(())
            })
            .await;
            match polled {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!("change log: {err}"),
                Err(err) => tracing::error!("change log: {err}"),
            }
        }
    }

    fn id() -> String {
        uuid::Uuid::new_v4().to_string()
    }

    fn verification_key(tenant_id: &str, id: &str) -> Vec<u8> {
        key(&[tenant_id, id])
    }
}
