//! The plugin runtime with real components: the first-party rules return their actions,
//! hostile plugins (endless loop, memory bomb, deep recursion, huge output, panic,
//! forbidden import) are stopped or refused and reported while the runtime keeps
//! serving, and compiled code is reused from the cache. The components are built from
//! `rules/`, `plugins/` and `tests/hostile/` for wasm32-wasip2, so those tests need
//! that target (`.ci/test` adds it and runs them); the key-value tests run everywhere.

use super::host::State;
use super::wit::dialgate::plugin::kv::{self, Host as _};
use crate::model::rules::{RuleAction, RuleEvent, Trigger};
use std::sync::Arc;

use super::*;
use crate::model::Channel;
use crate::plugins::testing::block_on;

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

fn event(line_type: &str, sim_swap_days_ago: Option<u32>, config: &[(&str, &str)]) -> RuleEvent {
    let mut event = super::testing::event(line_type);
    event.phone.sim_swap_days_ago = sim_swap_days_ago;
    event.config = config
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    event
}

fn runtime(db: Db) -> PluginRuntime {
    PluginRuntime::new(db, Limits::default()).expect("runtime")
}

/// A runtime whose fuel outlasts the deadline, so the deadline is what stops a spin.
fn fuel_to_spare(db: Db) -> PluginRuntime {
    PluginRuntime::new(
        db,
        Limits {
            fuel: u64::MAX / 2,
            ..Limits::default()
        },
    )
    .expect("runtime")
}

fn rule(runtime: &PluginRuntime, artifact: &str) -> Loaded {
    runtime
        .load(&guest(artifact), Some(Kind::Rule))
        .expect("a rule")
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn otp_for_voip_asks_for_a_code_for_voip_numbers_only() {
    let (_dir, db) = db();
    let runtime = runtime(db);
    let rule = rule(&runtime, "otp_for_voip");
    let (usage, voip) =
        block_on(runtime.invoke_rule(&rule, &scope("a"), 0, &event("voip", None, &[])));
    assert!(matches!(
        voip.expect("runs").as_slice(),
        [
            RuleAction::RequestInfo { .. },
            RuleAction::SendOtp {
                channel: Channel::Sms
            }
        ]
    ));
    assert!(usage.fuel > 0);
    assert!(usage.peak_memory_bytes > 0);
    let (_, mobile) =
        block_on(runtime.invoke_rule(&rule, &scope("a"), 0, &event("mobile", None, &[])));
    assert!(mobile.expect("runs").is_empty());
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn flag_sim_swap_reads_its_configuration_and_reports_bad_configuration() {
    let (_dir, db) = db();
    let runtime = runtime(db);
    let rule = rule(&runtime, "flag_sim_swap");
    let (_, recent) =
        block_on(runtime.invoke_rule(&rule, &scope("a"), 0, &event("mobile", Some(2), &[])));
    assert!(
        matches!(recent.expect("runs").as_slice(), [RuleAction::AddFlag { flag }, RuleAction::CreateCase { .. }] if flag == "recent_sim_swap")
    );
    let (_, bad) = block_on(runtime.invoke_rule(
        &rule,
        &scope("a"),
        0,
        &event("mobile", Some(2), &[("threshold_days", "soon")]),
    ));
    assert!(matches!(bad, Err(Failure::Plugin { code, .. }) if code == "bad-config"));
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn velocity_counts_codes_per_number_across_applicants_in_the_store() {
    let (_dir, db) = db();
    let runtime = runtime(db);
    let rule = rule(&runtime, "velocity");
    let mut event = event("mobile", None, &[("max_codes", "2")]);
    event.trigger = Trigger::BeforeSendOtp;
    let now = 1_700_000_000_000;
    for applicant in ["a", "b"] {
        event.applicant_id = Some(applicant.to_owned());
        let (_, answer) = block_on(runtime.invoke_rule(&rule, &scope("t"), now, &event));
        assert_eq!(answer.expect("runs"), Vec::new());
    }
    event.applicant_id = Some("c".to_owned());
    let (_, third) = block_on(runtime.invoke_rule(&rule, &scope("t"), now, &event));
    let third = third.expect("runs");
    assert!(
        third
            .iter()
            .any(|a| matches!(a, RuleAction::Decline { .. })),
        "{third:?}"
    );
    // Another tenant's count is its own.
    let (_, other) = block_on(runtime.invoke_rule(&rule, &scope("u"), now, &event));
    assert_eq!(other.expect("runs"), Vec::new());
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn an_endless_loop_runs_out_of_fuel_and_the_runtime_keeps_serving() {
    let (_dir, db) = db();
    let limits = Limits::default();
    let runtime = PluginRuntime::new(db, limits).expect("runtime");
    let spin = rule(&runtime, "hostile_spin");
    let (_, result) =
        block_on(runtime.invoke_rule(&spin, &scope("a"), 0, &event("mobile", None, &[])));
    assert!(
        matches!(&result, Err(Failure::OutOfFuel { fuel }) if *fuel == limits.fuel),
        "{result:?}"
    );
    let good = rule(&runtime, "otp_for_voip");
    let (_, after) =
        block_on(runtime.invoke_rule(&good, &scope("b"), 0, &event("voip", None, &[])));
    assert_eq!(after.expect("another plugin still runs").len(), 2);
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn an_endless_loop_with_fuel_to_spare_hits_the_deadline() {
    let (_dir, db) = db();
    let runtime = fuel_to_spare(db);
    let spin = rule(&runtime, "hostile_spin");
    let (usage, result) =
        block_on(runtime.invoke_rule(&spin, &scope("a"), 0, &event("mobile", None, &[])));
    assert!(
        matches!(result, Err(Failure::Timeout { ms: 10 })),
        "{result:?}"
    );
    assert!(usage.fuel > 0);
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn a_memory_bomb_hits_the_memory_cap() {
    let (_dir, db) = db();
    let runtime = PluginRuntime::new(
        db,
        Limits {
            fuel: u64::MAX / 2,
            time_ms: 10_000,
            ..Limits::default()
        },
    )
    .expect("runtime");
    let bomb = rule(&runtime, "hostile_memory_bomb");
    let (_, result) =
        block_on(runtime.invoke_rule(&bomb, &scope("a"), 0, &event("mobile", None, &[])));
    assert!(
        matches!(&result, Err(Failure::Trap { message }) if message.contains("memory")),
        "{result:?}"
    );
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn deep_recursion_exhausts_the_stack_and_a_panic_traps() {
    let (_dir, db) = db();
    let runtime = runtime(db);
    let deep = rule(&runtime, "hostile_deep_recursion");
    let (_, result) =
        block_on(runtime.invoke_rule(&deep, &scope("a"), 0, &event("mobile", None, &[])));
    // The engine's call stack or the guest's own (linear-memory) stack runs out first,
    // depending on how the guest was linked; either way the call is stopped.
    assert!(
        match &result {
            Err(Failure::StackOverflow | Failure::OutOfFuel { .. } | Failure::Timeout { .. }) => {
                true
            }
            Err(Failure::Trap { message }) => message.contains("out of bounds"),
            _ => false,
        },
        "{result:?}"
    );
    let panic = rule(&runtime, "hostile_panic");
    let (_, result) =
        block_on(runtime.invoke_rule(&panic, &scope("a"), 0, &event("mobile", None, &[])));
    assert!(matches!(result, Err(Failure::Trap { .. })), "{result:?}");
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn huge_output_is_refused_by_the_output_caps() {
    let (_dir, db) = db();
    let runtime = runtime(db);
    let huge = rule(&runtime, "hostile_huge_output");
    // Building a 4 MiB string or 100,000 actions hits the output caps, or first the
    // fuel, the deadline or the memory cap, depending on the machine's speed; any of
    // these contains it.
    let contained = |result: &Result<Vec<RuleAction>, Failure>| {
        matches!(
            result,
            Err(Failure::OutputTooLarge { .. }
                | Failure::TooManyActions { .. }
                | Failure::Trap { .. }
                | Failure::OutOfFuel { .. }
                | Failure::Timeout { .. })
        )
    };
    let (_, one_big) =
        block_on(runtime.invoke_rule(&huge, &scope("a"), 0, &event("mobile", None, &[])));
    assert!(contained(&one_big), "{one_big:?}");
    let (_, many) = block_on(runtime.invoke_rule(
        &huge,
        &scope("a"),
        0,
        &event("mobile", None, &[("mode", "many")]),
    ));
    assert!(contained(&many), "{many:?}");
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn a_forbidden_import_is_refused_by_name() {
    let (_dir, db) = db();
    let runtime = runtime(db);
    let err = runtime
        .load(&guest("hostile_forbidden_import"), None)
        .expect_err("refused");
    assert!(
        matches!(&err, LoadError::ForbiddenImport { import, world } if import.starts_with("dialgate:plugin/http-client") && world == "rule"),
        "{err}"
    );
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn worlds_are_recognised_and_a_wrong_one_is_refused() {
    let (_dir, db) = db();
    let runtime = runtime(db);
    let lookup = runtime.load(&guest("camara_lookup"), None).expect("loads");
    assert_eq!(lookup.kind, Kind::LookupAdapter);
    let sms = runtime.load(&guest("http_sms"), None).expect("loads");
    assert_eq!(sms.kind, Kind::MessagingAdapter);
    let err = runtime
        .load(&guest("otp_for_voip"), Some(Kind::LookupAdapter))
        .expect_err("a rule is not a lookup adapter");
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{err}");
    let (_, refused) =
        block_on(runtime.invoke_rule(&sms, &scope("a"), 0, &event("voip", None, &[])));
    assert!(matches!(refused, Err(Failure::Malformed { .. })));
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn a_second_runtime_loads_precompiled_code_from_the_cache() {
    let (_dir, db) = db();
    let bytes = guest("otp_for_voip");
    let first = runtime(db.clone());
    first.load(&bytes, None).expect("compiles");
    assert_eq!(first.stats().compiled, 1);
    let second = runtime(db);
    let loaded = second.load(&bytes, None).expect("loads");
    assert_eq!(second.stats().compiled, 0);
    assert_eq!(second.stats().loaded_from_cache, 1);
    let (_, answer) =
        block_on(second.invoke_rule(&loaded, &scope("a"), 0, &event("voip", None, &[])));
    assert_eq!(answer.expect("runs").len(), 2);
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn code_past_the_memory_budget_is_evicted_and_loaded_again_on_its_next_call() {
    let (_dir, db) = db();
    // A budget of one byte: only the code used last stays in memory.
    let bounds = PluginBounds {
        code_memory_bytes: 1,
        ..PluginBounds::default()
    };
    let runtime = PluginRuntime::with_bounds(db, Limits::default(), bounds).expect("runtime");
    let voip = rule(&runtime, "otp_for_voip");
    let swap = rule(&runtime, "flag_sim_swap");
    assert!(!voip.is_resident(), "loading the second evicted the first");
    assert!(swap.is_resident());
    let compiled = runtime.stats().compiled;
    for _ in 0..3 {
        let (_, asked) =
            block_on(runtime.invoke_rule(&voip, &scope("a"), 0, &event("voip", None, &[])));
        assert_eq!(asked.expect("runs").len(), 2);
        let (_, flagged) = block_on(runtime.invoke_rule(
            &swap,
            &scope("a"),
            0,
            &event("mobile", Some(1), &[("threshold_days", "7")]),
        ));
        assert!(
            matches!(
                flagged.expect("runs").as_slice(),
                [RuleAction::AddFlag { .. }, ..]
            ),
            "the reloaded rule still reads its event"
        );
    }
    let stats = runtime.code_stats();
    assert_eq!(stats.resident, 1, "{stats:?}");
    assert_eq!(stats.reloads, 6, "{stats:?}");
    assert!(stats.evictions >= 6, "{stats:?}");
    assert!(
        stats.resident_bytes > 0 && stats.budget_bytes == 1,
        "{stats:?}"
    );
    // Reloading deserialises the stored artifact; nothing is compiled again.
    assert_eq!(runtime.stats().compiled, compiled);
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn a_plugin_known_lazily_loads_on_its_first_call_and_a_missing_one_fails_clearly() {
    let (_dir, db) = db();
    let bytes = guest("otp_for_voip");
    let sha256 = content_hash(&bytes);
    db.put_raw(Tree::PluginBlobs, sha256.as_bytes(), &bytes)
        .expect("stores the component");
    let runtime = runtime(db);
    let lazy = runtime.lazy(&sha256, Kind::Rule);
    assert!(!lazy.is_resident());
    assert_eq!(runtime.code_stats().resident, 0);
    let (_, answer) =
        block_on(runtime.invoke_rule(&lazy, &scope("a"), 0, &event("voip", None, &[])));
    assert_eq!(answer.expect("runs").len(), 2);
    assert!(lazy.is_resident());
    assert_eq!(runtime.code_stats().reloads, 1);

    let missing = runtime.lazy(&"0".repeat(64), Kind::Rule);
    let (_, failed) =
        block_on(runtime.invoke_rule(&missing, &scope("a"), 0, &event("voip", None, &[])));
    assert!(
        matches!(&failed, Err(Failure::Unloadable { message }) if message.contains("not in the store")),
        "{failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
async fn a_reload_without_an_artifact_compiles_the_stored_component_on_a_servers_runtime() {
    let (_dir, db) = db();
    let bytes = guest("otp_for_voip");
    let sha256 = content_hash(&bytes);
    db.put_raw(Tree::PluginBlobs, sha256.as_bytes(), &bytes)
        .expect("stores the component");
    let runtime = runtime(db);
    let lazy = runtime.lazy(&sha256, Kind::Rule);
    // No artifact yet: the first call compiles the stored component, in
    // `block_in_place` on this multi-threaded runtime's worker (which panics if the
    // runtime could not hand the worker's tasks over).
    let ticker = tokio::spawn(async { tokio::task::yield_now().await });
    let (_, answer) = runtime
        .invoke_rule(&lazy, &scope("a"), 0, &event("voip", None, &[]))
        .await;
    assert_eq!(answer.expect("runs").len(), 2);
    ticker.await.expect("the runtime kept serving");
    assert_eq!(runtime.stats().compiled, 1);
    assert!(lazy.is_resident());
}

#[test]
fn bytes_that_are_not_a_component_are_refused_at_load() {
    let (_dir, db) = db();
    let runtime = runtime(db);
    let err = runtime.load(b"not wasm", None).expect_err("refused");
    assert!(matches!(err, LoadError::NotAComponent(_)), "{err}");
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn an_oversized_event_is_refused_before_the_call() {
    let (_dir, db) = db();
    let runtime = runtime(db);
    let rule = rule(&runtime, "otp_for_voip");
    let mut big = event("voip", None, &[]);
    big.config.insert("blob".into(), "x".repeat(70 << 10));
    let (usage, result) = block_on(runtime.invoke_rule(&rule, &scope("a"), 0, &big));
    assert!(
        matches!(result, Err(Failure::InputTooLarge { .. })),
        "{result:?}"
    );
    assert_eq!(usage.fuel, 0);
}

fn state(db: &Db, tenant: &str) -> State {
    let data = super::PluginData::new(db.clone(), super::StorageLimits::default());
    State::new(&data, &scope(tenant), 0, &Limits::default(), None)
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

#[test]
fn grants_match_the_host_or_the_host_and_port() {
    let grant = HttpGrant {
        hosts: vec!["127.0.0.1:8080".into(), "api.example.com".into()],
    };
    let url = |text: &str| reqwest::Url::parse(text).expect("url");
    assert!(grant.allows(&url("http://127.0.0.1:8080/x")));
    assert!(!grant.allows(&url("http://127.0.0.1:9090/x")));
    assert!(grant.allows(&url("https://api.example.com/v1")));
    assert!(!grant.allows(&url("https://evil.example.com/v1")));
    assert!(!grant.allows(&url("https://api.example.com.evil.net/v1")));
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn a_version_swap_leaves_a_firing_in_flight_on_the_version_it_started_with() {
    use super::registry::{activate_version, Manifest, Registry};
    let (_dir, db) = db();
    let registry = Registry::open(Arc::new(runtime(db.clone())), db, Vec::new()).expect("registry");
    let manifest = |version: &str| Manifest {
        name: "swap".to_owned(),
        kind: Kind::Rule,
        version: version.to_owned(),
        triggers: vec![Trigger::PhoneLookupComplete],
        hosts: Vec::new(),
        description: None,
    };
    let now = chrono::Utc::now();
    let first = registry
        .upload("t", manifest("1"), &guest("otp_for_voip"), true, now)
        .expect("v1");
    registry
        .upload("t", manifest("2"), &guest("guest_echo"), false, now)
        .expect("v2");
    let mut event = event("voip", None, &[]);
    event.tenant_id = "t".to_owned();
    // A firing that took its snapshot before the swap...
    let in_flight = registry.live("t").expect("live");
    registry
        .modify("t", &first.id, now, |record| activate_version(record, "2"))
        .expect("activate v2");
    // ...finishes on version 1, and the next firing runs version 2.
    let old = block_on(registry.run_rules(&in_flight, event.clone(), 0, None));
    assert_eq!(old[0].version, "1");
    assert!(matches!(
        old[0].actions.as_slice(),
        [RuleAction::RequestInfo { .. }, RuleAction::SendOtp { .. }]
    ));
    let new =
        block_on(registry.run_rules(&registry.live("t").expect("live"), event.clone(), 0, None));
    assert_eq!(new[0].version, "2");
    assert!(matches!(
        new[0].actions.as_slice(),
        [RuleAction::AddFlag { .. }]
    ));
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn a_trigger_takes_a_bounded_number_of_rules() {
    use super::registry::{Manifest, Registry, RegistryError, MAX_RULES_PER_TRIGGER};
    let (_dir, db) = db();
    let registry = Registry::open(Arc::new(runtime(db.clone())), db, Vec::new()).expect("registry");
    let bytes = guest("otp_for_voip");
    let manifest = |n: usize| Manifest {
        name: format!("rule-{n}"),
        kind: Kind::Rule,
        version: "1".to_owned(),
        triggers: vec![Trigger::OtpSent],
        hosts: Vec::new(),
        description: None,
    };
    let now = chrono::Utc::now();
    for n in 0..MAX_RULES_PER_TRIGGER {
        registry
            .upload("t", manifest(n), &bytes, true, now)
            .expect("fits");
    }
    let refused = registry.upload("t", manifest(99), &bytes, true, now);
    assert!(
        matches!(refused, Err(RegistryError::Conflict(_))),
        "{refused:?}"
    );
    // Another tenant has its own room.
    registry
        .upload("u", manifest(0), &bytes, true, now)
        .expect("fits");
}

fn seed_program() -> dialgate_sdk::workflow::Program {
    use dialgate_sdk::workflow::{Condition, Field, Operator, Program, Value};
    let voip = Condition::All(vec![
        Condition::Test {
            field: Field::PhoneType,
            op: Operator::Eq,
            value: Value::Text("voip".into()),
        },
        Condition::Test {
            field: Field::PhoneOtpVerified,
            op: Operator::Eq,
            value: Value::Bool(false),
        },
    ]);
    let swap = Condition::Test {
        field: Field::SimSwapDaysAgo,
        op: Operator::Lt,
        value: Value::Number(7.0),
    };
    Program {
        rules: vec![voip, swap],
    }
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn the_interpreter_decides_declarative_rules_in_the_sandbox() {
    let (_dir, db) = db();
    let runtime = runtime(db);
    let interpreter = runtime
        .load_interpreter(&guest("workflow_interpreter"))
        .expect("loads");
    let program = seed_program().encode();
    let run = |event: &RuleEvent, explain: bool| {
        block_on(runtime.invoke_interpreter(
            &interpreter,
            &scope("a"),
            0,
            event,
            &program,
            2,
            explain,
        ))
    };
    let (usage, result) = run(&event("voip", Some(3), &[]), false);
    let evaluation = result.expect("evaluates");
    assert_eq!(evaluation.matched, vec![0, 1]);
    assert!(evaluation.explanation.is_empty());
    assert!(
        usage.fuel > 0 && usage.fuel < Limits::default().fuel,
        "{usage:?}"
    );
    let (_, result) = run(&event("mobile", None, &[]), true);
    let evaluation = result.expect("evaluates");
    assert!(evaluation.matched.is_empty());
    // Four nodes: the `all`, its two comparisons, and the SIM-swap comparison.
    let values: Vec<Option<&str>> = evaluation
        .explanation
        .iter()
        .map(|outcome| outcome.value.as_deref())
        .collect();
    assert_eq!(
        values,
        [None, Some("\"mobile\""), Some("false"), Some("null")]
    );
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn a_bad_or_hostile_program_is_contained() {
    let (_dir, db) = db();
    let runtime = runtime(db);
    let interpreter = runtime
        .load_interpreter(&guest("workflow_interpreter"))
        .expect("loads");
    let event = event("voip", None, &[]);
    let (_, garbage) = block_on(runtime.invoke_interpreter(
        &interpreter,
        &scope("a"),
        0,
        &event,
        &[0xff; 9],
        1,
        false,
    ));
    assert!(
        matches!(&garbage, Err(Failure::Plugin { code, .. }) if code == "bad-program"),
        "{garbage:?}"
    );
    // The host never builds such a program (validation bounds depth and size), but the
    // sandbox holds if one arrives: `not` (variant 2) nested 400,000 deep, far past
    // any stack.
    let deep = vec![2u8; 400_000];
    let (_, result) =
        block_on(runtime.invoke_interpreter(&interpreter, &scope("a"), 0, &event, &deep, 1, false));
    assert!(result.is_err(), "{result:?}");
    let too_big = vec![0u8; MAX_PROGRAM_BYTES + 1];
    let (_, result) = block_on(runtime.invoke_interpreter(
        &interpreter,
        &scope("a"),
        0,
        &event,
        &too_big,
        1,
        false,
    ));
    assert!(
        matches!(result, Err(Failure::InputTooLarge { .. })),
        "{result:?}"
    );
    // A rule count that does not match the program makes the answer malformed.
    let program = seed_program().encode();
    let (_, result) = block_on(runtime.invoke_interpreter(
        &interpreter,
        &scope("a"),
        0,
        &event,
        &program,
        1,
        false,
    ));
    assert!(
        result.is_ok(),
        "only rule 0 matches a voip number without a swap"
    );
    let mut swapped = super::testing::event("voip");
    swapped.phone.sim_swap_days_ago = Some(1);
    let (_, result) = block_on(runtime.invoke_interpreter(
        &interpreter,
        &scope("a"),
        0,
        &swapped,
        &program,
        1,
        false,
    ));
    assert!(
        matches!(result, Err(Failure::Malformed { .. })),
        "{result:?}"
    );
}

/// Runs `rule` for `tenant` on `event` in a warm instance of `pool` if one is parked.
fn warm_call(
    runtime: &PluginRuntime,
    rule: &Loaded,
    pool: &WarmPool,
    tenant: &str,
    now: i64,
    event: &RuleEvent,
) -> (Usage, Result<Vec<RuleAction>, Failure>) {
    block_on(runtime.invoke_rule_warm(rule, pool, &scope(tenant), now, event))
}

/// The flags a rule's answer carries.
fn flags(answer: &Result<Vec<RuleAction>, Failure>) -> Vec<String> {
    answer
        .as_ref()
        .expect("the rule answered")
        .iter()
        .filter_map(|action| match action {
            RuleAction::AddFlag { flag } => Some(flag.clone()),
            _ => None,
        })
        .collect()
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn a_warm_instance_serves_its_binding_again_with_its_own_budget_and_flow_time() {
    let (_dir, db) = db();
    let runtime = runtime(db);
    let abuser = rule(&runtime, "hostile_abuser");
    let warm = runtime.warm_pool("a");
    let told = event("mobile", None, &[("instance", "1")]);
    let call = |pool: &WarmPool, tenant: &str, now: i64, event: &RuleEvent| {
        warm_call(&runtime, &abuser, pool, tenant, now, event)
    };

    let (first_usage, first) = call(&warm, "a", 1_000, &told);
    assert_eq!(flags(&first), ["instance:1", "wall:1000"]);
    assert_eq!(
        warm.parked(),
        1,
        "a call that returned leaves its instance warm"
    );
    let (second_usage, second) = call(&warm, "a", 2_000, &told);
    assert_eq!(
        flags(&second),
        ["instance:2", "wall:2000"],
        "the warm instance served the call, at the new flow time"
    );
    assert!(
        second_usage.fuel <= first_usage.fuel,
        "fuel is the call's own, not the instance's total: {} then {}",
        first_usage.fuel,
        second_usage.fuel
    );
    let stats = runtime.stats().warm;
    assert_eq!((stats.reused, stats.instantiated, stats.parked), (1, 1, 1));

    // Another tenant's binding of the same code never gets this instance.
    let other = runtime.warm_pool("b");
    let (_, theirs) = call(&other, "b", 2_000, &told);
    assert_eq!(flags(&theirs)[0], "instance:1");
    // Nor does a call outside any binding (dry runs, rule tests, the command line).
    let (_, fresh) = block_on(runtime.invoke_rule(&abuser, &scope("a"), 2_000, &told));
    assert_eq!(flags(&fresh)[0], "instance:1");
    assert_eq!(warm.parked(), 1);

    // A call that traps takes its instance with it: the next call starts afresh.
    let trap = event("mobile", None, &[("instance", "1"), ("trap", "1")]);
    let (_, trapped) = call(&warm, "a", 3_000, &trap);
    assert!(matches!(trapped, Err(Failure::Trap { .. })), "{trapped:?}");
    assert_eq!(warm.parked(), 0, "a trapped instance is never parked");
    let (_, after) = call(&warm, "a", 4_000, &told);
    assert_eq!(flags(&after), ["instance:1", "wall:4000"]);
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn an_instance_that_ran_out_of_time_is_not_kept_and_no_bound_keeps_none() {
    let (_dir, db) = db();
    let runtime = fuel_to_spare(db);
    let spin = rule(&runtime, "hostile_spin");
    let warm = runtime.warm_pool("a");
    let (_, result) = warm_call(&runtime, &spin, &warm, "a", 0, &event("mobile", None, &[]));
    assert!(matches!(result, Err(Failure::Timeout { .. })), "{result:?}");
    assert_eq!(warm.parked(), 0);

    let (_dir, db) = self::db();
    let bounds = PluginBounds {
        warm_instances: 0,
        ..PluginBounds::default()
    };
    let cold = PluginRuntime::with_bounds(db, Limits::default(), bounds).expect("runtime");
    let abuser = rule(&cold, "hostile_abuser");
    let pool = cold.warm_pool("a");
    let told = event("mobile", None, &[("instance", "1")]);
    for _ in 0..3 {
        let (_, answer) = warm_call(&cold, &abuser, &pool, "a", 0, &told);
        assert_eq!(flags(&answer)[0], "instance:1", "every call is fresh");
    }
    assert_eq!(cold.stats().warm.parked, 0);
}

/// Whether a component's bytes hold `name` (import names are in them).
fn names(bytes: &[u8], name: &str) -> bool {
    bytes
        .windows(name.len())
        .any(|window| window == name.as_bytes())
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn a_rule_built_against_api_0_1_0_loads_and_runs_on_this_host() {
    let (_dir, db) = db();
    let runtime = runtime(db);
    // The component imports the contract at 0.1.0 (import names are in its bytes).
    let bytes = guest("guest_contract_v010");
    assert!(names(&bytes, "dialgate:plugin/log@0.1.0"));
    assert!(!names(&bytes, "@0.1.1"));
    let rule = rule(&runtime, "guest_contract_v010");
    let (_, actions) =
        block_on(runtime.invoke_rule(&rule, &scope("a"), 0, &event("voip", None, &[])));
    assert_eq!(
        flags(&actions),
        ["v0.1.0 saw voip at phone_lookup_complete"]
    );
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn a_0_2_0_rule_reads_the_fraud_signals_in_its_event() {
    let (_dir, db) = db();
    let runtime = runtime(db);
    let rule = rule(&runtime, "guest_signals");
    let mut with = event("mobile", None, &[]);
    with.fraud = Some(crate::model::rules::FraudSignals {
        pumping_risk: 85,
        prefix_conversion_rate: Some(0.125),
        prefix_sends_1h: 40,
        geo_permitted: false,
    });
    let (_, actions) = block_on(runtime.invoke_rule(&rule, &scope("a"), 0, &with));
    assert_eq!(
        flags(&actions),
        ["signals risk=85 conversion=0.125 sends=40 geo=false"]
    );
    // Without signals the event carries none.
    let (_, actions) =
        block_on(runtime.invoke_rule(&rule, &scope("a"), 0, &event("mobile", None, &[])));
    assert_eq!(flags(&actions), ["signals none"]);
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn a_rule_built_against_api_0_1_1_still_reads_the_signals_through_its_interface() {
    let (_dir, db) = db();
    let runtime = runtime(db);
    let rule = rule(&runtime, "guest_contract_v011_signals");
    let warm = runtime.warm_pool("a");
    let mut with = event("mobile", None, &[]);
    with.fraud = Some(crate::model::rules::FraudSignals {
        pumping_risk: 72,
        prefix_conversion_rate: None,
        prefix_sends_1h: 9,
        geo_permitted: true,
    });
    let (_, actions) = block_on(runtime.invoke_rule_warm(&rule, &warm, &scope("a"), 0, &with));
    assert_eq!(flags(&actions), ["v0.1.1 signals risk=72 sends=9 geo=true"]);
    // The next call, served warm, sees its own event's signals: none.
    let plain = event("mobile", None, &[]);
    let (_, actions) = block_on(runtime.invoke_rule_warm(&rule, &warm, &scope("a"), 0, &plain));
    assert_eq!(flags(&actions), ["v0.1.1 signals none"]);
}

#[test]
fn the_contract_line_comes_from_the_imports_and_decides_the_exports_and_grants() {
    let rule_0_1 = [
        ("dialgate:plugin/rule-types@0.1.0", true),
        ("dialgate:plugin/log@0.1.0", true),
    ];
    assert_eq!(
        inspect::check(&["on-event"], &rule_0_1),
        Ok((Kind::Rule, Contract::V0_1))
    );
    let signals_0_1 = [("dialgate:plugin/signals@0.1.1", true)];
    assert_eq!(
        inspect::check(&["on-event"], &signals_0_1),
        Ok((Kind::Rule, Contract::V0_1))
    );
    // 0.2.0 has no `signals`: the signals are in the event.
    let signals_0_2 = [("dialgate:plugin/signals@0.2.0", true)];
    assert!(matches!(
        inspect::check(&["on-event"], &signals_0_2),
        Err(LoadError::ForbiddenImport { .. })
    ));
    // A messaging adapter exports `send` in 0.1 and `send-message` in 0.2.0.
    let messaging = |version: &str| [(format!("dialgate:plugin/messaging-types@{version}"), true)];
    let check = |exports: &[&str], version: &str| {
        let imports = messaging(version);
        let imports: Vec<(&str, bool)> = imports.iter().map(|(n, i)| (n.as_str(), *i)).collect();
        inspect::check(exports, &imports)
    };
    assert_eq!(
        check(&["send", "parse-callback"], "0.1.1"),
        Ok((Kind::MessagingAdapter, Contract::V0_1))
    );
    assert_eq!(
        check(&["send-message", "parse-callback"], "0.2.0"),
        Ok((Kind::MessagingAdapter, Contract::V0_2))
    );
    assert!(matches!(
        check(&["send", "parse-callback"], "0.2.0"),
        Err(LoadError::UnknownWorld(_))
    ));
    // An unknown version is refused naming what this host speaks; so is a mix.
    let unknown = check(&["send-message", "parse-callback"], "0.3.0").expect_err("refused");
    assert_eq!(
        unknown.to_string(),
        "the component speaks dialgate:plugin@0.3.0; this host speaks @0.1.0, @0.1.1, @0.2.0"
    );
    let mixed = [
        ("dialgate:plugin/types@0.1.1", true),
        ("dialgate:plugin/rule-types@0.2.0", true),
    ];
    assert!(matches!(
        inspect::check(&["on-event"], &mixed),
        Err(LoadError::MixedVersions { .. })
    ));
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn a_messaging_adapter_built_against_api_0_1_1_exports_send_and_still_sends() {
    let (_dir, db) = db();
    let runtime = runtime(db);
    let bytes = guest("guest_contract_v01_messaging");
    assert!(names(&bytes, "dialgate:plugin/messaging-types@0.1.1"));
    assert!(!names(&bytes, "dialgate:plugin/messaging-types@0.2.0"));
    let adapter = runtime
        .load(&bytes, Some(Kind::MessagingAdapter))
        .expect("a 0.1 messaging adapter loads");
    let trial = Arc::new(Trial::scripted(vec![(
        200,
        Vec::new(),
        br#"{"messages":[{"message-id":"SM7","status":"0"}]}"#.to_vec(),
    )]));
    let call = adapter_call(
        &[("base_url", "http://127.0.0.1:9")],
        Some(Arc::clone(&trial)),
    );
    let message = AdapterMessage {
        id: "m1".to_owned(),
        to: "+14155552671".to_owned(),
        channel: Channel::Sms,
        body: "Your code is 123456".to_owned(),
        language: "en".to_owned(),
    };
    let (_, sent) = block_on(runtime.invoke_send(&adapter, &scope("a"), 0, call, message));
    let dispatch = sent.expect("the call ran").expect("the provider accepted");
    assert_eq!(dispatch.provider_message_id, "SM7");
    let exchanges = trial.exchanges.lock();
    assert_eq!(exchanges[0].url, "http://127.0.0.1:9/sms/json");
    assert!(
        exchanges[0].body.contains("to=%2B14155552671"),
        "{}",
        exchanges[0].body
    );
}

/// An adapter call with `config`, granted 127.0.0.1:9 under a loopback egress policy,
/// its exchanges recorded (and scripted) by `trial`.
fn adapter_call(config: &[(&str, &str)], trial: Option<Arc<Trial>>) -> Arc<AdapterCall> {
    Arc::new(AdapterCall {
        config: config
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
        secrets: Default::default(),
        grant: HttpGrant {
            hosts: vec!["127.0.0.1:9".to_owned()],
        },
        timeout: None,
        egress: crate::egress::Egress::new(crate::egress::AllowList::loopback()),
        trial,
        client: None,
    })
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn a_lookup_adapter_built_against_api_0_1_1_still_answers() {
    let (_dir, db) = db();
    let runtime = runtime(db);
    let adapter = runtime
        .load(
            &guest("guest_contract_v01_lookup"),
            Some(Kind::LookupAdapter),
        )
        .expect("a 0.1 lookup adapter loads");
    let call = adapter_call(&[("carrier", "Old Telecom")], None);
    let (_, found) =
        block_on(runtime.invoke_lookup(&adapter, &scope("a"), 0, call, "+14155552671"));
    let found = found.expect("answered");
    assert_eq!(found.carrier_name.as_deref(), Some("Old Telecom"));
    assert_eq!(found.line_status.as_deref(), Some("active"));
}
