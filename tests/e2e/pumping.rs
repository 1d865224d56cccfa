//! The SMS-pumping detector end to end, tried as an attacker would: runs of
//! neighbouring numbers and codes that are never verified get their prefix blocked
//! (a declined send with a warning, a case, a `fraud.prefix_blocked` webhook, a block
//! the tenant and the operator list and lift); a prefix under attack at one tenant is
//! blocked for a newcomer; traffic whose codes are verified, exempt prefixes and
//! monitor mode send on; blocks lengthen while the attack goes on; counts survive a
//! restart.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::support::*;

/// The `i`-th number of a run of neighbours under +44 7400.
pub(crate) fn run(i: u32) -> String {
    format!("+44740090{:04}", 100 + i)
}

/// Numbers under +44 7400 far from each other and from [`run`]'s.
pub(crate) fn scattered(i: u32) -> String {
    format!("+447400{:06}", 300_000 + i * 7_919)
}

/// Sends a code for applicant `applicant` to `phone`; the answer.
async fn send(server: &TestServer, tenant: &Tenant, phone: &str) -> Value {
    server
        .send_otp(tenant, json!({"phone": phone, "applicant_id": "a"}))
        .await
        .expect(200)
        .clone()
}

/// Sends `count` codes to the run from `from`, each expected to go out.
async fn send_run(server: &TestServer, tenant: &Tenant, from: u32, count: u32) {
    for i in from..from + count {
        let sent = send(server, tenant, &run(i)).await;
        assert_eq!(sent["status"], "pending", "send {i}: {sent}");
        assert!(
            !risks(&sent["warnings"]).contains(&"SMS_PUMPING_SUSPECTED".to_owned()),
            "{sent}"
        );
    }
}

/// Expects `sent` declined by the detector's block of `prefix`; nothing went out.
async fn assert_blocked(server: &TestServer, tenant: &Tenant, sent: &Value, prefix: &str) {
    assert_eq!(sent["status"], "declined", "{sent}");
    let pumping = warning(&sent["warnings"], "SMS_PUMPING_SUSPECTED");
    assert_warning(pumping, "SMS_PUMPING_SUSPECTED", "Decline");
    let data = pumping["additional_data"].as_str().expect("data");
    assert!(
        data.starts_with(&format!("prefix {prefix} blocked until ")),
        "{data}"
    );
    let phone = sent["phone"].as_str().expect("phone");
    assert!(
        server.outbox(tenant, phone).await.is_empty(),
        "{phone} got a code"
    );
}

/// The tenant's blocks (`status` `active` or `all`).
async fn blocks(server: &TestServer, tenant: &Tenant, status: &str) -> Value {
    server
        .get(&format!("/v1/fraud/blocks?status={status}"), &tenant.key)
        .await
        .expect(200)
        .clone()
}

/// A webhook receiver on loopback keeping every body.
pub(crate) async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    async fn keep(State(kept): State<Arc<Mutex<Vec<Value>>>>, Json(body): Json<Value>) {
        kept.lock().expect("lock").push(body);
    }
    let kept = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/hook", post(keep))
        .with_state(Arc::clone(&kept));
    let addr = serve_on_loopback(app).await;
    (format!("http://{addr}/hook"), kept)
}

#[tokio::test]
async fn a_run_of_neighbouring_numbers_gets_its_prefix_blocked_with_a_case_and_a_webhook() {
    let (server, tenant) = TestServer::with_tenant().await;
    let (url, kept) = receiver().await;
    server
        .post(
            "/v1/webhooks",
            &tenant.key,
            json!({"url": url, "event_types": ["fraud.prefix_blocked"]}),
        )
        .await
        .expect(201);

    // Eight neighbours go out; the ninth has eight neighbours and is refused.
    send_run(&server, &tenant, 0, 8).await;
    let ninth = send(&server, &tenant, &run(8)).await;
    assert_blocked(&server, &tenant, &ninth, "+447400").await;

    // The report carries the warning and the case the block opened.
    let id = ninth["verification_id"].as_str().expect("id");
    let report = server.report(&tenant, id).await;
    assert_eq!(report["phone"]["status"], "Declined", "{report}");
    assert!(risks(&report["phone"]["warnings"]).contains(&"SMS_PUMPING_SUSPECTED".to_owned()));
    let case = &report["cases"][0];
    assert_eq!(case["case_type"], "sms_pumping", "{report}");
    assert_eq!(case["priority"], "high");
    let case_id = case["case_id"].as_str().expect("case id");
    let opened = server
        .get(&format!("/v1/cases/{case_id}"), &tenant.key)
        .await
        .expect(200)
        .clone();
    assert_eq!(opened["opened_by"], "sms_pumping_detector", "{opened}");

    // The whole prefix is blocked, scattered numbers too; other prefixes are not.
    let other = send(&server, &tenant, &scattered(1)).await;
    assert_blocked(&server, &tenant, &other, "+447400").await;
    let elsewhere = send(&server, &tenant, "+447800123456").await;
    assert_eq!(elsewhere["status"], "pending", "{elsewhere}");

    let listed = blocks(&server, &tenant, "active").await;
    let block = &listed["blocks"][0];
    assert_eq!(
        listed["blocks"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(block["prefix"], "+447400", "{listed}");
    assert_eq!(block["status"], "active");
    assert_eq!(block["enforced"], true);
    assert_eq!(block["reason"], "sequential_numbers");
    assert_eq!(block["country"], "GB");
    assert_eq!(block["blocked_sends"], 2, "{listed}");
    assert_eq!(block["case_id"], case_id);
    assert_eq!(block["verification_id"], id);
    assert_eq!(block["signals"]["sequential_neighbours"], 8, "{listed}");
    assert_eq!(listed["blocked_sends"], 2);

    // The webhook names the block.
    let hook = wait_until(|| kept.lock().expect("lock").first().cloned()).await;
    assert_eq!(hook["type"], "fraud.prefix_blocked", "{hook}");
    assert_eq!(hook["data"]["prefix"], "+447400");
    assert_eq!(hook["data"]["tenant_id"], tenant.id.as_str());
    assert_eq!(hook["data"]["reason"], "sequential_numbers");
}

/// Polls `found` (every 20 ms, up to 10 s) until it gives something.
pub(crate) async fn wait_until<T>(mut found: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(value) = found() {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_lifted_block_lets_the_prefix_send_again_and_is_kept_as_lifted() {
    let (server, tenant) = TestServer::with_tenant().await;
    send_run(&server, &tenant, 0, 8).await;
    let blocked = send(&server, &tenant, &run(8)).await;
    assert_blocked(&server, &tenant, &blocked, "+447400").await;

    // The prefix's digits, with or without the +, name the block.
    let lifted = server
        .delete("/v1/fraud/blocks/447400", &tenant.key)
        .await
        .expect(200)
        .clone();
    assert_eq!(lifted["status"], "lifted", "{lifted}");
    assert_eq!(lifted["lifted_by"], "tenant");
    server
        .delete("/v1/fraud/blocks/%2B447400", &tenant.key)
        .await
        .error(404, "not_found");
    server
        .delete("/v1/fraud/blocks/%2B44x", &tenant.key)
        .await
        .invalid_field("prefix");

    // The lifted prefix is not judged again for a window: the run goes on.
    send_run(&server, &tenant, 9, 4).await;
    assert_eq!(
        blocks(&server, &tenant, "active").await["blocks"],
        json!([])
    );
    let all = blocks(&server, &tenant, "all").await;
    assert_eq!(all["blocks"][0]["status"], "lifted", "{all}");
    server
        .get("/v1/fraud/blocks?status=maybe", &tenant.key)
        .await
        .invalid_field("status");

    // A window later, the run is judged again.
    server.advance(chrono::Duration::minutes(61));
    send_run(&server, &tenant, 20, 8).await;
    let again = send(&server, &tenant, &run(28)).await;
    assert_blocked(&server, &tenant, &again, "+447400").await;
}

#[tokio::test]
async fn a_prefix_under_attack_at_one_tenant_is_blocked_for_another_from_its_first_send() {
    let server = TestServer::start().await;
    let attacked = server.tenant("attacked").await;
    let newcomer = server.tenant("newcomer").await;
    send_run(&server, &attacked, 0, 8).await;
    let blocked = send(&server, &attacked, &run(8)).await;
    assert_blocked(&server, &attacked, &blocked, "+447400").await;

    // The newcomer's very first code to the prefix is refused, by the host's state.
    let first = send(&server, &newcomer, &scattered(3)).await;
    assert_blocked(&server, &newcomer, &first, "+447400").await;
    let own = blocks(&server, &newcomer, "active").await;
    assert_eq!(own["blocks"][0]["reason"], "blocked_elsewhere", "{own}");
    assert_eq!(own["blocks"][0]["signals"]["blocked_elsewhere"], true);
    // Only aggregates cross tenants: the newcomer sees its own block, nothing of the
    // other tenant's numbers or ids.
    let text = own.to_string();
    assert!(!text.contains(attacked.id.as_str()), "{text}");
    assert!(!text.contains(&run(8)[1..]), "{text}");
    // Its other destinations are untouched.
    let elsewhere = send(&server, &newcomer, "+447800123456").await;
    assert_eq!(elsewhere["status"], "pending", "{elsewhere}");

    // The operator sees both tenants' blocks and lifts the newcomer's.
    let all = server
        .get("/v1/admin/fraud/blocks", OPERATOR_KEY)
        .await
        .expect(200)
        .clone();
    let mut owners: Vec<&str> = all["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .filter_map(|block| block["tenant_id"].as_str())
        .collect();
    owners.sort_unstable();
    let mut expected = vec![attacked.id.as_str(), newcomer.id.as_str()];
    expected.sort_unstable();
    assert_eq!(owners, expected, "{all}");
    server
        .get("/v1/admin/fraud/blocks", &newcomer.key)
        .await
        .error(401, "unauthorized");
    let lifted = server
        .delete(
            &format!("/v1/admin/tenants/{}/fraud/blocks/%2B447400", newcomer.id),
            OPERATOR_KEY,
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(lifted["lifted_by"], "operator", "{lifted}");
    let after = send(&server, &newcomer, &scattered(4)).await;
    assert_eq!(after["status"], "pending", "{after}");
    // The attacked tenant's block stands.
    let still = send(&server, &attacked, &scattered(5)).await;
    assert_blocked(&server, &attacked, &still, "+447400").await;
}

#[tokio::test]
async fn monitor_mode_records_the_block_and_sends_exempt_prefixes_and_off_never_judge() {
    let server = TestServer::start().await;
    let monitored = server.tenant("monitored").await;
    server
        .settings(&monitored, json!({"sms_pumping": {"mode": "monitor"}}))
        .await;
    send_run(&server, &monitored, 0, 8).await;
    for i in 8..12 {
        let sent = send(&server, &monitored, &run(i)).await;
        assert_eq!(sent["status"], "pending", "{sent}");
        let note = warning(&sent["warnings"], "SMS_PUMPING_SUSPECTED");
        assert_warning(note, "SMS_PUMPING_SUSPECTED", "Approve");
        assert_eq!(server.outbox(&monitored, &run(i)).await.len(), 1);
    }
    let listed = blocks(&server, &monitored, "active").await;
    assert_eq!(listed["blocks"][0]["enforced"], false, "{listed}");
    assert_eq!(listed["blocks"][0]["blocked_sends"], 0);
    // A monitored block is no attack for the other tenants.
    let other = server.tenant("other").await;
    let first = send(&server, &other, &scattered(1)).await;
    assert_eq!(first["status"], "pending", "{first}");

    let exempt = server.tenant("exempt").await;
    server
        .settings(
            &exempt,
            json!({"sms_pumping": {"exempt_prefixes": ["+4474009"]}}),
        )
        .await;
    send_run(&server, &exempt, 0, 14).await;

    let off = server.tenant("off").await;
    server
        .settings(&off, json!({"sms_pumping": {"mode": "off"}}))
        .await;
    send_run(&server, &off, 0, 14).await;
    for tenant in [&exempt, &off] {
        assert_eq!(blocks(&server, tenant, "all").await["blocks"], json!([]));
    }
}

#[tokio::test]
async fn codes_that_are_never_verified_get_the_prefix_blocked_once_they_mature() {
    let server = TestServer::start().await;
    let silent = server.tenant("silent").await;
    let converting = server.tenant("converting").await;
    let reporting = server.tenant("reporting").await;
    let windows = json!({"sms_pumping": {"window_seconds": 600, "maturity_seconds": 30}});
    for tenant in [&silent, &converting, &reporting] {
        server.settings(tenant, windows.clone()).await;
    }
    // One code a tenant every 10 s to scattered numbers under +44 7500 (never runs).
    // The silent tenant's users never enter them; the converting tenant's do; the
    // reporting tenant's app verifies elsewhere and reports it as feedback.
    let mut blocked_at = None;
    for i in 0..60_u32 {
        let phone = format!("+447500{:06}", 100_000 + i * 7_919);
        let sent = send(&server, &silent, &phone).await;
        if sent["status"] == "declined" {
            assert_blocked(&server, &silent, &sent, "+447500").await;
            blocked_at = Some(i);
            break;
        }
        let verified = server.send_and_verify(&converting, &phone, "a").await;
        assert_eq!(verified["verification_status"], "verified", "{verified}");
        let reported = send(&server, &reporting, &phone).await;
        assert_eq!(reported["status"], "pending", "{reported}");
        let id = reported["verification_id"].as_str().expect("id");
        server
            .post(
                &format!("/v1/verifications/{id}/feedback"),
                &reporting.key,
                json!({"outcome": "verified"}),
            )
            .await
            .expect(200);
        server.advance(chrono::Duration::seconds(10));
    }
    let at = blocked_at.expect("the silent tenant's prefix is blocked");
    // Not before the first codes matured.
    assert!(at > 3, "blocked at send {at}");
    let listed = blocks(&server, &silent, "active").await;
    let block = &listed["blocks"][0];
    assert_eq!(block["reason"], "low_conversion", "{listed}");
    assert!(block["signals"]["conversion_rate"].as_f64().expect("rate") < 0.15);
    for tenant in [&converting, &reporting] {
        assert_eq!(blocks(&server, tenant, "all").await["blocks"], json!([]));
    }
}

#[tokio::test]
async fn a_block_lengthens_while_the_attack_goes_on_and_doubles_when_it_comes_back() {
    let (server, tenant) = TestServer::with_tenant().await;
    send_run(&server, &tenant, 0, 8).await;
    let first = send(&server, &tenant, &run(8)).await;
    assert_blocked(&server, &tenant, &first, "+447400").await;
    let until = |listed: &Value| timestamp(&listed["blocks"][0]["until"]);
    let created = blocks(&server, &tenant, "active").await;
    let first_until = until(&created);
    assert_eq!(
        first_until - timestamp(&created["blocks"][0]["created_at"]),
        chrono::Duration::hours(12)
    );

    // Eleven hours on, blocked sends still arrive: the block runs 12 h from then.
    server.advance(chrono::Duration::hours(11));
    let still = send(&server, &tenant, &scattered(2)).await;
    assert_blocked(&server, &tenant, &still, "+447400").await;
    let extended = until(&blocks(&server, &tenant, "active").await);
    assert_eq!(extended - first_until, chrono::Duration::hours(11));

    // Once it ends, the prefix sends; a new run is blocked for twice as long.
    server.advance(chrono::Duration::hours(13));
    send_run(&server, &tenant, 40, 8).await;
    let again = send(&server, &tenant, &run(48)).await;
    assert_blocked(&server, &tenant, &again, "+447400").await;
    let listed = blocks(&server, &tenant, "active").await;
    assert_eq!(listed["blocks"][0]["level"], 1, "{listed}");
    assert_eq!(
        until(&listed) - timestamp(&listed["blocks"][0]["created_at"]),
        chrono::Duration::hours(24)
    );
}

#[tokio::test]
async fn the_detectors_counts_survive_a_restart() {
    let (server, tenant) = TestServer::with_tenant().await;
    send_run(&server, &tenant, 0, 5).await;
    let server = server.restart().await;
    send_run(&server, &tenant, 5, 3).await;
    let ninth = send(&server, &tenant, &run(8)).await;
    assert_blocked(&server, &tenant, &ninth, "+447400").await;
    // And the block survives the next one.
    let server = server.restart().await;
    let after = send(&server, &tenant, &scattered(9)).await;
    assert_blocked(&server, &tenant, &after, "+447400").await;
}

#[tokio::test]
async fn bad_sms_pumping_settings_are_refused_naming_the_field_and_change_nothing() {
    let (server, tenant) = TestServer::with_tenant().await;
    let before = server
        .get("/v1/settings/phone-verification", &tenant.key)
        .await
        .expect(200)
        .clone();
    for (patch, field) in [
        (
            json!({"sms_pumping": {"window_seconds": 5}}),
            "sms_pumping.window_seconds",
        ),
        (
            json!({"sms_pumping": {"maturity_seconds": 0}}),
            "sms_pumping.maturity_seconds",
        ),
        (
            json!({"sms_pumping": {"block_seconds": 10}}),
            "sms_pumping.block_seconds",
        ),
        (
            json!({"sms_pumping": {"exempt_prefixes": ["+44", "0044"]}}),
            "sms_pumping.exempt_prefixes[1]",
        ),
        (
            json!({"sms_pumping": {"country_tiers": {"ZZ": "high"}}}),
            "sms_pumping.country_tiers.ZZ",
        ),
    ] {
        server
            .put("/v1/settings/phone-verification", &tenant.key, patch)
            .await
            .invalid_field(field);
    }
    let after = server
        .get("/v1/settings/phone-verification", &tenant.key)
        .await
        .expect(200)
        .clone();
    assert_eq!(before, after);
    assert_eq!(after["sms_pumping"]["mode"], "standard", "{after}");
}

/// The figure after `label` in the bench's output: `blocked of sent`.
fn blocked_of(printed: &str, label: &str) -> (u64, u64) {
    let line = printed
        .lines()
        .find(|line| line.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} in {printed}"));
    let numbers: Vec<u64> = line[line.find(':').expect("colon") + 1..]
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

#[tokio::test]
async fn the_pumping_bench_blocks_the_attacks_and_none_of_the_legitimate_traffic() {
    let printed = run_bench(&["--scenarios", "pumping", "--pumping-minutes", "20"]).await;
    let (attack_blocked, attack_sent) = blocked_of(&printed, "attack messages blocked");
    let (legit_blocked, legit_sent) = blocked_of(&printed, "legitimate messages blocked");
    let (campaign_blocked, campaign_sent) = blocked_of(&printed, "campaign messages blocked");
    assert!(
        attack_sent >= 5 * 50 && legit_sent >= 2_000 && campaign_sent > 0,
        "{printed}"
    );
    // The targets: at least 95% of the attack, at most 0.5% of the legitimate
    // traffic, none of the campaign.
    assert!(attack_blocked * 100 >= attack_sent * 95, "{printed}");
    assert!(legit_blocked * 1000 <= legit_sent * 5, "{printed}");
    assert_eq!(campaign_blocked, 0, "{printed}");
    // Every attacked range is blocked within its first hundred messages.
    let firsts = printed
        .lines()
        .find(|line| line.contains("before its block"))
        .expect("first blocks");
    for range in firsts.split(':').nth(1).expect("ranges").split(',') {
        let before: u64 = range
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{range} never blocked: {printed}"));
        assert!(before < 100, "{range}: {printed}");
    }
    assert!(printed.contains("cost saved: $"), "{printed}");
}

/// Creates a declarative rule at `before_send_otp` that adds `flag` when `condition`
/// holds.
async fn flag_rule(server: &TestServer, tenant: &Tenant, id: &str, condition: Value, flag: &str) {
    server
        .post(
            "/v1/workflows/rules",
            &tenant.key,
            json!({
                "rule_id": id,
                "trigger": "before_send_otp",
                "conditions": condition,
                "actions": [{"type": "add_flag", "flag": flag}],
            }),
        )
        .await
        .expect(201);
}

fn flags(sent: &Value) -> Vec<String> {
    sent["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .filter_map(|flag| flag.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn declarative_rules_see_the_pumping_risk_the_prefix_figures_and_the_permissions() {
    let (server, tenant) = TestServer::with_tenant().await;
    flag_rule(
        &server,
        &tenant,
        "rising_risk",
        json!({"all": [
            {"field": "pumping_risk", "operator": "gte", "value": 35},
            {"field": "prefix_sends_1h", "operator": "gte", "value": 4},
            {"field": "geo_permitted", "operator": "eq", "value": true}
        ]}),
        "pumping-suspect",
    )
    .await;
    flag_rule(
        &server,
        &tenant,
        "refused_destination",
        json!({"field": "geo_permitted", "operator": "eq", "value": false}),
        "geo-refused",
    )
    .await;
    flag_rule(
        &server,
        &tenant,
        "unconverted",
        json!({"field": "prefix_conversion_rate", "operator": "exists", "value": true}),
        "has-conversion",
    )
    .await;
    // Four neighbours give the fifth number 35 points: the rule sees it before the
    // detector would block (at 80).
    for i in 0..4 {
        let sent = send(&server, &tenant, &run(i)).await;
        assert!(flags(&sent).is_empty(), "send {i}: {sent}");
    }
    let fifth = send(&server, &tenant, &run(4)).await;
    assert_eq!(fifth["status"], "pending", "{fifth}");
    assert_eq!(flags(&fifth), ["pumping-suspect"], "{fifth}");
    // A destination the permissions refuse (a UK premium-rate number): the rule sees
    // it before the send is declined.
    let premium = send(&server, &tenant, "+449091234567").await;
    assert_eq!(premium["status"], "declined", "{premium}");
    assert_eq!(flags(&premium), ["geo-refused"], "{premium}");
    // Conversion is known once codes matured: an hour on, the four unverified codes
    // count.
    server.advance(chrono::Duration::minutes(61));
    let later = send(&server, &tenant, &scattered(20)).await;
    assert!(
        flags(&later).contains(&"has-conversion".to_owned()),
        "{later}"
    );
    // With the detector off the signals are unknown: no rule on them matches.
    server
        .settings(&tenant, json!({"sms_pumping": {"mode": "off"}}))
        .await;
    let off = send(&server, &tenant, &scattered(21)).await;
    assert!(flags(&off).is_empty(), "{off}");
}

#[tokio::test]
async fn rule_plugins_read_the_signals_in_their_event_and_a_0_1_0_plugin_still_runs() {
    let (server, tenant) = TestServer::with_tenant().await;
    upload_rule(
        &server,
        &tenant,
        "guest_signals",
        "signals",
        "before_send_otp",
        Value::Null,
    )
    .await;
    upload_rule(
        &server,
        &tenant,
        "guest_contract_v010",
        "old-contract",
        "before_send_otp",
        Value::Null,
    )
    .await;
    let first = send(&server, &tenant, &scattered(1)).await;
    assert_eq!(first["status"], "pending", "{first}");
    let mut seen = flags(&first);
    seen.sort();
    assert_eq!(
        seen,
        [
            "signals risk=0 conversion=none sends=0 geo=true",
            "v0.1.0 saw mobile at before_send_otp",
        ],
        "{first}"
    );
    // The second send to the prefix sees the first counted.
    let second = send(&server, &tenant, &scattered(2)).await;
    assert!(
        flags(&second).contains(&"signals risk=0 conversion=none sends=1 geo=true".to_owned()),
        "{second}"
    );
}

#[tokio::test]
async fn the_operator_exempts_prefixes_for_every_tenant() {
    let (server, tenant) = TestServer::with_tenant().await;
    let path = "/v1/admin/fraud/exemptions";
    assert_eq!(
        server.get(path, OPERATOR_KEY).await.expect(200)["prefixes"],
        json!([])
    );
    server
        .put(path, &tenant.key, json!({"prefixes": ["+4474009"]}))
        .await
        .error(401, "unauthorized");
    server
        .put(
            path,
            OPERATOR_KEY,
            json!({"prefixes": ["+4474009", "4474"]}),
        )
        .await
        .invalid_field("prefixes[1]");
    let stored = server
        .put(
            path,
            OPERATOR_KEY,
            json!({"prefixes": ["+4474009", "+4474009"]}),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(stored["prefixes"], json!(["+4474009"]));
    // The run goes out whole: the detector does not judge the exempt prefix.
    send_run(&server, &tenant, 0, 14).await;
    assert_eq!(blocks(&server, &tenant, "all").await["blocks"], json!([]));
    // Once the exemption is gone, a new run is judged again.
    server
        .put(path, OPERATOR_KEY, json!({"prefixes": []}))
        .await
        .expect(200);
    server.advance(chrono::Duration::minutes(61));
    send_run(&server, &tenant, 40, 8).await;
    let ninth = send(&server, &tenant, &run(48)).await;
    assert_blocked(&server, &tenant, &ninth, "+447400").await;
}
