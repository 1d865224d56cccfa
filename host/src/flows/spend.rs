//! Spend caps in the flows: before a code goes to a provider its estimated cost is
//! reserved against each of the tenant's budgets it counts against (the reservation
//! is refused, naming the budget, when it would go over), and once the send is done
//! the reservation is settled to what the message cost (nothing when it failed).
//! Crossing a budget's alert share or the whole of it sends
//! `spend.threshold_reached`. `GET /v1/spend` shows the budgets and what the
//! SMS-pumping detector's blocks saved. The logic is `crate::spend`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::{Channel, PhoneFacts};
use crate::settings::PhoneSettings;
use crate::spend::{crossed, from_micros, to_micros, Budget};
use crate::store::{key, Tree};

use super::{Engine, FlowError};

/// What a send reserved, to settle once it is done.
#[derive(Debug)]
pub(crate) struct Reservation {
    tenant_id: String,
    budgets: Vec<Budget>,
    alert: u8,
    /// Millionths reserved on each budget.
    reserved: i64,
}

/// A budget as `GET /v1/spend` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BudgetView {
    pub budget: String,
    pub cap: f64,
    pub spent: f64,
    pub remaining: f64,
    pub period_start: DateTime<Utc>,
    pub resets_at: DateTime<Utc>,
}

/// `GET /v1/spend`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SpendView {
    pub budgets: Vec<BudgetView>,
    /// Sends the SMS-pumping detector refused, and their estimated cost.
    pub pumping_blocked_sends: u64,
    pub pumping_estimated_savings: f64,
}

fn spend_key(tenant_id: &str, budget: &Budget) -> Vec<u8> {
    key(&[tenant_id, &budget.period_key()])
}

impl Engine {
    /// Reserves the estimated cost of a code to `facts` on `channel` against the
    /// tenant's budgets; refused (429 `spend_cap_reached`, naming the budget) when a
    /// budget is spent or the send would go over it. `None` without budgets.
    pub(crate) fn reserve_spend(
        &self,
        tenant_id: &str,
        settings: &PhoneSettings,
        facts: &PhoneFacts,
        channel: Channel,
    ) -> Result<Option<Reservation>, FlowError> {
        let now = self.clock.now();
        let budgets = settings.spend_caps.budgets(facts.region.as_deref(), now);
        if budgets.is_empty() {
            return Ok(None);
        }
        let estimate = to_micros(self.cost_estimate(tenant_id, facts, channel));
        let alert = settings.spend_caps.alert_percent;
        let mut taken: Vec<Budget> = Vec::new();
        for budget in &budgets {
            let cap = budget.cap_micros();
            let outcome = self.db.update(
                Tree::Spend,
                &spend_key(tenant_id, budget),
                |spent: Option<i64>| {
                    let spent = spent.unwrap_or(0);
                    if spent >= cap || spent + estimate > cap {
                        return Ok::<_, FlowError>((Some(spent), Err(spent)));
                    }
                    Ok((Some(spent + estimate), Ok((spent, spent + estimate))))
                },
            );
            let refused = match outcome {
                Ok(Ok((before, after))) => {
                    taken.push(budget.clone());
                    self.spend_crossed(tenant_id, budget, before, after, alert);
                    None
                }
                Ok(Err(spent)) => Some(Ok(spent)),
                Err(err) => Some(Err(err)),
            };
            if let Some(refused) = refused {
                // Give back what this send took from the budgets before it.
                self.adjust_spend(tenant_id, &taken, -estimate, alert)?;
                let spent = refused?;
                let retry = (budget.period_end - now).num_seconds().max(1);
                let until = budget
                    .period_end
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let state = if spent >= budget.cap_micros() {
                    format!("is spent until {until}")
                } else {
                    format!(
                        "has {:.4} left until {until}, less than this code's estimated {:.4}",
                        from_micros(budget.cap_micros() - spent),
                        from_micros(estimate)
                    )
                };
                return Err(FlowError::RateLimited {
                    code: "spend_cap_reached",
                    message: format!("the {} budget of {:.4} {state}", budget.name(), budget.cap),
                    retry_after_secs: u64::try_from(retry).unwrap_or(1),
                });
            }
        }
        Ok(Some(Reservation {
            tenant_id: tenant_id.to_owned(),
            budgets,
            alert,
            reserved: estimate,
        }))
    }

    /// Settles a reservation to what the send cost (0 when nothing was sent).
    pub(crate) fn settle_spend(
        &self,
        reservation: Option<Reservation>,
        cost: f64,
    ) -> Result<(), FlowError> {
        let Some(reservation) = reservation else {
            return Ok(());
        };
        let delta = to_micros(cost) - reservation.reserved;
        self.adjust_spend(
            &reservation.tenant_id,
            &reservation.budgets,
            delta,
            reservation.alert,
        )
    }

    /// Adds `delta` millionths to each budget's spend (never below 0).
    fn adjust_spend(
        &self,
        tenant_id: &str,
        budgets: &[Budget],
        delta: i64,
        alert: u8,
    ) -> Result<(), FlowError> {
        if delta == 0 {
            return Ok(());
        }
        for budget in budgets {
            let (before, after) = self.db.update(
                Tree::Spend,
                &spend_key(tenant_id, budget),
                |spent: Option<i64>| {
                    let spent = spent.unwrap_or(0);
                    let after = (spent + delta).max(0);
                    Ok::<_, FlowError>((Some(after), (spent, after)))
                },
            )?;
            self.spend_crossed(tenant_id, budget, before, after, alert);
        }
        Ok(())
    }

    /// Sends `spend.threshold_reached` for each threshold going from `before` to
    /// `after` crossed.
    fn spend_crossed(&self, tenant_id: &str, budget: &Budget, before: i64, after: i64, alert: u8) {
        for percent in crossed(budget.cap_micros(), before, after, alert) {
            tracing::warn!(tenant = %tenant_id, budget = %budget.name(), percent, "spend threshold reached");
            self.emit(
                tenant_id,
                crate::webhooks::EventType::SpendThreshold,
                serde_json::json!({
                    "tenant_id": tenant_id,
                    "budget": budget.name(),
                    "percent": percent,
                    "cap": budget.cap,
                    "spent": from_micros(after),
                    "period_start": budget.period_start,
                    "resets_at": budget.period_end,
                }),
            );
        }
    }

    /// The tenant's budgets in their current periods, and the detector's savings.
    pub fn spend(&self, tenant_id: &str) -> Result<SpendView, FlowError> {
        let settings = self.settings(tenant_id)?;
        let caps = &settings.spend_caps;
        let now = self.clock.now();
        let mut budgets = caps.budgets(None, now);
        for country in caps.countries_daily.keys() {
            budgets.extend(
                caps.budgets(Some(country), now)
                    .into_iter()
                    .filter(|budget| budget.country.is_some()),
            );
        }
        let mut views = Vec::new();
        for budget in budgets {
            let spent: i64 = self
                .db
                .get(Tree::Spend, &spend_key(tenant_id, &budget))?
                .unwrap_or(0);
            let spent = from_micros(spent);
            views.push(BudgetView {
                budget: budget.name(),
                cap: budget.cap,
                spent,
                remaining: (budget.cap - spent).max(0.0),
                period_start: budget.period_start,
                resets_at: budget.period_end,
            });
        }
        let blocks = self.fraud_blocks(tenant_id, Some("all"))?;
        Ok(SpendView {
            budgets: views,
            pumping_blocked_sends: blocks.iter().map(|view| view.block.blocked_sends).sum(),
            pumping_estimated_savings: blocks.iter().map(|view| view.block.estimated_savings).sum(),
        })
    }
}
