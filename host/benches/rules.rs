//! Criterion benchmarks of the plugin runtime: one rule invocation at a trigger
//! (instantiate a fresh instance, call `on-event`, decode the actions) and a chain of
//! ten. Builds `rules/otp-for-voip` for wasm32-wasip2 first (the target must be
//! installed: `rustup target add wasm32-wasip2`).

use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;

use criterion::{criterion_group, criterion_main, Criterion};
use dialgate::plugins::wit::{self, Event};
use dialgate::plugins::{Limits, PluginRuntime, Scope};
use dialgate::store::Db;

fn component() -> Vec<u8> {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ sits in the workspace")
        .to_path_buf();
    let target = workspace.join("target/guests");
    let status = Command::new(env!("CARGO"))
        .current_dir(&workspace)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "otp-for-voip",
        ])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "build the rule (rustup target add wasm32-wasip2)"
    );
    std::fs::read(target.join("wasm32-wasip2/release/otp_for_voip.wasm")).expect("the component")
}

fn event() -> Event {
    Event {
        trigger: wit::Trigger::PhoneLookupComplete,
        tenant_id: "tenant".to_owned(),
        verification: wit::VerificationSnapshot {
            id: Some("verification".to_owned()),
            status: wit::VerificationStatus::NotFinished,
            channel: None,
            attempts: 0,
            resends: 0,
            flags: Vec::new(),
            otp_verified: false,
        },
        phone: wit::PhoneIntelligence {
            e164: "+14155552671".to_owned(),
            line_type: "voip".to_owned(),
            country: Some("US".to_owned()),
            carrier_name: None,
            carrier_is_original: false,
            risk_score: 15,
            risk_level: "low".to_owned(),
            risk_factors: Vec::new(),
            ported: None,
            ported_days_ago: None,
            sim_swap_days_ago: None,
            line_status: None,
            roaming: None,
        },
        applicant_id: Some("applicant".to_owned()),
        applicant_country: None,
        config: Vec::new(),
    }
}

fn rules(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open_sled(dir.path()).expect("open sled");
    let runtime = PluginRuntime::new(db, Limits::default()).expect("runtime");
    let rule = runtime.compile_rule(&component()).expect("a rule");
    let scope = Scope {
        tenant_id: "tenant".to_owned(),
        plugin_id: "otp-for-voip".to_owned(),
    };
    let event = event();
    c.bench_function("rule/invoke_fresh_instance", |b| {
        b.iter(|| {
            let invocation = runtime
                .invoke_rule(&rule, &scope, 0, black_box(&event))
                .expect("runs");
            black_box(invocation.actions.len())
        });
    });
    c.bench_function("rule/chain_of_10", |b| {
        b.iter(|| {
            for _ in 0..10 {
                let invocation = runtime
                    .invoke_rule(&rule, &scope, 0, black_box(&event))
                    .expect("runs");
                black_box(invocation.actions.len());
            }
        });
    });
}

criterion_group!(benches, rules);
criterion_main!(benches);
