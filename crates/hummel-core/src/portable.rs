//! Names that not every file system can hold.
//!
//! Every [`RelPath`] is valid on Unix, but Windows refuses some of them, and a case-insensitive
//! file system (Windows, macOS, a FAT stick) cannot hold two names that differ only in case.
//! The master warns about such names at build time; a client on a file system that cannot hold
//! one refuses the sync before writing anything (so nothing lands under another name: Windows
//! silently drops a trailing dot, for one). The rules, as Windows applies them to a path
//! component:
//!
//! - a reserved device name, with or without an extension: `CON`, `PRN`, `AUX`, `NUL`,
//!   `COM1`–`COM9`, `LPT1`–`LPT9` (also with superscript digits `¹²³`), case-insensitively,
//!   the stem before the first dot with trailing spaces ignored (`nul .txt` is `NUL`);
//! - a trailing dot or space;
//! - one of `<>:"|?*` (control characters and `\` are refused by [`RelPath`] everywhere).
//!
//! Paths longer than [`WINDOWS_MAX_PATH`] UTF-16 units are only a warning: the client writes
//! them through `\\?\` paths, but Explorer and many games cannot open them.

use std::collections::HashMap;
use std::fmt;

use crate::RelPath;

/// Longest path classic Windows programs open (`MAX_PATH`), in UTF-16 units. A repository path
/// above it is certainly beyond it once placed below a player's folder.
pub const WINDOWS_MAX_PATH: usize = 260;

/// Why Windows cannot hold a path component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowsProblem {
    /// A reserved device name (`CON`, `aux.txt` ...); the name is the device's.
    Reserved(String),
    /// Ends with a dot (Windows drops it: the file would land under another name).
    TrailingDot,
    /// Ends with a space (Windows drops it).
    TrailingSpace,
    /// Holds a character Windows forbids in names.
    Forbidden(char),
}

impl fmt::Display for WindowsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowsProblem::Reserved(device) => {
                write!(f, "{device} is a reserved device name on Windows")
            }
            WindowsProblem::TrailingDot => f.write_str("Windows drops a name's trailing dot"),
            WindowsProblem::TrailingSpace => f.write_str("Windows drops a name's trailing space"),
            WindowsProblem::Forbidden(c) => write!(f, "Windows forbids {c:?} in names"),
        }
    }
}

const DEVICES: [&str; 4] = ["CON", "PRN", "AUX", "NUL"];

/// Why Windows cannot hold the name `component`, if it cannot.
pub fn windows_component_problem(component: &str) -> Option<WindowsProblem> {
    if let Some(c) = component
        .chars()
        .find(|c| matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*'))
    {
        return Some(WindowsProblem::Forbidden(c));
    }
    if component.ends_with('.') {
        return Some(WindowsProblem::TrailingDot);
    }
    if component.ends_with(' ') {
        return Some(WindowsProblem::TrailingSpace);
    }
    let stem = component.split('.').next().unwrap_or(component);
    let stem = stem.trim_end_matches(' ').to_ascii_uppercase();
    let device = DEVICES.contains(&stem.as_str())
        || ["COM", "LPT"].iter().any(|p| {
            stem.strip_prefix(p).is_some_and(|n| {
                let mut digits = n.chars();
                matches!(
                    (digits.next(), digits.next()),
                    (Some('1'..='9' | '¹' | '²' | '³'), None)
                )
            })
        });
    device.then_some(WindowsProblem::Reserved(stem))
}

/// The first component of `path` that Windows cannot hold, and why.
pub fn windows_path_problem(path: &RelPath) -> Option<(&str, WindowsProblem)> {
    path.components()
        .find_map(|c| windows_component_problem(c).map(|p| (c, p)))
}

/// Every name among `paths` that Windows cannot hold, with why: the path up to its first
/// offending component, once (entries below it are the same problem).
pub fn windows_problems<'a>(
    paths: impl IntoIterator<Item = &'a RelPath>,
) -> Vec<(String, WindowsProblem)> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for p in paths {
        let s = p.as_str();
        let mut end = 0;
        for c in p.components() {
            end += c.len();
            if let Some(why) = windows_component_problem(c) {
                if seen.insert(&s[..end]) {
                    out.push((s[..end].to_string(), why));
                }
                break;
            }
            end += 1;
        }
    }
    out
}

/// The paths among `paths` longer than [`WINDOWS_MAX_PATH`] whose parent is not (every parent
/// folder being listed too, that is the topmost of each long subtree).
pub fn long_for_windows<'a>(paths: impl IntoIterator<Item = &'a RelPath>) -> Vec<String> {
    paths
        .into_iter()
        .filter(|p| {
            longer_than_windows_max_path(p)
                && p.parent().is_none_or(|d| !longer_than_windows_max_path(&d))
        })
        .map(|p| p.to_string())
        .collect()
}

/// True when `path` is longer than [`WINDOWS_MAX_PATH`] UTF-16 units.
pub fn longer_than_windows_max_path(path: &RelPath) -> bool {
    path.as_str().encode_utf16().count() > WINDOWS_MAX_PATH
}

/// A name as a case-insensitive file system compares it: every character that has a single
/// uppercase form in that form (as NTFS's upcase table maps them).
pub fn case_fold(name: &str) -> String {
    name.chars()
        .map(|c| {
            let mut up = c.to_uppercase();
            match (up.next(), up.next()) {
                (Some(u), None) => u,
                _ => c,
            }
        })
        .collect()
}

/// Pairs of paths in one folder whose names differ only in case: a case-insensitive file
/// system holds only one of each pair. Only names with the same parent are compared (entries
/// below two such folders collide through the folders, which are reported). Each pair is
/// (first in `paths` order, the other).
pub fn case_collisions<'a>(paths: impl IntoIterator<Item = &'a RelPath>) -> Vec<(String, String)> {
    let mut seen: HashMap<(&'a str, String), &'a str> = HashMap::new();
    let mut out = Vec::new();
    for p in paths {
        let s = p.as_str();
        let (parent, name) = match s.rfind('/') {
            Some(i) => (&s[..i], &s[i + 1..]),
            None => ("", s),
        };
        let folded = case_fold(name);
        match seen.get(&(parent, folded.clone())) {
            Some(first) if *first != s => out.push(((*first).to_string(), s.to_string())),
            Some(_) => {}
            None => {
                seen.insert((parent, folded), s);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn reserved_names_with_any_extension_are_refused() {
        for bad in [
            "CON",
            "con",
            "Con.txt",
            "PRN",
            "AUX.tar.gz",
            "nul",
            "NUL .txt",
            "COM1",
            "com9.log",
            "LPT1",
            "lpt9.x",
            "COM¹",
            "LPT³.txt",
        ] {
            assert!(
                matches!(
                    windows_component_problem(bad),
                    Some(WindowsProblem::Reserved(_))
                ),
                "{bad}"
            );
        }
        for ok in [
            "CONSOLE",
            "console.txt",
            "COM",
            "COM0",
            "COM10",
            "LPT",
            "xCON",
            "AUXILIARY.cfg",
            "con_x",
            ".con",
            "@CON",
        ] {
            assert_eq!(windows_component_problem(ok), None, "{ok}");
        }
        assert_eq!(
            windows_component_problem("aux.cpp").unwrap().to_string(),
            "AUX is a reserved device name on Windows"
        );
    }

    #[test]
    fn trailing_dots_spaces_and_forbidden_characters_are_refused() {
        assert_eq!(
            windows_component_problem("readme."),
            Some(WindowsProblem::TrailingDot)
        );
        assert_eq!(
            windows_component_problem("..."),
            Some(WindowsProblem::TrailingDot)
        );
        assert_eq!(
            windows_component_problem("name "),
            Some(WindowsProblem::TrailingSpace)
        );
        for c in ['<', '>', ':', '"', '|', '?', '*'] {
            assert_eq!(
                windows_component_problem(&format!("a{c}b")),
                Some(WindowsProblem::Forbidden(c))
            );
        }
        for ok in ["a b.txt", ".hidden", "a..b", "ünï.cfg", "x y"] {
            assert_eq!(windows_component_problem(ok), None, "{ok}");
        }
        let p = rp("@mod/ok/bad./x");
        assert_eq!(
            windows_path_problem(&p),
            Some(("bad.", WindowsProblem::TrailingDot))
        );
        assert_eq!(windows_path_problem(&rp("@mod/fine/x.pbo")), None);
    }

    #[test]
    fn each_problem_is_named_once_at_its_topmost_path() {
        let paths: Vec<RelPath> = ["m", "m/bad.", "m/bad./x", "m/bad./y/CON", "m/ok", "AUX"]
            .into_iter()
            .map(rp)
            .collect();
        assert_eq!(
            windows_problems(&paths),
            [
                ("m/bad.".to_string(), WindowsProblem::TrailingDot),
                ("AUX".to_string(), WindowsProblem::Reserved("AUX".into())),
            ]
        );
        let deep = "d".repeat(200);
        let paths: Vec<RelPath> = [
            deep.clone(),
            format!("{deep}/{}", "e".repeat(70)),
            format!("{deep}/{}/f", "e".repeat(70)),
            format!("{deep}/short"),
        ]
        .iter()
        .map(|s| rp(s))
        .collect();
        assert_eq!(
            long_for_windows(&paths),
            [format!("{deep}/{}", "e".repeat(70))]
        );
    }

    #[test]
    fn long_paths_count_utf16_units() {
        let exactly = format!("{}/{}", "a".repeat(200), "b".repeat(59));
        assert!(!longer_than_windows_max_path(&rp(&exactly)));
        let long = format!("{}/{}", "d".repeat(200), "f".repeat(61));
        assert!(longer_than_windows_max_path(&rp(&long)));
        // Two bytes of UTF-8 each, one UTF-16 unit: 200 characters are 400 bytes, yet short.
        let umlauts = format!("{}/{}", "ü".repeat(100), "ö".repeat(100));
        assert!(!longer_than_windows_max_path(&rp(&umlauts)));
    }

    #[test]
    fn names_differing_only_in_case_collide_within_a_folder() {
        let paths: Vec<RelPath> = ["A", "A/x", "a", "a/x", "b/Readme", "b/README", "c/Ü", "c/ü"]
            .into_iter()
            .map(rp)
            .collect();
        assert_eq!(
            case_collisions(&paths),
            [
                ("A".to_string(), "a".to_string()),
                ("b/Readme".into(), "b/README".into()),
                ("c/Ü".into(), "c/ü".into()),
            ]
        );
        let fine: Vec<RelPath> = ["a/x", "b/x", "a/X2"].into_iter().map(rp).collect();
        assert!(case_collisions(&fine).is_empty());
    }
}
