//! Server configuration: defaults, overridden by a TOML file, overridden by
//! `DIALGATE_*` environment variables and command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "dialgate-data";

/// The effective configuration of `dialgate serve`.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The operator credential; generated on first start when absent.
    pub operator_key: Option<String>,
    /// Production mode: no dev outbox.
    pub production: bool,
    /// Secret that keys code hashes; generated and stored on first start when absent.
    pub code_secret: Option<String>,
    /// An extra disposable-number list merged with the built-in one.
    pub disposable_list: Option<PathBuf>,
    /// The base URL providers reach this server at, for delivery receipts; the
    /// listen address when unset.
    pub public_url: Option<String>,
    /// Each tenant's share of the plugin sandbox: slots, the wait for one, CPU budget.
    pub plugin_shares: crate::plugins::Shares,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("the default listen address parses"),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            operator_key: None,
            production: false,
            code_secret: None,
            disposable_list: None,
            public_url: None,
            plugin_shares: crate::plugins::Shares::default(),
        }
    }
}

/// The TOML file's shape; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub operator_key: Option<String>,
    pub production: Option<bool>,
    pub code_secret: Option<String>,
    pub disposable_list: Option<PathBuf>,
    pub public_url: Option<String>,
    pub plugin_calls: Option<usize>,
    pub plugin_calls_per_tenant: Option<usize>,
    pub adapter_calls: Option<usize>,
    pub adapter_calls_per_tenant: Option<usize>,
    pub plugin_queue_ms: Option<u64>,
    pub plugin_cpu_ms_per_sec: Option<u64>,
}

/// Caps on plugin calls, each optional (the TOML keys, flags and variables of the same
/// names); see [`crate::plugins::Shares`] for the defaults.
#[derive(Debug, Default, Clone)]
pub struct ShareOverrides {
    /// Rule chains running at once, all tenants together.
    pub plugin_calls: Option<usize>,
    /// Rule chains one tenant may run at once.
    pub plugin_calls_per_tenant: Option<usize>,
    /// Adapter calls in flight, all tenants together.
    pub adapter_calls: Option<usize>,
    /// Adapter calls one tenant may have in flight.
    pub adapter_calls_per_tenant: Option<usize>,
    /// Longest wait for a plugin slot, in ms, before the call is refused as overloaded.
    pub plugin_queue_ms: Option<u64>,
    /// Plugin CPU time (ms) each tenant may use per second while others are active.
    pub plugin_cpu_ms_per_sec: Option<u64>,
}

impl ShareOverrides {
    /// `self` over `lower`.
    fn or(self, lower: ShareOverrides) -> ShareOverrides {
        ShareOverrides {
            plugin_calls: self.plugin_calls.or(lower.plugin_calls),
            plugin_calls_per_tenant: self
                .plugin_calls_per_tenant
                .or(lower.plugin_calls_per_tenant),
            adapter_calls: self.adapter_calls.or(lower.adapter_calls),
            adapter_calls_per_tenant: self
                .adapter_calls_per_tenant
                .or(lower.adapter_calls_per_tenant),
            plugin_queue_ms: self.plugin_queue_ms.or(lower.plugin_queue_ms),
            plugin_cpu_ms_per_sec: self.plugin_cpu_ms_per_sec.or(lower.plugin_cpu_ms_per_sec),
        }
    }

    /// The shares these caps set over the defaults.
    fn resolve(self) -> crate::plugins::Shares {
        let defaults = crate::plugins::Shares::default();
        crate::plugins::Shares {
            rule_calls: self.plugin_calls.unwrap_or(defaults.rule_calls),
            rule_calls_per_tenant: self
                .plugin_calls_per_tenant
                .unwrap_or(defaults.rule_calls_per_tenant),
            adapter_calls: self.adapter_calls.unwrap_or(defaults.adapter_calls),
            adapter_calls_per_tenant: self
                .adapter_calls_per_tenant
                .unwrap_or(defaults.adapter_calls_per_tenant),
            queue_ms: self.plugin_queue_ms.unwrap_or(defaults.queue_ms),
            cpu_ms_per_sec: self
                .plugin_cpu_ms_per_sec
                .unwrap_or(defaults.cpu_ms_per_sec),
        }
        .clamped()
    }
}

impl FileConfig {
    /// Reads a TOML configuration file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("config file {} is not valid", path.display()))
    }
}

/// Overrides from flags or the environment (the higher layer).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub operator_key: Option<String>,
    pub production: bool,
    pub code_secret: Option<String>,
    pub disposable_list: Option<PathBuf>,
    pub public_url: Option<String>,
    pub plugin_shares: ShareOverrides,
}

impl Config {
    /// Layers `file` over the defaults and `overrides` over both.
    pub fn resolve(file: FileConfig, overrides: Overrides) -> Self {
        let defaults = Config::default();
        Config {
            listen: overrides.listen.or(file.listen).unwrap_or(defaults.listen),
            data_dir: overrides
                .data_dir
                .or(file.data_dir)
                .unwrap_or(defaults.data_dir),
            operator_key: overrides.operator_key.or(file.operator_key),
            production: overrides.production || file.production.unwrap_or(false),
            code_secret: overrides.code_secret.or(file.code_secret),
            disposable_list: overrides.disposable_list.or(file.disposable_list),
            public_url: overrides.public_url.or(file.public_url),
            plugin_shares: overrides
                .plugin_shares
                .or(ShareOverrides {
                    plugin_calls: file.plugin_calls,
                    plugin_calls_per_tenant: file.plugin_calls_per_tenant,
                    adapter_calls: file.adapter_calls,
                    adapter_calls_per_tenant: file.adapter_calls_per_tenant,
                    plugin_queue_ms: file.plugin_queue_ms,
                    plugin_cpu_ms_per_sec: file.plugin_cpu_ms_per_sec,
                })
                .resolve(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let file: FileConfig =
            toml::from_str("listen = \"127.0.0.1:9000\"\ndata_dir = \"/tmp/x\"\nproduction = true")
                .expect("toml");
        let overrides = Overrides {
            listen: Some("127.0.0.1:9100".parse().expect("addr")),
            ..Overrides::default()
        };
        let config = Config::resolve(file, overrides);
        assert_eq!(config.listen.port(), 9100);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert!(config.production);
    }

    #[test]
    fn defaults_are_the_embedded_dev_setup() {
        let config = Config::resolve(FileConfig::default(), Overrides::default());
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(!config.production);
    }

    #[test]
    fn plugin_shares_layer_and_stay_within_the_pool() {
        let file: FileConfig = toml::from_str(
            "plugin_calls_per_tenant = 4\nplugin_cpu_ms_per_sec = 50\nadapter_calls = 5000",
        )
        .expect("toml");
        let overrides = Overrides {
            plugin_shares: ShareOverrides {
                plugin_cpu_ms_per_sec: Some(70),
                ..ShareOverrides::default()
            },
            ..Overrides::default()
        };
        let shares = Config::resolve(file, overrides).plugin_shares;
        assert_eq!(shares.rule_calls_per_tenant, 4);
        assert_eq!(shares.cpu_ms_per_sec, 70);
        assert!(
            shares.rule_calls + shares.adapter_calls < crate::plugins::admission::POOL_INSTANCES
        );
        assert!(toml::from_str::<FileConfig>("plugin_calls = -1").is_err());
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        assert!(toml::from_str::<FileConfig>("lsiten = \"x\"").is_err());
    }
}
