//! Compiled plugin code in memory, under a budget.
//!
//! A [`Slot`] stands for one component (by content hash): it holds the compiled,
//! pre-instantiated code while it is resident, and nothing once evicted. Live
//! snapshots and calls hold slots, not code, so a plugin can be known to the host
//! without its code being in memory: code is loaded on first use (from the compiled
//! artifact in the store, which is a deserialisation, not a compilation) and, when
//! the resident code passes the operator's budget, the least recently used slots are
//! evicted. A call in flight keeps the code it started with until it ends. First-party
//! plugins are pinned: installing one stays immediate.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::{Kind, LoadedInner};

/// The resident code of all slots and the budget it is held to.
#[derive(Debug)]
pub(super) struct CodeCache {
    budget: usize,
    slots: Mutex<Vec<Weak<Slot>>>,
    counters: Arc<Counters>,
    tick: AtomicU64,
}

/// What the cache counts, shared with its slots (a dropped slot gives its bytes back).
#[derive(Debug, Default)]
struct Counters {
    resident_bytes: AtomicUsize,
    reloads: AtomicU64,
    evictions: AtomicU64,
}

/// The cache's figures, for operators and tests.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, utoipa::ToSchema)]
pub struct CodeStats {
    /// Bytes of compiled code in memory.
    pub resident_bytes: usize,
    /// The budget resident code is held to.
    pub budget_bytes: usize,
    /// Components in memory.
    pub resident: usize,
    /// Components loaded again after an eviction (or first used after a restart).
    pub reloads: u64,
    /// Components evicted to stay within the budget.
    pub evictions: u64,
}

/// One component's place in the cache.
pub(super) struct Slot {
    pub(super) sha256: String,
    pub(super) kind: Kind,
    code: Mutex<Option<Resident>>,
    last_used: AtomicU64,
    pinned: AtomicBool,
    counters: Arc<Counters>,
}

struct Resident {
    inner: Arc<LoadedInner>,
    bytes: usize,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("sha256", &self.sha256)
            .field("kind", &self.kind)
            .field("resident", &self.code.lock().is_some())
            .finish_non_exhaustive()
    }
}

impl Slot {
    /// Whether the code is in memory now.
    pub(super) fn is_resident(&self) -> bool {
        self.code.lock().is_some()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(resident) = self.code.get_mut().take() {
            self.counters
                .resident_bytes
                .fetch_sub(resident.bytes, Ordering::Relaxed);
        }
    }
}

impl CodeCache {
    /// A cache holding at most `budget` bytes of code (at least one component always
    /// stays resident while it is used, whatever its size).
    pub(super) fn new(budget: usize) -> Self {
        Self {
            budget,
            slots: Mutex::new(Vec::new()),
            counters: Arc::new(Counters::default()),
            tick: AtomicU64::new(0),
        }
    }

    /// A slot for the component `sha256`, resident with `code` when given, and never
    /// evicted when `pinned`.
    pub(super) fn slot(
        &self,
        sha256: &str,
        kind: Kind,
        code: Option<(LoadedInner, usize)>,
        pinned: bool,
    ) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            sha256: sha256.to_owned(),
            kind,
            code: Mutex::new(None),
            last_used: AtomicU64::new(self.next_tick()),
            pinned: AtomicBool::new(pinned),
            counters: Arc::clone(&self.counters),
        });
        {
            let mut slots = self.slots.lock();
            slots.retain(|weak| weak.strong_count() > 0);
            slots.push(Arc::downgrade(&slot));
        }
        if let Some((inner, bytes)) = code {
            self.fill(&slot, Arc::new(inner), bytes);
        }
        slot
    }

    /// The slot's code when it is resident, marked as just used.
    pub(super) fn get(&self, slot: &Slot) -> Option<Arc<LoadedInner>> {
        let code = slot.code.lock();
        let inner = code.as_ref().map(|resident| Arc::clone(&resident.inner))?;
        slot.last_used.store(self.next_tick(), Ordering::Relaxed);
        Some(inner)
    }

    /// The slot's code, loaded with `load` (once, whatever the number of callers
    /// waiting) when it is not resident.
    pub(super) fn get_or_load<E>(
        &self,
        slot: &Slot,
        load: impl FnOnce() -> Result<(LoadedInner, usize), E>,
    ) -> Result<Arc<LoadedInner>, E> {
        let mut code = slot.code.lock();
        if let Some(resident) = code.as_ref() {
            slot.last_used.store(self.next_tick(), Ordering::Relaxed);
            return Ok(Arc::clone(&resident.inner));
        }
        let (inner, bytes) = load()?;
        let inner = Arc::new(inner);
        *code = Some(Resident {
            inner: Arc::clone(&inner),
            bytes,
        });
        drop(code);
        self.counters.reloads.fetch_add(1, Ordering::Relaxed);
        self.admitted(slot, bytes);
        Ok(inner)
    }

    /// Keeps the slot's code resident whatever the budget.
    pub(super) fn pin(&self, slot: &Slot) {
        slot.pinned.store(true, Ordering::Relaxed);
    }

    /// The cache's figures.
    pub(super) fn stats(&self) -> CodeStats {
        let resident = self
            .slots
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            // A slot being loaded holds its lock; it is not resident yet.
            .filter(|slot| slot.code.try_lock().is_some_and(|code| code.is_some()))
            .count();
        CodeStats {
            resident_bytes: self.counters.resident_bytes.load(Ordering::Relaxed),
            budget_bytes: self.budget,
            resident,
            reloads: self.counters.reloads.load(Ordering::Relaxed),
            evictions: self.counters.evictions.load(Ordering::Relaxed),
        }
    }

    fn next_tick(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::Relaxed)
    }

    fn fill(&self, slot: &Slot, inner: Arc<LoadedInner>, bytes: usize) {
        let mut code = slot.code.lock();
        if code.is_some() {
            return;
        }
        *code = Some(Resident { inner, bytes });
        drop(code);
        self.admitted(slot, bytes);
    }

    /// Counts `bytes` of `slot` as resident, then evicts the least recently used
    /// unpinned slots other than `slot` until the resident code is within the budget.
    fn admitted(&self, slot: &Slot, bytes: usize) {
        let resident = self
            .counters
            .resident_bytes
            .fetch_add(bytes, Ordering::Relaxed)
            + bytes;
        if resident <= self.budget {
            return;
        }
        let mut candidates: Vec<(u64, Arc<Slot>)> = self
            .slots
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|other| !std::ptr::eq(other.as_ref(), slot))
            .filter(|other| !other.pinned.load(Ordering::Relaxed))
            .map(|other| (other.last_used.load(Ordering::Relaxed), other))
            .collect();
        candidates.sort_by_key(|(used, _)| *used);
        for (_, other) in candidates {
            if self.counters.resident_bytes.load(Ordering::Relaxed) <= self.budget {
                break;
            }
            // A slot being loaded is skipped, not waited for.
            let evicted = other.code.try_lock().and_then(|mut code| code.take());
            if let Some(evicted) = evicted {
                self.counters
                    .resident_bytes
                    .fetch_sub(evicted.bytes, Ordering::Relaxed);
                self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(sha256 = other.sha256, "evicted compiled plugin code");
            }
        }
    }
}
