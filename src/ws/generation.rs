//! One generation: a `chat` turned into an Ollama `/api/chat` request, its
//! NDJSON lines piped into `token` frames as they arrive, ended by exactly
//! one `complete` or one `error` frame.
//!
//! Cancellation (a `cancel` message, the client leaving, revocation) drops
//! the upstream request — which is how Ollama is told to stop — and ends the
//! generation with `complete` and `done_reason: "cancelled"`.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::conversations::{Bounds, Turn};
use super::protocol::{Chat, ErrorCode, ServerFrame};
use super::replay::Output;
use super::token_frame::TokenEncoder;
use super::writer::Out;
use super::SessionInfo;
use super::WsState;
use crate::config::Config;
use crate::ollama::{
    ChatLine, ChatMessage, ChatOptions, ChatRequest, OllamaError, RetryPolicy, Role,
};
use crate::upstream::{AcquireError, Lease, OpenError, Opened, Wait};

/// A chat accepted by the reader, waiting for its turn.
#[derive(Debug)]
pub struct Job {
    pub chat: Chat,
    /// The model, already checked against the client's allow-list.
    pub model: String,
    pub received_at: Instant,
}

/// How a generation ended (for metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    Cancelled,
    Error(ErrorCode),
    /// The session's queue is gone: nothing more can be sent.
    SessionGone,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Cancelled => "cancelled",
            Self::Error(code) => code.as_str(),
            Self::SessionGone => "session_gone",
        }
    }
}

/// Error code for a failed upstream request.
pub fn error_code(e: &OllamaError) -> ErrorCode {
    match e {
        OllamaError::Unreachable { .. } => ErrorCode::UpstreamUnavailable,
        OllamaError::Status { status, .. } if *status >= 500 || *status == 429 => {
            ErrorCode::UpstreamUnavailable
        }
        _ => ErrorCode::UpstreamError,
    }
}

fn bounds(cfg: &Config) -> Bounds {
    Bounds {
        turns: cfg.ollama.history_turns,
        per_client: cfg.ollama.max_conversations_per_client,
        idle: cfg.ollama.conversation_idle,
        total_bytes: cfg.ollama.max_conversation_bytes,
    }
}

/// Build the upstream request: system prompt, earlier turns, this message.
pub fn build_request(state: &WsState, cfg: &Config, client_id: &str, job: &Job) -> ChatRequest {
    let mut messages = Vec::new();
    if let Some(system) = job.chat.system.as_ref().filter(|s| !s.is_empty()) {
        messages.push(ChatMessage {
            role: Role::System,
            content: system.clone(),
        });
    }
    if let Some(conv) = &job.chat.conversation_id {
        messages.extend(state.conversations.history(client_id, conv, bounds(cfg)));
    }
    messages.push(ChatMessage {
        role: Role::User,
        content: job.chat.content.clone(),
    });
    let o = job.chat.options.clone().unwrap_or_default();
    let d = &cfg.ollama;
    ChatRequest {
        model: job.model.clone(),
        messages,
        stream: true,
        options: ChatOptions {
            temperature: Some(o.temperature.unwrap_or(d.temperature)),
            top_p: Some(o.top_p.unwrap_or(d.top_p)),
            top_k: Some(o.top_k.unwrap_or(d.top_k)),
            // `[ollama] max_tokens` is a ceiling, not only a default.
            num_predict: Some(o.max_tokens.map_or(d.max_tokens, |m| m.min(d.max_tokens))),
        },
        keep_alive: d.keep_alive.clone(),
    }
}

/// Running figures of one generation.
struct Progress {
    received_at: Instant,
    tokens: u64,
    first_token_at: Option<Instant>,
    eval_count: Option<u64>,
    eval_duration: Option<u64>,
    done_reason: Option<String>,
    /// The answer's text, kept only when the turn is remembered.
    answer: Option<String>,
    /// The upstream slot, from the open answer to the end.
    lease: Option<Lease>,
    /// The upstream's name (for `complete`).
    upstream: Option<Arc<str>>,
}

impl Progress {
    /// Nothing streamed yet; `remember` keeps the answer's text for history.
    fn new(received_at: Instant, remember: bool) -> Self {
        Self {
            received_at,
            tokens: 0,
            first_token_at: None,
            eval_count: None,
            eval_duration: None,
            done_reason: None,
            answer: remember.then(String::new),
            lease: None,
            upstream: None,
        }
    }
}

impl Progress {
    /// `complete.total_tokens`: the upstream's own count of the tokens it
    /// generated (Ollama's `eval_count`, OpenAI's `usage.completion_tokens`)
    /// when the answer completed and carried one; the `token` frames sent
    /// otherwise (cancelled, or no count given, as llama-cpp-python).
    fn total_tokens(&self, done_reason: &str) -> u64 {
        match self.eval_count {
            Some(n) if done_reason != "cancelled" => n,
            _ => self.tokens,
        }
    }
}

/// Run `job` to its end. Sends every frame through `out`; returns how it ended.
pub async fn run(
    state: &Arc<WsState>,
    session: &SessionInfo,
    out: &mut Output,
    job: Job,
    cancel: &CancellationToken,
) -> Outcome {
    let cfg = state.config();
    let req = build_request(state, &cfg, &session.client_id, &job);
    let conv = job.chat.conversation_id.as_deref();
    let mut p = Progress::new(job.received_at, conv.is_some());
    state.metrics.generations_active.inc();
    let result = stream(state, &cfg, &req, conv, out, cancel, &mut p).await;
    state.metrics.generations_active.dec();
    let outcome = match result {
        Ok(()) => Outcome::Complete,
        Err(Outcome::Cancelled) => Outcome::Cancelled,
        Err(other) => other,
    };
    if let Some(lease) = p.lease.take() {
        let label = match outcome {
            Outcome::Complete => "ok",
            Outcome::Error(_) => "error",
            Outcome::Cancelled | Outcome::SessionGone => "cancelled",
        };
        lease.finish(label, p.tokens);
    }
    let metrics = &state.metrics;
    metrics.generation(outcome.label());
    metrics
        .generation_duration
        .observe(job.received_at.elapsed().as_secs_f64());
    session.tokens.fetch_add(p.tokens, Ordering::Relaxed);
    match outcome {
        Outcome::Complete | Outcome::Cancelled => {
            let done_reason = if outcome == Outcome::Cancelled {
                "cancelled".to_string()
            } else {
                p.done_reason.clone().unwrap_or_else(|| "stop".into())
            };
            let frame = complete_frame(&job, conv, &p, &done_reason);
            // The complete frame goes out even after a cancel, unless the
            // session itself is closing (a resumable one keeps it).
            out.finish(frame.into(), p.tokens, session.cancel.is_cancelled())
                .await;
            if let (Some(c), Some(answer)) = (conv, p.answer.take()) {
                if outcome == Outcome::Complete || !answer.is_empty() {
                    state.conversations.record(
                        &session.client_id,
                        c,
                        Turn {
                            user: job.chat.content.clone(),
                            assistant: answer,
                        },
                        bounds(&cfg),
                    );
                }
            }
        }
        Outcome::Error(_) | Outcome::SessionGone => {}
    }
    outcome
}

fn complete_frame(job: &Job, conv: Option<&str>, p: &Progress, done_reason: &str) -> Vec<u8> {
    let ms = |d: std::time::Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let tps = match (p.eval_count, p.eval_duration) {
        (Some(n), Some(d)) if d > 0 => n as f64 / d as f64 * 1e9,
        _ => match p.first_token_at {
            Some(t) if p.tokens > 1 && t.elapsed().as_secs_f64() > 0.0 => {
                (p.tokens - 1) as f64 / t.elapsed().as_secs_f64()
            }
            _ => 0.0,
        },
    };
    ServerFrame::Complete {
        conversation_id: conv,
        total_tokens: p.total_tokens(done_reason),
        latency_ms: ms(job.received_at.elapsed()),
        timestamp: crate::response::now_rfc3339(),
        first_token_ms: p.first_token_at.map(|t| ms(t - job.received_at)),
        tokens_per_second: (tps * 100.0).round() / 100.0,
        model: &job.model,
        done_reason,
        upstream: p.upstream.as_deref(),
    }
    .to_json()
}

/// The `complete` owed to a queued chat that was cancelled before it ran.
pub fn cancelled_before_start(job: &Job) -> Vec<u8> {
    let p = Progress::new(job.received_at, false);
    complete_frame(job, job.chat.conversation_id.as_deref(), &p, "cancelled")
}

/// Send an `error` frame for this generation (`after`: tokens sent).
async fn fail(
    out: &mut Output,
    code: ErrorCode,
    message: &str,
    conv: Option<&str>,
    after: u64,
) -> Outcome {
    let frame = super::protocol::error(code, message, conv);
    out.finish(frame.into(), after, false).await;
    Outcome::Error(code)
}

#[allow(clippy::too_many_arguments)]
async fn stream(
    state: &Arc<WsState>,
    cfg: &Config,
    req: &ChatRequest,
    conv: Option<&str>,
    out: &mut Output,
    cancel: &CancellationToken,
    p: &mut Progress,
) -> Result<(), Outcome> {
    let policy = RetryPolicy::from_config(&cfg.ollama);
    let mut upstream = match open_upstream(state, req, &policy, conv, out, cancel).await {
        Ok(Opened { stream, lease }) => {
            p.upstream = Some(lease.name().clone());
            p.lease = Some(lease);
            stream
        }
        Err(outcome) => return Err(outcome),
    };
    let mut enc = TokenEncoder::new(conv);
    // One clock read a line: the frames' wall-clock timestamps are this
    // anchor plus the monotonic time since (a generation lasts minutes; a
    // clock step meanwhile is not followed, and timestamps never go back).
    let (wall0, mono0) = (time::OffsetDateTime::now_utc(), Instant::now());
    let mut thinking_seq = 0u64;
    loop {
        if cancel.is_cancelled() {
            return Err(Outcome::Cancelled);
        }
        let next = upstream.next();
        tokio::pin!(next);
        // Fast path (every line at saturation): a line already read is taken
        // without registering, and then dropping, a waiter on the
        // cancellation token and the resume events; the select below runs
        // only when the upstream has nothing ready.
        let ready = if out.quiet() {
            std::future::poll_fn(|cx| Poll::Ready(next.as_mut().poll(cx))).await
        } else {
            Poll::Pending
        };
        let line = match ready {
            Poll::Ready(r) => r,
            Poll::Pending => tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Outcome::Cancelled),
                // Resume: a takeover, the session gone, the window passed.
                ev = out.event() => {
                    out.handle(ev, cancel).await?;
                    continue;
                }
                r = &mut next => r,
            },
        };
        let read_at = Instant::now();
        let wall = wall0 + read_at.saturating_duration_since(mono0);
        let parsed = match line {
            Ok(Some(l)) => l,
            Ok(None) => {
                return Err(fail(
                    out,
                    ErrorCode::UpstreamError,
                    "the upstream ended the stream before its final line",
                    conv,
                    p.tokens,
                )
                .await)
            }
            Err(OllamaError::Cancelled) => return Err(Outcome::Cancelled),
            Err(e) => {
                debug!(error = %e, "upstream stream failed");
                let msg = e.to_string();
                return Err(fail(out, ErrorCode::UpstreamError, &msg, conv, p.tokens).await);
            }
        };
        let (content, thinking, done) = match parsed {
            ChatLine::Content { content, thinking } => (Some(content), thinking, None),
            ChatLine::Done { content, stats } => (content, None, Some(stats)),
            ChatLine::Error(msg) => {
                return Err(fail(
                    out,
                    ErrorCode::UpstreamError,
                    &format!("Ollama: {msg}"),
                    conv,
                    p.tokens,
                )
                .await)
            }
        };
        if let Some(t) = thinking.filter(|t| t.get() != "\"\"") {
            thinking_seq += 1;
            let frame = enc.encode("thinking", t.get(), thinking_seq, wall);
            out.send(Out::Text(frame), p.tokens, cancel).await?;
        }
        if let Some(c) = content.filter(|c| c.get() != "\"\"") {
            p.tokens += 1;
            if p.first_token_at.is_none() {
                p.first_token_at = Some(read_at);
            }
            if let Some(answer) = p.answer.as_mut() {
                if let Ok(text) = serde_json::from_str::<std::borrow::Cow<'_, str>>(c.get()) {
                    answer.push_str(&text);
                }
            }
            let frame = enc.encode("token", c.get(), p.tokens, wall);
            out.send(Out::Token(frame, read_at), p.tokens - 1, cancel)
                .await?;
            state.metrics.tokens_streamed.inc();
            if p.tokens == 1 {
                state
                    .metrics
                    .time_to_first_token
                    .observe(read_at.duration_since(p.received_at).as_secs_f64());
            }
        }
        if let Some(stats) = done {
            p.eval_count = stats.eval_count;
            p.eval_duration = stats.eval_duration;
            p.done_reason = stats.done_reason;
            return Ok(());
        }
    }
}

/// The `error` frame's code and message for an answer that could not be opened.
pub fn open_error(e: &OpenError, policy: &RetryPolicy) -> (ErrorCode, String) {
    match e {
        OpenError::Acquire(AcquireError::Busy(_)) => (ErrorCode::Busy, e.to_string()),
        OpenError::Acquire(_) => (ErrorCode::UpstreamUnavailable, e.to_string()),
        OpenError::Upstream {
            upstream,
            error,
            tried,
        } => {
            let code = error_code(error);
            let msg = match code {
                ErrorCode::UpstreamUnavailable if *tried > 1 => {
                    format!("no upstream could take the chat ({tried} tried); last, {upstream}: {error}")
                }
                ErrorCode::UpstreamUnavailable => format!(
                    "upstream {upstream} is unavailable (after {} retries): {error}",
                    policy.retries
                ),
                _ => format!("upstream {upstream}: {error}"),
            };
            (code, msg)
        }
    }
}

/// Choose an upstream and open the answer (the pool's failover included);
/// `status` frames tell the client it waits or a model loads.
async fn open_upstream(
    state: &Arc<WsState>,
    req: &ChatRequest,
    policy: &RetryPolicy,
    conv: Option<&str>,
    out: &mut Output,
    cancel: &CancellationToken,
) -> Result<Opened, Outcome> {
    let model = req.model.as_str();
    let mut on_wait = |w: Wait| {
        let frame = match w {
            Wait::Queued { position } => super::protocol::status_queued(conv, position),
            Wait::LoadingModel => super::protocol::status_loading(conv, model),
        };
        // Informational: a full queue (a client not reading) skips it.
        if out.try_notice(Out::Text(frame.into())) {
            state
                .metrics
                .ws_message(crate::metrics::Direction::Out, "status");
        }
    };
    match crate::upstream::open(&state.pool, req, policy, cancel, &mut on_wait).await {
        Ok(o) => Ok(o),
        Err(OpenError::Acquire(AcquireError::Cancelled)) => Err(Outcome::Cancelled),
        Err(e) => {
            let (code, msg) = open_error(&e, policy);
            warn!(model = %req.model, error = %e, code = code.as_str(), "upstream request failed");
            if code == ErrorCode::UpstreamUnavailable {
                state.ready.invalidate().await;
            }
            Err(fail(out, code, &msg, conv, 0).await)
        }
    }
}
