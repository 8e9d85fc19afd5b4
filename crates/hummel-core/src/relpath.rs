//! [`RelPath`]: a validated, normalised path inside a repository.
//!
//! Components are joined with `/`. A valid path is non-empty, relative, at most
//! [`MAX_PATH_LEN`] bytes, and none of its components is empty, `.`, `..`, longer than
//! [`MAX_COMPONENT_LEN`] bytes, or contains a backslash, NUL or another control character.
//! The master refuses such names on build and the client refuses them on sync, so a name from
//! an index can always be joined below a destination folder without escaping it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

/// Longest accepted path, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest accepted component, in bytes.
pub const MAX_COMPONENT_LEN: usize = 255;

/// Why a path was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("invalid path {path:?}: {reason}")]
pub struct InvalidPath {
    /// The offending path (lossy, truncated).
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A validated relative path, `/`-separated.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RelPath(String);

fn invalid(path: &str, reason: &'static str) -> InvalidPath {
    InvalidPath {
        path: path.chars().take(200).collect(),
        reason,
    }
}

/// Checks one path component.
pub fn validate_component(c: &str) -> Result<(), &'static str> {
    if c.is_empty() {
        return Err("empty component");
    }
    if c == "." || c == ".." {
        return Err("'.' or '..' component");
    }
    if c.len() > MAX_COMPONENT_LEN {
        return Err("component longer than 255 bytes");
    }
    for ch in c.chars() {
        if ch == '\\' {
            return Err("backslash");
        }
        if ch == '\0' {
            return Err("NUL byte");
        }
        if ch.is_control() {
            return Err("control character");
        }
    }
    Ok(())
}

impl RelPath {
    /// Validates `s`.
    pub fn new(s: &str) -> Result<RelPath, InvalidPath> {
        if s.is_empty() {
            return Err(invalid(s, "empty path"));
        }
        if s.len() > MAX_PATH_LEN {
            return Err(invalid(s, "longer than 4096 bytes"));
        }
        if s.starts_with('/') {
            return Err(invalid(s, "absolute path"));
        }
        for c in s.split('/') {
            validate_component(c).map_err(|r| invalid(s, r))?;
        }
        Ok(RelPath(s.to_string()))
    }

    /// Builds a path from the components of a relative filesystem path.
    pub fn from_path(p: &Path) -> Result<RelPath, InvalidPath> {
        let mut parts = Vec::new();
        for c in p.components() {
            match c {
                std::path::Component::Normal(os) => match os.to_str() {
                    Some(s) => parts.push(s),
                    None => return Err(invalid(&p.to_string_lossy(), "not valid UTF-8")),
                },
                _ => return Err(invalid(&p.to_string_lossy(), "not a plain relative path")),
            }
        }
        RelPath::new(&parts.join("/"))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The parent path, or `None` at the top.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rfind('/').map(|i| RelPath(self.0[..i].to_string()))
    }

    /// `self/child`.
    pub fn join(&self, child: &RelPath) -> RelPath {
        RelPath(format!("{}/{}", self.0, child.0))
    }

    /// True when `self` is `dir` or lies below it.
    pub fn is_within(&self, dir: &RelPath) -> bool {
        self.0 == dir.0
            || (self.0.starts_with(&dir.0) && self.0.as_bytes().get(dir.0.len()) == Some(&b'/'))
    }

    /// The rest of the path below `dir`, or `None` if it is not strictly below.
    pub fn strip_dir(&self, dir: &RelPath) -> Option<RelPath> {
        if self.0.len() > dir.0.len() && self.is_within(dir) {
            Some(RelPath(self.0[dir.0.len() + 1..].to_string()))
        } else {
            None
        }
    }

    /// `root` joined with every component. Safe by construction: no component can climb out.
    pub fn to_path(&self, root: &Path) -> PathBuf {
        let mut p = root.to_path_buf();
        for c in self.components() {
            p.push(c);
        }
        p
    }

    /// True for names Windows cannot create (`CON`, `aux.txt`, trailing dot or space, `:` ...).
    /// Hummel accepts them on Unix; the master warns, a Windows client refuses them
    /// ([`crate::portable`]).
    pub fn is_windows_hostile(&self) -> bool {
        crate::portable::windows_path_problem(self).is_some()
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RelPath::new(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in [
            "a",
            "a/b/c.pbo",
            "@mod_1/addons/x y.pbo",
            "ünïcødé/日本語.txt",
            ".hidden",
            "a..b",
            "...",
            "a/.b",
        ] {
            assert!(RelPath::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_escapes_and_garbage() {
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "a/../b",
            "a/./b",
            "./a",
            "a//b",
            "a/",
            "a\\b",
            "..\\x",
            "a\0b",
            "a\nb",
            "a\x1bb",
            "a\u{7f}",
        ] {
            assert!(RelPath::new(bad).is_err(), "{bad:?}");
        }
        assert!(RelPath::new(&"x".repeat(256)).is_err());
        assert!(RelPath::new(&"x/".repeat(2100)).is_err());
    }

    #[test]
    fn deserialising_validates() {
        assert!(serde_json::from_str::<RelPath>("\"../x\"").is_err());
        assert_eq!(
            serde_json::from_str::<RelPath>("\"a/b\"").unwrap().as_str(),
            "a/b"
        );
    }

    #[test]
    fn within_and_strip() {
        let d = RelPath::new("a/b").unwrap();
        assert!(RelPath::new("a/b").unwrap().is_within(&d));
        assert!(RelPath::new("a/b/c").unwrap().is_within(&d));
        assert!(!RelPath::new("a/bc").unwrap().is_within(&d));
        assert_eq!(
            RelPath::new("a/b/c/d")
                .unwrap()
                .strip_dir(&d)
                .unwrap()
                .as_str(),
            "c/d"
        );
        assert!(RelPath::new("a/b").unwrap().strip_dir(&d).is_none());
        assert_eq!(
            RelPath::new("a/b/c").unwrap().parent().unwrap().as_str(),
            "a/b"
        );
        assert!(RelPath::new("a").unwrap().parent().is_none());
    }

    #[test]
    fn windows_hostile_names_are_flagged() {
        assert!(RelPath::new("x/CON.txt").unwrap().is_windows_hostile());
        assert!(RelPath::new("x/a:b").unwrap().is_windows_hostile());
        assert!(!RelPath::new("x/console.txt").unwrap().is_windows_hostile());
    }

    proptest! {
        /// Whatever the input, an accepted path resolves below the root.
        #[test]
        fn accepted_paths_stay_below_root(s in "[a-z./\\\\\\x00\\n]{0,40}") {
            if let Ok(p) = RelPath::new(&s) {
                let root = Path::new("/root/dest");
                let full = p.to_path(root);
                prop_assert!(full.starts_with(root));
                prop_assert!(full.components().all(|c| !matches!(c, std::path::Component::ParentDir | std::path::Component::CurDir)));
                prop_assert!(full != root);
            }
        }
    }
}
