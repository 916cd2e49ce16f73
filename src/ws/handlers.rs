//! `/ws/health` and `/ws/sessions` (placeholder).

use http::{Request, StatusCode};
use hyper::body::Incoming;

use crate::http::{self as h, Resp};
use crate::state::AppState;

pub fn health(_s: &AppState) -> Resp {
    h::error(StatusCode::NOT_IMPLEMENTED, "not_implemented", "not yet")
}
pub fn sessions(_s: &AppState, _r: &Request<Incoming>) -> Resp {
    h::error(StatusCode::NOT_IMPLEMENTED, "not_implemented", "not yet")
}
