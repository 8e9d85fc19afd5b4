//! The data folder: a second master, `serve` or slave on a folder in use is refused, and the
//! first one keeps serving.

use super::util::*;

#[test]
fn a_second_process_on_a_data_folder_is_refused_and_the_first_keeps_serving() {
    let c = Cluster::start(1, fill_modset);
    c.build();
    c.wait_replicated();
    let master_data = c.path("master");
    let slave_data = c.path("slave0");
    let pid = |p: &Proc| p.child.as_ref().unwrap().id();
    let in_use = |data: &std::path::Path, p: &Proc| {
        format!(
            "error: the data folder {} is in use by another hummel process (pid {})",
            data.display(),
            pid(p)
        )
    };

    let mut master = hummel();
    master
        .args(["master", "--repo"])
        .arg(&c.repo)
        .arg("--data")
        .arg(&master_data)
        .args(["--listen", "127.0.0.1:0"])
        .env("HUMMEL_WRITE_TOKEN", WRITE)
        .env("HUMMEL_SLAVE_TOKEN", SLAVE);
    let err = fails(master);
    assert_eq!(err.trim(), in_use(&master_data, &c.master), "{err}");

    let mut serve = hummel();
    serve
        .arg("serve")
        .arg(&c.repo)
        .arg("--data")
        .arg(&master_data)
        .args(["--listen", "127.0.0.1:0"]);
    let err = fails(serve);
    assert_eq!(err.trim(), in_use(&master_data, &c.master), "{err}");

    let mut slave = hummel();
    slave
        .args(["slave", "--master", &c.master.url, "--data"])
        .arg(&slave_data)
        .args(["--listen", "127.0.0.1:0"])
        .env("HUMMEL_SLAVE_TOKEN", SLAVE);
    let err = fails(slave);
    assert_eq!(err.trim(), in_use(&slave_data, &c.slaves[0]), "{err}");

    // Nothing of the first ones was touched: they serve a sync as before.
    assert_eq!(get_status(&format!("{}/health", c.master.url)).0, 200);
    assert_eq!(get_status(&format!("{}/health", c.slaves[0].url)).0, 200);
    let dest = c.path("dest");
    let report = c.sync(&dest, &[]);
    assert!(
        report["slaves_used"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s != "master"),
        "served by the slave: {report}"
    );
    assert_same_tree(&c.repo, &dest);
}
