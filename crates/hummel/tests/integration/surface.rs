//! The public surface is bounded: large anonymous bodies are refused before they are held, and
//! the master keeps answering meanwhile.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;

use super::util::*;

/// A `/proc/<pid>/status` field in KiB (`VmHWM`: the peak resident set; `VmRSS`: now).
fn proc_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A 60 MB locate body: `{"packs":[1,1,1,...` (valid JSON up to its end).
fn huge_locate_body(len: usize) -> Bytes {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(b"{\"packs\":[");
    while v.len() + 4 < len {
        v.extend_from_slice(b"1,");
    }
    v.extend_from_slice(b"1]}");
    Bytes::from(v)
}

/// The bar of issue 10: eight parallel 60 MB anonymous POSTs to `/api/v1/locate` (four with a
/// `Content-Length`, four chunked) raise the master's peak RSS by at most 100 MB, `/health`
/// answers throughout, and a client syncs afterwards.
#[test]
fn a_flood_of_large_anonymous_bodies_is_refused_in_bounded_memory() {
    let c = Cluster::start(1, fill_modset);
    c.build();
    c.wait_replicated();
    let pid = c.master.child.as_ref().unwrap().id();
    let (hwm_before, rss_before) = (proc_kib(pid, "VmHWM"), proc_kib(pid, "VmRSS"));
    let body = huge_locate_body(60_000_000);
    let url = c.master.url.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let (statuses, health) = rt.block_on(async {
        let http = http();
        let flood: Vec<_> = (0..8)
            .map(|i| {
                let (http, url, body) = (http.clone(), url.clone(), body.clone());
                tokio::spawn(async move {
                    let req = http.post(format!("{url}/api/v1/locate"));
                    let req = if i % 2 == 0 {
                        req.body(body)
                    } else {
                        let pieces: Vec<Result<Bytes, std::io::Error>> = (0..body.len())
                            .step_by(1 << 20)
                            .map(|at| Ok(body.slice(at..(at + (1 << 20)).min(body.len()))))
                            .collect();
                        req.body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
                    };
                    // The master answers 413 and may close before the body is sent: either is
                    // a refusal.
                    req.send().await.map(|r| r.status()).ok()
                })
            })
            .collect();
        let health = {
            let (http, url) = (http.clone(), url.clone());
            let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
            let still = flooding.clone();
            let probe = tokio::spawn(async move {
                let mut answered = Vec::new();
                // Throughout the flood, and at least ten times from its start.
                while still.load(std::sync::atomic::Ordering::Relaxed) || answered.len() < 10 {
                    let t = Instant::now();
                    let r = http
                        .get(format!("{url}/health"))
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    answered.push((r.map(|r| r.status()).ok(), t.elapsed()));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                answered
            });
            (flooding, probe)
        };
        let mut statuses = Vec::new();
        for t in flood {
            statuses.push(t.await.unwrap());
        }
        health.0.store(false, std::sync::atomic::Ordering::Relaxed);
        (statuses, health.1.await.unwrap())
    });
    let (hwm_after, rss_after) = (proc_kib(pid, "VmHWM"), proc_kib(pid, "VmRSS"));
    let slowest = health.iter().map(|(_, t)| *t).max().unwrap_or_default();
    eprintln!(
        "flood: master VmHWM {hwm_before} -> {hwm_after} kB, VmRSS {rss_before} -> {rss_after} kB; \
         answers {statuses:?}; /health answered {} times, slowest {slowest:?}",
        health.len()
    );
    for s in statuses.iter().flatten() {
        assert_eq!(*s, StatusCode::PAYLOAD_TOO_LARGE, "{statuses:?}");
    }
    assert!(!health.is_empty());
    for (status, took) in &health {
        assert_eq!(
            *status,
            Some(StatusCode::OK),
            "/health during the flood: {health:?}"
        );
        assert!(*took < Duration::from_secs(2), "/health took {took:?}");
    }
    assert!(
        hwm_after.saturating_sub(hwm_before) <= 100 << 10,
        "the flood raised the master's peak RSS from {hwm_before} to {hwm_after} kB"
    );
    // The master still serves.
    let dest = c.path("dest");
    c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);
}

/// A JSON report as a client sends it.
fn report(id: &str, key: &str, files: u64) -> serde_json::Value {
    serde_json::json!({
        "client_id": id, "client_key": key, "revision": 1, "path": "", "files": files,
        "bytes": 1, "packs": [], "bad_slaves": []
    })
}

fn post(url: &str, body: &serde_json::Value) -> (u16, String) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let resp = http().post(url).json(body).send().await.unwrap();
            let code = resp.status().as_u16();
            (code, resp.text().await.unwrap())
        })
}

/// A report is tied to the key its client made with its id: another key claiming the id is
/// refused and changes nothing; the client itself goes on reporting.
#[test]
fn a_client_cannot_report_as_another() {
    let c = Cluster::start(1, fill_modset);
    c.build();
    c.wait_replicated();
    let dest = c.path("dest");
    c.sync(&dest, &[]);
    let id = std::fs::read_to_string(dest.join(".hummel/client-id")).unwrap();
    let key = std::fs::read_to_string(dest.join(".hummel/client-key")).unwrap();
    assert_eq!(key.trim().len(), 64);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dest.join(".hummel/client-key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is readable by others: {mode:o}");
    }
    let clients = |c: &Cluster| c.status()["clients"].as_array().unwrap().clone();
    let before = clients(&c);
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0]["id"], id.trim());

    // Someone who saw the id on the dashboard reports under it with a key of their own.
    let url = format!("{}/api/v1/client/report", c.master.url);
    let forged = report(id.trim(), &"ab".repeat(32), 999_999);
    let (code, body) = post(&url, &forged);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("client_key_mismatch"), "{body}");
    let after = clients(&c);
    assert_eq!(after.len(), 1);
    assert_eq!(
        after[0]["files"], before[0]["files"],
        "the forged report changed the row"
    );
    // Without a key at all (a client from before keys): refused too.
    let mut keyless = forged.clone();
    keyless.as_object_mut().unwrap().remove("client_key");
    assert_eq!(post(&url, &keyless).0, 400);
    let metrics = get_text(&format!("{}/metrics", c.master.url));
    assert_eq!(metric(&metrics, "hummel_client_key_mismatches_total"), 1);

    // The client itself reports as before (a no-op sync reports too).
    c.sync(&dest, &[]);
    let rows = clients(&c);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], id.trim());
    assert_eq!(
        metric(
            &get_text(&format!("{}/metrics", c.master.url)),
            "hummel_client_reports_total"
        ),
        2
    );
}

/// Client rows expire `--client-retention` after the last report, and a bad slave named by a
/// flood of reports from one client counts once.
#[test]
fn client_rows_expire_and_bad_slave_reports_count_once() {
    let c = Cluster::start_with(1, fill_modset, &["--client-retention", "2s"]);
    c.build();
    c.wait_replicated();
    let slave = c.status()["slaves"][0]["id"].as_str().unwrap().to_string();
    let url = format!("{}/api/v1/client/report", c.master.url);
    let mut body = report("flooder", &"cd".repeat(32), 1);
    body["bad_slaves"] = serde_json::json!([slave, slave, "made-up"]);
    for _ in 0..20 {
        assert_eq!(post(&url, &body).0, 204);
    }
    let metrics = get_text(&format!("{}/metrics", c.master.url));
    assert_eq!(metric(&metrics, "hummel_bad_slave_reports_total"), 1);
    assert_eq!(c.status()["clients"].as_array().unwrap().len(), 1);
    // Synchronised on the event itself: the row disappears from status.
    wait_for("the client row to expire", || {
        c.status()["clients"].as_array().unwrap().is_empty()
    });
    let metrics = get_text(&format!("{}/metrics", c.master.url));
    assert_eq!(metric(&metrics, "hummel_clients_expired_total"), 1);
    assert_eq!(metric(&metrics, "hummel_clients"), 0);
}

/// Beyond its rate an address is answered 429 with `Retry-After` (`/health` never), and a
/// client that meets the limit waits and completes its sync.
#[test]
fn an_address_over_its_rate_is_told_to_wait_and_clients_do() {
    // No slave: the master serves the packs itself (its fallback), so nothing polls status.
    let c = Cluster::start_with(0, fill_modset, &["--rate-limit", "1"]);
    c.build();
    let url = c.master.url.clone();
    let (limited, retry_after, health) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let http = http();
            let mut limited = 0;
            let mut retry_after = None;
            for _ in 0..30 {
                let r = http
                    .get(format!("{url}/api/v1/revision"))
                    .send()
                    .await
                    .unwrap();
                if r.status() == StatusCode::TOO_MANY_REQUESTS {
                    limited += 1;
                    retry_after = r
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_string());
                }
            }
            let mut health = Vec::new();
            for _ in 0..30 {
                health.push(
                    http.get(format!("{url}/health"))
                        .send()
                        .await
                        .unwrap()
                        .status(),
                );
            }
            (limited, retry_after, health)
        });
    // A burst of ten (partly spent by the build's polling), then one a second.
    assert!(limited >= 15, "{limited} of 30 limited");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(health.iter().all(|s| *s == StatusCode::OK), "{health:?}");
    // The budget is spent; a sync waits where it is told to and completes.
    let dest = c.path("dest");
    c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);
    // So does the status command.
    let st = c.status();
    assert!(st["revision"]["revision"].is_u64(), "{st}");
}

/// Reads `stream` until the peer closes it (or resets it); what arrived.
fn read_to_close(stream: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A raw connection to `c`'s master that gives up reading after 20 s (a test's own bound),
/// with `sent` sent on it.
fn raw_connection(c: &Cluster, sent: &[u8]) -> std::net::TcpStream {
    use std::io::Write;
    let addr = c.master.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(sent).unwrap();
    stream
}

/// A whole request for `/health` that asks the master to close the connection after it.
const HEALTH_AND_CLOSE: &[u8] =
    b"GET /health HTTP/1.1\r\nHost: hummel\r\nConnection: close\r\n\r\n";

/// A connection that sends nothing, or trickles its headers, is closed after
/// `--header-timeout` and gives its place among `--max-connections` back: with both places
/// held by such connections, a real request waits, then is answered once they are cut.
#[test]
fn idle_and_trickling_connections_are_cut_and_give_their_place_back() {
    use std::io::Write;

    let c = Cluster::start_with(
        0,
        |root| write(root, "@m/a.txt", b"a"),
        &["--max-connections", "2", "--header-timeout", "2s"],
    );
    let opened = Instant::now();
    let mut silent = raw_connection(&c, b"");
    let mut trickling = raw_connection(&c, b"");
    let trickler = {
        let mut out = trickling.try_clone().unwrap();
        std::thread::spawn(move || {
            for b in b"GET /health HTTP/1.1\r\nHost: hummel\r\nX-Slow: "
                .iter()
                .cycle()
            {
                if out.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    // Both places are taken: this request waits in the backlog until one is given back.
    let mut asking = raw_connection(&c, HEALTH_AND_CLOSE);
    let answer = String::from_utf8_lossy(&read_to_close(&mut asking)).into_owned();
    let answered = opened.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(
        answered >= Duration::from_millis(1500),
        "answered after {answered:?}: the held places were not taken"
    );
    assert!(
        answered < Duration::from_secs(10),
        "answered after {answered:?}"
    );

    // The two holders were cut, with nothing answered to the silent one.
    assert!(read_to_close(&mut silent).is_empty());
    let cut = opened.elapsed();
    assert!(
        cut < Duration::from_secs(10),
        "the silent one lived {cut:?}"
    );
    read_to_close(&mut trickling);
    trickler.join().unwrap();
    assert!(opened.elapsed() < Duration::from_secs(12));
}

/// A request body that stops arriving is cut after `--body-timeout`: its request is refused,
/// and the connection's place among `--max-connections` is given back.
#[test]
fn a_request_body_that_stalls_is_cut_and_gives_its_place_back() {
    let c = Cluster::start_with(
        0,
        |root| write(root, "@m/a.txt", b"a"),
        &["--max-connections", "1", "--body-timeout", "2s"],
    );
    // A locate that announces 200 bytes, sends 10, and then nothing.
    let mut stalling = raw_connection(
        &c,
        b"POST /api/v1/locate HTTP/1.1\r\nHost: hummel\r\nContent-Type: application/json\r\n\
          Content-Length: 200\r\n\r\n{\"packs\":[",
    );
    let sent = Instant::now();
    // The only place is taken: this one waits until the stalled request is cut.
    let mut asking = raw_connection(&c, HEALTH_AND_CLOSE);

    let refused = String::from_utf8_lossy(&read_to_close(&mut stalling)).into_owned();
    let cut = sent.elapsed();
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused:?}");
    assert!(
        cut >= Duration::from_millis(1500) && cut < Duration::from_secs(10),
        "cut after {cut:?}"
    );
    let answer = String::from_utf8_lossy(&read_to_close(&mut asking)).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(sent.elapsed() < Duration::from_secs(12));
}
