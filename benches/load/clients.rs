//! The load clients: a WSS (or plain WS) client of the gateway
//! (fastwebsockets over tokio-rustls, cheap per frame: frames are classified
//! by a byte search, never parsed as JSON), an NDJSON client of the fake
//! Ollama (hyper HTTP/1.1 keep-alive; straight to the fake, or through nginx
//! over TLS, where the same chunked body arrives), and HTTPS requests to the
//! gateway.
//!
//! Both stream readers take the fake's clock out of the token text and
//! record `now - written` in nanoseconds for every token written at or after
//! a warm-up cut-off, and count every token in [`TOKENS_READ`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use memchr::memmem;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use tars::ollama::NdjsonSplitter;

pub type Ws = WebSocket<TokioIo<Upgraded>>;

/// Every token any stream reader of this process has read: the syscall
/// count divides by the tokens read while strace was attached.
pub static TOKENS_READ: AtomicU64 = AtomicU64::new(0);

/// Nanoseconds since the UNIX epoch (the fake's clock).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Where and how to reach the gateway (or nginx).
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `None`: plain TCP (the gateway with `tls.enabled = false`).
    pub tls: Option<TlsConnector>,
    /// An access token (one client id for every session).
    pub token: Arc<str>,
}

async fn tcp_connect(addr: SocketAddr) -> Result<TcpStream> {
    let tcp = TcpStream::connect(addr).await.context("TCP connect")?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

async fn tls_wrap(
    tls: &TlsConnector,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    tls.connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .context("TLS handshake")
}

/// Connect, TLS (unless plain), upgrade and wait for `connection_ack`.
pub async fn open_session(t: &Target) -> Result<Ws> {
    let tcp = tcp_connect(t.addr).await?;
    let req = http::Request::get(format!("/ws/chat?token={}", t.token))
        .header("host", "localhost")
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header(
            "sec-websocket-key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())?;
    let exec = TokioExecutor::new();
    let (mut ws, _) = match &t.tls {
        Some(tls) => {
            let tls = tls_wrap(tls, tcp).await?;
            fastwebsockets::handshake::client(&exec, req, tls).await
        }
        None => fastwebsockets::handshake::client(&exec, req, tcp).await,
    }
    .map_err(|e| anyhow!("upgrade: {e}"))?;
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    loop {
        match next(&mut ws).await? {
            Kind::Ack => return Ok(ws),
            Kind::Ping => continue,
            other => bail!("expected connection_ack, got {other:?}"),
        }
    }
}

/// The next text frame, classified; `Err` when the socket closes.
pub async fn next(ws: &mut Ws) -> Result<Kind> {
    loop {
        let f = ws.read_frame().await.map_err(|e| anyhow!("read: {e}"))?;
        match f.opcode {
            OpCode::Text => return Ok(classify(&f.payload)),
            OpCode::Close => bail!("closed by the gateway"),
            _ => continue,
        }
    }
}

/// Send a JSON text message.
pub async fn send(ws: &mut Ws, text: &[u8]) -> Result<()> {
    ws.write_frame(Frame::text(Payload::Borrowed(text)))
        .await
        .map_err(|e| anyhow!("write: {e}"))
}

/// Send a close frame (best effort) and drop the session.
pub async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        ws.write_frame(Frame::close(1000, b"")),
    )
    .await;
}

pub const CHAT: &[u8] = br#"{"type":"chat","content":"Tell me the time, one token at a time."}"#;
pub const PONG: &[u8] = br#"{"type":"pong"}"#;

/// A server frame, told apart by its `type`.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    /// A `token`, with the fake's clock (0 when the text is not a number).
    Token(u64),
    Complete,
    Ping,
    Ack,
    /// An `error` frame (its text).
    Error(String),
    Other(String),
}

pub fn classify(f: &[u8]) -> Kind {
    let head = &f[..f.len().min(40)];
    let is = |t: &[u8]| memmem::find(head, t).is_some();
    if is(br#""type":"token""#) {
        let v = memmem::find(f, br#""token":""#)
            .map(|i| digits(&f[i + 9..]))
            .unwrap_or(0);
        Kind::Token(v)
    } else if is(br#""type":"complete""#) {
        Kind::Complete
    } else if is(br#""type":"ping""#) {
        Kind::Ping
    } else if is(br#""type":"connection_ack""#) {
        Kind::Ack
    } else if is(br#""type":"error""#) {
        Kind::Error(String::from_utf8_lossy(f).into_owned())
    } else {
        Kind::Other(String::from_utf8_lossy(f).into_owned())
    }
}

fn digits(b: &[u8]) -> u64 {
    let mut v = 0u64;
    for &c in b {
        if !c.is_ascii_digit() {
            break;
        }
        v = v * 10 + (c - b'0') as u64;
    }
    v
}

/// Per-stream measurements.
#[derive(Default)]
pub struct Samples {
    /// Latency in ns of each token written at or after the cut-off
    /// (capped at u32::MAX, 4.3 s).
    pub lat_ns: Vec<u32>,
    /// Every token read, warm-up included.
    pub tokens: u64,
    /// Tokens in the window.
    pub in_window: u64,
    /// The stream reached its end (`complete` / the final line).
    pub completed: bool,
    /// Time from the request to the first token.
    pub first_token: Option<Duration>,
}

/// Which tokens count.
#[derive(Clone, Copy)]
pub struct Window {
    /// Tokens before this (ns since the epoch) are warm-up.
    pub from_ns: u64,
    /// Tokens at or after this are counted in `tokens` only.
    pub until_ns: u64,
    /// The window is on the time the client read a token (throughput), not
    /// the time the fake wrote it (latency at a given rate).
    pub by_read: bool,
    /// Stop reading (and drop the stream) at this instant.
    pub deadline: Instant,
}

impl Window {
    /// Every token of one answer counts, read for at most 30 s.
    pub fn whole_answer() -> Self {
        Self {
            from_ns: 0,
            until_ns: u64::MAX,
            by_read: false,
            deadline: Instant::now() + Duration::from_secs(30),
        }
    }
}

impl Samples {
    fn token(&mut self, written: u64, w: &Window) {
        self.tokens += 1;
        TOKENS_READ.fetch_add(1, Ordering::Relaxed);
        let now = now_ns();
        let at = if w.by_read { now } else { written };
        if at >= w.from_ns && at < w.until_ns {
            self.in_window += 1;
            let lat = now.saturating_sub(written);
            self.lat_ns.push(lat.min(u32::MAX as u64) as u32);
        }
    }
}

/// Send a chat on `ws` and read its tokens until `complete` or the deadline.
pub async fn gateway_stream(ws: &mut Ws, w: Window) -> Result<Samples> {
    let mut s = Samples::default();
    let sent = Instant::now();
    send(ws, CHAT).await?;
    loop {
        let kind = match tokio::time::timeout_at(w.deadline.into(), next(ws)).await {
            Ok(k) => k?,
            Err(_) => return Ok(s),
        };
        match kind {
            Kind::Token(t) => {
                if s.first_token.is_none() {
                    s.first_token = Some(sent.elapsed());
                }
                s.token(t, &w);
            }
            Kind::Complete => {
                s.completed = true;
                return Ok(s);
            }
            Kind::Ping => send(ws, PONG).await?,
            Kind::Error(e) => bail!("error frame: {e}"),
            Kind::Ack | Kind::Other(_) => {}
        }
    }
}

/// A keep-alive HTTP/1.1 connection to the fake Ollama.
pub async fn direct_connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect(addr)
        .await
        .context("connect to the fake")?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

const DIRECT_BODY: &str = r#"{"model":"mistral:7b-instruct","messages":[{"role":"user","content":"Tell me the time, one token at a time."}],"stream":true}"#;

/// `POST /api/chat` on `sender` (straight to the fake, or through nginx) and
/// read its NDJSON lines as the gateway would (the same splitter), until the
/// final line or the deadline.
pub async fn direct_stream(sender: &mut SendRequest<Full<Bytes>>, w: Window) -> Result<Samples> {
    let mut s = Samples::default();
    let sent = Instant::now();
    sender.ready().await?;
    let req = http::Request::post("/api/chat")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(DIRECT_BODY.as_bytes())))?;
    let resp = tokio::time::timeout_at(w.deadline.into(), sender.send_request(req))
        .await
        .map_err(|_| anyhow!("no answer head before the deadline"))??;
    if resp.status() != 200 {
        bail!("fake answered {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut split = NdjsonSplitter::new(1 << 20);
    loop {
        let frame = match tokio::time::timeout_at(w.deadline.into(), body.frame()).await {
            Ok(Some(f)) => f?,
            Ok(None) => return Ok(s),
            Err(_) => return Ok(s),
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        split.push(&data);
        while let Some(line) = split.next_line()? {
            if memmem::find(line, br#""done":true"#).is_some() {
                s.completed = true;
                // Read the body to its end (through nginx the last chunk
                // may arrive later): a body dropped unread closes the
                // connection instead of keeping it alive for the next chat.
                while let Ok(Some(f)) =
                    tokio::time::timeout_at(w.deadline.into(), body.frame()).await
                {
                    f?;
                }
                return Ok(s);
            }
            if let Some(i) = memmem::find(line, br#""content":""#) {
                if s.first_token.is_none() {
                    s.first_token = Some(sent.elapsed());
                }
                let t = digits(&line[i + 11..]);
                s.token(t, &w);
            }
        }
    }
}

/// A keep-alive HTTP/1.1 connection to `t`: HTTPS, or plain HTTP when
/// `t.tls` is `None`.
pub async fn https_connect(t: &Target) -> Result<SendRequest<Full<Bytes>>> {
    let tcp = tcp_connect(t.addr).await?;
    match &t.tls {
        Some(tls) => {
            let tls = tls_wrap(tls, tcp).await?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            Ok(sender)
        }
        None => {
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            Ok(sender)
        }
    }
}

/// One request on a keep-alive connection: (status, body).
pub async fn request(
    sender: &mut SendRequest<Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
) -> Result<(u16, Bytes)> {
    sender.ready().await?;
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .map_err(|_| anyhow!("no answer within 30 s"))??;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// An access token from `POST /auth/token` (open enrollment).
pub async fn mint_token(t: &Target, client_id: &str) -> Result<String> {
    let mut s = https_connect(t).await?;
    let req = http::Request::post("/auth/token")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!(
            r#"{{"client_id":"{client_id}","device_name":"load tool"}}"#
        ))))?;
    let (status, body) = request(&mut s, req).await?;
    if status != 200 {
        bail!(
            "/auth/token answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    v["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no access_token in {v}"))
}
