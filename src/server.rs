//! The listener: accept loop, TLS handshake under a timeout, one hyper
//! HTTP/1.1 connection per socket (with upgrades for WebSockets), and the
//! graceful drain at shutdown.
//!
//! [`run`] is the single entry point that `main` and the tests both call.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::metrics::KindLabel;
use crate::routes::{self, ConnInfo};
use crate::state::AppState;

/// How long the accept loop sleeps after an accept error such as EMFILE.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serve on `listener` until `state.shutdown` is cancelled, then drain: stop
/// accepting at once, let open requests and streams finish within
/// `server.shutdown_grace_secs`, and return as soon as the last one ends.
pub async fn run(listener: TcpListener, state: Arc<AppState>) {
    let acceptor = state
        .certs
        .as_ref()
        .map(|store| TlsAcceptor::from(crate::tls::server_config(store.clone())));
    let shutdown = state.shutdown.clone();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            res = listener.accept() => match res {
                Ok((tcp, peer)) => {
                    let guard = match state.limits.admit_connection(peer.ip()) {
                        Ok(g) => g,
                        Err(refusal) => {
                            // Closed before any TLS work; the client may retry.
                            state.metrics.connections_rejected.get_or_create(&KindLabel { kind: refusal.label() }).inc();
                            debug!(%peer, limit = refusal.label(), "connection refused at accept");
                            continue;
                        }
                    };
                    let state = state.clone();
                    let acceptor = acceptor.clone();
                    state.tasks.clone().spawn(async move {
                        serve_socket(tcp, peer, acceptor, state).await;
                        drop(guard);
                    });
                }
                Err(e) => {
                    // EMFILE, ENFILE, ECONNABORTED...: never let the loop die.
                    warn!(error = %e, backoff_ms = ACCEPT_BACKOFF.as_millis() as u64, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
    drop(listener);
    drain(&state).await;
}

/// Wait for every connection and session task, up to the grace period.
async fn drain(state: &AppState) {
    let grace = state.config().server.shutdown_grace;
    state.tasks.close();
    info!(
        open_tasks = state.tasks.len(),
        grace_secs = grace.as_secs(),
        "draining"
    );
    if tokio::time::timeout(grace, state.tasks.wait())
        .await
        .is_err()
    {
        warn!(
            open_tasks = state.tasks.len(),
            "grace period over; closing what is left"
        );
        state.sessions.force_close_all();
        // Give the force-closed sessions a moment to send their close frames.
        let _ = tokio::time::timeout(Duration::from_secs(2), state.tasks.wait()).await;
    }
    info!("drained");
}

async fn serve_socket(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    state: Arc<AppState>,
) {
    let _ = tcp.set_nodelay(true);
    match acceptor {
        None => {
            serve_http(
                tcp,
                ConnInfo {
                    peer,
                    secure: false,
                },
                state,
            )
            .await
        }
        Some(acceptor) => {
            let timeout = state.config().server.tls_handshake_timeout;
            let handshake = tokio::select! {
                r = tokio::time::timeout(timeout, acceptor.accept(tcp)) => r,
                _ = state.shutdown.cancelled() => return,
            };
            match handshake {
                Ok(Ok(tls)) => serve_http(tls, ConnInfo { peer, secure: true }, state).await,
                Ok(Err(e)) => {
                    state.metrics.tls_handshake_failures.inc();
                    debug!(%peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    state.metrics.tls_handshake_failures.inc();
                    debug!(%peer, timeout_secs = timeout.as_secs(), "TLS handshake timed out");
                }
            }
        }
    }
}

async fn serve_http<S>(io: S, conn: ConnInfo, state: Arc<AppState>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = state.config();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.server.header_read_timeout)
        .max_header_size(cfg.server.max_header_bytes)
        .keep_alive(true);
    if cfg.server.max_headers != 100 {
        builder.max_headers(cfg.server.max_headers);
    }
    drop(cfg);
    let svc_state = state.clone();
    let service = service_fn(move |req| routes::handle(svc_state.clone(), conn, req));
    let http = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(http);
    tokio::select! {
        res = http.as_mut() => {
            if let Err(e) = res {
                debug!(peer = %conn.peer, error = %e, "connection ended with an error");
            }
        }
        _ = state.shutdown.cancelled() => {
            // Finish the request in flight, then close; no new requests.
            http.as_mut().graceful_shutdown();
            if let Err(e) = http.await {
                debug!(peer = %conn.peer, error = %e, "connection ended with an error during drain");
            }
        }
    }
}
