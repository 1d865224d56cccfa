//! The PostgreSQL backend of [`Store`](super::Store), for deployments that run several
//! replicas on one database.
//!
//! Every tree is a table of its own (`tree_<name>`: `k bytea PRIMARY KEY, v bytea`), so
//! a prefix scan is a range scan of the primary key in the same byte order as sled's.
//! Compare-and-swap is one conditional statement (`INSERT … ON CONFLICT DO NOTHING`,
//! `UPDATE … WHERE v = $expected`, `DELETE … WHERE v = $expected`): under PostgreSQL's
//! row locks two replicas updating one record serialise, and exactly one of two
//! swaps from the same value succeeds.
//!
//! Durability is a group commit, as on sled: every statement commits on its own and
//! is visible to every replica at once, but with `synchronous_commit = off`, so it does
//! not wait for the log to reach the disk; [`Store::flush`] (what `Db::sync()` calls
//! before a request answers) commits one transaction synchronously, which waits until
//! the log is on disk up to it, and so covers every write made before it. Concurrent
//! requests share one such flush.
//!
//! The schema is versioned by embedded migrations (`migrations/`), applied at open
//! under a PostgreSQL advisory lock: replicas starting together apply each migration
//! once, and the others wait and find it applied.
//!
//! The [`Store`] contract is synchronous. Its calls are carried out on a small runtime
//! of the backend's own (tokio-postgres over a deadpool pool), and the caller's thread
//! waits on a channel for the answer; that wait neither needs nor disturbs the
//! caller's own runtime.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Timeouts};
use tokio_postgres::NoTls;

use super::{Pair, Store, StoreError, Taken, TokenBucket, Tree};

/// The schema's migrations, in order: (version, SQL).
const MIGRATIONS: [(i32, &str); 14] = [
    (1, include_str!("migrations/0001_trees.sql")),
    (2, include_str!("migrations/0002_changes.sql")),
    (3, include_str!("migrations/0003_webhook_leases.sql")),
    (4, include_str!("migrations/0004_rate_limits.sql")),
    (5, include_str!("migrations/0005_rate_buckets.sql")),
    (6, include_str!("migrations/0006_take_tokens.sql")),
    (7, include_str!("migrations/0007_job_leases.sql")),
    (8, include_str!("migrations/0008_webhook_queue_leases.sql")),
    (9, include_str!("migrations/0009_take_tokens_up_to.sql")),
    (10, include_str!("migrations/0010_pumping.sql")),
    (11, include_str!("migrations/0011_analytics.sql")),
    (12, include_str!("migrations/0012_outbox_numbers.sql")),
    (
        13,
        include_str!("migrations/0013_idempotency_verifications.sql"),
    ),
    (14, include_str!("migrations/0014_rule_stats.sql")),
];

/// Takes tokens from each of a request's buckets, all or none, in one call (see
/// migrations 6 and 9). `$1` keys in key order, `$2` tokens per ms, `$3` bursts, `$4`
/// now (ms), `$5` the most to take from each.
const TAKE_TOKENS: &str = "SELECT dialgate_take_tokens($1, $2, $3, $4, $5)";

/// Whether `tree` is a queue whose rows carry a lease (`lease_until_ms`).
fn leased(tree: Tree) -> bool {
    matches!(tree, Tree::Jobs | Tree::WebhookQueue)
}

/// The statements of a leased queue.
#[derive(Debug, Clone)]
struct LeaseSql {
    /// Claims due entries: up to `$3` rows with keys below `$1` (keys start with the
    /// due time) that nobody holds (no lease, or one ended by `$2`), skipping rows
    /// another replica's claim has locked this moment, each leased until `$4`.
    claim_due: String,
    /// Claims the rows of the keys `$1` that nobody holds by `$2`, skipping locked
    /// ones, each leased until `$3`.
    claim_keys: String,
    /// Moves a claimed row from `$1` to `$2`, unleased, if it is still under the
    /// claim's lease `$3`; one statement, so the row is never at both keys.
    move_to: String,
    /// Removes a claimed row if it is still under the claim's lease `$2`.
    finish: String,
}

impl LeaseSql {
    fn new(tree: Tree) -> Self {
        let table = table(tree);
        let free = "(lease_until_ms IS NULL OR lease_until_ms <= $2)";
        Self {
            claim_due: format!(
                "UPDATE {table} AS q SET lease_until_ms = $4 \
                 FROM (SELECT k FROM {table} WHERE k < $1 AND {free} \
                       ORDER BY k LIMIT $3 FOR UPDATE SKIP LOCKED) AS due \
                 WHERE q.k = due.k RETURNING q.k, q.v"
            ),
            claim_keys: format!(
                "UPDATE {table} AS q SET lease_until_ms = $3 \
                 FROM (SELECT k FROM {table} WHERE k = ANY($1) AND {free} \
                       FOR UPDATE SKIP LOCKED) AS free \
                 WHERE q.k = free.k RETURNING q.k, q.v"
            ),
            move_to: format!(
                "WITH moved AS (DELETE FROM {table} WHERE k = $1 AND lease_until_ms = $3 RETURNING v) \
                 INSERT INTO {table} (k, v) SELECT $2, v FROM moved \
                 ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v, lease_until_ms = NULL"
            ),
            finish: format!("DELETE FROM {table} WHERE k = $1 AND lease_until_ms = $2"),
        }
    }
}

/// Removes the buckets full again by `$1` (ms).
const SWEEP_BUCKETS: &str = "DELETE FROM rate_buckets WHERE full_at_ms <= $1";

/// The advisory lock migrations run under (any fixed number, the same on every replica).
const MIGRATION_LOCK: i64 = 0x6469_616c_6761_7465; // "dialgate"

/// How a replica uses its database: connections at most, how long one call may take
/// (waiting for a connection, making one, and running its statement; past it the call
/// fails as [`StoreError::Unavailable`] and the request answers 503), and the
/// certificates a TLS connection's server must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    pub pool_size: usize,
    pub timeout: Duration,
    /// PEM certificates to trust for the database's certificate; `None` trusts the
    /// web's public roots. Used only when the URL asks for TLS.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for PostgresOptions {
    /// 16 connections, 5 s a call.
    fn default() -> Self {
        Self {
            pool_size: 16,
            timeout: Duration::from_secs(5),
            ca_file: None,
        }
    }
}

/// The statements of one tree.
struct TreeSql {
    get: String,
    put: String,
    remove: String,
    insert_new: String,
    swap: String,
    remove_if: String,
    exists: String,
    scan_range: [String; 2],
    scan_from: [String; 2],
    range_from: String,
    put_batch: String,
    /// The statements of a leased queue, for those trees.
    lease: Option<LeaseSql>,
}

impl TreeSql {
    fn new(tree: Tree) -> Self {
        let table = table(tree);
        let scan = |bound: &str, order: &str| {
            format!("SELECT k, v FROM {table} WHERE {bound} ORDER BY k {order} LIMIT $3")
        };
        Self {
            get: format!("SELECT v FROM {table} WHERE k = $1"),
            // A queue's entry written anew is new work: whatever claim it was under
            // is over, and that claim's runner cannot remove it.
            put: if leased(tree) {
                format!(
                    "INSERT INTO {table} (k, v) VALUES ($1, $2) \
                     ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v, lease_until_ms = NULL"
                )
            } else {
                format!(
                    "INSERT INTO {table} (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
                )
            },
            remove: format!("DELETE FROM {table} WHERE k = $1"),
            insert_new: format!(
                "INSERT INTO {table} (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING"
            ),
            swap: format!("UPDATE {table} SET v = $3 WHERE k = $1 AND v = $2"),
            remove_if: format!("DELETE FROM {table} WHERE k = $1 AND v = $2"),
            exists: format!("SELECT 1 FROM {table} WHERE k = $1"),
            scan_range: [
                scan("k >= $1 AND k < $2", "ASC"),
                scan("k >= $1 AND k < $2", "DESC"),
            ],
            // `$2` is unused here but keeps the parameters of both forms alike.
            scan_from: [
                scan("k >= $1 AND $2::bytea IS NULL", "ASC"),
                scan("k >= $1 AND $2::bytea IS NULL", "DESC"),
            ],
            range_from: format!("SELECT k, v FROM {table} WHERE k >= $1 ORDER BY k LIMIT $2"),
            put_batch: format!(
                "INSERT INTO {table} (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
            ),
            lease: leased(tree).then(|| LeaseSql::new(tree)),
        }
    }
}

/// The table of `tree`.
fn table(tree: Tree) -> String {
    format!("tree_{}", tree.name())
}

use super::successor;

/// The (key, value) pairs of a scan's rows.
fn pairs(rows: Vec<tokio_postgres::Row>) -> Vec<Pair> {
    rows.into_iter()
        .map(|row| (row.get::<_, Vec<u8>>(0), row.get::<_, Vec<u8>>(1)))
        .collect()
}

fn backend(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("postgres: {err}"))
}

/// A statement's failure: the database unreachable or refusing work for now (no
/// connection, a connection lost, a shutdown, a cancelled or timed-out statement, too
/// many connections) is [`StoreError::Unavailable`]; anything else is a backend error.
fn failed(err: tokio_postgres::Error) -> StoreError {
    use std::error::Error as _;
    let unavailable = match err.code() {
        // Connection exceptions, insufficient resources, operator intervention (a
        // shutdown, a cancelled statement).
        Some(code) => matches!(&code.code()[..2], "08" | "53" | "57"),
        // No SQLSTATE: a connection closed, or an I/O failure under it (a call that
        // takes too long is cut by the store's own timeout instead).
        None => {
            err.is_closed()
                || err
                    .source()
                    .is_some_and(|source| source.is::<std::io::Error>())
        }
    };
    // "db error" alone does not say which: the server's message and SQLSTATE do.
    let message = match err.as_db_error() {
        Some(db) => format!("postgres: {} ({})", db.message(), db.code().code()),
        None => format!("postgres: {err}"),
    };
    if unavailable {
        StoreError::Unavailable(message)
    } else {
        StoreError::Backend(message)
    }
}

/// No connection could be had from the pool: the database is unreachable for now.
fn no_connection(err: deadpool_postgres::PoolError) -> StoreError {
    // The causes too: "error performing TLS handshake" alone does not say why.
    let mut message = format!("postgres: no connection: {err}");
    let mut last = err.to_string();
    let mut cause = std::error::Error::source(&err);
    while let Some(inner) = cause {
        let text = inner.to_string();
        if text != last {
            message.push_str(": ");
            message.push_str(&text);
        }
        last = text;
        cause = inner.source();
    }
    StoreError::Unavailable(message)
}

/// The URL as the client reads it, and the TLS connector when the URL asks for TLS
/// (`sslmode=prefer`, `require`, `verify-ca` or `verify-full`). Every TLS connection
/// verifies the server's certificate, against `ca_file` or else the web's public roots,
/// and its name, whatever the mode says (libpq's `require` verifies neither; here it
/// is as strict as `verify-full`). Without `sslmode`, or with `disable`, connections
/// are plain TCP.
fn transport(
    url: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<(String, Option<tokio_postgres_rustls::MakeRustlsConnect>), StoreError> {
    let mode = url
        .split(['?', '&', ' '])
        .find_map(|part| part.strip_prefix("sslmode="))
        .unwrap_or("disable");
    let url = url
        .replace("sslmode=verify-full", "sslmode=require")
        .replace("sslmode=verify-ca", "sslmode=require");
    if !matches!(mode, "prefer" | "require" | "verify-ca" | "verify-full") {
        return Ok((url, None));
    }
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            use rustls_pki_types::pem::PemObject as _;
            let unreadable = |err: &dyn std::fmt::Display| {
                StoreError::Backend(format!(
                    "cannot read the store's CA file {}: {err}",
                    path.display()
                ))
            };
            let certificates = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|err| unreadable(&err))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| unreadable(&err))?;
            if certificates.is_empty() {
                return Err(unreadable(&"it holds no PEM certificate"));
            }
            for certificate in certificates {
                roots.add(certificate).map_err(|err| unreadable(&err))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(backend)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((
        url,
        Some(tokio_postgres_rustls::MakeRustlsConnect::new(config)),
    ))
}

/// Whether every host of `config` is this machine (loopback or a Unix socket), where
/// plain connections are not worth a warning.
fn is_local(config: &tokio_postgres::Config) -> bool {
    config.get_hosts().iter().all(|host| match host {
        tokio_postgres::config::Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        tokio_postgres::config::Host::Unix(_) => true,
    })
}

/// A PostgreSQL database holding every tree.
pub struct PostgresStore {
    pool: Pool,
    sql: Arc<HashMap<Tree, TreeSql>>,
    /// The backend's own runtime; shut down without blocking when the store drops.
    runtime: Option<tokio::runtime::Runtime>,
    /// How long a call may take, once the store is open.
    timeout: Option<Duration>,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`),
    /// applies the schema's migrations if `migrate`, and checks that the schema is the
    /// one this build knows.
    pub fn open(url: &str, migrate: bool) -> Result<Self, StoreError> {
        Self::open_with(url, migrate, PostgresOptions::default())
    }

    /// [`PostgresStore::open`] with the pool's size and the calls' timeout.
    pub fn open_with(
        url: &str,
        migrate: bool,
        options: PostgresOptions,
    ) -> Result<Self, StoreError> {
        let (url, tls) = transport(url, options.ca_file.as_deref())?;
        let mut config = tokio_postgres::Config::from_str(&url)
            .map_err(|err| StoreError::Backend(format!("bad PostgreSQL URL: {err}")))?;
        // Writes commit without waiting for the disk; `flush` waits once for all.
        let server_options = match config.get_options() {
            Some(given) => format!("{given} -c synchronous_commit=off"),
            None => "-c synchronous_commit=off".to_owned(),
        };
        config.options(&server_options);
        config.connect_timeout(options.timeout);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dialgate-postgres")
            .enable_all()
            .build()
            .map_err(backend)?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls {
            Some(tls) => Manager::from_config(config, tls, manager_config),
            None => {
                if !is_local(&config) {
                    tracing::warn!(
                        "connections to the PostgreSQL store are not encrypted; add sslmode=require to its URL"
                    );
                }
                Manager::from_config(config, NoTls, manager_config)
            }
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(options.timeout),
                create: Some(options.timeout),
                recycle: Some(options.timeout),
            })
            .build()
            .map_err(backend)?;
        let sql = Tree::ALL
            .iter()
            .map(|tree| (*tree, TreeSql::new(*tree)))
            .collect();
        let mut store = Self {
            pool,
            sql: Arc::new(sql),
            runtime: Some(runtime),
            // Migrations may wait for another replica's: no timeout at open.
            timeout: None,
        };
        let pool = store.pool.clone();
        let applied = store.call(async move {
            if migrate {
                apply_migrations(&pool).await?;
            }
            schema_version(&pool).await
        })?;
        let known = MIGRATIONS.last().map_or(0, |(version, _)| *version);
        if applied != known {
            return Err(StoreError::Backend(format!(
                "the database's schema is at version {applied}, this build needs {known}; run `dialgate migrate`"
            )));
        }
        store.timeout = Some(options.timeout);
        Ok(store)
    }

    /// Applies the schema's migrations to the database at `url`; the schema version
    /// it is at afterwards.
    pub fn migrate(url: &str, options: PostgresOptions) -> Result<i32, StoreError> {
        let store = Self::open_with(url, true, options)?;
        let pool = store.pool.clone();
        store.call(async move { schema_version(&pool).await })
    }

    /// The lease statements of `tree`, if it is a leased queue.
    fn lease_sql(&self, tree: Tree) -> Option<LeaseSql> {
        self.sql.get(&tree).and_then(|sql| sql.lease.clone())
    }

    /// Runs `work` on the backend's runtime and waits for its answer on this thread.
    fn call<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| StoreError::Backend("postgres: the store is closed".into()))?;
        let (tx, rx) = mpsc::sync_channel(1);
        let timeout = self.timeout;
        runtime.spawn(async move {
            let answer = match timeout {
                Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(format!(
                        "postgres: no answer within {} ms",
                        limit.as_millis()
                    )))
                }),
                None => work.await,
            };
            let _ = tx.send(answer);
        });
        let wait = || {
            rx.recv()
                .map_err(|_| StoreError::Backend("postgres: the store's runtime stopped".into()))
        };
        // On a server's worker, the wait hands the worker's other tasks to another
        // thread, so requests keep running while this one waits for the database.
        let on_worker = tokio::runtime::Handle::try_current().is_ok_and(|handle| {
            handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        });
        if on_worker {
            tokio::task::block_in_place(wait)?
        } else {
            wait()?
        }
    }

    /// Runs one statement of `tree` (chosen by `pick`) with `params` on a pooled
    /// connection, and hands the connection and statement to `run`.
    fn statement<T, F, Fut>(
        &self,
        tree: Tree,
        pick: fn(&TreeSql) -> &str,
        run: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object, tokio_postgres::Statement) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>> + Send,
    {
        let pool = self.pool.clone();
        let sql = Arc::clone(&self.sql);
        self.call(async move {
            let text = sql
                .get(&tree)
                .map(pick)
                .ok_or_else(|| StoreError::Backend(format!("no table for {}", tree.name())))?
                .to_owned();
            let client = pool.get().await.map_err(no_connection)?;
            let statement = client.prepare_cached(&text).await.map_err(failed)?;
            run(client, statement).await.map_err(failed)
        })
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The highest migration applied to the database (0 for an empty database).
async fn schema_version(pool: &Pool) -> Result<i32, StoreError> {
    let client = pool.get().await.map_err(no_connection)?;
    let exists: bool = client
        .query_one("SELECT to_regclass('dialgate_migrations') IS NOT NULL", &[])
        .await
        .map_err(backend)?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM dialgate_migrations",
            &[],
        )
        .await
        .map_err(backend)?;
    Ok(row.get(0))
}

/// Applies the migrations the database lacks, each in a transaction, under the
/// migration lock.
async fn apply_migrations(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(no_connection)?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(backend)?;
    let applied = async {
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS dialgate_migrations (
                    version integer PRIMARY KEY,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )",
            )
            .await
            .map_err(backend)?;
        for (version, sql) in MIGRATIONS {
            let transaction = client.transaction().await.map_err(backend)?;
            let done = transaction
                .query_opt(
                    "SELECT 1 FROM dialgate_migrations WHERE version = $1",
                    &[&version],
                )
                .await
                .map_err(backend)?
                .is_some();
            if done {
                continue;
            }
            transaction
                .batch_execute(sql)
                .await
                .map_err(|err| backend(format!("migration {version}: {err}")))?;
            transaction
                .execute(
                    "INSERT INTO dialgate_migrations (version) VALUES ($1)",
                    &[&version],
                )
                .await
                .map_err(backend)?;
            transaction.commit().await.map_err(backend)?;
            tracing::info!(version, "applied a schema migration");
        }
        Ok::<(), StoreError>(())
    }
    .await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(backend);
    applied.and(unlocked.map(|_| ()))
}

impl Store for PostgresStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_vec();
        self.statement(
            tree,
            |sql| &sql.get,
            move |client, statement| async move {
                let row = client.query_opt(&statement, &[&key]).await?;
                Ok(row.map(|row| row.get::<_, Vec<u8>>(0)))
            },
        )
    }

    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let (key, value) = (key.to_vec(), value.to_vec());
        self.statement(
            tree,
            |sql| &sql.put,
            move |client, statement| async move {
                client.execute(&statement, &[&key, &value]).await?;
                Ok(())
            },
        )
    }

    /// One statement for the whole batch.
    fn put_batch(&self, tree: Tree, pairs: &[Pair]) -> Result<(), StoreError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let (keys, values): (Vec<Vec<u8>>, Vec<Vec<u8>>) = pairs.iter().cloned().unzip();
        self.statement(
            tree,
            |sql| &sql.put_batch,
            move |client, statement| async move {
                client.execute(&statement, &[&keys, &values]).await?;
                Ok(())
            },
        )
    }

    fn remove(&self, tree: Tree, key: &[u8]) -> Result<bool, StoreError> {
        let key = key.to_vec();
        self.statement(
            tree,
            |sql| &sql.remove,
            move |client, statement| async move { Ok(client.execute(&statement, &[&key]).await? > 0) },
        )
    }

    fn compare_and_swap(
        &self,
        tree: Tree,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let key = key.to_vec();
        match (expected.map(<[u8]>::to_vec), new.map(<[u8]>::to_vec)) {
            (None, Some(new)) => self.statement(
                tree,
                |sql| &sql.insert_new,
                move |client, statement| async move {
                    Ok(client.execute(&statement, &[&key, &new]).await? == 1)
                },
            ),
            (Some(expected), Some(new)) => self.statement(
                tree,
                |sql| &sql.swap,
                move |client, statement| async move {
                    Ok(client.execute(&statement, &[&key, &expected, &new]).await? == 1)
                },
            ),
            (Some(expected), None) => self.statement(
                tree,
                |sql| &sql.remove_if,
                move |client, statement| async move {
                    Ok(client.execute(&statement, &[&key, &expected]).await? == 1)
                },
            ),
            (None, None) => self.statement(
                tree,
                |sql| &sql.exists,
                move |client, statement| async move {
                    Ok(client.query_opt(&statement, &[&key]).await?.is_none())
                },
            ),
        }
    }

    fn scan_prefix(
        &self,
        tree: Tree,
        prefix: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Pair>, StoreError> {
        let from = prefix.to_vec();
        let upper = successor(prefix);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let pick: fn(&TreeSql) -> &str = match (upper.is_some(), reverse) {
            (true, false) => |sql| &sql.scan_range[0],
            (true, true) => |sql| &sql.scan_range[1],
            (false, false) => |sql| &sql.scan_from[0],
            (false, true) => |sql| &sql.scan_from[1],
        };
        self.statement(tree, pick, move |client, statement| async move {
            let rows = client.query(&statement, &[&from, &upper, &limit]).await?;
            Ok(pairs(rows))
        })
    }

    fn scan_from(&self, tree: Tree, start: &[u8], limit: usize) -> Result<Vec<Pair>, StoreError> {
        let start = start.to_vec();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.statement(
            tree,
            |sql| &sql.range_from,
            move |client, statement| async move {
                let rows = client.query(&statement, &[&start, &limit]).await?;
                Ok(pairs(rows))
            },
        )
    }

    fn scan_range(
        &self,
        tree: Tree,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Pair>, StoreError> {
        let (from, upper) = (start.to_vec(), Some(end.to_vec()));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let pick: fn(&TreeSql) -> &str = if reverse {
            |sql| &sql.scan_range[1]
        } else {
            |sql| &sql.scan_range[0]
        };
        self.statement(tree, pick, move |client, statement| async move {
            let rows = client.query(&statement, &[&from, &upper, &limit]).await?;
            Ok(pairs(rows))
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn size_on_disk(&self) -> Result<Option<u64>, StoreError> {
        let pool = self.pool.clone();
        self.call(async move {
            let client = pool.get().await.map_err(no_connection)?;
            let row = client
                .query_one("SELECT pg_database_size(current_database())", &[])
                .await
                .map_err(failed)?;
            Ok(u64::try_from(row.get::<_, i64>(0)).ok())
        })
    }

    fn take_tokens(
        &self,
        buckets: &[(&[u8], TokenBucket)],
        now_ms: i64,
    ) -> Result<Option<Taken>, StoreError> {
        // Locked in key order; the answer maps back to the caller's order.
        let mut order: Vec<usize> = (0..buckets.len()).collect();
        order.sort_by_key(|&i| buckets[i].0);
        let keys: Vec<Vec<u8>> = order.iter().map(|&i| buckets[i].0.to_vec()).collect();
        let per_ms: Vec<f64> = order.iter().map(|&i| buckets[i].1.per_ms).collect();
        let burst: Vec<f64> = order.iter().map(|&i| buckets[i].1.burst).collect();
        let wants: Vec<f64> = order.iter().map(|&i| buckets[i].1.up_to).collect();
        let pool = self.pool.clone();
        let found = self.call(async move {
            let client = pool.get().await.map_err(no_connection)?;
            let take = client.prepare_cached(TAKE_TOKENS).await.map_err(failed)?;
            let row = client
                .query_one(&take, &[&keys, &per_ms, &burst, &now_ms, &wants])
                .await
                .map_err(failed)?;
            Ok(row.get::<_, Vec<f64>>(0))
        })?;
        if found.len() != buckets.len() {
            return Err(backend("dialgate_take_tokens answered for other buckets"));
        }
        let mut tokens = vec![0.0; buckets.len()];
        for (sorted, &i) in order.iter().enumerate() {
            tokens[i] = found[sorted];
        }
        let rates: Vec<TokenBucket> = buckets.iter().map(|(_, rate)| *rate).collect();
        Ok(Some(Taken::from_tokens(&rates, tokens)))
    }

    fn claim_due(
        &self,
        tree: Tree,
        upto: &[u8],
        now_ms: i64,
        until_ms: i64,
        limit: usize,
    ) -> Result<Option<Vec<Pair>>, StoreError> {
        let Some(sql) = self.lease_sql(tree) else {
            return Ok(None);
        };
        let (upto, pool) = (upto.to_vec(), self.pool.clone());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(async move {
            let client = pool.get().await.map_err(no_connection)?;
            let claim = client
                .prepare_cached(&sql.claim_due)
                .await
                .map_err(failed)?;
            let rows = client
                .query(&claim, &[&upto, &now_ms, &limit, &until_ms])
                .await
                .map_err(failed)?;
            let mut claimed = pairs(rows);
            // UPDATE … RETURNING has no order of its own.
            claimed.sort();
            Ok(Some(claimed))
        })
    }

    fn claim_keys(
        &self,
        tree: Tree,
        keys: &[Vec<u8>],
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Option<Vec<Pair>>, StoreError> {
        let Some(sql) = self.lease_sql(tree) else {
            return Ok(None);
        };
        if keys.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let (keys, pool) = (keys.to_vec(), self.pool.clone());
        self.call(async move {
            let client = pool.get().await.map_err(no_connection)?;
            let claim = client
                .prepare_cached(&sql.claim_keys)
                .await
                .map_err(failed)?;
            let rows = client
                .query(&claim, &[&keys, &now_ms, &until_ms])
                .await
                .map_err(failed)?;
            let mut claimed = pairs(rows);
            claimed.sort();
            Ok(Some(claimed))
        })
    }

    fn move_claimed(
        &self,
        tree: Tree,
        from: &[u8],
        to: &[u8],
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let Some(sql) = self.lease_sql(tree) else {
            return Err(backend(format!("{} holds no leases", tree.name())));
        };
        let (from, to, pool) = (from.to_vec(), to.to_vec(), self.pool.clone());
        self.call(async move {
            let client = pool.get().await.map_err(no_connection)?;
            let move_to = client.prepare_cached(&sql.move_to).await.map_err(failed)?;
            let moved = client
                .execute(&move_to, &[&from, &to, &until_ms])
                .await
                .map_err(failed)?;
            Ok(moved == 1)
        })
    }

    fn finish_claimed(&self, tree: Tree, key: &[u8], until_ms: i64) -> Result<bool, StoreError> {
        let Some(sql) = self.lease_sql(tree) else {
            return Err(backend(format!("{} holds no leases", tree.name())));
        };
        let (key, pool) = (key.to_vec(), self.pool.clone());
        self.call(async move {
            let client = pool.get().await.map_err(no_connection)?;
            let finish = client.prepare_cached(&sql.finish).await.map_err(failed)?;
            let removed = client
                .execute(&finish, &[&key, &until_ms])
                .await
                .map_err(failed)?;
            Ok(removed == 1)
        })
    }

    fn sweep_tokens(&self, now_ms: i64) -> Result<Option<u64>, StoreError> {
        let pool = self.pool.clone();
        self.call(async move {
            let client = pool.get().await.map_err(no_connection)?;
            let removed = client
                .execute(SWEEP_BUCKETS, &[&now_ms])
                .await
                .map_err(failed)?;
            Ok(Some(removed))
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        // A synchronous commit of a transaction that has an id (so it writes a commit
        // record) returns once the log is on disk up to it: every earlier commit of
        // every connection is durable then. One simple query, so one round trip; a
        // failure inside it ends the transaction (the simple query protocol runs the
        // string as one implicit block and rolls back what follows an error).
        let pool = self.pool.clone();
        self.call(async move {
            let client = pool.get().await.map_err(no_connection)?;
            client
                .batch_execute(
                    "BEGIN; SET LOCAL synchronous_commit = on; SELECT txid_current(); COMMIT",
                )
                .await
                .map_err(failed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::successor;

    #[test]
    fn the_successor_bounds_every_key_with_the_prefix() {
        assert_eq!(successor(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(successor(b"\xff\xff"), None);
        assert_eq!(successor(b""), None);
    }
}
