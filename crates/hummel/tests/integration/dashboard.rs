//! The master's live dashboard in a real browser (Debian's `chromium` through `chromedriver`,
//! as in `player`): log in with the write token once, see a build started from another process
//! appear without a reload, see a POST with the session cookie but without its CSRF token
//! change nothing, and drain a slave from the page until it shows "drained".
//!
//! Skipped with a note without chromium and chromedriver, unless `HUMMEL_BROWSER_REQUIRED` is
//! set; on failure a screenshot and the page's HTML are kept.

use std::fs;
use std::io::Write;

use serde_json::Value;
use thirtyfour::prelude::*;

use super::player::{Driver, browser_paths, click, shows, type_into};
use super::util::*;

#[test]
fn the_dashboard_shows_a_build_live_and_drains_a_slave_from_the_page() {
    let (driver_path, chromium) = match browser_paths() {
        Ok(p) => p,
        Err(why) if std::env::var_os("HUMMEL_BROWSER_REQUIRED").is_none() => {
            let _ = writeln!(
                std::io::stderr(),
                "note: SKIPPING the browser test: {why}. .ci/run installs chromium and \
                 chromium-driver; set HUMMEL_BROWSER_REQUIRED=1 to make this a failure."
            );
            return;
        }
        Err(why) => panic!("the browser test cannot run: {why}"),
    };
    let c = Cluster::start_with(
        3,
        |r| {
            write(r, "@ace/addons/ace_main.pbo", &data(300 << 10, 1));
            write(r, "@cba/addons/cba_main.pbo", &data(200 << 10, 2));
        },
        &["--replication", "2"],
    );
    c.build();
    c.wait_replicated();
    let ids: Vec<String> = (0..3).map(|i| c.slave_id(i)).collect();
    let work = tempfile::tempdir().unwrap();
    let shots = work.path().join("screenshots");
    let driver = Driver::start(&driver_path, &work.path().join("chromedriver.log"));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let result = runtime.block_on(async {
        let mut caps = DesiredCapabilities::chrome();
        caps.set_binary(&chromium.display().to_string()).unwrap();
        for arg in [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,800",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            &format!("--user-data-dir={}", work.path().join("chromium").display()),
        ] {
            caps.add_arg(arg).unwrap();
        }
        let wd = WebDriver::new(driver.url.clone(), caps)
            .await
            .map_err(|e| format!("a browser session: {e}"))?;
        let steps = dashboard_steps(&wd, &c, &ids).await;
        if let Err(e) = &steps {
            fs::create_dir_all(&shots).unwrap();
            let _ = wd.screenshot(&shots.join("failure.png")).await;
            if let Ok(html) = wd.source().await {
                let _ = fs::write(shots.join("failure.html"), html);
            }
            let _ = wd.quit().await;
            return Err(e.clone());
        }
        wd.quit().await.map_err(|e| e.to_string())?;
        Ok(())
    });
    if let Err(e) = result {
        let kept = work.keep();
        panic!(
            "{e}\nscreenshot and page kept in {}",
            kept.join("screenshots").display()
        );
    }
}

async fn dashboard_steps(wd: &WebDriver, c: &Cluster, ids: &[String]) -> Result<(), String> {
    let e = |e: WebDriverError| e.to_string();
    // The page allows no inline script or style: what follows proves its live updates and
    // actions work under that policy.
    let url = format!("{}/", c.master.url);
    let resp = http().get(&url).send().await.map_err(|e| e.to_string())?;
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    assert_strict_page_policy(&headers);
    wd.goto(url).await.map_err(e)?;
    // Its stylesheet applies (a blocked one would leave the browser's default font).
    let font = wd
        .execute(
            "return getComputedStyle(document.body).fontFamily;",
            Vec::new(),
        )
        .await
        .map_err(e)?;
    if !font
        .json()
        .as_str()
        .is_some_and(|f| f.contains("system-ui"))
    {
        return Err(format!("the stylesheet did not apply: {:?}", font.json()));
    }
    // The write token, once.
    type_into(wd, "#login input[name=token]", WRITE).await?;
    click(wd, "#login button").await?;
    shows(wd, "#session", "Logged in").await?;
    shows(wd, "#live-status", "live").await?;

    // From here on, whatever the policy blocks (in the live sections replaced) is recorded.
    wd.execute(
        "window.hummelViolations = []; document.addEventListener('securitypolicyviolation', \
         function (v) { window.hummelViolations.push(v.violatedDirective + ' ' + v.blockedURI); });",
        Vec::new(),
    )
    .await
    .map_err(e)?;
    // A build from another process: the open page shows it without a reload.
    wd.execute("window.hummelMarker = 'not reloaded';", Vec::new())
        .await
        .map_err(e)?;
    write(&c.repo, "@ace/addons/new.pbo", &data(50 << 10, 9));
    let built = tokio::task::block_in_place(|| c.build());
    let revision = built["revision"].as_u64().ok_or("no revision built")?;
    shows(wd, "#live-current", &revision.to_string()).await?;
    shows(wd, &format!("#rev-{revision}"), "+1").await?;
    let marker = wd
        .execute("return window.hummelMarker || null;", Vec::new())
        .await
        .map_err(e)?;
    if marker.json() != &Value::from("not reloaded") {
        return Err(format!("the page was reloaded: {:?}", marker.json()));
    }
    // The live updates broke nothing of the policy.
    let seen = wd
        .execute("return window.hummelViolations;", Vec::new())
        .await
        .map_err(e)?;
    if seen.json().as_array().is_none_or(|v| !v.is_empty()) {
        return Err(format!("the page broke its policy: {:?}", seen.json()));
    }

    // The session cookie without the CSRF token (from the page's origin): refused, no drain.
    let cookie = wd.get_named_cookie("hummel_session").await.map_err(e)?;
    let cookie = format!("hummel_session={}", cookie.value);
    let code = http()
        .post(format!("{}/ui/drain", c.master.url))
        .header("Cookie", &cookie)
        .header("Origin", &c.master.url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("slave={}", ids[1]))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .status()
        .as_u16();
    if code != 403 {
        return Err(format!("a post without the CSRF token got {code}"));
    }
    let refused = tokio::task::block_in_place(|| c.slave_status(&ids[1])["drain"].clone());
    if !refused.is_null() {
        return Err(format!("the refused post drained the slave: {refused}"));
    }

    // Drain slave 0 from the page: it shows drained, and so does the status.
    let row = format!("tr[data-slave=\"{}\"]", ids[0]);
    click(wd, &format!("{row} form[action=\"/ui/drain\"] button")).await?;
    shows(wd, &format!("{row} td.drain"), "drained").await?;
    let drained = tokio::task::block_in_place(|| c.slave_status(&ids[0])["drain"].clone());
    if drained != "drained" {
        return Err(format!("the page shows drained, the status {drained}"));
    }
    Ok(())
}
