//! `camara-lookup`: a lookup adapter that asks a mobile operator's CAMARA SIM Swap API
//! when the SIM card behind a number last changed.
//!
//! Configuration: `base_url` (required; the operator's API root, e.g.
//! `https://api.operator.example` or `http://127.0.0.1:8080`) and `max_age_hours` (1 to
//! 2400, default 240: the period the fallback check asks about). Secret: `access_token`,
//! sent as `Authorization: Bearer …` when set. The adapter uses two-legged tokens: the
//! number is always sent as `phoneNumber`.
//!
//! A lookup first posts `{"phoneNumber": …}` to `{base_url}/sim-swap/v2/retrieve-date`.
//! A `latestSimChange` date (RFC 3339; with no swap on record some operators answer the
//! SIM's activation, which the API counts as a change too) becomes
//! `last-sim-change-millis`. When the operator answers `null` (it keeps no date for
//! that long; a `monitoredPeriod` then says no swap happened within that many days),
//! leaves the date out, or does not offer the operation (404 `NOT_FOUND`, or 501), the
//! adapter falls back to `{base_url}/sim-swap/v2/check` with `{"phoneNumber", "maxAge"}`.
//! That answers only whether a swap happened within `maxAge` hours, not when, so the
//! adapter reports no date either way and writes the answer to the log: reporting
//! `now - maxAge` (or any other point in the window) would be a guess, and the host
//! treats every reported value as known. `last-sim-change-millis` is the only field the
//! SIM Swap API can fill; the others stay absent.
//!
//! CAMARA's Number Recycling API is not used. It answers whether the subscriber changed
//! after a `specifiedDate` that the caller must supply (the date it last trusted the
//! number), which a lookup of a bare number does not have, and its answer fits no field
//! of the `intelligence` record (`line-status` is about the line being active, not about
//! who holds it).
//!
//! Errors: a CAMARA error body (`{status, code, message}`) becomes a plugin error with
//! the CAMARA `code` (e.g. `PERMISSION_DENIED`, `IDENTIFIER_NOT_FOUND`); an error status
//! without one, `http-status`; an unreadable success, `bad-response`; a request that got
//! no response (host not granted, timeout, connection failure…), `http`; bad settings,
//! `bad-config`.

use chrono::DateTime;
use dialgate_sdk::lookup::host::{self, Level};
use dialgate_sdk::lookup::{
    HttpError, HttpRequest, HttpResponse, Intelligence, LookupAdapter, PluginError,
};
use serde::{Deserialize, Serialize};

/// The SIM Swap API's path below `base_url`.
pub const SIM_SWAP_PATH: &str = "/sim-swap/v2";
/// The fallback check's period when the tenant sets nothing, in hours (the API's
/// default too).
const DEFAULT_MAX_AGE_HOURS: u32 = 240;
/// The longest period the API accepts, in hours.
const MAX_MAX_AGE_HOURS: u32 = 2400;

/// The tenant's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The operator's API root, without a trailing `/`.
    pub base_url: String,
    /// The fallback check's period, in hours.
    pub max_age_hours: u32,
    /// The Bearer token, if any.
    pub access_token: Option<String>,
}

impl Settings {
    /// Reads the settings through `config` and `secret` (the host's, or a test's).
    pub fn read(
        config: impl Fn(&str) -> Option<String>,
        secret: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, PluginError> {
        let bad = |message: String| PluginError::new("bad-config", message);
        let base_url = config("base_url")
            .map(|url| url.trim().trim_end_matches('/').to_owned())
            .filter(|url| !url.is_empty())
            .ok_or_else(|| bad("missing configuration `base_url`".to_owned()))?;
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(bad(format!(
                "configuration `base_url` must be an http(s) URL, not `{base_url}`"
            )));
        }
        let max_age_hours = match config("max_age_hours") {
            None => DEFAULT_MAX_AGE_HOURS,
            Some(text) => text
                .trim()
                .parse()
                .ok()
                .filter(|hours| (1..=MAX_MAX_AGE_HOURS).contains(hours))
                .ok_or_else(|| {
                    bad(format!(
                        "configuration `max_age_hours` must be a whole number from 1 to {MAX_MAX_AGE_HOURS}"
                    ))
                })?,
        };
        let access_token = secret("access_token")
            .map(|token| token.trim().to_owned())
            .filter(|token| !token.is_empty());
        Ok(Settings {
            base_url,
            max_age_hours,
            access_token,
        })
    }

    fn post(&self, operation: &str, body: String) -> HttpRequest {
        let url = format!("{}{SIM_SWAP_PATH}/{operation}", self.base_url);
        let request = HttpRequest::post_json(url, body);
        match &self.access_token {
            Some(token) => request.with_bearer_token(token),
            None => request,
        }
    }
}

/// `CreateSimSwapDate`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateSimSwapDate<'a> {
    phone_number: &'a str,
}

/// `CreateCheckSimSwap`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateCheckSimSwap<'a> {
    phone_number: &'a str,
    max_age: u32,
}

/// `SimSwapInfo`. `latestSimChange` is required but nullable; a missing one is read
/// as `null`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SimSwapInfo {
    #[serde(default)]
    latest_sim_change: Option<String>,
    #[serde(default)]
    monitored_period: Option<u32>,
}

/// `CheckSimSwapInfo`.
#[derive(Deserialize)]
struct CheckSimSwapInfo {
    swapped: bool,
}

/// `ErrorInfo`.
#[derive(Deserialize)]
struct ErrorInfo {
    code: String,
    message: String,
}

/// The `retrieve-date` request for `number`.
pub fn retrieve_date_request(settings: &Settings, number: &str) -> HttpRequest {
    let body = CreateSimSwapDate {
        phone_number: number,
    };
    settings.post("retrieve-date", json(&body))
}

/// The `check` request for `number` over the configured period.
pub fn check_request(settings: &Settings, number: &str) -> HttpRequest {
    let body = CreateCheckSimSwap {
        phone_number: number,
        max_age: settings.max_age_hours,
    };
    settings.post("check", json(&body))
}

fn json(body: &impl Serialize) -> String {
    // Serialising these plain structs cannot fail.
    serde_json::to_string(body).unwrap_or_default()
}

/// What `retrieve-date` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetrieveDate {
    /// The last SIM change, in milliseconds since the Unix epoch.
    Changed(i64),
    /// No date: the operator keeps none for that long. With a monitored period, no
    /// swap happened within that many days.
    NoDate {
        /// `monitoredPeriod`, in days.
        monitored_period_days: Option<u32>,
    },
    /// The operator does not offer `retrieve-date` (404 `NOT_FOUND`, or 501).
    Unsupported,
}

/// Reads a `retrieve-date` answer.
pub fn parse_retrieve_date(response: &HttpResponse) -> Result<RetrieveDate, PluginError> {
    if !response.is_success() {
        let error = error_info(response);
        let unsupported = match response.status {
            501 => true,
            404 => error.as_ref().is_none_or(|info| info.code == "NOT_FOUND"),
            _ => false,
        };
        if unsupported {
            return Ok(RetrieveDate::Unsupported);
        }
        return Err(camara_error("retrieve-date", response.status, error));
    }
    let info: SimSwapInfo = serde_json::from_slice(&response.body)
        .map_err(|err| bad_response("retrieve-date", &err.to_string()))?;
    match info.latest_sim_change {
        Some(date) => DateTime::parse_from_rfc3339(date.trim())
            .map(|at| RetrieveDate::Changed(at.timestamp_millis()))
            .map_err(|err| {
                bad_response(
                    "retrieve-date",
                    &format!("`latestSimChange` {date:?} is not an RFC 3339 date-time: {err}"),
                )
            }),
        None => Ok(RetrieveDate::NoDate {
            monitored_period_days: info.monitored_period,
        }),
    }
}

/// Reads a `check` answer: whether the SIM changed within the period asked about.
pub fn parse_check(response: &HttpResponse) -> Result<bool, PluginError> {
    if !response.is_success() {
        return Err(camara_error("check", response.status, error_info(response)));
    }
    serde_json::from_slice::<CheckSimSwapInfo>(&response.body)
        .map(|info| info.swapped)
        .map_err(|err| bad_response("check", &err.to_string()))
}

fn error_info(response: &HttpResponse) -> Option<ErrorInfo> {
    serde_json::from_slice(&response.body).ok()
}

/// The plugin error for an error answer of `operation`: the CAMARA code when the body
/// is an `ErrorInfo`, else `http-status`.
fn camara_error(operation: &str, status: u16, error: Option<ErrorInfo>) -> PluginError {
    match error {
        Some(info) => PluginError::new(
            &info.code,
            format!(
                "sim-swap {operation} answered HTTP {status}: {}",
                info.message
            ),
        ),
        None => PluginError::new(
            "http-status",
            format!("sim-swap {operation} answered HTTP {status} without a CAMARA error body"),
        ),
    }
}

fn bad_response(operation: &str, detail: &str) -> PluginError {
    PluginError::new(
        "bad-response",
        format!("sim-swap {operation} answered unreadably: {detail}"),
    )
}

/// The plugin error for a request that got no response.
pub fn http_error(operation: &str, err: &HttpError) -> PluginError {
    PluginError::new("http", format!("sim-swap {operation}: {}", err.describe()))
}

/// Looks `number` up with `send` for outbound requests and `log` for the log: the
/// adapter's whole flow, with the host's services passed in so tests can stand in.
pub fn lookup_with(
    settings: &Settings,
    number: &str,
    mut send: impl FnMut(&HttpRequest) -> Result<HttpResponse, HttpError>,
    mut log: impl FnMut(Level, &str),
) -> Result<Intelligence, PluginError> {
    let mut intelligence = Intelligence::default();
    let response = send(&retrieve_date_request(settings, number))
        .map_err(|err| http_error("retrieve-date", &err))?;
    match parse_retrieve_date(&response)? {
        RetrieveDate::Changed(at_millis) => {
            intelligence.last_sim_change_millis = Some(at_millis);
            return Ok(intelligence);
        }
        RetrieveDate::NoDate {
            monitored_period_days,
        } => {
            let period = monitored_period_days
                .map(|days| format!(", and no swap within its monitored {days} days"))
                .unwrap_or_default();
            log(
                Level::Debug,
                &format!("sim-swap retrieve-date reported no date{period}; asking check"),
            );
        }
        RetrieveDate::Unsupported => log(
            Level::Debug,
            "sim-swap retrieve-date is not offered; asking check",
        ),
    }
    let response =
        send(&check_request(settings, number)).map_err(|err| http_error("check", &err))?;
    let hours = settings.max_age_hours;
    if parse_check(&response)? {
        log(
            Level::Info,
            &format!("sim-swap check: the SIM changed within the last {hours} hours; the date is unknown, so none is reported"),
        );
    } else {
        log(
            Level::Debug,
            &format!("sim-swap check: no SIM change within the last {hours} hours"),
        );
    }
    Ok(intelligence)
}

/// The adapter.
pub struct CamaraLookup;

impl LookupAdapter for CamaraLookup {
    fn lookup(number: &str) -> Result<Intelligence, PluginError> {
        let settings = Settings::read(host::config, host::secret)?;
        lookup_with(&settings, number, host::send, |level, message| {
            host::log(level, message)
        })
    }
}

dialgate_sdk::register_lookup_adapter!(CamaraLookup);

#[cfg(test)]
mod tests {
    use super::*;

    const NUMBER: &str = "+346661113334";

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, PluginError> {
        let lookup = |key: &str| {
            pairs
                .iter()
                .find(|(name, _)| *name == key)
                .map(|(_, value)| (*value).to_owned())
        };
        Settings::read(lookup, lookup)
    }

    fn local() -> Settings {
        settings(&[("base_url", "http://127.0.0.1:9091/")]).expect("valid")
    }

    fn response(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: body.as_bytes().to_vec(),
        }
    }

    fn body_json(request: &HttpRequest) -> serde_json::Value {
        serde_json::from_slice(&request.body).expect("JSON body")
    }

    #[test]
    fn settings_have_defaults_and_limits() {
        let defaults = local();
        assert_eq!(defaults.base_url, "http://127.0.0.1:9091");
        assert_eq!(defaults.max_age_hours, 240);
        assert_eq!(defaults.access_token, None);
        let full = settings(&[
            ("base_url", "https://api.operator.example/camara"),
            ("max_age_hours", "2400"),
            ("access_token", "t0k"),
        ])
        .expect("valid");
        assert_eq!(full.max_age_hours, 2400);
        assert_eq!(full.access_token.as_deref(), Some("t0k"));
        for bad in [
            vec![],
            vec![("base_url", " ")],
            vec![("base_url", "api.operator.example")],
            vec![("base_url", "http://x"), ("max_age_hours", "0")],
            vec![("base_url", "http://x"), ("max_age_hours", "2401")],
            vec![("base_url", "http://x"), ("max_age_hours", "ten")],
        ] {
            let err = settings(&bad).expect_err("bad");
            assert_eq!(err.code, "bad-config", "{bad:?}");
        }
    }

    #[test]
    fn requests_follow_the_api() {
        let request = retrieve_date_request(&local(), NUMBER);
        assert_eq!(request.method, "POST");
        assert_eq!(
            request.url,
            "http://127.0.0.1:9091/sim-swap/v2/retrieve-date"
        );
        assert!(request.has_content_type("application/json"));
        assert_eq!(request.header("authorization"), None);
        assert_eq!(
            body_json(&request),
            serde_json::json!({"phoneNumber": NUMBER})
        );

        let with_token =
            settings(&[("base_url", "http://x"), ("access_token", "abc")]).expect("valid");
        let request = check_request(&with_token, NUMBER);
        assert_eq!(request.url, "http://x/sim-swap/v2/check");
        assert_eq!(request.header("Authorization"), Some("Bearer abc"));
        assert_eq!(
            body_json(&request),
            serde_json::json!({"phoneNumber": NUMBER, "maxAge": 240})
        );
    }

    #[test]
    fn dates_are_read_as_rfc_3339() {
        let answer = response(
            200,
            r#"{"latestSimChange": "2023-07-03T14:27:08.312+02:00"}"#,
        );
        assert_eq!(
            parse_retrieve_date(&answer).expect("ok"),
            RetrieveDate::Changed(1_688_387_228_312)
        );
        let nanos = response(
            200,
            r#"{"latestSimChange": "2024-09-18T07:37:53.471829447Z"}"#,
        );
        assert_eq!(
            parse_retrieve_date(&nanos).expect("ok"),
            RetrieveDate::Changed(1_726_645_073_471)
        );
        let bad = response(200, r#"{"latestSimChange": "2023-07-03 14:27"}"#);
        assert_eq!(
            parse_retrieve_date(&bad).expect_err("bad").code,
            "bad-response"
        );
    }

    #[test]
    fn null_and_missing_dates_are_no_date() {
        let cases = [
            (r#"{"latestSimChange": null}"#, None),
            (
                r#"{"latestSimChange": null, "monitoredPeriod": 120}"#,
                Some(120),
            ),
            ("{}", None),
        ];
        for (body, monitored_period_days) in cases {
            assert_eq!(
                parse_retrieve_date(&response(200, body)).expect("ok"),
                RetrieveDate::NoDate {
                    monitored_period_days
                },
                "{body}"
            );
        }
        assert_eq!(
            parse_retrieve_date(&response(200, "not json"))
                .expect_err("bad")
                .code,
            "bad-response"
        );
    }

    #[test]
    fn unoffered_retrieve_date_is_unsupported_but_unknown_numbers_are_errors() {
        let not_found =
            r#"{"status":404,"code":"NOT_FOUND","message":"The specified resource is not found."}"#;
        assert_eq!(
            parse_retrieve_date(&response(404, not_found)).expect("ok"),
            RetrieveDate::Unsupported
        );
        assert_eq!(
            parse_retrieve_date(&response(404, "")).expect("ok"),
            RetrieveDate::Unsupported
        );
        assert_eq!(
            parse_retrieve_date(&response(
                501,
                r#"{"status":501,"code":"NOT_IMPLEMENTED","message":"x"}"#
            ))
            .expect("ok"),
            RetrieveDate::Unsupported
        );
        let unknown =
            r#"{"status":404,"code":"IDENTIFIER_NOT_FOUND","message":"Phone number not found."}"#;
        let err = parse_retrieve_date(&response(404, unknown)).expect_err("unknown number");
        assert_eq!(err.code, "IDENTIFIER_NOT_FOUND");
        assert_eq!(
            err.message,
            "sim-swap retrieve-date answered HTTP 404: Phone number not found."
        );
    }

    #[test]
    fn camara_error_bodies_keep_their_code() {
        for (status, code) in [
            (400, "INVALID_ARGUMENT"),
            (401, "UNAUTHENTICATED"),
            (403, "PERMISSION_DENIED"),
            (422, "SERVICE_NOT_APPLICABLE"),
            (429, "TOO_MANY_REQUESTS"),
        ] {
            let body = format!(r#"{{"status":{status},"code":"{code}","message":"m"}}"#);
            assert_eq!(
                parse_retrieve_date(&response(status, &body))
                    .expect_err("error")
                    .code,
                code
            );
            assert_eq!(
                parse_check(&response(status, &body))
                    .expect_err("error")
                    .code,
                code
            );
        }
        let err = parse_check(&response(502, "<html>Bad Gateway</html>")).expect_err("error");
        assert_eq!(err.code, "http-status");
        assert!(err.message.contains("502"));
    }

    #[test]
    fn checks_are_read() {
        assert!(parse_check(&response(200, r#"{"swapped": true}"#)).expect("ok"));
        assert!(!parse_check(&response(200, r#"{"swapped": false}"#)).expect("ok"));
        assert_eq!(
            parse_check(&response(200, "{}")).expect_err("bad").code,
            "bad-response"
        );
    }

    /// Runs a lookup against canned answers, returning its result, the operations asked
    /// and the log lines.
    fn run(
        answers: Vec<Result<HttpResponse, HttpError>>,
    ) -> (Result<Intelligence, PluginError>, Vec<String>, Vec<String>) {
        let mut answers = answers.into_iter();
        let mut asked = Vec::new();
        let mut lines = Vec::new();
        let result = lookup_with(
            &local(),
            NUMBER,
            |request| {
                asked.push(
                    request
                        .url
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
                answers.next().expect("a canned answer")
            },
            |_, line| lines.push(line.to_owned()),
        );
        (result, asked, lines)
    }

    #[test]
    fn a_retrieved_date_is_reported_without_a_check() {
        let (result, asked, _) = run(vec![Ok(response(
            200,
            r#"{"latestSimChange": "2024-09-18T07:37:53Z"}"#,
        ))]);
        let intelligence = result.expect("ok");
        assert_eq!(intelligence.last_sim_change_millis, Some(1_726_645_073_000));
        assert_eq!(intelligence.carrier_name, None);
        assert_eq!(asked, ["retrieve-date"]);
    }

    #[test]
    fn a_check_never_turns_into_a_guessed_date() {
        for first in [
            response(200, r#"{"latestSimChange": null, "monitoredPeriod": 120}"#),
            response(404, r#"{"status":404,"code":"NOT_FOUND","message":"no"}"#),
            response(501, ""),
        ] {
            for swapped in [true, false] {
                let check = response(200, &format!(r#"{{"swapped": {swapped}}}"#));
                let (result, asked, lines) = run(vec![Ok(first.clone()), Ok(check)]);
                assert_eq!(result.expect("ok").last_sim_change_millis, None);
                assert_eq!(asked, ["retrieve-date", "check"]);
                assert_eq!(
                    lines
                        .iter()
                        .any(|line| line.contains("the date is unknown")),
                    swapped
                );
            }
        }
    }

    #[test]
    fn transport_failures_are_http_errors_naming_the_cause() {
        let (result, _, _) = run(vec![Err(HttpError::NotGranted("127.0.0.1".to_owned()))]);
        let err = result.expect_err("not granted");
        assert_eq!(err.code, "http");
        assert!(err.message.contains("not granted") && err.message.contains("127.0.0.1"));
        let (result, asked, _) = run(vec![Ok(response(501, "")), Err(HttpError::Timeout)]);
        let err = result.expect_err("timeout");
        assert_eq!(err.code, "http");
        assert!(
            err.message.starts_with("sim-swap check:"),
            "{}",
            err.message
        );
        assert_eq!(asked, ["retrieve-date", "check"]);
    }

    #[test]
    fn a_failing_check_is_an_error() {
        let (result, _, _) = run(vec![
            Ok(response(501, "")),
            Ok(response(
                400,
                r#"{"status":400,"code":"OUT_OF_RANGE","message":"Check monitor period could not exceed local regulations (30 days)"}"#,
            )),
        ]);
        let err = result.expect_err("out of range");
        assert_eq!(err.code, "OUT_OF_RANGE");
    }
}
