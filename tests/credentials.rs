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

/// `[limits] ipv6_prefix_len`: per address by default, per network when
/// asked, in every per-IP limit (they all key through `ip_key`).
#[test]
fn ipv6_clients_limited_per_address_or_per_prefix() {
    use std::net::IpAddr;
    use tars::limits::{ip_key, ConnRefusal, Limits};
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let cfg = |prefix: Option<i64>| {
        let mut text = "[tls]\nenabled = false\n[limits]\nmax_connections_per_ip = 2\n".to_string();
        if let Some(p) = prefix {
            text.push_str(&format!("ipv6_prefix_len = {p}\n"));
        }
        tars::config::from_toml_str(std::path::Path::new("/x/config.toml"), &text).unwrap()
    };
    let default = cfg(None);
    assert_eq!(default.limits.ipv6_prefix_len, 128);
    let (a, b) = (ip("2001:db8:0:1::a"), ip("2001:db8:0:1::b"));
    assert_ne!(ip_key(a, 128), ip_key(b, 128));
    assert_eq!(ip_key(a, 64), ip_key(b, 64));

    // Two neighbours on one /64: separate slots by default ...
    let per_address = Limits::new(&default.limits);
    let _held = [
        per_address.admit_connection(a),
        per_address.admit_connection(a),
    ];
    assert_eq!(
        per_address.admit_connection(a).err(),
        Some(ConnRefusal::Open)
    );
    assert!(per_address.admit_connection(b).is_ok());
    // ... one shared budget with a /64 prefix.
    let per_net = Limits::new(&cfg(Some(64)).limits);
    let _held = [per_net.admit_connection(a), per_net.admit_connection(b)];
    assert_eq!(per_net.admit_connection(b).err(), Some(ConnRefusal::Open));
    assert!(per_net.admit_connection(ip("2001:db8:0:2::a")).is_ok());

    let e = tars::config::from_toml_str(
        std::path::Path::new("/x/config.toml"),
        "[tls]\nenabled = false\n[limits]\nipv6_prefix_len = 129\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("limits.ipv6_prefix_len") && e.contains("between 1 and 128"),
        "{e}"
    );
}
