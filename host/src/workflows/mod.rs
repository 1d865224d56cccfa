//! Declarative workflow rules: the stored record, and the validation that turns a
//! tenant's JSON (seed 004's `{rule_id, trigger, conditions, actions}`) into a compiled
//! [`Condition`] with the JSON path of every node, refusing anything malformed with an
//! error that names the spot.
//!
//! The language itself (fields, operators, evaluation) lives in
//! `dialgate_sdk::workflow`; [`eval`] runs its bounded evaluator on a trigger's
//! compiled rules, natively.

use chrono::{DateTime, Utc};
use dialgate_sdk::workflow::{
    Condition, Field, FieldType, Operand, Operator, Program, Value, FIELDS, OPERATORS,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::error::FlowError;
use crate::model::rules::{RuleAction, Trigger};
use crate::model::CASE_PRIORITIES;

pub mod eval;

/// Deepest nesting of `all`, `any` and `not` (the root counts as 1).
pub const MAX_DEPTH: usize = 8;
/// Most nodes (groups and comparisons) in one rule's conditions.
pub const MAX_NODES: usize = 64;
/// Most conditions in one `all` or `any`.
pub const MAX_CHILDREN: usize = 32;
/// Most actions of one rule.
pub const MAX_ACTIONS: usize = 16;
/// Longest text literal or action text, in characters.
pub const MAX_TEXT: usize = 500;
/// Most values in an `in` or `not_in` list.
pub const MAX_LIST: usize = 200;
/// Most rules a tenant may bind to one trigger.
pub const MAX_RULES_PER_TRIGGER: usize = 100;
/// Most rules a tenant may have.
pub const MAX_RULES_PER_TENANT: usize = 500;
/// Largest compiled form of one rule's conditions, in bytes. With at most
/// [`MAX_RULES_PER_TRIGGER`] rules, a trigger's program stays under the interpreter's
/// input cap (`plugins::MAX_PROGRAM_BYTES`).
pub const MAX_RULE_BYTES: usize = crate::model::rules::MAX_PROGRAM_BYTES / MAX_RULES_PER_TRIGGER;

/// A tenant's declarative rule, as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkflowRule {
    pub rule_id: String,
    pub tenant_id: String,
    #[schema(value_type = String)]
    pub trigger: Trigger,
    /// The conditions as the tenant wrote them.
    pub conditions: Json,
    pub actions: Vec<RuleAction>,
    pub enabled: bool,
    /// Position among the rules of the trigger (declarative and code alike): lower
    /// runs first.
    pub order: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Counts replacements, from 1.
    pub revision: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A rule body, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub rule_id: String,
    pub trigger: Trigger,
    pub conditions: Json,
    pub compiled: Compiled,
    pub actions: Vec<RuleAction>,
    pub enabled: Option<bool>,
    pub order: Option<i32>,
    pub description: Option<String>,
}

/// A rule's conditions compiled, with a description of every node in the pre-order
/// the interpreter numbers them by.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub condition: Condition,
    pub nodes: Vec<NodeInfo>,
}

/// One node of a rule's conditions, for explaining a match.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct NodeInfo {
    /// Where it is in the rule, e.g. `conditions.all[1]`.
    pub path: String,
    /// `all`, `any`, `not`, or the comparison's operator.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Json>,
}

const RULE_KEYS: &[&str] = &[
    "rule_id",
    "trigger",
    "conditions",
    "actions",
    "enabled",
    "order",
    "description",
];

const ACTION_TYPES: &[&str] = &[
    "approve",
    "review",
    "decline",
    "add_flag",
    "set_risk",
    "create_case",
    "request_info",
    "send_otp",
    "route",
    "block",
];

fn invalid(field: impl Into<String>, message: impl Into<String>) -> FlowError {
    FlowError::invalid(field, message)
}

/// Checks a rule id: 1 to 64 of `a-z A-Z 0-9 _ - .`.
pub fn check_rule_id(id: &str, field: &str) -> Result<(), FlowError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            "must be 1 to 64 letters, digits, `_`, `-` or `.`",
        ))
    }
}

/// Validates a rule body. `path_id`, for a replacement, is the id in the URL: the body
/// may repeat it or leave it out.
pub fn definition(body: &Json, path_id: Option<&str>) -> Result<Definition, FlowError> {
    let object = body
        .as_object()
        .ok_or_else(|| invalid("body", "must be a JSON object"))?;
    if let Some(unknown) = object.keys().find(|key| !RULE_KEYS.contains(&key.as_str())) {
        return Err(invalid(
            unknown.as_str(),
            format!("unknown field; a rule has {}", RULE_KEYS.join(", ")),
        ));
    }
    let rule_id = match (object.get("rule_id"), path_id) {
        (None, Some(id)) => id.to_owned(),
        (None, None) => return Err(invalid("rule_id", "is required")),
        (Some(Json::String(id)), path) => {
            check_rule_id(id, "rule_id")?;
            if let Some(path) = path.filter(|path| path != id) {
                return Err(invalid(
                    "rule_id",
                    format!("is {id:?} but the URL names {path:?}"),
                ));
            }
            id.clone()
        }
        (Some(_), _) => return Err(invalid("rule_id", "must be a string")),
    };
    let trigger = match object.get("trigger") {
        None => return Err(invalid("trigger", "is required")),
        Some(Json::String(name)) => Trigger::from_name(name).ok_or_else(|| {
            invalid(
                "trigger",
                format!(
                    "unknown trigger {name:?}; expected one of {}",
                    Trigger::ALL.map(Trigger::name).join(", ")
                ),
            )
        })?,
        Some(_) => return Err(invalid("trigger", "must be a string")),
    };
    let conditions = object
        .get("conditions")
        .ok_or_else(|| invalid("conditions", "is required"))?;
    let compiled = compile(conditions)?;
    let actions = actions(
        object
            .get("actions")
            .ok_or_else(|| invalid("actions", "is required"))?,
    )?;
    let enabled = match object.get("enabled") {
        None | Some(Json::Null) => None,
        Some(Json::Bool(enabled)) => Some(*enabled),
        Some(_) => return Err(invalid("enabled", "must be true or false")),
    };
    let order = match object.get("order") {
        None | Some(Json::Null) => None,
        Some(value) => Some(
            value
                .as_i64()
                .filter(|order| (-1_000_000..=1_000_000).contains(order))
                .ok_or_else(|| {
                    invalid(
                        "order",
                        "must be a whole number between -1000000 and 1000000",
                    )
                })? as i32,
        ),
    };
    let description = match object.get("description") {
        None | Some(Json::Null) => None,
        Some(Json::String(text)) if text.chars().count() <= MAX_TEXT => Some(text.clone()),
        Some(_) => {
            return Err(invalid(
                "description",
                format!("must be a string of at most {MAX_TEXT} characters"),
            ))
        }
    };
    Ok(Definition {
        rule_id,
        trigger,
        conditions: conditions.clone(),
        compiled,
        actions,
        enabled,
        order,
        description,
    })
}

/// Compiles a rule's conditions.
pub fn compile(conditions: &Json) -> Result<Compiled, FlowError> {
    let mut nodes = Vec::new();
    let condition = node(conditions, "conditions", 1, &mut nodes)?;
    let mut program = Program {
        rules: vec![condition],
    };
    let bytes = program.encode().len();
    if bytes > MAX_RULE_BYTES {
        return Err(invalid(
            "conditions",
            format!(
                "compile to {bytes} bytes; a rule may take at most {MAX_RULE_BYTES} (shorten its lists and texts)"
            ),
        ));
    }
    let condition = program.rules.remove(0);
    Ok(Compiled { condition, nodes })
}

fn node(
    json: &Json,
    path: &str,
    depth: usize,
    nodes: &mut Vec<NodeInfo>,
) -> Result<Condition, FlowError> {
    if depth > MAX_DEPTH {
        return Err(invalid(
            path,
            format!("conditions nest deeper than {MAX_DEPTH} levels"),
        ));
    }
    if nodes.len() >= MAX_NODES {
        return Err(invalid(
            path,
            format!("a rule may have at most {MAX_NODES} conditions and groups"),
        ));
    }
    let object = json.as_object().ok_or_else(|| {
        invalid(
            path,
            "must be an object: {\"all\": [...]}, {\"any\": [...]}, {\"not\": {...}} or {\"field\", \"operator\", \"value\"}",
        )
    })?;
    let groups: Vec<&str> = ["all", "any", "not"]
        .into_iter()
        .filter(|key| object.contains_key(*key))
        .collect();
    match groups.as_slice() {
        [] => comparison(object, path, nodes),
        [group] => {
            if let Some(extra) = object.keys().find(|key| key.as_str() != *group) {
                return Err(invalid(
                    format!("{path}.{extra}"),
                    format!("a `{group}` group has no other keys"),
                ));
            }
            let slot = nodes.len();
            nodes.push(NodeInfo {
                path: path.to_owned(),
                kind: group,
                field: None,
                value: None,
            });
            let inner = &object[*group];
            let inner_path = format!("{path}.{group}");
            if *group == "not" {
                let child = node(inner, &inner_path, depth + 1, nodes)?;
                debug_assert_eq!(nodes[slot].kind, "not");
                return Ok(Condition::Not(Box::new(child)));
            }
            let children = inner
                .as_array()
                .ok_or_else(|| invalid(&inner_path, "must be a list of conditions"))?;
            if children.is_empty() {
                return Err(invalid(&inner_path, "must list at least one condition"));
            }
            if children.len() > MAX_CHILDREN {
                return Err(invalid(
                    &inner_path,
                    format!("may list at most {MAX_CHILDREN} conditions"),
                ));
            }
            let compiled = children
                .iter()
                .enumerate()
                .map(|(i, child)| node(child, &format!("{inner_path}[{i}]"), depth + 1, nodes))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if *group == "all" {
                Condition::All(compiled)
            } else {
                Condition::Any(compiled)
            })
        }
        _ => Err(invalid(
            path,
            format!(
                "has both {}; nest one inside the other",
                groups.join(" and ")
            ),
        )),
    }
}

fn comparison(
    object: &Map<String, Json>,
    path: &str,
    nodes: &mut Vec<NodeInfo>,
) -> Result<Condition, FlowError> {
    if let Some(extra) = object
        .keys()
        .find(|key| !["field", "operator", "value"].contains(&key.as_str()))
    {
        return Err(invalid(
            format!("{path}.{extra}"),
            "unknown key; a condition has field, operator and value (or is an all, any or not group)",
        ));
    }
    let field_path = format!("{path}.field");
    let name = match object.get("field") {
        Some(Json::String(name)) => name,
        Some(_) => return Err(invalid(field_path, "must be a string")),
        None => return Err(invalid(field_path, "is required")),
    };
    let field = Field::from_name(name).ok_or_else(|| {
        invalid(
            &field_path,
            format!(
                "unknown field {name:?}; known fields: {}",
                FIELDS
                    .iter()
                    .map(|spec| spec.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    let spec = field.spec();
    let op_path = format!("{path}.operator");
    let op_name = match object.get("operator") {
        Some(Json::String(op)) => op,
        Some(_) => return Err(invalid(op_path, "must be a string")),
        None => return Err(invalid(op_path, "is required")),
    };
    let op = Operator::from_name(op_name).ok_or_else(|| {
        invalid(
            &op_path,
            format!(
                "unknown operator {op_name:?}; expected one of {}",
                OPERATORS
                    .iter()
                    .map(|(_, name)| *name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    let operand = op.fits(spec.ty).ok_or_else(|| {
        invalid(
            &op_path,
            format!(
                "`{op_name}` does not apply to {} ({}); use one of {}",
                spec.name,
                spec.ty.name(),
                OPERATORS
                    .iter()
                    .filter(|(op, _)| op.fits(spec.ty).is_some())
                    .map(|(_, name)| *name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    let value_path = format!("{path}.value");
    let raw = match object.get("value") {
        Some(value) => value.clone(),
        // `exists` alone asks whether the field is known.
        None if op == Operator::Exists => Json::Bool(true),
        None => return Err(invalid(value_path, "is required")),
    };
    let value = literal(&raw, operand, field, &value_path)?;
    nodes.push(NodeInfo {
        path: path.to_owned(),
        kind: op.name(),
        field: Some(spec.name),
        value: Some(raw),
    });
    Ok(Condition::Test { field, op, value })
}

/// The literal `raw` as the operand `operand` of a comparison on `field`.
fn literal(raw: &Json, operand: Operand, field: Field, path: &str) -> Result<Value, FlowError> {
    let spec = field.spec();
    match operand {
        Operand::Bool => raw
            .as_bool()
            .map(Value::Bool)
            .ok_or_else(|| invalid(path, "must be true or false")),
        Operand::Text => text(raw, path).map(Value::Text),
        Operand::Same => scalar(raw, spec.ty, field, path),
        Operand::ListOfSame => {
            let items = raw
                .as_array()
                .ok_or_else(|| invalid(path, format!("must be a list of {}", spec.ty.name())))?;
            if items.is_empty() || items.len() > MAX_LIST {
                return Err(invalid(
                    path,
                    format!("must list between 1 and {MAX_LIST} values"),
                ));
            }
            let scalars = items
                .iter()
                .enumerate()
                .map(|(i, item)| scalar(item, spec.ty, field, &format!("{path}[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(match spec.ty {
                FieldType::Number => Value::NumberList(
                    scalars
                        .into_iter()
                        .filter_map(|value| match value {
                            Value::Number(number) => Some(number),
                            _ => None,
                        })
                        .collect(),
                ),
                _ => Value::TextList(
                    scalars
                        .into_iter()
                        .filter_map(|value| match value {
                            Value::Text(text) => Some(text),
                            _ => None,
                        })
                        .collect(),
                ),
            })
        }
    }
}

fn scalar(raw: &Json, ty: FieldType, field: Field, path: &str) -> Result<Value, FlowError> {
    match ty {
        FieldType::Number => raw
            .as_f64()
            .filter(|number| number.is_finite())
            .map(Value::Number)
            .ok_or_else(|| {
                invalid(
                    path,
                    format!("must be a number ({} is a number)", field.spec().name),
                )
            }),
        FieldType::Bool => raw.as_bool().map(Value::Bool).ok_or_else(|| {
            invalid(
                path,
                format!("must be true or false ({} is a boolean)", field.spec().name),
            )
        }),
        FieldType::Text | FieldType::TextList => {
            let text = text(raw, path)?;
            let vocabulary = field.vocabulary();
            if !vocabulary.is_empty()
                && !vocabulary
                    .iter()
                    .any(|known| known.eq_ignore_ascii_case(&text))
            {
                return Err(invalid(
                    path,
                    format!(
                        "{text:?} is never a value of {}; expected one of {}",
                        field.spec().name,
                        vocabulary.join(", ")
                    ),
                ));
            }
            Ok(Value::Text(text))
        }
    }
}

fn text(raw: &Json, path: &str) -> Result<String, FlowError> {
    match raw {
        Json::String(text) if text.chars().count() <= MAX_TEXT => Ok(text.clone()),
        Json::String(_) => Err(invalid(
            path,
            format!("must be at most {MAX_TEXT} characters"),
        )),
        _ => Err(invalid(path, "must be a string")),
    }
}

/// Validates a rule's actions: the same vocabulary code plugins return.
pub fn actions(json: &Json) -> Result<Vec<RuleAction>, FlowError> {
    let items = json
        .as_array()
        .ok_or_else(|| invalid("actions", "must be a list of actions"))?;
    if items.is_empty() || items.len() > MAX_ACTIONS {
        return Err(invalid(
            "actions",
            format!("must list between 1 and {MAX_ACTIONS} actions"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| action(item, &format!("actions[{i}]")))
        .collect()
}

fn action(json: &Json, path: &str) -> Result<RuleAction, FlowError> {
    let object = json
        .as_object()
        .ok_or_else(|| invalid(path, "must be an object with a `type`"))?;
    let kind = match object.get("type") {
        Some(Json::String(kind)) => kind,
        Some(_) => return Err(invalid(format!("{path}.type"), "must be a string")),
        None => return Err(invalid(format!("{path}.type"), "is required")),
    };
    if !ACTION_TYPES.contains(&kind.as_str()) {
        return Err(invalid(
            format!("{path}.type"),
            format!(
                "unknown action {kind:?}; expected one of {}",
                ACTION_TYPES.join(", ")
            ),
        ));
    }
    let action: RuleAction = serde_json::from_value(json.clone())
        .map_err(|err| invalid(path, format!("{err} (a {kind} action)")))?;
    // serde does not apply `deny_unknown_fields` to the field-less variants of an
    // internally tagged enum (`{"type": "review", "why": 1}` parses): refuse the keys
    // it dropped rather than store less than the tenant wrote.
    if let Ok(Json::Object(parsed)) = serde_json::to_value(&action) {
        if let Some(extra) = object.keys().find(|key| !parsed.contains_key(key.as_str())) {
            return Err(invalid(
                format!("{path}.{extra}"),
                format!("unknown key for a {kind} action"),
            ));
        }
    }
    let check = |name: &str, text: &str| -> Result<(), FlowError> {
        if text.trim().is_empty() || text.chars().count() > MAX_TEXT {
            return Err(invalid(
                format!("{path}.{name}"),
                format!("must be 1 to {MAX_TEXT} characters"),
            ));
        }
        Ok(())
    };
    match &action {
        RuleAction::Approve | RuleAction::Review | RuleAction::SendOtp { .. } => {}
        RuleAction::Decline { reason } | RuleAction::Block { reason } => check("reason", reason)?,
        RuleAction::AddFlag { flag } => check("flag", flag)?,
        RuleAction::RequestInfo { info_needed } => check("info_needed", info_needed)?,
        RuleAction::Route { provider } => check("provider", provider)?,
        RuleAction::SetRisk {
            factor,
            contribution,
            details,
        } => {
            check("factor", factor)?;
            check("details", details)?;
            if !(-100..=100).contains(contribution) {
                return Err(invalid(
                    format!("{path}.contribution"),
                    "must be between -100 and 100",
                ));
            }
        }
        RuleAction::CreateCase {
            case_type,
            priority,
            title,
        } => {
            check("case_type", case_type)?;
            check("title", title)?;
            if !CASE_PRIORITIES.contains(&priority.as_str()) {
                return Err(invalid(
                    format!("{path}.priority"),
                    format!("must be one of {}", CASE_PRIORITIES.join(", ")),
                ));
            }
        }
    }
    Ok(action)
}

/// The catalogue of the language, for `GET /v1/workflows/fields`.
pub fn catalogue() -> Json {
    let fields: Vec<Json> = FIELDS
        .iter()
        .map(|spec| {
            let operators: Vec<&str> = OPERATORS
                .iter()
                .filter(|(op, _)| op.fits(spec.ty).is_some())
                .map(|(_, name)| *name)
                .collect();
            serde_json::json!({
                "field": spec.name,
                "type": spec.ty.name(),
                "description": spec.doc,
                "operators": operators,
                "values": spec.field.vocabulary(),
            })
        })
        .collect();
    serde_json::json!({
        "fields": fields,
        "operators": OPERATORS.iter().map(|(_, name)| *name).collect::<Vec<_>>(),
        "actions": ACTION_TYPES,
        "triggers": Trigger::ALL.map(Trigger::name),
        "limits": {
            "max_depth": MAX_DEPTH,
            "max_nodes": MAX_NODES,
            "max_children": MAX_CHILDREN,
            "max_actions": MAX_ACTIONS,
            "max_text": MAX_TEXT,
            "max_list": MAX_LIST,
            "max_rules_per_trigger": MAX_RULES_PER_TRIGGER,
            "max_rules_per_tenant": MAX_RULES_PER_TENANT,
            "max_rule_bytes": MAX_RULE_BYTES,
        },
    })
}

#[cfg(test)]
mod tests;
