//! A hostile rule for the sandbox tests: it returns an enormous result. By default one
//! `Decline` whose reason is 4 MiB long; with the configuration `mode=many`, 100,000
//! `AddFlag` actions of 100 bytes each. The host must cap what it accepts back.

use dialgate_sdk::rule::{Action, Event, PluginError, Rule};

/// The length of the default mode's decline reason: 4 MiB.
pub const REASON_BYTES: usize = 4 << 20;
/// How many flags the `many` mode returns.
pub const FLAG_COUNT: usize = 100_000;
/// The length of each of those flags.
pub const FLAG_BYTES: usize = 100;

/// Returns far more than any host should take.
pub struct HugeOutput;

/// The flag numbered `index`, padded to [`FLAG_BYTES`].
fn flag(index: usize) -> String {
    format!("{index:0>width$}", width = FLAG_BYTES)
}

impl Rule for HugeOutput {
    fn on_event(event: &Event) -> Result<Vec<Action>, PluginError> {
        if event.config("mode") == Some("many") {
            return Ok((0..FLAG_COUNT).map(|i| Action::AddFlag(flag(i))).collect());
        }
        Ok(vec![Action::Decline("x".repeat(REASON_BYTES))])
    }
}

dialgate_sdk::register_rule!(HugeOutput);

#[cfg(test)]
mod tests {
    use super::*;
    use dialgate_sdk::rule::testing::event;
    use dialgate_sdk::rule::Trigger;

    #[test]
    fn the_default_is_one_four_mebibyte_decline() {
        let actions = HugeOutput::on_event(&event(Trigger::BeforeSendOtp)).expect("ok");
        assert!(
            matches!(actions.as_slice(), [Action::Decline(reason)] if reason.len() == REASON_BYTES)
        );
    }

    #[test]
    fn many_mode_returns_a_hundred_thousand_hundred_byte_flags() {
        let mut event = event(Trigger::BeforeSendOtp);
        event.config = vec![("mode".to_owned(), "many".to_owned())];
        let actions = HugeOutput::on_event(&event).expect("ok");
        assert_eq!(actions.len(), FLAG_COUNT);
        assert!(actions
            .iter()
            .all(|action| matches!(action, Action::AddFlag(flag) if flag.len() == FLAG_BYTES)));
    }
}
