//! nginx as the yardstick (issue 14): when an `nginx` binary is found, the
//! load tool starts one in front of the same fake Ollama and reads the raw
//! NDJSON through it over TLS (HTTP/1.1 chunked), beside the direct streams
//! and the gateway. Strictly less work than the gateway (no JWT, no
//! WebSocket framing, no per-token re-encoding), so it is the figure a
//! straight pipe should reach.
//!
//! The config is written into a temp dir: TLS with the gateway's own
//! generated certificate and key, `proxy_buffering off`,
//! `proxy_http_version 1.1` with a keep-alive upstream pool to the fake,
//! `worker_processes` = the cores the gateway's runtime uses, `access_log
//! off`, listening on a free loopback port. nginx is never required: with no
//! binary the nginx columns stay empty.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio_rustls::TlsConnector;

use crate::gateway::cpu_secs;

/// Idle keep-alive connections to the fake each nginx worker may keep (the
/// gateway's bench config gives its pool as many as nginx's workers together:
/// `ollama.pool_max_connections` = [`workers`] × this).
pub const UPSTREAM_KEEPALIVE: usize = 20;

/// nginx's worker processes: one per CPU.
pub fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A running nginx; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    /// Trusts exactly the certificate nginx serves.
    pub tls: TlsConnector,
    pub workers: usize,
    dir: tempfile::TempDir,
}

/// The `nginx` binary: on `PATH`, else Debian's `/usr/sbin/nginx` (sbin is
/// often missing from a non-root `PATH`).
pub fn find() -> Option<PathBuf> {
    find_tool("nginx")
}

/// An executable `name` on `PATH`, in `/usr/sbin` or `/usr/local/sbin`.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

impl Nginx {
    /// Start `bin` with TLS from `cert`/`key` (PEM), proxying to `upstream`,
    /// and wait until it accepts connections.
    pub fn start(
        bin: &Path,
        upstream: SocketAddr,
        cert: &Path,
        key: &Path,
        tls: TlsConnector,
    ) -> Result<Self> {
        let mut dir = tempfile::tempdir().context("temp dir")?;
        std::fs::copy(cert, dir.path().join("tls.crt"))
            .with_context(|| format!("copying {}", cert.display()))?;
        std::fs::copy(key, dir.path().join("tls.key"))
            .with_context(|| format!("copying {}", key.display()))?;
        let workers = workers();
        // A port taken between our probe and nginx's bind: try another.
        let mut last = String::new();
        for _ in 0..3 {
            let addr = free_port()?;
            let conf = dir.path().join("nginx.conf");
            std::fs::write(&conf, config(dir.path(), addr, upstream, workers))?;
            let log = dir.path().join("error.log");
            let child = Command::new(bin)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("stderr.log"))?)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            let mut n = Self {
                child,
                addr,
                tls: tls.clone(),
                workers,
                dir,
            };
            match n.wait_listening() {
                Ok(()) => return Ok(n),
                Err(e) => {
                    last = format!("{e:#}");
                    n.stop();
                    dir = std::mem::replace(&mut n.dir, tempfile::tempdir()?);
                }
            }
        }
        bail!("nginx did not start: {last}")
    }

    fn wait_listening(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait()? {
                bail!("nginx exited ({st}):\n{}", self.logs());
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
                && self.worker_pids().len() >= self.workers
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("nginx did not listen within 10 s:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The worker processes (children of the master).
    pub fn worker_pids(&self) -> Vec<u32> {
        children(self.pid())
    }

    /// CPU time of the master and its workers, in seconds.
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(self.pid()) + self.worker_pids().into_iter().map(cpu_secs).sum::<f64>()
    }

    pub fn logs(&self) -> String {
        ["stderr.log", "error.log"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.dir.path().join(f)).ok())
            .collect::<Vec<_>>()
            .join("")
    }

    /// SIGTERM (fast shutdown: the master stops its workers), SIGKILL to
    /// everything left after 5 s.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let workers = self.worker_pids();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for w in workers {
            // SAFETY: kill(2) on a worker our child forked.
            unsafe { libc::kill(w as i32, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("probing for a free port")?;
    Ok(l.local_addr()?)
}

/// Pids of the processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&c| {
            std::fs::read_to_string(format!("/proc/{c}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.to_string();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// The nginx.conf: everything under `dir`, nothing from /etc/nginx.
fn config(dir: &Path, listen: SocketAddr, upstream: SocketAddr, workers: usize) -> String {
    let d = dir.display();
    format!(
        r#"# Written by benches/load/nginx.rs: nginx TLS in front of the fake Ollama.
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile 20000;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 16384;
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream ollama {{
        server {upstream};
        keepalive {UPSTREAM_KEEPALIVE};
        keepalive_requests 1000000;
    }}
    server {{
        listen {listen} ssl;
        ssl_certificate {d}/tls.crt;
        ssl_certificate_key {d}/tls.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://ollama;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 120s;
        }}
    }}
}}
"#
    )
}
