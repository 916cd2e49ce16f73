//! [`Upstream`]: one backend of the pool — its client (either dialect),
//! the generations running on it, its health (circuit breaker) and the
//! models it serves (static or discovered) or has loaded (Ollama `/api/ps`).
//!
//! Health: `failure_threshold` consecutive failures (probes or real
//! requests) mark it down; a down upstream gets no traffic and is probed
//! again only after `cooldown` (half-open), and that probe decides. Each
//! state change is logged once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::{info, warn};

use super::openai::OpenAiClient;
use super::stream::UpstreamStream;
use crate::config::{OllamaConfig, UpstreamApi, UpstreamConfig};
use crate::ollama::{ChatRequest, Connector, OllamaClient, OllamaError, RetryPolicy};

/// How long one health probe or discovery request may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an `/api/ps` answer is reused.
pub const PS_CACHE_FOR: Duration = Duration::from_millis(1500);
/// How long `/api/ps` may take before the answer is taken as unknown.
pub const PS_TIMEOUT: Duration = Duration::from_secs(1);

/// The dialect client.
#[derive(Clone)]
pub enum Dialect {
    Ollama(OllamaClient),
    OpenAi(OpenAiClient),
}

/// Circuit-breaker state.
#[derive(Debug, Clone)]
struct Health {
    up: bool,
    /// Consecutive failures.
    failures: u32,
    /// When it was marked down, or last failed a half-open probe.
    down_since: Option<Instant>,
    last_error: Option<String>,
    /// Round trip of the last successful probe.
    latency: Option<Duration>,
}

/// One backend of the pool.
pub struct Upstream {
    /// The settings; routing fields (max_concurrent, weight, models) may
    /// change on reload without a new instance.
    cfg: Mutex<UpstreamConfig>,
    pub dialect: Dialect,
    /// Generations holding a slot now (changed under the pool's lock).
    /// Shared with the instance this one replaced on a reload (same name,
    /// new URL, dialect or key): the streams still running on the old
    /// instance hold slots of the same `max_concurrent` (ADR 0022).
    pub(super) active: Arc<AtomicUsize>,
    /// Slots handed out, for weighted tie-breaking.
    pub(super) picks: AtomicUsize,
    health: Mutex<Health>,
    /// Models from the last discovery; `None`: not discovered yet.
    discovered: Mutex<Option<Vec<String>>>,
    /// Set by a 4xx on a chat: discover again at the next tick.
    pub(super) rediscover: std::sync::atomic::AtomicBool,
    /// `/api/ps`: when and which models were loaded.
    loaded: tokio::sync::Mutex<Option<(Instant, Vec<String>)>>,
    /// The last `/api/ps` answer, readable without waiting (routing).
    loaded_now: Mutex<Option<Vec<String>>>,
}

/// A snapshot for `/ready`, metrics and `tars upstreams`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct UpstreamStatus {
    pub name: String,
    pub url: String,
    pub api: &'static str,
    pub up: bool,
    /// Models it serves (static list or last discovery); empty when not known yet.
    pub models: Vec<String>,
    pub active: usize,
    pub max_concurrent: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Upstream {
    pub fn new(cfg: UpstreamConfig, ollama: &OllamaConfig) -> Self {
        // One connector for every connection to this upstream: chats,
        // probes, discovery (ADR 0023).
        let connector = Connector::new(ollama.connect_timeout, cfg.ca_certs.as_deref());
        let dialect = match cfg.api {
            UpstreamApi::Ollama => {
                Dialect::Ollama(OllamaClient::with_connector(ollama, &cfg.url, connector))
            }
            UpstreamApi::OpenAi => Dialect::OpenAi(OpenAiClient::new(
                &cfg.url,
                cfg.api_key.clone(),
                connector,
                ollama.pool_max_connections,
                ollama.pool_spare_connections,
            )),
        };
        Self {
            cfg: Mutex::new(cfg),
            dialect,
            active: Arc::new(AtomicUsize::new(0)),
            picks: AtomicUsize::new(0),
            health: Mutex::new(Health {
                up: true,
                failures: 0,
                down_since: None,
                last_error: None,
                latency: None,
            }),
            discovered: Mutex::new(None),
            rediscover: std::sync::atomic::AtomicBool::new(false),
            loaded: tokio::sync::Mutex::new(None),
            loaded_now: Mutex::new(None),
        }
    }

    /// A new instance for `cfg` that replaces `old` (same name, another
    /// endpoint): the slot count is carried over, so the generations still
    /// running on `old` keep counting against `max_concurrent`.
    pub fn replacing(cfg: UpstreamConfig, ollama: &OllamaConfig, old: &Upstream) -> Self {
        let mut u = Self::new(cfg, ollama);
        u.active = old.active.clone();
        u.picks = AtomicUsize::new(old.picks.load(Ordering::Relaxed));
        u
    }

    pub fn config(&self) -> UpstreamConfig {
        lock(&self.cfg).clone()
    }

    pub(super) fn set_config(&self, cfg: UpstreamConfig) {
        *lock(&self.cfg) = cfg;
    }

    pub fn name(&self) -> String {
        lock(&self.cfg).name.clone()
    }

    pub fn max_concurrent(&self) -> usize {
        lock(&self.cfg).max_concurrent
    }

    pub fn weight(&self) -> u32 {
        lock(&self.cfg).weight
    }

    pub fn is_ollama(&self) -> bool {
        matches!(self.dialect, Dialect::Ollama(_))
    }

    pub fn is_up(&self) -> bool {
        lock(&self.health).up
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Whether it serves `model`: its static list, else the last discovery;
    /// not discovered yet counts as yes (a 4xx then triggers a discovery).
    pub fn serves(&self, model: &str) -> bool {
        if let Some(m) = &lock(&self.cfg).models {
            return m.iter().any(|x| x == model);
        }
        match &*lock(&self.discovered) {
            Some(m) => m.iter().any(|x| x == model),
            None => true,
        }
    }

    /// The models it serves as far as known.
    pub fn models(&self) -> Vec<String> {
        if let Some(m) = &lock(&self.cfg).models {
            return m.clone();
        }
        lock(&self.discovered).clone().unwrap_or_default()
    }

    /// Whether models are discovered (no static list, not the implicit
    /// upstream, which serves whatever `[ollama]` allows).
    pub fn discovers(&self) -> bool {
        let c = lock(&self.cfg);
        c.models.is_none() && !c.implicit
    }

    /// Made from `[ollama] host` (no `[[upstreams]]`).
    pub fn implicit(&self) -> bool {
        lock(&self.cfg).implicit
    }

    /// `/api/ps` listed `model` at the last look (`None`: not known).
    pub fn loaded_cached(&self, model: &str) -> Option<bool> {
        lock(&self.loaded_now).as_ref().map(|m| {
            m.iter()
                .any(|x| x == model || x.strip_suffix(":latest") == Some(model))
        })
    }

    /// Whether `/api/ps` lists `model`, from a cache of [`PS_CACHE_FOR`]
    /// (one request at a time); `None` for OpenAI upstreams or when
    /// `/api/ps` does not answer in [`PS_TIMEOUT`].
    pub async fn loaded(&self, model: &str) -> Option<bool> {
        let Dialect::Ollama(client) = &self.dialect else {
            return None;
        };
        let mut cache = self.loaded.lock().await;
        let fresh = cache
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < PS_CACHE_FOR);
        if !fresh {
            #[derive(Deserialize)]
            struct M {
                #[serde(default)]
                name: String,
                #[serde(default)]
                model: String,
            }
            #[derive(Deserialize)]
            struct Ps {
                #[serde(default)]
                models: Vec<M>,
            }
            let body = client.get("/api/ps", PS_TIMEOUT).await.ok()?;
            let ps: Ps = serde_json::from_slice(&body).ok()?;
            let names: Vec<String> = ps
                .models
                .into_iter()
                .flat_map(|m| [m.name, m.model])
                .filter(|n| !n.is_empty())
                .collect();
            *lock(&self.loaded_now) = Some(names.clone());
            *cache = Some((Instant::now(), names));
        }
        drop(cache);
        self.loaded_cached(model)
    }

    /// One health probe: Ollama `GET /api/version`, OpenAI `GET /v1/models`.
    pub async fn probe(&self) -> Result<Duration, OllamaError> {
        let t = Instant::now();
        match &self.dialect {
            Dialect::Ollama(c) => c.version(PROBE_TIMEOUT).await.map(|_| ()),
            Dialect::OpenAi(c) => c.models(PROBE_TIMEOUT).await.map(|_| ()),
        }?;
        Ok(t.elapsed())
    }

    /// Ask for the models (Ollama `GET /api/tags`, OpenAI `GET /v1/models`)
    /// and remember them.
    pub async fn discover(&self) -> Result<Vec<String>, OllamaError> {
        let models = match &self.dialect {
            Dialect::Ollama(c) => {
                #[derive(Deserialize)]
                struct M {
                    name: String,
                }
                #[derive(Deserialize)]
                struct Tags {
                    #[serde(default)]
                    models: Vec<M>,
                }
                let body = c.get("/api/tags", PROBE_TIMEOUT).await?;
                let tags: Tags = serde_json::from_slice(&body)
                    .map_err(|e| OllamaError::Malformed(format!("/api/tags: {e}")))?;
                let mut v: Vec<String> = Vec::new();
                for m in tags.models {
                    // `llama3.2` is `llama3.2:latest` to Ollama: serve both.
                    if let Some(short) = m.name.strip_suffix(":latest") {
                        v.push(short.to_string());
                    }
                    v.push(m.name);
                }
                v
            }
            Dialect::OpenAi(c) => c.models(PROBE_TIMEOUT).await?,
        };
        *lock(&self.discovered) = Some(models.clone());
        Ok(models)
    }

    /// One streaming request, one attempt (no retries).
    pub async fn chat(
        &self,
        req: &ChatRequest,
        policy: &RetryPolicy,
        cancel: &tokio_util::sync::CancellationToken,
        metrics: &crate::metrics::Metrics,
    ) -> Result<UpstreamStream, OllamaError> {
        let once = RetryPolicy {
            retries: 0,
            ..policy.clone()
        };
        match &self.dialect {
            Dialect::Ollama(c) => c
                .chat(req, &once, cancel, metrics)
                .await
                .map(UpstreamStream::Ollama),
            Dialect::OpenAi(c) => {
                metrics.upstream_requests.inc();
                // The head comes before the model ran: wait for the first
                // event too, so a server that never answers fails over.
                let open = async {
                    let mut stream = c.chat(req, &once).await?;
                    stream.prime().await?;
                    Ok(UpstreamStream::OpenAi(stream))
                };
                let r = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => Err(OllamaError::Cancelled),
                    r = open => r,
                };
                if let Err(e) = &r {
                    if !matches!(e, OllamaError::Cancelled) {
                        metrics
                            .upstream_failures
                            .get_or_create(&crate::metrics::KindLabel { kind: e.kind() })
                            .inc();
                    }
                }
                r
            }
        }
    }

    /// A success (probe or request): up, failures reset. True when this
    /// brought it back up.
    pub fn record_success(&self, latency: Option<Duration>) -> bool {
        let mut h = lock(&self.health);
        h.failures = 0;
        if latency.is_some() {
            h.latency = latency;
        }
        h.last_error = None;
        h.down_since = None;
        if !h.up {
            h.up = true;
            drop(h);
            info!(upstream = %self.name(), "upstream is up again");
            return true;
        }
        false
    }

    /// A failure (probe or request). True when this marked it down.
    pub fn record_failure(&self, threshold: u32, error: &OllamaError) -> bool {
        let implicit = lock(&self.cfg).implicit;
        let mut h = lock(&self.health);
        if implicit {
            // The single upstream of a config without [[upstreams]]: never
            // taken out of service (its retries are the policy).
            h.last_error = Some(error.to_string());
            return false;
        }
        h.failures = h.failures.saturating_add(1);
        h.last_error = Some(error.to_string());
        if !h.up {
            // A failed half-open probe: wait another cooldown.
            h.down_since = Some(Instant::now());
            return false;
        }
        if h.failures >= threshold {
            h.up = false;
            h.down_since = Some(Instant::now());
            drop(h);
            warn!(upstream = %self.name(), error = %error, failures = threshold, "upstream is down: no traffic until a probe succeeds");
            return true;
        }
        false
    }

    /// Whether the health task should probe it now: up ones always, down
    /// ones once `cooldown` passed since they went (or stayed) down.
    pub fn probe_due(&self, cooldown: Duration) -> bool {
        if self.implicit() {
            return false;
        }
        let h = lock(&self.health);
        h.up || h.down_since.is_none_or(|t| t.elapsed() >= cooldown)
    }

    pub fn status(&self) -> UpstreamStatus {
        let cfg = self.config();
        let h = lock(&self.health).clone();
        UpstreamStatus {
            models: self.models(),
            name: cfg.name,
            url: cfg.url,
            api: cfg.api.as_str(),
            up: h.up,
            active: self.active(),
            max_concurrent: cfg.max_concurrent,
            latency_ms: h.latency.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3),
            last_error: h.last_error,
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
