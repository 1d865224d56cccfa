//! The first-party plugins shipped inside the binary (built from `rules/` and
//! `plugins/` by the build script), which every tenant can install from the catalogue.

use super::registry::Builtin;
use super::Kind;
use crate::model::rules::Trigger;

/// `(artifact name, component bytes)` of each first-party plugin the build produced.
const BYTES: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// What the catalogue says about each first-party plugin, by artifact name.
const CATALOGUE: &[(&str, &str, Kind, &[Trigger], &str)] = &[
    (
        "otp_for_voip",
        "otp-for-voip",
        Kind::Rule,
        &[Trigger::PhoneLookupComplete],
        "Requires a code by SMS for VoIP numbers that have not verified one",
    ),
    (
        "flag_sim_swap",
        "flag-sim-swap",
        Kind::Rule,
        &[Trigger::PhoneLookupComplete],
        "Flags a recent SIM swap and opens a high-priority fraud case",
    ),
    (
        "velocity",
        "velocity",
        Kind::Rule,
        &[Trigger::BeforeSendOtp],
        "Declines a number that asked for too many codes across applicants in a window",
    ),
    (
        "http_sms",
        "http-sms",
        Kind::MessagingAdapter,
        &[],
        "Sends codes through an HTTP SMS API (Twilio- or Vonage-shaped)",
    ),
    (
        "kannel",
        "kannel",
        Kind::MessagingAdapter,
        &[],
        "Sends codes through a Kannel SMS gateway (sendsms) and reads its delivery reports",
    ),
    (
        "camara_lookup",
        "camara-lookup",
        Kind::LookupAdapter,
        &[],
        "Asks an operator's CAMARA SIM Swap API when the SIM card last changed",
    ),
];

/// The workflow interpreter component (see `rules/workflow-interpreter`), which runs
/// tenants' declarative rules; `None` when the build skipped the guests.
pub fn interpreter() -> Option<&'static [u8]> {
    BYTES
        .iter()
        .find(|(artifact, _)| *artifact == "workflow_interpreter")
        .map(|(_, bytes)| *bytes)
}

/// The first-party plugins this binary carries.
pub fn all() -> Vec<Builtin> {
    CATALOGUE
        .iter()
        .filter_map(|(artifact, name, kind, triggers, description)| {
            let (_, bytes) = BYTES.iter().find(|(built, _)| built == artifact)?;
            Some(Builtin {
                name,
                kind: *kind,
                description,
                triggers,
                bytes,
            })
        })
        .collect()
}
