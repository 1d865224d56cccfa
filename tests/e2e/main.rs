//! End-to-end tests of Dialgate: each test starts a real server (in-process on loopback,
//! or the `dialgate` binary for crash tests) and talks HTTP to it.

mod analytics;
mod bad_input;
mod cases;
mod console;
mod containment;
mod crash;
mod egress;
mod feedback;
mod flow;
mod hardening;
mod kannel;
mod line_checks;
mod metrics;
mod openapi;
mod permissions;
mod plugin_storage;
mod plugins;
mod postgres;
mod pumping;
mod report;
mod retention;
mod routing;
mod secrets;
mod settings;
mod sims;
mod spend;
mod support;
mod templates;
mod tenants;
mod tracing;
mod warnings;
mod webhook_fairness;
mod webhooks;
mod workflow_bounds;
mod workflows;
