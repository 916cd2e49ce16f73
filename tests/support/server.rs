//! The gateway in-process: `tars::serve` on a listener bound to the config's
//! address (port 0 unless a test fixes it), with the config built by the
//! test, on a runtime of its own so that a test's runtime (and a test that
//! blocks it) cannot starve the server, and so that the server's log lines
//! can be captured: every thread of that runtime has a tracing subscriber
//! writing into this server's buffer (no global subscriber; two servers in
//! one process keep separate logs).
//!
//! Dropping a [`Server`] stops it hard, like `kill -9` on the process: the
//! runtime is dropped, every task and socket with it. [`Server::shutdown`]
//! stops it gracefully and returns what `serve` returned.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Endpoint, GatewayBuilder};

/// What `tars::serve` returned.
pub type ServeResult = Result<(), tars::Error>;

impl GatewayBuilder {
    /// Start the gateway in-process through `tars::serve` and wait until it
    /// has logged `listening`.
    pub fn serve(self) -> Server {
        let (config, config_path) = self.build_config();
        let tls = self.tls();
        let listener = std::net::TcpListener::bind(config.server.listen)
            .unwrap_or_else(|e| panic!("bind {}: {e}", config.server.listen));
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let logs = Logs::default();
        let dispatch = logs.dispatch(&config.log);
        let workers = dispatch.clone();
        let graceful = CancellationToken::new();
        let kill = CancellationToken::new();
        let (g, k) = (graceful.clone(), kill.clone());
        let (handle_tx, handle_rx) = std::sync::mpsc::channel::<tars::Handle>();
        let thread = std::thread::Builder::new()
            .name(format!("tars-server-{}", addr.port()))
            .spawn(move || {
                // `block_on` runs `serve` itself on this thread; the tasks it
                // spawns run on the runtime's threads.
                let _logs = tracing::dispatcher::set_default(&dispatch);
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .on_thread_start(move || {
                        // Kept for the thread's life: its default subscriber.
                        std::mem::forget(tracing::dispatcher::set_default(&workers));
                    })
                    .build()
                    .unwrap();
                let result = rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let server = match tars::Server::new(config) {
                        Ok(s) => s,
                        Err(e) => return Some(Err(e)),
                    };
                    let _ = handle_tx.send(server.handle());
                    let serve = server.run(listener, async move { g.cancelled().await });
                    tokio::select! {
                        r = serve => Some(r),
                        _ = k.cancelled() => None,
                    }
                });
                // After a hard stop, every task still running is dropped
                // here (and its sockets closed) before the thread ends.
                rt.shutdown_timeout(Duration::from_secs(2));
                result
            })
            .unwrap();
        let cert = self.dir.path().join("certs/tars.crt");
        let mut server = Server {
            endpoint: Endpoint {
                addr,
                tls,
                cert: tls.then_some(cert),
            },
            logs,
            config: config_path,
            graceful,
            kill,
            thread: Some(thread),
            dir: self.dir,
            handle: None,
        };
        let end = Instant::now() + Duration::from_secs(20);
        while !server.logs().contains("listening") {
            if server.handle.is_none() {
                server.handle = handle_rx.try_recv().ok();
            }
            if server.thread.as_ref().unwrap().is_finished() {
                let r = server.thread.take().unwrap().join();
                panic!(
                    "the server stopped at start: {r:?}; logs:\n{}",
                    server.logs()
                );
            }
            assert!(
                Instant::now() < end,
                "the server did not start; logs:\n{}",
                server.logs()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        if server.handle.is_none() {
            server.handle = handle_rx.recv_timeout(Duration::from_secs(5)).ok();
        }
        server
    }
}

impl GatewayBuilder {
    /// Write the config file (and the test certificate when TLS is on) and
    /// parse it with `tars::config::from_toml_str`, as an embedding program
    /// would: the validated config and the file's path.
    pub fn build_config(&self) -> (tars::config::Config, PathBuf) {
        let path = self.write_config();
        self.install_test_cert();
        let text = std::fs::read_to_string(&path).unwrap();
        let config = tars::config::from_toml_str(&text, Some(&path))
            .unwrap_or_else(|e| panic!("the test's config is refused: {e}"));
        (config, path)
    }
}

/// A gateway served in-process. Stopped hard when dropped.
pub struct Server {
    endpoint: Endpoint,
    logs: Logs,
    /// The config file it was built from (reload reads it again).
    pub config: PathBuf,
    graceful: CancellationToken,
    kill: CancellationToken,
    thread: Option<JoinHandle<Option<ServeResult>>>,
    pub dir: tempfile::TempDir,
    /// The embedding API's controls (reload), once the server was built.
    pub handle: Option<tars::Handle>,
}

impl std::ops::Deref for Server {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Server {
    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        self.logs.text()
    }

    /// Wait until the logs contain `needle`, or panic after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while !self.logs().contains(needle) {
            assert!(
                Instant::now() < end,
                "log line {needle:?} did not appear; logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
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
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Resolve the shutdown future passed to `tars::serve`: the drain starts.
    pub fn begin_shutdown(&self) {
        self.graceful.cancel();
    }

    /// Whether `serve` has returned (or the server was stopped hard).
    pub fn has_stopped(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Wait up to `timeout` for `serve` to return; `None` while it runs.
    pub async fn wait_stopped(&mut self, timeout: Duration) -> Option<ServeResult> {
        let end = Instant::now() + timeout;
        while !self.has_stopped() {
            if Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let t = self.thread.take().expect("the server was already joined");
        Some(
            t.join()
                .expect("the server thread panicked")
                .expect("stopped hard, not by its shutdown future"),
        )
    }

    /// Shut down gracefully and return what `serve` returned; panics when
    /// the drain is not over within `timeout`.
    pub async fn shutdown(mut self, timeout: Duration) -> ServeResult {
        self.begin_shutdown();
        match self.wait_stopped(timeout).await {
            Some(r) => r,
            None => panic!(
                "serve did not return within {timeout:?} of its shutdown; logs:\n{}",
                self.logs()
            ),
        }
    }

    /// Stop hard (as `kill -9` would) and start a new server on the same
    /// folder: same config file, certificate, key and revocation log.
    pub fn restart(mut self) -> Server {
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let config = self.config.clone();
        drop(self);
        GatewayBuilder::reopen(dir, &config).serve()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One server's captured log output (text or JSON as its `[log]` says).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// A subscriber like the binary's (same filter, format and fields,
    /// without ANSI colours) writing into this buffer.
    fn dispatch(&self, cfg: &tars::config::LogConfig) -> tracing::Dispatch {
        // The binary's subscriber also takes `log` records (rustls logs
        // through `log`); here they go to the current thread's subscriber,
        // which on a server's threads is that server's.
        static LOG_BRIDGE: std::sync::Once = std::sync::Once::new();
        LOG_BRIDGE.call_once(|| {
            let _ = tracing_log::LogTracer::init();
        });
        let filter = tracing_subscriber::EnvFilter::new(&cfg.level);
        let me = self.clone();
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(move || me.clone())
            .with_ansi(false)
            .with_target(false);
        match cfg.format {
            tars::config::LogFormat::Json => tracing::Dispatch::new(
                builder
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(true)
                    .finish(),
            ),
            tars::config::LogFormat::Text => tracing::Dispatch::new(builder.finish()),
        }
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
