//! The change log: how a change made through one replica reaches the caches of the
//! others when several replicas share a PostgreSQL store.
//!
//! A replica that changes something other replicas cache (an API key revoked, a
//! tenant's settings, blocklist, webhook subscriptions, providers or routing policy,
//! plugins or workflow rules) writes
//! the change to the store after the change itself: it takes the next version from
//! `change_version` in `Meta` (a compare-and-swap, so versions are unique across
//! replicas) and stores the change under that version in the `changes` tree. Every
//! replica polls `change_version` every 250 ms and applies the changes it has not seen,
//! in order, to its own caches. A replica skips the changes it recorded itself: it
//! applied each before recording it (applying one twice would be harmless, but a
//! rebuild of a tenant's plugins is not free).
//!
//! Nothing is lost: the log is durable and read by version, not pushed. A version whose
//! record is not there yet (its writer is between its two writes) holds the reader
//! back until it appears; if it never does (the writer died in between), after a grace
//! period the reader drops every cache entry instead, as it does when it fell further
//! behind than the log keeps. So a change is in force on every replica within about a
//! poll, and never later than the grace period.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::store::{Db, StoreError, Tree};

/// How often a replica looks for changes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long a missing change may hold a reader back before it drops every cache.
const GRACE: Duration = Duration::from_secs(5);
/// Changes the log keeps; a reader further behind drops every cache.
const KEEP: u64 = 10_000;
/// The key in `Meta` of the latest version.
const VERSION_KEY: &[u8] = b"change_version";

/// A change other replicas must apply to their caches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// An API key was revoked (by the hash it is known by).
    Key { hash: String },
    /// A tenant's settings changed.
    Settings { tenant_id: String },
    /// A tenant's providers or routing policy changed.
    Routing { tenant_id: String },
    /// A number was added to or removed from a tenant's blocklist.
    Blocklist { tenant_id: String, phone: String },
    /// A tenant's webhook subscriptions changed.
    Webhooks { tenant_id: String },
    /// A tenant's plugins or workflow rules changed.
    Plugins { tenant_id: String },
    /// A tenant's SMS-pumping blocks changed (opened or lifted).
    FraudBlocks { tenant_id: String },
    /// The operator's SMS-pumping exempt prefixes changed.
    FraudExemptions,
}

/// What a poll found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// These changes, in order.
    Changes(Vec<Change>),
    /// Too much to tell: drop every cache entry.
    Everything,
}

/// One replica's view of the log.
#[derive(Debug)]
pub struct ChangeLog {
    db: Db,
    /// The last version applied.
    seen: AtomicU64,
    /// A version found missing, and since when.
    missing: Mutex<Option<(u64, Instant)>>,
    /// Versions this replica recorded and has not polled past yet.
    own: Mutex<BTreeSet<u64>>,
}

fn version_key(version: u64) -> Vec<u8> {
    format!("{version:020}").into_bytes()
}

impl ChangeLog {
    /// The log of `db`, read from its latest version on (a starting replica loads
    /// everything from the store anyway).
    pub fn open(db: Db) -> Result<Self, StoreError> {
        let latest = db.get::<u64>(Tree::Meta, VERSION_KEY)?.unwrap_or(0);
        Ok(Self {
            db,
            seen: AtomicU64::new(latest),
            missing: Mutex::new(None),
            own: Mutex::new(BTreeSet::new()),
        })
    }

    /// Records `change` under the next version.
    pub fn record(&self, change: &Change) -> Result<u64, StoreError> {
        let version =
            self.db
                .update::<u64, StoreError, u64>(Tree::Meta, VERSION_KEY, |latest| {
                    let next = latest.unwrap_or(0) + 1;
                    Ok((Some(next), next))
                })?;
        self.own.lock().insert(version);
        self.db.put(Tree::Changes, &version_key(version), change)?;
        if version > KEEP {
            self.db
                .remove(Tree::Changes, &version_key(version - KEEP))?;
        }
        Ok(version)
    }

    /// The changes recorded since the last poll, in order.
    pub fn poll(&self) -> Result<Seen, StoreError> {
        let latest = self.db.get::<u64>(Tree::Meta, VERSION_KEY)?.unwrap_or(0);
        let seen = self.seen.load(Ordering::Acquire);
        if latest <= seen {
            return Ok(Seen::Changes(Vec::new()));
        }
        if latest - seen > KEEP / 2 {
            self.seen.store(latest, Ordering::Release);
            self.own.lock().clear();
            return Ok(Seen::Everything);
        }
        let mut changes = Vec::new();
        let mut applied = seen;
        let mut everything = false;
        for version in seen + 1..=latest {
            if self.own.lock().remove(&version) {
                applied = version;
                continue;
            }
            if let Some(change) = self
                .db
                .get::<Change>(Tree::Changes, &version_key(version))?
            {
                changes.push(change);
                applied = version;
                continue;
            }
            let mut missing = self.missing.lock();
            match *missing {
                Some((at, since)) if at == version && since.elapsed() >= GRACE => {
                    // Its writer died between its two writes: what it changed is
                    // unknown.
                    *missing = None;
                    everything = true;
                    applied = version;
                }
                Some((at, _)) if at == version => break,
                _ => {
                    *missing = Some((version, Instant::now()));
                    break;
                }
            }
        }
        self.seen.store(applied, Ordering::Release);
        Ok(if everything {
            Seen::Everything
        } else {
            Seen::Changes(changes)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open_sled(dir.path()).expect("open sled");
        (dir, db)
    }

    #[test]
    fn a_reader_sees_each_change_once_in_order() {
        let (_dir, db) = db();
        let writer = ChangeLog::open(db.clone()).expect("writer");
        writer
            .record(&Change::Settings {
                tenant_id: "before".into(),
            })
            .expect("record");
        let reader = ChangeLog::open(db).expect("reader");
        assert_eq!(reader.poll().expect("poll"), Seen::Changes(Vec::new()));
        let changes = [
            Change::Key { hash: "h".into() },
            Change::Plugins {
                tenant_id: "t".into(),
            },
        ];
        for change in &changes {
            writer.record(change).expect("record");
        }
        assert_eq!(
            reader.poll().expect("poll"),
            Seen::Changes(changes.to_vec())
        );
        assert_eq!(reader.poll().expect("poll"), Seen::Changes(Vec::new()));
    }

    #[test]
    fn a_replica_skips_the_changes_it_recorded_itself() {
        let (_dir, db) = db();
        let one = ChangeLog::open(db.clone()).expect("one");
        let other = ChangeLog::open(db).expect("other");
        let mine = Change::Settings {
            tenant_id: "mine".into(),
        };
        let theirs = Change::Settings {
            tenant_id: "theirs".into(),
        };
        one.record(&mine).expect("record");
        other.record(&theirs).expect("record");
        one.record(&mine).expect("record");
        assert_eq!(
            one.poll().expect("poll"),
            Seen::Changes(vec![theirs.clone()])
        );
        assert_eq!(
            other.poll().expect("poll"),
            Seen::Changes(vec![mine.clone(), mine])
        );
        assert!(one.own.lock().is_empty(), "nothing left to skip");
    }

    #[test]
    fn a_missing_change_holds_the_reader_back_then_drops_everything() {
        let (_dir, db) = db();
        let reader = ChangeLog::open(db.clone()).expect("reader");
        // A writer took version 1 and has not written it yet; version 2 is there.
        db.put(Tree::Meta, VERSION_KEY, &2u64).expect("version");
        let later = Change::Routing {
            tenant_id: "t".into(),
        };
        db.put(Tree::Changes, &version_key(2), &later)
            .expect("change 2");
        assert_eq!(reader.poll().expect("poll"), Seen::Changes(Vec::new()));
        // The first change appears: both are applied, in order.
        let first = Change::Settings {
            tenant_id: "t".into(),
        };
        db.put(Tree::Changes, &version_key(1), &first)
            .expect("change 1");
        assert_eq!(
            reader.poll().expect("poll"),
            Seen::Changes(vec![first, later])
        );
        // A version that never appears: after the grace period, everything.
        db.put(Tree::Meta, VERSION_KEY, &3u64).expect("version");
        assert_eq!(reader.poll().expect("poll"), Seen::Changes(Vec::new()));
        *reader.missing.lock() = Some((3, Instant::now() - GRACE));
        assert_eq!(reader.poll().expect("poll"), Seen::Everything);
        assert_eq!(reader.poll().expect("poll"), Seen::Changes(Vec::new()));
    }

    #[test]
    fn a_reader_too_far_behind_drops_everything() {
        let (_dir, db) = db();
        let reader = ChangeLog::open(db.clone()).expect("reader");
        db.put(Tree::Meta, VERSION_KEY, &KEEP).expect("version");
        assert_eq!(reader.poll().expect("poll"), Seen::Everything);
    }
}
