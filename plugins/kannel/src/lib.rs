//! `kannel`: a messaging adapter that delivers codes by SMS through a Kannel gateway
//! (its smsbox's `sendsms` HTTP interface) and turns Kannel's delivery reports into
//! delivery updates.
//!
//! Sending is `GET {base_url}?username=&password=&from=&to=&text=` with, when a callback
//! URL is configured, `dlr-mask` and `dlr-url`, and `smsc` when set. Text that is ASCII
//! goes as it is; text in GSM 03.38 with characters outside ASCII adds
//! `charset=UTF-8`; anything else goes as UCS-2 (`coding=2&charset=UTF-8`). Kannel's
//! answer carries no message id, so the dispatch names the host's message id, which
//! the `dlr-url` carries back.
//!
//! The `dlr-url` is the host's `callback_url` with `&id=<message id>&type=%d&ts=%T&answer=%A`
//! appended: smsbox replaces `%d` with the report type, `%T` with its Unix time and `%A`
//! with the SMSC's answer. Every other `%` of the URL is doubled (`%%` is Kannel's
//! escape for a literal `%`), so percent-encoded bytes of the token or the id survive
//! Kannel's substitution; the whole URL is then percent-encoded as one query value.
//!
//! Configuration: `base_url` (the sendsms URL, e.g.
//! `http://127.0.0.1:13013/cgi-bin/sendsms`), `sender`, optional `smsc` (Kannel's
//! smsc-id to route through), optional `dlr_mask` (0 to 31, default 31; 0 asks for no
//! reports) and `callback_url` (the host's, ending with `?token=…`; without it no
//! reports are asked for). Secrets: `username` and `password` (a Kannel
//! `sendsms-user`). A missing or malformed setting is [`SendError::BadConfig`] naming
//! it.
//!
//! Answers: 2xx is a dispatch; 401 and 403 (Kannel's `Authorization failed`) are
//! [`SendError::BadConfig`]; other 4xx are [`SendError::Rejected`]; 5xx, other
//! statuses, a timeout or a failed connection are [`SendError::Unavailable`], so the
//! host may try another provider.
//!
//! Delivery reports arrive as `GET` (or `POST`, also with a form body) with `id`, `type`,
//! `ts` and `answer`: type 1 is delivered, 2 failed, 4 queued at the SMSC, 8 sent (the
//! SMSC accepted it), 16 failed (the SMSC refused it).

pub mod gsm;

use dialgate_sdk::http::{form_decode, form_encode};
use dialgate_sdk::messaging::{
    host, Channel, DeliveryStatus, DeliveryUpdate, Dispatch, HttpError, HttpRequest, HttpResponse,
    Message, MessagingAdapter, PluginError, SendError,
};

use gsm::Coding;

/// The report types Kannel sends when no `dlr_mask` is configured: all five.
pub const DEFAULT_DLR_MASK: u8 = 31;

/// The tenant's settings, read once per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// smsbox's sendsms URL.
    pub base_url: String,
    /// The sender number or name (`from`).
    pub sender: String,
    /// Kannel's smsc-id to route through, if any.
    pub smsc: Option<String>,
    /// The report types to ask for (Kannel's `dlr-mask`).
    pub dlr_mask: u8,
    /// Where Kannel should report deliveries, if anywhere.
    pub callback_url: Option<String>,
    /// The sendsms user.
    pub username: String,
    /// Its password.
    pub password: String,
}

impl Settings {
    /// Reads the settings through `config` and `secret` (the host's, or a test's).
    pub fn read(
        config: impl Fn(&str) -> Option<String>,
        secret: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SendError> {
        let required = |key: &str, value: Option<String>, kind: &str| match value {
            Some(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
            _ => Err(SendError::BadConfig(format!("missing {kind} `{key}`"))),
        };
        let optional = |key: &str| {
            config(key)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let base_url = required("base_url", config("base_url"), "configuration")?;
        if !is_http_url(&base_url) {
            return Err(SendError::BadConfig(format!(
                "configuration `base_url` must be an http(s) URL, not `{base_url}`"
            )));
        }
        let dlr_mask = match optional("dlr_mask") {
            None => DEFAULT_DLR_MASK,
            Some(text) => text
                .parse::<u8>()
                .ok()
                .filter(|mask| *mask <= 31)
                .ok_or_else(|| {
                    SendError::BadConfig(format!(
                        "configuration `dlr_mask` must be a number from 0 to 31, not `{text}`"
                    ))
                })?,
        };
        let callback_url = optional("callback_url");
        if let Some(url) = &callback_url {
            if !is_http_url(url) {
                return Err(SendError::BadConfig(format!(
                    "configuration `callback_url` must be an http(s) URL, not `{url}`"
                )));
            }
        }
        Ok(Settings {
            base_url,
            sender: required("sender", config("sender"), "configuration")?,
            smsc: optional("smsc"),
            dlr_mask,
            callback_url,
            username: required("username", secret("username"), "secret")?,
            password: required("password", secret("password"), "secret")?,
        })
    }
}

fn is_http_url(text: &str) -> bool {
    ["http://", "https://"].iter().any(|scheme| {
        text.get(..scheme.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(scheme))
            && text.len() > scheme.len()
    })
}

/// The `dlr-url` for the message `message_id`: `callback_url` with every `%` doubled
/// (Kannel's literal `%`), then `id`, and Kannel's escapes for the report's type, time
/// and the SMSC's answer.
pub fn dlr_url(callback_url: &str, message_id: &str) -> String {
    let separator = if callback_url.contains('?') { '&' } else { '?' };
    let id = form_encode([("id", message_id)]);
    format!(
        "{}{separator}{}&type=%d&ts=%T&answer=%A",
        callback_url.replace('%', "%%"),
        id.replace('%', "%%"),
    )
}

/// The sendsms request that delivers `message`.
pub fn build_request(settings: &Settings, message: &Message) -> Result<HttpRequest, SendError> {
    if message.channel != Channel::Sms {
        return Err(SendError::BadConfig(format!(
            "kannel delivers only SMS, but a {:?} message was routed to it",
            message.channel
        )));
    }
    let mut fields: Vec<(&str, String)> = vec![
        ("username", settings.username.clone()),
        ("password", settings.password.clone()),
        ("from", settings.sender.clone()),
        ("to", message.to.clone()),
        ("text", message.body.clone()),
    ];
    match gsm::coding(&message.body) {
        Coding::Ascii => {}
        Coding::Gsm => fields.push(("charset", "UTF-8".to_owned())),
        Coding::Ucs2 => {
            fields.push(("coding", "2".to_owned()));
            fields.push(("charset", "UTF-8".to_owned()));
        }
    }
    if let Some(smsc) = &settings.smsc {
        fields.push(("smsc", smsc.clone()));
    }
    if let Some(callback) = settings.callback_url.as_deref() {
        if settings.dlr_mask != 0 {
            fields.push(("dlr-mask", settings.dlr_mask.to_string()));
            fields.push(("dlr-url", dlr_url(callback, &message.id)));
        }
    }
    let separator = if settings.base_url.contains('?') {
        '&'
    } else {
        '?'
    };
    Ok(HttpRequest::new(
        "GET",
        format!("{}{separator}{}", settings.base_url, form_encode(fields)),
    ))
}

/// Kannel's answer to a sendsms request for `message`, as a dispatch (named by the
/// host's message id) or a send error.
pub fn parse_send_response(
    message: &Message,
    response: &HttpResponse,
) -> Result<Dispatch, SendError> {
    if response.is_success() {
        return Ok(Dispatch {
            provider_message_id: message.id.clone(),
            segments: Some(gsm::segments(&message.body)),
        });
    }
    let text = response.text();
    let detail = text.trim();
    let reason = if detail.is_empty() {
        format!("kannel answered HTTP {}", response.status)
    } else {
        let detail: String = detail.chars().take(200).collect();
        format!("kannel answered HTTP {}: {detail}", response.status)
    };
    Err(match response.status {
        401 | 403 => SendError::BadConfig(reason),
        400..=499 => SendError::Rejected(reason),
        _ => SendError::Unavailable(reason),
    })
}

/// The send error for a request that produced no response.
pub fn transport_error(err: &HttpError) -> SendError {
    match err {
        HttpError::NotGranted(_) | HttpError::BadUrl(_) => SendError::BadConfig(err.describe()),
        HttpError::Timeout | HttpError::Connection(_) | HttpError::ResponseTooLarge => {
            SendError::Unavailable(err.describe())
        }
    }
}

/// The update in a Kannel delivery report: the fields of its query string and, when it
/// has one, its form body.
pub fn parse_callback(request: &HttpRequest) -> Result<Vec<DeliveryUpdate>, PluginError> {
    let query = request.url.split_once('?').map_or("", |(_, query)| query);
    let mut fields = form_decode(query.as_bytes());
    fields.extend(request.form());
    let field = |name: &str| {
        fields
            .iter()
            .find(|(key, value)| key == name && !value.trim().is_empty())
            .map(|(_, value)| value.trim())
    };
    let (id, kind) = match (field("id"), field("type")) {
        (Some(id), Some(kind)) => (id, kind),
        (None, None) => return Err(bad_callback("kannel report without `id` and `type`")),
        (None, Some(_)) => return Err(bad_callback("kannel report without `id`")),
        (Some(_), None) => return Err(bad_callback("kannel report without `type`")),
    };
    let status = match kind {
        "1" => DeliveryStatus::Delivered,
        "2" | "16" => DeliveryStatus::Failed,
        "4" => DeliveryStatus::Queued,
        "8" => DeliveryStatus::Sent,
        other => {
            return Err(bad_callback(format!(
                "kannel report with unknown `type` `{other}` (expected 1, 2, 4, 8 or 16)"
            )))
        }
    };
    let at_millis = match field("ts") {
        None => None,
        Some(ts) => Some(
            ts.parse::<i64>()
                .ok()
                .and_then(|seconds| seconds.checked_mul(1000))
                .ok_or_else(|| {
                    bad_callback(format!(
                        "kannel report with a `ts` that is not Unix seconds: `{ts}`"
                    ))
                })?,
        ),
    };
    Ok(vec![DeliveryUpdate {
        provider_message_id: id.to_owned(),
        status,
        at_millis,
        reason: field("answer").map(str::to_owned),
    }])
}

/// A callback error with the code `bad-callback`.
fn bad_callback(message: impl Into<String>) -> PluginError {
    PluginError::new("bad-callback", message)
}

/// The adapter.
pub struct Kannel;

impl MessagingAdapter for Kannel {
    fn send_message(message: &Message) -> Result<Dispatch, SendError> {
        let settings = Settings::read(host::config, host::secret)?;
        let request = build_request(&settings, message)?;
        let response = host::send(&request).map_err(|err| transport_error(&err))?;
        parse_send_response(message, &response)
    }

    fn parse_callback(request: &HttpRequest) -> Result<Vec<DeliveryUpdate>, PluginError> {
        parse_callback(request)
    }
}

dialgate_sdk::register_messaging_adapter!(Kannel);

#[cfg(test)]
mod tests {
    use super::*;
    use dialgate_sdk::http::form_field;
    use dialgate_sdk::messaging::testing::{callback, message};

    const COMPLETE: &[(&str, &str)] = &[
        ("base_url", " http://127.0.0.1:13013/cgi-bin/sendsms "),
        ("sender", "Dialgate"),
        (
            "callback_url",
            "http://127.0.0.1:8080/v1/callbacks/prv_1?token=t%2Bk",
        ),
        ("username", "tester"),
        ("password", "s3cret&more"),
    ];

    fn settings_from(pairs: &[(&str, &str)]) -> Result<Settings, SendError> {
        let lookup = |key: &str| {
            pairs
                .iter()
                .find(|(name, _)| *name == key)
                .map(|(_, value)| (*value).to_owned())
        };
        Settings::read(lookup, lookup)
    }

    fn with(key: &'static str, value: &'static str) -> Vec<(&'static str, &'static str)> {
        let mut pairs: Vec<_> = COMPLETE
            .iter()
            .copied()
            .filter(|(k, _)| *k != key)
            .collect();
        pairs.push((key, value));
        pairs
    }

    /// The query fields of a request's URL, decoded.
    fn query(request: &HttpRequest) -> Vec<(String, String)> {
        let (_, query) = request.url.split_once('?').expect("a query");
        form_decode(query.as_bytes())
    }

    fn response(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("Content-Type".to_owned(), "text/html".to_owned())],
            body: body.as_bytes().to_vec(),
        }
    }

    fn get(url: &str) -> HttpRequest {
        HttpRequest::new("GET", url)
    }

    #[test]
    fn missing_settings_are_named() {
        for key in ["base_url", "sender", "username", "password"] {
            let without: Vec<_> = COMPLETE
                .iter()
                .copied()
                .filter(|(k, _)| *k != key)
                .collect();
            let err = settings_from(&without).expect_err("missing");
            assert!(
                matches!(&err, SendError::BadConfig(reason) if reason.contains(&format!("`{key}`"))),
                "{key}: {err:?}"
            );
            let err = settings_from(&with(key, "  ")).expect_err("blank");
            assert!(matches!(&err, SendError::BadConfig(reason) if reason.contains(key)));
        }
        let secret_in_config = |key: &str| (key == "username").then(|| "tester".to_owned());
        let err = Settings::read(
            |key| {
                COMPLETE
                    .iter()
                    .find(|(k, _)| *k == key && *k != "username" && *k != "password")
                    .map(|(_, v)| (*v).to_owned())
            },
            secret_in_config,
        )
        .expect_err("password is a secret");
        assert!(
            matches!(err, SendError::BadConfig(reason) if reason == "missing secret `password`")
        );
    }

    #[test]
    fn malformed_settings_are_refused() {
        for (key, value, expected) in [
            ("base_url", "127.0.0.1:13013/cgi-bin/sendsms", "http(s)"),
            ("base_url", "http://", "http(s)"),
            (
                "callback_url",
                "/v1/callbacks/prv_1?token=t",
                "callback_url",
            ),
            ("dlr_mask", "32", "0 to 31"),
            ("dlr_mask", "-1", "0 to 31"),
            ("dlr_mask", "all", "`all`"),
        ] {
            let err = settings_from(&with(key, value)).expect_err(value);
            assert!(
                matches!(&err, SendError::BadConfig(reason) if reason.contains(expected)),
                "{key}={value}: {err:?}"
            );
        }
    }

    #[test]
    fn settings_are_trimmed_and_defaulted() {
        let settings = settings_from(COMPLETE).expect("complete");
        assert_eq!(settings.base_url, "http://127.0.0.1:13013/cgi-bin/sendsms");
        assert_eq!(settings.dlr_mask, 31);
        assert_eq!(settings.smsc, None);
        let settings = settings_from(&with("dlr_mask", " 3 ")).expect("mask");
        assert_eq!(settings.dlr_mask, 3);
        assert!(settings_from(&with("base_url", "HTTPS://kannel.example/sendsms")).is_ok());
    }

    #[test]
    fn an_ascii_text_goes_plain_with_credentials_and_a_report_url() {
        let settings = settings_from(COMPLETE).expect("complete");
        let request = build_request(&settings, &message()).expect("sms");
        assert_eq!(request.method, "GET");
        assert!(request
            .url
            .starts_with("http://127.0.0.1:13013/cgi-bin/sendsms?username=tester&"));
        assert!(request.body.is_empty());
        let fields = query(&request);
        assert_eq!(form_field(&fields, "password"), Some("s3cret&more"));
        assert_eq!(form_field(&fields, "from"), Some("Dialgate"));
        assert_eq!(form_field(&fields, "to"), Some("+14155552671"));
        assert_eq!(
            form_field(&fields, "text"),
            Some("Your verification code is 123456")
        );
        assert_eq!(form_field(&fields, "coding"), None);
        assert_eq!(form_field(&fields, "charset"), None);
        assert_eq!(form_field(&fields, "smsc"), None);
        assert_eq!(form_field(&fields, "dlr-mask"), Some("31"));
        assert_eq!(
            form_field(&fields, "dlr-url"),
            Some(
                "http://127.0.0.1:8080/v1/callbacks/prv_1?token=t%%2Bk&id=message\
                 &type=%d&ts=%T&answer=%A"
            )
        );
        // The plus of the number and every % of the report URL are encoded for transport.
        assert!(request.url.contains("&to=%2B14155552671&"));
        assert!(request
            .url
            .contains("type%3D%25d%26ts%3D%25T%26answer%3D%25A"));
    }

    #[test]
    fn kannel_escapes_leave_the_callback_url_as_it_was() {
        // What smsbox does to a dlr-url: `%%` is a literal `%`, `%d`, `%T` and `%A`
        // become the report's values, any other escape stays as it is.
        fn substitute(pattern: &str, kind: &str, ts: &str, answer: &str) -> String {
            let mut out = String::new();
            let mut chars = pattern.chars();
            while let Some(ch) = chars.next() {
                if ch != '%' {
                    out.push(ch);
                    continue;
                }
                match chars.next() {
                    Some('%') => out.push('%'),
                    Some('d') => out.push_str(kind),
                    Some('T') => out.push_str(ts),
                    Some('A') => out.push_str(answer),
                    Some(other) => {
                        out.push('%');
                        out.push(other);
                    }
                    None => out.push('%'),
                }
            }
            out
        }
        let url = dlr_url("http://h/v1/callbacks/p?token=%C3%A9%2B%dA", "v-1 é/Δ&x=%A");
        let fetched = substitute(&url, "1", "1700000000", "ACK%2F");
        assert_eq!(
            fetched,
            "http://h/v1/callbacks/p?token=%C3%A9%2B%dA&id=v-1+%C3%A9%2F%CE%94%26x%3D%25A\
             &type=1&ts=1700000000&answer=ACK%2F"
        );
        let updates = parse_callback(&get(&fetched)).expect("parsed");
        assert_eq!(updates[0].provider_message_id, "v-1 é/Δ&x=%A");
        assert_eq!(updates[0].reason.as_deref(), Some("ACK/"));
        assert_eq!(
            dlr_url("http://h/cb", "m"),
            "http://h/cb?id=m&type=%d&ts=%T&answer=%A"
        );
    }

    #[test]
    fn gsm_and_other_texts_name_their_coding() {
        let settings = settings_from(COMPLETE).expect("complete");
        let mut german = message();
        german.body = "Ihr Bestätigungscode lautet 123456".to_owned();
        let fields = query(&build_request(&settings, &german).expect("sms"));
        assert_eq!(form_field(&fields, "charset"), Some("UTF-8"));
        assert_eq!(form_field(&fields, "coding"), None);
        assert_eq!(form_field(&fields, "text"), Some(german.body.as_str()));

        let mut russian = message();
        russian.body = "Ваш код подтверждения: 123456".to_owned();
        russian.language = "ru".to_owned();
        let fields = query(&build_request(&settings, &russian).expect("sms"));
        assert_eq!(form_field(&fields, "coding"), Some("2"));
        assert_eq!(form_field(&fields, "charset"), Some("UTF-8"));
        assert_eq!(form_field(&fields, "text"), Some(russian.body.as_str()));
    }

    #[test]
    fn routing_masks_and_missing_callbacks_shape_the_request() {
        let settings = settings_from(&with("smsc", "operator-a")).expect("smsc");
        let fields = query(&build_request(&settings, &message()).expect("sms"));
        assert_eq!(form_field(&fields, "smsc"), Some("operator-a"));

        let settings = settings_from(&with("dlr_mask", "0")).expect("no reports");
        let fields = query(&build_request(&settings, &message()).expect("sms"));
        assert_eq!(form_field(&fields, "dlr-mask"), None);
        assert_eq!(form_field(&fields, "dlr-url"), None);

        let without: Vec<_> = COMPLETE
            .iter()
            .copied()
            .filter(|(k, _)| *k != "callback_url")
            .collect();
        let settings = settings_from(&without).expect("no callback");
        let fields = query(&build_request(&settings, &message()).expect("sms"));
        assert_eq!(form_field(&fields, "dlr-url"), None);

        let settings =
            settings_from(&with("base_url", "http://k/cgi-bin/sendsms?smsc=x")).expect("query");
        let request = build_request(&settings, &message()).expect("sms");
        assert!(request
            .url
            .starts_with("http://k/cgi-bin/sendsms?smsc=x&username=tester&"));
    }

    #[test]
    fn only_sms_is_delivered() {
        let settings = settings_from(COMPLETE).expect("complete");
        let mut voice = message();
        voice.channel = Channel::Voice;
        assert!(matches!(
            build_request(&settings, &voice),
            Err(SendError::BadConfig(reason)) if reason.contains("only SMS")
        ));
    }

    #[test]
    fn an_accepted_message_is_named_by_the_host_id() {
        for body in ["0: Accepted for delivery", "3: Queued for later delivery"] {
            let dispatch = parse_send_response(&message(), &response(202, body)).expect("sent");
            assert_eq!(dispatch.provider_message_id, "message");
            assert_eq!(dispatch.segments, Some(1));
        }
        let mut long = message();
        long.body = "Ваш код ".repeat(10);
        let dispatch = parse_send_response(&long, &response(200, "")).expect("sent");
        assert_eq!(dispatch.segments, Some(2));
    }

    #[test]
    fn refusals_are_classified() {
        let refusal = |status, body| parse_send_response(&message(), &response(status, body));
        assert!(matches!(
            refusal(403, "Authorization failed for sendsms"),
            Err(SendError::BadConfig(reason)) if reason == "kannel answered HTTP 403: Authorization failed for sendsms"
        ));
        assert!(
            matches!(refusal(401, ""), Err(SendError::BadConfig(reason)) if reason == "kannel answered HTTP 401")
        );
        assert!(matches!(
            refusal(400, "Missing receiver number"),
            Err(SendError::Rejected(reason)) if reason.contains("receiver")
        ));
        assert!(matches!(refusal(404, ""), Err(SendError::Rejected(_))));
        assert!(matches!(
            refusal(503, "Sending failed."),
            Err(SendError::Unavailable(_))
        ));
        assert!(matches!(refusal(500, ""), Err(SendError::Unavailable(_))));
        assert!(matches!(refusal(302, ""), Err(SendError::Unavailable(_))));
        assert!(matches!(
            transport_error(&HttpError::Connection("refused".to_owned())),
            SendError::Unavailable(reason) if reason.contains("refused")
        ));
        assert!(matches!(
            transport_error(&HttpError::Timeout),
            SendError::Unavailable(_)
        ));
        assert!(matches!(
            transport_error(&HttpError::NotGranted("kannel.example".to_owned())),
            SendError::BadConfig(reason) if reason.contains("kannel.example")
        ));
    }

    #[test]
    fn every_report_type_is_mapped() {
        for (kind, status) in [
            ("1", DeliveryStatus::Delivered),
            ("2", DeliveryStatus::Failed),
            ("4", DeliveryStatus::Queued),
            ("8", DeliveryStatus::Sent),
            ("16", DeliveryStatus::Failed),
        ] {
            let url =
                format!("/v1/callbacks/prv_1?token=t&id=m-1&type={kind}&ts=1700000000&answer=");
            let updates = parse_callback(&get(&url)).expect("parsed");
            assert_eq!(updates.len(), 1);
            assert_eq!(updates[0].provider_message_id, "m-1");
            assert_eq!(updates[0].status, status, "type {kind}");
            assert_eq!(updates[0].at_millis, Some(1_700_000_000_000));
            assert_eq!(updates[0].reason, None, "an empty answer is no reason");
        }
    }

    #[test]
    fn answers_and_form_bodies_are_read() {
        let updates = parse_callback(&get("/cb?id=m&type=16&answer=NACK%2F0x00000045%2FInvalid"))
            .expect("parsed");
        assert_eq!(updates[0].status, DeliveryStatus::Failed);
        assert_eq!(
            updates[0].reason.as_deref(),
            Some("NACK/0x00000045/Invalid")
        );
        assert_eq!(updates[0].at_millis, None);

        let mut post = callback("application/x-www-form-urlencoded", "id=m2&type=8&ts=1");
        post.url = "/v1/callbacks/prv_1?token=t".to_owned();
        let updates = parse_callback(&post).expect("parsed");
        assert_eq!(updates[0].provider_message_id, "m2");
        assert_eq!(updates[0].status, DeliveryStatus::Sent);
        assert_eq!(updates[0].at_millis, Some(1000));
    }

    #[test]
    fn odd_reports_are_errors_naming_what_is_wrong() {
        for (url, expected) in [
            ("/cb?token=t", "without `id` and `type`"),
            ("/cb", "without `id` and `type`"),
            ("/cb?type=1", "without `id`"),
            ("/cb?id=m&type=", "without `type`"),
            ("/cb?id=m&type=3", "unknown `type` `3`"),
            ("/cb?id=m&type=%d", "unknown `type` `%d`"),
            ("/cb?id=m&type=1&ts=yesterday", "`ts`"),
            ("/cb?id=m&type=1&ts=99999999999999999", "`ts`"),
        ] {
            let err = parse_callback(&get(url)).expect_err(url);
            assert_eq!(err.code, "bad-callback", "{url}");
            assert!(err.message.contains(expected), "{url}: {}", err.message);
        }
        let err = parse_callback(&get("/cb?type=1")).expect_err("no id");
        assert_eq!(err.message, "kannel report without `id`");
    }
}
