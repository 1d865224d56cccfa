//! The detector's logic on synthetic traffic: what it blocks, what it lets through,
//! and how counts merge, roll and validate.

use super::*;

/// One tenant's counts per prefix and in total, and the host's, fed like the engine
/// feeds them.
#[derive(Default)]
struct Sim {
    tenant: BTreeMap<String, Counts>,
    host: BTreeMap<String, Counts>,
    total: Counts,
}

const MINUTE: i64 = 60_000;

impl Sim {
    fn judge(&mut self, settings: &PumpingSettings, number: &str, now: i64) -> Judgment {
        self.judge_as(settings, number, now, LineType::Mobile, Tier::Medium)
    }

    fn judge_as(
        &mut self,
        settings: &PumpingSettings,
        number: &str,
        now: i64,
        line_type: LineType,
        tier: Tier,
    ) -> Judgment {
        let (cc, national) = split(number);
        let prefixes = prefixes(cc, national);
        let mut views = Vec::new();
        for prefix in &prefixes {
            let mut tenant = self.tenant.get(prefix).cloned().unwrap_or_default();
            tenant.roll(settings, now);
            let mut host = self.host.get(prefix).cloned().unwrap_or_default();
            host.roll(settings, now);
            views.push((prefix.clone(), tenant, host));
        }
        let mut total = self.total.clone();
        total.roll(settings, now);
        let evidence = Evidence {
            prefixes: views
                .iter()
                .map(|(_, tenant, host)| PrefixView { tenant, host })
                .collect(),
            tenant_total: &total,
            number: national.parse().ok(),
            line_type,
            tier,
        };
        judge(settings, settings.mode, &evidence, now)
    }

    fn send(&mut self, settings: &PumpingSettings, number: &str, now: i64) {
        let (cc, national) = split(number);
        let prefixes = prefixes(cc, national);
        let deepest = prefixes.len() - 1;
        for (depth, prefix) in prefixes.iter().enumerate() {
            let keep = (depth == deepest).then(|| national.parse().expect("digits"));
            let counts = self.tenant.entry(prefix.clone()).or_default();
            counts.add_send(settings, now, keep);
            counts.roll(settings, now);
            let host = self.host.entry(prefix.clone()).or_default();
            host.add_send(settings, now, None);
            host.roll(settings, now);
        }
        self.total.add_send(settings, now, None);
        self.total.roll(settings, now);
    }

    fn verify(&mut self, settings: &PumpingSettings, number: &str, sent: i64) {
        let (cc, national) = split(number);
        for prefix in prefixes(cc, national) {
            self.tenant
                .entry(prefix.clone())
                .or_default()
                .add_verified(settings, sent);
            self.host
                .entry(prefix)
                .or_default()
                .add_verified(settings, sent);
        }
        self.total.add_verified(settings, sent);
    }
}

/// `+44 7700900123` → (44, "7700900123"); the tests use two-digit calling codes.
fn split(number: &str) -> (u32, &str) {
    let digits = number.trim_start_matches('+');
    (digits[..2].parse().expect("calling code"), &digits[2..])
}

/// A deterministic spread of numbers: the i-th legitimate number of a country.
fn spread(cc: u32, i: u64) -> String {
    let national = 7_000_000_000 + (i.wrapping_mul(2_654_435_761) % 999_999_999);
    format!("+{cc}{national}")
}

#[test]
fn prefixes_are_the_country_then_two_and_four_national_digits() {
    assert_eq!(
        prefixes(44, "7700900123"),
        vec!["+44".to_owned(), "+4477".to_owned(), "+447700".to_owned()]
    );
    // A short national number keeps only the prefixes shorter than itself.
    assert_eq!(
        prefixes(1, "55512"),
        vec!["+1".to_owned(), "+155".to_owned()]
    );
}

#[test]
fn legitimate_traffic_that_converts_is_never_blocked() {
    let settings = PumpingSettings::default();
    let mut sim = Sim::default();
    let mut now = 1_000 * MINUTE;
    let mut worst = 0;
    for i in 0..3_000_u64 {
        let cc = [44, 33, 49, 34, 39][(i % 5) as usize];
        let number = spread(cc, i);
        let judgment = sim.judge(&settings, &number, now);
        worst = worst.max(judgment.score);
        sim.send(&settings, &number, now);
        // Three in four codes are verified seconds later.
        if i % 4 != 0 {
            sim.verify(&settings, &number, now);
        }
        now += 2_000;
    }
    assert!(worst < Mode::Standard.block_score(), "worst score {worst}");
}

#[test]
fn runs_of_neighbouring_numbers_are_judged_within_a_few_sends() {
    let settings = PumpingSettings::default();
    let mut sim = Sim::default();
    let now = 1_000 * MINUTE;
    let mut blocked_at = None;
    for i in 0..50 {
        let number = format!("+44770090{:04}", 100 + i);
        let judgment = sim.judge(&settings, &number, now + i * 100);
        if judgment.score >= Mode::Standard.block_score() {
            assert_eq!(judgment.reason, Some(Reason::SequentialNumbers));
            assert_eq!(judgment.depth, 2, "the deepest prefix is blocked");
            blocked_at = Some(i);
            break;
        }
        sim.send(&settings, &number, now + i * 100);
    }
    assert_eq!(blocked_at, Some(8), "the ninth number has eight neighbours");
}

#[test]
fn a_prefix_whose_codes_are_never_verified_is_judged_once_they_mature() {
    let settings = PumpingSettings::default();
    let mut sim = Sim::default();
    let start = 1_000 * MINUTE;
    // Scattered numbers (no runs) under one prefix, never verified, one a minute.
    let mut first_block = None;
    for i in 0..60_i64 {
        let now = start + i * MINUTE;
        let number = format!("+447700{:06}", (i * 7_919) % 1_000_000);
        let judgment = sim.judge(&settings, &number, now);
        if judgment.score >= Mode::Standard.block_score() {
            assert_eq!(judgment.reason, Some(Reason::LowConversion));
            first_block = Some(i);
            break;
        }
        sim.send(&settings, &number, now);
    }
    let at = first_block.expect("blocked within the hour");
    // Nothing is judged before the first codes have had the maturity to convert, and
    // a strict detector needs fewer.
    assert!(at > 5, "blocked after {at} sends");
}

#[test]
fn a_campaign_that_multiplies_a_country_with_normal_conversion_is_not_blocked() {
    let settings = PumpingSettings::default();
    let mut sim = Sim::default();
    let mut now = 1_000 * MINUTE;
    // Six hours of history: a send every 20 s over five countries.
    for i in 0..1_080_u64 {
        let cc = [44, 33, 49, 34, 39][(i % 5) as usize];
        let number = spread(cc, i);
        sim.send(&settings, &number, now);
        if i % 5 != 0 {
            sim.verify(&settings, &number, now);
        }
        now += 20_000;
    }
    // Then a campaign: ten times the traffic to France, converting as usual.
    let mut worst = 0;
    for i in 0..1_000_u64 {
        let number = spread(33, 10_000 + i);
        let judgment = sim.judge(&settings, &number, now);
        worst = worst.max(judgment.score);
        sim.send(&settings, &number, now);
        if i % 5 != 0 {
            sim.verify(&settings, &number, now);
        }
        now += 400;
    }
    assert!(worst < Mode::Standard.block_score(), "worst score {worst}");
}

#[test]
fn a_prefix_blocked_at_another_tenant_is_judged_for_a_newcomer_but_not_for_a_known_one() {
    let settings = PumpingSettings::default();
    let now = 1_000 * MINUTE;
    let mut newcomer = Sim::default();
    let mut host = Counts {
        blocked_until: now + 3_600_000,
        ..Counts::default()
    };
    newcomer.host.insert("+447700".into(), host.clone());
    let judgment = newcomer.judge(&settings, "+447700123456", now);
    assert!(judgment.score >= Mode::Standard.block_score());
    assert_eq!(judgment.reason, Some(Reason::BlockedElsewhere));
    assert!(judgment.signals.blocked_elsewhere);

    // A tenant whose own codes there convert keeps sending.
    let mut known = Sim::default();
    known.send(&settings, "+447700654321", now - 30 * MINUTE);
    known.verify(&settings, "+447700654321", now - 30 * MINUTE);
    host.add_send(&settings, now, None);
    known.host.insert("+447700".into(), host);
    let judgment = known.judge(&settings, "+447700123456", now);
    assert!(judgment.score < Mode::Standard.block_score());

    // An expired block elsewhere counts for nothing.
    let judgment = newcomer.judge(&settings, "+447700123456", now + 3_600_001);
    assert_eq!(judgment.score, 0);
}

#[test]
fn strict_mode_judges_on_less_evidence_than_standard() {
    let strict = PumpingSettings {
        mode: Mode::Strict,
        ..PumpingSettings::default()
    };
    let mut sim = Sim::default();
    let now = 1_000 * MINUTE;
    for i in 0..5 {
        sim.send(&strict, &format!("+44770090{:04}", 100 + i), now);
    }
    assert!(sim.judge(&strict, "+447700900105", now).score >= Mode::Strict.block_score());
    let standard = PumpingSettings::default();
    assert!(sim.judge(&standard, "+447700900105", now).score < Mode::Standard.block_score());
}

#[test]
fn counts_merge_by_bucket_and_roll_into_a_decayed_history() {
    let settings = PumpingSettings::default();
    let start = 1_000 * MINUTE;
    let mut a = Counts::default();
    let mut b = Counts::default();
    a.add_send(&settings, start, Some(1));
    b.add_send(&settings, start + 1, Some(2));
    b.add_verified(&settings, start);
    a.merge(&b);
    assert_eq!(a.buckets.len(), 1);
    assert_eq!((a.buckets[0].sends, a.buckets[0].verified), (2, 1));
    assert_eq!(a.recent, vec![(1, start), (2, start + 1)]);
    // Merging the same delta twice counts it twice (deltas are flushed once).
    assert_eq!(a.window_sends(&settings, start), 2);
    assert_eq!(a.baseline(), None);

    // Two hours on, the bucket left the window: it is history, and the numbers go.
    let later = start + 120 * MINUTE;
    a.roll(&settings, later);
    assert!(a.buckets.is_empty());
    assert!(a.recent.is_empty());
    assert!((a.long_sends - 2.0).abs() < 1e-9);
    assert_eq!(a.matured(&settings, later), (2.0, 1.0));
    assert!(a.baseline().is_some_and(|usual| usual > 0.0));
    assert!(a.any_verified());
}

#[test]
fn recent_numbers_stay_bounded() {
    let settings = PumpingSettings::default();
    let mut counts = Counts::default();
    for i in 0..1_000 {
        counts.add_send(&settings, 1_000 * MINUTE + i, Some(i as u64));
    }
    assert_eq!(counts.recent.len(), RECENT_NUMBERS);
    let mut other = Counts::default();
    for i in 0..1_000 {
        other.add_send(&settings, 2_000 * MINUTE + i, Some(i as u64));
    }
    counts.merge(&other);
    assert_eq!(counts.recent.len(), RECENT_NUMBERS);
    assert!(counts.recent.iter().all(|(_, at)| *at >= 2_000 * MINUTE));
}

#[test]
fn blocks_lengthen_with_each_level_up_to_thirty_days() {
    let settings = PumpingSettings::default();
    assert_eq!(settings.block_duration_ms(0), 12 * 3_600_000);
    assert_eq!(settings.block_duration_ms(1), 24 * 3_600_000);
    assert_eq!(settings.block_duration_ms(40), MAX_BLOCK_SECONDS * 1000);
}

#[test]
fn settings_problems_name_their_field() {
    let problem = |settings: PumpingSettings| settings.problem().map(|(field, _)| field);
    assert_eq!(problem(PumpingSettings::default()), None);
    assert_eq!(
        problem(PumpingSettings {
            window_seconds: 10,
            ..PumpingSettings::default()
        }),
        Some("sms_pumping.window_seconds".into())
    );
    assert_eq!(
        problem(PumpingSettings {
            maturity_seconds: 7_200,
            ..PumpingSettings::default()
        }),
        Some("sms_pumping.maturity_seconds".into())
    );
    assert_eq!(
        problem(PumpingSettings {
            exempt_prefixes: vec!["+44".into(), "44x".into()],
            ..PumpingSettings::default()
        }),
        Some("sms_pumping.exempt_prefixes[1]".into())
    );
    assert_eq!(
        problem(PumpingSettings {
            country_tiers: [("gb".to_owned(), Tier::High)].into(),
            ..PumpingSettings::default()
        }),
        Some("sms_pumping.country_tiers.gb".into())
    );
    let exempt = PumpingSettings {
        exempt_prefixes: vec!["+4420".into()],
        ..PumpingSettings::default()
    };
    assert!(exempt.exempt("+442071234567"));
    assert!(!exempt.exempt("+447700900123"));
}

#[test]
fn runs_of_numbers_whose_codes_are_verified_are_not_pumping() {
    let settings = PumpingSettings::default();
    let mut sim = Sim::default();
    let now = 1_000 * MINUTE;
    let mut worst = 0;
    for i in 0..200 {
        let number = format!("+44770090{:04}", 100 + i);
        let at = now + i * 1_000;
        worst = worst.max(sim.judge(&settings, &number, at).score);
        sim.send(&settings, &number, at);
        sim.verify(&settings, &number, at);
    }
    assert!(worst < Mode::Standard.block_score(), "worst score {worst}");
}
