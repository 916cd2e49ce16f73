//! Tests of the `tars` process itself, which start the binary as a
//! subprocess ([`support::process`]): the command line and its exit codes,
//! bad configurations, signals and the drain, SIGHUP reload, systemd notify
//! and socket activation, the log file, persistence across `kill -9`, and
//! the process's descriptor table. One test binary.

#[path = "../support/mod.rs"]
mod support;

mod auth_cli;
mod client_cli;
mod config_errors;
mod credentials;
mod lifecycle;
mod live_sessions;
mod pair_cli;
mod persistence;
mod service;
mod systemd_unit;
