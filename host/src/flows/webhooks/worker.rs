//! The delivery worker: one task per server that takes due deliveries from the
//! schedule (earliest first, by the engine's clock), posts them signed, records each
//! attempt on the delivery, and reschedules failures on the backoff. It wakes on an
//! emission, on a finished attempt and on a poll, so retries fall due as the clock
//! moves; it stops when told to, leaving deliveries in flight pending, so a restart
//! attempts them again. Before posting it flushes the store, so an event never
//! reaches a receiver before the state it reports is durable.
//!
//! Fairness: every attempt is its own task, and the worker never waits for one to end
//! before it takes other due work, so a receiver that accepts and never answers holds
//! only its own attempts. Attempts in flight are capped per subscription
//! ([`MAX_IN_FLIGHT_PER_SUBSCRIPTION`]), per tenant ([`MAX_IN_FLIGHT_PER_TENANT`]) and
//! in all ([`MAX_IN_FLIGHT`]); one delivery is never attempted twice at once. A due
//! entry whose subscription or tenant is at its cap is moved out of the time-ordered
//! schedule into its subscription's lane (`parked/{tenant}/{subscription}/{entry}` in
//! the same tree, after every time-ordered key), and the lane is drained as its
//! attempts end. So the schedule's head holds only work that can start, and another
//! subscription's due delivery is found at once however much a slow one has queued:
//! each entry is moved at most once, and the worker's memory is bounded by the caps
//! and the number of subscriptions.
//!
//! Replicas of a shared store each run a worker over the same schedule, and the
//! store hands out its entries: a pass claims the due head with one statement that
//! skips the entries another replica is claiming at that moment (`FOR UPDATE SKIP
//! LOCKED`) and leases each claimed entry for [`DELIVERY_LEASE`]; an entry parked in
//! a lane is claimed the same way before its attempt, and parking moves a claimed
//! entry in one statement. So an entry is attempted by one replica at a time, and
//! before posting the attempt still checks that the entry is the delivery's current
//! place in the schedule, so an attempt another replica recorded meanwhile is not
//! made again. A replica that dies mid-attempt leaves its lease to expire; the entry
//! is still in the schedule and another replica attempts it then, with the same
//! `webhook-id`. (So does a replica stopped mid-attempt.) Each worker reads the lanes
//! of parked entries anew every [`LANES_REREAD`], so the lanes a dead replica parked
//! entries in are drained by the others. On the embedded store, which one process
//! owns, nothing is claimed: the worker's own books keep it from attempting a
//! delivery twice at once.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::flows::Engine;
use crate::store::{key, StoreError, Tree};

use crate::webhooks::{
    backoff, deliveries_prefix, delivery_key, queue_due_millis, queue_key, sign, Attempt, Delivery,
    DeliveryStatus, QueueRef, Subscription, LOG_LIMIT,
};

/// How long a receiver has to answer one attempt.
pub const ATTEMPT_TIMEOUT: StdDuration = StdDuration::from_secs(10);
/// How long a replica's claim on a schedule entry holds (well past an attempt's
/// timeout).
pub const DELIVERY_LEASE: chrono::Duration = chrono::Duration::seconds(60);
/// How often a worker on a shared store reads which lanes hold parked entries.
const LANES_REREAD: StdDuration = StdDuration::from_secs(5);
/// How often the worker looks for due deliveries when nothing wakes it.
const POLL: StdDuration = StdDuration::from_millis(250);
/// Attempts in flight at once, across every tenant.
pub const MAX_IN_FLIGHT: usize = 256;
/// Attempts in flight at once for one tenant, over all its subscriptions.
pub const MAX_IN_FLIGHT_PER_TENANT: usize = 8;
/// Attempts in flight at once to one subscription.
pub const MAX_IN_FLIGHT_PER_SUBSCRIPTION: usize = 2;
/// Schedule entries read at a time.
const SCAN_CHUNK: usize = 256;
/// Schedule entries one pass looks at before the worker lets other tasks run.
const SCAN_PER_PASS: usize = 4096;
/// The first part of a parked entry's key: it sorts after the time-ordered keys,
/// which start with digits.
const PARKED: &str = "parked";

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

/// The prefix of a subscription's lane of parked entries in `webhook_queue`.
pub(crate) fn parked_prefix(tenant_id: &str, subscription_id: &str) -> Vec<u8> {
    key(&[PARKED, tenant_id, subscription_id, ""])
}

/// A subscription, as `(tenant id, subscription id)`.
type Lane = (String, String);

/// One schedule entry being attempted.
#[derive(Debug, Clone)]
struct Job {
    /// Where the entry is stored: its time-ordered key, or its key in a lane.
    stored: Vec<u8>,
    /// Its time-ordered key (`due time / delivery id`).
    due: Vec<u8>,
    entry: QueueRef,
    /// Until when (ms) this replica's claim on the entry holds; `None` on the embedded
    /// store, where nothing is claimed.
    lease: Option<i64>,
}

impl Job {
    fn lane(&self) -> Lane {
        (
            self.entry.tenant_id.clone(),
            self.entry.subscription_id.clone(),
        )
    }
}

/// What is in flight, and which lanes have parked entries.
#[derive(Debug, Default)]
struct Scheduler {
    /// Deliveries being attempted, by id.
    deliveries: HashSet<String>,
    lanes: HashMap<Lane, usize>,
    tenants: HashMap<String, usize>,
    /// Lanes that may hold parked entries.
    parked: BTreeSet<Lane>,
    /// The lane served first on the next pass, so that no lane is always last.
    next_lane: Option<Lane>,
    /// Whether replicas share the schedule, so entries are claimed before an attempt.
    shared: bool,
}

impl Scheduler {
    fn full(&self) -> bool {
        self.deliveries.len() >= MAX_IN_FLIGHT
    }

    /// How many attempts to `lane` may start now.
    fn room(&self, lane: &Lane) -> usize {
        let lane_used = self.lanes.get(lane).copied().unwrap_or(0);
        let tenant_used = self.tenants.get(&lane.0).copied().unwrap_or(0);
        MAX_IN_FLIGHT
            .saturating_sub(self.deliveries.len())
            .min(MAX_IN_FLIGHT_PER_SUBSCRIPTION.saturating_sub(lane_used))
            .min(MAX_IN_FLIGHT_PER_TENANT.saturating_sub(tenant_used))
    }

    /// Whether an attempt to `lane` may start now.
    fn has_room(&self, lane: &Lane) -> bool {
        self.room(lane) > 0
    }

    fn start(&mut self, job: &Job) {
        self.deliveries.insert(job.entry.delivery_id.clone());
        *self.lanes.entry(job.lane()).or_default() += 1;
        *self.tenants.entry(job.entry.tenant_id.clone()).or_default() += 1;
    }

    fn finish(&mut self, job: &Job) {
        self.deliveries.remove(&job.entry.delivery_id);
        let lane = job.lane();
        if let Some(count) = self.lanes.get_mut(&lane) {
            *count -= 1;
            if *count == 0 {
                self.lanes.remove(&lane);
            }
        }
        if let Some(count) = self.tenants.get_mut(&job.entry.tenant_id) {
            *count -= 1;
            if *count == 0 {
                self.tenants.remove(&job.entry.tenant_id);
            }
        }
    }

    /// Collects into `jobs` the entries to attempt now (each marked in flight): parked
    /// ones of the lanes with room first, then the schedule's due head. Answers
    /// whether due entries remain unread (the pass stopped at its bound).
    fn pick(
        &mut self,
        engine: &Engine,
        now_millis: i64,
        jobs: &mut Vec<Job>,
    ) -> Result<bool, StoreError> {
        self.pick_parked(engine, now_millis, jobs)?;
        if self.shared {
            self.claim_due(engine, now_millis, jobs)
        } else {
            self.pick_due(engine, now_millis, jobs)
        }
    }

    fn pick_parked(
        &mut self,
        engine: &Engine,
        now_millis: i64,
        jobs: &mut Vec<Job>,
    ) -> Result<(), StoreError> {
        // Rotate the lanes so the first served changes from pass to pass.
        let mut lanes: Vec<Lane> = self.parked.iter().cloned().collect();
        if let Some(next) = &self.next_lane {
            let at = lanes.partition_point(|lane| lane < next);
            lanes.rotate_left(at);
        }
        for lane in lanes {
            if self.full() {
                self.next_lane = Some(lane);
                return Ok(());
            }
            if !self.has_room(&lane) {
                continue;
            }
            let prefix = parked_prefix(&lane.0, &lane.1);
            let in_flight = self.lanes.get(&lane).copied().unwrap_or(0);
            let entries = engine.db.scan_entries::<QueueRef>(
                Tree::WebhookQueue,
                &prefix,
                in_flight + MAX_IN_FLIGHT_PER_SUBSCRIPTION,
                false,
            )?;
            if entries.is_empty() {
                self.parked.remove(&lane);
                continue;
            }
            let mut candidates: Vec<Job> = entries
                .into_iter()
                .filter(|(_, entry)| !self.deliveries.contains(&entry.delivery_id))
                .take(self.room(&lane))
                .map(|(stored, entry)| Job {
                    due: stored[prefix.len()..].to_vec(),
                    stored,
                    entry,
                    lease: None,
                })
                .collect();
            if self.shared {
                candidates = claim(engine, candidates, now_millis)?;
            }
            for job in candidates {
                self.start(&job);
                jobs.push(job);
            }
        }
        self.next_lane = None;
        Ok(())
    }

    fn pick_due(
        &mut self,
        engine: &Engine,
        now_millis: i64,
        jobs: &mut Vec<Job>,
    ) -> Result<bool, StoreError> {
        let mut examined = 0;
        loop {
            if self.full() {
                return Ok(false);
            }
            // Entries being attempted stay at the head until their attempt is
            // recorded, so the read reaches past them.
            let limit = self.deliveries.len() + SCAN_CHUNK;
            let head = engine
                .db
                .scan_entries::<QueueRef>(Tree::WebhookQueue, b"", limit, false)?;
            let read = head.len();
            for (stored, entry) in head {
                // Past the due entries: later ones, or the lanes' parked entries.
                if queue_due_millis(&stored).is_none_or(|due| due > now_millis) {
                    return Ok(false);
                }
                examined += 1;
                if self.deliveries.contains(&entry.delivery_id) {
                    continue;
                }
                let job = Job {
                    due: stored.clone(),
                    stored,
                    entry,
                    lease: None,
                };
                let lane = job.lane();
                if self.has_room(&lane) {
                    self.start(&job);
                    jobs.push(job);
                } else if !self.full() {
                    park(engine, &job)?;
                    self.parked.insert(lane);
                } else {
                    return Ok(false);
                }
            }
            if read < limit {
                return Ok(false);
            }
            if examined >= SCAN_PER_PASS {
                return Ok(true);
            }
        }
    }

    /// [`Scheduler::pick_due`] on a shared store: the store claims the due head for
    /// this replica, skipping what other replicas hold or are claiming.
    fn claim_due(
        &mut self,
        engine: &Engine,
        now_millis: i64,
        jobs: &mut Vec<Job>,
    ) -> Result<bool, StoreError> {
        let until = lease_until(now_millis);
        // Keys due by now sort below the next millisecond's (parked keys sort after
        // every time-ordered key).
        let upto = format!("{:020}", now_millis.saturating_add(1)).into_bytes();
        let mut examined = 0;
        loop {
            let limit = MAX_IN_FLIGHT
                .saturating_sub(self.deliveries.len())
                .min(SCAN_CHUNK);
            if limit == 0 {
                return Ok(false);
            }
            let claimed = engine
                .db
                .claim_due(Tree::WebhookQueue, &upto, now_millis, until, limit)?
                .ok_or_else(|| {
                    StoreError::Backend("the shared store keeps no webhook leases".into())
                })?;
            let read = claimed.len();
            for (stored, bytes) in claimed {
                examined += 1;
                let Some(entry) = readable(engine, &stored, &bytes, until)? else {
                    continue;
                };
                let job = Job {
                    due: stored.clone(),
                    stored,
                    entry,
                    lease: Some(until),
                };
                if self.deliveries.contains(&job.entry.delivery_id) {
                    // A second entry of a delivery this replica is attempting (left by
                    // a crash while it was moved): its lease keeps it until the
                    // attempt has moved the delivery on, and then it is dropped.
                    continue;
                }
                let lane = job.lane();
                if self.has_room(&lane) {
                    self.start(&job);
                    jobs.push(job);
                } else {
                    park(engine, &job)?;
                    self.parked.insert(lane);
                }
            }
            if read < limit {
                return Ok(false);
            }
            if examined >= SCAN_PER_PASS {
                return Ok(true);
            }
        }
    }
}

/// Until when (ms) a claim made at `now_millis` holds.
fn lease_until(now_millis: i64) -> i64 {
    now_millis.saturating_add(DELIVERY_LEASE.num_milliseconds())
}

/// The schedule entry stored as `bytes`, or `None` after dropping it when it cannot be
/// read (it names no delivery any attempt could find).
fn readable(
    engine: &Engine,
    stored: &[u8],
    bytes: &[u8],
    until: i64,
) -> Result<Option<QueueRef>, StoreError> {
    match serde_json::from_slice(bytes) {
        Ok(entry) => Ok(Some(entry)),
        Err(err) => {
            tracing::error!(
                entry = %String::from_utf8_lossy(stored),
                "dropping an unreadable webhook schedule entry: {err}"
            );
            engine
                .db
                .finish_claimed(Tree::WebhookQueue, stored, until)?;
            Ok(None)
        }
    }
}

/// Those of `candidates` the store claims for this replica now (the others are held by
/// another replica, or gone), each with its lease.
fn claim(engine: &Engine, candidates: Vec<Job>, now_millis: i64) -> Result<Vec<Job>, StoreError> {
    if candidates.is_empty() {
        return Ok(candidates);
    }
    let until = lease_until(now_millis);
    let keys: Vec<Vec<u8>> = candidates.iter().map(|job| job.stored.clone()).collect();
    let claimed: HashSet<Vec<u8>> = engine
        .db
        .claim_keys(Tree::WebhookQueue, &keys, now_millis, until)?
        .ok_or_else(|| StoreError::Backend("the shared store keeps no webhook leases".into()))?
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    Ok(candidates
        .into_iter()
        .filter(|job| claimed.contains(&job.stored))
        .map(|job| Job {
            lease: Some(until),
            ..job
        })
        .collect())
}

/// Moves a due entry into its subscription's lane. On a shared store the claimed
/// entry moves in one step, free of the claim, so another replica may attempt it from
/// there. On the embedded store it is written before the old key is removed, so a
/// crash between leaves two entries for one attempt: the worker never runs them at
/// once, and the second is dropped when its delivery has moved on.
fn park(engine: &Engine, job: &Job) -> Result<(), StoreError> {
    let mut parked = parked_prefix(&job.entry.tenant_id, &job.entry.subscription_id);
    parked.extend_from_slice(&job.due);
    if let Some(until) = job.lease {
        engine
            .db
            .move_claimed(Tree::WebhookQueue, &job.stored, &parked, until)?;
        return Ok(());
    }
    engine.db.put(Tree::WebhookQueue, &parked, &job.entry)?;
    engine.db.remove(Tree::WebhookQueue, &job.stored)?;
    Ok(())
}

/// Takes the entry a finished attempt stood for out of the schedule: on a shared
/// store only while this replica's claim on it holds.
fn unschedule(engine: &Engine, job: &Job) -> Result<(), StoreError> {
    match job.lease {
        Some(until) => {
            if !engine
                .db
                .finish_claimed(Tree::WebhookQueue, &job.stored, until)?
            {
                tracing::warn!(
                    delivery = %job.entry.delivery_id,
                    "a webhook attempt outran its claim on the schedule entry"
                );
            }
            Ok(())
        }
        None => engine.db.remove(Tree::WebhookQueue, &job.stored).map(drop),
    }
}

/// The deliveries waiting in the schedule by `now_millis`: entries due by then and
/// parked ones, counted up to `cap` (the metrics' backlog; a scrape's read is bounded).
pub(crate) fn backlog(engine: &Engine, now_millis: i64, cap: usize) -> Result<usize, StoreError> {
    const CHUNK: usize = 1_000;
    let parked = key(&[PARKED, ""]);
    let mut count = 0;
    let mut start = Vec::new();
    let mut in_parked = false;
    while count < cap {
        let chunk = engine.db.scan_from_raw(Tree::WebhookQueue, &start, CHUNK)?;
        let Some((last, _)) = chunk.last() else {
            break;
        };
        let mut jumped = false;
        for (stored, _) in &chunk {
            if !in_parked {
                if queue_due_millis(stored).is_some_and(|due| due > now_millis) {
                    // Past the due entries: on to the parked ones, after every due time.
                    start = parked.clone();
                    in_parked = true;
                    jumped = true;
                    break;
                }
                in_parked = stored.starts_with(&parked);
            }
            count += 1;
        }
        if jumped {
            continue;
        }
        if chunk.len() < CHUNK {
            break;
        }
        start = last.clone();
        start.push(0);
    }
    Ok(count.min(cap))
}

/// The lanes holding parked entries: one read per such lane, each jumping past the
/// lane's entries to the next lane's, whatever a lane holds and however many
/// subscriptions have none (deleting a subscription empties its lane).
fn parked_lanes(engine: &Engine) -> Result<BTreeSet<Lane>, StoreError> {
    let region = key(&[PARKED, ""]);
    let mut start = region.clone();
    let mut lanes = BTreeSet::new();
    while let Some((stored, _)) = engine
        .db
        .scan_from_raw(Tree::WebhookQueue, &start, 1)?
        .into_iter()
        .next()
    {
        let Some(rest) = stored.strip_prefix(region.as_slice()) else {
            break;
        };
        let mut parts = rest.split(|byte| *byte == b'/');
        let (Some(tenant), Some(subscription), Some(_)) =
            (parts.next(), parts.next(), parts.next())
        else {
            // Not a lane's entry: read on past it.
            start = stored;
            start.push(0);
            continue;
        };
        let lane = (
            String::from_utf8_lossy(tenant).into_owned(),
            String::from_utf8_lossy(subscription).into_owned(),
        );
        // Past every key of the lane: its prefix ends with '/', and '0' follows it.
        start = parked_prefix(&lane.0, &lane.1);
        start.pop();
        start.push(b'/' + 1);
        lanes.insert(lane);
    }
    Ok(lanes)
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
    let mut scheduler = Scheduler {
        shared: engine.changes.is_some(),
        ..Scheduler::default()
    };
    let mut lanes_read: Option<Instant> = None;
    let mut tasks: JoinSet<bool> = JoinSet::new();
    let mut running: HashMap<tokio::task::Id, Job> = HashMap::new();
    // Whether every finished attempt was recorded; when the store failed, the entries
    // are still due, so the worker pauses rather than post them again at once.
    let mut store_ok = true;
    loop {
        if *stopped.borrow() {
            break;
        }
        while let Some(joined) = tasks.try_join_next_with_id() {
            store_ok &= finished(&mut scheduler, &mut running, joined);
        }
        if !std::mem::replace(&mut store_ok, true) {
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                _ = stopped.changed() => break,
            }
            continue;
        }
        // The lanes are read at start and, where replicas share the schedule, again
        // from time to time: another replica may have parked entries and died.
        if lanes_read.is_none_or(|at| scheduler.shared && at.elapsed() >= LANES_REREAD) {
            match parked_lanes(&engine) {
                Ok(lanes) => {
                    scheduler.parked.extend(lanes);
                    lanes_read = Some(Instant::now());
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot read the parked webhook deliveries");
                }
            }
        }
        let now = engine.clock.now().timestamp_millis();
        let mut jobs = Vec::new();
        let more = match scheduler.pick(&engine, now, &mut jobs) {
            Ok(more) => more,
            Err(err) => {
                tracing::error!(error = %err, "cannot read the webhook schedule");
                store_ok = false;
                false
            }
        };
        if !jobs.is_empty() {
            // The state an event reports was written before the event: once this
            // flush returns it is durable, so no receiver hears of a change a crash
            // could undo.
            if let Err(err) = engine.db.sync().await {
                tracing::error!(error = %err, "cannot flush before posting webhooks");
                for job in &jobs {
                    scheduler.finish(job);
                }
                store_ok = false;
                continue;
            }
            for job in jobs {
                let engine = Arc::clone(&engine);
                let client = client.clone();
                let posted = job.clone();
                // The attempt's logs nest under a span of its own, as a request's do.
                let span = tracing::info_span!(
                    "webhook_attempt",
                    tenant_id = %job.entry.tenant_id,
                    subscription_id = %job.entry.subscription_id,
                    delivery_id = %job.entry.delivery_id,
                );
                let handle = tasks.spawn(tracing::Instrument::instrument(
                    async move {
                        let recorded = attempt(&engine, &client, &posted).await;
                        if let Err(err) = &recorded {
                            tracing::error!(
                                delivery = %posted.entry.delivery_id,
                                error = %err,
                                "webhook delivery not recorded"
                            );
                            return false;
                        }
                        if let Err(err) = engine.db.sync().await {
                            tracing::error!(error = %err, "webhook attempt not flushed");
                        }
                        true
                    },
                    span,
                ));
                running.insert(handle.id(), job);
            }
        }
        if more {
            tokio::task::yield_now().await;
            continue;
        }
        if !store_ok {
            continue;
        }
        tokio::select! {
            () = engine.replica.webhooks.wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
            Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                store_ok &= finished(&mut scheduler, &mut running, joined);
            }
            _ = stopped.changed() => break,
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// Takes a finished attempt off the books; whether it was recorded.
fn finished(
    scheduler: &mut Scheduler,
    running: &mut HashMap<tokio::task::Id, Job>,
    joined: Result<(tokio::task::Id, bool), tokio::task::JoinError>,
) -> bool {
    let (id, recorded) = match joined {
        Ok((id, recorded)) => (id, recorded),
        Err(err) => {
            tracing::error!(error = %err, "a webhook attempt was lost");
            (err.id(), false)
        }
    };
    if let Some(job) = running.remove(&id) {
        scheduler.finish(&job);
    }
    recorded
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
async fn attempt(engine: &Engine, client: &reqwest::Client, job: &Job) -> Result<(), StoreError> {
    let entry = &job.entry;
    let key = delivery_key(&entry.tenant_id, &entry.subscription_id, &entry.delivery_id);
    let delivery: Option<Delivery> = engine.db.get(Tree::WebhookDeliveries, &key)?;
    let Some(delivery) = delivery.filter(|delivery| is_due_entry(delivery, &job.due)) else {
        // Gone with its subscription, finished, or moved to another time.
        unschedule(engine, job)?;
        return Ok(());
    };
    let subscription: Option<Subscription> = engine.db.get(
        Tree::Webhooks,
        &crate::webhooks::subscription_key(&entry.tenant_id, &entry.subscription_id),
    )?;
    let Some(subscription) = subscription else {
        engine.db.remove(Tree::WebhookDeliveries, &key)?;
        unschedule(engine, job)?;
        return Ok(());
    };
    if !subscription.enabled {
        finish_disabled(engine, &key)?;
        unschedule(engine, job)?;
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
    engine
        .metrics
        .webhook_attempt(record.succeeded, !record.succeeded && next.is_none());
    unschedule(engine, job)?;
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
