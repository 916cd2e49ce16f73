//! `POST /api/chat`: the request types and [`OllamaClient::chat`], which
//! sends the request with retries and exponential backoff and hands back a
//! [`ChatStream`] as soon as a `200` head arrives.
//!
//! Retries happen only here, before any line was read, so nothing is ever
//! replayed to a client. The connection comes from the client's pool
//! ([`super::conn`]) and is driven on the caller's task. Every await is
//! bounded: the connect by `connect_timeout`, the answer head by `first_token_timeout`
//! (Ollama sends its head with the first token, after loading the model), an
//! error body by [`ERROR_BODY_TIMEOUT`], a backoff by its own length, and all
//! of them by the caller's cancellation token.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{ACCEPT, CONTENT_TYPE, HOST, USER_AGENT};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conn::UpstreamConn;
use super::error::OllamaError;
use super::policy::RetryPolicy;
use super::stream::ChatStream;
use super::OllamaClient;
use crate::config::OllamaConfig;
use crate::metrics::{KindLabel, Metrics};

/// How long the body of a non-200 answer may take to arrive.
pub const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of the body of a non-200 answer is read.
pub const ERROR_BODY_MAX: usize = 16 * 1024;

/// Who wrote a message of the conversation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of `/api/chat`'s `messages`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// Ollama's `options`; `None` fields are left out (Ollama's default applies).
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct ChatOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// The gateway's `max_tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_predict: Option<u32>,
}

impl ChatOptions {
    /// The `[ollama]` defaults: temperature, top_p, top_k, max_tokens.
    pub fn from_config(cfg: &OllamaConfig) -> Self {
        Self {
            temperature: Some(cfg.temperature),
            top_p: Some(cfg.top_p),
            top_k: Some(cfg.top_k),
            num_predict: Some(cfg.max_tokens),
        }
    }
}

/// The body of `POST /api/chat`.
#[derive(Serialize, Clone, Debug)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    /// Always `true`: the client reads NDJSON.
    pub stream: bool,
    pub options: ChatOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<String>,
}

impl ChatRequest {
    /// A streaming request.
    pub fn new(
        model: impl Into<String>,
        messages: Vec<ChatMessage>,
        options: ChatOptions,
        keep_alive: Option<String>,
    ) -> Self {
        Self {
            model: model.into(),
            messages,
            stream: true,
            options,
            keep_alive,
        }
    }
}

impl OllamaClient {
    /// `POST /api/chat` with `stream: true`.
    ///
    /// Retries with exponential backoff (base, 2·base, 4·base …) up to
    /// `policy.retries` times on connection failures, 5xx (503 is Ollama's
    /// "server busy") and 429; never on another 4xx. Returns as soon as a 200
    /// head arrives. When `cancel` fires — also during a backoff — it returns
    /// [`OllamaError::Cancelled`] at once and the request is dropped.
    ///
    /// Counts `upstream_requests` per attempt, `upstream_retries` per retry
    /// and `upstream_failures{kind}` once when it gives up (not when
    /// cancelled). Failures of the returned stream are the caller's to count.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        policy: &RetryPolicy,
        cancel: &CancellationToken,
        metrics: &Metrics,
    ) -> Result<ChatStream, OllamaError> {
        let body = Bytes::from(
            serde_json::to_vec(req).map_err(|e| OllamaError::Malformed(e.to_string()))?,
        );
        // Origin-form: the connection is to Ollama itself; `Host` is set per
        // request from the pool's authority.
        let uri = http::Uri::from_static("/api/chat");
        let mut retry = 0;
        loop {
            if cancel.is_cancelled() {
                return Err(OllamaError::Cancelled);
            }
            metrics.upstream_requests.inc();
            let started = Instant::now();
            let result = tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(OllamaError::Cancelled),
                r = self.attempt(&uri, body.clone(), policy, started) => r,
            };
            let err = match result {
                Ok((resp, up)) => {
                    return Ok(ChatStream::new(
                        resp,
                        up,
                        self.pool.clone(),
                        policy,
                        started + policy.first_token_timeout,
                        retry + 1,
                    ))
                }
                Err(e) => e,
            };
            if !err.retryable() || retry >= policy.retries {
                if !matches!(err, OllamaError::Cancelled) {
                    metrics
                        .upstream_failures
                        .get_or_create(&KindLabel { kind: err.kind() })
                        .inc();
                    tracing::warn!(attempts = retry + 1, error = %err, kind = err.kind(), "Ollama chat request failed");
                }
                return Err(err);
            }
            let delay = policy.backoff(retry);
            retry += 1;
            metrics.upstream_retries.inc();
            tracing::info!(retry, of = policy.retries, delay_ms = delay.as_millis() as u64, error = %err, "Ollama chat request failed; retrying");
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(OllamaError::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One attempt: take a pooled connection or connect, send, wait for the
    /// head until the first-token deadline (driving the connection on this
    /// task), turn a non-200 into [`OllamaError::Status`].
    async fn attempt(
        &self,
        uri: &http::Uri,
        body: Bytes,
        policy: &RetryPolicy,
        started: Instant,
    ) -> Result<(http::Response<Incoming>, UpstreamConn), OllamaError> {
        let deadline = started + policy.first_token_timeout;
        let timeout = || OllamaError::Timeout {
            what: "first token",
            after: policy.first_token_timeout,
        };
        let mut up = tokio::time::timeout_at(deadline, self.pool.get(&self.base))
            .await
            .map_err(|_| timeout())??;
        let mut req = http::Request::post(uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/x-ndjson")
            .header(USER_AGENT, concat!("tars/", env!("CARGO_PKG_VERSION")));
        if let Some(host) = self.pool.authority() {
            req = req.header(HOST, host);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| OllamaError::Malformed(e.to_string()))?;
        let resp = up.send(req, deadline, &self.base, timeout).await?;
        let status = resp.status();
        if status == http::StatusCode::OK {
            return Ok((resp, up));
        }
        up.spawn_conn();
        let message = read_error_body(resp.into_body()).await;
        let message = error_message(&message)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
        Err(OllamaError::Status {
            status: status.as_u16(),
            message,
        })
    }
}

/// Up to [`ERROR_BODY_MAX`] bytes of `body`, within [`ERROR_BODY_TIMEOUT`];
/// whatever arrived when either runs out.
pub(crate) async fn read_error_body(mut body: Incoming) -> Bytes {
    let mut buf = BytesMut::new();
    let read = async {
        while buf.len() < ERROR_BODY_MAX {
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        let take = d.len().min(ERROR_BODY_MAX - buf.len());
                        buf.extend_from_slice(&d[..take]);
                    }
                }
                _ => break,
            }
        }
    };
    if tokio::time::timeout(ERROR_BODY_TIMEOUT, read)
        .await
        .is_err()
    {
        tracing::debug!(
            timeout_ms = ERROR_BODY_TIMEOUT.as_millis() as u64,
            "Ollama's error body did not end in time"
        );
    }
    buf.freeze()
}

/// Ollama's `{"error": "..."}` text, or else the start of the body as text;
/// `None` for an empty body.
pub(crate) fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct E {
        error: String,
    }
    if let Ok(e) = serde_json::from_slice::<E>(body) {
        return Some(e.error);
    }
    let text: String = String::from_utf8_lossy(body)
        .trim()
        .chars()
        .take(200)
        .collect();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_json_shape() {
        let req = ChatRequest::new(
            "llama3.2",
            vec![
                ChatMessage::new(Role::System, "be brief"),
                ChatMessage::new(Role::User, "hi"),
            ],
            ChatOptions {
                temperature: Some(0.5),
                num_predict: Some(10),
                ..Default::default()
            },
            None,
        );
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"model":"llama3.2","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"stream":true,"options":{"temperature":0.5,"num_predict":10}}"#
        );
        let req = ChatRequest {
            keep_alive: Some("5m".into()),
            ..req
        };
        assert!(serde_json::to_string(&req)
            .unwrap()
            .ends_with(r#""keep_alive":"5m"}"#));
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(br#"{"error":"model 'x' not found, try pulling it first"}"#).unwrap(),
            "model 'x' not found, try pulling it first"
        );
        assert_eq!(
            error_message(b"404 page not found\n").unwrap(),
            "404 page not found"
        );
        assert_eq!(error_message(b""), None);
    }
}
