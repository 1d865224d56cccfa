//! A test rule built against API 0.1.1: at every trigger it reads the fraud signals
//! of the flow through the `signals` interface and adds them as one flag
//! (`signals risk=… conversion=… sends=… geo=…`, or `signals none`).

use dialgate_sdk::rule::host::fraud_signals;
use dialgate_sdk::rule::{Action, Event, PluginError, Rule};

/// The rule.
pub struct Signals;

impl Rule for Signals {
    fn on_event(_event: &Event) -> Result<Vec<Action>, PluginError> {
        let flag = match fraud_signals() {
            None => "signals none".to_owned(),
            Some(signals) => format!(
                "signals risk={} conversion={} sends={} geo={}",
                signals.pumping_risk,
                signals
                    .prefix_conversion_rate
                    .map_or("none".to_owned(), |rate| format!("{rate:.3}")),
                signals.prefix_sends_hour,
                signals.geo_permitted
            ),
        };
        Ok(vec![Action::AddFlag(flag)])
    }
}

dialgate_sdk::register_rule!(Signals);
