//! Saved profiles: a repository, the game's mod folder, the mods ticked and how to launch the
//! game, by name. The page saves them; `hummel sync --profile NAME` uses them too.
//!
//! # The file (format 1)
//!
//! `profiles.json` in the per-user config dir ([`config_dir`]): `%APPDATA%\Hummel` on Windows,
//! `$XDG_CONFIG_HOME/hummel` or `~/.config/hummel` elsewhere, `HUMMEL_CONFIG_DIR` when set.
//!
//! ```json
//! {
//!   "format": 1,
//!   "profiles": [
//!     {
//!       "name": "Operations",
//!       "repository": "http://mods.example:7070",
//!       "folder": "C:\\Games\\Arma 3 Mods",
//!       "mods": ["@ace", "@cba_a3"],
//!       "server": "203.0.113.5:2302",
//!       "launch": { "with": "steam" },
//!       "parameters": ["-noSplash"]
//!     }
//!   ]
//! }
//! ```
//!
//! `folder` may be empty (not chosen yet); `server`, `parameters`, `read_token` and `launch`
//! may be left out (`launch` then means Steam). `launch` is `{"with": "steam"}` or
//! `{"with": "executable", "path": "..."}`. A file of a newer format is refused, never
//! overwritten; unknown fields are ignored. Written atomically (temp file, flush, rename), and
//! readable by its owner only on Unix: it may hold a read token.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::PlayerError;

/// The format this code reads and writes.
pub const PROFILES_FORMAT: u32 = 1;
/// The file's name in the config dir.
pub const PROFILES_FILE: &str = "profiles.json";
/// Largest profiles file read (a file is a few hundred bytes a profile).
const MAX_PROFILES_FILE: u64 = 4 << 20;
/// Longest profile name.
const MAX_NAME: usize = 100;

/// How the game is started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "with", rename_all = "snake_case")]
pub enum Launcher {
    /// Through Steam: `steam://run/107410//ARGS/`, opened with the system's URL handler.
    #[default]
    Steam,
    /// The game's executable, run with the arguments.
    Executable {
        /// e.g. `C:\Program Files (x86)\Steam\steamapps\common\Arma 3\arma3_x64.exe`.
        path: PathBuf,
    },
}

/// One saved profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Its name, unique in the file.
    pub name: String,
    /// The master's URL.
    pub repository: String,
    /// The game's mod folder; the mods are synced into it together, each at `FOLDER/MOD`.
    /// Empty: not chosen yet.
    #[serde(default)]
    pub folder: PathBuf,
    /// The mods (top-level folders of the repository) ticked.
    #[serde(default)]
    pub mods: Vec<String>,
    /// A game server to join on launch, `HOST:PORT` (or `HOST`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The admin's set picked last (its mods ticked, its server taken); the page asks for the
    /// server's password at launch when the set says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// How the game is started.
    #[serde(default)]
    pub launch: Launcher,
    /// More game parameters, each one argument.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<String>,
    /// The repository's read token, if it is private.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_token: Option<String>,
}

impl Profile {
    /// A new profile for `repository`, nothing chosen yet.
    pub fn new(name: impl Into<String>, repository: impl Into<String>) -> Profile {
        Profile {
            name: name.into(),
            repository: repository.into(),
            folder: PathBuf::new(),
            mods: Vec::new(),
            server: None,
            set: None,
            launch: Launcher::Steam,
            parameters: Vec::new(),
            read_token: None,
        }
    }

    /// Checks what a saved profile must hold: a name, mod names that are single folder names.
    pub fn validate(&self) -> Result<(), PlayerError> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
            return Err(PlayerError::Invalid(format!(
                "a profile name is 1 to {MAX_NAME} printable characters, not {:?}",
                self.name
            )));
        }
        for m in &self.mods {
            if hummel_core::relpath::validate_component(m).is_err()
                || m.contains('/')
                || m == hummel_core::index::RESERVED_TOP_NAME
            {
                return Err(PlayerError::Invalid(format!(
                    "{m:?} is not a mod folder name"
                )));
            }
        }
        if self.folder.as_os_str().is_empty() {
            return Ok(());
        }
        if !self.folder.is_absolute() {
            return Err(PlayerError::Invalid(format!(
                "the mod folder must be a full path, not {:?}",
                self.folder.display().to_string()
            )));
        }
        Ok(())
    }
}

/// All saved profiles, as in the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profiles {
    /// [`PROFILES_FORMAT`].
    pub format: u32,
    /// By name, in the order they were made.
    pub profiles: Vec<Profile>,
}

impl Default for Profiles {
    fn default() -> Profiles {
        Profiles {
            format: PROFILES_FORMAT,
            profiles: Vec::new(),
        }
    }
}

impl Profiles {
    /// Decodes a profiles file; refuses another format and invalid profiles. Pure.
    pub fn decode(bytes: &[u8]) -> Result<Profiles, String> {
        #[derive(Deserialize)]
        struct Format {
            format: u32,
        }
        let f: Format = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        if f.format != PROFILES_FORMAT {
            return Err(format!(
                "format {} (this Hummel reads format {PROFILES_FORMAT}; a newer Hummel wrote it)",
                f.format
            ));
        }
        let p: Profiles = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        for profile in &p.profiles {
            profile.validate().map_err(|e| e.to_string())?;
        }
        for (i, a) in p.profiles.iter().enumerate() {
            if p.profiles[..i].iter().any(|b| b.name == a.name) {
                return Err(format!("two profiles are named {:?}", a.name));
            }
        }
        Ok(p)
    }

    /// The file's bytes: pretty JSON and a final newline.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("profiles serialize");
        out.push(b'\n');
        out
    }

    /// Reads `DIR/profiles.json`; a missing file is no profiles. Blocking.
    pub fn load(dir: &Path) -> Result<Profiles, PlayerError> {
        let path = dir.join(PROFILES_FILE);
        let err = |reason: String| PlayerError::Profiles {
            path: path.clone(),
            reason,
        };
        match fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Profiles::default()),
            Err(e) => return Err(err(e.to_string())),
            Ok(m) if m.len() > MAX_PROFILES_FILE => {
                return Err(err(format!("larger than {MAX_PROFILES_FILE} bytes")));
            }
            Ok(_) => {}
        }
        let bytes = fs::read(&path).map_err(|e| err(e.to_string()))?;
        Profiles::decode(&bytes).map_err(err)
    }

    /// Writes `DIR/profiles.json` atomically (creating DIR). Blocking.
    pub fn save(&self, dir: &Path) -> Result<(), PlayerError> {
        let path = dir.join(PROFILES_FILE);
        let err = |e: std::io::Error| PlayerError::Profiles {
            path: path.clone(),
            reason: e.to_string(),
        };
        fs::create_dir_all(dir).map_err(err)?;
        let tmp = dir.join(format!("{PROFILES_FILE}.tmp"));
        let mut options = fs::File::options();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp).map_err(err)?;
        f.write_all(&self.encode()).map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        fs::rename(&tmp, &path).map_err(err)?;
        Ok(())
    }

    /// The profile named `name`.
    pub fn get(&self, name: &str) -> Result<&Profile, PlayerError> {
        self.profiles
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| PlayerError::NoProfile(name.to_string()))
    }

    /// Adds `profile`, or replaces the one of the same name.
    pub fn put(&mut self, profile: Profile) -> Result<(), PlayerError> {
        profile.validate()?;
        match self.profiles.iter_mut().find(|p| p.name == profile.name) {
            Some(p) => *p = profile,
            None => self.profiles.push(profile),
        }
        Ok(())
    }

    /// A name not taken yet: `base`, else `base (2)`, `base (3)` ...
    pub fn free_name(&self, base: &str) -> String {
        let base: String = base.chars().take(MAX_NAME - 8).collect();
        let base = if base.trim().is_empty() {
            "Repository".to_string()
        } else {
            base
        };
        let taken = |n: &str| self.profiles.iter().any(|p| p.name == n);
        if !taken(&base) {
            return base;
        }
        (2..)
            .map(|i| format!("{base} ({i})"))
            .find(|n| !taken(n))
            .expect("a free name")
    }
}

/// The per-user config dir: `HUMMEL_CONFIG_DIR` when set; else `%APPDATA%\Hummel` on Windows,
/// `$XDG_CONFIG_HOME/hummel` or `$HOME/.config/hummel` elsewhere.
pub fn config_dir() -> Result<PathBuf, PlayerError> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("HUMMEL_CONFIG_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if cfg!(windows) {
        return var("APPDATA")
            .map(|d| PathBuf::from(d).join("Hummel"))
            .ok_or(PlayerError::NoConfigDir("APPDATA"));
    }
    if let Some(xdg) = var("XDG_CONFIG_HOME").map(PathBuf::from)
        && xdg.is_absolute()
    {
        return Ok(xdg.join("hummel"));
    }
    var("HOME")
        .map(|h| PathBuf::from(h).join(".config").join("hummel"))
        .ok_or(PlayerError::NoConfigDir("HOME"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Profiles {
        Profiles {
            format: PROFILES_FORMAT,
            profiles: vec![
                Profile {
                    name: "Operations".into(),
                    repository: "http://mods.example:7070".into(),
                    folder: PathBuf::from("/games/arma3/mods"),
                    mods: vec!["@ace".into(), "@cba_a3".into()],
                    server: Some("203.0.113.5:2302".into()),
                    set: None,
                    launch: Launcher::Steam,
                    parameters: vec!["-noSplash".into()],
                    read_token: None,
                },
                Profile {
                    name: "Training".into(),
                    repository: "https://mods.example".into(),
                    folder: PathBuf::from("/games/arma3/training"),
                    mods: vec!["@rhs".into()],
                    server: None,
                    set: None,
                    launch: Launcher::Executable {
                        path: PathBuf::from("/games/arma3/arma3_x64.exe"),
                    },
                    parameters: Vec::new(),
                    read_token: Some("a-read-token".into()),
                },
                Profile::new("New", "http://127.0.0.1:7070"),
            ],
        }
    }

    /// The exact bytes of format 1 (`HUMMEL_BLESS=1` rewrites the fixture on purpose).
    #[test]
    fn the_format_matches_its_golden_fixture() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/profiles-v1.json");
        let bytes = sample().encode();
        if std::env::var_os("HUMMEL_BLESS").is_some() {
            fs::write(&fixture, &bytes).unwrap();
        }
        let golden = fs::read(&fixture).expect("fixture (HUMMEL_BLESS=1 makes it)");
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            String::from_utf8_lossy(&golden),
            "the profiles format changed: bump PROFILES_FORMAT and keep reading format 1"
        );
        assert_eq!(Profiles::decode(&golden).unwrap(), sample());
    }

    #[test]
    fn other_formats_and_bad_profiles_are_refused() {
        let newer = br#"{"format": 2, "profiles": []}"#;
        assert!(
            Profiles::decode(newer)
                .unwrap_err()
                .contains("newer Hummel")
        );
        assert!(Profiles::decode(b"[]").is_err());
        let bad_mod =
            br#"{"format":1,"profiles":[{"name":"a","repository":"http://x","mods":["../up"]}]}"#;
        assert!(
            Profiles::decode(bad_mod)
                .unwrap_err()
                .contains("not a mod folder")
        );
        let twice = br#"{"format":1,"profiles":[{"name":"a","repository":"http://x"},{"name":"a","repository":"http://y"}]}"#;
        assert!(
            Profiles::decode(twice)
                .unwrap_err()
                .contains("two profiles")
        );
        // Fields of a later minor addition are ignored; missing optional ones default.
        let minimal =
            br#"{"format":1,"profiles":[{"name":"a","repository":"http://x","later":1}]}"#;
        let p = Profiles::decode(minimal).unwrap();
        assert_eq!(p.profiles[0], Profile::new("a", "http://x"));
    }

    #[test]
    fn save_then_load_round_trips_and_names_stay_unique() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("cfg");
        assert_eq!(Profiles::load(&cfg).unwrap(), Profiles::default());
        let mut p = sample();
        p.save(&cfg).unwrap();
        assert_eq!(Profiles::load(&cfg).unwrap(), p);
        assert_eq!(p.free_name("Operations"), "Operations (2)");
        assert_eq!(p.free_name("Other"), "Other");
        let mut changed = p.get("New").unwrap().clone();
        changed.mods = vec!["@x".into()];
        p.put(changed).unwrap();
        assert_eq!(p.profiles.len(), 3);
        assert_eq!(p.get("New").unwrap().mods, ["@x"]);
        let mut relative = Profile::new("r", "http://x");
        relative.folder = PathBuf::from("mods");
        assert!(p.put(relative).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(cfg.join(PROFILES_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
