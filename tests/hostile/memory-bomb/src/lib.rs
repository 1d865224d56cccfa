//! A hostile rule for the sandbox tests: it allocates without end. The host's memory
//! cap must stop it.

use dialgate_sdk::rule::{Action, Event, PluginError, Rule};

/// Allocates a mebibyte at a time, forever.
pub struct MemoryBomb;

impl Rule for MemoryBomb {
    fn on_event(_event: &Event) -> Result<Vec<Action>, PluginError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
        }
    }
}

dialgate_sdk::register_rule!(MemoryBomb);
