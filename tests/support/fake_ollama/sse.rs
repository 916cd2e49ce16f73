//! The fake's OpenAI dialect (`POST /v1/chat/completions`, `GET
//! /v1/models`), so one fake and one [`Behavior`](super::Behavior) script
//! can stand behind an `api = "ollama"` and an `api = "openai"` upstream
//! alike (the load tool compares the two paths on the same token stream).
//!
//! The layout is what llama.cpp's `llama-server`, vLLM and OpenAI send
//! (`../shared/OPENAI-API.md`): compact JSON, UTF-8 as is, one
//! `data: {chunk}\n\n` event per delta (`choices[0].delta.content`), a role
//! chunk first, a chunk with `finish_reason`, the usage chunk when the
//! request asked for it (`stream_options.include_usage`), `data: [DONE]`.
//! The tests' own `fake_openai.rs` covers the other styles (llama-cpp-python)
//! and the error cases.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The event layout of one answer.
pub(super) struct SseFormat {
    /// `{"id":"chatcmpl-…","object":"chat.completion.chunk","created":…,"model":"…",`
    prefix: String,
    /// The request asked for the usage chunk.
    usage: bool,
}

impl SseFormat {
    pub(super) fn new(model: &str, request: &Value) -> Self {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut prefix = format!(
            "{{\"id\":\"chatcmpl-{created:x}\",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":"
        );
        string(model, &mut prefix);
        prefix.push(',');
        let usage = request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Self { prefix, usage }
    }

    /// The first event: the role, no content.
    pub(super) fn opening(&self) -> String {
        self.chunk(r#"{"role":"assistant","content":""}"#, None)
    }

    /// One delta: `content`, or `reasoning_content` for a thinking line.
    pub(super) fn token(&self, content: &str, thinking: Option<&str>) -> String {
        let mut delta = String::with_capacity(content.len() + 16);
        match thinking {
            Some(t) => {
                delta.push_str("{\"reasoning_content\":");
                string(t, &mut delta);
            }
            None => {
                delta.push_str("{\"content\":");
                string(content, &mut delta);
            }
        }
        delta.push('}');
        self.chunk(&delta, None)
    }

    /// The finish chunk, the usage chunk when asked for, `[DONE]`: three
    /// events in one string.
    pub(super) fn done(&self, reason: &str, completion_tokens: usize) -> String {
        let mut s = self.chunk("{}", Some(reason));
        if self.usage {
            let prompt = 12;
            s.push_str("data: ");
            s.push_str(&self.prefix);
            let _ = write!(
                s,
                "\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion_tokens},\"total_tokens\":{}}}}}\n\n",
                prompt + completion_tokens
            );
        }
        s.push_str("data: [DONE]\n\n");
        s
    }

    /// An error event in the middle of a stream.
    pub(super) fn error(&self, message: &str) -> String {
        let mut s = String::from("data: {\"error\":{\"message\":");
        string(message, &mut s);
        s.push_str(",\"type\":\"server_error\"}}\n\n");
        s
    }

    /// `data: {prefix "choices":[{…delta…,"finish_reason":…}]}` and the blank line.
    fn chunk(&self, delta: &str, finish_reason: Option<&str>) -> String {
        let mut s = String::with_capacity(self.prefix.len() + delta.len() + 80);
        s.push_str("data: ");
        s.push_str(&self.prefix);
        s.push_str("\"choices\":[{\"index\":0,\"delta\":");
        s.push_str(delta);
        s.push_str(",\"logprobs\":null,\"finish_reason\":");
        match finish_reason {
            Some(r) => string(r, &mut s),
            None => s.push_str("null"),
        }
        s.push_str("}]}\n\n");
        s
    }
}

/// `{"error":{"message":…}}`, an OpenAI error body.
pub(super) fn error_body(message: &str) -> String {
    let mut s = String::from("{\"error\":{\"message\":");
    string(message, &mut s);
    s.push_str(",\"type\":\"server_error\",\"code\":null}}");
    s
}

/// `GET /v1/models` listing the models of an `/api/tags` body.
pub(super) fn models_body(tags: &str) -> String {
    let tags: Value = serde_json::from_str(tags).unwrap_or(Value::Null);
    let data: Vec<Value> = tags["models"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str())
        .map(
            |id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "fake"}),
        )
        .collect();
    serde_json::json!({"object": "list", "data": data}).to_string()
}

/// `s` as a compact JSON string literal (serde_json: raw UTF-8).
fn string(s: &str, out: &mut String) {
    out.push_str(&serde_json::to_string(s).expect("a string serializes"));
}
