//! `Idempotency-Key` support: a retried request gets the first answer back.
//!
//! The first request with a key claims it with a pending marker (an atomic insert), so
//! two concurrent requests with one key cannot both send. A successful answer replaces
//! the marker and is kept for 24 hours; a failed request releases the key so the client
//! may retry. Reusing a key with a different body is refused. The retention purge
//! sweeps expired answers away (a stored answer names the number), and erasing a
//! verification removes the answers about it.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{key, StoreError, Tree};

use crate::flows::{Engine, FlowError};

/// How long a stored answer is replayed.
const RETENTION_HOURS: i64 = 24;
/// A pending marker older than this is from a request that died; it may be taken over.
const STALE_PENDING_SECS: i64 = 60;

/// A validated idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Accepts 1–255 visible ASCII characters.
    pub fn parse(raw: &str) -> Result<Self, FlowError> {
        if raw.is_empty() || raw.len() > 255 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(FlowError::invalid(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    fingerprint: String,
    created_at: DateTime<Utc>,
    answer: Option<serde_json::Value>,
}

/// Whether to run the request or replay an answer.
pub(crate) enum Claim {
    Fresh,
    Replay(serde_json::Value),
}

pub(crate) fn fingerprint(body: &impl Serialize) -> String {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

impl Engine {
    pub(crate) fn claim_idempotency(
        &self,
        tenant_id: &str,
        idem: &IdempotencyKey,
        fingerprint: &str,
    ) -> Result<Claim, FlowError> {
        let now = self.clock.now();
        let key = key(&[tenant_id, &idem.0]);
        self.db
            .update::<Stored, FlowError, Claim>(Tree::Idempotency, &key, |current| {
                let fresh = Stored {
                    fingerprint: fingerprint.to_owned(),
                    created_at: now,
                    answer: None,
                };
                match current {
                    Some(stored) if stored.created_at + Duration::hours(RETENTION_HOURS) > now => {
                        if stored.fingerprint != fingerprint {
                            return Err(FlowError::Conflict {
                                code: "idempotency_key_reused",
                                message:
                                    "this Idempotency-Key was used with a different request body"
                                        .into(),
                            });
                        }
                        match stored.answer {
                            Some(answer) => Ok((
                                Some(Stored {
                                    answer: Some(answer.clone()),
                                    ..stored
                                }),
                                Claim::Replay(answer),
                            )),
                            None if stored.created_at + Duration::seconds(STALE_PENDING_SECS)
                                > now =>
                            {
                                Err(FlowError::Conflict {
                                    code: "idempotency_key_in_use",
                                    message:
                                        "a request with this Idempotency-Key is still in progress"
                                            .into(),
                                })
                            }
                            None => Ok((Some(fresh), Claim::Fresh)),
                        }
                    }
                    _ => Ok((Some(fresh), Claim::Fresh)),
                }
            })
    }

    pub(crate) fn complete_idempotency(
        &self,
        tenant_id: &str,
        idem: &IdempotencyKey,
        fingerprint: &str,
        answer: &impl Serialize,
    ) -> Result<(), FlowError> {
        let answer =
            serde_json::to_value(answer).map_err(|err| FlowError::Provider(err.to_string()))?;
        let stored = Stored {
            fingerprint: fingerprint.to_owned(),
            created_at: self.clock.now(),
            answer: Some(answer),
        };
        self.db
            .put(Tree::Idempotency, &key(&[tenant_id, &idem.0]), &stored)?;
        Ok(())
    }

    pub(crate) fn release_idempotency(&self, tenant_id: &str, idem: &IdempotencyKey) {
        if let Err(err) = self
            .db
            .remove(Tree::Idempotency, &key(&[tenant_id, &idem.0]))
        {
            tracing::warn!(error = %err, "could not release an idempotency key");
        }
    }

    /// Whether the stored answer `bytes` (under `stored_key`) is past its replay window
    /// at `now`; the purge sweeps those away.
    pub(crate) fn idempotency_expired(
        &self,
        stored_key: &[u8],
        bytes: &[u8],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let stored: Stored = self.db.decode_raw(Tree::Idempotency, stored_key, bytes)?;
        Ok(stored.created_at + Duration::hours(RETENTION_HOURS) <= now)
    }

    /// Removes `tenant_id`'s stored answers about verification `id` (among its newest
    /// 10,000; expired answers are swept by the purge).
    pub(crate) fn forget_answers_about(&self, tenant_id: &str, id: &str) -> Result<(), StoreError> {
        let answers: Vec<(Vec<u8>, Stored)> =
            self.db
                .scan_entries(Tree::Idempotency, &key(&[tenant_id, ""]), 10_000, false)?;
        let quoted = format!("\"{id}\"");
        for (stored_key, stored) in answers {
            if stored
                .answer
                .is_some_and(|answer| answer.to_string().contains(&quoted))
            {
                self.db.remove(Tree::Idempotency, &stored_key)?;
            }
        }
        Ok(())
    }
}
