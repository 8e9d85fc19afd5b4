//! Published means fetchable: a sync started the moment `hummel build --wait` returns succeeds,
//! the master serving the packs no mirror holds yet, a bounded number at a time.

use std::path::Path;
use std::process::Stdio;

use super::util::*;

/// Adds `mib` MiB of new content in files of 8 MiB.
fn change(repo: &Path, mib: usize, seed: u64) {
    for i in 0..mib.div_ceil(8) {
        write(
            repo,
            &format!("@new/addons/part{i}.pbo"),
            &data(8 << 20, seed + i as u64),
        );
    }
}

fn verify(c: &Cluster, dest: &Path) {
    let mut v = hummel();
    v.args(["verify", &c.master.url]).arg(dest);
    ok(v);
    assert_same_tree(&c.repo, dest);
}

#[test]
fn a_sync_started_as_the_build_returns_succeeds() {
    let mut c = Cluster::start(0, fill_modset);
    // Mirrors on a slow uplink: their copies of a new revision take seconds to spread.
    for _ in 0..2 {
        c.add_slave(&["--limit-rate", "4M"]);
    }
    c.build();
    c.wait_replicated();
    let dest = c.path("dest");
    c.sync(&dest, &[]);

    change(&c.repo, 40, 700);
    let built = c.build();
    assert_eq!(built["state"], "succeeded", "{built}");
    // At once: no waiting for the replication.
    let report = c.sync(&dest, &[]);
    eprintln!("sync right after the build: {report}");
    assert_eq!(report["revision"], built["revision"], "{report}");
    verify(&c, &dest);
}

#[test]
fn the_master_bounds_its_fallback_downloads_and_clients_still_complete() {
    // No mirror at all: every pack is served by the master, one download at a time.
    let c = Cluster::start_with(0, |r| change(r, 48, 900), &["--fallback-limit", "1"]);
    c.build();

    let st = c.status();
    let rp = &st["replicating"];
    assert_eq!(rp["master_fallback"], true, "{st:#}");
    assert_eq!(rp["without_copy"], st["replication"]["packs"], "{st:#}");
    assert_eq!(rp["fallback_limit"], 1, "{st:#}");
    let mut cmd = hummel();
    cmd.args(["status", "--master", &c.master.url]);
    let text = ok(cmd);
    assert!(
        text.contains("on no mirror yet (the master serves those: 0 of 1 downloads)"),
        "{text}"
    );

    // One download whose body is not read holds the only slot (the pack is larger than what
    // the sockets buffer); the next request is told to come back.
    let largest = pack_files(&c.path("master/store"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let hash = largest.file_name().unwrap().to_str().unwrap().to_string();
    let url = format!("{}/blob/{hash}", c.master.url);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let first = http().get(&url).send().await.unwrap();
            assert_eq!(first.status().as_u16(), 200);
            let second = http().get(&url).send().await.unwrap();
            assert_eq!(second.status().as_u16(), 503);
            assert_eq!(second.headers()["retry-after"], "1");
            drop(first);
        });
    let busy_before = metric(
        &get_text(&format!("{}/metrics", c.master.url)),
        "hummel_fallback_busy_total",
    );

    // Two clients at once, each asking for several packs in parallel: most requests find the
    // slot taken, wait for their Retry-After and complete.
    let dests = [c.path("dest1"), c.path("dest2")];
    let children: Vec<_> = dests
        .iter()
        .map(|d| {
            let mut cmd = c.sync_cmd(d, &[]);
            cmd.stdout(Stdio::null()).stderr(Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "sync failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for d in &dests {
        verify(&c, d);
    }
    let busy_after = metric(
        &get_text(&format!("{}/metrics", c.master.url)),
        "hummel_fallback_busy_total",
    );
    assert!(
        busy_after > busy_before,
        "no client request was refused: the bound was not exercised ({busy_before} → {busy_after})"
    );
}
