//! Fraud and cost protection: the SMS-pumping detector's blocks, which a tenant lists
//! and lifts (`/v1/fraud/blocks`) and the operator too for every tenant
//! (`/v1/admin/fraud/blocks`), and the spend caps' budgets (`/v1/spend`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::flows::pumping::BlockView;
use crate::flows::Engine;

use super::error::doc::*;
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, OperatorCaller, TenantCaller, TenantChange};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<Arc<Engine>> {
    OpenApiRouter::new()
        .routes(routes!(spend))
        .routes(routes!(list))
        .routes(routes!(lift))
        .routes(routes!(list_all))
        .routes(routes!(exemptions, set_exemptions))
        .routes(routes!(lift_for))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct BlockQuery {
    /// `active` (the default) or `all`.
    status: Option<String>,
}

/// The blocks with the sends they refused and what those would have cost.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct FraudBlocks {
    /// Sends the blocks refused.
    blocked_sends: u64,
    blocks: Vec<BlockView>,
    /// What the refused sends would have cost, rounded to four decimals.
    estimated_savings: f64,
}

/// The listing of `blocks`.
fn listing(blocks: Vec<BlockView>) -> Result<Json<Value>, ApiError> {
    let blocked: u64 = blocks.iter().map(|view| view.block.blocked_sends).sum();
    let savings: f64 = blocks.iter().map(|view| view.block.estimated_savings).sum();
    super::as_value(&FraudBlocks {
        blocked_sends: blocked,
        blocks,
        estimated_savings: (savings * 10_000.0).round() / 10_000.0,
    })
}

#[utoipa::path(
    get,
    path = "/v1/spend",
    tag = "fraud",
    security(("tenant_key" = [])),
    responses(
        (status = 200, description = "the spend caps' budgets and the SMS-pumping detector's savings", body = crate::flows::spend::SpendView),
        Unauthorized,
        Unavailable,
    )
)]
async fn spend(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
) -> Result<Json<crate::flows::spend::SpendView>, ApiError> {
    Ok(Json(engine.spend(&caller.tenant_id)?))
}

#[utoipa::path(
    get,
    path = "/v1/fraud/blocks",
    tag = "fraud",
    security(("tenant_key" = [])),
    params(BlockQuery),
    responses(
        (status = 200, description = "`blocks`, `blocked_sends`, `estimated_savings`", body = FraudBlocks),
        Invalid,
        Unauthorized,
        Unavailable,
    )
)]
async fn list(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiQuery(query): ApiQuery<BlockQuery>,
) -> Result<Json<Value>, ApiError> {
    let blocks = engine.fraud_blocks(&caller.tenant_id, query.status.as_deref())?;
    listing(blocks)
}

#[utoipa::path(
    delete,
    path = "/v1/fraud/blocks/{prefix}",
    tag = "fraud",
    security(("tenant_key" = [])),
    params(("prefix" = String, Path, description = "the blocked prefix (`+447400`)")),
    responses(
        (status = 200, description = "the block, lifted", body = BlockView),
        Unauthorized,
        NotFound,
        Invalid,
        RateLimited,
        Unavailable,
    )
)]
async fn lift(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(prefix): Path<String>,
) -> Result<Json<BlockView>, ApiError> {
    Ok(Json(engine.lift_own_fraud_block(&caller, &prefix).await?))
}

#[utoipa::path(
    get,
    path = "/v1/admin/fraud/blocks",
    tag = "fraud",
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "every tenant's active blocks: `blocks`, `blocked_sends`, `estimated_savings`", body = FraudBlocks),
        Unauthorized,
        Unavailable,
    )
)]
async fn list_all(
    State(engine): State<Arc<Engine>>,
    _operator: OperatorCaller,
) -> Result<Json<Value>, ApiError> {
    listing(engine.all_fraud_blocks()?)
}

/// Prefixes the SMS-pumping detector never judges, for every tenant.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Exemptions {
    prefixes: Vec<String>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/fraud/exemptions",
    tag = "fraud",
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "the exempt prefixes", body = Exemptions),
        Unauthorized,
        Unavailable,
    )
)]
async fn exemptions(
    State(engine): State<Arc<Engine>>,
    _operator: OperatorCaller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"prefixes": *engine.host_exemptions()?})))
}

#[utoipa::path(
    put,
    path = "/v1/admin/fraud/exemptions",
    tag = "fraud",
    security(("operator_key" = [])),
    request_body = Exemptions,
    responses(
        (status = 200, description = "the exempt prefixes stored", body = Exemptions),
        JsonBody,
        Unauthorized,
        Unavailable,
    )
)]
async fn set_exemptions(
    State(engine): State<Arc<Engine>>,
    _operator: OperatorCaller,
    ApiJson(body): ApiJson<Exemptions>,
) -> Result<Json<Value>, ApiError> {
    let prefixes = engine.set_host_exemptions(body.prefixes).await?;
    Ok(Json(json!({ "prefixes": prefixes })))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/tenants/{tenant_id}/fraud/blocks/{prefix}",
    tag = "fraud",
    security(("operator_key" = [])),
    params(("tenant_id" = String, Path, description = "the tenant"), ("prefix" = String, Path, description = "the blocked prefix")),
    responses(
        (status = 200, description = "the block, lifted", body = BlockView),
        Unauthorized,
        NotFound,
        Invalid,
        Unavailable,
    )
)]
async fn lift_for(
    State(engine): State<Arc<Engine>>,
    _operator: OperatorCaller,
    Path((tenant_id, prefix)): Path<(String, String)>,
) -> Result<Json<BlockView>, ApiError> {
    Ok(Json(
        engine
            .lift_fraud_block(&tenant_id, &prefix, "operator")
            .await?,
    ))
}
