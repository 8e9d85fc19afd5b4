//! In-process tests of the slave against a fake master and real pack stores on 127.0.0.1:0.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use hummel_core::Hash;
use hummel_proto::ApiErrorBody;
use hummel_proto::api::{
    Assignment, HashlistChanges, HashlistVersion, Heartbeat, SlaveDirective, SlaveHashlist,
};
use hummel_proto::auth::TOKEN_HEADER;
use hummel_slave::{Slave, SlaveConfig, SlaveError, run};
use hummel_store::BlobStore;

const SLAVE_TOKEN: &str = "slave-secret";
const READ_TOKEN: &str = "read-secret";
const DEADLINE: Duration = Duration::from_secs(5);

/// What the fake master has seen and will answer.
#[derive(Default)]
struct MasterState {
    hashlists: Vec<SlaveHashlist>,
    heartbeats: Vec<Heartbeat>,
    /// Assigned on every directive unless the last hashlist lists the pack.
    assign: Vec<Assignment>,
    drop: Vec<Hash>,
    held: HashSet<Hash>,
    /// Answer the next heartbeat with 404 unknown_slave.
    forget: bool,
    forgotten: usize,
    /// Answer everything with 403.
    refuse: bool,
    /// Answer hashlists with 403 `read_token_mismatch` unless they carry this digest.
    read_digest: Option<String>,
    /// Take hashlist changes (a master from before them names no version).
    versions: bool,
    epoch: u64,
    version: Option<HashlistVersion>,
    /// Apply the next heartbeat with changes, then answer 500 as if the answer was lost.
    lose_next_answer: bool,
    /// Refuse the next changes (say, after a restart): answer without a version.
    refuse_next_changes: bool,
}

/// `v` in order, to compare hash lists whatever order they were sent in.
fn sorted(mut v: Vec<Hash>) -> Vec<Hash> {
    v.sort();
    v
}

impl MasterState {
    /// Every heartbeat's changes that added exactly `pack`, in order.
    fn changes_adding(&self, pack: Hash) -> Vec<&HashlistChanges> {
        self.heartbeats
            .iter()
            .filter_map(|h| h.hashlist.as_ref())
            .filter(|c| c.added == [pack])
            .collect()
    }

    /// Applies changes as the master does: on the version held, or over an unanswered attempt
    /// from the same base. Returns whether it did.
    fn take_changes(&mut self, c: &HashlistChanges) -> bool {
        let Some(v) = self.version else {
            return false;
        };
        let fits = v.epoch == c.epoch && (v.seq == c.base || (c.base < v.seq && v.seq <= c.seq));
        if !fits || std::mem::take(&mut self.refuse_next_changes) {
            self.version = None;
            return false;
        }
        for h in &c.removed {
            self.held.remove(h);
        }
        self.held.extend(c.added.iter().copied());
        self.version = Some(c.proposed());
        true
    }
}

type Shared = Arc<Mutex<MasterState>>;

fn directive(m: &MasterState, slave_id: String) -> SlaveDirective {
    SlaveDirective {
        slave_id,
        assign: m
            .assign
            .iter()
            .filter(|a| !m.held.contains(&a.pack))
            .cloned()
            .collect(),
        drop: m
            .drop
            .iter()
            .filter(|h| m.held.contains(h))
            .copied()
            .collect(),
        heartbeat_interval_ms: 50,
        hashlist: m.version,
    }
}

fn api_error(status: StatusCode, code: &str) -> Response {
    (
        status,
        Json(ApiErrorBody {
            code: code.into(),
            message: code.into(),
        }),
    )
        .into_response()
}

fn token_ok(headers: &HeaderMap) -> bool {
    headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()) == Some(SLAVE_TOKEN)
}

async fn hashlist(
    State(m): State<Shared>,
    headers: HeaderMap,
    Json(h): Json<SlaveHashlist>,
) -> Response {
    let mut m = m.lock().unwrap();
    if m.refuse || !token_ok(&headers) {
        return api_error(StatusCode::FORBIDDEN, "forbidden");
    }
    if m.read_digest.is_some() && m.read_digest != h.read_token_digest {
        return api_error(StatusCode::FORBIDDEN, "read_token_mismatch");
    }
    m.held = h.packs.iter().copied().collect();
    if m.versions {
        m.epoch += 1;
        m.version = Some(HashlistVersion {
            epoch: m.epoch,
            seq: 0,
        });
    }
    let id = h.slave_id.clone();
    m.hashlists.push(h);
    Json(directive(&m, id)).into_response()
}

async fn heartbeat(
    State(m): State<Shared>,
    headers: HeaderMap,
    Json(h): Json<Heartbeat>,
) -> Response {
    let mut m = m.lock().unwrap();
    if m.refuse || !token_ok(&headers) {
        return api_error(StatusCode::FORBIDDEN, "forbidden");
    }
    if m.forget {
        m.forget = false;
        m.forgotten += 1;
        return api_error(StatusCode::NOT_FOUND, "unknown_slave");
    }
    let id = h.slave_id.clone();
    let changed = h
        .hashlist
        .as_ref()
        .is_some_and(|c| m.take_changes(c) && c.seq != c.base);
    m.heartbeats.push(h);
    if changed && std::mem::take(&mut m.lose_next_answer) {
        return api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    }
    Json(directive(&m, id)).into_response()
}

fn master_router(m: Shared) -> Router {
    Router::new()
        .route("/slave/hashlist", post(hashlist))
        .route("/slave/heartbeat", post(heartbeat))
        .with_state(m)
}

async fn serve_on(listener: TcpListener, router: Router) -> SocketAddr {
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

async fn serve(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}", serve_on(listener, router).await)
}

/// Deterministic pseudo-random bytes.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A plain reqwest client; built through hummel-tls, which installs the crypto provider
/// reqwest needs.
fn http() -> reqwest::Client {
    hummel_tls::ClientTls::system()
        .client_builder()
        .build()
        .unwrap()
}

fn config(data: &Path, master: &str) -> SlaveConfig {
    SlaveConfig {
        master_url: format!("{master}/"),
        data: data.to_path_buf(),
        advertise_url: String::new(),
        quota: None,
        slave_token: SLAVE_TOKEN.into(),
        read_token: None,
        metrics_token: None,
        replication_concurrency: 4,
        scrub_interval: None,
        serve_limit: None,
        tls: hummel_tls::ClientTls::system(),
    }
}

/// Starts the slave's router and worker; returns its URL, a shutdown trigger and the worker.
async fn start(
    slave: &Slave,
) -> (
    String,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), SlaveError>>,
) {
    let url = serve(slave.router()).await;
    slave.set_advertise_url(url.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let worker = tokio::spawn(run(slave.clone(), async move {
        let _ = rx.await;
    }));
    (url, tx, worker)
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f).await.expect("timed out")
}

#[tokio::test]
async fn replicates_from_the_good_source_respects_quota_and_reannounces() {
    let p1 = bytes(1, 300_000);
    let p2 = bytes(2, 50_000);
    let (h1, h2) = (Hash::of(&p1), Hash::of(&p2));

    // A good source holding both packs, and one whose copy of p1 has rotted.
    let good_dir = tempfile::tempdir().unwrap();
    let good = Arc::new(BlobStore::open(good_dir.path()).unwrap());
    good.put(&h1, &p1).unwrap();
    good.put(&h2, &p2).unwrap();
    let bad_dir = tempfile::tempdir().unwrap();
    let bad = Arc::new(BlobStore::open(bad_dir.path()).unwrap());
    bad.put(&h1, &p1).unwrap();
    let mut rotten = p1.clone();
    rotten[1234] ^= 0xff;
    std::fs::write(bad.path(&h1), &rotten).unwrap();
    let good_url = serve(hummel_store::http::router(good.clone())).await;
    let bad_url = serve(hummel_store::http::router(bad.clone())).await;

    let m: Shared = Arc::default();
    m.lock().unwrap().assign = vec![
        Assignment {
            pack: h1,
            size: p1.len() as u64,
            sources: vec![bad_url.clone(), format!("{good_url}/")],
        },
        // Does not fit the quota next to p1.
        Assignment {
            pack: h2,
            size: p2.len() as u64,
            sources: vec![good_url.clone()],
        },
    ];
    let master = serve(master_router(m.clone())).await;

    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(data.path(), &master);
    let quota = p1.len() as u64 + 10_000;
    cfg.quota = Some(quota);
    let slave = Slave::open(cfg).unwrap();
    let (url, stop, worker) = start(&slave).await;

    wait_for("a hashlist with p1", || {
        m.lock()
            .unwrap()
            .hashlists
            .iter()
            .any(|h| h.packs.contains(&h1))
    })
    .await;
    {
        let m = m.lock().unwrap();
        let first = &m.hashlists[0];
        assert!(first.packs.is_empty(), "a new slave introduces itself");
        assert_eq!(first.slave_id, slave.id());
        assert_eq!(first.url, url);
        assert_eq!(first.quota, Some(quota));
        let last = m.hashlists.last().unwrap();
        assert_eq!(last.packs, vec![h1]);
        assert_eq!(last.used, p1.len() as u64);
    }
    assert_eq!(std::fs::read(slave.store().path(&h1)).unwrap(), p1);
    assert!(!slave.store().contains(&h2), "quota respected");
    assert!(slave.store().used() <= quota);
    assert_eq!(bad.metrics.requests.load(Ordering::Relaxed), 1);
    assert_eq!(
        good.metrics.requests.load(Ordering::Relaxed),
        1,
        "p2 never fetched"
    );
    let metrics = slave.metrics();
    assert_eq!(metrics.replicated_packs.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.corrupt_downloads.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.replication_failures.load(Ordering::Relaxed), 0);
    assert_eq!(metrics.quota_skips.load(Ordering::Relaxed), 1);
    assert_eq!(
        std::fs::read_dir(data.path().join("store/tmp"))
            .unwrap()
            .count(),
        0,
        "no temp files left"
    );

    // Heartbeats flow; a 404 unknown_slave brings the full hashlist again.
    wait_for("a heartbeat", || !m.lock().unwrap().heartbeats.is_empty()).await;
    let before = {
        let mut m = m.lock().unwrap();
        m.forget = true;
        m.hashlists.len()
    };
    wait_for("a re-announce after unknown_slave", || {
        let m = m.lock().unwrap();
        m.forgotten == 1 && m.hashlists.len() > before
    })
    .await;
    assert_eq!(m.lock().unwrap().hashlists.last().unwrap().packs, vec![h1]);

    // The master drops p1: the slave deletes it and says so.
    {
        let mut m = m.lock().unwrap();
        m.assign.clear();
        m.drop = vec![h1];
    }
    wait_for("a hashlist without p1", || {
        m.lock()
            .unwrap()
            .hashlists
            .last()
            .is_some_and(|h| h.packs.is_empty())
    })
    .await;
    assert!(!slave.store().contains(&h1));
    assert!(!slave.store().path(&h1).exists());

    let text = http()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("hummel_slave_replicated_packs_total 1\n"),
        "{text}"
    );
    assert!(text.contains("hummel_slave_master_reachable 1\n"), "{text}");

    stop.send(()).unwrap();
    bounded(worker).await.unwrap().unwrap();
}

#[tokio::test]
async fn refused_token_at_first_contact_is_fatal() {
    let m: Shared = Arc::default();
    m.lock().unwrap().refuse = true;
    let master = serve(master_router(m)).await;
    let data = tempfile::tempdir().unwrap();
    let slave = Slave::open(config(data.path(), &master)).unwrap();
    let (_url, _stop, worker) = start(&slave).await;
    let err = bounded(worker).await.unwrap().unwrap_err();
    assert!(matches!(err, SlaveError::TokenRefused { status: 403, .. }));
    assert!(err.to_string().contains("master refused the slave token"));
}

/// A private master refuses a slave that does not guard its packs with the read token: the
/// slave stops at once, with the master's reason; with the token its hashlist carries the
/// token's digest (never the token) and it is taken.
#[tokio::test]
async fn a_master_that_wants_the_read_token_stops_a_slave_without_it() {
    let m: Shared = Arc::default();
    m.lock().unwrap().read_digest = Some(hummel_proto::auth::read_token_digest(READ_TOKEN));
    let master = serve(master_router(m.clone())).await;
    let data = tempfile::tempdir().unwrap();
    let slave = Slave::open(config(data.path(), &master)).unwrap();
    let (_url, _stop, worker) = start(&slave).await;
    let err = bounded(worker).await.unwrap().unwrap_err();
    assert!(
        matches!(err, SlaveError::ReadTokenRefused { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("read_token_mismatch"), "{err}");

    let mut cfg = config(data.path(), &master);
    cfg.read_token = Some(READ_TOKEN.into());
    let slave = Slave::open(cfg).unwrap();
    let (_url, stop, worker) = start(&slave).await;
    wait_for("the hashlist", || !m.lock().unwrap().hashlists.is_empty()).await;
    let sent = serde_json::to_string(&m.lock().unwrap().hashlists[0]).unwrap();
    assert!(!sent.contains(READ_TOKEN), "{sent}");
    let _ = stop.send(());
    bounded(worker).await.unwrap().unwrap();
}

#[tokio::test]
async fn serves_while_the_master_is_down_and_connects_when_it_comes_up() {
    // Reserve a port for the master, then free it until the master starts.
    let reserved = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let master = format!("http://{addr}");

    let data = tempfile::tempdir().unwrap();
    let pack = bytes(3, 1000);
    let hash = Hash::of(&pack);
    BlobStore::open(&data.path().join("store"))
        .unwrap()
        .put(&hash, &pack)
        .unwrap();
    let slave = Slave::open(config(data.path(), &master)).unwrap();
    let (url, stop, worker) = start(&slave).await;

    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = http()
        .get(format!("{url}/blob/{hash}"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), pack.as_slice());
    assert!(!slave.metrics().master_reachable());

    let m: Shared = Arc::default();
    let listener = TcpListener::bind(addr).await.unwrap();
    serve_on(listener, master_router(m.clone())).await;
    wait_for("the first hashlist", || {
        !m.lock().unwrap().hashlists.is_empty()
    })
    .await;
    assert_eq!(m.lock().unwrap().hashlists[0].packs, vec![hash]);
    wait_for("master reachable", || slave.metrics().master_reachable()).await;

    stop.send(()).unwrap();
    bounded(worker).await.unwrap().unwrap();
}

#[tokio::test]
async fn scrub_quarantines_reports_and_reannounces() {
    let data = tempfile::tempdir().unwrap();
    let (a, b) = (bytes(4, 2000), bytes(5, 2000));
    let (ha, hb) = (Hash::of(&a), Hash::of(&b));
    {
        let store = BlobStore::open(&data.path().join("store")).unwrap();
        store.put(&ha, &a).unwrap();
        store.put(&hb, &b).unwrap();
        std::fs::write(store.path(&hb), bytes(6, 2000)).unwrap();
    }
    let m: Shared = Arc::default();
    let master = serve(master_router(m.clone())).await;
    let mut cfg = config(data.path(), &master);
    cfg.scrub_interval = Some(Duration::from_millis(100));
    let slave = Slave::open(cfg).unwrap();
    let (_url, stop, worker) = start(&slave).await;

    wait_for("a heartbeat reporting the corrupt pack", || {
        m.lock()
            .unwrap()
            .heartbeats
            .iter()
            .any(|h| h.corrupt == vec![hb])
    })
    .await;
    {
        let m = m.lock().unwrap();
        assert_eq!(
            sorted(m.hashlists[0].packs.clone()),
            sorted(vec![ha, hb]),
            "the listing on open is trusted"
        );
        assert_eq!(m.hashlists.last().unwrap().packs, vec![ha]);
        // Reported once, then cleared.
        let reports = m
            .heartbeats
            .iter()
            .filter(|h| !h.corrupt.is_empty())
            .count();
        assert_eq!(reports, 1);
    }
    assert_eq!(slave.metrics().corrupt_packs.load(Ordering::Relaxed), 1);
    assert!(!slave.store().contains(&hb));

    stop.send(()).unwrap();
    bounded(worker).await.unwrap().unwrap();
}

#[tokio::test]
async fn blob_auth_health_and_metrics() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(data.path(), "http://127.0.0.1:9");
    cfg.read_token = Some(READ_TOKEN.into());
    cfg.quota = Some(1 << 30);
    let slave = Slave::open(cfg).unwrap();
    let pack = bytes(7, 4096);
    let hash = Hash::of(&pack);
    slave.store().put(&hash, &pack).unwrap();
    let url = serve(slave.router()).await;
    let http = http();
    let blob = format!("{url}/blob/{hash}");

    let r = http.get(&blob).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: ApiErrorBody = r.json().await.unwrap();
    assert_eq!(body.code, "unauthorized");
    let r = http
        .get(&blob)
        .header(TOKEN_HEADER, "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<ApiErrorBody>().await.unwrap().code, "forbidden");
    for token in [READ_TOKEN, SLAVE_TOKEN] {
        let r = http
            .get(&blob)
            .header(TOKEN_HEADER, token)
            .header("Range", "bytes=10-19")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(r.bytes().await.unwrap().as_ref(), &pack[10..20]);
    }
    let r = http
        .head(&blob)
        .header(TOKEN_HEADER, READ_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "4096");

    // Health is public; metrics want the read token, as the packs do.
    let health: hummel_proto::api::Health = http
        .get(format!("{url}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health.status, "ok");
    assert_eq!(health.role, "slave");
    assert_eq!(health.api_version, hummel_proto::API_VERSION);
    let r = http.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{url}/metrics"))
        .header(TOKEN_HEADER, SLAVE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .get(format!("{url}/metrics"))
        .header("authorization", format!("Bearer {READ_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    for needle in [
        "hummel_slave_packs 1\n",
        "hummel_slave_bytes_used 4096\n",
        "hummel_slave_quota_bytes 1073741824\n",
        "hummel_slave_blob_requests_total 3\n",
        "hummel_slave_blob_bytes_served_total 4116\n",
        "hummel_slave_corrupt_packs_total 0\n",
        "hummel_slave_replication_failures_total 0\n",
        "hummel_slave_master_reachable 0\n",
        "# TYPE hummel_slave_last_heartbeat_age_seconds gauge\n",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let r = http.get(format!("{url}/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn bodies_larger_than_assigned_are_refused() {
    let pack = bytes(8, 10_000);
    let hash = Hash::of(&pack);
    let src_dir = tempfile::tempdir().unwrap();
    let src = Arc::new(BlobStore::open(src_dir.path()).unwrap());
    src.put(&hash, &pack).unwrap();
    let src_url = serve(hummel_store::http::router(src)).await;

    let m: Shared = Arc::default();
    m.lock().unwrap().assign = vec![Assignment {
        pack: hash,
        size: pack.len() as u64 - 1,
        sources: vec![src_url, "http://127.0.0.1:9".into()],
    }];
    let master = serve(master_router(m.clone())).await;
    let data = tempfile::tempdir().unwrap();
    let slave = Slave::open(config(data.path(), &master)).unwrap();
    let (_url, stop, worker) = start(&slave).await;

    wait_for("a failed replication", || {
        slave.metrics().replication_failures.load(Ordering::Relaxed) >= 1
    })
    .await;
    assert_eq!(slave.metrics().source_errors.load(Ordering::Relaxed), 2);
    assert!(!slave.store().contains(&hash));
    assert_eq!(
        std::fs::read_dir(data.path().join("store/tmp"))
            .unwrap()
            .count(),
        0
    );
    // A failure is not a change: no hashlist beyond the first.
    assert_eq!(m.lock().unwrap().hashlists.len(), 1);

    stop.send(()).unwrap();
    bounded(worker).await.unwrap().unwrap();
}

#[tokio::test]
async fn reports_changes_in_heartbeats_and_the_complete_hashlist_when_asked() {
    let (p1, p2) = (bytes(11, 20_000), bytes(12, 30_000));
    let (h1, h2) = (Hash::of(&p1), Hash::of(&p2));
    let src_dir = tempfile::tempdir().unwrap();
    let src = Arc::new(BlobStore::open(src_dir.path()).unwrap());
    src.put(&h1, &p1).unwrap();
    src.put(&h2, &p2).unwrap();
    let src_url = serve(hummel_store::http::router(src)).await;
    let assignment = |pack, size: usize| Assignment {
        pack,
        size: size as u64,
        sources: vec![src_url.clone()],
    };

    let m: Shared = Arc::default();
    {
        let mut m = m.lock().unwrap();
        m.versions = true;
        m.assign = vec![assignment(h1, p1.len())];
    }
    let master = serve(master_router(m.clone())).await;
    let data = tempfile::tempdir().unwrap();
    let slave = Slave::open(config(data.path(), &master)).unwrap();
    let (url, stop, worker) = start(&slave).await;
    let counter = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);

    // The fetched pack travels in a heartbeat, not in a second hashlist.
    wait_for("the master to hold p1", || {
        m.lock().unwrap().held.contains(&h1)
    })
    .await;
    {
        let m = m.lock().unwrap();
        assert_eq!(m.hashlists.len(), 1);
        assert!(m.hashlists[0].packs.is_empty());
        let hb = m
            .heartbeats
            .iter()
            .find(|h| h.hashlist.as_ref().is_some_and(|c| c.added == vec![h1]))
            .unwrap();
        assert_eq!(hb.packs, 1);
        let c = hb.hashlist.as_ref().unwrap();
        assert_eq!((c.epoch, c.base, c.seq), (1, 0, 1));
    }
    wait_for("the answer counted", || {
        counter(&slave.metrics().hashlist_changes) == 1
    })
    .await;

    // The answer to the changes carrying p2 is lost: the next attempt repeats them from the
    // same base, and the master applies it over the first.
    {
        let mut m = m.lock().unwrap();
        m.lose_next_answer = true;
        m.assign = vec![assignment(h2, p2.len())];
    }
    wait_for("a repeated attempt accepted", || {
        let m = m.lock().unwrap();
        let attempts = m.changes_adding(h2);
        attempts.len() >= 2 && m.version.is_some_and(|v| v.seq == attempts[1].seq)
    })
    .await;
    {
        let m = m.lock().unwrap();
        let attempts = m.changes_adding(h2);
        assert_eq!(attempts[0].base, attempts[1].base);
        assert!(attempts[1].seq > attempts[0].seq);
        assert_eq!(m.held, HashSet::from([h1, h2]));
        assert_eq!(m.hashlists.len(), 1);
    }

    // Changes the master does not apply bring the complete hashlist.
    m.lock().unwrap().refuse_next_changes = true;
    wait_for("a second complete hashlist", || {
        m.lock().unwrap().hashlists.len() == 2
    })
    .await;
    {
        let m = m.lock().unwrap();
        assert_eq!(sorted(m.hashlists[1].packs.clone()), sorted(vec![h1, h2]));
    }
    assert_eq!(counter(&slave.metrics().hashlist_refusals), 1);
    wait_for("the answer counted", || {
        counter(&slave.metrics().announces) == 2
    })
    .await;

    // A dropped pack leaves in a heartbeat too.
    {
        let mut m = m.lock().unwrap();
        m.assign.clear();
        m.drop = vec![h1];
    }
    wait_for("the master to forget p1", || {
        !m.lock().unwrap().held.contains(&h1)
    })
    .await;
    assert!(!slave.store().contains(&h1));
    assert_eq!(m.lock().unwrap().hashlists.len(), 2);

    // Counted: p1, p2 (the second attempt), the drop of p1.
    wait_for("the answer counted", || {
        counter(&slave.metrics().hashlist_changes) == 3
    })
    .await;
    let text = http()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "hummel_slave_announces_total 2\n",
        "hummel_slave_hashlist_changes_total 3\n",
        "hummel_slave_hashlist_refusals_total 1\n",
    ] {
        assert!(text.contains(line), "{line:?} missing in\n{text}");
    }

    stop.send(()).unwrap();
    bounded(worker).await.unwrap().unwrap();
}
