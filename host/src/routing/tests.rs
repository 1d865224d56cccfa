//! Unit tests of routing: each strategy's order, eligibility, rules' forced and
//! forbidden providers, the breaker's transitions and the statistics window.

use chrono::{TimeZone, Utc};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;

fn route(id: &str, priority: u32, weight: u32, cost: f64) -> Route {
    Route {
        id: id.to_owned(),
        name: id.to_owned(),
        channels: vec![Channel::Sms],
        countries: vec![],
        prefixes: vec![],
        priority,
        weight,
        cost_per_message: cost,
        enabled: true,
    }
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0)
        .single()
        .expect("a valid time")
}

const UZ: Destination<'static> = Destination {
    e164: "+998901234567",
    country: Some("UZ"),
    channel: Channel::Sms,
};

fn order(routes: &[Route], policy: &Policy, ledger: &Ledger, rule: &RuleRoute<'_>) -> Vec<String> {
    let view = View {
        health: ledger,
        tenant: "t",
        country: "UZ",
        policy,
        now: at(0),
    };
    plan(
        routes,
        policy,
        UZ,
        rule,
        &view,
        &mut StdRng::seed_from_u64(7),
    )
    .order
}

fn with(strategy: Strategy) -> Policy {
    Policy {
        strategy,
        ..Policy::default()
    }
}

#[test]
fn priority_orders_by_priority_then_name() {
    let routes = [
        route("b", 2, 1, 0.0),
        route("c", 1, 1, 0.0),
        route("a", 2, 1, 0.0),
    ];
    let got = order(
        &routes,
        &with(Strategy::Priority),
        &Ledger::default(),
        &RuleRoute::default(),
    );
    assert_eq!(got, ["c", "a", "b"]);
}

#[test]
fn least_cost_orders_by_cost_then_priority() {
    let routes = [
        route("a", 1, 1, 0.05),
        route("b", 3, 1, 0.01),
        route("c", 2, 1, 0.01),
    ];
    let got = order(
        &routes,
        &with(Strategy::LeastCost),
        &Ledger::default(),
        &RuleRoute::default(),
    );
    assert_eq!(got, ["c", "b", "a"]);
}

#[test]
fn best_performance_prefers_the_provider_that_delivers() {
    let policy = with(Strategy::BestPerformance);
    let ledger = Ledger::default();
    let routes = [
        route("slow", 1, 1, 0.0),
        route("good", 2, 1, 0.0),
        route("new", 3, 1, 0.0),
    ];
    for _ in 0..20 {
        let cell = ledger.cell("t", "good", "UZ");
        let mut stats = cell.stats.lock();
        stats.record(&policy, at(0), Outcome::Accepted { latency_ms: 100 });
        stats.record(&policy, at(0), Outcome::Delivered { after_ms: 900 });
        drop(stats);
        let cell = ledger.cell("t", "slow", "UZ");
        let mut stats = cell.stats.lock();
        stats.record(&policy, at(0), Outcome::Accepted { latency_ms: 3_000 });
        stats.record(&policy, at(0), Outcome::Error);
        stats.record(&policy, at(0), Outcome::Undelivered);
    }
    let got = order(&routes, &policy, &ledger, &RuleRoute::default());
    assert_eq!(got, ["good", "new", "slow"]);
    let good = ledger
        .cell("t", "good", "UZ")
        .stats
        .lock()
        .performance(&policy, at(0));
    assert_eq!(good.attempts, 20);
    assert_eq!(good.delivery_rate, Some(1.0));
    assert_eq!(good.mean_latency_ms, Some(100.0));
    let slow = ledger
        .cell("t", "slow", "UZ")
        .stats
        .lock()
        .performance(&policy, at(0));
    assert_eq!(slow.error_rate, 0.5);
    // Another country's history does not count here.
    let elsewhere = ledger
        .cell("t", "good", "KZ")
        .stats
        .lock()
        .performance(&policy, at(0));
    assert_eq!(elsewhere.attempts, 0);
}

#[test]
fn weighted_follows_the_weights() {
    let policy = with(Strategy::Weighted);
    let routes = [route("heavy", 1, 9, 0.0), route("light", 1, 1, 0.0)];
    let ledger = Ledger::default();
    let view = View {
        health: &ledger,
        tenant: "t",
        country: "UZ",
        policy: &policy,
        now: at(0),
    };
    let mut rng = StdRng::seed_from_u64(42);
    let mut heavy_first = 0;
    for _ in 0..10_000 {
        let plan = plan(&routes, &policy, UZ, &RuleRoute::default(), &view, &mut rng);
        assert_eq!(plan.order.len(), 2, "both are always in the failover order");
        if plan.order[0] == "heavy" {
            heavy_first += 1;
        }
    }
    assert!(
        (8_700..=9_300).contains(&heavy_first),
        "heavy first {heavy_first} times of 10000, expected about 9000"
    );
}

#[test]
fn eligibility_filters_channel_destination_and_disabled() {
    let mut voice = route("voice", 1, 1, 0.0);
    voice.channels = vec![Channel::Voice];
    let mut kz = route("kz", 1, 1, 0.0);
    kz.countries = vec!["KZ".into()];
    let mut prefix = route("beeline", 2, 1, 0.0);
    prefix.prefixes = vec!["+99890".into()];
    let mut other_prefix = route("ucell", 2, 1, 0.0);
    other_prefix.prefixes = vec!["+99893".into()];
    let mut off = route("off", 0, 1, 0.0);
    off.enabled = false;
    let routes = [
        voice,
        kz,
        prefix,
        other_prefix,
        off,
        route("any", 3, 1, 0.0),
    ];
    let policy = Policy::default();
    let ledger = Ledger::default();
    let view = View {
        health: &ledger,
        tenant: "t",
        country: "UZ",
        policy: &policy,
        now: at(0),
    };
    let plan = plan(
        &routes,
        &policy,
        UZ,
        &RuleRoute::default(),
        &view,
        &mut StdRng::seed_from_u64(1),
    );
    assert_eq!(plan.order, ["beeline", "any"]);
    let verdicts: Vec<_> = plan
        .considered
        .iter()
        .map(|c| (c.name.as_str(), c.verdict))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("voice", "channel"),
            ("kz", "destination"),
            ("beeline", "selected"),
            ("ucell", "destination"),
            ("off", "disabled"),
            ("any", "selected"),
        ]
    );
}

#[test]
fn rules_force_and_forbid_providers() {
    let routes = [
        route("a", 1, 1, 0.0),
        route("b", 2, 1, 0.0),
        route("c", 3, 1, 0.0),
    ];
    let policy = Policy::default();
    let ledger = Ledger::default();
    let forced = RuleRoute {
        forced: Some("C"),
        forbidden: &[],
    };
    assert_eq!(order(&routes, &policy, &ledger, &forced), ["c", "a", "b"]);
    let forbidden = ["a".to_owned()];
    let rule = RuleRoute {
        forced: Some("a"),
        forbidden: &forbidden,
    };
    // Forbidding wins over forcing.
    assert_eq!(order(&routes, &policy, &ledger, &rule), ["b", "c"]);
    let unknown = RuleRoute {
        forced: Some("nobody"),
        forbidden: &[],
    };
    assert_eq!(order(&routes, &policy, &ledger, &unknown), ["a", "b", "c"]);
}

#[test]
fn breaker_opens_probes_and_closes() {
    let policy = Policy {
        failure_threshold: 3,
        open_seconds: 30,
        ..Policy::default()
    };
    let mut breaker = Breaker::default();
    for second in 0..2 {
        breaker.failed(&policy, at(second));
        assert_eq!(breaker.state(&policy, at(second)), BreakerState::Closed);
    }
    // A success resets the count.
    breaker.succeeded();
    for second in 0..3 {
        assert!(breaker.admit(&policy, at(second)));
        breaker.failed(&policy, at(second));
    }
    assert_eq!(breaker.state(&policy, at(2)), BreakerState::Open);
    assert!(!breaker.admit(&policy, at(31)));
    assert_eq!(breaker.trips, 1);
    // Cooled down: one probe at a time.
    assert_eq!(breaker.state(&policy, at(32)), BreakerState::HalfOpen);
    assert!(breaker.admit(&policy, at(32)));
    assert!(!breaker.admit(&policy, at(33)), "a second probe waits");
    // The probe fails: open again for a full wait.
    breaker.failed(&policy, at(34));
    assert_eq!(breaker.state(&policy, at(60)), BreakerState::Open);
    assert_eq!(breaker.state(&policy, at(64)), BreakerState::HalfOpen);
    assert!(breaker.admit(&policy, at(64)));
    breaker.succeeded();
    assert_eq!(breaker.state(&policy, at(64)), BreakerState::Closed);
    assert_eq!(breaker.failures(), 0);
    // A probe that never reports back is given up after the wait.
    let mut stuck = Breaker::default();
    for _ in 0..3 {
        stuck.failed(&policy, at(0));
    }
    assert!(stuck.admit(&policy, at(30)));
    assert!(!stuck.admit(&policy, at(40)));
    assert!(stuck.admit(&policy, at(60)));
}

#[test]
fn an_open_breaker_takes_the_provider_out_of_the_plan() {
    let policy = Policy {
        failure_threshold: 1,
        ..Policy::default()
    };
    let ledger = Ledger::default();
    ledger
        .cell("t", "a", "UZ")
        .breaker
        .lock()
        .failed(&policy, at(0));
    let routes = [route("a", 1, 1, 0.0), route("b", 2, 1, 0.0)];
    let got = order(&routes, &policy, &ledger, &RuleRoute::default());
    assert_eq!(got, ["b"]);
    // Only for that country.
    let view = View {
        health: &ledger,
        tenant: "t",
        country: "KZ",
        policy: &policy,
        now: at(0),
    };
    let kz = Destination {
        e164: "+77012345678",
        country: Some("KZ"),
        channel: Channel::Sms,
    };
    let plan = plan(
        &routes,
        &policy,
        kz,
        &RuleRoute::default(),
        &view,
        &mut StdRng::seed_from_u64(1),
    );
    assert_eq!(plan.order, ["a", "b"]);
}

#[test]
fn the_window_forgets_old_outcomes() {
    let policy = Policy {
        window_seconds: 100,
        ..Policy::default()
    };
    let mut stats = Stats::default();
    stats.record(&policy, at(0), Outcome::Error);
    stats.record(&policy, at(50), Outcome::Accepted { latency_ms: 10 });
    assert_eq!(stats.performance(&policy, at(60)).attempts, 2);
    assert_eq!(stats.performance(&policy, at(120)).attempts, 1);
    assert_eq!(stats.performance(&policy, at(200)).attempts, 0);
    // Recording much later drops the old buckets too.
    stats.record(&policy, at(1_000), Outcome::Timeout);
    let now = stats.performance(&policy, at(1_000));
    assert_eq!((now.attempts, now.timeouts, now.error_rate), (1, 1, 1.0));
}

#[test]
fn policy_ranges_are_checked() {
    assert!(Policy::default().check().is_ok());
    let bad = Policy {
        attempt_timeout_ms: 20_000,
        ..Policy::default()
    };
    assert_eq!(bad.check().map_err(|e| e.0), Err("attempt_timeout_ms"));
}
