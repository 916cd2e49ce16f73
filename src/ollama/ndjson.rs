//! Incremental NDJSON splitting: Ollama's response body arrives in arbitrary
//! chunks; [`NdjsonSplitter`] turns them into complete lines.
//!
//! A line may span chunks and a chunk may hold many lines. The splitter keeps
//! one `BytesMut` buffer for the whole stream: a chunk is appended, lines are
//! found with `memchr` and handed out as slices of the buffer (no allocation
//! per line), and the bytes of a line handed out are dropped lazily on the
//! next call. A line longer than the cap is an error, so memory per stream
//! stays bounded by the cap plus one chunk.

use std::ops::Range;

use bytes::{Buf, BytesMut};

/// A line (or the unterminated tail of the buffer) exceeds the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a line of the stream is longer than {limit} bytes (at least {len} bytes)")]
pub struct LineTooLong {
    /// How long the line was known to be when the cap was hit.
    pub len: usize,
    /// The cap.
    pub limit: usize,
}

/// Splits a byte stream into `\n`-terminated lines, incrementally.
#[derive(Debug)]
pub struct NdjsonSplitter {
    buf: BytesMut,
    /// Bytes at the front of `buf` that belong to lines already handed out;
    /// dropped at the next call, when the caller's borrow has ended.
    consumed: usize,
    /// Bytes of `buf` (after `consumed`) already searched for a newline in
    /// vain, so a long line arriving in many small chunks is scanned once.
    scanned: usize,
    /// The longest line accepted, without its `\n`.
    max_line: usize,
}

impl NdjsonSplitter {
    /// A splitter refusing lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(max_line.clamp(64, 8 * 1024)),
            consumed: 0,
            scanned: 0,
            max_line,
        }
    }

    /// Append one chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete line without its `\n` (nor a `\r` before it), or
    /// `None` when more input is needed. Blank lines are skipped.
    pub fn next_line(&mut self) -> Result<Option<&[u8]>, LineTooLong> {
        Ok(self.next_range()?.map(|r| &self.buf[r]))
    }

    /// Like [`next_line`](Self::next_line), but the position of the line in
    /// the buffer; read it with [`slice`](Self::slice). Lets an async caller
    /// loop without holding a borrow across awaits.
    pub fn next_range(&mut self) -> Result<Option<Range<usize>>, LineTooLong> {
        loop {
            self.compact();
            let Some(i) = memchr::memchr(b'\n', &self.buf[self.scanned..]) else {
                self.scanned = self.buf.len();
                if self.buf.len() > self.max_line {
                    return Err(self.too_long(self.buf.len()));
                }
                return Ok(None);
            };
            let newline = self.scanned + i;
            self.consumed = newline + 1;
            self.scanned = 0;
            let end = trim_cr(&self.buf, newline);
            if end > self.max_line {
                return Err(self.too_long(end));
            }
            if !is_blank(&self.buf[..end]) {
                return Ok(Some(0..end));
            }
        }
    }

    /// At the end of the body: the last line if it had no trailing `\n`.
    pub fn finish(&mut self) -> Result<Option<&[u8]>, LineTooLong> {
        Ok(self.finish_range()?.map(|r| &self.buf[r]))
    }

    /// [`finish`](Self::finish) as a range, see [`next_range`](Self::next_range).
    pub fn finish_range(&mut self) -> Result<Option<Range<usize>>, LineTooLong> {
        self.compact();
        let len = self.buf.len();
        self.consumed = len;
        self.scanned = 0;
        let end = if len > 0 && self.buf[len - 1] == b'\r' {
            len - 1
        } else {
            len
        };
        if end > self.max_line {
            return Err(self.too_long(end));
        }
        Ok((!is_blank(&self.buf[..end])).then_some(0..end))
    }

    /// The bytes at `range`, as returned by the `*_range` methods.
    pub fn slice(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Bytes held that are not yet handed out as lines.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.consumed
    }

    fn compact(&mut self) {
        if self.consumed > 0 {
            self.buf.advance(self.consumed);
            self.consumed = 0;
        }
    }

    fn too_long(&self, len: usize) -> LineTooLong {
        LineTooLong {
            len,
            limit: self.max_line,
        }
    }
}

fn trim_cr(buf: &[u8], newline: usize) -> usize {
    if newline > 0 && buf[newline - 1] == b'\r' {
        newline - 1
    } else {
        newline
    }
}

/// Empty or whitespace only. A JSON line starts with `{`, so this stops at
/// the first byte of every real line.
fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(chunks: &[&[u8]], max: usize) -> Result<Vec<String>, LineTooLong> {
        let mut s = NdjsonSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c);
            while let Some(l) = s.next_line()? {
                out.push(String::from_utf8(l.to_vec()).unwrap());
            }
        }
        if let Some(l) = s.finish()? {
            out.push(String::from_utf8(l.to_vec()).unwrap());
        }
        Ok(out)
    }

    const BODY: &[u8] = b"{\"a\":1}\n{\"b\":\"x\\ny\"}\n\n{\"c\":[1,2]}\r\n{\"d\":\"\xc3\xa9\xf0\x9f\x98\x80\"}\n{\"e\":0}";

    fn expected() -> Vec<String> {
        vec![
            "{\"a\":1}".into(),
            "{\"b\":\"x\\ny\"}".into(),
            "{\"c\":[1,2]}".into(),
            "{\"d\":\"é😀\"}".into(),
            "{\"e\":0}".into(),
        ]
    }

    #[test]
    fn whole_body_in_one_chunk() {
        assert_eq!(split_all(&[BODY], 1024).unwrap(), expected());
    }

    #[test]
    fn every_single_split_point() {
        for i in 0..=BODY.len() {
            let (a, b) = BODY.split_at(i);
            assert_eq!(
                split_all(&[a, b], 1024).unwrap(),
                expected(),
                "split at {i}"
            );
        }
    }

    #[test]
    fn every_pair_of_split_points() {
        for i in 0..=BODY.len() {
            for j in i..=BODY.len() {
                let chunks = [&BODY[..i], &BODY[i..j], &BODY[j..]];
                assert_eq!(split_all(&chunks, 1024).unwrap(), expected(), "{i} {j}");
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        let chunks: Vec<&[u8]> = BODY.chunks(1).collect();
        assert_eq!(split_all(&chunks, 1024).unwrap(), expected());
    }

    #[test]
    fn blank_lines_and_trailing_newline_only() {
        assert_eq!(
            split_all(&[b"\n\n  \n\r\n"], 16).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(split_all(&[b"{}\n"], 16).unwrap(), vec!["{}".to_string()]);
    }

    #[test]
    fn line_at_the_cap_passes_one_over_fails() {
        let ok = format!("{}\n", "x".repeat(10));
        assert_eq!(split_all(&[ok.as_bytes()], 10).unwrap().len(), 1);
        let bad = format!("{}\n", "x".repeat(11));
        let e = split_all(&[bad.as_bytes()], 10).unwrap_err();
        assert_eq!(e, LineTooLong { len: 11, limit: 10 });
    }

    #[test]
    fn unterminated_line_over_the_cap_fails_early() {
        let mut s = NdjsonSplitter::new(10);
        s.push(b"{\"a\":");
        assert_eq!(s.next_line(), Ok(None));
        s.push(b"\"long long\"");
        assert!(s.next_line().is_err());
    }

    #[test]
    fn unterminated_tail_over_the_cap_fails_at_finish() {
        let mut s = NdjsonSplitter::new(4);
        s.push(b"abc");
        assert_eq!(s.next_line(), Ok(None));
        s.push(b"de");
        assert!(s.next_line().is_err());
        assert!(s.finish().is_err());
    }

    #[test]
    fn buffer_is_reused_not_grown() {
        let mut s = NdjsonSplitter::new(1 << 20);
        let line = b"{\"message\":{\"content\":\"hello\"},\"done\":false}\n";
        for _ in 0..10_000 {
            s.push(line);
            assert!(s.next_line().unwrap().is_some());
        }
        assert_eq!(s.buffered(), 0);
        assert!(s.buf.capacity() <= 8 * 1024, "{}", s.buf.capacity());
    }

    #[test]
    fn long_line_in_small_chunks() {
        let mut s = NdjsonSplitter::new(1 << 20);
        let body = format!("{{\"x\":\"{}\"}}\n", "y".repeat(100_000));
        for c in body.as_bytes().chunks(7) {
            s.push(c);
            if let Some(l) = s.next_line().unwrap() {
                assert_eq!(l.len(), body.len() - 1);
            }
        }
        assert_eq!(s.buffered(), 0);
    }
}
