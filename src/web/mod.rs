//! The browser chat page: `web/index.html`, the script and `web/app.css`,
//! embedded in the binary with `include_bytes!` (no runtime folder to lose,
//! no extra crate for a few files), and `GET /models`, the list the page's
//! model picker is filled from. [`pair`]: the `/pair` page a phone opens
//! from `tars pair`'s QR code.
//!
//! `/static/app.js` is one file joined at compile time from [`SCRIPT_PARTS`]:
//! the vendored Markdown renderer and sanitizer (`web/vendor/`, versions and
//! licences in `web/vendor/README.md`) and then the page's own scripts, in
//! load order. One request, one route, and the page works offline.
//!
//! `GET /` is content-negotiated: a browser (`Accept` naming `text/html`)
//! gets the page, every other client the JSON index; both answers carry
//! `Vary: Accept`. `/static/app.js` and `/static/app.css` are exact entries
//! of the route table, so there is no path to traverse. Every file is served
//! with a strong `ETag` (SHA-256 of its bytes, computed on first use),
//! `Cache-Control: no-cache` (a browser revalidates, an upgraded binary's
//! page is seen at once, and an unchanged file costs a 304), and the
//! security headers of [`security_headers`].

mod models;

use std::sync::LazyLock;

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, VARY,
};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use sha2::{Digest, Sha256};

use crate::response::{self as h, Resp};

pub use models::{models, ModelsBody};

/// The page's Content-Security-Policy: only this origin's script, style and
/// connections (`'self'` covers `wss://` to the same host and port in
/// CSP Level 3 browsers; the browser tests connect under it), no inline
/// script, no framing, no `<base>`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
pub struct Asset {
    /// The path it is served at.
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
    /// `"<hex of the first 16 bytes of SHA-256>"`, computed on first use.
    etag: LazyLock<HeaderValue>,
}

impl Asset {
    /// The strong entity tag of the bytes, quotes included.
    pub fn etag(&self) -> &HeaderValue {
        &self.etag
    }
}

fn etag_of(bytes: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(34);
    s.push('"');
    for b in &digest[..16] {
        s.push_str(&format!("{b:02x}"));
    }
    s.push('"');
    HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("\"\""))
}

/// The files `/static/app.js` is made of, in load order (each ends with a
/// newline, so the joined script needs no separators).
pub const SCRIPT_PARTS: [(&str, &[u8]); 6] = [
    (
        "vendor/marked.min.js",
        include_bytes!("../../web/vendor/marked.min.js"),
    ),
    (
        "vendor/purify.min.js",
        include_bytes!("../../web/vendor/purify.min.js"),
    ),
    ("render.js", include_bytes!("../../web/render.js")),
    (
        "conversations.js",
        include_bytes!("../../web/conversations.js"),
    ),
    ("chat.js", include_bytes!("../../web/chat.js")),
    ("app.js", include_bytes!("../../web/app.js")),
];

const SCRIPT_LEN: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < SCRIPT_PARTS.len() {
        n += SCRIPT_PARTS[i].1.len();
        i += 1;
    }
    n
};

/// [`SCRIPT_PARTS`] joined, at compile time.
static SCRIPT: [u8; SCRIPT_LEN] = {
    // Byte by byte: `copy_from_slice` is const only from Rust 1.87 (MSRV 1.85).
    let mut out = [0u8; SCRIPT_LEN];
    let mut at = 0;
    let mut i = 0;
    while i < SCRIPT_PARTS.len() {
        let part = SCRIPT_PARTS[i].1;
        let mut j = 0;
        while j < part.len() {
            out[at] = part[j];
            at += 1;
            j += 1;
        }
        i += 1;
    }
    out
};

macro_rules! asset {
    ($path:literal, $ct:literal, $file:literal) => {
        Asset {
            path: $path,
            content_type: $ct,
            bytes: include_bytes!($file),
            etag: LazyLock::new(|| etag_of(include_bytes!($file))),
        }
    };
}

pub mod pair;

/// The page, served at `/` to browsers.
pub static PAGE: Asset = asset!("/", "text/html; charset=utf-8", "../../web/index.html");

/// The files under `/static/`.
pub static STATIC: [Asset; 2] = [
    Asset {
        path: "/static/app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: &SCRIPT,
        etag: LazyLock::new(|| etag_of(&SCRIPT)),
    },
    asset!(
        "/static/app.css",
        "text/css; charset=utf-8",
        "../../web/app.css"
    ),
];

/// True when the client asks for HTML: a browser navigating to the page.
pub fn wants_html<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let mime = parts.next().unwrap_or("").trim();
            // `text/html;q=0` means "not HTML".
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            mime.eq_ignore_ascii_case("text/html") && !refused
        })
}

/// `GET /`: the page for a browser, `json_index()` for everyone else.
pub fn index<B>(req: &Request<B>, json_index: impl FnOnce() -> Resp) -> Resp {
    let mut resp = if wants_html(req) {
        serve(&PAGE, req)
    } else {
        json_index()
    };
    resp.headers_mut()
        .append(VARY, HeaderValue::from_static("Accept"));
    resp
}

/// `GET /static/<name>`: one of [`STATIC`] (the route table lists each
/// path exactly, so anything else never gets here; 404 all the same).
pub fn asset<B>(req: &Request<B>) -> Resp {
    match STATIC.iter().find(|a| a.path == req.uri().path()) {
        Some(a) => serve(a, req),
        None => h::error(StatusCode::NOT_FOUND, "not_found", "no such file"),
    }
}

/// The headers every page response carries, 304s included.
pub fn security_headers(hs: &mut http::HeaderMap) {
    hs.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    hs.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    hs.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
}

/// True when an `If-None-Match` header lists `etag` (weak comparison, as
/// RFC 9110 asks for this header) or is `*`.
fn not_modified<B>(req: &Request<B>, etag: &HeaderValue) -> bool {
    let etag = etag.as_bytes();
    req.headers()
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t).as_bytes() == etag)
}

fn serve<B>(asset: &Asset, req: &Request<B>) -> Resp {
    let etag = asset.etag().clone();
    let (status, body) = if not_modified(req, &etag) {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else {
        (StatusCode::OK, Bytes::from_static(asset.bytes))
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let hs = resp.headers_mut();
    if status == StatusCode::OK {
        hs.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    }
    hs.insert(ETAG, etag);
    hs.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(hs);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn req(path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(Method::GET).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn json_index() -> Resp {
        h::json(
            StatusCode::OK,
            &serde_json::json!({"name": "T.A.R.S. gateway"}),
        )
    }

    #[test]
    fn browsers_get_the_page_and_api_clients_the_json() {
        let chrome = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        let r = index(&req("/", &[("accept", chrome)]), json_index);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(r.headers()[VARY], "Accept");
        for accept in [
            None,
            Some("*/*"),
            Some("application/json"),
            Some("text/html;q=0"),
        ] {
            let hs: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
            let r = index(&req("/", &hs), json_index);
            assert_eq!(r.headers()[CONTENT_TYPE], "application/json", "{accept:?}");
            assert_eq!(r.headers()[VARY], "Accept");
        }
    }

    #[test]
    fn static_files_have_types_and_security_headers() {
        for (path, ct) in [
            ("/static/app.js", "text/javascript; charset=utf-8"),
            ("/static/app.css", "text/css; charset=utf-8"),
        ] {
            let r = asset(&req(path, &[]));
            assert_eq!(r.status(), 200);
            let hs = r.headers();
            assert_eq!(hs[CONTENT_TYPE], ct);
            assert_eq!(hs[CACHE_CONTROL], "no-cache");
            assert_eq!(hs["x-content-type-options"], "nosniff");
            assert_eq!(hs["referrer-policy"], "no-referrer");
            let csp = hs["content-security-policy"].to_str().unwrap();
            assert!(csp.starts_with("default-src 'none'; script-src 'self';"));
            assert!(csp.contains("frame-ancestors 'none'"));
        }
        assert_eq!(asset(&req("/static/../Cargo.toml", &[])).status(), 404);
        assert_eq!(asset(&req("/static/index.html", &[])).status(), 404);
    }

    #[test]
    fn etags_are_strong_hashes_and_revalidate() {
        let tag = STATIC[0].etag().to_str().unwrap().to_string();
        assert_eq!(tag.len(), 34);
        assert!(tag.starts_with('"') && tag.ends_with('"') && !tag.starts_with("W/"));
        assert_ne!(STATIC[0].etag(), STATIC[1].etag());
        assert_ne!(PAGE.etag(), STATIC[0].etag());

        for inm in [
            tag.clone(),
            format!("W/{tag}"),
            format!("\"other\", {tag}"),
            "*".to_string(),
        ] {
            let r = asset(&req("/static/app.js", &[("if-none-match", &inm)]));
            assert_eq!(r.status(), 304, "{inm}");
            assert_eq!(r.headers()[ETAG], tag.as_str());
            assert!(r.headers().contains_key("content-security-policy"));
        }
        let r = asset(&req("/static/app.js", &[("if-none-match", "\"stale\"")]));
        assert_eq!(r.status(), 200);
    }

    #[test]
    fn script_is_its_parts_joined_vendor_first() {
        let joined: Vec<u8> = SCRIPT_PARTS
            .iter()
            .flat_map(|p| p.1.iter().copied())
            .collect();
        assert_eq!(STATIC[0].bytes, joined.as_slice());
        for (name, bytes) in SCRIPT_PARTS {
            assert!(bytes.ends_with(b"\n"), "{name} must end with a newline");
            assert!(std::str::from_utf8(bytes).is_ok(), "{name} is not UTF-8");
        }
        let names: Vec<&str> = SCRIPT_PARTS.iter().map(|p| p.0).collect();
        assert_eq!(names.last(), Some(&"app.js"));
        assert!(names[..2].iter().all(|n| n.starts_with("vendor/")));
    }

    #[test]
    fn page_is_small_and_has_no_inline_script_or_third_party_origin() {
        // The gzip -9 size (< 200 KB) is checked over HTTPS in tests/browser.rs.
        let total: usize = PAGE.bytes.len() + STATIC.iter().map(|a| a.bytes.len()).sum::<usize>();
        assert!(total < 400 * 1024, "{total} bytes");
        let html = std::str::from_utf8(PAGE.bytes).unwrap();
        assert!(html.contains(r#"<script src="/static/app.js" defer></script>"#));
        assert_eq!(
            html.matches("<script").count(),
            1,
            "inline script would break the CSP"
        );
        assert!(
            !html.contains(" style="),
            "inline style would break the CSP"
        );
        // The page's own files (the vendored ones carry their project's URL
        // in licence comments and parse HTML in an inert document).
        let own = SCRIPT_PARTS
            .iter()
            .filter(|p| !p.0.starts_with("vendor/"))
            .map(|p| (p.0, p.1))
            .chain([("index.html", PAGE.bytes), ("app.css", STATIC[1].bytes)]);
        for (name, bytes) in own {
            let text = std::str::from_utf8(bytes).unwrap();
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{name}"
            );
            assert!(
                !text.contains("innerHTML")
                    && !text.contains("outerHTML")
                    && !text.contains("insertAdjacentHTML")
                    && !text.contains("document.write"),
                "{name} writes HTML"
            );
        }
    }
}
