//! The in-tree guests build with `cargo build --target wasm32-wasip2` into components of
//! the contract's worlds: the rules in `rules/` (but the workflow interpreter, which
//! exports `evaluate` and imports nothing but the types it shares) and the hostile rules in
//! `tests/hostile/` export `on-event` and import only the rule world's interfaces and
//! WASI, never outbound HTTP (except `hostile-forbidden-import`, which must); the
//! adapters in `plugins/` export their world's functions and import only what their
//! world grants, never the key-value store. Needs the wasm32-wasip2 target; `.ci/test`
//! adds it and runs this test, which plain `cargo test` skips. The guests build into
//! `target/guests`, or `$DIALGATE_GUESTS_TARGET_DIR` when set.

use std::path::{Path, PathBuf};
use std::process::Command;

use wit_component::DecodedWasm;
use wit_parser::WorldItem;

/// A world of the contract: what a component of it exports and may import.
struct World {
    exports: &'static [&'static str],
    granted: &'static [&'static str],
}

const RULE: World = World {
    exports: &["on-event"],
    granted: &["log", "clock", "kv", "types", "rule-types"],
};

const MESSAGING_ADAPTER: World = World {
    exports: &["send-message", "parse-callback"],
    granted: &[
        "log",
        "clock",
        "http-client",
        "config",
        "types",
        "messaging-types",
    ],
};

const WORKFLOW_INTERPRETER: World = World {
    exports: &["evaluate"],
    granted: &["types", "rule-types", "workflow-types"],
};

const LOOKUP_ADAPTER: World = World {
    exports: &["lookup"],
    granted: &[
        "log",
        "clock",
        "http-client",
        "config",
        "types",
        "lookup-types",
    ],
};

/// (package, artifact, world) of every guest that must stay within its world.
const GUESTS: [(&str, &str, &World); 14] = [
    ("otp-for-voip", "otp_for_voip", &RULE),
    ("flag-sim-swap", "flag_sim_swap", &RULE),
    ("velocity", "velocity", &RULE),
    (
        "workflow-interpreter",
        "workflow_interpreter",
        &WORKFLOW_INTERPRETER,
    ),
    ("hostile-spin", "hostile_spin", &RULE),
    ("hostile-memory-bomb", "hostile_memory_bomb", &RULE),
    ("hostile-deep-recursion", "hostile_deep_recursion", &RULE),
    ("hostile-huge-output", "hostile_huge_output", &RULE),
    ("hostile-panic", "hostile_panic", &RULE),
    ("guest-signals", "guest_signals", &RULE),
    ("http-sms", "http_sms", &MESSAGING_ADAPTER),
    ("kannel", "kannel", &MESSAGING_ADAPTER),
    ("camara-lookup", "camara_lookup", &LOOKUP_ADAPTER),
    // Checked below for the one import it must not have.
    (
        "hostile-forbidden-import",
        "hostile_forbidden_import",
        &RULE,
    ),
];

const FORBIDDEN_IMPORT: &str = "hostile-forbidden-import";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("sdk/ sits in the workspace")
        .to_path_buf()
}

/// Builds the guests into their own target directory, so the outer cargo's lock on the
/// workspace's target directory is never waited on.
fn build(target_dir: &Path) {
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(workspace())
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .arg("--target-dir")
        .arg(target_dir)
        // The same profile as the host's build of the guests (host/build.rs), so the
        // two share one build instead of replacing each other's.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        // A 64 KiB stack instead of 1 MiB: a rule's memory starts small, so a fresh
        // instance has little to set up and reset.
        .env(
            "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS",
            "-C link-arg=-zstack-size=65536",
        );
    for (package, _, _) in GUESTS {
        command.args(["-p", package]);
    }
    let status = command.status().expect("run cargo");
    assert!(
        status.success(),
        "building the guests for wasm32-wasip2 failed (rustup target add wasm32-wasip2)"
    );
}

/// The exports and the interface imports of the component at `path`.
fn exports_and_imports(path: &Path) -> (Vec<String>, Vec<String>) {
    let bytes = std::fs::read(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let DecodedWasm::Component(resolve, world) =
        wit_component::decode(&bytes).expect("decodes as a component")
    else {
        panic!("{} is a WIT package, not a component", path.display());
    };
    let world = &resolve.worlds[world];
    let exports = world
        .exports
        .keys()
        .map(|key| resolve.name_world_key(key))
        .collect();
    let imports = world
        .imports
        .iter()
        .filter(|(_, item)| matches!(item, WorldItem::Interface { .. }))
        .map(|(key, _)| resolve.name_world_key(key))
        .collect();
    (exports, imports)
}

#[test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
fn in_tree_guests_are_components_of_their_worlds() {
    let target_dir = std::env::var_os("DIALGATE_GUESTS_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/guests"));
    build(&target_dir);
    for (package, artifact, world) in GUESTS {
        let path = target_dir.join(format!("wasm32-wasip2/release/{artifact}.wasm"));
        let (exports, imports) = exports_and_imports(&path);
        assert_eq!(exports, world.exports, "{package} exports");
        for import in &imports {
            if package == FORBIDDEN_IMPORT
                && *import == format!("dialgate:plugin/http-client@{}", dialgate_sdk::API_VERSION)
            {
                continue;
            }
            let allowed = import.starts_with("wasi:")
                || world.granted.iter().any(|name| {
                    import == &format!("dialgate:plugin/{name}@{}", dialgate_sdk::API_VERSION)
                });
            assert!(allowed, "{package} imports {import}");
            assert!(
                !import.starts_with("wasi:http") && !import.starts_with("wasi:sockets"),
                "{package} imports {import}"
            );
        }
        if package == FORBIDDEN_IMPORT {
            assert!(
                imports.iter().any(|import| *import
                    == format!("dialgate:plugin/http-client@{}", dialgate_sdk::API_VERSION)),
                "{package} must import outbound HTTP to be of use: {imports:?}"
            );
        }
    }
}
