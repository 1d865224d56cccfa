//! `dialgate bench`: the whole-server load driver.
//!
//! Starts the real server in-process on loopback (sled in a temporary directory, the dev
//! outbox as provider) and a bare axum handler that only checks a bearer header and
//! echoes a small JSON body, the floor of this HTTP stack on this machine. It then drives
//! each with keep-alive HTTP/1.1 connections for a fixed time and prints requests/s and
//! latency percentiles: the floor, lookup, and send + verify flows with durable state.
//! The `kannel` scenario (`bench/kannel.rs`) compares sending through a real Kannel
//! gateway straight and through Dialgate. The `noisy-neighbour` scenario measures one
//! tenant's lookups alone, beside another tenant's plain lookups, and beside that
//! tenant's budget-burning rule (the hostile `spin` guest, built from the source tree).
//! With `--store`, the servers keep their records in that PostgreSQL database, and
//! `--replicas N` runs the lookup and flow scenarios against N servers on it, requests
//! spread round-robin.

mod analytics;
mod backtest;
mod kannel;
mod pumping;
mod soak;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::clock::SystemClock;
use crate::config::Config;
use crate::flows::Engine;
use crate::model::rules::Trigger;
use crate::plugins::registry::Manifest;
use crate::plugins::Kind;
use crate::sending::{DevOutbox, OutboundMessage, SendFuture, Sender};
use crate::settings::{BucketLimit, EndpointLimits, PhoneSettings};

/// Options of `dialgate bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Seconds to drive each scenario.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Scenarios to run: floor, lookup, lookup-1rule, lookup-10rules,
    /// lookup-10workflows, flow, and, not by default, noisy-neighbour (it builds the
    /// hostile `spin` guest from the source tree), kannel (it needs Debian's kannel) and
    /// soak (mixed traffic for the run's length, reported interval by interval; run it
    /// with --seconds 600) and pumping (a synthetic trace of legitimate traffic, a
    /// campaign and SMS-pumping attacks through the detector) and analytics (a year of
    /// counts, then the conversion queries a dashboard makes) and backtest (a tenant's
    /// recorded verifications, then one backtest of a candidate rule set over them)
    /// (comma-separated).
    #[arg(
        long,
        default_value = "floor,lookup,lookup-1rule,lookup-10rules,lookup-10workflows,flow",
        value_delimiter = ','
    )]
    pub scenarios: Vec<String>,
    /// Messages the `kannel` scenario sends each way.
    #[arg(long, default_value_t = 5000)]
    pub kannel_messages: u64,
    /// Delivery reports the `kannel` scenario asks for (Kannel's `dlr-mask`; 0 for
    /// none).
    #[arg(long, default_value_t = 31)]
    pub kannel_dlr_mask: u8,
    /// How long the endpoint taking Kannel's delivery reports in the `kannel`
    /// scenario's part (a) waits before it answers, in ms: 0 answers at once; a few ms
    /// is what a receipt endpoint that makes each receipt durable before answering
    /// takes (Dialgate's does in part (b)).
    #[arg(long, default_value_t = 0)]
    pub kannel_sink_delay_ms: u64,
    /// A PostgreSQL database the bench servers keep their records in, instead of a
    /// sled store in a temporary directory (postgres://user:password@host:port/db).
    #[arg(long)]
    pub store: Option<String>,
    /// Servers sharing the `--store` database that the lookup and flow scenarios spread
    /// their requests over, round-robin (a flow verifies on the replica after the one
    /// it sent through).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Operations per second the `soak` scenario paces itself at (0: as fast as its
    /// connections go). Paced, an operation's latency counts from when it was due.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Times to run the whole list of scenarios. With more than one, the run ends with
    /// each scenario's median throughput and, for lookups with rules, the median of
    /// the rounds' ratios to lookup with no rules (each ratio pairs two scenarios run
    /// moments apart, so a shared machine's drift cancels out of it).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Trace minutes the `pumping` scenario replays (by the server's clock, which the
    /// trace drives: an attack runs at real speed, the run takes seconds).
    #[arg(long, default_value_t = 180)]
    pub pumping_minutes: u64,
    /// Verifications the `analytics` scenario counts over `--analytics-days`.
    #[arg(long, default_value_t = 10_000_000)]
    pub analytics_verifications: u64,
    /// Days of traffic the `analytics` scenario counts (by the server's clock).
    #[arg(long, default_value_t = 365)]
    pub analytics_days: u64,
    /// Verifications the `backtest` scenario stores and backtests.
    #[arg(long, default_value_t = 100_000)]
    pub backtest_verifications: u64,
}

/// The store of this run's bench servers (`--store`), set once by [`run`].
static STORE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// Figures of one scenario.
#[derive(Debug, Clone)]
pub struct Figures {
    pub name: String,
    pub operations: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub errors: u64,
}

impl Figures {
    fn per_second(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64()
    }
}

/// The dev outbox plus an in-memory copy of each code, so the driver can answer.
struct RecordingOutbox {
    inner: DevOutbox,
    codes: Mutex<HashMap<String, String>>,
}

impl Sender for RecordingOutbox {
    fn name(&self) -> &str {
        "dev-outbox"
    }

    fn send(&self, message: OutboundMessage) -> SendFuture<'_> {
        self.codes
            .lock()
            .insert(message.phone.clone(), message.code.clone());
        self.inner.send(message)
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(store) = &args.store {
        crate::config::check_store_url(store)?;
    }
    anyhow::ensure!(args.replicas >= 1, "--replicas must be at least 1");
    anyhow::ensure!(
        args.replicas == 1 || args.store.is_some(),
        "--replicas needs --store: replicas share a PostgreSQL database"
    );
    let _ = STORE.set(args.store.clone());
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.connections)
        .build_http();
    let dir = tempfile_dir()?;
    println!(
        "dialgate bench: {} connections, {} s per scenario, {} cores",
        args.connections,
        args.seconds,
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    let mut rounds: Vec<Vec<Figures>> = Vec::new();
    for round in 1..=args.rounds {
        if args.rounds > 1 {
            println!("round {round} of {}", args.rounds);
        }
        let mut results = Vec::new();
        // Each round's servers start on stores of their own.
        let dir = dir.join(format!("round-{round}"));
        for scenario in &args.scenarios {
            let figures = match scenario.as_str() {
                "floor" => floor(&client, &args).await?,
                "lookup" => {
                    lookup(&client, &args, &dir.join("lookup"), Rules::Plugins(0)).await?
                }
                "lookup-1rule" => {
                    lookup(&client, &args, &dir.join("lookup-1"), Rules::Plugins(1)).await?
                }
                "lookup-10rules" => {
                    lookup(&client, &args, &dir.join("lookup-10"), Rules::Plugins(10)).await?
                }
                "lookup-10workflows" => {
                    lookup(&client, &args, &dir.join("lookup-10w"), Rules::Workflows(10)).await?
                }
                "flow" => flow(&client, &args, &dir.join("flow")).await?,
                "noisy-neighbour" => {
                    noisy_neighbour(&client, &args, &dir.join("noisy")).await?;
                    continue;
                }
                "kannel" => {
                    kannel::run(&client, &args, &dir.join("kannel")).await?;
                    continue;
                }
                "soak" => {
                    soak::run(&client, &args, &dir.join("soak")).await?;
                    continue;
                }
                "pumping" => {
                    pumping::run(&client, &args, &dir.join("pumping")).await?;
                    continue;
                }
                "analytics" => {
                    analytics::run(&client, &args, &dir.join("analytics")).await?;
                    continue;
                }
                "backtest" => {
                    backtest::run(&client, &args, &dir.join("backtest")).await?;
                    continue;
                }
                other => bail!(
                    "unknown scenario {other:?}; expected floor, lookup, lookup-1rule, lookup-10rules, lookup-10workflows, flow, noisy-neighbour, kannel, soak, pumping, analytics or backtest"
                ),
            };
            print_row(&figures, &results);
            results.push(figures);
        }
        rounds.push(results);
    }
    if args.rounds > 1 {
        print_medians(&rounds);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// Each scenario's median throughput over the rounds, and for lookups with rules the
/// median of the rounds' ratios to lookup with no rules.
fn print_medians(rounds: &[Vec<Figures>]) {
    println!("medians over {} rounds", rounds.len());
    let Some(first) = rounds.first() else {
        return;
    };
    for figures in first {
        let name = &figures.name;
        let rates: Vec<f64> = rounds
            .iter()
            .filter_map(|round| round.iter().find(|f| &f.name == name))
            .map(Figures::per_second)
            .collect();
        let ratios: Vec<f64> = rounds
            .iter()
            .filter_map(|round| {
                let this = round.iter().find(|f| &f.name == name)?;
                let plain = round
                    .iter()
                    .find(|f| f.name.starts_with("lookup (0 rules)"))?;
                (name.starts_with("lookup") && plain.name != *name)
                    .then(|| this.per_second() / plain.per_second())
            })
            .collect();
        let mut line = format!(
            "{:<44} {:>10.0}/s",
            name,
            median(rates.clone()).unwrap_or_default()
        );
        if let Some(ratio) = median(ratios.clone()) {
            let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let high = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            line.push_str(&format!(
                "  (median {:.0}% of lookup with no rules; rounds {:.0}–{:.0}%)",
                100.0 * ratio,
                100.0 * low,
                100.0 * high
            ));
        }
        println!("{line}");
    }
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("dialgate-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn print_row(figures: &Figures, earlier: &[Figures]) {
    // A single-request scenario compares with the floor, a lookup with rules with the
    // lookup without; a flow is two requests and compares with nothing.
    let floor = earlier.iter().find(|f| f.name.starts_with("floor"));
    let plain = earlier
        .iter()
        .find(|f| f.name.starts_with("lookup (0 rules)"));
    let mut share = String::new();
    if figures.name.starts_with("lookup") {
        if let Some(floor) = floor {
            share.push_str(&format!(
                "  ({:.0}% of floor)",
                100.0 * figures.per_second() / floor.per_second()
            ));
        }
        if let Some(plain) = plain.filter(|p| p.name != figures.name) {
            share.push_str(&format!(
                "  ({:.0}% of lookup with no rules)",
                100.0 * figures.per_second() / plain.per_second()
            ));
        }
    }
    println!(
        "{:<44} {:>10.0}/s  p50 {:>7.3} ms  p99 {:>7.3} ms  errors {}{}",
        figures.name,
        figures.per_second(),
        figures.p50.as_secs_f64() * 1e3,
        figures.p99.as_secs_f64() * 1e3,
        figures.errors,
        share
    );
}

async fn floor(client: &HttpClient, args: &BenchArgs) -> anyhow::Result<Figures> {
    async fn echo(headers: HeaderMap, Json(body): Json<Value>) -> Result<Json<Value>, StatusCode> {
        let ok = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "Bearer floor-key");
        if ok {
            Ok(Json(body))
        } else {
            Err(StatusCode::UNAUTHORIZED)
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        axum::serve(listener, Router::new().route("/echo", post(echo))).await
    });
    let url = format!("http://{addr}/echo");
    let client = client.clone();
    let figures = drive("floor (bare axum: bearer + echo)", args, move |_| {
        let request = post_json(&url, "floor-key", &json!({"phone": "+14155551234"}));
        let client = client.clone();
        async move { expect_ok(client.request(request?).await).await.map(|_| ()) }
    })
    .await;
    server.abort();
    Ok(figures)
}

/// What the bench's tenant runs at `phone_lookup_complete`.
#[derive(Debug, Clone, Copy)]
enum Rules {
    /// This many copies of the `otp-for-voip` rule plugin.
    Plugins(usize),
    /// This many declarative rules shaped like seed 004's `otp_for_voip`.
    Workflows(usize),
}

impl std::fmt::Display for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rules::Plugins(count) => write!(f, "{count} rules"),
            Rules::Workflows(count) => write!(f, "{count} declarative rules"),
        }
    }
}

async fn start_server(
    dir: &std::path::Path,
    rules: Rules,
) -> anyhow::Result<(
    SocketAddr,
    String,
    Arc<RecordingOutbox>,
    tokio::task::JoinHandle<()>,
)> {
    let mut server = start_tenants(dir, &[rules]).await?;
    let (_, key) = server.tenants.remove(0);
    Ok((server.addr, key, server.outbox, server.task))
}

/// A bench server and its tenants (id, key).
struct BenchServer {
    addr: SocketAddr,
    tenants: Vec<(String, String)>,
    outbox: Arc<RecordingOutbox>,
    task: tokio::task::JoinHandle<()>,
    engine: Arc<Engine>,
}

/// A bench server with one tenant per entry of `rules`, each with generous rate limits
/// and those rules; returns the tenants' ids and keys.
async fn start_tenants(dir: &std::path::Path, rules: &[Rules]) -> anyhow::Result<BenchServer> {
    let mut server = launch(dir).await?;
    for (n, rules) in rules.iter().enumerate() {
        let tenant = server
            .engine
            .create_tenant(Some(&format!("bench-{n}")))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let key = tenant.api_key.context("new tenants come with a key")?;
        configure_tenant(&server.engine, &tenant.id, *rules).await?;
        server.tenants.push((tenant.id, key));
    }
    Ok(server)
}

/// The configuration of a bench server over `dir` (or the run's `--store`).
fn bench_config(dir: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.to_path_buf(),
        // The bench's simulators and Kannel listen on loopback, which the egress
        // policy refuses by default.
        egress_allow: crate::egress::AllowList::loopback(),
        store: STORE.get().cloned().flatten(),
        plugin_shares: bench_shares(),
        ..Config::default()
    })
}

/// The plugin shares of bench servers: the defaults, or what the server's variables
/// (`DIALGATE_ADAPTER_CALLS_PER_TENANT` and the like) set, so a run can show how a
/// share bounds a scenario.
fn bench_shares() -> crate::plugins::Shares {
    fn var<T: std::str::FromStr>(name: &str) -> Option<T> {
        std::env::var(name)
            .ok()
            .and_then(|value| value.parse().ok())
    }
    crate::config::ShareOverrides {
        plugin_calls: var("DIALGATE_PLUGIN_CALLS"),
        plugin_calls_per_tenant: var("DIALGATE_PLUGIN_CALLS_PER_TENANT"),
        adapter_calls: var("DIALGATE_ADAPTER_CALLS"),
        adapter_calls_per_tenant: var("DIALGATE_ADAPTER_CALLS_PER_TENANT"),
        plugin_queue_ms: var("DIALGATE_PLUGIN_QUEUE_MS"),
        adapter_queue_ms: var("DIALGATE_ADAPTER_QUEUE_MS"),
        plugin_cpu_ms_per_sec: var("DIALGATE_PLUGIN_CPU_MS_PER_SEC"),
    }
    .resolve()
}

/// A bench server with no tenants of its own: the first of a run, or another replica
/// on the run's shared store (which finds the tenants already there).
async fn launch(dir: &std::path::Path) -> anyhow::Result<BenchServer> {
    launch_with(dir, Arc::new(SystemClock)).await
}

/// [`launch`] with the server's clock.
async fn launch_with(
    dir: &std::path::Path,
    clock: Arc<dyn crate::clock::Clock>,
) -> anyhow::Result<BenchServer> {
    let config = bench_config(dir)?;
    let (engine, _) = crate::server::build_engine(&config, clock)?;
    let outbox = engine
        .outbox
        .clone()
        .context("the dev outbox is on in bench mode")?;
    let recording = Arc::new(RecordingOutbox {
        inner: outbox,
        codes: Mutex::new(HashMap::new()),
    });
    let mut engine = Arc::into_inner(engine).context("engine not yet shared")?;
    engine.sender = Some(Arc::clone(&recording) as Arc<dyn Sender>);
    let engine = Arc::new(engine);
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    // Providers' receipts come back to this server.
    let _ = engine.replica.public_url.set(format!("http://{addr}"));
    let serving = Arc::clone(&engine);
    let task = tokio::spawn(async move {
        let _ = crate::server::serve_on(listener, serving, std::future::pending()).await;
    });
    Ok(BenchServer {
        addr,
        tenants: Vec::new(),
        outbox: recording,
        task,
        engine,
    })
}

/// Generous rate limits and `rules` for the tenant.
async fn configure_tenant(engine: &Engine, tenant_id: &str, rules: Rules) -> anyhow::Result<()> {
    let generous = BucketLimit {
        per_minute: 10_000_000,
        burst: 1_000_000,
    };
    let limits = EndpointLimits {
        per_tenant: generous,
        per_phone: generous,
        per_ip: generous,
    };
    let mut settings = PhoneSettings::default();
    settings.rate_limits.send_otp = limits;
    settings.rate_limits.verify_otp = limits;
    settings.rate_limits.lookup = limits;
    settings.rate_limits.line_checks = limits;
    engine
        .put_settings(tenant_id, settings)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    match rules {
        Rules::Plugins(count) => install_rules(engine, tenant_id, count)?,
        Rules::Workflows(count) => install_workflows(engine, tenant_id, count)?,
    }
    Ok(())
}

/// Binds `count` copies of the first-party `otp-for-voip` rule (a small rule that asks
/// nothing of the bench's numbers) to `phone_lookup_complete` for the tenant.
fn install_rules(engine: &Engine, tenant_id: &str, count: usize) -> anyhow::Result<()> {
    if count == 0 {
        return Ok(());
    }
    let builtin = *engine
        .plugins
        .builtins()
        .iter()
        .find(|builtin| builtin.name == "otp-for-voip")
        .context("this build carries no first-party otp-for-voip rule")?;
    for n in 0..count {
        let manifest = Manifest {
            name: format!("rule-{n}"),
            kind: Kind::Rule,
            version: "1".to_owned(),
            triggers: vec![Trigger::PhoneLookupComplete],
            hosts: Vec::new(),
            description: None,
        };
        engine
            .plugins
            .upload(tenant_id, manifest, builtin.bytes, true, chrono::Utc::now())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}

/// Creates `count` declarative rules at `phone_lookup_complete`, shaped like seed
/// 004's `otp_for_voip` (two comparisons; none of the bench's numbers is VoIP, so they
/// are evaluated in full and none fires).
fn install_workflows(engine: &Engine, tenant_id: &str, count: usize) -> anyhow::Result<()> {
    for n in 0..count {
        let body = json!({
            "rule_id": format!("rule_{n}"),
            "trigger": "phone_lookup_complete",
            "conditions": {"all": [
                {"field": "phone_type", "operator": "eq", "value": "voip"},
                {"field": "phone_otp_verified", "operator": "eq", "value": false}
            ]},
            "actions": [
                {"type": "request_info", "info_needed": "Phone verification required"},
                {"type": "send_otp", "channel": "sms"}
            ]
        });
        engine
            .create_workflow_rule(tenant_id, &body)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}

/// Ten countries, interleaved.
const NUMBERS: [&str; 10] = [
    "+14155552671",
    "+442079460123",
    "+998901234567",
    "+4915123456789",
    "+33612345678",
    "+79161234567",
    "+5511987654321",
    "+919876543210",
    "+8613812345678",
    "+34612345678",
];

/// `replicas` bench servers on the run's store: the first with one tenant running
/// `rules`, the others started after it (so they find the tenant and its plugins).
/// Their addresses and recording outboxes, the tenant's key, and the servers' tasks.
struct Fleet {
    addrs: Vec<SocketAddr>,
    outboxes: Vec<Arc<RecordingOutbox>>,
    key: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    async fn start(dir: &std::path::Path, rules: Rules, replicas: usize) -> anyhow::Result<Self> {
        let (addr, key, outbox, task) = start_server(dir, rules).await?;
        let mut fleet = Self {
            addrs: vec![addr],
            outboxes: vec![outbox],
            key,
            tasks: vec![task],
        };
        for n in 1..replicas {
            let replica = launch(&dir.join(format!("replica-{n}"))).await?;
            fleet.addrs.push(replica.addr);
            fleet.outboxes.push(replica.outbox);
            fleet.tasks.push(replica.task);
        }
        Ok(fleet)
    }

    /// A scenario's name, with the number of replicas when there are several.
    fn name(&self, name: &str) -> String {
        match self.addrs.len() {
            1 => name.to_owned(),
            n => format!("{name}, {n} replicas"),
        }
    }

    fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

async fn lookup(
    client: &HttpClient,
    args: &BenchArgs,
    dir: &std::path::Path,
    rules: Rules,
) -> anyhow::Result<Figures> {
    let fleet = Fleet::start(dir, rules, args.replicas).await?;
    let urls: Vec<String> = fleet
        .addrs
        .iter()
        .map(|addr| format!("http://{addr}/v1/phone/lookup"))
        .collect();
    let key = fleet.key.clone();
    let client = client.clone();
    let name = fleet.name(&format!("lookup ({rules})"));
    let figures = drive(&name, args, move |i| {
        let body = json!({"phone": NUMBERS[(i % 10) as usize], "applicant_country": "US"});
        let request = post_json(&urls[i as usize % urls.len()], &key, &body);
        let client = client.clone();
        async move { expect_ok(client.request(request?).await).await.map(|_| ()) }
    })
    .await;
    fleet.stop();
    Ok(figures)
}

async fn flow(
    client: &HttpClient,
    args: &BenchArgs,
    dir: &std::path::Path,
) -> anyhow::Result<Figures> {
    let fleet = Fleet::start(dir, Rules::Plugins(0), args.replicas).await?;
    let urls = |path: &str| -> Vec<String> {
        fleet
            .addrs
            .iter()
            .map(|addr| format!("http://{addr}{path}"))
            .collect()
    };
    let (send_urls, verify_urls) = (urls("/v1/phone/send-otp"), urls("/v1/phone/verify-otp"));
    let (key, outboxes) = (fleet.key.clone(), fleet.outboxes.clone());
    let client = client.clone();
    let name = fleet.name("send + verify (flows, fsynced)");
    let figures = drive(&name, args, move |i| {
        // Distinct valid UK mobile numbers: +44 7911 000000 to 299999 (the range is
        // only partly allocated past that), 7,919 apart (coprime with the range, so
        // each is used once before any comes back): a run of neighbouring numbers
        // would be blocked by the SMS-pumping detector before its codes convert.
        let phone = format!("+447911{:06}", (i * 7_919) % 300_000);
        let applicant = format!("applicant-{i}");
        let client = client.clone();
        // Sent through one replica, verified through the next.
        let (sender, verifier) = (
            i as usize % send_urls.len(),
            (i as usize + 1) % send_urls.len(),
        );
        let send = post_json(
            &send_urls[sender],
            &key,
            &json!({"phone": phone, "applicant_id": applicant, "channel": "sms"}),
        );
        let verify_url = verify_urls[verifier].clone();
        let key = key.clone();
        let outbox = Arc::clone(&outboxes[sender]);
        async move {
            expect_ok(client.request(send?).await).await?;
            let code = outbox
                .codes
                .lock()
                .remove(&phone)
                .context("code not recorded")?;
            let verify = post_json(
                &verify_url,
                &key,
                &json!({"phone": phone, "applicant_id": applicant, "code": code}),
            )?;
            let body = expect_ok(client.request(verify).await).await?;
            if !body.windows(10).any(|w| w == b"\"verified\"") {
                bail!(
                    "verification did not succeed: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            Ok(())
        }
    })
    .await;
    fleet.stop();
    Ok(figures)
}

/// Connections each tenant drives in the `noisy-neighbour` scenario.
const NEIGHBOUR_CONNECTIONS: usize = 32;

/// Tenant B's lookups alone, beside tenant A's plain lookups, and beside A's rule that
/// burns its whole budget on every call (the hostile `spin` guest at
/// `phone_lookup_complete`); each tenant on 32 connections. Prints B's share of its
/// throughput beside plain traffic that it keeps beside the burner.
async fn noisy_neighbour(
    client: &HttpClient,
    args: &BenchArgs,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let spin = crate::plugins::testing::guest_component("hostile_spin");
    let server = start_tenants(dir, &[Rules::Plugins(0), Rules::Plugins(0)]).await?;
    let url = format!("http://{}/v1/phone/lookup", server.addr);
    let (a_id, a_key) = server.tenants[0].clone();
    let (_, b_key) = server.tenants[1].clone();
    let lookups = |key: String| {
        let client = client.clone();
        let url = url.clone();
        move |i: u64| {
            let body = json!({"phone": NUMBERS[(i % 10) as usize], "applicant_country": "US"});
            let request = post_json(&url, &key, &body);
            let client = client.clone();
            async move { expect_ok(client.request(request?).await).await.map(|_| ()) }
        }
    };
    let seconds = args.seconds;
    let phase = |name: &'static str, with_a: bool| {
        let b_op = lookups(b_key.clone());
        let a = lookups(a_key.clone());
        async move {
            let name = format!("noisy-neighbour: B {name}");
            let b = drive_with(&name, seconds, NEIGHBOUR_CONNECTIONS, b_op);
            if with_a {
                let a = drive_with("  tenant A", seconds, NEIGHBOUR_CONNECTIONS, a);
                let (b, a) = tokio::join!(b, a);
                (b, Some(a))
            } else {
                (b.await, None)
            }
        }
    };
    let (alone, _) = phase("alone", false).await;
    print_row(&alone, &[]);
    let (plain, a_plain) = phase("beside A's plain lookups", true).await;
    print_row(&plain, &[]);
    if let Some(a) = &a_plain {
        print_row(a, &[]);
    }
    let manifest = Manifest {
        name: "spin".to_owned(),
        kind: Kind::Rule,
        version: "1".to_owned(),
        triggers: vec![Trigger::PhoneLookupComplete],
        hosts: Vec::new(),
        description: None,
    };
    server
        .engine
        .plugins
        .upload(&a_id, manifest, &spin, true, chrono::Utc::now())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (burnt, a_burning) = phase("beside A's budget burner", true).await;
    print_row(&burnt, &[]);
    if let Some(a) = &a_burning {
        print_row(a, &[]);
    }
    let ratio = burnt.per_second() / plain.per_second().max(f64::MIN_POSITIVE);
    println!(
        "noisy-neighbour: B keeps {ratio:.2}x of its throughput beside plain traffic when A burns its budget (target >= 0.80); p99 {:.3} ms -> {:.3} ms",
        plain.p99.as_secs_f64() * 1e3,
        burnt.p99.as_secs_f64() * 1e3,
    );
    server.task.abort();
    Ok(())
}

fn post_json(url: &str, key: &str, body: &Value) -> anyhow::Result<Request<Full<Bytes>>> {
    json_request(hyper::Method::POST, url, key, body)
}

/// A request with a JSON body and the bearer `key`.
fn json_request(
    method: hyper::Method,
    url: &str,
    key: &str,
    body: &Value,
) -> anyhow::Result<Request<Full<Bytes>>> {
    Ok(Request::builder()
        .method(method)
        .uri(url)
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?)
}

async fn expect_ok(
    response: Result<hyper::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>,
) -> anyhow::Result<Bytes> {
    let response = response?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("status {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body)
}

/// Runs `op` from `connections` concurrent workers for the configured time.
async fn drive<F, Fut>(name: &str, args: &BenchArgs, op: F) -> Figures
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    drive_with(name, args.seconds, args.connections, op).await
}

/// Runs `op` from `connections` concurrent workers for `seconds` (after a warm-up
/// second).
async fn drive_with<F, Fut>(name: &str, seconds: u64, connections: usize, op: F) -> Figures
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let counter = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let warmup = Duration::from_secs(1).min(Duration::from_secs(seconds));
    let start = Instant::now();
    let measure_from = start + warmup;
    let deadline = measure_from + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for _ in 0..connections {
        let op = op.clone();
        let counter = Arc::clone(&counter);
        let errors = Arc::clone(&errors);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            loop {
                let began = Instant::now();
                if began >= deadline {
                    break;
                }
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let result = op(i).await;
                if began >= measure_from {
                    match result {
                        Ok(()) => latencies.push(began.elapsed()),
                        Err(err) => {
                            if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("first error: {err:#}");
                            }
                        }
                    }
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap_or_default());
    }
    let elapsed = Instant::now().saturating_duration_since(measure_from);
    all.sort_unstable();
    let pick = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Figures {
        name: name.to_owned(),
        operations: all.len() as u64,
        elapsed,
        p50: pick(0.50),
        p99: pick(0.99),
        errors: errors.load(Ordering::Relaxed),
    }
}
