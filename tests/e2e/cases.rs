//! Cases and the review queue end to end: cases opened by real rules (the first-party
//! `flag-sim-swap` fed by the CAMARA adapter against a loopback operator, and the
//! in-tree `echo` rule), listed with every filter and refused bad filters, read,
//! assigned, progressed and noted with their history; review decisions on
//! verifications In Review landing on the report, the audit trail and the cases; and
//! tenant isolation.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{json, Value};

use dialgate::clock::Clock as _;

use crate::sims::CamaraSim;
use crate::support::*;

/// Uploads and activates the echo rule bound to every trigger; it opens a `review`
/// case of priority `low` (title `echo case`) when a code is verified.
async fn echo_opening_cases(server: &TestServer, tenant: &Tenant) {
    upload_echo(
        server,
        tenant,
        ALL_TRIGGERS,
        json!({"action": "create_case", "on": "otp_verified"}),
    )
    .await;
}

/// Installs the CAMARA adapter (pointed at `sim`, granted) and the `flag-sim-swap` rule
/// from the catalogue, with SIM-swap checks on.
async fn sim_swap_rules(server: &TestServer, tenant: &Tenant, sim: &CamaraSim) {
    server
        .settings(
            tenant,
            json!({"sim_swap_check": true, "sim_swap_threshold_days": 7}),
        )
        .await;
    install_camara(server, tenant, sim, true).await;
    server
        .post(
            "/v1/plugins/catalog/flag-sim-swap",
            &tenant.key,
            Value::Null,
        )
        .await
        .expect(201);
}

/// Sends a code to a VoIP number for `applicant` and verifies it: the VoIP warning puts
/// the verification In Review. Returns its id.
async fn in_review(server: &TestServer, tenant: &Tenant, applicant: &str) -> String {
    let verified = server.send_and_verify(tenant, UK_VOIP, applicant).await;
    assert_eq!(verified["status"], "In Review", "{verified}");
    verified["verification_id"]
        .as_str()
        .expect("verification id")
        .to_owned()
}

/// `GET /v1/cases` with `query`, expecting 200; the cases' ids in order.
async fn listed(server: &TestServer, tenant: &Tenant, query: &str) -> Vec<String> {
    let reply = server.get(&format!("/v1/cases?{query}"), &tenant.key).await;
    reply.expect(200)["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("cases is not an array: {}", reply.text))
        .iter()
        .map(|case| case["id"].as_str().expect("case id").to_owned())
        .collect()
}

/// The ids of `verification`'s cases, from its report.
async fn case_ids(server: &TestServer, tenant: &Tenant, verification: &str) -> Vec<String> {
    server.report(tenant, verification).await["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|case| case["case_id"].as_str().expect("case id").to_owned())
        .collect()
}

/// A time as a query value (UTC, `Z`, full precision).
fn at(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

async fn patch(server: &TestServer, tenant: &Tenant, id: &str, body: Value) -> Reply {
    server
        .call(
            Method::PATCH,
            &format!("/v1/cases/{id}"),
            Some(&tenant.key),
            Some(&body),
        )
        .await
}

async fn review(server: &TestServer, tenant: &Tenant, id: &str, body: Value) -> Reply {
    server
        .post(&format!("/v1/verifications/{id}/review"), &tenant.key, body)
        .await
}

const CASE_FIELDS: &[&str] = &[
    "id",
    "tenant_id",
    "verification_id",
    "phone",
    "applicant_id",
    "case_type",
    "priority",
    "title",
    "status",
    "flags",
    "opened_by",
    "created_at",
    "updated_at",
    "resolved_at",
    "assignee",
    "notes",
    "history",
];

#[tokio::test]
async fn cases_opened_by_rules_are_listed_newest_first_and_filtered() {
    let (server, tenant) = TestServer::with_tenant().await;
    let sim = CamaraSim::start().await;
    sim_swap_rules(&server, &tenant, &sim).await;
    echo_opening_cases(&server, &tenant).await;
    sim.swapped(UK_VOIP, None);

    // t0: a recent SIM swap opens a high-priority fraud case as the code is sent.
    let t0 = server.clock.now();
    let swapped = uz_number(60);
    sim.swapped(&swapped, Some(t0 - Duration::days(2)));
    let sent = server.send(&tenant, &swapped, "a").await;
    let v1 = sent["verification_id"].as_str().expect("id").to_owned();
    // t1 and t2: verified VoIP numbers go to review, and echo opens a low review case.
    server.advance(Duration::hours(1));
    let t1 = server.clock.now();
    let v2 = in_review(&server, &tenant, "b").await;
    server.advance(Duration::hours(1));
    let t2 = server.clock.now();
    let v3 = in_review(&server, &tenant, "c").await;
    let c1 = case_ids(&server, &tenant, &v1).await;
    let c2 = case_ids(&server, &tenant, &v2).await;
    let c3 = case_ids(&server, &tenant, &v3).await;
    assert_eq!((c1.len(), c2.len(), c3.len()), (1, 1, 1));
    let (c1, c2, c3) = (c1[0].clone(), c2[0].clone(), c3[0].clone());

    // The whole list, newest first, each case complete.
    let all = server.get("/v1/cases", &tenant.key).await;
    let cases = all.expect(200)["cases"].as_array().expect("cases").clone();
    let ids: Vec<&str> = cases
        .iter()
        .map(|c| c["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [c3.as_str(), c2.as_str(), c1.as_str()]);
    let fraud = &cases[2];
    assert_eq!(keys(fraud), sorted(CASE_FIELDS), "{fraud}");
    assert_eq!(fraud["case_type"], "fraud");
    assert_eq!(fraud["priority"], "high");
    assert_eq!(fraud["title"], "Recent SIM swap detected");
    assert_eq!(fraud["verification_id"], v1.as_str());
    assert_eq!(fraud["phone"], swapped.as_str());
    assert_eq!(fraud["applicant_id"], "a");
    // The verification's flags when the case opened (echo's flag came first).
    let flags = fraud["flags"].as_array().expect("flags");
    assert_eq!(flags.last(), Some(&json!("recent_sim_swap")), "{fraud}");
    assert_eq!(fraud["opened_by"], "flag-sim-swap");
    assert_eq!(fraud["status"], "open");
    assert_eq!(fraud["assignee"], Value::Null);
    assert_eq!(fraud["notes"], json!([]));
    assert_eq!(fraud["history"], json!([]));
    assert_eq!(fraud["resolved_at"], Value::Null);
    assert_eq!(timestamp(&fraud["created_at"]), t0);
    assert_eq!(timestamp(&fraud["updated_at"]), t0);
    let review_case = &cases[1];
    assert_eq!(review_case["case_type"], "review");
    assert_eq!(review_case["priority"], "low");
    assert_eq!(review_case["opened_by"], "echo");
    assert_eq!(review_case["applicant_id"], "b");
    assert_eq!(review_case["phone"], UK_VOIP);

    // Each filter.
    assert_eq!(
        listed(&server, &tenant, "case_type=fraud").await,
        [c1.as_str()]
    );
    assert_eq!(
        listed(&server, &tenant, "case_type=review").await,
        [c3.as_str(), c2.as_str()]
    );
    assert!(listed(&server, &tenant, "case_type=other").await.is_empty());
    assert_eq!(
        listed(&server, &tenant, "priority=high").await,
        [c1.as_str()]
    );
    assert_eq!(
        listed(&server, &tenant, "priority=low").await,
        [c3.as_str(), c2.as_str()]
    );
    assert!(listed(&server, &tenant, "priority=critical")
        .await
        .is_empty());
    assert_eq!(
        listed(&server, &tenant, &format!("verification_id={v2}")).await,
        [c2.as_str()]
    );
    assert!(listed(&server, &tenant, "verification_id=nope")
        .await
        .is_empty());
    // The bounds are exclusive.
    assert_eq!(
        listed(&server, &tenant, &format!("created_after={}", at(t0))).await,
        [c3.as_str(), c2.as_str()]
    );
    assert_eq!(
        listed(&server, &tenant, &format!("created_before={}", at(t1))).await,
        [c1.as_str()]
    );
    assert_eq!(
        listed(
            &server,
            &tenant,
            &format!("created_after={}&created_before={}", at(t0), at(t2))
        )
        .await,
        [c2.as_str()]
    );
    // An offset is honoured: t1 written an hour ahead of UTC.
    let t1_plus_one = (t1 + Duration::hours(1))
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S%.f+01:00")
        .to_string();
    assert_eq!(
        listed(
            &server,
            &tenant,
            &format!("created_after={}", encode(&t1_plus_one))
        )
        .await,
        [c3.as_str()]
    );
    assert_eq!(listed(&server, &tenant, "limit=1").await, [c3.as_str()]);
    assert_eq!(
        listed(&server, &tenant, "limit=2").await,
        [c3.as_str(), c2.as_str()]
    );
    assert_eq!(listed(&server, &tenant, "limit=500").await.len(), 3);
    assert_eq!(listed(&server, &tenant, "status=open").await.len(), 3);
    assert!(listed(&server, &tenant, "status=in_progress")
        .await
        .is_empty());

    // status and assignee follow the changes made to the cases.
    patch(
        &server,
        &tenant,
        &c2,
        json!({"status": "in_progress", "assignee": "alice"}),
    )
    .await
    .expect(200);
    patch(&server, &tenant, &c1, json!({"status": "resolved"}))
        .await
        .expect(200);
    assert_eq!(listed(&server, &tenant, "status=open").await, [c3.as_str()]);
    assert_eq!(
        listed(&server, &tenant, "status=in_progress").await,
        [c2.as_str()]
    );
    assert_eq!(
        listed(&server, &tenant, "status=resolved").await,
        [c1.as_str()]
    );
    assert_eq!(
        listed(&server, &tenant, "assignee=alice").await,
        [c2.as_str()]
    );
    assert!(listed(&server, &tenant, "assignee=bob").await.is_empty());
    assert_eq!(
        listed(
            &server,
            &tenant,
            "assignee=alice&status=in_progress&priority=low"
        )
        .await,
        [c2.as_str()]
    );
    assert!(listed(&server, &tenant, "assignee=alice&status=open")
        .await
        .is_empty());

    // Bad values are refused, naming the parameter.
    for (query, field) in [
        ("status=closed", "status"),
        ("status=", "status"),
        ("priority=urgent", "priority"),
        ("priority=HIGH", "priority"),
        ("created_after=yesterday", "created_after"),
        ("created_after=2025-01-31", "created_after"),
        ("created_before=2025-13-01T00:00:00Z", "created_before"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("limit=-1", "limit"),
        ("assignee=", "assignee"),
        ("case_type=", "case_type"),
        ("verification_id=", "verification_id"),
    ] {
        let reply = server.get(&format!("/v1/cases?{query}"), &tenant.key).await;
        let error = reply.invalid_field(field);
        assert!(
            error["message"]
                .as_str()
                .expect("message")
                .starts_with(field),
            "{query}: {error}"
        );
    }
    let unknown = server.get("/v1/cases?colour=red", &tenant.key).await;
    let error = unknown.error(422, "invalid_field");
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("colour"),
        "{error}"
    );

    // The list needs a tenant key.
    server
        .call(Method::GET, "/v1/cases", None, None)
        .await
        .error(401, "unauthorized");
}

#[tokio::test]
async fn a_case_is_read_assigned_progressed_and_noted_with_its_history() {
    let (server, tenant) = TestServer::with_tenant().await;
    echo_opening_cases(&server, &tenant).await;
    let opened = server.clock.now();
    let verification = in_review(&server, &tenant, "a").await;
    let id = case_ids(&server, &tenant, &verification).await[0].clone();

    let case = server.get(&format!("/v1/cases/{id}"), &tenant.key).await;
    let case = case.expect(200).clone();
    assert_eq!(keys(&case), sorted(CASE_FIELDS));
    assert_eq!(case["id"], id.as_str());
    assert_eq!(case["verification_id"], verification.as_str());
    assert_eq!(case["title"], "echo case");
    assert_eq!(timestamp(&case["created_at"]), opened);
    assert_eq!(listed(&server, &tenant, "").await, [id.as_str()]);
    let listed_case = &server.get("/v1/cases", &tenant.key).await.body["cases"][0];
    assert_eq!(listed_case, &case, "the list and the case agree");

    // Assign, with who did it.
    server.advance(Duration::minutes(5));
    let t1 = server.clock.now();
    let assigned = patch(
        &server,
        &tenant,
        &id,
        json!({"assignee": "alice", "author": "lead"}),
    )
    .await;
    let assigned = assigned.expect(200).clone();
    assert_eq!(assigned["assignee"], "alice");
    assert_eq!(assigned["status"], "open");
    assert_eq!(timestamp(&assigned["updated_at"]), t1);
    assert_eq!(timestamp(&assigned["created_at"]), opened);
    assert_eq!(assigned["history"].as_array().expect("history").len(), 1);
    let entry = &assigned["history"][0];
    assert_eq!(timestamp(&entry["at"]), t1);
    assert_eq!(entry["by"], "lead");
    assert_eq!(entry["field"], "assignee");
    assert_eq!(entry["from"], Value::Null);
    assert_eq!(entry["to"], "alice");

    // Progress it with a note; the note is the assignee's when no author is named.
    server.advance(Duration::minutes(5));
    let t2 = server.clock.now();
    let progressed = patch(
        &server,
        &tenant,
        &id,
        json!({"status": "in_progress", "note": "  Calling the applicant.  "}),
    )
    .await;
    let progressed = progressed.expect(200).clone();
    assert_eq!(progressed["status"], "in_progress");
    assert_eq!(progressed["resolved_at"], Value::Null);
    assert_eq!(timestamp(&progressed["updated_at"]), t2);
    let notes = progressed["notes"].as_array().expect("notes");
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["text"], "Calling the applicant.");
    assert_eq!(notes[0]["author"], "alice");
    assert_eq!(timestamp(&notes[0]["at"]), t2);
    let history = progressed["history"].as_array().expect("history");
    assert_eq!(history.len(), 3, "{progressed}");
    assert_eq!(
        (&history[1]["field"], &history[1]["from"], &history[1]["to"]),
        (&json!("status"), &json!("open"), &json!("in_progress"))
    );
    assert_eq!(history[1]["by"], Value::Null);
    assert_eq!(
        (&history[2]["field"], &history[2]["to"]),
        (&json!("notes"), &json!("Calling the applicant."))
    );

    // Resolve: resolved_at is set; reopening clears it.
    server.advance(Duration::minutes(5));
    let t3 = server.clock.now();
    let resolved = patch(
        &server,
        &tenant,
        &id,
        json!({"status": "resolved", "note": "Line confirmed.", "author": "bob"}),
    )
    .await;
    let resolved = resolved.expect(200).clone();
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(timestamp(&resolved["resolved_at"]), t3);
    assert_eq!(resolved["notes"][1]["author"], "bob");
    server.advance(Duration::minutes(5));
    let reopened = patch(&server, &tenant, &id, json!({"status": "open"})).await;
    let reopened = reopened.expect(200).clone();
    assert_eq!(reopened["status"], "open");
    assert_eq!(reopened["resolved_at"], Value::Null);

    // Unassign with null.
    let unassigned = patch(&server, &tenant, &id, json!({"assignee": null})).await;
    let unassigned = unassigned.expect(200).clone();
    assert_eq!(unassigned["assignee"], Value::Null);
    let last = unassigned["history"]
        .as_array()
        .expect("history")
        .last()
        .expect("an entry")
        .clone();
    assert_eq!(
        (&last["field"], &last["from"], &last["to"]),
        (&json!("assignee"), &json!("alice"), &Value::Null)
    );
    // Setting a field to the value it has records nothing.
    let before = unassigned["history"].as_array().expect("history").len();
    let same = patch(
        &server,
        &tenant,
        &id,
        json!({"status": "open", "assignee": null}),
    )
    .await;
    assert_eq!(
        same.expect(200)["history"]
            .as_array()
            .expect("history")
            .len(),
        before
    );
    // 5 assignee/status changes, 2 notes.
    assert_eq!(before, 7);

    // The stored case is what the patches answered.
    let stored = server.get(&format!("/v1/cases/{id}"), &tenant.key).await;
    assert_eq!(stored.expect(200), &unassigned);

    // Bad patches are refused, naming the field, and change nothing.
    let long_note = "n".repeat(2001);
    for (body, field) in [
        (json!({}), "body"),
        (json!({"author": "lead"}), "body"),
        (json!({"status": "closed"}), "status"),
        (json!({"status": "Open"}), "status"),
        (json!({"status": null}), "status"),
        (json!({"status": "in progress"}), "status"),
        (json!({"assignee": ""}), "assignee"),
        (json!({"assignee": "   "}), "assignee"),
        (json!({"assignee": 5}), "assignee"),
        (json!({"assignee": "a".repeat(129)}), "assignee"),
        (json!({"assignee": "tab\there"}), "assignee"),
        (json!({"note": ""}), "note"),
        (json!({"note": long_note}), "note"),
        (json!({"note": "ok", "author": ""}), "author"),
        (json!({"note": "ok", "priority": "high"}), "priority"),
        (json!({"resolved_at": null}), "resolved_at"),
    ] {
        let reply = patch(&server, &tenant, &id, body.clone()).await;
        assert_eq!(reply.status, 422, "{body}: {}", reply.text);
        reply.invalid_field(field);
    }
    let after = server.get(&format!("/v1/cases/{id}"), &tenant.key).await;
    assert_eq!(
        after.expect(200),
        &unassigned,
        "a refused patch changed the case"
    );

    // Unknown ids are 404, for reads and patches.
    server
        .get("/v1/cases/case_0000", &tenant.key)
        .await
        .error(404, "not_found");
    patch(&server, &tenant, "case_0000", json!({"status": "resolved"}))
        .await
        .error(404, "not_found");
}

#[tokio::test]
async fn review_decisions_land_on_the_report_the_audit_trail_and_the_cases() {
    let (server, tenant) = TestServer::with_tenant().await;
    echo_opening_cases(&server, &tenant).await;
    let approved = in_review(&server, &tenant, "a").await;
    let declined = in_review(&server, &tenant, "b").await;
    let approved_case = case_ids(&server, &tenant, &approved).await[0].clone();
    let declined_case = case_ids(&server, &tenant, &declined).await[0].clone();
    let pending = server.send(&tenant, &uz_number(61), "c").await;
    let pending = pending["verification_id"].as_str().expect("id").to_owned();
    let report = server.report(&tenant, &approved).await;
    assert_eq!(report["review"], Value::Null, "no decision yet");

    // Bad bodies are refused, naming the field, before anything changes.
    for (body, field) in [
        (json!({"decision": "maybe", "note": "x"}), "decision"),
        (json!({"decision": "Approve", "note": "x"}), "decision"),
        (json!({"note": "x"}), "decision"),
        (json!({"decision": "approve"}), "note"),
        (json!({"decision": "approve", "note": "   "}), "note"),
        (json!({"decision": "approve", "note": 7}), "note"),
        (
            json!({"decision": "approve", "note": "n".repeat(2001)}),
            "note",
        ),
        (
            json!({"decision": "approve", "note": "x", "reviewer": ""}),
            "reviewer",
        ),
        (
            json!({"decision": "approve", "note": "x", "reviewer": 3}),
            "reviewer",
        ),
        (
            json!({"decision": "approve", "note": "x", "status": "Approved"}),
            "status",
        ),
    ] {
        let reply = review(&server, &tenant, &approved, body.clone()).await;
        assert_eq!(reply.status, 422, "{body}: {}", reply.text);
        reply.invalid_field(field);
    }
    assert_eq!(
        server.report(&tenant, &approved).await["phone"]["status"],
        "In Review"
    );
    review(
        &server,
        &tenant,
        "no-such-verification",
        json!({"decision": "approve", "note": "x"}),
    )
    .await
    .error(404, "not_found");

    // Approve.
    server.advance(Duration::minutes(10));
    let decided_at = server.clock.now();
    let note = "Called the applicant; the VoIP line is theirs.";
    let reply = review(
        &server,
        &tenant,
        &approved,
        json!({"decision": "approve", "note": note, "reviewer": "alice"}),
    )
    .await;
    let answer = reply.expect(200).clone();
    assert_eq!(answer["verification_id"], approved.as_str());
    assert_eq!(answer["phone"]["status"], "Approved");
    let report = server.report(&tenant, &approved).await;
    assert_eq!(report, answer, "the answer is the report");
    assert_eq!(
        keys(&report["review"]),
        sorted(&["decision", "note", "reviewer", "decided_at"])
    );
    assert_eq!(report["review"]["decision"], "approve");
    assert_eq!(report["review"]["note"], note);
    assert_eq!(report["review"]["reviewer"], "alice");
    assert_eq!(timestamp(&report["review"]["decided_at"]), decided_at);
    assert_eq!(timestamp(&report["updated_at"]), decided_at);
    // The trail: the decision, then verification_completed with the rules that ran.
    let events = server
        .get(&format!("/v1/verifications/{approved}/events"), &tenant.key)
        .await;
    let events = events.expect(200)["events"]
        .as_array()
        .expect("events")
        .clone();
    let tail: Vec<&Value> = events.iter().rev().take(2).rev().collect();
    assert_eq!(tail[0]["trigger"], "review");
    assert_eq!(tail[0]["status"], "Approved");
    assert_eq!(tail[0]["detail"], note);
    assert_eq!(timestamp(&tail[0]["at"]), decided_at);
    assert_eq!(tail[1]["trigger"], "verification_completed");
    assert_eq!(tail[1]["status"], "Approved");
    assert_eq!(tail[1]["detail"], "review approve");
    assert_eq!(tail[1]["rules"][0]["name"], "echo", "{}", tail[1]);
    // echo saw the decided status at verification_completed.
    let completed = format!(
        "verification_completed|Approved|sms|1|true|{UK_VOIP}|voip|a|true|{}",
        tenant.id
    );
    assert!(
        report["flags"]
            .as_array()
            .expect("flags")
            .contains(&json!(completed)),
        "{}",
        report["flags"]
    );
    // The case of the verification is resolved with a note saying why.
    let case = server
        .get(&format!("/v1/cases/{approved_case}"), &tenant.key)
        .await;
    let case = case.expect(200);
    assert_eq!(case["status"], "resolved");
    assert_eq!(timestamp(&case["resolved_at"]), decided_at);
    assert_eq!(case["notes"][0]["author"], "alice");
    assert_eq!(
        case["notes"][0]["text"],
        "Resolved: the verification was approved in review."
    );
    assert_eq!(case["history"][0]["by"], "alice");
    assert_eq!(case["history"][0]["to"], "resolved");
    // The other verification's case is untouched.
    let other = server
        .get(&format!("/v1/cases/{declined_case}"), &tenant.key)
        .await;
    assert_eq!(other.expect(200)["status"], "open");

    // Decline, without naming a reviewer.
    let reply = review(
        &server,
        &tenant,
        &declined,
        json!({"decision": "decline", "note": "Number belongs to someone else."}),
    )
    .await;
    assert_eq!(reply.expect(200)["phone"]["status"], "Declined");
    let report = server.report(&tenant, &declined).await;
    assert_eq!(report["phone"]["status"], "Declined");
    assert_eq!(report["review"]["decision"], "decline");
    assert_eq!(report["review"]["reviewer"], Value::Null);
    let events = server
        .get(&format!("/v1/verifications/{declined}/events"), &tenant.key)
        .await;
    let review_events: Vec<Value> = events.expect(200)["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["trigger"] == "review")
        .cloned()
        .collect();
    assert_eq!(review_events.len(), 1);
    assert_eq!(review_events[0]["status"], "Declined");
    assert_eq!(
        review_events[0]["detail"],
        "Number belongs to someone else."
    );
    let case = server
        .get(&format!("/v1/cases/{declined_case}"), &tenant.key)
        .await;
    let case = case.expect(200);
    assert_eq!(case["status"], "resolved");
    assert_eq!(
        case["notes"][0]["text"],
        "Resolved: the verification was declined in review."
    );

    // Only a verification In Review can be decided: 409 naming the status it has.
    for (id, status) in [
        (&approved, "Approved"),
        (&declined, "Declined"),
        (&pending, "Not Finished"),
    ] {
        let reply = review(
            &server,
            &tenant,
            id,
            json!({"decision": "decline", "note": "again"}),
        )
        .await;
        let error = reply.error(409, "not_in_review");
        assert!(
            error["message"].as_str().expect("message").contains(status),
            "{error}"
        );
    }
    // ...and the refused decisions changed nothing.
    let report = server.report(&tenant, &approved).await;
    assert_eq!(report["phone"]["status"], "Approved");
    assert_eq!(report["review"]["note"], note);
    let report = server.report(&tenant, &pending).await;
    assert_eq!(report["phone"]["status"], "Not Finished");
    assert_eq!(report["review"], Value::Null);
}

#[tokio::test]
async fn another_tenant_can_neither_see_nor_change_cases_nor_decide_reviews() {
    let server = TestServer::start().await;
    let a = server.tenant("a").await;
    let b = server.tenant("b").await;
    echo_opening_cases(&server, &a).await;
    let verification = in_review(&server, &a, "x").await;
    let case_id = case_ids(&server, &a, &verification).await[0].clone();
    let original = server.get(&format!("/v1/cases/{case_id}"), &a.key).await;
    let original = original.expect(200).clone();

    assert!(listed(&server, &b, "").await.is_empty());
    assert!(
        listed(&server, &b, &format!("verification_id={verification}"))
            .await
            .is_empty()
    );
    server
        .get(&format!("/v1/cases/{case_id}"), &b.key)
        .await
        .error(404, "not_found");
    patch(
        &server,
        &b,
        &case_id,
        json!({"assignee": "mallory", "status": "resolved"}),
    )
    .await
    .error(404, "not_found");
    review(
        &server,
        &b,
        &verification,
        json!({"decision": "approve", "note": "mine now"}),
    )
    .await
    .error(404, "not_found");

    // A's case and verification are as they were, and A can still decide.
    let unchanged = server.get(&format!("/v1/cases/{case_id}"), &a.key).await;
    assert_eq!(unchanged.expect(200), &original);
    assert_eq!(
        server.report(&a, &verification).await["phone"]["status"],
        "In Review"
    );
    assert_eq!(listed(&server, &a, "").await, [case_id.as_str()]);
    review(
        &server,
        &a,
        &verification,
        json!({"decision": "approve", "note": "ok"}),
    )
    .await
    .expect(200);
}

#[tokio::test]
async fn of_two_concurrent_decisions_exactly_one_is_recorded() {
    let (server, tenant) = TestServer::with_tenant().await;
    for round in 0..3 {
        let id = in_review(&server, &tenant, &format!("applicant-{round}")).await;
        let (first, second) = tokio::join!(
            review(
                &server,
                &tenant,
                &id,
                json!({"decision": "approve", "note": "first"})
            ),
            review(
                &server,
                &tenant,
                &id,
                json!({"decision": "decline", "note": "second"})
            ),
        );
        let mut statuses = [first.status, second.status];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "{} / {}", first.text, second.text);
        let winner = if first.status == 200 { &first } else { &second };
        let report = server.report(&tenant, &id).await;
        assert_eq!(report["phone"]["status"], winner.body["phone"]["status"]);
        assert_eq!(report["review"], winner.body["review"]);
        let events = server
            .get(&format!("/v1/verifications/{id}/events"), &tenant.key)
            .await;
        let reviews = events.expect(200)["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["trigger"] == "review")
            .count();
        assert_eq!(reviews, 1, "one decision on the trail");
    }
}
