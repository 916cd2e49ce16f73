//! `/auth/*` HTTP handlers (placeholder until the auth issue lands).

use http::{Request, StatusCode};
use hyper::body::Incoming;

use crate::http::{self as h, Resp};
use crate::routes::ConnInfo;
use crate::state::AppState;

fn todo_resp() -> Resp {
    h::error(StatusCode::NOT_IMPLEMENTED, "not_implemented", "not yet")
}
pub async fn token(_s: &AppState, _c: ConnInfo, _r: Request<Incoming>) -> Resp { todo_resp() }
pub async fn refresh(_s: &AppState, _c: ConnInfo, _r: Request<Incoming>) -> Resp { todo_resp() }
pub async fn validate(_s: &AppState, _c: ConnInfo, _r: Request<Incoming>) -> Resp { todo_resp() }
pub async fn revoke(_s: &AppState, _c: ConnInfo, _r: Request<Incoming>) -> Resp { todo_resp() }
pub fn health(_s: &AppState) -> Resp { todo_resp() }
