//! The `analytics` scenario: a year of traffic counted through the flows' own tally
//! path into the real server's store, then the conversion queries a dashboard makes,
//! timed over HTTP. The server's clock walks the year an hour at a time; each hour a
//! share of `--analytics-verifications` verifications (10 million by default) starts
//! in one of 24 countries with 3 carriers each, on three channels, three providers,
//! two templates and eight locales, and is sent, delivered or failed, resent and
//! verified at realistic rates; the replica merges its counts at the end of each hour.
//! Then the tenant's settled days are rolled into a record per day and grouping (what
//! each replica does every minute as time goes by). It prints what counting and
//! merging cost per verification, the store's tallies, what rolling cost, and each
//! query's median and slowest time.

use std::sync::Arc;

use anyhow::Context;
use chrono::{Duration, SecondsFormat};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{header, Request};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::analytics::{Fact, Groups};
use crate::clock::{Clock, ManualClock};
use crate::store::Tree;

use super::{expect_ok, BenchArgs, HttpClient};

const COUNTRIES: [&str; 24] = [
    "GB", "FR", "DE", "ES", "IT", "NL", "BE", "PT", "PL", "SE", "NO", "DK", "FI", "IE", "AT", "CH",
    "CZ", "RO", "UZ", "IN", "BR", "ZA", "NG", "KE",
];
const CHANNELS: [(&str, f64); 3] = [("sms", 0.85), ("whatsapp", 0.10), ("voice", 0.05)];
const PROVIDERS: [&str; 3] = ["prv_primary", "prv_secondary", "prv_voice"];
const LOCALES: [&str; 8] = ["en", "fr", "de", "es", "it", "pt", "pl", "nl"];

/// Times each query is asked.
const ASKS: usize = 20;

/// One verification's groups, drawn.
fn draw(rng: &mut StdRng) -> Groups {
    let country = COUNTRIES[rng.random_range(0..COUNTRIES.len())];
    let roll: f64 = rng.random();
    let mut channel = CHANNELS[0].0;
    let mut acc = 0.0;
    for (name, share) in CHANNELS {
        acc += share;
        if roll < acc {
            channel = name;
            break;
        }
    }
    let provider = if channel == "voice" {
        PROVIDERS[2]
    } else {
        PROVIDERS[usize::from(rng.random_bool(0.3))]
    };
    let line_type = match rng.random_range(0..20) {
        0 => "voip",
        1..=2 => "fixed_line_or_mobile",
        _ => "mobile",
    };
    Groups {
        country: Some(country.to_owned()),
        carrier: Some(format!("{country} Carrier {}", rng.random_range(1..=3))),
        line_type: Some(line_type.to_owned()),
        channel: Some(channel.to_owned()),
        provider: Some(provider.to_owned()),
        template: Some(
            if rng.random_bool(0.5) {
                "tpl_a"
            } else {
                "tpl_b"
            }
            .to_owned(),
        ),
        locale: Some(LOCALES[rng.random_range(0..LOCALES.len())].to_owned()),
    }
}

pub async fn run(
    client: &HttpClient,
    args: &BenchArgs,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let clock = ManualClock::new();
    let server = super::launch_with(dir, Arc::new(clock.clone())).await?;
    let engine = Arc::clone(&server.engine);
    let tenant = engine
        .create_tenant(Some("analytics"))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = tenant.api_key.context("new tenants come with a key")?;
    let days = args.analytics_days.max(1);
    let hours = days * 24;
    let per_hour = (args.analytics_verifications / hours).max(1);
    let origin = clock.now();
    let mut rng = StdRng::seed_from_u64(11);
    let filling = std::time::Instant::now();
    let mut counted = 0_u64;
    for _ in 0..hours {
        let engine = Arc::clone(&engine);
        let tenant_id = tenant.id.clone();
        let mut hour_rng = StdRng::seed_from_u64(rng.random());
        let now = clock.now();
        counted += per_hour;
        // Counting and merging run where the flows and the flusher run them: on the
        // blocking pool (the store's calls block).
        tokio::task::spawn_blocking(move || {
            for _ in 0..per_hour {
                let groups = draw(&mut hour_rng);
                let at = now + Duration::seconds(hour_rng.random_range(0..3_540));
                engine.tally(&tenant_id, at, groups.clone(), Fact::Started);
                let cost = if groups.channel.as_deref() == Some("voice") {
                    90_000
                } else {
                    45_000
                };
                engine.tally(
                    &tenant_id,
                    at,
                    groups.clone(),
                    Fact::Sent {
                        resend: false,
                        cost,
                    },
                );
                if hour_rng.random_bool(0.95) {
                    let latency_ms = Some(hour_rng.random_range(400..6_000));
                    engine.tally(
                        &tenant_id,
                        at,
                        groups.clone(),
                        Fact::Delivered { latency_ms },
                    );
                } else {
                    engine.tally(&tenant_id, at, groups.clone(), Fact::Failed);
                }
                if hour_rng.random_bool(0.12) {
                    engine.tally(
                        &tenant_id,
                        at,
                        groups.clone(),
                        Fact::Sent { resend: true, cost },
                    );
                }
                if hour_rng.random_bool(0.78) {
                    let after_ms = hour_rng.random_range(8_000..90_000);
                    engine.tally(&tenant_id, at, groups, Fact::Verified { after_ms });
                }
            }
            engine.flush_analytics()
        })
        .await??;
        clock.advance(Duration::hours(1));
    }
    let fill = filling.elapsed();
    let tallies = engine
        .db
        .scan_from_raw(Tree::Analytics, b"", usize::MAX)?
        .len();
    println!(
        "analytics: {counted} verifications over {days} days counted and merged in {:.1} s \
         ({:.2} us per verification, counting and merging); {tallies} tallies stored",
        fill.as_secs_f64(),
        fill.as_secs_f64() * 1e6 / counted as f64
    );
    // Each replica rolls settled days into a record per day and grouping every
    // minute, as the year goes by; here the year is rolled at once.
    let rolling = std::time::Instant::now();
    let rolled = tokio::task::spawn_blocking({
        let engine = Arc::clone(&engine);
        let tenant_id = tenant.id.clone();
        move || engine.roll_analytics(&tenant_id, usize::MAX)
    })
    .await??;
    let roll = rolling.elapsed();
    println!(
        "analytics: {rolled} settled days rolled up in {:.1} s ({:.1} ms a day, 7 groupings)",
        roll.as_secs_f64(),
        roll.as_secs_f64() * 1e3 / rolled.max(1) as f64
    );
    let stamp = |at: chrono::DateTime<chrono::Utc>| {
        at.to_rfc3339_opts(SecondsFormat::Secs, true)
            .replace('+', "%2B")
    };
    let year = format!("from={}&to={}", stamp(origin), stamp(clock.now()));
    let month = format!(
        "from={}&to={}",
        stamp(clock.now() - Duration::days(31)),
        stamp(clock.now())
    );
    let base = format!("http://{}/v1/analytics/conversion", server.addr);
    let queries = [
        (
            "the whole range by day",
            format!("{base}?{year}&interval=day"),
        ),
        (
            "the whole range by day and country",
            format!("{base}?{year}&interval=day&group_by=country"),
        ),
        (
            "the whole range by day and carrier",
            format!("{base}?{year}&interval=day&group_by=carrier"),
        ),
        (
            "the last 31 days by hour",
            format!("{base}?{month}&interval=hour"),
        ),
        (
            "the last 31 days by hour and provider",
            format!("{base}?{month}&interval=hour&group_by=provider"),
        ),
    ];
    for (name, url) in queries {
        let mut times = Vec::with_capacity(ASKS);
        let mut rows = 0;
        for _ in 0..ASKS {
            let request = Request::get(&url)
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .body(Full::new(Bytes::new()))?;
            let asked = std::time::Instant::now();
            let body = expect_ok(client.request(request).await).await?;
            times.push(asked.elapsed());
            let answer: serde_json::Value = serde_json::from_slice(&body)?;
            rows = answer["rows"].as_array().map_or(0, Vec::len);
        }
        times.sort();
        println!(
            "  {name}: {rows} rows, median {:.1} ms, slowest {:.1} ms ({ASKS} asks)",
            times[ASKS / 2].as_secs_f64() * 1e3,
            times[ASKS - 1].as_secs_f64() * 1e3
        );
    }
    server.task.abort();
    Ok(())
}
