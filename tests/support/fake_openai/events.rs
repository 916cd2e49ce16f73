//! The writing side of the fake OpenAI upstream's streaming answers: one
//! task per answer plays a [`Behavior`] into a bounded channel that hyper
//! reads as the response body ([`ChannelBody`]), lays events out in a
//! [`Style`] ([`EventFormat`]) and escapes text as Python's `json.dumps` does
//! ([`python_json_string`]) or as OpenAI does.

use std::fmt::Write as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::body::Frame;
use serde_json::Value;
use tokio::sync::mpsc;

/// Chunks buffered between a stream's task and hyper: small, so a slow
/// reader slows the writer down as with a real server.
const CHANNEL_FRAMES: usize = 8;

use super::{error_value, ActiveGuard, Behavior, Chunking, Shared, StreamRecord, Style};

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
    /// Events held back by [`Chunking::Coalesced`].
    pending: Vec<u8>,
    tokens: usize,
    opened_at: Instant,
    shared: Arc<Shared>,
    fmt: EventFormat,
    /// The request asked for the usage chunk: `Some`, holding the
    /// `completion_tokens` to report (`None`: the number of deltas sent).
    usage: Option<Option<usize>>,
    _active: ActiveGuard,
}

impl Out {
    /// Start the task that plays `behavior` and return the body hyper
    /// sends; `guard` counts the chat as active until the task ends.
    pub(super) fn spawn(
        shared: Arc<Shared>,
        guard: ActiveGuard,
        style: Style,
        model: &str,
        usage: Option<Option<usize>>,
        behavior: Behavior,
        echo: String,
    ) -> ChannelBody {
        let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
        let chunking = match &behavior {
            Behavior::Stream { chunking, .. } => chunking.clone(),
            _ => Chunking::PerEvent,
        };
        let out = Out {
            tx,
            chunking,
            pending: Vec::new(),
            tokens: 0,
            opened_at: Instant::now(),
            shared,
            fmt: EventFormat::new(style, model),
            usage,
            _active: guard,
        };
        tokio::spawn(out.run(behavior, echo));
        ChannelBody { rx }
    }

    async fn run(mut self, behavior: Behavior, echo: String) {
        let by_client = self.script(behavior, echo).await.is_err();
        let record = StreamRecord {
            opened_at: self.opened_at,
            closed_at: Instant::now(),
            by_client,
            tokens: self.tokens,
        };
        let shared = self.shared.clone();
        drop(self); // ends `active` before the record is visible
        shared.state.lock().unwrap().closed.push(record);
        shared.changed.notify_waiters();
    }

    async fn script(&mut self, behavior: Behavior, echo: String) -> Result<(), Gone> {
        let role = self.fmt.chunk(r#"{"role":"assistant"}"#, None);
        self.event(role).await?;
        match behavior {
            Behavior::Stream {
                tokens,
                first_delay,
                delay,
                finish_reason,
                reasoning,
                ..
            } => {
                self.sleep(first_delay).await?;
                let mut first = true;
                for (field, t) in reasoning
                    .iter()
                    .map(|t| ("reasoning_content", t))
                    .chain(tokens.iter().map(|t| ("content", t)))
                {
                    if !std::mem::take(&mut first) {
                        self.sleep(delay).await?;
                    }
                    self.token(field, t).await?;
                }
                self.end(&finish_reason, tokens.len() + reasoning.len())
                    .await?;
            }
            Behavior::Echo => {
                let tokens = split_tokens(&echo);
                for t in &tokens {
                    self.token("content", t).await?;
                }
                self.end("stop", tokens.len()).await?;
            }
            Behavior::Status(..) => unreachable!("answered before streaming"),
            Behavior::ErrorAfter(n, message) => {
                self.filler(n).await?;
                let e = error_value(&message, "server_error", "internal_error");
                let e = self.fmt.data(&self.fmt.json(&e));
                self.event(e).await?;
            }
            Behavior::DropAfter(n) => {
                self.filler(n).await?;
                self.flush().await?;
                // Let hyper take and flush the events first: it discards
                // what it holds when the body fails.
                while self.tx.capacity() < self.tx.max_capacity() {
                    self.sleep(Duration::from_millis(1)).await?;
                }
                self.sleep(Duration::from_millis(20)).await?;
                // An error ends hyper's body abruptly: no last chunk, the
                // connection is closed.
                let e = io::Error::new(io::ErrorKind::ConnectionAborted, "DropAfter");
                let _ = self.tx.send(Err(e)).await;
                return Ok(());
            }
            Behavior::Stall => {
                self.tx.closed().await;
                return Err(Gone);
            }
            Behavior::Endless { delay } => {
                for i in 0.. {
                    if i > 0 {
                        self.sleep(delay).await?;
                    }
                    self.token("content", &format!("t{i} ")).await?;
                }
            }
        }
        self.flush().await
    }

    /// The finish chunk, the usage chunk if asked for, `[DONE]`.
    async fn end(&mut self, finish_reason: &str, completion_tokens: usize) -> Result<(), Gone> {
        let e = self.fmt.chunk("{}", Some(finish_reason));
        self.event(e).await?;
        if let (Some(n), false) = (self.usage, self.fmt.style == Style::LlamaCppPython) {
            let e = self.fmt.usage(n.unwrap_or(completion_tokens));
            self.event(e).await?;
        }
        let e = self.fmt.data("[DONE]");
        self.event(e).await
    }

    async fn token(&mut self, field: &str, text: &str) -> Result<(), Gone> {
        let mut delta = format!("{{\"{field}\":");
        self.fmt.string(text, &mut delta);
        delta.push('}');
        let e = self.fmt.chunk(&delta, None);
        self.tokens += 1;
        self.event(e).await
    }

    /// `n` tokens `tok0 `, `tok1 ` ...
    async fn filler(&mut self, n: usize) -> Result<(), Gone> {
        for i in 0..n {
            self.token("content", &format!("tok{i} ")).await?;
        }
        Ok(())
    }

    async fn event(&mut self, event: String) -> Result<(), Gone> {
        match self.chunking {
            Chunking::PerEvent => self.send(Bytes::from(event)).await,
            Chunking::Split(n) => {
                let mut b = Bytes::from(event);
                while !b.is_empty() {
                    let piece = b.split_to(n.max(1).min(b.len()));
                    self.send(piece).await?;
                }
                Ok(())
            }
            Chunking::Coalesced => {
                self.pending.extend_from_slice(event.as_bytes());
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

/// The layout of one answer's events in a [`Style`].
struct EventFormat {
    style: Style,
    /// `{"id": "chatcmpl-…", "model": "…", "created": …, "object": "chat.completion.chunk", `
    /// (the keys in the style's order).
    prefix: String,
}

impl EventFormat {
    fn new(style: Style, model: &str) -> Self {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let id = uuid::Uuid::new_v4();
        let mut f = Self {
            style,
            prefix: String::new(),
        };
        let (sep, colon) = f.separators();
        let mut model_json = String::new();
        f.string(model, &mut model_json);
        let id = format!("\"id\"{colon}\"chatcmpl-{id}\"");
        let object = format!("\"object\"{colon}\"chat.completion.chunk\"");
        let created = format!("\"created\"{colon}{created}");
        let model = format!("\"model\"{colon}{model_json}");
        let keys = match style {
            Style::LlamaCppPython => [id, model, created, object],
            Style::OpenAi | Style::OpenAiCrlf => [id, object, created, model],
        };
        let mut p = String::from("{");
        p.push_str(&keys.join(sep));
        p.push_str(sep);
        f.prefix = p;
        f
    }

    /// Item and key separators: Python's `json.dumps` defaults or compact.
    fn separators(&self) -> (&'static str, &'static str) {
        match self.style {
            Style::LlamaCppPython => (", ", ": "),
            Style::OpenAi | Style::OpenAiCrlf => (",", ":"),
        }
    }

    /// `data: <payload>` and the blank line.
    fn data(&self, payload: &str) -> String {
        match self.style {
            Style::OpenAiCrlf => format!("data: {payload}\r\n\r\n"),
            Style::LlamaCppPython | Style::OpenAi => format!("data: {payload}\n\n"),
        }
    }

    /// A `chat.completion.chunk` event; `delta` is compact JSON.
    fn chunk(&self, delta: &str, finish_reason: Option<&str>) -> String {
        let (sep, colon) = self.separators();
        let delta = self.json(&serde_json::from_str(delta).expect("a JSON delta"));
        let mut s = self.prefix.clone();
        let _ = write!(
            s,
            "\"choices\"{colon}[{{\"index\"{colon}0{sep}\"delta\"{colon}{delta}{sep}\"logprobs\"{colon}null{sep}\"finish_reason\"{colon}"
        );
        match finish_reason {
            Some(r) => self.string(r, &mut s),
            None => s.push_str("null"),
        }
        s.push_str("}]}");
        self.data(&s)
    }

    /// The usage event, `choices` empty; the prompt is made-up but fixed.
    fn usage(&self, completion_tokens: usize) -> String {
        let (sep, colon) = self.separators();
        let prompt = 12;
        let mut s = self.prefix.clone();
        let _ = write!(
            s,
            "\"choices\"{colon}[]{sep}\"usage\"{colon}{{\"prompt_tokens\"{colon}{prompt}{sep}\"completion_tokens\"{colon}{completion_tokens}{sep}\"total_tokens\"{colon}{}}}}}",
            prompt + completion_tokens
        );
        self.data(&s)
    }

    /// `v` laid out in this style (object keys in their order).
    fn json(&self, v: &Value) -> String {
        let mut s = String::new();
        self.write_value(v, &mut s);
        s
    }

    fn write_value(&self, v: &Value, out: &mut String) {
        let (sep, colon) = self.separators();
        match v {
            Value::String(t) => self.string(t, out),
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push_str(sep);
                    }
                    self.write_value(x, out);
                }
                out.push(']');
            }
            Value::Object(o) => {
                out.push('{');
                for (i, (k, x)) in o.iter().enumerate() {
                    if i > 0 {
                        out.push_str(sep);
                    }
                    self.string(k, out);
                    out.push_str(colon);
                    self.write_value(x, out);
                }
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
    }

    /// `s` as a JSON string literal in this style.
    fn string(&self, s: &str, out: &mut String) {
        match self.style {
            Style::LlamaCppPython => python_json_string(s, out),
            Style::OpenAi | Style::OpenAiCrlf => out.push_str(&serde_json::to_string(s).unwrap()),
        }
    }
}

/// Append `s` as Python's `json.dumps` writes a string (`ensure_ascii`):
/// `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`, every other character below
/// U+0020 or above U+007E as `\uXXXX`, astral ones as surrogate pairs.
pub fn python_json_string(s: &str, out: &mut String) {
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
            ' '..='~' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// A response body fed by a channel: each message is one chunk; an `Err`
/// ends the body abruptly. When hyper drops it (the client went away), the
/// sender sees the channel closed.
pub(super) struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
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
