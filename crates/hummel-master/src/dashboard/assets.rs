//! The pages' own files and the headers every page of the master carries.
//!
//! - `GET /ui/live.js` ([`SCRIPT`]) and `GET /ui/style.css` ([`STYLE`]): the dashboard's script
//!   and the stylesheet of every page the master serves (dashboard, message pages, `/join`).
//!   Public like `/join`: they are part of the binary and hold no data. Served with
//!   `Cache-Control: no-cache` and an `ETag` of their content, so a browser revalidates
//!   (`304`) and an upgraded master's files are taken at once.
//! - [`page_headers`], a middleware over the whole router: every answer gets
//!   `X-Content-Type-Options: nosniff`; every HTML answer also gets [`POLICY`] as its
//!   `Content-Security-Policy` (scripts, styles and connections from the page's own origin
//!   only: nothing inline, no frames, forms post to this origin only), `X-Frame-Options:
//!   DENY` and `Referrer-Policy: same-origin`. Not `no-referrer`: under it browsers send
//!   `Origin: null` with a form post, which the dashboard's same-origin check
//!   (`super::session::same_origin`) refuses; `same-origin` still sends no referrer to other
//!   sites.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The dashboard's script: subscribes to `/ui/events` and replaces the live sections.
pub(crate) const SCRIPT: &str = include_str!("live.js");
/// Where the page loads [`SCRIPT`] from.
pub(crate) const SCRIPT_PATH: &str = "/ui/live.js";
/// The stylesheet of every page the master serves.
pub(crate) const STYLE: &str = include_str!("style.css");
/// Where the pages load [`STYLE`] from.
pub(crate) const STYLE_PATH: &str = "/ui/style.css";

/// The `Content-Security-Policy` of every HTML page the master serves.
pub(crate) const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// `GET /ui/live.js`.
pub(crate) async fn script(headers: HeaderMap) -> Response {
    file(&headers, SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /ui/style.css`.
pub(crate) async fn style(headers: HeaderMap) -> Response {
    file(&headers, STYLE, "text/css; charset=utf-8")
}

/// A file of the binary: `304` when the request names its current `ETag`.
fn file(headers: &HeaderMap, body: &'static str, kind: &'static str) -> Response {
    let tag = format!("\"{}\"", hummel_core::Hash::of(body.as_bytes()).short());
    let cached = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == tag);
    let etag = HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"\""));
    let cache = (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if cached {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag), cache]).into_response();
    }
    let kind = (header::CONTENT_TYPE, HeaderValue::from_static(kind));
    ([kind, (header::ETAG, etag), cache], body).into_response()
}

/// Adds the security headers (see the module documentation) to every answer.
pub(crate) async fn page_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if html {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(POLICY),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    resp
}
