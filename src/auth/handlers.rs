//! The `/auth/*` endpoints.
//!
//! - `POST /auth/token` `{client_id, client_secret?, device_name?, device_type?}`
//!   → a token pair. Unknown client and wrong secret get the same 401 and the
//!   same argon2 cost; failed attempts are limited per IP (429 + `Retry-After`).
//! - `POST /auth/refresh` `{refresh_token}` → a new pair in the same token
//!   family; the used refresh token is recorded (persisted) first, so a
//!   second use is refused, revokes the whole family (RFC 9700 §4.14.2: the
//!   thief's fresh pair dies with it) and is logged as a security event.
//! - `POST /auth/validate` with `Authorization: Bearer` → the access token's
//!   claims, or 401 `{valid: false, reason}`.
//! - `POST /auth/revoke`: a token and its family, or (admin) a whole client;
//!   see [`super::revoke`].
//! - `GET /auth/health`.
//!
//! Nothing here logs a token or a secret: only client ids, `jti`s and peers.

use std::time::Instant;

use http::header::{HeaderValue, RETRY_AFTER};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};
use utoipa::ToSchema;

use super::clients::{self, Credential};
use super::revocation::Revoke;
pub(crate) use super::revoke::{revoke, RevokeRequest, RevokedBody};
use super::tokens::{now_secs, Claims, Subject, TokenType};
use super::AuthError;
use super::AuthState;
use crate::config::valid_client_id;
use crate::response::{self as h, Resp};
use crate::server::ConnInfo;

/// Longest `device_name` / `device_type` accepted, in characters.
const MAX_DEVICE_CHARS: usize = 128;

/// `POST /auth/token` body. No `Debug`: it holds the client secret.
#[derive(Deserialize, ToSchema)]
pub(crate) struct TokenRequest {
    /// 1-128 characters of `A-Z a-z 0-9 . _ -`.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,128}$", example = "client-001")]
    client_id: String,
    /// The client's secret; required unless `[auth] open_enrollment = true`.
    #[serde(default)]
    client_secret: Option<String>,
    /// Shown in logs and the session list: at most 128 characters, no control characters.
    #[serde(default)]
    #[schema(
        max_length = 128,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$",
        example = "Windows Desktop"
    )]
    device_name: Option<String>,
    /// Like `device_name`.
    #[serde(default)]
    #[schema(
        max_length = 128,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$",
        example = "windows"
    )]
    device_type: Option<String>,
}

/// `POST /auth/refresh` body.
#[derive(Deserialize, ToSchema)]
pub(crate) struct RefreshRequest {
    /// A refresh token from `/auth/token` or an earlier refresh; each is accepted once.
    refresh_token: String,
}

/// A 401 for a refused token: `reason` is a stable code (`expired`,
/// `revoked`, `invalid_signature`, `wrong_token_type`, `missing_token`, ...).
#[derive(Serialize, ToSchema)]
pub(crate) struct TokenErrorBody {
    /// Always `invalid_token`.
    #[schema(example = "invalid_token")]
    error: &'static str,
    #[schema(example = "the token has expired")]
    message: String,
    #[schema(example = "expired")]
    reason: &'static str,
}

/// `POST /auth/validate` 200: the access token's claims.
#[derive(Serialize, ToSchema)]
pub(crate) struct ValidBody {
    client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_type: Option<String>,
    /// RFC 3339 UTC.
    #[schema(example = "2025-11-08T12:00:00.000000Z")]
    expires_at: String,
    /// RFC 3339 UTC.
    #[schema(example = "2025-11-07T12:00:00.000000Z")]
    issued_at: String,
    /// The token's id (UUID v4), the key of the revocation list.
    jti: String,
    /// Always `access`.
    #[schema(example = "access")]
    token_type: &'static str,
    /// Always `true`.
    valid: bool,
}

/// `POST /auth/validate` 401.
#[derive(Serialize, ToSchema)]
pub(crate) struct NotValidBody {
    #[schema(example = "the token has expired")]
    message: String,
    /// A stable code, as in [`TokenErrorBody`].
    #[schema(example = "expired")]
    reason: &'static str,
    /// Always `false`.
    valid: bool,
}

/// `GET /auth/health` 200.
#[derive(Serialize, ToSchema)]
/// Everything but `status` only for loopback callers and admin bearers.
pub(crate) struct AuthHealthBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    access_ttl_secs: Option<u64>,
    /// `HS256`, `HS384` or `HS512`.
    #[schema(example = "HS256")]
    #[serde(skip_serializing_if = "Option::is_none")]
    algorithm: Option<&'static str>,
    /// True when any well-formed client id gets tokens without a secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    open_enrollment: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_ttl_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    registered_clients: Option<usize>,
    /// Revoked (or used refresh) tokens not yet expired.
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_count: Option<usize>,
    /// Revoked token families not yet expired.
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_families: Option<usize>,
    /// Clients with a cutoff (tokens issued before it are refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    client_cutoffs: Option<usize>,
    /// Always `healthy`.
    #[schema(example = "healthy")]
    status: &'static str,
}

fn invalid_client() -> Resp {
    h::error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "unknown client or wrong secret",
    )
}

pub(crate) fn invalid_token(e: &AuthError) -> Resp {
    h::json(
        StatusCode::UNAUTHORIZED,
        &TokenErrorBody {
            error: "invalid_token",
            message: e.to_string(),
            reason: e.reason(),
        },
    )
}

pub(crate) fn internal(code: &str, message: &str) -> Resp {
    h::error(StatusCode::INTERNAL_SERVER_ERROR, code, message)
}

/// A 400 when `device_name` or `device_type` is too long or has control
/// characters (they end up in logs and the session list).
fn bad_device(body: &TokenRequest) -> Option<Resp> {
    let bad = |v: &Option<String>| {
        v.as_ref().is_some_and(|s| {
            s.chars().count() > MAX_DEVICE_CHARS || s.chars().any(char::is_control)
        })
    };
    let field = if bad(&body.device_name) {
        "device_name"
    } else if bad(&body.device_type) {
        "device_type"
    } else {
        return None;
    };
    Some(h::error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        &format!(
            "{field} must be at most {MAX_DEVICE_CHARS} characters without control characters"
        ),
    ))
}

/// Count one attempt against `ip`'s failed-attempt budget (refunded by the
/// caller on success); `Some(429)` with `Retry-After` when the budget is spent.
/// `endpoint` labels the metric, `what` names the attempts in the log.
pub(super) fn take_attempt(
    state: &AuthState,
    ip: std::net::IpAddr,
    limit: u32,
    endpoint: &'static str,
    what: &str,
) -> Option<Resp> {
    let Err(secs) = state
        .limits
        .auth_failures
        .acquire(ip, limit, Instant::now())
    else {
        return None;
    };
    state.metrics.auth(endpoint, "rate_limited");
    warn!(peer = %ip, retry_after_secs = secs, "too many failed {what} from this address");
    let mut r = h::error(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
        &format!("too many failed attempts from this address; retry in {secs} s"),
    );
    r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    Some(r)
}

/// `POST /auth/token`.
pub async fn token(state: &AuthState, conn: ConnInfo, req: Request<Incoming>) -> Resp {
    let auth = &state.auth;
    let ip = conn.peer.ip();
    let limit = auth.policy().max_failed_attempts_per_minute;
    if let Some(r) = take_attempt(state, ip, limit, "token", "token requests") {
        return r;
    }
    let refund = || state.limits.auth_failures.refund(ip, limit, Instant::now());
    let max = state.config().limits.max_body_bytes;
    let body: TokenRequest = match h::read_json(req, max).await {
        Ok(b) => b,
        Err(r) => {
            refund();
            state.metrics.auth("token", "bad_request");
            return r;
        }
    };
    if !valid_client_id(&body.client_id) {
        refund();
        state.metrics.auth("token", "bad_request");
        return h::error(
            StatusCode::BAD_REQUEST,
            "invalid_client_id",
            "client_id must be 1-128 characters of A-Z a-z 0-9 . _ -",
        );
    }
    if let Some(r) = bad_device(&body) {
        refund();
        state.metrics.auth("token", "bad_request");
        return r;
    }
    let credential = auth.policy().credential(&body.client_id);
    let ok = match &credential {
        Credential::Open => true,
        Credential::Registered(phc) => check_secret(state, phc.clone(), body.client_secret).await,
        Credential::Unknown(dummy) => {
            // Same cost as a registered id, then refused whatever it says.
            let _ = check_secret(state, dummy.clone(), body.client_secret).await;
            false
        }
    };
    if !ok {
        state.metrics.auth("token", "invalid_client");
        info!(client_id = %body.client_id, peer = %ip, "token refused: unknown client or wrong secret");
        return invalid_client();
    }
    refund();
    let who = Subject {
        client_id: body.client_id,
        device_name: body.device_name,
        device_type: body.device_type,
    };
    match auth.issue_pair(&who, None) {
        Ok(pair) => {
            state.metrics.auth("token", "ok");
            info!(
                client_id = %who.client_id,
                peer = %ip,
                open_enrollment = matches!(credential, Credential::Open),
                device_type = who.device_type.as_deref().unwrap_or(""),
                "tokens issued"
            );
            h::json(StatusCode::OK, &pair)
        }
        Err(e) => {
            state.metrics.auth("token", "error");
            error!(client_id = %who.client_id, error = %e, "cannot sign tokens");
            internal("signing_failed", "the tokens could not be signed")
        }
    }
}

/// Verify `secret` against `phc` off the async workers, with bounded
/// concurrency. A missing secret is checked as an empty one (same cost) and
/// refused.
async fn check_secret(state: &AuthState, phc: String, secret: Option<String>) -> bool {
    let Ok(_permit) = state.auth.argon2_slots().acquire().await else {
        return false;
    };
    let job = move || {
        let ok = clients::verify_secret(&phc, secret.as_deref().unwrap_or("").as_bytes());
        ok && secret.is_some()
    };
    tokio::task::spawn_blocking(job).await.unwrap_or(false)
}

/// Run a blocking ledger change off the async workers.
pub(crate) async fn ledger_job<T: Send + 'static>(
    state: &AuthState,
    job: impl FnOnce(&super::ledger::Ledger, u64) -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let ledger = state.auth.ledger().clone();
    tokio::task::spawn_blocking(move || job(&ledger, now_secs()))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// A refresh token presented a second time: revoke its family (the pair
/// minted from its first use may be in a thief's hands) and log it.
async fn reused(state: &AuthState, conn: &ConnInfo, claims: Claims) -> Resp {
    state.metrics.auth("refresh", "reused");
    let family = claims.family().to_string();
    warn!(
        security_event = "refresh_token_reuse",
        client_id = %claims.sub,
        jti = %claims.jti,
        family = %family,
        peer = %conn.peer.ip(),
        "refresh token reuse: it was already used or revoked; it may have been stolen: its whole token family is revoked"
    );
    let sub = claims.sub.clone();
    match ledger_job(state, move |l, now| l.revoke_family(&claims, now)).await {
        Ok(Revoke::Stored) => {
            state.metrics.revocations.inc();
        }
        Ok(Revoke::AlreadyRevoked) => {}
        Err(e) => {
            error!(client_id = %sub, family = %family, error = %e, "cannot store the revocation of a reused refresh token's family");
        }
    }
    invalid_token(&AuthError::Revoked)
}

/// `POST /auth/refresh`.
pub async fn refresh(state: &AuthState, conn: ConnInfo, req: Request<Incoming>) -> Resp {
    let max = state.config().limits.max_body_bytes;
    let body: RefreshRequest = match h::read_json(req, max).await {
        Ok(b) => b,
        Err(r) => {
            state.metrics.auth("refresh", "bad_request");
            return r;
        }
    };
    let claims = match state
        .auth
        .decode(&body.refresh_token, Some(TokenType::Refresh))
    {
        Ok(c) => c,
        Err(e) => {
            state.metrics.auth("refresh", e.reason());
            info!(peer = %conn.peer.ip(), reason = e.reason(), "refresh refused");
            return invalid_token(&e);
        }
    };
    // A dead family or a cut-off client is refused before anything is
    // written (replaying dead tokens costs no fsync).
    if let Err(e) = state.auth.ledger().check_family_and_client(&claims) {
        state.metrics.auth("refresh", e.reason());
        info!(client_id = %claims.sub, peer = %conn.peer.ip(), reason = e.reason(), "refresh refused");
        return invalid_token(&e);
    }
    // Consume (atomically, on disk): a second presentation is reuse.
    let c = claims.clone();
    match ledger_job(state, move |l, now| l.consume_refresh(&c, now)).await {
        Ok(Revoke::Stored) => {
            state.metrics.revocations.inc();
        }
        Ok(Revoke::AlreadyRevoked) => return reused(state, &conn, claims).await,
        Err(e) => {
            state.metrics.auth("refresh", "store_failed");
            error!(client_id = %claims.sub, jti = %claims.jti, error = %e, "cannot store the used refresh token");
            return internal(
                "revocation_not_stored",
                "the used refresh token could not be recorded; no new tokens were issued",
            );
        }
    }
    let who = Subject {
        client_id: claims.sub.clone(),
        device_name: claims.device_name.clone(),
        device_type: claims.device_type.clone(),
    };
    match state
        .auth
        .issue_pair(&who, Some(claims.family().to_string()))
    {
        Ok(pair) => {
            state.metrics.auth("refresh", "ok");
            info!(client_id = %claims.sub, used_jti = %claims.jti, family = claims.family(), "tokens refreshed");
            h::json(StatusCode::OK, &pair)
        }
        Err(e) => {
            state.metrics.auth("refresh", "error");
            error!(client_id = %claims.sub, error = %e, "cannot sign tokens");
            internal("signing_failed", "the tokens could not be signed")
        }
    }
}

pub(crate) fn rfc3339(secs: u64) -> String {
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut out = Vec::with_capacity(32);
    h::write_rfc3339(&mut out, t);
    String::from_utf8(out).unwrap_or_default()
}

fn not_valid(e: &AuthError) -> Resp {
    h::json(
        StatusCode::UNAUTHORIZED,
        &NotValidBody {
            message: e.to_string(),
            reason: e.reason(),
            valid: false,
        },
    )
}

/// `POST /auth/validate`.
pub async fn validate(state: &AuthState, _conn: ConnInfo, req: Request<Incoming>) -> Resp {
    let token = h::bearer(&req).unwrap_or("");
    match state.auth.verify_access(token) {
        Ok(c) => {
            state.metrics.auth("validate", "ok");
            let body = ValidBody {
                expires_at: rfc3339(c.exp),
                issued_at: rfc3339(c.iat),
                token_type: c.typ.as_str(),
                client_id: c.sub,
                device_name: c.device_name,
                device_type: c.device_type,
                jti: c.jti,
                valid: true,
            };
            h::json(StatusCode::OK, &body)
        }
        Err(e) => {
            state.metrics.auth("validate", e.reason());
            not_valid(&e)
        }
    }
}

/// `GET /auth/health`.
/// `GET /auth/health`; `details` (loopback or admin caller) adds the
/// settings and counts.
pub fn health(state: &AuthState, details: bool) -> Resp {
    let policy = state.auth.policy();
    let ledger = state.auth.ledger();
    let d = |v| details.then_some(v);
    h::json(
        StatusCode::OK,
        &AuthHealthBody {
            access_ttl_secs: d(policy.access_ttl.as_secs()),
            algorithm: details.then(|| state.auth.algorithm().as_str()),
            open_enrollment: details.then_some(policy.open_enrollment),
            refresh_ttl_secs: d(policy.refresh_ttl.as_secs()),
            registered_clients: details.then(|| policy.registered_clients()),
            revoked_count: details.then(|| state.auth.revoked_count()),
            revoked_families: details.then(|| ledger.revoked_families()),
            client_cutoffs: details.then(|| ledger.client_cutoffs()),
            status: "healthy",
        },
    )
}
