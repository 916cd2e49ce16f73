//! Credentials an attacker (or an admin who lost a device) cares about, each
//! tried the way an attacker would: a replayed refresh token, a revoked
//! access token's refresh sibling, an admin cutting a client off (online and
//! with `tars revoke` offline), a symlink planted in `data_dir`, timing that
//! would tell which client ids exist, an oversized `max_tokens`, IPv6
//! neighbours sharing a limit.
//!
//! Self-contained on purpose (only `support`'s gateway, clients and fake
//! Ollama), so it moves easily when the harness changes.

mod support;

use serde_json::json;
use support::chat::*;
use support::fake_ollama::{Behavior, FakeOllama};

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_is_a_ceiling() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::Echo);
    let gw = gateway()
        .ollama(&fake.url())
        .set("auth.open_enrollment", true)
        .set("ollama.max_tokens", 300)
        .start();
    let token = token_for(&gw, "greedy", None).await;
    let (mut ws, _) = open_chat(&gw, &token).await;
    for (asked, sent) in [(Some(100_000), 300), (Some(12), 12), (None, 300)] {
        let mut m = json!({"type": "chat", "content": "hi"});
        if let Some(n) = asked {
            m["options"] = json!({"max_tokens": n});
        }
        send(&mut ws, &m).await;
        let g = collect(&mut ws).await;
        assert_eq!(g.end["type"], "complete", "{}", g.end);
        let req = fake.requests().pop().unwrap();
        assert_eq!(
            req["options"]["num_predict"], sent,
            "asked {asked:?}: {req}"
        );
    }
}
