//! What a metrics scrape reads from the engine's state: the circuit breakers' states
//! and the webhook backlog, set on the gauges at scrape time rather than kept current
//! on every change.

use std::collections::HashMap;

use crate::metrics::Gauges;

use super::Engine;

/// Most webhook schedule entries a scrape counts.
const BACKLOG_CAP: usize = 100_000;

impl Engine {
    /// Sets the gauges read at scrape time: breakers per provider and state (each
    /// tenant's under its routing policy), and the webhook backlog. A store that
    /// fails leaves the backlog as it was, and is logged.
    pub fn refresh_gauges(&self, gauges: &Gauges<'_>) {
        let now = self.clock.now();
        let ledger = &self.replica.routing.ledger;
        for tenant in ledger.tenants() {
            let routing = match self.tenant_routing(&tenant) {
                Ok(routing) => routing,
                Err(err) => {
                    tracing::warn!(tenant = %tenant, "breaker states not read: {err}");
                    continue;
                }
            };
            let mut states: HashMap<(String, &'static str), i64> = HashMap::new();
            for (provider, _country, cell) in ledger.cells_of(&tenant) {
                let state = cell.breaker.lock().state(&routing.policy, now);
                *states.entry((provider, state.as_str())).or_default() += 1;
            }
            for ((provider, state), count) in states {
                gauges.breakers(&provider, state, count);
            }
        }
        match super::webhooks::worker::backlog(self, now.timestamp_millis(), BACKLOG_CAP) {
            Ok(count) => gauges.webhook_backlog(i64::try_from(count).unwrap_or(i64::MAX)),
            Err(err) => tracing::warn!(error = %err, "webhook backlog not read"),
        }
    }
}
