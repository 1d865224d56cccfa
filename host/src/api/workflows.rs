//! Declarative workflow rules over HTTP: `/v1/workflows/rules` (create, list, get,
//! replace, delete, enable, disable, order), `/v1/workflows/rules/test`, and the
//! language's catalogue at `/v1/workflows/fields`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::flows::rules::workflows::{Reorder, TestReport, TestRequest};
use crate::flows::Engine;
use crate::model::rules::Trigger;
use crate::workflows::{self, WorkflowRule};

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, TenantCaller, TenantChange};
use super::plugins::off_worker;

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/v1/workflows/rules", post(create).get(list))
        .route("/v1/workflows/rules/order", put(reorder))
        .route("/v1/workflows/rules/test", post(test))
        .route(
            "/v1/workflows/rules/{rule_id}",
            get(get_one).put(replace).delete(remove),
        )
        .route("/v1/workflows/rules/{rule_id}/enable", post(enable))
        .route("/v1/workflows/rules/{rule_id}/disable", post(disable))
        .route("/v1/workflows/fields", get(fields))
}

async fn create(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<WorkflowRule>), ApiError> {
    let rule = off_worker(move || engine.create_workflow_rule(&caller.tenant_id, &body)).await??;
    Ok((StatusCode::CREATED, Json(rule)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    trigger: Option<Trigger>,
    enabled: Option<bool>,
}

async fn list(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let rules = engine.workflow_rules(&caller.tenant_id, query.trigger, query.enabled)?;
    Ok(Json(json!({ "rules": rules })))
}

async fn get_one(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(rule_id): Path<String>,
) -> Result<Json<WorkflowRule>, ApiError> {
    Ok(Json(engine.workflow_rule(&caller.tenant_id, &rule_id)?))
}

async fn replace(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(rule_id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<WorkflowRule>, ApiError> {
    let rule = off_worker(move || engine.replace_workflow_rule(&caller.tenant_id, &rule_id, &body))
        .await??;
    Ok(Json(rule))
}

async fn remove(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(rule_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    off_worker(move || engine.delete_workflow_rule(&caller.tenant_id, &rule_id)).await??;
    Ok(StatusCode::NO_CONTENT)
}

async fn enable(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(rule_id): Path<String>,
) -> Result<Json<WorkflowRule>, ApiError> {
    let rule = off_worker(move || engine.enable_workflow_rule(&caller.tenant_id, &rule_id, true))
        .await??;
    Ok(Json(rule))
}

async fn disable(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(rule_id): Path<String>,
) -> Result<Json<WorkflowRule>, ApiError> {
    let rule = off_worker(move || engine.enable_workflow_rule(&caller.tenant_id, &rule_id, false))
        .await??;
    Ok(Json(rule))
}

async fn reorder(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    ApiJson(body): ApiJson<Reorder>,
) -> Result<Json<Value>, ApiError> {
    let rules =
        off_worker(move || engine.reorder_workflow_rules(&caller.tenant_id, &body)).await??;
    Ok(Json(json!({ "rules": rules })))
}

async fn test(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiJson(body): ApiJson<TestRequest>,
) -> Result<Json<TestReport>, ApiError> {
    Ok(Json(
        engine.test_workflow_rules(&caller.tenant_id, body).await?,
    ))
}

async fn fields(_caller: TenantCaller) -> Json<Value> {
    Json(workflows::catalogue())
}
