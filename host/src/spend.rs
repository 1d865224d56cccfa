//! Spend caps as logic only: a tenant's budgets (daily, monthly, and daily per
//! country) in its providers' cost per message, the periods they count over (UTC days
//! and months), and which thresholds a change of the spent amount crosses.
//! `flows/spend.rs` keeps the amounts in the store.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Countries a tenant may give a budget of their own.
pub const MAX_COUNTRY_BUDGETS: usize = 250;
/// The largest budget: far above any real one, small enough to count exactly.
pub const MAX_BUDGET: f64 = 1e9;
/// Amounts are counted in millionths.
pub const MICROS: f64 = 1_000_000.0;

/// The tenant's budgets (`spend_caps` in the settings). Absent budgets are unlimited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SpendCaps {
    /// Spend per UTC day.
    pub daily: Option<f64>,
    /// Spend per UTC month.
    pub monthly: Option<f64>,
    /// Spend per UTC day to one country (ISO alpha-2).
    pub countries_daily: BTreeMap<String, f64>,
    /// The share of a budget (percent) whose crossing sends `spend.threshold_reached`;
    /// reaching the whole budget sends it again with 100.
    pub alert_percent: u8,
}

impl Default for SpendCaps {
    fn default() -> Self {
        Self {
            daily: None,
            monthly: None,
            countries_daily: BTreeMap::new(),
            alert_percent: 80,
        }
    }
}

impl SpendCaps {
    /// The first problem with these caps, as (field, message).
    pub fn problem(&self) -> Option<(String, String)> {
        let amount = |value: f64| value.is_finite() && (0.0..=MAX_BUDGET).contains(&value);
        for (name, value) in [("daily", self.daily), ("monthly", self.monthly)] {
            if value.is_some_and(|value| !amount(value)) {
                return Some((
                    format!("spend_caps.{name}"),
                    "must be between 0 and 1000000000, or null for no budget".into(),
                ));
            }
        }
        if self.countries_daily.len() > MAX_COUNTRY_BUDGETS {
            return Some((
                "spend_caps.countries_daily".into(),
                format!("at most {MAX_COUNTRY_BUDGETS} countries"),
            ));
        }
        for (country, value) in &self.countries_daily {
            let field = format!("spend_caps.countries_daily.{country}");
            if country.len() != 2
                || country.to_ascii_uppercase() != *country
                || crate::phone::countries::by_alpha2(country).is_none()
            {
                return Some((field, "must be an ISO 3166-1 alpha-2 country code".into()));
            }
            if !amount(*value) {
                return Some((field, "must be between 0 and 1000000000".into()));
            }
        }
        if !(1..=99).contains(&self.alert_percent) {
            return Some((
                "spend_caps.alert_percent".into(),
                "must be between 1 and 99".into(),
            ));
        }
        None
    }

    /// The budgets a send to `country` at `now` counts against.
    pub fn budgets(&self, country: Option<&str>, now: DateTime<Utc>) -> Vec<Budget> {
        let mut budgets = Vec::new();
        if let Some(cap) = self.daily {
            budgets.push(Budget::new(BudgetKind::Daily, None, cap, now));
        }
        if let Some(cap) = self.monthly {
            budgets.push(Budget::new(BudgetKind::Monthly, None, cap, now));
        }
        if let Some((country, cap)) = country.and_then(|c| self.countries_daily.get_key_value(c)) {
            budgets.push(Budget::new(
                BudgetKind::Daily,
                Some(country.clone()),
                *cap,
                now,
            ));
        }
        budgets
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetKind {
    Daily,
    Monthly,
}

/// One budget in its current period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub kind: BudgetKind,
    /// The country of a per-country budget.
    pub country: Option<String>,
    pub cap: f64,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
}

impl Budget {
    fn new(kind: BudgetKind, country: Option<String>, cap: f64, now: DateTime<Utc>) -> Self {
        let (period_start, period_end) = period(kind, now);
        Self {
            kind,
            country,
            cap,
            period_start,
            period_end,
        }
    }

    /// How the API and webhooks name it: `daily`, `monthly`, `daily:GB`.
    pub fn name(&self) -> String {
        let kind = match self.kind {
            BudgetKind::Daily => "daily",
            BudgetKind::Monthly => "monthly",
        };
        match &self.country {
            Some(country) => format!("{kind}:{country}"),
            None => kind.to_owned(),
        }
    }

    /// The store key part of this budget's period: `day/2026-11-30`, `month/2026-11`,
    /// `day/2026-11-30/GB`.
    pub fn period_key(&self) -> String {
        let key = match self.kind {
            BudgetKind::Daily => format!("day/{}", self.period_start.format("%Y-%m-%d")),
            BudgetKind::Monthly => format!("month/{}", self.period_start.format("%Y-%m")),
        };
        match &self.country {
            Some(country) => format!("{key}/{country}"),
            None => key,
        }
    }

    pub fn cap_micros(&self) -> i64 {
        to_micros(self.cap)
    }
}

/// `amount` in millionths.
pub fn to_micros(amount: f64) -> i64 {
    (amount * MICROS).round() as i64
}

/// Millionths as an amount.
pub fn from_micros(micros: i64) -> f64 {
    micros as f64 / MICROS
}

/// The UTC day or month `now` is in, as [start, end).
pub fn period(kind: BudgetKind, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let day = now.date_naive();
    let midnight = |date: NaiveDate| Utc.from_utc_datetime(&date.and_time(chrono::NaiveTime::MIN));
    match kind {
        BudgetKind::Daily => {
            let start = midnight(day);
            (start, start + Duration::days(1))
        }
        BudgetKind::Monthly => {
            let first = NaiveDate::from_ymd_opt(day.year(), day.month(), 1).unwrap_or(day);
            let next = if day.month() == 12 {
                NaiveDate::from_ymd_opt(day.year() + 1, 1, 1)
            } else {
                NaiveDate::from_ymd_opt(day.year(), day.month() + 1, 1)
            }
            .unwrap_or(day);
            (midnight(first), midnight(next))
        }
    }
}

/// The thresholds (percent of `cap`) that going from `before` to `after` (millionths)
/// crosses upwards: `alert` and 100, in that order.
pub fn crossed(cap: i64, before: i64, after: i64, alert: u8) -> Vec<u8> {
    [alert, 100]
        .into_iter()
        .filter(|percent| {
            let line = (i128::from(cap) * i128::from(*percent) + 99) / 100;
            cap > 0 && i128::from(before) < line && i128::from(after) >= line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("a time")
    }

    #[test]
    fn periods_are_utc_days_and_months() {
        let now = at("2026-12-31T23:59:59Z");
        assert_eq!(
            period(BudgetKind::Daily, now),
            (at("2026-12-31T00:00:00Z"), at("2027-01-01T00:00:00Z"))
        );
        assert_eq!(
            period(BudgetKind::Monthly, now),
            (at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
        );
        let caps = SpendCaps {
            daily: Some(10.0),
            monthly: Some(100.0),
            countries_daily: [("GB".to_owned(), 2.0)].into(),
            ..SpendCaps::default()
        };
        let names: Vec<(String, String)> = caps
            .budgets(Some("GB"), now)
            .iter()
            .map(|b| (b.name(), b.period_key()))
            .collect();
        assert_eq!(
            names,
            [
                ("daily".to_owned(), "day/2026-12-31".to_owned()),
                ("monthly".to_owned(), "month/2026-12".to_owned()),
                ("daily:GB".to_owned(), "day/2026-12-31/GB".to_owned()),
            ]
        );
        assert_eq!(caps.budgets(Some("FR"), now).len(), 2);
    }

    #[test]
    fn each_threshold_is_crossed_once() {
        let cap = to_micros(10.0);
        assert_eq!(crossed(cap, 0, to_micros(7.9), 80), Vec::<u8>::new());
        assert_eq!(crossed(cap, to_micros(7.9), to_micros(8.0), 80), vec![80]);
        assert_eq!(
            crossed(cap, to_micros(8.0), to_micros(9.0), 80),
            Vec::<u8>::new()
        );
        assert_eq!(
            crossed(cap, to_micros(7.0), to_micros(10.0), 80),
            vec![80, 100]
        );
        assert_eq!(crossed(0, 0, 5, 80), Vec::<u8>::new());
    }

    #[test]
    fn bad_caps_name_their_field() {
        let problem = |caps: SpendCaps| caps.problem().map(|(field, _)| field);
        assert_eq!(problem(SpendCaps::default()), None);
        assert_eq!(
            problem(SpendCaps {
                daily: Some(-1.0),
                ..SpendCaps::default()
            }),
            Some("spend_caps.daily".into())
        );
        assert_eq!(
            problem(SpendCaps {
                countries_daily: [("XX".to_owned(), 1.0)].into(),
                ..SpendCaps::default()
            }),
            Some("spend_caps.countries_daily.XX".into())
        );
        assert_eq!(
            problem(SpendCaps {
                alert_percent: 100,
                ..SpendCaps::default()
            }),
            Some("spend_caps.alert_percent".into())
        );
    }
}
