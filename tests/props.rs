//! Property-based fuzzing (proptest, stable Rust) of every parser that
//! meets untrusted input: client messages, Ollama's NDJSON stream, the token
//! frame encoder, the config loader and the token check.

use std::path::Path;

use proptest::prelude::*;
use tars::ollama::{parse_chat_line, ChatLine, NdjsonSplitter};
use tars::ws::protocol::{parse_client_message, ClientMessage, MessageError};
use tars::ws::token_frame::TokenEncoder;

/// JSON-ish text: mostly valid shapes with random values, plus garbage.
fn jsonish() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("null".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("true".to_string()),
    ];
    let key = prop_oneof![
        Just("type"),
        Just("content"),
        Just("conversation_id"),
        Just("model"),
        Just("system"),
        Just("options"),
        Just("temperature"),
        Just("max_tokens"),
        Just("x"),
    ];
    let typ = prop_oneof![
        Just("chat"),
        Just("cancel"),
        Just("ping"),
        Just("pong"),
        Just("other"),
        Just("")
    ];
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        (typ, proptest::collection::vec((key, value), 0..6)).prop_map(|(t, kvs)| {
            let mut s = format!("{{\"type\":\"{t}\"");
            for (k, v) in kvs {
                s.push_str(&format!(",\"{k}\":{v}"));
            }
            s.push('}');
            s
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn client_parser_yields_a_message_or_an_invalid_message_error(text in jsonish()) {
        match parse_client_message(text.as_bytes(), 1024) {
            Ok(ClientMessage::Chat(c)) => {
                prop_assert!(!c.content.trim().is_empty() && c.content.len() <= 1024);
            }
            Ok(_) => {}
            Err(e) => {
                // Every refusal has a message for the error frame.
                prop_assert!(!e.to_string().is_empty());
                let _: MessageError = e;
            }
        }
    }

    #[test]
    fn client_parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_client_message(&bytes, 64);
    }

    #[test]
    fn any_chunking_of_an_ndjson_stream_gives_the_same_lines(
        lines in proptest::collection::vec("[^\n\r]{1,40}", 1..20),
        cuts in proptest::collection::vec(1usize..50, 1..40),
    ) {
        let stream: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let bytes = stream.as_bytes();
        let mut s = NdjsonSplitter::new(1 << 20);
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < bytes.len() {
            let n = cuts[i % cuts.len()].min(bytes.len() - pos);
            s.push(&bytes[pos..pos + n]);
            pos += n;
            i += 1;
            while let Some(l) = s.next_line().unwrap() {
                got.push(l.to_vec());
            }
        }
        while let Some(l) = s.finish().unwrap() {
            got.push(l.to_vec());
        }
        let want: Vec<Vec<u8>> = lines
            .iter()
            .map(|l| l.trim_end_matches('\r').as_bytes().to_vec())
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .collect();
        let got: Vec<Vec<u8>> = got.into_iter().filter(|l| !l.iter().all(u8::is_ascii_whitespace)).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn token_text_round_trips_byte_exact_through_line_and_frame(text in any::<String>(), seq in any::<u64>()) {
        let line = serde_json::json!({
            "model": "m", "created_at": "2025-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": text}, "done": false
        })
        .to_string();
        let parsed = parse_chat_line(line.as_bytes()).unwrap();
        let ChatLine::Content { content, .. } = parsed else {
            return Err(TestCaseError::fail("not a content line"));
        };
        let mut enc = TokenEncoder::new(Some("conv"));
        let frame = enc.encode("token", content.get(), seq, time::OffsetDateTime::now_utc());
        let v: serde_json::Value = serde_json::from_slice(&frame).unwrap();
        prop_assert_eq!(v["token"].as_str().unwrap(), text.as_str());
        prop_assert_eq!(v["seq"].as_u64().unwrap(), seq);
    }

    #[test]
    fn ollama_line_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_chat_line(&bytes);
    }

    #[test]
    fn config_loader_never_panics_on_any_toml(text in toml_ish()) {
        let _ = tars::config::from_toml_str(&text, Some(Path::new("/nonexistent/fuzz.toml")));
    }
}

/// TOML-ish text: real sections and keys with random values, plus garbage.
fn toml_ish() -> impl Strategy<Value = String> {
    let section = prop_oneof![
        Just("server"),
        Just("tls"),
        Just("cors"),
        Just("log"),
        Just("auth"),
        Just("websocket"),
        Just("ollama"),
        Just("limits"),
        Just("bogus"),
    ];
    let key = prop_oneof![
        Just("listen"),
        Just("enabled"),
        Just("origins"),
        Just("level"),
        Just("secret"),
        Just("max_connections"),
        Just("host"),
        Just("model"),
        Just("temperature"),
        Just("retries"),
        Just("timeout_secs"),
        Just("chat_per_minute"),
        Just("algorithm"),
        Just("watch_interval_secs"),
        Just("file"),
        Just("x"),
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<String>().prop_map(|s| format!("{s:?}")),
        Just("true".to_string()),
        Just("[\"a\", 1]".to_string()),
        Just("{ a = 1 }".to_string()),
        Just("\"0.0.0.0:99999\"".to_string()),
    ];
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(
            (section, proptest::collection::vec((key, value), 0..4)),
            0..5
        )
        .prop_map(|secs| {
            let mut s = String::new();
            for (name, kvs) in secs {
                s.push_str(&format!("[{name}]\n"));
                for (k, v) in kvs {
                    s.push_str(&format!("{k} = {v}\n"));
                }
            }
            s
        }),
    ]
}

#[test]
fn token_check_never_panics_on_any_input() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tars::config::from_toml_str(
        "[tls]\nenabled = false\n[auth]\nsecret = \"0123456789abcdef0123456789abcdef01234567\"\n",
        Some(&dir.path().join("c.toml")),
    )
    .unwrap();
    let auth = tars::auth::Auth::new(&cfg).unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 3000,
        ..ProptestConfig::default()
    });
    let token = prop_oneof![
        any::<String>(),
        // Three base64url-ish parts, the shape of a JWT.
        (
            "[A-Za-z0-9_-]{0,60}",
            "[A-Za-z0-9_-]{0,120}",
            "[A-Za-z0-9_-]{0,60}"
        )
            .prop_map(|(a, b, c)| format!("{a}.{b}.{c}")),
        ("[A-Za-z0-9_-]{0,40}", any::<String>())
            .prop_map(|(a, b)| format!("eyJhbGciOiJIUzI1NiJ9.{a}.{b}")),
    ];
    runner
        .run(&token, |t| {
            prop_assert!(auth.verify_access(&t).is_err());
            Ok(())
        })
        .unwrap();
}
