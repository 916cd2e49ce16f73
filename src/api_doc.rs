//! The API reference the gateway serves about itself: `GET /openapi.json`
//! (an OpenAPI 3.1 document), `GET /docs` (Swagger UI over it) and
//! `GET /redoc` (a redirect to `/docs`: one viewer is enough).
//!
//! The document is assembled by utoipa from the handlers' own types: every
//! request and response body below is the struct the handler deserializes or
//! serializes (`#[derive(ToSchema)]` beside it), so a field renamed in the
//! code is renamed here. What cannot be derived — which paths exist, their
//! status codes and examples — is written once in [`paths`], and the unit
//! tests hold it to the route table: a route without a documented operation,
//! or an operation without a route, fails `cargo test`. Schemathesis checks
//! the rest against the running gateway (`tests/it/examples.rs`).
//!
//! Swagger UI's files come from the vendored Swagger UI release (crate
//! `utoipa-swagger-ui-vendored`): build.rs takes the three that `/docs`
//! loads out of its zip and they are compiled into the binary (no download
//! at build or run time, no CDN, no source maps). Its stock page starts it with an inline script; ours loads its own
//! initializer as a file, so `/docs` is served under the same strict
//! Content-Security-Policy as the chat page (`script-src 'self'`).

use std::sync::LazyLock;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::response::{self as h, Resp};
use crate::ws::protocol::{ErrorCode, ServerFrame};

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "T.A.R.S. gateway",
        description = "A TLS-terminating gateway in front of a local Ollama. Get a token from \
            `POST /auth/token`, then open the WebSocket `GET /ws/chat?token=<access_token>` and \
            stream answers token by token. The WebSocket protocol (every frame, close codes, \
            ordering) is described in `docs/protocol.md` of the repository; this document covers \
            the HTTP endpoints and the upgrade, and lists the server's frames (`ServerFrame`) and \
            error codes (`ErrorCode`) among its schemas.\n\n\
            Errors are always `{\"error\": CODE, \"message\": TEXT}` (the `/auth/*` token refusals \
            add a `reason`). `GET` endpoints also answer `HEAD`; `OPTIONS` answers CORS \
            preflights; any other method gets 405 with `Allow`.",
        license(name = "MIT"),
    ),
    paths(
        paths::index,
        paths::health,
        paths::ready,
        paths::metrics,
        paths::auth_token,
        paths::auth_refresh,
        paths::auth_validate,
        paths::auth_revoke,
        paths::auth_health,
        paths::ws_chat,
        paths::ws_health,
        paths::ws_sessions,
        paths::models,
        paths::openapi_json,
        paths::docs,
        paths::redoc,
        paths::auth_pair,
        paths::pair,
    ),
    components(schemas(h::ErrorBody, ServerFrame, ErrorCode)),
    modifiers(&BearerScheme),
    tags(
        (name = "gateway", description = "Health, readiness, metrics and this reference"),
        (name = "auth", description = "JWT access and refresh tokens"),
        (name = "websocket", description = "The `/ws/chat` upgrade and the session manager"),
    ),
)]
pub struct ApiDoc;

/// Name of the bearer security scheme in the document.
pub const BEARER: &str = "bearer";

/// Adds the `bearer` scheme (JWT access tokens) to the components, and
/// what the `#[utoipa::path]` attributes cannot say.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        // `/auth/revoke` takes a body or none (then the bearer token is
        // revoked); a body, when sent, is an object, never `null`.
        if let Some(body) = openapi
            .paths
            .paths
            .get_mut("/auth/revoke")
            .and_then(|p| p.post.as_mut())
            .and_then(|op| op.request_body.as_mut())
        {
            body.required = Some(utoipa::openapi::Required::False);
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from POST /auth/token (or /auth/refresh).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as JSON, built once.
static DOCUMENT: LazyLock<Bytes> = LazyLock::new(|| {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    add_links(&mut doc);
    Bytes::from(serde_json::to_vec(&doc).unwrap_or_else(|_| b"{}".to_vec()))
});

/// A token pair leads on to refreshing and revoking it: OpenAPI links, which
/// clients and schemathesis' stateful tests follow. Added to the JSON because
/// utoipa 5 writes `Link` fields in snake_case (`operation_id`), which
/// openapi-spec-validator rightly refuses.
fn add_links(doc: &mut serde_json::Value) {
    let links = serde_json::json!({
        "Refresh": {
            "operationId": "auth_refresh",
            "requestBody": {"refresh_token": "$response.body#/refresh_token"},
            "description": "Trade the refresh token for a new pair",
        },
        "Revoke": {
            "operationId": "auth_revoke",
            "requestBody": {"token": "$response.body#/access_token"},
            "description": "Revoke the access token",
        },
    });
    for path in ["/auth/token", "/auth/refresh"] {
        if let Some(ok) = doc
            .pointer_mut(&format!(
                "/paths/{}/post/responses/200",
                path.replace('/', "~1")
            ))
            .and_then(|r| r.as_object_mut())
        {
            ok.insert("links".into(), links.clone());
        }
    }
}

/// The OpenAPI document's JSON bytes.
pub fn document() -> Bytes {
    DOCUMENT.clone()
}

/// `GET /openapi.json`.
pub fn openapi_json() -> Resp {
    let mut r = Response::new(Full::new(DOCUMENT.clone()));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `/docs`: Swagger UI's page, its initializer (ours, a file: no inline
/// script), and the vendored files it loads.
const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>T.A.R.S. gateway API</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/docs/swagger-ui.css">
<link rel="stylesheet" href="/docs/index.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/swagger-initializer.js"></script>
</body>
</html>
"#;

/// Starts Swagger UI on `/openapi.json`. No validator badge (it would call
/// an outside service), no outside URLs at all.
const DOCS_INIT: &str = r##"window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
"##;

/// The files under `/docs/` that come from the vendored Swagger UI.
pub const VENDORED: &[&str] = &["swagger-ui.css", "swagger-ui-bundle.js", "index.css"];

/// A [`VENDORED`] file's bytes: build.rs takes exactly these out of the
/// vendored Swagger UI zip, so nothing else of it is in the binary.
fn vendored(name: &str) -> Option<&'static [u8]> {
    macro_rules! swagger_file {
        ($name:literal) => {
            include_bytes!(concat!(env!("OUT_DIR"), "/swagger-ui/", $name))
        };
    }
    match name {
        "swagger-ui.css" => Some(swagger_file!("swagger-ui.css")),
        "swagger-ui-bundle.js" => Some(swagger_file!("swagger-ui-bundle.js")),
        "index.css" => Some(swagger_file!("index.css")),
        _ => None,
    }
}

fn file(content_type: HeaderValue, bytes: Bytes, cache: &'static str) -> Resp {
    let mut r = Response::new(Full::new(bytes));
    let hs = r.headers_mut();
    hs.insert(CONTENT_TYPE, content_type);
    hs.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    crate::web::security_headers(hs);
    r
}

/// `GET /docs` and `GET /docs/<file>`.
pub fn docs<B>(req: &Request<B>) -> Resp {
    let path = req.uri().path();
    if path == "/docs" || path == "/docs/" {
        return file(
            HeaderValue::from_static("text/html; charset=utf-8"),
            Bytes::from_static(DOCS_PAGE.as_bytes()),
            "no-cache",
        );
    }
    let name = path.strip_prefix("/docs/").unwrap_or("");
    if name == "swagger-initializer.js" {
        return file(
            HeaderValue::from_static("text/javascript; charset=utf-8"),
            Bytes::from_static(DOCS_INIT.as_bytes()),
            "no-cache",
        );
    }
    match vendored(name).filter(|_| VENDORED.contains(&name)) {
        Some(bytes) => {
            let ct = if name.ends_with(".js") {
                HeaderValue::from_static("text/javascript; charset=utf-8")
            } else {
                HeaderValue::from_static("text/css; charset=utf-8")
            };
            file(ct, Bytes::from_static(bytes), "public, max-age=86400")
        }
        None => h::error(StatusCode::NOT_FOUND, "not_found", "no such file"),
    }
}

/// `GET /redoc`: one viewer is enough; send people to `/docs`.
pub fn redoc() -> Resp {
    let mut r = h::text(
        StatusCode::FOUND,
        "text/plain; charset=utf-8",
        "see /docs\n",
    );
    r.headers_mut()
        .insert(LOCATION, HeaderValue::from_static("/docs"));
    r
}

/// The operations. Each function exists only to carry its `#[utoipa::path]`;
/// the bodies named in them are the handlers' own types.
#[allow(dead_code)]
mod paths {
    use crate::auth::handlers::{
        AuthHealthBody, NotValidBody, RefreshRequest, RevokeRequest, RevokedBody, TokenErrorBody,
        TokenRequest, ValidBody,
    };
    use crate::auth::pair::{PairRequest, PairedBody};
    use crate::auth::TokenPair;
    use crate::metrics::SeedMetrics;
    use crate::response::ErrorBody;
    use crate::status::{HealthBody, IndexBody, ReadyBody};
    use crate::web::ModelsBody;
    use crate::ws::handlers::{SessionsBody, WsHealthBody};

    /// `GET /`.
    #[utoipa::path(
        get, path = "/", tag = "gateway",
        summary = "Name, version and the list of endpoints",
        description = "Content-negotiated: a browser (`Accept` naming `text/html`) gets the chat \
            page, every other client this JSON.",
        responses(
            (status = 200, description = "The index (or, for a browser, the chat page)",
             content(
                (IndexBody = "application/json", example = json!({
                    "endpoints": ["GET /", "GET /health", "GET /ready", "GET /metrics", "POST /auth/token"],
                    "name": "T.A.R.S. gateway", "version": "0.1.0"})),
                (String = "text/html"),
             )),
        ),
    )]
    fn index() {}

    /// `GET /health`.
    #[utoipa::path(
        get, path = "/health", tag = "gateway",
        summary = "Liveness: the process answers",
        responses(
            (status = 200, description = "Always, while the process runs", body = HealthBody,
             example = json!({"status": "healthy", "timestamp": "2025-11-07T12:00:01.045000Z",
                              "uptime_secs": 12, "version": "0.1.0"})),
        ),
    )]
    fn health() {}

    /// `GET /ready`.
    #[utoipa::path(
        get, path = "/ready", tag = "gateway",
        summary = "Readiness: Ollama answers",
        description = "Asks Ollama `GET /api/version` with a 2 s timeout; the answer is cached \
            for 3 s and only one probe runs at a time. The model, Ollama's URL and version and the \
            reason it is down are shown only to loopback callers and admin clients' bearer tokens; \
            anyone else gets `status` alone.",
        security((), ("bearer" = [])),
        responses(
            (status = 200, description = "Ollama answers", body = ReadyBody,
             example = json!({"model": "mistral:7b-instruct", "ollama": {"host": "http://127.0.0.1:11434",
                              "status": "up", "version": "0.5.1"}, "status": "ready"})),
            (status = 503, description = "Ollama does not answer", body = ReadyBody,
             example = json!({"model": "mistral:7b-instruct", "ollama": {"host": "http://127.0.0.1:11434",
                              "status": "down"}, "reason": "cannot reach Ollama at http://127.0.0.1:11434: connection refused",
                              "status": "not_ready"})),
        ),
    )]
    fn ready() {}

    /// `GET /metrics`.
    #[utoipa::path(
        get, path = "/metrics", tag = "gateway",
        summary = "Prometheus/OpenMetrics text, or the seed's JSON counters",
        description = "OpenMetrics text by default; JSON when `Accept` names `application/json`.",
        responses(
            (status = 200, description = "The metrics",
             content(
                (String = "application/openmetrics-text"),
                (SeedMetrics = "application/json", example = json!({
                    "active_connections": 1, "unique_clients": 1, "total_connections": 3,
                    "total_messages": 12, "total_tokens": 840, "total_errors": 0,
                    "resident_memory_bytes": 9_437_184, "open_fds": 14})),
             )),
        ),
    )]
    fn metrics() {}

    /// `POST /auth/token`.
    #[utoipa::path(
        post, path = "/auth/token", tag = "auth",
        summary = "Get an access and a refresh token",
        description = "A registered client sends its `client_secret`; with `[auth] open_enrollment \
            = true` any well-formed `client_id` gets tokens without one. Failed attempts are \
            limited per address.",
        request_body(content = TokenRequest, content_type = "application/json",
            example = json!({"client_id": "client-001", "client_secret": "s3cret",
                             "device_name": "Windows Desktop", "device_type": "windows"})),
        responses(
            (status = 200, description = "A token pair", body = TokenPair,
             example = json!({"access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...",
                              "refresh_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...",
                              "token_type": "bearer", "expires_in": 86400, "refresh_expires_in": 604800})),
            (status = 400, description = "Malformed JSON (`invalid_body`), a bad `client_id` \
              (`invalid_client_id`) or device field (`invalid_request`)", body = ErrorBody,
             example = json!({"error": "invalid_client_id",
                              "message": "client_id must be 1-128 characters of A-Z a-z 0-9 . _ -"})),
            (status = 401, description = "Unknown client or wrong secret (one answer for both)", body = ErrorBody,
             example = json!({"error": "invalid_client", "message": "unknown client or wrong secret"})),
            (status = 408, description = "The body did not arrive within 10 s (`body_timeout`)", body = ErrorBody),
            (status = 413, description = "Body over `[limits] max_body_bytes`", body = ErrorBody,
             example = json!({"error": "body_too_large", "message": "request body exceeds 16384 bytes"})),
            (status = 415, description = "Body not sent as `application/json`", body = ErrorBody,
             example = json!({"error": "unsupported_media_type",
                              "message": "send the body as JSON with content-type: application/json"})),
            (status = 429, description = "Too many failed attempts (`too_many_attempts`) or too many \
              `/auth` requests (`rate_limited`) from this address", body = ErrorBody,
             headers(("Retry-After" = u64, description = "Seconds to wait")),
             example = json!({"error": "too_many_attempts",
                              "message": "too many failed attempts from this address; retry in 42 s"})),
            (status = 500, description = "The tokens could not be signed", body = ErrorBody),
        ),
    )]
    fn auth_token() {}

    /// `POST /auth/refresh`.
    #[utoipa::path(
        post, path = "/auth/refresh", tag = "auth",
        summary = "Trade a refresh token for a new pair",
        description = "The refresh token is revoked as it is used (rotation): presenting it again \
            gets 401 with reason `revoked` and is logged as possible theft.",
        request_body(content = RefreshRequest, content_type = "application/json",
            example = json!({"refresh_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9..."})),
        responses(
            (status = 200, description = "A new token pair", body = TokenPair),
            (status = 400, description = "Malformed JSON", body = ErrorBody),
            (status = 401, description = "The refresh token is refused", body = TokenErrorBody,
             example = json!({"error": "invalid_token", "message": "the token has been revoked", "reason": "revoked"})),
            (status = 413, description = "Body too large", body = ErrorBody),
            (status = 408, description = "The body did not arrive within 10 s (`body_timeout`)", body = ErrorBody),
            (status = 415, description = "Body not sent as `application/json`", body = ErrorBody),
            (status = 429, description = "Too many `/auth` requests from this address", body = ErrorBody,
             headers(("Retry-After" = u64, description = "Seconds to wait"))),
            (status = 500, description = "The used token could not be recorded; no tokens issued", body = ErrorBody),
        ),
    )]
    fn auth_refresh() {}

    /// `POST /auth/validate`.
    #[utoipa::path(
        post, path = "/auth/validate", tag = "auth",
        summary = "Check an access token",
        security(("bearer" = [])),
        responses(
            (status = 200, description = "The token is valid: its claims", body = ValidBody,
             example = json!({"client_id": "client-001", "device_name": "Windows Desktop",
                              "device_type": "windows", "expires_at": "2025-11-08T12:00:00.000000Z",
                              "issued_at": "2025-11-07T12:00:00.000000Z",
                              "jti": "0b5c2a8e-8f3c-4a57-9d3e-2f6f1c1e4b7a", "token_type": "access", "valid": true})),
            (status = 401, description = "Missing, malformed, expired, revoked or refresh token", body = NotValidBody,
             example = json!({"message": "the token has expired", "reason": "expired", "valid": false})),
        ),
    )]
    fn auth_validate() {}

    /// `POST /auth/revoke`.
    #[utoipa::path(
        post, path = "/auth/revoke", tag = "auth",
        summary = "Revoke a token and its family, or (admin) every token of a client",
        description = "Revokes the token in the body (`{\"token\": ...}`) or, without a body, the \
            bearer token, together with its token family: revoking an access token also revokes the \
            refresh token minted with it and every later pair of that chain. Access and refresh \
            tokens alike; `/ws/chat` sessions opened with it are closed with code 1008. \
            `{\"client_id\": ...}` with an admin client's bearer token revokes every token issued \
            to that client until now (it can sign in again); other callers get 403. The 200 is sent \
            only once the revocation is on disk.",
        security((), ("bearer" = [])),
        request_body(content = RevokeRequest, content_type = "application/json",
            description = "Optional: without a body the bearer token is revoked.",
            example = json!({"token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9..."})),
        responses(
            (status = 200, description = "Revoked", body = RevokedBody,
             example = json!({"family": "5d0c8f8e-2b7a-4c1e-9f3d-8a6b1e2c4d5f", "jti": "0b5c2a8e-8f3c-4a57-9d3e-2f6f1c1e4b7a", "revoked": true, "sessions_closed": 1})),
            (status = 400, description = "Malformed JSON, both `token` and `client_id`, or a malformed `client_id`", body = ErrorBody),
            (status = 401, description = "No token, or one that is not valid", body = TokenErrorBody),
            (status = 403, description = "`client_id` revocation by a client that is not an admin", body = ErrorBody),
            (status = 413, description = "Body too large", body = ErrorBody),
            (status = 408, description = "The body did not arrive within 10 s (`body_timeout`)", body = ErrorBody),
            (status = 415, description = "A body not sent as `application/json`", body = ErrorBody),
            (status = 429, description = "Too many `/auth` requests from this address", body = ErrorBody,
             headers(("Retry-After" = u64, description = "Seconds to wait"))),
            (status = 500, description = "The revocation could not be written; the token is NOT revoked", body = ErrorBody),
        ),
    )]
    fn auth_revoke() {}

    /// `GET /auth/health`.
    #[utoipa::path(
        get, path = "/auth/health", tag = "auth",
        summary = "The token service's settings and revocation count",
        description = "The settings and counts are shown only to loopback callers and admin \
            clients' bearer tokens; anyone else gets `status` alone.",
        security((), ("bearer" = [])),
        responses(
            (status = 200, description = "Healthy", body = AuthHealthBody,
             example = json!({"access_ttl_secs": 86400, "algorithm": "HS256", "open_enrollment": false,
                              "refresh_ttl_secs": 604800, "registered_clients": 2, "revoked_count": 0,
                              "revoked_families": 0, "client_cutoffs": 0,
                              "status": "healthy"})),
        ),
    )]
    fn auth_health() {}

    /// `GET /ws/chat`.
    #[utoipa::path(
        get, path = "/ws/chat", tag = "websocket",
        summary = "Open a chat session (WebSocket upgrade)",
        description = "A WebSocket handshake (`Connection: Upgrade`, `Upgrade: websocket`, \
            `Sec-WebSocket-Version: 13`, `Sec-WebSocket-Key`) with an access token as `?token=` or \
            `Authorization: Bearer`. An `Origin` header, when sent, must be listed in `[cors] \
            origins` or equal the `Host`. Everything is checked before the upgrade, and a refused \
            client gets JSON. After the 101 the protocol of `docs/protocol.md` runs: \
            `connection_ack`, then `chat` → `token`... → `complete`.",
        params(("token" = Option<String>, Query, description = "The access token (or send it as a bearer token)")),
        security((), ("bearer" = [])),
        responses(
            (status = 101, description = "Switching Protocols: the session starts with a `connection_ack` frame"),
            (status = 400, description = "Not a WebSocket handshake (`not_websocket`, `bad_handshake`)", body = ErrorBody,
             example = json!({"error": "not_websocket",
                              "message": "this endpoint only speaks WebSocket: send an Upgrade: websocket request"})),
            (status = 401, description = "No token (`missing_token`) or a refused one (`invalid_token`)", body = ErrorBody,
             example = json!({"error": "invalid_token", "message": "access token refused: expired"})),
            (status = 403, description = "`Origin` not allowed (`origin_not_allowed`)", body = ErrorBody),
            (status = 503, description = "Connection limit reached (`too_many_connections`, \
              `too_many_client_connections`)", body = ErrorBody,
             headers(("Retry-After" = u64, description = "Seconds to wait")),
             example = json!({"error": "too_many_connections",
                              "message": "the gateway has 10 sessions open, its limit; try again later"})),
        ),
    )]
    fn ws_chat() {}

    /// `GET /ws/health`.
    #[utoipa::path(
        get, path = "/ws/health", tag = "websocket",
        summary = "Open sessions and the limit",
        responses(
            (status = 200, description = "Healthy", body = WsHealthBody,
             example = json!({"active_connections": 2, "max_connections": 10, "status": "healthy",
                              "timestamp": "2025-11-07T12:00:01.045000Z", "unique_clients": 2})),
        ),
    )]
    fn ws_health() {}

    /// `GET /ws/sessions`.
    #[utoipa::path(
        get, path = "/ws/sessions", tag = "websocket",
        summary = "List open sessions (admin clients only)",
        security(("bearer" = [])),
        responses(
            (status = 200, description = "The sessions, oldest first", body = SessionsBody,
             example = json!({"active_sessions": 1, "sessions": [{
                "session_id": "550e8400-e29b-41d4-a716-446655440000", "client_id": "client-001",
                "ip_address": "192.168.1.20", "connected_at": "2025-11-07T12:00:00.000000Z",
                "last_activity": "2025-11-07T12:00:30.015000Z", "message_count": 3,
                "token_count": 42, "error_count": 0}]})),
            (status = 401, description = "No token or a refused one", body = ErrorBody),
            (status = 403, description = "The client is not an admin (`not_admin`)", body = ErrorBody,
             example = json!({"error": "not_admin", "message": "only clients with admin = true may list sessions"})),
        ),
    )]
    fn ws_sessions() {}

    /// `GET /models`.
    #[utoipa::path(
        get, path = "/models", tag = "gateway",
        summary = "The models this client may use",
        security(("bearer" = [])),
        responses(
            (status = 200, description = "The client's models and its default", body = ModelsBody,
             example = json!({"default": "mistral:7b-instruct", "models": ["mistral:7b-instruct", "llama3.2"],
                              "history_turns": 20, "conversation_idle_secs": 3600})),
            (status = 401, description = "No token or a refused one", body = ErrorBody,
             headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        ),
    )]
    fn models() {}

    /// `GET /openapi.json`.
    #[utoipa::path(
        get, path = "/openapi.json", tag = "gateway",
        summary = "This document (OpenAPI 3.1)",
        responses((status = 200, description = "The OpenAPI document", content_type = "application/json",
                   body = Object)),
    )]
    fn openapi_json() {}

    /// `GET /docs`.
    #[utoipa::path(
        get, path = "/docs", tag = "gateway",
        summary = "Swagger UI over this document",
        responses((status = 200, description = "The Swagger UI page", content_type = "text/html", body = String)),
    )]
    fn docs() {}

    /// `GET /redoc`.
    #[utoipa::path(
        get, path = "/redoc", tag = "gateway",
        summary = "Redirects to /docs",
        responses((status = 302, description = "To `/docs`",
                   headers(("Location" = String, description = "`/docs`")))),
    )]
    fn redoc() {}

    /// `POST /auth/pair`.
    #[utoipa::path(
        post, path = "/auth/pair", tag = "auth",
        summary = "Redeem a one-time pairing code from `tars pair` for a token pair",
        description = "The page at `/pair` sends the code it read from its URL fragment. A code \
            works once and until it expires (`tars pair --ttl-mins`, 10 by default). Wrong, used \
            and expired codes count against the same per-address failed-attempt limit as a wrong \
            secret at `/auth/token`.",
        request_body(content = PairRequest, content_type = "application/json",
            example = json!({"code": "K7MPQ-W3XRT"})),
        responses(
            (status = 200, description = "The client the code was made for, and its token pair", body = PairedBody,
             example = json!({"client_id": "device-4kq9",
                              "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...",
                              "refresh_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...",
                              "token_type": "bearer", "expires_in": 86400, "refresh_expires_in": 604800})),
            (status = 400, description = "Malformed JSON (`invalid_body`) or device field (`invalid_request`)", body = ErrorBody),
            (status = 401, description = "Unknown, used, expired code, or a code for another `client_id` (`invalid_code`)", body = ErrorBody,
             example = json!({"error": "invalid_code", "message": "unknown or already used pairing code"})),
            (status = 408, description = "The body did not arrive within 10 s (`body_timeout`)", body = ErrorBody),
            (status = 409, description = "The code's client is no longer registered (`unknown_client`)", body = ErrorBody),
            (status = 413, description = "Body over `[limits] max_body_bytes`", body = ErrorBody),
            (status = 415, description = "Body not sent as `application/json`", body = ErrorBody),
            (status = 429, description = "Too many failed attempts (`too_many_attempts`) or too many \
              `/auth` requests (`rate_limited`) from this address", body = ErrorBody,
             headers(("Retry-After" = u64, description = "Seconds to wait"))),
            (status = 500, description = "The codes could not be read or the tokens not signed", body = ErrorBody),
        ),
    )]
    fn auth_pair() {}

    /// `GET /pair`.
    #[utoipa::path(
        get, path = "/pair", tag = "auth",
        summary = "The pairing page a phone opens from the QR code of `tars pair`",
        description = "Open it as `/pair#CODE`: the page reads the code from the fragment (never \
            sent to the server), redeems it at `POST /auth/pair` and opens the chat page signed in.",
        responses((status = 200, description = "The pairing page", content_type = "text/html", body = String)),
    )]
    fn pair() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::from_slice(&DOCUMENT).unwrap()
    }

    #[test]
    fn document_is_openapi_3_1_with_the_bearer_scheme() {
        let d = doc();
        assert!(d["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(d["info"]["version"], env!("CARGO_PKG_VERSION"));
        let s = &d["components"]["securitySchemes"][BEARER];
        assert_eq!(s["type"], "http");
        assert_eq!(s["scheme"], "bearer");
        assert!(d["components"]["schemas"]["ErrorBody"].is_object());
        // The WebSocket frames and error codes come from the protocol's own types.
        let frames = serde_json::to_string(&d["components"]["schemas"]["ServerFrame"]).unwrap();
        for t in [
            "connection_ack",
            "token",
            "complete",
            "error",
            "system",
            "status",
        ] {
            assert!(
                frames.contains(&format!("\"{t}\"")),
                "{t} missing: {frames}"
            );
        }
        // The `status` frame's phases and the `complete` frame's upstream.
        let all = serde_json::to_string(&d["components"]["schemas"]).unwrap();
        for t in ["queued", "loading_model", "upstream"] {
            assert!(all.contains(&format!("\"{t}\"")), "{t} missing: {all}");
        }
        let codes = &d["components"]["schemas"]["ErrorCode"]["enum"];
        for c in ErrorCode::ALL {
            assert!(
                codes.as_array().unwrap().contains(&c.as_str().into()),
                "{codes}"
            );
        }
        // A revoke body names a token or a client (oneOf), never both.
        let revoke = &d["components"]["schemas"]["RevokeRequest"];
        assert_eq!(
            revoke["oneOf"].as_array().map(Vec::len),
            Some(2),
            "{revoke}"
        );
        assert_eq!(
            d["components"]["schemas"]["RevokeClient"]["required"],
            serde_json::json!(["client_id"])
        );
        assert_eq!(
            d["paths"]["/ws/sessions"]["get"]["security"][0][BEARER],
            serde_json::json!([])
        );
        let link = &d["paths"]["/auth/token"]["post"]["responses"]["200"]["links"]["Refresh"];
        assert_eq!(link["operationId"], "auth_refresh");
        assert_eq!(
            d["paths"]["/auth/refresh"]["post"]["operationId"],
            "auth_refresh"
        );
    }

    /// The examples in the document parse as the handlers' own types would
    /// write them: every property an example names exists in its schema.
    #[test]
    fn examples_name_only_documented_fields() {
        let d = doc();
        let schemas = &d["components"]["schemas"];
        for (path, item) in d["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let Some(responses) = op["responses"].as_object() else {
                    continue;
                };
                for (status, r) in responses {
                    let Some(content) = r["content"].as_object() else {
                        continue;
                    };
                    for media in content.values() {
                        let (Some(ex), Some(rf)) = (
                            media["example"].as_object(),
                            media["schema"]["$ref"].as_str(),
                        ) else {
                            continue;
                        };
                        let name = rf.rsplit('/').next().unwrap();
                        let props = schemas[name]["properties"].as_object().unwrap();
                        for k in ex.keys() {
                            assert!(
                                props.contains_key(k),
                                "{method} {path} {status}: example field {k} not in {name}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn docs_page_has_no_inline_script_and_its_files_are_embedded() {
        assert!(!DOCS_PAGE.contains("<script>"));
        assert!(!DOCS_PAGE.contains("onload="));
        let get = |p: &str| docs(&Request::get(p).body(()).unwrap());
        let r = get("/docs");
        assert_eq!(r.status(), 200);
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"));
        assert!(!csp.contains("unsafe-inline"));
        for f in VENDORED.iter().chain(["swagger-initializer.js"].iter()) {
            let r = get(&format!("/docs/{f}"));
            assert_eq!(r.status(), 200, "{f}");
            assert!(DOCS_PAGE.contains(&format!("/docs/{f}")), "{f} not loaded");
        }
        let bundle = vendored("swagger-ui-bundle.js").unwrap();
        assert!(bundle.windows(15).any(|w| w == b"SwaggerUIBundle"));
        assert_eq!(get("/docs/swagger-ui.js.map").status(), 404);
        assert_eq!(get("/docs/../Cargo.toml").status(), 404);
        assert_eq!(redoc().headers()[LOCATION], "/docs");
    }
}
