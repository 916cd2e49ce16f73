//! The pool's background task: every `health_interval` each upstream is
//! probed (down ones only once their `cooldown` passed: half-open), models
//! are discovered every `discovery_interval` (and at once after a 4xx or a
//! reload), and Ollama's `/api/ps` is refreshed for routing. Probes run
//! concurrently, each under [`super::member::PROBE_TIMEOUT`]. Ends with the
//! server's shutdown token.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::member::Upstream;
use super::pool::Pool;

/// Spawn the health and discovery loop of `pool`.
pub fn spawn(pool: Arc<Pool>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // When each upstream (by identity) was last discovered.
        let mut discovered: HashMap<usize, Instant> = HashMap::new();
        loop {
            let routing = pool.routing();
            let members = pool.members();
            discovered.retain(|k, _| members.iter().any(|m| key(m) == *k));
            let mut probes = JoinSet::new();
            for m in members {
                let due_discovery = m.discovers()
                    && (m.rediscover.swap(false, Ordering::Relaxed)
                        || discovered
                            .get(&key(&m))
                            .is_none_or(|t| t.elapsed() >= routing.discovery_interval));
                if due_discovery {
                    discovered.insert(key(&m), Instant::now());
                }
                let probe = m.probe_due(routing.cooldown);
                let pool = pool.clone();
                let threshold = routing.failure_threshold;
                probes.spawn(async move {
                    check(&pool, &m, probe, due_discovery, threshold).await;
                });
            }
            tokio::select! {
                _ = stop.cancelled() => { probes.abort_all(); return; }
                _ = async { while probes.join_next().await.is_some() {} } => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(routing.health_interval) => {}
                _ = pool.changed.notified() => {}
            }
        }
    })
}

fn key(m: &Arc<Upstream>) -> usize {
    Arc::as_ptr(m) as usize
}

async fn check(pool: &Arc<Pool>, m: &Arc<Upstream>, probe: bool, discover: bool, threshold: u32) {
    let name = m.name();
    if probe {
        let changed = match m.probe().await {
            Ok(latency) => {
                let changed = m.record_success(Some(latency));
                pool.metrics.set_up(&name, true);
                changed
            }
            Err(e) => {
                debug!(upstream = %name, error = %e, "health probe failed");
                let changed = m.record_failure(threshold, &e);
                if changed {
                    pool.metrics.set_up(&name, false);
                }
                changed
            }
        };
        if changed {
            pool.health_changed();
        }
    }
    if discover && m.is_up() {
        match m.discover().await {
            Ok(models) => {
                debug!(upstream = %name, models = models.len(), "models discovered");
                pool.health_changed();
            }
            Err(e) => debug!(upstream = %name, error = %e, "model discovery failed"),
        }
    }
    if m.is_ollama() && m.is_up() && !m.implicit() {
        let _ = m.loaded("").await;
    }
}
