//! `POST /auth/pair` `{code, client_id?, device_name?}` → the client id the
//! code was made for and the usual token pair. The code (from `tars pair`,
//! see [`super::pairing`]) works once and until its expiry; a wrong,
//! used or expired code counts against the same per-IP failed-attempt limit
//! as a wrong secret at `/auth/token` (429 + `Retry-After` past it). A code
//! whose client the running configuration does not know yet (`tars pair`
//! registered it a moment ago) makes the gateway re-read its config first.
//! Nothing here logs a code or a token.

use std::time::Instant;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};
use utoipa::ToSchema;

use super::handlers::internal;
use super::pairing::{self, PairError, PairRecord};
use super::tokens::{now_secs, Subject};
use super::AuthState;
use crate::response::{self as h, Resp};
use crate::server::ConnInfo;

/// `device_type` of the tokens a pairing mints.
pub const DEVICE_TYPE: &str = "paired";

/// `POST /auth/pair` body. No `Debug`: it holds the code.
#[derive(Deserialize, ToSchema)]
pub(crate) struct PairRequest {
    /// The one-time code `tars pair` printed; case and dashes do not matter.
    #[schema(example = "K7MPQ-W3XRT")]
    code: String,
    /// Optional: the client the code must be for (a page re-pairing a
    /// device it knows); a code made for another client is refused.
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,128}$", example = "device-4kq9")]
    client_id: Option<String>,
    /// Shown in logs and the session list: at most 128 characters, no control characters.
    #[serde(default)]
    #[schema(
        max_length = 128,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$",
        example = "Pixel 8"
    )]
    device_name: Option<String>,
}

/// `POST /auth/pair` 200: who the device is now, and its tokens.
#[derive(Serialize, ToSchema)]
pub(crate) struct PairedBody {
    /// The registered client the device signs in as.
    client_id: String,
    access_token: String,
    refresh_token: String,
    /// Always `"bearer"`.
    token_type: &'static str,
    /// Access token lifetime in seconds.
    expires_in: u64,
    /// Refresh token lifetime in seconds.
    refresh_expires_in: u64,
}

fn invalid_code(message: &str) -> Resp {
    h::error(StatusCode::UNAUTHORIZED, "invalid_code", message)
}

/// Run a blocking pairing-file job off the async workers.
async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, PairError> + Send + 'static,
) -> Result<T, PairError> {
    tokio::task::spawn_blocking(job)
        .await
        .unwrap_or(Err(PairError::Unknown))
}

/// `POST /auth/pair`. `reload` re-reads the configuration (used when the
/// code's client is not known yet).
pub async fn pair(
    state: &AuthState,
    conn: ConnInfo,
    req: Request<Incoming>,
    reload: &(dyn Fn() + Sync),
) -> Resp {
    let auth = &state.auth;
    let ip = conn.peer.ip();
    let limit = auth.policy().max_failed_attempts_per_minute;
    if let Some(r) = super::handlers::take_attempt(state, ip, limit, "pair", "pairing attempts") {
        return r;
    }
    let refund = || state.limits.auth_failures.refund(ip, limit, Instant::now());
    let cfg = state.config();
    let body: PairRequest = match h::read_json(req, cfg.limits.max_body_bytes).await {
        Ok(b) => b,
        Err(r) => {
            refund();
            state.metrics.auth("pair", "bad_request");
            return r;
        }
    };
    if body
        .device_name
        .as_ref()
        .is_some_and(|s| s.chars().count() > 128 || s.chars().any(char::is_control))
    {
        refund();
        state.metrics.auth("pair", "bad_request");
        return h::error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "device_name must be at most 128 characters without control characters",
        );
    }
    let data_dir = cfg.server.data_dir.clone();
    let (dir, code) = (data_dir.clone(), body.code.clone());
    let record: PairRecord = match blocking(move || pairing::peek(&dir, &code)).await {
        Ok(r) => r,
        Err(e) => return refused(state, ip, &e),
    };
    if body
        .client_id
        .as_ref()
        .is_some_and(|c| *c != record.client_id)
    {
        state.metrics.auth("pair", "invalid_code");
        info!(peer = %ip, "pairing refused: the code is for another client");
        return invalid_code("this code was made for another client");
    }
    if !auth.policy().permits(&record.client_id) {
        // `tars pair` registered the client a moment ago: read it now
        // rather than at the next poll.
        reload();
        if !auth.policy().permits(&record.client_id) {
            refund();
            state.metrics.auth("pair", "unknown_client");
            warn!(client_id = %record.client_id, "pairing refused: the code's client is not in the configuration");
            return h::error(
                StatusCode::CONFLICT,
                "unknown_client",
                "the code's client is not registered (removed after `tars pair`?): make a new code",
            );
        }
    }
    let code = body.code;
    let record = match blocking(move || pairing::redeem(&data_dir, &code, now_secs())).await {
        Ok(r) => r,
        Err(e) => return refused(state, ip, &e),
    };
    let who = Subject {
        client_id: record.client_id,
        device_name: body.device_name,
        device_type: Some(DEVICE_TYPE.into()),
    };
    match auth.issue_pair(&who, None) {
        Ok(p) => {
            refund();
            state.metrics.auth("pair", "ok");
            info!(client_id = %who.client_id, peer = %ip, "device paired: tokens issued");
            h::json(
                StatusCode::OK,
                &PairedBody {
                    client_id: who.client_id,
                    access_token: p.access_token,
                    refresh_token: p.refresh_token,
                    token_type: p.token_type,
                    expires_in: p.expires_in,
                    refresh_expires_in: p.refresh_expires_in,
                },
            )
        }
        Err(e) => {
            state.metrics.auth("pair", "error");
            error!(client_id = %who.client_id, error = %e, "cannot sign tokens");
            internal("signing_failed", "the tokens could not be signed")
        }
    }
}

/// The answer to a code that did not redeem (the failed attempt stays counted).
fn refused(state: &AuthState, ip: std::net::IpAddr, e: &PairError) -> Resp {
    match e {
        PairError::Unknown => {
            state.metrics.auth("pair", "invalid_code");
            info!(peer = %ip, "pairing refused: unknown or used code");
            invalid_code("unknown or already used pairing code")
        }
        PairError::Expired => {
            state.metrics.auth("pair", "expired");
            info!(peer = %ip, "pairing refused: expired code");
            invalid_code("the pairing code has expired: make a new one with `tars pair`")
        }
        PairError::Io { .. } => {
            state.metrics.auth("pair", "error");
            error!(error = %e, "pairing: cannot read the codes");
            internal("pairing_failed", "the pairing codes could not be read")
        }
    }
}
