//! The declarative workflow-rule language: the field catalogue, the operators, the
//! compiled program, and its evaluator.
//!
//! The host validates a tenant's rules (JSON, seed 004's shape) against
//! [`FIELDS`] and [`Operator::fits`], compiles the rules bound to one trigger into a
//! [`Program`], and evaluates it over the trigger's event with [`evaluate_bounded`]:
//! our own code, bounded by a budget of steps as a sandboxed call is bounded by its
//! fuel. The first-party interpreter component (`rules/workflow-interpreter`) runs the
//! same evaluator inside the sandbox on the program's [`Program::encode`] form; the
//! host no longer calls it on a request path.
//!
//! Semantics, shared by every operator:
//! - Text compares ASCII case-insensitively (`"VOIP"` equals `"voip"`).
//! - A field whose value is unknown (a carrier nobody named, a SIM-swap date no
//!   provider reported) satisfies no comparison, not even `ne` or `not_in`; only
//!   `exists` with `false` matches it. Unknown is never evidence.
//! - `all` of nothing matches; `any` of nothing does not.

use serde::{Deserialize, Serialize};

/// The type of a field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// A string, compared case-insensitively.
    Text,
    /// A number (integers and scores).
    Number,
    /// `true` or `false`.
    Bool,
    /// A set of strings (flags, risk factor names).
    TextList,
}

impl FieldType {
    /// The type's name in error messages and the catalogue.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Number => "number",
            FieldType::Bool => "boolean",
            FieldType::TextList => "list of text",
        }
    }
}

/// A fact about the verification that a condition can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// The trigger that fired.
    Trigger,
    /// The verification's status.
    VerificationStatus,
    /// Whether a code was verified.
    PhoneOtpVerified,
    /// The channel of the last code sent.
    Channel,
    /// Code entries so far.
    OtpAttempts,
    /// Codes resent in the last 24 hours.
    OtpResends,
    /// Flags rules set so far.
    Flags,
    /// The number, E.164.
    Phone,
    /// The line type.
    PhoneType,
    /// The number's country.
    Country,
    /// The carrier's name.
    CarrierName,
    /// The coarse carrier type.
    CarrierType,
    /// Whether the carrier is the range's original operator rather than a confirmed
    /// current one.
    CarrierIsOriginal,
    /// The risk score.
    RiskScore,
    /// The risk level.
    RiskLevel,
    /// The names of the risk factors.
    RiskFactors,
    /// Whether the number was ported.
    Ported,
    /// Days since the last port.
    PortedDaysAgo,
    /// Days since the SIM last changed.
    SimSwapDaysAgo,
    /// Whether the line is active.
    LineStatus,
    /// Whether the subscriber roams.
    Roaming,
    /// The applicant's id.
    ApplicantId,
    /// The applicant's declared country.
    ApplicantCountry,
    /// Whether the applicant's country differs from the number's.
    CountryMismatch,
    /// The SMS-pumping detector's score of the number's prefix.
    PumpingRisk,
    /// Codes verified over matured codes sent to that prefix.
    PrefixConversionRate,
    /// Codes sent to that prefix within the detector's window.
    PrefixSends1h,
    /// Whether the delivery permissions allow the number on the flow's channel.
    GeoPermitted,
}

/// One entry of the field catalogue.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    /// The field.
    pub field: Field,
    /// Its name in rules.
    pub name: &'static str,
    /// Its type.
    pub ty: FieldType,
    /// What it holds, for the catalogue endpoint and the docs.
    pub doc: &'static str,
}

/// Every field a condition can test. Every trigger's event carries all of them; those
/// a trigger does not know yet are unknown (e.g. `channel` before a code was sent).
pub const FIELDS: &[FieldSpec] = &[
    spec(Field::Trigger, "trigger", FieldType::Text, "The trigger that fired, e.g. `phone_lookup_complete`."),
    spec(Field::VerificationStatus, "verification_status", FieldType::Text, "`Approved`, `Declined`, `In Review` or `Not Finished`."),
    spec(Field::PhoneOtpVerified, "phone_otp_verified", FieldType::Bool, "Whether a code sent to the number was verified."),
    spec(Field::Channel, "channel", FieldType::Text, "The channel of the last code sent: `sms`, `voice`, `whatsapp`, `viber`, `telegram`."),
    spec(Field::OtpAttempts, "otp_attempts", FieldType::Number, "Code entries so far."),
    spec(Field::OtpResends, "otp_resends", FieldType::Number, "Codes resent after the first, in the last 24 hours."),
    spec(Field::Flags, "flags", FieldType::TextList, "Flags set on the verification so far."),
    spec(Field::Phone, "phone", FieldType::Text, "The number in E.164 form, e.g. `+14155552671`."),
    spec(Field::PhoneType, "phone_type", FieldType::Text, "Line type: `mobile`, `landline`, `voip`, `toll_free`, `premium`, `virtual`, `shared_cost`, `uan`, `pager`, `voicemail` or `unknown`."),
    spec(Field::Country, "country", FieldType::Text, "ISO 3166-1 alpha-2 country of the number."),
    spec(Field::CarrierName, "carrier_name", FieldType::Text, "The carrier's name: the current operator when a lookup provider confirmed it, else the range's original operator."),
    spec(Field::CarrierType, "carrier_type", FieldType::Text, "`mobile`, `landline`, `voip` or `unknown`."),
    spec(Field::CarrierIsOriginal, "carrier_is_original", FieldType::Bool, "Whether `carrier_name` is the range's original operator rather than a confirmed current one."),
    spec(Field::RiskScore, "risk_score", FieldType::Number, "Risk score, 0 to 100."),
    spec(Field::RiskLevel, "risk_level", FieldType::Text, "`low`, `medium` or `high`."),
    spec(Field::RiskFactors, "risk_factors", FieldType::TextList, "Names of the factors behind the score, e.g. `voip_number`."),
    spec(Field::Ported, "ported", FieldType::Bool, "Whether the number was ported away from its original operator."),
    spec(Field::PortedDaysAgo, "ported_days_ago", FieldType::Number, "Days since the number was last ported."),
    spec(Field::SimSwapDaysAgo, "sim_swap_days_ago", FieldType::Number, "Days since the SIM card behind the number last changed."),
    spec(Field::LineStatus, "line_status", FieldType::Text, "`active`, `inactive` or `unknown`."),
    spec(Field::Roaming, "roaming", FieldType::Bool, "Whether the subscriber is roaming."),
    spec(Field::ApplicantId, "applicant_id", FieldType::Text, "The applicant, as the app named them."),
    spec(Field::ApplicantCountry, "applicant_country", FieldType::Text, "The country the applicant declared."),
    spec(Field::CountryMismatch, "country_mismatch", FieldType::Bool, "Whether the applicant's country differs from the number's (unknown unless both are known)."),
    spec(Field::PumpingRisk, "pumping_risk", FieldType::Number, "The SMS-pumping detector's score of the number's prefix, 0 to 100 (it blocks at 80, or 60 in strict mode); known on a send's triggers while the detector is on."),
    spec(Field::PrefixConversionRate, "prefix_conversion_rate", FieldType::Number, "Codes verified over matured codes sent to the prefix the score is about, 0 to 1 (with the detector's prior); unknown before any matured."),
    spec(Field::PrefixSends1h, "prefix_sends_1h", FieldType::Number, "Codes sent to that prefix within the detector's window (an hour by default)."),
    spec(Field::GeoPermitted, "geo_permitted", FieldType::Bool, "Whether the tenant's delivery permissions allow codes to the number on the flow's channel; known on a send's triggers."),
];

const fn spec(field: Field, name: &'static str, ty: FieldType, doc: &'static str) -> FieldSpec {
    FieldSpec {
        field,
        name,
        ty,
        doc,
    }
}

impl Field {
    /// The field named `name` in rules.
    pub fn from_name(name: &str) -> Option<Field> {
        FIELDS
            .iter()
            .find(|spec| spec.name == name)
            .map(|spec| spec.field)
    }

    /// The values a text field can take, when it has a fixed vocabulary (empty for
    /// free text). Validation refuses a literal outside it: it could never match.
    pub fn vocabulary(self) -> &'static [&'static str] {
        match self {
            Field::Trigger => &[
                "phone_lookup_complete",
                "before_send_otp",
                "otp_sent",
                "otp_delivery_update",
                "otp_verified",
                "otp_failed",
                "verification_completed",
            ],
            Field::VerificationStatus => &["Approved", "Declined", "In Review", "Not Finished"],
            Field::Channel => &["sms", "voice", "whatsapp", "viber", "telegram"],
            Field::PhoneType => &[
                "mobile",
                "landline",
                "voip",
                "toll_free",
                "premium",
                "virtual",
                "shared_cost",
                "uan",
                "pager",
                "voicemail",
                "unknown",
            ],
            Field::CarrierType => &["mobile", "landline", "voip", "unknown"],
            Field::RiskLevel => &["low", "medium", "high"],
            Field::LineStatus => &["active", "inactive", "unknown"],
            _ => &[],
        }
    }

    /// The field's catalogue entry.
    pub fn spec(self) -> &'static FieldSpec {
        FIELDS
            .iter()
            .find(|spec| spec.field == self)
            .expect("every field is in the catalogue")
    }
}

/// How a condition compares a field with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
    /// One of a list of values.
    In,
    /// None of a list of values.
    NotIn,
    /// For text, contains the value; for a list, has the value as a member.
    Contains,
    /// Text that starts with the value.
    StartsWith,
    /// Known (`true`) or unknown (`false`).
    Exists,
}

/// Every operator with its name in rules.
pub const OPERATORS: &[(Operator, &str)] = &[
    (Operator::Eq, "eq"),
    (Operator::Ne, "ne"),
    (Operator::Lt, "lt"),
    (Operator::Lte, "lte"),
    (Operator::Gt, "gt"),
    (Operator::Gte, "gte"),
    (Operator::In, "in"),
    (Operator::NotIn, "not_in"),
    (Operator::Contains, "contains"),
    (Operator::StartsWith, "starts_with"),
    (Operator::Exists, "exists"),
];

/// What value an operator takes for a field of some type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    /// A value of the field's own type.
    Same,
    /// A list of values of the field's own type.
    ListOfSame,
    /// Text.
    Text,
    /// `true` or `false`.
    Bool,
}

impl Operator {
    /// The operator named `name` in rules.
    pub fn from_name(name: &str) -> Option<Operator> {
        OPERATORS
            .iter()
            .find(|(_, known)| *known == name)
            .map(|(op, _)| *op)
    }

    /// The operator's name in rules.
    pub fn name(self) -> &'static str {
        OPERATORS
            .iter()
            .find(|(op, _)| *op == self)
            .map(|(_, name)| *name)
            .expect("every operator is named")
    }

    /// The value this operator takes for a field of type `ty`, or `None` when the
    /// operator does not apply to such a field.
    pub fn fits(self, ty: FieldType) -> Option<Operand> {
        use FieldType::*;
        use Operator::*;
        match (self, ty) {
            (Exists, _) => Some(Operand::Bool),
            (Eq | Ne, Text | Number | Bool) => Some(Operand::Same),
            (Lt | Lte | Gt | Gte, Number) => Some(Operand::Same),
            (In | NotIn, Text | Number) => Some(Operand::ListOfSame),
            (Contains, Text | TextList) => Some(Operand::Text),
            (StartsWith, Text) => Some(Operand::Text),
            _ => None,
        }
    }
}

/// A condition's literal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// Text.
    Text(String),
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
    /// A list of text.
    TextList(Vec<String>),
    /// A list of numbers.
    NumberList(Vec<f64>),
}

/// A compiled condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Condition {
    /// Every child matches.
    All(Vec<Condition>),
    /// At least one child matches.
    Any(Vec<Condition>),
    /// The child does not match.
    Not(Box<Condition>),
    /// One comparison.
    Test {
        /// The field tested.
        field: Field,
        /// The comparison.
        op: Operator,
        /// The literal compared with.
        value: Value,
    },
}

impl Condition {
    /// Nodes in this condition, itself included: the numbering [`Outcome::node`] uses
    /// is this tree's pre-order.
    pub fn nodes(&self) -> usize {
        match self {
            Condition::All(children) | Condition::Any(children) => {
                1 + children.iter().map(Condition::nodes).sum::<usize>()
            }
            Condition::Not(child) => 1 + child.nodes(),
            Condition::Test { .. } => 1,
        }
    }
}

/// The rules bound to one trigger, in order: each rule is its condition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Program {
    /// One condition per rule.
    pub rules: Vec<Condition>,
}

/// Why program bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed rule program: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

impl Program {
    /// The program's compact binary form, as the interpreter receives it.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a program always encodes")
    }

    /// Decodes [`Program::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Result<Program, DecodeError> {
        postcard::from_bytes(bytes).map_err(|err| DecodeError(err.to_string()))
    }
}

/// A field's value in one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact<'a> {
    /// Not known.
    Unknown,
    /// Text.
    Text(&'a str),
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
    /// A set of text.
    TextList(Vec<&'a str>),
}

impl Fact<'_> {
    /// The fact as JSON, for explaining a match.
    pub fn to_json(&self) -> String {
        match self {
            Fact::Unknown => "null".to_owned(),
            Fact::Text(text) => json_string(text),
            Fact::Number(number) => json_number(*number),
            Fact::Bool(flag) => flag.to_string(),
            Fact::TextList(items) => {
                let items: Vec<String> = items.iter().map(|item| json_string(item)).collect();
                format!("[{}]", items.join(","))
            }
        }
    }
}

fn json_number(number: f64) -> String {
    if number.fract() == 0.0 && number.abs() < 1e15 {
        format!("{}", number as i64)
    } else if number.is_finite() {
        number.to_string()
    } else {
        "null".to_owned()
    }
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Where an event's facts come from.
pub trait Facts {
    /// The value of `field` in this event.
    fn fact(&self, field: Field) -> Fact<'_>;
}

/// One condition's outcome, when a match is explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The rule's index in the program.
    pub rule: u32,
    /// The node's index in the rule's condition, in pre-order (the root is 0).
    pub node: u32,
    /// Whether the node matched.
    pub matched: bool,
    /// For a comparison, the field's value as JSON (`null` when unknown).
    pub value: Option<String>,
}

/// The indices of the rules in `program` whose conditions match `facts`, in order.
/// With `explain`, every node of every rule is evaluated (no short cut) and its
/// outcome appended to `explain`. Unbounded: see [`evaluate_bounded`] for the form
/// the host runs.
pub fn evaluate(
    program: &Program,
    facts: &dyn Facts,
    explain: Option<&mut Vec<Outcome>>,
) -> Vec<u32> {
    let mut meter = Meter::new(u64::MAX);
    run(program, facts, explain, &mut meter).unwrap_or_default()
}

/// What a bounded evaluation came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The indices of the rules that matched, ascending.
    pub matched: Vec<u32>,
    /// With `explain`, every node's outcome, rule by rule in pre-order.
    pub explanation: Vec<Outcome>,
    /// The steps the evaluation took (see [`evaluate_bounded`]).
    pub steps: u64,
}

/// An evaluation stopped because it would have taken more than its budget of steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetExceeded {
    /// The budget, in steps.
    pub budget: u64,
}

impl std::fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the rules need more than {} evaluation steps",
            self.budget
        )
    }
}

impl std::error::Error for BudgetExceeded {}

/// [`evaluate`] within a budget of `max_steps`, with the same results and
/// explanation. A step is one node visited, one list item looked at, one byte
/// compared or one byte of explanation written, each counted at its worst case and
/// charged before the work is done, so an evaluation stops before it exceeds its
/// budget, never after: the work is bounded by `max_steps` whatever the program and
/// event (the program's depth is bounded by validation, so is the recursion).
pub fn evaluate_bounded(
    program: &Program,
    facts: &dyn Facts,
    explain: bool,
    max_steps: u64,
) -> Result<Evaluation, BudgetExceeded> {
    let mut meter = Meter::new(max_steps);
    let mut explanation = Vec::new();
    let matched = run(
        program,
        facts,
        explain.then_some(&mut explanation),
        &mut meter,
    )?;
    Ok(Evaluation {
        matched,
        explanation,
        steps: meter.used,
    })
}

/// Counts the steps of one evaluation against its budget.
struct Meter {
    used: u64,
    budget: u64,
}

impl Meter {
    fn new(budget: u64) -> Self {
        Self { used: 0, budget }
    }

    /// Takes `steps` from the budget, or fails when that would exceed it.
    fn charge(&mut self, steps: u64) -> Result<(), BudgetExceeded> {
        let used = self.used.saturating_add(steps);
        if used > self.budget {
            return Err(BudgetExceeded {
                budget: self.budget,
            });
        }
        self.used = used;
        Ok(())
    }
}

fn run(
    program: &Program,
    facts: &dyn Facts,
    mut explain: Option<&mut Vec<Outcome>>,
    meter: &mut Meter,
) -> Result<Vec<u32>, BudgetExceeded> {
    let mut matched = Vec::new();
    for (index, rule) in program.rules.iter().enumerate() {
        let index = index as u32;
        let hit = match explain.as_deref_mut() {
            Some(outcomes) => {
                let mut node = 0;
                explained(rule, facts, index, &mut node, outcomes, meter)?
            }
            None => holds(rule, facts, meter)?,
        };
        if hit {
            matched.push(index);
        }
    }
    Ok(matched)
}

/// Whether `condition` holds, short-cutting `all` and `any`.
fn holds(
    condition: &Condition,
    facts: &dyn Facts,
    meter: &mut Meter,
) -> Result<bool, BudgetExceeded> {
    meter.charge(1)?;
    Ok(match condition {
        Condition::All(children) => {
            for child in children {
                if !holds(child, facts, meter)? {
                    return Ok(false);
                }
            }
            true
        }
        Condition::Any(children) => {
            for child in children {
                if holds(child, facts, meter)? {
                    return Ok(true);
                }
            }
            false
        }
        Condition::Not(child) => !holds(child, facts, meter)?,
        Condition::Test { field, op, value } => {
            let fact = facts.fact(*field);
            meter.charge(cost(&fact, *op, value))?;
            compare(&fact, *op, value)
        }
    })
}

/// Whether `condition` holds, evaluating every node and recording its outcome.
fn explained(
    condition: &Condition,
    facts: &dyn Facts,
    rule: u32,
    next: &mut u32,
    outcomes: &mut Vec<Outcome>,
    meter: &mut Meter,
) -> Result<bool, BudgetExceeded> {
    meter.charge(1)?;
    let node = *next;
    *next += 1;
    let slot = outcomes.len();
    outcomes.push(Outcome {
        rule,
        node,
        matched: false,
        value: None,
    });
    let matched = match condition {
        // Every child is evaluated (no short cut), so each one is explained.
        Condition::All(children) | Condition::Any(children) => {
            let mut hits = 0;
            for child in children {
                hits += usize::from(explained(child, facts, rule, next, outcomes, meter)?);
            }
            if matches!(condition, Condition::All(_)) {
                hits == children.len()
            } else {
                hits > 0
            }
        }
        Condition::Not(child) => !explained(child, facts, rule, next, outcomes, meter)?,
        Condition::Test { field, op, value } => {
            let fact = facts.fact(*field);
            meter.charge(json_cost(&fact))?;
            outcomes[slot].value = Some(fact.to_json());
            meter.charge(cost(&fact, *op, value))?;
            compare(&fact, *op, value)
        }
    };
    outcomes[slot].matched = matched;
    Ok(matched)
}

/// The most steps [`compare`] can take on these operands: one, plus every list item
/// looked at and every byte that may be compared.
fn cost(fact: &Fact<'_>, op: Operator, value: &Value) -> u64 {
    let steps = match (fact, value) {
        _ if op == Operator::Exists => 0,
        (Fact::Text(text), Value::Text(literal)) => match op {
            Operator::Contains if literal.len() <= text.len() => {
                (text.len() - literal.len() + 1).saturating_mul(literal.len())
            }
            _ => literal.len(),
        },
        // A literal of another length is refused at its length.
        (Fact::Text(text), Value::TextList(literals)) => literals
            .iter()
            .map(|literal| {
                1 + if literal.len() == text.len() {
                    text.len()
                } else {
                    0
                }
            })
            .sum(),
        (Fact::Number(_), Value::NumberList(literals)) => literals.len(),
        (Fact::TextList(items), Value::Text(literal)) => items
            .iter()
            .map(|item| {
                1 + if item.len() == literal.len() {
                    literal.len()
                } else {
                    0
                }
            })
            .sum(),
        _ => 0,
    };
    1 + steps as u64
}

/// The most bytes [`Fact::to_json`] can write for `fact` (an escaped character takes
/// at most six).
fn json_cost(fact: &Fact<'_>) -> u64 {
    let bytes = match fact {
        Fact::Text(text) => 2 + 6 * text.len(),
        Fact::TextList(items) => 2 + items.iter().map(|item| 3 + 6 * item.len()).sum::<usize>(),
        _ => 24,
    };
    bytes as u64
}

/// One comparison. Unknown facts satisfy nothing but `exists: false`; a literal of
/// the wrong type (which validation rules out) never matches.
pub fn compare(fact: &Fact<'_>, op: Operator, value: &Value) -> bool {
    if op == Operator::Exists {
        let known = !matches!(fact, Fact::Unknown);
        return matches!(value, Value::Bool(wanted) if *wanted == known);
    }
    match (fact, value) {
        (Fact::Unknown, _) => false,
        (Fact::Text(text), Value::Text(literal)) => match op {
            Operator::Eq => text.eq_ignore_ascii_case(literal),
            Operator::Ne => !text.eq_ignore_ascii_case(literal),
            Operator::Contains => contains_ignore_case(text, literal),
            Operator::StartsWith => {
                text.len() >= literal.len()
                    && text.as_bytes()[..literal.len()].eq_ignore_ascii_case(literal.as_bytes())
            }
            _ => false,
        },
        (Fact::Text(text), Value::TextList(literals)) => {
            let found = literals
                .iter()
                .any(|literal| text.eq_ignore_ascii_case(literal));
            match op {
                Operator::In => found,
                Operator::NotIn => !found,
                _ => false,
            }
        }
        (Fact::Number(number), Value::Number(literal)) => match op {
            Operator::Eq => number == literal,
            Operator::Ne => number != literal,
            Operator::Lt => number < literal,
            Operator::Lte => number <= literal,
            Operator::Gt => number > literal,
            Operator::Gte => number >= literal,
            _ => false,
        },
        (Fact::Number(number), Value::NumberList(literals)) => {
            let found = literals.contains(number);
            match op {
                Operator::In => found,
                Operator::NotIn => !found,
                _ => false,
            }
        }
        (Fact::Bool(flag), Value::Bool(literal)) => match op {
            Operator::Eq => flag == literal,
            Operator::Ne => flag != literal,
            _ => false,
        },
        (Fact::TextList(items), Value::Text(literal)) => {
            op == Operator::Contains && items.iter().any(|item| item.eq_ignore_ascii_case(literal))
        }
        _ => false,
    }
}

fn contains_ignore_case(text: &str, needle: &str) -> bool {
    let (text, needle) = (text.as_bytes(), needle.as_bytes());
    needle.is_empty()
        || text
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Event {
        phone_type: &'static str,
        sim_swap_days_ago: Option<u32>,
        flags: Vec<&'static str>,
        verified: bool,
    }

    impl Facts for Event {
        fn fact(&self, field: Field) -> Fact<'_> {
            match field {
                Field::PhoneType => Fact::Text(self.phone_type),
                Field::SimSwapDaysAgo => self
                    .sim_swap_days_ago
                    .map_or(Fact::Unknown, |days| Fact::Number(f64::from(days))),
                Field::Flags => Fact::TextList(self.flags.clone()),
                Field::PhoneOtpVerified => Fact::Bool(self.verified),
                _ => Fact::Unknown,
            }
        }
    }

    fn test(field: Field, op: Operator, value: Value) -> Condition {
        Condition::Test { field, op, value }
    }

    fn event() -> Event {
        Event {
            phone_type: "voip",
            sim_swap_days_ago: Some(3),
            flags: vec!["vip"],
            verified: false,
        }
    }

    #[test]
    fn every_field_is_catalogued_once_with_a_unique_name() {
        for spec in FIELDS {
            assert_eq!(Field::from_name(spec.name), Some(spec.field));
            assert_eq!(spec.field.spec().name, spec.name);
        }
        let mut names: Vec<&str> = FIELDS.iter().map(|spec| spec.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FIELDS.len());
    }

    #[test]
    fn the_seed_rules_match_as_described() {
        let voip = Condition::All(vec![
            test(Field::PhoneType, Operator::Eq, Value::Text("voip".into())),
            test(Field::PhoneOtpVerified, Operator::Eq, Value::Bool(false)),
        ]);
        let swap = Condition::All(vec![test(
            Field::SimSwapDaysAgo,
            Operator::Lt,
            Value::Number(7.0),
        )]);
        let program = Program {
            rules: vec![voip, swap],
        };
        let decoded = Program::decode(&program.encode()).expect("round trip");
        assert_eq!(decoded, program);
        assert_eq!(evaluate(&decoded, &event(), None), vec![0, 1]);
        let unknown_swap = Event {
            sim_swap_days_ago: None,
            verified: true,
            ..event()
        };
        assert!(evaluate(&decoded, &unknown_swap, None).is_empty());
    }

    #[test]
    fn unknown_facts_satisfy_only_exists_false() {
        let none = Fact::Unknown;
        for (op, _) in OPERATORS {
            let literal = match op {
                Operator::In | Operator::NotIn => Value::TextList(vec!["x".into()]),
                Operator::Exists => Value::Bool(true),
                _ => Value::Text("x".into()),
            };
            assert!(!compare(&none, *op, &literal), "{op:?}");
        }
        assert!(compare(&none, Operator::Exists, &Value::Bool(false)));
    }

    #[test]
    fn explaining_records_every_node_in_pre_order() {
        let rule = Condition::Any(vec![
            test(Field::PhoneType, Operator::Eq, Value::Text("mobile".into())),
            Condition::Not(Box::new(test(
                Field::Flags,
                Operator::Contains,
                Value::Text("VIP".into()),
            ))),
            test(Field::SimSwapDaysAgo, Operator::Exists, Value::Bool(true)),
        ]);
        assert_eq!(rule.nodes(), 5);
        let program = Program { rules: vec![rule] };
        let mut outcomes = Vec::new();
        assert_eq!(evaluate(&program, &event(), Some(&mut outcomes)), vec![0]);
        let summary: Vec<(u32, bool, Option<&str>)> = outcomes
            .iter()
            .map(|o| (o.node, o.matched, o.value.as_deref()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (0, true, None),
                (1, false, Some("\"voip\"")),
                (2, false, None),
                (3, true, Some("[\"vip\"]")),
                (4, true, Some("3")),
            ]
        );
    }

    #[test]
    fn operators_fit_only_their_types() {
        assert_eq!(Operator::Lt.fits(FieldType::Text), None);
        assert_eq!(
            Operator::Contains.fits(FieldType::TextList),
            Some(Operand::Text)
        );
        assert_eq!(Operator::In.fits(FieldType::Bool), None);
        assert_eq!(Operator::StartsWith.fits(FieldType::Number), None);
        for (op, name) in OPERATORS {
            assert_eq!(Operator::from_name(name), Some(*op));
            assert_eq!(op.name(), *name);
        }
    }

    #[test]
    fn a_bounded_evaluation_agrees_with_the_unbounded_one_and_counts_its_steps() {
        let rule = Condition::Any(vec![
            test(Field::PhoneType, Operator::Eq, Value::Text("mobile".into())),
            Condition::Not(Box::new(test(
                Field::Flags,
                Operator::Contains,
                Value::Text("VIP".into()),
            ))),
            test(Field::SimSwapDaysAgo, Operator::Exists, Value::Bool(true)),
        ]);
        let program = Program {
            rules: vec![rule.clone(), rule],
        };
        for explain in [false, true] {
            let mut outcomes = Vec::new();
            let unbounded = evaluate(&program, &event(), explain.then_some(&mut outcomes));
            let bounded = evaluate_bounded(&program, &event(), explain, u64::MAX).expect("fits");
            assert_eq!(bounded.matched, unbounded);
            assert_eq!(bounded.explanation, outcomes);
            assert!(bounded.steps > 0);
            // Exactly the steps it took fit; one fewer does not.
            let exact = evaluate_bounded(&program, &event(), explain, bounded.steps);
            assert_eq!(exact.as_ref().map(|e| e.steps), Ok(bounded.steps));
            assert_eq!(
                evaluate_bounded(&program, &event(), explain, bounded.steps - 1),
                Err(BudgetExceeded {
                    budget: bounded.steps - 1
                })
            );
        }
    }

    #[test]
    fn a_costly_comparison_is_refused_before_it_runs() {
        struct Long(String);
        impl Facts for Long {
            fn fact(&self, field: Field) -> Fact<'_> {
                match field {
                    Field::ApplicantId => Fact::Text(&self.0),
                    _ => Fact::Unknown,
                }
            }
        }
        // The worst case of `contains`: every window compared in full.
        let facts = Long("a".repeat(10_000));
        let needle = format!("{}b", "a".repeat(99));
        let program = Program {
            rules: vec![test(
                Field::ApplicantId,
                Operator::Contains,
                Value::Text(needle),
            )],
        };
        let windows = 10_000 - 100 + 1;
        let worst = 1 + 1 + windows * 100;
        let fits = evaluate_bounded(&program, &facts, false, worst).expect("fits");
        assert_eq!((fits.matched.len(), fits.steps), (0, worst));
        assert!(evaluate_bounded(&program, &facts, false, worst - 1).is_err());
        // Explaining also pays for the value it writes.
        assert!(evaluate_bounded(&program, &facts, true, worst).is_err());
    }

    #[test]
    fn json_rendering_escapes_text() {
        assert_eq!(Fact::Text("a\"b\\\n").to_json(), r#""a\"b\\\n""#);
        assert_eq!(Fact::Number(7.0).to_json(), "7");
        assert_eq!(Fact::Number(0.5).to_json(), "0.5");
    }
}
