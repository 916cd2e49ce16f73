//! Resume (issue 17, docs/adr/0019-resumable-generations.md): a generation
//! with a `conversation_id` keeps the frames it sends (token frames with
//! their `seq`, then `complete` or `error`) in a per-generation log, so that
//! when its session ends mid-answer a new session of the same client can
//! send `resume` and get every frame after the last token it saw,
//! byte-identical, then the live ones.
//!
//! - [`ResumeRegistry`]: every resumable generation of the server, keyed by
//!   (client id, conversation id), and the global byte bound over their logs
//!   (`resume_total_bytes`, oldest frames dropped first).
//! - [`Output`]: where a generation sends its frames: straight into its
//!   session's queue (resume off, or no `conversation_id`: exactly the
//!   behaviour without resume), or through a [`Resumable`] that logs each
//!   frame, then delivers it to the session holding the generation now (the
//!   holder's bounded queue stays the slow-reader backpressure).
//!
//! The generation's own task is the only one that appends and delivers, so
//! a takeover never races a live frame: a `resume` is queued on the
//! generation ([`ResumeRegistry::take_over`]) and the generation task
//! replays the log to the new holder, then goes on with the live frames.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::generation::Outcome;
use super::protocol::{self, ErrorCode};
use super::writer::Out;
use crate::metrics::Metrics;

/// The session a generation delivers to: its outgoing queue and its cancel
/// token (cancelled when the session ends).
#[derive(Clone)]
pub struct Holder {
    pub session_id: String,
    pub tx: mpsc::Sender<Out>,
    pub session: CancellationToken,
}

/// A `resume` waiting for the generation task to pick it up.
struct Takeover {
    holder: Holder,
    last_seq: u64,
}

/// One logged frame. `after` is the number of tokens sent before it, so a
/// resume after token N replays exactly the entries with `after >= N`
/// (token N+1 on, and any `thinking`, `complete` or `error` after token N).
struct Entry {
    after: u64,
    /// Global append order, for the oldest-first global bound.
    stamp: u64,
    frame: Bytes,
}

#[derive(Default)]
struct Log {
    frames: VecDeque<Entry>,
    bytes: usize,
    /// `after` of the newest entry dropped from the front, if any.
    dropped_after: Option<u64>,
    /// Taken out of the registry: nothing more is kept.
    gone: bool,
}

impl Log {
    /// Every entry a resume after token `last_seq` needs is still here.
    fn covers(&self, last_seq: u64) -> bool {
        !self.gone && self.dropped_after.is_none_or(|d| d < last_seq)
    }

    fn pop_front(&mut self) -> usize {
        match self.frames.pop_front() {
            Some(e) => {
                self.dropped_after = Some(e.after);
                self.bytes -= e.frame.len();
                e.frame.len()
            }
            None => 0,
        }
    }
}

/// One resumable generation, shared by its task and the sessions that
/// resume or cancel it.
pub struct Gen {
    client_id: String,
    conversation_id: String,
    log: Mutex<Log>,
    pending: Mutex<Option<Takeover>>,
    /// Woken when a takeover is queued or the generation is retired.
    wake: Notify,
    /// Set with every `wake`: lets the per-frame checks skip the locks.
    signalled: AtomicBool,
    /// The generation's cancel token (a `cancel` from any session).
    pub cancel: CancellationToken,
    /// The session id of the holder, for `cancel` without a conversation id.
    holder_id: Mutex<Option<String>>,
}

impl Gen {
    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_holder(&self, id: Option<String>) {
        *self.holder_id.lock().unwrap_or_else(|p| p.into_inner()) = id;
    }

    fn held_by(&self, session_id: &str) -> bool {
        self.holder_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
            == Some(session_id)
    }

    /// Wake the generation task: a takeover is queued, or it was retired.
    fn signal(&self) {
        self.signalled.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn take_pending(&self) -> Option<Takeover> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The frames a resume after token `last_seq` replays.
    fn replay(&self, last_seq: u64) -> Option<Vec<Bytes>> {
        let log = self.log();
        log.covers(last_seq).then(|| {
            log.frames
                .iter()
                .filter(|e| e.after >= last_seq)
                .map(|e| e.frame.clone())
                .collect()
        })
    }
}

type Key = (String, String);

/// Why a `resume` was refused at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    #[error("nothing to resume for this conversation (unknown, finished longer ago than the resume window, cancelled, or last_seq older than the oldest frame kept)")]
    Unavailable,
}

/// The `resume_unavailable` error frame for `conversation_id`.
fn unavailable(conversation_id: &str) -> Out {
    Out::Text(
        protocol::error(
            ErrorCode::ResumeUnavailable,
            &ResumeError::Unavailable.to_string(),
            Some(conversation_id),
        )
        .into(),
    )
}

/// Every resumable generation of the server.
pub struct ResumeRegistry {
    gens: Mutex<HashMap<Key, Arc<Gen>>>,
    /// Frame bytes over every log.
    total: AtomicU64,
    stamp: AtomicU64,
    metrics: Arc<Metrics>,
}

impl ResumeRegistry {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            gens: Mutex::new(HashMap::new()),
            total: AtomicU64::new(0),
            stamp: AtomicU64::new(0),
            metrics,
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Gen>>> {
        self.gens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Frame bytes kept now, over all generations.
    pub fn buffered_bytes(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    fn sub_bytes(&self, n: usize) {
        if n > 0 {
            let now = self.total.fetch_sub(n as u64, Ordering::Relaxed) - n as u64;
            self.metrics.resume_buffered_bytes.set(now as i64);
        }
    }

    /// Free `gen`'s log and mark it gone (no more frames kept).
    fn retire(&self, gen: &Gen) {
        let freed = {
            let mut log = gen.log();
            log.gone = true;
            log.frames.clear();
            std::mem::take(&mut log.bytes)
        };
        self.sub_bytes(freed);
        // A resume that reached the generation as it ended gets its answer
        // here: the generation task will not pick it up any more.
        let orphan = gen.pending.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = orphan {
            self.metrics.resume_outcome("unavailable");
            let _ = t.holder.tx.try_send(unavailable(&gen.conversation_id));
        }
        gen.signal();
    }

    /// A new resumable generation of (`client_id`, `conversation_id`). An
    /// older one of the same conversation is no longer resumable.
    pub fn register(
        &self,
        client_id: &str,
        conversation_id: &str,
        cancel: CancellationToken,
        holder: &Holder,
    ) -> Arc<Gen> {
        let gen = Arc::new(Gen {
            client_id: client_id.to_string(),
            conversation_id: conversation_id.to_string(),
            log: Mutex::new(Log::default()),
            pending: Mutex::new(None),
            wake: Notify::new(),
            signalled: AtomicBool::new(false),
            cancel,
            holder_id: Mutex::new(Some(holder.session_id.clone())),
        });
        let old = self.map().insert(
            (client_id.to_string(), conversation_id.to_string()),
            gen.clone(),
        );
        if let Some(old) = old {
            self.retire(&old);
        }
        gen
    }

    /// Take `gen` out of the registry and free its log.
    pub fn remove(&self, gen: &Arc<Gen>) {
        {
            let mut map = self.map();
            let key = (gen.client_id.clone(), gen.conversation_id.clone());
            if map.get(&key).is_some_and(|g| Arc::ptr_eq(g, gen)) {
                map.remove(&key);
            }
        }
        self.retire(gen);
    }

    /// Log `frame`. `slide`: drop the oldest frames once the log holds more
    /// than `max_bytes` (a session is attached); otherwise a full log is
    /// refused (`false`: the generation must stop). Then the global bound.
    fn append(
        &self,
        gen: &Gen,
        after: u64,
        frame: &Bytes,
        slide: bool,
        max_bytes: usize,
        max_total: usize,
    ) -> bool {
        let mut freed = 0;
        {
            let mut log = gen.log();
            if log.gone {
                return true;
            }
            if !slide && log.bytes + frame.len() > max_bytes {
                return false;
            }
            log.frames.push_back(Entry {
                after,
                stamp: self.stamp.fetch_add(1, Ordering::Relaxed),
                frame: frame.clone(),
            });
            log.bytes += frame.len();
            while log.bytes > max_bytes && log.frames.len() > 1 {
                freed += log.pop_front();
            }
        }
        let now = self.total.fetch_add(frame.len() as u64, Ordering::Relaxed) + frame.len() as u64;
        self.metrics.resume_buffered_bytes.set(now as i64);
        self.sub_bytes(freed);
        if now > max_total as u64 {
            self.enforce_total(max_total as u64);
        }
        true
    }

    /// Drop the oldest frames of any generation while more than `max` bytes
    /// are kept.
    fn enforce_total(&self, max: u64) {
        let map = self.map();
        while self.total.load(Ordering::Relaxed) > max {
            let oldest = map
                .values()
                .filter_map(|g| g.log().frames.front().map(|e| (e.stamp, g)))
                .min_by_key(|(s, _)| *s)
                .map(|(_, g)| g.clone());
            let Some(g) = oldest else { break };
            let n = g.log().pop_front();
            self.sub_bytes(n);
        }
    }

    /// Queue a takeover of (`client_id`, `conversation_id`) by `holder`,
    /// replaying after token `last_seq`. The generation task performs it.
    /// A takeover still queued from another session is replaced, and that
    /// session told `resumed_elsewhere`.
    pub fn take_over(
        &self,
        client_id: &str,
        conversation_id: &str,
        last_seq: u64,
        holder: Holder,
    ) -> Result<(), ResumeError> {
        let gen = self
            .map()
            .get(&(client_id.to_string(), conversation_id.to_string()))
            .cloned()
            .ok_or(ResumeError::Unavailable)?;
        if !gen.log().covers(last_seq) {
            return Err(ResumeError::Unavailable);
        }
        let new_id = holder.session_id.clone();
        let replaced = gen
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(Takeover { holder, last_seq });
        gen.signal();
        if gen.log().gone {
            // Retired meanwhile: take the takeover back if `retire` did not
            // already answer it.
            let mut pending = gen.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending
                .as_ref()
                .is_some_and(|t| t.holder.session_id == new_id)
            {
                *pending = None;
                return Err(ResumeError::Unavailable);
            }
            return Ok(());
        }
        if let Some(old) = replaced.filter(|o| o.holder.session_id != new_id) {
            self.metrics.resume_outcome("resumed_elsewhere");
            let _ = old.holder.tx.try_send(Out::Text(
                protocol::error(
                    ErrorCode::ResumedElsewhere,
                    "another session resumed this conversation",
                    Some(conversation_id),
                )
                .into(),
            ));
        }
        Ok(())
    }

    /// `cancel` from a session of `client_id`: the generation of
    /// `conversation_id`, or (`None`) every generation this session holds.
    /// Returns how many were cancelled.
    pub fn cancel(
        &self,
        client_id: &str,
        conversation_id: Option<&str>,
        session_id: &str,
    ) -> usize {
        let map = self.map();
        let hit: Vec<&Arc<Gen>> = match conversation_id {
            Some(c) => map
                .get(&(client_id.to_string(), c.to_string()))
                .into_iter()
                .collect(),
            None => map
                .values()
                .filter(|g| g.client_id == client_id && g.held_by(session_id))
                .collect(),
        };
        for g in &hit {
            g.cancel.cancel();
        }
        hit.len()
    }
}

/// What a resumable generation needs besides its registry entry.
pub struct ResumeParams {
    pub window: Duration,
    pub buffer_bytes: usize,
    pub total_bytes: usize,
    pub write_timeout: Duration,
    /// The server's drain token: detached generations stop when it fires.
    pub draining: CancellationToken,
    pub tasks: TaskTracker,
}

/// Something the generation task must react to besides its upstream.
pub enum Event {
    Takeover(Box<Holder>, u64),
    /// The holder's session ended: the generation is detached.
    HolderGone,
    /// Detached for the whole window (or, once ended, nobody resumed).
    Deadline,
    /// The server is draining and nobody is attached.
    Draining,
    /// A newer generation of the conversation took the registry entry.
    Retired,
}

/// A generation's frame log and delivery (resume on).
pub struct Resumable {
    registry: Arc<ResumeRegistry>,
    gen: Arc<Gen>,
    holder: Option<Holder>,
    /// Successful takeovers so far.
    attaches: u64,
    /// Frame bytes logged since the generation was last detached.
    since_detach: usize,
    deadline: Option<tokio::time::Instant>,
    p: ResumeParams,
}

/// Where a generation sends its frames.
pub enum Output {
    /// Straight into the session's queue (no resume).
    Direct(mpsc::Sender<Out>),
    Resumable(Box<Resumable>),
}

impl Output {
    /// A resumable output for a new generation of (`client_id`,
    /// `conversation_id`), held by `holder`.
    pub fn resumable(
        registry: &Arc<ResumeRegistry>,
        client_id: &str,
        conversation_id: &str,
        cancel: &CancellationToken,
        holder: Holder,
        p: ResumeParams,
    ) -> Self {
        let gen = registry.register(client_id, conversation_id, cancel.clone(), &holder);
        Self::Resumable(Box::new(Resumable {
            registry: registry.clone(),
            gen,
            holder: Some(holder),
            attaches: 0,
            since_detach: 0,
            deadline: None,
            p,
        }))
    }

    /// Send (and, when resumable, log) one frame of the generation; `after`
    /// is the number of tokens sent before it. Waits while the holder's
    /// queue is full. `Err` ends the generation.
    pub async fn send(
        &mut self,
        out: Out,
        after: u64,
        cancel: &CancellationToken,
    ) -> Result<(), Outcome> {
        match self {
            Self::Direct(tx) => {
                // Fast path (every token at saturation): room in the queue,
                // no cancellation waiter registered and dropped per token.
                // The generation checked `cancel` before reading this line
                // (its loop does, every line), so it is not checked again.
                let out = match tx.try_send(out) {
                    Ok(()) => {
                        // `send` took a unit of tokio's cooperative budget
                        // per frame; keep doing so, so that a generation
                        // whose upstream is always ready still yields to the
                        // writer and the session now and then.
                        tokio::task::consume_budget().await;
                        return Ok(());
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return Err(Outcome::SessionGone),
                    Err(mpsc::error::TrySendError::Full(out)) => out,
                };
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => Err(Outcome::Cancelled),
                    r = tx.send(out) => r.map_err(|_| Outcome::SessionGone),
                }
            }
            Self::Resumable(r) => r.send(out, after, cancel).await,
        }
    }

    /// No [`event`](Self::event) can be ready now (a direct output; or a
    /// resumable one attached to a live session with no takeover signalled):
    /// the generation may take an upstream line that is already buffered
    /// without also waiting on `event()`.
    pub fn quiet(&self) -> bool {
        match self {
            Self::Direct(_) => true,
            Self::Resumable(r) => {
                !r.gen.signalled.load(Ordering::Acquire)
                    && r.holder.as_ref().is_some_and(|h| !h.session.is_cancelled())
            }
        }
    }

    /// The generation's final frame (`complete` or `error`): sent unless
    /// the session is gone; when resumable, kept for a resume.
    pub async fn finish(&mut self, frame: Bytes, after: u64, session_closing: bool) {
        match self {
            Self::Direct(tx) => {
                if !session_closing {
                    let _ = tx.send(Out::Text(frame)).await;
                }
            }
            Self::Resumable(r) => {
                let _ = r
                    .send(Out::Text(frame), after, &CancellationToken::new())
                    .await;
            }
        }
    }

    /// An informational frame (`status`) to the session holding the
    /// generation now, not kept for a resume; skipped (false) when that
    /// session's queue is full or nobody holds the generation.
    pub fn try_notice(&self, out: Out) -> bool {
        match self {
            Self::Direct(tx) => tx.try_send(out).is_ok(),
            Self::Resumable(r) => r
                .holder
                .as_ref()
                .is_some_and(|h| h.tx.try_send(out).is_ok()),
        }
    }

    /// The next event (never, for a direct output). Cancel-safe.
    pub async fn event(&self) -> Event {
        match self {
            Self::Direct(_) => std::future::pending().await,
            Self::Resumable(r) => r.event().await,
        }
    }

    /// React to `ev`. `Err` ends the generation (upstream dropped).
    pub async fn handle(&mut self, ev: Event, cancel: &CancellationToken) -> Result<(), Outcome> {
        match self {
            Self::Direct(_) => Ok(()),
            Self::Resumable(r) => r.handle(ev, cancel).await,
        }
    }

    /// After the generation ended: keep its frames for a resume until the
    /// window passes with nobody attached, then free them.
    pub async fn linger(self, cancel: &CancellationToken) {
        if let Self::Resumable(r) = self {
            r.linger(cancel).await
        }
    }
}

/// The payload of a frame the generation sends.
fn payload(out: &Out) -> Option<&Bytes> {
    match out {
        Out::Text(b) | Out::Token(b, _) => Some(b),
        _ => None,
    }
}

fn copy(out: &Out) -> Out {
    match out {
        Out::Text(b) => Out::Text(b.clone()),
        Out::Token(b, t) => Out::Token(b.clone(), *t),
        Out::Pong(b) => Out::Pong(b.clone()),
        Out::CloseRaw(b) => Out::CloseRaw(b.clone()),
        Out::Close(c, r) => Out::Close(*c, r.clone()),
    }
}

impl Resumable {
    fn detach(&mut self) {
        self.holder = None;
        self.since_detach = 0;
        self.gen.set_holder(None);
        self.deadline = Some(tokio::time::Instant::now() + self.p.window);
    }

    /// Queue `frame` to `tx` without holding up the generation for longer
    /// than the write timeout (a notice to a session that may be stuck).
    fn notify(&self, tx: mpsc::Sender<Out>, frame: Vec<u8>) {
        let wait = self.p.write_timeout;
        self.p.tasks.spawn(async move {
            let _ = tokio::time::timeout(wait, tx.send(Out::Text(frame.into()))).await;
        });
    }

    async fn send(
        &mut self,
        out: Out,
        after: u64,
        cancel: &CancellationToken,
    ) -> Result<(), Outcome> {
        if let Some(frame) = payload(&out) {
            // The log always slides; what cancels is a buffer's worth of
            // frames made while nobody is attached (frames older than the
            // detach were sent, and most likely received, already).
            let overflow = self.holder.is_none() && {
                self.since_detach += frame.len();
                self.since_detach > self.p.buffer_bytes && !self.gen.log().gone
            };
            self.registry.append(
                &self.gen,
                after,
                frame,
                true,
                self.p.buffer_bytes,
                self.p.total_bytes,
            );
            if overflow {
                // Nobody attached and the buffer is full: stop upstream now.
                self.registry.metrics.resume_outcome("overflow");
                self.registry.remove(&self.gen);
                return Err(Outcome::Cancelled);
            }
        }
        if cancel.is_cancelled() {
            return Err(Outcome::Cancelled);
        }
        // Fast path: room in the holder's queue and nothing to react to.
        if let Some(h) = &self.holder {
            if !self.gen.signalled.load(Ordering::Acquire) && !h.session.is_cancelled() {
                match h.tx.try_send(copy(&out)) {
                    Ok(()) => return Ok(()),
                    Err(mpsc::error::TrySendError::Full(_)) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => self.detach(),
                }
            }
        }
        loop {
            let Some(h) = &self.holder else {
                return Ok(());
            };
            let ev = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Outcome::Cancelled),
                ev = self.event() => ev,
                r = h.tx.send(copy(&out)) => match r {
                    Ok(()) => return Ok(()),
                    Err(_) => Event::HolderGone,
                },
            };
            let attaches = self.attaches;
            self.handle(ev, cancel).await?;
            if self.attaches != attaches {
                // The replay included this frame.
                return Ok(());
            }
        }
    }

    async fn event(&self) -> Event {
        let detached = self.holder.is_none();
        loop {
            // `notify_one` keeps a permit when nobody waits, so a signal
            // that lands between this check and the select still wakes it.
            let notified = self.gen.wake.notified();
            if self.gen.signalled.swap(false, Ordering::AcqRel) {
                if let Some(t) = self.gen.take_pending() {
                    return Event::Takeover(Box::new(t.holder), t.last_seq);
                }
            }
            // Retired while attached: go on delivering, no longer kept.
            if detached && self.gen.log().gone {
                return Event::Retired;
            }
            let deadline = async {
                match self.deadline {
                    Some(d) if detached => tokio::time::sleep_until(d).await,
                    _ => std::future::pending().await,
                }
            };
            let holder_gone = async {
                match &self.holder {
                    Some(h) => h.session.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = notified => continue,
                _ = holder_gone => return Event::HolderGone,
                _ = self.p.draining.cancelled(), if detached => return Event::Draining,
                _ = deadline => return Event::Deadline,
            }
        }
    }

    async fn handle(&mut self, ev: Event, cancel: &CancellationToken) -> Result<(), Outcome> {
        match ev {
            Event::HolderGone => {
                self.detach();
                Ok(())
            }
            Event::Deadline => {
                self.registry.metrics.resume_outcome("expired");
                self.registry.remove(&self.gen);
                Err(Outcome::Cancelled)
            }
            Event::Draining | Event::Retired => {
                self.registry.remove(&self.gen);
                Err(Outcome::Cancelled)
            }
            Event::Takeover(holder, last_seq) => self.take_over(*holder, last_seq, cancel).await,
        }
    }

    /// Replay the log after token `last_seq` to `new`, which then holds the
    /// generation; the previous holder is told `resumed_elsewhere`.
    async fn take_over(
        &mut self,
        new: Holder,
        last_seq: u64,
        cancel: &CancellationToken,
    ) -> Result<(), Outcome> {
        let conv = self.gen.conversation_id.clone();
        let Some(frames) = self.gen.replay(last_seq) else {
            self.registry.metrics.resume_outcome("unavailable");
            let e = protocol::error(
                ErrorCode::ResumeUnavailable,
                "nothing to resume: last_seq is older than the oldest frame kept",
                Some(&conv),
            );
            self.notify(new.tx, e);
            return Ok(());
        };
        if let Some(old) = self.holder.take() {
            if !old.session.is_cancelled() && old.session_id != new.session_id {
                self.registry.metrics.resume_outcome("resumed_elsewhere");
                let e = protocol::error(
                    ErrorCode::ResumedElsewhere,
                    "another session resumed this conversation",
                    Some(&conv),
                );
                self.notify(old.tx, e);
            }
        }
        self.registry.metrics.resume_outcome("resumed");
        self.attaches += 1;
        self.gen.set_holder(Some(new.session_id.clone()));
        self.deadline = None;
        for frame in frames {
            let sent = tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    self.holder = Some(new);
                    return Err(Outcome::Cancelled);
                }
                _ = new.session.cancelled() => false,
                r = new.tx.send(Out::Text(frame)) => r.is_ok(),
            };
            if !sent {
                self.detach();
                return Ok(());
            }
        }
        self.holder = Some(new);
        Ok(())
    }

    async fn linger(mut self, cancel: &CancellationToken) {
        if self.deadline.is_none() || self.holder.is_some() {
            self.deadline = Some(tokio::time::Instant::now() + self.p.window);
        }
        loop {
            if self.p.draining.is_cancelled() || cancel.is_cancelled() {
                break;
            }
            let ev = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = self.p.draining.cancelled() => break,
                _ = tokio::time::sleep_until(self.deadline.expect("set above")) => break,
                ev = self.event() => ev,
            };
            match ev {
                Event::Takeover(h, last_seq) => {
                    let _ = self.take_over(*h, last_seq, cancel).await;
                    self.deadline = Some(tokio::time::Instant::now() + self.p.window);
                }
                Event::HolderGone => {
                    self.holder = None;
                    self.gen.set_holder(None);
                }
                _ => break,
            }
        }
        self.registry.remove(&self.gen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(id: &str) -> (Holder, mpsc::Receiver<Out>) {
        let (tx, rx) = mpsc::channel(16);
        (
            Holder {
                session_id: id.into(),
                tx,
                session: CancellationToken::new(),
            },
            rx,
        )
    }

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn sliding_log_tells_which_resumes_it_can_serve() {
        let m = Arc::new(Metrics::new());
        let r = ResumeRegistry::new(m.clone());
        let (h, _rx) = holder("s1");
        let g = r.register("c", "conv", CancellationToken::new(), &h);
        for seq in 1..=10u64 {
            assert!(r.append(&g, seq - 1, &frame(100), true, 500, 10_000));
        }
        // 5 frames of 100 bytes fit: tokens 6..=10 (after 5..=9) are kept.
        assert_eq!(r.buffered_bytes(), 500);
        assert_eq!(m.resume_buffered_bytes.get(), 500);
        assert!(g.replay(4).is_none());
        assert_eq!(g.replay(5).unwrap().len(), 5);
        assert_eq!(g.replay(8).unwrap().len(), 2);
        // Detached (no slide): a full log refuses the frame.
        assert!(!r.append(&g, 10, &frame(100), false, 500, 10_000));
        r.remove(&g);
        assert_eq!(r.buffered_bytes(), 0);
        assert!(g.replay(5).is_none());
        let (h2, _rx2) = holder("s2");
        assert_eq!(
            r.take_over("c", "conv", 0, h2),
            Err(ResumeError::Unavailable)
        );
    }

    #[test]
    fn the_global_bound_drops_the_oldest_frames_anywhere() {
        let r = ResumeRegistry::new(Arc::new(Metrics::new()));
        let (h, _rx) = holder("s1");
        let a = r.register("c", "a", CancellationToken::new(), &h);
        let b = r.register("c", "b", CancellationToken::new(), &h);
        for i in 0..3u64 {
            assert!(r.append(&a, i, &frame(100), true, 1000, 400));
        }
        for i in 0..2u64 {
            assert!(r.append(&b, i, &frame(100), true, 1000, 400));
        }
        assert_eq!(r.buffered_bytes(), 400);
        // a's first frame (the oldest) went.
        assert!(a.replay(0).is_none());
        assert_eq!(a.replay(1).unwrap().len(), 2);
        assert_eq!(b.replay(0).unwrap().len(), 2);
    }

    #[test]
    fn a_queued_takeover_replaced_by_another_is_told_resumed_elsewhere() {
        let r = ResumeRegistry::new(Arc::new(Metrics::new()));
        let (h, _rx) = holder("s1");
        let _g = r.register("c", "conv", CancellationToken::new(), &h);
        let (h2, mut rx2) = holder("s2");
        let (h3, _rx3) = holder("s3");
        r.take_over("c", "conv", 0, h2).unwrap();
        r.take_over("c", "conv", 0, h3).unwrap();
        let Ok(Out::Text(b)) = rx2.try_recv() else {
            panic!("no frame")
        };
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["code"], "resumed_elsewhere");
        assert_eq!(v["conversation_id"], "conv");
        // Another client never finds it.
        let (h4, _rx4) = holder("s4");
        assert_eq!(
            r.take_over("other", "conv", 0, h4),
            Err(ResumeError::Unavailable)
        );
    }
}
