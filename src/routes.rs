//! HTTP routing: one table of paths and methods, CORS, the `/auth/*`
//! request rate, and dispatch. A pure table that depends on the handlers
//! ([`crate::status`], [`crate::auth`], [`crate::ws`], [`crate::web`],
//! [`crate::api_doc`]), never the reverse: each handler gets its own
//! subsystem's state out of [`AppState`].

use std::sync::Arc;

use http::header::{HeaderValue, ALLOW, HOST, ORIGIN, VARY};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use crate::response::{self as h, Resp};
use crate::server::{host_allowed, origin_allowed, ConnInfo};
use crate::state::AppState;

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
    /// `POST /auth/pair`: a `tars pair` code for a token pair.
    AuthPair,
    /// `GET /pair` and its script ([`crate::web::pair`]).
    Pair,
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
    ("/auth/pair", Route::AuthPair, POST, "auth_pair"),
    ("/pair", Route::Pair, GET, "pair"),
    ("/static/pair.js", Route::Pair, GET, "pair"),
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

/// Every route as `METHOD /path`, for `GET /`.
pub fn endpoints() -> Vec<String> {
    ROUTES
        .iter()
        .map(|(p, _, m, _)| format!("{} {p}", m[0].as_str()))
        .collect()
}

/// The service for every request (what [`crate::server::run`] serves).
pub async fn handle(state: Arc<AppState>, conn: ConnInfo, req: Request<Incoming>) -> Resp {
    if !host_allowed(&state.config().server, req.headers().get(HOST)) {
        state.metrics.http("misdirected");
        return h::error(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected_request",
            "this Host is not served here: use a name listed in [server] allowed_hosts",
        );
    }
    let origin = req.headers().get(ORIGIN).cloned();
    let allowed_origin = origin
        .as_ref()
        .filter(|o| origin_allowed(&state.config().cors, o))
        .cloned();
    let mut resp = dispatch(state, conn, req, allowed_origin.is_some()).await;
    if let Some(o) = allowed_origin {
        let hs = resp.headers_mut();
        hs.insert("access-control-allow-origin", o);
        hs.append(VARY, HeaderValue::from_static("Origin"));
    }
    resp
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
    // `/auth/pair` draws on the same `/auth/*` request rate.
    if route == Route::AuthPair {
        if let Err(wait) = state.limits.auth(conn.peer.ip()) {
            return rate_limited(&state, wait);
        }
    }
    use crate::auth::handlers as auth;
    use crate::ws::{handlers as ws, upgrade};
    match route {
        Route::Index => crate::web::index(&req, || crate::status::index(endpoints())),
        Route::Health => crate::status::health(state.started),
        Route::Ready => {
            let details = details_for(&state, conn, &req);
            crate::status::ready(&state.ready, &state.pool, &state.config(), details).await
        }
        Route::Metrics => crate::status::metrics(&state.metrics, &req),
        Route::AuthToken => auth::token(&state.auth, conn, req).await,
        Route::AuthRefresh => auth::refresh(&state.auth, conn, req).await,
        Route::AuthValidate => auth::validate(&state.auth, conn, req).await,
        Route::AuthRevoke => auth::revoke(&state.auth, conn, req).await,
        Route::AuthHealth => auth::health(&state.auth, details_for(&state, conn, &req)),
        Route::WsChat => upgrade::handle(state.ws.clone(), conn, req).await,
        Route::WsHealth => ws::health(&state.ws),
        Route::WsSessions => ws::sessions(&state.ws, &req),
        Route::Static => crate::web::asset(&req),
        Route::Models => crate::web::models(&state.auth.auth, &state.pool, &state.config(), &req),
        Route::OpenApi => crate::api_doc::openapi_json(),
        Route::Docs => crate::api_doc::docs(&req),
        Route::Redoc => crate::api_doc::redoc(),
        Route::AuthPair => {
            let reload = || crate::reload::reload_now(&state);
            crate::auth::pair::pair(&state.auth, conn, req, &reload).await
        }
        Route::Pair => crate::web::pair::serve_path(&req),
    }
}

/// Whether `/ready` and `/auth/health` may show details (Ollama's URL and
/// error text, counts of clients and revocations): to loopback callers and
/// to admin clients' bearer tokens; anyone else gets the status alone.
fn details_for<B>(state: &AppState, conn: ConnInfo, req: &Request<B>) -> bool {
    conn.peer.ip().to_canonical().is_loopback()
        || h::bearer(req).is_some_and(|t| state.auth.auth.is_admin_token(t))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The OpenAPI document served at `/openapi.json`.
    fn doc() -> Value {
        serde_json::from_slice(&crate::api_doc::document()).unwrap()
    }

    /// Paths that serve files, not API: documented by their page.
    fn is_asset(path: &str) -> bool {
        path.starts_with("/static/") || path.starts_with("/docs/")
    }

    #[test]
    fn every_route_is_documented_and_every_operation_routed() {
        let d = doc();
        let paths = d["paths"].as_object().unwrap();
        for (path, _, methods, _) in ROUTES.iter().filter(|r| !is_asset(r.0)) {
            let op = paths
                .get(*path)
                .unwrap_or_else(|| panic!("{path} is routed but not in the OpenAPI document"));
            for m in methods.iter().filter(|m| **m != http::Method::HEAD) {
                let m = m.as_str().to_ascii_lowercase();
                assert!(
                    op.get(&m).is_some(),
                    "{m} {path} is routed but not documented"
                );
            }
            for m in op.as_object().unwrap().keys() {
                assert!(
                    methods.iter().any(|x| x.as_str().eq_ignore_ascii_case(m)),
                    "{m} {path} is documented but not routed"
                );
            }
        }
        for path in paths.keys() {
            assert!(
                ROUTES.iter().any(|r| r.0 == path),
                "{path} is documented but not routed"
            );
        }
    }
}
