//! [`UpstreamStream`]: an open answer of either dialect, read line by line
//! as [`ChatLine`]s — the one streaming path the generation reads.

use crate::ollama::{parse_chat_line, ChatLine, ChatStream, OllamaError};

use super::openai::OpenAiStream;

/// An answer being streamed from an upstream. Dropping it drops the
/// request, which tells the upstream to stop.
///
/// Not boxed: one lives per answer inside its generation's future, and the
/// Ollama stream (which carries its own connection, ADR 0021) is read once
/// per line on the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum UpstreamStream {
    Ollama(ChatStream),
    OpenAi(OpenAiStream),
}

impl UpstreamStream {
    /// The next line of the answer; `Ok(None)` at the end of the body.
    /// Cancel-safe (usable in `select!`).
    pub async fn next(&mut self) -> Result<Option<ChatLine<'_>>, OllamaError> {
        match self {
            Self::Ollama(s) => match s.next_line().await? {
                Some(line) => parse_chat_line(line)
                    .map(Some)
                    .map_err(|e| OllamaError::Malformed(format!("a malformed line: {e}"))),
                None => Ok(None),
            },
            Self::OpenAi(s) => s.next().await,
        }
    }
}
