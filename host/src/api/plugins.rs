//! Plugin management: upload (raw `application/wasm` with the manifest in the query, or
//! multipart with a JSON manifest part and a component part), list, get, versions,
//! activate, deactivate, delete, trigger bindings, configuration and secrets, the
//! first-party catalogue, dry runs, backtests of a version, and provider callbacks.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use crate::flows::rules::backtest::{BacktestReport, PluginBacktest};
use crate::flows::Engine;
use crate::model::rules::{RuleEvent, Trigger};
use crate::plugins::registry::{
    activate_version, Manifest, PluginView, RegistryError, VersionRecord, MAX_COMPONENT_BYTES,
};
use crate::plugins::{Failure, Kind, LoadError, PluginBounds, RuleAction, RuntimeStats};

use super::error::doc::*;
use super::error::ApiError;
use super::extract::{ApiJson, OperatorCaller, OptionalJson, TenantCaller, TenantChange};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<Arc<Engine>> {
    OpenApiRouter::new()
        .routes(
            routes!(upload, list).layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES + (64 << 10))),
        )
        .routes(routes!(catalogue))
        .routes(routes!(install))
        .routes(routes!(get_one, remove))
        .routes(routes!(versions))
        .routes(routes!(activate))
        .routes(routes!(deactivate))
        .routes(routes!(bind))
        .routes(routes!(configure))
        .routes(routes!(dry_run))
        .routes(routes!(backtest))
        .routes(routes!(runtime_stats))
        .routes(routes!(callback))
}

/// Runs registry work that compiles or runs plugins (CPU work, and WASI calls that
/// may block) on tokio's blocking pool, off the request workers.
pub(super) async fn off_worker<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|err| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            err.to_string(),
        )
    })
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> Self {
        let message = err.to_string();
        match err {
            RegistryError::Invalid { field, .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
                    .with_field(field)
            }
            RegistryError::Load(load) => {
                let code = match load {
                    LoadError::ForbiddenImport { .. } => "forbidden_import",
                    LoadError::ApiVersion { .. } | LoadError::MixedVersions { .. } => {
                        "unsupported_api_version"
                    }
                    LoadError::WrongWorld { .. } | LoadError::UnknownWorld(_) => "wrong_world",
                    LoadError::NotAComponent(_) => "not_a_component",
                    LoadError::TooLarge(_) => "component_too_large",
                    LoadError::Link(_) | LoadError::Runtime(_) => "invalid_component",
                };
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
                    .with_field("component")
            }
            RegistryError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            RegistryError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            RegistryError::TooLarge(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
            }
            RegistryError::RateLimited {
                retry_after_secs, ..
            } => ApiError {
                retry_after_secs: Some(retry_after_secs),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
            },
            RegistryError::Store(err) => crate::flows::FlowError::Store(err).into(),
        }
    }
}

/// The manifest as query parameters of a raw upload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestQuery {
    name: String,
    kind: Kind,
    version: String,
    /// Comma-separated trigger names.
    triggers: Option<String>,
    /// Comma-separated hosts.
    hosts: Option<String>,
    description: Option<String>,
    #[serde(default)]
    activate: bool,
}

fn split(list: Option<&str>) -> Vec<&str> {
    list.map(|text| {
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

fn parse_triggers(list: Option<&str>) -> Result<Vec<Trigger>, ApiError> {
    split(list)
        .into_iter()
        .map(|name| {
            Trigger::from_name(name).ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_field",
                    format!("triggers: unknown trigger {name:?}"),
                )
                .with_field("triggers")
            })
        })
        .collect()
}

/// Multipart parts of an upload: `manifest` (JSON) and `component` (bytes).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadManifest {
    #[serde(flatten)]
    manifest: Manifest,
}

/// The parts of a multipart upload (for the description).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct UploadParts {
    /// The manifest as JSON: `name`, `kind`, `version`, `triggers`, `hosts`, `description`.
    manifest: String,
    /// The WebAssembly component.
    #[schema(value_type = String, format = Binary)]
    component: Vec<u8>,
}

fn unreadable(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "unreadable_body", message)
}

async fn read_upload(request: Request) -> Result<(Manifest, Bytes, bool), ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let too_large = |rejection: axum::extract::rejection::BytesRejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the component is larger than the limit of {MAX_COMPONENT_BYTES} bytes"),
            )
        } else {
            unreadable(rejection.body_text())
        }
    };
    if content_type.starts_with("application/wasm") {
        let query = request.uri().query().unwrap_or("").to_owned();
        let manifest: ManifestQuery = serde_urlencoded::from_str(&query).map_err(|err| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                format!("manifest query: {err}"),
            )
            .with_field("manifest")
        })?;
        let bytes = Bytes::from_request(request, &()).await.map_err(too_large)?;
        let activate = manifest.activate;
        let manifest = Manifest {
            name: manifest.name,
            kind: manifest.kind,
            version: manifest.version,
            triggers: parse_triggers(manifest.triggers.as_deref())?,
            hosts: split(manifest.hosts.as_deref())
                .into_iter()
                .map(str::to_owned)
                .collect(),
            description: manifest.description,
        };
        return Ok((manifest, bytes, activate));
    }
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, &())
            .await
            .map_err(|rejection| unreadable(rejection.body_text()))?;
        let (mut manifest, mut component, mut activate) = (None, None, false);
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|err| unreadable(err.body_text()))?
        {
            match field.name().unwrap_or("") {
                "manifest" => {
                    let text = field
                        .bytes()
                        .await
                        .map_err(|err| unreadable(err.body_text()))?;
                    let mut de = serde_json::Deserializer::from_slice(&text);
                    let parsed: UploadManifest = serde_path_to_error::deserialize(&mut de)
                        .map_err(|err| {
                            ApiError::new(
                                StatusCode::UNPROCESSABLE_ENTITY,
                                "invalid_field",
                                format!("manifest: {}", err.inner()),
                            )
                            .with_field(format!("manifest.{}", err.path()))
                        })?;
                    manifest = Some(parsed.manifest);
                }
                "component" => {
                    component = Some(field.bytes().await.map_err(|err| {
                        if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
                            ApiError::new(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                "payload_too_large",
                                format!("the component is larger than the limit of {MAX_COMPONENT_BYTES} bytes"),
                            )
                        } else {
                            unreadable(err.body_text())
                        }
                    })?);
                }
                "activate" => {
                    let text = field
                        .text()
                        .await
                        .map_err(|err| unreadable(err.body_text()))?;
                    activate = text.trim() == "true";
                }
                other => {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_field",
                        format!("unknown part {other:?}; expected manifest and component"),
                    )
                    .with_field(other.to_owned()))
                }
            }
        }
        let manifest = manifest.ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "the manifest part is missing",
            )
            .with_field("manifest")
        })?;
        let component = component.ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "the component part is missing",
            )
            .with_field("component")
        })?;
        return Ok((manifest, component, activate));
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "upload a component as application/wasm (manifest in the query) or multipart/form-data (manifest and component parts)",
    ))
}

#[utoipa::path(
    post,
    path = "/v1/plugins",
    tag = "plugins",
    security(("tenant_key" = [])),
    params(("name" = Option<String>, Query, description = "application/wasm uploads: the plugin's name"), ("kind" = Option<String>, Query, description = "application/wasm uploads: `rule`, `messaging_adapter` or `lookup_adapter`"), ("version" = Option<String>, Query, description = "application/wasm uploads: the version"), ("triggers" = Option<String>, Query, description = "application/wasm uploads: trigger names, comma-separated"), ("hosts" = Option<String>, Query, description = "application/wasm uploads: hosts, comma-separated"), ("description" = Option<String>, Query, description = "application/wasm uploads: a description"), ("activate" = Option<String>, Query, description = "application/wasm uploads: `true` to run this version at once")),
    request_body(content((Vec<u8> = "application/wasm"), (UploadParts = "multipart/form-data")), description = "the component, raw with the manifest in the query, or multipart with `manifest` (JSON) and `component` parts"),
    responses(
        (status = 201, description = "the plugin, with the new version", body = PluginView),
        BadRequest,
        Unauthorized,
        Conflict,
        TooLarge,
        UnsupportedMediaType,
        Invalid,
        RateLimited,
        Unavailable,
    )
)]
async fn upload(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    request: Request,
) -> Result<(StatusCode, Json<PluginView>), ApiError> {
    let (manifest, bytes, activate) = read_upload(request).await?;
    let now = engine.clock.now();
    let registry = Arc::clone(&engine.plugins);
    // Checking and compiling a component is CPU work: off the request workers.
    let record =
        off_worker(move || registry.upload(&caller.tenant_id, manifest, &bytes, activate, now))
            .await??;
    engine
        .db
        .sync()
        .await
        .map_err(crate::flows::FlowError::from)?;
    Ok((StatusCode::CREATED, Json(PluginView::from(&record))))
}

#[utoipa::path(
    get,
    path = "/v1/plugins",
    tag = "plugins",
    security(("tenant_key" = [])),
    responses(
        (status = 200, description = "the tenant's plugins (secrets by name only)", body = PluginList),
        Unauthorized,
        Unavailable,
    )
)]
async fn list(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
) -> Result<Json<Value>, ApiError> {
    let plugins: Vec<PluginView> = engine
        .plugins
        .list(&caller.tenant_id)?
        .iter()
        .map(PluginView::from)
        .collect();
    super::as_value(&PluginList { plugins })
}

/// The answer of `GET /v1/plugins`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct PluginList {
    plugins: Vec<PluginView>,
}

#[utoipa::path(
    get,
    path = "/v1/plugins/{id}",
    tag = "plugins",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the plugin id")),
    responses(
        (status = 200, description = "the plugin, with its storage", body = PluginView),
        Unauthorized,
        NotFound,
        Unavailable,
    )
)]
async fn get_one(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
) -> Result<Json<PluginView>, ApiError> {
    let mut view = PluginView::from(&engine.plugins.get(&caller.tenant_id, &id)?);
    view.storage = Some(engine.plugins.storage(&caller.tenant_id, &id)?);
    Ok(Json(view))
}

#[utoipa::path(
    get,
    path = "/v1/plugins/{id}/versions",
    tag = "plugins",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the plugin id")),
    responses(
        (status = 200, description = "`active_version` and `versions`", body = PluginVersions),
        Unauthorized,
        NotFound,
        Unavailable,
    )
)]
async fn versions(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = engine.plugins.get(&caller.tenant_id, &id)?;
    super::as_value(&PluginVersions {
        active_version: record.active_version,
        versions: record.versions,
    })
}

/// The answer of `GET /v1/plugins/{id}/versions`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct PluginVersions {
    /// The version that runs; `null` while deactivated.
    active_version: Option<String>,
    versions: Vec<VersionRecord>,
}

/// The version to run.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ActivateBody {
    version: String,
}

async fn modify(
    engine: &Arc<Engine>,
    tenant_id: &str,
    id: &str,
    change: impl FnOnce(&mut crate::plugins::registry::PluginRecord) -> Result<(), RegistryError>,
) -> Result<Json<PluginView>, ApiError> {
    let record = engine
        .plugins
        .modify(tenant_id, id, engine.clock.now(), change)?;
    engine
        .db
        .sync()
        .await
        .map_err(crate::flows::FlowError::from)?;
    Ok(Json(PluginView::from(&record)))
}

#[utoipa::path(
    post,
    path = "/v1/plugins/{id}/activate",
    tag = "plugins",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the plugin id")),
    request_body = ActivateBody,
    responses(
        (status = 200, description = "the plugin", body = PluginView),
        JsonBody,
        Unauthorized,
        NotFound,
        Conflict,
        RateLimited,
        Unavailable,
    )
)]
async fn activate(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ActivateBody>,
) -> Result<Json<PluginView>, ApiError> {
    modify(&engine, &caller.tenant_id, &id, |record| {
        activate_version(record, &body.version)
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/plugins/{id}/deactivate",
    tag = "plugins",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the plugin id")),
    responses(
        (status = 200, description = "the plugin", body = PluginView),
        Unauthorized,
        NotFound,
        Conflict,
        RateLimited,
        Unavailable,
    )
)]
async fn deactivate(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(id): Path<String>,
) -> Result<Json<PluginView>, ApiError> {
    modify(&engine, &caller.tenant_id, &id, |record| {
        record.active_version = None;
        Ok(())
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/v1/plugins/{id}",
    tag = "plugins",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the plugin id")),
    responses(
        (status = 204, description = "deleted with its data"),
        Unauthorized,
        NotFound,
        RateLimited,
        Unavailable,
    )
)]
async fn remove(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    engine.plugins.delete(&caller.tenant_id, &id)?;
    engine
        .db
        .sync()
        .await
        .map_err(crate::flows::FlowError::from)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Triggers to bind a rule to, and its place in their chains.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BindBody {
    /// Trigger names the manifest asks for.
    #[schema(value_type = Vec<String>)]
    triggers: Vec<Trigger>,
    order: Option<i32>,
}

fn invalid(field: &str, message: impl Into<String>) -> RegistryError {
    RegistryError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

#[utoipa::path(
    put,
    path = "/v1/plugins/{id}/bindings",
    tag = "plugins",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the plugin id")),
    request_body = BindBody,
    responses(
        (status = 200, description = "the plugin", body = PluginView),
        JsonBody,
        Unauthorized,
        NotFound,
        Conflict,
        RateLimited,
        Unavailable,
    )
)]
async fn bind(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<BindBody>,
) -> Result<Json<PluginView>, ApiError> {
    modify(&engine, &caller.tenant_id, &id, |record| {
        if record.kind != Kind::Rule {
            return Err(invalid(
                "triggers",
                "only rule plugins are bound to triggers",
            ));
        }
        let wanted = record
            .active()
            .or(record.versions.last())
            .map(|v| v.triggers.clone())
            .unwrap_or_default();
        if let Some(other) = body.triggers.iter().find(|t| !wanted.contains(t)) {
            return Err(invalid(
                "triggers",
                format!(
                    "{} is not among the triggers the plugin's manifest asks for",
                    other.name()
                ),
            ));
        }
        if let Some(order) = body.order {
            if !(-1_000_000..=1_000_000).contains(&order) {
                return Err(invalid("order", "must be between -1000000 and 1000000"));
            }
            record.order = order;
        }
        let mut triggers = body.triggers.clone();
        triggers.dedup();
        record.triggers = triggers;
        Ok(())
    })
    .await
}

/// A plugin's settings, secrets and granted hosts.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ConfigBody {
    /// Replaces the plain settings.
    config: Option<BTreeMap<String, String>>,
    /// Sets (string) or removes (null) secrets; others are kept.
    secrets: Option<BTreeMap<String, Option<String>>>,
    /// Replaces the granted hosts; each must be one the manifest asks for.
    granted_hosts: Option<Vec<String>>,
}

/// Entries and bytes a plugin's configuration may hold.
const MAX_CONFIG_ENTRIES: usize = 64;
const MAX_CONFIG_VALUE: usize = 4096;

fn check_entries<'a>(
    field: &str,
    entries: impl Iterator<Item = (&'a String, usize)>,
) -> Result<(), RegistryError> {
    for (name, len) in entries {
        if name.is_empty() || name.len() > 128 {
            return Err(invalid(field, "names are 1 to 128 characters"));
        }
        if len > MAX_CONFIG_VALUE {
            return Err(invalid(
                &format!("{field}.{name}"),
                format!("at most {MAX_CONFIG_VALUE} bytes"),
            ));
        }
    }
    Ok(())
}

#[utoipa::path(
    put,
    path = "/v1/plugins/{id}/config",
    tag = "plugins",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the plugin id")),
    request_body = ConfigBody,
    responses(
        (status = 200, description = "the plugin (secrets by name only)", body = PluginView),
        JsonBody,
        Unauthorized,
        NotFound,
        Conflict,
        RateLimited,
        Unavailable,
    )
)]
async fn configure(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ConfigBody>,
) -> Result<Json<PluginView>, ApiError> {
    let sealer = engine.plugins.secret_box().clone();
    let egress = engine.plugins.egress().clone();
    modify(&engine, &caller.tenant_id, &id, |record| {
        if let Some(config) = body.config {
            check_entries("config", config.iter().map(|(k, v)| (k, v.len())))?;
            if config.len() > MAX_CONFIG_ENTRIES {
                return Err(invalid(
                    "config",
                    format!("at most {MAX_CONFIG_ENTRIES} entries"),
                ));
            }
            if let Some(url) = config.get("base_url") {
                crate::flows::messaging::providers::check_base_url(url, egress.policy())
                    .map_err(|message| invalid("config.base_url", message))?;
            }
            record.config = config;
        }
        if let Some(secrets) = body.secrets {
            check_entries(
                "secrets",
                secrets
                    .iter()
                    .map(|(k, v)| (k, v.as_deref().map_or(0, str::len))),
            )?;
            let scope = crate::secrets::plugin_scope(&record.tenant_id, &record.id);
            for (name, value) in secrets {
                match value {
                    Some(value) if value.is_empty() && name.starts_with("callback_") => {
                        return Err(invalid(
                            &format!("secrets.{name}"),
                            "must not be empty: an empty secret would accept callbacks that carry none",
                        ));
                    }
                    Some(value) => {
                        let sealed = sealer.seal_named(&scope, &name, &value);
                        record.secrets.insert(name, sealed)
                    }
                    None => record.secrets.remove(&name),
                };
            }
            if record.secrets.len() > MAX_CONFIG_ENTRIES {
                return Err(invalid(
                    "secrets",
                    format!("at most {MAX_CONFIG_ENTRIES} entries"),
                ));
            }
        }
        if let Some(hosts) = body.granted_hosts {
            for host in &hosts {
                egress
                    .policy()
                    .check_grant(host)
                    .map_err(|refused| invalid("granted_hosts", refused.to_string()))?;
            }
            let asked = record.active().map(|v| v.hosts.clone()).unwrap_or_default();
            if let Some(host) = hosts.iter().find(|host| !asked.contains(host)) {
                return Err(invalid(
                    "granted_hosts",
                    format!("{host} is not among the hosts the plugin's manifest asks for"),
                ));
            }
            record.granted_hosts = hosts;
        }
        Ok(())
    })
    .await
}

/// The event to run a rule on.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DryRunBody {
    /// A rule event (trigger, verification, phone, …).
    #[schema(value_type = Object)]
    event: RuleEvent,
}

#[utoipa::path(
    post,
    path = "/v1/plugins/{id}/dry-run",
    tag = "plugins",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the plugin id")),
    request_body = DryRunBody,
    responses(
        (status = 200, description = "the rule's actions or failure, fuel, time and peak memory", body = DryRun),
        JsonBody,
        Unauthorized,
        NotFound,
        Conflict,
        RateLimited,
        Unavailable,
    )
)]
async fn dry_run(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DryRunBody>,
) -> Result<Json<Value>, ApiError> {
    let now = engine.clock.now().timestamp_millis();
    let registry = Arc::clone(&engine.plugins);
    // An unknown plugin is a 404 whatever the load.
    registry.get(&caller.tenant_id, &id)?;
    // A dry run takes a slot of the tenant's rule share like live traffic, so a
    // tenant cannot drain the shared instance pool through this route.
    let admitted = registry
        .runtime()
        .admission()
        .admit(&caller.tenant_id, crate::plugins::Lane::Rules)
        .await;
    let (usage, result) = match admitted {
        Ok(permit) => {
            let started = std::time::Instant::now();
            let target = {
                let registry = Arc::clone(&registry);
                off_worker(move || registry.dry_run_target(&caller.tenant_id, &id, body.event))
                    .await??
            };
            let answer = registry.dry_run(&target, now).await;
            permit.charge(started.elapsed());
            answer
        }
        Err(failure) => (crate::plugins::Usage::default(), Err(failure)),
    };
    let (actions, error) = match result {
        Ok(actions) => (actions, None),
        Err(failure) => (Vec::new(), Some(failure)),
    };
    super::as_value(&DryRun {
        actions,
        error,
        fuel: usage.fuel,
        micros: usage.micros,
        peak_memory_bytes: usage.peak_memory_bytes,
    })
}

/// The answer of a dry run: the rule's actions, or why it produced none, and what the
/// call used.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct DryRun {
    actions: Vec<RuleAction>,
    /// Why the call produced no actions; `null` when it ran.
    error: Option<Failure>,
    fuel: u64,
    micros: u64,
    peak_memory_bytes: usize,
}

#[utoipa::path(
    post,
    path = "/v1/plugins/{id}/backtest",
    tag = "plugins",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the plugin id")),
    request_body = PluginBacktest,
    responses(
        (status = 200, description = "what the version would have changed in the tenant's recorded traffic: counts per outcome, flags and cases, failures, examples", body = BacktestReport),
        JsonBody,
        Unauthorized,
        NotFound,
        Conflict,
        RateLimited,
        Unavailable,
    )
)]
async fn backtest(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PluginBacktest>,
) -> Result<Json<BacktestReport>, ApiError> {
    Ok(Json(
        engine.backtest_plugin(&caller.tenant_id, &id, body).await?,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/plugins/catalog",
    tag = "plugins",
    security(("tenant_key" = [])),
    responses(
        (status = 200, description = "the first-party plugins", body = PluginCatalogue),
        Unauthorized,
        Unavailable,
    )
)]
async fn catalogue(
    State(engine): State<Arc<Engine>>,
    _caller: TenantCaller,
) -> Result<Json<Value>, ApiError> {
    let plugins = engine
        .plugins
        .builtins()
        .iter()
        .map(|builtin| CatalogueEntry {
            description: builtin.description,
            kind: builtin.kind,
            name: builtin.name,
            size: builtin.bytes.len(),
            triggers: builtin.triggers,
        })
        .collect();
    super::as_value(&PluginCatalogue { plugins })
}

/// The answer of `GET /v1/plugins/catalog`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct PluginCatalogue {
    plugins: Vec<CatalogueEntry>,
}

/// A first-party plugin, as the catalogue shows it.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct CatalogueEntry {
    description: &'static str,
    kind: Kind,
    name: &'static str,
    /// The component's size in bytes.
    size: usize,
    /// Trigger names (rules).
    #[schema(value_type = Vec<String>)]
    triggers: &'static [Trigger],
}

/// Hosts to grant a first-party plugin.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct InstallBody {
    #[serde(default)]
    hosts: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/v1/plugins/catalog/{name}",
    tag = "plugins",
    security(("tenant_key" = [])),
    params(("name" = String, Path, description = "a first-party plugin's name")),
    request_body(content = Option<InstallBody>, description = "optional: the hosts to grant"),
    responses(
        (status = 201, description = "the plugin installed", body = PluginView),
        JsonBody,
        Unauthorized,
        NotFound,
        Conflict,
        RateLimited,
        Unavailable,
    )
)]
async fn install(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(name): Path<String>,
    OptionalJson(body): OptionalJson<Option<InstallBody>>,
) -> Result<(StatusCode, Json<PluginView>), ApiError> {
    let hosts = body.flatten().map(|body| body.hosts).unwrap_or_default();
    let now = engine.clock.now();
    let registry = Arc::clone(&engine.plugins);
    let record = off_worker(move || registry.install_builtin(&caller.tenant_id, &name, hosts, now))
        .await??;
    engine
        .db
        .sync()
        .await
        .map_err(crate::flows::FlowError::from)?;
    Ok((StatusCode::CREATED, Json(PluginView::from(&record))))
}

#[utoipa::path(
    get,
    path = "/v1/plugin-runtime",
    tag = "plugins",
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "runtime limits and counters", body = RuntimeFigures),
        Unauthorized,
    )
)]
async fn runtime_stats(
    State(engine): State<Arc<Engine>>,
    _operator: OperatorCaller,
) -> Result<Json<Value>, ApiError> {
    let runtime = engine.plugins.runtime();
    let limits = runtime.limits();
    super::as_value(&RuntimeFigures {
        bounds: runtime.bounds(),
        builtins: engine.plugins.builtins().iter().map(|b| b.name).collect(),
        limits: CallLimits {
            fuel: limits.fuel,
            max_actions: limits.max_actions,
            max_input_bytes: limits.max_input_bytes,
            max_output_bytes: limits.max_output_bytes,
            memory_bytes: limits.memory_bytes,
            time_ms: limits.time_ms,
        },
        stats: runtime.stats(),
    })
}

/// The answer of `GET /v1/plugin-runtime`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct RuntimeFigures {
    bounds: PluginBounds,
    /// The first-party plugins' names.
    builtins: Vec<&'static str>,
    limits: CallLimits,
    stats: RuntimeStats,
}

/// The sandbox's per-call limits.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct CallLimits {
    fuel: u64,
    max_actions: usize,
    max_input_bytes: usize,
    max_output_bytes: usize,
    memory_bytes: usize,
    time_ms: u64,
}

/// A provider's delivery callback for a tenant's messaging adapter; authenticated by the
/// adapter's `callback_token` secret, given as the `token` query parameter.
#[utoipa::path(
    method(get, post),
    path = "/v1/callbacks/{tenant}/{plugin}",
    tag = "callbacks",
    params(("tenant" = String, Path, description = "the tenant id"), ("plugin" = String, Path, description = "the messaging adapter's id"), ("token" = Option<String>, Query, description = "the adapter's `callback_token` secret")),
    request_body(content = Option<Object>, description = "the provider's callback, as it sends it"),
    responses(
        (status = 200, description = "`{\"recorded\": n}`", body = Recorded),
        BadRequest,
        Unauthorized,
        NotFound,
        TooLarge,
        Invalid,
        RateLimited,
        ProviderFailed,
        Unavailable,
    )
)]
async fn callback(
    State(engine): State<Arc<Engine>>,
    Path((tenant_id, plugin_id)): Path<(String, String)>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let (request, token) = read_callback(request).await?;
    let recorded = engine
        .provider_callback(&tenant_id, &plugin_id, token.as_deref(), request)
        .await
        .map_err(super::providers::callback_error)?;
    super::as_value(&Recorded { recorded })
}

/// The answer to a provider's callback or receipt.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Recorded {
    /// Delivery updates recorded from it.
    pub(super) recorded: usize,
}

/// A provider's callback as adapters see it (method, path and query, headers, body),
/// and its `token` query parameter.
pub(super) async fn read_callback(
    request: Request,
) -> Result<(crate::plugins::CallbackRequest, Option<String>), ApiError> {
    let (parts, body) = request.into_parts();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let token = form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned());
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let bytes = axum::body::to_bytes(body, crate::flows::MAX_CALLBACK_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "callbacks are at most {} bytes",
                    crate::flows::MAX_CALLBACK_BYTES
                ),
            )
        })?;
    let request = crate::plugins::CallbackRequest {
        method: parts.method.as_str().to_owned(),
        url: path_and_query,
        headers,
        body: bytes.to_vec(),
    };
    Ok((request, token))
}
