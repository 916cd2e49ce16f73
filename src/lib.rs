//! T.A.R.S. gateway: a TLS-terminating WebSocket gateway in front of a local
//! Ollama server. LAN clients connect over WSS, present a JWT, send a chat
//! message and watch Ollama's answer stream back token by token.
//!
//! Embedding: [`serve`]`(config, listener, shutdown)` runs a gateway until
//! `shutdown` resolves and returns after the drain; [`Server`] and [`Handle`]
//! add reload and status for programs that need them. Nothing process-wide
//! (signals, logging, systemd, exit codes) happens outside [`cli`].
//!
//! Module map (request path top to bottom):
//! - [`cli`]: the `tars` command line: logging, signals, systemd glue, exit codes.
//! - [`app`]: the embeddable server: [`serve`], [`Server`], [`Handle`], [`Error`].
//! - [`client`]: `tars chat`, the example WSS client.
//! - [`config`]: `config.toml` + environment → validated, frozen [`config::Config`];
//!   [`config::edit`] changes its `[[auth.clients]]` in place.
//! - [`enroll`]: `tars client add/list/remove/rotate` and `tars pair` (used by [`cli`] only).
//! - [`logging`]: tracing subscriber set-up (text, JSON, journald).
//! - [`server`]: accept loop, TLS handshake, hyper connections, drain ([`server::run`]);
//!   connection facts ([`server::ConnInfo`]) and the origin checks.
//! - [`write_timeout`]: a socket wrapper that fails writes a client stopped taking.
//! - [`tls`]: PEM → rustls config, self-signed generation, swappable certificate.
//! - [`routes`]: the route table and CORS; hands each handler its subsystem's state.
//! - [`status`]: `/` (JSON), `/health`, `/ready`, `/metrics`.
//! - [`response`]: responses, error bodies and bounded request bodies, shared by handlers.
//! - [`api_doc`]: `GET /openapi.json` (generated from the handlers' types), `/docs` (Swagger UI).
//! - [`auth`]: JWTs, registered clients, revocation store, `/auth/*`.
//! - [`ws`]: `/ws/chat` upgrade, sessions, protocol, connection manager.
//! - [`web`]: the embedded browser chat page (`/`, `/static/*`) and `GET /models`.
//! - [`upstream`]: the upstream pool: routing, failover, health, discovery, the OpenAI dialect.
//! - [`ollama`]: pooled Ollama client, NDJSON streaming; [`ollama::Connector`], every
//!   upstream connection (plain or TLS, ADR 0023).
//! - [`ready`]: cached, single-flight Ollama readiness probe.
//! - [`reload`]: config reload, config- and certificate-file polling.
//! - [`systemd`]: sd_notify (ready, status, reload, stop, watchdog) and socket activation (used by [`cli`] only).
//! - [`limits`]: per-IP connection and auth limits, per-client chat limits.
//! - [`metrics`]: Prometheus registry and the seed's JSON metrics.
//! - [`state`]: [`state::AppState`], one server's state composed from the subsystems'
//!   own ([`auth::AuthState`], [`ws::WsState`]); only `app`, `routes` and `reload` use it.

pub mod api_doc;
pub mod app;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod enroll;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod ollama;
pub mod ready;
pub mod reload;
pub mod response;
pub mod routes;
pub mod server;
pub mod state;
pub mod status;
pub mod systemd;
pub mod tls;
pub mod upstream;
pub mod web;
pub mod write_timeout;
pub mod ws;

pub use app::{serve, Error, Handle, Server};
