//! Warm rule instances: an instance whose call ended cleanly is kept to serve the next
//! call of the same rule binding (one tenant, one plugin, one version), instead of
//! instantiating the component afresh for every call.
//!
//! What this keeps and what it does not:
//! - A warm instance only ever serves the binding it was made for, so nothing crosses
//!   tenants or plugins; each call still gets its own fuel, deadline, flow time, log
//!   and key-value counters (see [`super::host::State::rearm`]). Within a binding a
//!   rule's memory may persist between calls, as if it were a long-lived program; a
//!   rule must not rely on it (state belongs in the key-value store).
//! - An instance that trapped, ran out of fuel or time, or was abandoned by its caller
//!   is dropped, never parked: only a call that returned (an answer or the plugin's own
//!   error) leaves its instance reusable.
//! - Dry runs and rule tests never use warm instances: they run in fresh ones.
//! - Parked instances hold slots of the pooling allocator and their memory, so they are
//!   bounded: per binding (about one per worker thread), per tenant and host-wide
//!   (`[plugin_bounds] warm_instances`, 0 turns reuse off). The pool is sized for the
//!   admitted calls plus the host-wide bound, so parked instances never take a slot an
//!   admitted call needs.
//! - A parked instance keeps the compiled code it was made from; if that code was
//!   evicted and loaded again since, the instance is dropped on its next use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use wasmtime::Store;

use super::host::State;
use super::{LoadedInner, RuleInstance};

/// Warm instances per tenant, at most.
const PER_TENANT: usize = 16;

/// The host-wide bounds on parked instances and the tenants' counts.
#[derive(Debug)]
pub struct WarmBudget {
    host_cap: usize,
    per_binding: usize,
    held: AtomicUsize,
    reused: AtomicU64,
    fresh: AtomicU64,
    tenants: Mutex<HashMap<String, Arc<AtomicUsize>>>,
}

/// Warm-instance figures, for operators and tests.
#[derive(Debug, Clone, Copy, Default, Serialize, utoipa::ToSchema)]
pub struct WarmStats {
    /// Instances parked now.
    pub parked: usize,
    /// The host-wide bound on parked instances.
    pub limit: usize,
    /// Calls served by a warm instance.
    pub reused: u64,
    /// Calls that instantiated afresh.
    pub instantiated: u64,
}

impl WarmBudget {
    /// A budget of `host_cap` parked instances host-wide (0 turns reuse off).
    pub fn new(host_cap: usize) -> Arc<Self> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Arc::new(Self {
            host_cap,
            per_binding: cores.max(2),
            held: AtomicUsize::new(0),
            reused: AtomicU64::new(0),
            fresh: AtomicU64::new(0),
            tenants: Mutex::new(HashMap::new()),
        })
    }

    /// An empty pool for one rule binding of `tenant_id`.
    pub fn pool(self: &Arc<Self>, tenant_id: &str) -> Arc<WarmPool> {
        let tenant = Arc::clone(
            self.tenants
                .lock()
                .entry(tenant_id.to_owned())
                .or_insert_with(|| Arc::new(AtomicUsize::new(0))),
        );
        Arc::new(WarmPool {
            idle: Mutex::new(Vec::new()),
            tenant,
            budget: Arc::clone(self),
        })
    }

    /// The figures now.
    pub fn stats(&self) -> WarmStats {
        WarmStats {
            parked: self.held.load(Ordering::Relaxed),
            limit: self.host_cap,
            reused: self.reused.load(Ordering::Relaxed),
            instantiated: self.fresh.load(Ordering::Relaxed),
        }
    }

    /// Notes a call that instantiated afresh.
    pub(super) fn note_fresh(&self) {
        self.fresh.fetch_add(1, Ordering::Relaxed);
    }
}

/// Takes one from `counter` if it is below `cap`.
fn reserve(counter: &AtomicUsize, cap: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            (held < cap).then_some(held + 1)
        })
        .is_ok()
}

/// An instance kept after a clean call, with the code it was made from.
pub(super) struct Parked {
    pub store: Store<State>,
    pub rule: RuleInstance,
    pub code: Arc<LoadedInner>,
}

/// The warm instances of one rule binding.
pub struct WarmPool {
    idle: Mutex<Vec<Parked>>,
    tenant: Arc<AtomicUsize>,
    budget: Arc<WarmBudget>,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("parked", &self.idle.lock().len())
            .finish()
    }
}

impl WarmPool {
    /// A parked instance made from `code`, if there is one; instances made from code
    /// that has since been evicted and reloaded are dropped.
    pub(super) fn take(&self, code: &Arc<LoadedInner>) -> Option<Parked> {
        loop {
            let parked = self.idle.lock().pop()?;
            self.release(1);
            if Arc::ptr_eq(&parked.code, code) {
                self.budget.reused.fetch_add(1, Ordering::Relaxed);
                return Some(parked);
            }
        }
    }

    /// Keeps `parked` for the next call if the binding, the tenant and the host have
    /// room; drops it otherwise.
    pub(super) fn park(&self, parked: Parked) {
        let budget = &self.budget;
        if self.idle.lock().len() >= budget.per_binding {
            return;
        }
        if !reserve(&budget.held, budget.host_cap) {
            return;
        }
        if !reserve(&self.tenant, PER_TENANT) {
            budget.held.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        self.idle.lock().push(parked);
    }

    /// Instances parked in this pool.
    pub fn parked(&self) -> usize {
        self.idle.lock().len()
    }

    fn release(&self, count: usize) {
        self.tenant.fetch_sub(count, Ordering::AcqRel);
        self.budget.held.fetch_sub(count, Ordering::AcqRel);
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        let count = self.idle.get_mut().len();
        self.release(count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_stops_at_the_cap() {
        let counter = AtomicUsize::new(0);
        assert!(reserve(&counter, 2));
        assert!(reserve(&counter, 2));
        assert!(!reserve(&counter, 2));
        assert_eq!(counter.load(Ordering::Relaxed), 2);
        assert!(
            !reserve(&AtomicUsize::new(0), 0),
            "a zero cap keeps nothing"
        );
    }

    #[test]
    fn pools_of_one_tenant_share_its_count() {
        let budget = WarmBudget::new(100);
        let a = budget.pool("t");
        let b = budget.pool("t");
        let other = budget.pool("u");
        assert!(Arc::ptr_eq(&a.tenant, &b.tenant));
        assert!(!Arc::ptr_eq(&a.tenant, &other.tenant));
    }
}
