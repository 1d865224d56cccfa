//! What a replica keeps in memory of the shared truth: read-through caches of API
//! keys, settings, blocklist entries and webhook subscriptions, and the change log's
//! application to them. Per replica: another replica's write reaches these only
//! through the change log (on a shared store), so nothing here is ever the truth.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::settings::PhoneSettings;
use crate::store::StoreError;

use super::Engine;

/// In-process caches of API keys, settings, blocklist entries and webhook
/// subscriptions. On the embedded
/// store only this process writes (sled locks its directory); on a shared store the
/// change log drops what other replicas changed. For keys and settings a miss loads
/// from the store, and a write updates the store, while holding the cache's write
/// lock, so a load can never put back a record older than a concurrent write. The
/// blocklist and subscription caches, whose misses are frequent (every new number of a
/// tenant that has a blocklist; a tenant without one is known as such, per tenant) or
/// slow (a scan), load without the lock and keep what they loaded only if no change
/// came in meanwhile (a generation count), for the same guarantee.
#[derive(Debug, Default)]
pub struct Caches {
    keys: RwLock<HashMap<String, crate::model::ApiKey>>,
    settings: RwLock<HashMap<String, Arc<PhoneSettings>>>,
    /// `tenant id / e164` → the number's blocklist entry, or that it has none.
    blocked: Generational<Option<crate::model::BlockedNumber>>,
    /// `tenant id` → whether the tenant has any blocklist entry: a tenant with none
    /// (most) answers for every number, new ones too, without a read.
    has_blocklist: Generational<bool>,
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

    /// The blocklist entry of `e164` for the tenant, or `None`, through the cache:
    /// for a tenant with no entry at all, at once; else the number's own entry.
    pub(crate) fn blocked(
        &self,
        tenant_id: &str,
        e164: &str,
        any: impl FnOnce() -> Result<bool, StoreError>,
        load: impl FnOnce() -> Result<Option<crate::model::BlockedNumber>, StoreError>,
    ) -> Result<Option<crate::model::BlockedNumber>, StoreError> {
        if !self.has_blocklist.get(tenant_id.to_owned(), any)? {
            return Ok(None);
        }
        self.blocked.get(format!("{tenant_id}/{e164}"), load)
    }

    /// Drops the cached blocklist entry of `e164` for the tenant, and whether the
    /// tenant has any, after the store's entry changed (here or on another replica).
    pub(crate) fn forget_blocked(&self, tenant_id: &str, e164: &str) {
        self.has_blocklist.forget(tenant_id);
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
        self.has_blocklist.clear();
        self.subscriptions.clear();
    }

    pub(crate) fn settings(
        &self,
        tenant_id: &str,
        load: impl FnOnce() -> Result<Option<Arc<PhoneSettings>>, StoreError>,
    ) -> Result<Option<Arc<PhoneSettings>>, StoreError> {
        read_through(&self.settings, tenant_id, load)
    }

    pub(crate) fn store_settings(
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

impl Engine {
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
                self.replica.caches.clear();
                self.replica.routing.forget_all();
                self.replica.pumping.forget_all();
                if let Err(err) = self.plugins.refresh_all() {
                    tracing::error!("cannot reload the tenants' plugins: {err}");
                }
                return;
            }
        };
        for change in changes {
            match change {
                Change::Key { hash } => self.replica.caches.forget_key(&hash),
                Change::Settings { tenant_id } => self.replica.caches.forget_settings(&tenant_id),
                Change::Routing { tenant_id } => self.replica.routing.forget(&tenant_id),
                Change::Blocklist { tenant_id, phone } => {
                    self.replica.caches.forget_blocked(&tenant_id, &phone);
                }
                Change::Webhooks { tenant_id } => {
                    self.replica.caches.forget_subscriptions(&tenant_id)
                }
                Change::FraudBlocks { tenant_id } => {
                    self.replica.pumping.forget_blocks(&tenant_id);
                }
                Change::FraudExemptions => self.replica.pumping.forget_exemptions(),
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
}
