//! A drain that begins while a client is half-way through sending a frame
//! must not lose the half already read: the session keeps reading that
//! frame to its end and answers it, then finishes the running answer and
//! closes with 1001, and `tars::serve` returns.
//!
//! The client speaks raw RFC 6455 over real TLS (no WebSocket library), so
//! it can stop in the middle of a masked frame. The server runs in-process
//! through `tars::serve` with the shared fake Ollama of tests/support.

use crate::support;

use std::time::Duration;

use rustls_pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout, Instant};

use support::fake_ollama::{Behavior, FakeOllama};

/// How long any one step may take before the test fails.
const STEP: Duration = Duration::from_secs(10);

/// A masked client frame (RFC 6455 §5.2), FIN set.
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x80 | opcode];
    assert!(payload.len() < 126, "short frames only");
    f.push(0x80 | payload.len() as u8);
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads server frames (unmasked) from a byte stream.
struct FrameReader<S> {
    io: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> FrameReader<S> {
    async fn fill(&mut self, n: usize) {
        while self.buf.len() < n {
            let mut chunk = [0u8; 4096];
            let got = timeout(STEP, self.io.read(&mut chunk))
                .await
                .expect("server sent nothing in time")
                .expect("read from the server");
            assert!(
                got > 0,
                "server closed the connection without a close frame"
            );
            self.buf.extend_from_slice(&chunk[..got]);
        }
    }

    /// The next frame: (opcode, payload).
    async fn next(&mut self) -> (u8, Vec<u8>) {
        self.fill(2).await;
        let opcode = self.buf[0] & 0x0f;
        assert_eq!(self.buf[1] & 0x80, 0, "server frames are never masked");
        let (len, head) = match self.buf[1] & 0x7f {
            126 => {
                self.fill(4).await;
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                self.fill(10).await;
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            n => (n as usize, 2),
        };
        self.fill(head + len).await;
        let payload = self.buf[head..head + len].to_vec();
        self.buf.drain(..head + len);
        (opcode, payload)
    }

    /// The next JSON text frame (pings and pongs of the protocol layer skipped).
    async fn next_json(&mut self) -> Result<Value, u16> {
        loop {
            let (op, payload) = self.next().await;
            match op {
                0x1 => return Ok(serde_json::from_slice(&payload).unwrap()),
                0x8 => {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    return Err(code);
                }
                _ => continue,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_a_client_is_half_way_through_a_frame() {
    // A generation that runs ~1.5 s, so the drain waits for it.
    let fake = FakeOllama::start().await;
    let tokens: Vec<String> = (0..15).map(|i| format!("t{i} ")).collect();
    fake.set(Behavior::stream(tokens).delay(Duration::from_millis(100)));

    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "data"
shutdown_grace_secs = 20
[tls]
enabled = true
cert = "certs/tars.crt"
key = "certs/tars.key"
[auth]
secret = "{}"
open_enrollment = true
[ollama]
host = "{}"
retries = 0
"#,
        support::TEST_SECRET,
        fake.url()
    );
    let cfg = tars::config::from_toml_str(&toml, Some(&dir.path().join("config.toml"))).unwrap();
    let keys = tars::auth::token_keys(&cfg).unwrap();
    let who = tars::auth::Subject {
        client_id: "midframe".into(),
        ..Default::default()
    };
    let token = keys
        .issue_pair(
            &who,
            Duration::from_secs(600),
            Duration::from_secs(600),
            tars::auth::Issue::new_family(None),
        )
        .unwrap()
        .access_token;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // Built before it is spawned: the certificate is generated here.
    let server = tars::Server::new(cfg).unwrap();
    let server = tokio::spawn(server.run(listener, async {
        let _ = stopped.await;
    }));

    // TLS (trusting the certificate the server generated at start) and the
    // upgrade, by hand.
    let cert = dir.path().join("certs/tars.crt");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let connector = tokio_rustls::TlsConnector::from(support::client_tls_config(&cert));
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let upgrade = format!(
        "GET /ws/chat?token={token} HTTP/1.1\r\nHost: localhost:{}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        addr.port()
    );
    tls.write_all(upgrade.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        timeout(STEP, tls.read_exact(&mut b))
            .await
            .unwrap()
            .unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut ws = FrameReader {
        io: tls,
        buf: Vec::new(),
    };
    assert_eq!(ws.next_json().await.unwrap()["type"], "connection_ack");

    // A running answer keeps the session open through the drain.
    let chat = br#"{"type":"chat","content":"count","conversation_id":"mid"}"#;
    ws.io.write_all(&masked_frame(0x1, chat)).await.unwrap();
    let first = ws.next_json().await.unwrap();
    assert_eq!(first["type"], "token", "{first}");

    // Half a ping frame: header, mask and part of the payload.
    let ping = masked_frame(0x1, br#"{"type":"ping"}"#);
    let (half, rest) = ping.split_at(9);
    ws.io.write_all(half).await.unwrap();
    ws.io.flush().await.unwrap();
    // Let the server take the half frame off the socket before the drain.
    tokio::time::sleep(Duration::from_millis(200)).await;

    stop.send(()).unwrap();
    // The shutdown notice is broadcast before the drain starts.
    let mut seen = Vec::new();
    loop {
        let v = ws.next_json().await.expect("closed before the notice");
        let kind = v["type"].as_str().unwrap_or_default().to_string();
        seen.push(v);
        if kind == "system" {
            break;
        }
    }
    // Let the session see the drain begin while the half frame waits.
    tokio::time::sleep(Duration::from_millis(200)).await;
    ws.io.write_all(rest).await.unwrap();
    ws.io.flush().await.unwrap();

    // The ping is answered, the answer completes, then 1001.
    let close = loop {
        match ws.next_json().await {
            Ok(v) => seen.push(v),
            Err(code) => break code,
        }
    };
    let kinds: Vec<&str> = seen.iter().filter_map(|v| v["type"].as_str()).collect();
    assert_eq!(
        close, 1001,
        "the session must close with 1001 after the drain, not a protocol error; frames: {kinds:?}"
    );
    assert!(
        kinds.contains(&"pong"),
        "the ping finished after the drain began was not answered: {kinds:?}"
    );
    let complete = seen
        .iter()
        .find(|v| v["type"] == "complete")
        .unwrap_or_else(|| panic!("no complete frame: {kinds:?}"));
    assert_eq!(complete["total_tokens"], 15, "{complete}");
    assert_eq!(complete["done_reason"], "stop", "{complete}");

    // The server drains and `serve` returns well within the grace period.
    let t = Instant::now();
    timeout(STEP, server)
        .await
        .expect("serve did not return after the drain")
        .unwrap()
        .unwrap();
    assert!(t.elapsed() < STEP);
}
