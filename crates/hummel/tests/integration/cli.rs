//! The command line: help, usage errors and unreachable servers give one clear line.

use super::util::*;

#[test]
fn every_command_has_help() {
    for cmd in [
        "serve",
        "master",
        "slave",
        "build",
        "sync",
        "verify",
        "status",
        "ui",
        "remove-slave",
        "drain-slave",
    ] {
        let mut c = hummel();
        c.args([cmd, "--help"]);
        let out = ok(c);
        assert!(out.contains("Usage: hummel"), "{cmd}: {out}");
    }
}

/// `hummel` alone (on Linux: a double-click runs the player page on Windows only) prints the
/// help as for a missing command; an unknown profile is one line.
#[test]
fn hummel_alone_prints_the_help_and_an_unknown_profile_is_one_line() {
    let out = run(hummel());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: hummel"));
    let dir = tempfile::tempdir().unwrap();
    let mut c = hummel();
    c.args(["sync", "--profile", "nope"])
        .env("HUMMEL_CONFIG_DIR", dir.path());
    let err = fails(c);
    assert!(err.contains("no profile named \"nope\""), "{err}");
}

#[test]
fn bad_input_is_one_line_and_nonzero() {
    let mut c = hummel();
    c.args([
        "slave",
        "--master",
        "http://127.0.0.1:1",
        "--data",
        "/nonexistent-hummel",
        "--quota",
        "12X",
    ]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(2));

    // Nothing listens on port 1.
    let dir = tempfile::tempdir().unwrap();
    let mut c = hummel();
    c.args(["sync", "http://127.0.0.1:1"])
        .arg(dir.path().join("d"));
    let err = fails(c);
    assert!(err.contains("127.0.0.1:1"), "{err}");

    let mut c = hummel();
    c.args(["sync", "not-a-url"]).arg(dir.path().join("d"));
    fails(c);

    let mut c = hummel();
    c.args(["build", "--master", "http://127.0.0.1:1"]);
    let err = fails(c);
    assert!(err.contains("HUMMEL_WRITE_TOKEN"), "{err}");

    let mut c = hummel();
    c.args(["master", "--repo"])
        .arg(dir.path().join("missing"))
        .arg("--data")
        .arg(dir.path().join("m"));
    fails(c);
}

#[test]
fn an_os_error_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    // A slave whose store folder is a file: the store, the slave and the binary each name it.
    let data = dir.path().join("slave");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("store"), b"").unwrap();
    let mut slave = hummel();
    slave
        .args(["slave", "--master", "http://127.0.0.1:1", "--data"])
        .arg(&data)
        .args(["--listen", "127.0.0.1:0", "--slave-token", "t"]);
    // A sync into a DEST that is a file.
    let mut sync = hummel();
    sync.args(["sync", "http://127.0.0.1:1"]).arg(&file);
    // A master whose data folder cannot be created.
    let mut master = hummel();
    master
        .args(["master", "--repo"])
        .arg(dir.path())
        .arg("--data")
        .arg(file.join("data"));
    for cmd in [slave, sync, master] {
        let err = fails(cmd);
        assert_eq!(err.matches("(os error").count(), 1, "{err}");
    }
}
