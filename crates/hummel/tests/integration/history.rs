//! The revision history (`hummel build --message`, `hummel revisions`, `hummel changes`) and
//! the rollback (`hummel rollback N`).

use std::fs;
use std::io::BufRead;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use super::util::*;

fn fill(root: &Path) {
    write(root, "@a/one.pbo", &data(200 << 10, 1));
    write(root, "@a/two.pbo", &data(100 << 10, 2));
    write(root, "@b/x.txt", b"x");
    write(root, "@b/y.txt", b"yy");
    write(root, "@c/gone.txt", b"gone");
    write(root, "@d/keep1.txt", b"keep 1");
    write(root, "@d/keep2.txt", b"keep 2");
}

/// Updates @a/one.pbo, adds @a/three.pbo and the mod @e, removes @b/y.txt and the mod @c.
fn change(root: &Path) {
    write(root, "@a/one.pbo", &data(150 << 10, 3));
    write(root, "@a/three.pbo", &data(10 << 10, 4));
    write(root, "@e/new.txt", b"new mod");
    fs::remove_file(root.join("@b/y.txt")).unwrap();
    fs::remove_dir_all(root.join("@c")).unwrap();
}

/// `hummel build --wait --json --message MESSAGE`; the revision published.
fn build_with_message(c: &Cluster, message: &str) -> u64 {
    let mut cmd = c.hummel();
    cmd.args(["build", "--master", &c.master.url, "--wait", "--json"])
        .args(["--message", message])
        .env("HUMMEL_WRITE_TOKEN", WRITE);
    let v: Value = serde_json::from_str(&ok(cmd)).unwrap();
    n(&v, "revision")
}

/// `hummel ARGS --master URL --json`, parsed.
fn json_of(c: &Cluster, args: &[&str]) -> Value {
    let mut cmd = c.hummel();
    cmd.args(args).args(["--master", &c.master.url, "--json"]);
    serde_json::from_str(&ok(cmd)).unwrap()
}

/// (path, change, size) of a changes answer.
fn files_of(v: &Value) -> Vec<(String, String, u64)> {
    v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["change"].as_str().unwrap().to_string(),
                n(f, "size"),
            )
        })
        .collect()
}

#[test]
fn revisions_list_messages_and_counts_and_changes_list_files_and_mods() {
    let c = Cluster::start(0, fill);
    let first = build_with_message(&c, "first release");
    change(&c.repo);
    let second = build_with_message(&c, "ACE update\nand a new mod");
    assert!(second > first);

    let list = json_of(&c, &["revisions"]);
    assert_eq!(list["total"], 2, "{list:#}");
    let revs = list["revisions"].as_array().unwrap();
    assert_eq!(n(&revs[0], "revision"), second, "newest first: {list:#}");
    assert_eq!(revs[0]["message"], "ACE update\nand a new mod");
    let ch = &revs[0]["changes"];
    assert_eq!(
        (
            n(ch, "files_added"),
            n(ch, "files_updated"),
            n(ch, "files_removed")
        ),
        (2, 1, 2),
        "{list:#}"
    );
    assert_eq!(n(ch, "bytes_changed"), (150 << 10) + (10 << 10) + 7);
    assert_eq!(n(&revs[1], "revision"), first);
    assert_eq!(revs[1]["message"], "first release");
    assert_eq!(n(&revs[1]["changes"], "files_added"), 7, "{list:#}");
    assert_eq!(revs[0]["available"], true);
    assert_eq!(
        revs[0]["retained"],
        serde_json::json!(["current", "recent"])
    );

    let log = json_of(
        &c,
        &[
            "changes",
            "--from",
            &first.to_string(),
            "--to",
            &second.to_string(),
        ],
    );
    assert_eq!((n(&log, "from"), n(&log, "to")), (first, second));
    assert_eq!(
        files_of(&log),
        [
            ("@a/one.pbo".to_string(), "updated".to_string(), 150 << 10),
            ("@a/three.pbo".into(), "added".into(), 10 << 10),
            ("@b/y.txt".into(), "removed".into(), 2),
            ("@c/gone.txt".into(), "removed".into(), 4),
            ("@e/new.txt".into(), "added".into(), 7),
        ],
        "{log:#}"
    );
    let mods: Vec<(String, String)> = log["mods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["change"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        mods,
        [
            ("@a".to_string(), "updated".to_string()),
            ("@b".into(), "updated".into()),
            ("@c".into(), "removed".into()),
            ("@e".into(), "added".into()),
        ],
        "{log:#}"
    );
    assert_eq!(log["truncated"], false);
    // By default: from the revision before the current one to it.
    assert_eq!(json_of(&c, &["changes"]), log);
    // Backwards is what a rollback would do.
    let back = json_of(
        &c,
        &[
            "changes",
            "--from",
            &second.to_string(),
            "--to",
            &first.to_string(),
        ],
    );
    assert_eq!(n(&back["summary"], "files_removed"), 2, "{back:#}");

    // Human output names the messages and the changes.
    let mut cmd = c.hummel();
    cmd.args(["revisions", "--master", &c.master.url]);
    let text = ok(cmd);
    assert!(text.contains("first release"), "{text}");
    assert!(text.contains("+2 ~1 -2 files"), "{text}");
    let mut cmd = c.hummel();
    cmd.args(["changes", "--master", &c.master.url]);
    let text = ok(cmd);
    assert!(text.contains("- @c"), "{text}");
    assert!(text.contains("+ @e/new.txt"), "{text}");
    // The dashboard lists them too.
    let page = get_text(&format!("{}/", c.master.url));
    assert!(page.contains("first release"), "page lacks the message");
    assert!(
        page.contains("+2 ~1 &minus;2 files"),
        "page lacks the summary"
    );

    // A revision that does not exist, and a message that cannot be recorded.
    let mut cmd = c.hummel();
    cmd.args(["changes", "--master", &c.master.url, "--from", "7"]);
    let err = fails(cmd);
    assert!(err.contains("revision 7 is not available"), "{err}");
    let mut cmd = c.hummel();
    cmd.args(["build", "--master", &c.master.url, "--message", "bell\u{7}"])
        .env("HUMMEL_WRITE_TOKEN", WRITE);
    let err = fails(cmd);
    assert!(err.contains("message"), "{err}");
}

/// `hummel rollback N --master URL --json`, parsed.
fn rollback(c: &Cluster, n: u64) -> Value {
    let mut cmd = c.hummel();
    cmd.args([
        "rollback",
        &n.to_string(),
        "--master",
        &c.master.url,
        "--json",
    ])
    .env("HUMMEL_WRITE_TOKEN", WRITE);
    serde_json::from_str(&ok(cmd)).unwrap()
}

#[test]
fn a_rollback_publishes_the_older_tree_as_the_newest_revision_and_clients_sync_it() {
    let c = Cluster::start(0, fill);
    let first = build_with_message(&c, "first");
    // The first revision's files as a client got them (mtimes included).
    let first_tree = c.path("first-tree");
    assert_eq!(n(&c.sync(&first_tree, &[]), "revision"), first);
    change(&c.repo);
    let second = build_with_message(&c, "second");
    let dest = c.path("dest");
    assert_eq!(n(&c.sync(&dest, &[]), "revision"), second);
    assert_same_tree(&c.repo, &dest);

    let done = rollback(&c, first);
    let third = n(&done, "revision");
    assert!(third > second, "{done}");
    assert_eq!(n(&done, "rollback_of"), first);
    let list = json_of(&c, &["revisions"]);
    let newest = &list["revisions"][0];
    assert_eq!(n(newest, "revision"), third, "{list:#}");
    assert_eq!(newest["message"], format!("rollback to {first}"));
    assert_eq!(n(newest, "rollback_of"), first);
    assert_eq!(n(&newest["changes"], "files_removed"), 2, "{list:#}");
    assert_eq!(n(&newest["changes"], "files_added"), 2, "{list:#}");
    assert_eq!(c.status()["revision"]["revision"], third);

    // A client follows: a newer revision (signed, as any), with the first one's files.
    let r = c.sync(&dest, &[]);
    assert_eq!(n(&r, "revision"), third, "{r}");
    assert_same_tree(&first_tree, &dest);
    let fresh = c.path("fresh");
    assert_eq!(n(&c.sync(&fresh, &[]), "revision"), third);
    assert_same_tree(&first_tree, &fresh);

    // Refusals, each in one line: the current revision, an unknown one, no write token.
    let mut cmd = c.hummel();
    cmd.args(["rollback", &third.to_string(), "--master", &c.master.url])
        .env("HUMMEL_WRITE_TOKEN", WRITE);
    assert!(fails(cmd).contains("is the current revision already"));
    let mut cmd = c.hummel();
    cmd.args(["rollback", "5", "--master", &c.master.url])
        .env("HUMMEL_WRITE_TOKEN", WRITE);
    assert!(fails(cmd).contains("revision 5 is not available"));
    let mut cmd = c.hummel();
    cmd.args(["rollback", &second.to_string(), "--master", &c.master.url])
        .env("HUMMEL_WRITE_TOKEN", "wrong");
    assert!(fails(cmd).contains("refused the token"));
    assert_eq!(c.status()["revision"]["revision"], third);
}

/// Posts a client report for `id` pinned to `pinned`, as a pinned client's sync does.
fn report_pin(c: &Cluster, id: &str, revision: u64, pinned: Option<u64>) {
    let body = serde_json::json!({
        "client_id": id,
        "client_key": "ab".repeat(32),
        "revision": revision,
        "path": "",
        "files": 1,
        "bytes": 1,
        "packs": [],
        "bad_slaves": [],
        "pinned": pinned,
    });
    let status = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            http()
                .post(format!("{}/api/v1/client/report", c.master.url))
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        });
    assert_eq!(status.as_u16(), 204);
}

#[test]
fn a_pinned_revision_is_kept_from_the_collection_until_unpinned() {
    let c = Cluster::start_with(0, fill, &["--keep-revisions", "1", "--gc-grace", "0s"]);
    let first = build_with_message(&c, "first");
    report_pin(&c, "pinned-client", first, Some(first));
    // Every file changes: nothing of the first revision's packs stays in use.
    for f in ["@a/one.pbo", "@a/two.pbo"] {
        write(&c.repo, f, &data(120 << 10, 9));
    }
    for f in [
        "@b/x.txt",
        "@b/y.txt",
        "@c/gone.txt",
        "@d/keep1.txt",
        "@d/keep2.txt",
    ] {
        write(&c.repo, f, f.as_bytes());
    }
    let second = build_with_message(&c, "second");
    // Collections after the build (one runs at its end, then one a second) keep the first.
    let runs = n(&c.status()["gc"], "runs");
    wait_for("two more collections", || {
        n(&c.status()["gc"], "runs") >= runs + 2
    });
    let (code, body) = get_status(&format!("{}/api/v1/index?revision={first}", c.master.url));
    assert_eq!(code, 200, "{body}");
    let st = c.status();
    let retained = st["gc"]["retained"].as_array().unwrap();
    assert!(
        retained.contains(&serde_json::json!({"revision": first, "reasons": ["pinned"]})),
        "{st:#}"
    );
    let mut cmd = c.hummel();
    cmd.args(["status", "--master", &c.master.url]);
    let text = ok(cmd);
    assert!(text.contains(&format!("{first} (pinned)")), "{text}");
    // Its packs are all there: a rollback to it works.
    let done = rollback(&c, first);
    let third = n(&done, "revision");
    assert!(third > second);

    // Unpinned, the revisions no longer kept go: the second one's index and packs.
    report_pin(&c, "pinned-client", first, None);
    wait_for("the first revision's collection", || {
        get_status(&format!("{}/api/v1/index?revision={second}", c.master.url)).0 == 404
    });
    // (The first revision's packs stay: the newest revision holds its tree.)
    let list = json_of(&c, &["revisions"]);
    let second_entry = list["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| n(r, "revision") == second)
        .unwrap()
        .clone();
    assert_eq!(second_entry["available"], false, "{list:#}");
    // A rollback to a collected revision fails in one line.
    let mut cmd = c.hummel();
    cmd.args(["rollback", &second.to_string(), "--master", &c.master.url])
        .env("HUMMEL_WRITE_TOKEN", WRITE);
    let err = fails(cmd);
    assert!(
        err.contains(&format!("revision {second} is not available")),
        "{err}"
    );
}

#[test]
fn a_pinned_client_stays_on_its_revision_until_latest() {
    let c = Cluster::start(0, fill);
    let first = build_with_message(&c, "first");
    let first_tree = c.path("first-tree");
    assert_eq!(n(&c.sync(&first_tree, &[]), "revision"), first);
    change(&c.repo);
    let second = build_with_message(&c, "second");
    let dest = c.path("dest");
    assert_eq!(n(&c.sync(&dest, &[]), "revision"), second);

    // Pinned to the first revision: older than the one held, and taken all the same.
    let r = c.sync(&dest, &["--revision", &first.to_string()]);
    assert_eq!((n(&r, "revision"), n(&r, "pinned")), (first, first), "{r}");
    assert_same_tree(&first_tree, &dest);
    // Its statement is a pinned one, which a client following the master refuses.
    let (code, body) = get_status(&format!(
        "{}/api/v1/revision?revision={first}",
        c.master.url
    ));
    assert_eq!(code, 200, "{body}");
    let info: Value = serde_json::from_str(&body).unwrap();
    assert!(
        info["statement"]
            .as_str()
            .unwrap()
            .starts_with("48554d4c50494e53"),
        "not HUMLPINS: {info}"
    );

    // A new revision: a plain sync stays on the pin, says so, and verify agrees.
    write(&c.repo, "@f/more.txt", b"more");
    let third = build_with_message(&c, "third");
    let r = c.sync(&dest, &[]);
    assert_eq!((n(&r, "revision"), n(&r, "pinned")), (first, first), "{r}");
    assert_same_tree(&first_tree, &dest);
    let out = run(c.sync_cmd(&dest, &[]));
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("pinned to revision {first}")),
        "{err}"
    );
    let mut verify = c.hummel();
    verify.args(["verify", &c.master.url]).arg(&dest);
    ok(verify);
    // The status lists the client as pinned to the first revision; the text status, and the
    // dashboard, which does not count it as behind.
    let id = std::fs::read_to_string(dest.join(".hummel/client-id")).unwrap();
    let st = c.status();
    let listed = |st: &Value| {
        st["clients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"].as_str() == Some(id.trim()))
            .unwrap_or_else(|| panic!("client {id} not listed: {st:#}"))
            .clone()
    };
    let me = listed(&st);
    assert_eq!(
        (n(&me, "revision"), n(&me, "pinned")),
        (first, first),
        "{me}"
    );
    let mut text = c.hummel();
    text.args(["status", "--master", &c.master.url]);
    let text = ok(text);
    assert!(text.contains(&format!("pinned to {first}")), "{text}");
    let (code, page) = get_status(&format!("{}/", c.master.url));
    assert_eq!(code, 200);
    assert!(page.contains(&format!("pinned to {first}")), "{page}");
    // The other client (first-tree) is behind; the pinned one is not counted so.
    assert!(page.contains("1 behind the current revision; "), "{page}");
    assert!(page.contains("1 pinned</span>"), "{page}");
    // The client's report keeps the first revision from the collection.
    assert!(
        st["gc"]["retained"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| n(r, "revision") == first
                && r["reasons"].as_array().unwrap().contains(&"pinned".into())),
        "{st:#}"
    );

    // `latest` unpins: the newest revision, and plain syncs follow the master again.
    let r = c.sync(&dest, &["--revision", "latest"]);
    assert_eq!(n(&r, "revision"), third, "{r}");
    assert!(r.get("pinned").is_none(), "{r}");
    let me = listed(&c.status());
    assert!(me.get("pinned").is_none(), "{me}");
    assert_same_tree(&c.repo, &dest);
    let r = c.sync(&dest, &[]);
    assert_eq!(n(&r, "revision"), third, "{r}");
    assert!(r.get("pinned").is_none(), "{r}");

    // A revision the master does not have is refused in one line, and pins nothing.
    let err = fails(c.sync_cmd(&dest, &["--revision", "5"]));
    assert!(err.contains("revision 5 is not available"), "{err}");
    assert!(c.sync(&dest, &[]).get("pinned").is_none());
}

/// `sync --watch --revision N` stays on N: each announcement syncs it again (changing nothing),
/// and no sync runs between announcements.
#[test]
fn a_pinned_watching_client_stays_pinned() {
    let c = Cluster::start(0, fill);
    let first = build_with_message(&c, "first");
    change(&c.repo);
    build_with_message(&c, "second");
    let dest = c.path("dest");
    let mut watcher = c.sync_cmd(
        &dest,
        &["--watch", "--json", "--revision", &first.to_string()],
    );
    watcher.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = watcher.spawn().unwrap();
    let (lines, reports) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let next = || -> Value {
        serde_json::from_str(&reports.recv_timeout(Duration::from_secs(30)).unwrap()).unwrap()
    };
    let r = next();
    assert_eq!((n(&r, "revision"), n(&r, "pinned")), (first, first), "{r}");
    // The announcement of the current revision at subscription: synced again, nothing to do.
    let r = next();
    assert_eq!(
        (n(&r, "revision"), r["no_op"].clone()),
        (first, true.into()),
        "{r}"
    );
    write(&c.repo, "@f/more.txt", b"more");
    build_with_message(&c, "third");
    let r = next();
    assert_eq!((n(&r, "revision"), n(&r, "pinned")), (first, first), "{r}");
    assert!(
        reports.recv_timeout(Duration::from_millis(700)).is_err(),
        "a sync ran without an announcement"
    );
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
