//! `GET /ready`: whether the upstreams answer, cached for a few seconds and
//! probed by one request at a time (all upstreams at once), so a flood of
//! `/ready` never floods them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tokio::task::JoinSet;

use crate::upstream::member::Dialect;
use crate::upstream::{Pool, Upstream};

/// How long one probe result is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(3);
/// How long an upstream gets to answer its probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the probe of one upstream found.
#[derive(Debug, Clone)]
pub struct UpstreamProbe {
    pub name: String,
    pub url: String,
    pub api: &'static str,
    /// Ollama's version (when up; OpenAI servers report none).
    pub version: Option<String>,
    /// Why it is considered down; `None` when up.
    pub down: Option<String>,
}

impl UpstreamProbe {
    pub fn is_up(&self) -> bool {
        self.down.is_none()
    }
}

/// Single-flight, cached readiness probe.
#[derive(Default)]
pub struct ReadyProbe {
    last: Mutex<Option<(Instant, Arc<Vec<UpstreamProbe>>)>>,
}

async fn probe_one(u: Arc<Upstream>) -> UpstreamProbe {
    let cfg = u.config();
    let result = match &u.dialect {
        Dialect::Ollama(c) => c.version(PROBE_TIMEOUT).await.map(Some),
        Dialect::OpenAi(c) => c.models(PROBE_TIMEOUT).await.map(|_| None),
    };
    let (version, down) = match result {
        Ok(v) => (v, None),
        Err(e) => (None, Some(e.to_string())),
    };
    UpstreamProbe {
        name: cfg.name,
        url: cfg.url,
        api: cfg.api.as_str(),
        version,
        down,
    }
}

impl ReadyProbe {
    /// The cached result, or a fresh probe of every upstream when the cache
    /// is stale. Callers that arrive during a probe wait for it instead of
    /// sending their own. In the pool's order.
    pub async fn check(&self, pool: &Pool) -> Arc<Vec<UpstreamProbe>> {
        let mut last = self.last.lock().await;
        if let Some((at, p)) = last.as_ref() {
            if at.elapsed() < CACHE_FOR {
                return p.clone();
            }
        }
        let members = pool.members();
        let mut set = JoinSet::new();
        for (i, m) in members.into_iter().enumerate() {
            set.spawn(async move { (i, probe_one(m).await) });
        }
        let mut found = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok(x) = r {
                found.push(x);
            }
        }
        found.sort_by_key(|(i, _)| *i);
        let p: Arc<Vec<UpstreamProbe>> = Arc::new(found.into_iter().map(|(_, p)| p).collect());
        *last = Some((Instant::now(), p.clone()));
        p
    }

    /// Forget the cached result (after an upstream failure was seen).
    pub async fn invalidate(&self) {
        *self.last.lock().await = None;
    }
}
