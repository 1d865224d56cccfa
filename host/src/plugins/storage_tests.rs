//! Unit tests of what bounds plugins outside a call: the key-value quota, write cap and
//! store time (through the host side of the `kv` interface), dry runs' scratch layers, log
//! escaping, and the parse-time checks of uploads.

use super::host::{escape_log, State};
use super::inspect::{inspect, SizeLimits};
use super::storage::{PluginData, StorageLimits};
use super::wit::dialgate::plugin::kv::{Host as _, KvError};
use super::{Kind, Limits, LoadError, Scope};
use crate::store::Db;

fn data(limits: StorageLimits) -> (tempfile::TempDir, PluginData) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open_sled(dir.path()).expect("open sled");
    (dir, PluginData::new(db, limits))
}

fn scope(plugin: &str) -> Scope {
    Scope {
        tenant_id: "tenant".to_owned(),
        plugin_id: plugin.to_owned(),
    }
}

fn call(data: &PluginData, scope: &Scope) -> State {
    State::new(data, scope, 0, &Limits::default(), None)
}

/// Whether a key-value call was refused for the quota.
fn refused<T: std::fmt::Debug>(result: Result<T, KvError>) -> bool {
    matches!(result, Err(KvError::QuotaExceeded))
}

/// The value a key-value read found.
fn read(result: Result<Option<Vec<u8>>, KvError>) -> Option<Vec<u8>> {
    result.expect("read")
}

fn small() -> StorageLimits {
    StorageLimits {
        kv_max_bytes: 100,
        kv_max_keys: 3,
        ..StorageLimits::default()
    }
}

#[test]
fn writes_past_the_quota_are_refused_and_shrinking_writes_pass() {
    let (_dir, data) = data(small());
    let mut state = call(&data, &scope("p"));
    state.set("a".into(), vec![0; 60]).expect("61 bytes");
    assert!(refused(state.set("b".into(), vec![0; 60])));
    // Replacing a value counts only the difference.
    state.set("a".into(), vec![0; 90]).expect("91 bytes");
    assert!(refused(state.set("a".into(), vec![0; 100])));
    state.set("b".into(), vec![0; 5]).expect("97 bytes");
    state.set("c".into(), Vec::new()).expect("98 bytes, 3 keys");
    assert!(refused(state.set("d".into(), Vec::new())));
    assert!(refused(state.increment("e".into(), 1)));
    state.delete("a".into()).expect("delete");
    state.increment("e".into(), 1).expect("room again");
    let view = data.view("tenant", "p").expect("view");
    assert_eq!((view.kv_keys, view.kv_bytes), (3, 6 + 1 + 2));
    // Another plugin has its own quota.
    call(&data, &scope("q"))
        .set("a".into(), vec![0; 90])
        .expect("q's own quota");
}

#[test]
fn usage_is_computed_from_the_store_on_first_use() {
    let (dir, data) = data(small());
    call(&data, &scope("p"))
        .set("key".into(), vec![1; 50])
        .expect("set");
    let db = data.db().clone();
    drop(data);
    let reopened = PluginData::new(db, small());
    let view = reopened.view("tenant", "p").expect("view");
    assert_eq!((view.kv_keys, view.kv_bytes), (1, 53));
    assert!(refused(
        call(&reopened, &scope("p")).set("other".into(), vec![1; 50])
    ));
    drop(dir);
}

#[test]
fn values_are_stored_sealed_under_hashed_names_and_older_values_still_read() {
    let (_dir, data) = data(StorageLimits::default());
    let mut state = call(&data, &scope("p"));
    state
        .set("+447400123456".into(), vec![200; 1000])
        .expect("set");
    let db = data.db().clone();
    let name = db
        .personal_name("tenant", &["p", "+447400123456"])
        .expect("name");
    let stored_key = crate::store::key(&["tenant", "p", &name]);
    let stored = db
        .get_raw(crate::store::Tree::PluginKv, &stored_key)
        .expect("read")
        .expect("stored");
    // The value and a fixed 46 bytes (seal mark, nonce, tag, format and name length):
    // the disk holds what the quota counts. Neither key nor value shows the name.
    assert_eq!(stored.len(), 1000 + 46);
    let every = db
        .scan_raw(crate::store::Tree::PluginKv, b"", 100)
        .expect("scan");
    for (key, value) in &every {
        for bytes in [key, value] {
            assert!(!bytes.windows(12).any(|w| w == b"447400123456"));
        }
    }
    assert_eq!(
        read(state.get("+447400123456".into())),
        Some(vec![200; 1000])
    );

    // Values an earlier release stored under their names in the clear (as JSON arrays,
    // and as raw bytes) move to hashed keys, sealed, when the store is migrated; they
    // read back and count as their names' and values' bytes.
    let legacy_key = crate::store::key(&["tenant", "p", "old"]);
    db.put_raw(crate::store::Tree::PluginKv, &legacy_key, b"[1,2,3]")
        .expect("legacy write");
    let raw_key = crate::store::key(&["tenant", "p", "raw"]);
    db.put_raw(crate::store::Tree::PluginKv, &raw_key, &[0, 9])
        .expect("legacy write");
    assert_eq!(super::storage::migrate(&db).expect("migrate"), 2);
    assert!(db
        .get_raw(crate::store::Tree::PluginKv, &legacy_key)
        .expect("read")
        .is_none());
    let reopened = PluginData::new(db.clone(), StorageLimits::default());
    let view = reopened.view("tenant", "p").expect("view");
    assert_eq!(
        (view.kv_keys, view.kv_bytes),
        (3, 13 + 1000 + 3 + 3 + 3 + 1)
    );
    let mut state = call(&reopened, &scope("p"));
    assert_eq!(read(state.get("old".into())), Some(vec![1, 2, 3]));
    assert_eq!(read(state.get("raw".into())), Some(vec![9]));
    assert_eq!(state.increment("n".into(), 5).expect("counter"), 5);
    assert_eq!(read(state.get("n".into())), Some(b"5".to_vec()));
    // Once migrated, a store is not scanned again.
    assert_eq!(super::storage::migrate(&db).expect("migrate"), 0);
}

#[test]
fn a_call_makes_at_most_its_share_of_writes() {
    let (_dir, data) = data(StorageLimits::default());
    let cap = data.limits().kv_max_writes_per_call;
    let mut state = call(&data, &scope("p"));
    for n in 0..cap {
        state
            .set(format!("k{n}"), Vec::new())
            .expect("within the cap");
    }
    assert!(refused(state.delete("k0".into())));
    // Reads are not writes; the next call starts afresh.
    assert_eq!(read(state.get("k1".into())), Some(Vec::new()));
    call(&data, &scope("p"))
        .delete("k0".into())
        .expect("a new call");
}

#[test]
fn store_time_is_a_budget_of_its_own_not_running_time() {
    // No store time at all: the first operation is refused, naming the budget.
    let (_dir, none) = data(StorageLimits {
        kv_time_ms_per_call: 0,
        ..StorageLimits::default()
    });
    let mut state = call(&none, &scope("p"));
    match state.get("k".into()) {
        Err(KvError::Unavailable(message)) => {
            assert!(message.contains("0 ms of key-value time"), "{message}");
        }
        other => panic!("not refused: {other:?}"),
    }
    // With time to spare, the wait is counted there and left out of the running time.
    let (_dir, spare) = data(StorageLimits::default());
    let started = std::time::Instant::now();
    let mut state = call(&spare, &scope("p"));
    for n in 0..32 {
        state.set(format!("k{n}"), vec![0; 512]).expect("a write");
    }
    let waited = state.kv_waited();
    assert!(waited > std::time::Duration::ZERO);
    assert!(state.ran.ran() + waited <= started.elapsed());
}

#[test]
fn concurrent_calls_of_one_plugin_never_pass_the_quota() {
    let limits = StorageLimits {
        kv_max_bytes: 10_000,
        kv_max_keys: 1_000,
        ..StorageLimits::default()
    };
    let (_dir, data) = data(limits);
    let threads: Vec<_> = (0..8)
        .map(|thread| {
            let data = data.clone();
            std::thread::spawn(move || {
                let mut written = 0;
                for n in 0..40 {
                    let mut state = call(&data, &scope("p"));
                    // Four bytes of key and 96 of value: 100 bytes a key.
                    if state.set(format!("{thread}-{n:02}"), vec![0; 96]).is_ok() {
                        written += 1;
                    }
                }
                written
            })
        })
        .collect();
    let written: u64 = threads
        .into_iter()
        .map(|thread| thread.join().expect("thread"))
        .sum();
    let view = data.view("tenant", "p").expect("view");
    assert!(view.kv_bytes <= 10_000, "{view:?}");
    assert_eq!(view.kv_keys, written);
    // The quota was reached: 100 bytes a key, so 100 keys.
    assert_eq!(written, 100);
}

#[test]
fn a_scratch_layer_reads_over_the_real_data_and_is_discarded() {
    let (_dir, data) = data(small());
    let real = scope("p");
    call(&data, &real).increment("n".into(), 5).expect("real");
    let scratch = data.scratch("tenant", "p");
    let mut dry = call(&data, scratch.scope());
    assert_eq!(dry.increment("n".into(), 1).expect("increment"), 6);
    dry.set("new".into(), b"v".to_vec()).expect("scratch write");
    dry.delete("n".into()).expect("scratch delete");
    assert_eq!(read(dry.get("n".into())), None);
    assert_eq!(read(dry.get("new".into())), Some(b"v".to_vec()));
    // The quota counts the scratch writes over the real usage.
    assert!(refused(dry.set("big".into(), vec![0; 95])));
    drop(scratch);
    let mut after = call(&data, &real);
    assert_eq!(read(after.get("n".into())), Some(b"5".to_vec()));
    assert_eq!(read(after.get("new".into())), None);
    let view = data.view("tenant", "p").expect("view");
    assert_eq!((view.kv_keys, view.kv_bytes), (1, 2));
}

#[test]
fn forgetting_a_plugin_removes_its_data_and_stops_calls_in_flight() {
    let (_dir, data) = data(small());
    let mut running = call(&data, &scope("p"));
    running.set("a".into(), b"1".to_vec()).expect("set");
    data.forget("tenant", "p").expect("forget");
    assert!(matches!(
        running.set("b".into(), b"2".to_vec()),
        Err(KvError::Unavailable(_))
    ));
    let view = data.view("tenant", "p").expect("view");
    assert_eq!((view.kv_keys, view.kv_bytes), (0, 0));
}

#[test]
fn log_text_is_escaped_onto_one_line() {
    assert_eq!(
        escape_log("a\nb\r\u{1b}[31m\\n\u{202e}\u{2028}é"),
        r"a\nb\r\u{1b}[31m\\n\u{202e}\u{2028}é"
    );
    assert_eq!(escape_log("plain text"), "plain text");
}

#[test]
fn the_log_budget_is_per_plugin_per_minute() {
    let limits = StorageLimits {
        log_lines_per_minute: 2,
        log_bytes_per_minute: 1_000,
        ..StorageLimits::default()
    };
    let (_dir, data) = data(limits);
    let target = data.target(&scope("p"));
    assert!(data.admit_log(&target, 10, 0));
    assert!(data.admit_log(&target, 10, 59_999));
    assert!(!data.admit_log(&target, 10, 59_999));
    assert!(data.admit_log(&data.target(&scope("q")), 10, 0));
    // The next minute renews the budget; bytes count too.
    assert!(data.admit_log(&target, 999, 60_000));
    assert!(!data.admit_log(&target, 2, 60_000));
    assert_eq!(data.view("tenant", "p").expect("view").log_lines_dropped, 2);
}

#[test]
fn parsing_refuses_core_modules_and_garbage() {
    let core = b"\0asm\x01\0\0\0";
    assert!(matches!(
        inspect(core, &SizeLimits::default()),
        Err(LoadError::NotAComponent(_))
    ));
    assert!(matches!(
        inspect(b"not wasm at all", &SizeLimits::default()),
        Err(LoadError::NotAComponent(_))
    ));
    // An empty component exports no world.
    let empty = b"\0asm\x0d\0\x01\0";
    assert!(matches!(
        inspect(empty, &SizeLimits::default()),
        Err(LoadError::UnknownWorld(_))
    ));
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn parsing_classifies_the_in_tree_guests_within_the_limits() {
    let limits = SizeLimits::default();
    for (artifact, kind) in [
        ("otp_for_voip", Kind::Rule),
        ("velocity", Kind::Rule),
        ("hostile_abuser", Kind::Rule),
        ("camara_lookup", Kind::LookupAdapter),
        ("http_sms", Kind::MessagingAdapter),
        ("kannel", Kind::MessagingAdapter),
    ] {
        let bytes = super::testing::guest_component(artifact);
        let inspection = inspect(&bytes, &limits).unwrap_or_else(|err| panic!("{artifact}: {err}"));
        assert_eq!(inspection.kind, kind, "{artifact}");
        // Far inside the limits: a real plugin is not near them.
        assert!(
            inspection.code_bytes * 4 < limits.max_code_bytes,
            "{artifact}: {inspection:?}"
        );
    }
    let forbidden = super::testing::guest_component("hostile_forbidden_import");
    assert!(matches!(
        inspect(&forbidden, &limits),
        Err(LoadError::ForbiddenImport { .. })
    ));
    let tight = SizeLimits {
        max_functions: 10,
        ..limits
    };
    let bytes = super::testing::guest_component("otp_for_voip");
    assert!(matches!(
        inspect(&bytes, &tight),
        Err(LoadError::TooLarge(_))
    ));
}

#[test]
#[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
fn on_a_shared_store_the_quota_is_one_account_across_replicas() {
    let url = crate::store::testing::TestCluster::shared().database();
    let limits = StorageLimits {
        kv_max_keys: 3,
        ..StorageLimits::default()
    };
    // Two replicas: two processes' worth of plugin data over one database.
    let open = || PluginData::new(Db::open_postgres(&url, true).expect("open"), limits);
    let (first, second) = (open(), open());
    let (on_first, on_second) = (
        &mut call(&first, &scope("p")),
        &mut call(&second, &scope("p")),
    );
    on_first.set("a".into(), vec![1]).expect("a");
    on_first.set("b".into(), vec![2]).expect("b");
    on_second.set("c".into(), vec![3]).expect("c");
    assert!(
        refused(on_second.set("d".into(), vec![4])),
        "the fourth key"
    );
    assert!(refused(call(&first, &scope("p")).set("e".into(), vec![5])));
    // Both see the one account; replacing and deleting move it for both.
    for data in [&first, &second] {
        let view = data.view("tenant", "p").expect("view");
        assert_eq!((view.kv_keys, view.kv_bytes), (3, 6));
    }
    on_second.set("a".into(), vec![0; 10]).expect("replace a");
    on_first.delete("b".into()).expect("delete b");
    let view = first.view("tenant", "p").expect("view");
    assert_eq!((view.kv_keys, view.kv_bytes), (2, (1 + 10) + (1 + 1)));
    call(&first, &scope("p"))
        .set("d".into(), vec![4])
        .expect("room again");
    // Deleting the plugin takes its account too.
    second.forget("tenant", "p").expect("forget");
    let view = first.view("tenant", "p").expect("view");
    assert_eq!((view.kv_keys, view.kv_bytes), (0, 0));
}

#[test]
#[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
fn a_plugin_deleted_on_one_replica_takes_no_more_writes_from_another() {
    let url = crate::store::testing::TestCluster::shared().database();
    let open = || PluginData::new(Db::open_postgres(&url, true).expect("open"), small());
    let (deleting, running) = (open(), open());
    // A call of the plugin is running on the second replica when the first deletes it.
    let on_running = &mut call(&running, &scope("p"));
    on_running.set("a".into(), vec![1]).expect("a");
    deleting.forget("tenant", "p").expect("forget");
    assert!(matches!(
        on_running.set("b".into(), vec![2]),
        Err(KvError::Unavailable(_))
    ));
    assert!(matches!(
        call(&running, &scope("p")).set("c".into(), vec![3]),
        Err(KvError::Unavailable(_))
    ));
    // Nothing of the plugin is left but its tombstone: no value, no account.
    let db = Db::open_postgres(&url, false).expect("open");
    let left = db
        .scan_raw(crate::store::Tree::PluginKv, b"tenant/p/", 10)
        .expect("scan");
    assert!(left.is_empty(), "{left:?}");
    for data in [&deleting, &running] {
        let view = data.view("tenant", "p").expect("view");
        assert_eq!((view.kv_keys, view.kv_bytes), (0, 0));
    }
    // Another plugin of the tenant is untouched.
    call(&running, &scope("q"))
        .set("a".into(), vec![1])
        .expect("another plugin writes");
}
