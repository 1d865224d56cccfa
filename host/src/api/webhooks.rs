//! Webhooks over HTTP: subscriptions at `/v1/webhooks` (create, list, get, change,
//! delete, rotate the secret, send a test event), each one's delivery log with manual
//! retry, and the event catalogue at `/v1/webhooks/events`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::flows::webhooks::subscriptions::{
    CreateSubscription, DeliveryQuery, DeliveryView, PatchSubscription, SubscriptionView,
};
use crate::flows::Engine;

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, TenantCaller, TenantChange};

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/v1/webhooks", post(create).get(list))
        .route("/v1/webhooks/events", get(events))
        .route(
            "/v1/webhooks/{id}",
            get(get_one).patch(update).delete(remove),
        )
        .route("/v1/webhooks/{id}/rotate-secret", post(rotate_secret))
        .route("/v1/webhooks/{id}/test", post(test))
        .route("/v1/webhooks/{id}/deliveries", get(deliveries))
        .route(
            "/v1/webhooks/{id}/deliveries/{delivery_id}/retry",
            post(retry),
        )
}

async fn create(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    ApiJson(body): ApiJson<CreateSubscription>,
) -> Result<(StatusCode, Json<SubscriptionView>), ApiError> {
    let created = engine.create_webhook(&caller.tenant_id, body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn list(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
) -> Result<Json<Value>, ApiError> {
    let webhooks = engine.webhooks(&caller.tenant_id)?;
    Ok(Json(json!({ "webhooks": webhooks })))
}

async fn get_one(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
) -> Result<Json<SubscriptionView>, ApiError> {
    Ok(Json(engine.webhook(&caller.tenant_id, &id)?))
}

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

async fn remove(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    engine.delete_webhook(&caller.tenant_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate_secret(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(id): Path<String>,
) -> Result<Json<SubscriptionView>, ApiError> {
    Ok(Json(
        engine.rotate_webhook_secret(&caller.tenant_id, &id).await?,
    ))
}

async fn test(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<DeliveryView>), ApiError> {
    let delivery = engine.test_webhook(&caller.tenant_id, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery)))
}

async fn deliveries(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> Result<Json<Value>, ApiError> {
    let deliveries = engine.webhook_deliveries(&caller.tenant_id, &id, query)?;
    Ok(Json(json!({ "deliveries": deliveries })))
}

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

async fn events(_caller: TenantCaller) -> Json<Value> {
    Json(crate::webhooks::catalogue())
}
