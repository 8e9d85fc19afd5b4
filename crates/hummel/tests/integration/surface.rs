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
