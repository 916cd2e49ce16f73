//! The shape nearly every line of an answer has, recognised without a
//! general JSON parse (ADR 0025):
//!
//! `{"model":"…","created_at":"…","message":{"role":"assistant","content":"…"},"done":false}`
//!
//! (optionally with `,"images":null` after the content, as some Ollama
//! versions send). Only fixed bytes are matched here; the content's string
//! literal is still validated by serde_json, and the two skipped strings must
//! be free of escapes and control characters in a line that is valid UTF-8,
//! so every line this accepts is one the serde path of
//! [`super::parse_chat_line`]
//! would read as the same content line. Anything else (a thinking field,
//! `/api/generate`, the final line, an error, reordered or unknown keys,
//! whitespace) returns `None` and takes the serde path. At saturation the
//! serde path was ~17 % of the gateway's CPU.

use serde_json::value::RawValue;

const MODEL: &[u8] = br#"{"model":""#;
const CREATED: &[u8] = br#","created_at":""#;
const MESSAGE: &[u8] = br#","message":{"role":"assistant","content":"#;
const END: &[u8] = br#"},"done":false}"#;
const END_IMAGES: &[u8] = br#","images":null},"done":false}"#;

/// The content literal (quotes and escapes as sent) of a plain chat content
/// line, or `None` when `line` is not exactly that shape.
pub(super) fn content(line: &[u8]) -> Option<&RawValue> {
    let text = std::str::from_utf8(line).ok()?;
    let rest = line.strip_prefix(MODEL)?;
    let rest = plain_string_tail(rest)?;
    let rest = rest.strip_prefix(CREATED)?;
    let rest = plain_string_tail(rest)?;
    let rest = rest.strip_prefix(MESSAGE)?;
    let start = line.len() - rest.len();
    let len = literal_len(rest)?;
    let tail = &rest[len..];
    if tail != END && tail != END_IMAGES {
        return None;
    }
    // `start..start + len` begins and ends on a `"` (ASCII): char boundaries.
    serde_json::from_str::<&RawValue>(&text[start..start + len]).ok()
}

/// After the opening quote: the bytes after the closing quote, when the
/// string has no escape and no control character.
fn plain_string_tail(s: &[u8]) -> Option<&[u8]> {
    let end = memchr::memchr2(b'"', b'\\', s)?;
    if s[end] != b'"' || s[..end].iter().any(|&b| b < 0x20) {
        return None;
    }
    Some(&s[end + 1..])
}

/// The length of the string literal `s` starts with (both quotes
/// included), skipping escaped characters; its validity is serde's to judge.
fn literal_len(s: &[u8]) -> Option<usize> {
    if s.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', &s[i..])?;
        if s[i] == b'"' {
            return Some(i + 1);
        }
        i += 2;
        if i > s.len() {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast(l: &str) -> Option<String> {
        content(l.as_bytes()).map(|r| r.get().to_string())
    }

    #[test]
    fn ollama_lines_take_the_fast_path() {
        let l = r#"{"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00","message":{"role":"assistant","content":"The"},"done":false}"#;
        assert_eq!(fast(l).as_deref(), Some(r#""The""#));
        let l = r#"{"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00","message":{"role":"assistant","content":"a\"b\\c\n\u003c 😀","images":null},"done":false}"#;
        assert_eq!(fast(l).as_deref(), Some(r#""a\"b\\c\n\u003c 😀""#));
        let l = r#"{"model":"m","created_at":"t","message":{"role":"assistant","content":""},"done":false}"#;
        assert_eq!(fast(l).as_deref(), Some(r#""""#));
        // benches/hot_path.rs's LINE.
        let l = r#"{"model":"llama3.2","created_at":"2024-11-05T08:52:19.385406455Z","message":{"role":"assistant","content":" the"},"done":false}"#;
        assert_eq!(fast(l).as_deref(), Some(r#"" the""#));
    }

    #[test]
    fn everything_else_is_left_to_serde() {
        for l in [
            // Thinking, generate, final, error, other order, whitespace.
            r#"{"model":"m","created_at":"t","message":{"role":"assistant","content":"","thinking":"h"},"done":false}"#,
            r#"{"model":"m","created_at":"t","response":"x","done":false}"#,
            r#"{"model":"m","created_at":"t","message":{"role":"assistant","content":""},"done":true,"eval_count":3}"#,
            r#"{"error":"boom"}"#,
            r#"{"created_at":"t","model":"m","message":{"role":"assistant","content":"x"},"done":false}"#,
            r#"{"model": "m","created_at":"t","message":{"role":"assistant","content":"x"},"done":false}"#,
            // Escapes or control characters in the skipped strings.
            r#"{"model":"m\"","created_at":"t","message":{"role":"assistant","content":"x"},"done":false}"#,
            "{\"model\":\"m\t\",\"created_at\":\"t\",\"message\":{\"role\":\"assistant\",\"content\":\"x\"},\"done\":false}",
            // Invalid content literals: serde refuses them, so must this.
            r#"{"model":"m","created_at":"t","message":{"role":"assistant","content":"\x"},"done":false}"#,
            r#"{"model":"m","created_at":"t","message":{"role":"assistant","content":"\u12"},"done":false}"#,
            "{\"model\":\"m\",\"created_at\":\"t\",\"message\":{\"role\":\"assistant\",\"content\":\"a\nb\"},\"done\":false}",
            r#"{"model":"m","created_at":"t","message":{"role":"assistant","content":"x\"},"done":false}"#,
            r#"{"model":"m","created_at":"t","message":{"role":"assistant","content":"x\\"#,
            r#"{"model":"m","created_at":"t","message":{"role":"assistant","content":"x"},"done":false} "#,
        ] {
            assert_eq!(fast(l), None, "{l}");
        }
        let bad_utf8 = b"{\"model\":\"m\xff\",\"created_at\":\"t\",\"message\":{\"role\":\"assistant\",\"content\":\"x\"},\"done\":false}";
        assert!(content(bad_utf8).is_none());
    }

    /// `text` as a JSON string literal, each character escaped as `\uXXXX`
    /// (a surrogate pair beyond the BMP) where `escape` says so — the way
    /// Go's encoder writes `<`, `>`, `&`, U+2028 — and a lone surrogate
    /// appended when `lone` (serde accepts one in a raw value).
    fn go_literal(text: &str, escape: &[bool], lone: bool) -> String {
        let mut out = String::from("\"");
        for (i, c) in text.chars().enumerate() {
            if escape.get(i).copied().unwrap_or(false) {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            } else {
                let one = serde_json::to_string(&c.to_string()).unwrap();
                out.push_str(&one[1..one.len() - 1]);
            }
        }
        if lone {
            out.push_str("\\ud800");
        }
        out.push('"');
        out
    }

    #[test]
    fn go_literals_decode_to_their_text() {
        let lit = go_literal("<a😀\n", &[true, false, true, false], false);
        assert_eq!(lit, r#""\u003ca\ud83d\ude00\n""#);
        assert_eq!(serde_json::from_str::<String>(&lit).unwrap(), "<a😀\n");
        assert!(go_literal("x", &[], true).ends_with(r#"\ud800""#));
    }

    proptest::proptest! {
        /// Whatever the fast path accepts, the serde path reads as the same
        /// content line (and it accepts every line Ollama's encoder writes).
        #[test]
        fn agrees_with_serde(model in "\\PC{0,12}", text in "\\PC{0,24}|[\\x00-\\x7f]{0,24}",
                             escape in proptest::collection::vec(proptest::bool::ANY, 0..24),
                             lone in proptest::bool::weighted(0.1),
                             images in proptest::bool::ANY, cut in 0usize..200, flip in 0usize..200) {
            let lit = go_literal(&text, &escape, lone);
            let model_lit = serde_json::to_string(&model).unwrap();
            let line = format!(
                r#"{{"model":{model_lit},"created_at":"2025-01-01T00:00:00.1Z","message":{{"role":"assistant","content":{lit}{}}},"done":false}}"#,
                if images { r#","images":null"# } else { "" }
            );
            let plain = !model_lit[1..model_lit.len() - 1].contains('\\');
            proptest::prop_assert_eq!(fast(&line).is_some(), plain);
            // Damaged copies: truncated, or one byte changed.
            let mut damaged = vec![line.as_bytes()[..cut.min(line.len())].to_vec()];
            let mut flipped = line.as_bytes().to_vec();
            let at = flip % flipped.len();
            flipped[at] = flipped[at].wrapping_add(1);
            damaged.push(flipped);
            damaged.push(line.into_bytes());
            for l in damaged {
                if let Some(raw) = content(&l) {
                    match super::super::line::parse_with_serde(&l) {
                        Ok(super::super::line::ChatLine::Content { content, thinking: None }) => {
                            proptest::prop_assert_eq!(content.get(), raw.get());
                        }
                        other => proptest::prop_assert!(false, "serde disagrees: {:?}", other),
                    }
                }
            }
        }
    }
}
