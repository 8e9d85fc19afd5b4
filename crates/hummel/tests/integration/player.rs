//! The player page (`hummel ui`) against a real master and slave: its gate (secret, Origin,
//! Host), and the whole player's path in a real browser (Debian's `chromium` driven through
//! `chromedriver` with WebDriver): add the link, see the repository's name, description and
//! sets, choose the folder, pick a set, sync to 100 %, see a new build's change in the
//! changelog, launch with the right command line (the set's server, its password asked).
//!
//! Without chromium and chromedriver the browser test is skipped with a note; with
//! `HUMMEL_BROWSER_REQUIRED` set (CI, which installs them) it fails instead. When it fails, a
//! screenshot and the page's HTML are kept in a folder whose path it prints.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thirtyfour::prelude::*;

use super::util::*;

/// A `hummel ui --no-browser` for one test: its config dir, and URLs open with a recorder.
struct Ui {
    _proc: Proc,
    /// The page's URL with the secret in its fragment.
    page: String,
    /// `http://127.0.0.1:PORT`.
    base: String,
    secret: String,
    config: PathBuf,
    /// Where the recorder writes the command line of the last URL opened.
    recorded: PathBuf,
}

impl Ui {
    fn start(dir: &Path) -> Ui {
        let config = dir.join("config");
        let recorder = dir.join("open-with.sh");
        let recorded = dir.join("opened.txt");
        fs::write(
            &recorder,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{0}.tmp' && mv '{0}.tmp' '{0}'\n",
                recorded.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&recorder, fs::Permissions::from_mode(0o755)).unwrap();
        let mut cmd = hummel();
        cmd.args(["ui", "--no-browser"])
            .env("HUMMEL_CONFIG_DIR", &config)
            .env("HUMMEL_OPEN_WITH", &recorder);
        let proc = Proc::start("ui", cmd, &dir.join("logs"));
        let mut page = String::new();
        wait_for("the page's URL", || {
            let log = proc.log_text();
            match log
                .lines()
                .find_map(|l| l.strip_prefix("Hummel's player page: "))
            {
                Some(url) => {
                    page = url.trim().to_string();
                    true
                }
                None => false,
            }
        });
        let (base, secret) = page.split_once("/#").expect("the secret in the fragment");
        Ui {
            base: base.to_string(),
            secret: secret.to_string(),
            page: page.clone(),
            _proc: proc,
            config,
            recorded,
        }
    }
}

/// One request to the page's API: status and body.
fn call(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> (u16, String) {
    let client = http();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut rb = client.request(method.parse().unwrap(), url);
            for (k, v) in headers {
                rb = rb.header(*k, *v);
            }
            if let Some(b) = body {
                rb = rb
                    .header("content-type", "application/json")
                    .body(b.to_string());
            }
            let resp = rb.send().await.unwrap();
            let code = resp.status().as_u16();
            (code, resp.text().await.unwrap())
        })
}

#[test]
fn the_api_wants_the_secret_and_the_pages_own_origin_and_host() {
    let dir = tempfile::tempdir().unwrap();
    let ui = Ui::start(dir.path());
    let profiles = format!("{}/api/profiles", ui.base);
    let secret = ("X-Hummel-Secret", ui.secret.as_str());
    let own_origin = ui.base.as_str();

    let (code, body) = call("GET", &profiles, &[secret], None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"profiles\":[]"), "{body}");

    // No secret, a wrong one, a foreign page, a rebound name: refused, nothing saved.
    let add = r#"{"link": "http://127.0.0.1:9"}"#;
    for (why, headers, want) in [
        ("no secret", vec![], 401),
        (
            "wrong secret",
            vec![("X-Hummel-Secret", "0".repeat(64).leak() as &str)],
            403,
        ),
        (
            "foreign origin",
            vec![secret, ("Origin", "http://evil.example")],
            403,
        ),
        (
            "cross-site fetch",
            vec![secret, ("Sec-Fetch-Site", "cross-site")],
            403,
        ),
        ("rebound host", vec![secret, ("Host", "evil.example")], 403),
    ] {
        let (code, body) = call("POST", &profiles, &headers, Some(add));
        assert_eq!(code, want, "{why}: {body}");
        let (code, _) = call("GET", &profiles, &headers, None);
        assert_eq!(code, want, "{why} (GET)");
    }
    assert!(!ui.config.join("profiles.json").exists());

    // The page itself is served (it holds no data), to its own host only, with a strict CSP.
    let (code, html) = call("GET", &format!("{}/", ui.base), &[], None);
    assert_eq!(code, 200);
    assert!(html.contains("/app.js"), "{html}");
    assert!(
        !html.contains("<style") && !html.contains("style=\""),
        "{html}"
    );
    assert_strict_page_policy(&get_headers(&format!("{}/", ui.base)));
    let (code, _) = call(
        "GET",
        &format!("{}/", ui.base),
        &[("Host", "evil.example:80")],
        None,
    );
    assert_eq!(code, 403);

    // With the secret and the page's own origin, a bad link is refused with a reason.
    let (code, body) = call(
        "POST",
        &profiles,
        &[secret, ("Origin", own_origin)],
        Some(r#"{"link": "ftp://mods.example"}"#),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("bad_link"), "{body}");
    drop(ui);
}

/// chromedriver and chromium, or why not.
pub(super) fn browser_paths() -> Result<(PathBuf, PathBuf), String> {
    let find = |names: &[&str]| {
        names
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| format!("none of {names:?} is installed"))
    };
    let driver = find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])?;
    let chromium = find(&["/usr/lib/chromium/chromium", "/usr/bin/chromium"])?;
    Ok((driver, chromium))
}

/// A running chromedriver, killed on drop.
pub(super) struct Driver {
    child: Child,
    pub(super) url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    pub(super) fn start(path: &Path, log: &Path) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let d = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = format!("{}/status", d.url);
        wait_for("chromedriver", || {
            let client = http();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async { client.get(&status).send().await.is_ok() })
        });
        d
    }
}

/// Waits (20 s at most) until `f` finds what it looks for.
pub(super) async fn until<T, F, Fut>(what: &str, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if start.elapsed() > Duration::from_secs(20) {
            return Err(format!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The text of the element `css` selects, if there is one.
pub(super) async fn text_of(wd: &WebDriver, css: &str) -> Option<String> {
    wd.find(By::Css(css)).await.ok()?.text().await.ok()
}

/// Whether `css` selects a displayed element.
async fn shown(wd: &WebDriver, css: &str) -> bool {
    match wd.find(By::Css(css)).await {
        Ok(e) => e.is_displayed().await.unwrap_or(false),
        Err(_) => false,
    }
}

/// Clicks `css` (found again if the page re-rendered it meanwhile).
pub(super) async fn click(wd: &WebDriver, css: &str) -> Result<(), String> {
    until(&format!("a click on {css}"), || async {
        wd.find(By::Css(css)).await.ok()?.click().await.ok()
    })
    .await
}

/// Types `text` into the input `css`, replacing what it held.
pub(super) async fn type_into(wd: &WebDriver, css: &str, text: &str) -> Result<(), String> {
    until(&format!("typing into {css}"), || async {
        let e = wd.find(By::Css(css)).await.ok()?;
        e.clear().await.ok()?;
        e.send_keys(text).await.ok()
    })
    .await
}

/// Waits until `css` shows `want` (the text contains it).
pub(super) async fn shows(wd: &WebDriver, css: &str, want: &str) -> Result<(), String> {
    let found = until(&format!("{css} to show {want:?}"), || async {
        text_of(wd, css)
            .await
            .filter(|t| t.contains(want))
            .map(|_| ())
    })
    .await;
    match found {
        Ok(()) => Ok(()),
        Err(e) => Err(format!(
            "{e} (it shows {:?})",
            text_of(wd, css).await.unwrap_or_default()
        )),
    }
}

#[test]
fn a_player_adds_a_repository_syncs_sees_the_changes_and_launches_in_a_browser() {
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
    let admin = tempfile::tempdir().unwrap();
    let sets = admin.path().join("sets.toml");
    fs::write(
        &sets,
        "[[set]]\nname = \"ops\"\ndescription = \"Sunday operations\"\n\
         mods = [\"@ace\", \"@rhs\"]\n[set.server]\naddress = \"127.0.0.1\"\nport = 2302\n\
         password = true\n\n[[set]]\nname = \"training\"\nmods = [\"@cba\"]\n",
    )
    .unwrap();
    let sets_arg = sets.display().to_string();
    let c = Cluster::start_with(
        1,
        |r| {
            write(r, "@ace/addons/ace_main.pbo", &data(300 << 10, 1));
            write(r, "@ace/mod.cpp", b"name = \"ACE\";\n");
            write(r, "@cba/addons/cba_main.pbo", &data(200 << 10, 2));
            write(r, "@rhs/addons/rhs.pbo", &data(100 << 10, 3));
        },
        &[
            "--name",
            "Sunday group",
            "--description",
            "Mods for our Sunday operations",
            "--sets",
            &sets_arg,
        ],
    );
    c.build();
    c.wait_replicated();
    let work = tempfile::tempdir().unwrap();
    let ui = Ui::start(work.path());
    let folder = work.path().join("Arma 3 mods");
    // The player's own mod: the syncs leave it alone.
    write(&folder, "@own/addons/own.pbo", b"the player's own mod");
    let shots = work.path().join("screenshots");
    let driver = Driver::start(&driver_path, &work.path().join("chromedriver.log"));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let result = runtime.block_on(async {
        hummel_tls::install_provider();
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
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            &format!("--user-data-dir={}", work.path().join("chromium").display()),
        ] {
            caps.add_arg(arg).unwrap();
        }
        let wd = WebDriver::new(driver.url.clone(), caps)
            .await
            .map_err(|e| format!("a browser session: {e}"))?;
        let steps = player_steps(&wd, &c, &ui, &folder).await;
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
    drop(driver);

    // The profile the page saved is the CLI's too.
    let saved = fs::read_to_string(ui.config.join("profiles.json")).unwrap();
    assert!(
        saved.contains("\"@ace\"") && saved.contains("\"@rhs\"") && saved.contains("\"ops\""),
        "{saved}"
    );
    let name = c.master.url.trim_start_matches("http://").to_string();
    let mut sync = hummel();
    sync.args(["sync", "--profile", &name])
        .env("HUMMEL_CONFIG_DIR", &ui.config);
    let out = ok(sync);
    assert!(out.contains("2 mods"), "{out}");
    assert_same_tree(&c.repo.join("@ace"), &folder.join("@ace"));
    assert_eq!(
        fs::read(folder.join("@own/addons/own.pbo")).unwrap(),
        b"the player's own mod"
    );
}

/// The player's path, step by step; an error says which step failed.
async fn player_steps(wd: &WebDriver, c: &Cluster, ui: &Ui, folder: &Path) -> Result<(), String> {
    let started = Instant::now();
    wd.goto(ui.page.as_str()).await.map_err(|e| e.to_string())?;
    // No profile yet: the page asks for a link.
    until("the add form", || async {
        shown(wd, "#add-view").await.then_some(())
    })
    .await?;
    // A link of another form than the master's URL: its /join page.
    type_into(wd, "#link-input", &format!("{}/join", c.master.url)).await?;
    click(wd, "#add-button").await?;
    // The repository's mods, with their sizes, not in any folder yet.
    until("the mods", || async {
        let rows = wd.find_all(By::Css("tr.mod-row")).await.ok()?;
        (rows.len() == 3).then_some(())
    })
    .await?;
    shows(wd, "tr[data-mod='@ace'] .status", "Choose a folder").await?;
    shows(wd, "tr[data-mod='@ace'] td.num", "307").await?;
    // The repository's name, description and sets, as its admin published them.
    shows(wd, "#repo-name", "Sunday group").await?;
    shows(wd, "#repo-description", "Mods for our Sunday operations").await?;
    let ops = "button.set[data-set='ops']";
    shows(wd, ops, "Sunday operations").await?;
    shows(wd, ops, "127.0.0.1:2302").await?;
    shows(wd, "button.set[data-set='training']", "@cba").await?;

    // The folder, then the set: it ticks two of the three mods and takes its server.
    type_into(wd, "#folder-input", &folder.display().to_string()).await?;
    click(wd, "#save-settings").await?;
    shows(wd, "tr[data-mod='@ace'] .status", "Not installed").await?;
    shows(wd, &format!("{ops} .status"), "Not installed").await?;
    click(wd, ops).await?;
    shows(wd, "#sync-summary", "2 mods of 2 to sync").await?;
    until("the set's mods ticked", || async {
        let ace = wd
            .find(By::Css("tr[data-mod='@ace'] input[type=checkbox]"))
            .await
            .ok()?;
        let cba = wd
            .find(By::Css("tr[data-mod='@cba'] input[type=checkbox]"))
            .await
            .ok()?;
        (ace.is_selected().await.ok()? && !cba.is_selected().await.ok()?).then_some(())
    })
    .await?;
    shows(wd, "#changes-title", "What a sync brings").await?;
    shows(wd, "#changes", "ace_main.pbo").await?;

    // Sync: the progress bar reaches 100 % and the files are there.
    click(wd, "#sync-button").await?;
    shows(wd, "#progress-percent", "100 %").await?;
    shows(wd, "#progress-mod", "Done").await?;
    shows(wd, "tr[data-mod='@ace'] .status", "Up to date").await?;
    shows(wd, "tr[data-mod='@rhs'] .status", "Up to date").await?;
    shows(wd, &format!("{ops} .status"), "Up to date").await?;
    shows(wd, "#repo-state", "Up to date").await?;
    for f in [
        "@ace/addons/ace_main.pbo",
        "@ace/mod.cpp",
        "@rhs/addons/rhs.pbo",
    ] {
        let (a, b) = (fs::read(c.repo.join(f)), fs::read(folder.join(f)));
        if a.ok() != b.ok() {
            return Err(format!("{f} is not the repository's after the sync"));
        }
    }
    if folder.join("@cba").exists() {
        return Err("@cba was synced although not ticked".into());
    }
    if fs::read(folder.join("@own/addons/own.pbo")).ok().as_deref()
        != Some(&b"the player's own mod"[..])
    {
        return Err("the player's own mod was touched".into());
    }

    // A new build changes a file: the page says what changed, and the sync brings it.
    write(&c.repo, "@ace/addons/ace_main.pbo", &data(310 << 10, 7));
    c.build();
    click(wd, "#refresh-button").await?;
    shows(wd, "tr[data-mod='@ace'] .status", "Update available").await?;
    shows(wd, "#changes-title", "Changes since your revision").await?;
    let changed = "li.change-file[data-path='@ace/addons/ace_main.pbo'][data-change='updated']";
    until("the change listed", || async {
        shown(wd, changed).await.then_some(())
    })
    .await?;
    click(wd, "#sync-button").await?;
    shows(wd, "#changes-title", "What the last sync changed").await?;
    until("the synced change listed", || async {
        shown(wd, changed).await.then_some(())
    })
    .await?;
    shows(wd, "tr[data-mod='@ace'] .status", "Up to date").await?;
    shows(wd, "#progress-percent", "100 %").await?;
    if fs::read(folder.join("@ace/addons/ace_main.pbo")).ok() != Some(data(310 << 10, 7)) {
        return Err("the changed file did not arrive".into());
    }

    // Launch through Steam, joining the set's server (saved with the settings), whose
    // password the page asks for: the recorded command line.
    let server = wd
        .find(By::Css("#server-input"))
        .await
        .map_err(|e| e.to_string())?
        .value()
        .await
        .map_err(|e| e.to_string())?;
    if server.as_deref() != Some("127.0.0.1:2302") {
        return Err(format!("the set's server is not in the form: {server:?}"));
    }
    click(wd, "#save-settings").await?;
    until("the settings saved", || async {
        shown(wd, "#settings-saved").await.then_some(())
    })
    .await?;
    click(wd, "#launch-button").await?;
    until("the password question", || async {
        wd.get_alert_text().await.ok()
    })
    .await?;
    wd.send_alert_text("s3cret")
        .await
        .map_err(|e| e.to_string())?;
    wd.accept_alert().await.map_err(|e| e.to_string())?;
    shows(wd, "#launch-result", "steam://run/107410//").await?;
    let d = folder.display();
    let want = format!("\"-mod={d}/@ace;{d}/@rhs\" -connect=127.0.0.1 -port=2302 -password=s3cret");
    let want = format!("steam://run/107410//{want}/\n");
    let recorded = until("the launcher's command line", || async {
        fs::read_to_string(&ui.recorded).ok()
    })
    .await?;
    if recorded != want {
        return Err(format!("launched {recorded:?}, expected {want:?}"));
    }
    // A narrow window still shows every part (one column).
    wd.set_window_rect(0, 0, 700, 900)
        .await
        .map_err(|e| e.to_string())?;
    for part in [
        "#sync-button",
        "#launch-button",
        "tr[data-mod='@ace']",
        "#changes",
    ] {
        if !shown(wd, part).await {
            return Err(format!("{part} is not shown in a narrow window"));
        }
    }
    eprintln!(
        "browser steps took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
