//! The Dialgate plugin SDK: the vocabulary plugins share with the host.
//!
//! This release carries the trigger points of the verification flows and the API
//! version. The WebAssembly contract itself is the WIT package in `sdk/wit/plugin.wit`
//! (`dialgate:plugin@0.2.0`: the `rule`, `messaging-adapter` and `lookup-adapter`
//! worlds); `tests/contract.rs` keeps it documented and in step with these names.
//!
//! With the `guest` feature (on by default) it is also the guest side of the contract:
//! [`rule`] for rule plugins, [`messaging`] and [`lookup`] for adapters (which share
//! [`adapter`]'s host services), and [`http`]'s pure helpers. [`contract`] holds the
//! types all of them share. In native builds (`cargo test`) the host services are
//! in-memory stand-ins that [`testing`] sets and reads, so a plugin's logic is
//! unit-tested without a host.
//!
//! [`workflow`] is the declarative workflow-rule language, shared by the host (which
//! validates and compiles tenants' rules) and the first-party interpreter component
//! (which evaluates them in the sandbox).
#![deny(missing_docs)]

use serde::{Deserialize, Serialize};

#[cfg(feature = "guest")]
pub mod adapter;
#[cfg(feature = "guest")]
pub mod contract;
#[cfg(feature = "guest")]
pub mod http;
#[cfg(feature = "guest")]
pub mod lookup;
#[cfg(feature = "guest")]
pub mod messaging;
#[cfg(feature = "guest")]
pub mod rule;
#[cfg(feature = "guest")]
mod services;
#[cfg(all(feature = "guest", not(target_arch = "wasm32")))]
pub mod testing;
pub mod workflow;

/// The README, the plugin author's reference: every Rust example in it is compiled and
/// run as a doc test (natively, against the stand-ins of [`testing`]).
#[cfg(all(doctest, feature = "guest"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Version of the plugin API this SDK speaks.
pub const API_VERSION: &str = "0.2.0";

/// Versions of the plugin API a host of this version runs. 0.1.1 only added to 0.1.0;
/// 0.2.0 changed the rule's event and the messaging adapter's export, and the host
/// calls each component through the bindings of the version it targets.
pub const COMPATIBLE_API_VERSIONS: &[&str] = &["0.1.0", "0.1.1", "0.2.0"];

/// A point in the verification flows where tenant programming runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A number was parsed, classified and scored.
    PhoneLookupComplete,
    /// A code is about to be generated and sent.
    BeforeSendOtp,
    /// A provider accepted a code message.
    OtpSent,
    /// A provider reported a delivery status.
    OtpDeliveryUpdate,
    /// A submitted code matched.
    OtpVerified,
    /// A submitted code was wrong or expired, or attempts ran out.
    OtpFailed,
    /// The verification reached a final status.
    VerificationCompleted,
}

impl Trigger {
    /// Every trigger, in flow order.
    pub const ALL: [Trigger; 7] = [
        Trigger::PhoneLookupComplete,
        Trigger::BeforeSendOtp,
        Trigger::OtpSent,
        Trigger::OtpDeliveryUpdate,
        Trigger::OtpVerified,
        Trigger::OtpFailed,
        Trigger::VerificationCompleted,
    ];

    /// The wire name, e.g. `phone_lookup_complete`.
    pub fn name(self) -> &'static str {
        match self {
            Trigger::PhoneLookupComplete => "phone_lookup_complete",
            Trigger::BeforeSendOtp => "before_send_otp",
            Trigger::OtpSent => "otp_sent",
            Trigger::OtpDeliveryUpdate => "otp_delivery_update",
            Trigger::OtpVerified => "otp_verified",
            Trigger::OtpFailed => "otp_failed",
            Trigger::VerificationCompleted => "verification_completed",
        }
    }

    /// The trigger with wire name `name`.
    pub fn from_name(name: &str) -> Option<Trigger> {
        Trigger::ALL
            .into_iter()
            .find(|trigger| trigger.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for trigger in Trigger::ALL {
            assert_eq!(Trigger::from_name(trigger.name()), Some(trigger));
            let json = serde_json::to_string(&trigger).expect("serialises");
            assert_eq!(json, format!("\"{}\"", trigger.name()));
        }
        assert_eq!(Trigger::from_name("nope"), None);
    }
}
