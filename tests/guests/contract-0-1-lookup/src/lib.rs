//! A test lookup adapter built against `dialgate:plugin@0.1.1` as it was released (the
//! frozen copy in `tests/guests/contract-0-1-messaging/wit/`, never to be edited): a
//! lookup adapter built before API 0.2.0 must keep answering on this host. It answers
//! every number with the carrier its configuration's `carrier` names and an active
//! line, and logs one line.

/// Bindings for the 0.1.1 lookup-adapter world, and the component's export.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        path: "../contract-0-1-messaging/wit",
        world: "dialgate:plugin/lookup-adapter@0.1.1",
    });

    use super::ContractV01Lookup;
    export!(ContractV01Lookup);
}

use bindings::dialgate::plugin::config::get;
use bindings::dialgate::plugin::log::{write, Level};
use bindings::dialgate::plugin::lookup_types::Intelligence;
use bindings::dialgate::plugin::types::PluginError;
use bindings::Guest;

/// The adapter.
pub struct ContractV01Lookup;

impl Guest for ContractV01Lookup {
    fn lookup(number: String) -> Result<Intelligence, PluginError> {
        write(
            Level::Info,
            &format!("a 0.1 lookup adapter looked up {number}"),
        );
        Ok(Intelligence {
            carrier_name: get("carrier"),
            carrier_type: None,
            line_type: None,
            porting_history: Vec::new(),
            last_sim_change_millis: None,
            line_status: Some("active".to_owned()),
            roaming: None,
            prepaid: None,
        })
    }
}
