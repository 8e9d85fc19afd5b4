//! Starting the game with the profile's mods, and opening URLs with the system's handler.
//!
//! Arma 3 takes its mods as one argument, `-mod=A;B;C` (full paths: the mod folder need not be
//! the game's), and a server to join as `-connect=HOST -port=PORT` (`-password=` when the
//! page asked the player for one: a set's server may want it; it is never saved). Through Steam that is the
//! URL `steam://run/107410//ARGS/` (arguments separated by spaces; one holding a space is put
//! in double quotes); with the game's executable, the same arguments on its command line.
//!
//! URLs open with `HUMMEL_OPEN_WITH` when set (a program run with the URL as its one argument:
//! tests record the command line that way), else the system's handler: `explorer` on Windows,
//! `open` on macOS, `xdg-open` elsewhere. (`cmd /c start` is not used: `cmd` splits the URL at
//! the `;` between mods.)

use std::path::Path;
use std::process::{Command, Stdio};

use serde::Serialize;

use crate::PlayerError;
use crate::profile::{Launcher, Profile};

/// Arma 3's Steam app id.
pub const ARMA3_APP_ID: u32 = 107410;

/// The environment variable naming a program to open URLs with instead of the system's.
pub const OPEN_WITH_ENV: &str = "HUMMEL_OPEN_WITH";

/// What was started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Launched {
    /// The program run.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
}

/// Longest server password passed on.
pub const MAX_PASSWORD: usize = 256;

/// The game's arguments for `profile`: `-mod=` with the full path of each ticked mod (each must
/// be in the folder: synced first), `-connect=`/`-port=` for its server (and `-password=`
/// when given), then its parameters.
pub fn game_args(profile: &Profile, password: Option<&str>) -> Result<Vec<String>, PlayerError> {
    if profile.folder.as_os_str().is_empty() {
        return Err(PlayerError::Invalid(
            "choose the game's mod folder first".into(),
        ));
    }
    if profile.mods.is_empty() {
        return Err(PlayerError::Invalid("tick at least one mod first".into()));
    }
    let mut mods = Vec::new();
    for m in &profile.mods {
        let dir = profile.folder.join(m);
        if !dir.is_dir() {
            return Err(PlayerError::Invalid(format!(
                "{m} is not in {} yet: sync first",
                profile.folder.display()
            )));
        }
        mods.push(dir.display().to_string());
    }
    let mut args = vec![format!("-mod={}", mods.join(";"))];
    if let Some(server) = profile
        .server
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (host, port) = match server.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => {
                let port: u16 = p.parse().map_err(|_| {
                    PlayerError::Invalid(format!("{server:?}: the server's port is not a number"))
                })?;
                (h, Some(port))
            }
            _ => (server, None),
        };
        if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(PlayerError::Invalid(format!(
                "{server:?} is not a server address"
            )));
        }
        args.push(format!("-connect={host}"));
        if let Some(p) = port {
            args.push(format!("-port={p}"));
        }
        if let Some(pw) = password.filter(|p| !p.is_empty()) {
            if pw.len() > MAX_PASSWORD || pw.chars().any(char::is_control) {
                return Err(PlayerError::Invalid(
                    "the server password holds a control character or is too long".into(),
                ));
            }
            args.push(format!("-password={pw}"));
        }
    }
    args.extend(profile.parameters.iter().cloned());
    Ok(args)
}

/// `steam://run/107410//ARGS/`.
pub fn steam_url(args: &[String]) -> String {
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            if a.contains(' ') {
                format!("\"{a}\"")
            } else {
                a.clone()
            }
        })
        .collect();
    format!("steam://run/{ARMA3_APP_ID}//{}/", args.join(" "))
}

/// What launching `profile` runs: the URL handler with the Steam URL, or the game's executable.
pub fn command(profile: &Profile, password: Option<&str>) -> Result<Launched, PlayerError> {
    let args = game_args(profile, password)?;
    Ok(match &profile.launch {
        Launcher::Steam => {
            let (program, pre) = url_opener();
            let mut all = pre;
            all.push(steam_url(&args));
            Launched { program, args: all }
        }
        Launcher::Executable { path } => Launched {
            program: path.display().to_string(),
            args,
        },
    })
}

/// Starts the game for `profile` (not waiting for it), with the server `password` the player
/// typed, if any.
pub fn launch(profile: &Profile, password: Option<&str>) -> Result<Launched, PlayerError> {
    let launched = command(profile, password)?;
    let dir = match &profile.launch {
        Launcher::Executable { path } => path.parent().filter(|p| p.is_dir()),
        Launcher::Steam => None,
    };
    spawn(&launched, dir)?;
    Ok(launched)
}

/// Opens `url` with the system's handler (or `HUMMEL_OPEN_WITH`), not waiting for it.
pub fn open_url(url: &str) -> Result<Launched, PlayerError> {
    let (program, mut args) = url_opener();
    args.push(url.to_string());
    let launched = Launched { program, args };
    spawn(&launched, None)?;
    Ok(launched)
}

/// The program (and its first arguments) that opens a URL.
fn url_opener() -> (String, Vec<String>) {
    if let Some(p) = std::env::var_os(OPEN_WITH_ENV).filter(|v| !v.is_empty()) {
        return (p.to_string_lossy().into_owned(), Vec::new());
    }
    let program = if cfg!(windows) {
        "explorer"
    } else if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    (program.to_string(), Vec::new())
}

/// Starts `what` detached from our standard streams; a thread reaps it when it ends.
fn spawn(what: &Launched, dir: Option<&Path>) -> Result<(), PlayerError> {
    let mut cmd = Command::new(&what.program);
    cmd.args(&what.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let mut child = cmd.spawn().map_err(|e| PlayerError::Launch {
        program: what.program.clone(),
        reason: e.to_string(),
    })?;
    tracing::info!(program = %what.program, args = ?what.args, "started");
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn profile(folder: &Path) -> Profile {
        let mut p = Profile::new("p", "http://x");
        p.folder = folder.to_path_buf();
        p.mods = vec!["@cba".into(), "@ace".into()];
        p
    }

    #[test]
    fn arguments_name_each_mod_by_full_path_and_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = profile(dir.path());
        assert!(
            game_args(&p, None)
                .unwrap_err()
                .to_string()
                .contains("sync first")
        );
        std::fs::create_dir(dir.path().join("@cba")).unwrap();
        std::fs::create_dir(dir.path().join("@ace")).unwrap();
        let d = dir.path().display();
        assert_eq!(
            game_args(&p, None).unwrap(),
            [format!("-mod={d}/@cba;{d}/@ace")]
        );
        p.server = Some("203.0.113.5:2302".into());
        p.parameters = vec!["-noSplash".into()];
        assert_eq!(
            game_args(&p, None).unwrap(),
            [
                format!("-mod={d}/@cba;{d}/@ace"),
                "-connect=203.0.113.5".into(),
                "-port=2302".into(),
                "-noSplash".into()
            ]
        );
        let with = game_args(&p, Some("s3cret")).unwrap();
        assert_eq!(with[3], "-password=s3cret");
        assert!(game_args(&p, Some("a\nb")).is_err());
        p.server = Some("play.example".into());
        assert_eq!(game_args(&p, None).unwrap()[1], "-connect=play.example");
        p.server = Some("play.example:x".into());
        assert!(game_args(&p, None).is_err());
        p.launch = Launcher::Executable {
            path: PathBuf::from("/games/arma3_x64"),
        };
        p.server = None;
        let c = command(&p, None).unwrap();
        assert_eq!(c.program, "/games/arma3_x64");
        assert_eq!(c.args.len(), 2);
    }

    #[test]
    fn the_steam_url_quotes_arguments_with_spaces() {
        let args = vec!["-mod=/a/@x;/b c/@y".to_string(), "-connect=h".to_string()];
        assert_eq!(
            steam_url(&args),
            "steam://run/107410//\"-mod=/a/@x;/b c/@y\" -connect=h/"
        );
        assert_eq!(
            steam_url(&["-mod=@a;@b".to_string()]),
            "steam://run/107410//-mod=@a;@b/"
        );
    }
}
