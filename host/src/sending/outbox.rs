//! The dev outbox: a sender that keeps each message in the store instead of sending it,
//! so a newcomer can read the code back through `GET /v1/dev/outbox`.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Dispatch, OutboundMessage, SendError, SendFuture, Sender};
use crate::store::{key, Db, Tree};

/// A message kept by the dev outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutboxMessage {
    pub id: String,
    pub verification_id: String,
    pub phone: String,
    pub channel: String,
    pub body: String,
    pub code: String,
    /// `GSM-7` or `UCS-2`: how an SMS carries the body.
    #[serde(default)]
    pub encoding: Option<crate::messages::Encoding>,
    /// The SMS segments the body takes.
    #[serde(default)]
    pub segments: Option<u32>,
    pub created_at: DateTime<Utc>,
}

/// The dev outbox provider.
#[derive(Debug, Clone)]
pub struct DevOutbox {
    db: Db,
}

impl DevOutbox {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The tenant's messages, newest first, optionally for one number (`phone` in
    /// E.164): a number's messages are read through its index, so the answer costs
    /// what that number's messages cost, however many the tenant has.
    pub fn list(
        &self,
        tenant_id: &str,
        phone: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OutboxMessage>, crate::store::StoreError> {
        let Some(phone) = phone else {
            return self
                .db
                .scan(Tree::Outbox, &key(&[tenant_id, ""]), limit, false);
        };
        let mut prefix = self.db.number_key(tenant_id, phone)?;
        prefix.push(b'/');
        let mut messages = Vec::new();
        for (entry, _) in self.db.scan_raw(Tree::OutboxNumbers, &prefix, limit)? {
            let stored = key(&[tenant_id, &String::from_utf8_lossy(&entry[prefix.len()..])]);
            // An entry whose message is gone (purged, or a send whose write failed
            // after its entry's) is skipped.
            if let Some(message) = self.db.get::<OutboxMessage>(Tree::Outbox, &stored)? {
                messages.push(message);
            }
        }
        Ok(messages)
    }

    /// Removes `tenant_id`'s messages to `phone` that `remove` picks, and their index
    /// entries (and entries whose message is gone); how many messages it removed.
    pub fn remove_where(
        &self,
        tenant_id: &str,
        phone: &str,
        mut remove: impl FnMut(&OutboxMessage) -> bool,
    ) -> Result<u64, crate::store::StoreError> {
        let mut prefix = self.db.number_key(tenant_id, phone)?;
        prefix.push(b'/');
        let mut removed = 0;
        for (entry, _) in self.db.scan_raw(Tree::OutboxNumbers, &prefix, usize::MAX)? {
            let stored = key(&[tenant_id, &String::from_utf8_lossy(&entry[prefix.len()..])]);
            match self.db.get::<OutboxMessage>(Tree::Outbox, &stored)? {
                Some(message) if remove(&message) => {
                    self.db.remove(Tree::Outbox, &stored)?;
                    self.db.remove(Tree::OutboxNumbers, &entry)?;
                    removed += 1;
                }
                Some(_) => {}
                None => {
                    self.db.remove(Tree::OutboxNumbers, &entry)?;
                }
            }
        }
        Ok(removed)
    }
}

/// The index entry of the outbox message stored under `stored` (a key of `tenant_id`'s)
/// to the number `phone`.
pub fn outbox_number_key(
    db: &Db,
    tenant_id: &str,
    phone: &str,
    stored: &[u8],
) -> Result<Vec<u8>, crate::store::StoreError> {
    let mut entry = db.number_key(tenant_id, phone)?;
    entry.push(b'/');
    entry.extend_from_slice(stored.get(tenant_id.len() + 1..).unwrap_or_default());
    Ok(entry)
}

/// Keys sort newest first: the time is stored as the distance to the end of time, then a
/// falling sequence, so messages with the same timestamp also list the latest first.
/// The outbox key from which `tenant_id`'s messages are older than `at` (keys run
/// newest first, so the older ones are the keys after it).
pub fn outbox_bound(tenant_id: &str, at: DateTime<Utc>) -> Vec<u8> {
    let nanos = at.timestamp_nanos_opt().unwrap_or_default();
    key(&[tenant_id, &format!("{:020}", i64::MAX - nanos)])
}

fn newest_first(at: DateTime<Utc>) -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let nanos = at.timestamp_nanos_opt().unwrap_or_default();
    let seq = u64::MAX - SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!("{:020}/{seq:020}", i64::MAX - nanos)
}

impl Sender for DevOutbox {
    fn name(&self) -> &str {
        "dev-outbox"
    }

    fn send(&self, message: OutboundMessage) -> SendFuture<'_> {
        Box::pin(async move {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let (encoding, segments) = crate::messages::sms_encoding(&message.body);
            let record = OutboxMessage {
                id: id.clone(),
                verification_id: message.verification_id,
                phone: message.phone,
                channel: message.channel.as_str().to_owned(),
                encoding: Some(encoding),
                segments: Some(segments),
                body: message.body,
                code: message.code,
                created_at: message.created_at,
            };
            let key = key(&[&message.tenant_id, &newest_first(message.created_at), &id]);
            let failed = |err: crate::store::StoreError| SendError {
                provider: "dev-outbox".into(),
                message: err.to_string(),
                store: Some(err),
            };
            // The index entry first: one without its message is skipped and cleaned
            // up, while a message without its entry could not be found by number.
            let entry = outbox_number_key(&self.db, &message.tenant_id, &record.phone, &key)
                .map_err(failed)?;
            self.db
                .put_raw(Tree::OutboxNumbers, &entry, b"")
                .map_err(failed)?;
            self.db.put(Tree::Outbox, &key, &record).map_err(failed)?;
            Ok(Dispatch {
                provider: "dev-outbox".into(),
                message_id: id,
                routed: false,
                cost: 0.0,
            })
        })
    }
}
