//! Brands and message templates over HTTP: `/v1/brands` and `/v1/templates` (create,
//! list, get, replace, delete).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;

use crate::flows::Engine;
use crate::templates::{Brand, BrandBody, Template, TemplateBody};

use super::error::doc::*;
use super::error::ApiError;
use super::extract::{ApiJson, TenantCaller, TenantChange};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<Arc<Engine>> {
    OpenApiRouter::new()
        .routes(routes!(create_brand, list_brands))
        .routes(routes!(get_brand, replace_brand, delete_brand))
        .routes(routes!(create_template, list_templates))
        .routes(routes!(get_template, replace_template, delete_template))
}

#[utoipa::path(
    post,
    path = "/v1/brands",
    tag = "brands",
    security(("tenant_key" = [])),
    request_body = BrandBody,
    responses(
        (status = 201, description = "the brand", body = Brand),
        JsonBody,
        Unauthorized,
        Conflict,
        RateLimited,
        Unavailable,
    )
)]
async fn create_brand(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    ApiJson(body): ApiJson<BrandBody>,
) -> Result<(StatusCode, Json<Brand>), ApiError> {
    let brand = engine.create_brand(&caller.tenant_id, body).await?;
    Ok((StatusCode::CREATED, Json(brand)))
}

#[utoipa::path(
    get,
    path = "/v1/brands",
    tag = "brands",
    security(("tenant_key" = [])),
    responses(
        (status = 200, description = "the tenant's brands", body = BrandList),
        Unauthorized,
        Unavailable,
    )
)]
async fn list_brands(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
) -> Result<Json<Value>, ApiError> {
    super::as_value(&BrandList {
        brands: engine.brands(&caller.tenant_id)?,
    })
}

/// The answer of `GET /v1/brands`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct BrandList {
    brands: Vec<Brand>,
}

#[utoipa::path(
    get,
    path = "/v1/brands/{id}",
    tag = "brands",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the brand id")),
    responses(
        (status = 200, description = "the brand", body = Brand),
        Unauthorized,
        Invalid,
        NotFound,
        Unavailable,
    )
)]
async fn get_brand(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
) -> Result<Json<Brand>, ApiError> {
    Ok(Json(engine.brand(&caller.tenant_id, &id)?))
}

#[utoipa::path(
    put,
    path = "/v1/brands/{id}",
    tag = "brands",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the brand id")),
    request_body = BrandBody,
    responses(
        (status = 200, description = "the brand replaced", body = Brand),
        JsonBody,
        Unauthorized,
        NotFound,
        Conflict,
        RateLimited,
        Unavailable,
    )
)]
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

#[utoipa::path(
    delete,
    path = "/v1/brands/{id}",
    tag = "brands",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the brand id")),
    responses(
        (status = 204, description = "deleted"),
        Unauthorized,
        Invalid,
        NotFound,
        RateLimited,
        Unavailable,
    )
)]
async fn delete_brand(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    engine.delete_brand(&caller.tenant_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/templates",
    tag = "templates",
    security(("tenant_key" = [])),
    request_body = TemplateBody,
    responses(
        (status = 201, description = "the template", body = Template),
        JsonBody,
        Unauthorized,
        Conflict,
        RateLimited,
        Unavailable,
    )
)]
async fn create_template(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    ApiJson(body): ApiJson<TemplateBody>,
) -> Result<(StatusCode, Json<Template>), ApiError> {
    let template = engine.create_template(&caller.tenant_id, body).await?;
    Ok((StatusCode::CREATED, Json(template)))
}

#[utoipa::path(
    get,
    path = "/v1/templates",
    tag = "templates",
    security(("tenant_key" = [])),
    responses(
        (status = 200, description = "the tenant's templates", body = TemplateList),
        Unauthorized,
        Unavailable,
    )
)]
async fn list_templates(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
) -> Result<Json<Value>, ApiError> {
    super::as_value(&TemplateList {
        templates: engine.templates(&caller.tenant_id)?,
    })
}

/// The answer of `GET /v1/templates`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct TemplateList {
    templates: Vec<Template>,
}

#[utoipa::path(
    get,
    path = "/v1/templates/{id}",
    tag = "templates",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the template id")),
    responses(
        (status = 200, description = "the template", body = Template),
        Unauthorized,
        Invalid,
        NotFound,
        Unavailable,
    )
)]
async fn get_template(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
) -> Result<Json<Template>, ApiError> {
    Ok(Json(engine.template(&caller.tenant_id, &id)?))
}

#[utoipa::path(
    put,
    path = "/v1/templates/{id}",
    tag = "templates",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the template id")),
    request_body = TemplateBody,
    responses(
        (status = 200, description = "the template replaced", body = Template),
        JsonBody,
        Unauthorized,
        NotFound,
        Conflict,
        RateLimited,
        Unavailable,
    )
)]
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

#[utoipa::path(
    delete,
    path = "/v1/templates/{id}",
    tag = "templates",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the template id")),
    responses(
        (status = 204, description = "deleted"),
        Unauthorized,
        Invalid,
        NotFound,
        Conflict,
        RateLimited,
        Unavailable,
    )
)]
async fn delete_template(
    State(engine): State<Arc<Engine>>,
    TenantChange(caller): TenantChange,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    engine.delete_template(&caller.tenant_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
