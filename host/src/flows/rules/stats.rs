//! Rule statistics: how often each of a tenant's rule plugins and declarative rules ran,
//! decided something and failed, per day. Flows count each trigger's runs as they fire
//! (`count_rule_runs`); this replica keeps the counts for at most a second and merges
//! them into the store with the analytics' tallies (`flush_rule_stats`); `rule_stats`
//! sums a range of days back for `GET /v1/analytics/rules` and the console.
//!
//! Like the analytics' tallies these are statistics: a replica that dies loses the
//! counts of its last second at most.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::analytics::Interval;
use crate::model::rules::{RuleRun, RuleSource};
use crate::store::{key, StoreError, Tree};

use crate::flows::{Engine, FlowError};

/// The longest range one answer covers.
const MAX_DAYS: i64 = 400;
/// Daily records one answer reads at most.
const MAX_RECORDS: usize = 200_000;

/// One rule's counts over a day (or a range, summed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleTally {
    /// Recorded runs: a rule plugin's calls, a declarative rule's matches.
    pub runs: u64,
    /// Runs that returned at least one action.
    pub decided: u64,
    /// Runs that failed (out of fuel, timed out, trapped, not run for load).
    pub failures: u64,
    /// The latest failure: when, and its kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<(DateTime<Utc>, String)>,
}

impl RuleTally {
    fn merge(&mut self, other: &RuleTally) {
        self.runs += other.runs;
        self.decided += other.decided;
        self.failures += other.failures;
        if let Some((at, kind)) = &other.last_failure {
            if self.last_failure.as_ref().is_none_or(|(mine, _)| mine < at) {
                self.last_failure = Some((*at, kind.clone()));
            }
        }
    }
}

/// What the unmerged counts are kept by: tenant, day, kind of rule and its id.
type PendingKey = (String, DateTime<Utc>, RuleSource, String);

/// The counts one replica has not merged yet.
#[derive(Debug, Default)]
pub struct RuleLedger {
    pending: Mutex<HashMap<PendingKey, RuleTally>>,
}

/// `GET /v1/analytics/rules`'s query.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RuleStatsQuery {
    /// The first day counted (RFC 3339 or a date; default 7 days before `to`).
    pub from: Option<String>,
    /// The end of the range (default now; the day it falls in is counted).
    pub to: Option<String>,
}

/// One rule's counts over the range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RuleStats {
    /// `plugin` or `workflow`.
    pub source: RuleSource,
    /// The plugin id, or the declarative rule's `rule_id`.
    pub id: String,
    /// Recorded runs: a rule plugin's calls, a declarative rule's matches.
    pub runs: u64,
    /// Runs that returned at least one action.
    pub decided: u64,
    /// Runs that failed.
    pub failures: u64,
    /// When the latest failure in the range happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure_at: Option<DateTime<Utc>>,
    /// The latest failure's kind (`timeout`, `out_of_fuel`, `overloaded`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

/// Answer of `GET /v1/analytics/rules`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuleStatsPage {
    /// The start of the first day counted.
    pub from: DateTime<Utc>,
    /// The end of the last day counted.
    pub to: DateTime<Utc>,
    /// Every rule that ran in the range, most runs first.
    pub rules: Vec<RuleStats>,
}

/// The key of `tenant_id`'s counts of one rule on the day starting at `day`.
fn stats_key(tenant_id: &str, day: DateTime<Utc>, source: RuleSource, id: &str) -> Vec<u8> {
    key(&[
        tenant_id,
        &day.format("%Y%m%d").to_string(),
        source_name(source),
        id,
    ])
}

fn source_name(source: RuleSource) -> &'static str {
    match source {
        RuleSource::Plugin => "plugin",
        RuleSource::Workflow => "workflow",
    }
}

/// The kind of rule and its id in a stored key's tail (`source/id`).
fn parse_tail(tail: &str) -> Option<(RuleSource, &str)> {
    let (source, id) = tail.split_once('/')?;
    let source = match source {
        "plugin" => RuleSource::Plugin,
        "workflow" => RuleSource::Workflow,
        _ => return None,
    };
    Some((source, id))
}

impl Engine {
    /// Counts the runs of one trigger's rules for `tenant_id` at `at`.
    pub(crate) fn count_rule_runs(&self, tenant_id: &str, at: DateTime<Utc>, runs: &[RuleRun]) {
        if runs.is_empty() {
            return;
        }
        let day = Interval::Day.floor(at);
        let mut pending = self.replica.rule_stats.pending.lock();
        for run in runs {
            let tally = pending
                .entry((tenant_id.to_owned(), day, run.source, run.plugin_id.clone()))
                .or_default();
            tally.runs += 1;
            if !run.actions.is_empty() {
                tally.decided += 1;
            }
            if let Some(failure) = &run.error {
                tally.failures += 1;
                tally.merge(&RuleTally {
                    last_failure: Some((at, failure.kind().to_owned())),
                    ..RuleTally::default()
                });
            }
        }
    }

    /// Merges this replica's rule counts (of `tenant` only, or all of them) into the
    /// store; counts a failed merge could not store are kept for the next one.
    pub(crate) fn flush_rule_stats(&self, tenant: Option<&str>) -> Result<(), StoreError> {
        let drained: Vec<(PendingKey, RuleTally)> = {
            let mut pending = self.replica.rule_stats.pending.lock();
            match tenant {
                None => pending.drain().collect(),
                Some(tenant) => {
                    let own: Vec<PendingKey> = pending
                        .keys()
                        .filter(|(owner, ..)| owner == tenant)
                        .cloned()
                        .collect();
                    own.into_iter()
                        .filter_map(|key| pending.remove_entry(&key))
                        .collect()
                }
            }
        };
        let mut failed = None;
        let mut left = Vec::new();
        for (pending_key, tally) in drained {
            if failed.is_some() {
                left.push((pending_key, tally));
                continue;
            }
            let (tenant_id, day, source, id) = &pending_key;
            let stored_key = stats_key(tenant_id, *day, *source, id);
            let merged = self.db.update::<RuleTally, StoreError, ()>(
                Tree::RuleStats,
                &stored_key,
                |current| {
                    let mut merged = current.unwrap_or_default();
                    merged.merge(&tally);
                    Ok((Some(merged), ()))
                },
            );
            if let Err(err) = merged {
                failed = Some(err);
                left.push((pending_key, tally));
            }
        }
        if !left.is_empty() {
            let mut pending = self.replica.rule_stats.pending.lock();
            for (pending_key, tally) in left {
                pending.entry(pending_key).or_default().merge(&tally);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// `tenant_id`'s rule counts over the days of `query`'s range, this replica's
    /// unmerged ones included.
    pub fn rule_stats(
        &self,
        tenant_id: &str,
        query: &RuleStatsQuery,
    ) -> Result<RuleStatsPage, FlowError> {
        let now = self.clock.now();
        let to = match query.to.as_deref() {
            Some(text) => super::super::analytics::parse_time(text, "to")?,
            None => now,
        };
        let from = match query.from.as_deref() {
            Some(text) => super::super::analytics::parse_time(text, "from")?,
            None => to - Duration::days(7),
        };
        if from >= to {
            return Err(FlowError::invalid("from", "must be before `to`"));
        }
        if to - from > Duration::days(MAX_DAYS) {
            return Err(FlowError::invalid(
                "to",
                format!("the range may span at most {MAX_DAYS} days"),
            ));
        }
        self.flush_rule_stats(Some(tenant_id))?;
        let start = Interval::Day.floor(from);
        let mut end = Interval::Day.floor(to);
        if end < to {
            end = Interval::Day.next(end);
        }
        let low = key(&[tenant_id, &start.format("%Y%m%d").to_string()]);
        let high = key(&[tenant_id, &end.format("%Y%m%d").to_string()]);
        let page: Vec<(Vec<u8>, RuleTally)> =
            self.db
                .scan_range(Tree::RuleStats, &low, &high, MAX_RECORDS, false)?;
        let prefix_len = tenant_id.len() + 1 + "YYYYMMDD/".len();
        let mut summed: BTreeMap<(RuleSource, String), RuleTally> = BTreeMap::new();
        for (stored_key, tally) in page {
            let tail = String::from_utf8_lossy(stored_key.get(prefix_len..).unwrap_or_default())
                .into_owned();
            if let Some((source, id)) = parse_tail(&tail) {
                summed
                    .entry((source, id.to_owned()))
                    .or_default()
                    .merge(&tally);
            }
        }
        let mut rules: Vec<RuleStats> = summed
            .into_iter()
            .map(|((source, id), tally)| RuleStats {
                source,
                id,
                runs: tally.runs,
                decided: tally.decided,
                failures: tally.failures,
                last_failure_at: tally.last_failure.as_ref().map(|(at, _)| *at),
                last_failure: tally.last_failure.map(|(_, kind)| kind),
            })
            .collect();
        rules.sort_by(|a, b| b.runs.cmp(&a.runs).then_with(|| a.id.cmp(&b.id)));
        Ok(RuleStatsPage {
            from: start,
            to: end,
            rules,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_merge_and_keep_the_latest_failure() {
        let at = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .expect("a time")
                .with_timezone(&Utc)
        };
        let mut tally = RuleTally {
            runs: 3,
            decided: 1,
            failures: 1,
            last_failure: Some((at("2026-11-02T10:00:00Z"), "timeout".into())),
        };
        tally.merge(&RuleTally {
            runs: 2,
            decided: 2,
            failures: 1,
            last_failure: Some((at("2026-11-01T10:00:00Z"), "out_of_fuel".into())),
        });
        assert_eq!((tally.runs, tally.decided, tally.failures), (5, 3, 2));
        assert_eq!(
            tally.last_failure,
            Some((at("2026-11-02T10:00:00Z"), "timeout".into()))
        );
        tally.merge(&RuleTally {
            last_failure: Some((at("2026-11-03T10:00:00Z"), "trap".into())),
            ..RuleTally::default()
        });
        assert_eq!(
            tally.last_failure.map(|(_, kind)| kind),
            Some("trap".into())
        );
    }

    #[test]
    fn keys_name_the_day_the_kind_and_the_rule() {
        let day = DateTime::parse_from_rfc3339("2026-11-30T00:00:00Z")
            .expect("a time")
            .with_timezone(&Utc);
        let stored = stats_key("t1", day, RuleSource::Workflow, "otp_for_voip");
        assert_eq!(stored, b"t1/20261130/workflow/otp_for_voip".to_vec());
        let tail = String::from_utf8_lossy(&stored["t1/20261130/".len()..]).into_owned();
        assert_eq!(
            parse_tail(&tail),
            Some((RuleSource::Workflow, "otp_for_voip"))
        );
        assert_eq!(parse_tail("other/x"), None);
    }
}
