//! HTTP routing: one table of paths and methods, CORS, and the small
//! endpoints (`/`, `/health`, `/ready`, `/metrics`). Auth and WebSocket
//! endpoints live in their modules; this file only dispatches to them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{HeaderValue, ALLOW, ORIGIN, VARY};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::{self as h, Resp};
use crate::ready::Probe;
use crate::state::AppState;

/// Facts about the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// True when the connection is TLS.
    pub secure: bool,
}

/// Every route the gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Index,
    Health,
    Ready,
    Metrics,
    AuthToken,
    AuthRefresh,
    AuthValidate,
    AuthRevoke,
    AuthHealth,
    WsChat,
    WsHealth,
    WsSessions,
    /// The chat page's `/static/*` files ([`crate::web`]).
    Static,
    Models,
    /// `GET /openapi.json` ([`crate::api_doc`]).
    OpenApi,
    /// `GET /docs` and the Swagger UI files under `/docs/`.
    Docs,
    /// `GET /redoc`: a redirect to `/docs`.
    Redoc,
}

const GET: &[Method] = &[Method::GET, Method::HEAD];
const POST: &[Method] = &[Method::POST];

/// The route table: path → (route, methods, metric label).
pub const ROUTES: &[(&str, Route, &[Method], &str)] = &[
    ("/", Route::Index, GET, "index"),
    ("/health", Route::Health, GET, "health"),
    ("/ready", Route::Ready, GET, "ready"),
    ("/metrics", Route::Metrics, GET, "metrics"),
    ("/auth/token", Route::AuthToken, POST, "auth_token"),
    ("/auth/refresh", Route::AuthRefresh, POST, "auth_refresh"),
    ("/auth/validate", Route::AuthValidate, POST, "auth_validate"),
    ("/auth/revoke", Route::AuthRevoke, POST, "auth_revoke"),
    ("/auth/health", Route::AuthHealth, GET, "auth_health"),
    ("/ws/chat", Route::WsChat, &[Method::GET], "ws_chat"),
    ("/ws/health", Route::WsHealth, GET, "ws_health"),
    ("/ws/sessions", Route::WsSessions, GET, "ws_sessions"),
    ("/models", Route::Models, GET, "models"),
    ("/static/app.js", Route::Static, GET, "static"),
    ("/static/app.css", Route::Static, GET, "static"),
    ("/openapi.json", Route::OpenApi, GET, "openapi"),
    ("/docs", Route::Docs, GET, "docs"),
    ("/docs/swagger-ui.css", Route::Docs, GET, "docs"),
    ("/docs/index.css", Route::Docs, GET, "docs"),
    ("/docs/swagger-ui-bundle.js", Route::Docs, GET, "docs"),
    ("/docs/swagger-initializer.js", Route::Docs, GET, "docs"),
    ("/redoc", Route::Redoc, GET, "docs"),
];

fn allow_header(methods: &[Method]) -> HeaderValue {
    let s = methods
        .iter()
        .map(Method::as_str)
        .chain(std::iter::once("OPTIONS"))
        .collect::<Vec<_>>()
        .join(", ");
    HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("GET"))
}

/// hyper service entry point for every request.
pub async fn handle(
    state: Arc<AppState>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let origin = req.headers().get(ORIGIN).cloned();
    let allowed_origin = origin
        .as_ref()
        .filter(|o| origin_allowed(&state, o))
        .cloned();
    let mut resp = dispatch(state, conn, req, allowed_origin.is_some()).await;
    if let Some(o) = allowed_origin {
        let hs = resp.headers_mut();
        hs.insert("access-control-allow-origin", o);
        hs.append(VARY, HeaderValue::from_static("Origin"));
    }
    Ok(resp)
}

/// True when `origin` is listed in `[cors] origins`.
pub fn origin_allowed(state: &AppState, origin: &HeaderValue) -> bool {
    let cfg = state.config();
    cfg.cors
        .origins
        .iter()
        .any(|o| o.as_bytes() == origin.as_bytes())
}

async fn dispatch(
    state: Arc<AppState>,
    conn: ConnInfo,
    req: Request<Incoming>,
    origin_ok: bool,
) -> Resp {
    let path = req.uri().path();
    let Some(&(_, route, methods, label)) = ROUTES.iter().find(|(p, ..)| *p == path) else {
        state.metrics.http("not_found");
        return h::error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no endpoint at {path}; GET / lists them"),
        );
    };
    state.metrics.http(label);
    if req.method() == Method::OPTIONS {
        return preflight(&req, methods, origin_ok);
    }
    if !methods.contains(req.method()) {
        let mut r = h::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{} is not allowed on {path}", req.method()),
        );
        r.headers_mut().insert(ALLOW, allow_header(methods));
        return r;
    }
    if matches!(
        route,
        Route::AuthToken | Route::AuthRefresh | Route::AuthRevoke
    ) {
        if let Err(wait) = state.limits.auth(conn.peer.ip()) {
            return rate_limited(&state, wait);
        }
    }
    match route {
        Route::Index => crate::web::index(&req, index),
        Route::Health => health(&state),
        Route::Ready => ready(&state).await,
        Route::Metrics => metrics(&state, &req),
        Route::AuthToken => crate::auth::handlers::token(&state, conn, req).await,
        Route::AuthRefresh => crate::auth::handlers::refresh(&state, conn, req).await,
        Route::AuthValidate => crate::auth::handlers::validate(&state, conn, req).await,
        Route::AuthRevoke => crate::auth::handlers::revoke(&state, conn, req).await,
        Route::AuthHealth => crate::auth::handlers::health(&state),
        Route::WsChat => crate::ws::upgrade::handle(state, conn, req).await,
        Route::WsHealth => crate::ws::handlers::health(&state),
        Route::WsSessions => crate::ws::handlers::sessions(&state, &req),
        Route::Static => crate::web::asset(&req),
        Route::Models => crate::web::models(&state, &req),
        Route::OpenApi => crate::api_doc::openapi_json(),
        Route::Docs => crate::api_doc::docs(&req),
        Route::Redoc => crate::api_doc::redoc(),
    }
}

/// 429 with `Retry-After` (whole seconds, at least 1).
fn rate_limited(state: &AppState, wait: std::time::Duration) -> Resp {
    state
        .metrics
        .connections_rejected
        .get_or_create(&crate::metrics::KindLabel { kind: "auth_rate" })
        .inc();
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut r = h::error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        &format!("too many /auth requests from this address; retry in {secs} s"),
    );
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

/// CORS preflight: answered for listed origins only.
fn preflight(req: &Request<Incoming>, methods: &[Method], origin_ok: bool) -> Resp {
    let is_preflight = req.headers().contains_key("access-control-request-method");
    if is_preflight && !origin_ok {
        return h::error(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this origin is not listed in [cors] origins",
        );
    }
    let mut r = h::text(StatusCode::NO_CONTENT, "text/plain", "");
    let hs = r.headers_mut();
    hs.insert(ALLOW, allow_header(methods));
    if is_preflight {
        hs.insert("access-control-allow-methods", allow_header(methods));
        hs.insert(
            "access-control-allow-headers",
            HeaderValue::from_static("authorization, content-type"),
        );
        hs.insert("access-control-max-age", HeaderValue::from_static("600"));
    }
    r
}

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

/// `GET /ready` body, 200 and 503 alike.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReadyBody {
    /// `[ollama] model`, the default model.
    model: String,
    ollama: OllamaProbe,
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

fn index() -> Resp {
    let endpoints: Vec<String> = ROUTES
        .iter()
        .map(|(p, _, m, _)| format!("{} {p}", m[0].as_str()))
        .collect();
    h::json(
        StatusCode::OK,
        &IndexBody {
            endpoints,
            name: "T.A.R.S. gateway",
            version: env!("CARGO_PKG_VERSION"),
        },
    )
}

fn health(state: &AppState) -> Resp {
    h::json(
        StatusCode::OK,
        &HealthBody {
            status: "healthy",
            timestamp: h::now_rfc3339(),
            uptime_secs: state.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION"),
        },
    )
}

async fn ready(state: &AppState) -> Resp {
    let cfg = state.config();
    let client = state.ollama.load_full();
    let (status, body) = match state.ready.check(&client).await {
        Probe::Up { version } => (
            StatusCode::OK,
            ReadyBody {
                model: cfg.ollama.model.clone(),
                ollama: OllamaProbe {
                    host: cfg.ollama.host.clone(),
                    status: OllamaState::Up,
                    version: Some(version),
                },
                reason: None,
                status: ReadyStatus::Ready,
            },
        ),
        Probe::Down { reason } => (
            StatusCode::SERVICE_UNAVAILABLE,
            ReadyBody {
                model: cfg.ollama.model.clone(),
                ollama: OllamaProbe {
                    host: cfg.ollama.host.clone(),
                    status: OllamaState::Down,
                    version: None,
                },
                reason: Some(reason),
                status: ReadyStatus::NotReady,
            },
        ),
    };
    h::json(status, &body)
}

fn metrics(state: &AppState, req: &Request<Incoming>) -> Resp {
    if h::accepts(req, "application/json") {
        h::json(StatusCode::OK, &state.metrics.seed_json())
    } else {
        h::text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.render_text(),
        )
    }
}
