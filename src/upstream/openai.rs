//! The OpenAI dialect (llama.cpp's server, LM Studio, vLLM, OpenAI itself):
//! `POST {url}/v1/chat/completions` with `stream: true`, one attempt per
//! call (retries and failover are the pool's), and [`OpenAiStream`], the
//! Server-Sent Events answer read on demand and handed out as the same
//! [`ChatLine`]s the Ollama path yields, so both share one streaming path.
//!
//! Chats go over the Ollama path's own connections (`ollama::conn`, ADR
//! 0021): the stream polls its HTTP/1.1 connection inline, so one read of
//! the server's socket that brings many events becomes many `token` frames
//! queued before the session writer runs (one write for all of them), and
//! idle connections are kept for reuse. Probes and discovery use the pooled
//! hyper-util client.
//!
//! Token text stays the JSON string literal the server sent (ADR 0002);
//! `usage.completion_tokens` and `finish_reason` become the final line's
//! `eval_count` and `done_reason`. Bounds are the Ollama path's: the event
//! cap is `max_line_bytes`, the first event must come within
//! `first_token_timeout` of the request, later ones within `idle_timeout`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use http_body_util::Full;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::openai_sse::{self, Ready, SseEvent, SseParser};
use crate::config::Secret;
use crate::ollama::conn::{ConnPool, DrivenBody};
use crate::ollama::deadline::Deadlines;
use crate::ollama::{
    error_chain, ChatLine, ChatMessage, ChatRequest, Connector, DoneStats, HttpClient, OllamaError,
    RetryPolicy,
};

/// A pooled client for one OpenAI-compatible server.
#[derive(Clone)]
pub struct OpenAiClient {
    /// Probes and discovery.
    http: HttpClient,
    /// Chats: connections driven by their stream (ADR 0021).
    chats: Arc<ConnPool>,
    /// Base URL without `/v1` and without a trailing `/`.
    base: String,
    key: Option<Secret>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// The body of `POST /v1/chat/completions`.
#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    stream: bool,
    stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
}

/// The JSON body for `req` (history, system prompt and options as for
/// Ollama; `top_k` has no OpenAI field and is left out).
pub fn request_body(req: &ChatRequest) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Body {
        model: &req.model,
        messages: &req.messages,
        stream: true,
        stream_options: StreamOptions {
            include_usage: true,
        },
        temperature: req.options.temperature,
        top_p: req.options.top_p,
        max_tokens: req.options.num_predict,
    })
}

impl OpenAiClient {
    /// A client for the server at `base` whose connections `connector`
    /// opens (plain or TLS), keeping up to `pool` idle and `spares` warm
    /// (ADR 0024).
    pub fn new(
        base: &str,
        key: Option<Secret>,
        connector: Connector,
        pool: usize,
        spares: usize,
    ) -> Self {
        let base = base.trim_end_matches('/').to_string();
        Self {
            http: crate::ollama::http_client(connector.clone(), pool),
            chats: Arc::new(ConnPool::new(&base, connector, pool, spares)),
            base,
            key,
        }
    }

    /// `GET /v1/models` within `timeout`: the model ids.
    pub async fn models(&self, timeout: Duration) -> Result<Vec<String>, OllamaError> {
        #[derive(serde::Deserialize)]
        struct M {
            id: String,
        }
        #[derive(serde::Deserialize)]
        struct L {
            data: Vec<M>,
        }
        let key = self.key.as_ref().map(Secret::expose);
        let body = crate::ollama::get(&self.http, &self.base, "/v1/models", key, timeout).await?;
        serde_json::from_slice::<L>(&body)
            .map(|l| l.data.into_iter().map(|m| m.id).collect())
            .map_err(|e| OllamaError::Malformed(format!("/v1/models: {e}")))
    }

    /// One streaming request; returns once a 2xx head arrived (within
    /// `first_token_timeout`). A non-2xx is [`OllamaError::Status`] with the
    /// server's `error.message`.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        policy: &RetryPolicy,
    ) -> Result<OpenAiStream, OllamaError> {
        let body = request_body(req).map_err(|e| OllamaError::Malformed(e.to_string()))?;
        let started = Instant::now();
        let deadline = started + policy.first_token_timeout;
        let timeout = || OllamaError::Timeout {
            what: "first token",
            after: policy.first_token_timeout,
        };
        let mut up = tokio::time::timeout_at(deadline, self.chats.get(&self.base))
            .await
            .map_err(|_| timeout())??;
        // Origin-form: the connection is to the server itself.
        let mut builder = http::Request::post("/v1/chat/completions")
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "text/event-stream")
            .header(USER_AGENT, concat!("tars/", env!("CARGO_PKG_VERSION")));
        if let Some(key) = &self.key {
            let mut v = b"Bearer ".to_vec();
            v.extend_from_slice(key.expose());
            let mut v = http::HeaderValue::from_bytes(&v).map_err(|_| {
                OllamaError::Malformed("API key is not a valid header value".into())
            })?;
            v.set_sensitive(true);
            builder = builder.header(AUTHORIZATION, v);
        }
        if let Some(host) = self.chats.authority() {
            builder = builder.header(HOST, host);
        }
        let http_req = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| OllamaError::Malformed(e.to_string()))?;
        let resp = up.send(http_req, deadline, &self.base, timeout).await?;
        let status = resp.status();
        if !status.is_success() {
            // Rare: the error body is read with its connection on a task of
            // its own, and the connection is not reused.
            up.spawn_conn();
            let body = crate::ollama::chat::read_error_body(resp.into_body()).await;
            let message = openai_sse::error_message(&body)
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
            return Err(OllamaError::Status {
                status: status.as_u16(),
                message,
            });
        }
        Ok(OpenAiStream {
            body: DrivenBody::new(resp.into_body(), up, self.chats.clone()),
            parser: SseParser::new(policy.max_line_bytes),
            deadlines: Deadlines::new(deadline, policy.first_token_timeout, policy.idle_timeout),
            finish: None,
            completion_tokens: None,
            ended: false,
        })
    }
}

/// A streaming answer of `/v1/chat/completions`, read on demand (a slow
/// client leaves the bytes in the socket: backpressure), dropped to cancel.
pub struct OpenAiStream {
    /// The body and its connection, polled inline; dropping it mid-answer
    /// closes the connection (the server stops), after the end gives it
    /// back to the pool.
    body: DrivenBody,
    parser: SseParser,
    /// The first-token and idle deadlines.
    deadlines: Deadlines,
    finish: Option<String>,
    completion_tokens: Option<u64>,
    /// The final line was made up (no `[DONE]`): only `None` from now on.
    ended: bool,
}

/// `""`: the content of a reasoning-only line.
fn empty() -> &'static RawValue {
    serde_json::from_str("\"\"").expect("a JSON string")
}

fn raw(literal: &str) -> Result<&RawValue, OllamaError> {
    serde_json::from_str(literal).map_err(|e| OllamaError::Malformed(e.to_string()))
}

impl OpenAiStream {
    /// The next line of the answer as the Ollama path would see it:
    /// `Content` per delta, `Done` at `[DONE]` (or at the end of a body that
    /// gave a `finish_reason`), `Error` for an error event. Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<ChatLine<'_>>, OllamaError> {
        loop {
            let ready = self
                .parser
                .ready()
                .map_err(|e| OllamaError::Stream(e.to_string()))?;
            match ready {
                Ready::NeedInput => self.read().await?,
                Ready::Text => {
                    self.deadlines.delivered();
                    return match self.parser.next_event() {
                        Ok(Some(SseEvent::Delta { content })) => Ok(Some(ChatLine::Content {
                            content: raw(content)?,
                            thinking: None,
                        })),
                        Ok(Some(SseEvent::Reasoning { content })) => Ok(Some(ChatLine::Content {
                            content: empty(),
                            thinking: Some(raw(content)?),
                        })),
                        Ok(_) => Err(OllamaError::Malformed("event vanished".into())),
                        Err(e) => Err(OllamaError::Stream(e.to_string())),
                    };
                }
                Ready::Other => {
                    self.deadlines.delivered();
                    let ev = self
                        .parser
                        .next_event()
                        .map_err(|e| OllamaError::Stream(e.to_string()))?;
                    match ev {
                        Some(SseEvent::Finish { reason }) => self.finish = Some(reason),
                        Some(SseEvent::Usage {
                            completion_tokens, ..
                        }) => self.completion_tokens = completion_tokens,
                        Some(SseEvent::Error { message }) => {
                            return Ok(Some(ChatLine::Error(message)))
                        }
                        Some(SseEvent::Done) => return Ok(Some(self.done_line())),
                        _ => {}
                    }
                }
                Ready::End => {
                    if self.parser.is_done() {
                        return Ok(None);
                    }
                    // Closed after a finish_reason, without [DONE]: complete.
                    if std::mem::replace(&mut self.ended, true) {
                        return Ok(None);
                    }
                    return Ok(Some(self.done_line()));
                }
            }
        }
    }

    /// Wait until the first event of the answer is there, without handing
    /// it out. An OpenAI server sends its `200` head at once, before the
    /// model ran: priming lets the pool fail over when the first token never
    /// comes (timeout, a cut stream), while nothing was sent to the client.
    pub async fn prime(&mut self) -> Result<(), OllamaError> {
        loop {
            match self
                .parser
                .ready()
                .map_err(|e| OllamaError::Stream(e.to_string()))?
            {
                Ready::NeedInput => self.read().await?,
                _ => return Ok(()),
            }
        }
    }

    fn done_line(&mut self) -> ChatLine<'static> {
        ChatLine::Done {
            content: None,
            stats: DoneStats {
                eval_count: self.completion_tokens,
                done_reason: self.finish.take().or(Some("stop".into())),
                ..DoneStats::default()
            },
        }
    }

    /// Read one more frame of the body into the parser, within the deadline.
    async fn read(&mut self) -> Result<(), OllamaError> {
        let frame = self.deadlines.next_frame(&mut self.body).await?;
        match frame {
            None => {
                self.parser.end();
                Ok(())
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    self.parser.push(&data);
                }
                Ok(())
            }
            Some(Err(e)) => Err(OllamaError::Stream(error_chain(&e))),
        }
    }
}

impl std::fmt::Debug for OpenAiStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiStream")
            .field("buffered", &self.parser.buffered())
            .field("started", &self.deadlines.started())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ollama::{ChatOptions, Role};

    #[test]
    fn request_body_shape() {
        let req = ChatRequest::new(
            "smollm2",
            vec![
                ChatMessage::new(Role::System, "be brief"),
                ChatMessage::new(Role::User, "hi"),
            ],
            ChatOptions {
                temperature: Some(0.5),
                top_p: Some(0.9),
                top_k: Some(40),
                num_predict: Some(10),
            },
            Some("5m".into()),
        );
        assert_eq!(
            String::from_utf8(request_body(&req).unwrap()).unwrap(),
            r#"{"model":"smollm2","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"temperature":0.5,"top_p":0.9,"max_tokens":10}"#
        );
    }
}
