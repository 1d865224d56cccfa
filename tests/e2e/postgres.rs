//! The PostgreSQL store end to end: servers on a throwaway PostgreSQL database (a
//! cluster the tests start on loopback) run whole verifications, and two replicas on
//! one database share tenants, keys and verifications: a code sent through one is
//! checked through the other, and of two concurrent checks of one code on the two
//! replicas exactly one succeeds.

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

/// Waits (at most 10 s, far above the change log's poll) until `check` holds; how
/// long it took.
async fn eventually<F, Fut>(what: &str, mut check: F) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{what} never reached the other replica"
        );
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
}
