//! Adapter plugins: the `messaging-adapter` and `lookup-adapter` worlds, host side.
//!
//! Adapters get what rules do not: outbound HTTP and their tenant's configuration and
//! secrets. Outbound HTTP goes only to hosts the plugin's manifest asked for and the
//! tenant granted (host and port; a host alone means the scheme's default port), and
//! only to addresses the server's egress policy allows (`crate::egress`, checked on
//! the address connected to), follows no redirects, waits at most a few seconds (never
//! past the call's own deadline) and reads at most 1 MiB of answer. An outbound request
//! is awaited, not blocked on: the guest's fiber is suspended and the worker serves
//! other requests meanwhile. Adapter calls run in the adapter lane of the tenant's
//! share (an instance is held while the network answers, so adapters have slots of
//! their own and cannot starve rules); the caller waits at most the call's deadline
//! and a grace second, then drops the call, which frees its instance at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wasmtime::component::{Component, HasSelf, Linker};

use super::host::State;
use super::{Contract, Failure, Kind, Lane, Loaded, LoadedInner, PluginRuntime, Scope, Usage};

/// Bindings of the `messaging-adapter` world; shared interfaces come from the rule's.
pub mod messaging {
    wasmtime::component::bindgen!({
        world: "messaging-adapter",
        path: "../sdk/wit",
        imports: { "dialgate:plugin/http-client.send": async },
        exports: { default: async },
        with: {
            "dialgate:plugin/types": crate::plugins::wit::dialgate::plugin::types,
            "dialgate:plugin/log": crate::plugins::wit::dialgate::plugin::log,
            "dialgate:plugin/clock": crate::plugins::wit::dialgate::plugin::clock,
        },
    });
}

/// Bindings of the `lookup-adapter` world.
pub mod lookup {
    wasmtime::component::bindgen!({
        world: "lookup-adapter",
        path: "../sdk/wit",
        exports: { default: async },
        with: {
            "dialgate:plugin/types": crate::plugins::wit::dialgate::plugin::types,
            "dialgate:plugin/log": crate::plugins::wit::dialgate::plugin::log,
            "dialgate:plugin/clock": crate::plugins::wit::dialgate::plugin::clock,
            "dialgate:plugin/http-client": super::messaging::dialgate::plugin::http_client,
            "dialgate:plugin/config": super::messaging::dialgate::plugin::config,
        },
    });
}

use self::messaging::dialgate::plugin::{config, http_client, messaging_types};
use super::wit::dialgate::plugin::types::{HttpRequest, HttpResponse};

/// Time an adapter call may take in all, HTTP waits included.
const ADAPTER_DEADLINE_MS: u64 = 15_000;
/// [`ADAPTER_DEADLINE_MS`] as a duration.
pub(super) const DEADLINE: Duration = Duration::from_millis(ADAPTER_DEADLINE_MS);
/// Time one outbound request may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// How much longer than the deadline the caller waits for a call before giving up on
/// it and taking its slot back.
const CALLER_GRACE: Duration = Duration::from_secs(1);
/// Largest answer an adapter may read.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Hosts an adapter may reach: entries are `host:port`, or `host` for the default port
/// of the URL's scheme only (80 for http, 443 for https), so a grant of a host never
/// opens its other services.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpGrant {
    pub hosts: Vec<String>,
}

impl HttpGrant {
    /// Whether `url`'s host and port are granted.
    pub fn allows(&self, url: &reqwest::Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let Some(port) = url.port_or_known_default() else {
            return false;
        };
        let on_default_port = url.port().is_none();
        let with_port = format!("{host}:{port}");
        self.hosts.iter().any(|entry| {
            entry.eq_ignore_ascii_case(&with_port)
                || (on_default_port && entry.eq_ignore_ascii_case(host))
        })
    }
}

/// What one adapter call is granted.
#[derive(Debug, Clone)]
pub struct AdapterCall {
    pub config: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
    pub grant: HttpGrant,
    /// How long one outbound request may take (default 5 s); a provider's attempt
    /// timeout.
    pub timeout: Option<Duration>,
    /// The server's egress policy, which every outbound request passes.
    pub egress: crate::egress::Egress,
    /// Where the call's outbound exchanges are recorded, and the answers scripted in
    /// place of the network: for `dialgate plugin run`; `None` in a server.
    pub trial: Option<Arc<Trial>>,
    /// The connection pool of the call's provider (built through `egress`, so the
    /// policy holds): a provider's connections are kept alive between its calls and
    /// never shared with another's. `None`: the pool the egress policy's holders share.
    pub client: Option<reqwest::Client>,
}

impl AdapterCall {
    /// A connection pool of its own for a provider's calls, through `egress`.
    pub fn provider_client(egress: &crate::egress::Egress) -> reqwest::Client {
        egress
            .client_builder()
            .timeout(HTTP_TIMEOUT)
            .build()
            .unwrap_or_else(|err| {
                // Only a TLS backend that cannot start fails here: the shared pool
                // (which reports the same failure) serves instead.
                tracing::error!("cannot build a provider's outbound HTTP client: {err}");
                egress_client(egress)
            })
    }
}

/// A scripted answer: status, headers, body.
pub type ScriptedAnswer = (u16, Vec<(String, String)>, Vec<u8>);

/// What `dialgate plugin run` watches and scripts of an adapter call.
#[derive(Debug, Default)]
pub struct Trial {
    /// Every outbound request of the call, with what came of it.
    pub exchanges: parking_lot::Mutex<Vec<Exchange>>,
    /// Answers given in order instead of sending requests, when scripted.
    pub scripted: Option<parking_lot::Mutex<std::collections::VecDeque<HttpResponse>>>,
}

impl Trial {
    /// A trial that sends its requests out and records them.
    pub fn live() -> Self {
        Self::default()
    }

    /// A trial that answers its requests with `answers` (status, headers, body), in
    /// order, and records them; nothing is sent.
    pub fn scripted(answers: Vec<ScriptedAnswer>) -> Self {
        Self {
            exchanges: parking_lot::Mutex::new(Vec::new()),
            scripted: Some(parking_lot::Mutex::new(
                answers
                    .into_iter()
                    .map(|(status, headers, body)| HttpResponse {
                        status,
                        headers,
                        body,
                    })
                    .collect(),
            )),
        }
    }
}

/// One outbound request of an adapter call and what came of it.
#[derive(Debug, Clone, Serialize)]
pub struct Exchange {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// The request body as text (invalid UTF-8 replaced).
    pub body: String,
    /// The answer's status, headers and body as text, if there was an answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<ExchangeResponse>,
    /// Why there was no answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the exchange took, in milliseconds.
    pub millis: f64,
}

/// An answer as [`Exchange`] shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Pre-instantiated adapters (a messaging adapter through the bindings of its line of
/// the contract; a lookup adapter's export is the same in both).
pub(super) enum AdapterPre {
    Messaging(super::v0_1::MessagingPre),
    Lookup(lookup::LookupAdapterPre<State>),
}

/// The linkers of the adapter worlds.
pub(super) struct Linkers {
    messaging: Linker<State>,
    lookup: Linker<State>,
}

impl Linkers {
    pub(super) fn new(engine: &wasmtime::Engine) -> wasmtime::Result<Self> {
        let mut messaging = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut messaging)?;
        super::host::link_virtual_clock(&mut messaging)?;
        messaging::MessagingAdapter::add_to_linker::<_, HasSelf<_>>(&mut messaging, |s| s)?;
        super::v0_1::link_adapter(&mut messaging, Kind::MessagingAdapter)?;
        let mut lookup = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut lookup)?;
        super::host::link_virtual_clock(&mut lookup)?;
        lookup::LookupAdapter::add_to_linker::<_, HasSelf<_>>(&mut lookup, |s| s)?;
        super::v0_1::link_adapter(&mut lookup, Kind::LookupAdapter)?;
        Ok(Self { messaging, lookup })
    }

    pub(super) fn pre(
        &self,
        kind: Kind,
        contract: Contract,
        component: &Component,
    ) -> wasmtime::Result<AdapterPre> {
        Ok(match kind {
            Kind::MessagingAdapter => AdapterPre::Messaging(super::v0_1::MessagingPre::new(
                self.messaging.instantiate_pre(component)?,
                contract,
            )?),
            _ => AdapterPre::Lookup(lookup::LookupAdapterPre::new(
                self.lookup.instantiate_pre(component)?,
            )?),
        })
    }
}

/// A code message for a messaging adapter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdapterMessage {
    pub id: String,
    pub to: String,
    pub channel: crate::model::Channel,
    pub body: String,
    pub language: String,
}

/// A provider's delivery callback, as the host received it.
#[derive(Debug, Clone)]
pub struct CallbackRequest {
    pub method: String,
    /// The path and query.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A provider's acceptance of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdapterDispatch {
    pub provider_message_id: String,
    pub segments: Option<u32>,
}

/// Why a provider did not accept a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum SendRefusal {
    #[error("the provider rejected the message: {0}")]
    Rejected(String),
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    #[error("the adapter is misconfigured: {0}")]
    BadConfig(String),
}

/// A delivery status reported by a provider callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryUpdate {
    pub provider_message_id: String,
    pub status: &'static str,
    pub at_millis: Option<i64>,
    pub reason: Option<String>,
}

/// One change of operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    pub from_carrier: Option<String>,
    pub to_carrier: String,
    pub at_millis: i64,
}

/// What a lookup adapter learned about a number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Intelligence {
    pub carrier_name: Option<String>,
    pub carrier_type: Option<String>,
    pub line_type: Option<String>,
    pub porting_history: Vec<Port>,
    pub last_sim_change_millis: Option<i64>,
    pub line_status: Option<String>,
    pub roaming: Option<bool>,
    pub prepaid: Option<bool>,
}

/// What an adapter call returned, or why it failed, with what it used.
pub type AdapterResult<T> = (Usage, Result<T, Failure>);

/// An admitted adapter call: its slot, the adapter's code and a fresh store.
struct AdapterRun {
    _permit: super::Permit,
    code: Arc<LoadedInner>,
    store: wasmtime::Store<State>,
}

impl PluginRuntime {
    /// Starts a call of `plugin` for `scope` in a slot of the tenant's adapter share.
    async fn adapter_run(
        &self,
        plugin: &Loaded,
        scope: &Scope,
        now_millis: i64,
        grant: Arc<AdapterCall>,
        lane: Lane,
    ) -> Result<AdapterRun, Failure> {
        let run = async {
            let code = self.resident(plugin)?;
            let permit = self.admission.admit(&scope.tenant_id, lane).await?;
            let store = self.call_store(scope, now_millis, Some(grant))?;
            Ok(AdapterRun {
                _permit: permit,
                code,
                store,
            })
        }
        .await;
        if let Err(failure) = &run {
            self.record(scope, &Usage::default(), Some(failure));
        }
        run
    }

    /// What an adapter call used and returned; `None` when the caller gave up on it at
    /// its deadline and a grace second (dropping it freed its instance).
    fn adapter_finish<T>(
        &self,
        run: &AdapterRun,
        result: Option<wasmtime::Result<Result<T, Failure>>>,
    ) -> AdapterResult<T> {
        let result = result.unwrap_or_else(|| {
            Ok(Err(Failure::Timeout {
                ms: ADAPTER_DEADLINE_MS,
            }))
        });
        let (usage, result) = self.finish(&run.store, result);
        let result = result.and_then(|inner| inner);
        self.record(&run.store.data().scope, &usage, result.as_ref().err());
        (usage, result)
    }

    /// Asks a lookup adapter about `number`.
    pub async fn invoke_lookup(
        &self,
        plugin: &Loaded,
        scope: &Scope,
        now_millis: i64,
        grant: Arc<AdapterCall>,
        number: &str,
    ) -> AdapterResult<Intelligence> {
        let mut run = match self
            .adapter_run(plugin, scope, now_millis, grant, Lane::Adapters)
            .await
        {
            Ok(run) => run,
            Err(failure) => return (Usage::default(), Err(failure)),
        };
        let LoadedInner::Adapter(AdapterPre::Lookup(pre)) = run.code.as_ref() else {
            return (Usage::default(), Err(not_kind("lookup")));
        };
        let store = &mut run.store;
        let result = bounded(async {
            let adapter = pre.instantiate_async(&mut *store).await?;
            let answer = adapter.call_lookup(&mut *store, number).await?;
            Ok(answer.map(intelligence).map_err(plugin_error))
        })
        .await;
        self.adapter_finish(&run, result)
    }

    /// Hands a message to a messaging adapter. The outer error is the sandbox's; the
    /// inner one is the provider's refusal.
    pub async fn invoke_send(
        &self,
        plugin: &Loaded,
        scope: &Scope,
        now_millis: i64,
        grant: Arc<AdapterCall>,
        message: AdapterMessage,
    ) -> AdapterResult<Result<AdapterDispatch, SendRefusal>> {
        let mut run = match self
            .adapter_run(plugin, scope, now_millis, grant, Lane::Adapters)
            .await
        {
            Ok(run) => run,
            Err(failure) => return (Usage::default(), Err(failure)),
        };
        let LoadedInner::Adapter(AdapterPre::Messaging(pre)) = run.code.as_ref() else {
            return (Usage::default(), Err(not_kind("messaging")));
        };
        let store = &mut run.store;
        let wit_message = messaging_types::Message {
            id: message.id,
            to: message.to,
            channel: super::convert::channel_to_wit(message.channel),
            body: message.body,
            language: message.language,
        };
        let result = bounded(async {
            let answer = pre.send_message(&mut *store, &wit_message).await?;
            Ok(Ok(answer
                .map(|dispatch| AdapterDispatch {
                    provider_message_id: dispatch.provider_message_id,
                    segments: dispatch.segments,
                })
                .map_err(|err| match err {
                    messaging_types::SendError::Rejected(text) => SendRefusal::Rejected(text),
                    messaging_types::SendError::Unavailable(text) => SendRefusal::Unavailable(text),
                    messaging_types::SendError::BadConfig(text) => SendRefusal::BadConfig(text),
                })))
        })
        .await;
        self.adapter_finish(&run, result)
    }

    /// Hands an authenticated provider callback to a messaging adapter.
    pub async fn invoke_parse_callback(
        &self,
        plugin: &Loaded,
        scope: &Scope,
        now_millis: i64,
        grant: Arc<AdapterCall>,
        request: CallbackRequest,
    ) -> AdapterResult<Vec<DeliveryUpdate>> {
        let mut run = match self
            .adapter_run(plugin, scope, now_millis, grant, Lane::Callbacks)
            .await
        {
            Ok(run) => run,
            Err(failure) => return (Usage::default(), Err(failure)),
        };
        let LoadedInner::Adapter(AdapterPre::Messaging(pre)) = run.code.as_ref() else {
            return (Usage::default(), Err(not_kind("messaging")));
        };
        let store = &mut run.store;
        let request = HttpRequest {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
        };
        let result = bounded(async {
            let answer = pre.parse_callback(&mut *store, &request).await?;
            Ok(answer
                .map(|updates| updates.into_iter().map(delivery_update).collect())
                .map_err(plugin_error))
        })
        .await;
        self.adapter_finish(&run, result)
    }
}

/// `call`'s result, or `None` once the call's deadline and a grace second passed.
async fn bounded<T>(call: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(DEADLINE + CALLER_GRACE, call)
        .await
        .ok()
}

fn not_kind(kind: &str) -> Failure {
    Failure::Malformed {
        message: format!("the plugin is not a {kind} adapter"),
    }
}

fn plugin_error(err: super::wit::dialgate::plugin::types::PluginError) -> Failure {
    Failure::Plugin {
        code: err.code,
        message: err.message,
    }
}

fn intelligence(found: lookup::dialgate::plugin::lookup_types::Intelligence) -> Intelligence {
    Intelligence {
        carrier_name: found.carrier_name,
        carrier_type: found.carrier_type,
        line_type: found.line_type,
        porting_history: found
            .porting_history
            .into_iter()
            .map(|port| Port {
                from_carrier: port.from_carrier,
                to_carrier: port.to_carrier,
                at_millis: port.at_millis,
            })
            .collect(),
        last_sim_change_millis: found.last_sim_change_millis,
        line_status: found.line_status,
        roaming: found.roaming,
        prepaid: found.prepaid,
    }
}

fn delivery_update(update: messaging_types::DeliveryUpdate) -> DeliveryUpdate {
    use messaging_types::DeliveryStatus;
    DeliveryUpdate {
        provider_message_id: update.provider_message_id,
        status: match update.status {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Expired => "expired",
        },
        at_millis: update.at_millis,
        reason: update.reason,
    }
}

impl config::Host for State {
    fn get(&mut self, key: String) -> Option<String> {
        self.adapter.as_ref()?.config.get(&key).cloned()
    }

    fn secret(&mut self, key: String) -> Option<String> {
        self.adapter.as_ref()?.secrets.get(&key).cloned()
    }
}

impl messaging_types::Host for State {}
impl lookup::dialgate::plugin::lookup_types::Host for State {}

impl http_client::Host for State {
    async fn send(&mut self, request: HttpRequest) -> Result<HttpResponse, http_client::HttpError> {
        let Some(trial) = self.adapter.as_ref().and_then(|call| call.trial.clone()) else {
            return self.send_out(request).await;
        };
        let mut exchange = Exchange {
            method: request.method.clone(),
            url: request.url.clone(),
            headers: request.headers.clone(),
            body: String::from_utf8_lossy(&request.body).into_owned(),
            response: None,
            error: None,
            millis: 0.0,
        };
        let started = Instant::now();
        let answer = match &trial.scripted {
            Some(script) => script.lock().pop_front().ok_or_else(|| {
                http_client::HttpError::Connection(
                    "no scripted answer left for this request".into(),
                )
            }),
            None => self.send_out(request).await,
        };
        exchange.millis = started.elapsed().as_secs_f64() * 1e3;
        match &answer {
            Ok(response) => {
                exchange.response = Some(ExchangeResponse {
                    status: response.status,
                    headers: response.headers.clone(),
                    body: String::from_utf8_lossy(&response.body).into_owned(),
                });
            }
            Err(err) => exchange.error = Some(format!("{err:?}")),
        }
        trial.exchanges.lock().push(exchange);
        answer
    }
}

impl State {
    /// Sends an adapter's request out, through the grant and the egress policy.
    async fn send_out(
        &mut self,
        request: HttpRequest,
    ) -> Result<HttpResponse, http_client::HttpError> {
        use http_client::HttpError;
        let Some(call) = self.adapter.as_ref() else {
            return Err(HttpError::NotGranted(
                "no outbound HTTP for this call".into(),
            ));
        };
        let url = reqwest::Url::parse(&request.url)
            .map_err(|err| HttpError::BadUrl(format!("{}: {err}", request.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HttpError::BadUrl(format!(
                "{}: only http and https are allowed",
                request.url
            )));
        }
        if let Err(refused) = call.egress.check_url(&url) {
            tracing::warn!(
                tenant = self.scope.tenant_id,
                plugin = self.scope.plugin_id,
                "{refused}"
            );
            // As a connection failure: the adapter reports it as "connection failed:
            // egress policy refused ..." (a not-granted host reads as a grant problem).
            return Err(HttpError::Connection(refused.to_string()));
        }
        if !call.grant.allows(&url) {
            let host = url.host_str().unwrap_or_default();
            let host = url
                .port()
                .map_or_else(|| host.to_owned(), |port| format!("{host}:{port}"));
            tracing::warn!(
                tenant = self.scope.tenant_id,
                plugin = self.scope.plugin_id,
                "refused outbound HTTP to {host}: not granted"
            );
            return Err(HttpError::NotGranted(host));
        }
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| HttpError::BadUrl(format!("bad method {:?}", request.method)))?;
        let client = call
            .client
            .clone()
            .unwrap_or_else(|| egress_client(&call.egress));
        let mut builder = client.request(method, url).body(request.body);
        // At most the provider's timeout, and never past the call's deadline.
        let mut timeout = call.timeout.unwrap_or(HTTP_TIMEOUT).min(HTTP_TIMEOUT);
        if let Some(deadline) = self.deadline {
            timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
        }
        if timeout.is_zero() {
            return Err(HttpError::Timeout);
        }
        builder = builder.timeout(timeout);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let exchange = async move {
            let response = builder.send().await.map_err(|err| {
                if let Some(refused) = crate::egress::refusal_in(&err) {
                    HttpError::Connection(refused.to_string())
                } else if err.is_timeout() {
                    HttpError::Timeout
                } else {
                    HttpError::Connection(format!("{err}"))
                }
            })?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let mut body = Vec::new();
            let mut response = response;
            while let Some(chunk) = response.chunk().await.map_err(|err| {
                if err.is_timeout() {
                    HttpError::Timeout
                } else {
                    HttpError::Connection(format!("{err}"))
                }
            })? {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(HttpError::ResponseTooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(HttpResponse {
                status,
                headers,
                body,
            })
        };
        // The wait for the network is not the call's run time (its deadline bounds it).
        let clock = Arc::clone(&self.ran);
        clock.pause();
        let answer = exchange.await;
        clock.resume();
        answer
    }
}

/// The client outbound adapter requests of one egress policy share (connection pools,
/// TLS roots): built once per policy, since a server's policy never changes.
fn egress_client(egress: &crate::egress::Egress) -> reqwest::Client {
    egress.client(|builder| builder.timeout(HTTP_TIMEOUT))
}

#[cfg(test)]
mod tests {
    use super::HttpGrant;

    fn allows(hosts: &[&str], url: &str) -> bool {
        let grant = HttpGrant {
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        };
        grant.allows(&reqwest::Url::parse(url).expect("a URL"))
    }

    #[test]
    fn a_grant_without_a_port_allows_the_default_port_of_the_scheme_only() {
        assert!(allows(&["api.example.com"], "https://api.example.com/x"));
        assert!(allows(&["api.example.com"], "http://api.example.com/x"));
        assert!(allows(
            &["api.example.com"],
            "https://api.example.com:443/x"
        ));
        assert!(!allows(
            &["api.example.com"],
            "https://api.example.com:8443/x"
        ));
        assert!(!allows(
            &["api.example.com"],
            "http://api.example.com:8080/"
        ));
        assert!(!allows(&["127.0.0.1"], "http://127.0.0.1:8080/v1/tenants"));
    }

    #[test]
    fn a_grant_with_a_port_allows_that_port_only() {
        assert!(allows(
            &["api.example.com:8443"],
            "https://api.example.com:8443/x"
        ));
        assert!(!allows(
            &["api.example.com:8443"],
            "https://api.example.com/x"
        ));
        assert!(allows(
            &["api.example.com:443"],
            "https://api.example.com/x"
        ));
        assert!(allows(&["[::1]:8080"], "http://[::1]:8080/"));
        assert!(!allows(&["other.example.com"], "https://api.example.com/"));
        // Hosts are compared as the URL parser normalised them.
        assert!(!allows(&["127.1:9"], "http://127.1:9/"));
        assert!(allows(&["127.0.0.1:9"], "http://127.1:9/"));
    }
}
