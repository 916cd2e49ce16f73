//! One server's state, composed at the top: the shared pieces (config,
//! metrics, limits, the Ollama client and its readiness probe, the
//! cancellation root and the task tracker) and the subsystems built from
//! them, each given only what it needs ([`AuthState`] for `/auth/*`,
//! [`WsState`] for `/ws/*`). Nothing below this module imports it: the route
//! table hands each handler its own subsystem's state.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::auth::{Auth, AuthInitError, AuthState};
use crate::config::{Config, SharedConfig};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::ready::ReadyProbe;
use crate::server::Listener;
use crate::tls::{CertStore, TlsError};
use crate::upstream::Pool;
use crate::ws::conversations::ConversationStore;
use crate::ws::{SessionManager, WsState};

/// Why the gateway could not start from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{path}: {source}")]
    Tls { path: String, source: TlsError },
    #[error("{path}: {source}")]
    Auth { path: String, source: AuthInitError },
}

/// How many chats may wait for an upstream slot: one per possible session
/// (a session runs one generation at a time), so the bound only bites when
/// `max_connections` is lowered.
pub fn pool_queue(config: &Config) -> usize {
    config.websocket.max_connections.max(1)
}

/// One server's state, shared by every connection.
pub struct AppState {
    pub config: SharedConfig,
    pub metrics: Arc<Metrics>,
    /// The upstreams; changed in place on reload.
    pub pool: Arc<Pool>,
    pub ready: Arc<ReadyProbe>,
    /// Per-IP and per-client abuse limits.
    pub limits: Arc<Limits>,
    /// The `/auth/*` subsystem.
    pub auth: Arc<AuthState>,
    /// The `/ws/*` subsystem: sessions, conversations, generations.
    pub ws: Arc<WsState>,
    /// `None` when `tls.enabled = false`.
    pub certs: Option<Arc<CertStore>>,
    /// Root of the cancellation tree: cancelled when the drain's grace
    /// period is over (or the drain ended). Every session's token is a
    /// child, every generation's a grandchild.
    pub stop: CancellationToken,
    /// A child of `stop`, cancelled when the drain begins: no new
    /// connections or chats; running answers finish.
    pub shutdown: CancellationToken,
    /// Every spawned connection and session task, for the drain.
    pub tasks: TaskTracker,
    /// `[server] max_http_connections` permits (restart only).
    pub http_slots: Arc<tokio::sync::Semaphore>,
    pub started: Instant,
}

impl AppState {
    /// Build the state from a validated config: load (or generate) the TLS
    /// certificate, the JWT key and the revocation store.
    pub fn new(config: Config) -> Result<Arc<Self>, StartError> {
        let path = config.source.display().to_string();
        let tls_err = |source| StartError::Tls {
            path: path.clone(),
            source,
        };
        let (cert, key) = (&config.tls.cert, &config.tls.key);
        let generate = config.tls.enabled && !cert.exists() && !key.exists();
        // Existing certificate files are checked before anything else logs,
        // so a bad one is refused in one line ...
        let mut certs = if config.tls.enabled && !generate {
            let ck = crate::tls::load_certified_key(cert, key).map_err(tls_err)?;
            Some(CertStore::new(ck))
        } else {
            None
        };
        // ... and a new one is generated only after the signing key loaded,
        // so a refused key does not leave a fresh certificate behind.
        let auth = Auth::new(&config).map_err(|source| StartError::Auth {
            path: path.clone(),
            source,
        })?;
        if generate {
            let names = crate::tls::default_names(&[]);
            let fp = crate::tls::generate_self_signed(cert, key, &names).map_err(tls_err)?;
            warn!(
                cert = %cert.display(),
                names = %names.join(","),
                sha256 = %fp,
                "no certificate found: created a self-signed one; pin this fingerprint on clients"
            );
            let ck = crate::tls::load_certified_key(cert, key).map_err(tls_err)?;
            certs = Some(CertStore::new(ck));
        }
        let limits = Arc::new(Limits::new(&config.limits));
        let http_slots = Arc::new(tokio::sync::Semaphore::new(
            config.server.max_http_connections,
        ));
        let metrics = Arc::new(Metrics::new());
        let pool = Pool::new(&config, pool_queue(&config), metrics.clone());
        let config = SharedConfig::new(config);
        let ready = Arc::new(ReadyProbe::default());
        let auth = Arc::new(auth);
        let stop = CancellationToken::new();
        let shutdown = stop.child_token();
        let tasks = TaskTracker::new();
        let sessions = Arc::new(SessionManager::new(stop.clone()));
        let ws = Arc::new(WsState {
            config: config.clone(),
            metrics: metrics.clone(),
            auth: auth.clone(),
            sessions: sessions.clone(),
            conversations: ConversationStore::default(),
            pool: pool.clone(),
            ready: ready.clone(),
            limits: limits.clone(),
            tasks: tasks.clone(),
            draining: shutdown.clone(),
            resume: Arc::new(crate::ws::replay::ResumeRegistry::new(metrics.clone())),
            root: stop.clone(),
        });
        let auth = Arc::new(AuthState {
            auth,
            metrics: metrics.clone(),
            config: config.clone(),
            sessions,
            limits: limits.clone(),
        });
        Ok(Arc::new(Self {
            config,
            metrics,
            pool,
            ready,
            limits,
            auth,
            ws,
            certs,
            stop,
            shutdown,
            tasks,
            http_slots,
            started: Instant::now(),
        }))
    }

    /// What the accept loop needs.
    pub fn listener(&self) -> Listener {
        Listener {
            config: self.config.clone(),
            limits: self.limits.clone(),
            metrics: self.metrics.clone(),
            certs: self.certs.clone(),
            tasks: self.tasks.clone(),
            draining: self.shutdown.clone(),
            stop: self.stop.clone(),
            http_slots: self.http_slots.clone(),
        }
    }

    /// The configuration in force now. Hold the `Arc` for the length of one
    /// request or generation, not longer.
    pub fn config(&self) -> Arc<Config> {
        self.config.get()
    }

    /// Start the drain: tell every session first (the notice is queued
    /// ahead of any close frame), then cancel the root token.
    pub fn begin_shutdown(&self) {
        let notice = crate::ws::protocol::system(
            "server shutting down: finishing running answers, then closing",
        );
        self.ws.sessions.broadcast(notice.into(), None);
        self.shutdown.cancel();
    }

    /// Replace the configuration (reload). Open sessions keep what they hold.
    pub fn replace_config(&self, config: Config) {
        self.config.replace(config);
    }
}
