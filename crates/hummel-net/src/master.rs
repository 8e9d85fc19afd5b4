//! [`MasterApi`]: the master's endpoints as typed calls. Paths, queries, headers and bodies come
//! from `hummel_proto`; callers pass and get its types.

use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;

use hummel_core::{Hash, RelPath};
use hummel_proto::api::{
    self, BuildQuery, BuildStarted, BuildStatus, ChangesQuery, ChangesResponse, ClientReport,
    Heartbeat, LocateRequest, LocateResponse, PushMissingRequest, PushMissingResponse,
    PushPublishRequest, PushPublishResponse, RevisionInfo, RevisionsQuery, RevisionsResponse,
    RollbackRequest, RollbackResponse, SlaveDirective, SlaveHashlist, StatusResponse,
};

use crate::error::one_line;
use crate::{
    CALL_TIMEOUT, HttpClient, MAX_INDEX_RESPONSE, MAX_JSON_RESPONSE, NetError, backoff,
    decode_error, join, normalise_url, read_capped, retry_after,
};

/// A master that answers 429 or 503 with `Retry-After` (its limits: a rate per address, the
/// requests it takes at once) is asked again after that wait (plus jitter), this many times at
/// most...
pub const BUSY_RETRIES: u32 = 3;
/// ... when the wait is this long at most.
pub const BUSY_WAIT_MAX: Duration = Duration::from_secs(10);
/// Deadline of the client's report: best effort, so a busy master must not hold a finished
/// sync.
const REPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// Deadline of one pushed pack's upload (at most 64 MiB).
const PUSH_PACK_TIMEOUT: Duration = Duration::from_secs(300);
/// Deadline of a push's publication (the master assembles and writes the new index).
const PUSH_PUBLISH_TIMEOUT: Duration = Duration::from_secs(600);

/// The master's HTTP API, for whoever holds `http`'s token.
#[derive(Clone, Debug)]
pub struct MasterApi {
    http: HttpClient,
    base: String,
}

/// An answer of `GET /api/v1/index`: the encoded index or delta (not decoded yet) and the
/// identity of the revision it was cut from, as the master's headers name it.
#[derive(Debug)]
pub struct IndexAnswer {
    /// The encoded index or delta.
    pub bytes: Vec<u8>,
    /// The whole revision's index hash (absent from masters before revision identities).
    pub revision_hash: Option<Hash>,
    /// The repository id, if the master names one.
    pub repository_id: Option<String>,
    /// The revision carries the admin's mass-delete confirmation (the signed statement says
    /// so too, and that is what the client goes by).
    pub mass_delete_confirmed: bool,
    /// The subtree proof (hex) up to the signed tree digest, checked by the client.
    pub proof: Option<String>,
}

impl MasterApi {
    /// `base` is the master URL (`http://host:port`, maybe with a path prefix; trailing
    /// slashes ignored).
    pub fn new(http: HttpClient, base: &str) -> Result<MasterApi, NetError> {
        let base = normalise_url(base);
        Url::parse(&base).map_err(|e| NetError::BadUrl {
            url: format!("{base} ({e})"),
        })?;
        Ok(MasterApi { http, base })
    }

    /// The normalised base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The client (and token) the calls use.
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    fn url(&self, path: &str) -> Url {
        join(&self.base, path).expect("base URL was validated")
    }

    /// Sends `rb`; a 429 or 503 with a `Retry-After` of at most [`BUSY_WAIT_MAX`] is sent
    /// again after that wait plus jitter ([`backoff::after`]), `retries` times at most. Any
    /// other non-2xx answer is decoded into [`NetError::Status`].
    async fn send(
        &self,
        mut rb: RequestBuilder,
        what: &'static str,
        retries: u32,
    ) -> Result<Response, NetError> {
        let mut left = retries;
        loop {
            let again = rb.try_clone();
            let resp = rb.send().await.map_err(|e| NetError::Transport {
                what,
                source: e.without_url(),
            })?;
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
                && let Some(wait) = retry_after(resp.headers()).filter(|w| *w <= BUSY_WAIT_MAX)
            {
                let wait = backoff::after(wait);
                tracing::debug!(what, status = %resp.status(), ?wait, "master busy; asking again");
                tokio::time::sleep(wait).await;
                left -= 1;
                rb = next;
                continue;
            }
            return Err(decode_error(resp, what).await);
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        resp: Response,
        what: &'static str,
    ) -> Result<T, NetError> {
        let body = read_capped(resp, MAX_JSON_RESPONSE, what).await?;
        serde_json::from_slice(&body).map_err(|e| NetError::BadAnswer {
            what,
            reason: format!("bad JSON: {e}"),
        })
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        what: &'static str,
    ) -> Result<T, NetError> {
        let rb = self.http.get(self.url(path)).timeout(CALL_TIMEOUT);
        let resp = self.send(rb, what, BUSY_RETRIES).await?;
        self.json(resp, what).await
    }

    async fn post_json<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        url: Url,
        body: &B,
        what: &'static str,
        retries: u32,
    ) -> Result<T, NetError> {
        let rb = self.http.post(url).json(body).timeout(CALL_TIMEOUT);
        let resp = self.send(rb, what, retries).await?;
        self.json(resp, what).await
    }

    /// `GET /api/v1/events`: the open stream of server-sent events. No deadline for the
    /// whole call (the stream stays open); the stall timeout applies between its bytes.
    pub async fn events(&self) -> Result<Response, NetError> {
        let rb = self.http.get(self.url(api::EVENTS));
        self.send(rb, "events", BUSY_RETRIES).await
    }

    /// `GET /slave/events` (slave token): the stream of publications, at once (a slave's
    /// news). No deadline for the whole call, as [`MasterApi::events`].
    pub async fn slave_events(&self) -> Result<Response, NetError> {
        let rb = self.http.get(self.url(api::SLAVE_EVENTS));
        self.send(rb, "slave events", BUSY_RETRIES).await
    }

    /// `GET /api/v1/revision`.
    pub async fn revision(&self) -> Result<RevisionInfo, NetError> {
        self.get_json(api::REVISION, "revision").await
    }

    /// `GET /api/v1/revision?revision=N`: revision N, for a client pinned to it (its statement
    /// is a pinned one unless N is current).
    pub async fn revision_at(&self, revision: u64) -> Result<RevisionInfo, NetError> {
        let mut url = self.url(api::REVISION);
        url.query_pairs_mut()
            .append_pair("revision", &revision.to_string());
        let rb = self.http.get(url).timeout(CALL_TIMEOUT);
        let resp = self.send(rb, "revision", BUSY_RETRIES).await?;
        self.json(resp, "revision").await
    }

    /// `GET /api/v1/index?revision=N&path=SUB[&since=M]`: the encoded index, or a delta from
    /// revision M when `since` is given and the master can; at most [`MAX_INDEX_RESPONSE`]
    /// bytes. Not decoded here.
    pub async fn index(
        &self,
        revision: u64,
        path: Option<&RelPath>,
        since: Option<u64>,
    ) -> Result<IndexAnswer, NetError> {
        const WHAT: &str = "index";
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
        let resp = self.send(self.http.get(url), WHAT, BUSY_RETRIES).await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let revision_hash = match header(api::REVISION_HASH_HEADER) {
            None => None,
            Some(h) => Some(h.parse::<Hash>().map_err(|_| NetError::BadAnswer {
                what: WHAT,
                reason: format!(
                    "{} is not a hash: {}",
                    api::REVISION_HASH_HEADER,
                    one_line(&h)
                ),
            })?),
        };
        let repository_id = header(api::REPOSITORY_ID_HEADER);
        let mass_delete_confirmed = header(api::MASS_DELETE_HEADER).as_deref() == Some("1");
        let proof = header(api::PROOF_HEADER);
        let bytes = read_capped(resp, MAX_INDEX_RESPONSE, WHAT).await?;
        Ok(IndexAnswer {
            bytes,
            revision_hash,
            repository_id,
            mass_delete_confirmed,
            proof,
        })
    }

    /// `POST /api/v1/locate`. Checks the answer's shape against the request: one holder list
    /// per pack, holders that name listed slaves, slave URLs that parse.
    pub async fn locate(&self, packs: &[u32]) -> Result<LocateResponse, NetError> {
        const WHAT: &str = "locate";
        let body = LocateRequest {
            packs: packs.to_vec(),
        };
        let located: LocateResponse = self
            .post_json(self.url(api::LOCATE), &body, WHAT, BUSY_RETRIES)
            .await?;
        let bad = |reason: String| NetError::BadAnswer { what: WHAT, reason };
        if located.holders.len() != packs.len() {
            return Err(bad(format!(
                "{} holder lists for {} packs",
                located.holders.len(),
                packs.len()
            )));
        }
        let n = located.slaves.len();
        if located.holders.iter().flatten().any(|&s| s as usize >= n) {
            return Err(bad("holder refers to an unknown slave".into()));
        }
        for s in &located.slaves {
            Url::parse(&normalise_url(&s.url))
                .map_err(|_| bad(format!("slave {} has a bad URL", s.id)))?;
        }
        Ok(located)
    }

    /// `POST /api/v1/client/report`. Best effort, so bounded tightly and not asked again.
    pub async fn report(&self, report: &ClientReport) -> Result<(), NetError> {
        let rb = self
            .http
            .post(self.url(api::CLIENT_REPORT))
            .json(report)
            .timeout(REPORT_TIMEOUT);
        self.send(rb, "report", 0).await?;
        Ok(())
    }

    /// `POST /build[?allow_mass_delete=true]` (write token).
    pub async fn build(&self, allow_mass_delete: bool) -> Result<BuildStarted, NetError> {
        self.build_with(&BuildQuery {
            allow_mass_delete,
            ..BuildQuery::default()
        })
        .await
    }

    /// `POST /build?allow_mass_delete=…&message=…` (write token): the query of
    /// [`BuildQuery`].
    pub async fn build_with(&self, query: &BuildQuery) -> Result<BuildStarted, NetError> {
        let mut url = self.url(api::BUILD);
        {
            let mut q = url.query_pairs_mut();
            if query.allow_mass_delete {
                q.append_pair("allow_mass_delete", "true");
            }
            if let Some(m) = &query.message {
                q.append_pair("message", m);
            }
        }
        let rb = self.http.post(url).timeout(CALL_TIMEOUT);
        let resp = self.send(rb, "build", BUSY_RETRIES).await?;
        self.json(resp, "build").await
    }

    /// `GET /api/v1/builds/{id}`.
    pub async fn build_status(&self, id: u64) -> Result<BuildStatus, NetError> {
        self.get_json(&format!("{}/{id}", api::BUILDS), "build status")
            .await
    }

    /// `GET /api/v1/revisions?limit=N&before=M`: the history, newest first.
    pub async fn revisions(&self, query: &RevisionsQuery) -> Result<RevisionsResponse, NetError> {
        let mut url = self.url(api::REVISIONS);
        {
            let mut q = url.query_pairs_mut();
            if let Some(n) = query.limit {
                q.append_pair("limit", &n.to_string());
            }
            if let Some(n) = query.before {
                q.append_pair("before", &n.to_string());
            }
        }
        let rb = self.http.get(url).timeout(CALL_TIMEOUT);
        let resp = self.send(rb, "revisions", BUSY_RETRIES).await?;
        self.json(resp, "revisions").await
    }

    /// `GET /api/v1/changes?from=N&to=M`: what changed from N to M.
    pub async fn changes(&self, query: &ChangesQuery) -> Result<ChangesResponse, NetError> {
        let mut url = self.url(api::CHANGES);
        {
            let mut q = url.query_pairs_mut();
            if let Some(n) = query.from {
                q.append_pair("from", &n.to_string());
            }
            if let Some(n) = query.to {
                q.append_pair("to", &n.to_string());
            }
        }
        let rb = self.http.get(url).timeout(CALL_TIMEOUT);
        let resp = self.send(rb, "changes", BUSY_RETRIES).await?;
        self.json(resp, "changes").await
    }

    /// `POST /api/v1/rollback` (write token): publishes an older revision's tree again. Not
    /// asked again when busy: it is not idempotent.
    pub async fn rollback(&self, request: &RollbackRequest) -> Result<RollbackResponse, NetError> {
        self.post_json(self.url(api::ROLLBACK), request, "rollback", 0)
            .await
    }

    /// `POST /api/v1/push/missing` (write token): the repository's chunker and current
    /// revision, and which of `request.chunks` the master lacks (the request names the push
    /// and its prefix, for the master's progress; older masters ignore them).
    pub async fn push_missing(
        &self,
        request: &PushMissingRequest,
    ) -> Result<PushMissingResponse, NetError> {
        self.post_json(self.url(api::PUSH_MISSING), request, "push", BUSY_RETRIES)
            .await
    }

    /// `PUT /api/v1/push/packs/{hash}[?push=ID]` (write token): uploads one pack of push `push`
    /// (the master verifies and stages it; older masters ignore the query). Staging is
    /// idempotent, so a busy master is asked again.
    pub async fn push_pack(
        &self,
        hash: &Hash,
        pack: impl Into<bytes::Bytes>,
        push: Option<&str>,
    ) -> Result<(), NetError> {
        let mut url = self.url(&format!("{}/{}", api::PUSH_PACKS, hash.to_hex()));
        if let Some(id) = push {
            url.query_pairs_mut().append_pair("push", id);
        }
        let rb = self
            .http
            .put(url)
            .body(pack.into())
            .timeout(PUSH_PACK_TIMEOUT);
        self.send(rb, "push upload", BUSY_RETRIES).await?;
        Ok(())
    }

    /// `POST /api/v1/push/publish` (write token). Not asked again when busy: it publishes.
    pub async fn push_publish(
        &self,
        request: &PushPublishRequest,
    ) -> Result<PushPublishResponse, NetError> {
        let rb = self
            .http
            .post(self.url(api::PUSH_PUBLISH))
            .json(request)
            .timeout(PUSH_PUBLISH_TIMEOUT);
        let resp = self.send(rb, "push", 0).await?;
        self.json(resp, "push").await
    }

    /// `GET /api/v1/status`.
    pub async fn status(&self) -> Result<StatusResponse, NetError> {
        self.get_json(api::STATUS, "status").await
    }

    /// `DELETE /api/v1/slaves/{id}` (write token): the master forgets the slave, its claims and
    /// its enrolled key.
    pub async fn remove_slave(&self, id: &str) -> Result<(), NetError> {
        const WHAT: &str = "remove-slave";
        let mut url = self.url(api::SLAVES);
        url.path_segments_mut()
            .map_err(|()| NetError::BadUrl {
                url: self.base.clone(),
            })?
            .push(id);
        let rb = self.http.delete(url).timeout(CALL_TIMEOUT);
        self.send(rb, WHAT, BUSY_RETRIES).await?;
        Ok(())
    }

    /// `POST /api/v1/slaves/{id}/drain` (write token), or `DELETE` when `draining` is false:
    /// the master starts (or calls off) the slave's drain; `status` shows how far it got.
    pub async fn drain_slave(&self, id: &str, draining: bool) -> Result<(), NetError> {
        const WHAT: &str = "drain-slave";
        let mut url = self.url(api::SLAVES);
        url.path_segments_mut()
            .map_err(|()| NetError::BadUrl {
                url: self.base.clone(),
            })?
            .push(id)
            .push("drain");
        let rb = if draining {
            self.http.post(url)
        } else {
            self.http.delete(url)
        };
        self.send(rb.timeout(CALL_TIMEOUT), WHAT, BUSY_RETRIES)
            .await?;
        Ok(())
    }

    /// `POST /slave/hashlist` (slave token), signed by `signer`: the complete hashlist,
    /// answered with a directive. Not asked again here: the slave's loop backs off itself.
    pub async fn slave_hashlist(
        &self,
        body: &SlaveHashlist,
        signer: &dyn SlaveSigner,
    ) -> Result<SlaveDirective, NetError> {
        self.slave_post(api::SLAVE_HASHLIST, body, signer, "hashlist")
            .await
    }

    /// `POST /slave/heartbeat` (slave token), signed by `signer`, answered with a directive.
    /// Not asked again here.
    pub async fn slave_heartbeat(
        &self,
        body: &Heartbeat,
        signer: &dyn SlaveSigner,
    ) -> Result<SlaveDirective, NetError> {
        self.slave_post(api::SLAVE_HEARTBEAT, body, signer, "heartbeat")
            .await
    }

    /// A slave's signed call. A 409 naming the highest nonce the master saw from this slave
    /// (a clock set back, a restart within the same millisecond) is signed again above it and
    /// sent once more.
    async fn slave_post<B: serde::Serialize>(
        &self,
        path: &'static str,
        body: &B,
        signer: &dyn SlaveSigner,
        what: &'static str,
    ) -> Result<SlaveDirective, NetError> {
        let bytes = serde_json::to_vec(body).map_err(|e| NetError::BadAnswer {
            what,
            reason: format!("could not encode the request: {e}"),
        })?;
        let mut above = None;
        loop {
            let mut rb = self
                .http
                .post(self.url(path))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .timeout(CALL_TIMEOUT);
            for (name, value) in signer.identity_headers("POST", path, &bytes, above) {
                rb = rb.header(name, value);
            }
            let resp = rb
                .body(bytes.clone())
                .send()
                .await
                .map_err(|e| NetError::Transport {
                    what,
                    source: e.without_url(),
                })?;
            if resp.status() == StatusCode::CONFLICT
                && above.is_none()
                && let Some(highest) = resp
                    .headers()
                    .get(hummel_proto::identity::SLAVE_NONCE_HEADER)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            {
                tracing::info!(
                    highest,
                    "the master has seen a higher nonce; signing above it"
                );
                above = Some(highest);
                continue;
            }
            if !resp.status().is_success() {
                return Err(decode_error(resp, what).await);
            }
            return self.json(resp, what).await;
        }
    }
}

/// What signs a slave's requests to the master (`hummel_proto::identity`): the identity headers
/// of one request with `body`, under a nonce above every one used before and above `above` when
/// the master named a higher one.
pub trait SlaveSigner: Send + Sync {
    /// The headers (name, value) to add.
    fn identity_headers(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        above: Option<u64>,
    ) -> Vec<(&'static str, String)>;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use axum::http::{HeaderMap, StatusCode as AxStatus};
    use axum::routing::get;

    use super::*;

    /// A real server on 127.0.0.1: `/api/v1/revision` answers 429 (`Retry-After: 0`) twice,
    /// then the revision; `/api/v1/status` refuses the token with the API's error body.
    async fn server() -> (String, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        let app = axum::Router::new()
            .route(
                api::REVISION,
                get(move |headers: HeaderMap| {
                    let seen = seen.clone();
                    async move {
                        assert_eq!(
                            headers.get("user-agent").and_then(|v| v.to_str().ok()),
                            Some(crate::USER_AGENT)
                        );
                        assert_eq!(
                            headers
                                .get(hummel_proto::auth::TOKEN_HEADER)
                                .and_then(|v| v.to_str().ok()),
                            Some("tok")
                        );
                        if seen.fetch_add(1, Ordering::SeqCst) < 2 {
                            return (
                                AxStatus::TOO_MANY_REQUESTS,
                                [("retry-after", "0")],
                                String::new(),
                            );
                        }
                        (
                            AxStatus::OK,
                            [("retry-after", "0")],
                            r#"{"revision":7,"created_unix":null,"files":0,"bytes":0,"index_hash":null}"#
                                .to_string(),
                        )
                    }
                }),
            )
            .route(
                api::STATUS,
                get(|| async {
                    (
                        AxStatus::FORBIDDEN,
                        r#"{"code":"forbidden","message":"wrong token"}"#,
                    )
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, calls)
    }

    #[tokio::test]
    async fn busy_answers_are_asked_again_and_refusals_decoded() {
        let (url, calls) = server().await;
        let http = HttpClient::new(&hummel_tls::ClientTls::system())
            .unwrap()
            .with_token(Some("tok"), "read")
            .unwrap();
        let master = MasterApi::new(http, &url).unwrap();
        assert_eq!(master.base(), url.trim_end_matches('/'));
        let info = master.revision().await.unwrap();
        assert_eq!(info.revision, Some(7));
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let e = master.status().await.unwrap_err();
        let api = e.api().expect("an error answer");
        assert_eq!(api.status, StatusCode::FORBIDDEN);
        assert!(api.is("forbidden"));
        assert_eq!(api.message, "wrong token");
        assert_eq!(
            e.to_string(),
            "status: forbidden: wrong token (HTTP 403 Forbidden)"
        );

        // Nobody listens there: a transport error naming the call.
        let gone = MasterApi::new(
            HttpClient::new(&hummel_tls::ClientTls::system()).unwrap(),
            "http://127.0.0.1:1",
        )
        .unwrap();
        let e = gone.revision().await.unwrap_err();
        assert!(e.is_connect(), "{e}");
        assert!(e.to_string().starts_with("revision: cannot connect"), "{e}");
    }

    #[tokio::test]
    async fn a_push_names_itself_in_its_queries_and_uploads() {
        use std::sync::Mutex;
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let (a, b) = (seen.clone(), seen.clone());
        let app = axum::Router::new()
            .route(
                api::PUSH_MISSING,
                axum::routing::post(move |body: String| {
                    let a = a.clone();
                    async move {
                        a.lock().unwrap().push(body);
                        r#"{"revision":null,"chunker":{"min":16384,"avg":65536,"max":262144},"zstd_level":3,"pack_target":16777216,"missing":[]}"#
                    }
                }),
            )
            .route(
                &format!("{}/{{hash}}", api::PUSH_PACKS),
                axum::routing::put(move |uri: axum::http::Uri| {
                    let b = b.clone();
                    async move {
                        b.lock().unwrap().push(uri.to_string());
                        AxStatus::NO_CONTENT
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let master = MasterApi::new(
            HttpClient::new(&hummel_tls::ClientTls::system()).unwrap(),
            &url,
        )
        .unwrap();
        let id = "0123456789abcdef0123456789abcdef";
        master
            .push_missing(&PushMissingRequest {
                chunks: vec![],
                push: Some(id.into()),
                prefix: Some("@mod".into()),
            })
            .await
            .unwrap();
        let pack = Hash::of(b"pack");
        master
            .push_pack(&pack, b"pack".to_vec(), Some(id))
            .await
            .unwrap();
        master
            .push_pack(&pack, b"pack".to_vec(), None)
            .await
            .unwrap();
        let seen = seen.lock().unwrap();
        let asked: PushMissingRequest = serde_json::from_str(&seen[0]).unwrap();
        assert_eq!(asked.push.as_deref(), Some(id));
        assert_eq!(asked.prefix.as_deref(), Some("@mod"));
        let path = format!("{}/{}", api::PUSH_PACKS, pack.to_hex());
        assert_eq!(seen[1], format!("{path}?push={id}"));
        assert_eq!(seen[2], path);
    }
}
