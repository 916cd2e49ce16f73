//! A real OpenAI-compatible upstream: llama.cpp's server (PyPI
//! `llama-cpp-python[server]`) serving SmolLM2-135M-Instruct, started through
//! `.ci/llama-server.sh start`, streams one chat completion that the SSE
//! parser (`src/upstream/openai_sse.rs`) reads to its end: text, then
//! `finish_reason`, `usage` (when the server honours `include_usage`;
//! llama-cpp-python 0.3.36 does not), `[DONE]`.
//!
//! The server comes from the venv `.ci/llama-server.sh setup` makes (`.ci/run`
//! does). Without it the test prints `SKIPPED: ...` and passes locally, but
//! FAILS when `CI=true`: CI must exercise a real server.
//!
//! The second test is the full path: the gateway with that server as its one
//! `api = "openai"` upstream, a chat through the WebSocket protocol streamed
//! to its `complete`.

#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tars::upstream::openai_sse::{error_message, SseEvent, SseParser};

/// Every wait on the server once it answers /v1/models (a 135M model on a
/// busy 2-core machine writes several tokens a second).
const STEP: Duration = Duration::from_secs(60);
/// The whole answer.
const ANSWER: Duration = Duration::from_secs(180);

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/llama-server.sh")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skip locally, fail under CI.
fn unavailable(why: &str) {
    if in_ci() {
        panic!("llama.cpp server unavailable under CI=true: {why} (.ci/run runs '.ci/llama-server.sh setup')");
    }
    eprintln!("SKIPPED: llama.cpp server unavailable: {why} (run '.ci/llama-server.sh setup')");
}

/// The server started by the script; killed (its process group) on drop.
struct Server {
    pid: i32,
    url: String,
    model: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a process group this test started.
        unsafe {
            libc::kill(-self.pid, libc::SIGTERM);
        }
    }
}

/// A port the kernel just gave out (the server cannot bind port 0 and say
/// which port it got), never one already given to another test of this
/// process: the kernel can hand a just-closed port out twice, and then one
/// test's server fails to bind while its readiness check is answered by the
/// other test's server — which goes away when that test ends, mid-stream.
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// `.ci/llama-server.sh start PORT --watch <this process>`; it waits until
/// `/v1/models` answers and prints `pid=N model=M url=U log=L`.
fn start() -> Result<Server, String> {
    let port = free_port();
    let out = Command::new(script())
        .args(["start", &port.to_string(), "--watch"])
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", script().display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{} start {port} failed ({}): {}{}",
            script().display(),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let field = |k: &str| {
        stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .map(str::to_string)
            .ok_or_else(|| format!("no `{k}` in the script's output: {stdout}"))
    };
    Ok(Server {
        pid: field("pid=")?.parse().map_err(|e| format!("pid: {e}"))?,
        url: field("url=")?,
        model: field("model=")?,
    })
}

/// The started server, or `None` (after [`unavailable`]) when the venv of
/// `.ci/llama-server.sh setup` is missing. With the venv there, a server
/// that does not start is a failure.
fn real_server() -> Option<Server> {
    let ready = Command::new(script())
        .arg("model")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(ready, Ok(s) if s.success()) {
        unavailable("no venv made by '.ci/llama-server.sh setup'");
        return None;
    }
    Some(start().unwrap_or_else(|why| panic!("{why}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_cpp_streams_a_chat_to_finish_and_done() {
    let Some(server) = real_server() else { return };
    assert_eq!(server.model, "smollm2");

    let addr = server.url.strip_prefix("http://").unwrap().to_string();
    let tcp = tokio::time::timeout(STEP, tokio::net::TcpStream::connect(&addr))
        .await
        .expect("connect timeout")
        .expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let body = json!({
        "model": server.model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello in one short sentence."}
        ],
        "stream": true,
        "stream_options": {"include_usage": true},
        "temperature": 0.2, "top_p": 0.9, "max_tokens": 24
    });
    let req = http::Request::post("/v1/chat/completions")
        .header("host", &addr)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = tokio::time::timeout(STEP, send.send_request(req))
        .await
        .expect("no response head in time")
        .unwrap();
    let status = resp.status();
    if status != 200 {
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        panic!("status {status}: {:?}", error_message(&b));
    }
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));

    let deadline = Instant::now() + ANSWER;
    let mut body = resp.into_body();
    let mut parser = SseParser::new(64 * 1024);
    let mut text = String::new();
    // The kinds of events after the deltas, in order.
    let mut tail: Vec<String> = Vec::new();
    let mut deltas = 0u64;
    let mut completion_tokens = None;
    'read: loop {
        while let Some(ev) = parser.next_event().unwrap() {
            match ev {
                SseEvent::Delta { content } => {
                    assert!(tail.is_empty(), "a delta after {tail:?}");
                    text += &serde_json::from_str::<String>(content).unwrap();
                    deltas += 1;
                }
                SseEvent::Reasoning { .. } => {}
                SseEvent::Finish { reason } => {
                    assert!(reason == "stop" || reason == "length", "{reason}");
                    tail.push("finish".into());
                }
                SseEvent::Usage {
                    completion_tokens: c,
                    prompt_tokens,
                } => {
                    assert!(prompt_tokens.unwrap_or(0) > 0, "{prompt_tokens:?}");
                    completion_tokens = c;
                    tail.push("usage".into());
                }
                SseEvent::Done => {
                    tail.push("done".into());
                    break 'read;
                }
                SseEvent::Error { message } => panic!("error event: {message}"),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now()).min(STEP);
        match tokio::time::timeout(left, body.frame()).await {
            Err(_) => panic!("no event in time; text so far: {text:?}"),
            Ok(None) => parser.end(),
            Ok(Some(frame)) => {
                if let Ok(d) = frame.expect("body").into_data() {
                    parser.push(&d);
                }
            }
        }
    }
    // llama-cpp-python 0.3.36 ignores `include_usage` (no usage chunk);
    // a server that honours it sends usage between finish and done.
    assert!(
        tail == ["finish", "done"] || tail == ["finish", "usage", "done"],
        "{tail:?}"
    );
    assert!(!text.trim().is_empty(), "no text");
    assert!(
        (1..=24).contains(&deltas),
        "{deltas} deltas for max_tokens 24"
    );
    if let Some(c) = completion_tokens {
        assert!(
            deltas <= c && c <= 24,
            "{deltas} deltas, {c} completion tokens"
        );
    }
    eprintln!("llama.cpp answered {deltas} deltas: {text:?}");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_streams_through_the_gateway_from_llama_cpp() {
    use futures_util::StreamExt;
    use support::chat::{send, session};
    let Some(server) = real_server() else { return };
    let mut fields = toml::Table::new();
    fields.insert(
        "models".into(),
        toml::Value::Array(vec![server.model.clone().into()]),
    );
    fields.insert("max_concurrent".into(), 1.into());
    let gw = support::gateway()
        .set("auth.open_enrollment", true)
        .set("ollama.model", server.model.as_str())
        .set("ollama.max_tokens", 24)
        .upstream("llama", &server.url, "openai", fields)
        .serve();
    let mut ws = session(&gw, "c").await;
    send(
        &mut ws,
        &json!({"type": "chat", "content": "Say hello in one short sentence.", "conversation_id": "l"}),
    )
    .await;
    // Frames until the end, each within STEP (a slow CPU), all within ANSWER.
    let deadline = Instant::now() + ANSWER;
    let (mut text, mut tokens) = (String::new(), 0u64);
    let end = loop {
        let left = deadline.saturating_duration_since(Instant::now()).min(STEP);
        let msg = tokio::time::timeout(left, ws.next())
            .await
            .expect("a frame in time")
            .expect("the socket stays open")
            .expect("a frame");
        let Ok(t) = msg.into_text() else { continue };
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        match v["type"].as_str().unwrap() {
            "token" => {
                tokens += 1;
                assert_eq!(v["seq"], tokens);
                text += v["token"].as_str().unwrap();
            }
            "complete" | "error" => break v,
            _ => {}
        }
    };
    assert_eq!(end["type"], "complete", "{end}");
    assert_eq!(end["upstream"], "llama");
    assert!(tokens > 0 && !text.trim().is_empty(), "{text:?}");
    assert_eq!(end["total_tokens"], tokens);
    let reason = end["done_reason"].as_str().unwrap();
    assert!(reason == "stop" || reason == "length", "{reason}");
}
