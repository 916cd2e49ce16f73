//! A session's chat queue: at most one generation runs; further chats wait
//! here (up to `message_queue_size`) and a `cancel` can remove them or stop
//! the running one.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::generation::Job;

struct Running {
    cancel: CancellationToken,
    conversation_id: Option<String>,
}

/// A waiting chat and the position it was last told (0: none told).
struct Queued {
    job: Job,
    told: usize,
}

#[derive(Default)]
struct Inner {
    jobs: VecDeque<Queued>,
    running: Option<Running>,
    /// Set at drain: no new chats.
    closed: bool,
}

/// Why a chat was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    Full,
    Closed,
}

#[derive(Default)]
pub struct JobQueue {
    inner: Mutex<Inner>,
    notify: Notify,
}

impl JobQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue a chat unless `capacity` chats already wait. Returns how many
    /// chats of the session are ahead of it (the running one included).
    pub fn push(&self, job: Job, capacity: usize) -> Result<usize, PushError> {
        let mut g = self.lock();
        if g.closed {
            return Err(PushError::Closed);
        }
        if g.jobs.len() >= capacity {
            return Err(PushError::Full);
        }
        let ahead = g.jobs.len() + usize::from(g.running.is_some());
        g.jobs.push_back(Queued { job, told: ahead });
        drop(g);
        self.notify.notify_one();
        Ok(ahead)
    }

    /// The waiting chats whose place changed since they were last told:
    /// conversation id and how many chats are ahead now (for `status`
    /// frames after the queue moved).
    pub fn moved(&self) -> Vec<(Option<String>, usize)> {
        let mut g = self.lock();
        let running = usize::from(g.running.is_some());
        let mut out = Vec::new();
        for (i, q) in g.jobs.iter_mut().enumerate() {
            let ahead = running + i;
            if ahead != q.told {
                q.told = ahead;
                out.push((q.job.chat.conversation_id.clone(), ahead));
            }
        }
        out
    }

    /// Take the next chat and mark it running with `cancel`; waits until one
    /// is queued. `None` once the queue is closed and empty. The chat's
    /// token is a child of `cancel_parent` (the session's), or of
    /// `detached_parent` for a chat with a `conversation_id` when given
    /// (resume: the generation may outlive the session).
    pub async fn next(
        &self,
        cancel_parent: &CancellationToken,
        detached_parent: Option<&CancellationToken>,
    ) -> Option<(Job, CancellationToken)> {
        loop {
            {
                let mut g = self.lock();
                if let Some(Queued { job, .. }) = g.jobs.pop_front() {
                    let cancel = match detached_parent {
                        Some(p) if job.chat.conversation_id.is_some() => p.child_token(),
                        _ => cancel_parent.child_token(),
                    };
                    g.running = Some(Running {
                        cancel: cancel.clone(),
                        conversation_id: job.chat.conversation_id.clone(),
                    });
                    return Some((job, cancel));
                }
                if g.closed {
                    return None;
                }
            }
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = cancel_parent.cancelled() => return None,
            }
        }
    }

    /// The running generation ended. Returns true when the queue is closed
    /// and nothing is left to do.
    pub fn finished(&self) -> bool {
        let mut g = self.lock();
        g.running = None;
        g.closed && g.jobs.is_empty()
    }

    /// Cancel the running generation and remove queued chats — all of them,
    /// or only those of `conversation_id`. Returns the removed jobs (each
    /// still owes its client one `complete`) and whether a running one was
    /// cancelled.
    pub fn cancel(&self, conversation_id: Option<&str>) -> (Vec<Job>, bool) {
        let mut g = self.lock();
        let matches =
            |c: &Option<String>| conversation_id.is_none() || c.as_deref() == conversation_id;
        let mut removed = Vec::new();
        let mut kept = VecDeque::with_capacity(g.jobs.len());
        for q in g.jobs.drain(..) {
            if matches(&q.job.chat.conversation_id) {
                removed.push(q.job);
            } else {
                kept.push_back(q);
            }
        }
        g.jobs = kept;
        let mut cancelled = false;
        if let Some(r) = &g.running {
            if matches(&r.conversation_id) {
                r.cancel.cancel();
                cancelled = true;
            }
        }
        (removed, cancelled)
    }

    /// Refuse new chats and hand back the queued ones (drain). Returns the
    /// removed jobs and whether a generation is still running.
    pub fn close(&self) -> (Vec<Job>, bool) {
        let mut g = self.lock();
        g.closed = true;
        let removed = g.jobs.drain(..).map(|q| q.job).collect();
        let running = g.running.is_some();
        drop(g);
        self.notify.notify_one();
        (removed, running)
    }
}
