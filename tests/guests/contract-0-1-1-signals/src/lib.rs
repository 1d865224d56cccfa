//! A test rule built against `dialgate:plugin@0.1.1` as it was released (the frozen
//! copy in `tests/guests/contract-0-1-messaging/wit/`, never to be edited): a rule built before API 0.2.0 reads its flow's fraud
//! signals through the `signals` interface, which 0.2.0 replaced with the event's
//! `fraud`, and must keep reading them on this host. At every trigger it adds the flag
//! `v0.1.1 signals risk=… sends=… geo=…`, or `v0.1.1 signals none`.

/// Bindings for the 0.1.1 rule world, and the component's export.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        path: "../contract-0-1-messaging/wit",
        world: "dialgate:plugin/rule@0.1.1",
    });

    use super::ContractV011Signals;
    export!(ContractV011Signals);
}

use bindings::dialgate::plugin::signals::fraud;
use bindings::{Action, Event, Guest, PluginError};

/// The rule.
pub struct ContractV011Signals;

impl Guest for ContractV011Signals {
    fn on_event(_event: Event) -> Result<Vec<Action>, PluginError> {
        let flag = match fraud() {
            None => "v0.1.1 signals none".to_owned(),
            Some(signals) => format!(
                "v0.1.1 signals risk={} sends={} geo={}",
                signals.pumping_risk, signals.prefix_sends_hour, signals.geo_permitted
            ),
        };
        Ok(vec![Action::AddFlag(flag)])
    }
}
