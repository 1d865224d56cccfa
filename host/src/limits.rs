//! Token-bucket abuse limits, keyed by scope (tenant, number, client IP).
//!
//! Buckets live in memory: they protect the host and the tenant's budget from bursts,
//! and losing them on restart only grants one fresh burst. Time comes from the host's
//! clock so tests can refill buckets deterministically.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use crate::settings::BucketLimit;

/// Beyond this many buckets, idle full ones are dropped.
const SWEEP_AT: usize = 200_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: DateTime<Utc>,
}

/// A set of token buckets.
#[derive(Debug, Default)]
pub struct Buckets {
    shards: [Mutex<HashMap<String, Bucket>>; 16],
}

/// A denied request: seconds until a token is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after_secs: u64,
}

impl Buckets {
    /// Takes one token from the bucket `key`, created full under `limit`.
    pub fn take(&self, key: &str, limit: BucketLimit, now: DateTime<Utc>) -> Result<(), Limited> {
        let shard = &self.shards[shard_of(key)];
        let mut map = shard.lock();
        if map.len() > SWEEP_AT / 16 {
            map.retain(|_, bucket| refill(*bucket, limit, now).tokens < f64::from(limit.burst));
        }
        let burst = f64::from(limit.burst);
        let bucket = map.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        *bucket = refill(*bucket, limit, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let per_sec = f64::from(limit.per_minute) / 60.0;
            let wait = ((1.0 - bucket.tokens) / per_sec).ceil();
            Err(Limited {
                retry_after_secs: (wait as u64).max(1),
            })
        }
    }
}

fn refill(bucket: Bucket, limit: BucketLimit, now: DateTime<Utc>) -> Bucket {
    let elapsed = (now - bucket.at).num_milliseconds().max(0) as f64 / 1000.0;
    let per_sec = f64::from(limit.per_minute) / 60.0;
    Bucket {
        tokens: (bucket.tokens + elapsed * per_sec).min(f64::from(limit.burst)),
        at: now.max(bucket.at),
    }
}

fn shard_of(key: &str) -> usize {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % 16) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    const LIMIT: BucketLimit = BucketLimit {
        per_minute: 60,
        burst: 3,
    };

    #[test]
    fn burst_then_deny_then_refill() {
        let buckets = Buckets::default();
        let now = Utc::now();
        for _ in 0..3 {
            assert!(buckets.take("k", LIMIT, now).is_ok());
        }
        assert_eq!(
            buckets.take("k", LIMIT, now),
            Err(Limited {
                retry_after_secs: 1
            })
        );
        assert!(buckets.take("k", LIMIT, now + Duration::seconds(1)).is_ok());
    }

    #[test]
    fn keys_do_not_share_tokens() {
        let buckets = Buckets::default();
        let now = Utc::now();
        for _ in 0..3 {
            assert!(buckets.take("a", LIMIT, now).is_ok());
        }
        assert!(buckets.take("b", LIMIT, now).is_ok());
    }

    #[test]
    fn retry_after_reflects_the_rate() {
        let buckets = Buckets::default();
        let now = Utc::now();
        let slow = BucketLimit {
            per_minute: 1,
            burst: 1,
        };
        assert!(buckets.take("s", slow, now).is_ok());
        assert_eq!(
            buckets.take("s", slow, now),
            Err(Limited {
                retry_after_secs: 60
            })
        );
    }
}
