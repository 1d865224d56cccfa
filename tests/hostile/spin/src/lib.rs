//! A hostile rule for the sandbox tests: it never returns. The host's CPU budget must
//! stop it.

use dialgate_sdk::rule::{Action, Event, PluginError, Rule};

/// Spins forever.
pub struct Spin;

impl Rule for Spin {
    fn on_event(event: &Event) -> Result<Vec<Action>, PluginError> {
        let mut counter = u64::from(event.verification.attempts);
        loop {
            counter = std::hint::black_box(counter.wrapping_add(1));
        }
    }
}

dialgate_sdk::register_rule!(Spin);
