//! Hardening for a gateway behind no other proxy: abuse limits, slow
//! clients, and faults injected into Ollama and into the clients.

use std::time::{Duration, Instant};

use crate::support::chat::*;
use crate::support::fake_ollama::{Behavior, FakeOllama};
use crate::support::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn gw_for(fake: &FakeOllama) -> GatewayBuilder {
    gateway()
        .ollama(&fake.url())
        .set("auth.open_enrollment", true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_rate_limit_per_client_keeps_the_socket_and_spares_others() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::stream(["ok"]));
    let gw = gw_for(&fake).set("limits.chat_per_minute", 3).serve();
    let flooder = token_for(&gw, "flooder", None).await;
    let polite = token_for(&gw, "polite", None).await;
    let (mut ws, _) = open_chat(&gw, &flooder).await;
    for _ in 0..3 {
        assert_eq!(chat(&mut ws, "hi", None).await.end["type"], "complete");
    }
    // A flood: every further chat is refused with how long to wait.
    for i in 0..20 {
        send(
            &mut ws,
            &json!({"type": "chat", "content": "spam", "conversation_id": format!("s{i}")}),
        )
        .await;
    }
    for i in 0..20 {
        let e = recv(&mut ws).await;
        assert_eq!(e["code"], "rate_limited", "{e}");
        assert_eq!(e["conversation_id"], format!("s{i}"));
        let wait = e["retry_after_ms"].as_u64().unwrap();
        assert!(wait > 1000 && wait <= 20_000, "{wait}");
    }
    // The flooder's socket still answers; another client is unaffected.
    send(&mut ws, &json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
    let (mut other, _) = open_chat(&gw, &polite).await;
    let started = Instant::now();
    assert_eq!(
        chat(&mut other, "hello", None).await.end["type"],
        "complete"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(fake.chat_count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_rate_limit_per_ip() {
    let gw = gateway()
        .set("auth.open_enrollment", true)
        .set("limits.auth_per_minute", 3)
        .serve();
    let mut last = None;
    for _ in 0..3 {
        let r = post_json(&gw, "/auth/token", &json!({"client_id": "c"}), None).await;
        assert_eq!(r.status, 200);
        last = Some(r.json()["access_token"].as_str().unwrap().to_string());
    }
    let r = post_json(&gw, "/auth/token", &json!({"client_id": "c"}), None).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"], "rate_limited");
    let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&secs), "{secs}");
    // Validation is not limited: it is cheap and reveals nothing.
    for _ in 0..5 {
        assert_eq!(
            post_json(&gw, "/auth/validate", &json!({}), last.as_deref())
                .await
                .status,
            200
        );
    }
}

/// Whether a fresh connection gets an HTTP answer (true) or is closed at
/// accept (false). Plain TCP so no TLS state muddies the answer.
async fn served(gw: &Server) -> bool {
    fetch(gw, "/health").await.is_some()
}

/// `GET path` on a new plain connection: the whole response when it is a
/// 200, `None` when the connection is closed at accept.
async fn fetch(gw: &Server, path: &str) -> Option<String> {
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let _ = tcp.write_all(req.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    buf.starts_with(b"HTTP/1.1 200")
        .then(|| String::from_utf8_lossy(&buf).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_per_ip_per_second() {
    let gw = gateway()
        .plain()
        .set("limits.connections_per_second", 5)
        .serve();
    let mut ok = 0;
    for _ in 0..12 {
        if served(&gw).await {
            ok += 1;
        }
    }
    assert!((5..=7).contains(&ok), "{ok} of 12 served");
    wait_until("the budget to refill", Duration::from_secs(2), || {
        served(&gw)
    })
    .await;
    // The budget refills one connection per 200 ms: the next one may have
    // to wait its turn too.
    let end = Instant::now() + Duration::from_secs(2);
    let m = loop {
        if let Some(m) = fetch(&gw, "/metrics").await {
            break m;
        }
        assert!(Instant::now() < end, "no budget for /metrics within 2 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        m.contains("tars_connections_rejected_total{kind=\"ip_connection_rate\"}"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_per_ip() {
    let gw = gateway()
        .plain()
        .set("limits.max_connections_per_ip", 3)
        .serve();
    let mut held = Vec::new();
    for _ in 0..3 {
        let s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        held.push(s);
    }
    // Once the accept loop has counted them, a fourth is closed at accept.
    wait_until(
        "a fourth connection to be closed at accept",
        Duration::from_secs(5),
        || async { !served(&gw).await },
    )
    .await;
    held.pop();
    wait_until(
        "a slot to free when a connection ends",
        Duration::from_secs(5),
        || served(&gw),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_and_its_upstream_dropped() {
    let fake = FakeOllama::start().await;
    let big = "x".repeat(16 * 1024);
    fake.set(Behavior::stream(vec![big; 20_000]));
    let gw = gw_for(&fake)
        .set("websocket.write_timeout_secs", 1)
        .set("websocket.outgoing_queue_frames", 8)
        .serve();
    let mut ws = session(&gw, "slow").await;
    send_chat(&mut ws, "a lot", None).await;
    // Never read again. The gateway's buffers fill, its write times out.
    let started = Instant::now();
    let closed = fake.wait_stream_closed(Duration::from_secs(30)).await;
    assert!(closed.is_some(), "upstream was not dropped");
    wait_until("the session to end", Duration::from_secs(10), || async {
        get(&gw, "/ws/health").await.json()["active_connections"] == 0
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        gw.logs().contains("client stopped reading"),
        "{}",
        gw.logs()
    );
    drop(ws);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_killed_mid_stream_then_restarted() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::Endless {
        delay: Duration::from_millis(10),
    });
    let gw = gw_for(&fake).serve();
    let mut ws = session(&gw, "c").await;
    assert_eq!(get(&gw, "/ready").await.status, 200);
    send_chat(&mut ws, "go", Some("k")).await;
    assert_eq!(recv(&mut ws).await["type"], "token");
    fake.stop().await;
    let g = collect(&mut ws).await;
    assert_eq!(g.end["type"], "error");
    assert_eq!(g.end["code"], "upstream_error");
    assert_eq!(g.end["conversation_id"], "k");
    // /ready flips to 503 (its cache is dropped when a stream fails) ...
    wait_until("/ready to say 503", Duration::from_secs(10), || async {
        get(&gw, "/ready").await.status == 503
    })
    .await;
    fake.restart().await;
    fake.set(Behavior::stream(["back"]));
    // ... and back once Ollama answers again.
    wait_until("/ready to say 200", Duration::from_secs(10), || async {
        get(&gw, "/ready").await.status == 200
    })
    .await;
    let g = chat(&mut ws, "again", None).await;
    assert_eq!(g.text(), "back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_is_cut_off() {
    let gw = gateway().plain().set("auth.open_enrollment", true).serve();
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(
        b"POST /auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"client",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(15),
        "{waited:?}"
    );
}
