//! A test messaging adapter built against `dialgate:plugin@0.1.1` as it was released
//! (the copy in `wit/`, never to be edited): an adapter built before API 0.2.0, which
//! exports `send` rather than `send-message`, must keep delivering on this host. It
//! posts each message as a form (`from`, `to`, `text`) to `<base_url>/sms/json` and
//! takes the provider's id from the answer's `"message-id"`.

/// Bindings for the 0.1.1 messaging-adapter world, and the component's export. The
/// export `send` clashes with the C library's `send` under wit-bindgen's default core
/// names, so it takes the component model's standard core name on wasm32 (and a
/// prefix a native linker accepts elsewhere), as adapters had to before 0.2.0.
// The generated glue for `send` passes a message's fields as separate arguments.
#[allow(unsafe_code, clippy::too_many_arguments)]
mod bindings {
    #[cfg(target_arch = "wasm32")]
    wit_bindgen::generate!({
        path: "wit",
        world: "dialgate:plugin/messaging-adapter@0.1.1",
        export_prefix: "cm32p2||",
    });
    #[cfg(not(target_arch = "wasm32"))]
    wit_bindgen::generate!({
        path: "wit",
        world: "dialgate:plugin/messaging-adapter@0.1.1",
        export_prefix: "dialgate_native_v01_",
    });

    use super::ContractV01Messaging;
    export!(ContractV01Messaging);
}

use bindings::dialgate::plugin::config::get;
use bindings::dialgate::plugin::http_client::send;
use bindings::dialgate::plugin::log::{write, Level};
use bindings::dialgate::plugin::messaging_types::{DeliveryUpdate, Dispatch, Message, SendError};
use bindings::dialgate::plugin::types::{HttpRequest, PluginError};
use bindings::Guest;

/// The adapter.
pub struct ContractV01Messaging;

/// `text` percent-encoded for a form body.
fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                encoded.push(char::from(byte));
            }
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}

/// The string value of `"key":"…"` in a JSON text, without a JSON parser.
fn json_string(body: &str, key: &str) -> Option<String> {
    let start = body.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let end = body[start..].find('"')?;
    Some(body[start..start + end].to_owned())
}

impl Guest for ContractV01Messaging {
    fn send(message: Message) -> Result<Dispatch, SendError> {
        let base = get("base_url").ok_or_else(|| SendError::BadConfig("set base_url".into()))?;
        let sender = get("sender").unwrap_or_else(|| "Dialgate".to_owned());
        let body = format!(
            "from={}&to={}&text={}",
            encode(&sender),
            encode(&message.to),
            encode(&message.body)
        );
        let request = HttpRequest {
            method: "POST".to_owned(),
            url: format!("{}/sms/json", base.trim_end_matches('/')),
            headers: vec![(
                "Content-Type".to_owned(),
                "application/x-www-form-urlencoded".to_owned(),
            )],
            body: body.into_bytes(),
        };
        let response = send(&request).map_err(|err| SendError::Unavailable(format!("{err:?}")))?;
        let text = String::from_utf8_lossy(&response.body);
        match response.status {
            200..=299 => {
                write(Level::Info, "a 0.1 adapter sent a message");
                let id = json_string(&text, "message-id")
                    .ok_or_else(|| SendError::Unavailable(format!("no message id in {text}")))?;
                Ok(Dispatch {
                    provider_message_id: id,
                    segments: Some(1),
                })
            }
            400..=499 => Err(SendError::Rejected(format!("HTTP {}", response.status))),
            status => Err(SendError::Unavailable(format!("HTTP {status}"))),
        }
    }

    fn parse_callback(_request: HttpRequest) -> Result<Vec<DeliveryUpdate>, PluginError> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::{encode, json_string};

    #[test]
    fn forms_are_encoded_and_ids_found() {
        assert_eq!(encode("+1 a&b"), "%2B1%20a%26b");
        assert_eq!(
            json_string(
                r#"{"messages":[{"message-id":"SM1","status":"0"}]}"#,
                "message-id"
            )
            .as_deref(),
            Some("SM1")
        );
        assert_eq!(json_string("{}", "message-id"), None);
    }
}
