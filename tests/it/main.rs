//! The in-process integration tests: one test binary (one link) for every
//! test that talks to the gateway over its sockets. Each server runs
//! in-process through `tars::serve` on an ephemeral port
//! ([`support::server`]), in front of an in-process fake Ollama, and is
//! reached by real TLS and WebSocket clients. Grouped by subsystem.
//!
//! Also here, to keep to one link: the crate's module graph
//! (`module_graph`), which reads `src/`.
//!
//! Tests of the process itself (CLI, signals, systemd, exit codes) are in
//! `tests/process/`.

#[path = "../support/mod.rs"]
mod support;

mod auth;
mod auth_attacks;
mod conformance;
mod embed;
mod examples;
mod hardening;
mod http;
mod http_limits;
mod module_graph;
mod pairing;
mod pool;
mod props;
mod reload;
mod resume;
mod shutdown_midframe;
mod token_counts;
mod upstream;
mod upstream_conn;
mod upstream_tls;
mod ws_chat;
mod ws_writer;
