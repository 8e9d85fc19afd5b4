//! `hummel ui`: the player page on 127.0.0.1 (`hummel-player`), and `hummel sync --profile`.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use hummel_player::library::{self, RunState};
use hummel_player::{Player, PlayerOptions, Profiles, profile};

use crate::cli::UiArgs;
use crate::util::{self, client_tls, human_bytes, shutdown_signal};

/// `hummel ui`: serves the page until Ctrl-C (or the console window closes).
pub async fn ui(args: UiArgs) -> Result<ExitCode> {
    let addr = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    if !addr.ip().is_loopback() {
        bail!("--listen {addr}: the player page listens on a loopback address only (127.0.0.1)");
    }
    let config_dir = profile::config_dir()?;
    let opts = PlayerOptions {
        config_dir: config_dir.clone(),
        tls: client_tls(&args.trust)?,
    };
    let (listener, url) = util::listen(addr, "ui", None).await?;
    let bound: SocketAddr = url
        .trim_start_matches("http://")
        .parse()
        .context("the bound address")?;
    let player = Player::new(opts, bound)?;
    let page = player.page_url();
    eprintln!("Hummel's player page: {page}");
    eprintln!("(keep this window open while you use it; Ctrl-C stops it)");
    if !args.no_browser
        && let Err(e) = open_page(&page, &config_dir)
    {
        eprintln!("could not open the browser ({e}); open the address above yourself");
    }
    // The page's server is on 127.0.0.1 for one player: a few connections, the usual timeouts.
    let limits = crate::cli::EdgeLimits::defaults_with(64);
    let (server, _open) = util::serve(listener, limits, player.router(), shutdown_signal());
    server.await.context("the page's server failed")??;
    Ok(ExitCode::SUCCESS)
}

/// Opens the page in the browser. On Unix through a file only this user can read, which sends
/// the browser on to the page: the secret then never stands on a command line that other users
/// of the machine can list.
fn open_page(page: &str, config_dir: &std::path::Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(config_dir)?;
        let file = config_dir.join("open.html");
        let _ = std::fs::remove_file(&file);
        let mut f = std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)?;
        writeln!(
            f,
            "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=\"0;url={page}\">\
             <title>Hummel</title><a href=\"{page}\">Open Hummel's player page</a>"
        )?;
        hummel_player::launch::open_url(&format!("file://{}", file.display()))?;
    }
    #[cfg(not(unix))]
    {
        let _ = config_dir;
        hummel_player::launch::open_url(page)?;
    }
    Ok(())
}

/// `hummel sync --profile NAME`: each ticked mod into its folder, as the page does.
pub async fn sync_profile(name: &str, args: &crate::cli::SyncArgs) -> Result<ExitCode> {
    let dir = profile::config_dir()?;
    let profiles = {
        let d = dir.clone();
        tokio::task::spawn_blocking(move || Profiles::load(&d)).await??
    };
    let mut p = profiles
        .get(name)
        .with_context(|| format!("profiles in {}", dir.display()))?
        .clone();
    if let Some(t) = &args.read_token {
        p.read_token = Some(t.clone());
    }
    let tls = client_tls(&args.trust)?;
    let current =
        hummel_client::changes::current(&p.repository, p.read_token.as_deref(), &tls, None).await?;
    let mut last_mod = None;
    let json = args.json;
    let run = library::sync_profile(&p, &tls, &current, |s| {
        if !json && s.current_mod.is_some() && s.current_mod != last_mod {
            eprintln!(
                "{} ({} of {})",
                s.current_mod.as_deref().unwrap_or_default(),
                s.mod_number,
                s.mods
            );
            last_mod = s.current_mod.clone();
        }
    });
    let status = tokio::select! {
        s = run => s,
        () = shutdown_signal() => bail!("interrupted; run the same sync again to resume"),
    };
    if status.state != RunState::Done {
        bail!(
            "profile {name}: {}",
            status.error.as_deref().unwrap_or("the sync failed")
        );
    }
    if json {
        println!("{}", serde_json::to_string(&status)?);
    } else {
        println!(
            "profile {name}: revision {}, {} mods in {}: {} written, {} deleted; {} downloaded",
            status.revision,
            status.mods,
            p.folder.display(),
            status.files_written,
            status.files_deleted,
            human_bytes(status.bytes_downloaded)
        );
        if let Some(log) = &status.changes {
            for f in log.files.iter().take(20) {
                println!("  {:?} {}", f.change, f.path);
            }
            if log.files.len() > 20 {
                println!("  ... and {} more", log.files.len() - 20);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
