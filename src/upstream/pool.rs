//! [`Pool`]: the upstreams, the slots they offer (`max_concurrent` each)
//! and the queue of chats waiting for one.
//!
//! Picking: among upstreams that are up, serve the model and have a free
//! slot, prefer one whose `/api/ps` shows the model loaded (no model load),
//! then the lowest `active / max_concurrent`, then the one that got the
//! fewest chats per unit of `weight` (weighted round robin among equally
//! free ones). All full: the chat waits in a FIFO (at most `queue_cap`
//! chats; more are refused as busy) and a freed slot is handed straight to
//! the first waiter it suits, so a slot is never taken twice.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::member::{lock, Upstream, UpstreamStatus};
use super::metrics::UpstreamMetrics;
use crate::config::{Config, OllamaConfig, RoutingConfig, UpstreamConfig};
use crate::metrics::Metrics;

/// Why no slot was handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcquireError {
    /// No upstream that is up serves the model.
    #[error("no upstream that is up serves model {0:?}")]
    Unavailable(String),
    /// Every slot is taken and the wait queue is full.
    #[error("all upstreams are busy and {0} chats already wait")]
    Busy(usize),
    #[error("cancelled")]
    Cancelled,
}

/// What a waiting chat is told (turned into `status` frames above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// `position` chats are ahead of it in the pool's queue.
    Queued { position: usize },
    /// The chosen Ollama upstream does not have the model loaded.
    LoadingModel,
}

struct Waiter {
    id: u64,
    model: String,
    exclude: Vec<String>,
    tx: oneshot::Sender<Result<Lease, AcquireError>>,
    position: watch::Sender<usize>,
}

struct Inner {
    members: Vec<Arc<Upstream>>,
    waiters: VecDeque<Waiter>,
    next_id: u64,
    queue_cap: usize,
    routing: RoutingConfig,
    ollama: OllamaConfig,
}

/// All upstreams of one server. Built from the config, changed on reload.
pub struct Pool {
    inner: Mutex<Inner>,
    pub(super) metrics: UpstreamMetrics,
    pub(super) global: Arc<Metrics>,
    /// Woken when the member list changed (the health task probes new ones).
    pub(super) changed: tokio::sync::Notify,
}

/// A slot on one upstream, held for the length of one generation; dropping
/// it frees the slot (and hands it to the next waiter).
pub struct Lease {
    pool: Arc<Pool>,
    upstream: Arc<Upstream>,
    name: Arc<str>,
    armed: bool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("upstream", &self.name)
            .finish()
    }
}

impl Lease {
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// The upstream's name (for logs, metrics and the `complete` frame).
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Count the generation's end: `outcome` is `ok`, `error`, `cancelled`
    /// (or `failover`), `tokens` the tokens it streamed.
    pub fn finish(&self, outcome: &'static str, tokens: u64) {
        self.pool.metrics.request(&self.name, outcome);
        self.pool.metrics.tokens(&self.name, tokens);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.armed {
            self.pool.release(&self.upstream);
        }
    }
}

impl Pool {
    /// A pool of `cfg`'s upstreams; `queue_cap` chats may wait for a slot.
    pub fn new(cfg: &Config, queue_cap: usize, global: Arc<Metrics>) -> Arc<Self> {
        let metrics = UpstreamMetrics::register(&global);
        let members: Vec<Arc<Upstream>> = cfg
            .upstreams
            .iter()
            .map(|u| Arc::new(Upstream::new(u.clone(), &cfg.ollama)))
            .collect();
        for m in &members {
            metrics.admit(&m.name());
        }
        Arc::new(Self {
            inner: Mutex::new(Inner {
                members,
                waiters: VecDeque::new(),
                next_id: 0,
                queue_cap,
                routing: cfg.routing.clone(),
                ollama: cfg.ollama.clone(),
            }),
            metrics,
            global,
            changed: tokio::sync::Notify::new(),
        })
    }

    pub fn routing(&self) -> RoutingConfig {
        lock(&self.inner).routing.clone()
    }

    /// The upstreams now.
    pub fn members(&self) -> Vec<Arc<Upstream>> {
        lock(&self.inner).members.clone()
    }

    /// A snapshot of every upstream.
    pub fn status(&self) -> Vec<UpstreamStatus> {
        self.members().iter().map(|m| m.status()).collect()
    }

    /// Whether any upstream is up.
    pub fn any_up(&self) -> bool {
        self.members().iter().any(|m| m.is_up())
    }

    /// The models that at least one up upstream serves (each once, in
    /// `allowed` order); upstreams not yet discovered serve every one.
    pub fn served(&self, allowed: &[String]) -> Vec<String> {
        let members = self.members();
        allowed
            .iter()
            .filter(|m| members.iter().any(|u| u.is_up() && u.serves(m)))
            .cloned()
            .collect()
    }

    /// Whether an up upstream not in `exclude` serves `model`.
    pub fn has_candidate(&self, model: &str, exclude: &[String]) -> bool {
        let g = lock(&self.inner);
        let found = candidates(&g.members, model, exclude).next().is_some();
        found
    }

    /// Apply a reloaded configuration: new upstreams are added, removed ones
    /// dropped (their running generations keep their `Arc` and finish),
    /// changed ones replaced (a new URL, dialect or key: the new instance
    /// shares the old one's slot count, so `max_concurrent` holds across the
    /// reload) or updated in place (max_concurrent, weight, models).
    pub fn reconfigure(self: &Arc<Self>, cfg: &Config, queue_cap: usize) {
        let mut g = lock(&self.inner);
        let mut next = Vec::with_capacity(cfg.upstreams.len());
        for u in &cfg.upstreams {
            let old = g.members.iter().find(|m| m.name() == u.name);
            let keep = old
                .filter(|m| same_endpoint(&m.config(), u) && same_client(&g.ollama, &cfg.ollama));
            match keep {
                Some(m) => {
                    m.set_config(u.clone());
                    next.push(m.clone());
                }
                None => {
                    let m = match old {
                        // Same name, another endpoint: the running streams'
                        // slots stay counted (ADR 0022).
                        Some(old) => Upstream::replacing(u.clone(), &cfg.ollama, old),
                        None => {
                            self.metrics.admit(&u.name);
                            Upstream::new(u.clone(), &cfg.ollama)
                        }
                    };
                    next.push(Arc::new(m));
                }
            }
        }
        for old in &g.members {
            let name = old.name();
            if !cfg.upstreams.iter().any(|u| u.name == name) {
                self.metrics.forget(&name);
            }
        }
        g.members = next;
        g.routing = cfg.routing.clone();
        g.ollama = cfg.ollama.clone();
        g.queue_cap = queue_cap;
        self.dispatch(&mut g);
        drop(g);
        self.changed.notify_one();
    }

    /// A slot for `model` on an upstream not in `exclude`; waits in the
    /// queue when all are full, reporting its position through `on_wait`
    /// (at once and whenever it changes).
    pub async fn acquire(
        self: &Arc<Self>,
        model: &str,
        exclude: &[String],
        cancel: &CancellationToken,
        on_wait: &mut (dyn FnMut(Wait) + Send),
    ) -> Result<Lease, AcquireError> {
        let (mut rx, mut pos_rx, id) = {
            let mut g = lock(&self.inner);
            if candidates(&g.members, model, exclude).next().is_none() {
                return Err(AcquireError::Unavailable(model.to_string()));
            }
            if let Some(u) = pick(&g.members, model, exclude) {
                return Ok(self.lease(u));
            }
            if g.waiters.len() >= g.queue_cap {
                return Err(AcquireError::Busy(g.queue_cap));
            }
            let (tx, rx) = oneshot::channel();
            let position = g.waiters.len();
            let (pos_tx, pos_rx) = watch::channel(position);
            let id = g.next_id;
            g.next_id += 1;
            g.waiters.push_back(Waiter {
                id,
                model: model.to_string(),
                exclude: exclude.to_vec(),
                tx,
                position: pos_tx,
            });
            (rx, pos_rx, id)
        };
        on_wait(Wait::Queued {
            position: *pos_rx.borrow_and_update(),
        });
        loop {
            tokio::select! {
                biased;
                r = &mut rx => {
                    return r.unwrap_or(Err(AcquireError::Cancelled));
                }
                _ = cancel.cancelled() => {
                    let mut g = lock(&self.inner);
                    g.waiters.retain(|w| w.id != id);
                    self.update_positions(&g);
                    drop(g);
                    // A slot handed over in the meantime is freed by the
                    // lease's drop.
                    drop(rx);
                    return Err(AcquireError::Cancelled);
                }
                changed = pos_rx.changed() => {
                    if changed.is_ok() {
                        on_wait(Wait::Queued { position: *pos_rx.borrow_and_update() });
                    } else {
                        // The waiter was removed: its answer is in `rx`.
                        return (&mut rx).await.unwrap_or(Err(AcquireError::Cancelled));
                    }
                }
            }
        }
    }

    /// Take a slot on `u` (the caller holds the lock).
    fn lease(self: &Arc<Self>, u: Arc<Upstream>) -> Lease {
        let n = u.active.fetch_add(1, Ordering::Relaxed) + 1;
        u.picks.fetch_add(1, Ordering::Relaxed);
        let name: Arc<str> = u.name().into();
        self.metrics.set_active(&name, n);
        Lease {
            pool: self.clone(),
            upstream: u,
            name,
            armed: true,
        }
    }

    fn release(self: &Arc<Self>, u: &Arc<Upstream>) {
        let mut g = lock(&self.inner);
        let n = u.active.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        self.metrics.set_active(&u.name(), n);
        self.dispatch(&mut g);
    }

    /// Health changed (an upstream went up or down): hand out slots, and
    /// tell waiters whose model nobody serves any more.
    pub fn health_changed(self: &Arc<Self>) {
        let mut g = lock(&self.inner);
        self.dispatch(&mut g);
    }

    /// Hand free slots to waiters in order; refuse those nobody can serve.
    fn dispatch(self: &Arc<Self>, g: &mut Inner) {
        let mut i = 0;
        while i < g.waiters.len() {
            let w = &g.waiters[i];
            let answer = if candidates(&g.members, &w.model, &w.exclude)
                .next()
                .is_none()
            {
                Some(Err(AcquireError::Unavailable(w.model.clone())))
            } else {
                pick(&g.members, &w.model, &w.exclude).map(|u| Ok(self.lease(u)))
            };
            match answer {
                None => i += 1,
                Some(a) => {
                    let w = g.waiters.remove(i).expect("index checked");
                    if let Err(Ok(mut lease)) = w.tx.send(a) {
                        // The waiter is gone: give the slot back without
                        // re-entering the lock.
                        lease.armed = false;
                        let u = lease.upstream.clone();
                        let n = u.active.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
                        self.metrics.set_active(&u.name(), n);
                        i = 0;
                    }
                }
            }
        }
        self.update_positions(g);
    }

    fn update_positions(&self, g: &Inner) {
        for (i, w) in g.waiters.iter().enumerate() {
            w.position.send_if_modified(|p| {
                let changed = *p != i;
                *p = i;
                changed
            });
        }
    }
}

/// Two configs reach the same server the same way.
fn same_endpoint(a: &UpstreamConfig, b: &UpstreamConfig) -> bool {
    a.url == b.url && a.api == b.api && a.api_key == b.api_key && a.ca_certs == b.ca_certs
}

/// Two `[ollama]` tables build the same HTTP clients.
fn same_client(a: &OllamaConfig, b: &OllamaConfig) -> bool {
    a.connect_timeout == b.connect_timeout
        && a.pool_max_connections == b.pool_max_connections
        && a.pool_spare_connections == b.pool_spare_connections
}

fn candidates<'a>(
    members: &'a [Arc<Upstream>],
    model: &'a str,
    exclude: &'a [String],
) -> impl Iterator<Item = &'a Arc<Upstream>> + 'a {
    members
        .iter()
        .filter(move |u| u.is_up() && u.serves(model) && !exclude.contains(&u.name()))
}

/// The best upstream with a free slot, if any.
fn pick(members: &[Arc<Upstream>], model: &str, exclude: &[String]) -> Option<Arc<Upstream>> {
    candidates(members, model, exclude)
        .filter(|u| u.active() < u.max_concurrent())
        .min_by(|a, b| {
            let key = |u: &Upstream| {
                let loaded = u.loaded_cached(model) == Some(true);
                let load = u.active() as f64 / u.max_concurrent() as f64;
                let share = u.picks.load(Ordering::Relaxed) as f64 / f64::from(u.weight());
                (!loaded, load, share)
            };
            let (ka, kb) = (key(a), key(b));
            ka.0.cmp(&kb.0)
                .then(ka.1.total_cmp(&kb.1))
                .then(ka.2.total_cmp(&kb.2))
        })
        .cloned()
}
