//! RFC 6455 conformance of `/ws/chat`, checked with frames written byte by
//! byte over the gateway's real TLS socket — no WebSocket library on the
//! client side, so nothing is smoothed over.

use std::time::Duration;

use crate::support::chat::token_for;
use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONT: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

struct Raw {
    io: BoxIo,
    buf: Vec<u8>,
}

impl Raw {
    /// Upgrade with a hand-written request and read the connection_ack.
    async fn open(gw: &Server, token: &str) -> Raw {
        let mut io = connect(gw).await;
        let req = format!(
            "GET /ws/chat?token={token} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        io.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Raw {
            io,
            buf: Vec::new(),
        };
        let head = raw.read_until(b"\r\n\r\n").await;
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        let (_, op, payload) = raw.frame().await.expect("connection_ack");
        assert_eq!(op, TEXT);
        assert!(String::from_utf8_lossy(&payload).contains("connection_ack"));
        raw
    }

    async fn fill(&mut self, n: usize) -> bool {
        while self.buf.len() < n {
            let mut chunk = [0u8; 4096];
            let r = tokio::time::timeout(Duration::from_secs(10), self.io.read(&mut chunk)).await;
            match r.expect("server answered in time") {
                Ok(0) | Err(_) => return false,
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
            }
        }
        true
    }

    async fn read_until(&mut self, end: &[u8]) -> Vec<u8> {
        loop {
            if let Some(p) = self.buf.windows(end.len()).position(|w| w == end) {
                return self.buf.drain(..p + end.len()).collect();
            }
            let n = self.buf.len() + 1;
            assert!(self.fill(n).await, "connection closed before {end:?}");
        }
    }

    /// The next server frame (fin, opcode, payload), or `None` at EOF.
    async fn frame(&mut self) -> Option<(bool, u8, Vec<u8>)> {
        if !self.fill(2).await {
            return None;
        }
        let (b0, b1) = (self.buf[0], self.buf[1]);
        assert_eq!(b1 & 0x80, 0, "server frames are never masked");
        let (len, hl) = match b1 & 0x7f {
            126 => {
                self.fill(4).await;
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                self.fill(10).await;
                (
                    u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                    10,
                )
            }
            n => (n as usize, 2),
        };
        if !self.fill(hl + len).await {
            return None;
        }
        let f: Vec<u8> = self.buf.drain(..hl + len).collect();
        Some((b0 & 0x80 != 0, b0 & 0x0f, f[hl..].to_vec()))
    }

    /// Skip frames until a close; its code (None for EOF without close).
    async fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.frame().await {
                None => return None,
                Some((_, CLOSE, p)) if p.len() >= 2 => {
                    return Some(u16::from_be_bytes([p[0], p[1]]))
                }
                Some((_, CLOSE, _)) => return Some(1005),
                Some(_) => continue,
            }
        }
    }

    /// Write one frame; `first` overrides the first byte (for RSV bits).
    async fn send(&mut self, fin: bool, opcode: u8, payload: &[u8], masked: bool, rsv: u8) {
        let mut f = vec![(fin as u8) << 7 | rsv << 4 | opcode];
        let m = if masked { 0x80 } else { 0 };
        match payload.len() {
            n @ 0..=125 => f.push(m | n as u8),
            n @ 126..=65535 => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            let key = [0x37, 0xfa, 0x21, 0x3d];
            f.extend_from_slice(&key);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            f.extend_from_slice(payload);
        }
        self.io.write_all(&f).await.unwrap();
    }

    /// The next text frame as a string (skipping heartbeats).
    async fn next_text(&mut self) -> String {
        loop {
            let (_, op, p) = self.frame().await.expect("a frame");
            if op == TEXT {
                let s = String::from_utf8(p).unwrap();
                if !s.contains("\"type\":\"ping\"") {
                    return s;
                }
            }
        }
    }
}

/// (fin, opcode, payload, masked, rsv bits)
type RawFrame = (bool, u8, Vec<u8>, bool, u8);

async fn setup() -> (Server, String) {
    let gw = gateway()
        .set("auth.open_enrollment", true)
        .set("websocket.max_message_bytes", 4096)
        .set("websocket.max_content_bytes", 1024)
        .serve();
    let token = token_for(&gw, "raw", None).await;
    (gw, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_are_reassembled_with_control_frames_between() {
    let (gw, token) = setup().await;
    let mut ws = Raw::open(&gw, &token).await;
    let msg = br#"{"type":"ping","note":"split across three frames"}"#;
    ws.send(false, TEXT, &msg[..10], true, 0).await;
    ws.send(true, PING, b"mid", true, 0).await;
    ws.send(false, CONT, &msg[10..30], true, 0).await;
    ws.send(true, CONT, &msg[30..], true, 0).await;
    // The protocol ping is answered at once, with its payload.
    let (fin, op, p) = ws.frame().await.unwrap();
    assert_eq!((fin, op, p.as_slice()), (true, PONG, &b"mid"[..]));
    // The reassembled message was understood.
    assert!(ws.next_text().await.contains("\"type\":\"pong\""));
    // UTF-8 split across fragments is fine.
    let s = r#"{"type":"ping","x":"é🦀"}"#.as_bytes();
    let cut = s.iter().position(|&b| b >= 0x80).unwrap() + 1;
    ws.send(false, TEXT, &s[..cut], true, 0).await;
    ws.send(true, CONT, &s[cut..], true, 0).await;
    assert!(ws.next_text().await.contains("pong"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_close_with_the_rfc_codes() {
    let (gw, token) = setup().await;
    let cases: Vec<(&str, u16, Vec<RawFrame>)> = vec![
        (
            "invalid UTF-8",
            1007,
            vec![(true, TEXT, vec![b'{', 0xff, 0xfe, b'}'], true, 0)],
        ),
        (
            "invalid UTF-8 across fragments",
            1007,
            vec![
                (false, TEXT, vec![b'"', 0xc3], true, 0),
                (true, CONT, vec![0x28, b'"'], true, 0),
            ],
        ),
        (
            "unmasked frame",
            1002,
            vec![(true, TEXT, br#"{"type":"ping"}"#.to_vec(), false, 0)],
        ),
        (
            "reserved bit",
            1002,
            vec![(true, TEXT, br#"{"type":"ping"}"#.to_vec(), true, 0b100)],
        ),
        (
            "reserved opcode",
            1002,
            vec![(true, 0x3, b"x".to_vec(), true, 0)],
        ),
        (
            "reserved control opcode",
            1002,
            vec![(true, 0xB, b"x".to_vec(), true, 0)],
        ),
        (
            "continuation without a start",
            1002,
            vec![(true, CONT, b"x".to_vec(), true, 0)],
        ),
        (
            "new message inside a fragmented one",
            1002,
            vec![
                (false, TEXT, b"{".to_vec(), true, 0),
                (true, TEXT, b"{}".to_vec(), true, 0),
            ],
        ),
        (
            "fragmented control frame",
            1002,
            vec![(false, PING, b"x".to_vec(), true, 0)],
        ),
        (
            "oversize frame",
            1009,
            vec![(true, TEXT, vec![b'a'; 5000], true, 0)],
        ),
        (
            "oversize fragmented message",
            1009,
            vec![
                (false, TEXT, vec![b'a'; 3000], true, 0),
                (true, CONT, vec![b'a'; 3000], true, 0),
            ],
        ),
    ];
    for (name, code, frames) in cases {
        let mut ws = Raw::open(&gw, &token).await;
        for (fin, op, payload, masked, rsv) in frames {
            ws.send(fin, op, &payload, masked, rsv).await;
        }
        assert_eq!(ws.close_code().await, Some(code), "{name}");
    }
    // Nothing leaked: every session ended.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while get(&gw, "/ws/health").await.json()["active_connections"] != 0 {
        assert!(std::time::Instant::now() < deadline, "sessions left open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_handshake_and_pings() {
    let (gw, token) = setup().await;
    let mut ws = Raw::open(&gw, &token).await;
    ws.send(true, PING, b"are you there", true, 0).await;
    let (_, op, p) = ws.frame().await.unwrap();
    assert_eq!((op, p.as_slice()), (PONG, &b"are you there"[..]));
    // An unsolicited pong is ignored.
    ws.send(true, PONG, b"", true, 0).await;
    // Binary messages are refused politely; the socket lives.
    ws.send(true, BINARY, &[1, 2, 3], true, 0).await;
    assert!(ws.next_text().await.contains("invalid_message"));
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    ws.send(true, CLOSE, &close, true, 0).await;
    let (_, op, p) = ws.frame().await.expect("a close answer");
    assert_eq!(op, CLOSE);
    assert_eq!(u16::from_be_bytes([p[0], p[1]]), 1000);
    assert!(ws.frame().await.is_none(), "then the connection ends");
}
