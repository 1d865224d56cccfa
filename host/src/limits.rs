//! Token-bucket abuse limits, keyed by scope (tenant, number, client IP).
//!
//! Buckets live in memory: they protect the host and the tenant's budget from bursts,
//! and losing them on restart only grants one fresh burst. Time comes from the host's
//! clock so tests can refill buckets deterministically.
//!
//! Memory stays flat however many distinct keys arrive: a bucket that has refilled is
//! the same as no bucket, so each remembers when it will be full again and is dropped
//! after that (every shard sweeps at most once per [`SWEEP_EVERY_SECS`] of clock time);
//! a shard that still reaches its cap evicts the buckets closest to full first; and a
//! key longer than [`MAX_KEY_BYTES`] is kept as its SHA-256, so a caller cannot make
//! one entry large.
//!
//! Replicas of a shared store share their buckets instead ([`Buckets::shared`]), so a
//! limit of N is N across the replicas, not N per replica: on PostgreSQL each bucket
//! is a row of `rate_buckets` that one statement refills and takes from
//! ([`crate::store::Store::take_tokens`]: a request's buckets in one call, locked in
//! key order), so replicas taking from one hot bucket queue on its row lock instead
//! of retrying; a backend without such a table keeps each as
//! a record of the `rate_limits` tree updated by compare-and-swap. A bucket that has
//! refilled is removed by [`Buckets::sweep_shared`], which each replica runs every
//! minute, so the store holds only buckets that are not full.
//!
//! A large shared bucket (a tenant's, say: 600 sends at once by default) is hot: every
//! request of the tenant on every replica takes from its one row. So a replica that
//! takes from a bucket of 64 tokens or more takes a small reserve with the same call
//! and spends it on its next requests without a round trip, for at most
//! [`RESERVE_FOR_MS`]; what is left then is dropped, never put back. A reserve is no
//! larger than the requests the replica made of the bucket in the current second (so
//! a quiet tenant takes one token at a time and loses nothing), nor than a 32nd of the
//! burst, nor 32 tokens. The shared bucket only ever gives tokens, so a fleet admits
//! at most its limit; when a busy replica stops while it holds a reserve, the fleet
//! admits that many fewer. Buckets of fewer than 64 tokens (a number's, a client's)
//! are taken from one token at a time.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::metrics::{LimitScope, Metrics};
use crate::settings::BucketLimit;
use crate::store::{Db, StoreError, Taken, TokenBucket, Tree};

/// Shards of the bucket map, each behind its own lock.
const SHARDS: usize = 16;
/// Buckets kept across all shards by default (about 150 bytes each).
pub const DEFAULT_MAX_BUCKETS: usize = 200_000;
/// Keys longer than this are replaced by their hash.
pub const MAX_KEY_BYTES: usize = 160;
/// How often (clock seconds) a shard drops its refilled buckets.
const SWEEP_EVERY_SECS: i64 = 10;
/// How long (clock ms) a replica may spend a reserve it took from a shared bucket.
pub const RESERVE_FOR_MS: i64 = 1_000;
/// Reserves a replica holds at once, at most (a take finding the map full takes no
/// reserve, and drops the expired ones first).
const MAX_RESERVES: usize = 10_000;

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Bucket {
    tokens: f64,
    at: DateTime<Utc>,
    /// When the bucket is full again, and may be forgotten.
    full_at: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<String, Bucket>,
    next_sweep: Option<DateTime<Utc>>,
}

/// A set of token buckets.
#[derive(Debug)]
pub struct Buckets {
    shards: [Mutex<Shard>; SHARDS],
    per_shard: usize,
    /// The shared store the buckets live in, on replicas of one.
    shared: Option<Db>,
    /// Tokens this replica took ahead from large shared buckets, by bucket key.
    reserves: Mutex<Reserves>,
    /// Where refusals are counted, by scope, when the host keeps metrics.
    metrics: Option<Arc<Metrics>>,
}

/// The reserves of one replica, bounded by [`MAX_RESERVES`].
#[derive(Debug)]
struct Reserves {
    map: HashMap<String, Reserve>,
    /// Entries at most: [`MAX_RESERVES`] (smaller in tests).
    cap: usize,
    /// Before this, a full map is not swept again.
    next_sweep: Option<DateTime<Utc>>,
}

impl Default for Reserves {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            cap: MAX_RESERVES,
            next_sweep: None,
        }
    }
}

impl Reserves {
    /// Whether a new bucket's entry fits; a full map first drops the entries of
    /// buckets not asked for in the last second (at most once a second).
    fn room(&mut self, now: DateTime<Utc>) -> bool {
        if self.map.len() < self.cap {
            return true;
        }
        if self.next_sweep.is_some_and(|at| now < at) {
            return false;
        }
        let window = Duration::milliseconds(RESERVE_FOR_MS);
        self.map
            .retain(|_, reserve| reserve.until > now || now < reserve.since + window);
        self.next_sweep = Some(now + window);
        self.map.len() < self.cap
    }
}

/// Tokens taken ahead from a shared bucket, to be spent here until `until`, and the
/// requests this replica made of the bucket since `since` (the current second).
#[derive(Debug, Clone, Copy)]
struct Reserve {
    tokens: f64,
    until: DateTime<Utc>,
    since: DateTime<Utc>,
    requests: u32,
}

/// The most a take asks of a shared bucket of `limit`: one token, or for a bucket of
/// 64 tokens or more a 32nd of its burst (at most 32), the rest kept as a reserve.
fn reserve_size(limit: BucketLimit) -> f64 {
    f64::from((limit.burst / 32).clamp(1, 32))
}

impl Default for Buckets {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_MAX_BUCKETS)
    }
}

/// The scope of the bucket `key` (`{area}/{scope}/…`).
fn scope_of(key: &str) -> LimitScope {
    match key.split('/').nth(1) {
        Some("t") => LimitScope::Tenant,
        Some("p") => LimitScope::Number,
        Some("i") => LimitScope::Ip,
        _ => LimitScope::Other,
    }
}

/// A denied request: seconds until a token is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after_secs: u64,
}

impl Buckets {
    /// Buckets that keep at most about `max` entries.
    pub fn with_capacity(max: usize) -> Self {
        Self {
            shards: Default::default(),
            per_shard: (max / SHARDS).max(1),
            shared: None,
            reserves: Mutex::new(Reserves::default()),
            metrics: None,
        }
    }

    /// These buckets, counting every refusal in `metrics` by its bucket's scope.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Buckets kept in `db`'s `rate_limits` tree, shared by every replica of the store.
    pub fn shared(db: Db) -> Self {
        Self {
            shared: Some(db),
            ..Self::default()
        }
    }

    /// Takes one token from the bucket `key`, created full under `limit`. A shared
    /// store that fails answers as the store does.
    pub fn take(
        &self,
        key: &str,
        limit: BucketLimit,
        now: DateTime<Utc>,
    ) -> Result<Result<(), Limited>, StoreError> {
        Ok(self
            .take_all(&[(key, limit)], now)?
            .map_err(|(_, limited)| limited))
    }

    /// Takes one token from each bucket of `buckets` (created full under its limit),
    /// all or none: when one has no token, nothing is taken from the others, so a
    /// request denied for one scope (a number, say) costs nothing from a wider one
    /// (the tenant). A denial names the first empty bucket by its place in `buckets`.
    ///
    /// A refusal is counted by the empty bucket's scope, read from its key: keys are
    /// `{area}/{scope}/…`, the scope `t` (tenant), `p` (phone number) or `i` (client
    /// IP); other keys count as `other`.
    pub fn take_all(
        &self,
        buckets: &[(&str, BucketLimit)],
        now: DateTime<Utc>,
    ) -> Result<Result<(), (usize, Limited)>, StoreError> {
        let answer = self.take_all_uncounted(buckets, now)?;
        if let (Err((at, _)), Some(metrics)) = (&answer, &self.metrics) {
            let scope = buckets.get(*at).map_or("", |(key, _)| key);
            metrics.rate_limited(scope_of(scope));
        }
        Ok(answer)
    }

    /// [`Buckets::take_all`], without counting a refusal.
    fn take_all_uncounted(
        &self,
        buckets: &[(&str, BucketLimit)],
        now: DateTime<Utc>,
    ) -> Result<Result<(), (usize, Limited)>, StoreError> {
        let hashed: Vec<String> = buckets
            .iter()
            .map(|(key, _)| {
                if key.len() > MAX_KEY_BYTES {
                    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
                } else {
                    (*key).to_owned()
                }
            })
            .collect();
        if let Some(db) = &self.shared {
            return self.shared_take_all(db, &hashed, buckets, now);
        }
        // Every shard involved is locked, in index order, for the whole take.
        let mut shards: Vec<usize> = hashed.iter().map(|key| shard_of(key)).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut guards: Vec<_> = shards
            .iter()
            .map(|&index| (index, self.shards[index].lock()))
            .collect();
        for (_, shard) in &mut guards {
            shard.sweep(now, self.per_shard);
        }
        let mut stepped = Vec::with_capacity(hashed.len());
        for (at, (key, (_, limit))) in hashed.iter().zip(buckets).enumerate() {
            let shard = &guards
                .iter()
                .find(|(index, _)| *index == shard_of(key))
                .expect("every shard involved is locked")
                .1;
            let (bucket, answer) = step(shard.map.get(key).copied(), *limit, now);
            if let Err(limited) = answer {
                // Nothing taken: the stored buckets stay as they were (an untouched
                // bucket refills by the clock all the same).
                return Ok(Err((at, limited)));
            }
            stepped.push(bucket);
        }
        for (key, bucket) in hashed.into_iter().zip(stepped) {
            let index = shard_of(&key);
            let shard = &mut guards
                .iter_mut()
                .find(|(locked, _)| *locked == index)
                .expect("every shard involved is locked")
                .1;
            // A new key needs room: the sweep above left the shard below its cap, or
            // evicted down to it.
            shard.map.insert(key, bucket);
        }
        Ok(Ok(()))
    }

    /// Removes the shared buckets that have refilled by `now` (a full bucket is the
    /// same as none); how many. Reads the tree in chunks, and removes a bucket only if
    /// it is still the one read, so a concurrent take is never undone.
    pub fn sweep_shared(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        const CHUNK: usize = 1_000;
        let Some(db) = &self.shared else {
            return Ok(0);
        };
        if let Some(removed) = db.sweep_tokens(now.timestamp_millis())? {
            return Ok(usize::try_from(removed).unwrap_or(usize::MAX));
        }
        let mut removed = 0;
        let mut start = Vec::new();
        loop {
            let chunk = db.scan_from_raw(Tree::RateLimits, &start, CHUNK)?;
            let read = chunk.len();
            for (key, bytes) in &chunk {
                let full = serde_json::from_slice::<Bucket>(bytes)
                    .map_or(true, |bucket| bucket.full_at <= now);
                if full && db.compare_and_swap_raw(Tree::RateLimits, key, Some(bytes), None)? {
                    removed += 1;
                }
            }
            match chunk.last() {
                Some((last, _)) if read == CHUNK => {
                    start = last.clone();
                    start.push(0);
                }
                _ => return Ok(removed),
            }
        }
    }
    /// How many buckets are held (for tests and figures).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().map.len()).sum()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The longest key held, in bytes.
    pub fn longest_key(&self) -> usize {
        self.shards
            .iter()
            .flat_map(|shard| shard.lock().map.keys().map(String::len).collect::<Vec<_>>())
            .max()
            .unwrap_or(0)
    }
}

impl Buckets {
    /// [`Buckets::take_all`] on a shared store: the tokens this replica holds in
    /// reserve first, then one call of the backend's own for the other buckets where it
    /// has one; else each bucket is a record taken from by compare-and-swap, and the
    /// tokens taken before a denial are given back.
    fn shared_take_all(
        &self,
        db: &Db,
        keys: &[String],
        buckets: &[(&str, BucketLimit)],
        now: DateTime<Utc>,
    ) -> Result<Result<(), (usize, Limited)>, StoreError> {
        // Spent from the reserves at once, and put back if the request is denied.
        let mut reserved = vec![false; keys.len()];
        // What each bucket is asked for past its one token: at most what this replica
        // asked of it so far this second.
        let mut up_to = vec![1.0; keys.len()];
        {
            let mut reserves = self.reserves.lock();
            for (at, key) in keys.iter().enumerate() {
                let most = reserve_size(buckets[at].1);
                if most <= 1.0 {
                    continue;
                }
                if !reserves.map.contains_key(key) {
                    if !reserves.room(now) {
                        continue;
                    }
                    reserves.map.insert(
                        key.clone(),
                        Reserve {
                            tokens: 0.0,
                            until: now,
                            since: now,
                            requests: 0,
                        },
                    );
                }
                let Some(reserve) = reserves.map.get_mut(key) else {
                    continue;
                };
                if now >= reserve.since + Duration::milliseconds(RESERVE_FOR_MS) {
                    reserve.since = now;
                    reserve.requests = 0;
                }
                reserve.requests = reserve.requests.saturating_add(1);
                if reserve.until > now && reserve.tokens >= 1.0 {
                    reserve.tokens -= 1.0;
                    reserved[at] = true;
                } else {
                    up_to[at] = most.min(f64::from(reserve.requests));
                }
            }
        }
        let remote: Vec<usize> = (0..keys.len()).filter(|&at| !reserved[at]).collect();
        if remote.is_empty() {
            return Ok(Ok(()));
        }
        let rates: Vec<(&[u8], TokenBucket)> = remote
            .iter()
            .map(|&at| {
                let limit = buckets[at].1;
                let bucket = TokenBucket {
                    per_ms: f64::from(limit.per_minute) / 60_000.0,
                    burst: f64::from(limit.burst),
                    up_to: up_to[at],
                };
                (keys[at].as_bytes(), bucket)
            })
            .collect();
        let answer = match db.take_tokens(&rates, now.timestamp_millis())? {
            Some(Taken::Yes(taken)) => {
                self.keep_reserves(&remote, keys, &taken, now);
                Ok(())
            }
            Some(Taken::No { bucket, tokens }) => {
                let per_sec = rates[bucket].1.per_ms * 1000.0;
                let wait = ((1.0 - tokens) / per_sec).ceil();
                Err((
                    remote[bucket],
                    Limited {
                        retry_after_secs: (wait as u64).max(1),
                    },
                ))
            }
            None => {
                let records: Vec<(&String, BucketLimit)> = remote
                    .iter()
                    .map(|&at| (&keys[at], buckets[at].1))
                    .collect();
                take_records(db, &records, now)?.map_err(|(at, limited)| (remote[at], limited))
            }
        };
        if answer.is_err() {
            let mut reserves = self.reserves.lock();
            for (at, key) in keys.iter().enumerate() {
                if reserved[at] {
                    if let Some(reserve) = reserves.map.get_mut(key) {
                        reserve.tokens += 1.0;
                    }
                }
            }
        }
        Ok(answer)
    }

    /// Keeps what the buckets `remote` gave past the request's one token each as this
    /// replica's reserves, to spend until [`RESERVE_FOR_MS`] from `now`.
    fn keep_reserves(&self, remote: &[usize], keys: &[String], taken: &[f64], now: DateTime<Utc>) {
        if taken.iter().all(|&given| given <= 1.0) {
            return;
        }
        let until = now + Duration::milliseconds(RESERVE_FOR_MS);
        let mut reserves = self.reserves.lock();
        for (&at, &given) in remote.iter().zip(taken) {
            let extra = given - 1.0;
            if extra < 1.0 {
                continue;
            }
            // The entry was made when the bucket was asked for more than one token;
            // without it (dropped meanwhile) the extra tokens go unspent, which only
            // admits less.
            if let Some(reserve) = reserves.map.get_mut(&keys[at]) {
                if reserve.until > now {
                    // Another request refilled it meanwhile: spendable until the later end.
                    reserve.tokens += extra;
                } else {
                    reserve.tokens = extra;
                }
                reserve.until = until;
            }
        }
    }

    /// Shared buckets whose replica holds at most `cap` reserves (for tests).
    #[cfg(test)]
    fn shared_with_reserve_cap(db: Db, cap: usize) -> Self {
        let buckets = Self::shared(db);
        buckets.reserves.lock().cap = cap;
        buckets
    }

    /// Reserves this replica holds entries for (for tests).
    #[cfg(test)]
    fn reserve_entries(&self) -> usize {
        self.reserves.lock().map.len()
    }

    /// Tokens this replica holds in reserve for the bucket `key` (for tests).
    #[cfg(test)]
    fn reserved(&self, key: &str, now: DateTime<Utc>) -> f64 {
        self.reserves
            .lock()
            .map
            .get(key)
            .filter(|reserve| reserve.until > now)
            .map_or(0.0, |reserve| reserve.tokens)
    }
}

/// One token from each of `buckets`, records of the `rate_limits` tree taken from by
/// compare-and-swap; the tokens taken before a denial are given back.
fn take_records(
    db: &Db,
    buckets: &[(&String, BucketLimit)],
    now: DateTime<Utc>,
) -> Result<Result<(), (usize, Limited)>, StoreError> {
    for (at, (key, limit)) in buckets.iter().enumerate() {
        let answer = db.update::<Bucket, StoreError, Result<(), Limited>>(
            Tree::RateLimits,
            key.as_bytes(),
            |stored| {
                let (bucket, answer) = step(stored, *limit, now);
                Ok((Some(bucket), answer))
            },
        )?;
        if let Err(limited) = answer {
            for (taken, limit) in &buckets[..at] {
                db.update::<Bucket, StoreError, ()>(
                    Tree::RateLimits,
                    taken.as_bytes(),
                    |stored| Ok((stored.map(|bucket| give_back(bucket, *limit)), ())),
                )?;
            }
            return Ok(Err((at, limited)));
        }
    }
    Ok(Ok(()))
}

/// `bucket` with the token a denied request took put back.
fn give_back(bucket: Bucket, limit: BucketLimit) -> Bucket {
    let tokens = (bucket.tokens + 1.0).min(f64::from(limit.burst));
    let per_sec = f64::from(limit.per_minute) / 60.0;
    let missing = ((f64::from(limit.burst) - tokens) / per_sec * 1000.0).ceil() as i64;
    Bucket {
        tokens,
        full_at: bucket.at + Duration::milliseconds(missing.max(0)),
        ..bucket
    }
}

impl Shard {
    /// Drops refilled buckets when a sweep is due or the shard is full; a shard still
    /// full after that evicts the buckets closest to full (they lose least by it: a
    /// dropped bucket comes back full).
    fn sweep(&mut self, now: DateTime<Utc>, cap: usize) {
        let due = self.next_sweep.is_none_or(|at| now >= at);
        if !due && self.map.len() < cap {
            return;
        }
        self.map.retain(|_, bucket| bucket.full_at > now);
        self.next_sweep = Some(now + Duration::seconds(SWEEP_EVERY_SECS));
        if self.map.len() < cap {
            return;
        }
        // Keep three quarters of the cap, so eviction runs once per many inserts.
        let keep = cap - cap / 4;
        let mut full_ats: Vec<DateTime<Utc>> =
            self.map.values().map(|bucket| bucket.full_at).collect();
        let drop = full_ats.len().saturating_sub(keep);
        if drop == 0 {
            return;
        }
        let (_, threshold, _) = full_ats.select_nth_unstable(drop - 1);
        let threshold = *threshold;
        let mut dropped = 0;
        self.map.retain(|_, bucket| {
            if dropped < drop && bucket.full_at <= threshold {
                dropped += 1;
                false
            } else {
                true
            }
        });
    }
}

/// Takes one token from `bucket` (a full one when there is none) under `limit`:
/// the bucket afterwards, and whether the token was there.
fn step(
    bucket: Option<Bucket>,
    limit: BucketLimit,
    now: DateTime<Utc>,
) -> (Bucket, Result<(), Limited>) {
    let burst = f64::from(limit.burst);
    let per_sec = f64::from(limit.per_minute) / 60.0;
    let bucket = match bucket {
        Some(bucket) => refill(bucket, limit, now),
        None => Bucket {
            tokens: burst,
            at: now,
            full_at: now,
        },
    };
    if bucket.tokens >= 1.0 {
        let tokens = bucket.tokens - 1.0;
        let missing = ((burst - tokens) / per_sec * 1000.0).ceil() as i64;
        let full_at = bucket.at + Duration::milliseconds(missing.max(0));
        (
            Bucket {
                tokens,
                full_at,
                ..bucket
            },
            Ok(()),
        )
    } else {
        let wait = ((1.0 - bucket.tokens) / per_sec).ceil();
        (
            bucket,
            Err(Limited {
                retry_after_secs: (wait as u64).max(1),
            }),
        )
    }
}

fn refill(bucket: Bucket, limit: BucketLimit, now: DateTime<Utc>) -> Bucket {
    let elapsed = (now - bucket.at).num_milliseconds().max(0) as f64 / 1000.0;
    let per_sec = f64::from(limit.per_minute) / 60.0;
    Bucket {
        tokens: (bucket.tokens + elapsed * per_sec).min(f64::from(limit.burst)),
        at: now.max(bucket.at),
        full_at: bucket.full_at,
    }
}

fn shard_of(key: &str) -> usize {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % SHARDS as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    const LIMIT: BucketLimit = BucketLimit {
        per_minute: 60,
        burst: 3,
    };

    #[test]
    fn burst_then_deny_then_refill() {
        let buckets = Buckets::default();
        let now = Utc::now();
        for _ in 0..3 {
            assert!(buckets
                .take("k", LIMIT, now)
                .expect("the local buckets")
                .is_ok());
        }
        assert_eq!(
            buckets.take("k", LIMIT, now).expect("the local buckets"),
            Err(Limited {
                retry_after_secs: 1
            })
        );
        assert!(buckets
            .take("k", LIMIT, now + Duration::seconds(1))
            .expect("the local buckets")
            .is_ok());
    }

    #[test]
    fn refusals_are_counted_by_the_empty_buckets_scope() {
        let metrics = Arc::new(Metrics::new());
        let buckets = Buckets::default().with_metrics(Arc::clone(&metrics));
        let now = Utc::now();
        let keys = ["lookup/t/ten", "lookup/p/ten/+15550001", "lookup/i/ten/::1"];
        let tight = BucketLimit {
            per_minute: 1,
            burst: 1,
        };
        let limits = [LIMIT, tight, LIMIT];
        let request: Vec<(&str, BucketLimit)> = keys.into_iter().zip(limits).collect();
        assert!(buckets.take_all(&request, now).expect("local").is_ok());
        assert_eq!(
            buckets
                .take_all(&request, now)
                .expect("local")
                .map_err(|(at, _)| at),
            Err(1)
        );
        assert!(buckets
            .take("webhook-test/ten", tight, now)
            .expect("local")
            .is_ok());
        assert!(buckets
            .take("webhook-test/ten", tight, now)
            .expect("local")
            .is_err());
        let text = metrics.encode(|_| {});
        assert!(
            text.contains("dialgate_rate_limited_total{scope=\"number\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("dialgate_rate_limited_total{scope=\"other\"} 1\n"));
        assert!(!text.contains("scope=\"tenant\""));
    }

    #[test]
    fn keys_do_not_share_tokens() {
        let buckets = Buckets::default();
        let now = Utc::now();
        for _ in 0..3 {
            assert!(buckets
                .take("a", LIMIT, now)
                .expect("the local buckets")
                .is_ok());
        }
        assert!(buckets
            .take("b", LIMIT, now)
            .expect("the local buckets")
            .is_ok());
    }

    #[test]
    fn retry_after_reflects_the_rate() {
        let buckets = Buckets::default();
        let now = Utc::now();
        let slow = BucketLimit {
            per_minute: 1,
            burst: 1,
        };
        assert!(buckets
            .take("s", slow, now)
            .expect("the local buckets")
            .is_ok());
        assert_eq!(
            buckets.take("s", slow, now).expect("the local buckets"),
            Err(Limited {
                retry_after_secs: 60
            })
        );
    }

    /// 200,000 distinct keys, 1,000 a clock second: each bucket refills 20 s after its
    /// one take (burst 20 at 60 a minute), so about 20 s of keys plus a sweep interval
    /// are held at any time, never the whole stream.
    #[test]
    fn distinct_keys_expire_by_time_so_memory_stays_flat() {
        let clock = ManualClock::new();
        let buckets = Buckets::default();
        let limit = BucketLimit {
            per_minute: 60,
            burst: 20,
        };
        let mut peak = 0;
        for second in 0..200 {
            for n in 0..1_000 {
                let key = format!(
                    "send-otp/i/tenant/10.{}.{}.{}",
                    second % 256,
                    n / 256,
                    n % 256
                );
                assert!(buckets
                    .take(&key, limit, clock.now())
                    .expect("the local buckets")
                    .is_ok());
            }
            peak = peak.max(buckets.len());
            clock.advance(Duration::seconds(1));
        }
        let bound = 1_000 * (20 + SWEEP_EVERY_SECS as usize + 2);
        assert!(peak <= bound, "peak {peak} buckets, bound {bound}");
        // Long after the last take every bucket has refilled; the next take sweeps.
        clock.advance(Duration::minutes(5));
        for shard in 0..64 {
            let _ = buckets
                .take(&format!("late-{shard}"), limit, clock.now())
                .expect("the local buckets");
        }
        assert!(buckets.len() <= 64, "{} buckets left", buckets.len());
    }

    /// Keys arriving faster than they expire are held to the cap; the buckets kept are
    /// the ones furthest from full.
    #[test]
    fn the_cap_holds_under_a_flood_of_keys() {
        let now = Utc::now();
        let buckets = Buckets::with_capacity(1_600);
        let slow = BucketLimit {
            per_minute: 1,
            burst: 2,
        };
        // A drained bucket first: it must survive the flood.
        assert!(buckets
            .take("drained", slow, now)
            .expect("the local buckets")
            .is_ok());
        assert!(buckets
            .take("drained", slow, now)
            .expect("the local buckets")
            .is_ok());
        for n in 0..50_000 {
            let _ = buckets
                .take(&format!("flood-{n}"), slow, now)
                .expect("the local buckets");
            assert!(buckets.len() <= 1_600 + SHARDS, "{}", buckets.len());
        }
        assert!(
            buckets
                .take("drained", slow, now)
                .expect("the local buckets")
                .is_err(),
            "the drained bucket was evicted"
        );
    }

    #[test]
    fn long_keys_are_kept_as_their_hash() {
        let buckets = Buckets::default();
        let now = Utc::now();
        let long = format!("verify-otp/i/tenant/{}", "9".repeat(60_000));
        for _ in 0..3 {
            assert!(buckets
                .take(&long, LIMIT, now)
                .expect("the local buckets")
                .is_ok());
        }
        assert!(
            buckets
                .take(&long, LIMIT, now)
                .expect("the local buckets")
                .is_err(),
            "same bucket"
        );
        assert!(buckets.longest_key() <= MAX_KEY_BYTES);
        let other = format!("verify-otp/i/tenant/{}", "8".repeat(60_000));
        assert!(
            buckets
                .take(&other, LIMIT, now)
                .expect("the local buckets")
                .is_ok(),
            "another bucket"
        );
    }

    /// What shared buckets must do on either backend.
    fn shared_buckets_hold_one_limit_and_are_swept(db: &Db) {
        let (first, second) = (Buckets::shared(db.clone()), Buckets::shared(db.clone()));
        let now = ManualClock::new().now();
        let mut granted = 0;
        let mut refused = Vec::new();
        for n in 0..10 {
            let replica = if n % 2 == 0 { &first } else { &second };
            match replica.take("k", LIMIT, now).expect("store") {
                Ok(()) => granted += 1,
                Err(limited) => refused.push(limited.retry_after_secs),
            }
        }
        assert_eq!(granted, LIMIT.burst, "one burst across both");
        assert_eq!(refused, [1; 7], "a token a second");
        assert_eq!(first.len(), 0, "nothing is kept in memory");
        // A second later one token is back, and only one.
        let second_later = now + Duration::seconds(1);
        assert!(first.take("k", LIMIT, second_later).expect("store").is_ok());
        assert!(second
            .take("k", LIMIT, second_later)
            .expect("store")
            .is_err());
        // Not refilled yet: kept. Refilled: swept.
        assert_eq!(first.sweep_shared(second_later).expect("sweep"), 0);
        let later = now + Duration::minutes(5);
        assert_eq!(second.sweep_shared(later).expect("sweep"), 1);
        assert_eq!(second.sweep_shared(later).expect("sweep"), 0);
        // A swept bucket comes back full.
        for _ in 0..LIMIT.burst {
            assert!(first.take("k", LIMIT, later).expect("store").is_ok());
        }
        assert!(first.take("k", LIMIT, later).expect("store").is_err());
    }

    /// A request's buckets are taken all or none: a denial by one costs nothing from
    /// the others, and names the bucket that denied.
    fn buckets_are_taken_all_or_none(buckets: &Buckets) {
        let now = ManualClock::new().now();
        let wide = BucketLimit {
            per_minute: 60,
            burst: 5,
        };
        // The narrow bucket ("number") is spent after three takes ...
        for _ in 0..LIMIT.burst {
            let taken = buckets.take_all(&[("tenant", wide), ("number", LIMIT)], now);
            assert!(taken.expect("store").is_ok());
        }
        // ... and then every denial leaves the wide one ("tenant") alone.
        for _ in 0..10 {
            let denied = buckets
                .take_all(&[("tenant", wide), ("number", LIMIT)], now)
                .expect("store")
                .expect_err("the number's bucket is empty");
            assert_eq!(denied.0, 1, "the second bucket denied");
            assert_eq!(denied.1.retry_after_secs, 1);
        }
        // Two tokens are left in the tenant's bucket, whatever the denials.
        assert!(buckets.take("tenant", wide, now).expect("store").is_ok());
        assert!(buckets.take("tenant", wide, now).expect("store").is_ok());
        let denied = buckets.take_all(&[("other", LIMIT), ("tenant", wide)], now);
        assert_eq!(denied.expect("store").map_err(|(at, _)| at), Err(1));
        // The first bucket of that denied request was not taken from either.
        for _ in 0..LIMIT.burst {
            assert!(buckets.take("other", LIMIT, now).expect("store").is_ok());
        }
    }

    /// A large bucket on PostgreSQL: replicas take reserves, and still admit exactly
    /// one burst between them; a denial by a small bucket puts the reserve's token
    /// back; quiet traffic takes no reserve.
    fn reserves_hold_the_limit(db: &Db) {
        let large = BucketLimit {
            per_minute: 60,
            burst: 640,
        };
        let (first, second) = (Buckets::shared(db.clone()), Buckets::shared(db.clone()));
        let now = ManualClock::new().now();
        // Both replicas ask in turn until both are refused: one burst in all.
        let mut granted = 0;
        let mut open = [true, true];
        while open.iter().any(|&o| o) {
            for (at, replica) in [&first, &second].into_iter().enumerate() {
                if open[at] {
                    match replica.take("large", large, now).expect("store") {
                        Ok(()) => granted += 1,
                        Err(_) => open[at] = false,
                    }
                }
            }
        }
        assert_eq!(granted, 640, "one burst across both replicas");

        // Busy traffic is served from a reserve; a denial by another bucket of the
        // same request gives the reserve's token back.
        let later = now + Duration::minutes(20);
        let number = BucketLimit {
            per_minute: 60,
            burst: 5,
        };
        let pairs = [("wide", large), ("n1", number)];
        // Asked for 1, 2 (one kept), then 4 (three kept) tokens: two are left.
        for _ in 0..number.burst {
            let taken = first.take_all(&pairs, later).expect("store");
            assert!(taken.is_ok());
        }
        assert!(first.reserved("wide", later) >= 1.0, "a reserve was taken");
        let held = first.reserved("wide", later);
        let denied = first.take_all(&pairs, later).expect("store");
        assert_eq!(denied.map_err(|(at, _)| at), Err(1));
        assert_eq!(first.reserved("wide", later), held, "the token came back");
        let mut rest = 0;
        while first.take("wide", large, later).expect("store").is_ok() {
            rest += 1;
        }
        assert_eq!(rest + number.burst, 640, "nothing lost to the denial");

        // Quiet traffic (one request every two seconds) takes one token at a time.
        let quiet = Buckets::shared(db.clone());
        let start = now + Duration::hours(2);
        for n in 0..5 {
            let at = start + Duration::seconds(2 * n);
            assert!(quiet.take("quiet", large, at).expect("store").is_ok());
            assert_eq!(quiet.reserved("quiet", at), 0.0, "no reserve");
        }
    }

    /// A tenant that rotates its keys (a large per-IP burst, a new IP every request)
    /// fills the replica's reserves only to their cap. Another tenant's requests are
    /// still answered and counted exactly meanwhile (they only go without a reserve,
    /// one round trip each), and once the rotating keys are a second old their
    /// entries are swept and the other tenant's busy bucket takes a reserve again.
    fn a_key_rotating_tenant_fills_the_reserves_only_to_their_cap(db: &Db) {
        const CAP: usize = 64;
        let large = BucketLimit {
            per_minute: 60,
            burst: 640,
        };
        let replica = Buckets::shared_with_reserve_cap(db.clone(), CAP);
        let now = ManualClock::new().now() + Duration::hours(5);
        for ip in 0..CAP * 3 {
            let key = format!("attacker/ip/{ip}");
            assert!(replica.take(&key, large, now).expect("store").is_ok());
            assert!(replica.reserve_entries() <= CAP, "bounded");
        }
        assert_eq!(replica.reserve_entries(), CAP);
        // The other tenant, in the same second: every answer right, one burst in all.
        let mut granted = 0;
        while replica.take("victim", large, now).expect("store").is_ok() {
            granted += 1;
        }
        assert_eq!(granted, 640, "the other tenant's limit is exact");
        assert_eq!(
            replica.reserved("victim", now),
            0.0,
            "no room for a reserve"
        );
        // A second later the rotating keys' entries go, and busy traffic of the other
        // tenant takes reserves again (on a backend with a take of its own).
        let later = now + Duration::milliseconds(RESERVE_FOR_MS + 100);
        for _ in 0..8 {
            assert!(replica
                .take("victim-2", large, later)
                .expect("store")
                .is_ok());
        }
        assert!(replica.reserve_entries() < CAP, "swept");
        if db.is_shared() {
            assert!(
                replica.reserved("victim-2", later) >= 1.0,
                "a reserve again"
            );
        }
    }

    #[test]
    fn a_key_rotating_tenant_fills_a_sled_replicas_reserves_only_to_their_cap() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open_sled(dir.path()).expect("open sled");
        a_key_rotating_tenant_fills_the_reserves_only_to_their_cap(&db);
    }

    #[test]
    fn local_buckets_are_taken_all_or_none() {
        buckets_are_taken_all_or_none(&Buckets::default());
    }

    #[test]
    fn shared_buckets_are_one_limit_across_replicas_and_refilled_ones_are_swept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open_sled(dir.path()).expect("open sled");
        shared_buckets_hold_one_limit_and_are_swept(&db);
        buckets_are_taken_all_or_none(&Buckets::shared(db));
    }

    #[test]
    #[ignore = "needs PostgreSQL; .ci/test installs it and runs this test"]
    fn shared_buckets_on_postgres_are_one_statement_each_and_hold_the_same_limit() {
        let url = crate::store::testing::TestCluster::shared().database();
        let db = Db::open_postgres(&url, true).expect("open postgres");
        shared_buckets_hold_one_limit_and_are_swept(&db);
        buckets_are_taken_all_or_none(&Buckets::shared(db.clone()));
        reserves_hold_the_limit(&db);
        a_key_rotating_tenant_fills_the_reserves_only_to_their_cap(&db);
    }
}
