//! Storage: a small key-value trait, its sled and PostgreSQL implementations, and
//! [`Db`], the typed layer the rest of the host uses.
//!
//! Only this module names sled and PostgreSQL. Records are JSON values in named trees; keys of
//! tenant-owned records start with the tenant id, so a scan can never cross tenants.
//! Durability: [`Db::sync`] is a group commit. Handlers call it after their writes and
//! before they answer, so every state acknowledged to a client has been flushed and
//! fsynced; concurrent requests share one flush.

mod codec;
pub mod copy;
pub mod personal;
mod postgres;
mod sled_store;
#[doc(hidden)]
pub mod testing;

use crate::metrics::StoreOp;
use std::future::Future;
use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use postgres::{PostgresOptions, PostgresStore};
pub use sled_store::SledStore;

/// The trees (tables) of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tree {
    /// Server-wide secrets and markers.
    Meta,
    /// `tenant id` → tenant.
    Tenants,
    /// `sha256(api key)` → key record.
    ApiKeys,
    /// `tenant id / key id` → key record.
    TenantKeys,
    /// `tenant id / verification id` → verification.
    Verifications,
    /// `tenant id / e164 / applicant` → latest verification and recent sends.
    VerificationIndex,
    /// `tenant id / e164` → who verified the number first.
    VerifiedNumbers,
    /// `tenant id / e164` → blocklist entry.
    Blocklist,
    /// `tenant id` → settings.
    Settings,
    /// `tenant id / reverse time / message id` → dev outbox message.
    Outbox,
    /// `tenant id / number's name / reverse time / message id` → nothing: the dev
    /// outbox's messages to one number (the same key as in `Outbox` after the tenant
    /// id, so reading a number's messages or erasing them needs no scan of the rest).
    OutboxNumbers,
    /// `tenant id / idempotency key` → stored answer.
    Idempotency,
    /// `tenant id / verification id / idempotency key` → nothing: the stored answers
    /// about a verification, so erasing it finds them without a scan.
    IdempotencyVerifications,
    /// `tenant id / plugin id / key` → a plugin's key-value data.
    PluginKv,
    /// `tenant id / plugin id` → a plugin's record: versions, bindings, config.
    Plugins,
    /// `sha256 of a component` → the component's bytes (raw).
    PluginBlobs,
    /// `sha256 / tenant id / plugin id` → nothing: the plugins with a version of that
    /// component, so a delete finds whether a component is still used by one scan of
    /// its own prefix.
    PluginRefs,
    /// `sha256 of a component / engine fingerprint` → its precompiled form (raw).
    PluginArtifacts,
    /// `tenant id / case id` → a case opened by a rule.
    Cases,
    /// `tenant id / plugin id / provider message id` → the verification it belongs to.
    MessageIndex,
    /// `tenant id / rule id` → a declarative workflow rule.
    WorkflowRules,
    /// `tenant id / provider id` → a provider.
    Providers,
    /// `provider id` → the tenant that owns it (callbacks name only the provider).
    ProviderIds,
    /// `tenant id` → the routing policy.
    RoutingPolicies,
    /// `tenant id / verification id / message id` → one code message to one provider.
    Messages,
    /// `provider id / provider message id` → the message's key in `Messages`.
    ProviderMessages,
    /// `due time (20 digits, ms) / job id` → a scheduled job (channel fallback steps,
    /// message expiry).
    Jobs,
    /// `tenant id / brand id` → a brand.
    Brands,
    /// `tenant id / template id` → a message template.
    Templates,
    /// `tenant id / subscription id` → a webhook subscription.
    Webhooks,
    /// `tenant id / subscription id / delivery id` → a webhook delivery and its attempts.
    WebhookDeliveries,
    /// `due time (ms, 20 digits) / delivery id` → the delivery due then. The delivery
    /// worker's schedule across tenants; the value names the tenant.
    WebhookQueue,
    /// `tenant id / e164` → failed code entries for the number (the guess budget).
    GuessBudgets,
    /// `version (20 digits)` → a change other replicas must apply to their caches
    /// (see `changes.rs`); the latest version is `change_version` in `Meta`.
    Changes,
    /// `bucket key` → a rate-limit bucket shared by the replicas of a shared store.
    RateLimits,
    /// `t / tenant id / prefix`, `t / tenant id / *` and `h / prefix` → the SMS-pumping
    /// detector's counts for a tenant's prefix, all its sends, and the host's aggregate.
    PumpingCounts,
    /// `tenant id / prefix` → a prefix block of the SMS-pumping detector.
    FraudBlocks,
    /// `tenant id / day/YYYY-MM-DD[/country]` or `tenant id / month/YYYY-MM` → what the
    /// tenant's codes cost in that period (millionths of its providers' unit).
    Spend,
    /// `tenant id (or *) / h|d / grouping / YYYYMMDD[HH] / value` → the conversion
    /// analytics' tally of that bucket and group (see `analytics.rs`).
    Analytics,
    /// `tenant id / YYYYMMDD / plugin|workflow / id` → a rule's runs, decisions and
    /// failures that day (see `flows/rules/stats.rs`).
    RuleStats,
}

impl Tree {
    /// Every tree, for backends that open them up front.
    pub const ALL: [Tree; 40] = [
        Tree::Meta,
        Tree::Tenants,
        Tree::ApiKeys,
        Tree::TenantKeys,
        Tree::Verifications,
        Tree::VerificationIndex,
        Tree::VerifiedNumbers,
        Tree::Blocklist,
        Tree::Settings,
        Tree::Outbox,
        Tree::OutboxNumbers,
        Tree::Idempotency,
        Tree::IdempotencyVerifications,
        Tree::PluginKv,
        Tree::Plugins,
        Tree::PluginBlobs,
        Tree::PluginRefs,
        Tree::PluginArtifacts,
        Tree::Cases,
        Tree::MessageIndex,
        Tree::WorkflowRules,
        Tree::Providers,
        Tree::ProviderIds,
        Tree::RoutingPolicies,
        Tree::Messages,
        Tree::ProviderMessages,
        Tree::Jobs,
        Tree::Brands,
        Tree::Templates,
        Tree::Webhooks,
        Tree::WebhookDeliveries,
        Tree::WebhookQueue,
        Tree::GuessBudgets,
        Tree::Changes,
        Tree::RateLimits,
        Tree::PumpingCounts,
        Tree::FraudBlocks,
        Tree::Spend,
        Tree::Analytics,
        Tree::RuleStats,
    ];

    /// The tree's stable name.
    pub fn name(self) -> &'static str {
        match self {
            Tree::Meta => "meta",
            Tree::Tenants => "tenants",
            Tree::ApiKeys => "api_keys",
            Tree::TenantKeys => "tenant_keys",
            Tree::Verifications => "verifications",
            Tree::VerificationIndex => "verification_index",
            Tree::VerifiedNumbers => "verified_numbers",
            Tree::Blocklist => "blocklist",
            Tree::Settings => "settings",
            Tree::Outbox => "outbox",
            Tree::OutboxNumbers => "outbox_numbers",
            Tree::Idempotency => "idempotency",
            Tree::IdempotencyVerifications => "idempotency_verifications",
            Tree::PluginKv => "plugin_kv",
            Tree::Plugins => "plugins",
            Tree::PluginBlobs => "plugin_blobs",
            Tree::PluginRefs => "plugin_refs",
            Tree::PluginArtifacts => "plugin_artifacts",
            Tree::Cases => "cases",
            Tree::MessageIndex => "message_index",
            Tree::WorkflowRules => "workflow_rules",
            Tree::Providers => "providers",
            Tree::ProviderIds => "provider_ids",
            Tree::RoutingPolicies => "routing_policies",
            Tree::Messages => "messages",
            Tree::ProviderMessages => "provider_messages",
            Tree::Jobs => "jobs",
            Tree::Brands => "brands",
            Tree::Templates => "templates",
            Tree::Webhooks => "webhooks",
            Tree::WebhookDeliveries => "webhook_deliveries",
            Tree::WebhookQueue => "webhook_queue",
            Tree::GuessBudgets => "guess_budgets",
            Tree::Changes => "changes",
            Tree::RateLimits => "rate_limits",
            Tree::PumpingCounts => "pumping_counts",
            Tree::FraudBlocks => "fraud_blocks",
            Tree::Spend => "spend",
            Tree::Analytics => "analytics",
            Tree::RuleStats => "rule_stats",
        }
    }
}

/// A storage failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend failed: {0}")]
    Backend(String),
    /// The store cannot be reached or refuses work for now (a shared database that is
    /// down, restarting or out of connections); retrying later may succeed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("stored record under {key} in {tree} is corrupt: {message}")]
    Corrupt {
        tree: &'static str,
        key: String,
        message: String,
    },
}

/// A key-value pair.
pub type Pair = (Vec<u8>, Vec<u8>);

/// The storage contract every backend implements.
pub trait Store: Send + Sync + 'static {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes a key; whether it was there.
    fn remove(&self, tree: Tree, key: &[u8]) -> Result<bool, StoreError>;
    /// Sets `key` to `new` (or removes it) only if it currently holds `expected`.
    fn compare_and_swap(
        &self,
        tree: Tree,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError>;
    /// Up to `limit` pairs whose key starts with `prefix`, in key order or reversed.
    fn scan_prefix(
        &self,
        tree: Tree,
        prefix: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Pair>, StoreError>;
    /// Up to `limit` pairs whose key is `start` or after it, in key order.
    fn scan_from(&self, tree: Tree, start: &[u8], limit: usize) -> Result<Vec<Pair>, StoreError>;
    /// Up to `limit` pairs whose key is in `start..end`, in key order or reversed.
    fn scan_range(
        &self,
        tree: Tree,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Pair>, StoreError>;
    /// Stores every pair (a bulk load: the store copy's writes).
    fn put_batch(&self, tree: Tree, pairs: &[Pair]) -> Result<(), StoreError> {
        pairs
            .iter()
            .try_for_each(|(key, value)| self.put(tree, key, value))
    }
    /// Bytes the store takes on disk, when the backend can tell.
    fn size_on_disk(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    /// Whether several processes may share this store (PostgreSQL), so state kept in a
    /// process's memory is not the whole truth.
    fn shared(&self) -> bool {
        false
    }
    /// Takes a token from each of the shared rate-limit buckets `buckets`, all or none,
    /// in one step of the backend's own, if it has one (PostgreSQL: one call that locks
    /// the buckets' rows in key order); `None` when it has not, and the caller keeps the
    /// buckets as records of [`Tree::RateLimits`] updated by compare-and-swap.
    fn take_tokens(
        &self,
        _buckets: &[(&[u8], TokenBucket)],
        _now_ms: i64,
    ) -> Result<Option<Taken>, StoreError> {
        Ok(None)
    }
    /// Removes the buckets of [`Store::take_tokens`] that are full again by `now_ms`;
    /// how many (`None` when the backend keeps no buckets of its own).
    fn sweep_tokens(&self, _now_ms: i64) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    /// Claims up to `limit` entries of the queue `tree` that are due (keys below
    /// `upto`: a queue's keys start with the due time) and that nobody holds (no lease,
    /// or one that ended by `now_ms`), each leased to the caller until `until_ms`;
    /// entries another replica is claiming at this moment are skipped, not waited for.
    /// In key order. `None` when the backend keeps no leases (the embedded store, which
    /// one process owns); PostgreSQL keeps them for the queues, [`Tree::Jobs`] and
    /// [`Tree::WebhookQueue`].
    fn claim_due(
        &self,
        _tree: Tree,
        _upto: &[u8],
        _now_ms: i64,
        _until_ms: i64,
        _limit: usize,
    ) -> Result<Option<Vec<Pair>>, StoreError> {
        Ok(None)
    }
    /// Claims those of the entries `keys` of the queue `tree` that exist and that
    /// nobody holds, as [`Store::claim_due`] does, each leased until `until_ms`; in key
    /// order. `None` when the backend keeps no leases.
    fn claim_keys(
        &self,
        _tree: Tree,
        _keys: &[Vec<u8>],
        _now_ms: i64,
        _until_ms: i64,
    ) -> Result<Option<Vec<Pair>>, StoreError> {
        Ok(None)
    }
    /// Moves an entry [`Store::claim_due`] or [`Store::claim_keys`] claimed to the key
    /// `to`, free of any lease, in one step, if it is still under that claim's lease
    /// (`until_ms`); `false` when it is not. (A move never leaves the entry at both keys,
    /// so no two replicas can claim one entry twice over.)
    fn move_claimed(
        &self,
        tree: Tree,
        _from: &[u8],
        _to: &[u8],
        _until_ms: i64,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Backend(format!(
            "this backend keeps no leases for {}",
            tree.name()
        )))
    }
    /// Removes an entry [`Store::claim_due`] or [`Store::claim_keys`] claimed, if it is
    /// still under that claim's lease (`until_ms`); `false` when it is not (its lease
    /// ended and it was claimed again, it was written anew, or it is gone).
    fn finish_claimed(&self, tree: Tree, _key: &[u8], _until_ms: i64) -> Result<bool, StoreError> {
        Err(StoreError::Backend(format!(
            "this backend keeps no leases for {}",
            tree.name()
        )))
    }
    /// Makes every completed write durable.
    fn flush(&self) -> Result<(), StoreError>;
}

/// A shared token bucket's refill rate (tokens per millisecond) and size, and how many
/// tokens a take asks of it: one, or a reserve of up to `up_to` when it holds that many.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    pub per_ms: f64,
    pub burst: f64,
    pub up_to: f64,
}

/// What [`Store::take_tokens`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Taken {
    /// Every bucket had a token, and each gave what is listed (in the caller's order):
    /// one, or up to its `up_to` of what it held.
    Yes(Vec<f64>),
    /// The bucket at `bucket` (in the caller's order) had no token, and nothing was
    /// taken from any bucket: it holds this fraction of one.
    No { bucket: usize, tokens: f64 },
}

impl Taken {
    /// The outcome for `buckets` found holding `tokens` each (refilled, before taking).
    pub fn from_tokens(buckets: &[TokenBucket], tokens: Vec<f64>) -> Self {
        match tokens.iter().position(|&held| held < 1.0) {
            Some(bucket) => Taken::No {
                bucket,
                tokens: tokens[bucket],
            },
            None => Taken::Yes(
                buckets
                    .iter()
                    .zip(tokens)
                    .map(|(bucket, held)| bucket.up_to.min(held.floor()).max(1.0))
                    .collect(),
            ),
        }
    }
}

/// A PostgreSQL URL as it may be shown (in logs, on the console): without its user
/// and password, which may be secret.
pub fn shown_url(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((_, place)) => format!("postgres://…@{place}"),
        None => url.to_owned(),
    }
}

/// Joins key parts with `/`.
pub fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("/").into_bytes()
}

/// The smallest key greater than every key starting with `prefix`, if there is one.
pub fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut bound = prefix.to_vec();
    while let Some(last) = bound.pop() {
        if last < u8::MAX {
            bound.push(last + 1);
            return Some(bound);
        }
    }
    None
}

/// The typed store the host uses: JSON records, compare-and-swap updates, group commit.
#[derive(Clone)]
pub struct Db {
    store: Arc<dyn Store>,
    flusher: mpsc::UnboundedSender<oneshot::Sender<Result<(), StoreError>>>,
    /// Turns `true` once every handle is gone and the backend is closed (for sled: its
    /// directory lock released).
    closed: tokio::sync::watch::Receiver<bool>,
    /// Where operations' latency is recorded, once the engine's metrics are known.
    metrics: Arc<std::sync::OnceLock<Arc<crate::metrics::Metrics>>>,
    /// The keys that seal personal records and hash personal names in keys (see
    /// [`personal`]): set by the server from its secret, or taken from the stored
    /// secret on first use.
    personal: Arc<std::sync::OnceLock<personal::Personal>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db(..)")
    }
}

impl Db {
    /// Wraps a backend and starts its group-commit thread.
    pub fn new(store: Arc<dyn Store>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<oneshot::Sender<Result<(), StoreError>>>();
        let (closing, closed) = tokio::sync::watch::channel(false);
        let flushing = Arc::clone(&store);
        std::thread::Builder::new()
            .name("dialgate-flush".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut waiters = vec![first];
                    while let Ok(next) = rx.try_recv() {
                        waiters.push(next);
                    }
                    let result = flushing.flush();
                    for waiter in waiters {
                        let _ = waiter.send(result.clone());
                    }
                }
                // Every `Db` is gone (the channel closed): this thread holds the last
                // reference, so dropping it closes the backend.
                drop(flushing);
                let _ = closing.send(true);
            })
            .expect("spawn the flush thread");
        Self {
            store,
            flusher: tx,
            closed,
            metrics: Arc::default(),
            personal: Arc::default(),
        }
    }

    /// Seals personal records and hashes personal names with keys derived from
    /// `server_secret` from now on (every clone); the first call wins, and it must come
    /// before the first personal record is read or written.
    pub fn use_server_secret(&self, server_secret: &[u8; 32]) {
        let _ = self.personal.set(personal::Personal::new(server_secret));
    }

    /// The keys of personal data: the server's, or, when it set none (tools and tests
    /// that open a store directly), those of the secret stored in the store.
    pub fn personal(&self) -> Result<&personal::Personal, StoreError> {
        if let Some(personal) = self.personal.get() {
            return Ok(personal);
        }
        let secret = crate::secrets::data_key(self, None)?;
        Ok(self
            .personal
            .get_or_init(|| personal::Personal::new(&secret)))
    }

    /// The name keys use for `parts` (a number, a number and an applicant, an IP) of
    /// `tenant_id`: a keyed hash, never the value itself (see [`personal`]).
    pub fn personal_name(&self, tenant_id: &str, parts: &[&str]) -> Result<String, StoreError> {
        Ok(self.personal()?.name(tenant_id, parts))
    }

    /// The key of `tenant_id`'s record about the number `e164` (its verified owner,
    /// guess budget, blocklist entry): the number hashed, never in the clear.
    pub fn number_key(&self, tenant_id: &str, e164: &str) -> Result<Vec<u8>, StoreError> {
        Ok(key(&[tenant_id, &self.personal_name(tenant_id, &[e164])?]))
    }

    /// The key of `tenant_id`'s record about the number `e164` with the applicant
    /// `applicant_id` (empty: none), hashed together.
    pub fn applicant_key(
        &self,
        tenant_id: &str,
        e164: &str,
        applicant_id: &str,
    ) -> Result<Vec<u8>, StoreError> {
        Ok(key(&[
            tenant_id,
            &self.personal_name(tenant_id, &[e164, applicant_id])?,
        ]))
    }

    /// Records the latency of this store's operations (every clone's) in `metrics`
    /// from now on; the first call wins.
    pub fn observe(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Runs `operation`, recording its time as `op` when metrics are attached.
    fn timed<R>(&self, op: StoreOp, operation: impl FnOnce() -> R) -> R {
        match self.metrics.get() {
            Some(metrics) => {
                let started = std::time::Instant::now();
                let result = operation();
                metrics.store_op(op, started.elapsed());
                result
            }
            None => operation(),
        }
    }

    /// A signal that completes once every handle to this store has been dropped and the
    /// backend has closed. A process that reopens the same directory (a restart) waits
    /// on it, since sled holds a lock on its directory until then.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut closed = self.closed.clone();
        async move {
            // An error means the flush thread ended, which it does only after closing.
            let _ = closed.wait_for(|closed| *closed).await;
        }
    }

    /// Waits, blocking this thread for at most `limit`, until every handle to this
    /// store has been dropped and the backend has closed: for a start that failed after
    /// opening the store, so a caller that tries again (with another secret, say) finds
    /// the directory unlocked. Whether it closed.
    pub fn close_within(self, limit: std::time::Duration) -> bool {
        let closed = self.closed.clone();
        drop(self);
        let until = std::time::Instant::now() + limit;
        while !*closed.borrow() {
            if closed.has_changed().is_err() {
                // The flush thread ended, which it does only after closing.
                return true;
            }
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        true
    }

    /// Opens the embedded sled store under `dir`.
    pub fn open_sled(dir: &std::path::Path) -> Result<Self, StoreError> {
        Ok(Self::new(Arc::new(SledStore::open(dir)?)))
    }

    /// Opens the PostgreSQL database at `url`, applying the schema's migrations first
    /// if `migrate` (under a lock, so replicas may start together).
    pub fn open_postgres(url: &str, migrate: bool) -> Result<Self, StoreError> {
        Self::open_postgres_with(url, migrate, PostgresOptions::default())
    }

    /// [`Db::open_postgres`] with the pool's size and the calls' timeout.
    pub fn open_postgres_with(
        url: &str,
        migrate: bool,
        options: PostgresOptions,
    ) -> Result<Self, StoreError> {
        Ok(Self::new(Arc::new(PostgresStore::open_with(
            url, migrate, options,
        )?)))
    }

    /// See [`Store::size_on_disk`].
    pub fn size_on_disk(&self) -> Result<Option<u64>, StoreError> {
        self.store.size_on_disk()
    }

    /// See [`Store::shared`].
    pub fn is_shared(&self) -> bool {
        self.store.shared()
    }

    /// See [`Store::take_tokens`].
    pub fn take_tokens(
        &self,
        buckets: &[(&[u8], TokenBucket)],
        now_ms: i64,
    ) -> Result<Option<Taken>, StoreError> {
        self.store.take_tokens(buckets, now_ms)
    }

    /// See [`Store::claim_due`].
    pub fn claim_due(
        &self,
        tree: Tree,
        upto: &[u8],
        now_ms: i64,
        until_ms: i64,
        limit: usize,
    ) -> Result<Option<Vec<Pair>>, StoreError> {
        self.store.claim_due(tree, upto, now_ms, until_ms, limit)
    }

    /// See [`Store::claim_keys`].
    pub fn claim_keys(
        &self,
        tree: Tree,
        keys: &[Vec<u8>],
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Option<Vec<Pair>>, StoreError> {
        self.store.claim_keys(tree, keys, now_ms, until_ms)
    }

    /// See [`Store::move_claimed`].
    pub fn move_claimed(
        &self,
        tree: Tree,
        from: &[u8],
        to: &[u8],
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        self.store.move_claimed(tree, from, to, until_ms)
    }

    /// See [`Store::finish_claimed`].
    pub fn finish_claimed(
        &self,
        tree: Tree,
        key: &[u8],
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        self.store.finish_claimed(tree, key, until_ms)
    }

    /// See [`Store::sweep_tokens`].
    pub fn sweep_tokens(&self, now_ms: i64) -> Result<Option<u64>, StoreError> {
        self.store.sweep_tokens(now_ms)
    }

    /// Waits until every write made before this call is durable.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let (tx, rx) = oneshot::channel();
        self.flusher
            .send(tx)
            .map_err(|_| StoreError::Backend("flush thread stopped".into()))?;
        let result = rx
            .await
            .map_err(|_| StoreError::Backend("flush thread stopped".into()))?;
        if let Some(metrics) = self.metrics.get() {
            metrics.store_op(StoreOp::Sync, started.elapsed());
        }
        result
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        tree: Tree,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.timed(StoreOp::Get, || self.store.get(tree, key))?
            .map(|bytes| self.decode(tree, key, &bytes))
            .transpose()
    }

    pub fn put<T: Serialize>(&self, tree: Tree, key: &[u8], value: &T) -> Result<(), StoreError> {
        let bytes = self.encode(tree, key, value)?;
        self.timed(StoreOp::Put, || self.store.put(tree, key, &bytes))
    }

    /// Stores `value` only if `key` is absent; whether it was stored.
    pub fn insert_new<T: Serialize>(
        &self,
        tree: Tree,
        key: &[u8],
        value: &T,
    ) -> Result<bool, StoreError> {
        let bytes = self.encode(tree, key, value)?;
        self.timed(StoreOp::Update, || {
            self.store.compare_and_swap(tree, key, None, Some(&bytes))
        })
    }

    /// The bytes under `key`, stored as they are (components and compiled artifacts).
    pub fn get_raw(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.timed(StoreOp::Get, || self.store.get(tree, key))
    }

    /// Stores `bytes` under `key` as they are.
    pub fn put_raw(&self, tree: Tree, key: &[u8], bytes: &[u8]) -> Result<(), StoreError> {
        self.timed(StoreOp::Put, || self.store.put(tree, key, bytes))
    }

    /// Up to `limit` records under `prefix` in key order, with their keys, undecoded.
    pub fn scan_raw(
        &self,
        tree: Tree,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Pair>, StoreError> {
        self.timed(StoreOp::Scan, || {
            self.store.scan_prefix(tree, prefix, limit, false)
        })
    }

    /// Removes every record whose key starts with `prefix`.
    pub fn remove_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<(), StoreError> {
        loop {
            let batch = self.store.scan_prefix(tree, prefix, 1024, false)?;
            if batch.is_empty() {
                return Ok(());
            }
            for (key, _) in batch {
                self.store.remove(tree, &key)?;
            }
        }
    }

    /// Up to `limit` raw pairs whose key is `start` or after it, in key order: a scan
    /// of a whole tree in chunks.
    pub fn scan_from_raw(
        &self,
        tree: Tree,
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<Pair>, StoreError> {
        self.timed(StoreOp::Scan, || self.store.scan_from(tree, start, limit))
    }

    /// Raw pairs whose key is in `start..end`, in key order or reversed.
    pub fn scan_range_raw(
        &self,
        tree: Tree,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Pair>, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.store.scan_range(tree, start, end, limit, reverse)
    }

    /// Records whose key is in `start..end`, decoded, with their keys, in key order or
    /// reversed: one page of a time-ordered listing.
    pub fn scan_range<T: DeserializeOwned>(
        &self,
        tree: Tree,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.store
            .scan_range(tree, start, end, limit, reverse)?
            .into_iter()
            .map(|(key, bytes)| {
                let value = self.decode(tree, &key, &bytes)?;
                Ok((key, value))
            })
            .collect()
    }

    /// Sets `key` to `new` (or removes it) only if it holds `expected` now, as bytes;
    /// whether it did.
    pub fn compare_and_swap_raw(
        &self,
        tree: Tree,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        self.timed(StoreOp::Update, || {
            self.store.compare_and_swap(tree, key, expected, new)
        })
    }

    pub fn remove(&self, tree: Tree, key: &[u8]) -> Result<bool, StoreError> {
        self.timed(StoreOp::Remove, || self.store.remove(tree, key))
    }

    /// Records under `prefix`, decoded, in key order or reversed.
    pub fn scan<T: DeserializeOwned>(
        &self,
        tree: Tree,
        prefix: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<T>, StoreError> {
        self.timed(StoreOp::Scan, || {
            self.store.scan_prefix(tree, prefix, limit, reverse)
        })?
        .into_iter()
        .map(|(key, bytes)| self.decode(tree, &key, &bytes))
        .collect()
    }

    /// Records under `prefix` with their keys, decoded, in key order or reversed.
    pub fn scan_entries<T: DeserializeOwned>(
        &self,
        tree: Tree,
        prefix: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        self.timed(StoreOp::Scan, || {
            self.store.scan_prefix(tree, prefix, limit, reverse)
        })?
        .into_iter()
        .map(|(key, bytes)| {
            let value = self.decode(tree, &key, &bytes)?;
            Ok((key, value))
        })
        .collect()
    }

    /// Atomically replaces the record under `key` with `update(current)`.
    ///
    /// `update` may run more than once under contention and must be a pure function of
    /// its input. Returning `Err` aborts without writing; `Ok(None)` removes the record.
    pub fn update<T, E, R>(
        &self,
        tree: Tree,
        key: &[u8],
        mut update: impl FnMut(Option<T>) -> Result<(Option<T>, R), E>,
    ) -> Result<R, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<StoreError>,
    {
        self.timed(StoreOp::Update, || {
            self.update_untimed(tree, key, &mut update)
        })
    }

    /// [`Db::update`]'s loop.
    fn update_untimed<T, E, R>(
        &self,
        tree: Tree,
        key: &[u8],
        update: &mut impl FnMut(Option<T>) -> Result<(Option<T>, R), E>,
    ) -> Result<R, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<StoreError>,
    {
        loop {
            let current = self.store.get(tree, key)?;
            let plain = current
                .as_deref()
                .map(|bytes| self.plain(tree, key, bytes))
                .transpose()?;
            let decoded = plain
                .as_deref()
                .map(|json| parse(tree, key, json))
                .transpose()?;
            let (next, result) = update(decoded)?;
            let next_json = next.as_ref().map(to_json).transpose()?;
            // Nothing to write: the read is the update's moment. (Compared as JSON: a
            // sealed record's bytes differ at every write.)
            if next_json.as_deref() == plain.as_deref() {
                return Ok(result);
            }
            let encoded = next_json
                .map(|json| self.stored_form(tree, key, json))
                .transpose()?;
            if self
                .store
                .compare_and_swap(tree, key, current.as_deref(), encoded.as_deref())?
            {
                return Ok(result);
            }
        }
    }
}

impl Db {
    /// `value` as stored under `key` in `tree` (see [`codec`] and [`personal`]).
    fn encode<T: Serialize>(
        &self,
        tree: Tree,
        key: &[u8],
        value: &T,
    ) -> Result<Vec<u8>, StoreError> {
        self.stored_form(tree, key, to_json(value)?)
    }

    /// `json` as stored under `key` in `tree`: compressed when the tree is, then sealed
    /// when the tree holds personal data.
    fn stored_form(&self, tree: Tree, key: &[u8], json: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let record = codec::seal(tree, json)?;
        if !tree.sealed() {
            return Ok(record);
        }
        Ok(self.personal()?.seal(tree, key, &record))
    }

    /// The JSON of the record stored as `bytes` under `key` in `tree`, whichever form
    /// it is in.
    fn plain<'a>(
        &self,
        tree: Tree,
        key: &[u8],
        bytes: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>, StoreError> {
        let corrupt = |message: String| corrupt(tree, key, message);
        if bytes.first() != Some(&personal::SEALED) {
            return codec::open(bytes).map_err(corrupt);
        }
        let opened = self
            .personal()?
            .open(tree, key, bytes)
            .map_err(corrupt)?
            .into_owned();
        // A compressed record decompresses into a buffer of its own; plain JSON is the
        // opened buffer itself.
        if let std::borrow::Cow::Owned(json) = codec::open(&opened).map_err(corrupt)? {
            return Ok(std::borrow::Cow::Owned(json));
        }
        Ok(std::borrow::Cow::Owned(opened))
    }

    fn decode<T: DeserializeOwned>(
        &self,
        tree: Tree,
        key: &[u8],
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        let json = self.plain(tree, key, bytes)?;
        parse(tree, key, &json)
    }

    /// Rewrites the record stored as `bytes` under `from` in `tree` into the form new
    /// records take (sealed where the tree is), under `to` (`None`: the same key);
    /// whether it did. The record moves only if it is unchanged meanwhile and `to` is
    /// free, so a record written since in the new form is never overwritten.
    pub fn restore(
        &self,
        tree: Tree,
        from: &[u8],
        bytes: &[u8],
        to: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let json = self.plain(tree, from, bytes)?.into_owned();
        match to {
            None => {
                let stored = self.stored_form(tree, from, json)?;
                self.store
                    .compare_and_swap(tree, from, Some(bytes), Some(&stored))
            }
            Some(to) => {
                let stored = self.stored_form(tree, to, json)?;
                let moved = self.store.compare_and_swap(tree, to, None, Some(&stored))?;
                self.store.compare_and_swap(tree, from, Some(bytes), None)?;
                Ok(moved)
            }
        }
    }

    /// A record of `tree` read with a raw call, decoded as the typed calls would.
    pub fn decode_raw<T: DeserializeOwned>(
        &self,
        tree: Tree,
        key: &[u8],
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        self.decode(tree, key, bytes)
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value)
        .map_err(|err| StoreError::Backend(format!("cannot encode record: {err}")))
}

fn parse<T: DeserializeOwned>(tree: Tree, key: &[u8], json: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(json).map_err(|err| corrupt(tree, key, err.to_string()))
}

fn corrupt(tree: Tree, key: &[u8], message: String) -> StoreError {
    StoreError::Corrupt {
        tree: tree.name(),
        key: String::from_utf8_lossy(key).into_owned(),
        message,
    }
}

#[cfg(test)]
mod tests;
