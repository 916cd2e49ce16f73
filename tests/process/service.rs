//! Running as a service: the systemd notify protocol, SIGHUP reload without
//! dropping live streams, a bad reload refused, the SIGTERM drain, the log
//! file, socket activation. (Certificate files picked up without a signal and
//! the metrics of a session run in-process: `tests/it/reload.rs`.)

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::chat::*;
use crate::support::fake_ollama::{Behavior, FakeOllama};
use crate::support::*;
use serde_json::json;

/// Read notify datagrams until one contains `needle`; returns it.
fn wait_notify(sock: &UnixDatagram, needle: &str, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(msg.clone());
            if msg.lines().any(|l| l == needle) {
                return msg;
            }
        }
    }
    panic!("no {needle:?} notification; got {seen:?}");
}

#[test]
fn notify_messages_arrive_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut gw = gateway()
        .env("NOTIFY_SOCKET", path.to_str().unwrap())
        .env("WATCHDOG_USEC", "400000")
        .start();
    let mut seen = Vec::new();
    let ready = wait_notify(&sock, "READY=1", &mut seen);
    assert!(ready.contains("STATUS=0 sessions, 0 streams"), "{ready}");
    wait_notify(&sock, "WATCHDOG=1", &mut seen);

    gw.signal("HUP");
    let reloading = wait_notify(&sock, "RELOADING=1", &mut seen);
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC with RELOADING=1");
    assert!(usec.parse::<u64>().unwrap() > 0);
    wait_notify(&sock, "READY=1", &mut seen);

    gw.signal("TERM");
    wait_notify(&sock, "STOPPING=1", &mut seen);
    let st = gw.wait_exit(Duration::from_secs(10)).expect("exited");
    assert_eq!(st.code(), Some(0));
    // Order: READY before RELOADING before the second READY before STOPPING.
    let pos = |needle: &str, from: usize| {
        seen.iter()
            .skip(from)
            .position(|m| m.lines().any(|l| l == needle))
            .map(|p| p + from)
            .unwrap()
    };
    let r1 = pos("READY=1", 0);
    let rl = pos("RELOADING=1", r1);
    let r2 = pos("READY=1", rl);
    let stop = pos("STOPPING=1", r2);
    assert!(r1 < rl && rl < r2 && r2 < stop);
}

/// Make a fresh self-signed pair with `tars gen-cert` in a scratch folder.
fn new_pair(scratch: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cfg = scratch.join("gen.toml");
    std::fs::write(&cfg, "[tls]\ncert = \"n.crt\"\nkey = \"n.key\"\n").unwrap();
    let (code, _, err) = run_tars(&["--config", cfg.to_str().unwrap(), "gen-cert"], &[]);
    assert_eq!(code, 0, "{err}");
    (scratch.join("n.crt"), scratch.join("n.key"))
}

/// Replace the gateway's cert and key files atomically (rename), as an ACME
/// client does.
fn install_pair(gw: &Gateway, crt: &Path, key: &Path) {
    let certs = gw.dir.path().join("certs");
    std::fs::copy(crt, certs.join("tars.crt.new")).unwrap();
    std::fs::copy(key, certs.join("tars.key.new")).unwrap();
    std::fs::rename(certs.join("tars.key.new"), certs.join("tars.key")).unwrap();
    std::fs::rename(certs.join("tars.crt.new"), certs.join("tars.crt")).unwrap();
}

/// Whether a TLS handshake succeeds when trusting only `cert`.
async fn handshake_trusting(gw: &Gateway, cert: &Path) -> bool {
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_tls_config(cert));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_certificate_while_a_session_streams() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::Endless {
        delay: Duration::from_millis(20),
    });
    let gw = gateway()
        .ollama(&fake.url())
        .set("auth.open_enrollment", true)
        .set("tls.watch_interval_secs", 0)
        .start();
    let scratch = tempfile::tempdir().unwrap();
    let old_cert = scratch.path().join("old.crt");
    std::fs::copy(gw.cert.as_ref().unwrap(), &old_cert).unwrap();
    let mut ws = session(&gw, "c").await;
    send_chat(&mut ws, "keep going", None).await;
    assert_eq!(recv(&mut ws).await["type"], "token");

    let (crt, key) = new_pair(scratch.path());
    install_pair(&gw, &crt, &key);
    gw.signal("HUP");
    gw.wait_for_log("configuration reloaded", Duration::from_secs(10));
    assert!(
        handshake_trusting(&gw, &crt).await,
        "new handshakes see the new certificate"
    );
    assert!(
        !handshake_trusting(&gw, &old_cert).await,
        "the old certificate is no longer served"
    );
    // The session opened before the reload still streams.
    read_tokens(&mut ws, 5).await;
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
async fn bad_reload_keeps_the_old_config_and_counts_the_failure() {
    // SIGHUP alone: this test counts the reloads it causes.
    let gw = gateway().set("tls.watch_interval_secs", 0).start();
    let good = std::fs::read_to_string(&gw.config).unwrap();
    std::fs::write(
        &gw.config,
        format!("{good}\n[websocket]\nmax_connections = \"lots\"\n"),
    )
    .unwrap();
    gw.signal("HUP");
    gw.wait_for_log("reload refused", Duration::from_secs(10));
    assert!(
        gw.logs().contains("websocket.max_connections"),
        "the error names the key"
    );
    assert_eq!(get(&gw, "/health").await.status, 200);
    assert_eq!(get(&gw, "/ws/health").await.json()["max_connections"], 10);
    let text = get(&gw, "/metrics").await.text();
    assert!(
        text.contains("tars_config_reloads_total{kind=\"error\"} 1"),
        "{text}"
    );

    std::fs::write(&gw.config, &good).unwrap();
    edit_config(&gw, |t| {
        t.entry("websocket")
            .or_insert(toml::Value::Table(Default::default()))
            .as_table_mut()
            .unwrap()
            .insert("max_connections".into(), 7.into());
        t["server"]
            .as_table_mut()
            .unwrap()
            .insert("listen".into(), "127.0.0.1:1".into());
    });
    gw.signal("HUP");
    gw.wait_for_log("configuration reloaded", Duration::from_secs(10));
    assert_eq!(get(&gw, "/ws/health").await.json()["max_connections"], 7);
    assert!(
        gw.logs().contains("server.listen"),
        "a restart-only change is named"
    );
    let text = get(&gw, "/metrics").await.text();
    assert!(
        text.contains("tars_config_reloads_total{kind=\"ok\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_answer_finish_then_closes_1001() {
    let fake = FakeOllama::start().await;
    let tokens: Vec<String> = (0..20).map(|i| format!("t{i} ")).collect();
    fake.set(Behavior::stream(tokens.clone()).delay(Duration::from_millis(50)));
    let mut gw = gateway()
        .ollama(&fake.url())
        .set("auth.open_enrollment", true)
        .set("server.shutdown_grace_secs", 20)
        .start();
    let token = token_for(&gw, "c", None).await;
    let (mut ws, _) = open_chat(&gw, &token).await;
    let (mut idle, _) = open_chat(&gw, &token).await;
    send_chat(&mut ws, "long answer", None).await;
    assert_eq!(recv(&mut ws).await["type"], "token");
    let term_at = Instant::now();
    gw.signal("TERM");

    let mut got_system = false;
    let mut n_tokens = 1;
    let end = loop {
        let v = recv(&mut ws).await;
        match v["type"].as_str().unwrap() {
            "system" => got_system = true,
            "token" => n_tokens += 1,
            "complete" | "error" => break v,
            other => panic!("{other}"),
        }
    };
    assert!(got_system, "a shutdown notice was sent");
    assert_eq!(end["type"], "complete", "{end}");
    assert_eq!(end["done_reason"], "stop");
    assert_eq!(n_tokens, tokens.len());
    assert_eq!(expect_close(&mut ws).await, Some(1001));
    // The idle session got the notice and was closed at once.
    assert_eq!(recv(&mut idle).await["type"], "system");
    assert_eq!(expect_close(&mut idle).await, Some(1001));
    let st = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("exited");
    assert_eq!(st.code(), Some(0));
    assert!(
        term_at.elapsed() < Duration::from_secs(8),
        "exited as soon as the stream ended, not after the grace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_period_over_closes_streams_and_second_signal_exits_at_once() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::Endless {
        delay: Duration::from_millis(20),
    });
    let mut gw = gateway()
        .ollama(&fake.url())
        .set("auth.open_enrollment", true)
        .set("server.shutdown_grace_secs", 1)
        .start();
    let token = token_for(&gw, "c", None).await;
    let (mut ws, _) = open_chat(&gw, &token).await;
    send_chat(&mut ws, "forever", None).await;
    assert_eq!(recv(&mut ws).await["type"], "token");
    gw.signal("TERM");
    assert_eq!(expect_close(&mut ws).await, Some(1001));
    assert!(
        fake.wait_stream_closed(Duration::from_secs(5))
            .await
            .is_some(),
        "upstream dropped"
    );
    let st = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("exited");
    assert_eq!(st.code(), Some(0));

    // A second signal ends a drain at once.
    let mut gw = gateway()
        .ollama(&fake.url())
        .set("auth.open_enrollment", true)
        .set("server.shutdown_grace_secs", 60)
        .start();
    let mut ws = session(&gw, "c").await;
    send_chat(&mut ws, "forever", None).await;
    assert_eq!(recv(&mut ws).await["type"], "token");
    gw.signal("TERM");
    gw.wait_for_log("draining", Duration::from_secs(5));
    gw.signal("TERM");
    let st = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(5)))
        .await
        .unwrap()
        .expect("exited at once");
    assert_ne!(st.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_file_is_written_and_never_holds_a_token_or_secret() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::stream(["a", "b"]));
    let gw = gateway()
        .ollama(&fake.url())
        .client("laptop", "laptop-secret-value-123", false)
        .set("log.level", "trace")
        .set("log.file", "logs/tars.log")
        .start();
    let r = post_json(
        &gw,
        "/auth/token",
        &json!({"client_id": "laptop", "client_secret": "laptop-secret-value-123"}),
        None,
    )
    .await;
    let pair = r.json();
    let access = pair["access_token"].as_str().unwrap().to_string();
    let refresh = pair["refresh_token"].as_str().unwrap().to_string();
    let (mut ws, _) = open_chat(&gw, &access).await;
    let g = chat(&mut ws, "hello", Some("c")).await;
    assert_eq!(g.end["type"], "complete");
    drop(ws);
    gw.wait_for_log("session closed", Duration::from_secs(5));
    let files: Vec<_> = std::fs::read_dir(gw.dir.path().join("logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        name.starts_with("tars.") && name.ends_with(".log"),
        "{name}"
    );
    // The file writer is asynchronous: wait for the session line to land.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut text = String::new();
    while Instant::now() < deadline && !text.contains("session closed") {
        text = std::fs::read_to_string(&files[0]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        text.contains("session closed") && text.contains("client_id=laptop"),
        "{text}"
    );
    for secret in [
        access.as_str(),
        refresh.as_str(),
        "laptop-secret-value-123",
        TEST_SECRET,
    ] {
        assert!(!text.contains(secret), "log file holds a secret");
        assert!(!gw.logs().contains(secret), "stderr log holds a secret");
    }
    // A session line carries what an operator needs.
    let line = gw
        .logs()
        .lines()
        .find(|l| l.contains("session closed"))
        .unwrap()
        .to_string();
    for field in [
        "session_id=",
        "client_id=laptop",
        "peer=",
        "duration_ms=",
        "messages=1",
        "tokens=2",
        "close_code=",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
}

#[test]
fn socket_activation_serves_on_the_passed_socket() {
    // A tiny launcher does what systemd does for tars.socket: bind, put the
    // socket at fd 3, set LISTEN_FDS/LISTEN_PID, exec tars.
    let Some(py) = tools::which("python3") else {
        tools::skip(
            "socket_activation_serves_on_the_passed_socket",
            "python3 not available to play systemd's part",
        );
        return;
    };
    let b = gateway().set("server.listen", "127.0.0.1:1");
    let config = b.write_config();
    let dir = b.dir().to_path_buf();
    let (code, _, err) = run_tars(&["--config", config.to_str().unwrap(), "gen-cert"], &[]);
    assert_eq!(code, 0, "{err}");
    let launcher = r#"
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(64)
print(s.getsockname()[1], flush=True)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[1], [sys.argv[1], "--config", sys.argv[2]])
"#;
    let mut child = std::process::Command::new(py)
        .args([
            "-c",
            launcher,
            env!("CARGO_BIN_EXE_tars"),
            config.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut port = String::new();
    std::io::BufRead::read_line(&mut out, &mut port).unwrap();
    let port: u16 = port.trim().parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let served = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let cert = dir.join("certs/tars.crt");
            if let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                let connector = tokio_rustls::TlsConnector::from(client_tls_config(&cert));
                let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
                if let Ok(mut tls) = connector.connect(name, tcp).await {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    tls.write_all(
                        b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                    )
                    .await
                    .unwrap();
                    let mut buf = Vec::new();
                    let _ = tls.read_to_end(&mut buf).await;
                    return String::from_utf8_lossy(&buf).into_owned();
                }
            }
            assert!(
                Instant::now() < deadline,
                "tars never served on the passed socket"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(
        logs.contains("using the socket passed by systemd"),
        "{logs}"
    );
}
