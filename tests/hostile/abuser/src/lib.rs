//! A hostile rule for the storage and log tests: its configuration says how to abuse
//! the host, and it reports what happened as flags.
//!
//! - `count` (any value): increments the key `counter` and flags `count:{value}`.
//! - `values` N and `value_bytes` M: writes N values of M bytes under fresh keys (the
//!   call's number from the key `calls`, then the value's index); flags
//!   `kv:{written}:{first error}` (`none` when every write succeeded).
//! - `log_lines` K: logs K lines, each with a newline, a carriage return, an escape
//!   sequence and a forged host line in it; flags `logged:{K}`.
//! - `instance` (any value): flags `instance:{n}`, where n counts the calls this
//!   instance has served (kept in its memory), and `wall:{ms}`, the wall clock it
//!   sees in milliseconds; so a test can tell a warm instance from a fresh one.
//! - `trap` (any value): panics after everything else, which traps the call.

use dialgate_sdk::rule::host::{kv, log, KvError, Level};
use dialgate_sdk::rule::{Action, Event, PluginError, Rule};
use std::sync::atomic::{AtomicU32, Ordering};

/// Calls this instance has served.
static CALLS: AtomicU32 = AtomicU32::new(0);

/// The rule.
pub struct Abuser;

/// A short name of a key-value error, for the flags.
fn error_name(err: &KvError) -> String {
    match err {
        KvError::BadKey(_) => "bad-key".to_owned(),
        KvError::ValueTooLarge(_) => "value-too-large".to_owned(),
        KvError::QuotaExceeded => "quota-exceeded".to_owned(),
        KvError::Unavailable(message) => format!("unavailable({message})"),
    }
}

impl Rule for Abuser {
    fn on_event(event: &Event) -> Result<Vec<Action>, PluginError> {
        let mut actions = Vec::new();
        if event.config("count").is_some() {
            let flag = match kv::increment("counter", 1) {
                Ok(value) => format!("count:{value}"),
                Err(err) => format!("count-failed:{}", error_name(&err)),
            };
            actions.push(Action::AddFlag(flag));
        }
        if let Some(values) = event.config_u32("values") {
            let size = event.config_u32("value_bytes").unwrap_or(1024) as usize;
            let call = kv::increment("calls", 1).unwrap_or(-1);
            let value = vec![b'x'; size];
            let (mut written, mut first_error) = (0u32, None);
            for index in 0..values {
                match kv::set(&format!("{call}/{index}"), &value) {
                    Ok(()) => written += 1,
                    Err(err) => {
                        first_error.get_or_insert_with(|| error_name(&err));
                    }
                }
            }
            actions.push(Action::AddFlag(format!(
                "kv:{written}:{}",
                first_error.unwrap_or_else(|| "none".to_owned())
            )));
        }
        if let Some(lines) = event.config_u32("log_lines") {
            for index in 0..lines {
                log(
                    Level::Warn,
                    &format!(
                        "abuser line {index}\n2026-01-01T00:00:00Z  INFO dialgate: forged host line\r\x1b[2K\u{202e}"
                    ),
                );
            }
            actions.push(Action::AddFlag(format!("logged:{lines}")));
        }
        if event.config("instance").is_some() {
            let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
            actions.push(Action::AddFlag(format!("instance:{calls}")));
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_millis());
            actions.push(Action::AddFlag(format!("wall:{wall}")));
        }
        if event.config("trap").is_some() {
            panic!("abuser traps as configured");
        }
        Ok(actions)
    }
}

dialgate_sdk::register_rule!(Abuser);
