//! Test harness: starts the real Dialgate server in-process on loopback with a manual
//! clock, creates tenants, and wraps the HTTP calls and assertions the suites share.

use std::path::Path;
use std::sync::Arc;

use dialgate::clock::ManualClock;
use dialgate::config::Config;
use dialgate::server::RunningServer;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use tempfile::TempDir;

/// The operator credential every test server is configured with.
pub const OPERATOR_KEY: &str = "e2e-operator-key-0f3b9c2d7a61";

/// A Beeline (Uzbekistan) mobile number: a valid number with a known original operator.
pub const UZ_BEELINE: &str = "+998901234567";
/// A London number in the Ofcom drama range (020 7946 0xxx) that the built-in
/// disposable list covers.
pub const UK_DISPOSABLE: &str = "+442079460123";
/// A UK VoIP number (libphonenumber classifies 056 as VoIP).
pub const UK_VOIP: &str = "+445612345678";

/// Another Beeline number, distinct per `n` (0..=99). They are 101 apart: codes to a
/// run of neighbouring numbers are what the SMS-pumping detector blocks.
pub fn uz_number(n: u32) -> String {
    format!("+99890{:07}", 1_234_500 + n * 101)
}

/// An HTTP answer: status, headers, and the body parsed as JSON (`Null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// Panics with the body unless the status is `status`; returns the body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        &self.body
    }

    /// Asserts an error answer: `status`, the documented shape
    /// `{"error": {"code", "message", "field"?}}` (plus `reason` for invalid numbers),
    /// and `code`. Returns the `error` object.
    #[track_caller]
    pub fn error(&self, status: u16, code: &str) -> &Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        assert_error_shape(&self.body);
        let error = &self.body["error"];
        assert_eq!(
            error["code"], code,
            "unexpected error code; body: {}",
            self.text
        );
        error
    }

    /// Asserts a 422 `invalid_field` error naming `field`.
    #[track_caller]
    pub fn invalid_field(&self, field: &str) -> &Value {
        let error = self.error(422, "invalid_field");
        assert_eq!(
            error["field"], field,
            "unexpected field; body: {}",
            self.text
        );
        error
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// Checks that `body` is exactly `{"error": {"code", "message", "field"?, "reason"?}}`.
#[track_caller]
pub fn assert_error_shape(body: &Value) {
    let outer = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is not an object: {body}"));
    assert_eq!(
        outer.len(),
        1,
        "error body has extra top-level keys: {body}"
    );
    let error = outer
        .get("error")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("error body has no error object: {body}"));
    assert!(
        error
            .get("code")
            .and_then(Value::as_str)
            .is_some_and(|c| !c.is_empty()),
        "error.code: {body}"
    );
    assert!(
        error
            .get("message")
            .and_then(Value::as_str)
            .is_some_and(|m| !m.is_empty()),
        "error.message: {body}"
    );
    for key in error.keys() {
        assert!(
            ["code", "message", "field", "reason"].contains(&key.as_str()),
            "unexpected key {key} in {body}"
        );
    }
    if let Some(field) = error.get("field") {
        assert!(
            field.as_str().is_some_and(|f| !f.is_empty()),
            "error.field must be a non-empty string: {body}"
        );
    }
}

/// A tenant and its first API key.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub key: String,
}

/// HTTP access to one server.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
}

impl Api {
    pub fn new(base: String) -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("build the HTTP client");
        Self { base, client }
    }

    /// Sends a request; `body` is serialised as JSON with `Content-Type: application/json`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let bytes = body.map(|b| serde_json::to_vec(b).expect("serialise the body"));
        self.raw(
            method,
            path,
            key,
            bytes.map(|b| ("application/json", b)),
            &[],
        )
        .await
    }

    /// Sends a request with an arbitrary body, content type and extra headers.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.try_raw(method, path, key, body, headers)
            .await
            .expect("the server answers")
    }

    /// Like [`Api::raw`], but a transport failure (e.g. the server died) is an `Err`.
    pub async fn try_raw(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, reqwest::Error> {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some((content_type, bytes)) = body {
            request = request.header("content-type", content_type).body(bytes);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|err| panic!("body is not JSON ({err}): {text}"))
        };
        Ok(Reply {
            status,
            headers,
            body,
            text,
        })
    }

    pub async fn get(&self, path: &str, key: &str) -> Reply {
        self.call(Method::GET, path, Some(key), None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(key), Some(&body)).await
    }

    pub async fn put(&self, path: &str, key: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(key), Some(&body)).await
    }

    pub async fn patch(&self, path: &str, key: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(key), Some(&body)).await
    }

    pub async fn delete(&self, path: &str, key: &str) -> Reply {
        self.call(Method::DELETE, path, Some(key), None).await
    }

    /// Creates a tenant with the operator key.
    pub async fn create_tenant(&self, operator_key: &str, name: &str) -> Tenant {
        let reply = self
            .post("/v1/tenants", operator_key, json!({ "name": name }))
            .await;
        let body = reply.expect(201);
        Tenant {
            id: body["id"].as_str().expect("tenant id").to_owned(),
            key: body["api_key"]
                .as_str()
                .expect("api key shown on creation")
                .to_owned(),
        }
    }

    /// `POST /v1/phone/send-otp` with `body`.
    pub async fn send_otp(&self, tenant: &Tenant, body: Value) -> Reply {
        self.post("/v1/phone/send-otp", &tenant.key, body).await
    }

    /// Sends a code to `phone` for `applicant` and expects it to be pending.
    pub async fn send(&self, tenant: &Tenant, phone: &str, applicant: &str) -> Value {
        let reply = self
            .send_otp(tenant, json!({ "phone": phone, "applicant_id": applicant }))
            .await;
        let body = reply.expect(200).clone();
        assert_eq!(body["status"], "pending", "send was not pending: {body}");
        body
    }

    /// `POST /v1/phone/verify-otp`.
    pub async fn verify(&self, tenant: &Tenant, phone: &str, applicant: &str, code: &str) -> Reply {
        self.post(
            "/v1/phone/verify-otp",
            &tenant.key,
            json!({ "phone": phone, "applicant_id": applicant, "code": code }),
        )
        .await
    }

    /// The tenant's dev-outbox messages for `phone`, newest first.
    pub async fn outbox(&self, tenant: &Tenant, phone: &str) -> Vec<Value> {
        let path = format!("/v1/dev/outbox?phone={}&limit=1000", encode(phone));
        let body = self.get(&path, &tenant.key).await.expect(200).clone();
        body["messages"].as_array().expect("messages array").clone()
    }

    /// The code of the newest outbox message for `phone`.
    pub async fn latest_code(&self, tenant: &Tenant, phone: &str) -> String {
        let messages = self.outbox(tenant, phone).await;
        let newest = messages
            .first()
            .unwrap_or_else(|| panic!("no outbox message for {phone}"));
        newest["code"].as_str().expect("code").to_owned()
    }

    /// Sends a code and verifies it; returns the verify answer.
    pub async fn send_and_verify(&self, tenant: &Tenant, phone: &str, applicant: &str) -> Value {
        self.send(tenant, phone, applicant).await;
        let code = self.latest_code(tenant, phone).await;
        self.verify(tenant, phone, applicant, &code)
            .await
            .expect(200)
            .clone()
    }

    /// The verification report.
    pub async fn report(&self, tenant: &Tenant, id: &str) -> Value {
        self.get(&format!("/v1/verifications/{id}"), &tenant.key)
            .await
            .expect(200)
            .clone()
    }

    /// Applies a settings patch and expects it to be accepted; returns the new settings.
    pub async fn settings(&self, tenant: &Tenant, patch: Value) -> Value {
        self.put("/v1/settings/phone-verification", &tenant.key, patch)
            .await
            .expect(200)
            .clone()
    }
}

/// Percent-encodes a query value (enough for phone numbers: `+` and spaces).
pub fn encode(value: &str) -> String {
    value
        .replace('%', "%25")
        .replace('+', "%2B")
        .replace(' ', "%20")
}

/// A server started in-process on `127.0.0.1:0` over a temporary data directory, with
/// a manual clock.
#[derive(Debug)]
pub struct TestServer {
    pub api: Api,
    pub clock: ManualClock,
    // Held for the test's lifetime: dropping the handle stops the server, dropping the
    // directory deletes its data.
    _running: RunningServer,
    _dir: TempDir,
    /// The PostgreSQL database the server keeps its records in, when it does.
    store: Option<String>,
}

impl std::ops::Deref for TestServer {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// The configuration of a test server over `data_dir`. The egress policy allows
/// loopback (127.0.0.0/8 and ::1), where the tests' simulators, receivers and Kannel
/// listen; [`TestServer::start_strict`] starts one under the default policy.
pub fn test_config(data_dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("loopback address"),
        data_dir: data_dir.to_path_buf(),
        operator_key: Some(OPERATOR_KEY.to_owned()),
        egress_allow: dialgate::egress::AllowList::loopback(),
        ..Config::default()
    }
}

impl TestServer {
    /// A development-mode server with the default configuration.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server under the default egress policy: no loopback or other internal
    /// address is allowed.
    pub async fn start_strict() -> Self {
        Self::start_with(|config| config.egress_allow = Default::default()).await
    }

    /// A server whose configuration `configure` may change first.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary data directory");
        let mut config = test_config(&dir.path().join("data"));
        if std::env::var("DIALGATE_TEST_STORE").as_deref() == Ok("postgres") {
            // The whole suite on PostgreSQL: a fresh database per server.
            config.store = Some(
                tokio::task::spawn_blocking(|| {
                    dialgate::store::testing::TestCluster::shared().database()
                })
                .await
                .expect("a test database"),
            );
        }
        configure(&mut config);
        Self::launch(&config, ManualClock::new(), dir).await
    }

    /// Starts the server with `config` and `clock` over `dir`.
    async fn launch(config: &Config, clock: ManualClock, dir: TempDir) -> Self {
        let running = dialgate::server::spawn(config, Arc::new(clock.clone()))
            .await
            .expect("the server starts");
        let api = Api::new(format!("http://{}", running.addr));
        Self {
            api,
            clock,
            _running: running,
            _dir: dir,
            store: config.store.clone(),
        }
    }

    /// The server's engine, for tests that check the store itself.
    pub fn engine(&self) -> &Arc<dialgate::flows::Engine> {
        &self._running.engine
    }

    /// A server with one fresh tenant.
    pub async fn with_tenant() -> (Self, Tenant) {
        let server = Self::start().await;
        let tenant = server.tenant("acme").await;
        (server, tenant)
    }

    /// Creates a tenant.
    pub async fn tenant(&self, name: &str) -> Tenant {
        self.api.create_tenant(OPERATOR_KEY, name).await
    }

    /// Like [`TestServer::restart`], with the configuration `configure` changes.
    pub async fn restart_with(self, configure: impl FnOnce(&mut Config)) -> Self {
        self.halt()
            .await
            .start_with(configure)
            .await
            .unwrap_or_else(|(err, _)| panic!("the server starts again: {err}"))
    }

    /// Every record of every tree of the server's store, raw (tree name and key, then
    /// value): what a copy of the store would hold, whichever backend it is.
    pub fn stored_records(&self) -> Vec<(String, Vec<u8>)> {
        let db = &self.engine().db;
        let mut found = Vec::new();
        for tree in dialgate::store::Tree::ALL {
            let mut start = Vec::new();
            loop {
                let chunk = db.scan_from_raw(tree, &start, 1_000).expect("scan a tree");
                let read = chunk.len();
                for (key, value) in &chunk {
                    found.push((
                        format!("{}/{}", tree.name(), String::from_utf8_lossy(key)),
                        value.clone(),
                    ));
                }
                match chunk.last() {
                    Some((last, _)) if read == 1_000 => {
                        start = last.clone();
                        start.push(0);
                    }
                    _ => break,
                }
            }
        }
        found
    }

    /// Whether the server keeps its records in PostgreSQL rather than its data directory.
    pub fn on_postgres(&self) -> bool {
        self.store.is_some()
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }

    /// Stops the server (finishing requests in flight) and starts it again on the same
    /// data directory and clock: what a process restart does to the store.
    pub async fn restart(self) -> Self {
        self.restart_with(|_| {}).await
    }

    /// Stops the server and keeps its store, to start it again, perhaps differently:
    /// where its records are, for a command run on them meanwhile.
    pub async fn halt(self) -> Halted {
        let Self {
            clock,
            _running: running,
            _dir: dir,
            store,
            ..
        } = self;
        running.shutdown().await;
        Halted { clock, dir, store }
    }

    /// Stops the server: stops accepting, finishes requests in flight, closes the store.
    pub async fn stop(self) {
        self._running.shutdown().await;
    }

    /// Moves the server's clock forward.
    pub fn advance(&self, by: chrono::Duration) {
        self.clock.advance(by);
    }
}

/// A stopped server's store and clock (see [`TestServer::halt`]).
#[derive(Debug)]
pub struct Halted {
    clock: ManualClock,
    dir: TempDir,
    store: Option<String>,
}

impl Halted {
    /// Where the store is: its PostgreSQL URL, or its data directory.
    pub fn location(&self) -> String {
        match &self.store {
            Some(url) => url.clone(),
            None => self.dir.path().join("data").display().to_string(),
        }
    }

    /// Starts the server again on its store with the test configuration as
    /// `configure` changes it; or why it did not start, and the store to try again.
    pub async fn start_with(
        self,
        configure: impl FnOnce(&mut Config),
    ) -> Result<TestServer, (String, Halted)> {
        let mut config = test_config(&self.dir.path().join("data"));
        config.store = self.store.clone();
        configure(&mut config);
        match dialgate::server::spawn(&config, Arc::new(self.clock.clone())).await {
            Ok(running) => Ok(TestServer {
                api: Api::new(format!("http://{}", running.addr)),
                clock: self.clock,
                _running: running,
                _dir: self.dir,
                store: self.store,
            }),
            Err(err) => Err((format!("{err:#}"), self)),
        }
    }
}

/// The `risk` tags of a warnings array.
pub fn risks(warnings: &Value) -> Vec<String> {
    warnings
        .as_array()
        .unwrap_or_else(|| panic!("warnings is not an array: {warnings}"))
        .iter()
        .map(|w| w["risk"].as_str().expect("risk tag").to_owned())
        .collect()
}

/// The warning with tag `risk` in `warnings`.
#[track_caller]
pub fn warning<'a>(warnings: &'a Value, risk: &str) -> &'a Value {
    warnings
        .as_array()
        .and_then(|all| all.iter().find(|w| w["risk"] == risk))
        .unwrap_or_else(|| panic!("no {risk} warning in {warnings}"))
}

/// The sorted keys of a JSON object.
#[track_caller]
pub fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// `names` as sorted owned strings, to compare with [`keys`].
pub fn sorted(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    names.sort();
    names
}

/// Parses an RFC 3339 timestamp field.
#[track_caller]
pub fn timestamp(value: &Value) -> chrono::DateTime<chrono::Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("timestamp is not a string: {value}"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|err| panic!("{text} is not RFC 3339: {err}"))
        .with_timezone(&chrono::Utc)
}

/// A code of the same length that differs from `code` in every digit.
pub fn wrong_code(code: &str) -> String {
    code.bytes()
        .map(|b| char::from(b'0' + (b - b'0' + 1) % 10))
        .collect()
}

/// Asserts that `warning` is a complete warning for `risk` leading to `action`: the six
/// documented fields, `log_type` derived from the action, and both descriptions.
#[track_caller]
pub fn assert_warning(warning: &Value, risk: &str, action: &str) {
    assert_eq!(
        keys(warning),
        sorted(&[
            "risk",
            "additional_data",
            "log_type",
            "short_description",
            "long_description",
            "action"
        ]),
        "warning fields: {warning}"
    );
    assert_eq!(warning["risk"], risk, "{warning}");
    assert_eq!(warning["action"], action, "{warning}");
    let log_type = match action {
        "Decline" => "error",
        "Review" => "warning",
        "Approve" => "information",
        other => panic!("unknown action {other}"),
    };
    assert_eq!(warning["log_type"], log_type, "{warning}");
    assert!(
        warning["short_description"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{warning}"
    );
    assert!(
        warning["long_description"]
            .as_str()
            .is_some_and(|s| s.len() > 20),
        "{warning}"
    );
    assert!(
        warning["additional_data"].is_null() || warning["additional_data"].is_string(),
        "{warning}"
    );
}

/// The CAMARA access token the tests configure, which must never be returned.
pub const CAMARA_TOKEN: &str = "camara-token-123";

/// Installs the first-party CAMARA lookup adapter pointed at `sim`, with its access
/// token, and grants its host when `grant` says so. Returns the adapter's id and the
/// configuration call's reply (the plugin as the API shows it).
pub async fn install_camara(
    server: &TestServer,
    tenant: &Tenant,
    sim: &crate::sims::CamaraSim,
    grant: bool,
) -> (String, Reply) {
    let reply = server
        .post(
            "/v1/plugins/catalog/camara-lookup",
            &tenant.key,
            json!({"hosts": [sim.host()]}),
        )
        .await;
    let id = reply.expect(201)["id"].as_str().expect("id").to_owned();
    let configured = configure_camara(server, tenant, &id, sim, grant).await;
    (id, configured)
}

/// Configures the installed `camara-lookup` plugin `id` for `sim`, granting it the
/// simulator's host if `grant`.
pub async fn configure_camara(
    server: &TestServer,
    tenant: &Tenant,
    id: &str,
    sim: &crate::sims::CamaraSim,
    grant: bool,
) -> Reply {
    let granted: Vec<String> = if grant { vec![sim.host()] } else { Vec::new() };
    let configured = server
        .put(
            &format!("/v1/plugins/{id}/config"),
            &tenant.key,
            json!({
                "config": {"base_url": sim.base_url()},
                "secrets": {"access_token": CAMARA_TOKEN},
                "granted_hosts": granted,
            }),
        )
        .await;
    configured.expect(200);
    configured
}

/// Every trigger, comma-separated, as a manifest names them.
pub const ALL_TRIGGERS: &str = "phone_lookup_complete,before_send_otp,otp_sent,otp_delivery_update,otp_verified,otp_failed,verification_completed";

/// Uploads the in-tree `echo` rule (`tests/guests/echo`) bound to `triggers`
/// (comma-separated) and, unless `config` is null, configures it; returns its id. The
/// rule reports each event it sees as a flag and performs the action its
/// configuration names.
pub async fn upload_echo(
    server: &TestServer,
    tenant: &Tenant,
    triggers: &str,
    config: Value,
) -> String {
    upload_rule(server, tenant, "guest_echo", "echo", triggers, config).await
}

/// Uploads the in-tree guest `artifact` as the rule `name` (version 1.0.0) bound to
/// `triggers` (comma-separated) and, unless `config` is null, configures it; returns
/// its id.
pub async fn upload_rule(
    server: &TestServer,
    tenant: &Tenant,
    artifact: &str,
    name: &str,
    triggers: &str,
    config: Value,
) -> String {
    let reply = upload_version(server, tenant, artifact, name, "1.0.0", triggers).await;
    let id = reply.expect(201)["id"].as_str().expect("id").to_owned();
    if config != Value::Null {
        server
            .put(
                &format!("/v1/plugins/{id}/config"),
                &tenant.key,
                json!({ "config": config }),
            )
            .await
            .expect(200);
    }
    id
}

/// Uploads the in-tree guest `artifact` as version `version` of the rule `name` (a new
/// plugin, active, or another version of the tenant's plugin of that name), bound to
/// `triggers` (comma-separated); returns the answer.
pub async fn upload_version(
    server: &TestServer,
    tenant: &Tenant,
    artifact: &str,
    name: &str,
    version: &str,
    triggers: &str,
) -> Reply {
    server
        .raw(
            Method::POST,
            &format!("/v1/plugins?name={name}&kind=rule&version={version}&triggers={triggers}"),
            Some(&tenant.key),
            Some((
                "application/wasm",
                dialgate::plugins::testing::guest_component(artifact),
            )),
            &[],
        )
        .await
}

/// Runs `dialgate bench` with `args` on sled (logging warnings only) and expects it to
/// succeed; returns what it printed.
pub async fn run_bench(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_dialgate"))
            .arg("bench")
            .args(&args)
            .env("DIALGATE_LOG", "warn")
            .env_remove("DIALGATE_STORE")
            .output()
            .expect("run dialgate bench")
    })
    .await
    .expect("the bench's thread");
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    printed
}

/// Serves `app` on a fresh loopback port for the rest of the test; returns its address.
pub async fn serve_on_loopback(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// The files under `dir` (recursively) whose bytes hold `needle`: what someone with a
/// copy of a store's files could find by searching them.
pub fn files_holding(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if std::fs::read(&path)
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            {
                found.push(path);
            }
        }
    }
    found
}
