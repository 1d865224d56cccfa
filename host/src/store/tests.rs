//! The store contract: every backend must pass these.

use super::*;

fn sled_db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open_sled(dir.path()).expect("open sled");
    (dir, db)
}

#[test]
fn put_get_remove_round_trip() {
    let (_dir, db) = sled_db();
    db.put(Tree::Tenants, b"t1", &"acme").expect("put");
    assert_eq!(
        db.get::<String>(Tree::Tenants, b"t1").expect("get"),
        Some("acme".into())
    );
    assert!(db.remove(Tree::Tenants, b"t1").expect("remove"));
    assert!(!db.remove(Tree::Tenants, b"t1").expect("remove again"));
    assert_eq!(db.get::<String>(Tree::Tenants, b"t1").expect("get"), None);
}

#[test]
fn trees_are_separate() {
    let (_dir, db) = sled_db();
    db.put(Tree::Tenants, b"k", &1).expect("put");
    assert_eq!(db.get::<i32>(Tree::Settings, b"k").expect("get"), None);
}

#[test]
fn insert_new_refuses_to_overwrite() {
    let (_dir, db) = sled_db();
    assert!(db.insert_new(Tree::Meta, b"k", &1).expect("first"));
    assert!(!db.insert_new(Tree::Meta, b"k", &2).expect("second"));
    assert_eq!(db.get::<i32>(Tree::Meta, b"k").expect("get"), Some(1));
}

#[test]
fn scan_is_bounded_by_prefix_and_limit_and_can_reverse() {
    let (_dir, db) = sled_db();
    for (k, v) in [("a/1", 1), ("a/2", 2), ("a/3", 3), ("b/1", 9)] {
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
}

#[test]
fn concurrent_updates_lose_nothing() {
    let (_dir, db) = sled_db();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..250 {
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
        Some(1000)
    );
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
