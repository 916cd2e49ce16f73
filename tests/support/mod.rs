//! Test support: start the real `tars` binary on port 0 with a config made
//! for the test, talk to it over real TLS (trusting the certificate it
//! generated), and read what it logged.
//!
//! Each integration test file does `mod support;` and uses what it needs.
#![allow(dead_code)]

pub mod chat;
pub mod client;
pub mod fake_ollama;
pub mod jwt;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use client::*;

/// A 64-hex-character secret good enough for tests.
pub const TEST_SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// How to start a gateway: a base config plus overrides.
pub struct GatewayBuilder {
    table: toml::Table,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    generate_cert: bool,
}

impl GatewayBuilder {
    /// Set `dotted.key` in the config to `value`.
    pub fn set(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().unwrap();
        let mut t = &mut self.table;
        for p in parts {
            t = t
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap();
        }
        t.insert(last.to_string(), value.into());
        self
    }

    /// Remove `dotted.key` from the config.
    pub fn unset(mut self, key: &str) -> Self {
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().unwrap();
        let mut t = &mut self.table;
        for p in parts {
            t = t.get_mut(p).unwrap().as_table_mut().unwrap();
        }
        t.remove(last);
        self
    }

    /// Do not run `tars gen-cert` before starting: with TLS on and no
    /// certificate files, `tars` itself generates them at start.
    pub fn without_cert(mut self) -> Self {
        self.generate_cert = false;
        self
    }

    /// Plain HTTP instead of TLS.
    pub fn plain(self) -> Self {
        self.set("tls.enabled", false)
    }

    /// Point `[ollama] host` at a fake Ollama (or any URL).
    pub fn ollama(self, url: &str) -> Self {
        self.set("ollama.host", url)
    }

    /// Pass an environment variable to the process.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Add a registered client with `secret` (hashed here with argon2id).
    pub fn client(mut self, id: &str, secret: &str, admin: bool) -> Self {
        let hash = hash_secret(secret);
        let auth = self
            .table
            .entry("auth")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap();
        let clients = auth
            .entry("clients")
            .or_insert_with(|| toml::Value::Array(vec![]))
            .as_array_mut()
            .unwrap();
        let mut c = toml::Table::new();
        c.insert("id".into(), id.into());
        c.insert("secret_hash".into(), hash.into());
        c.insert("admin".into(), admin.into());
        clients.push(toml::Value::Table(c));
        self
    }

    /// The folder the config file, certificates and data_dir live in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Write the config file and return its path, without starting anything.
    pub fn write_config(&self) -> PathBuf {
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, toml::to_string(&self.table).unwrap()).unwrap();
        path
    }

    /// Start `tars` and wait until it listens.
    pub fn start(self) -> Gateway {
        let config = self.write_config();
        let tls = self
            .table
            .get("tls")
            .and_then(|t| t.get("enabled"))
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        if tls && self.generate_cert {
            let st = Command::new(env!("CARGO_BIN_EXE_tars"))
                .args(["--config", config.to_str().unwrap(), "gen-cert"])
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "gen-cert failed");
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tars"));
        cmd.args(["--config", config.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM");
        for (var, _) in ENV_VARS {
            cmd.env_remove(var);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tars");
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        for pipe in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let logs = logs.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    // Record the line before announcing the address, so a
                    // test that starts asserting on logs sees it.
                    {
                        let mut l = logs.lock().unwrap();
                        l.push_str(&line);
                        l.push('\n');
                    }
                    if let Some(addr) = parse_listen_line(&line) {
                        let _ = tx.send(addr);
                    }
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                std::thread::sleep(Duration::from_millis(100));
                panic!("tars did not start; logs:\n{}", logs.lock().unwrap());
            }
        };
        let cert = self.dir.path().join("certs/tars.crt");
        Gateway {
            child,
            addr,
            tls,
            cert: tls.then_some(cert),
            logs,
            config,
            dir: self.dir,
        }
    }
}

/// Environment variables the gateway reads; cleared so the developer's own
/// shell cannot change a test.
const ENV_VARS: &[(&str, ())] = &[
    ("TARS_LISTEN", ()),
    ("JWT_SECRET_KEY", ()),
    ("JWT_ALGORITHM", ()),
    ("JWT_EXPIRATION_HOURS", ()),
    ("JWT_REFRESH_EXPIRATION_DAYS", ()),
    ("WS_HEARTBEAT_INTERVAL", ()),
    ("WS_MAX_CONNECTIONS", ()),
    ("WS_MESSAGE_QUEUE_SIZE", ()),
    ("WS_TIMEOUT_SECONDS", ()),
    ("OLLAMA_HOST", ()),
    ("OLLAMA_MODEL", ()),
    ("MODEL_TEMPERATURE", ()),
    ("MODEL_TOP_P", ()),
    ("MODEL_TOP_K", ()),
    ("MODEL_MAX_TOKENS", ()),
    ("CORS_ORIGINS", ()),
    ("HTTPS_ENABLED", ()),
    ("TLS_CERT_PATH", ()),
    ("TLS_KEY_PATH", ()),
    ("NOTIFY_SOCKET", ()),
    ("WATCHDOG_USEC", ()),
    ("LISTEN_FDS", ()),
];

fn parse_listen_line(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    let rest = &line[line.find("addr=")? + 5..];
    rest.split_whitespace().next()?.parse().ok()
}

/// A base config for tests: loopback, port 0, TLS with a generated
/// certificate, a fixed JWT secret, Ollama pointing at a closed port.
pub fn gateway() -> GatewayBuilder {
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "data"
shutdown_grace_secs = 10
[tls]
enabled = true
cert = "certs/tars.crt"
key = "certs/tars.key"
[log]
level = "debug"
[auth]
secret = "{TEST_SECRET}"
[ollama]
host = "http://127.0.0.1:9"
retries = 0
retry_base_delay_secs = 0.05
# Tests open many connections and sessions from 127.0.0.1 in a burst; the
# abuse limits get their own tests, which lower these.
[limits]
chat_per_minute = 100000
auth_per_minute = 100000
connections_per_second = 100000
max_connections_per_ip = 100000
"#
    );
    GatewayBuilder {
        table: base.parse().unwrap(),
        env: Vec::new(),
        dir,
        generate_cert: true,
    }
}

/// A running gateway process. Killed on drop.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    pub tls: bool,
    /// The certificate it serves, trusted by the test clients.
    pub cert: Option<PathBuf>,
    logs: Arc<Mutex<String>>,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Gateway {
    /// Everything the process printed so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Wait until the logs contain `needle`, or panic after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.logs().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("log line {needle:?} did not appear; logs:\n{}", self.logs());
    }

    /// `https://127.0.0.1:PORT` or `http://...`.
    pub fn base_url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// Send a signal (`libc`-free: via the `kill` command).
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Wait for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `tars` with `args` to completion: (exit code, stdout, stderr).
pub fn run_tars(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tars"));
    cmd.args(args).stdin(Stdio::null());
    for (var, _) in ENV_VARS {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`run_tars`] that kills `tars` and panics if it has not exited within
/// `timeout` (for commands that must fail fast, such as serving a bad config).
pub fn run_tars_timeout(
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tars"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (var, _) in ENV_VARS {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let out = wait_output(child, timeout, &format!("tars {args:?}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Wait for `child` (stdout and stderr piped) within `timeout`, collecting
/// its output; kill it and panic with what it printed when it overruns.
pub fn wait_output(mut child: Child, timeout: Duration, what: &str) -> Output {
    let drain = |mut p: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = p.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let end = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            let (o, e) = (out.join().unwrap(), err.join().unwrap());
            panic!(
                "{what} still running after {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&o),
                String::from_utf8_lossy(&e)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// argon2id PHC string for `secret`, as `tars hash-secret` makes it.
pub fn hash_secret(secret: &str) -> String {
    tars::auth::clients::hash_secret(secret.as_bytes()).unwrap()
}
