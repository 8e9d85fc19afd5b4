//! [`MasterClient`]: the slave's two calls to the master, `POST /slave/hashlist` and
//! `POST /slave/heartbeat`, each answered with a [`SlaveDirective`].
//!
//! Every request is signed with the slave's key ([`hummel_proto::identity`]) under a nonce
//! above any this process used: its clock in milliseconds, or one more than the last. A master
//! that has seen a higher one (a clock set back, a restart within the same millisecond) answers
//! 409 `slave_nonce_stale` with its highest; the request is signed again above it and sent once
//! more.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use reqwest::StatusCode;
use serde::Serialize;

use hummel_proto::ApiErrorBody;
use hummel_proto::api::{
    Heartbeat, MAX_JSON_BODY, SLAVE_HASHLIST, SLAVE_HEARTBEAT, SlaveDirective, SlaveHashlist,
};
use hummel_proto::auth::TOKEN_HEADER;
use hummel_proto::identity::{SLAVE_NONCE_HEADER, SlaveKey};

/// Longest a single request to the master may take, body included.
const MASTER_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A request to the master that did not produce a directive.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MasterError {
    /// No HTTP answer (connect refused, timeout, reset, a refused certificate).
    #[error("master unreachable ({url}): {}", why(source))]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// 401 or 403: the master does not accept our slave token.
    #[error("master refused the slave token (HTTP {status} from {url})")]
    Refused { status: u16, url: String },
    /// 403 `read_token_mismatch`: the master wants the packs guarded by its read token.
    #[error("master refused this slave ({url}): {message}")]
    ReadToken { url: String, message: String },
    /// 403 `slave_identity_mismatch`: the master knows this slave id by another key.
    #[error("master refused this slave ({url}): {message}")]
    Identity { url: String, message: String },
    /// 404 `unknown_slave`: the master wants the full hashlist again.
    #[error("master does not know this slave ({url})")]
    UnknownSlave { url: String },
    /// Any other non-2xx answer.
    #[error("master answered HTTP {status} ({url}): {message}")]
    Status {
        status: u16,
        url: String,
        message: String,
    },
    /// A 2xx answer that is not a directive.
    #[error("master sent an invalid directive ({url}): {message}")]
    BadAnswer { url: String, message: String },
}

/// A request's failure for the log: what is wrong with the server's certificate when that was
/// it (reqwest's own text does not say), else reqwest's text.
pub(crate) fn why(e: &reqwest::Error) -> String {
    hummel_tls::certificate_problem(e).unwrap_or_else(|| e.to_string())
}

/// Talks to one master with the slave token, signing as slave `id` with `key`.
#[derive(Clone, Debug)]
pub(crate) struct MasterClient {
    http: reqwest::Client,
    base: String,
    token: String,
    id: String,
    key: SlaveKey,
    /// The last nonce used (or the highest the master named).
    nonce: Arc<AtomicU64>,
}

impl MasterClient {
    pub(crate) fn new(
        http: reqwest::Client,
        base: String,
        token: String,
        id: String,
        key: SlaveKey,
    ) -> Self {
        MasterClient {
            http,
            base,
            token,
            id,
            key,
            nonce: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A nonce above every one used before: the clock in milliseconds, or the last plus one.
    fn next_nonce(&self) -> u64 {
        let clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut last = self.nonce.load(Ordering::Relaxed);
        loop {
            let next = clock.max(last.saturating_add(1));
            match self
                .nonce
                .compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(now) => last = now,
            }
        }
    }

    pub(crate) async fn hashlist(
        &self,
        body: &SlaveHashlist,
    ) -> Result<SlaveDirective, MasterError> {
        self.post(SLAVE_HASHLIST, body).await
    }

    pub(crate) async fn heartbeat(&self, body: &Heartbeat) -> Result<SlaveDirective, MasterError> {
        self.post(SLAVE_HEARTBEAT, body).await
    }

    async fn post<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<SlaveDirective, MasterError> {
        let url = format!("{}{path}", self.base);
        let body = serde_json::to_vec(body).map_err(|e| MasterError::BadAnswer {
            url: url.clone(),
            message: format!("could not encode the request: {e}"),
        })?;
        let mut resp = self.send_signed(&url, path, &body).await?;
        if resp.status() == StatusCode::CONFLICT
            && let Some(highest) = resp
                .headers()
                .get(SLAVE_NONCE_HEADER)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        {
            // The master saw a higher nonce from us: continue above it, once.
            tracing::info!(
                highest,
                "the master has seen a higher nonce; signing above it"
            );
            self.nonce.fetch_max(highest, Ordering::Relaxed);
            resp = self.send_signed(&url, path, &body).await?;
        }
        let status = resp.status();
        let bytes = read_limited(resp, MAX_JSON_BODY)
            .await
            .map_err(|e| match e {
                ReadError::Http(source) => MasterError::Unreachable {
                    url: url.clone(),
                    source: source.without_url(),
                },
                ReadError::TooLarge => MasterError::BadAnswer {
                    url: url.clone(),
                    message: format!("body larger than {MAX_JSON_BODY} bytes"),
                },
            })?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| MasterError::BadAnswer {
                url,
                message: e.to_string(),
            });
        }
        let api: Option<ApiErrorBody> = serde_json::from_slice(&bytes).ok();
        match status {
            StatusCode::FORBIDDEN
                if api
                    .as_ref()
                    .is_some_and(|a| a.code == "read_token_mismatch") =>
            {
                Err(MasterError::ReadToken {
                    url,
                    message: api.map(|a| a.message).unwrap_or_default(),
                })
            }
            StatusCode::FORBIDDEN
                if api
                    .as_ref()
                    .is_some_and(|a| a.code == "slave_identity_mismatch") =>
            {
                Err(MasterError::Identity {
                    url,
                    message: api.map(|a| a.message).unwrap_or_default(),
                })
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(MasterError::Refused {
                status: status.as_u16(),
                url,
            }),
            StatusCode::NOT_FOUND
                if path == SLAVE_HEARTBEAT
                    || api.as_ref().is_some_and(|a| a.code == "unknown_slave") =>
            {
                Err(MasterError::UnknownSlave { url })
            }
            _ => Err(MasterError::Status {
                status: status.as_u16(),
                url,
                message: api.map(|a| a.message).unwrap_or_else(|| {
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
                }),
            }),
        }
    }
}

impl MasterClient {
    /// Sends `body` (JSON) to `url` with the slave token and the identity headers.
    async fn send_signed(
        &self,
        url: &str,
        path: &str,
        body: &[u8],
    ) -> Result<reqwest::Response, MasterError> {
        let nonce = self.next_nonce();
        let mut request = self
            .http
            .post(url)
            .header(TOKEN_HEADER, &self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(MASTER_REQUEST_TIMEOUT);
        for (name, value) in self.key.sign_request("POST", path, &self.id, nonce, body) {
            request = request.header(name, value);
        }
        request
            .body(body.to_vec())
            .send()
            .await
            .map_err(|source| MasterError::Unreachable {
                url: url.to_string(),
                source: source.without_url(),
            })
    }
}

pub(crate) enum ReadError {
    Http(reqwest::Error),
    TooLarge,
}

/// Reads a response body, refusing more than `limit` bytes.
async fn read_limited(resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, ReadError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ReadError::TooLarge);
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadError::Http)?;
        if out.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
