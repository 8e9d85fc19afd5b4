//! The thin HTTP layer: one [`HttpClient`] (reqwest from [`ClientTls::client_builder`], timeouts,
//! the read token on every request, capped body reads) and [`MasterApi`], the four master
//! endpoints a client calls.
//!
//! Nothing here interprets data beyond JSON decoding; the index is decoded and validated by the
//! caller, pack bytes are verified chunk by chunk in [`crate::fetch`].

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderValue;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use hummel_core::index::MAX_INDEX_BODY;
use hummel_core::{Hash, RelPath};
use hummel_proto::ApiErrorBody;
use hummel_proto::api::{self, ClientReport, LocateRequest, LocateResponse, RevisionInfo};
use hummel_proto::auth::TOKEN_HEADER;
use hummel_tls::ClientTls;

use crate::SyncError;

/// Time to establish a TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the next bytes of a response (stall timeout).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for small JSON calls to the master.
const JSON_DEADLINE: Duration = Duration::from_secs(60);
/// A master that answers 429 or 503 with `Retry-After` (its limits: a rate per address, the
/// requests it takes at once) is asked again after that wait, this many times at most...
const BUSY_RETRIES: u32 = 3;
/// ... when the wait is this long at most.
const BUSY_WAIT_MAX: Duration = Duration::from_secs(10);
/// Largest JSON body accepted from the master.
const MAX_JSON_RESPONSE: u64 = 64 << 20;
/// Largest index body accepted (the envelope around the largest accepted body).
pub const MAX_INDEX_RESPONSE: u64 = MAX_INDEX_BODY + (1 << 20);

/// A reqwest client with Hummel's timeouts and the optional read token.
#[derive(Clone)]
pub(crate) struct HttpClient {
    inner: reqwest::Client,
    token: Option<HeaderValue>,
}

impl HttpClient {
    pub(crate) fn new(read_token: Option<&str>, tls: &ClientTls) -> Result<HttpClient, SyncError> {
        let token = match read_token {
            None => None,
            Some(t) => {
                let mut v = HeaderValue::from_str(t).map_err(|_| {
                    SyncError::Options(
                        "the read token contains characters not allowed in an HTTP header".into(),
                    )
                })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let inner = tls
            .client_builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(STALL_TIMEOUT)
            .user_agent(concat!("hummel-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SyncError::Internal(format!("HTTP client: {}", describe(&e))))?;
        Ok(HttpClient { inner, token })
    }

    fn with_token(&self, rb: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(t) => rb.header(TOKEN_HEADER, t.clone()),
            None => rb,
        }
    }

    pub(crate) fn get(&self, url: reqwest::Url) -> RequestBuilder {
        self.with_token(self.inner.get(url))
    }

    pub(crate) fn post(&self, url: reqwest::Url) -> RequestBuilder {
        self.with_token(self.inner.post(url))
    }
}

/// A reqwest error as one short line: "timed out", "connection refused", what is wrong with a
/// server's certificate ...
pub(crate) fn describe(e: &reqwest::Error) -> String {
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

/// Why a capped body read failed.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The transport failed.
    Http(reqwest::Error),
    /// More bytes than the cap.
    TooLong(u64),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Http(e) => f.write_str(&describe(e)),
            BodyError::TooLong(cap) => write!(f, "response longer than the {cap} bytes expected"),
        }
    }
}

/// Reads a whole body, refusing more than `cap` bytes (checked against `Content-Length` first,
/// then while streaming; nothing beyond the cap is buffered).
pub(crate) async fn read_capped(mut resp: Response, cap: u64) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > cap) {
        return Err(BodyError::TooLong(cap));
    }
    let hint = resp.content_length().unwrap_or(0).min(cap).min(64 << 20);
    let mut out = Vec::with_capacity(hint as usize);
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Http)? {
        let chunk: Bytes = chunk;
        if out.len() as u64 + chunk.len() as u64 > cap {
            return Err(BodyError::TooLong(cap));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The master's client API.
#[derive(Clone)]
pub(crate) struct MasterApi {
    http: HttpClient,
    base: String,
}

impl MasterApi {
    /// `base` is the master URL (`http://host:port`, maybe with a path prefix).
    pub(crate) fn new(http: HttpClient, base: &str) -> Result<MasterApi, SyncError> {
        let base = normalise_url(base);
        reqwest::Url::parse(&base).map_err(|e| SyncError::Master {
            url: base.clone(),
            reason: format!("not a valid URL: {e}"),
        })?;
        Ok(MasterApi { http, base })
    }

    /// The normalised base URL.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> reqwest::Url {
        reqwest::Url::parse(&format!("{}{path}", self.base)).expect("base URL was validated")
    }

    fn err(&self, reason: impl Into<String>) -> SyncError {
        SyncError::Master {
            url: self.base.clone(),
            reason: reason.into(),
        }
    }

    async fn send(&self, rb: RequestBuilder, what: &str) -> Result<Response, SyncError> {
        self.send_with_retries(rb, what, BUSY_RETRIES).await
    }

    /// Sends `rb`; a 429 or 503 with a `Retry-After` of at most [`BUSY_WAIT_MAX`] is sent
    /// again after that wait, `retries` times at most.
    async fn send_with_retries(
        &self,
        mut rb: RequestBuilder,
        what: &str,
        retries: u32,
    ) -> Result<Response, SyncError> {
        let mut left = retries;
        loop {
            let again = rb.try_clone();
            let resp = rb
                .send()
                .await
                .map_err(|e| self.err(format!("{what}: {}", describe(&e))))?;
            if resp.status().is_success() {
                return Ok(resp);
            }
            let busy = matches!(
                resp.status(),
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            );
            if busy
                && left > 0
                && let Some(next) = again
                && let Some(wait) = retry_after(&resp).filter(|w| *w <= BUSY_WAIT_MAX)
            {
                tracing::debug!(what, status = %resp.status(), ?wait, "master busy; asking again");
                tokio::time::sleep(wait).await;
                left -= 1;
                rb = next;
                continue;
            }
            return Err(self.refusal(resp, what).await);
        }
    }

    async fn refusal(&self, resp: Response, what: &str) -> SyncError {
        let status = resp.status();
        let body = read_capped(resp, 64 << 10).await.unwrap_or_default();
        match serde_json::from_slice::<ApiErrorBody>(&body) {
            Ok(b) => SyncError::MasterRefused {
                url: self.base.clone(),
                status: status.as_u16(),
                code: b.code,
                message: one_line(&b.message),
            },
            // Not the API's JSON (a proxy, or plain HTTP sent to an HTTPS port): its first
            // words say more than the status alone.
            Err(_) => match one_line(&String::from_utf8_lossy(&body)) {
                text if text.is_empty() => self.err(format!("{what}: HTTP {status}")),
                text => self.err(format!("{what}: HTTP {status}: {text}")),
            },
        }
    }

    async fn json<T: DeserializeOwned>(&self, resp: Response, what: &str) -> Result<T, SyncError> {
        let body = read_capped(resp, MAX_JSON_RESPONSE)
            .await
            .map_err(|e| self.err(format!("{what}: {e}")))?;
        serde_json::from_slice(&body).map_err(|e| self.err(format!("{what}: bad JSON: {e}")))
    }

    /// `GET /api/v1/revision`.
    pub(crate) async fn revision(&self) -> Result<RevisionInfo, SyncError> {
        let rb = self
            .http
            .get(self.url(api::REVISION))
            .timeout(JSON_DEADLINE);
        let resp = self.send(rb, "revision").await?;
        self.json(resp, "revision").await
    }

    /// `GET /api/v1/index?revision=N&path=SUB[&since=M]`: the encoded index, or a delta from
    /// revision M when `since` is given and the master can; at most [`MAX_INDEX_RESPONSE`]
    /// bytes. Not decoded here.
    pub(crate) async fn index(
        &self,
        revision: u64,
        path: Option<&RelPath>,
        since: Option<u64>,
    ) -> Result<IndexAnswer, SyncError> {
        let mut url = self.url(api::INDEX);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("revision", &revision.to_string());
            if let Some(p) = path {
                q.append_pair("path", p.as_str());
            }
            if let Some(m) = since {
                q.append_pair("since", &m.to_string());
            }
        }
        let resp = self.send(self.http.get(url), "index").await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let revision_hash = match header(api::REVISION_HASH_HEADER) {
            None => None,
            Some(h) => Some(h.parse::<Hash>().map_err(|_| {
                self.err(format!(
                    "index: {} is not a hash: {}",
                    api::REVISION_HASH_HEADER,
                    one_line(&h)
                ))
            })?),
        };
        let repository_id = header(api::REPOSITORY_ID_HEADER);
        let proof = header(api::PROOF_HEADER);
        let bytes = read_capped(resp, MAX_INDEX_RESPONSE)
            .await
            .map_err(|e| self.err(format!("index: {e}")))?;
        Ok(IndexAnswer {
            bytes,
            revision_hash,
            repository_id,
            proof,
        })
    }

    /// `POST /api/v1/locate`. Checks the answer's shape against the request.
    pub(crate) async fn locate(&self, packs: &[u32]) -> Result<LocateResponse, SyncError> {
        let body = LocateRequest {
            packs: packs.to_vec(),
        };
        let rb = self
            .http
            .post(self.url(api::LOCATE))
            .json(&body)
            .timeout(JSON_DEADLINE);
        let resp = self.send(rb, "locate").await?;
        let located: LocateResponse = self.json(resp, "locate").await?;
        if located.holders.len() != packs.len() {
            return Err(self.err(format!(
                "locate: {} holder lists for {} packs",
                located.holders.len(),
                packs.len()
            )));
        }
        let n = located.slaves.len();
        if located.holders.iter().flatten().any(|&s| s as usize >= n) {
            return Err(self.err("locate: holder refers to an unknown slave"));
        }
        for s in &located.slaves {
            reqwest::Url::parse(&normalise_url(&s.url))
                .map_err(|_| self.err(format!("locate: slave {} has a bad URL", s.id)))?;
        }
        Ok(located)
    }

    /// `POST /api/v1/client/report`.
    /// Best effort, so bounded tightly: a busy master must not hold a finished sync.
    pub(crate) async fn report(&self, report: &ClientReport) -> Result<(), SyncError> {
        let rb = self
            .http
            .post(self.url(api::CLIENT_REPORT))
            .json(report)
            .timeout(Duration::from_secs(3));
        let resp = self.send_with_retries(rb, "report", 0).await?;
        if resp.status() != StatusCode::NO_CONTENT && !resp.status().is_success() {
            return Err(self.err(format!("report: HTTP {}", resp.status())));
        }
        Ok(())
    }
}

/// An answer of `GET /api/v1/index`: the encoded index or delta (not decoded yet) and the
/// identity of the revision it was cut from, as the master's headers name it.
#[derive(Debug)]
pub(crate) struct IndexAnswer {
    pub bytes: Vec<u8>,
    /// The whole revision's index hash (absent from masters before revision identities).
    pub revision_hash: Option<Hash>,
    pub repository_id: Option<String>,
    /// The subtree proof (hex), checked by `crate::trusted` against the signed tree digest.
    pub proof: Option<String>,
}

/// A response's `Retry-After` in seconds (the HTTP-date form is not used by Hummel servers).
fn retry_after(resp: &Response) -> Option<Duration> {
    let secs = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(Duration::from_secs(secs))
}

/// The URL without trailing slashes and surrounding blanks.
pub(crate) fn normalise_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_string()
}

fn one_line(s: &str) -> String {
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
    fn urls_are_normalised() {
        assert_eq!(normalise_url(" http://a:1/ "), "http://a:1");
        assert_eq!(normalise_url("http://a:1/x//"), "http://a:1/x");
    }

    #[test]
    fn bad_token_is_refused_without_echoing_it() {
        let e = HttpClient::new(Some("sec\nret"), &ClientTls::system())
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("sec"), "{e}");
    }
}
