//! Tenant webhooks: the event catalogue, subscriptions and their validation, Standard
//! Webhooks signing, the retry schedule, and the durable outbox of deliveries.
//!
//! A flow that changes a verification or a case emits an event ([`emit`]): one delivery
//! per matching enabled subscription is written to the store (tree
//! `webhook_deliveries`) with its place in the schedule (`webhook_queue`), before the
//! flow's group commit, so an acknowledged change has its events on disk. The
//! [`worker`] posts due deliveries, signs each attempt, records it on the delivery
//! (the subscription's delivery log), and reschedules a failure on a fixed backoff.
//! Due times come from the engine's clock; the schedule survives a restart.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::Notify;

use crate::store::key;

/// Subscriptions a tenant may have.
pub const MAX_SUBSCRIPTIONS: usize = 20;
/// Longest accepted subscription URL.
pub const MAX_URL_CHARS: usize = 2048;
/// Longest accepted description.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// Attempts of one delivery before it fails for good.
pub const MAX_ATTEMPTS: u32 = 8;
/// Finished deliveries (delivered or failed) kept per subscription; older ones are
/// dropped. Pending ones are always kept.
pub const LOG_LIMIT: usize = 200;
/// Random bytes of a signing secret.
const SECRET_BYTES: usize = 32;
/// The prefix of a signing secret, as Standard Webhooks spells it.
pub const SECRET_PREFIX: &str = "whsec_";

/// The events a subscription can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Sent,
    Delivered,
    Failed,
    Verified,
    Declined,
    InReview,
    Approved,
    Expired,
    CaseCreated,
    CaseUpdated,
    PrefixBlocked,
    SpendThreshold,
    ConversionDropped,
    DeliveryFailuresSpiked,
    /// Sent only by `POST /v1/webhooks/{id}/test`, to that subscription.
    Test,
}

impl EventType {
    /// The events subscriptions choose from (the test event is not among them).
    pub const CATALOGUE: [EventType; 14] = [
        EventType::Sent,
        EventType::Delivered,
        EventType::Failed,
        EventType::Verified,
        EventType::Declined,
        EventType::InReview,
        EventType::Approved,
        EventType::Expired,
        EventType::CaseCreated,
        EventType::CaseUpdated,
        EventType::PrefixBlocked,
        EventType::SpendThreshold,
        EventType::ConversionDropped,
        EventType::DeliveryFailuresSpiked,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Sent => "verification.sent",
            EventType::Delivered => "verification.delivered",
            EventType::Failed => "verification.failed",
            EventType::Verified => "verification.verified",
            EventType::Declined => "verification.declined",
            EventType::InReview => "verification.in_review",
            EventType::Approved => "verification.approved",
            EventType::Expired => "verification.expired",
            EventType::CaseCreated => "case.created",
            EventType::CaseUpdated => "case.updated",
            EventType::PrefixBlocked => "fraud.prefix_blocked",
            EventType::SpendThreshold => "spend.threshold_reached",
            EventType::ConversionDropped => "alert.conversion_dropped",
            EventType::DeliveryFailuresSpiked => "alert.delivery_failures_spiked",
            EventType::Test => "webhook.test",
        }
    }

    /// When the event is sent.
    pub fn description(self) -> &'static str {
        match self {
            EventType::Sent => "a code was sent (also on a resend)",
            EventType::Delivered => "the provider reported a code message delivered",
            EventType::Failed => "the provider reported a code message failed or expired undelivered",
            EventType::Verified => "a correct code was entered and the verification is Approved",
            EventType::Declined => {
                "the verification was declined: before sending, on too many wrong codes, by a rule, or by a reviewer"
            }
            EventType::InReview => "the verification went to In Review",
            EventType::Approved => {
                "the verification was approved without a code check: by a reviewer, or by a lookup that decides on its own"
            }
            EventType::Expired => {
                "a code was entered after it expired, or with none active (the verification stays open for a new code)"
            }
            EventType::CaseCreated => "a rule opened a case",
            EventType::CaseUpdated => "a case was assigned, moved or noted (PATCH /v1/cases/{id}, or resolved by a review decision)",
            EventType::PrefixBlocked => {
                "the SMS-pumping detector blocked a destination prefix (data: the block, with its reason and signals)"
            }
            EventType::SpendThreshold => {
                "a budget of the spend caps reached its alert share (80% by default) or was spent (data: the budget, its cap, what was spent, the period)"
            }
            EventType::ConversionDropped => {
                "an hour's conversion for a country or provider fell well below its level of the week before (data: the group, both rates and volumes)"
            }
            EventType::DeliveryFailuresSpiked => {
                "an hour's delivery failures for a country or provider rose well above their level of the week before (data: the group, both rates and volumes)"
            }
            EventType::Test => "sent by POST /v1/webhooks/{id}/test",
        }
    }

    /// The catalogue event named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::CATALOGUE
            .into_iter()
            .find(|event| event.as_str() == name)
    }
}

/// The name that subscribes to every event.
pub const ALL_EVENTS: &str = "*";

/// The catalogue as `GET /v1/webhooks/events` answers it.
pub fn catalogue() -> serde_json::Value {
    let events: Vec<serde_json::Value> = EventType::CATALOGUE
        .into_iter()
        .map(
            |event| serde_json::json!({"type": event.as_str(), "description": event.description()}),
        )
        .collect();
    serde_json::json!({
        "events": events,
        "wildcard": ALL_EVENTS,
        "test_event": EventType::Test.as_str(),
        "max_subscriptions": MAX_SUBSCRIPTIONS,
        "max_attempts": MAX_ATTEMPTS,
        "retry_schedule_seconds": (1..MAX_ATTEMPTS)
            .filter_map(|attempt| backoff(attempt).map(|delay| delay.num_seconds()))
            .collect::<Vec<_>>(),
    })
}

/// A tenant's subscription. The secret is stored sealed (`crate::secrets`), since every
/// attempt is signed with it; the API shows it only on creation and rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub tenant_id: String,
    pub url: String,
    /// Catalogue names, or `*` for every event.
    pub event_types: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    pub secret: crate::secrets::Sealed,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Subscription {
    /// Whether this subscription asks for `event`.
    pub fn wants(&self, event: EventType) -> bool {
        event == EventType::Test
            || self
                .event_types
                .iter()
                .any(|name| name == ALL_EVENTS || name == event.as_str())
    }
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = WebhookDeliveryStatus)]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// A receiver answered 2xx.
    Delivered,
    /// Every attempt failed, or the subscription was disabled while it waited.
    Failed,
}

impl DeliveryStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// The status named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
        ]
        .into_iter()
        .find(|status| status.as_str() == name)
    }
}

/// One attempt to deliver a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// The receiver's status code, when it answered.
    pub status_code: Option<u16>,
    /// Why the attempt failed without an answer (timeout, connection refused).
    pub error: Option<String>,
    pub duration_ms: u64,
    pub succeeded: bool,
}

/// One message to one subscription: the exact body, where it is, and its attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// `dlv_` and the creation time, so a subscription's deliveries sort by age.
    pub id: String,
    /// The `webhook-id`: the same for every subscription the event went to and for
    /// every attempt.
    pub message_id: String,
    pub tenant_id: String,
    pub subscription_id: String,
    pub event_type: String,
    /// The JSON body, signed and sent as it is on every attempt.
    pub payload: String,
    pub status: DeliveryStatus,
    pub attempts: Vec<Attempt>,
    /// When the next attempt is due; `None` once finished.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Why the delivery failed for good, when it did.
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What the schedule holds for a due time: the delivery to attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRef {
    pub tenant_id: String,
    pub subscription_id: String,
    pub delivery_id: String,
}

/// The in-process side of webhooks: wakes the delivery worker when a delivery is due
/// at once.
#[derive(Debug, Default)]
pub struct Hub {
    pub(crate) wake: Notify,
    /// Held while a subscription is created or deleted, so the per-tenant limit holds.
    pub(crate) changes: tokio::sync::Mutex<()>,
}

impl Hub {
    /// Wakes the worker (an emission or a manual retry queued a delivery).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// A fresh signing secret: `whsec_` and the base64 of 32 random bytes.
pub fn new_secret() -> String {
    let bytes: [u8; SECRET_BYTES] = rand::rng().random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// A fresh id with `prefix` (`whk`, `msg`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A delivery id that sorts by `at`: `dlv_`, the time in milliseconds (13 digits, so
/// until the year 2286), and random hex.
pub fn delivery_id(at: DateTime<Utc>) -> String {
    let millis = at.timestamp_millis().max(0);
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("dlv_{millis:013}{}", &random[..12])
}

/// The smallest delivery id of a delivery made at `at` or later.
pub fn delivery_id_bound(at: DateTime<Utc>) -> String {
    format!("dlv_{:013}", at.timestamp_millis().max(0))
}

/// The `webhook-signature` header value for one attempt, per Standard Webhooks:
/// `v1,` and the base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed by the
/// base64-decoded part of the secret after `whsec_`. `None` for a malformed secret.
pub fn sign(secret: &str, message_id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = STANDARD
        .decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))
        .ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(message_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// How long after failed attempt number `attempt` (1-based) the next one is due, or
/// `None` when that was the last. A fixed schedule: 5 s, 30 s, 2 min, 10 min, 30 min,
/// 1 h, 2 h, then give up (eight attempts over about four hours).
pub fn backoff(attempt: u32) -> Option<Duration> {
    const SCHEDULE: [i64; 7] = [5, 30, 120, 600, 1800, 3600, 7200];
    if attempt >= MAX_ATTEMPTS {
        return None;
    }
    let index = usize::try_from(attempt.checked_sub(1)?).ok()?;
    SCHEDULE.get(index).map(|secs| Duration::seconds(*secs))
}

/// The key of a subscription.
pub fn subscription_key(tenant_id: &str, id: &str) -> Vec<u8> {
    key(&[tenant_id, id])
}

/// The key of a delivery.
pub fn delivery_key(tenant_id: &str, subscription_id: &str, id: &str) -> Vec<u8> {
    key(&[tenant_id, subscription_id, id])
}

/// The prefix of a subscription's deliveries.
pub fn deliveries_prefix(tenant_id: &str, subscription_id: &str) -> Vec<u8> {
    key(&[tenant_id, subscription_id, ""])
}

/// The schedule key of a delivery due at `due`: the time first, so a scan in key
/// order meets the earliest first.
pub fn queue_key(due: DateTime<Utc>, delivery_id: &str) -> Vec<u8> {
    let millis = due.timestamp_millis().max(0);
    format!("{millis:020}/{delivery_id}").into_bytes()
}

/// The due time in milliseconds a schedule key starts with.
pub fn queue_due_millis(key: &[u8]) -> Option<i64> {
    let digits = key.get(..20)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification (and of its reference
    /// libraries), checked with an independent HMAC implementation.
    #[test]
    fn signs_the_specification_example() {
        let signature = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(
            signature.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
    }

    #[test]
    fn a_change_to_any_signed_part_changes_the_signature() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let base = sign(secret, "msg_1", 100, "{}");
        assert_ne!(base, sign(secret, "msg_2", 100, "{}"));
        assert_ne!(base, sign(secret, "msg_1", 101, "{}"));
        assert_ne!(base, sign(secret, "msg_1", 100, "{ }"));
        assert_ne!(base, sign(&new_secret(), "msg_1", 100, "{}"));
        assert_eq!(sign("whsec_not base64!", "msg_1", 100, "{}"), None);
    }

    #[test]
    fn secrets_are_prefixed_base64_of_32_random_bytes() {
        let secret = new_secret();
        let encoded = secret.strip_prefix(SECRET_PREFIX).expect("whsec_ prefix");
        assert_eq!(STANDARD.decode(encoded).map(|b| b.len()), Ok(32));
        assert_ne!(secret, new_secret());
    }

    #[test]
    fn the_backoff_schedule_is_fixed_and_ends_after_the_last_attempt() {
        let delays: Vec<Option<i64>> = (0..=MAX_ATTEMPTS + 1)
            .map(|attempt| backoff(attempt).map(|d| d.num_seconds()))
            .collect();
        assert_eq!(
            delays,
            vec![
                None,
                Some(5),
                Some(30),
                Some(120),
                Some(600),
                Some(1800),
                Some(3600),
                Some(7200),
                None,
                None
            ]
        );
    }

    #[test]
    fn delivery_ids_and_schedule_keys_sort_by_time() {
        let early = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let later = early + Duration::milliseconds(1);
        assert!(delivery_id(early) < delivery_id(later));
        assert!(queue_key(early, "dlv_b") < queue_key(later, "dlv_a"));
        assert_eq!(
            queue_due_millis(&queue_key(later, "dlv_a")),
            Some(later.timestamp_millis())
        );
    }

    #[test]
    fn a_subscription_wants_its_events_all_with_the_wildcard_and_always_the_test() {
        let mut subscription = Subscription {
            id: "whk_1".into(),
            tenant_id: "t".into(),
            url: "http://127.0.0.1/".into(),
            event_types: vec!["verification.sent".into()],
            description: None,
            enabled: true,
            secret: crate::secrets::SecretBox::new(&[0; 32]).seal("c", &new_secret()),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        assert!(subscription.wants(EventType::Sent));
        assert!(!subscription.wants(EventType::Verified));
        assert!(subscription.wants(EventType::Test));
        subscription.event_types = vec![ALL_EVENTS.into()];
        assert!(EventType::CATALOGUE
            .into_iter()
            .all(|event| subscription.wants(event)));
        for event in EventType::CATALOGUE {
            assert_eq!(EventType::from_name(event.as_str()), Some(event));
        }
        assert_eq!(EventType::from_name("webhook.test"), None);
    }
}
