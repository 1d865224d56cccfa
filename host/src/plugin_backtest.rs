//! `dialgate plugin backtest`: asks a running server to backtest an uploaded version
//! of a tenant's rule plugin over the tenant's recorded traffic
//! (`POST /v1/plugins/{id}/backtest`) and prints a readable summary of what would have
//! changed, or the answer itself with `--json`. An error answer is printed and the
//! command fails.

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::{json, Value};

/// Arguments of `dialgate plugin backtest`.
#[derive(Debug, clap::Args)]
pub struct BacktestArgs {
    /// The server's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "DIALGATE_URL")]
    pub server: String,
    /// The tenant's API key.
    #[arg(long, env = "DIALGATE_API_KEY", hide_env_values = true)]
    pub key: String,
    /// The plugin's id (`plg_…`).
    #[arg(long)]
    pub plugin: String,
    /// The uploaded version to backtest.
    #[arg(long)]
    pub version: String,
    /// Days of recorded traffic (1 to 90) [server's default: 7].
    #[arg(long)]
    pub days: Option<u32>,
    /// Most verifications to replay, newest first [server's default: 100000].
    #[arg(long)]
    pub max_verifications: Option<u32>,
    /// Time budget in milliseconds (100 to 10000) [server's default: 5000].
    #[arg(long)]
    pub time_budget_ms: Option<u64>,
    /// Print the server's answer as JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: BacktestArgs) -> anyhow::Result<()> {
    let mut body = json!({"version": args.version});
    for (name, value) in [
        ("days", args.days.map(u64::from)),
        ("max_verifications", args.max_verifications.map(u64::from)),
        ("time_budget_ms", args.time_budget_ms),
    ] {
        if let Some(value) = value {
            body[name] = json!(value);
        }
    }
    let url = format!(
        "{}/v1/plugins/{}/backtest",
        args.server.trim_end_matches('/'),
        args.plugin
    );
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&args.key)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let text = response.text().await.context("the server's answer")?;
    let answer: Value = serde_json::from_str(&text)
        .with_context(|| format!("the server answered {status} with no JSON: {text}"))?;
    if !status.is_success() {
        let error = &answer["error"];
        let field = error["field"]
            .as_str()
            .map(|field| format!(" (field {field})"))
            .unwrap_or_default();
        anyhow::bail!(
            "the server answered {status}: {}: {}{field}",
            error["code"].as_str().unwrap_or("error"),
            error["message"].as_str().unwrap_or(&text),
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", summary(&answer));
    }
    Ok(())
}

/// `counts` (an object of name → count) as `name (n), …`, or `none`.
fn names(counts: &Value) -> String {
    let counts: BTreeMap<String, u64> = serde_json::from_value(counts.clone()).unwrap_or_default();
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|(name, n)| format!("{name} ({n})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A readable summary of a backtest's answer.
pub fn summary(answer: &Value) -> String {
    let mut out = String::new();
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let ended = if answer["complete"] == true {
        "complete".to_owned()
    } else {
        format!(
            "incomplete: stopped by {}, reached verifications begun {}",
            text(&answer["stopped"]),
            text(&answer["reached"])
        )
    };
    out.push_str(&format!(
        "backtest of {} over the last {} days: {} verifications replayed, {ended}, {} ms\n",
        text(&answer["candidate"]),
        answer["days"],
        answer["scanned"],
        answer["elapsed_ms"],
    ));
    for outcome in [
        "unchanged",
        "would_decline",
        "would_review",
        "would_approve",
    ] {
        out.push_str(&format!(
            "  {:<14} {}\n",
            outcome.replace('_', " "),
            answer["outcomes"][outcome]
        ));
    }
    out.push_str(&format!(
        "  flags added:   {}\n",
        names(&answer["flags_added"])
    ));
    out.push_str(&format!(
        "  flags removed: {}\n",
        names(&answer["flags_removed"])
    ));
    out.push_str(&format!(
        "  cases added:   {}\n",
        names(&answer["cases_added"])
    ));
    out.push_str(&format!(
        "  cases removed: {}\n",
        names(&answer["cases_removed"])
    ));
    let failures = &answer["failures"];
    out.push_str(&format!(
        "  failures:      {} runs in {} verifications: {}\n",
        failures["runs"],
        failures["verifications"],
        names(&failures["by_kind"])
    ));
    for outcome in ["would_decline", "would_review", "would_approve"] {
        let Some(examples) = answer["examples"][outcome].as_array() else {
            continue;
        };
        for example in examples {
            let why: Vec<String> = example["responsible"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|run| {
                    let actions: Vec<String> = run["actions"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or_default()
                        .iter()
                        .map(|action| text(&action["type"]))
                        .collect();
                    let did = match run["error"]["kind"].as_str() {
                        Some(kind) => format!("failed: {kind}"),
                        None => actions.join(", "),
                    };
                    format!("{} at {}: {did}", text(&run["rule"]), text(&run["trigger"]))
                })
                .collect();
            out.push_str(&format!(
                "  e.g. {} {}: {} -> {} ({})\n",
                outcome.replace('_', " "),
                text(&example["verification_id"]),
                text(&example["recorded_status"]),
                text(&example["would_be_status"]),
                why.join("; ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backtest_summary_names_outcomes_failures_and_examples() {
        let answer = json!({
            "candidate": "plugin velocity 2.0.0", "days": 7, "scanned": 3,
            "complete": false, "stopped": "time_budget", "reached": "2026-01-01T00:00:00Z",
            "elapsed_ms": 12,
            "outcomes": {"unchanged": 1, "would_decline": 2, "would_review": 0, "would_approve": 0},
            "flags_added": {"fast": 2}, "flags_removed": {}, "cases_added": {}, "cases_removed": {},
            "failures": {"runs": 1, "verifications": 1, "by_kind": {"timeout": 1}},
            "examples": {"would_decline": [{
                "verification_id": "v1", "recorded_status": "Approved", "would_be_status": "Declined",
                "responsible": [{"trigger": "otp_sent", "rule": "velocity",
                    "actions": [{"type": "decline", "reason": "too fast"}]}]
            }], "would_review": [], "would_approve": []}
        });
        let printed = summary(&answer);
        assert!(printed.contains("plugin velocity 2.0.0"), "{printed}");
        assert!(printed.contains("stopped by time_budget"), "{printed}");
        assert!(printed.contains("would decline  2"), "{printed}");
        assert!(printed.contains("flags added:   fast (2)"), "{printed}");
        assert!(
            printed.contains("1 runs in 1 verifications: timeout (1)"),
            "{printed}"
        );
        assert!(
            printed.contains(
                "e.g. would decline v1: Approved -> Declined (velocity at otp_sent: decline)"
            ),
            "{printed}"
        );
    }
}
