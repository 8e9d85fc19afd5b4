//! The main flows: build, replicate to two slaves, sync, subtree, update, no-op, verify.

use std::fs;

use super::util::*;

#[test]
fn master_two_slaves_client_end_to_end() {
    let c = Cluster::start(2, fill_modset);
    let b = c.build();
    assert_eq!(b["state"], "succeeded", "{b}");
    let r1 = n(&b, "revision");
    c.wait_replicated();
    // With replication 2 and two slaves, each slave holds every pack.
    assert!(!c.slave_packs(0).is_empty());
    assert_eq!(c.slave_packs(0).len(), c.slave_packs(1).len());

    // Fresh sync: byte-identical, modes and mtimes included.
    let dest = c.path("dest");
    let r = c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);
    assert_eq!(n(&r, "revision"), r1);
    assert_eq!(r["index_delta"], false, "{r}");
    let full_index = n(&r, "index_bytes_downloaded");
    let files = digest(&c.repo)
        .values()
        .filter(|v| v.starts_with("file"))
        .count() as u64;
    assert_eq!(n(&r, "files_written"), files);
    assert!(n(&r, "bytes_downloaded") > 0);
    assert!(n(&r, "chunks_downloaded") > 0);
    for k in [
        "files_deleted",
        "files_unchanged",
        "bytes_reused",
        "duration_ms",
    ] {
        assert!(r[k].is_u64(), "{k} missing in {r}");
    }
    ok({
        let mut v = hummel();
        v.args(["verify", &c.master.url]).arg(&dest);
        v
    });

    // Nothing changed: no-op, nothing downloaded.
    let r = c.sync(&dest, &[]);
    assert_eq!(n(&r, "bytes_downloaded"), 0);
    assert_eq!(n(&r, "files_written"), 0);
    assert_eq!(n(&r, "files_unchanged"), files);

    // The master tracks the client.
    let st = c.status();
    let clients = st["clients"].as_array().unwrap();
    assert!(clients.iter().any(|cl| cl["revision"] == r1), "{st:#}");

    // Update: change the middle of the big file, add, remove, rename.
    let big = c.repo.join("@big/addons/big.pbo");
    let mut content = fs::read(&big).unwrap();
    for b in &mut content[3 << 20..(3 << 20) + 4096] {
        *b = b.wrapping_add(1);
    }
    fs::write(&big, &content).unwrap();
    write(&c.repo, "@mod_c/new.pbo", &data(300 << 10, 77));
    fs::remove_file(c.repo.join("top.txt")).unwrap();
    fs::rename(
        c.repo.join("@mod_a/addons/a.pbo"),
        c.repo.join("@mod_a/addons/a_renamed.pbo"),
    )
    .unwrap();
    let b = c.build();
    let r2 = n(&b, "revision");
    assert!(r2 > r1, "{b}");
    c.wait_replicated();

    // Dry run changes nothing.
    let before = digest(&dest);
    let plan = ok(c.sync_cmd(&dest, &["--dry-run", "--json"]));
    assert!(
        plan.contains("new.pbo"),
        "plan should name the new file: {plan}"
    );
    assert_eq!(digest(&dest), before);

    let r = c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);
    assert_eq!(n(&r, "revision"), r2);
    // top.txt was removed and a.pbo renamed: both old names are gone.
    assert_eq!(n(&r, "files_deleted"), 2, "{r}");
    // Only the changed chunks of the big file and the new file travel; the renamed file is
    // rebuilt from local data.
    assert!(
        n(&r, "bytes_downloaded") < 1_000_000,
        "downloaded too much: {r}"
    );
    assert!(
        n(&r, "bytes_reused") >= 700 << 10,
        "renamed file not reused: {r}"
    );
    assert!(n(&r, "chunks_downloaded") <= 12, "{r}");
    // Only the changes of the index travelled, not the whole index again.
    assert_eq!(r["index_delta"], true, "{r}");
    assert!(
        n(&r, "index_bytes_downloaded") < full_index,
        "delta not smaller than the index ({full_index}): {r}"
    );

    // A client that never synced gets the whole index; a subtree client gets deltas too.
    let sub = c.path("sub");
    let r = c.sync(&sub, &["--path", "@mod_a"]);
    assert_eq!(r["index_delta"], false, "{r}");
    write(&c.repo, "@mod_a/added later.txt", b"later");
    c.build();
    c.wait_replicated();
    let r = c.sync(&sub, &["--path", "@mod_a"]);
    assert_eq!(r["index_delta"], true, "{r}");
    assert_same_tree(&c.repo.join("@mod_a"), &sub);
    // A change elsewhere in the repository is an empty delta for this subtree.
    write(&c.repo, "top-level later.txt", b"elsewhere");
    c.build();
    c.wait_replicated();
    let r = c.sync(&sub, &["--path", "@mod_a"]);
    assert_eq!(n(&r, "files_written"), 0, "{r}");
    assert_same_tree(&c.repo.join("@mod_a"), &sub);
    let r = c.sync(&dest, &[]);
    assert_eq!(r["index_delta"], true, "{r}");
    assert_same_tree(&c.repo, &dest);
}

#[test]
fn subtree_sync_mirrors_only_that_folder() {
    let c = Cluster::start(2, fill_modset);
    c.build();
    c.wait_replicated();
    let dest = c.path("sub");
    let r = c.sync(&dest, &["--path", "@mod b/data"]);
    assert_same_tree(&c.repo.join("@mod b/data"), &dest);
    assert_eq!(n(&r, "files_written"), 30);
    let mut v = hummel();
    v.args(["verify", &c.master.url])
        .arg(&dest)
        .args(["--path", "@mod b/data"]);
    ok(v);
    // A path that is not a folder of the repository is a clear error.
    fails(c.sync_cmd(&c.path("nope"), &["--path", "no/such/dir"]));
}

#[test]
fn verify_detects_changes_and_extra_files() {
    let c = Cluster::start(1, fill_modset);
    c.build();
    c.wait_replicated();
    let dest = c.path("dest");
    c.sync(&dest, &[]);
    fs::write(dest.join("@mod_a/mod.cpp"), b"name = \"B\";\n").unwrap();
    let mut v = hummel();
    v.args(["verify", &c.master.url]).arg(&dest);
    fails(v);
    // Sync repairs it; an extra file inside a mod is deleted unless --keep-extra.
    fs::write(dest.join("@mod_a/extra.txt"), b"x").unwrap();
    c.sync(&dest, &["--keep-extra"]);
    assert!(dest.join("@mod_a/extra.txt").exists());
    assert_eq!(
        fs::read(dest.join("@mod_a/mod.cpp")).unwrap(),
        b"name = \"A\";\n"
    );
    let r = c.sync(&dest, &[]);
    assert_eq!(n(&r, "files_deleted"), 1);
    assert_eq!(r["deleted"], serde_json::json!(["@mod_a/extra.txt"]));
    assert_same_tree(&c.repo, &dest);
}

#[test]
fn build_with_a_bad_name_fails_and_keeps_the_revision() {
    let c = Cluster::start(1, fill_modset);
    let r1 = n(&c.build(), "revision");
    write(&c.repo, "bad\\name.txt", b"backslash");
    let mut b = hummel();
    b.args(["build", "--master", &c.master.url, "--wait"])
        .env("HUMMEL_WRITE_TOKEN", WRITE);
    let err = fails(b);
    assert!(
        err.contains("bad\\\\name.txt") || err.contains("bad\\name.txt"),
        "{err}"
    );
    assert_eq!(c.status()["revision"]["revision"], r1);
    fs::remove_file(c.repo.join("bad\\name.txt")).unwrap();
    c.wait_replicated();
    let dest = c.path("dest");
    c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);
}

/// New replicas reach the master as changes in the slave's heartbeats: after a second build the
/// master lists the new packs at the slave, and the slave sent no second complete hashlist.
#[test]
fn new_replicas_reach_the_master_without_a_complete_hashlist() {
    let c = Cluster::start(1, fill_modset);
    let r1 = n(&c.build(), "revision");
    c.wait_replicated();
    let slave_metrics = || get_text(&format!("{}/metrics", c.slaves[0].url));
    let before = slave_metrics();
    let announces = metric(&before, "hummel_slave_announces_total");
    let changes = metric(&before, "hummel_slave_hashlist_changes_total");
    assert!(announces >= 1 && changes >= 1, "{before}");
    let first = c.slave_packs(0).len();

    write(&c.repo, "@mod_new/fresh.pbo", &data(3 << 20, 4321));
    assert!(n(&c.build(), "revision") > r1);
    c.wait_replicated();
    let held = c.slave_packs(0).len();
    assert!(held > first, "no new pack replicated");
    let st = c.status();
    assert_eq!(st["slaves"][0]["packs"], held as u64, "{st:#}");
    let after = slave_metrics();
    assert_eq!(
        metric(&after, "hummel_slave_announces_total"),
        announces,
        "{after}"
    );
    assert!(metric(&after, "hummel_slave_hashlist_changes_total") > changes);
    assert_eq!(metric(&after, "hummel_slave_hashlist_refusals_total"), 0);
    let master = get_text(&format!("{}/metrics", c.master.url));
    assert!(metric(&master, "hummel_hashlist_changes_applied_total") >= 2);
    assert_eq!(metric(&master, "hummel_hashlist_changes_refused_total"), 0);
}

/// Small files in this test. Every file costs several file system calls on each side
/// (generate, build, write, seal, rename, compare); 20,000 keep the test near a minute in a
/// debug build on two shared cores, where 200,000 took over three.
const MANY_FILES: usize = 200_000;

/// A tree of many small files syncs with the client allowed 1,024 open files (the temp files
/// it writes are opened on demand, a few at a time), and the rerun is a no-op.
#[test]
fn many_small_files_sync_within_a_small_open_file_limit() {
    let started = std::time::Instant::now();
    let c = Cluster::start(1, |root| {
        for d in 0..200 {
            fs::create_dir(root.join(format!("d{d:03}"))).unwrap();
        }
        for i in 0..MANY_FILES {
            let size = 1024 + (i * 2_654_435_761) % 3072;
            let path = root.join(format!("d{:03}/f{i}.bin", i % 200));
            fs::write(path, data(size, i as u64)).unwrap();
        }
    });
    c.build();
    c.wait_replicated();
    eprintln!("{MANY_FILES} files built in {:?}", started.elapsed());
    let dest = c.path("dest");
    let limited = |args: &str| {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "ulimit -n 1024 && exec \"$0\" sync {} \"$1\" --json {args}",
                c.master.url
            ))
            .arg(BIN)
            .arg(&dest);
        let out = ok(cmd);
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()
    };
    let r = limited("");
    eprintln!("synced in {:?}: {r}", started.elapsed());
    assert_eq!(n(&r, "files_written"), MANY_FILES as u64, "{r}");
    assert_same_tree(&c.repo, &dest);
    let again = limited("");
    assert_eq!(again["no_op"], true, "{again}");
    eprintln!("done in {:?}", started.elapsed());
}
