//! Benchmarks of the routing decision: ordering a tenant's providers for one send
//! (eligibility by channel, country and prefix, each provider's breaker and window
//! statistics read from the ledger, the strategy's sort, a rule's forced provider),
//! for 3 and 20 providers under each strategy. Criterion measures the mean; a second
//! pass times 100,000 single decisions and prints their p50 and p99.

use std::hint::black_box;
use std::time::Instant;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dialgate::model::Channel;
use dialgate::routing::{
    plan, Destination, Ledger, Outcome, Policy, Route, RuleRoute, Strategy, View,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// `count` SMS providers; a third serve only Uzbekistan, a third only +99890.
fn routes(count: usize) -> Vec<Route> {
    (0..count)
        .map(|i| Route {
            id: format!("prv_{i:032}"),
            name: format!("provider-{i}"),
            channels: vec![Channel::Sms, Channel::Whatsapp],
            countries: if i % 3 == 1 {
                vec!["UZ".into()]
            } else {
                vec![]
            },
            prefixes: if i % 3 == 2 {
                vec!["+99890".into(), "+99891".into()]
            } else {
                vec![]
            },
            priority: u32::try_from(i % 7).unwrap_or(0),
            weight: u32::try_from(1 + i % 5).unwrap_or(1),
            cost_per_message: 0.01 + (i % 4) as f64 * 0.005,
            enabled: true,
        })
        .collect()
}

/// A ledger with some history for every provider.
fn ledger(routes: &[Route], policy: &Policy) -> Ledger {
    let ledger = Ledger::default();
    let now = Utc::now();
    for (i, route) in routes.iter().enumerate() {
        let cell = ledger.cell("tenant", &route.id, "UZ");
        let mut stats = cell.stats.lock();
        for n in 0..50 {
            let outcome = if (n + i) % 10 == 0 {
                Outcome::Error
            } else {
                Outcome::Accepted {
                    latency_ms: 50 + (i as u64) * 10,
                }
            };
            stats.record(policy, now, outcome);
            stats.record(policy, now, Outcome::Delivered { after_ms: 2_000 });
        }
    }
    ledger
}

const UZ: Destination<'static> = Destination {
    e164: "+998901234567",
    country: Some("UZ"),
    channel: Channel::Sms,
};

fn decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("routing/decision");
    for count in [3usize, 20] {
        let routes = routes(count);
        for strategy in [
            Strategy::Priority,
            Strategy::Weighted,
            Strategy::LeastCost,
            Strategy::BestPerformance,
        ] {
            let policy = Policy {
                strategy,
                ..Policy::default()
            };
            let ledger = ledger(&routes, &policy);
            let mut rng = StdRng::seed_from_u64(1);
            let rule = RuleRoute {
                forced: Some("provider-2"),
                forbidden: &[],
            };
            group.bench_with_input(
                BenchmarkId::new(strategy.as_str(), count),
                &routes,
                |b, routes| {
                    b.iter(|| {
                        let view = View {
                            health: &ledger,
                            tenant: "tenant",
                            country: "UZ",
                            policy: &policy,
                            now: Utc::now(),
                        };
                        black_box(plan(routes, &policy, UZ, &rule, &view, &mut rng))
                    })
                },
            );
        }
    }
    group.finish();
    percentiles();
}

/// Times single decisions (20 providers, best performance: the costliest strategy)
/// and prints p50 and p99.
fn percentiles() {
    let routes = routes(20);
    for strategy in [Strategy::Priority, Strategy::BestPerformance] {
        let policy = Policy {
            strategy,
            ..Policy::default()
        };
        let ledger = ledger(&routes, &policy);
        let mut rng = StdRng::seed_from_u64(2);
        let mut samples = Vec::with_capacity(100_000);
        for _ in 0..100_000 {
            let started = Instant::now();
            let view = View {
                health: &ledger,
                tenant: "tenant",
                country: "UZ",
                policy: &policy,
                now: Utc::now(),
            };
            black_box(plan(
                &routes,
                &policy,
                UZ,
                &RuleRoute::default(),
                &view,
                &mut rng,
            ));
            samples.push(started.elapsed().as_nanos());
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize] as f64 / 1000.0;
        println!(
            "routing decision, 20 providers, {}: p50 {:.2} µs, p99 {:.2} µs",
            strategy.as_str(),
            at(0.50),
            at(0.99)
        );
    }
}

criterion_group!(benches, decide);
criterion_main!(benches);
