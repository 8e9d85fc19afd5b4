//! Evil slaves (issue 10): a slave cannot speak for another, and one that lies is caught.
//!
//! The evil slave is a real HTTP server written here (raw HTTP/1.1 over tokio, so it can send
//! what no well-behaved server would) that enrolls, announces and heartbeats like a slave,
//! signing with its own key. It serves the master's own pack files, honestly until the test
//! turns it evil: wrong bytes, extra bytes, an endless body, a zstd bomb, a stall, a wrong
//! `Content-Length`. For each: a client that can only reach the liar fails in one line with
//! DEST untouched, its memory and time bounded; its report has the master probe the liar,
//! which then sends no client there and says why in status; an honest slave that joins serves
//! the next sync.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use hummel_proto::identity::SlaveKey;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::util::*;

/// What the evil slave does with a request for pack bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    Honest = 0,
    WrongBytes = 1,
    ExtraBytes = 2,
    EndlessBody = 3,
    ZstdBomb = 4,
    Stall = 5,
    WrongContentLength = 6,
}

impl Mode {
    fn from_u8(v: u8) -> Mode {
        match v {
            1 => Mode::WrongBytes,
            2 => Mode::ExtraBytes,
            3 => Mode::EndlessBody,
            4 => Mode::ZstdBomb,
            5 => Mode::Stall,
            6 => Mode::WrongContentLength,
            _ => Mode::Honest,
        }
    }
}

struct Shared {
    mode: AtomicU8,
    /// Pack hash (hex) → its file in the master's store (read only).
    packs: HashMap<String, PathBuf>,
    bomb: &'static [u8],
}

/// A slave written by the test: its own key, its own HTTP server.
struct EvilSlave {
    url: String,
    master: String,
    key: SlaveKey,
    shared: Arc<Shared>,
    nonce: Arc<std::sync::atomic::AtomicU64>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for EvilSlave {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A zstd frame of 1 GiB of zeros (tens of kB), made once for all tests.
fn zstd_bomb() -> &'static [u8] {
    static BOMB: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BOMB.get_or_init(|| {
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            enc.write_all(&zeros).unwrap();
        }
        enc.finish().unwrap()
    })
}

impl EvilSlave {
    /// Starts serving the packs of `store` (honestly, for now) and announces them all to the
    /// master as slave `evil`, heartbeating every 200 ms from then on.
    fn start(master: &str, store: &Path) -> EvilSlave {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let packs = pack_files(store)
            .into_iter()
            .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), p))
            .collect();
        let shared = Arc::new(Shared {
            mode: AtomicU8::new(Mode::Honest as u8),
            packs,
            bomb: zstd_bomb(),
        });
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let serving = shared.clone();
        rt.spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(answer(sock, serving.clone()));
            }
        });
        let evil = EvilSlave {
            url,
            master: master.to_string(),
            key: SlaveKey::from_secret([0xe5; 32]),
            shared,
            nonce: Arc::new(std::sync::atomic::AtomicU64::new(1)),
            rt: Some(rt),
        };
        let packs: Vec<&String> = evil.shared.packs.keys().collect();
        let (status, body) = evil.post_as(
            "evil",
            "/slave/hashlist",
            &json!({"slave_id": "evil", "url": evil.url, "quota": null, "used": 0,
                "packs": packs}),
        );
        assert_eq!(status, 200, "the evil slave's hashlist: {body}");
        // Heartbeats keep it live.
        let (http, master, key, nonce) = (
            http(),
            evil.master.clone(),
            evil.key.clone(),
            evil.nonce.clone(),
        );
        let count = evil.shared.packs.len();
        evil.rt().spawn(async move {
            loop {
                let body = serde_json::to_vec(&json!({"slave_id": "evil", "used": 0,
                    "packs": count, "replicating": 0, "corrupt": []}))
                .unwrap();
                let n = nonce.fetch_add(1, Ordering::Relaxed);
                let mut req = http
                    .post(format!("{master}/slave/heartbeat"))
                    .header("X-HUMMEL-TOKEN", SLAVE)
                    .header("content-type", "application/json");
                for (name, value) in key.sign_request("POST", "/slave/heartbeat", "evil", n, &body)
                {
                    req = req.header(name, value);
                }
                let _ = req.body(body).send().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        evil
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().unwrap()
    }

    fn set(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// POSTs `body` to the master's `path` with the slave token, signed with this slave's key
    /// as slave `id`; the status and body.
    fn post_as(&self, id: &str, path: &str, body: &Value) -> (u16, String) {
        let bytes = serde_json::to_vec(body).unwrap();
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
        let headers = self.key.sign_request("POST", path, id, nonce, &bytes);
        self.send(path, bytes, &headers)
    }

    fn send(&self, path: &str, body: Vec<u8>, headers: &[(&'static str, String)]) -> (u16, String) {
        let url = format!("{}{path}", self.master);
        self.rt().block_on(async {
            let mut req = http()
                .post(url)
                .header("X-HUMMEL-TOKEN", SLAVE)
                .header("content-type", "application/json");
            for (name, value) in headers {
                req = req.header(*name, value);
            }
            let resp = req.body(body).send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        })
    }
}

/// Answers one request on `sock` (then closes it) as the current mode says.
async fn answer(mut sock: TcpStream, shared: Arc<Shared>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 16 << 10 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/")
        .to_string();
    let range = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("range") {
            return None;
        }
        let (a, b) = value.trim().strip_prefix("bytes=")?.split_once('-')?;
        Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
    });
    let Some(file) = path
        .strip_prefix("/blob/")
        .and_then(|h| shared.packs.get(h))
    else {
        let body = if path == "/health" { "{}" } else { "" };
        let status = if path == "/health" {
            "200 OK"
        } else {
            "404 Not Found"
        };
        let _ = sock
            .write_all(
                format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
        return;
    };
    let pack = std::fs::read(file).unwrap();
    let size = pack.len() as u64;
    let (start, end) = range.unwrap_or((0, size - 1));
    let end = end.min(size - 1);
    let slice = &pack[start as usize..=end as usize];
    let len = slice.len();
    let head = |content_length: Option<usize>| {
        let cl = content_length.map_or(String::new(), |n| format!("Content-Length: {n}\r\n"));
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Type: application/octet-stream\r\n\
             Content-Range: bytes {start}-{end}/{size}\r\n{cl}Connection: close\r\n\r\n"
        )
    };
    let mode = Mode::from_u8(shared.mode.load(Ordering::Relaxed));
    let _ = async {
        match mode {
            Mode::Honest => {
                sock.write_all(head(Some(len)).as_bytes()).await?;
                sock.write_all(slice).await?;
            }
            Mode::WrongBytes => {
                sock.write_all(head(Some(len)).as_bytes()).await?;
                let wrong: Vec<u8> = slice.iter().map(|b| b ^ 0x55).collect();
                sock.write_all(&wrong).await?;
            }
            Mode::ExtraBytes => {
                // No Content-Length: the body ends when the connection closes, 64 KiB late.
                sock.write_all(head(None).as_bytes()).await?;
                sock.write_all(slice).await?;
                sock.write_all(&vec![0xaa; 64 << 10]).await?;
            }
            Mode::EndlessBody => {
                sock.write_all(head(None).as_bytes()).await?;
                sock.write_all(slice).await?;
                let junk = vec![0u8; 64 << 10];
                loop {
                    sock.write_all(&junk).await?;
                }
            }
            Mode::ZstdBomb => {
                // Exactly the length asked for, every chunk frame a prefix of the bomb.
                sock.write_all(head(Some(len)).as_bytes()).await?;
                let body: Vec<u8> = shared.bomb.iter().copied().cycle().take(len).collect();
                sock.write_all(&body).await?;
            }
            Mode::Stall => {
                sock.write_all(head(Some(len)).as_bytes()).await?;
                sock.write_all(&slice[..len / 2]).await?;
                sock.flush().await?;
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Mode::WrongContentLength => {
                sock.write_all(head(Some(len + 1000)).as_bytes()).await?;
                sock.write_all(slice).await?;
            }
        }
        sock.flush().await?;
        sock.shutdown().await
    }
    .await;
}

/// The status entry of slave `id`.
fn slave_status(c: &Cluster, id: &str) -> Option<Value> {
    c.status()["slaves"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
}

/// Waits until every claim of slave `id` is verified and clients are sent there.
fn wait_verified(c: &Cluster, id: &str) {
    wait_for(&format!("slave {id} to be verified"), || {
        slave_status(c, id).is_some_and(|s| {
            s["state"] == "live"
                && s["withheld"].is_null()
                && s["packs"].as_u64().unwrap_or(0) > 0
                && s["verified"] == s["packs"]
        })
    });
}

/// Peak resident memory of a process so far (`VmHWM`, KiB); 0 once it is gone.
fn peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Runs `cmd` to completion (at most `limit`), sampling its peak memory; the output, the time
/// it took and the highest peak seen (KiB).
fn run_measured(mut cmd: Command, limit: Duration) -> (Output, Duration, u64) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut v);
        v
    });
    let mut peak = 0;
    let status = loop {
        peak = peak.max(peak_kib(child.id()));
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the sync took over {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    let output = Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    };
    (output, took, peak)
}

/// The client's memory bar against a liar: far below what the lie could cost (a 1 GiB bomb,
/// an endless body), with room for a debug build.
const CLIENT_PEAK_BAR_KIB: u64 = 200 << 10;

/// The whole story for one kind of lie (see the module doc).
fn a_lying_slave_is_survived_and_caught(mode: Mode, time_bar: Duration) {
    // The master never serves clients itself here: the liar is all they can reach.
    let mut c = Cluster::start_with(
        0,
        fill_modset,
        &["--fallback-limit", "0", "--replication", "1"],
    );
    c.build();
    let evil = EvilSlave::start(&c.master.url, &c.path("master/store"));
    wait_verified(&c, "evil");
    evil.set(mode);

    // A client that can reach only the liar: one line, DEST untouched, bounded.
    let dest = c.path("dest");
    write(&dest, "my-own.txt", b"a player's file\n");
    let before = digest(&dest);
    let (out, took, peak) =
        run_measured(c.sync_cmd(&dest, &[]), time_bar + Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "{mode:?}: the sync succeeded from a liar"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{mode:?}: {err}"
    );
    assert!(
        err.contains("no slave could serve verified data"),
        "{mode:?}: {err}"
    );
    assert_eq!(digest(&dest), before, "{mode:?}: DEST changed");
    assert!(took < time_bar, "{mode:?}: the sync took {took:?}");
    assert!(
        peak < CLIENT_PEAK_BAR_KIB,
        "{mode:?}: the client's peak RSS was {peak} KiB"
    );
    eprintln!("{mode:?}: the client failed in {took:?}, peak RSS {peak} KiB");

    // Its report has the master probe the liar: withheld, and status says why.
    wait_for("the master to catch the liar", || {
        slave_status(&c, "evil").is_some_and(|s| {
            s["withheld"]
                .as_str()
                .is_some_and(|w| w.contains("failed a probe"))
        })
    });
    let why = slave_status(&c, "evil").unwrap()["withheld"].clone();
    eprintln!("{mode:?}: status says {why}");
    let mut status = c.hummel();
    status.args(["status", "--master", &c.master.url]);
    let text = ok(status);
    assert!(text.contains("no clients sent: failed a probe"), "{text}");

    // An honest slave joins (the liar gets no packs placed): the next sync takes it from there.
    let honest = c.add_slave(&[]);
    let honest_id = wait_for_id(&c, &c.slaves[honest].url.clone());
    wait_verified(&c, &honest_id);
    let summary = c.sync(&dest, &[]);
    assert_same_tree_but(&c.repo, &dest, "my-own.txt");
    assert!(
        summary["bytes_by_slave"].get("evil").is_none(),
        "{mode:?}: {summary:#}"
    );
    assert!(
        slave_status(&c, "evil").unwrap()["withheld"].is_string(),
        "the liar is still withheld"
    );
    drop(evil);
}

/// The id of the slave at `url`, once it announced.
fn wait_for_id(c: &Cluster, url: &str) -> String {
    let mut id = String::new();
    wait_for("the slave to announce", || {
        let st = c.status();
        match st["slaves"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["url"] == url)
        {
            Some(s) => {
                id = s["id"].as_str().unwrap().to_string();
                true
            }
            None => false,
        }
    });
    id
}

/// [`assert_same_tree`], with `extra` in `b` only (a file of the user's, which Hummel leaves).
fn assert_same_tree_but(a: &Path, b: &Path, extra: &str) {
    let mut want = digest(a);
    let got = digest(b);
    want.insert(
        extra.to_string(),
        got.get(extra).cloned().unwrap_or_default(),
    );
    assert!(got.contains_key(extra), "{extra} was removed");
    assert_eq!(got, want, "the trees differ");
}

#[test]
fn a_slave_serving_wrong_bytes_is_survived_and_caught() {
    a_lying_slave_is_survived_and_caught(Mode::WrongBytes, Duration::from_secs(20));
}

#[test]
fn a_slave_sending_extra_bytes_is_survived_and_caught() {
    a_lying_slave_is_survived_and_caught(Mode::ExtraBytes, Duration::from_secs(20));
}

#[test]
fn a_slave_sending_an_endless_body_is_survived_and_caught() {
    a_lying_slave_is_survived_and_caught(Mode::EndlessBody, Duration::from_secs(20));
}

#[test]
fn a_slave_sending_a_zstd_bomb_is_survived_and_caught() {
    a_lying_slave_is_survived_and_caught(Mode::ZstdBomb, Duration::from_secs(20));
}

#[test]
fn a_slave_that_stalls_is_survived_and_caught() {
    // The client gives a silent source 30 s (its stall timeout).
    a_lying_slave_is_survived_and_caught(Mode::Stall, Duration::from_secs(50));
}

#[test]
fn a_slave_with_a_wrong_content_length_is_survived_and_caught() {
    a_lying_slave_is_survived_and_caught(Mode::WrongContentLength, Duration::from_secs(20));
}

/// A slave (it holds the slave token) cannot change another's URL or claims, nor replace its
/// key; a copied slave id without its key stops at start; the admin can remove a slave.
#[test]
fn a_slave_cannot_speak_for_another() {
    let c = Cluster::start(1, fill_modset);
    c.build();
    c.wait_replicated();
    let honest = c.status()["slaves"][0].clone();
    let (id, url) = (
        honest["id"].as_str().unwrap().to_string(),
        honest["url"].as_str().unwrap().to_string(),
    );
    assert!(honest["key"].is_string(), "{honest}");
    let evil = EvilSlave::start(&c.master.url, &c.path("master/store"));
    let every: Vec<String> = pack_files(&c.path("master/store"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();

    // Its URL, its claims (an empty hashlist; every pack "corrupt"), its liveness: refused.
    for body in [
        json!({"slave_id": id, "url": evil.url, "quota": null, "used": 0, "packs": every}),
        json!({"slave_id": id, "url": evil.url, "quota": null, "used": 0, "packs": []}),
    ] {
        let (s, text) = evil.post_as(&id, "/slave/hashlist", &body);
        assert_eq!(s, 403, "{text}");
        assert!(text.contains("slave_identity_mismatch"), "{text}");
    }
    let (s, text) = evil.post_as(
        &id,
        "/slave/heartbeat",
        &json!({"slave_id": id, "used": 0, "packs": 0, "replicating": 0, "corrupt": every}),
    );
    assert_eq!(s, 403, "{text}");
    // Without a signature, or signed for another body: refused before anything is looked at.
    let body = json!({"slave_id": id, "url": evil.url, "quota": null, "used": 0, "packs": []});
    let (s, text) = evil.send("/slave/hashlist", serde_json::to_vec(&body).unwrap(), &[]);
    assert_eq!(s, 401, "{text}");
    assert!(text.contains("slave_signature_missing"), "{text}");
    let headers = evil
        .key
        .sign_request("POST", "/slave/hashlist", &id, 1 << 50, b"{}");
    let (s, text) = evil.send(
        "/slave/hashlist",
        serde_json::to_vec(&body).unwrap(),
        &headers,
    );
    assert_eq!(s, 403, "{text}");
    assert!(text.contains("slave_signature_invalid"), "{text}");

    // Nothing of the honest slave changed; clients are still sent there, at its URL.
    let now = slave_status(&c, &id).unwrap();
    assert_eq!(now["url"], url.as_str());
    assert_eq!(now["packs"], honest["packs"]);
    assert_eq!(now["key"], honest["key"]);
    assert!(now["withheld"].is_null(), "{now}");
    let packs: Vec<u64> = (1..=c.status()["replication"]["packs"].as_u64().unwrap()).collect();
    let located: Value = evil.rt().block_on(async {
        http()
            .post(format!("{}/api/v1/locate", c.master.url))
            .json(&json!({ "packs": packs }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert!(
        located["slaves"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == id.as_str() && s["url"] == url.as_str()),
        "{located:#}"
    );
    let dest = c.path("dest");
    c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);

    // Its id copied into another data folder, without its key: that slave stops, saying why.
    let clone = c.path("clone");
    std::fs::create_dir_all(&clone).unwrap();
    std::fs::copy(c.path("slave0/slave-id"), clone.join("slave-id")).unwrap();
    let mut cmd = c.hummel();
    cmd.args(["slave", "--master", &c.master.url, "--data"])
        .arg(&clone)
        .args(["--listen", "127.0.0.1:0"])
        .env("HUMMEL_SLAVE_TOKEN", SLAVE);
    let err = fails(cmd);
    assert!(err.contains("another key"), "{err}");
    assert_eq!(slave_status(&c, &id).unwrap()["url"], url.as_str());

    // The admin removes the evil slave: gone from status (its heartbeats now go unanswered).
    let mut cmd = c.hummel();
    cmd.args(["remove-slave", "evil", "--master", &c.master.url])
        .env("HUMMEL_WRITE_TOKEN", WRITE);
    ok(cmd);
    assert!(slave_status(&c, "evil").is_none());
    let mut cmd = c.hummel();
    cmd.args(["remove-slave", "evil", "--master", &c.master.url])
        .env("HUMMEL_WRITE_TOKEN", WRITE);
    let err = fails(cmd);
    assert!(err.contains("no slave"), "{err}");
    let log = c.master.log_text();
    assert!(
        log.contains("refused a request signed by another key"),
        "{log}"
    );
}
