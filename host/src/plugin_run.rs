//! `dialgate plugin run FILE ...`: runs a plugin once under the production sandbox
//! limits and prints what it did, for plugin authors: a rule on an event; a messaging
//! adapter's `send-message` (against the network, a loopback simulator, or scripted answers)
//! or `parse-callback` on a recorded callback; a lookup adapter's `lookup`. For an
//! adapter it also prints every request the adapter sent and what came back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::Deserialize;
use serde_json::json;

use crate::model::rules::RuleEvent;
use crate::plugins::{
    AdapterCall, AdapterMessage, CallbackRequest, HttpGrant, Kind, Limits, PluginRuntime, Scope,
    Trial,
};
use crate::store::Db;

/// Arguments of `dialgate plugin run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The component (`.wasm`) to run.
    pub file: PathBuf,
    /// A rule's event, as JSON (the dry-run API's `event`): at least `trigger` and
    /// `phone.e164`.
    #[arg(long)]
    pub event: Option<PathBuf>,
    /// Configuration entries `key=value` (repeatable): a rule's replace the event's
    /// `config`; an adapter's are its configuration, beside the `callback_url` and
    /// `provider_id` the host gives adapters (overridable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// An adapter's secrets `key=value` (repeatable).
    #[arg(long = "secret", value_name = "KEY=VALUE")]
    pub secrets: Vec<String>,
    /// Keep a rule's key-value data in this directory between runs [default: a
    /// temporary directory, removed afterwards].
    #[arg(long)]
    pub kv_dir: Option<PathBuf>,
    /// A messaging adapter: call `send-message` with a code message to this number.
    #[arg(long, value_name = "E164")]
    pub send_to: Option<String>,
    /// The message's text [default: "Your verification code is 123456"].
    #[arg(long)]
    pub body: Option<String>,
    /// A messaging adapter: call `parse-callback` on this recorded callback, a JSON
    /// file `{"method", "url", "headers": {name: value}, "body"}`.
    #[arg(long)]
    pub callback: Option<PathBuf>,
    /// A lookup adapter: look this number up.
    #[arg(long, value_name = "E164")]
    pub lookup: Option<String>,
    /// Hosts an adapter may reach, `host` or `host:port` (repeatable) [default: the
    /// hosts of its configuration's http and https URLs]. Besides public addresses,
    /// `plugin run` may reach loopback, for a simulator on this machine.
    #[arg(long = "allow-host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Answers to give an adapter's requests instead of sending them: a JSON file, a
    /// list of `{"status", "headers": {name: value}, "body"}` given in order.
    #[arg(long)]
    pub answers: Option<PathBuf>,
}

/// A recorded provider callback (`--callback`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordedCallback {
    #[serde(default = "post")]
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: String,
}

/// A scripted answer (`--answers`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptedAnswer {
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: String,
}

fn post() -> String {
    "POST".to_owned()
}

/// `key=value` entries as a map.
fn entries(flag: &str, given: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    given
        .iter()
        .map(|entry| {
            entry
                .split_once('=')
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .with_context(|| format!("--{flag} {entry:?} is not KEY=VALUE"))
        })
        .collect()
}

/// A JSON file read into `T`, with the spot of a mistake.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut de = serde_json::Deserializer::from_slice(&text);
    serde_path_to_error::deserialize(&mut de)
        .map_err(|err| anyhow::anyhow!("{}: {} at {}", path.display(), err.inner(), err.path()))
}

/// Runs the plugin and prints a JSON report on stdout.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let (dir, temporary) = match &args.kv_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("dialgate-plugin-run-{}", uuid::Uuid::new_v4())),
            true,
        ),
    };
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<serde_json::Value> {
        let db = Db::open_sled(&dir).context("cannot open the key-value directory")?;
        let limits = Limits::default();
        let runtime = Arc::new(PluginRuntime::new(db, limits)?);
        let started = Instant::now();
        let loaded = runtime.load(&bytes, None)?;
        let load_ms = started.elapsed().as_secs_f64() * 1e3;
        let mut report = match loaded.kind {
            Kind::Rule => run_rule(&runtime, &loaded, &args)?,
            Kind::MessagingAdapter | Kind::LookupAdapter => run_adapter(&runtime, &loaded, &args)?,
        };
        drop(runtime);
        if temporary {
            let _ = std::fs::remove_dir_all(&dir);
        }
        report["world"] = json!(loaded.kind.world());
        report["sha256"] = json!(loaded.sha256);
        report["load_ms"] = json!((load_ms * 1000.0).round() / 1000.0);
        Ok(report)
    })
    .await
    .context("the plugin run was lost")??;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The usage figures and limits of a report.
fn figures(usage: &crate::model::rules::Usage, limits: &Limits, time_ms: u64) -> serde_json::Value {
    json!({
        "fuel": usage.fuel,
        "peak_memory_bytes": usage.peak_memory_bytes,
        "micros": usage.micros,
        "limits": {
            "fuel": limits.fuel,
            "time_ms": time_ms,
            "memory_bytes": limits.memory_bytes,
            "max_actions": limits.max_actions,
            "max_output_bytes": limits.max_output_bytes,
        },
    })
}

fn run_rule(
    runtime: &Arc<PluginRuntime>,
    loaded: &crate::plugins::Loaded,
    args: &RunArgs,
) -> anyhow::Result<serde_json::Value> {
    let path = args
        .event
        .as_deref()
        .context("a rule runs on an event: give --event EVENT.json")?;
    let mut event: RuleEvent = read_json(path)?;
    if !args.config.is_empty() {
        event.config = entries("config", &args.config)?;
    }
    let scope = Scope {
        tenant_id: if event.tenant_id.is_empty() {
            "local".to_owned()
        } else {
            event.tenant_id.clone()
        },
        plugin_id: "local".to_owned(),
    };
    let now = chrono::Utc::now().timestamp_millis();
    let limits = Limits::default();
    let (usage, result) =
        crate::plugins::block_on(runtime.invoke_rule(loaded, &scope, now, &event));
    let (actions, error) = match result {
        Ok(actions) => (actions, None),
        Err(failure) => (Vec::new(), Some(failure)),
    };
    let mut report = figures(&usage, &limits, limits.time_ms);
    report["actions"] = json!(actions);
    report["error"] = json!(error);
    Ok(report)
}

fn run_adapter(
    runtime: &Arc<PluginRuntime>,
    loaded: &crate::plugins::Loaded,
    args: &RunArgs,
) -> anyhow::Result<serde_json::Value> {
    let mut config = BTreeMap::from([
        (
            "callback_url".to_owned(),
            "http://127.0.0.1:8080/v1/callbacks/prv_local?token=cbt_local".to_owned(),
        ),
        ("provider_id".to_owned(), "prv_local".to_owned()),
    ]);
    config.extend(entries("config", &args.config)?);
    let secrets = entries("secret", &args.secrets)?;
    let mut hosts = args.hosts.clone();
    if hosts.is_empty() {
        hosts = config
            .values()
            .filter(|value| value.starts_with("http://") || value.starts_with("https://"))
            .filter_map(|value| reqwest::Url::parse(value).ok())
            .filter_map(|url| {
                Some(format!(
                    "{}:{}",
                    url.host_str()?,
                    url.port_or_known_default()?
                ))
            })
            .collect();
    }
    let trial = Arc::new(match &args.answers {
        Some(path) => {
            let answers: Vec<ScriptedAnswer> = read_json(path)?;
            Trial::scripted(
                answers
                    .into_iter()
                    .map(|answer| {
                        (
                            answer.status,
                            answer.headers.into_iter().collect(),
                            answer.body.into_bytes(),
                        )
                    })
                    .collect(),
            )
        }
        None => Trial::live(),
    });
    let call = Arc::new(AdapterCall {
        config,
        secrets: secrets.clone(),
        grant: HttpGrant { hosts },
        timeout: None,
        egress: crate::egress::Egress::new(crate::egress::AllowList::loopback()),
        trial: Some(Arc::clone(&trial)),
        client: None,
    });
    let scope = Scope {
        tenant_id: "local".to_owned(),
        plugin_id: "local".to_owned(),
    };
    let now = chrono::Utc::now().timestamp_millis();
    let limits = Limits::default();
    let (name, usage, returned, error) = match (loaded.kind, &args.send_to, &args.callback, &args.lookup) {
        (Kind::MessagingAdapter, Some(to), None, None) => {
            let message = AdapterMessage {
                id: "msg_local".to_owned(),
                to: to.clone(),
                channel: crate::model::Channel::Sms,
                body: args
                    .body
                    .clone()
                    .unwrap_or_else(|| "Your verification code is 123456".to_owned()),
                language: "en".to_owned(),
            };
            let (usage, result) =
                crate::plugins::block_on(runtime.invoke_send(loaded, &scope, now, call, message));
            match result {
                Ok(Ok(dispatch)) => (
                    "send-message",
                    usage,
                    json!({"dispatch": {"provider_message_id": dispatch.provider_message_id, "segments": dispatch.segments}}),
                    None,
                ),
                Ok(Err(refusal)) => ("send-message", usage, json!({ "refusal": refusal }), None),
                Err(failure) => ("send-message", usage, serde_json::Value::Null, Some(failure)),
            }
        }
        (Kind::MessagingAdapter, None, Some(path), None) => {
            let recorded: RecordedCallback = read_json(path)?;
            let request = CallbackRequest {
                method: recorded.method,
                url: recorded.url,
                headers: recorded.headers.into_iter().collect(),
                body: recorded.body.into_bytes(),
            };
            let (usage, result) = crate::plugins::block_on(
                runtime.invoke_parse_callback(loaded, &scope, now, call, request),
            );
            match result {
                Ok(updates) => ("parse-callback", usage, json!({ "updates": updates }), None),
                Err(failure) => ("parse-callback", usage, serde_json::Value::Null, Some(failure)),
            }
        }
        (Kind::LookupAdapter, None, None, Some(number)) => {
            let (usage, result) =
                crate::plugins::block_on(runtime.invoke_lookup(loaded, &scope, now, call, number));
            match result {
                Ok(intelligence) => ("lookup", usage, json!({ "intelligence": intelligence }), None),
                Err(failure) => ("lookup", usage, serde_json::Value::Null, Some(failure)),
            }
        }
        (Kind::MessagingAdapter, ..) => anyhow::bail!(
            "a messaging adapter runs `send-message` (--send-to E164) or `parse-callback` (--callback FILE): give one"
        ),
        _ => anyhow::bail!("a lookup adapter runs `lookup`: give --lookup E164"),
    };
    let mut report = figures(&usage, &limits, 15_000);
    report["call"] = json!(name);
    report["returned"] = returned;
    report["error"] = json!(error);
    let mut sent = trial.exchanges.lock().clone();
    for exchange in &mut sent {
        redact(exchange, &secrets);
    }
    report["sent"] = json!(sent);
    Ok(report)
}

/// Hides `secrets` in what `exchange` shows: each secret's value becomes
/// `[secret NAME]`, and an `Authorization` header keeps only its scheme.
fn redact(exchange: &mut crate::plugins::Exchange, secrets: &BTreeMap<String, String>) {
    let hide = |text: &mut String| {
        for (name, value) in secrets {
            if value.len() >= 4 {
                *text = text.replace(value.as_str(), &format!("[secret {name}]"));
            }
        }
    };
    hide(&mut exchange.url);
    hide(&mut exchange.body);
    for (name, value) in &mut exchange.headers {
        if name.eq_ignore_ascii_case("authorization") {
            let scheme = value.split(' ').next().unwrap_or_default().to_owned();
            *value = format!("{scheme} [redacted]");
        } else {
            hide(value);
        }
    }
}
