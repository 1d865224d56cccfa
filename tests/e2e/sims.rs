//! Loopback simulators of the provider APIs Dialgate's adapters talk to, with fault
//! injection. They implement the documented request and response shapes, so the real
//! adapter plugins run against them unchanged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::support::serve_on_loopback;

/// One request a simulator received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

#[derive(Debug, Default)]
struct CamaraState {
    /// Phone number → latest SIM change (RFC 3339), or `None` for "not known".
    swaps: HashMap<String, Option<String>>,
    /// When set, every request fails with this status.
    fail_with: Option<u16>,
    seen: Vec<Seen>,
}

/// An operator's CAMARA SIM Swap API (`/sim-swap/v2/retrieve-date` and `/check`) on
/// 127.0.0.1.
#[derive(Debug, Clone)]
pub struct CamaraSim {
    pub addr: SocketAddr,
    state: Arc<Mutex<CamaraState>>,
}

impl CamaraSim {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(CamaraState::default()));
        let app = Router::new()
            .route("/sim-swap/v2/retrieve-date", post(retrieve_date))
            .route("/sim-swap/v2/check", post(check))
            .with_state(Arc::clone(&state));
        let addr = serve_on_loopback(app).await;
        Self { addr, state }
    }

    /// `host:port` for grants.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The base URL adapters are configured with.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets the latest SIM change of `phone`.
    pub fn swapped(&self, phone: &str, at: Option<chrono::DateTime<chrono::Utc>>) {
        self.state.lock().expect("lock").swaps.insert(
            phone.to_owned(),
            at.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        );
    }

    /// Makes every request fail with `status` (or succeed again with `None`).
    pub fn fail_with(&self, status: Option<u16>) {
        self.state.lock().expect("lock").fail_with = status;
    }

    /// The requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("lock").seen.clone()
    }
}

fn record(
    state: &Mutex<CamaraState>,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Option<u16> {
    let mut state = state.lock().expect("lock");
    state.seen.push(Seen {
        path: path.to_owned(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body.clone(),
    });
    state.fail_with
}

fn camara_error(status: u16, code: &str, message: &str) -> (StatusCode, Json<Value>) {
    (
        StatusCode::from_u16(status).expect("status"),
        Json(json!({"status": status, "code": code, "message": message})),
    )
}

async fn retrieve_date(
    State(state): State<Arc<Mutex<CamaraState>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if let Some(status) = record(&state, "/sim-swap/v2/retrieve-date", &headers, &body) {
        return camara_error(status, "UNAVAILABLE", "injected fault");
    }
    let Some(phone) = body["phoneNumber"].as_str() else {
        return camara_error(
            422,
            "MISSING_IDENTIFIER",
            "The phone number cannot be identified.",
        );
    };
    match state.lock().expect("lock").swaps.get(phone) {
        Some(Some(at)) => (StatusCode::OK, Json(json!({"latestSimChange": at}))),
        Some(None) => (
            StatusCode::OK,
            Json(json!({"latestSimChange": null, "monitoredPeriod": 120})),
        ),
        None => camara_error(404, "IDENTIFIER_NOT_FOUND", "Device identifier not found."),
    }
}

async fn check(
    State(state): State<Arc<Mutex<CamaraState>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if let Some(status) = record(&state, "/sim-swap/v2/check", &headers, &body) {
        return camara_error(status, "UNAVAILABLE", "injected fault");
    }
    let Some(phone) = body["phoneNumber"].as_str() else {
        return camara_error(
            422,
            "MISSING_IDENTIFIER",
            "The phone number cannot be identified.",
        );
    };
    let max_age_hours = body["maxAge"].as_i64().unwrap_or(240);
    let swapped = match state.lock().expect("lock").swaps.get(phone) {
        Some(Some(at)) => chrono::DateTime::parse_from_rfc3339(at)
            .map(|at| chrono::Utc::now().signed_duration_since(at).num_hours() <= max_age_hours)
            .unwrap_or(false),
        Some(None) => false,
        None => return camara_error(404, "IDENTIFIER_NOT_FOUND", "Device identifier not found."),
    };
    (StatusCode::OK, Json(json!({"swapped": swapped})))
}

/// A message an SMS simulator accepted.
#[derive(Debug, Clone)]
pub struct Sms {
    pub id: String,
    pub to: String,
    pub from: String,
    pub text: String,
    pub authorization: Option<String>,
    /// The status callback URL the request carried (`StatusCallback`).
    pub callback: Option<String>,
    /// `message` (Messages.json, sms/json) or `call` (Calls.json).
    pub kind: &'static str,
}

impl Sms {
    /// The code the message carries: the first six digits of its text.
    pub fn code(&self) -> String {
        self.text
            .chars()
            .filter(char::is_ascii_digit)
            .take(6)
            .collect()
    }
}

#[derive(Debug, Default)]
struct SmsState {
    fail_with: Option<u16>,
    /// Numbers (E.164 prefixes, `+` optional) answered 503: a country's outage.
    down_prefixes: Vec<String>,
    /// How long each answer waits.
    delay: std::time::Duration,
    accepted: Vec<Sms>,
    refused: usize,
}

/// An SMS API on 127.0.0.1 speaking both request shapes the `http-sms` adapter knows:
/// Twilio's `POST /2010-04-01/Accounts/{sid}/Messages.json` and Vonage's
/// `POST /sms/json`. It can be told to fail every request with a status.
#[derive(Debug, Clone)]
pub struct SmsSim {
    pub addr: SocketAddr,
    state: Arc<Mutex<SmsState>>,
}

fn form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

impl SmsSim {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(SmsState::default()));
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{sid}/Messages.json",
                post(twilio_send),
            )
            .route("/2010-04-01/Accounts/{sid}/Calls.json", post(twilio_call))
            .route("/sms/json", post(vonage_send))
            .with_state(Arc::clone(&state));
        let addr = serve_on_loopback(app).await;
        Self { addr, state }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn fail_with(&self, status: Option<u16>) {
        self.state.lock().expect("lock").fail_with = status;
    }

    /// Answers 503 for numbers starting with any of `prefixes` (an outage in one
    /// country), or for none.
    pub fn down_for(&self, prefixes: &[&str]) {
        self.state.lock().expect("lock").down_prefixes = prefixes
            .iter()
            .map(|p| p.trim_start_matches('+').to_owned())
            .collect();
    }

    /// Delays every answer by `delay` (latency; a timeout when longer than the
    /// provider's).
    pub fn delay(&self, delay: std::time::Duration) {
        self.state.lock().expect("lock").delay = delay;
    }

    fn current_delay(state: &Arc<Mutex<SmsState>>) -> std::time::Duration {
        state.lock().expect("lock").delay
    }

    /// Messages accepted so far.
    pub fn accepted(&self) -> Vec<Sms> {
        self.state.lock().expect("lock").accepted.clone()
    }

    /// Requests refused by an injected fault.
    pub fn refused(&self) -> usize {
        self.state.lock().expect("lock").refused
    }

    fn take(
        &self,
        headers: &HeaderMap,
        fields: (&str, &str, &str),
        callback: Option<String>,
        kind: &'static str,
    ) -> Result<String, u16> {
        let (to, from, text) = fields;
        let mut state = self.state.lock().expect("lock");
        let number = to.trim_start_matches("whatsapp:").trim_start_matches('+');
        let down = state
            .down_prefixes
            .iter()
            .any(|p| number.starts_with(p.as_str()));
        if let Some(status) = state.fail_with.or(down.then_some(503)) {
            state.refused += 1;
            return Err(status);
        }
        let prefix = if kind == "call" { "CA" } else { "SM" };
        let id = format!("{prefix}{:032x}", state.accepted.len() + 1);
        state.accepted.push(Sms {
            id: id.clone(),
            to: to.to_owned(),
            from: from.to_owned(),
            text: text.to_owned(),
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            callback,
            kind,
        });
        Ok(id)
    }
}

async fn twilio_send(
    State(state): State<Arc<Mutex<SmsState>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    twilio_take(state, &headers, &body, "message").await
}

/// Twilio's Voice API: `Calls.json` with the TwiML to read out.
async fn twilio_call(
    State(state): State<Arc<Mutex<SmsState>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    twilio_take(state, &headers, &body, "call").await
}

/// A Twilio-shaped request of `kind` (`message`: the `Body`; `call`: the `Twiml`),
/// after the injected latency, and its answer.
async fn twilio_take(
    state: Arc<Mutex<SmsState>>,
    headers: &HeaderMap,
    body: &[u8],
    kind: &'static str,
) -> (StatusCode, Json<Value>) {
    tokio::time::sleep(SmsSim::current_delay(&state)).await;
    let sim = SmsSim {
        addr: "127.0.0.1:0".parse().expect("addr"),
        state,
    };
    let fields = form(body);
    let field = |name: &str| fields.get(name).cloned().unwrap_or_default();
    let text = field(if kind == "call" { "Twiml" } else { "Body" });
    let callback = fields.get("StatusCallback").cloned();
    match sim.take(
        headers,
        (&field("To"), &field("From"), &text),
        callback,
        kind,
    ) {
        Ok(sid) if kind == "call" => (
            StatusCode::CREATED,
            Json(json!({"sid": sid, "status": "queued"})),
        ),
        Ok(sid) => (
            StatusCode::CREATED,
            Json(json!({"sid": sid, "status": "queued", "num_segments": "1"})),
        ),
        Err(status) => (
            StatusCode::from_u16(status).expect("status"),
            Json(json!({"code": 20500, "message": "injected fault", "status": status})),
        ),
    }
}

async fn vonage_send(
    State(state): State<Arc<Mutex<SmsState>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    tokio::time::sleep(SmsSim::current_delay(&state)).await;
    let sim = SmsSim {
        addr: "127.0.0.1:0".parse().expect("addr"),
        state,
    };
    let fields = form(&body);
    let field = |name: &str| fields.get(name).cloned().unwrap_or_default();
    match sim.take(
        &headers,
        (&field("to"), &field("from"), &field("text")),
        None,
        "message",
    ) {
        Ok(id) => (
            StatusCode::OK,
            Json(json!({"message-count": "1", "messages": [
                {"to": field("to"), "message-id": id, "status": "0", "message-parts": "1"}
            ]})),
        ),
        Err(status) => (
            StatusCode::from_u16(status).expect("status"),
            Json(json!({"message-count": "1", "messages": [
                {"status": "1", "error-text": "injected fault"}
            ]})),
        ),
    }
}
