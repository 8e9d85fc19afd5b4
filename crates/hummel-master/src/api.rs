//! The HTTP edge: [`router`], the handlers, [`ApiError`] and the [`ApiJson`] body extractor.
//!
//! Handlers check access with the extractors of [`crate::auth`] (before any body is read),
//! parse bodies with [`ApiJson`] (each body type bounded by its route's need, [`Bounded`]:
//! 413 beyond it, before more than the limit is read; bad JSON → 400), and call [`Master`]
//! methods, through `spawn_blocking` whenever those touch the database or compute placement.
//! The routes anyone may call sit behind the limits of [`crate::limits`] (per-address rate,
//! requests at once); `/health`, `/blob` and the slaves' routes do not. Every error becomes
//! an [`ApiError`], whose response body is [`ApiErrorBody`]; details of 5xx errors are logged,
//! never sent. Every answer passes `crate::dashboard::page_headers` (`nosniff`; the pages'
//! Content-Security-Policy on HTML). Handlers of what the dashboard shows tell it
//! (`Master::ui_changed`).
//!
//! Body limits per route: `/api/v1/locate` 16 KiB plus 12 bytes per pack of the table
//! ([`hummel_proto::api::locate_body_limit`]), `/api/v1/client/report` 128 KiB plus as much,
//! `/slave/heartbeat` 1 MiB, `/slave/hashlist` 64 MiB (slave token first), anything else
//! (the dashboard's form) [`DEFAULT_BODY_LIMIT`].

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hummel_core::{Hash, RelPath};
use hummel_proto::ApiErrorBody;
use hummel_proto::api::{
    self as endpoints, BuildQuery, BuildStarted, BuildStatus, ClientReport, HashlistChanges,
    Health, Heartbeat, LocateRequest, LocateResponse, MASS_DELETE_HEADER, MAX_BAD_SLAVES,
    MAX_HEARTBEAT_BODY, MAX_JSON_BODY, PROOF_HEADER, REPOSITORY_ID_HEADER, REVISION_HASH_HEADER,
    RevisionInfo, SlaveDirective, SlaveHashlist, StatusResponse,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;

use crate::auth::{
    MetricsAccess, ReadAccess, SlaveAccess, WriteAccess, blob_guard, check_slave_read_token,
};
use crate::clients::ReportRefusal;
use crate::db::RevisionRow;
use crate::error::MasterError;
use crate::identity::{Admission, Signed};
use crate::limits::MAX_API_REQUESTS;
use crate::master::{EMBEDDED_SLAVE_ID, IndexLookupError, Master};

/// Header carrying the revision number of an index response (`X-Hummel-Revision`).
pub(crate) const REVISION_HEADER: &str = "x-hummel-revision";
/// Says whether `/api/v1/index` answered with the whole index or a delta (`since`).
pub(crate) const INDEX_KIND_HEADER: &str = "x-hummel-index-kind";
const INDEX_KIND_FULL: &str = "full";
const INDEX_KIND_DELTA: &str = "delta";
/// Longest slave or client id accepted.
const MAX_ID_LEN: usize = 128;
/// Longest slave URL accepted.
const MAX_URL_LEN: usize = 2048;
/// The `Retry-After` of a [`ApiError::Busy`] answer.
pub(crate) const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
/// Largest body of a route without a [`Bounded`] body (the dashboard's build form).
pub(crate) const DEFAULT_BODY_LIMIT: usize = 16 << 10;
/// Bodies larger than this are parsed on a blocking thread (only the slaves' hashlists).
const PARSE_INLINE_MAX: usize = 256 << 10;

/// Every error an endpoint can answer with.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// No token.
    Unauthorized,
    /// Wrong token.
    Forbidden,
    /// Malformed request.
    BadRequest(String),
    /// Body over its route's limit (bytes).
    PayloadTooLarge(usize),
    /// The path exists, the method does not.
    MethodNotAllowed,
    /// Something named by the request does not exist.
    NotFound { code: &'static str, message: String },
    /// Too busy now; the client should try again after [`RETRY_AFTER`] or elsewhere.
    Busy(String),
    /// Refused for a reason of its own: a status, a stable code, a message, and when to try
    /// again if it may succeed later (`Retry-After`).
    Refused {
        status: StatusCode,
        code: &'static str,
        message: String,
        retry_after: Option<std::time::Duration>,
    },
    /// A slave's nonce was not above the highest accepted (409 `slave_nonce_stale`; the
    /// highest goes in [`hummel_proto::identity::SLAVE_NONCE_HEADER`]).
    StaleNonce(u64),
    /// Our fault; the detail is logged, not sent.
    Internal(String),
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Refused { status, .. } => *status,
            ApiError::StaleNonce(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn body(&self) -> ApiErrorBody {
        let (code, message) = match self {
            ApiError::Unauthorized => (
                "unauthorized",
                format!(
                    "missing token: send it in the {} header",
                    hummel_proto::auth::TOKEN_HEADER
                ),
            ),
            ApiError::Forbidden => ("forbidden", "this token is not accepted here".to_string()),
            ApiError::BadRequest(m) => ("bad_request", m.clone()),
            ApiError::PayloadTooLarge(limit) => (
                "payload_too_large",
                format!("request body larger than the {limit} bytes this endpoint takes"),
            ),
            ApiError::MethodNotAllowed => (
                "method_not_allowed",
                "this endpoint does not accept that method".into(),
            ),
            ApiError::NotFound { code, message } => (*code, message.clone()),
            ApiError::Busy(m) => ("busy", m.clone()),
            ApiError::Refused { code, message, .. } => (*code, message.clone()),
            ApiError::StaleNonce(highest) => (
                "slave_nonce_stale",
                format!("the master has accepted nonce {highest} from this slave; sign above it"),
            ),
            ApiError::Internal(_) => ("internal", "internal error; see the master's log".into()),
        };
        ApiErrorBody {
            code: code.to_string(),
            message,
        }
    }

    pub(crate) fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::NotFound {
            code,
            message: message.into(),
        }
    }

    /// 429 `rate_limited`, to be retried after `wait`.
    pub(crate) fn rate_limited(message: String, wait: std::time::Duration) -> ApiError {
        ApiError::Refused {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message,
            retry_after: Some(wait),
        }
    }

    /// When the client may try again, if it may.
    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ApiError::Busy(_) => Some(RETRY_AFTER),
            ApiError::Refused { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "request failed");
        }
        let mut resp = (self.status(), Json(self.body())).into_response();
        if let ApiError::StaleNonce(highest) = &self {
            resp.headers_mut().insert(
                HeaderName::from_static("x-hummel-slave-nonce"),
                HeaderValue::from(*highest),
            );
        }
        if let Some(wait) = self.retry_after() {
            // Whole seconds, rounded up, at least one.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        resp
    }
}

impl From<MasterError> for ApiError {
    fn from(e: MasterError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// A request body type and the most bytes its route takes.
pub(crate) trait Bounded {
    /// The limit, from what the master holds now.
    fn limit(master: &Master) -> usize;
}

impl Bounded for LocateRequest {
    /// The packs of one plan: at most every pack of the table.
    fn limit(master: &Master) -> usize {
        endpoints::locate_body_limit(crate::read(&master.inner.catalog.packs).by_number.len())
    }
}

impl Bounded for ClientReport {
    fn limit(master: &Master) -> usize {
        endpoints::report_body_limit(crate::read(&master.inner.catalog.packs).by_number.len())
    }
}

impl Bounded for Heartbeat {
    fn limit(_: &Master) -> usize {
        MAX_HEARTBEAT_BODY
    }
}

impl Bounded for SlaveHashlist {
    fn limit(_: &Master) -> usize {
        MAX_JSON_BODY
    }
}

/// A JSON body of at most [`Bounded::limit`] bytes; a larger one is a 413 (refused on its
/// `Content-Length`, or as soon as more than the limit arrived: never held whole), a bad one
/// a 400 with [`ApiErrorBody`]. No `Content-Type` is required.
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned + Bounded + Send + 'static> FromRequest<Master> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, master: &Master) -> Result<Self, Self::Rejection> {
        let limit = T::limit(master);
        let bytes = read_body(req, master, limit).await?;
        parse_json(bytes, limit).await.map(ApiJson)
    }
}

/// The body of `req`, at most `limit` bytes: 413 on a larger `Content-Length`, or as soon as
/// more than `limit` bytes arrived (never held whole).
pub(crate) async fn read_body(
    req: Request,
    master: &Master,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        master
            .inner
            .metrics
            .bodies_refused
            .fetch_add(1, Ordering::Relaxed);
        ApiError::PayloadTooLarge(limit)
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(_) => Err(ApiError::BadRequest(
            "could not read the request body".into(),
        )),
    }
}

/// Parses a JSON body read under `limit` (on a blocking thread when the limit is large).
pub(crate) async fn parse_json<T: DeserializeOwned + Send + 'static>(
    bytes: Bytes,
    limit: usize,
) -> Result<T, ApiError> {
    let parse = move || {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
    };
    if limit <= PARSE_INLINE_MAX {
        parse()
    } else {
        blocking(parse).await?
    }
}

/// Runs blocking work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("blocking task failed: {e}")))
}

/// The whole HTTP surface of the master.
pub(crate) fn router(master: Master) -> Router {
    let blob = hummel_store::http::router(master.store().clone())
        .layer(middleware::from_fn_with_state(master.clone(), blob_guard));
    // What anyone may call: at most `MAX_API_REQUESTS` at once (503 beyond, not a queue), and
    // each address at its rate (429 beyond, checked first).
    let shed = master.clone();
    let at_once = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |_: tower::BoxError| {
            let master = shed.clone();
            async move {
                master.inner.metrics.shed.fetch_add(1, Ordering::Relaxed);
                ApiError::Busy(format!(
                    "the master is answering {MAX_API_REQUESTS} requests already; retry shortly"
                ))
            }
        }))
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::new(MAX_API_REQUESTS));
    let public = Router::new()
        .route("/", get(crate::dashboard::page))
        .route("/join", get(crate::join::page))
        .route("/ui/build", post(crate::dashboard::start_build))
        .route("/ui/login", post(crate::dashboard::login))
        .route("/ui/logout", post(crate::dashboard::logout))
        .route("/ui/rollback", post(crate::dashboard::rollback))
        .route("/ui/drain", post(crate::dashboard::drain))
        .route("/ui/remove-slave", post(crate::dashboard::remove_slave))
        .route("/ui/events", get(crate::dashboard::events))
        .route("/ui/live.js", get(crate::dashboard::script))
        .route("/ui/style.css", get(crate::dashboard::style))
        .route(endpoints::METRICS, get(metrics))
        .route(endpoints::BUILD, post(start_build))
        .route(&format!("{}/{{id}}", endpoints::BUILDS), get(build_status))
        .route(endpoints::REVISION, get(revision))
        .route(endpoints::EVENTS, get(events))
        .route(endpoints::INDEX, get(index))
        .route(endpoints::LOCATE, post(locate))
        .route(endpoints::CLIENT_REPORT, post(client_report))
        .route(endpoints::STATUS, get(status))
        .route(endpoints::REVISIONS, get(crate::history::revisions_handler))
        .route(endpoints::CHANGES, get(crate::history::changes_handler))
        .route(endpoints::ROLLBACK, post(crate::history::rollback_handler))
        .route(endpoints::PUSH_MISSING, post(crate::push::missing_handler))
        .route(
            &format!("{}/{{hash}}", endpoints::PUSH_PACKS),
            axum::routing::put(crate::push::pack_handler),
        )
        .route(endpoints::PUSH_PUBLISH, post(crate::push::publish_handler))
        .route(
            &format!("{}/{{id}}", endpoints::SLAVES),
            axum::routing::delete(remove_slave),
        )
        .route(
            &format!("{}/{{id}}/drain", endpoints::SLAVES),
            post(crate::drain::start_handler).delete(crate::drain::stop_handler),
        )
        .route_layer(at_once)
        .route_layer(middleware::from_fn_with_state(
            master.clone(),
            crate::limits::rate_limit,
        ));
    Router::new()
        .route(endpoints::HEALTH, get(health))
        .route(endpoints::SLAVE_HASHLIST, post(slave_hashlist))
        .route(endpoints::SLAVE_HEARTBEAT, post(slave_heartbeat))
        .route(endpoints::SLAVE_EVENTS, get(slave_events))
        .merge(public)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(master.clone())
        .merge(blob)
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .layer(middleware::from_fn(hummel_store::http::handler_deadline))
        .layer(middleware::from_fn_with_state(master, observe_request))
        .layer(middleware::from_fn(crate::dashboard::page_headers))
}

/// Counts and logs every request (method, path, status, time; never headers).
async fn observe_request(State(master): State<Master>, req: Request, next: Next) -> Response {
    let metrics = &master.inner.metrics;
    metrics.http_requests.fetch_add(1, Ordering::Relaxed);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status();
    if status.is_server_error() {
        metrics.http_server_errors.fetch_add(1, Ordering::Relaxed);
    }
    tracing::debug!(
        %method,
        path,
        status = status.as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    resp
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn health(State(master): State<Master>) -> Json<Health> {
    let role = if master.config().embedded_store {
        "serve"
    } else {
        "master"
    };
    Json(Health {
        status: "ok".into(),
        role: role.into(),
        api_version: hummel_proto::API_VERSION,
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

async fn metrics(_: MetricsAccess, State(master): State<Master>) -> Result<Response, ApiError> {
    let text = blocking(move || crate::metrics::render(&master)).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response())
}

async fn start_build(
    _: WriteAccess,
    State(master): State<Master>,
    query: Result<Query<BuildQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<BuildStarted>), ApiError> {
    let Query(request) = query.map_err(|e| ApiError::BadRequest(format!("bad query: {e}")))?;
    if request
        .message
        .as_deref()
        .is_some_and(|m| !endpoints::valid_message(m))
    {
        return Err(crate::history::HistoryError::BadMessage.into());
    }
    let build_id = blocking(move || master.start_build_with(&request)).await??;
    Ok((StatusCode::ACCEPTED, Json(BuildStarted { build_id })))
}

async fn build_status(
    _: ReadAccess,
    State(master): State<Master>,
    Path(id): Path<String>,
) -> Result<Json<BuildStatus>, ApiError> {
    let status = if id == "latest" {
        master.latest_build()
    } else {
        let id: u64 = id
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("not a build id: {id:?}")))?;
        master.build_status(id)
    };
    status
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no_such_build", "no such build"))
}

/// Query of `GET /api/v1/revision`: `revision=N` for a client pinned to N.
#[derive(Debug, Deserialize)]
struct RevisionQuery {
    revision: Option<u64>,
}

async fn revision(
    _: ReadAccess,
    State(master): State<Master>,
    query: Result<Query<RevisionQuery>, QueryRejection>,
) -> Result<Json<RevisionInfo>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(format!("bad query: {e}")))?;
    match q.revision {
        None => Ok(Json(master.revision_info())),
        // A pin (`crate::history`).
        Some(n) => Ok(Json(
            blocking(move || master.pinned_revision_info(n)).await??,
        )),
    }
}

/// Server-sent events: each revision once its packs can be fetched (`crate::events`).
async fn events(_: ReadAccess, State(master): State<Master>) -> Result<Response, ApiError> {
    let (permit, announced) = master.inner.events.subscribe().ok_or_else(|| {
        ApiError::Busy(format!(
            "{} programs are waiting for events already; retry shortly",
            crate::events::MAX_SUBSCRIBERS
        ))
    })?;
    Ok(crate::events::stream(master, permit, announced).into_response())
}

/// `GET /slave/events` (slave token): each publication at once (`crate::events`).
async fn slave_events(_: SlaveAccess, State(master): State<Master>) -> Result<Response, ApiError> {
    let (permit, published) = master.inner.events.subscribe_published().ok_or_else(|| {
        ApiError::Busy(format!(
            "{} slaves are waiting for events already; retry shortly",
            crate::events::MAX_SLAVE_SUBSCRIBERS
        ))
    })?;
    Ok(crate::events::stream(master, permit, published).into_response())
}

#[derive(Debug, Deserialize)]
struct IndexQuery {
    revision: Option<u64>,
    path: Option<String>,
    /// The revision the client holds: answer with a delta from it when possible.
    since: Option<u64>,
}

async fn index(
    _: ReadAccess,
    State(master): State<Master>,
    query: Result<Query<IndexQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(format!("bad query: {e}")))?;
    let path = match q.path.as_deref() {
        None | Some("") => None,
        Some(p) => Some(RelPath::new(p).map_err(|e| ApiError::BadRequest(e.to_string()))?),
    };
    master
        .inner
        .metrics
        .index_requests
        .fetch_add(1, Ordering::Relaxed);
    let repository_id = master.inner.repository_id.clone();
    let lookup = blocking(move || {
        let delta = match q.since {
            Some(since) => master.index_delta_bytes(q.revision, path.as_ref(), since)?,
            None => None,
        };
        let (row, bytes, kind) = match delta {
            Some((row, bytes)) => (row, bytes, INDEX_KIND_DELTA),
            None => {
                let (row, bytes) = master.index_bytes(q.revision, path.as_ref())?;
                (row, bytes, INDEX_KIND_FULL)
            }
        };
        // What ties the answer (or the index a delta rebuilds) to the signed tree digest.
        let proof = master.subtree_proof(row.number, path.as_ref())?;
        Ok::<_, IndexLookupError>((row, bytes, kind, proof))
    })
    .await?;
    let (row, bytes, kind, proof) = lookup.map_err(|e| match e {
        IndexLookupError::NoRevision => {
            ApiError::not_found("no_revision", "no revision has been published yet")
        }
        IndexLookupError::NoSuchRevision(n) => {
            ApiError::not_found("no_such_revision", format!("revision {n} is not available"))
        }
        IndexLookupError::NoSuchPath(p) => ApiError::not_found(
            "no_such_path",
            format!("{p} is not a directory of this revision"),
        ),
        IndexLookupError::Internal(e) => e.into(),
    })?;
    let mut headers = identity_headers(&row, &repository_id)?;
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        HeaderName::from_static(INDEX_KIND_HEADER),
        HeaderValue::from_static(kind),
    );
    let proof = hummel_core::tree::to_hex(&hummel_core::tree::encode_proof(&proof));
    headers.insert(
        HeaderName::try_from(PROOF_HEADER).map_err(|e| ApiError::Internal(e.to_string()))?,
        HeaderValue::try_from(proof).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    Ok((headers, bytes).into_response())
}

/// What names the revision an index answer (whole, subtree or delta) was cut from: its number,
/// the whole revision's index hash and the repository id; and, when the admin confirmed the
/// mass delete it makes, [`MASS_DELETE_HEADER`].
fn identity_headers(row: &RevisionRow, repository_id: &str) -> Result<HeaderMap, ApiError> {
    let bad = |e: &dyn std::fmt::Display| ApiError::Internal(format!("index header: {e}"));
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static(REVISION_HEADER),
        HeaderValue::from(row.number),
    );
    let name = |n: &str| HeaderName::try_from(n).map_err(|e| bad(&e));
    let value = |v: &str| HeaderValue::try_from(v).map_err(|e| bad(&e));
    headers.insert(
        name(REVISION_HASH_HEADER)?,
        value(&row.index_hash.to_hex())?,
    );
    headers.insert(name(REPOSITORY_ID_HEADER)?, value(repository_id)?);
    if row.mass_delete_confirmed {
        headers.insert(name(MASS_DELETE_HEADER)?, HeaderValue::from_static("1"));
    }
    Ok(headers)
}

async fn locate(
    _: ReadAccess,
    State(master): State<Master>,
    ApiJson(req): ApiJson<LocateRequest>,
) -> Result<Json<LocateResponse>, ApiError> {
    Ok(Json(blocking(move || master.locate(&req)).await?))
}

/// True for a non-empty id without control characters, of bounded length.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && !id.chars().any(char::is_control)
}

/// The peer's address, before the body is taken.
struct Peer(Option<SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

async fn client_report(
    _: ReadAccess,
    State(master): State<Master>,
    Peer(peer): Peer,
    ApiJson(report): ApiJson<ClientReport>,
) -> Result<StatusCode, ApiError> {
    if !valid_id(&report.client_id) {
        return Err(ApiError::BadRequest("invalid client_id".into()));
    }
    let Some(key) = report
        .client_key
        .clone()
        .filter(|k| endpoints::valid_client_key(k))
    else {
        return Err(ApiError::BadRequest(format!(
            "a report needs its client's key: {} lower-case hex digits (clients before keys \
             cannot report; update hummel)",
            endpoints::CLIENT_KEY_LEN
        )));
    };
    if report.path.len() > hummel_core::relpath::MAX_PATH_LEN
        || report.path.chars().any(char::is_control)
    {
        return Err(ApiError::BadRequest("invalid path".into()));
    }
    if report.bad_slaves.len() > MAX_BAD_SLAVES || !report.bad_slaves.iter().all(|s| valid_id(s)) {
        return Err(ApiError::BadRequest(format!(
            "bad_slaves: at most {MAX_BAD_SLAVES} slave ids"
        )));
    }
    let id = report.client_id.clone();
    let recorded = blocking(move || {
        master.record_client(&report, &key, peer).and_then(|()| {
            // Only an accepted report's pin counts (`crate::history`).
            master
                .record_pin(&report.client_id, report.pinned)
                .map_err(ReportRefusal::Internal)?;
            master.ui_changed();
            Ok(())
        })
    })
    .await?;
    match recorded {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(ReportRefusal::KeyMismatch) => Err(ApiError::Refused {
            status: StatusCode::FORBIDDEN,
            code: "client_key_mismatch",
            message: format!("client id {id} is registered with another client key"),
            retry_after: None,
        }),
        Err(ReportRefusal::TooManyNew(wait)) => Err(ApiError::rate_limited(
            format!(
                "this address registered {} new clients within the hour; retry later",
                crate::limits::NEW_CLIENTS_PER_HOUR
            ),
            wait,
        )),
        Err(ReportRefusal::TableFull) => Err(ApiError::Busy(format!(
            "the master tracks {} clients, the most it keeps; new ones are taken as old ones \
             expire",
            crate::clients::MAX_CLIENTS
        ))),
        Err(ReportRefusal::Internal(e)) => Err(e.into()),
    }
}

async fn status(
    _: ReadAccess,
    State(master): State<Master>,
) -> Result<Json<StatusResponse>, ApiError> {
    Ok(Json(blocking(move || master.status()).await?))
}

async fn slave_hashlist(
    _: SlaveAccess,
    State(master): State<Master>,
    Signed { body: hl, proof }: Signed<SlaveHashlist>,
) -> Result<Json<SlaveDirective>, ApiError> {
    if !valid_id(&hl.slave_id) {
        return Err(ApiError::BadRequest("invalid slave_id".into()));
    }
    if (master.config().embedded_store && hl.slave_id == EMBEDDED_SLAVE_ID)
        || hl.slave_id == endpoints::FALLBACK_ID
    {
        return Err(ApiError::BadRequest(format!(
            "slave id {:?} is reserved",
            hl.slave_id
        )));
    }
    let url_ok = hl.url.len() <= MAX_URL_LEN
        && (hl.url.starts_with("http://") || hl.url.starts_with("https://"))
        && !hl.url.chars().any(|c| c.is_control() || c.is_whitespace());
    if !url_ok {
        return Err(ApiError::BadRequest(
            "url must be an http:// or https:// URL".into(),
        ));
    }
    // Who speaks first: a request for another slave's id changes nothing of it, not even its
    // vetting.
    let admit = master.clone();
    blocking(move || admit.admit_slave(&proof, true)).await??;
    let tokens = &master.config().tokens;
    if let Err(message) = check_slave_read_token(tokens, hl.read_token_digest.as_deref()) {
        master.refuse_slave(&hl.slave_id, &hl.url, &message);
        return Err(ApiError::Refused {
            status: StatusCode::FORBIDDEN,
            code: "read_token_mismatch",
            message,
            retry_after: None,
        });
    }
    let directive = blocking(move || {
        let directive = master.record_hashlist(&hl);
        master.ui_changed();
        directive
    })
    .await??;
    Ok(Json(directive))
}

/// Hashlist changes that cannot be meant: a sequence number below its base, changes that
/// propose no new sequence number, or a pack both added and removed.
fn check_hashlist_changes(c: &HashlistChanges) -> Result<(), ApiError> {
    if c.seq < c.base {
        return Err(ApiError::BadRequest(format!(
            "hashlist seq {} is below its base {}",
            c.seq, c.base
        )));
    }
    if c.seq == c.base && !(c.added.is_empty() && c.removed.is_empty()) {
        return Err(ApiError::BadRequest(
            "hashlist changes must propose a seq above their base".into(),
        ));
    }
    let added: HashSet<&Hash> = c.added.iter().collect();
    if let Some(h) = c.removed.iter().find(|h| added.contains(h)) {
        return Err(ApiError::BadRequest(format!(
            "pack {h} is both added and removed"
        )));
    }
    Ok(())
}

async fn slave_heartbeat(
    _: SlaveAccess,
    State(master): State<Master>,
    Signed { body: hb, proof }: Signed<Heartbeat>,
) -> Result<Json<SlaveDirective>, ApiError> {
    if let Some(c) = &hb.hashlist {
        check_hashlist_changes(c)?;
    }
    let found = blocking(move || {
        master.admit_slave(&proof, false)?;
        let found = master.record_heartbeat(&hb).map_err(Admission::Internal);
        master.ui_changed();
        found
    })
    .await??;
    match found {
        Some(d) => Ok(Json(d)),
        None => Err(ApiError::not_found(
            "unknown_slave",
            "unknown slave; announce with POST /slave/hashlist",
        )),
    }
}

/// `DELETE /api/v1/slaves/{id}` (write token): forgets a slave, its claims and its key, so
/// that another key may enroll its id (`crate::identity`).
async fn remove_slave(
    _: WriteAccess,
    State(master): State<Master>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !valid_id(&id) {
        return Err(ApiError::BadRequest("invalid slave id".into()));
    }
    let name = id.clone();
    if blocking(move || master.remove_slave(&id)).await?? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "unknown_slave",
            format!("no slave {name:?} is known"),
        ))
    }
}
