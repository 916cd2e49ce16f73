//! Serving: from a validated config to a running gateway — certificate
//! generation on first start, state, the listener (bound or passed by
//! systemd), signal handlers, reload and systemd tasks — then
//! [`crate::server::run`] until the drain ends.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::cli::{load_config, refuse};
use crate::config::Config;
use crate::state::AppState;

/// Load the config, set up logging and the runtime, and serve.
pub fn serve_blocking(path: &Path) -> ExitCode {
    let cfg = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let _log_guard = match crate::logging::init(&cfg.log) {
        Ok(g) => g,
        Err(e) => return refuse(format_args!("{}: {e}", cfg.source.display())),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tars: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(serve(cfg))
}

/// Start the gateway on a validated config and serve until SIGTERM/SIGINT.
pub async fn serve(cfg: Config) -> ExitCode {
    let listen = cfg.server.listen;
    let shown = cfg.source.display().to_string();
    let shutdown = CancellationToken::new();
    let state = match AppState::new(cfg, shutdown.clone()) {
        Ok(s) => s,
        Err(e) => return refuse(e),
    };
    let inherited = match crate::systemd::inherited_listener() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tars: error: cannot use the socket passed by systemd (LISTEN_FDS): {e}");
            return ExitCode::from(1);
        }
    };
    let bound = match inherited {
        Some(std_listener) => tokio::net::TcpListener::from_std(std_listener),
        None => tokio::net::TcpListener::bind(listen).await,
    };
    let listener = match bound {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tars: error: {shown}: key `server.listen`: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    let addr = listener.local_addr().unwrap_or(listen);
    // Signal handlers first: once "listening" is logged (or systemd told
    // READY), a SIGTERM, SIGINT or SIGHUP must never meet the default action.
    spawn_signal_handler(state.clone());
    crate::reload::spawn_sighup(state.clone());
    if let Some(every) = state.config().tls.watch_interval {
        crate::reload::spawn_cert_watch(state.clone(), every);
    }
    crate::systemd::spawn_tasks(state.clone());
    spawn_housekeeping(state.clone());
    let watch = state.clone();
    tokio::spawn(async move { watch.auth.watch_data_dir(&watch.shutdown).await });
    log_start(&state, addr);
    crate::systemd::ready(&crate::systemd::status_line(&state));
    crate::server::run(listener, state).await;
    info!("stopped");
    ExitCode::SUCCESS
}

fn log_start(state: &AppState, addr: std::net::SocketAddr) {
    let cfg = state.config();
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
fn spawn_housekeeping(state: Arc<AppState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = state.shutdown.cancelled() => return,
            }
            state.limits.sweep();
            state
                .conversations
                .sweep(state.config().ollama.conversation_idle);
        }
    });
}

/// First SIGTERM or SIGINT starts the drain; a second one exits at once.
/// The handlers are installed before this returns (not inside the spawned
/// task, which may not have run yet when a signal arrives).
fn spawn_signal_handler(state: Arc<AppState>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers");
        return;
    };
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        info!("shutdown requested: no new connections, draining");
        crate::systemd::stopping();
        state.begin_shutdown();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        warn!("second signal: exiting now");
        std::process::exit(1);
    });
}
