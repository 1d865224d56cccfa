//! Criterion benchmarks of the plugin runtime: one rule invocation at a trigger
//! (instantiate a fresh instance, call `on-event`, decode the actions), the same in a
//! warm instance of the binding (as a server's calls run), and chains of ten. Builds the in-tree guests for wasm32-wasip2 first (the target must be
//! installed: `rustup target add wasm32-wasip2`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use dialgate::plugins::testing::block_on;
use dialgate::plugins::{testing, Kind, Limits, PluginRuntime, Scope};
use dialgate::store::Db;

fn rules(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open_sled(dir.path()).expect("open sled");
    let runtime = PluginRuntime::new(db, Limits::default()).expect("runtime");
    let rule = runtime
        .load(&testing::guest_component("otp_for_voip"), Some(Kind::Rule))
        .expect("a rule");
    let scope = Scope {
        tenant_id: "tenant".to_owned(),
        plugin_id: "otp-for-voip".to_owned(),
    };
    let event = testing::event("voip");
    c.bench_function("rule/invoke_fresh_instance", |b| {
        b.iter(|| {
            let (_, actions) = block_on(runtime.invoke_rule(&rule, &scope, 0, black_box(&event)));
            black_box(actions.expect("runs").len())
        });
    });
    let warm = runtime.warm_pool("tenant");
    c.bench_function("rule/invoke_warm_instance", |b| {
        b.iter(|| {
            let (_, actions) =
                block_on(runtime.invoke_rule_warm(&rule, &warm, &scope, 0, black_box(&event)));
            black_box(actions.expect("runs").len())
        });
    });
    // Ten bindings, as a chain of ten rules at one trigger has.
    let pools: Vec<_> = (0..10).map(|_| runtime.warm_pool("tenant")).collect();
    c.bench_function("rule/chain_of_10_warm", |b| {
        b.iter(|| {
            for pool in &pools {
                let (_, actions) =
                    block_on(runtime.invoke_rule_warm(&rule, pool, &scope, 0, black_box(&event)));
                black_box(actions.expect("runs").len());
            }
        });
    });
    c.bench_function("rule/chain_of_10", |b| {
        b.iter(|| {
            for _ in 0..10 {
                let (_, actions) =
                    block_on(runtime.invoke_rule(&rule, &scope, 0, black_box(&event)));
                black_box(actions.expect("runs").len());
            }
        });
    });
}

criterion_group!(benches, rules);
criterion_main!(benches);
