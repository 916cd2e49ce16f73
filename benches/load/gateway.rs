//! The gateway under test: the real `tars` binary started on
//! `127.0.0.1:0` with a config derived from the shipped `config.toml`
//! (TLS on with a certificate it generates, or off for the `plain` column;
//! a raised connection limit, open
//! enrollment, the per-IP and per-client rate limits lifted since every load
//! client is 127.0.0.1 with one client id, Ollama pointing at the fake — or,
//! for the `openai` column, one `[[upstreams]]` entry with `api = "openai"`
//! at the same fake), its log in a file, and its resident memory read from
//! `/proc`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio_rustls::TlsConnector;

/// Sessions the gateway accepts (the shipped default is 10).
pub const MAX_CONNECTIONS: i64 = 20_000;

/// A running gateway; killed on drop.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    /// Trusts exactly the certificate the gateway generated; `None` when
    /// the gateway serves plain HTTP (`tls.enabled = false`).
    pub tls: Option<TlsConnector>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// What differs between scenarios.
pub struct Options {
    pub heartbeat_secs: u64,
    /// `tls.enabled`.
    pub tls: bool,
    /// The upstream's dialect: `[ollama] host` (the implicit upstream), or
    /// an `[[upstreams]]` entry with `api = "openai"` at the same fake.
    pub openai: bool,
}

/// The model every load chat asks for (the shipped config's default).
pub const MODEL: &str = "mistral:7b-instruct";

impl Gateway {
    /// Start `bin` in front of the fake Ollama at `ollama` and wait until it
    /// listens.
    pub fn start(bin: &Path, ollama: &str, opts: &Options) -> Result<Self> {
        let dir = tempfile::tempdir().context("temp dir")?;
        let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
        let text =
            std::fs::read_to_string(shipped).with_context(|| format!("reading {shipped}"))?;
        let mut t: toml::Table = text.parse().with_context(|| format!("parsing {shipped}"))?;
        set(&mut t, "server.listen", "127.0.0.1:0".into());
        set(&mut t, "websocket.max_connections", MAX_CONNECTIONS.into());
        set(
            &mut t,
            "websocket.heartbeat_interval_secs",
            (opts.heartbeat_secs as i64).into(),
        );
        set(&mut t, "auth.open_enrollment", true.into());
        // Every load client comes from 127.0.0.1 with one client id: lift
        // the per-IP and per-client abuse limits out of the way.
        set(&mut t, "limits.chat_per_minute", 1_000_000_000i64.into());
        set(&mut t, "limits.connections_per_second", 1_000_000i64.into());
        set(&mut t, "limits.max_connections_per_ip", 1_000_000i64.into());
        // One client id holds every load session: the per-client session cap
        // goes as high as the total, and HTTP connections (sign-ins and
        // upgrades in flight) as high as the sessions.
        set(
            &mut t,
            "websocket.max_connections_per_client",
            MAX_CONNECTIONS.into(),
        );
        set(
            &mut t,
            "server.max_http_connections",
            MAX_CONNECTIONS.into(),
        );
        // As many idle connections to the fake as nginx keeps: its
        // `keepalive` is per worker (benches/load/nginx.rs).
        set(
            &mut t,
            "ollama.pool_max_connections",
            (pool_max() as i64).into(),
        );
        if opts.openai {
            // The same fake through its OpenAI dialect: a static model list
            // (no discovery) and the largest max_concurrent, as the
            // implicit upstream has, so no chat waits for a slot.
            if let Some(o) = t.get_mut("ollama").and_then(toml::Value::as_table_mut) {
                o.remove("host");
            }
            let mut u = toml::Table::new();
            u.insert("name".into(), "fake".into());
            u.insert("url".into(), ollama.into());
            u.insert("api".into(), "openai".into());
            u.insert("models".into(), toml::Value::Array(vec![MODEL.into()]));
            u.insert(
                "max_concurrent".into(),
                (tars::config::MAX_CONCURRENT_LIMIT as i64).into(),
            );
            t.insert("upstreams".into(), toml::Value::Array(vec![u.into()]));
        } else {
            set(&mut t, "ollama.host", ollama.into());
        }
        set(&mut t, "tls.enabled", opts.tls.into());
        let config = dir.path().join("config.toml");
        std::fs::write(&config, toml::to_string(&t)?)?;
        let log = dir.path().join("tars.log");
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        for var in [
            "RUST_LOG",
            "JOURNAL_STREAM",
            "NOTIFY_SOCKET",
            "LISTEN_FDS",
            "TARS_LISTEN",
            "OLLAMA_HOST",
            "WS_MAX_CONNECTIONS",
            "WS_HEARTBEAT_INTERVAL",
            "HTTPS_ENABLED",
            "JWT_SECRET_KEY",
        ] {
            cmd.env_remove(var);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut gw = Self {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        gw.addr = loop {
            if let Some(a) = gw.logs().lines().find_map(listen_addr) {
                break a;
            }
            if let Some(st) = gw.child.try_wait()? {
                bail!("tars exited ({st}) before listening:\n{}", gw.logs());
            }
            if Instant::now() > deadline {
                bail!("tars did not listen within 30 s:\n{}", gw.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if opts.tls {
            gw.tls = Some(connector(&gw.cert_files().0)?);
        }
        Ok(gw)
    }

    /// The certificate and key the gateway generated (PEM; they exist only
    /// when TLS is on). nginx serves the same pair.
    pub fn cert_files(&self) -> (PathBuf, PathBuf) {
        let certs = self._dir.path().join("certs");
        (certs.join("tars.crt"), certs.join("tars.key"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the gateway logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident memory in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        status_field(self.pid(), "VmRSS:").unwrap_or(0)
    }

    /// CPU time (user + system) the gateway has used so far, in seconds.
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(self.pid())
    }

    /// OS threads of the gateway process.
    pub fn threads(&self) -> u64 {
        status_field(self.pid(), "Threads:").unwrap_or(0)
    }
}

/// CPU time (user + system, all threads) process `pid` has used so far, in
/// seconds; 0 when it is gone.
pub fn cpu_secs(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields, in clock ticks.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i)?.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / hz
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn set(t: &mut toml::Table, key: &str, v: toml::Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap();
    let mut cur = t;
    for p in parts {
        cur = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap();
    }
    cur.insert(last.to_string(), v);
}

/// `addr=IP:PORT` of the `listening` log line.
fn listen_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    let rest = &line[line.find("addr=")? + 5..];
    rest.split_whitespace().next()?.parse().ok()
}

/// A TLS connector trusting exactly the PEM certificate(s) in `cert`.
pub fn connector(cert: &Path) -> Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
    {
        roots.add(c?)?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// A `kB`/count field of `/proc/PID/status`.
pub fn status_field(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Idle upstream connections the bench's gateway may keep: as many as
/// nginx's workers together (`keepalive` is per worker).
pub fn pool_max() -> usize {
    crate::nginx::workers() * crate::nginx::UPSTREAM_KEEPALIVE
}
