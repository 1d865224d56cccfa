//! `http-sms`: a messaging adapter that delivers codes by SMS through an HTTP gateway,
//! speaking one of two provider request shapes chosen by the configuration `shape`:
//!
//! - `twilio`: `POST {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json`, a form
//!   with `To`, `From`, `Body` and, when set, `StatusCallback`; HTTP Basic
//!   authentication with `account_sid` and the secret `auth_token`. Status callbacks
//!   are forms with `MessageSid`, `MessageStatus` and `ErrorCode`.
//! - `vonage`: `POST {base_url}/sms/json`, a form with `api_key`, the secret
//!   `api_secret`, `from`, `to` (E.164 without the `+`), `text` and, when set,
//!   `callback`. Delivery receipts are JSON, a form, or a query string with
//!   `messageId`, `status`, `err-code` and `message-timestamp`.
//!
//! Configuration: `shape`, `base_url` (e.g. `https://api.twilio.com`), `sender` (the
//! `From`/`from` number or name), optional `callback_url`, and `account_sid` (twilio)
//! or `api_key` (vonage). Secrets: `auth_token` (twilio) or `api_secret` (vonage). A
//! missing setting is [`SendError::BadConfig`] naming the key.
//!
//! Answers: 4xx other than 429 is [`SendError::Rejected`]; 429, 5xx, a timeout, a
//! failed connection, an oversized or unreadable answer is [`SendError::Unavailable`],
//! so the host may try another provider. A host that is not granted, or a base URL
//! that is not one, is [`SendError::BadConfig`]. Only the SMS channel is delivered;
//! a message on another channel is `BadConfig`, since routing it here is a setting.

pub mod twilio;
pub mod vonage;

use dialgate_sdk::messaging::{
    host, DeliveryUpdate, Dispatch, HttpError, HttpRequest, HttpResponse, Message,
    MessagingAdapter, PluginError, SendError,
};
use serde_json::Value;

/// The provider request shapes this adapter speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Twilio's Programmable Messaging API.
    Twilio,
    /// Vonage's (formerly Nexmo's) SMS API.
    Vonage,
}

impl Shape {
    /// The configuration spelling.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Twilio => "twilio",
            Shape::Vonage => "vonage",
        }
    }

    /// The shape named by the configuration value `name`.
    pub fn parse(name: Option<&str>) -> Result<Self, String> {
        match name.map(str::trim) {
            Some("twilio") => Ok(Shape::Twilio),
            Some("vonage") => Ok(Shape::Vonage),
            Some(other) => Err(format!(
                "configuration `shape` must be `twilio` or `vonage`, not `{other}`"
            )),
            None => Err("missing configuration `shape`".to_owned()),
        }
    }
}

/// The tenant's settings, read once per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The request shape.
    pub shape: Shape,
    /// The gateway's base URL, without a trailing `/`.
    pub base_url: String,
    /// The sender number or name.
    pub sender: String,
    /// Where the provider should post delivery updates, if anywhere.
    pub callback_url: Option<String>,
    /// `account_sid` (twilio) or `api_key` (vonage).
    pub account: String,
    /// The secret `auth_token` (twilio) or `api_secret` (vonage).
    pub secret: String,
}

impl Settings {
    /// Reads the settings through `config` and `secret` (the host's, or a test's).
    pub fn read(
        config: impl Fn(&str) -> Option<String>,
        secret: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SendError> {
        let shape = Shape::parse(config("shape").as_deref()).map_err(SendError::BadConfig)?;
        let required = |key: &str, value: Option<String>, kind: &str| match value {
            Some(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
            _ => Err(SendError::BadConfig(format!("missing {kind} `{key}`"))),
        };
        let (account_key, secret_key) = match shape {
            Shape::Twilio => ("account_sid", "auth_token"),
            Shape::Vonage => ("api_key", "api_secret"),
        };
        let base_url = required("base_url", config("base_url"), "configuration")?;
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(SendError::BadConfig(format!(
                "configuration `base_url` must be an http(s) URL, not `{base_url}`"
            )));
        }
        Ok(Settings {
            shape,
            base_url: base_url.trim_end_matches('/').to_owned(),
            sender: required("sender", config("sender"), "configuration")?,
            callback_url: config("callback_url")
                .map(|url| url.trim().to_owned())
                .filter(|url| !url.is_empty()),
            account: required(account_key, config(account_key), "configuration")?,
            secret: required(secret_key, secret(secret_key), "secret")?,
        })
    }
}

/// The provider request that delivers `message`.
pub fn build_request(settings: &Settings, message: &Message) -> Result<HttpRequest, SendError> {
    use dialgate_sdk::messaging::Channel;
    match (settings.shape, message.channel) {
        (Shape::Twilio, Channel::Sms | Channel::Whatsapp | Channel::Voice) => {
            Ok(twilio::request(settings, message))
        }
        (Shape::Vonage, Channel::Sms) => Ok(vonage::request(settings, message)),
        (shape, channel) => Err(SendError::BadConfig(format!(
            "the {} shape delivers {}, but a {channel:?} message was routed to it",
            shape.name(),
            match shape {
                Shape::Twilio => "SMS, WhatsApp and voice",
                Shape::Vonage => "only SMS",
            }
        ))),
    }
}

/// The provider's answer to a send request, as a dispatch or a send error.
pub fn parse_send_response(shape: Shape, response: &HttpResponse) -> Result<Dispatch, SendError> {
    match shape {
        Shape::Twilio => twilio::parse_response(response),
        Shape::Vonage => vonage::parse_response(response),
    }
}

/// The delivery updates in a provider callback of `shape`.
pub fn parse_callback(
    shape: Shape,
    request: &HttpRequest,
) -> Result<Vec<DeliveryUpdate>, PluginError> {
    match shape {
        Shape::Twilio => twilio::parse_callback(request),
        Shape::Vonage => vonage::parse_callback(request),
    }
}

/// The send error for an HTTP answer that is not a success: 4xx other than 429 is a
/// rejection, anything else a failing provider. `detail` is the provider's
/// explanation, if it gave one.
pub fn status_error(provider: &str, status: u16, detail: Option<String>) -> SendError {
    let reason = match detail {
        Some(detail) => format!("{provider} answered HTTP {status}: {detail}"),
        None => format!("{provider} answered HTTP {status}"),
    };
    match status {
        429 => SendError::Unavailable(reason),
        400..=499 => SendError::Rejected(reason),
        _ => SendError::Unavailable(reason),
    }
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

/// A callback error with the code `bad-callback`.
pub(crate) fn bad_callback(message: impl Into<String>) -> PluginError {
    PluginError::new("bad-callback", message)
}

/// A JSON value that providers send as a string or a number, as text.
pub(crate) fn text_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The first part of a provider's answer, for error messages.
pub(crate) fn snippet(response: &HttpResponse) -> Option<String> {
    let text = response.text();
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(text.chars().take(200).collect())
}

/// The adapter.
pub struct HttpSms;

impl MessagingAdapter for HttpSms {
    fn send_message(message: &Message) -> Result<Dispatch, SendError> {
        let settings = Settings::read(host::config, host::secret)?;
        let request = build_request(&settings, message)?;
        let response = host::send(&request).map_err(|err| transport_error(&err))?;
        parse_send_response(settings.shape, &response)
    }

    fn parse_callback(request: &HttpRequest) -> Result<Vec<DeliveryUpdate>, PluginError> {
        let shape = Shape::parse(host::config("shape").as_deref())
            .map_err(|message| PluginError::new("bad-config", message))?;
        parse_callback(shape, request)
    }
}

dialgate_sdk::register_messaging_adapter!(HttpSms);

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use dialgate_sdk::messaging::testing::message;
    use dialgate_sdk::messaging::Channel;

    /// Settings of `shape` read from `pairs` (config and secrets together).
    pub(crate) fn settings_from(pairs: &[(&str, &str)]) -> Result<Settings, SendError> {
        let lookup = |key: &str| {
            pairs
                .iter()
                .find(|(name, _)| *name == key)
                .map(|(_, value)| (*value).to_owned())
        };
        Settings::read(lookup, lookup)
    }

    pub(crate) fn response(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("Content-Type".to_owned(), "application/json".to_owned())],
            body: body.as_bytes().to_vec(),
        }
    }

    pub(crate) const TWILIO: &[(&str, &str)] = &[
        ("shape", "twilio"),
        ("base_url", "http://127.0.0.1:9000/"),
        ("sender", "+15005550006"),
        ("account_sid", "AC123"),
        ("auth_token", "tok"),
    ];

    pub(crate) const VONAGE: &[(&str, &str)] = &[
        ("shape", "vonage"),
        ("base_url", "https://rest.example"),
        ("sender", "Dialgate"),
        ("api_key", "key"),
        ("api_secret", "sec"),
        (
            "callback_url",
            "https://dialgate.example/v1/callbacks/vonage",
        ),
    ];

    #[test]
    fn settings_need_a_known_shape() {
        let err = settings_from(&[]).expect_err("no shape");
        assert!(matches!(err, SendError::BadConfig(reason) if reason.contains("`shape`")));
        let err = settings_from(&[("shape", "carrier-pigeon")]).expect_err("bad shape");
        assert!(matches!(err, SendError::BadConfig(reason) if reason.contains("carrier-pigeon")));
    }

    #[test]
    fn missing_settings_are_named() {
        for (shape, keys) in [
            (
                TWILIO,
                &["base_url", "sender", "account_sid", "auth_token"][..],
            ),
            (VONAGE, &["base_url", "sender", "api_key", "api_secret"][..]),
        ] {
            for key in keys {
                let without: Vec<(&str, &str)> =
                    shape.iter().copied().filter(|(k, _)| k != key).collect();
                let err = settings_from(&without).expect_err("missing");
                assert!(
                    matches!(&err, SendError::BadConfig(reason) if reason.contains(&format!("`{key}`"))),
                    "{key}: {err:?}"
                );
            }
        }
        let replaced = |key: &str, value: &'static str| -> Vec<(&str, &str)> {
            TWILIO
                .iter()
                .map(|&(k, v)| if k == key { (k, value) } else { (k, v) })
                .collect()
        };
        assert!(matches!(
            settings_from(&replaced("auth_token", "  ")),
            Err(SendError::BadConfig(reason)) if reason.contains("`auth_token`")
        ));
        assert!(matches!(
            settings_from(&replaced("base_url", "api.twilio.com")),
            Err(SendError::BadConfig(reason)) if reason.contains("http(s)")
        ));
    }

    #[test]
    fn settings_are_trimmed() {
        let settings = settings_from(TWILIO).expect("complete");
        assert_eq!(settings.base_url, "http://127.0.0.1:9000");
        assert_eq!(settings.callback_url, None);
        assert_eq!(settings.account, "AC123");
        assert_eq!(settings.secret, "tok");
    }

    #[test]
    fn twilio_carries_whatsapp_and_voice_and_vonage_only_sms() {
        let settings = settings_from(TWILIO).expect("complete");
        let mut whatsapp = message();
        whatsapp.channel = Channel::Whatsapp;
        let request = build_request(&settings, &whatsapp).expect("whatsapp");
        assert!(request.url.ends_with("/Messages.json"), "{}", request.url);
        let body = String::from_utf8(request.body.clone()).expect("utf-8");
        assert!(body.contains("To=whatsapp%3A%2B"), "{body}");
        assert!(body.contains("From=whatsapp%3A"), "{body}");
        let mut voice = message();
        voice.channel = Channel::Voice;
        let request = build_request(&settings, &voice).expect("voice");
        assert!(request.url.ends_with("/Calls.json"), "{}", request.url);
        let body = String::from_utf8(request.body).expect("utf-8");
        assert!(body.contains("Twiml="), "{body}");
        let mut telegram = message();
        telegram.channel = Channel::Telegram;
        assert!(matches!(
            build_request(&settings, &telegram),
            Err(SendError::BadConfig(reason)) if reason.contains("WhatsApp")
        ));
        let vonage = settings_from(VONAGE).expect("complete");
        assert!(matches!(
            build_request(&vonage, &whatsapp),
            Err(SendError::BadConfig(reason)) if reason.contains("only SMS")
        ));
    }

    #[test]
    fn answers_and_transport_failures_are_classified() {
        assert!(matches!(
            status_error("x", 400, None),
            SendError::Rejected(_)
        ));
        assert!(matches!(
            status_error("x", 404, None),
            SendError::Rejected(_)
        ));
        assert!(matches!(
            status_error("x", 429, None),
            SendError::Unavailable(_)
        ));
        assert!(matches!(
            status_error("x", 503, None),
            SendError::Unavailable(_)
        ));
        assert!(matches!(
            status_error("x", 302, None),
            SendError::Unavailable(_)
        ));
        assert!(matches!(
            transport_error(&HttpError::Timeout),
            SendError::Unavailable(_)
        ));
        assert!(matches!(
            transport_error(&HttpError::Connection("refused".to_owned())),
            SendError::Unavailable(reason) if reason.contains("refused")
        ));
        assert!(matches!(
            transport_error(&HttpError::NotGranted("api.twilio.com".to_owned())),
            SendError::BadConfig(reason) if reason.contains("api.twilio.com")
        ));
    }
}
