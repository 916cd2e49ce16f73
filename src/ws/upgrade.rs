//! `GET /ws/chat` upgrade (placeholder).

use std::sync::Arc;

use http::{Request, StatusCode};
use hyper::body::Incoming;

use crate::http::{self as h, Resp};
use crate::routes::ConnInfo;
use crate::state::AppState;

pub async fn handle(_s: Arc<AppState>, _c: ConnInfo, _r: Request<Incoming>) -> Resp {
    h::error(StatusCode::NOT_IMPLEMENTED, "not_implemented", "not yet")
}
