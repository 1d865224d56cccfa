//! What plugins keep across calls, and its bounds: each plugin's key-value data under
//! a quota (bytes and keys), its log budget, and the scratch layers dry runs write to.
//!
//! Usage is accounted per plugin in memory: computed once from the store on first use
//! (a scan of the plugin's keys, which the quota keeps small), then updated with every
//! write. A plugin's writes are serialised on its account's lock, so concurrent calls
//! of one plugin never take it past its quota; reads take no lock.
//!
//! A dry run registers a scratch layer under a scope of its own (see
//! [`PluginData::scratch`]): its writes go to the layer, its reads see the layer over
//! the plugin's real data, and the layer is dropped when the dry run ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::store::{key, Db, StoreError, Tree};

use super::Scope;

/// Bounds on what a plugin keeps and logs, settable by the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StorageLimits {
    /// Bytes of keys and values one plugin may keep.
    pub kv_max_bytes: u64,
    /// Keys one plugin may keep.
    pub kv_max_keys: u64,
    /// Key-value writes (set, delete, increment) one call may make.
    pub kv_max_writes_per_call: u32,
    /// Milliseconds one call may spend waiting for the store in key-value operations.
    /// This time is not counted in the call's run time (a round trip to a shared
    /// PostgreSQL store is the store's latency, not the plugin's work); once it is
    /// spent, the call's further key-value operations answer `unavailable`.
    pub kv_time_ms_per_call: u64,
    /// Log lines one plugin may write per minute, across its calls.
    pub log_lines_per_minute: u32,
    /// Bytes of log text one plugin may write per minute, across its calls.
    pub log_bytes_per_minute: u64,
}

impl Default for StorageLimits {
    /// 1 MiB and 1,000 keys, 64 writes and 250 ms of store time a call, 120 log lines
    /// and 32 KiB a minute.
    fn default() -> Self {
        Self {
            kv_max_bytes: 1 << 20,
            kv_max_keys: 1_000,
            kv_max_writes_per_call: 64,
            kv_time_ms_per_call: 250,
            log_lines_per_minute: 120,
            log_bytes_per_minute: 32 << 10,
        }
    }
}

/// How much of its quota a plugin uses: its keys' and values' bytes, and its keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvUsage {
    pub bytes: u64,
    pub keys: u64,
}

/// What the API shows of a plugin's storage and logs.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct StorageView {
    pub kv_bytes: u64,
    pub kv_keys: u64,
    pub kv_max_bytes: u64,
    pub kv_max_keys: u64,
    /// Log lines dropped by the per-minute budget since the server started.
    pub log_lines_dropped: u64,
}

/// Why a key-value operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvFailure {
    Quota,
    Gone,
    Store(String),
}

impl From<StoreError> for KvFailure {
    fn from(err: StoreError) -> Self {
        KvFailure::Store(err.to_string())
    }
}

/// One plugin's account.
#[derive(Default)]
struct Account {
    /// The usage, once computed; the lock serialises the plugin's writes.
    kv: Mutex<Option<KvUsage>>,
    /// Set when the plugin is deleted: calls still holding the account write nothing.
    gone: AtomicBool,
    log: Mutex<LogWindow>,
    dropped_lines: AtomicU64,
}

/// The log budget's current window: a minute of the flows' clock.
#[derive(Default)]
struct LogWindow {
    minute: Option<i64>,
    lines: u32,
    bytes: u64,
}

/// A dry run's writes, over the real data of `plugin_id`.
struct Scratch {
    tenant_id: String,
    plugin_id: String,
    /// Written values; `None` marks a deleted key.
    writes: Mutex<ScratchWrites>,
}

#[derive(Default)]
struct ScratchWrites {
    values: HashMap<String, Option<Vec<u8>>>,
    /// The change in usage the writes would make.
    bytes: i64,
    keys: i64,
}

/// Plugins' data and accounts over the store. Cheap to clone.
#[derive(Clone)]
pub struct PluginData {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    /// Whether other replicas write the same store: usage is then kept in the store
    /// (a record per plugin, updated by compare-and-swap), not in this process.
    shared: bool,
    limits: StorageLimits,
    accounts: Mutex<HashMap<Vec<u8>, Arc<Account>>>,
    scratches: Mutex<HashMap<Vec<u8>, Arc<Scratch>>>,
}

impl std::fmt::Debug for PluginData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginData")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for PluginData {
    type Target = Db;

    fn deref(&self) -> &Db {
        &self.inner.db
    }
}

/// The scope a call's key-value operations resolve to: the plugin's own data, or a
/// dry run's scratch layer over it.
#[derive(Clone)]
pub struct KvTarget {
    tenant_id: String,
    plugin_id: String,
    account: Arc<Account>,
    scratch: Option<Arc<Scratch>>,
}

/// Unregisters a dry run's scratch layer when dropped.
#[derive(Debug)]
pub struct ScratchGuard {
    data: PluginData,
    scope: Scope,
}

impl ScratchGuard {
    /// The scope to run the dry run under.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }
}

impl Drop for ScratchGuard {
    fn drop(&mut self) {
        self.data
            .inner
            .scratches
            .lock()
            .remove(&scope_key(&self.scope.tenant_id, &self.scope.plugin_id));
    }
}

/// A deleted plugin's usage record on a shared store.
const DELETED: &[u8] = b"{\"deleted\":true}";

fn scope_key(tenant_id: &str, plugin_id: &str) -> Vec<u8> {
    key(&[tenant_id, plugin_id])
}

/// The first byte of a value stored as its raw bytes, as an earlier version stored
/// values. Before that, values were JSON arrays of numbers (three to four bytes on disk
/// per byte of value), which always begin with `[`; both are still read.
const RAW: u8 = 0;

/// The first byte, once opened, of a value as stored now: [`NAMED`], the length of the
/// plugin's name for the key (4 bytes, little-endian: the key itself holds only its
/// hash), then the value's bytes; the whole sealed as personal data (see
/// [`crate::store::personal`]), since plugins keep numbers in their keys and values.
const NAMED: u8 = 1;

/// The key of the plugin's value `name`: the name hashed, never in the clear.
fn value_key(db: &Db, tenant_id: &str, plugin_id: &str, name: &str) -> Result<Vec<u8>, KvFailure> {
    Ok(key(&[
        tenant_id,
        plugin_id,
        &db.personal_name(tenant_id, &[plugin_id, name])?,
    ]))
}

/// `value`, named `name`, as stored under `stored_key`.
fn encode(db: &Db, stored_key: &[u8], name: &str, value: &[u8]) -> Result<Vec<u8>, KvFailure> {
    let mut record = Vec::with_capacity(value.len() + 5);
    record.push(NAMED);
    record.extend_from_slice(&(name.len() as u32).to_le_bytes());
    record.extend_from_slice(value);
    Ok(db.personal()?.seal(Tree::PluginKv, stored_key, &record))
}

/// A stored value and the length of its name, when the record says it (records of
/// earlier versions name their key in the clear: the key says it).
fn decode(db: &Db, stored_key: &[u8], bytes: &[u8]) -> Result<(Vec<u8>, Option<u64>), KvFailure> {
    let opened = db
        .personal()?
        .open(Tree::PluginKv, stored_key, bytes)
        .map_err(|err| KvFailure::Store(format!("a stored value does not open: {err}")))?;
    match opened.split_first() {
        Some((&NAMED, rest)) if rest.len() >= 4 => {
            let (length, value) = rest.split_at(4);
            let length = u32::from_le_bytes(length.try_into().expect("4 bytes"));
            Ok((value.to_vec(), Some(u64::from(length))))
        }
        Some((&RAW, value)) => Ok((value.to_vec(), None)),
        _ => serde_json::from_slice(&opened)
            .map(|value| (value, None))
            .map_err(|err| KvFailure::Store(format!("a stored value does not decode: {err}"))),
    }
}

/// Where the store notes that [`migrate`] has run.
const MIGRATED: &[u8] = b"plugin_kv_sealed/v1";

/// Moves the values an earlier version stored under their names in the clear to
/// hashed keys, sealed; once per store (see [`crate::store::personal::migrate`]).
/// Returns how many values moved.
pub fn migrate(db: &Db) -> Result<u64, StoreError> {
    if db.get::<bool>(Tree::Meta, MIGRATED)?.is_some() {
        return Ok(0);
    }
    let mut moved = 0;
    let mut start = Vec::new();
    loop {
        let chunk = db.scan_from_raw(Tree::PluginKv, &start, 1_024)?;
        let Some((last, _)) = chunk.last() else { break };
        start = last.clone();
        start.push(0);
        for (stored_key, bytes) in chunk {
            if bytes.first() == Some(&crate::store::personal::SEALED) {
                continue;
            }
            let Ok(text) = std::str::from_utf8(&stored_key) else {
                continue;
            };
            // Usage records and tombstones are `tenant / plugin`: not values.
            let mut parts = text.splitn(3, '/');
            let (Some(tenant_id), Some(plugin_id), Some(name)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let failed = |err: KvFailure| StoreError::Corrupt {
                tree: Tree::PluginKv.name(),
                key: text.to_owned(),
                message: format!("{err:?}"),
            };
            let (value, _) = decode(db, &stored_key, &bytes).map_err(failed)?;
            let new_key = value_key(db, tenant_id, plugin_id, name).map_err(failed)?;
            let sealed = encode(db, &new_key, name, &value).map_err(failed)?;
            moved += u64::from(db.compare_and_swap_raw(
                Tree::PluginKv,
                &new_key,
                None,
                Some(&sealed),
            )?);
            db.compare_and_swap_raw(Tree::PluginKv, &stored_key, Some(&bytes), None)?;
        }
    }
    db.put(Tree::Meta, MIGRATED, &true)?;
    Ok(moved)
}

fn weight(name: &str, value: &[u8]) -> u64 {
    (name.len() + value.len()) as u64
}

impl PluginData {
    pub fn new(db: Db, limits: StorageLimits) -> Self {
        Self {
            inner: Arc::new(Inner {
                shared: db.is_shared(),
                db,
                limits,
                accounts: Mutex::new(HashMap::new()),
                scratches: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The store.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The bounds in force.
    pub fn limits(&self) -> StorageLimits {
        self.inner.limits
    }

    fn account(&self, tenant_id: &str, plugin_id: &str) -> Arc<Account> {
        Arc::clone(
            self.inner
                .accounts
                .lock()
                .entry(scope_key(tenant_id, plugin_id))
                .or_default(),
        )
    }

    /// Where `scope`'s key-value operations go.
    pub fn target(&self, scope: &Scope) -> KvTarget {
        let scratch = self
            .inner
            .scratches
            .lock()
            .get(&scope_key(&scope.tenant_id, &scope.plugin_id))
            .cloned();
        let (tenant_id, plugin_id) = match &scratch {
            Some(scratch) => (scratch.tenant_id.clone(), scratch.plugin_id.clone()),
            None => (scope.tenant_id.clone(), scope.plugin_id.clone()),
        };
        KvTarget {
            account: self.account(&tenant_id, &plugin_id),
            tenant_id,
            plugin_id,
            scratch,
        }
    }

    /// Registers a scratch layer over the data of `plugin_id` for a dry run; the dry
    /// run runs under the guard's scope, and the layer goes when the guard does.
    pub fn scratch(&self, tenant_id: &str, plugin_id: &str) -> ScratchGuard {
        let scope = Scope {
            tenant_id: tenant_id.to_owned(),
            plugin_id: format!("{plugin_id}#dry-run-{}", uuid::Uuid::new_v4().simple()),
        };
        self.inner.scratches.lock().insert(
            scope_key(&scope.tenant_id, &scope.plugin_id),
            Arc::new(Scratch {
                tenant_id: tenant_id.to_owned(),
                plugin_id: plugin_id.to_owned(),
                writes: Mutex::new(ScratchWrites::default()),
            }),
        );
        ScratchGuard {
            data: self.clone(),
            scope,
        }
    }

    fn prefix(tenant_id: &str, plugin_id: &str) -> Vec<u8> {
        key(&[tenant_id, plugin_id, ""])
    }

    /// The plugin's usage: on a shared store its record's (computed from the store if
    /// it has none yet), else this process's count, computed from the store on first
    /// use.
    fn usage_locked(
        &self,
        slot: &mut Option<KvUsage>,
        tenant_id: &str,
        plugin_id: &str,
    ) -> Result<KvUsage, KvFailure> {
        if self.inner.shared {
            return Ok(self.shared_usage(tenant_id, plugin_id)?.1);
        }
        if let Some(usage) = *slot {
            return Ok(usage);
        }
        let usage = self.counted_usage(tenant_id, plugin_id)?;
        *slot = Some(usage);
        Ok(usage)
    }

    /// On a shared store: the plugin's usage record as stored (`None`: not yet), and
    /// the usage (the record's, or counted from the data). The record lives in the
    /// plugin key-value tree under `tenant id / plugin id`, beside (never under) the
    /// plugin's own keys.
    fn shared_usage(
        &self,
        tenant_id: &str,
        plugin_id: &str,
    ) -> Result<(Option<Vec<u8>>, KvUsage), KvFailure> {
        let record = self
            .inner
            .db
            .get_raw(Tree::PluginKv, &scope_key(tenant_id, plugin_id))?;
        if record.as_deref() == Some(DELETED) {
            return Err(KvFailure::Gone);
        }
        let usage = match &record {
            Some(bytes) => serde_json::from_slice(bytes).map_err(|err| {
                KvFailure::Store(format!("a plugin's usage record does not decode: {err}"))
            })?,
            None => self.counted_usage(tenant_id, plugin_id)?,
        };
        Ok((record, usage))
    }

    /// On a shared store: changes the plugin's usage record by `step` (bytes, keys),
    /// refusing a growth past the quota when `check`; the usage after. A
    /// compare-and-swap, so replicas writing at once each count.
    fn reserve(
        &self,
        tenant_id: &str,
        plugin_id: &str,
        (bytes, keys): (i64, i64),
        check: bool,
    ) -> Result<KvUsage, KvFailure> {
        let key = scope_key(tenant_id, plugin_id);
        loop {
            let (record, before) = self.shared_usage(tenant_id, plugin_id)?;
            let after = KvUsage {
                bytes: before.bytes.saturating_add_signed(bytes),
                keys: before.keys.saturating_add_signed(keys),
            };
            if check && self.would_exceed(before, after) {
                return Err(KvFailure::Quota);
            }
            let encoded = serde_json::to_vec(&after)
                .map_err(|err| KvFailure::Store(format!("cannot encode usage: {err}")))?;
            if self.inner.db.compare_and_swap_raw(
                Tree::PluginKv,
                &key,
                record.as_deref(),
                Some(&encoded),
            )? {
                return Ok(after);
            }
        }
    }

    /// Whether the plugin was deleted (on a shared store: its usage record is the
    /// tombstone).
    fn deleted(&self, tenant_id: &str, plugin_id: &str) -> Result<bool, KvFailure> {
        let record = self
            .inner
            .db
            .get_raw(Tree::PluginKv, &scope_key(tenant_id, plugin_id))?;
        Ok(record.as_deref() == Some(DELETED))
    }

    /// The plugin's usage, counted from its data.
    fn counted_usage(&self, tenant_id: &str, plugin_id: &str) -> Result<KvUsage, KvFailure> {
        let prefix = Self::prefix(tenant_id, plugin_id);
        let mut usage = KvUsage::default();
        for (key, bytes) in self
            .inner
            .db
            .scan_raw(Tree::PluginKv, &prefix, usize::MAX)?
        {
            let (value, name) = decode(&self.inner.db, &key, &bytes)?;
            usage.keys += 1;
            usage.bytes += name.unwrap_or((key.len() - prefix.len()) as u64) + value.len() as u64;
        }
        Ok(usage)
    }

    /// What the plugin uses of its quota, and its dropped log lines.
    pub fn view(&self, tenant_id: &str, plugin_id: &str) -> Result<StorageView, StoreError> {
        let account = self.account(tenant_id, plugin_id);
        let usage = {
            let mut slot = account.kv.lock();
            match self.usage_locked(&mut slot, tenant_id, plugin_id) {
                Err(KvFailure::Gone) => Ok(KvUsage::default()),
                other => other,
            }
            .map_err(|err| match err {
                KvFailure::Store(message) => StoreError::Backend(message),
                _ => StoreError::Backend("the plugin's data is gone".to_owned()),
            })?
        };
        Ok(StorageView {
            kv_bytes: usage.bytes,
            kv_keys: usage.keys,
            kv_max_bytes: self.inner.limits.kv_max_bytes,
            kv_max_keys: self.inner.limits.kv_max_keys,
            log_lines_dropped: account.dropped_lines.load(Ordering::Relaxed),
        })
    }

    /// Removes the plugin's data and account; calls still running write nothing more.
    pub fn forget(&self, tenant_id: &str, plugin_id: &str) -> Result<(), StoreError> {
        let account = self
            .inner
            .accounts
            .lock()
            .remove(&scope_key(tenant_id, plugin_id));
        let _writes = account.as_ref().map(|account| {
            account.gone.store(true, Ordering::SeqCst);
            account.kv.lock()
        });
        let record = scope_key(tenant_id, plugin_id);
        if self.inner.shared {
            // Calls still running on other replicas: their accounts are theirs. The
            // usage record becomes a tombstone before the data goes, so a write that
            // reserves after this is refused, and one that reserved before and lands
            // after the removal below finds the tombstone when it looks again, and
            // takes its value back (see `write`). Plugin ids are never reused, so the
            // tombstone (a few bytes) stays.
            self.inner.db.put_raw(Tree::PluginKv, &record, DELETED)?;
        }
        self.inner
            .db
            .remove_prefix(Tree::PluginKv, &Self::prefix(tenant_id, plugin_id))?;
        if !self.inner.shared {
            self.inner.db.remove(Tree::PluginKv, &record)?;
        }
        Ok(())
    }

    fn would_exceed(&self, before: KvUsage, after: KvUsage) -> bool {
        let limits = &self.inner.limits;
        (after.bytes > limits.kv_max_bytes && after.bytes > before.bytes)
            || (after.keys > limits.kv_max_keys && after.keys > before.keys)
    }

    /// The value under `name`.
    pub fn get(&self, target: &KvTarget, name: &str) -> Result<Option<Vec<u8>>, KvFailure> {
        if let Some(scratch) = &target.scratch {
            if let Some(value) = scratch.writes.lock().values.get(name) {
                return Ok(value.clone());
            }
        }
        let key = value_key(&self.inner.db, &target.tenant_id, &target.plugin_id, name)?;
        match self.inner.db.get_raw(Tree::PluginKv, &key)? {
            Some(bytes) => Ok(Some(decode(&self.inner.db, &key, &bytes)?.0)),
            None => Ok(None),
        }
    }

    /// Replaces the value under `name` with what `change` makes of the current one
    /// (`None`: absent), within the quota; returns what `change` returned.
    pub fn write<R>(
        &self,
        target: &KvTarget,
        name: &str,
        change: impl Fn(Option<&[u8]>) -> Result<(Option<Vec<u8>>, R), KvFailure>,
    ) -> Result<R, KvFailure> {
        let mut slot = target.account.kv.lock();
        if target.account.gone.load(Ordering::SeqCst) {
            return Err(KvFailure::Gone);
        }
        // A shared store's writes take their usage from its record as they go.
        let real = if self.inner.shared && target.scratch.is_none() {
            KvUsage::default()
        } else {
            self.usage_locked(&mut slot, &target.tenant_id, &target.plugin_id)?
        };
        let key = value_key(&self.inner.db, &target.tenant_id, &target.plugin_id, name)?;
        let stored = |db: &Db| -> Result<Option<Vec<u8>>, KvFailure> {
            db.get_raw(Tree::PluginKv, &key)?
                .map(|bytes| decode(db, &key, &bytes).map(|(value, _)| value))
                .transpose()
        };
        let delta = |old: &Option<Vec<u8>>, new: &Option<Vec<u8>>| -> (i64, i64) {
            let size = |value: &Option<Vec<u8>>| {
                value.as_ref().map_or(0, |value| weight(name, value) as i64)
            };
            (
                size(new) - size(old),
                i64::from(new.is_some()) - i64::from(old.is_some()),
            )
        };
        let apply = |usage: KvUsage, (bytes, keys): (i64, i64)| KvUsage {
            bytes: usage.bytes.saturating_add_signed(bytes),
            keys: usage.keys.saturating_add_signed(keys),
        };
        match &target.scratch {
            Some(scratch) => {
                let mut writes = scratch.writes.lock();
                let old = match writes.values.get(name) {
                    Some(value) => value.clone(),
                    None => stored(&self.inner.db)?,
                };
                let (new, answer) = change(old.as_deref())?;
                let before = apply(real, (writes.bytes, writes.keys));
                let step = delta(&old, &new);
                if self.would_exceed(before, apply(before, step)) {
                    return Err(KvFailure::Quota);
                }
                writes.bytes += step.0;
                writes.keys += step.1;
                writes.values.insert(name.to_owned(), new);
                Ok(answer)
            }
            // A compare-and-swap against the value read, so a write made meanwhile by
            // another replica sharing the store is never lost: an increment on two
            // replicas at once counts twice.
            None => loop {
                let raw = self.inner.db.get_raw(Tree::PluginKv, &key)?;
                let old = raw
                    .as_deref()
                    .map(|bytes| decode(&self.inner.db, &key, bytes).map(|(value, _)| value))
                    .transpose()?;
                let (new, answer) = change(old.as_deref())?;
                let step = delta(&old, &new);
                // On a shared store the usage record is taken first (within the quota)
                // and given back if the value changed meanwhile; a replica that dies
                // in between leaves the plugin counted high, never low.
                let reserved = self.inner.shared && step != (0, 0);
                let after = if reserved {
                    self.reserve(&target.tenant_id, &target.plugin_id, step, true)?
                } else {
                    let after = apply(real, step);
                    if self.would_exceed(real, after) {
                        return Err(KvFailure::Quota);
                    }
                    after
                };
                let encoded = new
                    .as_deref()
                    .map(|value| encode(&self.inner.db, &key, name, value))
                    .transpose()?;
                if self.inner.db.compare_and_swap_raw(
                    Tree::PluginKv,
                    &key,
                    raw.as_deref(),
                    encoded.as_deref(),
                )? {
                    if !self.inner.shared {
                        *slot = Some(after);
                    }
                    // Deleted on another replica between the reservation and this
                    // write: the deletion's removal may have run before the write, so
                    // the write takes its own value back.
                    if reserved && self.deleted(&target.tenant_id, &target.plugin_id)? {
                        self.inner.db.compare_and_swap_raw(
                            Tree::PluginKv,
                            &key,
                            encoded.as_deref(),
                            None,
                        )?;
                        return Err(KvFailure::Gone);
                    }
                    return Ok(answer);
                }
                if reserved {
                    self.reserve(
                        &target.tenant_id,
                        &target.plugin_id,
                        (-step.0, -step.1),
                        false,
                    )?;
                }
            },
        }
    }

    /// Whether the plugin may write a log line of `bytes` at the flows' time
    /// `now_millis`; counts a refused line. The budget renews each minute of the flows'
    /// clock; the first refusal in a minute is reported once in the host's own log.
    pub fn admit_log(&self, target: &KvTarget, bytes: usize, now_millis: i64) -> bool {
        let limits = &self.inner.limits;
        let mut window = target.account.log.lock();
        let minute = now_millis.div_euclid(60_000);
        if window.minute != Some(minute) {
            *window = LogWindow {
                minute: Some(minute),
                lines: 0,
                bytes: 0,
            };
        }
        let bytes = bytes as u64;
        if window.lines >= limits.log_lines_per_minute
            || window.bytes + bytes > limits.log_bytes_per_minute
        {
            let before = target.account.dropped_lines.fetch_add(1, Ordering::Relaxed);
            // Report the budget once per window: when this window's first line drops.
            if window.lines != u32::MAX {
                window.lines = u32::MAX;
                tracing::warn!(
                    tenant = %target.tenant_id,
                    plugin = %target.plugin_id,
                    dropped_so_far = before + 1,
                    "plugin log budget spent; its lines are dropped until the minute is over"
                );
            }
            return false;
        }
        window.lines += 1;
        window.bytes += bytes;
        true
    }
}
