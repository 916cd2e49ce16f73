//! The writing half of a session: one task owns the socket's raw write half
//! and drains a bounded queue of outgoing frames, so the generation, the
//! heartbeat, the reader's protocol replies and broadcast notices never
//! contend for the socket. The queue's bound is the backpressure: when a
//! client reads slowly the queue fills, the generation waits on it, and
//! Ollama is read no faster than the client takes tokens.
//!
//! Everything already queued when the writer wakes goes out together: the
//! frames are encoded into one buffer (up to [`BATCH_BYTES`]) and written
//! with one `write_all` and one `flush`, so under TLS a burst of tokens
//! costs one record set and one socket write instead of one per token. A
//! lone frame is never held back by a timer: batching only takes what is in
//! the queue (docs/adr/0011-coalesced-writes.md). A token that finds the
//! queue empty first yields once, so the tasks already ready to run (its own
//! generation among them) go first and what they queue shares the write
//! (docs/adr/0014-writer-yields-once.md).

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::debug;

use crate::metrics::Metrics;

/// A batch stops taking queued frames once it holds this many bytes; the
/// rest go out in the next write.
pub const BATCH_BYTES: usize = 64 * 1024;

/// A buffer that grew past this (one very large frame) is given back after
/// its write instead of being kept for the next batch.
const KEEP_BYTES: usize = 2 * BATCH_BYTES;

/// RFC 6455 opcodes the server sends.
const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PONG: u8 = 0xA;

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

/// Append one final, unmasked (server-to-client) frame to `buf`: the RFC 6455
/// §5.2 header (2, 4 or 10 bytes) followed by the payload, given as parts
/// that are written back to back.
pub fn encode_frame(buf: &mut BytesMut, opcode: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    buf.reserve(10 + len);
    buf.put_u8(0x80 | (opcode & 0x0F));
    if len < 126 {
        buf.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        buf.put_u8(126);
        buf.put_u16(len as u16);
    } else {
        buf.put_u8(127);
        buf.put_u64(len as u64);
    }
    for p in parts {
        buf.put_slice(p);
    }
}

/// Encode `out` into `buf`; token read instants go to `delays`. Returns
/// whether it was a close frame (the last thing the writer sends).
fn encode(buf: &mut BytesMut, delays: &mut Vec<Instant>, out: Out) -> bool {
    match out {
        Out::Text(b) => encode_frame(buf, OP_TEXT, &[&b]),
        Out::Token(b, read_at) => {
            delays.push(read_at);
            encode_frame(buf, OP_TEXT, &[&b]);
        }
        Out::Pong(b) => encode_frame(buf, OP_PONG, &[&b]),
        Out::Close(code, reason) => {
            encode_frame(buf, OP_CLOSE, &[&code.to_be_bytes(), reason.as_bytes()]);
            return true;
        }
        Out::CloseRaw(b) => {
            encode_frame(buf, OP_CLOSE, &[&b]);
            return true;
        }
    }
    false
}

/// Drain `rx` into `io` (the socket's write half, after the handshake)
/// until a close frame is written, the queue closes (every sender dropped:
/// the session and its generation ended; queued frames are written first),
/// or a write fails or stalls past `write_timeout`. Each wake-up writes
/// everything queued at that moment (up to [`BATCH_BYTES`]) with one write
/// and one flush. Every `heartbeat` the writer also sends the protocol's
/// JSON `ping` (the heartbeat lives here so a session costs one task fewer);
/// a heartbeat that finds the session idle since the previous one gives the
/// batch buffer back, so an idle session holds no write buffer.
pub async fn run<S: AsyncWrite + Unpin>(
    mut io: S,
    mut rx: mpsc::Receiver<Out>,
    write_timeout: Duration,
    heartbeat: Duration,
    metrics: &Metrics,
) -> WriterEnd {
    // Both allocate on first use only.
    let mut buf = BytesMut::new();
    let mut delays: Vec<Instant> = Vec::new();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut active = false;
    loop {
        let mut release = false;
        let first = tokio::select! {
            biased;
            m = rx.recv() => match m {
                Some(m) => {
                    active = true;
                    m
                }
                None => return WriterEnd::Drained,
            },
            _ = tick.tick() => {
                release = !active;
                active = false;
                metrics.ws_message(crate::metrics::Direction::Out, "ping");
                Out::Text(crate::ws::protocol::ping().into())
            }
        };
        // A token that finds the queue empty lets the tasks already ready to
        // run go first (one scheduler pass, no timer): under load the
        // generation queues the tokens it has meanwhile and they share this
        // write; on an idle machine the pass costs microseconds.
        if matches!(first, Out::Token(..)) && rx.is_empty() {
            tokio::task::yield_now().await;
        }
        let mut closed = encode(&mut buf, &mut delays, first);
        while !closed && buf.len() < BATCH_BYTES {
            match rx.try_recv() {
                Ok(out) => closed = encode(&mut buf, &mut delays, out),
                Err(_) => break,
            }
        }
        let res = tokio::time::timeout(write_timeout, async {
            io.write_all(&buf).await?;
            io.flush().await
        })
        .await;
        match res {
            Ok(Ok(())) => {
                // One clock read a batch: its frames left together.
                if !delays.is_empty() {
                    let now = Instant::now();
                    for at in delays.drain(..) {
                        metrics
                            .token_added_delay
                            .observe(now.saturating_duration_since(at).as_secs_f64());
                    }
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
        buf.clear();
        if release || buf.capacity() > KEEP_BYTES {
            buf = BytesMut::new();
            delays = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(len: usize) -> Vec<u8> {
        let mut b = BytesMut::new();
        encode_frame(&mut b, OP_TEXT, &[&vec![b'x'; len]]);
        b[..b.len() - len].to_vec()
    }

    #[test]
    fn headers_use_the_shortest_length_form() {
        assert_eq!(head(0), [0x81, 0]);
        assert_eq!(head(125), [0x81, 125]);
        assert_eq!(head(126), [0x81, 126, 0, 126]);
        assert_eq!(head(65_535), [0x81, 126, 0xFF, 0xFF]);
        assert_eq!(head(65_536), [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn close_carries_code_then_reason() {
        let mut b = BytesMut::new();
        let mut d = Vec::new();
        assert!(encode(&mut b, &mut d, Out::Close(1001, "bye".into())));
        assert_eq!(&b[..], [0x88, 5, 0x03, 0xE9, b'b', b'y', b'e']);
        b.clear();
        assert!(!encode(&mut b, &mut d, Out::Pong(Bytes::from_static(b"p"))));
        assert_eq!(&b[..], [0x8A, 1, b'p']);
    }
}
