//! `POST /auth/revoke`: take tokens back.
//!
//! - `{"token": T}` in the body, or no body and `T` as the bearer: revoke
//!   `T` (access or refresh) **and its family**, so revoking an access token
//!   also kills the refresh token minted with it (and every later pair of
//!   the chain). The body wins when both are sent: the header may
//!   authenticate the caller while the body names the token to revoke.
//! - `{"client_id": X}` with an admin client's access token as the bearer:
//!   set X's cutoff to now, so every token issued to X so far is refused; X
//!   can sign in again with its secret. A non-admin bearer gets 403.
//!
//! The 200 is sent only once the change is on disk.

use http::header::CONTENT_TYPE;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};
use utoipa::ToSchema;

use super::cutoffs::now_us;
use super::handlers::{internal, invalid_token, ledger_job};
use super::revocation::Revoke;
use super::AuthState;
use crate::config::valid_client_id;
use crate::response::{self as h, Resp};
use crate::server::ConnInfo;

/// `POST /auth/revoke` body (optional: without it the bearer token is
/// revoked): a token, or (admin) a client, never both.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum RevokeRequest {
    Token(RevokeToken),
    Client(RevokeClient),
}

/// Revoke a token and its family.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeToken {
    /// The access or refresh token to revoke, with its family (default:
    /// the bearer token).
    #[serde(default)]
    token: Option<String>,
}

/// Admin only: refuse every token a client holds now.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeClient {
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,128}$", example = "lost-phone")]
    client_id: String,
}

/// `POST /auth/revoke` 200.
#[derive(Serialize, ToSchema)]
pub(crate) struct RevokedBody {
    /// Always `true`: the revocation is on disk.
    revoked: bool,
    /// The revoked token's id (a token revocation).
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    /// The revoked token family (a token revocation).
    #[serde(skip_serializing_if = "Option::is_none")]
    family: Option<String>,
    /// The client cut off (a client revocation).
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    /// RFC 3339 UTC: tokens of `client_id` issued up to this instant are
    /// refused (a client revocation).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "2025-11-08T12:00:00.000000Z")]
    not_before: Option<String>,
    /// Open `/ws/chat` sessions of this token, closed with code 1008.
    #[serde(skip_serializing_if = "Option::is_none")]
    sessions_closed: Option<usize>,
}

/// What the caller asked to revoke.
enum Target {
    Token(String),
    Client(String),
}

/// The target: `{token}` or `{client_id}` from a non-empty JSON body, else
/// the bearer token.
async fn revoke_target(state: &AuthState, req: Request<Incoming>) -> Result<Target, Resp> {
    let bearer = h::bearer(&req).map(str::to_string);
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    let max = state.config().limits.max_body_bytes;
    let bytes = h::read_body(req, max, false).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Target::Token(bearer.unwrap_or_default()));
    }
    if !is_json {
        return Err(h::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with content-type: application/json",
        ));
    }
    let bad = |m: &str| h::error(StatusCode::BAD_REQUEST, "invalid_body", m);
    // An object only (serde would also take a struct from an array).
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        bad(&format!(
            "request body is not valid JSON for this endpoint: {e}"
        ))
    })?;
    let Some(fields) = value.as_object() else {
        return Err(bad(
            "the body must be a JSON object: {\"token\": ...} or {\"client_id\": ...}",
        ));
    };
    // Both keys, even one of them null, is ambiguous.
    if fields.contains_key("token") && fields.contains_key("client_id") {
        return Err(bad("send either token or client_id, not both"));
    }
    match serde_json::from_value(value) {
        Ok(RevokeRequest::Client(c)) => Ok(Target::Client(c.client_id)),
        Ok(RevokeRequest::Token(t)) => Ok(Target::Token(t.token.or(bearer).unwrap_or_default())),
        Err(_) => Err(bad(
            "the body must be {\"token\": \"<jwt>\"} or {\"client_id\": \"<id>\"} with no other field",
        )),
    }
}

/// `POST /auth/revoke`.
pub async fn revoke(state: &AuthState, conn: ConnInfo, req: Request<Incoming>) -> Resp {
    let bearer = h::bearer(&req).map(str::to_string);
    match revoke_target(state, req).await {
        Ok(Target::Token(t)) => revoke_token(state, &conn, &t).await,
        Ok(Target::Client(c)) => revoke_client(state, &conn, bearer.as_deref(), c).await,
        Err(r) => {
            state.metrics.auth("revoke", "bad_request");
            r
        }
    }
}

async fn revoke_token(state: &AuthState, conn: &ConnInfo, token: &str) -> Resp {
    let claims = match state.auth.verify(token, None) {
        Ok(c) => c,
        Err(e) => {
            state.metrics.auth("revoke", e.reason());
            return invalid_token(&e);
        }
    };
    // Sessions of the token close by themselves once the ledger moves (they
    // watch it); count them first so the answer says how many there were.
    let open = state.sessions.count_jti(&claims.jti);
    let c = claims.clone();
    match ledger_job(state, move |l, now| l.revoke_token(&c, now)).await {
        Ok(outcome) => {
            if outcome.token == Revoke::Stored {
                state.metrics.revocations.inc();
            }
            let closed = state.sessions.revoke_jti(&claims.jti).max(open);
            state.metrics.auth("revoke", "ok");
            info!(
                client_id = %claims.sub,
                jti = %claims.jti,
                family = claims.family(),
                token_type = claims.typ.as_str(),
                sessions_closed = closed,
                peer = %conn.peer.ip(),
                "token and its family revoked"
            );
            h::json(
                StatusCode::OK,
                &RevokedBody {
                    revoked: true,
                    family: Some(claims.family().to_string()),
                    jti: Some(claims.jti),
                    client_id: None,
                    not_before: None,
                    sessions_closed: Some(closed),
                },
            )
        }
        Err(e) => {
            state.metrics.auth("revoke", "store_failed");
            error!(client_id = %claims.sub, jti = %claims.jti, error = %e, "cannot store a revocation");
            internal(
                "revocation_not_stored",
                "the revocation could not be written to disk; the token is NOT revoked",
            )
        }
    }
}

async fn revoke_client(
    state: &AuthState,
    conn: &ConnInfo,
    bearer: Option<&str>,
    client_id: String,
) -> Resp {
    let admin = match state.auth.verify_access(bearer.unwrap_or("")) {
        Ok(c) => c,
        Err(e) => {
            state.metrics.auth("revoke", e.reason());
            return invalid_token(&e);
        }
    };
    if !state.auth.is_admin(&admin.sub) {
        state.metrics.auth("revoke", "forbidden");
        warn!(client_id = %admin.sub, target = %client_id, peer = %conn.peer.ip(), "client revocation refused: the caller is not an admin");
        return h::error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only an admin client (admin = true in [[auth.clients]]) may revoke another client's tokens",
        );
    }
    if !valid_client_id(&client_id) {
        state.metrics.auth("revoke", "bad_request");
        return h::error(
            StatusCode::BAD_REQUEST,
            "invalid_client_id",
            "client_id must be 1-128 characters of A-Z a-z 0-9 . _ -",
        );
    }
    let at = now_us();
    let target = client_id.clone();
    match ledger_job(state, move |l, _| l.cut_off(&target, at)).await {
        Ok(()) => {
            state.metrics.revocations.inc();
            state.metrics.auth("revoke", "ok");
            warn!(
                security_event = "client_revoked",
                client_id = %client_id,
                by = %admin.sub,
                peer = %conn.peer.ip(),
                "every token of the client issued until now is revoked"
            );
            h::json(
                StatusCode::OK,
                &RevokedBody {
                    revoked: true,
                    jti: None,
                    family: None,
                    not_before: Some(rfc3339_us(at)),
                    client_id: Some(client_id),
                    sessions_closed: None,
                },
            )
        }
        Err(e) => {
            state.metrics.auth("revoke", "store_failed");
            error!(client_id = %client_id, error = %e, "cannot store a client cutoff");
            internal(
                "revocation_not_stored",
                "the client's cutoff could not be written to disk; it holds only until a restart",
            )
        }
    }
}

/// RFC 3339 UTC of a microsecond instant.
fn rfc3339_us(us: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut out = Vec::with_capacity(32);
    h::write_rfc3339(&mut out, t);
    String::from_utf8(out).unwrap_or_default()
}
