//! `GET /ws/chat`: everything that must hold before a socket is upgraded —
//! a WebSocket handshake, an allowed `Origin`, a valid access token, a free
//! slot under the connection limits — then the 101 answer and the session
//! task. A refused client gets a JSON error and never reaches the chat loop.

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, ORIGIN, RETRY_AFTER};
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tracing::{debug, warn};

use super::manager::LimitError;
use super::session::{self, Client};
use super::WsState;
use crate::limits::HeldConn;
use crate::metrics::KindLabel;
use crate::response::{self as h, Resp};
use crate::server::{origin_allowed, same_origin, ConnInfo};

/// How long the client gets to finish the upgrade after the 101.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// The `token` query parameter, if any.
fn query_token(req: &Request<Incoming>) -> Option<&str> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .filter(|t| !t.is_empty())
}

fn reject(state: &WsState, status: StatusCode, kind: &'static str, message: &str) -> Resp {
    state
        .metrics
        .connections_rejected
        .get_or_create(&KindLabel { kind })
        .inc();
    h::error(status, kind, message)
}

pub async fn handle(state: Arc<WsState>, conn: ConnInfo, mut req: Request<Incoming>) -> Resp {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return reject(
            &state,
            StatusCode::BAD_REQUEST,
            "not_websocket",
            "this endpoint only speaks WebSocket: send an Upgrade: websocket request",
        );
    }
    if let Some(origin) = req.headers().get(ORIGIN) {
        if !origin_allowed(&state.config().cors, origin) && !same_origin(&req, origin) {
            return reject(
                &state,
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "this page's origin is not listed in [cors] origins",
            );
        }
    }
    let token = query_token(&req).or_else(|| h::bearer(&req));
    let Some(token) = token else {
        return reject(
            &state,
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "send an access token as ?token=<jwt> or Authorization: Bearer <jwt>",
        );
    };
    // Taken before the check: a revocation that lands between this check
    // and the session's registration moves the epoch past it, and the
    // session re-checks right after registering (session::run).
    let epoch = state.auth.epoch();
    let claims = match state.auth.verify_access(token) {
        Ok(c) => c,
        Err(e) => {
            debug!(peer = %conn.peer, reason = e.reason(), "websocket token refused");
            return reject(
                &state,
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                &format!("access token refused: {}", e.reason()),
            );
        }
    };
    let cfg = state.config();
    let slot = match state.sessions.reserve(
        &claims.sub,
        cfg.websocket.max_connections,
        cfg.websocket.max_connections_per_client,
    ) {
        Ok(s) => s,
        Err(e) => {
            warn!(client_id = %claims.sub, peer = %conn.peer, limit = %e, "websocket refused: connection limit");
            let kind = match e {
                LimitError::Total(_) => "too_many_connections",
                LimitError::PerClient(_) => "too_many_client_connections",
            };
            let mut r = reject(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                kind,
                &format!("{e}; try again later"),
            );
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("5"));
            return r;
        }
    };
    let models = state
        .auth
        .allowed_models(&claims.sub, &cfg.ollama.allowed_models);
    drop(cfg);
    let (response, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(x) => x,
        Err(e) => {
            return reject(
                &state,
                StatusCode::BAD_REQUEST,
                "bad_handshake",
                &format!("WebSocket handshake refused: {e}"),
            )
        }
    };
    let client = Client {
        claims,
        epoch,
        models,
        conn,
        // The connection's per-IP slot lives as long as the session.
        held: req.extensions_mut().remove::<HeldConn>(),
    };
    let task_state = state.clone();
    state.tasks.spawn(async move {
        match tokio::time::timeout(UPGRADE_TIMEOUT, fut).await {
            // The session gets a task of its own and this one ends: an idle
            // session does not carry the upgrade's state (ADR 0013).
            Ok(Ok(ws)) => {
                let tasks = task_state.tasks.clone();
                tasks.spawn(session::run(task_state, ws, slot, client));
            }
            Ok(Err(e)) => debug!(peer = %conn.peer, error = %e, "upgrade failed"),
            Err(_) => debug!(peer = %conn.peer, "upgrade timed out"),
        }
    });
    response.map(|_| Full::default())
}
