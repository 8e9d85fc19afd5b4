//! [`NetError`]: why a request to a Hummel server failed, and [`ApiError`], the decoded error
//! answer of a master or slave (the one decoder for both).

use reqwest::StatusCode;

use hummel_proto::ApiErrorBody;

/// A non-2xx answer, decoded: the API's `{code, message}` body when the server sent one, else
/// the first words of whatever it sent (a proxy's page, `this server speaks HTTPS only`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The API's machine-readable code (`unauthorized`, `unknown_slave`,
    /// `read_token_mismatch` ...); `None` when the body was not the API's JSON.
    pub code: Option<String>,
    /// The API's message, or the body's first words (one line, at most 300 characters); may
    /// be empty.
    pub message: String,
}

impl ApiError {
    /// Decodes an error answer from its status and (capped) body.
    pub fn decode(status: StatusCode, body: &[u8]) -> ApiError {
        match serde_json::from_slice::<ApiErrorBody>(body) {
            Ok(b) => ApiError {
                status,
                code: Some(b.code),
                message: one_line(&b.message),
            },
            Err(_) => ApiError {
                status,
                code: None,
                message: one_line(&String::from_utf8_lossy(body)),
            },
        }
    }

    /// True when the API's code is `code`.
    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// The message, or the status when there is none: what to show after a colon.
    pub fn detail(&self) -> String {
        if self.message.is_empty() {
            format!("HTTP {}", self.status)
        } else {
            self.message.clone()
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.code, self.message.is_empty()) {
            (Some(code), _) => write!(f, "{code}: {} (HTTP {})", self.message, self.status),
            (None, true) => write!(f, "HTTP {}", self.status),
            (None, false) => write!(f, "HTTP {}: {}", self.status, self.message),
        }
    }
}

/// Why a request failed. `what` names the call (`revision`, `heartbeat`, `build status` ...).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A URL that cannot be used.
    #[error("not a valid URL: {url}")]
    BadUrl {
        /// The URL as given.
        url: String,
    },
    /// The HTTP client could not be set up (a token that is no header value, a TLS setup).
    #[error("{0}")]
    Setup(String),
    /// No HTTP answer, or its body broke off: connection refused, timed out, reset, a refused
    /// certificate.
    #[error("{what}: {}", crate::describe(source))]
    Transport {
        /// The call.
        what: &'static str,
        /// reqwest's error, without the URL (the caller names the server).
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("{what}: {error}")]
    Status {
        /// The call.
        what: &'static str,
        /// The decoded answer.
        error: ApiError,
    },
    /// The answer is longer than the call accepts.
    #[error("{what}: response longer than the {cap} bytes expected")]
    TooLong {
        /// The call.
        what: &'static str,
        /// The cap.
        cap: u64,
    },
    /// A 2xx answer that is not what the endpoint promises (bad JSON, a bad header, a locate
    /// answer of the wrong shape).
    #[error("{what}: {reason}")]
    BadAnswer {
        /// The call.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl NetError {
    /// The decoded error answer, if the server sent one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            NetError::Status { error, .. } => Some(error),
            _ => None,
        }
    }

    /// True when no HTTP answer came (the server may be down).
    pub fn is_transport(&self) -> bool {
        matches!(self, NetError::Transport { .. })
    }

    /// True when the connection itself could not be made.
    pub fn is_connect(&self) -> bool {
        matches!(self, NetError::Transport { source, .. } if source.is_connect())
    }
}

/// Whitespace runs to one space, at most 300 characters.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apis_json_body_is_decoded() {
        let body =
            br#"{"code":"read_token_mismatch","message":"this slave's packs are\nnot guarded"}"#;
        let e = ApiError::decode(StatusCode::FORBIDDEN, body);
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert_eq!(e.code.as_deref(), Some("read_token_mismatch"));
        assert!(e.is("read_token_mismatch") && !e.is("unauthorized"));
        assert_eq!(e.message, "this slave's packs are not guarded");
        assert_eq!(
            e.to_string(),
            "read_token_mismatch: this slave's packs are not guarded (HTTP 403 Forbidden)"
        );
        assert_eq!(e.detail(), "this slave's packs are not guarded");
    }

    #[test]
    fn any_other_body_gives_its_first_words() {
        let e = ApiError::decode(
            StatusCode::BAD_REQUEST,
            b"this server speaks HTTPS only\r\n",
        );
        assert_eq!(e.code, None);
        assert_eq!(
            e.to_string(),
            "HTTP 400 Bad Request: this server speaks HTTPS only"
        );
        // Empty, binary, JSON of another shape, and a long page.
        let empty = ApiError::decode(StatusCode::BAD_GATEWAY, b"");
        assert_eq!(empty.to_string(), "HTTP 502 Bad Gateway");
        assert_eq!(empty.detail(), "HTTP 502 Bad Gateway");
        let binary = ApiError::decode(StatusCode::INTERNAL_SERVER_ERROR, &[0xff, 0xfe, b'x']);
        assert_eq!(binary.message, "\u{fffd}\u{fffd}x");
        let other = ApiError::decode(StatusCode::NOT_FOUND, br#"{"error":"nope"}"#);
        assert_eq!(other.code, None);
        assert_eq!(other.message, r#"{"error":"nope"}"#);
        let page = "<p>\n".repeat(500);
        let long = ApiError::decode(StatusCode::SERVICE_UNAVAILABLE, page.as_bytes());
        assert_eq!(long.message.chars().count(), 300);
        assert!(!long.message.contains('\n'));
    }

    #[test]
    fn a_status_error_names_the_call() {
        let e = NetError::Status {
            what: "build",
            error: ApiError::decode(
                StatusCode::UNAUTHORIZED,
                br#"{"code":"unauthorized","message":"missing token"}"#,
            ),
        };
        assert_eq!(
            e.to_string(),
            "build: unauthorized: missing token (HTTP 401 Unauthorized)"
        );
        assert!(e.api().is_some_and(|a| a.is("unauthorized")));
        assert!(!e.is_transport() && !e.is_connect());
    }
}
