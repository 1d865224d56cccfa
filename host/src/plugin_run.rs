//! `dialgate plugin run FILE --event EVENT.json`: runs a rule plugin once under the
//! production sandbox limits and prints what it did, for plugin authors.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;

use crate::model::rules::RuleEvent;
use crate::plugins::{Kind, Limits, PluginRuntime, Scope};
use crate::store::Db;

/// Arguments of `dialgate plugin run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The component (`.wasm`) to run.
    pub file: PathBuf,
    /// The event, as JSON (the dry-run API's `event`): at least `trigger` and `phone.e164`.
    #[arg(long)]
    pub event: PathBuf,
    /// Configuration entries `key=value` passed to the rule (repeatable); they replace
    /// the event's `config`.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// Keep the rule's key-value data in this directory between runs [default: a
    /// temporary directory, removed afterwards].
    #[arg(long)]
    pub kv_dir: Option<PathBuf>,
}

/// Runs the plugin and prints a JSON report on stdout.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let text = std::fs::read(&args.event)
        .with_context(|| format!("cannot read {}", args.event.display()))?;
    let mut de = serde_json::Deserializer::from_slice(&text);
    let mut event: RuleEvent = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        anyhow::anyhow!(
            "{}: {} at {}",
            args.event.display(),
            err.inner(),
            err.path()
        )
    })?;
    if !args.config.is_empty() {
        let mut config = BTreeMap::new();
        for entry in &args.config {
            let (key, value) = entry
                .split_once('=')
                .with_context(|| format!("--config {entry:?} is not KEY=VALUE"))?;
            config.insert(key.to_owned(), value.to_owned());
        }
        event.config = config;
    }
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
        if loaded.kind != Kind::Rule {
            anyhow::bail!(
                "{} is a {} plugin; `plugin run` runs rules",
                args.file.display(),
                loaded.kind.world()
            );
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
        let (usage, result) =
            crate::plugins::block_on(runtime.invoke_rule(&loaded, &scope, now, &event));
        let (actions, error) = match result {
            Ok(actions) => (actions, None),
            Err(failure) => (Vec::new(), Some(failure)),
        };
        drop(runtime);
        if temporary {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(json!({
            "world": loaded.kind.world(),
            "sha256": loaded.sha256,
            "load_ms": (load_ms * 1000.0).round() / 1000.0,
            "actions": actions,
            "error": error,
            "fuel": usage.fuel,
            "peak_memory_bytes": usage.peak_memory_bytes,
            "micros": usage.micros,
            "limits": {
                "fuel": limits.fuel,
                "time_ms": limits.time_ms,
                "memory_bytes": limits.memory_bytes,
                "max_actions": limits.max_actions,
                "max_output_bytes": limits.max_output_bytes,
            },
        }))
    })
    .await
    .context("the plugin run was lost")??;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
