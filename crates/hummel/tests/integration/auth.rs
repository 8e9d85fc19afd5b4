//! Every token-protected endpoint refuses a missing (401) or wrong (403) token and changes nothing.

use reqwest::StatusCode;
use serde_json::json;

use super::util::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn status_of(req: reqwest::RequestBuilder) -> StatusCode {
    req.send().await.unwrap().status()
}

#[test]
fn write_and_slave_endpoints_refuse_missing_and_wrong_tokens() {
    let c = Cluster::start(0, fill_modset);
    let url = c.master.url.clone();
    let http = http();
    let hashlist = json!({"slave_id": "intruder", "url": "http://127.0.0.1:9", "quota": null, "used": 0, "packs": []});
    let heartbeat =
        json!({"slave_id": "intruder", "used": 0, "packs": 0, "replicating": 0, "corrupt": []});
    rt().block_on(async {
        let build = || http.post(format!("{url}/build"));
        assert_eq!(status_of(build()).await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            status_of(build().header("X-HUMMEL-TOKEN", "wrong")).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status_of(build().header("X-HUMMEL-TOKEN", SLAVE)).await,
            StatusCode::FORBIDDEN
        );
        // The dashboard's form checks the same token.
        let form = http
            .post(format!("{url}/ui/build"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("token=wrong");
        assert_eq!(status_of(form).await, StatusCode::FORBIDDEN);

        for path in ["/slave/hashlist", "/slave/heartbeat"] {
            let body = if path.ends_with("hashlist") {
                &hashlist
            } else {
                &heartbeat
            };
            let req = || http.post(format!("{url}{path}")).json(body);
            assert_eq!(status_of(req()).await, StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(
                status_of(req().header("X-HUMMEL-TOKEN", "wrong")).await,
                StatusCode::FORBIDDEN,
                "{path}"
            );
            assert_eq!(
                status_of(req().header("X-HUMMEL-TOKEN", WRITE)).await,
                StatusCode::FORBIDDEN,
                "{path}"
            );
        }
        // Nothing changed: no build ran, no slave was registered.
        let st: serde_json::Value = http
            .get(format!("{url}/api/v1/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(st["revision"]["revision"].is_null(), "{st}");
        assert!(st["build"].is_null(), "{st}");
        assert_eq!(st["slaves"].as_array().unwrap().len(), 0, "{st}");

        // The right token works.
        assert_eq!(
            status_of(build().header("X-HUMMEL-TOKEN", WRITE)).await,
            StatusCode::ACCEPTED
        );
    });
    let log = c.master.log_text();
    assert!(
        !log.contains(WRITE) && !log.contains(SLAVE),
        "a token appeared in the log"
    );
}

#[test]
fn a_read_token_protects_the_index_and_the_packs() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    fill_modset(&repo);
    let mut cmd = hummel();
    cmd.args(["master", "--repo"])
        .arg(&repo)
        .arg("--data")
        .arg(dir.path().join("m"))
        .args(["--listen", "127.0.0.1:0", "--build-on-start"])
        .env("HUMMEL_WRITE_TOKEN", WRITE)
        .env("HUMMEL_SLAVE_TOKEN", SLAVE)
        .env("HUMMEL_READ_TOKEN", "reader");
    let m = Proc::start("master", cmd, &dir.path().join("logs"));
    let mut cmd = hummel();
    cmd.args(["slave", "--master", &m.url, "--data"])
        .arg(dir.path().join("s"))
        .args(["--listen", "127.0.0.1:0"])
        .env("HUMMEL_SLAVE_TOKEN", SLAVE)
        .env("HUMMEL_READ_TOKEN", "reader");
    let s = Proc::start("slave", cmd, &dir.path().join("logs"));
    let http = http();
    rt().block_on(async {
        for path in ["/api/v1/revision", "/api/v1/index", "/api/v1/status"] {
            let req = || http.get(format!("{}{path}", m.url));
            assert_eq!(status_of(req()).await, StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(
                status_of(req().header("X-HUMMEL-TOKEN", "wrong")).await,
                StatusCode::FORBIDDEN,
                "{path}"
            );
        }
        let locate = || {
            http.post(format!("{}/api/v1/locate", m.url))
                .json(&json!({"packs": [1]}))
        };
        assert_eq!(status_of(locate()).await, StatusCode::UNAUTHORIZED);
        // Wait for the slave to hold a pack, then ask for it without a token.
        let pack = loop {
            if let Some(p) = pack_files(&dir.path().join("s/store")).first() {
                break p.file_name().unwrap().to_string_lossy().to_string();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        let blob = || http.get(format!("{}/blob/{pack}", s.url));
        // The file gets its name a moment before the slave lists it as held.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while status_of(blob().header("X-HUMMEL-TOKEN", "reader")).await != StatusCode::OK {
            assert!(
                std::time::Instant::now() < deadline,
                "the slave never served {pack}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(status_of(blob()).await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            status_of(blob().header("X-HUMMEL-TOKEN", "wrong")).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status_of(blob().header("X-HUMMEL-TOKEN", "reader")).await,
            StatusCode::OK
        );
        let origin = || http.get(format!("{}/blob/{pack}", m.url));
        assert_eq!(status_of(origin()).await, StatusCode::UNAUTHORIZED);
    });
    // A client without the token gets a clear error; with it, the sync works.
    let dest = dir.path().join("dest");
    let mut sync = hummel();
    sync.args(["sync", &m.url]).arg(&dest);
    fails(sync);
    let mut sync = hummel();
    sync.args(["sync", &m.url])
        .arg(&dest)
        .env("HUMMEL_READ_TOKEN", "reader");
    ok(sync);
    assert_same_tree(&repo, &dest);
}

/// The tokens of the matrix's columns, as sent in `X-HUMMEL-TOKEN`.
#[derive(Clone, Copy, Debug)]
enum Tok {
    None,
    /// Not UTF-8: it can equal no token.
    Malformed,
    Wrong,
    Slave,
    Write,
    Read,
    Metrics,
}

const COLUMNS: [Tok; 7] = [
    Tok::None,
    Tok::Malformed,
    Tok::Wrong,
    Tok::Slave,
    Tok::Write,
    Tok::Read,
    Tok::Metrics,
];
const READ: &str = "matrix-read-token";
const METRICS: &str = "matrix-metrics-token";

impl Tok {
    fn header(self) -> Option<reqwest::header::HeaderValue> {
        let v = |s: &str| reqwest::header::HeaderValue::from_str(s).unwrap();
        match self {
            Tok::None => None,
            Tok::Malformed => {
                Some(reqwest::header::HeaderValue::from_bytes(b"\xff\xfe tok").unwrap())
            }
            Tok::Wrong => Some(v("wrong")),
            Tok::Slave => Some(v(SLAVE)),
            Tok::Write => Some(v(WRITE)),
            Tok::Read => Some(v(READ)),
            Tok::Metrics => Some(v(METRICS)),
        }
    }

    /// The token as the dashboard's form field (`None`: no field).
    fn form(self) -> Option<&'static str> {
        match self {
            Tok::None => None,
            Tok::Malformed => Some("%FF%FE"),
            Tok::Wrong => Some("wrong"),
            Tok::Slave => Some(SLAVE),
            Tok::Write => Some(WRITE),
            Tok::Read => Some(READ),
            Tok::Metrics => Some(METRICS),
        }
    }
}

/// One endpoint of the matrix: what to send, and the status expected for each column of
/// [`COLUMNS`] (none, malformed, wrong, slave, write, read, metrics).
struct Row {
    name: &'static str,
    method: reqwest::Method,
    url: String,
    body: Option<serde_json::Value>,
    form: bool,
    expect: [u16; 7],
}

/// Nonces of the matrix's signed slave requests.
static MATRIX_NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

async fn send(http: &reqwest::Client, row: &Row, tok: Tok) -> u16 {
    let mut req = http.request(row.method.clone(), &row.url);
    if row.form {
        let body = tok.form().map(|t| format!("token={t}")).unwrap_or_default();
        req = req
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
    } else if let Some(h) = tok.header() {
        req = req.header("X-HUMMEL-TOKEN", h);
    }
    if let Some(b) = &row.body {
        let bytes = serde_json::to_vec(b).unwrap();
        if row.url.contains("/slave/") {
            // Signed as a slave signs (hummel_proto::identity): the token decides.
            let nonce = MATRIX_NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = reqwest::Url::parse(&row.url).unwrap().path().to_string();
            let key = hummel_proto::identity::SlaveKey::from_secret([42; 32]);
            for (name, value) in key.sign_request("POST", &path, "matrix-slave", nonce, &bytes) {
                req = req.header(name, value);
            }
        }
        req = req.header("content-type", "application/json").body(bytes);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    // Read the body: a pack served from the master's fallback holds a slot until it is sent.
    let _ = resp.bytes().await;
    status
}

/// Runs every row under every column; panics with the whole table of differences.
async fn check_matrix(rows: &[Row]) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut wrong = Vec::new();
    for row in rows {
        for (i, tok) in COLUMNS.iter().enumerate() {
            let got = send(&http, row, *tok).await;
            if got != row.expect[i] {
                wrong.push(format!(
                    "{} with {tok:?}: {got}, expected {}",
                    row.name, row.expect[i]
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "access matrix:\n{}", wrong.join("\n"));
}

/// The rows every master shares (`reads`: the statuses of a read endpoint, `hashlist`: the
/// slave hashlist to send).
fn master_rows(
    url: &str,
    pack: &str,
    reads: [u16; 7],
    metrics: [u16; 7],
    blob: [u16; 7],
    digest: Option<String>,
) -> Vec<Row> {
    use reqwest::Method;
    let get = |name, path: &str, expect| Row {
        name,
        method: Method::GET,
        url: format!("{url}{path}"),
        body: None,
        form: false,
        expect,
    };
    let post = |name, path: &str, body, expect| Row {
        name,
        method: Method::POST,
        url: format!("{url}{path}"),
        body: Some(body),
        form: false,
        expect,
    };
    let mut hashlist = json!({"slave_id": "matrix-slave", "url": "http://127.0.0.1:9",
        "quota": null, "used": 0, "packs": []});
    if let Some(d) = digest {
        hashlist["read_token_digest"] = d.into();
    }
    let report = json!({"client_id": "matrix-client", "client_key": "ab".repeat(32),
        "revision": 1, "path": "", "files": 1, "bytes": 1, "packs": [], "bad_slaves": []});
    let refused = |ok: u16, column: usize| {
        let mut e = [401, 403, 403, 403, 403, 403, 403];
        e[column] = ok;
        e
    };
    let with = |mut e: [u16; 7], ok: u16| {
        for s in &mut e {
            if *s == 200 {
                *s = ok;
            }
        }
        e
    };
    vec![
        get("GET /health", "/health", [200; 7]),
        get("GET /metrics", "/metrics", metrics),
        get("GET /", "/", reads),
        // The page a player's link leads to names only the URL the visitor knows.
        get("GET /join", "/join", [200; 7]),
        // The pages' script and stylesheet are part of the binary: they hold no data.
        get("GET /ui/live.js", "/ui/live.js", [200; 7]),
        get("GET /ui/style.css", "/ui/style.css", [200; 7]),
        Row {
            name: "POST /ui/build",
            method: Method::POST,
            url: format!("{url}/ui/build"),
            body: None,
            form: true,
            // The form's token is a string: undecodable bytes become another one.
            expect: [401, 403, 403, 403, 303, 403, 403],
        },
        Row {
            name: "POST /build",
            method: Method::POST,
            url: format!("{url}/build"),
            body: None,
            form: false,
            expect: refused(202, 4),
        },
        get("GET /api/v1/builds/latest", "/api/v1/builds/latest", reads),
        get("GET /api/v1/revision", "/api/v1/revision", reads),
        get("GET /api/v1/index", "/api/v1/index", reads),
        get("GET /api/v1/status", "/api/v1/status", reads),
        post(
            "POST /api/v1/locate",
            "/api/v1/locate",
            json!({"packs": [1]}),
            reads,
        ),
        post(
            "POST /api/v1/client/report",
            "/api/v1/client/report",
            report,
            with(reads, 204),
        ),
        post(
            "POST /slave/hashlist",
            "/slave/hashlist",
            hashlist,
            refused(200, 3),
        ),
        post(
            "POST /slave/heartbeat",
            "/slave/heartbeat",
            json!({"slave_id": "matrix-slave", "used": 0, "packs": 0, "replicating": 0,
                "corrupt": []}),
            refused(200, 3),
        ),
        Row {
            name: "DELETE /api/v1/slaves/{id}",
            method: Method::DELETE,
            url: format!("{url}/api/v1/slaves/matrix-slave"),
            body: None,
            form: false,
            expect: refused(204, 4),
        },
        get("GET /blob (master)", &format!("/blob/{pack}"), blob),
    ]
}

/// Issue 10's table: every endpoint of a private master and of its slave, under every kind
/// of token; then the same for a public master with a metrics token.
#[test]
fn every_endpoint_answers_every_kind_of_token_as_the_table_says() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    fill_modset(&repo);
    let m = start_master(
        dir.path(),
        &repo,
        &[
            "--build-on-start",
            "--read-token",
            READ,
            "--metrics-token",
            METRICS,
        ],
        0,
    );
    let mut cmd = hummel();
    cmd.args(["slave", "--master", &m.url, "--data"])
        .arg(dir.path().join("s"))
        .args(["--listen", "127.0.0.1:0"])
        .env("HUMMEL_SLAVE_TOKEN", SLAVE)
        .env("HUMMEL_READ_TOKEN", READ);
    let s = Proc::start("slave", cmd, &dir.path().join("logs"));
    wait_for("the slave to hold a pack", || {
        !pack_files(&dir.path().join("s/store")).is_empty()
    });
    let pack = pack_files(&dir.path().join("s/store"))[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    // Read access: the read or the write token.
    let reads = [401, 403, 403, 403, 200, 200, 403];
    let metrics = [401, 403, 403, 403, 200, 200, 200];
    let blob = [401, 403, 403, 200, 200, 200, 403];
    let mut rows = master_rows(
        &m.url,
        &pack,
        reads,
        metrics,
        blob,
        Some(hummel_proto::auth::read_token_digest(READ)),
    );
    use reqwest::Method;
    let slave_get = |name, path: String, expect| Row {
        name,
        method: Method::GET,
        url: format!("{}{path}", s.url),
        body: None,
        form: false,
        expect,
    };
    rows.push(slave_get("GET /health (slave)", "/health".into(), [200; 7]));
    // The slave knows the read and slave tokens only (and no metrics token of its own).
    rows.push(slave_get(
        "GET /metrics (slave)",
        "/metrics".into(),
        [401, 403, 403, 403, 403, 200, 403],
    ));
    rows.push(slave_get(
        "GET /blob (slave)",
        format!("/blob/{pack}"),
        [401, 403, 403, 200, 403, 200, 403],
    ));
    // The file gets its name a moment before the slave lists it as held.
    wait_for("the slave to serve its pack", || {
        get_status_with_token(&format!("{}/blob/{pack}", s.url), READ) == 200
    });
    rt().block_on(check_matrix(&rows));
    drop(s);
    drop(m);

    // A public master with a metrics token: reads are anyone's, whatever they send.
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    fill_modset(&repo);
    let m = start_master(
        dir.path(),
        &repo,
        &["--build-on-start", "--metrics-token", METRICS],
        0,
    );
    wait_for("the first build", || {
        let (_, body) = get_status(&format!("{}/api/v1/revision", m.url));
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["revision"].is_u64()
    });
    let pack = pack_files(&dir.path().join("master/store"))[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let rows = master_rows(
        &m.url,
        &pack,
        [200; 7],
        [401, 403, 403, 403, 200, 403, 200],
        [200; 7],
        None,
    );
    rt().block_on(check_matrix(&rows));
}

/// `GET url` with a token; the status.
fn get_status_with_token(url: &str, token: &str) -> u16 {
    rt().block_on(async {
        http()
            .get(url)
            .header("X-HUMMEL-TOKEN", token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

/// A slave that would serve a private repository to anyone is refused, and stops saying why;
/// so is a slave with another read token, and one with a token for a public master.
#[test]
fn a_private_master_refuses_a_slave_without_its_read_token() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    fill_modset(&repo);
    let m = start_master(dir.path(), &repo, &["--read-token", READ], 0);
    let slave = |name: &str, read: Option<&str>| {
        let mut cmd = hummel();
        cmd.args(["slave", "--master", &m.url, "--data"])
            .arg(dir.path().join(name))
            .args(["--listen", "127.0.0.1:0"])
            .env("HUMMEL_SLAVE_TOKEN", SLAVE);
        if let Some(r) = read {
            cmd.env("HUMMEL_READ_TOKEN", r);
        }
        cmd
    };
    let err = fails(slave("open", None));
    assert!(
        err.contains("repository is private") && err.contains("HUMMEL_READ_TOKEN"),
        "{err}"
    );
    let err = fails(slave("other", Some("another-token")));
    assert!(err.contains("not the master's"), "{err}");
    assert!(
        !err.contains("another-token") && !err.contains(READ),
        "{err}"
    );
    let log = m.log_text();
    assert!(log.contains("refused a slave"), "{log}");
    assert!(!log.contains(READ), "the read token appeared in the log");
    // Listed nowhere; counted.
    let status = rt().block_on(async {
        http()
            .get(format!("{}/api/v1/status", m.url))
            .header("X-HUMMEL-TOKEN", READ)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    });
    assert_eq!(status["slaves"].as_array().unwrap().len(), 0, "{status}");
    let metrics = rt().block_on(async {
        http()
            .get(format!("{}/metrics", m.url))
            .header("authorization", format!("Bearer {READ}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert_eq!(metric(&metrics, "hummel_slaves_refused_total"), 2);
    // With the token it joins.
    let _s = Proc::start("slave", slave("good", Some(READ)), &dir.path().join("logs"));
    wait_for("the slave to announce", || {
        m.log_text().contains("new slave")
    });
    drop(m);

    // A public master refuses a slave whose clients would need a token.
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    fill_modset(&repo);
    let m = start_master(dir.path(), &repo, &[], 0);
    let mut cmd = hummel();
    cmd.args(["slave", "--master", &m.url, "--data"])
        .arg(dir.path().join("s"))
        .args(["--listen", "127.0.0.1:0"])
        .env("HUMMEL_SLAVE_TOKEN", SLAVE)
        .env("HUMMEL_READ_TOKEN", READ);
    let err = fails(cmd);
    assert!(err.contains("repository is public"), "{err}");
}
