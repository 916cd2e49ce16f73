//! Small HTTP helpers shared by every handler: the response body type, JSON
//! responses, the uniform error body, and bounded JSON request parsing.
//!
//! Error bodies are always `{"error": CODE, "message": TEXT}` so clients can
//! branch on a stable code and show the text.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The body type of every response the gateway writes.
pub type Body = Full<Bytes>;
/// A response as handlers return it.
pub type Resp = Response<Body>;

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A JSON response with `status`.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Resp {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, JSON);
    resp
}

/// Body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"error": "not_found", "message": "no endpoint at /nope; GET / lists them"}))]
pub struct ErrorBody<'a> {
    /// A stable, machine-readable code such as `not_found` or `invalid_body`.
    pub error: &'a str,
    /// What went wrong and what to do, for people.
    pub message: &'a str,
}

/// An error response: `{"error": code, "message": message}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Resp {
    json(
        status,
        &ErrorBody {
            error: code,
            message,
        },
    )
}

/// A response with a plain body and content type.
pub fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Whether the request's `Accept` header prefers `mime` (a plain substring
/// check is enough for the two cases the gateway distinguishes).
pub fn accepts<B>(req: &Request<B>, mime: &str) -> bool {
    req.headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.contains(mime))
        .unwrap_or(false)
}

/// The bearer token of the `Authorization` header, if any.
pub fn bearer<B>(req: &Request<B>) -> Option<&str> {
    let v = req
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Read a JSON body of at most `max` bytes into `T`. Errors are complete
/// responses: 415 for a wrong content type, 413 for an oversized body, 400
/// for malformed JSON naming what is wrong.
pub async fn read_json<T: DeserializeOwned>(req: Request<Incoming>, max: usize) -> Result<T, Resp> {
    let bytes = read_body(req, max, true).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            &format!("request body is not valid JSON for this endpoint: {e}"),
        )
    })
}

/// How long a request body may take to arrive once the headers are in.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Read a body of at most `max` bytes. With `require_json`, a non-empty body
/// must declare `content-type: application/json`.
pub async fn read_body(
    req: Request<Incoming>,
    max: usize,
    require_json: bool,
) -> Result<Bytes, Resp> {
    if require_json {
        let ct = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with content-type: application/json",
            ));
        }
    }
    if let Some(len) = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max as u64 {
            return Err(too_large(max));
        }
    }
    let collect = Limited::new(req.into_body(), max).collect();
    let Ok(collected) = tokio::time::timeout(BODY_READ_TIMEOUT, collect).await else {
        // A body trickled in slowly holds a connection and a task: cut it.
        return Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            &format!(
                "the request body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        ));
    };
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(max)),
        Err(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the request body could not be read",
        )),
    }
}

fn too_large(max: usize) -> Resp {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        &format!("request body exceeds {max} bytes"),
    )
}

/// The current time as RFC 3339 UTC with microseconds, the seed's timestamp
/// format.
pub fn now_rfc3339() -> String {
    let mut buf = Vec::with_capacity(32);
    write_rfc3339(&mut buf, time::OffsetDateTime::now_utc());
    String::from_utf8(buf).unwrap_or_default()
}

/// Write `t` as `2025-11-07T12:00:01.045000Z` into `out` without allocating
/// beyond `out`'s own growth.
pub fn write_rfc3339(out: &mut Vec<u8>, t: time::OffsetDateTime) {
    const FMT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    let _ = t.format_into(out, FMT);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_shape() {
        let t = time::macros::datetime!(2025-11-07 12:00:01.045 UTC);
        let mut v = Vec::new();
        write_rfc3339(&mut v, t);
        assert_eq!(
            std::str::from_utf8(&v).unwrap(),
            "2025-11-07T12:00:01.045000Z"
        );
        assert!(now_rfc3339().ends_with('Z'));
    }

    #[test]
    fn error_body_shape() {
        let r = error(StatusCode::NOT_FOUND, "not_found", "no such path");
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    }
}
