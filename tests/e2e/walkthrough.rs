//! The README's walk-through with curl, run as written: its shell blocks, joined, run
//! by bash against a real server (the address swapped for the test server's), must
//! create a tenant, look a number up, send a code, read it from the dev outbox,
//! verify it and read the report, without anything copied by hand.

use crate::support::*;

/// The shell blocks of the README's walk-through section, joined.
fn walkthrough_script() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("the README");
    let start = readme
        .find("## Walk-through with curl")
        .expect("a walk-through section");
    let section = &readme[start..];
    let section = &section[..section[3..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 3)];
    let mut script = String::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "```sh" {
            for line in lines.by_ref() {
                if line.trim() == "```" {
                    break;
                }
                script.push_str(line);
                script.push('\n');
            }
        }
    }
    script
}

#[tokio::test]
async fn the_readme_walkthrough_pastes_as_written() {
    let server = TestServer::start().await;
    let script = walkthrough_script();
    assert!(script.contains("send-otp"), "{script}");
    let script = script.replace("localhost:8080", server.base.trim_start_matches("http://"));
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .env("DIALGATE_OPERATOR_KEY", OPERATOR_KEY)
            .output()
    })
    .await
    .expect("the script's thread")
    .expect("bash, curl and jq (.ci/test installs them)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the walk-through failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    // What each step printed, in order: the lookup, the check, the report, the trail.
    let answers: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|err| panic!("answers are JSON ({err}): {stdout}"));
    assert_eq!(answers.len(), 4, "{stdout}");
    assert_eq!(answers[0]["carrier"]["name"], "Beeline", "{stdout}");
    assert_eq!(answers[1]["verification_status"], "verified", "{stdout}");
    assert_eq!(answers[2]["phone"]["status"], "Approved", "{stdout}");
    assert_eq!(
        answers[2]["phone"]["full_number"], "+14155552671",
        "{stdout}"
    );
    assert_eq!(
        answers[2]["messages"][0]["provider"], "dev-outbox",
        "{stdout}"
    );
    assert!(
        answers[3]["events"]
            .as_array()
            .is_some_and(|events| !events.is_empty()),
        "{stdout}"
    );
}
