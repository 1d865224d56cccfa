//! Providers and routing over HTTP: `/v1/providers` (create, list, get, update,
//! enable, disable, delete), `/v1/routing` (the policy), `/v1/routing/stats` (what
//! routing learnt, with each breaker), `/v1/routing/plan` (a dry run of the routing
//! decision), and the providers' receipts at `/v1/callbacks/{provider_id}`.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;

use crate::flows::messaging::providers::{CellView, PlanRequest, ProviderInput, ProviderView};
use crate::flows::{CallbackError, Engine};
use crate::routing::{Considered, Policy, Strategy};

use super::error::doc::*;
use super::error::ApiError;
use super::extract::{ApiJson, TenantCaller, TenantChange};
use super::plugins::read_callback;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<Arc<Engine>> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_one, update, remove))
        .routes(routes!(enable))
        .routes(routes!(disable))
        .routes(routes!(rotate_callback_token))
        .routes(routes!(policy, put_policy))
        .routes(routes!(stats))
        .routes(routes!(plan))
        .routes(routes!(receipt))
}

#[utoipa::path(
    post,
    path = "/v1/providers",
    tag = "providers",
    security(("tenant_key" = [])),
    request_body = ProviderInput,
    responses(
        (status = 201, description = "the provider, with its `id` and `callback_url`", body = ProviderView),
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
    ApiJson(input): ApiJson<ProviderInput>,
) -> Result<(StatusCode, Json<ProviderView>), ApiError> {
    let view = engine.create_provider(&caller.tenant_id, input).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(
    get,
    path = "/v1/providers",
    tag = "providers",
    security(("tenant_key" = [])),
    responses(
        (status = 200, description = "the providers in priority order (secrets by name only)", body = ProviderList),
        Unauthorized,
        Unavailable,
    )
)]
async fn list(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
) -> Result<Json<Value>, ApiError> {
    let providers = engine.providers(&caller.tenant_id)?;
    super::as_value(&ProviderList { providers })
}

/// The answer of `GET /v1/providers`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ProviderList {
    providers: Vec<ProviderView>,
}

#[utoipa::path(
    get,
    path = "/v1/providers/{provider_id}",
    tag = "providers",
    security(("tenant_key" = [])),
    params(("provider_id" = String, Path, description = "the provider id (`prv_…`)")),
    responses(
        (status = 200, description = "the provider (secrets by name only)", body = ProviderView),
        Unauthorized,
        NotFound,
        Unavailable,
    )
)]
async fn get_one(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(provider_id): Path<String>,
) -> Result<Json<ProviderView>, ApiError> {
    let provider = engine.provider(&caller.tenant_id, &provider_id)?;
    Ok(Json(engine.provider_view(&provider)))
}

#[utoipa::path(
    patch,
    path = "/v1/providers/{provider_id}",
    tag = "providers",
    security(("tenant_key" = [])),
    params(("provider_id" = String, Path, description = "the provider id (`prv_…`)")),
    request_body = ProviderInput,
    responses(
        (status = 200, description = "the provider changed", body = ProviderView),
        JsonBody,
        Unauthorized,
        NotFound,
        Conflict,
        RateLimited,
        Unavailable,
    )
)]
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

#[utoipa::path(
    post,
    path = "/v1/providers/{provider_id}/rotate-callback-token",
    tag = "providers",
    security(("tenant_key" = [])),
    params(("provider_id" = String, Path, description = "the provider id (`prv_…`)")),
    responses(
        (status = 200, description = "the provider, with `callback_url_with_token` carrying its new token (shown once); the old token is refused from now on", body = ProviderView),
        Unauthorized,
        NotFound,
        Conflict,
        RateLimited,
        Unavailable,
    )
)]
async fn rotate_callback_token(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(provider_id): Path<String>,
) -> Result<Json<ProviderView>, ApiError> {
    Ok(Json(
        engine
            .rotate_callback_token(&caller.tenant_id, &provider_id)
            .await?,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/providers/{provider_id}/enable",
    tag = "providers",
    security(("tenant_key" = [])),
    params(("provider_id" = String, Path, description = "the provider id (`prv_…`)")),
    responses(
        (status = 200, description = "the provider", body = ProviderView),
        Unauthorized,
        NotFound,
        RateLimited,
        Unavailable,
    )
)]
async fn enable(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(provider_id): Path<String>,
) -> Result<Json<ProviderView>, ApiError> {
    switch(&engine, &caller.tenant_id, &provider_id, true).await
}

#[utoipa::path(
    post,
    path = "/v1/providers/{provider_id}/disable",
    tag = "providers",
    security(("tenant_key" = [])),
    params(("provider_id" = String, Path, description = "the provider id (`prv_…`)")),
    responses(
        (status = 200, description = "the provider", body = ProviderView),
        Unauthorized,
        NotFound,
        RateLimited,
        Unavailable,
    )
)]
async fn disable(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(provider_id): Path<String>,
) -> Result<Json<ProviderView>, ApiError> {
    switch(&engine, &caller.tenant_id, &provider_id, false).await
}

#[utoipa::path(
    delete,
    path = "/v1/providers/{provider_id}",
    tag = "providers",
    security(("tenant_key" = [])),
    params(("provider_id" = String, Path, description = "the provider id (`prv_…`)")),
    responses(
        (status = 204, description = "deleted"),
        Unauthorized,
        NotFound,
        RateLimited,
        Unavailable,
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/routing",
    tag = "routing",
    security(("tenant_key" = [])),
    responses(
        (status = 200, description = "the routing policy", body = Policy),
        Unauthorized,
        Unavailable,
    )
)]
async fn policy(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
) -> Result<Json<Policy>, ApiError> {
    Ok(Json(engine.routing_policy(&caller.tenant_id)?))
}

#[utoipa::path(
    put,
    path = "/v1/routing",
    tag = "routing",
    security(("tenant_key" = [])),
    request_body = Object,
    responses(
        (status = 200, description = "the routing policy stored", body = Policy),
        JsonBody,
        Unauthorized,
        RateLimited,
        Unavailable,
    )
)]
async fn put_policy(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    ApiJson(policy): ApiJson<Policy>,
) -> Result<Json<Policy>, ApiError> {
    Ok(Json(
        engine.put_routing_policy(&caller.tenant_id, policy).await?,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/routing/stats",
    tag = "routing",
    security(("tenant_key" = [])),
    responses(
        (status = 200, description = "what routing learnt per provider and country, with each breaker", body = RoutingStats),
        Unauthorized,
        Unavailable,
    )
)]
async fn stats(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
) -> Result<Json<Value>, ApiError> {
    let stats = engine.routing_stats(&caller.tenant_id)?;
    super::as_value(&RoutingStats { stats })
}

/// The answer of `GET /v1/routing/stats`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct RoutingStats {
    stats: Vec<CellView>,
}

#[utoipa::path(
    post,
    path = "/v1/routing/plan",
    tag = "routing",
    security(("tenant_key" = [])),
    request_body = PlanRequest,
    responses(
        (status = 200, description = "the routing decision for a send now", body = RoutingPlan),
        JsonBody,
        Unauthorized,
        Unavailable,
    )
)]
async fn plan(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiJson(request): ApiJson<PlanRequest>,
) -> Result<Json<Value>, ApiError> {
    let (plan, policy) = engine.preview_route(&caller.tenant_id, request)?;
    super::as_value(&RoutingPlan {
        considered: plan.considered,
        order: plan.order,
        strategy: policy.strategy,
    })
}

/// The answer of `POST /v1/routing/plan`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct RoutingPlan {
    /// Every provider, and why it is or is not in `order`.
    considered: Vec<Considered>,
    /// The providers to try, in order (provider ids).
    order: Vec<String>,
    strategy: Strategy,
}

/// A provider's delivery receipt, authenticated per provider.
#[utoipa::path(
    method(get, post),
    path = "/v1/callbacks/{provider_id}",
    tag = "callbacks",
    params(("provider_id" = String, Path, description = "the provider id (`prv_…`)"), ("token" = Option<String>, Query, description = "the provider's `callback_token`, or the `X-Dialgate-Token` header")),
    request_body(content = Option<Object>, description = "the provider's receipt, as it sends it"),
    responses(
        (status = 200, description = "`{\"recorded\": n}`", body = super::plugins::Recorded),
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
    super::as_value(&super::plugins::Recorded { recorded })
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
