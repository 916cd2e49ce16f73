//! The listener: accept loop, TLS handshake under a timeout, one hyper
//! HTTP/1.1 connection per socket (with upgrades for WebSockets), and the
//! graceful drain at shutdown. Also the facts about a connection that
//! handlers need ([`ConnInfo`]: peer, TLS or not) and the origin checks,
//! because this is where a connection is accepted.
//!
//! The module knows no route and no handler: [`run`] serves whatever
//! service it is given (the route table, composed in [`crate::app`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, HOST};
use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::{CorsConfig, SharedConfig};
use crate::limits::{HeldConn, Limits};
use crate::metrics::{KindLabel, Metrics};
use crate::response::Resp;
use crate::tls::CertStore;
use crate::write_timeout::WriteTimeout;

/// How long the accept loop sleeps after an accept error such as EMFILE.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long force-closed sessions get to send their close frames once the
/// grace period is over.
const FORCE_CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// Facts about the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// True when the connection is TLS.
    pub secure: bool,
}

/// True when `origin` is listed in `[cors] origins` (byte for byte).
pub fn origin_allowed(cors: &CorsConfig, origin: &HeaderValue) -> bool {
    cors.origins
        .iter()
        .any(|o| o.as_bytes() == origin.as_bytes())
}

/// Same-origin check: the Origin's `host[:port]` equals the Host header.
pub fn same_origin<B>(req: &Request<B>, origin: &HeaderValue) -> bool {
    let (Some(host), Ok(origin)) = (req.headers().get(HOST), origin.to_str()) else {
        return false;
    };
    let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
    origin_host.as_bytes().eq_ignore_ascii_case(host.as_bytes())
}

/// `[server] allowed_hosts` (DNS rebinding defence): true when the list is
/// empty, or `host` (its port ignored) is listed, is `localhost`, or is an
/// IP literal of the listen address (any local IP when listening on
/// 0.0.0.0 or `::`, and loopback). A missing `Host` is refused when there
/// is a list.
pub fn host_allowed(cfg: &crate::config::ServerConfig, host: Option<&HeaderValue>) -> bool {
    if cfg.allowed_hosts.is_empty() {
        return true;
    }
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    // `[v6]:port`, `[v6]`, `name:port`, `name`, `v4:port`.
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || cfg.allowed_hosts.contains(&name) {
        return true;
    }
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            let listen = cfg.listen.ip();
            listen.is_unspecified() || ip == listen || ip.to_canonical().is_loopback()
        }
        Err(_) => false,
    }
}

/// What the accept loop needs from the server it belongs to.
#[derive(Clone)]
pub struct Listener {
    pub config: SharedConfig,
    pub limits: Arc<Limits>,
    pub metrics: Arc<Metrics>,
    /// `None` when `tls.enabled = false`.
    pub certs: Option<Arc<CertStore>>,
    /// Every connection and session task, waited for by the drain.
    pub tasks: TaskTracker,
    /// Cancelled when the drain begins: stop accepting, finish requests.
    pub draining: CancellationToken,
    /// The root of the cancellation tree, cancelled when the grace period
    /// is over: every session (and its generation) ends at once.
    pub stop: CancellationToken,
    /// One permit per connection still speaking HTTP (TLS handshake
    /// included); an upgraded WebSocket gives its permit back.
    pub http_slots: Arc<tokio::sync::Semaphore>,
}

/// Serve `service` on `listener` until `l.draining` is cancelled, then
/// drain: stop accepting at once, let open requests and streams finish
/// within `server.shutdown_grace_secs`, and return as soon as the last one
/// ends (or the grace period is over and the rest was force-closed).
pub async fn run<S, F>(listener: TcpListener, l: Listener, service: S)
where
    S: Fn(ConnInfo, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    let acceptor = l
        .certs
        .as_ref()
        .map(|store| TlsAcceptor::from(crate::tls::server_config(store.clone())));
    loop {
        tokio::select! {
            biased;
            _ = l.draining.cancelled() => break,
            res = listener.accept() => match res {
                Ok((tcp, peer)) => {
                    let guard = match l.limits.admit_connection(peer.ip()) {
                        Ok(g) => g,
                        Err(refusal) => {
                            // Closed before any TLS work; the client may retry.
                            l.metrics.connections_rejected.get_or_create(&KindLabel { kind: refusal.label() }).inc();
                            debug!(%peer, limit = refusal.label(), "connection refused at accept");
                            continue;
                        }
                    };
                    let Ok(http_slot) = l.http_slots.clone().try_acquire_owned() else {
                        l.metrics.connections_rejected.get_or_create(&KindLabel { kind: "http_connections" }).inc();
                        debug!(%peer, "connection refused at accept: server.max_http_connections reached");
                        continue;
                    };
                    let (conn_l, acceptor, service) = (l.clone(), acceptor.clone(), service.clone());
                    let held = HeldConn::new(guard);
                    l.tasks.spawn(async move {
                        // The permit is held until the HTTP connection ends,
                        // which an upgrade does at once.
                        serve_socket(tcp, peer, acceptor, conn_l, service, held).await;
                        drop(http_slot);
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
    drain(&l).await;
}

/// Wait for every connection and session task, up to the grace period;
/// then cancel the root so whatever is left closes now.
async fn drain(l: &Listener) {
    let grace = l.config.get().server.shutdown_grace;
    l.tasks.close();
    info!(
        open_tasks = l.tasks.len(),
        grace_secs = grace.as_secs(),
        "draining"
    );
    if tokio::time::timeout(grace, l.tasks.wait()).await.is_err() {
        warn!(
            open_tasks = l.tasks.len(),
            "grace period over; closing what is left"
        );
        l.stop.cancel();
        // Give the force-closed sessions a moment to send their close frames.
        let _ = tokio::time::timeout(FORCE_CLOSE_FLUSH, l.tasks.wait()).await;
    }
    l.stop.cancel();
    info!("drained");
}

async fn serve_socket<S, F>(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    l: Listener,
    service: S,
    held: HeldConn,
) where
    S: Fn(ConnInfo, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    let _ = tcp.set_nodelay(true);
    let tcp = WriteTimeout::new(tcp, l.config.get().server.write_timeout);
    match acceptor {
        None => {
            let conn = ConnInfo {
                peer,
                secure: false,
            };
            serve_http(tcp, conn, &l, service, held).await
        }
        Some(acceptor) => {
            let timeout = l.config.get().server.tls_handshake_timeout;
            let handshake = tokio::select! {
                r = tokio::time::timeout(timeout, acceptor.accept(tcp)) => r,
                _ = l.draining.cancelled() => return,
            };
            match handshake {
                Ok(Ok(tls)) => {
                    let conn = ConnInfo { peer, secure: true };
                    serve_http(tls, conn, &l, service, held).await
                }
                Ok(Err(e)) => {
                    l.metrics.tls_handshake_failures.inc();
                    debug!(%peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    l.metrics.tls_handshake_failures.inc();
                    debug!(%peer, timeout_secs = timeout.as_secs(), "TLS handshake timed out");
                }
            }
        }
    }
}

async fn serve_http<IO, S, F>(io: IO, conn: ConnInfo, l: &Listener, service: S, held: HeldConn)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Fn(ConnInfo, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    let cfg = l.config.get();
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
    let svc = service_fn(move |mut req: Request<Incoming>| {
        // A WebSocket upgrade takes the connection's slot along.
        req.extensions_mut().insert(held.clone());
        let fut = service(conn, req);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let http = builder
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(http);
    tokio::select! {
        res = http.as_mut() => {
            if let Err(e) = res {
                debug!(peer = %conn.peer, error = %e, "connection ended with an error");
            }
        }
        _ = l.draining.cancelled() => {
            // Finish the request in flight, then close; no new requests.
            http.as_mut().graceful_shutdown();
            if let Err(e) = http.await {
                debug!(peer = %conn.peer, error = %e, "connection ended with an error during drain");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_hosts_rules() {
        let text = "[tls]\nenabled = false\n[server]\nlisten = \"192.168.1.5:8443\"\nallowed_hosts = [\"nas.local\"]\n";
        let cfg = crate::config::from_toml_str(text, None).unwrap();
        let ok = |h: Option<&str>| {
            let v = h.map(|h| HeaderValue::from_str(h).unwrap());
            host_allowed(&cfg.server, v.as_ref())
        };
        for h in [
            "nas.local",
            "NAS.local:8443",
            "nas.local.",
            "localhost:1",
            "192.168.1.5:8443",
            "127.0.0.1",
            "[::1]:8443",
        ] {
            assert!(ok(Some(h)), "{h}");
        }
        for h in [
            "evil.example",
            "nas.local.evil",
            "10.0.0.9",
            "[2001:db8::1]:8443",
            "",
        ] {
            assert!(!ok(Some(h)), "{h}");
        }
        assert!(!ok(None));
        // Listening on every address: any IP literal is one of ours.
        let any =
            crate::config::from_toml_str(&text.replace("192.168.1.5", "0.0.0.0"), None).unwrap();
        assert!(host_allowed(
            &any.server,
            Some(&HeaderValue::from_static("10.0.0.9"))
        ));
        // No list: anything goes.
        let open = crate::config::from_toml_str("[tls]\nenabled = false\n", None).unwrap();
        assert!(host_allowed(
            &open.server,
            Some(&HeaderValue::from_static("evil.example"))
        ));
    }
}
