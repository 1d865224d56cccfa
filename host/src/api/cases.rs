//! Cases and the review queue: list, get and work the cases rules open
//! (`/v1/cases`), and decide a verification In Review
//! (`POST /v1/verifications/{id}/review`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::flows::{CasePatch, CaseQuery, Engine, ReviewRequest};
use crate::model::Case;

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, TenantCaller};

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/v1/cases", get(list))
        .route("/v1/cases/{id}", get(get_one).patch(update))
        .route("/v1/verifications/{id}/review", post(review))
}

async fn list(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiQuery(query): ApiQuery<CaseQuery>,
) -> Result<Json<Value>, ApiError> {
    let cases = engine.cases(&caller, query)?;
    Ok(Json(json!({ "cases": cases })))
}

async fn get_one(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
) -> Result<Json<Case>, ApiError> {
    Ok(Json(engine.case(&caller, &id)?))
}

async fn update(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<CasePatch>,
) -> Result<Json<Case>, ApiError> {
    Ok(Json(engine.update_case(&caller, &id, patch).await?))
}

async fn review(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ReviewRequest>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    Ok(Json(engine.review(&caller, &id, request).await?))
}
