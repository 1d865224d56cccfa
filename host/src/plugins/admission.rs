//! Admission of plugin calls: every tenant gets a share of the sandbox, not a common pool.
//!
//! The pooling allocator has a fixed number of component instances. A call takes a
//! slot of its lane (rule chains or adapter calls) only after a slot of its tenant's
//! own share of that lane, so one tenant can hold at most its share however many
//! requests it sends, and the lanes together stay below the pool's size. Adapters wait
//! on the network while they hold an instance, so they have their own lane and
//! cannot starve rules; a provider's receipts take the adapter lane with a tenant
//! share of their own, so they never wait behind the tenant's sends (a gateway that
//! answers a send only once its earlier receipts are taken would otherwise stall
//! both). Waiting for a slot is bounded; a tenant also has a plugin
//! CPU-time budget (wall time of its rule chains, measured outside the guest) refilled
//! at a steady rate, enforced while other tenants are active. A call refused for load
//! comes back as [`Failure::Overloaded`], which the flows record and treat like any
//! failed rule: the tenant's `on_plugin_failure` setting decides.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Failure;

/// Component instances of the pooling allocator.
pub const POOL_INSTANCES: usize = 256;
/// Instances kept out of both lanes: calls whose caller gave up on them may still
/// hold one until their deadline stops them.
const POOL_MARGIN: usize = 32;
/// How long after the last call of another tenant the CPU budgets still apply.
const CONTENTION_WINDOW_MS: u64 = 1_000;

/// The operator's caps on plugin calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares {
    /// Rule chains running at once, all tenants together.
    pub rule_calls: usize,
    /// Rule chains one tenant may run at once.
    pub rule_calls_per_tenant: usize,
    /// Adapter calls (sends, callbacks, lookups) in flight, all tenants together.
    pub adapter_calls: usize,
    /// Adapter calls one tenant may have in flight.
    pub adapter_calls_per_tenant: usize,
    /// Longest wait for a rule slot before the call is refused as overloaded, in ms.
    pub queue_ms: u64,
    /// Longest wait for an adapter slot, in ms: a send or receipt queues behind its
    /// tenant's calls waiting on the network rather than failing at once, within the
    /// time a provider is given anyway.
    pub adapter_queue_ms: u64,
    /// Plugin CPU time (ms) a tenant's budget gains per second; the budget holds at
    /// most one second's worth.
    pub cpu_ms_per_sec: u64,
}

impl Default for Shares {
    /// 128 rule chains and 96 adapter calls at once (of 256 instances), 8 and 16 per
    /// tenant, a 100 ms wait for a rule slot and 1 s for an adapter slot, and a tenth of the machine's cores as each tenant's CPU
    /// budget (100 ms per second per core).
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as u64;
        Self {
            rule_calls: 128,
            rule_calls_per_tenant: 8,
            adapter_calls: 96,
            adapter_calls_per_tenant: 16,
            queue_ms: 100,
            adapter_queue_ms: 1_000,
            cpu_ms_per_sec: 100 * cores,
        }
    }
}

impl Shares {
    /// The shares with every cap at least 1 and the lanes within the pool: when the
    /// two lanes ask for more than the pool holds, both are scaled down.
    pub fn clamped(mut self) -> Self {
        let room = POOL_INSTANCES - POOL_MARGIN;
        self.rule_calls = self.rule_calls.max(1);
        self.adapter_calls = self.adapter_calls.max(1);
        let asked = self.rule_calls + self.adapter_calls;
        if asked > room {
            self.rule_calls = (self.rule_calls * room / asked).max(1);
            self.adapter_calls = (room - self.rule_calls).max(1);
        }
        self.rule_calls_per_tenant = self.rule_calls_per_tenant.clamp(1, self.rule_calls);
        self.adapter_calls_per_tenant = self.adapter_calls_per_tenant.clamp(1, self.adapter_calls);
        self.cpu_ms_per_sec = self.cpu_ms_per_sec.max(1);
        self
    }
}

/// Which lane a call takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Rules,
    /// Sends and lookups, which hold their instance while the network answers.
    Adapters,
    /// Providers' receipts parsed by their adapter: the host's adapter lane, but a
    /// tenant share of their own, so receipts never queue behind the tenant's sends
    /// (whose provider may itself be waiting for those receipts to be taken).
    Callbacks,
}

/// One tenant's share.
#[derive(Debug)]
struct TenantShare {
    rules: Arc<Semaphore>,
    adapters: Arc<Semaphore>,
    callbacks: Arc<Semaphore>,
    budget: Mutex<Bucket>,
}

/// CPU budget in microseconds; it may go into debt by what the last call overran.
#[derive(Debug)]
struct Bucket {
    micros: i64,
    at: Instant,
}

/// The admission control of one runtime.
#[derive(Debug)]
pub struct Admission {
    shares: Shares,
    rules: Arc<Semaphore>,
    adapters: Arc<Semaphore>,
    tenants: RwLock<HashMap<String, Arc<TenantShare>>>,
    epoch: Instant,
    /// Hash of the tenant seen last, and until when (ms since `epoch`) more than one
    /// tenant counts as active.
    last_tenant: AtomicU64,
    shared_until_ms: AtomicU64,
}

/// A granted slot: held for the length of the call, returned when dropped.
#[derive(Debug)]
pub struct Permit {
    _tenant: OwnedSemaphorePermit,
    _lane: OwnedSemaphorePermit,
    share: Arc<TenantShare>,
    rate: u64,
}

impl Permit {
    /// Charges `used` wall time to the tenant's CPU budget.
    pub fn charge(&self, used: Duration) {
        charge(&self.share, self.rate, used);
    }
}

impl Admission {
    pub fn new(shares: Shares) -> Self {
        let shares = shares.clamped();
        Self {
            shares,
            rules: Arc::new(Semaphore::new(shares.rule_calls)),
            adapters: Arc::new(Semaphore::new(shares.adapter_calls)),
            tenants: RwLock::new(HashMap::new()),
            epoch: Instant::now(),
            last_tenant: AtomicU64::new(0),
            shared_until_ms: AtomicU64::new(0),
        }
    }

    /// The shares in force.
    pub fn shares(&self) -> Shares {
        self.shares
    }

    /// Notes that `tenant` is active (a flow ran for it), so the CPU budgets of the
    /// others apply.
    pub fn note(&self, tenant: &str) {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        tenant.hash(&mut hasher);
        let hash = hasher.finish() | 1;
        let previous = self.last_tenant.swap(hash, Ordering::Relaxed);
        if previous != hash && previous != 0 {
            self.shared_until_ms
                .store(self.now_ms() + CONTENTION_WINDOW_MS, Ordering::Relaxed);
        }
    }

    /// Whether more than one tenant was active lately.
    fn contended(&self) -> bool {
        self.now_ms() < self.shared_until_ms.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn share(&self, tenant: &str) -> Arc<TenantShare> {
        if let Some(share) = self.tenants.read().get(tenant) {
            return Arc::clone(share);
        }
        let mut tenants = self.tenants.write();
        Arc::clone(tenants.entry(tenant.to_owned()).or_insert_with(|| {
            Arc::new(TenantShare {
                rules: Arc::new(Semaphore::new(self.shares.rule_calls_per_tenant)),
                adapters: Arc::new(Semaphore::new(self.shares.adapter_calls_per_tenant)),
                callbacks: Arc::new(Semaphore::new(self.shares.adapter_calls_per_tenant)),
                budget: Mutex::new(Bucket {
                    micros: self.capacity_micros(),
                    at: Instant::now(),
                }),
            })
        }))
    }

    fn capacity_micros(&self) -> i64 {
        i64::try_from(self.shares.cpu_ms_per_sec.saturating_mul(1_000)).unwrap_or(i64::MAX)
    }

    /// A slot for one of `tenant`'s calls in `lane`, waiting at most the configured
    /// time; or why not.
    pub async fn admit(&self, tenant: &str, lane: Lane) -> Result<Permit, Failure> {
        self.note(tenant);
        let share = self.share(tenant);
        if lane == Lane::Rules && self.contended() && !self.has_budget(&share) {
            return Err(Failure::Overloaded {
                reason: format!(
                    "tenant {tenant} used up its plugin CPU budget of {} ms per second (the operator's plugin_cpu_ms_per_sec)",
                    self.shares.cpu_ms_per_sec
                ),
            });
        }
        let (own, lane_slots, own_cap, lane_cap, what, setting, queue_ms) = match lane {
            Lane::Rules => (
                &share.rules,
                &self.rules,
                self.shares.rule_calls_per_tenant,
                self.shares.rule_calls,
                "rule",
                "plugin_calls",
                self.shares.queue_ms,
            ),
            Lane::Adapters => (
                &share.adapters,
                &self.adapters,
                self.shares.adapter_calls_per_tenant,
                self.shares.adapter_calls,
                "adapter",
                "adapter_calls",
                self.shares.adapter_queue_ms,
            ),
            Lane::Callbacks => (
                &share.callbacks,
                &self.adapters,
                self.shares.adapter_calls_per_tenant,
                self.shares.adapter_calls,
                "callback",
                "adapter_calls",
                self.shares.adapter_queue_ms,
            ),
        };
        let wait = Duration::from_millis(queue_ms);
        let until = tokio::time::Instant::now() + wait;
        let tenant_permit = acquire(own, until).await.ok_or_else(|| Failure::Overloaded {
            reason: format!(
                "tenant {tenant} already runs its share of {own_cap} {what} calls and none ended within {queue_ms} ms (the operator's {setting}_per_tenant)",
            ),
        })?;
        let lane_permit =
            acquire(lane_slots, until)
                .await
                .ok_or_else(|| Failure::Overloaded {
                    reason: format!(
                        "all {lane_cap} {what} call slots of the host are busy and none freed within {queue_ms} ms (the operator's {setting})",
                    ),
                })?;
        Ok(Permit {
            _tenant: tenant_permit,
            _lane: lane_permit,
            share,
            rate: self.shares.cpu_ms_per_sec,
        })
    }

    /// Whether the tenant's budget, refilled to now, has time left.
    fn has_budget(&self, share: &TenantShare) -> bool {
        let mut bucket = share.budget.lock();
        refill(&mut bucket, self.shares.cpu_ms_per_sec);
        bucket.micros > 0
    }
}

/// A permit of `semaphore`, at once when one is free, else waiting until `until`.
async fn acquire(
    semaphore: &Arc<Semaphore>,
    until: tokio::time::Instant,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = Arc::clone(semaphore).try_acquire_owned() {
        return Some(permit);
    }
    tokio::time::timeout_at(until, Arc::clone(semaphore).acquire_owned())
        .await
        .ok()?
        .ok()
}

fn refill(bucket: &mut Bucket, rate_ms_per_sec: u64) {
    let now = Instant::now();
    let elapsed = now.saturating_duration_since(bucket.at).as_micros();
    // `rate` ms per second is `rate` µs per ms: elapsed µs × rate / 1000.
    let gained = elapsed.saturating_mul(u128::from(rate_ms_per_sec)) / 1_000;
    let capacity = i64::try_from(rate_ms_per_sec.saturating_mul(1_000)).unwrap_or(i64::MAX);
    bucket.micros = bucket
        .micros
        .saturating_add(i64::try_from(gained).unwrap_or(i64::MAX))
        .min(capacity);
    bucket.at = now;
}

fn charge(share: &TenantShare, rate_ms_per_sec: u64, used: Duration) {
    let mut bucket = share.budget.lock();
    refill(&mut bucket, rate_ms_per_sec);
    let capacity = i64::try_from(rate_ms_per_sec.saturating_mul(1_000)).unwrap_or(i64::MAX);
    let used = i64::try_from(used.as_micros()).unwrap_or(i64::MAX);
    // The debt is bounded so a tenant that was alone and busy is not shut out for long
    // once another arrives.
    bucket.micros = bucket.micros.saturating_sub(used).max(-capacity);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares() -> Shares {
        Shares {
            rule_calls: 4,
            rule_calls_per_tenant: 2,
            adapter_calls: 4,
            adapter_calls_per_tenant: 1,
            queue_ms: 20,
            adapter_queue_ms: 20,
            cpu_ms_per_sec: 5,
        }
    }

    #[tokio::test]
    async fn a_tenant_holds_at_most_its_share_and_others_still_get_slots() {
        let admission = Admission::new(shares());
        let first = admission.admit("a", Lane::Rules).await.expect("slot");
        let second = admission.admit("a", Lane::Rules).await.expect("slot");
        let refused = admission
            .admit("a", Lane::Rules)
            .await
            .expect_err("share used");
        assert!(matches!(refused, Failure::Overloaded { .. }), "{refused:?}");
        admission
            .admit("b", Lane::Rules)
            .await
            .expect("b has its own share");
        drop(first);
        admission
            .admit("a", Lane::Rules)
            .await
            .expect("a slot came back");
        drop(second);
    }

    #[tokio::test]
    async fn adapters_have_their_own_lane() {
        let admission = Admission::new(shares());
        let _held = admission.admit("a", Lane::Adapters).await.expect("slot");
        admission
            .admit("a", Lane::Adapters)
            .await
            .expect_err("one adapter call per tenant");
        admission
            .admit("a", Lane::Rules)
            .await
            .expect("rules are not held up by adapters");
    }

    #[tokio::test]
    async fn receipts_do_not_queue_behind_the_tenants_sends() {
        let admission = Admission::new(shares());
        let _send = admission.admit("a", Lane::Adapters).await.expect("slot");
        let receipt = admission
            .admit("a", Lane::Callbacks)
            .await
            .expect("a receipt has a share of its own");
        admission
            .admit("a", Lane::Callbacks)
            .await
            .expect_err("one callback per tenant");
        drop(receipt);
        admission
            .admit("a", Lane::Callbacks)
            .await
            .expect("the receipt's slot came back");
    }

    #[tokio::test]
    async fn the_cpu_budget_applies_while_another_tenant_is_active() {
        let admission = Admission::new(shares());
        let permit = admission.admit("a", Lane::Rules).await.expect("slot");
        permit.charge(Duration::from_millis(50));
        drop(permit);
        // Alone, the tenant is not held back by its budget.
        admission.admit("a", Lane::Rules).await.expect("alone");
        admission.note("b");
        let refused = admission.admit("a", Lane::Rules).await.expect_err("budget");
        assert!(
            matches!(&refused, Failure::Overloaded { reason } if reason.contains("CPU budget")),
            "{refused:?}"
        );
        admission
            .admit("b", Lane::Rules)
            .await
            .expect("b has budget");
    }

    #[test]
    fn lanes_stay_within_the_pool() {
        let shares = Shares {
            rule_calls: 1000,
            adapter_calls: 1000,
            rule_calls_per_tenant: 5000,
            ..Shares::default()
        }
        .clamped();
        assert!(shares.rule_calls + shares.adapter_calls <= POOL_INSTANCES - POOL_MARGIN);
        assert!(shares.rule_calls_per_tenant <= shares.rule_calls);
    }
}
