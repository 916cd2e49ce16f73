//! [`OllamaError`]: everything that can go wrong talking to Ollama (or,
//! through `crate::upstream`, an OpenAI-compatible server: hence "the
//! upstream" in most messages), sorted so the WebSocket side can map it to an
//! error code and the metrics to a label.

use std::time::Duration;

use super::line::LineError;
use super::ndjson::LineTooLong;

/// What went wrong talking to Ollama.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OllamaError {
    /// No connection could be made (or it failed before an answer), after
    /// the retries.
    #[error("cannot reach Ollama at {host}: {message}")]
    Unreachable { host: String, message: String },
    /// A non-200 answer; `message` is Ollama's `{"error": ...}` text when the
    /// body is that (e.g. "model 'x' not found, try pulling it first").
    #[error("the upstream answered {status}: {message}")]
    Status { status: u16, message: String },
    /// Nothing arrived in time; `what` is `"first token"`, `"idle"` or the
    /// request that timed out.
    #[error("the upstream sent no {what} within {after:?}")]
    Timeout { what: &'static str, after: Duration },
    /// The body failed mid-stream (connection dropped, bad chunk encoding).
    #[error("the upstream's stream broke: {0}")]
    Stream(String),
    /// A line of the stream is longer than `max_line_bytes`.
    #[error("the upstream sent a line longer than {0} bytes")]
    LineTooLong(usize),
    /// A line (or answer) that is not what Ollama documents.
    #[error("the upstream sent an unexpected answer: {0}")]
    Malformed(String),
    /// The caller's cancellation token fired.
    #[error("the upstream request was cancelled")]
    Cancelled,
}

impl OllamaError {
    /// A fixed label for metrics (`upstream_failures{kind}`) and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "unreachable",
            Self::Status {
                status: 429 | 503, ..
            } => "busy",
            Self::Status { status, .. } if *status >= 500 => "status_5xx",
            Self::Status { .. } => "status_4xx",
            Self::Timeout { .. } => "timeout",
            Self::Stream(_) => "stream",
            Self::LineTooLong(_) => "line_too_long",
            Self::Malformed(_) => "malformed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether sending the same request again may succeed: connection
    /// failures, 5xx (503 is Ollama's "queue full") and 429. Only ever
    /// applied before the first token went to the client.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

impl From<LineError> for OllamaError {
    fn from(e: LineError) -> Self {
        Self::Malformed(e.to_string())
    }
}

impl From<LineTooLong> for OllamaError {
    fn from(e: LineTooLong) -> Self {
        Self::LineTooLong(e.limit)
    }
}

/// An error and its sources on one line ("client error (Connect): tcp connect
/// error: Connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_statuses() {
        let s = |status| OllamaError::Status {
            status,
            message: String::new(),
        };
        assert!(
            s(503).retryable() && s(500).retryable() && s(502).retryable() && s(429).retryable()
        );
        assert!(!s(404).retryable() && !s(400).retryable());
        assert_eq!(s(503).kind(), "busy");
        assert_eq!(s(404).kind(), "status_4xx");
        assert!(!OllamaError::Cancelled.retryable());
    }
}
