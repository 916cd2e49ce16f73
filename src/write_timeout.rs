//! A byte stream whose writes time out: a client that stops reading (so
//! the gateway's writes stop making progress) is cut off after
//! `[server] write_timeout_secs` instead of holding its connection, its
//! buffers and its per-IP slot forever. hyper's HTTP/1 server has a header
//! read timeout but none for writes; wrapping the socket covers HTTP
//! responses and, after an upgrade, WebSocket frames alike.
//!
//! The timer runs only while a write, flush or shutdown is pending and
//! restarts whenever one completes, so a slow but steady reader is fine.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `inner` with a timeout on every stalled write.
pub struct WriteTimeout<T> {
    inner: T,
    timeout: Duration,
    /// Armed while a write is pending.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteTimeout<T> {
    pub fn new(inner: T, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            timer: None,
        }
    }

    /// Pass `res` on; when it is pending, fail once the timer ran out.
    fn guard<R>(&mut self, res: Poll<io::Result<R>>, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if res.is_ready() {
            self.timer = None;
            return res;
        }
        let timeout = self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.timer = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client took nothing for {} s", timeout.as_secs()),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(res, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(res, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(res, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.guard(res, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_stalled_write_fails_after_the_timeout_a_moving_one_does_not() {
        let timeout = Duration::from_millis(300);
        // A pipe with a 16-byte buffer that nobody reads.
        let (a, _b) = tokio::io::duplex(16);
        let mut w = WriteTimeout::new(a, timeout);
        w.write_all(&[0; 16]).await.unwrap();
        let t = std::time::Instant::now();
        let e = w.write_all(&[0; 16]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(t.elapsed() >= timeout && t.elapsed() < Duration::from_secs(5));
        // A reader that keeps taking bytes, each within the timeout, for
        // longer than the timeout in all.
        let (a, mut b) = tokio::io::duplex(16);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let mut n = 0;
            while n < 64 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                n += b.read(&mut buf).await.unwrap();
            }
        });
        let mut w = WriteTimeout::new(a, timeout);
        w.write_all(&[0; 64]).await.unwrap();
        reader.await.unwrap();
    }
}
