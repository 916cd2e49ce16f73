//! The WebSocket gateway at `/ws/chat`.
//!
//! - [`upgrade`]: checks before the upgrade (origin, token, limits), then spawns the session.
//! - [`session`]: one session: reader loop, heartbeat, generation runner.
//! - [`mask_guard`]: closes on unmasked client frames (RFC 6455 §5.1), under fastwebsockets.
//! - [`writer`]: the task that owns the socket's write half; bounded queue = backpressure.
//! - [`queue`]: the per-session chat queue and cancel.
//! - [`generation`]: one chat → Ollama → `token` frames → `complete`/`error`.
//! - [`token_frame`]: the allocation-light `token` frame encoder (the hot path).
//! - [`protocol`]: client message parsing and the other server frames.
//! - [`manager`]: all sessions, limits, broadcast, revocation.
//! - [`conversations`]: bounded multi-turn memory.
//! - [`handlers`]: `/ws/health`, `/ws/sessions`.

pub mod conversations;
pub mod generation;
pub mod handlers;
pub mod manager;
pub mod mask_guard;
pub mod protocol;
pub mod queue;
pub mod session;
pub mod token_frame;
pub mod upgrade;
pub mod writer;

pub use manager::{SessionInfo, SessionManager};
