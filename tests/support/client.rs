//! Test clients: HTTP/1.1 and WebSocket over real TLS that trusts the
//! certificate the gateway generated (no "insecure" shortcut), or over plain
//! TCP when the gateway runs without TLS. The WebSocket client is
//! tokio-tungstenite, an implementation independent of the server's.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::WebSocketStream;

use super::Endpoint;

/// A byte stream: TLS or plain TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type BoxIo = Box<dyn Io>;

/// A rustls client config that trusts exactly `cert`.
pub fn client_tls_config(cert: &std::path::Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// Open a connection to the gateway: TLS (SNI `localhost`) when it serves TLS.
pub async fn connect(gw: &Endpoint) -> BoxIo {
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    match &gw.cert {
        None => Box::new(tcp),
        Some(cert) => {
            let connector = tokio_rustls::TlsConnector::from(client_tls_config(cert));
            let tls = connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .expect("TLS handshake with the gateway");
            Box::new(tls)
        }
    }
}

/// A complete HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Send one request on a fresh connection.
pub async fn request(
    gw: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> HttpResponse {
    let io = connect(gw).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .expect("response within 30 s")
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    HttpResponse {
        status,
        headers,
        body,
    }
}

pub async fn get(gw: &Endpoint, path: &str) -> HttpResponse {
    request(gw, "GET", path, &[], None).await
}

/// POST a JSON body, with an optional bearer token.
pub async fn post_json(
    gw: &Endpoint,
    path: &str,
    body: &serde_json::Value,
    bearer: Option<&str>,
) -> HttpResponse {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    request(
        gw,
        "POST",
        path,
        &headers,
        Some(serde_json::to_vec(body).unwrap()),
    )
    .await
}

pub type Ws = WebSocketStream<BoxIo>;

/// Open a WebSocket to `path_and_query` with extra request headers. Returns
/// the tungstenite error (e.g. an HTTP 401 answer) when the upgrade fails.
pub async fn ws_connect(
    gw: &Endpoint,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, tungstenite::Error> {
    use tungstenite::client::IntoClientRequest;
    let scheme = if gw.tls { "wss" } else { "ws" };
    let url = format!("{scheme}://localhost:{}{path_and_query}", gw.addr.port());
    let mut req = url.into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let io = connect(gw).await;
    let cfg = tungstenite::protocol::WebSocketConfig::default();
    tokio_tungstenite::client_async_with_config(req, io, Some(cfg))
        .await
        .map(|(ws, _)| ws)
}
