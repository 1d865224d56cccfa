//! The dev outbox: a sender that keeps each message in the store instead of sending it,
//! so a newcomer can read the code back through `GET /v1/dev/outbox`.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Dispatch, OutboundMessage, SendError, SendFuture, Sender};
use crate::store::{key, Db, Tree};

/// A message kept by the dev outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

    /// The tenant's messages, newest first, optionally for one number.
    pub fn list(
        &self,
        tenant_id: &str,
        phone: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OutboxMessage>, crate::store::StoreError> {
        let prefix = key(&[tenant_id, ""]);
        let scan_limit = if phone.is_some() { 10_000 } else { limit };
        let messages: Vec<OutboxMessage> =
            self.db.scan(Tree::Outbox, &prefix, scan_limit, false)?;
        Ok(messages
            .into_iter()
            .filter(|message| phone.is_none_or(|p| message.phone == p))
            .take(limit)
            .collect())
    }
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
            self.db
                .put(Tree::Outbox, &key, &record)
                .map_err(|err| SendError {
                    provider: "dev-outbox".into(),
                    message: err.to_string(),
                    store: Some(err),
                })?;
            Ok(Dispatch {
                provider: "dev-outbox".into(),
                message_id: id,
                routed: false,
                cost: 0.0,
            })
        })
    }
}
