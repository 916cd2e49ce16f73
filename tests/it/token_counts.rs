//! `complete.total_tokens` (issue 16): the upstream's own count of the
//! tokens it generated — OpenAI's `usage.completion_tokens`, Ollama's
//! `eval_count` — when the answer completed and carried one; the `token`
//! frames sent otherwise (no usage chunk, as llama-cpp-python; a cancel).
//! The fakes report a count different from the deltas they stream, so the
//! two sources can be told apart.

use std::time::Duration;

use serde_json::json;

use crate::support::chat::*;
use crate::support::fake_ollama::{Behavior, FakeOllama};
use crate::support::fake_openai::{self, FakeOpenAi, Style};
use crate::support::*;

const SMOLLM2: &str = "smollm2";

/// A gateway with one OpenAI upstream `laptop` at `url` serving smollm2.
fn openai_gateway(url: &str) -> Server {
    let mut extra = toml::Table::new();
    extra.insert("models".into(), toml::Value::Array(vec![SMOLLM2.into()]));
    gateway()
        .set("auth.open_enrollment", true)
        .set("ollama.retries", 0)
        .set(
            "ollama.allowed_models",
            toml::Value::Array(vec!["mistral:7b-instruct".into(), SMOLLM2.into()]),
        )
        .upstream("laptop", url, "openai", extra)
        .serve()
}

async fn session(gw: &Server) -> Ws {
    let token = token_for(gw, "counter", None).await;
    open_chat(gw, &token).await.0
}

async fn chat_smollm2(ws: &mut Ws, conv: &str) -> Generation {
    send(
        ws,
        &json!({"type": "chat", "content": "count", "model": SMOLLM2, "conversation_id": conv}),
    )
    .await;
    collect(ws).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_tokens_is_usage_completion_tokens_when_the_server_gives_it() {
    let o = FakeOpenAi::start().await;
    o.set_style(Style::OpenAi);
    o.set(fake_openai::Behavior::stream(["a", "b", "c"]));
    o.set_completion_tokens(Some(7));
    let gw = openai_gateway(&o.url());
    let mut ws = session(&gw).await;
    let g = chat_smollm2(&mut ws, "u1").await;
    assert_eq!(g.end["type"], "complete", "{}", g.end);
    assert_eq!(g.tokens.len(), 3);
    assert_eq!(g.end["total_tokens"], 7, "{}", g.end);

    // llama-cpp-python sends no usage chunk: the deltas are counted.
    o.set_style(Style::LlamaCppPython);
    let g = chat_smollm2(&mut ws, "u2").await;
    assert_eq!(g.end["type"], "complete", "{}", g.end);
    assert_eq!(g.tokens.len(), 3);
    assert_eq!(g.end["total_tokens"], 3, "{}", g.end);

    // A cancelled answer never reached its usage: the frames sent.
    o.set_style(Style::OpenAi);
    o.set(fake_openai::Behavior::Endless {
        delay: Duration::from_millis(5),
    });
    send(
        &mut ws,
        &json!({"type": "chat", "content": "go", "model": SMOLLM2, "conversation_id": "u3"}),
    )
    .await;
    assert_eq!(recv_no_status(&mut ws).await["type"], "token");
    send(&mut ws, &json!({"type": "cancel", "conversation_id": "u3"})).await;
    let g = collect(&mut ws).await;
    assert_eq!(g.end["done_reason"], "cancelled", "{}", g.end);
    assert_eq!(
        g.end["total_tokens"],
        1 + g.tokens.len() as u64,
        "{}",
        g.end
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_tokens_is_ollama_eval_count() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::stream(["x", "y"]));
    fake.set_eval_count(Some(11));
    let gw = gateway()
        .set("auth.open_enrollment", true)
        .ollama(&fake.url())
        .serve();
    let mut ws = session(&gw).await;
    let g = chat(&mut ws, "count", Some("e1")).await;
    assert_eq!(g.end["type"], "complete", "{}", g.end);
    assert_eq!(g.text(), "xy");
    assert_eq!(g.end["total_tokens"], 11, "{}", g.end);
    assert_eq!(g.tokens.last().unwrap()["seq"], 2);
}
