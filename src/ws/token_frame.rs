//! The hot path: one Ollama content string → one `token` frame payload.
//!
//! Ollama's line already carries the token as a JSON string literal, so the
//! encoder copies that literal verbatim (escapes included) into the frame
//! instead of unescaping and re-escaping it: the text a client decodes is
//! byte-for-byte what Ollama generated. Frames are written into a
//! [`BytesMut`] arena and split off as [`Bytes`], so a generation allocates
//! once per arena block (8 KiB, dozens of tokens), not once per token.
//! The timestamp's date and time of day are formatted once per second and
//! only the microseconds per token (formatting was ~5 % of the gateway's CPU
//! at saturation).

use bytes::{BufMut, Bytes, BytesMut};

/// Arena block size; a frame is typically 90-150 bytes.
const ARENA: usize = 8 * 1024;

/// Per-generation encoder state: the arena and the parts of the frame that
/// do not change between tokens.
pub struct TokenEncoder {
    arena: BytesMut,
    /// `,"conversation_id":<json>,"timestamp":"` precomputed.
    middle: Vec<u8>,
    /// `2025-11-07T12:00:01.` of the second in `sec`.
    ts: Vec<u8>,
    /// The UNIX second `ts` holds (`i64::MIN`: none yet).
    sec: i64,
}

impl TokenEncoder {
    /// `conversation_id` is written as a JSON string, or `null` when absent.
    pub fn new(conversation_id: Option<&str>) -> Self {
        let mut middle = Vec::with_capacity(64);
        middle.extend_from_slice(b",\"conversation_id\":");
        match conversation_id {
            Some(id) => serde_json::to_writer(&mut middle, id).expect("writing to a Vec"),
            None => middle.extend_from_slice(b"null"),
        }
        middle.extend_from_slice(b",\"timestamp\":\"");
        Self {
            arena: BytesMut::with_capacity(ARENA),
            middle,
            ts: Vec::with_capacity(32),
            sec: i64::MIN,
        }
    }

    /// Encode `{"type":KIND,"token":<raw>,"conversation_id":..,"timestamp":"..","seq":N}`.
    /// `raw` must be a JSON string literal (quotes included) as Ollama sent
    /// it; `kind` is `token` or `thinking`.
    pub fn encode(&mut self, kind: &str, raw: &str, seq: u64, now: time::OffsetDateTime) -> Bytes {
        // The cache is keyed by the UNIX second: one offset only.
        debug_assert!(now.offset().is_utc(), "token timestamps are UTC");
        let sec = now.unix_timestamp();
        if sec != self.sec {
            self.sec = sec;
            self.ts.clear();
            crate::response::write_rfc3339(&mut self.ts, now.replace_nanosecond(0).unwrap_or(now));
            // Keep `...:SS.`; the microseconds and `Z` are written per token.
            self.ts.truncate(self.ts.len().saturating_sub(7));
        }
        let len = 30 + kind.len() + raw.len() + self.middle.len() + self.ts.len() + 7 + 20;
        if self.arena.capacity() - self.arena.len() < len {
            self.arena.reserve(len.max(ARENA));
        }
        let a = &mut self.arena;
        a.put_slice(b"{\"type\":\"");
        a.put_slice(kind.as_bytes());
        a.put_slice(b"\",\"token\":");
        a.put_slice(raw.as_bytes());
        a.put_slice(&self.middle);
        a.put_slice(&self.ts);
        put_micros(a, now.microsecond());
        a.put_slice(b"Z\",\"seq\":");
        a.put_slice(itoa::Buffer::new().format(seq).as_bytes());
        a.put_u8(b'}');
        a.split().freeze()
    }
}

/// `us` (below 1,000,000) as six digits, zero-padded.
fn put_micros(a: &mut BytesMut, us: u32) {
    let mut d = [b'0'; 6];
    let mut v = us;
    for slot in d.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    a.put_slice(&d);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(b: &Bytes) -> serde_json::Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn frame_fields_and_byte_exact_text() {
        let mut enc = TokenEncoder::new(Some("conv-123"));
        let now = time::macros::datetime!(2025-11-07 12:00:01.045 UTC);
        let tricky = "quote \" backslash \\ newline \n tab \t emoji 🦀 <b>html</b> \u{0001}";
        let raw = serde_json::to_string(tricky).unwrap();
        let f = enc.encode("token", &raw, 7, now);
        let v = decode(&f);
        assert_eq!(v["type"], "token");
        assert_eq!(v["token"], tricky);
        assert_eq!(v["conversation_id"], "conv-123");
        assert_eq!(v["timestamp"], "2025-11-07T12:00:01.045000Z");
        assert_eq!(v["seq"], 7);
    }

    #[test]
    fn go_style_escapes_decode_to_the_same_text() {
        // Ollama is written in Go, whose encoder escapes <, > and & as \u003c...
        let mut enc = TokenEncoder::new(None);
        let f = enc.encode(
            "token",
            r#""\u003cb\u003e \u0026""#,
            1,
            time::OffsetDateTime::now_utc(),
        );
        let v = decode(&f);
        assert_eq!(v["token"], "<b> &");
        assert!(v["conversation_id"].is_null());
    }

    #[test]
    fn timestamps_across_seconds_match_the_formatter() {
        let mut enc = TokenEncoder::new(None);
        let base = time::macros::datetime!(2025-12-31 23:59:58.999_999 UTC);
        for step_us in [
            0u64,
            1,
            1_000,
            1_000_001,
            2_000_000,
            2_000_001,
            86_400_000_000,
        ] {
            let t = base + std::time::Duration::from_micros(step_us);
            let mut want = Vec::new();
            crate::response::write_rfc3339(&mut want, t);
            let f = enc.encode("token", "\"x\"", 1, t);
            assert_eq!(
                decode(&f)["timestamp"],
                std::str::from_utf8(&want).unwrap(),
                "at +{step_us} µs"
            );
        }
    }

    #[test]
    fn many_frames_share_arena_blocks() {
        let mut enc = TokenEncoder::new(Some("c"));
        let now = time::OffsetDateTime::now_utc();
        let frames: Vec<Bytes> = (0..1000u64)
            .map(|i| enc.encode("token", "\"tok\"", i, now))
            .collect();
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(decode(f)["seq"], i as u64);
        }
    }
}
