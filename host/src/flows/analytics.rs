//! Conversion analytics and the verification log: the flows count what happens to a
//! verification (`tally`), this replica keeps the counts for at most a second and
//! merges them into the stored tallies per hour and per day, for the tenant and for
//! the host (`flush_analytics`); `conversion` reads one range of tallies back, and
//! `verification_log` pages through a tenant's verifications newest first.
//!
//! Each fact also moves the operator's Prometheus counters (`metrics.rs`).
//!
//! Tallies are statistics kept beside the verifications, which stay the truth: a
//! replica that dies loses the counts of its last second at most.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::analytics::{
    parse_rollup_key, parse_tally_key, rollup_key, rollup_of_tally_key, rollup_range, tally_key,
    tally_range, Dim, Fact, Groups, Interval, Rollup, RollupRecord, Row, Tally, HOST, ROWS_FORMAT,
    SETTLE_HOURS,
};
use crate::metrics::CodeStage;
use crate::model::{Channel, ReportStatus, SentCode, Verification};
use crate::store::{key, StoreError, Tree};

use crate::flows::{Engine, FlowError};

/// How often a replica merges its counts into the store.
const FLUSH_INTERVAL: StdDuration = StdDuration::from_secs(1);
/// How often a replica rolls settled days into their rollups.
const ROLL_INTERVAL: StdDuration = StdDuration::from_secs(60);
/// Days of one owner rolled at most per pass.
const ROLL_DAYS: usize = 31;
/// Unmerged count rows past which a flush is asked for at once.
const PENDING_SOON: usize = 20_000;
/// The longest range an hourly query covers.
const MAX_HOURLY_DAYS: i64 = 31;
/// The longest range a daily query covers.
const MAX_DAILY_DAYS: i64 = 400;
/// Tallies one query reads at most (a year of days for 500 group values).
const MAX_TALLIES_READ: usize = 200_000;
/// Verifications one page of the log reads at most, matching or not.
const MAX_LOG_SCAN: usize = 2_000;
/// Entries one page of the log holds at most.
pub const MAX_LOG_PAGE: usize = 200;

/// What the unmerged counts are kept by: tenant, hour and the facts' groups.
type PendingKey = (String, DateTime<Utc>, Groups);

/// The counts one replica has not merged yet.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Counts by tenant, hour and the facts' groups.
    pending: Mutex<HashMap<PendingKey, Tally>>,
    /// Tallies by store key that a failed flush could not merge; merged next time.
    unmerged: Mutex<BTreeMap<Vec<u8>, Tally>>,
    /// Wakes the flusher when the counts pile up.
    soon: tokio::sync::Notify,
    /// Held while counts are drained and merged: a query's flush waits for one under
    /// way, whose drained counts are in no map it could see until they are merged.
    flush: Mutex<()>,
}

/// What a verification groups under, with the message `sent` (its first, for the
/// verification's own facts).
pub fn groups_of(verification: &Verification, sent: Option<&SentCode>) -> Groups {
    let phone = &verification.phone;
    Groups {
        country: phone.region.clone(),
        carrier: phone.carrier_name.clone(),
        line_type: Some(phone.line_type.as_str().to_owned()),
        channel: sent
            .map(|sent| sent.channel)
            .or(verification.channel)
            .map(|channel| channel.as_str().to_owned()),
        provider: sent.map(|sent| sent.provider.clone()),
        template: sent.map(|sent| {
            sent.template_id
                .clone()
                .unwrap_or_else(|| "default".to_owned())
        }),
        locale: sent.map(|sent| sent.locale.clone()),
    }
}

/// Query of `GET /v1/analytics/conversion`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConversionQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub interval: Option<String>,
    pub group_by: Option<String>,
    /// The operator's view only: one tenant's tallies instead of the host's.
    pub tenant_id: Option<String>,
}

/// Answer of `GET /v1/analytics/conversion`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Conversion {
    /// The start of the first bucket covered.
    pub from: DateTime<Utc>,
    /// The end of the last bucket covered.
    pub to: DateTime<Utc>,
    pub interval: Interval,
    /// The grouping, absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<Dim>,
    /// One row per bucket (every bucket without a grouping, the buckets with counts
    /// with one), in time order, then by group.
    #[schema(value_type = Vec<Row>)]
    pub rows: Rows,
    /// The whole range: one row, or one per group value ordered by codes started.
    pub totals: Vec<Row>,
}

impl Conversion {
    /// About the bytes of its JSON: a row takes some 400.
    pub fn size_hint(&self) -> usize {
        (self.rows.len() + self.totals.len()) * 420 + 256
    }

    /// Writes its JSON into `out`: what `serde_json` writes of it, with the rows a
    /// rollup holds copied as they were written.
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(b"{\"from\":");
        serde_json::to_writer(&mut *out, &self.from)?;
        out.extend_from_slice(b",\"to\":");
        serde_json::to_writer(&mut *out, &self.to)?;
        out.extend_from_slice(b",\"interval\":");
        serde_json::to_writer(&mut *out, &self.interval)?;
        if let Some(dim) = self.group_by {
            out.extend_from_slice(b",\"group_by\":");
            serde_json::to_writer(&mut *out, &dim)?;
        }
        out.extend_from_slice(b",\"rows\":[");
        for (at, part) in self.rows.parts.iter().enumerate() {
            if at > 0 {
                out.push(b',');
            }
            match part {
                RowsPart::Made(row) => serde_json::to_writer(&mut *out, row)?,
                RowsPart::Written { rows, .. } => out.extend_from_slice(rows),
            }
        }
        out.extend_from_slice(b"],\"totals\":");
        serde_json::to_writer(&mut *out, &self.totals)?;
        out.push(b'}');
        Ok(())
    }
}

/// An answer's rows: rows made for it, and settled days' rows as their rollup wrote
/// them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    parts: Vec<RowsPart>,
    len: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum RowsPart {
    Made(Row),
    /// `count` rows' JSON, comma-separated (never empty).
    Written {
        rows: Vec<u8>,
        count: usize,
    },
}

impl Rows {
    /// How many rows.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, row: Row) {
        self.parts.push(RowsPart::Made(row));
        self.len += 1;
    }

    fn push_written(&mut self, rows: Vec<u8>, count: usize) {
        if count > 0 {
            self.parts.push(RowsPart::Written { rows, count });
            self.len += count;
        }
    }

    /// Every row, the written ones read back.
    pub fn to_vec(&self) -> serde_json::Result<Vec<Row>> {
        let mut all = Vec::with_capacity(self.len);
        for part in &self.parts {
            match part {
                RowsPart::Made(row) => all.push(row.clone()),
                RowsPart::Written { rows, .. } => {
                    let mut list = Vec::with_capacity(rows.len() + 2);
                    list.push(b'[');
                    list.extend_from_slice(rows);
                    list.push(b']');
                    all.extend(serde_json::from_slice::<Vec<Row>>(&list)?);
                }
            }
        }
        Ok(all)
    }
}

impl Serialize for Rows {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_vec()
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Rows {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let rows = Vec::<Row>::deserialize(deserializer)?;
        Ok(Rows {
            len: rows.len(),
            parts: rows.into_iter().map(RowsPart::Made).collect(),
        })
    }
}

/// Query of `GET /v1/verifications`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    pub status: Option<String>,
    pub country: Option<String>,
    pub channel: Option<String>,
    pub provider: Option<String>,
    pub applicant_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// One verification in the log.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogEntry {
    pub verification_id: String,
    pub phone: String,
    pub applicant_id: Option<String>,
    /// `Approved`, `Declined`, `In Review` or `Not Finished`.
    #[schema(value_type = String)]
    pub status: ReportStatus,
    pub otp_verified: bool,
    #[schema(value_type = Option<String>)]
    pub channel: Option<Channel>,
    /// The provider of the latest code message.
    pub provider: Option<String>,
    pub country: Option<String>,
    pub line_type: String,
    pub carrier: Option<String>,
    pub sends: u32,
    pub risk_score: u8,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub verified_at: Option<DateTime<Utc>>,
}

/// One page of the log.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogPage {
    pub verifications: Vec<LogEntry>,
    /// Give it as `cursor` for the next page; absent on the last page. A page may hold
    /// fewer entries than asked (even none) and still have a next one: each page reads
    /// a bounded number of verifications.
    pub next_cursor: Option<String>,
}

/// The moment `text` names: RFC 3339, or a date (`2026-11-30`, its midnight UTC).
pub(crate) fn parse_time(text: &str, field: &str) -> Result<DateTime<Utc>, FlowError> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|at| at.and_utc())
        .ok_or_else(|| {
            FlowError::invalid(
                field,
                "must be an RFC 3339 time (2026-11-30T12:00:00Z) or a date (2026-11-30)",
            )
        })
}

/// The key bound of verifications begun at `at`: the time part of their ids (UUID
/// version 7, whose first 48 bits are the ms since the epoch, in hex).
pub(crate) fn id_bound(tenant_id: &str, at: DateTime<Utc>) -> Vec<u8> {
    let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0) & ((1 << 48) - 1);
    key(&[tenant_id, &format!("{:08x}-{:04x}", ms >> 16, ms & 0xffff)])
}

impl Engine {
    /// Counts `fact` for `tenant_id` at `at` under `groups`.
    /// The same fact moves the operator's metrics.
    pub fn tally(&self, tenant_id: &str, at: DateTime<Utc>, groups: Groups, fact: Fact) {
        let stage = match fact {
            Fact::Started => None,
            Fact::Sent { .. } => Some(CodeStage::Sent),
            Fact::Delivered { .. } => Some(CodeStage::Delivered),
            Fact::Failed => Some(CodeStage::Failed),
            Fact::Verified { .. } => Some(CodeStage::Verified),
            Fact::FraudBlocked { .. } => {
                self.metrics
                    .fraud_block(groups.country.as_deref().unwrap_or(""));
                None
            }
        };
        if let Some(stage) = stage {
            self.metrics.code(
                stage,
                groups.channel.as_deref().unwrap_or(""),
                groups.provider.as_deref().unwrap_or(""),
                groups.country.as_deref().unwrap_or(""),
            );
        }
        let hour = Interval::Hour.floor(at);
        let ledger = &self.replica.analytics;
        let piled = {
            let mut pending = ledger.pending.lock();
            pending
                .entry((tenant_id.to_owned(), hour, groups))
                .or_default()
                .count(fact);
            pending.len() >= PENDING_SOON
        };
        if piled {
            ledger.soon.notify_one();
        }
    }

    /// Counts `fact` about `verification`, under the groups of its first code message.
    pub(crate) fn tally_verification(&self, verification: &Verification, fact: Fact) {
        let at = self.clock.now();
        let groups = groups_of(verification, verification.sent.first());
        self.tally(&verification.tenant_id, at, groups, fact);
    }

    /// Merges this replica's counts into the stored tallies: each into its hour and
    /// its day, under every grouping, for the tenant and for the host; and its rule
    /// statistics (see `rules/stats.rs`).
    pub fn flush_analytics(&self) -> Result<(), StoreError> {
        let rules = self.flush_rule_stats(None);
        self.flush_counts(None)?;
        rules
    }

    /// Merges this replica's counts of `tenant` only (all of them for `None`, with
    /// those an earlier flush could not merge): a tenant's query brings forward the
    /// merging of its own counts, never the whole replica's.
    fn flush_counts(&self, tenant: Option<&str>) -> Result<(), StoreError> {
        let ledger = &self.replica.analytics;
        let _one_at_a_time = ledger.flush.lock();
        let (drained, mut work) = match tenant {
            None => (
                std::mem::take(&mut *ledger.pending.lock()),
                std::mem::take(&mut *ledger.unmerged.lock()),
            ),
            Some(tenant) => {
                let mut pending = ledger.pending.lock();
                let own: Vec<_> = pending
                    .keys()
                    .filter(|(owner, _, _)| owner == tenant)
                    .cloned()
                    .collect();
                let drained = own
                    .into_iter()
                    .filter_map(|key| pending.remove_entry(&key))
                    .collect();
                (drained, BTreeMap::new())
            }
        };
        for ((tenant_id, hour, groups), tally) in drained {
            for owner in [tenant_id.as_str(), HOST] {
                for interval in [Interval::Hour, Interval::Day] {
                    let start = interval.floor(hour);
                    for dim in Dim::EVERY {
                        let key = tally_key(owner, interval, dim, start, &groups.value(dim));
                        work.entry(key).or_default().merge(&tally);
                    }
                }
            }
        }
        let mut failed = None;
        let mut left = BTreeMap::new();
        let today = Interval::Day.floor(self.clock.now());
        for (key, tally) in work {
            if failed.is_some() {
                left.insert(key, tally);
                continue;
            }
            if let Err(err) = self.merge_tally(&key, &tally) {
                failed = Some(err);
                left.insert(key, tally);
                continue;
            }
            // A count merged into a day that is over: the day's rollup, if it was
            // rolled already (or is being rolled), no longer holds every count.
            if let Some((rollup, day)) = rollup_of_tally_key(&key) {
                if day < today {
                    if let Err(err) = self.db.remove(Tree::Analytics, &rollup) {
                        failed = Some(err);
                    }
                }
            }
        }
        if !left.is_empty() {
            let mut unmerged = ledger.unmerged.lock();
            for (key, tally) in left {
                unmerged.entry(key).or_default().merge(&tally);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Adds `tally` to the one stored under `key` (a compare-and-swap, retried while
    /// another replica merges into the same key). A stored value that is not a tally
    /// is replaced.
    fn merge_tally(&self, key: &[u8], tally: &Tally) -> Result<(), StoreError> {
        loop {
            let stored = self.db.get_raw(Tree::Analytics, key)?;
            let mut merged = stored
                .as_deref()
                .and_then(Tally::decode)
                .unwrap_or_default();
            merged.merge(tally);
            let swapped = self.db.compare_and_swap_raw(
                Tree::Analytics,
                key,
                stored.as_deref(),
                Some(&merged.encode()),
            )?;
            if swapped {
                return Ok(());
            }
        }
    }

    /// Merges the counts every second (sooner when they pile up) until `stop`, and
    /// once more then.
    pub async fn run_analytics(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut rolled_at: Option<tokio::time::Instant> = None;
        loop {
            let stopping = tokio::select! {
                _ = stop.changed() => true,
                () = tokio::time::sleep(FLUSH_INTERVAL) => *stop.borrow(),
                () = self.replica.analytics.soon.notified() => *stop.borrow(),
            };
            let engine = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || engine.flush_analytics()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!("analytics not merged (kept for later): {err}"),
                Err(err) => tracing::error!("analytics not merged: {err}"),
            }
            if !stopping && rolled_at.is_none_or(|at| at.elapsed() >= ROLL_INTERVAL) {
                rolled_at = Some(tokio::time::Instant::now());
                let engine = Arc::clone(&self);
                match tokio::task::spawn_blocking(move || engine.roll_every_owner()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => tracing::error!("analytics not rolled up: {err}"),
                    Err(err) => tracing::error!("analytics not rolled up: {err}"),
                }
            }
            if stopping {
                return;
            }
        }
    }

    /// The conversion analytics of `owner` (a tenant, or [`HOST`]) for `query`.
    pub fn conversion(
        &self,
        owner: &str,
        query: &ConversionQuery,
    ) -> Result<Conversion, FlowError> {
        let interval = match query.interval.as_deref() {
            None | Some("day") => Interval::Day,
            Some("hour") => Interval::Hour,
            Some(_) => return Err(FlowError::invalid("interval", "must be hour or day")),
        };
        let group_by = match query.group_by.as_deref() {
            None => None,
            Some(name) => Some(Dim::parse(name).ok_or_else(|| {
                FlowError::invalid(
                    "group_by",
                    "must be one of country, carrier, line_type, channel, provider, template, locale",
                )
            })?),
        };
        let now = self.clock.now();
        let to = match query.to.as_deref() {
            Some(text) => parse_time(text, "to")?,
            None => now,
        };
        let from = match query.from.as_deref() {
            Some(text) => parse_time(text, "from")?,
            None => to - Duration::days(7),
        };
        if from >= to {
            return Err(FlowError::invalid("from", "must be before `to`"));
        }
        let longest = match interval {
            Interval::Hour => MAX_HOURLY_DAYS,
            Interval::Day => MAX_DAILY_DAYS,
        };
        if to - from > Duration::days(longest) {
            return Err(FlowError::invalid(
                "to",
                format!("the range may span at most {longest} days at this interval"),
            ));
        }
        // Counts of this replica's last second are in the answer (the operator's view
        // takes every tenant's).
        self.flush_counts((owner != HOST).then_some(owner))?;
        let start = interval.floor(from);
        let mut end = interval.floor(to);
        if end < to {
            end = interval.next(end);
        }
        let dim = group_by.unwrap_or(Dim::All);
        // Settled days of a grouping are read from their rollups, the other buckets
        // from their tallies.
        let mut rollups = if interval == Interval::Day && dim != Dim::All {
            self.read_rollups(owner, dim, start, end)?
        } else {
            BTreeMap::new()
        };
        let mut tallies = Vec::new();
        let mut uncovered: Option<DateTime<Utc>> = None;
        for day in rollups.keys() {
            let from = uncovered.take().unwrap_or(start);
            if from < *day {
                tallies.extend(self.read_tallies(owner, interval, dim, from, *day)?);
            }
            uncovered = Some(interval.next(*day));
        }
        let from = uncovered.unwrap_or(start);
        if from < end {
            tallies.extend(self.read_tallies(owner, interval, dim, from, end)?);
        }
        let group = |value: &str| group_by.map(|_| (!value.is_empty()).then(|| value.to_owned()));
        let mut rows = Rows::default();
        let mut totals: HashMap<&str, Tally> = HashMap::new();
        fn add<'a>(value: &'a str, tally: &Tally, totals: &mut HashMap<&'a str, Tally>) {
            match totals.get_mut(value) {
                Some(total) => total.merge(tally),
                None => {
                    totals.insert(value, tally.clone());
                }
            }
        }
        if group_by.is_none() {
            // Every bucket, counted or not.
            let mut by_bucket: HashMap<DateTime<Utc>, Tally> = HashMap::new();
            for (bucket, _, tally) in &tallies {
                by_bucket.entry(*bucket).or_default().merge(tally);
            }
            let mut bucket = start;
            while bucket < end {
                let next = interval.next(bucket);
                let tally = by_bucket.remove(&bucket).unwrap_or_default();
                totals.entry("").or_default().merge(&tally);
                rows.push(Row::new(bucket, next, None, &tally));
                bucket = next;
            }
        } else {
            // Both in time order: the tallies' buckets fall between the rollups' days.
            let mut tallies = tallies.iter().peekable();
            for (day, rollup) in &mut rollups {
                while let Some((bucket, value, tally)) = tallies.next_if(|(at, ..)| at < day) {
                    add(value, tally, &mut totals);
                    rows.push(Row::new(
                        *bucket,
                        interval.next(*bucket),
                        group(value),
                        tally,
                    ));
                }
                let Rollup {
                    groups,
                    rows: written,
                    ..
                } = rollup;
                for (value, tally) in groups.iter() {
                    add(value, tally, &mut totals);
                }
                rows.push_written(std::mem::take(written), groups.len());
            }
            for (bucket, value, tally) in tallies {
                add(value, tally, &mut totals);
                rows.push(Row::new(
                    *bucket,
                    interval.next(*bucket),
                    group(value),
                    tally,
                ));
            }
        }
        let mut totals: Vec<Row> = totals
            .iter()
            .map(|(value, tally)| Row::new(start, end, group(value), tally))
            .collect();
        if totals.is_empty() {
            totals.push(Row::new(start, end, None, &Tally::default()));
        }
        totals.sort_by(|a, b| {
            b.started
                .cmp(&a.started)
                .then(b.sent.cmp(&a.sent))
                .then_with(|| a.group.cmp(&b.group))
        });
        Ok(Conversion {
            from: start,
            to: end,
            interval,
            group_by,
            rows,
            totals,
        })
    }

    /// The rollups of `owner`'s settled days in `start..end` for `dim` whose rows are
    /// of this version, by day.
    fn read_rollups(
        &self,
        owner: &str,
        dim: Dim,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<BTreeMap<DateTime<Utc>, Rollup>, FlowError> {
        let (low, high) = rollup_range(owner, dim, start, end);
        let page = self.db.scan_range_raw(
            Tree::Analytics,
            &low,
            &high,
            usize::try_from(MAX_DAILY_DAYS).unwrap_or(400) + 1,
            false,
        )?;
        Ok(page
            .into_iter()
            .filter_map(|(key, bytes)| {
                let day = parse_rollup_key(&key)?;
                match RollupRecord::decode(&bytes)? {
                    RollupRecord::Done(rollup) if rollup.format == ROWS_FORMAT => {
                        Some((day, rollup))
                    }
                    _ => None,
                }
            })
            .collect())
    }

    /// Rolls the settled days of the host's and every tenant's analytics, at most
    /// [`ROLL_DAYS`] days of each; how many days it rolled.
    pub fn roll_every_owner(&self) -> Result<usize, StoreError> {
        let mut rolled = self.roll_analytics(HOST, ROLL_DAYS)?;
        let mut cursor: Vec<u8> = Vec::new();
        loop {
            let page = self.db.scan_from_raw(Tree::Tenants, &cursor, 500)?;
            let Some((last, _)) = page.last() else {
                return Ok(rolled);
            };
            cursor = last.clone();
            cursor.push(0);
            for (tenant, _) in &page {
                if let Ok(tenant) = std::str::from_utf8(tenant) {
                    rolled += self.roll_analytics(tenant, ROLL_DAYS)?;
                }
            }
            if page.len() < 500 {
                return Ok(rolled);
            }
        }
    }

    /// Rolls `owner`'s settled days into one record per day and grouping, from the
    /// day after the last one rolled (the first day with tallies, the first time), at
    /// most `limit` days; how many it rolled. Days are rolled once: a count merged
    /// into a day afterwards (a store that was down for an hour) removes the day's
    /// rollups, and the day is read from its tallies from then on.
    pub fn roll_analytics(&self, owner: &str, limit: usize) -> Result<usize, StoreError> {
        let mark = key(&["analytics_rolled", owner]);
        let now = self.clock.now();
        let settled = Interval::Day.floor(now - Duration::hours(SETTLE_HOURS));
        let next: Option<String> = self.db.get(Tree::Meta, &mark)?;
        let mut day = match next.as_deref().and_then(|text| text.parse().ok()) {
            Some(day) => day,
            None => {
                // The first day with tallies.
                let prefix = format!("{owner}/d/all/").into_bytes();
                let first = self.db.scan_raw(Tree::Analytics, &prefix, 1)?;
                match first
                    .first()
                    .and_then(|(key, _)| parse_tally_key(Interval::Day, key))
                {
                    Some((day, _)) => day,
                    None => return Ok(0),
                }
            }
        };
        let mut rolled = 0;
        while day < settled && rolled < limit {
            for dim in Dim::EVERY.into_iter().filter(|dim| *dim != Dim::All) {
                self.roll_day(owner, dim, day)?;
            }
            day = Interval::Day.next(day);
            rolled += 1;
            self.db.put(Tree::Meta, &mark, &day.to_rfc3339())?;
        }
        Ok(rolled)
    }

    /// Rolls `owner`'s tallies of `dim` for the day starting at `day` into its rollup.
    /// The rollup key holds a building mark while the tallies are read, and the rollup
    /// replaces only that mark: a merge into the day meanwhile removes the mark, and
    /// the day stays read from its tallies.
    fn roll_day(&self, owner: &str, dim: Dim, day: DateTime<Utc>) -> Result<(), StoreError> {
        let key = rollup_key(owner, dim, day);
        let now = self.clock.now().timestamp_millis();
        let building = RollupRecord::Building(now).encode();
        let stored = self.db.get_raw(Tree::Analytics, &key)?;
        match stored.as_deref().and_then(RollupRecord::decode) {
            Some(RollupRecord::Done(rollup)) if rollup.format == ROWS_FORMAT => return Ok(()),
            // A mark left by a replica that died while rolling, or an older format.
            _ => {
                if !self.db.compare_and_swap_raw(
                    Tree::Analytics,
                    &key,
                    stored.as_deref(),
                    Some(&building),
                )? {
                    return Ok(());
                }
            }
        }
        let mut groups = Vec::new();
        self.scan_tallies(
            owner,
            Interval::Day,
            dim,
            day,
            Interval::Day.next(day),
            |_, value, tally| {
                groups.push((value, tally));
                true
            },
        )?;
        let rollup = RollupRecord::Done(Rollup::of(day, groups)).encode();
        self.db
            .compare_and_swap_raw(Tree::Analytics, &key, Some(&building), Some(&rollup))?;
        Ok(())
    }

    /// The stored tallies of `owner` for `dim` at `interval` in `start..end`: each
    /// bucket's start, the group's value and the tally. At most
    /// [`MAX_TALLIES_READ`]; past that the range is refused as too large.
    pub(crate) fn read_tallies(
        &self,
        owner: &str,
        interval: Interval,
        dim: Dim,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, String, Tally)>, FlowError> {
        let mut tallies: Vec<(DateTime<Utc>, String, Tally)> = Vec::new();
        let complete =
            self.scan_tallies(owner, interval, dim, start, end, |bucket, value, tally| {
                tallies.push((bucket, value, tally));
                tallies.len() <= MAX_TALLIES_READ
            })?;
        if !complete {
            return Err(FlowError::invalid(
                "to",
                "too many groups in this range; ask for a shorter one or a daily interval",
            ));
        }
        Ok(tallies)
    }

    /// Hands each stored tally of `owner` for `dim` at `interval` in `start..end` to
    /// `each` in key order (the bucket's start, the group's value, the tally) until it
    /// answers `false`; whether every tally was handed.
    fn scan_tallies(
        &self,
        owner: &str,
        interval: Interval,
        dim: Dim,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        mut each: impl FnMut(DateTime<Utc>, String, Tally) -> bool,
    ) -> Result<bool, StoreError> {
        let (low, high) = tally_range(owner, interval, dim, start, end);
        let mut cursor = low;
        loop {
            let page = self
                .db
                .scan_range_raw(Tree::Analytics, &cursor, &high, 1_000, false)?;
            let Some((last, _)) = page.last() else {
                return Ok(true);
            };
            cursor = last.clone();
            cursor.push(0);
            let full = page.len() == 1_000;
            for (key, bytes) in page {
                let parsed = parse_tally_key(interval, &key).zip(Tally::decode(&bytes));
                if let Some(((bucket, value), tally)) = parsed {
                    if !each(bucket, value, tally) {
                        return Ok(false);
                    }
                }
            }
            if !full {
                return Ok(true);
            }
        }
    }

    /// One page of the tenant's verifications, newest first, filtered by `query`.
    pub fn verification_log(
        &self,
        tenant_id: &str,
        query: &LogQuery,
    ) -> Result<LogPage, FlowError> {
        let limit = query.limit.unwrap_or(50);
        if !(1..=MAX_LOG_PAGE).contains(&limit) {
            return Err(FlowError::invalid(
                "limit",
                format!("must be between 1 and {MAX_LOG_PAGE}"),
            ));
        }
        // The report's names, or the same in snake case.
        let status = match query.status.as_deref() {
            None => None,
            Some("Not Finished" | "not_finished" | "pending") => Some(ReportStatus::NotFinished),
            Some("Approved" | "approved") => Some(ReportStatus::Approved),
            Some("Declined" | "declined") => Some(ReportStatus::Declined),
            Some("In Review" | "in_review") => Some(ReportStatus::InReview),
            Some(_) => {
                return Err(FlowError::invalid(
                    "status",
                    "must be Approved, Declined, In Review or Not Finished (or approved, declined, in_review, not_finished)",
                ))
            }
        };
        let channel = match query.channel.as_deref() {
            None => None,
            Some(name) => Some(
                serde_json::from_value::<Channel>(serde_json::Value::String(name.to_owned()))
                    .map_err(|_| {
                        FlowError::invalid("channel", "not a channel this host sends on")
                    })?,
            ),
        };
        let country = query.country.as_deref().map(str::to_ascii_uppercase);
        let from = query
            .from
            .as_deref()
            .map(|t| parse_time(t, "from"))
            .transpose()?;
        let to = query
            .to
            .as_deref()
            .map(|t| parse_time(t, "to"))
            .transpose()?;
        let prefix = key(&[tenant_id, ""]);
        let low = from.map_or_else(|| prefix.clone(), |at| id_bound(tenant_id, at));
        let mut high = match &query.cursor {
            Some(cursor) => {
                let valid =
                    cursor.len() == 36 && cursor.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
                if !valid {
                    return Err(FlowError::invalid("cursor", "not a cursor this log gave"));
                }
                key(&[tenant_id, cursor])
            }
            None => {
                let mut end = prefix.clone();
                end.push(0xff);
                end
            }
        };
        if let Some(to) = to {
            // Ids of verifications begun up to a millisecond after `to`.
            high = high.min(id_bound(tenant_id, to + Duration::milliseconds(1)));
        }
        let mut entries = Vec::new();
        let mut read = 0;
        let mut next_cursor = None;
        while read < MAX_LOG_SCAN {
            let chunk = (MAX_LOG_SCAN - read).min(200);
            let page: Vec<(Vec<u8>, Verification)> =
                self.db
                    .scan_range(Tree::Verifications, &low, &high, chunk, true)?;
            let Some((last, _)) = page.last() else {
                next_cursor = None;
                break;
            };
            high = last.clone();
            read += page.len();
            let exhausted = page.len() < chunk;
            for (_, verification) in page {
                let wanted = status.is_none_or(|status| verification.status == status)
                    && channel.is_none_or(|channel| verification.channel == Some(channel))
                    && country.as_deref().is_none_or(|country| {
                        verification.phone.region.as_deref() == Some(country)
                    })
                    && query.provider.as_deref().is_none_or(|provider| {
                        verification
                            .sent
                            .iter()
                            .any(|sent| sent.provider == provider)
                    })
                    && query.applicant_id.as_deref().is_none_or(|applicant| {
                        verification.applicant_id.as_deref() == Some(applicant)
                    })
                    && from.is_none_or(|from| verification.created_at >= from)
                    && to.is_none_or(|to| verification.created_at <= to);
                if wanted {
                    entries.push(log_entry(verification));
                    if entries.len() == limit {
                        break;
                    }
                }
            }
            next_cursor = std::str::from_utf8(&high)
                .ok()
                .and_then(|text| text.rsplit('/').next())
                .map(str::to_owned);
            if exhausted && entries.len() < limit {
                next_cursor = None;
                break;
            }
            if entries.len() == limit {
                next_cursor = entries.last().map(|entry| entry.verification_id.clone());
                break;
            }
        }
        Ok(LogPage {
            verifications: entries,
            next_cursor,
        })
    }
}

fn log_entry(verification: Verification) -> LogEntry {
    LogEntry {
        provider: verification.sent.last().map(|sent| sent.provider.clone()),
        verification_id: verification.id,
        phone: verification.phone.e164,
        applicant_id: verification.applicant_id,
        status: verification.status,
        otp_verified: verification.otp_verified,
        channel: verification.channel,
        country: verification.phone.region,
        line_type: verification.phone.line_type.as_str().to_owned(),
        carrier: verification.phone.carrier_name,
        sends: verification.sends,
        risk_score: verification.risk.risk_score,
        created_at: verification.created_at,
        updated_at: verification.updated_at,
        verified_at: verification.verified_at,
    }
}
