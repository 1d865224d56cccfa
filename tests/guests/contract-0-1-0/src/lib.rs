//! A test rule built against `dialgate:plugin@0.1.0` as it was released (the copy in
//! `wit/`, never to be edited): a plugin built before API 0.1.1 must keep loading and
//! running on this host. At every trigger it logs one line and adds the flag
//! `v0.1.0 saw <line type> at <trigger>`.

/// Bindings for the 0.1.0 rule world, and the component's export.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "dialgate:plugin/rule@0.1.0",
    });

    use super::ContractV010;
    export!(ContractV010);
}

use bindings::dialgate::plugin::log::{write, Level};
use bindings::dialgate::plugin::types::Trigger;
use bindings::{Action, Event, Guest, PluginError};

/// The rule.
pub struct ContractV010;

fn trigger_name(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::PhoneLookupComplete => "phone_lookup_complete",
        Trigger::BeforeSendOtp => "before_send_otp",
        Trigger::OtpSent => "otp_sent",
        Trigger::OtpDeliveryUpdate => "otp_delivery_update",
        Trigger::OtpVerified => "otp_verified",
        Trigger::OtpFailed => "otp_failed",
        Trigger::VerificationCompleted => "verification_completed",
    }
}

impl Guest for ContractV010 {
    fn on_event(event: Event) -> Result<Vec<Action>, PluginError> {
        write(Level::Info, "a 0.1.0 rule ran");
        Ok(vec![Action::AddFlag(format!(
            "v0.1.0 saw {} at {}",
            event.phone.line_type,
            trigger_name(event.trigger)
        ))])
    }
}
