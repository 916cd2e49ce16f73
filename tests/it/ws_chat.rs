//! `/ws/chat` end to end: the real gateway binary over TLS, a real WebSocket
//! client (tokio-tungstenite), and a fake Ollama speaking Ollama's NDJSON.

use std::time::{Duration, Instant};

use crate::support;
use crate::support::chat::*;
use crate::support::fake_ollama::{Behavior, Chunking, FakeOllama};
use crate::support::*;
use serde_json::{json, Value};

/// A gateway with open enrollment, pointed at `fake`.
fn gw_for(fake: &FakeOllama) -> GatewayBuilder {
    gateway()
        .ollama(&fake.url())
        .set("auth.open_enrollment", true)
        .set("ollama.retries", 0)
}

const TRICKY: &str =
    "quote \" backslash \\ newline \n tab \t emoji 🦀👩‍👩‍👧 <b>bold</b> & 'single' \u{0001} ünïcödé";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_flow_byte_exact_with_every_complete_field() {
    let fake = FakeOllama::start().await;
    let tokens = [
        "The", " capital", " of", " France", " is", " Paris", ".", TRICKY, "\"", "\\", "\n",
    ];
    fake.set(Behavior::stream(tokens).chunking(Chunking::Split(7)));
    let gw = gw_for(&fake).serve();
    let token = token_for(&gw, "client-001", None).await;
    let (mut ws, ack) = open_chat(&gw, &token).await;
    assert_eq!(ack["client_id"], "client-001");
    let sid = ack["session_id"].as_str().unwrap();
    assert_eq!(uuid_version(sid), Some(4), "{sid}");
    assert!(ack["timestamp"].as_str().unwrap().ends_with('Z'));

    let g = chat(&mut ws, "What is the capital of France?", Some("conv-123")).await;
    let texts: Vec<&str> = g
        .tokens
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect();
    assert_eq!(texts, tokens);
    for (i, t) in g.tokens.iter().enumerate() {
        assert_eq!(t["seq"], i as u64 + 1);
        assert_eq!(t["conversation_id"], "conv-123");
        assert!(t["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    let c = &g.end;
    assert_eq!(c["type"], "complete", "{c}");
    assert_eq!(c["conversation_id"], "conv-123");
    assert_eq!(c["total_tokens"], tokens.len() as u64);
    assert_eq!(c["model"], "mistral:7b-instruct");
    assert_eq!(c["done_reason"], "stop");
    let latency = c["latency_ms"].as_f64().unwrap();
    let first = c["first_token_ms"].as_f64().unwrap();
    assert!(first > 0.0 && first <= latency, "{c}");
    assert!(c["tokens_per_second"].as_f64().unwrap() > 0.0, "{c}");
    assert!(c["timestamp"].as_str().unwrap().ends_with('Z'));

    // What reached Ollama: stream on, the configured defaults as options.
    let req = &fake.requests()[0];
    assert_eq!(req["model"], "mistral:7b-instruct");
    assert_eq!(req["stream"], true);
    assert_eq!(
        req["messages"][0],
        json!({"role": "user", "content": "What is the capital of France?"})
    );
    assert_eq!(req["options"]["temperature"], 0.7);
    assert_eq!(req["options"]["top_p"], 0.9);
    assert_eq!(req["options"]["top_k"], 40);
    assert_eq!(req["options"]["num_predict"], 2048);
}

fn uuid_version(s: &str) -> Option<u8> {
    let parts: Vec<&str> = s.split('-').collect();
    (parts.len() == 5 && s.len() == 36).then(|| parts[2].as_bytes()[0] - b'0')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_is_byte_exact_and_thinking_is_forwarded() {
    let fake = FakeOllama::start().await;
    let gw = gw_for(&fake).serve();
    let mut ws = session(&gw, "c").await;
    fake.set(Behavior::Echo);
    let g = chat(&mut ws, TRICKY, None).await;
    assert_eq!(g.text(), TRICKY);
    assert_eq!(g.end["type"], "complete");
    assert!(g.end["conversation_id"].is_null());

    fake.set(Behavior::stream(["4"]).thinking(["Let me ", "think"]));
    let g = chat(&mut ws, "2+2?", None).await;
    let thought: String = g
        .thinking
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect();
    assert_eq!(thought, "Let me think");
    assert_eq!(g.text(), "4");
    // Ollama's eval_count (every token generated, thinking included).
    assert_eq!(g.end["total_tokens"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_options_and_model_allow_list() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::Echo);
    let gw = gw_for(&fake)
        .set(
            "ollama.allowed_models",
            vec!["mistral:7b-instruct", "llama3.2"],
        )
        .serve();
    let mut ws = session(&gw, "c").await;

    let g1 = chat(&mut ws, "first question", Some("conv-a")).await;
    assert_eq!(g1.text(), "first question");
    send(
        &mut ws,
        &json!({"type": "chat", "content": "second", "conversation_id": "conv-a", "model": "llama3.2",
                "system": "be brief", "options": {"temperature": 0.1, "top_p": 0.5, "top_k": 7, "max_tokens": 33}}),
    )
    .await;
    let g2 = collect(&mut ws).await;
    assert_eq!(g2.end["model"], "llama3.2");
    let req = &fake.requests()[1];
    assert_eq!(req["model"], "llama3.2");
    assert_eq!(
        req["messages"],
        json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first question"},
            {"role": "user", "content": "second"},
        ])
    );
    assert_eq!(
        req["options"],
        json!({"temperature": 0.1, "top_p": 0.5, "top_k": 7, "num_predict": 33})
    );

    // A chat without conversation_id stands alone.
    let _ = chat(&mut ws, "alone", None).await;
    assert_eq!(fake.requests()[2]["messages"].as_array().unwrap().len(), 1);

    // A model outside the allow-list is refused, and the socket lives on.
    send(
        &mut ws,
        &json!({"type": "chat", "content": "x", "model": "evil:70b"}),
    )
    .await;
    let e = recv(&mut ws).await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["code"], "model_not_allowed");
    assert_eq!(fake.chat_count(), 3);
    assert_eq!(chat(&mut ws, "still here", None).await.text(), "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_get_error_frames_and_the_socket_lives() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::Echo);
    let gw = gw_for(&fake)
        .set("websocket.max_content_bytes", 100)
        .serve();
    let mut ws = session(&gw, "c").await;
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    for bad in [
        "not json".to_string(),
        "[1,2,3]".into(),
        r#"{"type":"dance"}"#.into(),
        r#"{"type":"chat"}"#.into(),
        r#"{"type":"chat","content":""}"#.into(),
        format!(r#"{{"type":"chat","content":"{}"}}"#, "x".repeat(101)),
    ] {
        ws.send(Message::text(bad.clone())).await.unwrap();
        let e = recv(&mut ws).await;
        assert_eq!(e["type"], "error", "{bad}: {e}");
        assert_eq!(e["code"], "invalid_message", "{bad}: {e}");
        assert!(!e["message"].as_str().unwrap().is_empty());
    }
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(recv(&mut ws).await["code"], "invalid_message");
    // Client ping → server pong.
    send(&mut ws, &json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
    assert_eq!(chat(&mut ws, "works", None).await.text(), "works");
    assert_eq!(fake.chat_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_message_closes_1009() {
    let fake = FakeOllama::start().await;
    let gw = gw_for(&fake)
        .set("websocket.max_message_bytes", 2048)
        .set("websocket.max_content_bytes", 1024)
        .serve();
    let mut ws = session(&gw, "c").await;
    send(
        &mut ws,
        &json!({"type": "chat", "content": "y".repeat(4000)}),
    )
    .await;
    assert_eq!(expect_close(&mut ws).await, Some(1009));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_auth_failure_is_refused_before_the_upgrade() {
    let fake = FakeOllama::start().await;
    let gw = gw_for(&fake).serve();
    let r = post_json(&gw, "/auth/token", &json!({"client_id": "c"}), None).await;
    let pair = r.json();
    let access = pair["access_token"].as_str().unwrap().to_string();
    let refresh = pair["refresh_token"].as_str().unwrap().to_string();
    let mut claims = support::jwt::good_claims("c");
    claims["exp"] = json!(support::jwt::now() - 3600);
    let expired = support::jwt::sign(
        &claims,
        TEST_SECRET.as_bytes(),
        jsonwebtoken::Algorithm::HS256,
    );
    // A second access token, revoked.
    let revoked = token_for(&gw, "c", None).await;
    let r = post_json(&gw, "/auth/revoke", &json!({}), Some(&revoked)).await;
    assert_eq!(r.status, 200, "{}", r.text());

    for (name, path) in [
        ("no token", "/ws/chat".to_string()),
        ("garbage", "/ws/chat?token=garbage".to_string()),
        ("refresh token", format!("/ws/chat?token={refresh}")),
        ("expired", format!("/ws/chat?token={expired}")),
        ("revoked", format!("/ws/chat?token={revoked}")),
        (
            "tampered",
            format!("/ws/chat?token={}x", &access[..access.len() - 1]),
        ),
    ] {
        let err = ws_connect(&gw, &path, &[])
            .await
            .err()
            .unwrap_or_else(|| panic!("{name}: upgraded"));
        assert_eq!(http_status(&err), Some(401), "{name}: {err}");
    }
    // The bearer header works as well as the query parameter.
    let auth = format!("Bearer {access}");
    assert!(ws_connect(&gw, "/ws/chat", &[("authorization", &auth)])
        .await
        .is_ok());
    // A plain GET is not an upgrade.
    let r = get(&gw, &format!("/ws/chat?token={access}")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "not_websocket");
}

fn http_status(e: &tokio_tungstenite::tungstenite::Error) -> Option<u16> {
    match e {
        tokio_tungstenite::tungstenite::Error::Http(r) => Some(r.status().as_u16()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_check() {
    let fake = FakeOllama::start().await;
    let gw = gw_for(&fake)
        .set("cors.origins", vec!["https://ui.lan"])
        .serve();
    let token = token_for(&gw, "c", None).await;
    let path = format!("/ws/chat?token={token}");
    let err = ws_connect(&gw, &path, &[("origin", "https://evil.example")])
        .await
        .err()
        .unwrap();
    assert_eq!(http_status(&err), Some(403));
    assert!(ws_connect(&gw, &path, &[("origin", "https://ui.lan")])
        .await
        .is_ok());
    let same = format!("https://localhost:{}", gw.addr.port());
    assert!(ws_connect(&gw, &path, &[("origin", &same)]).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits() {
    let fake = FakeOllama::start().await;
    let gw = gw_for(&fake)
        .set("websocket.max_connections", 2)
        .set("websocket.max_connections_per_client", 1)
        .serve();
    let a = token_for(&gw, "a", None).await;
    let b = token_for(&gw, "b", None).await;
    let c = token_for(&gw, "c", None).await;
    let (_wa, _) = open_chat(&gw, &a).await;
    let err = ws_connect(&gw, &format!("/ws/chat?token={a}"), &[])
        .await
        .err()
        .unwrap();
    assert_eq!(http_status(&err), Some(503), "per-client limit");
    let (wb, _) = open_chat(&gw, &b).await;
    let err = ws_connect(&gw, &format!("/ws/chat?token={c}"), &[])
        .await
        .err()
        .unwrap();
    match &err {
        tokio_tungstenite::tungstenite::Error::Http(r) => {
            assert_eq!(r.status(), 503);
            assert_eq!(r.headers()["retry-after"], "5");
        }
        other => panic!("{other}"),
    }
    drop(wb);
    // The slot frees once the session ends.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if ws_connect(&gw, &format!("/ws/chat?token={c}"), &[])
            .await
            .is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let h = get(&gw, "/ws/health").await.json();
    assert_eq!(h["max_connections"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_and_idle_close() {
    let fake = FakeOllama::start().await;
    let gw = gw_for(&fake)
        .set("websocket.heartbeat_interval_secs", 1)
        .set("websocket.timeout_secs", 3)
        .serve();
    let mut ws = session(&gw, "c").await;
    let start = Instant::now();
    match next_event(&mut ws).await {
        Event::Json(v) => {
            assert_eq!(v["type"], "ping");
            assert!(v["timestamp"].is_string());
        }
        other => panic!("{other:?}"),
    }
    assert!(start.elapsed() < Duration::from_millis(2500));
    // Answer one ping, then go silent: closed 1001 after timeout_secs of silence.
    send(&mut ws, &json!({"type": "pong"})).await;
    let silent_from = Instant::now();
    assert_eq!(expect_close(&mut ws).await, Some(1001));
    let waited = silent_from.elapsed();
    assert!(
        waited >= Duration::from_millis(2500) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_refused_then_up_is_retried() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::stream(["back", " up"]));
    let gw = gw_for(&fake)
        .set("ollama.retries", 3)
        .set("ollama.retry_base_delay_secs", 0.3)
        .serve();
    let mut ws = session(&gw, "c").await;
    fake.stop().await;
    send_chat(&mut ws, "hello", None).await;
    // Up again once an attempt has been refused and a retry is scheduled.
    gw.wait_log("retrying", Duration::from_secs(5)).await;
    fake.restart().await;
    let g = collect(&mut ws).await;
    assert_eq!(g.end["type"], "complete", "{}", g.end);
    assert_eq!(g.text(), "back up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_down_is_unavailable_after_exactly_the_retries() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::Status(
        503,
        "server busy, please try again".into(),
    ));
    let gw = gw_for(&fake)
        .set("ollama.retries", 2)
        .set("ollama.retry_base_delay_secs", 0.05)
        .serve();
    let mut ws = session(&gw, "c").await;
    let g = chat(&mut ws, "hello", Some("c1")).await;
    assert_eq!(g.end["type"], "error");
    assert_eq!(g.end["code"], "upstream_unavailable");
    assert_eq!(g.end["conversation_id"], "c1");
    assert_eq!(fake.chat_count(), 3, "one request and exactly two retries");

    // Connection refused: same code.
    fake.stop().await;
    let g = chat(&mut ws, "hello", None).await;
    assert_eq!(g.end["code"], "upstream_unavailable");

    // A 404 (model not found) is not retried and carries Ollama's message.
    fake.restart().await;
    fake.set(Behavior::Status(
        404,
        "model 'mistral:7b-instruct' not found, try pulling it first".into(),
    ));
    let before = fake.chat_count();
    let g = chat(&mut ws, "hello", None).await;
    assert_eq!(g.end["code"], "upstream_error");
    assert!(
        g.end["message"]
            .as_str()
            .unwrap()
            .contains("try pulling it first"),
        "{}",
        g.end
    );
    assert_eq!(fake.chat_count(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_end_with_an_error_never_a_hang() {
    let fake = FakeOllama::start().await;
    let gw = gw_for(&fake)
        .set("ollama.first_token_timeout_secs", 1)
        .set("ollama.idle_timeout_secs", 1)
        .serve();
    let mut ws = session(&gw, "c").await;
    for (name, b, tokens_before) in [
        ("dropped", Behavior::DropAfter(2), 2),
        ("malformed", Behavior::MalformedAfter(1), 1),
        (
            "error line",
            Behavior::ErrorAfter(3, "CUDA out of memory".into()),
            3,
        ),
        ("stall", Behavior::Stall, 0),
    ] {
        fake.set(b);
        let started = Instant::now();
        let g = chat(&mut ws, "go", None).await;
        assert_eq!(g.end["type"], "error", "{name}: {}", g.end);
        assert_eq!(g.end["code"], "upstream_error", "{name}");
        assert_eq!(g.tokens.len(), tokens_before, "{name}");
        assert!(started.elapsed() < Duration::from_secs(5), "{name}");
        if name == "error line" {
            assert!(g.end["message"]
                .as_str()
                .unwrap()
                .contains("CUDA out of memory"));
        }
    }
    // Slow but within the idle timeout between tokens: fine.
    fake.set(Behavior::stream(["a", "b"]).delay(Duration::from_millis(300)));
    assert_eq!(chat(&mut ws, "go", None).await.end["type"], "complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_drops_the_upstream_within_100ms() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::Endless {
        delay: Duration::from_millis(5),
    });
    let gw = gw_for(&fake).serve();
    let mut ws = session(&gw, "c").await;
    send_chat(&mut ws, "go on forever", None).await;
    read_tokens(&mut ws, 3).await;
    let dropped = Instant::now();
    drop(ws);
    let took = fake
        .stream_closed_after(dropped, Duration::from_secs(5))
        .await;
    assert!(
        took < Duration::from_millis(100),
        "upstream dropped after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_generation_and_the_next_chat_works() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::Endless {
        delay: Duration::from_millis(5),
    });
    let gw = gw_for(&fake).serve();
    let mut ws = session(&gw, "c").await;
    send_chat(&mut ws, "long", Some("k")).await;
    // Two more chats wait in the queue.
    send_chat(&mut ws, "queued", Some("k")).await;
    // (The queued chat is told its place: a `status` frame.)
    for _ in 0..3 {
        assert_eq!(recv_no_status(&mut ws).await["type"], "token");
    }
    send(&mut ws, &json!({"type": "cancel", "conversation_id": "k"})).await;
    let mut completes = Vec::new();
    while completes.len() < 2 {
        let v = recv(&mut ws).await;
        match v["type"].as_str().unwrap() {
            "token" | "status" => {}
            "complete" => completes.push(v),
            other => panic!("{other}: {v}"),
        }
    }
    for c in &completes {
        assert_eq!(c["done_reason"], "cancelled", "{c}");
    }
    assert!(fake
        .wait_stream_closed(Duration::from_secs(2))
        .await
        .is_some());
    assert_eq!(fake.chat_count(), 1, "the queued chat never reached Ollama");
    fake.set(Behavior::stream(["ok"]));
    let g = chat(&mut ws, "again", None).await;
    assert_eq!(g.end["done_reason"], "stop");
    assert_eq!(g.text(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_overflow_is_busy() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::Endless {
        delay: Duration::from_millis(20),
    });
    let gw = gw_for(&fake).set("websocket.message_queue_size", 1).serve();
    let mut ws = session(&gw, "c").await;
    send_chat(&mut ws, "m0", Some("q0")).await;
    // Once q0 is generating, one chat may wait and the next is refused.
    assert_eq!(recv(&mut ws).await["type"], "token");
    for i in 1..3 {
        send(&mut ws, &json!({"type": "chat", "content": format!("m{i}"), "conversation_id": format!("q{i}")})).await;
    }
    loop {
        let v = recv_no_status(&mut ws).await;
        if v["type"] == "error" {
            assert_eq!(v["code"], "busy");
            assert_eq!(v["conversation_id"], "q2");
            break;
        }
        assert_eq!(v["type"], "token");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_closes_the_live_session_with_1008() {
    let fake = FakeOllama::start().await;
    let gw = gw_for(&fake).serve();
    let token = token_for(&gw, "c", None).await;
    let (mut ws, _) = open_chat(&gw, &token).await;
    let r = post_json(&gw, "/auth/revoke", &json!({}), Some(&token)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["sessions_closed"], 1);
    let notice = recv(&mut ws).await;
    assert_eq!(notice["type"], "system", "{notice}");
    assert!(notice["message"].as_str().unwrap().contains("revoked"));
    assert_eq!(expect_close(&mut ws).await, Some(1008));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_list_is_for_admins_and_metrics_count() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::stream(["a", "b", "c"]));
    let gw = gw_for(&fake).client("boss", "boss-secret", true).serve();
    let user = token_for(&gw, "user-1", None).await;
    let admin = token_for(&gw, "boss", Some("boss-secret")).await;
    let (mut ws, ack) = open_chat(&gw, &user).await;
    let _ = chat(&mut ws, "hi", None).await;

    let r = request(&gw, "GET", "/ws/sessions", &[], None).await;
    assert_eq!(r.status, 401);
    let auth = format!("Bearer {user}");
    let r = request(
        &gw,
        "GET",
        "/ws/sessions",
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    let auth = format!("Bearer {admin}");
    let r = request(
        &gw,
        "GET",
        "/ws/sessions",
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["active_sessions"], 1);
    let s = &v["sessions"][0];
    assert_eq!(s["session_id"], ack["session_id"]);
    assert_eq!(s["client_id"], "user-1");
    assert_eq!(s["ip_address"], "127.0.0.1");
    assert_eq!(s["token_count"], 3);
    assert_eq!(s["message_count"], 1);

    let m = request(
        &gw,
        "GET",
        "/metrics",
        &[("accept", "application/json")],
        None,
    )
    .await
    .json();
    assert_eq!(m["active_connections"], 1);
    assert_eq!(m["total_connections"], 1);
    assert_eq!(m["total_tokens"], 3);
    assert_eq!(m["total_messages"], 1);
    let text = get(&gw, "/metrics").await.text();
    assert!(
        text.contains("tars_generations_total{kind=\"complete\"} 1"),
        "{text}"
    );
    let h = get(&gw, "/ws/health").await.json();
    assert_eq!(h["active_connections"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_sessions_receive_byte_exact_text() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::Echo);
    let gw = gw_for(&fake).set("websocket.max_connections", 200).serve();
    let token = token_for(&gw, "many", None).await;
    let gw = std::sync::Arc::new(gw);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let gw = gw.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ws, _) = open_chat(&gw, &token).await;
            let text = format!("#{i} {TRICKY} {}", "é".repeat(i));
            let g = chat(&mut ws, &text, Some(&format!("conv-{i}"))).await;
            assert_eq!(g.end["type"], "complete", "{}", g.end);
            assert_eq!(g.text(), text);
            assert!(g
                .tokens
                .iter()
                .all(|t| t["conversation_id"] == format!("conv-{i}")));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(fake.chat_count(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tars_chat_cli_streams_an_answer() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::stream(["Paris", " is", " the", " capital", "."]));
    let gw = gw_for(&fake).serve();
    let url = format!("wss://localhost:{}", gw.addr.port());
    let ca = gw.cert.clone().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tars"))
            .args([
                "chat",
                "--url",
                &url,
                "--client-id",
                "cli-user",
                "--ca",
                ca.to_str().unwrap(),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"What is the capital of France?\n")
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim_end(), "Paris is the capital.");
    assert!(stderr.contains("5 tokens"), "{stderr}");
    let sent: Vec<Value> = fake.requests();
    assert_eq!(
        sent[0]["messages"][0]["content"],
        "What is the capital of France?"
    );
}
