//! One WebSocket session after the upgrade: the reader loop (this task), a
//! writer task (which also sends the heartbeat) and, from the first chat on,
//! a generation runner. The session's cancel token is a child of the
//! server's root; each generation's is a child of the session's (one
//! cancellation tree: server → session → generation).
//!
//! The session ends when the client closes or goes silent for
//! `timeout_secs`, on a protocol violation (closed with the RFC 6455 code),
//! when told to (revocation 1008, shutdown 1001), or when the writer fails.
//! Whatever ends it, the running generation's upstream request is dropped;
//! the writer ends by itself once the session and the runner dropped their
//! senders (the connection manager holds only a weak one).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket, WebSocketError};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument};

use super::generation::{self, Job, Outcome};
use super::manager::{SessionInfo, Slot};
use super::mask_guard::{is_unmasked, MaskGuard};
use super::protocol::{self, parse_client_message, ClientMessage, ErrorCode};
use super::queue::{JobQueue, PushError};
use super::replay::{Holder, Output, ResumeParams};
use super::writer::{self, Out, WriterEnd};
use super::WsState;
use crate::auth::Claims;
use crate::limits::HeldConn;
use crate::metrics::Direction;
use crate::server::ConnInfo;

/// What the upgrade handler learned about the client.
pub struct Client {
    /// The verified access token's claims: the session lives no longer than
    /// the token (or the one that replaces it in band).
    pub claims: Claims,
    /// [`crate::auth::Auth::epoch`] before the token was verified.
    pub epoch: u64,
    pub models: Vec<String>,
    pub conn: ConnInfo,
    /// The connection's per-IP slot: held as long as the session lives.
    pub held: Option<HeldConn>,
}

/// How long before the token's `exp` the session says it will expire.
pub const EXPIRY_NOTICE: Duration = Duration::from_secs(60);

/// The instant `unix_secs` (seconds since the Unix epoch) falls on.
fn instant_of(unix_secs: u64) -> tokio::time::Instant {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let left = Duration::from_secs(unix_secs).saturating_sub(now);
    tokio::time::Instant::now() + left
}

/// When the session closes for its token's expiry (`exp` + leeway), and
/// when it warns (a minute before `exp`, or at once when less is left).
fn token_deadlines(claims: &Claims, leeway: u64) -> (tokio::time::Instant, tokio::time::Instant) {
    let expiry = instant_of(claims.exp.saturating_add(leeway));
    let warn = instant_of(claims.exp)
        .checked_sub(EXPIRY_NOTICE)
        .unwrap_or_else(tokio::time::Instant::now)
        .max(tokio::time::Instant::now());
    (expiry, warn)
}

/// The `system` notice before expiry.
fn expiry_notice(claims: &Claims) -> String {
    let secs = claims.exp.saturating_sub(crate::auth::tokens::now_secs());
    format!(
        "the access token of this session expires in {secs} s: send {{\"type\":\"auth\",\"token\":\"<new access token>\"}} to keep it open"
    )
}

/// How long the close frame gets to go out when a session ends.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// Run a session to its end, inside a `session` span (`session_id`,
/// `client_id`, `ip`) that every log line of the session, its writer and its
/// generations carries. A plain function returning the session's future (not
/// an `async fn` around it), so the spawned task holds one copy of the
/// arguments, not one per wrapper level (idle memory, ADR 0013).
pub fn run(
    state: Arc<WsState>,
    ws: WebSocket<TokioIo<Upgraded>>,
    slot: Slot,
    client: Client,
) -> impl std::future::Future<Output = ()> + Send {
    let session_id = uuid::Uuid::new_v4().to_string();
    let span = info_span!(
        "session",
        session_id = %session_id,
        client_id = %client.claims.sub,
        ip = %client.conn.peer.ip(),
    );
    run_session(state, ws, slot, client, session_id).instrument(span)
}

async fn run_session(
    state: Arc<WsState>,
    ws: WebSocket<TokioIo<Upgraded>>,
    mut slot: Slot,
    client: Client,
    session_id: String,
) {
    let _held = client.held;
    let cfg = state.config();
    let wscfg = cfg.websocket.clone();
    drop(cfg);
    // The writer owns the raw write half and encodes frames itself (one
    // write per batch); fastwebsockets only reads. Its write half here is a
    // sink that is never used.
    let (r, write) = tokio::io::split(ws.into_inner());
    // fastwebsockets' frame reader (and its 8 KiB buffer) exists only while
    // a frame is being read (see `next_frame`); between frames the session
    // holds just this guard.
    let read = MaskGuard::new(r);
    // fastwebsockets refuses frames of at least this size; our own
    // reassembly below caps whole messages.
    let max_frame = wscfg.max_message_bytes + 1;
    let (tx, rx) = mpsc::channel::<Out>(wscfg.outgoing_queue_frames);
    let info = state.sessions.register(
        &mut slot,
        state.metrics.clone(),
        session_id,
        client.claims.jti.clone(),
        client.conn.peer,
        tx.downgrade(),
    );
    info!(peer = %client.conn.peer, "session opened");
    // Revocations from now on wake the loop; one that landed between the
    // upgrade's check and the registration above moved the epoch past
    // `client.epoch`, so this re-check catches it.
    let mut epoch_rx = state.auth.subscribe();
    let mut seen_epoch = client.epoch;
    let revoked_at_start = state.auth.recheck(&client.claims, &mut seen_epoch).err();
    let leeway = state.auth.leeway_secs();

    // The writer ends once every sender is gone (this task's and the
    // generation runner's; the manager only holds a weak one) and the queue
    // is written out.
    let writer = {
        let metrics = state.metrics.clone();
        let info = info.clone();
        state.tasks.spawn(
            async move {
                let end = writer::run(
                    write,
                    rx,
                    wscfg.write_timeout,
                    wscfg.heartbeat_interval,
                    &metrics,
                )
                .await;
                if end == WriterEnd::TimedOut {
                    info!("client stopped reading: closing the session");
                    info.close((1008, "write timeout"));
                } else if end != WriterEnd::Closed {
                    info.cancel.cancel();
                }
                end
            }
            .in_current_span(),
        )
    };
    let _ = tx
        .send(Out::Text(
            protocol::connection_ack(&info.client_id, &info.id, wscfg.resume_window.as_secs())
                .into(),
        ))
        .await;
    state.metrics.ws_message(Direction::Out, "connection_ack");

    let queue = Arc::new(JobQueue::default());

    let (expiry, warn_at) = token_deadlines(&client.claims, leeway);
    let expiry = tokio::time::sleep_until(expiry);
    let warn_at = tokio::time::sleep_until(warn_at);
    tokio::pin!(expiry, warn_at);
    let mut warned = false;
    let mut reader = Reader {
        claims: client.claims,
        reauthenticated: false,
        state: &state,
        info: &info,
        tx: &tx,
        queue: &queue,
        models: &client.models,
        max_message: wscfg.max_message_bytes,
        max_content: wscfg.max_content_bytes,
        queue_size: wscfg.message_queue_size,
        fragments: None,
        runner: None,
    };
    // Frames are read by one future that lives across loop turns and is
    // only replaced once it has returned a whole frame: a drain that starts
    // while a client is half-way through a frame never drops the bytes
    // already taken (fastwebsockets' read is not cancel-safe).
    let obligated = {
        let tx = tx.clone();
        move |frame: Frame<'_>| {
            let out = match frame.opcode {
                OpCode::Pong => Out::Pong(Bytes::copy_from_slice(&frame.payload)),
                _ => Out::CloseRaw(Bytes::copy_from_slice(&frame.payload)),
            };
            let tx = tx.clone();
            async move { tx.send(out).await.map_err(|_| "session closed") }
        }
    };
    let idle = tokio::time::sleep(wscfg.timeout);
    tokio::pin!(idle);
    let mut draining = false;
    let close: Option<(u16, String)> = {
        let reading = next_frame(read, obligated, max_frame);
        tokio::pin!(reading);
        let mut first_turn = revoked_at_start;
        loop {
            if let Some(e) = first_turn.take() {
                info.notify_and_close(
                    &format!("{}: closing", e.close_reason()),
                    (1008, e.close_reason()),
                );
                break Some((1008, e.close_reason().to_string()));
            }
            let read_res = tokio::select! {
                biased;
                _ = info.cancel.cancelled() => {
                    // Cancelled without a reason while draining: the grace
                    // period is over and the server's root token was cancelled.
                    let fallback = if state.draining.is_cancelled() { "server shutting down" } else { "session closed" };
                    let (code, reason) = info.close_reason().unwrap_or((1001, fallback));
                    break Some((code, reason.to_string()));
                }
                _ = state.draining.cancelled(), if !draining => {
                    // The shutdown notice was broadcast before this fired
                    // (AppState::begin_shutdown), so it precedes any close.
                    draining = true;
                    let (removed, running) = queue.close();
                    for job in removed {
                        let _ = tx.try_send(Out::Text(protocol::error(ErrorCode::ShuttingDown, "server shutting down: chat not started", job.chat.conversation_id.as_deref()).into()));
                    }
                    if !running {
                        break Some((1001, "server shutting down".into()));
                    }
                    // The frame being read, if any, is still read to its end.
                    continue;
                }
                _ = &mut idle => break Some((1001, "idle timeout".into())),
                _ = &mut expiry => {
                    info!("access token expired: closing the session");
                    break Some((1008, "token expired".into()));
                }
                _ = &mut warn_at, if !warned => {
                    warned = true;
                    let _ = tx.try_send(Out::Text(protocol::system(&expiry_notice(&reader.claims)).into()));
                    state.metrics.ws_message(Direction::Out, "system");
                    continue;
                }
                changed = epoch_rx.changed() => {
                    if changed.is_err() {
                        // The ledger is gone: the server is going away.
                        std::future::pending::<()>().await;
                    }
                    match state.auth.recheck(&reader.claims, &mut seen_epoch) {
                        Ok(()) => continue,
                        Err(e) => {
                            info!(reason = e.reason(), "the session's token was taken back: closing");
                            let _ = tx.try_send(Out::Text(protocol::system(&format!("{}: closing", e.close_reason())).into()));
                            break Some((1008, e.close_reason().to_string()));
                        }
                    }
                }
                (read, obligated, res) = &mut reading => {
                    reading.set(next_frame(read, obligated, max_frame));
                    res
                }
            };
            let frame = match read_res {
                Err(e) => break protocol_close(&e),
                Ok(f) => f,
            };
            idle.as_mut()
                .reset(tokio::time::Instant::now() + wscfg.timeout);
            info.touch();
            match frame.opcode {
                OpCode::Close => break None, // echoed by fastwebsockets' auto-close
                OpCode::Ping => {
                    // Answered here, not by fastwebsockets' auto-pong, whose
                    // read would go on to wait (buffer held) for the next frame.
                    let _ = tx
                        .send(Out::Pong(Bytes::from(frame.payload.to_vec())))
                        .await;
                    continue;
                }
                OpCode::Pong => continue,
                _ => {}
            }
            // Boxed: the message handling's state lives on the heap only
            // while a message is handled, not in every idle session's task.
            if let Err(close) = Box::pin(reader.on_frame(frame)).await {
                break Some(close);
            }
            if std::mem::take(&mut reader.reauthenticated) {
                let (e, w) = token_deadlines(&reader.claims, leeway);
                expiry.as_mut().reset(e);
                warn_at.as_mut().reset(w);
                warned = false;
            }
        }
        // The read half (and its sender for protocol replies) is dropped
        // here: nothing more is read once the session decided to close.
    };

    // Wind down: stop the generation (drops the upstream request), send the
    // close frame, let the writer flush it.
    let close_code = close.as_ref().map(|c| c.0).unwrap_or(1000);
    if let Some((code, reason)) = close {
        let _ = tx.try_send(Out::Close(code, reason));
    }
    info.cancel.cancel();
    let runner = reader.runner.take();
    drop(reader);
    drop(tx);
    if let Some(runner) = runner {
        let _ = runner.await;
    }
    if tokio::time::timeout(CLOSE_FLUSH, writer).await.is_err() {
        debug!("close frame not flushed in time");
    }
    info!(
        peer = %info.peer,
        duration_ms = info.opened.elapsed().as_millis() as u64,
        messages = info.messages.load(Ordering::Relaxed),
        tokens = info.tokens.load(Ordering::Relaxed),
        errors = info.errors.load(Ordering::Relaxed),
        close_code,
        "session closed"
    );
    drop(slot);
}

/// Read one whole frame and hand the read half back with it (the frame
/// copied out of the read buffer), so the caller can keep this future alive
/// across `select!` turns and start the next read only after this one ends.
///
/// Idle memory: the wait for the frame's first byte holds no buffer (the
/// guard takes that byte itself); only then is a fastwebsockets reader
/// built (its 8 KiB buffer and its read state on the heap) for this one
/// frame. The guard never reads past the frame's end, so nothing is left
/// in that reader's buffer when it is dropped (docs/adr/0013-idle-session-memory.md).
async fn next_frame<S, F, R>(
    mut read: MaskGuard<S>,
    mut obligated: F,
    max_frame: usize,
) -> (MaskGuard<S>, F, Result<Frame<'static>, WebSocketError>)
where
    S: AsyncRead + Unpin,
    F: FnMut(Frame<'_>) -> R,
    R: std::future::Future<Output = Result<(), &'static str>>,
{
    let res = match std::future::poll_fn(|cx| read.poll_first(cx)).await {
        Ok(true) => Box::pin(read_one_frame(&mut read, &mut obligated, max_frame)).await,
        Ok(false) => Err(WebSocketError::UnexpectedEOF),
        Err(e) => Err(WebSocketError::IoError(e)),
    };
    (read, obligated, res)
}

/// One frame through a fastwebsockets reader built for it (auto-close on,
/// auto-pong off: pings come back to the session).
async fn read_one_frame<S, F, R>(
    guard: &mut MaskGuard<S>,
    obligated: &mut F,
    max_frame: usize,
) -> Result<Frame<'static>, WebSocketError>
where
    S: AsyncRead + Unpin,
    F: FnMut(Frame<'_>) -> R,
    R: std::future::Future<Output = Result<(), &'static str>>,
{
    let (mut read, _) =
        fastwebsockets::after_handshake_split(guard, tokio::io::sink(), Role::Server);
    read.set_max_message_size(max_frame);
    read.set_auto_pong(false);
    read.read_frame(obligated)
        .await
        .map(|f| Frame::new(f.fin, f.opcode, None, Payload::Owned(f.payload.to_vec())))
}

/// RFC 6455 close code for a read error, or `None` when the peer is gone.
fn protocol_close(e: &WebSocketError) -> Option<(u16, String)> {
    use WebSocketError as E;
    let code = match e {
        E::InvalidUTF8 => 1007,
        E::FrameTooLarge => 1009,
        E::ReservedBitsNotZero
        | E::InvalidFragment
        | E::InvalidContinuationFrame
        | E::ControlFrameFragmented
        | E::PingFrameTooLarge
        | E::InvalidCloseFrame
        | E::InvalidCloseCode
        | E::InvalidValue => 1002,
        E::IoError(io) if is_unmasked(io) => 1002,
        _ => {
            debug!(error = %e, "websocket read ended");
            return None;
        }
    };
    Some((code, e.to_string()))
}

/// The reader's state between frames.
struct Reader<'a> {
    /// The token the session runs on now.
    claims: Claims,
    /// Set when an `auth` message replaced `claims` (the loop resets its
    /// timers).
    reauthenticated: bool,
    state: &'a Arc<WsState>,
    info: &'a Arc<SessionInfo>,
    tx: &'a mpsc::Sender<Out>,
    queue: &'a Arc<JobQueue>,
    models: &'a [String],
    max_message: usize,
    max_content: usize,
    queue_size: usize,
    /// A fragmented message being reassembled: (is text, bytes so far).
    fragments: Option<(bool, Vec<u8>)>,
    /// The generation runner, spawned at the first chat so an idle session
    /// costs no task (and no generation future) for it.
    runner: Option<tokio::task::JoinHandle<()>>,
}

impl Reader<'_> {
    /// Handle one data frame. `Err` carries the close code and reason.
    async fn on_frame(&mut self, frame: Frame<'_>) -> Result<(), (u16, String)> {
        let message: Vec<u8>;
        let (is_text, data): (bool, &[u8]) = match (frame.opcode, frame.fin) {
            (OpCode::Text | OpCode::Binary, true) if self.fragments.is_none() => {
                (frame.opcode == OpCode::Text, &frame.payload)
            }
            (OpCode::Text | OpCode::Binary, false) if self.fragments.is_none() => {
                self.fragments = Some((frame.opcode == OpCode::Text, frame.payload.to_vec()));
                return Ok(());
            }
            (OpCode::Continuation, fin) if self.fragments.is_some() => {
                let (_, buf) = self.fragments.as_mut().expect("checked");
                if buf.len() + frame.payload.len() > self.max_message {
                    return Err((1009, format!("message exceeds {} bytes", self.max_message)));
                }
                buf.extend_from_slice(&frame.payload);
                if !fin {
                    return Ok(());
                }
                let (text, buf) = self.fragments.take().expect("checked");
                if text && std::str::from_utf8(&buf).is_err() {
                    return Err((1007, "invalid UTF-8 in text message".into()));
                }
                message = buf;
                (text, &message)
            }
            _ => return Err((1002, "unexpected frame in a fragmented message".into())),
        };
        if !is_text {
            self.reply_error(
                ErrorCode::InvalidMessage,
                "binary messages are not supported: send JSON text",
                None,
            )
            .await;
            return Ok(());
        }
        self.info.messages.fetch_add(1, Ordering::Relaxed);
        match parse_client_message(data, self.max_content) {
            Ok(msg) => {
                self.state.metrics.ws_message(Direction::In, msg.kind());
                self.on_message(msg).await?;
            }
            Err(e) => {
                self.state.metrics.ws_message(Direction::In, "invalid");
                self.reply_error(ErrorCode::InvalidMessage, &e.to_string(), None)
                    .await;
            }
        }
        Ok(())
    }

    async fn on_message(&mut self, msg: ClientMessage) -> Result<(), (u16, String)> {
        match msg {
            ClientMessage::Auth { token } => {
                let claims = match self.state.auth.verify_access(&token.0) {
                    Ok(c) => c,
                    Err(e) => {
                        info!(reason = e.reason(), "in-band auth refused: closing");
                        return Err((1008, format!("token refused: {}", e.reason())));
                    }
                };
                if claims.sub != self.claims.sub {
                    warn!(other = %claims.sub, "in-band auth with another client's token: closing");
                    return Err((1008, "token of another client".into()));
                }
                info!(jti = %claims.jti, "session re-authenticated");
                self.info.set_jti(claims.jti.clone());
                let ack = protocol::auth_ack(claims.exp);
                self.claims = claims;
                self.reauthenticated = true;
                self.send(ack, "auth_ack").await;
            }
            ClientMessage::Ping => {
                self.send(protocol::pong(), "pong").await;
            }
            ClientMessage::Pong => {}
            ClientMessage::Cancel { conversation_id } => {
                // A resumed generation (held by this session, or detached:
                // a cancel from any session of the client stops it).
                self.state.resume.cancel(
                    &self.info.client_id,
                    conversation_id.as_deref(),
                    &self.info.id,
                );
                let (removed, _running) = self.queue.cancel(conversation_id.as_deref());
                for job in removed {
                    self.state.metrics.generation("cancelled");
                    let frame = generation::cancelled_before_start(&job);
                    self.send(frame, "complete").await;
                }
                for (conv, ahead) in self.queue.moved() {
                    self.send(protocol::status_queued(conv.as_deref(), ahead), "status")
                        .await;
                }
            }
            ClientMessage::Resume {
                conversation_id,
                last_seq,
            } => {
                let holder = Holder {
                    session_id: self.info.id.clone(),
                    tx: self.tx.clone(),
                    session: self.info.cancel.clone(),
                };
                let r = self.state.resume.take_over(
                    &self.info.client_id,
                    &conversation_id,
                    last_seq,
                    holder,
                );
                if let Err(e) = r {
                    self.state.metrics.resume_outcome("unavailable");
                    self.reply_error(
                        ErrorCode::ResumeUnavailable,
                        &e.to_string(),
                        Some(&conversation_id),
                    )
                    .await;
                }
            }
            ClientMessage::Chat(chat) => {
                if let Err(wait) = self.state.limits.chat(&self.info.client_id) {
                    self.info.errors.fetch_add(1, Ordering::Relaxed);
                    self.state.metrics.errors_total.inc();
                    let ms = wait.as_millis().max(1) as u64;
                    let frame = protocol::rate_limited(ms, chat.conversation_id.as_deref());
                    self.send(frame, "error").await;
                    return Ok(());
                }
                let cfg = self.state.config();
                let model = chat
                    .model
                    .clone()
                    .unwrap_or_else(|| cfg.ollama.model.clone());
                let conv = chat.conversation_id.clone();
                if !self.models.contains(&model) || !cfg.ollama.allowed_models.contains(&model) {
                    let msg = format!(
                        "model {model:?} is not allowed for this client; allowed: {}",
                        self.models.join(", ")
                    );
                    self.reply_error(ErrorCode::ModelNotAllowed, &msg, conv.as_deref())
                        .await;
                    return Ok(());
                }
                let job = Job {
                    chat,
                    model,
                    received_at: Instant::now(),
                };
                match self.queue.push(job, self.queue_size) {
                    Ok(ahead) => {
                        if ahead > 0 {
                            let frame = protocol::status_queued(conv.as_deref(), ahead);
                            self.send(frame, "status").await;
                        }
                        if self.runner.is_none() {
                            let (state, info) = (self.state.clone(), self.info.clone());
                            let (tx, queue) = (self.tx.clone(), self.queue.clone());
                            let task = run_jobs(state, info, tx, queue);
                            self.runner = Some(self.state.tasks.spawn(task.in_current_span()));
                        }
                    }
                    Err(PushError::Full) => {
                        let msg = format!(
                            "{} chats are already waiting; wait for an answer or send cancel",
                            self.queue_size
                        );
                        self.reply_error(ErrorCode::Busy, &msg, conv.as_deref())
                            .await;
                    }
                    Err(PushError::Closed) => {
                        self.reply_error(
                            ErrorCode::ShuttingDown,
                            "server shutting down: no new chats",
                            conv.as_deref(),
                        )
                        .await;
                    }
                }
            }
        }
        Ok(())
    }

    async fn send(&self, frame: Vec<u8>, kind: &'static str) {
        self.state.metrics.ws_message(Direction::Out, kind);
        let _ = self.tx.send(Out::Text(frame.into())).await;
    }

    async fn reply_error(&self, code: ErrorCode, message: &str, conversation_id: Option<&str>) {
        self.info.errors.fetch_add(1, Ordering::Relaxed);
        self.state.metrics.errors_total.inc();
        self.send(protocol::error(code, message, conversation_id), "error")
            .await;
    }
}

/// Take chats off the queue one at a time and run them.
async fn run_jobs(
    state: Arc<WsState>,
    info: Arc<SessionInfo>,
    tx: mpsc::Sender<Out>,
    queue: Arc<JobQueue>,
) {
    loop {
        let wscfg = state.config().websocket.clone();
        let resume_on = !wscfg.resume_window.is_zero();
        let detached_parent = resume_on.then_some(&state.root);
        let Some((job, cancel)) = queue.next(&info.cancel, detached_parent).await else {
            break;
        };
        // The queue moved: the chats still waiting are one place further.
        for (conv, ahead) in queue.moved() {
            let frame = protocol::status_queued(conv.as_deref(), ahead);
            if tx.send(Out::Text(frame.into())).await.is_ok() {
                state.metrics.ws_message(Direction::Out, "status");
            }
        }
        let span = info_span!(
            "generation",
            conversation_id = job.chat.conversation_id.as_deref().unwrap_or("-"),
            model = %job.model,
        );
        let outcome = match job.chat.conversation_id.clone() {
            Some(conv) if resume_on => {
                match run_resumable(&state, &info, &tx, job, cancel, &conv, &wscfg)
                    .instrument(span)
                    .await
                {
                    Some(o) => o,
                    // The session ended; the generation goes on detached.
                    None => return,
                }
            }
            _ => {
                let mut out = Output::Direct(tx.clone());
                generation::run(&state, &info, &mut out, job, &cancel)
                    .instrument(span)
                    .await
            }
        };
        match outcome {
            Outcome::Complete | Outcome::Cancelled => {
                state.metrics.ws_message(Direction::Out, "complete")
            }
            Outcome::Error(_) => {
                info.errors.fetch_add(1, Ordering::Relaxed);
                state.metrics.errors_total.inc();
                state.metrics.ws_message(Direction::Out, "error");
            }
            Outcome::SessionGone => {}
        }
        if queue.finished() {
            // Drain: the last running answer is done.
            info.close((1001, "server shutting down"));
            return;
        }
    }
}

/// Run a resumable generation in its own task (it may outlive this
/// session); wait for its outcome unless the session ends first (`None`).
/// After its end the task keeps its frames for a resume until the window
/// passes.
async fn run_resumable(
    state: &Arc<WsState>,
    info: &Arc<SessionInfo>,
    tx: &mpsc::Sender<Out>,
    job: Job,
    cancel: tokio_util::sync::CancellationToken,
    conv: &str,
    wscfg: &crate::config::WebsocketConfig,
) -> Option<Outcome> {
    let holder = Holder {
        session_id: info.id.clone(),
        tx: tx.clone(),
        session: info.cancel.clone(),
    };
    let params = ResumeParams {
        window: wscfg.resume_window,
        buffer_bytes: wscfg.resume_buffer_bytes,
        total_bytes: wscfg.resume_total_bytes,
        write_timeout: wscfg.write_timeout,
        draining: state.draining.clone(),
        tasks: state.tasks.clone(),
    };
    let mut out = Output::resumable(
        &state.resume,
        &info.client_id,
        conv,
        &cancel,
        holder,
        params,
    );
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let (state2, info2) = (state.clone(), info.clone());
    state.tasks.spawn(
        async move {
            let outcome = generation::run(&state2, &info2, &mut out, job, &cancel).await;
            let _ = done_tx.send(outcome);
            drop(info2);
            out.linger(&cancel).await;
        }
        .in_current_span(),
    );
    tokio::select! {
        o = done_rx => o.ok(),
        _ = info.cancel.cancelled() => None,
    }
}
