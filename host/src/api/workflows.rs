//! Declarative workflow rules over HTTP: `/v1/workflows/rules` (create, list, get,
//! replace, delete, enable, disable, order), `/v1/workflows/rules/test`,
//! `/v1/workflows/rules/backtest`, and the language's catalogue at
//! `/v1/workflows/fields`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use crate::flows::rules::backtest::{BacktestReport, RulesBacktest};
use crate::flows::rules::workflows::{Reorder, TestReport, TestRequest};
use crate::flows::Engine;
use crate::model::rules::Trigger;
use crate::workflows::{self, WorkflowRule};

use super::error::doc::*;
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, TenantCaller, TenantChange};
use super::plugins::off_worker;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<Arc<Engine>> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(reorder))
        .routes(routes!(test))
        .routes(routes!(backtest))
        .routes(routes!(get_one, replace, remove))
        .routes(routes!(enable))
        .routes(routes!(disable))
        .routes(routes!(fields))
}

#[utoipa::path(
    post,
    path = "/v1/workflows/rules",
    tag = "workflows",
    security(("tenant_key" = [])),
    request_body(content = Object, description = "`rule_id`, `trigger`, `conditions`, `actions`, `enabled`?, `order`?, `description`?"),
    responses(
        (status = 201, description = "the rule", body = WorkflowRule),
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
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<WorkflowRule>), ApiError> {
    let rule = off_worker(move || engine.create_workflow_rule(&caller.tenant_id, &body)).await??;
    Ok((StatusCode::CREATED, Json(rule)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// A trigger's name.
    #[param(value_type = Option<String>)]
    trigger: Option<Trigger>,
    enabled: Option<bool>,
}

#[utoipa::path(
    get,
    path = "/v1/workflows/rules",
    tag = "workflows",
    security(("tenant_key" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "the rules in run order", body = RuleList),
        Invalid,
        Unauthorized,
        Unavailable,
    )
)]
async fn list(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let rules = engine.workflow_rules(&caller.tenant_id, query.trigger, query.enabled)?;
    super::as_value(&RuleList { rules })
}

/// The answer of `GET /v1/workflows/rules` and of a reorder.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct RuleList {
    rules: Vec<WorkflowRule>,
}

#[utoipa::path(
    get,
    path = "/v1/workflows/rules/{rule_id}",
    tag = "workflows",
    security(("tenant_key" = [])),
    params(("rule_id" = String, Path, description = "the rule id")),
    responses(
        (status = 200, description = "the rule", body = WorkflowRule),
        Unauthorized,
        Invalid,
        NotFound,
        Unavailable,
    )
)]
async fn get_one(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(rule_id): Path<String>,
) -> Result<Json<WorkflowRule>, ApiError> {
    Ok(Json(engine.workflow_rule(&caller.tenant_id, &rule_id)?))
}

#[utoipa::path(
    put,
    path = "/v1/workflows/rules/{rule_id}",
    tag = "workflows",
    security(("tenant_key" = [])),
    params(("rule_id" = String, Path, description = "the rule id")),
    request_body(content = Object, description = "the rule, as on creation"),
    responses(
        (status = 200, description = "the rule replaced", body = WorkflowRule),
        JsonBody,
        Unauthorized,
        NotFound,
        RateLimited,
        Unavailable,
    )
)]
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

#[utoipa::path(
    delete,
    path = "/v1/workflows/rules/{rule_id}",
    tag = "workflows",
    security(("tenant_key" = [])),
    params(("rule_id" = String, Path, description = "the rule id")),
    responses(
        (status = 204, description = "deleted"),
        Unauthorized,
        Invalid,
        NotFound,
        RateLimited,
        Unavailable,
    )
)]
async fn remove(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(rule_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    off_worker(move || engine.delete_workflow_rule(&caller.tenant_id, &rule_id)).await??;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/workflows/rules/{rule_id}/enable",
    tag = "workflows",
    security(("tenant_key" = [])),
    params(("rule_id" = String, Path, description = "the rule id")),
    responses(
        (status = 200, description = "the rule", body = WorkflowRule),
        Unauthorized,
        Invalid,
        NotFound,
        RateLimited,
        Unavailable,
    )
)]
async fn enable(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(rule_id): Path<String>,
) -> Result<Json<WorkflowRule>, ApiError> {
    let rule = off_worker(move || engine.enable_workflow_rule(&caller.tenant_id, &rule_id, true))
        .await??;
    Ok(Json(rule))
}

#[utoipa::path(
    post,
    path = "/v1/workflows/rules/{rule_id}/disable",
    tag = "workflows",
    security(("tenant_key" = [])),
    params(("rule_id" = String, Path, description = "the rule id")),
    responses(
        (status = 200, description = "the rule", body = WorkflowRule),
        Unauthorized,
        Invalid,
        NotFound,
        RateLimited,
        Unavailable,
    )
)]
async fn disable(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(rule_id): Path<String>,
) -> Result<Json<WorkflowRule>, ApiError> {
    let rule = off_worker(move || engine.enable_workflow_rule(&caller.tenant_id, &rule_id, false))
        .await??;
    Ok(Json(rule))
}

#[utoipa::path(
    put,
    path = "/v1/workflows/rules/order",
    tag = "workflows",
    security(("tenant_key" = [])),
    request_body = Reorder,
    responses(
        (status = 200, description = "the trigger's rules in the new order", body = RuleList),
        JsonBody,
        Unauthorized,
        RateLimited,
        Unavailable,
    )
)]
async fn reorder(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    ApiJson(body): ApiJson<Reorder>,
) -> Result<Json<Value>, ApiError> {
    let rules =
        off_worker(move || engine.reorder_workflow_rules(&caller.tenant_id, &body)).await??;
    super::as_value(&RuleList { rules })
}

#[utoipa::path(
    post,
    path = "/v1/workflows/rules/test",
    tag = "workflows",
    security(("tenant_key" = [])),
    request_body = TestRequest,
    responses(
        (status = 200, description = "which rules matched, every condition's value, the actions", body = TestReport),
        JsonBody,
        Unauthorized,
        Unavailable,
    )
)]
async fn test(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiJson(body): ApiJson<TestRequest>,
) -> Result<Json<TestReport>, ApiError> {
    Ok(Json(
        engine.test_workflow_rules(&caller.tenant_id, body).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/workflows/rules/backtest",
    tag = "workflows",
    security(("tenant_key" = [])),
    request_body = RulesBacktest,
    responses(
        (status = 200, description = "what the candidate rule set would have changed in the tenant's recorded traffic: counts per outcome, flags and cases, failures, examples", body = BacktestReport),
        JsonBody,
        Unauthorized,
        Conflict,
        RateLimited,
        Unavailable,
    )
)]
async fn backtest(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiJson(body): ApiJson<RulesBacktest>,
) -> Result<Json<BacktestReport>, ApiError> {
    Ok(Json(engine.backtest_rules(&caller.tenant_id, body).await?))
}

#[utoipa::path(
    get,
    path = "/v1/workflows/fields",
    tag = "workflows",
    security(("tenant_key" = [])),
    responses(
        (status = 200, description = "the language: fields, operators, actions, triggers, limits", body = Object),
        Unauthorized,
    )
)]
async fn fields(_caller: TenantCaller) -> Json<Value> {
    Json(workflows::catalogue())
}
