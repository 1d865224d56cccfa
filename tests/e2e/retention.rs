//! Retention and erasure end to end: `DELETE /v1/verifications/{id}` leaves no record
//! in the store that names the number (reports, index entries, messages, dev-outbox
//! copies, webhook deliveries, the first verifier's record, cases) while analytics'
//! counts stay; another tenant cannot erase it; and the purge removes what the
//! tenant's retention settings no longer keep, each kind after its own period.

use serde_json::{json, Value};

use crate::support::*;

/// Stored records (tree and key) whose key or content names `needle`.
fn records_naming(server: &TestServer, needle: &str) -> Vec<String> {
    let db = &server.engine().db;
    let mut found = Vec::new();
    for (name, _) in server.stored_records() {
        let (tree_name, key) = name.split_once('/').expect("tree/key");
        let tree = dialgate::store::Tree::ALL
            .into_iter()
            .find(|tree| tree.name() == tree_name)
            .expect("a tree");
        let content = db
            .get::<Value>(tree, key.as_bytes())
            .ok()
            .flatten()
            .map(|value| value.to_string())
            .unwrap_or_else(|| {
                let raw = db
                    .get_raw(tree, key.as_bytes())
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                String::from_utf8_lossy(&raw).into_owned()
            });
        if key.contains(needle) || content.contains(needle) {
            found.push(name);
        }
    }
    found
}

async fn subscribe_everything(server: &TestServer, tenant: &Tenant) {
    // A receiver that is never there: deliveries stay in the log, pending or failed.
    server
        .post(
            "/v1/webhooks",
            &tenant.key,
            json!({"url": "http://127.0.0.1:9/hook", "event_types": ["*"]}),
        )
        .await
        .expect(201);
}

async fn deliveries_about(server: &TestServer, tenant: &Tenant, id: &str) -> usize {
    let hooks = server
        .get("/v1/webhooks", &tenant.key)
        .await
        .expect(200)
        .clone();
    let mut count = 0;
    for hook in hooks["webhooks"].as_array().expect("webhooks") {
        let path = format!(
            "/v1/webhooks/{}/deliveries?limit=200",
            hook["id"].as_str().expect("a string")
        );
        let log = server.get(&path, &tenant.key).await.expect(200).clone();
        count += log["deliveries"]
            .as_array()
            .expect("deliveries")
            .iter()
            .filter(|delivery| delivery["payload"].to_string().contains(id))
            .count();
    }
    count
}

#[tokio::test]
async fn erasing_a_verification_leaves_no_record_naming_its_number() {
    let server = TestServer::start().await;
    let tenant = server.tenant("erasing").await;
    let other = server.tenant("other").await;
    subscribe_everything(&server, &tenant).await;
    let (gone, kept) = ("+447911234001", "+447911234977");
    let erased = server.send_and_verify(&tenant, gone, "erase-me").await;
    let id = erased["verification_id"]
        .as_str()
        .expect("a string")
        .to_owned();
    let messages = server.outbox(&tenant, gone).await;
    let message_id = messages[0]["id"].as_str().expect("a string");
    server
        .post(
            &format!("/v1/dev/outbox/{message_id}/delivery"),
            &tenant.key,
            json!({"status": "delivered"}),
        )
        .await
        .expect(200);
    let survivor = server.send_and_verify(&tenant, kept, "keep-me").await;
    assert!(!records_naming(&server, gone).is_empty());
    assert!(deliveries_about(&server, &tenant, &id).await > 0);

    // Another tenant's erase is a 404 and changes nothing.
    server
        .delete(&format!("/v1/verifications/{id}"), &other.key)
        .await
        .error(404, "not_found");
    server.report(&tenant, &id).await;

    let reply = server
        .delete(&format!("/v1/verifications/{id}"), &tenant.key)
        .await;
    assert_eq!(reply.status, 204, "{}", reply.body);
    server
        .get(&format!("/v1/verifications/{id}"), &tenant.key)
        .await
        .error(404, "not_found");
    assert_eq!(records_naming(&server, gone), Vec::<String>::new());
    assert_eq!(records_naming(&server, "erase-me"), Vec::<String>::new());
    // Index entries name the number only hashed: they go because they name the id.
    assert_eq!(records_naming(&server, &id), Vec::<String>::new());
    assert_eq!(deliveries_about(&server, &tenant, &id).await, 0);
    assert!(server.outbox(&tenant, gone).await.is_empty());
    // The rest stays: the other verification, and the counts.
    let id_kept = survivor["verification_id"].as_str().expect("a string");
    assert!(server
        .report(&tenant, id_kept)
        .await
        .to_string()
        .contains(kept));
    assert!(!records_naming(&server, kept).is_empty());
    let totals = server
        .get("/v1/analytics/conversion", &tenant.key)
        .await
        .expect(200)["totals"][0]
        .clone();
    assert_eq!(
        (totals["started"].as_u64(), totals["verified"].as_u64()),
        (Some(2), Some(2))
    );
    // The number can start afresh, as a number never seen.
    server.send_and_verify(&tenant, gone, "erase-me").await;
    server
        .delete(&format!("/v1/verifications/{id}"), &tenant.key)
        .await
        .error(404, "not_found");

    // Erasures in a loop are bounded per tenant (misses count too, and two were made
    // above); another tenant's are not affected.
    for n in 3..=120 {
        let path = format!("/v1/verifications/0190a000-0000-7000-8000-{n:012}");
        server
            .delete(&path, &tenant.key)
            .await
            .error(404, "not_found");
    }
    let limited = server
        .delete(&format!("/v1/verifications/{id}"), &tenant.key)
        .await;
    limited.error(429, "rate_limited");
    assert!(limited.header("retry-after").is_some());
    server
        .delete(&format!("/v1/verifications/{id}"), &other.key)
        .await
        .error(404, "not_found");
}

/// Dev-outbox messages and index entries that do not match: messages without an
/// entry of their number, and entries without their message.
fn outbox_index_mismatches(server: &TestServer) -> Vec<String> {
    use dialgate::store::Tree;
    let db = &server.engine().db;
    let messages = db.scan_raw(Tree::Outbox, b"", usize::MAX).expect("outbox");
    let entries = db
        .scan_raw(Tree::OutboxNumbers, b"", usize::MAX)
        .expect("index");
    let mut unmatched: std::collections::BTreeSet<Vec<u8>> =
        entries.into_iter().map(|(entry, _)| entry).collect();
    let mut mismatches = Vec::new();
    for (stored, _) in messages {
        let message: dialgate::sending::OutboxMessage = db
            .get(Tree::Outbox, &stored)
            .expect("read")
            .expect("a message");
        let tenant = String::from_utf8_lossy(&stored);
        let tenant = tenant.split('/').next().expect("a tenant");
        let entry = dialgate::sending::outbox_number_key(db, tenant, &message.phone, &stored)
            .expect("an entry key");
        if !unmatched.remove(&entry) {
            mismatches.push(format!("message {} has no index entry", message.id));
        }
    }
    mismatches.extend(
        unmatched
            .into_iter()
            .map(|entry| format!("entry {} has no message", String::from_utf8_lossy(&entry))),
    );
    mismatches
}

#[tokio::test]
async fn a_numbers_outbox_copies_are_read_and_erased_through_its_index() {
    let server = TestServer::start().await;
    let tenant = server.tenant("outbox-index").await;
    let other = server.tenant("outbox-index-other").await;
    let number = "+447911236001";
    let busy = |n: usize| format!("+4474001230{n:02}");
    let first = server.send(&tenant, number, "first").await;
    // Many messages to other numbers, and one to the same number of another tenant.
    for n in 0..12 {
        server
            .send_otp(
                &tenant,
                json!({"phone": busy(n), "applicant_id": format!("busy-{n}"), "client_ip": format!("198.51.100.{}", n + 1)}),
            )
            .await
            .expect(200);
    }
    server.send(&other, number, "first").await;
    let second = server.send(&tenant, number, "second").await;

    // The number's messages, newest first, and only the tenant's.
    let listed = server.outbox(&tenant, number).await;
    let ids: Vec<&str> = listed
        .iter()
        .map(|message| message["verification_id"].as_str().expect("an id"))
        .collect();
    assert_eq!(
        ids,
        [
            second["verification_id"].as_str().expect("an id"),
            first["verification_id"].as_str().expect("an id"),
        ]
    );
    assert_eq!(server.outbox(&tenant, &busy(7)).await.len(), 1);
    let page = server
        .get(
            &format!("/v1/dev/outbox?phone={}&limit=1", encode(number)),
            &tenant.key,
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(page["messages"][0]["id"], listed[0]["id"]);
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(outbox_index_mismatches(&server), Vec::<String>::new());

    // Erasing the first verification removes its copy and entry, and nothing else.
    let first_id = first["verification_id"].as_str().expect("an id");
    let erased = server
        .delete(&format!("/v1/verifications/{first_id}"), &tenant.key)
        .await;
    assert_eq!(erased.status, 204, "{}", erased.body);
    let left = server.outbox(&tenant, number).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["verification_id"], second["verification_id"]);
    assert_eq!(server.outbox(&other, number).await.len(), 1);
    assert_eq!(server.outbox(&tenant, &busy(7)).await.len(), 1);
    assert_eq!(outbox_index_mismatches(&server), Vec::<String>::new());
}

/// The keys of the tree of idempotent answers' index entries.
fn answer_index(server: &TestServer) -> Vec<String> {
    server
        .engine()
        .db
        .scan_raw(
            dialgate::store::Tree::IdempotencyVerifications,
            b"",
            usize::MAX,
        )
        .expect("index")
        .into_iter()
        .map(|(entry, _)| String::from_utf8_lossy(&entry).into_owned())
        .collect()
}

#[tokio::test]
async fn idempotent_answers_are_erased_with_their_verification_and_purged_with_their_entries() {
    let server = TestServer::start().await;
    let tenant = server.tenant("answers").await;
    let send = |phone: &'static str, idem: &'static str| {
        let body =
            serde_json::to_vec(&json!({"phone": phone, "applicant_id": idem})).expect("json");
        let server = &server;
        let key = tenant.key.clone();
        async move {
            server
                .raw(
                    reqwest::Method::POST,
                    "/v1/phone/send-otp",
                    Some(&key),
                    Some(("application/json", body)),
                    &[("Idempotency-Key", idem)],
                )
                .await
        }
    };
    let (gone, kept) = ("+447911238001", "+447911238977");
    let first = send(gone, "erase-answer").await;
    let id = first.expect(200)["verification_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let other = send(kept, "keep-answer").await;
    let kept_id = other.expect(200)["verification_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    // A retry replays the answer.
    assert_eq!(send(gone, "erase-answer").await.text, first.text);
    assert_eq!(answer_index(&server).len(), 2);

    let erased = server
        .delete(&format!("/v1/verifications/{id}"), &tenant.key)
        .await;
    assert_eq!(erased.status, 204, "{}", erased.body);
    assert_eq!(records_naming(&server, &id), Vec::<String>::new());
    assert_eq!(answer_index(&server).len(), 1);
    assert!(answer_index(&server)[0].contains(&kept_id));
    // The other answer still replays; the erased one is gone, so the key runs afresh.
    assert_eq!(send(kept, "keep-answer").await.text, other.text);
    let again = send(gone, "erase-answer").await;
    assert_ne!(
        again.expect(200)["verification_id"].as_str(),
        Some(id.as_str())
    );

    // Past the replay window the purge removes the answers and their entries.
    server.advance(chrono::Duration::hours(25));
    let purged = server.engine().purge_expired().expect("a purge");
    assert_eq!(purged.idempotent_answers, 2, "{purged:?}");
    assert_eq!(answer_index(&server), Vec::<String>::new());
}

#[tokio::test]
async fn the_purge_removes_each_kind_after_its_own_period() {
    let server = TestServer::start().await;
    let tenant = server.tenant("purging").await;
    subscribe_everything(&server, &tenant).await;
    server
        .settings(
            &tenant,
            json!({"retention": {"verifications_days": 3, "messages_days": 1, "events_days": 2, "webhook_deliveries_days": 1}}),
        )
        .await;
    let (old, new) = ("+447911235001", "+447911235977");
    let first = server.send_and_verify(&tenant, old, "old").await;
    let old_id = first["verification_id"]
        .as_str()
        .expect("a string")
        .to_owned();

    // A day and a half later: the old code's message and deliveries expired.
    server.advance(chrono::Duration::hours(36));
    let second = server.send_and_verify(&tenant, new, "new").await;
    let new_id = second["verification_id"]
        .as_str()
        .expect("a string")
        .to_owned();
    let purged = server.engine().purge_expired().expect("a purge");
    assert_eq!(purged.verifications, 0);
    assert!(purged.outbox_messages >= 1, "{purged:?}");
    assert!(purged.webhook_deliveries >= 1, "{purged:?}");
    assert!(server.outbox(&tenant, old).await.is_empty());
    assert_eq!(server.outbox(&tenant, new).await.len(), 1);
    // The purged messages' index entries went with them.
    assert_eq!(outbox_index_mismatches(&server), Vec::<String>::new());
    assert_eq!(deliveries_about(&server, &tenant, &old_id).await, 0);
    assert!(deliveries_about(&server, &tenant, &new_id).await > 0);
    let events = |id: String| {
        let server = &server;
        let key = tenant.key.clone();
        async move {
            let trail = server
                .get(&format!("/v1/verifications/{id}/events"), &key)
                .await
                .expect(200)
                .clone();
            trail["events"].as_array().map_or(0, Vec::len)
        }
    };
    assert!(events(old_id.clone()).await > 0);

    // Past two days the old trail goes; past three, the old verification.
    server.advance(chrono::Duration::hours(14));
    let purged = server.engine().purge_expired().expect("a purge");
    assert_eq!(purged.trails, 1, "{purged:?}");
    assert_eq!(events(old_id.clone()).await, 0);
    assert!(events(new_id.clone()).await > 0);
    server.report(&tenant, &old_id).await;
    server.advance(chrono::Duration::hours(24));
    let purged = server.engine().purge_expired().expect("a purge");
    assert_eq!(purged.verifications, 1, "{purged:?}");
    server
        .get(&format!("/v1/verifications/{old_id}"), &tenant.key)
        .await
        .error(404, "not_found");
    assert_eq!(records_naming(&server, old), Vec::<String>::new());
    server.report(&tenant, &new_id).await;
    // Aggregates stay.
    let totals = server
        .get("/v1/analytics/conversion", &tenant.key)
        .await
        .expect(200)["totals"][0]
        .clone();
    assert_eq!(totals["verified"], 2);
    // A second pass finds nothing left to do.
    let again = server.engine().purge_expired().expect("a purge");
    assert_eq!(
        again.verifications + again.trails + again.messages,
        0,
        "{again:?}"
    );

    // Bad settings are named.
    for (patch, field) in [
        (
            json!({"retention": {"verifications_days": 0}}),
            "retention.verifications_days",
        ),
        (
            json!({"retention": {"verifications_days": 5000}}),
            "retention.verifications_days",
        ),
        (
            json!({"retention": {"verifications_days": 30, "messages_days": 60}}),
            "retention.messages_days",
        ),
    ] {
        server
            .put("/v1/settings/phone-verification", &tenant.key, patch)
            .await
            .invalid_field(field);
    }
}

/// What a copy of the store's files could reveal of one end user: the number, as its
/// digits, and the applicant id and client IP the app gave.
fn personal_traces(number: &str) -> [Vec<u8>; 3] {
    [
        number.trim_start_matches('+').as_bytes().to_vec(),
        b"applicant-in-clear".to_vec(),
        b"198.51.100.77".to_vec(),
    ]
}

/// Traffic that stores a number in every kind of record that can hold it: a send with
/// an idempotency key and a client IP, a wrong code (the guess budget), the right code
/// (the first verifier), a delivery receipt, webhook deliveries, a lookup and a
/// blocklist entry. Returns the verification's id.
async fn personal_traffic(server: &TestServer, tenant: &Tenant, number: &str) -> String {
    subscribe_everything(server, tenant).await;
    let sent = server
        .raw(
            reqwest::Method::POST,
            "/v1/phone/send-otp",
            Some(&tenant.key),
            Some((
                "application/json",
                serde_json::to_vec(&json!({
                    "phone": number,
                    "applicant_id": "applicant-in-clear",
                    "client_ip": "198.51.100.77",
                }))
                .expect("json"),
            )),
            &[("Idempotency-Key", "idem-personal")],
        )
        .await;
    let id = sent.expect(200)["verification_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let code = server.latest_code(tenant, number).await;
    server
        .verify(tenant, number, "applicant-in-clear", &wrong_code(&code))
        .await;
    server
        .verify(tenant, number, "applicant-in-clear", &code)
        .await
        .expect(200);
    let message = server.outbox(tenant, number).await[0]["id"]
        .as_str()
        .expect("an id")
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
        .post("/v1/phone/lookup", &tenant.key, json!({"phone": number}))
        .await
        .expect(200);
    server
        .post("/v1/blocklist", &tenant.key, json!({"phone": number}))
        .await;
    id
}

#[tokio::test]
async fn no_file_of_the_embedded_store_holds_a_number_before_or_after_its_erasure() {
    let server = TestServer::start().await;
    if server.on_postgres() {
        // The data directory is unused: `postgres::no_file_of_the_cluster_holds…`
        // searches the cluster's files instead.
        return;
    }
    let tenant = server.tenant("Tenant Name Stored In Clear").await;
    let number = "+447911236001";
    let id = personal_traffic(&server, &tenant, number).await;
    // The records exist and read back whole through the API.
    assert!(server
        .report(&tenant, &id)
        .await
        .to_string()
        .contains(number));
    let server = server.restart().await;
    let dir = server.data_dir();
    // The search works: what is not personal (the tenant's name) is found in the files.
    assert!(!files_holding(&dir, b"Tenant Name Stored In Clear").is_empty());
    for trace in personal_traces(number) {
        assert_eq!(
            files_holding(&dir, &trace),
            Vec::<std::path::PathBuf>::new(),
            "{}",
            String::from_utf8_lossy(&trace)
        );
    }

    // Erased and purged: the records are gone, and the files still hold no trace.
    server
        .delete(&format!("/v1/verifications/{id}"), &tenant.key)
        .await
        .expect(204);
    server
        .delete(&format!("/v1/blocklist/{}", encode(number)), &tenant.key)
        .await;
    // Another idempotent answer, left to expire: the purge sweeps it.
    server
        .raw(
            reqwest::Method::POST,
            "/v1/phone/send-otp",
            Some(&tenant.key),
            Some((
                "application/json",
                serde_json::to_vec(&json!({"phone": "+447911236003"})).expect("json"),
            )),
            &[("Idempotency-Key", "idem-expiring")],
        )
        .await
        .expect(200);
    server.advance(chrono::Duration::days(400));
    let purged = server.engine().purge_expired().expect("a purge");
    assert_eq!(purged.idempotent_answers, 1, "{purged:?}");
    assert_eq!(records_naming(&server, &number[1..]), Vec::<String>::new());
    let server = server.restart().await;
    let dir = server.data_dir();
    for trace in personal_traces(number) {
        assert_eq!(
            files_holding(&dir, &trace),
            Vec::<std::path::PathBuf>::new()
        );
    }
}
