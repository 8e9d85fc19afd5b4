//! A push that names itself is followed by the master: its missing query, a pack uploaded
//! with `?push=ID` and its publish show in the status (uploading with its chunks, then
//! published with the revision) and on the dashboard. Raw HTTP, as `hummel push` sends it.

use hummel_core::Hash;
use hummel_core::codec::ChunkCompressor;
use hummel_core::pack::PackWriter;
use serde_json::{Value, json};

use super::util::*;

const PUSH: &str = "5eed0000000000000000000000000000";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The master's `/api/v1/status`, as JSON.
fn status(url: &str) -> Value {
    serde_json::from_str(&get_text(&format!("{url}/api/v1/status"))).unwrap()
}

/// The one push the status lists.
fn the_push(url: &str) -> Value {
    let s = status(url);
    let pushes = s["pushes"].as_array().unwrap_or_else(|| panic!("{s}"));
    assert_eq!(pushes.len(), 1, "{s}");
    pushes[0].clone()
}

#[test]
fn a_followed_push_shows_its_progress_then_its_revision() {
    let c = Cluster::start(0, |_| {});
    let url = c.master.url.clone();
    assert!(status(&url).get("pushes").is_none(), "no push yet");

    // One file of 6 chunks, in one pack.
    let plain: Vec<Vec<u8>> = (0..6).map(|i| data(50_000, 40 + i)).collect();
    let mut pack = PackWriter::new(Vec::new()).unwrap();
    let mut comp = ChunkCompressor::new(3).unwrap();
    for p in &plain {
        let (codec, stored) = comp.compress(p);
        pack.add(Hash::of(p), codec, &stored, p.len() as u32)
            .unwrap();
    }
    let pack = pack.finish().unwrap();
    let chunks: Vec<String> = pack.entries.iter().map(|e| e.hash.to_hex()).collect();
    let content = plain.concat();

    let http = http();
    let write = |req: reqwest::RequestBuilder| req.header("x-hummel-token", WRITE);
    let missing: Value = rt().block_on(async {
        let resp = write(http.post(format!("{url}/api/v1/push/missing")))
            .json(&json!({"chunks": chunks, "push": PUSH, "prefix": "@raw"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    });
    assert_eq!(missing["missing"].as_array().unwrap().len(), 6, "{missing}");
    let p = the_push(&url);
    assert_eq!(p["state"], "uploading", "{p}");
    assert_eq!((n(&p, "chunks_missing"), n(&p, "chunks_received")), (6, 0));

    let code = rt().block_on(async {
        write(http.put(format!(
            "{url}/api/v1/push/packs/{}?push={PUSH}",
            pack.hash.to_hex()
        )))
        .body(pack.writer.clone())
        .send()
        .await
        .unwrap()
        .status()
    });
    assert_eq!(code, 204);
    let p = the_push(&url);
    assert_eq!(p["state"], "uploading", "{p}");
    assert_eq!(p["prefix"], "@raw", "{p}");
    assert_eq!((n(&p, "chunks_received"), n(&p, "chunks_missing")), (6, 6));
    assert_eq!(n(&p, "bytes_received"), pack.size);
    let page = get_text(&format!("{url}/"));
    assert!(page.contains("<h2>Pushes</h2>"), "{page}");
    assert!(page.contains("6 of 6 chunks"), "{page}");

    let published: Value = rt().block_on(async {
        let resp = write(http.post(format!("{url}/api/v1/push/publish")))
            .json(&json!({
                "base": null,
                "prefix": "@raw",
                "dirs": [],
                "files": [{
                    "path": "data.bin",
                    "size": content.len(),
                    "mode": 0o644,
                    "mtime_ns": 1_700_000_000_000_000_000i64,
                    "hash": Hash::of(&content).to_hex(),
                    "chunks": chunks,
                }],
                "push": PUSH,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    });
    let revision = n(&published, "revision");
    let p = the_push(&url);
    assert_eq!(p["state"], "published", "{p}");
    assert_eq!(n(&p, "revision"), revision, "{p}");
    assert_eq!(n(&status(&url)["revision"], "revision"), revision);
    let metrics = get_text(&format!("{url}/metrics"));
    assert_eq!(metric(&metrics, "hummel_push_packs_staged_total"), 1);
    assert!(
        metrics.contains("hummel_pushes{state=\"published\"} 1"),
        "{metrics}"
    );

    // What it published syncs back whole.
    let dest = c.path("dest");
    c.sync(&dest, &[]);
    assert_eq!(std::fs::read(dest.join("@raw/data.bin")).unwrap(), content);
}
