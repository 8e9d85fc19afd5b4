//! The harness: processes, a cluster (master + slaves), a tree generator and a tree digest.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_hummel");
pub const WRITE: &str = "test-write-token";
pub const SLAVE: &str = "test-slave-token";

/// A `hummel` command with a clean environment (no tokens or CA leak in from the caller).
pub fn hummel() -> Command {
    let mut c = Command::new(BIN);
    for v in [
        "HUMMEL_WRITE_TOKEN",
        "HUMMEL_SLAVE_TOKEN",
        "HUMMEL_READ_TOKEN",
        "HUMMEL_CA_CERT",
        "HUMMEL_TRUST",
        "HUMMEL_SIGNATURE_EXPIRY",
        "RUST_LOG",
    ] {
        c.env_remove(v);
    }
    c.stdin(Stdio::null());
    c
}

/// Runs a command to completion (at most `limit`), capturing output.
pub fn run_with_limit(mut cmd: Command, limit: Duration) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let desc = format!("{cmd:?}");
    let mut child = cmd.spawn().expect("spawn hummel");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("timed out after {limit:?}: {desc}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// Runs a command (2 minutes at most).
pub fn run(cmd: Command) -> Output {
    run_with_limit(cmd, Duration::from_secs(120))
}

/// Runs a command that must succeed; returns stdout.
pub fn ok(cmd: Command) -> String {
    let desc = format!("{cmd:?}");
    let out = run(cmd);
    if !out.status.success() {
        panic!(
            "command failed ({}): {desc}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; returns stderr, which must be one line.
pub fn fails(cmd: Command) -> String {
    let desc = format!("{cmd:?}");
    let out = run(cmd);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "expected failure: {desc}\n--- stdout\n{}\n--- stderr\n{err}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<_> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one error line from {desc}, got:\n{err}"
    );
    err
}

/// A long-running `hummel` process whose stderr goes to a log file.
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
    pub url: String,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `hummel ARGS` and waits for its `listening on http://...` (or `https://`) line.
    pub fn start(name: &str, mut cmd: Command, log_dir: &Path) -> Proc {
        fs::create_dir_all(log_dir).unwrap();
        let log = log_dir.join(format!("{name}.log"));
        let f = fs::File::create(&log).unwrap();
        cmd.stdout(Stdio::null()).stderr(f);
        let child = cmd.spawn().expect("spawn");
        let mut p = Proc {
            name: name.into(),
            child: Some(child),
            url: String::new(),
            log,
        };
        let start = Instant::now();
        loop {
            let text = fs::read_to_string(&p.log).unwrap_or_default();
            if let Some(i) = text.find("listening on http") {
                let rest = &text[i + "listening on ".len()..];
                p.url = rest.split_whitespace().next().unwrap().to_string();
                break;
            }
            if let Some(status) = p.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{name} exited early ({status}):\n{text}");
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!("{name} did not start listening:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- log of {} -----\n{}", self.name, self.log_text());
        }
        self.kill9();
    }
}

/// Master + N slaves over a repository folder, all in one temp folder.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub master: Proc,
    pub slaves: Vec<Proc>,
    /// Flags every slave gets (the TLS ones in an HTTPS cluster).
    pub slave_args: Vec<String>,
    /// The CA every command of the cluster trusts (`HUMMEL_CA_CERT`), in an HTTPS cluster.
    pub ca_cert: Option<PathBuf>,
}

impl Cluster {
    /// Starts a master on `repo` (a folder inside the cluster dir, filled by `fill`) and `n` slaves.
    pub fn start(n: usize, fill: impl FnOnce(&Path)) -> Cluster {
        Cluster::start_with(n, fill, &[])
    }

    /// Like [`Cluster::start`], with extra master flags.
    pub fn start_with(n: usize, fill: impl FnOnce(&Path), master_args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        fs::create_dir_all(&repo).unwrap();
        fill(&repo);
        let master = start_master(dir.path(), &repo, master_args, 0);
        let mut c = Cluster {
            dir,
            repo,
            master,
            slaves: Vec::new(),
            slave_args: Vec::new(),
            ca_cert: None,
        };
        for _ in 0..n {
            c.add_slave(&[]);
        }
        c
    }

    /// Like [`Cluster::start`], all HTTPS: the master and each slave serve `cert` and `key`
    /// (PEM), and every command of the cluster trusts `ca`.
    pub fn start_https(n: usize, fill: impl FnOnce(&Path), tls: &TestTls) -> Cluster {
        // The master probes its slaves over HTTPS: it trusts the test CA too.
        let mut server = tls.server_args();
        server.extend(["--ca-cert".to_string(), tls.ca.display().to_string()]);
        let server: Vec<&str> = server.iter().map(String::as_str).collect();
        let mut c = Cluster::start_with(0, fill, &server);
        assert!(c.master.url.starts_with("https://"), "{}", c.master.url);
        c.slave_args = tls.server_args();
        c.ca_cert = Some(tls.ca.clone());
        for _ in 0..n {
            c.add_slave(&[]);
        }
        c
    }

    /// A `hummel` command as [`hummel`], trusting the cluster's CA if it has one.
    pub fn hummel(&self) -> Command {
        let mut c = hummel();
        if let Some(ca) = &self.ca_cert {
            c.env("HUMMEL_CA_CERT", ca);
        }
        c
    }

    /// Starts one more slave.
    pub fn add_slave(&mut self, extra: &[&str]) -> usize {
        let i = self.slaves.len();
        let data = self.dir.path().join(format!("slave{i}"));
        let mut cmd = self.hummel();
        cmd.args(["slave", "--master", &self.master.url, "--data"])
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"])
            .args(&self.slave_args)
            .args(extra)
            .env("HUMMEL_SLAVE_TOKEN", SLAVE);
        let p = Proc::start(&format!("slave{i}"), cmd, &self.dir.path().join("logs"));
        self.slaves.push(p);
        i
    }

    /// A path inside the cluster's temp folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `hummel build --wait --json`; returns the build status JSON.
    pub fn build(&self) -> Value {
        let mut cmd = self.hummel();
        cmd.args(["build", "--master", &self.master.url, "--wait", "--json"])
            .env("HUMMEL_WRITE_TOKEN", WRITE);
        serde_json::from_str(&ok(cmd)).unwrap()
    }

    /// `hummel status --json`.
    pub fn status(&self) -> Value {
        let mut cmd = self.hummel();
        cmd.args(["status", "--master", &self.master.url, "--json"]);
        serde_json::from_str(&ok(cmd)).unwrap()
    }

    /// The id the master knows slave `i` by (found by its URL in the status).
    pub fn slave_id(&self, i: usize) -> String {
        let st = self.status();
        st["slaves"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["url"].as_str() == Some(self.slaves[i].url.trim_end_matches('/')))
            .unwrap_or_else(|| panic!("slave {i} not in {st:#}"))["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Slave `id`'s entry in the status, `Null` if the master does not list it.
    pub fn slave_status(&self, id: &str) -> Value {
        self.status()["slaves"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Waits until every pack of the current revision has its target copies on live slaves,
    /// and the master's probes verified every live slave's claims (clients are sent there).
    pub fn wait_replicated(&self) {
        let start = Instant::now();
        loop {
            let st = self.status();
            let rep = &st["replication"];
            let live: Vec<&Value> = st["slaves"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["state"] == "live")
                .collect();
            let verified = live
                .iter()
                .all(|s| s["verified"].is_null() || s["verified"] == s["packs"]);
            if !st["revision"]["revision"].is_null()
                && rep["under_replicated"] == 0
                && rep["unavailable"] == 0
                && verified
                && live.len() >= self.slaves.iter().filter(|s| s.child.is_some()).count()
            {
                return;
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!("replication did not complete: {st:#}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `hummel sync MASTER DEST --json ARGS`; returns the summary.
    pub fn sync(&self, dest: &Path, args: &[&str]) -> Value {
        let mut cmd = self.hummel();
        cmd.args(["sync", &self.master.url])
            .arg(dest)
            .arg("--json")
            .args(args);
        let out = ok(cmd);
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("sync --json printed {out:?}: {e}"))
    }

    /// A `hummel sync` command, not run.
    pub fn sync_cmd(&self, dest: &Path, args: &[&str]) -> Command {
        let mut cmd = self.hummel();
        cmd.args(["sync", &self.master.url]).arg(dest).args(args);
        cmd
    }

    /// Pack files a slave stores.
    pub fn slave_packs(&self, i: usize) -> Vec<PathBuf> {
        pack_files(&self.path(&format!("slave{i}")).join("store"))
    }
}

/// Certificates made by the test (rcgen): a CA, and a server certificate it signed for
/// 127.0.0.1 and localhost, as PEM files in their own temp folder.
pub struct TestTls {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestTls {
    /// A new CA named `ca_name` and a server certificate from it.
    pub fn new(ca_name: &str) -> TestTls {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let t = TestTls {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            dir,
        };
        fs::write(&t.ca, ca.pem()).unwrap();
        fs::write(&t.cert, cert.pem()).unwrap();
        fs::write(&t.key, key.serialize_pem()).unwrap();
        t
    }

    /// `--tls-cert CERT --tls-key KEY`.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }

    /// A reqwest client trusting this CA.
    pub fn http(&self) -> reqwest::Client {
        hummel_tls::ClientTls::with_ca_file(&self.ca)
            .unwrap()
            .client_builder()
            .build()
            .unwrap()
    }
}

/// Starts a master process (port 0 unless given).
pub fn start_master(dir: &Path, repo: &Path, extra: &[&str], port: u16) -> Proc {
    let mut cmd = hummel();
    cmd.args(["master", "--repo"])
        .arg(repo)
        .arg("--data")
        .arg(dir.join("master"))
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    // Fast liveness timings for tests, unless `extra` sets its own.
    for (flag, value) in [
        ("--heartbeat-interval", "200ms"),
        ("--stale-after", "3s"),
        ("--dead-after", "8s"),
    ] {
        if !extra.contains(&flag) {
            cmd.args([flag, value]);
        }
    }
    cmd.args(extra)
        .env("HUMMEL_WRITE_TOKEN", WRITE)
        .env("HUMMEL_SLAVE_TOKEN", SLAVE);
    Proc::start("master", cmd, &dir.join("logs"))
}

/// Runs `hummel master` on an empty temp folder with `args`, expecting it to refuse them;
/// returns its error output.
pub fn master_refuses(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = hummel();
    cmd.args(["master", "--repo"])
        .arg(dir.path())
        .arg("--data")
        .arg(dir.path().join("data"))
        .args(args);
    fails(cmd)
}

/// Every pack file below a store folder.
pub fn pack_files(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(fans) = fs::read_dir(store.join("packs")) else {
        return out;
    };
    for fan in fans.flatten() {
        for f in fs::read_dir(fan.path()).unwrap().flatten() {
            out.push(f.path());
        }
    }
    out.sort();
    out
}

/// Flips one byte in the middle of a file.
pub fn corrupt(path: &Path) {
    let mut b = fs::read(path).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    fs::write(path, b).unwrap();
}

/// Deterministic pseudo-random bytes (xorshift), half text-like so zstd has work to do.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    let words: [&[u8]; 8] = [
        b"hummel ",
        b"pbo ",
        b"config ",
        b"class ",
        b"{ x = 1; } ",
        b"texture ",
        b"\n",
        b"addon ",
    ];
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (out.len() / 8192) % 2 == 0 {
            out.extend_from_slice(&x.to_le_bytes());
        } else {
            out.extend_from_slice(words[(x % 8) as usize]);
        }
    }
    out.truncate(len);
    out
}

/// Writes a file, creating parents.
pub fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

/// A small mod set: a 6 MiB file, medium and small files, unicode and space names, an empty
/// file and an empty folder. About 8 MB.
pub fn fill_modset(root: &Path) {
    write(root, "@big/addons/big.pbo", &data(6 << 20, 1));
    write(root, "@mod_a/addons/a.pbo", &data(700 << 10, 2));
    write(root, "@mod_a/addons/a.pbo.bisign", &data(600, 3));
    write(root, "@mod_a/mod.cpp", b"name = \"A\";\n");
    write(root, "@mod_a/empty.txt", b"");
    fs::create_dir_all(root.join("@mod_a/empty folder")).unwrap();
    for i in 0..30 {
        write(
            root,
            &format!("@mod b/data/sub {}/f ü {i}.txt", i % 4),
            &data(1000 + i * 1500, 10 + i as u64),
        );
    }
    write(root, "日本語/テスト.cfg", &data(5000, 99));
    write(root, "top.txt", b"top level\n");
    let exe = root.join("@mod_a/tool.sh");
    fs::write(&exe, b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Sorted map path → description (kind, size, BLAKE3, permission bits, mtime), without `.hummel`.
pub fn digest(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
        if rel == ".hummel" {
            continue;
        }
        let md = fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            out.insert(rel, format!("dir {:o}", md.permissions().mode() & 0o7777));
            walk(root, &p, out);
        } else if md.is_file() {
            use std::os::unix::fs::MetadataExt;
            let h = blake3::hash(&fs::read(&p).unwrap());
            out.insert(
                rel,
                format!(
                    "file {} {} {:o} {}",
                    md.len(),
                    &h.to_hex()[..16],
                    md.permissions().mode() & 0o7777,
                    md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128
                ),
            );
        } else {
            out.insert(rel, "other".into());
        }
    }
}

/// Asserts two trees are identical, printing the differences.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let (da, db) = (digest(a), digest(b));
    if da != db {
        let mut diff = String::new();
        for (k, v) in &da {
            match db.get(k) {
                None => diff.push_str(&format!("only in {}: {k} ({v})\n", a.display())),
                Some(w) if w != v => diff.push_str(&format!("differs: {k}\n  {v}\n  {w}\n")),
                _ => {}
            }
        }
        for (k, v) in &db {
            if !da.contains_key(k) {
                diff.push_str(&format!("only in {}: {k} ({v})\n", b.display()));
            }
        }
        panic!("trees differ:\n{diff}");
    }
}

/// SIGTERM, then waits for the process to exit; its exit status.
pub fn terminate(p: &mut Proc) -> std::process::ExitStatus {
    let mut child = p.child.take().expect("running");
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let mut status = None;
    wait_for(&format!("{} to stop", p.name), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

/// Waits for a condition (30 s at most).
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > Duration::from_secs(30) {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Number field of a JSON report.
pub fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key} in {v}"))
}

/// `GET url`; the body as text.
pub fn get_text(url: &str) -> String {
    let (code, body) = get_status(url);
    assert_eq!(code, 200, "{url}: {body}");
    body
}

/// An unlabelled sample of Prometheus text.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// A reqwest client for the tests' own requests (built through hummel-tls, which installs the
/// crypto provider reqwest needs), trusting the system's roots only.
pub fn http() -> reqwest::Client {
    hummel_tls::ClientTls::system()
        .client_builder()
        .build()
        .unwrap()
}

/// `GET url`; the status code and the body as text.
pub fn get_status(url: &str) -> (u16, String) {
    get_status_with(&http(), url)
}

/// `GET url`: the response's headers (lower-case names → values).
pub fn get_headers(url: &str) -> std::collections::BTreeMap<String, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let resp = http().get(url).send().await.unwrap();
            resp.headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect()
        })
}

/// Asserts that `headers` (of an HTML page) hold a Content-Security-Policy that allows no
/// inline script or style and nothing from elsewhere, and `nosniff`.
pub fn assert_strict_page_policy(headers: &std::collections::BTreeMap<String, String>) {
    let csp = headers
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("no Content-Security-Policy: {headers:#?}"));
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(part), "{part} not in {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(
        headers.get("x-content-type-options").map(String::as_str),
        Some("nosniff")
    );
}

/// `GET url` with `client`; the status code and the body as text.
pub fn get_status_with(client: &reqwest::Client, url: &str) -> (u16, String) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let resp = client.get(url).send().await.unwrap();
            let code = resp.status().as_u16();
            (code, resp.text().await.unwrap())
        })
}

/// Copies a folder tree (files and folders only).
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Bytes the files below `dir` occupy on disk (temp files are sparse: only what was written).
pub fn allocated(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}

/// Starts `sync` (a `hummel sync` into `dest`) and returns once the temp files hold `share` of
/// the `bytes` it writes; the sync must still be running then, for the test to interrupt it.
pub fn spawn_until_filled(
    mut sync: std::process::Command,
    dest: &Path,
    bytes: u64,
    share: f64,
) -> std::process::Child {
    sync.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = sync.spawn().unwrap();
    let tmp = dest.join(".hummel/tmp");
    wait_for("the temp files to fill", || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sync ended before the test could interrupt it"
        );
        allocated(&tmp) as f64 >= share * bytes as f64
    });
    child
}
