//! The WebSocket gateway at `/ws/chat`.
//!
//! - [`upgrade`]: checks before the upgrade (origin, token, limits), then spawns the session.
//! - [`session`]: one session: reader loop, heartbeat, generation runner.
//! - [`mask_guard`]: closes on unmasked client frames (RFC 6455 §5.1), under fastwebsockets; waits for a frame without a buffer (ADR 0013).
//! - [`writer`]: the task that owns the socket's raw write half; bounded queue = backpressure; one write per batch of queued frames.
//! - [`queue`]: the per-session chat queue and cancel.
//! - [`generation`]: one chat → Ollama → `token` frames → `complete`/`error`.
//! - [`token_frame`]: the allocation-light `token` frame encoder (the hot path).
//! - [`replay`]: resume: per-generation frame logs, takeover by a new session.
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
pub mod replay;
pub mod session;
pub mod token_frame;
pub mod upgrade;
pub mod writer;

pub use manager::{SessionInfo, SessionManager};

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::config::{Config, SharedConfig};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::ready::ReadyProbe;
use conversations::ConversationStore;

/// What the WebSocket subsystem needs from its server, and nothing more:
/// built once by [`crate::state::AppState::new`], shared by the upgrade
/// handler, every session and every generation.
pub struct WsState {
    pub config: SharedConfig,
    pub metrics: Arc<Metrics>,
    /// Verifies the token at the upgrade and gives each client its models.
    pub auth: Arc<Auth>,
    pub sessions: Arc<SessionManager>,
    /// Multi-turn memory, shared by all sessions of a client.
    pub conversations: ConversationStore,
    /// The upstreams a generation asks for a slot.
    pub pool: Arc<crate::upstream::Pool>,
    /// Invalidated when an upstream failure is seen.
    pub ready: Arc<ReadyProbe>,
    /// The per-client chat rate.
    pub limits: Arc<Limits>,
    /// Session and generation tasks, waited for by the drain.
    pub tasks: TaskTracker,
    /// Cancelled when the drain begins: sessions finish their running
    /// answer, refuse new chats, then close with 1001.
    pub draining: CancellationToken,
    /// Resumable generations (issue 17).
    pub resume: Arc<replay::ResumeRegistry>,
    /// The server's root token: parent of resumable generations' tokens,
    /// which outlive their session.
    pub root: CancellationToken,
}

impl WsState {
    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        self.config.get()
    }
}
