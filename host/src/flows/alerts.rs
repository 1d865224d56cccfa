//! Alerts: once an hour is over, each tenant's conversion and delivery failures in it,
//! per country and per provider, are compared with the week before it, from the
//! analytics' hourly tallies; a group well below (or, for failures, well above) its
//! own level sends the tenant's webhook `alert.conversion_dropped` or
//! `alert.delivery_failures_spiked`. Budget alerts are the spend caps'
//! `spend.threshold_reached`.
//!
//! Every replica runs the check once a minute; the hour is claimed per tenant with a
//! compare-and-swap on a mark in `meta`, so on a shared store one replica judges it and
//! each alert is sent once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::analytics::{Dim, Interval, Tally};
use crate::flows::{Engine, FlowError};
use crate::settings::Alerts;
use crate::store::{key, StoreError, Tree};
use crate::webhooks::EventType;

/// How often a replica looks for an hour to judge.
const CHECK_INTERVAL: StdDuration = StdDuration::from_secs(60);
/// The groupings alerts watch.
const WATCHED: [Dim; 2] = [Dim::Country, Dim::Provider];
/// The week an hour is compared with needs this many times the hour's minimum.
const BASELINE_FACTOR: u64 = 5;

/// A rate, rounded for the payload.
fn rounded(rate: f64) -> f64 {
    (rate * 10_000.0).round() / 10_000.0
}

/// Sums `tallies` per group value.
fn by_value(tallies: Vec<(DateTime<Utc>, String, Tally)>) -> HashMap<String, Tally> {
    let mut sums: HashMap<String, Tally> = HashMap::new();
    for (_, value, tally) in tallies {
        sums.entry(value).or_default().merge(&tally);
    }
    sums
}

/// What an hour of one group says against its week, under `alerts`: the alerts it
/// raises, each with its event and payload facts.
fn judge(alerts: &Alerts, hour: &Tally, week: &Tally) -> Vec<(EventType, serde_json::Value)> {
    let min = u64::from(alerts.min_codes);
    let mut raised = Vec::new();
    if alerts.conversion_drop_percent > 0
        && hour.started >= min
        && week.started >= min * BASELINE_FACTOR
    {
        let rate = hour.verified as f64 / hour.started as f64;
        let level = week.verified as f64 / week.started as f64;
        let floor = level * (1.0 - f64::from(alerts.conversion_drop_percent) / 100.0);
        if rate < floor {
            raised.push((
                EventType::ConversionDropped,
                json!({
                    "conversion_rate": rounded(rate),
                    "baseline_conversion_rate": rounded(level),
                    "started": hour.started,
                    "verified": hour.verified,
                    "baseline_started": week.started,
                    "drop_percent": alerts.conversion_drop_percent,
                }),
            ));
        }
    }
    let outcomes = hour.delivered + hour.failed;
    if alerts.delivery_failure_percent > 0 && outcomes >= min && hour.failed > 0 {
        let rate = hour.failed as f64 / outcomes as f64;
        let week_outcomes = week.delivered + week.failed;
        let level = if week_outcomes >= min * BASELINE_FACTOR {
            week.failed as f64 / week_outcomes as f64
        } else {
            0.0
        };
        let threshold = (f64::from(alerts.delivery_failure_percent) / 100.0).max(2.0 * level);
        if rate >= threshold {
            raised.push((
                EventType::DeliveryFailuresSpiked,
                json!({
                    "failure_rate": rounded(rate),
                    "baseline_failure_rate": rounded(level),
                    "failed": hour.failed,
                    "delivered": hour.delivered,
                    "baseline_receipts": week_outcomes,
                    "threshold": rounded(threshold),
                }),
            ));
        }
    }
    raised
}

impl Engine {
    /// Judges the last completed hour of every tenant that has not been judged yet;
    /// the number of alerts sent.
    pub fn evaluate_alerts(&self) -> Result<u64, FlowError> {
        self.flush_analytics()?;
        let hour = Interval::Hour.floor(self.clock.now()) - Duration::hours(1);
        let mut sent = 0;
        for tenant in self.list_tenants()? {
            let settings = self.settings(&tenant.id)?;
            let alerts = settings.alerts;
            if alerts.conversion_drop_percent == 0 && alerts.delivery_failure_percent == 0 {
                continue;
            }
            if !self.claim_alert_hour(&tenant.id, hour)? {
                continue;
            }
            sent += self.judge_hour(&tenant.id, &alerts, hour)?;
        }
        Ok(sent)
    }

    /// Claims the judging of `hour` for `tenant_id`: false when it (or a later hour)
    /// was judged already, here or on another replica.
    fn claim_alert_hour(&self, tenant_id: &str, hour: DateTime<Utc>) -> Result<bool, StoreError> {
        let mark = key(&["alerts_hour", tenant_id]);
        let hour_ms = hour.timestamp_millis();
        loop {
            let stored = self.db.get_raw(Tree::Meta, &mark)?;
            let judged = stored
                .as_deref()
                .and_then(|bytes| std::str::from_utf8(bytes).ok())
                .and_then(|text| text.parse::<i64>().ok());
            if judged.is_some_and(|judged| judged >= hour_ms) {
                return Ok(false);
            }
            let claimed = self.db.compare_and_swap_raw(
                Tree::Meta,
                &mark,
                stored.as_deref(),
                Some(hour_ms.to_string().as_bytes()),
            )?;
            if claimed {
                return Ok(true);
            }
        }
    }

    /// Judges `hour` of `tenant_id` per watched grouping; the alerts sent.
    fn judge_hour(
        &self,
        tenant_id: &str,
        alerts: &Alerts,
        hour: DateTime<Utc>,
    ) -> Result<u64, FlowError> {
        let end = hour + Duration::hours(1);
        let mut sent = 0;
        for dim in WATCHED {
            let now = by_value(self.read_tallies(tenant_id, Interval::Hour, dim, hour, end)?);
            if now.is_empty() {
                continue;
            }
            let week = by_value(self.read_tallies(
                tenant_id,
                Interval::Hour,
                dim,
                hour - Duration::days(7),
                hour,
            )?);
            let none = Tally::default();
            for (value, tally) in &now {
                if value.is_empty() {
                    continue;
                }
                for (event, mut data) in judge(alerts, tally, week.get(value).unwrap_or(&none)) {
                    data["group_by"] = json!(dim.as_str());
                    data["group"] = json!(value);
                    data["hour_start"] = json!(hour);
                    data["hour_end"] = json!(end);
                    self.emit(tenant_id, event, data);
                    sent += 1;
                }
            }
        }
        Ok(sent)
    }

    /// Judges hours once a minute until `stop`.
    pub async fn run_alerts(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(CHECK_INTERVAL) => {}
            }
            if *stop.borrow() {
                return;
            }
            let engine = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || engine.evaluate_alerts()).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => tracing::error!("alerts not judged: {err}"),
                Err(err) => tracing::error!("alerts not judged: {err}"),
            }
            if let Err(err) = self.db.sync().await {
                tracing::error!("alerts not committed: {err}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(started: u64, verified: u64, delivered: u64, failed: u64) -> Tally {
        Tally {
            started,
            verified,
            delivered,
            failed,
            ..Tally::default()
        }
    }

    #[test]
    fn a_drop_below_the_week_raises_and_noise_does_not() {
        let alerts = Alerts::default();
        let week = tally(1_000, 800, 950, 50);
        // 80% a week; 50% this hour: below 80% less 30% (56%).
        let raised = judge(&alerts, &tally(40, 20, 40, 0), &week);
        assert_eq!(raised.len(), 1);
        assert_eq!(raised[0].0, EventType::ConversionDropped);
        assert_eq!(raised[0].1["baseline_conversion_rate"], 0.8);
        // 60%: within the margin.
        assert!(judge(&alerts, &tally(40, 24, 40, 0), &week).is_empty());
        // Too few codes this hour, or too little history.
        assert!(judge(&alerts, &tally(10, 0, 0, 0), &week).is_empty());
        assert!(judge(&alerts, &tally(40, 0, 0, 0), &tally(50, 40, 0, 0)).is_empty());
    }

    #[test]
    fn failures_rise_past_the_floor_and_twice_the_week() {
        let alerts = Alerts::default();
        // A week failing 15%: an hour needs 30%.
        let week = tally(1_000, 800, 850, 150);
        assert!(judge(&alerts, &tally(40, 30, 30, 10), &week).is_empty());
        let raised = judge(&alerts, &tally(40, 30, 26, 14), &week);
        assert_eq!(raised[0].0, EventType::DeliveryFailuresSpiked);
        assert_eq!(raised[0].1["threshold"], 0.3);
        // Without history, the floor alone (20%).
        let raised = judge(&alerts, &tally(30, 20, 20, 10), &Tally::default());
        assert_eq!(raised.len(), 1);
        // Off.
        let off = Alerts {
            conversion_drop_percent: 0,
            delivery_failure_percent: 0,
            ..Alerts::default()
        };
        assert!(judge(&off, &tally(40, 0, 0, 40), &week).is_empty());
    }
}
