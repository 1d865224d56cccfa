//! A hostile rule for the sandbox tests: it sleeps through WASI (`std::thread::sleep`
//! becomes monotonic-clock `subscribe-duration` and `poll`). The host must not hold a
//! thread or an instance for the time it asks.
//!
//! Configuration: `sleep_ms` (default 2000) is how long one sleep lasts; with
//! `forever` set, it sleeps in a loop and never returns. After one sleep it flags
//! `slept_{ms}` with the milliseconds its monotonic clock moved.

use std::time::{Duration, Instant};

use dialgate_sdk::rule::{Action, Event, PluginError, Rule};

/// Sleeps, once or forever.
pub struct Sleep;

impl Rule for Sleep {
    fn on_event(event: &Event) -> Result<Vec<Action>, PluginError> {
        let ms = event.config_u32("sleep_ms").unwrap_or(2000);
        if event.config("forever").is_some() {
            loop {
                std::thread::sleep(Duration::from_millis(u64::from(ms)));
            }
        }
        let before = Instant::now();
        std::thread::sleep(Duration::from_millis(u64::from(ms)));
        let slept = before.elapsed().as_millis();
        Ok(vec![Action::AddFlag(format!("slept_{slept}"))])
    }
}

dialgate_sdk::register_rule!(Sleep);
