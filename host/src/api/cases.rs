//! Cases and the review queue: list, get and work the cases rules open
//! (`/v1/cases`), and decide a verification In Review
//! (`POST /v1/verifications/{id}/review`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::Value;

use crate::flows::{CasePatch, CaseQuery, Engine, ReviewRequest};
use crate::model::Case;

use super::error::doc::*;
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, TenantCaller};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<Arc<Engine>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get_one, update))
        .routes(routes!(review))
}

#[utoipa::path(
    get,
    path = "/v1/cases",
    tag = "cases",
    security(("tenant_key" = [])),
    params(CaseQuery),
    responses(
        (status = 200, description = "the cases, newest first", body = CaseList),
        Invalid,
        Unauthorized,
        Unavailable,
    )
)]
async fn list(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiQuery(query): ApiQuery<CaseQuery>,
) -> Result<Json<Value>, ApiError> {
    let cases = engine.cases(&caller, query)?;
    super::as_value(&CaseList { cases })
}

/// The answer of `GET /v1/cases`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct CaseList {
    cases: Vec<Case>,
}

#[utoipa::path(
    get,
    path = "/v1/cases/{id}",
    tag = "cases",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the case id")),
    responses(
        (status = 200, description = "the case", body = Case),
        Unauthorized,
        NotFound,
        Unavailable,
    )
)]
async fn get_one(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
) -> Result<Json<Case>, ApiError> {
    Ok(Json(engine.case(&caller, &id)?))
}

#[utoipa::path(
    patch,
    path = "/v1/cases/{id}",
    tag = "cases",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the case id")),
    request_body = CasePatch,
    responses(
        (status = 200, description = "the case changed", body = Case),
        JsonBody,
        Unauthorized,
        NotFound,
        Unavailable,
    )
)]
async fn update(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<CasePatch>,
) -> Result<Json<Case>, ApiError> {
    Ok(Json(engine.update_case(&caller, &id, patch).await?))
}

#[utoipa::path(
    post,
    path = "/v1/verifications/{id}/review",
    tag = "verifications",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the verification id")),
    request_body = ReviewRequest,
    responses(
        (status = 200, description = "the verification's report after the decision", body = crate::flows::verification::report::Report),
        JsonBody,
        Unauthorized,
        NotFound,
        Conflict,
        Unavailable,
    )
)]
async fn review(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ReviewRequest>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    Ok(Json(engine.review(&caller, &id, request).await?))
}
