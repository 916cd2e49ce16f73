//! The chat stream's own upstream connection (ADR 0021), against the fake
//! Ollama over real sockets: lines already read from the socket are handed
//! out without the stream's task yielding (no hand-off to a connection
//! task), a finished chat's connection is reused by the next chat, a
//! connection Ollama closed while idle is discarded (no retry spent), and a
//! stream dropped mid-answer closes its connection instead of pooling it;
//! the OpenAI dialect's stream reads the same way (ADR 0022).

use std::time::Duration;

use crate::support::fake_ollama::{Behavior, FakeOllama};
use crate::support::wait_until;
use crate::upstream::{policy, setup, setup_with_spares};
use futures_util::FutureExt;
use tars::ollama::{ChatMessage, ChatOptions, ChatRequest, ChatStream, Connector, Role};

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
    let s = setup().await;
    let tokens: Vec<String> = (0..20).map(|i| format!(" t{i}")).collect();
    s.fake.set(Behavior::stream(tokens));
    let mut stream = s.chat(&policy()).await.expect("the fake answers");
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
    let s = setup().await;
    for round in 1..=3 {
        let mut stream = s.chat(&policy()).await.expect("the fake answers");
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
    let s = setup().await;
    let mut stream = s.chat(&policy()).await.expect("the fake answers");
    drain(&mut stream).await;
    drop(stream);
    assert_eq!(s.client.idle_chat_connections(), 1);
    // Ollama restarts: every connection it had is closed.
    s.fake.stop().await;
    s.fake.restart().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut stream = s.chat(&policy()).await.expect("the fake answers");
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
    let s = setup().await;
    s.fake.set(Behavior::Endless {
        delay: Duration::from_millis(5),
    });
    let mut stream = s.chat(&policy()).await.expect("the fake answers");
    assert!(stream.next_line().await.unwrap().is_some());
    drop(stream);
    assert!(s
        .fake
        .wait_stream_closed(Duration::from_secs(2))
        .await
        .is_some());
    assert_eq!(s.client.idle_chat_connections(), 0);
    s.fake.set(Behavior::Echo);
    let mut stream = s.chat(&policy()).await.expect("the fake answers");
    drain(&mut stream).await;
    assert_eq!(s.fake.connections_accepted(), 2, "a fresh connection");
}

/// The OpenAI dialect reads over the same kind of connection (ADR 0022):
/// events already on the socket are handed out without yielding, and the
/// finished answer's connection serves the next chat.
#[tokio::test]
async fn openai_events_already_received_are_ready_and_the_connection_is_reused() {
    use tars::upstream::openai::OpenAiClient;
    let fake = FakeOllama::start().await;
    let tokens: Vec<String> = (0..20).map(|i| format!(" t{i}")).collect();
    fake.set(Behavior::stream(tokens));
    let client = OpenAiClient::new(
        &fake.url(),
        None,
        Connector::new(Duration::from_secs(2), None),
        4,
        0,
    );
    let req = ChatRequest::new(
        "llama3.2",
        vec![ChatMessage::new(Role::User, "hello")],
        ChatOptions::default(),
        None,
    );
    for round in 1..=2 {
        let mut stream = client
            .chat(&req, &policy())
            .await
            .expect("the fake answers");
        // 20 token events and the end (finish, usage, [DONE]) on our socket.
        let written = 21 * round;
        wait_until(
            "the fake wrote every event",
            Duration::from_secs(5),
            || async { fake.lines_written() >= written },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        for i in 0..21 {
            let line = stream
                .next()
                .now_or_never()
                .unwrap_or_else(|| panic!("event {i} was received but not ready without yielding"))
                .expect("a clean event");
            assert!(line.is_some(), "event {i} missing");
        }
        assert!(matches!(stream.next().await, Ok(None)));
    }
    assert_eq!(fake.chat_count(), 2);
    assert_eq!(fake.connections_accepted(), 1, "one keep-alive connection");
}

#[tokio::test]
async fn the_pool_keeps_spares_so_a_chat_does_not_wait_for_a_handshake() {
    let s = setup_with_spares(2).await;
    // The first chat connects itself; taking a connection opens two spares
    // in the background.
    let mut stream = s.chat(&policy()).await.expect("the fake answers");
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
        let mut stream = s.chat(&policy()).await.expect("the fake answers");
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
    let s = setup().await;
    let mut stream = s.chat(&policy()).await.expect("the fake answers");
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
    let s = setup().await;
    let long: String = (0..100_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    s.fake
        .set(Behavior::stream([long.clone(), " short".to_string()]));
    let mut stream = s.chat(&policy()).await.expect("the fake answers");
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
