//! Writing messaging adapters: implement [`MessagingAdapter`] and register it with
//! [`register_messaging_adapter!`](crate::register_messaging_adapter).
//!
//! A messaging adapter hands code messages to a provider over outbound HTTP and turns
//! the provider's delivery callbacks into [`DeliveryUpdate`]s. It reads the tenant's
//! settings and secrets through [`host`], and may reach only the hosts the tenant
//! granted it.
//!
//! ```no_run
//! use dialgate_sdk::messaging::{
//!     host, Dispatch, HttpRequest, Message, MessagingAdapter, SendError,
//! };
//!
//! struct Gateway;
//!
//! impl MessagingAdapter for Gateway {
//!     fn send_message(message: &Message) -> Result<Dispatch, SendError> {
//!         let url = host::required_config("url").map_err(SendError::BadConfig)?;
//!         let request = HttpRequest::post_form(url, [("to", &message.to), ("text", &message.body)]);
//!         let response = host::send(&request)
//!             .map_err(|err| SendError::Unavailable(err.describe()))?;
//!         match response.status {
//!             200..=299 => Ok(Dispatch { provider_message_id: response.text(), segments: None }),
//!             400..=499 => Err(SendError::Rejected(response.text())),
//!             status => Err(SendError::Unavailable(format!("HTTP {status}"))),
//!         }
//!     }
//! }
//!
//! dialgate_sdk::register_messaging_adapter!(Gateway);
//! # fn main() {}
//! ```

pub use crate::adapter::{host, HttpError, HttpRequest, HttpResponse, PluginError};
pub use crate::contract::messaging_types::{
    DeliveryStatus, DeliveryUpdate, Dispatch, Message, SendError,
};
pub use crate::contract::types::Channel;

/// A messaging adapter.
pub trait MessagingAdapter {
    /// Hands `message` to the provider. Return [`SendError::Rejected`] when retrying
    /// will not help, [`SendError::Unavailable`] when another provider may succeed, and
    /// [`SendError::BadConfig`] when the tenant's settings are incomplete or wrong.
    /// (Named `send` before API 0.2.0.)
    fn send_message(message: &Message) -> Result<Dispatch, SendError>;

    /// Turns a provider's delivery callback, already authenticated by the host, into
    /// status updates. The default reports none.
    fn parse_callback(request: &HttpRequest) -> Result<Vec<DeliveryUpdate>, PluginError> {
        let _ = request;
        Ok(Vec::new())
    }
}

/// Registers `$adapter` (a type implementing [`MessagingAdapter`]) as the component's
/// export. Invoke it once, at module level (it defines a module).
#[macro_export]
macro_rules! register_messaging_adapter {
    ($adapter:ty) => {
        #[doc(hidden)]
        // The generated glue for `send-message` passes a message's fields as separate
        // arguments.
        #[allow(clippy::too_many_arguments)]
        mod __dialgate_messaging_adapter_export {
            use super::*;

            $crate::__generate_world!(messaging_adapter);

            pub struct Export;

            impl Guest for Export {
                fn send_message(
                    message: $crate::messaging::Message,
                ) -> ::core::result::Result<
                    $crate::messaging::Dispatch,
                    $crate::messaging::SendError,
                > {
                    <$adapter as $crate::messaging::MessagingAdapter>::send_message(&message)
                }

                fn parse_callback(
                    request: $crate::messaging::HttpRequest,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<$crate::messaging::DeliveryUpdate>,
                    $crate::messaging::PluginError,
                > {
                    <$adapter as $crate::messaging::MessagingAdapter>::parse_callback(&request)
                }
            }

            export!(Export);
        }
    };
}

impl SendError {
    /// The explanation the error carries.
    pub fn reason(&self) -> &str {
        match self {
            SendError::Rejected(reason)
            | SendError::Unavailable(reason)
            | SendError::BadConfig(reason) => reason,
        }
    }
}

/// Building messages and callbacks in unit tests of adapters, which run natively with
/// `cargo test`.
pub mod testing {
    use super::{Channel, HttpRequest, Message};

    /// An English SMS with id `message` to `+14155552671`. Change fields as needed.
    pub fn message() -> Message {
        Message {
            id: "message".to_owned(),
            to: "+14155552671".to_owned(),
            channel: Channel::Sms,
            body: "Your verification code is 123456".to_owned(),
            language: "en".to_owned(),
        }
    }

    /// A `POST /callback` with `body` and the `Content-Type` `content_type`.
    pub fn callback(content_type: &str, body: &str) -> HttpRequest {
        let mut request =
            HttpRequest::new("POST", "/callback").with_header("Content-Type", content_type);
        request.body = body.as_bytes().to_vec();
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Silent;

    impl MessagingAdapter for Silent {
        fn send_message(message: &Message) -> Result<Dispatch, SendError> {
            Err(SendError::Rejected(format!(
                "not sending to {}",
                message.to
            )))
        }
    }

    #[test]
    fn the_default_callback_parser_reports_nothing() {
        let callback = testing::callback("application/json", "{}");
        assert!(Silent::parse_callback(&callback)
            .expect("no error")
            .is_empty());
        let err = Silent::send_message(&testing::message()).expect_err("rejected");
        assert_eq!(err.reason(), "not sending to +14155552671");
    }
}
