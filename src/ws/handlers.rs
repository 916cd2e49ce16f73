//! `GET /ws/health` (open) and `GET /ws/sessions` (admin clients only).

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use utoipa::ToSchema;

use super::manager::SessionRow;
use super::WsState;
use crate::response::{self as h, Resp};

/// `GET /ws/health` 200.
#[derive(Serialize, ToSchema)]
pub(crate) struct WsHealthBody {
    /// Open `/ws/chat` sessions.
    active_connections: usize,
    /// `[websocket] max_connections`: more are refused with 503.
    max_connections: usize,
    /// Always `healthy`.
    #[schema(example = "healthy")]
    status: &'static str,
    /// RFC 3339 UTC.
    #[schema(example = "2025-11-07T12:00:01.045000Z")]
    timestamp: String,
    /// Distinct client ids among the open sessions.
    unique_clients: usize,
}

/// `GET /ws/sessions` 200.
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionsBody {
    /// How many sessions are listed.
    active_sessions: usize,
    /// Oldest first.
    sessions: Vec<SessionRow>,
}

pub fn health(state: &WsState) -> Resp {
    let cfg = state.config();
    h::json(
        StatusCode::OK,
        &WsHealthBody {
            active_connections: state.sessions.active(),
            max_connections: cfg.websocket.max_connections,
            status: "healthy",
            timestamp: h::now_rfc3339(),
            unique_clients: state.sessions.unique_clients(),
        },
    )
}

pub fn sessions(state: &WsState, req: &Request<Incoming>) -> Resp {
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
        &SessionsBody {
            active_sessions: rows.len(),
            sessions: rows,
        },
    )
}
