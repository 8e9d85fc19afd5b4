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
