//! What the runtime gives a plugin: the per-call store state (frozen wall clock, virtual
//! monotonic clock, the memory meter) and the host side of the `log`, `clock` and `kv`
//! interfaces.
//!
//! No WASI call may block a host thread on a real timer: epoch interruption stops wasm
//! code, not a host call, so a `std::thread::sleep` in a plugin (monotonic-clock
//! `subscribe-duration` and `poll`) would hold its thread and instance for as long as
//! it asked. The monotonic clock a plugin sees is therefore virtual: its timers are
//! ready at once and waiting on one moves the clock to the timer's instant. A plugin
//! that sleeps in a loop only burns its own fuel and deadline.
//!
//! A plugin's log text is escaped (control characters, line breaks, bidirectional
//! overrides) so it cannot forge the host's own log lines, and is subject to a budget
//! per plugin across calls; its key-value writes are bounded per call and by the
//! plugin's quota (see [`super::storage`]).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::{DynPollable, Pollable};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::storage::{KvFailure, KvTarget, PluginData};

use super::adapters::AdapterCall;
use super::wit::dialgate::plugin::{clock, kv, log, rule_types, types};
use super::{Limits, Scope};

/// Longest key a plugin may use.
const MAX_KEY_BYTES: usize = 256;
/// Largest value a plugin may store.
const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Longest log line kept.
const MAX_LOG_BYTES: usize = 1024;
/// Log lines kept per call; later ones are dropped.
const MAX_LOG_LINES: u32 = 32;
/// Host resources (pollables, streams) a call may hold at once: a plugin that
/// subscribes to timers in a loop without dropping them hits this, not the host's
/// memory.
const MAX_RESOURCES: usize = 1024;
/// Largest `get-random-bytes` answer (wasmtime's default is 64 MiB).
const MAX_RANDOM_BYTES: u64 = 64 << 10;

/// The state of one call's store.
pub struct State {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub meter: Meter,
    /// Plugins' key-value data, accounts and log budgets.
    pub data: PluginData,
    pub scope: Scope,
    pub now_millis: i64,
    pub log_lines: u32,
    /// Where this call's key-value operations go, resolved on first use.
    kv_target: Option<KvTarget>,
    /// Key-value writes this call made.
    kv_writes: u32,
    /// How long this call's key-value operations waited for the store.
    kv_waited: Duration,
    /// What an adapter call is granted: configuration, secrets, outbound hosts.
    pub adapter: Option<Arc<AdapterCall>>,
    /// The virtual monotonic clock, in nanoseconds since the instance was made (a
    /// warm instance's clock goes on from where its last call left it).
    pub monotonic: Arc<AtomicU64>,
    /// The flow's time the wall clock shows, in milliseconds since the epoch.
    wall: Arc<AtomicI64>,
    /// How long the call may run.
    pub time: Duration,
    /// When the call must have ended: outbound HTTP waits at most until then.
    pub deadline: Option<Instant>,
    /// How long the call has run, yields to the scheduler left out.
    pub ran: Arc<RunClock>,
    /// The fraud signals of the event a 0.1 rule's call handles, which its `signals`
    /// interface answers (0.2.0 passes them in the event).
    pub fraud: Option<rule_types::FraudSignals>,
}

/// The time a call has run: the processor time its thread spent on it, so a call is
/// not charged for the time the operating system or the scheduler gave others. The
/// clock runs in segments, each on one thread: a segment ends before anything that
/// waits (a yield at an epoch tick, a key-value operation, an outbound request) and a
/// new one starts, perhaps on another thread, when the call goes on. A segment read
/// from another thread than its own (a wait that was not paused) counts its wall time
/// instead, so a call is never charged less than it ran.
///
/// Reading a thread's processor time is a system call (about 0.7 µs, more than a warm
/// rule's whole call costs in wasm), so the clock reads it only where it can matter.
/// A segment's time is the lesser of two figures that are each at least what it ran:
/// its wall time, and the processor time its thread used since a reading taken at or
/// shortly before the segment began ([`FRESH`]; a thread that ran a call a moment ago
/// lends that call's last reading). A segment shorter than [`EXACT_FROM`] of wall time
/// is charged its wall time without a reading: so short a span can only be overstated
/// by a preemption, and a call is interrupted only far beyond it.
#[derive(Debug)]
pub struct RunClock {
    segments: parking_lot::Mutex<Segments>,
}

/// How old a thread's last processor-time reading may be to serve as a new segment's
/// baseline. The processor time the thread spent on other work in that span is counted
/// to the segment when its time is read from the processor clock, so this is also the
/// most a preempted call is overcharged.
const FRESH: Duration = Duration::from_micros(200);

/// The wall time from which a segment's time is read from the processor clock.
const EXACT_FROM: Duration = Duration::from_micros(500);

/// The closed segments' total, and the open one.
#[derive(Debug)]
struct Segments {
    total: Duration,
    open: Option<Segment>,
}

/// Where and when a segment started, and the processor-time baseline it is read from.
#[derive(Debug, Clone, Copy)]
struct Segment {
    thread: u64,
    cpu: Duration,
    wall: Instant,
}

/// One reading of a thread's processor time, and when it was taken.
#[derive(Debug, Clone, Copy)]
struct Reading {
    cpu: Duration,
    at: Instant,
}

/// Tags that tell threads apart more cheaply than `std::thread::current()`.
static NEXT_THREAD_TAG: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static THREAD_TAG: u64 = NEXT_THREAD_TAG.fetch_add(1, Ordering::Relaxed);
    static LAST_READING: std::cell::Cell<Option<Reading>> = const { std::cell::Cell::new(None) };
}

/// This thread's tag.
fn thread_tag() -> u64 {
    THREAD_TAG.with(|tag| *tag)
}

/// Reads this thread's processor time at `at` and keeps the reading for later segments.
fn read_cpu(at: Instant) -> Duration {
    let cpu = thread_cpu_time();
    LAST_READING.with(|last| last.set(Some(Reading { cpu, at })));
    cpu
}

impl Segment {
    /// A segment starting now on this thread.
    fn here() -> Self {
        let wall = Instant::now();
        let cpu = match LAST_READING.with(std::cell::Cell::get) {
            Some(reading) if wall.saturating_duration_since(reading.at) <= FRESH => reading.cpu,
            _ => read_cpu(wall),
        };
        Self {
            thread: thread_tag(),
            cpu,
            wall,
        }
    }

    fn elapsed(&self) -> Duration {
        let now = Instant::now();
        let wall = now.saturating_duration_since(self.wall);
        if wall < EXACT_FROM || thread_tag() != self.thread {
            return wall;
        }
        wall.min(read_cpu(now).saturating_sub(self.cpu))
    }
}

/// The processor time the current thread has used.
fn thread_cpu_time() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

impl RunClock {
    /// A clock that starts running now, on this thread.
    fn new() -> Self {
        Self {
            segments: parking_lot::Mutex::new(Segments {
                total: Duration::ZERO,
                open: Some(Segment::here()),
            }),
        }
    }

    /// Starts the clock afresh at zero, now, on this thread.
    fn restart(&self) {
        let mut segments = self.segments.lock();
        segments.total = Duration::ZERO;
        segments.open = Some(Segment::here());
    }

    /// How long the call has run.
    pub fn ran(&self) -> Duration {
        let segments = self.segments.lock();
        segments.total + segments.open.map_or(Duration::ZERO, |open| open.elapsed())
    }

    /// Stops the clock before a wait.
    pub fn pause(&self) {
        let mut segments = self.segments.lock();
        if let Some(open) = segments.open.take() {
            segments.total += open.elapsed();
        }
    }

    /// Starts the clock again after a wait, on the thread that goes on with the call.
    pub fn resume(&self) {
        let mut segments = self.segments.lock();
        if segments.open.is_none() {
            segments.open = Some(Segment::here());
        }
    }
}

impl State {
    /// The state of a call for `scope` at the flow's time `now_millis`.
    pub fn new(
        db: &PluginData,
        scope: &Scope,
        now_millis: i64,
        limits: &Limits,
        adapter: Option<Arc<AdapterCall>>,
    ) -> Self {
        let wall = Arc::new(AtomicI64::new(now_millis));
        let monotonic = Arc::new(AtomicU64::new(0));
        let wasi = WasiCtx::builder()
            .wall_clock(FrozenWall(Arc::clone(&wall)))
            .monotonic_clock(VirtualMonotonic(Arc::clone(&monotonic)))
            // Random bytes are allocated on the host's heap, outside the memory cap.
            .max_random_size(MAX_RANDOM_BYTES)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Self {
            wasi,
            table,
            meter: Meter {
                limits: StoreLimitsBuilder::new()
                    .memory_size(limits.memory_bytes)
                    .trap_on_grow_failure(true)
                    .build(),
                peak: 0,
            },
            data: db.clone(),
            scope: scope.clone(),
            now_millis,
            log_lines: 0,
            kv_target: None,
            kv_writes: 0,
            kv_waited: Duration::ZERO,
            adapter,
            monotonic,
            wall,
            time: Duration::from_millis(limits.time_ms),
            deadline: None,
            ran: Arc::new(RunClock::new()),
            fraud: None,
        }
    }

    /// Arms a warm instance's state for its next call at the flow's time `now_millis`:
    /// the wall clock, the run clock and the deadline start afresh, and so do the
    /// per-call log and key-value counts (the key-value target is resolved again, so a
    /// changed quota applies). The scope is the binding's and does not change.
    pub fn rearm(&mut self, now_millis: i64) {
        self.now_millis = now_millis;
        self.wall.store(now_millis, Ordering::Relaxed);
        self.log_lines = 0;
        self.kv_target = None;
        self.kv_writes = 0;
        self.kv_waited = Duration::ZERO;
        self.ran.restart();
        self.deadline = Some(Instant::now() + self.time);
    }
}

/// The memory cap, which also remembers the largest memory a call grew to.
pub struct Meter {
    limits: StoreLimits,
    pub peak: usize,
}

impl ResourceLimiter for Meter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.peak = self.peak.max(desired);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }
}

/// The wall clock a plugin sees: the flow's time, frozen for the call.
struct FrozenWall(Arc<AtomicI64>);

impl HostWallClock for FrozenWall {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.load(Ordering::Relaxed)).unwrap_or(0))
    }
}

/// The monotonic clock a plugin sees: virtual, starting at 0 and moved only by waiting
/// on its own timers.
struct VirtualMonotonic(Arc<AtomicU64>);

impl HostMonotonicClock for VirtualMonotonic {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Links the virtual `wasi:clocks/monotonic-clock` over the one `wasmtime-wasi` links
/// (whose timers are real tokio sleeps). Call after `add_to_linker_sync`.
pub(super) fn link_virtual_clock(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    monotonic_clock::add_to_linker::<State, VirtualClock>(linker, |state| VirtualClockView {
        now: &state.monotonic,
        table: &mut state.table,
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

/// [`HasData`] of the virtual monotonic clock.
struct VirtualClock;

impl HasData for VirtualClock {
    type Data<'a> = VirtualClockView<'a>;
}

/// What the virtual monotonic clock's host functions reach in a call's state.
struct VirtualClockView<'a> {
    now: &'a Arc<AtomicU64>,
    table: &'a mut ResourceTable,
}

impl VirtualClockView<'_> {
    fn subscribe(&mut self, at: u64) -> wasmtime::Result<Resource<DynPollable>> {
        let deadline = self.table.push(VirtualDeadline {
            clock: Arc::clone(self.now),
            at,
        })?;
        wasmtime_wasi::p2::subscribe(self.table, deadline)
    }
}

impl monotonic_clock::Host for VirtualClockView<'_> {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        Ok(self.now.load(Ordering::Relaxed))
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        Ok(1)
    }

    fn subscribe_instant(
        &mut self,
        when: monotonic_clock::Instant,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        self.subscribe(when)
    }

    fn subscribe_duration(
        &mut self,
        duration: monotonic_clock::Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let at = self.now.load(Ordering::Relaxed).saturating_add(duration);
        self.subscribe(at)
    }
}

/// A timer of the virtual clock: always ready; waiting on it moves the clock to its
/// instant (never back).
struct VirtualDeadline {
    clock: Arc<AtomicU64>,
    at: u64,
}

#[wasmtime_wasi::async_trait]
impl Pollable for VirtualDeadline {
    async fn ready(&mut self) {
        self.clock.fetch_max(self.at, Ordering::Relaxed);
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for State {}
impl rule_types::Host for State {}

impl log::Host for State {
    fn write(&mut self, level: log::Level, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            return;
        }
        // Escaping at most quadruples a character; cut first so a huge message costs little.
        let mut cut = message.len().min(MAX_LOG_BYTES);
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        let escaped = escape_log(&message[..cut]);
        let mut end = escaped.len().min(MAX_LOG_BYTES);
        while !escaped.is_char_boundary(end) {
            end -= 1;
        }
        let text = &escaped[..end];
        let target = self.kv_target().clone();
        if !self.data.admit_log(&target, text.len(), self.now_millis) {
            return;
        }
        let (tenant, plugin) = (&self.scope.tenant_id, &self.scope.plugin_id);
        match level {
            log::Level::Trace => tracing::trace!(tenant, plugin, "{text}"),
            log::Level::Debug => tracing::debug!(tenant, plugin, "{text}"),
            log::Level::Info => tracing::info!(tenant, plugin, "{text}"),
            log::Level::Warn => tracing::warn!(tenant, plugin, "{text}"),
            log::Level::Error => tracing::error!(tenant, plugin, "{text}"),
        }
    }
}

/// `message` with backslashes, control characters (line breaks included), Unicode
/// line and paragraph separators and bidirectional controls escaped as Rust escapes,
/// so one plugin message stays one line of the host's log and reads as what it is.
pub fn escape_log(message: &str) -> String {
    let mut escaped = String::with_capacity(message.len());
    for c in message.chars() {
        let hidden = c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c);
        if c == '\\' {
            escaped.push_str("\\\\");
        } else if hidden {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    escaped
}

impl clock::Host for State {
    fn now_millis(&mut self) -> i64 {
        self.now_millis
    }
}

impl State {
    /// Where this call's key-value operations go.
    fn kv_target(&mut self) -> &KvTarget {
        let (data, scope) = (&self.data, &self.scope);
        self.kv_target.get_or_insert_with(|| data.target(scope))
    }

    fn check_key(name: &str) -> Result<(), kv::KvError> {
        if name.is_empty() || name.len() > MAX_KEY_BYTES {
            return Err(kv::KvError::BadKey(format!(
                "keys are 1 to {MAX_KEY_BYTES} bytes"
            )));
        }
        Ok(())
    }

    /// Counts a write against the per-call cap.
    fn count_write(&mut self) -> Result<(), kv::KvError> {
        self.kv_writes += 1;
        if self.kv_writes > self.data.limits().kv_max_writes_per_call {
            return Err(kv::KvError::QuotaExceeded);
        }
        Ok(())
    }

    fn kv_write<R>(
        &mut self,
        name: &str,
        change: impl Fn(Option<&[u8]>) -> Result<(Option<Vec<u8>>, R), KvFailure>,
    ) -> Result<R, kv::KvError> {
        Self::check_key(name)?;
        self.count_write()?;
        self.in_store(|data, target| data.write(target, name, change))
    }

    /// How long this call's key-value operations have waited for the store.
    #[cfg(test)]
    pub fn kv_waited(&self) -> Duration {
        self.kv_waited
    }

    /// Runs one key-value operation against the store, within the call's store time:
    /// the wait is counted there and left out of the call's run time.
    fn in_store<R>(
        &mut self,
        operation: impl FnOnce(&PluginData, &KvTarget) -> Result<R, KvFailure>,
    ) -> Result<R, kv::KvError> {
        let budget = Duration::from_millis(self.data.limits().kv_time_ms_per_call);
        if self.kv_waited >= budget {
            return Err(kv::KvError::Unavailable(format!(
                "the call spent its {} ms of key-value time",
                budget.as_millis()
            )));
        }
        let target = self.kv_target().clone();
        self.ran.pause();
        let started = Instant::now();
        let result = operation(&self.data, &target);
        self.kv_waited += started.elapsed();
        self.ran.resume();
        result.map_err(kv_error)
    }
}

fn kv_error(failure: KvFailure) -> kv::KvError {
    match failure {
        KvFailure::Quota => kv::KvError::QuotaExceeded,
        KvFailure::Gone => kv::KvError::Unavailable("the plugin was deleted".to_owned()),
        KvFailure::Store(message) => kv::KvError::Unavailable(message),
    }
}

/// A failure `increment` reports for a value that is not a counter.
const NOT_A_COUNTER: &str = "not a counter";

impl kv::Host for State {
    fn get(&mut self, name: String) -> Result<Option<Vec<u8>>, kv::KvError> {
        Self::check_key(&name)?;
        self.in_store(|data, target| data.get(target, &name))
    }

    fn set(&mut self, name: String, value: Vec<u8>) -> Result<(), kv::KvError> {
        if value.len() > MAX_VALUE_BYTES {
            Self::check_key(&name)?;
            return Err(kv::KvError::ValueTooLarge(
                u32::try_from(MAX_VALUE_BYTES).unwrap_or(u32::MAX),
            ));
        }
        self.kv_write(&name, |_| Ok((Some(value.clone()), ())))
    }

    fn delete(&mut self, name: String) -> Result<(), kv::KvError> {
        self.kv_write(&name, |_| Ok((None, ())))
    }

    /// Counters are stored as their decimal text, so `get` reads them as such.
    fn increment(&mut self, name: String, delta: i64) -> Result<i64, kv::KvError> {
        let counted = self.kv_write(&name, |current| {
            let Some(bytes) = current else {
                return Ok((Some(delta.to_string().into_bytes()), Ok(delta)));
            };
            match std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| text.parse::<i64>().ok())
            {
                Some(value) => {
                    let next = value.saturating_add(delta);
                    Ok((Some(next.to_string().into_bytes()), Ok(next)))
                }
                None => Ok((Some(bytes.to_vec()), Err(NOT_A_COUNTER))),
            }
        })?;
        counted.map_err(|_| {
            kv::KvError::BadKey(format!("{name:?} holds a value that is not a counter"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{read_cpu, thread_cpu_time, RunClock, FRESH};
    use std::time::{Duration, Instant};

    /// Spins until this thread has used `cpu` more processor time.
    fn spin(cpu: Duration) {
        let until = thread_cpu_time() + cpu;
        while thread_cpu_time() < until {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn a_call_is_charged_the_processor_time_it_used_not_the_time_it_waited() {
        let clock = RunClock::new();
        // Asleep, the thread uses no processor time: as the operating system giving
        // the processor to other threads does to a call.
        std::thread::sleep(Duration::from_millis(60));
        assert!(clock.ran() < Duration::from_millis(30), "{:?}", clock.ran());
        spin(Duration::from_millis(20));
        let ran = clock.ran();
        assert!(ran >= Duration::from_millis(20), "{ran:?}");
        // Paused, the clock stands still however busy the thread is.
        clock.pause();
        spin(Duration::from_millis(20));
        assert!(
            clock.ran() < ran + Duration::from_millis(1),
            "{:?}",
            clock.ran()
        );
        clock.resume();
        spin(Duration::from_millis(10));
        assert!(clock.ran() >= ran + Duration::from_millis(10));
        assert!(clock.ran() < ran + Duration::from_millis(30));
    }

    #[test]
    fn a_clock_that_borrows_a_recent_reading_overcharges_a_preempted_call_at_most_that_much() {
        // A reading a moment ago serves as the new clock's baseline, so the processor
        // time this thread spends between the two is counted to the call.
        read_cpu(Instant::now());
        spin(FRESH / 2);
        let clock = RunClock::new();
        std::thread::sleep(Duration::from_millis(30));
        let ran = clock.ran();
        assert!(ran < FRESH + Duration::from_millis(5), "{ran:?}");
    }

    #[test]
    fn a_segment_read_on_another_thread_counts_its_wall_time() {
        let clock = RunClock::new();
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(40));
        let elsewhere = std::thread::scope(|scope| {
            scope
                .spawn(|| clock.ran())
                .join()
                .expect("the other thread")
        });
        assert!(elsewhere >= Duration::from_millis(40), "{elsewhere:?}");
        assert!(elsewhere <= started.elapsed());
    }
}
