//! Administration endpoints: tenants (operator), API keys, settings, blocklist, and the
//! dev outbox.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::flows::Engine;
use crate::settings::PhoneSettings;

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, OperatorCaller, TenantCaller, TenantChange};

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/v1/tenants", post(create_tenant).get(list_tenants))
        .route("/v1/keys", post(create_key).get(list_keys))
        .route("/v1/keys/{id}", delete(revoke_key))
        .route(
            "/v1/settings/phone-verification",
            get(get_settings).put(put_settings),
        )
        .route("/v1/blocklist", post(block).get(blocklist))
        .route("/v1/blocklist/{phone}", delete(unblock))
        .route("/v1/dev/outbox", get(outbox))
        .route("/v1/dev/outbox/{id}/delivery", post(outbox_delivery))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NameBody {
    name: Option<String>,
}

async fn create_tenant(
    State(engine): State<Arc<Engine>>,
    _operator: OperatorCaller,
    ApiJson(body): ApiJson<NameBody>,
) -> Result<(StatusCode, Json<impl serde::Serialize>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(engine.create_tenant(body.name.as_deref()).await?),
    ))
}

async fn list_tenants(
    State(engine): State<Arc<Engine>>,
    _operator: OperatorCaller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "tenants": engine.list_tenants()? })))
}

async fn create_key(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    ApiJson(body): ApiJson<NameBody>,
) -> Result<(StatusCode, Json<impl serde::Serialize>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(engine.create_key(&caller, body.name.as_deref()).await?),
    ))
}

async fn list_keys(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "keys": engine.list_keys(&caller)? })))
}

async fn revoke_key(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    engine.revoke_key(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_settings(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
) -> Result<Json<PhoneSettings>, ApiError> {
    let settings = engine.settings(&caller.tenant_id)?;
    Ok(Json(PhoneSettings::clone(&settings)))
}

/// Updates the settings: fields present in the body replace the current ones (nested
/// objects merge), absent fields keep their value.
async fn put_settings(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    ApiJson(patch): ApiJson<Value>,
) -> Result<Json<StoredSettings>, ApiError> {
    if !patch.is_object() {
        return Err(ApiError::invalid(
            "body",
            "must be a JSON object of settings",
        ));
    }
    let current = engine.settings(&caller.tenant_id)?;
    let mut merged = serde_json::to_value(&*current)
        .map_err(|err| ApiError::invalid("body", err.to_string()))?;
    merge(&mut merged, patch);
    let bytes =
        serde_json::to_vec(&merged).map_err(|err| ApiError::invalid("body", err.to_string()))?;
    let settings: PhoneSettings = super::extract::parse_json(&bytes)?;
    let stored = engine.put_settings(&caller.tenant_id, settings).await?;
    let notices = engine.settings_notices(&caller.tenant_id, &stored);
    Ok(Json(StoredSettings {
        settings: stored,
        notices,
    }))
}

/// The answer to a settings update: the settings, and notices about what they ask
/// for that the tenant's plugins cannot give (only when there are any).
#[derive(serde::Serialize)]
struct StoredSettings {
    #[serde(flatten)]
    settings: PhoneSettings,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notices: Vec<String>,
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                match target.get_mut(&key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge(existing, value)
                    }
                    _ => {
                        target.insert(key, value);
                    }
                }
            }
        }
        (target, patch) => *target = patch,
    }
}

async fn block(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    ApiJson(body): ApiJson<crate::flows::BlockRequest>,
) -> Result<(StatusCode, Json<impl serde::Serialize>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(engine.block(&caller, body).await?),
    ))
}

async fn blocklist(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "entries": engine.blocklist(&caller)? })))
}

async fn unblock(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(phone): Path<String>,
) -> Result<StatusCode, ApiError> {
    engine.unblock(&caller, &phone).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboxQuery {
    phone: Option<String>,
    limit: Option<usize>,
}

async fn outbox(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiQuery(query): ApiQuery<OutboxQuery>,
) -> Result<Json<Value>, ApiError> {
    let outbox = engine.outbox.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the dev outbox is disabled: this host runs in production mode",
        )
    })?;
    let phone = query
        .phone
        .as_deref()
        .map(|p| {
            crate::phone::to_e164(p).map_err(|reason| ApiError::invalid("phone", reason.describe()))
        })
        .transpose()?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    Ok(Json(
        json!({ "messages": outbox.list(&caller.tenant_id, phone.as_deref(), limit)? }),
    ))
}

/// Development: plays a provider's delivery receipt for a dev outbox message, so
/// `otp_delivery_update` rules can be tried without a real provider.
async fn outbox_delivery(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<crate::flows::DeliveryRequest>,
) -> Result<Json<Value>, ApiError> {
    let outbox = engine.outbox.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the dev outbox is disabled: this host runs in production mode",
        )
    })?;
    let message = outbox
        .list(&caller.tenant_id, None, 1000)?
        .into_iter()
        .find(|message| message.id == id)
        .ok_or_else(|| ApiError::not_found("outbox message"))?;
    let verification = engine
        .delivery_update(&caller, &message.verification_id, &id, body)
        .await?;
    Ok(Json(json!({
        "verification_id": verification.id,
        "status": verification.status,
        "deliveries": verification.deliveries,
    })))
}
