//! Draining a slave (`hummel drain-slave`, `POST /api/v1/slaves/{id}/drain`): its packs move
//! to the other slaves until each has the replication target there, then it is `drained` and
//! clients do without it.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::util::*;

/// File names of the packs slave `i` stores.
fn held(c: &Cluster, i: usize) -> HashSet<String> {
    c.slave_packs(i)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_drained_slave_leaves_two_copies_elsewhere_and_clients_do_without_it() {
    let mut c = Cluster::start_with(
        3,
        |root: &Path| {
            fill_modset(root);
            write(root, "@big/addons/more.pbo", &data(20 << 20, 7));
        },
        &["--replication", "2"],
    );
    c.build();
    c.wait_replicated();
    // Every live slave reports what it serves: the status has each one's egress.
    wait_for("egress figures", || {
        let st = c.status();
        let slaves = st["slaves"].as_array().unwrap();
        slaves.len() == 3 && slaves.iter().all(|s| s["egress"].is_u64())
    });
    // Drain the slave holding the most packs.
    let victim = (0..3).max_by_key(|&i| held(&c, i).len()).unwrap();
    let id = c.slave_id(victim);
    let mine = held(&c, victim);
    assert!(!mine.is_empty());

    let mut cmd = c.hummel();
    cmd.args(["drain-slave", &id, "--master", &c.master.url])
        .env("HUMMEL_WRITE_TOKEN", WRITE);
    let out = ok(cmd);
    assert!(out.contains("draining"), "{out}");
    // Without the write token: refused.
    let mut cmd = c.hummel();
    cmd.args([
        "drain-slave",
        &id,
        "--master",
        &c.master.url,
        "--write-token",
        "wrong",
    ]);
    fails(cmd);

    wait_for("the slave to be drained", || {
        c.slave_status(&id)["drain"] == "drained"
    });
    let mut cmd = c.hummel();
    cmd.args(["status", "--master", &c.master.url]);
    let text = ok(cmd);
    assert!(text.contains("drained: removing it"), "{text}");
    // Every pack the drained slave held has two copies on the others.
    let mut copies: HashMap<String, usize> = HashMap::new();
    for i in (0..3).filter(|&i| i != victim) {
        for p in held(&c, i) {
            *copies.entry(p).or_default() += 1;
        }
    }
    for p in &mine {
        assert!(copies.get(p).copied().unwrap_or(0) >= 2, "{p}: {copies:?}");
    }
    // It got nothing new to fetch.
    assert_eq!(c.slave_status(&id)["pending"], 0);

    // Stopped, the drained slave is still live for the master a while: clients must not be
    // sent there, and sync without it.
    c.slaves[victim].kill9();
    let dest = c.path("client");
    let summary = c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);
    assert_eq!(n(&summary, "failed_requests"), 0, "{summary:#}");
    assert!(summary["bytes_by_slave"].get(&id).is_none(), "{summary:#}");
    assert!(n(&summary, "bytes_downloaded") > 0, "{summary:#}");

    // Removing it now is safe; the replication stays complete.
    let mut cmd = c.hummel();
    cmd.args(["remove-slave", &id, "--master", &c.master.url])
        .env("HUMMEL_WRITE_TOKEN", WRITE);
    ok(cmd);
    assert!(c.slave_status(&id).is_null());
    let st = c.status();
    assert_eq!(st["replication"]["under_replicated"], 0, "{st:#}");
}
