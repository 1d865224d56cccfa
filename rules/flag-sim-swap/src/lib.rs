//! The `flag_sim_swap` workflow rule as code: when the number's SIM card changed fewer
//! than `threshold_days` days ago (configuration, default 7), flag the verification
//! `recent_sim_swap` and open a high-priority fraud case.

use dialgate_sdk::rule::{Action, CreateCase, Event, PluginError, Rule};

/// Days within which a SIM change counts as recent when the tenant sets nothing.
const DEFAULT_THRESHOLD_DAYS: u32 = 7;

/// The rule.
pub struct FlagSimSwap;

impl Rule for FlagSimSwap {
    fn on_event(event: &Event) -> Result<Vec<Action>, PluginError> {
        let threshold = match event.config("threshold_days") {
            None => DEFAULT_THRESHOLD_DAYS,
            Some(_) => event.config_u32("threshold_days").ok_or_else(|| {
                PluginError::new(
                    "bad-config",
                    "threshold_days must be a whole number of days",
                )
            })?,
        };
        match event.phone.sim_swap_days_ago {
            Some(days) if days < threshold => Ok(vec![
                Action::AddFlag("recent_sim_swap".to_owned()),
                Action::CreateCase(CreateCase {
                    case_type: "fraud".to_owned(),
                    priority: "high".to_owned(),
                    title: "Recent SIM swap detected".to_owned(),
                }),
            ]),
            _ => Ok(Vec::new()),
        }
    }
}

dialgate_sdk::register_rule!(FlagSimSwap);

#[cfg(test)]
mod tests {
    use super::*;
    use dialgate_sdk::rule::testing::event;
    use dialgate_sdk::rule::Trigger;

    fn swapped(days: Option<u32>, config: &[(&str, &str)]) -> Event {
        let mut event = event(Trigger::PhoneLookupComplete);
        event.phone.sim_swap_days_ago = days;
        event.config = config
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        event
    }

    #[test]
    fn a_recent_swap_is_flagged_with_a_fraud_case() {
        let actions = FlagSimSwap::on_event(&swapped(Some(2), &[])).expect("no error");
        assert!(
            matches!(actions.as_slice(), [Action::AddFlag(flag), Action::CreateCase(case)]
            if flag == "recent_sim_swap" && case.priority == "high")
        );
    }

    #[test]
    fn old_or_unknown_swaps_are_left_alone() {
        assert!(FlagSimSwap::on_event(&swapped(Some(7), &[]))
            .expect("no error")
            .is_empty());
        assert!(FlagSimSwap::on_event(&swapped(None, &[]))
            .expect("no error")
            .is_empty());
    }

    #[test]
    fn the_threshold_comes_from_configuration() {
        let wide = swapped(Some(20), &[("threshold_days", "30")]);
        assert_eq!(FlagSimSwap::on_event(&wide).expect("no error").len(), 2);
        let bad = swapped(Some(2), &[("threshold_days", "soon")]);
        assert_eq!(
            FlagSimSwap::on_event(&bad).expect_err("bad config").code,
            "bad-config"
        );
    }
}
