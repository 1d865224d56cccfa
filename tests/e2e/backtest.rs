//! Backtests end to end: a candidate declarative rule set replayed over a tenant's
//! recorded verifications (would-be declines with examples, the current rules
//! changing nothing, the window), nothing written by it, tenant isolation, bad input
//! refused naming the field, and, with the in-tree guests, a plugin version's
//! backtest: its key-value writes discarded, a spinning version ended by its time
//! budget with its failures counted, one backtest at a time per tenant.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::support::*;

/// Sends a code to `phone` and verifies it; returns the verification's id.
async fn verified(server: &TestServer, tenant: &Tenant, phone: &str) -> String {
    let sent = server.send(tenant, phone, "applicant").await;
    let code = server.latest_code(tenant, phone).await;
    let answer = server.verify(tenant, phone, "applicant", &code).await;
    assert_eq!(answer.expect(200)["status"], "Approved", "{}", answer.text);
    sent["verification_id"].as_str().expect("id").to_owned()
}

/// A rule at `phone_lookup_complete` declining numbers of Uzbekistan, flagging them
/// and opening a case.
fn decline_uz() -> Value {
    json!({
        "rule_id": "no_uz",
        "trigger": "phone_lookup_complete",
        "conditions": {"field": "country", "operator": "eq", "value": "UZ"},
        "actions": [
            {"type": "decline", "reason": "no UZ numbers"},
            {"type": "add_flag", "flag": "uz"},
            {"type": "create_case", "case_type": "fraud", "priority": "high", "title": "UZ number"}
        ],
    })
}

/// A rule at `phone_lookup_complete` flagging numbers of Uzbekistan.
fn flag_uz() -> Value {
    json!({
        "rule_id": "flag_uz",
        "trigger": "phone_lookup_complete",
        "conditions": {"field": "country", "operator": "eq", "value": "UZ"},
        "actions": [{"type": "add_flag", "flag": "uz"}],
    })
}

/// Runs `dialgate plugin backtest` against `server` with `args`; returns whether it
/// succeeded and what it printed (standard output, then standard error).
async fn backtest_command(server: &TestServer, key: &str, args: &[&str]) -> (bool, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dialgate"));
    command
        .args([
            "plugin",
            "backtest",
            "--server",
            &server.api.base,
            "--key",
            key,
        ])
        .args(args)
        .env("DIALGATE_LOG", "warn");
    for proxy in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
        command.env_remove(proxy);
    }
    let output = tokio::task::spawn_blocking(move || command.output().expect("run dialgate"))
        .await
        .expect("the command's thread");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

async fn backtest(server: &TestServer, tenant: &Tenant, body: Value) -> Value {
    let reply = server
        .post("/v1/workflows/rules/backtest", &tenant.key, body)
        .await;
    reply.expect(200).clone()
}

/// What the tenant's verifications show: each report and audit trail, and the cases.
async fn observed(server: &TestServer, tenant: &Tenant, ids: &[String]) -> Vec<Value> {
    let mut seen = Vec::new();
    for id in ids {
        seen.push(server.report(tenant, id).await);
        let events = server
            .get(&format!("/v1/verifications/{id}/events"), &tenant.key)
            .await;
        seen.push(events.expect(200).clone());
    }
    seen.push(
        server
            .get("/v1/cases", &tenant.key)
            .await
            .expect(200)
            .clone(),
    );
    seen
}

/// The records of the trees a backtest must never write.
fn records(server: &TestServer) -> BTreeMap<String, Vec<u8>> {
    server
        .stored_records()
        .into_iter()
        .filter(|(name, _)| {
            [
                "verifications/",
                "cases/",
                "plugin_kv/",
                "workflow_rules/",
                "plugins/",
                "webhook",
                "rule_stats",
            ]
            .iter()
            .any(|tree| name.starts_with(tree))
        })
        .collect()
}

#[tokio::test]
async fn backtest_of_a_declining_rule_reports_would_be_declines_and_writes_nothing() {
    let (server, tenant) = TestServer::with_tenant().await;
    server
        .post("/v1/workflows/rules", &tenant.key, flag_uz())
        .await
        .expect(201);
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(verified(&server, &tenant, &uz_number(n)).await);
        server.advance(chrono::Duration::minutes(1));
    }
    let before = observed(&server, &tenant, &ids).await;
    let stored_before = records(&server);

    // The current rule set, as a candidate, changes nothing.
    let same = backtest(&server, &tenant, json!({"rules": [flag_uz()]})).await;
    assert_eq!(same["scanned"], 3, "{same}");
    assert_eq!(same["complete"], true);
    assert_eq!(same["outcomes"]["unchanged"], 3, "{same}");
    assert_eq!(same["flags_added"], json!({}));
    assert_eq!(same["flags_removed"], json!({}));

    // A declining rule in its place would have declined all three.
    let answer = backtest(
        &server,
        &tenant,
        json!({"rules": [decline_uz()], "days": 7}),
    )
    .await;
    assert_eq!(answer["candidate"], "1 declarative rule");
    assert_eq!(answer["days"], 7);
    assert_eq!(answer["scanned"], 3);
    assert_eq!(answer["complete"], true);
    assert!(answer.get("stopped").is_none(), "{answer}");
    assert_eq!(
        answer["outcomes"],
        json!({"unchanged": 0, "would_decline": 3, "would_review": 0, "would_approve": 0})
    );
    assert_eq!(answer["cases_added"], json!({"fraud": 3}));
    // The flag is set by the candidate as by the current rule: no change there.
    assert_eq!(answer["flags_added"], json!({}));
    assert_eq!(answer["failures"]["runs"], 0);
    assert!(answer["elapsed_ms"].as_u64().is_some());
    let examples = answer["examples"]["would_decline"]
        .as_array()
        .expect("examples");
    assert_eq!(examples.len(), 3);
    // Newest first.
    assert_eq!(examples[0]["verification_id"], ids[2].as_str());
    for example in examples {
        assert!(ids.contains(&example["verification_id"].as_str().expect("id").to_owned()));
        assert_eq!(example["recorded_status"], "Approved");
        assert_eq!(example["recorded_verdict"], "Approve");
        assert_eq!(example["would_be_status"], "Declined");
        assert_eq!(example["would_be_verdict"], "Decline");
        assert_eq!(example["cases_added"], json!(["fraud"]));
        let responsible = &example["responsible"][0];
        assert_eq!(responsible["rule"], "no_uz");
        assert_eq!(responsible["trigger"], "phone_lookup_complete");
        assert_eq!(responsible["actions"][0]["type"], "decline");
    }

    // No candidate at all: the current rule's flag would go.
    let none = backtest(&server, &tenant, json!({"rules": []})).await;
    assert_eq!(none["outcomes"]["unchanged"], 3);
    assert_eq!(none["flags_removed"], json!({"uz": 3}));

    // Nothing changed: reports, audit trails, cases, the stored records.
    assert_eq!(observed(&server, &tenant, &ids).await, before);
    assert_eq!(records(&server), stored_before);
    let rules = server.get("/v1/workflows/rules", &tenant.key).await;
    assert_eq!(rules.expect(200)["rules"][0]["rule_id"], "flag_uz");
}

#[tokio::test]
async fn backtest_reads_the_window_of_the_callers_own_verifications() {
    let server = TestServer::start().await;
    let alpha = server.tenant("alpha").await;
    let beta = server.tenant("beta").await;
    let old = verified(&server, &alpha, &uz_number(10)).await;
    server.advance(chrono::Duration::days(10));
    let recent = verified(&server, &alpha, &uz_number(11)).await;
    for n in 20..23 {
        verified(&server, &beta, &uz_number(n)).await;
    }
    let week = backtest(&server, &alpha, json!({"rules": [decline_uz()]})).await;
    assert_eq!(week["scanned"], 1, "{week}");
    assert_eq!(
        week["examples"]["would_decline"][0]["verification_id"],
        recent.as_str()
    );
    let fortnight = backtest(
        &server,
        &alpha,
        json!({"rules": [decline_uz()], "days": 14}),
    )
    .await;
    assert_eq!(fortnight["scanned"], 2);
    let seen: Vec<&str> = fortnight["examples"]["would_decline"]
        .as_array()
        .expect("examples")
        .iter()
        .map(|example| example["verification_id"].as_str().expect("id"))
        .collect();
    assert_eq!(seen, [recent.as_str(), old.as_str()]);
    // The cap says how far it got.
    let capped = backtest(
        &server,
        &alpha,
        json!({"rules": [decline_uz()], "days": 14, "max_verifications": 1}),
    )
    .await;
    assert_eq!(capped["scanned"], 1);
    assert_eq!(capped["complete"], false);
    assert_eq!(capped["stopped"], "max_verifications");
    // The other tenant sees only its own three.
    let other = backtest(&server, &beta, json!({"rules": [decline_uz()]})).await;
    assert_eq!(other["scanned"], 3);
    assert_eq!(other["outcomes"]["would_decline"], 3);
    // Nor can it backtest the first tenant's plugins (nor see whether they exist).
    let plugin = server
        .post(
            "/v1/plugins/plg_unknown/backtest",
            &beta.key,
            json!({"version": "1"}),
        )
        .await;
    plugin.error(404, "not_found");
}

#[tokio::test]
async fn backtest_refuses_bad_input_naming_the_field() {
    let (server, tenant) = TestServer::with_tenant().await;
    let path = "/v1/workflows/rules/backtest";
    for (body, field) in [
        (json!({"rules": [], "days": 0}), "days"),
        (json!({"rules": [], "days": 91}), "days"),
        (
            json!({"rules": [], "max_verifications": 0}),
            "max_verifications",
        ),
        (json!({"rules": [], "time_budget_ms": 50}), "time_budget_ms"),
        (
            json!({"rules": [], "time_budget_ms": 60000}),
            "time_budget_ms",
        ),
        (
            json!({"rules": [{"rule_id": "x", "trigger": "nope", "conditions": {}, "actions": []}]}),
            "rules[0].trigger",
        ),
        (
            json!({"rules": [flag_uz(), {"rule_id": "x", "trigger": "otp_sent",
                "conditions": {"field": "country", "operator": "eq", "value": 1},
                "actions": [{"type": "review"}]}]}),
            "rules[1].conditions.value",
        ),
        (json!({"rules": [flag_uz(), flag_uz()]}), "rules[1].rule_id"),
    ] {
        let reply = server.post(path, &tenant.key, body.clone()).await;
        reply.invalid_field(field);
    }
    // Unknown and missing fields are refused too, naming them.
    let unknown = server
        .post(path, &tenant.key, json!({"rules": [], "dayz": 3}))
        .await;
    assert_eq!(unknown.status, 422, "{}", unknown.text);
    assert!(unknown.text.contains("dayz"), "{}", unknown.text);
    let missing = server.post(path, &tenant.key, json!({"days": 3})).await;
    assert_eq!(missing.status, 422, "{}", missing.text);
    assert!(missing.text.contains("rules"), "{}", missing.text);
    // A plugin backtest of an unknown plugin, or without a version.
    server
        .post(
            "/v1/plugins/plg_nope/backtest",
            &tenant.key,
            json!({"version": "1"}),
        )
        .await
        .error(404, "not_found");
    server
        .post(
            "/v1/plugins/plg_nope/backtest",
            &tenant.key,
            json!({"version": ""}),
        )
        .await
        .invalid_field("version");
    // Without a key, nothing.
    let anonymous = server.post(path, "", json!({"rules": []})).await;
    assert_eq!(anonymous.status, 401);
}

/// Uploads the rule `name`: the in-tree `echo` guest as its active version 1, then the
/// guest `artifact` as version `version`, not activated; both bound to `triggers`.
/// Returns the plugin's id.
async fn upload_candidate(
    server: &TestServer,
    tenant: &Tenant,
    artifact: &str,
    name: &str,
    version: &str,
    triggers: &str,
) -> String {
    let id = upload_rule(server, tenant, "guest_echo", name, triggers, Value::Null).await;
    let reply = upload_version(server, tenant, artifact, name, version, triggers).await;
    let body = reply.expect(201);
    assert_eq!(body["id"], id.as_str(), "{body}");
    assert_eq!(body["active_version"], "1.0.0", "{body}");
    id
}

#[tokio::test]
#[ignore = "needs the wasm32-wasip2 target (the in-tree guests); run with --include-ignored"]
async fn backtest_of_a_plugin_version_discards_its_key_value_writes() {
    let (server, tenant) = TestServer::with_tenant().await;
    let id = upload_candidate(
        &server,
        &tenant,
        "hostile_abuser",
        "counter",
        "2.0.0",
        "phone_lookup_complete",
    )
    .await;
    server
        .put(
            &format!("/v1/plugins/{id}/config"),
            &tenant.key,
            json!({"config": {"count": "yes"}}),
        )
        .await
        .expect(200);
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(verified(&server, &tenant, &uz_number(50 + n)).await);
    }
    let before = observed(&server, &tenant, &ids).await;
    let path = format!("/v1/plugins/{id}/backtest");
    let mut answers = Vec::new();
    for _ in 0..2 {
        let reply = server
            .post(&path, &tenant.key, json!({"version": "2.0.0"}))
            .await;
        answers.push(reply.expect(200).clone());
    }
    for answer in &answers {
        assert_eq!(answer["candidate"], "plugin counter 2.0.0");
        assert_eq!(answer["scanned"], 3, "{answer}");
        assert_eq!(answer["outcomes"]["unchanged"], 3);
        // The counter counts within a backtest (its scratch layer), never for real:
        // the second backtest starts from nothing again.
        assert_eq!(
            answer["flags_added"],
            json!({"count:1": 1, "count:2": 1, "count:3": 1}),
            "{answer}"
        );
    }
    // The command prints the same backtest, readably.
    let (ok, printed) = backtest_command(
        &server,
        &tenant.key,
        &["--plugin", &id, "--version", "2.0.0"],
    )
    .await;
    assert!(ok, "{printed}");
    assert!(
        printed.contains("backtest of plugin counter 2.0.0"),
        "{printed}"
    );
    assert!(
        printed.contains("3 verifications replayed, complete"),
        "{printed}"
    );
    assert!(printed.contains("count:3 (1)"), "{printed}");
    let plugin = server.get(&format!("/v1/plugins/{id}"), &tenant.key).await;
    assert_eq!(
        plugin.expect(200)["storage"]["kv_keys"],
        0,
        "{}",
        plugin.text
    );
    assert_eq!(observed(&server, &tenant, &ids).await, before);
    // An unknown version is named.
    server
        .post(&path, &tenant.key, json!({"version": "9"}))
        .await
        .invalid_field("version");
    // Another tenant cannot backtest this plugin, nor learn that it exists.
    let other = server.tenant("other").await;
    server
        .post(&path, &other.key, json!({"version": "2.0.0"}))
        .await
        .error(404, "not_found");
}

#[tokio::test]
#[ignore = "needs the wasm32-wasip2 target (the in-tree guests); run with --include-ignored"]
async fn hostile_plugin_versions_are_bounded_and_backtests_run_one_at_a_time() {
    let server = TestServer::start().await;
    let tenant = server.tenant("hostile").await;
    let bystander = server.tenant("bystander").await;
    let spin = upload_candidate(&server, &tenant, "hostile_spin", "spin", "2", ALL_TRIGGERS).await;
    let sleepy = upload_candidate(
        &server,
        &tenant,
        "hostile_sleep",
        "sleepy",
        "2",
        ALL_TRIGGERS,
    )
    .await;
    server
        .put(
            &format!("/v1/plugins/{sleepy}/config"),
            &tenant.key,
            json!({"config": {"forever": "yes", "sleep_ms": "1000"}}),
        )
        .await
        .expect(200);
    for n in 0..12 {
        verified(&server, &tenant, &uz_number(60 + n)).await;
    }

    // A spinning version: every call ends at the sandbox's limits, each failure is
    // counted, and (failing open, the default) no verdict changes.
    let spun = server
        .post(
            &format!("/v1/plugins/{spin}/backtest"),
            &tenant.key,
            json!({"version": "2"}),
        )
        .await;
    let spun = spun.expect(200);
    let runs = spun["failures"]["runs"].as_u64().expect("runs");
    assert!(runs > 0, "{spun}");
    let counted: u64 = spun["failures"]["by_kind"]
        .as_object()
        .expect("kinds")
        .iter()
        .filter(|(kind, _)| ["out_of_fuel", "timeout"].contains(&kind.as_str()))
        .map(|(_, n)| n.as_u64().expect("a count"))
        .sum();
    assert_eq!(counted, runs, "{spun}");
    assert_eq!(spun["outcomes"]["unchanged"], spun["scanned"], "{spun}");

    // A version that sleeps forever at every trigger: each call ends at its deadline,
    // and the time budget ends the backtest, saying how far it got. Meanwhile the
    // tenant's second backtest is refused, and another tenant's runs.
    let path = format!("/v1/plugins/{sleepy}/backtest");
    let started = std::time::Instant::now();
    let (long, second, other) = tokio::join!(
        server.post(
            &path,
            &tenant.key,
            json!({"version": "2", "time_budget_ms": 300}),
        ),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            server
                .post(
                    "/v1/workflows/rules/backtest",
                    &tenant.key,
                    json!({"rules": []}),
                )
                .await
        },
        async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            verified(&server, &bystander, &uz_number(90)).await;
            server
                .post(
                    "/v1/workflows/rules/backtest",
                    &bystander.key,
                    json!({"rules": [decline_uz()]}),
                )
                .await
        },
    );
    let took = started.elapsed();
    let answer = long.expect(200);
    assert_eq!(answer["complete"], false, "{answer}");
    assert!(
        ["time_budget", "overloaded"].contains(&answer["stopped"].as_str().unwrap_or("")),
        "{answer}"
    );
    assert!(
        answer["scanned"].as_u64().expect("scanned") < 12,
        "{answer}"
    );
    assert!(
        answer["elapsed_ms"].as_u64().expect("elapsed") < 3_000,
        "{answer}"
    );
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    let kinds = answer["failures"]["by_kind"].as_object().expect("kinds");
    assert!(
        kinds
            .keys()
            .all(|kind| ["timeout", "overloaded"].contains(&kind.as_str())),
        "{answer}"
    );
    assert_eq!(answer["outcomes"]["would_decline"], 0);
    second.error(409, "backtest_running");
    assert_eq!(other.expect(200)["outcomes"]["would_decline"], 1);
    // Once it ended, the tenant may backtest again.
    backtest(&server, &tenant, json!({"rules": []})).await;
}

#[tokio::test]
async fn the_backtest_command_fails_on_an_error_answer() {
    let (server, tenant) = TestServer::with_tenant().await;
    let (ok, printed) = backtest_command(
        &server,
        &tenant.key,
        &["--plugin", "plg_unknown", "--version", "1"],
    )
    .await;
    assert!(!ok, "{printed}");
    assert!(
        printed.contains("404") && printed.contains("not_found"),
        "{printed}"
    );
    let (ok, printed) = backtest_command(
        &server,
        &tenant.key,
        &["--plugin", "plg_unknown", "--version", "1", "--days", "0"],
    )
    .await;
    assert!(!ok, "{printed}");
    assert!(printed.contains("(field days)"), "{printed}");
}
