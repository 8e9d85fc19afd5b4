//! Hummel's outgoing HTTP, shared by the client, the slave and the admin commands: one way to
//! build a client, one set of timeouts and body caps, one decoder for error answers, one retry
//! policy, and typed calls for the master's endpoints, so no caller formats a URL or decodes
//! JSON itself.
//!
//! # Layout
//! - [`HttpClient`] (this file): reqwest from [`ClientTls::client_builder`] (whom HTTPS
//!   trusts), with [`CONNECT_TIMEOUT`], the stall timeout [`STALL_TIMEOUT`] (longest wait for
//!   the next bytes), Hummel's one User-Agent and the token its owner sends
//!   ([`HttpClient::with_token`]: read, slave or write token). [`HttpClient::blob`] is the data
//!   plane's `GET {source}/blob/{hash}`; the caller streams and verifies the body.
//! - [`MasterApi`] (`master`): every master endpoint a program calls, typed: the client's
//!   `revision`, `index`, `locate`, `report`; the admin's `build`, `build_status`, `status`;
//!   the slave's `slave_hashlist`, `slave_heartbeat`. JSON answers are read up to
//!   [`MAX_JSON_RESPONSE`], each call bounded by [`CALL_TIMEOUT`] (the report by less); a 429
//!   or 503 with a short `Retry-After` is asked again after it (jittered), a few times.
//! - [`NetError`], [`ApiError`] (`error`): a failure names its call; an error answer is decoded
//!   once, here, from the API's `{code, message}` body or the first words of any other body.
//! - [`backoff`]: [`Backoff`], exponential with full jitter and a cap, and [`Retry`], its
//!   failure count: the one policy every retry site uses.
//! - [`sse`]: the parser of server-sent event streams (the master's `events` endpoints).
//! - [`read_capped`]: a whole body, refused past a cap (checked on `Content-Length`, then while
//!   reading).
//!
//! Nothing here interprets what it fetches beyond JSON: indexes are decoded and checked by the
//! client, pack bytes verified by whoever stores or writes them.

pub mod backoff;
mod error;
mod master;
pub mod sse;

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderValue;
use reqwest::{RequestBuilder, Response, Url};

use hummel_core::Hash;
use hummel_proto::api::{MAX_JSON_BODY, blob_path};
use hummel_proto::auth::TOKEN_HEADER;
use hummel_tls::ClientTls;

pub use backoff::{Backoff, Retry};
pub use error::{ApiError, NetError};
pub use master::{IndexAnswer, MasterApi, SlaveSigner};

/// Time to establish a TCP connection (and TLS).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the next bytes of an answer (a stalled server).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for a whole JSON call to the master, body included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest JSON answer accepted (a status listing, a directive naming many packs).
pub const MAX_JSON_RESPONSE: u64 = MAX_JSON_BODY as u64;
/// Largest error answer read (only its first words are kept).
pub const MAX_ERROR_RESPONSE: u64 = 64 << 10;
/// Largest index answer accepted (the envelope around the largest accepted body).
pub const MAX_INDEX_RESPONSE: u64 = hummel_core::index::MAX_INDEX_BODY + (1 << 20);
/// The User-Agent of every request Hummel makes.
pub const USER_AGENT: &str = concat!("hummel/", env!("CARGO_PKG_VERSION"));

/// A reqwest client with Hummel's trust roots, timeouts and User-Agent, and the token its owner
/// sends on every request. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    token: Option<HeaderValue>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl HttpClient {
    /// A client trusting `tls`, without a token.
    pub fn new(tls: &ClientTls) -> Result<HttpClient, NetError> {
        let inner = tls
            .client_builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(STALL_TIMEOUT)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| NetError::Setup(format!("HTTP client: {}", describe(&e))))?;
        Ok(HttpClient { inner, token: None })
    }

    /// The same client sending `token` (in `X-HUMMEL-TOKEN`) on every request; `None` sends
    /// none. `name` ("read", "slave", "write") only words the error: the token itself is never
    /// repeated.
    pub fn with_token(&self, token: Option<&str>, name: &str) -> Result<HttpClient, NetError> {
        let token = match token {
            None => None,
            Some(t) => {
                let mut v = HeaderValue::from_str(t).map_err(|_| {
                    NetError::Setup(format!(
                        "the {name} token contains characters not allowed in an HTTP header"
                    ))
                })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        Ok(HttpClient {
            inner: self.inner.clone(),
            token,
        })
    }

    fn with_token_header(&self, rb: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(t) => rb.header(TOKEN_HEADER, t.clone()),
            None => rb,
        }
    }

    /// `GET url` with the token.
    pub fn get(&self, url: Url) -> RequestBuilder {
        self.with_token_header(self.inner.get(url))
    }

    /// `POST url` with the token.
    pub fn post(&self, url: Url) -> RequestBuilder {
        self.with_token_header(self.inner.post(url))
    }

    /// `PUT url` with the token.
    pub fn put(&self, url: Url) -> RequestBuilder {
        self.with_token_header(self.inner.put(url))
    }

    /// `DELETE url` with the token.
    pub fn delete(&self, url: Url) -> RequestBuilder {
        self.with_token_header(self.inner.delete(url))
    }

    /// `GET {source}/blob/{pack}` with the token: the data plane of slaves (and of the master,
    /// the source of last resort). The caller adds a `Range` and a deadline, sends it, and
    /// verifies what it reads.
    pub fn blob(&self, source: &str, pack: &Hash) -> Result<RequestBuilder, NetError> {
        let url = join(source, &blob_path(pack))?;
        Ok(self.get(url))
    }
}

/// `base` (trailing slashes ignored) followed by `path`, as a URL.
pub fn join(base: &str, path: &str) -> Result<Url, NetError> {
    let text = format!("{}{path}", normalise_url(base));
    Url::parse(&text).map_err(|e| NetError::BadUrl {
        url: format!("{text} ({e})"),
    })
}

/// The URL without trailing slashes and surrounding blanks.
pub fn normalise_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_string()
}

/// A reqwest error as one short line: "timed out", "cannot connect: connection refused", what
/// is wrong with a server's certificate ...
pub fn describe(e: &reqwest::Error) -> String {
    if let Some(problem) = hummel_tls::certificate_problem(e) {
        return problem;
    }
    let mut root: &dyn std::error::Error = e;
    while let Some(next) = root.source() {
        root = next;
    }
    let root = root.to_string();
    if e.is_timeout() {
        format!("timed out ({root})")
    } else if e.is_connect() {
        format!("cannot connect: {root}")
    } else if e.is_body() || e.is_decode() {
        format!("reading the response failed: {root}")
    } else {
        root
    }
}

/// Reads a whole body, refusing more than `cap` bytes (checked against `Content-Length` first,
/// then while reading; nothing beyond the cap is buffered).
pub async fn read_capped(
    mut resp: Response,
    cap: u64,
    what: &'static str,
) -> Result<Vec<u8>, NetError> {
    if resp.content_length().is_some_and(|n| n > cap) {
        return Err(NetError::TooLong { what, cap });
    }
    let hint = resp.content_length().unwrap_or(0).min(cap).min(64 << 20);
    let mut out = Vec::with_capacity(hint as usize);
    loop {
        let chunk: Option<Bytes> = resp.chunk().await.map_err(|e| NetError::Transport {
            what,
            source: e.without_url(),
        })?;
        let Some(chunk) = chunk else { break };
        if out.len() as u64 + chunk.len() as u64 > cap {
            return Err(NetError::TooLong { what, cap });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Reads an error answer (at most [`MAX_ERROR_RESPONSE`]) and decodes it; a body that breaks
/// off counts as empty.
pub async fn decode_error(resp: Response, what: &'static str) -> NetError {
    let status = resp.status();
    let body = read_capped(resp, MAX_ERROR_RESPONSE, what)
        .await
        .unwrap_or_default();
    NetError::Status {
        what,
        error: ApiError::decode(status, &body),
    }
}

/// A response's `Retry-After` in seconds (the HTTP-date form is not used by Hummel servers).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalised_and_joined() {
        assert_eq!(normalise_url(" http://a:1/ "), "http://a:1");
        assert_eq!(normalise_url("http://a:1/x//"), "http://a:1/x");
        assert_eq!(
            join("http://a:1/x/", "/api/v1/revision").unwrap().as_str(),
            "http://a:1/x/api/v1/revision"
        );
        assert!(matches!(
            join("not a url", "/health"),
            Err(NetError::BadUrl { .. })
        ));
    }

    #[test]
    fn a_bad_token_is_refused_without_echoing_it() {
        let http = HttpClient::new(&ClientTls::system()).unwrap();
        let e = http
            .with_token(Some("sec\nret"), "read")
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("sec"), "{e}");
        assert!(e.contains("read token"), "{e}");
        assert!(http.with_token(Some("fine"), "read").is_ok());
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, " 5 ".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(5)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }
}
