//! Providers and routing over HTTP: `/v1/providers` (create, list, get, update,
//! enable, disable, delete), `/v1/routing` (the policy), `/v1/routing/stats` (what
//! routing learnt, with each breaker), `/v1/routing/plan` (a dry run of the routing
//! decision), and the providers' receipts at `/v1/callbacks/{provider_id}`.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::flows::messaging::providers::{PlanRequest, ProviderInput, ProviderView};
use crate::flows::{CallbackError, Engine};
use crate::routing::Policy;

use super::error::ApiError;
use super::extract::{ApiJson, TenantCaller, TenantChange};
use super::plugins::read_callback;

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/v1/providers", post(create).get(list))
        .route(
            "/v1/providers/{provider_id}",
            get(get_one).patch(update).delete(remove),
        )
        .route("/v1/providers/{provider_id}/enable", post(enable))
        .route("/v1/providers/{provider_id}/disable", post(disable))
        .route("/v1/routing", get(policy).put(put_policy))
        .route("/v1/routing/stats", get(stats))
        .route("/v1/routing/plan", post(plan))
        .route("/v1/callbacks/{provider_id}", get(receipt).post(receipt))
}

async fn create(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    ApiJson(input): ApiJson<ProviderInput>,
) -> Result<(StatusCode, Json<ProviderView>), ApiError> {
    let view = engine.create_provider(&caller.tenant_id, input).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn list(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
) -> Result<Json<Value>, ApiError> {
    let providers = engine.providers(&caller.tenant_id)?;
    Ok(Json(json!({ "providers": providers })))
}

async fn get_one(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(provider_id): Path<String>,
) -> Result<Json<ProviderView>, ApiError> {
    let provider = engine.provider(&caller.tenant_id, &provider_id)?;
    Ok(Json(engine.provider_view(&provider)))
}

async fn update(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(provider_id): Path<String>,
    ApiJson(input): ApiJson<ProviderInput>,
) -> Result<Json<ProviderView>, ApiError> {
    let view = engine
        .update_provider(&caller.tenant_id, &provider_id, input)
        .await?;
    Ok(Json(view))
}

async fn switch(
    engine: &Engine,
    tenant_id: &str,
    provider_id: &str,
    enabled: bool,
) -> Result<Json<ProviderView>, ApiError> {
    let input = ProviderInput {
        enabled: Some(enabled),
        ..ProviderInput::default()
    };
    Ok(Json(
        engine
            .update_provider(tenant_id, provider_id, input)
            .await?,
    ))
}

async fn enable(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(provider_id): Path<String>,
) -> Result<Json<ProviderView>, ApiError> {
    switch(&engine, &caller.tenant_id, &provider_id, true).await
}

async fn disable(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(provider_id): Path<String>,
) -> Result<Json<ProviderView>, ApiError> {
    switch(&engine, &caller.tenant_id, &provider_id, false).await
}

async fn remove(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(provider_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    engine
        .delete_provider(&caller.tenant_id, &provider_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn policy(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
) -> Result<Json<Policy>, ApiError> {
    Ok(Json(engine.routing_policy(&caller.tenant_id)?))
}

async fn put_policy(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    ApiJson(policy): ApiJson<Policy>,
) -> Result<Json<Policy>, ApiError> {
    Ok(Json(
        engine.put_routing_policy(&caller.tenant_id, policy).await?,
    ))
}

async fn stats(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
) -> Result<Json<Value>, ApiError> {
    let cells = engine.routing_stats(&caller.tenant_id)?;
    Ok(Json(json!({ "stats": cells })))
}

async fn plan(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiJson(request): ApiJson<PlanRequest>,
) -> Result<Json<Value>, ApiError> {
    let (plan, policy) = engine.preview_route(&caller.tenant_id, request)?;
    Ok(Json(json!({
        "strategy": policy.strategy.as_str(),
        "order": plan.order,
        "considered": plan.considered,
    })))
}

/// A provider's delivery receipt, authenticated per provider.
async fn receipt(
    State(engine): State<Arc<Engine>>,
    Path(provider_id): Path<String>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let (request, token) = read_callback(request).await?;
    let recorded = engine
        .provider_receipt(&provider_id, token.as_deref(), request)
        .await
        .map_err(callback_error)?;
    Ok(Json(json!({ "recorded": recorded })))
}

/// The answer to a refused callback.
pub(super) fn callback_error(err: CallbackError) -> ApiError {
    match err {
        CallbackError::Unknown => ApiError::not_found("callback endpoint"),
        CallbackError::Unauthorized => {
            ApiError::unauthorized("the callback token or signature is missing or wrong")
        }
        CallbackError::Unparsable(message) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unparsable_callback",
            message,
        ),
        CallbackError::Flow(err) => err.into(),
    }
}
