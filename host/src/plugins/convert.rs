//! Conversions between the host's rule vocabulary ([`RuleEvent`], [`RuleAction`]) and
//! the types generated from the WIT contract.

use crate::model::{Channel, ReportStatus};

use super::wit;
use crate::model::rules::{RuleAction, RuleEvent, Trigger};

/// The fraud signals as the event carries them.
fn fraud(signals: Option<&crate::model::rules::FraudSignals>) -> Option<wit::FraudSignals> {
    signals.map(|signals| wit::FraudSignals {
        pumping_risk: signals.pumping_risk,
        prefix_conversion_rate: signals.prefix_conversion_rate,
        prefix_sends_hour: signals.prefix_sends_1h,
        geo_permitted: signals.geo_permitted,
    })
}

fn trigger(trigger: Trigger) -> wit::Trigger {
    match trigger {
        Trigger::PhoneLookupComplete => wit::Trigger::PhoneLookupComplete,
        Trigger::BeforeSendOtp => wit::Trigger::BeforeSendOtp,
        Trigger::OtpSent => wit::Trigger::OtpSent,
        Trigger::OtpDeliveryUpdate => wit::Trigger::OtpDeliveryUpdate,
        Trigger::OtpVerified => wit::Trigger::OtpVerified,
        Trigger::OtpFailed => wit::Trigger::OtpFailed,
        Trigger::VerificationCompleted => wit::Trigger::VerificationCompleted,
    }
}

fn status(status: ReportStatus) -> wit::VerificationStatus {
    match status {
        ReportStatus::Approved => wit::VerificationStatus::Approved,
        ReportStatus::Declined => wit::VerificationStatus::Declined,
        ReportStatus::InReview => wit::VerificationStatus::InReview,
        ReportStatus::NotFinished => wit::VerificationStatus::NotFinished,
    }
}

pub(super) fn channel_to_wit(channel: Channel) -> wit::Channel {
    match channel {
        Channel::Sms => wit::Channel::Sms,
        Channel::Voice => wit::Channel::Voice,
        Channel::Whatsapp => wit::Channel::Whatsapp,
        Channel::Viber => wit::Channel::Viber,
        Channel::Telegram => wit::Channel::Telegram,
    }
}

fn channel_from_wit(channel: wit::Channel) -> Channel {
    match channel {
        wit::Channel::Sms => Channel::Sms,
        wit::Channel::Voice => Channel::Voice,
        wit::Channel::Whatsapp => Channel::Whatsapp,
        wit::Channel::Viber => Channel::Viber,
        wit::Channel::Telegram => Channel::Telegram,
    }
}

/// The WIT event for a host event.
pub(super) fn event(event: &RuleEvent) -> wit::Event {
    event_taken(&mut event.clone())
}

/// The WIT event for a host event, taking its text rather than copying it: `event`
/// is left with empty strings and lists.
pub(super) fn event_taken(event: &mut RuleEvent) -> wit::Event {
    use std::mem::take;
    let carrier_type = event.phone.carrier_type();
    let verification = &mut event.verification;
    let phone = &mut event.phone;
    wit::Event {
        trigger: trigger(event.trigger),
        tenant_id: take(&mut event.tenant_id),
        verification: wit::VerificationSnapshot {
            id: take(&mut verification.id),
            status: status(verification.status),
            channel: verification.channel.map(channel_to_wit),
            attempts: verification.attempts,
            resends: verification.resends,
            flags: take(&mut verification.flags),
            otp_verified: verification.otp_verified,
        },
        phone: wit::PhoneIntelligence {
            e164: take(&mut phone.e164),
            line_type: take(&mut phone.line_type),
            carrier_type,
            country: take(&mut phone.country),
            carrier_name: take(&mut phone.carrier_name),
            carrier_is_original: phone.carrier_is_original,
            risk_score: phone.risk_score,
            risk_level: take(&mut phone.risk_level),
            risk_factors: take(&mut phone.risk_factors)
                .into_iter()
                .map(|factor| wit::RiskFactor {
                    factor: factor.factor,
                    contribution: factor.contribution,
                    details: factor.details,
                })
                .collect(),
            ported: phone.ported,
            ported_days_ago: phone.ported_days_ago,
            sim_swap_days_ago: phone.sim_swap_days_ago,
            line_status: take(&mut phone.line_status),
            roaming: phone.roaming,
        },
        applicant_id: take(&mut event.applicant_id),
        applicant_country: take(&mut event.applicant_country),
        config: take(&mut event.config).into_iter().collect(),
        fraud: fraud(event.fraud.as_ref()),
    }
}

/// The host action for a WIT action.
pub(super) fn action(action: wit::Action) -> RuleAction {
    match action {
        wit::Action::Approve => RuleAction::Approve,
        wit::Action::Review => RuleAction::Review,
        wit::Action::Decline(reason) => RuleAction::Decline { reason },
        wit::Action::AddFlag(flag) => RuleAction::AddFlag { flag },
        wit::Action::SetRisk(risk) => RuleAction::SetRisk {
            factor: risk.factor,
            contribution: risk.contribution,
            details: risk.details,
        },
        wit::Action::CreateCase(case) => RuleAction::CreateCase {
            case_type: case.case_type,
            priority: case.priority,
            title: case.title,
        },
        wit::Action::RequestInfo(info_needed) => RuleAction::RequestInfo { info_needed },
        wit::Action::SendOtp(channel) => RuleAction::SendOtp {
            channel: channel_from_wit(channel),
        },
        wit::Action::Route(provider) => RuleAction::Route { provider },
        wit::Action::Block(reason) => RuleAction::Block { reason },
    }
}
