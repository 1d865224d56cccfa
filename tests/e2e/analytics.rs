//! Conversion analytics and the verification log end to end: the counts per group
//! equal the traffic the test made (codes started, sent, resent, delivered, verified),
//! per hour and per day, for the tenant and across tenants for the operator, and
//! survive a restart; the log pages through a tenant's verifications newest first with
//! its filters, and shows none of another tenant's; bad queries get a JSON error
//! naming the field.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::support::*;

/// A British mobile number, far from the others the tests use.
fn gb(i: u32) -> String {
    format!("+447911{:06}", (10_000 + i * 7_919) % 290_000)
}

/// A US number, far from the others the tests use.
fn us(i: u32) -> String {
    format!("+1650253{:04}", 1_000 + i * 211)
}

async fn conversion(server: &TestServer, key: &str, query: &str) -> Value {
    server
        .get(&format!("/v1/analytics/conversion{query}"), key)
        .await
        .expect(200)
        .clone()
}

/// The row of `rows` whose group is `value`.
fn group<'a>(rows: &'a Value, value: &str) -> &'a Value {
    rows.as_array()
        .expect("rows")
        .iter()
        .find(|row| row["group"] == value)
        .unwrap_or_else(|| panic!("no row for {value} in {rows}"))
}

/// The counts of a row: started, sent, delivered, failed, verified.
fn counts(row: &Value) -> [u64; 5] {
    ["started", "sent", "delivered", "failed", "verified"].map(|field| {
        row[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} in {row}"))
    })
}

/// Marks the newest outbox message of `phone` with `status`.
async fn report_delivery(server: &TestServer, tenant: &Tenant, phone: &str, status: &str) {
    let messages = server.outbox(tenant, phone).await;
    let id = messages[0]["id"].as_str().expect("message id");
    server
        .post(
            &format!("/v1/dev/outbox/{id}/delivery"),
            &tenant.key,
            json!({ "status": status }),
        )
        .await
        .expect(200);
}

#[tokio::test]
async fn conversion_counts_are_the_traffic_per_group_for_the_tenant_and_the_operator() {
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let other = server.tenant("other").await;

    // Five British codes verified, two of them delivered first (one receipt twice).
    for i in 0..5 {
        server.send(&acme, &gb(i), &format!("gb-{i}")).await;
        if i < 2 {
            report_delivery(&server, &acme, &gb(i), "delivered").await;
        }
        let code = server.latest_code(&acme, &gb(i)).await;
        server
            .verify(&acme, &gb(i), &format!("gb-{i}"), &code)
            .await
            .expect(200);
    }
    report_delivery(&server, &acme, &gb(0), "delivered").await;
    // Three US codes never verified: one resent, one failed.
    for i in 0..3 {
        server.send(&acme, &us(i), &format!("us-{i}")).await;
    }
    server.advance(chrono::Duration::seconds(31));
    server.send(&acme, &us(0), "us-0").await;
    report_delivery(&server, &acme, &us(1), "failed").await;
    // The other tenant's traffic is its own.
    server.send_and_verify(&other, &gb(50), "x").await;

    let by_country = conversion(&server, &acme.key, "?group_by=country").await;
    assert_eq!(by_country["group_by"], "country");
    assert_eq!(by_country["interval"], "day");
    let totals = &by_country["totals"];
    assert_eq!(totals.as_array().expect("totals").len(), 2, "{totals}");
    let gb_row = group(totals, "GB");
    assert_eq!(counts(gb_row), [5, 5, 2, 0, 5]);
    assert_eq!(gb_row["conversion_rate"], 1.0);
    assert!(gb_row["time_to_verify_p50_ms"].as_f64().is_some());
    assert!(gb_row["delivery_latency_p50_ms"].as_f64().is_some());
    let us_row = group(totals, "US");
    assert_eq!(counts(us_row), [3, 4, 0, 1, 0]);
    assert_eq!(us_row["conversion_rate"], 0.0);
    assert_eq!(us_row["resends_per_verification"], 0.3333);
    assert!(us_row["time_to_verify_p50_ms"].is_null());
    // Today's row per country is the same, since all of it happened today.
    let today: Vec<&Value> = by_country["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|row| row["group"] == "GB")
        .collect();
    assert_eq!(today.len(), 1);
    assert_eq!(counts(today[0]), [5, 5, 2, 0, 5]);

    // Without a grouping: one row a day for the last seven days, and the whole.
    let all = conversion(&server, &acme.key, "").await;
    assert!(all.get("group_by").is_none());
    let rows = all["rows"].as_array().expect("rows");
    assert!((7..=8).contains(&rows.len()), "{} rows", rows.len());
    assert_eq!(counts(&all["totals"][0]), [8, 9, 2, 1, 5]);
    assert_eq!(all["totals"][0]["conversion_rate"], 0.625);
    let counted: u64 = rows
        .iter()
        .map(|row| row["started"].as_u64().expect("in the answer"))
        .sum();
    assert_eq!(counted, 8);

    // Other groupings count the same traffic.
    let by_channel = conversion(&server, &acme.key, "?group_by=channel").await;
    assert_eq!(counts(group(&by_channel["totals"], "sms")), [8, 9, 2, 1, 5]);
    let by_line = conversion(&server, &acme.key, "?group_by=line_type").await;
    let lines: u64 = by_line["totals"]
        .as_array()
        .expect("in the answer")
        .iter()
        .map(|row| row["started"].as_u64().expect("in the answer"))
        .sum();
    assert_eq!(lines, 8);
    let by_provider = conversion(&server, &acme.key, "?group_by=provider").await;
    assert_eq!(
        by_provider["totals"]
            .as_array()
            .expect("in the answer")
            .len(),
        1
    );
    assert_eq!(by_provider["totals"][0]["sent"], 9);

    // The other tenant sees only its own; the operator sees both, or one tenant.
    let theirs = conversion(&server, &other.key, "").await;
    assert_eq!(counts(&theirs["totals"][0]), [1, 1, 0, 0, 1]);
    let host = conversion_admin(&server, "").await;
    assert_eq!(counts(&host["totals"][0]), [9, 10, 2, 1, 6]);
    let one = conversion_admin(&server, &format!("?tenant_id={}&group_by=country", acme.id)).await;
    assert_eq!(counts(group(&one["totals"], "US")), [3, 4, 0, 1, 0]);

    // The tallies survive a restart.
    let server = server.restart().await;
    let again = conversion(&server, &acme.key, "?group_by=country").await;
    assert_eq!(again["totals"], by_country["totals"]);
}

async fn conversion_admin(server: &TestServer, query: &str) -> Value {
    server
        .get(
            &format!("/v1/admin/analytics/conversion{query}"),
            OPERATOR_KEY,
        )
        .await
        .expect(200)
        .clone()
}

#[tokio::test]
async fn a_query_counts_what_came_before_it_while_the_replica_merges() {
    // The replica merges without pause while codes go out: each query comes while a
    // merge may hold the counts of the send before it.
    let (server, tenant) = TestServer::with_tenant().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let merger = {
        let engine = std::sync::Arc::clone(server.engine());
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                engine.flush_analytics().expect("merged");
            }
        })
    };
    for i in 0..25 {
        server
            .send_otp(
                &tenant,
                json!({"phone": gb(400 + i), "client_ip": format!("198.51.100.{i}")}),
            )
            .await
            .expect(200);
        let totals = conversion(&server, &tenant.key, "").await["totals"][0].clone();
        assert_eq!(totals["started"], u64::from(i + 1), "{totals}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    merger.join().expect("merger");
}

/// Rolls the settled days of every owner now (as each replica does every minute);
/// how many days.
async fn roll(server: &TestServer) -> usize {
    let engine = std::sync::Arc::clone(server.engine());
    tokio::task::spawn_blocking(move || engine.roll_every_owner())
        .await
        .expect("roll task")
        .expect("rolled")
}

#[tokio::test]
async fn settled_days_rolled_into_a_record_answer_as_their_tallies_and_late_counts_still_count() {
    use dialgate::analytics::{Fact, Groups};
    use dialgate::clock::Clock;
    let (server, tenant) = TestServer::with_tenant().await;
    let first = server.clock.now();
    // Three days of traffic: verified British codes, unverified US ones (which have
    // no carrier: the null group).
    for day in 0..3 {
        server.send_and_verify(&tenant, &gb(300 + day), "a").await;
        server
            .send_otp(&tenant, json!({"phone": us(20 + day)}))
            .await
            .expect(200);
        server.advance(chrono::Duration::days(1));
    }
    server.advance(chrono::Duration::hours(2));
    server.send_and_verify(&tenant, &gb(310), "b").await;
    let day = |at: chrono::DateTime<chrono::Utc>| at.format("%Y-%m-%d").to_string();
    let range = format!(
        "?from={}&to={}",
        day(first - chrono::Duration::days(1)),
        day(server.clock.now() + chrono::Duration::days(1))
    );
    let groupings = ["country", "carrier", "line_type", "channel", "provider"];
    let mut before = Vec::new();
    for grouping in groupings {
        before.push(
            conversion(
                &server,
                &tenant.key,
                &format!("{range}&group_by={grouping}"),
            )
            .await,
        );
    }
    let carriers = &before[1];
    assert!(
        carriers["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .any(|row| row["group"].is_null()),
        "{carriers}"
    );

    // The settled days are rolled (those that ended an hour ago), for the tenant and
    // for the host; today is not.
    let midnight = |at: chrono::DateTime<chrono::Utc>| at.date_naive();
    let settled =
        (midnight(server.clock.now() - chrono::Duration::hours(1)) - midnight(first)).num_days();
    assert!(settled >= 3);
    assert_eq!(roll(&server).await as i64, 2 * settled);
    assert_eq!(roll(&server).await, 0, "a day is rolled once");
    for (grouping, before) in groupings.iter().zip(&before) {
        let after = conversion(
            &server,
            &tenant.key,
            &format!("{range}&group_by={grouping}"),
        )
        .await;
        assert_eq!(&after, before, "{grouping}");
    }
    let host = server
        .get(
            &format!("/v1/admin/analytics/conversion{range}&group_by=country"),
            OPERATOR_KEY,
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(host["totals"], before[0]["totals"], "{host}");

    // A count merged into a rolled day later (a replica whose store was down) is in
    // the answer: the day is read from its tallies again.
    let engine = server.engine();
    let late = Groups {
        country: Some("GB".into()),
        ..Groups::default()
    };
    engine.tally(&tenant.id, first, late, Fact::Started);
    tokio::task::spawn_blocking({
        let engine = std::sync::Arc::clone(engine);
        move || engine.flush_analytics()
    })
    .await
    .expect("flush task")
    .expect("flushed");
    let after = conversion(&server, &tenant.key, &format!("{range}&group_by=country")).await;
    let started = |answer: &Value| group(&answer["totals"], "GB")["started"].as_u64();
    assert_eq!(
        started(&after),
        started(&before[0]).map(|n| n + 1),
        "{after}"
    );
    let first_day = |answer: &Value| {
        answer["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|row| row["group"] == "GB")
            .map(|row| row["started"].clone())
    };
    assert_eq!(
        first_day(&after).and_then(|n| n.as_u64()),
        first_day(&before[0])
            .and_then(|n| n.as_u64())
            .map(|n| n + 1)
    );
}

#[tokio::test]
async fn hourly_rows_put_traffic_in_its_hour() {
    let (server, tenant) = TestServer::with_tenant().await;
    let start = chrono::Utc::now();
    server.send_and_verify(&tenant, &gb(100), "a").await;
    server.advance(chrono::Duration::hours(2));
    server.send_and_verify(&tenant, &gb(101), "b").await;
    server.send_and_verify(&tenant, &gb(102), "c").await;
    let from =
        (start - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to =
        (start + chrono::Duration::hours(4)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let hourly = conversion(
        &server,
        &tenant.key,
        &format!("?interval=hour&from={}&to={}", encode(&from), encode(&to)),
    )
    .await;
    let rows = hourly["rows"].as_array().expect("rows");
    // Every hour of the range, counted or not.
    assert!((5..=6).contains(&rows.len()), "{} rows", rows.len());
    let verified: Vec<u64> = rows
        .iter()
        .map(|row| row["verified"].as_u64().expect("in the answer"))
        .collect();
    let first = verified
        .iter()
        .position(|n| *n > 0)
        .expect("a counted hour");
    assert_eq!(verified[first], 1, "{verified:?}");
    assert_eq!(verified[first + 2], 2, "{verified:?}");
    assert_eq!(verified.iter().sum::<u64>(), 3);
    for pair in rows.windows(2) {
        assert_eq!(pair[0]["end"], pair[1]["start"]);
    }
}

#[tokio::test]
async fn bad_analytics_queries_are_named() {
    let (server, tenant) = TestServer::with_tenant().await;
    let ask = |query: &'static str| {
        let server = &server;
        let key = tenant.key.clone();
        async move {
            server
                .get(&format!("/v1/analytics/conversion{query}"), &key)
                .await
        }
    };
    ask("?interval=week").await.invalid_field("interval");
    ask("?group_by=colour").await.invalid_field("group_by");
    ask("?from=yesterday").await.invalid_field("from");
    ask("?from=2026-11-02&to=2026-11-01")
        .await
        .invalid_field("from");
    ask("?interval=hour&from=2026-01-01&to=2026-03-01")
        .await
        .invalid_field("to");
    ask("?from=2020-01-01&to=2026-01-01")
        .await
        .invalid_field("to");
    ask("?tenant_id=someone").await.invalid_field("tenant_id");
    ask("?colour=blue").await.invalid_field("colour");
    server
        .get("/v1/admin/analytics/conversion", &tenant.key)
        .await
        .error(401, "unauthorized");
    server
        .get(
            "/v1/admin/analytics/conversion?tenant_id=nobody",
            OPERATOR_KEY,
        )
        .await
        .error(404, "not_found");
    server
        .get("/v1/admin/analytics/conversion?tenant_id=*", OPERATOR_KEY)
        .await
        .error(404, "not_found");
    server
        .get("/v1/analytics/conversion", "not-a-key")
        .await
        .expect(401);
}

/// Every page of the log for `query`, following the cursors.
async fn whole_log(server: &TestServer, tenant: &Tenant, query: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let path = match &cursor {
            Some(cursor) => format!("/v1/verifications?{query}&cursor={cursor}"),
            None => format!("/v1/verifications?{query}"),
        };
        let page = server.get(&path, &tenant.key).await.expect(200).clone();
        all.extend(page["verifications"].as_array().expect("entries").clone());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return all,
        }
    }
    panic!("the log did not end");
}

#[tokio::test]
async fn the_verification_log_pages_newest_first_with_its_filters() {
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let other = server.tenant("other").await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let verified = server
            .send_and_verify(&acme, &gb(200 + i), &format!("v{i}"))
            .await;
        ids.push(
            verified["verification_id"]
                .as_str()
                .expect("in the answer")
                .to_owned(),
        );
        server.advance(chrono::Duration::seconds(5));
    }
    for i in 0..3 {
        let sent = server.send(&acme, &us(10 + i), "pending-one").await;
        ids.push(
            sent["verification_id"]
                .as_str()
                .expect("in the answer")
                .to_owned(),
        );
        server.advance(chrono::Duration::seconds(5));
    }
    server.send_and_verify(&other, &gb(300), "theirs").await;

    // Three at a time, newest first, each once.
    let all = whole_log(&server, &acme, "limit=3").await;
    let listed: Vec<&str> = all
        .iter()
        .map(|entry| entry["verification_id"].as_str().expect("in the answer"))
        .collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);
    assert_eq!(listed.iter().collect::<HashSet<_>>().len(), 7);
    let first = &all[0];
    assert_eq!(first["phone"], us(12));
    assert_eq!(first["status"], "Not Finished");
    assert_eq!(first["country"], "US");
    assert_eq!(first["channel"], "sms");
    assert_eq!(first["provider"], "dev-outbox");
    assert_eq!(first["sends"], 1);

    // Filters.
    let approved = whole_log(&server, &acme, "status=Approved").await;
    assert_eq!(approved.len(), 4);
    assert!(approved.iter().all(|entry| entry["otp_verified"] == true));
    assert_eq!(
        whole_log(&server, &acme, "status=not_finished").await.len(),
        3
    );
    assert_eq!(whole_log(&server, &acme, "country=us").await.len(), 3);
    assert_eq!(whole_log(&server, &acme, "applicant_id=v2").await.len(), 1);
    assert_eq!(
        whole_log(&server, &acme, "applicant_id=pending-one")
            .await
            .len(),
        3
    );
    assert_eq!(whole_log(&server, &acme, "channel=sms").await.len(), 7);
    assert_eq!(whole_log(&server, &acme, "channel=voice").await.len(), 0);
    assert_eq!(
        whole_log(&server, &acme, "provider=dev-outbox").await.len(),
        7
    );
    assert_eq!(whole_log(&server, &acme, "provider=nobody").await.len(), 0);
    // A time range: the third to the fifth verification, by their created_at.
    let created = |i: usize| {
        let report = &all[all.len() - 1 - i];
        report["created_at"]
            .as_str()
            .expect("in the answer")
            .to_owned()
    };
    let range = format!("from={}&to={}", encode(&created(2)), encode(&created(4)));
    let in_range = whole_log(&server, &acme, &range).await;
    let in_range: Vec<&str> = in_range
        .iter()
        .map(|entry| entry["verification_id"].as_str().expect("in the answer"))
        .collect();
    assert_eq!(
        in_range,
        [ids[4].as_str(), ids[3].as_str(), ids[2].as_str()]
    );

    // Another tenant sees its own only.
    let theirs = whole_log(&server, &other, "").await;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["applicant_id"], "theirs");

    // Bad queries.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("status=done", "status"),
        ("channel=pigeon", "channel"),
        ("from=soon", "from"),
        ("cursor=..%2F..%2Fother", "cursor"),
    ] {
        server
            .get(&format!("/v1/verifications?{query}"), &acme.key)
            .await
            .invalid_field(field);
    }
    server
        .get("/v1/verifications?tenant=other", &acme.key)
        .await
        .invalid_field("tenant");
}

/// A British mobile number under +44 7400, far from the others.
fn uk(i: u32) -> String {
    format!("+447400{:06}", 100_000 + i * 1_237)
}

/// Sends a code to `phone` from a client address of its own, and verifies it when
/// `verify`; the verification id.
async fn code_for(
    server: &TestServer,
    tenant: &Tenant,
    i: u32,
    phone: &str,
    verify: bool,
) -> String {
    let sent = server
        .send_otp(
            tenant,
            json!({"phone": phone, "applicant_id": format!("a{i}"),
                   "client_ip": format!("203.0.113.{}", i % 250 + 1)}),
        )
        .await
        .expect(200)
        .clone();
    if verify {
        let code = server.latest_code(tenant, phone).await;
        server
            .verify(tenant, phone, &format!("a{i}"), &code)
            .await
            .expect(200);
    }
    sent["verification_id"].as_str().expect("an id").to_owned()
}

/// The event types of the tenant's webhook deliveries.
async fn alert_types(server: &TestServer, tenant: &Tenant) -> Vec<(String, Value)> {
    let hooks = server
        .get("/v1/webhooks", &tenant.key)
        .await
        .expect(200)
        .clone();
    let id = hooks["webhooks"][0]["id"]
        .as_str()
        .expect("a webhook")
        .to_owned();
    let log = server
        .get(
            &format!("/v1/webhooks/{id}/deliveries?limit=200"),
            &tenant.key,
        )
        .await
        .expect(200)
        .clone();
    log["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|delivery| {
            (
                delivery["event_type"].as_str().expect("type").to_owned(),
                delivery["payload"]["data"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_hour_well_below_its_week_sends_alerts_once() {
    let server = TestServer::start().await;
    let tenant = server.tenant("alerted").await;
    let calm = server.tenant("calm").await;
    for who in [&tenant, &calm] {
        server
            .post(
                "/v1/webhooks",
                &who.key,
                json!({"url": "http://127.0.0.1:9/alerts", "event_types": ["alert.conversion_dropped", "alert.delivery_failures_spiked"]}),
            )
            .await
            .expect(201);
        server
            .settings(who, json!({"alerts": {"min_codes": 5}}))
            .await;
    }
    // A day of healthy traffic: 27 codes, 25 verified, delivered.
    for i in 0..27 {
        code_for(&server, &tenant, i, &uk(400 + i), i < 25).await;
        report_delivery(&server, &tenant, &uk(400 + i), "delivered").await;
        code_for(&server, &calm, i, &uk(500 + i), i < 25).await;
    }
    // A day later, one bad hour: 10 codes, 2 verified, 6 failed.
    server.advance(chrono::Duration::days(1));
    for i in 0..10 {
        code_for(&server, &tenant, 100 + i, &uk(600 + i), i < 2).await;
        let status = if i < 6 { "failed" } else { "delivered" };
        report_delivery(&server, &tenant, &uk(600 + i), status).await;
        code_for(&server, &calm, 100 + i, &uk(700 + i), i < 9).await;
    }
    // Nothing is judged before the hour is over.
    server.engine().evaluate_alerts().expect("a check");
    server.advance(chrono::Duration::hours(1));
    let sent = server.engine().evaluate_alerts().expect("a check");
    let alerts = alert_types(&server, &tenant).await;
    assert_eq!(
        sent, 4,
        "conversion and failures, by country and by provider: {alerts:?}"
    );
    let find = |event: &str, group_by: &str| {
        alerts
            .iter()
            .find(|(kind, data)| kind == event && data["group_by"] == group_by)
            .unwrap_or_else(|| panic!("no {event} by {group_by}: {alerts:?}"))
            .1
            .clone()
    };
    let dropped = find("alert.conversion_dropped", "country");
    assert_eq!(dropped["group"], "GB");
    assert_eq!(dropped["conversion_rate"], 0.2);
    assert_eq!(dropped["started"], 10);
    assert_eq!(dropped["baseline_started"], 27);
    let provider = find("alert.conversion_dropped", "provider");
    assert_eq!(provider["group"], "dev-outbox");
    let failing = find("alert.delivery_failures_spiked", "country");
    assert_eq!(failing["failure_rate"], 0.6);
    assert_eq!(failing["failed"], 6);
    // The calm tenant's hour is fine; and an hour is judged once.
    assert!(alert_types(&server, &calm).await.is_empty());
    assert_eq!(server.engine().evaluate_alerts().expect("a check"), 0);
}

/// The tenant's rule statistics, by `source/id`.
async fn rule_stats(server: &TestServer, key: &str) -> std::collections::BTreeMap<String, Value> {
    let body = server
        .get("/v1/analytics/rules", key)
        .await
        .expect(200)
        .clone();
    body["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|rule| {
            let name = format!(
                "{}/{}",
                rule["source"].as_str().expect("a source"),
                rule["id"].as_str().expect("an id")
            );
            (name, rule.clone())
        })
        .collect()
}

#[tokio::test]
async fn rule_statistics_count_each_rules_runs_decisions_and_failures_and_survive_a_restart() {
    let server = TestServer::start().await;
    let tenant = server.tenant("rule-stats").await;
    let other = server.tenant("rule-stats-other").await;
    let echo = upload_echo(&server, &tenant, "phone_lookup_complete", Value::Null).await;
    let panic = upload_rule(
        &server,
        &tenant,
        "hostile_panic",
        "panic",
        "phone_lookup_complete",
        Value::Null,
    )
    .await;
    let rule: Value = serde_json::from_str(
        r#"{"rule_id":"otp_for_voip","trigger":"phone_lookup_complete","conditions":{"all":[{"field":"phone_type","operator":"eq","value":"voip"}]},"actions":[{"type":"send_otp","channel":"sms"}]}"#,
    )
    .expect("a rule");
    server
        .post("/v1/workflows/rules", &tenant.key, rule)
        .await
        .expect(201);
    for phone in [gb(1).as_str(), gb(2).as_str(), UZ_BEELINE, UK_VOIP] {
        server
            .post("/v1/phone/lookup", &tenant.key, json!({ "phone": phone }))
            .await
            .expect(200);
    }
    server
        .post("/v1/phone/lookup", &other.key, json!({ "phone": UK_VOIP }))
        .await
        .expect(200);

    let check = |stats: &std::collections::BTreeMap<String, Value>| {
        let echoed = &stats[&format!("plugin/{echo}")];
        assert_eq!(
            (
                echoed["runs"].as_u64(),
                echoed["decided"].as_u64(),
                echoed["failures"].as_u64()
            ),
            (Some(4), Some(4), Some(0)),
            "{echoed}"
        );
        assert!(echoed.get("last_failure").is_none(), "{echoed}");
        let panicked = &stats[&format!("plugin/{panic}")];
        assert_eq!(
            (
                panicked["runs"].as_u64(),
                panicked["decided"].as_u64(),
                panicked["failures"].as_u64()
            ),
            (Some(4), Some(0), Some(4)),
            "{panicked}"
        );
        assert_eq!(panicked["last_failure"], "trap", "{panicked}");
        assert!(panicked["last_failure_at"].is_string(), "{panicked}");
        // A declarative rule is recorded when it matches: the one VoIP lookup.
        let matched = &stats["workflow/otp_for_voip"];
        assert_eq!(
            (matched["runs"].as_u64(), matched["decided"].as_u64()),
            (Some(1), Some(1)),
            "{matched}"
        );
        assert_eq!(stats.len(), 3, "{stats:?}");
    };
    check(&rule_stats(&server, &tenant.key).await);
    // Another tenant's rules are its own: it has none.
    assert!(rule_stats(&server, &other.key).await.is_empty());

    // The counts are stored, not kept by the process.
    let server = server.restart().await;
    check(&rule_stats(&server, &tenant.key).await);
    // A range that ends before the lookups counts none of them.
    let before = server
        .get(
            "/v1/analytics/rules?from=2020-01-01&to=2020-01-08",
            &tenant.key,
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(before["rules"], json!([]), "{before}");
    server
        .get("/v1/analytics/rules?from=yesterday", &tenant.key)
        .await
        .invalid_field("from");
    server
        .get(
            "/v1/analytics/rules?from=2026-01-01&to=2025-01-01",
            &tenant.key,
        )
        .await
        .invalid_field("from");
    server
        .get(
            "/v1/analytics/rules?from=2020-01-01&to=2026-01-01",
            &tenant.key,
        )
        .await
        .invalid_field("to");
}
