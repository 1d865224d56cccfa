//! The web console at `/console`: its embedded assets and their headers, and the main
//! journeys in a real browser (Debian's headless Chromium driven over WebDriver by
//! `chromedriver` on loopback): signing in with a tenant key and with the operator key,
//! the overview's funnel against the traffic, the verification log and a report, a
//! review decided in the queue, settings saved and refused, and hostile tenant strings
//! shown as text. Screenshots of each page go to `target/console-screenshots/`.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::routing::post;
use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

/// How long a page may take to reach a state before the test fails.
const WAIT: Duration = Duration::from_secs(30);

/// The W3C WebDriver name of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium session driven over WebDriver on loopback.
struct Browser {
    http: reqwest::Client,
    driver_port: u16,
    session: String,
    driver: std::process::Child,
    _profile: tempfile::TempDir,
    shots: PathBuf,
    shot_count: usize,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; `None` (the test is
    /// skipped) only off CI when Chromium is not installed. On CI a missing browser
    /// fails the test: `.ci/test` installs it.
    async fn start(name: &str) -> Option<Self> {
        let installed =
            std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
        if !installed {
            assert!(
                std::env::var_os("CI").is_none(),
                "{CHROMIUM} and {CHROMEDRIVER} are needed (apt-get install chromium chromium-driver; .ci/test does)"
            );
            eprintln!("skipping the browser journeys: {CHROMIUM} or {CHROMEDRIVER} is missing");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let driver = std::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("HTTP client");
        let status_url = format!("http://127.0.0.1:{port}/status");
        let started = Instant::now();
        loop {
            let ready = match http.get(&status_url).send().await {
                Ok(reply) => reply
                    .json::<Value>()
                    .await
                    .is_ok_and(|body| body["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(
                started.elapsed() < WAIT,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("a profile directory");
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1400,1600".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-domain-reliability".to_owned(),
            "--disable-client-side-phishing-detection".to_owned(),
            "--disable-default-apps".to_owned(),
            "--no-proxy-server".to_owned(),
            // The browser resolves no name but loopback's: its traffic stays on 127.0.0.1.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let reply: Value = http
            .post(format!("http://127.0.0.1:{port}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("a JSON answer");
        let session = reply["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {reply}"))
            .to_owned();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
        let store = std::env::var("DIALGATE_TEST_STORE").unwrap_or_else(|_| "sled".to_owned());
        let shots = target.join("console-screenshots").join(store).join(name);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).expect("create the screenshot directory");
        Some(Self {
            http,
            driver_port: port,
            session,
            driver,
            _profile: profile,
            shots,
            shot_count: 0,
        })
    }

    /// One WebDriver command; its `value`. A WebDriver error fails the test.
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!(
            "http://127.0.0.1:{}/session/{}{path}",
            self.driver_port, self.session
        );
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply: Value = request
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("a JSON answer");
        if reply["value"]["error"].is_string() {
            panic!("WebDriver {path}: {}", reply["value"]);
        }
        reply["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body) in the page with `args`; its return value.
    async fn eval(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Polls `script` until it returns something other than `null`, `false` or `""`
    /// (bounded by [`WAIT`]); returns that value. On time-out the page is kept as a
    /// screenshot and the test fails naming `what`.
    async fn wait_for(&mut self, what: &str, script: &str, args: Value) -> Value {
        let started = Instant::now();
        loop {
            let value = self.eval(script, args.clone()).await;
            let done =
                !matches!(&value, Value::Null | Value::Bool(false)) && value.as_str() != Some("");
            if done {
                return value;
            }
            if started.elapsed() > WAIT {
                self.screenshot(&format!("timeout-{}", what.replace(' ', "-")))
                    .await;
                let error = self
                    .eval(
                        "const e = document.getElementById('error'); return e.hidden ? null : e.textContent;",
                        json!([]),
                    )
                    .await;
                panic!("timed out waiting for {what} (error banner: {error})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the page `name` to have loaded (the app marks `main[data-ready]`).
    async fn ready(&mut self, name: &str) {
        self.wait_for(
            &format!("page {name}"),
            "return document.getElementById('main').dataset.ready === arguments[0];",
            json!([name]),
        )
        .await;
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Clears the field `css` and types `text` into it.
    async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// The text of the first element matching `css`, or `null`.
    async fn text(&self, css: &str) -> Value {
        self.eval(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            json!([css]),
        )
        .await
    }

    /// Saves a PNG of the window as `NN-name.png`.
    async fn screenshot(&mut self, name: &str) -> PathBuf {
        let data = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("base64 PNG"))
            .expect("decode the screenshot");
        self.shot_count += 1;
        let path = self
            .shots
            .join(format!("{:02}-{name}.png", self.shot_count));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// The browser's console messages since the last call.
    async fn console_log(&self) -> Vec<String> {
        self.command(
            reqwest::Method::POST,
            "/se/log",
            Some(json!({"type": "browser"})),
        )
        .await
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|entry| format!("{} {}", entry["level"], entry["message"]))
                .collect()
        })
        .unwrap_or_default()
    }

    /// Fails on a script error or a Content-Security-Policy violation the page logged.
    async fn assert_clean_console(&self) {
        let bad: Vec<String> = self
            .console_log()
            .await
            .into_iter()
            .filter(|line| {
                line.contains("Content Security Policy")
                    || line.contains("Uncaught")
                    || line.contains("TypeError")
            })
            .collect();
        assert!(bad.is_empty(), "the page logged errors: {bad:#?}");
    }
}

impl Drop for Browser {
    /// Ends the session (which closes Chromium), then stops chromedriver.
    fn drop(&mut self) {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.driver_port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session, self.driver_port
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Traffic for the console to show: the echo rule (it opens a case per verified code)
/// and a workflow rule; three numbers verified, one pending, a VoIP number verified
/// into review, a delivery receipt, and a webhook to a loopback receiver.
async fn traffic(server: &TestServer, tenant: &Tenant) -> String {
    upload_echo(
        server,
        tenant,
        ALL_TRIGGERS,
        json!({"action": "create_case", "on": "otp_verified"}),
    )
    .await;
    server
        .post(
            "/v1/workflows/rules",
            &tenant.key,
            json!({"rule_id": "voip_needs_info", "trigger": "phone_lookup_complete",
                "conditions": {"all": [{"field": "phone_type", "operator": "eq", "value": "voip"}]},
                "actions": [{"type": "request_info", "info_needed": "Phone verification required"}]}),
        )
        .await
        .expect(201);
    for n in 0..3 {
        server
            .send_and_verify(tenant, &uz_number(n), &format!("app-{n}"))
            .await;
    }
    server.send(tenant, &uz_number(10), "app-pending").await;
    let review = server.send_and_verify(tenant, UK_VOIP, "app-review").await;
    assert_eq!(review["status"], "In Review", "{review}");
    let message = server.outbox(tenant, &uz_number(0)).await[0]["id"]
        .as_str()
        .expect("message id")
        .to_owned();
    server
        .post(
            &format!("/v1/dev/outbox/{message}/delivery"),
            &tenant.key,
            json!({"status": "delivered"}),
        )
        .await
        .expect(200);
    let receiver =
        serve_on_loopback(axum::Router::new().route("/hook", post(|| async { "" }))).await;
    server
        .post(
            "/v1/webhooks",
            &tenant.key,
            json!({"url": format!("http://{receiver}/hook"), "event_types": ["*"], "description": "audit feed"}),
        )
        .await
        .expect(201);
    review["verification_id"]
        .as_str()
        .expect("verification id")
        .to_owned()
}

/// Signs in on the sign-in page with `key`.
async fn sign_in(browser: &mut Browser, key: &str) {
    browser
        .wait_for(
            "the sign-in form",
            "return !!document.getElementById('key');",
            json!([]),
        )
        .await;
    browser.type_into("#key", key).await;
    browser.click("#signin-submit").await;
}

/// The number a funnel card shows.
async fn metric(browser: &Browser, name: &str) -> String {
    browser
        .text(&format!("[data-metric='{name}'] .value"))
        .await
        .as_str()
        .unwrap_or_else(|| panic!("no metric {name}"))
        .to_owned()
}

async fn log_rows(browser: &Browser) -> Value {
    browser
        .eval(
            "return document.querySelectorAll(\"table[data-table='log'] tbody tr\").length;",
            json!([]),
        )
        .await
}

#[tokio::test]
async fn console_assets_are_embedded_with_strict_headers() {
    let server = TestServer::start().await;
    let http = &server.api.client;
    let page = http
        .get(format!("{}/console", server.api.base))
        .send()
        .await
        .expect("the console answers");
    assert_eq!(page.status(), StatusCode::OK);
    let header = |reply: &reqwest::Response, name: &str| {
        reply
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    let csp = header(&page, "content-security-policy");
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(csp.starts_with("default-src 'none';"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    assert_eq!(header(&page, "cache-control"), "no-cache");
    let html = page.text().await.expect("the page");
    assert!(html.contains("/console/assets/app.js"), "{html}");

    let app = http
        .get(format!("{}/console/assets/app.js", server.api.base))
        .send()
        .await
        .expect("app.js");
    assert_eq!(app.status(), StatusCode::OK);
    assert_eq!(
        header(&app, "content-type"),
        "text/javascript; charset=utf-8"
    );
    let etag = header(&app, "etag");
    assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");
    let again = http
        .get(format!("{}/console/assets/app.js", server.api.base))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("app.js again");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    for (path, content_type) in [
        ("console.css", "text/css; charset=utf-8"),
        (
            "vendor/uPlot-1.6.32.iife.min.js",
            "text/javascript; charset=utf-8",
        ),
        ("vendor/uPlot-1.6.32.min.css", "text/css; charset=utf-8"),
    ] {
        let reply = http
            .get(format!("{}/console/assets/{path}", server.api.base))
            .send()
            .await
            .expect("an asset");
        assert_eq!(reply.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&reply, "content-type"), content_type, "{path}");
        if path.starts_with("vendor/") {
            assert!(
                header(&reply, "cache-control").contains("immutable"),
                "{path}"
            );
        }
    }
    let missing = server
        .api
        .raw(
            reqwest::Method::GET,
            "/console/assets/../Cargo.toml",
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(missing.status, 404, "{}", missing.text);
    assert_error_shape(&missing.body);
}

#[tokio::test]
async fn a_tenant_and_the_operator_walk_the_console() {
    let Some(mut browser) = Browser::start("journeys").await else {
        return;
    };
    let (server, tenant) = TestServer::with_tenant().await;
    let review_id = traffic(&server, &tenant).await;
    let base = &server.api.base;

    // What the API says the funnel is.
    let conversion = server
        .get("/v1/analytics/conversion", &tenant.key)
        .await
        .expect(200)
        .clone();
    let totals = &conversion["totals"][0];
    assert_eq!(totals["started"], 5, "{conversion}");
    assert_eq!(totals["verified"], 4, "{conversion}");
    assert_eq!(totals["delivered"], 1, "{conversion}");

    // A wrong key is refused with the API's own message.
    browser.goto(&format!("{base}/console")).await;
    browser.ready("signin").await;
    sign_in(&mut browser, "dg_not_a_key").await;
    let error = browser
        .wait_for(
            "the sign-in error",
            "const e = document.getElementById('error'); return e.hidden ? null : e.textContent;",
            json!([]),
        )
        .await;
    assert!(
        error.as_str().is_some_and(|e| e.contains("not valid")),
        "{error}"
    );
    browser.screenshot("signin-refused").await;

    // Overview: the funnel equals the traffic.
    sign_in(&mut browser, &tenant.key).await;
    browser.ready("overview").await;
    for name in [
        "started",
        "sent",
        "delivered",
        "verified",
        "failed",
        "fraud_blocks",
    ] {
        assert_eq!(
            metric(&browser, name).await,
            totals[name].to_string(),
            "funnel {name}"
        );
    }
    assert_eq!(metric(&browser, "started").await, "5");
    assert_eq!(metric(&browser, "verified").await, "4");
    assert_eq!(metric(&browser, "conversion_rate").await, "80.0%");
    browser
        .wait_for(
            "the conversion chart",
            "return !!document.querySelector('#conversion-chart .uplot canvas');",
            json!([]),
        )
        .await;
    let countries = browser.text("table[data-table='by-country'] tbody").await;
    let countries = countries.as_str().expect("the country table");
    assert!(
        countries.contains("UZ") && countries.contains("GB"),
        "{countries}"
    );
    let providers = browser.text("table[data-table='by-provider'] tbody").await;
    assert!(
        providers
            .as_str()
            .expect("the provider table")
            .contains("dev-outbox"),
        "{providers}"
    );
    browser.screenshot("overview").await;

    // The verification log lists the five, searches, and opens a report.
    browser.click("[data-nav='log']").await;
    browser.ready("log").await;
    assert_eq!(log_rows(&browser).await, 5);
    browser.screenshot("log").await;
    browser.type_into("#filter-applicant_id", "app-1").await;
    browser.click("#log-search").await;
    browser
        .wait_for(
            "the search to narrow the log",
            "return document.getElementById('main').dataset.ready === 'log' && document.querySelectorAll(\"table[data-table='log'] tbody tr\").length === 1;",
            json!([]),
        )
        .await;
    let found = browser.text("table[data-table='log'] tbody tr").await;
    assert!(
        found.as_str().is_some_and(|row| row.contains("app-1")),
        "{found}"
    );
    browser.click("table[data-table='log'] tbody tr a").await;
    browser.ready("verification").await;
    let shown = browser.text("#report-applicant").await;
    assert_eq!(shown, "app-1");
    let rules = browser.text("table[data-table='rules-fired'] tbody").await;
    assert!(
        rules.as_str().is_some_and(|r| r.contains("echo")),
        "{rules}"
    );
    browser.screenshot("report").await;

    // The review queue decides the VoIP verification.
    browser.click("[data-nav='review']").await;
    browser.ready("review").await;
    let item = format!("[data-review='{review_id}']");
    assert!(browser.text(&item).await.is_string(), "not in the queue");
    browser.screenshot("review-queue").await;
    browser
        .type_into(
            &format!("[data-note='{review_id}']"),
            "Known customer, checked by phone",
        )
        .await;
    browser
        .click(&format!("[data-approve='{review_id}']"))
        .await;
    let notice = browser
        .wait_for(
            "the review to be decided",
            "const n = document.getElementById('notice'); return document.getElementById('main').dataset.ready === 'review' && !n.hidden && !document.querySelector('[data-review]') ? n.textContent : null;",
            json!([]),
        )
        .await;
    assert!(
        notice.as_str().is_some_and(|n| n.contains("Approved")),
        "{notice}"
    );
    let report = server.report(&tenant, &review_id).await;
    assert_eq!(report["phone"]["status"], "Approved", "{report}");
    assert_eq!(report["review"]["decision"], "approve");
    assert_eq!(report["review"]["note"], "Known customer, checked by phone");
    assert_eq!(report["review"]["reviewer"], "console");
    browser.screenshot("review-decided").await;

    // Plugins and rules, with what fired.
    browser.click("[data-nav='rules']").await;
    browser.ready("rules").await;
    let echo_firings = browser
        .eval(
            "const row = document.querySelector('[data-plugin]'); return row ? Number(row.children[5].textContent) : null;",
            json!([]),
        )
        .await;
    assert!(
        echo_firings.as_u64().is_some_and(|n| n > 0),
        "{echo_firings}"
    );
    let rule_firings = browser
        .eval(
            "const row = document.querySelector(\"[data-rule='voip_needs_info']\"); return row ? Number(row.children[7].textContent) : null;",
            json!([]),
        )
        .await;
    assert_eq!(rule_firings, 1, "the VoIP rule fired once");
    browser.screenshot("rules").await;

    browser.click("[data-nav='providers']").await;
    browser.ready("providers").await;
    browser.screenshot("providers").await;

    // Webhooks and a delivery log.
    browser.click("[data-nav='webhooks']").await;
    browser.ready("webhooks").await;
    browser.click("table[data-table='webhooks'] tbody a").await;
    browser.ready("webhook").await;
    browser.screenshot("webhook-deliveries").await;

    // Settings: a refused change shows the API's message, a good one is saved.
    browser.click("[data-nav='settings']").await;
    browser.ready("settings").await;
    let editor = browser
        .eval(
            "return document.getElementById('settings-json').value;",
            json!([]),
        )
        .await;
    assert!(
        editor
            .as_str()
            .is_some_and(|e| e.contains("\"code_length\": 6")),
        "{editor}"
    );
    browser.screenshot("settings").await;
    browser
        .type_into("#settings-json", r#"{"code_length": 99}"#)
        .await;
    browser.click("#settings-save").await;
    let refused = browser
        .wait_for(
            "the refusal",
            "const e = document.getElementById('error'); return e.hidden ? null : e.textContent;",
            json!([]),
        )
        .await;
    assert!(
        refused.as_str().is_some_and(|e| e.contains("code_length")),
        "{refused}"
    );
    browser
        .type_into("#settings-json", r#"{"code_length": 8}"#)
        .await;
    browser.click("#settings-save").await;
    browser
        .wait_for(
            "the settings to be saved",
            "const n = document.getElementById('notice'); return !n.hidden && n.textContent.includes('saved');",
            json!([]),
        )
        .await;
    let settings = server
        .get("/v1/settings/phone-verification", &tenant.key)
        .await
        .expect(200)
        .clone();
    assert_eq!(settings["code_length"], 8);
    browser.assert_clean_console().await;

    // The operator: tenants, the view across them, and one tenant's analytics.
    browser.click("#signout").await;
    browser.ready("signin").await;
    sign_in(&mut browser, OPERATOR_KEY).await;
    browser.ready("overview").await;
    assert_eq!(metric(&browser, "started").await, "5");
    browser.screenshot("operator-overview").await;
    browser.click("[data-nav='tenants']").await;
    browser.ready("tenants").await;
    let tenants = browser.text("table[data-table='tenants'] tbody").await;
    assert!(
        tenants
            .as_str()
            .is_some_and(|t| t.contains("acme") && t.contains(&tenant.id)),
        "{tenants}"
    );
    browser.screenshot("operator-tenants").await;
    browser.click("table[data-table='tenants'] tbody a").await;
    browser.ready("overview").await;
    let picked = browser
        .eval(
            "return document.getElementById('tenant-picker').value;",
            json!([]),
        )
        .await;
    assert_eq!(picked, tenant.id.as_str());
    assert_eq!(metric(&browser, "verified").await, "4");
    browser.click("[data-nav='fraud']").await;
    browser.ready("fraud").await;
    browser.screenshot("operator-fraud").await;
    browser.assert_clean_console().await;
}

#[tokio::test]
async fn hostile_tenant_strings_render_as_text() {
    let Some(mut browser) = Browser::start("hostile").await else {
        return;
    };
    let (server, tenant) = TestServer::with_tenant().await;
    let applicant = r#"<img src=x onerror="window.__pwned=1">"#;
    let template = "<script>window.__pwned=2</script><b>bold</b>";
    let description = r#""><svg onload="window.__pwned=3">"#;
    let verified = server.send_and_verify(&tenant, UK_VOIP, applicant).await;
    let id = verified["verification_id"]
        .as_str()
        .expect("verification id")
        .to_owned();
    server
        .post(
            "/v1/templates",
            &tenant.key,
            json!({"name": template, "variants": [{"locale": "en", "text": "Code {code}"}]}),
        )
        .await
        .expect(201);
    server
        .post(
            "/v1/webhooks",
            &tenant.key,
            json!({"url": "http://127.0.0.1:9/hook", "event_types": ["*"], "description": description, "enabled": false}),
        )
        .await
        .expect(201);

    // No element of the page came from data: the strings are text, verbatim.
    const INJECTED: &str = "return window.__pwned === undefined && document.querySelectorAll('main img, main script, main svg, main b').length === 0;";
    browser.goto(&format!("{}/console", server.api.base)).await;
    sign_in(&mut browser, &tenant.key).await;
    browser.ready("overview").await;

    browser.click("[data-nav='log']").await;
    browser.ready("log").await;
    let cell = browser
        .eval(
            "return document.querySelector(\"table[data-table='log'] tbody tr\").children[3].textContent;",
            json!([]),
        )
        .await;
    assert_eq!(cell, applicant);
    assert_eq!(browser.eval(INJECTED, json!([])).await, true);
    browser.screenshot("log").await;

    browser
        .goto(&format!("{}/console#/verification/{id}", server.api.base))
        .await;
    browser.ready("verification").await;
    assert_eq!(browser.text("#report-applicant").await, applicant);
    assert_eq!(browser.eval(INJECTED, json!([])).await, true);

    browser.click("[data-nav='review']").await;
    browser.ready("review").await;
    assert_eq!(
        browser
            .text(&format!("[data-review='{id}'] .applicant"))
            .await,
        applicant
    );
    assert_eq!(browser.eval(INJECTED, json!([])).await, true);

    browser.click("[data-nav='settings']").await;
    browser.ready("settings").await;
    let name = browser
        .eval(
            "return document.querySelector(\"table[data-table='templates'] tbody tr\").children[0].textContent;",
            json!([]),
        )
        .await;
    assert_eq!(name, template);
    assert_eq!(browser.eval(INJECTED, json!([])).await, true);
    browser.screenshot("settings").await;

    browser.click("[data-nav='webhooks']").await;
    browser.ready("webhooks").await;
    let shown = browser
        .eval(
            "return document.querySelector(\"table[data-table='webhooks'] tbody tr\").children[3].textContent;",
            json!([]),
        )
        .await;
    assert_eq!(shown, description);
    assert_eq!(browser.eval(INJECTED, json!([])).await, true);
    browser.assert_clean_console().await;
}
