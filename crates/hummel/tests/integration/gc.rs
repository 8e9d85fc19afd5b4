//! The garbage collection (`hummel master --keep-revisions N --gc-grace D`): packs no kept
//! revision references are deleted from the master's store and from the slaves, and clients
//! sync from what is left.

use super::util::*;

fn fill(root: &std::path::Path) {
    write(root, "a/one.pbo", &data(600 << 10, 1));
    write(root, "a/two.pbo", &data(300 << 10, 2));
    write(root, "b/notes.txt", &b"hummel gc test line\n".repeat(4000));
}

/// Pack files of the master's store.
fn master_packs(c: &Cluster) -> usize {
    pack_files(&c.path("master").join("store")).len()
}

#[test]
fn superseded_packs_are_deleted_from_the_master_and_the_slaves() {
    let c = Cluster::start_with(
        1,
        fill,
        &[
            "--repack-level",
            "9",
            "--keep-revisions",
            "1",
            "--gc-grace",
            "0s",
        ],
    );
    let first = n(&c.build(), "revision");
    // The repack republishes the tree as a second revision; the first and its level-3 packs
    // are then no longer kept.
    wait_for(
        "the repack, then the collection of the first revision",
        || {
            let st = c.status();
            st["revision"]["revision"].as_u64() > Some(first) && st["gc"]["revisions_expired"] == 1
        },
    );
    c.wait_replicated();
    let st = c.status();
    let second = n(&st["revision"], "revision");
    let current = n(&st["replication"], "packs") as usize;
    assert!(n(&st["gc"], "packs_collected") > 0, "{st:#}");
    assert_eq!(st["gc"]["keep_revisions"], 1, "{st:#}");
    assert_eq!(master_packs(&c), current);
    // The slave is told to drop what the master collected.
    wait_for("the slave to drop the collected packs", || {
        c.slave_packs(0).len() == current
    });
    let metrics = get_text(&format!("{}/metrics", c.master.url));
    assert!(metric(&metrics, "hummel_gc_packs_collected_total") > 0);

    // A client syncs the second revision from what is left; the first is gone from the API.
    let dest = c.path("dest");
    let r = c.sync(&dest, &[]);
    assert_eq!(n(&r, "revision"), second, "{r}");
    assert_same_tree(&c.repo, &dest);
    let (code, body) = get_status(&format!("{}/api/v1/index?revision={first}", c.master.url));
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no_such_revision"), "{body}");

    // A changed file: the next build's superseded packs go too, on both sides.
    write(&c.repo, "a/two.pbo", &data(300 << 10, 3));
    let third = n(&c.build(), "revision");
    assert!(third > second);
    wait_for(
        "the repack of the third revision and the collection",
        || {
            let st = c.status();
            st["revision"]["revision"].as_u64() > Some(third) && st["gc"]["revisions_expired"] == 3
        },
    );
    let fourth = n(&c.status()["revision"], "revision");
    c.wait_replicated();
    let current = n(&c.status()["replication"], "packs") as usize;
    assert_eq!(master_packs(&c), current);
    wait_for("the slave to drop the collected packs", || {
        c.slave_packs(0).len() == current
    });
    let r = c.sync(&dest, &[]);
    assert_eq!(n(&r, "revision"), fourth, "{r}");
    assert_same_tree(&c.repo, &dest);
}

#[test]
fn by_default_the_previous_build_stays_servable() {
    let c = Cluster::start(1, fill);
    let first = n(&c.build(), "revision");
    let packs_before = master_packs(&c);
    write(&c.repo, "a/two.pbo", &data(300 << 10, 3));
    assert!(n(&c.build(), "revision") > first);
    let st = c.status();
    assert_eq!(st["gc"]["keep_revisions"], 2, "{st:#}");
    assert_eq!(st["gc"]["grace_s"], 3600, "{st:#}");
    // The first revision and every pack stay: it is one of the two builds kept.
    let (code, body) = get_status(&format!("{}/api/v1/index?revision={first}", c.master.url));
    assert_eq!(code, 200, "{body}");
    assert!(master_packs(&c) > packs_before);
}

#[test]
fn keep_revisions_below_one_is_refused() {
    let err = master_refuses(&["--keep-revisions", "0"]);
    assert!(err.contains("keep-revisions"), "{err}");
}

/// The pack numbers revision `n` lists, from the master's index.
fn packs_of(c: &Cluster, n: u64) -> Vec<u32> {
    let bytes = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let url = format!("{}/api/v1/index?revision={n}", c.master.url);
            let resp = http().get(url).send().await.unwrap();
            assert!(resp.status().is_success(), "{}", resp.status());
            resp.bytes().await.unwrap()
        });
    let (index, _) = hummel_core::index::decode(&bytes).unwrap();
    index.packs.iter().map(|p| p.number).collect()
}

/// `locate` is open to anyone, so it must keep nothing: a superseded revision's packs, located
/// anonymously again and again, are collected when its grace period ends all the same.
#[test]
fn locating_packs_keeps_none_from_the_collection() {
    let c = Cluster::start_with(1, fill, &["--keep-revisions", "1", "--gc-grace", "4s"]);
    let first = n(&c.build(), "revision");
    let old = packs_of(&c, first);
    // Every file changes: no chunk, and so no pack, of the first revision stays in use.
    write(&c.repo, "a/one.pbo", &data(600 << 10, 4));
    write(&c.repo, "a/two.pbo", &data(300 << 10, 5));
    write(&c.repo, "b/notes.txt", &b"other notes\n".repeat(4000));
    let second = n(&c.build(), "revision");
    assert!(second > first);
    let kept = packs_of(&c, second);
    let superseded: Vec<u32> = old.into_iter().filter(|p| !kept.contains(p)).collect();
    assert!(!superseded.is_empty());
    let locate = serde_json::json!({ "packs": superseded });
    let url = format!("{}/api/v1/locate", c.master.url);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut locates = 0;
    wait_for(
        "the superseded packs to go although located all along",
        || {
            let holders: serde_json::Value = rt.block_on(async {
                let resp = http().post(&url).json(&locate).send().await.unwrap();
                assert!(resp.status().is_success(), "{}", resp.status());
                resp.json().await.unwrap()
            });
            locates += 1;
            holders["holders"]
                .as_array()
                .unwrap()
                .iter()
                .all(|h| h.as_array().unwrap().is_empty())
        },
    );
    assert!(locates > 1, "collected before any locate could keep them");
    let st = c.status();
    assert!(
        n(&st["gc"], "packs_collected") >= superseded.len() as u64,
        "{st:#}"
    );
    assert_eq!(master_packs(&c), kept.len());
}
