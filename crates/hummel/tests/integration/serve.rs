//! `hummel serve`: one process, master plus embedded store; sync just works.

use std::path::Path;

use super::util::*;

fn serve(repo: &Path, dir: &Path) -> Proc {
    let mut cmd = hummel();
    cmd.arg("serve")
        .arg(repo)
        .arg("--data")
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0"]);
    Proc::start("serve", cmd, &dir.join("logs"))
}

fn wait_revision(url: &str) {
    wait_for("the first revision", || {
        let mut c = hummel();
        c.args(["status", "--master", url, "--json"]);
        let out = run(c);
        out.status.success()
            && serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["revision"]["revision"].is_u64()
    });
}

#[test]
fn serve_then_sync_just_works() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    fill_modset(&repo);
    let s = serve(&repo, dir.path());
    wait_revision(&s.url);
    let dest = dir.path().join("dest");
    let mut c = hummel();
    c.args(["sync", &s.url]).arg(&dest);
    ok(c);
    assert_same_tree(&repo, &dest);
    // Generated tokens are stored in the data dir, and the log says where.
    assert!(dir.path().join("data/write.token").exists());
    assert!(s.log_text().contains("write.token"));
}

#[test]
fn serve_the_shipped_examples_folder() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let dir = tempfile::tempdir().unwrap();
    let s = serve(&examples, dir.path());
    wait_revision(&s.url);
    let dest = dir.path().join("dest");
    let mut c = hummel();
    c.args(["sync", &s.url]).arg(&dest);
    ok(c);
    assert_same_tree(&examples, &dest);
}

#[test]
fn health_metrics_and_dashboard() {
    let mut c = Cluster::start(1, fill_modset);
    let revision = n(&c.build(), "revision");
    c.wait_replicated();
    let dest = c.path("dest");
    c.sync(&dest, &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = http();
    let slave = c.slaves[0].url.clone();
    let master = c.master.url.clone();
    rt.block_on(async {
        for (url, role) in [(&master, "master"), (&slave, "slave")] {
            let h = http.get(format!("{url}/health")).send().await.unwrap();
            assert_eq!(h.status(), 200);
            let h: serde_json::Value = h.json().await.unwrap();
            assert_eq!(h["role"], role);
            let m = http.get(format!("{url}/metrics")).send().await.unwrap();
            assert_eq!(m.status(), 200);
            let text = m.text().await.unwrap();
            assert!(text.contains("# TYPE hummel_"), "{role} metrics:\n{text}");
        }
        let metrics = http
            .get(format!("{master}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics
                .lines()
                .any(|l| l == format!("hummel_revision {revision}")),
            "{metrics}"
        );
        let page = http.get(format!("{master}/")).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(
            page.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let html = page.text().await.unwrap();
        assert!(html.contains(&c.slaves[0].url), "dashboard lists the slave");
        assert!(html.contains("<form"), "dashboard has the build form");
    });
    // A slave that stops heartbeating turns stale, then dead.
    c.slaves[0].kill9();
    wait_for("the slave to turn stale", || {
        c.status()["slaves"][0]["state"] == "stale"
    });
    wait_for("the slave to turn dead", || {
        c.status()["slaves"][0]["state"] == "dead"
    });
}
