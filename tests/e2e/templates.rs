//! Brands and message templates over HTTP: CRUD, validation errors naming fields,
//! tenant isolation, and sends that choose a variant (by locale, the number's country,
//! then English, then the built-in text), render the brand, code, expiry and app
//! hash, and report the template, locale, GSM-7/UCS-2 encoding and segment count.

use serde_json::{json, Value};

use crate::support::*;

/// A Russian mobile number (MTS).
const RU_MOBILE: &str = "+79161234567";
const APP_HASH: &str = "FA+9qCX9VSu";

const RU_TEXT: &str = "{brand}: ваш код {code}. Действует {expiry_minutes} мин.";
const EN_TEXT: &str = "{brand}: your code is {code}. Valid for {expiry_minutes} minutes.";

async fn create(server: &TestServer, tenant: &Tenant, path: &str, body: Value) -> Value {
    server
        .post(path, &tenant.key, body)
        .await
        .expect(201)
        .clone()
}

/// The `login` template (English and Russian SMS) and the `acme` brand using it.
async fn login_and_acme(server: &TestServer, tenant: &Tenant) {
    create(
        server,
        tenant,
        "/v1/templates",
        json!({"id": "login", "name": "Login", "variants": [
            {"locale": "en", "channel": "sms", "text": EN_TEXT},
            {"locale": "ru", "channel": "sms", "text": RU_TEXT},
        ]}),
    )
    .await;
    create(
        server,
        tenant,
        "/v1/brands",
        json!({"id": "acme", "name": "Acme", "template_id": "login"}),
    )
    .await;
}

/// The newest outbox message for `phone`.
async fn newest(server: &TestServer, tenant: &Tenant, phone: &str) -> Value {
    server
        .outbox(tenant, phone)
        .await
        .first()
        .unwrap_or_else(|| panic!("no message for {phone}"))
        .clone()
}

/// Sends with `body` (phone and applicant added), expects it pending, and returns the
/// outbox message and the report's `message`.
async fn send_with(
    server: &TestServer,
    tenant: &Tenant,
    phone: &str,
    applicant: &str,
    extra: Value,
) -> (Value, Value) {
    let mut body = json!({"phone": phone, "applicant_id": applicant});
    for (name, value) in extra.as_object().expect("extra fields") {
        body[name] = value.clone();
    }
    let sent = server.send_otp(tenant, body).await.expect(200).clone();
    assert_eq!(sent["status"], "pending", "{sent}");
    let id = sent["verification_id"].as_str().expect("id");
    let report = server.report(tenant, id).await;
    (
        newest(server, tenant, phone).await,
        report["message"].clone(),
    )
}

fn text(message: &Value) -> &str {
    message["body"].as_str().expect("body")
}

#[tokio::test]
async fn templates_and_brands_are_created_listed_replaced_and_deleted() {
    let (server, tenant) = TestServer::with_tenant().await;
    let created = create(
        &server,
        &tenant,
        "/v1/templates",
        json!({"id": "login", "name": " Login ", "variants": [
            {"locale": "pt-BR", "text": "Código {code}"},
            {"locale": "en", "channel": "voice", "text": "Your code is {code}"},
        ]}),
    )
    .await;
    assert_eq!(
        keys(&created),
        sorted(&["id", "name", "variants", "created_at", "updated_at"])
    );
    assert_eq!(created["id"], "login");
    assert_eq!(created["name"], "Login");
    // Locales come back normalised; the channel defaults to SMS.
    assert_eq!(
        created["variants"],
        json!([
            {"locale": "pt-br", "channel": "sms", "text": "Código {code}"},
            {"locale": "en", "channel": "voice", "text": "Your code is {code}"},
        ])
    );
    let generated = create(
        &server,
        &tenant,
        "/v1/templates",
        json!({"name": "Other", "variants": [{"locale": "en", "text": "{code}"}]}),
    )
    .await;
    let generated_id = generated["id"].as_str().expect("id").to_owned();
    assert!(generated_id.starts_with("tpl_"), "{generated_id}");

    let again = server
        .post(
            "/v1/templates",
            &tenant.key,
            json!({"id": "login", "name": "Again", "variants": [{"locale": "en", "text": "{code}"}]}),
        )
        .await;
    again.error(409, "template_exists");
    assert_eq!(
        server
            .get("/v1/templates/login", &tenant.key)
            .await
            .expect(200),
        &created
    );
    let listed = server.get("/v1/templates", &tenant.key).await;
    let ids: Vec<&str> = listed.expect(200)["templates"]
        .as_array()
        .expect("templates")
        .iter()
        .map(|t| t["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["login", generated_id.as_str()]);

    server.advance(chrono::Duration::minutes(1));
    let replaced = server
        .put(
            "/v1/templates/login",
            &tenant.key,
            json!({"id": "login", "name": "Login v2", "variants": [{"locale": "en", "text": "v2 {code}"}]}),
        )
        .await;
    let replaced = replaced.expect(200);
    assert_eq!(replaced["name"], "Login v2");
    assert_eq!(replaced["variants"].as_array().expect("variants").len(), 1);
    assert_eq!(replaced["created_at"], created["created_at"]);
    assert!(timestamp(&replaced["updated_at"]) > timestamp(&created["updated_at"]));
    server
        .put(
            "/v1/templates/nope",
            &tenant.key,
            json!({"name": "x", "variants": [{"locale": "en", "text": "{code}"}]}),
        )
        .await
        .error(404, "not_found");

    // Brands: a generated id, then a chosen one naming the template.
    let brand = create(
        &server,
        &tenant,
        "/v1/brands",
        json!({"name": "Acme", "app_hash": APP_HASH}),
    )
    .await;
    assert_eq!(
        keys(&brand),
        sorted(&[
            "id",
            "name",
            "app_hash",
            "template_id",
            "created_at",
            "updated_at"
        ])
    );
    let brand_id = brand["id"].as_str().expect("id").to_owned();
    assert!(brand_id.starts_with("brd_"), "{brand_id}");
    assert_eq!(brand["app_hash"], APP_HASH);
    assert_eq!(brand["template_id"], Value::Null);
    let acme = create(
        &server,
        &tenant,
        "/v1/brands",
        json!({"id": "acme", "name": "Acme Bank", "template_id": "login"}),
    )
    .await;
    assert_eq!(acme["template_id"], "login");
    server
        .post(
            "/v1/brands",
            &tenant.key,
            json!({"id": "acme", "name": "Again"}),
        )
        .await
        .error(409, "brand_exists");
    let brands = server.get("/v1/brands", &tenant.key).await;
    assert_eq!(
        brands.expect(200)["brands"]
            .as_array()
            .expect("brands")
            .len(),
        2
    );

    // A template a brand names cannot go; once the brand lets go, it can.
    let in_use = server.delete("/v1/templates/login", &tenant.key).await;
    let error = in_use.error(409, "template_in_use");
    assert!(
        error["message"].as_str().expect("message").contains("acme"),
        "{error}"
    );
    let renamed = server
        .put(
            "/v1/brands/acme",
            &tenant.key,
            json!({"name": "Acme Bank", "template_id": generated_id}),
        )
        .await;
    assert_eq!(renamed.expect(200)["template_id"], generated_id.as_str());
    assert_eq!(
        server
            .delete("/v1/templates/login", &tenant.key)
            .await
            .status,
        204
    );
    server
        .get("/v1/templates/login", &tenant.key)
        .await
        .error(404, "not_found");
    server
        .delete("/v1/templates/login", &tenant.key)
        .await
        .error(404, "not_found");
    assert_eq!(
        server
            .delete(&format!("/v1/brands/{brand_id}"), &tenant.key)
            .await
            .status,
        204
    );
    server
        .get(&format!("/v1/brands/{brand_id}"), &tenant.key)
        .await
        .error(404, "not_found");
    // Records survive a restart.
    let server = server.restart().await;
    let acme_after = server.get("/v1/brands/acme", &tenant.key).await;
    assert_eq!(acme_after.expect(200)["name"], "Acme Bank");
}

#[tokio::test]
async fn bad_templates_and_brands_are_refused_naming_the_field() {
    let (server, tenant) = TestServer::with_tenant().await;
    let template = |variants: Value| json!({"name": "T", "variants": variants});
    let refused = |body: Value, field: &'static str| {
        let server = &server;
        let tenant = &tenant;
        async move {
            let reply = server.post("/v1/templates", &tenant.key, body).await;
            reply.invalid_field(field)["message"]
                .as_str()
                .expect("message")
                .to_owned()
        }
    };
    let message = refused(
        template(json!([
            {"locale": "en", "text": "{code}"},
            {"locale": "ru", "text": "Код {code}, {kode}"},
        ])),
        "variants[1].text",
    )
    .await;
    assert!(
        message.contains("ru sms") && message.contains("{kode}"),
        "{message}"
    );
    let message = refused(
        template(json!([{"locale": "de", "channel": "voice", "text": "Ihr Code"}])),
        "variants[0].text",
    )
    .await;
    assert!(
        message.contains("de voice") && message.contains("{code}"),
        "{message}"
    );
    let message = refused(
        template(json!([{"locale": "en", "text": "Code {code"}])),
        "variants[0].text",
    )
    .await;
    assert!(message.contains("unbalanced `{`"), "{message}");
    let message = refused(
        template(json!([{"locale": "en", "text": "Code} {code}"}])),
        "variants[0].text",
    )
    .await;
    assert!(message.contains("unbalanced `}`"), "{message}");
    refused(
        template(json!([{"locale": "zh-Hant", "text": "{code}"}])),
        "variants[0].locale",
    )
    .await;
    refused(
        template(json!([
            {"locale": "pt-BR", "text": "{code}"},
            {"locale": "pt_br", "text": "Código {code}"},
        ])),
        "variants[1]",
    )
    .await;
    refused(
        template(json!([{"locale": "en", "channel": "email", "text": "{code}"}])),
        "variants[0].channel",
    )
    .await;
    let long = format!("{{code}} {}", "a".repeat(474));
    let message = refused(
        template(json!([{"locale": "en", "text": long}])),
        "variants[0].text",
    )
    .await;
    assert!(message.contains("at most 480"), "{message}");
    // The same text is fine on WhatsApp.
    create(
        &server,
        &tenant,
        "/v1/templates",
        template(json!([{"locale": "en", "channel": "whatsapp", "text": long}])),
    )
    .await;
    let message = refused(
        template(json!([{"locale": "en", "text": "{app_hash} Code {code}"}])),
        "variants[0].text",
    )
    .await;
    assert!(message.contains("last line"), "{message}");
    let many: Vec<Value> = (0..51)
        .map(|n| json!({"locale": if n % 2 == 0 { "en" } else { "ru" }, "text": "{code}"}))
        .collect();
    refused(template(json!(many)), "variants").await;
    refused(template(json!([])), "variants").await;
    refused(
        json!({"name": "  ", "variants": [{"locale": "en", "text": "{code}"}]}),
        "name",
    )
    .await;
    refused(
        json!({"id": "has space", "name": "T", "variants": [{"locale": "en", "text": "{code}"}]}),
        "id",
    )
    .await;
    refused(
        json!({"name": "T", "variants": [{"locale": "en", "text": "{code}"}], "extra": 1}),
        "extra",
    )
    .await;
    server
        .put(
            "/v1/templates/login",
            &tenant.key,
            json!({"id": "other", "name": "T", "variants": [{"locale": "en", "text": "{code}"}]}),
        )
        .await
        .invalid_field("id");

    let brand = |body: Value, field: &'static str| {
        let server = &server;
        let tenant = &tenant;
        async move {
            server
                .post("/v1/brands", &tenant.key, body)
                .await
                .invalid_field(field);
        }
    };
    brand(
        json!({"name": "Acme", "app_hash": "FA+9qCX9VS"}),
        "app_hash",
    )
    .await;
    brand(
        json!({"name": "Acme", "app_hash": "FA+9qCX9VS="}),
        "app_hash",
    )
    .await;
    brand(
        json!({"name": "Acme", "template_id": "missing"}),
        "template_id",
    )
    .await;
    brand(json!({"app_hash": APP_HASH}), "name").await;
    brand(json!({"name": "Acme", "colour": "red"}), "colour").await;
    server
        .get("/v1/brands/bad%20id", &tenant.key)
        .await
        .invalid_field("id");
    // Nothing refused was stored.
    let brands = server.get("/v1/brands", &tenant.key).await;
    assert_eq!(brands.expect(200)["brands"], json!([]));
}

#[tokio::test]
async fn a_tenant_sees_and_sends_with_only_its_own_brands_and_templates() {
    let (server, tenant) = TestServer::with_tenant().await;
    let other = server.tenant("globex").await;
    login_and_acme(&server, &tenant).await;
    server
        .get("/v1/templates/login", &other.key)
        .await
        .error(404, "not_found");
    server
        .get("/v1/brands/acme", &other.key)
        .await
        .error(404, "not_found");
    let listed = server.get("/v1/templates", &other.key).await;
    assert_eq!(listed.expect(200)["templates"], json!([]));
    server
        .delete("/v1/brands/acme", &other.key)
        .await
        .error(404, "not_found");
    // Another tenant's ids are unknown in a send: 422 naming the field, nothing sent.
    let phone = uz_number(1);
    server
        .send_otp(&other, json!({"phone": phone, "brand_id": "acme"}))
        .await
        .invalid_field("brand_id");
    server
        .send_otp(&other, json!({"phone": phone, "template_id": "login"}))
        .await
        .invalid_field("template_id");
    assert!(server.outbox(&other, &phone).await.is_empty());
    // The same ids are free for the other tenant, and its records are its own.
    create(
        &server,
        &other,
        "/v1/brands",
        json!({"id": "acme", "name": "Globex"}),
    )
    .await;
    let mine = server.get("/v1/brands/acme", &tenant.key).await;
    assert_eq!(mine.expect(200)["name"], "Acme");
}

#[tokio::test]
async fn a_russian_send_with_brand_and_template_renders_the_russian_variant_in_ucs_2() {
    let (server, tenant) = TestServer::with_tenant().await;
    login_and_acme(&server, &tenant).await;
    let (message, report) = send_with(
        &server,
        &tenant,
        RU_MOBILE,
        "a",
        json!({"brand_id": "acme", "locale": "ru"}),
    )
    .await;
    let code = message["code"].as_str().expect("code");
    let expected = format!("Acme: ваш код {code}. Действует 10 мин.");
    assert_eq!(text(&message), expected);
    // 39 UTF-16 units: one UCS-2 segment.
    assert_eq!(message["encoding"], "UCS-2");
    assert_eq!(message["segments"], 1);
    assert_eq!(
        report,
        json!({"template_id": "login", "brand_id": "acme", "locale": "ru", "channel": "sms",
               "encoding": "UCS-2", "segments": 1})
    );

    // The expiry follows the settings; `language` is the same setting as `locale`.
    server
        .settings(&tenant, json!({"otp_expiry_minutes": 25}))
        .await;
    let (message, _) = send_with(
        &server,
        &tenant,
        RU_MOBILE,
        "b",
        json!({"brand_id": "acme", "language": "ru-RU", "locale": "ru_ru"}),
    )
    .await;
    assert!(text(&message).ends_with("Действует 25 мин."), "{message}");
    // Without a locale, the Russian number's country chooses Russian too.
    let (message, report) = send_with(
        &server,
        &tenant,
        RU_MOBILE,
        "c",
        json!({"brand_id": "acme"}),
    )
    .await;
    assert!(text(&message).starts_with("Acme: ваш код"), "{message}");
    assert_eq!(report["locale"], "ru");
}

#[tokio::test]
async fn a_missing_locale_falls_back_to_english_then_to_the_built_in_text() {
    let (server, tenant) = TestServer::with_tenant().await;
    login_and_acme(&server, &tenant).await;
    // French asked, no French variant: the English one.
    let (message, report) = send_with(
        &server,
        &tenant,
        RU_MOBILE,
        "a",
        json!({"brand_id": "acme", "locale": "fr-CA"}),
    )
    .await;
    let code = message["code"].as_str().expect("code");
    assert_eq!(
        text(&message),
        format!("Acme: your code is {code}. Valid for 10 minutes.")
    );
    assert_eq!(report["locale"], "en");
    assert_eq!(report["template_id"], "login");
    assert_eq!(report["encoding"], "GSM-7");

    // A template without a variant for the channel: the built-in text in the asked
    // language, reported without a template.
    create(
        &server,
        &tenant,
        "/v1/templates",
        json!({"id": "voice-only", "name": "Voice", "variants": [
            {"locale": "en", "channel": "voice", "text": "Your code is {code}"},
        ]}),
    )
    .await;
    let (message, report) = send_with(
        &server,
        &tenant,
        RU_MOBILE,
        "b",
        json!({"template_id": "voice-only", "locale": "fr"}),
    )
    .await;
    let code = message["code"].as_str().expect("code");
    assert_eq!(
        text(&message),
        format!("Votre code de vérification est {code}. Il expire dans 10 minutes.")
    );
    assert_eq!(
        report,
        json!({"template_id": null, "brand_id": null, "locale": "fr", "channel": "sms",
               "encoding": "GSM-7", "segments": 1})
    );
    // The same template on voice uses its variant.
    let (message, report) = send_with(
        &server,
        &tenant,
        &uz_number(3),
        "c",
        json!({"template_id": "voice-only", "channel": "voice"}),
    )
    .await;
    let code = message["code"].as_str().expect("code");
    assert_eq!(text(&message), format!("Your code is {code}"));
    assert_eq!(message["channel"], "voice");
    assert_eq!(report["template_id"], "voice-only");
    assert_eq!(report["channel"], "voice");

    // The request's template wins over the brand's.
    let (message, report) = send_with(
        &server,
        &tenant,
        &uz_number(4),
        "d",
        json!({"brand_id": "acme", "template_id": "voice-only", "locale": "de"}),
    )
    .await;
    assert!(
        text(&message).starts_with("Ihr Bestätigungscode"),
        "{message}"
    );
    assert_eq!(report["brand_id"], "acme");
    assert_eq!(report["template_id"], Value::Null);
}

#[tokio::test]
async fn an_uzbek_number_without_a_locale_gets_the_uzbek_variant() {
    let (server, tenant) = TestServer::with_tenant().await;
    create(
        &server,
        &tenant,
        "/v1/templates",
        json!({"id": "login", "name": "Login", "variants": [
            {"locale": "en", "text": "Code {code}"},
            {"locale": "ru", "text": "Код {code}"},
            {"locale": "uz", "text": "Kod {code}, {expiry_minutes} daqiqa"},
        ]}),
    )
    .await;
    let (message, report) = send_with(
        &server,
        &tenant,
        UZ_BEELINE,
        "a",
        json!({"template_id": "login"}),
    )
    .await;
    let code = message["code"].as_str().expect("code");
    assert_eq!(text(&message), format!("Kod {code}, 10 daqiqa"));
    assert_eq!(report["locale"], "uz");
    assert_eq!(report["encoding"], "GSM-7");
    // A locale in the request wins over the country.
    let (message, report) = send_with(
        &server,
        &tenant,
        UZ_BEELINE,
        "b",
        json!({"template_id": "login", "locale": "ru"}),
    )
    .await;
    assert!(text(&message).starts_with("Код "), "{message}");
    assert_eq!(report["locale"], "ru");
    // A US number has no built-in language of its own: English.
    let (message, report) = send_with(
        &server,
        &tenant,
        "+14155552671",
        "c",
        json!({"template_id": "login"}),
    )
    .await;
    assert!(text(&message).starts_with("Code "), "{message}");
    assert_eq!(report["locale"], "en");
}

#[tokio::test]
async fn the_app_hash_ends_the_sms_on_its_own_line() {
    let (server, tenant) = TestServer::with_tenant().await;
    create(
        &server,
        &tenant,
        "/v1/templates",
        json!({"id": "android", "name": "Android", "variants": [
            {"locale": "en", "text": "{brand} code: {code}\n{app_hash}"},
        ]}),
    )
    .await;
    create(
        &server,
        &tenant,
        "/v1/brands",
        json!({"id": "acme", "name": "Acme", "app_hash": APP_HASH, "template_id": "android"}),
    )
    .await;
    let (message, _) = send_with(
        &server,
        &tenant,
        &uz_number(1),
        "a",
        json!({"brand_id": "acme"}),
    )
    .await;
    let code = message["code"].as_str().expect("code");
    assert_eq!(text(&message), format!("Acme code: {code}\n{APP_HASH}"));
    assert_eq!(text(&message).lines().last(), Some(APP_HASH));
    // The request's hash overrides the brand's.
    let (message, _) = send_with(
        &server,
        &tenant,
        &uz_number(2),
        "a",
        json!({"brand_id": "acme", "app_hash": "abc_DEF-123"}),
    )
    .await;
    assert_eq!(text(&message).lines().last(), Some("abc_DEF-123"));
    // The built-in text takes the hash on a last line of its own too.
    let (message, _) = send_with(
        &server,
        &tenant,
        &uz_number(3),
        "a",
        json!({"locale": "en", "app_hash": APP_HASH}),
    )
    .await;
    let body = text(&message);
    assert!(body.starts_with("Your verification code is"), "{body}");
    assert!(body.ends_with(&format!(".\n{APP_HASH}")), "{body}");
    // The template needs a hash: without one (no brand, none given) it is refused.
    let phone = uz_number(4);
    let refused = server
        .send_otp(
            &tenant,
            json!({"phone": phone, "template_id": "android", "brand_id": null}),
        )
        .await;
    // {brand} is checked first: the template needs a brand as well.
    refused.invalid_field("brand_id");
    create(
        &server,
        &tenant,
        "/v1/brands",
        json!({"id": "nohash", "name": "NoHash"}),
    )
    .await;
    let refused = server
        .send_otp(
            &tenant,
            json!({"phone": phone, "template_id": "android", "brand_id": "nohash"}),
        )
        .await;
    let error = refused.invalid_field("app_hash");
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("{app_hash}"),
        "{error}"
    );
    assert!(server.outbox(&tenant, &phone).await.is_empty());
}

#[tokio::test]
async fn send_choices_are_validated_before_anything_is_sent() {
    let (server, tenant) = TestServer::with_tenant().await;
    login_and_acme(&server, &tenant).await;
    let phone = uz_number(5);
    let send = |extra: Value| {
        let mut body = json!({"phone": phone});
        for (name, value) in extra.as_object().expect("extra") {
            body[name] = value.clone();
        }
        let server = &server;
        let tenant = &tenant;
        async move { server.send_otp(tenant, body).await }
    };
    send(json!({"brand_id": "nope"}))
        .await
        .invalid_field("brand_id");
    send(json!({"brand_id": "bad id"}))
        .await
        .invalid_field("brand_id");
    send(json!({"template_id": "nope"}))
        .await
        .invalid_field("template_id");
    send(json!({"locale": "ru", "language": "en"}))
        .await
        .invalid_field("locale");
    send(json!({"locale": "zh-Hant"}))
        .await
        .invalid_field("locale");
    send(json!({"language": "english"}))
        .await
        .invalid_field("language");
    send(json!({"app_hash": "short"}))
        .await
        .invalid_field("app_hash");
    send(json!({"brand_id": 5})).await.invalid_field("brand_id");
    // {brand} never falls back to the tenant's name: a brand is required.
    let error = send(json!({"template_id": "login", "locale": "ru"})).await;
    let error = error.invalid_field("brand_id");
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("{brand}"),
        "{error}"
    );
    assert!(server.outbox(&tenant, &phone).await.is_empty());
}

/// Replaces the `long` template with one English SMS variant of `text`.
async fn long_template(server: &TestServer, tenant: &Tenant, locale: &str, text: &str) {
    server
        .put(
            "/v1/templates/long",
            &tenant.key,
            json!({"name": "Long", "variants": [{"locale": locale, "text": text}]}),
        )
        .await
        .expect(200);
}

#[tokio::test]
async fn segments_are_counted_across_the_160_and_70_character_boundaries() {
    let (server, tenant) = TestServer::with_tenant().await;
    create(
        &server,
        &tenant,
        "/v1/templates",
        json!({"id": "long", "name": "Long", "variants": [{"locale": "en", "text": "{code}"}]}),
    )
    .await;
    // The code is 6 digits, so "{code} " and `n` more characters make 7 + n.
    let cases: &[(&str, &str, usize, &str, u64)] = &[
        // Plain English: GSM-7, 160 in one message, 153 per part beyond.
        ("en", "a", 153, "GSM-7", 1),
        ("en", "a", 154, "GSM-7", 2),
        ("en", "a", 299, "GSM-7", 2),
        ("en", "a", 300, "GSM-7", 3),
        // An extension character (€) takes two septets: 7 + 2 × 77 = 161.
        ("en", "€", 76, "GSM-7", 1),
        ("en", "€", 77, "GSM-7", 2),
        // Cyrillic: UCS-2, 70 in one message, 67 per part beyond.
        ("ru", "ж", 63, "UCS-2", 1),
        ("ru", "ж", 64, "UCS-2", 2),
        ("ru", "ж", 127, "UCS-2", 2),
        ("ru", "ж", 128, "UCS-2", 3),
        // One character outside GSM-7 turns the whole English text into UCS-2.
        ("en", "ё", 1, "UCS-2", 1),
    ];
    for (n, (locale, fill, count, encoding, segments)) in cases.iter().enumerate() {
        let body = format!("{{code}} {}", fill.repeat(*count));
        long_template(&server, &tenant, locale, &body).await;
        let phone = uz_number(10 + u32::try_from(n).expect("few cases"));
        let (message, report) = send_with(
            &server,
            &tenant,
            &phone,
            "a",
            json!({"template_id": "long", "locale": locale}),
        )
        .await;
        let sent = text(&message);
        assert_eq!(sent.chars().count(), 7 + count, "{sent}");
        assert_eq!(message["encoding"], *encoding, "case {n}: {sent}");
        assert_eq!(message["segments"], *segments, "case {n}: {sent}");
        assert_eq!(report["encoding"], *encoding, "case {n}");
        assert_eq!(report["segments"], *segments, "case {n}");
        assert_eq!(report["locale"], *locale, "case {n}");
    }
}

/// A British mobile number of its own for the experiment's `i`-th send.
fn experiment_number(i: u32) -> String {
    format!("+447400{:06}", 500_000 + i * 4_409)
}

#[tokio::test]
async fn a_brand_s_template_experiment_splits_numbers_by_weight_and_analytics_compares_them() {
    let (server, tenant) = TestServer::with_tenant().await;
    for (id, text) in [
        ("control", "Control {code}"),
        ("challenger", "Challenger {code}"),
    ] {
        create(
            &server,
            &tenant,
            "/v1/templates",
            json!({"id": id, "name": id, "variants": [{"locale": "en", "text": text}]}),
        )
        .await;
    }
    let brand = create(
        &server,
        &tenant,
        "/v1/brands",
        json!({"id": "split", "name": "Split", "template_id": "control",
               "experiment": {"template_id": "challenger", "weight": 30}}),
    )
    .await;
    assert_eq!(brand["experiment"]["weight"], 30);

    // Sixty numbers: each lands on one side, about 30% on the challenger's.
    let mut challenger = Vec::new();
    for i in 0..60 {
        let phone = experiment_number(i);
        let (message, report) = send_with(
            &server,
            &tenant,
            &phone,
            "a",
            json!({"brand_id": "split", "client_ip": format!("198.51.100.{}", i + 1)}),
        )
        .await;
        let side = report["template_id"]
            .as_str()
            .expect("a template")
            .to_owned();
        assert!(text(&message).starts_with(if side == "challenger" {
            "Challenger"
        } else {
            "Control"
        }));
        if side == "challenger" {
            challenger.push(phone);
        }
    }
    assert!(
        (8..=30).contains(&challenger.len()),
        "{} of 60 on the challenger",
        challenger.len()
    );
    // A number keeps its side when its code is sent again.
    server.advance(chrono::Duration::seconds(31));
    let (_, again) = send_with(
        &server,
        &tenant,
        &challenger[0],
        "a",
        json!({"brand_id": "split", "client_ip": "198.51.100.200"}),
    )
    .await;
    assert_eq!(again["template_id"], "challenger");
    // Verify the challenger's codes only: conversion per template tells them apart.
    for phone in &challenger {
        let code = server.latest_code(&tenant, phone).await;
        server.verify(&tenant, phone, "a", &code).await.expect(200);
    }
    let by_template = server
        .get("/v1/analytics/conversion?group_by=template", &tenant.key)
        .await
        .expect(200)
        .clone();
    let row = |name: &str| {
        by_template["totals"]
            .as_array()
            .expect("totals")
            .iter()
            .find(|row| row["group"] == name)
            .unwrap_or_else(|| panic!("no {name} row: {by_template}"))
            .clone()
    };
    let (control, chosen) = (row("control"), row("challenger"));
    assert_eq!(chosen["started"], challenger.len());
    assert_eq!(chosen["conversion_rate"], 1.0);
    assert_eq!(control["started"], 60 - challenger.len());
    assert_eq!(control["conversion_rate"], 0.0);

    // Mistakes are named; a template in an experiment is in use.
    for (body, field) in [
        (
            json!({"name": "X", "experiment": {"template_id": "challenger", "weight": 10}}),
            "experiment",
        ),
        (
            json!({"name": "X", "template_id": "control", "experiment": {"template_id": "control", "weight": 10}}),
            "experiment.template_id",
        ),
        (
            json!({"name": "X", "template_id": "control", "experiment": {"template_id": "nope", "weight": 10}}),
            "experiment.template_id",
        ),
        (
            json!({"name": "X", "template_id": "control", "experiment": {"template_id": "challenger", "weight": 0}}),
            "experiment.weight",
        ),
        (
            json!({"name": "X", "template_id": "control", "experiment": {"template_id": "challenger", "weight": 100}}),
            "experiment.weight",
        ),
    ] {
        server
            .post("/v1/brands", &tenant.key, body)
            .await
            .invalid_field(field);
    }
    server
        .delete("/v1/templates/challenger", &tenant.key)
        .await
        .error(409, "template_in_use");
}
