//! Live WebSocket sessions follow their credentials (issue 15): a session
//! ends (1008, the reason) when its token expires unless the client
//! re-authenticates in band, and when its token, its family or its client
//! is taken back — by `/auth/revoke`, a reused refresh token, an admin, an
//! offline `tars revoke`, or a reload — including a revocation that lands
//! while the session is being set up. Each test is the attack, over real
//! TLS and a real WebSocket client.

use std::time::{Duration, Instant};

use crate::support::chat::*;
use crate::support::jwt::{good_claims, now, sign};
use crate::support::*;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

/// Wait for the session's close, skipping other frames; the `system`
/// notices seen on the way are returned with it.
async fn closed(ws: &mut Ws) -> (Option<(u16, String)>, Vec<String>) {
    let mut notices = Vec::new();
    loop {
        match next_event(ws).await {
            Event::Json(v) if v["type"] == "system" => {
                notices.push(v["message"].as_str().unwrap().to_string())
            }
            Event::Json(_) => continue,
            Event::Closed(c) => return (c, notices),
        }
    }
}

/// An access token for `sub` that expires `secs` from now, signed with the
/// test key (what `/auth/token` would mint with a short lifetime).
fn short_token(sub: &str, secs: u64) -> String {
    let mut c = good_claims(sub);
    c["exp"] = json!(now() + secs);
    sign(&c, TEST_SECRET.as_bytes(), Algorithm::HS256)
}

/// An access token for `sub` that expired a minute ago.
fn expired_token(sub: &str) -> String {
    let mut c = good_claims(sub);
    c["exp"] = json!(now() - 60);
    sign(&c, TEST_SECRET.as_bytes(), Algorithm::HS256)
}

fn open_gateway() -> GatewayBuilder {
    gateway()
        .set("auth.open_enrollment", true)
        .set("auth.leeway_secs", 0)
}

async fn pair(gw: &Gateway, id: &str, secret: Option<&str>) -> Value {
    let mut body = json!({"client_id": id});
    if let Some(s) = secret {
        body["client_secret"] = json!(s);
    }
    let r = post_json(gw, "/auth/token", &body, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn access(p: &Value) -> &str {
    p["access_token"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_closes_when_its_token_expires() {
    let gw = open_gateway().start();
    let token = short_token("short", 3);
    let started = Instant::now();
    let (mut ws, _) = open_chat(&gw, &token).await;
    let (close, notices) = closed(&mut ws).await;
    assert_eq!(close, Some((1008, "token expired".into())));
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed too early: {:?}",
        started.elapsed()
    );
    // Less than a minute was left: the notice came at once, before the close.
    assert!(
        notices
            .iter()
            .any(|n| n.contains("expires in") && n.contains("\"auth\"")),
        "{notices:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_band_reauth_keeps_the_session_alive() {
    let gw = open_gateway().start();
    let old_exp = now() + 3;
    let (mut ws, _) = open_chat(&gw, &short_token("renewer", 3)).await;
    let fresh = pair(&gw, "renewer", None).await;
    send(&mut ws, &json!({"type": "auth", "token": access(&fresh)})).await;
    let ack = loop {
        let v = recv(&mut ws).await;
        if v["type"] != "system" {
            break v;
        }
    };
    assert_eq!(ack["type"], "auth_ack", "{ack}");
    assert!(ack["expires_at"].as_str().unwrap().ends_with('Z'), "{ack}");
    // Past the old token's expiry the session still answers.
    while now() <= old_exp + 1 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    send(&mut ws, &json!({"type": "ping"})).await;
    let v = loop {
        let v = recv(&mut ws).await;
        if v["type"] != "system" {
            break v;
        }
    };
    assert_eq!(v["type"], "pong", "{v}");
    assert!(!gw.logs().contains(access(&fresh)), "a token was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauth_with_another_clients_or_a_bad_token_closes() {
    let gw = open_gateway().start();
    let mine = pair(&gw, "mine", None).await;
    let theirs = pair(&gw, "theirs", None).await;
    let (mut ws, _) = open_chat(&gw, access(&mine)).await;
    send(&mut ws, &json!({"type": "auth", "token": access(&theirs)})).await;
    assert_eq!(
        closed(&mut ws).await.0,
        Some((1008, "token of another client".into()))
    );

    for (bad, reason) in [
        ("garbage".to_string(), "token refused: malformed"),
        (expired_token("mine"), "token refused: expired"),
    ] {
        let (mut ws, _) = open_chat(&gw, access(&mine)).await;
        send(&mut ws, &json!({"type": "auth", "token": bad})).await;
        assert_eq!(closed(&mut ws).await.0, Some((1008, reason.into())));
    }
    // A revoked token is refused too.
    let spare = pair(&gw, "mine", None).await;
    let r = post_json(&gw, "/auth/revoke", &json!({}), Some(access(&spare))).await;
    assert_eq!(r.status, 200);
    let (mut ws, _) = open_chat(&gw, access(&mine)).await;
    send(&mut ws, &json!({"type": "auth", "token": access(&spare)})).await;
    assert_eq!(
        closed(&mut ws).await.0,
        Some((1008, "token refused: revoked".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_refresh_token_closes_the_thiefs_sessions() {
    let gw = open_gateway().start();
    let victim = pair(&gw, "phone", None).await;
    let r = post_json(
        &gw,
        "/auth/refresh",
        &json!({"refresh_token": victim["refresh_token"]}),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let thief = r.json();
    let (mut thief_ws, _) = open_chat(&gw, access(&thief)).await;
    let (mut other_ws, _) = open_chat(&gw, access(&pair(&gw, "phone", None).await)).await;
    // The victim's app refreshes with the token the thief already used.
    let r = post_json(
        &gw,
        "/auth/refresh",
        &json!({"refresh_token": victim["refresh_token"]}),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    let (close, notices) = closed(&mut thief_ws).await;
    assert_eq!(close, Some((1008, "token family revoked".into())));
    assert!(notices.iter().any(|n| n.contains("family")), "{notices:?}");
    // Another family of the same client keeps its session.
    send(&mut other_ws, &json!({"type": "ping"})).await;
    assert_eq!(recv(&mut other_ws).await["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_and_offline_revocation_close_the_clients_sessions() {
    let gw = gateway()
        .set("auth.leeway_secs", 0)
        .client("boss", "boss-secret-123", true)
        .client("phone", "phone-secret-456", false)
        .client("tablet", "tablet-secret-789", false)
        .start();
    let boss = pair(&gw, "boss", Some("boss-secret-123")).await;
    let phone = pair(&gw, "phone", Some("phone-secret-456")).await;
    let tablet = pair(&gw, "tablet", Some("tablet-secret-789")).await;
    let (mut phone_ws, _) = open_chat(&gw, access(&phone)).await;
    let (mut tablet_ws, _) = open_chat(&gw, access(&tablet)).await;
    let (mut boss_ws, _) = open_chat(&gw, access(&boss)).await;

    let r = post_json(
        &gw,
        "/auth/revoke",
        &json!({"client_id": "phone"}),
        Some(access(&boss)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        closed(&mut phone_ws).await.0,
        Some((1008, "client revoked".into()))
    );

    let config = gw.config.to_str().unwrap().to_string();
    let (code, _, err) = run_tars(&["--config", &config, "revoke", "--client", "tablet"], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        closed(&mut tablet_ws).await.0,
        Some((1008, "client revoked".into()))
    );

    send(&mut boss_ws, &json!({"type": "ping"})).await;
    assert_eq!(recv(&mut boss_ws).await["type"], "pong");
    // The phone signs in again and gets a session.
    let again = pair(&gw, "phone", Some("phone-secret-456")).await;
    let (mut ws, _) = open_chat(&gw, access(&again)).await;
    send(&mut ws, &json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
}

fn edit_config(gw: &Gateway, f: impl FnOnce(&mut toml::Table)) {
    let mut t: toml::Table = std::fs::read_to_string(&gw.config)
        .unwrap()
        .parse()
        .unwrap();
    f(&mut t);
    std::fs::write(&gw.config, toml::to_string(&t).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_ends_sessions_of_removed_rekeyed_and_changed_clients() {
    let gw = gateway()
        .client("gone", "gone-secret-1", false)
        .client("rekeyed", "old-secret-22", false)
        .client("demoted", "demo-secret-3", true)
        .client("stays", "stay-secret-4", false)
        .start();
    let mut sessions = Vec::new();
    for (id, secret) in [
        ("gone", "gone-secret-1"),
        ("rekeyed", "old-secret-22"),
        ("demoted", "demo-secret-3"),
        ("stays", "stay-secret-4"),
    ] {
        let p = pair(&gw, id, Some(secret)).await;
        sessions.push(open_chat(&gw, access(&p)).await.0);
    }
    edit_config(&gw, |t| {
        let clients = t["auth"]["clients"].as_array_mut().unwrap();
        clients.retain(|c| c["id"].as_str() != Some("gone"));
        for c in clients.iter_mut() {
            match c["id"].as_str() {
                Some("rekeyed") => c["secret_hash"] = hash_secret("new-secret-33").into(),
                Some("demoted") => c["admin"] = false.into(),
                _ => {}
            }
        }
    });
    gw.signal("HUP");
    let mut stays = sessions.pop().unwrap();
    let reasons: Vec<_> = {
        let mut v = Vec::new();
        for ws in sessions.iter_mut() {
            v.push(closed(ws).await.0);
        }
        v
    };
    assert_eq!(reasons[0], Some((1008, "client removed".into())));
    // The secret change also set a cutoff: whichever check wins says so.
    let r1 = reasons[1].clone().unwrap();
    assert!(
        r1.0 == 1008 && (r1.1 == "client secret changed" || r1.1 == "client revoked"),
        "{r1:?}"
    );
    assert_eq!(
        reasons[2],
        Some((1008, "client permissions changed".into()))
    );
    send(&mut stays, &json!({"type": "ping"})).await;
    assert_eq!(recv(&mut stays).await["type"], "pong");
}

/// The race between the token check at the upgrade and the session's
/// registration: sessions being opened while their client is cut off all
/// end, none survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_during_the_upgrade_still_ends_the_session() {
    let gw = gateway()
        .client("boss", "boss-secret-123", true)
        .client("racer", "racer-secret-4", false)
        .start();
    let boss = pair(&gw, "boss", Some("boss-secret-123")).await;
    let racer = pair(&gw, "racer", Some("racer-secret-4")).await;
    let token = access(&racer).to_string();
    let opening: Vec<_> = (0..12)
        .map(|_| {
            let (gw, token) = (&gw, token.clone());
            async move { ws_connect(gw, &format!("/ws/chat?token={token}"), &[]).await }
        })
        .collect();
    let revoke = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        post_json(
            &gw,
            "/auth/revoke",
            &json!({"client_id": "racer"}),
            Some(access(&boss)),
        )
        .await
    };
    let (opened, r) = tokio::join!(futures_util::future::join_all(opening), revoke);
    assert_eq!(r.status, 200, "{}", r.text());
    let mut upgraded = 0;
    for ws in opened {
        let Ok(mut ws) = ws else { continue }; // refused at the upgrade: fine
        upgraded += 1;
        let (close, _) = closed(&mut ws).await;
        assert_eq!(
            close.map(|c| c.0),
            Some(1008),
            "a session outlived its revoked client"
        );
    }
    eprintln!("{upgraded} of 12 upgrades got through before the cutoff");
}

/// A WebSocket over TLS that reports a refusal instead of panicking (a
/// connection over the per-IP cap is closed at accept, before TLS).
async fn try_open(gw: &Gateway, token: &str) -> Result<Ws, String> {
    use rustls_pki_types::ServerName;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(client_tls_config(gw.cert.as_ref().unwrap()));
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let url = format!("wss://localhost:{}/ws/chat?token={token}", gw.addr.port());
    let req = url.into_client_request().unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, Box::new(tls) as BoxIo)
        .await
        .map_err(|e| e.to_string())?;
    let ack = recv(&mut ws).await;
    assert_eq!(ack["type"], "connection_ack");
    Ok(ws)
}

/// One host may hold `max_connections_per_ip` connections, and a WebSocket
/// session counts for as long as it lives (not only while its upgrade
/// request is in flight): eight sessions from one address with a cap of six
/// → two refused; closing one frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_cap_counts_websocket_sessions_for_their_life() {
    let gw = open_gateway()
        .set("limits.max_connections_per_ip", 6)
        .start();
    // Minted offline: no HTTP connection of the test's own takes a slot.
    let token = short_token("many", 3600);
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..8 {
        match try_open(&gw, &token).await {
            Ok(ws) => open.push(ws),
            Err(_) => refused += 1,
        }
    }
    assert_eq!((open.len(), refused), (6, 2));
    // Every session still works.
    for ws in open.iter_mut() {
        send(ws, &json!({"type": "ping"})).await;
        assert_eq!(recv(ws).await["type"], "pong");
    }
    // Closing one frees a slot (polled: the server notices the close first).
    let mut first = open.remove(0);
    first.close(None).await.unwrap();
    let _ = closed(&mut first).await;
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(ws) = try_open(&gw, &token).await {
            open.push(ws);
            break;
        }
        assert!(
            Instant::now() < end,
            "the closed session's slot was not freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The shipped config.toml limits one client id to three sessions.
#[test]
fn shipped_config_caps_sessions_per_client() {
    let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"));
    let text = std::fs::read_to_string(path).unwrap();
    let cfg = tars::config::from_toml_str(&text, Some(path)).unwrap();
    assert_eq!(cfg.websocket.max_connections_per_client, Some(3));
}

/// `tars chat --client-id` keeps its session past the token it started
/// with: on the expiry notice it sends a fresh token in band, so a prompt
/// after the old token's expiry is still answered on the same session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tars_chat_renews_its_session_in_band() {
    use crate::support::fake_ollama::{Behavior, FakeOllama};
    use std::io::Write;
    use std::process::{Command, Stdio};
    let fake = FakeOllama::start().await;
    fake.set(Behavior::Echo);
    let gw = open_gateway().ollama(&fake.url()).start();
    let old_exp = now() + 4;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tars"))
        .args([
            "chat",
            "--url",
            &format!("wss://localhost:{}", gw.addr.port()),
        ])
        .arg("--ca")
        .arg(gw.cert.as_ref().unwrap())
        .args(["--token", &short_token("cli", 4), "--client-id", "cli"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"first prompt\n").unwrap();
    stdin.flush().unwrap();
    while now() <= old_exp + 1 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stdin.write_all(b"second prompt\n").unwrap();
    drop(stdin);
    let out = tokio::task::spawn_blocking(move || {
        wait_output(child, Duration::from_secs(30), "tars chat")
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("first prompt") && stdout.contains("second prompt"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stderr.contains("session renewed until"), "{stderr}");
    assert_eq!(
        stderr.matches("connected as").count(),
        1,
        "one session, renewed in band: {stderr}"
    );
}

/// IPv6 clients are limited per address: a `[::1]` listener with a cap of
/// two sessions per IP refuses the third from `::1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_are_limited_per_address() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI needs IPv6 loopback for this test"
        );
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    }
    let gw = open_gateway()
        .set("server.listen", "[::1]:0")
        .set("limits.max_connections_per_ip", 2)
        .start();
    assert!(gw.addr.is_ipv6(), "{}", gw.addr);
    let token = access(&pair(&gw, "v6", None).await).to_string();
    // (The sign-in's connection may still be closing: retry up to a deadline.)
    let mut open = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while open.len() < 2 {
        match try_open(&gw, &token).await {
            Ok(ws) => open.push(ws),
            Err(_) => assert!(Instant::now() < end, "two sessions never fit"),
        }
    }
    assert!(
        try_open(&gw, &token).await.is_err(),
        "a third session from ::1"
    );
}
