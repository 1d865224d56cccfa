//! Conversion analytics as logic only: the facts a verification's life produces (started,
//! sent, delivered, verified, blocked), the tallies kept per hour and per day for each
//! grouping, their keys, and the rows an analytics query answers with. `flows/analytics.rs`
//! records the facts, merges the tallies into the store and reads them back; nothing here
//! touches the store or the clock.

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// The tenant id the host-wide tallies (the operator's view) are kept under.
pub const HOST: &str = "*";

/// The longest a group value is kept (longer ones are cut on a character boundary).
pub const MAX_VALUE_LEN: usize = 64;

/// What the rows of a query are grouped by.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Dim {
    /// No grouping: one row per interval.
    All,
    Country,
    Carrier,
    LineType,
    Channel,
    Provider,
    Template,
    Locale,
}

impl Dim {
    /// Every grouping; a fact is tallied under each.
    pub const EVERY: [Dim; 8] = [
        Dim::All,
        Dim::Country,
        Dim::Carrier,
        Dim::LineType,
        Dim::Channel,
        Dim::Provider,
        Dim::Template,
        Dim::Locale,
    ];

    /// The wire name, as `group_by` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Dim::All => "all",
            Dim::Country => "country",
            Dim::Carrier => "carrier",
            Dim::LineType => "line_type",
            Dim::Channel => "channel",
            Dim::Provider => "provider",
            Dim::Template => "template",
            Dim::Locale => "locale",
        }
    }

    /// The grouping named `name`.
    pub fn parse(name: &str) -> Option<Dim> {
        Dim::EVERY
            .into_iter()
            .find(|dim| dim.as_str() == name && *dim != Dim::All)
    }
}

/// The size of a time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    Hour,
    Day,
}

impl Interval {
    /// The key letter of the interval's tallies.
    fn letter(self) -> &'static str {
        match self {
            Interval::Hour => "h",
            Interval::Day => "d",
        }
    }

    /// The start of the bucket `at` falls in.
    pub fn floor(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let hour = Utc
            .with_ymd_and_hms(at.year(), at.month(), at.day(), at.hour(), 0, 0)
            .single()
            .unwrap_or(at);
        match self {
            Interval::Hour => hour,
            Interval::Day => hour - chrono::Duration::hours(i64::from(at.hour())),
        }
    }

    /// The bucket after the one starting at `start`.
    pub fn next(self, start: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Interval::Hour => start + chrono::Duration::hours(1),
            Interval::Day => start + chrono::Duration::days(1),
        }
    }

    /// The bucket's name in keys: `YYYYMMDDHH` or `YYYYMMDD`, so that keys sort by time.
    fn stamp(self, start: DateTime<Utc>) -> String {
        match self {
            Interval::Hour => start.format("%Y%m%d%H").to_string(),
            Interval::Day => start.format("%Y%m%d").to_string(),
        }
    }

    /// The bucket start a key's stamp names.
    fn parse_stamp(self, stamp: &str) -> Option<DateTime<Utc>> {
        let field = |range: std::ops::Range<usize>| stamp.get(range)?.parse::<u32>().ok();
        let hour = match self {
            Interval::Hour if stamp.len() == 10 => field(8..10)?,
            Interval::Day if stamp.len() == 8 => 0,
            _ => return None,
        };
        let year = i32::try_from(field(0..4)?).ok()?;
        Utc.with_ymd_and_hms(year, field(4..6)?, field(6..8)?, hour, 0, 0)
            .single()
    }
}

/// What is known of a verification or a message that analytics groups by. Absent
/// values group as `null`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Groups {
    pub country: Option<String>,
    pub carrier: Option<String>,
    pub line_type: Option<String>,
    pub channel: Option<String>,
    pub provider: Option<String>,
    pub template: Option<String>,
    pub locale: Option<String>,
}

impl Groups {
    /// The value this grouping takes, cut to [`MAX_VALUE_LEN`]; `""` when absent.
    pub fn value(&self, dim: Dim) -> String {
        let value = match dim {
            Dim::All => None,
            Dim::Country => self.country.as_deref(),
            Dim::Carrier => self.carrier.as_deref(),
            Dim::LineType => self.line_type.as_deref(),
            Dim::Channel => self.channel.as_deref(),
            Dim::Provider => self.provider.as_deref(),
            Dim::Template => self.template.as_deref(),
            Dim::Locale => self.locale.as_deref(),
        };
        let value = value.unwrap_or("");
        match value.char_indices().nth(MAX_VALUE_LEN) {
            Some((cut, _)) => value[..cut].to_owned(),
            None => value.to_owned(),
        }
    }
}

/// One thing that happened, as analytics counts it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fact {
    /// A verification started by a send (its groups are its first code's).
    Started,
    /// A code message went out; `resend` when it was not the verification's first;
    /// `cost` in millionths of the provider's unit.
    Sent { resend: bool, cost: i64 },
    /// A provider reported the message delivered, `latency_ms` after it was sent
    /// (when the send time is known).
    Delivered { latency_ms: Option<i64> },
    /// A provider reported the message failed or expired.
    Failed,
    /// The verification's code was verified, `after_ms` after its first code went out.
    Verified { after_ms: i64 },
    /// The SMS-pumping detector declined a send that would have cost `saved`
    /// (millionths, the estimate spend caps reserve).
    FraudBlocked { saved: i64 },
}

/// Log-spaced latency buckets: bucket `i` holds values up to about `1.1^i` ms, so a
/// percentile read from them is within 5% of the true one. The counted buckets are kept
/// in order, as (bucket, count) pairs: a query merges thousands of these.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Histogram(Vec<(u16, u64)>);

/// The growth between buckets.
const GROWTH: f64 = 1.1;

impl Histogram {
    /// Counts `ms` (negative values count as 0).
    pub fn record(&mut self, ms: i64) {
        let bucket = Self::bucket(ms);
        match self.0.binary_search_by_key(&bucket, |(b, _)| *b) {
            Ok(at) => self.0[at].1 += 1,
            Err(at) => self.0.insert(at, (bucket, 1)),
        }
    }

    fn bucket(ms: i64) -> u16 {
        let ms = ms.max(0) as f64;
        // 0 ms is bucket 0; then ceil(log_1.1(ms + 1)), at most ~230 for a day.
        let index = ((ms + 1.0).ln() / GROWTH.ln()).ceil();
        index.clamp(0.0, f64::from(u16::MAX)) as u16
    }

    /// Adds `other`'s counts (both in bucket order, merged in one pass).
    pub fn merge(&mut self, other: &Histogram) {
        if other.0.is_empty() {
            return;
        }
        if self.0.is_empty() {
            self.0.clone_from(&other.0);
            return;
        }
        // Most merges add to buckets already counted: done in place, no allocation.
        let mut at = 0;
        let in_place = other.0.iter().all(|(bucket, _)| {
            while at < self.0.len() && self.0[at].0 < *bucket {
                at += 1;
            }
            at < self.0.len() && self.0[at].0 == *bucket
        });
        if in_place {
            let mut at = 0;
            for (bucket, count) in &other.0 {
                while self.0[at].0 < *bucket {
                    at += 1;
                }
                self.0[at].1 += count;
            }
            return;
        }
        let mut merged = Vec::with_capacity(self.0.len().max(other.0.len()) + 4);
        let (mut mine, mut theirs) = (self.0.iter().peekable(), other.0.iter().peekable());
        loop {
            match (mine.peek(), theirs.peek()) {
                (Some(a), Some(b)) if a.0 == b.0 => {
                    merged.push((a.0, a.1 + b.1));
                    mine.next();
                    theirs.next();
                }
                (Some(a), Some(b)) if a.0 < b.0 => {
                    merged.push(**a);
                    mine.next();
                }
                (_, Some(b)) => {
                    merged.push(**b);
                    theirs.next();
                }
                (Some(a), None) => {
                    merged.push(**a);
                    mine.next();
                }
                (None, None) => break,
            }
        }
        self.0 = merged;
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|(_, count)| count).sum()
    }

    /// The `q` quantile (0..=1) in ms: the middle of the bucket it falls in; `None`
    /// when nothing was counted.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, count) in &self.0 {
            seen += count;
            if seen >= rank {
                if *bucket == 0 {
                    return Some(0.0);
                }
                let upper = GROWTH.powi(i32::from(*bucket)) - 1.0;
                let lower = GROWTH.powi(i32::from(*bucket) - 1) - 1.0;
                return Some(((lower + upper) / 2.0 * 10.0).round() / 10.0);
            }
        }
        None
    }
}

/// What is tallied per bucket and group. Stored in postcard's compact binary form
/// ([`Tally::encode`]): a query decodes thousands of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub started: u64,
    pub sent: u64,
    pub resends: u64,
    pub delivered: u64,
    pub failed: u64,
    pub verified: u64,
    /// Millionths of the providers' unit.
    pub cost: i64,
    pub fraud_blocks: u64,
    /// Millionths: what the sends the detector declined would have cost.
    pub saved: i64,
    pub delivery_ms: Histogram,
    pub verify_ms: Histogram,
}

impl Tally {
    /// Counts `fact`.
    pub fn count(&mut self, fact: Fact) {
        match fact {
            Fact::Started => self.started += 1,
            Fact::Sent { resend, cost } => {
                self.sent += 1;
                self.resends += u64::from(resend);
                self.cost += cost;
            }
            Fact::Delivered { latency_ms } => {
                self.delivered += 1;
                if let Some(ms) = latency_ms {
                    self.delivery_ms.record(ms);
                }
            }
            Fact::Failed => self.failed += 1,
            Fact::Verified { after_ms } => {
                self.verified += 1;
                self.verify_ms.record(after_ms);
            }
            Fact::FraudBlocked { saved } => {
                self.fraud_blocks += 1;
                self.saved += saved;
            }
        }
    }

    /// Adds `other`.
    pub fn merge(&mut self, other: &Tally) {
        self.started += other.started;
        self.sent += other.sent;
        self.resends += other.resends;
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.verified += other.verified;
        self.cost += other.cost;
        self.fraud_blocks += other.fraud_blocks;
        self.saved += other.saved;
        self.delivery_ms.merge(&other.delivery_ms);
        self.verify_ms.merge(&other.verify_ms);
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        *self == Tally::default()
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain integers and maps into a vector cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// The tally `bytes` hold, if they are one.
    pub fn decode(bytes: &[u8]) -> Option<Tally> {
        postcard::from_bytes(bytes).ok()
    }
}

/// The key of the tally of `tenant` (or [`HOST`]) for `dim`'s `value` in the bucket of
/// `interval` starting at `start`. Keys of one tenant, interval and grouping sort by
/// time, so a query reads one range.
pub fn tally_key(
    tenant: &str,
    interval: Interval,
    dim: Dim,
    start: DateTime<Utc>,
    value: &str,
) -> Vec<u8> {
    format!(
        "{tenant}/{}/{}/{}/{value}",
        interval.letter(),
        dim.as_str(),
        interval.stamp(start)
    )
    .into_bytes()
}

/// The range of keys of `tenant`'s tallies of `dim` at `interval` from the bucket of
/// `from` up to, not including, the bucket of `to`.
pub fn tally_range(
    tenant: &str,
    interval: Interval,
    dim: Dim,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> (Vec<u8>, Vec<u8>) {
    let start = format!(
        "{tenant}/{}/{}/{}/",
        interval.letter(),
        dim.as_str(),
        interval.stamp(interval.floor(from))
    );
    let end = format!(
        "{tenant}/{}/{}/{}/",
        interval.letter(),
        dim.as_str(),
        interval.stamp(interval.floor(to))
    );
    (start.into_bytes(), end.into_bytes())
}

/// How long after a day ends its tallies are rolled into one record per grouping: by
/// then every replica has merged the day's counts (a replica keeps them a second).
pub const SETTLE_HOURS: i64 = 1;

/// The version of the rows a [`Rollup`] holds as JSON; a rollup of another version is
/// read from its tallies instead. Raise it whenever [`Row`] or its JSON changes.
pub const ROWS_FORMAT: u32 = 1;

/// The key of the rollup of `owner`'s day starting at `start` for `dim`. Rollups sort
/// by time within an owner and grouping, apart from the tallies (`D`, not `d`).
pub fn rollup_key(owner: &str, dim: Dim, start: DateTime<Utc>) -> Vec<u8> {
    format!(
        "{owner}/D/{}/{}",
        dim.as_str(),
        Interval::Day.stamp(Interval::Day.floor(start))
    )
    .into_bytes()
}

/// The range of keys of `owner`'s rollups for `dim` of the days `start..end`.
pub fn rollup_range(
    owner: &str,
    dim: Dim,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> (Vec<u8>, Vec<u8>) {
    (rollup_key(owner, dim, start), rollup_key(owner, dim, end))
}

/// The rollup key and day of a daily tally key of a grouping; `None` for other keys.
pub fn rollup_of_tally_key(key: &[u8]) -> Option<(Vec<u8>, DateTime<Utc>)> {
    let text = std::str::from_utf8(key).ok()?;
    let mut parts = text.splitn(5, '/');
    let (owner, letter, dim) = (parts.next()?, parts.next()?, parts.next()?);
    if letter != Interval::Day.letter() || dim == Dim::All.as_str() {
        return None;
    }
    let stamp = parts.next()?;
    let day = Interval::Day.parse_stamp(stamp)?;
    Some((format!("{owner}/D/{dim}/{stamp}").into_bytes(), day))
}

/// The day a rollup key names.
pub fn parse_rollup_key(key: &[u8]) -> Option<DateTime<Utc>> {
    let text = std::str::from_utf8(key).ok()?;
    Interval::Day.parse_stamp(text.rsplit('/').next()?)
}

/// A settled day's tallies of one grouping in one record: each group's tally, in the
/// order of the tallies' keys, and the rows they make, as the answer's JSON writes
/// them (comma-separated), so a query over a year reads and writes a record a day
/// instead of a tally per group and day.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollup {
    /// [`ROWS_FORMAT`] when `rows` was written.
    pub format: u32,
    pub groups: Vec<(String, Tally)>,
    pub rows: Vec<u8>,
}

/// What is stored under a rollup key.
#[derive(Debug, Clone, PartialEq)]
pub enum RollupRecord {
    /// A replica is rolling the day since this time (ms): the tallies are the truth.
    Building(i64),
    Done(Rollup),
}

impl RollupRecord {
    /// The stored form: `B` and the time, or `R`, the rows' format and length, the
    /// rows, and the groups in postcard's form.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            RollupRecord::Building(since) => {
                let mut out = vec![b'B'];
                out.extend_from_slice(&since.to_be_bytes());
                out
            }
            RollupRecord::Done(rollup) => {
                // Plain integers, strings and vectors encode without fail.
                let groups = postcard::to_allocvec(&rollup.groups).unwrap_or_default();
                let mut out = Vec::with_capacity(9 + rollup.rows.len() + groups.len());
                out.push(b'R');
                out.extend_from_slice(&rollup.format.to_be_bytes());
                let len = u32::try_from(rollup.rows.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&rollup.rows);
                out.extend_from_slice(&groups);
                out
            }
        }
    }

    /// The record `bytes` hold, if they are one.
    pub fn decode(bytes: &[u8]) -> Option<RollupRecord> {
        let (mark, rest) = bytes.split_first()?;
        match mark {
            b'B' => Some(RollupRecord::Building(i64::from_be_bytes(
                rest.try_into().ok()?,
            ))),
            b'R' => {
                let format = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
                let len = u32::from_be_bytes(rest.get(4..8)?.try_into().ok()?) as usize;
                let rows = rest.get(8..8 + len)?.to_vec();
                let groups = postcard::from_bytes(rest.get(8 + len..)?).ok()?;
                Some(RollupRecord::Done(Rollup {
                    format,
                    groups,
                    rows,
                }))
            }
            _ => None,
        }
    }
}

impl Rollup {
    /// The rollup of the day starting at `start` from its tallies (in key order), its
    /// rows written as a query writes them.
    pub fn of(start: DateTime<Utc>, groups: Vec<(String, Tally)>) -> Rollup {
        let end = Interval::Day.next(start);
        let mut rows = Vec::with_capacity(groups.len() * 420);
        for (at, (value, tally)) in groups.iter().enumerate() {
            if at > 0 {
                rows.push(b',');
            }
            let group = Some((!value.is_empty()).then(|| value.clone()));
            // A row of numbers and strings always serialises.
            let _ = serde_json::to_writer(&mut rows, &Row::new(start, end, group, tally));
        }
        Rollup {
            format: ROWS_FORMAT,
            groups,
            rows,
        }
    }
}

/// The bucket start and group value a tally key names.
pub fn parse_tally_key(interval: Interval, key: &[u8]) -> Option<(DateTime<Utc>, String)> {
    let text = std::str::from_utf8(key).ok()?;
    let mut parts = text.splitn(5, '/');
    let (_tenant, _letter, _dim) = (parts.next()?, parts.next()?, parts.next()?);
    let start = interval.parse_stamp(parts.next()?)?;
    Some((start, parts.next()?.to_owned()))
}

/// One row of an analytics answer: a bucket (and a group's value) with its counts and
/// the figures derived from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Row {
    #[serde(serialize_with = "whole_seconds")]
    pub start: DateTime<Utc>,
    #[serde(serialize_with = "whole_seconds")]
    pub end: DateTime<Utc>,
    /// The group's value (`null` when the facts did not have one); absent without
    /// `group_by`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub group: Option<Option<String>>,
    pub started: u64,
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    pub verified: u64,
    /// `verified / started`; `null` when nothing started.
    pub conversion_rate: Option<f64>,
    /// Codes sent after a verification's first, per verification started.
    pub resends_per_verification: Option<f64>,
    pub delivery_latency_p50_ms: Option<f64>,
    pub delivery_latency_p95_ms: Option<f64>,
    pub time_to_verify_p50_ms: Option<f64>,
    /// What the codes cost, in the providers' unit.
    pub cost: f64,
    pub fraud_blocks: u64,
    /// What the sends the SMS-pumping detector declined would have cost.
    pub estimated_savings: f64,
}

/// `at` as serde writes a `DateTime<Utc>` (RFC 3339, `Z`), formatted by hand when it
/// is a whole second of the years 0–9999, as a bucket's bounds always are: an answer
/// writes two per row, and chrono's general formatter cost a tenth of a large answer.
fn whole_seconds<S: serde::Serializer>(
    at: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use chrono::{Datelike, Timelike};
    let year = at.year();
    if !(0..=9999).contains(&year) || at.nanosecond() != 0 {
        return at.serialize(serializer);
    }
    let mut text = *b"0000-00-00T00:00:00Z";
    let mut put = |at: usize, value: u32, digits: usize| {
        let mut value = value;
        for place in (at..at + digits).rev() {
            text[place] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, year as u32, 4);
    put(5, at.month(), 2);
    put(8, at.day(), 2);
    put(11, at.hour(), 2);
    put(14, at.minute(), 2);
    put(17, at.second(), 2);
    serializer.serialize_str(std::str::from_utf8(&text).expect("ASCII digits"))
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| ((part as f64 / whole as f64) * 10_000.0).round() / 10_000.0)
}

fn money(micros: i64) -> f64 {
    (micros as f64 / 1_000_000.0 * 10_000.0).round() / 10_000.0
}

impl Row {
    /// The row of `tally` for the bucket `start..end`.
    pub fn new(
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        group: Option<Option<String>>,
        tally: &Tally,
    ) -> Self {
        Self {
            start,
            end,
            group,
            started: tally.started,
            sent: tally.sent,
            delivered: tally.delivered,
            failed: tally.failed,
            verified: tally.verified,
            conversion_rate: ratio(tally.verified, tally.started),
            resends_per_verification: ratio(tally.resends, tally.started),
            delivery_latency_p50_ms: tally.delivery_ms.quantile(0.5),
            delivery_latency_p95_ms: tally.delivery_ms.quantile(0.95),
            time_to_verify_p50_ms: tally.verify_ms.quantile(0.5),
            cost: money(tally.cost),
            fraud_blocks: tally.fraud_blocks,
            estimated_savings: money(tally.saved),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("a value")
    }

    #[test]
    fn bucket_bounds_are_written_as_serde_writes_them() {
        for text in [
            "2026-11-30T15:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2026-11-30T15:42:07.123Z",
        ] {
            let at = at(text);
            let row = Row::new(at, at, None, &Tally::default());
            let json = serde_json::to_value(&row).expect("json");
            assert_eq!(
                json["start"],
                serde_json::to_value(at).expect("json"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_rollup_keeps_its_groups_and_rows_and_a_mark_its_time() {
        let day = at("2026-11-29T00:00:00Z");
        let mut tally = Tally::default();
        tally.count(Fact::Started);
        tally.count(Fact::Verified { after_ms: 12_000 });
        let rollup = Rollup::of(
            day,
            vec![(String::new(), tally.clone()), ("GB".into(), tally)],
        );
        let rows: Vec<serde_json::Value> =
            serde_json::from_slice(&[b"[", rollup.rows.as_slice(), b"]"].concat()).expect("rows");
        assert_eq!(rows.len(), 2);
        assert!(rows[0]["group"].is_null(), "{}", rows[0]);
        assert_eq!(rows[1]["group"], "GB");
        assert_eq!(rows[1]["end"], "2026-11-30T00:00:00Z");
        assert_eq!(rows[1]["verified"], 1);
        let done = RollupRecord::Done(rollup);
        assert_eq!(RollupRecord::decode(&done.encode()), Some(done));
        let mark = RollupRecord::Building(1_764_460_800_000);
        assert_eq!(RollupRecord::decode(&mark.encode()), Some(mark));
        assert_eq!(RollupRecord::decode(b"R\0\0"), None);
        assert_eq!(RollupRecord::decode(b""), None);
    }

    #[test]
    fn a_daily_tally_of_a_grouping_names_its_rollup() {
        let day = at("2026-11-29T00:00:00Z");
        let tally = tally_key("ten_a", Interval::Day, Dim::Carrier, day, "GB Carrier 1");
        assert_eq!(
            rollup_of_tally_key(&tally),
            Some((rollup_key("ten_a", Dim::Carrier, day), day))
        );
        assert_eq!(
            parse_rollup_key(&rollup_key("ten_a", Dim::Carrier, day)),
            Some(day)
        );
        let hourly = tally_key("ten_a", Interval::Hour, Dim::Carrier, day, "GB Carrier 1");
        assert_eq!(rollup_of_tally_key(&hourly), None);
        let all = tally_key("ten_a", Interval::Day, Dim::All, day, "");
        assert_eq!(rollup_of_tally_key(&all), None);
        // The rollups of a grouping sort apart from its tallies.
        let (low, high) = tally_range("ten_a", Interval::Day, Dim::Carrier, day, day);
        let rollup = rollup_key("ten_a", Dim::Carrier, day);
        assert!(!(low..=high).contains(&rollup));
    }

    #[test]
    fn buckets_floor_and_name_hours_and_days() {
        let t = at("2026-11-30T15:42:07Z");
        assert_eq!(Interval::Hour.floor(t), at("2026-11-30T15:00:00Z"));
        assert_eq!(Interval::Day.floor(t), at("2026-11-30T00:00:00Z"));
        let key = tally_key(
            "ten",
            Interval::Hour,
            Dim::Country,
            Interval::Hour.floor(t),
            "GB",
        );
        assert_eq!(key, b"ten/h/country/2026113015/GB");
        assert_eq!(
            parse_tally_key(Interval::Hour, &key),
            Some((at("2026-11-30T15:00:00Z"), "GB".to_owned()))
        );
        // A value with the separator in it is the key's last part, read whole.
        let key = tally_key(
            "ten",
            Interval::Day,
            Dim::Carrier,
            Interval::Day.floor(t),
            "A/B",
        );
        assert_eq!(
            parse_tally_key(Interval::Day, &key),
            Some((at("2026-11-30T00:00:00Z"), "A/B".to_owned()))
        );
        let (start, end) = tally_range(
            "ten",
            Interval::Day,
            Dim::All,
            at("2026-11-01T10:00:00Z"),
            at("2026-12-01T00:00:00Z"),
        );
        assert!(
            start.as_slice() < b"ten/d/all/20261101/".as_slice() || start == b"ten/d/all/20261101/"
        );
        assert!(b"ten/d/all/20261130/".as_slice() < end.as_slice());
        assert!(b"ten/d/all/20261201/".as_slice() >= end.as_slice());
    }

    #[test]
    fn quantiles_are_within_five_percent() {
        let mut histogram = Histogram::default();
        for ms in 1..=1000 {
            histogram.record(ms);
        }
        let p50 = histogram.quantile(0.5).expect("a value");
        let p95 = histogram.quantile(0.95).expect("a value");
        assert!((p50 - 500.0).abs() / 500.0 < 0.05, "{p50}");
        assert!((p95 - 950.0).abs() / 950.0 < 0.05, "{p95}");
        assert_eq!(Histogram::default().quantile(0.5), None);
        let mut zero = Histogram::default();
        zero.record(0);
        zero.record(-5);
        assert_eq!(zero.quantile(0.99), Some(0.0));
    }

    #[test]
    fn histograms_merge_bucket_by_bucket_in_order() {
        let mut one = Histogram::default();
        let mut two = Histogram::default();
        for ms in [0, 100, 100, 5_000] {
            one.record(ms);
        }
        for ms in [3, 100, 90_000] {
            two.record(ms);
        }
        let mut both = one.clone();
        both.merge(&two);
        assert_eq!(both.count(), 7);
        assert!(
            both.0.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "{both:?}"
        );
        let hundred = Histogram::bucket(100);
        assert_eq!(
            both.0.iter().find(|(b, _)| *b == hundred).map(|(_, n)| *n),
            Some(3)
        );
        let mut empty = Histogram::default();
        empty.merge(&both);
        assert_eq!(empty, both);
        both.merge(&Histogram::default());
        assert_eq!(empty, both);
    }

    #[test]
    fn tallies_merge_and_rows_derive_their_rates() {
        let mut one = Tally::default();
        one.count(Fact::Started);
        one.count(Fact::Sent {
            resend: false,
            cost: 50_000,
        });
        one.count(Fact::Delivered {
            latency_ms: Some(1200),
        });
        let mut two = Tally::default();
        two.count(Fact::Started);
        two.count(Fact::Sent {
            resend: false,
            cost: 50_000,
        });
        two.count(Fact::Sent {
            resend: true,
            cost: 50_000,
        });
        two.count(Fact::Verified { after_ms: 30_000 });
        two.count(Fact::FraudBlocked { saved: 70_000 });
        one.merge(&two);
        let row = Row::new(
            at("2026-11-30T00:00:00Z"),
            at("2026-12-01T00:00:00Z"),
            None,
            &one,
        );
        assert_eq!((row.started, row.sent, row.verified), (2, 3, 1));
        assert_eq!(row.conversion_rate, Some(0.5));
        assert_eq!(row.resends_per_verification, Some(0.5));
        assert_eq!(row.cost, 0.15);
        assert_eq!(row.estimated_savings, 0.07);
        assert_eq!(row.fraud_blocks, 1);
        assert!(row.delivery_latency_p50_ms.expect("a value") > 1100.0);
        assert_eq!(Tally::decode(&one.encode()), Some(one.clone()));
        assert!(one.encode().len() < 40, "{} bytes", one.encode().len());
        assert_eq!(Tally::decode(b"\xff\xff\xff"), None);
    }

    #[test]
    fn group_values_are_cut_and_names_parse() {
        let groups = Groups {
            carrier: Some("x".repeat(200)),
            ..Groups::default()
        };
        assert_eq!(groups.value(Dim::Carrier).len(), MAX_VALUE_LEN);
        assert_eq!(groups.value(Dim::Country), "");
        assert_eq!(Dim::parse("line_type"), Some(Dim::LineType));
        assert_eq!(Dim::parse("all"), None);
        assert_eq!(Dim::parse("nope"), None);
    }
}
