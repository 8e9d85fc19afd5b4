//! Names DEST's file system cannot hold: checked once the index is known, before anything is
//! written, so that no entry ever lands under another name (Windows drops a trailing dot, and
//! a case-insensitive file system merges `Readme` and `README` into one file).
//!
//! - On Windows, Windows' rules ([`hummel_core::portable::windows_path_problem`]): reserved
//!   device names, trailing dots and spaces, `<>:"|?*`.
//! - Anywhere, names of one folder that differ only in case, when DEST's file system does not
//!   tell case apart: a probe file in `.hummel/` says (a dry run assumes the platform's usual
//!   file system, since it writes nothing). The answer also goes to `assemble::apply`, which
//!   on such a file system renames an entry whose name changed only in case instead of
//!   deleting it after placing the new one (the same file).
//!
//! The sync is refused as a whole with every such name, DEST untouched: the admin renames
//! them (the master warns at build time), and every player gets the same tree.

use std::fs;
use std::path::Path;

use hummel_core::Index;
use hummel_core::portable::{case_collisions, windows_problems};

use crate::SyncError;

/// Names listed in the error at most; the rest are counted.
const LISTED: usize = 20;

/// Refuses `index` when the file system of DEST cannot hold some of its names. `probe_dir` is
/// a folder on that file system where a probe file may be created and removed (`.hummel/`),
/// or `None` to write nothing. Returns whether that file system ignores case (see
/// [`case_insensitive`]), which the renames need to know.
pub(crate) fn check(
    index: &Index,
    dest: &Path,
    probe_dir: Option<&Path>,
) -> Result<bool, SyncError> {
    let case_blind = case_insensitive(probe_dir);
    let problems = unholdable(index, crate::platform::WINDOWS_NAMES, case_blind);
    if problems.is_empty() {
        return Ok(case_blind);
    }
    Err(SyncError::Unholdable {
        dest: dest.to_path_buf(),
        total: problems.len(),
        names: problems.into_iter().take(LISTED).collect(),
    })
}

/// Every name of `index` a file system with Windows' rules (`windows`), or one that does not
/// tell case apart (`case_blind`), cannot hold; each once, at the topmost entry it concerns.
fn unholdable(index: &Index, windows: bool, case_blind: bool) -> Vec<String> {
    let mut out = Vec::new();
    if windows {
        out.extend(
            windows_problems(index.entries.iter().map(|e| &e.path))
                .into_iter()
                .map(|(path, why)| format!("{path:?} ({why})")),
        );
    }
    if case_blind {
        let pairs = case_collisions(index.entries.iter().map(|e| &e.path));
        out.extend(
            pairs
                .into_iter()
                .map(|(a, b)| format!("{a:?} and {b:?} (names that differ only in case)")),
        );
    }
    out
}

/// True when the file system holding `dir` does not tell case apart: a probe file created there
/// is found under its name in another case. Without a folder to probe, or when the probe fails,
/// the platform's usual file system answers (Windows and macOS: case-insensitive).
pub(crate) fn case_insensitive(dir: Option<&Path>) -> bool {
    let usual = cfg!(any(windows, target_os = "macos"));
    let Some(dir) = dir else {
        return usual;
    };
    let name = format!("case-probe-{}", std::process::id());
    let upper = dir.join(format!("{name}-Ab"));
    if fs::File::create_new(&upper).is_err() {
        return usual;
    }
    let found = fs::symlink_metadata(dir.join(format!("{name}-aB"))).is_ok();
    let _ = fs::remove_file(&upper);
    found
}

#[cfg(test)]
mod tests {
    use hummel_core::{ChunkerConfig, DirEntry, Entry, EntryKind, FileEntry, Hash, RelPath};

    use super::*;

    fn index(paths: &[&str]) -> Index {
        let entries = paths
            .iter()
            .map(|p| Entry {
                path: RelPath::new(p).unwrap(),
                kind: if p.ends_with('/') {
                    unreachable!()
                } else if p.contains('.') || p.starts_with('f') {
                    EntryKind::File(FileEntry {
                        size: 0,
                        mode: 0o644,
                        mtime_ns: 0,
                        hash: Hash::of(b""),
                        chunks: vec![],
                    })
                } else {
                    EntryKind::Dir(DirEntry { mode: 0o755 })
                },
            })
            .collect();
        Index {
            revision: 1,
            created_unix: 0,
            chunker: ChunkerConfig::default(),
            root: None,
            entries,
            chunks: vec![],
            packs: vec![],
            info: Default::default(),
        }
    }

    #[test]
    fn windows_rules_apply_only_on_windows_and_name_each_problem_once() {
        let i = index(&[
            "@m",
            "@m/CON.txt",
            "@m/bad.",
            "@m/bad./f1",
            "@m/bad./f2",
            "@m/q?.cfg",
            "@m/ok.pbo",
            "trail ",
        ]);
        assert!(unholdable(&i, false, false).is_empty());
        assert_eq!(
            unholdable(&i, true, false),
            [
                "\"@m/CON.txt\" (CON is a reserved device name on Windows)",
                "\"@m/bad.\" (Windows drops a name's trailing dot)",
                "\"@m/q?.cfg\" (Windows forbids '?' in names)",
                "\"trail \" (Windows drops a name's trailing space)",
            ]
        );
    }

    #[test]
    fn case_pairs_are_refused_only_where_case_is_not_told_apart() {
        let i = index(&["m", "m/Readme.txt", "m/README.txt"]);
        assert!(unholdable(&i, false, false).is_empty());
        assert_eq!(
            unholdable(&i, false, true),
            ["\"m/Readme.txt\" and \"m/README.txt\" (names that differ only in case)"]
        );
        let fine = index(&["m", "m/a.txt"]);
        assert!(unholdable(&fine, true, true).is_empty());
    }

    #[test]
    fn the_probe_tells_this_file_system_and_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let insensitive = case_insensitive(Some(d.path()));
        // Linux test machines hold case-sensitive temp folders.
        #[cfg(target_os = "linux")]
        assert!(!insensitive);
        let _ = insensitive;
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
        assert_eq!(
            case_insensitive(None),
            cfg!(any(windows, target_os = "macos"))
        );
    }
}
