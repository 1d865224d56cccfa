//! Benchmarks of personal data at rest: sealing and opening one verification record
//! (as the codec stores it, about 200 bytes compressed) and hashing a number into the
//! name keys use. These run on every write and read of a personal record and on every
//! send's rate-limit check, so their cost is set beside a request's.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use dialgate::store::personal::Personal;
use dialgate::store::Tree;

fn personal(c: &mut Criterion) {
    let keys = Personal::new(&[7; 32]);
    let key = b"01a22dae-3757-708c-8d45-66a46ce95b9a/019ad2c4-4a64-7c1e-8f1e-2b9a7c3d4e5f";
    let record = vec![0x5Au8; 200];
    let sealed = keys.seal(Tree::Verifications, key, &record);
    c.bench_function("seal a 200-byte record", |b| {
        b.iter(|| keys.seal(Tree::Verifications, black_box(key), black_box(&record)))
    });
    c.bench_function("open a 200-byte record", |b| {
        b.iter(|| {
            keys.open(Tree::Verifications, black_box(key), black_box(&sealed))
                .expect("opens")
        })
    });
    c.bench_function("name a number", |b| {
        b.iter(|| {
            keys.name(
                black_box("01a22dae-3757-708c"),
                &[black_box("+447400123456")],
            )
        })
    });
}

criterion_group!(benches, personal);
criterion_main!(benches);
