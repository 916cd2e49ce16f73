//! The gateway's own small endpoints: `GET /` as JSON (the list of
//! endpoints), `/health`, `/ready` (Ollama probed through [`ReadyProbe`])
//! and `/metrics` (Prometheus text or the seed's JSON). Each handler takes
//! exactly what it reads; the route table ([`crate::routes`]) calls them.

use std::time::Instant;

use http::{Request, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::ready::ReadyProbe;
use crate::response::{self as h, Resp};
use crate::upstream::Pool;

/// `GET /` body (for clients that do not ask for HTML).
#[derive(Serialize, ToSchema)]
pub(crate) struct IndexBody {
    /// Every route as `METHOD /path`.
    endpoints: Vec<String>,
    #[schema(example = "T.A.R.S. gateway")]
    name: &'static str,
    #[schema(example = "0.1.0")]
    version: &'static str,
}

/// `GET /health` body.
#[derive(Serialize, ToSchema)]
pub(crate) struct HealthBody {
    /// Always `healthy`: the process answers.
    #[schema(example = "healthy")]
    status: &'static str,
    /// RFC 3339 UTC.
    #[schema(example = "2025-11-07T12:00:01.045000Z")]
    timestamp: String,
    uptime_secs: u64,
    #[schema(example = "0.1.0")]
    version: &'static str,
}

/// `GET /ready` body, 200 and 503 alike. Callers that are neither on
/// loopback nor an admin client get `status` alone.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReadyBody {
    /// `[ollama] model`, the default model.
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    /// The first upstream when it speaks Ollama's dialect (kept from the
    /// single-upstream gateway).
    #[serde(skip_serializing_if = "Option::is_none")]
    ollama: Option<OllamaProbe>,
    /// Every upstream (admin or loopback callers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    upstreams: Option<Vec<UpstreamReady>>,
    /// Why Ollama is considered down (503 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    status: ReadyStatus,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReadyStatus {
    Ready,
    NotReady,
}

/// What the probe of `GET {host}/api/version` found.
#[derive(Serialize, ToSchema)]
pub(crate) struct OllamaProbe {
    /// `[ollama] host`.
    host: String,
    status: OllamaState,
    /// Ollama's version (when up).
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
}

/// One upstream in `GET /ready`.
#[derive(Serialize, ToSchema)]
pub(crate) struct UpstreamReady {
    name: String,
    url: String,
    /// `ollama` or `openai`.
    api: &'static str,
    /// It answered its probe just now.
    up: bool,
    /// The models it serves (static or last discovered).
    models: Vec<String>,
    /// Generations running on it now.
    active: usize,
    max_concurrent: usize,
    /// The circuit breaker lets chats through.
    routable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OllamaState {
    Up,
    Down,
}

/// `GET /` as JSON: `endpoints` is every route as `METHOD /path`.
pub fn index(endpoints: Vec<String>) -> Resp {
    h::json(
        StatusCode::OK,
        &IndexBody {
            endpoints,
            name: "T.A.R.S. gateway",
            version: env!("CARGO_PKG_VERSION"),
        },
    )
}

/// `GET /health`: the process answers.
pub fn health(started: Instant) -> Resp {
    h::json(
        StatusCode::OK,
        &HealthBody {
            status: "healthy",
            timestamp: h::now_rfc3339(),
            uptime_secs: started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION"),
        },
    )
}

/// `GET /ready`: 200 when at least one upstream answers, 503 when none
/// does; with `details`, the default model and every upstream (name, URL,
/// dialect, up, models, active), and why they are down.
pub async fn ready(probe: &ReadyProbe, pool: &Pool, cfg: &Config, details: bool) -> Resp {
    let probes = probe.check(pool).await;
    let any_up = probes.iter().any(|p| p.is_up());
    let status = if any_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = ReadyBody {
        model: None,
        ollama: None,
        upstreams: None,
        reason: None,
        status: if any_up {
            ReadyStatus::Ready
        } else {
            ReadyStatus::NotReady
        },
    };
    if details {
        body.model = Some(cfg.ollama.model.clone());
        body.ollama = probes
            .first()
            .filter(|p| p.api == "ollama")
            .map(|p| OllamaProbe {
                host: p.url.clone(),
                status: if p.is_up() {
                    OllamaState::Up
                } else {
                    OllamaState::Down
                },
                version: p.version.clone(),
            });
        if !any_up {
            body.reason = Some(
                probes
                    .iter()
                    .filter_map(|p| p.down.as_ref().map(|d| format!("{}: {d}", p.name)))
                    .collect::<Vec<_>>()
                    .join("; "),
            );
            if probes.len() == 1 {
                body.reason = probes[0].down.clone();
            }
        }
        let members = pool.status();
        body.upstreams = Some(
            probes
                .iter()
                .map(|p| {
                    let m = members.iter().find(|m| m.name == p.name);
                    UpstreamReady {
                        name: p.name.clone(),
                        url: p.url.clone(),
                        api: p.api,
                        up: p.is_up(),
                        models: m.map(|m| m.models.clone()).unwrap_or_default(),
                        active: m.map_or(0, |m| m.active),
                        max_concurrent: m.map_or(0, |m| m.max_concurrent),
                        routable: m.is_some_and(|m| m.up),
                        version: p.version.clone(),
                        reason: p.down.clone(),
                    }
                })
                .collect(),
        );
    }
    h::json(status, &body)
}

/// `GET /metrics`: Prometheus text, or the seed's JSON fields when asked
/// for `application/json`.
pub fn metrics<B>(metrics: &Metrics, req: &Request<B>) -> Resp {
    if h::accepts(req, "application/json") {
        h::json(StatusCode::OK, &metrics.seed_json())
    } else {
        h::text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render_text(),
        )
    }
}
