//! Fraud and cost protection: the SMS-pumping detector's blocks, which a tenant lists
//! and lifts (`/v1/fraud/blocks`) and the operator too for every tenant
//! (`/v1/admin/fraud/blocks`), and the spend caps' budgets (`/v1/spend`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::flows::pumping::BlockView;
use crate::flows::Engine;

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, OperatorCaller, TenantCaller, TenantChange};

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/v1/spend", get(spend))
        .route("/v1/fraud/blocks", get(list))
        .route("/v1/fraud/blocks/{prefix}", delete(lift))
        .route("/v1/admin/fraud/blocks", get(list_all))
        .route(
            "/v1/admin/fraud/exemptions",
            get(exemptions).put(set_exemptions),
        )
        .route(
            "/v1/admin/tenants/{tenant_id}/fraud/blocks/{prefix}",
            delete(lift_for),
        )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockQuery {
    /// `active` (the default) or `all`.
    status: Option<String>,
}

/// The blocks with the sends they refused and what those would have cost.
fn listing(blocks: Vec<BlockView>) -> Value {
    let blocked: u64 = blocks.iter().map(|view| view.block.blocked_sends).sum();
    let savings: f64 = blocks.iter().map(|view| view.block.estimated_savings).sum();
    json!({
        "blocks": blocks,
        "blocked_sends": blocked,
        "estimated_savings": (savings * 10_000.0).round() / 10_000.0,
    })
}

async fn spend(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
) -> Result<Json<crate::flows::spend::SpendView>, ApiError> {
    Ok(Json(engine.spend(&caller.tenant_id)?))
}

async fn list(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiQuery(query): ApiQuery<BlockQuery>,
) -> Result<Json<Value>, ApiError> {
    let blocks = engine.fraud_blocks(&caller.tenant_id, query.status.as_deref())?;
    Ok(Json(listing(blocks)))
}

async fn lift(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(prefix): Path<String>,
) -> Result<Json<BlockView>, ApiError> {
    Ok(Json(engine.lift_own_fraud_block(&caller, &prefix).await?))
}

async fn list_all(
    State(engine): State<Arc<Engine>>,
    _operator: OperatorCaller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(listing(engine.all_fraud_blocks()?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Exemptions {
    prefixes: Vec<String>,
}

async fn exemptions(
    State(engine): State<Arc<Engine>>,
    _operator: OperatorCaller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"prefixes": *engine.host_exemptions()?})))
}

async fn set_exemptions(
    State(engine): State<Arc<Engine>>,
    _operator: OperatorCaller,
    ApiJson(body): ApiJson<Exemptions>,
) -> Result<Json<Value>, ApiError> {
    let prefixes = engine.set_host_exemptions(body.prefixes).await?;
    Ok(Json(json!({ "prefixes": prefixes })))
}

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
