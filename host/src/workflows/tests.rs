//! Validation of workflow rules: the seed's bodies compile, and every kind of mistake is
//! refused with the path of the spot.

use serde_json::json;

use super::*;

fn seed_voip() -> Json {
    json!({
        "rule_id": "otp_for_voip",
        "trigger": "phone_lookup_complete",
        "conditions": {"all": [
            {"field": "phone_type", "operator": "eq", "value": "voip"},
            {"field": "phone_otp_verified", "operator": "eq", "value": false}
        ]},
        "actions": [
            {"type": "request_info", "info_needed": "Phone verification required"},
            {"type": "send_otp", "channel": "sms"}
        ]
    })
}

fn refused(body: Json) -> (String, String) {
    match definition(&body, None) {
        Err(FlowError::Invalid { field, message }) => (field, message),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

fn with(path: &str, value: Json) -> Json {
    let mut body = seed_voip();
    let mut target = &mut body;
    let parts: Vec<&str> = path.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        target = match part.parse::<usize>() {
            Ok(i) => &mut target[i],
            Err(_) => &mut target[*part],
        };
    }
    let last = parts[parts.len() - 1];
    match last.parse::<usize>() {
        Ok(i) => target[i] = value,
        Err(_) => target[last] = value,
    }
    body
}

#[test]
fn the_seed_rules_compile_verbatim() {
    let voip = definition(&seed_voip(), None).expect("valid");
    assert_eq!(voip.rule_id, "otp_for_voip");
    assert_eq!(voip.trigger, Trigger::PhoneLookupComplete);
    assert_eq!(voip.actions.len(), 2);
    let paths: Vec<&str> = voip
        .compiled
        .nodes
        .iter()
        .map(|n| n.path.as_str())
        .collect();
    assert_eq!(
        paths,
        ["conditions", "conditions.all[0]", "conditions.all[1]"]
    );
    assert_eq!(voip.compiled.nodes.len(), voip.compiled.condition.nodes());
    let swap = definition(
        &json!({
            "rule_id": "flag_sim_swap",
            "trigger": "phone_lookup_complete",
            "conditions": {"all": [{"field": "sim_swap_days_ago", "operator": "lt", "value": 7}]},
            "actions": [
                {"type": "add_flag", "flag": "recent_sim_swap"},
                {"type": "create_case", "case_type": "fraud", "priority": "high",
                 "title": "Recent SIM swap detected"}
            ]
        }),
        None,
    )
    .expect("valid");
    assert_eq!(swap.actions[0].kind(), "add_flag");
}

#[test]
fn nesting_numbers_nodes_in_pre_order() {
    let body = with(
        "conditions",
        json!({"any": [
            {"not": {"field": "flags", "operator": "contains", "value": "vip"}},
            {"all": [
                {"field": "risk_score", "operator": "gte", "value": 60},
                {"field": "country", "operator": "in", "value": ["NG", "GH"]}
            ]}
        ]}),
    );
    let compiled = definition(&body, None).expect("valid").compiled;
    let paths: Vec<&str> = compiled.nodes.iter().map(|n| n.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "conditions",
            "conditions.any[0]",
            "conditions.any[0].not",
            "conditions.any[1]",
            "conditions.any[1].all[0]",
            "conditions.any[1].all[1]",
        ]
    );
    assert_eq!(compiled.nodes.len(), compiled.condition.nodes());
}

#[test]
fn every_mistake_names_its_spot() {
    let deep = (0..MAX_DEPTH).fold(
        json!({"field": "risk_score", "operator": "gt", "value": 1}),
        |inner, _| json!({"not": inner}),
    );
    let wide: Vec<Json> = (0..MAX_CHILDREN + 1)
        .map(|_| json!({"field": "risk_score", "operator": "gt", "value": 1}))
        .collect();
    let leaf = json!({"field": "risk_score", "operator": "gt", "value": 1});
    let many: Vec<Json> = (0..20)
        .map(|_| json!({"all": [leaf.clone(), leaf.clone(), leaf.clone()]}))
        .collect();
    let long = "x".repeat(MAX_TEXT + 1);
    let cases: Vec<(Json, &str, &str)> = vec![
        (json!([1]), "body", "object"),
        (with("bogus", json!(1)), "bogus", "unknown field"),
        (with("rule_id", json!("has space")), "rule_id", "letters"),
        (with("rule_id", json!(7)), "rule_id", "string"),
        (
            with("trigger", json!("on_lunch")),
            "trigger",
            "unknown trigger",
        ),
        (
            with("conditions", json!("voip")),
            "conditions",
            "must be an object",
        ),
        (
            with("conditions/all/0/field", json!("shoe_size")),
            "conditions.all[0].field",
            "unknown field",
        ),
        (
            with("conditions/all/0/operator", json!("like")),
            "conditions.all[0].operator",
            "unknown operator",
        ),
        (
            with("conditions/all/0/operator", json!("lt")),
            "conditions.all[0].operator",
            "does not apply to phone_type",
        ),
        (
            with("conditions/all/0/value", json!(5)),
            "conditions.all[0].value",
            "must be a string",
        ),
        (
            with("conditions/all/0/value", json!("vopi")),
            "conditions.all[0].value",
            "never a value of phone_type",
        ),
        (
            with("conditions/all/1/value", json!("false")),
            "conditions.all[1].value",
            "true or false",
        ),
        (
            with(
                "conditions/all/0",
                json!({"field": "risk_score", "operator": "in", "value": [1, "two"]}),
            ),
            "conditions.all[0].value[1]",
            "must be a number",
        ),
        (
            with(
                "conditions/all/0",
                json!({"field": "country", "operator": "in", "value": []}),
            ),
            "conditions.all[0].value",
            "between 1 and",
        ),
        (
            with(
                "conditions/all/0",
                json!({"field": "roaming", "operator": "in", "value": [true]}),
            ),
            "conditions.all[0].operator",
            "does not apply",
        ),
        (
            with(
                "conditions/all/0",
                json!({"field": "country", "operator": "eq"}),
            ),
            "conditions.all[0].value",
            "is required",
        ),
        (
            with(
                "conditions/all/0",
                json!({"field": "country", "operator": "eq", "value": "US", "note": 1}),
            ),
            "conditions.all[0].note",
            "unknown key",
        ),
        (
            with("conditions/all/0/value", json!(long)),
            "conditions.all[0].value",
            "at most",
        ),
        (
            with("conditions", json!({"all": []})),
            "conditions.all",
            "at least one",
        ),
        (
            with("conditions", json!({"all": [], "any": []})),
            "conditions",
            "both all and any",
        ),
        (
            with("conditions", json!({"not": {"field": "roaming"}, "x": 1})),
            "conditions.x",
            "no other keys",
        ),
        (
            with("conditions", deep),
            "conditions.not.not.not.not.not.not.not.not",
            "deeper",
        ),
        (
            with("conditions", json!({"any": wide})),
            "conditions.any",
            "at most",
        ),
        (
            with("conditions", json!({"any": many})),
            "conditions.any[",
            "at most 64",
        ),
        (with("actions", json!([])), "actions", "between 1 and"),
        (
            with("actions/0", json!({"type": "teleport"})),
            "actions[0].type",
            "unknown action",
        ),
        (
            with("actions/0", json!({"info_needed": "x"})),
            "actions[0].type",
            "is required",
        ),
        (
            with(
                "actions/1",
                json!({"type": "send_otp", "channel": "pigeon"}),
            ),
            "actions[1]",
            "unknown variant",
        ),
        (
            with("actions/1", json!({"type": "add_flag"})),
            "actions[1]",
            "missing field `flag`",
        ),
        (
            with(
                "actions/1",
                json!({"type": "create_case", "case_type": "fraud", "priority": "urgent", "title": "t"}),
            ),
            "actions[1].priority",
            "low, medium, high, critical",
        ),
        (
            with("actions/1", json!({"type": "add_flag", "flag": " "})),
            "actions[1].flag",
            "1 to",
        ),
        (
            with(
                "actions/1",
                json!({"type": "set_risk", "factor": "f", "contribution": 500, "details": "d"}),
            ),
            "actions[1].contribution",
            "between -100 and 100",
        ),
        (
            with(
                "conditions",
                json!({"any": (0..30).map(|_| json!({"field": "carrier_name", "operator": "in",
                    "value": vec!["x".repeat(MAX_TEXT); 20]})).collect::<Vec<_>>()}),
            ),
            "conditions",
            "a rule may take at most",
        ),
        (with("enabled", json!("yes")), "enabled", "true or false"),
        (with("order", json!(1.5)), "order", "whole number"),
        (with("description", json!(long)), "description", "at most"),
    ];
    for (body, field, message) in cases {
        let (got_field, got_message) = refused(body.clone());
        assert!(
            got_field.starts_with(field),
            "{body}: field {got_field:?}, expected {field:?} ({got_message})"
        );
        assert!(
            got_message.contains(message),
            "{body}: message {got_message:?} lacks {message:?}"
        );
    }
}

#[test]
fn a_replacement_may_omit_the_id_but_not_contradict_the_url() {
    let mut body = seed_voip();
    body.as_object_mut().expect("object").remove("rule_id");
    assert_eq!(
        definition(&body, Some("from_url")).expect("valid").rule_id,
        "from_url"
    );
    assert!(definition(&seed_voip(), Some("otp_for_voip")).is_ok());
    match definition(&seed_voip(), Some("other")) {
        Err(FlowError::Invalid { field, .. }) => assert_eq!(field, "rule_id"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn exists_defaults_to_true_and_the_catalogue_lists_every_field() {
    let body = with(
        "conditions",
        json!({"field": "sim_swap_days_ago", "operator": "exists"}),
    );
    let compiled = definition(&body, None).expect("valid").compiled;
    assert_eq!(
        compiled.condition,
        Condition::Test {
            field: Field::SimSwapDaysAgo,
            op: Operator::Exists,
            value: Value::Bool(true)
        }
    );
    let catalogue = catalogue();
    assert_eq!(
        catalogue["fields"].as_array().expect("fields").len(),
        FIELDS.len()
    );
    for name in [
        "phone_type",
        "country",
        "carrier_name",
        "carrier_type",
        "risk_score",
        "risk_level",
        "risk_factors",
        "phone_otp_verified",
        "sim_swap_days_ago",
        "ported_days_ago",
        "otp_attempts",
        "otp_resends",
        "channel",
        "applicant_id",
        "applicant_country",
        "flags",
    ] {
        assert!(Field::from_name(name).is_some(), "{name}");
    }
}
