//! End-to-end tests of Dialgate: each test starts a real server (in-process on loopback,
//! or the `dialgate` binary for crash tests) and talks HTTP to it.

mod bad_input;
mod cases;
mod containment;
mod crash;
mod flow;
mod kannel;
mod plugins;
mod report;
mod routing;
mod settings;
mod sims;
mod support;
mod templates;
mod tenants;
mod warnings;
mod webhooks;
mod workflows;
