//! A user's files are sacred: what a sync may touch (ownership), mass deletes that need a
//! human, and revisions identified by their content, never by their number alone.

use std::fs;
use std::path::Path;

use serde_json::{Value, json};

use super::util::*;

/// Entries a player keeps next to the mods: none of them is the repository's.
const FOREIGN: [(&str, &[u8]); 3] = [
    (".ssh/id_rsa", b"-----BEGIN OPENSSH PRIVATE KEY-----\n"),
    ("Documents/thesis.txt", b"four years of work\n"),
    ("@my_own_mod/addons/mine.pbo", b"my own mod\n"),
];

fn plant_foreign(dest: &Path) {
    for (rel, content) in FOREIGN {
        write(dest, rel, content);
    }
}

/// Every foreign entry is still there, byte for byte; then they are removed, so that DEST can
/// be compared with the repository.
fn take_back_foreign(dest: &Path) {
    for (rel, content) in FOREIGN {
        assert_eq!(fs::read(dest.join(rel)).unwrap(), content, "{rel} changed");
    }
    for top in [".ssh", "Documents", "@my_own_mod"] {
        fs::remove_dir_all(dest.join(top)).unwrap();
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// `hummel verify MASTER DEST`, not run.
fn verify_cmd(c: &Cluster, dest: &Path) -> std::process::Command {
    let mut v = hummel();
    v.args(["verify", &c.master.url]).arg(dest);
    v
}

/// Stops the master, puts the backup of its data folder back, starts it on `port` again and
/// waits until it offers revision `first` again.
fn restore_backup(c: &mut Cluster, port: u16, first: u64) {
    c.master.kill9();
    fs::remove_dir_all(c.path("master")).unwrap();
    copy_tree(&c.path("backup"), &c.path("master"));
    c.master = start_master(c.dir.path(), &c.repo, &[], port);
    wait_for("the restored master", || {
        c.status()["revision"]["revision"].as_u64() == Some(first)
    });
}

#[test]
fn a_sync_into_a_populated_folder_touches_only_the_repositorys_names() {
    let c = Cluster::start(1, fill_modset);
    c.build();
    c.wait_replicated();
    let dest = c.path("dest");
    plant_foreign(&dest);
    // A mod the player already has, in an older version with a file the repository lacks.
    write(&dest, "@mod_a/mod.cpp", b"name = \"old A\";\n");
    write(&dest, "@mod_a/addons/old.pbo", b"left over\n");

    let dry = c.sync(&dest, &["--dry-run"]);
    assert_eq!(dry["adopted"], json!(["@mod_a"]));
    assert_eq!(dry["delete"], json!(["@mod_a/addons/old.pbo"]));
    assert!(dry.get("refused").is_none(), "{dry}");

    let r = c.sync(&dest, &[]);
    assert_eq!(r["adopted"], json!(["@mod_a"]));
    assert_eq!(r["deleted"], json!(["@mod_a/addons/old.pbo"]));
    // verify looks at what the repository owns, and finds it identical.
    ok(verify_cmd(&c, &dest));
    // A no-op stays a no-op with someone else's entries beside the mods.
    assert_eq!(c.sync(&dest, &[])["no_op"], true);

    // The admin removes a folder and a file: the client deletes exactly those.
    fs::remove_dir_all(c.repo.join("日本語")).unwrap();
    fs::remove_file(c.repo.join("top.txt")).unwrap();
    c.build();
    let r = c.sync(&dest, &[]);
    let mut deleted = strings(&r["deleted"]);
    deleted.sort();
    assert_eq!(deleted, ["top.txt", "日本語", "日本語/テスト.cfg"]);
    take_back_foreign(&dest);
    assert_same_tree(&c.repo, &dest);

    // Human output names what it deleted, not only a count.
    write(&dest, "@mod_a/stray.txt", b"x");
    let out = ok(c.sync_cmd(&dest, &[]));
    assert!(out.contains("deleted @mod_a/stray.txt"), "{out}");
}

#[test]
fn a_revision_that_deletes_most_of_a_folder_needs_a_human() {
    let c = Cluster::start(1, fill_modset);
    c.build();
    c.wait_replicated();
    // A server that mirrors one mod; the admin removes 16 of its 30 files (under half of the
    // repository, so the master publishes it without a confirmation).
    let dest = c.path("dest");
    c.sync(&dest, &["--path", "@mod b"]);
    for i in 0..16 {
        fs::remove_file(
            c.repo
                .join(format!("@mod b/data/sub {}/f ü {i}.txt", i % 4)),
        )
        .unwrap();
    }
    c.build();
    let before = digest(&dest);

    let dry = c.sync(&dest, &["--path", "@mod b", "--dry-run"]);
    assert_eq!(n(&dry, "files_to_delete"), 16);
    assert!(
        dry["refused"]
            .as_str()
            .unwrap()
            .contains("--allow-mass-delete"),
        "{dry}"
    );

    let err = fails(c.sync_cmd(&dest, &["--path", "@mod b"]));
    assert!(
        err.contains("refusing to delete 16 of the 30 files"),
        "{err}"
    );
    assert!(err.contains("--allow-mass-delete"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(digest(&dest), before, "a refused sync changed DEST");

    let r = c.sync(&dest, &["--path", "@mod b", "--allow-mass-delete"]);
    assert_eq!(n(&r, "files_deleted"), 16);
    assert_same_tree(&c.repo.join("@mod b"), &dest);

    // When the admin confirmed the mass delete, clients follow it without asking.
    let whole = c.path("whole");
    c.sync(&whole, &[]);
    fs::remove_dir_all(c.repo.join("@mod b")).unwrap();
    fs::remove_dir_all(c.repo.join("@mod_a")).unwrap();
    let mut b = hummel();
    b.args(["build", "--master", &c.master.url, "--wait"])
        .env("HUMMEL_WRITE_TOKEN", WRITE);
    assert!(fails(b).contains("--allow-mass-delete"));
    let mut b = hummel();
    b.args(["build", "--master", &c.master.url, "--wait"])
        .arg("--allow-mass-delete")
        .env("HUMMEL_WRITE_TOKEN", WRITE);
    ok(b);
    c.wait_replicated();
    let r = c.sync(&whole, &[]);
    assert_eq!(n(&r, "files_deleted"), 19, "{r}");
    assert_same_tree(&c.repo, &whole);
}

#[test]
fn a_client_never_goes_back_and_verify_stays_honest_after_a_master_restore() {
    let mut c = Cluster::start(1, fill_modset);
    let first = n(&c.build(), "revision");
    c.wait_replicated();
    let old_tree = c.path("old");
    c.sync(&old_tree, &[]);

    // The admin backs the master's data folder up, then publishes a change.
    let port = c.master.port();
    c.master.kill9();
    copy_tree(&c.path("master"), &c.path("backup"));
    c.master = start_master(c.dir.path(), &c.repo, &[], port);
    write(&c.repo, "@mod_a/mod.cpp", b"name = \"A 2\";\n");
    write(&c.repo, "@mod_a/addons/new.pbo", &data(300 << 10, 7));
    let second = n(&c.build(), "revision");
    assert!(second > first);
    c.wait_replicated();
    let dest = c.path("dest");
    assert_eq!(n(&c.sync(&dest, &[]), "revision"), second);
    let held = digest(&dest);

    // The data folder is restored from the backup: the master offers the older revision.
    restore_backup(&mut c, port, first);
    let err = fails(c.sync_cmd(&dest, &[]));
    assert!(err.contains("refusing to go back"), "{err}");
    assert!(err.contains("--allow-rollback"), "{err}");
    assert_eq!(digest(&dest), held, "a refused rollback changed DEST");
    // verify compares with what the master offers now: not identical.
    fails(verify_cmd(&c, &dest));

    // The restored master publishes again, from a tree that differs from what DEST holds:
    // the client follows it (whatever number it got), and never trusts its old index for it.
    write(&c.repo, "@mod_a/mod.cpp", b"name = \"A 3\";\n");
    let third = n(&c.build(), "revision");
    c.wait_replicated();
    fails(verify_cmd(&c, &dest));
    let r = c.sync(&dest, &[]);
    assert_eq!(n(&r, "revision"), third);
    assert!(!r["no_op"].as_bool().unwrap());
    assert_same_tree(&c.repo, &dest);
    ok(verify_cmd(&c, &dest));

    // Going back on purpose is one flag away.
    restore_backup(&mut c, port, first);
    let r = c.sync(&dest, &["--allow-rollback"]);
    assert_eq!(n(&r, "revision"), first);
    assert_same_tree(&old_tree, &dest);
}
