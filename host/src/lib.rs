//! Dialgate: a programmable, self-hostable phone-verification host.
//!
//! The crate is the server library behind the `dialgate` binary. ARCHITECTURE.md
//! maps its modules; the README documents the HTTP API.

pub mod analytics;
pub mod api;
pub mod bench;
pub mod changes;
pub mod cli;
pub mod clock;
pub mod config;
pub mod disposable;
pub mod egress;
pub mod error;
pub mod flows;
pub mod kannel;
mod layering;
pub mod limits;
pub mod logs;
pub mod messages;
pub mod metrics;
pub mod model;
pub mod otp;
pub mod permissions;
pub mod phone;
pub mod plugin_backtest;
pub mod plugin_new;
pub mod plugin_run;
pub mod plugins;
pub mod pumping;
pub mod routing;
pub mod secrets;
pub mod sending;
pub mod server;
pub mod settings;
pub mod spend;
pub mod store;
pub mod templates;
pub mod warnings;
pub mod webhooks;
pub mod workflows;
