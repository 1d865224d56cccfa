//! Command-line interface of the `dialgate` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::{Config, FileConfig, LogFormat, Overrides};
use crate::store::Db;

#[cfg(test)]
mod sdk_readme;

/// Dialgate: a programmable, self-hostable phone-verification host.
#[derive(Debug, Parser)]
#[command(name = "dialgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (embedded sled store, dev outbox unless --production).
    Serve(Box<ServeArgs>),
    /// Run the load driver against an in-process server over loopback and print figures.
    Bench(crate::bench::BenchArgs),
    /// Work with plugins: locally, or on a running server (backtest).
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Apply the PostgreSQL store's schema migrations (`serve` also applies them at
    /// start, under a lock, so replicas may start together).
    Migrate(MigrateArgs),
    /// Work with a deployment's store.
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Copy every record from one store to an empty one (a sled data directory to a
    /// PostgreSQL database or back), then check each table's count and checksum. Stop
    /// the servers of the source first.
    Copy(CopyArgs),
    /// Change the server secret (the code secret) of a deployment. Nothing is rewritten
    /// but the data key's record: the key that seals personal records and tenants'
    /// secrets and keys code hashes is unwrapped with the current secret and wrapped
    /// under the new one. Stop a sled deployment's server first; replicas on PostgreSQL
    /// keep running and are restarted one by one with the new secret.
    RotateSecret(RotateArgs),
}

#[derive(Debug, clap::Args)]
struct RotateArgs {
    /// The store: a sled data directory, or postgres://user:password@host:port/database.
    #[arg(long, env = "DIALGATE_STORE", hide_env_values = true)]
    store: String,
    /// PEM certificates a PostgreSQL store's certificate must chain to, when its URL
    /// asks for TLS (sslmode=require); without it, the web's public roots.
    #[arg(long, env = "DIALGATE_STORE_CA_FILE")]
    store_ca_file: Option<PathBuf>,
    /// The current secret; without it (or its file), the one the store keeps.
    #[arg(long, env = "DIALGATE_CODE_SECRET", hide_env_values = true)]
    code_secret: Option<String>,
    /// File whose first line is the current secret (when --code-secret is unset).
    #[arg(long, env = "DIALGATE_CODE_SECRET_FILE")]
    code_secret_file: Option<PathBuf>,
    /// The new secret.
    #[arg(long, env = "DIALGATE_NEW_CODE_SECRET", hide_env_values = true)]
    new_code_secret: Option<String>,
    /// File whose first line is the new secret (when --new-code-secret is unset).
    #[arg(long, env = "DIALGATE_NEW_CODE_SECRET_FILE")]
    new_code_secret_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct CopyArgs {
    /// The source: a sled data directory, or postgres://user:password@host:port/database.
    #[arg(long)]
    from: String,
    /// The target, empty: a sled data directory (made if missing) or a PostgreSQL URL
    /// (its schema is migrated first).
    #[arg(long)]
    to: String,
    /// PEM certificates a PostgreSQL store's certificate must chain to, when its URL
    /// asks for TLS (sslmode=require); without it, the web's public roots.
    #[arg(long, env = "DIALGATE_STORE_CA_FILE")]
    store_ca_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct MigrateArgs {
    /// The PostgreSQL database: postgres://user:password@host:port/database.
    #[arg(long, env = "DIALGATE_STORE", hide_env_values = true)]
    store: String,
    /// PEM certificates the store's certificate must chain to, when its URL asks for
    /// TLS (sslmode=require); without it, the web's public roots.
    #[arg(long, env = "DIALGATE_STORE_CA_FILE")]
    store_ca_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Run a rule plugin once on an event under the production limits and print its
    /// actions, the fuel it used, its peak memory and its time.
    Run(crate::plugin_run::RunArgs),
    /// Make a plugin project (rule, messaging adapter or lookup adapter) that passes
    /// its own tests and builds to a component.
    New(crate::plugin_new::NewArgs),
    /// Ask a running server to backtest an uploaded version of a rule plugin over the
    /// tenant's recorded traffic, and print what would have changed.
    Backtest(crate::plugin_backtest::BacktestArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration file; flags and DIALGATE_* variables override its keys.
    #[arg(long, env = "DIALGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "DIALGATE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Directory of the embedded store [default: ./dialgate-data].
    #[arg(long, env = "DIALGATE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A PostgreSQL database shared by several replicas
    /// (postgres://user:password@host:port/database) instead of the embedded store;
    /// its schema is migrated at start.
    #[arg(long, env = "DIALGATE_STORE", hide_env_values = true)]
    store: Option<String>,
    /// Connections to the PostgreSQL store this replica keeps at most [default: 16].
    #[arg(long, env = "DIALGATE_STORE_POOL_SIZE")]
    store_pool_size: Option<usize>,
    /// Milliseconds one PostgreSQL call may take (a connection and its statement); past
    /// it the request answers 503 store_unavailable [default: 5000].
    #[arg(long, env = "DIALGATE_STORE_TIMEOUT_MS")]
    store_timeout_ms: Option<u64>,
    /// PEM certificates the PostgreSQL store's certificate must chain to, when its URL
    /// asks for TLS (sslmode=require); without it, the web's public roots.
    #[arg(long, env = "DIALGATE_STORE_CA_FILE")]
    store_ca_file: Option<PathBuf>,
    /// Operator credential; when unset on first start one is generated and printed once.
    #[arg(long, env = "DIALGATE_OPERATOR_KEY", hide_env_values = true)]
    operator_key: Option<String>,
    /// Production mode: disables the dev outbox and its endpoint.
    #[arg(long, env = "DIALGATE_PRODUCTION")]
    production: bool,
    /// Secret that keys code hashes; generated and stored on first start when unset.
    #[arg(long, env = "DIALGATE_CODE_SECRET", hide_env_values = true)]
    code_secret: Option<String>,
    /// File whose first line is the code secret (when --code-secret is unset).
    #[arg(long, env = "DIALGATE_CODE_SECRET_FILE")]
    code_secret_file: Option<PathBuf>,
    /// Address ranges (CIDR, comma-separated) that tenants' outbound traffic may reach
    /// although the egress policy refuses internal addresses by default, e.g. a
    /// private SMS gateway: --egress-allow 10.1.2.0/24.
    #[arg(long, env = "DIALGATE_EGRESS_ALLOW", value_parser = parse_allow_list)]
    egress_allow: Option<crate::egress::AllowList>,
    /// Extra disposable-number list (one E.164 number or prefix per line).
    #[arg(long, env = "DIALGATE_DISPOSABLE_LIST")]
    disposable_list: Option<PathBuf>,
    /// The base URL providers send delivery receipts to [default: http://LISTEN].
    #[arg(long, env = "DIALGATE_PUBLIC_URL")]
    public_url: Option<String>,
    /// Seconds a client has to send a request's headers before its connection is
    /// closed [default: 10].
    #[arg(long, env = "DIALGATE_HEADER_READ_TIMEOUT_SECS")]
    header_read_timeout_secs: Option<u64>,
    /// Seconds a request's body may take to arrive in full, from its headers; past it
    /// the request is answered 400 and the connection closed [default: 60].
    #[arg(long, env = "DIALGATE_BODY_READ_TIMEOUT_SECS")]
    body_read_timeout_secs: Option<u64>,
    /// Seconds a kept-alive connection may wait for its next request [default: 60].
    #[arg(long, env = "DIALGATE_IDLE_TIMEOUT_SECS")]
    idle_timeout_secs: Option<u64>,
    /// Connections served at once; more wait until one closes [default: 1024].
    #[arg(long, env = "DIALGATE_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Bytes of keys and values one plugin may keep [default: 1048576].
    #[arg(long, env = "DIALGATE_PLUGIN_KV_MAX_BYTES")]
    plugin_kv_max_bytes: Option<u64>,
    /// Keys one plugin may keep [default: 1000].
    #[arg(long, env = "DIALGATE_PLUGIN_KV_MAX_KEYS")]
    plugin_kv_max_keys: Option<u64>,
    /// Rule chains running at once, all tenants together [default: 128].
    #[arg(long, env = "DIALGATE_PLUGIN_CALLS")]
    plugin_calls: Option<usize>,
    /// Rule chains one tenant may run at once [default: 8].
    #[arg(long, env = "DIALGATE_PLUGIN_CALLS_PER_TENANT")]
    plugin_calls_per_tenant: Option<usize>,
    /// Adapter calls in flight, all tenants together [default: 96].
    #[arg(long, env = "DIALGATE_ADAPTER_CALLS")]
    adapter_calls: Option<usize>,
    /// Adapter calls one tenant may have in flight [default: 16].
    #[arg(long, env = "DIALGATE_ADAPTER_CALLS_PER_TENANT")]
    adapter_calls_per_tenant: Option<usize>,
    /// Longest wait for a plugin slot before the call is recorded as overloaded, in ms
    /// [default: 100].
    #[arg(long, env = "DIALGATE_PLUGIN_QUEUE_MS")]
    plugin_queue_ms: Option<u64>,
    /// Longest wait for an adapter slot before a send, receipt or lookup is refused as
    /// overloaded, in ms [default: 1000].
    #[arg(long, env = "DIALGATE_ADAPTER_QUEUE_MS")]
    adapter_queue_ms: Option<u64>,
    /// Plugin CPU time in ms each tenant may use per second while other tenants are
    /// active [default: 100 per core].
    #[arg(long, env = "DIALGATE_PLUGIN_CPU_MS_PER_SEC")]
    plugin_cpu_ms_per_sec: Option<u64>,
    /// How log lines are written on standard error: text, or one JSON object a line
    /// [default: text].
    #[arg(long, env = "DIALGATE_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Exports spans (requests, jobs, webhook deliveries) over OTLP/HTTP with JSON
    /// bodies to this collector base URL (`/v1/traces` is added) [default: none].
    #[arg(long, env = "DIALGATE_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

/// What the binary was asked to do, with `serve`'s configuration resolved (its log
/// format decides how logging starts).
enum Task {
    Serve(Box<Config>),
    Other(Box<Command>),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let task = match cli.command {
        Command::Serve(args) => match serve_config(*args) {
            Ok(config) => Task::Serve(Box::new(config)),
            Err(err) => {
                eprintln!("error: {err:#}");
                return ExitCode::FAILURE;
            }
        },
        other => Task::Other(Box::new(other)),
    };
    // Held to the end: dropping it writes out the lines still queued.
    let _logs = match &task {
        Task::Serve(config) => init_tracing(config.log_format, config.otlp_endpoint.as_deref()),
        Task::Other(_) => init_tracing(LogFormat::Text, None),
    };
    let _logs = match _logs {
        Ok(logs) => logs,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let command = match task {
            Task::Serve(config) => return crate::server::run(*config).await,
            Task::Other(command) => *command,
        };
        match command {
            Command::Serve(_) => anyhow::bail!("serve's configuration was not resolved"),
            Command::Bench(args) => crate::bench::run(args).await,
            Command::Plugin(PluginCommand::Run(args)) => crate::plugin_run::run(args).await,
            Command::Plugin(PluginCommand::New(args)) => crate::plugin_new::run(&args),
            Command::Plugin(PluginCommand::Backtest(args)) => {
                crate::plugin_backtest::run(args).await
            }
            Command::Migrate(args) => migrate(&args.store, args.store_ca_file),
            Command::Store(StoreCommand::Copy(args)) => store_copy(&args),
            Command::Store(StoreCommand::RotateSecret(args)) => rotate_secret(args).await,
        }
    });
    // Whatever plugins do, stopping does not wait on the blocking pool for long: every
    // call there is bounded, and this bounds the wait for any that is not.
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `serve`'s configuration: its file, then variables and flags over it, checked.
fn serve_config(args: ServeArgs) -> anyhow::Result<Config> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let config = Config::resolve(
        file,
        Overrides {
            listen: args.listen,
            data_dir: args.data_dir,
            store: args.store,
            store_pool_size: args.store_pool_size,
            store_timeout_ms: args.store_timeout_ms,
            store_ca_file: args.store_ca_file,
            operator_key: args.operator_key,
            production: args.production,
            code_secret: args.code_secret,
            code_secret_file: args.code_secret_file,
            disposable_list: args.disposable_list,
            public_url: args.public_url,
            header_read_timeout_secs: args.header_read_timeout_secs,
            body_read_timeout_secs: args.body_read_timeout_secs,
            idle_timeout_secs: args.idle_timeout_secs,
            max_connections: args.max_connections,
            plugin_kv_max_bytes: args.plugin_kv_max_bytes,
            plugin_kv_max_keys: args.plugin_kv_max_keys,
            egress_allow: args.egress_allow,
            plugin_shares: crate::config::ShareOverrides {
                plugin_calls: args.plugin_calls,
                plugin_calls_per_tenant: args.plugin_calls_per_tenant,
                adapter_calls: args.adapter_calls,
                adapter_calls_per_tenant: args.adapter_calls_per_tenant,
                plugin_queue_ms: args.plugin_queue_ms,
                adapter_queue_ms: args.adapter_queue_ms,
                plugin_cpu_ms_per_sec: args.plugin_cpu_ms_per_sec,
            },
            log_format: args.log_format,
            otlp_endpoint: args.otlp_endpoint,
        },
    );
    config.validate()?;
    Ok(config)
}

/// Applies the store's migrations and says where the schema stands.
fn migrate(store: &str, ca_file: Option<PathBuf>) -> anyhow::Result<()> {
    crate::config::check_store_url(store)?;
    let options = crate::store::PostgresOptions {
        ca_file,
        ..Default::default()
    };
    let version = crate::store::PostgresStore::migrate(store, options)?;
    println!("the database's schema is at version {version}");
    Ok(())
}

fn store_copy(args: &CopyArgs) -> anyhow::Result<()> {
    use crate::store::copy::{copy, Location};
    let (from, to) = (Location::parse(&args.from), Location::parse(&args.to));
    println!("copying {from} to {to}");
    println!(
        "{:<20} {:>10} {:>10}  {:<16}  check",
        "table", "records", "copied", "sha-256"
    );
    let checks = copy(&from, &to, args.store_ca_file.as_deref(), |check| {
        println!(
            "{:<20} {:>10} {:>10}  {:<16}  {}",
            check.table,
            check.records,
            check.copied,
            &check.checksum[..16],
            if check.matches { "ok" } else { "MISMATCH" }
        );
    })?;
    let records: u64 = checks.iter().map(|check| check.records).sum();
    let bad: Vec<&str> = checks
        .iter()
        .filter(|check| !check.matches)
        .map(|check| check.table)
        .collect();
    if !bad.is_empty() {
        anyhow::bail!("the copy does not match the source in {}", bad.join(", "));
    }
    println!(
        "copied {records} records in {} tables; every table's count and checksum match",
        checks.len()
    );
    Ok(())
}

/// `dialgate store rotate-secret`: see [`crate::secrets::rotate`].
async fn rotate_secret(args: RotateArgs) -> anyhow::Result<()> {
    use crate::store::copy::Location;
    let secret = |value: Option<String>, file: Option<PathBuf>| {
        Config {
            code_secret: value,
            code_secret_file: file,
            ..Config::default()
        }
        .code_secret()
    };
    let current = secret(args.code_secret, args.code_secret_file)?;
    let new = secret(args.new_code_secret, args.new_code_secret_file)?
        .context("give the new secret with --new-code-secret or --new-code-secret-file")?;
    if current.as_deref() == Some(new.as_str()) {
        anyhow::bail!("the new secret is the current one");
    }
    let location = Location::parse(&args.store);
    let db = match &location {
        Location::Sled(dir) => {
            if !dir.join("conf").exists() {
                anyhow::bail!("{} holds no sled store", dir.display());
            }
            Db::open_sled(dir)?
        }
        Location::Postgres(url) => Db::open_postgres_with(
            url,
            false,
            crate::store::PostgresOptions {
                ca_file: args.store_ca_file,
                ..Default::default()
            },
        )?,
    };
    crate::secrets::rotate(&db, current.as_deref(), &new)?;
    db.sync().await?;
    println!(
        "rotated the secret of {location}: start its servers with the new secret; the old one no longer opens it"
    );
    Ok(())
}

fn parse_allow_list(text: &str) -> Result<crate::egress::AllowList, String> {
    text.parse()
}

/// Logs to standard error in `format`, filtered by `DIALGATE_LOG` (default `info`),
/// with phone numbers masked (see [`crate::logs`]). Lines are written by a thread of
/// their own through a buffer flushed whenever the queue empties, so a request never
/// waits on a write to standard error (a write per request line cost a fifth of the
/// lookup throughput); when more than 128k lines wait, new ones are dropped rather
/// than stalling requests. With `otlp_endpoint`, the spans the filter lets through are
/// also exported there (see [`crate::logs::Exporter`]). The guard writes out what is
/// queued, lines and spans, when dropped.
fn init_tracing(
    format: LogFormat,
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<crate::logs::Guard> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DIALGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, lines) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .thread_name("dialgate-logs")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let exporter = otlp_endpoint
        .map(crate::logs::Exporter::start)
        .transpose()?;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = crate::logs::subscriber(format, filter, writer, exporter.as_ref()).try_init();
    Ok(crate::logs::Guard { lines, exporter })
}
