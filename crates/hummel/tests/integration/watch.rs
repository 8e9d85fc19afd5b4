//! Watching: a master that rebuilds once its repository folder settles (`master --watch`), and
//! a client that applies each announced revision (`sync --watch --exec`).

use std::fs;
use std::io::BufRead;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::util::*;

/// The samples of `hummel_builds_total{state="succeeded"}`.
fn builds_succeeded(url: &str) -> u64 {
    get_text(&format!("{url}/metrics"))
        .lines()
        .find_map(|l| {
            l.strip_prefix("hummel_builds_total{state=\"succeeded\"} ")?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The master builds at start, then once per burst of changes, after the folder stayed quiet
/// for the settle time; a change made later is published too.
#[test]
fn a_watching_master_builds_once_changes_settle() {
    let c = Cluster::start_with(1, fill_modset, &["--watch", "--watch-settle", "400ms"]);
    wait_for("the start-up build", || {
        !c.status()["revision"]["revision"].is_null()
    });
    let files = n(&c.status()["revision"], "files");
    assert_eq!(builds_succeeded(&c.master.url), 1);

    // A burst: three files, each within the settle time of the one before.
    for i in 0..3 {
        write(
            &c.repo,
            &format!("@new/file{i}.txt"),
            format!("new {i}").as_bytes(),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for("the burst to be published", || {
        n(&c.status()["revision"], "files") == files + 3
    });
    assert_eq!(
        builds_succeeded(&c.master.url),
        2,
        "one build for the burst"
    );

    fs::remove_file(c.repo.join("@new/file0.txt")).unwrap();
    wait_for("the removal to be published", || {
        n(&c.status()["revision"], "files") == files + 2
    });
    let dest = c.path("dest");
    c.wait_replicated();
    c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);
}

/// A client started with `--watch --exec` applies a revision published later within 2 s of
/// `build --wait` returning, runs the command once for it (not for the start-up sync that
/// changed nothing), and ends with status 0 on Ctrl-C.
#[test]
fn a_watching_client_applies_each_new_revision_and_runs_its_command_once() {
    let c = Cluster::start(2, fill_modset);
    c.build();
    c.wait_replicated();
    let dest = c.path("dest");
    c.sync(&dest, &[]);

    let ran = c.path("exec.log");
    let exec = format!("echo \"$HUMMEL_REVISION\" >> '{}'", ran.display());
    let mut watcher = c.sync_cmd(&dest, &["--watch", "--json", "--exec", &exec]);
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
    let first: serde_json::Value =
        serde_json::from_str(&reports.recv_timeout(Duration::from_secs(30)).unwrap()).unwrap();
    assert_eq!(n(&first, "files_written"), 0, "{first:#}");
    wait_for("the client to subscribe", || {
        metric(
            &get_text(&format!("{}/metrics", c.master.url)),
            "hummel_event_subscribers",
        ) == 1
    });

    write(&c.repo, "@mod_a/addons/new.pbo", &data(300_000, 77));
    let built = c.build();
    let published = Instant::now();
    let revision = n(&built, "revision");
    let report: serde_json::Value =
        serde_json::from_str(&reports.recv_timeout(Duration::from_secs(30)).unwrap()).unwrap();
    let took = published.elapsed();
    assert_eq!(n(&report, "revision"), revision, "{report:#}");
    assert_eq!(n(&report, "files_written"), 1, "{report:#}");
    assert!(
        took <= Duration::from_secs(2),
        "applied {took:?} after build --wait returned"
    );
    assert_same_tree(&c.repo, &dest);
    wait_for("the --exec command", || ran.exists());
    // Nothing else is announced: the command ran once, for that revision.
    assert!(
        reports.recv_timeout(Duration::from_millis(500)).is_err(),
        "a sync ran without a new revision"
    );
    assert_eq!(fs::read_to_string(&ran).unwrap(), format!("{revision}\n"));

    // A subscriber does not hold the master's shutdown: its stream ends at once.
    let mut c = c;
    let stopping = Instant::now();
    let status = terminate(&mut c.master);
    assert!(status.success(), "{status}");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "the master took {:?} to stop with a subscriber",
        stopping.elapsed()
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

/// Slaves hear of a publication at once (`GET /slave/events`), not at their next heartbeat:
/// with heartbeats 30 s apart, a new revision's packs reach the slave within seconds of the
/// build, before watching clients are told of it.
#[test]
fn slaves_fetch_a_new_revision_before_their_next_heartbeat() {
    let c = Cluster::start_with(
        1,
        fill_modset,
        &[
            "--replication",
            "1",
            "--heartbeat-interval",
            "30s",
            "--stale-after",
            "90s",
            "--dead-after",
            "180s",
        ],
    );
    let replicated = |c: &Cluster, revision: &Value| {
        let st = c.status();
        st["revision"]["revision"] == *revision
            && st["replication"]["under_replicated"] == 0
            && st["replication"]["unavailable"] == 0
    };
    let first = c.build()["revision"].clone();
    assert!(first.is_u64(), "{first}");
    wait_for("the first revision on the slave", || replicated(&c, &first));

    write(&c.repo, "@new/addons/new.pbo", &data(2 << 20, 77));
    let second = c.build()["revision"].clone();
    assert_ne!(first, second);
    let built = Instant::now();
    while !replicated(&c, &second) {
        assert!(
            built.elapsed() < Duration::from_secs(10),
            "the slave waited for its heartbeat: {:#}",
            c.status()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
