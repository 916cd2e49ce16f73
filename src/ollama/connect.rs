//! [`Connector`]: the one way the gateway opens a connection to an upstream
//! (ADR 0023). TCP with `TCP_NODELAY` within `connect_timeout`; for an
//! `https://` URL then a rustls handshake (ring, ALPN `http/1.1`, SNI and
//! certificate verification for the URL's host, a name or an IP address)
//! within the same timeout, counted apart. The chats' own connections
//! ([`super::conn::ConnPool`]) call [`Connector::connect`]; every small call
//! (health probes, discovery, `/api/ps`, the OpenAI dialect's chats) goes
//! through hyper-util's pooled client, which takes the same connector as its
//! `tower` service.
//!
//! Trust: the upstream's `ca_file` certificates when it has one, and only
//! those; else Mozilla's roots compiled in (`webpki-roots`). Verification
//! cannot be turned off.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Why no connection to an upstream could be made. Every variant is a
/// connect failure: retried, failed over, counted by the health check.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// No host, or a scheme other than `http`/`https` (config validation
    /// refuses those; a test may still build one).
    #[error("invalid upstream URL {0:?}")]
    InvalidUrl(String),
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("tcp connect error: {0}")]
    Tcp(String),
    #[error("TLS handshake with {name} timed out after {after:?}")]
    TlsTimeout { name: String, after: Duration },
    /// The handshake failed: an untrusted or mismatched certificate, an
    /// alert from the server, a server that does not speak TLS.
    #[error("TLS handshake with {name} failed: {message}")]
    Tls { name: String, message: String },
}

/// Opens connections to one upstream. Cheap to clone.
#[derive(Clone)]
pub struct Connector {
    connect_timeout: Duration,
    /// Used for `https://` URIs only.
    tls: TlsConnector,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector trusting `roots` (an upstream's `ca_file`, checked at
    /// config load) or, for `None`, the compiled-in Mozilla roots.
    pub fn new(connect_timeout: Duration, roots: Option<&[CertificateDer<'static>]>) -> Self {
        let config = match roots {
            None => public_roots_config(),
            Some(certs) => {
                let mut store = RootCertStore::empty();
                store.add_parsable_certificates(certs.iter().cloned());
                client_config(store)
            }
        };
        Self {
            connect_timeout,
            tls: TlsConnector::from(config),
        }
    }

    /// A connection to `uri`'s host and port (default 80 or 443), TLS for
    /// `https`.
    pub async fn connect(&self, uri: &Uri) -> Result<UpstreamIo, ConnectError> {
        let invalid = || ConnectError::InvalidUrl(uri.to_string());
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(invalid()),
        };
        let host = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .filter(|h| !h.is_empty())
            .ok_or_else(invalid)?;
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| ConnectError::ConnectTimeout(self.connect_timeout))?
            .map_err(|e| ConnectError::Tcp(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        if !https {
            return Ok(UpstreamIo::Plain(tcp));
        }
        let name = ServerName::try_from(host.to_string()).map_err(|_| invalid())?;
        let tls = tokio::time::timeout(self.connect_timeout, self.tls.connect(name, tcp))
            .await
            .map_err(|_| ConnectError::TlsTimeout {
                name: host.to_string(),
                after: self.connect_timeout,
            })?
            .map_err(|e| ConnectError::Tls {
                name: host.to_string(),
                message: e.to_string(),
            })?;
        Ok(UpstreamIo::Tls(Box::new(tls)))
    }
}

/// The rustls client settings for `roots`: ring, TLS 1.2 and 1.3, ALPN
/// `http/1.1` (the gateway speaks nothing else upstream).
fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring provider supports TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// The settings trusting Mozilla's roots, built once and shared.
fn public_roots_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            client_config(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
        })
        .clone()
}

/// hyper-util's client calls this for every new pooled connection.
impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<UpstreamIo>;
    type Error = ConnectError;
    type Future =
        Pin<Box<dyn Future<Output = Result<TokioIo<UpstreamIo>, ConnectError>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(&uri).await.map(TokioIo::new) })
    }
}

/// A connection to an upstream: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_urls_it_cannot_reach() {
        let c = Connector::new(Duration::from_secs(1), None);
        for bad in ["ftp://h:1", "/relative"] {
            let e = c.connect(&bad.parse().unwrap()).await.unwrap_err();
            assert!(matches!(e, ConnectError::InvalidUrl(_)), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn a_server_that_does_not_speak_tls_is_a_tls_failure() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let (mut s, _) = l.accept().await.unwrap();
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        });
        let c = Connector::new(Duration::from_secs(2), None);
        let e = c
            .connect(&format!("https://{addr}").parse().unwrap())
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectError::Tls { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("TLS handshake with 127.0.0.1 failed: "),
            "{e}"
        );
    }
}
