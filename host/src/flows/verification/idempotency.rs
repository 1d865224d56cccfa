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

impl Stored {
    /// The verification the stored answer is about, if it names one.
    fn about(&self) -> Option<&str> {
        self.answer.as_ref()?["verification_id"].as_str()
    }
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
        let stored_key = key(&[tenant_id, &idem.0]);
        // The verification an expired answer this claim replaces was about.
        let mut replaced: Option<String> = None;
        let claim = self.db.update::<Stored, FlowError, Claim>(
            Tree::Idempotency,
            &stored_key,
            |current| {
                replaced = None;
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
                    expired => {
                        replaced = expired.as_ref().and_then(Stored::about).map(str::to_owned);
                        Ok((Some(fresh), Claim::Fresh))
                    }
                }
            },
        )?;
        if let Some(id) = replaced {
            self.db.remove(
                Tree::IdempotencyVerifications,
                &key(&[tenant_id, &id, &idem.0]),
            )?;
        }
        Ok(claim)
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
        // The index entry first: one without its answer is harmless, an answer
        // without its entry would outlive its verification's erasure.
        if let Some(id) = answer["verification_id"].as_str() {
            self.db.put_raw(
                Tree::IdempotencyVerifications,
                &key(&[tenant_id, id, &idem.0]),
                b"",
            )?;
        }
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

    /// Whether the stored answer `bytes` (under `stored_key`, a key of `tenant_id`'s)
    /// is past its replay window at `now`; the purge sweeps those away, and this
    /// removes an expired answer's index entry first.
    pub(crate) fn idempotency_expired(
        &self,
        tenant_id: &str,
        stored_key: &[u8],
        bytes: &[u8],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let stored: Stored = self.db.decode_raw(Tree::Idempotency, stored_key, bytes)?;
        if stored.created_at + Duration::hours(RETENTION_HOURS) > now {
            return Ok(false);
        }
        if let Some(id) = stored.about() {
            let idem =
                String::from_utf8_lossy(stored_key.get(tenant_id.len() + 1..).unwrap_or_default());
            self.db.remove(
                Tree::IdempotencyVerifications,
                &key(&[tenant_id, id, &idem]),
            )?;
        }
        Ok(true)
    }

    /// Removes `tenant_id`'s stored answers about verification `id`, found through
    /// their index (an idempotency key used again since for another verification
    /// keeps its new answer), and their index entries.
    pub(crate) fn forget_answers_about(&self, tenant_id: &str, id: &str) -> Result<(), StoreError> {
        let prefix = key(&[tenant_id, id, ""]);
        for (entry, _) in self
            .db
            .scan_raw(Tree::IdempotencyVerifications, &prefix, usize::MAX)?
        {
            let idem = String::from_utf8_lossy(&entry[prefix.len()..]).into_owned();
            let stored_key = key(&[tenant_id, &idem]);
            let stored: Option<Stored> = self.db.get(Tree::Idempotency, &stored_key)?;
            if stored.is_some_and(|stored| stored.about() == Some(id)) {
                self.db.remove(Tree::Idempotency, &stored_key)?;
            }
            self.db.remove(Tree::IdempotencyVerifications, &entry)?;
        }
        Ok(())
    }
}
