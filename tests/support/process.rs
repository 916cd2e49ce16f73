//! The `tars` binary as a subprocess: for the tests where the process itself
//! is under test (command line, signals, SIGHUP reload, systemd, exit codes,
//! the log file, its descriptor table). Everything else runs the server
//! in-process ([`super::server`]).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Endpoint, GatewayBuilder};

impl GatewayBuilder {
    /// Start `tars` as a subprocess and wait until it listens.
    pub fn start(self) -> Gateway {
        let config = self.write_config();
        self.install_test_cert();
        let tls = self.tls();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tars"));
        cmd.args(["--config", config.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM");
        for var in ENV_VARS {
            cmd.env_remove(var);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tars");
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let mut readers = Vec::new();
        for pipe in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let logs = logs.clone();
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
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
            }));
        }
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("tars did not start; logs:\n{}", logs.lock().unwrap());
            }
        };
        let cert = self.dir.path().join("certs/tars.crt");
        Gateway {
            child,
            endpoint: Endpoint {
                addr,
                tls,
                cert: tls.then_some(cert),
            },
            logs,
            readers,
            config,
            dir: self.dir,
        }
    }
}

/// Environment variables the gateway reads; cleared so the developer's own
/// shell cannot change a test.
pub const ENV_VARS: &[&str] = &[
    "TARS_LISTEN",
    "JWT_SECRET_KEY",
    "JWT_ALGORITHM",
    "JWT_EXPIRATION_HOURS",
    "JWT_REFRESH_EXPIRATION_DAYS",
    "WS_HEARTBEAT_INTERVAL",
    "WS_MAX_CONNECTIONS",
    "WS_MESSAGE_QUEUE_SIZE",
    "WS_TIMEOUT_SECONDS",
    "OLLAMA_HOST",
    "OLLAMA_MODEL",
    "MODEL_TEMPERATURE",
    "MODEL_TOP_P",
    "MODEL_TOP_K",
    "MODEL_MAX_TOKENS",
    "CORS_ORIGINS",
    "HTTPS_ENABLED",
    "TLS_CERT_PATH",
    "TLS_KEY_PATH",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "LISTEN_FDS",
];

fn parse_listen_line(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    let rest = &line[line.find("addr=")? + 5..];
    rest.split_whitespace().next()?.parse().ok()
}

/// A running gateway process. Killed on drop.
pub struct Gateway {
    pub child: Child,
    endpoint: Endpoint,
    logs: Arc<Mutex<String>>,
    /// The threads reading stdout and stderr into `logs`; joined once the
    /// process has exited, so that its last lines are in `logs` by then.
    readers: Vec<std::thread::JoinHandle<()>>,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for Gateway {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Gateway {
    /// Everything the process printed so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Wait until the logs contain `needle`, or panic after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        super::wait_until_blocking(&format!("log line {needle:?}"), timeout, || {
            self.logs().contains(needle)
        });
    }

    /// [`Self::wait_for_log`] without blocking the runtime's thread.
    pub async fn wait_log(&self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while !self.logs().contains(needle) {
            assert!(
                Instant::now() < end,
                "log line {needle:?} did not appear; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
                // Its pipes are closed now: read them to the end.
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Stop this gateway (killed if still running) and start a new one on
    /// the same folder: same config file, certificate, key and revocation log.
    pub fn restart(mut self) -> Gateway {
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let config = self.config.clone();
        drop(self);
        GatewayBuilder::reopen(dir, &config).start()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `tars` command with the gateway's environment variables cleared.
pub fn tars_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tars"));
    cmd.args(args).stdin(Stdio::null());
    for var in ENV_VARS {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Run `tars` with `args` to completion: (exit code, stdout, stderr).
pub fn run_tars(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    run_tars_timeout(args, env, Duration::from_secs(60))
}

/// [`run_tars`] that kills `tars` and panics if it has not exited within
/// `timeout` (for commands that must fail fast, such as serving a bad config).
pub fn run_tars_timeout(
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> (i32, String, String) {
    let mut cmd = tars_command(args, env);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
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
