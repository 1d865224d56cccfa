//! Server configuration: defaults, overridden by a TOML file, overridden by
//! `DIALGATE_*` environment variables and command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::egress::AllowList;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "dialgate-data";

/// The effective configuration of `dialgate serve`.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// A PostgreSQL URL (`postgres://…`): the shared store of several replicas; the
    /// embedded sled store under `data_dir` when unset.
    pub store: Option<String>,
    /// The shared store's connection pool size and per-call timeout.
    pub store_options: crate::store::PostgresOptions,
    /// The operator credential; generated on first start when absent.
    pub operator_key: Option<String>,
    /// Production mode: no dev outbox.
    pub production: bool,
    /// Secret that keys code hashes and seals tenants' secrets at rest; generated and
    /// stored in the data directory on first start when absent (then a copy of the
    /// data directory carries it: supply it from outside to keep them apart).
    pub code_secret: Option<String>,
    /// A file holding the code secret (its first line), when `code_secret` is unset.
    pub code_secret_file: Option<PathBuf>,
    /// An extra disposable-number list merged with the built-in one.
    pub disposable_list: Option<PathBuf>,
    /// The base URL providers reach this server at, for delivery receipts; the
    /// listen address when unset.
    pub public_url: Option<String>,
    /// Each tenant's share of the plugin sandbox: slots, the wait for one, CPU budget.
    pub plugin_shares: crate::plugins::Shares,
    /// Address ranges tenant-directed outbound traffic may reach although the egress
    /// policy refuses them by default (private gateways, loopback simulators).
    pub egress_allow: AllowList,
    /// Bounds on plugins: key-value quota, log budget, upload size limits, compile
    /// concurrency, upload rate (the `[plugin_bounds]` table of the file).
    pub plugin_bounds: crate::plugins::PluginBounds,
    /// Limits on the HTTP connections the server accepts.
    pub http: HttpLimits,
    /// How log lines are written: text, or one JSON object a line.
    pub log_format: LogFormat,
    /// Where spans are exported over OTLP/HTTP (JSON), e.g. `http://collector:4318`:
    /// a collector's base URL, to which `/v1/traces` is added. Unset: none are.
    pub otlp_endpoint: Option<String>,
}

/// How log lines are written on standard error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

/// Limits on HTTP connections: how long a client may take to send a request's
/// headers (and each part of its body), how long a kept-alive connection may sit
/// idle, and how many connections are served at once (further ones wait in the
/// listen backlog until one closes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub header_read_timeout: Duration,
    /// Time a request's body may take to arrive, from its headers.
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Default time to receive a request's headers, from their first byte (or from the
/// connection's opening, for its first request).
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// Default time a request's body may take to arrive in full (an 8 MiB upload needs
/// about 140 KiB/s).
pub const DEFAULT_BODY_READ_TIMEOUT_SECS: u64 = 60;
/// Default time a kept-alive connection may wait for its next request.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
/// Default number of connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT_SECS),
            body_read_timeout: Duration::from_secs(DEFAULT_BODY_READ_TIMEOUT_SECS),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("the default listen address parses"),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            store: None,
            store_options: crate::store::PostgresOptions::default(),
            operator_key: None,
            production: false,
            code_secret: None,
            code_secret_file: None,
            disposable_list: None,
            public_url: None,
            http: HttpLimits::default(),
            plugin_bounds: crate::plugins::PluginBounds::default(),
            egress_allow: AllowList::default(),
            plugin_shares: crate::plugins::Shares::default(),
            log_format: LogFormat::default(),
            otlp_endpoint: None,
        }
    }
}

/// Checks that `store` names a PostgreSQL database (the only shared store).
pub fn check_store_url(store: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        store.starts_with("postgres://") || store.starts_with("postgresql://"),
        "store must be a PostgreSQL URL (postgres://user:password@host:port/database); \
         leave it unset for the embedded store under data_dir"
    );
    Ok(())
}

/// The TOML file's shape; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub store: Option<String>,
    pub store_pool_size: Option<usize>,
    pub store_timeout_ms: Option<u64>,
    pub store_ca_file: Option<PathBuf>,
    pub operator_key: Option<String>,
    pub production: Option<bool>,
    pub code_secret: Option<String>,
    pub code_secret_file: Option<PathBuf>,
    pub disposable_list: Option<PathBuf>,
    pub public_url: Option<String>,
    pub header_read_timeout_secs: Option<u64>,
    pub body_read_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub max_connections: Option<usize>,
    pub plugin_bounds: Option<crate::plugins::PluginBounds>,
    /// A list of ranges, or one comma-separated string.
    pub egress_allow: Option<AllowList>,
    pub plugin_calls: Option<usize>,
    pub plugin_calls_per_tenant: Option<usize>,
    pub adapter_calls: Option<usize>,
    pub adapter_calls_per_tenant: Option<usize>,
    pub plugin_queue_ms: Option<u64>,
    pub adapter_queue_ms: Option<u64>,
    pub plugin_cpu_ms_per_sec: Option<u64>,
    pub log_format: Option<LogFormat>,
    pub otlp_endpoint: Option<String>,
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
    /// Longest wait for a rule slot, in ms, before the call is refused as overloaded.
    pub plugin_queue_ms: Option<u64>,
    /// Longest wait for an adapter slot, in ms, before the call is refused as overloaded.
    pub adapter_queue_ms: Option<u64>,
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
            adapter_queue_ms: self.adapter_queue_ms.or(lower.adapter_queue_ms),
            plugin_cpu_ms_per_sec: self.plugin_cpu_ms_per_sec.or(lower.plugin_cpu_ms_per_sec),
        }
    }

    /// The shares these caps set over the defaults.
    pub(crate) fn resolve(self) -> crate::plugins::Shares {
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
            adapter_queue_ms: self.adapter_queue_ms.unwrap_or(defaults.adapter_queue_ms),
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
    pub store: Option<String>,
    pub store_pool_size: Option<usize>,
    pub store_timeout_ms: Option<u64>,
    pub store_ca_file: Option<PathBuf>,
    pub operator_key: Option<String>,
    pub production: bool,
    pub code_secret: Option<String>,
    pub code_secret_file: Option<PathBuf>,
    pub disposable_list: Option<PathBuf>,
    pub public_url: Option<String>,
    pub header_read_timeout_secs: Option<u64>,
    pub body_read_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub max_connections: Option<usize>,
    /// A plugin's key-value quota in bytes and in keys.
    pub plugin_kv_max_bytes: Option<u64>,
    pub plugin_kv_max_keys: Option<u64>,
    pub egress_allow: Option<AllowList>,
    pub plugin_shares: ShareOverrides,
    pub log_format: Option<LogFormat>,
    pub otlp_endpoint: Option<String>,
}

impl Config {
    /// Layers `file` over the defaults and `overrides` over both.
    pub fn resolve(file: FileConfig, overrides: Overrides) -> Self {
        let defaults = Config::default();
        let mut plugin_bounds = file.plugin_bounds.unwrap_or(defaults.plugin_bounds);
        if let Some(bytes) = overrides.plugin_kv_max_bytes {
            plugin_bounds.storage.kv_max_bytes = bytes;
        }
        if let Some(keys) = overrides.plugin_kv_max_keys {
            plugin_bounds.storage.kv_max_keys = keys;
        }
        Config {
            listen: overrides.listen.or(file.listen).unwrap_or(defaults.listen),
            data_dir: overrides
                .data_dir
                .or(file.data_dir)
                .unwrap_or(defaults.data_dir),
            store: overrides.store.or(file.store),
            store_options: crate::store::PostgresOptions {
                pool_size: overrides
                    .store_pool_size
                    .or(file.store_pool_size)
                    .unwrap_or(defaults.store_options.pool_size),
                timeout: overrides
                    .store_timeout_ms
                    .or(file.store_timeout_ms)
                    .map_or(defaults.store_options.timeout, Duration::from_millis),
                ca_file: overrides.store_ca_file.or(file.store_ca_file),
            },
            operator_key: overrides.operator_key.or(file.operator_key),
            production: overrides.production || file.production.unwrap_or(false),
            code_secret: overrides.code_secret.or(file.code_secret),
            code_secret_file: overrides.code_secret_file.or(file.code_secret_file),
            disposable_list: overrides.disposable_list.or(file.disposable_list),
            public_url: overrides.public_url.or(file.public_url),
            http: HttpLimits {
                header_read_timeout: overrides
                    .header_read_timeout_secs
                    .or(file.header_read_timeout_secs)
                    .map_or(defaults.http.header_read_timeout, Duration::from_secs),
                body_read_timeout: overrides
                    .body_read_timeout_secs
                    .or(file.body_read_timeout_secs)
                    .map_or(defaults.http.body_read_timeout, Duration::from_secs),
                idle_timeout: overrides
                    .idle_timeout_secs
                    .or(file.idle_timeout_secs)
                    .map_or(defaults.http.idle_timeout, Duration::from_secs),
                max_connections: overrides
                    .max_connections
                    .or(file.max_connections)
                    .unwrap_or(defaults.http.max_connections),
            },
            plugin_bounds,
            egress_allow: overrides
                .egress_allow
                .or(file.egress_allow)
                .unwrap_or_default(),
            plugin_shares: overrides
                .plugin_shares
                .or(ShareOverrides {
                    plugin_calls: file.plugin_calls,
                    plugin_calls_per_tenant: file.plugin_calls_per_tenant,
                    adapter_calls: file.adapter_calls,
                    adapter_calls_per_tenant: file.adapter_calls_per_tenant,
                    plugin_queue_ms: file.plugin_queue_ms,
                    adapter_queue_ms: file.adapter_queue_ms,
                    plugin_cpu_ms_per_sec: file.plugin_cpu_ms_per_sec,
                })
                .resolve(),
            log_format: overrides.log_format.or(file.log_format).unwrap_or_default(),
            otlp_endpoint: overrides.otlp_endpoint.or(file.otlp_endpoint),
        }
    }

    /// Checks the values a file, flag or variable may get wrong.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(endpoint) = &self.otlp_endpoint {
            crate::logs::check_otlp_endpoint(endpoint)?;
        }
        if let Some(store) = &self.store {
            check_store_url(store)?;
        }
        anyhow::ensure!(
            (1..=1_000).contains(&self.store_options.pool_size),
            "store_pool_size must be between 1 and 1000"
        );
        anyhow::ensure!(
            (10..=600_000).contains(&self.store_options.timeout.as_millis()),
            "store_timeout_ms must be between 10 and 600000"
        );
        let HttpLimits {
            header_read_timeout,
            body_read_timeout,
            idle_timeout,
            max_connections,
        } = self.http;
        anyhow::ensure!(
            (1..=3_600).contains(&header_read_timeout.as_secs()),
            "header_read_timeout_secs must be between 1 and 3600"
        );
        anyhow::ensure!(
            (1..=3_600).contains(&body_read_timeout.as_secs()),
            "body_read_timeout_secs must be between 1 and 3600"
        );
        anyhow::ensure!(
            (1..=86_400).contains(&idle_timeout.as_secs()),
            "idle_timeout_secs must be between 1 and 86400"
        );
        anyhow::ensure!(
            (1..=1_000_000).contains(&max_connections),
            "max_connections must be between 1 and 1000000"
        );
        Ok(())
    }

    /// The configured code secret: given, else the first line of its file, else none
    /// (the data directory's own is used).
    pub fn code_secret(&self) -> anyhow::Result<Option<String>> {
        if let Some(secret) = &self.code_secret {
            return Ok(Some(secret.clone()));
        }
        let Some(path) = &self.code_secret_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the code secret file {}", path.display()))?;
        let secret = text.lines().next().unwrap_or_default().trim();
        if secret.is_empty() {
            anyhow::bail!("the code secret file {} is empty", path.display());
        }
        Ok(Some(secret.to_owned()))
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
    fn store_options_layer_and_are_checked() {
        let file: FileConfig = toml::from_str(
            "store_pool_size = 4\nstore_timeout_ms = 800\nstore_ca_file = \"/etc/db-ca.pem\"",
        )
        .expect("toml");
        let overrides = Overrides {
            store_pool_size: Some(32),
            ..Overrides::default()
        };
        let config = Config::resolve(file, overrides);
        assert_eq!(config.store_options.pool_size, 32);
        assert_eq!(config.store_options.timeout, Duration::from_millis(800));
        assert_eq!(
            config.store_options.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/db-ca.pem"))
        );
        config.validate().expect("valid");
        let zero = Config::resolve(
            FileConfig::default(),
            Overrides {
                store_pool_size: Some(0),
                ..Overrides::default()
            },
        );
        let err = zero.validate().expect_err("no connections");
        assert!(err.to_string().contains("store_pool_size"), "{err}");
    }

    #[test]
    fn http_limits_layer_and_are_checked() {
        let file: FileConfig =
            toml::from_str("idle_timeout_secs = 30\nmax_connections = 64").expect("toml");
        let overrides = Overrides {
            max_connections: Some(8),
            ..Overrides::default()
        };
        let config = Config::resolve(file, overrides);
        assert_eq!(config.http.idle_timeout, Duration::from_secs(30));
        assert_eq!(config.http.max_connections, 8);
        assert_eq!(
            config.http.header_read_timeout,
            Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT_SECS)
        );
        config.validate().expect("valid");
        let zero = Config::resolve(
            FileConfig::default(),
            Overrides {
                max_connections: Some(0),
                ..Overrides::default()
            },
        );
        assert!(zero.validate().is_err());
    }

    #[test]
    fn plugin_bounds_come_from_the_file_and_flags() {
        let file: FileConfig = toml::from_str(
            "[plugin_bounds]\nuploads_per_minute = 3\n[plugin_bounds.storage]\nkv_max_keys = 10\nkv_max_bytes = 100",
        )
        .expect("toml");
        let overrides = Overrides {
            plugin_kv_max_bytes: Some(4096),
            ..Overrides::default()
        };
        let config = Config::resolve(file, overrides);
        assert_eq!(config.plugin_bounds.uploads_per_minute, 3);
        assert_eq!(config.plugin_bounds.storage.kv_max_keys, 10);
        assert_eq!(config.plugin_bounds.storage.kv_max_bytes, 4096);
        // Keys the file leaves out keep their defaults.
        let defaults = crate::plugins::PluginBounds::default();
        assert_eq!(config.plugin_bounds.sizes, defaults.sizes);
        assert!(toml::from_str::<FileConfig>("[plugin_bounds]\nkv_max_keys = 1").is_err());
    }

    #[test]
    fn egress_ranges_come_from_the_file_as_a_list_or_a_string_and_flags_win() {
        let file: FileConfig =
            toml::from_str("egress_allow = [\"10.0.0.0/8\", \"::1\"]").expect("toml");
        let config = Config::resolve(file, Overrides::default());
        assert_eq!(config.egress_allow.to_string(), "10.0.0.0/8,::1/128");
        let file: FileConfig =
            toml::from_str("egress_allow = \"192.168.0.0/16, 127.0.0.1\"").expect("toml");
        let overrides = Overrides {
            egress_allow: Some("127.0.0.0/8".parse().expect("list")),
            ..Overrides::default()
        };
        let config = Config::resolve(file, overrides);
        assert_eq!(config.egress_allow.to_string(), "127.0.0.0/8");
        assert!(toml::from_str::<FileConfig>("egress_allow = \"10.0.0.1/8\"").is_err());
        let config = Config::resolve(FileConfig::default(), Overrides::default());
        assert!(config.egress_allow.ranges().is_empty());
    }

    #[test]
    fn the_code_secret_can_come_from_a_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "from-a-file\n").expect("write");
        let mut config = Config {
            code_secret_file: Some(path.clone()),
            ..Config::default()
        };
        assert_eq!(
            config.code_secret().expect("read").as_deref(),
            Some("from-a-file")
        );
        config.code_secret = Some("given".into());
        assert_eq!(
            config.code_secret().expect("read").as_deref(),
            Some("given")
        );
        std::fs::write(&path, "\n").expect("write");
        config.code_secret = None;
        assert!(config.code_secret().is_err());
        assert_eq!(Config::default().code_secret().expect("none"), None);
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
    fn the_log_format_comes_from_the_file_and_flags() {
        let file: FileConfig = toml::from_str("log_format = \"json\"").expect("toml");
        let config = Config::resolve(file, Overrides::default());
        assert_eq!(config.log_format, LogFormat::Json);
        let file: FileConfig = toml::from_str("log_format = \"json\"").expect("toml");
        let overrides = Overrides {
            log_format: Some(LogFormat::Text),
            ..Overrides::default()
        };
        assert_eq!(Config::resolve(file, overrides).log_format, LogFormat::Text);
        assert_eq!(
            Config::resolve(FileConfig::default(), Overrides::default()).log_format,
            LogFormat::Text
        );
        assert!(toml::from_str::<FileConfig>("log_format = \"xml\"").is_err());
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        assert!(toml::from_str::<FileConfig>("lsiten = \"x\"").is_err());
    }
}
