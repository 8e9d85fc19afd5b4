//! Token checks: which token each endpoint accepts, as extractors and a middleware.
//!
//! | access | accepted tokens |
//! | --- | --- |
//! | [`WriteAccess`] (`POST /build`, the dashboard's build form) | write |
//! | [`SlaveAccess`] (`/slave/*`) | slave (then the slave's own signature: `crate::identity`) |
//! | [`ReadAccess`] (`/api/v1/*`, the dashboard) | read or write when a read token is set; anyone otherwise |
//! | [`blob_guard`] (`/blob/*`) | slave, write or read when a read token is set; anyone otherwise |
//! | [`MetricsAccess`] (`/metrics`) | metrics, read or write when a metrics or read token is set; anyone otherwise |
//! | `/health` | anyone |
//!
//! The dashboard and `/metrics` also take the token as `Authorization: Bearer TOKEN` (what
//! Prometheus sends) or as the password of HTTP Basic auth (what a browser asks for).
//!
//! **Private means private on the slaves too.** With a read token, a slave's complete hashlist
//! must carry [`hummel_proto::auth::read_token_digest`] of the same token (it guards its
//! `/blob` with it); otherwise the master refuses the slave (403 `read_token_mismatch`, which
//! makes a starting slave exit with that message), never sends clients to it, and counts it in
//! `hummel_slaves_refused_total`. A master without a read token refuses a slave that has one
//! (its clients send none). [`check_slave_read_token`] is the rule.
//!
//! On `/blob`, everything but the slave token (replication) is a client using the master as the
//! source of last resort: at most [`crate::MasterConfig::fallback_limit`] such responses are
//! sent at once (outside serve mode); more get 503 `busy` with `Retry-After`.
//!
//! The rule itself (no token: 401 `unauthorized`; a wrong one: 403 `forbidden`; constant-time
//! comparison against every accepted token) is [`hummel_proto::auth::check_token`], shared with
//! the slave. Tokens are never logged.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hummel_proto::auth::{TOKEN_HEADER, TokenRefusal, read_token_digest, tokens_equal};
use tokio::sync::OwnedSemaphorePermit;

use crate::api::ApiError;
use crate::config::Tokens;
use crate::master::Master;

/// What a request wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Write,
    Slave,
    Read,
    Blob,
    Metrics,
}

/// The tokens that grant `access`; `None` when it is public.
fn accepted(tokens: &Tokens, access: Access) -> Option<Vec<&str>> {
    match access {
        Access::Write => Some(vec![&tokens.write]),
        Access::Slave => Some(vec![&tokens.slave]),
        Access::Read => tokens.read.as_deref().map(|r| vec![r, &tokens.write]),
        Access::Blob => tokens
            .read
            .as_deref()
            .map(|r| vec![r, &tokens.write, &tokens.slave]),
        Access::Metrics => {
            if tokens.metrics.is_none() && tokens.read.is_none() {
                return None;
            }
            let mut list: Vec<&str> = vec![&tokens.write];
            list.extend(tokens.metrics.as_deref());
            list.extend(tokens.read.as_deref());
            Some(list)
        }
    }
}

/// Checks a presented token (`None`: no header) against what `access` accepts, by the one
/// rule in [`hummel_proto::auth::check_token`].
pub(crate) fn check_token(
    tokens: &Tokens,
    presented: Option<&str>,
    access: Access,
) -> Result<(), ApiError> {
    check_bytes(tokens, presented.map(str::as_bytes), access)
}

fn check_bytes(tokens: &Tokens, presented: Option<&[u8]>, access: Access) -> Result<(), ApiError> {
    let Some(list) = accepted(tokens, access) else {
        return Ok(());
    };
    hummel_proto::auth::check_token(presented, &list).map_err(|r| match r {
        TokenRefusal::Missing => ApiError::Unauthorized,
        TokenRefusal::Wrong => ApiError::Forbidden,
    })
}

/// Checks the [`TOKEN_HEADER`] of a request.
pub(crate) fn check_headers(
    tokens: &Tokens,
    headers: &HeaderMap,
    access: Access,
) -> Result<(), ApiError> {
    check_bytes(
        tokens,
        headers.get(TOKEN_HEADER).map(|v| v.as_bytes()),
        access,
    )
}

/// `access` for a browser or a scraper: the token header, else `Authorization: Bearer TOKEN`,
/// else the password of HTTP Basic auth.
pub(crate) fn check_any_header(
    tokens: &Tokens,
    headers: &HeaderMap,
    access: Access,
) -> Result<(), ApiError> {
    if headers.contains_key(TOKEN_HEADER) {
        return check_headers(tokens, headers, access);
    }
    let authorization = headers.get(header::AUTHORIZATION);
    let presented = authorization.and_then(|v| bearer_token(v).or_else(|| basic_password(v)));
    check_token(tokens, presented.as_deref(), access)
}

/// Read access for the dashboard (see [`check_any_header`]).
pub(crate) fn check_dashboard(tokens: &Tokens, headers: &HeaderMap) -> Result<(), ApiError> {
    check_any_header(tokens, headers, Access::Read)
}

/// Whether a slave whose hashlist carries `digest` guards its packs as the master's read
/// token wants; the refusal's message otherwise (it names no token).
pub(crate) fn check_slave_read_token(tokens: &Tokens, digest: Option<&str>) -> Result<(), String> {
    match (tokens.read.as_deref(), digest) {
        (None, None) => Ok(()),
        (Some(read), Some(d)) if tokens_equal(&read_token_digest(read), d) => Ok(()),
        (Some(_), None) => Err(
            "this master's repository is private (it has a read token) and \
             this slave has none, so it would serve packs to anyone: start the slave with the \
             master's read token (HUMMEL_READ_TOKEN or --read-token)"
                .into(),
        ),
        (Some(_), Some(_)) => Err("this slave's read token is not the master's: clients \
             could not download from it; start the slave with the master's read token"
            .into()),
        (None, Some(_)) => Err(
            "this master's repository is public (no read token) but the \
             slave has one, so clients (which send none) could not download from it: start \
             the slave without a read token, or give the master the same one"
                .into(),
        ),
    }
}

/// The token of an `Authorization: Bearer` header.
fn bearer_token(value: &HeaderValue) -> Option<String> {
    let v = value.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim().to_string())
}

/// The password of an `Authorization: Basic` header.
fn basic_password(value: &HeaderValue) -> Option<String> {
    let v = value.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(rest.trim())?).ok()?;
    decoded.split_once(':').map(|(_, p)| p.to_string())
}

/// Standard base64 with optional padding.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

macro_rules! access_extractor {
    ($name:ident, $access:expr, $doc:literal) => {
        #[doc = $doc]
        pub(crate) struct $name;

        impl FromRequestParts<Master> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                master: &Master,
            ) -> Result<Self, Self::Rejection> {
                check_headers(&master.config().tokens, &parts.headers, $access).map(|()| $name)
            }
        }
    };
}

access_extractor!(
    WriteAccess,
    Access::Write,
    "The request carries the write token."
);
access_extractor!(
    SlaveAccess,
    Access::Slave,
    "The request carries the slave token."
);
access_extractor!(
    ReadAccess,
    Access::Read,
    "The request may read (client API)."
);

/// The request may read `/metrics` (see [`check_any_header`]).
pub(crate) struct MetricsAccess;

impl FromRequestParts<Master> for MetricsAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, master: &Master) -> Result<Self, ApiError> {
        check_any_header(&master.config().tokens, &parts.headers, Access::Metrics)
            .map(|()| MetricsAccess)
    }
}

/// Middleware for the `/blob` origin: checks the token and bounds the downloads clients make
/// from the master as their source of last resort.
pub(crate) async fn blob_guard(State(master): State<Master>, req: Request, next: Next) -> Response {
    let config = master.config();
    if let Err(e) = check_headers(&config.tokens, req.headers(), Access::Blob) {
        return e.into_response();
    }
    let replication = check_headers(&config.tokens, req.headers(), Access::Slave).is_ok();
    if replication || config.embedded_store {
        return next.run(req).await;
    }
    let metrics = &master.inner.metrics;
    let Ok(permit) = master.inner.fallback.clone().try_acquire_owned() else {
        metrics.fallback_busy.fetch_add(1, Ordering::Relaxed);
        return ApiError::Busy(format!(
            "the master serves at most {} downloads at once while packs replicate; retry \
             shortly or use a mirror",
            config.fallback_limit
        ))
        .into_response();
    };
    metrics.fallback_served.fetch_add(1, Ordering::Relaxed);
    held_until_sent(next.run(req).await, permit)
}

/// `resp` with `permit` released only when its body has been sent (or dropped): a pack
/// streaming to a slow client occupies its slot for as long as it takes.
fn held_until_sent(resp: Response, permit: OwnedSemaphorePermit) -> Response {
    let (parts, body) = resp.into_parts();
    let body = body.into_data_stream().map(move |piece| {
        let _slot = &permit;
        piece
    });
    Response::from_parts(parts, Body::from_stream(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(read: Option<&str>) -> Tokens {
        Tokens {
            write: "w-secret".into(),
            slave: "s-secret".into(),
            read: read.map(str::to_string),
            metrics: None,
        }
    }

    #[test]
    fn metrics_are_public_until_a_metrics_or_read_token_is_set() {
        let mut t = tokens(None);
        assert!(check_token(&t, None, Access::Metrics).is_ok());
        t.metrics = Some("m-secret".into());
        assert!(matches!(
            check_token(&t, None, Access::Metrics),
            Err(ApiError::Unauthorized)
        ));
        for ok in ["m-secret", "w-secret"] {
            assert!(check_token(&t, Some(ok), Access::Metrics).is_ok(), "{ok}");
        }
        assert!(matches!(
            check_token(&t, Some("s-secret"), Access::Metrics),
            Err(ApiError::Forbidden)
        ));
        let t = tokens(Some("r-secret"));
        assert!(check_token(&t, Some("r-secret"), Access::Metrics).is_ok());
        assert!(check_token(&t, None, Access::Metrics).is_err());
        // As Prometheus sends it.
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer r-secret"),
        );
        assert!(check_any_header(&t, &h, Access::Metrics).is_ok());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer nope"),
        );
        assert!(matches!(
            check_any_header(&t, &h, Access::Metrics),
            Err(ApiError::Forbidden)
        ));
    }

    #[test]
    fn a_slave_must_guard_its_packs_with_the_masters_read_token() {
        let digest = |t: &str| Some(read_token_digest(t));
        let public = tokens(None);
        assert!(check_slave_read_token(&public, None).is_ok());
        let e = check_slave_read_token(&public, digest("r").as_deref()).unwrap_err();
        assert!(e.contains("public"), "{e}");
        let private = tokens(Some("r-secret"));
        assert!(check_slave_read_token(&private, digest("r-secret").as_deref()).is_ok());
        let e = check_slave_read_token(&private, None).unwrap_err();
        assert!(
            e.contains("private") && e.contains("HUMMEL_READ_TOKEN"),
            "{e}"
        );
        let e = check_slave_read_token(&private, digest("other").as_deref()).unwrap_err();
        assert!(e.contains("not the master's"), "{e}");
        assert!(!e.contains("r-secret"));
    }

    #[test]
    fn write_and_slave_tokens_are_not_interchangeable() {
        let t = tokens(None);
        assert!(check_token(&t, Some("w-secret"), Access::Write).is_ok());
        assert!(matches!(
            check_token(&t, Some("s-secret"), Access::Write),
            Err(ApiError::Forbidden)
        ));
        assert!(matches!(
            check_token(&t, Some("w-secret"), Access::Slave),
            Err(ApiError::Forbidden)
        ));
        assert!(matches!(
            check_token(&t, None, Access::Slave),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            check_token(&t, Some(""), Access::Write),
            Err(ApiError::Unauthorized)
        ));
    }

    #[test]
    fn reads_are_public_without_a_read_token() {
        let t = tokens(None);
        assert!(check_token(&t, None, Access::Read).is_ok());
        assert!(check_token(&t, Some("anything"), Access::Blob).is_ok());
        let t = tokens(Some("r-secret"));
        assert!(matches!(
            check_token(&t, None, Access::Read),
            Err(ApiError::Unauthorized)
        ));
        assert!(check_token(&t, Some("r-secret"), Access::Read).is_ok());
        assert!(check_token(&t, Some("w-secret"), Access::Read).is_ok());
        assert!(matches!(
            check_token(&t, Some("s-secret"), Access::Read),
            Err(ApiError::Forbidden)
        ));
        assert!(check_token(&t, Some("s-secret"), Access::Blob).is_ok());
    }

    #[test]
    fn basic_auth_password_is_the_token() {
        // "user:r-secret"
        let v = HeaderValue::from_static("Basic dXNlcjpyLXNlY3JldA==");
        assert_eq!(basic_password(&v).as_deref(), Some("r-secret"));
        assert_eq!(base64_decode("aGk").unwrap(), b"hi");
        assert!(base64_decode("a*b").is_none());
        let t = tokens(Some("r-secret"));
        let mut h = HeaderMap::new();
        assert!(check_dashboard(&t, &h).is_err());
        h.insert(header::AUTHORIZATION, v);
        assert!(check_dashboard(&t, &h).is_ok());
    }

    /// Standard base64 with padding, written out for the property below.
    fn base64_encode(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in bytes.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    proptest::proptest! {
        /// The `Authorization` header is untrusted input: any value is answered without a
        /// panic, and a well-formed one gives back the password it carries.
        #[test]
        fn any_authorization_header_is_parsed_without_panic(
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            text in "[ -~]{0,40}",
            password in "[ -~]{0,20}",
        ) {
            if let Ok(v) = HeaderValue::from_bytes(&raw) {
                let _ = basic_password(&v);
            }
            let _ = base64_decode(&text);
            proptest::prop_assert_eq!(base64_decode(&base64_encode(&raw)), Some(raw));
            let v = HeaderValue::from_str(&format!("Basic {}", base64_encode(format!("u:{password}").as_bytes()))).unwrap();
            proptest::prop_assert_eq!(basic_password(&v), Some(password));
        }
    }
}
