//! The upstream connections of streaming chats, driven by the stream that
//! reads them (ADR 0021).
//!
//! An [`UpstreamConn`] is one HTTP/1.1 connection to Ollama (plain or TLS,
//! opened by the upstream's [`Connector`]) made with
//! `hyper::client::conn::http1`: the [`SendRequest`] half and the
//! [`Connection`] future that reads and writes the socket. The connection is
//! never spawned: whoever waits on it (the chat attempt for the head, the
//! [`super::ChatStream`] for the body) polls it inline through
//! [`UpstreamConn::poll_driving`]. One read of Ollama's socket that brings a
//! hundred lines is then a hundred lines for the generation task without a
//! single cross-task wake-up, and nothing reads the socket while nobody asks
//! for a line (backpressure).
//!
//! [`DrivenBody`] is such a connection's response body with the connection
//! attached: both dialects' streams (Ollama's NDJSON, the OpenAI SSE
//! answer) read through it, and its drop gives the connection back or
//! closes it.
//!
//! [`ConnPool`] keeps up to `pool_max_connections` idle connections for
//! reuse (most recently used first) and drops those idle longer than
//! [`IDLE_TIMEOUT`] or found closed. An idle connection is not polled while
//! it sits in the pool; it is checked (one poll with a no-op waker) when
//! taken. A reused connection that still fails before any answer byte fails
//! the attempt as [`OllamaError::Unreachable`], which is retryable.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::connect::{Connector, UpstreamIo};
use super::error::{error_chain, OllamaError};

/// How long an unused connection stays in the pool (hyper-util's pool used
/// the same 90 s before ADR 0021).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The most of Ollama's answer read ahead into one connection's buffer:
/// about 150 lines of a typical stream (hyper's own limit is ~400 KiB).
/// Lines longer than this still arrive whole (chunks are decoded as they
/// come; the splitter joins them up to `max_line_bytes`).
pub(crate) const READ_BUF_MAX: usize = 16 * 1024;

type Io = TokioIo<UpstreamIo>;
type ReqBody = Full<Bytes>;

/// One HTTP/1.1 connection to Ollama and the handle that sends on it.
pub(crate) struct UpstreamConn {
    pub(crate) sender: SendRequest<ReqBody>,
    /// `None` once the connection future finished (closed or failed); the
    /// request and body it fed have their result or error by then.
    conn: Option<Connection<Io, ReqBody>>,
    /// Taken from the pool rather than freshly connected.
    pub(crate) reused: bool,
}

impl UpstreamConn {
    /// Send `req` and wait for the answer's head until `deadline`, driving
    /// the connection on the caller's task. Past the deadline: `timeout()`;
    /// a failed exchange: [`OllamaError::Unreachable`] naming `host` (and
    /// whether the connection came from the pool).
    pub(crate) async fn send(
        &mut self,
        req: http::Request<ReqBody>,
        deadline: Instant,
        host: &str,
        timeout: impl FnOnce() -> OllamaError,
    ) -> Result<http::Response<Incoming>, OllamaError> {
        let mut head = std::pin::pin!(self.sender.send_request(req));
        let resp = tokio::time::timeout_at(
            deadline,
            std::future::poll_fn(|cx| self.poll_driving(cx, |cx| head.as_mut().poll(cx))),
        )
        .await;
        match resp {
            Err(_) => Err(timeout()),
            Ok(Err(e)) => {
                let reused = if self.reused {
                    "reused connection: "
                } else {
                    ""
                };
                Err(OllamaError::Unreachable {
                    host: host.to_string(),
                    message: format!("{reused}{}", error_chain(&e)),
                })
            }
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// Polls `f` (a response or body future of this connection); while it
    /// is pending, polls the connection once, which reads or writes what
    /// the socket allows, and then `f` again. Everything stays on the
    /// caller's task.
    pub(crate) fn poll_driving<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut f: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        if let Poll::Ready(v) = f(cx) {
            return Poll::Ready(v);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Pending;
        };
        if let Poll::Ready(r) = Pin::new(conn).poll(cx) {
            if let Err(e) = r {
                tracing::debug!(error = %error_chain(&e), "Ollama connection failed");
            }
            self.conn = None;
        }
        f(cx)
    }

    /// Polls the connection once without a waiting task: advances it to
    /// idle after a finished answer, notices a close. `false` when it is
    /// not usable for another request.
    fn poll_idle(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        if let Some(conn) = self.conn.as_mut() {
            if Pin::new(conn).poll(&mut cx).is_ready() {
                self.conn = None;
            }
        }
        self.conn.is_some() && !self.sender.is_closed() && self.sender.is_ready()
    }

    /// Hands the connection future to its own task (for the rare error
    /// body, read with the plain `Incoming` API); the connection is not
    /// reused after that.
    pub(crate) fn spawn_conn(&mut self) {
        if let Some(conn) = self.conn.take() {
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    }
}

/// A `2xx` answer's body and the connection it arrives on, which is
/// polled inline while a frame is awaited (ADR 0021). Dropped, it gives the
/// connection back to its pool when the body ended or its end is already in
/// hyper's buffer (the usual case after the final line); otherwise the
/// connection is dropped, which closes the socket and tells the upstream to
/// stop generating.
pub(crate) struct DrivenBody {
    body: Incoming,
    /// `None` once given back.
    conn: Option<UpstreamConn>,
    pool: Arc<ConnPool>,
    /// The body ended.
    eof: bool,
}

/// One frame of a body, as hyper gives it.
pub(crate) type FrameResult = Result<Frame<Bytes>, hyper::Error>;

impl DrivenBody {
    pub(crate) fn new(body: Incoming, conn: UpstreamConn, pool: Arc<ConnPool>) -> Self {
        Self {
            body,
            conn: Some(conn),
            pool,
            eof: false,
        }
    }

    /// The body's next frame (`None` at its end), driving the connection
    /// while it is pending.
    pub(crate) fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<FrameResult>> {
        let body = &mut self.body;
        let r = match self.conn.as_mut() {
            Some(up) => up.poll_driving(cx, |cx| Pin::new(&mut *body).poll_frame(cx)),
            None => Pin::new(body).poll_frame(cx),
        };
        if let Poll::Ready(None) = r {
            self.eof = true;
        }
        r
    }
}

impl Drop for DrivenBody {
    fn drop(&mut self) {
        let Some(mut up) = self.conn.take() else {
            return;
        };
        if !self.eof {
            let mut cx = Context::from_waker(Waker::noop());
            let body = &mut self.body;
            // Anything but the end (more of the answer from a cancelled
            // stream, an error, the end not here yet) closes the connection.
            let end = up.poll_driving(&mut cx, |cx| Pin::new(&mut *body).poll_frame(cx));
            if !matches!(end, Poll::Ready(None)) {
                return;
            }
        }
        self.pool.put(up);
    }
}

/// Where to connect and the idle connections kept for reuse.
pub(crate) struct ConnPool {
    /// The base URL; `None` when it does not parse.
    uri: Option<http::Uri>,
    /// The `Host` header: the URL's authority.
    authority: Option<HeaderValue>,
    connector: Connector,
    max_idle: usize,
    /// Idle connections the pool keeps ready: taking one opens a
    /// replacement in the background (at most `spares` at a time).
    spares: usize,
    /// Background connects in flight.
    warming: AtomicUsize,
    /// Idle connections and when each was put back; the last is the newest.
    idle: Mutex<Vec<(UpstreamConn, Instant)>>,
}

impl ConnPool {
    /// A pool for `base` (`http[s]://host[:port]`) connecting through
    /// `connector`, keeping `spares` warm; a URL that does not parse fails
    /// at connect time, naming the URL.
    pub(crate) fn new(base: &str, connector: Connector, max_idle: usize, spares: usize) -> Self {
        let uri: Option<http::Uri> = base.parse().ok();
        let authority = uri
            .as_ref()
            .and_then(|u| u.authority())
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        Self {
            uri,
            authority,
            connector,
            max_idle,
            spares: spares.min(max_idle),
            warming: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The `Host` header value.
    pub(crate) fn authority(&self) -> Option<&HeaderValue> {
        self.authority.as_ref()
    }

    /// An idle connection that still looks open, else a new one within the
    /// connect timeout. Errors are [`OllamaError::Unreachable`] naming
    /// `base`. Either way the pool then tops its spares up in the
    /// background ([`Self::warm`]).
    pub(crate) async fn get(self: &Arc<Self>, base: &str) -> Result<UpstreamConn, OllamaError> {
        let idle = self.take_idle();
        self.warm(base);
        match idle {
            Some(c) => Ok(c),
            None => self.connect(base).await,
        }
    }

    /// Opens connections in background tasks until `spares` are idle or
    /// being opened, so that the next chat finds one ready instead of
    /// waiting for a TCP handshake. Bounded: never more than `spares`
    /// connects in flight, never more than `max_idle` kept. A failed
    /// connect is dropped (the next chat connects itself and reports the
    /// error). Does nothing outside a tokio runtime or with `spares` = 0.
    pub(crate) fn warm(self: &Arc<Self>, base: &str) {
        if self.spares == 0 {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        loop {
            let warming = self.warming.load(Ordering::Acquire);
            if self.idle_count() + warming >= self.spares {
                return;
            }
            if self
                .warming
                .compare_exchange(warming, warming + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            let (pool, base) = (self.clone(), base.to_string());
            rt.spawn(async move {
                let c = pool.connect(&base).await;
                if let Ok(c) = c {
                    pool.put(c);
                }
                pool.warming.fetch_sub(1, Ordering::AcqRel);
            });
        }
    }

    fn take_idle(&self) -> Option<UpstreamConn> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((mut c, since)) = idle.pop() {
            if now.duration_since(since) < IDLE_TIMEOUT && c.poll_idle() {
                c.reused = true;
                return Some(c);
            }
        }
        None
    }

    async fn connect(&self, base: &str) -> Result<UpstreamConn, OllamaError> {
        let unreachable = |message: String| OllamaError::Unreachable {
            host: base.to_string(),
            message,
        };
        let (Some(uri), Some(_)) = (&self.uri, &self.authority) else {
            return Err(unreachable("invalid URL".into()));
        };
        let io = self
            .connector
            .connect(uri)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        // A bounded read buffer (ADR 0024): hyper's default grows to ~400
        // KiB under a fast stream, lines that then wait in it behind each
        // other (latency under saturation) and memory kept while the
        // connection idles in the pool.
        let mut b = http1::Builder::new();
        b.max_buf_size(READ_BUF_MAX);
        let (sender, conn) = b
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        tracing::debug!(host = %base, "new Ollama connection");
        Ok(UpstreamConn {
            sender,
            conn: Some(conn),
            reused: false,
        })
    }

    /// Keeps `c` for reuse if it is idle and open and the pool has room;
    /// drops it (closing the socket) otherwise. Expired entries go too.
    pub(crate) fn put(&self, mut c: UpstreamConn) {
        if !c.poll_idle() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|(_, since)| now.duration_since(*since) < IDLE_TIMEOUT);
        if idle.len() < self.max_idle {
            idle.push((c, now));
        }
    }

    /// Idle connections held now (tests and debugging).
    pub(crate) fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}
