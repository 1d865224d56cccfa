//! Getting a code to a phone: the tenant's stored providers and routing policy,
//! routed sends with failover, dispatch through messaging adapters or the host's
//! sender, delivery receipts, and brands and templates.

pub(crate) mod delivery;
pub mod dispatch;
pub mod providers;
pub mod routed;
pub(crate) mod templates;
