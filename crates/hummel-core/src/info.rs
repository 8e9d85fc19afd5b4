//! [`RepoInfo`]: the repository's name, description and named sets of top-level folders
//! (Arma3Sync's "events"), the index section that index format 2 adds. It is part of the
//! published revision: the tree digest (tree format 2) covers its digest, so it is signed with
//! the revision and travels with every subtree index (it is small: see the bounds below).
//!
//! # Info digest (info format 1)
//!
//! `H("hummel info v1\0" | postcard(RepoInfo))`, `H` BLAKE3. postcard writes every field in
//! declaration order with fixed rules (varint lengths and integers), so the bytes hashed are
//! those of the index body's section itself.

use serde::{Deserialize, Serialize};

use crate::{Hash, RelPath};

/// Most sets a repository defines.
pub const MAX_SETS: usize = 256;
/// Longest repository or set name, in bytes.
pub const MAX_NAME: usize = 128;
/// Longest description, in bytes.
pub const MAX_DESCRIPTION: usize = 4096;
/// Most folders one set names.
pub const MAX_SET_MODS: usize = 1024;
/// Longest server address, in bytes (a DNS name is at most 253).
pub const MAX_ADDRESS: usize = 253;

const INFO_TAG: &[u8] = b"hummel info v1\0";

/// What the admin says about the repository (all empty: nothing said).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoInfo {
    /// The repository's name, shown to players.
    pub name: String,
    /// What it is, shown to players.
    pub description: String,
    /// Named sets of top-level folders, unique by name, in the admin's order.
    pub sets: Vec<SetInfo>,
}

/// A named set of top-level folders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetInfo {
    /// Unique among the repository's sets; not empty.
    pub name: String,
    /// Shown to players.
    pub description: String,
    /// Top-level folders of the repository (one path component each), unique, not empty.
    pub mods: Vec<RelPath>,
    /// The game server the set is played on, for the launch command line.
    pub server: Option<ServerInfo>,
}

/// Launch parameters of a set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Host name or IP address.
    pub address: String,
    /// Game port (0: the game's default).
    pub port: u16,
    /// The player is asked for a password at launch.
    pub password: bool,
}

/// A rule the info section breaks.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InfoError(pub String);

fn text_ok(s: &str, max: usize, what: &str, multiline: bool) -> Result<(), InfoError> {
    if s.len() > max {
        return Err(InfoError(format!(
            "{what} is {} bytes long (at most {max})",
            s.len()
        )));
    }
    if s.chars()
        .any(|c| c.is_control() && !(multiline && (c == '\n' || c == '\t')))
    {
        return Err(InfoError(format!("{what} holds a control character")));
    }
    Ok(())
}

impl RepoInfo {
    /// True when nothing is said (what a format-1 index holds).
    pub fn is_empty(&self) -> bool {
        self.name.is_empty() && self.description.is_empty() && self.sets.is_empty()
    }

    /// The set named `name`.
    pub fn set(&self, name: &str) -> Option<&SetInfo> {
        self.sets.iter().find(|s| s.name == name)
    }

    /// Checks every bound and rule: lengths, no control characters (descriptions may hold
    /// line breaks and tabs), set names unique and not empty, each set naming 1 to
    /// [`MAX_SET_MODS`] distinct top-level folders. Whether those folders exist is the
    /// builder's check (a subtree index does not hold them).
    pub fn validate(&self) -> Result<(), InfoError> {
        text_ok(&self.name, MAX_NAME, "the repository name", false)?;
        text_ok(
            &self.description,
            MAX_DESCRIPTION,
            "the repository description",
            true,
        )?;
        if self.sets.len() > MAX_SETS {
            return Err(InfoError(format!(
                "{} sets (at most {MAX_SETS})",
                self.sets.len()
            )));
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.sets {
            if s.name.trim().is_empty() {
                return Err(InfoError("a set has an empty name".into()));
            }
            text_ok(&s.name, MAX_NAME, "a set name", false)?;
            if !names.insert(s.name.as_str()) {
                return Err(InfoError(format!(
                    "the set name {:?} is used twice",
                    s.name
                )));
            }
            let what = format!("set {:?}", s.name);
            text_ok(
                &s.description,
                MAX_DESCRIPTION,
                &format!("the description of {what}"),
                true,
            )?;
            if s.mods.is_empty() || s.mods.len() > MAX_SET_MODS {
                return Err(InfoError(format!(
                    "{what} names {} folders (1 to {MAX_SET_MODS})",
                    s.mods.len()
                )));
            }
            let mut mods = std::collections::HashSet::new();
            for m in &s.mods {
                if m.as_str().contains('/') {
                    return Err(InfoError(format!(
                        "{what} names {m}, which is not a top-level folder"
                    )));
                }
                if !mods.insert(m.as_str()) {
                    return Err(InfoError(format!("{what} names {m} twice")));
                }
            }
            if let Some(server) = &s.server {
                if server.address.is_empty() {
                    return Err(InfoError(format!("{what} has an empty server address")));
                }
                text_ok(
                    &server.address,
                    MAX_ADDRESS,
                    &format!("the server address of {what}"),
                    false,
                )?;
                if server.address.contains(char::is_whitespace) {
                    return Err(InfoError(format!(
                        "the server address of {what} holds a space"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The info digest (info format 1) that tree format 2 covers.
    pub fn digest(&self) -> Hash {
        let mut h = blake3::Hasher::new();
        h.update(INFO_TAG);
        h.update(&postcard::to_stdvec(self).expect("info serialises"));
        h.finalize().into()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_info() -> RepoInfo {
        RepoInfo {
            name: "Sunday group".into(),
            description: "Mods for our operations.\nJoin us!".into(),
            sets: vec![SetInfo {
                name: "ops".into(),
                description: "Sunday operations".into(),
                mods: vec![RelPath::new("a").unwrap()],
                server: Some(ServerInfo {
                    address: "play.example.org".into(),
                    port: 2302,
                    password: true,
                }),
            }],
        }
    }

    #[test]
    fn validation_bounds_and_rules() {
        let ok = sample_info();
        ok.validate().unwrap();
        assert!(RepoInfo::default().is_empty());
        let mut bad = ok.clone();
        bad.sets.push(bad.sets[0].clone());
        assert!(bad.validate().unwrap_err().0.contains("twice"));
        let mut bad = ok.clone();
        bad.sets[0].mods = vec![RelPath::new("a/b").unwrap()];
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.sets[0].mods.clear();
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.name = "x".repeat(MAX_NAME + 1);
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.name = "a\nb".into();
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.sets[0].server.as_mut().unwrap().address = "a b".into();
        assert!(bad.validate().is_err());
        assert_ne!(ok.digest(), RepoInfo::default().digest());
    }
}
