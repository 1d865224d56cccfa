//! The store contract: every backend must pass these.

use super::*;

fn sled_db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open_sled(dir.path()).expect("open sled");
    (dir, db)
}

/// A fresh database on the shared test PostgreSQL cluster.
fn postgres_db() -> Db {
    let url = testing::TestCluster::shared().database();
    Db::open_postgres(&url, true).expect("open postgres")
}

/// Runs a contract check against a sled store and, as an ignored test (`.ci/test`
/// installs PostgreSQL and runs it), against a PostgreSQL database.
macro_rules! contract {
    ($name:ident, $check:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn sled() {
                let (_dir, db) = sled_db();
                ($check)(&db);
            }

            #[test]
            #[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
            fn postgres() {
                ($check)(&postgres_db());
            }
        }
    };
}

contract!(put_get_remove_round_trip, |db: &Db| {
    db.put(Tree::Tenants, b"t1", &"acme").expect("put");
    assert_eq!(
        db.get::<String>(Tree::Tenants, b"t1").expect("get"),
        Some("acme".into())
    );
    db.put(Tree::Tenants, b"t1", &"acme 2").expect("overwrite");
    assert_eq!(
        db.get::<String>(Tree::Tenants, b"t1").expect("get"),
        Some("acme 2".into())
    );
    assert!(db.remove(Tree::Tenants, b"t1").expect("remove"));
    assert!(!db.remove(Tree::Tenants, b"t1").expect("remove again"));
    assert_eq!(db.get::<String>(Tree::Tenants, b"t1").expect("get"), None);
});

contract!(trees_are_separate, |db: &Db| {
    db.put(Tree::Tenants, b"k", &1).expect("put");
    assert_eq!(db.get::<i32>(Tree::Settings, b"k").expect("get"), None);
    // Every tree can be written and read.
    for tree in Tree::ALL {
        db.put_raw(tree, b"every", tree.name().as_bytes())
            .expect("put");
    }
    for tree in Tree::ALL {
        assert_eq!(
            db.get_raw(tree, b"every").expect("get").as_deref(),
            Some(tree.name().as_bytes())
        );
    }
});

contract!(insert_new_refuses_to_overwrite, |db: &Db| {
    assert!(db.insert_new(Tree::Meta, b"k", &1).expect("first"));
    assert!(!db.insert_new(Tree::Meta, b"k", &2).expect("second"));
    assert_eq!(db.get::<i32>(Tree::Meta, b"k").expect("get"), Some(1));
});

contract!(
    compare_and_swap_swaps_only_from_the_expected_value,
    |db: &Db| {
        let store = &db.store;
        assert!(store
            .compare_and_swap(Tree::Meta, b"k", None, None)
            .expect("absent stays absent"));
        assert!(store
            .compare_and_swap(Tree::Meta, b"k", None, Some(b"1"))
            .expect("create"));
        assert!(!store
            .compare_and_swap(Tree::Meta, b"k", None, None)
            .expect("present is not absent"));
        assert!(!store
            .compare_and_swap(Tree::Meta, b"k", Some(b"0"), Some(b"2"))
            .expect("wrong expectation"));
        assert!(store
            .compare_and_swap(Tree::Meta, b"k", Some(b"1"), Some(b"2"))
            .expect("swap"));
        assert!(!store
            .compare_and_swap(Tree::Meta, b"k", Some(b"1"), None)
            .expect("stale removal"));
        assert!(store
            .compare_and_swap(Tree::Meta, b"k", Some(b"2"), None)
            .expect("removal"));
        assert_eq!(store.get(Tree::Meta, b"k").expect("get"), None);
    }
);

contract!(
    scan_is_bounded_by_prefix_and_limit_and_can_reverse,
    |db: &Db| {
        for (k, v) in [("a/1", 1), ("a/2", 2), ("a/3", 3), ("a0", 7), ("b/1", 9)] {
            db.put(Tree::Outbox, k.as_bytes(), &v).expect("put");
        }
        assert_eq!(
            db.scan::<i32>(Tree::Outbox, b"a/", 10, false)
                .expect("scan"),
            [1, 2, 3]
        );
        assert_eq!(
            db.scan::<i32>(Tree::Outbox, b"a/", 2, true).expect("scan"),
            [3, 2]
        );
        assert_eq!(
            db.scan::<i32>(Tree::Outbox, b"", usize::MAX, false)
                .expect("scan all"),
            [1, 2, 3, 7, 9]
        );
        // Keys are bytes: a prefix ending in 0xff has no successor of its length.
        db.put_raw(Tree::Meta, b"\xff\xff1", b"x").expect("put");
        db.put_raw(Tree::Meta, b"\xff\xff\xff", b"y").expect("put");
        db.put_raw(Tree::Meta, b"\xfe", b"z").expect("put");
        let high = db
            .store
            .scan_prefix(Tree::Meta, b"\xff\xff", 10, true)
            .expect("scan");
        assert_eq!(
            high.iter().map(|(_, v)| v.as_slice()).collect::<Vec<_>>(),
            [b"y".as_slice(), b"x".as_slice()]
        );
        db.remove_prefix(Tree::Outbox, b"a").expect("remove prefix");
        assert_eq!(
            db.scan::<i32>(Tree::Outbox, b"", 10, false).expect("scan"),
            [9]
        );
    }
);

contract!(scan_from_reads_a_tree_in_chunks, |db: &Db| {
    for n in 0..5u8 {
        db.put_raw(Tree::RateLimits, &[b'k', n], &[n]).expect("put");
    }
    db.put_raw(Tree::Meta, b"k", b"other tree").expect("put");
    let first = db.scan_from_raw(Tree::RateLimits, b"", 2).expect("scan");
    assert_eq!(first.len(), 2);
    let mut next = first.last().expect("a key").0.clone();
    next.push(0);
    let rest = db.scan_from_raw(Tree::RateLimits, &next, 10).expect("scan");
    let values: Vec<u8> = first.iter().chain(&rest).map(|(_, v)| v[0]).collect();
    assert_eq!(values, [0, 1, 2, 3, 4]);
});

contract!(scan_range_reads_a_range_either_way, |db: &Db| {
    for n in 0..6u8 {
        db.put(Tree::Analytics, &[b'r', n], &u32::from(n))
            .expect("put");
    }
    db.put(Tree::Analytics, b"s", &99u32).expect("put");
    let forward: Vec<u32> = db
        .scan_range::<u32>(Tree::Analytics, &[b'r', 1], &[b'r', 4], 10, false)
        .expect("scan")
        .into_iter()
        .map(|(_, value)| value)
        .collect();
    assert_eq!(forward, [1, 2, 3]);
    let back: Vec<u32> = db
        .scan_range::<u32>(Tree::Analytics, b"r", b"t", 3, true)
        .expect("scan")
        .into_iter()
        .map(|(_, value)| value)
        .collect();
    assert_eq!(back, [99, 5, 4]);
    assert!(db
        .scan_range::<u32>(Tree::Analytics, b"t", b"r", 3, false)
        .expect("an empty range")
        .is_empty());
});

contract!(concurrent_updates_lose_nothing, |db: &Db| {
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..100 {
                    db.update::<u32, StoreError, ()>(Tree::Meta, b"counter", |n| {
                        Ok((Some(n.unwrap_or(0) + 1), ()))
                    })
                    .expect("update");
                }
            });
        }
    });
    assert_eq!(
        db.get::<u32>(Tree::Meta, b"counter").expect("get"),
        Some(400)
    );
});

#[test]
#[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
fn replicas_on_one_database_share_atomic_updates() {
    // Two handles opened on one database, as two replicas open it: their updates of
    // one record serialise in the database, so a count of N is N across them.
    let url = testing::TestCluster::shared().database();
    let (first, second) = std::thread::scope(|scope| {
        let a = scope.spawn(|| Db::open_postgres(&url, true).expect("first replica"));
        let b = scope.spawn(|| Db::open_postgres(&url, true).expect("second replica"));
        (
            a.join().expect("first opened"),
            b.join().expect("second opened"),
        )
    });
    std::thread::scope(|scope| {
        for db in [&first, &second, &first, &second] {
            scope.spawn(move || {
                for _ in 0..100 {
                    db.update::<u32, StoreError, ()>(Tree::Meta, b"sends", |n| {
                        Ok((Some(n.unwrap_or(0) + 1), ()))
                    })
                    .expect("update");
                }
            });
        }
    });
    assert_eq!(
        first.get::<u32>(Tree::Meta, b"sends").expect("get"),
        Some(400)
    );
    // A record one replica writes is what the other reads.
    first
        .put(Tree::Settings, b"t", &"from the first")
        .expect("put");
    assert_eq!(
        second.get::<String>(Tree::Settings, b"t").expect("get"),
        Some("from the first".into())
    );
}

#[test]
#[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
fn an_unmigrated_database_is_refused_with_the_command_that_fixes_it() {
    let url = testing::TestCluster::shared().database();
    let err = Db::open_postgres(&url, false).expect_err("no schema yet");
    assert!(err.to_string().contains("dialgate migrate"), "{err}");
    Db::open_postgres(&url, true).expect("migrated");
    Db::open_postgres(&url, false).expect("the schema is there now");
}

#[test]
#[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
fn a_bad_postgres_url_is_a_clear_error() {
    let err = Db::open_postgres("postgres://[::1", true).expect_err("bad url");
    assert!(err.to_string().contains("PostgreSQL URL"), "{err}");
}

#[test]
fn corrupt_records_are_reported_not_panicked_on() {
    let (_dir, db) = sled_db();
    db.store
        .put(Tree::Meta, b"bad", b"{not json")
        .expect("raw put");
    let err = db.get::<u32>(Tree::Meta, b"bad").expect_err("corrupt");
    assert!(err.to_string().contains("corrupt"), "{err}");
}

#[tokio::test]
async fn synced_writes_survive_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let db = Db::open_sled(dir.path()).expect("open");
        db.put(Tree::Tenants, b"t", &"kept").expect("put");
        db.sync().await.expect("sync");
    }
    // The flush thread holds a handle until its channel closes; wait for sled's lock.
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok(db) = Db::open_sled(dir.path()) {
            reopened = Some(db);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let db = reopened.expect("reopen");
    assert_eq!(
        db.get::<String>(Tree::Tenants, b"t").expect("get"),
        Some("kept".into())
    );
}

contract!(a_batch_put_stores_every_pair_and_overwrites, |db: &Db| {
    let store = &db.store;
    store.put(Tree::Outbox, b"b", b"old").expect("put");
    let pairs: Vec<Pair> = (0u8..=255)
        .map(|n| (vec![b'a', n], vec![n; usize::from(n)]))
        .chain([(b"b".to_vec(), b"new".to_vec())])
        .collect();
    store.put_batch(Tree::Outbox, &pairs).expect("batch");
    store.put_batch(Tree::Outbox, &[]).expect("an empty batch");
    let stored = store.scan_from(Tree::Outbox, b"", 1_000).expect("scan");
    assert_eq!(stored, pairs);
});

#[test]
fn the_embedded_store_keeps_no_leases_of_its_own() {
    let (_dir, db) = sled_db();
    assert_eq!(
        db.claim_due(Tree::Jobs, b"~", 0, 1, 10).expect("claim"),
        None
    );
    assert_eq!(
        db.claim_keys(Tree::WebhookQueue, &[b"k".to_vec()], 0, 1)
            .expect("claim"),
        None
    );
    assert!(db.finish_claimed(Tree::Jobs, b"k", 1).is_err());
    assert!(db.move_claimed(Tree::WebhookQueue, b"k", b"l", 1).is_err());
}

#[test]
#[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
fn webhook_schedule_entries_are_claimed_moved_and_finished_under_their_lease() {
    let url = testing::TestCluster::shared().database();
    let first = Db::open_postgres(&url, true).expect("first replica");
    let second = Db::open_postgres(&url, true).expect("second replica");
    let entry = |n: u32| format!("{:020}/whd_{n:03}", 1_000 + n).into_bytes();
    for n in 0..6 {
        first
            .put_raw(Tree::WebhookQueue, &entry(n), b"{}")
            .expect("schedule");
    }
    let upto = format!("{:020}", 1_004).into_bytes();
    // The due head (entries 0 to 3) is claimed by one replica; the other finds nothing
    // due that is free, and its claim of named entries gets only the free ones.
    let claimed = first
        .claim_due(Tree::WebhookQueue, &upto, 2_000, 62_000, 100)
        .expect("claim")
        .expect("PostgreSQL keeps webhook leases");
    let keys: Vec<Vec<u8>> = claimed.into_iter().map(|(key, _)| key).collect();
    assert_eq!(keys, (0..4).map(entry).collect::<Vec<_>>());
    assert_eq!(
        second
            .claim_due(Tree::WebhookQueue, &upto, 2_000, 62_000, 100)
            .expect("claim"),
        Some(Vec::new())
    );
    let named = second
        .claim_keys(
            Tree::WebhookQueue,
            &[entry(1), entry(4), b"gone".to_vec()],
            2_000,
            62_001,
        )
        .expect("claim")
        .expect("leases");
    assert_eq!(
        named.into_iter().map(|(key, _)| key).collect::<Vec<_>>(),
        vec![entry(4)]
    );
    // A move under the claim's lease leaves the entry at its new key only, free; under
    // another lease it does nothing.
    let parked = b"parked/t/s/x".to_vec();
    assert!(!second
        .move_claimed(Tree::WebhookQueue, &entry(0), &parked, 62_001)
        .expect("move"));
    assert!(first
        .move_claimed(Tree::WebhookQueue, &entry(0), &parked, 62_000)
        .expect("move"));
    assert_eq!(
        first.get_raw(Tree::WebhookQueue, &entry(0)).expect("read"),
        None
    );
    let taken = second
        .claim_keys(
            Tree::WebhookQueue,
            std::slice::from_ref(&parked),
            2_000,
            62_001,
        )
        .expect("claim")
        .expect("leases");
    assert_eq!(taken.len(), 1, "the moved entry is free to claim");
    // An entry written anew is new work: the old claim cannot remove it.
    first
        .put_raw(Tree::WebhookQueue, &entry(1), b"{\"again\":1}")
        .expect("write anew");
    assert!(!first
        .finish_claimed(Tree::WebhookQueue, &entry(1), 62_000)
        .expect("finish"));
    assert!(first
        .finish_claimed(Tree::WebhookQueue, &entry(2), 62_000)
        .expect("finish"));
    // Once the leases end, what is left of the due head is claimed again.
    let again = second
        .claim_due(Tree::WebhookQueue, &upto, 62_000, 122_000, 100)
        .expect("claim")
        .expect("leases");
    assert_eq!(
        again.into_iter().map(|(key, _)| key).collect::<Vec<_>>(),
        vec![entry(1), entry(3)]
    );
}

#[test]
#[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
fn due_jobs_are_claimed_once_across_replicas_and_again_after_their_lease() {
    let url = testing::TestCluster::shared().database();
    let first = Db::open_postgres(&url, true).expect("first replica");
    let second = Db::open_postgres(&url, true).expect("second replica");
    // 200 due jobs (keys start with the due time) and one not due yet.
    let due: Vec<Vec<u8>> = (0..200)
        .map(|n| format!("{:020}/job{n:03}", 1_000 + n).into_bytes())
        .collect();
    for key in &due {
        first.put_raw(Tree::Jobs, key, b"{}").expect("schedule");
    }
    let later = format!("{:020}/later", 9_000).into_bytes();
    first.put_raw(Tree::Jobs, &later, b"{}").expect("schedule");
    let upto = format!("{:020}/~", 5_000).into_bytes();
    // Four workers on two replicas claim in batches until nothing is left.
    let claimed = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for db in [&first, &second, &first, &second] {
            let (claimed, upto) = (&claimed, &upto);
            scope.spawn(move || loop {
                let batch = db
                    .claim_due(Tree::Jobs, upto, 5_000, 65_000, 16)
                    .expect("claim")
                    .expect("PostgreSQL keeps job leases");
                if batch.is_empty() {
                    return;
                }
                assert!(
                    batch.windows(2).all(|pair| pair[0].0 < pair[1].0),
                    "in key order"
                );
                claimed
                    .lock()
                    .expect("lock")
                    .extend(batch.into_iter().map(|(key, _)| key));
            });
        }
    });
    let mut claimed = claimed.into_inner().expect("claims");
    claimed.sort();
    assert_eq!(
        claimed, due,
        "every due job claimed exactly once; the later one not"
    );
    // A claim's runner removes its job while its lease holds; an older lease does not.
    assert!(first
        .finish_claimed(Tree::Jobs, &due[0], 65_000)
        .expect("finish"));
    assert!(!second
        .finish_claimed(Tree::Jobs, &due[1], 64_999)
        .expect("finish with another lease"));
    // While leases hold, nothing is claimed; once they end, the rest is claimed again.
    let held = second.claim_due(Tree::Jobs, &upto, 64_999, 130_000, 500);
    assert_eq!(held.expect("claim"), Some(Vec::new()));
    let taken_over = second
        .claim_due(Tree::Jobs, &upto, 65_000, 130_000, 500)
        .expect("claim")
        .expect("leases");
    assert_eq!(
        taken_over.len(),
        199,
        "the unfinished jobs, after their lease"
    );
    assert!(!first
        .finish_claimed(Tree::Jobs, &due[1], 65_000)
        .expect("the first lease is over"));
    assert!(second
        .finish_claimed(Tree::Jobs, &due[1], 130_000)
        .expect("the new runner finishes"));
}

/// A certificate authority, and a certificate it signed for `localhost` (not for
/// 127.0.0.1) with its key: (authority, certificate, key), PEM.
fn test_certificates() -> (String, String, String) {
    let authority_key = rcgen::KeyPair::generate().expect("a key");
    let mut authority = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    authority.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let authority = authority
        .self_signed(&authority_key)
        .expect("the authority");
    let key = rcgen::KeyPair::generate().expect("a key");
    let server = rcgen::CertificateParams::new(vec!["localhost".into()])
        .expect("params")
        .signed_by(&key, &authority, &authority_key)
        .expect("the server's certificate");
    (authority.pem(), server.pem(), key.serialize_pem())
}

#[test]
#[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
fn a_database_asked_for_tls_is_reached_only_over_tls_to_a_verified_server() {
    let (authority, certificate, key) = test_certificates();
    let cluster = testing::TestCluster::private_with_tls(&certificate, &key);
    // The certificate names localhost, so the URL does.
    let url = cluster.database().replace("127.0.0.1", "localhost");
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &authority).expect("write the CA file");
    let trusting = |ca_file: Option<&std::path::Path>| PostgresOptions {
        ca_file: ca_file.map(std::path::Path::to_owned),
        timeout: std::time::Duration::from_secs(5),
        ..Default::default()
    };

    // The cluster refuses plain connections: without sslmode nothing is stored.
    let plain = Db::open_postgres_with(&url, true, trusting(Some(&ca_file)));
    assert!(plain.is_err(), "a plain connection was accepted");

    // With sslmode=require and the authority, the store works over TLS.
    let tls = format!("{url}?sslmode=require");
    let db = Db::open_postgres_with(&tls, true, trusting(Some(&ca_file))).expect("over TLS");
    db.put(Tree::Tenants, b"t1", &"over tls").expect("put");
    assert_eq!(
        db.get::<String>(Tree::Tenants, b"t1").expect("get"),
        Some("over tls".into())
    );
    // libpq's stricter modes are accepted, and mean the same here.
    let full = format!("{url}?sslmode=verify-full");
    Db::open_postgres_with(&full, false, trusting(Some(&ca_file))).expect("verify-full");

    // A server whose certificate does not chain to what is trusted is refused: here
    // the web's public roots, which never signed the test authority.
    let Err(untrusted) = Db::open_postgres_with(&tls, false, trusting(None)) else {
        panic!("an untrusted certificate was accepted")
    };
    assert!(untrusted.to_string().contains("certificate"), "{untrusted}");

    // So is one that does not name the host connected to (the same server, by its
    // address, which the certificate does not name).
    let by_address = tls.replace("localhost", "127.0.0.1");
    let Err(unnamed) = Db::open_postgres_with(&by_address, false, trusting(Some(&ca_file))) else {
        panic!("a certificate for another name was accepted")
    };
    assert!(unnamed.to_string().contains("certificate"), "{unnamed}");

    // A CA file that holds no certificate is a clear error.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate").expect("write");
    let Err(err) = Db::open_postgres_with(&tls, false, trusting(Some(&empty))) else {
        panic!("an empty CA file")
    };
    assert!(err.to_string().contains("CA file"), "{err}");
}

contract!(
    verification_records_are_stored_compressed_and_older_json_still_reads,
    |db: &Db| {
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Record {
            id: String,
            status: String,
            events: Vec<String>,
        }
        let record = Record {
            id: "1ec08e1b-d064-42be-9fdd-8639d8d818e5".into(),
            status: "Approved".into(),
            events: vec!["phone_lookup_complete".into(), "otp_sent".into()],
        };
        let json = serde_json::to_vec(&record).expect("json");
        db.put(Tree::Verifications, b"t/v1", &record).expect("put");
        let stored = db
            .get_raw(Tree::Verifications, b"t/v1")
            .expect("raw")
            .expect("there");
        // Compressed, then sealed: verifications hold personal data.
        assert_eq!(stored[0], 0xFE, "stored sealed");
        let opened = db
            .personal()
            .expect("keys")
            .open(Tree::Verifications, b"t/v1", &stored)
            .expect("opens");
        assert_eq!(opened[0], 0xFF, "stored compressed");
        assert!(
            opened.len() < json.len(),
            "{} of {} bytes",
            opened.len(),
            json.len()
        );
        assert_eq!(
            db.get::<Record>(Tree::Verifications, b"t/v1")
                .expect("read"),
            Some(record.clone())
        );
        // A record written before compression (plain JSON) reads, and an update of it
        // swaps from its stored bytes.
        db.put_raw(Tree::Verifications, b"t/v0", &json)
            .expect("raw put");
        let updated =
            db.update::<Record, StoreError, ()>(Tree::Verifications, b"t/v0", |current| {
                let mut next = current.expect("there");
                next.status = "Expired".into();
                Ok((Some(next), ()))
            });
        updated.expect("update");
        let read = db
            .get::<Record>(Tree::Verifications, b"t/v0")
            .expect("read")
            .expect("read");
        assert_eq!(read.status, "Expired");
        assert_eq!(
            db.get_raw(Tree::Verifications, b"t/v0")
                .expect("read")
                .expect("there")[0],
            0xFE
        );
        // Scans decode too; a tree outside the compressed set keeps JSON.
        assert_eq!(
            db.scan::<Record>(Tree::Verifications, b"t/", 10, false)
                .expect("read")
                .len(),
            2
        );
        db.put(Tree::Settings, b"t", &record).expect("put");
        assert_eq!(
            db.get_raw(Tree::Settings, b"t")
                .expect("read")
                .expect("there"),
            json
        );
    }
);

contract!(
    personal_records_of_an_earlier_version_are_sealed_and_renamed_once,
    |db: &Db| {
        let number = "+447400123456";
        let found = |db: &Db| {
            let mut found = Vec::new();
            for tree in Tree::ALL {
                for (key, value) in db.scan_from_raw(tree, b"", 10_000).expect("scan") {
                    if [&key, &value]
                        .iter()
                        .any(|bytes| bytes.windows(12).any(|w| w == &number.as_bytes()[1..]))
                    {
                        found.push((tree.name(), String::from_utf8_lossy(&key).into_owned()));
                    }
                }
            }
            found
        };
        // As an earlier version stored them: numbers in keys, records in the clear.
        db.put_raw(
            Tree::VerifiedNumbers,
            format!("t/{number}").as_bytes(),
            br#"{"applicant_id":"a1"}"#,
        )
        .expect("put");
        db.put_raw(
            Tree::VerificationIndex,
            format!("t/{number}/a1").as_bytes(),
            br#"{"verification_id":"v1"}"#,
        )
        .expect("put");
        db.put_raw(
            Tree::Verifications,
            b"t/v1",
            format!(r#"{{"phone":"{number}"}}"#).as_bytes(),
        )
        .expect("put");
        assert_eq!(found(db).len(), 3);
        let migrated = personal::migrate(db).expect("migrate");
        assert_eq!((migrated.renamed, migrated.sealed), (2, 1));
        assert_eq!(found(db), Vec::<(&str, String)>::new());
        // Found where the flows look now.
        let owner: serde_json::Value = db
            .get(
                Tree::VerifiedNumbers,
                &db.number_key("t", number).expect("key"),
            )
            .expect("read")
            .expect("moved");
        assert_eq!(owner["applicant_id"], "a1");
        let entry: serde_json::Value = db
            .get(
                Tree::VerificationIndex,
                &db.applicant_key("t", number, "a1").expect("key"),
            )
            .expect("read")
            .expect("moved");
        assert_eq!(entry["verification_id"], "v1");
        let record: serde_json::Value = db
            .get(Tree::Verifications, b"t/v1")
            .expect("read")
            .expect("sealed in place");
        assert_eq!(record["phone"], number);
        // Done once: a record written in the clear later is left for the flows.
        db.put_raw(
            Tree::Verifications,
            b"t/v2",
            br#"{"phone":"+447400123456"}"#,
        )
        .expect("put");
        assert_eq!(
            personal::migrate(db).expect("again"),
            personal::Migrated::default()
        );
    }
);
