//! The API reference, executed: the client examples in `docs/examples/` run
//! against the gateway (in-process, TLS, open enrollment) and a fake Ollama, and the
//! served `/openapi.json` goes through a real OpenAPI 3.1 validator
//! (`openapi-spec-validator`) and property-based API tests (`schemathesis`).
//!
//! They need `python3` (with `venv`), `node` and `npm`, and PyPI and the npm
//! registry, from which they install the examples' packages and the checkers
//! into a cache under `target/` (reused while the pinned versions stay the
//! same). When a tool or a registry is missing, a test prints
//! `SKIPPED: <why>` and returns locally, and fails under `CI=true`. They are
//! part of the plain `cargo test` (about 15 s with the cache warm, 45 s cold).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::support;
use crate::support::fake_ollama::{Behavior, FakeOllama};
use crate::support::tools::{self, have};

/// Python packages: the example's own (docs/examples/requirements.txt) and
/// the two checkers, pinned so CI does not change under us.
const PY_PACKAGES: &[&str] = &[
    "websockets>=13,<18",
    "openapi-spec-validator==0.9.0",
    "schemathesis==4.32.5",
];
/// npm packages of node_client.js (ws) and seed_client.js (ws, axios).
const NPM_PACKAGES: &[&str] = &["ws@8", "axios@1"];

/// The answer the fake Ollama streams, token by token.
const ANSWER: [&str; 7] = ["The", " capital", " of", " France", " is", " Paris", "."];
const ANSWER_TEXT: &str = "The capital of France is Paris.";

/// Installs are done once per test binary, one at a time.
static INSTALL: Mutex<()> = Mutex::new(());

fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("api-checks")
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples")
}

/// Run `cmd` to completion within `timeout` (killed after it), capturing
/// its output.
fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    support::wait_output(child, timeout, &format!("{cmd:?}"))
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// The cached install in `dir` is current when its stamp lists `packages`.
fn stamped(dir: &Path, packages: &[&str]) -> bool {
    std::fs::read_to_string(dir.join(".tars-packages")).ok() == Some(packages.join("\n"))
}

/// A virtualenv with [`PY_PACKAGES`]: its `python`, or why there is none.
fn python_env() -> Result<PathBuf, String> {
    let _g = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    have("python3")?;
    let dir = cache().join("venv");
    let python = dir.join("bin/python");
    if stamped(&dir, PY_PACKAGES) && python.exists() {
        return Ok(python);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let o = run(
        Command::new("python3").args(["-m", "venv"]).arg(&dir),
        Duration::from_secs(120),
    );
    if !o.status.success() {
        return Err(format!("python3 -m venv failed: {}", text(&o.stderr)));
    }
    let o = run(
        Command::new(&python)
            .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
            .args(PY_PACKAGES),
        Duration::from_secs(300),
    );
    if !o.status.success() {
        return Err(format!(
            "pip install {} failed (is PyPI reachable?): {}",
            PY_PACKAGES.join(" "),
            text(&o.stderr)
        ));
    }
    std::fs::write(dir.join(".tars-packages"), PY_PACKAGES.join("\n")).unwrap();
    Ok(python)
}

/// A folder whose `node_modules` holds [`NPM_PACKAGES`], or why there is none.
fn node_env() -> Result<PathBuf, String> {
    let _g = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    have("node")?;
    have("npm")?;
    let dir = cache().join("node");
    if stamped(&dir, NPM_PACKAGES) && dir.join("node_modules/ws").exists() {
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let o = run(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .arg("--prefix")
            .arg(&dir)
            .args(NPM_PACKAGES),
        Duration::from_secs(300),
    );
    if !o.status.success() {
        return Err(format!(
            "npm install {} failed (is the npm registry reachable?): {}",
            NPM_PACKAGES.join(" "),
            text(&o.stderr)
        ));
    }
    std::fs::write(dir.join(".tars-packages"), NPM_PACKAGES.join("\n")).unwrap();
    Ok(dir)
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A gateway in front of `fake` on a fixed port, so that a restarted one
/// answers at the same URL. Open enrollment; limits out of the way.
fn gateway_builder(fake: &FakeOllama, port: u16) -> support::GatewayBuilder {
    support::gateway()
        .ollama(&fake.url())
        .set("server.listen", format!("127.0.0.1:{port}"))
        .set("auth.open_enrollment", true)
        .set("auth.max_failed_attempts_per_minute", 100_000)
        .set("limits.auth_per_minute", 100_000)
        .set("limits.connections_per_second", 10_000)
        .set("log.level", "info")
}

fn assert_streamed(name: &str, o: &Output, expect: &[&str]) {
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(
        o.status.success(),
        "{name} failed ({})\nstdout:\n{out}\nstderr:\n{err}",
        o.status
    );
    for e in expect {
        assert!(
            out.contains(e),
            "{name} did not print {e:?}\nstdout:\n{out}\nstderr:\n{err}"
        );
    }
    println!("{name}: ok\n{out}");
}

/// Each example gets a token, streams the fake's answer over WSS and prints
/// the `complete` figures: the Python client trusting the gateway's
/// certificate with `--ca`, the Node client with `--insecure`, and the seed
/// report's own client with `NODE_EXTRA_CA_CERTS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_examples_stream_an_answer() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::stream(ANSWER));
    let gw = gateway_builder(&fake, free_port()).serve();
    let cert = gw.cert.clone().unwrap();
    let url = format!("https://localhost:{}", gw.addr.port());
    let complete = format!("complete: {} tokens", ANSWER.len());

    let (py, node) = tokio::task::spawn_blocking(|| (python_env(), node_env()))
        .await
        .unwrap();
    match &py {
        Err(why) => tools::skip("python_client.py", why),
        Ok(python) => {
            let mut cmd = Command::new(python);
            cmd.arg(examples().join("python_client.py"))
                .args(["--url", &url, "--client-id", "py-example", "--ca"])
                .arg(&cert)
                .arg("What is the capital of France?");
            let o = tokio::task::spawn_blocking(move || run(&mut cmd, Duration::from_secs(60)))
                .await
                .unwrap();
            assert_streamed("python_client.py", &o, &[ANSWER_TEXT, &complete]);
        }
    }
    match &node {
        Err(why) => {
            tools::skip("node_client.js and seed_client.js", why);
        }
        Ok(modules) => {
            let mut cmd = Command::new("node");
            cmd.arg(examples().join("node_client.js"))
                .args(["--url", &url, "--client-id", "node-example", "--insecure"])
                .env("NODE_PATH", modules.join("node_modules"));
            let o = tokio::task::spawn_blocking(move || run(&mut cmd, Duration::from_secs(60)))
                .await
                .unwrap();
            assert_streamed("node_client.js", &o, &[ANSWER_TEXT, &complete]);

            // The seed's client, unchanged but for its URLs: only the port
            // differs here.
            let seed = std::fs::read_to_string(examples().join("seed_client.js")).unwrap();
            assert_eq!(seed.matches("localhost:8443").count(), 2);
            let copy = gw.dir.path().join("seed_client.js");
            std::fs::write(
                &copy,
                seed.replace("localhost:8443", &format!("localhost:{}", gw.addr.port())),
            )
            .unwrap();
            let mut cmd = Command::new("node");
            cmd.arg(&copy)
                .env("NODE_PATH", modules.join("node_modules"))
                .env("NODE_EXTRA_CA_CERTS", &cert);
            let o = tokio::task::spawn_blocking(move || run(&mut cmd, Duration::from_secs(60)))
                .await
                .unwrap();
            assert_streamed(
                "seed_client.js",
                &o,
                &["Session:", ANSWER_TEXT, "Complete (7 tokens)"],
            );
        }
    }
}

/// Both clients are streaming when the gateway is killed; a new gateway
/// comes up on the same port; both reconnect, ask again and finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_examples_reconnect_after_a_drop() {
    let (py, node) = tokio::task::spawn_blocking(|| (python_env(), node_env()))
        .await
        .unwrap();
    let (python, modules) = match (py, node) {
        (Ok(p), Ok(n)) => (p, n),
        (Err(why), _) | (_, Err(why)) => {
            tools::skip("client_examples_reconnect_after_a_drop", &why);
            return;
        }
    };
    let fake = FakeOllama::start().await;
    fake.set(Behavior::stream(ANSWER).delay(Duration::from_millis(400)));
    let gw = gateway_builder(&fake, free_port()).serve();
    let cert = gw.cert.clone().unwrap();
    let url = format!("https://localhost:{}", gw.addr.port());
    let py = Command::new(python)
        .arg(examples().join("python_client.py"))
        .args(["--url", &url, "--client-id", "py-example", "--ca"])
        .arg(&cert)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let node = Command::new("node")
        .arg(examples().join("node_client.js"))
        .args(["--url", &url, "--client-id", "node-example", "--ca"])
        .arg(&cert)
        .env("NODE_PATH", modules.join("node_modules"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        fake.wait_streams_open(2, Duration::from_secs(30)).await,
        "both clients should be streaming; gateway logs:\n{}",
        gw.logs()
    );
    // A few tokens into both answers (one every 400 ms each) before the crash.
    support::wait_until("tokens to both clients", Duration::from_secs(10), || {
        let n = fake.lines_written();
        async move { n >= 4 }
    })
    .await;
    // Stopped hard (as a crash would), then up again on the same port,
    // certificate and key.
    let gw = tokio::task::spawn_blocking(move || gw.restart())
        .await
        .unwrap();
    let complete = format!("complete: {} tokens", ANSWER.len());
    let (po, no) = tokio::task::spawn_blocking(|| {
        (
            support::wait_output(py, Duration::from_secs(60), "python_client.py"),
            support::wait_output(node, Duration::from_secs(60), "node_client.js"),
        )
    })
    .await
    .unwrap();
    for (name, o) in [("python_client.py", &po), ("node_client.js", &no)] {
        assert_streamed(name, o, &[ANSWER_TEXT, &complete]);
        let err = text(&o.stderr);
        assert!(err.contains("connection lost"), "{name}:\n{err}");
        assert!(err.contains("reconnecting in"), "{name}:\n{err}");
    }
    drop(gw);
}

/// The served document is valid OpenAPI 3.1, and schemathesis, generating
/// requests from it against the running gateway (admin and revocable tokens
/// supplied, limits out of the way), finds no server error, no undocumented
/// status code, header or content type, and no body that breaks its schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_valid_and_schemathesis_finds_nothing() {
    let python = match tokio::task::spawn_blocking(python_env).await.unwrap() {
        Ok(p) => p,
        Err(why) => {
            tools::skip("openapi-spec-validator and schemathesis", &why);
            return;
        }
    };
    let fake = FakeOllama::start().await;
    fake.set(Behavior::stream(ANSWER));
    let gw = gateway_builder(&fake, free_port())
        .client("admin", "admin-secret", true)
        .serve();
    let admin = support::chat::token_for(&gw, "admin", Some("admin-secret")).await;
    let victim = support::chat::token_for(&gw, "victim", None).await;
    let cert = gw.cert.clone().unwrap();
    let base = format!("https://localhost:{}", gw.addr.port());
    let work = gw.dir.path().to_path_buf();
    let bin = python.parent().unwrap().to_path_buf();

    let doc = support::get(&gw, "/openapi.json").await;
    assert_eq!(doc.status, 200);
    std::fs::write(work.join("openapi.json"), doc.text()).unwrap();
    let o = run(
        Command::new(bin.join("openapi-spec-validator")).arg(work.join("openapi.json")),
        Duration::from_secs(60),
    );
    assert!(
        o.status.success(),
        "openapi-spec-validator:\n{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    println!("openapi-spec-validator: {}", text(&o.stdout).trim());

    let config = format!(
        r#"# schemathesis settings for the gateway (written by tests/it/examples.rs)
headers = {{ Authorization = "Bearer {admin}" }}

[[operations]]
include-path = "/auth/revoke"
# Without a body, /auth/revoke revokes the bearer token: give it one of its
# own, so the admin token stays valid for the other operations.
headers = {{ Authorization = "Bearer {victim}" }}

[[operations]]
include-path = "/ws/chat"
# The WebSocket handshake headers are described, not declared as parameters
# (schemathesis speaks plain HTTP and must not upgrade), so its "valid"
# requests are plain GETs, answered 400 not_websocket as documented.
checks.positive_data_acceptance.expected-statuses = [101, 400, 401, 403, 503]
"#
    );
    std::fs::write(work.join("schemathesis.toml"), config).unwrap();
    let mut cmd = Command::new(bin.join("schemathesis"));
    cmd.arg("--config-file")
        .arg(work.join("schemathesis.toml"))
        .arg("--no-color")
        .arg("run")
        .arg(format!("{base}/openapi.json"))
        .arg("--tls-verify")
        .arg(&cert)
        .args(["--checks", "all", "--workers", "2", "--max-examples"])
        .arg(std::env::var("SCHEMATHESIS_MAX_EXAMPLES").unwrap_or_else(|_| "20".into()))
        .args(["--request-timeout", "10"])
        .current_dir(&work);
    let o = tokio::task::spawn_blocking(move || run(&mut cmd, Duration::from_secs(600)))
        .await
        .unwrap();
    let out = text(&o.stdout);
    println!("{out}");
    // What the gateway counted of connections it refused or dropped: a
    // "Network Error" from schemathesis is told apart by these.
    let refused: Vec<String> = support::get(&gw, "/metrics")
        .await
        .text()
        .lines()
        .filter(|l| l.starts_with("tars_connections_rejected") || l.starts_with("tars_tls_"))
        .map(str::to_string)
        .collect();
    assert!(
        o.status.success(),
        "schemathesis found problems (above)\nstderr:\n{}\nconnections refused or \
         failed:\n{}\ngateway logs (tail):\n{}",
        text(&o.stderr),
        refused.join("\n"),
        gw.logs()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
