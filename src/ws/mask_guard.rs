//! RFC 6455 §5.1: a server must close the connection when a client frame is
//! not masked. fastwebsockets unmasks what is masked but keeps the mask bit
//! private and accepts unmasked frames, so this reader sits under it and
//! watches the frame headers go by: it follows header and payload lengths
//! only (no copying, no unmasking) and fails the read with
//! [`UnmaskedFrame`] when a header lacks the mask bit. The session maps that
//! to close code 1002.
//!
//! It also keeps an idle session from holding a read buffer: reads never
//! run past the end of the current frame (so the frame reader above, built
//! per frame, is left with nothing buffered when the frame is done), and
//! [`MaskGuard::poll_first`] waits for the next frame's first byte into
//! this struct alone, before any frame reader (and its buffer) exists.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// The error a read fails with when the client sent an unmasked frame.
#[derive(Debug, thiserror::Error)]
#[error("client frame is not masked")]
pub struct UnmaskedFrame;

/// True when `e` is the [`UnmaskedFrame`] error.
pub fn is_unmasked(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<UnmaskedFrame>())
}

/// An [`AsyncRead`] that checks every client frame header for the mask bit.
pub struct MaskGuard<R> {
    inner: R,
    header: [u8; 14],
    /// Header bytes seen of the current frame.
    have: usize,
    /// Header length of the current frame (2 until the length code is known).
    need: usize,
    /// Payload bytes still to pass before the next header.
    remaining: u64,
    /// A frame's first byte taken by [`MaskGuard::poll_first`], handed out
    /// by the next read.
    peeked: Option<u8>,
}

impl<R> MaskGuard<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            header: [0; 14],
            have: 0,
            need: 2,
            remaining: 0,
            peeked: None,
        }
    }

    /// Bytes left of the current frame part: the rest of the header, or of
    /// the payload.
    fn part_left(&self) -> usize {
        if self.remaining > 0 {
            usize::try_from(self.remaining).unwrap_or(usize::MAX)
        } else {
            self.need - self.have
        }
    }

    /// Follow `bytes` through the frame structure.
    fn scan(&mut self, mut bytes: &[u8]) -> Result<(), UnmaskedFrame> {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let take = (bytes.len() as u64).min(self.remaining) as usize;
                self.remaining -= take as u64;
                bytes = &bytes[take..];
                continue;
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if self.have == 2 {
                if self.header[1] & 0x80 == 0 {
                    return Err(UnmaskedFrame);
                }
                let extended = match self.header[1] & 0x7f {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                self.need = 2 + extended + 4;
            }
            if self.have == self.need {
                let h = &self.header;
                self.remaining = match h[1] & 0x7f {
                    126 => u16::from_be_bytes([h[2], h[3]]) as u64,
                    127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
                    n => n as u64,
                };
                self.have = 0;
                self.need = 2;
            }
        }
        Ok(())
    }
}

impl<R: AsyncRead + Unpin> MaskGuard<R> {
    /// Wait until the next frame's first byte arrived, reading it into this
    /// struct (no buffer is held while waiting). `Ok(false)`: the stream
    /// ended. Call only between frames; the byte is handed out (and checked)
    /// by the next read.
    pub fn poll_first(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.peeked.is_some() {
            return Poll::Ready(Ok(true));
        }
        let mut one = [0u8; 1];
        let mut rb = ReadBuf::new(&mut one);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut rb))?;
        match *rb.filled() {
            [b] => {
                self.peeked = Some(b);
                Poll::Ready(Ok(true))
            }
            _ => Poll::Ready(Ok(false)),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for MaskGuard<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(b) = this.peeked.take() {
            buf.put_slice(&[b]);
        } else {
            // Never past the current frame part: what the reader above
            // gets is always the rest of one header or one payload.
            let limit = this.part_left().min(buf.remaining());
            let n = {
                let dst = buf.initialize_unfilled_to(limit);
                let mut part = ReadBuf::new(dst);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut part))?;
                part.filled().len()
            };
            buf.advance(n);
        }
        match this.scan(&buf.filled()[before..]) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => {
                // A failed read must not report bytes.
                buf.set_filled(before);
                Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(masked: bool, len: usize) -> Vec<u8> {
        let mut f = vec![0x81];
        let m = if masked { 0x80 } else { 0 };
        match len {
            0..=125 => f.push(m | len as u8),
            126..=65535 => {
                f.push(m | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(m | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    #[test]
    fn masked_frames_of_every_length_class_pass_in_any_chunking() {
        let mut stream = Vec::new();
        for len in [0, 1, 125, 126, 300, 65535, 65536, 70000] {
            stream.extend(frame(true, len));
        }
        for chunk in [1, 2, 3, 7, 13, 4096, stream.len()] {
            let mut g = MaskGuard::new(());
            for c in stream.chunks(chunk) {
                g.scan(c).unwrap();
            }
            assert_eq!((g.have, g.remaining), (0, 0), "chunk {chunk}");
        }
    }

    #[test]
    fn an_unmasked_frame_is_caught_after_masked_ones() {
        let mut stream = frame(true, 200);
        stream.extend(frame(false, 5));
        for chunk in [1, 5, stream.len()] {
            let mut g = MaskGuard::new(());
            let res: Result<(), UnmaskedFrame> = stream.chunks(chunk).try_for_each(|c| g.scan(c));
            assert!(res.is_err(), "chunk {chunk}");
        }
    }

    #[tokio::test]
    async fn reads_stop_at_each_frame_part_and_the_first_byte_waits_outside() {
        use tokio::io::AsyncReadExt;
        let mut data = frame(true, 300);
        data.extend(frame(true, 3));
        let mut g = MaskGuard::new(&data[..]);
        let mut buf = vec![0u8; 4096];
        // Header of frame 1 (first byte peeked, then the rest of the 8-byte
        // header), its payload, then frame 2 in the same parts.
        let mut sizes = Vec::new();
        assert!(std::future::poll_fn(|cx| g.poll_first(cx)).await.unwrap());
        loop {
            let n = g.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            sizes.push(n);
        }
        assert_eq!(sizes, [1, 1, 6, 300, 2, 4, 3]);
        let mut rest: &[u8] = &[];
        let mut g = MaskGuard::new(&mut rest);
        assert!(!std::future::poll_fn(|cx| g.poll_first(cx)).await.unwrap());
    }

    #[tokio::test]
    async fn read_fails_with_a_recognisable_error() {
        use tokio::io::AsyncReadExt;
        let data = frame(false, 3);
        let mut g = MaskGuard::new(&data[..]);
        let mut out = Vec::new();
        let e = g.read_to_end(&mut out).await.unwrap_err();
        assert!(is_unmasked(&e));
    }
}
