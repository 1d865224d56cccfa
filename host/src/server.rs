//! Assembling and running the server: store, engine, router, listener, shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::disposable::DisposableList;
use crate::flows::{Caches, Engine, OperatorKey};
use crate::limits::Buckets;
use crate::otp::CodeHasher;
use crate::phone::carrier;
use crate::plugins::registry::Registry;
use crate::plugins::{builtins, Limits, PluginRuntime};
use crate::providers::{DevOutbox, Provider};
use crate::store::Db;
use crate::webhooks::{self, worker::WorkerHandle};

/// Builds the engine for `config` on the sled store in its data directory.
pub fn build_engine(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(Arc<Engine>, OperatorKey)> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let db = Db::open_sled(&config.data_dir)?;
    let secret = Engine::code_secret(&db, config.code_secret.as_deref())?;
    let disposable = match &config.disposable_list {
        Some(path) => DisposableList::with_file(path)?,
        None => DisposableList::built_in(),
    };
    let outbox = (!config.production).then(|| DevOutbox::new(db.clone()));
    let provider = outbox
        .clone()
        .map(|outbox| Arc::new(outbox) as Arc<dyn Provider>);
    carrier::preload();
    let runtime = PluginRuntime::with_shares(db.clone(), Limits::default(), config.plugin_shares)
        .map_err(|err| anyhow::anyhow!("cannot start the plugin runtime: {err}"))?;
    let plugins = Registry::open(Arc::new(runtime), db.clone(), builtins::all())
        .map_err(|err| anyhow::anyhow!("cannot load the tenants' plugins: {err}"))?;
    let engine = Engine {
        plugins: Arc::new(plugins),
        db,
        clock,
        hasher: CodeHasher::new(secret),
        provider,
        outbox,
        limits: Buckets::default(),
        disposable,
        caches: Caches::default(),
        routing: Default::default(),
        public_url: std::sync::OnceLock::new(),
        jobs_wake: tokio::sync::Notify::new(),
        jobs_next_due: std::sync::atomic::AtomicI64::new(i64::MIN),
        webhooks: webhooks::Hub::default(),
    };
    let operator = engine
        .init_operator_key(config.operator_key.as_deref())
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    Ok((Arc::new(engine), operator))
}

/// A server listening in the background (used by tests and the load driver).
#[derive(Debug)]
pub struct RunningServer {
    pub addr: SocketAddr,
    pub engine: Arc<Engine>,
    pub operator: OperatorKey,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The webhook delivery worker (dropping the handle stops it too).
    webhooks: Option<WorkerHandle>,
}

impl RunningServer {
    /// Stops accepting, finishes requests in flight, waits for the server to end and
    /// for its store to close, so the data directory can be opened again at once.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
        if let Some(worker) = self.webhooks.take() {
            worker.stop().await;
        }
        let closed = self.engine.db.closed();
        drop(self);
        closed.await;
    }
}

/// Starts the server on `config.listen` in the background.
pub async fn spawn(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<RunningServer> {
    let (engine, operator) = build_engine(config, clock)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    set_public_url(&engine, config, addr);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_on(listener, Arc::clone(&engine), async {
        let _ = stopped.await;
    }));
    let worker = webhooks::worker::spawn(Arc::clone(&engine));
    Ok(RunningServer {
        addr,
        engine,
        operator,
        stop: Some(stop),
        task,
        webhooks: Some(worker),
    })
}

/// Serves the API on `listener` until `shutdown` completes, then drains.
pub async fn serve_on(
    listener: TcpListener,
    engine: Arc<Engine>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_jobs, jobs_stopped) = tokio::sync::watch::channel(false);
    let jobs = tokio::spawn(Arc::clone(&engine).run_jobs(jobs_stopped));
    let app = api::app(engine);
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    let _ = stop_jobs.send(true);
    let _ = jobs.await;
    served
}

/// `dialgate serve`: runs in the foreground until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (engine, operator) = build_engine(&config, Arc::new(SystemClock))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    set_public_url(&engine, &config, addr);
    announce(&config, addr, &operator);
    let preloading = Arc::clone(&engine);
    tokio::task::spawn_blocking(move || {
        preloading.plugins.preload_builtins();
        let names: Vec<&str> = preloading
            .plugins
            .builtins()
            .iter()
            .map(|b| b.name)
            .collect();
        tracing::info!(plugins = ?names, stats = ?preloading.plugins.runtime().stats(), "first-party plugins loaded");
    });
    let closed = engine.db.closed();
    let worker = webhooks::worker::spawn(Arc::clone(&engine));
    let served = serve_on(listener, engine, shutdown_signal()).await;
    worker.stop().await;
    served?;
    closed.await;
    tracing::info!("dialgate stopped");
    Ok(())
}

/// Where providers send receipts: the configured public URL, else the bound address.
fn set_public_url(engine: &Engine, config: &Config, addr: SocketAddr) {
    let url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let _ = engine.public_url.set(url);
}

fn announce(config: &Config, addr: SocketAddr, operator: &OperatorKey) {
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "dialgate listening");
    println!(
        "dialgate listening on http://{addr} (data in {})",
        config.data_dir.display()
    );
    if let OperatorKey::Generated(secret) = operator {
        println!();
        println!("  Operator key (shown once; only its hash is stored):");
        println!("    {secret}");
        println!("  Create a tenant: curl -s -X POST http://{addr}/v1/tenants -H 'Authorization: Bearer {secret}' -H 'Content-Type: application/json' -d '{{\"name\":\"acme\"}}'");
        println!();
    }
    if !config.production {
        let banner = "DEV MODE: codes are NOT delivered; they go to the dev outbox (GET /v1/dev/outbox). Use --production for real traffic.";
        eprintln!("\n!!! {banner}\n");
        tracing::warn!("{banner}");
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
