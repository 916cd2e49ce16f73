//! [`open`]: a chat's request sent to the best upstream for its model, with
//! failover before the first token.
//!
//! A refused connection, a timeout or a 5xx/429 from the chosen upstream
//! counts as a failure of that upstream and the request goes at once to the
//! next upstream that serves the model; the client sees nothing of it. The
//! backoff retries of `[ollama] retries` apply only when no other upstream
//! serves the model. A 4xx is returned as is (no failover) and makes the
//! upstream discover its models again. Nothing here runs after the first
//! token: a stream that fails later is the caller's error, never a replay.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::pool::{AcquireError, Lease, Pool, Wait};
use super::stream::UpstreamStream;
use crate::ollama::{ChatRequest, OllamaError, RetryPolicy};

/// An answer being streamed, and the slot it holds.
#[derive(Debug)]
pub struct Opened {
    pub stream: UpstreamStream,
    pub lease: Lease,
}

/// Why no answer could be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Acquire(#[from] AcquireError),
    /// The last upstream tried failed (after failover and retries).
    #[error("{error}")]
    Upstream {
        /// The upstream's name.
        upstream: String,
        error: OllamaError,
        /// Upstreams tried.
        tried: usize,
    },
}

/// Whether a failure before the first token sends the chat elsewhere: no
/// connection, a 5xx/429, no first token in time, or a stream cut before it.
fn fails_over(e: &OllamaError) -> bool {
    e.retryable() || matches!(e, OllamaError::Timeout { .. } | OllamaError::Stream(_))
}

/// Send `req` to the pool's best upstream for its model, failing over
/// before the first token. `on_wait` hears of queue positions and of a
/// model that has to be loaded first.
pub async fn open(
    pool: &Arc<Pool>,
    req: &ChatRequest,
    policy: &RetryPolicy,
    cancel: &CancellationToken,
    on_wait: &mut (dyn FnMut(Wait) + Send),
) -> Result<Opened, OpenError> {
    let threshold = pool.routing().failure_threshold;
    let mut exclude: Vec<String> = Vec::new();
    let mut retry = 0u32;
    let mut told_loading = false;
    let mut last: Option<(String, OllamaError)> = None;
    loop {
        let lease = match pool.acquire(&req.model, &exclude, cancel, on_wait).await {
            Ok(l) => l,
            Err(AcquireError::Unavailable(m)) => {
                return Err(match last {
                    // Everything that serves the model failed just now.
                    Some((upstream, error)) => OpenError::Upstream {
                        upstream,
                        error,
                        tried: exclude.len().max(1),
                    },
                    None => OpenError::Acquire(AcquireError::Unavailable(m)),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let up = lease.upstream().clone();
        if !told_loading && up.loaded(&req.model).await == Some(false) {
            told_loading = true;
            on_wait(Wait::LoadingModel);
        }
        match up.chat(req, policy, cancel, &pool.global).await {
            Ok(stream) => {
                if up.record_success(None) {
                    pool.metrics.set_up(lease.name(), true);
                    pool.health_changed();
                }
                return Ok(Opened { stream, lease });
            }
            Err(OllamaError::Cancelled) => {
                lease.finish("cancelled", 0);
                return Err(AcquireError::Cancelled.into());
            }
            Err(e) if fails_over(&e) => {
                let name = lease.name().to_string();
                if up.record_failure(threshold, &e) {
                    pool.metrics.set_up(&name, false);
                }
                let mut tried = exclude.clone();
                tried.push(name.clone());
                if pool.has_candidate(&req.model, &tried) {
                    lease.finish("failover", 0);
                    info!(upstream = %name, error = %e, "upstream failed before the first token: failing over");
                    drop(lease);
                    exclude = tried;
                    last = Some((name, e));
                    continue;
                }
                lease.finish("error", 0);
                drop(lease);
                // Nothing else serves the model: the backoff retries.
                if exclude.is_empty() && retry < policy.retries {
                    let delay = policy.backoff(retry);
                    retry += 1;
                    pool.global.upstream_retries.inc();
                    info!(upstream = %name, retry, of = policy.retries, delay_ms = delay.as_millis() as u64, error = %e, "upstream request failed; retrying");
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => return Err(AcquireError::Cancelled.into()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    last = Some((name, e));
                    continue;
                }
                warn!(upstream = %name, error = %e, kind = e.kind(), "upstream request failed");
                exclude.push(name.clone());
                return Err(OpenError::Upstream {
                    upstream: name,
                    error: e,
                    tried: exclude.len(),
                });
            }
            Err(e) => {
                let name = lease.name().to_string();
                lease.finish("error", 0);
                if matches!(
                    e,
                    OllamaError::Status {
                        status: 400..=499,
                        ..
                    }
                ) {
                    up.rediscover
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    pool.changed.notify_one();
                }
                warn!(upstream = %name, error = %e, kind = e.kind(), "upstream refused the chat");
                return Err(OpenError::Upstream {
                    upstream: name,
                    error: e,
                    tried: exclude.len() + 1,
                });
            }
        }
    }
}
