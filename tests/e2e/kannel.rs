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

/// A `kannel` adapter of `tenant` sending through `kannel`, granted its sendsms host,
/// with the server's callback URL for it: installed from the catalogue when `name` is
/// `kannel`, else uploaded under `name`. Returns its id and callback token.
async fn adapter(
    server: &TestServer,
    tenant: &Tenant,
    kannel: &Kannel,
    name: &str,
) -> (String, String) {
    let reply = if name == "kannel" {
        server
            .post(
                "/v1/plugins/catalog/kannel",
                &tenant.key,
                json!({"hosts": [kannel.sendsms_host()]}),
            )
            .await
    } else {
        let path = format!(
            "/v1/plugins?name={name}&kind=messaging_adapter&version=1&hosts={}",
            kannel.sendsms_host()
        );
        let component = dialgate::plugins::testing::guest_component("kannel");
        server
            .raw(
                Method::POST,
                &path,
                Some(&tenant.key),
                Some(("application/wasm", component)),
                &[],
            )
            .await
    };
    let id = reply.expect(201)["id"].as_str().expect("id").to_owned();
    let token = format!("cb-{}", uuid::Uuid::new_v4().simple());
    let callback = format!(
        "{}/v1/callbacks/{}/{id}?token={token}",
        server.base, tenant.id
    );
    server
        .put(
            &format!("/v1/plugins/{id}/config"),
            &tenant.key,
            json!({
                "config": {"base_url": kannel.sendsms_url(), "sender": "Dialgate", "callback_url": callback},
                "secrets": {"username": kannel.username, "password": kannel.password, "callback_token": token},
                "granted_hosts": [kannel.sendsms_host()],
            }),
        )
        .await
        .expect(200);
    (id, token)
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

/// Polls the report of `verification` until a delivery update has `status`.
async fn wait_for_delivery(
    server: &TestServer,
    tenant: &Tenant,
    verification: &str,
    status: &str,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let report = server.report(tenant, verification).await;
        let reached = report["deliveries"]
            .as_array()
            .is_some_and(|list| list.iter().any(|d| d["status"] == status));
        if reached {
            return report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {status} delivery update within {WAIT:?}: {report}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
async fn codes_go_out_through_kannel_and_delivery_reports_come_back() {
    let (server, tenant) = TestServer::with_tenant().await;
    let (kannel, smsc) = kannel().await;
    let catalogue = server.get("/v1/plugins/catalog", &tenant.key).await;
    let listed = catalogue.expect(200)["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .any(|p| p["name"] == "kannel" && p["kind"] == "messaging_adapter");
    assert!(listed, "kannel is in the catalogue");
    let (id, _) = adapter(&server, &tenant, &kannel, "kannel").await;

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

    // smsbox fetches Kannel's reports from the server: accepted by the SMSC, then
    // delivered to the phone.
    let report = wait_for_delivery(&server, &tenant, verification, "delivered").await;
    let deliveries = report["deliveries"].as_array().expect("deliveries");
    let message_id = deliveries[0]["message_id"]
        .as_str()
        .expect("message id")
        .to_owned();
    assert!(
        message_id.starts_with(verification),
        "the host's message id: {message_id}"
    );
    assert!(deliveries
        .iter()
        .all(|d| d["message_id"] == message_id.as_str()));
    let sent_report = wait_for_delivery(&server, &tenant, verification, "sent").await;
    let before = sent_report["deliveries"].clone();

    // A report with a wrong token is refused and changes nothing.
    let forged = format!(
        "/v1/callbacks/{}/{id}?token=guess&id={message_id}&type=2&answer=forged",
        tenant.id
    );
    server
        .raw(Method::GET, &forged, None, None, &[])
        .await
        .error(401, "unauthorized");
    let after = server.report(&tenant, verification).await;
    assert_eq!(
        after["deliveries"], before,
        "the forged report changed nothing"
    );

    let verified = server.verify(&tenant, &phone, "a", &code).await;
    assert_eq!(verified.expect(200)["status"], "Approved");
}

#[tokio::test]
#[ignore = "needs Debian's kannel (bearerbox, smsbox); .ci/test installs it and runs this test"]
async fn a_russian_code_arrives_intact_as_ucs2() {
    let (server, tenant) = TestServer::with_tenant().await;
    let (kannel, smsc) = kannel().await;
    adapter(&server, &tenant, &kannel, "kannel").await;
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
    let verified = server.verify(&tenant, &phone, "a", &code).await;
    assert_eq!(verified.expect(200)["verification_status"], "verified");
}

#[tokio::test]
#[ignore = "needs Debian's kannel (bearerbox, smsbox); .ci/test installs it and runs this test"]
async fn with_smsbox_down_a_send_fails_over_or_is_reported_failed() {
    let (server, tenant) = TestServer::with_tenant().await;
    let (mut down, down_smsc) = kannel().await;
    adapter(&server, &tenant, &down, "a-kannel").await;
    down.stop_smsbox();

    // The only adapter cannot reach smsbox: the send is refused, not lost.
    let phone = uz_number(72);
    let reply = server
        .send_otp(&tenant, json!({"phone": phone, "applicant_id": "a"}))
        .await;
    let error = reply.error(502, "provider_failed");
    let text = error["message"].as_str().expect("message");
    assert!(
        text.contains("a-kannel") && text.contains("unavailable"),
        "{text}"
    );

    // With a second gateway the code fails over to it.
    let (up, up_smsc) = kannel().await;
    adapter(&server, &tenant, &up, "b-kannel").await;
    server.send(&tenant, &phone, "a").await;
    let message = up_smsc
        .wait_for(&phone, "", WAIT)
        .await
        .expect("the second gateway delivered the code");
    let code = code_in(&message.text);

    // The first gateway comes back: codes go through it again, and nothing that was
    // refused while it was down is delivered late.
    down.start_smsbox().await.expect("smsbox restarts");
    let other = uz_number(73);
    server.send(&tenant, &other, "b").await;
    down_smsc
        .wait_for(&other, "", WAIT)
        .await
        .expect("the first gateway delivered again");
    assert_eq!(down_smsc.count(), 1, "{:?}", down_smsc.messages());
    assert_eq!(up_smsc.count(), 1, "{:?}", up_smsc.messages());

    let verified = server.verify(&tenant, &phone, "a", &code).await;
    assert_eq!(verified.expect(200)["status"], "Approved");
}
