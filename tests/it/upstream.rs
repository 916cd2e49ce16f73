//! The streaming Ollama client (`tars::ollama`) against the fake Ollama of
//! `tests/support/fake_ollama.rs`, in process: byte-exact text, chunking,
//! thinking lines, retries and backoff, statuses, mid-stream faults,
//! timeouts, cancellation, and the upstream request dropped with the stream.

use std::time::{Duration, Instant};

use crate::support::fake_ollama::{go_json_string, Behavior, Chunking, FakeOllama};
use crate::support::wait_until;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tars::config::OllamaConfig;
use tars::metrics::{KindLabel, Metrics};
use tars::ollama::{
    parse_chat_line, ChatLine, ChatMessage, ChatOptions, ChatRequest, ChatStream, DoneStats,
    OllamaClient, OllamaError, RetryPolicy, Role,
};
use tokio_util::sync::CancellationToken;

/// The `[ollama]` defaults from a real config file, pointed at `url`.
pub(crate) fn config(url: &str) -> OllamaConfig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[tls]\nenabled = false\n").unwrap();
    let mut cfg = tars::config::load_with_env(&path, &|_| None)
        .expect("a minimal config loads")
        .ollama;
    cfg.host = url.to_string();
    cfg.connect_timeout = Duration::from_secs(2);
    // Tests count connections one by one; warm spares have their own tests
    // (upstream_conn, ADR 0024).
    cfg.pool_spare_connections = 0;
    cfg
}

pub(crate) fn policy() -> RetryPolicy {
    RetryPolicy {
        retries: 3,
        base_delay: Duration::from_millis(20),
        first_token_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        max_line_bytes: 1 << 20,
    }
}

fn request(content: &str) -> ChatRequest {
    ChatRequest::new(
        "llama3.2",
        vec![
            ChatMessage::new(Role::System, "be brief"),
            ChatMessage::new(Role::User, content),
        ],
        ChatOptions {
            temperature: Some(0.7),
            top_p: Some(0.9),
            top_k: Some(40),
            num_predict: Some(2048),
        },
        Some("5m".into()),
    )
}

/// A client of the fake Ollama, with the metrics and cancel token its
/// chats report to (also used by `upstream_conn`).
pub(crate) struct Setup {
    pub(crate) fake: FakeOllama,
    pub(crate) client: OllamaClient,
    pub(crate) metrics: Metrics,
    pub(crate) cancel: CancellationToken,
}

pub(crate) async fn setup() -> Setup {
    setup_with_spares(0).await
}

/// [`setup`] with `pool_spare_connections = spares`.
pub(crate) async fn setup_with_spares(spares: usize) -> Setup {
    let fake = FakeOllama::start().await;
    let mut cfg = config(&fake.url());
    cfg.pool_spare_connections = spares;
    let client = OllamaClient::new(&cfg);
    Setup {
        fake,
        client,
        metrics: Metrics::new(),
        cancel: CancellationToken::new(),
    }
}

impl Setup {
    pub(crate) async fn chat(&self, p: &RetryPolicy) -> Result<ChatStream, OllamaError> {
        self.client
            .chat(&request("hello"), p, &self.cancel, &self.metrics)
            .await
    }

    fn failures(&self, kind: &'static str) -> u64 {
        self.metrics
            .upstream_failures
            .get_or_create(&KindLabel { kind })
            .get()
    }
}

/// What a whole stream amounted to.
#[derive(Debug, Default)]
struct Answer {
    /// Decoded content of each content line (empty ones included).
    content: Vec<String>,
    /// The raw JSON literal of each content line.
    raw: Vec<String>,
    thinking: Vec<String>,
    done: Option<DoneStats>,
    /// Lines after the final one (must stay 0).
    after_done: usize,
}

/// Read `stream` to its end; the first error (transport, malformed line or
/// an `{"error"}` line as `Malformed("error line: ...")`) ends it.
async fn read_all(stream: &mut ChatStream) -> (Answer, Option<OllamaError>) {
    let mut a = Answer::default();
    loop {
        let line = match stream.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) => return (a, None),
            Err(e) => return (a, Some(e)),
        };
        if a.done.is_some() {
            a.after_done += 1;
        }
        match parse_chat_line(line) {
            Ok(ChatLine::Content { content, thinking }) => {
                a.raw.push(content.get().to_string());
                a.content.push(serde_json::from_str(content.get()).unwrap());
                if let Some(t) = thinking {
                    a.thinking.push(serde_json::from_str(t.get()).unwrap());
                }
            }
            Ok(ChatLine::Done { content, stats }) => {
                let c: String = serde_json::from_str(content.unwrap().get()).unwrap();
                assert_eq!(c, "");
                a.done = Some(stats);
            }
            Ok(ChatLine::Error(m)) => {
                return (a, Some(OllamaError::Malformed(format!("error line: {m}"))))
            }
            Err(e) => return (a, Some(e.into())),
        }
    }
}

fn tricky() -> Vec<String> {
    [
        "He said \"hi\"",
        " back\\slash \\n not a newline",
        "\nnew\r\nlines\tand\ttabs",
        " emoji 😀👍🏽 and é ñ 中文",
        " <b>bold</b> & <script>alert('x')</script>",
        " \u{1} \u{8} \u{c} \u{1f} \u{7f}",
        " \u{2028}\u{2029}",
        "",
        " {\"json\": [1, 2]}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test]
async fn tricky_text_arrives_byte_exact_and_request_is_ollamas_shape() {
    let s = setup().await;
    s.fake.set(Behavior::stream(tricky()));
    let mut stream = s.chat(&policy()).await.unwrap();
    assert_eq!(stream.attempts(), 1);
    let (a, err) = read_all(&mut stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(a.content, tricky());
    // The raw literal is Go's escaping, passed through untouched.
    for (raw, text) in a.raw.iter().zip(tricky()) {
        let mut go = String::new();
        go_json_string(&text, &mut go);
        assert_eq!(raw, &go);
    }
    assert!(a.raw[4].contains(r"\u003cb\u003e"), "{}", a.raw[4]);
    let done = a.done.expect("final line");
    assert_eq!(done.done_reason.as_deref(), Some("stop"));
    assert_eq!(done.eval_count, Some(tricky().len() as u64));
    assert!(done.eval_duration.unwrap() > 0);
    assert_eq!(a.after_done, 0);

    let reqs = s.fake.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0],
        json!({
            "model": "llama3.2",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
            "stream": true,
            "options": {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "num_predict": 2048},
            "keep_alive": "5m",
        })
    );
    assert_eq!(s.metrics.upstream_requests.get(), 1);
    assert_eq!(s.metrics.upstream_retries.get(), 0);
}

#[tokio::test]
async fn echo_returns_the_user_message() {
    let s = setup().await;
    s.fake.set(Behavior::Echo);
    let text = tricky().concat();
    let mut stream = s
        .client
        .chat(&request(&text), &policy(), &s.cancel, &s.metrics)
        .await
        .unwrap();
    let (a, err) = read_all(&mut stream).await;
    assert!(err.is_none(), "{err:?}");
    assert!(a.content.len() > 1);
    assert_eq!(a.content.concat(), text);
}

#[tokio::test]
async fn every_chunking_gives_the_same_lines() {
    let s = setup().await;
    let tokens = tricky();
    for chunking in (1..=48).map(Chunking::Split).chain([
        Chunking::PerLine,
        Chunking::Coalesced,
        Chunking::Split(4096),
    ]) {
        s.fake
            .set(Behavior::stream(tokens.clone()).chunking(chunking.clone()));
        let mut stream = s.chat(&policy()).await.unwrap();
        let (a, err) = read_all(&mut stream).await;
        assert!(err.is_none(), "{chunking:?}: {err:?}");
        assert_eq!(a.content, tokens, "{chunking:?}");
        assert!(a.done.is_some(), "{chunking:?}");
    }
}

#[tokio::test]
async fn thinking_lines_come_first_with_empty_content() {
    let s = setup().await;
    s.fake
        .set(Behavior::stream(["The answer", " is 4"]).thinking(["Let me", " think <hard>"]));
    let mut stream = s.chat(&policy()).await.unwrap();
    let (a, err) = read_all(&mut stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(a.thinking, ["Let me", " think <hard>"]);
    assert_eq!(a.content, ["", "", "The answer", " is 4"]);
}

#[tokio::test]
async fn refused_then_up_during_backoff_succeeds() {
    let s = setup().await;
    s.fake.stop().await;
    let p = RetryPolicy {
        base_delay: Duration::from_millis(100),
        ..policy()
    };
    let fake = s.fake.clone();
    let retries = s.metrics.upstream_retries.clone();
    tokio::spawn(async move {
        // Up again once a refused attempt has put the client in its backoff.
        wait_until("a refused attempt", Duration::from_secs(5), || {
            let n = retries.get();
            async move { n >= 1 }
        })
        .await;
        fake.restart().await;
    });
    s.fake.set(Behavior::stream(["up", " again"]));
    let mut stream = s.chat(&p).await.expect("retries reach the restarted fake");
    let (a, err) = read_all(&mut stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(a.content, ["up", " again"]);
    assert!(stream.attempts() >= 2, "{}", stream.attempts());
    assert_eq!(
        s.metrics.upstream_retries.get(),
        u64::from(stream.attempts() - 1)
    );
    assert_eq!(s.fake.chat_count(), 1);
}

#[tokio::test]
async fn always_down_is_unreachable_after_exactly_the_retries() {
    let s = setup().await;
    s.fake.stop().await;
    let p = RetryPolicy {
        retries: 3,
        base_delay: Duration::from_millis(10),
        ..policy()
    };
    let t = Instant::now();
    let err = s.chat(&p).await.unwrap_err();
    assert!(
        matches!(&err, OllamaError::Unreachable { host, .. } if *host == s.fake.url()),
        "{err:?}"
    );
    assert!(err.to_string().contains("refused"), "{err}");
    assert_eq!(s.metrics.upstream_requests.get(), 4);
    assert_eq!(s.metrics.upstream_retries.get(), 3);
    assert_eq!(s.failures("unreachable"), 1);
    // 10 + 20 + 40 ms of backoff.
    assert!(
        t.elapsed() >= Duration::from_millis(70),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn busy_503_is_retried() {
    let s = setup().await;
    let busy = Behavior::Status(503, "server busy, please try again".into());
    s.fake.push(busy.clone());
    s.fake.push(busy.clone());
    s.fake.set(Behavior::stream(["ok"]));
    let mut stream = s.chat(&policy()).await.unwrap();
    assert_eq!(stream.attempts(), 3);
    assert_eq!(read_all(&mut stream).await.0.content, ["ok"]);
    assert_eq!(s.fake.chat_count(), 3);

    // Busy every time: the last status, after retries + 1 requests.
    let s = setup().await;
    s.fake.set(busy);
    let err = s.chat(&policy()).await.unwrap_err();
    match &err {
        OllamaError::Status {
            status: 503,
            message,
        } => {
            assert_eq!(message, "server busy, please try again")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.kind(), "busy");
    assert_eq!(s.fake.chat_count(), 4);
    assert_eq!(s.failures("busy"), 1);
}

#[tokio::test]
async fn other_5xx_and_429_are_retried() {
    for status in [500, 502, 429] {
        let s = setup().await;
        s.fake.push(Behavior::Status(status, "transient".into()));
        s.fake.set(Behavior::stream(["ok"]));
        let mut stream = s.chat(&policy()).await.unwrap();
        assert_eq!(read_all(&mut stream).await.0.content, ["ok"], "{status}");
        assert_eq!(s.fake.chat_count(), 2, "{status}");
    }
}

#[tokio::test]
async fn model_not_found_is_not_retried() {
    let s = setup().await;
    s.fake.set(Behavior::Status(
        404,
        "model 'llama3.2' not found, try pulling it first".into(),
    ));
    let err = s.chat(&policy()).await.unwrap_err();
    match &err {
        OllamaError::Status {
            status: 404,
            message,
        } => {
            assert_eq!(message, "model 'llama3.2' not found, try pulling it first")
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.retryable());
    assert_eq!(s.fake.chat_count(), 1);
    assert_eq!(s.metrics.upstream_retries.get(), 0);
    assert_eq!(s.failures("status_4xx"), 1);

    // 400 likewise (the fake refuses a request without a model).
    let mut req = request("x");
    req.model.clear();
    let err = s
        .client
        .chat(&req, &policy(), &s.cancel, &s.metrics)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OllamaError::Status { status: 400, message } if message == "model is required"),
        "{err:?}"
    );
    assert_eq!(s.fake.chat_count(), 2);
}

#[tokio::test]
async fn error_line_mid_stream() {
    let s = setup().await;
    s.fake.set(Behavior::ErrorAfter(
        2,
        "an error was encountered while running the model".into(),
    ));
    let mut stream = s.chat(&policy()).await.unwrap();
    let (a, err) = read_all(&mut stream).await;
    assert_eq!(a.content, ["tok0 ", "tok1 "]);
    assert_eq!(
        err.unwrap().to_string(),
        "the upstream sent an unexpected answer: error line: an error was encountered while running the model"
    );
}

#[tokio::test]
async fn malformed_line_mid_stream() {
    let s = setup().await;
    s.fake.set(Behavior::MalformedAfter(1));
    let mut stream = s.chat(&policy()).await.unwrap();
    let (a, err) = read_all(&mut stream).await;
    assert_eq!(a.content, ["tok0 "]);
    let err = err.unwrap();
    assert!(matches!(err, OllamaError::Malformed(_)), "{err:?}");
    assert_eq!(err.kind(), "malformed");
}

#[tokio::test]
async fn dropped_mid_stream_is_a_stream_error() {
    let s = setup().await;
    s.fake.set(Behavior::DropAfter(3));
    let mut stream = s.chat(&policy()).await.unwrap();
    let (a, err) = read_all(&mut stream).await;
    assert_eq!(a.content.len(), 3);
    assert!(a.done.is_none());
    assert!(matches!(err, Some(OllamaError::Stream(_))), "{err:?}");

    // The client is still usable afterwards.
    s.fake.set(Behavior::stream(["fine"]));
    let mut stream = s.chat(&policy()).await.unwrap();
    assert_eq!(read_all(&mut stream).await.0.content, ["fine"]);
}

#[tokio::test]
async fn stall_is_a_first_token_timeout() {
    let s = setup().await;
    s.fake.set(Behavior::Stall);
    let p = RetryPolicy {
        first_token_timeout: Duration::from_millis(200),
        ..policy()
    };
    let t = Instant::now();
    let mut stream = s.chat(&p).await.expect("the head arrives");
    let err = stream.next_line().await.unwrap_err();
    let took = t.elapsed();
    assert!(
        matches!(err, OllamaError::Timeout { what: "first token", after } if after == p.first_token_timeout),
        "{err:?}"
    );
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_millis(1000),
        "{took:?}"
    );
    assert_eq!(s.fake.chat_count(), 1, "a timeout is not retried");
}

#[tokio::test]
async fn slow_first_token_is_a_first_token_timeout() {
    let s = setup().await;
    s.fake
        .set(Behavior::stream(["late"]).first_delay(Duration::from_millis(600)));
    let p = RetryPolicy {
        first_token_timeout: Duration::from_millis(150),
        ..policy()
    };
    let mut stream = s.chat(&p).await.unwrap();
    let err = stream.next_line().await.unwrap_err();
    assert!(
        matches!(
            err,
            OllamaError::Timeout {
                what: "first token",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), "timeout");
}

#[tokio::test]
async fn idle_timeout_between_lines() {
    let s = setup().await;
    s.fake
        .set(Behavior::stream(["a", "b"]).delay(Duration::from_millis(600)));
    let p = RetryPolicy {
        idle_timeout: Duration::from_millis(150),
        ..policy()
    };
    let mut stream = s.chat(&p).await.unwrap();
    assert!(stream.next_line().await.unwrap().is_some());
    let t = Instant::now();
    let err = stream.next_line().await.unwrap_err();
    assert!(
        matches!(err, OllamaError::Timeout { what: "idle", after } if after == p.idle_timeout),
        "{err:?}"
    );
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn idle_timeout_counts_from_each_call_not_from_the_last_line() {
    // A slow consumer is not an idle upstream.
    let s = setup().await;
    s.fake.set(Behavior::stream(["a", "b", "c"]));
    let p = RetryPolicy {
        idle_timeout: Duration::from_millis(100),
        ..policy()
    };
    let mut stream = s.chat(&p).await.unwrap();
    assert!(stream.next_line().await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (a, err) = read_all(&mut stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(a.content, ["b", "c"]);
}

#[tokio::test]
async fn idle_deadline_survives_a_dropped_next_line_future() {
    // `next_line` in a `select!` with a faster branch must still time out.
    let s = setup().await;
    s.fake
        .set(Behavior::stream(["a", "b"]).delay(Duration::from_secs(2)));
    let p = RetryPolicy {
        idle_timeout: Duration::from_millis(200),
        ..policy()
    };
    let mut stream = s.chat(&p).await.unwrap();
    assert!(stream.next_line().await.unwrap().is_some());
    let t = Instant::now();
    let err = loop {
        tokio::select! {
            r = stream.next_line() => break r.unwrap_err(),
            _ = tokio::time::sleep(Duration::from_millis(30)) => {}
        }
    };
    assert!(
        matches!(err, OllamaError::Timeout { what: "idle", .. }),
        "{err:?}"
    );
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn cancel_during_backoff_returns_at_once() {
    let s = setup().await;
    s.fake.stop().await;
    let p = RetryPolicy {
        base_delay: Duration::from_secs(10),
        ..policy()
    };
    let cancel = s.cancel.clone();
    let retries = s.metrics.upstream_retries.clone();
    tokio::spawn(async move {
        // Cancelled once the first attempt has failed: during the backoff.
        wait_until("the backoff to start", Duration::from_secs(5), || {
            let n = retries.get();
            async move { n >= 1 }
        })
        .await;
        cancel.cancel();
    });
    let t = Instant::now();
    let err = s.chat(&p).await.unwrap_err();
    assert!(matches!(err, OllamaError::Cancelled), "{err:?}");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(s.metrics.upstream_requests.get(), 1);
    assert_eq!(s.failures("cancelled"), 0);
}

#[tokio::test]
async fn cancel_while_waiting_for_the_head_drops_the_request() {
    // Ollama sends its head with the first token: a model load looks like
    // a request without an answer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let arrived = std::sync::Arc::new(tokio::sync::Notify::new());
    let signal = arrived.clone();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        // Read until the client closes the connection.
        loop {
            use tokio::io::AsyncReadExt;
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => signal.notify_one(),
            }
        }
    });
    let client = OllamaClient::new(&config(&url));
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    let t = tokio::spawn(async move {
        // Cancelled once the request has reached the server (no answer yet).
        arrived.notified().await;
        c2.cancel();
        Instant::now()
    });
    let err = client
        .chat(&request("x"), &policy(), &cancel, &Metrics::new())
        .await
        .unwrap_err();
    assert!(matches!(err, OllamaError::Cancelled), "{err:?}");
    let cancelled_at = t.await.unwrap();
    let closed_at = tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("the connection is closed")
        .unwrap();
    assert!(
        closed_at.saturating_duration_since(cancelled_at) < Duration::from_millis(100),
        "{:?}",
        closed_at - cancelled_at
    );
}

#[tokio::test]
async fn dropping_the_stream_closes_the_upstream_within_100ms() {
    let s = setup().await;
    // A long delay: the fake can only learn of the drop from the socket.
    s.fake.set(Behavior::Endless {
        delay: Duration::from_secs(5),
    });
    let mut stream = s.chat(&policy()).await.unwrap();
    assert!(stream.next_line().await.unwrap().is_some());
    assert_eq!(s.fake.streams_open(), 1);
    let dropped = Instant::now();
    drop(stream);
    let after = s
        .fake
        .stream_closed_after(dropped, Duration::from_secs(2))
        .await;
    assert!(after < Duration::from_millis(100), "{after:?}");
    assert_eq!(s.fake.streams_open(), 0);
    let rec = s.fake.closed_streams().pop().unwrap();
    assert!(rec.by_client);
    assert_eq!(rec.lines, 1);
}

#[tokio::test]
async fn a_slow_reader_stalls_the_writer() {
    // Lines are read from the socket only when asked for: once the buffers
    // on the way are full, the fake cannot write any more.
    let s = setup().await;
    s.fake.set(Behavior::Endless {
        delay: Duration::ZERO,
    });
    let mut stream = s.chat(&policy()).await.unwrap();
    assert!(stream.next_line().await.unwrap().is_some());
    let mut last = s.fake.lines_written();
    let mut stable = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = s.fake.lines_written();
        stable = if now == last { stable + 1 } else { 0 };
        last = now;
        if stable == 4 {
            break;
        }
    }
    assert_eq!(stable, 4, "the writer never stalled ({last} lines)");
    // Reading resumes the flow (once the buffers on the way drain).
    let t = Instant::now();
    let mut read = 0u64;
    while s.fake.lines_written() == last {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no progress after {read} lines"
        );
        assert!(stream.next_line().await.unwrap().is_some());
        read += 1;
        if read % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test]
async fn line_too_long() {
    let s = setup().await;
    s.fake
        .set(Behavior::stream(["short", &"x".repeat(2000), "never"]));
    let p = RetryPolicy {
        max_line_bytes: 1024,
        ..policy()
    };
    let mut stream = s.chat(&p).await.unwrap();
    let (a, err) = read_all(&mut stream).await;
    assert_eq!(a.content, ["short"]);
    assert!(
        matches!(err, Some(OllamaError::LineTooLong(1024))),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_streams_stay_separate() {
    let s = setup().await;
    s.fake.set(Behavior::Echo);
    let s = std::sync::Arc::new(s);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let text = format!("stream {i}: \"{}\" <{i}>", "é".repeat(i % 7));
                let mut stream = s
                    .client
                    .chat(&request(&text), &policy(), &s.cancel, &s.metrics)
                    .await
                    .unwrap();
                let (a, err) = read_all(&mut stream).await;
                assert!(err.is_none(), "{err:?}");
                assert_eq!(a.content.concat(), text);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.fake.chat_count(), 200);
    assert!(s.fake.wait_streams_open(0, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn clock_tokens_are_wall_clock_nanoseconds() {
    let s = setup().await;
    s.fake.set(Behavior::Clock {
        count: 5,
        interval: Duration::from_millis(10),
    });
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut stream = s.chat(&policy()).await.unwrap();
    let (a, err) = read_all(&mut stream).await;
    assert!(err.is_none(), "{err:?}");
    let ts: Vec<u64> = a.content.iter().map(|t| t.parse().unwrap()).collect();
    assert_eq!(ts.len(), 5);
    assert!(ts[0] >= before);
    assert!(ts.windows(2).all(|w| w[1] >= w[0] + 9_000_000), "{ts:?}");
}

#[tokio::test]
async fn fake_other_endpoints_and_generate() {
    let s = setup().await;
    assert_eq!(
        s.client.version(Duration::from_secs(2)).await.unwrap(),
        "0.5.1"
    );

    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let get = |path: &str| {
        let req = http::Request::get(format!("{}{path}", s.fake.url()))
            .body(Full::new(Bytes::new()))
            .unwrap();
        http.request(req)
    };
    for path in ["/api/tags", "/api/ps"] {
        let resp = get(path).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["models"][0]["name"].is_string(), "{path}: {v}");
    }
    assert_eq!(get("/api/nope").await.unwrap().status(), 404);

    s.fake
        .set(Behavior::stream(["That", " <is>"]).thinking(["hm"]));
    let req = http::Request::post(format!("{}/api/generate", s.fake.url()))
        .body(Full::new(Bytes::from(
            r#"{"model":"gemma3","prompt":"why?"}"#,
        )))
        .unwrap();
    let resp = http.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = std::str::from_utf8(&body).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].contains(r#""response":"","thinking":"hm","done":false}"#),
        "{}",
        lines[0]
    );
    assert!(
        lines[2].starts_with(r#"{"model":"gemma3","created_at":""#),
        "{}",
        lines[2]
    );
    assert!(
        lines[2].ends_with(r#"","response":" \u003cis\u003e","done":false}"#),
        "{}",
        lines[2]
    );
    assert!(
        lines[3]
            .contains(r#""done":true,"done_reason":"stop","context":[1,2,3],"total_duration":"#),
        "{}",
        lines[3]
    );
    match parse_chat_line(lines[1].as_bytes()).unwrap() {
        ChatLine::Content { content, thinking } => {
            assert_eq!(content.get(), "\"That\"");
            assert!(thinking.is_none());
        }
        other => panic!("{other:?}"),
    }
    match parse_chat_line(lines[3].as_bytes()).unwrap() {
        ChatLine::Done { stats, .. } => assert_eq!(stats.eval_count, Some(3)),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.fake.generate_count(), 1);
    assert_eq!(s.fake.requests()[0]["prompt"], "why?");
}

#[tokio::test]
async fn chat_line_layout_matches_ollama() {
    let s = setup().await;
    s.fake.set(Behavior::stream(["Hi"]));
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let req = http::Request::post(format!("{}/api/chat", s.fake.url()))
        .body(Full::new(Bytes::from(
            r#"{"model":"llama3.2","messages":[{"role":"user","content":"x"}]}"#,
        )))
        .unwrap();
    let body = http
        .request(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let text = std::str::from_utf8(&body).unwrap();
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    assert_eq!(lines.len(), 2, "{text}");
    let (head, tail) = lines[0].split_at(lines[0].find(r#"","message""#).unwrap());
    assert!(
        head.starts_with(r#"{"model":"llama3.2","created_at":"20"#),
        "{head}"
    );
    assert!(head.ends_with('Z'), "{head}");
    assert_eq!(
        tail,
        r#"","message":{"role":"assistant","content":"Hi"},"done":false}"#
    );
    let v: Value = serde_json::from_str(lines[1]).unwrap();
    for k in [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ] {
        assert!(v[k].is_u64(), "{k}: {v}");
    }
    assert_eq!(v["done"], true);
    assert_eq!(v["message"]["content"], "");
}
