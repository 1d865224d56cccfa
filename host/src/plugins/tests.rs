//! The rule runtime with real components: the first-party rules return their actions,
//! and hostile rules (an endless loop, a memory bomb) are stopped and reported while
//! the runtime keeps serving. The components are built from `rules/` and
//! `tests/hostile/` for wasm32-wasip2, so those tests need that target (`.ci/test` adds
//! it and runs them); the key-value tests run everywhere.

use wasmtime::component::ResourceTable;
use wasmtime::StoreLimitsBuilder;
use wasmtime_wasi::WasiCtx;

use super::host::State;
use super::wit::dialgate::plugin::kv::{self, Host as _};
use super::wit::{self, Action, Channel};
use super::*;

fn db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open_sled(dir.path()).expect("open sled");
    (dir, db)
}

fn scope(tenant: &str) -> Scope {
    Scope {
        tenant_id: tenant.to_owned(),
        plugin_id: "plugin".to_owned(),
    }
}

fn guest(artifact: &str) -> Vec<u8> {
    super::testing::guest_component(artifact)
}

fn event(line_type: &str, sim_swap_days_ago: Option<u32>, config: &[(&str, &str)]) -> wit::Event {
    let mut event = super::testing::event(line_type);
    event.phone.sim_swap_days_ago = sim_swap_days_ago;
    event.config = config
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    event
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn otp_for_voip_asks_for_a_code_for_voip_numbers_only() {
    let (_dir, db) = db();
    let runtime = PluginRuntime::new(db, Limits::default()).expect("runtime");
    let rule = runtime
        .compile_rule(&guest("otp_for_voip"))
        .expect("a rule");
    let voip = runtime
        .invoke_rule(&rule, &scope("a"), 0, &event("voip", None, &[]))
        .expect("runs");
    assert!(matches!(
        voip.actions.as_slice(),
        [Action::RequestInfo(_), Action::SendOtp(Channel::Sms)]
    ));
    assert!(voip.fuel_used > 0);
    let mobile = runtime
        .invoke_rule(&rule, &scope("a"), 0, &event("mobile", None, &[]))
        .expect("runs");
    assert!(mobile.actions.is_empty());
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn flag_sim_swap_reads_its_configuration_and_reports_bad_configuration() {
    let (_dir, db) = db();
    let runtime = PluginRuntime::new(db, Limits::default()).expect("runtime");
    let rule = runtime
        .compile_rule(&guest("flag_sim_swap"))
        .expect("a rule");
    let recent = runtime
        .invoke_rule(&rule, &scope("a"), 0, &event("mobile", Some(2), &[]))
        .expect("runs");
    assert!(
        matches!(recent.actions.as_slice(), [Action::AddFlag(flag), Action::CreateCase(_)] if flag == "recent_sim_swap")
    );
    let bad = runtime.invoke_rule(
        &rule,
        &scope("a"),
        0,
        &event("mobile", Some(2), &[("threshold_days", "soon")]),
    );
    assert!(matches!(bad, Err(Failure::Plugin { code, .. }) if code == "bad-config"));
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn an_endless_loop_runs_out_of_fuel_and_the_runtime_keeps_serving() {
    let (_dir, db) = db();
    let limits = Limits::default();
    let runtime = PluginRuntime::new(db, limits).expect("runtime");
    let spin = runtime
        .compile_rule(&guest("hostile_spin"))
        .expect("a rule");
    let result = runtime.invoke_rule(&spin, &scope("a"), 0, &event("mobile", None, &[]));
    assert!(
        matches!(&result, Err(Failure::OutOfFuel(fuel)) if *fuel == limits.fuel),
        "{result:?}"
    );
    let good = runtime
        .compile_rule(&guest("otp_for_voip"))
        .expect("a rule");
    let after = runtime
        .invoke_rule(&good, &scope("b"), 0, &event("voip", None, &[]))
        .expect("another plugin still runs");
    assert_eq!(after.actions.len(), 2);
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn a_memory_bomb_hits_the_memory_cap() {
    let (_dir, db) = db();
    let runtime = PluginRuntime::new(
        db,
        Limits {
            fuel: u64::MAX / 2,
            ..Limits::default()
        },
    )
    .expect("runtime");
    let bomb = runtime
        .compile_rule(&guest("hostile_memory_bomb"))
        .expect("a rule");
    let result = runtime.invoke_rule(&bomb, &scope("a"), 0, &event("mobile", None, &[]));
    assert!(
        matches!(&result, Err(Failure::Trap(message)) if message.contains("memory")),
        "{result:?}"
    );
}

#[test]
fn bytes_that_are_not_a_component_are_refused_at_load() {
    let (_dir, db) = db();
    let runtime = PluginRuntime::new(db, Limits::default()).expect("runtime");
    let err = runtime.compile_rule(b"not wasm").expect_err("refused");
    assert!(err.to_string().contains("not a valid component"), "{err}");
}

fn state(db: &Db, tenant: &str) -> State {
    State {
        wasi: WasiCtx::builder().build(),
        table: ResourceTable::new(),
        limits: StoreLimitsBuilder::new().build(),
        db: db.clone(),
        scope: scope(tenant),
        now_millis: 0,
    }
}

#[test]
fn key_value_data_is_scoped_to_the_tenant() {
    let (_dir, db) = db();
    let mut a = state(&db, "tenant-a");
    let mut b = state(&db, "tenant-b");
    a.set("seen".into(), b"yes".to_vec()).expect("set");
    assert_eq!(a.get("seen".into()).expect("get"), Some(b"yes".to_vec()));
    assert_eq!(b.get("seen".into()).expect("get"), None);
    a.delete("seen".into()).expect("delete");
    assert_eq!(a.get("seen".into()).expect("get"), None);
}

#[test]
fn counters_increment_and_read_back_as_text() {
    let (_dir, db) = db();
    let mut a = state(&db, "tenant-a");
    assert_eq!(a.increment("sends".into(), 1).expect("increment"), 1);
    assert_eq!(a.increment("sends".into(), 2).expect("increment"), 3);
    assert_eq!(a.get("sends".into()).expect("get"), Some(b"3".to_vec()));
    a.set("name".into(), b"text".to_vec()).expect("set");
    assert!(matches!(
        a.increment("name".into(), 1),
        Err(kv::KvError::BadKey(_))
    ));
}

#[test]
fn oversized_keys_and_values_are_refused() {
    let (_dir, db) = db();
    let mut a = state(&db, "tenant-a");
    assert!(matches!(a.get(String::new()), Err(kv::KvError::BadKey(_))));
    assert!(matches!(
        a.get("k".repeat(300)),
        Err(kv::KvError::BadKey(_))
    ));
    assert!(matches!(
        a.set("big".into(), vec![0; 65 * 1024]),
        Err(kv::KvError::ValueTooLarge(_))
    ));
}
