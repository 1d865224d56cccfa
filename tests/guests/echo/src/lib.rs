//! A test rule that tells the end-to-end tests what it was told: at every trigger it
//! adds one flag spelling out the event's fields, and it performs the action the
//! tenant names in its configuration (`action` = `decline`, `review`, `block`,
//! `set_risk`, `route`, `request_info`, `create_case` or `send_otp_voice`) when the
//! trigger matches `on` (a trigger name, default every trigger). A case it opens has
//! the configured `priority` (default `low`), valid or not.

use dialgate_sdk::rule::{
    Action, Channel, CreateCase, Event, PluginError, Rule, SetRisk, VerificationStatus,
};

/// The rule.
pub struct Echo;

/// The report's spelling of a status, without spaces.
fn status_name(status: VerificationStatus) -> &'static str {
    match status {
        VerificationStatus::Approved => "Approved",
        VerificationStatus::Declined => "Declined",
        VerificationStatus::InReview => "InReview",
        VerificationStatus::NotFinished => "NotFinished",
    }
}

/// The wire name of a channel, `None` when absent.
fn channel_name(channel: Option<Channel>) -> &'static str {
    match channel {
        None => "None",
        Some(Channel::Sms) => "sms",
        Some(Channel::Voice) => "voice",
        Some(Channel::Whatsapp) => "whatsapp",
        Some(Channel::Viber) => "viber",
        Some(Channel::Telegram) => "telegram",
    }
}

/// One line describing the event: `trigger|status|channel|attempts|otp_verified|e164|line type|applicant|has id|tenant`.
pub fn describe(event: &Event) -> String {
    let v = &event.verification;
    format!(
        "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
        event.trigger.name(),
        status_name(v.status),
        channel_name(v.channel),
        v.attempts,
        v.otp_verified,
        event.phone.e164,
        event.phone.line_type,
        event.applicant_id.as_deref().unwrap_or("-"),
        v.id.is_some(),
        event.tenant_id,
    )
}

impl Rule for Echo {
    fn on_event(event: &Event) -> Result<Vec<Action>, PluginError> {
        let mut actions = vec![Action::AddFlag(describe(event))];
        let on = event.config("on");
        let matches = on.is_none_or(|on| on == event.trigger.name());
        if matches {
            match event.config("action") {
                None => {}
                Some("decline") => actions.push(Action::Decline("echo declined".into())),
                Some("review") => actions.push(Action::Review),
                Some("approve") => actions.push(Action::Approve),
                Some("block") => actions.push(Action::Block("echo blocked".into())),
                Some("set_risk") => actions.push(Action::SetRisk(SetRisk {
                    factor: "fraud_history".into(),
                    contribution: 70,
                    details: "echo says so".into(),
                })),
                Some("route") => actions.push(Action::Route("backup-sms".into())),
                Some("request_info") => actions.push(Action::RequestInfo("id document".into())),
                Some("create_case") => actions.push(Action::CreateCase(CreateCase {
                    case_type: "review".into(),
                    priority: event.config("priority").unwrap_or("low").into(),
                    title: "echo case".into(),
                })),
                Some("send_otp_voice") => actions.push(Action::SendOtp(Channel::Voice)),
                Some(other) => {
                    return Err(PluginError::new(
                        "bad-config",
                        format!("unknown action {other}"),
                    ))
                }
            }
        }
        Ok(actions)
    }
}

dialgate_sdk::register_rule!(Echo);
