//! Seed 004's line checks: a number's porting history (`GET /v1/phone/porting-history`)
//! and a SIM-swap check (`POST /v1/phone/sim-swap-check`), answered by the tenant's
//! lookup adapter in seed 004's shapes. Without an adapter that can answer, the error
//! says which is needed; nothing is guessed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::flows::rules::triggers::Intel;
use crate::flows::verification::analysis::parse_valid;
use crate::flows::{Caller, Engine, FlowError};

/// A port within this many days makes a number `recently_ported`; within the risk
/// table's 30 days its `risk_factor` is `high`, within this `medium`.
const RECENT_PORT_DAYS: u32 = 90;
/// The risk table's window for `recently_ported`.
const RISKY_PORT_DAYS: u32 = 30;

/// Body of `POST /v1/phone/sim-swap-check`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimSwapRequest {
    pub phone: String,
}

/// Query of `GET /v1/phone/porting-history`.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PortingQuery {
    pub phone: String,
}

/// One change of operator, as seed 004 shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PortEntry {
    pub from_carrier: Option<String>,
    pub to_carrier: String,
    /// The day of the port (`YYYY-MM-DD`, UTC).
    pub ported_at: String,
    pub days_ago: u32,
}

/// Answer of `GET /v1/phone/porting-history`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PortingHistory {
    pub phone: String,
    pub current_carrier: Option<String>,
    /// Oldest first.
    pub porting_history: Vec<PortEntry>,
    pub recently_ported: bool,
    /// `high` (a port in the last 30 days), `medium` (in the last 90), else `low`.
    pub risk_factor: &'static str,
}

/// Answer of `POST /v1/phone/sim-swap-check`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SimSwapCheck {
    pub phone: String,
    pub sim_swap_detected: bool,
    /// The day of the last SIM change (`YYYY-MM-DD`, UTC), when the operator told.
    pub last_sim_change: Option<String>,
    pub days_since_change: Option<u32>,
    pub risk_assessment: SimSwapRisk,
}

/// How a SIM-swap check reads.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SimSwapRisk {
    /// `high` (a change within the tenant's `sim_swap_threshold_days`), `low`, or
    /// `unknown` when the operator did not say when the SIM last changed.
    pub risk_level: &'static str,
    pub details: String,
}

fn day(millis: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(millis)
        .map(|at| at.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

impl Engine {
    /// Why the tenant's settings ask for something its plugins cannot give: notices for
    /// the settings' answer (`sim_swap_check` without a lookup adapter that is
    /// installed and configured). Empty when nothing is amiss.
    pub fn settings_notices(
        &self,
        tenant_id: &str,
        settings: &crate::settings::PhoneSettings,
    ) -> Vec<String> {
        if !settings.sim_swap_check {
            return Vec::new();
        }
        let adapter = self.plugins.live(tenant_id).and_then(|live| {
            live.lookup().map(|adapter| {
                (
                    adapter.name.clone(),
                    self.missing_config(adapter, &adapter.call.config, &adapter.call.secrets),
                )
            })
        });
        match adapter {
            None => vec![
                "sim_swap_check is on, but the tenant has no lookup adapter: lookups and rules see no SIM-swap data until one that reports SIM changes is installed and configured (POST /v1/plugins/catalog/camara-lookup)".to_owned(),
            ],
            Some((name, missing)) if !missing.is_empty() => vec![format!(
                "sim_swap_check is on, but the lookup adapter {name} is not used until it is configured: it lacks {}",
                missing.join(", ")
            )],
            Some(_) => Vec::new(),
        }
    }

    /// What the tenant's lookup adapter says about `phone`, or an error naming what is
    /// missing (`lookup_adapter_required`) or what failed (502).
    async fn adapter_answer(
        &self,
        caller: &Caller,
        phone: &str,
        needs: &str,
    ) -> Result<(String, crate::plugins::Intelligence), FlowError> {
        let tenant_id = caller.tenant_id.as_str();
        let number = parse_valid(phone, "phone")?;
        // Checks ask the tenant's adapter, often a paid operator API: limited first.
        let limits = self.settings(tenant_id)?.rate_limits.line_checks;
        self.check_limits(
            tenant_id,
            "line-checks",
            &limits,
            &number.e164,
            &caller.client_ip,
        )?;
        match self.intelligence(tenant_id, &number.e164).await {
            Intel::NoAdapter => Err(FlowError::Conflict {
                code: "lookup_adapter_required",
                message: format!(
                    "this check needs a lookup adapter that reports {needs}, and the tenant has none: install and configure one (POST /v1/plugins/catalog/camara-lookup answers SIM-swap checks through an operator's CAMARA SIM Swap API)"
                ),
            }),
            Intel::Unconfigured { adapter, missing } => Err(FlowError::Conflict {
                code: "lookup_adapter_required",
                message: format!(
                    "this check needs the lookup adapter {adapter}, which is not used until it is configured: it lacks {}",
                    missing.join(", ")
                ),
            }),
            Intel::Failed { adapter, why } => Err(FlowError::Provider(format!(
                "the lookup adapter {adapter} failed: {why}"
            ))),
            Intel::Found { found, .. } => Ok((number.e164, found)),
        }
    }

    /// `GET /v1/phone/porting-history`.
    pub async fn porting_history(
        &self,
        caller: &Caller,
        query: PortingQuery,
    ) -> Result<PortingHistory, FlowError> {
        let (e164, found) = self.adapter_answer(caller, &query.phone, "porting").await?;
        let now = self.clock.now().timestamp_millis();
        let days_ago =
            |millis: i64| u32::try_from((now - millis).max(0) / 86_400_000).unwrap_or(u32::MAX);
        let history: Vec<PortEntry> = found
            .porting_history
            .iter()
            .map(|port| PortEntry {
                from_carrier: port.from_carrier.clone(),
                to_carrier: port.to_carrier.clone(),
                ported_at: day(port.at_millis),
                days_ago: days_ago(port.at_millis),
            })
            .collect();
        let latest = history.iter().map(|port| port.days_ago).min();
        let risk_factor = match latest {
            Some(days) if days <= RISKY_PORT_DAYS => "high",
            Some(days) if days <= RECENT_PORT_DAYS => "medium",
            _ => "low",
        };
        Ok(PortingHistory {
            phone: e164,
            current_carrier: found
                .carrier_name
                .or_else(|| history.last().map(|port| port.to_carrier.clone())),
            recently_ported: latest.is_some_and(|days| days <= RECENT_PORT_DAYS),
            porting_history: history,
            risk_factor,
        })
    }

    /// `POST /v1/phone/sim-swap-check`.
    pub async fn sim_swap_check(
        &self,
        caller: &Caller,
        request: SimSwapRequest,
    ) -> Result<SimSwapCheck, FlowError> {
        let (e164, found) = self
            .adapter_answer(caller, &request.phone, "SIM changes")
            .await?;
        let threshold = self.settings(&caller.tenant_id)?.sim_swap_threshold_days;
        let now = self.clock.now().timestamp_millis();
        let days = found
            .last_sim_change_millis
            .map(|millis| u32::try_from((now - millis).max(0) / 86_400_000).unwrap_or(u32::MAX));
        let detected = days.is_some_and(|days| days <= threshold);
        let risk_assessment = match days {
            None => SimSwapRisk {
                risk_level: "unknown",
                details: "The operator did not say when the SIM card last changed".to_owned(),
            },
            Some(days) if detected => SimSwapRisk {
                risk_level: "high",
                details: format!(
                    "SIM card changed {days} days ago, within the {threshold}-day threshold"
                ),
            },
            Some(_) => SimSwapRisk {
                risk_level: "low",
                details: "No recent SIM changes detected".to_owned(),
            },
        };
        Ok(SimSwapCheck {
            phone: e164,
            sim_swap_detected: detected,
            last_sim_change: found.last_sim_change_millis.map(day),
            days_since_change: days,
            risk_assessment,
        })
    }
}
