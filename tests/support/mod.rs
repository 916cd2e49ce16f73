//! Test support shared by every test crate (`tests/it`, `tests/process`):
//! one config builder, two ways to run what it describes, and the clients.
//!
//! - [`server`]: the gateway **in-process** through `tars::serve` on an
//!   ephemeral port, on its own runtime, with its logs captured. What every
//!   protocol-level test uses.
//! - [`process`]: the real `tars` binary as a subprocess, for tests where
//!   the process itself is under test (CLI, signals, reload, systemd, exit
//!   codes, log file, descriptor leaks).
//! - [`client`]: HTTP/1.1 and WebSocket over real TLS (trusting only the
//!   server's certificate) or plain TCP; [`chat`]: the chat protocol on top.
//! - [`fake_ollama`]: an in-process Ollama speaking the real NDJSON format;
//!   [`fake_openai`] the OpenAI dialect; either over TLS with a private CA
//!   from [`upstream_tls`].
//! - [`jwt`]: forging hostile tokens; [`tools`]: external tools that skip
//!   locally but fail under `CI=true`; [`wait_until`]: polling with a deadline.
#![allow(dead_code)]

pub mod chat;
pub mod client;
pub mod cut_proxy;
pub mod fake_ollama;
pub mod fake_openai;
pub mod fake_version;
pub mod jwt;
pub mod process;
pub mod server;
pub mod tools;
pub mod upstream_tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use client::*;
pub use process::*;
#[allow(unused_imports)]
pub use server::Server;

/// A 64-hex-character secret good enough for tests.
pub const TEST_SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Where a running gateway (in-process or subprocess) answers. Both
/// [`Server`] and [`Gateway`] dereference to it, so the clients take
/// `&Endpoint` and work with either.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub tls: bool,
    /// The certificate it serves, trusted by the test clients.
    pub cert: Option<PathBuf>,
}

impl Endpoint {
    /// `https://127.0.0.1:PORT` or `http://...`.
    pub fn base_url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }
}

/// How to start a gateway: a base config plus overrides.
pub struct GatewayBuilder {
    pub(crate) table: toml::Table,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) generate_cert: bool,
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

    /// Do not provide a certificate before starting: with TLS on and no
    /// certificate files, the gateway itself generates them at start.
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

    /// Add an `[[upstreams]]` entry (`name`, `url`, `api`, plus `extra`
    /// fields) and drop `[ollama] host`, which may not stand beside it.
    pub fn upstream(mut self, name: &str, url: &str, api: &str, extra: toml::Table) -> Self {
        if let Some(o) = self.table.get_mut("ollama").and_then(|o| o.as_table_mut()) {
            o.remove("host");
        }
        let mut t = extra;
        t.insert("name".into(), name.into());
        t.insert("url".into(), url.into());
        t.insert("api".into(), api.into());
        self.table
            .entry("upstreams")
            .or_insert_with(|| toml::Value::Array(Vec::new()))
            .as_array_mut()
            .unwrap()
            .push(toml::Value::Table(t));
        self
    }

    /// Pass an environment variable to the process (subprocess only: the
    /// in-process server reads no environment).
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

    /// Whether the config serves TLS.
    pub(crate) fn tls(&self) -> bool {
        self.table
            .get("tls")
            .and_then(|t| t.get("enabled"))
            .and_then(|v| v.as_bool())
            .unwrap_or(true)
    }

    /// Install the shared test certificate as `certs/tars.crt` and
    /// `certs/tars.key` when TLS is on and [`Self::without_cert`] was not
    /// called (the certificate paths of [`gateway`]'s base config).
    pub(crate) fn install_test_cert(&self) {
        if !(self.tls() && self.generate_cert) {
            return;
        }
        let (crt, key) = test_cert();
        let dir = self.dir.path().join("certs");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tars.crt"), crt).unwrap();
        let key_path = dir.join("tars.key");
        std::fs::write(&key_path, key).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// Rebuild a builder on an existing folder and config file (to start a
    /// gateway again on the same key, certificate and data).
    pub fn reopen(dir: tempfile::TempDir, config: &Path) -> GatewayBuilder {
        let text = std::fs::read_to_string(config).unwrap();
        GatewayBuilder {
            table: text.parse().unwrap(),
            env: Vec::new(),
            dir,
            generate_cert: false,
        }
    }
}

/// A self-signed certificate for `localhost`, `127.0.0.1` and `::1`, made
/// once per test binary: (certificate PEM, key PEM).
pub fn test_cert() -> &'static (String, String) {
    static CERT: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    CERT.get_or_init(|| {
        let names = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        let ck = rcgen::generate_simple_self_signed(names).unwrap();
        (ck.cert.pem(), ck.signing_key.serialize_pem())
    })
}

/// A base config for tests: loopback, port 0, TLS with the test
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

/// argon2id PHC string for `secret`, as `tars hash-secret` makes it.
pub fn hash_secret(secret: &str) -> String {
    tars::auth::clients::hash_secret(secret.as_bytes()).unwrap()
}

/// Poll `f` every 20 ms until it is true; panic naming `what` when
/// `timeout` passes first. For timing assertions instead of fixed sleeps.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + timeout;
    while !f().await {
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`wait_until`] for a blocking test.
pub fn wait_until_blocking(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The SHA-256 fingerprint of a DER certificate as the gateway logs it
/// (`AA:BB:...`).
pub fn sha256_fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
