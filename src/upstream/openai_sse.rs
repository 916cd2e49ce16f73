//! The OpenAI dialect's hot path: the body of a streaming
//! `POST /v1/chat/completions` answer (Server-Sent Events) → [`SseEvent`]s,
//! incrementally, borrowing from one buffer.
//!
//! The body arrives in arbitrary chunks: an event may span chunks (a cut
//! inside `data: `, inside a `\r\n` or inside a UTF-8 character), a chunk may
//! hold many events. [`SseParser`] keeps one `BytesMut` for the whole stream,
//! finds lines with `memchr`, and dispatches an event at its blank line, as
//! the SSE spec says. The text of a token is handed out as the JSON string
//! literal the server sent (quotes and escapes included, not decoded), so it
//! can be copied verbatim into a `token` frame, exactly as the Ollama path
//! does (docs/adr/0002-token-frames-copy-ollama-json.md): no allocation per
//! token in the common case of one `data:` line per event.
//!
//! What is handed out: `choices[0].delta.content` ([`SseEvent::Delta`]),
//! `choices[0].delta.reasoning_content` ([`SseEvent::Reasoning`]),
//! `finish_reason`, `usage`, `data: [DONE]`, and `{"error": ...}` events.
//! Comments (`:` lines), `event:`, `id:` and `retry:` fields, role-only and
//! empty deltas, `null` contents and unknown JSON fields are skipped. An event
//! longer than the cap is an error, so memory per stream stays bounded by the
//! cap plus one chunk. A non-2xx answer is not SSE: read its JSON body with
//! [`error_message`].
//!
//! Depends only on std, bytes, memchr, serde, serde_json and thiserror, so it
//! can move between modules freely.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;

use bytes::{Buf, BytesMut};
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// One thing the stream said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseEvent<'a> {
    /// `choices[0].delta.content`: the JSON string literal exactly as sent
    /// (e.g. `"Hel\u00e9"`, quotes included), never `""`.
    Delta { content: &'a str },
    /// `choices[0].delta.reasoning_content` (or `reasoning`) of reasoning
    /// models, likewise a verbatim JSON string literal, never `""`.
    Reasoning { content: &'a str },
    /// `choices[0].finish_reason`: `stop`, `length`, `content_filter`,
    /// `tool_calls` ... (once per stream).
    Finish { reason: String },
    /// The `usage` object (with `stream_options.include_usage`).
    Usage {
        /// Tokens generated (Ollama's `eval_count`).
        completion_tokens: Option<u64>,
        prompt_tokens: Option<u64>,
    },
    /// `data: [DONE]`: the end of the answer.
    Done,
    /// A `data: {"error": ...}` event, with its message.
    Error { message: String },
}

/// Why a body is not a well-formed OpenAI event stream.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    /// An event (or a line) exceeds the cap.
    #[error("an event of the stream is longer than {limit} bytes (at least {len} bytes)")]
    TooLong { len: usize, limit: usize },
    /// A `data:` field that is neither JSON nor `[DONE]`.
    #[error("invalid JSON in a `data:` event: {0}")]
    Json(#[from] serde_json::Error),
    /// `choices[0].delta.<field>` is neither a string nor `null`.
    #[error("`choices[0].delta.{0}` is not a JSON string")]
    NotAString(&'static str),
    /// The body ended with neither `data: [DONE]` nor a `finish_reason`:
    /// the upstream broke off mid-answer.
    #[error("the stream ended before `data: [DONE]` and without a finish_reason")]
    Truncated,
}

/// What [`SseParser::ready`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// More of the body is needed.
    NeedInput,
    /// The next event carries text borrowed from the parser (`Delta`, `Reasoning`).
    Text,
    /// The next event carries no borrowed text.
    Other,
    /// The answer is complete: `next_event` gives `None`.
    End,
}

/// An incremental parser of one streaming answer.
#[derive(Debug)]
pub struct SseParser {
    buf: BytesMut,
    /// Bytes at the front of `buf` of events already dispatched; dropped
    /// when no handed-out event can borrow them any more.
    consumed: usize,
    /// Start of the next line not yet read (`>= consumed`).
    pos: usize,
    /// Bytes after `pos` already searched for `\n` in vain, so a long line
    /// arriving in small chunks is scanned once.
    scanned: usize,
    /// Values of the `data:` fields of the event in progress (ranges of
    /// `buf`, without `data:` and the optional space).
    data: Vec<Range<usize>>,
    /// Where several `data:` lines of one event are joined with `\n`.
    scratch: Vec<u8>,
    /// Events of the last dispatched JSON, handed out in order.
    pending: VecDeque<Pending>,
    /// The longest event (and line) accepted.
    max_event: usize,
    /// [`end`](Self::end) was called: the body is complete.
    eof: bool,
    /// `[DONE]` was handed out: nothing more is.
    done: bool,
    /// A `finish_reason` or an error event was seen: the end of the body
    /// without `[DONE]` is not a truncation.
    concluded: bool,
}

/// An event waiting to be handed out; text is a range of `buf` or `scratch`.
#[derive(Debug)]
enum Pending {
    Delta(Src, Range<usize>),
    Reasoning(Src, Range<usize>),
    Finish(String),
    Usage(Option<u64>, Option<u64>),
    Done,
    Error(String),
}

#[derive(Debug, Clone, Copy)]
enum Src {
    Buf,
    Scratch,
}

impl SseParser {
    /// A parser refusing events longer than `max_event` bytes (all their
    /// lines, line ends included, the blank line that ends them not).
    pub fn new(max_event: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(max_event.clamp(64, 8 * 1024)),
            consumed: 0,
            pos: 0,
            scanned: 0,
            data: Vec::with_capacity(1),
            scratch: Vec::new(),
            pending: VecDeque::with_capacity(4),
            max_event,
            eof: false,
            done: false,
            concluded: false,
        }
    }

    /// Append one chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(chunk);
    }

    /// The body is complete: what is left (a last line without its line end,
    /// an event without its blank line) is read as if terminated.
    pub fn end(&mut self) {
        self.eof = true;
    }

    /// `[DONE]` was handed out.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Bytes held that are not yet dispatched.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.consumed
    }

    /// The next event, or `None` when more input is needed (or, after
    /// [`end`](Self::end), at the end of a complete answer). After
    /// [`SseEvent::Done`] only `None`. Ending without `[DONE]` is
    /// [`SseError::Truncated`] unless a `finish_reason` or an error event
    /// came (some servers simply close then).
    pub fn next_event(&mut self) -> Result<Option<SseEvent<'_>>, SseError> {
        match self.ready()? {
            Ready::NeedInput | Ready::End => Ok(None),
            Ready::Text | Ready::Other => {
                let p = self.pending.pop_front().expect("ready() saw it");
                Ok(Some(self.hand_out(p)))
            }
        }
    }

    /// What [`next_event`](Self::next_event) would do next, without handing
    /// anything out: lets a caller that loops (reading more input, skipping
    /// events it only records) return a borrowed event on one path only.
    pub fn ready(&mut self) -> Result<Ready, SseError> {
        loop {
            if let Some(p) = self.pending.front() {
                return Ok(match p {
                    Pending::Delta(..) | Pending::Reasoning(..) => Ready::Text,
                    _ => Ready::Other,
                });
            }
            if self.done {
                return Ok(Ready::End);
            }
            self.compact();
            let Some(line) = self.next_line()? else {
                if !self.eof {
                    return Ok(Ready::NeedInput);
                }
                if !self.data.is_empty() {
                    self.dispatch()?;
                    continue;
                }
                return if self.concluded {
                    Ok(Ready::End)
                } else {
                    Err(SseError::Truncated)
                };
            };
            if line.is_empty() {
                self.dispatch()?;
            } else {
                self.field(line);
            }
        }
    }

    fn hand_out(&mut self, p: Pending) -> SseEvent<'_> {
        match p {
            Pending::Delta(src, r) => SseEvent::Delta {
                content: self.text(src, r),
            },
            Pending::Reasoning(src, r) => SseEvent::Reasoning {
                content: self.text(src, r),
            },
            Pending::Finish(reason) => SseEvent::Finish { reason },
            Pending::Usage(completion_tokens, prompt_tokens) => SseEvent::Usage {
                completion_tokens,
                prompt_tokens,
            },
            Pending::Done => {
                self.done = true;
                SseEvent::Done
            }
            Pending::Error(message) => SseEvent::Error { message },
        }
    }

    fn text(&self, src: Src, r: Range<usize>) -> &str {
        let bytes = match src {
            Src::Buf => &self.buf[r],
            Src::Scratch => &self.scratch[r],
        };
        // The range is a string literal serde_json parsed from these bytes.
        std::str::from_utf8(bytes).expect("serde_json checked the UTF-8")
    }

    /// The range of the next line without its `\n` (or `\r\n`); with `eof`,
    /// the unterminated tail too. Errors when the event in progress (its
    /// lines, line ends included, up to this one) passes the cap.
    fn next_line(&mut self) -> Result<Option<Range<usize>>, SseError> {
        let start = self.pos;
        let len = self.buf.len();
        let end = match memchr::memchr(b'\n', &self.buf[start + self.scanned..]) {
            Some(i) => {
                let nl = start + self.scanned + i;
                // The blank line ending an event does not count.
                if nl > start && !(nl == start + 1 && self.buf[start] == b'\r') {
                    self.check_len(nl + 1 - self.consumed)?;
                }
                self.pos = nl + 1;
                nl
            }
            None => {
                self.check_len(len - self.consumed)?;
                if !self.eof || start == len {
                    self.scanned = len - start;
                    return Ok(None);
                }
                self.pos = len;
                len
            }
        };
        self.scanned = 0;
        let end = if end > start && self.buf[end - 1] == b'\r' {
            end - 1
        } else {
            end
        };
        Ok(Some(start..end))
    }

    /// One non-blank line of an event: keep a `data` field, skip the rest.
    fn field(&mut self, line: Range<usize>) {
        let bytes = &self.buf[line.clone()];
        if let Some(value) = bytes.strip_prefix(b"data") {
            let skip = match value {
                [b':', b' ', ..] => Some(2),
                [b':', ..] => Some(1),
                [] => Some(0),
                _ => None, // `dataX: ...`: another field
            };
            if let Some(skip) = skip {
                self.data.push(line.start + 4 + skip..line.end);
                return;
            }
        }
        // A comment (`:`), `event:`, `id:`, `retry:` or unknown field.
        if self.data.is_empty() {
            self.consumed = self.pos;
        }
    }

    /// The blank line: parse the event's data into `pending`.
    fn dispatch(&mut self) -> Result<(), SseError> {
        self.consumed = self.pos;
        let result = match self.data.len() {
            0 => Ok(()),
            1 => {
                let r = self.data[0].clone();
                parse_data(
                    &self.buf[r.clone()],
                    Src::Buf,
                    r.start,
                    &mut self.pending,
                    &mut self.concluded,
                )
            }
            _ => {
                self.scratch.clear();
                for (i, r) in self.data.iter().enumerate() {
                    if i > 0 {
                        self.scratch.push(b'\n');
                    }
                    self.scratch.extend_from_slice(&self.buf[r.clone()]);
                }
                parse_data(
                    &self.scratch,
                    Src::Scratch,
                    0,
                    &mut self.pending,
                    &mut self.concluded,
                )
            }
        };
        self.data.clear();
        result
    }

    /// Drop the bytes of dispatched events, unless a pending event still
    /// points into them.
    fn compact(&mut self) {
        if self.consumed > 0 && self.pending.is_empty() {
            self.buf.advance(self.consumed);
            self.pos -= self.consumed;
            for r in &mut self.data {
                *r = r.start - self.consumed..r.end - self.consumed;
            }
            self.consumed = 0;
        }
    }

    fn check_len(&self, len: usize) -> Result<(), SseError> {
        if len > self.max_event {
            return Err(SseError::TooLong {
                len,
                limit: self.max_event,
            });
        }
        Ok(())
    }
}

/// The message of a non-2xx answer's JSON body: `{"error":{"message":..}}`,
/// `{"error":".."}` (some servers) or FastAPI's `{"detail":".."}`; `None`
/// when the body is none of these (then name the status instead).
pub fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow, default)]
        error: Option<&'a RawValue>,
        #[serde(borrow, default)]
        detail: Option<&'a RawValue>,
    }
    let b: Body<'_> = serde_json::from_slice(body).ok()?;
    b.error.or(b.detail).map(error_text)
}

/// The text of an `error` value: its `message` when an object has one, the
/// string itself, else the JSON as sent.
fn error_text(raw: &RawValue) -> String {
    #[derive(Deserialize)]
    struct WithMessage {
        message: String,
    }
    if let Ok(s) = serde_json::from_str::<String>(raw.get()) {
        return s;
    }
    if let Ok(m) = serde_json::from_str::<WithMessage>(raw.get()) {
        return m.message;
    }
    raw.get().to_string()
}

/// Parse the data of one event; push what it says onto `out` in stream
/// order (reasoning, content, finish, usage). `base` is where `data`
/// starts in its source, so text ranges point into the source.
fn parse_data(
    data: &[u8],
    src: Src,
    base: usize,
    out: &mut VecDeque<Pending>,
    concluded: &mut bool,
) -> Result<(), SseError> {
    if data == b"[DONE]" {
        out.push_back(Pending::Done);
        return Ok(());
    }
    let chunk: WireChunk<'_> = serde_json::from_slice(data)?;
    if let Some(e) = chunk.error {
        *concluded = true;
        out.push_back(Pending::Error(error_text(e)));
        return Ok(());
    }
    let range = |field: &'static str, v: Option<&RawValue>| -> Result<_, SseError> {
        let Some(v) = v else { return Ok(None) };
        let s = v.get();
        if !s.starts_with('"') {
            return Err(SseError::NotAString(field));
        }
        if s == "\"\"" {
            return Ok(None);
        }
        let start = s.as_ptr() as usize - data.as_ptr() as usize + base;
        Ok(Some(start..start + s.len()))
    };
    if let Some(FirstChoice(Some(choice))) = chunk.choices {
        if let Some(delta) = choice.delta {
            if let Some(r) = range("reasoning_content", delta.reasoning_content)? {
                out.push_back(Pending::Reasoning(src, r));
            }
            if let Some(r) = range("content", delta.content)? {
                out.push_back(Pending::Delta(src, r));
            }
        }
        if let Some(reason) = choice.finish_reason {
            *concluded = true;
            out.push_back(Pending::Finish(reason.into_owned()));
        }
    }
    if let Some(u) = chunk.usage {
        out.push_back(Pending::Usage(u.completion_tokens, u.prompt_tokens));
    }
    Ok(())
}

/// One `chat.completion.chunk`, or an error event. Unknown fields (`id`,
/// `model`, `logprobs`, llama.cpp's `timings` ...) are skipped.
#[derive(Deserialize)]
struct WireChunk<'a> {
    #[serde(borrow, default)]
    choices: Option<FirstChoice<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WireChoice<'a> {
    #[serde(borrow, default)]
    delta: Option<WireDelta<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WireDelta<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default, alias = "reasoning")]
    reasoning_content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens: Option<u64>,
}

/// `choices[0]`, the rest of the array skipped without allocating.
struct FirstChoice<'a>(Option<WireChoice<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for FirstChoice<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = FirstChoice<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of choices")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let first = seq.next_element::<WireChoice<'a>>()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(FirstChoice(first))
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An owned copy of an event, for comparisons.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Ev {
        Delta(String),
        Reasoning(String),
        Finish(String),
        Usage(Option<u64>, Option<u64>),
        Done,
        Error(String),
    }

    fn own(e: SseEvent<'_>) -> Ev {
        match e {
            SseEvent::Delta { content } => Ev::Delta(content.into()),
            SseEvent::Reasoning { content } => Ev::Reasoning(content.into()),
            SseEvent::Finish { reason } => Ev::Finish(reason),
            SseEvent::Usage {
                completion_tokens,
                prompt_tokens,
            } => Ev::Usage(completion_tokens, prompt_tokens),
            SseEvent::Done => Ev::Done,
            SseEvent::Error { message } => Ev::Error(message),
        }
    }

    fn parse(chunks: &[&[u8]], max: usize) -> Result<Vec<Ev>, SseError> {
        let mut p = SseParser::new(max);
        let mut out = Vec::new();
        for c in chunks {
            p.push(c);
            while let Some(e) = p.next_event()? {
                out.push(own(e));
            }
        }
        p.end();
        while let Some(e) = p.next_event()? {
            out.push(own(e));
        }
        Ok(out)
    }

    fn delta(s: &str) -> Ev {
        Ev::Delta(s.into())
    }

    /// The decoded text of every delta, concatenated.
    fn text(evs: &[Ev]) -> String {
        evs.iter()
            .filter_map(|e| match e {
                Ev::Delta(raw) => Some(serde_json::from_str::<String>(raw).unwrap()),
                _ => None,
            })
            .collect()
    }

    /// The example of the dialect notes (../shared/OPENAI-API.md).
    const SPEC: &str = concat!(
        r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"smollm2","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"smollm2","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"smollm2","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"smollm2","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}"#,
        "\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn the_spec_example() {
        assert_eq!(
            parse(&[SPEC.as_bytes()], 4096).unwrap(),
            vec![
                delta("\"Hello\""),
                Ev::Finish("stop".into()),
                Ev::Usage(Some(9), Some(12)),
                Ev::Done
            ]
        );
    }

    /// CRLF, comments, `event:`/`id:`/`retry:` fields, `data:` without a
    /// space, every escape, raw multi-byte UTF-8 and surrogate pairs, a
    /// `null` content, a role-only delta, usage `null` on every chunk (as
    /// OpenAI sends it), two choices.
    const TRICKY: &[u8] = b": ping - 2025-01-01 00:00:00\r\n\r\n\
retry: 3000\r\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"},\"finish_reason\":null}],\"usage\":null}\r\n\r\n\
id: 7\n\
event: message\n\
data: {\"choices\":[{\"delta\":{\"content\":\"q\\\" b\\\\ n\\n \\u00e9 \\ud83e\\udd80\"}}],\"usage\":null}\n\n\
data:{\"choices\":[{\"delta\":{\"content\":\"\xc3\xa9\xf0\x9f\xa6\x80 <b>\"}},{\"delta\":{\"content\":\"second choice\"}}]}\n\n\
: keep-alive\n\n\
data: {\"choices\":[{\"delta\":{\"content\":null}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\"\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\"!\"},\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7},\"timings\":{\"predicted_n\":4}}\r\n\r\n\
data: [DONE]\r\n\r\n";

    fn tricky_expected() -> Vec<Ev> {
        vec![
            delta(r#""q\" b\\ n\n \u00e9 \ud83e\udd80""#),
            delta("\"é🦀 <b>\""),
            delta("\"!\""),
            Ev::Finish("length".into()),
            Ev::Usage(Some(4), Some(3)),
            Ev::Done,
        ]
    }

    #[test]
    fn tricky_body_in_one_chunk() {
        let evs = parse(&[TRICKY], 4096).unwrap();
        assert_eq!(evs, tricky_expected());
        assert_eq!(text(&evs), "q\" b\\ n\n é 🦀é🦀 <b>!");
    }

    #[test]
    fn every_single_split_point() {
        for i in 0..=TRICKY.len() {
            let (a, b) = TRICKY.split_at(i);
            assert_eq!(
                parse(&[a, b], 4096).unwrap(),
                tricky_expected(),
                "split at {i}"
            );
        }
    }

    #[test]
    fn every_pair_of_split_points() {
        for i in (0..=TRICKY.len()).step_by(11) {
            for j in i..=TRICKY.len() {
                let chunks = [&TRICKY[..i], &TRICKY[i..j], &TRICKY[j..]];
                assert_eq!(parse(&chunks, 4096).unwrap(), tricky_expected(), "{i} {j}");
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        let chunks: Vec<&[u8]> = TRICKY.chunks(1).collect();
        assert_eq!(parse(&chunks, 4096).unwrap(), tricky_expected());
    }

    #[test]
    fn content_and_finish_and_usage_in_one_event_come_in_stream_order() {
        let body = br#"data: {"choices":[{"delta":{"reasoning_content":"hm","content":"a"},"finish_reason":"stop"}],"usage":{"completion_tokens":1}}

data: [DONE]

"#;
        assert_eq!(
            parse(&[body], 4096).unwrap(),
            vec![
                Ev::Reasoning("\"hm\"".into()),
                delta("\"a\""),
                Ev::Finish("stop".into()),
                Ev::Usage(Some(1), None),
                Ev::Done
            ]
        );
    }

    #[test]
    fn reasoning_alias() {
        let body = b"data: {\"choices\":[{\"delta\":{\"reasoning\":\"so\"}}]}\n\ndata: [DONE]\n\n";
        assert_eq!(
            parse(&[body], 4096).unwrap(),
            vec![Ev::Reasoning("\"so\"".into()), Ev::Done]
        );
    }

    #[test]
    fn several_data_lines_make_one_event() {
        let body = b"data: {\"choices\":[{\"delta\":\n\
data: {\"content\":\"x\\ny\"}}]}\n\n\
data: [DONE]\n\n";
        for i in 0..=body.len() {
            let (a, b) = body.split_at(i);
            assert_eq!(
                parse(&[a, b], 4096).unwrap(),
                vec![delta(r#""x\ny""#), Ev::Done],
                "split at {i}"
            );
        }
    }

    #[test]
    fn error_events() {
        let body = br#"data: {"choices":[{"delta":{"content":"a"}}]}

event: error
data: {"error":{"message":"the model \"x\" crashed","type":"server_error","code":500}}

data: {"error":"plain"}

data: {"error":{"code":1}}

"#;
        assert_eq!(
            parse(&[body], 4096).unwrap(),
            vec![
                delta("\"a\""),
                Ev::Error("the model \"x\" crashed".into()),
                Ev::Error("plain".into()),
                Ev::Error("{\"code\":1}".into()),
            ]
        );
    }

    #[test]
    fn error_bodies_of_non_2xx_answers() {
        assert_eq!(
            error_message(
                br#"{"error":{"message":"The model `gpt-9` does not exist","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#
            )
            .as_deref(),
            Some("The model `gpt-9` does not exist")
        );
        assert_eq!(
            error_message(br#"{"error":"busy"}"#).as_deref(),
            Some("busy")
        );
        assert_eq!(
            error_message(br#"{"detail":"Not Found"}"#).as_deref(),
            Some("Not Found")
        );
        assert_eq!(error_message(b"Internal Server Error"), None);
        assert_eq!(error_message(br#"{"ok":true}"#), None);
    }

    #[test]
    fn done_ends_the_stream_even_without_blank_line_or_newline() {
        assert_eq!(parse(&[b"data: [DONE]"], 64).unwrap(), vec![Ev::Done]);
        assert_eq!(parse(&[b"data: [DONE]\r\n"], 64).unwrap(), vec![Ev::Done]);
        // Nothing after [DONE] is read.
        assert_eq!(
            parse(&[b"data: [DONE]\n\ndata: not json\n\n"], 64).unwrap(),
            vec![Ev::Done]
        );
    }

    #[test]
    fn a_stream_cut_off_is_truncated_unless_it_finished() {
        let cut = b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n";
        assert!(matches!(parse(&[cut], 4096), Err(SseError::Truncated)));
        assert!(matches!(parse(&[b""], 4096), Err(SseError::Truncated)));
        let finished =
            b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n: bye\n";
        assert_eq!(
            parse(&[finished], 4096).unwrap(),
            vec![Ev::Finish("stop".into())]
        );
    }

    #[test]
    fn malformed_events() {
        for bad in [
            &b"data: not json\n\n"[..],
            b"data: {\"choices\":[{\"delta\":{\"content\":42}}]}\n\n",
            b"data: {\"choices\":[{\"delta\":{\"content\":{}}}]}\n\n",
            b"data: {\"choices\":[{\"delta\":{\"reasoning_content\":[1]}}]}\n\n",
            b"data: {\"choices\":{\"delta\":{}}}\n\n",
            b"data: {\"choices\":[{\"delta\":{\"content\":\"unterminated}}]}\n\n",
            b"data: {\"choices\":[{\"delta\":{\"content\":\"\xff\"}}]}\n\n",
            b"data: {\"choices\":[{\"finish_reason\":7}]}\n\n",
            b"data: {\"usage\":{\"completion_tokens\":-1}}\n\n",
            b"data: [DONE] \n\n",
        ] {
            let r = parse(&[bad], 4096);
            assert!(
                matches!(r, Err(SseError::Json(_)) | Err(SseError::NotAString(_))),
                "{}: {r:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn event_at_the_cap_passes_one_over_fails() {
        // The event is its line and the line's `\n`.
        let line = "data: {\"choices\":[{\"delta\":{\"content\":\"abcd\"}}]}";
        let ok = format!("{line}\n\ndata: [DONE]\n\n");
        let cap = line.len() + 1;
        assert_eq!(parse(&[ok.as_bytes()], cap).unwrap().len(), 2);
        let e = parse(&[ok.as_bytes()], cap - 1).unwrap_err();
        assert!(
            matches!(e, SseError::TooLong { len, limit } if len == cap && limit == cap - 1),
            "{e:?}"
        );
        assert!(e.to_string().contains("longer than"), "{e}");
    }

    #[test]
    fn an_unterminated_event_over_the_cap_fails_before_its_end() {
        let mut p = SseParser::new(32);
        p.push(b"data: {\"choices\":[");
        assert!(p.next_event().unwrap().is_none());
        p.push(b"{\"delta\":{\"content\":\"long long long\"}}]}");
        assert!(matches!(p.next_event(), Err(SseError::TooLong { .. })));
        // Many short data lines without a blank line are one growing event.
        let mut p = SseParser::new(32);
        for _ in 0..10 {
            p.push(b"data: 1\n");
            if p.next_event().is_err() {
                return;
            }
        }
        panic!("an endless event was accepted");
    }

    #[test]
    fn keep_alive_comments_do_not_grow_the_buffer() {
        let mut p = SseParser::new(64);
        for _ in 0..10_000 {
            p.push(b": ping\r\n");
            assert!(p.next_event().unwrap().is_none());
        }
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn buffer_is_reused_not_grown() {
        let mut p = SseParser::new(1 << 20);
        let ev = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" the\"},\"finish_reason\":null}]}\n\n";
        for _ in 0..10_000 {
            p.push(ev);
            assert_eq!(own(p.next_event().unwrap().unwrap()), delta("\" the\""));
            assert!(p.next_event().unwrap().is_none());
        }
        assert_eq!(p.buffered(), 0);
        assert!(p.buf.capacity() <= 8 * 1024, "{}", p.buf.capacity());
    }

    #[test]
    fn several_events_in_one_chunk_borrow_the_same_buffer() {
        let body = b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n";
        let mut p = SseParser::new(1024);
        p.push(body);
        let mut got = Vec::new();
        while let Some(e) = p.next_event().unwrap() {
            got.push(own(e));
            // A chunk pushed between two events of one dispatch.
            p.push(b"");
        }
        assert_eq!(got, vec![delta("\"a\""), delta("\"b\"")]);
    }

    /// A real answer of llama.cpp's server (llama-cpp-python 0.3.36,
    /// SmolLM2-135M-Instruct), captured by `.ci/llama-server.sh transcript`.
    /// It asked for `include_usage`, which that server ignores: no usage.
    const REAL: &[u8] = include_bytes!("../../tests/data/openai_sse_smollm2.txt");

    #[test]
    fn the_real_transcript_of_llama_cpp() {
        let evs = parse(&[REAL], 64 * 1024).unwrap();
        let n = evs.len();
        assert_eq!(evs[n - 2..], [Ev::Finish("stop".into()), Ev::Done]);
        assert_eq!(n - 2, 96, "one delta per token");
        assert!(evs[..n - 2].iter().all(|e| matches!(e, Ev::Delta(_))));
        let text = text(&evs);
        assert!(text.starts_with("The sky is blue because"), "{text}");
        assert!(text.ends_with("this type of light."), "{text}");
        // Cut everywhere in 7-byte pieces, the answer is the same.
        let chunks: Vec<&[u8]> = REAL.chunks(7).collect();
        assert_eq!(parse(&chunks, 64 * 1024).unwrap(), evs);
    }
}
