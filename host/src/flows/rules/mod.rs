//! What tenants program: firing a trigger (their rule plugins and declarative rules,
//! the actions applied, the audit trail) and the management of declarative rules.

pub mod stats;
pub mod triggers;
pub mod workflows;
