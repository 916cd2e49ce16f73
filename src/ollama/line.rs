//! The hot path: one NDJSON line of Ollama's stream → [`ChatLine`], borrowing
//! from the line.
//!
//! The text of a token is kept as the raw JSON string literal Ollama sent
//! (quotes and escapes included, a [`RawValue`]), so the gateway can copy it
//! into its own JSON frame without unescaping and re-escaping. Both
//! `/api/chat` lines (`message.content`, `message.thinking`) and
//! `/api/generate` lines (`response`, `thinking` at the top level) parse into
//! the same [`ChatLine`]. Unknown fields are skipped, never an error.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// One parsed line of a streaming answer.
#[derive(Debug)]
pub enum ChatLine<'a> {
    /// A content line. `content` is the JSON string literal exactly as
    /// Ollama sent it (e.g. `"The"`, possibly `""`); `thinking` likewise for
    /// thinking models, `None` when absent.
    Content {
        content: &'a RawValue,
        thinking: Option<&'a RawValue>,
    },
    /// The final `done: true` line; its content, when present, may carry
    /// text too.
    Done {
        content: Option<&'a RawValue>,
        stats: DoneStats,
    },
    /// `{"error": "..."}` mid-stream.
    Error(String),
}

/// The figures of the final line. Durations are nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DoneStats {
    /// `"stop"`, `"length"`, `"load"`, `"unload"`.
    pub done_reason: Option<String>,
    pub eval_count: Option<u64>,
    pub eval_duration: Option<u64>,
    pub prompt_eval_count: Option<u64>,
    pub total_duration: Option<u64>,
    pub load_duration: Option<u64>,
}

/// Why a line is not one of Ollama's stream lines.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("`{0}` is not a JSON string")]
    NotAString(&'static str),
    #[error("neither `message` nor `response` nor `error` is present")]
    NoContent,
}

#[derive(Deserialize)]
struct WireLine<'a> {
    #[serde(borrow, default)]
    message: Option<WireMessage<'a>>,
    /// `/api/generate`.
    #[serde(borrow, default)]
    response: Option<&'a RawValue>,
    /// `/api/generate` thinking models.
    #[serde(borrow, default)]
    thinking: Option<&'a RawValue>,
    #[serde(default)]
    done: Option<bool>,
    #[serde(borrow, default)]
    done_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    eval_count: Option<u64>,
    #[serde(default)]
    eval_duration: Option<u64>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    total_duration: Option<u64>,
    #[serde(default)]
    load_duration: Option<u64>,
    #[serde(borrow, default)]
    error: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WireMessage<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    thinking: Option<&'a RawValue>,
}

/// Parse one line (without its `\n`).
pub fn parse_chat_line(line: &[u8]) -> Result<ChatLine<'_>, LineError> {
    if let Some(content) = super::fast_line::content(line) {
        return Ok(ChatLine::Content {
            content,
            thinking: None,
        });
    }
    parse_with_serde(line)
}

/// [`parse_chat_line`] without the fast path for the common shape.
pub(super) fn parse_with_serde(line: &[u8]) -> Result<ChatLine<'_>, LineError> {
    let w: WireLine<'_> = serde_json::from_slice(line)?;
    if let Some(e) = w.error {
        return Ok(ChatLine::Error(e.into_owned()));
    }
    let (content, thinking) = match (w.message, w.response) {
        (Some(m), _) => (m.content, m.thinking),
        (None, Some(r)) => (Some(r), w.thinking),
        (None, None) if w.done == Some(true) => (None, None),
        (None, None) => return Err(LineError::NoContent),
    };
    let content = string("content", content)?;
    let thinking = string("thinking", thinking)?;
    if w.done == Some(true) {
        return Ok(ChatLine::Done {
            content,
            stats: DoneStats {
                done_reason: w.done_reason.map(Cow::into_owned),
                eval_count: w.eval_count,
                eval_duration: w.eval_duration,
                prompt_eval_count: w.prompt_eval_count,
                total_duration: w.total_duration,
                load_duration: w.load_duration,
            },
        });
    }
    Ok(ChatLine::Content {
        content: match content {
            Some(c) => c,
            None => empty_string(),
        },
        thinking,
    })
}

/// `v` unless it is present and not a JSON string.
fn string<'a>(
    field: &'static str,
    v: Option<&'a RawValue>,
) -> Result<Option<&'a RawValue>, LineError> {
    match v {
        Some(s) if !s.get().starts_with('"') => Err(LineError::NotAString(field)),
        _ => Ok(v),
    }
}

/// `""`, for a content line whose message carries no `content` at all
/// (e.g. only `thinking`).
fn empty_string() -> &'static RawValue {
    serde_json::from_str("\"\"").expect("a JSON string")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(line: &str) -> (String, Option<String>) {
        match parse_chat_line(line.as_bytes()).unwrap() {
            ChatLine::Content { content, thinking } => (
                content.get().to_string(),
                thinking.map(|t| t.get().to_string()),
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chat_content_line_keeps_the_raw_literal() {
        let l = r#"{"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00","message":{"role":"assistant","content":"The","images":null},"done":false}"#;
        assert_eq!(content(l), ("\"The\"".into(), None));
    }

    #[test]
    fn escapes_are_not_decoded() {
        let l = r#"{"message":{"role":"assistant","content":"a\"b\\c\nd\te \u003cb\u003e 😀"},"done":false}"#;
        let (c, _) = content(l);
        assert_eq!(c, r#""a\"b\\c\nd\te \u003cb\u003e 😀""#);
        let decoded: String = serde_json::from_str(&c).unwrap();
        assert_eq!(decoded, "a\"b\\c\nd\te <b> 😀");
    }

    #[test]
    fn empty_content_is_a_content_line() {
        assert_eq!(
            content(r#"{"message":{"role":"assistant","content":""},"done":false}"#).0,
            "\"\""
        );
    }

    #[test]
    fn thinking_line() {
        let l = r#"{"model":"qwen3","message":{"role":"assistant","content":"","thinking":"Hmm"},"done":false}"#;
        assert_eq!(content(l), ("\"\"".into(), Some("\"Hmm\"".into())));
        let l = r#"{"message":{"role":"assistant","thinking":"Hmm"},"done":false}"#;
        assert_eq!(content(l), ("\"\"".into(), Some("\"Hmm\"".into())));
    }

    #[test]
    fn generate_lines() {
        let l = r#"{"model":"gemma3","created_at":"2025-10-26T17:15:24.097767Z","response":"That","done":false}"#;
        assert_eq!(content(l), ("\"That\"".into(), None));
        let l = r#"{"model":"q","response":"","thinking":"so","done":false}"#;
        assert_eq!(content(l), ("\"\"".into(), Some("\"so\"".into())));
        let l = r#"{"model":"llama3.2","created_at":"2023-08-04T19:22:45.499127Z","response":"","done":true,"done_reason":"stop","context":[1,2,3],"total_duration":10706818083,"load_duration":6338219291,"prompt_eval_count":26,"prompt_eval_duration":130079000,"eval_count":259,"eval_duration":4232710000}"#;
        match parse_chat_line(l.as_bytes()).unwrap() {
            ChatLine::Done { content, stats } => {
                assert_eq!(content.unwrap().get(), "\"\"");
                assert_eq!(stats.eval_count, Some(259));
                assert_eq!(stats.total_duration, Some(10706818083));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn final_chat_line() {
        let l = r#"{"model":"llama3.2","created_at":"2023-08-04T19:22:45.499127Z","message":{"role":"assistant","content":"!"},"done":true,"done_reason":"stop","total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":282,"eval_duration":4535599000}"#;
        match parse_chat_line(l.as_bytes()).unwrap() {
            ChatLine::Done { content, stats } => {
                assert_eq!(content.unwrap().get(), "\"!\"");
                assert_eq!(
                    stats,
                    DoneStats {
                        done_reason: Some("stop".into()),
                        eval_count: Some(282),
                        eval_duration: Some(4535599000),
                        prompt_eval_count: Some(26),
                        total_duration: Some(4883583458),
                        load_duration: Some(1334875),
                    }
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn done_without_message_or_stats() {
        match parse_chat_line(br#"{"done":true}"#).unwrap() {
            ChatLine::Done { content, stats } => {
                assert!(content.is_none());
                assert_eq!(stats, DoneStats::default());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_line() {
        match parse_chat_line(
            br#"{"error":"an error was encountered while running the model: \"oops\""}"#,
        )
        .unwrap()
        {
            ChatLine::Error(m) => assert_eq!(
                m,
                "an error was encountered while running the model: \"oops\""
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let l = r#"{"model":"m","remote_model":"x","logprobs":[{"a":[1,{"b":null}]}],"message":{"role":"assistant","content":"hi","tool_calls":[{"function":{"name":"f","arguments":{}}}],"images":null},"done":false,"new_field":{"deep":[true]}}"#;
        assert_eq!(content(l).0, "\"hi\"");
    }

    #[test]
    fn malformed_lines() {
        for bad in [
            &b"not json"[..],
            br#"{"message":{"content":"unterminated}"#,
            br#"{"message":{"content":42},"done":false}"#,
            br#"{"message":{"content":"a","thinking":{}},"done":false}"#,
            br#"{"response":null,"done":false}"#,
            br#"{"model":"m","done":false}"#,
            br#"[1,2]"#,
            br#"{"message":{"content":"a"},"done":"no"}"#,
            b"{\"message\":{\"content\":\"\xff\"},\"done\":false}",
        ] {
            assert!(
                parse_chat_line(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
