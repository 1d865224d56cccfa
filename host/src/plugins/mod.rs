//! The plugin runtime: loads WebAssembly components of the contract's worlds and runs
//! them in a sandbox. The only module that names wasmtime.
//!
//! Loading checks what a component is before anything is compiled, by parsing it (see
//! [`inspect`]): the contract's API version (from its imports), its world (from its
//! exports), every import against what that world grants (naming the first import
//! that is not granted), and size limits. The version decides the bindings a component
//! is called through: this host's (0.2.0, [`wit`]) or the 0.1 line's (`v0_1`), which
//! keep components built before 0.2.0 running. Compiling runs under a bound on
//! concurrent compilations.
//! Compiled code is cached in the store by content hash and engine fingerprint, stored
//! only once the component passed every check, so a restart loads plugins without
//! compiling them again.
//!
//! A call runs in an instance made for it from a pre-instantiated component and the
//! pooling allocator, or in a warm instance of the same binding (one tenant, one
//! plugin, one version) whose last call returned ([`warm`]): nothing crosses tenants or
//! plugins, and dry runs, rule tests and the command line always get fresh instances.
//! Calls are asynchronous: the guest runs on a fiber inside the caller's task, so a
//! call costs no hop to another thread, and at every epoch tick (one thread ticks the
//! engine every millisecond) a running guest yields to the scheduler, so a busy guest
//! shares its worker with the other requests instead of holding it.
//! Per call the store has a fuel budget, a wall-clock deadline (checked at each tick,
//! measured from the call's start outside the guest), a memory cap, caps on the size of what
//! goes in and what comes out, and a WASI context that grants nothing: no environment,
//! arguments, files or sockets, a wall clock frozen at the flow's time and a virtual
//! monotonic clock whose timers are ready at once, so no WASI call holds a host thread
//! on a real timer. A trap, a breached limit or the plugin's own error comes back as a
//! [`Failure`]; the host itself never fails with the plugin.
//!
//! Calls are admitted per tenant ([`admission`]): each tenant has its own share of
//! rule and adapter slots and a CPU budget, and the flows wait for a call at most its
//! bound before reclaiming its slot.

mod adapters;
pub mod admission;
pub mod builtins;
mod code;
mod convert;
mod host;
pub mod inspect;
pub mod registry;
pub mod storage;
#[cfg(test)]
mod storage_tests;
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;
mod v0_1;
mod warm;

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};

use crate::store::{key, Db, Tree};

pub use self::inspect::SizeLimits;
pub use self::storage::{PluginData, StorageLimits, StorageView};

pub use self::adapters::{
    AdapterCall, AdapterDispatch, AdapterMessage, CallbackRequest, DeliveryUpdate, Exchange,
    HttpGrant, Intelligence, SendRefusal, Trial,
};
pub use self::admission::{Admission, Lane, Permit, Shares};
pub use self::code::CodeStats;
use self::host::State;
use self::warm::WarmBudget;
pub use self::warm::{WarmPool, WarmStats};
pub use crate::model::rules::{Failure, Limits, RuleAction, RuleEvent, Usage, MAX_PROGRAM_BYTES};

/// Bindings of the contract's worlds at this host's version (0.2.0), generated from
/// `sdk/wit/plugin.wit`; the 0.1 line's are in `v0_1`.
pub mod wit {
    wasmtime::component::bindgen!({
        world: "rule",
        path: "../sdk/wit",
        exports: { default: async },
    });

    pub use self::dialgate::plugin::rule_types::{
        CreateCase, FraudSignals, SetRisk, VerificationSnapshot,
    };
    pub use self::dialgate::plugin::types::{
        Channel, PhoneIntelligence, RiskFactor, Trigger, VerificationStatus,
    };

    /// Bindings of the `workflow-interpreter` world, over the rule world's types.
    pub mod interpreter {
        wasmtime::component::bindgen!({
            world: "workflow-interpreter",
            path: "../sdk/wit",
            exports: { default: async },
            with: {
                "dialgate:plugin/types": super::dialgate::plugin::types,
                "dialgate:plugin/rule-types": super::dialgate::plugin::rule_types,
            },
        });
    }
}

/// The worlds of the contract a plugin can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Rule,
    MessagingAdapter,
    LookupAdapter,
}

/// The lines of the contract this host runs: components of one line share bindings,
/// and a component is called through those of the line it targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Contract {
    /// `dialgate:plugin@0.1.0` and `@0.1.1` (which only added `signals`).
    V0_1,
    /// `dialgate:plugin@0.2.0`.
    V0_2,
}

impl Contract {
    /// The line of the contract's version `version`, if this host runs it.
    pub fn of(version: &str) -> Option<Contract> {
        if !dialgate_sdk::COMPATIBLE_API_VERSIONS.contains(&version) {
            return None;
        }
        if version.starts_with("0.1.") {
            Some(Contract::V0_1)
        } else {
            Some(Contract::V0_2)
        }
    }
}

impl Kind {
    /// The world's name in the contract.
    pub fn world(self) -> &'static str {
        match self {
            Kind::Rule => "rule",
            Kind::MessagingAdapter => "messaging-adapter",
            Kind::LookupAdapter => "lookup-adapter",
        }
    }

    /// The contract's interfaces the world imports in the line `contract`.
    fn granted(self, contract: Contract) -> &'static [&'static str] {
        match self {
            Kind::Rule if contract == Contract::V0_1 => {
                &["types", "rule-types", "log", "clock", "kv", "signals"]
            }
            Kind::Rule => &["types", "rule-types", "log", "clock", "kv"],
            Kind::MessagingAdapter => &[
                "types",
                "messaging-types",
                "log",
                "clock",
                "http-client",
                "config",
            ],
            Kind::LookupAdapter => &[
                "types",
                "lookup-types",
                "log",
                "clock",
                "http-client",
                "config",
            ],
        }
    }

    /// The functions the world exports in the line `contract`.
    fn exports(self, contract: Contract) -> &'static [&'static str] {
        match self {
            Kind::Rule => &["on-event"],
            Kind::MessagingAdapter if contract == Contract::V0_1 => &["send", "parse-callback"],
            Kind::MessagingAdapter => &["send-message", "parse-callback"],
            Kind::LookupAdapter => &["lookup"],
        }
    }
}

/// WASI interfaces linked for the Rust standard library's imports; the context each
/// call gets makes them grant nothing (no variables, arguments, files or streams) and
/// freezes the clocks at the flow's time. Sockets and outbound HTTP are never granted.
const WASI_GRANTED: &[&str] = &[
    "wasi:io/",
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
];

/// Why a plugin could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    #[error("the component exports none of the contract's worlds ({0})")]
    UnknownWorld(String),
    #[error("the component is a {found} plugin, not a {expected} plugin")]
    WrongWorld { expected: String, found: String },
    #[error("the component imports `{import}`, which the {world} world does not grant")]
    ForbiddenImport { import: String, world: String },
    #[error(
        "the component speaks dialgate:plugin@{found}; this host speaks @{}",
        dialgate_sdk::COMPATIBLE_API_VERSIONS.join(", @")
    )]
    ApiVersion { found: String },
    #[error("the component imports dialgate:plugin@{first} and @{second}; a component targets one version")]
    MixedVersions { first: String, second: String },
    #[error("the component is too large: {0}; split or slim the plugin")]
    TooLarge(String),
    #[error("cannot link the component: {0}")]
    Link(String),
    #[error("the plugin runtime failed: {0}")]
    Runtime(String),
}

/// A successful call.
#[derive(Debug, Clone)]
pub struct Invocation<T> {
    pub output: T,
    pub usage: Usage,
}

/// Who a call runs for: the key-value store is scoped to this pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub tenant_id: String,
    pub plugin_id: String,
}

/// How many components were compiled and how many came precompiled from the cache.
#[derive(Debug, Default)]
struct Counters {
    compiled: AtomicU64,
    from_cache: AtomicU64,
    refused_before_compiling: AtomicU64,
}

/// The runtime's counters, for operators and tests.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct RuntimeStats {
    pub compiled: u64,
    pub loaded_from_cache: u64,
    /// Components refused by parsing, before any compilation.
    pub refused_before_compiling: u64,
    /// Compiled code in memory and its budget.
    pub code: CodeStats,
    /// Warm rule instances and how many calls they served.
    pub warm: WarmStats,
}

/// The operator's bounds on plugins beyond the per-call [`Limits`]: what a plugin
/// keeps and logs, what an upload may hold, how many compilations run at once, and
/// how often a tenant may upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PluginBounds {
    pub storage: StorageLimits,
    pub sizes: SizeLimits,
    /// Compilations at once; 0 means one per core.
    pub compile_concurrency: usize,
    /// Uploads (and catalogue installs) a tenant may make per minute.
    pub uploads_per_minute: u32,
    /// Bytes of compiled plugin code kept in memory; past it the least recently used
    /// code is evicted and loaded again on its next call.
    pub code_memory_bytes: usize,
    /// Rule instances kept warm after a clean call, host-wide, to serve the next call
    /// of the same binding; 0 makes every call instantiate afresh.
    pub warm_instances: usize,
}

impl Default for PluginBounds {
    /// The storage and size defaults, one compilation per core, 20 uploads a minute,
    /// 256 MiB of compiled code in memory, 128 warm rule instances.
    fn default() -> Self {
        Self {
            storage: StorageLimits::default(),
            sizes: SizeLimits::default(),
            compile_concurrency: 0,
            uploads_per_minute: 20,
            code_memory_bytes: 256 << 20,
            warm_instances: 128,
        }
    }
}

/// A counting semaphore for compilations, which run on blocking threads.
#[derive(Debug)]
struct CompileGate {
    free: parking_lot::Mutex<usize>,
    freed: parking_lot::Condvar,
}

impl CompileGate {
    fn new(permits: usize) -> Self {
        let permits = if permits == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            permits
        };
        Self {
            free: parking_lot::Mutex::new(permits),
            freed: parking_lot::Condvar::new(),
        }
    }

    /// Runs `work` once a permit is free.
    fn run<T>(&self, work: impl FnOnce() -> T) -> T {
        {
            let mut free = self.free.lock();
            while *free == 0 {
                self.freed.wait(&mut free);
            }
            *free -= 1;
        }
        struct Permit<'a>(&'a CompileGate);
        impl Drop for Permit<'_> {
            fn drop(&mut self) {
                *self.0.free.lock() += 1;
                self.0.freed.notify_one();
            }
        }
        let _permit = Permit(self);
        work()
    }
}

/// The workflow interpreter, loaded and pre-instantiated.
#[derive(Clone)]
pub struct Interpreter {
    pub sha256: String,
    pre: wit::interpreter::WorkflowInterpreterPre<State>,
}

impl std::fmt::Debug for Interpreter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Interpreter({})", self.sha256)
    }
}

/// The engine and linkers shared by all plugins.
pub struct PluginRuntime {
    engine: Engine,
    rule_linker: Linker<State>,
    adapters: adapters::Linkers,
    limits: Limits,
    /// The store, with plugins' key-value accounts and log budgets.
    db: PluginData,
    bounds: PluginBounds,
    compile_gate: CompileGate,
    fingerprint: String,
    counters: Counters,
    admission: Admission,
    code: code::CodeCache,
    /// Warm rule instances: their host-wide bound and figures.
    warm: Arc<WarmBudget>,
    /// Where each call's outcome, fuel and time are counted, when the host keeps
    /// metrics.
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A component of a known world, ready to instantiate: its compiled code is resident
/// or loaded again on first use (see [`code`]).
#[derive(Clone)]
pub struct Loaded {
    pub kind: Kind,
    pub sha256: String,
    slot: Arc<code::Slot>,
}

enum LoadedInner {
    Rule(wit::RulePre<State>),
    /// A rule of the contract's 0.1 line.
    RuleV0_1(v0_1::rule::RulePre<State>),
    Adapter(adapters::AdapterPre),
}

/// An instance of a rule, through the bindings of the line it targets.
pub(super) enum RuleInstance {
    V0_2(wit::Rule),
    V0_1(v0_1::rule::Rule),
}

impl RuleInstance {
    /// Calls the rule's `on-event` with `event` (converted for a 0.1 rule, whose fraud
    /// signals the `signals` interface answers from the store's state).
    async fn on_event(
        &self,
        store: &mut Store<State>,
        event: &wit::Event,
    ) -> wasmtime::Result<Result<Vec<wit::Action>, wit::dialgate::plugin::types::PluginError>> {
        match self {
            RuleInstance::V0_2(rule) => rule.call_on_event(store, event).await,
            RuleInstance::V0_1(rule) => {
                store.data_mut().fraud = event.fraud;
                let answer = rule.call_on_event(&mut *store, &v0_1::event(event)).await?;
                Ok(answer.map(|actions| actions.into_iter().map(v0_1::action).collect()))
            }
        }
    }
}

impl Loaded {
    /// Whether the code is in memory now.
    pub fn is_resident(&self) -> bool {
        self.slot.is_resident()
    }
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Loaded({:?}, {})", self.kind, self.sha256)
    }
}

/// The hex SHA-256 of a component's bytes: its identity in the store.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl PluginRuntime {
    /// A runtime whose plugins keep their key-value data, and whose compiled code is
    /// cached, in `db`.
    pub fn new(db: Db, limits: Limits) -> Result<Self, LoadError> {
        Self::configured(db, limits, PluginBounds::default(), Shares::default())
    }

    /// A runtime under the operator's `bounds`, admitting calls by the default shares.
    pub fn with_bounds(db: Db, limits: Limits, bounds: PluginBounds) -> Result<Self, LoadError> {
        Self::configured(db, limits, bounds, Shares::default())
    }

    /// A runtime as [`PluginRuntime::new`], admitting calls by `shares`.
    pub fn with_shares(db: Db, limits: Limits, shares: Shares) -> Result<Self, LoadError> {
        Self::configured(db, limits, PluginBounds::default(), shares)
    }

    /// A runtime under the operator's `bounds`, admitting calls by `shares`.
    pub fn configured(
        db: Db,
        limits: Limits,
        bounds: PluginBounds,
        shares: Shares,
    ) -> Result<Self, LoadError> {
        let runtime = |err: wasmtime::Error| LoadError::Runtime(format!("{err:#}"));
        let mut config = Config::new();
        config.consume_fuel(true);
        config.epoch_interruption(true);
        // Parked warm instances hold their slots, so the pool has room for them on top
        // of the admitted calls; fiber stacks are taken only while a call runs.
        let warm = u32::try_from(bounds.warm_instances).unwrap_or(u32::MAX / 64);
        let instances = admission::POOL_INSTANCES as u32 + warm;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(instances)
            // One fiber stack per running call: every call runs on a fiber of its own.
            .total_stacks(admission::POOL_INSTANCES as u32)
            .total_core_instances(8 * instances)
            .total_memories(2 * instances)
            .total_tables(4 * instances)
            .max_core_instances_per_component(32)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_memory_size(limits.memory_bytes)
            // Reset a slot's first pages with memset rather than returning them to the
            // kernel: a small rule touches little memory, and page faults and TLB
            // shootdowns were most of an instantiation's cost.
            .linear_memory_keep_resident(1280 << 10)
            .table_keep_resident(64 << 10)
            // Where the kernel has PAGEMAP_SCAN (Linux 6.7 and later), reset only the
            // pages a call wrote, not every resident page: a small rule writes a few
            // pages of its memory, and resetting all of it evicted the caches the
            // rest of the request runs from.
            .pagemap_scan(wasmtime::Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // Slots reserve what the cap allows, not the default 4 GiB each.
        config.memory_reservation(limits.memory_bytes as u64);
        let engine = Engine::new(&config).map_err(runtime)?;
        start_epoch_ticker(&engine);

        let mut rule_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut rule_linker).map_err(runtime)?;
        host::link_virtual_clock(&mut rule_linker).map_err(runtime)?;
        wit::Rule::add_to_linker::<_, HasSelf<_>>(&mut rule_linker, |state| state)
            .map_err(runtime)?;
        v0_1::link_rule(&mut rule_linker).map_err(runtime)?;
        let adapters = adapters::Linkers::new(&engine).map_err(runtime)?;

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let fingerprint = format!("{:016x}", hasher.finish());
        Ok(Self {
            engine,
            rule_linker,
            adapters,
            limits,
            db: PluginData::new(db, bounds.storage),
            bounds,
            compile_gate: CompileGate::new(bounds.compile_concurrency),
            fingerprint,
            counters: Counters::default(),
            admission: Admission::new(shares),
            code: code::CodeCache::new(bounds.code_memory_bytes),
            warm: WarmBudget::new(bounds.warm_instances),
            metrics: None,
        })
    }

    /// This runtime, counting every call in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Counts a call of `scope`'s plugin that used `usage` and ended in `failure`, if
    /// it failed.
    fn record(&self, scope: &Scope, usage: &Usage, failure: Option<&Failure>) {
        if let Some(metrics) = &self.metrics {
            metrics.plugin_call(
                &scope.plugin_id,
                usage.fuel,
                Duration::from_micros(usage.micros),
                failure.map(Failure::kind),
            );
        }
    }

    /// The per-tenant admission of calls.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// How long a caller waits for a chain of `calls` rule calls before it drops them
    /// and takes its slot back: each call's running time plus a tick and its store time
    /// for key-value operations, and a second of grace for the time the calls wait for
    /// the scheduler under load.
    pub fn chain_bound(&self, calls: usize) -> Duration {
        let store_time = self.db.limits().kv_time_ms_per_call;
        let per_call = Duration::from_millis(self.limits.time_ms + 2 + store_time);
        per_call * u32::try_from(calls).unwrap_or(u32::MAX) + Duration::from_secs(1)
    }

    /// The runtime's limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// How many components this runtime compiled and how many it loaded precompiled.
    pub fn stats(&self) -> RuntimeStats {
        RuntimeStats {
            compiled: self.counters.compiled.load(Ordering::Relaxed),
            loaded_from_cache: self.counters.from_cache.load(Ordering::Relaxed),
            refused_before_compiling: self
                .counters
                .refused_before_compiling
                .load(Ordering::Relaxed),
            code: self.code.stats(),
            warm: self.warm.stats(),
        }
    }

    /// The operator's bounds on plugins.
    pub fn bounds(&self) -> PluginBounds {
        self.bounds
    }

    /// Plugins' key-value data, accounts and log budgets.
    pub fn data(&self) -> &PluginData {
        &self.db
    }

    /// Checks `bytes` by parsing as a component of the contract within the size limits
    /// and, when `expected` is given, of that world; only then compiles it (or loads it
    /// precompiled from the cache) and pre-instantiates it. The compiled artifact is
    /// cached only when every check passed.
    pub fn load(&self, bytes: &[u8], expected: Option<Kind>) -> Result<Loaded, LoadError> {
        self.load_within(bytes, expected, &self.bounds.sizes)
    }

    /// [`PluginRuntime::load`] under the size limits `sizes`: a component already
    /// stored was checked when it was uploaded, and loads under
    /// [`SizeLimits::unbounded`] so that lowering a limit never stops it from loading.
    pub fn load_within(
        &self,
        bytes: &[u8],
        expected: Option<Kind>,
        sizes: &SizeLimits,
    ) -> Result<Loaded, LoadError> {
        self.load_pinned(bytes, expected, sizes, false)
    }

    /// [`PluginRuntime::load_within`], the code kept in memory whatever the budget
    /// when `pinned` (first-party plugins).
    pub fn load_pinned(
        &self,
        bytes: &[u8],
        expected: Option<Kind>,
        sizes: &SizeLimits,
        pinned: bool,
    ) -> Result<Loaded, LoadError> {
        let parsed = inspect::inspect(bytes, sizes).and_then(|inspection| {
            match expected.filter(|expected| *expected != inspection.kind) {
                Some(expected) => Err(LoadError::WrongWorld {
                    expected: expected.world().to_owned(),
                    found: inspection.kind.world().to_owned(),
                }),
                None => Ok(inspection),
            }
        });
        if let Err(err) = parsed {
            self.counters
                .refused_before_compiling
                .fetch_add(1, Ordering::Relaxed);
            return Err(err);
        }
        let sha256 = content_hash(bytes);
        let (component, artifact) = self.component(&sha256, bytes)?;
        // The compiled view agrees with the parsed one; checked again, cheaply.
        let (kind, contract) = self.inspect(&component)?;
        if let Some(expected) = expected.filter(|expected| *expected != kind) {
            return Err(LoadError::WrongWorld {
                expected: expected.world().to_owned(),
                found: kind.world().to_owned(),
            });
        }
        let code = self.prepare(kind, contract, &component)?;
        if let Some(artifact) = artifact {
            self.store_artifact(&sha256, &artifact)?;
        }
        let slot = self.code.slot(&sha256, kind, Some(code), pinned);
        Ok(Loaded { kind, sha256, slot })
    }

    /// A plugin known by its content hash and world whose code is loaded on first
    /// use, from its compiled artifact in the store (or, failing that, its component).
    pub fn lazy(&self, sha256: &str, kind: Kind) -> Loaded {
        Loaded {
            kind,
            sha256: sha256.to_owned(),
            slot: self.code.slot(sha256, kind, None, false),
        }
    }

    /// Keeps `plugin`'s code in memory whatever the budget (first-party plugins).
    pub fn pin(&self, plugin: &Loaded) {
        self.code.pin(&plugin.slot);
    }

    /// Brings `plugin`'s code into memory now, if it is not there.
    pub fn warm(&self, plugin: &Loaded) -> Result<(), Failure> {
        self.resident(plugin).map(drop)
    }

    /// The compiled code in memory and its budget.
    pub fn code_stats(&self) -> CodeStats {
        self.code.stats()
    }

    /// `plugin`'s code, loaded again when it is not resident. Loading deserialises the
    /// stored artifact, or compiles the component when this engine has none (after an
    /// upgrade of the runtime, say): on a server's worker it runs in `block_in_place`,
    /// so the worker's other requests move to another thread meanwhile.
    fn resident(&self, plugin: &Loaded) -> Result<Arc<LoadedInner>, Failure> {
        if let Some(inner) = self.code.get(&plugin.slot) {
            return Ok(inner);
        }
        let load = || {
            self.code
                .get_or_load(&plugin.slot, || self.reload(&plugin.sha256, plugin.kind))
        };
        let multi_thread = tokio::runtime::Handle::try_current().is_ok_and(|handle| {
            handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        });
        let loaded = if multi_thread {
            tokio::task::block_in_place(load)
        } else {
            load()
        };
        loaded.map_err(|err| Failure::Unloadable {
            message: err.to_string(),
        })
    }

    /// Loads the stored component `sha256` of world `kind`: its compiled artifact when
    /// this engine has one, else the component, compiled again.
    fn reload(&self, sha256: &str, kind: Kind) -> Result<(LoadedInner, usize), LoadError> {
        let store = |err: crate::store::StoreError| LoadError::Runtime(err.to_string());
        let bytes = self
            .db
            .get_raw(Tree::PluginBlobs, sha256.as_bytes())
            .map_err(store)?;
        let artifact = self
            .db
            .get_raw(Tree::PluginArtifacts, &key(&[sha256, &self.fingerprint]))
            .map_err(store)?;
        let component = match artifact
            .and_then(|artifact| deserialize_own_artifact(&self.engine, &artifact).ok())
        {
            Some(component) => {
                self.counters.from_cache.fetch_add(1, Ordering::Relaxed);
                component
            }
            None => {
                let bytes = bytes.ok_or_else(|| {
                    LoadError::Runtime(format!("component {sha256} is not in the store"))
                })?;
                let (component, artifact) = self.component(sha256, &bytes)?;
                if let Some(artifact) = artifact {
                    self.store_artifact(sha256, &artifact)?;
                }
                component
            }
        };
        let (found, contract) = self.inspect(&component)?;
        if found != kind {
            return Err(LoadError::WrongWorld {
                expected: kind.world().to_owned(),
                found: found.world().to_owned(),
            });
        }
        self.prepare(kind, contract, &component)
    }

    /// Pre-instantiates `component` in its world's linker, through the bindings of
    /// the line of the contract it targets; with the size of its code.
    fn prepare(
        &self,
        kind: Kind,
        contract: Contract,
        component: &Component,
    ) -> Result<(LoadedInner, usize), LoadError> {
        let link = |err: wasmtime::Error| LoadError::Link(format!("{err:#}"));
        let inner = match kind {
            Kind::Rule => {
                let pre = self.rule_linker.instantiate_pre(component).map_err(link)?;
                match contract {
                    Contract::V0_2 => LoadedInner::Rule(wit::RulePre::new(pre).map_err(link)?),
                    Contract::V0_1 => {
                        LoadedInner::RuleV0_1(v0_1::rule::RulePre::new(pre).map_err(link)?)
                    }
                }
            }
            Kind::MessagingAdapter | Kind::LookupAdapter => {
                LoadedInner::Adapter(self.adapters.pre(kind, contract, component).map_err(link)?)
            }
        };
        let range = component.image_range();
        let bytes = (range.end as usize).saturating_sub(range.start as usize);
        Ok((inner, bytes))
    }

    /// Loads the first-party workflow interpreter (compiled once, then cached like any
    /// plugin). It targets a world tenants cannot upload to, so it is checked here by
    /// its export alone.
    pub fn load_interpreter(&self, bytes: &[u8]) -> Result<Interpreter, LoadError> {
        let sha256 = content_hash(bytes);
        let (component, artifact) = self.component(&sha256, bytes)?;
        let link = |err: wasmtime::Error| LoadError::Link(format!("{err:#}"));
        let pre = self.rule_linker.instantiate_pre(&component).map_err(link)?;
        let pre = wit::interpreter::WorkflowInterpreterPre::new(pre).map_err(link)?;
        if let Some(artifact) = artifact {
            self.store_artifact(&sha256, &artifact)?;
        }
        Ok(Interpreter { sha256, pre })
    }

    /// Evaluates a compiled rule `program` on `event` in a fresh interpreter instance,
    /// under the same limits as a rule plugin. Returns the indices of the rules that
    /// matched, checked against the program's `rules` count, and, with `explain`, every
    /// node's outcome.
    #[allow(clippy::too_many_arguments)]
    pub async fn invoke_interpreter(
        &self,
        interpreter: &Interpreter,
        scope: &Scope,
        now_millis: i64,
        event: &RuleEvent,
        program: &[u8],
        rules: usize,
        explain: bool,
    ) -> (Usage, Result<wit::interpreter::Evaluation, Failure>) {
        let input = event.text_len();
        if input > self.limits.max_input_bytes || program.len() > MAX_PROGRAM_BYTES {
            return (
                Usage::default(),
                Err(Failure::InputTooLarge {
                    bytes: input + program.len(),
                    limit: self.limits.max_input_bytes + MAX_PROGRAM_BYTES,
                }),
            );
        }
        let mut store = match self.call_store(scope, now_millis, None) {
            Ok(store) => store,
            Err(failure) => return (Usage::default(), Err(failure)),
        };
        let wit_event = convert::event(event);
        let result = async {
            let instance = interpreter.pre.instantiate_async(&mut store).await?;
            instance
                .call_evaluate(&mut store, program, &wit_event, explain)
                .await
        }
        .await;
        let (usage, result) = self.finish(&store, result);
        let result = result.and_then(|answer| {
            let evaluation = answer.map_err(|err| Failure::Plugin {
                code: err.code,
                message: err.message,
            })?;
            let ascending = evaluation.matched.windows(2).all(|pair| pair[0] < pair[1]);
            let in_range = evaluation
                .matched
                .iter()
                .all(|index| (*index as usize) < rules);
            if !ascending || !in_range {
                return Err(Failure::Malformed {
                    message: format!(
                        "matched rules {:?} are not ascending indices below {rules}",
                        evaluation.matched
                    ),
                });
            }
            Ok(evaluation)
        });
        (usage, result)
    }

    /// The compiled component for `bytes`: precompiled from the cache when this engine
    /// compiled it before, else compiled now (under the compile gate); a fresh
    /// compilation comes with its artifact, for the caller to cache once the component
    /// passed its checks.
    fn component(
        &self,
        sha256: &str,
        bytes: &[u8],
    ) -> Result<(Component, Option<Vec<u8>>), LoadError> {
        let artifact_key = key(&[sha256, &self.fingerprint]);
        let cached = self
            .db
            .get_raw(Tree::PluginArtifacts, &artifact_key)
            .map_err(|err| LoadError::Runtime(err.to_string()))?;
        if let Some(artifact) = cached {
            if let Ok(component) = deserialize_own_artifact(&self.engine, &artifact) {
                self.counters.from_cache.fetch_add(1, Ordering::Relaxed);
                return Ok((component, None));
            }
        }
        let component = self
            .compile_gate
            .run(|| Component::new(&self.engine, bytes))
            .map_err(|err| LoadError::NotAComponent(format!("{err:#}")))?;
        self.counters.compiled.fetch_add(1, Ordering::Relaxed);
        let artifact = component.serialize().ok();
        Ok((component, artifact))
    }

    fn store_artifact(&self, sha256: &str, artifact: &[u8]) -> Result<(), LoadError> {
        self.db
            .put_raw(
                Tree::PluginArtifacts,
                &key(&[sha256, &self.fingerprint]),
                artifact,
            )
            .map_err(|err| LoadError::Runtime(err.to_string()))
    }

    /// Whether compiled code for the content hash `sha256` is cached.
    pub fn has_artifact(&self, sha256: &str) -> Result<bool, LoadError> {
        self.db
            .scan_raw(Tree::PluginArtifacts, &key(&[sha256, ""]), 1)
            .map(|found| !found.is_empty())
            .map_err(|err| LoadError::Runtime(err.to_string()))
    }

    /// Removes the cached compiled code of the content hash `sha256`, for every engine.
    pub fn forget_artifact(&self, sha256: &str) -> Result<(), LoadError> {
        self.db
            .remove_prefix(Tree::PluginArtifacts, &key(&[sha256, ""]))
            .map_err(|err| LoadError::Runtime(err.to_string()))
    }

    /// Which world, in which line of the contract, the compiled component targets,
    /// checking the API version and that it imports nothing its world does not grant
    /// (as parsing did before compiling).
    fn inspect(&self, component: &Component) -> Result<(Kind, Contract), LoadError> {
        let ty = component.component_type();
        let exports: Vec<&str> = ty.exports(&self.engine).map(|(name, _)| name).collect();
        let imports: Vec<(&str, bool)> = ty
            .imports(&self.engine)
            .map(|(name, item)| (name, matches!(item.ty, ComponentItem::ComponentInstance(_))))
            .collect();
        inspect::check(&exports, &imports)
    }

    /// A fresh store for one call, with the per-call limits armed: the call may run
    /// for `time`. At each epoch tick the guest yields to the scheduler, and once it
    /// has run for its time it is interrupted. The time is its thread's processor time
    /// (see [`host::RunClock`]): a wait for the scheduler after a yield, or for the
    /// operating system while other threads run, is not the call's own and is not
    /// counted, so a busy server never times out a cheap call; the caller bounds the
    /// wall time (see [`PluginRuntime::chain_bound`]).
    fn store(&self, state: State) -> Result<Store<State>, Failure> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.meter);
        store.set_fuel(self.limits.fuel).map_err(trap)?;
        // The clock and the time are read from the state at each tick, so a warm
        // instance's next call (which gets a new clock) is measured on its own.
        store.epoch_deadline_callback(move |store| {
            let state = store.data();
            if state.ran.ran() >= state.time {
                return Ok(UpdateDeadline::Interrupt);
            }
            let clock = Arc::clone(&state.ran);
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(async move {
                    clock.pause();
                    tokio::task::yield_now().await;
                    clock.resume();
                }),
            ))
        });
        store.set_epoch_deadline(1);
        Ok(store)
    }

    /// A fresh store for a call for `scope` at the flow's time, under the per-call
    /// limits (an adapter's call also gets its grant).
    fn call_store(
        &self,
        scope: &Scope,
        now_millis: i64,
        adapter: Option<Arc<AdapterCall>>,
    ) -> Result<Store<State>, Failure> {
        let started = Instant::now();
        let time = match adapter {
            Some(_) => adapters::DEADLINE,
            None => Duration::from_millis(self.limits.time_ms),
        };
        let mut state = State::new(&self.db, scope, now_millis, &self.limits, adapter);
        state.time = time;
        state.deadline = Some(started + time);
        self.store(state)
    }

    /// An empty pool of warm instances for one rule binding of `tenant_id`.
    pub fn warm_pool(&self, tenant_id: &str) -> Arc<WarmPool> {
        self.warm.pool(tenant_id)
    }

    /// Arms a warm instance's store for its next call: the per-call budget of fuel and
    /// time, the flow's time, and fresh per-call counters.
    fn rearm(&self, store: &mut Store<State>, now_millis: i64) -> Result<(), Failure> {
        store.set_fuel(self.limits.fuel).map_err(trap)?;
        store.set_epoch_deadline(1);
        store.data_mut().rearm(now_millis);
        Ok(())
    }

    /// What a finished call used, and its error mapped to a [`Failure`].
    fn finish<T>(
        &self,
        store: &Store<State>,
        result: wasmtime::Result<T>,
    ) -> (Usage, Result<T, Failure>) {
        let usage = Usage {
            fuel: self
                .limits
                .fuel
                .saturating_sub(store.get_fuel().unwrap_or(0)),
            micros: u64::try_from(store.data().ran.ran().as_micros()).unwrap_or(u64::MAX),
            peak_memory_bytes: store.data().meter.peak,
        };
        let result = result.map_err(|err| match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => Failure::OutOfFuel {
                fuel: self.limits.fuel,
            },
            Some(Trap::Interrupt) => Failure::Timeout {
                ms: self.limits.time_ms,
            },
            Some(Trap::StackOverflow) => Failure::StackOverflow,
            // The pool is sized above the admitted calls; reaching its end means calls
            // abandoned by their callers still hold instances.
            None if err.is::<wasmtime::PoolConcurrencyLimitError>() => Failure::Overloaded {
                reason: format!("{err}"),
            },
            _ => trap(err),
        });
        (usage, result)
    }

    /// Runs the rule `plugin` on `event` in a fresh instance under the runtime's
    /// limits. A failed call still reports what it used.
    pub async fn invoke_rule(
        &self,
        plugin: &Loaded,
        scope: &Scope,
        now_millis: i64,
        event: &RuleEvent,
    ) -> (Usage, Result<Vec<RuleAction>, Failure>) {
        self.invoke_rule_event(plugin, None, scope, now_millis, event)
            .await
    }

    /// Runs the rule `plugin` on `event` as one binding's call does: in a warm instance
    /// of `warm` if one is parked, else a fresh one, parked in `warm` if the call
    /// returns. A failed call still reports what it used.
    pub async fn invoke_rule_warm(
        &self,
        plugin: &Loaded,
        warm: &WarmPool,
        scope: &Scope,
        now_millis: i64,
        event: &RuleEvent,
    ) -> (Usage, Result<Vec<RuleAction>, Failure>) {
        self.invoke_rule_event(plugin, Some(warm), scope, now_millis, event)
            .await
    }

    /// Runs the rule `plugin` on the host's `event`, converting it for the call.
    async fn invoke_rule_event(
        &self,
        plugin: &Loaded,
        warm: Option<&WarmPool>,
        scope: &Scope,
        now_millis: i64,
        event: &RuleEvent,
    ) -> (Usage, Result<Vec<RuleAction>, Failure>) {
        let input = event.text_len();
        let event = convert::event(event);
        self.invoke_rule_in(plugin, warm, scope, now_millis, &event, input)
            .await
    }

    /// Runs the rule `plugin` on `event` (converted already; `input` is the bytes of
    /// text it carries) under the runtime's limits, in a warm instance of `warm` if one
    /// is parked (else a fresh one), and parks the instance there again if the call
    /// returned. A failed call still reports what it used.
    pub(super) async fn invoke_rule_in(
        &self,
        plugin: &Loaded,
        warm: Option<&WarmPool>,
        scope: &Scope,
        now_millis: i64,
        event: &wit::Event,
        input: usize,
    ) -> (Usage, Result<Vec<RuleAction>, Failure>) {
        let (usage, result) = self
            .invoke_rule_uncounted(plugin, warm, scope, now_millis, event, input)
            .await;
        self.record(scope, &usage, result.as_ref().err());
        (usage, result)
    }

    /// [`PluginRuntime::invoke_rule_in`], without counting the call.
    async fn invoke_rule_uncounted(
        &self,
        plugin: &Loaded,
        warm: Option<&WarmPool>,
        scope: &Scope,
        now_millis: i64,
        event: &wit::Event,
        input: usize,
    ) -> (Usage, Result<Vec<RuleAction>, Failure>) {
        let inner = match self.resident(plugin) {
            Ok(inner) => inner,
            Err(failure) => return (Usage::default(), Err(failure)),
        };
        if !matches!(
            inner.as_ref(),
            LoadedInner::Rule(_) | LoadedInner::RuleV0_1(_)
        ) {
            return (
                Usage::default(),
                Err(Failure::Malformed {
                    message: format!("a {} plugin cannot run as a rule", plugin.kind.world()),
                }),
            );
        };
        if input > self.limits.max_input_bytes {
            return (
                Usage::default(),
                Err(Failure::InputTooLarge {
                    bytes: input,
                    limit: self.limits.max_input_bytes,
                }),
            );
        }
        let parked = warm.and_then(|warm| warm.take(&inner));
        let (mut store, rule) = match parked {
            Some(parked) => {
                let mut store = parked.store;
                if let Err(failure) = self.rearm(&mut store, now_millis) {
                    return (Usage::default(), Err(failure));
                }
                (store, Some(parked.rule))
            }
            None => match self.call_store(scope, now_millis, None) {
                Ok(store) => {
                    self.warm.note_fresh();
                    (store, None)
                }
                Err(failure) => return (Usage::default(), Err(failure)),
            },
        };
        let mut returned = None;
        let result = async {
            let rule = match (rule, inner.as_ref()) {
                (Some(rule), _) => rule,
                (None, LoadedInner::RuleV0_1(pre)) => {
                    RuleInstance::V0_1(pre.instantiate_async(&mut store).await?)
                }
                (None, LoadedInner::Rule(pre)) => {
                    RuleInstance::V0_2(pre.instantiate_async(&mut store).await?)
                }
                (None, LoadedInner::Adapter(_)) => {
                    return Err(wasmtime::Error::msg("an adapter cannot run as a rule"))
                }
            };
            let answer = rule.on_event(&mut store, event).await;
            if answer.is_ok() {
                returned = Some(rule);
            }
            answer
        }
        .await;
        let (usage, result) = self.finish(&store, result);
        // Only an instance whose call returned is kept: a trap, an exhausted budget or
        // an interrupted call leaves it in no state to run again.
        if let (Some(warm), Some(rule)) = (warm, returned) {
            warm.park(warm::Parked {
                store,
                rule,
                code: inner,
            });
        }
        let result = result.and_then(|answer| {
            let actions = answer.map_err(|err| Failure::Plugin {
                code: err.code,
                message: err.message,
            })?;
            self.check_actions(actions)
        });
        (usage, result)
    }

    /// Converts and checks a rule's answer against the output caps.
    fn check_actions(&self, actions: Vec<wit::Action>) -> Result<Vec<RuleAction>, Failure> {
        if actions.len() > self.limits.max_actions {
            return Err(Failure::TooManyActions {
                returned: actions.len(),
                limit: self.limits.max_actions,
            });
        }
        let actions: Vec<RuleAction> = actions.into_iter().map(convert::action).collect();
        // A case's priority is a closed vocabulary; a plugin's free text is refused
        // like any other malformed output, so every stored case can be filtered.
        if let Some(priority) = actions.iter().find_map(|action| match action {
            RuleAction::CreateCase { priority, .. }
                if !crate::model::CASE_PRIORITIES.contains(&priority.as_str()) =>
            {
                Some(priority)
            }
            _ => None,
        }) {
            return Err(Failure::Malformed {
                message: format!(
                    "create_case priority {priority:?} is not one of {}",
                    crate::model::CASE_PRIORITIES.join(", ")
                ),
            });
        }
        let bytes: usize = actions.iter().map(RuleAction::text_len).sum();
        if bytes > self.limits.max_output_bytes {
            return Err(Failure::OutputTooLarge {
                bytes,
                limit: self.limits.max_output_bytes,
            });
        }
        Ok(actions)
    }
}

/// Runs a plugin call (an async function) to completion on this thread, for the
/// command line, tests and benchmarks, outside any server. One current-thread runtime
/// per thread serves every call, so a benchmark's loop measures the call, not a
/// runtime's start.
pub fn block_on<F: std::future::Future>(call: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
    }
    RUNTIME.with(|runtime| runtime.block_on(call))
}

fn trap(err: wasmtime::Error) -> Failure {
    Failure::Trap {
        message: format!("{err:#}"),
    }
}

/// Loads a component this host compiled and stored itself.
///
/// Deserialising compiled code is unsafe because wasmtime cannot check that the bytes
/// are code it produced. These bytes are: they are read from the store's
/// `plugin_artifacts` tree, which only [`PluginRuntime::component`] writes, with the
/// output of `Component::serialize` on this engine's configuration, keyed by the
/// engine's compatibility fingerprint; wasmtime still checks the artifact's header
/// against the engine and refuses a mismatch, which makes the caller compile afresh.
/// The store lives in the operator's data directory, which is trusted like the binary.
#[allow(unsafe_code)]
fn deserialize_own_artifact(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: see above; the artifact was produced by `Component::serialize` for an
    // engine with this compatibility fingerprint, and never comes from a tenant.
    unsafe { Component::deserialize(engine, artifact) }
}

/// Ticks the engine's epoch every millisecond, for as long as the engine lives.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("dialgate-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(1));
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
        });
    if let Err(err) = spawned {
        tracing::error!("cannot start the plugin deadline thread: {err}");
    }
}
