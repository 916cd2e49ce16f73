//! TLS for the fake upstreams (ADR 0023): [`TestCa`] makes a private CA and
//! a server certificate for `127.0.0.1` and `localhost` with rcgen, writes
//! the CA's PEM (the `ca_file` a test gives the gateway) into its own temp
//! dir, and hands out the rustls acceptor the fakes serve with.
//! [`serve_conn`] is the one connection loop both fakes use, plain or TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How long a fake waits for a client's TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A private CA and a server certificate it signed.
pub struct TestCa {
    dir: tempfile::TempDir,
    acceptor: TlsAcceptor,
}

impl TestCa {
    /// A new CA ("T.A.R.S. test lab CA") and a server certificate for
    /// `127.0.0.1` and `localhost`; `ca.pem` written to a temp dir.
    pub fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "T.A.R.S. test lab CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();

        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])
                .unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone(), ca.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            dir,
            acceptor: TlsAcceptor::from(Arc::new(cfg)),
        }
    }

    /// The CA certificate as PEM: the gateway's `ca_file`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// What a fake serves TLS with.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Serve HTTP/1.1 on `stream` with `service`, through `tls` when given,
/// until the connection ends or `token` fires. A failed handshake (a client
/// that does not trust the certificate) just ends the connection.
pub async fn serve_conn<S, B>(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    service: S,
    token: CancellationToken,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = hyper::server::conn::http1::Builder::new();
    match tls {
        None => {
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = token.cancelled() => {}
                _ = conn => {}
            }
        }
        Some(acceptor) => {
            let tls = tokio::select! {
                _ = token.cancelled() => return,
                r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => match r {
                    Ok(Ok(s)) => s,
                    _ => return,
                },
            };
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                _ = token.cancelled() => {}
                _ = conn => {}
            }
        }
    }
}
