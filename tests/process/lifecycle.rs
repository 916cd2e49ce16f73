//! The gateway process's life: environment overrides, `gen-cert` and the
//! certificate files, a port already in use (exit 1), SIGTERM and SIGINT
//! (drain, exit 0; a second signal exits at once), and the process's
//! descriptor table (running out of descriptors, none leaked by 300 clients
//! vanishing at once). Each starts the real binary.

use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::support::chat::*;
use crate::support::fake_ollama::{Behavior, FakeOllama};
use crate::support::fake_version::{closed_port_url, FakeVersion};
use crate::support::tools;
use crate::support::*;

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
        gw.wait_log("draining open_tasks=1", Duration::from_secs(5))
            .await;
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
    let fake = FakeOllama::start().await;
    fake.set(Behavior::Endless {
        delay: Duration::from_millis(20),
    });
    let mut gw = gateway()
        .ollama(&fake.url())
        .set("auth.open_enrollment", true)
        .set("server.shutdown_grace_secs", 60)
        .start();
    let mut ws = session(&gw, "c").await;
    send_chat(&mut ws, "forever", None).await;
    assert_eq!(recv(&mut ws).await["type"], "token");
    gw.signal("TERM");
    gw.wait_log("draining open_tasks=", Duration::from_secs(5))
        .await;
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

#[tokio::test]
async fn accept_loop_survives_running_out_of_file_descriptors() {
    if let Err(why) = tools::have("prlimit") {
        tools::skip(
            "accept_loop_survives_running_out_of_file_descriptors",
            &format!("{why}; prlimit (util-linux) lowers the gateway's fd limit"),
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
    gw.wait_log("accept failed", Duration::from_secs(5)).await;
    assert!(gw.logs().contains("Too many open files"), "{}", gw.logs());
    drop(held);

    // The clients go away, their descriptors come back (the limit stays
    // low), and the loop is still there to use them.
    let r = tokio::time::timeout(Duration::from_secs(10), get(&gw, "/health"))
        .await
        .expect("/health after EMFILE");
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_dropping_at_once_leak_nothing() {
    let fake = FakeOllama::start().await;
    // A token every 100 ms keeps 200 answers streaming without the token
    // traffic of the debug build crowding out the 300 handshakes.
    fake.set(Behavior::Endless {
        delay: Duration::from_millis(100),
    });
    let gw = gateway()
        .ollama(&fake.url())
        .set("auth.open_enrollment", true)
        .set("websocket.max_connections", 400)
        .start();
    let token = token_for(&gw, "crowd", None).await;
    let fds_before = open_fds(&gw);
    let gw = std::sync::Arc::new(gw);
    // 200 sessions streaming and 100 that sit idle (nothing is being written
    // to them when their clients vanish), opened 20 at a time.
    let mut sockets = Vec::new();
    for batch in 0..15 {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let (gw, token) = (gw.clone(), token.clone());
            set.spawn(async move {
                let (mut ws, _) = open_chat(&gw, &token).await;
                if batch < 10 {
                    send_chat(&mut ws, "stream", None).await;
                }
                ws
            });
        }
        while let Some(ws) = set.join_next().await {
            sockets.push(ws.unwrap());
        }
    }
    assert_eq!(sockets.len(), 300);
    assert!(
        fake.wait_streams_open(200, Duration::from_secs(20)).await,
        "{} open",
        fake.streams_open()
    );
    drop(sockets);
    wait_until(
        "every upstream stream to close",
        Duration::from_secs(10),
        || async { fake.streams_open() == 0 },
    )
    .await;
    wait_until(
        "the session gauge to return to 0",
        Duration::from_secs(10),
        || async {
            let m = request(
                &gw,
                "GET",
                "/metrics",
                &[("accept", "application/json")],
                None,
            )
            .await
            .json();
            m["active_connections"] == 0
        },
    )
    .await;
    let text = get(&gw, "/metrics").await.text();
    assert!(text.contains("tars_generations_active 0"), "{text}");
    assert_eq!(
        fake.closed_streams().iter().filter(|s| s.by_client).count(),
        200
    );
    // Every session's tasks ended and its socket closed: descriptors are back
    // to where they were, give or take the idle connections the Ollama pool
    // may keep (ollama.pool_max_connections = 20).
    wait_until(
        "descriptors back to the baseline",
        Duration::from_secs(10),
        || async { open_fds(&gw) <= fds_before + 20 },
    )
    .await;
}

/// Open file descriptors of the gateway process.
fn open_fds(gw: &Gateway) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", gw.child.id()))
        .unwrap()
        .count()
}
