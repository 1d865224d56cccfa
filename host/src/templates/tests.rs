//! Unit tests of templates: placeholder parsing and its refusals, variant checks,
//! locale and app-hash validation, the order in which a send's variant is chosen, and
//! rendering.

use super::*;

fn variant(locale: &str, channel: Channel, text: &str) -> Variant {
    Variant {
        locale: locale.into(),
        channel,
        text: text.into(),
    }
}

fn values<'a>() -> Values<'a> {
    Values {
        code: "482913",
        brand: Some("Acme"),
        expiry_minutes: 10,
        app_hash: Some("FA+9qCX9VSu"),
    }
}

fn rendered(text: &str) -> String {
    render(&parse(text).expect("parses"), &values()).expect("renders")
}

#[test]
fn placeholders_and_escaped_braces_parse() {
    assert_eq!(
        parse("{brand}: {code} ({expiry_minutes} min)").expect("parses"),
        vec![
            Piece::Slot(Placeholder::Brand),
            Piece::Text(": ".into()),
            Piece::Slot(Placeholder::Code),
            Piece::Text(" (".into()),
            Piece::Slot(Placeholder::ExpiryMinutes),
            Piece::Text(" min)".into()),
        ]
    );
    // Doubled braces are literal, so `{{code}}` is text, not a placeholder.
    assert_eq!(
        parse("{{code}} is {code}").expect("parses"),
        vec![
            Piece::Text("{code} is ".into()),
            Piece::Slot(Placeholder::Code)
        ]
    );
    assert_eq!(rendered("Код {code}: {{ok}}"), "Код 482913: {ok}");
    assert_eq!(parse("").expect("parses"), vec![]);
}

#[test]
fn unknown_placeholders_and_unbalanced_braces_are_named() {
    let err = parse("Your {codes} are here").expect_err("unknown");
    assert_eq!(err.placeholder, "{codes}");
    assert!(
        err.message.contains("unknown placeholder {codes}"),
        "{err:?}"
    );
    assert!(err.message.contains("{expiry_minutes}"), "{err:?}");
    assert_eq!(parse("{}").expect_err("empty").placeholder, "{}");
    assert_eq!(
        parse("{ code }").expect_err("spaces").placeholder,
        "{ code }"
    );
    // A `{` never closed, or closed only after another `{`.
    let open = parse("code {code").expect_err("unclosed");
    assert_eq!(open.placeholder, "{");
    assert!(open.message.contains("character 6"), "{open:?}");
    assert_eq!(parse("{co{code}").expect_err("nested").placeholder, "{");
    let close = parse("{code} }").expect_err("stray close");
    assert_eq!(close.placeholder, "}");
    assert!(close.message.contains("character 8"), "{close:?}");
    // Positions count characters, not bytes.
    assert!(parse("Код } {code}")
        .expect_err("stray")
        .message
        .contains("character 5"));
}

#[test]
fn every_placeholder_renders() {
    assert_eq!(
        rendered("{brand}: {code}, {expiry_minutes} min\n{app_hash}"),
        "Acme: 482913, 10 min\nFA+9qCX9VSu"
    );
    let pieces = parse("{brand} {code}").expect("parses");
    let no_brand = Values {
        brand: None,
        ..values()
    };
    assert_eq!(render(&pieces, &no_brand), Err(Placeholder::Brand));
    let pieces = parse("{code}\n{app_hash}").expect("parses");
    let no_hash = Values {
        app_hash: None,
        ..values()
    };
    assert_eq!(render(&pieces, &no_hash), Err(Placeholder::AppHash));
    // A text without those placeholders needs neither.
    let plain = parse("{code}").expect("parses");
    let bare = Values {
        brand: None,
        app_hash: None,
        ..values()
    };
    assert_eq!(render(&plain, &bare).expect("renders"), "482913");
}

#[test]
fn a_variant_needs_the_code_and_fits_its_channel() {
    assert!(check_text("en", Channel::Sms, "Your code is {code}").is_ok());
    let missing = check_text("ru", Channel::Sms, "Ваш код").expect_err("no code");
    assert!(missing.starts_with("the ru sms variant"), "{missing}");
    assert!(missing.contains("{code}"), "{missing}");
    let blank = check_text("en", Channel::Voice, "  ").expect_err("blank");
    assert!(blank.contains("empty"), "{blank}");
    let unknown = check_text("de", Channel::Whatsapp, "{code} {kode}").expect_err("unknown");
    assert!(
        unknown.starts_with("the de whatsapp variant") && unknown.contains("{kode}"),
        "{unknown}"
    );
    // 480 characters on SMS, counted as characters: Cyrillic is not counted in bytes.
    let at_limit = format!("{{code}}{}", "ж".repeat(MAX_SMS_TEXT - 6));
    assert!(check_text("ru", Channel::Sms, &at_limit).is_ok());
    let over = format!("{at_limit}ж");
    let long = check_text("ru", Channel::Sms, &over).expect_err("too long");
    assert!(
        long.contains("481 characters") && long.contains("at most 480"),
        "{long}"
    );
    // Other channels allow more.
    assert!(check_text("ru", Channel::Telegram, &over).is_ok());
    let very = format!("{{code}}{}", "a".repeat(MAX_TEXT));
    assert!(check_text("en", Channel::Telegram, &very).is_err());
}

#[test]
fn an_sms_app_hash_must_end_the_text_on_its_own_line() {
    assert!(check_text("en", Channel::Sms, "Code: {code}\n{app_hash}").is_ok());
    for bad in [
        "Code: {code} {app_hash}",
        "{app_hash}\nCode: {code}",
        "Code: {code}\n{app_hash}\n",
        "Code: {code}\n{app_hash} ",
        "{code}\n{app_hash}\n{app_hash}",
        "{app_hash}{code}",
    ] {
        let err = check_text("en", Channel::Sms, bad).expect_err(bad);
        assert!(
            err.contains("{app_hash}") && err.contains("last line"),
            "{bad}: {err}"
        );
    }
    // The SMS Retriever rule is an SMS rule: other channels may place it anywhere.
    assert!(check_text("en", Channel::Whatsapp, "{app_hash} {code}").is_ok());
    // The rendered SMS ends with the hash on its own line.
    let text = rendered("Acme code: {code}\n{app_hash}");
    assert_eq!(text.lines().last(), Some("FA+9qCX9VSu"));
    assert!(text.ends_with("\nFA+9qCX9VSu"), "{text:?}");
}

#[test]
fn locales_normalise_to_language_and_region() {
    let ok = |tag: &str| normalise_locale(tag, "locale").expect(tag);
    assert_eq!(ok("pt-BR"), "pt-br");
    assert_eq!(ok("PT_br"), "pt-br");
    assert_eq!(ok("ru"), "ru");
    assert_eq!(ok("tlh"), "tlh");
    assert_eq!(ok("es-419"), "es-419");
    for bad in [
        "",
        "p",
        "portuguese",
        "pt-",
        "pt-B",
        "pt-BRA",
        "zh-Hant",
        "zh-Hant-TW",
        "en-US-x-y",
        "e1",
        "pt-12",
        "ру",
    ] {
        let err = normalise_locale(bad, "variants[0].locale").expect_err(bad);
        assert_eq!(err.field, "variants[0].locale", "{bad}");
    }
    assert_eq!(primary("pt-br"), "pt");
    assert_eq!(primary("uz"), "uz");
}

#[test]
fn app_hashes_are_eleven_base64_characters() {
    for good in ["FA+9qCX9VSu", "abcdefghijk", "A1_-/+zZ09x"] {
        assert!(check_app_hash(good, "app_hash").is_ok(), "{good}");
    }
    for bad in [
        "FA+9qCX9VS",
        "FA+9qCX9VSuu",
        "FA+9qCX9VS=",
        "FA 9qCX9VSu",
        "FA+9qCX9VSé",
        "",
    ] {
        assert_eq!(
            check_app_hash(bad, "app_hash").expect_err(bad).field,
            "app_hash"
        );
    }
}

#[test]
fn ids_and_names() {
    assert!(check_id("login-otp_v2.1", "id").is_ok());
    for bad in ["", "has space", "slash/", &"x".repeat(65), "ключ"] {
        assert_eq!(check_id(bad, "id").expect_err(bad).field, "id");
    }
    assert_eq!(check_name("  Acme  ", "name").expect("name"), "Acme");
    assert!(check_name(" ", "name").is_err());
    assert!(check_name("a\u{7}b", "name").is_err());
    assert!(check_name(&"n".repeat(MAX_NAME + 1), "name").is_err());
}

fn body(variants: Vec<(&str, Channel, &str)>) -> TemplateBody {
    TemplateBody {
        id: None,
        name: "Login".into(),
        variants: variants
            .into_iter()
            .map(|(locale, channel, text)| VariantBody {
                locale: locale.into(),
                channel,
                text: text.into(),
            })
            .collect(),
    }
}

#[test]
fn a_template_refusal_names_the_variant() {
    let refused = |body: TemplateBody| template_definition(&body, None).expect_err("refused");
    let err = refused(body(vec![
        ("en", Channel::Sms, "{code}"),
        ("ru", Channel::Sms, "{code} {brnd}"),
    ]));
    assert_eq!(err.field, "variants[1].text");
    assert!(
        err.message.contains("ru sms") && err.message.contains("{brnd}"),
        "{err:?}"
    );
    let err = refused(body(vec![
        ("en", Channel::Sms, "{code}"),
        ("EN", Channel::Sms, "{code}!"),
    ]));
    assert_eq!(err.field, "variants[1]");
    let err = refused(body(vec![
        ("en_US", Channel::Sms, "{code}"),
        ("en-us", Channel::Sms, "x {code}"),
    ]));
    assert_eq!(err.field, "variants[1]");
    assert_eq!(refused(body(vec![])).field, "variants");
    let many = (0..=MAX_VARIANTS)
        .map(|n| (if n % 2 == 0 { "en" } else { "ru" }, Channel::Sms, "{code}"))
        .collect();
    assert_eq!(refused(body(many)).field, "variants");
    let err = refused(body(vec![("english", Channel::Sms, "{code}")]));
    assert_eq!(err.field, "variants[0].locale");
    let mut named = body(vec![("en", Channel::Sms, "{code}")]);
    named.name = " ".into();
    assert_eq!(refused(named).field, "name");

    // The same locale on two channels is two variants; locales come back normalised.
    let (id, name, variants) = template_definition(
        &body(vec![
            ("pt-BR", Channel::Sms, "{code}"),
            ("pt-br", Channel::Voice, "{code}"),
        ]),
        None,
    )
    .expect("valid");
    assert_eq!((id, name.as_str()), (None, "Login"));
    assert_eq!(variants[0].locale, "pt-br");
    assert_eq!(variants[1].channel, Channel::Voice);
}

#[test]
fn a_put_body_may_repeat_its_path_id_only() {
    let mut template = body(vec![("en", Channel::Sms, "{code}")]);
    template.id = Some("login".into());
    assert_eq!(
        template_definition(&template, Some("login"))
            .expect("same")
            .0,
        Some("login".into())
    );
    assert_eq!(
        template_definition(&template, Some("other"))
            .expect_err("differs")
            .field,
        "id"
    );
    template.id = Some("bad id".into());
    assert_eq!(
        template_definition(&template, None).expect_err("bad").field,
        "id"
    );
    let brand = BrandBody {
        id: None,
        name: "Acme".into(),
        app_hash: Some("short".into()),
        template_id: None,
        experiment: None,
    };
    assert_eq!(
        brand_definition(&brand, None).expect_err("hash").field,
        "app_hash"
    );
    let brand = BrandBody {
        app_hash: None,
        template_id: Some("no such/id".into()),
        ..brand
    };
    assert_eq!(
        brand_definition(&brand, None).expect_err("template").field,
        "template_id"
    );
}

#[test]
fn the_variant_is_chosen_exact_then_language_then_region_then_english() {
    let all = vec![
        variant("en", Channel::Sms, "en sms"),
        variant("en-gb", Channel::Sms, "en-gb sms"),
        variant("pt", Channel::Sms, "pt sms"),
        variant("pt-br", Channel::Sms, "pt-br sms"),
        variant("es-mx", Channel::Sms, "es-mx sms"),
        variant("ru", Channel::Voice, "ru voice"),
        variant("fr-ca", Channel::Voice, "fr-ca voice"),
        variant("fr-fr", Channel::Voice, "fr-fr voice"),
    ];
    let pick = |locale: &str, channel: Channel| {
        choose(&all, locale, channel).map(|variant| variant.text.as_str())
    };
    // 1. The exact locale.
    assert_eq!(pick("pt-br", Channel::Sms), Some("pt-br sms"));
    assert_eq!(pick("en-gb", Channel::Sms), Some("en-gb sms"));
    // 2. Its language alone.
    assert_eq!(pick("pt-pt", Channel::Sms), Some("pt sms"));
    assert_eq!(pick("pt", Channel::Sms), Some("pt sms"));
    // 3. The language in another region, the first listed.
    assert_eq!(pick("es", Channel::Sms), Some("es-mx sms"));
    assert_eq!(pick("fr-be", Channel::Voice), Some("fr-ca voice"));
    // 4. English, by the same steps (`en` before `en-gb`).
    assert_eq!(pick("ru", Channel::Sms), Some("en sms"));
    assert_eq!(pick("uz-uz", Channel::Sms), Some("en sms"));
    // The channel must match: no voice variant in English, so none at all.
    assert_eq!(pick("ru", Channel::Voice), Some("ru voice"));
    assert_eq!(pick("de", Channel::Voice), None);
    assert_eq!(pick("en", Channel::Whatsapp), None);
    // Only a regional English: still English before the built-in text.
    let regional = vec![variant("en-gb", Channel::Sms, "en-gb sms")];
    assert_eq!(
        choose(&regional, "de", Channel::Sms).map(|v| v.text.as_str()),
        Some("en-gb sms")
    );
    assert_eq!(choose(&[], "en", Channel::Sms), None);
}
