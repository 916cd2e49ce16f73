//! `GET /pair`: the page a phone opens from the QR code of `tars pair`
//! (`web/pair.html`), and its script `/static/pair.js` (`web/pair.js`),
//! which reads the code from the URL fragment, redeems it at
//! `POST /auth/pair` and opens the chat page signed in. Served like the chat
//! page: embedded, `ETag`, `no-cache`, the same Content-Security-Policy.

use std::sync::LazyLock;

use http::{Request, StatusCode};

use super::{etag_of, serve, Asset};
use crate::response::{self as h, Resp};

/// The pairing page, at `/pair`.
pub static PAGE: Asset = asset!("/pair", "text/html; charset=utf-8", "../../web/pair.html");

/// Its script, at `/static/pair.js`.
pub static SCRIPT: Asset = asset!(
    "/static/pair.js",
    "text/javascript; charset=utf-8",
    "../../web/pair.js"
);

/// `GET /pair` or `GET /static/pair.js`.
pub fn serve_path<B>(req: &Request<B>) -> Resp {
    match [&PAGE, &SCRIPT]
        .into_iter()
        .find(|a| a.path == req.uri().path())
    {
        Some(a) => serve(a, req),
        None => h::error(StatusCode::NOT_FOUND, "not_found", "no such file"),
    }
}
