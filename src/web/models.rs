//! `GET /models`: the models the bearer's client may use and at least one
//! up upstream serves, for the page's
//! model picker: `{"default": "...", "models": [...], "history_turns": N,
//! "conversation_idle_secs": S}`. `default` is `[ollama] model` when the
//! client may use it, else the first model it may use (`null` when it may
//! use none). The two bounds of the gateway's conversation memory let the
//! page mark which stored turns the model no longer sees (ADR 0006).

use http::header::{HeaderValue, CACHE_CONTROL, WWW_AUTHENTICATE};
use http::{Request, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Auth;
use crate::config::Config;
use crate::response::{self as h, Resp};
use crate::upstream::Pool;

fn unauthorized(code: &str, message: &str) -> Resp {
    let mut r = h::error(StatusCode::UNAUTHORIZED, code, message);
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// `GET /models` 200.
#[derive(Serialize, ToSchema)]
pub struct ModelsBody<'a> {
    /// `[ollama] model` when this client may use it, else its first model;
    /// `null` when it may use none.
    pub default: Option<&'a str>,
    /// The models this client may name in a `chat` message.
    pub models: &'a [String],
    /// `[ollama] history_turns`: how many earlier turns of a conversation
    /// the gateway sends to the model.
    pub history_turns: usize,
    /// `[ollama] conversation_idle_secs`: a conversation unused this long is
    /// forgotten by the gateway.
    pub conversation_idle_secs: u64,
}

/// `GET /models` with `Authorization: Bearer <access token>`.
pub fn models<B>(auth: &Auth, pool: &Pool, cfg: &Config, req: &Request<B>) -> Resp {
    let Some(token) = h::bearer(req) else {
        return unauthorized(
            "missing_token",
            "send an access token as Authorization: Bearer <jwt>",
        );
    };
    let claims = match auth.verify_access(token) {
        Ok(c) => c,
        Err(e) => {
            return unauthorized(
                "invalid_token",
                &format!("access token refused: {}", e.reason()),
            )
        }
    };
    // Only models an up upstream serves (each once).
    let served = pool.served(&cfg.ollama.allowed_models);
    let models = auth.allowed_models(&claims.sub, &served);
    let default = if models.contains(&cfg.ollama.model) {
        Some(&cfg.ollama.model)
    } else {
        models.first()
    };
    let mut r = h::json(
        StatusCode::OK,
        &ModelsBody {
            default: default.map(String::as_str),
            models: &models,
            history_turns: cfg.ollama.history_turns,
            conversation_idle_secs: cfg.ollama.conversation_idle.as_secs(),
        },
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
