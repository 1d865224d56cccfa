//! Brands and message templates over HTTP: `/v1/brands` and `/v1/templates` (create,
//! list, get, replace, delete).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::flows::Engine;
use crate::templates::{Brand, BrandBody, Template, TemplateBody};

use super::error::ApiError;
use super::extract::{ApiJson, TenantCaller, TenantChange};

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/v1/brands", post(create_brand).get(list_brands))
        .route(
            "/v1/brands/{id}",
            get(get_brand).put(replace_brand).delete(delete_brand),
        )
        .route("/v1/templates", post(create_template).get(list_templates))
        .route(
            "/v1/templates/{id}",
            get(get_template)
                .put(replace_template)
                .delete(delete_template),
        )
}

async fn create_brand(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    ApiJson(body): ApiJson<BrandBody>,
) -> Result<(StatusCode, Json<Brand>), ApiError> {
    let brand = engine.create_brand(&caller.tenant_id, body).await?;
    Ok((StatusCode::CREATED, Json(brand)))
}

async fn list_brands(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "brands": engine.brands(&caller.tenant_id)? })))
}

async fn get_brand(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
) -> Result<Json<Brand>, ApiError> {
    Ok(Json(engine.brand(&caller.tenant_id, &id)?))
}

async fn replace_brand(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<BrandBody>,
) -> Result<Json<Brand>, ApiError> {
    Ok(Json(
        engine.replace_brand(&caller.tenant_id, &id, body).await?,
    ))
}

async fn delete_brand(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    engine.delete_brand(&caller.tenant_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_template(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    ApiJson(body): ApiJson<TemplateBody>,
) -> Result<(StatusCode, Json<Template>), ApiError> {
    let template = engine.create_template(&caller.tenant_id, body).await?;
    Ok((StatusCode::CREATED, Json(template)))
}

async fn list_templates(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "templates": engine.templates(&caller.tenant_id)? }),
    ))
}

async fn get_template(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
) -> Result<Json<Template>, ApiError> {
    Ok(Json(engine.template(&caller.tenant_id, &id)?))
}

async fn replace_template(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TemplateBody>,
) -> Result<Json<Template>, ApiError> {
    Ok(Json(
        engine
            .replace_template(&caller.tenant_id, &id, body)
            .await?,
    ))
}

async fn delete_template(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    engine.delete_template(&caller.tenant_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
