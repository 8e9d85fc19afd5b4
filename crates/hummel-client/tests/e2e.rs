//! End to end, in process: a fake master and fake slaves (axum on 127.0.0.1:0) serve an index
//! and packs built with hummel-core; the real client syncs a temp folder.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use hummel_client::{SyncError, SyncOptions, SyncOutcome, SyncReport, VerifyOptions, sync, verify};
use hummel_core::codec::ChunkCompressor;
use hummel_core::pack::PackWriter;
use hummel_core::statement::{KeyPair, Statement};
use hummel_core::tree::TreeHashes;
use hummel_core::{
    ChunkLocation, ChunkerConfig, DirEntry, Entry, EntryKind, FileEntry, Hash, Index, PackInfo,
    RelPath, chunk_stream,
};
use hummel_proto::api::{ClientReport, LocateRequest, LocateResponse, RevisionInfo, SlaveEndpoint};

// ---------------------------------------------------------------------------------------------
// Test data: a repository description and a build that makes an index and packs.

#[derive(Clone, Default)]
struct Repo {
    files: BTreeMap<String, (Vec<u8>, u32)>,
    dirs: BTreeSet<String>,
}

impl Repo {
    fn file(mut self, path: &str, data: Vec<u8>) -> Self {
        self.files.insert(path.into(), (data, 0o644));
        self
    }
    fn exec(mut self, path: &str, data: Vec<u8>) -> Self {
        self.files.insert(path.into(), (data, 0o755));
        self
    }
    fn dir(mut self, path: &str) -> Self {
        self.dirs.insert(path.into());
        self
    }
    fn all_dirs(&self) -> BTreeSet<String> {
        let mut dirs = self.dirs.clone();
        for p in self.files.keys().chain(self.dirs.iter()) {
            let mut cur = p.as_str();
            while let Some(i) = cur.rfind('/') {
                cur = &cur[..i];
                dirs.insert(cur.to_string());
            }
        }
        dirs
    }
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn mtime_of(path: &str) -> i64 {
    1_600_000_000_000_000_000 + (Hash::of(path.as_bytes()).0[0] as i64) * 1_000_000_007
}

const CHUNKER: ChunkerConfig = ChunkerConfig {
    min: 1024,
    avg: 4096,
    max: 16384,
};

/// Builds revision `revision` of `repo`: packs go into `store`, the index is returned.
fn build(repo: &Repo, revision: u64, store: &mut HashMap<Hash, Vec<u8>>) -> Index {
    let mut comp = ChunkCompressor::new(3).unwrap();
    let mut chunks: Vec<ChunkLocation> = Vec::new();
    let mut by_hash: HashMap<Hash, u32> = HashMap::new();
    let mut packs = Vec::new();
    let mut number = (revision * 100) as u32;
    let mut writer = PackWriter::new(Vec::new()).unwrap();
    let mut open: Vec<usize> = Vec::new(); // chunks in the open pack
    let mut close = |writer: PackWriter<Vec<u8>>,
                     open: &mut Vec<usize>,
                     chunks: &mut Vec<ChunkLocation>,
                     number: &mut u32,
                     packs: &mut Vec<PackInfo>| {
        let done = writer.finish().unwrap();
        for &c in open.iter() {
            chunks[c].pack = *number;
        }
        open.clear();
        packs.push(PackInfo {
            number: *number,
            hash: done.hash,
            size: done.size,
        });
        store.insert(done.hash, done.writer);
        *number += 1;
    };
    let mut entries = Vec::new();
    for d in repo.all_dirs() {
        entries.push(Entry {
            path: RelPath::new(&d).unwrap(),
            kind: EntryKind::Dir(DirEntry { mode: 0o755 }),
        });
    }
    for (path, (data, mode)) in &repo.files {
        let mut list = Vec::new();
        let digest = chunk_stream::<_, std::io::Error, _>(&CHUNKER, data.as_slice(), |c| {
            let ci = match by_hash.get(&c.hash) {
                Some(&ci) => ci,
                None => {
                    let (codec, stored) = comp.compress(c.data);
                    let e = writer
                        .add(c.hash, codec, &stored, c.data.len() as u32)
                        .unwrap();
                    let ci = chunks.len() as u32;
                    chunks.push(ChunkLocation {
                        hash: c.hash,
                        pack: 0,
                        offset: e.offset,
                        stored_len: e.stored_len,
                        len: e.len,
                        codec,
                    });
                    open.push(ci as usize);
                    by_hash.insert(c.hash, ci);
                    ci
                }
            };
            list.push(ci);
            Ok(())
        })
        .unwrap();
        if writer.len() > 24 << 10 {
            let full = std::mem::replace(&mut writer, PackWriter::new(Vec::new()).unwrap());
            close(full, &mut open, &mut chunks, &mut number, &mut packs);
        }
        entries.push(Entry {
            path: RelPath::new(path).unwrap(),
            kind: EntryKind::File(FileEntry {
                size: data.len() as u64,
                mode: *mode,
                mtime_ns: mtime_of(path),
                hash: digest.hash,
                chunks: list,
            }),
        });
    }
    if !writer.is_empty() {
        close(writer, &mut open, &mut chunks, &mut number, &mut packs);
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let index = Index {
        revision,
        created_unix: 1_700_000_000,
        chunker: CHUNKER,
        root: None,
        entries,
        chunks,
        packs,
        info: Default::default(),
    };
    index.validate().unwrap();
    index
}

// ---------------------------------------------------------------------------------------------
// Fake master and slaves.

#[derive(Default)]
struct Cluster {
    index: Mutex<Option<Index>>,
    packs: Mutex<HashMap<Hash, Vec<u8>>>,
    slaves: Mutex<Vec<SlaveEndpoint>>,
    reports: Mutex<Vec<ClientReport>>,
    index_requests: AtomicU64,
}

impl Cluster {
    fn publish(&self, repo: &Repo, revision: u64) {
        let mut packs = self.packs.lock().unwrap();
        let index = build(repo, revision, &mut packs);
        *self.index.lock().unwrap() = Some(index);
    }
}

fn api_error(status: StatusCode, code: &str) -> Response {
    let body = serde_json::json!({ "code": code, "message": format!("{code} (fake master)") });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The fake master's signing key: it signs like a real one.
fn master_key() -> KeyPair {
    KeyPair::from_secret(&[5; 32])
}

async fn m_revision(State(c): State<Arc<Cluster>>) -> Response {
    let idx = c.index.lock().unwrap();
    let statement = idx.as_ref().map(|i| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let s = Statement {
            repository_id: "fake".into(),
            revision: i.revision,
            tree_format: hummel_core::tree::TREE_FORMAT,
            tree_digest: TreeHashes::compute(i).digest(),
            created_unix: i.created_unix,
            signed_unix: now,
            expires_unix: now + 3600,
            mass_delete_confirmed: false,
            key: master_key().public(),
        };
        hummel_core::tree::to_hex(&s.sign(&master_key()))
    });
    let info = RevisionInfo {
        revision: idx.as_ref().map(|i| i.revision),
        created_unix: idx.as_ref().map(|i| i.created_unix),
        files: idx.as_ref().map_or(0, |i| i.file_count() as u64),
        bytes: idx.as_ref().map_or(0, |i| i.total_size()),
        index_hash: None,
        repository_id: None,
        mass_delete_confirmed: false,
        statement,
        key_rotations: vec![],
    };
    axum::Json(info).into_response()
}

async fn m_index(
    State(c): State<Arc<Cluster>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    c.index_requests.fetch_add(1, Ordering::SeqCst);
    let Some(index) = c.index.lock().unwrap().clone() else {
        return api_error(StatusCode::NOT_FOUND, "no_revision");
    };
    if q.get("revision")
        .is_some_and(|r| r != &index.revision.to_string())
    {
        return api_error(StatusCode::NOT_FOUND, "no_such_revision");
    }
    let hashes = TreeHashes::compute(&index);
    let (sub, proof) = match q.get("path") {
        None => (index, Default::default()),
        Some(p) => match RelPath::new(p)
            .ok()
            .and_then(|p| Some((index.subtree(&p)?, hashes.proof(&index, &p)?)))
        {
            Some(s) => s,
            None => return api_error(StatusCode::NOT_FOUND, "no_such_path"),
        },
    };
    let proof = hummel_core::tree::to_hex(&hummel_core::tree::encode_proof(&proof));
    (
        [(hummel_proto::api::PROOF_HEADER, proof)],
        hummel_core::index::encode(&sub),
    )
        .into_response()
}

async fn m_locate(
    State(c): State<Arc<Cluster>>,
    axum::Json(req): axum::Json<LocateRequest>,
) -> Response {
    let slaves = c.slaves.lock().unwrap().clone();
    let all: Vec<u32> = (0..slaves.len() as u32).collect();
    axum::Json(LocateResponse {
        holders: req.packs.iter().map(|_| all.clone()).collect(),
        slaves,
        fallback: None,
        target: None,
    })
    .into_response()
}

async fn m_report(
    State(c): State<Arc<Cluster>>,
    axum::Json(r): axum::Json<ClientReport>,
) -> StatusCode {
    c.reports.lock().unwrap().push(r);
    StatusCode::NO_CONTENT
}

struct FakeSlave {
    cluster: Arc<Cluster>,
    corrupt: AtomicBool,
    requests: AtomicU64,
}

async fn s_blob(
    State(s): State<Arc<FakeSlave>>,
    UrlPath(hash): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let Ok(hash) = hash.parse::<Hash>() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Some(pack) = s.cluster.packs.lock().unwrap().get(&hash).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
    let Some((a, b)) = range.filter(|&(a, b)| a <= b && b < pack.len()) else {
        return StatusCode::RANGE_NOT_SATISFIABLE.into_response();
    };
    let mut body = pack[a..=b].to_vec();
    if s.corrupt.load(Ordering::SeqCst) {
        let mid = body.len() / 2;
        body[mid] ^= 0x55;
    }
    (
        StatusCode::PARTIAL_CONTENT,
        [(
            header::CONTENT_RANGE,
            format!("bytes {a}-{b}/{}", pack.len()),
        )],
        Body::from(body),
    )
        .into_response()
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

struct Harness {
    cluster: Arc<Cluster>,
    master_url: String,
    slaves: Vec<Arc<FakeSlave>>,
}

/// A master and one fake slave per entry of `corrupt` (true: serves flipped bytes).
async fn harness(corrupt: &[bool]) -> Harness {
    let cluster = Arc::new(Cluster::default());
    let mut slaves = Vec::new();
    for (i, &bad) in corrupt.iter().enumerate() {
        let s = Arc::new(FakeSlave {
            cluster: cluster.clone(),
            corrupt: AtomicBool::new(bad),
            requests: AtomicU64::new(0),
        });
        let url = serve(
            Router::new()
                .route("/blob/{hash}", get(s_blob))
                .with_state(s.clone()),
        )
        .await;
        let id = if bad {
            format!("bad{i}")
        } else {
            format!("good{i}")
        };
        cluster
            .slaves
            .lock()
            .unwrap()
            .push(SlaveEndpoint { id, url });
        slaves.push(s);
    }
    let app = Router::new()
        .route("/api/v1/revision", get(m_revision))
        .route("/api/v1/index", get(m_index))
        .route("/api/v1/locate", post(m_locate))
        .route("/api/v1/client/report", post(m_report))
        .with_state(cluster.clone());
    let master_url = serve(app).await;
    Harness {
        cluster,
        master_url,
        slaves,
    }
}

// ---------------------------------------------------------------------------------------------
// Checks.

/// Everything under `dest` except `.hummel`: path → (kind, content, mode).
fn snapshot(dest: &Path) -> BTreeMap<String, (char, Vec<u8>, u32)> {
    fn rec(root: &Path, dir: &Path, out: &mut BTreeMap<String, (char, Vec<u8>, u32)>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == ".hummel" {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o777;
            if m.file_type().is_symlink() {
                out.insert(rel, ('l', Vec::new(), 0));
            } else if m.is_dir() {
                out.insert(rel, ('d', Vec::new(), mode));
                rec(root, &p, out);
            } else {
                out.insert(rel, ('f', fs::read(&p).unwrap(), mode));
            }
        }
    }
    let mut out = BTreeMap::new();
    rec(dest, dest, &mut out);
    out
}

/// DEST is exactly `repo` (below `sub`), with modes and mtimes.
fn assert_identical(dest: &Path, repo: &Repo, sub: Option<&str>) {
    let strip = |p: &str| -> Option<String> {
        match sub {
            None => Some(p.to_string()),
            Some(s) => p.strip_prefix(&format!("{s}/")).map(str::to_string),
        }
    };
    let mut expected = BTreeMap::new();
    for d in repo.all_dirs() {
        if let Some(p) = strip(&d) {
            expected.insert(p, ('d', Vec::new(), 0o755));
        }
    }
    for (path, (data, mode)) in &repo.files {
        if let Some(p) = strip(path) {
            expected.insert(p, ('f', data.clone(), *mode));
        }
    }
    let got = snapshot(dest);
    let keys = |m: &BTreeMap<String, (char, Vec<u8>, u32)>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&got), keys(&expected));
    assert!(got == expected, "contents or modes differ");
    for (path, _) in repo.files.iter() {
        if let Some(p) = strip(path) {
            let m = fs::metadata(dest.join(&p)).unwrap();
            let ns = m.mtime() * 1_000_000_000 + m.mtime_nsec();
            assert_eq!(ns, mtime_of(path), "mtime of {p}");
        }
    }
    let tmp = dest.join(".hummel/tmp");
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "temp leftovers");
}

fn done(outcome: SyncOutcome) -> SyncReport {
    match outcome {
        SyncOutcome::Done(r) => r,
        other => panic!("expected a completed sync, got {other:?}"),
    }
}

fn repo_v1() -> Repo {
    Repo::default()
        .file("a/hello.txt", b"hello, hummel\n".repeat(50))
        .file("big.bin", random(200_000, 1))
        .file("empty.txt", Vec::new())
        .file("dir with space/ünïcødé ñame.dat", random(50_000, 2))
        .file("dup1", random(30_000, 3))
        .file("dup2", random(30_000, 3))
        .exec("a/b/c/run.sh", b"#!/bin/sh\necho hi\n".to_vec())
        .dir("empty_dir")
        .dir("a/empty inside")
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_fails_over_is_idempotent_and_reuses_renamed_files() {
    let h = harness(&[true, false]).await;
    let v1 = repo_v1();
    h.cluster.publish(&v1, 1);
    let dest = tempfile::tempdir().unwrap();
    let opts = SyncOptions::new(&h.master_url, dest.path());

    // First sync: everything downloaded; the corrupt slave is caught and skipped.
    let r = done(sync(&opts).await.unwrap());
    assert_identical(dest.path(), &v1, None);
    assert_eq!(r.revision, 1);
    assert_eq!(r.files_written, 7);
    assert!(r.bytes_downloaded > 0 && r.chunks_downloaded > 0);
    assert_eq!(r.bytes_reused, 0);
    assert!(
        h.slaves[0].requests.load(Ordering::SeqCst) > 0,
        "corrupt slave never tried"
    );
    assert_eq!(r.bad_slaves, ["bad0"]);
    assert_eq!(r.slaves_used, ["good1"]);
    assert!(r.failed_requests > 0);
    let reports = h.cluster.reports.lock().unwrap().clone();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].revision, 1);
    assert_eq!(reports[0].files, 7);
    assert_eq!(reports[0].bad_slaves, ["bad0"]);

    // Verify agrees.
    let vopts = VerifyOptions {
        master_url: h.master_url.clone(),
        dest: dest.path().to_path_buf(),
        path: None,
        selection: None,
        read_token: None,
        tls: hummel_tls::ClientTls::system(),
        trust: None,
    };
    let v = verify(&vopts).await.unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!(v.files_checked, 7);

    // Second sync: a no-op, no index fetched.
    let before = h.cluster.index_requests.load(Ordering::SeqCst);
    let r = done(sync(&opts).await.unwrap());
    assert!(r.no_op);
    assert_eq!(
        (r.files_unchanged, r.bytes_downloaded, r.files_written),
        (7, 0, 0)
    );
    assert_eq!(h.cluster.index_requests.load(Ordering::SeqCst), before);

    // Revision 2: big.bin renamed, hello.txt changed, dup2 gone, a new file.
    let mut v2 = v1.clone();
    let big = v2.files.remove("big.bin").unwrap();
    v2.files.insert("moved/big renamed.bin".into(), big);
    v2.files.remove("dup2");
    v2 = v2
        .file("a/hello.txt", b"hello again\n".repeat(60))
        .file("new.bin", random(10_000, 9));
    h.cluster.publish(&v2, 2);
    let dry = match sync(&SyncOptions {
        dry_run: true,
        ..opts.clone()
    })
    .await
    .unwrap()
    {
        SyncOutcome::DryRun(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(dry.files_to_write, 3);
    assert_eq!(dry.files_to_delete, 2);
    assert!(dry.bytes_to_reuse >= 200_000);
    assert!(dry.write.contains(&"moved/big renamed.bin".to_string()));
    assert!(dry.create_dirs.contains(&"moved".to_string()));

    let r = done(sync(&opts).await.unwrap());
    assert_identical(dest.path(), &v2, None);
    assert_eq!(r.revision, 2);
    assert_eq!(r.files_written, 3);
    assert_eq!(r.files_deleted, 2);
    assert!(r.bytes_reused >= 200_000, "renamed file not reused: {r:?}");
    assert!(
        r.bytes_downloaded < 40_000,
        "downloaded {} bytes for a rename and two small files",
        r.bytes_downloaded
    );

    // A local modification is caught by verify and repaired by the next sync.
    fs::write(dest.path().join("dup1"), b"tampered").unwrap();
    let v = verify(&vopts).await.unwrap();
    assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
    assert!(v.problems[0].contains("dup1"));
    // An extra inside what the repository owns is reported (and removed by a sync); one next
    // to it, under a name no revision had, is the user's and none of Hummel's business.
    fs::write(dest.path().join("a/stray"), b"x").unwrap();
    fs::write(dest.path().join("my notes"), b"mine").unwrap();
    let v = verify(&vopts).await.unwrap();
    assert!(
        v.problems == ["dup1: size 8, expected 30000", "extra file a/stray"],
        "{:?}",
        v.problems
    );
    let r = done(sync(&opts).await.unwrap());
    assert!(!r.no_op);
    assert_eq!((r.files_written, r.files_deleted), (1, 1));
    assert_eq!(r.deleted, ["a/stray"]);
    assert_eq!(fs::read(dest.path().join("my notes")).unwrap(), b"mine");
    fs::remove_file(dest.path().join("my notes")).unwrap();
    assert_identical(dest.path(), &v2, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_slaves_corrupt_fails_and_leaves_dest_untouched() {
    let h = harness(&[false, false]).await;
    let v1 = repo_v1();
    h.cluster.publish(&v1, 1);
    let dest = tempfile::tempdir().unwrap();
    let opts = SyncOptions::new(&h.master_url, dest.path());
    done(sync(&opts).await.unwrap());
    // An extra file that a successful sync would delete.
    fs::write(dest.path().join("a/keep me"), b"extra").unwrap();
    let before = snapshot(dest.path());

    let v2 = v1
        .clone()
        .file("a/hello.txt", random(40_000, 77))
        .file("fresh.bin", random(60_000, 78));
    h.cluster.publish(&v2, 2);
    for s in &h.slaves {
        s.corrupt.store(true, Ordering::SeqCst);
    }
    let err = sync(&opts).await.unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(
        matches!(err, SyncError::PackUnavailable { tried: 2, .. }),
        "{msg}"
    );
    assert!(msg.starts_with("pack "), "{msg}");
    assert!(!msg.contains('\n'));
    assert_eq!(
        snapshot(dest.path()),
        before,
        "DEST changed after a failed sync"
    );
    // The slaves that failed are reported although the sync failed, with what DEST holds.
    let last = h.cluster.reports.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.revision, 1);
    assert_eq!(last.bad_slaves.len(), 2, "{last:?}");
    // The temp files stay for the next run to resume (they hold verified chunks only).
    for e in fs::read_dir(dest.path().join(".hummel/tmp")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(name.ends_with(".part"), "{name}");
    }

    // Mirrors healthy again: the next run completes the job.
    for s in &h.slaves {
        s.corrupt.store(false, Ordering::SeqCst);
    }
    let r = done(sync(&opts).await.unwrap());
    assert_eq!(r.revision, 2);
    assert_identical(dest.path(), &v2, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_subtree_and_symlink_in_the_way() {
    let h = harness(&[false]).await;
    let v1 = repo_v1();
    h.cluster.publish(&v1, 1);

    // Dry run into a fresh folder writes nothing at all.
    let dest = tempfile::tempdir().unwrap();
    let target = dest.path().join("copy");
    let opts = SyncOptions {
        dry_run: true,
        ..SyncOptions::new(&h.master_url, &target)
    };
    let SyncOutcome::DryRun(s) = sync(&opts).await.unwrap() else {
        panic!("not a dry run")
    };
    assert_eq!((s.files_to_write, s.files_unchanged), (7, 0));
    assert!(s.bytes_to_download > 0);
    assert!(!target.exists());

    // Subtree "a", with a symlink planted where "b" (a directory) belongs.
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("sentinel"), b"untouched").unwrap();
    fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(outside.path(), target.join("b")).unwrap();
    let opts = SyncOptions {
        path: Some(RelPath::new("a").unwrap()),
        ..SyncOptions::new(&h.master_url, &target)
    };
    let r = done(sync(&opts).await.unwrap());
    assert_eq!(r.files_written, 2);
    assert_identical(&target, &v1, Some("a"));
    assert_eq!(
        fs::read_dir(outside.path()).unwrap().count(),
        1,
        "something was written through the symlink"
    );
    assert_eq!(
        fs::read(outside.path().join("sentinel")).unwrap(),
        b"untouched"
    );
    let reports = h.cluster.reports.lock().unwrap().clone();
    assert_eq!(reports.last().unwrap().path, "a");

    // A path the master does not have: a clear error, nothing changed.
    let bad = SyncOptions {
        path: Some(RelPath::new("nope").unwrap()),
        ..SyncOptions::new(&h.master_url, &target)
    };
    let msg = sync(&bad).await.unwrap_err().to_string();
    eprintln!("{msg}");
    assert!(msg.contains("no_such_path"), "{msg}");
    assert_identical(&target, &v1, Some("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_master_is_one_clear_line() {
    let dest = tempfile::tempdir().unwrap();
    let opts = SyncOptions::new("http://127.0.0.1:1", dest.path());
    let msg = sync(&opts).await.unwrap_err().to_string();
    eprintln!("{msg}");
    assert!(msg.starts_with("master http://127.0.0.1:1: "), "{msg}");
    assert!(msg.to_lowercase().contains("connect"), "{msg}");
    assert!(!msg.contains('\n'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_local_files_are_rechunked_and_interrupted_runs_resume() {
    let h = harness(&[false, false]).await;
    let mut edited = random(200_000, 1);
    edited[100_000..100_010].copy_from_slice(b"0123456789");
    let v1 = repo_v1().file("big.bin", edited.clone());
    h.cluster.publish(&v1, 1);

    // DEST holds the old big.bin (no state at all) and a half-finished previous run.
    let dest = tempfile::tempdir().unwrap();
    fs::write(dest.path().join("big.bin"), random(200_000, 1)).unwrap();
    fs::create_dir_all(dest.path().join(".hummel/tmp")).unwrap();
    fs::write(dest.path().join(".hummel/tmp/0.part"), b"half").unwrap();
    let opts = SyncOptions::new(&h.master_url, dest.path());
    let r = done(sync(&opts).await.unwrap());
    assert_identical(dest.path(), &v1, None);
    assert!(
        r.bytes_reused > 150_000,
        "old version of big.bin not re-chunked and reused: {r:?}"
    );

    // A run killed mid-burst: some files of revision 2 are in place, the state still says 1.
    let v2 = v1
        .clone()
        .file("dup1", random(30_000, 50))
        .file("a/hello.txt", random(20_000, 51));
    fs::write(dest.path().join("dup1"), &v2.files["dup1"].0).unwrap();
    h.cluster.publish(&v2, 2);
    let r = done(sync(&opts).await.unwrap());
    assert_identical(dest.path(), &v2, None);
    assert_eq!(r.files_written, 1, "{r:?}");
    assert!(r.files_hashed >= 1);
    assert_eq!(r.files_touched, 1, "dup1 only needed its mtime: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noop_over_thousands_of_files_takes_milliseconds() {
    let h = harness(&[false]).await;
    let mut repo = Repo::default();
    for i in 0..3000 {
        repo = repo.file(
            &format!("d{}/f{i}.txt", i % 30),
            format!("file {i}\n").into_bytes(),
        );
    }
    h.cluster.publish(&repo, 1);
    let dest = tempfile::tempdir().unwrap();
    let opts = SyncOptions::new(&h.master_url, dest.path());
    let first = done(sync(&opts).await.unwrap());
    assert_eq!(first.files_written, 3000);
    let t = std::time::Instant::now();
    let r = done(sync(&opts).await.unwrap());
    let took = t.elapsed();
    assert!(r.no_op);
    assert_eq!(r.files_unchanged, 3000);
    eprintln!(
        "no-op over 3000 files: {took:?} (first sync {} ms)",
        first.duration_ms
    );
    assert!(
        took < std::time::Duration::from_secs(2),
        "no-op took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_slave_is_dropped_for_every_pack() {
    let h = harness(&[false]).await;
    // A port nothing listens on, listed first.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    h.cluster.slaves.lock().unwrap().insert(
        0,
        SlaveEndpoint {
            id: "dead".into(),
            url: dead,
        },
    );
    let v1 = repo_v1();
    h.cluster.publish(&v1, 1);
    let dest = tempfile::tempdir().unwrap();
    // One request at a time, so the dead slave is certainly offered more than one pack.
    let opts = SyncOptions {
        concurrency: 1,
        ..SyncOptions::new(&h.master_url, dest.path())
    };
    let r = done(sync(&opts).await.unwrap());
    assert_identical(dest.path(), &v1, None);
    assert!(r.requests >= 3, "{r:?}");
    assert!(r.failed_requests <= 1, "dead slave retried per pack: {r:?}");
}

/// The only mirror refuses connections for a moment (a restart): the client asks it again
/// after a jittered backoff instead of failing the sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blip_of_the_only_mirror_is_waited_out() {
    let h = harness(&[]).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    h.cluster.slaves.lock().unwrap().push(SlaveEndpoint {
        id: "blip".into(),
        url: format!("http://{addr}"),
    });
    let v1 = repo_v1();
    h.cluster.publish(&v1, 1);
    let slave = Arc::new(FakeSlave {
        cluster: h.cluster.clone(),
        corrupt: AtomicBool::new(false),
        requests: AtomicU64::new(0),
    });
    // The master tells when the client located its packs: the mirror comes up 200 ms later,
    // after the first request was refused; the retries (four, at least 250 ms apart) reach it.
    let located = Arc::new(tokio::sync::Notify::new());
    let on_locate = located.clone();
    let master = Router::new()
        .route("/api/v1/revision", get(m_revision))
        .route("/api/v1/index", get(m_index))
        .route(
            "/api/v1/locate",
            post(
                move |st: State<Arc<Cluster>>, body: axum::Json<LocateRequest>| async move {
                    let answer = m_locate(st, body).await;
                    on_locate.notify_one();
                    answer
                },
            ),
        )
        .route("/api/v1/client/report", post(m_report))
        .with_state(h.cluster.clone());
    let master_url = serve(master).await;
    let app = Router::new()
        .route("/blob/{hash}", get(s_blob))
        .with_state(slave.clone());
    tokio::spawn(async move {
        located.notified().await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        axum::serve(listener, app).await.unwrap();
    });
    let dest = tempfile::tempdir().unwrap();
    let r = done(
        sync(&SyncOptions::new(&master_url, dest.path()))
            .await
            .unwrap(),
    );
    assert_identical(dest.path(), &v1, None);
    assert!(
        r.failed_requests >= 1,
        "the mirror was never refused: {r:?}"
    );
    assert!(slave.requests.load(Ordering::SeqCst) > 0);
}

/// Sets the mtime of `path` to the one the fake build gives `rel`.
fn set_index_mtime(path: &Path, rel: &str) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(mtime_of(rel) as u64);
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_the_held_size_and_mtime_is_read_once_and_still_verified() {
    let h = harness(&[false, false]).await;
    let v1 = repo_v1();
    h.cluster.publish(&v1, 1);
    let dest = tempfile::tempdir().unwrap();
    let opts = SyncOptions::new(&h.master_url, dest.path());
    done(sync(&opts).await.unwrap());
    let path = dest.path().join("big.bin");

    // Revision 2: 1 KiB inserted in the middle of big.bin. Locally big.bin is rewritten with
    // the same bytes and mtime: the stat cache no longer vouches for it (new ctime), but size
    // and mtime are revision 1's, so it is taken as revision 1's without reading it first.
    let mut big = random(200_000, 1);
    big.splice(100_000..100_000, random(1024, 77));
    let v2 = v1.clone().file("big.bin", big);
    h.cluster.publish(&v2, 2);
    fs::write(&path, random(200_000, 1)).unwrap();
    set_index_mtime(&path, "big.bin");
    let r = done(sync(&opts).await.unwrap());
    assert_identical(dest.path(), &v2, None);
    assert_eq!(r.files_hashed, 0, "{r:?}");
    assert!(r.bytes_reused >= 190_000, "{r:?}");
    assert!(r.bytes_downloaded < 20_000, "{r:?}");

    // Revision 3: big.bin changes size again. Locally it has revision 2's size and mtime but
    // other bytes: every chunk copy fails its hash, and the chunks are downloaded instead.
    let v3 = v2.clone().file("big.bin", random(150_000, 5));
    h.cluster.publish(&v3, 3);
    fs::write(&path, random(201_024, 99)).unwrap();
    set_index_mtime(&path, "big.bin");
    let r = done(sync(&opts).await.unwrap());
    assert_identical(dest.path(), &v3, None);
    assert_eq!((r.files_hashed, r.files_written), (0, 1), "{r:?}");
    assert!(r.bytes_downloaded >= 140_000, "{r:?}");
}
