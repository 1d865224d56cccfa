//! The `velocity` rule: at `before_send_otp`, counts the codes requested for the
//! event's number, across all applicants, within a fixed window, and declines (and
//! flags `velocity_exceeded`) once the count passes the limit.
//!
//! Configuration: `max_codes` (codes allowed per window, default 5) and
//! `window_minutes` (the window's length, default 60); both whole numbers of at least 1,
//! else the rule fails with `bad-config`. Windows are fixed, not sliding: window `b`
//! covers `[b * window, (b + 1) * window)` of the host's clock, and the count lives
//! under the key `codes/{e164}/{b}` of the rule's key-value store. Counts of past
//! windows are not deleted; the store has no expiry.

use dialgate_sdk::rule::host::{kv, now_millis, KvError};
use dialgate_sdk::rule::{Action, Event, PluginError, Rule, Trigger};

/// Codes allowed per window when the tenant sets nothing.
const DEFAULT_MAX_CODES: u32 = 5;
/// The window's length in minutes when the tenant sets nothing.
const DEFAULT_WINDOW_MINUTES: u32 = 60;
/// The flag set when the limit is passed.
pub const FLAG: &str = "velocity_exceeded";

/// The tenant's settings of the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Codes allowed per window.
    pub max_codes: u32,
    /// The window's length in minutes.
    pub window_minutes: u32,
}

impl Settings {
    /// Reads the settings from the event's configuration.
    pub fn from_event(event: &Event) -> Result<Self, PluginError> {
        Ok(Self {
            max_codes: positive(event, "max_codes", DEFAULT_MAX_CODES)?,
            window_minutes: positive(event, "window_minutes", DEFAULT_WINDOW_MINUTES)?,
        })
    }

    /// The window's length in milliseconds.
    pub fn window_millis(&self) -> i64 {
        i64::from(self.window_minutes) * 60_000
    }
}

fn positive(event: &Event, key: &str, default: u32) -> Result<u32, PluginError> {
    if event.config(key).is_none() {
        return Ok(default);
    }
    match event.config_u32(key) {
        Some(value) if value > 0 => Ok(value),
        _ => Err(PluginError::new(
            "bad-config",
            format!("{key} must be a whole number of at least 1"),
        )),
    }
}

/// The key counting codes for `e164` in the window that contains `now_millis`.
pub fn counter_key(e164: &str, now_millis: i64, settings: &Settings) -> String {
    let bucket = now_millis.div_euclid(settings.window_millis());
    format!("codes/{e164}/{bucket}")
}

/// What to do once `count` codes (this one included) were requested in the window.
pub fn decide(count: i64, settings: &Settings) -> Vec<Action> {
    if count <= i64::from(settings.max_codes) {
        return Vec::new();
    }
    vec![
        Action::Decline(format!(
            "velocity: {count} codes for this number within {} minutes (limit {})",
            settings.window_minutes, settings.max_codes
        )),
        Action::AddFlag(FLAG.to_owned()),
    ]
}

fn kv_error(err: KvError) -> PluginError {
    let message = match err {
        KvError::BadKey(key) => format!("the key-value store refused the key {key}"),
        KvError::ValueTooLarge(size) => format!("a value of {size} bytes is too large"),
        KvError::QuotaExceeded => "the rule's share of the key-value store is full".to_owned(),
        KvError::Unavailable(reason) => format!("the key-value store failed: {reason}"),
    };
    PluginError::new("kv", message)
}

/// The rule.
pub struct Velocity;

impl Rule for Velocity {
    fn on_event(event: &Event) -> Result<Vec<Action>, PluginError> {
        if event.trigger != Trigger::BeforeSendOtp || event.phone.e164.is_empty() {
            return Ok(Vec::new());
        }
        let settings = Settings::from_event(event)?;
        let key = counter_key(&event.phone.e164, now_millis(), &settings);
        let count = kv::increment(&key, 1).map_err(kv_error)?;
        Ok(decide(count, &settings))
    }
}

dialgate_sdk::register_rule!(Velocity);

#[cfg(test)]
mod tests {
    use super::*;
    use dialgate_sdk::rule::testing::event;

    fn configured(config: &[(&str, &str)]) -> Event {
        let mut event = event(Trigger::BeforeSendOtp);
        event.config = config
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        event
    }

    const DEFAULTS: Settings = Settings {
        max_codes: 5,
        window_minutes: 60,
    };

    #[test]
    fn settings_default_and_come_from_configuration() {
        assert_eq!(
            Settings::from_event(&configured(&[])).expect("ok"),
            DEFAULTS
        );
        let custom = configured(&[("max_codes", "3"), ("window_minutes", " 10 ")]);
        assert_eq!(
            Settings::from_event(&custom).expect("ok"),
            Settings {
                max_codes: 3,
                window_minutes: 10
            }
        );
    }

    #[test]
    fn bad_configuration_is_reported() {
        for config in [
            [("max_codes", "lots")],
            [("max_codes", "0")],
            [("window_minutes", "-5")],
            [("window_minutes", "0")],
        ] {
            let err = Settings::from_event(&configured(&config)).expect_err("bad config");
            assert_eq!(err.code, "bad-config", "{config:?}");
            assert!(err.message.starts_with(config[0].0), "{}", err.message);
        }
        let err = Velocity::on_event(&configured(&[("max_codes", "x")])).expect_err("bad");
        assert_eq!(err.code, "bad-config");
    }

    #[test]
    fn the_key_names_the_number_and_the_fixed_window() {
        let hour = 3_600_000;
        assert_eq!(
            counter_key("+14155552671", 0, &DEFAULTS),
            "codes/+14155552671/0"
        );
        assert_eq!(
            counter_key("+14155552671", 5 * hour - 1, &DEFAULTS),
            "codes/+14155552671/4"
        );
        assert_eq!(
            counter_key("+14155552671", 5 * hour, &DEFAULTS),
            "codes/+14155552671/5"
        );
        let ten_minutes = Settings {
            max_codes: 5,
            window_minutes: 10,
        };
        assert_eq!(counter_key("+44", 5 * hour, &ten_minutes), "codes/+44/30");
    }

    #[test]
    fn codes_up_to_the_limit_pass() {
        for count in 1..=5 {
            assert!(decide(count, &DEFAULTS).is_empty(), "{count}");
        }
    }

    #[test]
    fn the_code_past_the_limit_is_declined_and_flagged() {
        let actions = decide(6, &DEFAULTS);
        assert_eq!(actions.len(), 2);
        assert!(matches!(&actions[0], Action::Decline(reason)
            if reason == "velocity: 6 codes for this number within 60 minutes (limit 5)"));
        assert!(matches!(&actions[1], Action::AddFlag(flag) if flag == FLAG));
    }

    #[test]
    fn the_whole_rule_counts_in_the_store_and_declines_past_the_limit() {
        // The SDK's native stand-ins: an in-memory store and a settable clock.
        dialgate_sdk::testing::set_now_millis(5 * 3_600_000);
        let event = configured(&[("max_codes", "2")]);
        assert!(Velocity::on_event(&event).expect("ok").is_empty());
        assert!(Velocity::on_event(&event).expect("ok").is_empty());
        let third = Velocity::on_event(&event).expect("ok");
        assert!(matches!(&third[1], Action::AddFlag(flag) if flag == FLAG));
        assert_eq!(
            dialgate_sdk::testing::kv_value("codes/+14155552671/5").as_deref(),
            Some(&b"3"[..])
        );
        // A new window counts afresh.
        dialgate_sdk::testing::advance_millis(3_600_000);
        assert!(Velocity::on_event(&event).expect("ok").is_empty());
        // A store that holds something else under the key is reported, not a panic.
        dialgate_sdk::testing::set_kv("codes/+14155552671/6", "not a number");
        let err = Velocity::on_event(&event).expect_err("not a counter");
        assert_eq!(err.code, "kv");
    }

    #[test]
    fn other_triggers_ask_for_nothing_and_touch_no_store() {
        for trigger in [
            Trigger::PhoneLookupComplete,
            Trigger::OtpSent,
            Trigger::OtpVerified,
            Trigger::VerificationCompleted,
        ] {
            let mut event = configured(&[("max_codes", "nonsense")]);
            event.trigger = trigger;
            assert!(Velocity::on_event(&event).expect("no error").is_empty());
        }
        assert!(dialgate_sdk::testing::kv_entries().is_empty());
    }
}
