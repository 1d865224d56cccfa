//! Phone endpoints: validate, lookup, send-otp, verify-otp, and verification reports.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::flows::{
    Engine, IdempotencyKey, LookupRequest, SendRequest, ValidateRequest, VerifyRequest,
};

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, TenantCaller};

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/v1/phone/validate", post(validate))
        .route("/v1/phone/lookup", post(lookup))
        .route("/v1/phone/send-otp", post(send_otp))
        .route("/v1/phone/verify-otp", post(verify_otp))
        .route("/v1/phone/porting-history", get(porting_history))
        .route("/v1/phone/sim-swap-check", post(sim_swap_check))
        .route("/v1/verifications/{id}", get(report).delete(erase))
        .route("/v1/verifications/{id}/events", get(events))
        .route("/v1/verifications/{id}/feedback", post(feedback))
}

async fn validate(
    State(engine): State<Arc<Engine>>,
    _caller: TenantCaller,
    ApiJson(request): ApiJson<ValidateRequest>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    Ok(Json(engine.validate(request)?))
}

async fn lookup(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiJson(request): ApiJson<LookupRequest>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    Ok(Json(engine.lookup(&caller, request).await?))
}

async fn porting_history(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiQuery(query): ApiQuery<crate::flows::line_checks::PortingQuery>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    Ok(Json(engine.porting_history(&caller, query).await?))
}

async fn sim_swap_check(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiJson(request): ApiJson<crate::flows::line_checks::SimSwapRequest>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    Ok(Json(engine.sim_swap_check(&caller, request).await?))
}

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

async fn verify_otp(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    ApiJson(request): ApiJson<VerifyRequest>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    Ok(Json(engine.verify_otp(&caller, request).await?))
}

async fn feedback(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<crate::flows::verification::feedback::FeedbackRequest>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    Ok(Json(engine.feedback(&caller, &id, request).await?))
}

async fn report(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    Ok(Json(engine.report(&caller, &id)?))
}

/// Erases a verification's personal data at once (see `flows/retention.rs`).
async fn erase(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    engine.erase_verification(&caller, &id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

async fn events(
    State(engine): State<Arc<Engine>>,
    TenantCaller(caller): TenantCaller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let events = engine.events(&caller, &id)?;
    Ok(Json(serde_json::json!({ "events": events })))
}
