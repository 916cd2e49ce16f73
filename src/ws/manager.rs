//! The connection manager (the seed's `ConnectionManager`): every open
//! session by id, an index of sessions by client id, per-session counters,
//! the connection limits, and the ways to reach sessions from outside their
//! own task: broadcast a notice, close the sessions of a revoked token,
//! force-close everything at the end of the drain.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::writer::Out;
use crate::metrics::Metrics;

/// Close code and reason a session uses when it is told to close.
pub type CloseReason = (u16, &'static str);

/// What the manager knows of one session; shared with the session's tasks.
pub struct SessionInfo {
    pub id: String,
    pub client_id: String,
    /// The `jti` of the access token the session runs on now (it changes
    /// when the client re-authenticates in band).
    jti: Mutex<String>,
    pub peer: SocketAddr,
    pub connected_at: SystemTime,
    pub opened: Instant,
    /// Milliseconds since `opened` of the last frame received.
    pub last_activity_ms: AtomicU64,
    pub messages: AtomicU64,
    pub tokens: AtomicU64,
    pub errors: AtomicU64,
    /// Cancelled to make the session close (revocation, forced shutdown).
    pub cancel: CancellationToken,
    /// Why `cancel` fired; read by the session when it closes.
    close_reason: Mutex<Option<CloseReason>>,
    /// The session's outgoing queue, for notices. Weak: the manager never
    /// keeps a queue open, so once the session and its generation drop
    /// their senders the writer drains what is queued and ends.
    pub out: mpsc::WeakSender<Out>,
}

impl SessionInfo {
    /// True when the session runs on token `jti`.
    pub fn has_jti(&self, jti: &str) -> bool {
        *self.jti.lock().unwrap_or_else(|p| p.into_inner()) == jti
    }

    /// The session now runs on token `jti` (in-band re-authentication).
    pub fn set_jti(&self, jti: String) {
        *self.jti.lock().unwrap_or_else(|p| p.into_inner()) = jti;
    }

    /// Queue a `system` notice (dropped if the queue is full or gone), then
    /// ask the session to close with `reason`.
    pub fn notify_and_close(&self, notice: &str, reason: CloseReason) {
        if let Some(tx) = self.out.upgrade() {
            let _ = tx.try_send(Out::Text(super::protocol::system(notice).into()));
        }
        self.close(reason);
    }

    pub fn touch(&self) {
        self.last_activity_ms
            .store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Ask the session to close with `reason`.
    pub fn close(&self, reason: CloseReason) {
        let mut r = self.close_reason.lock().unwrap_or_else(|p| p.into_inner());
        r.get_or_insert(reason);
        self.cancel.cancel();
    }

    /// The reason given to [`Self::close`], if any.
    pub fn close_reason(&self) -> Option<CloseReason> {
        *self.close_reason.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why a new session was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("the gateway has {0} sessions open, its limit")]
    Total(usize),
    #[error("this client has {0} sessions open, its limit")]
    PerClient(usize),
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Arc<SessionInfo>>,
    by_client: HashMap<String, HashSet<String>>,
    /// Slots taken by upgrades in progress, so the limit holds under a burst.
    reserved: usize,
    reserved_by_client: HashMap<String, usize>,
}

/// All open sessions.
pub struct SessionManager {
    inner: Mutex<Inner>,
    /// The server's root token, parent of every session's token: when the
    /// drain's grace period is over it is cancelled and every session ends.
    parent: CancellationToken,
}

/// A slot held between the limit check and the end of the session; frees
/// itself on drop.
pub struct Slot {
    manager: Arc<SessionManager>,
    client_id: String,
    session_id: Option<String>,
    metrics: Option<Arc<Metrics>>,
}

impl SessionManager {
    /// Sessions registered here get child tokens of `parent`.
    pub fn new(parent: CancellationToken) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            parent,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take a slot for `client_id` if the limits allow.
    pub fn reserve(
        self: &Arc<Self>,
        client_id: &str,
        max_total: usize,
        max_per_client: Option<usize>,
    ) -> Result<Slot, LimitError> {
        let mut g = self.lock();
        let total = g.sessions.len() + g.reserved;
        if total >= max_total {
            return Err(LimitError::Total(total));
        }
        if let Some(max) = max_per_client {
            let n = g.by_client.get(client_id).map_or(0, HashSet::len)
                + g.reserved_by_client.get(client_id).copied().unwrap_or(0);
            if n >= max {
                return Err(LimitError::PerClient(n));
            }
        }
        g.reserved += 1;
        *g.reserved_by_client
            .entry(client_id.to_string())
            .or_default() += 1;
        Ok(Slot {
            manager: self.clone(),
            client_id: client_id.to_string(),
            session_id: None,
            metrics: None,
        })
    }

    /// Turn a reserved slot into a registered session.
    #[allow(clippy::too_many_arguments)]
    pub fn register(
        &self,
        slot: &mut Slot,
        metrics: Arc<Metrics>,
        id: String,
        jti: String,
        peer: SocketAddr,
        out: mpsc::WeakSender<Out>,
    ) -> Arc<SessionInfo> {
        let info = Arc::new(SessionInfo {
            id: id.clone(),
            client_id: slot.client_id.clone(),
            jti: Mutex::new(jti),
            peer,
            connected_at: SystemTime::now(),
            opened: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            cancel: self.parent.child_token(),
            close_reason: Mutex::new(None),
            out,
        });
        let mut g = self.lock();
        g.reserved -= 1;
        unreserve_client(&mut g, &slot.client_id);
        g.sessions.insert(id.clone(), info.clone());
        g.by_client
            .entry(slot.client_id.clone())
            .or_default()
            .insert(id.clone());
        metrics.sessions_active.set(g.sessions.len() as i64);
        metrics.unique_clients.set(g.by_client.len() as i64);
        metrics.sessions_total.inc();
        drop(g);
        slot.session_id = Some(id);
        slot.metrics = Some(metrics);
        info
    }

    fn release(&self, slot: &Slot) {
        let mut g = self.lock();
        match &slot.session_id {
            None => {
                g.reserved -= 1;
                unreserve_client(&mut g, &slot.client_id);
            }
            Some(id) => {
                g.sessions.remove(id);
                if let Some(set) = g.by_client.get_mut(&slot.client_id) {
                    set.remove(id);
                    if set.is_empty() {
                        g.by_client.remove(&slot.client_id);
                    }
                }
            }
        }
        if let Some(m) = &slot.metrics {
            m.sessions_active.set(g.sessions.len() as i64);
            m.unique_clients.set(g.by_client.len() as i64);
        }
    }

    /// Number of open sessions.
    pub fn active(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Number of distinct clients with an open session.
    pub fn unique_clients(&self) -> usize {
        self.lock().by_client.len()
    }

    /// Every open session (a snapshot).
    pub fn snapshot(&self) -> Vec<Arc<SessionInfo>> {
        self.lock().sessions.values().cloned().collect()
    }

    /// Queue `frame` to every session (or to those of `client_id`); returns
    /// how many accepted it. A session whose queue is full misses the notice
    /// rather than blocking the sender.
    pub fn broadcast(&self, frame: Bytes, client_id: Option<&str>) -> usize {
        self.snapshot()
            .iter()
            .filter(|s| client_id.is_none_or(|c| c == s.client_id))
            .filter(|s| {
                s.out
                    .upgrade()
                    .is_some_and(|tx| tx.try_send(Out::Text(frame.clone())).is_ok())
            })
            .count()
    }

    /// Close every session that authenticated with token `jti` with 1008
    /// "token revoked". Returns how many were told to close.
    pub fn revoke_jti(&self, jti: &str) -> usize {
        let hit: Vec<_> = self
            .snapshot()
            .into_iter()
            .filter(|s| s.has_jti(jti))
            .collect();
        for s in &hit {
            s.notify_and_close(
                "the token of this session was revoked: closing",
                (1008, "token revoked"),
            );
        }
        hit.len()
    }

    /// Close every session of `client_id` with 1008 and `reason` (a reload
    /// removed the client or changed its secret or permissions), after a
    /// `system` notice saying so. Returns how many were told to close.
    pub fn close_client(&self, client_id: &str, reason: &'static str) -> usize {
        let hit: Vec<_> = self
            .snapshot()
            .into_iter()
            .filter(|s| s.client_id == client_id)
            .collect();
        let notice = format!("{reason}: closing this session");
        for s in &hit {
            s.notify_and_close(&notice, (1008, reason));
        }
        hit.len()
    }
}

impl crate::auth::LiveSessions for SessionManager {
    fn revoke_jti(&self, jti: &str) -> usize {
        SessionManager::revoke_jti(self, jti)
    }

    fn count_jti(&self, jti: &str) -> usize {
        self.snapshot().iter().filter(|s| s.has_jti(jti)).count()
    }
}

fn unreserve_client(g: &mut Inner, client_id: &str) {
    if let Some(n) = g.reserved_by_client.get_mut(client_id) {
        *n -= 1;
        if *n == 0 {
            g.reserved_by_client.remove(client_id);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.manager.release(self);
    }
}

/// One row of `GET /ws/sessions`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionRow {
    pub session_id: String,
    pub client_id: String,
    pub ip_address: String,
    pub connected_at: String,
    pub last_activity: String,
    pub message_count: u64,
    pub token_count: u64,
    pub error_count: u64,
}

impl SessionRow {
    pub fn from_info(s: &SessionInfo) -> Self {
        let fmt = |t: SystemTime| {
            let mut v = Vec::with_capacity(32);
            crate::response::write_rfc3339(&mut v, time::OffsetDateTime::from(t));
            String::from_utf8(v).unwrap_or_default()
        };
        let last = s.connected_at
            + std::time::Duration::from_millis(s.last_activity_ms.load(Ordering::Relaxed));
        Self {
            session_id: s.id.clone(),
            client_id: s.client_id.clone(),
            ip_address: s.peer.ip().to_string(),
            connected_at: fmt(s.connected_at),
            last_activity: fmt(last),
            message_count: s.messages.load(Ordering::Relaxed),
            token_count: s.tokens.load(Ordering::Relaxed),
            error_count: s.errors.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[test]
    fn limits_count_reservations_and_sessions() {
        let m = Arc::new(SessionManager::new(CancellationToken::new()));
        let metrics = Arc::new(Metrics::new());
        let a = m.reserve("c1", 2, Some(1)).unwrap();
        assert_eq!(
            m.reserve("c1", 2, Some(1)).err(),
            Some(LimitError::PerClient(1))
        );
        let mut b = m.reserve("c2", 2, Some(1)).unwrap();
        assert_eq!(m.reserve("c3", 2, None).err(), Some(LimitError::Total(2)));
        let (tx, _rx) = mpsc::channel(4);
        let info = m.register(
            &mut b,
            metrics.clone(),
            "s2".into(),
            "j2".into(),
            peer(),
            tx.downgrade(),
        );
        assert_eq!(m.active(), 1);
        assert_eq!(metrics.sessions_active.get(), 1);
        drop(a);
        assert!(m.reserve("c3", 2, None).is_ok());
        assert_eq!(m.revoke_jti("j2"), 1);
        assert!(info.cancel.is_cancelled());
        assert_eq!(info.close_reason(), Some((1008, "token revoked")));
        drop(b);
        assert_eq!(m.active(), 0);
        assert_eq!(metrics.sessions_active.get(), 0);
    }
}
