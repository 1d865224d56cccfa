//! `dialgate bench --scenarios kannel`: Dialgate's cost over a real Kannel gateway.
//!
//! Starts a local Kannel (`crate::kannel`: bearerbox with a fake SMSC, smsbox serving
//! sendsms, no throughput limits, logs at warning level) and a loopback endpoint that
//! answers Kannel's delivery reports, then measures in one run:
//!
//! - (a) Kannel alone: `--kannel-messages` sendsms requests straight to smsbox, with
//!   `--connections` in flight, each asking for the delivery reports of
//!   `--kannel-dlr-mask` (default 31: all) from the loopback endpoint, timed until the
//!   fake SMSC received them all;
//! - (b) the same number of `send-otp` requests to an in-process Dialgate whose tenant
//!   sends through a `kannel` provider with the same `dlr_mask` (whose reports come
//!   back to Dialgate), timed the same way, against a freshly started Kannel (the
//!   fake SMSC sends no final reports, so a Kannel keeps every message's pending
//!   report, and looks reports up entry by entry);
//!
//! and prints both rates, (b) as a share of (a), and the processor time per message of
//! this process and of Kannel's boxes in each part (counted until both went idle, so
//! the delivery reports count). Each part starts with a warm-up of
//! `WARM_UP` messages that is not counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::http::Request;
use axum::routing::get;
use axum::Router;
use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::json;

use super::{expect_ok, json_request, post_json, start_tenants, BenchArgs, HttpClient, Rules};
use crate::kannel::{FakeSmsc, Kannel};

/// Messages sent before each timed part, not counted.
const WARM_UP: u64 = 100;

/// How long the SMSC may take to receive the last message after the last request.
const DRAIN: Duration = Duration::from_secs(60);

/// One timed part: how many messages, how long until the SMSC had them all, and the
/// processor time each side spent on them, counted until both sides went idle (so the
/// delivery reports still arriving after the last message count too).
struct Part {
    messages: u64,
    elapsed: Duration,
    /// This process's: the load driver's requests and, in part (b), Dialgate's work.
    own_cpu: Duration,
    /// Kannel's boxes'.
    kannel_cpu: Duration,
}

impl Part {
    fn per_second(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    /// Processor time per message, in microseconds.
    fn per_message(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.messages as f64
    }

    fn print_cpu(&self) {
        println!(
            "{:<34} {:>10.0} µs this process, {:.0} µs kannel's boxes",
            "  processor time per message",
            self.per_message(self.own_cpu),
            self.per_message(self.kannel_cpu),
        );
    }
}

/// Processor time (user and system) a process used so far: this process's, or the one
/// with `pid`, read from `/proc` (Linux; zero elsewhere).
fn cpu_time(pid: Option<u32>) -> Duration {
    // /proc counts in USER_HZ ticks, which Linux fixes at 100 a second.
    const TICK: Duration = Duration::from_millis(10);
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |pid| format!("/proc/{pid}/stat"),
    );
    let Ok(stat) = std::fs::read_to_string(path) else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces) in parentheses: utime
    // and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u32 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|field| field.parse::<u32>().ok())
        .sum();
    TICK * ticks
}

/// Processor time of this process and of Kannel's boxes so far.
fn cpu_times(kannel: &[u32]) -> (Duration, Duration) {
    let boxes = kannel.iter().map(|pid| cpu_time(Some(*pid))).sum();
    (cpu_time(None), boxes)
}

/// Waits until this process and Kannel's boxes use less than a tenth of a core
/// (at most `DRAIN`), and returns their processor times then.
async fn settled(kannel: &[u32]) -> (Duration, Duration) {
    const STEP: Duration = Duration::from_millis(200);
    let deadline = Instant::now() + DRAIN;
    let mut last = cpu_times(kannel);
    loop {
        tokio::time::sleep(STEP).await;
        let now = cpu_times(kannel);
        let busy = (now.0 + now.1).saturating_sub(last.0 + last.1);
        if busy < STEP / 10 || Instant::now() >= deadline {
            return last;
        }
        last = now;
    }
}

/// Runs the scenario and prints its figures.
pub(super) async fn run(
    client: &HttpClient,
    args: &BenchArgs,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let messages = args.kannel_messages;
    if messages == 0 {
        bail!("--kannel-messages must be at least 1");
    }
    let mask = args.kannel_dlr_mask;
    if mask > 31 {
        bail!("--kannel-dlr-mask must be 0 to 31");
    }
    let kannel = Kannel::start().await?;
    let smsc = kannel.connect_smsc().await?;

    // Where Kannel's reports go in part (a): an endpoint that only answers 200.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink = listener.local_addr()?;
    let delay = Duration::from_millis(args.kannel_sink_delay_ms);
    let sink_task = tokio::spawn(async move {
        let app = Router::new().route(
            "/dlr",
            get(move || async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                "ok"
            }),
        );
        let _ = axum::serve(listener, app).await;
    });

    // (a) Kannel alone.
    let sendsms = kannel.sendsms_url();
    let username = kannel.username.clone();
    let password = kannel.password.clone();
    let direct = {
        let client = client.clone();
        move |i: u64| {
            let text = format!("Your verification code is {:06}", i % 1_000_000);
            let dlr_url = format!("http://{sink}/dlr?id={i}&type=%d&ts=%T&answer=%A");
            let mask = mask.to_string();
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.extend_pairs([
                ("username", username.as_str()),
                ("password", password.as_str()),
                ("from", "Dialgate"),
                ("to", phone(i).as_str()),
                ("text", text.as_str()),
            ]);
            if mask != "0" {
                query.extend_pairs([("dlr-mask", mask.as_str()), ("dlr-url", dlr_url.as_str())]);
            }
            let query = query.finish();
            let request = Request::get(format!("{sendsms}?{query}")).body(Full::new(Bytes::new()));
            let client = client.clone();
            async move {
                expect_ok(client.request(request?).await).await?;
                Ok(())
            }
        }
    };
    let pids = kannel.pids();
    let kannel_only = part(&smsc, &pids, args.connections, messages, direct).await?;
    println!(
        "{:<34} {:>10.0}/s  ({} messages in {:.2} s, {} in flight, dlr-mask {mask}, reports answered after {} ms)",
        "kannel: sendsms straight to smsbox",
        kannel_only.per_second(),
        kannel_only.messages,
        kannel_only.elapsed.as_secs_f64(),
        args.connections,
        args.kannel_sink_delay_ms,
    );
    kannel_only.print_cpu();
    if !smsc.unreadable().is_empty() {
        bail!("the fake SMSC could not read: {:?}", smsc.unreadable());
    }
    // Part (b) gets a Kannel of its own: the fake SMSC sends no final reports, so
    // every message's pending delivery report stays in Kannel's in-memory store, which
    // is searched entry by entry for each report; a Kannel that already carried part
    // (a) would make part (b) slower on Kannel's side alone.
    drop(smsc);
    drop(kannel);
    let kannel = Kannel::start().await?;
    let smsc = kannel.connect_smsc().await?;
    let pids = kannel.pids();

    // (b) The same through Dialgate with a kannel provider.
    let mut bench = start_tenants(dir, &[Rules::Plugins(0)]).await?;
    let (_, key) = bench.tenants.remove(0);
    let (addr, server, engine) = (bench.addr, bench.task, bench.engine);
    let base = format!("http://{addr}");
    let install = post_json(
        &format!("{base}/v1/plugins/catalog/kannel"),
        &key,
        &json!({}),
    )?;
    expect_ok(client.request(install).await)
        .await
        .context("installing the kannel adapter")?;
    let provider = post_json(
        &format!("{base}/v1/providers"),
        &key,
        &json!({
            "name": "kannel", "plugin": "kannel", "channels": ["sms"],
            "countries": [], "prefixes": [], "priority": 1, "weight": 1,
            "cost_per_message": 0.004, "sender_id": "Dialgate",
            "config": {"base_url": kannel.sendsms_url(), "dlr_mask": mask.to_string()},
            "secrets": {"username": kannel.username, "password": kannel.password},
            "hosts": [kannel.sendsms_host()],
        }),
    )?;
    expect_ok(client.request(provider).await)
        .await
        .context("creating the kannel provider")?;
    // Nobody enters these codes: a tenant's SMS-pumping detector would block the
    // prefix once they matured. In monitor mode it judges every send, as on any send
    // path, and refuses none.
    let monitor = json_request(
        hyper::Method::PUT,
        &format!("{base}/v1/settings/phone-verification"),
        &key,
        &json!({"sms_pumping": {"mode": "monitor"}}),
    )?;
    expect_ok(client.request(monitor).await)
        .await
        .context("setting the detector to monitor")?;
    let send_url = format!("{base}/v1/phone/send-otp");
    let through = {
        let client = client.clone();
        move |i: u64| {
            let body = json!({"phone": phone(i), "applicant_id": format!("applicant-{i}"), "channel": "sms"});
            let request = post_json(&send_url, &key, &body);
            let client = client.clone();
            async move {
                expect_ok(client.request(request?).await).await?;
                Ok(())
            }
        }
    };
    let dialgate = part(&smsc, &pids, args.connections, messages, through).await?;
    println!(
        "{:<34} {:>10.0}/s  ({} messages in {:.2} s, {} in flight, dlr-mask {mask})  ({:.0}% of kannel alone; target ≥ 40%)",
        "dialgate: send-otp via kannel",
        dialgate.per_second(),
        dialgate.messages,
        dialgate.elapsed.as_secs_f64(),
        args.connections,
        100.0 * dialgate.per_second() / kannel_only.per_second(),
    );
    dialgate.print_cpu();
    print_latencies(&engine.metrics.encode(|_| {}));
    if !smsc.unreadable().is_empty() {
        bail!("the fake SMSC could not read: {:?}", smsc.unreadable());
    }
    server.abort();
    sink_task.abort();
    Ok(())
}

/// Prints, from the server's metrics, the mean time of its HTTP routes and store
/// operations over the run (warm-ups included): where a message's time went.
fn print_latencies(metrics: &str) {
    // (series, label to show) → (sum of seconds, count)
    let mut means: std::collections::BTreeMap<(String, String), (f64, f64)> =
        std::collections::BTreeMap::new();
    for line in metrics.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        for (name, label) in [
            ("dialgate_http_request_duration_seconds", "route"),
            ("dialgate_store_operation_duration_seconds", "op"),
        ] {
            let Some(rest) = series.strip_prefix(name) else {
                continue;
            };
            let (part, labels) = rest.split_once('{').unwrap_or((rest, ""));
            let shown = labels
                .split_once(&format!("{label}=\""))
                .and_then(|(_, value)| value.split_once('"'))
                .map_or("", |(value, _)| value)
                .to_owned();
            let entry = means.entry((name.to_owned(), shown)).or_default();
            match part {
                "_sum" => entry.0 += value,
                "_count" => entry.1 += value,
                _ => {}
            }
        }
    }
    for ((name, shown), (sum, count)) in means {
        if count > 0.0 {
            let what = if name.contains("http") {
                "route"
            } else {
                "store"
            };
            println!(
                "  {what:<6} {shown:<40} {count:>8.0} × {:>8.2} ms mean",
                sum * 1e3 / count
            );
        }
    }
}

/// A distinct valid UK mobile number for message `i` (+44 7911 000000 to 299999, the
/// allocated part): 7,919 apart (coprime with the range, so each is used once before
/// any comes back), never a run of neighbours.
fn phone(i: u64) -> String {
    format!("+447911{:06}", (i * 7_919) % 300_000)
}

/// Sends `WARM_UP` and then `messages` messages with `op` from `concurrency` workers;
/// times the second batch from its first request until the SMSC received its last.
async fn part<F, Fut>(
    smsc: &FakeSmsc,
    kannel: &[u32],
    concurrency: usize,
    messages: u64,
    op: F,
) -> anyhow::Result<Part>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    // Numbers stay distinct across both parts and their warm-ups.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let warm_up = NEXT.fetch_add(WARM_UP, Ordering::Relaxed);
    let already = smsc.count();
    batch(concurrency, warm_up, WARM_UP, op.clone()).await?;
    let expected = already + usize::try_from(WARM_UP)?;
    smsc.wait_for_count(expected, DRAIN)
        .await
        .map_err(anyhow::Error::msg)?;

    let first = NEXT.fetch_add(messages, Ordering::Relaxed);
    let before = settled(kannel).await;
    let started = Instant::now();
    batch(concurrency, first, messages, op).await?;
    smsc.wait_for_count(expected + usize::try_from(messages)?, DRAIN)
        .await
        .map_err(anyhow::Error::msg)?;
    let elapsed = started.elapsed();
    let after = settled(kannel).await;
    Ok(Part {
        messages,
        elapsed,
        own_cpu: after.0.saturating_sub(before.0),
        kannel_cpu: after.1.saturating_sub(before.1),
    })
}

/// Runs `op` for `first..first + count` from `concurrency` workers; fails on the first
/// error (a lost message would make the timing meaningless).
async fn batch<F, Fut>(concurrency: usize, first: u64, count: u64, op: F) -> anyhow::Result<()>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicU64::new(first));
    let end = first + count;
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let next = Arc::clone(&next);
        let op = op.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<(), anyhow::Error>(());
                }
                op(i).await.with_context(|| format!("message {i}"))?;
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok(())
}
