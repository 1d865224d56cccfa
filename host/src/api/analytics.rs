//! Analytics and the verification log: a tenant's conversion by time and group
//! (`/v1/analytics/conversion`), the operator's across tenants or for one
//! (`/v1/admin/analytics/conversion`), a tenant's rule statistics
//! (`/v1/analytics/rules`), and a tenant's verifications, filtered and paged
//! (`/v1/verifications`). Reads run off the request workers: a query may read many
//! records.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::analytics::HOST;
use crate::flows::analytics::{Conversion, ConversionQuery, LogPage, LogQuery};
use crate::flows::rules::stats::{RuleStatsPage, RuleStatsQuery};
use crate::flows::{Engine, FlowError};
use crate::store::Tree;

use super::error::doc::*;
use super::error::ApiError;
use super::extract::{ApiQuery, OperatorCaller, TenantCaller};
use super::plugins::off_worker;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<Arc<Engine>> {
    OpenApiRouter::new()
        .routes(routes!(conversion))
        .routes(routes!(conversion_all))
        .routes(routes!(rules))
        .routes(routes!(log))
}

#[utoipa::path(
    get,
    path = "/v1/analytics/conversion",
    tag = "analytics",
    security(("tenant_key" = [])),
    params(ConversionQuery),
    responses(
        (status = 200, description = "conversion per bucket and in total", body = Conversion),
        Invalid,
        Unauthorized,
        Unavailable,
    )
)]
async fn conversion(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiQuery(query): ApiQuery<ConversionQuery>,
) -> Result<Response, ApiError> {
    if query.tenant_id.is_some() {
        return Err(FlowError::invalid(
            "tenant_id",
            "only the operator's view (/v1/admin/analytics/conversion) names a tenant",
        )
        .into());
    }
    off_worker(move || answer(engine.conversion(&caller.tenant_id, &query)?)).await?
}

/// A conversion answer as its response: serialised on the blocking thread that made it,
/// into a buffer sized for its rows (a year by day and carrier is some 10 MB; grown by
/// doubling, the copies and fresh pages cost a fifth of the answer's time), with the
/// rows of settled days copied from their rollups.
fn answer(conversion: Conversion) -> Result<Response, ApiError> {
    let mut body = Vec::with_capacity(conversion.size_hint());
    conversion.write_json(&mut body).map_err(|err| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            err.to_string(),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/admin/analytics/conversion",
    tag = "analytics",
    security(("operator_key" = [])),
    params(ConversionQuery),
    responses(
        (status = 200, description = "conversion across every tenant, or for one", body = Conversion),
        Invalid,
        Unauthorized,
        NotFound,
        Unavailable,
    )
)]
async fn conversion_all(
    State(engine): State<Arc<Engine>>,
    _operator: OperatorCaller,
    ApiQuery(query): ApiQuery<ConversionQuery>,
) -> Result<Response, ApiError> {
    let owner = match query.tenant_id.clone() {
        Some(tenant_id) => {
            if tenant_id == HOST
                || engine
                    .db
                    .get_raw(Tree::Tenants, tenant_id.as_bytes())?
                    .is_none()
            {
                return Err(FlowError::NotFound("tenant").into());
            }
            tenant_id
        }
        None => HOST.to_owned(),
    };
    off_worker(move || answer(engine.conversion(&owner, &query)?)).await?
}

#[utoipa::path(
    get,
    path = "/v1/analytics/rules",
    tag = "analytics",
    security(("tenant_key" = [])),
    params(RuleStatsQuery),
    responses(
        (status = 200, description = "each rule plugin's and declarative rule's runs, decisions and failures over the range's days", body = RuleStatsPage),
        Invalid,
        Unauthorized,
        Unavailable,
    )
)]
async fn rules(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiQuery(query): ApiQuery<RuleStatsQuery>,
) -> Result<Json<RuleStatsPage>, ApiError> {
    Ok(Json(
        off_worker(move || engine.rule_stats(&caller.tenant_id, &query)).await??,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/verifications",
    tag = "verifications",
    security(("tenant_key" = [])),
    params(LogQuery),
    responses(
        (status = 200, description = "a page of the verification log, newest first, with `next_cursor`", body = LogPage),
        Invalid,
        Unauthorized,
        Unavailable,
    )
)]
async fn log(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> Result<Json<LogPage>, ApiError> {
    Ok(Json(
        off_worker(move || engine.verification_log(&caller.tenant_id, &query)).await??,
    ))
}
