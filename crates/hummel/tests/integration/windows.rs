//! Players on Windows: the Windows client (`hummel.exe` under Wine, see `wine.rs`) against a
//! Linux master and slaves. Fresh sync, delta, no-op, verify, resume after a kill, fail-over
//! when a slave dies mid-sync, read-only files, a file a game holds open, paths over 260
//! characters, and names Windows cannot hold (which Linux clients still sync).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::util::*;
use super::wine::*;

/// A path below `@long` that is over 260 characters on its own.
fn long_path() -> String {
    format!(
        "@long/{}/{}/deep file.txt",
        "folder with a long name ".repeat(6).trim_end(),
        "another long folder name ".repeat(6).trim_end()
    )
}

/// The mod set, plus a read-only file and a path far over 260 characters.
fn fill_windows_modset(root: &Path) {
    fill_modset(root);
    write(root, "@mod_a/readonly.cfg", b"class ReadOnly {};\n");
    let ro = root.join("@mod_a/readonly.cfg");
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o444)).unwrap();
    assert!(long_path().len() > 300);
    write(root, &long_path(), &data(70_000, 77));
}

/// A fresh sync, `status`, a no-op, a delta (changed, new, deleted and newly read-only files)
/// and verify, all from the Windows client; the renames are made durable folder by folder.
#[test]
fn windows_client_syncs_fresh_then_a_delta_and_verifies() {
    let Some(w) = wine() else { return };
    let c = Cluster::start(2, fill_windows_modset);
    c.build();
    c.wait_replicated();
    let dest = c.path("dest");

    let first = w.sync(&c, &dest, &[]);
    assert_same_windows_tree(&c.repo, &dest);
    assert!(n(&first, "files_written") > 30, "{first:#}");
    let ro = fs::metadata(dest.join("@mod_a/readonly.cfg")).unwrap();
    assert!(
        ro.permissions().readonly(),
        "the read-only attribute was not set"
    );
    let placed = dest.join(long_path());
    assert!(
        win_path(&placed).encode_utf16().count() > 300,
        "{}",
        placed.display()
    );
    assert_eq!(fs::read(&placed).unwrap(), data(70_000, 77));

    // `status` from Windows sees this client.
    let mut status = w.hummel();
    status.args(["status", "--master", &c.master.url, "--json"]);
    let st: serde_json::Value = serde_json::from_str(&ok(status)).unwrap();
    assert_eq!(st["clients"].as_array().unwrap().len(), 1, "{st:#}");
    assert_eq!(st["revision"]["revision"], first["revision"], "{st:#}");

    // Nothing changed: the stat cache (write and creation times on Windows) vouches for all.
    let noop = w.sync(&c, &dest, &[]);
    assert_eq!(noop["no_op"], true, "{noop:#}");

    // A delta: one file appended to, one new, one deleted, one made read-only, one read-only
    // file rewritten.
    let mut big = fs::read(c.repo.join("@big/addons/big.pbo")).unwrap();
    big.extend_from_slice(&data(100_000, 5));
    fs::write(c.repo.join("@big/addons/big.pbo"), &big).unwrap();
    write(&c.repo, "@mod_a/new.txt", b"new\n");
    fs::remove_file(c.repo.join("top.txt")).unwrap();
    let mod_cpp = c.repo.join("@mod_a/mod.cpp");
    fs::set_permissions(&mod_cpp, fs::Permissions::from_mode(0o444)).unwrap();
    let ro = c.repo.join("@mod_a/readonly.cfg");
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&ro, b"class ReadOnly { changed = 1; };\n").unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o444)).unwrap();
    c.build();
    c.wait_replicated();

    let mut cmd = w.sync_cmd(&c, &dest, &["--json"]);
    cmd.arg("-v");
    let out = run(cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let delta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_same_windows_tree(&c.repo, &dest);
    assert_eq!(delta["index_delta"], true, "{delta:#}");
    assert_eq!(n(&delta, "files_deleted"), 1, "{delta:#}");
    assert_eq!(n(&delta, "files_written"), 3, "{delta:#}");
    assert_eq!(n(&delta, "files_touched"), 1, "{delta:#}");
    assert!(
        n(&delta, "bytes_downloaded") < 300_000,
        "a delta downloads what changed: {delta:#}"
    );
    // Durability without syncfs: every temp file flushed, then every folder renamed into.
    assert!(
        err.contains("temp files made durable, file by file files=3"),
        "{err}"
    );
    assert!(
        err.contains("renames made durable, folder by folder"),
        "{err}"
    );

    ok(w.verify_cmd(&c, &dest));
    // A changed byte is found.
    corrupt(&dest.join("@mod_a/addons/a.pbo"));
    let out = run(w.verify_cmd(&c, &dest));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("a.pbo: content differs"),
        "{out:?}"
    );
}

/// Eight files of 8 MiB plus the mod set.
fn fill_large(root: &Path) {
    for i in 0..8 {
        write(root, &format!("big/{i}.bin"), &data(8 << 20, 900 + i));
    }
    fill_modset(root);
}

/// kill -9 of the Windows client half way: the rerun keeps what it verified and downloads
/// the rest only.
#[test]
fn windows_client_resumes_after_a_kill() {
    let Some(w) = wine() else { return };
    let mut c = Cluster::start(0, fill_large);
    // One slave at 16 MB/s: the sync takes a few seconds, long enough to kill it.
    c.add_slave(&["--limit-rate", "16M"]);
    c.build();
    c.wait_replicated();
    let dest = c.path("dest");
    let plan = w.sync(&c, &dest, &["--dry-run"]);
    let (full, to_write) = (n(&plan, "bytes_to_download"), n(&plan, "bytes_to_write"));

    let mut child = spawn_until_filled(w.sync_cmd(&c, &dest, &["--json"]), &dest, to_write, 0.5);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        windows_digest(&dest)
            .values()
            .all(|d| !d.starts_with("file")),
        "a file was placed before the kill"
    );

    let r = w.sync(&c, &dest, &[]);
    assert_same_windows_tree(&c.repo, &dest);
    let downloaded = n(&r, "bytes_downloaded");
    eprintln!(
        "windows: full sync {full} bytes; after the kill: {downloaded} downloaded, {} resumed",
        n(&r, "bytes_resumed")
    );
    assert!(
        downloaded as f64 <= 0.6 * full as f64,
        "the rerun downloaded {downloaded} of {full} bytes: {r:#}"
    );
    assert!(
        n(&r, "bytes_resumed") as f64 >= 0.4 * to_write as f64,
        "{r:#}"
    );
    assert_eq!(fs::read_dir(dest.join(".hummel/tmp")).unwrap().count(), 0);
    ok(w.verify_cmd(&c, &dest));
}

/// A slave dies (kill -9) while the Windows client downloads from it: the client fails over
/// to the other copy and completes.
#[test]
fn windows_client_fails_over_when_a_slave_dies_mid_sync() {
    let Some(w) = wine() else { return };
    let mut c = Cluster::start(0, fill_large);
    c.add_slave(&["--limit-rate", "12M"]);
    c.add_slave(&["--limit-rate", "12M"]);
    c.build();
    c.wait_replicated();
    let dest = c.path("dest");
    let plan = w.sync(&c, &dest, &["--dry-run"]);
    let to_write = n(&plan, "bytes_to_write");

    let child = spawn_until_filled(w.sync_cmd(&c, &dest, &["--json"]), &dest, to_write, 0.3);
    c.slaves[0].kill9();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_same_windows_tree(&c.repo, &dest);
    assert_eq!(
        r["slaves_used"].as_array().unwrap().len(),
        2,
        "both slaves served before one died: {r:#}"
    );
    ok(w.verify_cmd(&c, &dest));
}

/// Read-only files are replaced and deleted; a file another program holds open (a running
/// game) is retried, then named in one line asking to close the game; released during the
/// retries, the sync completes.
#[test]
fn windows_client_replaces_read_only_and_open_files() {
    let Some(w) = wine() else { return };
    let c = Cluster::start(1, |root| {
        write(root, "@m/addons/held.pbo", &data(200_000, 1));
        write(root, "@m/ro.cfg", b"old\n");
        write(root, "@m/gone.cfg", b"gone\n");
        for f in ["@m/ro.cfg", "@m/gone.cfg"] {
            fs::set_permissions(root.join(f), fs::Permissions::from_mode(0o444)).unwrap();
        }
    });
    c.build();
    c.wait_replicated();
    let dest = c.path("dest");
    w.sync(&c, &dest, &[]);
    assert!(
        fs::metadata(dest.join("@m/ro.cfg"))
            .unwrap()
            .permissions()
            .readonly()
    );

    // Everything changes: the held file, the read-only one (still read-only), one is deleted.
    write(&c.repo, "@m/addons/held.pbo", &data(200_000, 2));
    let ro = c.repo.join("@m/ro.cfg");
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&ro, b"new\n").unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o444)).unwrap();
    let gone = c.repo.join("@m/gone.cfg");
    fs::set_permissions(&gone, fs::Permissions::from_mode(0o644)).unwrap();
    fs::remove_file(&gone).unwrap();
    c.build();
    c.wait_replicated();

    // The game keeps the file open: retried, then one line naming it.
    let held = w.hold_open(&dest.join("@m/addons/held.pbo"));
    let err = fails(w.sync_cmd(&c, &dest, &[]));
    assert!(err.contains("in use by another program, retrying"), "{err}");
    let line = err.lines().find(|l| l.starts_with("error")).unwrap();
    assert!(
        line.contains(r"cannot replace Z:")
            && line.contains(r"\@m\addons\held.pbo")
            && line.contains("close the game")
            && line.contains("Arma 3"),
        "{line}"
    );
    assert!(
        !line.contains(r"\\?\"),
        "the long-path prefix is not shown: {line}"
    );

    // The game quits while the sync retries: it completes.
    let mut held = Some(held);
    let (status, stdout, err) = run_until_stderr(
        w.sync_cmd(&c, &dest, &["--json"]),
        |l| l.contains("in use by another program, retrying"),
        || held.take().unwrap().release(),
    );
    assert!(status.success(), "{err}");
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(n(&r, "files_deleted"), 1, "{r:#}");
    assert_same_windows_tree(&c.repo, &dest);
    assert!(
        fs::metadata(dest.join("@m/ro.cfg"))
            .unwrap()
            .permissions()
            .readonly()
    );
    ok(w.verify_cmd(&c, &dest));
}

/// One name of each kind Windows cannot hold (and a pair differing only in case), beside
/// ordinary ones.
const UNHOLDABLE: [&str; 16] = [
    "@bad/CON",
    "@bad/prn.txt",
    "@bad/Aux.cpp",
    "@bad/nul.tar.gz",
    "@bad/COM1.log",
    "@bad/lpt9",
    "@bad/trailing dot.",
    "@bad/trailing space ",
    "@bad/less<than",
    "@bad/greater>than",
    "@bad/co:lon",
    "@bad/quo\"te",
    "@bad/pi|pe",
    "@bad/what?",
    "@bad/st*ar",
    "@bad/Readme.txt",
];

fn fill_unholdable(root: &Path) {
    write(root, "@ok/addons/fine.pbo", &data(50_000, 3));
    for (i, p) in UNHOLDABLE.iter().enumerate() {
        write(root, p, format!("file {i}\n").as_bytes());
    }
    write(root, "@bad/README.txt", b"the other case\n");
}

/// The master publishes names Windows cannot hold with a warning each, and a Linux client
/// syncs them all.
#[test]
fn names_windows_cannot_hold_are_warned_about_and_synced_on_linux() {
    let c = Cluster::start(1, fill_unholdable);
    let st = c.build();
    let warnings: Vec<&str> = st["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    for p in &UNHOLDABLE[..15] {
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with(&format!("{p}: ")) && w.contains("Windows clients refuse")),
            "no warning for {p:?}: {warnings:#?}"
        );
    }
    assert!(
        warnings.contains(
            &"@bad/README.txt and @bad/Readme.txt differ only in case; clients on Windows and \
              macOS refuse to sync until one is renamed"
        ),
        "{warnings:#?}"
    );
    // The dashboard shows them where it shows every build warning.
    let page = get_text(&format!("{}/", c.master.url));
    assert!(
        page.contains("CON is a reserved device name on Windows"),
        "{page}"
    );

    c.wait_replicated();
    let dest = c.path("dest");
    c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);
}

/// The Windows client refuses a repository with names Windows cannot hold, naming every one,
/// and writes nothing at all (no file under another name).
#[test]
fn windows_client_refuses_names_windows_cannot_hold() {
    let Some(w) = wine() else { return };
    let c = Cluster::start(1, fill_unholdable);
    c.build();
    c.wait_replicated();
    let dest = c.path("dest");
    let err = fails(w.sync_cmd(&c, &dest, &[]));
    let line = err.lines().find(|l| l.starts_with("error")).unwrap();
    assert!(
        line.contains("cannot hold 16 of the repository's names, so nothing was synced"),
        "{line}"
    );
    for p in &UNHOLDABLE[..15] {
        let quoted = serde_json::to_string(p).unwrap();
        assert!(line.contains(&quoted), "{p:?} not named: {line}");
    }
    assert!(
        line.contains(
            r#""@bad/README.txt" and "@bad/Readme.txt" (names that differ only in case)"#
        ),
        "{line}"
    );
    assert!(
        windows_digest(&dest).is_empty(),
        "something was written: {:#?}",
        windows_digest(&dest)
    );

    // Only the good part: synced.
    w.sync(&c, &dest, &["--path", "@ok"]);
    assert_eq!(
        fs::read(dest.join("addons/fine.pbo")).unwrap(),
        data(50_000, 3)
    );
}

/// A revision that changes only the case of names (`Addons/X.pbo` becomes `addons/x.pbo`): on
/// Windows, where both are one file, the client renames instead of deleting what it placed.
#[test]
fn windows_client_follows_a_change_of_case() {
    let Some(w) = wine() else { return };
    let c = Cluster::start(1, |root| {
        write(root, "@m/Addons/X.pbo", &data(80_000, 1));
        write(root, "@m/Addons/keep.txt", b"keep\n");
        write(root, "@m/Mod.cpp", b"name = \"m\";\n");
        // Unchanged, so that the renames are not most of the repository (a mass delete).
        for i in 0..4 {
            write(root, &format!("@other/{i}.bin"), &data(60_000, 10 + i));
        }
    });
    c.build();
    c.wait_replicated();
    let dest = c.path("dest");
    w.sync(&c, &dest, &[]);
    assert_same_windows_tree(&c.repo, &dest);

    fs::rename(
        c.repo.join("@m/Addons/X.pbo"),
        c.repo.join("@m/Addons/x.pbo"),
    )
    .unwrap();
    fs::rename(c.repo.join("@m/Addons"), c.repo.join("@m/addons")).unwrap();
    fs::rename(c.repo.join("@m/Mod.cpp"), c.repo.join("@m/mod.cpp")).unwrap();
    c.build();
    c.wait_replicated();
    let r = w.sync(&c, &dest, &[]);
    assert_same_windows_tree(&c.repo, &dest);
    assert_eq!(n(&r, "bytes_downloaded"), 0, "the content was there: {r:#}");
    let again = w.sync(&c, &dest, &[]);
    assert_eq!(again["no_op"], true, "{again:#}");
    ok(w.verify_cmd(&c, &dest));
}
