//! The OpenAI dialect's groundwork, over real sockets: the fake OpenAI
//! upstream (`tests/support/fake_openai.rs`) streams chats that the SSE
//! parser (`src/upstream/openai_sse.rs`) reads back byte-exact, in both
//! layouts (llama-cpp-python's and OpenAI's), cut into any chunks; errors,
//! truncation, disconnects and concurrency as the fake records them.

#[path = "support/fake_openai.rs"]
mod fake_openai;
#[path = "support/upstream_tls.rs"]
#[allow(dead_code)]
mod upstream_tls;

use std::time::{Duration, Instant};

use bytes::Bytes;
use fake_openai::{Behavior, Chunking, FakeOpenAi, Style};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tars::upstream::openai_sse::{error_message, SseError, SseEvent, SseParser};

/// Every network wait of these tests.
const STEP: Duration = Duration::from_secs(10);

/// A chat body as the gateway will send it.
fn chat_body(model: &str, user: &str, usage: bool) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": user}],
        "stream": true,
        "stream_options": {"include_usage": usage},
        "temperature": 0.7, "top_p": 0.9, "max_tokens": 64
    })
}

/// One HTTP/1.1 request on a new connection.
async fn request(
    url: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    key: Option<&str>,
) -> http::Response<Incoming> {
    let addr = url.strip_prefix("http://").unwrap();
    let tcp = tokio::time::timeout(STEP, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect timeout")
        .expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr)
        .header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = req.body(Full::new(Bytes::from(body))).unwrap();
    tokio::time::timeout(STEP, send.send_request(req))
        .await
        .expect("response head timeout")
        .unwrap()
}

/// What a stream said, owned.
#[derive(Debug, Default, PartialEq)]
struct Answer {
    /// The raw JSON literals of the deltas, as sent.
    raw: Vec<String>,
    text: String,
    reasoning: String,
    finish: Option<String>,
    usage: Option<(Option<u64>, Option<u64>)>,
    done: bool,
    error: Option<String>,
}

/// Read a streaming body through the parser; an error of the parser or the
/// body ends it.
async fn read_answer(resp: http::Response<Incoming>) -> Result<Answer, String> {
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = resp.into_body();
    let mut p = SseParser::new(64 * 1024);
    let mut a = Answer::default();
    loop {
        while let Some(ev) = p.next_event().map_err(|e| e.to_string())? {
            match ev {
                SseEvent::Delta { content } => {
                    a.text += &serde_json::from_str::<String>(content).unwrap();
                    a.raw.push(content.to_string());
                }
                SseEvent::Reasoning { content } => {
                    a.reasoning += &serde_json::from_str::<String>(content).unwrap()
                }
                SseEvent::Finish { reason } => a.finish = Some(reason),
                SseEvent::Usage {
                    completion_tokens,
                    prompt_tokens,
                } => a.usage = Some((completion_tokens, prompt_tokens)),
                SseEvent::Done => a.done = true,
                SseEvent::Error { message } => {
                    a.error = Some(message);
                    return Ok(a);
                }
            }
        }
        if a.done {
            return Ok(a);
        }
        match tokio::time::timeout(STEP, body.frame()).await {
            Err(_) => return Err("idle timeout".into()),
            Ok(None) => p.end(),
            Ok(Some(Err(e))) => return Err(format!("body: {e}")),
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    p.push(&d);
                }
            }
        }
    }
}

const TRICKY: [&str; 6] = [
    "quote \" backslash \\ ",
    "newline \n tab \t ",
    "é ü ñ 中文 ",
    "emoji 🦀😀 ",
    "<b>html</b> & \u{1} \u{2028}",
    "",
];

#[tokio::test]
async fn tricky_text_is_byte_exact_in_both_styles_and_any_chunking() {
    let fake = FakeOpenAi::start().await;
    let want: String = TRICKY.concat();
    for style in [Style::LlamaCppPython, Style::OpenAi, Style::OpenAiCrlf] {
        fake.set_style(style);
        for chunking in [
            Chunking::PerEvent,
            Chunking::Split(1),
            Chunking::Split(7),
            Chunking::Coalesced,
        ] {
            fake.set(Behavior::stream(TRICKY).chunking(chunking.clone()));
            let resp = request(
                &fake.url(),
                "POST",
                "/v1/chat/completions",
                Some(&chat_body("smollm2", "hi", true)),
                None,
            )
            .await;
            let a = read_answer(resp).await.unwrap();
            let ctx = format!("{style:?} {chunking:?}");
            assert_eq!(a.text, want, "{ctx}");
            // The empty token is not a delta.
            assert_eq!(a.raw.len(), 5, "{ctx}");
            assert_eq!(a.finish.as_deref(), Some("stop"), "{ctx}");
            // llama-cpp-python ignores `include_usage`.
            let usage = (style != Style::LlamaCppPython).then_some((Some(6), Some(12)));
            assert_eq!(a.usage, usage, "{ctx}");
            assert!(a.done && a.error.is_none(), "{ctx}");
            if style == Style::LlamaCppPython {
                assert!(a.raw.iter().all(|r| r.is_ascii()), "{ctx}: {:?}", a.raw);
                assert!(a.raw[3].contains(r"\ud83e\udd80"), "{ctx}: {}", a.raw[3]);
            } else {
                assert!(a.raw[3].contains('🦀'), "{ctx}: {}", a.raw[3]);
            }
        }
    }
}

/// The lines of an answer with `id` and `created` replaced and keep-alive
/// comments (`: ping - <time>` and its blank line, every 15 s) left out.
fn normalized(body: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(body).unwrap();
    let mut lines: Vec<&str> = Vec::new();
    for l in text.split('\n') {
        if l.is_empty() && lines.last().is_some_and(|p| p.starts_with(':')) {
            lines.pop();
        } else {
            lines.push(l);
        }
    }
    lines
        .into_iter()
        .map(|l| {
            let Some(json) = l.strip_prefix("data: {") else {
                return l.to_string();
            };
            let mut v = format!("data: {{{json}");
            for (key, end) in [("\"id\": \"", '"'), ("\"created\": ", ',')] {
                if let Some(i) = v.find(key) {
                    let from = i + key.len();
                    let to = from + v[from..].find(end).unwrap();
                    v.replace_range(from..to, "X");
                }
            }
            v
        })
        .collect()
}

#[tokio::test]
async fn llama_cpp_python_style_is_byte_exact_with_the_real_transcript() {
    let real: &[u8] = include_bytes!("data/openai_sse_smollm2.txt");
    let mut p = SseParser::new(64 * 1024);
    p.push(real);
    p.end();
    let mut tokens = Vec::new();
    while let Some(e) = p.next_event().unwrap() {
        if let SseEvent::Delta { content } = e {
            tokens.push(serde_json::from_str::<String>(content).unwrap());
        }
    }
    let fake = FakeOpenAi::start().await;
    fake.set(Behavior::stream(tokens));
    let resp = request(
        &fake.url(),
        "POST",
        "/v1/chat/completions",
        Some(&chat_body("smollm2", "hi", true)),
        None,
    )
    .await;
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let (got, want) = (normalized(&body), normalized(real));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "line {i}");
    }
    assert_eq!(got.len(), want.len());
}

#[tokio::test]
async fn echo_reasoning_and_no_usage_unless_asked() {
    let fake = FakeOpenAi::start().await;
    fake.set_style(Style::OpenAi);
    let resp = request(
        &fake.url(),
        "POST",
        "/v1/chat/completions",
        Some(&chat_body("smollm2", "say it back", false)),
        None,
    )
    .await;
    let a = read_answer(resp).await.unwrap();
    assert_eq!(a.text, "say it back");
    assert_eq!(a.usage, None);
    assert!(a.done);
    fake.set(
        Behavior::stream(["4"])
            .reasoning(["2+2", "=4"])
            .finish_reason("length"),
    );
    let resp = request(
        &fake.url(),
        "POST",
        "/v1/chat/completions",
        Some(&chat_body("smollm2", "2+2?", true)),
        None,
    )
    .await;
    let a = read_answer(resp).await.unwrap();
    assert_eq!((a.reasoning.as_str(), a.text.as_str()), ("2+2=4", "4"));
    assert_eq!(a.finish.as_deref(), Some("length"));
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].body["stream_options"]["include_usage"], true);
    assert_eq!(reqs[1].body["max_tokens"], 64);
}

#[tokio::test]
async fn models_listing_unknown_model_and_api_key() {
    let fake = FakeOpenAi::start().await;
    fake.set_models(["smollm2", "qwen2.5:0.5b"]);
    let resp = request(&fake.url(), "GET", "/v1/models", None, None).await;
    assert_eq!(resp.status(), 200);
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["smollm2", "qwen2.5:0.5b"]);
    assert_eq!(v["object"], "list");
    assert_eq!(fake.models_count(), 1);

    let resp = request(
        &fake.url(),
        "POST",
        "/v1/chat/completions",
        Some(&chat_body("gpt-9", "hi", true)),
        None,
    )
    .await;
    assert_eq!(resp.status(), 404);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        error_message(&body).as_deref(),
        Some("The model `gpt-9` does not exist")
    );

    fake.require_api_key("sk-test");
    let resp = request(&fake.url(), "GET", "/v1/models", None, Some("wrong")).await;
    assert_eq!(resp.status(), 401);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        error_message(&body).as_deref(),
        Some("Incorrect API key provided")
    );
    let resp = request(
        &fake.url(),
        "POST",
        "/v1/chat/completions",
        Some(&chat_body("smollm2", "hi", true)),
        Some("sk-test"),
    )
    .await;
    let a = read_answer(resp).await.unwrap();
    assert_eq!(a.text, "hi");
    assert_eq!(
        fake.requests().last().unwrap().authorization.as_deref(),
        Some("Bearer sk-test")
    );
}

#[tokio::test]
async fn failure_modes() {
    let fake = FakeOpenAi::start().await;
    let chat = || chat_body("smollm2", "hi", true);

    fake.push(Behavior::Status(503, "Server busy".into()));
    let resp = request(
        &fake.url(),
        "POST",
        "/v1/chat/completions",
        Some(&chat()),
        None,
    )
    .await;
    assert_eq!(resp.status(), 503);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(error_message(&body).as_deref(), Some("Server busy"));

    fake.push(Behavior::ErrorAfter(2, "the model crashed".into()));
    let resp = request(
        &fake.url(),
        "POST",
        "/v1/chat/completions",
        Some(&chat()),
        None,
    )
    .await;
    let a = read_answer(resp).await.unwrap();
    assert_eq!(a.text, "tok0 tok1 ");
    assert_eq!(a.error.as_deref(), Some("the model crashed"));
    assert!(!a.done);

    // Cut off: hyper reports the broken body, or the parser the missing end.
    fake.push(Behavior::DropAfter(3));
    let resp = request(
        &fake.url(),
        "POST",
        "/v1/chat/completions",
        Some(&chat()),
        None,
    )
    .await;
    let e = read_answer(resp).await.unwrap_err();
    assert!(
        e.starts_with("body:") || e == SseError::Truncated.to_string(),
        "{e}"
    );
}

#[tokio::test]
async fn client_disconnect_and_max_concurrency_are_recorded() {
    let fake = FakeOpenAi::start().await;
    fake.set(Behavior::Endless {
        delay: Duration::from_millis(5),
    });
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let resp = request(
            &fake.url(),
            "POST",
            "/v1/chat/completions",
            Some(&chat_body("smollm2", "hi", true)),
            None,
        )
        .await;
        let mut body = resp.into_body();
        // Read the first event so the stream is known to run.
        let f = tokio::time::timeout(STEP, body.frame()).await.unwrap();
        assert!(f.unwrap().unwrap().is_data());
        bodies.push(body);
    }
    assert_eq!(fake.active(), 3);
    assert_eq!(fake.max_concurrent(), 3);
    let dropped = Instant::now();
    drop(bodies.pop());
    let seen = fake
        .wait_stream_closed(STEP)
        .await
        .expect("the fake did not see the client go");
    assert!(seen.duration_since(dropped) < Duration::from_millis(500));
    let deadline = Instant::now() + STEP;
    while fake.active() != 2 {
        assert!(Instant::now() < deadline, "active stays {}", fake.active());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(fake.max_concurrent(), 3);
    let rec = &fake.closed_streams()[0];
    assert!(rec.by_client && rec.tokens >= 1, "{rec:?}");
}

#[tokio::test]
async fn stop_refuses_and_restart_serves_again_on_the_same_port() {
    let fake = FakeOpenAi::start().await;
    fake.stop().await;
    let addr = fake.addr();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    fake.restart().await;
    assert_eq!(fake.addr(), addr);
    let resp = request(&fake.url(), "GET", "/v1/models", None, None).await;
    assert_eq!(resp.status(), 200);
}
