//! Retention and erasure: the purge that removes what a tenant's `retention` settings
//! no longer keep (verifications with everything derived from them, message records
//! and dev-outbox copies, audit trails, webhook deliveries, idempotent answers past
//! their 24 hours), run by every replica once
//! a minute; and `DELETE /v1/verifications/{id}`, which erases one verification's
//! personal data at once. Analytics' tallies hold no personal data and stay.
//!
//! The trees involved are keyed by time within a tenant (verification and message keys
//! start with a UUIDv7 id, outbox keys with a reversed time, delivery ids with their
//! time), so each pass reads only what expired since the last one. A pass does a
//! bounded amount of work per tenant and the next continues; replicas of a shared
//! store may purge the same records at once, which is harmless (removals are
//! idempotent).

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::flows::analytics::id_bound;
use crate::flows::messaging::routed::MessageRecord;
use crate::flows::{Caller, Engine, FlowError};
use crate::model::{ApplicantNumber, Case, Verification, VerifiedOwner};
use crate::sending::{outbox_bound, outbox_number_key, DevOutbox, OutboxMessage};
use crate::settings::Retention;
use crate::store::{key, StoreError, Tree};
use crate::webhooks::{Delivery, Subscription};

/// How often a replica purges.
const PURGE_INTERVAL: StdDuration = StdDuration::from_secs(60);
/// Records one pass removes or rewrites per tenant and kind, at most.
const PASS_BUDGET: usize = 5_000;
/// Records read per batch.
const BATCH: usize = 500;
/// What an erased case keeps of its number.
const ERASED: &str = "erased";
/// Erasures a tenant may ask for: each reads its webhooks' deliveries, so a loop of
/// them is bounded.
/// (Bulk removal is the purge's work, under the tenant's retention settings.)
pub const ERASE_LIMIT: crate::settings::BucketLimit = crate::settings::BucketLimit {
    per_minute: 120,
    burst: 120,
};

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Purged {
    pub verifications: u64,
    pub messages: u64,
    pub outbox_messages: u64,
    pub trails: u64,
    pub webhook_deliveries: u64,
    /// Stored idempotent answers past their 24 hours.
    pub idempotent_answers: u64,
    /// Adapters' provider-message index entries of purged verifications.
    pub message_index_entries: u64,
}

impl Purged {
    fn add(&mut self, other: Purged) {
        self.verifications += other.verifications;
        self.messages += other.messages;
        self.outbox_messages += other.outbox_messages;
        self.trails += other.trails;
        self.webhook_deliveries += other.webhook_deliveries;
        self.idempotent_answers += other.idempotent_answers;
        self.message_index_entries += other.message_index_entries;
    }
}

/// The moment `days` before `now`.
fn cutoff(now: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    now - Duration::days(i64::from(days))
}

impl Engine {
    /// Erases verification `id` of the caller's tenant: the verification, its index
    /// entries, message records, dev-outbox copies, the webhook deliveries about it
    /// and its number's guess budget are removed; its cases keep their history but
    /// no longer name the number or the applicant. Another tenant's id is 404.
    pub async fn erase_verification(&self, caller: &Caller, id: &str) -> Result<(), FlowError> {
        let tenant_id = caller.tenant_id.as_str();
        self.limits
            .take(&format!("erase/{tenant_id}"), ERASE_LIMIT, self.clock.now())?
            .map_err(|limited| FlowError::RateLimited {
                code: "rate_limited",
                message: format!(
                    "too many erasures for this tenant (at most {} a minute); retry later",
                    ERASE_LIMIT.per_minute
                ),
                retry_after_secs: limited.retry_after_secs,
            })?;
        let verification: Verification = self
            .db
            .get(
                Tree::Verifications,
                &Engine::verification_key(tenant_id, id),
            )?
            .ok_or(FlowError::NotFound("verification"))?;
        self.remove_verification(&verification)?;
        self.db.remove(
            Tree::GuessBudgets,
            &self.db.number_key(tenant_id, &verification.phone.e164)?,
        )?;
        // Copies of the number outside the verification's own records.
        self.forget_answers_about(tenant_id, &verification.id)?;
        DevOutbox::new(self.db.clone()).remove_where(
            tenant_id,
            &verification.phone.e164,
            |message| message.verification_id == verification.id,
        )?;
        for subscription in self.subscriptions_of(tenant_id)? {
            let prefix = crate::webhooks::deliveries_prefix(tenant_id, &subscription.id);
            let mut from = prefix.clone();
            let end = past(&prefix);
            loop {
                let page: Vec<(Vec<u8>, Delivery)> =
                    self.db
                        .scan_range(Tree::WebhookDeliveries, &from, &end, BATCH, false)?;
                let Some((last, _)) = page.last() else { break };
                from = last.clone();
                from.push(0);
                let full = page.len() == BATCH;
                for (stored, delivery) in page {
                    if about(&delivery, &verification.id) {
                        self.db.remove(Tree::WebhookDeliveries, &stored)?;
                    }
                }
                if !full {
                    break;
                }
            }
        }
        self.db.sync().await?;
        Ok(())
    }

    /// Removes `verification` and what is derived from it: its message records (and
    /// their providers' index), the number-and-applicant index entry and the first
    /// verifier's record when they point at it; its cases stop naming the number.
    fn remove_verification(&self, verification: &Verification) -> Result<(), StoreError> {
        let tenant_id = verification.tenant_id.as_str();
        let messages: Vec<(Vec<u8>, MessageRecord)> = self.db.scan_entries(
            Tree::Messages,
            &key(&[tenant_id, &verification.id, ""]),
            1_000,
            false,
        )?;
        for (stored, message) in messages {
            self.remove_message(&stored, &message)?;
        }
        let index = self.db.applicant_key(
            tenant_id,
            &verification.phone.e164,
            verification.applicant_id.as_deref().unwrap_or(""),
        )?;
        let entry: Option<ApplicantNumber> = self.db.get(Tree::VerificationIndex, &index)?;
        if entry.is_some_and(|entry| entry.verification_id.as_deref() == Some(&verification.id)) {
            self.db.remove(Tree::VerificationIndex, &index)?;
        }
        let owner_key = self.db.number_key(tenant_id, &verification.phone.e164)?;
        let owner: Option<VerifiedOwner> = self.db.get(Tree::VerifiedNumbers, &owner_key)?;
        if owner.is_some_and(|owner| owner.verification_id == verification.id) {
            self.db.remove(Tree::VerifiedNumbers, &owner_key)?;
        }
        for case in &verification.cases {
            self.db.update::<Case, StoreError, ()>(
                Tree::Cases,
                &key(&[tenant_id, &case.case_id]),
                |current| {
                    let next = current.map(|mut case| {
                        case.phone = ERASED.to_owned();
                        case.applicant_id = None;
                        case
                    });
                    Ok((next, ()))
                },
            )?;
        }
        self.db.remove(
            Tree::Verifications,
            &Engine::verification_key(tenant_id, &verification.id),
        )?;
        Ok(())
    }

    /// Removes a message record and its providers' index entries.
    fn remove_message(&self, stored: &[u8], message: &MessageRecord) -> Result<(), StoreError> {
        if let Some(provider_message_id) = &message.provider_message_id {
            self.db.remove(
                Tree::ProviderMessages,
                &key(&[&message.provider_id, provider_message_id]),
            )?;
        }
        self.db.remove(
            Tree::ProviderMessages,
            &key(&[&message.provider_id, &message.id]),
        )?;
        self.db.remove(Tree::Messages, stored)?;
        Ok(())
    }

    fn subscriptions_of(&self, tenant_id: &str) -> Result<Vec<Subscription>, StoreError> {
        self.db
            .scan(Tree::Webhooks, &key(&[tenant_id, ""]), 1_000, false)
    }

    /// One purge pass over every tenant.
    pub fn purge_expired(&self) -> Result<Purged, FlowError> {
        let now = self.clock.now();
        let mut total = Purged::default();
        for tenant in self.list_tenants()? {
            let settings = self.settings(&tenant.id)?;
            total.add(self.purge_tenant(&tenant.id, &settings.retention, now)?);
        }
        Ok(total)
    }

    /// One purge pass over `tenant_id`'s records under `retention`.
    fn purge_tenant(
        &self,
        tenant_id: &str,
        retention: &Retention,
        now: DateTime<Utc>,
    ) -> Result<Purged, StoreError> {
        let mut purged = Purged::default();
        let start = key(&[tenant_id, ""]);

        // Verifications begun before the cutoff, with everything derived from them.
        let end = id_bound(tenant_id, cutoff(now, retention.verifications_days));
        while purged.verifications < PASS_BUDGET as u64 {
            let page: Vec<(Vec<u8>, Verification)> =
                self.db
                    .scan_range(Tree::Verifications, &start, &end, BATCH, false)?;
            if page.is_empty() {
                break;
            }
            for (_, verification) in page {
                self.remove_verification(&verification)?;
                purged.verifications += 1;
            }
        }

        // Message records of verifications begun before the messages' cutoff.
        let end = id_bound(tenant_id, cutoff(now, retention.messages_days));
        while purged.messages < PASS_BUDGET as u64 {
            let page: Vec<(Vec<u8>, MessageRecord)> =
                self.db
                    .scan_range(Tree::Messages, &start, &end, BATCH, false)?;
            if page.is_empty() {
                break;
            }
            for (stored, message) in page {
                self.remove_message(&stored, &message)?;
                purged.messages += 1;
            }
        }
        // Dev-outbox copies: their keys run newest first, so the expired ones are the
        // tenant's last keys.
        let from = outbox_bound(tenant_id, cutoff(now, retention.messages_days));
        let end = past(&start);
        while purged.outbox_messages < PASS_BUDGET as u64 {
            let page: Vec<(Vec<u8>, OutboxMessage)> =
                self.db
                    .scan_range(Tree::Outbox, &from, &end, BATCH, false)?;
            if page.is_empty() {
                break;
            }
            for (stored, message) in page {
                self.db.remove(
                    Tree::OutboxNumbers,
                    &outbox_number_key(&self.db, tenant_id, &message.phone, &stored)?,
                )?;
                self.db.remove(Tree::Outbox, &stored)?;
                purged.outbox_messages += 1;
            }
        }

        // Audit trails of verifications begun since the last pass's cutoff.
        let mark = key(&["retention_trails", tenant_id]);
        let since: Option<i64> = self.db.get(Tree::Meta, &mark)?;
        let until = cutoff(now, retention.events_days);
        let mut from = match since {
            Some(ms) => id_bound(
                tenant_id,
                DateTime::from_timestamp_millis(ms).unwrap_or(until),
            ),
            None => start.clone(),
        };
        let end = id_bound(tenant_id, until);
        let mut done = true;
        loop {
            if purged.trails >= PASS_BUDGET as u64 {
                done = false;
                break;
            }
            let page: Vec<(Vec<u8>, Verification)> =
                self.db
                    .scan_range(Tree::Verifications, &from, &end, BATCH, false)?;
            let Some((last, _)) = page.last() else { break };
            from = last.clone();
            from.push(0);
            for (stored, verification) in page {
                if verification.events.is_empty() {
                    continue;
                }
                self.db.update::<Verification, StoreError, ()>(
                    Tree::Verifications,
                    &stored,
                    |current| {
                        let next = current.map(|mut verification| {
                            verification.events.clear();
                            verification
                        });
                        Ok((next, ()))
                    },
                )?;
                purged.trails += 1;
            }
        }
        if done && since.is_none_or(|ms| ms < until.timestamp_millis()) {
            self.db.put(Tree::Meta, &mark, &until.timestamp_millis())?;
        }

        // Idempotent answers past their replay window, and adapters' message index
        // entries of verifications the tenant no longer keeps: both keyed by what the
        // client or the provider named, not by time, so each is swept in stretches.
        purged.idempotent_answers = self.sweep(Tree::Idempotency, tenant_id, |stored, bytes| {
            self.idempotency_expired(tenant_id, stored, bytes, now)
        })?;
        let kept_from = cutoff(now, retention.verifications_days);
        purged.message_index_entries =
            self.sweep(Tree::MessageIndex, tenant_id, |stored, bytes| {
                let id: String = self.db.decode_raw(Tree::MessageIndex, stored, bytes)?;
                Ok(begun_at(&id).is_none_or(|at| at < kept_from))
            })?;

        // Webhook deliveries made before their cutoff.
        let bound =
            crate::webhooks::delivery_id_bound(cutoff(now, retention.webhook_deliveries_days));
        for subscription in self.subscriptions_of(tenant_id)? {
            let prefix = crate::webhooks::deliveries_prefix(tenant_id, &subscription.id);
            let end = key(&[tenant_id, &subscription.id, &bound]);
            while purged.webhook_deliveries < PASS_BUDGET as u64 {
                let page =
                    self.db
                        .scan_range_raw(Tree::WebhookDeliveries, &prefix, &end, BATCH, false)?;
                if page.is_empty() {
                    break;
                }
                for (stored, _) in page {
                    self.db.remove(Tree::WebhookDeliveries, &stored)?;
                    purged.webhook_deliveries += 1;
                }
            }
        }
        Ok(purged)
    }

    /// Removes the records of `tenant_id` in `tree` that `expired` says are, reading
    /// up to [`PASS_BUDGET`] of them from where the last sweep of the tree stopped (the
    /// sweep wraps around at the tenant's last key). Returns how many it removed.
    fn sweep(
        &self,
        tree: Tree,
        tenant_id: &str,
        mut expired: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<u64, StoreError> {
        let mark = key(&["sweep", tree.name(), tenant_id]);
        let prefix = key(&[tenant_id, ""]);
        let end = crate::store::successor(&prefix).unwrap_or_default();
        let mut from = match self.db.get::<String>(Tree::Meta, &mark)? {
            Some(cursor) => key(&[tenant_id, &cursor]),
            None => prefix.clone(),
        };
        let (mut removed, mut read) = (0, 0);
        loop {
            let page = self.db.scan_range_raw(tree, &from, &end, BATCH, false)?;
            let Some((last, _)) = page.last() else {
                // The tenant's last key: the next sweep starts again.
                self.db.remove(Tree::Meta, &mark)?;
                return Ok(removed);
            };
            from = last.clone();
            from.push(0);
            read += page.len();
            for (stored, bytes) in page {
                if expired(&stored, &bytes)? {
                    self.db.remove(tree, &stored)?;
                    removed += 1;
                }
            }
            if read >= PASS_BUDGET {
                let cursor = String::from_utf8_lossy(&from[prefix.len()..]).into_owned();
                self.db.put(Tree::Meta, &mark, &cursor)?;
                return Ok(removed);
            }
        }
    }

    /// Purges once a minute until `stop`.
    pub async fn run_retention(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(PURGE_INTERVAL) => {}
            }
            if *stop.borrow() {
                return;
            }
            let engine = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || engine.purge_expired()).await {
                Ok(Ok(purged)) if purged != Purged::default() => {
                    tracing::info!(?purged, "retention: expired records removed");
                }
                Ok(Ok(_)) => {}
                Ok(Err(err)) => tracing::error!("retention purge failed: {err}"),
                Err(err) => tracing::error!("retention purge failed: {err}"),
            }
            if let Err(err) = self.db.sync().await {
                tracing::error!("retention purge not committed: {err}");
            }
        }
    }
}

/// Whether `delivery` reports on verification `id`.
fn about(delivery: &Delivery, id: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(&delivery.payload)
        .is_ok_and(|payload| payload["data"]["verification_id"] == id)
}

/// The end of the range of keys starting with `prefix` (tenant prefixes end in `/`,
/// so there always is one).
fn past(prefix: &[u8]) -> Vec<u8> {
    crate::store::successor(prefix).unwrap_or_else(|| vec![u8::MAX; prefix.len() + 1])
}

/// When the verification `id` began: its UUIDv7 carries the time (`None` for an id
/// that is not one).
fn begun_at(id: &str) -> Option<DateTime<Utc>> {
    let (seconds, nanos) = uuid::Uuid::parse_str(id).ok()?.get_timestamp()?.to_unix();
    DateTime::from_timestamp(i64::try_from(seconds).ok()?, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verification_id_tells_when_it_began() {
        let at = DateTime::parse_from_rfc3339("2026-03-04T05:06:07.089Z")
            .expect("a time")
            .with_timezone(&Utc);
        let id = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            u64::try_from(at.timestamp()).expect("after 1970"),
            at.timestamp_subsec_nanos(),
        ))
        .to_string();
        assert_eq!(begun_at(&id), Some(at));
        assert_eq!(begun_at("not-an-id"), None);
        assert_eq!(begun_at(&uuid::Uuid::new_v4().to_string()), None);
    }
}
