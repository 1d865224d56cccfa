//! `dialgate plugin new` as a new author uses it: outside this repository, each kind
//! of project passes its own tests with `cargo test`, builds to a component with
//! `cargo build --target wasm32-wasip2`, and the server takes it as a plugin of its
//! kind; the rule then fires in real lookups.

use std::path::Path;
use std::process::Command;

use reqwest::Method;
use serde_json::json;

use crate::support::*;

/// Runs `command`, expecting success; returns what it printed.
fn succeed(command: &mut Command) -> String {
    let output = command.output().expect("the command starts");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `cargo` in `dir`, offline, with its build products in `target`.
fn cargo(dir: &Path, target: &Path, args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    succeed(
        Command::new(cargo)
            .args(args)
            .arg("--offline")
            .current_dir(dir)
            .env("CARGO_TARGET_DIR", target)
            // The project's own settings, not this workspace's test build's.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET"),
    )
}

#[tokio::test]
#[ignore = "needs the wasm32-wasip2 target; .ci/test adds it and runs this test"]
async fn new_projects_of_each_kind_test_build_and_load_outside_the_repository() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let target = work.path().join("target");
    let dialgate = env!("CARGO_BIN_EXE_dialgate");
    let mut built = Vec::new();
    for (kind, name, upload_kind) in [
        ("rule", "seen-often", "rule"),
        ("messaging-adapter", "acme-sms", "messaging_adapter"),
        ("lookup-adapter", "acme-lines", "lookup_adapter"),
    ] {
        let dir = work.path().join(name);
        let made = succeed(
            Command::new(dialgate)
                .args(["plugin", "new", kind, name, "--dir"])
                .arg(&dir),
        );
        assert!(made.contains("cargo test"), "{made}");
        // The versions this repository's build resolved, so the build needs no network.
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"),
            dir.join("Cargo.lock"),
        )
        .expect("the lock file");
        let tested = cargo(&dir, &target, &["test"]);
        assert!(tested.contains("test result: ok"), "{tested}");
        cargo(
            &dir,
            &target,
            &["build", "--release", "--target", "wasm32-wasip2"],
        );
        let component = std::fs::read(
            target
                .join("wasm32-wasip2/release")
                .join(format!("{}.wasm", name.replace('-', "_"))),
        )
        .expect("the component");
        built.push((kind, name, upload_kind, component));
    }

    // The server starts once the builds are done, so no connection idles through them.
    let server = TestServer::start().await;
    let tenant = server.tenant("authors").await;
    for (kind, name, upload_kind, component) in built {
        let triggers = if kind == "rule" {
            "&triggers=phone_lookup_complete"
        } else {
            ""
        };
        let uploaded = server
            .raw(
                Method::POST,
                &format!("/v1/plugins?name={name}&kind={upload_kind}&version=0.1.0{triggers}"),
                Some(&tenant.key),
                Some(("application/wasm", component)),
                &[],
            )
            .await;
        let plugin = uploaded.expect(201).clone();
        if kind == "rule" {
            let id = plugin["id"].as_str().expect("an id");
            server
                .put(
                    &format!("/v1/plugins/{id}/config"),
                    &tenant.key,
                    json!({"config": {"max_seen": "1"}}),
                )
                .await
                .expect(200);
            let lookup = || {
                server.post(
                    "/v1/phone/lookup",
                    &tenant.key,
                    json!({"phone": UZ_BEELINE}),
                )
            };
            let first = lookup().await.expect(200).clone();
            assert_eq!(first["flags"], json!([]), "{first}");
            let second = lookup().await.expect(200).clone();
            assert_eq!(second["flags"], json!(["seen_often"]), "{second}");
        }
    }

    // A taken directory and a bad name are refused, and nothing is written.
    let taken = Command::new(dialgate)
        .args(["plugin", "new", "rule", "again", "--dir"])
        .arg(work.path().join("seen-often"))
        .output()
        .expect("runs");
    assert!(!taken.status.success());
    assert!(String::from_utf8_lossy(&taken.stderr).contains("exists already"));
    let bad = Command::new(dialgate)
        .args(["plugin", "new", "rule", "../Escape", "--dir"])
        .arg(work.path().join("bad"))
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    assert!(!work.path().join("bad").exists());
}
