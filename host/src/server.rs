//! Assembling and running the server: store, engine, router, listener, shutdown.
//!
//! Connections are served by hyper's HTTP/1 connection directly rather than
//! `axum::serve`, which has no limits: a semaphore caps the connections served at once
//! (the next is accepted only when one closes, so the rest wait in the kernel's listen
//! backlog), and a watchdog per connection closes it when its request headers (or a
//! part of its body) take longer than the header-read timeout, or when it sits idle
//! between requests longer than the idle timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::api;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, HttpLimits};
use crate::disposable::DisposableList;
use crate::egress::Egress;
use crate::flows::webhooks::worker::{self, WorkerHandle};
use crate::flows::{Engine, OperatorKey, Replica};
use crate::limits::Buckets;
use crate::metrics::Metrics;
use crate::otp::CodeHasher;
use crate::phone::carrier;
use crate::plugins::registry::{Protection, Registry};
use crate::plugins::{builtins, Limits, PluginRuntime};
use crate::secrets::SecretBox;
use crate::sending::{DevOutbox, Sender};
use crate::store::Db;

/// Builds the engine for `config` on the sled store in its data directory.
pub fn build_engine(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(Arc<Engine>, OperatorKey)> {
    let metrics = Arc::new(Metrics::new());
    let db = match &config.store {
        Some(url) => Db::open_postgres_with(url, true, config.store_options.clone())?,
        None => {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!(
                    "cannot create the data directory {}",
                    config.data_dir.display()
                )
            })?;
            Db::open_sled(&config.data_dir)?
        }
    };
    db.observe(Arc::clone(&metrics));
    let secret = match config
        .code_secret()
        .and_then(|configured| Ok(crate::secrets::data_key(&db, configured.as_deref())?))
    {
        Ok(secret) => secret,
        Err(err) => {
            // Nothing else holds the store yet: close it before answering, so a start
            // tried again at once (with the right secret) can open the directory.
            db.close_within(std::time::Duration::from_secs(10));
            return Err(err);
        }
    };
    db.use_server_secret(&secret);
    let secrets = SecretBox::new(&secret);
    let migrated = crate::store::personal::migrate(&db)?;
    let moved = crate::plugins::storage::migrate(&db)?;
    if migrated.sealed + migrated.renamed + moved > 0 {
        tracing::info!(
            sealed = migrated.sealed,
            renamed = migrated.renamed + moved,
            "personal data stored in the clear by an earlier version is now sealed"
        );
    }
    let sealed = crate::secrets::migrate(&db, &secrets)?;
    if sealed > 0 {
        tracing::info!(
            sealed,
            "secrets stored in the clear by an earlier version are now sealed"
        );
    }
    let egress = Egress::new(config.egress_allow.clone());
    if !config.egress_allow.ranges().is_empty() {
        tracing::info!(allow = %config.egress_allow, "egress policy: these ranges are allowed");
    }
    let disposable = match &config.disposable_list {
        Some(path) => DisposableList::with_file(path)?,
        None => DisposableList::built_in(),
    };
    let outbox = (!config.production).then(|| DevOutbox::new(db.clone()));
    let provider = outbox
        .clone()
        .map(|outbox| Arc::new(outbox) as Arc<dyn Sender>);
    carrier::preload();
    let runtime = PluginRuntime::configured(
        db.clone(),
        Limits::default(),
        config.plugin_bounds,
        config.plugin_shares,
    )
    .map_err(|err| anyhow::anyhow!("cannot start the plugin runtime: {err}"))?
    .with_metrics(Arc::clone(&metrics));
    let protection = Protection { egress, secrets };
    let plugins = Registry::open_with(Arc::new(runtime), db.clone(), builtins::all(), protection)
        .map_err(|err| anyhow::anyhow!("cannot load the tenants' plugins: {err}"))?;
    // Replicas of a shared store keep their caches current through the change log.
    let changes = match &config.store {
        Some(_) => {
            let log = Arc::new(crate::changes::ChangeLog::open(db.clone())?);
            plugins.set_change_log(Arc::clone(&log));
            Some(log)
        }
        None => None,
    };
    // Replicas of a shared store share their rate limits through it.
    let limits = match &config.store {
        Some(_) => Buckets::shared(db.clone()),
        None => Buckets::default(),
    }
    .with_metrics(Arc::clone(&metrics));
    let engine = Engine {
        plugins: Arc::new(plugins),
        db,
        clock,
        hasher: CodeHasher::new(secret),
        sender: provider,
        outbox,
        limits,
        disposable,
        replica: Replica::default(),
        changes,
        metrics,
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
    /// The connections the server holds and has accepted.
    pub connections: Arc<ConnectionStats>,
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
    let connections = Arc::new(ConnectionStats::default());
    let task = tokio::spawn(serve_with(
        listener,
        Arc::clone(&engine),
        config.http,
        Arc::clone(&connections),
        async {
            let _ = stopped.await;
        },
    ));
    let worker = worker::spawn(Arc::clone(&engine));
    Ok(RunningServer {
        addr,
        engine,
        operator,
        connections,
        stop: Some(stop),
        task,
        webhooks: Some(worker),
    })
}

/// Serves the API on `listener` with the default connection limits until `shutdown`
/// completes, then drains.
pub async fn serve_on(
    listener: TcpListener,
    engine: Arc<Engine>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(
        listener,
        engine,
        HttpLimits::default(),
        Arc::new(ConnectionStats::default()),
        shutdown,
    )
    .await
}

/// Serves the API on `listener` under `limits` until `shutdown` completes, then
/// stops accepting, lets each connection finish its request in flight (idle ones close
/// at once), and waits for them.
pub async fn serve_with(
    listener: TcpListener,
    engine: Arc<Engine>,
    limits: HttpLimits,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_jobs, jobs_stopped) = tokio::sync::watch::channel(false);
    let jobs = tokio::spawn(Arc::clone(&engine).run_jobs(jobs_stopped.clone()));
    let changes = tokio::spawn(Arc::clone(&engine).run_changes(jobs_stopped.clone()));
    let pumping = tokio::spawn(Arc::clone(&engine).run_pumping(jobs_stopped.clone()));
    let analytics = tokio::spawn(Arc::clone(&engine).run_analytics(jobs_stopped.clone()));
    let retention = tokio::spawn(Arc::clone(&engine).run_retention(jobs_stopped.clone()));
    let alerts = tokio::spawn(Arc::clone(&engine).run_alerts(jobs_stopped));
    let app = api::app(engine);
    let (stop_connections, connections_stopped) = tokio::sync::watch::channel(false);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A slot first: beyond the cap, connections are not accepted at all.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) if is_connection_error(&err) => continue,
            Err(err) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::error!(error = %err, "cannot accept a connection");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let app = app.clone();
        let stats = Arc::clone(&stats);
        let stopped = connections_stopped.clone();
        connections.spawn(async move {
            serve_connection(stream, peer, app, limits, stopped).await;
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop_connections.send(true);
    while connections.join_next().await.is_some() {}
    let _ = stop_jobs.send(true);
    let _ = jobs.await;
    let _ = changes.await;
    let _ = pumping.await;
    let _ = analytics.await;
    let _ = retention.await;
    let _ = alerts.await;
    Ok(())
}

/// The connections a server holds and has accepted, for tests and figures.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    open: AtomicUsize,
    accepted: AtomicU64,
}

impl ConnectionStats {
    /// Connections being served now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// Errors of one connection that the listener survives (as `axum::serve` treats them).
fn is_connection_error(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// What a connection's watchdog knows: when it went idle, when the next request's
/// first byte came, and whether a request is being handled. Times are milliseconds
/// since the connection opened.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    idle_since: AtomicU64,
    /// `u64::MAX` until a byte of the next request arrives.
    head_started: AtomicU64,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Wakes the watchdog when a request ends.
    ended: Notify,
}

const NOT_STARTED: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(NOT_STARTED),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            ended: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Bytes arrived: between requests, the next request's headers have begun.
    fn read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ = self.head_started.compare_exchange(
                NOT_STARTED,
                self.now_ms(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// A request's headers are in: it is being handled until the guard drops.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(NOT_STARTED, Ordering::Release);
        InFlight(Arc::clone(self))
    }

    /// When the connection is to be closed if nothing changes; `None` while a
    /// request is handled.
    fn deadline(&self, limits: &HttpLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let started = self.head_started.load(Ordering::Acquire);
        let (from, allowed) = if started != NOT_STARTED {
            (started, limits.header_read_timeout)
        } else if self.requests.load(Ordering::Relaxed) == 0 {
            // A new connection owes its first request's headers.
            (0, limits.header_read_timeout)
        } else {
            (self.idle_since.load(Ordering::Acquire), limits.idle_timeout)
        };
        Some(self.opened + Duration::from_millis(from) + allowed)
    }
}

/// A request body that must arrive in full within a time from its headers: a client
/// that trickles a body holds a connection and a handler no longer than that.
struct DeadlineBody {
    inner: Incoming,
    allowed: Duration,
    deadline: Instant,
    /// Armed the first time the body is not ready, so a body that came with its
    /// headers costs no timer.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, allowed: Duration) -> Self {
        Self {
            inner,
            allowed,
            deadline: Instant::now() + allowed,
            timer: None,
        }
    }
}

/// A request body that did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s (the operator's body_read_timeout_secs)", .0.as_secs())]
struct BodyTooSlow(Duration);

impl hyper::body::Body for DeadlineBody {
    type Data = hyper::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTooSlow(this.allowed).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request being handled; dropping it marks the connection idle.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity
            .idle_since
            .store(activity.now_ms(), Ordering::Release);
        activity.head_started.store(NOT_STARTED, Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
        activity.ended.notify_one();
    }
}

/// The TCP stream, telling the watchdog when bytes arrive.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Serves one connection until it ends, its watchdog closes it, or the server stops
/// (then the request in flight finishes and the connection closes).
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: axum::Router,
    limits: HttpLimits,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        stream,
        activity: Arc::clone(&activity),
    });
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let in_flight = activity.begin();
            request.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            let request = request.map(|body| {
                if hyper::body::Body::is_end_stream(&body) {
                    axum::body::Body::new(body)
                } else {
                    axum::body::Body::new(DeadlineBody::new(body, limits.body_read_timeout))
                }
            });
            async move {
                let response = app.oneshot(request).await;
                drop(in_flight);
                response
            }
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let mut stopping = *stopped.borrow();
    if stopping {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        let deadline = activity.deadline(&limits);
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(err) = served {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                }
                return;
            }
            changed = stopped.changed(), if !stopping => {
                if changed.is_err() || *stopped.borrow() {
                    stopping = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            () = sleep_until(deadline) => {
                if activity.deadline(&limits).is_some_and(|at| Instant::now() >= at) {
                    tracing::debug!(%peer, "closing a slow or idle connection");
                    // Dropping the connection closes the socket.
                    return;
                }
            }
            () = activity.ended.notified() => {}
        }
    }
}

/// Sleeps until `deadline`, forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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
    let worker = worker::spawn(Arc::clone(&engine));
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
    let _ = engine.replica.public_url.set(url);
}

fn announce(config: &Config, addr: SocketAddr, operator: &OperatorKey) {
    let place = match &config.store {
        Some(url) => format!("store {}", crate::store::shown_url(url)),
        None => format!("data in {}", config.data_dir.display()),
    };
    tracing::info!(%addr, %place, "dialgate listening");
    println!("dialgate listening on http://{addr} ({place})");
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
