//! A master under a fleet's load: how long clients' `locate` and slaves' heartbeats take while
//! many slaves heartbeat every second.
//!
//! Run with (the numbers of `BENCHMARKS.md`, section "Master under a fleet's load"):
//!
//! ```sh
//! cargo build --release -p hummel --bin hummel --example fleet_load
//! target/release/examples/fleet_load --hummel target/release/hummel
//! ```
//!
//! What it does, all on 127.0.0.1:
//! 1. writes a repository of `--packs` small files of random bytes into a temporary folder and
//!    starts a real `hummel master` on it (port 0, heartbeats every second, no rate limit,
//!    the hidden `--pack-target 1`, so each file's one chunk is a pack of its own: the pack
//!    table of a large set without its bytes);
//! 2. starts `--slaves` lightweight fake slaves, each with an Ed25519 identity of its own
//!    (`hummel_proto::identity`): each enrolls with a signed complete hashlist claiming its
//!    share of the packs (each pack on `--replication` slaves), then heartbeats every second,
//!    signed, reporting as fetched the packs its last directive assigned (and dropping what it
//!    was told to drop) as incremental hashlist changes. Their packs are served, for the
//!    master's probes, by one small HTTP server reading the master's own store;
//! 3. after `--warmup` seconds, one client calls `POST /api/v1/locate` for every pack of the
//!    revision, back to back with a 10 ms pause, for `--seconds` seconds, while the slaves go on.
//!
//! It prints p50/p99/max of the locate and heartbeat latencies of the measured window, and one
//! JSON line with the same figures.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hummel_core::{Hash, PackInfo};
use hummel_proto::api::{
    self, HashlistChanges, Heartbeat, RevisionInfo, SlaveDirective, SlaveHashlist,
};
use hummel_proto::auth::TOKEN_HEADER;
use hummel_proto::identity::SlaveKey;
use tokio::sync::Mutex;

const SLAVE_TOKEN: &str = "fleet-load-slave-token";
const WRITE_TOKEN: &str = "fleet-load-write-token";

/// The harness's settings, from the command line.
struct Settings {
    hummel: PathBuf,
    slaves: usize,
    packs: usize,
    replication: usize,
    warmup: Duration,
    seconds: Duration,
}

impl Settings {
    fn parse() -> Result<Settings> {
        let mut s = Settings {
            hummel: PathBuf::from("target/release/hummel"),
            slaves: 50,
            packs: 400,
            replication: 2,
            warmup: Duration::from_secs(10),
            seconds: Duration::from_secs(30),
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            let number = || {
                value
                    .parse::<u64>()
                    .with_context(|| format!("{flag} {value}"))
            };
            match flag.as_str() {
                "--hummel" => s.hummel = PathBuf::from(&value),
                "--slaves" => s.slaves = number()? as usize,
                "--packs" => s.packs = number()? as usize,
                "--replication" => s.replication = number()? as usize,
                "--warmup" => s.warmup = Duration::from_secs(number()?),
                "--seconds" => s.seconds = Duration::from_secs(number()?),
                _ => bail!(
                    "unknown flag {flag} (--hummel PATH --slaves N --packs N --replication N \
                     --warmup S --seconds S)"
                ),
            }
        }
        if s.slaves == 0 || s.packs == 0 || s.replication == 0 {
            bail!("--slaves, --packs and --replication must be at least 1");
        }
        Ok(s)
    }
}

/// Latencies in microseconds, kept while `recording` is set.
#[derive(Default)]
struct Samples {
    micros: std::sync::Mutex<Vec<u64>>,
    errors: AtomicU64,
}

impl Samples {
    fn add(&self, took: Duration) {
        self.micros
            .lock()
            .unwrap()
            .push(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }

    /// (count, p50, p99, max) in milliseconds.
    fn summary(&self) -> (usize, f64, f64, f64) {
        let mut v = self.micros.lock().unwrap().clone();
        v.sort_unstable();
        if v.is_empty() {
            return (0, 0.0, 0.0, 0.0);
        }
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
        (
            v.len(),
            at(0.5),
            at(0.99),
            *v.last().unwrap() as f64 / 1000.0,
        )
    }
}

/// The master process; killed when dropped.
struct MasterProc(Child);

impl Drop for MasterProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `hummel master` and waits for its `listening on URL` line.
fn start_master(
    s: &Settings,
    repo: &Path,
    data: &Path,
    log: &Path,
) -> Result<(MasterProc, String)> {
    let file = std::fs::File::create(log)?;
    let child = Command::new(&s.hummel)
        .args([
            "master",
            "--listen",
            "127.0.0.1:0",
            "--heartbeat-interval",
            "1s",
        ])
        .args([
            "--rate-limit",
            "0",
            "--build-on-start",
            "--pack-target",
            "1",
        ])
        .args(["--replication", &s.replication.to_string()])
        .arg("--repo")
        .arg(repo)
        .arg("--data")
        .arg(data)
        .env("HUMMEL_SLAVE_TOKEN", SLAVE_TOKEN)
        .env("HUMMEL_WRITE_TOKEN", WRITE_TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .with_context(|| format!("cannot start {}", s.hummel.display()))?;
    let mut proc = MasterProc(child);
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(i) = text.find("listening on http") {
            let rest = &text[i + "listening on ".len()..];
            let url = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            return Ok((proc, url));
        }
        if let Some(status) = proc.0.try_wait()? {
            bail!("the master exited ({status}):\n{text}");
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the master did not start listening:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET /{slave}/blob/{hash}` with a `Range`: the fake slaves' packs, read from the master's
/// store, so that the master's probes verify their claims.
async fn blob(
    State(store): State<Arc<hummel_store::BlobStore>>,
    UrlPath((_slave, hash)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Ok(hash) = hash.parse::<Hash>() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Ok(bytes) = tokio::fs::read(store.path(&hash)).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
    match range {
        Some((start, end)) if start <= end && end < bytes.len() => (
            StatusCode::PARTIAL_CONTENT,
            [(
                header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{}", bytes.len()),
            )],
            bytes[start..=end].to_vec(),
        )
            .into_response(),
        Some(_) => StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
        None => bytes.into_response(),
    }
}

/// One fake slave's view of itself.
struct FakeSlave {
    id: String,
    url: String,
    key: SlaveKey,
    nonce: AtomicU64,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    packs: std::collections::BTreeSet<Hash>,
    version: Option<api::HashlistVersion>,
    /// Changes since `version`, by pack: true = added.
    pending: std::collections::BTreeMap<Hash, bool>,
    next_seq: u64,
    last: Option<SlaveDirective>,
}

impl FakeSlave {
    /// Signs and posts `body` to `path`; the directive.
    async fn post<B: serde::Serialize>(
        &self,
        http: &reqwest::Client,
        master: &str,
        path: &str,
        body: &B,
    ) -> Result<SlaveDirective> {
        let bytes = serde_json::to_vec(body)?;
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
        let mut rb = http
            .post(format!("{master}{path}"))
            .header(TOKEN_HEADER, SLAVE_TOKEN)
            .header(header::CONTENT_TYPE, "application/json")
            .timeout(Duration::from_secs(30));
        for (name, value) in self.key.sign_request("POST", path, &self.id, nonce, &bytes) {
            rb = rb.header(name, value);
        }
        let resp = rb.body(bytes).send().await?;
        let status = resp.status();
        if !status.is_success() {
            bail!(
                "{path}: {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(resp.json().await?)
    }

    async fn enroll(&self, http: &reqwest::Client, master: &str) -> Result<()> {
        let mut held = self.held.lock().await;
        let body = SlaveHashlist {
            slave_id: self.id.clone(),
            url: self.url.clone(),
            quota: None,
            used: 0,
            packs: held.packs.iter().copied().collect(),
            read_token_digest: None,
        };
        let d = self.post(http, master, api::SLAVE_HASHLIST, &body).await?;
        held.version = d.hashlist;
        held.pending.clear();
        held.next_seq = 1;
        held.last = Some(d);
        Ok(())
    }

    /// One heartbeat: the packs assigned last time are reported as fetched, drops as dropped.
    async fn heartbeat(&self, http: &reqwest::Client, master: &str) -> Result<()> {
        let mut held = self.held.lock().await;
        if let Some(d) = held.last.take() {
            for a in d.assign {
                if held.packs.insert(a.pack) {
                    held.pending.insert(a.pack, true);
                }
            }
            for h in d.drop {
                if held.packs.remove(&h) {
                    held.pending.insert(h, false);
                }
            }
        }
        let Some(version) = held.version else {
            drop(held);
            return self.enroll(http, master).await;
        };
        let changes = if held.pending.is_empty() {
            HashlistChanges {
                epoch: version.epoch,
                base: version.seq,
                seq: version.seq,
                added: Vec::new(),
                removed: Vec::new(),
            }
        } else {
            let seq = held.next_seq.max(version.seq + 1);
            held.next_seq = seq + 1;
            HashlistChanges {
                epoch: version.epoch,
                base: version.seq,
                seq,
                added: held
                    .pending
                    .iter()
                    .filter(|(_, a)| **a)
                    .map(|(h, _)| *h)
                    .collect(),
                removed: held
                    .pending
                    .iter()
                    .filter(|(_, a)| !**a)
                    .map(|(h, _)| *h)
                    .collect(),
            }
        };
        let body = Heartbeat {
            slave_id: self.id.clone(),
            used: 0,
            packs: held.packs.len() as u64,
            replicating: 0,
            corrupt: Vec::new(),
            hashlist: Some(changes),
            bytes_served: None,
        };
        let d = self.post(http, master, api::SLAVE_HEARTBEAT, &body).await?;
        if d.hashlist == Some(body.hashlist.as_ref().map_or(version, |c| c.proposed())) {
            held.pending.clear();
        }
        held.version = d.hashlist;
        held.last = Some(d);
        Ok(())
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let s = Settings::parse()?;
    hummel_tls::install_provider();
    let dir = tempfile::tempdir()?;
    let repo = dir.path().join("repo");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&repo)?;
    // One chunk per file (below the chunker's 16 KiB minimum), one pack per chunk.
    for i in 0..s.packs {
        let bytes: Vec<u8> = (0..12 << 10).map(|_| rand::random::<u8>()).collect();
        std::fs::write(repo.join(format!("file-{i:05}.bin")), bytes)?;
    }
    let (_master, master_url) = start_master(&s, &repo, &data, &dir.path().join("master.log"))?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;

    // The built revision and its packs.
    let started = Instant::now();
    let revision = loop {
        let info: RevisionInfo = http
            .get(format!("{master_url}{}", api::REVISION))
            .send()
            .await?
            .json()
            .await?;
        if let Some(n) = info.revision {
            break n;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("no revision after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let encoded = http
        .get(format!("{master_url}{}?revision={revision}", api::INDEX))
        .send()
        .await?
        .bytes()
        .await?;
    let (index, _) = hummel_core::index::decode(&encoded).context("decoding the index")?;
    let packs: Vec<PackInfo> = index.packs.clone();
    let numbers: Vec<u32> = packs.iter().map(|p| p.number).collect();

    // The fake slaves' blob server, reading the master's store.
    let store = Arc::new(hummel_store::BlobStore::open(&data.join("store"))?);
    let app = axum::Router::new()
        .route("/{slave}/blob/{hash}", axum::routing::get(blob))
        .with_state(store);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let blob_base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    // Each pack on `replication` slaves, spread round the fleet.
    let nonce_base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let mut fleet = Vec::new();
    for i in 0..s.slaves {
        let mut held = Held::default();
        for (j, p) in packs.iter().enumerate() {
            if (0..s.replication).any(|k| (j * s.replication + k) % s.slaves == i) {
                held.packs.insert(p.hash);
            }
        }
        fleet.push(Arc::new(FakeSlave {
            id: format!("fake-{i:03}"),
            url: format!("{blob_base}/fake-{i:03}"),
            key: SlaveKey::from_secret(rand::random()),
            nonce: AtomicU64::new(nonce_base),
            held: Mutex::new(held),
        }));
    }
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let heartbeats = Arc::new(Samples::default());
    let mut tasks = Vec::new();
    for (i, slave) in fleet.iter().enumerate() {
        slave.enroll(&http, &master_url).await?;
        let (slave, http, url) = (slave.clone(), http.clone(), master_url.clone());
        let (recording, stop, samples) = (recording.clone(), stop.clone(), heartbeats.clone());
        // Spread over the second, as real slaves' clocks are.
        let offset = Duration::from_millis((i as u64 * 1000) / s.slaves as u64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let t = Instant::now();
                let ok = slave.heartbeat(&http, &url).await;
                if recording.load(Ordering::Relaxed) {
                    match ok {
                        Ok(()) => samples.add(t.elapsed()),
                        Err(e) => {
                            samples.errors.fetch_add(1, Ordering::Relaxed);
                            eprintln!("heartbeat of {}: {e:#}", slave.id);
                        }
                    }
                }
            }
        }));
    }
    eprintln!(
        "{} packs, {} slaves enrolled; warming up {} s, then measuring {} s",
        packs.len(),
        s.slaves,
        s.warmup.as_secs(),
        s.seconds.as_secs()
    );
    tokio::time::sleep(s.warmup).await;

    // The client: locate every pack, again and again.
    let locates = Samples::default();
    let mut listed = 0u64;
    recording.store(true, Ordering::Relaxed);
    let window = Instant::now();
    let body = serde_json::to_vec(&api::LocateRequest {
        packs: numbers.clone(),
    })?;
    while window.elapsed() < s.seconds {
        let t = Instant::now();
        let resp = http
            .post(format!("{master_url}{}", api::LOCATE))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                let answer: api::LocateResponse = r.json().await?;
                locates.add(t.elapsed());
                listed = answer.holders.iter().filter(|h| !h.is_empty()).count() as u64;
            }
            Ok(r) => {
                locates.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("locate: {}", r.status());
            }
            Err(e) => {
                locates.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("locate: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    recording.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let status: api::StatusResponse = http
        .get(format!("{master_url}{}", api::STATUS))
        .send()
        .await?
        .json()
        .await?;
    let verified: u64 = status.slaves.iter().filter_map(|x| x.verified).sum();

    let (ln, l50, l99, lmax) = locates.summary();
    let (hn, h50, h99, hmax) = heartbeats.summary();
    println!(
        "locate ({} packs):   n={ln} p50={l50:.2} ms p99={l99:.2} ms max={lmax:.2} ms errors={}",
        packs.len(),
        locates.errors.load(Ordering::Relaxed)
    );
    println!(
        "heartbeat ({} slaves): n={hn} p50={h50:.2} ms p99={h99:.2} ms max={hmax:.2} ms errors={}",
        s.slaves,
        heartbeats.errors.load(Ordering::Relaxed)
    );
    println!(
        "packs with a holder in the last answer: {listed} of {}; claims verified by probes: \
         {verified}",
        packs.len()
    );
    println!(
        "{}",
        serde_json::json!({
            "slaves": s.slaves, "packs": packs.len(), "seconds": s.seconds.as_secs(),
            "locate": {"n": ln, "p50_ms": l50, "p99_ms": l99, "max_ms": lmax,
                       "errors": locates.errors.load(Ordering::Relaxed)},
            "heartbeat": {"n": hn, "p50_ms": h50, "p99_ms": h99, "max_ms": hmax,
                          "errors": heartbeats.errors.load(Ordering::Relaxed)},
            "listed": listed, "verified": verified,
        })
    );
    Ok(())
}
