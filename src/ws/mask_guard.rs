//! RFC 6455 §5.1: a server must close the connection when a client frame is
//! not masked. fastwebsockets unmasks what is masked but keeps the mask bit
//! private and accepts unmasked frames, so this reader sits under it and
//! watches the frame headers go by: it follows header and payload lengths
//! only (no copying, no unmasking) and fails the read with
//! [`UnmaskedFrame`] when a header lacks the mask bit. The session maps that
//! to close code 1002.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

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
}

impl<R> MaskGuard<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            header: [0; 14],
            have: 0,
            need: 2,
            remaining: 0,
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

impl<R: AsyncRead + Unpin> AsyncRead for MaskGuard<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                match this.scan(&buf.filled()[before..]) {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err(e) => {
                        // A failed read must not report bytes.
                        buf.set_filled(before);
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)))
                    }
                }
            }
            other => other,
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
    async fn read_fails_with_a_recognisable_error() {
        use tokio::io::AsyncReadExt;
        let data = frame(false, 3);
        let mut g = MaskGuard::new(&data[..]);
        let mut out = Vec::new();
        let e = g.read_to_end(&mut out).await.unwrap_err();
        assert!(is_unmasked(&e));
    }
}
