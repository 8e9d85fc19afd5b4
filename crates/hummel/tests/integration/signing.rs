//! Signed revisions (issue 10, point 2): the master's key, pinning on first contact and
//! `--trust`, key rotation, and an evil master (a real HTTP server here, in front of a real
//! master) whose every lie is refused in one line with DEST untouched, in bounded time and
//! memory.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hummel_core::statement::{KeyPair, Statement};
use hummel_core::tree::{from_hex, to_hex};
use serde_json::Value;

use super::util::*;

/// What the evil master does to the real master's answers.
#[derive(Clone)]
enum Mode {
    /// Passes everything through.
    Pass,
    /// Answers `GET /api/v1/revision` with these bytes (recorded earlier).
    ReplayRevision(Vec<u8>),
    /// Drops the statement from `GET /api/v1/revision`.
    Unsigned,
    /// A statement of 8 MB (hex) in `GET /api/v1/revision`.
    HugeStatement,
    /// Changes the real statement's tree digest without signing it again.
    Tampered,
    /// Signs the real statement again with its own key.
    OtherKey,
    /// Drops the key rotations from `GET /api/v1/revision`.
    NoRotations,
    /// Changes one file's mtime in a subtree index (the proof stays the master's).
    BadSubtree,
    /// Changes one file's mode in a delta (with an entries digest that fits the change) and
    /// in the whole index the client then asks for.
    BadDelta,
    /// Points the sets' servers elsewhere in every index answered (whole and subtrees): the
    /// info section, which the files' tree alone would not cover.
    TamperedInfo,
}

struct Evil {
    upstream: String,
    mode: Mutex<Mode>,
    http: reqwest::Client,
    key: KeyPair,
}

/// A real axum server on 127.0.0.1 in front of `upstream`, on its own runtime.
struct EvilMaster {
    url: String,
    state: Arc<Evil>,
    _rt: tokio::runtime::Runtime,
}

impl EvilMaster {
    fn start(upstream: &str) -> EvilMaster {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Evil {
            upstream: upstream.to_string(),
            mode: Mutex::new(Mode::Pass),
            http: http(),
            key: KeyPair::from_secret(&[66; 32]),
        });
        let app = axum::Router::new()
            .fallback(evil_handler)
            .with_state(state.clone());
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        EvilMaster {
            url,
            state,
            _rt: rt,
        }
    }

    fn set(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }
}

async fn fetch(
    e: &Evil,
    path_and_query: &str,
    headers: &HeaderMap,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut rb = e.http.get(format!("{}{path_and_query}", e.upstream));
    for (k, v) in headers {
        if k.as_str().eq_ignore_ascii_case("x-hummel-token") {
            rb = rb.header(k, v);
        }
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

async fn evil_handler(State(e): State<Arc<Evil>>, req: Request) -> Response {
    let mode = e.mode.lock().unwrap().clone();
    let (parts, body) = req.into_parts();
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.replace("%40", "@").replace("%2F", "/")))
                .collect()
        })
        .unwrap_or_default();
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if parts.method != axum::http::Method::GET {
        // Locate and reports pass through as they are.
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let mut rb = e
            .http
            .request(parts.method.clone(), format!("{}{pq}", e.upstream))
            .body(body);
        for (k, v) in &parts.headers {
            if k == "content-type" || k.as_str().eq_ignore_ascii_case("x-hummel-token") {
                rb = rb.header(k, v);
            }
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status();
        return (status, resp.bytes().await.unwrap()).into_response();
    }
    if path == "/api/v1/revision" {
        let (status, _, body) = fetch(&e, &pq, &parts.headers).await;
        let mut info: Value = serde_json::from_slice(&body).unwrap();
        match mode {
            Mode::ReplayRevision(recorded) => return json_answer(recorded),
            Mode::Unsigned => {
                info.as_object_mut().unwrap().remove("statement");
            }
            Mode::HugeStatement => info["statement"] = Value::String("ab".repeat(4 << 20)),
            Mode::Tampered => {
                let mut bytes = from_hex(info["statement"].as_str().unwrap(), 4096).unwrap();
                let s = Statement::decode(&bytes).unwrap();
                let at = bytes
                    .windows(32)
                    .position(|w| w == s.tree_digest.as_bytes())
                    .unwrap();
                bytes[at] ^= 1;
                info["statement"] = Value::String(to_hex(&bytes));
            }
            Mode::OtherKey => {
                let bytes = from_hex(info["statement"].as_str().unwrap(), 4096).unwrap();
                let mut s = Statement::decode(&bytes).unwrap();
                s.key = e.key.public();
                info["statement"] = Value::String(to_hex(&s.sign(&e.key)));
            }
            Mode::NoRotations => {
                info.as_object_mut().unwrap().remove("key_rotations");
            }
            _ => {}
        }
        return (status, json_answer(serde_json::to_vec(&info).unwrap())).into_response();
    }
    let (status, headers, body) = fetch(&e, &pq, &parts.headers).await;
    let body = match (&mode, path.as_str()) {
        (Mode::TamperedInfo, "/api/v1/index") if status == StatusCode::OK => {
            let (mut idx, _) = hummel_core::index::decode(&body).unwrap();
            for set in &mut idx.info.sets {
                if let Some(server) = &mut set.server {
                    server.address = "evil.example.org".into();
                }
            }
            hummel_core::index::encode(&idx)
        }
        (Mode::BadSubtree, "/api/v1/index") if q("path").is_some() && q("since").is_none() => {
            let (mut idx, _) = hummel_core::index::decode(&body).unwrap();
            let f = idx
                .entries
                .iter_mut()
                .find_map(|e| match &mut e.kind {
                    hummel_core::EntryKind::File(f) => Some(f),
                    _ => None,
                })
                .unwrap();
            f.mtime_ns += 1_000_000_000;
            hummel_core::index::encode(&idx)
        }
        (Mode::BadDelta, "/api/v1/index") if hummel_core::delta::is_delta(&body) => {
            let mut d = hummel_core::delta::decode_delta(&body).unwrap();
            // A careful liar: the delta's own digest fits the changed result.
            let mut base_q = format!("/api/v1/index?revision={}", d.base_revision);
            if let Some(p) = q("path") {
                base_q.push_str(&format!("&path={p}"));
            }
            let (_, _, base) = fetch(&e, &base_q, &parts.headers).await;
            let (base, _) = hummel_core::index::decode(&base).unwrap();
            let mut rebuilt = d.apply(&base).unwrap();
            let bend = |e: &mut hummel_core::Entry| match &mut e.kind {
                hummel_core::EntryKind::File(f) => {
                    f.mode ^= 0o111;
                    true
                }
                _ => false,
            };
            let changed = d
                .upserted
                .iter_mut()
                .find_map(|e| bend(e).then(|| e.path.clone()))
                .expect("the delta changes a file");
            rebuilt
                .entries
                .iter_mut()
                .filter(|e| e.path == changed)
                .for_each(|e| {
                    bend(e);
                });
            d.entries_digest = hummel_core::delta::entries_digest(&rebuilt);
            hummel_core::delta::encode_delta(&d)
        }
        (Mode::BadDelta, "/api/v1/index") if status == StatusCode::OK => {
            let (mut idx, _) = hummel_core::index::decode(&body).unwrap();
            for e in &mut idx.entries {
                if let hummel_core::EntryKind::File(f) = &mut e.kind
                    && e.path.as_str().ends_with("mod.cpp")
                {
                    f.mode ^= 0o111;
                }
            }
            hummel_core::index::encode(&idx)
        }
        _ => body,
    };
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    for (k, v) in &headers {
        if !["content-length", "transfer-encoding", "connection"].contains(&k.as_str()) {
            out.headers_mut().insert(k, v.clone());
        }
    }
    out
}

fn json_answer(body: Vec<u8>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Runs `cmd` (30 s at most), sampling its peak resident memory (`VmHWM`) while it runs.
/// Returns its output, the peak in kB, and how long it took.
fn run_sampled(mut cmd: Command) -> (std::process::Output, u64, Duration) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let child = cmd.spawn().unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let peak = Arc::new(Mutex::new(0u64));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(text) = std::fs::read_to_string(&status_path)
                    && let Some(kb) = text
                        .lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    let mut p = peak.lock().unwrap();
                    *p = (*p).max(kb);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let waited = std::thread::spawn(move || child.wait_with_output().unwrap());
    let deadline = Duration::from_secs(30);
    while !waited.is_finished() {
        assert!(
            start.elapsed() < deadline,
            "the client ran longer than {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = waited.join().unwrap();
    let took = start.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    sampler.join().unwrap();
    let peak = *peak.lock().unwrap();
    (out, peak, took)
}

/// Runs a sync that must be refused: one error line containing `why`, DEST (and its state,
/// the pin included) untouched, within 30 s and 200 MB. Returns its stderr.
fn refused(cmd: Command, dest: &Path, why: &str) -> String {
    let before = digest(dest);
    let state_before = std::fs::read(dest.join(".hummel/state")).ok();
    let desc = format!("{cmd:?}");
    let (out, peak_kb, took) = run_sampled(cmd);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected a refusal: {desc}\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "one error line from {desc}:\n{err}");
    assert!(lines[0].contains(why), "{desc}: expected {why:?} in\n{err}");
    assert_eq!(digest(dest), before, "DEST changed: {desc}");
    assert_eq!(
        std::fs::read(dest.join(".hummel/state")).ok(),
        state_before,
        "the state changed: {desc}"
    );
    assert!(peak_kb < 200 << 10, "{desc}: peak {peak_kb} kB");
    eprintln!("refused in {took:?}, peak {peak_kb} kB: {}", lines[0]);
    err
}

/// `hummel sync URL DEST --json ARGS` that must succeed: the summary and stderr.
fn synced(c: &Cluster, url: &str, dest: &Path, args: &[&str]) -> (Value, String) {
    let mut cmd = c.hummel();
    cmd.args(["sync", url]).arg(dest).arg("--json").args(args);
    let desc = format!("{cmd:?}");
    let out = run(cmd);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{desc} failed:\n{err}");
    let v = serde_json::from_slice(&out.stdout).unwrap();
    (v, err)
}

fn sync_to(c: &Cluster, url: &str, dest: &Path, args: &[&str]) -> Command {
    let mut cmd = c.hummel();
    cmd.args(["sync", url]).arg(dest).args(args);
    cmd
}

fn fingerprint(c: &Cluster) -> String {
    c.status()["signing"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The key is made on first start (owner-only), shown at start, in status (text and JSON)
/// and on the dashboard; a client pins it on first contact and says so, keeps it, and
/// `--trust` with another key is refused while the right one is accepted.
#[test]
fn the_key_is_shown_pinned_on_first_contact_and_trust_is_checked() {
    let c = Cluster::start(0, fill_modset);
    c.build();
    let fp = fingerprint(&c);
    assert_eq!(fp.len(), 64);
    assert!(
        c.master
            .log_text()
            .contains(&format!("signing key fingerprint {fp}")),
        "{}",
        c.master.log_text()
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(c.path("master/signing/key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let mut status = c.hummel();
    status.args(["status", "--master", &c.master.url]);
    assert!(ok(status).contains(&format!("signing key {fp}")));
    assert!(get_text(&format!("{}/", c.master.url)).contains(&fp));

    let dest = c.path("dest");
    let (r, err) = synced(&c, &c.master.url, &dest, &[]);
    assert_eq!(r["signing_key"], fp.as_str(), "{r}");
    assert_eq!(r["signing_key_trust"], "first_contact", "{r}");
    assert!(
        err.contains(&format!(
            "trusting the master's signing key {fp} on first contact"
        )),
        "{err}"
    );
    assert_same_tree(&c.repo, &dest);
    let (r, err) = synced(&c, &c.master.url, &dest, &[]);
    assert_eq!(r["signing_key_trust"], "pinned", "{r}");
    assert!(!err.contains("first contact"), "{err}");

    // --trust with another key: refused, on a pinned DEST and a fresh one alike.
    let other = KeyPair::from_secret(&[9; 32]).public().to_string();
    refused(
        sync_to(&c, &c.master.url, &dest, &["--trust", &other]),
        &dest,
        "not by the one given with --trust",
    );
    let fresh = c.path("fresh");
    let mut by_env = sync_to(&c, &c.master.url, &fresh, &[]);
    by_env.env("HUMMEL_TRUST", &other);
    refused(by_env, &fresh, "not by the one given with --trust");
    assert!(!fresh.join(".hummel/state").exists());
    // The right one: accepted, and nothing said about first contact.
    let (r, err) = synced(&c, &c.master.url, &fresh, &["--trust", &fp]);
    assert_eq!(r["signing_key_trust"], "given", "{r}");
    assert!(!err.contains("first contact"), "{err}");
    assert_same_tree(&c.repo, &fresh);
    // A malformed fingerprint is a usage error.
    let out = run(sync_to(&c, &c.master.url, &fresh, &["--trust", "abc"]));
    assert!(!out.status.success());

    // verify checks the same way: with the pin, and refuses another key.
    let mut v = c.hummel();
    v.args(["verify", &c.master.url])
        .arg(&dest)
        .args(["--trust", &other]);
    let out = run(v);
    assert!(!out.status.success());
    let mut v = c.hummel();
    v.args(["verify", &c.master.url]).arg(&dest).arg("--json");
    let v: Value = serde_json::from_str(&ok(v)).unwrap();
    assert_eq!(v["signing_key_trust"], "pinned", "{v}");
}

/// The evil master: an unsigned index, a statement far too large, a statement changed after
/// it was signed, another key, a subtree
/// that does not lead to the signed root, a delta whose result does not: each refused.
#[test]
fn an_evil_master_is_refused_and_dest_untouched() {
    let c = Cluster::start(0, fill_modset);
    c.build();
    let evil = EvilMaster::start(&c.master.url);
    let dest = c.path("dest");
    let sub = c.path("sub");
    let (r, _) = synced(&c, &evil.url, &dest, &[]);
    assert_eq!(r["signing_key_trust"], "first_contact");
    synced(&c, &evil.url, &sub, &["--path", "@mod_a"]);

    evil.set(Mode::Unsigned);
    refused(sync_to(&c, &evil.url, &dest, &[]), &dest, "is not signed");
    // A fresh client too: every master signs, so nothing legitimate is turned away.
    let fresh = c.path("fresh");
    refused(sync_to(&c, &evil.url, &fresh, &[]), &fresh, "is not signed");

    evil.set(Mode::HugeStatement);
    refused(sync_to(&c, &evil.url, &dest, &[]), &dest, "not hex");

    evil.set(Mode::Tampered);
    refused(
        sync_to(&c, &evil.url, &dest, &[]),
        &dest,
        "signature does not verify",
    );

    evil.set(Mode::OtherKey);
    refused(
        sync_to(&c, &evil.url, &dest, &[]),
        &dest,
        "signed by another key",
    );
    refused(
        sync_to(&c, &evil.url, &fresh, &["--trust", &fingerprint(&c)]),
        &fresh,
        "not by the one given with --trust",
    );

    evil.set(Mode::BadSubtree);
    let sub2 = c.path("sub2");
    refused(
        sync_to(&c, &evil.url, &sub2, &["--path", "@mod_a"]),
        &sub2,
        "is not what the master signed",
    );

    // A new revision changes @mod_a; the delta to it is bent.
    write(&c.repo, "@mod_a/mod.cpp", b"name = \"A2\";\n");
    c.build();
    evil.set(Mode::BadDelta);
    let err = refused(
        sync_to(&c, &evil.url, &sub, &["--path", "@mod_a"]),
        &sub,
        "is not what the master signed",
    );
    // The delta rebuilt (its own digest fits) but not to the signed tree; the whole index
    // asked for then is bent as well.
    assert!(err.contains("the index delta was refused"), "{err}");

    // Honest again: the same folders sync.
    evil.set(Mode::Pass);
    let (r, _) = synced(&c, &evil.url, &sub, &["--path", "@mod_a"]);
    assert_eq!(r["signing_key_trust"], "pinned");
    assert_same_tree(&c.repo.join("@mod_a"), &sub);
    synced(&c, &evil.url, &dest, &[]);
    assert_same_tree(&c.repo, &dest);
}

/// The info section (name, description, sets) is signed with the revision: an evil master
/// that changes it in the index is refused, for a set, a whole tree and a subtree alike.
#[test]
fn a_tampered_info_section_is_refused() {
    let admin = tempfile::tempdir().unwrap();
    let sets = admin.path().join("sets.toml");
    std::fs::write(
        &sets,
        "[[set]]\nname = \"ops\"\nmods = [\"@mod_a\", \"@big\"]\n[set.server]\n\
         address = \"play.example.org\"\nport = 2302\n",
    )
    .unwrap();
    let sets_arg = sets.display().to_string();
    let c = Cluster::start_with(0, fill_modset, &["--name", "Sunday", "--sets", &sets_arg]);
    c.build();
    let evil = EvilMaster::start(&c.master.url);
    let dest = c.path("dest");
    synced(&c, &evil.url, &dest, &["--set", "ops"]);
    assert_same_tree(&c.repo.join("@mod_a"), &dest.join("@mod_a"));

    // A new revision (a changed file), then the lie.
    write(&c.repo, "@mod_a/mod.cpp", b"name = \"A2\";\n");
    c.build();
    evil.set(Mode::TamperedInfo);
    for (folder, args) in [
        (&dest, &["--set", "ops"][..]),
        (&c.path("whole"), &[][..]),
        (&c.path("sub"), &["--path", "@mod_a"][..]),
    ] {
        refused(
            sync_to(&c, &evil.url, folder, args),
            folder,
            "is not what the master signed",
        );
    }
    evil.set(Mode::Pass);
    synced(&c, &evil.url, &dest, &["--set", "ops"]);
    assert_same_tree(&c.repo.join("@mod_a"), &dest.join("@mod_a"));
}

/// A replayed older signed revision and an expired statement: refused. While it runs, the
/// master signs again before its statements run out.
#[test]
fn replayed_and_expired_statements_are_refused() {
    // Long enough for a build and a sync while the first statement holds, short enough to
    // wait for.
    let c = Cluster::start_with(0, fill_modset, &["--signature-expiry", "15s"]);
    c.build();
    let evil = EvilMaster::start(&c.master.url);
    let revision_body = || get_text(&format!("{}/api/v1/revision", c.master.url)).into_bytes();
    let statement_of = |body: &[u8]| {
        let v: Value = serde_json::from_slice(body).unwrap();
        Statement::decode(&from_hex(v["statement"].as_str().unwrap(), 4096).unwrap()).unwrap()
    };
    let old = revision_body();
    let old_statement = statement_of(&old);
    assert_eq!(old_statement.expires_unix - old_statement.signed_unix, 15);

    write(&c.repo, "top.txt", b"revision two\n");
    c.build();
    let dest = c.path("dest");
    synced(&c, &evil.url, &dest, &[]);
    // The first revision, signed and still valid: older than what DEST holds.
    assert!(
        now_unix() < old_statement.expires_unix,
        "the test machine is too slow"
    );
    evil.set(Mode::ReplayRevision(old.clone()));
    refused(sync_to(&c, &evil.url, &dest, &[]), &dest, "older");

    // Expired: the recorded answer of the current revision, replayed once it ran out.
    let current = revision_body();
    let recorded = statement_of(&current);
    let expires = recorded.expires_unix;
    wait_for("the recorded statement to expire", || now_unix() >= expires);
    evil.set(Mode::ReplayRevision(current));
    refused(sync_to(&c, &evil.url, &dest, &[]), &dest, "expired");
    let fresh = c.path("fresh");
    refused(sync_to(&c, &evil.url, &fresh, &[]), &fresh, "expired");

    // The master itself signed again meanwhile: its statement is valid, and syncs work.
    let now = statement_of(&revision_body());
    assert!(now.expires_unix > now_unix(), "{now:?}");
    assert!(now.signed_unix > recorded.signed_unix, "{now:?}");
    evil.set(Mode::Pass);
    synced(&c, &evil.url, &dest, &[]);
    assert_same_tree(&c.repo, &dest);
}

/// `--rotate-key`: the old key signs the handover; a client pinned on the old key follows it
/// (and says so) and pins the new one; `--trust OLD` is followed too; without the published
/// rotation the new key is refused.
#[test]
fn a_rotated_key_is_followed_from_the_pinned_one() {
    let mut c = Cluster::start(0, fill_modset);
    c.build();
    let old = fingerprint(&c);
    let dest = c.path("dest");
    synced(&c, &c.master.url, &dest, &[]);

    c.master.kill9();
    c.master = start_master(c.dir.path(), &c.repo, &["--rotate-key"], 0);
    let new = fingerprint(&c);
    assert_ne!(new, old);
    assert!(c.master.log_text().contains("rotated the signing key"));
    assert!(!c.path("master/signing/key.next").exists());
    assert_eq!(c.status()["signing"]["rotations"], 1);

    // Through an evil master that hides the rotation: the new key is refused.
    let evil = EvilMaster::start(&c.master.url);
    evil.set(Mode::NoRotations);
    refused(
        sync_to(&c, &evil.url, &dest, &[]),
        &dest,
        "no key rotation from it is published",
    );

    let (r, err) = synced(&c, &c.master.url, &dest, &[]);
    assert_eq!(r["signing_key"], new.as_str(), "{r}");
    assert_eq!(r["signing_key_trust"], "rotated", "{r}");
    assert!(err.contains("signing key was rotated"), "{err}");
    let (r, _) = synced(&c, &c.master.url, &dest, &[]);
    assert_eq!(r["signing_key_trust"], "pinned", "{r}");
    // The old key, given by hand to a fresh folder, leads to the new one as well.
    let fresh = c.path("fresh");
    let (r, _) = synced(&c, &c.master.url, &fresh, &["--trust", &old]);
    assert_eq!(r["signing_key_trust"], "rotated", "{r}");
    assert_same_tree(&c.repo, &fresh);
    // Pinned on the new key from then on.
    evil.set(Mode::Pass);
    let (r, _) = synced(&c, &evil.url, &fresh, &[]);
    assert_eq!(r["signing_key_trust"], "pinned", "{r}");
}
