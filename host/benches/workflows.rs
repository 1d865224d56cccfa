//! Criterion benchmarks of declarative workflow rules: evaluating 1, 10 and 100 simple
//! rules at a trigger as the host does, natively and bounded (`workflows/native`: the
//! program decoded once, as the live snapshot keeps it), and, for comparison, in the
//! sandboxed interpreter component (`workflows/sandboxed`: a fresh instance, the
//! event and program passed in, the program decoded and evaluated, the matches
//! returned). Builds the in-tree guests for wasm32-wasip2 first (the target must be
//! installed: `rustup target add wasm32-wasip2`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dialgate::plugins::testing::block_on;
use dialgate::plugins::{testing, Limits, PluginRuntime, Scope};
use dialgate::store::Db;
use dialgate::workflows;
use dialgate::workflows::eval::{self, CompiledProgram};
use dialgate_sdk::workflow::Program;
use serde_json::json;

/// `count` rules shaped like seed 004's `otp_for_voip`: two comparisons under `all`,
/// each with its own threshold so they differ.
fn program(count: usize) -> Program {
    let rules = (0..count)
        .map(|i| {
            let body = json!({
                "rule_id": format!("rule_{i}"),
                "trigger": "phone_lookup_complete",
                "conditions": {"all": [
                    {"field": "phone_type", "operator": "eq", "value": "voip"},
                    {"field": "risk_score", "operator": "gte", "value": i % 100}
                ]},
                "actions": [{"type": "add_flag", "flag": format!("flag_{i}")}]
            });
            workflows::definition(&body, None)
                .expect("a valid rule")
                .compiled
                .condition
        })
        .collect();
    Program { rules }
}

fn native(c: &mut Criterion) {
    let limits = Limits::default();
    let mut event = testing::event("voip");
    event.phone.risk_score = 50;
    let mut group = c.benchmark_group("workflows/native");
    for count in [1, 10, 100] {
        let compiled = CompiledProgram::new(program(count));
        group.bench_with_input(
            BenchmarkId::from_parameter(count),
            &compiled,
            |b, compiled| {
                b.iter(|| {
                    let (_, result) = eval::evaluate(compiled, black_box(&event), &limits, false);
                    black_box(result.expect("evaluates").matched.len())
                });
            },
        );
    }
    group.finish();
}

fn sandboxed(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open_sled(dir.path()).expect("open sled");
    let runtime = PluginRuntime::new(db, Limits::default()).expect("runtime");
    let interpreter = runtime
        .load_interpreter(&testing::guest_component("workflow_interpreter"))
        .expect("the interpreter loads");
    let scope = Scope {
        tenant_id: "tenant".to_owned(),
        plugin_id: "workflow-interpreter".to_owned(),
    };
    let mut event = testing::event("voip");
    event.phone.risk_score = 50;
    let mut group = c.benchmark_group("workflows/sandboxed");
    for count in [1, 10, 100] {
        let bytes = program(count).encode();
        group.bench_with_input(BenchmarkId::from_parameter(count), &bytes, |b, bytes| {
            b.iter(|| {
                let (_, result) = block_on(runtime.invoke_interpreter(
                    &interpreter,
                    &scope,
                    0,
                    black_box(&event),
                    bytes,
                    count,
                    false,
                ));
                black_box(result.expect("evaluates").matched.len())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, native, sandboxed);
criterion_main!(benches);
