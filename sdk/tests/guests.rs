//! The first-party rules in `rules/` build with `cargo build --target wasm32-wasip2` into
//! components of the contract's `rule` world: they export `on-event` and import only
//! the rule world's interfaces and WASI, never outbound HTTP. Needs the wasm32-wasip2
//! target; `.ci/test` adds it and runs this test, which plain `cargo test` skips.

use std::path::{Path, PathBuf};
use std::process::Command;

use wit_component::DecodedWasm;
use wit_parser::WorldItem;

const RULES: [(&str, &str); 2] = [
    ("otp-for-voip", "otp_for_voip"),
    ("flag-sim-swap", "flag_sim_swap"),
];

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("sdk/ sits in the workspace")
        .to_path_buf()
}

/// Builds the rules into their own target directory, so the outer cargo's lock on the
/// workspace's target directory is never waited on.
fn build(target_dir: &Path) {
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(workspace())
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .arg("--target-dir")
        .arg(target_dir);
    for (package, _) in RULES {
        command.args(["-p", package]);
    }
    let status = command.status().expect("run cargo");
    assert!(
        status.success(),
        "building the rules for wasm32-wasip2 failed (rustup target add wasm32-wasip2)"
    );
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn first_party_rules_are_components_of_the_rule_world() {
    let target_dir = workspace().join("target/guests");
    build(&target_dir);
    for (package, artifact) in RULES {
        let path = target_dir.join(format!("wasm32-wasip2/release/{artifact}.wasm"));
        let bytes = std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        let DecodedWasm::Component(resolve, world) =
            wit_component::decode(&bytes).expect("decodes as a component")
        else {
            panic!("{package} is a WIT package, not a component");
        };
        let world = &resolve.worlds[world];
        let exports: Vec<String> = world
            .exports
            .keys()
            .map(|key| resolve.name_world_key(key))
            .collect();
        assert_eq!(exports, ["on-event"], "{package} exports");
        let imports: Vec<String> = world
            .imports
            .iter()
            .filter(|(_, item)| matches!(item, WorldItem::Interface { .. }))
            .map(|(key, _)| resolve.name_world_key(key))
            .collect();
        for import in &imports {
            let allowed = import.starts_with("wasi:")
                || ["log", "clock", "kv", "types", "rule-types"]
                    .iter()
                    .any(|name| import == &format!("dialgate:plugin/{name}@0.1.0"));
            assert!(allowed, "{package} imports {import}");
            assert!(
                !import.starts_with("wasi:http") && !import.starts_with("wasi:sockets"),
                "{package} imports {import}"
            );
        }
    }
}
