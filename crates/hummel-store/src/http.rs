//! The data plane: `GET|HEAD /blob/{hash}` served from a [`BlobStore`].
//!
//! Packs are immutable, so responses carry `ETag: "<hash>"` and
//! `Cache-Control: public, max-age=31536000, immutable`; any HTTP cache or CDN in front works.
//! A single `Range: bytes=a-b` (or `a-`, or `-n`) gets 206 with `Content-Range`; an
//! unsatisfiable one gets 416; a multi-range request is answered with the whole pack.
//! Authentication is the caller's: wrap the router in its own middleware. An optional
//! [`RateLimit`] caps what all responses together send (a mirror on a shared uplink).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures::{Stream, StreamExt};

use hummel_core::Hash;

use crate::BlobStore;

/// The `/blob/{hash}` routes over `store`.
pub fn router(store: Arc<BlobStore>) -> Router {
    router_with_limit(store, None)
}

/// The `/blob/{hash}` routes over `store`, all bodies together sent at most at `limit`.
pub fn router_with_limit(store: Arc<BlobStore>, limit: Option<Arc<RateLimit>>) -> Router {
    Router::new()
        .route("/blob/{hash}", get(get_blob))
        .with_state(Served { store, limit })
}

#[derive(Clone)]
struct Served {
    store: Arc<BlobStore>,
    limit: Option<Arc<RateLimit>>,
}

/// An upload cap shared by every response: each piece of a body waits for its turn so that
/// the bytes sent stay under `bytes_per_sec` on average (bursts of at most one piece).
#[derive(Debug)]
pub struct RateLimit {
    bytes_per_sec: u64,
    /// When the next piece may go.
    next: std::sync::Mutex<tokio::time::Instant>,
}

impl RateLimit {
    /// A cap of `bytes_per_sec` (at least 1).
    pub fn new(bytes_per_sec: u64) -> RateLimit {
        RateLimit {
            bytes_per_sec: bytes_per_sec.max(1),
            next: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Books `bytes` and returns when they may be sent.
    fn reserve(&self, bytes: usize) -> tokio::time::Instant {
        let cost = std::time::Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        let mut next = self.next.lock().expect("not poisoned");
        let at = (*next).max(tokio::time::Instant::now());
        *next = at + cost;
        at
    }

    /// Piece size for limited bodies: about 1/20 s of the cap, 4 KiB to 256 KiB.
    fn piece(&self) -> usize {
        ((self.bytes_per_sec / 20) as usize).clamp(4 << 10, 256 << 10)
    }
}

/// Longest a handler may take to produce its response head. A pack body may stream for longer;
/// the client bounds that side with its own stall timeout.
pub const HANDLER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Middleware: answers 503 `deadline_exceeded` when a handler takes longer than
/// [`HANDLER_DEADLINE`], so no request (a slow JSON upload, a stuck lookup) holds a task forever.
pub async fn handler_deadline(req: Request, next: Next) -> Response {
    match tokio::time::timeout(HANDLER_DEADLINE, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => plain(StatusCode::SERVICE_UNAVAILABLE, "the request took too long"),
    }
}

/// A parsed single byte range, inclusive bounds resolved against the size.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// No range or one we ignore: the whole body.
    Full,
    /// `start..=end`.
    Part {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// Cannot be satisfied.
    Unsatisfiable,
}

/// Parses a `Range` header value against a body of `size` bytes.
pub fn parse_range(value: &str, size: u64) -> RangeSpec {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeSpec::Full;
    };
    if spec.contains(',') {
        return RangeSpec::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Unsatisfiable;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = if a.is_empty() {
        // Suffix: the last n bytes.
        match b.parse::<u64>() {
            Ok(0) | Err(_) => None,
            Ok(n) => Some((size.saturating_sub(n), size.saturating_sub(1))),
        }
    } else {
        match (a.parse::<u64>(), b) {
            (Ok(start), "") => Some((start, size.saturating_sub(1))),
            (Ok(start), b) => match b.parse::<u64>() {
                Ok(end) if end >= start => Some((start, end.min(size.saturating_sub(1)))),
                _ => None,
            },
            _ => None,
        }
    };
    match parsed {
        Some((start, end)) if size > 0 && start < size && start <= end => {
            RangeSpec::Part { start, end }
        }
        _ => RangeSpec::Unsatisfiable,
    }
}

fn plain(status: StatusCode, msg: &str) -> Response {
    let body = serde_json::json!({ "code": status.canonical_reason().unwrap_or("error").to_lowercase().replace(' ', "_"), "message": msg });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn get_blob(
    State(Served { store, limit }): State<Served>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Ok(hash) = hash.parse::<Hash>() else {
        return plain(StatusCode::BAD_REQUEST, "not a pack hash");
    };
    let Some(size) = store.size(&hash) else {
        return plain(StatusCode::NOT_FOUND, "pack not held here");
    };
    let etag = format!("\"{hash}\"");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, size))
        .unwrap_or(RangeSpec::Full);
    let (status, start, len) = match range {
        RangeSpec::Full => (StatusCode::OK, 0, size),
        RangeSpec::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        RangeSpec::Unsatisfiable => {
            let mut r = plain(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
            );
            return r;
        }
    };
    let path = store.path(&hash);
    let opened = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(path)?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start))?;
        Ok::<_, std::io::Error>(file)
    })
    .await;
    let file = match opened {
        Ok(Ok(f)) => f,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return plain(StatusCode::NOT_FOUND, "pack not held here");
        }
        _ => return plain(StatusCode::INTERNAL_SERVER_ERROR, "read failed"),
    };
    store.metrics.requests.fetch_add(1, Ordering::Relaxed);
    store.metrics.bytes_served.fetch_add(len, Ordering::Relaxed);
    let body = match limit {
        None => Body::from_stream(read_pieces(file, len, PIECE)),
        Some(limit) => {
            let pieces = read_pieces(file, len, limit.piece());
            Body::from_stream(pieces.then(move |piece| {
                let limit = limit.clone();
                async move {
                    if let Ok(bytes) = &piece {
                        tokio::time::sleep_until(limit.reserve(bytes.len())).await;
                    }
                    piece
                }
            }))
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("ascii"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1))
                .expect("ascii"),
        );
    }
    resp
}

/// Bytes read from a pack per blocking read (and per body frame).
const PIECE: usize = 256 << 10;

/// The next `len` bytes of `file`, in pieces of `piece` bytes, each read on the blocking pool
/// straight into the buffer that becomes the body frame: no second buffer and no copy
/// (`tokio::fs::File` reads into its own buffer and copies out; that copy was 13% of a slave's
/// CPU samples while it served eight clients). No thread waits on a slow client between pieces.
fn read_pieces(
    file: std::fs::File,
    len: u64,
    piece: usize,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures::stream::try_unfold((file, len), move |(file, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let n = (piece as u64).min(left);
        let (file, buf) = tokio::task::spawn_blocking(move || {
            let mut buf = Vec::with_capacity(n as usize);
            std::io::Read::read_to_end(&mut std::io::Read::take(&file, n), &mut buf)?;
            Ok::<_, std::io::Error>((file, buf))
        })
        .await
        .map_err(std::io::Error::other)??;
        if buf.len() as u64 != n {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        Ok(Some((Bytes::from(buf), (file, left - n))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_spaces_pieces_by_their_size() {
        // 1 kB/s: the bookings are seconds apart, far beyond any scheduling delay here.
        let limit = RateLimit::new(1_000);
        let t0 = limit.reserve(10_000);
        let t1 = limit.reserve(10_000);
        let t2 = limit.reserve(30_000);
        let t3 = limit.reserve(1);
        let secs = |a: tokio::time::Instant, b: tokio::time::Instant| (b - a).as_secs_f64();
        assert!((secs(t0, t1) - 10.0).abs() < 1e-6);
        assert!((secs(t1, t2) - 10.0).abs() < 1e-6);
        assert!((secs(t2, t3) - 30.0).abs() < 1e-6);
        assert_eq!(RateLimit::new(1_000_000).piece(), 50_000);
        assert_eq!(RateLimit::new(10).piece(), 4 << 10);
        assert_eq!(RateLimit::new(1 << 40).piece(), 256 << 10);
    }

    #[test]
    fn ranges() {
        assert_eq!(
            parse_range("bytes=0-9", 100),
            RangeSpec::Part { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range("bytes=90-", 100),
            RangeSpec::Part { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=-10", 100),
            RangeSpec::Part { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=95-200", 100),
            RangeSpec::Part { start: 95, end: 99 }
        );
        assert_eq!(parse_range("bytes=100-", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=9-3", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=x-3", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeSpec::Full);
        assert_eq!(parse_range("items=0-1", 100), RangeSpec::Full);
        assert_eq!(parse_range("bytes=0-0", 0), RangeSpec::Unsatisfiable);
    }

    #[tokio::test]
    async fn pieces_cover_the_range_exactly_and_a_short_file_is_an_error() {
        use std::io::{Seek, SeekFrom, Write};
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        f.seek(SeekFrom::Start(1_234)).unwrap();
        let pieces: Vec<Bytes> = read_pieces(f.try_clone().unwrap(), 5_000, 999)
            .map(|p| p.unwrap())
            .collect()
            .await;
        assert_eq!(pieces.len(), 6, "five of 999 bytes and one of 5");
        assert!(pieces[..5].iter().all(|p| p.len() == 999));
        assert_eq!(pieces.concat(), data[1_234..6_234]);
        // The file ends before the range does: the body fails instead of ending short.
        f.seek(SeekFrom::Start(9_000)).unwrap();
        let got: Vec<std::io::Result<Bytes>> = read_pieces(f, 2_000, 4_096).collect().await;
        assert!(got.last().unwrap().is_err());
    }
}
