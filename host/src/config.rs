//! Server configuration: defaults, overridden by a TOML file, overridden by
//! `DIALGATE_*` environment variables and command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    /// Address ranges tenant-directed outbound traffic may reach although the egress
    /// policy refuses them by default (private gateways, loopback simulators).
    pub egress_allow: AllowList,
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
            code_secret_file: None,
            disposable_list: None,
            public_url: None,
            egress_allow: AllowList::default(),
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
    pub code_secret_file: Option<PathBuf>,
    pub disposable_list: Option<PathBuf>,
    pub public_url: Option<String>,
    /// A list of ranges, or one comma-separated string.
    pub egress_allow: Option<AllowList>,
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
    pub code_secret_file: Option<PathBuf>,
    pub disposable_list: Option<PathBuf>,
    pub public_url: Option<String>,
    pub egress_allow: Option<AllowList>,
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
            code_secret_file: overrides.code_secret_file.or(file.code_secret_file),
            disposable_list: overrides.disposable_list.or(file.disposable_list),
            public_url: overrides.public_url.or(file.public_url),
            egress_allow: overrides
                .egress_allow
                .or(file.egress_allow)
                .unwrap_or_default(),
        }
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
    fn unknown_file_keys_are_rejected() {
        assert!(toml::from_str::<FileConfig>("lsiten = \"x\"").is_err());
    }
}
