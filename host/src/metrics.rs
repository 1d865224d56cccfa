//! The process's Prometheus metrics (`GET /metrics`): one [`Metrics`] per engine, the
//! series it keeps, and the bounds that keep their label sets small whatever tenants
//! and clients send.
//!
//! A leaf: it uses no other module of the crate, so the flows, the plugin runtime, the
//! store and the API can all record into it.
//!
//! Every label value is bounded. Routes are the router's templates (`unmatched` for
//! anything else), methods and channels a fixed vocabulary (`other` beyond it),
//! countries ISO 3166-1 alpha-2 codes (`unknown` otherwise), and values a tenant
//! names or creates (plugin and provider ids) are kept for the first
//! [`MAX_LABEL_VALUES`] distinct values of each kind, after which further ones are
//! counted under `other`. No label value is longer than [`MAX_LABEL_LEN`] bytes.

use std::collections::HashSet;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Distinct values a tenant-named label (plugin, provider) keeps before `other`.
pub const MAX_LABEL_VALUES: usize = 200;
/// Longest label value, in bytes; longer ones are cut.
pub const MAX_LABEL_LEN: usize = 64;
/// The route label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";
/// The label value past a bound.
pub const OTHER: &str = "other";
/// The country label of a destination without a known ISO code.
pub const UNKNOWN: &str = "unknown";
/// The content type of the exposition (OpenMetrics text, which Prometheus scrapes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Request latency buckets, in seconds: 0.5 ms to 10 s.
const HTTP_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Store latency buckets, in seconds: 10 µs to 1 s.
const STORE_BUCKETS: [f64; 15] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 1.0,
];

/// Where a code is in its life, for [`Metrics::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeStage {
    /// A provider, adapter or the host's sender accepted the message.
    Sent,
    /// A receipt reported it delivered.
    Delivered,
    /// Sending it failed, or a receipt reported it failed or expired.
    Failed,
    /// The code was entered correctly.
    Verified,
}

impl CodeStage {
    fn as_str(self) -> &'static str {
        match self {
            CodeStage::Sent => "sent",
            CodeStage::Delivered => "delivered",
            CodeStage::Failed => "failed",
            CodeStage::Verified => "verified",
        }
    }
}

/// What a store operation was, for the store latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Get,
    Put,
    Remove,
    /// A compare-and-swap update (read, change, conditional write; retried).
    Update,
    Scan,
    /// Waiting for the group commit.
    Sync,
}

impl StoreOp {
    fn as_str(self) -> &'static str {
        match self {
            StoreOp::Get => "get",
            StoreOp::Put => "put",
            StoreOp::Remove => "remove",
            StoreOp::Update => "update",
            StoreOp::Scan => "scan",
            StoreOp::Sync => "sync",
        }
    }
}

/// Which rate limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    Tenant,
    Number,
    Ip,
    Other,
}

impl LimitScope {
    fn as_str(self) -> &'static str {
        match self {
            LimitScope::Tenant => "tenant",
            LimitScope::Number => "number",
            LimitScope::Ip => "ip",
            LimitScope::Other => OTHER,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    stage: &'static str,
    channel: &'static str,
    provider: String,
    country: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CountryLabels {
    country: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginFailureLabels {
    plugin: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabels {
    provider: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

fn store_histogram() -> Histogram {
    Histogram::new(STORE_BUCKETS)
}

/// Label values of one kind, kept for the first `cap` distinct values; later ones
/// read as `other`.
#[derive(Debug)]
struct Capped {
    cap: usize,
    seen: RwLock<HashSet<String>>,
}

impl Capped {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            seen: RwLock::new(HashSet::new()),
        }
    }

    fn label(&self, value: &str) -> String {
        let value = clean(value);
        if self.seen.read().contains(&value) {
            return value;
        }
        let mut seen = self.seen.write();
        if seen.contains(&value) || seen.len() < self.cap {
            seen.insert(value.clone());
            value
        } else {
            OTHER.to_owned()
        }
    }
}

/// `value` cut to [`MAX_LABEL_LEN`] bytes (at a character boundary); `unknown` when
/// empty.
fn clean(value: &str) -> String {
    if value.is_empty() {
        return UNKNOWN.to_owned();
    }
    let mut end = value.len().min(MAX_LABEL_LEN);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

/// An HTTP method as a label: the standard ones, else `other`.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .iter()
        .find(|known| **known == method)
        .copied()
        .unwrap_or(OTHER)
}

/// A channel as a label: the channels codes go on, else `other`.
fn channel_label(channel: &str) -> &'static str {
    const KNOWN: [&str; 5] = ["sms", "voice", "whatsapp", "viber", "telegram"];
    let lower = channel.to_ascii_lowercase();
    KNOWN
        .iter()
        .find(|known| **known == lower)
        .copied()
        .unwrap_or(OTHER)
}

/// A country as a label: its ISO 3166-1 alpha-2 code in capitals, else `unknown`.
pub fn country_label(country: &str) -> String {
    let upper = country.trim().to_ascii_uppercase();
    if upper.len() == 2 && isocountry::CountryCode::for_alpha2(&upper).is_ok() {
        upper
    } else {
        UNKNOWN.to_owned()
    }
}

/// The process's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Histograms<HttpLabels>,
    codes: Family<CodeLabels, Counter>,
    fraud_blocks: Family<CountryLabels, Counter>,
    plugin_calls: Family<PluginLabels, Counter>,
    plugin_failures: Family<PluginFailureLabels, Counter>,
    plugin_fuel: Family<PluginLabels, Counter>,
    plugin_seconds: Family<PluginLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    breakers: Family<BreakerLabels, Gauge>,
    webhook_backlog: Gauge,
    webhook_attempts: Family<OutcomeLabels, Counter>,
    webhook_failed: Counter,
    store_latency: Histograms<OpLabels>,
    rate_limited: Family<ScopeLabels, Counter>,
    plugins: Capped,
    providers: Capped,
    /// One scrape refreshes the gauges read at scrape time at once.
    scraping: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every series, registered and empty.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::default();
        registry.register(
            "dialgate_http_requests",
            "HTTP requests answered, by method, route template and status",
            Family::clone(&http_requests),
        );
        let http_duration: Histograms<HttpLabels> =
            Family::new_with_constructor(http_histogram as fn() -> Histogram);
        registry.register(
            "dialgate_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status",
            Family::clone(&http_duration),
        );
        let codes = Family::default();
        registry.register(
            "dialgate_codes",
            "Verification codes by stage (sent, delivered, failed, verified), channel, provider and destination country",
            Family::clone(&codes),
        );
        let fraud_blocks = Family::default();
        registry.register(
            "dialgate_fraud_blocks",
            "Sends refused by the SMS-pumping detector, by destination country",
            Family::clone(&fraud_blocks),
        );
        let plugin_calls = Family::default();
        registry.register(
            "dialgate_plugin_calls",
            "Plugin calls that ran, by plugin id",
            Family::clone(&plugin_calls),
        );
        let plugin_failures = Family::default();
        registry.register(
            "dialgate_plugin_failures",
            "Plugin calls that failed, by plugin id and kind of failure (also calls refused a slot or dropped unfinished, which plugin_calls does not count)",
            Family::clone(&plugin_failures),
        );
        let plugin_fuel = Family::default();
        registry.register(
            "dialgate_plugin_fuel",
            "Fuel plugin calls used, by plugin id",
            Family::clone(&plugin_fuel),
        );
        let plugin_seconds = Family::default();
        registry.register(
            "dialgate_plugin_seconds",
            "Time plugin calls ran, by plugin id",
            Family::clone(&plugin_seconds),
        );
        let breakers = Family::default();
        registry.register(
            "dialgate_provider_breakers",
            "Circuit breakers (one per provider and country) in each state, by provider id",
            Family::clone(&breakers),
        );
        let webhook_backlog = Gauge::default();
        registry.register(
            "dialgate_webhook_backlog",
            "Webhook deliveries due and not yet attempted (or waiting for their subscription's turn)",
            Gauge::clone(&webhook_backlog),
        );
        let webhook_attempts = Family::default();
        registry.register(
            "dialgate_webhook_attempts",
            "Webhook delivery attempts, by outcome",
            Family::clone(&webhook_attempts),
        );
        let webhook_failed = Counter::default();
        registry.register(
            "dialgate_webhook_deliveries_failed",
            "Webhook deliveries given up after their last attempt failed",
            Counter::clone(&webhook_failed),
        );
        let store_latency: Histograms<OpLabels> =
            Family::new_with_constructor(store_histogram as fn() -> Histogram);
        registry.register(
            "dialgate_store_operation_duration_seconds",
            "Time of store operations, by kind (get, put, remove, update, scan, sync)",
            Family::clone(&store_latency),
        );
        let rate_limited = Family::default();
        registry.register(
            "dialgate_rate_limited",
            "Requests refused by a rate limit, by the limit's scope (tenant, number, ip)",
            Family::clone(&rate_limited),
        );
        Self {
            registry,
            http_requests,
            http_duration,
            codes,
            fraud_blocks,
            plugin_calls,
            plugin_failures,
            plugin_fuel,
            plugin_seconds,
            breakers,
            webhook_backlog,
            webhook_attempts,
            webhook_failed,
            store_latency,
            rate_limited,
            plugins: Capped::new(MAX_LABEL_VALUES),
            providers: Capped::new(MAX_LABEL_VALUES),
            scraping: Mutex::new(()),
        }
    }

    /// A code reached `stage` on `channel` (`sms`, `voice`, …) through `provider` (its
    /// id or the adapter's name; bounded like plugin ids) to `country` (ISO alpha-2).
    pub fn code(&self, stage: CodeStage, channel: &str, provider: &str, country: &str) {
        self.codes
            .get_or_create(&CodeLabels {
                stage: stage.as_str(),
                channel: channel_label(channel),
                provider: self.providers.label(provider),
                country: country_label(country),
            })
            .inc();
    }

    /// The SMS-pumping detector refused a send to `country` (ISO alpha-2).
    pub fn fraud_block(&self, country: &str) {
        self.fraud_blocks
            .get_or_create(&CountryLabels {
                country: country_label(country),
            })
            .inc();
    }

    /// An HTTP request was answered: `route` is the matched route's template, `None`
    /// when no route matched.
    pub fn http_request(&self, method: &str, route: Option<&str>, status: u16, took: Duration) {
        let labels = HttpLabels {
            method: method_label(method),
            route: route.map_or_else(|| UNMATCHED.to_owned(), clean),
            status,
        };
        self.http_requests.get_or_create(&labels).inc();
        self.http_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// A call of `plugin` ran, using `fuel` and `took`; `failure` is the kind of its
    /// failure, if it failed.
    pub fn plugin_call(
        &self,
        plugin: &str,
        fuel: u64,
        took: Duration,
        failure: Option<&'static str>,
    ) {
        let labels = PluginLabels {
            plugin: self.plugins.label(plugin),
        };
        self.plugin_calls.get_or_create(&labels).inc();
        self.plugin_fuel.get_or_create(&labels).inc_by(fuel);
        self.plugin_seconds
            .get_or_create(&labels)
            .inc_by(took.as_secs_f64());
        if let Some(kind) = failure {
            self.plugin_failures
                .get_or_create(&PluginFailureLabels {
                    plugin: labels.plugin,
                    kind,
                })
                .inc();
        }
    }

    /// A call of `plugin` failed with `kind` before it ran or before it ended (no slot
    /// for it, or its chain was dropped past its bound).
    pub fn plugin_failure(&self, plugin: &str, kind: &'static str) {
        self.plugin_failures
            .get_or_create(&PluginFailureLabels {
                plugin: self.plugins.label(plugin),
                kind,
            })
            .inc();
    }

    /// A store operation of kind `op` took `took`.
    pub fn store_op(&self, op: StoreOp, took: Duration) {
        self.store_latency
            .get_or_create(&OpLabels { op: op.as_str() })
            .observe(took.as_secs_f64());
    }

    /// A rate limit of `scope` refused a request.
    pub fn rate_limited(&self, scope: LimitScope) {
        self.rate_limited
            .get_or_create(&ScopeLabels {
                scope: scope.as_str(),
            })
            .inc();
    }

    /// A webhook attempt ended: whether the receiver took it, and whether the
    /// delivery was given up.
    pub fn webhook_attempt(&self, succeeded: bool, given_up: bool) {
        let outcome = if succeeded { "succeeded" } else { "failed" };
        self.webhook_attempts
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        if given_up {
            self.webhook_failed.inc();
        }
    }

    /// Encodes every series, after `refresh` has set the gauges read at scrape time
    /// (through the [`Gauges`] it is given); concurrent scrapes take turns.
    pub fn encode(&self, refresh: impl FnOnce(&Gauges<'_>)) -> String {
        let _turn = self.scraping.lock();
        self.breakers.clear();
        refresh(&Gauges { metrics: self });
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The gauges a scrape sets from the engine's state.
#[derive(Debug)]
pub struct Gauges<'a> {
    metrics: &'a Metrics,
}

impl Gauges<'_> {
    /// Adds `count` breakers of `provider` in `state` (`closed`, `open`,
    /// `half_open`).
    pub fn breakers(&self, provider: &str, state: &'static str, count: i64) {
        let labels = BreakerLabels {
            provider: self.metrics.providers.label(provider),
            state,
        };
        self.metrics.breakers.get_or_create(&labels).inc_by(count);
    }

    /// Sets the webhook backlog.
    pub fn webhook_backlog(&self, deliveries: i64) {
        self.metrics.webhook_backlog.set(deliveries);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `name{labels}` in `text`, where `labels` is the
    /// sample's label set as encoded.
    fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
        let wanted = format!("{name}{{{labels}}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&wanted))
            .and_then(|value| value.trim().parse().ok())
    }

    #[test]
    fn codes_and_fraud_blocks_are_counted_by_their_labels() {
        let metrics = Metrics::new();
        metrics.code(CodeStage::Sent, "sms", "prv_a", "gb");
        metrics.code(CodeStage::Sent, "sms", "prv_a", "GB");
        metrics.code(CodeStage::Verified, "SMS", "prv_a", "GB");
        metrics.code(CodeStage::Delivered, "pigeon", "prv_b", "ZZ");
        metrics.code(CodeStage::Failed, "voice", "", "");
        metrics.fraud_block("uz");
        metrics.fraud_block("UZ");
        metrics.fraud_block("Uzbekistan");
        metrics.plugin_failure("", "overloaded");
        let text = metrics.encode(|_| {});
        assert_eq!(
            sample(
                &text,
                "dialgate_plugin_failures_total",
                "plugin=\"unknown\",kind=\"overloaded\""
            ),
            Some(1.0)
        );
        assert!(!text.contains("dialgate_plugin_calls_total{"), "{text}");
        assert_eq!(
            sample(
                &text,
                "dialgate_codes_total",
                "stage=\"sent\",channel=\"sms\",provider=\"prv_a\",country=\"GB\""
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "dialgate_codes_total",
                "stage=\"verified\",channel=\"sms\",provider=\"prv_a\",country=\"GB\""
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "dialgate_codes_total",
                "stage=\"delivered\",channel=\"other\",provider=\"prv_b\",country=\"unknown\""
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "dialgate_codes_total",
                "stage=\"failed\",channel=\"voice\",provider=\"unknown\",country=\"unknown\""
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "dialgate_fraud_blocks_total", "country=\"UZ\""),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "dialgate_fraud_blocks_total", "country=\"unknown\""),
            Some(1.0)
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn tenant_named_labels_are_capped() {
        let metrics = Metrics::new();
        for n in 0..MAX_LABEL_VALUES + 50 {
            metrics.plugin_call(&format!("plg_{n}"), 10, Duration::from_micros(5), None);
        }
        metrics.plugin_call("plg_0", 10, Duration::from_micros(5), Some("timeout"));
        let long = "x".repeat(500);
        metrics.code(CodeStage::Sent, "sms", &long, "US");
        let text = metrics.encode(|_| {});
        let calls = text
            .lines()
            .filter(|line| line.starts_with("dialgate_plugin_calls_total{"))
            .count();
        assert_eq!(calls, MAX_LABEL_VALUES + 1, "the cap plus other");
        assert_eq!(
            sample(&text, "dialgate_plugin_calls_total", "plugin=\"other\""),
            Some(50.0)
        );
        assert_eq!(
            sample(&text, "dialgate_plugin_calls_total", "plugin=\"plg_0\""),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "dialgate_plugin_failures_total",
                "plugin=\"plg_0\",kind=\"timeout\""
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "dialgate_plugin_fuel_total", "plugin=\"plg_0\""),
            Some(20.0)
        );
        // The provider cap is its own: plugins filled theirs.
        let cut = "x".repeat(MAX_LABEL_LEN);
        assert!(
            text.contains(&format!("provider=\"{cut}\"")),
            "a long value is cut: {text}"
        );
    }

    #[test]
    fn requests_methods_and_routes_are_bounded() {
        let metrics = Metrics::new();
        metrics.http_request("GET", Some("/healthz"), 200, Duration::from_millis(1));
        metrics.http_request("BREW", None, 404, Duration::from_millis(1));
        let text = metrics.encode(|gauges| {
            gauges.breakers("prv_a", "open", 2);
            gauges.breakers("prv_a", "open", 1);
            gauges.webhook_backlog(7);
        });
        assert_eq!(
            sample(
                &text,
                "dialgate_http_requests_total",
                "method=\"GET\",route=\"/healthz\",status=\"200\""
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "dialgate_http_requests_total",
                "method=\"other\",route=\"unmatched\",status=\"404\""
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "dialgate_http_request_duration_seconds_count",
                "method=\"GET\",route=\"/healthz\",status=\"200\""
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "dialgate_provider_breakers",
                "provider=\"prv_a\",state=\"open\""
            ),
            Some(3.0)
        );
        assert!(text.contains("dialgate_webhook_backlog 7\n"), "{text}");
        // Gauges read at scrape time start afresh each scrape.
        let text = metrics.encode(|_| {});
        assert!(!text.contains("provider=\"prv_a\""), "{text}");
    }
}
