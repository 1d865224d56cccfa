//! Sliding-window statistics of one provider × country: sends tried, accepted,
//! failed and timed out, the time a provider took to accept, and what its delivery
//! receipts said. Counts live in buckets a twentieth of the window wide, so reading
//! and recording cost the same at any traffic.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Policy;

/// Buckets per window.
const BUCKETS: i64 = 20;

/// What happened to one attempt or message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// The provider accepted the message after this many milliseconds.
    Accepted { latency_ms: u64 },
    /// The provider refused or failed.
    Error,
    /// The provider did not answer in time.
    Timeout,
    /// A receipt said delivered, this long after the send.
    Delivered { after_ms: u64 },
    /// A receipt said failed or expired.
    Undelivered,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    attempts: u64,
    accepted: u64,
    errors: u64,
    timeouts: u64,
    latency_ms: u64,
    delivered: u64,
    undelivered: u64,
    delivery_ms: u64,
}

/// Buckets of counts, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    width_secs: i64,
    buckets: VecDeque<(i64, Counts)>,
}

/// The statistics over the window, and the score `best_performance` ranks by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Performance {
    pub attempts: u64,
    pub accepted: u64,
    pub errors: u64,
    pub timeouts: u64,
    /// Share of attempts that failed or timed out.
    pub error_rate: f64,
    /// Mean time to accept, in milliseconds.
    pub mean_latency_ms: Option<f64>,
    pub delivered: u64,
    pub undelivered: u64,
    /// Share of receipts that said delivered.
    pub delivery_rate: Option<f64>,
    /// Mean time from send to the delivered receipt, in milliseconds.
    pub mean_delivery_ms: Option<f64>,
    pub score: f64,
}

impl Performance {
    /// `acceptance × delivery ÷ (1 + seconds to accept)`, where acceptance and
    /// delivery are Laplace-smoothed rates (`(ok + 1) / (n + 2)`), so a provider with
    /// no history scores as an even chance rather than as perfect or useless.
    pub fn score(&self) -> f64 {
        self.score
    }
}

impl Stats {
    fn width(policy: &Policy) -> i64 {
        (i64::from(policy.window_seconds) / BUCKETS).max(1)
    }

    /// Counts `outcome` at `now`.
    pub fn record(&mut self, policy: &Policy, now: DateTime<Utc>, outcome: Outcome) {
        let width = Self::width(policy);
        if width != self.width_secs {
            self.width_secs = width;
            self.buckets.clear();
        }
        let index = now.timestamp().div_euclid(width);
        while self
            .buckets
            .front()
            .is_some_and(|(at, _)| *at <= index - BUCKETS)
        {
            self.buckets.pop_front();
        }
        if self.buckets.back().is_none_or(|(at, _)| *at < index) {
            self.buckets.push_back((index, Counts::default()));
        }
        // A clock that went back counts in the newest bucket.
        let Some((_, counts)) = self.buckets.back_mut() else {
            return;
        };
        match outcome {
            Outcome::Accepted { latency_ms } => {
                counts.attempts += 1;
                counts.accepted += 1;
                counts.latency_ms += latency_ms;
            }
            Outcome::Error => {
                counts.attempts += 1;
                counts.errors += 1;
            }
            Outcome::Timeout => {
                counts.attempts += 1;
                counts.timeouts += 1;
            }
            Outcome::Delivered { after_ms } => {
                counts.delivered += 1;
                counts.delivery_ms += after_ms;
            }
            Outcome::Undelivered => counts.undelivered += 1,
        }
    }

    /// The statistics of the window ending at `now`.
    pub fn performance(&self, policy: &Policy, now: DateTime<Utc>) -> Performance {
        let width = Self::width(policy);
        let mut total = Counts::default();
        if width == self.width_secs {
            let index = now.timestamp().div_euclid(width);
            for (_, counts) in self.buckets.iter().filter(|(at, _)| *at > index - BUCKETS) {
                total.attempts += counts.attempts;
                total.accepted += counts.accepted;
                total.errors += counts.errors;
                total.timeouts += counts.timeouts;
                total.latency_ms += counts.latency_ms;
                total.delivered += counts.delivered;
                total.undelivered += counts.undelivered;
                total.delivery_ms += counts.delivery_ms;
            }
        }
        let ratio = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);
        let mean_latency_ms = ratio(total.latency_ms, total.accepted);
        let receipts = total.delivered + total.undelivered;
        let acceptance = (total.accepted as f64 + 1.0) / (total.attempts as f64 + 2.0);
        let delivery = (total.delivered as f64 + 1.0) / (receipts as f64 + 2.0);
        let seconds = mean_latency_ms.unwrap_or(0.0) / 1000.0;
        Performance {
            attempts: total.attempts,
            accepted: total.accepted,
            errors: total.errors,
            timeouts: total.timeouts,
            error_rate: ratio(total.errors + total.timeouts, total.attempts).unwrap_or(0.0),
            mean_latency_ms,
            delivered: total.delivered,
            undelivered: total.undelivered,
            delivery_rate: ratio(total.delivered, receipts),
            mean_delivery_ms: ratio(total.delivery_ms, total.delivered),
            score: acceptance * delivery / (1.0 + seconds),
        }
    }
}
