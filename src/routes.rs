//! HTTP routing: one table of paths and methods, CORS, and the small
//! endpoints (`/`, `/health`, `/ready`, `/metrics`). Auth and WebSocket
//! endpoints live in their modules; this file only dispatches to them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{HeaderValue, ALLOW, ORIGIN, VARY};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

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
    match route {
        Route::Index => index(),
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
    }
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

fn index() -> Resp {
    let endpoints: Vec<String> = ROUTES
        .iter()
        .map(|(p, _, m, _)| format!("{} {p}", m[0].as_str()))
        .collect();
    h::json(
        StatusCode::OK,
        &json!({
            "name": "T.A.R.S. gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "endpoints": endpoints,
        }),
    )
}

fn health(state: &AppState) -> Resp {
    h::json(
        StatusCode::OK,
        &json!({
            "status": "healthy",
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": state.started.elapsed().as_secs(),
            "timestamp": h::now_rfc3339(),
        }),
    )
}

async fn ready(state: &AppState) -> Resp {
    let cfg = state.config();
    let client = state.ollama.load_full();
    match state.ready.check(&client).await {
        Probe::Up { version } => h::json(
            StatusCode::OK,
            &json!({
                "status": "ready",
                "ollama": {"status": "up", "host": cfg.ollama.host, "version": version},
                "model": cfg.ollama.model,
            }),
        ),
        Probe::Down { reason } => h::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({
                "status": "not_ready",
                "reason": reason,
                "ollama": {"status": "down", "host": cfg.ollama.host},
                "model": cfg.ollama.model,
            }),
        ),
    }
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
