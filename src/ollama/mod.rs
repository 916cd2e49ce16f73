//! The Ollama client shared by every session: streaming chats on pooled
//! HTTP/1.1 keep-alive connections that the reading stream drives itself,
//! and hyper-util's pooled client for the small calls (readiness probe).
//!
//! - [`conn`]: the chats' connections and their keep-alive pool (ADR 0021).
//! - [`chat`]: request types, [`OllamaClient::chat`] (retries, backoff,
//!   cancellation).
//! - [`policy`]: [`RetryPolicy`], the retry and timeout settings of one chat.
//! - [`stream`]: [`ChatStream`], the answer read line by line on demand.
//! - [`ndjson`]: [`NdjsonSplitter`], body chunks → lines.
//! - [`line`]: [`parse_chat_line`], line → [`ChatLine`] borrowing the token's
//!   raw JSON string (the hot path).
//! - [`error`]: [`OllamaError`] with its metrics `kind` and `retryable`.

pub mod chat;
mod conn;
pub mod error;
pub mod line;
pub mod ndjson;
pub mod policy;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::OllamaConfig;
use conn::ConnPool;

pub use chat::{ChatMessage, ChatOptions, ChatRequest, Role};
pub use error::{error_chain, OllamaError};
pub use line::{parse_chat_line, ChatLine, DoneStats, LineError};
pub use ndjson::{LineTooLong, NdjsonSplitter};
pub use policy::RetryPolicy;
pub use stream::ChatStream;

/// A cheap-to-clone handle on the pooled client.
#[derive(Clone)]
pub struct OllamaClient {
    /// The small, non-streaming calls (`/api/version`, ...).
    http: Client<HttpConnector, Full<Bytes>>,
    /// The chats' connections, driven by their streams.
    pool: Arc<ConnPool>,
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
            .pool_idle_timeout(conn::IDLE_TIMEOUT)
            .build(connector);
        let base = cfg.host.trim_end_matches('/').to_string();
        Self {
            http,
            pool: Arc::new(ConnPool::new(
                &base,
                cfg.connect_timeout,
                cfg.pool_max_connections,
            )),
            base,
        }
    }

    /// Chat connections idle in the pool now, ready for the next chat.
    pub fn idle_chat_connections(&self) -> usize {
        self.pool.idle_count()
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
                .map_err(|e| OllamaError::Malformed(e.to_string()))?;
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| OllamaError::Unreachable {
                    host: self.base.clone(),
                    message: error_chain(&e),
                })?;
            let status = resp.status();
            if !status.is_success() {
                let body = chat::read_error_body(resp.into_body()).await;
                return Err(OllamaError::Status {
                    status: status.as_u16(),
                    message: chat::error_message(&body).unwrap_or_default(),
                });
            }
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| OllamaError::Stream(error_chain(&e)))?
                .to_bytes();
            serde_json::from_slice::<V>(&body)
                .map(|v| v.version)
                .map_err(|e| OllamaError::Malformed(format!("/api/version: {e}")))
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| OllamaError::Timeout {
                what: "answer to /api/version",
                after: timeout,
            })?
    }
}
