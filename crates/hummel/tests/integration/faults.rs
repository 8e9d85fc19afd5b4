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
    let tmp = dest.join(".hummel/tmp");
    assert!(
        !tmp.exists() || fs::read_dir(&tmp).unwrap().count() == 0,
        "temp files left behind"
    );
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
    let dest = c.path("dest");
    for delay_ms in [30u64, 120, 300] {
        let mut cmd = c.sync_cmd(&dest, &[]);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever is visible is complete: every file present is byte-identical to the source.
        for (path, desc) in digest(&dest) {
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
    c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);
}

#[test]
fn master_survives_kill9_and_restart() {
    let mut c = Cluster::start(2, fill_modset);
    c.build();
    c.wait_replicated();
    let port = c.master.port();
    c.master.kill9();
    c.master = start_master(c.dir.path(), &c.repo, &[], port);
    assert_eq!(c.status()["revision"]["revision"], 1);
    // The slaves find the master again on the same address and keep serving.
    c.wait_replicated();
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
    let held: u64 = c.slave_packs(small).iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    assert!(held <= 100 << 10, "slave stores {held} bytes over its quota");
    assert_eq!(st["replication"]["under_replicated"], 0, "{st:#}");
    let dest = c.path("dest");
    c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);
}
