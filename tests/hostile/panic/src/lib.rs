//! A hostile rule for the sandbox tests: it panics. The host must turn the resulting
//! trap into a failure of this plugin alone.

use dialgate_sdk::rule::{Action, Event, PluginError, Rule};

/// Panics on every event.
pub struct Panic;

impl Rule for Panic {
    fn on_event(_event: &Event) -> Result<Vec<Action>, PluginError> {
        panic!("hostile plugin panicked on purpose")
    }
}

dialgate_sdk::register_rule!(Panic);
