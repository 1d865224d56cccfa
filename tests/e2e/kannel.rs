//! The `kannel` adapter against a real Kannel: Debian's bearerbox and smsbox run on
//! loopback (`dialgate::kannel`), a fake SMSC client collects what bearerbox sends, and
//! smsbox fetches the delivery reports from the real server. Needs Kannel installed
//! (`.ci/test` installs it), so plain `cargo test` lists these tests as ignored.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::Router;
use dialgate::kannel::{FakeSmsc, Kannel, SmscCoding};
use parking_lot::Mutex;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{uz_number, Tenant, TestServer};

/// How long Kannel gets to hand a message to the SMSC or a report to the server.
const WAIT: Duration = Duration::from_secs(15);

/// Kannel and a fake SMSC connected to it.
async fn kannel() -> (Kannel, FakeSmsc) {
    let kannel = Kannel::start()
        .await
        .unwrap_or_else(|err| panic!("cannot start Kannel: {err}"));
    let smsc = kannel
        .connect_smsc()
        .await
        .unwrap_or_else(|err| panic!("cannot connect the fake SMSC: {err}"));
    (kannel, smsc)
}

/// Installs the `kannel` adapter from the catalogue for `tenant`.
async fn install(server: &TestServer, tenant: &Tenant) {
    let catalogue = server.get("/v1/plugins/catalog", &tenant.key).await;
    let listed = catalogue.expect(200)["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .any(|p| p["name"] == "kannel" && p["kind"] == "messaging_adapter");
    assert!(listed, "kannel is in the catalogue");
    server
        .post("/v1/plugins/catalog/kannel", &tenant.key, json!({}))
        .await
        .expect(201);
}

/// Creates a provider `name` of `tenant` sending through `kannel` with the `kannel`
/// adapter, at `priority`; returns it as the API shows it.
async fn provider(
    server: &TestServer,
    tenant: &Tenant,
    kannel: &Kannel,
    name: &str,
    priority: u32,
) -> Value {
    let reply = server
        .post(
            "/v1/providers",
            &tenant.key,
            json!({
                "name": name, "plugin": "kannel", "channels": ["sms"],
                "countries": [], "prefixes": [], "priority": priority, "weight": 1,
                "cost_per_message": 0.004, "sender_id": "Dialgate",
                "config": {"base_url": kannel.sendsms_url()},
                "secrets": {"username": kannel.username, "password": kannel.password},
                "hosts": [kannel.sendsms_host()],
            }),
        )
        .await;
    let created = reply.expect(201).clone();
    let id = created["id"].as_str().expect("id");
    assert_eq!(
        created["callback_url"],
        format!("{}/v1/callbacks/{id}", server.base),
        "smsbox can reach the callback URL"
    );
    created
}

/// The messages of a report, with their provider and status.
fn messages(report: &Value) -> Vec<(String, String)> {
    report["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {report}"))
        .iter()
        .map(|m| {
            let field = |name: &str| m[name].as_str().unwrap_or_default().to_owned();
            (field("provider"), field("status"))
        })
        .collect()
}

/// The digits of the code in an SMS text.
fn code_in(text: &str) -> String {
    let code: String = text
        .split(|c: char| !c.is_ascii_digit())
        .find(|run| run.len() == 6)
        .unwrap_or_default()
        .to_owned();
    assert_eq!(code.len(), 6, "no six-digit code in {text:?}");
    code
}

/// Polls the report of `verification` until `done` holds for it.
async fn wait_for_report(
    server: &TestServer,
    tenant: &Tenant,
    verification: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let report = server.report(tenant, verification).await;
        if done(&report) {
            return report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} not reported within {WAIT:?}: {report}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the report's message history went through `statuses`.
fn history_has(report: &Value, statuses: &[&str]) -> bool {
    report["messages"][0]["history"]
        .as_array()
        .is_some_and(|history| {
            statuses
                .iter()
                .all(|status| history.iter().any(|change| change["status"] == *status))
        })
}

#[tokio::test]
#[ignore = "needs Debian's kannel (bearerbox, smsbox); .ci/test installs it and runs this test"]
async fn the_local_kannel_delivers_sendsms_messages_and_reports_them() {
    // A loopback endpoint that records the query of every report smsbox fetches.
    let reports: Arc<Mutex<Vec<String>>> = Arc::default();
    async fn record(State(reports): State<Arc<Mutex<Vec<String>>>>, RawQuery(query): RawQuery) {
        reports.lock().push(query.unwrap_or_default());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let sink = listener.local_addr().expect("address");
    let app = Router::new()
        .route("/dlr", get(record))
        .with_state(Arc::clone(&reports));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (kannel, smsc) = kannel().await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let send = |password: &str, text: &str, coding: Option<&str>| {
        let mut query = vec![
            ("username", kannel.username.clone()),
            ("password", password.to_owned()),
            ("from", "Dialgate".to_owned()),
            ("to", "+998901234567".to_owned()),
            ("text", text.to_owned()),
            ("dlr-mask", "31".to_owned()),
            ("dlr-url", format!("http://{sink}/dlr?id=m-1&type=%d&ts=%T")),
        ];
        if let Some(coding) = coding {
            query.push(("coding", coding.to_owned()));
            query.push(("charset", "UTF-8".to_owned()));
        }
        client.get(kannel.sendsms_url()).query(&query).send()
    };

    let refused = send("guess", "nope", None).await.expect("sendsms answers");
    assert_eq!(refused.status(), 403);

    let accepted = send(&kannel.password, "Your code is 123456", None)
        .await
        .expect("sendsms answers");
    assert_eq!(accepted.status(), 202);
    let body = accepted.text().await.expect("body");
    assert!(body.starts_with("0: Accepted"), "{body}");
    let message = smsc
        .wait_for("+998901234567", "Your code is 123456", WAIT)
        .await
        .expect("the SMSC received the message");
    assert_eq!(message.sender, "Dialgate");
    assert_eq!(message.coding, SmscCoding::Text);

    let russian = "Ваш код подтверждения: 654321";
    let accepted = send(&kannel.password, russian, Some("2"))
        .await
        .expect("sendsms answers");
    assert_eq!(accepted.status(), 202);
    let message = smsc
        .wait_for("+998901234567", "654321", WAIT)
        .await
        .expect("the SMSC received the UCS-2 message");
    assert_eq!(message.coding, SmscCoding::Ucs2);
    assert_eq!(message.text, russian);
    assert!(smsc.unreadable().is_empty(), "{:?}", smsc.unreadable());

    // Two messages, each reported as accepted by the SMSC (8) and delivered (1).
    let deadline = tokio::time::Instant::now() + WAIT;
    while reports.lock().len() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reports: {:?}",
            reports.lock()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reports = reports.lock().clone();
    for kind in ["type=1", "type=8"] {
        let count = reports
            .iter()
            .filter(|q| q.starts_with("id=m-1&") && q.contains(&format!("&{kind}&ts=")))
            .count();
        assert_eq!(count, 2, "{kind} in {reports:?}");
    }
}

#[tokio::test]
#[ignore = "needs Debian's kannel (bearerbox, smsbox); .ci/test installs it and runs this test"]
async fn codes_go_out_through_a_kannel_provider_and_delivery_reports_come_back() {
    let (server, tenant) = TestServer::with_tenant().await;
    let (kannel, smsc) = kannel().await;
    install(&server, &tenant).await;
    let created = provider(&server, &tenant, &kannel, "kannel", 1).await;
    let id = created["id"].as_str().expect("id");

    let phone = uz_number(70);
    let sent = server.send(&tenant, &phone, "a").await;
    let verification = sent["verification_id"].as_str().expect("id");
    let message = smsc
        .wait_for(&phone, "", WAIT)
        .await
        .expect("the SMSC received the code");
    assert_eq!(message.sender, "Dialgate");
    assert_eq!(message.coding, SmscCoding::Text);
    assert!(
        server.outbox(&tenant, &phone).await.is_empty(),
        "not the dev outbox"
    );
    let code = code_in(&message.text);

    // smsbox fetches Kannel's reports from the server: accepted by the SMSC (type 8)
    // and delivered to the phone (type 1), after the host's own queued and sent.
    let report = wait_for_report(&server, &tenant, verification, "both receipts", |r| {
        history_has(r, &["queued", "sent", "delivered"])
            && r["messages"][0]["history"]
                .as_array()
                .is_some_and(|history| history.len() == 4)
    })
    .await;
    assert_eq!(
        messages(&report),
        [("kannel".to_owned(), "delivered".to_owned())]
    );
    assert_eq!(report["messages"][0]["provider_id"], id);
    assert_eq!(report["messages"][0]["channel"], "sms");
    let message_id = report["messages"][0]["id"].as_str().expect("message id");

    // A receipt with a wrong token is refused and changes nothing.
    let forged = format!("/v1/callbacks/{id}?token=guess&id={message_id}&type=2&answer=forged");
    server
        .raw(Method::GET, &forged, None, None, &[])
        .await
        .error(401, "unauthorized");
    let after = server.report(&tenant, verification).await;
    assert_eq!(
        after["messages"], report["messages"],
        "the forged receipt changed nothing"
    );
    assert_eq!(after["deliveries"], report["deliveries"]);

    let verified = server.verify(&tenant, &phone, "a", &code).await;
    assert_eq!(verified.expect(200)["status"], "Approved");
}

#[tokio::test]
#[ignore = "needs Debian's kannel (bearerbox, smsbox); .ci/test installs it and runs this test"]
async fn a_russian_code_arrives_intact_as_ucs2() {
    let (server, tenant) = TestServer::with_tenant().await;
    let (kannel, smsc) = kannel().await;
    install(&server, &tenant).await;
    provider(&server, &tenant, &kannel, "kannel", 1).await;
    let phone = uz_number(71);
    let sent = server
        .send_otp(
            &tenant,
            json!({"phone": phone, "applicant_id": "a", "language": "ru"}),
        )
        .await;
    assert_eq!(sent.expect(200)["status"], "pending");
    let message = smsc
        .wait_for(&phone, "Ваш код подтверждения", WAIT)
        .await
        .expect("the SMSC received the Russian text");
    assert_eq!(message.coding, SmscCoding::Ucs2);
    let code = code_in(&message.text);
    assert_eq!(
        message.text,
        format!("Ваш код подтверждения: {code}. Он действует 10 мин.")
    );
    let verification = sent.body["verification_id"].as_str().expect("id");
    wait_for_report(&server, &tenant, verification, "delivered", |r| {
        history_has(r, &["delivered"])
    })
    .await;
    let verified = server.verify(&tenant, &phone, "a", &code).await;
    assert_eq!(verified.expect(200)["verification_status"], "verified");
}

#[tokio::test]
#[ignore = "needs Debian's kannel (bearerbox, smsbox); .ci/test installs it and runs this test"]
async fn with_smsbox_down_a_send_fails_over_or_is_reported_failed() {
    let (server, tenant) = TestServer::with_tenant().await;
    install(&server, &tenant).await;
    let (mut down, down_smsc) = kannel().await;
    provider(&server, &tenant, &down, "kannel-a", 1).await;
    down.stop_smsbox();

    // The only provider cannot reach smsbox: the send is refused, not lost.
    let phone = uz_number(72);
    let reply = server
        .send_otp(&tenant, json!({"phone": phone, "applicant_id": "a"}))
        .await;
    let error = reply.error(502, "provider_failed");
    let text = error["message"].as_str().expect("message");
    assert!(text.contains("kannel-a"), "{text}");

    // With a second gateway the code fails over to it; the report shows both attempts.
    let (up, up_smsc) = kannel().await;
    provider(&server, &tenant, &up, "kannel-b", 2).await;
    let sent = server.send(&tenant, &phone, "a").await;
    let verification = sent["verification_id"].as_str().expect("id");
    let message = up_smsc
        .wait_for(&phone, "", WAIT)
        .await
        .expect("the second gateway delivered the code");
    let code = code_in(&message.text);
    let report = wait_for_report(&server, &tenant, verification, "delivered", |r| {
        messages(r)
            .last()
            .is_some_and(|(_, status)| status == "delivered")
    })
    .await;
    let attempts = messages(&report);
    assert_eq!(attempts.last().map(|(p, _)| p.as_str()), Some("kannel-b"));
    assert!(
        attempts[..attempts.len() - 1]
            .iter()
            .all(|(provider, status)| provider == "kannel-a" && status == "failed"),
        "{attempts:?}"
    );

    // Nothing refused while smsbox was down is delivered once it is back.
    down.start_smsbox().await.expect("smsbox restarts");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(down_smsc.count(), 0, "{:?}", down_smsc.messages());
    assert_eq!(up_smsc.count(), 1, "{:?}", up_smsc.messages());

    let verified = server.verify(&tenant, &phone, "a", &code).await;
    assert_eq!(verified.expect(200)["status"], "Approved");
}
