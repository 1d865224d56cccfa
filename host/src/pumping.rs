//! SMS-pumping detection as logic only: the detector's settings, the counts kept per
//! destination prefix (sends and conversions in time buckets, a decayed history, the
//! latest numbers), and the judgment of one send from them. `flows/pumping.rs` keeps
//! the counts, the blocks and the API; nothing here touches the store or the clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::phone::LineType;

/// Fine buckets per window.
pub const WINDOW_BUCKETS: i64 = 12;
/// The decayed history spans about this many buckets (24 windows: a day by default).
pub const HISTORY_BUCKETS: f64 = 288.0;
/// Latest numbers kept per prefix for the sequential-numbers signal.
pub const RECENT_NUMBERS: usize = 32;
/// Two numbers at most this far apart are neighbours.
pub const NEIGHBOUR_DISTANCE: u64 = 20;
/// Depths of the national number's leading digits a prefix is judged at, after the
/// country (depth 0).
pub const DEPTHS: [usize; 2] = [2, 4];
/// The longest a block lasts as it lengthens: 30 days.
pub const MAX_BLOCK_SECONDS: i64 = 30 * 24 * 3600;
/// Exempt prefixes a tenant may keep.
pub const MAX_EXEMPT_PREFIXES: usize = 100;

/// How the detector acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Counts nothing and blocks nothing.
    Off,
    /// Judges and records blocks (marked not enforced) and warnings, but sends go out.
    Monitor,
    /// Blocks when the evidence is strong (a false-positive rate well under 0.1% in the
    /// shipped evaluation).
    #[default]
    Standard,
    /// Blocks on weaker evidence: fewer samples, a higher conversion floor.
    Strict,
}

impl Mode {
    /// The score at or above which a prefix is judged under attack.
    pub fn block_score(self) -> u8 {
        match self {
            Mode::Strict => 60,
            _ => 80,
        }
    }

    /// A prefix whose conversion (with its prior) falls below this is suspicious.
    fn conversion_floor(self) -> f64 {
        match self {
            Mode::Strict => 0.25,
            _ => 0.15,
        }
    }

    /// Neighbouring numbers within the window that make a sequence.
    fn sequence_min(self) -> u32 {
        match self {
            Mode::Strict => 5,
            _ => 8,
        }
    }

    /// Sends within the window that a prefix without history must take to be new.
    fn surge_min(self) -> u64 {
        match self {
            Mode::Strict => 15,
            _ => 30,
        }
    }

    pub fn enforced(self) -> bool {
        matches!(self, Mode::Standard | Mode::Strict)
    }
}

/// A country's risk tier for pumping: the prior conversion a prefix starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Low,
    #[default]
    Medium,
    High,
}

impl Tier {
    /// The conversion assumed before any evidence.
    fn prior(self) -> f64 {
        match self {
            Tier::Low => 0.8,
            Tier::Medium => 0.6,
            Tier::High => 0.4,
        }
    }
}

/// The share of a window's codes verified that marks its traffic as converting.
pub const CONVERTING: f64 = 0.3;

/// How many sends the prior is worth.
const PRIOR_WEIGHT: f64 = 5.0;

/// The tenant's detector settings (`sms_pumping` in the settings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PumpingSettings {
    pub mode: Mode,
    /// The sliding window conversion and velocity are counted over.
    pub window_seconds: u32,
    /// A code not verified within this long after it was sent counts as unconverted.
    pub maturity_seconds: u32,
    /// How long a first block lasts; each new block of the same prefix doubles it, up to
    /// 30 days, and a block is extended while blocked sends keep coming.
    pub block_seconds: u32,
    /// E.164 prefixes (`+4420`) the detector never blocks.
    pub exempt_prefixes: Vec<String>,
    /// Risk tiers by ISO country (`GB: low`); unlisted countries are `medium`.
    pub country_tiers: BTreeMap<String, Tier>,
}

impl Default for PumpingSettings {
    fn default() -> Self {
        Self {
            mode: Mode::Standard,
            window_seconds: 3600,
            maturity_seconds: 300,
            block_seconds: 12 * 3600,
            exempt_prefixes: Vec::new(),
            country_tiers: BTreeMap::new(),
        }
    }
}

impl PumpingSettings {
    /// The first problem with these settings, as (field, message).
    pub fn problem(&self) -> Option<(String, String)> {
        let field = |name: &str| format!("sms_pumping.{name}");
        if !(60..=86_400).contains(&self.window_seconds) {
            return Some((
                field("window_seconds"),
                "must be between 60 and 86400".into(),
            ));
        }
        if self.maturity_seconds == 0 || self.maturity_seconds > self.window_seconds {
            return Some((
                field("maturity_seconds"),
                "must be at least 1 and at most window_seconds".into(),
            ));
        }
        if !(60..=2_592_000).contains(&self.block_seconds) {
            return Some((
                field("block_seconds"),
                "must be between 60 and 2592000".into(),
            ));
        }
        if self.exempt_prefixes.len() > MAX_EXEMPT_PREFIXES {
            return Some((
                field("exempt_prefixes"),
                format!("at most {MAX_EXEMPT_PREFIXES} prefixes"),
            ));
        }
        for (at, prefix) in self.exempt_prefixes.iter().enumerate() {
            if !is_e164_prefix(prefix) {
                return Some((
                    format!("sms_pumping.exempt_prefixes[{at}]"),
                    "must be + and 1 to 15 digits".into(),
                ));
            }
        }
        for country in self.country_tiers.keys() {
            if country.len() != 2
                || country.to_ascii_uppercase() != *country
                || crate::phone::countries::by_alpha2(country).is_none()
            {
                return Some((
                    format!("sms_pumping.country_tiers.{country}"),
                    "must be an ISO 3166-1 alpha-2 country code".into(),
                ));
            }
        }
        None
    }

    fn bucket_ms(&self) -> i64 {
        i64::from(self.window_seconds) * 1000 / WINDOW_BUCKETS
    }

    /// Whether `e164` is under an exempt prefix.
    pub fn exempt(&self, e164: &str) -> bool {
        self.exempt_prefixes
            .iter()
            .any(|prefix| e164.starts_with(prefix.as_str()))
    }

    /// How long the block at `level` (0 for a prefix's first) lasts.
    pub fn block_duration_ms(&self, level: u32) -> i64 {
        let base = i64::from(self.block_seconds);
        base.saturating_mul(1_i64 << level.min(20))
            .min(MAX_BLOCK_SECONDS)
            .saturating_mul(1000)
    }
}

/// Whether `text` is `+` and 1 to 15 digits.
pub fn is_e164_prefix(text: &str) -> bool {
    text.strip_prefix('+').is_some_and(|digits| {
        (1..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

/// The prefixes a number is judged at, shortest first: the country, then the first
/// 2 and 4 digits of the national number (those shorter than the number itself).
pub fn prefixes(calling_code: u32, national: &str) -> Vec<String> {
    let mut out = vec![format!("+{calling_code}")];
    for depth in DEPTHS {
        if national.len() > depth + 2 && national.is_char_boundary(depth) {
            out.push(format!("+{calling_code}{}", &national[..depth]));
        }
    }
    out
}

/// One fine bucket: sends that started in it and how many of those were verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Start, ms since the epoch.
    pub at: i64,
    pub sends: u32,
    pub verified: u32,
}

/// What is counted for one prefix in one scope (a tenant, or the host as an aggregate
/// of every tenant), as stored and as merged from replicas' deltas.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Fine buckets within the window, oldest first.
    #[serde(default)]
    pub buckets: Vec<Bucket>,
    /// Decayed sums of the buckets that left the window.
    #[serde(default)]
    pub long_sends: f64,
    #[serde(default)]
    pub long_verified: f64,
    /// Buckets of history the decayed sums span (capped), so a young prefix's
    /// baseline is not diluted.
    #[serde(default)]
    pub history: f64,
    /// Where the decayed sums end (ms), 0 before any bucket was folded.
    #[serde(default)]
    pub folded_to: i64,
    /// The latest numbers sent to (national number, ms), newest last. Only kept per
    /// tenant, never in the host's aggregate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<(u64, i64)>,
    /// Until when (ms) some tenant has an enforced block of this prefix: the host's
    /// aggregate only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub blocked_until: i64,
    /// The bucket width (ms) of the last counts added: the window they were made with
    /// over [`WINDOW_BUCKETS`].
    #[serde(default)]
    pub bucket_ms: i64,
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

impl Counts {
    /// Whether nothing is counted.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
            && self.recent.is_empty()
            && self.long_sends == 0.0
            && self.blocked_until == 0
    }

    /// Settings whose window is the one these counts were made with (the default's
    /// before any), to roll stored counts with.
    pub fn settings(&self) -> PumpingSettings {
        let window = if self.bucket_ms > 0 {
            self.bucket_ms * WINDOW_BUCKETS / 1000
        } else {
            3600
        };
        PumpingSettings {
            window_seconds: u32::try_from(window).unwrap_or(3600),
            maturity_seconds: 1,
            ..PumpingSettings::default()
        }
    }

    /// Counts one send at `now` to `number` (a national number, when kept).
    pub fn add_send(&mut self, settings: &PumpingSettings, now: i64, number: Option<u64>) {
        self.bucket_ms = settings.bucket_ms();
        let at = now - now.rem_euclid(settings.bucket_ms());
        self.bucket_mut(at).sends += 1;
        if let Some(number) = number {
            self.recent.push((number, now));
            if self.recent.len() > RECENT_NUMBERS {
                self.recent.remove(0);
            }
        }
    }

    /// Counts one conversion of a code sent at `sent`.
    pub fn add_verified(&mut self, settings: &PumpingSettings, sent: i64) {
        self.bucket_ms = settings.bucket_ms();
        let at = sent - sent.rem_euclid(settings.bucket_ms());
        self.bucket_mut(at).verified += 1;
    }

    fn bucket_mut(&mut self, at: i64) -> &mut Bucket {
        let index = match self.buckets.binary_search_by_key(&at, |bucket| bucket.at) {
            Ok(index) => index,
            Err(index) => {
                self.buckets.insert(
                    index,
                    Bucket {
                        at,
                        sends: 0,
                        verified: 0,
                    },
                );
                index
            }
        };
        &mut self.buckets[index]
    }

    /// Adds `delta` (another replica's or this one's unflushed counts) in.
    pub fn merge(&mut self, delta: &Counts) {
        for bucket in &delta.buckets {
            let mine = self.bucket_mut(bucket.at);
            mine.sends += bucket.sends;
            mine.verified += bucket.verified;
        }
        self.long_sends += delta.long_sends;
        self.long_verified += delta.long_verified;
        self.history = self.history.max(delta.history);
        self.folded_to = self.folded_to.max(delta.folded_to);
        for entry in &delta.recent {
            if !self.recent.contains(entry) {
                self.recent.push(*entry);
            }
        }
        self.recent.sort_by_key(|(_, at)| *at);
        let extra = self.recent.len().saturating_sub(RECENT_NUMBERS);
        self.recent.drain(..extra);
        self.blocked_until = self.blocked_until.max(delta.blocked_until);
        if delta.bucket_ms > 0 {
            self.bucket_ms = delta.bucket_ms;
        }
    }

    /// Folds the buckets that left the window at `now` into the decayed history, and
    /// drops numbers older than the window.
    pub fn roll(&mut self, settings: &PumpingSettings, now: i64) {
        let bucket = settings.bucket_ms();
        let current = now - now.rem_euclid(bucket);
        let oldest = current - (WINDOW_BUCKETS - 1) * bucket;
        let decay = 1.0 - 1.0 / HISTORY_BUCKETS;
        while let Some(first) = self.buckets.first().copied() {
            if first.at >= oldest {
                break;
            }
            self.buckets.remove(0);
            let steps = if self.folded_to == 0 {
                1.0
            } else {
                ((first.at - self.folded_to) / bucket).max(1) as f64
            };
            let factor = decay.powf(steps);
            self.long_sends = self.long_sends * factor + f64::from(first.sends);
            self.long_verified = self.long_verified * factor + f64::from(first.verified);
            self.history = (self.history + steps).min(HISTORY_BUCKETS * 4.0);
            self.folded_to = first.at;
        }
        let horizon = now - i64::from(settings.window_seconds) * 1000;
        self.recent.retain(|(_, at)| *at > horizon);
    }

    /// Sends within the window at `now`.
    pub fn window_sends(&self, settings: &PumpingSettings, now: i64) -> u64 {
        let oldest = now - i64::from(settings.window_seconds) * 1000;
        self.buckets
            .iter()
            .filter(|bucket| bucket.at + settings.bucket_ms() > oldest)
            .map(|bucket| u64::from(bucket.sends))
            .sum()
    }

    /// Conversions of the sends within the window, young ones included.
    pub fn window_verified(&self, settings: &PumpingSettings, now: i64) -> u64 {
        let oldest = now - i64::from(settings.window_seconds) * 1000;
        self.buckets
            .iter()
            .filter(|bucket| bucket.at + settings.bucket_ms() > oldest)
            .map(|bucket| u64::from(bucket.verified))
            .sum()
    }

    /// Whether the window's codes are being verified at a healthy rate (at least
    /// [`CONVERTING`] of them, young ones included): traffic that converts is not
    /// pumping, however fast or regular it is.
    pub fn converting(&self, settings: &PumpingSettings, now: i64) -> bool {
        let sends = self.window_sends(settings, now);
        sends > 0 && self.window_verified(settings, now) as f64 >= CONVERTING * sends as f64
    }

    /// Sends old enough to have converted, and their conversions: the buckets that
    /// ended at least the maturity ago, and the history.
    pub fn matured(&self, settings: &PumpingSettings, now: i64) -> (f64, f64) {
        let cutoff = now - i64::from(settings.maturity_seconds) * 1000;
        let (sends, verified) = self
            .buckets
            .iter()
            .filter(|bucket| bucket.at + settings.bucket_ms() <= cutoff)
            .fold((0.0, 0.0), |(s, v), bucket| {
                (s + f64::from(bucket.sends), v + f64::from(bucket.verified))
            });
        (sends + self.long_sends, verified + self.long_verified)
    }

    /// The usual sends per window, from the history; `None` with no history yet.
    pub fn baseline(&self) -> Option<f64> {
        if self.history < 1.0 {
            return None;
        }
        let decay = 1.0 - 1.0 / HISTORY_BUCKETS;
        let weight = (1.0 - decay.powf(self.history)) / (1.0 - decay);
        Some(self.long_sends / weight * WINDOW_BUCKETS as f64)
    }

    /// Conversions ever counted (window and history).
    pub fn any_verified(&self) -> bool {
        self.long_verified > 0.0 || self.buckets.iter().any(|bucket| bucket.verified > 0)
    }

    /// Numbers within the window at most [`NEIGHBOUR_DISTANCE`] from `number`.
    pub fn neighbours(&self, number: u64) -> u32 {
        let mut seen: Vec<u64> = Vec::new();
        for (other, _) in &self.recent {
            if *other != number
                && other.abs_diff(number) <= NEIGHBOUR_DISTANCE
                && !seen.contains(other)
            {
                seen.push(*other);
            }
        }
        u32::try_from(seen.len()).unwrap_or(u32::MAX)
    }
}

/// What the detector sees of one prefix for one send.
#[derive(Debug, Clone)]
pub struct PrefixView<'a> {
    /// The tenant's counts (already rolled to now).
    pub tenant: &'a Counts,
    /// The host's aggregate over every tenant, this one included.
    pub host: &'a Counts,
}

/// Everything one send is judged on.
#[derive(Debug, Clone)]
pub struct Evidence<'a> {
    /// Shortest prefix first, as [`prefixes`] gives them.
    pub prefixes: Vec<PrefixView<'a>>,
    /// The tenant's sends to every destination.
    pub tenant_total: &'a Counts,
    /// The number being sent to (its national number).
    pub number: Option<u64>,
    pub line_type: LineType,
    pub tier: Tier,
}

/// What the detector measured, as the block record and rules see it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = PumpingSignals)]
pub struct Signals {
    /// Codes verified over matured codes sent at the judged prefix, with the prior.
    pub conversion_rate: Option<f64>,
    /// Matured codes at the judged prefix.
    pub matured_sends: u64,
    /// Codes sent to the judged prefix within the window.
    pub sends_in_window: u64,
    /// The window's sends over the prefix's usual sends per window.
    pub velocity: Option<f64>,
    /// Numbers within the window next to this one (at most 20 apart).
    pub sequential_neighbours: u32,
    /// The prefix had no history and suddenly takes a large share of the traffic.
    pub new_prefix: bool,
    /// Another tenant of this host has the prefix blocked.
    pub blocked_elsewhere: bool,
    pub tier: Tier,
}

/// Why a prefix was judged under attack: the strongest signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = PumpingReason)]
pub enum Reason {
    LowConversion,
    SequentialNumbers,
    NewPrefixSurge,
    Velocity,
    BlockedElsewhere,
    HostLowConversion,
}

impl Reason {
    pub fn describe(self) -> &'static str {
        match self {
            Reason::LowConversion => "codes sent to the prefix are almost never verified",
            Reason::SequentialNumbers => "codes go to runs of neighbouring numbers",
            Reason::NewPrefixSurge => "a prefix never seen before suddenly takes the traffic",
            Reason::Velocity => "sends to the prefix far above its usual rate",
            Reason::BlockedElsewhere => "the prefix is under attack at other tenants of this host",
            Reason::HostLowConversion => {
                "codes sent to the prefix across this host are almost never verified"
            }
        }
    }
}

/// The judgment of one send.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgment {
    /// 0 to 100.
    pub score: u8,
    /// Index into the evidence's prefixes of the prefix the strongest signal is about.
    pub depth: usize,
    pub reason: Option<Reason>,
    pub signals: Signals,
}

/// One signal's points, the prefix it is about and why.
type Points = (f64, usize, Reason);

/// Judges one send from `evidence` under `mode`, at `now` (ms).
pub fn judge(
    settings: &PumpingSettings,
    mode: Mode,
    evidence: &Evidence<'_>,
    now: i64,
) -> Judgment {
    let mut points: Vec<Points> = Vec::new();
    let mut signals = Signals {
        tier: evidence.tier,
        ..Signals::default()
    };
    let floor = mode.conversion_floor();
    let prior = evidence.tier.prior();
    let total_window = evidence.tenant_total.window_sends(settings, now).max(1) as f64;
    let total_baseline = evidence.tenant_total.baseline();
    let deepest = evidence.prefixes.len().saturating_sub(1);
    // The judged prefix's figures are the deepest prefix's unless a signal names
    // another.
    let mut figures: Vec<(Option<f64>, u64, u64, Option<f64>)> = Vec::new();
    for (depth, view) in evidence.prefixes.iter().enumerate() {
        let (matured, verified) = view.tenant.matured(settings, now);
        let rate =
            (matured >= 1.0).then(|| (verified + PRIOR_WEIGHT * prior) / (matured + PRIOR_WEIGHT));
        let window = view.tenant.window_sends(settings, now);
        let baseline = view.tenant.baseline();
        let velocity = baseline.map(|usual| window as f64 / usual.max(1.0));
        figures.push((rate, matured as u64, window, velocity));
        if let Some(rate) = rate {
            if rate < floor {
                points.push((90.0, depth, Reason::LowConversion));
            } else if rate < floor * 2.0 {
                points.push((45.0, depth, Reason::LowConversion));
            }
        }
        // The host's aggregate: the conversion across tenants, with twice the samples.
        let (host_matured, host_verified) = view.host.matured(settings, now);
        if host_matured >= 1.0 {
            let host_rate =
                (host_verified + 2.0 * PRIOR_WEIGHT * prior) / (host_matured + 2.0 * PRIOR_WEIGHT);
            if host_rate < floor && !view.tenant.any_verified() {
                points.push((60.0, depth, Reason::HostLowConversion));
            }
        }
        if view.host.blocked_until > now {
            let own_history = view.tenant.any_verified();
            points.push((
                if own_history { 30.0 } else { 85.0 },
                depth,
                Reason::BlockedElsewhere,
            ));
            signals.blocked_elsewhere = true;
        }
        if depth == 0 || view.tenant.converting(settings, now) {
            continue;
        }
        // Velocity against the prefix's own history, and against the tenant's mix.
        if window >= 20 {
            let share_now = window as f64 / total_window;
            let usual_share = match (baseline, total_baseline) {
                (Some(usual), Some(total)) if total > 0.0 => Some(usual / total),
                _ => None,
            };
            let jumped = velocity.is_some_and(|ratio| ratio >= 10.0)
                || (share_now >= 0.5 && usual_share.is_some_and(|share| share < 0.05));
            if jumped {
                points.push((40.0, depth, Reason::Velocity));
            }
            if baseline.is_none() && window >= mode.surge_min() && share_now >= 0.3 {
                points.push((50.0, depth, Reason::NewPrefixSurge));
                signals.new_prefix = true;
            }
        }
    }
    if let (Some(number), Some(view)) = (evidence.number, evidence.prefixes.last()) {
        let neighbours = view.tenant.neighbours(number);
        signals.sequential_neighbours = neighbours;
        if view.tenant.converting(settings, now) {
            // Runs of numbers whose codes are verified: a tenant's own test range.
        } else if neighbours >= mode.sequence_min() {
            points.push((85.0, deepest, Reason::SequentialNumbers));
        } else if neighbours >= mode.sequence_min() / 2 {
            points.push((35.0, deepest, Reason::SequentialNumbers));
        }
    }
    points.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    let mut score = match points.as_slice() {
        [] => 0.0,
        [(first, ..)] => *first,
        [(first, ..), (second, ..), ..] => first + second / 2.0,
    };
    if score > 0.0 {
        let unusual_line = !matches!(evidence.line_type, LineType::Mobile);
        if unusual_line {
            score += 10.0;
        }
        if evidence.tier == Tier::High {
            score += 10.0;
        }
    }
    let (depth, reason) = points
        .first()
        .map_or((deepest, None), |(_, depth, reason)| {
            (*depth, Some(*reason))
        });
    if let Some((rate, matured, window, velocity)) = figures.get(depth) {
        signals.conversion_rate = rate.map(|rate| (rate * 1000.0).round() / 1000.0);
        signals.matured_sends = *matured;
        signals.sends_in_window = *window;
        signals.velocity = velocity.map(|ratio| (ratio * 100.0).round() / 100.0);
    }
    Judgment {
        score: score.clamp(0.0, 100.0) as u8,
        depth,
        reason,
        signals,
    }
}

#[cfg(test)]
mod tests;
