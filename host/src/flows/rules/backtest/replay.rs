//! A backtest's replay of one stored verification, and the comparison of what a
//! candidate would have done with what the recorded rules did.
//!
//! A stored verification keeps its audit trail: every trigger that fired, the status
//! then, and every rule's actions or failure. The replay starts from the verification
//! with every rule's effect taken off (decisions, flags, cases, requests, routes, the
//! risk factors rules set and the high-risk warning they raised) and fires the
//! recorded triggers again, in order, applying actions exactly as a live firing does
//! ([`apply_runs`]). It runs twice:
//!
//! - the baseline applies the recorded runs as they are;
//! - the candidate applies the recorded runs of the rules it does not replace, as
//!   recorded (they are not run again), with the candidate's own runs merged in the
//!   chain's run order (by `order`, declarative before code, then name). A `block` the
//!   recorded chain did not have ends the candidate's replay: the verification would
//!   have been declined there.
//!
//! Comparing the two isolates the candidate's effect from anything else that changed
//! since (the tenant's failure setting, say). Nothing of it touches the store.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::flows::rules::triggers::{apply_runs, rule_event, Firing, Trigger};
use crate::flows::verification::verify::settle;
use crate::flows::FlowError;
use crate::model::rules::{RuleAction, RuleEvent, RuleRun, RuleSource};
use crate::model::{AuditEvent, ReportStatus, Verification};
use crate::settings::PhoneSettings;
use crate::warnings::{Risk, RiskAction};

/// The rank of declarative rules among rules of one `order` (code plugins follow),
/// as the registry sorts a chain.
const DECLARATIVE_RANK: u8 = 0;

/// How a verification would have ended under the candidate, against the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The same verdict.
    Unchanged,
    /// Declined where it was not.
    WouldDecline,
    /// Sent to review where it was approved or declined.
    WouldReview,
    /// Approved where it was sent to review or declined.
    WouldApprove,
}

/// Takes every rule's effect off `verification`, whose audit trail is `events`.
pub(crate) fn strip_rule_effects(
    verification: &mut Verification,
    events: &[AuditEvent],
    settings: &PhoneSettings,
) {
    verification.decisions.clear();
    verification.flags.clear();
    verification.cases.clear();
    verification.info_requested.clear();
    verification.otp_required = None;
    verification.route = None;
    verification.avoided_routes.clear();
    let set: HashSet<&str> = events
        .iter()
        .flat_map(|event| &event.rules)
        .flat_map(|run| &run.actions)
        .filter_map(|action| match action {
            RuleAction::SetRisk { factor, .. } => Some(factor.as_str()),
            _ => None,
        })
        .collect();
    if !set.is_empty() {
        verification.risk = verification
            .risk
            .clone()
            .without_factors(|factor| set.contains(factor), &settings.risk_policy());
        // The high-risk warning a rule's score raised (see `apply_runs`).
        verification.warnings.retain(|warning| {
            warning.risk != Risk::HighRiskPhoneNumber
                || !warning
                    .additional_data
                    .as_deref()
                    .is_some_and(|details| details.contains(" after rule "))
        });
    }
}

/// One replay's state.
#[derive(Debug)]
pub(crate) struct Replay {
    pub working: Verification,
    /// A block the recorded chain did not have ended the replay.
    pub stopped: bool,
    /// Case types `create_case` actions opened, in order.
    pub cases: Vec<String>,
    otp_verified: bool,
}

impl Replay {
    /// A replay of `base`, a verification stripped of the rules' effects.
    pub fn new(base: Verification) -> Self {
        Self {
            working: base,
            stopped: false,
            cases: Vec::new(),
            otp_verified: false,
        }
    }

    fn firing<'a>(&'a self, trigger: Trigger, audit: &AuditEvent) -> Firing<'a> {
        Firing {
            trigger,
            stored: true,
            applicant_country: self.working.applicant_country.as_deref(),
            resends: self.working.sends.saturating_sub(1),
            at: audit.at,
        }
    }

    /// The event the rules at `audit` would have seen with this replay's state: the
    /// recorded status, settled by the verdict so far, and the flags and risk so far.
    pub fn event(
        &mut self,
        trigger: Trigger,
        audit: &AuditEvent,
        code_verified: bool,
    ) -> RuleEvent {
        if trigger == Trigger::OtpVerified {
            self.otp_verified = code_verified;
        }
        self.working.otp_verified = self.otp_verified;
        self.working.status = audit.status;
        settle(&mut self.working);
        rule_event(&self.firing(trigger, audit), &self.working)
    }

    /// Applies `runs` at `audit` as a live firing does; a block `recorded_block` does
    /// not account for stops the replay.
    pub fn apply(
        &mut self,
        trigger: Trigger,
        audit: &AuditEvent,
        runs: &[RuleRun],
        settings: &PhoneSettings,
        recorded_block: bool,
    ) -> Result<(), FlowError> {
        let firing = Firing {
            applicant_country: None,
            ..self.firing(trigger, audit)
        };
        let cases = &mut self.cases;
        let fired = apply_runs(&firing, runs, &mut self.working, settings, &mut |case| {
            cases.push(case.case_type.clone());
            Ok(())
        })?;
        if fired.blocked.is_some() && !recorded_block {
            self.stopped = true;
        }
        Ok(())
    }

    /// The verdict so far.
    pub fn verdict(&self) -> RiskAction {
        self.working.verdict()
    }
}

/// Whether `runs` has a `block`.
pub(crate) fn blocks(runs: &[RuleRun]) -> bool {
    runs.iter()
        .flat_map(|run| &run.actions)
        .any(|action| matches!(action, RuleAction::Block { .. }))
}

/// Where each rule runs in a trigger's chain: `order` per rule id (declarative) and
/// per plugin id (code).
#[derive(Debug, Clone, Default)]
pub(crate) struct Orders {
    pub workflows: HashMap<String, i32>,
    pub plugins: HashMap<String, i32>,
    /// Where a failed evaluation of the candidate's declarative rules stands.
    pub failed_workflows: i32,
}

impl Orders {
    /// The run-order key of `run` (as the registry sorts a chain), if known.
    fn key(&self, run: &RuleRun) -> Option<(i32, u8, String)> {
        match run.source {
            RuleSource::Workflow => self
                .workflows
                .get(&run.plugin_id)
                .copied()
                .or((run.plugin_id == "workflow-interpreter").then_some(self.failed_workflows))
                .map(|order| (order, DECLARATIVE_RANK, String::new())),
            RuleSource::Plugin => self
                .plugins
                .get(&run.plugin_id)
                .map(|order| (*order, DECLARATIVE_RANK + 1, run.name.clone())),
        }
    }
}

/// The chain at one firing with the candidate in place: the recorded runs the
/// candidate does not replace, and its `fresh` runs, in run order (a recorded run of
/// a rule no longer known keeps its place after the run before it), ended by the
/// first `block`.
pub(crate) fn merge(
    recorded: &[RuleRun],
    replaced: &dyn Fn(&RuleRun) -> bool,
    fresh: Vec<RuleRun>,
    orders: &Orders,
) -> Vec<RuleRun> {
    let mut keyed: Vec<((i32, u8, String), u8, RuleRun)> =
        Vec::with_capacity(recorded.len() + fresh.len());
    let mut last = (i32::MIN, 0, String::new());
    for run in recorded.iter().filter(|run| !replaced(run)) {
        if let Some(key) = orders.key(run) {
            last = key;
        }
        keyed.push((last.clone(), 0, run.clone()));
    }
    for run in fresh {
        let key = orders
            .key(&run)
            .unwrap_or((i32::MAX, DECLARATIVE_RANK + 1, run.name.clone()));
        keyed.push((key, 1, run));
    }
    // Stable: equal keys keep recorded runs first, each in its own order.
    keyed.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let mut chain = Vec::with_capacity(keyed.len());
    for (_, _, run) in keyed {
        let blocked = blocks(std::slice::from_ref(&run));
        chain.push(run);
        if blocked {
            break;
        }
    }
    chain
}

/// One verification's comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Compared {
    pub outcome: Outcome,
    pub recorded_status: ReportStatus,
    pub recorded_verdict: RiskAction,
    pub would_be_status: ReportStatus,
    pub would_be_verdict: RiskAction,
    pub flags_added: Vec<String>,
    pub flags_removed: Vec<String>,
    pub cases_added: Vec<String>,
    pub cases_removed: Vec<String>,
}

/// What `candidate` changes from `baseline` for a verification stored with
/// `recorded_status`. The would-be status settles the candidate's verdict as the flows
/// do: a decline closes the verification; a review or an approval decides one that
/// finished, and an open one stays open.
pub(crate) fn compare(
    recorded_status: ReportStatus,
    baseline: &Replay,
    candidate: &Replay,
) -> Compared {
    let recorded_verdict = baseline.verdict();
    let would_be_verdict = candidate.verdict();
    let outcome = match would_be_verdict {
        _ if would_be_verdict == recorded_verdict => Outcome::Unchanged,
        RiskAction::Decline => Outcome::WouldDecline,
        RiskAction::Review => Outcome::WouldReview,
        RiskAction::Approve => Outcome::WouldApprove,
    };
    let would_be_status = match outcome {
        Outcome::Unchanged => recorded_status,
        Outcome::WouldDecline => ReportStatus::Declined,
        _ if recorded_status.is_open() => recorded_status,
        Outcome::WouldReview => ReportStatus::InReview,
        Outcome::WouldApprove => ReportStatus::Approved,
    };
    let difference = |ours: &[String], theirs: &[String]| -> Vec<String> {
        let mut left: Vec<&String> = theirs.iter().collect();
        ours.iter()
            .filter(|item| match left.iter().position(|other| other == item) {
                Some(at) => {
                    left.swap_remove(at);
                    false
                }
                None => true,
            })
            .cloned()
            .collect()
    };
    let (before, after) = (&baseline.working.flags, &candidate.working.flags);
    Compared {
        outcome,
        recorded_status,
        recorded_verdict,
        would_be_status,
        would_be_verdict,
        flags_added: difference(after, before),
        flags_removed: difference(before, after),
        cases_added: difference(&candidate.cases, &baseline.cases),
        cases_removed: difference(&baseline.cases, &candidate.cases),
    }
}

/// Distinct flag or case names a backtest counts; the rest count under `(other)`.
pub const MAX_NAMES: usize = 100;
/// Examples a backtest keeps per changed outcome.
pub const MAX_EXAMPLES: usize = 5;

/// One candidate run that acted or failed, for an example.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Responsible {
    /// The trigger it ran at.
    #[schema(value_type = String)]
    pub trigger: Trigger,
    /// The declarative rule's id or the plugin's name.
    pub rule: String,
    pub version: String,
    pub actions: Vec<RuleAction>,
    /// Why it produced no actions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::model::rules::Failure>,
}

/// A verification the candidate would have treated differently.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Example {
    pub verification_id: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Its status as stored.
    pub recorded_status: ReportStatus,
    /// The verdict of the recorded rules (and the warnings).
    pub recorded_verdict: RiskAction,
    pub would_be_status: ReportStatus,
    pub would_be_verdict: RiskAction,
    /// The candidate's runs that acted or failed.
    pub responsible: Vec<Responsible>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flags_added: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flags_removed: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cases_added: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cases_removed: Vec<String>,
}

/// The counts of one backtest (or of a part of it, merged in order).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Tally {
    pub scanned: u64,
    pub outcomes: BTreeMap<Outcome, u64>,
    pub flags_added: BTreeMap<String, u64>,
    pub flags_removed: BTreeMap<String, u64>,
    pub cases_added: BTreeMap<String, u64>,
    pub cases_removed: BTreeMap<String, u64>,
    /// Candidate runs that failed, by failure kind.
    pub failures: BTreeMap<String, u64>,
    /// Verifications where a candidate run failed.
    pub failed_verifications: u64,
    pub examples: BTreeMap<Outcome, Vec<Example>>,
    /// The oldest verification replayed.
    pub reached: Option<chrono::DateTime<chrono::Utc>>,
}

fn count(names: &mut BTreeMap<String, u64>, name: &str, by: u64) {
    if let Some(n) = names.get_mut(name) {
        *n += by;
    } else if names.len() < MAX_NAMES {
        names.insert(name.to_owned(), by);
    } else {
        *names.entry("(other)".to_owned()).or_default() += by;
    }
}

impl Tally {
    /// Counts one replayed verification; `example` builds its example if one is kept.
    pub fn note(
        &mut self,
        compared: &Compared,
        fresh: &[(Trigger, RuleRun)],
        example: impl FnOnce(&Compared) -> Example,
    ) {
        self.scanned += 1;
        *self.outcomes.entry(compared.outcome).or_default() += 1;
        for (names, items) in [
            (&mut self.flags_added, &compared.flags_added),
            (&mut self.flags_removed, &compared.flags_removed),
            (&mut self.cases_added, &compared.cases_added),
            (&mut self.cases_removed, &compared.cases_removed),
        ] {
            for item in items {
                count(names, item, 1);
            }
        }
        let mut failed = false;
        for (_, run) in fresh {
            if let Some(failure) = &run.error {
                count(&mut self.failures, failure.kind(), 1);
                failed = true;
            }
        }
        self.failed_verifications += u64::from(failed);
        if compared.outcome != Outcome::Unchanged {
            let kept = self.examples.entry(compared.outcome).or_default();
            if kept.len() < MAX_EXAMPLES {
                kept.push(example(compared));
            }
        }
    }

    /// Adds `later` (the counts of verifications after these, newest first).
    pub fn merge(&mut self, later: Tally) {
        self.scanned += later.scanned;
        for (outcome, n) in later.outcomes {
            *self.outcomes.entry(outcome).or_default() += n;
        }
        for (ours, theirs) in [
            (&mut self.flags_added, later.flags_added),
            (&mut self.flags_removed, later.flags_removed),
            (&mut self.cases_added, later.cases_added),
            (&mut self.cases_removed, later.cases_removed),
            (&mut self.failures, later.failures),
        ] {
            for (name, n) in theirs {
                count(ours, &name, n);
            }
        }
        self.failed_verifications += later.failed_verifications;
        for (outcome, examples) in later.examples {
            let kept = self.examples.entry(outcome).or_default();
            let room = MAX_EXAMPLES.saturating_sub(kept.len());
            kept.extend(examples.into_iter().take(room));
        }
        if later.reached.is_some() {
            self.reached = later.reached;
        }
    }
}

/// The responsible runs of an example: the candidate's runs that acted or failed.
pub(crate) fn responsible(fresh: &[(Trigger, RuleRun)]) -> Vec<Responsible> {
    fresh
        .iter()
        .filter(|(_, run)| !run.actions.is_empty() || run.error.is_some())
        .map(|(trigger, run)| Responsible {
            trigger: *trigger,
            rule: run.name.clone(),
            version: run.version.clone(),
            actions: run.actions.clone(),
            error: run.error.clone(),
        })
        .collect()
}

#[cfg(test)]
#[path = "replay_tests.rs"]
mod tests;
