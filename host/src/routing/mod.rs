//! Provider routing: which of a tenant's providers carries a send, in which order the
//! others take over, and what the host has learnt about each provider × destination
//! country (sliding-window statistics and a circuit breaker).
//!
//! The decision is a pure function of the tenant's providers, its policy, the
//! destination, the channel, a rule's forced or forbidden providers and a snapshot of
//! the statistics, so it is cheap (measured by `benches/routing.rs`) and testable
//! without a network.

mod breaker;
mod stats;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::model::Channel;

pub use breaker::{Breaker, BreakerState};
pub use stats::{Outcome, Performance, Stats};

/// How the first provider is chosen among the eligible ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = RoutingStrategy)]
pub enum Strategy {
    /// Lowest `priority` first (ties by name).
    #[default]
    Priority,
    /// At random in proportion to `weight`; the rest follow in the same way.
    Weighted,
    /// Lowest `cost_per_message` first (ties by priority).
    LeastCost,
    /// Highest measured score over the window first (ties by priority).
    BestPerformance,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Priority => "priority",
            Strategy::Weighted => "weighted",
            Strategy::LeastCost => "least_cost",
            Strategy::BestPerformance => "best_performance",
        }
    }
}

/// A tenant's routing policy (`GET`/`PUT /v1/routing`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
#[schema(as = RoutingPolicy)]
pub struct Policy {
    pub strategy: Strategy,
    /// Consecutive failures of a provider for one country that open its breaker.
    pub failure_threshold: u32,
    /// How long an open breaker refuses sends before it lets one probe through.
    pub open_seconds: u32,
    /// The sliding window the statistics cover.
    pub window_seconds: u32,
    /// How long one provider may take to accept a message before the next is tried.
    pub attempt_timeout_ms: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            strategy: Strategy::Priority,
            failure_threshold: 5,
            open_seconds: 30,
            window_seconds: 600,
            attempt_timeout_ms: 5_000,
        }
    }
}

impl Policy {
    /// The first field out of range, with why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let ranges: [(&'static str, u32, u32, u32); 4] = [
            ("failure_threshold", self.failure_threshold, 1, 100),
            ("open_seconds", self.open_seconds, 1, 3_600),
            ("window_seconds", self.window_seconds, 10, 86_400),
            ("attempt_timeout_ms", self.attempt_timeout_ms, 100, 15_000),
        ];
        for (field, value, low, high) in ranges {
            if !(low..=high).contains(&value) {
                return Err((field, format!("must be between {low} and {high}")));
            }
        }
        Ok(())
    }
}

/// What routing needs to know of one provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub id: String,
    pub name: String,
    pub channels: Vec<Channel>,
    /// ISO 3166 alpha-2 codes, upper case; empty serves every country.
    pub countries: Vec<String>,
    /// E.164 prefixes with the `+`; empty serves every number.
    pub prefixes: Vec<String>,
    pub priority: u32,
    pub weight: u32,
    pub cost_per_message: f64,
    pub enabled: bool,
}

impl Route {
    /// Whether the provider serves `channel` to `e164` in `country`.
    pub fn serves(&self, channel: Channel, e164: &str, country: Option<&str>) -> bool {
        self.channels.contains(&channel)
            && (self.countries.is_empty()
                || country.is_some_and(|c| self.countries.iter().any(|s| s == c)))
            && (self.prefixes.is_empty() || self.prefixes.iter().any(|p| e164.starts_with(p)))
    }

    /// Whether `name` (a rule's `route` value) names this provider, by id or name.
    fn named(&self, name: &str) -> bool {
        self.id == name || self.name.eq_ignore_ascii_case(name)
    }
}

/// One send to route.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    pub e164: &'a str,
    pub country: Option<&'a str>,
    pub channel: Channel,
}

/// Rules' say on a send: a provider to put first, providers never to use.
#[derive(Debug, Clone, Default)]
pub struct RuleRoute<'a> {
    pub forced: Option<&'a str>,
    pub forbidden: &'a [String],
}

/// Why a provider is, or is not, in a plan.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Considered {
    pub provider_id: String,
    pub name: String,
    /// `selected`, or why not: `disabled`, `channel`, `destination`, `forbidden`,
    /// `breaker_open`.
    pub verdict: &'static str,
    /// The strategy's measure: priority, weight, cost or score.
    pub measure: f64,
    pub breaker: BreakerState,
}

/// The providers to try, in order, and what was considered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub order: Vec<String>,
    pub considered: Vec<Considered>,
}

/// The breaker and performance of one provider for the destination's country.
pub trait Health {
    fn breaker(&self, provider_id: &str) -> BreakerState;
    fn performance(&self, provider_id: &str) -> Performance;
}

/// Orders the providers that may carry `destination`.
///
/// A provider is eligible when it is enabled, serves the channel and destination, is
/// not forbidden by a rule, and its breaker is closed or ready to probe. The forced
/// provider, when eligible, goes first; the others follow in the strategy's order,
/// which is also the failover order.
pub fn plan(
    routes: &[Route],
    policy: &Policy,
    destination: Destination<'_>,
    rule: &RuleRoute<'_>,
    health: &dyn Health,
    rng: &mut impl Rng,
) -> Plan {
    let mut considered = Vec::with_capacity(routes.len());
    let mut eligible: Vec<(&Route, f64)> = Vec::with_capacity(routes.len());
    for route in routes {
        let breaker = health.breaker(&route.id);
        let measure = match policy.strategy {
            Strategy::Priority => f64::from(route.priority),
            Strategy::Weighted => f64::from(route.weight),
            Strategy::LeastCost => route.cost_per_message,
            Strategy::BestPerformance => health.performance(&route.id).score(),
        };
        let verdict = if !route.enabled {
            "disabled"
        } else if !route.channels.contains(&destination.channel) {
            "channel"
        } else if !route.serves(destination.channel, destination.e164, destination.country) {
            "destination"
        } else if rule.forbidden.iter().any(|name| route.named(name)) {
            "forbidden"
        } else if breaker == BreakerState::Open {
            "breaker_open"
        } else {
            eligible.push((route, measure));
            "selected"
        };
        considered.push(Considered {
            provider_id: route.id.clone(),
            name: route.name.clone(),
            verdict,
            measure,
            breaker,
        });
    }
    let by_priority = |a: &Route, b: &Route| {
        a.priority
            .cmp(&b.priority)
            .then_with(|| a.name.cmp(&b.name))
    };
    match policy.strategy {
        Strategy::Priority => eligible.sort_by(|a, b| by_priority(a.0, b.0)),
        Strategy::LeastCost => {
            eligible.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| by_priority(a.0, b.0)))
        }
        Strategy::BestPerformance => {
            eligible.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| by_priority(a.0, b.0)))
        }
        Strategy::Weighted => {
            // Weighted sampling without replacement: each provider draws a key
            // `u^(1/w)` and the largest keys go first (Efraimidis–Spirakis).
            let mut keyed: Vec<(&Route, f64)> = eligible
                .iter()
                .map(|(route, weight)| {
                    let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
                    (*route, u.powf(1.0 / weight.max(1.0)))
                })
                .collect();
            keyed.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| by_priority(a.0, b.0)));
            eligible = keyed;
        }
    }
    let mut order: Vec<String> = eligible.iter().map(|(r, _)| r.id.clone()).collect();
    if let Some(forced) = rule.forced {
        if let Some(at) = eligible.iter().position(|(route, _)| route.named(forced)) {
            let id = order.remove(at);
            order.insert(0, id);
        }
    }
    Plan { order, considered }
}

/// Per tenant, provider and country: the statistics and breaker routing reads, kept
/// in memory (they describe recent traffic and start empty after a restart). Nested
/// maps keyed by owned strings let a lookup borrow its `&str` keys, so reading a cell
/// allocates nothing.
#[derive(Debug, Default)]
pub struct Ledger {
    cells: parking_lot::RwLock<Tenants>,
}

/// tenant → country → provider → cell.
type Tenants = HashMap<String, HashMap<String, HashMap<String, Arc<Cell>>>>;

/// One provider × country.
#[derive(Debug)]
pub struct Cell {
    pub stats: parking_lot::Mutex<Stats>,
    pub breaker: parking_lot::Mutex<Breaker>,
}

impl Ledger {
    /// The cell of `tenant`'s `provider` for `country` (`"*"` when unknown).
    pub fn cell(&self, tenant: &str, provider: &str, country: &str) -> Arc<Cell> {
        if let Some(cell) = self
            .cells
            .read()
            .get(tenant)
            .and_then(|countries| countries.get(country))
            .and_then(|providers| providers.get(provider))
        {
            return cell.clone();
        }
        self.cells
            .write()
            .entry(tenant.to_owned())
            .or_default()
            .entry(country.to_owned())
            .or_default()
            .entry(provider.to_owned())
            .or_insert_with(|| {
                Arc::new(Cell {
                    stats: parking_lot::Mutex::new(Stats::default()),
                    breaker: parking_lot::Mutex::new(Breaker::default()),
                })
            })
            .clone()
    }

    /// Every cell of `tenant` as `(provider, country, cell)`, for the statistics
    /// endpoint, ordered by provider then country.
    pub fn cells_of(&self, tenant: &str) -> Vec<(String, String, Arc<Cell>)> {
        let mut cells: Vec<_> = self
            .cells
            .read()
            .get(tenant)
            .into_iter()
            .flat_map(|countries| {
                countries.iter().flat_map(|(country, providers)| {
                    providers
                        .iter()
                        .map(|(provider, cell)| (provider.clone(), country.clone(), cell.clone()))
                })
            })
            .collect();
        cells.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        cells
    }

    /// The tenants with cells, for the metrics' breaker states.
    pub fn tenants(&self) -> Vec<String> {
        self.cells.read().keys().cloned().collect()
    }

    /// Forgets a provider's cells (it was deleted).
    pub fn forget(&self, tenant: &str, provider: &str) {
        if let Some(countries) = self.cells.write().get_mut(tenant) {
            for providers in countries.values_mut() {
                providers.remove(provider);
            }
        }
    }
}

/// A [`Health`] view of one tenant and country at one instant.
pub struct View<'a> {
    pub health: &'a Ledger,
    pub tenant: &'a str,
    pub country: &'a str,
    pub policy: &'a Policy,
    pub now: DateTime<Utc>,
}

impl Health for View<'_> {
    fn breaker(&self, provider_id: &str) -> BreakerState {
        self.health
            .cell(self.tenant, provider_id, self.country)
            .breaker
            .lock()
            .state(self.policy, self.now)
    }

    fn performance(&self, provider_id: &str) -> Performance {
        self.health
            .cell(self.tenant, provider_id, self.country)
            .stats
            .lock()
            .performance(self.policy, self.now)
    }
}
