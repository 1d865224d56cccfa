//! The PostgreSQL client, chosen by measurement: tokio-postgres over a deadpool pool
//! (what `store/postgres.rs` uses) against sqlx's pool, on the store's two hot
//! statements (a point read by primary key, and a compare-and-swap update), with the
//! same pool size, concurrency and records (1.7 KB values, as a verification record).
//!
//! Needs a database: `DIALGATE_BENCH_STORE=postgres://… cargo bench -p dialgate --bench
//! pg_clients` (it makes and drops a table `bench_clients`). Prints operations a second
//! and latency per client and statement.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Records in the table.
const RECORDS: u32 = 10_000;
/// Bytes of a record's value.
const VALUE_BYTES: usize = 1_700;
/// Connections per pool, as the store's default.
const POOL: usize = 16;
/// Concurrent callers.
const CALLERS: u32 = 64;
/// How long each client drives each statement.
const SECONDS: u64 = 5;

const READ: &str = "SELECT v FROM bench_clients WHERE k = $1";
const SWAP: &str = "UPDATE bench_clients SET v = $3 WHERE k = $1 AND v = $2";

fn key(n: u32) -> Vec<u8> {
    format!("tenant/{n:08}").into_bytes()
}

/// The value of record `n` at `generation` (a swap moves a record to the next one).
fn value(n: u32, generation: u8) -> Vec<u8> {
    let mut value = vec![b'x'; VALUE_BYTES];
    value[..4].copy_from_slice(&n.to_be_bytes());
    value[4] = generation;
    value
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Statement {
    Read,
    Swap,
}

impl Statement {
    fn name(self) -> &'static str {
        match self {
            Statement::Read => "point read",
            Statement::Swap => "compare-and-swap",
        }
    }
}

/// One client under test.
trait Client: Clone + Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Runs `statement` on record `n` (a swap from `generation` to the next).
    fn run(
        &self,
        statement: Statement,
        n: u32,
        generation: u8,
    ) -> impl std::future::Future<Output = ()> + Send;
}

#[derive(Clone)]
struct TokioPostgres(deadpool_postgres::Pool);

impl Client for TokioPostgres {
    fn name(&self) -> &'static str {
        "tokio-postgres + deadpool"
    }

    async fn run(&self, statement: Statement, n: u32, generation: u8) {
        let client = self.0.get().await.expect("a connection");
        match statement {
            Statement::Read => {
                let read = client.prepare_cached(READ).await.expect("prepare");
                client.query_opt(&read, &[&key(n)]).await.expect("read");
            }
            Statement::Swap => {
                let swap = client.prepare_cached(SWAP).await.expect("prepare");
                let (old, new) = (value(n, generation), value(n, generation.wrapping_add(1)));
                client
                    .execute(&swap, &[&key(n), &old, &new])
                    .await
                    .expect("swap");
            }
        }
    }
}

#[derive(Clone)]
struct Sqlx(sqlx::PgPool);

impl Client for Sqlx {
    fn name(&self) -> &'static str {
        "sqlx"
    }

    async fn run(&self, statement: Statement, n: u32, generation: u8) {
        match statement {
            Statement::Read => {
                sqlx::query(READ)
                    .bind(key(n))
                    .fetch_optional(&self.0)
                    .await
                    .expect("read");
            }
            Statement::Swap => {
                sqlx::query(SWAP)
                    .bind(key(n))
                    .bind(value(n, generation))
                    .bind(value(n, generation.wrapping_add(1)))
                    .execute(&self.0)
                    .await
                    .expect("swap");
            }
        }
    }
}

/// Drives `statement` through `client` from [`CALLERS`] tasks for [`SECONDS`]; caller
/// `c` owns the records `c, c + CALLERS, …`, so its swaps always find their record at
/// the generation it expects. Prints operations a second and latency percentiles.
async fn drive<C: Client>(client: C, statement: Statement) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let (client, stop) = (client.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let owned: Vec<u32> = (caller..RECORDS).step_by(CALLERS as usize).collect();
                let mut generations = vec![0u8; owned.len()];
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let slot = i % owned.len();
                    let at = Instant::now();
                    client.run(statement, owned[slot], generations[slot]).await;
                    latencies.push(at.elapsed());
                    if statement == Statement::Swap {
                        generations[slot] = generations[slot].wrapping_add(1);
                    }
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(SECONDS)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for caller in callers {
        latencies.extend(caller.await.expect("a caller"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "{:<28} {:<18} {:>9.0}/s  p50 {:>7.3} ms  p99 {:>7.3} ms",
        client.name(),
        statement.name(),
        latencies.len() as f64 / elapsed,
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
    );
}

/// Makes the table afresh, every record at generation 0.
async fn reset(pool: &deadpool_postgres::Pool) {
    let client = pool.get().await.expect("a connection");
    client
        .batch_execute(
            "DROP TABLE IF EXISTS bench_clients;
             CREATE TABLE bench_clients (k bytea PRIMARY KEY, v bytea NOT NULL)",
        )
        .await
        .expect("the table");
    let keys: Vec<Vec<u8>> = (0..RECORDS).map(key).collect();
    let values: Vec<Vec<u8>> = (0..RECORDS).map(|n| value(n, 0)).collect();
    client
        .execute(
            "INSERT INTO bench_clients SELECT * FROM unnest($1::bytea[], $2::bytea[])",
            &[&keys, &values],
        )
        .await
        .expect("the records");
}

fn main() {
    let Ok(url) = std::env::var("DIALGATE_BENCH_STORE") else {
        println!("pg_clients: set DIALGATE_BENCH_STORE=postgres://… to run this benchmark");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let config = tokio_postgres::Config::from_str(&url).expect("a PostgreSQL URL");
        let manager = deadpool_postgres::Manager::from_config(
            config,
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let deadpool = deadpool_postgres::Pool::builder(manager)
            .max_size(POOL)
            .build()
            .expect("a pool");
        let sqlx = sqlx::postgres::PgPoolOptions::new()
            .max_connections(u32::try_from(POOL).expect("a pool size"))
            .connect(&url)
            .await
            .expect("a sqlx pool");
        println!(
            "pg_clients: {CALLERS} callers, {POOL} connections, {SECONDS} s per run, {VALUE_BYTES}-byte values"
        );
        for statement in [Statement::Read, Statement::Swap] {
            reset(&deadpool).await;
            drive(TokioPostgres(deadpool.clone()), statement).await;
            reset(&deadpool).await;
            drive(Sqlx(sqlx.clone()), statement).await;
        }
        deadpool
            .get()
            .await
            .expect("a connection")
            .batch_execute("DROP TABLE bench_clients")
            .await
            .expect("drop the table");
    });
}
