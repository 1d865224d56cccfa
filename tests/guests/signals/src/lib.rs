//! A test rule built against API 0.2.0: at every trigger it reads the fraud signals
//! of the flow from its event (`event.fraud`) and adds them as one flag
//! (`signals risk=… conversion=… sends=… geo=…`, or `signals none`).

use dialgate_sdk::rule::{Action, Event, PluginError, Rule};

/// The rule.
pub struct Signals;

impl Rule for Signals {
    fn on_event(event: &Event) -> Result<Vec<Action>, PluginError> {
        let flag = match &event.fraud {
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
