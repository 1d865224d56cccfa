//! Writing rule plugins: implement [`Rule`] and register it with
//! [`register_rule!`](crate::register_rule).
//!
//! A rule runs at the triggers a tenant binds it to. It receives an [`Event`] (the
//! trigger, the verification so far, what is known about the number, the applicant,
//! the tenant's configuration of the plugin and, since API 0.2.0, the flow's
//! [`FraudSignals`] in `event.fraud`) and returns [`Action`]s.
//!
//! ```no_run
//! use dialgate_sdk::rule::{Action, Channel, Event, PluginError, Rule};
//!
//! struct OtpForVoip;
//!
//! impl Rule for OtpForVoip {
//!     fn on_event(event: &Event) -> Result<Vec<Action>, PluginError> {
//!         if event.phone.line_type == "voip" && !event.verification.otp_verified {
//!             return Ok(vec![Action::SendOtp(Channel::Sms)]);
//!         }
//!         Ok(Vec::new())
//!     }
//! }
//!
//! dialgate_sdk::register_rule!(OtpForVoip);
//! # fn main() {}
//! ```

pub use crate::contract::rule_types::{
    Action, CreateCase, Event, FraudSignals, SetRisk, VerificationSnapshot,
};
pub use crate::contract::types::{
    Channel, PhoneIntelligence, PluginError, RiskFactor, Trigger, VerificationStatus,
};

/// Host services a rule may use (in native builds, the stand-ins of
/// [`crate::testing`]).
pub mod host {
    pub use crate::contract::log::Level;
    pub use crate::services::kv::{self, KvError};
    pub use crate::services::{log, now_millis};
}

/// A rule plugin.
pub trait Rule {
    /// Handles one firing of a trigger the rule is bound to. The default asks for
    /// nothing.
    fn on_event(event: &Event) -> Result<Vec<Action>, PluginError> {
        let _ = event;
        Ok(Vec::new())
    }
}

impl Event {
    /// The tenant's configuration value for `key`, if set.
    pub fn config(&self, key: &str) -> Option<&str> {
        self.config
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// The tenant's configuration value for `key` parsed as a number, if set and valid.
    pub fn config_u32(&self, key: &str) -> Option<u32> {
        self.config(key).and_then(|value| value.trim().parse().ok())
    }
}

/// Registers `$rule` (a type implementing [`Rule`]) as the component's export.
/// Invoke it once, at module level (it defines a module).
#[macro_export]
macro_rules! register_rule {
    ($rule:ty) => {
        #[doc(hidden)]
        mod __dialgate_rule_export {
            use super::*;

            $crate::__generate_world!(rule);

            pub struct Export;

            impl Guest for Export {
                fn on_event(
                    event: $crate::rule::Event,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<$crate::rule::Action>,
                    $crate::rule::PluginError,
                > {
                    <$rule as $crate::rule::Rule>::on_event(&event)
                }
            }

            export!(Export);
        }
    };
}

/// Building events in unit tests of rules, which run natively with `cargo test`.
pub mod testing {
    use super::{Event, PhoneIntelligence, Trigger, VerificationSnapshot, VerificationStatus};

    /// An event for `trigger` about a valid US mobile number with no risk, an open
    /// verification with no attempts, and no configuration. Change fields as needed.
    pub fn event(trigger: Trigger) -> Event {
        Event {
            trigger,
            tenant_id: "tenant".to_owned(),
            verification: VerificationSnapshot {
                id: Some("verification".to_owned()),
                status: VerificationStatus::NotFinished,
                channel: None,
                attempts: 0,
                resends: 0,
                flags: Vec::new(),
                otp_verified: false,
            },
            phone: PhoneIntelligence {
                e164: "+14155552671".to_owned(),
                line_type: "mobile".to_owned(),
                carrier_type: "mobile".to_owned(),
                country: Some("US".to_owned()),
                carrier_name: None,
                carrier_is_original: false,
                risk_score: 0,
                risk_level: "low".to_owned(),
                risk_factors: Vec::new(),
                ported: None,
                ported_days_ago: None,
                sim_swap_days_ago: None,
                line_status: None,
                roaming: None,
            },
            applicant_id: Some("applicant".to_owned()),
            applicant_country: None,
            config: Vec::new(),
            fraud: None,
        }
    }
}
