//! Providers as a product: a provider is one of the tenant's messaging adapters with
//! its own configuration and secrets, the channels and destinations it serves, and
//! its priority, weight and cost (`/v1/providers`). Also the tenant's routing policy
//! (`/v1/routing`), the live statistics and breakers, and a dry run of the routing
//! decision. Providers are cached per tenant; every change replaces the cache entry.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};

use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::egress::Policy as EgressPolicy;
use crate::model::Channel;
use crate::plugins::registry::TenantLive;
use crate::plugins::AdapterCall;
use crate::routing::{self, Ledger, Plan, Policy, Route, RuleRoute, View};
use crate::secrets::{provider_scope, SealedMap, SecretBox};
use crate::store::{key, Tree};

use crate::flows::verification::analysis::parse_valid;
use crate::flows::{Engine, FlowError};

/// Providers a tenant may have.
pub const MAX_PROVIDERS: usize = 50;
/// Configuration or secret entries per provider.
const MAX_ENTRIES: usize = 32;
/// Config keys the host sets on every call; a provider may not set them.
const HOST_CONFIG: &[&str] = &["callback_url", "provider_id"];
/// Secrets that authenticate callbacks: never empty, since an empty one would match a
/// callback that carries none.
const CALLBACK_SECRETS: &[&str] = &["callback_token", "callback_secret"];

/// How a provider's delivery callbacks prove where they come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CallbackAuth {
    /// The secret `callback_token`, as the `token` query parameter or the
    /// `X-Dialgate-Token` header. The host generates one when none is given.
    Token,
    /// An HMAC-SHA256 of the raw body with the secret `callback_secret`, hex, in
    /// `header` (optionally prefixed `sha256=`).
    HmacSha256 {
        #[serde(default = "default_signature_header")]
        header: String,
    },
}

fn default_signature_header() -> String {
    "x-signature".to_owned()
}

/// A stored provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Provider {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub plugin: String,
    pub channels: Vec<Channel>,
    pub countries: Vec<String>,
    pub prefixes: Vec<String>,
    pub priority: u32,
    pub weight: u32,
    pub cost_per_message: f64,
    pub sender_id: Option<String>,
    pub config: BTreeMap<String, String>,
    /// Sealed at rest (see `crate::secrets`), bound to the tenant and provider id.
    pub secrets: SealedMap,
    pub hosts: Vec<String>,
    pub callback_auth: CallbackAuth,
    pub timeout_ms: Option<u32>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Provider {
    pub fn route(&self) -> Route {
        Route {
            id: self.id.clone(),
            name: self.name.clone(),
            channels: self.channels.clone(),
            countries: self.countries.clone(),
            prefixes: self.prefixes.clone(),
            priority: self.priority,
            weight: self.weight,
            cost_per_message: self.cost_per_message,
            enabled: self.enabled,
        }
    }
}

/// A provider as the API shows it: secrets by name only.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProviderView {
    pub id: String,
    pub name: String,
    pub plugin: String,
    pub channels: Vec<Channel>,
    pub countries: Vec<String>,
    pub prefixes: Vec<String>,
    pub priority: u32,
    pub weight: u32,
    pub cost_per_message: f64,
    pub sender_id: Option<String>,
    pub config: BTreeMap<String, String>,
    pub secret_names: Vec<String>,
    pub hosts: Vec<String>,
    pub callback_auth: CallbackAuth,
    /// Where the provider sends delivery receipts.
    pub callback_url: String,
    /// `callback_url` with its `token`, to give the provider: shown once, in the answer
    /// that generated the token (creation, a switch to token receipts, a rotation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url_with_token: Option<String>,
    pub timeout_ms: Option<u32>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/providers`; every field of `PATCH` is optional the same way.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderInput {
    pub name: Option<String>,
    pub plugin: Option<String>,
    pub channels: Option<Vec<Channel>>,
    pub countries: Option<Vec<String>>,
    pub prefixes: Option<Vec<String>>,
    pub priority: Option<u32>,
    pub weight: Option<u32>,
    pub cost_per_message: Option<f64>,
    pub sender_id: Option<String>,
    pub config: Option<BTreeMap<String, String>>,
    /// Merged into the stored secrets; an empty value removes one.
    pub secrets: Option<BTreeMap<String, String>>,
    pub hosts: Option<Vec<String>>,
    pub callback_auth: Option<CallbackAuth>,
    pub timeout_ms: Option<u32>,
    pub enabled: Option<bool>,
}

/// A tenant's providers and policy as routing reads them.
#[derive(Debug, Default)]
pub struct TenantRouting {
    pub policy: Policy,
    pub providers: Vec<Provider>,
    pub routes: Vec<Route>,
    /// Each provider's adapter call, prepared on first use (`Engine::prepared_call`);
    /// it lives as long as these providers do, so a change of providers or policy
    /// (which replaces the whole `TenantRouting`) prepares them again.
    pub(crate) prepared: PreparedCalls,
}

/// Prepared adapter calls by provider id, shared by a routing and its filtered copies.
pub(crate) type PreparedCalls = Arc<Mutex<HashMap<String, PreparedCall>>>;

/// A provider's adapter call as every send and receipt of the provider uses it: the
/// adapter's configuration overlaid with the provider's and the host's keys, secrets
/// opened, hosts granted, and a connection pool of the provider's own.
#[derive(Debug, Clone)]
pub(crate) struct PreparedCall {
    /// The tenant's plugins it was prepared with: a new installation or configuration
    /// of the adapter (a new `TenantLive`) prepares the call again.
    pub live: Weak<TenantLive>,
    pub call: Arc<AdapterCall>,
    /// What a first-party adapter lacks to send with this call (nothing: usable).
    pub missing: Vec<String>,
}

/// Routing state shared by all requests: the per-tenant cache and the ledger of
/// statistics and breakers.
#[derive(Debug, Default)]
pub struct RoutingState {
    tenants: RwLock<HashMap<String, Arc<TenantRouting>>>,
    pub ledger: Ledger,
}

impl RoutingState {
    /// Drops the tenant's cached providers and policy (another replica changed them).
    pub(crate) fn forget(&self, tenant_id: &str) {
        self.tenants.write().remove(tenant_id);
    }

    /// Drops every tenant's cached providers and policy.
    pub(crate) fn forget_all(&self) {
        self.tenants.write().clear();
    }
}

/// Body of `POST /v1/routing/plan`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    pub phone: String,
    #[serde(default)]
    pub channel: Option<Channel>,
    /// A provider a rule would force.
    #[serde(default)]
    pub route: Option<String>,
    /// Providers a rule would forbid.
    #[serde(default)]
    pub avoid: Vec<String>,
}

/// One provider × country in `GET /v1/routing/stats`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CellView {
    pub provider_id: String,
    pub provider: String,
    pub country: String,
    pub breaker: routing::BreakerState,
    pub consecutive_failures: u32,
    pub breaker_trips: u64,
    #[serde(flatten)]
    pub performance: routing::Performance,
}

fn check_name(field: &str, value: &str) -> Result<(), FlowError> {
    let ok = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(FlowError::invalid(
            field,
            "1 to 64 characters of letters, digits, '-', '_' or '.'",
        ))
    }
}

fn check_entries(field: &str, entries: &BTreeMap<String, String>) -> Result<(), FlowError> {
    if entries.len() > MAX_ENTRIES {
        return Err(FlowError::invalid(
            field,
            format!("at most {MAX_ENTRIES} entries"),
        ));
    }
    for (name, value) in entries {
        let ok_name = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok_name {
            return Err(FlowError::invalid(
                format!("{field}.{name}"),
                "names are 1 to 64 characters of a-z, 0-9 and '_'",
            ));
        }
        if value.len() > 2048 {
            return Err(FlowError::invalid(
                format!("{field}.{name}"),
                "at most 2048 characters",
            ));
        }
    }
    Ok(())
}

fn check_host(value: &str) -> bool {
    let (host, port) = match value.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (value, None),
    };
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
        && port.is_none_or(|port| port.parse::<u16>().is_ok_and(|p| p > 0))
}

/// Checks a configured base URL (the provider's or a lookup adapter's): absolute
/// `http` or `https`, and not a literal address the egress policy refuses. A name is
/// checked again on every connection, on the address it resolves to. The error is
/// the message for the field.
pub(crate) fn check_base_url(value: &str, egress: &EgressPolicy) -> Result<(), String> {
    let url = reqwest::Url::parse(value).map_err(|err| format!("not an absolute URL: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be an http or https URL with a host".into());
    }
    egress
        .check_url(&url)
        .map_err(|refused| refused.to_string())
}

/// Applies `input` over `current` and checks the result; the first problem is named.
/// Secrets are sealed with `secrets`; literal addresses are checked against `egress`.
/// Applies `input` to `current`; the callback token it generated, if it made one (a
/// provider that authenticates receipts by token and had none).
fn apply(
    current: &mut Provider,
    input: ProviderInput,
    egress: &EgressPolicy,
    secrets: &SecretBox,
) -> Result<Option<String>, FlowError> {
    let scope = provider_scope(&current.tenant_id, &current.id);
    if let Some(name) = input.name {
        check_name("name", &name)?;
        current.name = name;
    }
    if let Some(plugin) = input.plugin {
        check_name("plugin", &plugin)?;
        current.plugin = plugin;
    }
    if let Some(mut channels) = input.channels {
        if channels.is_empty() {
            return Err(FlowError::invalid("channels", "name at least one channel"));
        }
        channels.dedup();
        current.channels = channels;
    }
    if let Some(countries) = input.countries {
        if countries.len() > 250 {
            return Err(FlowError::invalid("countries", "at most 250 countries"));
        }
        let mut normalised = Vec::with_capacity(countries.len());
        for (at, country) in countries.iter().enumerate() {
            let upper = country.to_ascii_uppercase();
            if isocountry::CountryCode::for_alpha2(&upper).is_err() {
                return Err(FlowError::invalid(
                    format!("countries[{at}]"),
                    format!("`{country}` is not an ISO 3166-1 alpha-2 country code"),
                ));
            }
            if !normalised.contains(&upper) {
                normalised.push(upper);
            }
        }
        current.countries = normalised;
    }
    if let Some(prefixes) = input.prefixes {
        if prefixes.len() > 500 {
            return Err(FlowError::invalid("prefixes", "at most 500 prefixes"));
        }
        for (at, prefix) in prefixes.iter().enumerate() {
            let digits = prefix.strip_prefix('+').unwrap_or_default();
            if !(1..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(FlowError::invalid(
                    format!("prefixes[{at}]"),
                    format!("`{prefix}` is not an E.164 prefix such as +99890"),
                ));
            }
        }
        current.prefixes = prefixes;
    }
    if let Some(priority) = input.priority {
        if priority > 1000 {
            return Err(FlowError::invalid("priority", "must be between 0 and 1000"));
        }
        current.priority = priority;
    }
    if let Some(weight) = input.weight {
        if !(1..=1000).contains(&weight) {
            return Err(FlowError::invalid("weight", "must be between 1 and 1000"));
        }
        current.weight = weight;
    }
    if let Some(cost) = input.cost_per_message {
        if !cost.is_finite() || !(0.0..=100.0).contains(&cost) {
            return Err(FlowError::invalid(
                "cost_per_message",
                "must be a number between 0 and 100",
            ));
        }
        current.cost_per_message = cost;
    }
    if let Some(sender) = input.sender_id {
        let ok = (1..=16).contains(&sender.chars().count())
            && sender.chars().all(|c| c.is_ascii_graphic() || c == ' ');
        if !ok {
            return Err(FlowError::invalid(
                "sender_id",
                "1 to 16 printable ASCII characters",
            ));
        }
        current.sender_id = Some(sender);
    }
    if let Some(config) = input.config {
        check_entries("config", &config)?;
        if let Some(reserved) = config.keys().find(|k| HOST_CONFIG.contains(&k.as_str())) {
            return Err(FlowError::invalid(
                format!("config.{reserved}"),
                "is set by the host on every call",
            ));
        }
        if let Some(url) = config.get("base_url") {
            check_base_url(url, egress)
                .map_err(|message| FlowError::invalid("config.base_url", message))?;
        }
        current.config = config;
    }
    if let Some(given) = input.secrets {
        check_entries("secrets", &given)?;
        for (name, value) in given {
            if value.is_empty() && CALLBACK_SECRETS.contains(&name.as_str()) {
                return Err(FlowError::invalid(
                    format!("secrets.{name}"),
                    "must not be empty: an empty secret would accept callbacks that carry none",
                ));
            }
            if value.is_empty() {
                current.secrets.remove(&name);
            } else {
                let sealed = secrets.seal_named(&scope, &name, &value);
                current.secrets.insert(name, sealed);
            }
        }
    }
    if let Some(hosts) = input.hosts {
        if hosts.len() > 16 {
            return Err(FlowError::invalid("hosts", "at most 16 hosts"));
        }
        if let Some(at) = hosts.iter().position(|h| !check_host(h)) {
            return Err(FlowError::invalid(
                format!("hosts[{at}]"),
                "a host name or address, optionally with :port",
            ));
        }
        for (at, host) in hosts.iter().enumerate() {
            egress.check_grant(host).map_err(|refused| {
                FlowError::invalid(format!("hosts[{at}]"), refused.to_string())
            })?;
        }
        current.hosts = hosts;
    }
    if let Some(auth) = input.callback_auth {
        if let CallbackAuth::HmacSha256 { header } = &auth {
            if axum::http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return Err(FlowError::invalid(
                    "callback_auth.header",
                    "not a valid header name",
                ));
            }
        }
        current.callback_auth = auth;
    }
    if let Some(timeout) = input.timeout_ms {
        if !(100..=15_000).contains(&timeout) {
            return Err(FlowError::invalid(
                "timeout_ms",
                "must be between 100 and 15000",
            ));
        }
        current.timeout_ms = Some(timeout);
    }
    if let Some(enabled) = input.enabled {
        current.enabled = enabled;
    }
    match &current.callback_auth {
        CallbackAuth::Token if !current.secrets.contains_key("callback_token") => {
            Ok(Some(new_callback_token(current, secrets)))
        }
        CallbackAuth::HmacSha256 { .. } if !current.secrets.contains_key("callback_secret") => {
            Err(FlowError::invalid(
                "secrets.callback_secret",
                "signature callbacks need the secret `callback_secret`",
            ))
        }
        _ => Ok(None),
    }
}

/// Gives `provider` a new callback token, sealed among its secrets, and returns it.
fn new_callback_token(provider: &mut Provider, secrets: &SecretBox) -> String {
    let scope = provider_scope(&provider.tenant_id, &provider.id);
    let token = format!("cbt_{}", uuid::Uuid::new_v4().simple());
    let sealed = secrets.seal_named(&scope, "callback_token", &token);
    provider.secrets.insert("callback_token".into(), sealed);
    token
}

impl Engine {
    fn provider_key(tenant_id: &str, provider_id: &str) -> Vec<u8> {
        key(&[tenant_id, provider_id])
    }

    /// The callback URL of `provider_id` (without its token).
    pub(crate) fn callback_url(&self, provider_id: &str) -> String {
        let base = self
            .replica
            .public_url
            .get()
            .map(String::as_str)
            .unwrap_or("http://127.0.0.1");
        format!("{}/v1/callbacks/{provider_id}", base.trim_end_matches('/'))
    }

    pub fn provider_view(&self, provider: &Provider) -> ProviderView {
        ProviderView {
            id: provider.id.clone(),
            name: provider.name.clone(),
            plugin: provider.plugin.clone(),
            channels: provider.channels.clone(),
            countries: provider.countries.clone(),
            prefixes: provider.prefixes.clone(),
            priority: provider.priority,
            weight: provider.weight,
            cost_per_message: provider.cost_per_message,
            sender_id: provider.sender_id.clone(),
            config: provider.config.clone(),
            secret_names: provider.secrets.keys().cloned().collect(),
            hosts: provider.hosts.clone(),
            callback_auth: provider.callback_auth.clone(),
            callback_url: self.callback_url(&provider.id),
            callback_url_with_token: None,
            timeout_ms: provider.timeout_ms,
            enabled: provider.enabled,
            created_at: provider.created_at,
            updated_at: provider.updated_at,
        }
    }

    /// The tenant's providers (in priority order) and policy, through the cache.
    pub fn tenant_routing(&self, tenant_id: &str) -> Result<Arc<TenantRouting>, FlowError> {
        if let Some(hit) = self.replica.routing.tenants.read().get(tenant_id) {
            return Ok(hit.clone());
        }
        let mut tenants = self.replica.routing.tenants.write();
        if let Some(hit) = tenants.get(tenant_id) {
            return Ok(hit.clone());
        }
        let loaded = Arc::new(self.load_routing(tenant_id)?);
        tenants.insert(tenant_id.to_owned(), loaded.clone());
        Ok(loaded)
    }

    fn load_routing(&self, tenant_id: &str) -> Result<TenantRouting, FlowError> {
        let mut providers: Vec<Provider> = self.db.scan(
            Tree::Providers,
            &key(&[tenant_id, ""]),
            MAX_PROVIDERS,
            false,
        )?;
        providers.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        let policy: Policy = self
            .db
            .get(Tree::RoutingPolicies, tenant_id.as_bytes())?
            .unwrap_or_default();
        let routes = providers.iter().map(Provider::route).collect();
        Ok(TenantRouting {
            prepared: PreparedCalls::default(),
            policy,
            providers,
            routes,
        })
    }

    /// Runs `change` on the tenant's providers while holding the cache's write lock,
    /// then drops the tenant's entry so the next read loads what was written.
    fn change_routing<R>(
        &self,
        tenant_id: &str,
        change: impl FnOnce() -> Result<R, FlowError>,
    ) -> Result<R, FlowError> {
        let mut tenants = self.replica.routing.tenants.write();
        let result = change();
        tenants.remove(tenant_id);
        drop(tenants);
        let result = result?;
        self.changed(&crate::changes::Change::Routing {
            tenant_id: tenant_id.to_owned(),
        })?;
        Ok(result)
    }

    /// Checks that the tenant has a messaging adapter named `plugin`.
    fn check_adapter(&self, tenant_id: &str, plugin: &str) -> Result<(), FlowError> {
        let installed = self
            .plugins
            .live(tenant_id)
            .is_some_and(|live| live.messaging().iter().any(|a| a.name == plugin));
        if installed {
            Ok(())
        } else {
            Err(FlowError::invalid(
                "plugin",
                format!(
                    "no active messaging adapter named `{plugin}`: install one first \
                     (POST /v1/plugins, or POST /v1/plugins/catalog/{plugin})"
                ),
            ))
        }
    }

    /// `POST /v1/providers`.
    pub async fn create_provider(
        &self,
        tenant_id: &str,
        input: ProviderInput,
    ) -> Result<ProviderView, FlowError> {
        let now = self.clock.now();
        let name = input
            .name
            .clone()
            .ok_or_else(|| FlowError::invalid("name", "required"))?;
        let plugin = input
            .plugin
            .clone()
            .ok_or_else(|| FlowError::invalid("plugin", "required"))?;
        let mut provider = Provider {
            id: format!("prv_{}", uuid::Uuid::new_v4().simple()),
            tenant_id: tenant_id.to_owned(),
            name,
            plugin,
            channels: vec![Channel::Sms],
            countries: Vec::new(),
            prefixes: Vec::new(),
            priority: 100,
            weight: 1,
            cost_per_message: 0.0,
            sender_id: None,
            config: BTreeMap::new(),
            secrets: SealedMap::new(),
            hosts: Vec::new(),
            callback_auth: CallbackAuth::Token,
            timeout_ms: None,
            enabled: true,
            created_at: now,
            updated_at: now,
        };
        let token = apply(
            &mut provider,
            input,
            self.plugins.egress().policy(),
            self.plugins.secret_box(),
        )?;
        self.check_adapter(tenant_id, &provider.plugin)?;
        self.change_routing(tenant_id, || {
            let existing: Vec<Provider> = self.db.scan(
                Tree::Providers,
                &key(&[tenant_id, ""]),
                MAX_PROVIDERS + 1,
                false,
            )?;
            if existing.len() >= MAX_PROVIDERS {
                return Err(FlowError::Conflict {
                    code: "too_many_providers",
                    message: format!("a tenant may have at most {MAX_PROVIDERS} providers"),
                });
            }
            if existing.iter().any(|p| p.name == provider.name) {
                return Err(FlowError::Conflict {
                    code: "provider_exists",
                    message: format!("a provider named `{}` exists", provider.name),
                });
            }
            self.db.put(
                Tree::Providers,
                &Self::provider_key(tenant_id, &provider.id),
                &provider,
            )?;
            self.db
                .put(Tree::ProviderIds, provider.id.as_bytes(), &tenant_id)?;
            Ok(())
        })?;
        self.db.sync().await?;
        Ok(self.view_with_token(&provider, token.as_deref()))
    }

    /// The view of `provider`, with its callback URL's token when one was just made.
    fn view_with_token(&self, provider: &Provider, token: Option<&str>) -> ProviderView {
        let mut view = self.provider_view(provider);
        view.callback_url_with_token =
            token.map(|token| format!("{}?token={token}", view.callback_url));
        view
    }

    /// `POST /v1/providers/{id}/rotate-callback-token`: a new callback token, shown once
    /// in the answer's `callback_url_with_token`; the old one is refused from now on.
    pub async fn rotate_callback_token(
        &self,
        tenant_id: &str,
        provider_id: &str,
    ) -> Result<ProviderView, FlowError> {
        let now = self.clock.now();
        let mut token = String::new();
        let updated = self.change_routing(tenant_id, || {
            self.db.update::<Provider, FlowError, Provider>(
                Tree::Providers,
                &Self::provider_key(tenant_id, provider_id),
                |current| {
                    let mut provider = current.ok_or(FlowError::NotFound("provider"))?;
                    if provider.callback_auth != CallbackAuth::Token {
                        return Err(FlowError::Conflict {
                            code: "callback_auth_not_token",
                            message: "this provider's receipts are signed (callback_auth \
                                      hmac_sha256): rotate its `callback_secret` instead"
                                .into(),
                        });
                    }
                    token = new_callback_token(&mut provider, self.plugins.secret_box());
                    provider.updated_at = now;
                    Ok((Some(provider.clone()), provider))
                },
            )
        })?;
        self.db.sync().await?;
        Ok(self.view_with_token(&updated, Some(&token)))
    }

    /// `GET /v1/providers`, in priority order.
    pub fn providers(&self, tenant_id: &str) -> Result<Vec<ProviderView>, FlowError> {
        let routing = self.tenant_routing(tenant_id)?;
        Ok(routing
            .providers
            .iter()
            .map(|p| self.provider_view(p))
            .collect())
    }

    /// A stored provider of the tenant.
    pub fn provider(&self, tenant_id: &str, provider_id: &str) -> Result<Provider, FlowError> {
        self.db
            .get(Tree::Providers, &Self::provider_key(tenant_id, provider_id))?
            .ok_or(FlowError::NotFound("provider"))
    }

    /// `PATCH /v1/providers/{id}`, and enable/disable.
    pub async fn update_provider(
        &self,
        tenant_id: &str,
        provider_id: &str,
        input: ProviderInput,
    ) -> Result<ProviderView, FlowError> {
        let now = self.clock.now();
        if let Some(plugin) = &input.plugin {
            check_name("plugin", plugin)?;
            self.check_adapter(tenant_id, plugin)?;
        }
        let renamed = input.name.clone();
        let mut token = None;
        let updated = self.change_routing(tenant_id, || {
            if let Some(name) = &renamed {
                let others: Vec<Provider> = self.db.scan(
                    Tree::Providers,
                    &key(&[tenant_id, ""]),
                    MAX_PROVIDERS + 1,
                    false,
                )?;
                if others
                    .iter()
                    .any(|p| &p.name == name && p.id != provider_id)
                {
                    return Err(FlowError::Conflict {
                        code: "provider_exists",
                        message: format!("a provider named `{name}` exists"),
                    });
                }
            }
            self.db.update::<Provider, FlowError, Provider>(
                Tree::Providers,
                &Self::provider_key(tenant_id, provider_id),
                |current| {
                    let mut provider = current.ok_or(FlowError::NotFound("provider"))?;
                    token = apply(
                        &mut provider,
                        input.clone(),
                        self.plugins.egress().policy(),
                        self.plugins.secret_box(),
                    )?;
                    provider.updated_at = now;
                    Ok((Some(provider.clone()), provider))
                },
            )
        })?;
        self.db.sync().await?;
        Ok(self.view_with_token(&updated, token.as_deref()))
    }

    /// `DELETE /v1/providers/{id}`. Receipts for its messages are no longer accepted.
    pub async fn delete_provider(
        &self,
        tenant_id: &str,
        provider_id: &str,
    ) -> Result<(), FlowError> {
        self.change_routing(tenant_id, || {
            if !self
                .db
                .remove(Tree::Providers, &Self::provider_key(tenant_id, provider_id))?
            {
                return Err(FlowError::NotFound("provider"));
            }
            self.db.remove(Tree::ProviderIds, provider_id.as_bytes())?;
            Ok(())
        })?;
        self.replica.routing.ledger.forget(tenant_id, provider_id);
        self.db.sync().await?;
        Ok(())
    }

    /// The tenant that owns `provider_id`, for callbacks.
    pub(crate) fn provider_owner(&self, provider_id: &str) -> Result<Option<String>, FlowError> {
        Ok(self.db.get(Tree::ProviderIds, provider_id.as_bytes())?)
    }

    /// `GET /v1/routing`.
    pub fn routing_policy(&self, tenant_id: &str) -> Result<Policy, FlowError> {
        Ok(self.tenant_routing(tenant_id)?.policy.clone())
    }

    /// `PUT /v1/routing`.
    pub async fn put_routing_policy(
        &self,
        tenant_id: &str,
        policy: Policy,
    ) -> Result<Policy, FlowError> {
        policy
            .check()
            .map_err(|(field, message)| FlowError::invalid(field, message))?;
        self.change_routing(tenant_id, || {
            self.db
                .put(Tree::RoutingPolicies, tenant_id.as_bytes(), &policy)?;
            Ok(())
        })?;
        self.db.sync().await?;
        Ok(policy)
    }

    /// `GET /v1/routing/stats`: every provider × country seen since the start.
    pub fn routing_stats(&self, tenant_id: &str) -> Result<Vec<CellView>, FlowError> {
        let routing = self.tenant_routing(tenant_id)?;
        let now = self.clock.now();
        let mut cells = Vec::new();
        for (provider_id, country, cell) in self.replica.routing.ledger.cells_of(tenant_id) {
            let Some(provider) = routing.providers.iter().find(|p| p.id == provider_id) else {
                continue;
            };
            let breaker = cell.breaker.lock().clone();
            cells.push(CellView {
                provider_id,
                provider: provider.name.clone(),
                country,
                breaker: breaker.state(&routing.policy, now),
                consecutive_failures: breaker.failures(),
                breaker_trips: breaker.trips,
                performance: cell.stats.lock().performance(&routing.policy, now),
            });
        }
        Ok(cells)
    }

    /// The routing decision for a send, with what was considered.
    pub(crate) fn plan_route(
        &self,
        tenant_id: &str,
        routing: &TenantRouting,
        e164: &str,
        country: Option<&str>,
        channel: Channel,
        rule: &RuleRoute<'_>,
    ) -> Plan {
        let view = View {
            health: &self.replica.routing.ledger,
            tenant: tenant_id,
            country: country.unwrap_or("*"),
            policy: &routing.policy,
            now: self.clock.now(),
        };
        routing::plan(
            &routing.routes,
            &routing.policy,
            routing::Destination {
                e164,
                country,
                channel,
            },
            rule,
            &view,
            &mut rand::rng(),
        )
    }

    /// `POST /v1/routing/plan`: what routing would do for a send now.
    pub fn preview_route(
        &self,
        tenant_id: &str,
        request: PlanRequest,
    ) -> Result<(Plan, Policy), FlowError> {
        let number = parse_valid(&request.phone, "phone")?;
        let routing = self.tenant_routing(tenant_id)?;
        let plan = self.plan_route(
            tenant_id,
            &routing,
            &number.e164,
            number.region.as_deref(),
            request.channel.unwrap_or(Channel::Sms),
            &RuleRoute {
                forced: request.route.as_deref(),
                forbidden: &request.avoid,
            },
        );
        Ok((plan, routing.policy.clone()))
    }
}
