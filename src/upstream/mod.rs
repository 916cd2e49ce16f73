//! The upstream pool: several Ollama hosts and OpenAI-compatible servers
//! behind one gateway (issue 16). Knows no WebSocket: it hands the
//! generation an open answer ([`UpstreamStream`], read as
//! [`crate::ollama::ChatLine`]s whatever the dialect) and the slot it holds.
//!
//! - [`pool`]: [`Pool`]: members, slots (`max_concurrent`), picking, the wait queue.
//! - [`open`]: [`open()`]: send a chat, failing over before the first token.
//! - [`member`]: [`Upstream`]: one backend, its health (circuit breaker), models, `/api/ps`.
//! - [`health`]: the probe and discovery loop.
//! - [`openai`]: the OpenAI dialect client and its SSE answer stream.
//! - [`openai_sse`]: the SSE parser (the OpenAI hot path).
//! - [`stream`]: [`UpstreamStream`], either dialect's answer.
//! - [`metrics`]: the per-upstream Prometheus series.
//! - [`survey`]: `tars upstreams`: every upstream asked now, as a table.

pub mod health;
pub mod member;
pub mod metrics;
pub mod open;
pub mod openai;
pub mod openai_sse;
pub mod pool;
pub mod stream;
pub mod survey;

pub use member::{Upstream, UpstreamStatus};
pub use open::{open, OpenError, Opened};
pub use pool::{AcquireError, Lease, Pool, Wait};
pub use stream::UpstreamStream;
