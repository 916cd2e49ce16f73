//! Limits on the HTTP side that hold against a LAN attacker (issue 15): a
//! global cap on connections still speaking HTTP (WebSocket sessions do not
//! count), a write timeout for clients that stop reading responses,
//! `/ready` and `/auth/health` details only for loopback and admin callers,
//! and `[server] allowed_hosts` against DNS rebinding. Real sockets, plain
//! HTTP where TLS adds nothing to the point.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::support::chat::*;
use crate::support::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// True when `stream` is closed by the server (EOF or reset) within `wait`.
async fn closed_by_server(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(wait, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// Connections that never finish a request hold HTTP slots; once
/// `max_http_connections` are held, the next is closed at accept — while
/// WebSocket sessions, which left HTTP, never count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connection_cap_holds_and_websocket_sessions_do_not_count() {
    let gw = gateway()
        .plain()
        .set("auth.open_enrollment", true)
        .set("server.max_http_connections", 2)
        .serve();
    let token = token_for(&gw, "ws", None).await;
    // Three sessions with a cap of two HTTP connections: each upgrade gives
    // its slot back.
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(open_chat(&gw, &token).await.0);
    }
    // Two idle connections (a slowloris sends nothing) take both slots ...
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(TcpStream::connect(gw.addr).await.unwrap());
    }
    // ... (the server accepts them in order; give it a moment to have
    // taken both before the third, polled by the third's fate)
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let mut third = TcpStream::connect(gw.addr).await.unwrap();
        if closed_by_server(&mut third, Duration::from_millis(500)).await {
            break;
        }
        assert!(
            Instant::now() < end,
            "a third HTTP connection was kept open"
        );
    }
    // The sessions still work; once the idle connections go, HTTP is served
    // again and the refusals were counted.
    for ws in sessions.iter_mut() {
        send(ws, &json!({"type": "ping"})).await;
        assert_eq!(recv(ws).await["type"], "pong");
    }
    drop(idle);
    let end = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        if let Some(text) = raw_get(gw.addr, "/metrics").await {
            break text;
        }
        assert!(
            Instant::now() < end,
            "HTTP not served after the idle connections left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        metrics.contains("tars_connections_rejected_total{kind=\"http_connections\"}"),
        "{metrics}"
    );
}

/// `GET path` on a fresh connection: the whole answer, or `None` when the
/// server closed without one.
async fn raw_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    text.starts_with("HTTP/1.1 200").then_some(text)
}

/// A client that pipelines requests for a large document and never reads
/// the answers is disconnected after `write_timeout_secs`, freeing its
/// per-IP slot (the only one here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off() {
    let gw = gateway()
        .plain()
        .set("server.write_timeout_secs", 2)
        .set("limits.max_connections_per_ip", 1)
        .serve();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(gw.addr).await.unwrap();
    let one = b"GET /openapi.json HTTP/1.1\r\nhost: localhost\r\n\r\n";
    let many: Vec<u8> = one.iter().copied().cycle().take(one.len() * 400).collect();
    stuck.write_all(&many).await.unwrap();
    // The slot is taken while the server is stuck writing ...
    let mut other = TcpStream::connect(gw.addr).await.unwrap();
    assert!(
        closed_by_server(&mut other, Duration::from_secs(1)).await,
        "the cap of one connection did not hold"
    );
    // ... and freed once the write timeout cut the reader off.
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
        if out.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < end,
            "the client that stopped reading still holds its connection"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(stuck);
}

/// This machine's address on its LAN, if it has one (not loopback).
fn lan_ip() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("10.255.255.255:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// `/ready` and `/auth/health` tell a LAN caller the status alone; a
/// loopback caller or an admin's bearer token gets the details.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_details_hidden_from_a_non_loopback_address() {
    let Some(ip) = lan_ip() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI needs a non-loopback address for this test"
        );
        eprintln!("skipped: no non-loopback address on this machine");
        return;
    };
    let server = gateway()
        .plain()
        .set("server.listen", "0.0.0.0:0")
        .client("boss", "boss-secret-123", true)
        .client("user", "user-secret-456", false)
        .serve();
    // One server, reached on loopback and on the LAN address.
    let mut gw: Endpoint = (*server).clone();
    let port = gw.addr.port();
    gw.addr = SocketAddr::new("127.0.0.1".parse().unwrap(), port);
    let local = get(&gw, "/ready").await;
    assert_eq!(local.status, 503);
    let v = local.json();
    assert!(
        v["ollama"]["host"].is_string() && v["reason"].is_string(),
        "{v}"
    );
    assert!(get(&gw, "/auth/health").await.json()["revoked_count"].is_number());
    let admin = token_for(&gw, "boss", Some("boss-secret-123")).await;
    let user = token_for(&gw, "user", Some("user-secret-456")).await;

    gw.addr = SocketAddr::new(ip, port);
    let r = get(&gw, "/ready").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json(), json!({"status": "not_ready"}));
    assert_eq!(
        get(&gw, "/auth/health").await.json(),
        json!({"status": "healthy"})
    );
    let with = |t: &str| format!("Bearer {t}");
    let r = request(
        &gw,
        "GET",
        "/ready",
        &[("authorization", &with(&user))],
        None,
    )
    .await;
    assert_eq!(r.json(), json!({"status": "not_ready"}));
    let r = request(
        &gw,
        "GET",
        "/ready",
        &[("authorization", &with(&admin))],
        None,
    )
    .await;
    assert!(r.json()["ollama"]["host"].is_string(), "{}", r.text());
    let r = request(
        &gw,
        "GET",
        "/auth/health",
        &[("authorization", &with(&admin))],
        None,
    )
    .await;
    assert!(r.json()["registered_clients"].is_number(), "{}", r.text());
}

/// DNS rebinding: with `allowed_hosts`, a request naming another host gets
/// 421; the listed name, localhost and IP literals pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_host_headers_get_421() {
    let gw = gateway()
        .plain()
        .set("server.allowed_hosts", vec!["nas.local"])
        .serve();
    let port = gw.addr.port();
    for (host, status) in [
        ("evil.example".to_string(), 421),
        (format!("evil.example:{port}"), 421),
        ("nas.local.evil.example".to_string(), 421),
        (format!("nas.local:{port}"), 200),
        ("NAS.LOCAL".to_string(), 200),
        (format!("localhost:{port}"), 200),
        (format!("127.0.0.1:{port}"), 200),
        (format!("[::1]:{port}"), 200),
    ] {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(
            format!("GET /health HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")),
            "Host {host}: {text}"
        );
        if status == 421 {
            assert!(text.contains("allowed_hosts"), "{text}");
        }
    }
    // Without the key, any Host is served (the default).
    let open = gateway().plain().serve();
    let r = request(&open, "GET", "/health", &[], None).await;
    assert_eq!(r.status, 200);
}
