//! Trigger points: where the flows hand control to tenant programming.
//!
//! [`Engine::fire`] builds the trigger's event from the verification as it stands,
//! runs the tenant's rules bound to the trigger (in their order, each in its own
//! sandboxed instance), applies what they ask for to the verification, and records
//! the firing with every rule's actions or failure on the audit trail
//! (`GET /v1/verifications/{id}/events`).
//!
//! How actions apply:
//! - `decline`, `review`, `approve` are decisions; the verdict is the strongest of them
//!   and of the warnings: decline over review over approve. `approve` never overrides
//!   a warning or another rule.
//! - `block` declines at once and stops the flow: later rules at the trigger do not
//!   run, no code is sent.
//! - `add_flag`, `set_risk` (the score and level are recomputed; a score reaching the
//!   high threshold raises `HIGH_RISK_PHONE_NUMBER`), `create_case`, `request_info`
//!   and `route` are recorded on the verification and shown on its report. A `route`
//!   value names the provider to try first; `!name` forbids that provider instead.
//! - `send_otp` requires a code: a lookup that would decide without one leaves the
//!   verification open; before a send, it sets the channel.
//! - A rule that fails (trap, breached limit, malformed output, its own error) is
//!   recorded, and the tenant's `on_plugin_failure` setting decides: `continue` (fail
//!   open), `review`, or `decline` (fail closed). So is a rule the host did not run
//!   because of load (`overloaded`: no slot of the tenant's share within the bounded
//!   wait, or its plugin CPU budget used up): it is never silently skipped.
//!
//! A firing takes one slot of the tenant's rule share for its whole chain (the rules
//! run one after another), and waits for the chain at most the sum of its calls'
//! deadlines and a grace second; a chain still running then is abandoned (its
//! deadlines stop it), recorded as timed out, and its slot returned.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::rules::{FactorView, PhoneView, RuleAction, RuleEvent, Snapshot};
use crate::model::rules::{RuleRun, RuleSource};
use crate::model::Case;
use crate::model::{AuditEvent, CaseRef, Channel, Decision, LineSignals, Verification};
use crate::phone::risk::FactorHit;
use crate::plugins::registry::TenantLive;
use crate::plugins::{Failure, Lane};
use crate::settings::{PhoneSettings, PluginFailure};
use crate::store::{key, Tree};
use crate::warnings::{Risk, RiskAction, Warning};

use crate::flows::{Engine, FlowError};

/// The trigger points of the flows; the names are shared with plugins through the SDK.
pub use dialgate_sdk::Trigger;

/// What a firing tells the flow beyond the changes made to the verification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fired {
    /// A rule blocked the flow, with this reason.
    pub blocked: Option<String>,
    /// A rule required a code on this channel.
    pub otp_channel: Option<Channel>,
}

/// Context of one firing.
#[derive(Debug, Clone, Copy)]
pub struct Firing<'a> {
    pub trigger: Trigger,
    /// Whether the verification is (or will be) stored, so its id means something.
    pub stored: bool,
    pub applicant_country: Option<&'a str>,
    /// Resends in the last 24 hours, for the event.
    pub resends: u32,
    pub at: DateTime<Utc>,
}

impl Engine {
    /// Fires a trigger for `verification`: runs the tenant's rules, applies their
    /// actions to it, and notes the firing in `trail` (which the flow stores with the
    /// verification in the write it makes anyway).
    pub(crate) async fn fire(
        &self,
        trail: &mut Vec<AuditEvent>,
        firing: Firing<'_>,
        detail: Option<String>,
        verification: &mut Verification,
        settings: &PhoneSettings,
    ) -> Result<Fired, FlowError> {
        let live = self.plugins.live(&verification.tenant_id);
        let runs = match live {
            Some(live) if live.has_rules(firing.trigger) => {
                let event = rule_event(&firing, verification);
                self.run_rules(live, event, firing.at.timestamp_millis())
                    .await
            }
            _ => {
                // A tenant without rules still counts as active, so the others' CPU
                // budgets apply while it is served.
                self.plugins
                    .runtime()
                    .admission()
                    .note(&verification.tenant_id);
                Vec::new()
            }
        };
        self.count_rule_runs(&verification.tenant_id, firing.at, &runs);
        let fired = self.apply(&firing, &runs, verification, settings)?;
        trail.push(AuditEvent {
            at: firing.at,
            trigger: firing.trigger.name().to_owned(),
            status: verification.status,
            detail,
            rules: runs,
        });
        Ok(fired)
    }

    /// Runs the tenant's rule chain for `event` in a slot of its rule share, or records
    /// every rule plugin of it as not run when no slot is granted.
    ///
    /// The chain runs in this task: plugins are asynchronous calls that yield to the
    /// scheduler at every epoch tick, so a busy plugin shares its worker instead of
    /// holding it, and the wait is bounded here too: past the chain's bound the chain
    /// is dropped, which ends its call and frees its instance at once.
    async fn run_rules(&self, live: Arc<TenantLive>, event: RuleEvent, at: i64) -> Vec<RuleRun> {
        let runtime = self.plugins.runtime();
        let calls = live.rules(event.trigger).len() + 1;
        let bound = runtime.chain_bound(calls);
        let permit = runtime
            .admission()
            .admit(&event.tenant_id, Lane::Rules)
            .await;
        let permit = match permit {
            Ok(permit) => permit,
            // Nothing runs but the host's own evaluator: recording the refusal needs
            // no sandbox.
            Err(failure) => {
                let runs = self
                    .plugins
                    .run_rules(&live, event, at, Some(&failure))
                    .await;
                self.count_not_run(&runs);
                return runs;
            }
        };
        let trigger = event.trigger;
        let chain = self.plugins.run_rules(&live, event, at, None);
        match tokio::time::timeout(bound, chain).await {
            Ok(runs) => {
                // The time the chain's plugins ran, not the time they waited for the
                // scheduler (the host's own declarative evaluation is not charged).
                let ran: u64 = runs
                    .iter()
                    .filter(|run| run.source == RuleSource::Plugin)
                    .map(|run| run.micros)
                    .sum();
                permit.charge(Duration::from_micros(ran));
                runs
            }
            Err(_) => {
                permit.charge(bound);
                let runs = timed_out(&live, trigger, bound);
                self.count_not_run(&runs);
                runs
            }
        }
    }

    /// Counts the failures of rule plugins the runtime never ran or never finished (a
    /// refused slot, a chain past its bound): the runtime counts only calls that end.
    fn count_not_run(&self, runs: &[RuleRun]) {
        for run in runs.iter().filter(|run| run.source == RuleSource::Plugin) {
            if let Some(failure) = &run.error {
                self.metrics.plugin_failure(&run.plugin_id, failure.kind());
            }
        }
    }

    /// Applies the rules' actions and failures to the verification; the cases they
    /// open are stored and announced.
    fn apply(
        &self,
        firing: &Firing<'_>,
        runs: &[RuleRun],
        verification: &mut Verification,
        settings: &PhoneSettings,
    ) -> Result<Fired, FlowError> {
        apply_runs(firing, runs, verification, settings, &mut |case| {
            self.db
                .put(Tree::Cases, &key(&[&case.tenant_id, &case.id]), case)?;
            self.emit_case(crate::webhooks::EventType::CaseCreated, case);
            Ok(())
        })
    }

    /// What the tenant's lookup adapter knows about `e164`; empty when the tenant has
    /// none. A failing adapter is recorded in `error`, and the flow goes on without it.
    pub(crate) async fn line_signals(
        &self,
        tenant_id: &str,
        settings: &PhoneSettings,
        e164: &str,
    ) -> LineSignals {
        let (name, found) = match self.intelligence(tenant_id, e164).await {
            Intel::NoAdapter => return LineSignals::default(),
            Intel::Unconfigured { adapter, missing } => {
                let why = format!(
                    "the lookup adapter {adapter} is not used until it is configured: it lacks {}",
                    missing.join(", ")
                );
                return LineSignals {
                    source: Some(adapter),
                    error: Some(why),
                    ..LineSignals::default()
                };
            }
            Intel::Failed { adapter, why } => {
                return LineSignals {
                    source: Some(adapter),
                    error: Some(why),
                    ..LineSignals::default()
                }
            }
            Intel::Found { adapter, found } => (adapter, found),
        };
        let now = self.clock.now();
        let days_since = |millis: i64| {
            let days = (now.timestamp_millis() - millis).max(0) / 86_400_000;
            u32::try_from(days).unwrap_or(u32::MAX)
        };
        let mut line = LineSignals {
            source: Some(name),
            ..LineSignals::default()
        };
        line.current_carrier = found.carrier_name;
        line.line_status = found.line_status;
        line.roaming = found.roaming;
        line.prepaid = found.prepaid;
        if let Some(last) = found.porting_history.last() {
            line.ported = Some(true);
            line.ported_days_ago = Some(days_since(last.at_millis));
        }
        if settings.sim_swap_check {
            if let Some(millis) = found.last_sim_change_millis {
                line.sim_swap_days_ago = Some(days_since(millis));
                line.last_sim_change = DateTime::<Utc>::from_timestamp_millis(millis);
            }
        }
        line
    }

    /// Asks the tenant's lookup adapter about `e164`.
    pub(crate) async fn intelligence(&self, tenant_id: &str, e164: &str) -> Intel {
        let Some(live) = self.plugins.live(tenant_id) else {
            return Intel::NoAdapter;
        };
        let Some(adapter) = live.lookup() else {
            return Intel::NoAdapter;
        };
        // A first-party adapter installed with placeholder configuration is never
        // called: the line is analysed without it, and the report says why.
        let missing = self.missing_config(adapter, &adapter.call.config, &adapter.call.secrets);
        if !missing.is_empty() {
            return Intel::Unconfigured {
                adapter: adapter.name.clone(),
                missing,
            };
        }
        let now = self.clock.now();
        let scope = crate::plugins::Scope {
            tenant_id: tenant_id.to_owned(),
            plugin_id: adapter.plugin_id.clone(),
        };
        let (_, answer) = self
            .plugins
            .runtime()
            .invoke_lookup(
                &adapter.loaded,
                &scope,
                now.timestamp_millis(),
                adapter.call.clone(),
                e164,
            )
            .await;
        match answer {
            Ok(found) => Intel::Found {
                adapter: adapter.name.clone(),
                found,
            },
            Err(failure) => {
                tracing::warn!(
                    tenant = tenant_id,
                    adapter = adapter.name,
                    "lookup adapter failed: {failure}"
                );
                Intel::Failed {
                    adapter: adapter.name.clone(),
                    why: failure.to_string(),
                }
            }
        }
    }
}

/// What asking the tenant's lookup adapter came to.
pub(crate) enum Intel {
    /// The tenant has no lookup adapter.
    NoAdapter,
    /// It has one that lacks these settings or secrets, and is not called.
    Unconfigured {
        adapter: String,
        missing: Vec<String>,
    },
    /// It has one, which failed, and why.
    Failed { adapter: String, why: String },
    /// It answered.
    Found {
        adapter: String,
        found: crate::plugins::Intelligence,
    },
}

/// What a chain that ran past `bound` records: each of its rule plugins timed out (a
/// chain of declarative rules alone, which the host evaluates under its own bounds,
/// records the runtime as timed out).
fn timed_out(live: &TenantLive, trigger: Trigger, bound: std::time::Duration) -> Vec<RuleRun> {
    let ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
    let failure = Failure::Timeout { ms };
    let runs = crate::plugins::registry::Registry::chain_failed(live, trigger, &failure);
    if !runs.is_empty() {
        return runs;
    }
    vec![RuleRun {
        source: RuleSource::Plugin,
        plugin_id: String::new(),
        name: "(plugin runtime)".to_owned(),
        version: String::new(),
        actions: Vec::new(),
        error: Some(failure),
        fuel: 0,
        micros: ms.saturating_mul(1_000),
    }]
}

/// Applies the rules' actions and failures at `firing` to the verification (see the
/// module's documentation): what live firings and backtests share. `open_case` is
/// given every case a `create_case` action opens, before the verification refers to
/// it.
pub(crate) fn apply_runs(
    firing: &Firing<'_>,
    runs: &[RuleRun],
    verification: &mut Verification,
    settings: &PhoneSettings,
    open_case: &mut dyn FnMut(&Case) -> Result<(), FlowError>,
) -> Result<Fired, FlowError> {
    let mut fired = Fired::default();
    let trigger = firing.trigger.name();
    for run in runs {
        let decide = |verification: &mut Verification, action, reason: Option<String>| {
            verification.decisions.push(Decision {
                action,
                reason,
                plugin: run.name.clone(),
                trigger: trigger.to_owned(),
            });
        };
        if let Some(error) = &run.error {
            let action = match settings.on_plugin_failure {
                PluginFailure::Continue => None,
                PluginFailure::Review => Some(RiskAction::Review),
                PluginFailure::Decline => Some(RiskAction::Decline),
            };
            if let Some(action) = action {
                decide(
                    verification,
                    action,
                    Some(format!("rule {} failed: {error}", run.name)),
                );
            }
            continue;
        }
        for action in &run.actions {
            match action {
                RuleAction::Approve => decide(verification, RiskAction::Approve, None),
                RuleAction::Review => decide(verification, RiskAction::Review, None),
                RuleAction::Decline { reason } => {
                    decide(verification, RiskAction::Decline, Some(reason.clone()));
                }
                RuleAction::Block { reason } => {
                    decide(verification, RiskAction::Decline, Some(reason.clone()));
                    fired.blocked = Some(reason.clone());
                }
                RuleAction::AddFlag { flag } => {
                    if !verification.flags.contains(flag) {
                        verification.flags.push(flag.clone());
                    }
                }
                RuleAction::SetRisk {
                    factor,
                    contribution,
                    details,
                } => {
                    let policy = settings.risk_policy();
                    verification.risk = verification.risk.clone().with_factor(
                        FactorHit {
                            factor: factor.clone(),
                            contribution: *contribution,
                            details: details.clone(),
                        },
                        &policy,
                    );
                    let high = verification.risk.risk_score >= settings.high_risk_threshold;
                    let raised = verification
                        .warnings
                        .iter()
                        .any(|w| w.risk == Risk::HighRiskPhoneNumber);
                    if high && !raised {
                        verification.warnings.push(Warning::new(
                            Risk::HighRiskPhoneNumber,
                            RiskAction::Decline,
                            Some(format!(
                                "risk score {} of 100 after rule {}",
                                verification.risk.risk_score, run.name
                            )),
                        ));
                    }
                }
                RuleAction::CreateCase {
                    case_type,
                    priority,
                    title,
                } => {
                    let case = Case {
                        id: format!("case_{}", uuid::Uuid::new_v4().simple()),
                        tenant_id: verification.tenant_id.clone(),
                        verification_id: firing.stored.then(|| verification.id.clone()),
                        phone: verification.phone.e164.clone(),
                        applicant_id: verification.applicant_id.clone(),
                        case_type: case_type.clone(),
                        priority: priority.clone(),
                        title: title.clone(),
                        status: crate::model::CaseStatus::Open,
                        flags: verification.flags.clone(),
                        opened_by: run.name.clone(),
                        created_at: firing.at,
                        ..Case::default()
                    };
                    open_case(&case)?;
                    verification.cases.push(CaseRef {
                        case_id: case.id,
                        case_type: case.case_type,
                        priority: case.priority,
                        title: case.title,
                    });
                }
                RuleAction::RequestInfo { info_needed } => {
                    if !verification.info_requested.contains(info_needed) {
                        verification.info_requested.push(info_needed.clone());
                    }
                }
                RuleAction::SendOtp { channel } => {
                    verification.otp_required = Some(*channel);
                    fired.otp_channel = Some(*channel);
                }
                RuleAction::Route { provider } => match provider.strip_prefix('!') {
                    Some(avoided) => {
                        if !verification.avoided_routes.iter().any(|a| a == avoided) {
                            verification.avoided_routes.push(avoided.to_owned());
                        }
                    }
                    None => verification.route = Some(provider.clone()),
                },
            }
        }
        if fired.blocked.is_some() {
            break;
        }
    }
    Ok(fired)
}

/// The event rules see for `verification` at this firing.
pub(crate) fn rule_event(firing: &Firing<'_>, verification: &Verification) -> RuleEvent {
    let phone = &verification.phone;
    RuleEvent {
        trigger: firing.trigger,
        tenant_id: verification.tenant_id.clone(),
        verification: Snapshot {
            id: firing.stored.then(|| verification.id.clone()),
            status: verification.status,
            channel: verification.channel,
            attempts: verification.code.attempts,
            resends: firing.resends,
            flags: verification.flags.clone(),
            otp_verified: verification.otp_verified,
        },
        phone: PhoneView {
            e164: phone.e164.clone(),
            line_type: phone.line_type.as_str().to_owned(),
            carrier_type: Some(phone.line_type.carrier_type().to_owned()),
            country: phone.region.clone(),
            carrier_name: phone
                .line
                .current_carrier
                .clone()
                .or_else(|| phone.carrier_name.clone()),
            carrier_is_original: phone.line.current_carrier.is_none()
                && phone.carrier_name.is_some(),
            risk_score: verification.risk.risk_score,
            risk_level: verification.risk.risk_level.as_str().to_owned(),
            risk_factors: verification
                .risk
                .factors
                .iter()
                .map(|hit| FactorView {
                    factor: hit.factor.clone(),
                    contribution: hit.contribution,
                    details: hit.details.clone(),
                })
                .collect(),
            ported: phone.line.ported,
            ported_days_ago: phone.line.ported_days_ago,
            sim_swap_days_ago: phone.line.sim_swap_days_ago,
            line_status: phone.line.line_status.clone(),
            roaming: phone.line.roaming,
        },
        applicant_id: verification.applicant_id.clone(),
        applicant_country: firing.applicant_country.map(str::to_owned),
        config: Default::default(),
        fraud: verification.fraud.clone(),
    }
}
