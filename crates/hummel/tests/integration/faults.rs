//! Faults: a slave dies, a replica rots, every replica rots, a client or the master is killed.

use std::fs;
use std::time::Duration;

use super::util::*;

#[test]
fn sync_survives_a_killed_slave() {
    let mut c = Cluster::start(2, fill_modset);
    c.build();
    c.wait_replicated();
    // Killed just now: the master still lists it as live, so the client must fail over.
    c.slaves[0].kill9();
    let dest = c.path("dest");
    c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);
}

#[test]
fn a_corrupt_replica_is_detected_and_another_used() {
    let c = Cluster::start(2, fill_modset);
    c.build();
    c.wait_replicated();
    for p in c.slave_packs(0) {
        corrupt(&p);
    }
    let dest = c.path("dest");
    c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);
}

#[test]
fn all_replicas_corrupt_fails_and_writes_nothing_wrong() {
    let c = Cluster::start(2, fill_modset);
    c.build();
    c.wait_replicated();
    let dest = c.path("dest");
    c.sync(&dest, &[]);
    let before = digest(&dest);

    write(&c.repo, "@mod_new/fresh.pbo", &data(500 << 10, 1234));
    fs::write(c.repo.join("top.txt"), b"changed\n").unwrap();
    c.build();
    c.wait_replicated();
    for i in 0..2 {
        for p in c.slave_packs(i) {
            corrupt(&p);
        }
    }
    let err = fails(c.sync_cmd(&dest, &[]));
    assert!(err.contains("pack") || err.contains("verif"), "{err}");
    assert_eq!(
        digest(&dest),
        before,
        "a failed sync changed the destination"
    );
    // Temp files stay for the next run to resume, named by content, never under a final name.
    for e in fs::read_dir(dest.join(".hummel/tmp")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(name.ends_with(".part"), "{name}");
    }
}

#[test]
fn client_killed_mid_sync_then_rerun_completes() {
    let c = Cluster::start(2, |root| {
        for i in 0..6 {
            write(root, &format!("big/{i}.bin"), &data(8 << 20, 500 + i));
        }
        fill_modset(root);
    });
    c.build();
    c.wait_replicated();
    let final_tree = digest(&c.repo);
    let total_files = final_tree
        .values()
        .filter(|d| d.starts_with("file"))
        .count();
    let dest = c.path("dest");
    let mut interrupted = 0;
    for delay_ms in [30u64, 120, 300] {
        let mut cmd = c.sync_cmd(&dest, &[]);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let _ = child.wait();
        let visible = digest(&dest);
        let files = visible.values().filter(|d| d.starts_with("file")).count();
        eprintln!(
            "killed after {delay_ms} ms (finished before: {finished}): {files} files visible"
        );
        if !finished && files < total_files {
            interrupted += 1;
        }
        // Whatever is visible is complete: every file present is byte-identical to the source.
        for (path, desc) in visible {
            if desc.starts_with("file") {
                let want = &final_tree[&path];
                let size_hash = |d: &str| d.split(' ').take(3).collect::<Vec<_>>().join(" ");
                assert_eq!(
                    size_hash(&desc),
                    size_hash(want),
                    "half-written file visible: {path}"
                );
            }
        }
    }
    assert!(
        interrupted > 0,
        "no kill landed in the middle of a sync: the test tested nothing"
    );
    c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);
}

#[test]
fn master_survives_kill9_and_restart() {
    let mut c = Cluster::start(2, fill_modset);
    let r1 = n(&c.build(), "revision");
    c.wait_replicated();
    let announces = |i: usize| {
        let text = get_text(&format!("{}/metrics", c.slaves[i].url));
        metric(&text, "hummel_slave_announces_total")
    };
    let before = [announces(0), announces(1)];
    let port = c.master.port();
    c.master.kill9();
    c.master = start_master(c.dir.path(), &c.repo, &[], port);
    assert_eq!(c.status()["revision"]["revision"], r1);
    // The slaves find the master again on the same address and keep serving; the restarted
    // master holds no hashlist version, so each sends its complete hashlist again.
    c.wait_replicated();
    wait_for("both slaves to announce again", || {
        (0..2).all(|i| announces(i) > before[i])
    });
    let dest = c.path("dest");
    c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);
}

#[test]
fn placement_respects_a_small_quota() {
    let mut c = Cluster::start(2, fill_modset);
    // Smaller than any pack: this slave can hold nothing, and the others take its share.
    let small = c.add_slave(&["--quota", "100K"]);
    c.build();
    c.wait_replicated();
    std::thread::sleep(Duration::from_millis(600));
    let st = c.status();
    let slave = st["slaves"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["url"] == c.slaves[small].url.as_str())
        .unwrap_or_else(|| panic!("quota slave missing: {st:#}"))
        .clone();
    assert_eq!(slave["quota"], 100 << 10, "{slave}");
    assert!(slave["used"].as_u64().unwrap() <= 100 << 10, "{slave}");
    let held: u64 = c
        .slave_packs(small)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        held <= 100 << 10,
        "slave stores {held} bytes over its quota"
    );
    assert_eq!(st["replication"]["under_replicated"], 0, "{st:#}");
    let dest = c.path("dest");
    c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);
}

#[test]
fn planted_symlinks_never_lead_writes_outside_dest() {
    let c = Cluster::start(1, fill_modset);
    c.build();
    c.wait_replicated();
    // A sentinel folder outside DEST, and symlinks in DEST where the index has a folder and a file.
    let outside = c.path("outside");
    write(&outside, "@mod_a/mod.cpp", b"sentinel");
    write(&outside, "top.txt", b"sentinel");
    let sentinel = digest(&outside);
    let dest = c.path("dest");
    fs::create_dir_all(&dest).unwrap();
    std::os::unix::fs::symlink(outside.join("@mod_a"), dest.join("@mod_a")).unwrap();
    std::os::unix::fs::symlink(outside.join("top.txt"), dest.join("top.txt")).unwrap();
    c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);
    assert_eq!(
        digest(&outside),
        sentinel,
        "a write escaped DEST through a symlink"
    );
    assert!(fs::symlink_metadata(dest.join("@mod_a")).unwrap().is_dir());
}

/// A crash in the rename burst, in the deletes, or before the state is saved leaves every file
/// old or new, and the next run completes the job.
#[test]
fn crash_at_every_apply_step_leaves_old_or_new_and_rerun_completes() {
    let c = Cluster::start(2, fill_modset);
    c.build();
    c.wait_replicated();
    let points = [
        "rename=1",
        "rename=3",
        "delete=1",
        "delete=2",
        "save-state=1",
    ];
    let dests: Vec<_> = (0..points.len())
        .map(|i| c.path(&format!("dest{i}")))
        .collect();
    for d in &dests {
        c.sync(d, &[]);
    }
    let old = digest(&c.repo);
    // Revision 2: changed, added and removed files (several of each, so every step has work).
    for i in 0..6 {
        write(
            &c.repo,
            &format!("@mod b/data/sub {}/f ü {i}.txt", i % 4),
            &data(2000 + i * 700, 900 + i as u64),
        );
        write(
            &c.repo,
            &format!("@new/file {i}.bin"),
            &data(40_000, 700 + i as u64),
        );
    }
    for i in 10..14 {
        fs::remove_file(
            c.repo
                .join(format!("@mod b/data/sub {}/f ü {i}.txt", i % 4)),
        )
        .unwrap();
    }
    c.build();
    c.wait_replicated();
    let new = digest(&c.repo);
    let size_hash = |d: &str| d.split(' ').take(3).collect::<Vec<_>>().join(" ");
    for (point, dest) in points.iter().zip(&dests) {
        let mut cmd = c.sync_cmd(dest, &[]);
        cmd.env("HUMMEL_FAILPOINTS", point);
        let out = run(cmd);
        assert!(!out.status.success(), "{point}: the failpoint did not fire");
        for (path, desc) in digest(dest) {
            if desc.starts_with("file") {
                let ok = [&old, &new].iter().any(|t| {
                    t.get(&path)
                        .is_some_and(|want| size_hash(want) == size_hash(&desc))
                });
                assert!(ok, "{point}: {path} is neither the old nor the new version");
            }
        }
        let r = c.sync(dest, &[]);
        assert_same_tree(&c.repo, dest);
        assert!(
            n(&r, "bytes_downloaded") < 600_000,
            "{point}: rerun downloaded too much: {r}"
        );
    }
}

#[test]
fn a_dead_slaves_packs_are_placed_on_the_others() {
    let mut c = Cluster::start(3, fill_modset);
    c.build();
    c.wait_replicated();
    // Kill a slave that holds packs; once it is dead (8 s in these tests) the two others must
    // hold every pack again.
    let victim = (0..3).find(|&i| !c.slave_packs(i).is_empty()).unwrap();
    c.slaves[victim].kill9();
    wait_for("the slave to be declared dead", || {
        c.status()["slaves"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["state"] == "dead")
    });
    c.wait_replicated();
    let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    for &i in &others {
        assert!(!c.slave_packs(i).is_empty());
    }
    let dest = c.path("dest");
    c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);
}

#[test]
fn a_slow_slave_is_overtaken_by_a_fast_one() {
    // Two packs, so two ranges, so the slow slave surely gets one of them first. The fast slave
    // replicates first, so the slow one (capped at 64 KiB/s: minutes for this set) never
    // serves replication.
    let mut c = Cluster::start(1, |root| {
        fill_modset(root);
        write(root, "@big/addons/big2.pbo", &data(30 << 20, 7));
    });
    c.build();
    c.wait_replicated();
    let slow = c.add_slave(&["--limit-rate", "64K"]);
    c.wait_replicated();
    let slow_url = c.slaves[slow].url.clone();
    let status = c.status();
    let slow_id = status["slaves"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["url"] == slow_url.as_str())
        .unwrap_or_else(|| panic!("{slow_url} not in {status:#}"))["id"]
        .as_str()
        .unwrap()
        .to_string();

    let dest = c.path("dest");
    let planned = c.sync(&dest, &["--dry-run"]);
    let out = c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);
    // Whatever the slow slave was given first was repeated on the fast one and the fast copy
    // won: the slow slave delivered little, and every extra request was a duplicate.
    let total = n(&out, "bytes_downloaded");
    let from_slow = out["bytes_by_slave"][&slow_id].as_u64().unwrap_or(0);
    assert!(
        from_slow * 4 < total,
        "the slow slave delivered {from_slow} of {total} bytes: {out:#}"
    );
    assert!(n(&out, "duplicate_requests") >= 1, "{out:#}");
    assert_eq!(n(&out, "failed_requests"), 0, "{out:#}");
    assert_eq!(
        n(&out, "requests"),
        n(&planned, "requests") + n(&out, "duplicate_requests"),
        "{out:#}"
    );
    assert!(
        out["bad_slaves"].as_array().unwrap().is_empty(),
        "slow is not bad: {out:#}"
    );
}

/// A file the user edits while a sync runs, one the sync leaves alone, is not vouched for by
/// the stat cache afterwards, even with its size and mtime put back: the next run hashes it
/// and restores the repository's content.
#[test]
fn a_file_edited_during_a_sync_is_repaired_by_the_next() {
    let mut c = Cluster::start(0, |root| {
        write(root, "mod/keep.txt", b"the repository's words");
        write(root, "mod/big.bin", &data(2 << 20, 40));
    });
    // One slave serving at 8 MB/s: the second sync downloads for about two seconds.
    c.add_slave(&["--limit-rate", "8M"]);
    c.build();
    c.wait_replicated();
    let dest = c.path("dest");
    c.sync(&dest, &[]);

    write(&c.repo, "mod/big.bin", &data(16 << 20, 41));
    c.build();
    c.wait_replicated();
    let to_write = n(&c.sync(&dest, &["--dry-run"]), "bytes_to_write");
    let child = spawn_until_filled(c.sync_cmd(&dest, &["--json"]), &dest, to_write, 0.1);
    let keep = dest.join("mod/keep.txt");
    let mtime = fs::metadata(&keep).unwrap().modified().unwrap();
    fs::write(&keep, b"the user's own words!!").unwrap();
    fs::File::options()
        .write(true)
        .open(&keep)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(&keep).unwrap(), b"the user's own words!!");

    let r = c.sync(&dest, &[]);
    assert_eq!(fs::read(&keep).unwrap(), b"the repository's words", "{r:#}");
    assert_eq!(n(&r, "files_written"), 1, "{r:#}");
    assert_same_tree(&c.repo, &dest);
}

/// An interrupted first sync keeps what it verified: Ctrl-C at ~30% stops it cleanly, a
/// kill -9 at ~60% of a second run loses nothing written, and the third run downloads only
/// what is still missing.
#[test]
fn an_interrupted_first_sync_resumes_where_it_stopped() {
    let mut c = Cluster::start(0, |root| {
        for i in 0..8 {
            write(root, &format!("big/{i}.bin"), &data(8 << 20, 900 + i));
        }
        fill_modset(root);
    });
    // One slave serving at 16 MB/s: the sync takes a few seconds, long enough to interrupt.
    c.add_slave(&["--limit-rate", "16M"]);
    c.build();
    c.wait_replicated();
    let dest = c.path("dest");
    let plan = c.sync(&dest, &["--dry-run"]);
    let (full, to_write) = (n(&plan, "bytes_to_download"), n(&plan, "bytes_to_write"));

    // Ctrl-C: one line, a failure status, nothing under a final name, the temp files kept.
    let child = spawn_until_filled(c.sync_cmd(&dest, &[]), &dest, to_write, 0.3);
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(
        digest(&dest).values().all(|d| !d.starts_with("file")),
        "a file was placed"
    );
    let kept = allocated(&dest.join(".hummel/tmp"));
    assert!(kept as f64 >= 0.3 * to_write as f64, "{kept} of {to_write}");

    // kill -9 at ~60% of the bytes (the second run resumed the first's and went on).
    let mut child = spawn_until_filled(c.sync_cmd(&dest, &[]), &dest, to_write, 0.6);
    child.kill().unwrap();
    child.wait().unwrap();

    let r = c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);
    let downloaded = n(&r, "bytes_downloaded");
    eprintln!(
        "full sync {full} bytes; after the kill: {downloaded} downloaded, {} resumed",
        n(&r, "bytes_resumed")
    );
    assert!(
        downloaded as f64 <= 0.45 * full as f64,
        "the rerun downloaded {downloaded} of {full} bytes: {r:#}"
    );
    assert!(
        n(&r, "bytes_resumed") as f64 >= 0.5 * to_write as f64,
        "{r:#}"
    );
    assert_eq!(
        fs::read_dir(dest.join(".hummel/tmp")).unwrap().count(),
        0,
        "temp files left after a complete sync"
    );
    let mut verify = hummel();
    verify.args(["verify", &c.master.url]).arg(&dest);
    ok(verify);
}
