//! What tenants program: firing a trigger (their rule plugins and declarative rules,
//! the actions applied, the audit trail), the management of declarative rules, and
//! backtests of candidate rules over recorded traffic.

pub mod backtest;
pub mod stats;
pub mod triggers;
pub mod workflows;
