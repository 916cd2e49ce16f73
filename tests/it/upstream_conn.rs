//! The chat stream's own upstream connection (ADR 0021), against the fake
//! Ollama over real sockets: lines already read from the socket are handed
//! out without the stream's task yielding (no hand-off to a connection
//! task), a finished chat's connection is reused by the next chat, a
//! connection Ollama closed while idle is discarded (no retry spent), and a
//! stream dropped mid-answer closes its connection instead of pooling it.

use std::time::Duration;

use crate::support::fake_ollama::{Behavior, FakeOllama};
use crate::support::wait_until;
use futures_util::FutureExt;
use tars::config::OllamaConfig;
use tars::metrics::Metrics;
use tars::ollama::{
    ChatMessage, ChatOptions, ChatRequest, ChatStream, OllamaClient, RetryPolicy, Role,
};
use tokio_util::sync::CancellationToken;

fn config(url: &str) -> OllamaConfig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[tls]\nenabled = false\n").unwrap();
    let mut cfg = tars::config::load_with_env(&path, &|_| None)
        .expect("a minimal config loads")
        .ollama;
    cfg.host = url.to_string();
    cfg.connect_timeout = Duration::from_secs(2);
    // These tests count connections one by one; spares have their own test.
    cfg.pool_spare_connections = 0;
    cfg
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        retries: 3,
        base_delay: Duration::from_millis(20),
        first_token_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        max_line_bytes: 1 << 20,
    }
}

struct Setup {
    fake: FakeOllama,
    client: OllamaClient,
    metrics: Metrics,
    cancel: CancellationToken,
}

impl Setup {
    async fn new() -> Self {
        Self::with_spares(0).await
    }

    async fn with_spares(spares: usize) -> Self {
        let fake = FakeOllama::start().await;
        let mut cfg = config(&fake.url());
        cfg.pool_spare_connections = spares;
        let client = OllamaClient::new(&cfg);
        Self {
            fake,
            client,
            metrics: Metrics::new(),
            cancel: CancellationToken::new(),
        }
    }

    async fn chat(&self) -> ChatStream {
        let req = ChatRequest::new(
            "llama3.2",
            vec![ChatMessage::new(Role::User, "hello")],
            ChatOptions::default(),
            None,
        );
        self.client
            .chat(&req, &policy(), &self.cancel, &self.metrics)
            .await
            .expect("the fake answers")
    }
}

/// Reads `stream` to its end; the number of lines.
async fn drain(stream: &mut ChatStream) -> usize {
    let mut n = 0;
    while stream.next_line().await.expect("a clean stream").is_some() {
        n += 1;
    }
    n
}

#[tokio::test]
async fn lines_already_received_are_handed_out_without_yielding() {
    let s = Setup::new().await;
    let tokens: Vec<String> = (0..20).map(|i| format!(" t{i}")).collect();
    s.fake.set(Behavior::stream(tokens));
    let mut stream = s.chat().await;
    // All 21 lines (20 tokens and the final line) written and on our socket.
    wait_until(
        "the fake wrote every line",
        Duration::from_secs(5),
        || async { s.fake.lines_written() >= 21 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Each line must be ready on the first poll: the stream reads the socket
    // and decodes the chunks itself. With the connection on another task
    // each line after the first would need that task to run first.
    for i in 0..21 {
        let line = stream
            .next_line()
            .now_or_never()
            .unwrap_or_else(|| panic!("line {i} was received but not ready without yielding"))
            .expect("a clean line");
        assert!(line.is_some(), "line {i} missing");
    }
    assert!(matches!(stream.next_line().await, Ok(None)));
}

#[tokio::test]
async fn a_finished_chats_connection_is_reused() {
    let s = Setup::new().await;
    for round in 1..=3 {
        let mut stream = s.chat().await;
        assert!(drain(&mut stream).await > 0);
        drop(stream);
        assert_eq!(s.client.idle_chat_connections(), 1, "round {round}");
    }
    assert_eq!(s.fake.chat_count(), 3);
    assert_eq!(
        s.fake.connections_accepted(),
        1,
        "one keep-alive connection"
    );
}

#[tokio::test]
async fn a_connection_closed_while_idle_is_discarded_without_a_retry() {
    let s = Setup::new().await;
    let mut stream = s.chat().await;
    drain(&mut stream).await;
    drop(stream);
    assert_eq!(s.client.idle_chat_connections(), 1);
    // Ollama restarts: every connection it had is closed.
    s.fake.stop().await;
    s.fake.restart().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut stream = s.chat().await;
    assert!(drain(&mut stream).await > 0);
    assert_eq!(s.fake.connections_accepted(), 2);
    assert_eq!(
        s.metrics.upstream_retries.get(),
        0,
        "the closed connection was never tried"
    );
    assert_eq!(s.metrics.upstream_requests.get(), 2);
}

#[tokio::test]
async fn a_stream_dropped_mid_answer_is_not_pooled() {
    let s = Setup::new().await;
    s.fake.set(Behavior::Endless {
        delay: Duration::from_millis(5),
    });
    let mut stream = s.chat().await;
    assert!(stream.next_line().await.unwrap().is_some());
    drop(stream);
    assert!(s
        .fake
        .wait_stream_closed(Duration::from_secs(2))
        .await
        .is_some());
    assert_eq!(s.client.idle_chat_connections(), 0);
    s.fake.set(Behavior::Echo);
    let mut stream = s.chat().await;
    drain(&mut stream).await;
    assert_eq!(s.fake.connections_accepted(), 2, "a fresh connection");
}

#[tokio::test]
async fn the_pool_keeps_spares_so_a_chat_does_not_wait_for_a_handshake() {
    let s = Setup::with_spares(2).await;
    // The first chat connects itself; taking a connection opens two spares
    // in the background.
    let mut stream = s.chat().await;
    wait_until("two spares open", Duration::from_secs(5), || async {
        s.client.idle_chat_connections() == 2
    })
    .await;
    assert_eq!(s.fake.connections_accepted(), 3);
    drain(&mut stream).await;
    drop(stream);
    // The pool never keeps more than pool_max_connections; here 3 fit.
    assert_eq!(s.client.idle_chat_connections(), 3);
    // The next chats take idle connections: no new handshake is waited for,
    // and the spares are topped up only to two idle at a time.
    for _ in 0..3 {
        let mut stream = s.chat().await;
        drain(&mut stream).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        s.fake.connections_accepted(),
        3,
        "every chat after the first found an idle connection"
    );
    assert_eq!(s.fake.chat_count(), 4);
}

#[tokio::test]
async fn spares_are_not_opened_when_the_setting_is_zero() {
    let s = Setup::new().await;
    let mut stream = s.chat().await;
    drain(&mut stream).await;
    drop(stream);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.fake.connections_accepted(), 1);
    assert_eq!(s.client.idle_chat_connections(), 1);
}

#[tokio::test]
async fn a_line_longer_than_the_read_buffer_arrives_whole() {
    // The connection's read buffer is capped at 16 KiB (ADR 0024); a chunk
    // (one line here) six times that must still be decoded piece by piece
    // and joined into the same line.
    let s = Setup::new().await;
    let long: String = (0..100_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    s.fake
        .set(Behavior::stream([long.clone(), " short".to_string()]));
    let mut stream = s.chat().await;
    let first = stream.next_line().await.unwrap().expect("a line").to_vec();
    match tars::ollama::parse_chat_line(&first).expect("a chat line") {
        tars::ollama::ChatLine::Content { content, .. } => {
            let text: String = serde_json::from_str(content.get()).unwrap();
            assert_eq!(text, long, "byte-exact");
        }
        other => panic!("expected the long token, got {other:?}"),
    }
    assert_eq!(
        drain(&mut stream).await,
        2,
        "the short token and the final line"
    );
}
