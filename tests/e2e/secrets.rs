//! Callback authentication and secrets at rest end to end: an empty callback token or
//! signing secret is refused naming its field, a callback without the configured
//! token is refused on both callback routes, and the bytes of the data directory hold
//! no plaintext of a plugin secret, a provider secret, a callback token or a webhook
//! signing secret, while the server still uses them after a restart. The server
//! secret is rotated with `dialgate store rotate-secret`: every record, secret and
//! pending code still works under the new secret, and the old one, or none, is
//! refused at start with an error that says so.

use std::path::Path;

use base64::Engine as _;
use reqwest::Method;
use serde_json::json;

use crate::sims::SmsSim;
use crate::support::*;

/// Every file under `dir`, read whole.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).expect("read the data directory") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read a store file");
                found.push((path.display().to_string(), bytes));
            }
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

async fn post_callback(server: &TestServer, path: &str, body: &str) -> u16 {
    server
        .raw(
            Method::POST,
            path,
            None,
            Some((
                "application/x-www-form-urlencoded",
                body.as_bytes().to_vec(),
            )),
            &[],
        )
        .await
        .status
}

/// Adds a Twilio-shaped provider on `sim` (account `AC42`) with its auth token and
/// callback token.
async fn twilio_provider(
    server: &TestServer,
    tenant: &Tenant,
    sim: &SmsSim,
    auth_token: &str,
    callback_token: &str,
) {
    server
        .post(
            "/v1/providers",
            &tenant.key,
            json!({
                "name": "p",
                "plugin": "http-sms",
                "sender_id": "+15005550006",
                "config": {"shape": "twilio", "base_url": sim.base_url(), "account_sid": "AC42"},
                "secrets": {"auth_token": auth_token, "callback_token": callback_token},
                "hosts": [sim.host()],
            }),
        )
        .await
        .expect(201);
}

#[tokio::test]
async fn empty_callback_secrets_are_refused_naming_the_field() {
    let (server, tenant) = TestServer::with_tenant().await;
    server
        .post("/v1/plugins/catalog/http-sms", &tenant.key, json!({}))
        .await
        .expect(201);
    let sim = SmsSim::start().await;
    let provider = |secrets: serde_json::Value, auth: serde_json::Value| {
        json!({
            "name": "p",
            "plugin": "http-sms",
            "config": {"shape": "twilio", "base_url": sim.base_url(), "account_sid": "AC42"},
            "secrets": secrets,
            "hosts": [sim.host()],
            "callback_auth": auth,
        })
    };
    let token = json!({"type": "token"});
    let hmac = json!({"type": "hmac_sha256"});
    for (secrets, auth, field) in [
        (
            json!({"callback_token": ""}),
            &token,
            "secrets.callback_token",
        ),
        (
            json!({"callback_secret": ""}),
            &hmac,
            "secrets.callback_secret",
        ),
        (json!({}), &hmac, "secrets.callback_secret"),
    ] {
        server
            .post(
                "/v1/providers",
                &tenant.key,
                provider(secrets, auth.clone()),
            )
            .await
            .invalid_field(field);
    }
    let created = server
        .post(
            "/v1/providers",
            &tenant.key,
            provider(json!({}), token.clone()),
        )
        .await;
    let id = created.expect(201)["id"].as_str().expect("id").to_owned();
    server
        .patch(
            &format!("/v1/providers/{id}"),
            &tenant.key,
            json!({"secrets": {"callback_token": ""}}),
        )
        .await
        .invalid_field("secrets.callback_token");
    // The generated token still guards the provider's receipts.
    assert_eq!(
        post_callback(&server, &format!("/v1/callbacks/{id}"), "MessageSid=x").await,
        401
    );
    assert_eq!(
        post_callback(
            &server,
            &format!("/v1/callbacks/{id}?token="),
            "MessageSid=x"
        )
        .await,
        401
    );
}

#[tokio::test]
async fn an_adapter_callback_needs_a_configured_non_empty_token() {
    let (server, tenant) = TestServer::with_tenant().await;
    let installed = server
        .post("/v1/plugins/catalog/http-sms", &tenant.key, json!({}))
        .await;
    let id = installed.expect(201)["id"].as_str().expect("id").to_owned();
    let config = format!("/v1/plugins/{id}/config");
    let callback = format!("/v1/callbacks/{}/{id}", tenant.id);
    // No token configured: no callback is accepted, with or without a token.
    assert_eq!(post_callback(&server, &callback, "MessageSid=x").await, 401);
    assert_eq!(
        post_callback(&server, &format!("{callback}?token="), "MessageSid=x").await,
        401
    );
    server
        .put(
            &config,
            &tenant.key,
            json!({"secrets": {"callback_token": ""}}),
        )
        .await
        .invalid_field("secrets.callback_token");
    assert_eq!(post_callback(&server, &callback, "MessageSid=x").await, 401);
    server
        .put(
            &config,
            &tenant.key,
            json!({"secrets": {"callback_token": "cb-token"}}),
        )
        .await
        .expect(200);
    assert_eq!(post_callback(&server, &callback, "MessageSid=x").await, 401);
    assert_eq!(
        post_callback(
            &server,
            &format!("{callback}?token=cb-tokem"),
            "MessageSid=x"
        )
        .await,
        401
    );
    let accepted = post_callback(
        &server,
        &format!("{callback}?token=cb-token"),
        "MessageSid=x&MessageStatus=delivered",
    )
    .await;
    assert_ne!(accepted, 401, "the right token is accepted");
}

#[tokio::test]
async fn the_data_directory_holds_no_secret_in_the_clear() {
    let (server, tenant) = TestServer::with_tenant().await;
    let sim = SmsSim::start().await;
    let installed = server
        .post("/v1/plugins/catalog/http-sms", &tenant.key, json!({}))
        .await;
    let plugin = installed.expect(201)["id"].as_str().expect("id").to_owned();
    let plugin_secret = "plugin-secret-3f9a1c";
    let plugin_token = "plugin-callback-token-77d2";
    server
        .put(
            &format!("/v1/plugins/{plugin}/config"),
            &tenant.key,
            json!({"secrets": {"api_secret": plugin_secret, "callback_token": plugin_token}}),
        )
        .await
        .expect(200);
    let provider_secret = "provider-auth-token-91be";
    let provider_token = "provider-callback-token-5c0d";
    twilio_provider(&server, &tenant, &sim, provider_secret, provider_token).await;
    let webhook = server
        .post(
            "/v1/webhooks",
            &tenant.key,
            json!({"url": "http://127.0.0.1:9/hook", "event_types": ["*"]}),
        )
        .await;
    let webhook_secret = webhook.expect(201)["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let webhook_key = webhook_secret
        .strip_prefix("whsec_")
        .expect("whsec_ prefix")
        .to_owned();
    let raw_key = base64::engine::general_purpose::STANDARD
        .decode(&webhook_key)
        .expect("base64");

    let server = server.restart().await;
    // The bytes a copy of the store holds: the data directory's files, or the
    // database's records when the server runs on PostgreSQL.
    let stored = if server.on_postgres() {
        server.stored_records()
    } else {
        files(&server.data_dir())
    };
    assert!(
        stored
            .iter()
            .any(|(_, bytes)| contains(bytes, b"api_secret")),
        "the scan sees the store's records (secret names are kept)"
    );
    for secret in [
        plugin_secret.as_bytes(),
        plugin_token.as_bytes(),
        provider_secret.as_bytes(),
        provider_token.as_bytes(),
        webhook_key.as_bytes(),
        &raw_key,
    ] {
        for (path, bytes) in &stored {
            assert!(
                !contains(bytes, secret),
                "{path} holds {:?} in the clear",
                String::from_utf8_lossy(secret)
            );
        }
    }

    // The sealed secrets still work after the restart: the provider is called with
    // its token, and its callback token is put in the callback URL.
    server.send(&tenant, &uz_number(21), "a").await;
    let sms = sim.accepted()[0].clone();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("AC42:{provider_secret}"));
    assert_eq!(
        sms.authorization.as_deref(),
        Some(format!("Basic {basic}").as_str())
    );
    let callback = sms.callback.expect("callback URL");
    assert!(
        callback.ends_with(&format!("?token={provider_token}")),
        "{callback}"
    );
}

/// Runs `dialgate store rotate-secret` on `store` with `args`: whether it succeeded,
/// and what it printed.
fn rotate_secret(store: &str, args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dialgate"))
        .args(["store", "rotate-secret", "--store", store])
        .args(args)
        .env_remove("DIALGATE_STORE")
        .output()
        .expect("run dialgate store rotate-secret");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

#[tokio::test]
async fn a_rotated_server_secret_opens_everything_and_the_old_one_nothing() {
    let server = TestServer::start_with(|config| {
        config.code_secret = Some("the first secret".into());
    })
    .await;
    let tenant = server.tenant("rotating").await;
    let sim = SmsSim::start().await;
    server
        .post("/v1/plugins/catalog/http-sms", &tenant.key, json!({}))
        .await
        .expect(201);
    let provider_secret = "provider-auth-token-2e8f";
    twilio_provider(&server, &tenant, &sim, provider_secret, "cb-token-71a0").await;
    let phone = uz_number(31);
    let sent = server.send(&tenant, &phone, "applicant-1").await;
    let id = sent["verification_id"].as_str().expect("id").to_owned();
    let text = sim.accepted()[0].text.clone();
    let code = text
        .split(|c: char| !c.is_ascii_digit())
        .find(|digits| digits.len() == 6)
        .unwrap_or_else(|| panic!("no code in {text:?}"))
        .to_owned();

    // A wrong current secret changes nothing.
    let halted = server.halt().await;
    let store = halted.location();
    let (done, printed) = rotate_secret(
        &store,
        &["--code-secret", "a wrong secret", "--new-code-secret", "x"],
    );
    assert!(!done, "{printed}");
    assert!(printed.contains("does not open"), "{printed}");
    let (done, printed) = rotate_secret(
        &store,
        &[
            "--code-secret",
            "the first secret",
            "--new-code-secret",
            "the second secret",
        ],
    );
    assert!(done, "{printed}");

    // The old secret, and none at all, are refused at start, naming the problem.
    let (error, halted) = halted
        .start_with(|config| config.code_secret = Some("the first secret".into()))
        .await
        .expect_err("the old secret is refused");
    assert!(error.contains("does not open"), "{error}");
    let (error, halted) = halted
        .start_with(|_| {})
        .await
        .expect_err("a server secret must be given");
    assert!(error.contains("--code-secret"), "{error}");

    // Under the new secret: the report with its number, the provider's sealed token,
    // and the code sent before the rotation.
    let server = halted
        .start_with(|config| config.code_secret = Some("the second secret".into()))
        .await
        .expect("the new secret opens the store");
    let report = server.report(&tenant, &id).await;
    assert_eq!(report["phone"]["full_number"], phone.as_str(), "{report}");
    server
        .verify(&tenant, &phone, "applicant-1", &code)
        .await
        .expect(200);
    server.send(&tenant, &uz_number(32), "applicant-2").await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("AC42:{provider_secret}"));
    assert_eq!(
        sim.accepted()[1].authorization.as_deref(),
        Some(format!("Basic {basic}").as_str())
    );
}
