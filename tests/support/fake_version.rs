//! A tiny fake Ollama that knows only `GET /api/version` (raw over tokio
//! TCP), answering after a set delay: counts requests and signals each
//! arrival, for `/ready` and drain tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Answers `GET /api/version` with Ollama's real body after `delay`; counts
/// requests and signals each arrival.
pub struct FakeVersion {
    pub url: String,
    hits: Arc<AtomicUsize>,
    /// Notified when a request has arrived (before the delay).
    pub arrived: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeVersion {
    pub async fn start(delay: Duration) -> Self {
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

    pub fn hits(&self) -> usize {
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
pub async fn closed_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}
