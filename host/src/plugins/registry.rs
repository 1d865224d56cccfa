//! The plugin registry: each tenant's plugins, their versions, bindings and
//! configuration, kept in the store, and the live set the flows run.
//!
//! Records live in the `plugins` tree; component bytes live once per content hash in
//! `plugin_blobs`, and compiled code once per content hash and engine in
//! `plugin_artifacts`. A content hash may be shared by several tenants' plugins and
//! versions and by the first-party plugins; deleting a plugin, or refusing an upload
//! after its component was checked, removes the blob and the compiled code of every
//! hash that no remaining version references (the first-party plugins' compiled code
//! stays). Compiled components are kept in memory only while a live snapshot uses them. The live set of a tenant is an immutable snapshot behind an `Arc`,
//! rebuilt and swapped in whole after every change: a call in flight keeps the snapshot
//! (and so the plugin version) it started with, and the next call sees the new one.
//!
//! The snapshot also holds the tenant's enabled declarative workflow rules, compiled per
//! trigger into one program, kept decoded. At a trigger, declarative rules and code
//! plugins run in one order: by `order`, then declarative rules before code plugins,
//! then by creation (declarative) or name (plugins). Every declarative rule is decided
//! up front in one bounded native evaluation (`workflows::eval`), against the same
//! event the code plugins see; walking the order, a matched declarative rule
//! contributes its actions, a code plugin is called, and a `block` from either ends
//! the chain.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::egress::Egress;
use crate::secrets::{SealedMap, SecretBox};
use crate::store::{key, Db, StoreError, Tree};

use super::adapters::{AdapterCall, HttpGrant};
use super::{
    content_hash, Failure, Kind, LoadError, Loaded, PluginRuntime, Scope, SizeLimits, StorageView,
    Usage, WarmPool,
};
use crate::model::rules::{RuleAction, RuleEvent, RuleRun, RuleSource, Trigger};
use crate::workflows::eval::{self, CompiledProgram};
use crate::workflows::{self, NodeInfo, WorkflowRule};
use dialgate_sdk::workflow::{Evaluation, Program};

/// Largest component accepted, in bytes.
pub const MAX_COMPONENT_BYTES: usize = 8 << 20;
/// Plugins a tenant may have.
const MAX_PLUGINS_PER_TENANT: usize = 200;
/// Versions kept per plugin.
const MAX_VERSIONS: usize = 50;
/// Active rules a tenant may bind to one trigger: with each call bounded by the
/// deadline, this bounds the time a trigger can take.
pub const MAX_RULES_PER_TRIGGER: usize = 16;

/// What an uploader says about a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub kind: Kind,
    pub version: String,
    /// Triggers a rule wants to run at.
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    /// Hosts (`host` or `host:port`) an adapter needs to reach.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// One uploaded version of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionRecord {
    pub version: String,
    pub sha256: String,
    pub size: usize,
    #[schema(value_type = Vec<String>)]
    pub triggers: Vec<Trigger>,
    pub hosts: Vec<String>,
    pub description: Option<String>,
    pub uploaded_at: DateTime<Utc>,
}

/// A tenant's plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRecord {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub kind: Kind,
    pub versions: Vec<VersionRecord>,
    /// The version that runs; `None` while deactivated.
    pub active_version: Option<String>,
    /// Triggers the plugin is bound to (rules).
    pub triggers: Vec<Trigger>,
    /// Position among the rules of a trigger: lower runs first, ties by name.
    pub order: i32,
    pub config: BTreeMap<String, String>,
    /// Sealed at rest (see `crate::secrets`); bound to the tenant and plugin id.
    pub secrets: SealedMap,
    /// Hosts the tenant granted, among those the active version asks for.
    pub granted_hosts: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl PluginRecord {
    /// The record of the active version.
    pub fn active(&self) -> Option<&VersionRecord> {
        let active = self.active_version.as_deref()?;
        self.versions.iter().find(|v| v.version == active)
    }
}

/// A plugin as the API shows it: secrets by name only.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PluginView {
    pub id: String,
    pub name: String,
    pub kind: Kind,
    pub active_version: Option<String>,
    pub versions: Vec<VersionRecord>,
    #[schema(value_type = Vec<String>)]
    pub triggers: Vec<Trigger>,
    pub order: i32,
    pub config: BTreeMap<String, String>,
    pub secrets: Vec<String>,
    pub granted_hosts: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Key-value usage against the quota, and dropped log lines (on `GET` of one plugin).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageView>,
}

impl From<&PluginRecord> for PluginView {
    fn from(record: &PluginRecord) -> Self {
        PluginView {
            id: record.id.clone(),
            name: record.name.clone(),
            kind: record.kind,
            active_version: record.active_version.clone(),
            versions: record.versions.clone(),
            triggers: record.triggers.clone(),
            order: record.order,
            config: record.config.clone(),
            secrets: record.secrets.keys().cloned().collect(),
            granted_hosts: record.granted_hosts.clone(),
            created_at: record.created_at,
            updated_at: record.updated_at,
            storage: None,
        }
    }
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("plugin not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &str, message: impl Into<String>) -> RegistryError {
    RegistryError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// A rule as it runs.
#[derive(Debug, Clone)]
pub struct LiveRule {
    pub plugin_id: String,
    pub name: String,
    pub version: String,
    pub order: i32,
    pub config: BTreeMap<String, String>,
    pub loaded: Loaded,
    /// Instances of this binding kept warm between its calls.
    pub warm: Arc<WarmPool>,
    /// The tenant and plugin its calls run for.
    pub scope: Scope,
}

/// An adapter as it runs.
#[derive(Debug, Clone)]
pub struct LiveAdapter {
    pub plugin_id: String,
    pub name: String,
    pub version: String,
    pub loaded: Loaded,
    pub call: Arc<AdapterCall>,
}

/// A declarative rule as it runs.
#[derive(Debug, Clone)]
pub struct LiveWorkflow {
    pub rule_id: String,
    pub revision: u32,
    pub order: i32,
    pub actions: Vec<RuleAction>,
    /// Its nodes, for explaining a match.
    pub nodes: Vec<NodeInfo>,
}

/// The enabled declarative rules of one trigger, compiled into one program.
#[derive(Debug, Clone, Default)]
pub struct LiveProgram {
    /// The program, decoded once per snapshot: rule `i` of it is `rules[i]`.
    pub program: CompiledProgram,
    pub rules: Vec<LiveWorkflow>,
}

/// What runs for one tenant: an immutable snapshot.
#[derive(Debug, Default)]
pub struct TenantLive {
    rules: HashMap<Trigger, Vec<LiveRule>>,
    workflows: HashMap<Trigger, Arc<LiveProgram>>,
    lookup: Option<LiveAdapter>,
    messaging: Vec<LiveAdapter>,
}

impl TenantLive {
    /// The rule plugins bound to `trigger`, in run order.
    pub fn rules(&self, trigger: Trigger) -> &[LiveRule] {
        self.rules.get(&trigger).map_or(&[], Vec::as_slice)
    }

    /// The enabled declarative rules of `trigger`, compiled.
    pub fn workflows(&self, trigger: Trigger) -> Option<&Arc<LiveProgram>> {
        self.workflows.get(&trigger)
    }

    /// Whether anything (plugin or declarative rule) runs at `trigger`.
    pub fn has_rules(&self, trigger: Trigger) -> bool {
        !self.rules(trigger).is_empty() || self.workflows.contains_key(&trigger)
    }

    /// The tenant's active lookup adapter.
    pub fn lookup(&self) -> Option<&LiveAdapter> {
        self.lookup.as_ref()
    }

    /// The tenant's active messaging adapters, by name.
    pub fn messaging(&self) -> &[LiveAdapter] {
        &self.messaging
    }

    /// A snapshot that runs only `workflows` (a backtest's candidate rule set).
    pub fn with_workflows(workflows: HashMap<Trigger, Arc<LiveProgram>>) -> Self {
        Self {
            workflows,
            ..Self::default()
        }
    }

    /// A snapshot that runs only `rule`, at `triggers` (a backtest's candidate plugin
    /// version).
    pub fn with_rule(rule: LiveRule, triggers: &[Trigger]) -> Self {
        Self {
            rules: triggers
                .iter()
                .map(|trigger| (*trigger, vec![rule.clone()]))
                .collect(),
            ..Self::default()
        }
    }
}

/// A first-party plugin shipped inside the binary.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    pub name: &'static str,
    pub kind: Kind,
    pub description: &'static str,
    pub triggers: &'static [Trigger],
    pub bytes: &'static [u8],
}

/// The registry.
pub struct Registry {
    runtime: Arc<PluginRuntime>,
    db: Db,
    live: RwLock<HashMap<String, Arc<TenantLive>>>,
    loaded: Mutex<HashMap<String, Loaded>>,
    builtins: Vec<Builtin>,
    /// Serialises changes, so each rebuild sees every earlier change.
    changes: Mutex<()>,
    /// Where a change is recorded for the other replicas (a shared store only).
    change_log: OnceLock<Arc<crate::changes::ChangeLog>>,
    /// Uploads per tenant in the current minute of the flows' clock.
    uploads: Mutex<HashMap<String, (i64, u32)>>,
    /// Content hashes of uploads between their check and their record being stored:
    /// collecting leaves them alone.
    pending: Mutex<HashMap<String, usize>>,
    /// Content hashes of the first-party plugins and the interpreter.
    first_party: OnceLock<HashSet<String>>,
    /// Where adapters' outbound HTTP may go.
    egress: Egress,
    /// Seals and opens the plugins' secrets.
    secrets: SecretBox,
}

/// What the registry protects tenants' traffic and secrets with.
#[derive(Debug, Clone)]
pub struct Protection {
    pub egress: Egress,
    pub secrets: SecretBox,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// The registry over `db`, with every tenant's active plugins loaded, under the
    /// default egress policy and with secrets sealed by the data directory's own server
    /// secret (what `dialgate serve` does with no configuration).
    pub fn open(
        runtime: Arc<PluginRuntime>,
        db: Db,
        builtins: Vec<Builtin>,
    ) -> Result<Self, RegistryError> {
        let secret = crate::secrets::data_key(&db, None).map_err(StoreError::from)?;
        let protection = Protection {
            egress: Egress::default(),
            secrets: SecretBox::new(&secret),
        };
        Self::open_with(runtime, db, builtins, protection)
    }

    /// The registry over `db` with the server's egress policy and secret box.
    pub fn open_with(
        runtime: Arc<PluginRuntime>,
        db: Db,
        builtins: Vec<Builtin>,
        protection: Protection,
    ) -> Result<Self, RegistryError> {
        let registry = Self {
            egress: protection.egress,
            secrets: protection.secrets,
            runtime,
            db,
            live: RwLock::new(HashMap::new()),
            loaded: Mutex::new(HashMap::new()),
            builtins,
            changes: Mutex::new(()),
            change_log: OnceLock::new(),
            uploads: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            first_party: OnceLock::new(),
        };
        let records: Vec<PluginRecord> = registry.db.scan(Tree::Plugins, b"", usize::MAX, false)?;
        // The index of components' users is derived from the records: rebuilt here,
        // so a store from before it, or a crash between two writes, leaves it right.
        registry.db.remove_prefix(Tree::PluginRefs, b"")?;
        for record in &records {
            registry.index_versions(record)?;
        }
        let mut tenants: Vec<String> = records.into_iter().map(|r| r.tenant_id).collect();
        let rules: Vec<WorkflowRule> =
            registry
                .db
                .scan(Tree::WorkflowRules, b"", usize::MAX, false)?;
        tenants.extend(rules.into_iter().map(|rule| rule.tenant_id));
        tenants.sort();
        tenants.dedup();
        for tenant in tenants {
            registry.rebuild(&tenant)?;
        }
        Ok(registry)
    }

    /// Records this registry's changes in `log`, for the other replicas of a shared
    /// store.
    pub fn set_change_log(&self, log: Arc<crate::changes::ChangeLog>) {
        let _ = self.change_log.set(log);
    }

    /// Rebuilds the live snapshot of `tenant_id` after a change made here, and records
    /// the change for the other replicas.
    fn rebuilt(&self, tenant_id: &str) -> Result<(), RegistryError> {
        self.rebuild(tenant_id)?;
        if let Some(log) = self.change_log.get() {
            log.record(&crate::changes::Change::Plugins {
                tenant_id: tenant_id.to_owned(),
            })?;
        }
        Ok(())
    }

    /// Rebuilds the live snapshot of `tenant_id` from the store, after a change another
    /// replica made.
    pub fn refresh(&self, tenant_id: &str) -> Result<(), RegistryError> {
        let _serial = self.changes.lock();
        self.rebuild(tenant_id)
    }

    /// Rebuilds every tenant's live snapshot from the store: those with plugins or
    /// workflow rules stored, and those this replica holds.
    pub fn refresh_all(&self) -> Result<(), RegistryError> {
        let _serial = self.changes.lock();
        let records: Vec<PluginRecord> = self.db.scan(Tree::Plugins, b"", usize::MAX, false)?;
        let rules: Vec<WorkflowRule> = self.db.scan(Tree::WorkflowRules, b"", usize::MAX, false)?;
        let mut tenants: Vec<String> = records.into_iter().map(|r| r.tenant_id).collect();
        tenants.extend(rules.into_iter().map(|rule| rule.tenant_id));
        tenants.extend(self.live.read().keys().cloned());
        tenants.sort();
        tenants.dedup();
        for tenant in tenants {
            self.rebuild(&tenant)?;
        }
        Ok(())
    }

    /// Compiles (or loads from the cache) every first-party plugin, so installing one
    /// is immediate. A plugin that does not load is logged and left out.
    pub fn preload_builtins(&self) {
        for builtin in &self.builtins {
            let sha256 = content_hash(builtin.bytes);
            if let Err(err) = self.load(&sha256, builtin.bytes, builtin.kind) {
                tracing::error!(
                    plugin = builtin.name,
                    "first-party plugin does not load: {err}"
                );
            }
        }
    }

    /// The runtime plugins run in.
    pub fn runtime(&self) -> &Arc<PluginRuntime> {
        &self.runtime
    }

    /// The first-party plugins a tenant can install.
    pub fn builtins(&self) -> &[Builtin] {
        &self.builtins
    }

    /// The egress policy of adapters' and webhooks' outbound traffic.
    pub fn egress(&self) -> &Egress {
        &self.egress
    }

    /// The box that seals tenants' secrets at rest.
    pub fn secret_box(&self) -> &SecretBox {
        &self.secrets
    }

    /// The live snapshot of `tenant_id` (empty when it has no active plugins).
    pub fn live(&self, tenant_id: &str) -> Option<Arc<TenantLive>> {
        self.live.read().get(tenant_id).cloned()
    }

    /// Loads `bytes` (at most once per content hash).
    /// A stored component was checked against the size limits when it was uploaded;
    /// it loads whatever the limits are now.
    fn load(&self, sha256: &str, bytes: &[u8], kind: Kind) -> Result<Loaded, RegistryError> {
        self.load_within(sha256, bytes, kind, &SizeLimits::unbounded())
    }

    /// Loads `bytes` under the size limits `sizes` (at most once per content hash).
    fn load_within(
        &self,
        sha256: &str,
        bytes: &[u8],
        kind: Kind,
        sizes: &SizeLimits,
    ) -> Result<Loaded, RegistryError> {
        let cached = self.loaded.lock().get(sha256).cloned();
        if let Some(hit) = cached.filter(|hit| hit.kind == kind) {
            if self.first_party().contains(sha256) {
                // Known lazily (from a snapshot built before the preload): pinned and
                // brought into memory now.
                self.runtime.pin(&hit);
                if let Err(failure) = self.runtime.warm(&hit) {
                    tracing::error!(sha256, "first-party plugin does not load: {failure}");
                }
            }
            return Ok(hit);
        }
        let first_party = self.first_party().contains(sha256);
        let loaded = self
            .runtime
            .load_pinned(bytes, Some(kind), sizes, first_party)?;
        self.loaded.lock().insert(sha256.to_owned(), loaded.clone());
        Ok(loaded)
    }

    /// Rebuilds and swaps in the live snapshot of `tenant_id` from the store.
    fn rebuild(&self, tenant_id: &str) -> Result<(), RegistryError> {
        let records: Vec<PluginRecord> =
            self.db
                .scan(Tree::Plugins, &key(&[tenant_id, ""]), usize::MAX, false)?;
        let mut live = TenantLive::default();
        // A binding that did not change keeps its warm instances: a change to one of
        // the tenant's plugins (or a replica applying a change again) does not start
        // every other binding afresh.
        let before = self.live.read().get(tenant_id).cloned();
        for record in records {
            let Some(active) = record.active() else {
                continue;
            };
            // Code is loaded on the plugin's first call, not here: a restart or a
            // tenant's change does not bring every plugin's code into memory.
            let loaded = self
                .loaded
                .lock()
                .entry(active.sha256.clone())
                .or_insert_with(|| self.runtime.lazy(&active.sha256, record.kind))
                .clone();
            match record.kind {
                Kind::Rule => {
                    for trigger in &record.triggers {
                        let warm = before
                            .as_ref()
                            .and_then(|before| {
                                before.rules(*trigger).iter().find(|rule| {
                                    rule.plugin_id == record.id
                                        && rule.version == active.version
                                        && rule.loaded.sha256 == active.sha256
                                        && rule.config == record.config
                                })
                            })
                            .map_or_else(
                                || self.runtime.warm_pool(tenant_id),
                                |rule| Arc::clone(&rule.warm),
                            );
                        live.rules.entry(*trigger).or_default().push(LiveRule {
                            plugin_id: record.id.clone(),
                            name: record.name.clone(),
                            version: active.version.clone(),
                            order: record.order,
                            config: record.config.clone(),
                            loaded: loaded.clone(),
                            warm,
                            scope: Scope {
                                tenant_id: tenant_id.to_owned(),
                                plugin_id: record.id.clone(),
                            },
                        });
                    }
                }
                Kind::LookupAdapter | Kind::MessagingAdapter => {
                    let adapter = LiveAdapter {
                        plugin_id: record.id.clone(),
                        name: record.name.clone(),
                        version: active.version.clone(),
                        loaded,
                        call: Arc::new(AdapterCall {
                            config: record.config.clone(),
                            secrets: self.secrets.open_all(
                                &crate::secrets::plugin_scope(&record.tenant_id, &record.id),
                                &record.secrets,
                            ),
                            grant: HttpGrant {
                                hosts: record.granted_hosts.clone(),
                            },
                            timeout: None,
                            egress: self.egress.clone(),
                            trial: None,
                            client: None,
                        }),
                    };
                    if record.kind == Kind::LookupAdapter {
                        // One lookup adapter answers per tenant: the first by name.
                        if live.lookup.is_none() {
                            live.lookup = Some(adapter);
                        }
                    } else {
                        live.messaging.push(adapter);
                    }
                }
            }
        }
        for rules in live.rules.values_mut() {
            rules.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
        }
        live.workflows = self.compile_workflows(tenant_id)?;
        self.live
            .write()
            .insert(tenant_id.to_owned(), Arc::new(live));
        self.evict_unused();
        Ok(())
    }

    /// Drops compiled components no live snapshot uses (the first-party plugins stay,
    /// so installing one remains immediate); a snapshot still in use by a call keeps
    /// its components until the call ends.
    fn evict_unused(&self) {
        let used: HashSet<String> = {
            let live = self.live.read();
            live.values()
                .flat_map(|tenant| {
                    let rules = tenant.rules.values().flatten().map(|rule| &rule.loaded);
                    let adapters = tenant.lookup.iter().chain(&tenant.messaging);
                    rules
                        .chain(adapters.map(|adapter| &adapter.loaded))
                        .map(|loaded| loaded.sha256.clone())
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let first_party = self.first_party();
        self.loaded
            .lock()
            .retain(|sha256, _| used.contains(sha256) || first_party.contains(sha256));
    }

    /// Content hashes of the first-party plugins and the workflow interpreter.
    fn first_party(&self) -> &HashSet<String> {
        self.first_party.get_or_init(|| {
            self.builtins
                .iter()
                .map(|builtin| builtin.bytes)
                .chain(super::builtins::interpreter())
                .map(content_hash)
                .collect()
        })
    }

    /// Removes the blob and compiled code of `sha256` when no version of any plugin
    /// references it and no upload of it is under way. First-party compiled code stays.
    /// Runs with the change lock held.
    fn collect(&self, sha256: &str) -> Result<(), RegistryError> {
        if self.pending.lock().contains_key(sha256) {
            return Ok(());
        }
        let referenced = !self
            .db
            .scan_raw(Tree::PluginRefs, &key(&[sha256, ""]), 1)?
            .is_empty();
        if referenced {
            return Ok(());
        }
        self.db.remove(Tree::PluginBlobs, sha256.as_bytes())?;
        if !self.first_party().contains(sha256) {
            self.runtime.forget_artifact(sha256)?;
            self.loaded.lock().remove(sha256);
        }
        Ok(())
    }

    /// Notes in the index that `record` has a version of each of its components.
    fn index_versions(&self, record: &PluginRecord) -> Result<(), RegistryError> {
        for version in &record.versions {
            self.db.put_raw(
                Tree::PluginRefs,
                &key(&[&version.sha256, &record.tenant_id, &record.id]),
                b"",
            )?;
        }
        Ok(())
    }

    /// Counts an upload of `tenant_id` at `now` against its per-minute allowance.
    fn admit_upload(&self, tenant_id: &str, now: DateTime<Utc>) -> Result<(), RegistryError> {
        let allowed = self.runtime.bounds().uploads_per_minute;
        let minute = now.timestamp().div_euclid(60);
        let mut uploads = self.uploads.lock();
        if uploads.len() > 4096 {
            uploads.retain(|_, (window, _)| *window == minute);
        }
        let (window, count) = uploads.entry(tenant_id.to_owned()).or_insert((minute, 0));
        if *window != minute {
            *window = minute;
            *count = 0;
        }
        if *count >= allowed {
            let retry_after_secs = u64::try_from(60 - now.timestamp().rem_euclid(60)).unwrap_or(60);
            return Err(RegistryError::RateLimited {
                message: format!(
                    "a tenant may upload {allowed} plugins a minute; retry in {retry_after_secs} s"
                ),
                retry_after_secs,
            });
        }
        *count += 1;
        Ok(())
    }

    /// What the plugin keeps in its key-value store, against its quota, and its
    /// dropped log lines.
    pub fn storage(&self, tenant_id: &str, id: &str) -> Result<StorageView, RegistryError> {
        Ok(self.runtime.data().view(tenant_id, id)?)
    }

    /// The tenant's enabled declarative rules, compiled per trigger. A stored rule that
    /// no longer compiles (it cannot, unless the store was edited by hand) is logged
    /// and left out.
    fn compile_workflows(
        &self,
        tenant_id: &str,
    ) -> Result<HashMap<Trigger, Arc<LiveProgram>>, RegistryError> {
        let rules = self.workflow_rules(tenant_id)?;
        let compiled = rules.into_iter().filter(|rule| rule.enabled).filter_map(|rule| {
            match workflows::compile(&rule.conditions) {
                Ok(compiled) => Some((rule, compiled)),
                Err(err) => {
                    tracing::error!(tenant_id, rule_id = %rule.rule_id, "stored workflow rule does not compile: {err}");
                    None
                }
            }
        });
        Ok(programs(compiled))
    }

    /// Every declarative rule of the tenant, in run order within each trigger: by
    /// `order`, then creation.
    pub fn workflow_rules(&self, tenant_id: &str) -> Result<Vec<WorkflowRule>, RegistryError> {
        let mut rules: Vec<WorkflowRule> = self.db.scan(
            Tree::WorkflowRules,
            &key(&[tenant_id, ""]),
            usize::MAX,
            false,
        )?;
        rules.sort_by(|a, b| {
            (a.trigger.name(), a.order, a.created_at, &a.rule_id).cmp(&(
                b.trigger.name(),
                b.order,
                b.created_at,
                &b.rule_id,
            ))
        });
        Ok(rules)
    }

    /// Runs `change` (a write to the tenant's declarative rules) while no other change
    /// runs, then swaps in the tenant's new live snapshot: the next request sees it.
    pub fn change_workflows<T, E: From<RegistryError>>(
        &self,
        tenant_id: &str,
        change: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let _serial = self.changes.lock();
        let answer = change()?;
        self.rebuilt(tenant_id)?;
        Ok(answer)
    }

    /// Evaluates a compiled program on `event`, natively and bounded (see
    /// `workflows::eval`); with `explain`, every node's outcome too.
    pub fn evaluate(
        &self,
        program: &LiveProgram,
        event: &RuleEvent,
        explain: bool,
    ) -> (Usage, Result<Evaluation, Failure>) {
        eval::evaluate(&program.program, event, &self.runtime.limits(), explain)
    }

    /// Refuses `record` when, with it, a trigger would have more than
    /// [`MAX_RULES_PER_TRIGGER`] active rules.
    fn check_capacity(&self, record: &PluginRecord) -> Result<(), RegistryError> {
        if record.kind != Kind::Rule || record.active_version.is_none() {
            return Ok(());
        }
        let others = self.list(&record.tenant_id)?;
        for trigger in &record.triggers {
            let bound = others
                .iter()
                .filter(|other| other.id != record.id && other.active_version.is_some())
                .filter(|other| other.triggers.contains(trigger))
                .count();
            if bound >= MAX_RULES_PER_TRIGGER {
                return Err(RegistryError::Conflict(format!(
                    "{} already has {MAX_RULES_PER_TRIGGER} active rules; deactivate one first",
                    trigger.name()
                )));
            }
        }
        Ok(())
    }

    fn record_key(tenant_id: &str, id: &str) -> Vec<u8> {
        key(&[tenant_id, id])
    }

    /// Every plugin of the tenant.
    pub fn list(&self, tenant_id: &str) -> Result<Vec<PluginRecord>, RegistryError> {
        Ok(self
            .db
            .scan(Tree::Plugins, &key(&[tenant_id, ""]), usize::MAX, false)?)
    }

    /// One plugin of the tenant.
    pub fn get(&self, tenant_id: &str, id: &str) -> Result<PluginRecord, RegistryError> {
        self.db
            .get(Tree::Plugins, &Self::record_key(tenant_id, id))?
            .ok_or(RegistryError::NotFound)
    }

    /// Checks and stores an uploaded version. A new name creates a plugin whose first
    /// version is active and bound to the triggers it asks for; a known name adds a
    /// version, which becomes active only when `activate` says so.
    pub fn upload(
        &self,
        tenant_id: &str,
        manifest: Manifest,
        bytes: &[u8],
        activate: bool,
        now: DateTime<Utc>,
    ) -> Result<PluginRecord, RegistryError> {
        check_manifest(&manifest)?;
        if bytes.len() > MAX_COMPONENT_BYTES {
            return Err(RegistryError::TooLarge(format!(
                "the component is {} bytes; at most {MAX_COMPONENT_BYTES} are accepted",
                bytes.len()
            )));
        }
        if bytes.is_empty() {
            return Err(invalid("component", "the body is empty"));
        }
        self.admit_upload(tenant_id, now)?;
        let sha256 = content_hash(bytes);
        *self.pending.lock().entry(sha256.clone()).or_default() += 1;
        let stored = self.store_upload(tenant_id, manifest, bytes, &sha256, activate, now);
        {
            let mut pending = self.pending.lock();
            if let Some(count) = pending.get_mut(&sha256) {
                *count -= 1;
                if *count == 0 {
                    pending.remove(&sha256);
                }
            }
        }
        if stored.is_err() {
            let _change = self.changes.lock();
            // A refused upload leaves nothing behind (unless another version uses it).
            if let Err(err) = self.collect(&sha256) {
                tracing::error!(%sha256, "cannot collect a refused upload: {err}");
            }
        }
        stored
    }

    /// Checks (by parsing, then compiling once) and stores an upload.
    fn store_upload(
        &self,
        tenant_id: &str,
        manifest: Manifest,
        bytes: &[u8],
        sha256: &str,
        activate: bool,
        now: DateTime<Utc>,
    ) -> Result<PluginRecord, RegistryError> {
        let sha256 = sha256.to_owned();
        // Checks the world, version, imports and sizes by parsing, then compiles once.
        let sizes = self.runtime.bounds().sizes;
        self.load_within(&sha256, bytes, manifest.kind, &sizes)?;

        let _change = self.changes.lock();
        let existing = self
            .list(tenant_id)?
            .into_iter()
            .find(|record| record.name == manifest.name);
        let version = VersionRecord {
            version: manifest.version.clone(),
            sha256: sha256.clone(),
            size: bytes.len(),
            triggers: manifest.triggers.clone(),
            hosts: manifest.hosts.clone(),
            description: manifest.description.clone(),
            uploaded_at: now,
        };
        let record = match existing {
            Some(mut record) => {
                if record.kind != manifest.kind {
                    return Err(RegistryError::Conflict(format!(
                        "plugin {} is a {} plugin; a {} cannot be a version of it",
                        record.name,
                        record.kind.world(),
                        manifest.kind.world()
                    )));
                }
                if record
                    .versions
                    .iter()
                    .any(|v| v.version == manifest.version)
                {
                    return Err(RegistryError::Conflict(format!(
                        "plugin {} already has a version {}",
                        record.name, manifest.version
                    )));
                }
                if record.versions.len() >= MAX_VERSIONS {
                    return Err(RegistryError::Conflict(format!(
                        "plugin {} has {MAX_VERSIONS} versions; delete it or reuse one",
                        record.name
                    )));
                }
                record.versions.push(version);
                if activate {
                    activate_version(&mut record, &manifest.version)?;
                }
                record.updated_at = now;
                record
            }
            None => {
                if self.list(tenant_id)?.len() >= MAX_PLUGINS_PER_TENANT {
                    return Err(RegistryError::Conflict(format!(
                        "a tenant may have at most {MAX_PLUGINS_PER_TENANT} plugins"
                    )));
                }
                PluginRecord {
                    id: format!("plg_{}", uuid::Uuid::new_v4().simple()),
                    tenant_id: tenant_id.to_owned(),
                    name: manifest.name.clone(),
                    kind: manifest.kind,
                    versions: vec![version],
                    active_version: Some(manifest.version.clone()),
                    triggers: manifest.triggers.clone(),
                    order: 100,
                    config: BTreeMap::new(),
                    secrets: SealedMap::new(),
                    granted_hosts: Vec::new(),
                    created_at: now,
                    updated_at: now,
                }
            }
        };
        self.check_capacity(&record)?;
        self.db
            .put_raw(Tree::PluginBlobs, sha256.as_bytes(), bytes)?;
        // The index first: a delete collecting this component meanwhile sees it used.
        self.index_versions(&record)?;
        self.db.put(
            Tree::Plugins,
            &Self::record_key(tenant_id, &record.id),
            &record,
        )?;
        self.rebuilt(tenant_id)?;
        Ok(record)
    }

    /// Installs a first-party plugin for the tenant.
    pub fn install_builtin(
        &self,
        tenant_id: &str,
        name: &str,
        hosts: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<PluginRecord, RegistryError> {
        let builtin = *self
            .builtins
            .iter()
            .find(|builtin| builtin.name == name)
            .ok_or(RegistryError::NotFound)?;
        let manifest = Manifest {
            name: builtin.name.to_owned(),
            kind: builtin.kind,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            triggers: builtin.triggers.to_vec(),
            hosts,
            description: Some(builtin.description.to_owned()),
        };
        self.upload(tenant_id, manifest, builtin.bytes, true, now)
    }

    /// Changes a plugin with `change` and swaps the tenant's live set.
    pub fn modify(
        &self,
        tenant_id: &str,
        id: &str,
        now: DateTime<Utc>,
        change: impl FnOnce(&mut PluginRecord) -> Result<(), RegistryError>,
    ) -> Result<PluginRecord, RegistryError> {
        let _change = self.changes.lock();
        let mut record = self.get(tenant_id, id)?;
        change(&mut record)?;
        self.check_capacity(&record)?;
        record.updated_at = now;
        if let Some(active) = record.active().cloned() {
            let bytes = self
                .db
                .get_raw(Tree::PluginBlobs, active.sha256.as_bytes())?
                .ok_or(RegistryError::NotFound)?;
            self.load(&active.sha256, &bytes, record.kind)?;
        }
        self.db
            .put(Tree::Plugins, &Self::record_key(tenant_id, id), &record)?;
        self.rebuilt(tenant_id)?;
        Ok(record)
    }

    /// Deletes a plugin with its key-value data, and the blobs and compiled code of its
    /// versions that nothing else references.
    pub fn delete(&self, tenant_id: &str, id: &str) -> Result<(), RegistryError> {
        let _change = self.changes.lock();
        let record = self.get(tenant_id, id)?;
        self.db
            .remove(Tree::Plugins, &Self::record_key(tenant_id, id))?;
        for version in &record.versions {
            self.db.remove(
                Tree::PluginRefs,
                &key(&[&version.sha256, tenant_id, &record.id]),
            )?;
        }
        // The live set first, so no new call starts; then the data.
        self.rebuilt(tenant_id)?;
        self.runtime.data().forget(tenant_id, id)?;
        let mut hashes: Vec<&str> = record.versions.iter().map(|v| v.sha256.as_str()).collect();
        hashes.sort_unstable();
        hashes.dedup();
        for sha256 in hashes {
            self.collect(sha256)?;
        }
        Ok(())
    }

    /// Runs the tenant's rules at `event.trigger`, declarative and code, in their one
    /// order (see the module's documentation); each plugin gets its own configuration.
    /// A `block` action stops the chain. With `refused` (the host could not admit the
    /// chain), no rule plugin runs: each is recorded with that failure.
    pub async fn run_rules(
        &self,
        live: &TenantLive,
        mut event: RuleEvent,
        now_millis: i64,
        refused: Option<&Failure>,
    ) -> Vec<RuleRun> {
        let mut runs = Vec::new();
        // Rules see their own configuration only: the host fills it in per plugin.
        event.config.clear();
        // The event as plugins get it, converted once for the chain.
        let mut converted: Option<(super::wit::Event, usize)> = None;
        // Every declarative rule is decided up front, in one bounded evaluation.
        let program = live.workflows(event.trigger);
        let decided = program.map(|program| {
            let (usage, result) = self.evaluate(program, &event, false);
            (program, usage, result.map(|evaluation| evaluation.matched))
        });
        let mut steps: Vec<Step<'_>> = Vec::new();
        match &decided {
            Some((program, _, Ok(matched))) => steps.extend(
                matched
                    .iter()
                    .filter_map(|index| program.rules.get(*index as usize))
                    .map(Step::Workflow),
            ),
            Some((program, usage, Err(failure))) => {
                // The evaluation failed: one failed run stands for the trigger's
                // declarative rules, placed where the first of them would run.
                runs.push(RuleRun {
                    source: RuleSource::Workflow,
                    plugin_id: "workflow-interpreter".to_owned(),
                    name: format!("workflow rules ({})", program.rules.len()),
                    version: String::new(),
                    actions: Vec::new(),
                    error: Some(failure.clone()),
                    fuel: usage.fuel,
                    micros: usage.micros,
                });
            }
            None => {}
        }
        steps.extend(live.rules(event.trigger).iter().map(Step::Plugin));
        steps.sort_by(|a, b| a.key().cmp(&b.key()));
        let usage = decided
            .as_ref()
            .map(|(_, usage, _)| *usage)
            .unwrap_or_default();
        for step in steps {
            let run = match step {
                Step::Workflow(rule) => RuleRun {
                    source: RuleSource::Workflow,
                    plugin_id: rule.rule_id.clone(),
                    name: rule.rule_id.clone(),
                    version: format!("r{}", rule.revision),
                    actions: rule.actions.clone(),
                    error: None,
                    fuel: usage.fuel,
                    micros: usage.micros,
                },
                Step::Plugin(rule) if refused.is_some() => {
                    let failure = refused.cloned();
                    rule_run(rule, Usage::default(), failure.map_or(Ok(Vec::new()), Err))
                }
                Step::Plugin(rule) => {
                    // The host's event is not needed past this point: its text moves.
                    let (plugin_event, base) = converted.get_or_insert_with(|| {
                        let base = event.text_len();
                        (super::convert::event_taken(&mut event), base)
                    });
                    plugin_event.config = rule
                        .config
                        .iter()
                        .map(|(key, value)| (key.clone(), value.clone()))
                        .collect();
                    let input = *base
                        + rule
                            .config
                            .iter()
                            .map(|(key, value)| key.len() + value.len())
                            .sum::<usize>();
                    let (usage, result) = self
                        .runtime
                        .invoke_rule_in(
                            &rule.loaded,
                            Some(&rule.warm),
                            &rule.scope,
                            now_millis,
                            plugin_event,
                            input,
                        )
                        .await;
                    rule_run(rule, usage, result)
                }
            };
            let blocked = run
                .actions
                .iter()
                .any(|action| matches!(action, RuleAction::Block { .. }));
            runs.push(run);
            if blocked {
                break;
            }
        }
        runs
    }

    /// What a chain at `trigger` that ran past its bound (and was dropped) records: each
    /// of its rule plugins, by name, failed with `failure`, so the report says which
    /// rules did not finish (their results, if any, were dropped with the chain).
    pub fn chain_failed(live: &TenantLive, trigger: Trigger, failure: &Failure) -> Vec<RuleRun> {
        live.rules(trigger)
            .iter()
            .map(|rule| rule_run(rule, Usage::default(), Err(failure.clone())))
            .collect()
    }

    /// The rule plugin a dry run of `id` runs, loaded (which may compile it), and the
    /// event it gets (the plugin's own configuration unless the event brings one).
    pub fn dry_run_target(
        &self,
        tenant_id: &str,
        id: &str,
        mut event: RuleEvent,
    ) -> Result<DryRun, RegistryError> {
        let record = self.get(tenant_id, id)?;
        if record.kind != Kind::Rule {
            return Err(invalid(
                "id",
                format!(
                    "{} is a {} plugin; only rules can be dry-run",
                    record.name,
                    record.kind.world()
                ),
            ));
        }
        let active = record
            .active()
            .ok_or_else(|| invalid("id", "the plugin has no active version"))?;
        let bytes = self
            .db
            .get_raw(Tree::PluginBlobs, active.sha256.as_bytes())?
            .ok_or(RegistryError::NotFound)?;
        let loaded = self.load(&active.sha256, &bytes, Kind::Rule)?;
        event.tenant_id = tenant_id.to_owned();
        if event.config.is_empty() {
            event.config = record.config.clone();
        }
        Ok(DryRun {
            plugin_id: record.id,
            loaded,
            event,
        })
    }

    /// Runs the rule plugin of `target` on its event without applying anything: its
    /// key-value writes go to a scratch layer, dropped when the run ends.
    pub async fn dry_run(
        &self,
        target: &DryRun,
        now_millis: i64,
    ) -> (Usage, Result<Vec<RuleAction>, Failure>) {
        let scratch = self
            .runtime
            .data()
            .scratch(&target.event.tenant_id, &target.plugin_id);
        self.runtime
            .invoke_rule(&target.loaded, scratch.scope(), now_millis, &target.event)
            .await
    }
    /// The rule plugin version `version` of `id` as it would run if activated (its
    /// bindings, order and configuration), loaded, for a backtest: its calls run under
    /// `scope` (a scratch layer's) and the returned triggers are those activating it
    /// would bind.
    pub fn backtest_target(
        &self,
        tenant_id: &str,
        id: &str,
        version: &str,
        scope: Scope,
    ) -> Result<(LiveRule, Vec<Trigger>), RegistryError> {
        let mut record = self.get(tenant_id, id)?;
        if record.kind != Kind::Rule {
            return Err(invalid(
                "id",
                format!(
                    "{} is a {} plugin; only rules can be backtested",
                    record.name,
                    record.kind.world()
                ),
            ));
        }
        activate_version(&mut record, version)?;
        let active = record
            .active()
            .ok_or_else(|| invalid("version", "the version is not stored"))?;
        let bytes = self
            .db
            .get_raw(Tree::PluginBlobs, active.sha256.as_bytes())?
            .ok_or(RegistryError::NotFound)?;
        let loaded = self.load(&active.sha256, &bytes, Kind::Rule)?;
        let rule = LiveRule {
            plugin_id: record.id.clone(),
            name: record.name.clone(),
            version: active.version.clone(),
            order: record.order,
            config: record.config.clone(),
            loaded,
            warm: self.runtime.warm_pool(tenant_id),
            scope,
        };
        Ok((rule, record.triggers))
    }
}

/// The enabled rules of `rules` (compiled, in run order within each trigger), as
/// one program per trigger.
pub fn programs(
    rules: impl IntoIterator<Item = (WorkflowRule, workflows::Compiled)>,
) -> HashMap<Trigger, Arc<LiveProgram>> {
    let mut by_trigger: HashMap<Trigger, (Program, Vec<LiveWorkflow>)> = HashMap::new();
    for (rule, compiled) in rules.into_iter().filter(|(rule, _)| rule.enabled) {
        let (program, live) = by_trigger.entry(rule.trigger).or_default();
        program.rules.push(compiled.condition);
        live.push(LiveWorkflow {
            rule_id: rule.rule_id,
            revision: rule.revision,
            order: rule.order,
            actions: rule.actions,
            nodes: compiled.nodes,
        });
    }
    by_trigger
        .into_iter()
        .map(|(trigger, (program, rules))| {
            let program = CompiledProgram::new(program);
            (trigger, Arc::new(LiveProgram { program, rules }))
        })
        .collect()
}

/// A rule plugin ready for a dry run, with its event.
#[derive(Debug)]
pub struct DryRun {
    plugin_id: String,
    loaded: Loaded,
    event: RuleEvent,
}

/// One step of a trigger's chain.
enum Step<'a> {
    Workflow(&'a LiveWorkflow),
    Plugin(&'a LiveRule),
}

impl Step<'_> {
    /// The run order: by `order`, declarative before code, then by position (the
    /// program's order, which is creation order) or by name.
    fn key(&self) -> (i32, u8, &str) {
        match self {
            Step::Workflow(rule) => (rule.order, 0, ""),
            Step::Plugin(rule) => (rule.order, 1, &rule.name),
        }
    }
}

fn rule_run(rule: &LiveRule, usage: Usage, result: Result<Vec<RuleAction>, Failure>) -> RuleRun {
    let (actions, error) = match result {
        Ok(actions) => (actions, None),
        Err(failure) => (Vec::new(), Some(failure)),
    };
    RuleRun {
        source: RuleSource::Plugin,
        plugin_id: rule.plugin_id.clone(),
        name: rule.name.clone(),
        version: rule.version.clone(),
        actions,
        error,
        fuel: usage.fuel,
        micros: usage.micros,
    }
}

/// Makes `version` the active one.
pub fn activate_version(record: &mut PluginRecord, version: &str) -> Result<(), RegistryError> {
    let found = record
        .versions
        .iter()
        .find(|v| v.version == version)
        .ok_or_else(|| {
            invalid(
                "version",
                format!("plugin {} has no version {version}", record.name),
            )
        })?;
    // Grants and bindings never exceed what the new version asks for.
    let hosts = found.hosts.clone();
    let triggers = found.triggers.clone();
    record.granted_hosts.retain(|host| hosts.contains(host));
    if record.kind == Kind::Rule {
        record.triggers.retain(|trigger| triggers.contains(trigger));
        if record.triggers.is_empty() {
            record.triggers = triggers;
        }
    }
    record.active_version = Some(version.to_owned());
    Ok(())
}

/// Names are 1–64 characters of lower-case letters, digits, `-` and `_`; versions are
/// 1–32 printable characters; rules ask for triggers, adapters do not.
fn check_manifest(manifest: &Manifest) -> Result<(), RegistryError> {
    let name_ok = !manifest.name.is_empty()
        && manifest.name.len() <= 64
        && manifest
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !name_ok {
        return Err(invalid(
            "name",
            "must be 1 to 64 characters of a-z, 0-9, '-' and '_'",
        ));
    }
    let version_ok = !manifest.version.is_empty()
        && manifest.version.len() <= 32
        && manifest
            .version
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/');
    if !version_ok {
        return Err(invalid(
            "version",
            "must be 1 to 32 printable characters without '/'",
        ));
    }
    match manifest.kind {
        Kind::Rule if manifest.triggers.is_empty() => {
            return Err(invalid(
                "triggers",
                "a rule must ask for at least one trigger",
            ))
        }
        Kind::Rule if !manifest.hosts.is_empty() => {
            return Err(invalid("hosts", "rules cannot make outbound requests"))
        }
        Kind::MessagingAdapter | Kind::LookupAdapter if !manifest.triggers.is_empty() => {
            return Err(invalid("triggers", "adapters do not run at triggers"))
        }
        _ => {}
    }
    for host in &manifest.hosts {
        let ok = !host.is_empty()
            && host.len() <= 255
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        if !ok {
            return Err(invalid(
                "hosts",
                format!("{host:?} is not a host or host:port"),
            ));
        }
    }
    Ok(())
}
