//! A fake Ollama for tests: an in-process hyper HTTP/1.1 server on
//! `127.0.0.1:0` that answers like Ollama, byte for byte (see
//! `../shared/OLLAMA-API.md`), scripted per test through [`FakeOllama`].
//!
//! Streaming answers are `application/x-ndjson` bodies fed from a bounded
//! channel by one task per stream, one line per chunk unless a [`Chunking`]
//! says otherwise; a client that goes away is noticed at once (the channel
//! closes when hyper drops the body) and the instant is recorded, so tests
//! can check that the gateway dropped its upstream request. Token text is
//! JSON-escaped exactly as Go's `encoding/json` does (`<` → `\u003c` ...).
//!
//! It also speaks the OpenAI dialect (`POST /v1/chat/completions`, `GET
//! /v1/models`; `sse.rs`) with the same behaviours, so the load tool can
//! put an `api = "openai"` upstream on the same token stream.
//!
//! ```ignore
//! let fake = FakeOllama::start().await;
//! fake.set(Behavior::stream(["Hel", "lo"]).delay(Duration::from_millis(5)));
//! fake.push(Behavior::Status(503, "server busy, please try again".into()));
//! // ... point the gateway or an OllamaClient at fake.url() ...
//! assert_eq!(fake.chat_count(), 2);
//! ```

mod sse;
mod writer;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::upstream_tls::serve_conn;
use writer::{echo_text, Format, Out};

#[allow(unused_imports)]
pub use writer::{go_json_string, split_tokens};

/// The version `GET /api/version` reports.
pub const VERSION: &str = "0.5.1";
/// How long a request body may take to arrive.
const REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// How the lines of a streaming answer are cut into HTTP chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunking {
    /// One line per chunk, as Ollama does.
    PerLine,
    /// Each line cut into chunks of `n` bytes (the last one shorter).
    Split(usize),
    /// The whole answer in one chunk, sent at the end.
    Coalesced,
}

/// What the fake does with a `/api/chat` or `/api/generate` request.
#[derive(Clone, Debug, Default)]
pub enum Behavior {
    /// `thinking` lines, then one line per token, then the final line.
    Stream {
        tokens: Vec<String>,
        /// Before the first line (the head is sent at once).
        first_delay: Duration,
        /// Before every later line.
        delay: Duration,
        chunking: Chunking,
        done_reason: String,
        /// Thinking lines (empty content, `thinking` set) before the content.
        thinking: Vec<String>,
    },
    /// Streams back the last user message (chat) or the prompt (generate)
    /// cut into a few tokens. The default.
    #[default]
    Echo,
    /// A non-200 answer with `{"error": message}`.
    Status(u16, String),
    /// `n` tokens, then `{"error": message}` with no `done` field.
    ErrorAfter(usize, String),
    /// `n` tokens, then a line that is not JSON, then the final line.
    MalformedAfter(usize),
    /// `n` tokens, then the connection is closed without a final line.
    DropAfter(usize),
    /// The 200 head, then nothing until the client goes away.
    Stall,
    /// `count` tokens `interval` apart, each the wall-clock time in
    /// nanoseconds since the UNIX epoch when it was written.
    Clock { count: usize, interval: Duration },
    /// A token every `delay` until the client goes away.
    Endless { delay: Duration },
    /// Like [`Behavior::Clock`] but on a fixed-rate schedule (the `k`-th
    /// token is due `k * interval` after the first, whatever the time spent
    /// writing; a late token is written at once, then the schedule resumes
    /// from it): `count` tokens at one per `interval` on average, for load
    /// tests.
    Paced { count: usize, interval: Duration },
}

impl Behavior {
    /// A plain stream of `tokens`: no delays, a line per chunk, `"stop"`.
    pub fn stream<S: Into<String>>(tokens: impl IntoIterator<Item = S>) -> Self {
        Self::Stream {
            tokens: tokens.into_iter().map(Into::into).collect(),
            first_delay: Duration::ZERO,
            delay: Duration::ZERO,
            chunking: Chunking::PerLine,
            done_reason: "stop".into(),
            thinking: Vec::new(),
        }
    }

    /// Set `first_delay` of a [`Behavior::Stream`].
    pub fn first_delay(mut self, d: Duration) -> Self {
        *self.stream_field().0 = d;
        self
    }

    /// Set `delay` of a [`Behavior::Stream`].
    pub fn delay(mut self, d: Duration) -> Self {
        *self.stream_field().1 = d;
        self
    }

    /// Set `chunking` of a [`Behavior::Stream`].
    pub fn chunking(mut self, c: Chunking) -> Self {
        *self.stream_field().2 = c;
        self
    }

    /// Set `done_reason` of a [`Behavior::Stream`].
    pub fn done_reason(mut self, r: &str) -> Self {
        *self.stream_field().3 = r.into();
        self
    }

    /// Set `thinking` of a [`Behavior::Stream`].
    pub fn thinking<S: Into<String>>(mut self, t: impl IntoIterator<Item = S>) -> Self {
        *self.stream_field().4 = t.into_iter().map(Into::into).collect();
        self
    }

    #[allow(clippy::type_complexity)]
    fn stream_field(
        &mut self,
    ) -> (
        &mut Duration,
        &mut Duration,
        &mut Chunking,
        &mut String,
        &mut Vec<String>,
    ) {
        match self {
            Self::Stream {
                first_delay,
                delay,
                chunking,
                done_reason,
                thinking,
                ..
            } => (first_delay, delay, chunking, done_reason, thinking),
            other => panic!("not a Behavior::Stream: {other:?}"),
        }
    }
}

/// One streaming answer that has ended.
#[derive(Clone, Debug)]
pub struct StreamRecord {
    /// `/api/chat` or `/api/generate`.
    pub path: &'static str,
    pub opened_at: Instant,
    /// When the fake finished or noticed the client had gone.
    pub closed_at: Instant,
    /// The client went away before the fake had finished.
    pub by_client: bool,
    /// Lines written (accepted by hyper's channel).
    pub lines: usize,
}

/// A running fake Ollama. Cheap to clone; stops when the last clone drops.
#[derive(Clone)]
pub struct FakeOllama {
    ctl: Arc<Control>,
}

struct Control {
    shared: Arc<Shared>,
    addr: SocketAddr,
    root: CancellationToken,
    running: tokio::sync::Mutex<Option<Running>>,
    /// Serve TLS with this (see [`super::upstream_tls::TestCa`]).
    tls: Option<TlsAcceptor>,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.root.cancel();
    }
}

/// One listening period, between `start`/`restart` and `stop`.
struct Running {
    token: CancellationToken,
    accept: JoinHandle<()>,
    conns: TaskTracker,
}

/// What the server tasks and the handle share.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    streams_open: AtomicUsize,
    /// Lines handed to hyper by all streams so far.
    lines_written: AtomicUsize,
    /// TCP connections accepted so far (keep-alive reuse shows as fewer
    /// connections than requests).
    connections: AtomicUsize,
    /// Woken whenever a stream ends.
    changed: Notify,
}

#[derive(Default)]
struct State {
    default: Behavior,
    queue: VecDeque<Behavior>,
    requests: Vec<Value>,
    chat_count: usize,
    generate_count: usize,
    closed: Vec<StreamRecord>,
    /// Client-closed streams already returned by `wait_stream_closed`.
    closed_reported: usize,
    /// Do not keep request bodies (long load runs); see
    /// [`FakeOllama::forget_requests`].
    forget_requests: bool,
    /// `/api/tags` and `/api/ps` bodies replacing the fixed ones.
    tags: Option<String>,
    ps: Option<String>,
    /// `/api/tags` requests seen.
    tags_count: std::sync::atomic::AtomicUsize,
    /// `eval_count` (or `usage.completion_tokens`) reported instead of the
    /// number of tokens streamed.
    eval_count: Option<usize>,
}

impl State {
    fn tags_count_inc(&self) {
        self.tags_count.fetch_add(1, Ordering::SeqCst);
    }
}

/// `{"models":[{"name":..,"model":..}, ...]}` as `/api/tags` and `/api/ps` answer.
fn model_list(models: &[&str]) -> String {
    let list: Vec<Value> = models
        .iter()
        .map(|m| serde_json::json!({"name": m, "model": m, "size": 1, "digest": "0"}))
        .collect();
    serde_json::json!({ "models": list }).to_string()
}

impl FakeOllama {
    /// Listen on `127.0.0.1:0`, on the current tokio runtime.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// The same, serving HTTPS with `acceptor` (a [`super::upstream_tls::TestCa`]'s).
    pub async fn start_tls(acceptor: TlsAcceptor) -> Self {
        Self::start_with(Some(acceptor)).await
    }

    async fn start_with(tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake Ollama");
        let addr = listener.local_addr().unwrap();
        let ctl = Arc::new(Control {
            shared: Arc::new(Shared::default()),
            addr,
            root: CancellationToken::new(),
            running: tokio::sync::Mutex::new(None),
            tls,
        });
        let running = spawn_accept(
            listener,
            ctl.shared.clone(),
            ctl.root.child_token(),
            ctl.tls.clone(),
        );
        *ctl.running.lock().await = Some(running);
        Self { ctl }
    }

    /// `http://127.0.0.1:PORT` (`https://` when started with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.ctl.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.ctl.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.ctl.addr
    }

    /// The behaviour for requests once the queue is empty.
    pub fn set(&self, b: Behavior) {
        self.state().default = b;
    }

    /// A behaviour for one request; queued ones are used in order before the
    /// one given to [`set`](Self::set).
    pub fn push(&self, b: Behavior) {
        self.state().queue.push_back(b);
    }

    /// Answer `/api/tags` with these models (instead of the fixed list).
    pub fn set_tags(&self, models: &[&str]) {
        self.state().tags = Some(model_list(models));
    }

    /// Answer `/api/ps` with these models loaded (instead of the fixed list).
    pub fn set_ps(&self, models: &[&str]) {
        self.state().ps = Some(model_list(models));
    }

    /// Report `n` as the final line's `eval_count` (OpenAI:
    /// `usage.completion_tokens`) whatever the number of tokens streamed;
    /// `None`: the number streamed.
    pub fn set_eval_count(&self, n: Option<usize>) {
        self.state().eval_count = n;
    }

    /// `/api/tags` requests seen.
    pub fn tags_count(&self) -> usize {
        self.state().tags_count.load(Ordering::SeqCst)
    }

    /// The JSON bodies received on `/api/chat` and `/api/generate`, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.state().requests.clone()
    }

    /// Stop (or resume) keeping the bodies [`requests`](Self::requests)
    /// returns, so a load run of many generations does not grow the fake.
    pub fn forget_requests(&self, forget: bool) {
        let mut st = self.state();
        st.forget_requests = forget;
        if forget {
            st.requests = Vec::new();
        }
    }

    /// Requests received on `/api/chat` (whatever their answer).
    pub fn chat_count(&self) -> usize {
        self.state().chat_count
    }

    /// Requests received on `/api/generate`.
    pub fn generate_count(&self) -> usize {
        self.state().generate_count
    }

    /// Streaming answers in progress.
    pub fn streams_open(&self) -> usize {
        self.ctl.shared.streams_open.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.ctl.shared.connections.load(Ordering::SeqCst)
    }

    /// Lines handed to hyper by all streams so far; stops growing while a
    /// client does not read (backpressure).
    pub fn lines_written(&self) -> usize {
        self.ctl.shared.lines_written.load(Ordering::SeqCst)
    }

    /// Every streaming answer that has ended, in the order they ended.
    pub fn closed_streams(&self) -> Vec<StreamRecord> {
        self.state().closed.clone()
    }

    /// Wait up to `timeout` for a stream to be closed by its client (one
    /// not returned before) and return when the fake noticed it; compare
    /// with the instant the client dropped it.
    pub async fn wait_stream_closed(&self, timeout: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.ctl.shared.changed.notified();
            if let Some(at) = self.take_client_closed() {
                return Some(at);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.take_client_closed();
            }
        }
    }

    /// How long after `since` (when the client dropped or cancelled it) the
    /// fake saw a stream closed, waiting up to `timeout`; panics when none
    /// closed in that time.
    pub async fn stream_closed_after(&self, since: Instant, timeout: Duration) -> Duration {
        self.wait_stream_closed(timeout)
            .await
            .expect("upstream closed")
            .saturating_duration_since(since)
    }

    /// Wait up to `timeout` until `n` streams are open.
    pub async fn wait_streams_open(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.streams_open() != n {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }

    /// Stop listening and close every connection: the port refuses
    /// connections until [`restart`](Self::restart).
    pub async fn stop(&self) {
        let running = self.ctl.running.lock().await.take();
        if let Some(r) = running {
            r.token.cancel();
            let _ = r.accept.await;
            r.conns.close();
            r.conns.wait().await;
        }
    }

    /// Listen again on the same port.
    pub async fn restart(&self) {
        let mut running = self.ctl.running.lock().await;
        if running.is_some() {
            return;
        }
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.ctl.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("fake Ollama cannot listen again on {}: {e}", self.ctl.addr),
            }
        };
        *running = Some(spawn_accept(
            listener,
            self.ctl.shared.clone(),
            self.ctl.root.child_token(),
            self.ctl.tls.clone(),
        ));
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.ctl.shared.state.lock().unwrap()
    }

    fn take_client_closed(&self) -> Option<Instant> {
        let mut st = self.state();
        let skip = st.closed_reported;
        let at = st
            .closed
            .iter()
            .filter(|r| r.by_client)
            .nth(skip)
            .map(|r| r.closed_at)?;
        st.closed_reported += 1;
        Some(at)
    }
}

fn spawn_accept(
    listener: TcpListener,
    shared: Arc<Shared>,
    token: CancellationToken,
    tls: Option<TlsAcceptor>,
) -> Running {
    let conns = TaskTracker::new();
    let accept = tokio::spawn({
        let token = token.clone();
        let conns = conns.clone();
        async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok(s) => s,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        }
                    },
                };
                let _ = stream.set_nodelay(true);
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let shared = shared.clone();
                let token = token.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| handle(shared.clone(), req));
                    serve_conn(stream, tls, service, token).await;
                });
            }
        }
    });
    Running {
        token,
        accept,
        conns,
    }
}

type Body = BoxBody<Bytes, io::Error>;

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    let resp = match (req.method(), path) {
        (&Method::GET | &Method::HEAD, "/") => {
            fixed(200, "text/plain; charset=utf-8", "Ollama is running")
        }
        (&Method::GET, "/api/version") => json(200, format!("{{\"version\":\"{VERSION}\"}}")),
        (&Method::GET, "/api/tags") => {
            let st = shared.state.lock().unwrap();
            st.tags_count_inc();
            json(200, st.tags.clone().unwrap_or_else(|| TAGS.to_string()))
        }
        (&Method::GET, "/api/ps") => {
            let st = shared.state.lock().unwrap();
            json(200, st.ps.clone().unwrap_or_else(|| PS.to_string()))
        }
        (&Method::GET, "/v1/models") => {
            let st = shared.state.lock().unwrap();
            json(200, sse::models_body(st.tags.as_deref().unwrap_or(TAGS)))
        }
        (&Method::POST, "/api/chat") => generation(shared, req, "/api/chat").await,
        (&Method::POST, "/v1/chat/completions") => {
            generation(shared, req, "/v1/chat/completions").await
        }
        (&Method::POST, "/api/generate") => generation(shared, req, "/api/generate").await,
        _ => fixed(404, "text/plain", "404 page not found"),
    };
    Ok(resp)
}

const TAGS: &str = r#"{"models":[{"name":"llama3.2:latest","model":"llama3.2:latest","modified_at":"2025-01-10T10:00:00.000000000Z","size":2019393189,"digest":"a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72","details":{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"3.2B","quantization_level":"Q4_K_M"}},{"name":"mistral:7b-instruct","model":"mistral:7b-instruct","modified_at":"2025-01-10T10:00:00.000000000Z","size":4113301824,"digest":"f974a74358d62a017b37c6f424fcdf2744ca02926c4f952513ddf474b2fa5091","details":{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"7.2B","quantization_level":"Q4_0"}}]}"#;
const PS: &str = r#"{"models":[{"name":"mistral:7b-instruct","model":"mistral:7b-instruct","size":4113301824,"digest":"f974a74358d62a017b37c6f424fcdf2744ca02926c4f952513ddf474b2fa5091","details":{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"7.2B","quantization_level":"Q4_0"},"expires_at":"2099-01-01T00:00:00.000000000Z","size_vram":4113301824},{"name":"llama3.2:latest","model":"llama3.2:latest","size":3825819519,"digest":"a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72","details":{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"3.2B","quantization_level":"Q4_K_M"},"expires_at":"2099-01-01T00:00:00.000000000Z","size_vram":3825819519}]}"#;

fn fixed(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(
            Full::new(body.into())
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

fn json(status: u16, body: String) -> Response<Body> {
    fixed(status, "application/json; charset=utf-8", body)
}

fn error_json(status: u16, message: &str) -> Response<Body> {
    let mut s = String::from("{\"error\":");
    go_json_string(message, &mut s);
    s.push('}');
    json(status, s)
}

/// `/api/chat`, `/api/generate` and `/v1/chat/completions`: record the
/// request, pick a behaviour, answer.
async fn generation(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    path: &'static str,
) -> Response<Body> {
    let openai = path == "/v1/chat/completions";
    let chat = path != "/api/generate";
    let error_json = |status, message: &str| {
        if openai {
            json(status, sse::error_body(message))
        } else {
            error_json(status, message)
        }
    };
    let body = match tokio::time::timeout(REQUEST_BODY_TIMEOUT, req.into_body().collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        _ => return error_json(400, "unexpected EOF"),
    };
    let parsed: Result<Value, _> = serde_json::from_slice(&body);
    let (behavior, eval_count) = {
        let mut st = shared.state.lock().unwrap();
        if chat {
            st.chat_count += 1;
        } else {
            st.generate_count += 1;
        }
        let Ok(v) = &parsed else {
            drop(st);
            return error_json(400, "invalid character 'x' looking for beginning of value");
        };
        if !st.forget_requests {
            st.requests.push(v.clone());
        }
        if v.get("model")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return error_json(400, "model is required");
        }
        let b = st.queue.pop_front().unwrap_or_else(|| st.default.clone());
        (b, st.eval_count)
    };
    let request = parsed.unwrap();
    if let Behavior::Status(status, message) = &behavior {
        return error_json(*status, message);
    }
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let echo = if matches!(behavior, Behavior::Echo) {
        echo_text(&request, chat)
    } else {
        String::new()
    };
    let (fmt, content_type) = if openai {
        let f = sse::SseFormat::new(model, &request);
        (Format::OpenAi(f), "text/event-stream")
    } else {
        (Format::ollama(model, chat), "application/x-ndjson")
    };
    let body = Out::spawn(shared, path, fmt, eval_count, behavior, echo);
    Response::builder()
        .status(200)
        .header("content-type", content_type)
        .body(body.boxed())
        .unwrap()
}
