//! The Ollama client: one pooled HTTP/1.1 keep-alive client shared by every
//! session, used for the readiness probe and for streaming chats.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::OllamaConfig;

/// What went wrong talking to Ollama.
#[derive(Debug, thiserror::Error)]
pub enum OllamaError {
    #[error("cannot reach Ollama at {host}: {message}")]
    Unreachable { host: String, message: String },
    #[error("Ollama did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Ollama answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("Ollama sent an unexpected answer: {0}")]
    Protocol(String),
}

/// A cheap-to-clone handle on the pooled client.
#[derive(Clone)]
pub struct OllamaClient {
    http: Client<HttpConnector, Full<Bytes>>,
    /// `http://host:port` without a trailing slash.
    base: String,
}

impl OllamaClient {
    pub fn new(cfg: &OllamaConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(cfg.connect_timeout));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(cfg.pool_max_connections)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Self {
            http,
            base: cfg.host.clone(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /api/version` within `timeout`: Ollama's version string.
    pub async fn version(&self, timeout: Duration) -> Result<String, OllamaError> {
        #[derive(serde::Deserialize)]
        struct V {
            version: String,
        }
        let uri = format!("{}/api/version", self.base);
        let fut = async {
            let req = http::Request::get(&uri)
                .body(Full::new(Bytes::new()))
                .map_err(|e| OllamaError::Protocol(e.to_string()))?;
            let resp = self.http.request(req).await.map_err(|e| OllamaError::Unreachable {
                host: self.base.clone(),
                message: error_chain(&e),
            })?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| OllamaError::Protocol(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                return Err(OllamaError::Status {
                    status: status.as_u16(),
                    message: String::from_utf8_lossy(&body).chars().take(200).collect(),
                });
            }
            serde_json::from_slice::<V>(&body)
                .map(|v| v.version)
                .map_err(|e| OllamaError::Protocol(format!("/api/version: {e}")))
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| OllamaError::Timeout(timeout))?
    }
}

/// An error and its sources on one line ("client error (Connect): tcp connect
/// error: Connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
