//! Backtests: a candidate declarative rule set, or a rule plugin's version not yet
//! active, run against the tenant's recorded traffic of the last days, answering what
//! would have changed (see `replay` for how a verification is replayed).
//!
//! A backtest reads the tenant's stored verifications of the window, newest first,
//! and writes nothing: no verification, audit event, case, webhook, analytics count
//! or rule statistic (the runtime's call metrics count a plugin candidate's calls, as
//! they count dry runs'); a candidate plugin's key-value writes go to a scratch layer
//! dropped when the backtest ends. It is bounded: a window of at most
//! [`MAX_DAYS`] days, at most [`MAX_VERIFICATIONS`] verifications, a time budget of at
//! most [`MAX_BUDGET_MS`] (an answer that ran out says `complete: false`, how many
//! verifications it replayed and how far back it reached), every plugin call under
//! the sandbox's limits and in a slot of the tenant's rule share, one backtest at a
//! time per tenant and [`MAX_RUNNING`] at a time on a server.
//!
//! Declarative candidates replay on up to [`MAX_THREADS`] threads of their own;
//! plugin candidates replay one verification after another in the request's task.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::flows::analytics::id_bound;
use crate::flows::{Engine, FlowError};
use crate::model::rules::{RuleRun, RuleSource, Trigger};
use crate::model::Verification;
use crate::plugins::registry::{programs, Registry, TenantLive};
use crate::plugins::Lane;
use crate::settings::PhoneSettings;
use crate::store::{key, Db, Pair, Tree};
use crate::workflows;

use super::workflows::draft_rules;
use replay::{
    blocks, compare, merge, responsible, strip_rule_effects, Compared, Example, Orders, Outcome,
    Replay, Tally,
};

pub mod replay;

/// The window's default length, in days.
pub const DEFAULT_DAYS: u32 = 7;
/// The longest window, in days.
pub const MAX_DAYS: u32 = 90;
/// Verifications a backtest replays by default, and at most.
pub const DEFAULT_VERIFICATIONS: u32 = 100_000;
pub const MAX_VERIFICATIONS: u32 = 1_000_000;
/// The time budget by default, and its bounds, in milliseconds.
pub const DEFAULT_BUDGET_MS: u64 = 5_000;
pub const MIN_BUDGET_MS: u64 = 100;
pub const MAX_BUDGET_MS: u64 = 10_000;
/// Backtests a server runs at once (each tenant one).
pub const MAX_RUNNING: usize = 2;
/// Threads a declarative backtest replays on at most.
pub const MAX_THREADS: usize = 4;
/// Verifications read per page.
const PAGE: usize = 512;

/// `POST /v1/workflows/rules/backtest`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RulesBacktest {
    /// The candidate rule set, each rule as `POST /v1/workflows/rules` takes it. It
    /// stands in for all the tenant's declarative rules (an empty list: none); the
    /// tenant's code plugins stay as recorded.
    #[schema(value_type = Vec<Object>)]
    pub rules: Vec<Json>,
    /// Days of recorded traffic (1 to 90, default 7).
    #[serde(default)]
    pub days: Option<u32>,
    /// Most verifications to replay, newest first (1 to 1000000, default 100000).
    #[serde(default)]
    pub max_verifications: Option<u32>,
    /// Time budget in milliseconds (100 to 10000, default 5000).
    #[serde(default)]
    pub time_budget_ms: Option<u64>,
}

/// `POST /v1/plugins/{id}/backtest`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginBacktest {
    /// The uploaded version to run in place of the active one (or in addition, when
    /// none is active), bound as activating it would bind it.
    pub version: String,
    /// Days of recorded traffic (1 to 90, default 7).
    #[serde(default)]
    pub days: Option<u32>,
    /// Most verifications to replay, newest first (1 to 1000000, default 100000).
    #[serde(default)]
    pub max_verifications: Option<u32>,
    /// Time budget in milliseconds (100 to 10000, default 5000).
    #[serde(default)]
    pub time_budget_ms: Option<u64>,
}

/// Verifications per outcome.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct OutcomeCounts {
    pub unchanged: u64,
    pub would_decline: u64,
    pub would_review: u64,
    pub would_approve: u64,
}

/// The candidate's failed runs.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct FailureCounts {
    /// Failed runs, in all.
    pub runs: u64,
    /// Verifications with at least one.
    pub verifications: u64,
    /// Failed runs by failure kind (`timeout`, `out_of_fuel`, …).
    pub by_kind: BTreeMap<String, u64>,
}

/// A few verifications per changed outcome, newest first.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ExampleLists {
    pub would_decline: Vec<Example>,
    pub would_review: Vec<Example>,
    pub would_approve: Vec<Example>,
}

/// What a backtest answers.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BacktestReport {
    /// What ran in place of the tenant's rules.
    pub candidate: String,
    pub days: u32,
    /// The window: verifications begun from `from` to `to`.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Verifications replayed.
    pub scanned: u64,
    /// Whether every verification of the window was replayed.
    pub complete: bool,
    /// Why not: `time_budget`, `max_verifications` or `overloaded` (the tenant's
    /// plugin share refused a slot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// When the oldest verification replayed began.
    pub reached: Option<DateTime<Utc>>,
    pub outcomes: OutcomeCounts,
    /// Flags the candidate would have added (or no longer added), with how many
    /// verifications; at most 100 names, the rest under `(other)`.
    pub flags_added: BTreeMap<String, u64>,
    pub flags_removed: BTreeMap<String, u64>,
    /// Cases the candidate would have opened (or no longer opened), by case type.
    pub cases_added: BTreeMap<String, u64>,
    pub cases_removed: BTreeMap<String, u64>,
    pub failures: FailureCounts,
    pub examples: ExampleLists,
    pub elapsed_ms: u64,
}

/// The tenants with a backtest running on this server.
#[derive(Debug, Default)]
pub struct Running {
    tenants: Arc<Mutex<HashSet<String>>>,
}

/// A backtest's place among the running ones, given up when dropped: held by the
/// work itself, so a caller that goes away does not free it while the work goes on.
#[derive(Debug)]
struct Slot {
    tenants: Arc<Mutex<HashSet<String>>>,
    tenant_id: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.tenants.lock().remove(&self.tenant_id);
    }
}

impl Running {
    /// A slot for `tenant_id`'s backtest: 409 while it has one running, 429 while the
    /// server runs [`MAX_RUNNING`].
    fn enter(&self, tenant_id: &str) -> Result<Slot, FlowError> {
        let mut tenants = self.tenants.lock();
        if tenants.contains(tenant_id) {
            return Err(FlowError::Conflict {
                code: "backtest_running",
                message: "a backtest of this tenant is running; one runs at a time".to_owned(),
            });
        }
        if tenants.len() >= MAX_RUNNING {
            return Err(FlowError::RateLimited {
                code: "backtests_busy",
                message: format!(
                    "the server runs {MAX_RUNNING} backtests at a time; retry in a few seconds"
                ),
                retry_after_secs: 5,
            });
        }
        tenants.insert(tenant_id.to_owned());
        Ok(Slot {
            tenants: Arc::clone(&self.tenants),
            tenant_id: tenant_id.to_owned(),
        })
    }
}

/// The error of a backtest whose blocking task ended without an answer.
fn lost(err: tokio::task::JoinError) -> FlowError {
    FlowError::Unavailable(format!("the backtest was lost: {err}"))
}

/// A backtest's checked bounds.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    days: u32,
    most: u64,
    budget: Duration,
}

fn bounds(
    days: Option<u32>,
    most: Option<u32>,
    budget_ms: Option<u64>,
) -> Result<Bounds, FlowError> {
    let days = days.unwrap_or(DEFAULT_DAYS);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(FlowError::invalid(
            "days",
            format!("must be between 1 and {MAX_DAYS}"),
        ));
    }
    let most = most.unwrap_or(DEFAULT_VERIFICATIONS);
    if !(1..=MAX_VERIFICATIONS).contains(&most) {
        return Err(FlowError::invalid(
            "max_verifications",
            format!("must be between 1 and {MAX_VERIFICATIONS}"),
        ));
    }
    let budget = budget_ms.unwrap_or(DEFAULT_BUDGET_MS);
    if !(MIN_BUDGET_MS..=MAX_BUDGET_MS).contains(&budget) {
        return Err(FlowError::invalid(
            "time_budget_ms",
            format!("must be between {MIN_BUDGET_MS} and {MAX_BUDGET_MS}"),
        ));
    }
    Ok(Bounds {
        days,
        most: u64::from(most),
        budget: Duration::from_millis(budget),
    })
}

/// The runs a candidate stands in for.
#[derive(Debug, Clone)]
enum Replaced {
    /// Every declarative rule.
    Workflows,
    /// The plugin of this id.
    Plugin(String),
}

impl Replaced {
    fn covers(&self, run: &RuleRun) -> bool {
        match self {
            Replaced::Workflows => run.source == RuleSource::Workflow,
            Replaced::Plugin(id) => run.source == RuleSource::Plugin && &run.plugin_id == id,
        }
    }
}

/// What replaying needs, shared by the threads of a backtest.
struct Context {
    registry: Arc<Registry>,
    candidate: TenantLive,
    replaced: Replaced,
    orders: Orders,
    settings: Arc<PhoneSettings>,
}

/// One verification replayed: the comparison and the candidate's runs that acted or
/// failed.
struct Replayed {
    compared: Compared,
    fresh: Vec<(Trigger, RuleRun)>,
    id: String,
    created_at: DateTime<Utc>,
}

impl Context {
    /// Replays `stored` under the baseline and the candidate.
    async fn replay(&self, mut stored: Verification) -> Result<Replayed, FlowError> {
        let settings = &self.settings;
        let events = std::mem::take(&mut stored.events);
        let (status, code_verified) = (stored.status, stored.otp_verified);
        let (id, created_at) = (stored.id.clone(), stored.created_at);
        strip_rule_effects(&mut stored, &events, settings);
        let mut baseline = Replay::new(stored.clone());
        let mut candidate = Replay::new(stored);
        let mut fresh_runs = Vec::new();
        let mut verified = false;
        for audit in &events {
            let Some(trigger) = Trigger::from_name(&audit.trigger) else {
                continue;
            };
            verified |= trigger == Trigger::OtpVerified && code_verified;
            baseline.apply(trigger, audit, &audit.rules, settings, true)?;
            if candidate.stopped {
                continue;
            }
            let fresh = if self.candidate.has_rules(trigger) {
                let event = candidate.event(trigger, audit, verified);
                self.registry
                    .run_rules(&self.candidate, event, audit.at.timestamp_millis(), None)
                    .await
            } else {
                Vec::new()
            };
            fresh_runs.extend(
                fresh
                    .iter()
                    .filter(|run| !run.actions.is_empty() || run.error.is_some())
                    .map(|run| (trigger, run.clone())),
            );
            let runs = merge(
                &audit.rules,
                &|run| self.replaced.covers(run),
                fresh,
                &self.orders,
            );
            candidate.apply(trigger, audit, &runs, settings, blocks(&audit.rules))?;
        }
        Ok(Replayed {
            compared: compare(status, &baseline, &candidate),
            fresh: fresh_runs,
            id,
            created_at,
        })
    }
}

/// Counts `replayed` into `tally`.
fn note(tally: &mut Tally, replayed: Replayed) {
    let Replayed {
        compared,
        fresh,
        id,
        created_at,
    } = replayed;
    tally.note(&compared, &fresh, |compared| Example {
        verification_id: id,
        created_at,
        recorded_status: compared.recorded_status,
        recorded_verdict: compared.recorded_verdict,
        would_be_status: compared.would_be_status,
        would_be_verdict: compared.would_be_verdict,
        responsible: responsible(&fresh),
        flags_added: compared.flags_added.clone(),
        flags_removed: compared.flags_removed.clone(),
        cases_added: compared.cases_added.clone(),
        cases_removed: compared.cases_removed.clone(),
    });
    tally.reached = Some(created_at);
}

/// Reads the tenant's verifications of the window, newest first, a page at a time.
struct Pages {
    db: Db,
    low: Vec<u8>,
    high: Vec<u8>,
    done: bool,
}

impl Pages {
    fn new(db: Db, tenant_id: &str, from: DateTime<Utc>) -> Self {
        let mut high = key(&[tenant_id, ""]);
        high.push(0xff);
        Self {
            db,
            low: id_bound(tenant_id, from),
            high,
            done: false,
        }
    }

    /// The next page of at most `size` (key, raw record) pairs; empty at the end.
    fn next(&mut self, size: usize) -> Result<Vec<Pair>, FlowError> {
        if self.done || size == 0 {
            return Ok(Vec::new());
        }
        let page =
            self.db
                .scan_range_raw(Tree::Verifications, &self.low, &self.high, size, true)?;
        match page.last() {
            Some((last, _)) if page.len() == size => self.high = last.clone(),
            _ => self.done = true,
        }
        Ok(page)
    }

    /// Why a scan that read no more stopped: `max_verifications` when `scanned`
    /// reached the cap with verifications of the window left, else nothing.
    fn capped(&mut self, scanned: u64, bounds: Bounds) -> Result<Option<&'static str>, FlowError> {
        if scanned < bounds.most || self.next(1)?.is_empty() {
            return Ok(None);
        }
        Ok(Some("max_verifications"))
    }

    fn decode(&self, (key, bytes): &Pair) -> Result<Verification, FlowError> {
        Ok(self.db.decode_raw(Tree::Verifications, key, bytes)?)
    }
}

/// How a scan ended.
struct Scanned {
    tally: Tally,
    stopped: Option<&'static str>,
}

impl Engine {
    /// Backtests a candidate declarative rule set over the tenant's recorded traffic.
    pub async fn backtest_rules(
        self: &Arc<Self>,
        tenant_id: &str,
        request: RulesBacktest,
    ) -> Result<BacktestReport, FlowError> {
        let started = Instant::now();
        let bounds = bounds(
            request.days,
            request.max_verifications,
            request.time_budget_ms,
        )?;
        let drafts = candidate_rules(tenant_id, &request.rules, self.clock.now())?;
        let mut orders = Orders {
            workflows: drafts
                .iter()
                .map(|(rule, _)| (rule.rule_id.clone(), rule.order))
                .collect(),
            ..Orders::default()
        };
        orders.failed_workflows = drafts
            .iter()
            .map(|(rule, _)| rule.order)
            .min()
            .unwrap_or_default();
        orders.plugins = self.plugin_orders(tenant_id)?;
        let described = match drafts.len() {
            1 => "1 declarative rule".to_owned(),
            n => format!("{n} declarative rules"),
        };
        let context = Arc::new(Context {
            registry: Arc::clone(&self.plugins),
            candidate: TenantLive::with_workflows(programs(drafts)),
            replaced: Replaced::Workflows,
            orders,
            settings: self.settings(tenant_id)?,
        });
        let slot = self.replica.backtests.enter(tenant_id)?;
        let to = self.clock.now();
        let from = to - chrono::Duration::days(i64::from(bounds.days));
        let pages = Pages::new(self.db.clone(), tenant_id, from);
        let deadline = started + bounds.budget;
        // The slot goes with the work: a caller that hangs up does not free it while
        // the work runs on to its budget.
        let scanned = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            scan_parallel(&context, pages, bounds, deadline)
        })
        .await
        .map_err(lost)??;
        Ok(report(described, bounds, from, to, scanned, started))
    }

    /// Backtests the uploaded version `request.version` of the rule plugin `id` over
    /// the tenant's recorded traffic.
    pub async fn backtest_plugin(
        &self,
        tenant_id: &str,
        id: &str,
        request: PluginBacktest,
    ) -> Result<BacktestReport, FlowError> {
        let started = Instant::now();
        let bounds = bounds(
            request.days,
            request.max_verifications,
            request.time_budget_ms,
        )?;
        if request.version.is_empty() {
            return Err(FlowError::invalid("version", "is required"));
        }
        let _slot = self.replica.backtests.enter(tenant_id)?;
        let runtime = self.plugins.runtime();
        // The candidate's key-value writes go to a scratch layer over the plugin's
        // data, dropped with this guard.
        let scratch = runtime.data().scratch(tenant_id, id);
        let (rule, triggers) = {
            let registry = Arc::clone(&self.plugins);
            let (tenant, plugin, version) = (tenant_id.to_owned(), id.to_owned(), request.version);
            let scope = scratch.scope().clone();
            // Loading may compile the component: off the request workers.
            tokio::task::spawn_blocking(move || {
                registry.backtest_target(&tenant, &plugin, &version, scope)
            })
            .await
            .map_err(lost)??
        };
        let described = format!("plugin {} {}", rule.name, rule.version);
        let mut orders = Orders {
            plugins: self.plugin_orders(tenant_id)?,
            ..Orders::default()
        };
        orders.plugins.insert(rule.plugin_id.clone(), rule.order);
        orders.workflows = self
            .plugins
            .workflow_rules(tenant_id)?
            .into_iter()
            .map(|rule| (rule.rule_id, rule.order))
            .collect();
        let context = Context {
            registry: Arc::clone(&self.plugins),
            candidate: TenantLive::with_rule(rule, &triggers),
            replaced: Replaced::Plugin(id.to_owned()),
            orders,
            settings: self.settings(tenant_id)?,
        };
        let to = self.clock.now();
        let from = to - chrono::Duration::days(i64::from(bounds.days));
        let mut pages = Pages::new(self.db.clone(), tenant_id, from);
        // The budget is the replay's: loading the candidate (which may compile it) is
        // not charged to it.
        let deadline = Instant::now() + bounds.budget;
        let mut tally = Tally::default();
        let stopped;
        'pages: loop {
            let want = usize::try_from(bounds.most - tally.scanned)
                .unwrap_or(PAGE)
                .min(PAGE);
            let page = pages.next(want)?;
            if page.is_empty() {
                stopped = pages.capped(tally.scanned, bounds)?;
                break;
            }
            for pair in &page {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    stopped = Some("time_budget");
                    break 'pages;
                }
                let stored = pages.decode(pair)?;
                // Each verification's chain takes a slot of the tenant's rule share,
                // as live traffic's does, and is charged the plugin time it used.
                let permit = match runtime.admission().admit(tenant_id, Lane::Rules).await {
                    Ok(permit) => permit,
                    Err(_) => {
                        stopped = Some("overloaded");
                        break 'pages;
                    }
                };
                let replayed = match tokio::time::timeout(left, context.replay(stored)).await {
                    Ok(replayed) => replayed?,
                    Err(_) => {
                        permit.charge(left);
                        stopped = Some("time_budget");
                        break 'pages;
                    }
                };
                let used: u64 = replayed.fresh.iter().map(|(_, run)| run.micros).sum();
                permit.charge(Duration::from_micros(used));
                note(&mut tally, replayed);
            }
        }
        drop(scratch);
        Ok(report(
            described,
            bounds,
            from,
            to,
            Scanned { tally, stopped },
            started,
        ))
    }

    /// The order of each of the tenant's plugins, by id.
    fn plugin_orders(&self, tenant_id: &str) -> Result<HashMap<String, i32>, FlowError> {
        Ok(self
            .plugins
            .list(tenant_id)?
            .into_iter()
            .map(|record| (record.id, record.order))
            .collect())
    }
}

/// The candidate rule set, checked as the rules API checks rules, with the limits of
/// a tenant's rules.
fn candidate_rules(
    tenant_id: &str,
    rules: &[Json],
    now: DateTime<Utc>,
) -> Result<Vec<(workflows::WorkflowRule, workflows::Compiled)>, FlowError> {
    if rules.len() > workflows::MAX_RULES_PER_TENANT {
        return Err(FlowError::invalid(
            "rules",
            format!("may list at most {} rules", workflows::MAX_RULES_PER_TENANT),
        ));
    }
    let drafts = draft_rules(tenant_id, rules, now)?;
    let mut seen = HashSet::new();
    let mut per_trigger: HashMap<Trigger, usize> = HashMap::new();
    for (i, body) in rules.iter().enumerate() {
        if let Some(id) = body.get("rule_id").and_then(Json::as_str) {
            if !seen.insert(id) {
                return Err(FlowError::invalid(
                    format!("rules[{i}].rule_id"),
                    format!("{id:?} is listed twice"),
                ));
            }
        }
    }
    for (rule, _) in &drafts {
        let on_trigger = per_trigger.entry(rule.trigger).or_default();
        *on_trigger += 1;
        if *on_trigger > workflows::MAX_RULES_PER_TRIGGER {
            return Err(FlowError::invalid(
                "rules",
                format!(
                    "{} has more than {} rules",
                    rule.trigger.name(),
                    workflows::MAX_RULES_PER_TRIGGER
                ),
            ));
        }
    }
    Ok(drafts)
}

/// Replays the window's verifications a page at a time, each page split over up to
/// [`MAX_THREADS`] threads; stops at `deadline` or after `bounds.most`.
fn scan_parallel(
    context: &Context,
    mut pages: Pages,
    bounds: Bounds,
    deadline: Instant,
) -> Result<Scanned, FlowError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, MAX_THREADS);
    let mut tally = Tally::default();
    loop {
        if Instant::now() >= deadline {
            return Ok(Scanned {
                tally,
                stopped: Some("time_budget"),
            });
        }
        let want = usize::try_from(bounds.most - tally.scanned)
            .unwrap_or(PAGE)
            .min(PAGE);
        let page = pages.next(want)?;
        if page.is_empty() {
            let stopped = pages.capped(tally.scanned, bounds)?;
            return Ok(Scanned { tally, stopped });
        }
        let chunk = page.len().div_ceil(threads);
        let parts: Vec<Result<(Tally, bool), FlowError>> = std::thread::scope(|scope| {
            let workers: Vec<_> = page
                .chunks(chunk)
                .map(|pairs| {
                    let pages = &pages;
                    scope.spawn(move || -> Result<(Tally, bool), FlowError> {
                        let mut tally = Tally::default();
                        for pair in pairs {
                            if Instant::now() >= deadline {
                                return Ok((tally, true));
                            }
                            let stored = pages.decode(pair)?;
                            // Declarative rules run natively: the future never waits.
                            let replayed = crate::plugins::block_on(context.replay(stored))?;
                            note(&mut tally, replayed);
                        }
                        Ok((tally, false))
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|worker| {
                    worker.join().unwrap_or_else(|_| {
                        Err(FlowError::Unavailable(
                            "a backtest thread failed".to_owned(),
                        ))
                    })
                })
                .collect()
        });
        let mut late = false;
        for part in parts {
            let (part, out_of_time) = part?;
            tally.merge(part);
            late |= out_of_time;
        }
        if late {
            return Ok(Scanned {
                tally,
                stopped: Some("time_budget"),
            });
        }
    }
}

/// The answer.
fn report(
    candidate: String,
    bounds: Bounds,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    scanned: Scanned,
    started: Instant,
) -> BacktestReport {
    let Scanned { mut tally, stopped } = scanned;
    let outcome = |outcome| tally.outcomes.get(&outcome).copied().unwrap_or_default();
    let outcomes = OutcomeCounts {
        unchanged: outcome(Outcome::Unchanged),
        would_decline: outcome(Outcome::WouldDecline),
        would_review: outcome(Outcome::WouldReview),
        would_approve: outcome(Outcome::WouldApprove),
    };
    let mut examples = |outcome| tally.examples.remove(&outcome).unwrap_or_default();
    let examples = ExampleLists {
        would_decline: examples(Outcome::WouldDecline),
        would_review: examples(Outcome::WouldReview),
        would_approve: examples(Outcome::WouldApprove),
    };
    BacktestReport {
        candidate,
        days: bounds.days,
        from,
        to,
        scanned: tally.scanned,
        complete: stopped.is_none(),
        stopped: stopped.map(str::to_owned),
        reached: tally.reached,
        outcomes,
        failures: FailureCounts {
            runs: tally.failures.values().sum(),
            verifications: tally.failed_verifications,
            by_kind: tally.failures,
        },
        flags_added: tally.flags_added,
        flags_removed: tally.flags_removed,
        cases_added: tally.cases_added,
        cases_removed: tally.cases_removed,
        examples,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(err: FlowError) -> String {
        match err {
            FlowError::Invalid { field, .. } => field,
            other => panic!("not a field's error: {other}"),
        }
    }

    #[test]
    fn backtest_bounds_default_and_refuse_naming_the_field() {
        let defaults = bounds(None, None, None).expect("defaults");
        assert_eq!(defaults.days, DEFAULT_DAYS);
        assert_eq!(defaults.most, u64::from(DEFAULT_VERIFICATIONS));
        assert_eq!(defaults.budget, Duration::from_millis(DEFAULT_BUDGET_MS));
        for (days, most, budget, named) in [
            (Some(0), None, None, "days"),
            (Some(MAX_DAYS + 1), None, None, "days"),
            (None, Some(0), None, "max_verifications"),
            (None, Some(MAX_VERIFICATIONS + 1), None, "max_verifications"),
            (None, None, Some(MIN_BUDGET_MS - 1), "time_budget_ms"),
            (None, None, Some(MAX_BUDGET_MS + 1), "time_budget_ms"),
        ] {
            let refused = bounds(days, most, budget).expect_err("refused");
            assert_eq!(field(refused), named);
        }
    }

    #[test]
    fn a_backtest_candidate_is_checked_as_stored_rules_are() {
        let rule = |id: &str| {
            serde_json::json!({
                "rule_id": id, "trigger": "otp_sent",
                "conditions": {"field": "country", "operator": "eq", "value": "GB"},
                "actions": [{"type": "review"}],
            })
        };
        let now = Utc::now();
        assert_eq!(
            candidate_rules("t", &[rule("a"), rule("b")], now)
                .expect("valid")
                .len(),
            2
        );
        let twice = candidate_rules("t", &[rule("a"), rule("a")], now).expect_err("twice");
        assert_eq!(field(twice), "rules[1].rule_id");
        let mut bad = rule("c");
        bad["actions"] = serde_json::json!([{"type": "explode"}]);
        let refused = candidate_rules("t", &[rule("a"), bad], now).expect_err("bad");
        assert_eq!(field(refused), "rules[1].actions[0].type");
        let crowded: Vec<Json> = (0..=workflows::MAX_RULES_PER_TRIGGER)
            .map(|n| rule(&format!("r{n}")))
            .collect();
        assert_eq!(
            field(candidate_rules("t", &crowded, now).expect_err("crowded")),
            "rules"
        );
    }

    #[test]
    fn backtests_run_one_per_tenant_and_a_few_per_server() {
        let running = Running::default();
        let first = running.enter("a").expect("a slot");
        assert!(matches!(
            running.enter("a"),
            Err(FlowError::Conflict {
                code: "backtest_running",
                ..
            })
        ));
        let _second = running.enter("b").expect("another tenant's slot");
        assert!(matches!(
            running.enter("c"),
            Err(FlowError::RateLimited {
                code: "backtests_busy",
                ..
            })
        ));
        drop(first);
        running
            .enter("a")
            .expect("a slot again once the first ended");
    }
}
