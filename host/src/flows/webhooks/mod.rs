//! Webhooks as the flows drive them: emitting events into the delivery queue, the
//! subscriptions' management, and the delivery worker. The records, the event
//! catalogue and signing are in [`crate::webhooks`].

pub mod emit;
pub mod subscriptions;
pub mod worker;
