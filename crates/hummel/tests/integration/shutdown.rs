//! Graceful shutdown with a deadline: on SIGTERM a server (`serve`, `master`, `slave`) takes no
//! new connection, lets the downloads in flight finish, stops its background work, flushes its
//! state and exits 0; a download that does not finish within the deadline (10 s) is cut off and
//! the process exits anyway, saying so; a second signal stops it at once. Each time the data
//! folder opens again and a sync is exact.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::util::*;

/// The repository: the usual mod set plus one large file, so that a pack is larger than what
/// the kernel's socket buffers hold (a reader that stops reading stops the server's write).
fn fill(root: &Path) {
    fill_modset(root);
    write(root, "@huge/addons/huge.pbo", &data(48 << 20, 7));
}

/// The largest pack below `store` and its hash (its file name).
fn largest_pack(store: &Path) -> (String, u64) {
    pack_files(store)
        .into_iter()
        .map(|p| {
            let len = std::fs::metadata(&p).unwrap().len();
            (p.file_name().unwrap().to_str().unwrap().to_string(), len)
        })
        .max_by_key(|(_, len)| *len)
        .expect("a pack")
}

/// Sends `sig` (`-TERM`, `-INT`) to the process.
fn signal(p: &Proc, sig: &str) {
    let pid = p.child.as_ref().expect("running").id().to_string();
    assert!(
        Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// Waits (at most `limit`) for the process to exit; its status and how long it took.
fn wait_exit(p: &mut Proc, since: Instant, limit: Duration) -> (ExitStatus, Duration) {
    let child = p.child.as_mut().expect("running");
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            p.child = None;
            return (status, since.elapsed());
        }
        assert!(
            since.elapsed() < limit,
            "{} still running {limit:?} after the signal:\n{}",
            p.name,
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET /blob/{hash}` on a raw connection: the stream, the body's length, and the body bytes
/// that came with the headers.
fn open_blob(url: &str, hash: &str) -> (TcpStream, u64, Vec<u8>) {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET /blob/{hash} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before the headers");
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).to_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    let len = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .expect("a content-length")
        .trim()
        .parse()
        .unwrap();
    (s, len, head[end..].to_vec())
}

/// Reads the rest of a blob slowly in a thread: `tx` gets a message once a first MiB arrived;
/// returns the whole body, or what arrived before the connection ended.
fn read_slowly(
    mut s: TcpStream,
    len: u64,
    mut body: Vec<u8>,
    tx: mpsc::Sender<()>,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 << 10];
        let mut told = false;
        let mut since_pause = 0;
        while (body.len() as u64) < len {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    body.extend_from_slice(&buf[..n]);
                    since_pause += n;
                }
            }
            if !told && body.len() >= 1 << 20 {
                told = true;
                let _ = tx.send(());
            }
            // At most about 8 MB/s: a 16 MiB pack takes 2 s or more.
            if since_pause >= 512 << 10 {
                since_pause = 0;
                std::thread::sleep(Duration::from_millis(60));
            }
        }
        body
    })
}

fn serve(repo: &Path, data: &Path, logs: &Path, name: &str) -> Proc {
    let mut cmd = hummel();
    cmd.arg("serve")
        .arg(repo)
        .arg("--data")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .env("HUMMEL_WRITE_TOKEN", WRITE);
    Proc::start(name, cmd, logs)
}

/// Waits until the server answers `status` with a revision.
fn wait_revision(url: &str) {
    wait_for("a revision", || {
        let mut c = hummel();
        c.args(["status", "--master", url, "--json"]);
        let out = run(c);
        out.status.success()
            && serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["revision"]
                ["revision"]
                .is_u64()
    });
}

/// Syncs the server's repository into a fresh folder and checks it is exact.
fn sync_is_exact(url: &str, repo: &Path, dest: &PathBuf) {
    let mut sync = hummel();
    sync.args(["sync", url]).arg(dest);
    ok(sync);
    assert_same_tree(repo, dest);
    let _ = std::fs::remove_dir_all(dest);
}

#[test]
fn serve_finishes_downloads_in_flight_then_stops_within_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    fill(&repo);
    let data = dir.path().join("data");
    let logs = dir.path().join("logs");
    let mut s = serve(&repo, &data, &logs, "serve");
    wait_revision(&s.url);
    let (hash, size) = largest_pack(&data.join("store"));
    assert!(size > 12 << 20, "the largest pack has {size} bytes");

    // 1. A download in flight when SIGTERM comes is finished, whole; new connections are
    //    refused meanwhile; the process exits 0 and leaves its database checkpointed.
    let (conn, len, start) = open_blob(&s.url, &hash);
    assert_eq!(len, size);
    let (tx, rx) = mpsc::channel();
    let reader = read_slowly(conn, len, start, tx);
    rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let signalled = Instant::now();
    signal(&s, "-TERM");
    let addr = s.url.trim_start_matches("http://").to_string();
    wait_for("new connections to be refused", || {
        TcpStream::connect(&addr).is_err()
    });
    let body = reader.join().unwrap();
    assert_eq!(
        body.len() as u64,
        size,
        "the download in flight was cut off"
    );
    assert_eq!(blake3::hash(&body).to_hex().as_str(), hash);
    let (status, took) = wait_exit(&mut s, signalled, Duration::from_secs(15));
    assert!(status.success(), "{status}:\n{}", s.log_text());
    assert!(
        s.log_text().contains("serve stopped cleanly"),
        "{}",
        s.log_text()
    );
    eprintln!("clean stop with a 16 MiB download in flight: {took:?}");
    let wal = data.join("hummel.db-wal");
    assert_eq!(
        std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0),
        0,
        "the write-ahead log was not checkpointed"
    );

    // 2. A reader that stops reading: the process waits for the deadline, then exits anyway,
    //    non-zero, saying so.
    let mut s = serve(&repo, &data, &logs, "serve-2");
    wait_revision(&s.url);
    let (stuck, len, _) = open_blob(&s.url, &hash);
    assert_eq!(len, size);
    let signalled = Instant::now();
    signal(&s, "-TERM");
    let (status, took) = wait_exit(&mut s, signalled, Duration::from_secs(20));
    drop(stuck);
    assert!(!status.success(), "{status}:\n{}", s.log_text());
    let log = s.log_text();
    assert!(
        log.contains("error: serve: the shutdown deadline of 10 s passed with")
            && log.contains("connection(s) still open"),
        "{log}"
    );
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(14),
        "stopped after {took:?}"
    );
    eprintln!("stop past the deadline: {took:?}");

    // 3. A second signal stops it at once.
    let mut s = serve(&repo, &data, &logs, "serve-3");
    wait_revision(&s.url);
    let (stuck, _, _) = open_blob(&s.url, &hash);
    signal(&s, "-INT");
    wait_for("the stop to begin", || {
        s.log_text().contains("taking no new connections")
    });
    let again = Instant::now();
    signal(&s, "-TERM");
    let (status, took) = wait_exit(&mut s, again, Duration::from_secs(5));
    drop(stuck);
    assert!(!status.success());
    assert!(
        s.log_text().contains("a second signal; stopped at once"),
        "{}",
        s.log_text()
    );
    eprintln!("stop at a second signal: {took:?}");

    // After each stop the data folder opens cleanly, at the same revision, and syncs exactly.
    let s = serve(&repo, &data, &logs, "serve-4");
    wait_revision(&s.url);
    sync_is_exact(&s.url, &repo, &dir.path().join("dest"));
}

#[test]
fn a_slave_finishes_downloads_in_flight_then_stops_and_restarts_cleanly() {
    let mut c = Cluster::start(1, fill);
    c.build();
    c.wait_replicated();
    let (hash, size) = largest_pack(&c.path("slave0").join("store"));
    let (conn, len, start) = open_blob(&c.slaves[0].url, &hash);
    assert_eq!(len, size);
    let (tx, rx) = mpsc::channel();
    let reader = read_slowly(conn, len, start, tx);
    rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let signalled = Instant::now();
    signal(&c.slaves[0], "-TERM");
    let body = reader.join().unwrap();
    assert_eq!(
        body.len() as u64,
        size,
        "the download in flight was cut off"
    );
    assert_eq!(blake3::hash(&body).to_hex().as_str(), hash);
    let mut slave = c.slaves.remove(0);
    let (status, took) = wait_exit(&mut slave, signalled, Duration::from_secs(15));
    assert!(status.success(), "{status}:\n{}", slave.log_text());
    assert!(slave.log_text().contains("slave stopped cleanly"));
    eprintln!("slave's clean stop with a download in flight: {took:?}");

    // The same data folder again: it announces what it holds and serves a sync.
    let packs = c.slave_packs(0).len();
    let i = c.add_slave(&[]);
    assert_eq!(i, 0);
    c.wait_replicated();
    assert_eq!(c.slave_packs(0).len(), packs, "the store is as it was");
    let dest = c.path("dest");
    let report = c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);
    assert!(n(&report, "files_written") > 0);
}
