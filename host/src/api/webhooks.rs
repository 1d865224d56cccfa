//! Webhooks over HTTP: subscriptions at `/v1/webhooks` (create, list, get, change,
//! delete, rotate the secret, send a test event), each one's delivery log with manual
//! retry, and the event catalogue at `/v1/webhooks/events`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;

use crate::flows::webhooks::subscriptions::{
    CreateSubscription, DeliveryQuery, DeliveryView, PatchSubscription, SubscriptionView,
};
use crate::flows::Engine;

use super::error::doc::*;
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, TenantCaller, TenantChange};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<Arc<Engine>> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(events))
        .routes(routes!(get_one, update, remove))
        .routes(routes!(rotate_secret))
        .routes(routes!(test))
        .routes(routes!(deliveries))
        .routes(routes!(retry))
}

#[utoipa::path(
    post,
    path = "/v1/webhooks",
    tag = "webhooks",
    security(("tenant_key" = [])),
    request_body = CreateSubscription,
    responses(
        (status = 201, description = "the subscription, with its signing `secret` shown once", body = SubscriptionView),
        JsonBody,
        Unauthorized,
        Conflict,
        RateLimited,
        Unavailable,
    )
)]
async fn create(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    ApiJson(body): ApiJson<CreateSubscription>,
) -> Result<(StatusCode, Json<SubscriptionView>), ApiError> {
    let created = engine.create_webhook(&caller.tenant_id, body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "webhooks",
    security(("tenant_key" = [])),
    responses(
        (status = 200, description = "the tenant's subscriptions (never their secrets)", body = WebhookList),
        Unauthorized,
        Unavailable,
    )
)]
async fn list(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
) -> Result<Json<Value>, ApiError> {
    let webhooks = engine.webhooks(&caller.tenant_id)?;
    super::as_value(&WebhookList { webhooks })
}

/// The answer of `GET /v1/webhooks`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct WebhookList {
    webhooks: Vec<SubscriptionView>,
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the subscription id")),
    responses(
        (status = 200, description = "the subscription (never the secret)", body = SubscriptionView),
        Unauthorized,
        NotFound,
        Unavailable,
    )
)]
async fn get_one(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
) -> Result<Json<SubscriptionView>, ApiError> {
    Ok(Json(engine.webhook(&caller.tenant_id, &id)?))
}

#[utoipa::path(
    patch,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the subscription id")),
    request_body = PatchSubscription,
    responses(
        (status = 200, description = "the subscription changed", body = SubscriptionView),
        JsonBody,
        Unauthorized,
        NotFound,
        RateLimited,
        Unavailable,
    )
)]
async fn update(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<PatchSubscription>,
) -> Result<Json<SubscriptionView>, ApiError> {
    Ok(Json(
        engine.update_webhook(&caller.tenant_id, &id, patch).await?,
    ))
}

#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the subscription id")),
    responses(
        (status = 204, description = "deleted with its delivery log"),
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
    engine.delete_webhook(&caller.tenant_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/rotate-secret",
    tag = "webhooks",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the subscription id")),
    responses(
        (status = 200, description = "the subscription with its new secret, shown once", body = SubscriptionView),
        Unauthorized,
        NotFound,
        RateLimited,
        Unavailable,
    )
)]
async fn rotate_secret(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(id): Path<String>,
) -> Result<Json<SubscriptionView>, ApiError> {
    Ok(Json(
        engine.rotate_webhook_secret(&caller.tenant_id, &id).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/test",
    tag = "webhooks",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the subscription id")),
    responses(
        (status = 202, description = "the `webhook.test` delivery queued", body = DeliveryView),
        Unauthorized,
        NotFound,
        Conflict,
        RateLimited,
        Unavailable,
    )
)]
async fn test(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<DeliveryView>), ApiError> {
    let delivery = engine.test_webhook(&caller.tenant_id, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery)))
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the subscription id"), DeliveryQuery),
    responses(
        (status = 200, description = "the subscription's deliveries, newest first", body = DeliveryLog),
        Invalid,
        Unauthorized,
        NotFound,
        Unavailable,
    )
)]
async fn deliveries(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> Result<Json<Value>, ApiError> {
    let deliveries = engine.webhook_deliveries(&caller.tenant_id, &id, query)?;
    super::as_value(&DeliveryLog { deliveries })
}

/// The answer of `GET /v1/webhooks/{id}/deliveries`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct DeliveryLog {
    deliveries: Vec<DeliveryView>,
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/deliveries/{delivery_id}/retry",
    tag = "webhooks",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the subscription id"), ("delivery_id" = String, Path, description = "the delivery id")),
    responses(
        (status = 202, description = "the delivery, queued again", body = DeliveryView),
        Unauthorized,
        NotFound,
        Conflict,
        RateLimited,
        Unavailable,
    )
)]
async fn retry(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<DeliveryView>), ApiError> {
    let delivery = engine
        .retry_webhook_delivery(&caller.tenant_id, &id, &delivery_id)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(delivery)))
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/events",
    tag = "webhooks",
    security(("tenant_key" = [])),
    responses(
        (status = 200, description = "the event catalogue, the wildcard, the retry schedule", body = Object),
        Unauthorized,
    )
)]
async fn events(_caller: TenantCaller) -> Json<Value> {
    Json(crate::webhooks::catalogue())
}
