//! WebSocket chat helpers for tests: get a token, open `/ws/chat`, send and
//! receive the protocol's JSON frames with timeouts, collect a generation.
#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use super::{post_json, ws_connect, Endpoint, Ws};

/// How long a test waits for any one frame.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// An access token for `client_id` from `/auth/token` (open enrollment, or
/// a registered client when `secret` is given).
pub async fn token_for(gw: &Endpoint, client_id: &str, secret: Option<&str>) -> String {
    let mut body = json!({"client_id": client_id});
    if let Some(s) = secret {
        body["client_secret"] = json!(s);
    }
    let r = post_json(gw, "/auth/token", &body, None).await;
    assert_eq!(r.status, 200, "/auth/token: {}", r.text());
    r.json()["access_token"].as_str().unwrap().to_string()
}

/// A chat session for `client_id` (open enrollment), past its
/// `connection_ack`: [`token_for`] then [`open_chat`].
pub async fn session(gw: &Endpoint, client_id: &str) -> Ws {
    let token = token_for(gw, client_id, None).await;
    open_chat(gw, &token).await.0
}

/// Open `/ws/chat?token=...` and read the `connection_ack`.
pub async fn open_chat(gw: &Endpoint, token: &str) -> (Ws, Value) {
    let mut ws = ws_connect(gw, &format!("/ws/chat?token={token}"), &[])
        .await
        .expect("websocket upgrade");
    let ack = recv(&mut ws).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    (ws, ack)
}

pub async fn send(ws: &mut Ws, v: &Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// What the server sent next, other than JSON text.
#[derive(Debug)]
pub enum Event {
    Json(Value),
    Closed(Option<(u16, String)>),
}

/// The next JSON frame or close, within [`FRAME_TIMEOUT`].
pub async fn next_event(ws: &mut Ws) -> Event {
    loop {
        let msg = tokio::time::timeout(FRAME_TIMEOUT, ws.next())
            .await
            .expect("a frame within the timeout");
        match msg {
            None => return Event::Closed(None),
            Some(Err(_)) => return Event::Closed(None),
            Some(Ok(Message::Text(t))) => return Event::Json(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(c))) => {
                return Event::Closed(c.map(|c| (u16::from(c.code), c.reason.to_string())))
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// The next JSON frame that is not a heartbeat `ping`.
pub async fn recv(ws: &mut Ws) -> Value {
    loop {
        match next_event(ws).await {
            Event::Json(v) if v["type"] == "ping" => continue,
            Event::Json(v) => return v,
            Event::Closed(c) => panic!("socket closed while a frame was expected: {c:?}"),
        }
    }
}

/// The close code the server sends next (skipping JSON frames).
pub async fn expect_close(ws: &mut Ws) -> Option<u16> {
    loop {
        match next_event(ws).await {
            Event::Json(_) => continue,
            Event::Closed(c) => return c.map(|c| c.0),
        }
    }
}

/// One generation's frames: the tokens and the `complete` or `error`.
#[derive(Debug)]
pub struct Generation {
    pub tokens: Vec<Value>,
    pub thinking: Vec<Value>,
    /// `status` frames seen before the end.
    pub status: Vec<Value>,
    pub end: Value,
}

impl Generation {
    /// The token texts joined.
    pub fn text(&self) -> String {
        text_of(&self.tokens)
    }
}

/// The texts of `token` frames joined.
pub fn text_of(frames: &[Value]) -> String {
    frames
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect()
}

/// Read the next `n` frames, each of which must be a `token`.
pub async fn read_tokens(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let v = recv(ws).await;
        assert_eq!(v["type"], "token", "{v}");
        got.push(v);
    }
    got
}

/// The next frame that is not an informational `status` frame.
pub async fn recv_no_status(ws: &mut Ws) -> Value {
    loop {
        let v = recv(ws).await;
        if v["type"] != "status" {
            return v;
        }
    }
}

/// Read frames until the generation's `complete` or `error`.
pub async fn collect(ws: &mut Ws) -> Generation {
    let mut g = Generation {
        tokens: Vec::new(),
        thinking: Vec::new(),
        status: Vec::new(),
        end: Value::Null,
    };
    loop {
        let v = recv(ws).await;
        match v["type"].as_str().unwrap() {
            "token" => g.tokens.push(v),
            "thinking" => g.thinking.push(v),
            // Informational (queued, loading_model): kept for the tests
            // that look at them.
            "status" => g.status.push(v),
            "complete" | "error" => {
                g.end = v;
                return g;
            }
            other => panic!("unexpected frame {other}: {v}"),
        }
    }
}

/// Send a `chat` message (in `conversation_id`, or the session's default
/// conversation) without reading anything.
pub async fn send_chat(ws: &mut Ws, content: &str, conversation_id: Option<&str>) {
    let mut m = json!({"type": "chat", "content": content});
    if let Some(c) = conversation_id {
        m["conversation_id"] = json!(c);
    }
    send(ws, &m).await;
}

/// Send a chat and collect its generation.
pub async fn chat(ws: &mut Ws, content: &str, conversation_id: Option<&str>) -> Generation {
    send_chat(ws, content, conversation_id).await;
    collect(ws).await
}

pub fn close_code(c: CloseCode) -> u16 {
    u16::from(c)
}
