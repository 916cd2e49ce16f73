//! The writing side of the fake Ollama's streaming answers: one task per
//! answer plays a [`Behavior`] into a bounded channel that hyper reads as the
//! response body ([`ChannelBody`]), lays lines out as Ollama does
//! ([`LineFormat`]; text escaped as Go does, [`go_json_string`]) or, on
//! `/v1/chat/completions`, as OpenAI-compatible servers do
//! ([`SseFormat`]: one `data:` event per line).

use std::fmt::Write as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::body::Frame;
use serde_json::Value;
use tokio::sync::mpsc;

use super::sse::SseFormat;
use super::{Behavior, Chunking, Shared, StreamRecord};

/// Frames buffered between a stream's task and hyper: small, so a slow
/// reader slows the writer down as it does with a real Ollama.
const CHANNEL_FRAMES: usize = 8;

/// The text [`Behavior::Echo`] streams back.
pub(super) fn echo_text(req: &Value, chat: bool) -> String {
    let text = if chat {
        req.get("messages")
            .and_then(Value::as_array)
            .and_then(|m| {
                m.iter()
                    .rev()
                    .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            })
            .and_then(|m| m.get("content"))
            .and_then(Value::as_str)
    } else {
        req.get("prompt").and_then(Value::as_str)
    };
    text.unwrap_or_default().to_string()
}

/// `s` cut at character boundaries into up to four pieces.
pub fn split_tokens(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let per = chars.len().div_ceil(4);
    chars.chunks(per).map(|c| c.iter().collect()).collect()
}

/// The client went away.
struct Gone;

/// The writing side of one streaming answer.
pub(super) struct Out {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    chunking: Chunking,
    /// Lines held back by [`Chunking::Coalesced`].
    pending: Vec<u8>,
    lines: usize,
    opened_at: Instant,
    shared: Arc<Shared>,
    path: &'static str,
    fmt: Format,
    /// The `eval_count` (Ollama) or `usage.completion_tokens` (OpenAI) to
    /// report instead of the number of token lines.
    eval_count: Option<usize>,
}

/// The dialect an answer is written in.
pub(super) enum Format {
    Ollama(LineFormat),
    OpenAi(SseFormat),
}

impl Format {
    /// Ollama's layout: `/api/chat` (`chat`) or `/api/generate`.
    pub(super) fn ollama(model: &str, chat: bool) -> Self {
        Self::Ollama(LineFormat::new(model, chat))
    }

    fn token(&self, content: &str, thinking: Option<&str>) -> String {
        match self {
            Self::Ollama(f) => f.token(content, thinking),
            Self::OpenAi(f) => f.token(content, thinking),
        }
    }

    fn done(&self, reason: &str, eval_count: usize, started: Instant) -> String {
        match self {
            Self::Ollama(f) => f.done(reason, eval_count, started),
            Self::OpenAi(f) => f.done(reason, eval_count),
        }
    }

    fn error(&self, message: &str) -> String {
        match self {
            Self::Ollama(_) => {
                let mut l = String::from("{\"error\":");
                go_json_string(message, &mut l);
                l.push_str("}\n");
                l
            }
            Self::OpenAi(f) => f.error(message),
        }
    }
}

impl Out {
    /// Start the task that plays `behavior` for a request to `path` and
    /// return the body hyper sends.
    pub(super) fn spawn(
        shared: Arc<Shared>,
        path: &'static str,
        fmt: Format,
        eval_count: Option<usize>,
        behavior: Behavior,
        echo: String,
    ) -> ChannelBody {
        let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
        let chunking = match &behavior {
            Behavior::Stream { chunking, .. } => chunking.clone(),
            _ => Chunking::PerLine,
        };
        shared.streams_open.fetch_add(1, Ordering::SeqCst);
        let out = Out {
            tx,
            chunking,
            pending: Vec::new(),
            lines: 0,
            opened_at: Instant::now(),
            shared,
            path,
            fmt,
            eval_count,
        };
        tokio::spawn(out.run(behavior, echo));
        ChannelBody { rx }
    }

    async fn run(mut self, behavior: Behavior, echo: String) {
        let result = self.script(behavior, echo).await;
        let by_client = result.is_err();
        let record = StreamRecord {
            path: self.path,
            opened_at: self.opened_at,
            closed_at: Instant::now(),
            by_client,
            lines: self.lines,
        };
        self.shared.streams_open.fetch_sub(1, Ordering::SeqCst);
        self.shared.state.lock().unwrap().closed.push(record);
        self.shared.changed.notify_waiters();
    }

    async fn script(&mut self, behavior: Behavior, echo: String) -> Result<(), Gone> {
        let started = Instant::now();
        if let Format::OpenAi(f) = &self.fmt {
            let l = f.opening();
            self.send(Bytes::from(l)).await?;
        }
        match behavior {
            Behavior::Stream {
                tokens,
                first_delay,
                delay,
                done_reason,
                thinking,
                ..
            } => {
                self.sleep(first_delay).await?;
                let mut first = true;
                for t in &thinking {
                    if !std::mem::take(&mut first) {
                        self.sleep(delay).await?;
                    }
                    let l = self.fmt.token("", Some(t));
                    self.line(l).await?;
                }
                for t in &tokens {
                    if !std::mem::take(&mut first) {
                        self.sleep(delay).await?;
                    }
                    let l = self.fmt.token(t, None);
                    self.line(l).await?;
                }
                if !first {
                    self.sleep(delay).await?;
                }
                let n = tokens.len() + thinking.len();
                let l = self.done(&done_reason, n, started);
                self.line(l).await?;
            }
            Behavior::Echo => {
                let tokens = split_tokens(&echo);
                for t in &tokens {
                    let l = self.fmt.token(t, None);
                    self.line(l).await?;
                }
                let l = self.done("stop", tokens.len(), started);
                self.line(l).await?;
            }
            Behavior::Status(..) => unreachable!("answered before streaming"),
            Behavior::ErrorAfter(n, message) => {
                self.filler(n).await?;
                let l = self.fmt.error(&message);
                self.line(l).await?;
            }
            Behavior::MalformedAfter(n) => {
                self.filler(n).await?;
                self.line(
                    "{\"model\":\"x\",\"message\":{\"role\":\"assistant\",\"content\":\"cut\n"
                        .into(),
                )
                .await?;
                let l = self.done("stop", n, started);
                self.line(l).await?;
            }
            Behavior::DropAfter(n) => {
                self.filler(n).await?;
                self.flush().await?;
                // Let hyper take and flush the lines first: it discards what
                // it holds when the body fails.
                while self.tx.capacity() < self.tx.max_capacity() {
                    self.sleep(Duration::from_millis(1)).await?;
                }
                self.sleep(Duration::from_millis(20)).await?;
                // An error ends hyper's body abruptly: no last chunk, the
                // connection is closed.
                let _ = self
                    .tx
                    .send(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "DropAfter",
                    )))
                    .await;
                return Ok(());
            }
            Behavior::Stall => {
                self.tx.closed().await;
                return Err(Gone);
            }
            Behavior::Clock { count, interval } => {
                for i in 0..count {
                    if i > 0 {
                        self.sleep(interval).await?;
                    }
                    let l = self.fmt.token(&clock_now(), None);
                    self.line(l).await?;
                }
                let l = self.done("stop", count, started);
                self.line(l).await?;
            }
            Behavior::Paced { count, interval } => {
                let mut tick = tokio::time::interval(interval.max(Duration::from_micros(1)));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                for _ in 0..count {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = self.tx.closed() => return Err(Gone),
                    }
                    let l = self.fmt.token(&clock_now(), None);
                    self.line(l).await?;
                }
                let l = self.done("stop", count, started);
                self.line(l).await?;
            }
            Behavior::Endless { delay } => {
                for i in 0.. {
                    if i > 0 {
                        self.sleep(delay).await?;
                    }
                    let l = self.fmt.token(&format!("t{i} "), None);
                    self.line(l).await?;
                }
            }
        }
        self.flush().await
    }

    /// The final line (events) reporting `n` tokens, or the count set
    /// with [`FakeOllama::set_eval_count`](super::FakeOllama::set_eval_count).
    fn done(&self, reason: &str, n: usize, started: Instant) -> String {
        self.fmt.done(reason, self.eval_count.unwrap_or(n), started)
    }

    /// `n` tokens `tok0 `, `tok1 ` ...
    async fn filler(&mut self, n: usize) -> Result<(), Gone> {
        for i in 0..n {
            let l = self.fmt.token(&format!("tok{i} "), None);
            self.line(l).await?;
        }
        Ok(())
    }

    async fn line(&mut self, line: String) -> Result<(), Gone> {
        self.lines += 1;
        self.shared.lines_written.fetch_add(1, Ordering::Relaxed);
        match self.chunking {
            Chunking::PerLine => self.send(Bytes::from(line)).await,
            Chunking::Split(n) => {
                let mut b = Bytes::from(line);
                while !b.is_empty() {
                    let piece = b.split_to(n.max(1).min(b.len()));
                    self.send(piece).await?;
                }
                Ok(())
            }
            Chunking::Coalesced => {
                self.pending.extend_from_slice(line.as_bytes());
                Ok(())
            }
        }
    }

    async fn flush(&mut self) -> Result<(), Gone> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let b = Bytes::from(std::mem::take(&mut self.pending));
        self.send(b).await
    }

    async fn send(&self, b: Bytes) -> Result<(), Gone> {
        self.tx.send(Ok(b)).await.map_err(|_| Gone)
    }

    /// Sleep, but notice at once when the client goes away.
    async fn sleep(&self, d: Duration) -> Result<(), Gone> {
        if d.is_zero() {
            return if self.tx.is_closed() {
                Err(Gone)
            } else {
                Ok(())
            };
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.tx.closed() => Err(Gone),
        }
    }
}

/// Now as the text of a clock token: nanoseconds since the UNIX epoch.
fn clock_now() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        .to_string()
}

/// Ollama's line layouts for one answer.
pub(super) struct LineFormat {
    /// `{"model":"…","created_at":` — the part before the timestamp.
    prefix: String,
    chat: bool,
}

impl LineFormat {
    fn new(model: &str, chat: bool) -> Self {
        let mut prefix = String::from("{\"model\":");
        go_json_string(model, &mut prefix);
        prefix.push_str(",\"created_at\":\"");
        Self { prefix, chat }
    }

    fn start(&self) -> String {
        let mut s = String::with_capacity(160);
        s.push_str(&self.prefix);
        s.push_str(&created_at());
        s.push_str("\",");
        s
    }

    /// A token line; `thinking` lines have empty content.
    fn token(&self, content: &str, thinking: Option<&str>) -> String {
        let mut s = self.start();
        if self.chat {
            s.push_str("\"message\":{\"role\":\"assistant\",\"content\":");
            go_json_string(content, &mut s);
            if let Some(t) = thinking {
                s.push_str(",\"thinking\":");
                go_json_string(t, &mut s);
            }
            s.push('}');
        } else {
            s.push_str("\"response\":");
            go_json_string(content, &mut s);
            if let Some(t) = thinking {
                s.push_str(",\"thinking\":");
                go_json_string(t, &mut s);
            }
        }
        s.push_str(",\"done\":false}\n");
        s
    }

    /// The final line, with made-up but consistent figures.
    fn done(&self, reason: &str, eval_count: usize, started: Instant) -> String {
        let mut s = self.start();
        if self.chat {
            s.push_str("\"message\":{\"role\":\"assistant\",\"content\":\"\"},");
        } else {
            s.push_str("\"response\":\"\",");
        }
        s.push_str("\"done\":true,\"done_reason\":");
        go_json_string(reason, &mut s);
        if !self.chat {
            s.push_str(",\"context\":[1,2,3]");
        }
        let eval = started.elapsed().as_nanos().max(1) as u64;
        let load = 1_334_875u64;
        let prompt_eval = 342_546u64;
        let _ = writeln!(
            s,
            ",\"total_duration\":{},\"load_duration\":{load},\"prompt_eval_count\":26,\"prompt_eval_duration\":{prompt_eval},\"eval_count\":{eval_count},\"eval_duration\":{eval}}}",
            eval + load + prompt_eval
        );
        s
    }
}

/// Now as Go's `time.Time` marshals it: RFC 3339 with up to nine fraction
/// digits, trailing zeros trimmed.
fn created_at() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Append `s` as a JSON string literal escaped exactly as Go's
/// `encoding/json` does (HTML-safe: `<`, `>`, `&` as `\u003c` ...; U+2028
/// and U+2029 escaped; `\b` and `\f` short forms as since Go 1.22).
pub fn go_json_string(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{0}'..='\u{1f}' => {
                let b = c as u8;
                out.push_str("\\u00");
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 0xf) as usize] as char);
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A response body fed by a channel: each message is one chunk; an `Err`
/// ends the body abruptly. When hyper drops it (the client went away), the
/// sender sees the channel closed.
pub(super) struct ChannelBody {
    pub(super) rx: mpsc::Receiver<Result<Bytes, io::Error>>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx.poll_recv(cx).map(|m| m.map(|r| r.map(Frame::data)))
    }
}
