//! The SMS-pumping detector in the flows: the counts per tenant and prefix (and the
//! host's aggregate per prefix) that sends and conversions feed, the judgment before a
//! send, prefix blocks (their record, case, webhook and warning), and listing and
//! lifting them. The logic is `crate::pumping`; this is where it meets the store.
//!
//! Counts are kept in memory per replica and flushed into tree `pumping_counts` every
//! [`FLUSH_INTERVAL`] by merging the unflushed part in with a compare-and-swap, so a
//! send costs no store write for them; on a shared store the flush also reads back
//! what the other replicas added. Blocks are records of tree `fraud_blocks`, cached per
//! tenant and kept current across replicas by the change log.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::model::rules::FraudSignals;
use crate::model::{Case, CaseRef, Channel, PhoneFacts, Verification};
use crate::pumping::{self, Counts, Evidence, Judgment, Mode, PrefixView, Reason, Signals};
use crate::settings::PhoneSettings;
use crate::store::{key, StoreError, Tree};
use crate::warnings::{Risk, RiskAction, Warning};

use super::{Caller, Engine, FlowError};

/// How often the counts are flushed into the store (and, on a shared store, read back).
pub const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);
/// Counts kept in memory across every tenant; past it the least recently used clean
/// entries are dropped (they reload from the store when needed).
const MAX_ENTRIES: usize = 200_000;
const SHARDS: usize = 16;
/// Clean entries a flush reads back per shard on a shared store.
const REFRESH_PER_SHARD: usize = 64;
/// Block records kept per tenant: past it, the oldest that no longer block go.
const MAX_BLOCKS_PER_TENANT: usize = 500;
/// Who the detector's cases are opened by.
pub const DETECTOR: &str = "sms_pumping_detector";

/// A prefix the detector judged under attack for one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PrefixBlock {
    /// The blocked E.164 prefix (`+447700`).
    pub prefix: String,
    /// The prefix's country (ISO alpha-2), when the number's was known.
    pub country: Option<String>,
    /// False when the detector was in `monitor` mode: recorded, nothing refused.
    pub enforced: bool,
    pub reason: Reason,
    pub description: String,
    /// The score that opened the block (0 to 100).
    pub score: u8,
    pub signals: Signals,
    pub created_at: DateTime<Utc>,
    /// When the block ends unless blocked sends keep coming.
    pub until: DateTime<Utc>,
    /// 0 for a prefix's first block; each later one lasts twice as long.
    pub level: u32,
    /// Sends refused by this block.
    pub blocked_sends: u64,
    /// Their estimated cost: the cheapest of the tenant's providers for each.
    pub estimated_savings: f64,
    pub case_id: String,
    /// The verification whose send opened the block.
    pub verification_id: Option<String>,
    #[serde(default)]
    pub lifted_at: Option<DateTime<Utc>>,
    /// `tenant` or `operator`.
    #[serde(default)]
    pub lifted_by: Option<String>,
}

impl PrefixBlock {
    /// Whether the block refuses (or, in monitor mode, marks) sends at `now`.
    pub fn active(&self, now: DateTime<Utc>) -> bool {
        self.lifted_at.is_none() && self.until > now
    }

    /// `active`, `lifted` or `expired`.
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        if self.lifted_at.is_some() {
            "lifted"
        } else if self.until > now {
            "active"
        } else {
            "expired"
        }
    }
}

/// A block as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BlockView {
    pub tenant_id: String,
    pub status: &'static str,
    #[serde(flatten)]
    pub block: PrefixBlock,
}

/// What the detector makes of a send before it acts.
#[derive(Debug, Clone)]
pub enum Assessment {
    /// Off, or the number is exempt.
    Off,
    /// A block of the number's prefix was lifted within the window.
    Lifted,
    /// An active block covers the number.
    Covered(Box<PrefixBlock>),
    /// The evidence, judged; `prefix` is the one the judgment is about.
    Judged {
        judgment: Box<Judgment>,
        prefix: String,
    },
}

impl Assessment {
    /// The fraud signals rules see: the score, and the conversion and sends of the
    /// prefix it is about (a covering block's, as it recorded them). `None` when off.
    pub fn signals(&self, geo_permitted: bool) -> Option<FraudSignals> {
        let (score, signals) = match self {
            Assessment::Off => return None,
            Assessment::Lifted => (0, None),
            Assessment::Covered(block) => (100, Some(&block.signals)),
            Assessment::Judged { judgment, .. } => (judgment.score, Some(&judgment.signals)),
        };
        Some(FraudSignals {
            pumping_risk: score,
            prefix_conversion_rate: signals.and_then(|s| s.conversion_rate),
            prefix_sends_1h: signals.map_or(0, |s| s.sends_in_window),
            geo_permitted,
        })
    }
}

/// What the detector decided for one send.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Send: nothing unusual, or the detector is off or the number exempt.
    Pass,
    /// Refuse (or, not enforced, mark) under this block; the case it opened when the
    /// block is new.
    Blocked(Box<PrefixBlock>, Option<CaseRef>),
}

/// What one replica keeps: counts by store key, blocks by tenant, and the operator's
/// exempt prefixes.
#[derive(Debug)]
pub struct Ledger {
    shards: Vec<Mutex<HashMap<Vec<u8>, Entry>>>,
    blocks: Mutex<HashMap<String, Arc<Vec<PrefixBlock>>>>,
    exemptions: Mutex<Option<Arc<Vec<String>>>>,
    /// Held by the one flush that runs at a time (an entry has one `flushing` part).
    flush: Mutex<()>,
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            blocks: Mutex::new(HashMap::new()),
            exemptions: Mutex::new(None),
            flush: Mutex::new(()),
        }
    }
}

/// Where the operator's exempt prefixes are kept (tree `meta`).
const HOST_EXEMPTIONS: &[u8] = b"pumping_exempt_prefixes";
/// Exempt prefixes the operator may keep for the host.
pub const MAX_HOST_EXEMPTIONS: usize = 1_000;

#[derive(Debug, Default)]
struct Entry {
    /// As last read from or written to the store.
    stored: Counts,
    /// Counted here and not flushed yet.
    pending: Counts,
    /// Taken from `pending` by the flush that is writing it: still counted by every
    /// view until the write lands in `stored`, so a send judged meanwhile misses
    /// nothing.
    flushing: Counts,
    /// Last use, ms by the engine's clock.
    touched: i64,
}

impl Entry {
    /// Whether it holds counts the store does not have yet.
    fn dirty(&self) -> bool {
        !self.pending.is_empty() || !self.flushing.is_empty()
    }

    /// Stored, in flight and pending counts together, rolled to `now`.
    fn view(&self, settings: &pumping::PumpingSettings, now: i64) -> Counts {
        let mut view = self.stored.clone();
        view.merge(&self.flushing);
        view.merge(&self.pending);
        view.roll(settings, now);
        view
    }
}

impl Ledger {
    fn shard(&self, key: &[u8]) -> &Mutex<HashMap<Vec<u8>, Entry>> {
        let hash = key.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        });
        &self.shards[(hash % SHARDS as u64) as usize]
    }

    /// Forgets a tenant's cached blocks (another replica changed them).
    pub(crate) fn forget_blocks(&self, tenant_id: &str) {
        self.blocks.lock().remove(tenant_id);
    }

    /// Forgets the operator's exempt prefixes (another replica changed them).
    pub(crate) fn forget_exemptions(&self) {
        *self.exemptions.lock() = None;
    }

    pub(crate) fn forget_all(&self) {
        self.blocks.lock().clear();
        self.forget_exemptions();
        for shard in &self.shards {
            shard.lock().retain(|_, entry| entry.dirty());
        }
    }

    /// Entries in memory (for tests of the bound).
    pub fn entries(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().len()).sum()
    }

    /// The counts under `key` as of `now` (stored, in flight and pending), when they
    /// are in memory.
    fn view(&self, key: &[u8], settings: &pumping::PumpingSettings, now: i64) -> Option<Counts> {
        let mut entries = self.shard(key).lock();
        let entry = entries.get_mut(key)?;
        entry.touched = now;
        Some(entry.view(settings, now))
    }

    /// Adds to the unflushed counts under `key`.
    fn count(&self, key: Vec<u8>, now: i64, add: impl FnOnce(&mut Counts)) {
        let mut entries = self.shard(&key).lock();
        if !entries.contains_key(&key) && entries.len() >= MAX_ENTRIES / SHARDS {
            evict(&mut entries);
        }
        let entry = entries.entry(key).or_default();
        entry.touched = now;
        add(&mut entry.pending);
    }

    /// Hands every entry's unflushed counts to `write` (which merges them into the
    /// store and answers what is stored now) and takes its answer as the entry's
    /// stored counts; on a shared store, also hands it the entries used in the last
    /// second with nothing to write (an empty `Counts`: `write` reads them back), at
    /// most [`REFRESH_PER_SHARD`] a shard, the latest used first. Counts being written
    /// stay in every view until their write lands; a failed write keeps them, and
    /// those not written yet, for the next flush. Entries unused for a day go.
    fn flush(
        &self,
        shared: bool,
        now: i64,
        mut write: impl FnMut(&[u8], &Counts) -> Result<Option<Counts>, StoreError>,
    ) -> Result<(), StoreError> {
        let _one_at_a_time = self.flush.lock();
        let lately = now - 1_000;
        for shard in &self.shards {
            let work: Vec<(Vec<u8>, Counts)> = {
                let mut entries = shard.lock();
                let mut refresh: Vec<(i64, Vec<u8>)> = if shared {
                    entries
                        .iter()
                        .filter(|(_, entry)| !entry.dirty() && entry.touched > lately)
                        .map(|(key, entry)| (entry.touched, key.clone()))
                        .collect()
                } else {
                    Vec::new()
                };
                refresh.sort_unstable_by_key(|(touched, _)| std::cmp::Reverse(*touched));
                refresh.truncate(REFRESH_PER_SHARD);
                let mut work: Vec<(Vec<u8>, Counts)> = entries
                    .iter_mut()
                    .filter(|(_, entry)| !entry.pending.is_empty())
                    .map(|(key, entry)| {
                        entry.flushing = std::mem::take(&mut entry.pending);
                        (key.clone(), entry.flushing.clone())
                    })
                    .collect();
                work.extend(refresh.into_iter().map(|(_, key)| (key, Counts::default())));
                work
            };
            let mut work = work.into_iter();
            while let Some((key, pending)) = work.next() {
                let written = write(&key, &pending);
                let mut entries = shard.lock();
                match written {
                    Ok(stored) => {
                        if let Some(entry) = entries.get_mut(&key) {
                            entry.stored = stored.unwrap_or_default();
                            entry.flushing = Counts::default();
                        }
                    }
                    Err(err) => {
                        for key in std::iter::once(key).chain(work.map(|(key, _)| key)) {
                            if let Some(entry) = entries.get_mut(&key) {
                                let flushing = std::mem::take(&mut entry.flushing);
                                entry.pending.merge(&flushing);
                            }
                        }
                        return Err(err);
                    }
                }
            }
            let horizon = now - 24 * 3600 * 1000;
            shard
                .lock()
                .retain(|_, entry| entry.touched > horizon || entry.dirty());
        }
        Ok(())
    }
}

fn tenant_key(tenant_id: &str, prefix: &str) -> Vec<u8> {
    key(&["t", tenant_id, prefix])
}

fn total_key(tenant_id: &str) -> Vec<u8> {
    key(&["t", tenant_id, "*"])
}

fn host_key(prefix: &str) -> Vec<u8> {
    key(&["h", prefix])
}

fn block_key(tenant_id: &str, prefix: &str) -> Vec<u8> {
    key(&[tenant_id, prefix])
}

fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// The national number as a number, for the neighbours signal.
fn national_value(facts: &PhoneFacts) -> Option<u64> {
    facts.national_number.parse().ok()
}

impl Engine {
    /// The counts under `key` as of `now`: stored and unflushed, rolled.
    fn counts(&self, key: &[u8], settings: &pumping::PumpingSettings, now: i64) -> Counts {
        if let Some(view) = self.replica.pumping.view(key, settings, now) {
            return view;
        }
        let shard = self.replica.pumping.shard(key);
        // Not in memory: read it from the store (outside the lock).
        let stored = match self.db.get::<Counts>(Tree::PumpingCounts, key) {
            Ok(stored) => stored.unwrap_or_default(),
            Err(err) => {
                tracing::error!(error = %err, "pumping counts unreadable; judged as empty");
                Counts::default()
            }
        };
        let mut entries = shard.lock();
        if entries.len() >= MAX_ENTRIES / SHARDS {
            evict(&mut entries);
        }
        let entry = entries.entry(key.to_vec()).or_insert_with(|| Entry {
            stored,
            ..Entry::default()
        });
        entry.touched = now;
        entry.view(settings, now)
    }

    /// Adds to the unflushed counts under `key`.
    fn count(&self, key: Vec<u8>, now: i64, add: impl FnOnce(&mut Counts)) {
        self.replica.pumping.count(key, now, add);
    }

    /// The tenant's blocks (every record: active, lifted and expired), cached.
    fn blocks(&self, tenant_id: &str) -> Result<Arc<Vec<PrefixBlock>>, StoreError> {
        if let Some(hit) = self.replica.pumping.blocks.lock().get(tenant_id) {
            return Ok(hit.clone());
        }
        let loaded: Vec<PrefixBlock> = self.db.scan(
            Tree::FraudBlocks,
            &key(&[tenant_id, ""]),
            MAX_BLOCKS_PER_TENANT * 2,
            false,
        )?;
        let loaded = Arc::new(loaded);
        self.replica
            .pumping
            .blocks
            .lock()
            .insert(tenant_id.to_owned(), loaded.clone());
        Ok(loaded)
    }

    /// This replica's cache takes `block` as the tenant's record for its prefix.
    fn cache_block(&self, tenant_id: &str, block: &PrefixBlock) {
        let mut cache = self.replica.pumping.blocks.lock();
        if let Some(blocks) = cache.get_mut(tenant_id) {
            let mut next: Vec<PrefixBlock> = blocks
                .iter()
                .filter(|other| other.prefix != block.prefix)
                .cloned()
                .collect();
            next.push(block.clone());
            next.sort_by(|a, b| a.prefix.cmp(&b.prefix));
            *blocks = Arc::new(next);
        }
    }

    /// What the detector makes of a send to the verification's number, without acting
    /// on it: an active block that covers the number, or its judgment of the evidence
    /// (nothing when it is off, the number is exempt or its block was lifted lately).
    /// The send's triggers see it as fraud signals; [`Engine::apply_pumping`] acts.
    pub(crate) fn assess_pumping(
        &self,
        verification: &Verification,
        settings: &PhoneSettings,
    ) -> Result<Assessment, FlowError> {
        let detector = &settings.sms_pumping;
        let facts = &verification.phone;
        if detector.mode == Mode::Off
            || detector.exempt(&facts.e164)
            || self.host_exempt(&facts.e164)?
        {
            return Ok(Assessment::Off);
        }
        let tenant_id = verification.tenant_id.as_str();
        let now_at = self.clock.now();
        let now = ms(now_at);
        let prefixes = pumping::prefixes(facts.calling_code, &facts.national_number);
        let blocks = self.blocks(tenant_id)?;
        // The longest prefix's block first: it is the most specific.
        for prefix in prefixes.iter().rev() {
            let Some(block) = blocks.iter().find(|block| &block.prefix == prefix) else {
                continue;
            };
            if block.active(now_at) {
                return Ok(Assessment::Covered(Box::new(block.clone())));
            }
            let window = chrono::Duration::seconds(i64::from(detector.window_seconds));
            if block.lifted_at.is_some_and(|at| at + window > now_at) {
                // A block the tenant lifted holds off judging that prefix for a window.
                return Ok(Assessment::Lifted);
            }
        }
        let tenant_views: Vec<Counts> = prefixes
            .iter()
            .map(|prefix| self.counts(&tenant_key(tenant_id, prefix), detector, now))
            .collect();
        let host_views: Vec<Counts> = prefixes
            .iter()
            .map(|prefix| {
                let mut host = self.counts(&host_key(prefix), detector, now);
                // The host's block state may be this tenant's own block (lifted or
                // over): only a block lasting past it is another tenant's.
                let own = blocks.iter().find(|block| &block.prefix == prefix);
                if own.is_some_and(|own| own.enforced && ms(own.until) >= host.blocked_until) {
                    host.blocked_until = 0;
                }
                host
            })
            .collect();
        let total = self.counts(&total_key(tenant_id), detector, now);
        let tier = facts
            .region
            .as_deref()
            .and_then(|region| detector.country_tiers.get(region).copied())
            .unwrap_or_default();
        let evidence = Evidence {
            prefixes: tenant_views
                .iter()
                .zip(host_views.iter())
                .map(|(tenant, host)| PrefixView { tenant, host })
                .collect(),
            tenant_total: &total,
            number: national_value(facts),
            line_type: facts.line_type,
            tier,
        };
        let judgment = pumping::judge(detector, detector.mode, &evidence, now);
        let prefix = prefixes
            .get(judgment.depth)
            .cloned()
            .unwrap_or_else(|| facts.e164.clone());
        Ok(Assessment::Judged {
            judgment: Box::new(judgment),
            prefix,
        })
    }

    /// Acts on `assessment` for a send on `channel`: a covering block refuses it
    /// (counted, and lengthened), a judgment at the mode's score opens a block; else
    /// the send passes. The caller puts [`pumping_warning`] on the verification.
    pub(crate) fn apply_pumping(
        &self,
        assessment: Assessment,
        verification: &Verification,
        settings: &PhoneSettings,
        channel: Channel,
    ) -> Result<Verdict, FlowError> {
        let facts = &verification.phone;
        let tenant_id = verification.tenant_id.as_str();
        match assessment {
            Assessment::Off | Assessment::Lifted => Ok(Verdict::Pass),
            Assessment::Covered(block) => {
                let block = self.blocked_send(tenant_id, &block, settings, facts, channel)?;
                Ok(Verdict::Blocked(Box::new(block), None))
            }
            Assessment::Judged { judgment, prefix } => {
                if judgment.score < settings.sms_pumping.mode.block_score() {
                    return Ok(Verdict::Pass);
                }
                let (block, case) =
                    self.open_block(verification, settings, channel, &prefix, *judgment)?;
                Ok(Verdict::Blocked(Box::new(block), case))
            }
        }
    }

    /// The tenant's active, enforced block that covers `facts`, if any (a fallback
    /// step honours it; it does not judge afresh).
    pub(crate) fn active_pumping_block(
        &self,
        tenant_id: &str,
        settings: &PhoneSettings,
        facts: &PhoneFacts,
    ) -> Result<Option<PrefixBlock>, FlowError> {
        if settings.sms_pumping.mode == Mode::Off
            || settings.sms_pumping.exempt(&facts.e164)
            || self.host_exempt(&facts.e164)?
        {
            return Ok(None);
        }
        let now = self.clock.now();
        let prefixes = pumping::prefixes(facts.calling_code, &facts.national_number);
        Ok(self
            .blocks(tenant_id)?
            .iter()
            .find(|block| block.enforced && block.active(now) && prefixes.contains(&block.prefix))
            .cloned())
    }

    /// Records a new block of `prefix` (or takes the one a concurrent send opened):
    /// its case, the `fraud.prefix_blocked` webhook, the host's aggregate.
    fn open_block(
        &self,
        verification: &Verification,
        settings: &PhoneSettings,
        channel: Channel,
        prefix: &str,
        judgment: Judgment,
    ) -> Result<(PrefixBlock, Option<CaseRef>), FlowError> {
        let detector = &settings.sms_pumping;
        let tenant_id = verification.tenant_id.as_str();
        let now = self.clock.now();
        let reason = judgment.reason.unwrap_or(Reason::LowConversion);
        let enforced = detector.mode.enforced();
        let cost = self.cost_estimate(tenant_id, &verification.phone, channel);
        let case_id = format!("case_{}", uuid::Uuid::new_v4().simple());
        let mut opened = false;
        let block = self.db.update(
            Tree::FraudBlocks,
            &block_key(tenant_id, prefix),
            |current: Option<PrefixBlock>| {
                if let Some(current) = current.as_ref().filter(|block| block.active(now)) {
                    opened = false;
                    return Ok::<_, FlowError>((Some(current.clone()), current.clone()));
                }
                // A prefix blocked before and judged again: the block lasts longer.
                let level = current.as_ref().map_or(0, |old| {
                    if old.enforced && old.lifted_at.is_none() {
                        old.level + 1
                    } else {
                        old.level
                    }
                });
                let until = now + chrono::Duration::milliseconds(detector.block_duration_ms(level));
                let block = PrefixBlock {
                    prefix: prefix.to_owned(),
                    country: verification.phone.region.clone(),
                    enforced,
                    reason,
                    description: reason.describe().to_owned(),
                    score: judgment.score,
                    signals: judgment.signals.clone(),
                    created_at: now,
                    until,
                    level,
                    blocked_sends: u64::from(enforced),
                    estimated_savings: if enforced { cost } else { 0.0 },
                    case_id: case_id.clone(),
                    verification_id: Some(verification.id.clone()),
                    lifted_at: None,
                    lifted_by: None,
                };
                opened = true;
                Ok((Some(block.clone()), block))
            },
        )?;
        self.cache_block(tenant_id, &block);
        if !opened {
            return Ok((block, None));
        }
        self.changed(&crate::changes::Change::FraudBlocks {
            tenant_id: tenant_id.to_owned(),
        })?;
        if enforced {
            // Other tenants see that the prefix is under attack, as an aggregate.
            let until = ms(block.until);
            self.count(host_key(prefix), ms(now), |counts| {
                counts.blocked_until = counts.blocked_until.max(until);
            });
        }
        let case = Case {
            id: case_id,
            tenant_id: tenant_id.to_owned(),
            verification_id: Some(verification.id.clone()),
            phone: verification.phone.e164.clone(),
            applicant_id: verification.applicant_id.clone(),
            case_type: "sms_pumping".into(),
            priority: "high".into(),
            title: format!(
                "SMS pumping suspected at {prefix}: {}{}",
                block.description,
                if enforced { "" } else { " (monitor mode)" }
            ),
            status: crate::model::CaseStatus::Open,
            flags: Vec::new(),
            opened_by: DETECTOR.into(),
            created_at: now,
            ..Case::default()
        };
        self.db
            .put(Tree::Cases, &key(&[tenant_id, &case.id]), &case)?;
        self.emit_case(crate::webhooks::EventType::CaseCreated, &case);
        self.emit_block(tenant_id, &block);
        let case = CaseRef {
            case_id: case.id,
            case_type: case.case_type,
            priority: case.priority,
            title: case.title,
        };
        self.prune_blocks(tenant_id)?;
        tracing::warn!(
            tenant = %tenant_id,
            prefix = %prefix,
            reason = ?reason,
            score = block.score,
            enforced,
            "sms pumping: prefix blocked"
        );
        Ok((block, Some(case)))
    }

    /// A send under an active block: counted on the block, which lengthens while
    /// blocked sends keep coming (to at least one block period from now).
    fn blocked_send(
        &self,
        tenant_id: &str,
        block: &PrefixBlock,
        settings: &PhoneSettings,
        facts: &PhoneFacts,
        channel: Channel,
    ) -> Result<PrefixBlock, FlowError> {
        if !block.enforced {
            return Ok(block.clone());
        }
        let now = self.clock.now();
        let cost = self.cost_estimate(tenant_id, facts, channel);
        let period =
            chrono::Duration::milliseconds(settings.sms_pumping.block_duration_ms(block.level));
        let updated = self.db.update(
            Tree::FraudBlocks,
            &block_key(tenant_id, &block.prefix),
            |current: Option<PrefixBlock>| {
                let Some(mut current) = current else {
                    return Ok::<_, FlowError>((None, block.clone()));
                };
                if current.active(now) {
                    current.blocked_sends += 1;
                    current.estimated_savings += cost;
                    current.until = current.until.max(now + period);
                }
                Ok((Some(current.clone()), current))
            },
        )?;
        self.cache_block(tenant_id, &updated);
        if updated.active(now) {
            let until = ms(updated.until);
            self.count(host_key(&updated.prefix), ms(now), |counts| {
                counts.blocked_until = counts.blocked_until.max(until);
            });
        }
        Ok(updated)
    }

    /// What one code to `facts` on `channel` would have cost: the cheapest of the
    /// tenant's enabled providers that serve it (0 when it has none).
    pub(crate) fn cost_estimate(
        &self,
        tenant_id: &str,
        facts: &PhoneFacts,
        channel: Channel,
    ) -> f64 {
        let Ok(routing) = self.tenant_routing(tenant_id) else {
            return 0.0;
        };
        routing
            .routes
            .iter()
            .filter(|route| {
                route.enabled && route.serves(channel, &facts.e164, facts.region.as_deref())
            })
            .map(|route| route.cost_per_message)
            .min_by(f64::total_cmp)
            .unwrap_or(0.0)
    }

    /// Drops the oldest records that no longer block, past the per-tenant bound.
    fn prune_blocks(&self, tenant_id: &str) -> Result<(), StoreError> {
        let blocks = self.blocks(tenant_id)?;
        if blocks.len() <= MAX_BLOCKS_PER_TENANT {
            return Ok(());
        }
        let now = self.clock.now();
        let mut stale: Vec<&PrefixBlock> =
            blocks.iter().filter(|block| !block.active(now)).collect();
        stale.sort_by_key(|block| block.created_at);
        for block in stale.iter().take(blocks.len() - MAX_BLOCKS_PER_TENANT) {
            self.db
                .remove(Tree::FraudBlocks, &block_key(tenant_id, &block.prefix))?;
        }
        self.replica.pumping.forget_blocks(tenant_id);
        Ok(())
    }

    fn emit_block(&self, tenant_id: &str, block: &PrefixBlock) {
        let data = serde_json::json!(BlockView {
            tenant_id: tenant_id.to_owned(),
            status: block.status(self.clock.now()),
            block: block.clone(),
        });
        self.emit(tenant_id, crate::webhooks::EventType::PrefixBlocked, data);
    }

    /// Counts a code that went out to `facts`.
    pub(crate) fn pumping_sent(
        &self,
        tenant_id: &str,
        settings: &PhoneSettings,
        facts: &PhoneFacts,
    ) {
        let detector = &settings.sms_pumping;
        if detector.mode == Mode::Off {
            return;
        }
        let now = ms(self.clock.now());
        let prefixes = pumping::prefixes(facts.calling_code, &facts.national_number);
        let number = national_value(facts);
        let deepest = prefixes.len() - 1;
        for (depth, prefix) in prefixes.iter().enumerate() {
            let keep = if depth == deepest { number } else { None };
            self.count(tenant_key(tenant_id, prefix), now, |counts| {
                counts.add_send(detector, now, keep);
            });
            self.count(host_key(prefix), now, |counts| {
                counts.add_send(detector, now, None);
            });
        }
        self.count(total_key(tenant_id), now, |counts| {
            counts.add_send(detector, now, None);
        });
    }

    /// Counts a conversion: the code sent at `sent` to `facts` was verified (or the
    /// app reported the verification verified).
    pub(crate) fn pumping_converted(
        &self,
        tenant_id: &str,
        settings: &PhoneSettings,
        facts: &PhoneFacts,
        sent: DateTime<Utc>,
    ) {
        let detector = &settings.sms_pumping;
        if detector.mode == Mode::Off {
            return;
        }
        let now = ms(self.clock.now());
        let sent = ms(sent);
        for prefix in pumping::prefixes(facts.calling_code, &facts.national_number) {
            self.count(tenant_key(tenant_id, &prefix), now, |counts| {
                counts.add_verified(detector, sent);
            });
            self.count(host_key(&prefix), now, |counts| {
                counts.add_verified(detector, sent);
            });
        }
        self.count(total_key(tenant_id), now, |counts| {
            counts.add_verified(detector, sent);
        });
    }

    /// Writes the unflushed counts into the store, each merged into what is stored with
    /// a compare-and-swap; on a shared store, reads back the entries used in the last
    /// second (at most [`REFRESH_PER_SHARD`] a shard, the latest used first) so what
    /// other replicas counted is seen, however many prefixes a tenant sends to. Entries
    /// unused for a day go.
    pub fn flush_pumping(&self) -> Result<(), StoreError> {
        let now = ms(self.clock.now());
        self.replica
            .pumping
            .flush(self.db.is_shared(), now, |key, pending| {
                if pending.is_empty() {
                    return self.db.get::<Counts>(Tree::PumpingCounts, key);
                }
                self.db
                    .update(Tree::PumpingCounts, key, |stored: Option<Counts>| {
                        let mut merged = stored.unwrap_or_default();
                        merged.merge(pending);
                        // Buckets that left the window the counts were made with go
                        // into the history.
                        merged.roll(&merged.settings(), now);
                        Ok::<_, StoreError>((Some(merged.clone()), merged))
                    })
                    .map(Some)
            })
    }

    /// Flushes the counts every [`FLUSH_INTERVAL`] until `stop`, and once more then.
    pub async fn run_pumping(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let stopping = tokio::select! {
                _ = stop.changed() => true,
                () = tokio::time::sleep(FLUSH_INTERVAL) => *stop.borrow(),
            };
            let engine = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || engine.flush_pumping()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!("pumping counts not flushed: {err}"),
                Err(err) => tracing::error!("pumping counts not flushed: {err}"),
            }
            if stopping {
                return;
            }
        }
    }

    /// The tenant's blocks: `active` (the default), or `all` records kept.
    pub fn fraud_blocks(
        &self,
        tenant_id: &str,
        status: Option<&str>,
    ) -> Result<Vec<BlockView>, FlowError> {
        let now = self.clock.now();
        let all = match status {
            None | Some("active") => false,
            Some("all") => true,
            Some(_) => return Err(FlowError::invalid("status", "must be active or all")),
        };
        let blocks: Vec<PrefixBlock> = self.db.scan(
            Tree::FraudBlocks,
            &key(&[tenant_id, ""]),
            MAX_BLOCKS_PER_TENANT * 2,
            false,
        )?;
        Ok(blocks
            .into_iter()
            .filter(|block| all || block.active(now))
            .map(|block| BlockView {
                tenant_id: tenant_id.to_owned(),
                status: block.status(now),
                block,
            })
            .collect())
    }

    /// Every tenant's active blocks, for the operator.
    pub fn all_fraud_blocks(&self) -> Result<Vec<BlockView>, FlowError> {
        let now = self.clock.now();
        let entries: Vec<(Vec<u8>, PrefixBlock)> =
            self.db
                .scan_entries(Tree::FraudBlocks, b"", 100_000, false)?;
        Ok(entries
            .into_iter()
            .filter(|(_, block)| block.active(now))
            .filter_map(|(key, block)| {
                let key = String::from_utf8(key).ok()?;
                let (tenant_id, _) = key.rsplit_once('/')?;
                Some(BlockView {
                    tenant_id: tenant_id.to_owned(),
                    status: block.status(now),
                    block,
                })
            })
            .collect())
    }

    /// Lifts the tenant's active block of `prefix` (`+447700`, or its digits); the
    /// prefix is not judged again for a window.
    pub async fn lift_fraud_block(
        &self,
        tenant_id: &str,
        prefix: &str,
        by: &'static str,
    ) -> Result<BlockView, FlowError> {
        let digits = prefix.strip_prefix('+').unwrap_or(prefix);
        let prefix = format!("+{digits}");
        if !pumping::is_e164_prefix(&prefix) {
            return Err(FlowError::invalid("prefix", "must be + and 1 to 15 digits"));
        }
        let now = self.clock.now();
        let lifted = self.db.update(
            Tree::FraudBlocks,
            &block_key(tenant_id, &prefix),
            |current: Option<PrefixBlock>| {
                let Some(mut block) = current.filter(|block| block.active(now)) else {
                    return Err(FlowError::NotFound("active block"));
                };
                block.lifted_at = Some(now);
                block.lifted_by = Some(by.to_owned());
                Ok((Some(block.clone()), block))
            },
        )?;
        self.cache_block(tenant_id, &lifted);
        self.changed(&crate::changes::Change::FraudBlocks {
            tenant_id: tenant_id.to_owned(),
        })?;
        self.db.sync().await?;
        Ok(BlockView {
            tenant_id: tenant_id.to_owned(),
            status: lifted.status(now),
            block: lifted,
        })
    }

    /// The prefixes the operator exempts for every tenant, cached.
    pub fn host_exemptions(&self) -> Result<Arc<Vec<String>>, FlowError> {
        if let Some(hit) = self.replica.pumping.exemptions.lock().clone() {
            return Ok(hit);
        }
        let stored: Vec<String> = self
            .db
            .get(Tree::Meta, HOST_EXEMPTIONS)?
            .unwrap_or_default();
        let stored = Arc::new(stored);
        *self.replica.pumping.exemptions.lock() = Some(stored.clone());
        Ok(stored)
    }

    /// Whether the operator exempts `e164` for every tenant.
    fn host_exempt(&self, e164: &str) -> Result<bool, FlowError> {
        Ok(self
            .host_exemptions()?
            .iter()
            .any(|prefix| e164.starts_with(prefix.as_str())))
    }

    /// Replaces the operator's exempt prefixes (each `+` and 1 to 15 digits, at most
    /// 1,000); in force on every replica from the next send.
    pub async fn set_host_exemptions(
        &self,
        prefixes: Vec<String>,
    ) -> Result<Vec<String>, FlowError> {
        if prefixes.len() > MAX_HOST_EXEMPTIONS {
            return Err(FlowError::invalid(
                "prefixes",
                format!("at most {MAX_HOST_EXEMPTIONS} prefixes"),
            ));
        }
        if let Some(at) = prefixes.iter().position(|p| !pumping::is_e164_prefix(p)) {
            return Err(FlowError::invalid(
                format!("prefixes[{at}]"),
                "must be + and 1 to 15 digits",
            ));
        }
        let mut prefixes = prefixes;
        prefixes.sort();
        prefixes.dedup();
        self.db.put(Tree::Meta, HOST_EXEMPTIONS, &prefixes)?;
        *self.replica.pumping.exemptions.lock() = Some(Arc::new(prefixes.clone()));
        self.changed(&crate::changes::Change::FraudExemptions)?;
        self.db.sync().await?;
        Ok(prefixes)
    }

    /// `lift_fraud_block` for the calling tenant.
    pub async fn lift_own_fraud_block(
        &self,
        caller: &Caller,
        prefix: &str,
    ) -> Result<BlockView, FlowError> {
        self.lift_fraud_block(&caller.tenant_id, prefix, "tenant")
            .await
    }
}

/// The error of a fallback step whose prefix is blocked.
pub(crate) fn pumping_refusal(block: &PrefixBlock) -> FlowError {
    FlowError::Conflict {
        code: "sms_pumping_blocked",
        message: format!(
            "the SMS-pumping detector blocks {} until {}: {}",
            block.prefix,
            block
                .until
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            block.description
        ),
    }
}

/// The warning a block puts on the verification: a decline when enforced, a note in
/// monitor mode.
pub(crate) fn pumping_warning(block: &PrefixBlock) -> Warning {
    Warning::new(
        Risk::SmsPumpingSuspected,
        if block.enforced {
            RiskAction::Decline
        } else {
            RiskAction::Approve
        },
        Some(format!(
            "prefix {} blocked until {}: {}",
            block.prefix,
            block
                .until
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            block.description
        )),
    )
}

/// Drops the least recently used clean entry of a full shard (a tenth of them, so
/// eviction is rare).
fn evict(entries: &mut HashMap<Vec<u8>, Entry>) {
    let mut clean: Vec<(i64, Vec<u8>)> = entries
        .iter()
        .filter(|(_, entry)| !entry.dirty())
        .map(|(key, entry)| (entry.touched, key.clone()))
        .collect();
    clean.sort_unstable();
    let drop = (entries.len() / 10).max(1);
    for (_, key) in clean.into_iter().take(drop) {
        entries.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn sends(ledger: &Ledger, key: &[u8], view: impl Fn(&Counts)) {
        let settings = pumping::PumpingSettings::default();
        view(&ledger.view(key, &settings, NOW).expect("in memory"));
    }

    fn window(counts: &Counts) -> u64 {
        counts.window_sends(&pumping::PumpingSettings::default(), NOW)
    }

    fn count_send(ledger: &Ledger, key: &[u8], number: u64) {
        let settings = pumping::PumpingSettings::default();
        ledger.count(key.to_vec(), NOW, |counts| {
            counts.add_send(&settings, NOW, Some(number));
        });
    }

    #[test]
    fn counts_being_written_are_seen_until_their_write_lands_and_never_twice() {
        let ledger = Ledger::default();
        let key = b"t/a/+447400".to_vec();
        for number in 0..8 {
            count_send(&ledger, &key, 7_400_900_100 + number);
        }
        let mut store: Option<Counts> = None;
        ledger
            .flush(false, NOW, |written, pending| {
                assert_eq!(written, key.as_slice());
                // Mid-write, a judged send sees every earlier send and its number.
                sends(&ledger, &key, |view| {
                    assert_eq!(window(view), 8);
                    assert_eq!(view.neighbours(7_400_900_108), 8);
                });
                let mut merged = store.take().unwrap_or_default();
                merged.merge(pending);
                store = Some(merged.clone());
                Ok(Some(merged))
            })
            .expect("flushed");
        sends(&ledger, &key, |view| assert_eq!(window(view), 8));
        count_send(&ledger, &key, 7_400_900_108);
        sends(&ledger, &key, |view| assert_eq!(window(view), 9));
    }

    #[test]
    fn a_failed_write_keeps_its_counts_and_those_not_written_yet() {
        let ledger = Ledger::default();
        let keys: Vec<Vec<u8>> = (0..40)
            .map(|i| format!("t/a/+44{i}").into_bytes())
            .collect();
        for key in &keys {
            count_send(&ledger, key, 1);
        }
        let mut writes = 0;
        let failed = ledger.flush(false, NOW, |_, _| {
            writes += 1;
            Err(StoreError::Backend("the disk is full".into()))
        });
        assert!(failed.is_err());
        assert_eq!(writes, 1, "the flush stops at the first failure");
        for key in &keys {
            sends(&ledger, key, |view| assert_eq!(window(view), 1));
        }
        // The next flush writes each once.
        let mut written = Vec::new();
        ledger
            .flush(false, NOW, |key, pending| {
                written.push(key.to_vec());
                Ok(Some(pending.clone()))
            })
            .expect("flushed");
        written.sort();
        let mut expected = keys.clone();
        expected.sort();
        assert_eq!(written, expected);
        for key in &keys {
            sends(&ledger, key, |view| assert_eq!(window(view), 1));
        }
    }
}
