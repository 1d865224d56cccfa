//! Administration endpoints: tenants (operator), API keys, settings, blocklist, and the
//! dev outbox.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use crate::flows::{CreatedKey, Engine, KeyView, TenantView};
use crate::model::{BlockedNumber, DeliveryEvent, ReportStatus};
use crate::sending::OutboxMessage;
use crate::settings::PhoneSettings;

use super::error::doc::*;
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, OperatorCaller, TenantCaller, TenantChange};
use utoipa::openapi::schema::{Array, Object, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<Arc<Engine>> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(block, blocklist))
        .routes(routes!(unblock))
        .routes(routes!(outbox))
        .routes(routes!(outbox_delivery))
}

/// A name to give (optional).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NameBody {
    name: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/tenants",
    tag = "tenants",
    security(("operator_key" = [])),
    request_body = NameBody,
    responses(
        (status = 201, description = "the tenant and its first API key (`api_key`, shown once)", body = TenantView),
        JsonBody,
        Unauthorized,
        Unavailable,
    )
)]
async fn create_tenant(
    State(engine): State<Arc<Engine>>,
    _operator: OperatorCaller,
    ApiJson(body): ApiJson<NameBody>,
) -> Result<(StatusCode, Json<TenantView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(engine.create_tenant(body.name.as_deref()).await?),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/tenants",
    tag = "tenants",
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "every tenant (never an API key)", body = TenantList),
        Unauthorized,
        Unavailable,
    )
)]
async fn list_tenants(
    State(engine): State<Arc<Engine>>,
    _operator: OperatorCaller,
) -> Result<Json<Value>, ApiError> {
    super::as_value(&TenantList {
        tenants: engine.list_tenants()?,
    })
}

/// The answer of `GET /v1/tenants`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct TenantList {
    tenants: Vec<TenantView>,
}

#[utoipa::path(
    post,
    path = "/v1/keys",
    tag = "keys",
    security(("tenant_key" = [])),
    request_body = NameBody,
    responses(
        (status = 201, description = "the key, with its secret shown once", body = CreatedKey),
        JsonBody,
        Unauthorized,
        RateLimited,
        Unavailable,
    )
)]
async fn create_key(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    ApiJson(body): ApiJson<NameBody>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(engine.create_key(&caller, body.name.as_deref()).await?),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "keys",
    security(("tenant_key" = [])),
    responses(
        (status = 200, description = "the tenant's keys (never their secrets)", body = KeyList),
        Unauthorized,
        Unavailable,
    )
)]
async fn list_keys(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
) -> Result<Json<Value>, ApiError> {
    super::as_value(&KeyList {
        keys: engine.list_keys(&caller)?,
    })
}

/// The answer of `GET /v1/keys`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct KeyList {
    keys: Vec<KeyView>,
}

#[utoipa::path(
    delete,
    path = "/v1/keys/{id}",
    tag = "keys",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the key id")),
    responses(
        (status = 204, description = "revoked"),
        Unauthorized,
        NotFound,
        Conflict,
        RateLimited,
        Unavailable,
    )
)]
async fn revoke_key(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    engine.revoke_key(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/settings/phone-verification",
    tag = "settings",
    security(("tenant_key" = [])),
    responses(
        (status = 200, description = "the tenant's phone-verification settings", body = PhoneSettings),
        Unauthorized,
        Unavailable,
    )
)]
async fn get_settings(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
) -> Result<Json<PhoneSettings>, ApiError> {
    let settings = engine.settings(&caller.tenant_id)?;
    Ok(Json(PhoneSettings::clone(&settings)))
}

/// Updates the settings: fields present in the body replace the current ones (nested
/// objects merge), absent fields keep their value.
#[utoipa::path(
    put,
    path = "/v1/settings/phone-verification",
    tag = "settings",
    security(("tenant_key" = [])),
    request_body = Object,
    responses(
        (status = 200, description = "the settings stored, with `notices` when they ask for what the tenant's plugins cannot give", body = StoredSettings),
        JsonBody,
        Unauthorized,
        RateLimited,
        Unavailable,
    )
)]
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

/// The settings' schema with `notices` beside their fields. Not the derived
/// `allOf` of `PhoneSettings` and `notices`: `PhoneSettings` admits no other property
/// (it is read with `deny_unknown_fields`), so an answer with notices would match
/// no schema of that `allOf`.
impl utoipa::PartialSchema for StoredSettings {
    fn schema() -> RefOr<Schema> {
        let mut schema = <PhoneSettings as utoipa::PartialSchema>::schema();
        if let RefOr::T(Schema::Object(object)) = &mut schema {
            object.additional_properties = None;
            object.description = Some(
                "The settings stored, and notices about what they ask for that the \
                 tenant's plugins cannot give (only when there are any)."
                    .to_owned(),
            );
            object.properties.insert(
                "notices".to_owned(),
                Array::new(Object::with_type(Type::String)).into(),
            );
        }
        schema
    }
}

impl utoipa::ToSchema for StoredSettings {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        <PhoneSettings as utoipa::ToSchema>::schemas(schemas);
    }
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

#[utoipa::path(
    post,
    path = "/v1/blocklist",
    tag = "blocklist",
    security(("tenant_key" = [])),
    request_body = crate::flows::BlockRequest,
    responses(
        (status = 201, description = "the entry", body = BlockedNumber),
        JsonBody,
        Unauthorized,
        RateLimited,
        Unavailable,
    )
)]
async fn block(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    ApiJson(body): ApiJson<crate::flows::BlockRequest>,
) -> Result<(StatusCode, Json<BlockedNumber>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(engine.block(&caller, body).await?),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/blocklist",
    tag = "blocklist",
    security(("tenant_key" = [])),
    responses(
        (status = 200, description = "the blocklist, in the numbers' order", body = Blocklist),
        Unauthorized,
        Unavailable,
    )
)]
async fn blocklist(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
) -> Result<Json<Value>, ApiError> {
    super::as_value(&Blocklist {
        entries: engine.blocklist(&caller)?,
    })
}

/// The answer of `GET /v1/blocklist`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Blocklist {
    entries: Vec<BlockedNumber>,
}

#[utoipa::path(
    delete,
    path = "/v1/blocklist/{phone}",
    tag = "blocklist",
    security(("tenant_key" = [])),
    params(("phone" = String, Path, description = "the number (E.164)")),
    responses(
        (status = 204, description = "removed"),
        Unauthorized,
        NotFound,
        Invalid,
        RateLimited,
        Unavailable,
    )
)]
async fn unblock(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(phone): Path<String>,
) -> Result<StatusCode, ApiError> {
    engine.unblock(&caller, &phone).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct OutboxQuery {
    phone: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/v1/dev/outbox",
    tag = "dev",
    security(("tenant_key" = [])),
    params(OutboxQuery),
    responses(
        (status = 200, description = "the messages kept, newest first", body = OutboxMessages),
        Unauthorized,
        NotFound,
        Invalid,
        Unavailable,
    )
)]
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
    super::as_value(&OutboxMessages {
        messages: outbox.list(&caller.tenant_id, phone.as_deref(), limit)?,
    })
}

/// The answer of `GET /v1/dev/outbox`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct OutboxMessages {
    messages: Vec<OutboxMessage>,
}

/// Development: plays a provider's delivery receipt for a dev outbox message, so
/// `otp_delivery_update` rules can be tried without a real provider.
#[utoipa::path(
    post,
    path = "/v1/dev/outbox/{id}/delivery",
    tag = "dev",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the outbox message id")),
    request_body = crate::flows::DeliveryRequest,
    responses(
        (status = 200, description = "the verification's `verification_id`, `status` and `deliveries`", body = PlayedReceipt),
        JsonBody,
        Unauthorized,
        NotFound,
        Conflict,
        Unavailable,
    )
)]
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
    super::as_value(&PlayedReceipt {
        deliveries: verification.deliveries,
        status: verification.status,
        verification_id: verification.id,
    })
}

/// The answer of `POST /v1/dev/outbox/{id}/delivery`: the verification after the
/// receipt.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct PlayedReceipt {
    deliveries: Vec<DeliveryEvent>,
    status: ReportStatus,
    verification_id: String,
}
