//! HTTP foundation (issue 2), in-process: every endpoint over TLS and plain
//! HTTP, CORS, header limits, certificate generation at start, TLS versions
//! and ALPN, the header-read and TLS-handshake timeouts, `/ready` against a
//! fake Ollama, and an accept loop that survives abuse.
//!
//! What needs the process (signals, CLI, environment, exit codes, its
//! descriptor limit) is in `tests/process/lifecycle.rs`; bad configurations
//! in `tests/process/config_errors.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::fake_version::{closed_port_url, FakeVersion};
use crate::support::*;

const ORIGIN_OK: &str = "https://app.example:8443";
const ORIGIN_BAD: &str = "https://evil.example";

/// Read until the peer closes (EOF or reset); returns what was read and when
/// the connection ended, or panics if it is still open after `limit`.
async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), s.read(&mut buf)).await {
            Err(_) => panic!(
                "connection still open after {limit:?}; read so far: {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, start.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

// ---------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------

/// Every endpoint of issue 2, asserted on one gateway (TLS or plain) whose
/// Ollama is `fake` and whose `[cors] origins` is `[ORIGIN_OK]`.
async fn check_every_endpoint(gw: &Server, fake: &FakeVersion) {
    // GET /: name, version, endpoint list.
    let r = get(gw, "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    assert_eq!(j["name"], "T.A.R.S. gateway");
    assert_eq!(j["version"], env!("CARGO_PKG_VERSION"));
    let endpoints: Vec<&str> = j["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    for e in ["GET /health", "GET /ready", "GET /metrics"] {
        assert!(endpoints.contains(&e), "{e} missing from {endpoints:?}");
    }

    // GET /health.
    let r = get(gw, "/health").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["status"], "healthy");

    // HEAD /health: the same status, no body.
    let r = request(gw, "HEAD", "/health", &[], None).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());

    // GET /ready with Ollama up: its version and the configured model.
    let r = get(gw, "/ready").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    assert_eq!(j["status"], "ready");
    assert_eq!(j["ollama"]["version"], "0.5.1");
    assert_eq!(j["ollama"]["host"], fake.url.as_str());
    assert_eq!(j["model"], "mistral:7b-instruct");

    // GET /metrics: Prometheus text by default.
    let r = get(gw, "/metrics").await;
    assert_eq!(r.status, 200);
    let ct = r.header("content-type").unwrap();
    assert!(
        ct.starts_with("application/openmetrics-text") || ct.starts_with("text/plain"),
        "{ct}"
    );
    let text = r.text();
    assert!(text.contains("# TYPE tars_http_requests counter"), "{text}");
    assert!(
        text.contains("tars_http_requests_total{kind=\"health\"} 2"),
        "{text}"
    );
    assert!(text.contains("tars_process_open_fds "), "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");

    // GET /metrics with Accept: application/json: the seed report's fields.
    let r = request(
        gw,
        "GET",
        "/metrics",
        &[("accept", "application/json")],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    for k in [
        "active_connections",
        "unique_clients",
        "total_connections",
        "total_messages",
        "total_tokens",
        "total_errors",
    ] {
        assert_eq!(j[k], 0, "{k} in {j}");
    }

    // Unknown path: 404 JSON.
    let r = get(gw, "/no/such/thing").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    assert_eq!(j["error"], "not_found");
    assert!(j["message"].as_str().unwrap().contains("/no/such/thing"));

    // Wrong method: 405 JSON with Allow.
    for (method, path) in [("DELETE", "/health"), ("POST", "/metrics"), ("PUT", "/")] {
        let r = request(gw, method, path, &[], None).await;
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.json()["error"], "method_not_allowed");
        let allow = r
            .header("allow")
            .unwrap_or_else(|| panic!("no Allow on {method} {path}"));
        assert!(allow.contains("GET") && allow.contains("HEAD"), "{allow}");
        assert!(!allow.contains(method), "{allow}");
    }

    // CORS preflight from a listed origin: answered.
    let r = request(
        gw,
        "OPTIONS",
        "/health",
        &[
            ("origin", ORIGIN_OK),
            ("access-control-request-method", "GET"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN_OK));
    assert!(r
        .header("access-control-allow-methods")
        .unwrap()
        .contains("GET"));
    assert!(r
        .header("access-control-allow-headers")
        .unwrap()
        .contains("authorization"));
    assert!(r.header("vary").unwrap().contains("Origin"));

    // ... from an unlisted origin: refused, and no CORS header.
    let r = request(
        gw,
        "OPTIONS",
        "/health",
        &[
            ("origin", ORIGIN_BAD),
            ("access-control-request-method", "GET"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "origin_not_allowed");
    assert!(r.header("access-control-allow-origin").is_none());

    // Simple requests: the allow-origin header only for a listed origin.
    let r = request(gw, "GET", "/health", &[("origin", ORIGIN_OK)], None).await;
    assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN_OK));
    let r = request(gw, "GET", "/health", &[("origin", ORIGIN_BAD)], None).await;
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_over_tls() {
    let fake = FakeVersion::start(Duration::ZERO).await;
    let gw = gateway()
        .ollama(&fake.url)
        .set("cors.origins", vec![ORIGIN_OK])
        .serve();
    assert!(gw.logs().contains("scheme=\"https\"") || gw.logs().contains("scheme=https"));
    check_every_endpoint(&gw, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_over_plain_http() {
    let fake = FakeVersion::start(Duration::ZERO).await;
    let gw = gateway()
        .plain()
        .ollama(&fake.url)
        .set("cors.origins", vec![ORIGIN_OK])
        .serve();
    assert!(
        gw.logs().contains("tls.enabled = false"),
        "no plain-HTTP warning:\n{}",
        gw.logs()
    );
    check_every_endpoint(&gw, &fake).await;
}

#[tokio::test]
async fn oversized_or_too_many_headers_get_431() {
    let gw = gateway().plain().serve();
    // Just under the limits (server.max_header_bytes = 16384, max_headers = 100): served.
    let big = "a".repeat(15_000);
    let mut near: Vec<(String, &str)> = (0..90).map(|i| (format!("x-h{i}"), "v")).collect();
    near.push(("x-big".into(), &big));
    let headers: Vec<(&str, &str)> = near.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        request(&gw, "GET", "/health", &headers[..80], None)
            .await
            .status,
        200
    );
    assert_eq!(
        request(&gw, "GET", "/health", &headers[90..], None)
            .await
            .status,
        200
    );
    // Over them: 431, then closed.
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let mut many = String::from("GET /health HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    for req in [big, many] {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let (got, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 431"), "{got}");
    }
    assert_eq!(get(&gw, "/health").await.status, 200);
}

// ---------------------------------------------------------------------------
// /ready against a fake Ollama
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_up_is_cached_and_single_flight() {
    let fake = FakeVersion::start(Duration::from_millis(300)).await;
    let gw = Arc::new(gateway().plain().ollama(&fake.url).serve());
    // Eight concurrent /ready calls while the first probe is running, then
    // two more right after: Ollama sees one request.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let gw = gw.clone();
        set.spawn(async move { get(&gw, "/ready").await });
    }
    while let Some(r) = set.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["ollama"]["version"], "0.5.1");
    }
    for _ in 0..2 {
        assert_eq!(get(&gw, "/ready").await.status, 200);
    }
    assert_eq!(fake.hits(), 1);
}

#[tokio::test]
async fn ready_down_is_503_with_reason() {
    let url = closed_port_url().await;
    let gw = gateway().plain().ollama(&url).serve();
    let r = get(&gw, "/ready").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    assert_eq!(j["status"], "not_ready");
    assert_eq!(j["ollama"]["status"], "down");
    assert_eq!(j["model"], "mistral:7b-instruct");
    let reason = j["reason"].as_str().unwrap();
    assert!(reason.contains("cannot reach Ollama"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_slow_is_503_within_about_2s() {
    let fake = FakeVersion::start(Duration::from_secs(3)).await;
    let gw = gateway().plain().ollama(&fake.url).serve();
    let t = Instant::now();
    let r = get(&gw, "/ready").await;
    let took = t.elapsed();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_millis(2800),
        "answered after {took:?}"
    );
    let reason = r.json()["reason"].as_str().unwrap().to_string();
    assert!(
        !reason.is_empty() && !reason.contains("cannot reach"),
        "{reason}"
    );
    assert_eq!(fake.hits(), 1);
}

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

#[tokio::test]
async fn missing_certificate_is_generated_with_0600_key_and_logged_fingerprint() {
    use std::os::unix::fs::PermissionsExt;
    let gw = gateway().without_cert().serve();
    let (crt, key) = (
        gw.dir.path().join("certs/tars.crt"),
        gw.dir.path().join("certs/tars.key"),
    );
    assert!(crt.is_file() && key.is_file());
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "key mode {mode:o}");
    let der = CertificateDer::pem_file_iter(&crt)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let fp = sha256_fingerprint(&der);
    let logs = gw.logs();
    assert!(logs.contains("created a self-signed"), "{logs}");
    assert!(
        logs.contains(&format!("sha256={fp}")),
        "fingerprint {fp} not logged:\n{logs}"
    );
    // And it is the certificate actually served (the client trusts only it).
    assert_eq!(get(&gw, "/health").await.status, 200);
}

#[tokio::test]
async fn tls_1_2_and_1_3_with_alpn_http_1_1() {
    let gw = gateway().serve();
    let crt = gw.cert.clone().unwrap();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&crt).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(gw.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap_or_else(|e| panic!("{version:?}: {e}"));
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.protocol_version(), Some(version.version));
        assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    }
}

// ---------------------------------------------------------------------------
// Timeouts on slow clients
// ---------------------------------------------------------------------------

#[tokio::test]
async fn half_a_request_header_is_disconnected_after_header_read_timeout() {
    for tls in [false, true] {
        let mut b = gateway().set("server.header_read_timeout_secs", 1);
        if !tls {
            b = b.plain();
        }
        let gw = b.serve();
        let mut io = connect(&gw).await;
        io.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            .await
            .unwrap();
        io.flush().await.unwrap();
        let (got, after) = read_until_closed(&mut io, Duration::from_secs(5)).await;
        assert!(
            after >= Duration::from_millis(900) && after < Duration::from_secs(3),
            "tls={tls}: closed after {after:?}"
        );
        let got = String::from_utf8_lossy(&got);
        assert!(!got.contains("200 OK"), "{got}");
        // The server is fine for everyone else.
        assert_eq!(get(&gw, "/health").await.status, 200);
    }
}

#[tokio::test]
async fn idle_connections_are_closed_after_header_read_timeout() {
    for tls in [false, true] {
        let mut b = gateway().set("server.header_read_timeout_secs", 1);
        if !tls {
            b = b.plain();
        }
        let gw = b.serve();
        // Connected (and, over TLS, handshaken) but silent.
        let mut io = connect(&gw).await;
        let (_, after) = read_until_closed(&mut io, Duration::from_secs(5)).await;
        assert!(
            after >= Duration::from_millis(900) && after < Duration::from_secs(3),
            "tls={tls}: silent connection closed after {after:?}"
        );
        // Keep-alive after one complete exchange, then silent.
        let mut io = connect(&gw).await;
        io.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"}") {
            let n = io.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the response");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"));
        let (_, after) = read_until_closed(&mut io, Duration::from_secs(5)).await;
        assert!(
            after >= Duration::from_millis(900) && after < Duration::from_secs(3),
            "tls={tls}: idle keep-alive closed after {after:?}"
        );
    }
}

#[tokio::test]
async fn stalled_tls_handshake_is_dropped_after_timeout() {
    let gw = gateway()
        .set("server.tls_handshake_timeout_secs", 1)
        .serve();
    // TCP connect, then send nothing at all.
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (got, after) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(got.is_empty());
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "closed after {after:?}"
    );
    // Half a ClientHello, then silence: dropped too.
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .await
        .unwrap();
    let (_, after) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "closed after {after:?}"
    );

    let text = get(&gw, "/metrics").await.text();
    assert!(
        text.contains("tars_tls_handshake_failures_total 2"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// The accept loop never dies
// ---------------------------------------------------------------------------

#[tokio::test]
async fn accept_loop_survives_connections_opened_and_dropped() {
    let gw = gateway().serve();
    for i in 0..200 {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        match i % 3 {
            0 => {}
            1 => {
                let _ = s.write_all(b"\x16\x03\x01garbage that is not TLS").await;
            }
            _ => {
                let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
            }
        }
        drop(s);
    }
    let r = get(&gw, "/health").await;
    assert_eq!(r.status, 200);
}
