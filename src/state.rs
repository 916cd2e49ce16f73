//! The state every request handler and session shares: the frozen config,
//! metrics, the Ollama client, auth, the session manager, and the one
//! cancellation tree the whole server hangs off.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::auth::{Auth, AuthInitError};
use crate::config::Config;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::ollama::OllamaClient;
use crate::ready::ReadyProbe;
use crate::tls::{CertStore, TlsError};
use crate::ws::conversations::ConversationStore;
use crate::ws::SessionManager;

/// Why the gateway could not start from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{path}: {source}")]
    Tls { path: String, source: TlsError },
    #[error("{path}: {source}")]
    Auth { path: String, source: AuthInitError },
}

/// Shared by every connection.
pub struct AppState {
    config: ArcSwap<Config>,
    pub metrics: Arc<Metrics>,
    pub ollama: ArcSwap<OllamaClient>,
    pub ready: ReadyProbe,
    /// Per-IP and per-client abuse limits.
    pub limits: Limits,
    pub auth: Auth,
    pub sessions: Arc<SessionManager>,
    /// Multi-turn memory, shared by all sessions of a client.
    pub conversations: ConversationStore,
    /// `None` when `tls.enabled = false`.
    pub certs: Option<Arc<CertStore>>,
    /// Root of the cancellation tree: cancelled once, at shutdown.
    pub shutdown: CancellationToken,
    /// Every spawned connection and session task, for the drain.
    pub tasks: TaskTracker,
    pub started: Instant,
}

impl AppState {
    /// Build the state from a validated config: load (or generate) the TLS
    /// certificate, the JWT key and the revocation store.
    pub fn new(config: Config, shutdown: CancellationToken) -> Result<Arc<Self>, StartError> {
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
        let ollama = OllamaClient::new(&config.ollama);
        let limits = Limits::new(&config.limits);
        Ok(Arc::new(Self {
            sessions: Arc::new(SessionManager::new()),
            conversations: ConversationStore::default(),
            config: ArcSwap::from_pointee(config),
            metrics: Arc::new(Metrics::new()),
            ollama: ArcSwap::from_pointee(ollama),
            ready: ReadyProbe::default(),
            limits,
            auth,
            certs,
            shutdown,
            tasks: TaskTracker::new(),
            started: Instant::now(),
        }))
    }

    /// The configuration in force now. Hold the `Arc` for the length of one
    /// request or generation, not longer.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Start the drain: tell every session first (the notice is queued
    /// ahead of any close frame), then cancel the root token.
    pub fn begin_shutdown(&self) {
        let notice = crate::ws::protocol::system(
            "server shutting down: finishing running answers, then closing",
        );
        self.sessions.broadcast(notice.into(), None);
        self.shutdown.cancel();
    }

    /// Replace the configuration (reload). Open sessions keep what they hold.
    pub fn replace_config(&self, config: Config) {
        self.config.store(Arc::new(config));
    }
}
