//! The session writer over a real loopback TCP socket: frames queued before
//! it wakes leave in far fewer socket writes than frames (coalescing), a
//! lone token leaves at once (no batching delay), and a close frame ends
//! the writer. The server side's write half is wrapped to count the
//! `poll_write`/`poll_write_vectored` calls that reach the socket; the
//! client decodes the bytes with fastwebsockets, an independent decoder.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fastwebsockets::{OpCode, Role, WebSocket};
use tars::metrics::Metrics;
use tars::ws::writer::{self, Out, WriterEnd};
use tokio::io::AsyncWrite;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Counts the write calls that the socket accepted.
struct Counting<W> {
    inner: W,
    writes: Arc<AtomicUsize>,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counting<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(_))) {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(_))) {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connected pair: the server's counted write half and a WebSocket client.
async fn pair() -> (
    Counting<tokio::net::tcp::OwnedWriteHalf>,
    tokio::net::tcp::OwnedReadHalf,
    Arc<AtomicUsize>,
    WebSocket<TcpStream>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (server, _) = accepted.unwrap();
    let (read, write) = server.into_split();
    let writes = Arc::new(AtomicUsize::new(0));
    let counted = Counting {
        inner: write,
        writes: writes.clone(),
    };
    let ws = WebSocket::after_handshake(client.unwrap(), Role::Client);
    (counted, read, writes, ws)
}

fn token(i: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"type":"token","content":"word {i} ","conversation_id":null,"timestamp":"2026-01-01T00:00:00Z"}}"#
    ))
}

async fn next_text(ws: &mut WebSocket<TcpStream>) -> (OpCode, Vec<u8>) {
    let f = tokio::time::timeout(Duration::from_secs(5), ws.read_frame())
        .await
        .expect("a frame within 5 s")
        .expect("a valid frame");
    assert!(f.fin, "every server frame is final");
    (f.opcode, f.payload.to_vec())
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn a_queued_burst_leaves_in_a_few_writes_in_order() {
    let (io, _read, writes, mut client) = pair().await;
    let (tx, rx) = mpsc::channel(128);
    for i in 0..100 {
        tx.try_send(Out::Token(token(i), Instant::now())).unwrap();
    }
    drop(tx);
    let metrics = Metrics::new();
    let end = writer::run(io, rx, Duration::from_secs(5), HOUR, &metrics).await;
    assert_eq!(end, WriterEnd::Drained);
    let n = writes.load(Ordering::SeqCst);
    assert!(
        (1..=5).contains(&n),
        "100 queued frames took {n} socket writes"
    );
    for i in 0..100 {
        let (op, payload) = next_text(&mut client).await;
        assert_eq!(op, OpCode::Text);
        assert_eq!(payload, token(i).to_vec(), "frame {i}");
    }
    let text = metrics.render_text();
    assert!(
        text.contains("token_added_delay_seconds_count 100"),
        "the token delay is recorded once per token:\n{text}"
    );
}

#[tokio::test]
async fn a_burst_larger_than_a_batch_is_split_and_complete() {
    let (io, _read, writes, mut client) = pair().await;
    let (tx, rx) = mpsc::channel(2048);
    // ~100 bytes a frame: ~200 KiB, more than three batches.
    for i in 0..2000 {
        tx.try_send(Out::Token(token(i), Instant::now())).unwrap();
    }
    drop(tx);
    let metrics = Metrics::new();
    let reader = tokio::spawn(async move {
        for i in 0..2000 {
            let (op, payload) = next_text(&mut client).await;
            assert_eq!(op, OpCode::Text);
            assert_eq!(payload, token(i).to_vec(), "frame {i}");
        }
    });
    let end = writer::run(io, rx, Duration::from_secs(5), HOUR, &metrics).await;
    assert_eq!(end, WriterEnd::Drained);
    reader.await.unwrap();
    let n = writes.load(Ordering::SeqCst);
    assert!(
        (3..=40).contains(&n),
        "2000 queued frames (~200 KiB) took {n} socket writes"
    );
}

#[tokio::test]
async fn a_lone_token_is_written_at_once() {
    let (io, _read, writes, mut client) = pair().await;
    let (tx, rx) = mpsc::channel(16);
    let writer = tokio::spawn(async move {
        let metrics = Metrics::new();
        writer::run(io, rx, Duration::from_secs(5), HOUR, &metrics).await
    });
    for i in 0..3 {
        let before = writes.load(Ordering::SeqCst);
        let sent = Instant::now();
        tx.send(Out::Token(token(i), Instant::now())).await.unwrap();
        // Nothing else is queued: the frame must reach the socket by itself.
        let deadline = Instant::now() + Duration::from_secs(2);
        while writes.load(Ordering::SeqCst) == before {
            assert!(Instant::now() < deadline, "token {i} was held back");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (op, payload) = next_text(&mut client).await;
        assert_eq!((op, payload), (OpCode::Text, token(i).to_vec()));
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "token {i} took {:?}",
            sent.elapsed()
        );
    }
    drop(tx);
    assert_eq!(writer.await.unwrap(), WriterEnd::Drained);
}

#[tokio::test]
async fn a_close_frame_goes_out_with_the_frames_before_it_and_ends_the_writer() {
    let (io, _read, _writes, mut client) = pair().await;
    let (tx, rx) = mpsc::channel(16);
    tx.try_send(Out::Token(token(0), Instant::now())).unwrap();
    tx.try_send(Out::Pong(Bytes::from_static(b"hi"))).unwrap();
    tx.try_send(Out::Close(1001, "server shutting down".into()))
        .unwrap();
    tx.try_send(Out::Token(token(1), Instant::now())).unwrap();
    let metrics = Metrics::new();
    let end = writer::run(io, rx, Duration::from_secs(5), HOUR, &metrics).await;
    assert_eq!(end, WriterEnd::Closed);
    assert_eq!(
        next_text(&mut client).await,
        (OpCode::Text, token(0).to_vec())
    );
    assert_eq!(next_text(&mut client).await, (OpCode::Pong, b"hi".to_vec()));
    let (op, payload) = next_text(&mut client).await;
    assert_eq!(op, OpCode::Close);
    assert_eq!(&payload[..2], 1001u16.to_be_bytes());
    assert_eq!(&payload[2..], b"server shutting down");
    drop(tx);
}
