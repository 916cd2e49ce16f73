//! `GET /ready`: whether Ollama answers, cached for a few seconds and probed
//! by one request at a time, so a flood of `/ready` never floods Ollama.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::ollama::OllamaClient;

/// How long one probe result is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(3);
/// How long Ollama gets to answer `GET /api/version`.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Outcome of one probe.
#[derive(Debug, Clone)]
pub enum Probe {
    Up { version: String },
    Down { reason: String },
}

/// Single-flight, cached readiness probe.
#[derive(Default)]
pub struct ReadyProbe {
    last: Mutex<Option<(Instant, Probe)>>,
}

impl ReadyProbe {
    /// The cached result, or a fresh probe when the cache is stale. Callers
    /// that arrive during a probe wait for it instead of sending their own.
    pub async fn check(&self, client: &OllamaClient) -> Probe {
        let mut last = self.last.lock().await;
        if let Some((at, p)) = last.as_ref() {
            if at.elapsed() < CACHE_FOR {
                return p.clone();
            }
        }
        let p = match client.version(PROBE_TIMEOUT).await {
            Ok(version) => Probe::Up { version },
            Err(e) => Probe::Down {
                reason: e.to_string(),
            },
        };
        *last = Some((Instant::now(), p.clone()));
        p
    }

    /// Forget the cached result (after an upstream failure was seen).
    pub async fn invalidate(&self) {
        *self.last.lock().await = None;
    }
}
