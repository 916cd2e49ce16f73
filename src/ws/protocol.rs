//! The `/ws/chat` wire protocol: parsing client messages, and the one
//! place where the server's frames and error codes are named:
//! [`ServerFrame`] (every server → client frame, serialized by serde with
//! its `type` tag) and [`ErrorCode`] (every `code` of an `error` frame). The
//! OpenAPI document takes its schemas from these two types, so a new frame
//! or code is added here and nowhere else.
//!
//! Client messages are small and rare, so they are parsed with serde into
//! owned types. The per-token frame is the exception on the way out: it is
//! described by [`ServerFrame::Token`] but written by the allocation-light
//! encoder in [`super::token_frame`] (ADR 0002); a unit test holds the two to
//! the same fields.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::response::now_rfc3339;

/// Longest `conversation_id` accepted.
pub const MAX_CONVERSATION_ID: usize = 128;

/// The `code` of an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message was not valid JSON, not a known type, or failed validation.
    InvalidMessage,
    /// The chat named a model this client may not use.
    ModelNotAllowed,
    /// Ollama could not be reached (or answered 5xx/429) after the retries.
    UpstreamUnavailable,
    /// Ollama failed during the answer (an error line, a malformed or cut stream).
    UpstreamError,
    /// `message_queue_size` chats already wait in this session.
    Busy,
    /// The server is draining: the chat was not started.
    ShuttingDown,
    /// Too many chats from this client; `retry_after_ms` says how long to wait.
    RateLimited,
    /// A bug in the gateway.
    Internal,
    /// Another session sent `resume` for this conversation and took its
    /// generation over; this session gets nothing more of it.
    ResumedElsewhere,
    /// Nothing to resume: unknown conversation, window passed, buffer
    /// overflowed, or `last_seq` older than the oldest frame kept.
    ResumeUnavailable,
}

impl ErrorCode {
    /// The wire name (also the metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidMessage => "invalid_message",
            Self::ModelNotAllowed => "model_not_allowed",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamError => "upstream_error",
            Self::Busy => "busy",
            Self::ShuttingDown => "shutting_down",
            Self::RateLimited => "rate_limited",
            Self::Internal => "internal",
            Self::ResumedElsewhere => "resumed_elsewhere",
            Self::ResumeUnavailable => "resume_unavailable",
        }
    }

    /// Every code, for tests and docs.
    pub const ALL: [ErrorCode; 10] = [
        Self::InvalidMessage,
        Self::ModelNotAllowed,
        Self::UpstreamUnavailable,
        Self::UpstreamError,
        Self::Busy,
        Self::ShuttingDown,
        Self::RateLimited,
        Self::Internal,
        Self::ResumedElsewhere,
        Self::ResumeUnavailable,
    ];
}

/// Generation options a client may set per chat (all optional).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatOptionsIn {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u32>,
    pub max_tokens: Option<u32>,
}

/// A `chat` message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Chat {
    pub content: String,
    #[serde(default)]
    pub conversation_id: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub options: Option<ChatOptionsIn>,
}

/// Every message a client may send.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Chat(Chat),
    Cancel {
        conversation_id: Option<String>,
    },
    Ping,
    Pong,
    /// In-band re-authentication: the session goes on with this access
    /// token (same client) instead of closing when the old one expires.
    /// `Debug` never shows the token.
    Auth {
        token: Secret,
    },
    /// Take over the generation of `conversation_id` after a dropped
    /// connection: every frame after token `last_seq`, then the live ones.
    Resume {
        conversation_id: String,
        last_seq: u64,
    },
}

/// A token in a client message, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl ClientMessage {
    /// Metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Chat(_) => "chat",
            Self::Cancel { .. } => "cancel",
            Self::Ping => "ping",
            Self::Pong => "pong",
            Self::Auth { .. } => "auth",
            Self::Resume { .. } => "resume",
        }
    }
}

/// Why a client message was refused; becomes an `invalid_message` error
/// frame whose text is this error's `Display`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("message is not valid JSON: {0}")]
    NotJson(String),
    #[error("message must be a JSON object with a \"type\" field")]
    NotObject,
    #[error("unknown message type {0:?}: expected chat, cancel, resume, auth, ping or pong")]
    UnknownType(String),
    #[error("chat message: {0}")]
    BadChat(String),
    #[error("chat content is missing or empty")]
    EmptyContent,
    #[error("chat content is {0} bytes, more than the {1} allowed")]
    ContentTooLong(usize, usize),
    #[error("conversation_id must be 1-128 characters of A-Z a-z 0-9 . _ : -")]
    BadConversationId,
    #[error("options.{0}")]
    BadOption(String),
    #[error("resume message: send {{\"type\":\"resume\",\"conversation_id\":\"<id>\",\"last_seq\":<last token seq received, 0 for all>}}")]
    BadResume,
    #[error("auth message: send {{\"type\":\"auth\",\"token\":\"<access token>\"}}")]
    BadAuth,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a str>,
}

#[derive(Deserialize)]
struct AuthIn {
    token: String,
}

#[derive(Deserialize)]
struct ResumeIn {
    conversation_id: String,
    #[serde(default)]
    last_seq: u64,
}

#[derive(Deserialize)]
struct CancelIn {
    #[serde(default)]
    conversation_id: Option<String>,
}

fn valid_conversation_id(id: &str) -> bool {
    (1..=MAX_CONVERSATION_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

/// Parse and validate one client text message. Never panics: any input
/// yields a message or a [`MessageError`].
pub fn parse_client_message(
    text: &[u8],
    max_content_bytes: usize,
) -> Result<ClientMessage, MessageError> {
    let value: &RawValue =
        serde_json::from_slice(text).map_err(|e| MessageError::NotJson(e.to_string()))?;
    if !value.get().trim_start().starts_with('{') {
        return Err(MessageError::NotObject);
    }
    let env: Envelope = serde_json::from_str(value.get()).map_err(|_| MessageError::NotObject)?;
    let kind = env.kind.ok_or(MessageError::NotObject)?;
    match kind {
        "chat" => {
            let chat: Chat = serde_json::from_str(value.get()).map_err(|e| {
                let s = e.to_string();
                if s.contains("missing field `content`") {
                    MessageError::EmptyContent
                } else {
                    MessageError::BadChat(s)
                }
            })?;
            validate_chat(&chat, max_content_bytes)?;
            Ok(ClientMessage::Chat(chat))
        }
        "cancel" => {
            let c: CancelIn = serde_json::from_str(value.get())
                .map_err(|e| MessageError::BadChat(e.to_string()))?;
            Ok(ClientMessage::Cancel {
                conversation_id: c.conversation_id,
            })
        }
        "auth" => {
            // Serde's own error could quote the value: say only what to send.
            let a: AuthIn = serde_json::from_str(value.get()).map_err(|_| MessageError::BadAuth)?;
            Ok(ClientMessage::Auth {
                token: Secret(a.token),
            })
        }
        "resume" => {
            let r: ResumeIn =
                serde_json::from_str(value.get()).map_err(|_| MessageError::BadResume)?;
            if !valid_conversation_id(&r.conversation_id) {
                return Err(MessageError::BadConversationId);
            }
            Ok(ClientMessage::Resume {
                conversation_id: r.conversation_id,
                last_seq: r.last_seq,
            })
        }
        "ping" => Ok(ClientMessage::Ping),
        "pong" => Ok(ClientMessage::Pong),
        other => Err(MessageError::UnknownType(other.chars().take(64).collect())),
    }
}

fn validate_chat(chat: &Chat, max_content_bytes: usize) -> Result<(), MessageError> {
    if chat.content.trim().is_empty() {
        return Err(MessageError::EmptyContent);
    }
    if chat.content.len() > max_content_bytes {
        return Err(MessageError::ContentTooLong(
            chat.content.len(),
            max_content_bytes,
        ));
    }
    if let Some(id) = &chat.conversation_id {
        if !valid_conversation_id(id) {
            return Err(MessageError::BadConversationId);
        }
    }
    if let Some(s) = &chat.system {
        if s.len() > max_content_bytes {
            return Err(MessageError::BadChat(format!(
                "system is {} bytes, more than the {max_content_bytes} allowed",
                s.len()
            )));
        }
    }
    if let Some(o) = &chat.options {
        let bad = |m: &str| Err(MessageError::BadOption(m.to_string()));
        if let Some(t) = o.temperature {
            if !(0.0..=2.0).contains(&t) {
                return bad("temperature must be between 0 and 2");
            }
        }
        if let Some(p) = o.top_p {
            if !(0.0..=1.0).contains(&p) {
                return bad("top_p must be between 0 and 1");
            }
        }
        if let Some(k) = o.top_k {
            if k == 0 || k > 1000 {
                return bad("top_k must be between 1 and 1000");
            }
        }
        if let Some(m) = o.max_tokens {
            if m == 0 || m > 131_072 {
                return bad("max_tokens must be between 1 and 131072");
            }
        }
    }
    Ok(())
}

/// The `phase` of a `status` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusPhase {
    /// Waiting behind earlier chats of the session or for an upstream slot.
    Queued,
    /// The upstream is loading the model: the first token will be slow.
    LoadingModel,
}

/// Every frame the server sends, by its `type`. Timestamps are RFC 3339
/// UTC with microseconds.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    /// First frame of every session. `resume_window_secs` > 0: a generation
    /// cut by a dropped connection can be taken over with `resume` for that
    /// long.
    ConnectionAck {
        client_id: &'a str,
        session_id: &'a str,
        resume_window_secs: u64,
        timestamp: String,
    },
    /// One piece of the answer, text byte-exact as Ollama generated it;
    /// `seq` counts from 1 per generation. Written by
    /// [`super::token_frame::TokenEncoder`], never through serde.
    Token {
        token: &'a str,
        conversation_id: Option<&'a str>,
        timestamp: String,
        seq: u64,
    },
    /// Like `token`, for a thinking model's reasoning (own `seq`).
    Thinking {
        token: &'a str,
        conversation_id: Option<&'a str>,
        timestamp: String,
        seq: u64,
    },
    /// The end of a generation (also after `cancel`: `done_reason` is
    /// `cancelled`). Exactly one `complete` or one `error` per chat.
    Complete {
        conversation_id: Option<&'a str>,
        /// The tokens the upstream generated, by its own count (Ollama's
        /// `eval_count`, OpenAI's `usage.completion_tokens`; thinking tokens
        /// included) when the answer completed with one; otherwise (a
        /// cancel, a server that sends no usage) the `token` frames sent.
        total_tokens: u64,
        latency_ms: f64,
        timestamp: String,
        first_token_ms: Option<f64>,
        tokens_per_second: f64,
        model: &'a str,
        done_reason: &'a str,
        /// The upstream that answered (its configured name); absent when
        /// none was reached (cancelled before it started).
        #[serde(skip_serializing_if = "Option::is_none")]
        upstream: Option<&'a str>,
    },
    /// Informational, before the first token: the chat waits (`phase`
    /// `queued`, `position` = chats ahead of it; sent again when that
    /// changes) or the model is being loaded (`phase` `loading_model`).
    /// Clients may ignore it.
    Status {
        conversation_id: Option<&'a str>,
        phase: StatusPhase,
        #[serde(skip_serializing_if = "Option::is_none")]
        position: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none")]
        model: Option<&'a str>,
        timestamp: String,
    },
    /// A refused message or a failed generation.
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        conversation_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        timestamp: String,
    },
    /// The heartbeat (the client answers `pong`).
    Ping { timestamp: String },
    /// The answer to a client's `ping`.
    Pong { timestamp: String },
    /// A notice for people: shutdown, revocation, the token expiring soon.
    System { message: &'a str, timestamp: String },
    /// The answer to an accepted `auth`: the session now runs on the new
    /// token, until `expires_at` (RFC 3339 UTC).
    AuthAck {
        expires_at: String,
        timestamp: String,
    },
}

impl ServerFrame<'_> {
    /// The JSON text of the frame.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self)
            .unwrap_or_else(|_| b"{\"type\":\"error\",\"code\":\"internal\"}".to_vec())
    }
}

pub fn connection_ack(client_id: &str, session_id: &str, resume_window_secs: u64) -> Vec<u8> {
    ServerFrame::ConnectionAck {
        client_id,
        session_id,
        resume_window_secs,
        timestamp: now_rfc3339(),
    }
    .to_json()
}

pub fn error(code: ErrorCode, message: &str, conversation_id: Option<&str>) -> Vec<u8> {
    ServerFrame::Error {
        code,
        message,
        conversation_id,
        retry_after_ms: None,
        timestamp: now_rfc3339(),
    }
    .to_json()
}

/// `error` with code `rate_limited` and how long to wait.
pub fn rate_limited(retry_after_ms: u64, conversation_id: Option<&str>) -> Vec<u8> {
    ServerFrame::Error {
        code: ErrorCode::RateLimited,
        message: "too many chat messages; wait before sending the next one",
        conversation_id,
        retry_after_ms: Some(retry_after_ms),
        timestamp: now_rfc3339(),
    }
    .to_json()
}

/// The heartbeat `ping`.
pub fn ping() -> Vec<u8> {
    ServerFrame::Ping {
        timestamp: now_rfc3339(),
    }
    .to_json()
}

/// The answer to a client's `ping`.
pub fn pong() -> Vec<u8> {
    ServerFrame::Pong {
        timestamp: now_rfc3339(),
    }
    .to_json()
}

/// The answer to an accepted `auth` message.
pub fn auth_ack(expires_at_unix: u64) -> Vec<u8> {
    let t = i64::try_from(expires_at_unix)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut buf = Vec::with_capacity(32);
    crate::response::write_rfc3339(&mut buf, t);
    ServerFrame::AuthAck {
        expires_at: String::from_utf8(buf).unwrap_or_default(),
        timestamp: now_rfc3339(),
    }
    .to_json()
}

/// `status` with phase `queued`: `position` chats are ahead.
pub fn status_queued(conversation_id: Option<&str>, position: usize) -> Vec<u8> {
    ServerFrame::Status {
        conversation_id,
        phase: StatusPhase::Queued,
        position: Some(position),
        model: None,
        timestamp: now_rfc3339(),
    }
    .to_json()
}

/// `status` with phase `loading_model`.
pub fn status_loading(conversation_id: Option<&str>, model: &str) -> Vec<u8> {
    ServerFrame::Status {
        conversation_id,
        phase: StatusPhase::LoadingModel,
        position: None,
        model: Some(model),
        timestamp: now_rfc3339(),
    }
    .to_json()
}

pub fn system(message: &str) -> Vec<u8> {
    ServerFrame::System {
        message,
        timestamp: now_rfc3339(),
    }
    .to_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ClientMessage, MessageError> {
        parse_client_message(s.as_bytes(), 1000)
    }

    #[test]
    fn seed_chat_message_parses() {
        let m = parse(r#"{"type":"chat","content":"What is the capital of France?","conversation_id":"conv-123","timestamp":"2025-11-07T12:00:01.000000"}"#).unwrap();
        let ClientMessage::Chat(c) = m else { panic!() };
        assert_eq!(c.content, "What is the capital of France?");
        assert_eq!(c.conversation_id.as_deref(), Some("conv-123"));
    }

    #[test]
    fn options_and_model() {
        let m = parse(r#"{"type":"chat","content":"hi","model":"llama3.2","system":"be brief","options":{"temperature":0.1,"max_tokens":5}}"#).unwrap();
        let ClientMessage::Chat(c) = m else { panic!() };
        assert_eq!(c.model.as_deref(), Some("llama3.2"));
        assert_eq!(c.options.unwrap().max_tokens, Some(5));
    }

    #[test]
    fn auth_message_and_ack() {
        let m = parse(r#"{"type":"auth","token":"eyJ.x.y"}"#).unwrap();
        assert_eq!(m.kind(), "auth");
        let ClientMessage::Auth { token } = &m else {
            panic!()
        };
        assert_eq!(token.0, "eyJ.x.y");
        assert!(!format!("{m:?}").contains("eyJ"));
        for bad in [r#"{"type":"auth"}"#, r#"{"type":"auth","token":5}"#] {
            assert_eq!(parse(bad), Err(MessageError::BadAuth), "{bad}");
        }
        let ack: serde_json::Value = serde_json::from_slice(&auth_ack(1_767_225_600)).unwrap();
        assert_eq!(ack["type"], "auth_ack");
        assert_eq!(ack["expires_at"], "2026-01-01T00:00:00.000000Z");
    }

    #[test]
    fn refusals() {
        assert!(matches!(parse("nope"), Err(MessageError::NotJson(_))));
        assert_eq!(parse("[1,2]"), Err(MessageError::NotObject));
        assert_eq!(parse("{}"), Err(MessageError::NotObject));
        assert_eq!(
            parse(r#"{"type":"dance"}"#),
            Err(MessageError::UnknownType("dance".into()))
        );
        assert_eq!(parse(r#"{"type":"chat"}"#), Err(MessageError::EmptyContent));
        assert_eq!(
            parse(r#"{"type":"chat","content":"  "}"#),
            Err(MessageError::EmptyContent)
        );
        assert_eq!(
            parse(&format!(
                r#"{{"type":"chat","content":"{}"}}"#,
                "x".repeat(1001)
            )),
            Err(MessageError::ContentTooLong(1001, 1000))
        );
        assert_eq!(
            parse(r#"{"type":"chat","content":"x","conversation_id":"a b"}"#),
            Err(MessageError::BadConversationId)
        );
        assert!(matches!(
            parse(r#"{"type":"chat","content":"x","options":{"temperature":9}}"#),
            Err(MessageError::BadOption(_))
        ));
        assert!(matches!(
            parse(r#"{"type":"chat","content":"x","options":{"bogus":1}}"#),
            Err(MessageError::BadChat(_))
        ));
        assert!(matches!(
            parse(r#"{"type":"chat","content":5}"#),
            Err(MessageError::BadChat(_))
        ));
    }

    #[test]
    fn resume_message() {
        assert_eq!(
            parse(r#"{"type":"resume","conversation_id":"c-1","last_seq":10}"#),
            Ok(ClientMessage::Resume {
                conversation_id: "c-1".into(),
                last_seq: 10
            })
        );
        assert_eq!(
            parse(r#"{"type":"resume","conversation_id":"c"}"#),
            Ok(ClientMessage::Resume {
                conversation_id: "c".into(),
                last_seq: 0
            })
        );
        assert_eq!(
            parse(r#"{"type":"resume","last_seq":1}"#),
            Err(MessageError::BadResume)
        );
        assert_eq!(
            parse(r#"{"type":"resume","conversation_id":"c","last_seq":-1}"#),
            Err(MessageError::BadResume)
        );
        assert_eq!(
            parse(r#"{"type":"resume","conversation_id":"a b"}"#),
            Err(MessageError::BadConversationId)
        );
    }

    #[test]
    fn control_messages() {
        assert_eq!(parse(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping));
        assert_eq!(
            parse(r#"{"type":"pong","timestamp":"x"}"#),
            Ok(ClientMessage::Pong)
        );
        assert_eq!(
            parse(r#"{"type":"cancel","conversation_id":"c"}"#),
            Ok(ClientMessage::Cancel {
                conversation_id: Some("c".into())
            })
        );
    }

    #[test]
    fn frames_have_seed_fields() {
        let v: serde_json::Value =
            serde_json::from_slice(&connection_ack("client-001", "s-1", 60)).unwrap();
        assert_eq!(v["resume_window_secs"], 60);
        assert_eq!(v["type"], "connection_ack");
        assert_eq!(v["client_id"], "client-001");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        let v: serde_json::Value =
            serde_json::from_slice(&error(ErrorCode::Busy, "queue full", Some("c"))).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], "busy");
        assert_eq!(v["conversation_id"], "c");
        assert!(v.get("retry_after_ms").is_none());
        let v: serde_json::Value = serde_json::from_slice(&pong()).unwrap();
        assert_eq!(v["type"], "pong");
    }

    #[test]
    fn error_code_names_are_the_serde_names() {
        for c in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }

    /// The zero-copy encoder writes exactly the fields `ServerFrame::Token`
    /// declares, with the same values.
    #[test]
    fn token_encoder_matches_the_token_frame() {
        let now = time::macros::datetime!(2025-11-07 12:00:01.045 UTC);
        let mut enc = super::super::token_frame::TokenEncoder::new(Some("c-1"));
        let fast: serde_json::Value =
            serde_json::from_slice(&enc.encode("token", "\"h\\u00e9\"", 3, now)).unwrap();
        let mut ts = Vec::new();
        crate::response::write_rfc3339(&mut ts, now);
        let described = serde_json::to_value(ServerFrame::Token {
            token: "hé",
            conversation_id: Some("c-1"),
            timestamp: String::from_utf8(ts).unwrap(),
            seq: 3,
        })
        .unwrap();
        assert_eq!(fast, described);
    }
}
