//! The PostgreSQL store end to end: servers on a throwaway PostgreSQL database (a
//! cluster the tests start on loopback) run whole verifications, and replicas on one
//! database share tenants, keys and verifications (a code sent through one is checked
//! through another; of two concurrent checks of one code exactly one succeeds), see
//! each other's changes through the change log, run each scheduled job and webhook
//! delivery once, share rate limits, idempotent answers and a plugin's key-value data
//! (a counter incremented on both at once loses nothing), and a fleet of three serves
//! requests spread round-robin. Failures: a replica process killed mid-load loses
//! nothing it acknowledged and the other carries on; a database stopped and started
//! again is answered with 503s meanwhile and recovered from by itself. And
//! `dialgate store copy` moves a deployment from sled to PostgreSQL and back.

use dialgate::clock::Clock;
use dialgate::store::testing::TestCluster;

use crate::support::*;

/// A server on the PostgreSQL database `url`.
async fn replica(url: &str) -> TestServer {
    let url = url.to_owned();
    TestServer::start_with(|config| config.store = Some(url)).await
}

/// A new database on the shared test cluster (made on a blocking thread).
async fn database() -> String {
    tokio::task::spawn_blocking(|| TestCluster::shared().database())
        .await
        .expect("a test database")
}

#[tokio::test]
#[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
async fn a_server_on_postgres_runs_a_verification_and_keeps_it_across_a_restart() {
    let url = database().await;
    let server = replica(&url).await;
    let tenant = server.tenant("pg").await;
    let verified = server.send_and_verify(&tenant, UZ_BEELINE, "a").await;
    assert_eq!(verified["verification_status"], "verified");
    let id = verified["verification_id"]
        .as_str()
        .expect("verification id")
        .to_owned();
    server.stop().await;

    // A new process on the same database finds the key and the verification.
    let again = replica(&url).await;
    let report = again.report(&tenant, &id).await;
    assert_eq!(report["verification_id"], id.as_str(), "{report}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
async fn two_replicas_share_state_and_a_code_is_used_once_across_them() {
    let url = database().await;
    let (a, b) = tokio::join!(replica(&url), replica(&url));
    let tenant = a.tenant("shared").await;

    // A code sent through a is read and checked through b.
    a.send(&tenant, UZ_BEELINE, "first").await;
    let code = b.latest_code(&tenant, UZ_BEELINE).await;
    let checked = b.verify(&tenant, UZ_BEELINE, "first", &code).await;
    assert_eq!(checked.expect(200)["verification_status"], "verified");

    // Two checks of one code at once, one on each replica: one succeeds.
    for round in 0..5 {
        let (phone, applicant) = (uz_number(round), format!("race-{round}"));
        a.send(&tenant, &phone, &applicant).await;
        let code = a.latest_code(&tenant, &phone).await;
        let (on_a, on_b) = tokio::join!(
            a.verify(&tenant, &phone, &applicant, &code),
            b.verify(&tenant, &phone, &applicant, &code),
        );
        let verified = [&on_a, &on_b]
            .iter()
            .filter(|reply| reply.status == 200 && reply.body["verification_status"] == "verified")
            .count();
        assert_eq!(
            verified, 1,
            "round {round}: {} {} / {} {}",
            on_a.status, on_a.body, on_b.status, on_b.body
        );
    }
}

#[tokio::test]
async fn analytics_of_two_replicas_add_up_and_either_lists_every_verification() {
    let url = database().await;
    let (a, b) = tokio::join!(replica(&url), replica(&url));
    let tenant = a.tenant("counted").await;
    // Four sent through a, two of them checked through b; three sent and checked on b.
    for i in 0..4 {
        a.send(&tenant, &uz_number(100 + i), &format!("a{i}")).await;
    }
    for i in 0..2 {
        let code = b.latest_code(&tenant, &uz_number(100 + i)).await;
        b.verify(&tenant, &uz_number(100 + i), &format!("a{i}"), &code)
            .await
            .expect(200);
    }
    for i in 0..3 {
        b.send_and_verify(&tenant, &uz_number(200 + i), &format!("b{i}"))
            .await;
    }
    // Each replica merges its own counts within a second; the sums are the traffic's.
    let totals = |server: &TestServer| {
        let api = server.api.clone();
        let key = tenant.key.clone();
        async move {
            let answer = api.get("/v1/analytics/conversion", &key).await;
            let totals = answer.expect(200)["totals"][0].clone();
            (totals["started"].as_u64(), totals["verified"].as_u64())
        }
    };
    eventually("both replicas' counts merged", || async {
        totals(&a).await == (Some(7), Some(5)) && totals(&b).await == (Some(7), Some(5))
    })
    .await;
    let listed = a
        .get("/v1/verifications?limit=200", &tenant.key)
        .await
        .expect(200)["verifications"]
        .as_array()
        .expect("entries")
        .len();
    assert_eq!(listed, 7);
}

/// Waits (at most 10 s, far above the change log's poll) until `check` holds; how
/// long it took. `what` names what is awaited.
async fn eventually<F, Fut>(what: &str, check: F) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(what, std::time::Duration::from_secs(10), check).await
}

/// [`eventually`] with a bound of `limit`.
async fn eventually_within<F, Fut>(
    what: &str,
    limit: std::time::Duration,
    mut check: F,
) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
async fn a_change_through_one_replica_is_in_force_on_the_other() {
    let url = database().await;
    let (a, b) = tokio::join!(replica(&url), replica(&url));
    let tenant = a.tenant("changes").await;

    // A key b has used (and cached) stops working on b once a revokes it.
    let created = a
        .post(
            "/v1/keys",
            &tenant.key,
            serde_json::json!({"name": "short-lived"}),
        )
        .await
        .expect(201)
        .clone();
    let secret = created["api_key"].as_str().expect("secret").to_owned();
    let id = created["id"].as_str().expect("id").to_owned();
    b.get("/v1/keys", &secret).await.expect(200);
    a.delete(&format!("/v1/keys/{id}"), &tenant.key)
        .await
        .expect(204);
    eventually("a revoked key", || async {
        b.get("/v1/keys", &secret).await.status == 401
    })
    .await;

    // Settings b has read (and cached) change on b.
    let path = "/v1/settings/phone-verification";
    assert_eq!(
        b.get(path, &tenant.key).await.expect(200)["max_otp_attempts"],
        2
    );
    a.settings(&tenant, serde_json::json!({"max_otp_attempts": 4}))
        .await;
    eventually("changed settings", || async {
        b.get(path, &tenant.key).await.body["max_otp_attempts"] == 4
    })
    .await;

    // A workflow rule stored through a fires on b's lookups.
    let lookup = serde_json::json!({ "phone": UZ_BEELINE });
    let flags = |reply: &Reply| reply.body["flags"].clone();
    let before = b
        .post("/v1/phone/lookup", &tenant.key, lookup.clone())
        .await;
    assert_eq!(flags(&before), serde_json::json!([]), "{}", before.body);
    a.post(
        "/v1/workflows/rules",
        &tenant.key,
        serde_json::json!({
            "rule_id": "uz",
            "trigger": "phone_lookup_complete",
            "conditions": {"all": [{"field": "country", "operator": "eq", "value": "UZ"}]},
            "actions": [{"type": "add_flag", "flag": "from_a"}],
        }),
    )
    .await
    .expect(201);
    eventually("a workflow rule", || async {
        let reply = b
            .post("/v1/phone/lookup", &tenant.key, lookup.clone())
            .await;
        flags(&reply) == serde_json::json!(["from_a"])
    })
    .await;

    // A number b has looked up (and cached as not blocked) is blocked through a, then
    // unblocked: b's lookups follow both.
    let blocklisted = |reply: &Reply| {
        risks(&reply.body["warnings"]).contains(&"PHONE_NUMBER_IN_BLOCKLIST".to_owned())
    };
    let phone = uz_number(42);
    let lookup = serde_json::json!({ "phone": phone });
    let looked = b
        .post("/v1/phone/lookup", &tenant.key, lookup.clone())
        .await;
    assert!(!blocklisted(&looked), "{}", looked.text);
    a.post(
        "/v1/blocklist",
        &tenant.key,
        serde_json::json!({ "phone": phone }),
    )
    .await
    .expect(201);
    eventually("a blocked number", || async {
        blocklisted(
            &b.post("/v1/phone/lookup", &tenant.key, lookup.clone())
                .await,
        )
    })
    .await;
    a.delete(&format!("/v1/blocklist/{}", encode(&phone)), &tenant.key)
        .await
        .expect(204);
    eventually("an unblocked number", || async {
        !blocklisted(
            &b.post("/v1/phone/lookup", &tenant.key, lookup.clone())
                .await,
        )
    })
    .await;

    // A webhook subscribed through a gets the events of b's flows (b had read, and
    // cached, that the tenant has none).
    b.send(&tenant, &uz_number(50), "before-the-webhook").await;
    let hook = a
        .post(
            "/v1/webhooks",
            &tenant.key,
            serde_json::json!({"url": "http://127.0.0.1:9/hook", "event_types": ["*"]}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    eventually("a webhook subscription", || async {
        let listed = b.get("/v1/webhooks", &tenant.key).await;
        listed.body.to_string().contains(&hook)
    })
    .await;
    b.send(&tenant, &uz_number(51), "after-the-webhook").await;
    let listed = b
        .get(&format!("/v1/webhooks/{hook}/deliveries"), &tenant.key)
        .await;
    let deliveries = listed.expect(200)["deliveries"]
        .as_array()
        .expect("deliveries")
        .len();
    assert!(
        deliveries > 0,
        "b's send queued no delivery: {}",
        listed.text
    );
}

/// The dev-outbox messages for `phone` on `channel`.
async fn sent_on(server: &TestServer, tenant: &Tenant, phone: &str, channel: &str) -> usize {
    server
        .outbox(tenant, phone)
        .await
        .iter()
        .filter(|message| message["channel"] == channel)
        .count()
}

/// The scheduled jobs in the shared store.
fn jobs(server: &TestServer) -> Vec<(Vec<u8>, Vec<u8>)> {
    server
        .engine()
        .db
        .scan_raw(dialgate::store::Tree::Jobs, b"", 100)
        .expect("scan jobs")
}

/// The channel-workflow steps scheduled in the shared store.
fn steps(server: &TestServer) -> Vec<u64> {
    jobs(server)
        .iter()
        .filter_map(|(_, bytes)| {
            let job: serde_json::Value = serde_json::from_slice(bytes).ok()?;
            (job["job"] == "fallback_step").then(|| job["step"].as_u64())?
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
async fn a_scheduled_step_runs_once_across_replicas_and_after_its_runner_dies() {
    let url = database().await;
    let (a, b) = tokio::join!(replica(&url), replica(&url));
    let tenant = a.tenant("jobs").await;
    let workflow = serde_json::json!([
        {"channel": "sms", "timeout_seconds": 30},
        {"channel": "whatsapp", "timeout_seconds": 30},
        {"channel": "voice"},
    ]);

    // Both replicas see the fallback step due: one of them sends it.
    let phone = uz_number(1);
    a.send_otp(
        &tenant,
        serde_json::json!({"phone": phone, "applicant_id": "x", "workflow": workflow}),
    )
    .await
    .expect(200);
    assert_eq!(steps(&a), [1], "the WhatsApp step is scheduled");
    a.advance(chrono::Duration::seconds(31));
    b.advance(chrono::Duration::seconds(31));
    eventually("the WhatsApp step", || async {
        sent_on(&b, &tenant, &phone, "whatsapp").await >= 1
    })
    .await;
    // Its job is gone once it ran, and the voice step is scheduled in its place.
    eventually("the step's job to finish", || async { steps(&a) == [2] }).await;
    assert_eq!(sent_on(&a, &tenant, &phone, "whatsapp").await, 1);

    // A runner that claimed the voice step (as a replica does, with the store's claim,
    // once it is due) and died: nobody runs it while its lease holds; once the lease
    // is over, the other replica does.
    let db = &a.engine().db;
    let due_ms = a.clock.now().timestamp_millis() + 31_000;
    let claim = || {
        db.claim_due(
            dialgate::store::Tree::Jobs,
            b"~",
            due_ms,
            due_ms + 60_000,
            10,
        )
    };
    let claimed = claim()
        .expect("claim")
        .expect("PostgreSQL keeps job leases");
    assert_eq!(claimed.len(), 1, "the voice step, claimed once");
    assert!(String::from_utf8_lossy(&claimed[0].1).contains("fallback_step"));
    let again = claim().expect("claim again");
    assert_eq!(again, Some(Vec::new()), "a held job is not claimed twice");
    a.stop().await;
    b.advance(chrono::Duration::seconds(31));
    // Due, but leased: a pass over the jobs leaves it alone.
    b.engine()
        .replica
        .jobs_next_due
        .store(i64::MIN, std::sync::atomic::Ordering::Release);
    b.engine().run_due_jobs().await.expect("a pass");
    assert_eq!(sent_on(&b, &tenant, &phone, "voice").await, 0);
    b.advance(chrono::Duration::seconds(61));
    eventually("the voice step after the lease", || async {
        sent_on(&b, &tenant, &phone, "voice").await == 1
    })
    .await;
}

/// A delivery as a receiver saw it: its `webhook-id` and its body.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>;

/// A webhook receiver on loopback that takes `delay` to answer 200 and keeps every
/// request's `webhook-id` and body; its URL.
async fn receiver(delay: std::time::Duration) -> (String, Received) {
    let received = Received::default();
    let kept = std::sync::Arc::clone(&received);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let kept = std::sync::Arc::clone(&kept);
                async move {
                    let id = headers
                        .get("webhook-id")
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let body = serde_json::from_slice(&body).unwrap_or_default();
                    kept.lock().expect("received").push((id, body));
                    tokio::time::sleep(delay).await;
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), received)
}

/// Two replicas on a new database, and a tenant subscribed to `verification.sent` with
/// a loopback receiver that answers each delivery after `delay`.
async fn replicas_with_a_subscriber(
    name: &str,
    delay: std::time::Duration,
) -> (TestServer, TestServer, Tenant, Received) {
    let url = database().await;
    let (a, b) = tokio::join!(replica(&url), replica(&url));
    let tenant = a.tenant(name).await;
    let (hook, received) = receiver(delay).await;
    a.post(
        "/v1/webhooks",
        &tenant.key,
        serde_json::json!({"url": hook, "event_types": ["verification.sent"]}),
    )
    .await
    .expect(201);
    (a, b, tenant, received)
}

#[tokio::test]
#[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
async fn a_webhook_is_delivered_once_while_both_replicas_deliver_from_the_queue() {
    // The receiver holds each request longer than a worker's poll, so both replicas'
    // workers find each delivery due while one attempt is in flight.
    let (a, b, tenant, received) =
        replicas_with_a_subscriber("hooks", std::time::Duration::from_millis(700)).await;
    for n in 0..4 {
        let server = if n % 2 == 0 { &a } else { &b };
        server.send(&tenant, &uz_number(10 + n), "hook").await;
    }
    eventually("four deliveries", || async {
        received.lock().expect("received").len() >= 4
    })
    .await;
    // Wait past another attempt's worth of time: a second attempt of any delivery
    // would have started by then.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let ids: Vec<String> = received
        .lock()
        .expect("received")
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4, "{ids:?}");
    assert_eq!(ids.len(), 4, "a delivery was attempted twice: {ids:?}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
async fn deliveries_a_stopped_replica_left_in_a_subscription_s_lane_go_out_from_another() {
    // A slow receiver: two attempts per subscription and replica are in flight at
    // once, so the rest of what falls due is parked in the subscription's lane.
    let (a, b, tenant, received) =
        replicas_with_a_subscriber("lanes", std::time::Duration::from_secs(2)).await;
    for n in 0..6 {
        a.send(&tenant, &uz_number(20 + n), "lanes").await;
    }
    eventually("the first attempts", || async {
        received.lock().expect("received").len() >= 2
    })
    .await;
    // The replica stops with attempts in flight (they stay claimed until their lease
    // ends) and entries parked in the lane; the other replica, running since before
    // they were parked, finds the lane and sends the rest.
    a.stop().await;
    eventually_within(
        "every delivery from the other replica",
        std::time::Duration::from_secs(30),
        || async {
            let mut ids: Vec<String> = received
                .lock()
                .expect("received")
                .iter()
                .map(|(id, _)| id.clone())
                .collect();
            ids.sort();
            ids.dedup();
            ids.len() == 6
        },
    )
    .await;
    drop(b);
}

#[tokio::test]
#[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
async fn a_rate_limit_of_n_is_n_across_replicas() {
    let url = database().await;
    let (a, b) = tokio::join!(replica(&url), replica(&url));
    let tenant = a.tenant("limits").await;
    // Sends to one number are limited to a burst of 5 (the default): alternating
    // between the replicas does not double it.
    let phone = uz_number(42);
    let mut statuses = Vec::new();
    for n in 0..10 {
        let server = if n % 2 == 0 { &a } else { &b };
        let reply = server
            .send_otp(
                &tenant,
                serde_json::json!({"phone": phone, "applicant_id": format!("applicant-{n}")}),
            )
            .await;
        statuses.push(reply.status);
    }
    let sent = statuses.iter().filter(|status| **status == 200).count();
    let limited = statuses.iter().filter(|status| **status == 429).count();
    assert_eq!((sent, limited), (5, 5), "{statuses:?}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
async fn a_fleet_of_three_replicas_serves_requests_spread_round_robin() {
    let url = database().await;
    let (r1, r2, r3) = tokio::join!(replica(&url), replica(&url), replica(&url));
    let fleet = [&r1, &r2, &r3];
    // A tenant made on one replica is known to all.
    let tenant = r1.tenant("fleet").await;
    for replica in fleet {
        replica.get("/v1/keys", &tenant.key).await.expect(200);
    }

    // Send on one, verify on another, for several numbers in turn.
    for n in 0..6u32 {
        let (sender, checker) = (fleet[n as usize % 3], fleet[(n as usize + 1) % 3]);
        let phone = uz_number(60 + n);
        sender.send(&tenant, &phone, "fleet").await;
        let code = checker.latest_code(&tenant, &phone).await;
        let verified = checker.verify(&tenant, &phone, "fleet", &code).await;
        assert_eq!(verified.expect(200)["verification_status"], "verified");
    }

    // One idempotent answer: a retry on another replica replays the first answer and
    // sends nothing more.
    let phone = uz_number(70);
    let body = serde_json::to_vec(&serde_json::json!({"phone": phone, "applicant_id": "idem"}))
        .expect("json");
    let mut answers = Vec::new();
    for replica in fleet {
        let reply = replica
            .raw(
                reqwest::Method::POST,
                "/v1/phone/send-otp",
                Some(&tenant.key),
                Some(("application/json", body.clone())),
                &[("Idempotency-Key", "fleet-signup-1")],
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        answers.push(reply.text);
    }
    assert!(
        answers.iter().all(|text| *text == answers[0]),
        "{answers:?}"
    );
    assert_eq!(r3.outbox(&tenant, &phone).await.len(), 1);

    // The same key sent to the three at once: one send happens; every other answer is
    // that send's answer replayed, or 409 while it is still in progress.
    let phone = uz_number(72);
    let body = serde_json::to_vec(&serde_json::json!({"phone": phone, "applicant_id": "race"}))
        .expect("json");
    let racing: Vec<_> = fleet
        .iter()
        .cycle()
        .take(9)
        .map(|replica| {
            let (api, key, body) = (replica.api.clone(), tenant.key.clone(), body.clone());
            tokio::spawn(async move {
                api.raw(
                    reqwest::Method::POST,
                    "/v1/phone/send-otp",
                    Some(&key),
                    Some(("application/json", body)),
                    &[("Idempotency-Key", "fleet-race-1")],
                )
                .await
            })
        })
        .collect();
    let mut replies = Vec::new();
    for request in racing {
        replies.push(request.await.expect("a request"));
    }
    let answered: Vec<&String> = replies
        .iter()
        .filter(|reply| reply.status == 200)
        .map(|reply| &reply.text)
        .collect();
    assert!(!answered.is_empty());
    assert!(
        answered.iter().all(|text| *text == answered[0]),
        "{answered:?}"
    );
    for reply in replies.iter().filter(|reply| reply.status != 200) {
        assert_eq!(reply.status, 409, "{}", reply.text);
    }
    assert_eq!(r2.outbox(&tenant, &phone).await.len(), 1, "one send");

    // The per-number send limit (a burst of 5) holds across the three.
    let phone = uz_number(71);
    let mut sent = 0;
    for n in 0..9usize {
        let reply = fleet[n % 3]
            .send_otp(
                &tenant,
                serde_json::json!({"phone": phone, "applicant_id": format!("burst-{n}")}),
            )
            .await;
        if reply.status == 200 {
            sent += 1;
        }
    }
    assert_eq!(sent, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
async fn a_plugins_counter_on_two_replicas_loses_no_increment() {
    // As `dialgate serve` runs: a multi-thread runtime, where the store waits for the
    // database in `block_in_place`, here from inside a plugin call's fiber. The
    // store's round trips count in the call's key-value time, not its 10 ms.
    let url = database().await;
    let (a, b) = tokio::join!(replica(&url), replica(&url));
    let tenant = a.tenant("kv").await;
    let reply = a
        .raw(
            reqwest::Method::POST,
            "/v1/plugins?name=counter&kind=rule&version=1&triggers=phone_lookup_complete",
            Some(&tenant.key),
            Some((
                "application/wasm",
                dialgate::plugins::testing::guest_component("hostile_abuser"),
            )),
            &[],
        )
        .await;
    let id = reply.expect(201)["id"].as_str().expect("id").to_owned();
    a.put(
        &format!("/v1/plugins/{id}/config"),
        &tenant.key,
        serde_json::json!({"config": {"count": "1"}}),
    )
    .await
    .expect(200);
    let count = |answer: &serde_json::Value| {
        answer["flags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|flag| flag.as_str()?.strip_prefix("count:")?.parse::<u64>().ok())
            .next()
    };
    let lookup = |api: Api, key: String| async move {
        api.post(
            "/v1/phone/lookup",
            &key,
            serde_json::json!({"phone": UK_VOIP}),
        )
        .await
        .expect(200)
        .clone()
    };
    eventually("the plugin", || async {
        count(&lookup(b.api.clone(), tenant.key.clone()).await).is_some()
    })
    .await;

    // Both replicas increment the one counter at once: every call gets its own count.
    // Eight at once: enough for the replicas' swaps to collide, few enough that the
    // retries of the last one stay well inside a call's bound on a loaded machine.
    // Each retry is a few round trips to the database; with 16 at once, one run under
    // a full suite came back without a count, most likely a call past its bound.
    const CALLS: u64 = 8;
    let first = lookup(a.api.clone(), tenant.key.clone()).await;
    let before = count(&first).unwrap_or_else(|| panic!("no count: {first}"));
    let calls: Vec<_> = (0..CALLS)
        .map(|index| {
            let api = if index % 2 == 0 { &a.api } else { &b.api };
            tokio::spawn(lookup(api.clone(), tenant.key.clone()))
        })
        .collect();
    let mut counts = Vec::new();
    for call in calls {
        let answer = call.await.expect("a lookup");
        match count(&answer) {
            Some(counted) => counts.push(counted),
            None => panic!(
                "no count: {answer}\nfailures on a: {}\nfailures on b: {}",
                plugin_failures(&a.api).await,
                plugin_failures(&b.api).await
            ),
        }
    }
    counts.sort_unstable();
    let expected: Vec<u64> = (before + 1..=before + CALLS).collect();
    assert_eq!(counts, expected);
}

/// The plugin failure lines of a replica's metrics, to say why a rule had no effect.
async fn plugin_failures(api: &Api) -> String {
    let reply = api
        .client
        .get(format!("{}/metrics", api.base))
        .bearer_auth(OPERATOR_KEY)
        .send()
        .await
        .expect("the server answers");
    let text = reply.text().await.expect("the metrics");
    text.lines()
        .filter(|line| line.starts_with("dialgate_plugin_failures"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs `dialgate store copy --from from --to to`: whether it succeeded, and what it
/// printed (stdout, then stderr).
async fn store_copy(from: &str, to: &str) -> (bool, String) {
    let (from, to) = (from.to_owned(), to.to_owned());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_dialgate"))
            .args(["store", "copy", "--from", &from, "--to", &to])
            .output()
            .expect("run dialgate store copy")
    })
    .await
    .expect("the copy's thread");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

/// The number of records `dialgate store copy` printed for `table`.
fn copied_records(printed: &str, table: &str) -> u64 {
    printed
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(table)).then(|| fields.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no line for {table}: {printed}"))
}

#[tokio::test]
#[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
async fn a_sled_deployment_copied_to_postgres_and_back_serves_the_same_records() {
    let dirs = tempfile::tempdir().expect("a temporary directory");
    let (sled, back) = (dirs.path().join("sled"), dirs.path().join("back"));
    let on = |dir: &std::path::Path| {
        let dir = dir.to_path_buf();
        move |config: &mut dialgate::config::Config| {
            config.data_dir = dir;
            config.store = None;
        }
    };
    let server = TestServer::start_with(on(&sled)).await;
    let tenant = server.tenant("moving").await;
    let verified = server.send_and_verify(&tenant, UZ_BEELINE, "mover").await;
    let id = verified["verification_id"]
        .as_str()
        .expect("verification id")
        .to_owned();
    let original = server.report(&tenant, &id).await;
    assert_eq!(original["phone"]["status"], "Approved", "{original}");
    server.stop().await;

    // Up: the sled directory into an empty PostgreSQL database, checked table by table.
    let url = database().await;
    let (copied, printed) = store_copy(sled.to_str().expect("a path"), &url).await;
    assert!(copied, "{printed}");
    assert!(
        printed.contains("every table's count and checksum match"),
        "{printed}"
    );
    assert!(
        !printed.contains(&url),
        "the URL is not printed whole: {printed}"
    );
    assert_eq!(copied_records(&printed, "verifications"), 1, "{printed}");
    assert_eq!(copied_records(&printed, "tenants"), 1, "{printed}");

    // A replica on the copy serves the tenant's key and the verification.
    let on_postgres = replica(&url).await;
    assert_eq!(on_postgres.report(&tenant, &id).await, original);
    on_postgres.stop().await;

    // Never into a store that holds records.
    let (copied, printed) = store_copy(sled.to_str().expect("a path"), &url).await;
    assert!(!copied, "{printed}");
    assert!(
        printed.contains("copy only into an empty store"),
        "{printed}"
    );
    // Nor from a directory that is not a deployment.
    let missing = dirs.path().join("missing");
    let (copied, printed) = store_copy(missing.to_str().expect("a path"), &url).await;
    assert!(!copied && printed.contains("does not exist"), "{printed}");

    // And back down: the database into a new sled directory.
    let (copied, printed) = store_copy(&url, back.to_str().expect("a path")).await;
    assert!(copied, "{printed}");
    let on_sled = TestServer::start_with(on(&back)).await;
    assert_eq!(on_sled.report(&tenant, &id).await, original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
async fn a_database_restart_answers_503_on_every_replica_and_loses_nothing_acknowledged() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    // A cluster of this test's own, since it is stopped and started again.
    let cluster = Arc::new(
        tokio::task::spawn_blocking(TestCluster::private)
            .await
            .expect("a cluster"),
    );
    let url = {
        let cluster = Arc::clone(&cluster);
        tokio::task::spawn_blocking(move || cluster.database())
            .await
            .expect("a database")
    };
    // Two replicas on it; the load alternates between them.
    let start = |url: String| {
        TestServer::start_with(move |config| {
            config.store = Some(url);
            config.store_options.timeout = std::time::Duration::from_secs(1);
        })
    };
    let (server, other) = tokio::join!(start(url.clone()), start(url));
    let replicas = [&server, &other];
    let tenant = server.tenant("outage").await;

    // Sends, one after another, all through the outage (within the per-number and
    // per-client limits: 100 numbers, at most 4 sends each, a client address each).
    let (running, acknowledged) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicUsize::new(0)),
    );
    let refusals: Arc<[AtomicUsize; 2]> = Arc::new(Default::default());
    let load = {
        let (apis, key) = ([server.api.clone(), other.api.clone()], tenant.key.clone());
        let (running, acknowledged) = (Arc::clone(&running), Arc::clone(&acknowledged));
        let refusals = Arc::clone(&refusals);
        tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut n = 0u32;
            while running.load(Ordering::SeqCst) && n < 400 {
                let (phone, applicant) = (uz_number(n % 100), format!("o{n}"));
                let reply = apis[n as usize % 2]
                    .post(
                        "/v1/phone/send-otp",
                        &key,
                        serde_json::json!({
                            "phone": phone,
                            "applicant_id": applicant,
                            "client_ip": format!("10.0.{}.{}", n / 200, n % 200),
                        }),
                    )
                    .await;
                match reply.status {
                    200 => {
                        acknowledged.fetch_add(1, Ordering::SeqCst);
                    }
                    // A client backs off before it tries again.
                    _ => {
                        refusals[n as usize % 2].fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await
                    }
                }
                answers.push((phone, applicant, reply, n as usize % 2));
                n += 1;
            }
            answers
        })
    };
    let acknowledged_at_least = |count: usize| {
        let acknowledged = Arc::clone(&acknowledged);
        move || {
            let reached = acknowledged.load(Ordering::SeqCst) >= count;
            async move { reached }
        }
    };
    eventually("sends before the outage", acknowledged_at_least(20)).await;

    // The database goes away: requests answer 503 with the JSON error, and so does
    // /readyz, on every replica.
    {
        let cluster = Arc::clone(&cluster);
        tokio::task::spawn_blocking(move || cluster.stop())
            .await
            .expect("stop");
    }
    for replica in replicas {
        let ready = replica
            .raw(reqwest::Method::GET, "/readyz", None, None, &[])
            .await;
        assert_eq!(ready.status, 503, "{}", ready.text);
        assert_eq!(
            ready.body["error"]["code"], "store_unavailable",
            "{}",
            ready.text
        );
        assert_eq!(ready.headers["retry-after"], "1");
    }
    let during = acknowledged.load(Ordering::SeqCst);
    eventually("both replicas to refuse a send", || {
        let refusals = Arc::clone(&refusals);
        async move {
            refusals
                .iter()
                .all(|refused| refused.load(Ordering::SeqCst) > 0)
        }
    })
    .await;

    // It comes back: every replica recovers by itself.
    {
        let cluster = Arc::clone(&cluster);
        tokio::task::spawn_blocking(move || cluster.start_again())
            .await
            .expect("start again");
    }
    for replica in replicas {
        eventually("readiness after the restart", || async {
            replica
                .raw(reqwest::Method::GET, "/readyz", None, None, &[])
                .await
                .status
                == 200
        })
        .await;
    }
    eventually("sends after the outage", acknowledged_at_least(during + 10)).await;
    running.store(false, Ordering::SeqCst);
    let answers = load.await.expect("the load");

    // Every answer was a success or a clean 503; some were 503s.
    let statuses: std::collections::BTreeSet<u16> = answers
        .iter()
        .map(|(_, _, reply, _)| reply.status)
        .collect();
    assert!(
        statuses.iter().all(|status| [200, 503].contains(status)),
        "{statuses:?}"
    );
    let refused: Vec<_> = answers
        .iter()
        .filter(|(_, _, reply, _)| reply.status == 503)
        .collect();
    assert!(!refused.is_empty(), "the outage was never seen");
    let refused_by: std::collections::BTreeSet<usize> =
        refused.iter().map(|(_, _, _, by)| *by).collect();
    assert_eq!(refused_by.len(), 2, "both replicas saw the outage");
    for (_, _, reply, _) in &refused {
        assert_eq!(
            reply.body["error"]["code"], "store_unavailable",
            "{}",
            reply.text
        );
    }
    // Nothing acknowledged is lost: every acknowledged send's verification is there,
    // read through the replica that did not take the send.
    for (_, _, reply, by) in answers
        .iter()
        .filter(|(_, _, reply, _)| reply.status == 200)
    {
        let id = reply.body["verification_id"].as_str().expect("an id");
        replicas[1 - by]
            .get(&format!("/v1/verifications/{id}"), &tenant.key)
            .await
            .expect(200);
    }
    // A send refused during the outage goes through when tried again, and its code
    // verifies on the other replica: it left nothing half-written in the way.
    let (phone, applicant, _, _) = refused[0];
    // The replicas' clocks started apart, and the outbox lists by time: the retry is
    // made a minute later than anything else, so its message is listed first.
    server.advance(chrono::Duration::minutes(1));
    let again = server.send(&tenant, phone, applicant).await;
    assert_eq!(again["status"], "pending", "{again}");
    let newest = server.outbox(&tenant, phone).await[0].clone();
    assert_eq!(newest["verification_id"], again["verification_id"]);
    let code = newest["code"].as_str().expect("a code").to_owned();
    let checked = other.verify(&tenant, phone, applicant, &code).await;
    assert_eq!(checked.expect(200)["verification_status"], "verified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
async fn a_replica_killed_mid_load_loses_nothing_acknowledged_and_the_other_carries_on() {
    use crate::crash::{check_acknowledged, send_verify_loop, Binary};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    // Two `dialgate serve` processes on one database.
    let url = database().await;
    let mut doomed = Binary::start_on_postgres(&url).await;
    let survivor = Binary::start_on_postgres(&url).await;
    let tenant = doomed.api.create_tenant(OPERATOR_KEY, "fleet").await;
    let generous = serde_json::json!({"per_minute": 1_000_000, "burst": 100_000});
    let settings = doomed
        .api
        .settings(
            &tenant,
            serde_json::json!({
                "code_length": 8,
                "rate_limits": {
                    "send_otp": {"per_tenant": generous, "per_ip": generous},
                    "verify_otp": {"per_tenant": generous, "per_ip": generous},
                },
            }),
        )
        .await;
    eventually("the settings", || async {
        survivor
            .api
            .get("/v1/settings/phone-verification", &tenant.key)
            .await
            .body
            == settings
    })
    .await;

    // Every send is announced to a webhook receiver on loopback.
    let (hook, received) = receiver(std::time::Duration::ZERO).await;
    doomed
        .api
        .post(
            "/v1/webhooks",
            &tenant.key,
            serde_json::json!({"url": hook, "event_types": ["verification.sent"]}),
        )
        .await
        .expect(201);
    eventually("the subscription on the survivor", || async {
        survivor.api.get("/v1/webhooks", &tenant.key).await.body["webhooks"]
            .as_array()
            .is_some_and(|listed| listed.len() == 1)
    })
    .await;

    // Two clients on each replica send and verify codes in a loop.
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let workers: Vec<_> = (0..4u32)
        .map(|worker| {
            let api = if worker < 2 {
                &doomed.api
            } else {
                &survivor.api
            };
            tokio::spawn(send_verify_loop(
                api.clone(),
                tenant.clone(),
                worker,
                tx.clone(),
                Arc::clone(&stop),
            ))
        })
        .collect();
    drop(tx);
    for _ in 0..24 {
        rx.recv().await.expect("the loops stopped before the kill");
    }
    // Channel workflows whose next step (voice, a second later) is scheduled by the
    // replica about to die.
    let workflow = serde_json::json!([
        {"channel": "sms", "timeout_seconds": 1},
        {"channel": "voice"},
    ]);
    let mut pending = Vec::new();
    for n in 0..3 {
        let phone = uz_number(90 + n);
        doomed
            .api
            .post(
                "/v1/phone/send-otp",
                &tenant.key,
                serde_json::json!({"phone": phone, "applicant_id": "fallback", "workflow": workflow}),
            )
            .await
            .expect(200);
        pending.push(phone);
    }
    // SIGKILL one replica mid-load; the other's clients go on.
    doomed.child.kill().await.expect("SIGKILL a replica");
    for _ in 0..24 {
        rx.recv().await.expect("the survivor's loops stopped");
    }
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    for worker in workers {
        acked.extend(worker.await.expect("a client"));
    }
    let through_doomed = acked
        .iter()
        .filter(|ack| ack.phone.starts_with("+9989010") || ack.phone.starts_with("+9989011"))
        .count();
    assert!(
        through_doomed > 0,
        "nothing went through the killed replica"
    );

    // Everything acknowledged by either replica is there on the survivor, and the
    // codes of unfinished verifications still verify there.
    check_acknowledged(&survivor.api, &tenant, &acked).await;

    // The jobs the dead replica scheduled run on the survivor: each workflow's voice
    // step is sent, once.
    for phone in &pending {
        eventually_within("the voice step on the survivor", LEASE_AND_MORE, || async {
            voice_codes(&survivor.api, &tenant, phone).await >= 1
        })
        .await;
    }
    // Every acknowledged send's event reaches the receiver (the dead replica's queued
    // deliveries too, a delivery it was attempting once its lease is over).
    let wanted: std::collections::BTreeSet<String> = acked
        .iter()
        .map(|ack| ack.verification_id.clone())
        .collect();
    eventually_within(
        "every acknowledged send's webhook",
        LEASE_AND_MORE,
        || async {
            let got: std::collections::BTreeSet<String> = received
                .lock()
                .expect("bodies")
                .iter()
                .filter_map(|(_, body)| body["data"]["verification_id"].as_str().map(str::to_owned))
                .collect();
            wanted.is_subset(&got)
        },
    )
    .await;
    for phone in &pending {
        assert_eq!(
            voice_codes(&survivor.api, &tenant, phone).await,
            1,
            "{phone}"
        );
    }
}

/// Longer than a job's or a delivery's lease (60 s), so work the dead replica had
/// claimed is taken over within it.
const LEASE_AND_MORE: std::time::Duration = std::time::Duration::from_secs(90);

/// Codes sent by voice to `phone`, as the dev outbox shows them.
async fn voice_codes(api: &crate::support::Api, tenant: &Tenant, phone: &str) -> usize {
    let path = format!("/v1/dev/outbox?phone={}", phone.replace('+', "%2B"));
    api.get(&path, &tenant.key).await.body["messages"]
        .as_array()
        .map_or(0, |messages| {
            messages
                .iter()
                .filter(|message| message["channel"] == "voice")
                .count()
        })
}

/// Flushes `server`'s SMS-pumping counts now (as its background task does every
/// 250 ms): its unflushed counts go into the store and what others flushed is read.
async fn flush_pumping(server: &TestServer) {
    let engine = std::sync::Arc::clone(server.engine());
    tokio::task::spawn_blocking(move || engine.flush_pumping())
        .await
        .expect("flush task")
        .expect("flushed");
}

#[tokio::test]
#[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
async fn the_sms_pumping_detector_counts_across_replicas_and_a_block_holds_on_each() {
    use crate::pumping::{run, scattered};
    let url = database().await;
    let (a, b) = tokio::join!(replica(&url), replica(&url));
    let tenant = a.tenant("pumped").await;
    let send = |server: &TestServer, phone: String| {
        let body = serde_json::json!({"phone": phone, "applicant_id": "a"});
        let api = server.api.clone();
        let tenant = tenant.clone();
        async move { api.send_otp(&tenant, body).await.expect(200).clone() }
    };
    // A run of neighbouring numbers split between the replicas: four through a, then
    // four through b, each goes out.
    for i in 0..4 {
        assert_eq!(send(&a, run(i)).await["status"], "pending");
    }
    flush_pumping(&a).await;
    for i in 4..8 {
        assert_eq!(send(&b, run(i)).await["status"], "pending");
    }
    // The ninth has eight neighbours only if b counted a's four too.
    let ninth = send(&b, run(8)).await;
    assert_eq!(ninth["status"], "declined", "{ninth}");
    assert!(risks(&ninth["warnings"]).contains(&"SMS_PUMPING_SUSPECTED".to_owned()));

    // a, which had the tenant's blocks cached (none), learns of the block through the
    // change log and refuses the prefix too.
    let mut next = 0;
    eventually("a refuses the blocked prefix", || {
        next += 1;
        let sent = send(&a, scattered(next));
        async move { sent.await["status"] == "declined" }
    })
    .await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
async fn no_file_of_the_cluster_holds_a_number_the_server_stored() {
    // A cluster of this test's own, so its files hold only this test's data.
    let (cluster, url) = tokio::task::spawn_blocking(|| {
        let cluster = TestCluster::private();
        let url = cluster.database();
        (cluster, url)
    })
    .await
    .expect("a cluster");
    let server = replica(&url).await;
    let tenant = server.tenant("Tenant Name Stored In Clear").await;
    let number = "+447911236002";
    let verified = server
        .send_and_verify(&tenant, number, "applicant-in-clear")
        .await;
    server
        .post(
            "/v1/blocklist",
            &tenant.key,
            serde_json::json!({"phone": number}),
        )
        .await
        .expect(201);
    let id = verified["verification_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    assert!(server
        .report(&tenant, &id)
        .await
        .to_string()
        .contains(number));
    server.stop().await;
    // A fast shutdown checkpoints: every page is in the tables' files, and every
    // change in the write-ahead log.
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop();
        cluster
    })
    .await
    .expect("stopped");
    let dir = cluster.data_dir().to_path_buf();
    assert!(!files_holding(&dir, b"Tenant Name Stored In Clear").is_empty());
    for trace in [&number.as_bytes()[1..], b"applicant-in-clear"] {
        assert_eq!(
            files_holding(&dir, trace),
            Vec::<std::path::PathBuf>::new(),
            "{}",
            String::from_utf8_lossy(trace)
        );
    }
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .expect("removed");
}
