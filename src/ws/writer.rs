//! The writing half of a session: one task owns the WebSocket write half and
//! drains a bounded queue of outgoing frames, so the generation, the
//! heartbeat, the reader's protocol replies and broadcast notices never
//! contend for the socket. The queue's bound is the backpressure: when a
//! client reads slowly the queue fills, the generation waits on it, and
//! Ollama is read no faster than the client takes tokens.

use std::time::{Duration, Instant};

use bytes::Bytes;
use fastwebsockets::{Frame, Payload, WebSocketWrite};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tracing::debug;

use crate::metrics::Metrics;

/// One outgoing frame.
#[derive(Debug)]
pub enum Out {
    /// A JSON text frame.
    Text(Bytes),
    /// A token frame, with the instant its line was read from Ollama so the
    /// writer can record the gateway's own delay once it is on the wire.
    Token(Bytes, Instant),
    /// A WebSocket-level pong (answer to a protocol ping).
    Pong(Bytes),
    /// The close frame: written, then the writer stops.
    Close(u16, String),
    /// The echo of a client's close frame (payload as received).
    CloseRaw(Bytes),
}

/// How the writer ended.
#[derive(Debug, PartialEq, Eq)]
pub enum WriterEnd {
    /// A close frame went out.
    Closed,
    /// Every sender is gone.
    Drained,
    /// A write did not finish within the write timeout (a client that stopped reading).
    TimedOut,
    /// The socket failed.
    Failed,
}

/// Drain `rx` into `ws` until a close frame is written, the queue closes
/// (every sender dropped: the session and its generation ended; queued
/// frames are written first), or a write fails or stalls past
/// `write_timeout`. Frames available at once
/// are written back to back and flushed together. Every `heartbeat` the
/// writer also sends the protocol's JSON `ping` (the heartbeat lives here so
/// a session costs one task fewer).
pub async fn run<S: AsyncWrite + Unpin>(
    mut ws: WebSocketWrite<S>,
    mut rx: mpsc::Receiver<Out>,
    write_timeout: Duration,
    heartbeat: Duration,
    metrics: &Metrics,
) -> WriterEnd {
    // Grows only once tokens flow: an idle session holds no buffer here.
    let mut delays: Vec<Instant> = Vec::new();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            biased;
            m = rx.recv() => match m {
                Some(m) => m,
                None => return WriterEnd::Drained,
            },
            _ = tick.tick() => {
                metrics.ws_message(crate::metrics::Direction::Out, "ping");
                Out::Text(crate::ws::protocol::ping().into())
            }
        };
        let mut next = Some(first);
        let mut closed = false;
        let res = tokio::time::timeout(write_timeout, async {
            while let Some(out) = next.take() {
                let frame = match &out {
                    Out::Text(b) => Frame::text(Payload::Borrowed(b)),
                    Out::Token(b, read_at) => {
                        delays.push(*read_at);
                        Frame::text(Payload::Borrowed(b))
                    }
                    Out::Pong(b) => Frame::pong(Payload::Borrowed(b)),
                    Out::Close(code, reason) => {
                        closed = true;
                        Frame::close(*code, reason.as_bytes())
                    }
                    Out::CloseRaw(payload) => {
                        closed = true;
                        Frame::close_raw(Payload::Borrowed(payload))
                    }
                };
                ws.write_frame(frame).await?;
                if closed {
                    break;
                }
                next = rx.try_recv().ok();
            }
            ws.flush().await
        })
        .await;
        match res {
            Ok(Ok(())) => {
                for at in delays.drain(..) {
                    metrics
                        .token_added_delay
                        .observe(at.elapsed().as_secs_f64());
                }
                if closed {
                    return WriterEnd::Closed;
                }
            }
            Ok(Err(e)) => {
                debug!(error = %e, "websocket write failed");
                return WriterEnd::Failed;
            }
            Err(_) => return WriterEnd::TimedOut,
        }
    }
}
