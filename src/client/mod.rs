//! `tars chat`: the seed's example client, in Rust. Gets a token (or takes
//! one), connects over WSS, reads prompts line by line from stdin, prints
//! tokens as they stream and the `complete` statistics.
//!
//! It keeps one `conversation_id` for the whole run, so each line continues
//! the conversation. With `--client-id` it keeps the session alive past its
//! token's expiry: on the gateway's notice (or before a prompt when the
//! token is about to expire) it gets a fresh token and sends it in band
//! (`{"type":"auth"}`), reconnecting if the session already ended.
//!
//! A connection that drops mid-answer is resumed when the gateway offers it
//! (`resume_window_secs` in `connection_ack`): reconnect with backoff, send
//! `{"type":"resume","conversation_id":C,"last_seq":N}` with the last token
//! printed, and print only tokens after it, so the answer continues where it
//! stopped with nothing missing or doubled.

mod tls;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket};
use http_body_util::{BodyExt, Empty, Full};
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub use tls::Trust;

/// Arguments of `tars chat`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatArgs {
    /// The gateway, e.g. wss://nas.local:8443 (ws:// for a plain-HTTP gateway).
    #[arg(long)]
    pub url: String,
    /// Client id to authenticate as.
    #[arg(long)]
    pub client_id: Option<String>,
    /// The client's secret (POST /auth/token).
    #[arg(long, conflicts_with = "token")]
    pub secret: Option<String>,
    /// An access token to use as is.
    #[arg(long)]
    pub token: Option<String>,
    /// Accept any server certificate (self-signed LAN gateways).
    #[arg(long, conflicts_with = "ca")]
    pub insecure: bool,
    /// Trust the certificates in this PEM file (e.g. the gateway's certs/tars.crt).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// Model to ask for (default: the gateway's).
    #[arg(long)]
    pub model: Option<String>,
}

/// Timeout for connecting and for each HTTP exchange.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Nothing received for this long (the gateway pings every 30 s by
/// default) means the connection is dead.
const READ_TIMEOUT: Duration = Duration::from_secs(90);

/// First wait before reconnecting to resume; doubles up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Target {
    tls: bool,
    host: String,
    port: u16,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("--url {url:?}: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("wss") | Some("https") => true,
        Some("ws") | Some("http") => false,
        _ => {
            return Err(format!(
                "--url {url:?}: use wss://HOST:PORT or ws://HOST:PORT"
            ))
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("--url {url:?}: no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok(Target { tls, host, port })
}

async fn connect(t: &Target, trust: &Trust) -> Result<Box<dyn Io>, String> {
    let addr = format!(
        "{}:{}",
        if t.host.contains(':') {
            format!("[{}]", t.host)
        } else {
            t.host.clone()
        },
        t.port
    );
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
        .await
        .map_err(|_| format!("connecting to {addr}: timed out"))?
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    if !t.tls {
        return Ok(Box::new(tcp));
    }
    let cfg = tls::client_config(trust)?;
    let name =
        rustls::pki_types::ServerName::try_from(t.host.clone()).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, tokio_rustls::TlsConnector::from(cfg).connect(name, tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake with {addr}: {e} (use --ca certs/tars.crt or --insecure for a self-signed gateway)"))?;
    Ok(Box::new(tls))
}

/// The `exp` of a JWT (read, not verified: it is our own token), or 0.
fn token_exp(token: &str) -> u64 {
    jsonwebtoken::dangerous::insecure_decode::<Value>(token)
        .ok()
        .and_then(|d| d.claims["exp"].as_u64())
        .unwrap_or(0)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How long before `exp` a token is renewed before a prompt.
const RENEW_LEAD_SECS: u64 = 60;

/// POST /auth/token and return the access token.
async fn fetch_token(
    t: &Target,
    trust: &Trust,
    client_id: &str,
    secret: Option<&str>,
) -> Result<String, String> {
    let io = connect(t, trust).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut body =
        json!({"client_id": client_id, "device_name": "tars chat", "device_type": "cli"});
    if let Some(s) = secret {
        body["client_secret"] = json!(s);
    }
    let req = http::Request::post("/auth/token")
        .header("host", &t.host)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(CONNECT_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| "POST /auth/token timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(format!(
            "POST /auth/token answered {status}: {}",
            v["message"].as_str().unwrap_or("(no message)")
        ));
    }
    v["access_token"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| "POST /auth/token: no access_token in the answer".into())
}

async fn open_ws(
    t: &Target,
    trust: &Trust,
    token: &str,
) -> Result<WebSocket<TokioIo<Upgraded>>, String> {
    let io = connect(t, trust).await?;
    let req = http::Request::get(format!("/ws/chat?token={token}"))
        .header("host", format!("{}:{}", t.host, t.port))
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header(
            "sec-websocket-key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let (ws, _) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        fastwebsockets::handshake::client(&TokioExecutor::new(), req, io),
    )
    .await
    .map_err(|_| "WebSocket handshake timed out".to_string())?
    .map_err(|e| format!("WebSocket handshake refused: {e}"))?;
    Ok(ws)
}

/// Run `tars chat`.
pub async fn run(args: ChatArgs) -> ExitCode {
    match chat(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tars chat: error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn chat(args: ChatArgs) -> Result<(), String> {
    let target = parse_url(&args.url)?;
    let trust = match (&args.ca, args.insecure) {
        (Some(ca), _) => Trust::CaFile(ca.clone()),
        (None, true) => Trust::Insecure,
        (None, false) if target.tls => {
            return Err(
                "a self-signed gateway needs --ca FILE (its certificate) or --insecure".into(),
            )
        }
        (None, false) => Trust::Insecure,
    };
    let token = match (&args.token, &args.client_id) {
        (Some(t), _) => t.clone(),
        (None, Some(id)) => fetch_token(&target, &trust, id, args.secret.as_deref()).await?,
        (None, None) => {
            return Err(
                "give --token, or --client-id (with --secret for a registered client)".into(),
            )
        }
    };
    let mut token = token;
    let (mut ws, mut window) = start_session(&target, &trust, &token).await?;
    // Renewal needs a client id (and its secret, for a registered client).
    let renew = |args: &ChatArgs| args.client_id.clone();
    let conversation_id = format!("cli-{}", uuid::Uuid::new_v4());
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(id) = renew(&args) {
            if now_secs() + RENEW_LEAD_SECS >= token_exp(&token) {
                token = fetch_token(&target, &trust, &id, args.secret.as_deref()).await?;
                ws = match reauth(&mut ws, &token).await {
                    Ok(()) => ws,
                    // The session already ended (the old token expired).
                    Err(_) => {
                        let (ws, w) = start_session(&target, &trust, &token).await?;
                        window = w;
                        ws
                    }
                };
            }
        }
        let mut msg = json!({"type": "chat", "content": line, "conversation_id": conversation_id});
        if let Some(m) = &args.model {
            msg["model"] = json!(m);
        }
        send_json(&mut ws, &msg).await?;
        // The seq of the last token printed: a resume asks for what follows.
        let mut last_seq = 0u64;
        loop {
            let v = match next_json(&mut ws).await {
                Ok(Some(v)) => v,
                dropped => {
                    let why = match dropped {
                        Err(e) => e,
                        _ => "the gateway closed the connection".into(),
                    };
                    if window == 0 {
                        return Err(why);
                    }
                    eprintln!("\n[connection lost ({why}); resuming after token {last_seq}]");
                    ws = reconnect_and_resume(
                        &args,
                        &target,
                        &trust,
                        &mut token,
                        &conversation_id,
                        last_seq,
                        window,
                    )
                    .await?;
                    continue;
                }
            };
            match v["type"].as_str().unwrap_or("") {
                "token" => {
                    let seq = v["seq"].as_u64().unwrap_or(last_seq + 1);
                    if seq <= last_seq {
                        continue; // replayed by a resume: already printed
                    }
                    last_seq = seq;
                    print!("{}", v["token"].as_str().unwrap_or(""));
                    let _ = std::io::stdout().flush();
                }
                "complete" => {
                    println!();
                    eprintln!(
                        "[complete: {} tokens, first token {} ms, {} ms total, {} tokens/s, {}]",
                        v["total_tokens"],
                        v["first_token_ms"],
                        v["latency_ms"],
                        v["tokens_per_second"],
                        v["done_reason"]
                    );
                    break;
                }
                "error" => {
                    eprintln!(
                        "[error {}: {}]",
                        v["code"].as_str().unwrap_or("?"),
                        v["message"].as_str().unwrap_or("")
                    );
                    if v["conversation_id"].is_string() || v["code"] != "invalid_message" {
                        break;
                    }
                }
                "ping" => send_json(&mut ws, &json!({"type": "pong"})).await?,
                "system" => {
                    let text = v["message"].as_str().unwrap_or("");
                    eprintln!("[system: {text}]");
                    if let (true, Some(id)) = (text.contains("expires in"), renew(&args)) {
                        // Mid-answer: send the new token; `auth_ack` follows.
                        token = fetch_token(&target, &trust, &id, args.secret.as_deref()).await?;
                        send_json(&mut ws, &json!({"type": "auth", "token": token})).await?;
                    }
                }
                "auth_ack" => eprintln!(
                    "[session renewed until {}]",
                    v["expires_at"].as_str().unwrap_or("?")
                ),
                _ => {}
            }
        }
    }
    let _ = ws.write_frame(Frame::close(1000, b"bye")).await;
    Ok(())
}

type Session = WebSocket<TokioIo<Upgraded>>;

/// Open a session with `token` and read its `connection_ack`; also returns
/// the gateway's resume window (0: no resume).
async fn start_session(
    target: &Target,
    trust: &Trust,
    token: &str,
) -> Result<(Session, u64), String> {
    let mut ws = open_ws(target, trust, token).await?;
    let ack = next_json(&mut ws)
        .await?
        .ok_or("the gateway closed the connection")?;
    if ack["type"] != "connection_ack" {
        return Err(format!("expected connection_ack, got {ack}"));
    }
    eprintln!(
        "connected as {} (session {})",
        ack["client_id"].as_str().unwrap_or("?"),
        ack["session_id"].as_str().unwrap_or("?")
    );
    Ok((ws, ack["resume_window_secs"].as_u64().unwrap_or(0)))
}

/// Reconnect after a drop and send `resume` for `conversation_id` after
/// token `last_seq`, retrying with backoff for up to `window_secs`.
/// Renews `token` first when it is about to expire (needs a client id).
async fn reconnect_and_resume(
    args: &ChatArgs,
    target: &Target,
    trust: &Trust,
    token: &mut String,
    conversation_id: &str,
    last_seq: u64,
    window_secs: u64,
) -> Result<Session, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(window_secs);
    let mut wait = BACKOFF_START;
    loop {
        tokio::time::sleep(wait).await;
        let attempt = async {
            if let Some(id) = &args.client_id {
                if now_secs() + RENEW_LEAD_SECS >= token_exp(token) {
                    *token = fetch_token(target, trust, id, args.secret.as_deref()).await?;
                }
            }
            let (mut ws, _) = start_session(target, trust, token).await?;
            let resume =
                json!({"type": "resume", "conversation_id": conversation_id, "last_seq": last_seq});
            send_json(&mut ws, &resume).await?;
            Ok::<_, String>(ws)
        };
        match attempt.await {
            Ok(ws) => return Ok(ws),
            Err(e) if tokio::time::Instant::now() + wait < deadline => {
                eprintln!("[reconnecting: {e}]");
                wait = (wait * 2).min(BACKOFF_MAX);
            }
            Err(e) => return Err(format!("could not resume the answer: {e}")),
        }
    }
}

/// Send `token` in band and wait for `auth_ack`. `Err` when the session is
/// gone (or refused the token).
async fn reauth(ws: &mut Session, token: &str) -> Result<(), String> {
    send_json(ws, &json!({"type": "auth", "token": token})).await?;
    loop {
        let v = next_json(ws).await?.ok_or("the session ended")?;
        match v["type"].as_str().unwrap_or("") {
            "auth_ack" => {
                eprintln!(
                    "[session renewed until {}]",
                    v["expires_at"].as_str().unwrap_or("?")
                );
                return Ok(());
            }
            "ping" => send_json(ws, &json!({"type": "pong"})).await?,
            "system" => eprintln!("[system: {}]", v["message"].as_str().unwrap_or("")),
            _ => {}
        }
    }
}

async fn send_json<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocket<S>,
    v: &Value,
) -> Result<(), String> {
    ws.write_frame(Frame::text(Payload::Owned(v.to_string().into_bytes())))
        .await
        .map_err(|e| format!("sending: {e}"))
}

/// The next JSON text frame, or `None` when the server closed.
async fn next_json<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocket<S>,
) -> Result<Option<Value>, String> {
    loop {
        let frame = tokio::time::timeout(READ_TIMEOUT, ws.read_frame())
            .await
            .map_err(|_| format!("nothing received for {} s", READ_TIMEOUT.as_secs()))?
            .map_err(|e| format!("reading: {e}"))?;
        match frame.opcode {
            OpCode::Text => {
                return serde_json::from_slice(&frame.payload)
                    .map(Some)
                    .map_err(|e| format!("server sent invalid JSON: {e}"))
            }
            OpCode::Close => {
                if frame.payload.len() >= 2 {
                    let code = u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
                    eprintln!(
                        "[closed {code}: {}]",
                        String::from_utf8_lossy(&frame.payload[2..])
                    );
                }
                return Ok(None);
            }
            _ => continue,
        }
    }
}
