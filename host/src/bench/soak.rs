//! The `soak` scenario: mixed traffic (70% lookups, 30% send + verify flows) against
//! one server for the run's length, printed interval by interval as a user would
//! measure it: operations/s, p50 and p99 and their ratio, operations that started more
//! than 100 ms late (when paced with `--rate`), the process's resident memory, the
//! store's size and its growth per verified flow; then how long a restart on the data
//! the run left takes to be ready.
//!
//! Codes go to a provider that only remembers them for the driver, so the store's
//! growth is the verifications' own (the dev outbox's copies are left out). The
//! driver runs in the same process as the server, so the resident memory is both's.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use parking_lot::Mutex;
use serde_json::json;

use super::{bench_config, configure_tenant, expect_ok, post_json, BenchArgs, HttpClient};
use super::{Rules, NUMBERS};
use crate::clock::SystemClock;
use crate::flows::Engine;
use crate::sending::{Dispatch, OutboundMessage, SendFuture, Sender};

/// Operations that started this much after they were due count as late.
const LATE: Duration = Duration::from_millis(100);

/// A provider that keeps each number's latest code for the driver and stores nothing.
#[derive(Default)]
struct Codes(Mutex<HashMap<String, String>>);

impl Sender for Codes {
    fn name(&self) -> &str {
        "soak"
    }

    fn send(&self, message: OutboundMessage) -> SendFuture<'_> {
        self.0.lock().insert(message.phone, message.code);
        Box::pin(async {
            Ok(Dispatch {
                provider: "soak".into(),
                message_id: uuid::Uuid::new_v4().simple().to_string(),
                routed: false,
                cost: 0.0,
            })
        })
    }
}

/// A running soak server.
struct Server {
    addr: std::net::SocketAddr,
    engine: Arc<Engine>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Starts a server over `dir` (or the run's store) whose provider is `codes`.
async fn start(dir: &Path, codes: &Arc<Codes>) -> anyhow::Result<Server> {
    let config = bench_config(dir)?;
    let (engine, _) = crate::server::build_engine(&config, Arc::new(SystemClock))?;
    let mut engine = Arc::into_inner(engine).context("engine not yet shared")?;
    engine.sender = Some(Arc::clone(codes) as Arc<dyn Sender>);
    let engine = Arc::new(engine);
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let _ = engine.replica.public_url.set(format!("http://{addr}"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(crate::server::serve_on(
        listener,
        Arc::clone(&engine),
        async {
            let _ = stopped.await;
        },
    ));
    Ok(Server {
        addr,
        engine,
        stop,
        task,
    })
}

/// The process's resident memory, in bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let kib = line.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?;
                kib.trim().parse::<u64>().ok()
            })
        })
        .map_or(0, |kib| kib * 1024)
}

/// What the workers measured since the last report.
#[derive(Default)]
struct Window {
    latencies: Vec<Duration>,
    late: u64,
    errors: u64,
}

fn percentile(sorted: &[Duration], share: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * share).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub async fn run(client: &HttpClient, args: &BenchArgs, dir: &Path) -> anyhow::Result<()> {
    let codes = Arc::new(Codes::default());
    let server = start(dir, &codes).await?;
    let tenant = server
        .engine
        .create_tenant(Some("soak"))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    configure_tenant(&server.engine, &tenant.id, Rules::Plugins(0)).await?;
    let key = tenant.api_key.context("new tenants come with a key")?;

    let seconds = args.seconds.max(1);
    let interval = Duration::from_secs((seconds / 10).clamp(1, 60));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let counter = Arc::new(AtomicU64::new(0));
    let verified = Arc::new(AtomicU64::new(0));
    let window = Arc::new(Mutex::new(Window::default()));
    let base = format!("http://{}", server.addr);
    let mut workers = Vec::new();
    for _ in 0..args.connections {
        let (client, key, base) = (client.clone(), key.clone(), base.clone());
        let (counter, verified, window) = (
            Arc::clone(&counter),
            Arc::clone(&verified),
            Arc::clone(&window),
        );
        let (codes, rate) = (Arc::clone(&codes), args.rate);
        workers.push(tokio::spawn(async move {
            loop {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                // Paced: each operation is due at its place in the schedule, and its
                // latency counts from then (a stall delays the operations behind it).
                let due = if rate > 0.0 {
                    started + Duration::from_secs_f64(i as f64 / rate)
                } else {
                    Instant::now()
                };
                // Operations still queued when the run ends are not started: the run
                // lasts its length even when it fell behind its pace.
                if due >= deadline || Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let began = Instant::now();
                let result = if i % 10 < 7 {
                    let body =
                        json!({"phone": NUMBERS[(i % 10) as usize], "applicant_country": "US"});
                    let request = post_json(&format!("{base}/v1/phone/lookup"), &key, &body);
                    match request {
                        Ok(request) => expect_ok(client.request(request).await).await.map(|_| ()),
                        Err(err) => Err(err),
                    }
                } else {
                    let done = flow(&client, &base, &key, &codes, i).await;
                    if done.is_ok() {
                        verified.fetch_add(1, Ordering::Relaxed);
                    }
                    done
                };
                let mut window = window.lock();
                match result {
                    Ok(()) => window.latencies.push(due.elapsed()),
                    Err(err) => {
                        if window.errors == 0 {
                            eprintln!("an error: {err:#}");
                        }
                        window.errors += 1;
                    }
                }
                if began.duration_since(due) > LATE {
                    window.late += 1;
                }
            }
        }));
    }

    let store_at_start = server.engine.db.size_on_disk()?;
    println!(
        "soak: {seconds} s, {} connections, {}; 70% lookups, 30% send + verify",
        args.connections,
        if args.rate > 0.0 {
            format!("paced at {:.0} operations/s", args.rate)
        } else {
            "as fast as they go".to_owned()
        }
    );
    println!(
        "{:>6}  {:>9}  {:>9}  {:>9}  {:>7}  {:>6}  {:>7}  {:>9}  {:>11}  errors",
        "at",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "p99/p50",
        "late %",
        "rss MiB",
        "store MiB",
        "B/verified"
    );
    let mut rss_series = Vec::new();
    let mut last = Instant::now();
    while Instant::now() < deadline {
        let next = (last + interval).min(deadline);
        tokio::time::sleep_until(next.into()).await;
        let elapsed = last.elapsed();
        last = Instant::now();
        let Window {
            mut latencies,
            late,
            errors,
        } = std::mem::take(&mut *window.lock());
        latencies.sort_unstable();
        let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
        let operations = latencies.len() as u64 + errors;
        let store = server.engine.db.size_on_disk()?;
        let flows = verified.load(Ordering::Relaxed);
        let per_flow = match (store, store_at_start) {
            (Some(now), Some(then)) if flows > 0 => {
                format!("{:.0}", now.saturating_sub(then) as f64 / flows as f64)
            }
            _ => "-".to_owned(),
        };
        let memory = rss();
        rss_series.push(memory);
        println!(
            "{:>5}s  {:>9.0}  {:>9.3}  {:>9.3}  {:>7.1}  {:>6.2}  {:>7.1}  {:>9}  {:>11}  {}",
            started.elapsed().as_secs(),
            operations as f64 / elapsed.as_secs_f64(),
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            if p50.is_zero() {
                0.0
            } else {
                p99.as_secs_f64() / p50.as_secs_f64()
            },
            if operations == 0 {
                0.0
            } else {
                100.0 * late as f64 / operations as f64
            },
            mib(memory),
            store.map_or_else(|| "-".to_owned(), |bytes| format!("{:.1}", mib(bytes))),
            per_flow,
            errors
        );
    }
    for worker in workers {
        let _ = worker.await;
    }
    // Resident memory over the second half of the run: how flat it stayed.
    let half = &rss_series[rss_series.len() / 2..];
    if let (Some(low), Some(high)) = (half.iter().min(), half.iter().max()) {
        println!(
            "rss over the second half: {:.1}–{:.1} MiB ({:+.1}%)",
            mib(*low),
            mib(*high),
            100.0 * (*high as f64 - *low as f64) / (*low).max(1) as f64
        );
    }

    // A restart on the data the run left: from a stopped server to a ready one.
    let Server {
        engine, stop, task, ..
    } = server;
    let _ = stop.send(());
    let _ = task.await;
    let closed = engine.db.closed();
    drop(engine);
    closed.await;
    let restarting = Instant::now();
    let again = start(dir, &codes).await?;
    let ready = format!("http://{}/readyz", again.addr);
    loop {
        let request = hyper::Request::get(&ready).body(http_body_util::Full::default())?;
        if expect_ok(client.request(request).await).await.is_ok() {
            break;
        }
        anyhow::ensure!(
            restarting.elapsed() < Duration::from_secs(120),
            "the restarted server was not ready within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "restart to ready on the run's data: {:.2} s",
        restarting.elapsed().as_secs_f64()
    );
    let _ = again.stop.send(());
    let _ = again.task.await;
    Ok(())
}

/// One send + verify flow on a number of its own.
async fn flow(
    client: &HttpClient,
    base: &str,
    key: &str,
    codes: &Codes,
    i: u64,
) -> anyhow::Result<()> {
    // Uzbek Beeline numbers: every one of the ten million is valid, and a run of ten
    // minutes never comes back to one (a number verified for another applicant would
    // be a duplicate). 7,919 apart, coprime with the range: never a run of
    // neighbouring numbers, which the SMS-pumping detector blocks.
    let phone = format!("+99890{:07}", (i * 7_919) % 10_000_000);
    let applicant = format!("soak-{i}");
    let send = post_json(
        &format!("{base}/v1/phone/send-otp"),
        key,
        &json!({"phone": phone, "applicant_id": applicant, "channel": "sms"}),
    )?;
    expect_ok(client.request(send).await).await?;
    let code = codes.0.lock().remove(&phone).context("code not recorded")?;
    let verify = post_json(
        &format!("{base}/v1/phone/verify-otp"),
        key,
        &json!({"phone": phone, "applicant_id": applicant, "code": code}),
    )?;
    let body = expect_ok(client.request(verify).await).await?;
    anyhow::ensure!(
        body.windows(10).any(|w| w == b"\"verified\""),
        "verification did not succeed: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}
