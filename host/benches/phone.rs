//! Criterion micro-benchmarks of the per-number hot path: parse + classify + score,
//! and of code hashing and checking.

use std::hint::black_box;

use chrono::{Duration, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dialgate::otp::{CodeHasher, CodeState};
use dialgate::phone::risk::{self, RiskPolicy, Signals};
use dialgate::phone::{self, carrier};

/// Ten countries, interleaved, in the mixed formats clients send.
const NUMBERS: [&str; 10] = [
    "+1 415-555-2671",
    "+44 20 7946 0123",
    "+998 90 123 45 67",
    "+49 151 23456789",
    "+33 6 12 34 56 78",
    "+7 916 123-45-67",
    "+55 11 98765-4321",
    "+91 98765 43210",
    "+86 138 1234 5678",
    "+34 612 34 56 78",
];

fn parse_classify_score(c: &mut Criterion) {
    let policy = RiskPolicy::default();
    carrier::preload();
    let mut group = c.benchmark_group("phone");
    group.throughput(Throughput::Elements(NUMBERS.len() as u64));
    group.bench_function("parse_classify_score_10_countries", |b| {
        b.iter(|| {
            for input in NUMBERS {
                let number = phone::parse(black_box(input), None)
                    .expect("no country hint")
                    .expect("parses");
                let carrier_name = carrier::original_operator(&number.e164);
                let signals = Signals {
                    line_type: Some(number.line_type),
                    phone_country: number.region.as_deref(),
                    applicant_country: Some("US"),
                    carrier_name,
                    ..Signals::default()
                };
                black_box(risk::assess(&signals, &policy));
            }
        });
    });
    group.bench_function("carrier_lookup_10_countries", |b| {
        let e164: Vec<String> = NUMBERS
            .iter()
            .map(|n| phone::to_e164(n).expect("valid"))
            .collect();
        b.iter(|| {
            for number in &e164 {
                black_box(carrier::original_operator(black_box(number)));
            }
        });
    });
    group.finish();
}

fn code_check(c: &mut Criterion) {
    let hasher = CodeHasher::new([42; 32]);
    let now = Utc::now();
    c.bench_function("otp/issue_and_check", |b| {
        b.iter(|| {
            let mut state = CodeState {
                active: None,
                attempts: 0,
                max_attempts: 2,
            };
            state.issue(
                &hasher,
                "verification",
                "123456",
                now,
                Duration::minutes(10),
            );
            black_box(state.check(&hasher, "verification", black_box("123456"), now));
        });
    });
}

criterion_group!(benches, parse_classify_score, code_check);
criterion_main!(benches);
