//! Sets (issue 11, point 3) and the repository's name and description (point 5): the admin's
//! `sets.toml` read at each build into the signed revision, `sync --set` and
//! `sync --path A --path B` into one folder beside the player's own mods and files, the
//! admin changing a set, a bad sets file, and what the join page and dashboard show.

use std::fs;
use std::path::Path;

use super::util::*;

const OPS: &str = r#"
[[set]]
name = "ops"
description = "Sunday operations"
mods = ["@ace", "@cba"]
[set.server]
address = "play.example.org"
port = 2302
password = true

[[set]]
name = "training"
mods = ["@rhs"]
"#;

fn fill(r: &Path) {
    write(r, "@ace/addons/ace_main.pbo", &data(200 << 10, 1));
    write(r, "@ace/mod.cpp", b"name = \"ACE\";\n");
    write(r, "@cba/addons/cba_main.pbo", &data(100 << 10, 2));
    write(r, "@cba/addons/cba_xeh.pbo", &data(10 << 10, 3));
    write(r, "@rhs/addons/rhs.pbo", &data(50 << 10, 4));
    write(r, "readme.txt", b"not a mod\n");
}

/// A cluster whose master reads `sets` (written into a folder of its own) and has a name and
/// a description; returns it with the sets file's path.
fn cluster_with_sets(sets: &str) -> (Cluster, tempfile::TempDir, std::path::PathBuf) {
    let admin = tempfile::tempdir().unwrap();
    let file = admin.path().join("sets.toml");
    fs::write(&file, sets).unwrap();
    let file_arg = file.display().to_string();
    let c = Cluster::start_with(
        1,
        fill,
        &[
            "--name",
            "Sunday group",
            "--description",
            "Mods for our Sunday operations",
            "--sets",
            &file_arg,
        ],
    );
    (c, admin, file)
}

fn build_fails(c: &Cluster) -> String {
    let mut cmd = c.hummel();
    cmd.args(["build", "--master", &c.master.url, "--wait"])
        .env("HUMMEL_WRITE_TOKEN", WRITE);
    fails(cmd)
}

fn verify_ok(c: &Cluster, dest: &Path, args: &[&str]) -> String {
    let mut cmd = c.hummel();
    cmd.args(["verify", &c.master.url]).arg(dest).args(args);
    ok(cmd)
}

#[test]
fn a_set_syncs_beside_the_players_own_mods_and_follows_the_admins_changes() {
    let (c, _admin, sets) = cluster_with_sets(OPS);
    let first = c.build();
    c.wait_replicated();

    // The game's mod folder already holds a mod of the player's own and a file of theirs.
    let dest = c.path("Arma 3 mods");
    write(&dest, "@own/addons/own.pbo", b"the player's own mod");
    write(&dest, "notes.txt", b"the player's notes");
    let own = digest(&dest.join("@own"));

    let r = c.sync(&dest, &["--set", "ops"]);
    assert_eq!(n(&r, "files_written"), 4, "{r}");
    assert_same_tree(&c.repo.join("@ace"), &dest.join("@ace"));
    assert_same_tree(&c.repo.join("@cba"), &dest.join("@cba"));
    assert!(!dest.join("@rhs").exists() && !dest.join("readme.txt").exists());
    assert_eq!(digest(&dest.join("@own")), own);
    assert_eq!(
        fs::read(dest.join("notes.txt")).unwrap(),
        b"the player's notes"
    );
    verify_ok(&c, &dest, &["--set", "ops"]);
    // Again: nothing to do.
    let again = c.sync(&dest, &["--set", "ops"]);
    assert_eq!(n(&again, "files_written"), 0, "{again}");

    // The admin drops @cba from the set and adds @rhs; no file of the repository changed, but
    // the build publishes a new revision (the sets are part of it).
    fs::write(
        &sets,
        OPS.replace("[\"@ace\", \"@cba\"]", "[\"@ace\", \"@rhs\"]"),
    )
    .unwrap();
    let second = c.build();
    assert!(
        second["revision"].as_u64() > first["revision"].as_u64(),
        "{first} then {second}"
    );
    c.wait_replicated();
    let r = c.sync(&dest, &["--set", "ops"]);
    assert_eq!(n(&r, "files_deleted"), 2, "{r}");
    assert_eq!(n(&r, "files_written"), 1, "{r}");
    assert!(!dest.join("@cba").exists(), "the dropped mod stays");
    assert_same_tree(&c.repo.join("@rhs"), &dest.join("@rhs"));
    assert_same_tree(&c.repo.join("@ace"), &dest.join("@ace"));
    assert_eq!(digest(&dest.join("@own")), own);
    assert_eq!(
        fs::read(dest.join("notes.txt")).unwrap(),
        b"the player's notes"
    );
    verify_ok(&c, &dest, &["--set", "ops"]);

    // A set the repository does not define: refused, naming the ones it does.
    let err = fails(c.sync_cmd(&dest, &["--set", "nope"]));
    assert!(
        err.contains("no set \"nope\"") && err.contains("ops"),
        "{err}"
    );

    // Several --path into one folder: each at its repository path, beside the rest.
    let two = c.path("two");
    write(&two, "@own/x.txt", b"mine");
    let r = c.sync(&two, &["--path", "@ace", "--path", "@cba"]);
    assert_eq!(n(&r, "files_written"), 4, "{r}");
    assert_same_tree(&c.repo.join("@ace"), &two.join("@ace"));
    assert_same_tree(&c.repo.join("@cba"), &two.join("@cba"));
    assert_eq!(fs::read(two.join("@own/x.txt")).unwrap(), b"mine");
    verify_ok(&c, &two, &["--path", "@ace", "--path", "@cba"]);
    // The master hears of it (its report names the selection).
    wait_for("the selection's report", || {
        c.status()["clients"]
            .as_array()
            .unwrap()
            .iter()
            .any(|cl| cl["path"] == "/paths:@ace, @cba")
    });
    // A folder that is not the repository's: refused before anything is written.
    let err = fails(c.sync_cmd(&two, &["--path", "@ace", "--path", "@nope"]));
    assert!(err.contains("@nope"), "{err}");
    // One --path keeps its meaning: DEST becomes the subtree.
    let one = c.path("one");
    c.sync(&one, &["--path", "@rhs"]);
    assert_same_tree(&c.repo.join("@rhs"), &one);

    // The join page and the dashboard show the name, the description and the link.
    let join = get_text(&format!("{}/join", c.master.url));
    assert!(join.contains("Join Sunday group with Hummel"), "{join}");
    assert!(join.contains("Mods for our Sunday operations"), "{join}");
    assert!(
        join.contains("--set ops") && join.contains("@rhs"),
        "{join}"
    );
    let hummel_link = c.master.url.replace("http://", "hummel://");
    assert!(join.contains(&hummel_link), "{join}");
    let dash = get_text(&format!("{}/", c.master.url));
    assert!(
        dash.contains("Sunday group") && dash.contains("/join"),
        "{dash}"
    );
}

#[test]
fn a_bad_sets_file_fails_the_build_naming_its_line() {
    let bad = "[[set]]\nname = \"ops\"\nmods = [\"@ace\", \"@nope\"]\n";
    let (c, _admin, sets) = cluster_with_sets(bad);
    let err = build_fails(&c);
    assert!(
        err.contains("sets.toml:3") && err.contains("@nope"),
        "{err}"
    );
    fs::write(
        &sets,
        "[[set]]\nname = \"ops\"\nmods = [\"@ace\"]\n\n[[set]]\nname = \"ops\"\nmods = [\"@cba\"]\n",
    )
    .unwrap();
    let err = build_fails(&c);
    assert!(
        err.contains("sets.toml:6") && err.contains("twice"),
        "{err}"
    );
    fs::write(&sets, "[[set]\nname = \"ops\"\n").unwrap();
    let err = build_fails(&c);
    assert!(err.contains("sets.toml:1") && err.contains("TOML"), "{err}");
    // Fixed: the build publishes, with the set.
    fs::write(&sets, "[[set]]\nname = \"ops\"\nmods = [\"@ace\"]\n").unwrap();
    c.build();
    c.wait_replicated();
    let dest = c.path("dest");
    c.sync(&dest, &["--set", "ops"]);
    assert_same_tree(&c.repo.join("@ace"), &dest.join("@ace"));
}
