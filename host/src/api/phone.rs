//! Phone endpoints: validate, lookup, send-otp, verify-otp, and verification reports.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;

use crate::flows::{
    Engine, IdempotencyKey, LookupRequest, SendRequest, ValidateRequest, VerifyRequest,
};

use super::error::doc::*;
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, TenantCaller};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<Arc<Engine>> {
    OpenApiRouter::new()
        .routes(routes!(validate))
        .routes(routes!(lookup))
        .routes(routes!(send_otp))
        .routes(routes!(verify_otp))
        .routes(routes!(porting_history))
        .routes(routes!(sim_swap_check))
        .routes(routes!(report, erase))
        .routes(routes!(events))
        .routes(routes!(feedback))
}

#[utoipa::path(
    post,
    path = "/v1/phone/validate",
    tag = "phone",
    security(("tenant_key" = [])),
    request_body = ValidateRequest,
    responses(
        (status = 200, description = "the number's format validation", body = crate::flows::ValidateResponse),
        JsonBody,
        Unauthorized,
        RateLimited,
        Unavailable,
    )
)]
async fn validate(
    State(engine): State<Arc<Engine>>,
    _caller: TenantCaller,
    ApiJson(request): ApiJson<ValidateRequest>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    Ok(Json(engine.validate(request)?))
}

#[utoipa::path(
    post,
    path = "/v1/phone/lookup",
    tag = "phone",
    security(("tenant_key" = [])),
    request_body = LookupRequest,
    responses(
        (status = 200, description = "type, carrier, location, risk and warnings", body = crate::flows::LookupResponse),
        JsonBody,
        Unauthorized,
        RateLimited,
        ProviderFailed,
        Unavailable,
    )
)]
async fn lookup(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiJson(request): ApiJson<LookupRequest>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    Ok(Json(engine.lookup(&caller, request).await?))
}

#[utoipa::path(
    get,
    path = "/v1/phone/porting-history",
    tag = "phone",
    security(("tenant_key" = [])),
    params(crate::flows::line_checks::PortingQuery),
    responses(
        (status = 200, description = "the number's porting history from the tenant's lookup adapter", body = crate::flows::line_checks::PortingHistory),
        Invalid,
        Unauthorized,
        Conflict,
        RateLimited,
        ProviderFailed,
        Unavailable,
    )
)]
async fn porting_history(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiQuery(query): ApiQuery<crate::flows::line_checks::PortingQuery>,
) -> Result<Json<crate::flows::line_checks::PortingHistory>, ApiError> {
    Ok(Json(engine.porting_history(&caller, query).await?))
}

#[utoipa::path(
    post,
    path = "/v1/phone/sim-swap-check",
    tag = "phone",
    security(("tenant_key" = [])),
    request_body = crate::flows::line_checks::SimSwapRequest,
    responses(
        (status = 200, description = "the SIM-swap check from the tenant's lookup adapter", body = crate::flows::line_checks::SimSwapCheck),
        JsonBody,
        Unauthorized,
        Conflict,
        RateLimited,
        ProviderFailed,
        Unavailable,
    )
)]
async fn sim_swap_check(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiJson(request): ApiJson<crate::flows::line_checks::SimSwapRequest>,
) -> Result<Json<crate::flows::line_checks::SimSwapCheck>, ApiError> {
    Ok(Json(engine.sim_swap_check(&caller, request).await?))
}

#[utoipa::path(
    post,
    path = "/v1/phone/send-otp",
    tag = "phone",
    security(("tenant_key" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "replays the first answer to a send with the same key")),
    request_body = SendRequest,
    responses(
        (status = 200, description = "the verification started, resent, or held", body = crate::flows::verification::send::SendResponse),
        JsonBody,
        Unauthorized,
        Conflict,
        RateLimited,
        ProviderFailed,
        Unavailable,
    )
)]
async fn send_otp(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<SendRequest>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let idem = headers
        .get("idempotency-key")
        .map(|value| {
            value
                .to_str()
                .map_err(|_| ApiError::invalid("Idempotency-Key", "must be visible ASCII"))
                .and_then(|raw| IdempotencyKey::parse(raw).map_err(ApiError::from))
        })
        .transpose()?;
    Ok(Json(engine.send_otp(&caller, request, idem).await?))
}

#[utoipa::path(
    post,
    path = "/v1/phone/verify-otp",
    tag = "phone",
    security(("tenant_key" = [])),
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "the code's check", body = crate::flows::verification::verify::VerifyResponse),
        JsonBody,
        Unauthorized,
        NotFound,
        Conflict,
        RateLimited,
        Unavailable,
    )
)]
async fn verify_otp(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiJson(request): ApiJson<VerifyRequest>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    Ok(Json(engine.verify_otp(&caller, request).await?))
}

#[utoipa::path(
    post,
    path = "/v1/verifications/{id}/feedback",
    tag = "verifications",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the verification id")),
    request_body = crate::flows::verification::feedback::FeedbackRequest,
    responses(
        (status = 200, description = "the feedback recorded: `outcome`, `at`, `reports`", body = crate::model::Feedback),
        JsonBody,
        Unauthorized,
        NotFound,
        Conflict,
        Unavailable,
    )
)]
async fn feedback(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<crate::flows::verification::feedback::FeedbackRequest>,
) -> Result<Json<crate::model::Feedback>, ApiError> {
    Ok(Json(engine.feedback(&caller, &id, request).await?))
}

#[utoipa::path(
    get,
    path = "/v1/verifications/{id}",
    tag = "verifications",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the verification id")),
    responses(
        (status = 200, description = "the verification's report", body = crate::flows::verification::report::Report),
        Unauthorized,
        NotFound,
        Unavailable,
    )
)]
async fn report(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    Ok(Json(engine.report(&caller, &id)?))
}

/// Erases a verification's personal data at once (see `flows/retention.rs`).
#[utoipa::path(
    delete,
    path = "/v1/verifications/{id}",
    tag = "verifications",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the verification id")),
    responses(
        (status = 204, description = "erased: the verification and what derives from it are gone"),
        Unauthorized,
        NotFound,
        RateLimited,
        Unavailable,
    )
)]
async fn erase(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    engine.erase_verification(&caller, &id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/verifications/{id}/events",
    tag = "verifications",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "the verification id")),
    responses(
        (status = 200, description = "the audit trail: every trigger fired, in order, with the rules that ran", body = AuditTrail),
        Unauthorized,
        NotFound,
        Unavailable,
    )
)]
async fn events(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let events = engine.events(&caller, &id)?;
    super::as_value(&AuditTrail { events })
}

/// The answer of `GET /v1/verifications/{id}/events`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct AuditTrail {
    events: Vec<crate::model::AuditEvent>,
}
