//! Embeds data and first-party plugins into the binary.
//!
//! - libphonenumber's carrier prefix tables (`data/carrier/*.txt`): writes
//!   `carrier_tables.rs` into `OUT_DIR`, a slice of `(calling code, table text)` pairs
//!   that `phone::carrier` parses once at start-up.
//! - the first-party plugins of `rules/` and `plugins/`: builds them with
//!   `cargo build --release --target wasm32-wasip2` (adding the target with rustup when
//!   it is missing) into `target/guests`, their own target directory so the build never
//!   waits on the outer cargo's lock, and writes `builtins.rs`, a slice of
//!   `(artifact name, component bytes)` pairs.

use std::path::Path;
use std::process::Command;
use std::{env, fs, path::PathBuf};

/// First-party guests: (package, artifact).
const GUESTS: &[(&str, &str)] = &[
    ("otp-for-voip", "otp_for_voip"),
    ("flag-sim-swap", "flag_sim_swap"),
    ("velocity", "velocity"),
    ("workflow-interpreter", "workflow_interpreter"),
    ("http-sms", "http_sms"),
    ("kannel", "kannel"),
    ("camara-lookup", "camara_lookup"),
];

fn main() {
    carrier_tables();
    builtins();
}

fn builtins() {
    let host =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = host
        .parent()
        .expect("host/ sits in the workspace")
        .to_path_buf();
    for dir in ["sdk/src", "sdk/wit", "sdk/Cargo.toml", "rules", "plugins"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=DIALGATE_SKIP_GUESTS");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("builtins.rs");
    if env::var_os("DIALGATE_SKIP_GUESTS").is_some() {
        fs::write(&out, "&[]\n").expect("write builtins.rs");
        return;
    }
    ensure_wasm_target();
    let present: Vec<(&str, &str)> = GUESTS
        .iter()
        .copied()
        .filter(|(package, _)| {
            ["rules", "plugins"].iter().any(|dir| {
                workspace
                    .join(dir)
                    .join(package)
                    .join("Cargo.toml")
                    .exists()
            })
        })
        .collect();
    let target = workspace.join("target/guests");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
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
    for (package, _) in &present {
        command.args(["-p", package]);
    }
    // The outer build's flags and wrappers (clippy's, say) are for the host, not guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        command.env_remove(var);
    }
    let status = command
        .status()
        .expect("run cargo to build the first-party plugins");
    assert!(
        status.success(),
        "building the first-party plugins failed; see the cargo output above"
    );
    let dir = target.join("wasm32-wasip2/release");
    let mut list = String::from("&[\n");
    for (_, artifact) in &present {
        let path = dir.join(format!("{artifact}.wasm"));
        list.push_str(&format!(
            "    ({artifact:?}, include_bytes!({:?}).as_slice()),\n",
            path.display().to_string()
        ));
    }
    list.push_str("]\n");
    fs::write(&out, list).expect("write builtins.rs");
}

/// Adds the wasm32-wasip2 target through rustup when it is missing.
fn ensure_wasm_target() {
    let sysroot = Command::new(env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned()))
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| PathBuf::from(text.trim()));
    let installed = sysroot
        .as_deref()
        .map(|root| root.join("lib/rustlib/wasm32-wasip2"))
        .is_some_and(|dir: PathBuf| Path::new(&dir).exists());
    if !installed {
        let added = Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .status();
        assert!(
            added.is_ok_and(|status| status.success()),
            "the wasm32-wasip2 target is missing and `rustup target add wasm32-wasip2` failed"
        );
    }
}

fn carrier_tables() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("data/carrier");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut entries: Vec<(String, PathBuf)> = fs::read_dir(&dir)
        .expect("host/data/carrier exists")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .filter_map(|path| {
            let stem = path.file_stem()?.to_str()?.to_owned();
            stem.chars()
                .all(|c| c.is_ascii_digit())
                .then_some((stem, path))
        })
        .collect();
    entries.sort();
    let mut out = String::from("&[\n");
    for (code, path) in entries {
        out.push_str(&format!(
            "    ({code}, include_str!({:?})),\n",
            path.display().to_string()
        ));
    }
    out.push_str("]\n");
    let dest =
        PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("carrier_tables.rs");
    fs::write(dest, out).expect("write carrier_tables.rs");
}
