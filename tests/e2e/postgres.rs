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
