//! What messaging and lookup adapters share: the host services they may call ([`host`])
//! and the HTTP request and response types with small builders and readers.
//!
//! Both adapter worlds import the same interfaces, and the SDK has one set of types for
//! the whole contract: an [`HttpRequest`] built here works with
//! [`messaging`](crate::messaging) and [`lookup`](crate::lookup) alike.
//!
//! ```no_run
//! use dialgate_sdk::adapter::{host, HttpRequest};
//!
//! let token = host::secret("api_token").unwrap_or_default();
//! let request = HttpRequest::post_json("https://api.example.com/v1/lookup", r#"{"n":"+1"}"#)
//!     .with_bearer_token(&token);
//! match host::send(&request) {
//!     Ok(response) if response.is_success() => host::log(host::Level::Info, &response.text()),
//!     Ok(response) => host::log(host::Level::Warn, &format!("HTTP {}", response.status)),
//!     Err(err) => host::log(host::Level::Error, &err.describe()),
//! }
//! ```

use crate::http;

pub use crate::contract::http_client::HttpError;
pub use crate::contract::types::{HttpRequest, HttpResponse, PluginError};

/// Host services an adapter may use: the log, the clock, the tenant's configuration
/// and secrets, and outbound HTTP to the hosts the tenant granted (in native builds,
/// the stand-ins of [`crate::testing`]).
pub mod host {
    pub use crate::contract::log::Level;
    pub use crate::services::{config, log, now_millis, secret, send, HttpError};

    /// The configuration value for `key`, or a message naming the missing key (for a
    /// `bad-config` error). Blank values count as missing.
    pub fn required_config(key: &str) -> Result<String, String> {
        super::required(key, config(key), "configuration")
    }

    /// The secret for `key`, or a message naming the missing key (for a `bad-config`
    /// error). Blank values count as missing.
    pub fn required_secret(key: &str) -> Result<String, String> {
        super::required(key, secret(key), "secret")
    }
}

fn required(key: &str, value: Option<String>, kind: &str) -> Result<String, String> {
    match value {
        Some(value) if !value.trim().is_empty() => Ok(value),
        _ => Err(format!("missing {kind} `{key}`")),
    }
}

impl HttpRequest {
    /// A request with `method` to the absolute `url`, with no headers and no body.
    pub fn new(method: &str, url: impl Into<String>) -> Self {
        Self {
            method: method.to_owned(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `POST` of `fields`, form-encoded (`application/x-www-form-urlencoded`).
    pub fn post_form<K, V>(url: impl Into<String>, fields: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut request =
            Self::new("POST", url).with_header("Content-Type", "application/x-www-form-urlencoded");
        request.body = http::form_encode(fields).into_bytes();
        request
    }

    /// A `POST` of the JSON text `body` (`application/json`).
    pub fn post_json(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        let mut request = Self::new("POST", url)
            .with_header("Content-Type", "application/json")
            .with_header("Accept", "application/json");
        request.body = body.into();
        request
    }

    /// The request with header `name: value` added after the others.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The request with HTTP Basic authentication of `user` with `password`.
    pub fn with_basic_auth(self, user: &str, password: &str) -> Self {
        self.with_header("Authorization", &http::basic_auth(user, password))
    }

    /// The request with a Bearer `token`.
    pub fn with_bearer_token(self, token: &str) -> Self {
        self.with_header("Authorization", &http::bearer(token))
    }

    /// The first value of header `name`, compared without regard to case.
    pub fn header(&self, name: &str) -> Option<&str> {
        http::header(&self.headers, name)
    }

    /// The body decoded as a form (whatever the `Content-Type` says).
    pub fn form(&self) -> Vec<(String, String)> {
        http::form_decode(&self.body)
    }

    /// Whether the `Content-Type` header names `media_type`, e.g. `application/json`.
    pub fn has_content_type(&self, media_type: &str) -> bool {
        self.header("content-type")
            .is_some_and(|value| http::is_media_type(value, media_type))
    }

    /// The body as text, with invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl HttpResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of header `name`, compared without regard to case.
    pub fn header(&self, name: &str) -> Option<&str> {
        http::header(&self.headers, name)
    }

    /// The body as text, with invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl HttpError {
    /// A sentence naming why the request produced no response.
    pub fn describe(&self) -> String {
        match self {
            HttpError::NotGranted(host) => {
                format!("outbound HTTP to {host} is not granted to this plugin")
            }
            HttpError::BadUrl(url) => format!("not an absolute http(s) URL: {url}"),
            HttpError::Timeout => "no response within the host's deadline".to_owned(),
            HttpError::Connection(reason) => format!("connection failed: {reason}"),
            HttpError::ResponseTooLarge => {
                "the response was larger than the host allows".to_owned()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_posts_are_encoded_and_typed() {
        let request = HttpRequest::post_form("https://sms.example/send", [("To", "+1 415")])
            .with_basic_auth("user", "pass");
        assert_eq!(request.method, "POST");
        assert_eq!(request.body, b"To=%2B1+415");
        assert!(request.has_content_type("application/x-www-form-urlencoded"));
        assert_eq!(request.header("authorization"), Some("Basic dXNlcjpwYXNz"));
        assert_eq!(request.form(), [("To".to_owned(), "+1 415".to_owned())]);
    }

    #[test]
    fn json_posts_carry_the_body_and_a_bearer_token() {
        let request =
            HttpRequest::post_json("https://api.example/x", r#"{"a":1}"#).with_bearer_token("t");
        assert!(request.has_content_type("application/json"));
        assert_eq!(request.text(), r#"{"a":1}"#);
        assert_eq!(request.header("Authorization"), Some("Bearer t"));
    }

    #[test]
    fn responses_read_status_headers_and_text() {
        let response = HttpResponse {
            status: 201,
            headers: vec![("X-Id".to_owned(), "7".to_owned())],
            body: b"ok".to_vec(),
        };
        assert!(response.is_success());
        assert_eq!(response.header("x-id"), Some("7"));
        assert_eq!(response.text(), "ok");
        assert!(!HttpResponse {
            status: 302,
            ..response
        }
        .is_success());
    }

    #[test]
    fn missing_or_blank_settings_name_the_key() {
        assert_eq!(
            required("k", Some("v".to_owned()), "secret"),
            Ok("v".to_owned())
        );
        assert_eq!(
            required("sender", Some("  ".to_owned()), "configuration"),
            Err("missing configuration `sender`".to_owned())
        );
        assert_eq!(
            required("token", None, "secret"),
            Err("missing secret `token`".to_owned())
        );
    }

    #[test]
    fn http_errors_are_described() {
        assert!(HttpError::NotGranted("api.example".to_owned())
            .describe()
            .contains("api.example"));
        assert!(HttpError::Timeout.describe().contains("deadline"));
    }
}
