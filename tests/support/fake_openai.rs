//! A fake OpenAI-compatible upstream for tests: an in-process hyper HTTP/1.1
//! server on `127.0.0.1:0` that answers `GET /v1/models` and streaming
//! `POST /v1/chat/completions` as llama.cpp's server (llama-cpp-python) or
//! OpenAI do, byte for byte (see `../shared/OPENAI-API.md` and the real
//! transcript in `tests/data/openai_sse_smollm2.txt`), scripted per test
//! through [`FakeOpenAi`].
//!
//! Streaming answers are `text/event-stream` bodies fed from a bounded
//! channel by one task per stream, one event per chunk unless a [`Chunking`]
//! says otherwise: a role-only first chunk, one chunk per token, a chunk with
//! `finish_reason`, the usage chunk when the request asked for it
//! (`stream_options.include_usage`) and the style has one, then
//! `data: [DONE]`. [`Style`] picks the layout: llama-cpp-python 0.3's
//! (Python's `json.dumps`: `", "` separators, non-ASCII as `\uXXXX` escapes,
//! emoji as surrogate pairs; `include_usage` ignored) or OpenAI's (compact
//! JSON, raw UTF-8, the usage chunk). Errors are `{"error":{"message":..}}` bodies with
//! their status. A client that goes away is noticed at once (the channel
//! closes when hyper drops the body) and recorded; the highest number of
//! chats in progress at once is recorded too.
//!
//! Self-contained: include it with `mod fake_openai;` from `tests/support`.
//!
//! ```ignore
//! let fake = FakeOpenAi::start().await;
//! fake.set(Behavior::stream(["Hel", "lo"]).delay(Duration::from_millis(5)));
//! fake.push(Behavior::Status(503, "Server busy".into()));
//! // ... point the gateway at fake.url() with api = "openai" ...
//! assert_eq!(fake.max_concurrent(), 1);
//! ```
#![allow(dead_code)]

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

#[path = "fake_openai/events.rs"]
mod events;

use events::Out;
#[allow(unused_imports)]
pub use events::{python_json_string, split_tokens};

/// How long a request body may take to arrive.
const REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// How the events of a streaming answer are cut into HTTP chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunking {
    /// One event per chunk, as the servers do.
    PerEvent,
    /// Each event cut into chunks of `n` bytes (the last one shorter).
    Split(usize),
    /// The whole answer in one chunk, sent at the end.
    Coalesced,
}

/// The byte layout of events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// llama-cpp-python 0.3 (sse-starlette with `sep="\n"`, `json.dumps`):
    /// `", "`/`": "` separators, non-ASCII escaped as `\uXXXX`, keys in the
    /// order `id`, `model`, `created`, `object`; no usage chunk, whatever
    /// the request asks (tests/data/openai_sse_smollm2.txt).
    LlamaCppPython,
    /// OpenAI, llama.cpp's C++ `llama-server`, vLLM: compact JSON, UTF-8 as
    /// is, `usage: null` on every chunk and the usage chunk when asked.
    OpenAi,
    /// Like [`Style::OpenAi`] with `\r\n` line ends (the SSE default of
    /// sse-starlette and other Python servers).
    OpenAiCrlf,
}

/// What the fake does with a `/v1/chat/completions` request.
#[derive(Clone, Debug, Default)]
pub enum Behavior {
    /// One event per token, then the `finish_reason` and usage events.
    Stream {
        tokens: Vec<String>,
        /// Before the first event (the head is sent at once).
        first_delay: Duration,
        /// Before every later token.
        delay: Duration,
        chunking: Chunking,
        finish_reason: String,
        /// `delta.reasoning_content` events before the content.
        reasoning: Vec<String>,
    },
    /// Streams back the last user message cut into a few tokens. The default.
    #[default]
    Echo,
    /// A non-200 answer with `{"error":{"message":..,"type":..,"code":..}}`.
    Status(u16, String),
    /// `n` tokens, then `data: {"error":{..}}` and the end of the body
    /// (no finish, no `[DONE]`).
    ErrorAfter(usize, String),
    /// `n` tokens, then the connection is closed without `[DONE]`.
    DropAfter(usize),
    /// The 200 head, then nothing until the client goes away.
    Stall,
    /// A token every `delay` until the client goes away.
    Endless { delay: Duration },
}

impl Behavior {
    /// A plain stream of `tokens`: no delays, an event per chunk, `"stop"`.
    pub fn stream<S: Into<String>>(tokens: impl IntoIterator<Item = S>) -> Self {
        Self::Stream {
            tokens: tokens.into_iter().map(Into::into).collect(),
            first_delay: Duration::ZERO,
            delay: Duration::ZERO,
            chunking: Chunking::PerEvent,
            finish_reason: "stop".into(),
            reasoning: Vec::new(),
        }
    }

    pub fn first_delay(mut self, d: Duration) -> Self {
        if let Self::Stream { first_delay, .. } = &mut self {
            *first_delay = d;
        }
        self
    }

    pub fn delay(mut self, d: Duration) -> Self {
        if let Self::Stream { delay, .. } = &mut self {
            *delay = d;
        }
        self
    }

    pub fn chunking(mut self, c: Chunking) -> Self {
        if let Self::Stream { chunking, .. } = &mut self {
            *chunking = c;
        }
        self
    }

    pub fn finish_reason(mut self, r: &str) -> Self {
        if let Self::Stream { finish_reason, .. } = &mut self {
            *finish_reason = r.into();
        }
        self
    }

    pub fn reasoning<S: Into<String>>(mut self, t: impl IntoIterator<Item = S>) -> Self {
        if let Self::Stream { reasoning, .. } = &mut self {
            *reasoning = t.into_iter().map(Into::into).collect();
        }
        self
    }
}

/// One streaming answer that has ended.
#[derive(Clone, Debug)]
pub struct StreamRecord {
    pub opened_at: Instant,
    /// When the fake finished or noticed the client had gone.
    pub closed_at: Instant,
    /// The client went away before the fake had finished.
    pub by_client: bool,
    /// Content tokens written (accepted by hyper's channel).
    pub tokens: usize,
}

/// One request received on `/v1/chat/completions`.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub body: Value,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

/// A running fake. Cheap to clone; stops when the last clone drops.
#[derive(Clone)]
pub struct FakeOpenAi {
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

struct Shared {
    state: Mutex<State>,
    /// Chats in progress: from the request's arrival to the end of its
    /// answer (error answers included).
    active: AtomicUsize,
    /// The highest `active` seen.
    max_active: AtomicUsize,
    /// Woken whenever a stream ends.
    changed: Notify,
}

struct State {
    default: Behavior,
    queue: VecDeque<Behavior>,
    style: Style,
    /// What `/v1/models` lists; a chat naming another model gets a 404.
    models: Vec<String>,
    /// When set, requests without `Authorization: Bearer <key>` get a 401.
    api_key: Option<String>,
    /// `usage.completion_tokens` reported instead of the number of deltas.
    completion_tokens: Option<usize>,
    requests: Vec<RecordedRequest>,
    models_count: usize,
    chat_count: usize,
    closed: Vec<StreamRecord>,
    /// Client-closed streams already returned by `wait_stream_closed`.
    closed_reported: usize,
}

impl FakeOpenAi {
    /// Listen on `127.0.0.1:0` serving the model `smollm2`, in
    /// llama-cpp-python's style.
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
            .expect("bind fake OpenAI upstream");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                default: Behavior::Echo,
                queue: VecDeque::new(),
                style: Style::LlamaCppPython,
                models: vec!["smollm2".into()],
                api_key: None,
                completion_tokens: None,
                requests: Vec::new(),
                models_count: 0,
                chat_count: 0,
                closed: Vec::new(),
                closed_reported: 0,
            }),
            active: AtomicUsize::new(0),
            max_active: AtomicUsize::new(0),
            changed: Notify::new(),
        });
        let ctl = Arc::new(Control {
            shared,
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

    /// `http://127.0.0.1:PORT` (`https://` when started with TLS) (the base URL, without `/v1`).
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

    /// A behaviour for one request; queued ones are used in order first.
    pub fn push(&self, b: Behavior) {
        self.state().queue.push_back(b);
    }

    pub fn set_style(&self, s: Style) {
        self.state().style = s;
    }

    /// The models `/v1/models` lists and chats may name.
    pub fn set_models<S: Into<String>>(&self, models: impl IntoIterator<Item = S>) {
        self.state().models = models.into_iter().map(Into::into).collect();
    }

    /// Report `n` as `usage.completion_tokens` (when a usage chunk is
    /// sent) whatever the number of deltas; `None`: the number sent.
    pub fn set_completion_tokens(&self, n: Option<usize>) {
        self.state().completion_tokens = n;
    }

    /// Require `Authorization: Bearer <key>` on every request.
    pub fn require_api_key(&self, key: &str) {
        self.state().api_key = Some(key.into());
    }

    /// The chat requests received, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// Requests received on `/v1/chat/completions` (whatever their answer).
    pub fn chat_count(&self) -> usize {
        self.state().chat_count
    }

    /// Requests received on `/v1/models`.
    pub fn models_count(&self) -> usize {
        self.state().models_count
    }

    /// Chats in progress now.
    pub fn active(&self) -> usize {
        self.ctl.shared.active.load(Ordering::SeqCst)
    }

    /// The highest number of chats in progress at once so far.
    pub fn max_concurrent(&self) -> usize {
        self.ctl.shared.max_active.load(Ordering::SeqCst)
    }

    /// Every streaming answer that has ended, in the order they ended.
    pub fn closed_streams(&self) -> Vec<StreamRecord> {
        self.state().closed.clone()
    }

    /// Wait up to `timeout` for a stream to be closed by its client (one
    /// not returned before) and return when the fake noticed it.
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
        let deadline = Instant::now() + Duration::from_secs(2);
        let listener = loop {
            match TcpListener::bind(self.ctl.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() >= deadline => {
                    panic!("fake OpenAI cannot listen again on {}: {e}", self.ctl.addr)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
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
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let key = shared.state.lock().unwrap().api_key.clone();
    if let Some(key) = key {
        if auth.as_deref() != Some(&format!("Bearer {key}")) {
            return Ok(error_json(
                401,
                "Incorrect API key provided",
                "invalid_request_error",
                "invalid_api_key",
            ));
        }
    }
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/v1/models") => models(&shared),
        (&Method::POST, "/v1/chat/completions") => chat(shared, req, auth).await,
        _ => fixed(404, "application/json", r#"{"detail":"Not Found"}"#),
    };
    Ok(resp)
}

fn models(shared: &Shared) -> Response<Body> {
    let mut st = shared.state.lock().unwrap();
    st.models_count += 1;
    let data: Vec<Value> = st
        .models
        .iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "owned_by": "me", "permissions": []}))
        .collect();
    let body = serde_json::json!({"object": "list", "data": data});
    fixed(200, "application/json", body.to_string())
}

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

/// `{"error":{"message":..,"type":..,"param":null,"code":..}}`, OpenAI's shape.
fn error_value(message: &str, kind: &str, code: &str) -> Value {
    serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

fn error_json(status: u16, message: &str, kind: &str, code: &str) -> Response<Body> {
    let body = error_value(message, kind, code).to_string();
    fixed(status, "application/json", body)
}

/// Decrements `active` when the chat's answer has ended.
struct ActiveGuard(Arc<Shared>);

impl ActiveGuard {
    fn new(shared: Arc<Shared>) -> Self {
        let now = shared.active.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_active.fetch_max(now, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `/v1/chat/completions`: record the request, pick a behaviour, answer.
async fn chat(shared: Arc<Shared>, req: Request<Incoming>, auth: Option<String>) -> Response<Body> {
    let guard = ActiveGuard::new(shared.clone());
    let body = match tokio::time::timeout(REQUEST_BODY_TIMEOUT, req.into_body().collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        _ => {
            return error_json(
                400,
                "could not read the request body",
                "invalid_request_error",
                "bad_request",
            )
        }
    };
    let (behavior, style, completion_tokens) = {
        let mut st = shared.state.lock().unwrap();
        st.chat_count += 1;
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            return error_json(
                400,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
                "bad_request",
            );
        };
        st.requests.push(RecordedRequest {
            body: v.clone(),
            authorization: auth,
        });
        let model = v.get("model").and_then(Value::as_str).unwrap_or_default();
        if !st.models.iter().any(|m| m == model) {
            let msg = format!("The model `{model}` does not exist");
            return error_json(404, &msg, "invalid_request_error", "model_not_found");
        }
        if v.get("stream") != Some(&Value::Bool(true)) {
            return error_json(
                400,
                "this fake answers only `stream: true`",
                "invalid_request_error",
                "bad_request",
            );
        }
        let b = st.queue.pop_front().unwrap_or_else(|| st.default.clone());
        (b, st.style, st.completion_tokens)
    };
    let request: Value = serde_json::from_slice(&body).unwrap();
    if let Behavior::Status(status, message) = &behavior {
        return error_json(*status, message, "server_error", "upstream_error");
    }
    let asked = request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // The usage chunk, and the count it reports (`None`: the deltas sent).
    let usage = asked.then_some(completion_tokens);
    let model = request["model"].as_str().unwrap_or_default().to_string();
    let echo = echo_text(&request);
    let body = Out::spawn(shared, guard, style, &model, usage, behavior, echo);
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-store")
        .header("x-accel-buffering", "no")
        .body(body.boxed())
        .unwrap()
}

/// The last user message of a chat request (text content or text parts).
fn echo_text(req: &Value) -> String {
    let Some(m) = req.get("messages").and_then(Value::as_array).and_then(|m| {
        m.iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    }) else {
        return String::new();
    };
    match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}
