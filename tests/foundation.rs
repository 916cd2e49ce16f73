//! Foundation (issue 2): the real `tars` binary on port 0 — every endpoint
//! over TLS and plain HTTP, CORS, environment overrides, certificate
//! generation, the header-read and TLS-handshake timeouts, graceful shutdown,
//! `/ready` against a fake Ollama, and an accept loop that survives abuse.
//!
//! Bad configurations are in `config_errors.rs`.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use support::*;

const ORIGIN_OK: &str = "https://app.example:8443";
const ORIGIN_BAD: &str = "https://evil.example";

// ---------------------------------------------------------------------------
// A tiny fake Ollama: just `GET /api/version`, raw over tokio TCP.
// ---------------------------------------------------------------------------

/// Answers `GET /api/version` with Ollama's real body after `delay`; counts
/// requests and signals each arrival.
struct FakeVersion {
    url: String,
    hits: Arc<AtomicUsize>,
    arrived: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeVersion {
    async fn start(delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let arrived = Arc::new(Notify::new());
        let (h, a) = (hits.clone(), arrived.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(answer(sock, delay, h.clone(), a.clone()));
            }
        });
        Self {
            url,
            hits,
            arrived,
            task,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for FakeVersion {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    mut sock: TcpStream,
    delay: Duration,
    hits: Arc<AtomicUsize>,
    arrived: Arc<Notify>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    hits.fetch_add(1, Ordering::SeqCst);
    arrived.notify_one();
    tokio::time::sleep(delay).await;
    let (status, ctype, body) = if head.starts_with(b"GET /api/version ") {
        (
            "200 OK",
            "application/json; charset=utf-8",
            r#"{"version":"0.5.1"}"#,
        )
    } else {
        ("404 Not Found", "text/plain", "404 page not found")
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(resp.as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// A URL on a port nothing listens on.
async fn closed_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

/// [`Gateway::wait_for_log`] without blocking the runtime's thread.
async fn wait_log(gw: &Gateway, needle: &str, timeout: Duration) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if gw.logs().contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("log line {needle:?} did not appear; logs:\n{}", gw.logs());
}

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

fn sha256_fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

// ---------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------

/// Every endpoint of issue 2, asserted on one gateway (TLS or plain) whose
/// Ollama is `fake` and whose `[cors] origins` is `[ORIGIN_OK]`.
async fn check_every_endpoint(gw: &Gateway, fake: &FakeVersion) {
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
        .start();
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
        .start();
    assert!(
        gw.logs().contains("tls.enabled = false"),
        "no plain-HTTP warning:\n{}",
        gw.logs()
    );
    check_every_endpoint(&gw, &fake).await;
}

#[tokio::test]
async fn oversized_or_too_many_headers_get_431() {
    let gw = gateway().plain().start();
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
    let gw = Arc::new(gateway().plain().ollama(&fake.url).start());
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
    let gw = gateway().plain().ollama(&url).start();
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
    let gw = gateway().plain().ollama(&fake.url).start();
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
// Environment overrides
// ---------------------------------------------------------------------------

#[test]
fn env_overrides_win_in_check_config() {
    let b = gateway()
        .set("websocket.max_connections", 7)
        .set("ollama.model", "file-model");
    let cfg = b.write_config();
    let cfg = cfg.to_str().unwrap();
    let secret = "an-env-secret-that-is-long-enough-0123456789";
    let (code, out, err) = run_tars(
        &["--config", cfg, "check-config"],
        &[
            ("WS_MAX_CONNECTIONS", "42"),
            ("OLLAMA_MODEL", "llama3.2"),
            ("JWT_SECRET_KEY", secret),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("max_connections = 42"), "{out}");
    assert!(out.contains("model = \"llama3.2\""), "{out}");
    assert!(!out.contains("file-model"), "{out}");
    // The effective secret is the environment's, and it is never printed.
    assert!(out.contains("secret = \"<redacted>\""), "{out}");
    assert!(!out.contains(secret) && !err.contains(secret));
    assert!(!out.contains(TEST_SECRET));

    // Without the overrides, the file's values.
    let (code, out, _) = run_tars(&["--config", cfg, "check-config"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("max_connections = 7"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_overrides_win_when_serving() {
    let fake = FakeVersion::start(Duration::ZERO).await;
    let down = closed_port_url().await;
    // The file names an address this host cannot bind and a dead Ollama;
    // TARS_LISTEN and OLLAMA_HOST put it right.
    let gw = gateway()
        .set("server.listen", "192.0.2.1:1")
        .ollama(&down)
        .env("TARS_LISTEN", "127.0.0.1:0")
        .env("OLLAMA_HOST", &fake.url)
        .start();
    assert!(gw.addr.ip().is_loopback());
    let r = get(&gw, "/ready").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ollama"]["host"], fake.url.as_str());
    assert_eq!(fake.hits(), 1);
}

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

#[tokio::test]
async fn missing_certificate_is_generated_with_0600_key_and_logged_fingerprint() {
    use std::os::unix::fs::PermissionsExt;
    let gw = gateway().without_cert().start();
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
async fn existing_certificate_files_are_never_touched() {
    let b = gateway().without_cert();
    let cfg = b.write_config();
    let cfg = cfg.to_str().unwrap();
    let (code, out, err) = run_tars(&["--config", cfg, "gen-cert"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sha256:"), "{out}");
    let (crt, key) = (
        b.dir().join("certs/tars.crt"),
        b.dir().join("certs/tars.key"),
    );
    let before = |p: &std::path::Path| {
        (
            std::fs::read(p).unwrap(),
            std::fs::metadata(p).unwrap().modified().unwrap(),
        )
    };
    let (c0, k0) = (before(&crt), before(&key));

    // gen-cert again refuses and leaves both files alone.
    let (code, _, err) = run_tars(&["--config", cfg, "gen-cert"], &[]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("already exists"), "{err}");
    assert_eq!((before(&crt), before(&key)), (c0.clone(), k0.clone()));

    // Serving uses them as they are.
    let gw = b.start();
    assert!(
        !gw.logs().contains("created a self-signed"),
        "{}",
        gw.logs()
    );
    assert_eq!(get(&gw, "/health").await.status, 200);
    assert_eq!((before(&crt), before(&key)), (c0, k0));
}

#[tokio::test]
async fn gen_cert_host_is_in_the_certificate() {
    let b = gateway().without_cert();
    let cfg = b.write_config();
    let (code, out, err) = run_tars(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "gen-cert",
            "--host",
            "nas.local",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("nas.local"), "{out}");
    let crt = b.dir().join("certs/tars.crt");
    let der = CertificateDer::pem_file_iter(&crt)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert!(out.contains(&sha256_fingerprint(&der)), "{out}");
    let gw = b.start();

    // A client that trusts only this certificate verifies it for each name.
    let handshake = |name: ServerName<'static>| {
        let addr = gw.addr;
        let connector = tokio_rustls::TlsConnector::from(client_tls_config(&crt));
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            connector.connect(name, tcp).await
        }
    };
    for name in ["nas.local", "localhost", "127.0.0.1", "::1"] {
        let sn = ServerName::try_from(name.to_string()).unwrap();
        let tls = handshake(sn).await;
        assert!(tls.is_ok(), "{name}: {:?}", tls.err());
    }
    let other = handshake(ServerName::try_from("other.example").unwrap()).await;
    let Err(e) = other else {
        panic!("a certificate without other.example verified for it");
    };
    let e = e.to_string();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
}

#[tokio::test]
async fn tls_1_2_and_1_3_with_alpn_http_1_1() {
    let gw = gateway().start();
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

#[test]
fn port_in_use_exits_1_with_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let b = gateway().plain().set("server.listen", addr.as_str());
    let cfg = b.write_config();
    let (code, _, err) = run_tars_timeout(
        &["--config", cfg.to_str().unwrap()],
        &[],
        Duration::from_secs(20),
    );
    assert_eq!(code, 1, "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("tars: error:"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.contains("server.listen") && line.contains(&addr),
        "{line}"
    );
    assert!(!err.contains("panicked"), "{err}");
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
        let gw = b.start();
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
        let gw = b.start();
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
        .start();
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
// Graceful shutdown
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish_and_exits_0_early() {
    // Ollama takes 1 s to answer, so /ready is in flight when SIGTERM lands.
    let fake = FakeVersion::start(Duration::from_secs(1)).await;
    let mut gw = gateway()
        .ollama(&fake.url)
        .set("server.shutdown_grace_secs", 20)
        .start();
    let signalled = std::sync::Mutex::new(None);
    let in_flight = request(&gw, "GET", "/ready", &[], None);
    let terminate = async {
        fake.arrived.notified().await;
        gw.signal("TERM");
        *signalled.lock().unwrap() = Some(Instant::now());
        // The listener is closed at once: new connections are refused. (The
        // server logs "draining open_tasks=N" once its listener is closed.)
        wait_log(&gw, "draining open_tasks=1", Duration::from_secs(5)).await;
        assert!(
            TcpStream::connect(gw.addr).await.is_err(),
            "still accepting after SIGTERM"
        );
    };
    let (r, ()) = tokio::join!(in_flight, terminate);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ollama"]["version"], "0.5.1");
    let status = gw
        .wait_exit(Duration::from_secs(5))
        .expect("tars still running 5 s after SIGTERM");
    let took = signalled.lock().unwrap().unwrap().elapsed();
    assert_eq!(status.code(), Some(0), "{}", gw.logs());
    assert!(
        took < Duration::from_secs(5),
        "exit took {took:?} of a 20 s grace period"
    );
    assert!(gw.logs().contains("drained"), "{}", gw.logs());
}

#[test]
fn sigterm_or_sigint_when_idle_exits_0_at_once() {
    for sig in ["TERM", "INT"] {
        let mut gw = gateway().set("server.shutdown_grace_secs", 20).start();
        let t = Instant::now();
        gw.signal(sig);
        let status = gw
            .wait_exit(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("tars still running after SIG{sig}"));
        assert_eq!(status.code(), Some(0), "SIG{sig}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "SIG{sig}: {:?}",
            t.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_during_the_drain_exits_at_once() {
    // A stream that never ends keeps the drain going for the whole grace.
    let fake = support::fake_ollama::FakeOllama::start().await;
    fake.set(support::fake_ollama::Behavior::Endless {
        delay: Duration::from_millis(20),
    });
    let mut gw = gateway()
        .ollama(&fake.url())
        .set("auth.open_enrollment", true)
        .set("server.shutdown_grace_secs", 60)
        .start();
    let token = support::chat::token_for(&gw, "c", None).await;
    let (mut ws, _) = support::chat::open_chat(&gw, &token).await;
    support::chat::send(
        &mut ws,
        &serde_json::json!({"type": "chat", "content": "forever"}),
    )
    .await;
    assert_eq!(support::chat::recv(&mut ws).await["type"], "token");
    gw.signal("TERM");
    wait_log(&gw, "draining open_tasks=", Duration::from_secs(5)).await;
    gw.signal("INT");
    let second = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let st = gw.wait_exit(Duration::from_secs(2));
        (st, gw)
    })
    .await
    .unwrap()
    .0
    .expect("a second signal must end the drain at once");
    assert!(second.elapsed() < Duration::from_secs(2));
    assert_eq!(status.code(), Some(1));
}

// ---------------------------------------------------------------------------
// The accept loop never dies
// ---------------------------------------------------------------------------

#[tokio::test]
async fn accept_loop_survives_connections_opened_and_dropped() {
    let gw = gateway().start();
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

#[tokio::test]
async fn accept_loop_survives_running_out_of_file_descriptors() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED: prlimit (util-linux) is not installed; cannot lower the gateway's fd limit"
        );
        return;
    }
    let gw = gateway().plain().set("log.level", "info").start();
    let pid = gw.child.id().to_string();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let limit = format!("--nofile={}:{}", open + 8, open + 8);
    let st = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &limit])
        .status()
        .unwrap();
    assert!(st.success());

    // Hold more connections than the gateway has descriptors for.
    let mut held = Vec::new();
    for _ in 0..24 {
        held.push(TcpStream::connect(gw.addr).await.unwrap());
    }
    wait_log(&gw, "accept failed", Duration::from_secs(5)).await;
    assert!(gw.logs().contains("Too many open files"), "{}", gw.logs());
    drop(held);

    // The clients go away, their descriptors come back (the limit stays
    // low), and the loop is still there to use them.
    let r = tokio::time::timeout(Duration::from_secs(10), get(&gw, "/health"))
        .await
        .expect("/health after EMFILE");
    assert_eq!(r.status, 200);
}
