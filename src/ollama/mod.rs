//! The Ollama client shared by every session: streaming chats on pooled
//! HTTP/1.1 keep-alive connections that the reading stream drives itself,
//! and hyper-util's pooled client for the small calls (readiness probe),
//! both connecting through one [`Connector`] (plain or TLS).
//!
//! - [`connect`]: [`Connector`], TCP and TLS to an upstream: the one way
//!   every caller connects (ADR 0023).
//! - [`conn`]: the chats' connections and their keep-alive pool (ADR 0021).
//! - [`chat`]: request types, [`OllamaClient::chat`] (retries, backoff,
//!   cancellation).
//! - [`policy`]: [`RetryPolicy`], the retry and timeout settings of one chat.
//! - [`stream`]: [`ChatStream`], the answer read line by line on demand.
//! - `deadline`: the first-token and idle timeouts of an answer and the read
//!   of its next frame under them, shared with the OpenAI reader.
//! - [`ndjson`]: [`NdjsonSplitter`], body chunks → lines.
//! - [`line`]: [`parse_chat_line`], line → [`ChatLine`] borrowing the token's
//!   raw JSON string (the hot path).
//! - `fast_line`: the common content line's shape matched without a general
//!   JSON parse (ADR 0025); anything else takes `line`'s serde path.
//! - [`error`]: [`OllamaError`] with its metrics `kind` and `retryable`.

pub mod chat;
pub(crate) mod conn;
pub mod connect;
pub(crate) mod deadline;
pub mod error;
mod fast_line;
pub mod line;
pub mod ndjson;
pub mod policy;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::OllamaConfig;
use conn::ConnPool;

pub use chat::{ChatMessage, ChatOptions, ChatRequest, Role};
pub use connect::{ConnectError, Connector};
pub use error::{error_chain, OllamaError};
pub use line::{parse_chat_line, ChatLine, DoneStats, LineError};
pub use ndjson::{LineTooLong, NdjsonSplitter};
pub use policy::RetryPolicy;
pub use stream::ChatStream;

/// A cheap-to-clone handle on the pooled client.
#[derive(Clone)]
pub struct OllamaClient {
    /// The small, non-streaming calls (`/api/version`, ...).
    http: HttpClient,
    /// The chats' connections, driven by their streams.
    pool: Arc<ConnPool>,
    /// `http://host:port` without a trailing slash.
    base: String,
}

impl OllamaClient {
    pub fn new(cfg: &OllamaConfig) -> Self {
        Self::with_base(cfg, &cfg.host)
    }

    /// A client for the Ollama at `base` with `cfg`'s pool and timeouts,
    /// trusting the compiled-in roots for `https`.
    pub fn with_base(cfg: &OllamaConfig, base: &str) -> Self {
        Self::with_connector(cfg, base, Connector::new(cfg.connect_timeout, None))
    }

    /// A client for the Ollama at `base` whose every connection (chats and
    /// small calls alike) is opened by `connector`.
    pub fn with_connector(cfg: &OllamaConfig, base: &str, connector: Connector) -> Self {
        let base = base.trim_end_matches('/').to_string();
        Self {
            http: http_client(connector.clone(), cfg.pool_max_connections),
            pool: Arc::new(ConnPool::new(
                &base,
                connector,
                cfg.pool_max_connections,
                cfg.pool_spare_connections,
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
        let body = self.get("/api/version", timeout).await?;
        serde_json::from_slice::<V>(&body)
            .map(|v| v.version)
            .map_err(|e| OllamaError::Malformed(format!("/api/version: {e}")))
    }

    /// `GET {base}{path}` within `timeout`: the body of a 2xx answer (at
    /// most [`GET_BODY_MAX`] bytes), else [`OllamaError::Status`].
    pub async fn get(&self, path: &str, timeout: Duration) -> Result<Bytes, OllamaError> {
        get(&self.http, &self.base, path, None, timeout).await
    }
}

/// The largest body [`get`] reads (a `/api/tags` of hundreds of models fits).
pub const GET_BODY_MAX: usize = 4 * 1024 * 1024;

/// `GET {base}{path}` on `http` within `timeout`, with an optional bearer
/// token: the body of a 2xx answer, else [`OllamaError::Status`] with the
/// body's error message. Shared by both upstream dialects' probes.
pub async fn get(
    http: &HttpClient,
    base: &str,
    path: &str,
    bearer: Option<&[u8]>,
    timeout: Duration,
) -> Result<Bytes, OllamaError> {
    let uri = format!("{base}{path}");
    let fut = async {
        let mut req = http::Request::get(&uri);
        if let Some(key) = bearer {
            let mut v = b"Bearer ".to_vec();
            v.extend_from_slice(key);
            let mut v = http::HeaderValue::from_bytes(&v).map_err(|_| {
                OllamaError::Malformed("API key is not a valid header value".into())
            })?;
            v.set_sensitive(true);
            req = req.header(http::header::AUTHORIZATION, v);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| OllamaError::Malformed(e.to_string()))?;
        let resp = http
            .request(req)
            .await
            .map_err(|e| OllamaError::Unreachable {
                host: base.to_string(),
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
        let body = http_body_util::Limited::new(resp.into_body(), GET_BODY_MAX)
            .collect()
            .await
            .map_err(|e| OllamaError::Stream(e.to_string()))?
            .to_bytes();
        Ok(body)
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| OllamaError::Timeout {
            what: "answer to a GET",
            after: timeout,
        })?
}

/// hyper-util's pooled client over an upstream's [`Connector`].
pub type HttpClient = Client<Connector, Full<Bytes>>;

/// A pooled keep-alive HTTP/1.1 client connecting through `connector`, as
/// every upstream uses for its small calls.
pub fn http_client(connector: Connector, pool_max_idle: usize) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(pool_max_idle)
        .pool_idle_timeout(conn::IDLE_TIMEOUT)
        .build(connector)
}
