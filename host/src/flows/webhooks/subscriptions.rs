//! Webhook subscriptions as a product: create (the secret shown once), list, get,
//! change, delete, rotate the secret, send a test event, and read or retry the
//! delivery log. Every key is built from the caller's tenant id, so another tenant's
//! subscription is a 404.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value as Json;

use crate::flows::{Engine, FlowError};
use crate::secrets::webhook_context;
use crate::settings::BucketLimit;
use crate::store::Tree;

use crate::flows::webhooks::worker::parked_prefix;
use crate::webhooks::{
    deliveries_prefix, delivery_key, new_id, new_secret, queue_key, subscription_key, Delivery,
    DeliveryStatus, EventType, QueueRef, Subscription, ALL_EVENTS, LOG_LIMIT,
    MAX_DESCRIPTION_CHARS, MAX_SUBSCRIPTIONS, MAX_URL_CHARS,
};

/// Test events a tenant may send, over all its subscriptions: a burst of ten, then
/// one every six seconds.
pub const TEST_EVENT_LIMIT: BucketLimit = BucketLimit {
    per_minute: 10,
    burst: 10,
};

/// Body of `POST /v1/webhooks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    pub url: String,
    pub event_types: Vec<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Body of `PATCH /v1/webhooks/{id}`: at least one field.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchSubscription {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// A text replaces the description; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
}

/// A subscription as the API shows it: without its secret, unless just made.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SubscriptionView {
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Only on creation and rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl SubscriptionView {
    /// The view of `subscription`, with `secret` (its clear text) when just made.
    fn of(subscription: Subscription, secret: Option<String>) -> Self {
        Self {
            id: subscription.id,
            url: subscription.url,
            event_types: subscription.event_types,
            description: subscription.description,
            enabled: subscription.enabled,
            created_at: subscription.created_at,
            updated_at: subscription.updated_at,
            secret,
        }
    }
}

/// A delivery as the API shows it: the payload as JSON, no tenant.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub id: String,
    pub message_id: String,
    pub subscription_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub attempts: Vec<crate::webhooks::Attempt>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub payload: Json,
}

impl From<Delivery> for DeliveryView {
    fn from(delivery: Delivery) -> Self {
        Self {
            payload: serde_json::from_str(&delivery.payload).unwrap_or(Json::Null),
            id: delivery.id,
            message_id: delivery.message_id,
            subscription_id: delivery.subscription_id,
            event_type: delivery.event_type,
            status: delivery.status,
            attempts: delivery.attempts,
            next_attempt_at: delivery.next_attempt_at,
            last_error: delivery.last_error,
            created_at: delivery.created_at,
            updated_at: delivery.updated_at,
        }
    }
}

/// Query of `GET /v1/webhooks/{id}/deliveries`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    pub status: Option<String>,
    pub limit: Option<usize>,
}

/// Deliveries a list returns when the query names no `limit`.
const DEFAULT_LIST_LIMIT: usize = 50;

/// Checks a subscription URL: absolute `http` or `https` with a host, at most 2048
/// characters.
fn checked_url(url: &str) -> Result<String, FlowError> {
    let url = url.trim();
    if url.is_empty() {
        return Err(FlowError::invalid("url", "must not be empty"));
    }
    if url.chars().count() > MAX_URL_CHARS {
        return Err(FlowError::invalid(
            "url",
            format!("at most {MAX_URL_CHARS} characters"),
        ));
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|err| FlowError::invalid("url", format!("not an absolute URL: {err}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(FlowError::invalid(
            "url",
            format!("the scheme must be http or https, not {}", parsed.scheme()),
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(FlowError::invalid("url", "must name a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(FlowError::invalid(
            "url",
            "must not carry credentials; authenticate the signature instead",
        ));
    }
    Ok(url.to_owned())
}

/// Checks event types against the catalogue: at least one, no repeats; `*` alone.
fn checked_event_types(names: &[String]) -> Result<Vec<String>, FlowError> {
    if names.is_empty() {
        return Err(FlowError::invalid(
            "event_types",
            "name at least one event type, or \"*\" for all (see GET /v1/webhooks/events)",
        ));
    }
    let mut checked: Vec<String> = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        let field = format!("event_types[{index}]");
        if name != ALL_EVENTS && EventType::from_name(name).is_none() {
            return Err(FlowError::invalid(
                field,
                format!(
                    "unknown event type {:?}; one of {}, or \"*\"",
                    truncate(name),
                    EventType::CATALOGUE.map(EventType::as_str).join(", ")
                ),
            ));
        }
        if checked.contains(name) {
            return Err(FlowError::invalid(field, format!("{name} is listed twice")));
        }
        checked.push(name.clone());
    }
    if checked.len() > 1 && checked.iter().any(|name| name == ALL_EVENTS) {
        return Err(FlowError::invalid(
            "event_types",
            "\"*\" already names every event; give it alone",
        ));
    }
    Ok(checked)
}

fn checked_description(description: Option<&str>) -> Result<Option<String>, FlowError> {
    let Some(text) = description else {
        return Ok(None);
    };
    if text.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(FlowError::invalid(
            "description",
            format!("at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(FlowError::invalid(
            "description",
            "must not contain control characters",
        ));
    }
    Ok(Some(text.to_owned()))
}

/// A value shortened for an error message.
fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

/// Refuses an id that could not name a subscription (it would be a 404 anyway, but
/// a `/` must never reach a key).
fn check_id(id: &str, prefix: &str, what: &'static str) -> Result<(), FlowError> {
    let well_formed = id.len() <= 64
        && id.starts_with(prefix)
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if well_formed {
        Ok(())
    } else {
        Err(FlowError::NotFound(what))
    }
}

impl Engine {
    /// Checks a subscription URL ([`checked_url`]) and, when it names a literal
    /// address, the egress policy, so a refused address is a clear error at once; a
    /// name is checked on every attempt, on the address it resolves to.
    fn checked_webhook_url(&self, url: &str) -> Result<String, FlowError> {
        let url = checked_url(url)?;
        if let Ok(parsed) = reqwest::Url::parse(&url) {
            self.plugins
                .egress()
                .check_url(&parsed)
                .map_err(|refused| FlowError::invalid("url", refused.to_string()))?;
        }
        Ok(url)
    }

    /// One of the tenant's subscriptions, with its secret.
    pub(crate) fn subscription(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Subscription, FlowError> {
        check_id(id, "whk_", "webhook")?;
        self.db
            .get(Tree::Webhooks, &subscription_key(tenant_id, id))?
            .ok_or(FlowError::NotFound("webhook"))
    }

    /// The tenant's subscriptions, oldest first (through the cache: every event reads
    /// them).
    pub(crate) fn subscriptions(
        &self,
        tenant_id: &str,
    ) -> Result<std::sync::Arc<Vec<Subscription>>, FlowError> {
        Ok(self.replica.caches.subscriptions(tenant_id, || {
            let mut all: Vec<Subscription> = self.db.scan(
                Tree::Webhooks,
                &subscription_key(tenant_id, ""),
                MAX_SUBSCRIPTIONS * 2,
                false,
            )?;
            all.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
            Ok(std::sync::Arc::new(all))
        })?)
    }

    /// After a change of one of the tenant's subscriptions: this replica's cache drops
    /// them, and the change log tells the others.
    fn subscriptions_changed(&self, tenant_id: &str) -> Result<(), FlowError> {
        self.replica.caches.forget_subscriptions(tenant_id);
        Ok(self.changed(&crate::changes::Change::Webhooks {
            tenant_id: tenant_id.to_owned(),
        })?)
    }

    /// Creates a subscription; the answer carries its secret, shown this once.
    pub async fn create_webhook(
        &self,
        tenant_id: &str,
        request: CreateSubscription,
    ) -> Result<SubscriptionView, FlowError> {
        let url = self.checked_webhook_url(&request.url)?;
        let event_types = checked_event_types(&request.event_types)?;
        let description = checked_description(request.description.as_deref())?;
        let _guard = self.replica.webhooks.changes.lock().await;
        if self.subscriptions(tenant_id)?.len() >= MAX_SUBSCRIPTIONS {
            return Err(FlowError::Conflict {
                code: "too_many_webhooks",
                message: format!("a tenant may have at most {MAX_SUBSCRIPTIONS} webhooks"),
            });
        }
        let now = self.clock.now();
        let id = new_id("whk");
        let secret = new_secret();
        let sealed = self
            .plugins
            .secret_box()
            .seal(&webhook_context(tenant_id, &id), &secret);
        let subscription = Subscription {
            id,
            tenant_id: tenant_id.to_owned(),
            url,
            event_types,
            description,
            enabled: request.enabled.unwrap_or(true),
            secret: sealed,
            created_at: now,
            updated_at: now,
        };
        self.db.put(
            Tree::Webhooks,
            &subscription_key(tenant_id, &subscription.id),
            &subscription,
        )?;
        self.subscriptions_changed(tenant_id)?;
        self.db.sync().await?;
        Ok(SubscriptionView::of(subscription, Some(secret)))
    }

    /// The tenant's subscriptions, without secrets.
    pub fn webhooks(&self, tenant_id: &str) -> Result<Vec<SubscriptionView>, FlowError> {
        Ok(self
            .subscriptions(tenant_id)?
            .iter()
            .map(|subscription| SubscriptionView::of(subscription.clone(), None))
            .collect())
    }

    /// One subscription, without its secret.
    pub fn webhook(&self, tenant_id: &str, id: &str) -> Result<SubscriptionView, FlowError> {
        Ok(SubscriptionView::of(
            self.subscription(tenant_id, id)?,
            None,
        ))
    }

    /// Changes a subscription's URL, events, description or enabled state.
    pub async fn update_webhook(
        &self,
        tenant_id: &str,
        id: &str,
        patch: PatchSubscription,
    ) -> Result<SubscriptionView, FlowError> {
        check_id(id, "whk_", "webhook")?;
        if patch.url.is_none()
            && patch.event_types.is_none()
            && patch.description.is_none()
            && patch.enabled.is_none()
        {
            return Err(FlowError::invalid(
                "body",
                "name at least one of url, event_types, description, enabled",
            ));
        }
        let url = patch
            .url
            .as_deref()
            .map(|url| self.checked_webhook_url(url))
            .transpose()?;
        let event_types = patch
            .event_types
            .as_deref()
            .map(checked_event_types)
            .transpose()?;
        let description = patch
            .description
            .as_ref()
            .map(|text| checked_description(text.as_deref()))
            .transpose()?;
        let now = self.clock.now();
        let updated = self.db.update::<Subscription, FlowError, _>(
            Tree::Webhooks,
            &subscription_key(tenant_id, id),
            |current| {
                let mut subscription = current.ok_or(FlowError::NotFound("webhook"))?;
                if let Some(url) = &url {
                    subscription.url.clone_from(url);
                }
                if let Some(event_types) = &event_types {
                    subscription.event_types.clone_from(event_types);
                }
                if let Some(description) = &description {
                    subscription.description.clone_from(description);
                }
                if let Some(enabled) = patch.enabled {
                    subscription.enabled = enabled;
                }
                subscription.updated_at = now;
                Ok((Some(subscription.clone()), subscription))
            },
        )?;
        self.subscriptions_changed(tenant_id)?;
        self.db.sync().await?;
        Ok(SubscriptionView::of(updated, None))
    }

    /// Deletes a subscription and its delivery log; its pending deliveries are never
    /// attempted (the worker drops schedule entries whose delivery is gone).
    pub async fn delete_webhook(&self, tenant_id: &str, id: &str) -> Result<(), FlowError> {
        check_id(id, "whk_", "webhook")?;
        let _guard = self.replica.webhooks.changes.lock().await;
        if !self
            .db
            .remove(Tree::Webhooks, &subscription_key(tenant_id, id))?
        {
            return Err(FlowError::NotFound("webhook"));
        }
        self.db
            .remove_prefix(Tree::WebhookDeliveries, &deliveries_prefix(tenant_id, id))?;
        // Its deliveries are gone, so are the worker's parked entries for them.
        self.db
            .remove_prefix(Tree::WebhookQueue, &parked_prefix(tenant_id, id))?;
        self.subscriptions_changed(tenant_id)?;
        self.db.sync().await?;
        Ok(())
    }

    /// Replaces a subscription's secret; the answer carries the new one. Attempts from
    /// now on, retries included, are signed with it.
    pub async fn rotate_webhook_secret(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<SubscriptionView, FlowError> {
        check_id(id, "whk_", "webhook")?;
        let secret = new_secret();
        let sealed = self
            .plugins
            .secret_box()
            .seal(&webhook_context(tenant_id, id), &secret);
        let now = self.clock.now();
        let rotated = self.db.update::<Subscription, FlowError, _>(
            Tree::Webhooks,
            &subscription_key(tenant_id, id),
            |current| {
                let mut subscription = current.ok_or(FlowError::NotFound("webhook"))?;
                subscription.secret = sealed.clone();
                subscription.updated_at = now;
                Ok((Some(subscription.clone()), subscription))
            },
        )?;
        self.subscriptions_changed(tenant_id)?;
        self.db.sync().await?;
        Ok(SubscriptionView::of(rotated, Some(secret)))
    }

    /// Queues a `webhook.test` event to this subscription alone; answers the delivery.
    pub async fn test_webhook(&self, tenant_id: &str, id: &str) -> Result<DeliveryView, FlowError> {
        let subscription = self.subscription(tenant_id, id)?;
        if !subscription.enabled {
            return Err(FlowError::Conflict {
                code: "webhook_disabled",
                message: "the webhook is disabled; enable it with PATCH first".into(),
            });
        }
        // Each test is a delivery the worker must make: a tenant gets a few a minute.
        self.limits
            .take(
                &format!("webhook-test/{tenant_id}"),
                TEST_EVENT_LIMIT,
                self.clock.now(),
            )?
            .map_err(|limited| FlowError::RateLimited {
                code: "rate_limited",
                message: format!(
                    "too many test events for this tenant (at most {} a minute); retry later",
                    TEST_EVENT_LIMIT.per_minute
                ),
                retry_after_secs: limited.retry_after_secs,
            })?;
        let data = serde_json::json!({
            "webhook_id": subscription.id,
            "message": "This is a test event from Dialgate.",
        });
        let delivery = self.queue_event(tenant_id, EventType::Test, data, &[subscription])?;
        self.db.sync().await?;
        self.replica.webhooks.wake();
        delivery
            .into_iter()
            .next()
            .map(DeliveryView::from)
            .ok_or(FlowError::NotFound("webhook"))
    }

    /// A subscription's deliveries, newest first.
    pub fn webhook_deliveries(
        &self,
        tenant_id: &str,
        id: &str,
        query: DeliveryQuery,
    ) -> Result<Vec<DeliveryView>, FlowError> {
        let status = query
            .status
            .as_deref()
            .map(|name| {
                DeliveryStatus::from_name(name).ok_or_else(|| {
                    FlowError::invalid("status", "one of pending, delivered, failed")
                })
            })
            .transpose()?;
        let limit = query.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        if !(1..=LOG_LIMIT).contains(&limit) {
            return Err(FlowError::invalid(
                "limit",
                format!("from 1 to {LOG_LIMIT}"),
            ));
        }
        self.subscription(tenant_id, id)?;
        let mut deliveries: Vec<Delivery> = self.db.scan(
            Tree::WebhookDeliveries,
            &deliveries_prefix(tenant_id, id),
            usize::MAX,
            true,
        )?;
        deliveries.retain(|delivery| status.is_none_or(|status| delivery.status == status));
        deliveries.truncate(limit);
        Ok(deliveries.into_iter().map(DeliveryView::from).collect())
    }

    /// Queues a failed delivery again: one more attempt now, with the same message id
    /// and body; a failure after it is final.
    pub async fn retry_webhook_delivery(
        &self,
        tenant_id: &str,
        id: &str,
        delivery_id: &str,
    ) -> Result<DeliveryView, FlowError> {
        let subscription = self.subscription(tenant_id, id)?;
        check_id(delivery_id, "dlv_", "delivery")?;
        if !subscription.enabled {
            return Err(FlowError::Conflict {
                code: "webhook_disabled",
                message: "the webhook is disabled; enable it with PATCH first".into(),
            });
        }
        let now = self.clock.now();
        let retried = self.db.update::<Delivery, FlowError, _>(
            Tree::WebhookDeliveries,
            &delivery_key(tenant_id, id, delivery_id),
            |current| {
                let mut delivery = current.ok_or(FlowError::NotFound("delivery"))?;
                if delivery.status != DeliveryStatus::Failed {
                    return Err(FlowError::Conflict {
                        code: "delivery_not_failed",
                        message: format!(
                            "the delivery is {}; only a failed delivery can be retried",
                            delivery.status.as_str()
                        ),
                    });
                }
                delivery.status = DeliveryStatus::Pending;
                delivery.next_attempt_at = Some(now);
                delivery.last_error = None;
                delivery.updated_at = now;
                Ok((Some(delivery.clone()), delivery))
            },
        )?;
        self.db.put(
            Tree::WebhookQueue,
            &queue_key(now, delivery_id),
            &QueueRef {
                tenant_id: tenant_id.to_owned(),
                subscription_id: id.to_owned(),
                delivery_id: delivery_id.to_owned(),
            },
        )?;
        self.db.sync().await?;
        self.replica.webhooks.wake();
        Ok(retried.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: FlowError) -> String {
        match err {
            FlowError::Invalid { field, .. } => field,
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn urls_must_be_absolute_http_with_a_host_and_no_credentials() {
        assert!(checked_url("https://example.test/hooks?x=1").is_ok());
        assert!(checked_url("http://127.0.0.1:8080/").is_ok());
        for bad in [
            "",
            "   ",
            "example.test/hooks",
            "ftp://example.test/",
            "file:///etc/passwd",
            "https://user:pass@example.test/",
            "http://",
        ] {
            let err = checked_url(bad).expect_err(bad);
            assert_eq!(field_of(err), "url", "{bad}");
        }
        let long = format!("https://example.test/{}", "a".repeat(MAX_URL_CHARS));
        assert_eq!(field_of(checked_url(&long).expect_err("long")), "url");
    }

    #[test]
    fn event_types_come_from_the_catalogue_once_or_the_wildcard_alone() {
        let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(checked_event_types(&names(&["verification.sent", "case.created"])).is_ok());
        assert!(checked_event_types(&names(&["*"])).is_ok());
        let cases: [(&[&str], &str); 5] = [
            (&[], "event_types"),
            (
                &["verification.sent", "verification.nope"],
                "event_types[1]",
            ),
            (&["webhook.test"], "event_types[0]"),
            (&["case.created", "case.created"], "event_types[1]"),
            (&["*", "case.created"], "event_types"),
        ];
        for (list, field) in cases {
            let err = checked_event_types(&names(list)).expect_err(field);
            assert_eq!(field_of(err), field, "{list:?}");
        }
    }
}
