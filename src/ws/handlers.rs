//! `GET /ws/health` (open) and `GET /ws/sessions` (admin clients only).

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::manager::SessionRow;
use crate::http::{self as h, Resp};
use crate::state::AppState;

pub fn health(state: &AppState) -> Resp {
    let cfg = state.config();
    h::json(
        StatusCode::OK,
        &json!({
            "status": "healthy",
            "active_connections": state.sessions.active(),
            "unique_clients": state.sessions.unique_clients(),
            "max_connections": cfg.websocket.max_connections,
            "timestamp": h::now_rfc3339(),
        }),
    )
}

pub fn sessions(state: &AppState, req: &Request<Incoming>) -> Resp {
    let Some(token) = h::bearer(req) else {
        return h::error(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "send an admin client's access token as Authorization: Bearer <jwt>",
        );
    };
    let claims = match state.auth.verify_access(token) {
        Ok(c) => c,
        Err(e) => {
            return h::error(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                &format!("access token refused: {}", e.reason()),
            )
        }
    };
    if !state.auth.is_admin(&claims.sub) {
        return h::error(
            StatusCode::FORBIDDEN,
            "not_admin",
            "only clients with admin = true may list sessions",
        );
    }
    let mut rows: Vec<SessionRow> = state
        .sessions
        .snapshot()
        .iter()
        .map(|s| SessionRow::from_info(s))
        .collect();
    rows.sort_by(|a, b| a.connected_at.cmp(&b.connected_at));
    h::json(
        StatusCode::OK,
        &json!({ "active_sessions": rows.len(), "sessions": rows }),
    )
}
