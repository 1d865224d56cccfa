//! Native stand-ins for the host's services, for unit tests of plugins with
//! `cargo test`: an in-memory key-value store with the host's key and value limits and
//! its counter format, a settable clock, a captured log, the tenant's configuration and
//! secrets, and scripted HTTP answers with the requests recorded. Each test thread has
//! its own host, empty at first; [`reset`] empties it. (A rule's fraud signals are in
//! its event since API 0.2.0: set `event.fraud` in the test.)
//!
//! ```
//! use dialgate_sdk::rule::host::{kv, now_millis};
//! use dialgate_sdk::testing;
//!
//! testing::set_now_millis(1_767_225_600_000);
//! assert_eq!(now_millis(), 1_767_225_600_000);
//! assert!(matches!(kv::increment("sends", 2), Ok(2)));
//! assert_eq!(testing::kv_value("sends").as_deref(), Some(&b"2"[..]));
//! ```
//!
//! ```
//! use dialgate_sdk::adapter::{host, HttpRequest, HttpResponse};
//! use dialgate_sdk::testing;
//!
//! testing::set_config("url", "https://api.example.com/sms");
//! testing::answer(Ok(HttpResponse { status: 202, headers: Vec::new(), body: b"queued".to_vec() }));
//! let url = host::required_config("url").unwrap();
//! let response = host::send(&HttpRequest::post_json(url, "{}")).unwrap();
//! assert_eq!(response.status, 202);
//! assert_eq!(testing::requests()[0].url, "https://api.example.com/sms");
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};

use crate::contract::http_client::HttpError;
use crate::contract::log::Level;
use crate::contract::types::{HttpRequest, HttpResponse};

/// The longest key the host accepts.
pub const MAX_KEY_BYTES: usize = 256;
/// The largest value the host stores.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// The clock's time until a test sets it: 2026-01-01T00:00:00Z.
pub const DEFAULT_NOW_MILLIS: i64 = 1_767_225_600_000;

/// One test thread's host.
struct Host {
    kv: BTreeMap<String, Vec<u8>>,
    now_millis: i64,
    logs: Vec<(Level, String)>,
    config: BTreeMap<String, String>,
    secrets: BTreeMap<String, String>,
    answers: VecDeque<Result<HttpResponse, HttpError>>,
    requests: Vec<HttpRequest>,
}

impl Default for Host {
    fn default() -> Self {
        Self {
            kv: BTreeMap::new(),
            now_millis: DEFAULT_NOW_MILLIS,
            logs: Vec::new(),
            config: BTreeMap::new(),
            secrets: BTreeMap::new(),
            answers: VecDeque::new(),
            requests: Vec::new(),
        }
    }
}

thread_local! {
    static HOST: RefCell<Host> = RefCell::new(Host::default());
}

fn with<R>(f: impl FnOnce(&mut Host) -> R) -> R {
    HOST.with(|host| f(&mut host.borrow_mut()))
}

/// Empties this thread's host: store, log, configuration, scripted answers, recorded
/// requests; the clock goes back to [`DEFAULT_NOW_MILLIS`].
pub fn reset() {
    with(|host| *host = Host::default());
}

/// Sets what `now_millis` answers.
pub fn set_now_millis(millis: i64) {
    with(|host| host.now_millis = millis);
}

/// Moves the clock on by `millis`.
pub fn advance_millis(millis: i64) {
    with(|host| host.now_millis += millis);
}

/// The value stored under `key`, as the plugin left it.
pub fn kv_value(key: &str) -> Option<Vec<u8>> {
    with(|host| host.kv.get(key).cloned())
}

/// Every key and value stored, in key order.
pub fn kv_entries() -> BTreeMap<String, Vec<u8>> {
    with(|host| host.kv.clone())
}

/// Stores `value` under `key` before the plugin runs (a counter is its decimal text).
pub fn set_kv(key: &str, value: impl Into<Vec<u8>>) {
    with(|host| host.kv.insert(key.to_owned(), value.into()));
}

/// The lines the plugin logged, in order.
pub fn logs() -> Vec<(Level, String)> {
    with(|host| host.logs.clone())
}

/// Sets a plain setting of the tenant's configuration.
pub fn set_config(key: &str, value: &str) {
    with(|host| host.config.insert(key.to_owned(), value.to_owned()));
}

/// Sets a secret of the tenant's configuration.
pub fn set_secret(key: &str, value: &str) {
    with(|host| host.secrets.insert(key.to_owned(), value.to_owned()));
}

/// Queues the answer to the next outbound request (answers are used in order; a
/// request with none queued fails with a `connection` error saying so).
pub fn answer(answer: Result<HttpResponse, HttpError>) {
    with(|host| host.answers.push_back(answer));
}

/// The outbound requests the plugin sent, in order.
pub fn requests() -> Vec<HttpRequest> {
    with(|host| host.requests.clone())
}

/// The stand-ins themselves, called by [`crate::services`] in native builds.
pub(crate) mod stand_in {
    use super::*;
    use crate::contract::kv::KvError;

    fn check_key(key: &str) -> Result<(), KvError> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(KvError::BadKey(format!(
                "keys are 1 to {MAX_KEY_BYTES} bytes"
            )));
        }
        Ok(())
    }

    pub fn kv_get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key)?;
        Ok(kv_value(key))
    }

    pub fn kv_set(key: &str, value: &[u8]) -> Result<(), KvError> {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(KvError::ValueTooLarge(
                u32::try_from(MAX_VALUE_BYTES).unwrap_or(u32::MAX),
            ));
        }
        set_kv(key, value);
        Ok(())
    }

    pub fn kv_delete(key: &str) -> Result<(), KvError> {
        check_key(key)?;
        with(|host| host.kv.remove(key));
        Ok(())
    }

    pub fn kv_increment(key: &str, delta: i64) -> Result<i64, KvError> {
        check_key(key)?;
        with(|host| {
            let next = match host.kv.get(key) {
                None => delta,
                Some(bytes) => std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|text| text.parse::<i64>().ok())
                    .ok_or_else(|| {
                        KvError::BadKey(format!("{key:?} holds a value that is not a counter"))
                    })?
                    .saturating_add(delta),
            };
            host.kv
                .insert(key.to_owned(), next.to_string().into_bytes());
            Ok(next)
        })
    }

    pub fn now_millis() -> i64 {
        with(|host| host.now_millis)
    }

    pub fn log(level: Level, message: &str) {
        with(|host| host.logs.push((level, message.to_owned())));
    }

    pub fn config(key: &str) -> Option<String> {
        with(|host| host.config.get(key).cloned())
    }

    pub fn secret(key: &str) -> Option<String> {
        with(|host| host.secrets.get(key).cloned())
    }

    pub fn send(request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        with(|host| {
            host.requests.push(request.clone());
            host.answers.pop_front().unwrap_or_else(|| {
                Err(HttpError::Connection(format!(
                    "no scripted answer for {} {} (queue one with testing::answer)",
                    request.method, request.url
                )))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::{kv, log, now_millis, send};

    #[test]
    fn the_store_keeps_the_hosts_limits_and_counter_format() {
        assert!(matches!(kv::get("missing"), Ok(None)));
        assert!(matches!(kv::increment("n", 5), Ok(5)));
        assert!(matches!(kv::increment("n", -2), Ok(3)));
        assert_eq!(kv_value("n").as_deref(), Some(&b"3"[..]));
        kv::set("text", b"hello").expect("stored");
        assert!(matches!(
            kv::increment("text", 1),
            Err(kv::KvError::BadKey(_))
        ));
        assert!(matches!(kv::get(""), Err(kv::KvError::BadKey(_))));
        assert!(matches!(
            kv::set("big", &vec![0; MAX_VALUE_BYTES + 1]),
            Err(kv::KvError::ValueTooLarge(_))
        ));
        kv::delete("text").expect("deleted");
        assert_eq!(kv_entries().len(), 1);
        reset();
        assert!(kv_entries().is_empty());
    }

    #[test]
    fn the_clock_log_and_http_are_the_tests_to_set_and_read() {
        assert_eq!(now_millis(), DEFAULT_NOW_MILLIS);
        advance_millis(1_000);
        assert_eq!(now_millis(), DEFAULT_NOW_MILLIS + 1_000);
        log(Level::Warn, "careful");
        assert_eq!(logs(), vec![(Level::Warn, "careful".to_owned())]);
        let request = HttpRequest::new("GET", "https://example.com/a");
        assert!(matches!(send(&request), Err(HttpError::Connection(_))));
        answer(Err(HttpError::Timeout));
        assert!(matches!(send(&request), Err(HttpError::Timeout)));
        assert_eq!(requests().len(), 2);
    }
}
