//! Writing lookup adapters: implement [`LookupAdapter`] and register it with
//! [`register_lookup_adapter!`](crate::register_lookup_adapter).
//!
//! A lookup adapter asks a provider over outbound HTTP what it knows about a number
//! and returns it as [`Intelligence`]. Fields the provider did not answer stay absent:
//! the host treats absent as unknown, so never fill one with a guess. The adapter
//! reads the tenant's settings and secrets through [`host`], and may reach only the
//! hosts the tenant granted it.
//!
//! ```no_run
//! use dialgate_sdk::lookup::{host, HttpRequest, Intelligence, LookupAdapter, PluginError};
//!
//! struct LineStatus;
//!
//! impl LookupAdapter for LineStatus {
//!     fn lookup(number: &str) -> Result<Intelligence, PluginError> {
//!         let url = host::required_config("url")
//!             .map_err(|message| PluginError::new("bad-config", message))?;
//!         let response = host::send(&HttpRequest::new("GET", format!("{url}?n={number}")))
//!             .map_err(|err| PluginError::new("http", err.describe()))?;
//!         let mut intelligence = Intelligence::default();
//!         if response.is_success() {
//!             intelligence.line_status = Some(response.text());
//!         }
//!         Ok(intelligence)
//!     }
//! }
//!
//! dialgate_sdk::register_lookup_adapter!(LineStatus);
//! # fn main() {}
//! ```

pub use crate::adapter::{host, HttpError, HttpRequest, HttpResponse, PluginError};
pub use crate::contract::lookup_types::{Intelligence, Port};

/// A lookup adapter.
pub trait LookupAdapter {
    /// Looks up `number`, in E.164 form. Return what the provider answered and leave
    /// the rest absent; return an error only when the provider could not be asked or
    /// refused.
    fn lookup(number: &str) -> Result<Intelligence, PluginError>;
}

/// Registers `$adapter` (a type implementing [`LookupAdapter`]) as the component's
/// export. Invoke it once, at module level (it defines a module).
#[macro_export]
macro_rules! register_lookup_adapter {
    ($adapter:ty) => {
        #[doc(hidden)]
        mod __dialgate_lookup_adapter_export {
            use super::*;

            $crate::__generate_world!(lookup_adapter);

            pub struct Export;

            impl Guest for Export {
                fn lookup(
                    number: ::std::string::String,
                ) -> ::core::result::Result<
                    $crate::lookup::Intelligence,
                    $crate::lookup::PluginError,
                > {
                    <$adapter as $crate::lookup::LookupAdapter>::lookup(&number)
                }
            }

            export!(Export);
        }
    };
}

/// Nothing known: every field absent and no porting history.
impl Default for Intelligence {
    fn default() -> Self {
        Self {
            carrier_name: None,
            carrier_type: None,
            line_type: None,
            porting_history: Vec::new(),
            last_sim_change_millis: None,
            line_status: None,
            roaming: None,
            prepaid: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_intelligence_knows_nothing() {
        let nothing = Intelligence::default();
        assert!(nothing.carrier_name.is_none() && nothing.last_sim_change_millis.is_none());
        assert!(nothing.porting_history.is_empty());
    }
}
