//! Declarative workflow rules end to end: seed 004's rules posted verbatim and firing
//! on real lookups (with the CAMARA simulator behind the lookup adapter), every
//! operator and nesting form through the sandboxed test endpoint, every validation
//! refusal naming its spot, the rules API (CRUD, enable/disable, order, tenant
//! isolation), changes taking effect on the next request and surviving a restart, and
//! declarative rules sharing one run order with code plugins.

use serde_json::{json, Value};

use dialgate::clock::Clock as _;

use crate::sims::CamaraSim;
use crate::support::*;

/// Seed 004's first rule, verbatim.
fn seed_otp_for_voip() -> Value {
    serde_json::from_str(
        r#"{"rule_id":"otp_for_voip","trigger":"phone_lookup_complete","conditions":{"all":[{"field":"phone_type","operator":"eq","value":"voip"},{"field":"phone_otp_verified","operator":"eq","value":false}]},"actions":[{"type":"request_info","info_needed":"Phone verification required"},{"type":"send_otp","channel":"sms"}]}"#,
    )
    .expect("seed JSON")
}

/// Seed 004's second rule, verbatim.
fn seed_flag_sim_swap() -> Value {
    serde_json::from_str(
        r#"{"rule_id":"flag_sim_swap","trigger":"phone_lookup_complete","conditions":{"all":[{"field":"sim_swap_days_ago","operator":"lt","value":7}]},"actions":[{"type":"add_flag","flag":"recent_sim_swap"},{"type":"create_case","case_type":"fraud","priority":"high","title":"Recent SIM swap detected"}]}"#,
    )
    .expect("seed JSON")
}

/// One comparison.
fn cond(field: &str, operator: &str, value: Value) -> Value {
    json!({"field": field, "operator": operator, "value": value})
}

/// A rule at `phone_lookup_complete` with `conditions` and `actions`.
fn rule_body(id: &str, conditions: Value, actions: Value) -> Value {
    json!({
        "rule_id": id,
        "trigger": "phone_lookup_complete",
        "conditions": conditions,
        "actions": actions,
    })
}

/// A rule at `phone_lookup_complete` that adds `flag` when `conditions` hold.
fn flag_rule(id: &str, conditions: Value, flag: &str) -> Value {
    rule_body(id, conditions, json!([{"type": "add_flag", "flag": flag}]))
}

/// Creates a rule and expects it stored.
async fn create(server: &TestServer, tenant: &Tenant, body: Value) -> Value {
    server
        .post("/v1/workflows/rules", &tenant.key, body)
        .await
        .expect(201)
        .clone()
}

/// The tenant's rules (with an optional query, without the `?`).
async fn list(server: &TestServer, tenant: &Tenant, query: &str) -> Vec<Value> {
    let path = if query.is_empty() {
        "/v1/workflows/rules".to_owned()
    } else {
        format!("/v1/workflows/rules?{query}")
    };
    let body = server.get(&path, &tenant.key).await.expect(200).clone();
    body["rules"].as_array().expect("rules array").clone()
}

/// The ids of `rules`.
fn ids(rules: &[Value]) -> Vec<String> {
    rules
        .iter()
        .map(|rule| rule["rule_id"].as_str().expect("rule_id").to_owned())
        .collect()
}

async fn lookup(server: &TestServer, tenant: &Tenant, body: Value) -> Value {
    server
        .post("/v1/phone/lookup", &tenant.key, body)
        .await
        .expect(200)
        .clone()
}

/// A lookup that names an applicant (the tenant must not require a code), so it
/// decides a stored verification; returns the answer and the report.
async fn decided(
    server: &TestServer,
    tenant: &Tenant,
    phone: &str,
    applicant: &str,
) -> (Value, Value) {
    let answer = lookup(
        server,
        tenant,
        json!({"phone": phone, "applicant_id": applicant}),
    )
    .await;
    let id = answer["verification_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no verification id: {answer}"));
    let report = server.report(tenant, id).await;
    (answer, report)
}

/// `(source, name, version)` of every rule run on a report, in order, at `trigger`.
fn fired(report: &Value, trigger: &str) -> Vec<(String, String, String)> {
    report["rules_fired"]
        .as_array()
        .unwrap_or_else(|| panic!("no rules_fired: {report}"))
        .iter()
        .filter(|run| run["trigger"] == trigger)
        .map(|run| {
            (
                run["source"].as_str().expect("source").to_owned(),
                run["name"].as_str().expect("name").to_owned(),
                run["version"].as_str().expect("version").to_owned(),
            )
        })
        .collect()
}

fn run(source: &str, name: &str, version: &str) -> (String, String, String) {
    (source.to_owned(), name.to_owned(), version.to_owned())
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().expect("string").to_owned())
        .collect()
}

/// Uploads the in-tree `echo` rule bound to `phone_lookup_complete` at `order`, with
/// `config`; returns its id. It always adds a flag describing the event
/// (`phone_lookup_complete|…`) and performs the configured `action`.
async fn echo(server: &TestServer, tenant: &Tenant, order: i32, config: Value) -> String {
    let id = upload_echo(server, tenant, "phone_lookup_complete", config).await;
    server
        .put(
            &format!("/v1/plugins/{id}/bindings"),
            &tenant.key,
            json!({"triggers": ["phone_lookup_complete"], "order": order}),
        )
        .await
        .expect(200);
    id
}

/// Whether `flags` holds the echo rule's flag.
fn has_echo_flag(flags: &Value) -> bool {
    strings(flags)
        .iter()
        .any(|flag| flag.starts_with("phone_lookup_complete|"))
}

/// Installs the CAMARA lookup adapter pointed at `sim`, granted.
async fn camara(server: &TestServer, tenant: &Tenant, sim: &CamaraSim) {
    install_camara(server, tenant, sim, true).await;
}

/// `POST /v1/workflows/rules/test`, expected to answer 200.
async fn probe(server: &TestServer, tenant: &Tenant, body: Value) -> Value {
    server
        .post("/v1/workflows/rules/test", &tenant.key, body)
        .await
        .expect(200)
        .clone()
}

/// A rich event: a US VoIP number with a known SIM swap, an applicant from GB, and
/// several fields left unknown (porting, line status, roaming, channel).
fn rich_event() -> Value {
    json!({
        "trigger": "phone_lookup_complete",
        "phone": {
            "e164": "+14155552671",
            "line_type": "voip",
            "country": "US",
            "carrier_name": "Bandwidth.com",
            "risk_score": 40,
            "risk_level": "medium",
            "risk_factors": [{"factor": "voip_number", "contribution": 15}],
            "sim_swap_days_ago": 3
        },
        "verification": {
            "status": "Not Finished",
            "flags": ["vip"],
            "otp_verified": false,
            "attempts": 2
        },
        "applicant_id": "a1",
        "applicant_country": "GB"
    })
}

#[tokio::test]
async fn seed_004_rules_posted_verbatim_require_a_code_for_voip_and_flag_a_recent_sim_swap() {
    let (server, tenant) = TestServer::with_tenant().await;
    let sim = CamaraSim::start().await;
    server
        .settings(
            &tenant,
            json!({"require_otp": false, "sim_swap_check": true, "sim_swap_threshold_days": 7}),
        )
        .await;
    camara(&server, &tenant, &sim).await;

    // Both seed bodies are accepted verbatim and stored as given.
    let voip = create(&server, &tenant, seed_otp_for_voip()).await;
    assert_eq!(
        keys(&voip),
        sorted(&[
            "rule_id",
            "tenant_id",
            "trigger",
            "conditions",
            "actions",
            "enabled",
            "order",
            "revision",
            "created_at",
            "updated_at"
        ]),
        "{voip}"
    );
    assert_eq!(voip["rule_id"], "otp_for_voip");
    assert_eq!(voip["tenant_id"], tenant.id.as_str());
    assert_eq!(voip["trigger"], "phone_lookup_complete");
    assert_eq!(voip["conditions"], seed_otp_for_voip()["conditions"]);
    assert_eq!(voip["actions"], seed_otp_for_voip()["actions"]);
    assert_eq!(voip["enabled"], true);
    assert_eq!(voip["order"], 100, "the trigger's first rule");
    assert_eq!(voip["revision"], 1);
    assert_eq!(timestamp(&voip["created_at"]), server.clock.now());
    assert_eq!(voip["created_at"], voip["updated_at"]);
    let swap = create(&server, &tenant, seed_flag_sim_swap()).await;
    assert_eq!(swap["conditions"], seed_flag_sim_swap()["conditions"]);
    assert_eq!(swap["actions"], seed_flag_sim_swap()["actions"]);
    assert_eq!(swap["order"], 101, "after the trigger's others");

    // The same id again is a conflict, and leaves the stored rule alone.
    let mut again = seed_otp_for_voip();
    again["actions"] = json!([{"type": "decline", "reason": "overwritten"}]);
    server
        .post("/v1/workflows/rules", &tenant.key, again)
        .await
        .error(409, "rule_exists");
    let stored = server
        .get("/v1/workflows/rules/otp_for_voip", &tenant.key)
        .await;
    assert_eq!(stored.expect(200), &voip);

    // A UK VoIP number with an applicant: a code by SMS is required and info requested;
    // the verification stays open.
    sim.swapped(
        UK_VOIP,
        Some(server.clock.now() - chrono::Duration::days(60)),
    );
    let (answer, report) = decided(&server, &tenant, UK_VOIP, "voip-applicant").await;
    assert_eq!(answer["status"], "Not Finished", "{answer}");
    assert_eq!(answer["otp_required"], "sms", "{answer}");
    assert_eq!(
        answer["info_requested"],
        json!(["Phone verification required"])
    );
    assert_eq!(answer["flags"], json!([]), "the SIM swap is old: {answer}");
    assert!(answer.get("cases").is_none(), "{answer}");
    assert_eq!(
        fired(&report, "phone_lookup_complete"),
        vec![run("workflow", "otp_for_voip", "r1")],
        "{report}"
    );
    let voip_run = &report["rules_fired"][0];
    assert_eq!(voip_run["plugin_id"], "otp_for_voip");
    assert_eq!(voip_run["actions"], seed_otp_for_voip()["actions"]);
    assert!(voip_run.get("error").is_none(), "{voip_run}");
    assert!(voip_run["fuel"].as_u64().expect("fuel") > 0, "{voip_run}");
    let id = answer["verification_id"].as_str().expect("id").to_owned();
    let verified = server
        .send_and_verify(&tenant, UK_VOIP, "voip-applicant")
        .await;
    assert_eq!(verified["verification_id"], id.as_str());
    let report = server.report(&tenant, &id).await;
    assert_eq!(report["otp_required"], "sms");
    assert_eq!(
        report["info_requested"],
        json!(["Phone verification required"])
    );
    assert_eq!(report["phone"]["verification_method"], "sms", "{report}");

    // A mobile number is not touched by the VoIP rule.
    sim.swapped(
        UZ_BEELINE,
        Some(server.clock.now() - chrono::Duration::days(60)),
    );
    let (mobile, mobile_report) = decided(&server, &tenant, UZ_BEELINE, "mobile").await;
    assert_eq!(mobile["status"], "Approved", "{mobile}");
    assert!(mobile.get("otp_required").is_none(), "{mobile}");
    assert_eq!(mobile_report["rules_fired"], json!([]), "{mobile_report}");

    // A SIM swapped two days ago: flagged, and a high-priority fraud case is opened.
    let recent = uz_number(1);
    sim.swapped(
        &recent,
        Some(server.clock.now() - chrono::Duration::days(2)),
    );
    let (swapped, swapped_report) = decided(&server, &tenant, &recent, "swapped").await;
    assert_eq!(swapped["sim_swap"]["days_since_change"], 2, "{swapped}");
    assert_eq!(swapped["flags"], json!(["recent_sim_swap"]), "{swapped}");
    assert!(swapped.get("otp_required").is_none(), "{swapped}");
    assert_eq!(swapped["cases"].as_array().map(Vec::len), Some(1));
    assert_eq!(swapped["cases"][0]["case_type"], "fraud");
    assert_eq!(swapped["cases"][0]["priority"], "high");
    assert_eq!(swapped["cases"][0]["title"], "Recent SIM swap detected");
    assert_eq!(
        fired(&swapped_report, "phone_lookup_complete"),
        vec![run("workflow", "flag_sim_swap", "r1")],
        "{swapped_report}"
    );
    assert_eq!(
        swapped_report["rules_fired"][0]["actions"],
        seed_flag_sim_swap()["actions"]
    );
    assert_eq!(swapped_report["flags"], json!(["recent_sim_swap"]));
    let swapped_id = swapped["verification_id"].as_str().expect("id");
    let cases = server
        .get("/v1/cases", &tenant.key)
        .await
        .expect(200)
        .clone();
    let cases = cases["cases"].as_array().expect("cases").clone();
    assert_eq!(cases.len(), 1, "{cases:?}");
    assert_eq!(cases[0]["case_type"], "fraud");
    assert_eq!(cases[0]["priority"], "high");
    assert_eq!(cases[0]["title"], "Recent SIM swap detected");
    assert_eq!(cases[0]["verification_id"], swapped_id);
    assert_eq!(cases[0]["opened_by"], "flag_sim_swap");
    assert_eq!(cases[0]["status"], "open");

    // Seven days is not "less than 7".
    let week = uz_number(2);
    sim.swapped(&week, Some(server.clock.now() - chrono::Duration::days(7)));
    let (quiet, quiet_report) = decided(&server, &tenant, &week, "week").await;
    assert_eq!(quiet["sim_swap"]["days_since_change"], 7);
    assert_eq!(quiet["flags"], json!([]), "{quiet}");
    assert_eq!(quiet_report["rules_fired"], json!([]));
    let cases = server
        .get("/v1/cases", &tenant.key)
        .await
        .expect(200)
        .clone();
    assert_eq!(cases["cases"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn every_operator_and_nesting_form_evaluates_as_documented_in_the_sandbox() {
    let (server, tenant) = TestServer::with_tenant().await;
    let c = cond;
    // (condition, expected match) against `rich_event()`.
    let table: Vec<(Value, bool)> = vec![
        // eq, on every type; text ignores ASCII case.
        (c("risk_score", "eq", json!(40)), true),
        (c("risk_score", "eq", json!(41)), false),
        (c("phone_type", "eq", json!("VoIP")), true),
        (c("phone_type", "eq", json!("mobile")), false),
        (c("carrier_name", "eq", json!("BANDWIDTH.com")), true),
        (c("phone_otp_verified", "eq", json!(false)), true),
        (c("phone_otp_verified", "eq", json!(true)), false),
        (c("verification_status", "eq", json!("not finished")), true),
        (c("trigger", "eq", json!("phone_lookup_complete")), true),
        (c("trigger", "eq", json!("otp_sent")), false),
        (c("applicant_id", "eq", json!("A1")), true),
        (c("applicant_country", "eq", json!("gb")), true),
        (c("otp_attempts", "eq", json!(2)), true),
        (c("otp_resends", "eq", json!(0)), true),
        (c("risk_level", "eq", json!("MEDIUM")), true),
        (c("carrier_type", "eq", json!("voip")), true),
        (c("country_mismatch", "eq", json!(true)), true),
        (c("carrier_is_original", "eq", json!(false)), true),
        // ne
        (c("risk_score", "ne", json!(41)), true),
        (c("risk_score", "ne", json!(40)), false),
        (c("country", "ne", json!("us")), false),
        (c("country", "ne", json!("GB")), true),
        (c("phone_otp_verified", "ne", json!(true)), true),
        // lt lte gt gte, at and around the boundary
        (c("sim_swap_days_ago", "lt", json!(7)), true),
        (c("sim_swap_days_ago", "lt", json!(3)), false),
        (c("sim_swap_days_ago", "lte", json!(3)), true),
        (c("sim_swap_days_ago", "lte", json!(2.5)), false),
        (c("risk_score", "gt", json!(39.5)), true),
        (c("risk_score", "gt", json!(40)), false),
        (c("risk_score", "gte", json!(40)), true),
        (c("risk_score", "gte", json!(41)), false),
        // in / not_in, text and numbers
        (c("country", "in", json!(["gb", "us"])), true),
        (c("country", "in", json!(["GB", "CA"])), false),
        (c("risk_score", "in", json!([10, 40])), true),
        (c("risk_score", "in", json!([41])), false),
        (c("country", "not_in", json!(["GB", "CA"])), true),
        (c("country", "not_in", json!(["Us"])), false),
        (c("risk_score", "not_in", json!([40])), false),
        (c("risk_score", "not_in", json!([1, 2])), true),
        // contains: a substring of text, a member of a list
        (c("carrier_name", "contains", json!("WIDTH")), true),
        (c("carrier_name", "contains", json!("verizon")), false),
        (c("flags", "contains", json!("VIP")), true),
        (c("flags", "contains", json!("vi")), false),
        (c("risk_factors", "contains", json!("voip_number")), true),
        (
            c("risk_factors", "contains", json!("disposable_number")),
            false,
        ),
        // starts_with
        (c("phone", "starts_with", json!("+1415")), true),
        (c("phone", "starts_with", json!("+44")), false),
        (c("carrier_name", "starts_with", json!("band")), true),
        (c("carrier_name", "starts_with", json!("width")), false),
        // exists: known, unknown, and the default `true`
        (c("sim_swap_days_ago", "exists", json!(true)), true),
        (c("sim_swap_days_ago", "exists", json!(false)), false),
        (
            json!({"field": "sim_swap_days_ago", "operator": "exists"}),
            true,
        ),
        (
            json!({"field": "ported_days_ago", "operator": "exists"}),
            false,
        ),
        (c("ported_days_ago", "exists", json!(false)), true),
        (c("roaming", "exists", json!(false)), true),
        // An unknown value satisfies nothing else, not even the negative operators.
        (c("ported_days_ago", "ne", json!(5)), false),
        (c("ported_days_ago", "not_in", json!([1, 2])), false),
        (c("ported_days_ago", "lt", json!(1000)), false),
        (c("line_status", "ne", json!("active")), false),
        (c("line_status", "not_in", json!(["active"])), false),
        (c("roaming", "eq", json!(false)), false),
        (c("roaming", "ne", json!(true)), false),
        (c("ported", "ne", json!(true)), false),
        (c("channel", "not_in", json!(["sms"])), false),
        (c("channel", "ne", json!("sms")), false),
        // all / any / not, and their nesting
        (
            json!({"all": [c("risk_score", "eq", json!(40)), c("country", "eq", json!("US"))]}),
            true,
        ),
        (
            json!({"all": [c("risk_score", "eq", json!(40)), c("country", "eq", json!("GB"))]}),
            false,
        ),
        (
            json!({"any": [c("country", "eq", json!("GB")), c("risk_score", "eq", json!(40))]}),
            true,
        ),
        (
            json!({"any": [c("country", "eq", json!("GB")), c("risk_score", "eq", json!(41))]}),
            false,
        ),
        (json!({"not": c("country", "eq", json!("GB"))}), true),
        (json!({"not": c("country", "eq", json!("US"))}), false),
        // `not` of an unknown comparison is true: unknown is "no match", negated.
        (json!({"not": c("roaming", "eq", json!(true))}), true),
        (
            json!({"not": {"not": c("country", "eq", json!("US"))}}),
            true,
        ),
        (
            json!({"any": [
                {"all": [c("phone_type", "eq", json!("mobile")), c("risk_score", "gt", json!(0))]},
                {"not": {"any": [c("flags", "contains", json!("vip")), c("roaming", "exists", json!(true))]}}
            ]}),
            false,
        ),
        (
            json!({"all": [
                {"any": [c("phone_type", "eq", json!("mobile")), c("phone_type", "eq", json!("voip"))]},
                {"not": {"all": [c("flags", "contains", json!("vip")), c("risk_score", "gt", json!(50))]}},
                {"any": [{"not": c("sim_swap_days_ago", "exists", json!(true))}, c("sim_swap_days_ago", "lte", json!(3))]}
            ]}),
            true,
        ),
    ];
    let drafts: Vec<Value> = table
        .iter()
        .enumerate()
        .map(|(i, (condition, _))| {
            flag_rule(&format!("case{i}"), condition.clone(), &format!("f{i}"))
        })
        .collect();
    let answer = probe(
        &server,
        &tenant,
        json!({"event": rich_event(), "rules": drafts}),
    )
    .await;
    assert!(answer.get("error").is_none(), "{answer}");
    let rules = answer["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), table.len());
    let mut wrong = Vec::new();
    for (i, (condition, expected)) in table.iter().enumerate() {
        assert_eq!(rules[i]["rule_id"], format!("case{i}"));
        if rules[i]["matched"] != *expected {
            wrong.push(format!(
                "{condition} should {}match",
                if *expected { "" } else { "not " }
            ));
        }
        // The root's outcome is the rule's.
        assert_eq!(
            rules[i]["conditions"][0]["matched"], *expected,
            "{condition}"
        );
    }
    assert!(wrong.is_empty(), "wrong outcomes:\n{}", wrong.join("\n"));
    let expected_ids: Vec<String> = table
        .iter()
        .enumerate()
        .filter(|(_, (_, hit))| *hit)
        .map(|(i, _)| format!("case{i}"))
        .collect();
    assert_eq!(strings(&answer["matched"]), expected_ids);
    let expected_actions: Vec<Value> = table
        .iter()
        .enumerate()
        .filter(|(_, (_, hit))| *hit)
        .map(|(i, _)| json!({"type": "add_flag", "flag": format!("f{i}")}))
        .collect();
    assert_eq!(answer["actions"], Value::Array(expected_actions));
    assert!(answer["fuel"].as_u64().expect("fuel") > 0, "{answer}");
    assert!(answer["micros"].as_u64().is_some(), "{answer}");
    assert_eq!(answer["trigger"], "phone_lookup_complete");
    assert_eq!(answer["event"]["tenant_id"], tenant.id.as_str());
    assert_eq!(answer["event"]["phone"]["e164"], "+14155552671");

    // The explanation: every node in pre-order with its path, kind, field, value, the
    // event's actual value (null when unknown) and outcome.
    let explained = json!({"any": [
        c("phone_type", "eq", json!("mobile")),
        {"not": c("flags", "contains", json!("VIP"))},
        {"all": [
            c("sim_swap_days_ago", "lt", json!(7)),
            {"field": "ported_days_ago", "operator": "exists", "value": false},
            c("risk_factors", "contains", json!("voip_number")),
            c("country_mismatch", "eq", json!(true))
        ]}
    ]});
    let answer = probe(
        &server,
        &tenant,
        json!({"event": rich_event(), "rules": [
            rule_body("explain", explained, json!([{"type": "review"}])),
            {
                "rule_id": "off",
                "trigger": "phone_lookup_complete",
                "enabled": false,
                "conditions": c("country", "eq", json!("us")),
                "actions": [{"type": "decline", "reason": "never applied"}]
            },
            {
                "rule_id": "elsewhere",
                "trigger": "otp_verified",
                "conditions": c("country", "eq", json!("us")),
                "actions": [{"type": "decline", "reason": "another trigger"}]
            }
        ]}),
    )
    .await;
    let rules = answer["rules"].as_array().expect("rules");
    assert_eq!(
        ids(rules),
        vec!["explain", "off"],
        "a draft of another trigger is not evaluated: {answer}"
    );
    let explain = &rules[0];
    assert_eq!(explain["matched"], true);
    assert_eq!(explain["enabled"], true);
    assert_eq!(explain["order"], 100);
    assert_eq!(explain["actions"], json!([{"type": "review"}]));
    assert_eq!(
        explain["conditions"],
        json!([
            {"path": "conditions", "kind": "any", "matched": true},
            {"path": "conditions.any[0]", "kind": "eq", "field": "phone_type", "value": "mobile", "actual": "voip", "matched": false},
            {"path": "conditions.any[1]", "kind": "not", "matched": false},
            {"path": "conditions.any[1].not", "kind": "contains", "field": "flags", "value": "VIP", "actual": ["vip"], "matched": true},
            {"path": "conditions.any[2]", "kind": "all", "matched": true},
            {"path": "conditions.any[2].all[0]", "kind": "lt", "field": "sim_swap_days_ago", "value": 7, "actual": 3, "matched": true},
            {"path": "conditions.any[2].all[1]", "kind": "exists", "field": "ported_days_ago", "value": false, "actual": null, "matched": true},
            {"path": "conditions.any[2].all[2]", "kind": "contains", "field": "risk_factors", "value": "voip_number", "actual": ["voip_number"], "matched": true},
            {"path": "conditions.any[2].all[3]", "kind": "eq", "field": "country_mismatch", "value": true, "actual": true, "matched": true}
        ]),
        "{answer}"
    );
    // A disabled draft is evaluated and explained but neither matched nor applied.
    let off = &rules[1];
    assert_eq!(off["enabled"], false);
    assert_eq!(off["matched"], true);
    assert_eq!(off["order"], 101);
    assert_eq!(
        off["conditions"],
        json!([{"path": "conditions", "kind": "eq", "field": "country", "value": "us", "actual": "US", "matched": true}])
    );
    assert_eq!(answer["matched"], json!(["explain"]));
    assert_eq!(answer["actions"], json!([{"type": "review"}]));

    // Explaining never short-cuts: the children after a failing `all` member and after
    // a matching `any` member are still evaluated and shown with their actual values.
    let answer = probe(
        &server,
        &tenant,
        json!({"event": rich_event(), "rules": [
            rule_body("all_fails_first", json!({"all": [
                c("country", "eq", json!("GB")),
                c("risk_score", "eq", json!(40))
            ]}), json!([{"type": "review"}])),
            rule_body("any_hits_first", json!({"any": [
                c("country", "eq", json!("US")),
                c("risk_score", "eq", json!(41))
            ]}), json!([{"type": "review"}]))
        ]}),
    )
    .await;
    assert_eq!(
        answer["rules"][0]["conditions"],
        json!([
            {"path": "conditions", "kind": "all", "matched": false},
            {"path": "conditions.all[0]", "kind": "eq", "field": "country", "value": "GB", "actual": "US", "matched": false},
            {"path": "conditions.all[1]", "kind": "eq", "field": "risk_score", "value": 40, "actual": 40, "matched": true}
        ]),
        "{answer}"
    );
    assert_eq!(
        answer["rules"][1]["conditions"],
        json!([
            {"path": "conditions", "kind": "any", "matched": true},
            {"path": "conditions.any[0]", "kind": "eq", "field": "country", "value": "US", "actual": "US", "matched": true},
            {"path": "conditions.any[1]", "kind": "eq", "field": "risk_score", "value": 41, "actual": 40, "matched": false}
        ]),
        "{answer}"
    );

    // The event's trigger picks the drafts; `trigger` overrides the event's.
    let answer = probe(
        &server,
        &tenant,
        json!({"event": rich_event(), "trigger": "otp_verified", "rules": [
            {
                "rule_id": "at_verified",
                "trigger": "otp_verified",
                "conditions": c("trigger", "eq", json!("otp_verified")),
                "actions": [{"type": "approve"}]
            }
        ]}),
    )
    .await;
    assert_eq!(answer["trigger"], "otp_verified");
    assert_eq!(answer["matched"], json!(["at_verified"]));

    // A `block` ends the merged actions: later matches add nothing.
    let answer = probe(
        &server,
        &tenant,
        json!({"event": rich_event(), "rules": [
            flag_rule("before", c("country", "eq", json!("US")), "before"),
            rule_body("stopper", c("country", "eq", json!("US")), json!([{"type": "block", "reason": "stop here"}, {"type": "add_flag", "flag": "with_block"}])),
            flag_rule("after", c("country", "eq", json!("US")), "after"),
        ]}),
    )
    .await;
    assert_eq!(answer["matched"], json!(["before", "stopper"]), "{answer}");
    assert_eq!(
        answer["actions"],
        json!([
            {"type": "add_flag", "flag": "before"},
            {"type": "block", "reason": "stop here"},
            {"type": "add_flag", "flag": "with_block"}
        ])
    );
    assert_eq!(
        answer["rules"][2]["matched"], true,
        "evaluated all the same"
    );

    // Drafts run in their `order`, as stored rules would: an earlier-listed draft with
    // a later order runs after.
    let answer = probe(
        &server,
        &tenant,
        json!({"event": rich_event(), "rules": [
            {
                "rule_id": "late_block",
                "trigger": "phone_lookup_complete",
                "order": 200,
                "conditions": c("country", "eq", json!("US")),
                "actions": [{"type": "block", "reason": "late"}]
            },
            {
                "rule_id": "early_flag",
                "trigger": "phone_lookup_complete",
                "order": 10,
                "conditions": c("country", "eq", json!("US")),
                "actions": [{"type": "add_flag", "flag": "early"}]
            }
        ]}),
    )
    .await;
    assert_eq!(
        answer["matched"],
        json!(["early_flag", "late_block"]),
        "{answer}"
    );
    assert_eq!(
        answer["actions"],
        json!([{"type": "add_flag", "flag": "early"}, {"type": "block", "reason": "late"}])
    );
    assert_eq!(
        ids(answer["rules"].as_array().expect("rules")),
        vec!["early_flag", "late_block"],
        "rules are explained in run order"
    );

    // A malformed event names the spot; so does a malformed draft.
    let mut bad_event = rich_event();
    bad_event["phone"]["risk_score"] = json!("high");
    server
        .post(
            "/v1/workflows/rules/test",
            &tenant.key,
            json!({"event": bad_event, "rules": [flag_rule("x", c("country", "eq", json!("US")), "x")]}),
        )
        .await
        .invalid_field("event.phone.risk_score");
    server
        .post(
            "/v1/workflows/rules/test",
            &tenant.key,
            json!({"event": rich_event(), "rules": [
                flag_rule("ok", c("country", "eq", json!("US")), "x"),
                flag_rule("bad", json!({"all": [c("shoe_size", "eq", json!(1))]}), "x")
            ]}),
        )
        .await
        .invalid_field("rules[1].conditions.all[0].field");
}

/// A valid body to break one piece of at a time.
fn valid() -> Value {
    json!({
        "rule_id": "valid_rule",
        "trigger": "phone_lookup_complete",
        "conditions": {"all": [cond("phone_type", "eq", json!("voip"))]},
        "actions": [{"type": "add_flag", "flag": "ok"}, {"type": "review"}],
    })
}

/// `valid()` with `conditions` replaced.
fn with_conditions(conditions: Value) -> Value {
    let mut body = valid();
    body["conditions"] = conditions;
    body
}

/// `valid()` with `key` set to `value` (or removed when `Null`).
fn with(key: &str, value: Value) -> Value {
    let mut body = valid();
    let object = body.as_object_mut().expect("object");
    if value.is_null() {
        object.remove(key);
    } else {
        object.insert(key.to_owned(), value);
    }
    body
}

/// A chain of `levels` nested `not`s around a comparison.
fn nested_nots(levels: usize) -> Value {
    let mut condition = cond("risk_score", "gt", json!(1));
    for _ in 0..levels {
        condition = json!({ "not": condition });
    }
    condition
}

/// `{"all": [{"all": [31 comparisons]}, {"all": [n comparisons]}]}`: 34 + n nodes.
fn wide(n: usize) -> Value {
    let leaves = |count: usize| -> Vec<Value> {
        (0..count)
            .map(|i| cond("risk_score", "gt", json!(i)))
            .collect()
    };
    json!({"all": [{"all": leaves(31)}, {"all": leaves(n)}]})
}

#[tokio::test]
async fn every_malformed_rule_is_refused_with_an_error_naming_the_spot_and_nothing_is_stored() {
    let (server, tenant) = TestServer::with_tenant().await;
    let c = cond;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "unknown field",
            with_conditions(json!({"all": [c("shoe_size", "eq", json!(1))]})),
            "conditions.all[0].field",
        ),
        (
            "field not a string",
            with_conditions(json!({"all": [{"field": 7, "operator": "eq", "value": 1}]})),
            "conditions.all[0].field",
        ),
        (
            "missing field",
            with_conditions(json!({"all": [{"operator": "eq", "value": 1}]})),
            "conditions.all[0].field",
        ),
        (
            "unknown operator",
            with_conditions(json!({"all": [c("risk_score", "approx", json!(1))]})),
            "conditions.all[0].operator",
        ),
        (
            "lt on text",
            with_conditions(json!({"all": [c("phone_type", "lt", json!("voip"))]})),
            "conditions.all[0].operator",
        ),
        (
            "contains on a number",
            with_conditions(json!({"all": [c("risk_score", "contains", json!("4"))]})),
            "conditions.all[0].operator",
        ),
        (
            "eq on a list",
            with_conditions(json!({"all": [c("flags", "eq", json!("vip"))]})),
            "conditions.all[0].operator",
        ),
        (
            "in on a boolean",
            with_conditions(json!({"all": [c("roaming", "in", json!([true]))]})),
            "conditions.all[0].operator",
        ),
        (
            "starts_with on a number",
            with_conditions(json!({"all": [c("risk_score", "starts_with", json!("4"))]})),
            "conditions.all[0].operator",
        ),
        (
            "text for a number",
            with_conditions(json!({"all": [c("risk_score", "eq", json!("high"))]})),
            "conditions.all[0].value",
        ),
        (
            "text for a boolean",
            with_conditions(json!({"all": [c("phone_otp_verified", "eq", json!("false"))]})),
            "conditions.all[0].value",
        ),
        (
            "number for text",
            with_conditions(json!({"all": [c("country", "eq", json!(44))]})),
            "conditions.all[0].value",
        ),
        (
            "text for exists",
            with_conditions(json!({"all": [c("roaming", "exists", json!("yes"))]})),
            "conditions.all[0].value",
        ),
        (
            "missing value",
            with_conditions(json!({"all": [{"field": "country", "operator": "eq"}]})),
            "conditions.all[0].value",
        ),
        (
            "outside the vocabulary",
            with_conditions(json!({"all": [c("phone_type", "eq", json!("vopi"))]})),
            "conditions.all[0].value",
        ),
        (
            "risk level outside the vocabulary",
            with_conditions(json!({"all": [c("risk_level", "ne", json!("extreme"))]})),
            "conditions.all[0].value",
        ),
        (
            "not a list for in",
            with_conditions(json!({"all": [c("country", "in", json!("GB"))]})),
            "conditions.all[0].value",
        ),
        (
            "empty list for in",
            with_conditions(json!({"all": [c("country", "in", json!([]))]})),
            "conditions.all[0].value",
        ),
        (
            "a bad list item, nested",
            with_conditions(json!({"any": [
                c("risk_score", "gt", json!(1)),
                {"all": [c("phone_type", "in", json!(["voip", "mobile", "vopi"]))]}
            ]})),
            "conditions.any[1].all[0].value[2]",
        ),
        (
            "a number list with text",
            with_conditions(json!({"all": [c("risk_score", "not_in", json!([1, "two"]))]})),
            "conditions.all[0].value[1]",
        ),
        (
            "unknown key in a comparison",
            with_conditions(
                json!({"all": [{"field": "country", "operator": "eq", "value": "GB", "note": "x"}]}),
            ),
            "conditions.all[0].note",
        ),
        (
            "empty all",
            with_conditions(json!({"all": []})),
            "conditions.all",
        ),
        (
            "empty any, nested",
            with_conditions(json!({"all": [{"any": []}]})),
            "conditions.all[0].any",
        ),
        (
            "all not a list",
            with_conditions(json!({"all": c("risk_score", "gt", json!(1))})),
            "conditions.all",
        ),
        (
            "both all and any",
            with_conditions(
                json!({"all": [c("risk_score", "gt", json!(1))], "any": [c("risk_score", "gt", json!(1))]}),
            ),
            "conditions",
        ),
        (
            "a key beside a group",
            with_conditions(json!({"not": c("risk_score", "gt", json!(1)), "x": 1})),
            "conditions.x",
        ),
        (
            "conditions not an object",
            with_conditions(json!([c("risk_score", "gt", json!(1))])),
            "conditions",
        ),
        (
            "nesting deeper than 8",
            with_conditions(nested_nots(8)),
            "conditions.not.not.not.not.not.not.not.not",
        ),
        (
            "more than 64 nodes",
            with_conditions(wide(31)),
            "conditions.all[1].all[30]",
        ),
        (
            "missing conditions",
            with("conditions", Value::Null),
            "conditions",
        ),
        (
            "unknown action",
            with("actions", json!([{"type": "teleport"}])),
            "actions[0].type",
        ),
        (
            "action without a type",
            with("actions", json!([{"flag": "x"}])),
            "actions[0].type",
        ),
        (
            "action missing its text",
            with("actions", json!([{"type": "review"}, {"type": "add_flag"}])),
            "actions[1]",
        ),
        (
            "action with an extra key",
            with(
                "actions",
                json!([{"type": "add_flag", "flag": "x", "why": "y"}]),
            ),
            "actions[0]",
        ),
        (
            "action without fields with an extra key",
            with("actions", json!([{"type": "review", "why": "x"}])),
            "actions[0].why",
        ),
        (
            "blank flag",
            with("actions", json!([{"type": "add_flag", "flag": "  "}])),
            "actions[0].flag",
        ),
        (
            "unknown priority",
            with(
                "actions",
                json!([{"type": "create_case", "case_type": "fraud", "priority": "urgent", "title": "t"}]),
            ),
            "actions[0].priority",
        ),
        (
            "contribution out of range",
            with(
                "actions",
                json!([{"type": "set_risk", "factor": "f", "contribution": 101, "details": "d"}]),
            ),
            "actions[0].contribution",
        ),
        (
            "unknown channel",
            with(
                "actions",
                json!([{"type": "send_otp", "channel": "pigeon"}]),
            ),
            "actions[0]",
        ),
        ("no actions", with("actions", json!([])), "actions"),
        ("missing actions", with("actions", Value::Null), "actions"),
        (
            "unknown trigger",
            with("trigger", json!("on_full_moon")),
            "trigger",
        ),
        ("missing trigger", with("trigger", Value::Null), "trigger"),
        ("bad rule id", with("rule_id", json!("bad id!")), "rule_id"),
        (
            "long rule id",
            with("rule_id", json!("r".repeat(65))),
            "rule_id",
        ),
        ("empty rule id", with("rule_id", json!("")), "rule_id"),
        ("missing rule id", with("rule_id", Value::Null), "rule_id"),
        ("numeric rule id", with("rule_id", json!(5)), "rule_id"),
        (
            "unknown top-level key",
            with("priority", json!("high")),
            "priority",
        ),
        ("order not a number", with("order", json!("first")), "order"),
        (
            "order out of range",
            with("order", json!(2_000_000)),
            "order",
        ),
        (
            "enabled not a boolean",
            with("enabled", json!("yes")),
            "enabled",
        ),
        (
            "description too long",
            with("description", json!("d".repeat(501))),
            "description",
        ),
    ];

    // One stored rule, for replacement attempts.
    let original = create(
        &server,
        &tenant,
        json!({
            "rule_id": "stored",
            "trigger": "phone_lookup_complete",
            "conditions": c("risk_score", "gt", json!(1)),
            "actions": [{"type": "review"}]
        }),
    )
    .await;
    for (what, body, field) in &cases {
        let created = server
            .post("/v1/workflows/rules", &tenant.key, body.clone())
            .await;
        assert_eq!(created.status, 422, "{what}: {}", created.text);
        assert_eq!(
            created.body["error"]["field"], *field,
            "{what}: {}",
            created.text
        );
        created.invalid_field(field);

        // The same body as a replacement (without a contradicting id) and as a draft.
        let mut replacement = body.clone();
        if replacement["rule_id"] == "valid_rule" {
            replacement["rule_id"] = json!("stored");
        }
        if *field != "rule_id" {
            let replaced = server
                .put("/v1/workflows/rules/stored", &tenant.key, replacement)
                .await;
            assert_eq!(replaced.status, 422, "{what} (PUT): {}", replaced.text);
            replaced.invalid_field(field);
        }
        let draft = server
            .post(
                "/v1/workflows/rules/test",
                &tenant.key,
                json!({"event": rich_event(), "rules": [body]}),
            )
            .await;
        assert_eq!(draft.status, 422, "{what} (draft): {}", draft.text);
        draft.invalid_field(&format!("rules[0].{field}"));
    }

    // A replacement must not contradict the URL.
    let mut contradicting = valid();
    contradicting["rule_id"] = json!("another");
    server
        .put("/v1/workflows/rules/stored", &tenant.key, contradicting)
        .await
        .invalid_field("rule_id");

    // The limits themselves are allowed: depth 8 and 64 nodes.
    let deepest = create(
        &server,
        &tenant,
        json!({"rule_id": "deepest", "trigger": "otp_sent", "conditions": nested_nots(7), "actions": [{"type": "review"}]}),
    )
    .await;
    assert_eq!(deepest["conditions"], nested_nots(7));
    create(
        &server,
        &tenant,
        json!({"rule_id": "widest", "trigger": "otp_sent", "conditions": wide(30), "actions": [{"type": "review"}]}),
    )
    .await;

    // Nothing was stored or changed by any refusal.
    let rules = list(&server, &tenant, "").await;
    assert_eq!(
        ids(&rules),
        vec!["deepest", "widest", "stored"],
        "{rules:?}"
    );
    let stored = server.get("/v1/workflows/rules/stored", &tenant.key).await;
    assert_eq!(stored.expect(200), &original);
    server
        .get("/v1/workflows/rules/valid_rule", &tenant.key)
        .await
        .error(404, "not_found");

    // The catalogue describes the language the validation enforces.
    let catalogue = server
        .get("/v1/workflows/fields", &tenant.key)
        .await
        .expect(200)
        .clone();
    let fields = catalogue["fields"].as_array().expect("fields");
    let field = |name: &str| -> &Value {
        fields
            .iter()
            .find(|f| f["field"] == name)
            .unwrap_or_else(|| panic!("{name} is not in the catalogue"))
    };
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
        "country_mismatch",
        "flags",
        "trigger",
        "verification_status",
        "phone",
        "line_status",
        "roaming",
        "ported",
        "carrier_is_original",
    ] {
        field(name);
    }
    assert_eq!(field("risk_score")["type"], "number");
    assert_eq!(
        field("risk_score")["operators"],
        json!(["eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in", "exists"])
    );
    assert_eq!(field("flags")["operators"], json!(["contains", "exists"]));
    assert!(strings(&field("phone_type")["values"]).contains(&"voip".to_owned()));
    assert_eq!(
        catalogue["operators"],
        json!([
            "eq",
            "ne",
            "lt",
            "lte",
            "gt",
            "gte",
            "in",
            "not_in",
            "contains",
            "starts_with",
            "exists"
        ])
    );
    assert!(strings(&catalogue["actions"]).contains(&"create_case".to_owned()));
    assert!(strings(&catalogue["triggers"]).contains(&"phone_lookup_complete".to_owned()));
    assert_eq!(catalogue["limits"]["max_depth"], 8);
    assert_eq!(catalogue["limits"]["max_nodes"], 64);
}

#[tokio::test]
async fn rules_are_listed_read_replaced_enabled_disabled_and_deleted_within_their_tenant() {
    let (server, tenant) = TestServer::with_tenant().await;
    server
        .settings(&tenant, json!({"require_otp": false}))
        .await;
    let voip = create(&server, &tenant, seed_otp_for_voip()).await;
    let swap = create(&server, &tenant, seed_flag_sim_swap()).await;
    let verified = create(
        &server,
        &tenant,
        json!({
            "rule_id": "after_verify",
            "trigger": "otp_verified",
            "enabled": false,
            "description": "Flags every verified code",
            "conditions": cond("phone_otp_verified", "eq", json!(true)),
            "actions": [{"type": "add_flag", "flag": "verified"}]
        }),
    )
    .await;
    assert_eq!(verified["enabled"], false);
    assert_eq!(verified["order"], 100, "the first of its trigger");
    assert_eq!(verified["description"], "Flags every verified code");

    // Listing, in run order (per trigger, by order), with filters.
    let all = list(&server, &tenant, "").await;
    assert_eq!(all.len(), 3);
    let by_trigger = list(&server, &tenant, "trigger=phone_lookup_complete").await;
    assert_eq!(by_trigger, vec![voip.clone(), swap.clone()]);
    assert_eq!(
        list(&server, &tenant, "enabled=false").await,
        vec![verified.clone()]
    );
    assert_eq!(
        ids(&list(&server, &tenant, "enabled=true").await),
        vec!["otp_for_voip", "flag_sim_swap"]
    );
    assert!(list(&server, &tenant, "trigger=otp_verified&enabled=true")
        .await
        .is_empty());
    server
        .get("/v1/workflows/rules?trigger=on_full_moon", &tenant.key)
        .await
        .invalid_field("trigger");

    // Read one.
    let one = server
        .get("/v1/workflows/rules/flag_sim_swap", &tenant.key)
        .await;
    assert_eq!(one.expect(200), &swap);

    // Replace: the body may leave the id out; the revision counts, creation stays.
    server.advance(chrono::Duration::minutes(5));
    let replaced = server
        .put(
            "/v1/workflows/rules/otp_for_voip",
            &tenant.key,
            json!({
                "trigger": "phone_lookup_complete",
                "conditions": {"all": [cond("phone_type", "eq", json!("voip"))]},
                "actions": [{"type": "add_flag", "flag": "voip_v2"}]
            }),
        )
        .await;
    let replaced = replaced.expect(200).clone();
    assert_eq!(replaced["rule_id"], "otp_for_voip");
    assert_eq!(replaced["revision"], 2);
    assert_eq!(replaced["created_at"], voip["created_at"]);
    assert_eq!(timestamp(&replaced["updated_at"]), server.clock.now());
    assert!(timestamp(&replaced["updated_at"]) > timestamp(&voip["updated_at"]));
    assert_eq!(replaced["order"], voip["order"]);
    assert_eq!(replaced["enabled"], true);
    assert_eq!(
        replaced["actions"],
        json!([{"type": "add_flag", "flag": "voip_v2"}])
    );
    let again = server
        .put(
            "/v1/workflows/rules/otp_for_voip",
            &tenant.key,
            seed_otp_for_voip(),
        )
        .await;
    assert_eq!(again.expect(200)["revision"], 3);
    let read = server
        .get("/v1/workflows/rules/otp_for_voip", &tenant.key)
        .await;
    assert_eq!(read.expect(200)["revision"], 3);
    assert_eq!(read.body["actions"], seed_otp_for_voip()["actions"]);
    let (answer, report) = decided(&server, &tenant, UK_VOIP, "a").await;
    assert_eq!(answer["otp_required"], "sms");
    assert_eq!(
        fired(&report, "phone_lookup_complete"),
        vec![run("workflow", "otp_for_voip", "r3")]
    );

    // Disable: the rule stays but does not fire; enable brings it back.
    let disabled = server
        .post(
            "/v1/workflows/rules/otp_for_voip/disable",
            &tenant.key,
            json!({}),
        )
        .await;
    assert_eq!(disabled.expect(200)["enabled"], false);
    assert_eq!(disabled.body["revision"], 3, "not a replacement");
    let (off, off_report) = decided(&server, &tenant, UK_VOIP, "b").await;
    assert!(off.get("otp_required").is_none(), "{off}");
    assert_eq!(off_report["rules_fired"], json!([]), "{off_report}");
    assert_eq!(
        ids(&list(&server, &tenant, "enabled=false").await),
        vec!["after_verify", "otp_for_voip"]
    );
    let enabled = server
        .post(
            "/v1/workflows/rules/otp_for_voip/enable",
            &tenant.key,
            json!({}),
        )
        .await;
    assert_eq!(enabled.expect(200)["enabled"], true);
    let (on, _) = decided(&server, &tenant, UK_VOIP, "c").await;
    assert_eq!(on["otp_required"], "sms", "{on}");

    // A disabled rule on another trigger does not fire either; enabled, it does.
    let phone = uz_number(10);
    let sent = server.send_and_verify(&tenant, &phone, "v1").await;
    let report = server
        .report(&tenant, sent["verification_id"].as_str().expect("id"))
        .await;
    assert!(fired(&report, "otp_verified").is_empty(), "{report}");
    assert!(!strings(&report["flags"]).contains(&"verified".to_owned()));
    server
        .post(
            "/v1/workflows/rules/after_verify/enable",
            &tenant.key,
            json!({}),
        )
        .await
        .expect(200);
    let sent = server.send_and_verify(&tenant, &uz_number(11), "v2").await;
    let report = server
        .report(&tenant, sent["verification_id"].as_str().expect("id"))
        .await;
    assert_eq!(
        fired(&report, "otp_verified"),
        vec![run("workflow", "after_verify", "r1")],
        "{report}"
    );
    assert!(strings(&report["flags"]).contains(&"verified".to_owned()));

    // Delete: gone from reads, lists and lookups.
    let deleted = server
        .delete("/v1/workflows/rules/otp_for_voip", &tenant.key)
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    server
        .get("/v1/workflows/rules/otp_for_voip", &tenant.key)
        .await
        .error(404, "not_found");
    assert_eq!(
        ids(&list(&server, &tenant, "").await),
        vec!["after_verify", "flag_sim_swap"]
    );
    let (gone, _) = decided(&server, &tenant, UK_VOIP, "d").await;
    assert!(gone.get("otp_required").is_none(), "{gone}");
    // The id is free again.
    let reborn = create(&server, &tenant, seed_otp_for_voip()).await;
    assert_eq!(reborn["revision"], 1);
    assert_eq!(reborn["order"], 102, "after flag_sim_swap (101)");

    // Unknown rules are 404 everywhere.
    for reply in [
        server.get("/v1/workflows/rules/nope", &tenant.key).await,
        server
            .put(
                "/v1/workflows/rules/nope",
                &tenant.key,
                with("rule_id", Value::Null),
            )
            .await,
        server.delete("/v1/workflows/rules/nope", &tenant.key).await,
        server
            .post("/v1/workflows/rules/nope/enable", &tenant.key, json!({}))
            .await,
        server
            .post("/v1/workflows/rules/nope/disable", &tenant.key, json!({}))
            .await,
    ] {
        reply.error(404, "not_found");
    }
    // `PUT` of an unknown id does not create it.
    server
        .get("/v1/workflows/rules/nope", &tenant.key)
        .await
        .error(404, "not_found");

    // Another tenant sees none of it, cannot touch it, and A's rules never fire for it.
    let other = server.tenant("other").await;
    server.settings(&other, json!({"require_otp": false})).await;
    assert!(list(&server, &other, "").await.is_empty());
    for reply in [
        server
            .get("/v1/workflows/rules/otp_for_voip", &other.key)
            .await,
        server
            .put(
                "/v1/workflows/rules/otp_for_voip",
                &other.key,
                seed_flag_sim_swap().as_object().map_or(Value::Null, |o| {
                    let mut o = o.clone();
                    o.remove("rule_id");
                    Value::Object(o)
                }),
            )
            .await,
        server
            .post(
                "/v1/workflows/rules/otp_for_voip/disable",
                &other.key,
                json!({}),
            )
            .await,
        server
            .delete("/v1/workflows/rules/otp_for_voip", &other.key)
            .await,
    ] {
        reply.error(404, "not_found");
    }
    let (theirs, their_report) = decided(&server, &other, UK_VOIP, "a").await;
    assert!(theirs.get("otp_required").is_none(), "{theirs}");
    assert_eq!(their_report["rules_fired"], json!([]));
    let tested = probe(
        &server,
        &other,
        json!({"event": {"trigger": "phone_lookup_complete", "phone": {"e164": UK_VOIP, "line_type": "voip"}}}),
    )
    .await;
    assert_eq!(tested["rules"], json!([]), "{tested}");
    assert_eq!(tested["matched"], json!([]));
    // The other tenant may reuse the id; A's rule is untouched by all of this.
    let theirs = create(&server, &other, seed_otp_for_voip()).await;
    assert_eq!(theirs["tenant_id"], other.id.as_str());
    assert_eq!(theirs["revision"], 1);
    let mine = server
        .get("/v1/workflows/rules/otp_for_voip", &tenant.key)
        .await;
    assert_eq!(mine.expect(200), &reborn);
    let (still, _) = decided(&server, &tenant, UK_VOIP, "e").await;
    assert_eq!(still["otp_required"], "sms");
    // A tenant's report of a verification is its own: B's rule name shows only there.
    let (_, b_report) = decided(&server, &other, UK_VOIP, "b").await;
    let b_runs = b_report["rules_fired"].as_array().expect("runs");
    assert_eq!(b_runs.len(), 1);
    assert_eq!(b_runs[0]["source"], "workflow");
}

#[tokio::test]
async fn an_edit_takes_effect_on_the_next_request_and_rules_survive_a_restart() {
    let (server, tenant) = TestServer::with_tenant().await;
    server
        .settings(&tenant, json!({"require_otp": false}))
        .await;
    create(
        &server,
        &tenant,
        flag_rule(
            "line_flag",
            cond("phone_type", "eq", json!("voip")),
            "line_matched",
        ),
    )
    .await;
    create(
        &server,
        &tenant,
        rule_body(
            "dormant",
            cond("phone_type", "in", json!(["voip", "mobile"])),
            json!([{"type": "decline", "reason": "dormant rule fired"}]),
        ),
    )
    .await;
    server
        .post(
            "/v1/workflows/rules/dormant/disable",
            &tenant.key,
            json!({}),
        )
        .await
        .expect(200);

    let (voip, voip_report) = decided(&server, &tenant, UK_VOIP, "v1").await;
    assert_eq!(voip["flags"], json!(["line_matched"]), "{voip}");
    assert_eq!(
        fired(&voip_report, "phone_lookup_complete"),
        vec![run("workflow", "line_flag", "r1")]
    );
    let (mobile, _) = decided(&server, &tenant, &uz_number(21), "m1").await;
    assert_eq!(mobile["flags"], json!([]), "{mobile}");

    // Edit: now mobile numbers match instead, and the next request sees it.
    server
        .put(
            "/v1/workflows/rules/line_flag",
            &tenant.key,
            flag_rule(
                "line_flag",
                cond("phone_type", "eq", json!("mobile")),
                "line_matched",
            ),
        )
        .await
        .expect(200);
    let (voip, _) = decided(&server, &tenant, UK_VOIP, "v2").await;
    assert_eq!(voip["flags"], json!([]), "{voip}");
    let (mobile, mobile_report) = decided(&server, &tenant, &uz_number(22), "m2").await;
    assert_eq!(mobile["flags"], json!(["line_matched"]), "{mobile}");
    assert_eq!(
        fired(&mobile_report, "phone_lookup_complete"),
        vec![run("workflow", "line_flag", "r2")]
    );
    assert_eq!(mobile["status"], "Approved");

    // Another edit changes the decision, again at once.
    server
        .put(
            "/v1/workflows/rules/line_flag",
            &tenant.key,
            rule_body(
                "line_flag",
                cond("phone_type", "eq", json!("mobile")),
                json!([{"type": "review"}, {"type": "add_flag", "flag": "line_matched_v3"}]),
            ),
        )
        .await
        .expect(200);
    let (mobile, _) = decided(&server, &tenant, &uz_number(23), "m3").await;
    assert_eq!(mobile["status"], "In Review", "{mobile}");
    assert_eq!(mobile["flags"], json!(["line_matched_v3"]));

    // After a restart the rules are still there, as they were, and still run; the
    // disabled one still does not.
    let before = list(&server, &tenant, "").await;
    let server = server.restart().await;
    let after = list(&server, &tenant, "").await;
    assert_eq!(after, before);
    assert_eq!(after[0]["revision"], 3);
    let (mobile, mobile_report) = decided(&server, &tenant, uz_number(20).as_str(), "m4").await;
    assert_eq!(mobile["status"], "In Review", "{mobile}");
    assert_eq!(mobile["flags"], json!(["line_matched_v3"]));
    assert_eq!(
        fired(&mobile_report, "phone_lookup_complete"),
        vec![run("workflow", "line_flag", "r3")]
    );
    let (voip, voip_report) = decided(&server, &tenant, UK_VOIP, "v3").await;
    assert_eq!(voip["flags"], json!([]));
    assert_eq!(voip_report["rules_fired"], json!([]));
    // And they can still be changed after the restart.
    server
        .post("/v1/workflows/rules/dormant/enable", &tenant.key, json!({}))
        .await
        .expect(200);
    let (voip, _) = decided(&server, &tenant, UK_VOIP, "v4").await;
    assert_eq!(voip["status"], "Declined", "{voip}");
}

#[tokio::test]
async fn declarative_rules_and_code_plugins_share_one_order_and_merge_decisions() {
    let server = TestServer::start().await;

    // A blocking declarative rule before the echo plugin stops it; after, it does not.
    let tenant = server.tenant("blocking").await;
    server
        .settings(&tenant, json!({"require_otp": false}))
        .await;
    let echo_id = echo(&server, &tenant, 100, Value::Null).await;
    let (plain, plain_report) = decided(&server, &tenant, &uz_number(30), "p").await;
    assert!(
        has_echo_flag(&plain["flags"]),
        "the echo plugin runs: {plain}"
    );
    assert_eq!(
        fired(&plain_report, "phone_lookup_complete"),
        vec![run("plugin", "echo", "1.0.0")]
    );
    assert_eq!(
        plain_report["rules_fired"][0]["plugin_id"],
        echo_id.as_str()
    );
    create(
        &server,
        &tenant,
        json!({
            "rule_id": "stop",
            "trigger": "phone_lookup_complete",
            "order": 50,
            "conditions": cond("phone_type", "eq", json!("mobile")),
            "actions": [{"type": "block", "reason": "stopped by a workflow rule"}]
        }),
    )
    .await;
    let (blocked, blocked_report) = decided(&server, &tenant, &uz_number(31), "b1").await;
    assert_eq!(blocked["status"], "Declined", "{blocked}");
    assert!(!has_echo_flag(&blocked["flags"]), "echo ran: {blocked}");
    assert_eq!(
        fired(&blocked_report, "phone_lookup_complete"),
        vec![run("workflow", "stop", "r1")],
        "{blocked_report}"
    );
    assert_eq!(blocked["decisions"][0]["action"], "Decline");
    assert_eq!(
        blocked["decisions"][0]["reason"],
        "stopped by a workflow rule"
    );
    assert_eq!(blocked["decisions"][0]["plugin"], "stop");

    // At equal order, declarative runs before code: still blocked.
    server
        .put(
            "/v1/workflows/rules/stop",
            &tenant.key,
            json!({
                "trigger": "phone_lookup_complete",
                "order": 100,
                "conditions": cond("phone_type", "eq", json!("mobile")),
                "actions": [{"type": "block", "reason": "stopped by a workflow rule"}]
            }),
        )
        .await
        .expect(200);
    let (tied, tied_report) = decided(&server, &tenant, &uz_number(32), "b2").await;
    assert!(!has_echo_flag(&tied["flags"]), "echo ran: {tied}");
    assert_eq!(
        fired(&tied_report, "phone_lookup_complete"),
        vec![run("workflow", "stop", "r2")]
    );

    // After the plugin: the plugin runs first, then the block.
    server
        .put(
            "/v1/workflows/rules/stop",
            &tenant.key,
            json!({
                "trigger": "phone_lookup_complete",
                "order": 150,
                "conditions": cond("phone_type", "eq", json!("mobile")),
                "actions": [{"type": "block", "reason": "stopped by a workflow rule"}]
            }),
        )
        .await
        .expect(200);
    let (late, late_report) = decided(&server, &tenant, &uz_number(33), "b3").await;
    assert!(has_echo_flag(&late["flags"]), "echo did not run: {late}");
    assert_eq!(late["status"], "Declined");
    assert_eq!(
        fired(&late_report, "phone_lookup_complete"),
        vec![
            run("plugin", "echo", "1.0.0"),
            run("workflow", "stop", "r3")
        ]
    );
    // Moving the plugin ahead of the rule's order works the other way round too.
    server
        .put(
            &format!("/v1/plugins/{echo_id}/bindings"),
            &tenant.key,
            json!({"triggers": ["phone_lookup_complete"], "order": 200}),
        )
        .await
        .expect(200);
    let (moved, _) = decided(&server, &tenant, &uz_number(34), "b4").await;
    assert!(!has_echo_flag(&moved["flags"]), "echo ran: {moved}");

    // Reordering two declarative rules changes which runs first.
    let tenant = server.tenant("reordering").await;
    server
        .settings(&tenant, json!({"require_otp": false}))
        .await;
    let mobile = || cond("phone_type", "eq", json!("mobile"));
    let blocker = create(
        &server,
        &tenant,
        rule_body(
            "blocker",
            mobile(),
            json!([{"type": "block", "reason": "blocker"}]),
        ),
    )
    .await;
    let flagger = create(
        &server,
        &tenant,
        flag_rule("flagger", mobile(), "flagger_ran"),
    )
    .await;
    let other_trigger = create(
        &server,
        &tenant,
        json!({"rule_id": "at_send", "trigger": "before_send_otp", "conditions": mobile(), "actions": [{"type": "add_flag", "flag": "sending"}]}),
    )
    .await;
    assert_eq!(blocker["order"], 100);
    assert_eq!(flagger["order"], 101);
    assert_eq!(other_trigger["order"], 100, "orders count per trigger");
    let (first, first_report) = decided(&server, &tenant, &uz_number(35), "r1").await;
    assert_eq!(first["flags"], json!([]), "{first}");
    assert_eq!(first["status"], "Declined");
    assert_eq!(
        fired(&first_report, "phone_lookup_complete"),
        vec![run("workflow", "blocker", "r1")]
    );

    // Refused reorders change nothing.
    let reorder =
        |rule_ids: Value| json!({"trigger": "phone_lookup_complete", "rule_ids": rule_ids});
    for (rule_ids, field) in [
        (json!(["flagger"]), "rule_ids"),
        (json!(["flagger", "flagger"]), "rule_ids[1]"),
        (json!(["flagger", "ghost"]), "rule_ids[1]"),
        (json!(["flagger", "blocker", "at_send"]), "rule_ids[2]"),
        (json!([]), "rule_ids"),
    ] {
        server
            .put("/v1/workflows/rules/order", &tenant.key, reorder(rule_ids))
            .await
            .invalid_field(field);
    }
    assert_eq!(
        ids(&list(&server, &tenant, "trigger=phone_lookup_complete").await),
        vec!["blocker", "flagger"]
    );

    let reordered = server
        .put(
            "/v1/workflows/rules/order",
            &tenant.key,
            reorder(json!(["flagger", "blocker"])),
        )
        .await;
    let reordered = reordered.expect(200)["rules"].clone();
    assert_eq!(
        ids(reordered.as_array().expect("rules")),
        vec!["flagger", "blocker"]
    );
    assert_eq!(reordered[0]["order"], 100);
    assert_eq!(reordered[1]["order"], 101);
    assert_eq!(
        ids(&list(&server, &tenant, "trigger=phone_lookup_complete").await),
        vec!["flagger", "blocker"]
    );
    let (second, second_report) = decided(&server, &tenant, &uz_number(36), "r2").await;
    assert_eq!(second["flags"], json!(["flagger_ran"]), "{second}");
    assert_eq!(second["status"], "Declined");
    assert_eq!(
        fired(&second_report, "phone_lookup_complete"),
        vec![
            run("workflow", "flagger", "r1"),
            run("workflow", "blocker", "r1")
        ]
    );

    // Decisions merge as code plugins' do: decline over review over approve, whatever
    // runs first.
    let tenant = server.tenant("merging").await;
    server
        .settings(&tenant, json!({"require_otp": false}))
        .await;
    create(
        &server,
        &tenant,
        json!({
            "rule_id": "to_review",
            "trigger": "phone_lookup_complete",
            "order": 150,
            "conditions": mobile(),
            "actions": [{"type": "review"}]
        }),
    )
    .await;
    create(
        &server,
        &tenant,
        json!({
            "rule_id": "to_approve",
            "trigger": "phone_lookup_complete",
            "order": 160,
            "conditions": mobile(),
            "actions": [{"type": "approve"}]
        }),
    )
    .await;
    let (review, _) = decided(&server, &tenant, &uz_number(37), "m1").await;
    assert_eq!(review["status"], "In Review", "{review}");
    echo(
        &server,
        &tenant,
        100,
        json!({"action": "decline", "on": "phone_lookup_complete"}),
    )
    .await;
    let (merged, merged_report) = decided(&server, &tenant, &uz_number(38), "m2").await;
    assert_eq!(merged["status"], "Declined", "{merged}");
    assert_eq!(
        fired(&merged_report, "phone_lookup_complete"),
        vec![
            run("plugin", "echo", "1.0.0"),
            run("workflow", "to_review", "r1"),
            run("workflow", "to_approve", "r1")
        ]
    );
    let decisions: Vec<(String, String)> = merged["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .map(|d| {
            (
                d["plugin"].as_str().expect("plugin").to_owned(),
                d["action"].as_str().expect("action").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        vec![
            ("echo".to_owned(), "Decline".to_owned()),
            ("to_review".to_owned(), "Review".to_owned()),
            ("to_approve".to_owned(), "Approve".to_owned())
        ]
    );
}

#[tokio::test]
async fn the_test_endpoint_looks_a_number_up_explains_and_stores_nothing() {
    let (server, tenant) = TestServer::with_tenant().await;
    let sim = CamaraSim::start().await;
    server
        .settings(
            &tenant,
            json!({"require_otp": false, "sim_swap_check": true}),
        )
        .await;
    camara(&server, &tenant, &sim).await;
    create(&server, &tenant, seed_otp_for_voip()).await;
    create(&server, &tenant, seed_flag_sim_swap()).await;
    create(
        &server,
        &tenant,
        json!({
            "rule_id": "decline_gb",
            "trigger": "phone_lookup_complete",
            "enabled": false,
            "conditions": cond("country", "eq", json!("gb")),
            "actions": [{"type": "decline", "reason": "never"}]
        }),
    )
    .await;
    create(
        &server,
        &tenant,
        json!({
            "rule_id": "at_verify",
            "trigger": "otp_verified",
            "conditions": cond("country", "eq", json!("gb")),
            "actions": [{"type": "decline", "reason": "never"}]
        }),
    )
    .await;

    // A UK VoIP number: the VoIP rule matches; the SIM-swap rule does not (no date).
    let answer = probe(
        &server,
        &tenant,
        json!({"phone": UK_VOIP, "applicant_id": "tester", "applicant_country": "US"}),
    )
    .await;
    assert!(answer.get("error").is_none(), "{answer}");
    assert_eq!(answer["trigger"], "phone_lookup_complete");
    let event = &answer["event"];
    assert_eq!(event["trigger"], "phone_lookup_complete");
    assert_eq!(event["tenant_id"], tenant.id.as_str());
    assert_eq!(event["phone"]["e164"], UK_VOIP);
    assert_eq!(event["phone"]["line_type"], "voip");
    assert_eq!(event["phone"]["country"], "GB");
    assert_eq!(event["applicant_id"], "tester");
    assert_eq!(event["applicant_country"], "US");
    assert_eq!(event["verification"]["id"], Value::Null, "nothing stored");
    let rules = answer["rules"].as_array().expect("rules");
    assert_eq!(
        ids(rules),
        vec!["otp_for_voip", "flag_sim_swap", "decline_gb"],
        "the trigger's stored rules, in run order: {answer}"
    );
    assert_eq!(rules[0]["matched"], true);
    assert_eq!(
        rules[0]["conditions"],
        json!([
            {"path": "conditions", "kind": "all", "matched": true},
            {"path": "conditions.all[0]", "kind": "eq", "field": "phone_type", "value": "voip", "actual": "voip", "matched": true},
            {"path": "conditions.all[1]", "kind": "eq", "field": "phone_otp_verified", "value": false, "actual": false, "matched": true}
        ])
    );
    assert_eq!(rules[1]["matched"], false);
    assert_eq!(
        rules[1]["conditions"][1],
        json!({"path": "conditions.all[0]", "kind": "lt", "field": "sim_swap_days_ago", "value": 7, "actual": null, "matched": false})
    );
    assert_eq!(rules[2]["enabled"], false);
    assert_eq!(rules[2]["matched"], true);
    assert_eq!(answer["matched"], json!(["otp_for_voip"]));
    assert_eq!(answer["actions"], seed_otp_for_voip()["actions"]);
    assert!(answer["fuel"].as_u64().expect("fuel") > 0);

    // A number with a recent SIM swap, as the lookup adapter reports it.
    let recent = uz_number(40);
    sim.swapped(
        &recent,
        Some(server.clock.now() - chrono::Duration::days(3)),
    );
    let answer = probe(
        &server,
        &tenant,
        json!({"phone": recent, "applicant_id": "swapper"}),
    )
    .await;
    assert_eq!(answer["event"]["phone"]["sim_swap_days_ago"], 3, "{answer}");
    assert_eq!(answer["matched"], json!(["flag_sim_swap"]));
    assert_eq!(answer["rules"][1]["conditions"][1]["actual"], 3);
    assert_eq!(answer["actions"], seed_flag_sim_swap()["actions"]);
    // Draft rules instead of the stored ones, on the looked-up number.
    let answer = probe(
        &server,
        &tenant,
        json!({"phone": recent, "rules": [flag_rule("draft", cond("country", "eq", json!("UZ")), "uz")]}),
    )
    .await;
    assert_eq!(
        ids(answer["rules"].as_array().expect("rules")),
        vec!["draft"]
    );
    assert_eq!(answer["matched"], json!(["draft"]));
    // Another trigger's stored rules.
    let answer = probe(
        &server,
        &tenant,
        json!({"phone": UK_VOIP, "trigger": "otp_verified"}),
    )
    .await;
    assert_eq!(answer["trigger"], "otp_verified");
    assert_eq!(answer["matched"], json!(["at_verify"]));

    // Nothing was applied or stored: no case, no code, no verification, and the rules
    // themselves are unchanged.
    let cases = server.get("/v1/cases", &tenant.key).await;
    assert_eq!(cases.expect(200)["cases"], json!([]), "a case was opened");
    assert!(server.outbox(&tenant, UK_VOIP).await.is_empty());
    assert!(server.outbox(&tenant, &recent).await.is_empty());
    // A real send for the same number and applicant starts from scratch: the one
    // lookup firing on its trail is its own, and so is the one case.
    let sent = server.send(&tenant, &recent, "swapper").await;
    let id = sent["verification_id"].as_str().expect("id");
    let events = server
        .get(&format!("/v1/verifications/{id}/events"), &tenant.key)
        .await
        .expect(200)
        .clone();
    let lookups = events
        .as_array()
        .or_else(|| events["events"].as_array())
        .unwrap_or_else(|| panic!("no events: {events}"))
        .iter()
        .filter(|event| event["trigger"] == "phone_lookup_complete")
        .count();
    assert_eq!(lookups, 1, "the test left a verification behind: {events}");
    let report = server.report(&tenant, id).await;
    assert_eq!(report["flags"], json!(["recent_sim_swap"]), "{report}");
    let cases = server
        .get("/v1/cases", &tenant.key)
        .await
        .expect(200)
        .clone();
    assert_eq!(cases["cases"].as_array().map(Vec::len), Some(1), "{cases}");
    assert_eq!(cases["cases"][0]["verification_id"], id);
    for rule in list(&server, &tenant, "").await {
        assert_eq!(rule["revision"], 1, "{rule}");
    }

    // Exactly one of event and phone.
    server
        .post(
            "/v1/workflows/rules/test",
            &tenant.key,
            json!({"event": rich_event(), "phone": UK_VOIP}),
        )
        .await
        .invalid_field("phone");
    server
        .post("/v1/workflows/rules/test", &tenant.key, json!({}))
        .await
        .invalid_field("event");
    let invalid = server
        .post(
            "/v1/workflows/rules/test",
            &tenant.key,
            json!({"phone": "+1555"}),
        )
        .await;
    assert_eq!(invalid.error(422, "invalid_phone_number")["field"], "phone");
}
