//! Tests of the master as a whole: builds over small temp trees, and the router through
//! `tower::ServiceExt::oneshot`.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, to_bytes};
use axum::http::{Request, StatusCode, header};
use hummel_core::codec::decode_chunk;
use hummel_core::index::{decode, encode};
use hummel_core::{EntryKind, Hash, Index, RelPath};
use hummel_proto::ApiErrorBody;
use hummel_proto::api::{
    BuildStarted, BuildState, BuildStatus, HashlistChanges, HashlistVersion, Health, Heartbeat,
    LocateRequest, LocateResponse, RevisionInfo, SlaveDirective, SlaveHashlist, StatusResponse,
};
use hummel_proto::identity::SlaveKey;
use tower::ServiceExt;

use crate::build::BuildOptions;
use crate::master::IndexLookupError;
use crate::{Master, MasterConfig, Tokens};

const WRITE: &str = "write-token";
const SLAVE: &str = "slave-token";
const READ: &str = "read-token";

fn config(repo: &Path, data: &Path) -> MasterConfig {
    MasterConfig {
        repo: repo.to_path_buf(),
        data: data.to_path_buf(),
        replication: 2,
        heartbeat_interval: Duration::from_secs(3),
        stale_after: Duration::from_secs(30),
        dead_after: Duration::from_secs(600),
        tokens: Tokens {
            write: WRITE.into(),
            slave: SLAVE.into(),
            read: None,
            metrics: None,
        },
        embedded_store: false,
        follow_symlinks: false,
        repack_level: 0,
        keep_revisions: crate::DEFAULT_KEEP_REVISIONS,
        gc_grace: crate::DEFAULT_GC_GRACE,
        fallback_limit: crate::DEFAULT_FALLBACK_LIMIT,
        client_retention: crate::DEFAULT_CLIENT_RETENTION,
        rate_limit: crate::DEFAULT_RATE_LIMIT,
        signature_expiry: crate::DEFAULT_SIGNATURE_EXPIRY,
        rotate_key: false,
        probe_interval: crate::DEFAULT_PROBE_INTERVAL,
        probe_tls: hummel_tls::ClientTls::system(),
        info: Default::default(),
    }
}

/// Small packs so that a few hundred KiB make several.
fn small_packs() -> BuildOptions {
    BuildOptions {
        pack_target: 64 << 10,
        ..BuildOptions::default()
    }
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
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

struct Fixture {
    _dir: tempfile::TempDir,
    repo: std::path::PathBuf,
    data: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let data = dir.path().join("data");
    fs::create_dir_all(repo.join("a/empty")).unwrap();
    fs::write(repo.join("a/x.bin"), pseudo_random(300_000, 1)).unwrap();
    fs::write(repo.join("a/zero"), b"").unwrap();
    fs::write(repo.join("b.txt"), b"hello hummel\n").unwrap();
    // Same content as a/x.bin: its chunks are stored once.
    fs::write(repo.join("copy.bin"), pseudo_random(300_000, 1)).unwrap();
    // Written "an hour ago", so that a rebuild may trust size and mtime.
    let past = std::time::SystemTime::now() - Duration::from_secs(3600);
    for f in ["a/x.bin", "a/zero", "b.txt", "copy.bin"] {
        fs::File::options()
            .write(true)
            .open(repo.join(f))
            .unwrap()
            .set_modified(past)
            .unwrap();
    }
    Fixture {
        _dir: dir,
        repo,
        data,
    }
}

fn wait(master: &Master, id: u64) -> BuildStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = master.build_status(id).expect("build is known");
        if s.state != BuildState::Running {
            return s;
        }
        assert!(Instant::now() < deadline, "build {id} did not finish");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn build(master: &Master) -> BuildStatus {
    let id = master.start_build().unwrap();
    wait(master, id)
}

fn current_index(master: &Master, path: Option<&str>) -> Index {
    let path = path.map(|p| RelPath::new(p).unwrap());
    let (_, bytes) = master.index_bytes(None, path.as_ref()).unwrap();
    decode(&bytes).unwrap().0
}

/// Reads every file of `index` back out of the master's packs and compares with the repo.
fn assert_packs_hold_the_tree(master: &Master, index: &Index, repo: &Path) {
    for (path, f) in index.files() {
        let mut content = Vec::new();
        for &ci in &f.chunks {
            let c = index.chunks[ci as usize];
            let pack = index.pack(c.pack).unwrap();
            let bytes = fs::read(master.store().path(&pack.hash)).unwrap();
            let stored = &bytes[c.offset as usize..(c.offset + u64::from(c.stored_len)) as usize];
            content.extend(decode_chunk(c.codec, stored, c.len, &c.hash).unwrap());
        }
        assert_eq!(content, fs::read(path.to_path(repo)).unwrap(), "{path}");
        assert_eq!(Hash::of(&content), f.hash);
    }
}

#[test]
fn build_publishes_reuses_and_survives_reopen() {
    let fx = fixture();
    // Modified just now: "racily clean" on the next build, so it is read again.
    fs::write(fx.repo.join("fresh.txt"), b"fresh").unwrap();
    let master = Master::open_with(config(&fx.repo, &fx.data), small_packs()).unwrap();
    assert!(matches!(
        master.index_bytes(None, None),
        Err(IndexLookupError::NoRevision)
    ));

    let first = build(&master);
    assert_eq!(first.state, BuildState::Succeeded, "{:?}", first.error);
    let r1 = first.revision.unwrap();
    assert_eq!(first.files_total, 5);
    assert_eq!(first.files_reused, 0);
    assert!(first.packs_written >= 2, "{first:?}");

    let index = current_index(&master, None);
    index.validate().unwrap();
    assert_eq!(decode(&encode(&index)).unwrap().0, index);
    let paths: Vec<&str> = index.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "a",
            "a/empty",
            "a/x.bin",
            "a/zero",
            "b.txt",
            "copy.bin",
            "fresh.txt"
        ]
    );
    assert!(matches!(
        index.get(&RelPath::new("a/empty").unwrap()).unwrap().kind,
        EntryKind::Dir(_)
    ));
    match &index.get(&RelPath::new("a/zero").unwrap()).unwrap().kind {
        EntryKind::File(f) => assert!(f.size == 0 && f.chunks.is_empty()),
        other => panic!("{other:?}"),
    }
    // Duplicate content shares chunks.
    let chunks_of = |p: &str| match &index.get(&RelPath::new(p).unwrap()).unwrap().kind {
        EntryKind::File(f) => f.chunks.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(chunks_of("a/x.bin"), chunks_of("copy.bin"));
    assert_packs_hold_the_tree(&master, &index, &fx.repo);
    let info = master.revision_info();
    assert_eq!(info.revision, Some(r1));
    assert_eq!(info.files, 5);
    assert_eq!(info.bytes, 600_018);

    // Nothing changed: only the racy file is read, no revision is published.
    let again = build(&master);
    assert_eq!(again.state, BuildState::Succeeded);
    assert_eq!(again.revision, Some(r1));
    assert_eq!(again.files_reused, 4);
    assert_eq!(again.packs_written, 0);

    // One file changes.
    fs::write(fx.repo.join("b.txt"), b"hello again, hummel\n").unwrap();
    let third = build(&master);
    assert_eq!(third.state, BuildState::Succeeded, "{:?}", third.error);
    let r2 = third.revision.unwrap();
    assert!(r2 > r1, "{r2} after {r1}");
    assert_eq!(third.files_reused, 3);
    assert_eq!(third.files_total, 5);
    let index2 = current_index(&master, None);
    assert_packs_hold_the_tree(&master, &index2, &fx.repo);

    // Subtrees, old revisions, unknown revisions.
    let sub = current_index(&master, Some("a"));
    assert_eq!(sub.root.as_ref().map(RelPath::as_str), Some("a"));
    let sub_paths: Vec<&str> = sub.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(sub_paths, ["empty", "x.bin", "zero"]);
    let (n, old) = master
        .index_bytes(Some(r1), Some(&RelPath::new("a").unwrap()))
        .unwrap();
    assert_eq!(n.number, r1);
    assert_eq!(decode(&old).unwrap().0.revision, r1);
    assert!(matches!(
        master.index_bytes(Some(9), None),
        Err(IndexLookupError::NoSuchRevision(9))
    ));
    assert!(matches!(
        master.index_bytes(None, Some(&RelPath::new("b.txt").unwrap())),
        Err(IndexLookupError::NoSuchPath(_))
    ));

    // Everything survives a restart.
    drop(master);
    let master = Master::open(config(&fx.repo, &fx.data)).unwrap();
    assert_eq!(master.revision_info().revision, Some(r2));
    assert_eq!(current_index(&master, None), index2);
    assert_eq!(master.latest_build().unwrap().id, third.id);
    assert_eq!(master.history(20).len(), 2);
}

#[cfg(unix)]
#[test]
fn invalid_name_fails_the_build_and_keeps_the_revision() {
    let fx = fixture();
    std::os::unix::fs::symlink("b.txt", fx.repo.join("link")).unwrap();
    fs::create_dir(fx.repo.join(".hummel")).unwrap();
    let master = Master::open_with(config(&fx.repo, &fx.data), small_packs()).unwrap();
    let ok = build(&master);
    assert_eq!(ok.state, BuildState::Succeeded, "{:?}", ok.error);
    assert!(ok.warnings.iter().any(|w| w.contains("symlink link")));
    assert!(ok.warnings.iter().any(|w| w.contains(".hummel")));

    fs::write(fx.repo.join("a/bad\\name"), b"x").unwrap();
    let failed = build(&master);
    assert_eq!(failed.state, BuildState::Failed);
    let error = failed.error.unwrap();
    assert!(error.contains("bad\\\\name"), "{error}");
    assert!(!error.contains('\n'));
    assert_eq!(master.revision_info().revision, ok.revision);
}

#[test]
fn data_folder_inside_the_repository_is_skipped() {
    let fx = fixture();
    let data = fx.repo.join("master-data");
    let master = Master::open(config(&fx.repo, &data)).unwrap();
    let s = build(&master);
    assert_eq!(s.state, BuildState::Succeeded, "{:?}", s.error);
    let index = current_index(&master, None);
    assert!(index.get(&RelPath::new("master-data").unwrap()).is_none());
    assert!(s.warnings.iter().any(|w| w.contains("master-data")));
}

// ---- HTTP ----

/// The key a test slave `id` signs with (the same for every test, so a restarted master knows
/// it).
fn slave_key(id: &str) -> SlaveKey {
    SlaveKey::from_secret(Hash::of(id.as_bytes()).0)
}

/// Nonces for the test slaves: one counter, always growing.
static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A request to the router. A POST to a slave route is signed as the slave its body names (or
/// `x` when it names none), with [`slave_key`]; once the master accepted it, every claim is
/// taken as probed and verified ([`Master::pass_probes`]), as the prober would find with
/// honest slaves: these tests are about other things (the probes' own are
/// [`call_unprobed`]'s and the integration tests').
async fn call(
    master: &Master,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let out = call_unprobed(master, method, uri, token, body).await;
    if uri.starts_with("/slave/") && out.0 == StatusCode::OK {
        master.pass_probes();
    }
    out
}

/// [`call`] without taking claims as verified.
async fn call_unprobed(
    master: &Master,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let id = body
        .as_deref()
        .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
        .and_then(|v| Some(v.get("slave_id")?.as_str()?.to_string()))
        .unwrap_or_else(|| "x".to_string());
    call_as(master, method, uri, token, body, &slave_key(&id)).await
}

/// [`call_unprobed`] signed with `key` (a slave route's body names its slave id).
async fn call_as(
    master: &Master,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<String>,
    key: &SlaveKey,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(hummel_proto::auth::TOKEN_HEADER, t);
    }
    if uri.starts_with("/slave/")
        && let Some(b) = &body
    {
        let id = serde_json::from_str::<serde_json::Value>(b)
            .ok()
            .and_then(|v| Some(v.get("slave_id")?.as_str()?.to_string()))
            .unwrap_or_else(|| "x".to_string());
        let nonce = NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for (name, value) in key.sign_request(method, uri, &id, nonce, b.as_bytes()) {
            req = req.header(name, value);
        }
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b)),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = master.router().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = to_bytes(resp.into_body(), 64 << 20).await.unwrap().to_vec();
    (status, headers, body)
}

fn json<T: serde::de::DeserializeOwned>(body: &[u8]) -> T {
    serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(body));
    })
}

fn error_code(body: &[u8]) -> String {
    json::<ApiErrorBody>(body).code
}

async fn http_build(master: &Master) -> BuildStatus {
    let (status, _, body) = call(master, "POST", "/build", Some(WRITE), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = json::<BuildStarted>(&body).build_id;
    let m = master.clone();
    tokio::task::spawn_blocking(move || wait(&m, id))
        .await
        .unwrap()
}

/// A well-formed client key.
fn key(n: u8) -> String {
    Hash::of(&[n]).to_hex()
}

fn hashlist(id: &str, packs: Vec<Hash>) -> String {
    serde_json::to_string(&SlaveHashlist {
        slave_id: id.into(),
        url: format!("http://{id}.example:7071"),
        quota: None,
        used: 0,
        packs,
        read_token_digest: None,
    })
    .unwrap()
}

#[tokio::test]
async fn tokens_are_checked() {
    let fx = fixture();
    let master = Master::open(config(&fx.repo, &fx.data)).unwrap();
    let (s, _, body) = call(&master, "POST", "/build", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "unauthorized");
    let (s, _, body) = call(&master, "POST", "/build", Some(SLAVE), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "forbidden");
    let hl = hashlist("s1", vec![]);
    let (s, _, _) = call(
        &master,
        "POST",
        "/slave/hashlist",
        Some(WRITE),
        Some(hl.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = call(&master, "POST", "/slave/hashlist", None, Some(hl.clone())).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, body) = call(&master, "POST", "/slave/hashlist", Some(SLAVE), Some(hl)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json::<SlaveDirective>(&body).slave_id, "s1");
    // Reads are public without a read token.
    let (s, _, body) = call(&master, "GET", "/api/v1/revision", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json::<RevisionInfo>(&body).revision, None);
    assert!(master.latest_build().is_none());

    // With a read token, reads need it (or the write token); blobs accept the slave token too.
    let mut cfg = config(&fx.repo, &fx.data);
    cfg.tokens.read = Some(READ.into());
    drop(master);
    let master = Master::open(cfg).unwrap();
    let (s, _, _) = call(&master, "GET", "/api/v1/revision", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = call(&master, "GET", "/api/v1/revision", Some(SLAVE), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for t in [READ, WRITE] {
        let (s, _, _) = call(&master, "GET", "/api/v1/revision", Some(t), None).await;
        assert_eq!(s, StatusCode::OK);
    }
    let blob = format!("/blob/{}", Hash::of(b"none"));
    let (s, _, _) = call(&master, "GET", &blob, None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = call(&master, "GET", &blob, Some(SLAVE), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, h, _) = call(&master, "GET", "/", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(h.contains_key(header::WWW_AUTHENTICATE));
}

#[tokio::test]
async fn api_flow_build_index_slaves_locate_status() {
    let fx = fixture();
    let mut cfg = config(&fx.repo, &fx.data);
    cfg.replication = 1;
    let master = Master::open_with(cfg, small_packs()).unwrap();
    master.set_public_url("http://master.example:7070/".into());

    let (s, _, body) = call(&master, "GET", "/health", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let health: Health = json(&body);
    assert_eq!(
        (health.status.as_str(), health.role.as_str()),
        ("ok", "master")
    );

    let (s, _, body) = call(&master, "GET", "/api/v1/index", None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "no_revision");
    let (s, _, _) = call(&master, "GET", "/api/v1/builds/latest", None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let built = http_build(&master).await;
    assert_eq!(built.state, BuildState::Succeeded, "{:?}", built.error);
    let (s, _, body) = call(&master, "GET", "/api/v1/builds/latest", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json::<BuildStatus>(&body), built);

    let (s, h, body) = call(&master, "GET", "/api/v1/index", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let r1 = built.revision.unwrap();
    assert_eq!(h["x-hummel-revision"], r1.to_string().as_str());
    assert_eq!(h[header::CONTENT_TYPE], "application/octet-stream");
    let index = decode(&body).unwrap().0;
    let (s, _, body) = call(
        &master,
        "GET",
        &format!("/api/v1/index?path=a&revision={r1}"),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(decode(&body).unwrap().0.root.unwrap().as_str(), "a");
    for (uri, status, code) in [
        (
            "/api/v1/index?path=../x",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/api/v1/index?path=nope",
            StatusCode::NOT_FOUND,
            "no_such_path",
        ),
        (
            "/api/v1/index?revision=7",
            StatusCode::NOT_FOUND,
            "no_such_revision",
        ),
        (
            "/api/v1/index?revision=x",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ] {
        let (s, _, body) = call(&master, "GET", uri, None, None).await;
        assert_eq!((s, error_code(&body).as_str()), (status, code), "{uri}");
    }

    let (s, _, body) = call(&master, "GET", "/build", None, None).await;
    assert_eq!(
        (s, error_code(&body).as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    let (s, _, body) = call(&master, "GET", "/nope", None, None).await;
    assert_eq!(
        (s, error_code(&body).as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );

    // Bad JSON is a 400 with the error body.
    let (s, _, body) = call(&master, "POST", "/api/v1/locate", None, Some("{".into())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "bad_request");

    // Unknown slave heartbeats are told to announce.
    let hb = |id: &str, corrupt: Vec<Hash>| {
        serde_json::to_string(&Heartbeat {
            slave_id: id.into(),
            used: 0,
            packs: 0,
            replicating: 0,
            corrupt,
            hashlist: None,
            bytes_served: None,
        })
        .unwrap()
    };
    let (s, _, body) = call(
        &master,
        "POST",
        "/slave/heartbeat",
        Some(SLAVE),
        Some(hb("ghost", vec![])),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "unknown_slave");

    // Two new slaves split the packs (replication 1), the master's URL last in the sources.
    let mut directives = Vec::new();
    for id in ["s1", "s2"] {
        let (s, _, body) = call(
            &master,
            "POST",
            "/slave/hashlist",
            Some(SLAVE),
            Some(hashlist(id, vec![])),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        directives.push(json::<SlaveDirective>(&body));
    }
    // s1 was alone when it first announced; ask again now that s2 is known.
    let (_, _, body) = call(
        &master,
        "POST",
        "/slave/hashlist",
        Some(SLAVE),
        Some(hashlist("s1", vec![])),
    )
    .await;
    directives[0] = json(&body);
    let all = directives[0].assign.len() + directives[1].assign.len();
    let (_, _, body) = call(&master, "GET", "/api/v1/status", None, None).await;
    let status: StatusResponse = json(&body);
    assert_eq!(status.replication.packs as usize, index.packs.len());
    assert_eq!(all, index.packs.len());
    assert_eq!(status.replication.unavailable, status.replication.packs);
    assert_eq!(
        status.replication.under_replicated,
        status.replication.packs
    );
    // Still replicating, the master serving the packs without a copy.
    let replicating = status
        .replicating
        .expect("a revision without copies is replicating");
    assert_eq!(replicating.packs, status.replication.packs);
    assert_eq!(replicating.without_copy, status.replication.packs);
    assert!(replicating.master_fallback);
    assert_eq!(
        (replicating.fallback_active, replicating.fallback_limit),
        (0, 4)
    );
    for a in directives.iter().flat_map(|d| &d.assign) {
        assert_eq!(a.sources.last().unwrap(), "http://master.example:7070");
    }

    // A slave with assignments fetched its share: locate lists it for those packs only.
    let (busy, idle) = if directives[0].assign.is_empty() {
        (1, 0)
    } else {
        (0, 1)
    };
    let (s1, s2) = (
        directives[busy].slave_id.clone(),
        directives[idle].slave_id.clone(),
    );
    let s1_packs: Vec<Hash> = directives[busy].assign.iter().map(|a| a.pack).collect();
    let (s, _, body) = call(
        &master,
        "POST",
        "/slave/hashlist",
        Some(SLAVE),
        Some(hashlist(&s1, s1_packs.clone())),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(json::<SlaveDirective>(&body).assign.is_empty());
    let numbers: Vec<u32> = index.packs.iter().map(|p| p.number).chain([9999]).collect();
    let req = serde_json::to_string(&LocateRequest {
        packs: numbers.clone(),
    })
    .unwrap();
    let (s, _, body) = call(&master, "POST", "/api/v1/locate", None, Some(req.clone())).await;
    assert_eq!(s, StatusCode::OK);
    let located: LocateResponse = json(&body);
    assert_eq!(located.holders.len(), numbers.len());
    // Packs no live slave holds yet list the master itself, the source of last resort.
    let master_only = |l: &LocateResponse| {
        l.holders[..l.holders.len() - 1]
            .iter()
            .all(|h| h.len() == 1 && l.slaves[h[0] as usize].id == hummel_proto::api::FALLBACK_ID)
    };
    for (p, holders) in index.packs.iter().zip(&located.holders) {
        assert_eq!(holders.len(), 1);
        let id = &located.slaves[holders[0] as usize].id;
        if s1_packs.contains(&p.hash) {
            assert_eq!(id, &s1);
        } else {
            assert_eq!(id, hummel_proto::api::FALLBACK_ID);
            assert_eq!(
                located.slaves[holders[0] as usize].url,
                "http://master.example:7070"
            );
            assert_eq!(located.fallback, Some(holders[0]));
        }
    }
    assert_eq!(located.target, Some(1), "replication 1");
    assert!(
        located.holders.last().unwrap().is_empty(),
        "an unknown pack has no source"
    );

    // A corrupt pack reported by heartbeat is no longer located there.
    let (s, _, _) = call(
        &master,
        "POST",
        "/slave/heartbeat",
        Some(SLAVE),
        Some(hb(&s1, s1_packs.clone())),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, _, body) = call(&master, "POST", "/api/v1/locate", None, Some(req.clone())).await;
    assert!(master_only(&json::<LocateResponse>(&body)));

    // Stale slaves are not located; dead slaves lose their assignments to live ones.
    call(
        &master,
        "POST",
        "/slave/hashlist",
        Some(SLAVE),
        Some(hashlist(&s1, s1_packs.clone())),
    )
    .await;
    master.age_slave(&s1, 31_000);
    let (_, _, body) = call(&master, "POST", "/api/v1/locate", None, Some(req)).await;
    assert!(master_only(&json::<LocateResponse>(&body)));
    master.age_slave(&s1, 600_000);
    let (_, _, body) = call(
        &master,
        "POST",
        "/slave/heartbeat",
        Some(SLAVE),
        Some(hb(&s2, vec![])),
    )
    .await;
    assert_eq!(
        json::<SlaveDirective>(&body).assign.len(),
        index.packs.len()
    );

    // The only non-dead slave holds everything: fully replicated as far as possible.
    let every: Vec<Hash> = index.packs.iter().map(|p| p.hash).collect();
    call(
        &master,
        "POST",
        "/slave/hashlist",
        Some(SLAVE),
        Some(hashlist(&s2, every)),
    )
    .await;
    let (_, _, body) = call(&master, "GET", "/api/v1/status", None, None).await;
    let status: StatusResponse = json(&body);
    assert_eq!(
        (
            status.replication.under_replicated,
            status.replication.unavailable
        ),
        (0, 0)
    );

    // Client reports are stored with an address.
    let report = serde_json::json!({
        "client_id": "c1", "client_key": key(1), "revision": 1, "path": "", "files": 4,
        "bytes": 10, "packs": [], "bad_slaves": ["s2"]
    });
    let (s, _, _) = call(
        &master,
        "POST",
        "/api/v1/client/report",
        None,
        Some(report.to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, _, body) = call(&master, "GET", "/api/v1/status", None, None).await;
    let status: StatusResponse = json(&body);
    assert_eq!(status.clients.len(), 1);
    assert_eq!(status.clients[0].addr, "unknown");
    assert_eq!(status.slaves.len(), 2);

    let (s, h, body) = call(&master, "GET", "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "text/plain; version=0.0.4");
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains(&format!("hummel_revision {r1}\n")), "{text}");
    assert!(text.contains("hummel_slaves{state=\"dead\"} 1\n"), "{text}");
    assert!(
        text.contains("hummel_bad_slave_reports_total 1\n"),
        "{text}"
    );

    // The master serves packs (to clients as their source of last resort).
    let pack = index.packs[0];
    let (s, _, body) = call(&master, "GET", &format!("/blob/{}", pack.hash), None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(Hash::of(&body), pack.hash);
}

/// The revision headers of an index answer: number, whole-revision hash, repository id.
fn identity(h: &axum::http::HeaderMap) -> (String, String, String) {
    let get = |name: &str| h[name].to_str().unwrap().to_string();
    (
        get("x-hummel-revision"),
        get(&hummel_proto::api::REVISION_HASH_HEADER.to_ascii_lowercase()),
        get(&hummel_proto::api::REPOSITORY_ID_HEADER.to_ascii_lowercase()),
    )
}

#[tokio::test]
async fn index_answers_name_the_whole_revision_and_the_repository() {
    let fx = fixture();
    let master = Master::open_with(config(&fx.repo, &fx.data), small_packs()).unwrap();
    let first = http_build(&master).await;
    let info1 = master.revision_info();
    let repository = info1.repository_id.clone().unwrap();
    assert_eq!(repository.len(), 32, "{repository}");
    fs::write(fx.repo.join("a/x.bin"), pseudo_random(300_000, 5)).unwrap();
    let second = http_build(&master).await;
    let info2 = master.revision_info();
    let (r1, r2) = (first.revision.unwrap(), second.revision.unwrap());
    let (h1, h2) = (
        info1.index_hash.unwrap().to_hex(),
        info2.index_hash.unwrap().to_hex(),
    );
    assert_ne!(h1, h2);

    for (uri, kind, revision, hash) in [
        ("/api/v1/index".to_string(), "full", r2, &h2),
        ("/api/v1/index?path=a".to_string(), "full", r2, &h2),
        (format!("/api/v1/index?since={r1}"), "delta", r2, &h2),
        (format!("/api/v1/index?path=a&since={r1}"), "delta", r2, &h2),
        (format!("/api/v1/index?revision={r1}"), "full", r1, &h1),
        (
            format!("/api/v1/index?revision={r1}&path=a"),
            "full",
            r1,
            &h1,
        ),
    ] {
        let (s, h, _) = call(&master, "GET", &uri, None, None).await;
        assert_eq!(s, StatusCode::OK, "{uri}");
        assert_eq!(h["x-hummel-index-kind"], kind, "{uri}");
        assert_eq!(
            identity(&h),
            (revision.to_string(), hash.clone(), repository.clone()),
            "{uri}"
        );
    }
    // The id is the database's: the same after a restart, another for another master.
    drop(master);
    let reopened = Master::open(config(&fx.repo, &fx.data)).unwrap();
    assert_eq!(
        reopened.revision_info().repository_id,
        Some(repository.clone())
    );
    let other = tempfile::tempdir().unwrap();
    let stranger = Master::open(config(&fx.repo, other.path())).unwrap();
    let theirs = stranger.revision_info().repository_id.unwrap();
    assert_ne!(theirs, repository);
}

#[tokio::test]
async fn serve_mode_embedded_store_holds_everything() {
    let fx = fixture();
    let mut cfg = config(&fx.repo, &fx.data);
    cfg.embedded_store = true;
    let master = Master::open_with(cfg, small_packs()).unwrap();
    master.set_public_url("http://127.0.0.1:9".into());
    let (_, _, body) = call(&master, "GET", "/health", None, None).await;
    assert_eq!(json::<Health>(&body).role, "serve");
    let built = http_build(&master).await;
    assert_eq!(built.state, BuildState::Succeeded, "{:?}", built.error);
    let index = current_index(&master, None);
    let req = serde_json::to_string(&LocateRequest {
        packs: index.packs.iter().map(|p| p.number).collect(),
    })
    .unwrap();
    let (_, _, body) = call(&master, "POST", "/api/v1/locate", None, Some(req)).await;
    let located: LocateResponse = json(&body);
    assert_eq!(located.slaves.len(), 1);
    assert_eq!(located.slaves[0].url, "http://127.0.0.1:9");
    assert!(located.holders.iter().all(|h| h == &[0]));
    let (_, _, body) = call(&master, "GET", "/api/v1/status", None, None).await;
    let status: StatusResponse = json(&body);
    assert_eq!(status.replication.under_replicated, 0);
    assert_eq!(status.replication.unavailable, 0);
}

#[tokio::test]
async fn dashboard_renders_and_its_form_checks_the_token() {
    let fx = fixture();
    fs::write(fx.repo.join("<script>.txt"), b"x").unwrap();
    let master = Master::open(config(&fx.repo, &fx.data)).unwrap();
    master.set_public_url("http://127.0.0.1:9".into());
    http_build(&master).await;
    let report = serde_json::json!({
        "client_id": "<b>evil</b>", "client_key": key(1), "revision": 1, "path": "",
        "files": 1, "bytes": 1, "packs": [], "bad_slaves": []
    });
    call(
        &master,
        "POST",
        "/api/v1/client/report",
        None,
        Some(report.to_string()),
    )
    .await;
    let (s, h, body) = call(&master, "GET", "/", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        h[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("Revision history"));
    assert!(html.contains("&lt;b&gt;evil&lt;/b&gt;"));
    assert!(!html.contains("<b>evil"));
    // No slave holds anything yet: the master serves the packs meanwhile.
    assert!(
        html.contains("on no mirror yet; the master serves those itself meanwhile (0 of 4"),
        "{html}"
    );

    let form = |token: &str| {
        Request::builder()
            .method("POST")
            .uri("/ui/build")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={token}")))
            .unwrap()
    };
    let resp = master.router().oneshot(form(SLAVE)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = master.router().oneshot(form("")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = master.router().oneshot(form(WRITE)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[header::LOCATION], "/");
}

/// The dashboard's session: the write token once buys a cookie; an action needs the session's
/// CSRF token and the page's own origin, and a refused one changes nothing.
#[tokio::test]
async fn dashboard_actions_need_the_session_its_csrf_token_and_the_origin() {
    let fx = fixture();
    let master = Master::open(config(&fx.repo, &fx.data)).unwrap();
    master.set_public_url("http://127.0.0.1:9".into());
    // Two revisions, to roll back from the second to the first.
    let first = http_build(&master).await.revision.unwrap();
    let first_files = master.revision_info().files;
    fs::write(fx.repo.join("second.txt"), b"second").unwrap();
    let second = http_build(&master).await.revision.unwrap();
    assert_ne!(first, second);
    let post = |path: &str, body: String, cookie: Option<&str>, origin: Option<&str>| {
        let mut r = Request::builder()
            .method("POST")
            .uri(path)
            .header(header::HOST, "127.0.0.1:9")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            r = r.header(header::COOKIE, c);
        }
        if let Some(o) = origin {
            r = r.header(header::ORIGIN, o);
        }
        r.body(Body::from(body)).unwrap()
    };
    let here = Some("http://127.0.0.1:9");
    // A wrong token, or a login from another origin: no session.
    let resp = master
        .router()
        .oneshot(post("/ui/login", "token=wrong".into(), None, here))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.headers().get(header::SET_COOKIE).is_none());
    let login = format!("token={WRITE}");
    let resp = master
        .router()
        .oneshot(post(
            "/ui/login",
            login.clone(),
            None,
            Some("http://evil.example"),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = master
        .router()
        .oneshot(post("/ui/login", login, None, here))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let set = resp.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();

    // The page, with the session, carries its CSRF token.
    let page = Request::builder()
        .uri("/")
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    let resp = master.router().oneshot(page).await.unwrap();
    let html =
        String::from_utf8(to_bytes(resp.into_body(), 1 << 22).await.unwrap().to_vec()).unwrap();
    let at = html.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = html[at..at + 64].to_string();
    assert!(html.contains("Log out"));

    // Without the token, with a wrong one, or from another origin: 403, no build.
    for (body, origin) in [
        (String::new(), here),
        ("csrf=00".to_string(), here),
        (format!("csrf={csrf}"), Some("http://evil.example")),
        (format!("csrf={csrf}"), None),
    ] {
        let resp = master
            .router()
            .oneshot(post("/ui/build", body.clone(), Some(&cookie), origin))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{body} {origin:?}");
    }
    assert_eq!(master.latest_build().unwrap().revision, Some(second));
    let resp = master
        .router()
        .oneshot(post("/ui/drain", "slave=s1".into(), Some(&cookie), here))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let rollback = format!("revision={first}");
    let resp = master
        .router()
        .oneshot(post("/ui/rollback", rollback.clone(), Some(&cookie), here))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(master.revision_info().revision, Some(second));

    // With it: a rollback publishes the first tree again, and a build starts.
    let resp = master
        .router()
        .oneshot(post(
            "/ui/rollback",
            format!("{rollback}&csrf={csrf}"),
            Some(&cookie),
            here,
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let now = master.revision_info();
    assert!(now.revision.unwrap() > second);
    assert_eq!(now.files, first_files, "{now:?}");

    let resp = master
        .router()
        .oneshot(post(
            "/ui/build",
            format!("csrf={csrf}"),
            Some(&cookie),
            here,
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(
        master
            .latest_build()
            .unwrap()
            .revision
            .is_none_or(|r| r > second)
    );

    // The live stream takes the session as read access.
    let events = Request::builder()
        .uri("/ui/events")
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    let resp = master.router().oneshot(events).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");

    // After logout the cookie is worth nothing.
    let resp = master
        .router()
        .oneshot(post(
            "/ui/logout",
            format!("csrf={csrf}"),
            Some(&cookie),
            here,
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let resp = master
        .router()
        .oneshot(post(
            "/ui/build",
            format!("csrf={csrf}"),
            Some(&cookie),
            here,
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

/// Empties a folder, keeping the folder itself.
fn empty_folder(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            fs::remove_dir_all(p).unwrap();
        } else {
            fs::remove_file(p).unwrap();
        }
    }
}

/// `POST /ui/build` with the write token, and the checkbox if `allow`; waits for the build.
async fn form_build(master: &Master, allow: bool) -> BuildStatus {
    let body = if allow {
        format!("token={WRITE}&allow_mass_delete=true")
    } else {
        format!("token={WRITE}")
    };
    let req = Request::builder()
        .method("POST")
        .uri("/ui/build")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    let resp = master.router().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let m = master.clone();
    tokio::task::spawn_blocking(move || {
        let id = m.latest_build().unwrap().id;
        wait(&m, id)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_mass_delete_needs_the_admins_confirmation() {
    let fx = fixture();
    let master = Master::open_with(config(&fx.repo, &fx.data), small_packs()).unwrap();
    let r1 = http_build(&master).await.revision.unwrap();
    assert!(!master.revision_info().mass_delete_confirmed);

    // The folder empties (an unmounted disk): refused, the revision stays.
    empty_folder(&fx.repo);
    let refused = http_build(&master).await;
    assert_eq!(refused.state, BuildState::Failed);
    let error = refused.error.unwrap();
    assert!(
        error.starts_with("refusing to publish: the repository folder")
            && error.contains("holds no files, so the build removes 4 of 4 files (100%)")
            && error.contains(&format!("of revision {r1}"))
            && error.contains("--allow-mass-delete"),
        "{error}"
    );
    assert_eq!(master.revision_info().revision, Some(r1));

    // Confirmed through the API: published, and the revision says so.
    let (s, _, body) = call(
        &master,
        "POST",
        "/build?allow_mass_delete=true",
        Some(WRITE),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let id = json::<BuildStarted>(&body).build_id;
    let m = master.clone();
    let confirmed = tokio::task::spawn_blocking(move || wait(&m, id))
        .await
        .unwrap();
    assert_eq!(
        confirmed.state,
        BuildState::Succeeded,
        "{:?}",
        confirmed.error
    );
    assert!(
        confirmed
            .warnings
            .iter()
            .any(|w| w.contains("mass-delete confirmation")),
        "{:?}",
        confirmed.warnings
    );
    let r2 = confirmed.revision.unwrap();
    assert!(r2 > r1);
    let (_, _, body) = call(&master, "GET", "/api/v1/revision", None, None).await;
    let info: RevisionInfo = json(&body);
    assert_eq!((info.revision, info.files), (Some(r2), 0));
    assert!(info.mass_delete_confirmed);
    let mass_delete = hummel_proto::api::MASS_DELETE_HEADER.to_ascii_lowercase();
    let (_, h, _) = call(&master, "GET", "/api/v1/index", None, None).await;
    assert_eq!(h[mass_delete.as_str()], "1");
    let (_, h, _) = call(
        &master,
        "GET",
        &format!("/api/v1/index?since={r1}"),
        None,
        None,
    )
    .await;
    assert_eq!(h["x-hummel-index-kind"], "delta");
    assert_eq!(h[mass_delete.as_str()], "1");
    let (_, h, _) = call(
        &master,
        "GET",
        &format!("/api/v1/index?revision={r1}"),
        None,
        None,
    )
    .await;
    assert!(h.get(mass_delete.as_str()).is_none());
    let (_, _, page) = call(&master, "GET", "/", None, None).await;
    assert!(
        String::from_utf8(page)
            .unwrap()
            .contains("confirmed by the admin")
    );

    // Files come back: an ordinary build, no confirmation recorded.
    fs::write(fx.repo.join("b.txt"), b"back\n").unwrap();
    let normal = http_build(&master).await;
    assert_eq!(normal.state, BuildState::Succeeded, "{:?}", normal.error);
    assert!(!master.revision_info().mass_delete_confirmed);
    let (_, h, _) = call(&master, "GET", "/api/v1/index", None, None).await;
    assert!(h.get(mass_delete.as_str()).is_none());

    // The dashboard's checkbox confirms the same way.
    empty_folder(&fx.repo);
    let refused = form_build(&master, false).await;
    assert_eq!(refused.state, BuildState::Failed, "{refused:?}");
    assert!(refused.error.unwrap().starts_with("refusing to publish"));
    let ticked = form_build(&master, true).await;
    assert_eq!(ticked.state, BuildState::Succeeded, "{:?}", ticked.error);
    assert!(master.revision_info().mass_delete_confirmed);
    // The confirmation is part of the revision's record.
    drop(master);
    let reopened = Master::open(config(&fx.repo, &fx.data)).unwrap();
    assert!(reopened.revision_info().mass_delete_confirmed);
}

#[tokio::test]
async fn a_missing_folder_or_an_empty_first_build_publishes_nothing_unless_confirmed() {
    let fx = fixture();
    empty_folder(&fx.repo);
    let master = Master::open_with(config(&fx.repo, &fx.data), small_packs()).unwrap();
    let first = http_build(&master).await;
    assert_eq!(first.state, BuildState::Failed);
    let error = first.error.unwrap();
    assert!(error.contains("nothing to publish"), "{error}");
    assert_eq!(master.revision_info().revision, None);

    fs::write(fx.repo.join("only.txt"), b"one file\n").unwrap();
    let r1 = http_build(&master).await.revision.unwrap();
    // The folder disappears.
    fs::remove_dir_all(&fx.repo).unwrap();
    let gone = http_build(&master).await;
    assert_eq!(gone.state, BuildState::Failed);
    let error = gone.error.unwrap();
    assert!(
        error.contains("is missing, so the build removes 1 of 1 files"),
        "{error}"
    );
    assert_eq!(master.revision_info().revision, Some(r1));
    // A folder that cannot be listed is never published, confirmed or not.
    fs::write(&fx.repo, b"a file, not a folder").unwrap();
    let id = master
        .start_build_with(&hummel_proto::api::BuildQuery {
            allow_mass_delete: true,
            ..Default::default()
        })
        .unwrap();
    let unreadable = wait(&master, id);
    assert_eq!(unreadable.state, BuildState::Failed);
    assert!(
        unreadable
            .error
            .unwrap()
            .contains("cannot list the repository folder"),
        "{:?}",
        master.latest_build()
    );
    assert_eq!(master.revision_info().revision, Some(r1));
    fs::remove_file(&fx.repo).unwrap();
    // Confirmed, the missing folder publishes an empty revision.
    let id = master
        .start_build_with(&hummel_proto::api::BuildQuery {
            allow_mass_delete: true,
            ..Default::default()
        })
        .unwrap();
    let confirmed = wait(&master, id);
    assert_eq!(
        confirmed.state,
        BuildState::Succeeded,
        "{:?}",
        confirmed.error
    );
    let info = master.revision_info();
    assert!(info.revision > Some(r1));
    assert_eq!(info.files, 0);
    assert!(info.mass_delete_confirmed);
}

/// The entry of file `path` in the current revision.
fn file_entry(master: &Master, path: &str) -> hummel_core::FileEntry {
    match current_index(master, None)
        .get(&RelPath::new(path).unwrap())
        .map(|e| &e.kind)
    {
        Some(EntryKind::File(f)) => f.clone(),
        other => panic!("{path}: {other:?}"),
    }
}

/// Appends `n` bytes to a file.
fn append(path: &Path, n: usize, seed: u64) {
    use std::io::Write;
    let mut f = fs::File::options().append(true).open(path).unwrap();
    f.write_all(&pseudo_random(n, seed)).unwrap();
}

#[test]
fn a_file_changed_while_read_is_read_again() {
    let fx = fixture();
    let big = fx.repo.join("big.bin");
    fs::write(&big, pseudo_random(1 << 20, 3)).unwrap();
    let target = fs::canonicalize(&big).unwrap();
    let mut reads = 0;
    crate::build::read_hook::on_read(
        target.clone(),
        Box::new(move || {
            reads += 1;
            // The first read is overtaken by a copy still being written.
            if reads == 1 {
                append(&target, 5000, 4);
            }
        }),
    );
    let master = Master::open_with(config(&fx.repo, &fx.data), small_packs()).unwrap();
    let s = build(&master);
    assert_eq!(s.state, BuildState::Succeeded, "{:?}", s.error);
    let content = fs::read(&big).unwrap();
    let entry = file_entry(&master, "big.bin");
    assert_eq!(entry.size, (1 << 20) + 5000);
    assert_eq!(entry.hash, Hash::of(&content));
    assert_packs_hold_the_tree(&master, &current_index(&master, None), &fx.repo);
}

#[test]
fn a_file_that_keeps_changing_fails_the_build_naming_it() {
    let fx = fixture();
    let master = Master::open_with(config(&fx.repo, &fx.data), small_packs()).unwrap();
    let r1 = build(&master).revision;
    let big = fx.repo.join("a/growing.bin");
    fs::write(&big, pseudo_random(300_000, 3)).unwrap();
    let target = fs::canonicalize(&big).unwrap();
    let mut seed = 10;
    crate::build::read_hook::on_read(
        target.clone(),
        Box::new(move || {
            seed += 1;
            append(&target, 1000, seed);
        }),
    );
    let s = build(&master);
    assert_eq!(s.state, BuildState::Failed);
    assert_eq!(
        s.error.as_deref(),
        Some(
            "a/growing.bin kept changing while it was read (3 attempts); finish copying it and \
             build again"
        )
    );
    assert_eq!(master.revision_info().revision, r1);
}

/// A shutdown during a build: the build stops, publishes nothing (the revision before stays),
/// is recorded as stopped, and no build or maintenance round starts afterwards.
#[test]
fn a_shutdown_stops_a_running_build_which_publishes_nothing() {
    let fx = fixture();
    let master = Master::open_with(config(&fx.repo, &fx.data), small_packs()).unwrap();
    let r1 = build(&master).revision;
    assert!(r1.is_some());
    fs::write(fx.repo.join("a/new.bin"), pseudo_random(200_000, 5)).unwrap();
    fs::write(fx.repo.join("b.txt"), b"changed\n").unwrap();
    let target = fs::canonicalize(fx.repo.join("a/new.bin")).unwrap();
    let stopping = master.clone();
    // The shutdown comes while the build is reading: after a file was read, before publishing.
    crate::build::read_hook::on_read(target, Box::new(move || stopping.shut_down()));
    let s = build(&master);
    assert_eq!(s.state, BuildState::Failed, "{s:?}");
    assert_eq!(
        s.error.as_deref(),
        Some("stopped: the master is shutting down; the current revision stays")
    );
    assert_eq!(master.revision_info().revision, r1, "nothing was published");
    let held = current_index(&master, None);
    assert!(held.files().all(|(p, _)| p.to_string() != "a/new.bin"));
    assert!(master.stopping());
    // A build asked for now stops at once; no maintenance round starts.
    let again = build(&master);
    assert_eq!(again.state, BuildState::Failed);
    assert_eq!(master.revision_info().revision, r1);
    master.start_maintenance();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !master.is_idle() {
        assert!(Instant::now() < deadline, "the master did not become idle");
        std::thread::sleep(Duration::from_millis(10));
    }
    master.flush().unwrap();
    let wal = fx.data.join("hummel.db-wal");
    assert_eq!(
        fs::metadata(&wal).map(|m| m.len()).unwrap_or(0),
        0,
        "the log was checkpointed"
    );
}

/// A file appended to for the whole build: the build either fails naming it or publishes a
/// version that existed, never a torn mixture.
#[test]
fn a_file_appended_to_during_the_build_is_never_published_torn() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let fx = fixture();
    let big = fx.repo.join("log.bin");
    fs::write(&big, pseudo_random(8 << 20, 7)).unwrap();
    let master = Master::open_with(config(&fx.repo, &fx.data), small_packs()).unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, big) = (stop.clone(), big.clone());
        std::thread::spawn(move || {
            // Until the build ends, or 64 MiB more.
            for seed in 0..(16 << 10) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                append(&big, 4096, seed);
                std::thread::yield_now();
            }
        })
    };
    let s = build(&master);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let content = fs::read(&big).unwrap();
    match s.state {
        BuildState::Failed => {
            let error = s.error.unwrap();
            assert!(error.starts_with("log.bin kept changing"), "{error}");
        }
        _ => {
            let entry = file_entry(&master, "log.bin");
            let size = usize::try_from(entry.size).unwrap();
            assert!(size >= 8 << 20 && size <= content.len());
            assert_eq!(entry.hash, Hash::of(&content[..size]), "a torn version");
        }
    }
}

#[cfg(unix)]
#[test]
fn symlinks_are_skipped_or_followed_without_loops() {
    use std::os::unix::fs::symlink;
    let fx = fixture();
    let elsewhere = fx.repo.parent().unwrap().join("elsewhere");
    fs::create_dir_all(elsewhere.join("mods/sub")).unwrap();
    fs::write(elsewhere.join("mods/sub/m.txt"), b"linked mod\n").unwrap();
    // A loop: a folder inside the linked tree that points back at it.
    symlink(elsewhere.join("mods"), elsewhere.join("mods/sub/again")).unwrap();
    symlink(elsewhere.join("mods"), fx.repo.join("linked")).unwrap();
    symlink("b.txt", fx.repo.join("b-link.txt")).unwrap();
    symlink("nowhere", fx.repo.join("dangling")).unwrap();

    let master = Master::open_with(config(&fx.repo, &fx.data), small_packs()).unwrap();
    let skipped = build(&master);
    assert_eq!(skipped.state, BuildState::Succeeded, "{:?}", skipped.error);
    assert!(
        skipped.warnings.contains(
            &"skipped symlink linked: clients will delete it from their copies; use \
              --follow-symlinks to publish its target"
                .to_string()
        ),
        "{:?}",
        skipped.warnings
    );
    let index = current_index(&master, None);
    for p in ["linked", "b-link.txt", "dangling"] {
        assert!(index.get(&RelPath::new(p).unwrap()).is_none(), "{p}");
    }
    drop(master);

    let mut cfg = config(&fx.repo, &fx.data);
    cfg.follow_symlinks = true;
    let master = Master::open_with(cfg, small_packs()).unwrap();
    let followed = build(&master);
    assert_eq!(
        followed.state,
        BuildState::Succeeded,
        "{:?}",
        followed.error
    );
    let index = current_index(&master, None);
    assert!(matches!(
        index
            .get(&RelPath::new("linked/sub").unwrap())
            .unwrap()
            .kind,
        EntryKind::Dir(_)
    ));
    assert_eq!(
        file_entry(&master, "linked/sub/m.txt").hash,
        Hash::of(b"linked mod\n")
    );
    assert_eq!(
        file_entry(&master, "b-link.txt").hash,
        file_entry(&master, "b.txt").hash
    );
    assert!(
        index
            .get(&RelPath::new("linked/sub/again").unwrap())
            .is_none()
    );
    assert!(index.get(&RelPath::new("dangling").unwrap()).is_none());
    let warned = |needle: &str| followed.warnings.iter().any(|w| w.contains(needle));
    assert!(
        warned("skipped linked/sub/again: it leads back"),
        "{:?}",
        followed.warnings
    );
    assert!(warned(
        "skipped symlink dangling: its target cannot be read"
    ));
    assert_packs_hold_the_tree(&master, &index, &fx.repo);
}

#[test]
fn a_tree_deeper_than_the_bound_fails_the_build() {
    let fx = fixture();
    let deep: std::path::PathBuf = std::iter::repeat_n("d", crate::build::MAX_DEPTH + 1).collect();
    fs::create_dir_all(fx.repo.join(&deep)).unwrap();
    let master = Master::open_with(config(&fx.repo, &fx.data), small_packs()).unwrap();
    let s = build(&master);
    assert_eq!(s.state, BuildState::Failed);
    let error = s.error.unwrap();
    assert!(error.contains("lies more than 128 folders deep"), "{error}");
}

/// Regression: a build seen finished must free the slot at once, or `hummel build --wait` run
/// twice in a row would get the old build back instead of a new one.
#[test]
fn a_finished_build_frees_the_slot_at_once() {
    let fx = fixture();
    let master = Master::open_with(config(&fx.repo, &fx.data), small_packs()).unwrap();
    for _ in 0..20 {
        let first = master.start_build().unwrap();
        // Spin, as a tight poller would: the first moment the build looks finished counts.
        while master.build_status(first).unwrap().state == BuildState::Running {
            std::hint::spin_loop();
        }
        let next = master.start_build().unwrap();
        assert_ne!(next, first, "start_build returned the finished build");
        wait(&master, next);
    }
}

// ---- Incremental hashlists ----

async fn announce(master: &Master, id: &str, packs: Vec<Hash>) -> HashlistVersion {
    let (s, _, body) = call(
        master,
        "POST",
        "/slave/hashlist",
        Some(SLAVE),
        Some(hashlist(id, packs)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    json::<SlaveDirective>(&body)
        .hashlist
        .expect("a complete hashlist gets a version")
}

/// Changes from `base` proposing `seq`.
fn changes(base: HashlistVersion, seq: u64, added: &[Hash], removed: &[Hash]) -> HashlistChanges {
    HashlistChanges {
        epoch: base.epoch,
        base: base.seq,
        seq,
        added: added.to_vec(),
        removed: removed.to_vec(),
    }
}

async fn heartbeat_status(
    master: &Master,
    id: &str,
    packs: u64,
    changes: Option<HashlistChanges>,
) -> (StatusCode, Vec<u8>) {
    let body = serde_json::to_string(&Heartbeat {
        slave_id: id.into(),
        used: 0,
        packs,
        replicating: 0,
        corrupt: vec![],
        hashlist: changes,
        bytes_served: None,
    })
    .unwrap();
    let (s, _, body) = call(master, "POST", "/slave/heartbeat", Some(SLAVE), Some(body)).await;
    (s, body)
}

/// The hashlist version the answer to a heartbeat names.
async fn heartbeat(
    master: &Master,
    id: &str,
    packs: u64,
    changes: Option<HashlistChanges>,
) -> Option<HashlistVersion> {
    let (s, body) = heartbeat_status(master, id, packs, changes).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    json::<SlaveDirective>(&body).hashlist
}

/// For each pack, the ids of the slaves a client is sent to.
async fn holders(master: &Master, packs: &[hummel_core::PackInfo]) -> Vec<Vec<String>> {
    let req = serde_json::to_string(&LocateRequest {
        packs: packs.iter().map(|p| p.number).collect(),
    })
    .unwrap();
    let (_, _, body) = call(master, "POST", "/api/v1/locate", None, Some(req)).await;
    let located: LocateResponse = json(&body);
    located
        .holders
        .iter()
        .map(|h| {
            let mut ids: Vec<String> = h
                .iter()
                .map(|&i| located.slaves[i as usize].id.clone())
                .collect();
            ids.sort();
            ids
        })
        .collect()
}

async fn metric(master: &Master, name: &str) -> u64 {
    let (_, _, body) = call(master, "GET", "/metrics", None, None).await;
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// A built master with at least three packs (one chunk each), and those packs.
async fn built(fx: &Fixture) -> (Master, Vec<hummel_core::PackInfo>) {
    let options = BuildOptions {
        pack_target: 1,
        ..BuildOptions::default()
    };
    let master = Master::open_with(config(&fx.repo, &fx.data), options).unwrap();
    let b = http_build(&master).await;
    assert_eq!(b.state, BuildState::Succeeded, "{:?}", b.error);
    let packs = current_index(&master, None).packs;
    assert!(packs.len() >= 3, "{packs:?}");
    (master, packs)
}

#[tokio::test]
async fn hashlist_changes_are_applied_and_removed_packs_stop_being_located() {
    let fx = fixture();
    let (master, p) = built(&fx).await;
    let none: Vec<String> = vec![];
    let s1 = vec!["s1".to_string()];

    let v0 = announce(&master, "s1", vec![p[0].hash]).await;
    assert_eq!(v0.seq, 0);
    // Two packs fetched, one dropped: one heartbeat, one transaction.
    let v1 = heartbeat(
        &master,
        "s1",
        2,
        Some(changes(v0, 1, &[p[1].hash, p[2].hash], &[p[0].hash])),
    )
    .await;
    assert_eq!(
        v1,
        Some(HashlistVersion {
            epoch: v0.epoch,
            seq: 1
        })
    );
    let located = holders(&master, &p[..3]).await;
    assert_eq!(located, [none.clone(), s1.clone(), s1.clone()]);
    // A heartbeat with nothing new keeps the version.
    assert_eq!(
        heartbeat(&master, "s1", 2, Some(changes(v1.unwrap(), 1, &[], &[]))).await,
        v1
    );
    // A heartbeat without hashlist changes (a slave from before them) changes nothing.
    assert_eq!(heartbeat(&master, "s1", 2, None).await, v1);
    let v2 = heartbeat(
        &master,
        "s1",
        1,
        Some(changes(v1.unwrap(), 2, &[], &[p[2].hash])),
    )
    .await;
    assert_eq!(v2.map(|v| v.seq), Some(2));
    let located = holders(&master, &p[..3]).await;
    assert_eq!(located, [none.clone(), s1.clone(), none.clone()]);
    assert_eq!(metric(&master, "hummel_hashlists_received_total").await, 1);
    assert_eq!(
        metric(&master, "hummel_hashlist_changes_applied_total").await,
        2
    );
    assert_eq!(
        metric(&master, "hummel_hashlist_changes_refused_total").await,
        0
    );

    // The replica set survives a restart; the version does not, so the slave's next heartbeat
    // asks for the complete hashlist.
    drop(master);
    let master = Master::open(config(&fx.repo, &fx.data)).unwrap();
    // Probe results live in memory: the claims are located once probed again.
    let located = holders(&master, &p[..3]).await;
    assert_eq!(located, [none.clone(), none.clone(), none.clone()]);
    master.pass_probes();
    let located = holders(&master, &p[..3]).await;
    assert_eq!(located, [none.clone(), s1.clone(), none.clone()]);
    assert_eq!(
        heartbeat(&master, "s1", 1, Some(changes(v2.unwrap(), 2, &[], &[]))).await,
        None
    );
    assert_eq!(
        metric(&master, "hummel_hashlist_changes_refused_total").await,
        1
    );
    let again = announce(&master, "s1", vec![p[1].hash]).await;
    assert_ne!(again.epoch, v0.epoch);
}

#[tokio::test]
async fn hashlist_changes_not_on_the_version_held_ask_for_the_complete_hashlist() {
    let fx = fixture();
    let (master, p) = built(&fx).await;
    let v0 = announce(&master, "s1", vec![p[0].hash]).await;

    // A base the master never acknowledged: refused, and the version is dropped, so even
    // changes on the right base are refused until the complete hashlist comes.
    let gap = HashlistVersion { seq: 5, ..v0 };
    assert_eq!(
        heartbeat(&master, "s1", 2, Some(changes(gap, 6, &[p[1].hash], &[]))).await,
        None
    );
    assert_eq!(
        heartbeat(&master, "s1", 2, Some(changes(v0, 1, &[p[1].hash], &[]))).await,
        None
    );
    assert!(holders(&master, &p[1..2]).await[0].is_empty());

    // A new complete hashlist is a new epoch; changes from the old one are refused.
    let v1 = announce(&master, "s1", vec![p[0].hash]).await;
    assert_ne!(v1.epoch, v0.epoch);
    assert_eq!((v1.seq, v1.epoch > v0.epoch), (0, true));
    assert_eq!(
        heartbeat(&master, "s1", 2, Some(changes(v0, 1, &[p[1].hash], &[]))).await,
        Some(v1),
        "a stale epoch is answered with the version held"
    );
    // The slave counts 3 packs where the master would count 2: refused, nothing applied.
    assert_eq!(
        heartbeat(&master, "s1", 3, Some(changes(v1, 1, &[p[1].hash], &[]))).await,
        None
    );
    assert!(holders(&master, &p[1..2]).await[0].is_empty());
    assert_eq!(
        metric(&master, "hummel_hashlist_changes_refused_total").await,
        4
    );
    assert_eq!(
        metric(&master, "hummel_hashlist_changes_applied_total").await,
        0
    );

    // Malformed changes are a 400 and change nothing; an unknown slave is told to announce.
    let v2 = announce(&master, "s1", vec![p[0].hash]).await;
    for bad in [
        changes(v2, 0, &[p[1].hash], &[]),
        changes(HashlistVersion { seq: 2, ..v2 }, 1, &[], &[]),
        changes(v2, 1, &[p[1].hash], &[p[1].hash]),
    ] {
        let (s, body) = heartbeat_status(&master, "s1", 1, Some(bad)).await;
        assert_eq!(
            (s, error_code(&body).as_str()),
            (StatusCode::BAD_REQUEST, "bad_request")
        );
    }
    let (s, body) = heartbeat_status(&master, "ghost", 0, Some(changes(v2, 1, &[], &[]))).await;
    assert_eq!(
        (s, error_code(&body).as_str()),
        (StatusCode::NOT_FOUND, "unknown_slave")
    );
    assert_eq!(
        heartbeat(&master, "s1", 2, Some(changes(v2, 1, &[p[1].hash], &[]))).await,
        Some(HashlistVersion { seq: 1, ..v2 })
    );
}

#[tokio::test]
async fn a_retried_or_repeated_hashlist_change_never_corrupts_the_replica_set() {
    let fx = fixture();
    let (master, p) = built(&fx).await;
    let s1 = vec!["s1".to_string()];
    let v0 = announce(&master, "s1", vec![]).await;

    // Applied, but say the answer was lost: the slave still holds v0.
    let first = changes(v0, 1, &[p[0].hash, p[1].hash], &[]);
    let v1 = heartbeat(&master, "s1", 2, Some(first.clone())).await;
    assert_eq!(v1.map(|v| v.seq), Some(1));
    // The same request delivered twice is applied again, to the same result.
    assert_eq!(heartbeat(&master, "s1", 2, Some(first.clone())).await, v1);
    // The slave's next attempt is again from v0, with every pack touched since by its state
    // now: p1 was dropped meanwhile, p2 fetched.
    let retry = changes(v0, 2, &[p[0].hash, p[2].hash], &[p[1].hash]);
    let v2 = heartbeat(&master, "s1", 2, Some(retry)).await;
    assert_eq!(v2.map(|v| v.seq), Some(2));
    let none: Vec<String> = vec![];
    let want = [s1.clone(), none.clone(), s1.clone()];
    assert_eq!(holders(&master, &p[..3]).await, want);
    // The first request arriving late is not applied (it would bring p1 back) and is answered
    // with the version held, which keeps counting.
    assert_eq!(heartbeat(&master, "s1", 3, Some(first)).await, v2);
    assert_eq!(holders(&master, &p[..3]).await, want);
    let v3 = heartbeat(
        &master,
        "s1",
        1,
        Some(changes(v2.unwrap(), 3, &[], &[p[0].hash])),
    )
    .await;
    assert_eq!(v3.map(|v| v.seq), Some(3));
    assert_eq!(
        holders(&master, &p[..3]).await,
        [none.clone(), none.clone(), s1.clone()]
    );
    assert_eq!(
        metric(&master, "hummel_hashlist_changes_applied_total").await,
        4
    );
    assert_eq!(
        metric(&master, "hummel_hashlist_changes_refused_total").await,
        1
    );
}

/// Hashes the master did not know are counted, and once a build publishes them the slave is
/// asked for its complete hashlist, which maps them to packs.
#[tokio::test]
async fn packs_published_after_a_slave_reported_them_ask_for_its_complete_hashlist() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    fs::create_dir_all(&repo).unwrap();
    fs::write(
        repo.join("only.txt"),
        b"one small file, one chunk, one pack\n",
    )
    .unwrap();
    // Another master's build of the same tree writes the same pack.
    let other = Master::open(config(&repo, &dir.path().join("other"))).unwrap();
    http_build(&other).await;
    let pack = current_index(&other, None).packs[0];
    drop(other);

    let master = Master::open(config(&repo, &dir.path().join("data"))).unwrap();
    let stranger = Hash::of(b"no pack of this master");
    let v0 = announce(&master, "s1", vec![pack.hash, stranger]).await;
    // Two held, though the master knows neither: the counts agree.
    let v1 = heartbeat(&master, "s1", 1, Some(changes(v0, 1, &[], &[stranger]))).await;
    assert_eq!(v1.map(|v| v.seq), Some(1));
    http_build(&master).await;
    assert_eq!(current_index(&master, None).packs[0].hash, pack.hash);
    assert_eq!(
        heartbeat(&master, "s1", 1, Some(changes(v1.unwrap(), 1, &[], &[]))).await,
        None
    );
    announce(&master, "s1", vec![pack.hash]).await;
    let number = current_index(&master, None).packs[0];
    assert_eq!(holders(&master, &[number]).await, [vec!["s1".to_string()]]);
}

/// A master that repacks at `level`, over the fixture plus ~400 KB of compressible text.
fn repacking_master(fx: &Fixture, level: i32) -> Master {
    let text: String = (0..12_000u32)
        .map(|i| {
            format!(
                "line {i}: value {} of {}\n",
                i.wrapping_mul(7919) % 10_007,
                i % 97
            )
        })
        .collect();
    fs::write(fx.repo.join("notes.txt"), text).unwrap();
    let mut cfg = config(&fx.repo, &fx.data);
    cfg.repack_level = level;
    Master::open_with(cfg, small_packs()).unwrap()
}

/// Waits until revision `n` is current and no repack pass runs or is queued.
fn wait_for_revision(master: &Master, n: u64) {
    wait_for_current(master, &format!("revision {n}"), |r| r == n);
}

/// Waits until a revision above `n` (the repack's) is current and no pass runs or is queued;
/// returns it.
fn wait_for_revision_after(master: &Master, n: u64) -> u64 {
    wait_for_current(master, &format!("a revision after {n}"), |r| r > n)
}

fn wait_for_current(master: &Master, what: &str, done: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(r) = master.revision_info().revision
            && done(r)
            && master.maintenance_idle()
        {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not appear: {:?}",
            master.revision_info()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn revision_index(master: &Master, n: u64) -> Index {
    let (_, bytes) = master.index_bytes(Some(n), None).unwrap();
    decode(&bytes).unwrap().0
}

fn stored_bytes(index: &Index) -> u64 {
    index.chunks.iter().map(|c| u64::from(c.stored_len)).sum()
}

#[tokio::test]
async fn repack_publishes_the_same_tree_from_smaller_packs_once() {
    let fx = fixture();
    let master = repacking_master(&fx, 19);
    let r1 = build(&master).revision.unwrap();
    let r2 = wait_for_revision_after(&master, r1);

    let built = revision_index(&master, r1);
    let repacked = current_index(&master, None);
    repacked.validate().unwrap();
    // The same tree: paths, kinds, sizes, modes, mtimes, hashes, chunk order.
    assert_eq!(repacked.entries, built.entries);
    assert_eq!(repacked.chunks.len(), built.chunks.len());
    for (old, new) in built.chunks.iter().zip(&repacked.chunks) {
        assert_eq!((old.hash, old.len), (new.hash, new.len));
    }
    // Every pack is recorded at the level: new ones, and old ones of incompressible chunks
    // that the level rewrote to the same bytes.
    {
        let table = crate::read(&master.inner.catalog.packs);
        for p in &repacked.packs {
            assert_eq!(table.levels.get(&p.number), Some(&19), "pack {}", p.number);
        }
    }
    assert!(
        repacked
            .packs
            .iter()
            .any(|p| built.pack(p.number).is_none())
    );
    // Every chunk decodes from the new packs to its id, and the files come out whole.
    assert_packs_hold_the_tree(&master, &repacked, &fx.repo);
    let (before, after) = (stored_bytes(&built), stored_bytes(&repacked));
    assert!(after < before, "repacked {after} bytes, built {before}");
    assert!(
        repacked.packs.iter().map(|p| p.size).sum::<u64>()
            < built.packs.iter().map(|p| p.size).sum::<u64>()
    );
    // The chunk table points at the new packs, for later builds.
    let table = crate::db::Db::open_reader(&fx.data.join("hummel.db"))
        .unwrap()
        .load_chunks()
        .unwrap();
    for c in &repacked.chunks {
        assert_eq!(table.get(&c.hash), Some(c));
    }
    assert_eq!(metric(&master, "hummel_repack_runs_total").await, 1);
    assert_eq!(
        metric(&master, "hummel_repack_bytes_saved_total").await,
        before - after
    );
    assert_eq!(metric(&master, "hummel_repack_running").await, 0);
    let status = master.status().repack.unwrap();
    assert_eq!((status.level, status.last_revision), (19, Some(r2)));
    let (code, _, page) = call(&master, "GET", "/", None, None).await;
    assert_eq!(code, StatusCode::OK);
    let page = String::from_utf8(page).unwrap();
    assert!(
        page.contains("Repack to zstd level 19: <b>idle</b>, 1 passes published"),
        "{page}"
    );

    // A second pass finds nothing below the level.
    assert_eq!(
        master.repack_once(19).unwrap(),
        crate::repack::RepackOutcome::NothingToDo
    );
    // An unchanged rebuild reuses the repacked locations and publishes nothing.
    let again = build(&master);
    assert_eq!((again.revision, again.packs_written), (Some(r2), 0));
    wait_for_revision(&master, r2);
    drop(master);
    // The levels are recorded: a reopened master has nothing to repack either.
    let reopened = repacking_master(&fx, 19);
    assert_eq!(reopened.revision_info().revision, Some(r2));
    assert_eq!(
        reopened.repack_once(19).unwrap(),
        crate::repack::RepackOutcome::NothingToDo
    );
    // A higher level repacks again.
    assert!(matches!(
        reopened.repack_once(20).unwrap(),
        crate::repack::RepackOutcome::Published { revision, .. } if revision > r2
    ));
}

#[tokio::test]
async fn a_build_started_during_a_repack_wins() {
    let fx = fixture();
    let master = repacking_master(&fx, 19);
    let started: std::sync::Arc<std::sync::Mutex<Option<u64>>> = Default::default();
    {
        let (m, repo, started) = (master.clone(), fx.repo.clone(), started.clone());
        *crate::lock(&master.inner.upkeep.repacker.before_chunk) = Some(Box::new(move || {
            let mut slot = crate::lock(&started);
            if slot.is_none() {
                fs::write(repo.join("b.txt"), b"changed during the repack\n").unwrap();
                *slot = Some(m.start_build().unwrap());
            }
        }));
    }
    let r1 = build(&master).revision.unwrap();
    // The repack of the first revision started a build at its first chunk, stopped, published
    // nothing; the build published the second, and the repack then ran again over it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let second = loop {
        if let Some(id) = *crate::lock(&started) {
            break id;
        }
        assert!(
            Instant::now() < deadline,
            "the repack did not start a build"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let b = wait(&master, second);
    assert_eq!(b.state, BuildState::Succeeded, "{:?}", b.error);
    let r2 = b.revision.unwrap();
    assert!(r2 > r1);
    let r3 = wait_for_revision_after(&master, r2);
    let by_build = revision_index(&master, r2);
    match &by_build.get(&RelPath::new("b.txt").unwrap()).unwrap().kind {
        EntryKind::File(f) => assert_eq!(f.hash, Hash::of(b"changed during the repack\n")),
        other => panic!("{other:?}"),
    }
    let repacked = current_index(&master, None);
    assert_eq!(repacked.revision, r3);
    assert_eq!(repacked.entries, by_build.entries);
    assert_packs_hold_the_tree(&master, &repacked, &fx.repo);
    assert_eq!(metric(&master, "hummel_repack_stopped_total").await, 1);
    assert_eq!(metric(&master, "hummel_repack_runs_total").await, 1);
    assert_eq!(master.history(10).len(), 3);
}

#[test]
fn the_repack_of_a_confirmed_mass_delete_keeps_the_confirmation() {
    let fx = fixture();
    let master = repacking_master(&fx, 19);
    let r1 = build(&master).revision.unwrap();
    let r2 = wait_for_revision_after(&master, r1);
    // Three of five files go and a new one comes, confirmed; the repack then republishes the
    // tree with the new file's chunks at its level.
    for f in ["a/x.bin", "copy.bin", "b.txt"] {
        fs::remove_file(fx.repo.join(f)).unwrap();
    }
    fs::write(fx.repo.join("new.bin"), pseudo_random(200_000, 8)).unwrap();
    let id = master
        .start_build_with(&hummel_proto::api::BuildQuery {
            allow_mass_delete: true,
            ..Default::default()
        })
        .unwrap();
    let s = wait(&master, id);
    assert_eq!(s.state, BuildState::Succeeded, "{:?}", s.error);
    let r3 = s.revision.unwrap();
    assert!(r3 > r2);
    let r4 = wait_for_revision_after(&master, r3);
    let info = master.revision_info();
    assert_eq!(info.revision, Some(r4));
    assert!(info.mass_delete_confirmed, "{info:?}");
}

/// A master that keeps one build and collects `grace` after, with small packs.
fn collecting_master(fx: &Fixture, grace: Duration) -> Master {
    let mut cfg = config(&fx.repo, &fx.data);
    cfg.keep_revisions = 1;
    cfg.gc_grace = grace;
    Master::open_with(cfg, small_packs()).unwrap()
}

/// Gives both copies of the large file new content and builds the next revision; returns the
/// packs of the revision before that the new one no longer lists.
fn rebuild_with_new_content(
    master: &Master,
    fx: &Fixture,
    seed: u64,
) -> Vec<hummel_core::PackInfo> {
    let before = current_index(master, None);
    fs::write(fx.repo.join("a/x.bin"), pseudo_random(300_000, seed)).unwrap();
    fs::write(fx.repo.join("copy.bin"), pseudo_random(300_000, seed + 1)).unwrap();
    let n = build(master).revision.unwrap();
    assert!(n > before.revision, "{n} after {}", before.revision);
    wait_for_revision(master, n);
    let after = current_index(master, None);
    let gone: Vec<_> = before
        .packs
        .iter()
        .filter(|p| after.pack(p.number).is_none())
        .copied()
        .collect();
    assert!(!gone.is_empty(), "revision {n} still lists every pack");
    gone
}

#[tokio::test]
async fn garbage_collection_deletes_what_no_kept_revision_references() {
    let fx = fixture();
    let master = collecting_master(&fx, Duration::ZERO);
    let r1 = build(&master).revision.unwrap();
    wait_for_revision(&master, r1);
    let first = current_index(&master, None);
    let first_hashes: Vec<Hash> = first.packs.iter().map(|p| p.hash).collect();
    announce(&master, "s1", first_hashes.clone()).await;
    // A store file that is no pack of the table, as a crash between sealing and publishing
    // leaves one.
    let orphan = pseudo_random(1000, 9);
    master.store().put(&Hash::of(&orphan), &orphan).unwrap();

    // The maintenance round after the build collects revision 1's packs.
    let gone = rebuild_with_new_content(&master, &fx, 7);
    let second = current_index(&master, None);
    for p in &gone {
        assert!(
            !master.store().contains(&p.hash),
            "pack {} stayed",
            p.number
        );
    }
    for p in &second.packs {
        assert!(master.store().contains(&p.hash), "pack {} went", p.number);
    }
    assert!(!master.store().contains(&Hash::of(&orphan)));
    assert_packs_hold_the_tree(&master, &second, &fx.repo);
    assert!(matches!(
        master.index_bytes(Some(r1), None),
        Err(IndexLookupError::NoSuchRevision(n)) if n == r1
    ));
    let status = master.status().gc.unwrap();
    assert_eq!(
        (status.revisions_expired, status.packs_collected),
        (1, gone.len() as u64 + 1)
    );
    assert_eq!(
        metric(&master, "hummel_gc_packs_collected_total").await,
        gone.len() as u64 + 1
    );
    // A collected pack is located nowhere, and the slave that holds it is told to drop it.
    assert!(holders(&master, &gone).await.iter().all(Vec::is_empty));
    let (s, _, body) = call(
        &master,
        "POST",
        "/slave/hashlist",
        Some(SLAVE),
        Some(hashlist("s1", first_hashes)),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let mut dropped = json::<SlaveDirective>(&body).drop;
    dropped.sort();
    let mut want: Vec<Hash> = gone.iter().map(|p| p.hash).collect();
    want.sort();
    assert_eq!(dropped, want);

    // The old content comes back: its chunks are stored again, never looked up in a collected
    // pack.
    fs::write(fx.repo.join("a/x.bin"), pseudo_random(300_000, 1)).unwrap();
    fs::write(fx.repo.join("copy.bin"), pseudo_random(300_000, 1)).unwrap();
    let r3 = build(&master).revision.unwrap();
    assert!(r3 > second.revision);
    wait_for_revision(&master, r3);
    assert_packs_hold_the_tree(&master, &current_index(&master, None), &fx.repo);
    // Numbers are never given twice, across a restart too.
    let highest = crate::read(&master.inner.catalog.packs).next_number;
    drop(master);
    let reopened = collecting_master(&fx, Duration::ZERO);
    assert_eq!(
        crate::read(&reopened.inner.catalog.packs).next_number,
        highest
    );
    assert_eq!(reopened.collect_garbage().unwrap(), Default::default());
}

/// Superseded packs stay for the grace period after their revision was superseded, and not a
/// moment longer for being located: anyone may call `locate`, so a locate must keep nothing.
#[tokio::test]
async fn packs_stay_for_the_grace_period_after_their_revision_and_a_locate_keeps_none() {
    let fx = fixture();
    let master = collecting_master(&fx, Duration::from_secs(60));
    let r1 = build(&master).revision.unwrap();
    wait_for_revision(&master, r1);
    let gone = rebuild_with_new_content(&master, &fx, 7);
    // Within the grace period nothing goes: a client may still download the first revision.
    assert_eq!(master.collect_garbage().unwrap(), Default::default());
    assert!(master.index_bytes(Some(r1), None).is_ok());
    for p in &gone {
        assert!(master.store().contains(&p.hash));
    }

    // A minute later revision 1 is no longer kept. Every one of its packs was just located,
    // anonymously, many times: all of them go anyway.
    master.pretend_time_passed(61);
    for _ in 0..3 {
        assert_eq!(holders(&master, &gone).await.len(), gone.len());
    }
    let c = master.collect_garbage().unwrap();
    assert_eq!((c.revisions, c.packs), (1, gone.len() as u64));
    for p in &gone {
        assert!(
            !master.store().contains(&p.hash),
            "pack {} stayed",
            p.number
        );
    }
    assert_packs_hold_the_tree(&master, &current_index(&master, None), &fx.repo);
}

#[test]
fn an_index_file_deleted_under_a_reader_is_no_such_revision_not_an_error() {
    let fx = fixture();
    let master = Master::open_with(config(&fx.repo, &fx.data), small_packs()).unwrap();
    let r1 = build(&master).revision.unwrap();
    let file = fx.data.join(format!("revisions/{r1}.idx"));
    let broken = || crate::MasterError::RevisionIndex {
        revision: r1,
        path: file.clone(),
        reason: "test".into(),
    };
    // The file is there: the failure is the master's.
    assert!(matches!(
        master.lookup_failed(r1, broken()),
        IndexLookupError::Internal(_)
    ));
    // The garbage collection deleted it after the history lookup: the revision is gone.
    fs::remove_file(&file).unwrap();
    assert!(matches!(
        master.lookup_failed(r1, broken()),
        IndexLookupError::NoSuchRevision(n) if n == r1
    ));
}

/// A blob request to the master, its response not read yet.
async fn get_blob(master: &Master, pack: &Hash, token: Option<&str>) -> axum::response::Response {
    let mut req = Request::builder().uri(hummel_proto::api::blob_path(pack));
    if let Some(t) = token {
        req = req.header(hummel_proto::auth::TOKEN_HEADER, t);
    }
    master
        .router()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_master_serves_a_bounded_number_of_fallback_downloads() {
    let fx = fixture();
    let mut cfg = config(&fx.repo, &fx.data);
    cfg.fallback_limit = 1;
    let master = Master::open(cfg).unwrap();
    assert_eq!(http_build(&master).await.state, BuildState::Succeeded);
    let pack = current_index(&master, None).packs[0];

    // One download in flight (its body not read yet) holds the only slot.
    let first = get_blob(&master, &pack.hash, None).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        first.headers()[header::CONTENT_LENGTH],
        pack.size.to_string().as_str()
    );
    let busy = get_blob(&master, &pack.hash, None).await;
    assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
    let body = to_bytes(busy.into_body(), 1 << 20).await.unwrap();
    assert_eq!(error_code(&body), "busy");
    // Replication is not bounded by it.
    let replica = get_blob(&master, &pack.hash, Some(SLAVE)).await;
    assert_eq!(replica.status(), StatusCode::OK);
    assert_eq!(master.fallback_active(), 1);
    assert_eq!(metric(&master, "hummel_fallback_busy_total").await, 1);

    // The body sent, the slot is free again.
    let bytes = to_bytes(first.into_body(), 64 << 20).await.unwrap();
    assert_eq!(Hash::of(&bytes), pack.hash);
    assert_eq!(master.fallback_active(), 0);
    let again = get_blob(&master, &pack.hash, None).await;
    assert_eq!(again.status(), StatusCode::OK);
    drop(again);
    assert_eq!(metric(&master, "hummel_fallback_served_total").await, 2);

    // No slave may take the fallback's id.
    let (s, _, body) = call(
        &master,
        "POST",
        "/slave/hashlist",
        Some(SLAVE),
        Some(hashlist(hummel_proto::api::FALLBACK_ID, vec![])),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&body)
    );
}

// ---- The public surface (issue 10) ----

async fn report(
    master: &Master,
    id: &str,
    key: Option<&str>,
    bad: &[&str],
) -> (StatusCode, Vec<u8>) {
    let mut body = serde_json::json!({
        "client_id": id, "revision": 1, "path": "", "files": 1, "bytes": 1,
        "packs": [], "bad_slaves": bad
    });
    if let Some(k) = key {
        body["client_key"] = k.into();
    }
    let (s, _, body) = call(
        master,
        "POST",
        "/api/v1/client/report",
        None,
        Some(body.to_string()),
    )
    .await;
    (s, body)
}

#[tokio::test]
async fn a_client_id_belongs_to_the_key_that_first_reported_it() {
    let fx = fixture();
    let master = Master::open(config(&fx.repo, &fx.data)).unwrap();
    let (k1, k2) = (key(1), key(2));
    assert_eq!(
        report(&master, "c1", Some(&k1), &[]).await.0,
        StatusCode::NO_CONTENT
    );
    // Another key claiming the id: refused, and nothing changes.
    let (s, body) = report(&master, "c1", Some(&k2), &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "client_key_mismatch");
    assert_eq!(
        metric(&master, "hummel_client_key_mismatches_total").await,
        1
    );
    assert_eq!(metric(&master, "hummel_client_reports_total").await, 1);
    // No key, or a malformed one: refused.
    for bad in [None, Some("short"), Some(&*k1.to_uppercase())] {
        let (s, body) = report(&master, "c1", bad, &[]).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad:?}");
        assert!(String::from_utf8_lossy(&body).contains("client's key"));
    }
    // The owner goes on reporting, across a restart too.
    assert_eq!(
        report(&master, "c1", Some(&k1), &[]).await.0,
        StatusCode::NO_CONTENT
    );
    drop(master);
    let master = Master::open(config(&fx.repo, &fx.data)).unwrap();
    assert_eq!(
        report(&master, "c1", Some(&k2), &[]).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        report(&master, "c1", Some(&k1), &[]).await.0,
        StatusCode::NO_CONTENT
    );
    // A row from before keys is claimed by the first keyed report.
    crate::lock(&master.inner.db)
        .record_client(&crate::tracker::ClientRecord {
            id: "old".into(),
            addr: "unknown".into(),
            revision: 1,
            path: String::new(),
            files: 0,
            bytes: 0,
            last_seen_ms: crate::now_ms(),
            key_hash: None,
        })
        .unwrap();
    drop(master);
    let master = Master::open(config(&fx.repo, &fx.data)).unwrap();
    assert_eq!(
        report(&master, "old", Some(&k2), &[]).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        report(&master, "old", Some(&k1), &[]).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn a_bad_slave_counts_once_per_client_and_only_if_it_is_a_slave() {
    let fx = fixture();
    let master = Master::open(config(&fx.repo, &fx.data)).unwrap();
    call(
        &master,
        "POST",
        "/slave/hashlist",
        Some(SLAVE),
        Some(hashlist("s1", vec![])),
    )
    .await;
    let k = key(1);
    for _ in 0..5 {
        let named = ["s1", "s1", "nobody", "master"];
        assert_eq!(
            report(&master, "c1", Some(&k), &named).await.0,
            StatusCode::NO_CONTENT
        );
    }
    // s1 and the master's fallback, once each; the unknown id not at all.
    assert_eq!(metric(&master, "hummel_bad_slave_reports_total").await, 2);
    assert_eq!(
        report(&master, "c2", Some(&key(2)), &["s1"]).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(metric(&master, "hummel_bad_slave_reports_total").await, 3);
    let many: Vec<String> = (0..=hummel_proto::api::MAX_BAD_SLAVES)
        .map(|i| format!("s{i}"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        report(&master, "c1", Some(&k), &many).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn clients_expire_after_the_retention() {
    let fx = fixture();
    let mut cfg = config(&fx.repo, &fx.data);
    cfg.client_retention = Duration::from_millis(50);
    let master = Master::open(cfg.clone()).unwrap();
    assert_eq!(master.client_expiry_period(), Duration::from_secs(1));
    assert_eq!(
        report(&master, "c1", Some(&key(1)), &[]).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(master.expire_clients().unwrap(), 0);
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(
        report(&master, "c2", Some(&key(2)), &[]).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(master.expire_clients().unwrap(), 1);
    let ids: Vec<String> = master.status().clients.into_iter().map(|c| c.id).collect();
    assert_eq!(ids, ["c2"]);
    assert_eq!(metric(&master, "hummel_clients_expired_total").await, 1);
    // Gone from the database too; an expired id may be registered afresh.
    drop(master);
    let master = Master::open(cfg).unwrap();
    assert_eq!(master.status().clients_total, Some(1));
    assert_eq!(
        report(&master, "c1", Some(&key(3)), &[]).await.0,
        StatusCode::NO_CONTENT
    );
}

#[test]
fn status_lists_the_most_recent_clients_and_counts_them_all() {
    let mut tracker = crate::tracker::Tracker::default();
    let n = crate::clients::STATUS_CLIENTS as u64 + 5;
    for i in 0..n {
        let id = format!("c{i:05}");
        tracker.clients.insert(
            id.clone(),
            crate::tracker::ClientRecord {
                id,
                addr: "unknown".into(),
                revision: 1,
                path: String::new(),
                files: 0,
                bytes: 0,
                last_seen_ms: 1000 + i,
                key_hash: None,
            },
        );
    }
    let (listed, total) = Master::recent_clients(&tracker, 10_000);
    assert_eq!(total, n);
    assert_eq!(listed.len(), crate::clients::STATUS_CLIENTS);
    assert_eq!(listed[0].id, format!("c{:05}", n - 1));
    assert!(
        listed
            .windows(2)
            .all(|w| w[0].last_seen_ms <= w[1].last_seen_ms)
    );
}

#[tokio::test]
async fn bodies_are_bounded_by_what_their_route_needs() {
    let fx = fixture();
    let master = Master::open_with(config(&fx.repo, &fx.data), small_packs()).unwrap();
    http_build(&master).await;
    let packs = crate::read(&master.inner.catalog.packs).by_number.len();
    let limit = hummel_proto::api::locate_body_limit(packs);
    assert!(limit < 64 << 10, "{limit} for {packs} packs");
    // Just over the limit: 413 with the limit named; declared, or streamed without a length.
    let over = format!("{{\"packs\":[{}1]}}", "1,".repeat(limit / 2));
    let (s, _, body) = call(&master, "POST", "/api/v1/locate", None, Some(over.clone())).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(String::from_utf8_lossy(&body).contains(&limit.to_string()));
    let chunks: Vec<Result<Bytes, std::io::Error>> = over
        .into_bytes()
        .chunks(4096)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/locate")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    let resp = master.router().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(metric(&master, "hummel_bodies_refused_total").await, 2);
    // Every pack of the table fits, with room to spare.
    let all: Vec<u32> = (0..packs as u32 * 4).map(|i| u32::MAX - i).collect();
    let req = serde_json::to_string(&LocateRequest { packs: all }).unwrap();
    let (s, _, _) = call(&master, "POST", "/api/v1/locate", None, Some(req)).await;
    assert_eq!(s, StatusCode::OK);
    // The dashboard's form is small; a slave's heartbeat is bounded even with the slave token.
    let form = Request::builder()
        .method("POST")
        .uri("/ui/build")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={}", "x".repeat(64 << 10))))
        .unwrap();
    let resp = master.router().oneshot(form).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let big = "x".repeat(hummel_proto::api::MAX_HEARTBEAT_BODY + 1);
    let (s, _, _) = call(
        &master,
        "POST",
        "/slave/heartbeat",
        Some(SLAVE),
        Some(big.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    // Without the token, the body is never looked at.
    let (s, _, _) = call(&master, "POST", "/slave/heartbeat", None, Some(big)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_private_master_refuses_slaves_without_its_read_token() {
    let fx = fixture();
    let mut cfg = config(&fx.repo, &fx.data);
    const READ: &str = "s3cret-reader";
    cfg.tokens.read = Some(READ.into());
    cfg.replication = 1;
    let master = Master::open_with(cfg.clone(), small_packs()).unwrap();
    http_build(&master).await;
    let index = current_index(&master, None);
    let every: Vec<Hash> = index.packs.iter().map(|p| p.hash).collect();
    let with_digest = |id: &str, digest: Option<String>| {
        let mut v: serde_json::Value = serde_json::from_str(&hashlist(id, every.clone())).unwrap();
        if let Some(d) = digest {
            v["read_token_digest"] = d.into();
        }
        v.to_string()
    };
    for (id, digest) in [
        ("open", None),
        (
            "other",
            Some(hummel_proto::auth::read_token_digest("other")),
        ),
    ] {
        let (s, _, body) = call(
            &master,
            "POST",
            "/slave/hashlist",
            Some(SLAVE),
            Some(with_digest(id, digest)),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{id}");
        let e: ApiErrorBody = json(&body);
        assert_eq!(e.code, "read_token_mismatch");
        assert!(e.message.contains("read token"), "{}", e.message);
        assert!(!e.message.contains(READ));
    }
    assert_eq!(master.status().slaves.len(), 0);
    let good = Some(hummel_proto::auth::read_token_digest(READ));
    let (s, _, _) = call(
        &master,
        "POST",
        "/slave/hashlist",
        Some(SLAVE),
        Some(with_digest("good", good)),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let located = {
        let req = serde_json::to_string(&LocateRequest {
            packs: vec![index.packs[0].number],
        })
        .unwrap();
        let (s, _, body) = call(&master, "POST", "/api/v1/locate", Some(READ), Some(req)).await;
        assert_eq!(s, StatusCode::OK);
        json::<LocateResponse>(&body)
    };
    assert_eq!(located.slaves.len(), 1);
    assert_eq!(located.slaves[0].id, "good");
    // A restarted master has not seen the slave's digest yet: no client is sent there until
    // it announces again (a heartbeat alone does not do).
    drop(master);
    let master = Master::open_with(cfg, small_packs()).unwrap();
    let hb = serde_json::json!({"slave_id": "good", "used": 0, "packs": every.len(), "replicating": 0, "corrupt": []});
    let (s, _, _) = call(
        &master,
        "POST",
        "/slave/heartbeat",
        Some(SLAVE),
        Some(hb.to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let req = serde_json::to_string(&LocateRequest {
        packs: vec![index.packs[0].number],
    })
    .unwrap();
    let (_, _, body) = call(&master, "POST", "/api/v1/locate", Some(READ), Some(req)).await;
    assert!(json::<LocateResponse>(&body).holders[0].is_empty());
    assert_eq!(
        metric_with(&master, "hummel_slaves_refused_total", Some(READ)).await,
        0
    );

    // A public master refuses a slave that has a read token.
    let fx2 = fixture();
    let public = Master::open(config(&fx2.repo, &fx2.data)).unwrap();
    let (s, _, body) = call(
        &public,
        "POST",
        "/slave/hashlist",
        Some(SLAVE),
        Some(with_digest(
            "s",
            Some(hummel_proto::auth::read_token_digest("x")),
        )),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(json::<ApiErrorBody>(&body).message.contains("public"));
    assert_eq!(metric(&public, "hummel_slaves_refused_total").await, 1);
}

async fn metric_with(master: &Master, name: &str, token: Option<&str>) -> u64 {
    let (s, _, body) = call(master, "GET", "/metrics", token, None).await;
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test]
async fn metrics_need_a_token_when_the_master_is_private_or_has_a_metrics_token() {
    let fx = fixture();
    let mut cfg = config(&fx.repo, &fx.data);
    cfg.tokens.metrics = Some("metrics-token".into());
    let master = Master::open(cfg.clone()).unwrap();
    let status = |t: Option<&'static str>| {
        let m = master.clone();
        async move { call(&m, "GET", "/metrics", t, None).await.0 }
    };
    assert_eq!(status(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(Some(SLAVE)).await, StatusCode::FORBIDDEN);
    assert_eq!(status(Some("metrics-token")).await, StatusCode::OK);
    assert_eq!(status(Some(WRITE)).await, StatusCode::OK);
    // Reads stay public: the metrics token guards only the metrics.
    let (s, _, _) = call(&master, "GET", "/api/v1/revision", None, None).await;
    assert_eq!(s, StatusCode::OK);
    drop(master);
    cfg.tokens.metrics = None;
    cfg.tokens.read = Some(READ.into());
    let master = Master::open(cfg).unwrap();
    assert_eq!(
        call(&master, "GET", "/metrics", None, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&master, "GET", "/metrics", Some(READ), None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&master, "GET", "/health", None, None).await.0,
        StatusCode::OK
    );
    // The dashboard says so.
    let (_, _, body) = call(&master, "GET", "/", Some(READ), None).await;
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("<h2>Access</h2>"), "{html}");
    assert!(
        html.contains("must guard their packs with the read token"),
        "{html}"
    );
    assert!(
        html.contains("need the read token (or the write token)"),
        "{html}"
    );
}

/// Names a Windows (or any case-insensitive) client cannot hold are published, each with a
/// build warning that says who cannot sync it; a clean repository gets none.
#[test]
fn names_some_clients_cannot_hold_are_published_with_a_warning() {
    let fx = fixture();
    let deep = "d".repeat(200);
    let long = format!("{deep}/{}", "e".repeat(70));
    for p in [
        "w/CON.txt".to_string(),
        "w/aux".into(),
        "w/trailing.".into(),
        "w/space ".into(),
        "w/what?.cfg".into(),
        "w/Readme.txt".into(),
        "w/README.txt".into(),
        format!("{long}/f.txt"),
    ] {
        let path = fx.repo.join(&p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, p.as_bytes()).unwrap();
    }
    let master = Master::open_with(config(&fx.repo, &fx.data), small_packs()).unwrap();
    let st = build(&master);
    assert_eq!(st.state, BuildState::Succeeded, "{:?}", st.error);
    let has = |needle: &str| {
        assert!(
            st.warnings.iter().any(|w| w.contains(needle)),
            "no warning with {needle:?} in {:#?}",
            st.warnings
        )
    };
    has("w/CON.txt: CON is a reserved device name on Windows; Windows clients refuse");
    has("w/aux: AUX is a reserved device name");
    has("w/trailing.: Windows drops a name's trailing dot");
    has("w/space : Windows drops a name's trailing space");
    has("w/what?.cfg: Windows forbids '?' in names");
    has("w/README.txt and w/Readme.txt differ only in case");
    has(&format!("{long}: longer than 260 characters"));
    assert_eq!(st.warnings.len(), 7, "{:#?}", st.warnings);
    let index = current_index(&master, None);
    assert!(index.get(&RelPath::new("w/CON.txt").unwrap()).is_some());
    drop(master);

    let clean = fixture();
    let master = Master::open_with(config(&clean.repo, &clean.data), small_packs()).unwrap();
    assert!(build(&master).warnings.is_empty());
}

// ---- Slave identities and probes ----

/// A POST of `body` to slave route `uri` with the slave token, signed by `key` as slave `id`
/// under `nonce`.
async fn signed(
    master: &Master,
    uri: &str,
    id: &str,
    body: &str,
    key: &SlaveKey,
    nonce: u64,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder()
        .method("POST")
        .uri(uri)
        .header(hummel_proto::auth::TOKEN_HEADER, SLAVE)
        .header(header::CONTENT_TYPE, "application/json");
    for (name, value) in key.sign_request("POST", uri, id, nonce, body.as_bytes()) {
        req = req.header(name, value);
    }
    let resp = master
        .router()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec();
    (status, headers, body)
}

fn next_nonce() -> u64 {
    NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test]
async fn a_slave_id_belongs_to_the_key_that_enrolled_it() {
    let fx = fixture();
    let cfg = config(&fx.repo, &fx.data);
    let master = Master::open_with(cfg.clone(), small_packs()).unwrap();
    http_build(&master).await;
    let index = current_index(&master, None);
    let every: Vec<Hash> = index.packs.iter().map(|p| p.hash).collect();
    announce(&master, "honest", every.clone()).await;
    let url_of = |m: &Master| {
        m.status()
            .slaves
            .iter()
            .find(|s| s.id == "honest")
            .map(|s| (s.url.clone(), s.packs, s.key.clone()))
    };
    let before = url_of(&master).unwrap();
    assert_eq!(before.2, Some(slave_key("honest").public().fingerprint()));

    // Another slave (it holds the slave token) speaks for "honest" with its own key.
    let evil = SlaveKey::from_secret([66; 32]);
    let mut takeover: SlaveHashlist = serde_json::from_str(&hashlist("honest", vec![])).unwrap();
    takeover.url = "http://evil.example:1".into();
    let takeover = serde_json::to_string(&takeover).unwrap();
    let (s, _, body) = signed(
        &master,
        "/slave/hashlist",
        "honest",
        &takeover,
        &evil,
        next_nonce(),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let e: ApiErrorBody = json(&body);
    assert_eq!(e.code, "slave_identity_mismatch");
    assert!(e.message.contains("remove-slave"), "{}", e.message);
    let hb = serde_json::to_string(&Heartbeat {
        slave_id: "honest".into(),
        used: 0,
        packs: 0,
        replicating: 0,
        corrupt: every.clone(),
        hashlist: None,
        bytes_served: None,
    })
    .unwrap();
    let (s, _, body) = signed(
        &master,
        "/slave/heartbeat",
        "honest",
        &hb,
        &evil,
        next_nonce(),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "slave_identity_mismatch");
    // Unsigned, or signed over another body: refused too.
    let (s, _, body) = call_as_unsigned(&master, "/slave/hashlist", &takeover).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "slave_signature_missing");
    let honest = slave_key("honest");
    let mut req = Request::builder()
        .method("POST")
        .uri("/slave/hashlist")
        .header(hummel_proto::auth::TOKEN_HEADER, SLAVE);
    for (name, value) in honest.sign_request(
        "POST",
        "/slave/hashlist",
        "honest",
        next_nonce(),
        hashlist("honest", every.clone()).as_bytes(),
    ) {
        req = req.header(name, value);
    }
    let resp = master
        .router()
        .oneshot(req.body(Body::from(takeover.clone())).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // Nothing of "honest" changed: URL, claims, liveness.
    assert_eq!(url_of(&master).unwrap(), before);

    // A recorded request is not accepted twice; the answer names the highest nonce.
    let hl = hashlist("honest", every.clone());
    let nonce = next_nonce();
    let (s, _, _) = signed(&master, "/slave/hashlist", "honest", &hl, &honest, nonce).await;
    assert_eq!(s, StatusCode::OK);
    let (s, headers, body) =
        signed(&master, "/slave/hashlist", "honest", &hl, &honest, nonce).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(error_code(&body), "slave_nonce_stale");
    assert_eq!(
        headers[hummel_proto::identity::SLAVE_NONCE_HEADER]
            .to_str()
            .unwrap(),
        nonce.to_string()
    );

    // The binding survives a restart.
    drop(master);
    let master = Master::open_with(cfg.clone(), small_packs()).unwrap();
    let (s, _, _) = signed(
        &master,
        "/slave/hashlist",
        "honest",
        &takeover,
        &evil,
        next_nonce(),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = signed(&master, "/slave/hashlist", "honest", &hl, &honest, nonce).await;
    assert_eq!(s, StatusCode::CONFLICT, "a replay after a restart");

    // Only the admin frees the id: then another key may enroll it.
    let (s, _, _) = call(
        &master,
        "DELETE",
        "/api/v1/slaves/honest",
        Some(SLAVE),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = call(
        &master,
        "DELETE",
        "/api/v1/slaves/honest",
        Some(WRITE),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(url_of(&master).is_none());
    let (s, _, _) = call(
        &master,
        "DELETE",
        "/api/v1/slaves/honest",
        Some(WRITE),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = signed(
        &master,
        "/slave/hashlist",
        "honest",
        &takeover,
        &evil,
        next_nonce(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(url_of(&master).unwrap().0, "http://evil.example:1");
    assert_eq!(
        metric(&master, "hummel_slave_identity_mismatches_total").await,
        1
    );
}

/// A slave request with the slave token and no identity headers.
async fn call_as_unsigned(
    master: &Master,
    uri: &str,
    body: &str,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let req = Request::builder()
        .method("POST")
        .uri(uri)
        .header(hummel_proto::auth::TOKEN_HEADER, SLAVE)
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = master.router().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec();
    (status, headers, body)
}

#[tokio::test]
async fn claims_are_located_only_once_probed_and_status_says_why() {
    let fx = fixture();
    let master = Master::open_with(config(&fx.repo, &fx.data), small_packs()).unwrap();
    http_build(&master).await;
    let index = current_index(&master, None);
    let every: Vec<Hash> = index.packs.iter().map(|p| p.hash).collect();
    let (s, _, _) = call_unprobed(
        &master,
        "POST",
        "/slave/hashlist",
        Some(SLAVE),
        Some(hashlist("claims", every)),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // A claim alone sends no client there.
    assert!(
        holders(&master, &index.packs)
            .await
            .iter()
            .all(Vec::is_empty)
    );
    let st = master.status();
    let why = st.slaves[0].withheld.clone().unwrap();
    assert!(why.starts_with("probing"), "{why}");
    assert_eq!(st.slaves[0].verified, Some(0));
    // Verified (as a probe that passed finds it): located.
    master.pass_probes();
    assert!(
        holders(&master, &index.packs)
            .await
            .iter()
            .all(|h| h == &["claims".to_string()])
    );
    let st = master.status();
    assert_eq!(st.slaves[0].withheld, None);
    assert_eq!(st.slaves[0].verified, Some(index.packs.len() as u64));
}

/// A heartbeat waiting for the database (another commit in flight: its mutex is held here)
/// holds nothing that a client's `locate` or the status page reads under: both answer
/// meanwhile. The heartbeat applies once the database is free, and its change shows.
#[tokio::test]
async fn locate_and_status_do_not_wait_for_a_slaves_commit() {
    let fx = fixture();
    let (master, packs) = built(&fx).await;
    let version = announce(&master, "s1", vec![packs[0].hash]).await;
    master.pass_probes();
    let hb = Heartbeat {
        slave_id: "s1".into(),
        used: 0,
        packs: 2,
        replicating: 0,
        corrupt: vec![],
        hashlist: Some(changes(version, 1, &[packs[1].hash], &[])),
        bytes_served: None,
    };
    let request = LocateRequest {
        packs: packs.iter().map(|p| p.number).collect(),
    };
    let in_flight = crate::lock(&master.inner.db);
    let m = master.clone();
    let beating = std::thread::spawn(move || m.record_heartbeat(&hb));
    // The heartbeat holds its slave's ordering stripe until its change is in memory.
    let waited = Instant::now();
    while !master.inner.fleet.order_taken("s1") {
        assert!(waited.elapsed() < Duration::from_secs(10), "no heartbeat");
        std::thread::yield_now();
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let m = master.clone();
    std::thread::spawn(move || {
        let located = m.locate(&request);
        let status = m.status();
        let _ = tx.send((located, status));
    });
    let answered = rx.recv_timeout(Duration::from_secs(10));
    drop(in_flight);
    let (located, status) = answered.expect("locate and status waited for the slave's commit");
    assert_eq!(
        located.holders[0].len(),
        1,
        "s1 serves the pack it announced"
    );
    assert_eq!(status.slaves.len(), 1);
    let directive = beating.join().unwrap().unwrap().expect("s1 is known");
    assert_eq!(
        directive.hashlist,
        Some(HashlistVersion {
            epoch: version.epoch,
            seq: 1
        })
    );
    assert_eq!(master.status().slaves[0].packs, 2);
}

/// A `GET /ui/events` stream, read event by event.
struct LiveStream {
    body: axum::body::BodyDataStream,
    text: String,
}

impl LiveStream {
    async fn open(master: &Master, cookie: Option<&str>) -> LiveStream {
        let mut req = Request::builder().uri("/ui/events");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        let resp = master
            .router()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        LiveStream {
            body: resp.into_body().into_data_stream(),
            text: String::new(),
        }
    }

    /// The data of the next `snapshot` event (10 s at most).
    async fn next(&mut self) -> String {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let event: String = self.text.drain(..end + 2).collect();
                if event.lines().any(|l| l == "event: snapshot") {
                    return event
                        .lines()
                        .filter_map(|l| l.strip_prefix("data: "))
                        .collect::<Vec<_>>()
                        .join("\n");
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .expect("a snapshot within 10 s")
                .expect("the stream goes on")
                .unwrap();
            self.text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

async fn report_client(master: &Master, id: &str, n: u8, revision: u64, pinned: Option<u64>) {
    let report = serde_json::json!({
        "client_id": id, "client_key": key(n), "revision": revision, "path": "",
        "files": 1, "bytes": 1, "packs": [], "bad_slaves": [], "pinned": pinned
    });
    let (s, _, body) = call(
        master,
        "POST",
        "/api/v1/client/report",
        None,
        Some(report.to_string()),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::NO_CONTENT,
        "{}",
        String::from_utf8_lossy(&body)
    );
}

/// One producer builds the live snapshot for every subscriber: a change is one build however
/// many watch, each subscriber gets it, and the producer stops once no one watches.
#[tokio::test]
async fn live_subscribers_share_one_snapshot_per_change() {
    let fx = fixture();
    let master = Master::open(config(&fx.repo, &fx.data)).unwrap();
    let revision = http_build(&master).await.revision.unwrap();
    let ui = &master.inner.ui;
    // Nobody watched: nothing was built.
    assert_eq!(ui.snapshots_built(), 0);
    assert!(!ui.producing());
    let mut streams = Vec::new();
    for _ in 0..8 {
        streams.push(LiveStream::open(&master, None).await);
    }
    for s in &mut streams {
        let snap = s.next().await;
        assert!(
            snap.starts_with(&format!("{{\"revision\":{revision},")),
            "{snap}"
        );
    }
    assert_eq!(
        ui.snapshots_built(),
        1,
        "one snapshot for eight subscribers"
    );

    // A client's report: one build, and every subscriber sees the client.
    report_client(&master, "watched-client", 1, revision, Some(revision)).await;
    for s in &mut streams {
        let snap = s.next().await;
        assert!(snap.contains("watched-client"), "{snap}");
        assert!(snap.contains(&format!("pinned to {revision}")), "{snap}");
        assert!(snap.contains("\"clients_pinned\":1"), "{snap}");
    }
    assert_eq!(ui.snapshots_built(), 2, "one snapshot for one change");

    // The last subscriber gone, the producer stops; a new one starts it again.
    drop(streams);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ui.producing() {
        assert!(Instant::now() < deadline, "the producer did not stop");
        tokio::task::yield_now().await;
    }
    let mut again = LiveStream::open(&master, None).await;
    assert!(again.next().await.contains("watched-client"));
    assert_eq!(ui.snapshots_built(), 3);
}

/// A logged-in viewer's snapshots carry its own session's CSRF token in their forms (never the
/// shared placeholder); an anonymous viewer's carry no forms.
#[tokio::test]
async fn live_snapshots_carry_each_viewers_own_csrf_token() {
    let fx = fixture();
    let master = Master::open(config(&fx.repo, &fx.data)).unwrap();
    master.set_public_url("http://127.0.0.1:9".into());
    http_build(&master).await;
    fs::write(fx.repo.join("second.txt"), b"second").unwrap();
    http_build(&master).await;
    let login = Request::builder()
        .method("POST")
        .uri("/ui/login")
        .header(header::HOST, "127.0.0.1:9")
        .header(header::ORIGIN, "http://127.0.0.1:9")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={WRITE}")))
        .unwrap();
    let resp = master.router().oneshot(login).await.unwrap();
    let cookie = resp.headers()[header::SET_COOKIE].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let (id, _) = cookie.split_once('=').map(|(_, v)| (v, ())).unwrap();
    let csrf = master
        .inner
        .ui
        .sessions
        .csrf(id, std::time::Instant::now())
        .unwrap();

    let mut viewer = LiveStream::open(&master, Some(&cookie)).await;
    let mut anonymous = LiveStream::open(&master, None).await;
    let placeholder = master.inner.ui.placeholder().to_string();
    let (mine, theirs) = (viewer.next().await, anonymous.next().await);
    assert!(
        mine.contains(&format!("name=\\\"csrf\\\" value=\\\"{csrf}\\\"")),
        "{mine}"
    );
    assert!(mine.contains("Roll back to this"), "{mine}");
    assert!(!mine.contains(&placeholder) && !theirs.contains(&placeholder));
    assert!(
        !theirs.contains("csrf") && !theirs.contains("Roll back"),
        "{theirs}"
    );
}

/// Every HTML page the master serves carries the Content-Security-Policy (nothing inline,
/// nothing from elsewhere, no frames), and the pages hold no inline script or style.
#[tokio::test]
async fn every_page_carries_the_content_security_policy() {
    let fx = fixture();
    let master = Master::open(config(&fx.repo, &fx.data)).unwrap();
    http_build(&master).await;
    let policy = "default-src 'none'; script-src 'self'; style-src 'self'";
    for (method, uri) in [
        ("GET", "/"),
        ("GET", "/join"),
        // A refusal page.
        ("POST", "/ui/logout"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::empty())
            .unwrap();
        let resp = master.router().oneshot(req).await.unwrap();
        let h = resp.headers().clone();
        assert!(
            h[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with(policy), "{uri}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("form-action 'self'"));
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{uri}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{uri}");
        assert_eq!(h[header::REFERRER_POLICY], "same-origin", "{uri}");
        let html =
            String::from_utf8(to_bytes(resp.into_body(), 1 << 22).await.unwrap().to_vec()).unwrap();
        assert!(
            !html.contains("<style") && !html.contains("style=\""),
            "{uri}: {html}"
        );
        assert!(!html.contains("<script>"), "{uri}: {html}");
        assert!(
            html.contains("<link rel=\"stylesheet\" href=\"/ui/style.css\">"),
            "{uri}"
        );
    }
    // The script and the stylesheet: files of their own, revalidated by their ETag.
    for (uri, kind) in [
        ("/ui/live.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let (s, h, body) = call(&master, "GET", uri, None, None).await;
        assert_eq!(s, StatusCode::OK);
        assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind));
        assert!(h.get(header::CONTENT_SECURITY_POLICY).is_none());
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(!body.is_empty());
        let req = Request::builder()
            .uri(uri)
            .header(header::IF_NONE_MATCH, h[header::ETAG].clone())
            .body(Body::empty())
            .unwrap();
        let resp = master.router().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    }
    let (_, _, page) = call(&master, "GET", "/", None, None).await;
    assert!(
        String::from_utf8(page)
            .unwrap()
            .contains("<script src=\"/ui/live.js\"></script>")
    );
    // An API answer is no page: no policy, but nosniff.
    let (_, h, _) = call(&master, "GET", "/api/v1/status", None, None).await;
    assert!(h.get(header::CONTENT_SECURITY_POLICY).is_none());
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
}

/// A pack of `n` compressible chunks as a push makes it: its bytes, hash and table of contents.
fn push_pack(n: u64) -> (Vec<u8>, Hash, Vec<hummel_core::pack::PackEntry>) {
    let mut w = hummel_core::pack::PackWriter::new(Vec::new()).unwrap();
    let mut comp = hummel_core::codec::ChunkCompressor::new(3).unwrap();
    for i in 0..n {
        let plain: Vec<u8> = format!("chunk {i} ").repeat(2000).into_bytes();
        let (codec, stored) = comp.compress(&plain);
        w.add(Hash::of(&plain), codec, &stored, plain.len() as u32)
            .unwrap();
    }
    let done = w.finish().unwrap();
    (done.writer, done.hash, done.entries)
}

/// `PUT /api/v1/push/packs/HASH[?push=ID]` with `body` (streamed, no length declared).
async fn put_pack(
    master: &Master,
    hash: &Hash,
    push: Option<&str>,
    body: Body,
) -> (StatusCode, Vec<u8>) {
    let query = push.map(|p| format!("?push={p}")).unwrap_or_default();
    let req = Request::builder()
        .method("PUT")
        .uri(format!("/api/v1/push/packs/{}{query}", hash.to_hex()))
        .header(hummel_proto::auth::TOKEN_HEADER, WRITE)
        .body(body)
        .unwrap();
    let resp = master.router().oneshot(req).await.unwrap();
    let status = resp.status();
    (
        status,
        to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec(),
    )
}

/// The names in the push staging folder.
fn staged_files(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(data.join("push-staging"))
        .map(|list| {
            list.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A body of `pieces` streamed in pieces of `piece` bytes.
fn streamed(pieces: Vec<Bytes>) -> Body {
    Body::from_stream(futures::stream::iter(
        pieces.into_iter().map(Ok::<_, std::io::Error>),
    ))
}

#[tokio::test]
async fn a_pushed_pack_streams_to_staging_verified_and_is_followed() {
    let fx = fixture();
    let master = Master::open_with(config(&fx.repo, &fx.data), small_packs()).unwrap();
    let (bytes, hash, toc) = push_pack(5);
    let push = "0123456789abcdef0123456789abcdef";
    let missing = hummel_proto::api::PushMissingRequest {
        chunks: toc.iter().map(|e| e.hash).collect(),
        push: Some(push.into()),
        prefix: Some("@m".into()),
    };
    let (code, _, _) = call(
        &master,
        "POST",
        "/api/v1/push/missing",
        Some(WRITE),
        Some(serde_json::to_string(&missing).unwrap()),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    // In small pieces, as a connection brings it.
    let pieces = bytes.chunks(1000).map(Bytes::copy_from_slice).collect();
    let (code, body) = put_pack(&master, &hash, Some(push), streamed(pieces)).await;
    assert_eq!(
        code,
        StatusCode::NO_CONTENT,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(staged_files(&fx.data), [format!("{}.pack", hash.to_hex())]);
    assert_eq!(
        fs::read(
            fx.data
                .join("push-staging")
                .join(format!("{}.pack", hash.to_hex()))
        )
        .unwrap(),
        bytes
    );
    assert_eq!(crate::lock(&master.inner.push.packs).get(&hash), Some(&toc));
    let p = &master.status().pushes[0];
    assert_eq!(p.state, hummel_proto::api::PushState::Uploading);
    assert_eq!((p.chunks_missing, p.chunks_received), (5, 5));
    assert_eq!(p.bytes_received, bytes.len() as u64);
    assert_eq!(p.prefix.as_deref(), Some("@m"));
    let metrics = crate::metrics::render(&master);
    assert!(
        metrics.contains("hummel_push_packs_staged_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hummel_pushes{state=\"uploading\"} 1"),
        "{metrics}"
    );

    // A malformed push id is refused.
    let (code, _) = put_pack(&master, &hash, Some("ABC"), Body::from(bytes.clone())).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    // Staged again (a retried upload): still one file, counted once.
    let (code, _) = put_pack(&master, &hash, Some(push), Body::from(bytes)).await;
    assert_eq!(code, StatusCode::NO_CONTENT);
    assert_eq!(staged_files(&fx.data).len(), 1);
    assert_eq!(master.status().pushes[0].chunks_received, 5);
}

#[tokio::test]
async fn a_damaged_pushed_pack_is_refused_and_nothing_is_staged() {
    let fx = fixture();
    let master = Master::open_with(config(&fx.repo, &fx.data), small_packs()).unwrap();
    let (bytes, hash, toc) = push_pack(3);

    // Changed in transit: it does not hash to its name.
    let mut damaged = bytes.clone();
    damaged[toc[1].offset as usize + 3] ^= 0x40;
    let (code, body) = put_pack(&master, &hash, None, Body::from(damaged.clone())).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "bad_request");
    assert!(String::from_utf8_lossy(&body).contains("damaged in transit"));
    assert!(staged_files(&fx.data).is_empty());

    // Named after its damaged bytes: the hash holds, the chunk does not decode to its id.
    let (code, body) = put_pack(&master, &Hash::of(&damaged), None, Body::from(damaged)).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains(&format!("chunk {}", toc[1].hash.short())),
        "{text}"
    );
    assert!(staged_files(&fx.data).is_empty());

    // Not a pack at all.
    let junk = b"not a pack".to_vec();
    let (code, _) = put_pack(&master, &Hash::of(&junk), None, Body::from(junk)).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(staged_files(&fx.data).is_empty());
    assert!(crate::lock(&master.inner.push.packs).is_empty());
    let metrics = crate::metrics::render(&master);
    assert!(
        metrics.contains("hummel_push_packs_refused_total 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_pushed_pack_over_the_limit_is_refused_while_streaming() {
    let fx = fixture();
    let master = Master::open_with(config(&fx.repo, &fx.data), small_packs()).unwrap();
    let limit = hummel_proto::api::MAX_PUSH_PACK;
    let mib = Bytes::from(vec![7u8; 1 << 20]);
    let over = (limit >> 20) as usize + 1;
    let hash = Hash::of(b"whatever");
    // No length declared: refused once the limit is passed.
    let (code, body) = put_pack(&master, &hash, None, streamed(vec![mib.clone(); over])).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{}", error_code(&body));
    assert!(
        staged_files(&fx.data).is_empty(),
        "the temp file is deleted"
    );
    // Declared: refused before anything is read.
    let req = Request::builder()
        .method("PUT")
        .uri(format!("/api/v1/push/packs/{}", hash.to_hex()))
        .header(hummel_proto::auth::TOKEN_HEADER, WRITE)
        .header(header::CONTENT_LENGTH, limit + 1)
        .body(streamed(vec![mib; over]))
        .unwrap();
    let resp = master.router().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(staged_files(&fx.data).is_empty());
    let metrics = crate::metrics::render(&master);
    assert!(
        metrics.contains("hummel_bodies_refused_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_staged_pack_damaged_on_disk_is_not_published_and_goes() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, data) = (dir.path().join("repo"), dir.path().join("data"));
    fs::create_dir_all(&repo).unwrap();
    let master = Master::open_with(config(&repo, &data), small_packs()).unwrap();
    let mut plain = Vec::new();
    let mut w = hummel_core::pack::PackWriter::new(Vec::new()).unwrap();
    for i in 0..3u64 {
        let chunk = pseudo_random(20_000, 100 + i);
        w.add(
            Hash::of(&chunk),
            hummel_core::codec::Codec::Raw,
            &chunk,
            chunk.len() as u32,
        )
        .unwrap();
        plain.extend_from_slice(&chunk);
    }
    let pack = w.finish().unwrap();
    let (code, _) = put_pack(&master, &pack.hash, None, Body::from(pack.writer.clone())).await;
    assert_eq!(code, StatusCode::NO_CONTENT);
    let manifest = hummel_proto::api::PushPublishRequest {
        files: vec![hummel_proto::api::PushFile {
            path: "f.bin".into(),
            size: plain.len() as u64,
            mode: 0o644,
            mtime_ns: 0,
            hash: Hash::of(&plain),
            chunks: pack.entries.iter().map(|e| e.hash).collect(),
        }],
        ..Default::default()
    };
    // A bit flips on the master's disk while the pack waits for its publish, across a
    // restart (a pack this process verified minutes ago is not hashed again).
    let staged = data
        .join("push-staging")
        .join(format!("{}.pack", pack.hash.to_hex()));
    let mut bytes = fs::read(&staged).unwrap();
    bytes[100] ^= 1;
    fs::write(&staged, bytes).unwrap();
    drop(master);
    let master = Master::open_with(config(&repo, &data), small_packs()).unwrap();
    let m = master.clone();
    let req = manifest.clone();
    let refused = tokio::task::spawn_blocking(move || m.push_publish(&req))
        .await
        .unwrap();
    assert!(
        matches!(&refused, Err(crate::push::PushError::Missing(m)) if m.contains("damaged")),
        "{refused:?}"
    );
    assert!(
        staged_files(&data).is_empty(),
        "the damaged pack is deleted"
    );
    assert!(master.current().is_none());

    // Uploaded again, it publishes, and the pack moves into the store.
    let (code, _) = put_pack(&master, &pack.hash, None, Body::from(pack.writer.clone())).await;
    assert_eq!(code, StatusCode::NO_CONTENT);
    let m = master.clone();
    let done = tokio::task::spawn_blocking(move || m.push_publish(&manifest))
        .await
        .unwrap()
        .unwrap();
    assert!(done.revision.is_some());
    assert!(staged_files(&data).is_empty());
    assert_eq!(
        fs::read(master.store().path(&pack.hash)).unwrap(),
        pack.writer
    );
}
