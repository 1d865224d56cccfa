//! A hostile rule for the sandbox tests: it recurses without end until the Wasm stack
//! overflows. The host must turn the trap into a failure of this plugin alone.

use dialgate_sdk::rule::{Action, Event, PluginError, Rule};

/// Recurses forever.
pub struct DeepRecursion;

/// Calls itself with no reachable base case (the compiler cannot see that the one it
/// has is never taken). Each frame keeps a buffer alive across the call and works on
/// the callee's result afterwards, so the optimiser can turn the recursion neither
/// into a loop nor into a tail call.
#[inline(never)]
fn descend(depth: u64) -> u64 {
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    let frame = std::hint::black_box([depth; 16]);
    let below = descend(std::hint::black_box(depth.wrapping_add(1)));
    std::hint::black_box(below.wrapping_add(frame.iter().sum::<u64>()))
}

impl Rule for DeepRecursion {
    fn on_event(event: &Event) -> Result<Vec<Action>, PluginError> {
        let depth = descend(u64::from(event.verification.attempts));
        Ok(vec![Action::AddFlag(format!(
            "returned from depth {depth}"
        ))])
    }
}

dialgate_sdk::register_rule!(DeepRecursion);
