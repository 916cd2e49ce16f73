//! [`Deadlines`]: the first-token and idle timeouts of one streamed answer,
//! and the read of its body's next frame under them — shared by both
//! dialects' readers ([`super::ChatStream`], the OpenAI stream).

use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use super::conn::{DrivenBody, FrameResult};
use super::error::OllamaError;

/// When the next frame of an answer must have arrived.
#[derive(Debug)]
pub(crate) struct Deadlines {
    /// When the first line must have arrived: the attempt's start plus
    /// `first_token_timeout` (the wait for the head counts too).
    first: Instant,
    first_timeout: Duration,
    idle_timeout: Duration,
    /// A line was handed out: later waits get `idle_timeout`.
    started: bool,
    /// The idle deadline of the wait in progress; kept when the reading
    /// future is dropped (in a `select!`) so calling again does not restart
    /// the clock, cleared when a line is handed out.
    idle: Option<Instant>,
}

impl Deadlines {
    pub(crate) fn new(first: Instant, first_timeout: Duration, idle_timeout: Duration) -> Self {
        Self {
            first,
            first_timeout,
            idle_timeout,
            started: false,
            idle: None,
        }
    }

    /// A line (or event) was handed out: the next wait is an idle one,
    /// measured from its own start.
    pub(crate) fn delivered(&mut self) {
        self.started = true;
        self.idle = None;
    }

    pub(crate) fn started(&self) -> bool {
        self.started
    }

    /// `body`'s next frame (`None` at its end). A frame hyper already holds
    /// is taken without reading the clock or arming a timer (one line a
    /// frame at saturation, ADR 0025); only a wait starts (or goes on with)
    /// the deadline, and [`OllamaError::Timeout`] (`what` = `"first token"`
    /// or `"idle"`) ends a wait past it. Cancel-safe.
    pub(crate) async fn next_frame(
        &mut self,
        body: &mut DrivenBody,
    ) -> Result<Option<FrameResult>, OllamaError> {
        let ready = std::future::poll_fn(|cx| Poll::Ready(body.poll_frame(cx))).await;
        if let Poll::Ready(frame) = ready {
            return Ok(frame);
        }
        let (what, deadline, after) = if self.started {
            let idle = self.idle_timeout;
            let deadline = *self.idle.get_or_insert_with(|| Instant::now() + idle);
            ("idle", deadline, idle)
        } else {
            ("first token", self.first, self.first_timeout)
        };
        let frame = std::future::poll_fn(|cx| body.poll_frame(cx));
        tokio::time::timeout_at(deadline, frame)
            .await
            .map_err(|_| OllamaError::Timeout { what, after })
    }
}
