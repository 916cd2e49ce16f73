//! [`ChatStream`]: the body of a `200` answer from Ollama, read line by line
//! on demand.
//!
//! The stream owns its upstream connection and drives it inline while it
//! waits for a line ([`UpstreamConn::poll_driving`], ADR 0021): one read of
//! the socket that brings many lines leaves them all in hyper's read buffer,
//! handed out one `next_line` after the other on the caller's task without a
//! wake-up of another task in between.
//!
//! The socket is read only when the caller asks for the next line, so a slow
//! consumer leaves bytes in hyper's and the kernel's bounded buffers and TCP
//! flow control slows Ollama down; memory per stream is bounded by the line
//! cap. Dropping the stream mid-answer drops the connection, which closes
//! the socket, which makes Ollama cancel the generation; a stream whose body
//! ended (or whose end is already buffered) gives its connection back to the
//! pool.

use std::sync::Arc;

use hyper::body::Incoming;
use tokio::time::Instant;

use super::conn::{ConnPool, DrivenBody, UpstreamConn};
use super::deadline::Deadlines;
use super::error::{error_chain, OllamaError};
use super::ndjson::NdjsonSplitter;
use super::policy::RetryPolicy;

/// A streaming answer of `/api/chat` (or `/api/generate`).
pub struct ChatStream {
    /// The body and the connection it arrives on, polled by
    /// [`Self::next_line`]; its drop gives the connection back or closes it.
    body: DrivenBody,
    splitter: NdjsonSplitter,
    /// The first-token and idle deadlines.
    deadlines: Deadlines,
    /// The body ended; only the splitter's tail is left.
    eof: bool,
    /// The tail was handed out too: only `None` from now on.
    finished: bool,
    /// Attempts it took to get this answer (1 = no retry).
    attempts: u32,
}

impl ChatStream {
    pub(crate) fn new(
        resp: http::Response<Incoming>,
        conn: UpstreamConn,
        pool: Arc<ConnPool>,
        policy: &RetryPolicy,
        first_deadline: Instant,
        attempts: u32,
    ) -> Self {
        Self {
            body: DrivenBody::new(resp.into_body(), conn, pool),
            splitter: NdjsonSplitter::new(policy.max_line_bytes),
            deadlines: Deadlines::new(
                first_deadline,
                policy.first_token_timeout,
                policy.idle_timeout,
            ),
            eof: false,
            finished: false,
            attempts,
        }
    }

    /// How many requests it took to get this stream (1 when no retry).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The next complete line, without its `\n` (a last line without `\n`
    /// at the end of the body counts), borrowed from the internal buffer;
    /// `Ok(None)` at the end of the body.
    ///
    /// The first line must arrive within `first_token_timeout` of the
    /// request, every later one within `idle_timeout` of the call that
    /// started waiting for it, so time the caller spends between calls
    /// (a slow client) does not count ([`OllamaError::Timeout`] with `what` =
    /// `"first token"` or `"idle"`). Cancel-safe: bytes already read stay
    /// buffered and the deadline stays when the future is dropped, so it may
    /// be used in `select!`.
    pub async fn next_line(&mut self) -> Result<Option<&[u8]>, OllamaError> {
        loop {
            if self.finished {
                return Ok(None);
            }
            if let Some(r) = self.splitter.next_range()? {
                self.deadlines.delivered();
                return Ok(Some(self.splitter.slice(r)));
            }
            if self.eof {
                self.finished = true;
                return match self.splitter.finish_range()? {
                    Some(r) => {
                        self.deadlines.delivered();
                        Ok(Some(self.splitter.slice(r)))
                    }
                    None => Ok(None),
                };
            }
            let frame = self.deadlines.next_frame(&mut self.body).await?;
            match frame {
                None => self.eof = true,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.splitter.push(&data);
                    }
                }
                Some(Err(e)) => return Err(OllamaError::Stream(error_chain(&e))),
            }
        }
    }
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("buffered", &self.splitter.buffered())
            .field("started", &self.deadlines.started())
            .field("eof", &self.eof)
            .field("attempts", &self.attempts)
            .finish()
    }
}
