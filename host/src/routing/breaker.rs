//! A circuit breaker per provider × country: it opens after `failure_threshold`
//! consecutive failures, refuses sends for `open_seconds`, then lets one probe
//! through; the probe's success closes it, its failure opens it again.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::Policy;

/// What routing sees of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    /// Cooled down: the next send is a probe.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// A breaker's state and what it remembers.
#[derive(Debug, Clone, Default)]
pub struct Breaker {
    /// Consecutive failures while closed.
    failures: u32,
    /// When it opened, while open.
    opened_at: Option<DateTime<Utc>>,
    /// When the probe in flight started, while half open.
    probe_since: Option<DateTime<Utc>>,
    /// How many times it opened, for the statistics.
    pub trips: u64,
}

impl Breaker {
    /// Its state at `now`.
    pub fn state(&self, policy: &Policy, now: DateTime<Utc>) -> BreakerState {
        match self.opened_at {
            None => BreakerState::Closed,
            Some(at) if now < at + Duration::seconds(i64::from(policy.open_seconds)) => {
                BreakerState::Open
            }
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether a send may go through now. A half-open breaker admits one probe at a
    /// time; a probe that never reported back is given up after `open_seconds`.
    pub fn admit(&mut self, policy: &Policy, now: DateTime<Utc>) -> bool {
        match self.state(policy, now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => {
                let stale = self.probe_since.is_some_and(|since| {
                    now >= since + Duration::seconds(i64::from(policy.open_seconds))
                });
                if self.probe_since.is_none() || stale {
                    self.probe_since = Some(now);
                    true
                } else {
                    false
                }
            }
        }
    }

    /// A send went through: a probe closes the breaker.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.opened_at = None;
        self.probe_since = None;
    }

    /// A send failed: the breaker opens at the threshold, or again after a failed
    /// probe.
    pub fn failed(&mut self, policy: &Policy, now: DateTime<Utc>) {
        if self.opened_at.is_some() {
            // A failed probe (or a late failure while open) restarts the wait.
            self.opened_at = Some(now);
            self.probe_since = None;
            return;
        }
        self.failures += 1;
        if self.failures >= policy.failure_threshold {
            self.opened_at = Some(now);
            self.probe_since = None;
            self.failures = 0;
            self.trips += 1;
        }
    }

    /// Consecutive failures counted while closed.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}
