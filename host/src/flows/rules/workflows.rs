//! Declarative workflow rules as a product: create, list, get, replace, delete,
//! enable and disable, reorder, and test them. A change is written under the
//! registry's change lock and the tenant's live snapshot is rebuilt before the call
//! returns, so the next request runs the new rules.

use std::collections::HashSet;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::model::rules::{RuleAction, RuleEvent, Trigger};
use crate::plugins::registry::{LiveProgram, LiveWorkflow, RegistryError};
use crate::plugins::{Failure, Usage};
use crate::store::{key, Tree};
use crate::workflows::eval::CompiledProgram;
use crate::workflows::{self, check_rule_id, Definition, WorkflowRule};

use crate::flows::rules::triggers::{rule_event, Firing};
use crate::flows::{Engine, FlowError};

impl From<RegistryError> for FlowError {
    fn from(err: RegistryError) -> Self {
        match err {
            RegistryError::Store(err) => FlowError::Store(err),
            RegistryError::Invalid { field, message } => FlowError::Invalid { field, message },
            RegistryError::NotFound => FlowError::NotFound("plugin"),
            other => FlowError::Unavailable(other.to_string()),
        }
    }
}

/// `PUT /v1/workflows/rules/order`: the rules of one trigger, in their new order.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reorder {
    /// A trigger's name (see `GET /v1/workflows/fields`).
    #[schema(value_type = String)]
    pub trigger: Trigger,
    pub rule_ids: Vec<String>,
}

/// `POST /v1/workflows/rules/test`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    /// The event to evaluate…
    #[serde(default)]
    pub event: Option<Json>,
    /// …or a number to look up (without sending or storing anything) to build it.
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub applicant_id: Option<String>,
    #[serde(default)]
    pub applicant_country: Option<String>,
    /// The trigger, with `phone` (default `phone_lookup_complete`); with `event`, the
    /// event's own.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub trigger: Option<Trigger>,
    /// Draft rules to test instead of the tenant's stored rules of the trigger.
    #[serde(default)]
    pub rules: Option<Vec<Json>>,
}

/// One condition's outcome in a test.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConditionTrace {
    /// Where the node is, what it is, and the value it compares with.
    #[serde(flatten)]
    pub node: workflows::NodeInfo,
    /// The field's value in the event (`null` when unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<Json>,
    pub matched: bool,
}

/// One rule's outcome in a test.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RuleTrace {
    pub rule_id: String,
    pub enabled: bool,
    pub order: i32,
    pub matched: bool,
    pub actions: Vec<RuleAction>,
    pub conditions: Vec<ConditionTrace>,
}

/// What `POST /v1/workflows/rules/test` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TestReport {
    #[schema(value_type = String)]
    pub trigger: Trigger,
    #[schema(value_type = Object)]
    pub event: RuleEvent,
    pub rules: Vec<RuleTrace>,
    /// The enabled rules that matched, in run order.
    pub matched: Vec<String>,
    /// Their actions in run order, as the host would apply them (a `block` ends the
    /// list).
    pub actions: Vec<RuleAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    pub fuel: u64,
    pub micros: u64,
}

fn rule_key(tenant_id: &str, rule_id: &str) -> Vec<u8> {
    key(&[tenant_id, rule_id])
}

impl Engine {
    /// One rule of the tenant.
    pub fn workflow_rule(&self, tenant_id: &str, rule_id: &str) -> Result<WorkflowRule, FlowError> {
        check_rule_id(rule_id, "rule_id")?;
        self.db
            .get(Tree::WorkflowRules, &rule_key(tenant_id, rule_id))?
            .ok_or(FlowError::NotFound("workflow rule"))
    }

    /// The tenant's rules in run order, optionally of one trigger or enabled state.
    pub fn workflow_rules(
        &self,
        tenant_id: &str,
        trigger: Option<Trigger>,
        enabled: Option<bool>,
    ) -> Result<Vec<WorkflowRule>, FlowError> {
        let mut rules = self.plugins.workflow_rules(tenant_id)?;
        rules.retain(|rule| {
            trigger.is_none_or(|trigger| rule.trigger == trigger)
                && enabled.is_none_or(|enabled| rule.enabled == enabled)
        });
        Ok(rules)
    }

    /// Creates a rule from seed 004's body. The id must be new to the tenant.
    pub fn create_workflow_rule(
        &self,
        tenant_id: &str,
        body: &Json,
    ) -> Result<WorkflowRule, FlowError> {
        let definition = workflows::definition(body, None)?;
        self.plugins.change_workflows(tenant_id, || {
            let existing = self.plugins.workflow_rules(tenant_id)?;
            if existing.iter().any(|rule| rule.rule_id == definition.rule_id) {
                return Err(FlowError::Conflict {
                    code: "rule_exists",
                    message: format!(
                        "a workflow rule named {:?} exists; replace it with PUT /v1/workflows/rules/{}",
                        definition.rule_id, definition.rule_id
                    ),
                });
            }
            check_capacity(&existing, &definition, None)?;
            let now = self.clock.now();
            // A new rule runs after the trigger's others unless it says otherwise.
            let order = definition.order.unwrap_or_else(|| {
                existing
                    .iter()
                    .filter(|rule| rule.trigger == definition.trigger)
                    .map(|rule| rule.order.saturating_add(1))
                    .max()
                    .unwrap_or(DEFAULT_ORDER)
            });
            let rule = WorkflowRule {
                rule_id: definition.rule_id.clone(),
                tenant_id: tenant_id.to_owned(),
                trigger: definition.trigger,
                conditions: definition.conditions.clone(),
                actions: definition.actions.clone(),
                enabled: definition.enabled.unwrap_or(true),
                order,
                description: definition.description.clone(),
                revision: 1,
                created_at: now,
                updated_at: now,
            };
            self.db
                .put(Tree::WorkflowRules, &rule_key(tenant_id, &rule.rule_id), &rule)?;
            Ok(rule)
        })
    }

    /// Replaces a rule's trigger, conditions and actions (and, when given, enabled
    /// state, order and description); counts a revision.
    pub fn replace_workflow_rule(
        &self,
        tenant_id: &str,
        rule_id: &str,
        body: &Json,
    ) -> Result<WorkflowRule, FlowError> {
        check_rule_id(rule_id, "rule_id")?;
        let definition = workflows::definition(body, Some(rule_id))?;
        self.plugins.change_workflows(tenant_id, || {
            let current = self.workflow_rule(tenant_id, rule_id)?;
            let existing = self.plugins.workflow_rules(tenant_id)?;
            check_capacity(&existing, &definition, Some(rule_id))?;
            let rule = WorkflowRule {
                trigger: definition.trigger,
                conditions: definition.conditions.clone(),
                actions: definition.actions.clone(),
                enabled: definition.enabled.unwrap_or(current.enabled),
                order: definition.order.unwrap_or(current.order),
                description: definition.description.clone().or(current.description),
                revision: current.revision.saturating_add(1),
                updated_at: self.clock.now(),
                ..current
            };
            self.db
                .put(Tree::WorkflowRules, &rule_key(tenant_id, rule_id), &rule)?;
            Ok(rule)
        })
    }

    /// Deletes a rule.
    pub fn delete_workflow_rule(&self, tenant_id: &str, rule_id: &str) -> Result<(), FlowError> {
        check_rule_id(rule_id, "rule_id")?;
        self.plugins.change_workflows(tenant_id, || {
            if !self
                .db
                .remove(Tree::WorkflowRules, &rule_key(tenant_id, rule_id))?
            {
                return Err(FlowError::NotFound("workflow rule"));
            }
            Ok(())
        })
    }

    /// Enables or disables a rule.
    pub fn enable_workflow_rule(
        &self,
        tenant_id: &str,
        rule_id: &str,
        enabled: bool,
    ) -> Result<WorkflowRule, FlowError> {
        self.plugins.change_workflows(tenant_id, || {
            let mut rule = self.workflow_rule(tenant_id, rule_id)?;
            if rule.enabled != enabled {
                rule.enabled = enabled;
                rule.updated_at = self.clock.now();
                self.db
                    .put(Tree::WorkflowRules, &rule_key(tenant_id, rule_id), &rule)?;
            }
            Ok(rule)
        })
    }

    /// Puts the rules of one trigger in the given order. `rule_ids` must name every
    /// rule of the trigger once; they keep the block of orders they had (the lowest
    /// of them, then one apart), so code plugins keep their place around them.
    pub fn reorder_workflow_rules(
        &self,
        tenant_id: &str,
        reorder: &Reorder,
    ) -> Result<Vec<WorkflowRule>, FlowError> {
        self.plugins.change_workflows(tenant_id, || {
            let current = self.workflow_rules(tenant_id, Some(reorder.trigger), None)?;
            let mut seen = HashSet::new();
            for (i, id) in reorder.rule_ids.iter().enumerate() {
                if !seen.insert(id.as_str()) {
                    return Err(FlowError::invalid(
                        format!("rule_ids[{i}]"),
                        format!("{id:?} is listed twice"),
                    ));
                }
                if !current.iter().any(|rule| &rule.rule_id == id) {
                    return Err(FlowError::invalid(
                        format!("rule_ids[{i}]"),
                        format!("{id:?} is not a rule of {}", reorder.trigger.name()),
                    ));
                }
            }
            if let Some(missing) = current
                .iter()
                .find(|rule| !seen.contains(rule.rule_id.as_str()))
            {
                return Err(FlowError::invalid(
                    "rule_ids",
                    format!(
                        "must list every rule of {}; {:?} is missing",
                        reorder.trigger.name(),
                        missing.rule_id
                    ),
                ));
            }
            let base = current
                .iter()
                .map(|rule| rule.order)
                .min()
                .unwrap_or(DEFAULT_ORDER);
            let now = self.clock.now();
            let mut reordered = Vec::with_capacity(current.len());
            for (position, id) in reorder.rule_ids.iter().enumerate() {
                let mut rule = current
                    .iter()
                    .find(|rule| &rule.rule_id == id)
                    .cloned()
                    .ok_or(FlowError::NotFound("workflow rule"))?;
                let order = base.saturating_add(i32::try_from(position).unwrap_or(i32::MAX));
                if rule.order != order {
                    rule.order = order;
                    rule.updated_at = now;
                    self.db
                        .put(Tree::WorkflowRules, &rule_key(tenant_id, id), &rule)?;
                }
                reordered.push(rule);
            }
            Ok(reordered)
        })
    }

    /// Evaluates rules on an event (given, or built by looking a number up) in the
    /// sandbox, explaining every condition; applies and stores nothing.
    pub async fn test_workflow_rules(
        &self,
        tenant_id: &str,
        request: TestRequest,
    ) -> Result<TestReport, FlowError> {
        let event = match (&request.event, &request.phone) {
            (Some(_), Some(_)) => {
                return Err(FlowError::invalid(
                    "phone",
                    "give either an event or a phone number, not both",
                ))
            }
            (None, None) => {
                return Err(FlowError::invalid(
                    "event",
                    "give an event, or a phone number to look up",
                ))
            }
            (Some(event), None) => {
                let mut event: RuleEvent =
                    serde_path_to_error::deserialize(event).map_err(|err| {
                        FlowError::invalid(format!("event.{}", err.path()), err.inner().to_string())
                    })?;
                if let Some(trigger) = request.trigger {
                    event.trigger = trigger;
                }
                event.tenant_id = tenant_id.to_owned();
                event.config.clear();
                event
            }
            (None, Some(phone)) => {
                self.event_for_number(
                    tenant_id,
                    phone,
                    request.applicant_id.as_deref(),
                    request.applicant_country.as_deref(),
                    request.trigger.unwrap_or(Trigger::PhoneLookupComplete),
                )
                .await?
            }
        };
        let rules: Vec<(WorkflowRule, workflows::Compiled)> = match &request.rules {
            Some(drafts) => {
                if drafts.is_empty() || drafts.len() > workflows::MAX_RULES_PER_TRIGGER {
                    return Err(FlowError::invalid(
                        "rules",
                        format!(
                            "must list between 1 and {} rules",
                            workflows::MAX_RULES_PER_TRIGGER
                        ),
                    ));
                }
                let mut drafts = draft_rules(tenant_id, drafts, self.clock.now())?;
                drafts.retain(|(rule, _)| rule.trigger == event.trigger);
                drafts
            }
            None => self
                .workflow_rules(tenant_id, Some(event.trigger), None)?
                .into_iter()
                .filter_map(|rule| {
                    let compiled = workflows::compile(&rule.conditions).ok()?;
                    Some((rule, compiled))
                })
                .collect(),
        };
        let mut program = dialgate_sdk::workflow::Program::default();
        let mut live = LiveProgram::default();
        for (rule, compiled) in &rules {
            program.rules.push(compiled.condition.clone());
            live.rules.push(LiveWorkflow {
                rule_id: rule.rule_id.clone(),
                revision: rule.revision,
                order: rule.order,
                actions: rule.actions.clone(),
                nodes: compiled.nodes.clone(),
            });
        }
        live.program = CompiledProgram::new(program);
        let registry = std::sync::Arc::clone(&self.plugins);
        let evaluated = event.clone();
        let (usage, result) = if rules.is_empty() {
            (Usage::default(), Ok(None))
        } else {
            // Bounded, but explaining up to a hundred rules is not a request worker's
            // job.
            tokio::task::spawn_blocking(move || {
                let (usage, result) = registry.evaluate(&live, &evaluated, true);
                (usage, result.map(Some))
            })
            .await
            .map_err(|err| FlowError::Unavailable(format!("the rule test was lost: {err}")))?
        };
        let (evaluation, error) = match result {
            Ok(evaluation) => (evaluation, None),
            Err(failure) => (None, Some(failure)),
        };
        let mut traces: Vec<RuleTrace> = rules
            .iter()
            .map(|(rule, compiled)| RuleTrace {
                rule_id: rule.rule_id.clone(),
                enabled: rule.enabled,
                order: rule.order,
                matched: false,
                actions: rule.actions.clone(),
                conditions: compiled
                    .nodes
                    .iter()
                    .map(|node| ConditionTrace {
                        node: node.clone(),
                        actual: None,
                        matched: false,
                    })
                    .collect(),
            })
            .collect();
        if let Some(evaluation) = &evaluation {
            for index in &evaluation.matched {
                if let Some(trace) = traces.get_mut(*index as usize) {
                    trace.matched = true;
                }
            }
            for outcome in &evaluation.explanation {
                let Some(condition) = traces
                    .get_mut(outcome.rule as usize)
                    .and_then(|trace| trace.conditions.get_mut(outcome.node as usize))
                else {
                    continue;
                };
                condition.matched = outcome.matched;
                condition.actual = outcome
                    .value
                    .as_deref()
                    .map(|value| serde_json::from_str(value).unwrap_or(Json::Null));
            }
        }
        let mut matched = Vec::new();
        let mut actions = Vec::new();
        for trace in traces.iter().filter(|trace| trace.matched && trace.enabled) {
            matched.push(trace.rule_id.clone());
            actions.extend(trace.actions.iter().cloned());
            if trace
                .actions
                .iter()
                .any(|action| matches!(action, RuleAction::Block { .. }))
            {
                break;
            }
        }
        Ok(TestReport {
            trigger: event.trigger,
            event,
            rules: traces,
            matched,
            actions,
            error,
            fuel: usage.fuel,
            micros: usage.micros,
        })
    }

    /// The event a trigger would carry for `phone`, looked up as the lookup flow does
    /// (lookup adapters included) but stored nowhere.
    async fn event_for_number(
        &self,
        tenant_id: &str,
        phone: &str,
        applicant_id: Option<&str>,
        applicant_country: Option<&str>,
        trigger: Trigger,
    ) -> Result<RuleEvent, FlowError> {
        let looked = self
            .look_up(tenant_id, phone, applicant_id, applicant_country, None)
            .await?;
        let (settings, analysis) = (looked.settings, looked.analysis);
        let (applicant_id, applicant_country) = (looked.applicant_id, looked.applicant_country);
        let now = self.clock.now();
        let verification =
            analysis.start_verification(tenant_id, applicant_id, settings.max_otp_attempts, now);
        let firing = Firing {
            trigger,
            stored: false,
            applicant_country: applicant_country.as_deref(),
            resends: 0,
            at: now,
        };
        Ok(rule_event(&firing, &verification))
    }
}

/// The order of a trigger's first rule.
const DEFAULT_ORDER: i32 = 100;

/// Draft rules (`drafts`, bodies as a rule's creation takes them; a refusal names
/// the draft, `rules[i].…`) as if stored, in run order within each trigger: by
/// `order`, ties as listed.
pub(crate) fn draft_rules(
    tenant_id: &str,
    drafts: &[Json],
    now: chrono::DateTime<Utc>,
) -> Result<Vec<(WorkflowRule, workflows::Compiled)>, FlowError> {
    let mut rules = drafts
        .iter()
        .enumerate()
        .map(|(i, draft)| {
            let definition = workflows::definition(draft, None).map_err(|err| match err {
                FlowError::Invalid { field, message } => FlowError::Invalid {
                    field: format!("rules[{i}].{field}"),
                    message,
                },
                other => other,
            })?;
            Ok(draft_rule(tenant_id, definition, i, now))
        })
        .collect::<Result<Vec<_>, FlowError>>()?;
    rules.sort_by_key(|(rule, _)| rule.order);
    Ok(rules)
}

/// A draft rule under test, as if stored.
fn draft_rule(
    tenant_id: &str,
    definition: Definition,
    position: usize,
    now: chrono::DateTime<Utc>,
) -> (WorkflowRule, workflows::Compiled) {
    let compiled = definition.compiled;
    let rule = WorkflowRule {
        rule_id: definition.rule_id,
        tenant_id: tenant_id.to_owned(),
        trigger: definition.trigger,
        conditions: definition.conditions,
        actions: definition.actions,
        enabled: definition.enabled.unwrap_or(true),
        order: definition
            .order
            .unwrap_or(DEFAULT_ORDER.saturating_add(i32::try_from(position).unwrap_or(0))),
        description: definition.description,
        revision: 0,
        created_at: now,
        updated_at: now,
    };
    (rule, compiled)
}

/// Refuses a rule that would take the tenant or its trigger past the limits.
fn check_capacity(
    existing: &[WorkflowRule],
    definition: &Definition,
    replacing: Option<&str>,
) -> Result<(), FlowError> {
    let others = existing
        .iter()
        .filter(|rule| Some(rule.rule_id.as_str()) != replacing);
    let (total, on_trigger) = others.fold((0, 0), |(total, on), rule| {
        (
            total + 1,
            on + usize::from(rule.trigger == definition.trigger),
        )
    });
    if total >= workflows::MAX_RULES_PER_TENANT {
        return Err(FlowError::Conflict {
            code: "too_many_rules",
            message: format!(
                "a tenant may have at most {} workflow rules",
                workflows::MAX_RULES_PER_TENANT
            ),
        });
    }
    if on_trigger >= workflows::MAX_RULES_PER_TRIGGER {
        return Err(FlowError::Conflict {
            code: "too_many_rules",
            message: format!(
                "{} already has {} workflow rules",
                definition.trigger.name(),
                workflows::MAX_RULES_PER_TRIGGER
            ),
        });
    }
    Ok(())
}
