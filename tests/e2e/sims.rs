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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the simulator");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
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
