//! The delivery worker: one task per server that takes due deliveries from the
//! schedule (earliest first, by the engine's clock), posts them signed, records each
//! attempt on the delivery, and reschedules failures on the backoff. It wakes on an
//! emission and polls, so retries fall due as the clock moves; it stops when told to,
//! leaving a delivery in flight pending, so a restart attempts it again. Before posting
//! it flushes the store, so an event never reaches a receiver before the state it
//! reports is durable.

use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::flows::Engine;
use crate::store::{StoreError, Tree};

use super::{
    backoff, deliveries_prefix, delivery_key, queue_due_millis, queue_key, sign, Attempt, Delivery,
    DeliveryStatus, QueueRef, Subscription, LOG_LIMIT,
};

/// How long a receiver has to answer one attempt.
pub const ATTEMPT_TIMEOUT: StdDuration = StdDuration::from_secs(10);
/// How often the worker looks for due deliveries when nothing wakes it.
const POLL: StdDuration = StdDuration::from_millis(250);
/// Deliveries attempted at once.
const BATCH: usize = 32;

/// A running worker; [`WorkerHandle::stop`] ends it.
#[derive(Debug)]
pub struct WorkerHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl WorkerHandle {
    /// Stops the worker (abandoning attempts in flight, which stay pending) and waits
    /// for it to end, so it no longer holds the store.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts the delivery worker of `engine`. Deliveries left pending by an earlier run
/// are in the schedule and go out as they fall due.
pub fn spawn(engine: Arc<Engine>) -> WorkerHandle {
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run(engine, stopped));
    WorkerHandle { stop, task }
}

async fn run(engine: Arc<Engine>, mut stopped: watch::Receiver<bool>) {
    // The egress policy's client: it connects only to addresses the policy allows
    // (each attempt checks a literal address first), follows no redirects, uses no proxy.
    let client = engine
        .plugins
        .egress()
        .client_builder()
        .timeout(ATTEMPT_TIMEOUT)
        .user_agent(concat!("Dialgate-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default();
    loop {
        if *stopped.borrow() {
            return;
        }
        let due = match due_now(&engine) {
            Ok(due) => due,
            Err(err) => {
                tracing::error!(error = %err, "cannot read the webhook schedule");
                Vec::new()
            }
        };
        if due.is_empty() {
            tokio::select! {
                () = engine.webhooks.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                _ = stopped.changed() => return,
            }
            continue;
        }
        // The state an event reports was written before the event: once this flush
        // returns it is durable, so no receiver hears of a change a crash could undo.
        if let Err(err) = engine.db.sync().await {
            tracing::error!(error = %err, "cannot flush before posting webhooks");
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                _ = stopped.changed() => return,
            }
            continue;
        }
        let mut batch = JoinSet::new();
        for (queue_key, entry) in due {
            let engine = Arc::clone(&engine);
            let client = client.clone();
            batch.spawn(async move {
                let recorded = attempt(&engine, &client, &queue_key, &entry).await;
                if let Err(err) = &recorded {
                    tracing::error!(
                        delivery = %entry.delivery_id,
                        error = %err,
                        "webhook delivery not recorded"
                    );
                }
                recorded.is_ok()
            });
        }
        let finished = async {
            let mut all_recorded = true;
            while let Some(joined) = batch.join_next().await {
                all_recorded &= joined.unwrap_or(false);
            }
            all_recorded
        };
        let all_recorded = tokio::select! {
            all_recorded = finished => all_recorded,
            _ = stopped.changed() => {
                batch.abort_all();
                while batch.join_next().await.is_some() {}
                return;
            }
        };
        if let Err(err) = engine.db.sync().await {
            tracing::error!(error = %err, "webhook attempts not flushed");
        }
        if !all_recorded {
            // The store failed: the entries are still due, so pause rather than post
            // them again at once.
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                _ = stopped.changed() => return,
            }
        }
    }
}

/// Schedule entries due by the engine's clock, earliest first.
fn due_now(engine: &Engine) -> Result<Vec<(Vec<u8>, QueueRef)>, StoreError> {
    let now = engine.clock.now().timestamp_millis();
    let mut due = engine
        .db
        .scan_entries::<QueueRef>(Tree::WebhookQueue, b"", BATCH, false)?;
    due.retain(|(key, _)| queue_due_millis(key).is_some_and(|at| at <= now));
    Ok(due)
}

/// What one attempt came to.
struct Outcome {
    status_code: Option<u16>,
    error: Option<String>,
    duration_ms: u64,
}

impl Outcome {
    fn succeeded(&self) -> bool {
        self.status_code
            .is_some_and(|code| (200..300).contains(&code))
    }
}

/// Makes the attempt a schedule entry stands for, records it, and moves the entry.
async fn attempt(
    engine: &Engine,
    client: &reqwest::Client,
    queue_entry: &[u8],
    entry: &QueueRef,
) -> Result<(), StoreError> {
    let key = delivery_key(&entry.tenant_id, &entry.subscription_id, &entry.delivery_id);
    let delivery: Option<Delivery> = engine.db.get(Tree::WebhookDeliveries, &key)?;
    let Some(delivery) = delivery.filter(|delivery| is_due_entry(delivery, queue_entry)) else {
        // Gone with its subscription, finished, or moved to another time.
        engine.db.remove(Tree::WebhookQueue, queue_entry)?;
        return Ok(());
    };
    let subscription: Option<Subscription> = engine.db.get(
        Tree::Webhooks,
        &super::subscription_key(&entry.tenant_id, &entry.subscription_id),
    )?;
    let Some(subscription) = subscription else {
        engine.db.remove(Tree::WebhookDeliveries, &key)?;
        engine.db.remove(Tree::WebhookQueue, queue_entry)?;
        return Ok(());
    };
    if !subscription.enabled {
        finish_disabled(engine, &key)?;
        engine.db.remove(Tree::WebhookQueue, queue_entry)?;
        return Ok(());
    }

    let at = engine.clock.now();
    let outcome = post(engine, client, &subscription, &delivery, at).await;
    let number = u32::try_from(delivery.attempts.len())
        .unwrap_or(u32::MAX)
        .saturating_add(1);
    let record = Attempt {
        attempt: number,
        at,
        status_code: outcome.status_code,
        error: outcome.error.clone(),
        duration_ms: outcome.duration_ms,
        succeeded: outcome.succeeded(),
    };
    let next = if record.succeeded {
        None
    } else {
        backoff(number).map(|delay| at + delay)
    };
    if let Some(next) = next {
        engine.db.put(
            Tree::WebhookQueue,
            &queue_key(next, &entry.delivery_id),
            entry,
        )?;
    }
    let finished = engine.db.update::<Delivery, StoreError, bool>(
        Tree::WebhookDeliveries,
        &key,
        |current| {
            let Some(mut delivery) = current else {
                return Ok((None, false));
            };
            delivery.attempts.push(record.clone());
            delivery.updated_at = at;
            delivery.next_attempt_at = next;
            if record.succeeded {
                delivery.status = DeliveryStatus::Delivered;
                delivery.last_error = None;
            } else if next.is_none() {
                delivery.status = DeliveryStatus::Failed;
                delivery.last_error = Some(match &record.error {
                    Some(error) => error.clone(),
                    None => format!(
                        "the receiver answered {} on the last attempt",
                        record.status_code.unwrap_or_default()
                    ),
                });
            }
            let finished = delivery.status != DeliveryStatus::Pending;
            Ok((Some(delivery), finished))
        },
    )?;
    engine.db.remove(Tree::WebhookQueue, queue_entry)?;
    if finished {
        prune(engine, &entry.tenant_id, &entry.subscription_id)?;
    }
    Ok(())
}

/// Whether `queue_entry` is the delivery's current place in the schedule.
fn is_due_entry(delivery: &Delivery, queue_entry: &[u8]) -> bool {
    delivery.status == DeliveryStatus::Pending
        && delivery
            .next_attempt_at
            .is_some_and(|at| Some(at.timestamp_millis().max(0)) == queue_due_millis(queue_entry))
}

/// A delivery whose subscription was disabled while it waited fails without an
/// attempt; a manual retry queues it again.
fn finish_disabled(engine: &Engine, key: &[u8]) -> Result<(), StoreError> {
    let now = engine.clock.now();
    engine
        .db
        .update::<Delivery, StoreError, ()>(Tree::WebhookDeliveries, key, |current| {
            Ok((
                current.map(|mut delivery| {
                    delivery.status = DeliveryStatus::Failed;
                    delivery.next_attempt_at = None;
                    delivery.last_error = Some("the webhook was disabled".into());
                    delivery.updated_at = now;
                    delivery
                }),
                (),
            ))
        })
}

/// Keeps a subscription's newest finished deliveries up to the log's bound; pending
/// ones are never dropped.
fn prune(engine: &Engine, tenant_id: &str, subscription_id: &str) -> Result<(), StoreError> {
    let all = engine.db.scan_entries::<Delivery>(
        Tree::WebhookDeliveries,
        &deliveries_prefix(tenant_id, subscription_id),
        usize::MAX,
        true,
    )?;
    let finished = all
        .into_iter()
        .filter(|(_, delivery)| delivery.status != DeliveryStatus::Pending);
    for (key, _) in finished.skip(LOG_LIMIT) {
        engine.db.remove(Tree::WebhookDeliveries, &key)?;
    }
    Ok(())
}

/// Posts the delivery's body to the subscription, signed for this attempt, if the
/// egress policy allows its address.
async fn post(
    engine: &Engine,
    client: &reqwest::Client,
    subscription: &Subscription,
    delivery: &Delivery,
    at: DateTime<Utc>,
) -> Outcome {
    let timestamp = at.timestamp();
    let started = Instant::now();
    let elapsed =
        |started: Instant| u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let refused = |error: String| Outcome {
        status_code: None,
        error: Some(error),
        duration_ms: 0,
    };
    // A literal address is checked here, since reqwest resolves (through the policy)
    // only names; the URL is checked on every attempt, as the policy may have changed
    // since the subscription was made.
    let url = match reqwest::Url::parse(&subscription.url) {
        Ok(url) => url,
        Err(err) => return refused(format!("the webhook's URL does not parse: {err}")),
    };
    if let Err(refusal) = engine.plugins.egress().check_url(&url) {
        return refused(refusal.to_string());
    }
    let secret = match engine.plugins.secret_box().open(
        &crate::secrets::webhook_context(&subscription.tenant_id, &subscription.id),
        &subscription.secret,
    ) {
        Ok(secret) => secret,
        Err(err) => return refused(err.to_string()),
    };
    let Some(signature) = sign(&secret, &delivery.message_id, timestamp, &delivery.payload) else {
        return Outcome {
            status_code: None,
            error: Some("the webhook's secret is malformed".into()),
            duration_ms: 0,
        };
    };
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &delivery.message_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(delivery.payload.clone())
        .send()
        .await;
    match sent {
        Ok(response) => Outcome {
            status_code: Some(response.status().as_u16()),
            error: None,
            duration_ms: elapsed(started),
        },
        Err(err) => Outcome {
            status_code: None,
            error: Some(describe(&err)),
            duration_ms: elapsed(started),
        },
    }
}

/// A transport failure in a few words: its innermost cause ("Connection refused"),
/// without the URL, which the subscription shows.
fn describe(err: &reqwest::Error) -> String {
    let mut innermost: &dyn std::error::Error = err;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    let detail = innermost.to_string();
    if let Some(refused) = crate::egress::refusal_in(err) {
        refused.to_string()
    } else if err.is_timeout() {
        format!("timed out after {} s", ATTEMPT_TIMEOUT.as_secs())
    } else if err.is_connect() {
        format!("connection failed: {detail}")
    } else if err.is_redirect() {
        "redirects are not followed".into()
    } else {
        format!("request failed: {detail}")
    }
}
