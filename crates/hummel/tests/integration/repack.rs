//! `hummel master --repack-level`: the background repack publishes the same tree from smaller
//! packs; slaves replicate the new packs and clients sync it like any revision.

use super::util::*;

fn fill_small(root: &std::path::Path) {
    write(root, "a/one.pbo", &data(600 << 10, 1));
    write(root, "a/two.pbo", &data(300 << 10, 2));
    write(
        root,
        "b/notes.txt",
        &b"hummel repack test line\n".repeat(4000),
    );
    write(root, "top.txt", b"top level\n");
}

#[test]
fn repack_revision_replicates_and_syncs() {
    let c = Cluster::start_with(1, fill_small, &["--repack-level", "9"]);
    let b = c.build();
    assert_eq!(b["state"], "succeeded", "{b}");
    let built = n(&b, "revision");

    // The repack publishes the next revision after the build; the status shows it.
    wait_for("the repack revision", || {
        let st = c.status();
        st["revision"]["revision"].as_u64() > Some(built)
            && st["repack"]["last_revision"] == st["revision"]["revision"]
            && st["repack"]["running"] == false
    });
    let st = c.status();
    let repacked = n(&st["revision"], "revision");
    assert_eq!(st["repack"]["level"], 9, "{st:#}");
    assert_eq!(st["revision"]["files"], 4, "{st:#}");
    let metrics = get_text(&format!("{}/metrics", c.master.url));
    assert_eq!(metric(&metrics, "hummel_repack_runs_total"), 1);
    assert!(metric(&metrics, "hummel_repack_bytes_saved_total") > 0);
    assert_eq!(metric(&metrics, "hummel_repack_level"), 9);

    // The slave replicates the new packs; the client gets the tree from them.
    c.wait_replicated();
    let dest = c.path("dest");
    let r = c.sync(&dest, &[]);
    assert_eq!(n(&r, "revision"), repacked, "{r}");
    assert_same_tree(&c.repo, &dest);
    // Nothing more to do: no third revision.
    let b = c.build();
    assert_eq!(n(&b, "revision"), repacked, "{b}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(c.status()["revision"]["revision"], repacked);
}

#[test]
fn repack_level_out_of_range_is_refused() {
    let err = master_refuses(&["--repack-level", "2"]);
    assert!(err.contains("repack-level"), "{err}");
}

#[test]
fn a_master_restarted_with_a_repack_level_repacks_and_clients_download_nothing() {
    let mut c = Cluster::start(1, fill_small);
    let built = n(&c.build(), "revision");
    c.wait_replicated();
    let dest = c.path("dest");
    assert_eq!(n(&c.sync(&dest, &[]), "revision"), built);
    assert!(c.status().get("repack").is_none(), "off by default");

    // Restarted with a level: the current revision is below it, so a pass runs at start.
    let port = c.master.port();
    c.master.kill9();
    c.master = start_master(c.dir.path(), &c.repo, &["--repack-level", "9"], port);
    wait_for("the repack revision", || {
        let st = c.status();
        st["revision"]["revision"].as_u64() > Some(built) && st["repack"]["running"] == false
    });
    let repacked = n(&c.status()["revision"], "revision");
    c.wait_replicated();
    // Same files: the client only takes the new index, no chunk.
    let r = c.sync(&dest, &[]);
    assert_eq!(n(&r, "revision"), repacked, "{r}");
    assert_eq!(n(&r, "bytes_downloaded"), 0, "{r}");
    assert_eq!(n(&r, "files_written"), 0, "{r}");
    assert_same_tree(&c.repo, &dest);
}
