//! Plugins end to end: uploading and managing components over the API, rules firing at
//! every trigger with the right event and every action taking effect, the first-party
//! rules and adapters (against a loopback CAMARA operator), hostile plugins contained
//! while other tenants carry on, tenant isolation, version swaps, dry runs, and reload
//! after a restart without compiling. The components are real, built from `rules/`,
//! `plugins/` and `tests/` for wasm32-wasip2.

use reqwest::Method;
use serde_json::{json, Value};

use dialgate::plugins::testing::guest_component;

use dialgate::clock::Clock as _;

use crate::sims::{CamaraSim, SmsSim};
use crate::support::*;

/// Uploads `artifact` raw with the manifest in `query` (without the leading `?`).
async fn upload(server: &TestServer, tenant: &Tenant, artifact: &str, query: &str) -> Reply {
    upload_bytes(server, tenant, guest_component(artifact), query).await
}

async fn upload_bytes(server: &TestServer, tenant: &Tenant, bytes: Vec<u8>, query: &str) -> Reply {
    server
        .raw(
            Method::POST,
            &format!("/v1/plugins?{query}"),
            Some(&tenant.key),
            Some(("application/wasm", bytes)),
            &[],
        )
        .await
}

/// Uploads the echo rule bound to every trigger, with `config`; returns its id.
async fn echo(server: &TestServer, tenant: &Tenant, config: Value) -> String {
    upload_echo(server, tenant, ALL_TRIGGERS, config).await
}

async fn install(server: &TestServer, tenant: &Tenant, name: &str, body: Value) -> String {
    let reply = server
        .post(&format!("/v1/plugins/catalog/{name}"), &tenant.key, body)
        .await;
    reply.expect(201)["id"].as_str().expect("id").to_owned()
}

async fn lookup(server: &TestServer, tenant: &Tenant, body: Value) -> Value {
    server
        .post("/v1/phone/lookup", &tenant.key, body)
        .await
        .expect(200)
        .clone()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().expect("string").to_owned())
        .collect()
}

#[tokio::test]
async fn a_rule_is_uploaded_raw_listed_and_shown_with_its_versions() {
    let (server, tenant) = TestServer::with_tenant().await;
    let reply = upload(
        &server,
        &tenant,
        "otp_for_voip",
        "name=voip-check&kind=rule&version=1.0.0&triggers=phone_lookup_complete&description=VoIP%20needs%20a%20code",
    )
    .await;
    let plugin = reply.expect(201);
    assert_eq!(plugin["name"], "voip-check");
    assert_eq!(plugin["kind"], "rule");
    assert_eq!(plugin["active_version"], "1.0.0");
    assert_eq!(plugin["triggers"], json!(["phone_lookup_complete"]));
    let id = plugin["id"].as_str().expect("id");
    let sha = plugin["versions"][0]["sha256"].as_str().expect("sha");
    assert_eq!(sha.len(), 64);

    let list = server.get("/v1/plugins", &tenant.key).await;
    assert_eq!(list.expect(200)["plugins"][0]["id"], id);
    let one = server.get(&format!("/v1/plugins/{id}"), &tenant.key).await;
    assert_eq!(one.expect(200)["name"], "voip-check");
    let versions = server
        .get(&format!("/v1/plugins/{id}/versions"), &tenant.key)
        .await;
    let versions = versions.expect(200);
    assert_eq!(versions["active_version"], "1.0.0");
    assert_eq!(versions["versions"][0]["description"], "VoIP needs a code");

    // The same version again is a conflict; another tenant does not see the plugin.
    let again = upload(
        &server,
        &tenant,
        "otp_for_voip",
        "name=voip-check&kind=rule&version=1.0.0&triggers=phone_lookup_complete",
    )
    .await;
    again.error(409, "conflict");
    let other = server.tenant("other").await;
    server
        .get(&format!("/v1/plugins/{id}"), &other.key)
        .await
        .error(404, "not_found");
}

#[tokio::test]
async fn a_rule_is_uploaded_as_multipart_with_a_json_manifest() {
    let (server, tenant) = TestServer::with_tenant().await;
    let boundary = "dialgate-boundary-7d1";
    let manifest = json!({
        "name": "sim-swap",
        "kind": "rule",
        "version": "2.1.0",
        "triggers": ["phone_lookup_complete"],
    });
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"manifest\"\r\nContent-Type: application/json\r\n\r\n{manifest}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"component\"; filename=\"flag_sim_swap.wasm\"\r\nContent-Type: application/wasm\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&guest_component("flag_sim_swap"));
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let reply = server
        .raw(
            Method::POST,
            "/v1/plugins",
            Some(&tenant.key),
            Some((&format!("multipart/form-data; boundary={boundary}"), body)),
            &[],
        )
        .await;
    let plugin = reply.expect(201);
    assert_eq!(plugin["name"], "sim-swap");
    assert_eq!(plugin["active_version"], "2.1.0");
}

#[tokio::test]
async fn uploads_are_checked_and_refused_with_an_error_naming_the_problem() {
    let (server, tenant) = TestServer::with_tenant().await;
    let rule = "kind=rule&version=1&triggers=phone_lookup_complete";

    let junk = upload_bytes(
        &server,
        &tenant,
        b"\0asm junk".to_vec(),
        &format!("name=junk&{rule}"),
    )
    .await;
    assert_eq!(junk.error(422, "not_a_component")["field"], "component");

    let forbidden = upload(
        &server,
        &tenant,
        "hostile_forbidden_import",
        &format!("name=sneaky&{rule}"),
    )
    .await;
    let error = forbidden.error(422, "forbidden_import");
    let message = error["message"].as_str().expect("message");
    assert!(
        message.contains("dialgate:plugin/http-client@0.2.0"),
        "{message}"
    );
    assert!(message.contains("rule world"), "{message}");

    let wrong = upload(
        &server,
        &tenant,
        "otp_for_voip",
        "name=x&kind=lookup_adapter&version=1",
    )
    .await;
    wrong.error(422, "wrong_world");

    let name = upload(
        &server,
        &tenant,
        "otp_for_voip",
        &format!("name=Bad%20Name&{rule}"),
    )
    .await;
    name.invalid_field("name");
    let trigger = upload(
        &server,
        &tenant,
        "otp_for_voip",
        "name=x&kind=rule&version=1&triggers=on_full_moon",
    )
    .await;
    trigger.invalid_field("triggers");
    let no_triggers = upload(
        &server,
        &tenant,
        "otp_for_voip",
        "name=x&kind=rule&version=1",
    )
    .await;
    no_triggers.invalid_field("triggers");
    let unknown_kind = upload(
        &server,
        &tenant,
        "otp_for_voip",
        "name=x&kind=gadget&version=1&triggers=otp_sent",
    )
    .await;
    unknown_kind.invalid_field("manifest");

    let text = server
        .raw(
            Method::POST,
            "/v1/plugins",
            Some(&tenant.key),
            Some(("text/plain", b"hi".to_vec())),
            &[],
        )
        .await;
    text.error(415, "unsupported_media_type");

    let huge = upload_bytes(
        &server,
        &tenant,
        vec![0; 9 << 20],
        &format!("name=huge&{rule}"),
    )
    .await;
    huge.error(413, "payload_too_large");

    // Nothing was stored by any of these.
    let list = server.get("/v1/plugins", &tenant.key).await;
    assert_eq!(list.expect(200)["plugins"], json!([]));
}

#[tokio::test]
async fn seed_rule_otp_for_voip_requires_a_code_for_voip_numbers() {
    let (server, tenant) = TestServer::with_tenant().await;
    server
        .settings(&tenant, json!({"require_otp": false}))
        .await;
    let catalogue = server.get("/v1/plugins/catalog", &tenant.key).await;
    let names: Vec<&str> = catalogue.expect(200)["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    for builtin in [
        "otp-for-voip",
        "flag-sim-swap",
        "velocity",
        "http-sms",
        "camara-lookup",
    ] {
        assert!(names.contains(&builtin), "{builtin} missing from {names:?}");
    }
    install(&server, &tenant, "otp-for-voip", Value::Null).await;

    // A mobile number is decided by the lookup alone.
    let mobile = lookup(
        &server,
        &tenant,
        json!({"phone": UZ_BEELINE, "applicant_id": "m"}),
    )
    .await;
    assert_eq!(mobile["status"], "Approved");
    assert!(mobile.get("otp_required").is_none());

    // A VoIP number needs a code: the verification stays open until one is verified.
    let voip = lookup(
        &server,
        &tenant,
        json!({"phone": UK_VOIP, "applicant_id": "v"}),
    )
    .await;
    assert_eq!(voip["status"], "Not Finished");
    assert_eq!(voip["otp_required"], "sms");
    assert_eq!(
        voip["info_requested"],
        json!(["Phone verification required"])
    );
    let id = voip["verification_id"].as_str().expect("id").to_owned();
    let verified = server.send_and_verify(&tenant, UK_VOIP, "v").await;
    assert_eq!(verified["verification_id"], id.as_str());
    let report = server.report(&tenant, &id).await;
    let fired: Vec<&str> = report["rules_fired"]
        .as_array()
        .expect("rules_fired")
        .iter()
        .map(|run| run["name"].as_str().expect("name"))
        .collect();
    assert!(fired.contains(&"otp-for-voip"), "{report}");
    assert_eq!(
        report["info_requested"],
        json!(["Phone verification required"])
    );
}

/// Installs the CAMARA lookup adapter pointed at `sim`, granted when `grant` says so,
/// and checks that its secret is never returned.
async fn camara(server: &TestServer, tenant: &Tenant, sim: &CamaraSim, grant: bool) -> String {
    let (id, reply) = install_camara(server, tenant, sim, grant).await;
    assert_eq!(reply.expect(200)["secrets"], json!(["access_token"]));
    assert!(!reply.text.contains(CAMARA_TOKEN), "a secret was returned");
    id
}

#[tokio::test]
async fn the_camara_adapter_feeds_sim_swap_data_to_the_flag_sim_swap_rule() {
    let (server, tenant) = TestServer::with_tenant().await;
    let sim = CamaraSim::start().await;
    server
        .settings(
            &tenant,
            json!({"sim_swap_check": true, "sim_swap_threshold_days": 7}),
        )
        .await;
    camara(&server, &tenant, &sim, true).await;
    install(&server, &tenant, "flag-sim-swap", Value::Null).await;

    let recent = uz_number(1);
    sim.swapped(
        &recent,
        Some(server.clock.now() - chrono::Duration::days(2)),
    );
    let swapped = lookup(&server, &tenant, json!({"phone": recent})).await;
    assert_eq!(swapped["flags"], json!(["recent_sim_swap"]), "{swapped}");
    assert_eq!(swapped["sim_swap"]["days_since_change"], 2);
    assert_eq!(swapped["lookup_adapter"]["name"], "camara-lookup");
    assert_eq!(swapped["lookup_adapter"]["error"], Value::Null);
    assert_eq!(swapped["cases"][0]["case_type"], "fraud");
    assert_eq!(swapped["cases"][0]["priority"], "high");
    let seen = sim.seen();
    assert_eq!(seen[0].path, "/sim-swap/v2/retrieve-date");
    assert_eq!(seen[0].body, json!({"phoneNumber": recent}));
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer camara-token-123")
    );
    let cases = server.get("/v1/cases", &tenant.key).await;
    assert_eq!(
        cases.expect(200)["cases"][0]["title"],
        "Recent SIM swap detected"
    );

    let old = uz_number(2);
    sim.swapped(&old, Some(server.clock.now() - chrono::Duration::days(30)));
    let quiet = lookup(&server, &tenant, json!({"phone": old})).await;
    assert_eq!(quiet["flags"], json!([]));
    assert_eq!(quiet["sim_swap"]["days_since_change"], 30);

    // An operator outage is reported and the lookup still answers.
    sim.fail_with(Some(503));
    let outage = lookup(&server, &tenant, json!({"phone": recent})).await;
    assert!(outage["lookup_adapter"]["error"].is_string(), "{outage}");
    assert_eq!(outage["flags"], json!([]));
}

#[tokio::test]
async fn a_lookup_adapter_without_its_configuration_is_not_called() {
    let (server, tenant) = TestServer::with_tenant().await;
    let sim = CamaraSim::start().await;
    server
        .settings(&tenant, json!({"sim_swap_check": true}))
        .await;
    let installed = server
        .post(
            "/v1/plugins/catalog/camara-lookup",
            &tenant.key,
            json!({"hosts": [sim.host()]}),
        )
        .await;
    let id = installed.expect(201)["id"].as_str().expect("id").to_owned();
    // Granted and pointed at the operator, but its token is a placeholder.
    server
        .put(
            &format!("/v1/plugins/{id}/config"),
            &tenant.key,
            json!({
                "config": {"base_url": sim.base_url()},
                "secrets": {"access_token": "<your token>"},
                "granted_hosts": [sim.host()],
            }),
        )
        .await
        .expect(200);
    let phone = uz_number(5);
    sim.swapped(&phone, Some(server.clock.now()));
    let answer = lookup(&server, &tenant, json!({"phone": phone})).await;
    let error = answer["lookup_adapter"]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no adapter error: {answer}"));
    assert!(error.contains("secret access_token"), "{error}");
    assert!(sim.seen().is_empty(), "an unconfigured adapter was called");
    assert_eq!(answer["flags"], json!([]));
}

#[tokio::test]
async fn an_adapter_cannot_reach_a_host_the_tenant_did_not_grant() {
    let (server, tenant) = TestServer::with_tenant().await;
    let sim = CamaraSim::start().await;
    server
        .settings(&tenant, json!({"sim_swap_check": true}))
        .await;
    let id = camara(&server, &tenant, &sim, false).await;
    let phone = uz_number(3);
    sim.swapped(&phone, Some(server.clock.now()));
    let answer = lookup(&server, &tenant, json!({"phone": phone})).await;
    let error = answer["lookup_adapter"]["error"]
        .as_str()
        .expect("an error");
    assert!(error.contains(&sim.host()), "{error}");
    assert!(
        sim.seen().is_empty(),
        "the adapter reached a host it was not granted"
    );

    // A grant beyond what the manifest asks for is refused.
    let reply = server
        .put(
            &format!("/v1/plugins/{id}/config"),
            &tenant.key,
            json!({"granted_hosts": ["evil.example.com"]}),
        )
        .await;
    reply.invalid_field("granted_hosts");
}

#[tokio::test]
async fn velocity_declines_a_number_that_asks_for_too_many_codes_across_applicants() {
    let (server, tenant) = TestServer::with_tenant().await;
    let id = install(&server, &tenant, "velocity", Value::Null).await;
    server
        .put(
            &format!("/v1/plugins/{id}/config"),
            &tenant.key,
            json!({"config": {"max_codes": "2", "window_minutes": "60"}}),
        )
        .await
        .expect(200);
    let phone = uz_number(4);
    server.send(&tenant, &phone, "a").await;
    server.send(&tenant, &phone, "b").await;
    let third = server
        .send_otp(&tenant, json!({"phone": phone, "applicant_id": "c"}))
        .await;
    let third = third.expect(200);
    assert_eq!(third["status"], "declined");
    assert_eq!(third["flags"], json!(["velocity_exceeded"]));
    assert_eq!(
        server.outbox(&tenant, &phone).await.len(),
        2,
        "no third code"
    );

    // Another tenant's count is its own.
    let other = server.tenant("other").await;
    let other_id = install(&server, &other, "velocity", Value::Null).await;
    server
        .put(
            &format!("/v1/plugins/{other_id}/config"),
            &other.key,
            json!({"config": {"max_codes": "2"}}),
        )
        .await
        .expect(200);
    server.send(&other, &phone, "a").await;
}

#[tokio::test]
async fn every_trigger_fires_with_the_event_as_it_stands() {
    let (server, tenant) = TestServer::with_tenant().await;
    echo(&server, &tenant, Value::Null).await;
    let phone = uz_number(5);
    let sent = server.send(&tenant, &phone, "app-1").await;
    let id = sent["verification_id"].as_str().expect("id").to_owned();
    let code = server.latest_code(&tenant, &phone).await;
    server
        .verify(&tenant, &phone, "app-1", &wrong_code(&code))
        .await
        .expect(200);
    let message = server.outbox(&tenant, &phone).await[0]["id"]
        .as_str()
        .expect("message id")
        .to_owned();
    server
        .post(
            &format!("/v1/dev/outbox/{message}/delivery"),
            &tenant.key,
            json!({"status": "delivered"}),
        )
        .await
        .expect(200);
    server
        .verify(&tenant, &phone, "app-1", &code)
        .await
        .expect(200);

    let report = server.report(&tenant, &id).await;
    let flags = strings(&report["flags"]);
    let tenant_id = &tenant.id;
    let expected = [
        format!(
            "phone_lookup_complete|NotFinished|sms|0|false|{phone}|mobile|app-1|true|{tenant_id}"
        ),
        format!("before_send_otp|NotFinished|sms|0|false|{phone}|mobile|app-1|true|{tenant_id}"),
        format!("otp_sent|NotFinished|sms|0|false|{phone}|mobile|app-1|true|{tenant_id}"),
        format!("otp_failed|NotFinished|sms|1|false|{phone}|mobile|app-1|true|{tenant_id}"),
        format!(
            "otp_delivery_update|NotFinished|sms|1|false|{phone}|mobile|app-1|true|{tenant_id}"
        ),
        format!("otp_verified|Approved|sms|2|true|{phone}|mobile|app-1|true|{tenant_id}"),
        format!("verification_completed|Approved|sms|2|true|{phone}|mobile|app-1|true|{tenant_id}"),
    ];
    assert_eq!(flags, expected);
    assert_eq!(report["deliveries"][0]["status"], "delivered");
    // The audit trail names the rule at each trigger.
    let events = server
        .get(&format!("/v1/verifications/{id}/events"), &tenant.key)
        .await;
    for event in events.expect(200)["events"].as_array().expect("events") {
        assert_eq!(event["rules"][0]["name"], "echo", "{event}");
        assert!(event["rules"][0]["fuel"].as_u64().expect("fuel") > 0);
    }
}

#[tokio::test]
async fn every_action_takes_effect() {
    let server = TestServer::start().await;
    let mut n = 10;
    let mut case = |action: &str, on: &str| {
        n += 1;
        (json!({"action": action, "on": on}), uz_number(n))
    };

    // decline before the send: no code goes out.
    let tenant = server.tenant("decline").await;
    let (config, phone) = case("decline", "before_send_otp");
    echo(&server, &tenant, config).await;
    let reply = server
        .send_otp(&tenant, json!({"phone": phone, "applicant_id": "a"}))
        .await;
    let declined = reply.expect(200);
    assert_eq!(declined["status"], "declined");
    assert!(server.outbox(&tenant, &phone).await.is_empty());
    let report = server
        .report(&tenant, declined["verification_id"].as_str().expect("id"))
        .await;
    assert_eq!(report["phone"]["status"], "Declined");
    assert_eq!(report["decisions"][0]["reason"], "echo declined");

    // block at lookup: the flow stops, before_send_otp never runs.
    let tenant = server.tenant("block").await;
    let (config, phone) = case("block", "phone_lookup_complete");
    echo(&server, &tenant, config).await;
    let blocked = server
        .send_otp(&tenant, json!({"phone": phone, "applicant_id": "a"}))
        .await;
    let blocked = blocked.expect(200).clone();
    assert_eq!(blocked["status"], "declined");
    let report = server
        .report(&tenant, blocked["verification_id"].as_str().expect("id"))
        .await;
    let triggers: Vec<&str> = report["rules_fired"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["trigger"].as_str().expect("trigger"))
        .collect();
    assert_eq!(
        triggers,
        ["phone_lookup_complete", "verification_completed"]
    );

    // review at verification: a verified code ends In Review.
    let tenant = server.tenant("review").await;
    let (config, phone) = case("review", "otp_verified");
    echo(&server, &tenant, config).await;
    let verified = server.send_and_verify(&tenant, &phone, "a").await;
    assert_eq!(verified["status"], "In Review");

    // approve never overrides a warning's review.
    let tenant = server.tenant("approve").await;
    let (config, _) = case("approve", "otp_verified");
    echo(&server, &tenant, config).await;
    let voip = server.send_and_verify(&tenant, UK_VOIP, "a").await;
    assert_eq!(
        voip["status"], "In Review",
        "VOIP_NUMBER_DETECTED asks for review"
    );

    // set_risk raises the score past the high threshold: declined before sending.
    let tenant = server.tenant("risk").await;
    let (config, phone) = case("set_risk", "phone_lookup_complete");
    echo(&server, &tenant, config).await;
    let risky = server
        .send_otp(&tenant, json!({"phone": phone, "applicant_id": "a"}))
        .await;
    let risky = risky.expect(200).clone();
    assert_eq!(risky["status"], "declined");
    assert!(risks(&risky["warnings"]).contains(&"HIGH_RISK_PHONE_NUMBER".to_owned()));
    let report = server
        .report(&tenant, risky["verification_id"].as_str().expect("id"))
        .await;
    assert!(
        report["risk_assessment"]["risk_score"]
            .as_u64()
            .expect("score")
            >= 60
    );

    // send_otp switches the channel; route, request_info and create_case are recorded.
    let tenant = server.tenant("voice").await;
    let (config, phone) = case("send_otp_voice", "before_send_otp");
    echo(&server, &tenant, config).await;
    let voice = server.send(&tenant, &phone, "a").await;
    assert_eq!(voice["channel"], "voice");
    assert_eq!(server.outbox(&tenant, &phone).await[0]["channel"], "voice");
    for (action, field, expected) in [
        ("route", "route", json!("backup-sms")),
        ("request_info", "info_requested", json!(["id document"])),
    ] {
        let tenant = server.tenant(action).await;
        let (config, phone) = case(action, "before_send_otp");
        echo(&server, &tenant, config).await;
        let sent = server.send(&tenant, &phone, "a").await;
        let report = server
            .report(&tenant, sent["verification_id"].as_str().expect("id"))
            .await;
        assert_eq!(report[field], expected, "{action}: {report}");
    }
    let tenant = server.tenant("case").await;
    let (config, phone) = case("create_case", "otp_sent");
    echo(&server, &tenant, config).await;
    let sent = server.send(&tenant, &phone, "a").await;
    let id = sent["verification_id"].as_str().expect("id");
    let report = server.report(&tenant, id).await;
    assert_eq!(report["cases"][0]["title"], "echo case");
    let cases = server.get("/v1/cases", &tenant.key).await;
    let listed = &cases.expect(200)["cases"][0];
    assert_eq!(listed["verification_id"], id);
    assert_eq!(listed["status"], "open");

    // A case priority outside the vocabulary is malformed output: recorded as the
    // rule's failure, and no case is opened.
    let tenant = server.tenant("bad-priority").await;
    let (mut config, phone) = case("create_case", "otp_sent");
    config["priority"] = json!("urgent");
    echo(&server, &tenant, config).await;
    let sent = server.send(&tenant, &phone, "a").await;
    let report = server
        .report(&tenant, sent["verification_id"].as_str().expect("id"))
        .await;
    assert_eq!(report["cases"], json!([]));
    let failed = report["rules_fired"]
        .as_array()
        .expect("runs")
        .iter()
        .find(|run| run["trigger"] == "otp_sent")
        .expect("the otp_sent run");
    assert_eq!(failed["error"]["kind"], "malformed", "{failed}");
    assert!(
        failed["error"]["message"]
            .as_str()
            .expect("message")
            .contains("\"urgent\""),
        "{failed}"
    );
    let cases = server.get("/v1/cases", &tenant.key).await;
    assert_eq!(cases.expect(200)["cases"], json!([]));
}

#[tokio::test]
async fn hostile_plugins_are_contained_while_another_tenant_carries_on() {
    let server = TestServer::start().await;
    let attacker = server.tenant("attacker").await;
    let bystander = server.tenant("bystander").await;
    for (artifact, name) in [
        ("hostile_spin", "spin"),
        ("hostile_memory_bomb", "memory-bomb"),
        ("hostile_deep_recursion", "deep-recursion"),
        ("hostile_panic", "panic"),
        ("hostile_huge_output", "huge-output"),
    ] {
        upload(
            &server,
            &attacker,
            artifact,
            &format!("name={name}&kind=rule&version=1&triggers=before_send_otp"),
        )
        .await
        .expect(201);
    }
    let phone = uz_number(30);
    let (attacked, bystanding) = tokio::join!(
        server.send_otp(&attacker, json!({"phone": phone, "applicant_id": "a"})),
        async {
            let mut approved = 0;
            for n in 0..5 {
                let verified = server
                    .send_and_verify(&bystander, &uz_number(40 + n), "b")
                    .await;
                if verified["status"] == "Approved" {
                    approved += 1;
                }
            }
            approved
        }
    );
    assert_eq!(
        bystanding, 5,
        "the other tenant's verifications all went through"
    );
    // Fail open by default: every failure recorded, the code still sent.
    let attacked = attacked.expect(200).clone();
    assert_eq!(attacked["status"], "pending");
    let report = server
        .report(&attacker, attacked["verification_id"].as_str().expect("id"))
        .await;
    let mut kinds: Vec<String> = report["rules_fired"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|run| run["error"]["kind"].as_str().expect("an error").to_owned())
        .collect();
    kinds.sort();
    assert_eq!(kinds.len(), 5, "{report}");
    for kind in &kinds {
        assert!(
            [
                "out_of_fuel",
                "timeout",
                "trap",
                "stack_overflow",
                "output_too_large",
                "too_many_actions"
            ]
            .contains(&kind.as_str()),
            "{kinds:?}"
        );
    }
    assert!(kinds.contains(&"out_of_fuel".to_owned()) || kinds.contains(&"timeout".to_owned()));

    // Fail closed: the same failures decline.
    server
        .settings(&attacker, json!({"on_plugin_failure": "decline"}))
        .await;
    let closed = server
        .send_otp(
            &attacker,
            json!({"phone": uz_number(31), "applicant_id": "a"}),
        )
        .await;
    let closed = closed.expect(200);
    assert_eq!(closed["status"], "declined");
    assert!(server.outbox(&attacker, &uz_number(31)).await.is_empty());
}

#[tokio::test]
async fn a_tenants_rules_never_see_another_tenants_events() {
    let server = TestServer::start().await;
    let a = server.tenant("a").await;
    let b = server.tenant("b").await;
    echo(&server, &a, Value::Null).await;
    let phone = uz_number(50);
    let sent_b = server.send(&b, &phone, "x").await;
    let report_b = server
        .report(&b, sent_b["verification_id"].as_str().expect("id"))
        .await;
    assert_eq!(report_b["rules_fired"], json!([]));
    assert_eq!(report_b["flags"], json!([]));
    let sent_a = server.send(&a, &phone, "x").await;
    let report_a = server
        .report(&a, sent_a["verification_id"].as_str().expect("id"))
        .await;
    for flag in strings(&report_a["flags"]) {
        assert!(flag.ends_with(&format!("|{}", a.id)), "{flag}");
    }
}

#[tokio::test]
async fn activating_a_version_swaps_what_runs_and_deactivating_stops_it() {
    let (server, tenant) = TestServer::with_tenant().await;
    let first = upload(
        &server,
        &tenant,
        "guest_echo",
        "name=swap&kind=rule&version=1.0.0&triggers=phone_lookup_complete",
    )
    .await;
    let id = first.expect(201)["id"].as_str().expect("id").to_owned();
    let second = upload(
        &server,
        &tenant,
        "otp_for_voip",
        "name=swap&kind=rule&version=2.0.0&triggers=phone_lookup_complete",
    )
    .await;
    assert_eq!(
        second.expect(201)["active_version"],
        "1.0.0",
        "not active until asked"
    );
    let v1 = lookup(&server, &tenant, json!({"phone": UK_VOIP})).await;
    assert_eq!(strings(&v1["flags"]).len(), 1, "the echo rule ran: {v1}");

    let activated = server
        .post(
            &format!("/v1/plugins/{id}/activate"),
            &tenant.key,
            json!({"version": "2.0.0"}),
        )
        .await;
    assert_eq!(activated.expect(200)["active_version"], "2.0.0");
    let v2 = lookup(&server, &tenant, json!({"phone": UK_VOIP})).await;
    assert_eq!(v2["flags"], json!([]));
    assert_eq!(v2["otp_required"], "sms");

    server
        .post(
            &format!("/v1/plugins/{id}/activate"),
            &tenant.key,
            json!({"version": "9"}),
        )
        .await
        .invalid_field("version");
    server
        .post(
            &format!("/v1/plugins/{id}/deactivate"),
            &tenant.key,
            json!({}),
        )
        .await
        .expect(200);
    let off = lookup(&server, &tenant, json!({"phone": UK_VOIP})).await;
    assert!(off.get("otp_required").is_none(), "{off}");

    let deleted = server
        .delete(&format!("/v1/plugins/{id}"), &tenant.key)
        .await;
    assert_eq!(deleted.status, 204);
    server
        .get(&format!("/v1/plugins/{id}"), &tenant.key)
        .await
        .error(404, "not_found");
}

#[tokio::test]
async fn bindings_order_rules_and_stay_within_the_manifest() {
    let (server, tenant) = TestServer::with_tenant().await;
    let echo_id = echo(
        &server,
        &tenant,
        json!({"action": "block", "on": "phone_lookup_complete"}),
    )
    .await;
    let voip = upload(
        &server,
        &tenant,
        "otp_for_voip",
        "name=voip&kind=rule&version=1&triggers=phone_lookup_complete",
    )
    .await;
    let voip_id = voip.expect(201)["id"].as_str().expect("id").to_owned();
    // The blocking echo runs first (order 10): the chain stops before the VoIP rule.
    server
        .put(
            &format!("/v1/plugins/{echo_id}/bindings"),
            &tenant.key,
            json!({"triggers": ["phone_lookup_complete"], "order": 10}),
        )
        .await
        .expect(200);
    let blocked = lookup(&server, &tenant, json!({"phone": UK_VOIP})).await;
    assert!(blocked.get("otp_required").is_none(), "{blocked}");
    // The VoIP rule first (order 1): both run.
    server
        .put(
            &format!("/v1/plugins/{voip_id}/bindings"),
            &tenant.key,
            json!({"triggers": ["phone_lookup_complete"], "order": 1}),
        )
        .await
        .expect(200);
    let both = lookup(&server, &tenant, json!({"phone": UK_VOIP})).await;
    assert_eq!(both["otp_required"], "sms", "{both}");
    // A trigger the manifest did not ask for is refused.
    server
        .put(
            &format!("/v1/plugins/{voip_id}/bindings"),
            &tenant.key,
            json!({"triggers": ["otp_sent"]}),
        )
        .await
        .invalid_field("triggers");
}

#[tokio::test]
async fn a_dry_run_returns_actions_and_usage_without_applying_anything() {
    let (server, tenant) = TestServer::with_tenant().await;
    let id = echo(&server, &tenant, json!({"action": "decline"})).await;
    let reply = server
        .post(
            &format!("/v1/plugins/{id}/dry-run"),
            &tenant.key,
            json!({"event": {
                "trigger": "before_send_otp",
                "phone": {"e164": "+14155552671", "line_type": "voip"},
                "applicant_id": "dry"
            }}),
        )
        .await;
    let run = reply.expect(200);
    assert_eq!(
        run["actions"][1],
        json!({"type": "decline", "reason": "echo declined"})
    );
    assert_eq!(run["error"], Value::Null);
    assert!(run["fuel"].as_u64().expect("fuel") > 0);
    assert!(run["peak_memory_bytes"].as_u64().expect("memory") > 0);
    let flag = run["actions"][0]["flag"].as_str().expect("flag");
    assert!(
        flag.starts_with("before_send_otp|NotFinished|None|0|false|+14155552671|voip|dry|false|"),
        "{flag}"
    );
    assert!(server.outbox(&tenant, "+14155552671").await.is_empty());

    let bad = server
        .post(
            &format!("/v1/plugins/{id}/dry-run"),
            &tenant.key,
            json!({"event": {"trigger": "sometime", "phone": {"e164": "+1"}}}),
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.text);
}

#[tokio::test]
async fn plugins_reload_after_a_restart_without_compiling_again() {
    let (server, tenant) = TestServer::with_tenant().await;
    upload(
        &server,
        &tenant,
        "otp_for_voip",
        "name=voip&kind=rule&version=1&triggers=phone_lookup_complete",
    )
    .await
    .expect(201);
    let server = server.restart().await;
    // The rule's code is loaded on its first call, from the stored artifact.
    let voip = lookup(&server, &tenant, json!({"phone": UK_VOIP})).await;
    assert_eq!(voip["otp_required"], "sms");
    let stats = server.get("/v1/plugin-runtime", OPERATOR_KEY).await;
    let stats = stats.expect(200);
    assert_eq!(stats["stats"]["compiled"], 0, "{stats}");
    assert_eq!(stats["stats"]["loaded_from_cache"], 1, "{stats}");
    assert!(
        stats["stats"]["code"]["resident"].as_u64() >= Some(1),
        "{stats}"
    );
    assert!(
        stats["stats"]["code"]["resident_bytes"].as_u64() > Some(0),
        "{stats}"
    );
}

/// Uploads the messaging adapter `artifact` as `name`, asking for `sim`'s host, and
/// configures it with `config` and `secrets`, the host granted; returns its id.
async fn messaging_adapter(
    server: &TestServer,
    tenant: &Tenant,
    sim: &SmsSim,
    (artifact, name): (&str, &str),
    config: Value,
    secrets: Value,
) -> String {
    let reply = upload(
        server,
        tenant,
        artifact,
        &format!(
            "name={name}&kind=messaging_adapter&version=1&hosts={}",
            sim.host()
        ),
    )
    .await;
    let id = reply.expect(201)["id"].as_str().expect("id").to_owned();
    server
        .put(
            &format!("/v1/plugins/{id}/config"),
            &tenant.key,
            json!({"config": config, "secrets": secrets, "granted_hosts": [sim.host()]}),
        )
        .await
        .expect(200);
    id
}

/// Sets up an `http-sms` adapter named `name` of `shape` against `sim`, granted and with
/// a callback token; returns its id.
async fn sms_adapter(
    server: &TestServer,
    tenant: &Tenant,
    sim: &SmsSim,
    name: &str,
    shape: &str,
) -> String {
    let (config, secrets) = match shape {
        "twilio" => (
            json!({"shape": "twilio", "base_url": sim.base_url(), "sender": "+15005550006", "account_sid": "AC42"}),
            json!({"auth_token": "twilio-secret", "callback_token": "cb-token"}),
        ),
        _ => (
            json!({"shape": "vonage", "base_url": sim.base_url(), "sender": "Dialgate", "api_key": "key42"}),
            json!({"api_secret": "vonage-secret", "callback_token": "cb-token"}),
        ),
    };
    messaging_adapter(server, tenant, sim, ("http_sms", name), config, secrets).await
}

#[tokio::test]
async fn codes_go_out_through_the_http_sms_adapter_and_receipts_come_back() {
    let (server, tenant) = TestServer::with_tenant().await;
    let sim = SmsSim::start().await;
    let id = sms_adapter(&server, &tenant, &sim, "twilio-sms", "twilio").await;
    echo(&server, &tenant, Value::Null).await;
    let phone = uz_number(60);
    let sent = server.send(&tenant, &phone, "a").await;
    let accepted = sim.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].to, phone);
    assert_eq!(accepted[0].from, "+15005550006");
    assert!(
        server.outbox(&tenant, &phone).await.is_empty(),
        "not the dev outbox"
    );
    let code = accepted[0].code();
    assert_eq!(code.len(), 6, "{}", accepted[0].text);
    let expected_auth = format!("Basic {}", base64_basic("AC42", "twilio-secret"));
    assert_eq!(
        accepted[0].authorization.as_deref(),
        Some(expected_auth.as_str())
    );

    // The provider's status callback, authenticated by the token, reaches the report.
    let callback = format!("/v1/callbacks/{}/{id}?token=cb-token", tenant.id);
    let body = format!("MessageSid={}&MessageStatus=delivered", accepted[0].id);
    let reply = server
        .raw(
            Method::POST,
            &callback,
            None,
            Some((
                "application/x-www-form-urlencoded",
                body.clone().into_bytes(),
            )),
            &[],
        )
        .await;
    assert_eq!(reply.expect(200)["recorded"], 1);
    let wrong = format!("/v1/callbacks/{}/{id}?token=guess", tenant.id);
    server
        .raw(
            Method::POST,
            &wrong,
            None,
            Some(("application/x-www-form-urlencoded", body.into_bytes())),
            &[],
        )
        .await
        .error(401, "unauthorized");
    let verification = sent["verification_id"].as_str().expect("id");
    let report = server.report(&tenant, verification).await;
    assert_eq!(report["deliveries"][0]["status"], "delivered");
    assert_eq!(
        report["deliveries"][0]["message_id"],
        accepted[0].id.as_str()
    );
    assert!(strings(&report["flags"])
        .iter()
        .any(|f| f.starts_with("otp_delivery_update|")));

    let verified = server.verify(&tenant, &phone, "a", &code).await;
    assert_eq!(verified.expect(200)["status"], "Approved");

    // Once the tenant no longer keeps the verification, the purge also drops the
    // adapter's index entry of its message: a late receipt finds nothing to record.
    server
        .settings(&tenant, json!({"retention": {"verifications_days": 1, "messages_days": 1, "events_days": 1, "webhook_deliveries_days": 1}}))
        .await;
    server.advance(chrono::Duration::hours(49));
    let purged = server.engine().purge_expired().expect("a purge");
    assert_eq!(
        (purged.verifications, purged.message_index_entries),
        (1, 1),
        "{purged:?}"
    );
    let body = format!("MessageSid={}&MessageStatus=delivered", accepted[0].id);
    let reply = server
        .raw(
            Method::POST,
            &callback,
            None,
            Some(("application/x-www-form-urlencoded", body.into_bytes())),
            &[],
        )
        .await;
    assert_eq!(reply.expect(200)["recorded"], 0);
}

/// A messaging adapter built against API 0.1.1 exports `send`, not 0.2.0's
/// `send-message`: the host still calls it, and codes still reach the provider.
#[tokio::test]
async fn a_messaging_adapter_built_against_api_0_1_still_delivers_codes() {
    let (server, tenant) = TestServer::with_tenant().await;
    let sim = SmsSim::start().await;
    messaging_adapter(
        &server,
        &tenant,
        &sim,
        ("guest_contract_v01_messaging", "old-gateway"),
        json!({"base_url": sim.base_url(), "sender": "Dialgate"}),
        json!({}),
    )
    .await;
    let phone = uz_number(61);
    let sent = server.send(&tenant, &phone, "a").await;
    let accepted = sim.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].to, phone);
    assert_eq!(accepted[0].from, "Dialgate");
    let code = accepted[0].code();
    assert!(sent["verification_id"].is_string(), "{sent}");
    let verified = server.verify(&tenant, &phone, "a", &code).await;
    assert_eq!(verified.expect(200)["status"], "Approved");
}

#[tokio::test]
async fn an_outage_fails_over_to_the_next_adapter_and_a_total_outage_is_reported() {
    let (server, tenant) = TestServer::with_tenant().await;
    let twilio = SmsSim::start().await;
    let vonage = SmsSim::start().await;
    sms_adapter(&server, &tenant, &twilio, "a-twilio", "twilio").await;
    sms_adapter(&server, &tenant, &vonage, "b-vonage", "vonage").await;
    twilio.fail_with(Some(503));
    let phone = uz_number(61);
    server.send(&tenant, &phone, "a").await;
    assert_eq!(twilio.refused(), 1);
    let delivered = vonage.accepted();
    assert_eq!(delivered.len(), 1, "the second adapter delivered the code");
    assert_eq!(delivered[0].to, phone.trim_start_matches('+'));

    vonage.fail_with(Some(500));
    let reply = server
        .send_otp(
            &tenant,
            json!({"phone": uz_number(62), "applicant_id": "a"}),
        )
        .await;
    let error = reply.error(502, "provider_failed");
    let message = error["message"].as_str().expect("message");
    assert!(
        message.contains("a-twilio") && message.contains("b-vonage"),
        "{message}"
    );
    assert_eq!(vonage.accepted().len(), 1, "nothing was delivered twice");
}

/// `user:password` in base64, as HTTP Basic authentication sends it.
fn base64_basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// Runs `dialgate plugin run` with `args`; its JSON report, or its error text.
fn plugin_run(args: &[&std::ffi::OsStr]) -> Result<Value, String> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dialgate"))
        .args(["plugin", "run"])
        .args(args)
        .output()
        .expect("run dialgate");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&output.stdout).expect("JSON on stdout"))
}

#[tokio::test]
async fn plugin_run_tries_an_adapter_against_a_simulator_scripted_answers_and_a_callback() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wasm = dir.path().join("http_sms.wasm");
    std::fs::write(&wasm, guest_component("http_sms")).expect("write the component");
    let sim = SmsSim::start().await;
    let base_url = format!("base_url={}", sim.base_url());
    let config = |extra: &[&'static str]| -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![wasm.clone().into()];
        for entry in [
            "--config",
            "shape=twilio",
            "--config",
            "account_sid=AC1",
            "--config",
            "sender=+15005550006",
            "--secret",
            "auth_token=s3cret-token",
            "--config",
        ] {
            args.push(entry.into());
        }
        args.push(base_url.clone().into());
        args.extend(extra.iter().map(std::ffi::OsString::from));
        args
    };

    // `send` against a loopback simulator: the message arrives, the dispatch and the
    // exchange are printed, and the secret is not.
    let args = config(&["--send-to", "+14155552671"]);
    let report = tokio::task::spawn_blocking(move || {
        plugin_run(&args.iter().map(|arg| arg.as_os_str()).collect::<Vec<_>>())
    })
    .await
    .expect("the run")
    .expect("a report");
    assert_eq!(report["world"], "messaging-adapter", "{report}");
    assert_eq!(report["call"], "send-message", "{report}");
    let accepted = sim.accepted();
    assert_eq!(accepted.len(), 1, "{report}");
    assert_eq!(
        report["returned"]["dispatch"]["provider_message_id"], accepted[0].id,
        "{report}"
    );
    assert_eq!(report["sent"][0]["response"]["status"], 201, "{report}");
    assert!(report["sent"][0]["url"]
        .as_str()
        .is_some_and(|url| url.starts_with(&sim.base_url())));
    assert!(!report.to_string().contains("s3cret-token"), "{report}");
    assert!(report["fuel"].as_u64().is_some_and(|fuel| fuel > 0));
    assert!(report["micros"].as_u64().is_some());
    assert!(report["peak_memory_bytes"]
        .as_u64()
        .is_some_and(|bytes| bytes > 0));

    // Scripted answers instead of the network: a 4xx is the provider's refusal.
    let answers = dir.path().join("answers.json");
    std::fs::write(
        &answers,
        json!([{"status": 400, "body": "{\"code\": 21211, \"message\": \"invalid To\"}"}])
            .to_string(),
    )
    .expect("write the answers");
    let mut args = config(&["--send-to", "+14155552671", "--answers"]);
    args.push(answers.clone().into());
    let report = tokio::task::spawn_blocking(move || {
        plugin_run(&args.iter().map(|arg| arg.as_os_str()).collect::<Vec<_>>())
    })
    .await
    .expect("the run")
    .expect("a report");
    assert_eq!(
        report["returned"]["refusal"]["kind"], "rejected",
        "{report}"
    );
    assert_eq!(report["sent"][0]["response"]["status"], 400, "{report}");
    assert_eq!(sim.accepted().len(), 1, "nothing more was sent");

    // `parse-callback` on a recorded receipt.
    let callback = dir.path().join("callback.json");
    std::fs::write(
        &callback,
        json!({"url": "/v1/callbacks/prv_local?token=cbt_local", "headers": {"Content-Type": "application/x-www-form-urlencoded"}, "body": "MessageSid=SM1&MessageStatus=delivered"}).to_string(),
    )
    .expect("write the callback");
    let mut args = config(&["--callback"]);
    args.push(callback.into());
    let report = tokio::task::spawn_blocking(move || {
        plugin_run(&args.iter().map(|arg| arg.as_os_str()).collect::<Vec<_>>())
    })
    .await
    .expect("the run")
    .expect("a report");
    assert_eq!(report["call"], "parse-callback", "{report}");
    assert_eq!(
        report["returned"]["updates"][0]["provider_message_id"], "SM1",
        "{report}"
    );
    assert_eq!(
        report["returned"]["updates"][0]["status"], "delivered",
        "{report}"
    );

    // A lookup adapter's `lookup`, answered by a script.
    let camara = dir.path().join("camara.wasm");
    std::fs::write(&camara, guest_component("camara_lookup")).expect("write the component");
    let swap = dir.path().join("swap.json");
    std::fs::write(
        &swap,
        json!([{"status": 200, "headers": {"Content-Type": "application/json"}, "body": "{\"latestSimChange\": \"2026-11-01T10:00:00Z\"}"}]).to_string(),
    )
    .expect("write the answers");
    let report = tokio::task::spawn_blocking(move || {
        plugin_run(&[
            camara.as_os_str(),
            "--lookup".as_ref(),
            "+14155552671".as_ref(),
            "--config".as_ref(),
            "base_url=https://operator.example/camara".as_ref(),
            "--secret".as_ref(),
            "access_token=op-token-123".as_ref(),
            "--answers".as_ref(),
            swap.as_os_str(),
        ])
    })
    .await
    .expect("the run")
    .expect("a report");
    assert_eq!(report["world"], "lookup-adapter", "{report}");
    assert_eq!(report["call"], "lookup", "{report}");
    assert!(
        report["returned"]["intelligence"]["last_sim_change_millis"]
            .as_i64()
            .is_some(),
        "{report}"
    );
    assert!(report["sent"][0]["url"]
        .as_str()
        .is_some_and(|url| url.ends_with("/sim-swap/v2/retrieve-date")));
    assert!(!report.to_string().contains("op-token-123"), "{report}");

    // An adapter without a call to make says what to give.
    let args = config(&[]);
    let error = tokio::task::spawn_blocking(move || {
        plugin_run(&args.iter().map(|arg| arg.as_os_str()).collect::<Vec<_>>())
    })
    .await
    .expect("the run")
    .expect_err("no call named");
    assert!(error.contains("--send-to"), "{error}");
}
#[test]
fn plugin_run_prints_actions_fuel_memory_and_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wasm = dir.path().join("echo.wasm");
    std::fs::write(&wasm, guest_component("guest_echo")).expect("write the component");
    let event = dir.path().join("event.json");
    std::fs::write(
        &event,
        json!({"trigger": "otp_verified", "phone": {"e164": "+14155552671", "line_type": "voip"}})
            .to_string(),
    )
    .expect("write the event");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dialgate"))
        .args(["plugin", "run"])
        .arg(&wasm)
        .arg("--event")
        .arg(&event)
        .args(["--config", "action=review"])
        .output()
        .expect("run dialgate");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(report["world"], "rule");
    assert_eq!(report["actions"][1], json!({"type": "review"}));
    assert!(report["fuel"].as_u64().expect("fuel") > 0);
    assert!(report["peak_memory_bytes"].as_u64().expect("memory") > 0);
    assert!(report["micros"].as_u64().is_some());
    assert_eq!(report["limits"]["time_ms"], 10);

    // A bad event is an error naming the field, not a panic.
    std::fs::write(
        &event,
        r#"{"trigger": "otp_verified", "phone": {"e164": 5}}"#,
    )
    .expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dialgate"))
        .args(["plugin", "run"])
        .arg(&wasm)
        .arg("--event")
        .arg(&event)
        .output()
        .expect("run dialgate");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("phone.e164"), "{stderr}");
}
