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
use crate::ollama::OllamaClient;
use crate::ready::{Probe, ReadyProbe};
use crate::response::{self as h, Resp};

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
    #[serde(skip_serializing_if = "Option::is_none")]
    ollama: Option<OllamaProbe>,
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

/// `GET /ready`: 200 when Ollama answers, 503 when not; with `details`,
/// the model, Ollama's URL and version, and the reason it is down.
pub async fn ready(probe: &ReadyProbe, client: &OllamaClient, cfg: &Config, details: bool) -> Resp {
    let (status, mut body) = match probe.check(client).await {
        Probe::Up { version } => (
            StatusCode::OK,
            ReadyBody {
                model: Some(cfg.ollama.model.clone()),
                ollama: Some(OllamaProbe {
                    host: cfg.ollama.host.clone(),
                    status: OllamaState::Up,
                    version: Some(version),
                }),
                reason: None,
                status: ReadyStatus::Ready,
            },
        ),
        Probe::Down { reason } => (
            StatusCode::SERVICE_UNAVAILABLE,
            ReadyBody {
                model: Some(cfg.ollama.model.clone()),
                ollama: Some(OllamaProbe {
                    host: cfg.ollama.host.clone(),
                    status: OllamaState::Down,
                    version: None,
                }),
                reason: Some(reason),
                status: ReadyStatus::NotReady,
            },
        ),
    };
    if !details {
        body.model = None;
        body.ollama = None;
        body.reason = None;
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
