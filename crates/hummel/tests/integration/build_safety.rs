//! Safety of builds: a master never publishes a mass delete nobody confirmed (an empty,
//! missing or half-emptied repository folder), and never reuses a revision number, even after
//! its data folder was restored from a backup.

use std::fs;
use std::path::Path;

use serde_json::Value;

use super::util::*;

/// `hummel build --wait` with extra flags, not run.
fn build_cmd(c: &Cluster, extra: &[&str]) -> std::process::Command {
    let mut cmd = hummel();
    cmd.args(["build", "--master", &c.master.url, "--wait"])
        .args(extra)
        .env("HUMMEL_WRITE_TOKEN", WRITE);
    cmd
}

/// `GET /api/v1/revision`.
fn revision(url: &str) -> Value {
    serde_json::from_str(&get_text(&format!("{url}/api/v1/revision"))).unwrap()
}

/// The files below `root`, by relative path.
fn files(root: &Path) -> Vec<String> {
    digest(root)
        .into_iter()
        .filter(|(_, v)| v.starts_with("file"))
        .map(|(k, _)| k)
        .collect()
}

fn empty_folder(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            fs::remove_dir_all(p).unwrap();
        } else {
            fs::remove_file(p).unwrap();
        }
    }
}

/// Asserts `hummel build --wait` fails with one refusal line naming what it found; returns it.
fn refused(c: &Cluster, found: &str) -> String {
    let err = fails(build_cmd(c, &[]));
    let line = err.lines().find(|l| l.starts_with("error")).unwrap();
    assert!(line.contains("refusing to publish"), "{line}");
    assert!(line.contains(found), "{line}");
    assert!(line.contains("hummel build --allow-mass-delete"), "{line}");
    line.to_string()
}

/// A confirmed build: succeeds, and the revision records the confirmation.
fn confirmed(c: &Cluster, before: u64) -> Value {
    let out = ok(build_cmd(c, &["--allow-mass-delete", "--json"]));
    let b: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(b["state"], "succeeded", "{b}");
    let info = revision(&c.master.url);
    assert!(n(&info, "revision") > before, "{info}");
    assert_eq!(info["revision"], b["revision"], "{info}");
    assert_eq!(info["mass_delete_confirmed"], true, "{info}");
    info
}

#[test]
fn an_emptied_folder_is_refused_until_the_admin_confirms() {
    let c = Cluster::start(0, fill_modset);
    let count = files(&c.repo).len();
    let r1 = n(&c.build(), "revision");
    assert_eq!(
        revision(&c.master.url)["mass_delete_confirmed"],
        Value::Null
    );

    empty_folder(&c.repo);
    refused(
        &c,
        &format!("holds no files, so the build removes {count} of {count} files (100%)"),
    );
    assert_eq!(n(&revision(&c.master.url), "revision"), r1);
    let r2 = n(&confirmed(&c, r1), "revision");
    assert_eq!(revision(&c.master.url)["files"], 0);

    // An ordinary build later carries no confirmation.
    fill_modset(&c.repo);
    let r3 = n(&c.build(), "revision");
    assert!(r3 > r2);
    let info = revision(&c.master.url);
    assert_eq!(n(&info, "revision"), r3);
    assert_ne!(info["mass_delete_confirmed"], true, "{info}");
}

#[test]
fn a_deleted_folder_is_refused_until_the_admin_confirms() {
    let c = Cluster::start(0, fill_modset);
    let r1 = n(&c.build(), "revision");
    fs::remove_dir_all(&c.repo).unwrap();
    refused(&c, "is missing, so the build removes");
    assert_eq!(n(&revision(&c.master.url), "revision"), r1);
    let info = confirmed(&c, r1);
    assert_eq!(info["files"], 0);
}

#[test]
fn removing_most_files_is_refused_until_the_admin_confirms() {
    let c = Cluster::start(0, fill_modset);
    let r1 = n(&c.build(), "revision");
    let all = files(&c.repo);
    let gone = (all.len() * 6).div_ceil(10);
    for f in &all[..gone] {
        fs::remove_file(c.repo.join(f)).unwrap();
    }
    let line = refused(
        &c,
        &format!("the build removes {gone} of {} files", all.len()),
    );
    assert!(line.contains(&format!("of revision {r1}")), "{line}");
    assert_eq!(n(&revision(&c.master.url), "revision"), r1);
    let info = confirmed(&c, r1);
    assert_eq!(n(&info, "files") as usize, all.len() - gone);
}

#[test]
fn serve_keeps_its_revision_when_the_folder_is_empty_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    fill_modset(&repo);
    let serve = |log: &str| {
        let mut cmd = hummel();
        cmd.arg("serve")
            .arg(&repo)
            .arg("--data")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0"]);
        Proc::start(log, cmd, &dir.path().join("logs"))
    };
    let mut first = serve("serve1");
    wait_for("the first revision", || {
        revision(&first.url)["revision"].is_u64()
    });
    let before = revision(&first.url);
    first.kill9();

    empty_folder(&repo);
    let second = serve("serve2");
    wait_for("the start-up build to be refused", || {
        second.log_text().contains("refusing to publish")
    });
    let log = second.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("refusing to publish"))
        .unwrap();
    assert!(line.contains("holds no files"), "{line}");
    let after = revision(&second.url);
    assert_eq!(after["revision"], before["revision"], "{after}");
    assert_eq!(after["files"], before["files"], "{after}");
}

/// The UTC time as the digits `YYYYMMDDhhmmss`, computed independently of the master.
fn utc_digits(t: std::time::SystemTime) -> u64 {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Walk the calendar from 1970: plain and obviously right rather than fast.
    let (mut year, mut days) = (1970u64, days);
    let leap = |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    while days >= if leap(year) { 366 } else { 365 } {
        days -= if leap(year) { 366 } else { 365 };
        year += 1;
    }
    let lengths = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut month = 1;
    for len in lengths {
        if days < len {
            break;
        }
        days -= len;
        month += 1;
    }
    let day = days + 1;
    ((((year * 100 + month) * 100 + day) * 100 + rest / 3600) * 100 + rest / 60 % 60) * 100
        + rest % 60
}

#[test]
fn a_master_restored_from_a_backup_never_reuses_a_revision_number() {
    let mut c = Cluster::start(0, fill_modset);
    let r1 = n(&c.build(), "revision");
    let id = revision(&c.master.url)["repository_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 32, "{id}");
    let data_dir = c.path("master");
    let backup = c.path("backup");
    // The backup, taken while the master is stopped.
    c.master.kill9();
    copy_tree(&data_dir, &backup);
    c.master = start_master(c.dir.path(), &c.repo, &[], 0);

    write(&c.repo, "@mod_new/after-backup.pbo", &data(200 << 10, 5));
    let r2 = n(&c.build(), "revision");
    assert!(r2 > r1);
    c.master.kill9();
    // Numbers have a resolution of one second, and builds within one second take the next
    // ones: a real restore takes longer than the clock needs to pass them.
    wait_for("the clock to pass the second revision's number", || {
        utc_digits(std::time::SystemTime::now()) > r2
    });

    // The data folder comes back from the backup: it knows revision r1 only.
    fs::remove_dir_all(&data_dir).unwrap();
    copy_tree(&backup, &data_dir);
    c.master = start_master(c.dir.path(), &c.repo, &[], 0);
    assert_eq!(n(&revision(&c.master.url), "revision"), r1);
    write(&c.repo, "@mod_new/after-restore.pbo", &data(200 << 10, 6));
    let r3 = n(&c.build(), "revision");
    assert!(
        r3 > r2,
        "revision {r3} after {r2}: a number clients may hold"
    );
    let info = revision(&c.master.url);
    assert_eq!(n(&info, "revision"), r3);
    assert_eq!(info["repository_id"], id.as_str(), "{info}");
}

/// A repository whose `@linked` folder is a symlink to a folder outside it.
fn fill_with_link(root: &Path) {
    write(root, "real/a.txt", b"a real file\n");
    let outside = root.parent().unwrap().join("outside");
    write(&outside, "mod/b.pbo", &data(200 << 10, 3));
    std::os::unix::fs::symlink(outside.join("mod"), root.join("@linked")).unwrap();
}

#[test]
fn a_symlinked_folder_is_published_only_with_follow_symlinks() {
    let c = Cluster::start(1, fill_with_link);
    let b = c.build();
    let warning = "skipped symlink @linked: clients will delete it from their copies; use \
                   --follow-symlinks to publish its target";
    assert!(
        b["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w == warning),
        "{b}"
    );
    c.wait_replicated();
    let dest = c.path("dest");
    c.sync(&dest, &[]);
    assert!(dest.join("real/a.txt").is_file());
    assert!(!dest.join("@linked").exists());

    let c = Cluster::start_with(1, fill_with_link, &["--follow-symlinks"]);
    let b = c.build();
    assert_eq!(b["state"], "succeeded", "{b}");
    c.wait_replicated();
    let dest = c.path("dest");
    c.sync(&dest, &[]);
    assert_eq!(
        fs::read(dest.join("@linked/b.pbo")).unwrap(),
        data(200 << 10, 3)
    );
    assert!(dest.join("@linked").is_dir() && !dest.join("@linked").is_symlink());
}
