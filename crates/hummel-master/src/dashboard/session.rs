//! The dashboard's sessions: the write token entered once per browser session (`POST
//! /ui/login`) buys a random session id in an `HttpOnly`, `SameSite=Strict` cookie (`Secure`
//! behind TLS), held in memory (at most [`MAX_SESSIONS`], each for [`SESSION_LIFETIME`]).
//! Every action form carries the session's CSRF token, compared in constant time, and the
//! request's `Origin` (or `Referer`) must name the host it was sent to: otherwise 403 and
//! nothing changes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use hummel_proto::auth::tokens_equal;

use crate::lock;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "hummel_session";
/// How long a session lasts after login.
pub(crate) const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions held at once; a login beyond ends the one closest to its end.
pub(crate) const MAX_SESSIONS: usize = 64;

struct Session {
    csrf: String,
    expires: Instant,
}

/// The sessions held (see the module documentation).
#[derive(Default)]
pub(crate) struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes in lower-case hex.
pub(super) fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    /// A new session: its id (the cookie) and its CSRF token.
    pub(crate) fn create(&self, now: Instant) -> (String, String) {
        let mut map = lock(&self.by_id);
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
        {
            map.remove(&oldest);
        }
        let (id, csrf) = (random_hex(), random_hex());
        map.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                expires: now + SESSION_LIFETIME,
            },
        );
        (id, csrf)
    }

    /// The CSRF token of session `id`, if it is held and has not expired.
    pub(crate) fn csrf(&self, id: &str, now: Instant) -> Option<String> {
        lock(&self.by_id)
            .get(id)
            .filter(|s| s.expires > now)
            .map(|s| s.csrf.clone())
    }

    /// Ends session `id`.
    pub(crate) fn end(&self, id: &str) {
        lock(&self.by_id).remove(id);
    }
}

/// The session id in the request's cookie, if any.
pub(crate) fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether the request's `Origin` (or, without one, its `Referer`) is the host it was sent to.
/// A request with neither is refused: browsers send `Origin` with every form post.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    let Some(source) = source else {
        return false;
    };
    let Some(rest) = source
        .strip_prefix("http://")
        .or_else(|| source.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    authority.eq_ignore_ascii_case(host)
}

/// Whether `presented` is the session's CSRF token (constant-time).
pub(crate) fn csrf_matches(expected: &str, presented: &str) -> bool {
    tokens_equal(expected, presented)
}

/// The `Set-Cookie` value that holds session `id` (`secure`: the page is served over TLS).
pub(crate) fn cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that ends the session in the browser.
pub(crate) fn expired_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn sessions_expire_are_bounded_and_end() {
        let s = Sessions::default();
        let now = Instant::now();
        let (id, csrf) = s.create(now);
        assert_eq!(id.len(), 64);
        assert_ne!(id, csrf);
        assert_eq!(s.csrf(&id, now).as_deref(), Some(csrf.as_str()));
        assert!(s.csrf(&id, now + SESSION_LIFETIME).is_none());
        assert!(s.csrf("nope", now).is_none());
        // Beyond the bound, the oldest session ends.
        for i in 0..MAX_SESSIONS {
            s.create(now + Duration::from_secs(1 + i as u64));
        }
        assert!(s.csrf(&id, now).is_none());
        assert_eq!(lock(&s.by_id).len(), MAX_SESSIONS);
        let (id2, _) = s.create(now);
        s.end(&id2);
        assert!(s.csrf(&id2, now).is_none());
    }

    #[test]
    fn the_cookie_is_read_and_the_csrf_token_compared() {
        let id = "ab".repeat(32);
        let h = headers(&[(header::COOKIE, &format!("x=1; {COOKIE}={id}; y=2"))]);
        assert_eq!(session_id(&h).as_deref(), Some(id.as_str()));
        assert!(session_id(&headers(&[(header::COOKIE, "hummel_session=short")])).is_none());
        assert!(session_id(&HeaderMap::new()).is_none());
        assert!(csrf_matches("abc", "abc"));
        assert!(!csrf_matches("abc", "abd"));
        assert!(!csrf_matches("abc", ""));
        let c = cookie(&id, true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!cookie(&id, false).contains("Secure"));
    }

    #[test]
    fn only_the_same_origin_may_post() {
        let host = (header::HOST, "127.0.0.1:8080");
        let ok = |o: (header::HeaderName, &str)| same_origin(&headers(&[host.clone(), o]));
        assert!(ok((header::ORIGIN, "http://127.0.0.1:8080")));
        assert!(ok((header::REFERER, "https://127.0.0.1:8080/x?y")));
        assert!(!ok((header::ORIGIN, "http://evil.example")));
        assert!(!ok((header::ORIGIN, "http://127.0.0.1:8080.evil.example")));
        assert!(!ok((header::ORIGIN, "null")));
        assert!(!same_origin(&headers(&[host])));
    }
}
