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

use std::time::{Duration, Instant};

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

/// A link planted in `data_dir` (here: the revocation log pointing at a file
/// the attacker wants overwritten) stops the start with one line naming it;
/// the target is left alone.
#[test]
fn planted_symlink_in_data_dir_is_refused() {
    for name in ["revoked.log", "jwt.secret"] {
        let gw = gateway().plain().unset("auth.secret");
        let config = gw.write_config();
        let data = gw.dir().join("data");
        std::fs::create_dir(&data).unwrap();
        let target = gw.dir().join("precious");
        std::fs::write(&target, "do not touch\n").unwrap();
        let link = data.join(name);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let (code, _, err) = run_tars_timeout(
            &["--config", config.to_str().unwrap()],
            &[],
            Duration::from_secs(20),
        );
        assert_eq!(code, 2, "{name}: {err}");
        let line = err.lines().find(|l| l.contains("error")).unwrap_or(&err);
        assert!(
            line.contains(&link.display().to_string()) && line.contains("symbolic link"),
            "{name}: {err}"
        );
        assert!(line.contains("server.data_dir"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "do not touch\n");
    }
}

/// New files in `data_dir` are private: folder 0700, files 0600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let gw = gateway()
        .plain()
        .unset("auth.secret")
        .set("auth.open_enrollment", true)
        .start();
    let pair = post_json(&gw, "/auth/token", &json!({"client_id": "a"}), None)
        .await
        .json();
    let r = post_json(
        &gw,
        "/auth/refresh",
        &json!({"refresh_token": pair["refresh_token"]}),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let data = gw.dir.path().join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for f in ["jwt.secret", "revoked.log"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Unknown client ids cost what a wrong secret for a known id costs, even
/// when the registered hashes use heavier argon2 parameters than the
/// defaults: timing does not tell which ids exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_id_and_wrong_secret_take_the_same_time() {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    // Three times the default work (t = 6 instead of 2).
    let heavy = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(19 * 1024, 6, 1, None).unwrap(),
    );
    let phc = heavy
        .hash_password(b"the-right-secret", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
    let mut client = toml::Table::new();
    client.insert("id".into(), "known".into());
    client.insert("secret_hash".into(), phc.into());
    let gw = gateway()
        .plain()
        .set("auth.clients", toml::Value::Array(vec![client.into()]))
        .set("auth.max_failed_attempts_per_minute", 1000)
        .start();
    let attempt = |id: &'static str, secret: &'static str| {
        let gw = &gw;
        async move {
            let body = json!({"client_id": id, "client_secret": secret});
            let t = Instant::now();
            let r = post_json(gw, "/auth/token", &body, None).await;
            (t.elapsed(), r)
        }
    };
    let (_, ok) = attempt("known", "the-right-secret").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    // Warm up both paths, then interleave so load on the machine hits both.
    let _ = attempt("nobody-here", "x").await;
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        let (t, r) = attempt("nobody-here", "guess-1").await;
        assert_eq!(
            (r.status, r.json()["error"].clone()),
            (401, json!("invalid_client"))
        );
        unknown.push(t);
        let (t, r) = attempt("known", "guess-2").await;
        assert_eq!(
            (r.status, r.json()["error"].clone()),
            (401, json!("invalid_client"))
        );
        wrong.push(t);
    }
    let (u, w) = (median(unknown), median(wrong));
    let ratio = u.as_secs_f64() / w.as_secs_f64();
    assert!(
        (0.7..=1.3).contains(&ratio),
        "median unknown id {u:?} vs wrong secret {w:?}: ratio {ratio:.2}"
    );
}
