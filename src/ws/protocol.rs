//! The `/ws/chat` wire protocol: parsing client messages and building the
//! server's JSON frames, field names exactly as in the seed report.
//!
//! Client messages are small and rare, so they are parsed with serde into
//! owned types. Server frames other than `token` are built with serde too;
//! the per-token frame has its own allocation-free encoder in
//! [`super::token_frame`].

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::response::now_rfc3339;

/// Longest `conversation_id` accepted.
pub const MAX_CONVERSATION_ID: usize = 128;

/// Error codes of `error` frames.
pub mod code {
    pub const INVALID_MESSAGE: &str = "invalid_message";
    pub const MODEL_NOT_ALLOWED: &str = "model_not_allowed";
    pub const UPSTREAM_UNAVAILABLE: &str = "upstream_unavailable";
    pub const UPSTREAM_ERROR: &str = "upstream_error";
    pub const BUSY: &str = "busy";
    pub const SHUTTING_DOWN: &str = "shutting_down";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const INTERNAL: &str = "internal";
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
    Cancel { conversation_id: Option<String> },
    Ping,
    Pong,
}

impl ClientMessage {
    /// Metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Chat(_) => "chat",
            Self::Cancel { .. } => "cancel",
            Self::Ping => "ping",
            Self::Pong => "pong",
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
    #[error("unknown message type {0:?}: expected chat, cancel, ping or pong")]
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
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a str>,
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

/// `connection_ack`.
#[derive(Serialize)]
pub struct ConnectionAck<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub client_id: &'a str,
    pub session_id: &'a str,
    pub timestamp: String,
}

/// `complete`: the end of a generation.
#[derive(Debug, Clone, Serialize)]
pub struct Complete<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub conversation_id: Option<&'a str>,
    pub total_tokens: u64,
    pub latency_ms: f64,
    pub timestamp: String,
    pub first_token_ms: Option<f64>,
    pub tokens_per_second: f64,
    pub model: &'a str,
    pub done_reason: &'a str,
}

/// `error`.
#[derive(Serialize)]
struct ErrorFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    timestamp: String,
}

#[derive(Serialize)]
struct Simple<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    timestamp: String,
}

#[derive(Serialize)]
struct SystemFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
    timestamp: String,
}

fn to_vec<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_else(|_| b"{\"type\":\"error\",\"code\":\"internal\"}".to_vec())
}

pub fn connection_ack(client_id: &str, session_id: &str) -> Vec<u8> {
    to_vec(&ConnectionAck {
        kind: "connection_ack",
        client_id,
        session_id,
        timestamp: now_rfc3339(),
    })
}

pub fn complete(c: &Complete<'_>) -> Vec<u8> {
    to_vec(c)
}

pub fn error(code: &str, message: &str, conversation_id: Option<&str>) -> Vec<u8> {
    to_vec(&ErrorFrame {
        kind: "error",
        code,
        message,
        conversation_id,
        retry_after_ms: None,
        timestamp: now_rfc3339(),
    })
}

/// `error` with code `rate_limited` and how long to wait.
pub fn rate_limited(retry_after_ms: u64, conversation_id: Option<&str>) -> Vec<u8> {
    to_vec(&ErrorFrame {
        kind: "error",
        code: code::RATE_LIMITED,
        message: "too many chat messages; wait before sending the next one",
        conversation_id,
        retry_after_ms: Some(retry_after_ms),
        timestamp: now_rfc3339(),
    })
}

/// `ping` or `pong`.
pub fn heartbeat(kind: &str) -> Vec<u8> {
    to_vec(&Simple {
        kind,
        timestamp: now_rfc3339(),
    })
}

pub fn system(message: &str) -> Vec<u8> {
    to_vec(&SystemFrame {
        kind: "system",
        message,
        timestamp: now_rfc3339(),
    })
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
            serde_json::from_slice(&connection_ack("client-001", "s-1")).unwrap();
        assert_eq!(v["type"], "connection_ack");
        assert_eq!(v["client_id"], "client-001");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        let v: serde_json::Value =
            serde_json::from_slice(&error("busy", "queue full", Some("c"))).unwrap();
        assert_eq!(v["code"], "busy");
        assert_eq!(v["conversation_id"], "c");
    }
}
