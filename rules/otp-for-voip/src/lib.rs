//! The `otp_for_voip` workflow rule as code: when a VoIP number has not verified a
//! code, ask for phone verification and send a code by SMS.

use dialgate_sdk::rule::{Action, Channel, Event, PluginError, Rule};

/// The rule.
pub struct OtpForVoip;

impl Rule for OtpForVoip {
    fn on_event(event: &Event) -> Result<Vec<Action>, PluginError> {
        if event.phone.line_type != "voip" || event.verification.otp_verified {
            return Ok(Vec::new());
        }
        Ok(vec![
            Action::RequestInfo("Phone verification required".to_owned()),
            Action::SendOtp(Channel::Sms),
        ])
    }
}

dialgate_sdk::register_rule!(OtpForVoip);

#[cfg(test)]
mod tests {
    use super::*;
    use dialgate_sdk::rule::testing::event;
    use dialgate_sdk::rule::Trigger;

    #[test]
    fn an_unverified_voip_number_is_asked_for_a_code() {
        let mut voip = event(Trigger::PhoneLookupComplete);
        voip.phone.line_type = "voip".to_owned();
        let actions = OtpForVoip::on_event(&voip).expect("no error");
        assert!(matches!(
            actions.as_slice(),
            [Action::RequestInfo(_), Action::SendOtp(Channel::Sms)]
        ));
    }

    #[test]
    fn mobile_or_verified_numbers_are_left_alone() {
        let mobile = event(Trigger::PhoneLookupComplete);
        assert!(OtpForVoip::on_event(&mobile).expect("no error").is_empty());
        let mut verified = event(Trigger::PhoneLookupComplete);
        verified.phone.line_type = "voip".to_owned();
        verified.verification.otp_verified = true;
        assert!(OtpForVoip::on_event(&verified)
            .expect("no error")
            .is_empty());
    }
}
