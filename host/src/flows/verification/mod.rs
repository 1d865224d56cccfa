//! Verification: sending a code, checking it, and the report, with what they share
//! (the analysis of a number for a tenant) and the idempotency of sends.

pub(crate) mod analysis;
pub mod feedback;
pub mod idempotency;
pub(crate) mod report;
pub mod send;
pub mod verify;
