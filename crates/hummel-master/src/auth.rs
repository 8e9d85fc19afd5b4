//! Token checks: which token each endpoint accepts, as extractors and a middleware.
//!
//! | access | accepted tokens |
//! | --- | --- |
//! | [`WriteAccess`] (`POST /build`) | write |
//! | [`SlaveAccess`] (`/slave/*`) | slave |
//! | [`ReadAccess`] (`/api/v1/*` reads) | read or write when a read token is set; anyone otherwise |
//! | [`blob_guard`] (`/blob/*`) | slave, write or read when a read token is set; anyone otherwise |
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
use hummel_proto::auth::{TOKEN_HEADER, TokenRefusal};
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

/// Read access for the dashboard: the token header, or the password of HTTP Basic auth (so a
/// browser can send the read token).
pub(crate) fn check_dashboard(tokens: &Tokens, headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.contains_key(TOKEN_HEADER) {
        return check_headers(tokens, headers, Access::Read);
    }
    let password = headers.get(header::AUTHORIZATION).and_then(basic_password);
    check_token(tokens, password.as_deref(), Access::Read)
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
        }
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
