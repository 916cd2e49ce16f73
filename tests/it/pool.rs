//! The upstream pool through the whole gateway (issue 16, and the status
//! frames of issue 17): several fake upstreams on port 0 (Ollama's and the
//! OpenAI dialect), real TLS and WebSocket clients. Routing by model, least
//! loaded, failover before the first token and none after it, the circuit
//! breaker going down and coming back, discovery, an OpenAI upstream
//! streaming byte-exact, `max_concurrent` held, reload adding and removing
//! upstreams under a running stream, `queued` and `loading_model` frames.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::chat::*;
use crate::support::fake_ollama::{Behavior, FakeOllama};
use crate::support::fake_openai::{self, FakeOpenAi};
use crate::support::*;

pub(crate) const MISTRAL: &str = "mistral:7b-instruct";
pub(crate) const TRICKY: &str =
    "quote \" backslash \\ newline \n tab \t emoji 🦀👩‍👩‍👧 <b>bold</b> & 'single' \u{0001} ünïcödé";

/// A gateway allowing three models, open enrollment, no retries, room for
/// many sessions, quick health checks; no upstream yet.
pub(crate) fn base() -> GatewayBuilder {
    gateway()
        .set("auth.open_enrollment", true)
        .set("ollama.retries", 0)
        .set("ollama.connect_timeout_secs", 2)
        .set("websocket.max_connections", 64)
        .set("websocket.max_connections_per_client", 64)
        .set(
            "ollama.allowed_models",
            toml::Value::Array(vec![MISTRAL.into(), "llama3.2".into(), "smollm2".into()]),
        )
        .set("routing.health_interval_secs", 1)
        .set("routing.cooldown_secs", 1)
        .set("routing.failure_threshold", 1)
        .set("routing.discovery_interval_secs", 1)
}

pub(crate) fn fields(pairs: &[(&str, toml::Value)]) -> toml::Table {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

pub(crate) fn models(list: &[&str]) -> toml::Value {
    toml::Value::Array(list.iter().map(|m| (*m).into()).collect())
}

/// The gateway over two Ollama upstreams `a` and `b` with no extra fields.
fn two_ollamas(a: &FakeOllama, b: &FakeOllama) -> GatewayBuilder {
    base()
        .upstream("a", &a.url(), "ollama", fields(&[]))
        .upstream("b", &b.url(), "ollama", fields(&[]))
}

/// Send a chat for `model` and collect it.
pub(crate) async fn chat_model(ws: &mut Ws, model: &str, content: &str, conv: &str) -> Generation {
    send(
        ws,
        &json!({"type": "chat", "content": content, "model": model, "conversation_id": conv}),
    )
    .await;
    collect(ws).await
}

/// `/ready`'s entry for upstream `name` (loopback callers get details).
pub(crate) async fn ready_entry(gw: &Server, name: &str) -> Value {
    let r = get(gw, "/ready").await;
    let v = r.json();
    v["upstreams"]
        .as_array()
        .unwrap_or_else(|| panic!("no upstreams in /ready: {v}"))
        .iter()
        .find(|u| u["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_model_and_shares_equal_upstreams() {
    let (a, b) = (FakeOllama::start().await, FakeOllama::start().await);
    for f in [&a, &b] {
        f.set(Behavior::stream(["o", "k"]).delay(Duration::from_millis(100)));
    }
    let gw = base()
        .upstream(
            "a",
            &a.url(),
            "ollama",
            fields(&[("models", models(&[MISTRAL]))]),
        )
        .upstream(
            "b",
            &b.url(),
            "ollama",
            fields(&[("models", models(&[MISTRAL, "llama3.2"]))]),
        )
        .serve();
    // A model only the second upstream serves goes there.
    let mut ws = session(&gw, "c").await;
    let g = chat_model(&mut ws, "llama3.2", "hi", "m1").await;
    assert_eq!(g.end["type"], "complete", "{}", g.end);
    assert_eq!(g.end["upstream"], "b");
    assert_eq!((a.chat_count(), b.chat_count()), (0, 1));
    // 20 concurrent chats across the two equal upstreams: a fair share each.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..20 {
        let mut ws = session(&gw, &format!("c{i}")).await;
        set.spawn(async move {
            let g = chat_model(&mut ws, MISTRAL, "hi", "x").await;
            assert_eq!(g.end["type"], "complete", "{}", g.end);
            g.end["upstream"].as_str().unwrap().to_string()
        });
    }
    let mut on_a = 0;
    while let Some(r) = set.join_next().await {
        on_a += usize::from(r.unwrap() == "a");
    }
    assert!((7..=13).contains(&on_a), "{on_a} of 20 on a");
    assert_eq!(a.chat_count(), on_a);
    assert_eq!(b.chat_count(), 21 - on_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_before_the_first_token_is_invisible() {
    let (a, b) = (FakeOllama::start().await, FakeOllama::start().await);
    a.set(Behavior::Status(
        503,
        "server busy, please try again".into(),
    ));
    b.set(Behavior::stream(["from ", "b"]));
    // b has nothing loaded: a (loaded, or unknown and first) is tried first.
    b.set_ps(&[]);
    let gw = base()
        .set("routing.failure_threshold", 5)
        .upstream("a", &a.url(), "ollama", fields(&[]))
        .upstream("b", &b.url(), "ollama", fields(&[]))
        .serve();
    let mut ws = session(&gw, "c").await;
    // a is first in order and equally free: it is tried, answers 503, and
    // the chat completes through b with nothing but the answer.
    let g = chat_model(&mut ws, MISTRAL, "hi", "f1").await;
    assert_eq!(g.end["type"], "complete", "{}", g.end);
    assert_eq!(g.end["upstream"], "b");
    assert_eq!(g.text(), "from b");
    // Only b's model load is announced; the failover itself is silent.
    assert!(
        g.status.iter().all(|s| s["phase"] == "loading_model"),
        "{:?}",
        g.status
    );
    assert_eq!(a.chat_count(), 1);
    // a switched off (connection refused): same.
    a.stop().await;
    let g = chat_model(&mut ws, MISTRAL, "hi", "f2").await;
    assert_eq!(g.end["type"], "complete", "{}", g.end);
    assert_eq!(g.end["upstream"], "b");
    let m = get(&gw, "/metrics").await.text();
    assert!(
        m.contains(r#"tars_upstream_requests_total{upstream="a",outcome="failover"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"tars_upstream_requests_total{upstream="b",outcome="ok"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"tars_upstream_tokens_total{upstream="b"} 4"#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_failover_after_a_token_went_out() {
    let (a, b) = (FakeOllama::start().await, FakeOllama::start().await);
    a.set(Behavior::DropAfter(2));
    b.set_ps(&[]); // a is preferred (see above)
    let gw = two_ollamas(&a, &b).serve();
    let mut ws = session(&gw, "c").await;
    let g = chat_model(&mut ws, MISTRAL, "hi", "n1").await;
    assert_eq!(g.tokens.len(), 2);
    assert_eq!(g.end["type"], "error", "{}", g.end);
    assert_eq!(g.end["code"], "upstream_error");
    assert_eq!(b.chat_count(), 0, "never replayed elsewhere");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_takes_a_dead_upstream_out_and_back_after_the_cooldown() {
    let (a, b) = (FakeOllama::start().await, FakeOllama::start().await);
    let gw = two_ollamas(&a, &b).serve();
    a.stop().await;
    wait_until("a marked down", Duration::from_secs(10), || async {
        ready_entry(&gw, "a").await["routable"] == false
    })
    .await;
    assert_eq!(get(&gw, "/ready").await.status, 200, "b is up");
    let mut ws = session(&gw, "c").await;
    let g = chat_model(&mut ws, MISTRAL, "hi", "d1").await;
    assert_eq!(g.end["upstream"], "b");
    let m = get(&gw, "/metrics").await.text();
    assert!(m.contains(r#"tars_upstream_up{upstream="a"} 0"#), "{m}");
    // Restarted on the same port: back within cooldown + interval.
    a.restart().await;
    let t = Instant::now();
    wait_until("a back up", Duration::from_secs(10), || async {
        ready_entry(&gw, "a").await["routable"] == true
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    b.stop().await;
    wait_until("b marked down", Duration::from_secs(10), || async {
        ready_entry(&gw, "b").await["routable"] == false
    })
    .await;
    let g = chat_model(&mut ws, MISTRAL, "hi", "d2").await;
    assert_eq!(g.end["type"], "complete", "{}", g.end);
    assert_eq!(g.end["upstream"], "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_down_is_upstream_unavailable_at_once() {
    let (a, b) = (FakeOllama::start().await, FakeOllama::start().await);
    let gw = two_ollamas(&a, &b).serve();
    a.stop().await;
    b.stop().await;
    wait_until("both down", Duration::from_secs(10), || async {
        get(&gw, "/ready").await.status == 503
            && ready_entry(&gw, "a").await["routable"] == false
            && ready_entry(&gw, "b").await["routable"] == false
    })
    .await;
    let mut ws = session(&gw, "c").await;
    let t = Instant::now();
    let g = chat_model(&mut ws, MISTRAL, "hi", "u1").await;
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(g.end["code"], "upstream_unavailable", "{}", g.end);
    assert!(
        g.end["message"].as_str().unwrap().contains(MISTRAL),
        "{}",
        g.end
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_discovered_from_api_tags_and_v1_models() {
    let a = FakeOllama::start().await;
    a.set_tags(&["llama3.2:latest"]);
    let o = FakeOpenAi::start().await;
    o.set_models(["smollm2"]);
    o.set(fake_openai::Behavior::stream(["small ", "talk"]));
    let gw = base()
        .upstream("nas", &a.url(), "ollama", fields(&[]))
        .upstream("laptop", &o.url(), "openai", fields(&[]))
        .serve();
    wait_until("discovered", Duration::from_secs(10), || async {
        ready_entry(&gw, "nas").await["models"] == json!(["llama3.2", "llama3.2:latest"])
            && ready_entry(&gw, "laptop").await["models"] == json!(["smollm2"])
    })
    .await;
    // /models: the allowed models an up upstream serves (mistral: none).
    let token = token_for(&gw, "c", None).await;
    let r = request(
        &gw,
        "GET",
        "/models",
        &[("authorization", &format!("Bearer {token}"))],
        None,
    )
    .await;
    assert_eq!(
        r.json()["models"],
        json!(["llama3.2", "smollm2"]),
        "{}",
        r.text()
    );
    let (mut ws, _) = open_chat(&gw, &token).await;
    let g = chat_model(&mut ws, "smollm2", "hi", "s1").await;
    assert_eq!(g.end["upstream"], "laptop", "{}", g.end);
    assert_eq!(g.text(), "small talk");
    let g = chat_model(&mut ws, MISTRAL, "hi", "s2").await;
    assert_eq!(g.end["code"], "upstream_unavailable", "{}", g.end);
    // A 4xx (model gone) makes the upstream rediscover.
    let before = a.tags_count();
    a.set(Behavior::Status(404, "model 'llama3.2' not found".into()));
    let g = chat_model(&mut ws, "llama3.2", "hi", "s3").await;
    assert_eq!(g.end["code"], "upstream_error", "{}", g.end);
    wait_until("rediscovery", Duration::from_secs(5), || async {
        a.tags_count() > before
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_upstream_streams_byte_exact_with_its_key() {
    let o = FakeOpenAi::start().await;
    o.set_models(["smollm2"]);
    o.require_api_key("sk-test-key");
    let tokens = fake_openai::split_tokens(TRICKY);
    o.set(fake_openai::Behavior::stream(tokens.clone()));
    let b = base();
    let key = b.dir().join("laptop.key");
    std::fs::write(&key, "sk-test-key\n").unwrap();
    let gw = b
        .upstream(
            "laptop",
            &o.url(),
            "openai",
            fields(&[
                ("models", models(&["smollm2"])),
                ("api_key_file", key.display().to_string().into()),
            ]),
        )
        .serve();
    let mut ws = session(&gw, "c").await;
    let g = chat_model(&mut ws, "smollm2", "say it", "o1").await;
    assert_eq!(g.end["type"], "complete", "{}", g.end);
    assert_eq!(g.text(), TRICKY);
    let texts: Vec<&str> = g
        .tokens
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect();
    assert_eq!(texts, tokens.iter().map(String::as_str).collect::<Vec<_>>());
    for (i, t) in g.tokens.iter().enumerate() {
        assert_eq!(t["seq"], i as u64 + 1);
    }
    assert_eq!(g.end["upstream"], "laptop");
    assert_eq!(g.end["total_tokens"], tokens.len() as u64);
    assert_eq!(g.end["done_reason"], "stop");
    let req = &o.requests()[0];
    assert_eq!(req.body["stream"], true);
    assert_eq!(req.body["stream_options"]["include_usage"], true);
    assert_eq!(
        req.body["messages"].as_array().unwrap().last().unwrap()["content"],
        "say it"
    );
    assert!(!gw.logs().contains("sk-test-key"), "the key was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_one_is_never_exceeded_and_waiters_are_told() {
    let o = FakeOpenAi::start().await;
    o.set_models(["smollm2"]);
    o.set(fake_openai::Behavior::stream(["a", "b", "c"]).delay(Duration::from_millis(60)));
    let gw = base()
        .upstream(
            "laptop",
            &o.url(),
            "openai",
            fields(&[
                ("max_concurrent", 1.into()),
                ("models", models(&["smollm2"])),
            ]),
        )
        .serve();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..5 {
        let mut ws = session(&gw, &format!("c{i}")).await;
        set.spawn(async move { chat_model(&mut ws, "smollm2", "hi", "q").await });
    }
    let mut queued = 0;
    while let Some(g) = set.join_next().await {
        let g = g.unwrap();
        assert_eq!(g.end["type"], "complete", "{}", g.end);
        assert_eq!(g.text(), "abc");
        for s in &g.status {
            assert_eq!(s["phase"], "queued", "{s}");
            assert!(s["position"].as_u64().unwrap() < 4, "{s}");
        }
        queued += usize::from(!g.status.is_empty());
    }
    assert_eq!(o.max_concurrent(), 1);
    assert!(queued >= 3, "{queued} chats were told they wait");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_upstreams_without_dropping_a_stream() {
    let (a, b) = (FakeOllama::start().await, FakeOllama::start().await);
    let tokens: Vec<String> = (0..30).map(|i| format!("t{i} ")).collect();
    a.set(Behavior::stream(tokens.clone()).delay(Duration::from_millis(30)));
    b.set(Behavior::stream(["from b"]));
    let gw = base()
        .upstream("a", &a.url(), "ollama", fields(&[]))
        .serve();
    let mut ws = session(&gw, "c").await;
    send_chat(&mut ws, "long", Some("r1")).await;
    assert_eq!(recv(&mut ws).await["type"], "token");
    // Replace a by b in the file and reload while a's answer streams.
    let text = std::fs::read_to_string(&gw.config).unwrap();
    let text = text
        .replace(&a.url(), &b.url())
        .replace("name = \"a\"", "name = \"b\"");
    std::fs::write(&gw.config, text).unwrap();
    gw.handle.as_ref().unwrap().reload().await.unwrap();
    let g = collect(&mut ws).await;
    assert_eq!(g.end["type"], "complete", "{}", g.end);
    assert_eq!(g.end["upstream"], "a");
    assert_eq!(g.tokens.len(), tokens.len() - 1);
    let g = chat_model(&mut ws, MISTRAL, "next", "r2").await;
    assert_eq!(g.end["upstream"], "b", "{}", g.end);
    let m = get(&gw, "/metrics").await.text();
    assert!(
        !m.contains(r#"upstream="a""#),
        "a's series stay after removal: {m}"
    );
}

/// A reload that moves an upstream (same name, new URL) keeps counting the
/// stream still running at the old URL: with `max_concurrent = 1` a second
/// chat waits for it instead of opening at the new URL at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_moving_an_upstream_keeps_its_running_streams_slots() {
    let (a, b) = (FakeOllama::start().await, FakeOllama::start().await);
    let tokens: Vec<String> = (0..20).map(|i| format!("t{i} ")).collect();
    a.set(Behavior::stream(tokens.clone()).delay(Duration::from_millis(30)));
    b.set(Behavior::stream(["from b"]));
    let gw = base()
        .upstream(
            "desk",
            &a.url(),
            "ollama",
            fields(&[("max_concurrent", 1.into())]),
        )
        .serve();
    let mut first = session(&gw, "c1").await;
    send(
        &mut first,
        &json!({"type": "chat", "content": "long", "conversation_id": "m1"}),
    )
    .await;
    assert_eq!(recv(&mut first).await["type"], "token");
    // Move `desk` to b while its answer from a streams.
    let text = std::fs::read_to_string(&gw.config).unwrap();
    std::fs::write(&gw.config, text.replace(&a.url(), &b.url())).unwrap();
    gw.handle.as_ref().unwrap().reload().await.unwrap();
    let e = ready_entry(&gw, "desk").await;
    assert_eq!(e["url"], b.url(), "{e}");
    assert_eq!(e["active"], 1, "the running stream is not counted: {e}");
    let mut second = session(&gw, "c2").await;
    let g2 = tokio::spawn(async move { chat_model(&mut second, MISTRAL, "next", "m2").await });
    let g1 = collect(&mut first).await;
    assert_eq!(g1.end["type"], "complete", "{}", g1.end);
    assert_eq!(g1.tokens.len(), tokens.len() - 1);
    let g2 = g2.await.unwrap();
    assert_eq!(g2.end["type"], "complete", "{}", g2.end);
    assert_eq!(g2.text(), "from b");
    assert_eq!(
        g2.status.first().map(|s| &s["phase"]),
        Some(&json!("queued"))
    );
    // b's answer opened only after a's had ended: one at a time throughout.
    let a_closed = a.closed_streams()[0].closed_at;
    let b_opened = b.closed_streams()[0].opened_at;
    assert!(b_opened >= a_closed, "b opened while a still streamed");
    assert_eq!(ready_entry(&gw, "desk").await["active"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_chats_in_one_session_are_told_their_place() {
    let a = FakeOllama::start().await;
    a.set(Behavior::stream(["x", "y"]).delay(Duration::from_millis(150)));
    let gw = base().ollama(&a.url()).serve();
    let mut ws = session(&gw, "c").await;
    for c in ["q1", "q2", "q3"] {
        send(
            &mut ws,
            &json!({"type": "chat", "content": c, "conversation_id": c}),
        )
        .await;
    }
    // Every frame until the three ends, in order.
    let mut frames = Vec::new();
    let mut ends = 0;
    while ends < 3 {
        let v = recv(&mut ws).await;
        if v["type"] == "complete" || v["type"] == "error" {
            ends += 1;
        }
        frames.push(v);
    }
    let status: Vec<(String, u64)> = frames
        .iter()
        .filter(|v| v["type"] == "status")
        .map(|v| {
            assert_eq!(v["phase"], "queued", "{v}");
            assert!(v["timestamp"].is_string());
            (
                v["conversation_id"].as_str().unwrap().to_string(),
                v["position"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        status,
        vec![("q2".into(), 1), ("q3".into(), 2), ("q3".into(), 1)],
        "{frames:?}"
    );
    // q3's move to position 1 comes after q1's complete, before q2's tokens.
    let idx = |pred: &dyn Fn(&Value) -> bool| frames.iter().position(pred).unwrap();
    let q1_end = idx(&|v| v["type"] == "complete" && v["conversation_id"] == "q1");
    let q3_moved = frames
        .iter()
        .rposition(|v| v["type"] == "status" && v["conversation_id"] == "q3")
        .unwrap();
    let q2_first = idx(&|v| v["type"] == "token" && v["conversation_id"] == "q2");
    assert!(q1_end < q3_moved && q3_moved < q2_first, "{frames:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_model_is_said_once_when_api_ps_does_not_list_it() {
    let a = FakeOllama::start().await;
    a.set(Behavior::stream(["p", "q", "r"]));
    let gw = base().ollama(&a.url()).serve();
    let mut ws = session(&gw, "c").await;
    // The fake's /api/ps lists the default model: nothing said.
    let g = chat_model(&mut ws, MISTRAL, "hi", "l0").await;
    assert!(g.status.is_empty(), "{:?}", g.status);
    a.set_ps(&[]);
    tokio::time::sleep(Duration::from_millis(1600)).await; // the /api/ps cache
    send_chat(&mut ws, "hi", Some("l1")).await;
    let first = recv(&mut ws).await;
    assert_eq!(first["type"], "status", "{first}");
    assert_eq!(first["phase"], "loading_model");
    assert_eq!(first["model"], MISTRAL);
    assert_eq!(first["conversation_id"], "l1");
    let g = collect(&mut ws).await;
    assert!(g.status.is_empty(), "said once: {:?}", g.status);
    assert_eq!(g.text(), "pqr");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_errors_become_error_frames_and_cancel_drops_the_request() {
    let o = FakeOpenAi::start().await;
    o.set_models(["smollm2"]);
    let gw = base()
        .upstream(
            "laptop",
            &o.url(),
            "openai",
            fields(&[("models", models(&["smollm2"]))]),
        )
        .serve();
    let mut ws = session(&gw, "c").await;
    // An error event mid-answer: upstream_error with the server's message.
    o.set(fake_openai::Behavior::ErrorAfter(
        2,
        "the KV cache is full".into(),
    ));
    let g = chat_model(&mut ws, "smollm2", "hi", "e1").await;
    assert_eq!(g.tokens.len(), 2);
    assert_eq!(g.end["code"], "upstream_error", "{}", g.end);
    assert!(
        g.end["message"]
            .as_str()
            .unwrap()
            .contains("the KV cache is full"),
        "{}",
        g.end
    );
    // A 400 before any token: its JSON message, no failover, no retry.
    o.set(fake_openai::Behavior::Status(
        400,
        "max_tokens is too large".into(),
    ));
    let g = chat_model(&mut ws, "smollm2", "hi", "e2").await;
    assert_eq!(g.end["code"], "upstream_error", "{}", g.end);
    assert!(
        g.end["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens is too large"),
        "{}",
        g.end
    );
    // Cancel: the request to the server is dropped within 100 ms.
    o.set(fake_openai::Behavior::Endless {
        delay: Duration::from_millis(5),
    });
    send(
        &mut ws,
        &json!({"type": "chat", "content": "go", "model": "smollm2", "conversation_id": "e3"}),
    )
    .await;
    assert_eq!(recv_no_status(&mut ws).await["type"], "token");
    let sent = Instant::now();
    send(&mut ws, &json!({"type": "cancel", "conversation_id": "e3"})).await;
    let closed = o
        .wait_stream_closed(Duration::from_secs(2))
        .await
        .expect("the upstream request was dropped");
    assert!(
        closed.duration_since(sent) < Duration::from_millis(100),
        "{:?}",
        closed.duration_since(sent)
    );
    let g = collect(&mut ws).await;
    assert_eq!(g.end["done_reason"], "cancelled", "{}", g.end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_server_that_never_sends_a_token_is_failed_over() {
    // llama.cpp sends its 200 head at once; the first token is what counts.
    let o = FakeOpenAi::start().await;
    o.set_models([MISTRAL]);
    o.set(fake_openai::Behavior::Stall);
    let b = FakeOllama::start().await;
    b.set(Behavior::stream(["saved"]));
    // Nothing loaded on desk, so the two tie and the first configured wins.
    b.set_ps(&[]);
    let gw = base()
        .set("ollama.first_token_timeout_secs", 1)
        .set("routing.failure_threshold", 5)
        .upstream(
            "laptop",
            &o.url(),
            "openai",
            fields(&[("models", models(&[MISTRAL]))]),
        )
        .upstream(
            "desk",
            &b.url(),
            "ollama",
            fields(&[("models", models(&[MISTRAL]))]),
        )
        .serve();
    let mut ws = session(&gw, "c").await;
    let t = Instant::now();
    let g = chat_model(&mut ws, MISTRAL, "hi", "p1").await;
    assert_eq!(g.end["type"], "complete", "{}", g.end);
    assert_eq!(g.end["upstream"], "desk");
    assert_eq!(g.text(), "saved");
    assert_eq!(g.status.len(), 1, "{:?}", g.status);
    assert_eq!(g.status[0]["phase"], "loading_model");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(o.chat_count(), 1);
    assert!(o.wait_stream_closed(Duration::from_secs(2)).await.is_some());
}
