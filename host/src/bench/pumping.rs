//! The `pumping` scenario: a synthetic trace replayed through the real server, whose
//! clock the trace drives, so hours of traffic under the detector's default windows
//! replay in seconds and every attack runs at real speed. Legitimate traffic to 24
//! countries converts at 70 to 90% seconds after each send; a campaign multiplies one
//! country's traffic tenfold with normal conversion; attacks send codes to runs of
//! neighbouring numbers in five prefixes of three countries at 20 a second each, with
//! 1% conversion, rotating IPs and applicant ids. It prints the share of attack
//! messages blocked, of legitimate ones, of the campaign's, how many messages each
//! attacked prefix took before its block, and the cost saved.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use chrono::Duration;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::clock::{Clock, ManualClock};

use super::{expect_ok, post_json, BenchArgs, HttpClient, Rules};

/// Legitimate destinations: a country, a valid mobile number of it whose last five
/// digits the trace replaces, and the trace's price of an SMS there (USD).
const COUNTRIES: [(&str, &str, f64); 24] = [
    ("GB", "+447400123456", 0.040),
    ("FR", "+33612345678", 0.075),
    ("DE", "+4915123456789", 0.080),
    ("ES", "+34612345678", 0.060),
    ("IT", "+393123456789", 0.070),
    ("NL", "+31612345678", 0.085),
    ("BE", "+32450001234", 0.080),
    ("PT", "+351912345678", 0.040),
    ("PL", "+48512345678", 0.030),
    ("SE", "+46701234567", 0.060),
    ("NO", "+4740612345", 0.060),
    ("DK", "+4534412345", 0.050),
    ("FI", "+358412345678", 0.090),
    ("IE", "+353850123456", 0.070),
    ("AT", "+43664123456", 0.090),
    ("CH", "+41781234567", 0.070),
    ("CZ", "+420601123456", 0.050),
    ("RO", "+40712034567", 0.060),
    ("UZ", "+998912345678", 0.230),
    ("IN", "+918123456789", 0.010),
    ("BR", "+5511961234567", 0.050),
    ("ZA", "+27711234567", 0.030),
    ("NG", "+2348021234567", 0.270),
    ("KE", "+254712123456", 0.200),
];

/// The country the campaign multiplies.
const CAMPAIGN: &str = "FR";

/// Attacked ranges: the country, the first number of a run of neighbours (each
/// message goes to the next one), and the price there.
const ATTACKS: [(&str, &str, f64); 5] = [
    ("GB", "+447500100000", 0.040),
    ("GB", "+447800100000", 0.040),
    ("UZ", "+998935550000", 0.230),
    ("NG", "+2348031000000", 0.270),
    ("NG", "+2347031000000", 0.270),
];

/// Legitimate sends per trace second, over every country.
const LEGIT_PER_SECOND: f64 = 2.0;
/// Attack messages per trace second, per attacked range.
const ATTACK_PER_SECOND: f64 = 20.0;
/// Messages per attacked range in a trace of 180 minutes (a shorter trace has
/// proportionally fewer).
const ATTACK_MESSAGES: u64 = 1_500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Legit,
    Campaign,
    Attack(usize),
}

#[derive(Debug, Clone)]
enum Event {
    Send {
        kind: Kind,
        phone: String,
        applicant: String,
        ip: String,
        price: f64,
        /// Whether this send's code will be entered, and how many ms after the send.
        verify_after: Option<i64>,
    },
    Verify {
        phone: String,
        applicant: String,
    },
}

/// The trace: events by their time (ms from its start), and its length.
fn trace(minutes: u64) -> (Vec<(i64, Event)>, i64) {
    let mut rng = StdRng::seed_from_u64(0x5eed_d1a1);
    let length = i64::try_from(minutes).unwrap_or(180) * 60_000;
    let mut events: Vec<(i64, Event)> = Vec::new();
    // Each country's own conversion, 70 to 90%.
    let conversion: Vec<f64> = COUNTRIES
        .iter()
        .map(|_| rng.random_range(0.70..0.90))
        .collect();
    let legit_send = |rng: &mut StdRng, at: i64, country: usize, kind: Kind, n: u64| {
        let (_, base, price) = COUNTRIES[country];
        let suffix: u32 = rng.random_range(0..100_000);
        let phone = format!("{}{suffix:05}", &base[..base.len() - 5]);
        let verify_after = rng
            .random_bool(conversion[country])
            .then(|| rng.random_range(3_000..45_000));
        (
            at,
            Event::Send {
                kind,
                phone,
                applicant: format!("user-{n}"),
                ip: format!(
                    "198.51.{}.{}",
                    rng.random_range(0..=255),
                    rng.random_range(1..=254)
                ),
                price,
                verify_after,
            },
        )
    };
    // Legitimate traffic for the whole trace, at random times.
    let legit = (LEGIT_PER_SECOND * (length / 1000) as f64) as u64;
    for n in 0..legit {
        let at = rng.random_range(0..length);
        let country = rng.random_range(0..COUNTRIES.len());
        events.push(legit_send(&mut rng, at, country, Kind::Legit, n));
    }
    // The campaign: for a tenth of the trace from its middle, ten times the country's
    // usual traffic on top of it.
    let campaign_country = COUNTRIES
        .iter()
        .position(|(country, ..)| *country == CAMPAIGN)
        .unwrap_or(0);
    let (from, span) = (length / 2, length / 10);
    let campaign = (9.0 * LEGIT_PER_SECOND / COUNTRIES.len() as f64 * (span / 1000) as f64) as u64;
    for n in 0..campaign {
        let at = from + rng.random_range(0..span);
        events.push(legit_send(
            &mut rng,
            at,
            campaign_country,
            Kind::Campaign,
            legit + n,
        ));
    }
    // The attacks, one after another from two fifths of the trace, each at real speed:
    // a run of neighbouring numbers, 1% of codes entered, a new IP and applicant id
    // every message.
    let gap = (1000.0 / ATTACK_PER_SECOND) as i64;
    let messages = (ATTACK_MESSAGES * minutes / 180).clamp(50, ATTACK_MESSAGES);
    // Attacks start 5 minutes apart (a twentieth of a short trace).
    let apart = (length / 20).min(5 * 60_000);
    for (attack, (_, first, price)) in ATTACKS.iter().enumerate() {
        let start = length * 2 / 5 + i64::try_from(attack).unwrap_or(0) * apart;
        let first: u64 = first[1..].parse().unwrap_or(0);
        for n in 0..messages {
            let at = start + i64::try_from(n).unwrap_or(0) * gap;
            events.push((
                at,
                Event::Send {
                    kind: Kind::Attack(attack),
                    phone: format!("+{}", first + n),
                    applicant: format!("attacker-{attack}-{n}"),
                    ip: format!("203.0.{}.{}", (n / 250) % 256, n % 250 + 1),
                    price: *price,
                    verify_after: rng.random_bool(0.01).then_some(5_000),
                },
            ));
        }
    }
    events.sort_by_key(|(at, _)| *at);
    (events, length)
}

#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    blocked: u64,
    saved: f64,
    /// Messages before the first block.
    first_block: Option<u64>,
}

/// Replays the trace through a server whose clock it drives.
pub async fn run(
    client: &HttpClient,
    args: &BenchArgs,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let clock = ManualClock::new();
    let server = super::launch_with(dir, Arc::new(clock.clone())).await?;
    let tenant = server
        .engine
        .create_tenant(Some("pumping"))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = tenant.api_key.context("new tenants come with a key")?;
    // Generous rate limits: what stops the attacks here is the detector alone.
    super::configure_tenant(&server.engine, &tenant.id, Rules::Plugins(0)).await?;
    let base = format!("http://{}", server.addr);
    let (events, length) = trace(args.pumping_minutes);
    let started = std::time::Instant::now();
    let origin = clock.now();
    let mut pending: BTreeMap<(i64, u64), Event> = BTreeMap::new();
    let mut tallies: BTreeMap<Kind, Tally> = BTreeMap::new();
    let mut sequence = 0_u64;
    let mut events = events.into_iter().peekable();
    loop {
        // The next event: the trace's, or a verify it scheduled, whichever is first.
        let next_trace = events.peek().map(|(at, _)| *at);
        let next_verify = pending.keys().next().map(|(at, _)| *at);
        let (at, event) = match (next_trace, next_verify) {
            (None, None) => break,
            (Some(t), Some(v)) if v < t => pending.pop_first().map(|((at, _), e)| (at, e)),
            (Some(_), _) => events.next(),
            (None, Some(_)) => pending.pop_first().map(|((at, _), e)| (at, e)),
        }
        .context("an event")?;
        let behind = origin + Duration::milliseconds(at) - clock.now();
        if behind > Duration::zero() {
            clock.advance(behind);
        }
        match event {
            Event::Send {
                kind,
                phone,
                applicant,
                ip,
                price,
                verify_after,
            } => {
                let body = json!({
                    "phone": phone, "applicant_id": applicant, "client_ip": ip, "channel": "sms",
                });
                let request = post_json(&format!("{base}/v1/phone/send-otp"), &key, &body)?;
                let answer: Value =
                    serde_json::from_slice(&expect_ok(client.request(request).await).await?)?;
                let tally = tallies.entry(kind).or_default();
                tally.sent += 1;
                let blocked = answer["warnings"].as_array().is_some_and(|warnings| {
                    warnings
                        .iter()
                        .any(|w| w["risk"] == "SMS_PUMPING_SUSPECTED" && w["action"] == "Decline")
                });
                if blocked {
                    tally.blocked += 1;
                    tally.saved += price;
                    tally.first_block.get_or_insert(tally.sent - 1);
                } else if answer["status"] == "pending" {
                    if let Some(after) = verify_after {
                        sequence += 1;
                        pending.insert((at + after, sequence), Event::Verify { phone, applicant });
                    }
                }
            }
            Event::Verify { phone, applicant } => {
                let Some(code) = server.outbox.codes.lock().get(&phone).cloned() else {
                    continue;
                };
                let body = json!({"phone": phone, "applicant_id": applicant, "code": code});
                let request = post_json(&format!("{base}/v1/phone/verify-otp"), &key, &body)?;
                // A code superseded by a later send to the same number is simply wrong.
                let _ = client.request(request).await;
            }
        }
    }
    let elapsed = started.elapsed();
    let sum = |pick: &dyn Fn(&Kind) -> bool| {
        tallies
            .iter()
            .filter(|(kind, _)| pick(kind))
            .fold((0, 0, 0.0), |(sent, blocked, saved), (_, t)| {
                (sent + t.sent, blocked + t.blocked, saved + t.saved)
            })
    };
    let (attack_sent, attack_blocked, attack_saved) = sum(&|k| matches!(k, Kind::Attack(_)));
    let (legit_sent, legit_blocked, _) = sum(&|k| *k == Kind::Legit);
    let (campaign_sent, campaign_blocked, _) = sum(&|k| *k == Kind::Campaign);
    let share = |part: u64, whole: u64| 100.0 * part as f64 / whole.max(1) as f64;
    println!(
        "pumping: a {} min trace replayed in {:.1} s: {legit_sent} legitimate sends to {} countries, a campaign of {campaign_sent} to {CAMPAIGN}, {attack_sent} attack sends on {} ranges",
        length / 60_000,
        elapsed.as_secs_f64(),
        COUNTRIES.len(),
        ATTACKS.len(),
    );
    println!(
        "  attack messages blocked:     {attack_blocked} of {attack_sent} ({:.2}%)",
        share(attack_blocked, attack_sent)
    );
    println!(
        "  legitimate messages blocked: {legit_blocked} of {legit_sent} ({:.3}%)",
        share(legit_blocked, legit_sent)
    );
    println!(
        "  campaign messages blocked:   {campaign_blocked} of {campaign_sent} ({:.3}%)",
        share(campaign_blocked, campaign_sent)
    );
    let firsts: Vec<String> = (0..ATTACKS.len())
        .map(|attack| {
            let tally = tallies.get(&Kind::Attack(attack));
            match tally.and_then(|t| t.first_block) {
                Some(n) => format!("{} {n}", ATTACKS[attack].1),
                None => format!("{} never", ATTACKS[attack].1),
            }
        })
        .collect();
    println!(
        "  messages each attacked range sent before its block: {}",
        firsts.join(", ")
    );
    println!(
        "  cost saved: ${attack_saved:.2} of ${:.2} the attacks would have cost (the trace's prices per SMS)",
        tallies
            .iter()
            .filter_map(|(kind, t)| match kind {
                Kind::Attack(attack) => Some(t.sent as f64 * ATTACKS[*attack].2),
                _ => None,
            })
            .sum::<f64>()
    );
    server.task.abort();
    Ok(())
}
