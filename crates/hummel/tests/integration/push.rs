//! `hummel push`: a local folder published at a prefix of a master's repository, uploading only
//! what the master lacks; concurrent pushes; the folder build that would undo a push.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::util::*;

/// `hummel push DIR --master URL --json ARGS` as a command.
fn push_cmd(c: &Cluster, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = c.hummel();
    cmd.arg("push")
        .arg(dir)
        .args(["--master", &c.master.url, "--json"])
        .args(args)
        .env("HUMMEL_WRITE_TOKEN", WRITE);
    cmd
}

/// Runs a push that must succeed; its `--json` report.
fn push(c: &Cluster, dir: &Path, args: &[&str]) -> Value {
    let out = ok(push_cmd(c, dir, args));
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("push printed {out:?}: {e}"))
}

/// 12.5 MiB in 16 files.
fn fill(root: &Path) {
    for i in 0..16u64 {
        write(
            root,
            &format!("@m/addons/part{i}.pbo"),
            &data(800 << 10, i + 1),
        );
    }
    write(root, "@m/mod.cpp", b"name = \"m\";");
    fs::create_dir_all(root.join("@m/empty")).unwrap();
}

fn current_revision(c: &Cluster) -> u64 {
    n(&c.status()["revision"], "revision")
}

#[test]
fn push_then_sync_then_a_small_change_uploads_little() {
    let c = Cluster::start(1, |_| {});
    let admin = c.path("admin");
    fill(&admin);
    let first = push(&c, &admin, &[]);
    let total: u64 = 16 * (800 << 10);
    assert!(n(&first, "bytes_uploaded") > 0, "{first}");
    assert!(n(&first, "bytes_uploaded") < total, "compressed: {first}");
    assert!(n(&first, "chunks_uploaded") > 16, "{first}");
    assert!(first["duration_ms"].is_u64(), "{first}");
    let rev1 = n(&first, "revision");
    c.wait_replicated();
    let dest = c.path("dest");
    c.sync(&dest, &[]);
    assert_same_tree(&admin, &dest);

    // The same tree again: nothing to upload, nothing published.
    let again = push(&c, &admin, &[]);
    assert_eq!(n(&again, "bytes_uploaded"), 0, "{again}");
    assert!(again["revision"].is_null(), "{again}");

    // 1 %: 128 KiB rewritten inside one file (the chunks around it are uploaded whole).
    let changed = 128 << 10;
    let file = admin.join("@m/addons/part3.pbo");
    let mut bytes = fs::read(&file).unwrap();
    bytes[200_000..200_000 + changed].copy_from_slice(&data(changed, 99));
    fs::write(&file, &bytes).unwrap();
    let second = push(&c, &admin, &["--message", "one percent"]);
    let uploaded = n(&second, "bytes_uploaded");
    assert!(uploaded > 0, "{second}");
    assert!(
        uploaded <= 2 * changed as u64,
        "a {changed}-byte change uploaded {uploaded} bytes: {second}"
    );
    assert!(n(&second, "revision") > rev1, "{second}");
    // The master followed the push by the id it sent: every chunk it lacked arrived, and the
    // push ended as the revision it published (what the dashboard's Pushes section shows).
    let status = c.status();
    let followed = status["pushes"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["id"] == second["push"]))
        .unwrap_or_else(|| panic!("push {} not in status: {status}", second["push"]));
    assert_eq!(followed["state"], "published", "{followed}");
    assert_eq!(followed["revision"], second["revision"], "{followed}");
    assert_eq!(
        followed["chunks_missing"], second["chunks_missing"],
        "{followed}"
    );
    assert_eq!(
        followed["chunks_received"], second["chunks_uploaded"],
        "{followed}"
    );
    let mut history = c.hummel();
    history.args(["revisions", "--master", &c.master.url, "--json"]);
    let history: Value = serde_json::from_str(&ok(history)).unwrap();
    let newest = &history["revisions"][0];
    assert_eq!(newest["message"], "one percent", "{history}");
    assert_ne!(newest["repack"], true, "a push is no repack: {history}");
    assert_eq!(newest["changes"]["files_updated"], 1, "{history}");
    c.wait_replicated();
    c.sync(&dest, &[]);
    assert_same_tree(&admin, &dest);

    // A folder build would replace the pushed tree by the (empty) folder: refused.
    let mut build = c.hummel();
    build
        .args(["build", "--master", &c.master.url, "--wait", "--json"])
        .env("HUMMEL_WRITE_TOKEN", WRITE);
    let out = run(build);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("fed by `hummel push`"), "{text}");
    assert_eq!(current_revision(&c), n(&second, "revision"));
    c.sync(&dest, &[]);
    assert_same_tree(&admin, &dest);
}

#[test]
fn a_push_at_a_prefix_keeps_the_rest_and_dry_run_writes_nothing() {
    let c = Cluster::start(1, |_| {});
    let a = c.path("a");
    write(&a, "one.txt", b"one");
    write(&a, "sub/two.txt", &data(100 << 10, 1));
    let b = c.path("b");
    write(&b, "three.txt", &data(50 << 10, 2));
    push(&c, &a, &["--path", "@a"]);
    let dry = push(&c, &b, &["--path", "mods/@b", "--dry-run"]);
    assert!(dry["revision"].is_null(), "{dry}");
    assert_eq!(n(&dry, "files_added"), 1, "{dry}");
    let before = current_revision(&c);
    push(&c, &b, &["--path", "mods/@b"]);
    assert!(current_revision(&c) > before);
    c.wait_replicated();
    let dest = c.path("dest");
    c.sync(&dest, &[]);
    assert_same_tree(&a, &dest.join("@a"));
    assert_same_tree(&b, &dest.join("mods/@b"));
    // @a replaced: its old files go, the rest stays.
    fs::remove_file(a.join("one.txt")).unwrap();
    write(&a, "new.txt", b"new");
    push(&c, &a, &["--path", "@a"]);
    c.wait_replicated();
    c.sync(&dest, &[]);
    assert_same_tree(&a, &dest.join("@a"));
    assert_same_tree(&b, &dest.join("mods/@b"));

    // Emptying @a removes most of the repository: the mass-delete guard wants a confirmation.
    let empty = c.path("empty");
    fs::create_dir_all(&empty).unwrap();
    let before = current_revision(&c);
    let err = fails(push_cmd(&c, &empty, &["--path", "@a"]));
    assert!(err.contains("refusing the push"), "{err}");
    assert!(err.contains("--allow-mass-delete"), "{err}");
    assert_eq!(current_revision(&c), before);
    let confirmed = push(&c, &empty, &["--path", "@a", "--allow-mass-delete"]);
    assert_eq!(n(&confirmed, "files_removed"), 2, "{confirmed}");
}

/// Starts a push that waits at the publish gate `gate`.
fn gated(c: &Cluster, dir: &Path, prefix: &str, gate: &Path) -> Child {
    let mut cmd = push_cmd(c, dir, &["--path", prefix]);
    cmd.env("HUMMEL_PUSH_BEFORE_PUBLISH", gate)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

/// Lets two gated pushes publish once both wait; their (success, output) pairs.
fn release(gate: &Path, children: Vec<Child>) -> Vec<(bool, String)> {
    let dir = gate.parent().unwrap();
    let name = gate.file_name().unwrap().to_str().unwrap().to_string();
    wait_for("both pushes to wait at the gate", || {
        fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| {
                let n = e.file_name();
                n.to_str()
                    .is_some_and(|n| n.starts_with(&format!("{name}.waiting.")))
            })
            .count()
            == 2
    });
    fs::write(gate, b"").unwrap();
    children
        .into_iter()
        .map(|ch| {
            let out = ch.wait_with_output().unwrap();
            (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        })
        .collect()
}

#[test]
fn concurrent_pushes_to_other_prefixes_both_land_to_one_prefix_one_is_refused() {
    let c = Cluster::start(1, |_| {});
    let seed = c.path("seed");
    write(&seed, "readme.txt", b"seed");
    push(&c, &seed, &["--path", "@seed"]);

    let (a, b) = (c.path("a"), c.path("b"));
    write(&a, "a.txt", &data(80 << 10, 1));
    write(&b, "b.txt", &data(80 << 10, 2));
    let gate = c.path("gate1");
    let both = release(
        &gate,
        vec![
            gated(&c, &a, "mods/@a", &gate),
            gated(&c, &b, "mods/@b", &gate),
        ],
    );
    for (success, out) in &both {
        assert!(success, "{out}");
    }
    c.wait_replicated();
    let dest = c.path("dest");
    c.sync(&dest, &[]);
    assert_same_tree(&a, &dest.join("mods/@a"));
    assert_same_tree(&b, &dest.join("mods/@b"));
    assert_same_tree(&seed, &dest.join("@seed"));

    // Two pushes to @x from the same base: one lands, the other is refused clearly.
    let (x1, x2) = (c.path("x1"), c.path("x2"));
    write(&x1, "x.txt", b"first");
    write(&x2, "x.txt", b"second");
    let gate = c.path("gate2");
    let outcomes = release(
        &gate,
        vec![gated(&c, &x1, "@x", &gate), gated(&c, &x2, "@x", &gate)],
    );
    let landed: Vec<&(bool, String)> = outcomes.iter().filter(|(s, _)| *s).collect();
    let refused: Vec<&(bool, String)> = outcomes.iter().filter(|(s, _)| !*s).collect();
    assert_eq!(landed.len(), 1, "{outcomes:?}");
    assert_eq!(refused.len(), 1, "{outcomes:?}");
    assert!(
        refused[0]
            .1
            .contains("someone else pushed to @x since revision"),
        "{outcomes:?}"
    );
    c.wait_replicated();
    c.sync(&dest, &[]);
    let got = fs::read(dest.join("@x/x.txt")).unwrap();
    assert!(got == b"first" || got == b"second");
    assert_same_tree(&a, &dest.join("mods/@a"));
}

#[test]
fn an_interrupted_push_resumes_and_a_bad_pack_is_refused() {
    let c = Cluster::start_with(1, |_| {}, &["--pack-target", "256K"]);
    let admin = c.path("admin");
    for i in 0..6u64 {
        write(&admin, &format!("@big/f{i}.bin"), &data(400 << 10, i + 10));
    }
    let dry = push(&c, &admin, &["--dry-run"]);
    let needed = n(&dry, "chunks_missing");
    assert!(needed > 6, "{dry}");
    let mut stopped = push_cmd(&c, &admin, &[]);
    stopped.env("HUMMEL_PUSH_STOP_AFTER_PACKS", "3");
    let err = fails(stopped);
    assert!(err.contains("stopped after uploading 3 packs"), "{err}");
    assert!(c.status()["revision"]["revision"].is_null());
    // The staged packs count as held: the next push uploads only the rest.
    let resumed = push(&c, &admin, &[]);
    assert!(n(&resumed, "chunks_missing") < needed, "{resumed} {dry}");
    assert!(n(&resumed, "chunks_uploaded") < needed, "{resumed} {dry}");
    assert!(n(&resumed, "packs_uploaded") > 0, "{resumed}");
    c.wait_replicated();
    let dest = c.path("dest");
    c.sync(&dest, &[]);
    assert_same_tree(&admin, &dest);

    // A pack that is not what its name says, or not a pack: refused, nothing staged.
    let client = http();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let put = |name: &str, body: Vec<u8>| -> (u16, String) {
        rt.block_on(async {
            let r = client
                .put(format!("{}/api/v1/push/packs/{name}", c.master.url))
                .header("X-Hummel-Token", WRITE)
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    let garbage = b"not a pack at all, but long enough to have a trailer......".to_vec();
    let named = blake3::hash(&garbage).to_hex().to_string();
    let (status, body) = put(&named, garbage.clone());
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not a valid pack"), "{body}");
    let other = blake3::hash(b"other").to_hex().to_string();
    let (status, body) = put(&other, garbage);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("damaged in transit"), "{body}");
    let (status, _) = rt.block_on(async {
        let r = client
            .put(format!("{}/api/v1/push/packs/{named}", c.master.url))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), ())
    });
    assert_eq!(status, 401);
}

#[test]
fn a_master_that_builds_its_folder_refuses_pushes() {
    let c = Cluster::start(0, |root| write(root, "@own/file.txt", b"folder-fed"));
    let admin = c.path("admin");
    write(&admin, "x.txt", b"x");
    let err = fails(push_cmd(&c, &admin, &["--path", "@x"]));
    assert!(
        err.contains("pushes need a master whose folder is empty"),
        "{err}"
    );
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("x.txt", admin.join("link")).unwrap();
        let err = fails(push_cmd(&c, &admin, &["--path", "@x"]));
        assert!(err.contains("is a symlink or special file"), "{err}");
    }
}

/// `args` run by `hummel` on a terminal of their own (util-linux `script` gives the command a
/// pseudo-terminal); everything the terminal showed, stdout and stderr together.
fn on_terminal(c: &Cluster, args: &[&str]) -> String {
    let quoted: Vec<String> = std::iter::once(BIN)
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let mut cmd = Command::new("script");
    cmd.args([
        "--quiet",
        "--return",
        "--command",
        &quoted.join(" "),
        "/dev/null",
    ])
    .env("HUMMEL_WRITE_TOKEN", WRITE)
    .env("TERM", "xterm")
    .env_remove("RUST_LOG")
    .stdin(Stdio::null());
    if let Some(ca) = &c.ca_cert {
        cmd.env("HUMMEL_CA_CERT", ca);
    }
    ok(cmd)
}

/// What a terminal shows in the end of `raw`: escape sequences dropped, and each line as its
/// last carriage return left it.
fn screen_lines(raw: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            // CSI: ESC [ parameters final-byte.
            if chars.next_if_eq(&'[').is_some() {
                for p in chars.by_ref() {
                    if ('@'..='~').contains(&p) {
                        break;
                    }
                }
            }
            continue;
        }
        plain.push(ch);
    }
    plain
        .split('\n')
        .map(|line| line.rsplit('\r').find(|s| !s.is_empty()).unwrap_or(""))
        .map(|line| line.trim().to_string())
        .filter(|line| !line.is_empty())
        .collect()
}

#[test]
fn a_push_on_a_terminal_draws_its_progress_then_leaves_only_its_result() {
    let c = Cluster::start(0, |_| {});
    let admin = c.path("admin");
    for i in 0..8u64 {
        write(&admin, &format!("@big/part{i}.bin"), &data(6 << 20, 60 + i));
    }
    let dir = admin.to_str().unwrap();
    let raw = on_terminal(&c, &["push", dir, "--master", &c.master.url]);
    // Drawn while it ran: bytes read of the folder's 48 MiB, and what went up.
    assert!(raw.contains("read "), "no progress line: {raw:?}");
    assert!(raw.contains("/48.00 MiB"), "no total on the line: {raw:?}");
    assert!(
        raw.contains("missing chunks so far"),
        "no upload count: {raw:?}"
    );
    // Cleared at the end: the terminal shows the result line alone.
    let lines = screen_lines(&raw);
    let revision = current_revision(&c);
    let last = lines.last().cloned().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "revision {revision} published: 8 files added, 0 updated, 0 removed;"
        )),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("read ")),
        "the progress line stayed on the terminal: {lines:?}"
    );

    // `--json` on a terminal: the report alone, no progress drawn.
    write(&admin, "@big/new.bin", &data(2 << 20, 70));
    let raw = on_terminal(&c, &["push", dir, "--master", &c.master.url, "--json"]);
    assert!(
        !raw.contains("read "),
        "progress drawn with --json: {raw:?}"
    );
    let lines = screen_lines(&raw);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let report: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(n(&report, "revision"), current_revision(&c));
}
