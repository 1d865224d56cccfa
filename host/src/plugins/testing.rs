//! Helpers for the runtime's tests and benchmarks: the in-tree guests built as
//! components, and a sample rule event.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::model::rules::{PhoneView, RuleEvent, Snapshot, Trigger};

/// The in-tree guests the tests and benchmarks run.
const GUESTS: [&str; 22] = [
    "otp-for-voip",
    "flag-sim-swap",
    "velocity",
    "workflow-interpreter",
    "http-sms",
    "kannel",
    "camara-lookup",
    "hostile-spin",
    "hostile-sleep",
    "hostile-memory-bomb",
    "hostile-deep-recursion",
    "hostile-huge-output",
    "hostile-panic",
    "hostile-forbidden-import",
    "hostile-abuser",
    "guest-echo",
    "guest-line",
    "guest-signals",
    "guest-contract-v010",
    "guest-contract-v01-messaging",
    "guest-contract-v011-signals",
    "guest-contract-v01-lookup",
];

/// The component built from the guest crate whose artifact is `artifact` (e.g.
/// `otp_for_voip`). The guests are built once per process with
/// `cargo build --target wasm32-wasip2` into `target/guests`, their own target directory,
/// so the build never waits on the outer cargo's lock. Needs the wasm32-wasip2 target.
pub fn guest_component(artifact: &str) -> Vec<u8> {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("host/ sits in the workspace")
            .to_path_buf();
        let target = workspace.join("target/guests");
        let mut command = Command::new(env!("CARGO"));
        command
            .current_dir(&workspace)
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .arg("--target-dir")
            .arg(&target)
            // Guests ship without debug information: a tenth of the size, and quicker to
            // compile to native code.
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .env("CARGO_PROFILE_RELEASE_STRIP", "true")
            // A 64 KiB stack instead of 1 MiB: a rule's memory starts small, so a fresh
            // instance has little to set up and reset.
            .env(
                "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS",
                "-C link-arg=-zstack-size=65536",
            );
        for guest in GUESTS {
            command.args(["-p", guest]);
        }
        let status = command.status().expect("run cargo");
        assert!(
            status.success(),
            "building the guests failed (rustup target add wasm32-wasip2)"
        );
        target.join("wasm32-wasip2/release")
    });
    let path = dir.join(format!("{artifact}.wasm"));
    std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// A `phone_lookup_complete` event about a US number of `line_type` with no risk, an
/// open verification with no attempts, and no configuration. Change fields as needed.
pub fn event(line_type: &str) -> RuleEvent {
    RuleEvent {
        trigger: Trigger::PhoneLookupComplete,
        tenant_id: "tenant".to_owned(),
        verification: Snapshot {
            id: Some("verification".to_owned()),
            ..Snapshot::default()
        },
        phone: PhoneView {
            e164: "+14155552671".to_owned(),
            line_type: line_type.to_owned(),
            carrier_type: None,
            country: Some("US".to_owned()),
            carrier_name: None,
            carrier_is_original: false,
            risk_score: 0,
            risk_level: "low".to_owned(),
            risk_factors: Vec::new(),
            ported: None,
            ported_days_ago: None,
            sim_swap_days_ago: None,
            line_status: None,
            roaming: None,
        },
        applicant_id: Some("applicant".to_owned()),
        applicant_country: None,
        config: Default::default(),
        fraud: None,
    }
}

pub use super::block_on;
