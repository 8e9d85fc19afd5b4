//! HTTPS: servers with `--tls-cert`/`--tls-key` serve HTTPS only, every command that connects
//! trusts the system's roots plus `--ca-cert` (or `HUMMEL_CA_CERT`), and a TLS reverse proxy in
//! front of a plain server works with `--advertise https://...`. The certificates are made by
//! the test (`TestTls`, rcgen): a CA and a server certificate for 127.0.0.1 and localhost.

use std::path::Path;
use std::process::Command;

use super::util::*;

/// `hummel serve REPO` on 127.0.0.1:0 with `extra` flags; waits until it listens.
fn serve(repo: &Path, dir: &Path, extra: &[String]) -> Proc {
    let mut cmd = hummel();
    cmd.arg("serve")
        .arg(repo)
        .arg("--data")
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .args(extra);
    Proc::start("serve", cmd, &dir.join("logs"))
}

/// Waits until the master at `url` has published its first revision (asking with `ca`).
fn wait_revision(url: &str, ca: &Path) {
    wait_for("the first revision", || {
        let mut c = hummel();
        c.args(["status", "--master", url, "--json"])
            .arg("--ca-cert")
            .arg(ca);
        let out = run(c);
        out.status.success()
            && serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["revision"]
                ["revision"]
                .is_u64()
    });
}

/// A sync command for `url` into `dest`, with no CA of its own.
fn sync_cmd(url: &str, dest: &Path) -> Command {
    let mut cmd = hummel();
    cmd.args(["sync", url]).arg(dest);
    cmd
}

#[test]
fn sync_replication_and_build_over_https() {
    let tls = TestTls::new("Hummel test CA");
    let mut c = Cluster::start_https(1, fill_modset, &tls);
    let built = c.build();
    assert_eq!(built["state"], "succeeded", "{built}");

    // slave0 replicates from the master over HTTPS.
    let packs = pack_files(&c.path("master").join("store")).len();
    assert!(packs > 0);
    wait_for("slave0 to hold every pack", || {
        c.slave_packs(0).len() == packs
    });
    let served = |c: &Cluster| {
        let url = format!("{}/metrics", c.slaves[0].url);
        metric(
            &get_status_with(&tls.http(), &url).1,
            "hummel_slave_blob_bytes_served_total",
        )
    };
    // The master probes slave0 over HTTPS (one chunk a pack) before sending clients there.
    c.wait_replicated();
    let probed = served(&c);
    // A second slave is sent to slave0 first: slave-to-slave replication over HTTPS.
    c.add_slave(&[]);
    c.wait_replicated();
    assert_eq!(c.slave_packs(1).len(), packs);
    assert!(served(&c) > probed, "slave1 fetched nothing from slave0");
    let st = c.status();
    for s in st["slaves"].as_array().unwrap() {
        assert!(s["url"].as_str().unwrap().starts_with("https://"), "{s}");
        assert_eq!(s["state"], "live", "{s}");
    }

    // A client syncs from the slaves and verifies, trusting the CA through HUMMEL_CA_CERT.
    let dest = c.path("dest");
    let r = c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);
    assert!(n(&r, "bytes_downloaded") > 0, "{r}");
    let mut verify = c.hummel();
    verify.args(["verify", &c.master.url]).arg(&dest);
    ok(verify);
    // ... and through --ca-cert.
    let mut again = sync_cmd(&c.master.url, &dest);
    again.arg("--ca-cert").arg(&tls.ca);
    ok(again);

    // A change published over HTTPS reaches the client.
    write(&c.repo, "@mod_a/new.txt", b"published over https\n");
    let built = c.build();
    assert_eq!(built["state"], "succeeded", "{built}");
    c.wait_replicated();
    c.sync(&dest, &[]);
    assert_same_tree(&c.repo, &dest);

    // Graceful shutdown works over TLS as over TCP: each process exits 0 on SIGTERM.
    for mut p in c.slaves.drain(..) {
        assert!(terminate(&mut p).success(), "{}", p.log_text());
    }
    assert!(
        terminate(&mut c.master).success(),
        "{}",
        c.master.log_text()
    );
}

#[test]
fn an_unknown_ca_is_refused_and_dest_is_untouched() {
    let tls = TestTls::new("Hummel test CA");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    fill_modset(&repo);
    let s = serve(&repo, dir.path(), &tls.server_args());
    assert!(s.url.starts_with("https://"), "{}", s.url);
    wait_revision(&s.url, &tls.ca);

    // DEST holds a file of the user's and an old copy of an entry the repository names.
    let dest = dir.path().join("dest");
    write(&dest, "my saves/slot1.sav", b"mine\n");
    write(&dest, "@mod_a/mod.cpp", b"name = \"old\";\n");
    let before = digest(&dest);

    // The system's roots alone, then a CA that did not sign the server's certificate (given
    // by flag and by environment): refused in one line that names the problem.
    let other = TestTls::new("Another CA");
    let mut by_flag = sync_cmd(&s.url, &dest);
    by_flag.arg("--ca-cert").arg(&other.ca);
    let mut by_env = sync_cmd(&s.url, &dest);
    by_env.env("HUMMEL_CA_CERT", &other.ca);
    for cmd in [sync_cmd(&s.url, &dest), by_flag, by_env] {
        let err = fails(cmd);
        assert!(
            err.contains("the server's certificate is not signed by a CA this machine trusts"),
            "{err}"
        );
        assert!(err.contains("UnknownIssuer"), "{err}");
        assert_eq!(digest(&dest), before, "DEST changed");
        assert!(!dest.join(".hummel/state").exists());
    }
    // Status and build too.
    let mut status = hummel();
    status.args(["status", "--master", &s.url]);
    assert!(fails(status).contains("not signed by a CA this machine trusts"));
    let mut build = hummel();
    build
        .args(["build", "--master", &s.url, "--wait"])
        .env("HUMMEL_WRITE_TOKEN", "anything");
    assert!(fails(build).contains("not signed by a CA this machine trusts"));

    // A slave without the CA says why in its log, and keeps trying.
    let mut slave = hummel();
    slave
        .args(["slave", "--master", &s.url, "--data"])
        .arg(dir.path().join("slave"))
        .args(["--listen", "127.0.0.1:0", "--slave-token", "t"]);
    let slave = Proc::start("slave", slave, &dir.path().join("logs"));
    wait_for("the slave to log the certificate problem", || {
        slave
            .log_text()
            .contains("the server's certificate is not signed by a CA this machine trusts")
    });
    drop(slave);

    // With the right CA the same sync goes through, and the user's file stays.
    let mut trusted = sync_cmd(&s.url, &dest);
    trusted.env("HUMMEL_CA_CERT", &tls.ca);
    ok(trusted);
    assert_eq!(
        std::fs::read(dest.join("@mod_a/mod.cpp")).unwrap(),
        std::fs::read(repo.join("@mod_a/mod.cpp")).unwrap()
    );
    assert_eq!(
        std::fs::read(dest.join("my saves/slot1.sav")).unwrap(),
        b"mine\n"
    );
}

#[test]
fn plain_http_to_an_https_port_is_refused() {
    let tls = TestTls::new("Hummel test CA");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    fill_modset(&repo);
    let s = serve(&repo, dir.path(), &tls.server_args());
    wait_revision(&s.url, &tls.ca);
    let plain = s.url.replacen("https://", "http://", 1);

    // HTTPS answers; plain HTTP on the same port gets a 400 that says why, and nothing else.
    assert_eq!(
        get_status_with(&tls.http(), &format!("{}/health", s.url)).0,
        200
    );
    for path in ["/health", "/api/v1/revision", "/"] {
        let (code, body) = get_status_with(&tls.http(), &format!("{plain}{path}"));
        assert_eq!(code, 400, "{path}: {body}");
        assert!(body.contains("HTTPS only"), "{path}: {body}");
    }

    // The commands fail in one line that says so.
    let mut status = hummel();
    status
        .args(["status", "--master", &plain])
        .env("HUMMEL_CA_CERT", &tls.ca);
    assert!(fails(status).contains("HTTPS only"));
    let dest = dir.path().join("dest");
    let mut sync = sync_cmd(&plain, &dest);
    sync.env("HUMMEL_CA_CERT", &tls.ca);
    assert!(fails(sync).contains("HTTPS only"));
    assert!(digest(&dest).is_empty());
}

#[test]
fn bad_certificate_files_fail_in_one_line() {
    let tls = TestTls::new("Hummel test CA");
    let other = TestTls::new("Another CA");
    let path = |p: &Path| p.display().to_string();

    let err = master_refuses(&[
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        &path(&tls.key),
    ]);
    assert!(
        err.contains("cannot read the TLS certificate file /nonexistent/cert.pem"),
        "{err}"
    );
    // Key and certificate swapped; a key that is not the certificate's.
    let err = master_refuses(&["--tls-cert", &path(&tls.key), "--tls-key", &path(&tls.cert)]);
    assert!(err.contains("holds no PEM certificate"), "{err}");
    let err = master_refuses(&[
        "--tls-cert",
        &path(&tls.cert),
        "--tls-key",
        &path(&other.key),
    ]);
    assert!(err.contains("the key is not the certificate's"), "{err}");
    // One without the other is a usage error.
    let err = master_refuses(&["--tls-cert", &path(&tls.cert)]);
    assert!(err.contains("--tls-key"), "{err}");

    // A slave's certificate and its --ca-cert are checked before it starts.
    let dir = tempfile::tempdir().unwrap();
    let mut slave = hummel();
    slave
        .args(["slave", "--master", "https://127.0.0.1:9", "--data"])
        .arg(dir.path().join("slave"))
        .args(["--listen", "127.0.0.1:0", "--slave-token", "t"])
        .args(tls.server_args())
        .arg("--ca-cert")
        .arg(&tls.key);
    let err = fails(slave);
    assert!(
        err.contains("the CA certificate file") && err.contains("holds no PEM certificate"),
        "{err}"
    );
    assert!(
        !dir.path().join("slave").exists(),
        "the slave started anyway"
    );

    // A client's --ca-cert (or HUMMEL_CA_CERT) that cannot be read.
    let mut sync = sync_cmd("https://127.0.0.1:9", &dir.path().join("dest"));
    sync.env("HUMMEL_CA_CERT", "/nonexistent/ca.pem");
    let err = fails(sync);
    assert!(
        err.contains("cannot read the CA certificate file /nonexistent/ca.pem"),
        "{err}"
    );
    assert!(!dir.path().join("dest").exists());
}

/// A machine without CA certificates (a slim container): plain HTTP works as before, HTTPS
/// is refused saying why, and `--ca-cert` is enough on its own.
#[test]
fn a_machine_without_ca_certificates_still_syncs_over_plain_http() {
    let tls = TestTls::new("Hummel test CA");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    fill_modset(&repo);
    let no_roots = |mut cmd: Command| {
        // rustls-native-certs reads these instead of the system's bundle.
        cmd.env("SSL_CERT_FILE", "/dev/null")
            .env("SSL_CERT_DIR", dir.path().join("no-certs"));
        cmd
    };

    let plain = serve(&repo, &dir.path().join("plain"), &[]);
    wait_for("the plain server's revision", || {
        run(no_roots(sync_cmd(&plain.url, &dir.path().join("a"))))
            .status
            .success()
    });
    assert_same_tree(&repo, &dir.path().join("a"));

    let https = serve(&repo, &dir.path().join("https"), &tls.server_args());
    wait_revision(&https.url, &tls.ca);
    let err = fails(no_roots(sync_cmd(&https.url, &dir.path().join("b"))));
    assert!(err.contains("this machine trusts no CA"), "{err}");
    let mut with_ca = no_roots(sync_cmd(&https.url, &dir.path().join("b")));
    with_ca.arg("--ca-cert").arg(&tls.ca);
    ok(with_ca);
    assert_same_tree(&repo, &dir.path().join("b"));
}

/// A TLS-terminating reverse proxy (written here: TLS in, plain TCP to the server) in front
/// of a plain `hummel serve --advertise https://PROXY`: clients use only the proxy's URL,
/// for the index and the packs.
#[test]
fn behind_a_tls_reverse_proxy_with_advertise() {
    let tls = TestTls::new("Hummel test CA");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    fill_modset(&repo);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let front = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let public = format!("https://{}", front.local_addr().unwrap());
    let s = serve(
        &repo,
        dir.path(),
        &["--advertise".to_string(), public.clone()],
    );
    assert!(s.url.starts_with("http://"), "{}", s.url);
    let backend = s.url.trim_start_matches("http://").to_string();
    let server_tls = hummel_tls::ServerTls::from_pem_files(&tls.cert, &tls.key).unwrap();
    rt.spawn(async move {
        use axum::serve::Listener;
        let mut front = hummel_tls::TlsListener::new(front, &server_tls);
        loop {
            let (mut outer, _) = front.accept().await;
            let backend = backend.clone();
            tokio::spawn(async move {
                if let Ok(mut inner) = tokio::net::TcpStream::connect(&backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut outer, &mut inner).await;
                }
            });
        }
    });

    wait_revision(&public, &tls.ca);
    let mut status = hummel();
    status
        .args(["status", "--master", &public, "--json"])
        .arg("--ca-cert")
        .arg(&tls.ca);
    let st: serde_json::Value = serde_json::from_str(&ok(status)).unwrap();
    assert_eq!(st["slaves"][0]["url"], public.as_str(), "{st:#}");

    let dest = dir.path().join("dest");
    let mut sync = sync_cmd(&public, &dest);
    sync.arg("--json").arg("--ca-cert").arg(&tls.ca);
    let r: serde_json::Value = serde_json::from_str(ok(sync).trim()).unwrap();
    assert!(n(&r, "bytes_downloaded") > 0, "{r}");
    assert_same_tree(&repo, &dest);
    drop(rt);
}
