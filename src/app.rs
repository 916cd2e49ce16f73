//! The embeddable server: [`serve`] (mini-redis's `server::run`) and the
//! [`Server`] / [`Handle`] pair behind it, for programs that also reload.
//!
//! `serve(config, listener, shutdown)` builds the state from a validated
//! config (certificate, signing key, revocation store), serves on the bound
//! listener until `shutdown` resolves, drains, and returns. It never exits
//! the process, installs no signal handler and no global tracing subscriber,
//! and keeps nothing in process-global state (metrics live in the server's
//! own registry), so two servers run side by side in one process. The `tars`
//! binary ([`crate::cli`]) owns signals, logging, systemd and exit codes on
//! top of this; see docs/adr/0005-embedding-api.md.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError};
use crate::reload::ReloadError;
use crate::state::{AppState, StartError};

/// Why the server could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration was refused (from [`crate::config::load`] or
    /// [`crate::config::from_toml_str`]).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A valid configuration that cannot be served: the certificate or the
    /// signing key does not load.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The listener is unusable (its local address cannot be read).
    #[error("the listener cannot be used: {0}")]
    Listener(#[source] std::io::Error),
}

impl Error {
    /// True when the fix is in the configuration (the `tars` binary exits 2).
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Config(_) | Self::Start(_))
    }
}

/// Serve `config` on `listener` until `shutdown` resolves, then drain
/// (running answers finish within `server.shutdown_grace_secs`) and return.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    Server::new(config)?.run(listener, shutdown).await
}

/// A gateway built from a config but not yet serving. [`Server::handle`]
/// gives the controls (reload, shutdown, status) before [`Server::run`]
/// consumes it.
pub struct Server {
    state: Arc<AppState>,
}

impl Server {
    /// Build the state: load (or generate) the TLS certificate, the JWT key
    /// and the revocation store. No task is started and nothing listens yet.
    pub fn new(config: Config) -> Result<Self, Error> {
        let state = AppState::new(config)?;
        Ok(Self { state })
    }

    /// Controls that stay usable while [`Self::run`] runs.
    pub fn handle(&self) -> Handle {
        Handle {
            state: self.state.clone(),
        }
    }

    /// Serve until `shutdown` resolves (or [`Handle::shutdown`] is called),
    /// then drain and return.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let state = self.state;
        let addr = listener.local_addr().map_err(Error::Listener)?;
        {
            let state = state.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown => {
                        info!("shutdown requested: no new connections, draining");
                        state.begin_shutdown();
                    }
                    _ = state.shutdown.cancelled() => {}
                }
            });
        }
        // Background tasks end when the drain begins; they are awaited so
        // that nothing of this server outlives `run`.
        let mut background = vec![
            spawn_housekeeping(state.clone()),
            crate::upstream::health::spawn(state.pool.clone(), state.shutdown.clone()),
        ];
        {
            // Cutoffs written by `tars revoke` while this server runs.
            let state = state.clone();
            background.push(tokio::spawn(async move {
                state.auth.auth.watch_data_dir(&state.shutdown).await
            }));
        }
        if let Some(every) = state.config().tls.watch_interval {
            background.extend(crate::reload::spawn_cert_watch(state.clone(), every));
            // A saved config.toml (`tars client add`, ...) applies itself.
            let handle = Handle {
                state: state.clone(),
            };
            background.extend(crate::reload::spawn_config_watch(
                state.clone(),
                every,
                move || {
                    let handle = handle.clone();
                    async move { handle.reload().await }
                },
            ));
        }
        log_start(&state, addr);
        let service = {
            let state = state.clone();
            move |conn, req| crate::routes::handle(state.clone(), conn, req)
        };
        crate::server::run(listener, state.listener(), service).await;
        for task in background {
            let _ = task.await;
        }
        Ok(())
    }
}

/// Controls on a [`Server`]: cheap to clone, usable from any task.
#[derive(Clone)]
pub struct Handle {
    state: Arc<AppState>,
}

impl Handle {
    /// Re-read the config file the server was started from (and the
    /// certificate files) and apply it; on error nothing changes. Logged and
    /// counted in `tars_config_reloads_total` either way.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let state = &self.state;
        let count = |kind| crate::reload::count(state, kind);
        match crate::reload::reload(state) {
            Ok(()) => {
                count("ok");
                state.ready.invalidate().await;
                let fp = self.fingerprint().unwrap_or_default();
                info!(sha256 = %fp, "configuration reloaded");
                Ok(())
            }
            Err(e) => {
                count("error");
                error!(error = %e, "reload refused; the previous configuration stays in force");
                Err(e)
            }
        }
    }

    /// Start the drain now (as if the `shutdown` future had resolved).
    pub fn shutdown(&self) {
        if !self.state.shutdown.is_cancelled() {
            self.state.begin_shutdown();
        }
    }

    /// Resolves once the drain has begun.
    pub async fn draining(&self) {
        self.state.shutdown.cancelled().await
    }

    /// One line for status displays: open sessions and running streams.
    pub fn status_line(&self) -> String {
        format!(
            "{} sessions, {} streams",
            self.state.ws.sessions.active(),
            self.state.metrics.generations_active.get().max(0)
        )
    }

    /// SHA-256 fingerprint of the certificate served now (`None` without TLS).
    pub fn fingerprint(&self) -> Option<String> {
        self.state.certs.as_ref().map(|c| c.fingerprint())
    }
}

fn log_start(state: &AppState, addr: std::net::SocketAddr) {
    let cfg = state.config();
    for w in &cfg.warnings {
        warn!("{w}");
    }
    match &state.certs {
        Some(store) => info!(
            %addr,
            scheme = "https",
            sha256 = %store.fingerprint(),
            ollama = %cfg.ollama.host,
            model = %cfg.ollama.model,
            "listening"
        ),
        None => {
            warn!("tls.enabled = false: traffic, tokens included, crosses the LAN unencrypted");
            info!(%addr, scheme = "http", ollama = %cfg.ollama.host, model = %cfg.ollama.model, "listening");
        }
    }
}

/// How often limiter maps and idle conversations are pruned.
const HOUSEKEEPING_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Prune recovered rate-limiter keys and expired conversations, so memory
/// follows the clients that are active, not every client ever seen.
fn spawn_housekeeping(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = state.shutdown.cancelled() => return,
            }
            state.limits.sweep();
            state
                .ws
                .conversations
                .sweep(state.config().ollama.conversation_idle);
        }
    })
}
