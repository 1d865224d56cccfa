//! The JSON face of the rule contract: the event a rule receives and the actions it
//! returns, as the flows build them, the dry-run API accepts them and
//! `dialgate plugin run` reads them. The runtime converts them to and from the
//! generated WIT types; nothing else in the host sees those. Also the records of a
//! rule's run (what ran, what it used, how it failed) and the bounds of one call:
//! records and flows depend on these, never on the plugin runtime.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Channel, ReportStatus};
use crate::phone::LineType;

pub use dialgate_sdk::Trigger;

/// What a rule is told when its trigger fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleEvent {
    pub trigger: Trigger,
    #[serde(default)]
    pub tenant_id: String,
    #[serde(default)]
    pub verification: Snapshot,
    pub phone: PhoneView,
    #[serde(default)]
    pub applicant_id: Option<String>,
    #[serde(default)]
    pub applicant_country: Option<String>,
    /// The tenant's configuration of the plugin; the host fills it in per plugin.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// The fraud signals of the flow, where known (a send's triggers); a 0.2.0 rule
    /// reads them in its event, a 0.1.1 rule through the `signals` interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraud: Option<FraudSignals>,
}

/// What the fraud defences know of a flow's destination: the SMS-pumping detector's
/// score of the number's prefix, that prefix's conversion and sends, and whether the
/// delivery permissions allow the number on the flow's channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FraudSignals {
    pub pumping_risk: u8,
    #[serde(default)]
    pub prefix_conversion_rate: Option<f64>,
    pub prefix_sends_1h: u64,
    pub geo_permitted: bool,
}

impl RuleEvent {
    /// Bytes of text the event carries (strings, flags, factors, configuration), for
    /// the input cap; cheaper than serialising it.
    pub fn text_len(&self) -> usize {
        let opt = |value: &Option<String>| value.as_ref().map_or(0, String::len);
        let phone = &self.phone;
        self.tenant_id.len()
            + opt(&self.verification.id)
            + self
                .verification
                .flags
                .iter()
                .map(String::len)
                .sum::<usize>()
            + phone.e164.len()
            + phone.line_type.len()
            + opt(&phone.carrier_type)
            + opt(&phone.country)
            + opt(&phone.carrier_name)
            + phone.risk_level.len()
            + phone
                .risk_factors
                .iter()
                .map(|f| f.factor.len() + f.details.len())
                .sum::<usize>()
            + opt(&phone.line_status)
            + opt(&self.applicant_id)
            + opt(&self.applicant_country)
            + self
                .config
                .iter()
                .map(|(key, value)| key.len() + value.len())
                .sum::<usize>()
    }
}

/// The verification as it stands when the trigger fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    #[serde(default)]
    pub id: Option<String>,
    pub status: ReportStatus,
    #[serde(default)]
    pub channel: Option<Channel>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub resends: u32,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub otp_verified: bool,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            id: None,
            status: ReportStatus::NotFinished,
            channel: None,
            attempts: 0,
            resends: 0,
            flags: Vec::new(),
            otp_verified: false,
        }
    }
}

/// What is known about the number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneView {
    pub e164: String,
    #[serde(default = "unknown")]
    pub line_type: String,
    /// `mobile`, `landline`, `voip` or `unknown`; derived from `line_type` when absent.
    #[serde(default)]
    pub carrier_type: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub carrier_name: Option<String>,
    #[serde(default)]
    pub carrier_is_original: bool,
    #[serde(default)]
    pub risk_score: u8,
    #[serde(default = "low")]
    pub risk_level: String,
    #[serde(default)]
    pub risk_factors: Vec<FactorView>,
    #[serde(default)]
    pub ported: Option<bool>,
    #[serde(default)]
    pub ported_days_ago: Option<u32>,
    #[serde(default)]
    pub sim_swap_days_ago: Option<u32>,
    #[serde(default)]
    pub line_status: Option<String>,
    #[serde(default)]
    pub roaming: Option<bool>,
}

impl PhoneView {
    /// The coarse carrier type: as given, else derived from the line type the way the
    /// lookup reports it.
    pub fn carrier_type(&self) -> String {
        if let Some(given) = &self.carrier_type {
            return given.clone();
        }
        serde_json::from_value::<LineType>(serde_json::Value::String(self.line_type.clone()))
            .map_or("unknown", LineType::carrier_type)
            .to_owned()
    }
}

fn unknown() -> String {
    "unknown".to_owned()
}

fn low() -> String {
    "low".to_owned()
}

/// One risk factor of the score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactorView {
    pub factor: String,
    pub contribution: i32,
    #[serde(default)]
    pub details: String,
}

/// What a rule asks the host to do, in the workflow-rule vocabulary
/// (`{"type": "add_flag", "flag": "recent_sim_swap"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleAction {
    Approve,
    Review,
    Decline {
        reason: String,
    },
    AddFlag {
        flag: String,
    },
    SetRisk {
        factor: String,
        contribution: i32,
        details: String,
    },
    CreateCase {
        case_type: String,
        priority: String,
        title: String,
    },
    RequestInfo {
        info_needed: String,
    },
    SendOtp {
        channel: Channel,
    },
    Route {
        provider: String,
    },
    Block {
        reason: String,
    },
}

impl RuleAction {
    /// The action's `type` name.
    pub fn kind(&self) -> &'static str {
        match self {
            RuleAction::Approve => "approve",
            RuleAction::Review => "review",
            RuleAction::Decline { .. } => "decline",
            RuleAction::AddFlag { .. } => "add_flag",
            RuleAction::SetRisk { .. } => "set_risk",
            RuleAction::CreateCase { .. } => "create_case",
            RuleAction::RequestInfo { .. } => "request_info",
            RuleAction::SendOtp { .. } => "send_otp",
            RuleAction::Route { .. } => "route",
            RuleAction::Block { .. } => "block",
        }
    }

    /// Bytes of text the action carries, for the output cap.
    pub fn text_len(&self) -> usize {
        match self {
            RuleAction::Approve | RuleAction::Review | RuleAction::SendOtp { .. } => 0,
            RuleAction::Decline { reason } | RuleAction::Block { reason } => reason.len(),
            RuleAction::AddFlag { flag } => flag.len(),
            RuleAction::SetRisk {
                factor, details, ..
            } => factor.len() + details.len(),
            RuleAction::CreateCase {
                case_type,
                priority,
                title,
            } => case_type.len() + priority.len() + title.len(),
            RuleAction::RequestInfo { info_needed } => info_needed.len(),
            RuleAction::Route { provider } => provider.len(),
        }
    }
}

/// Largest compiled rule program the interpreter is given, in bytes.
pub const MAX_PROGRAM_BYTES: usize = 512 << 10;

/// Per-call limits of the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (roughly, WebAssembly instructions) a call may use.
    pub fuel: u64,
    /// Wall-clock time a call may take, in milliseconds.
    pub time_ms: u64,
    /// Linear memory a call may grow to, in bytes.
    pub memory_bytes: usize,
    /// Actions a call may return.
    pub max_actions: usize,
    /// Bytes of text a call's actions may carry in all.
    pub max_output_bytes: usize,
    /// Bytes of text (strings, configuration) an event may carry.
    pub max_input_bytes: usize,
}

impl Default for Limits {
    /// 10 million units of fuel (a small rule uses a few thousand), 10 ms, 16 MiB of
    /// memory, 64 actions carrying at most 16 KiB of text, events up to 64 KiB.
    fn default() -> Self {
        Self {
            fuel: 10_000_000,
            time_ms: 10,
            memory_bytes: 16 << 20,
            max_actions: 64,
            max_output_bytes: 16 << 10,
            max_input_bytes: 64 << 10,
        }
    }
}

/// What a call used, successful or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub fuel: u64,
    pub micros: u64,
    /// The largest linear memory the call grew to, in bytes.
    pub peak_memory_bytes: usize,
}

/// Why a call did not produce actions. The sandbox's failures and the plugin's own
/// error are kept apart.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error, utoipa::ToSchema,
)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    #[error("the plugin used up its CPU budget of {fuel} fuel")]
    OutOfFuel { fuel: u64 },
    #[error("the plugin ran past its deadline of {ms} ms")]
    Timeout { ms: u64 },
    #[error("the plugin exhausted its call stack")]
    StackOverflow,
    #[error("the plugin trapped: {message}")]
    Trap { message: String },
    #[error("the event is {bytes} bytes; at most {limit} may be passed to a plugin")]
    InputTooLarge { bytes: usize, limit: usize },
    #[error("the plugin returned {returned} actions; at most {limit} are allowed")]
    TooManyActions { returned: usize, limit: usize },
    #[error("the plugin's actions carry {bytes} bytes of text; at most {limit} are allowed")]
    OutputTooLarge { bytes: usize, limit: usize },
    #[error("the plugin's output is malformed: {message}")]
    Malformed { message: String },
    #[error("the plugin reported {code}: {message}")]
    Plugin { code: String, message: String },
    /// Declarative rules, evaluated natively, went over their budget of steps.
    #[error("the declarative rules need more than {steps} evaluation steps; simplify their conditions or split them across triggers")]
    StepBudget { steps: u64 },
    /// The host did not run the plugin because of load: no slot within the bounded
    /// wait, or the tenant's CPU budget is used up.
    #[error("the plugin did not run: {reason}")]
    Overloaded { reason: String },
    /// The plugin's code could not be brought back into memory.
    #[error("the plugin's code cannot be loaded: {message}")]
    Unloadable { message: String },
}

impl Failure {
    /// The failure's kind, as its `kind` field is serialised.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::OutOfFuel { .. } => "out_of_fuel",
            Failure::Timeout { .. } => "timeout",
            Failure::StackOverflow => "stack_overflow",
            Failure::Trap { .. } => "trap",
            Failure::InputTooLarge { .. } => "input_too_large",
            Failure::TooManyActions { .. } => "too_many_actions",
            Failure::OutputTooLarge { .. } => "output_too_large",
            Failure::Malformed { .. } => "malformed",
            Failure::Plugin { .. } => "plugin",
            Failure::StepBudget { .. } => "step_budget",
            Failure::Overloaded { .. } => "overloaded",
            Failure::Unloadable { .. } => "unloadable",
        }
    }
}

/// What kind of rule ran.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RuleSource {
    /// A rule plugin (a Wasm component).
    #[default]
    Plugin,
    /// A declarative workflow rule.
    Workflow,
}

/// One rule's run at a trigger. A declarative rule is recorded when it matched (or
/// when the evaluation failed); its `plugin_id` and `name` are its `rule_id`, its
/// `version` is `r{revision}`, and its fuel (evaluation steps) and time are those of
/// the one evaluation that decided every declarative rule at the trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RuleRun {
    #[serde(default)]
    pub source: RuleSource,
    pub plugin_id: String,
    pub name: String,
    pub version: String,
    pub actions: Vec<RuleAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    pub fuel: u64,
    pub micros: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_kind_is_its_serialised_kind() {
        let failures = [
            Failure::OutOfFuel { fuel: 1 },
            Failure::Timeout { ms: 1 },
            Failure::StackOverflow,
            Failure::Trap {
                message: String::new(),
            },
            Failure::InputTooLarge { bytes: 1, limit: 1 },
            Failure::TooManyActions {
                returned: 1,
                limit: 1,
            },
            Failure::OutputTooLarge { bytes: 1, limit: 1 },
            Failure::Malformed {
                message: String::new(),
            },
            Failure::Plugin {
                code: String::new(),
                message: String::new(),
            },
            Failure::StepBudget { steps: 1 },
            Failure::Overloaded {
                reason: String::new(),
            },
            Failure::Unloadable {
                message: String::new(),
            },
        ];
        for failure in failures {
            let json = serde_json::to_value(&failure).expect("serialises");
            assert_eq!(json["kind"], failure.kind());
        }
    }

    #[test]
    fn actions_use_the_workflow_rule_spelling() {
        let json = serde_json::json!([
            {"type": "request_info", "info_needed": "Phone verification required"},
            {"type": "send_otp", "channel": "sms"},
            {"type": "add_flag", "flag": "recent_sim_swap"},
            {"type": "create_case", "case_type": "fraud", "priority": "high",
             "title": "Recent SIM swap detected"},
            {"type": "decline", "reason": "velocity"},
            {"type": "approve"}
        ]);
        let actions: Vec<RuleAction> = serde_json::from_value(json.clone()).expect("parses");
        assert_eq!(
            actions[1],
            RuleAction::SendOtp {
                channel: Channel::Sms
            }
        );
        assert_eq!(serde_json::to_value(&actions).expect("serialises"), json);
    }

    #[test]
    fn a_minimal_event_parses_with_defaults() {
        let event: RuleEvent = serde_json::from_value(serde_json::json!({
            "trigger": "phone_lookup_complete",
            "phone": {"e164": "+14155552671", "line_type": "voip"}
        }))
        .expect("parses");
        assert_eq!(event.verification.status, ReportStatus::NotFinished);
        assert_eq!(event.phone.risk_level, "low");
        let err = serde_json::from_value::<RuleEvent>(serde_json::json!({
            "trigger": "phone_lookup_complete",
            "phone": {"e164": "+1", "bogus": 1}
        }))
        .expect_err("unknown field");
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
