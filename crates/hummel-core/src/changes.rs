//! What changed between two revisions: [`changes`] diffs two indexes (the one a folder holds
//! and a newer one, or any two revisions of a repository) into a [`Changelog`] of mods
//! (top-level entries) and files added, updated and removed; [`Changelog::bounded`] cuts a
//! long one down to a bounded list with the counts of the whole. [`same_tree`] tells whether
//! two indexes hold the same files and folders. Shared by the master (`/api/v1/changes`, the
//! summary it records per revision) and the client (the player page).
//!
//! A path renamed only in case (`@ACE/Addons/a.pbo` to `@ace/addons/a.pbo`, what a Windows
//! admin's folder rename gives) is one change of the new path with `renamed_from`, not a
//! removal and an addition: the file is not lost, and on a case-insensitive disk a sync only
//! renames it. The same holds for a mod.
//!
//! Paths are the repository's: an index of a subtree (`root` = `@ace`) lists `@ace/...`, so
//! changelogs of several subtrees of one repository can be put side by side. Pure and
//! CPU-bound (a pass over both indexes).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::portable::case_fold;
use crate::{EntryKind, Index, RelPath};

/// What happened to a mod or a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// In the new revision only.
    Added,
    /// In both, with other content (a file), or with files added, updated or removed (a mod).
    Updated,
    /// In the old revision only.
    Removed,
}

/// One file that changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    /// The path in the repository.
    pub path: String,
    /// What happened to it.
    pub change: Change,
    /// Its size in the new revision (in the old one when removed).
    pub size: u64,
    /// The old path, when the file was renamed only in case (then `change` is
    /// [`Change::Updated`]); absent otherwise (and from older peers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<String>,
}

/// One mod (top-level entry of the repository) that changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModChange {
    /// The top-level name, e.g. `@ace`.
    pub name: String,
    /// What happened to it.
    pub change: Change,
    /// Files added in it.
    pub files_added: u64,
    /// Files with other content.
    pub files_updated: u64,
    /// Files removed from it.
    pub files_removed: u64,
    /// Bytes of its added and updated files (what a sync writes, at most).
    pub bytes_changed: u64,
    /// The old name, when the mod was renamed only in case (then `change` is
    /// [`Change::Updated`]); absent otherwise (and from older peers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<String>,
}

/// What changed from one revision to another.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changelog {
    /// The older revision (`None`: nothing was held, everything is added).
    pub from: Option<u64>,
    /// The newer revision.
    pub to: u64,
    /// The mods that changed, by name.
    pub mods: Vec<ModChange>,
    /// The files that changed, by path.
    pub files: Vec<FileChange>,
}

impl Changelog {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.mods.is_empty() && self.files.is_empty()
    }

    /// Appends `other` (another subtree of the same repository), keeping both lists sorted.
    pub fn merge(&mut self, other: Changelog) {
        self.from = match (self.from, other.from) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.to = self.to.max(other.to);
        self.mods.extend(other.mods);
        self.mods.sort_by(|a, b| a.name.cmp(&b.name));
        self.files.extend(other.files);
        self.files.sort_by(|a, b| a.path.cmp(&b.path));
    }
}

/// The counts of a [`Changelog`]: what the master records per revision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeSummary {
    /// Files in the newer revision only.
    pub files_added: u64,
    /// Files in both, with other content.
    pub files_updated: u64,
    /// Files in the older revision only.
    pub files_removed: u64,
    /// Bytes of the added and updated files (what a sync writes, at most).
    pub bytes_changed: u64,
}

impl Changelog {
    /// The counts of the whole changelog.
    pub fn summary(&self) -> ChangeSummary {
        let mut s = ChangeSummary::default();
        for f in &self.files {
            match f.change {
                Change::Added => s.files_added += 1,
                Change::Updated => s.files_updated += 1,
                Change::Removed => s.files_removed += 1,
            }
            if f.change != Change::Removed {
                s.bytes_changed = s.bytes_changed.saturating_add(f.size);
            }
        }
        s
    }

    /// Keeps the first `max_mods` mods and `max_files` files (by name); returns whether any
    /// were cut. Take [`Changelog::summary`] before: it counts the whole.
    pub fn truncate(&mut self, max_mods: usize, max_files: usize) -> bool {
        let cut = self.mods.len() > max_mods || self.files.len() > max_files;
        self.mods.truncate(max_mods);
        self.files.truncate(max_files);
        cut
    }
}

/// The repository path of `path` in an index rooted at `root`.
fn full_path(root: Option<&RelPath>, path: &RelPath) -> String {
    match root {
        Some(r) => format!("{}/{}", r.as_str(), path.as_str()),
        None => path.as_str().to_string(),
    }
}

/// The top-level name of a repository path.
fn top(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

/// Pairs each path of `came` with the path of `gone` it equals but for case (`came` →
/// `gone`), where exactly one of each folds to the same name: two old files that fold alike
/// cannot both have become one new file, so such groups stay removals and additions.
fn case_renames<'a>(gone: &[&'a String], came: &[&'a String]) -> HashMap<&'a str, &'a str> {
    let mut by_fold: HashMap<String, (Vec<&'a str>, Vec<&'a str>)> = HashMap::new();
    for g in gone {
        by_fold.entry(case_fold(g)).or_default().0.push(g.as_str());
    }
    if by_fold.is_empty() {
        return HashMap::new();
    }
    for c in came {
        if let Some(group) = by_fold.get_mut(&case_fold(c)) {
            group.1.push(c.as_str());
        }
    }
    by_fold
        .into_values()
        .filter_map(|(g, c)| match (g.as_slice(), c.as_slice()) {
            ([g], [c]) => Some((*c, *g)),
            _ => None,
        })
        .collect()
}

/// What changed from `old` (`None`: an empty folder) to `new`: files by content (size and
/// hash; a change of mode or mtime alone is no change), mods by their files, and a mod that
/// appears or disappears (an empty folder too). Pure.
pub fn changes(old: Option<&Index>, new: &Index) -> Changelog {
    // path -> (size, hash) of every file; the top-level names present.
    let files_of = |index: &Index| -> BTreeMap<String, (u64, crate::Hash)> {
        index
            .files()
            .map(|(p, f)| (full_path(index.root.as_ref(), p), (f.size, f.hash)))
            .collect()
    };
    let tops_of = |index: &Index| -> std::collections::BTreeSet<String> {
        match &index.root {
            Some(r) => std::iter::once(top(r.as_str()).to_string()).collect(),
            None => index
                .entries
                .iter()
                .map(|e| top(e.path.as_str()).to_string())
                .collect(),
        }
    };
    let before = old.map(files_of).unwrap_or_default();
    let after = files_of(new);
    let gone: Vec<&String> = before.keys().filter(|p| !after.contains_key(*p)).collect();
    let came: Vec<&String> = after.keys().filter(|p| !before.contains_key(*p)).collect();
    let renamed = case_renames(&gone, &came);
    let mut files = Vec::new();
    for (path, (size, hash)) in &after {
        let (change, renamed_from) = match before.get(path) {
            Some((s, h)) if s == size && h == hash => continue,
            Some(_) => (Change::Updated, None),
            None => match renamed.get(path.as_str()) {
                Some(&from) => (Change::Updated, Some(from.to_string())),
                None => (Change::Added, None),
            },
        };
        files.push(FileChange {
            path: path.clone(),
            change,
            size: *size,
            renamed_from,
        });
    }
    let renamed_away: std::collections::HashSet<&str> = renamed.values().copied().collect();
    for path in gone {
        if !renamed_away.contains(path.as_str()) {
            files.push(FileChange {
                path: path.clone(),
                change: Change::Removed,
                size: before[path].0,
                renamed_from: None,
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));

    let tops_before = old.map(tops_of).unwrap_or_default();
    let tops_after = tops_of(new);
    let mut mods: BTreeMap<String, ModChange> = BTreeMap::new();
    fn entry<'a>(
        mods: &'a mut BTreeMap<String, ModChange>,
        name: &str,
        change: Change,
    ) -> &'a mut ModChange {
        mods.entry(name.to_string()).or_insert(ModChange {
            name: name.to_string(),
            change,
            files_added: 0,
            files_updated: 0,
            files_removed: 0,
            bytes_changed: 0,
            renamed_from: None,
        })
    }
    let tops_gone: Vec<&String> = tops_before.difference(&tops_after).collect();
    let tops_came: Vec<&String> = tops_after.difference(&tops_before).collect();
    let mods_renamed = case_renames(&tops_gone, &tops_came);
    let mods_renamed_away: std::collections::HashSet<&str> =
        mods_renamed.values().copied().collect();
    for name in tops_came {
        match mods_renamed.get(name.as_str()) {
            Some(&from) => {
                entry(&mut mods, name, Change::Updated).renamed_from = Some(from.to_string());
            }
            None => {
                entry(&mut mods, name, Change::Added);
            }
        }
    }
    for name in tops_gone {
        if !mods_renamed_away.contains(name.as_str()) {
            entry(&mut mods, name, Change::Removed);
        }
    }
    for f in &files {
        let m = entry(&mut mods, top(&f.path), Change::Updated);
        match f.change {
            Change::Added => m.files_added += 1,
            Change::Updated => m.files_updated += 1,
            Change::Removed => m.files_removed += 1,
        }
        if f.change != Change::Removed {
            m.bytes_changed += f.size;
        }
    }
    Changelog {
        from: old.map(|i| i.revision),
        to: new.revision,
        mods: mods.into_values().collect(),
        files,
    }
}

/// Whether the index held for a subtree has the same files and folders as `current` there
/// (content, mode and folders; mtimes aside): a sync of it would write nothing it does not have.
pub fn same_tree(held: &Index, current: &Index) -> bool {
    held.entries.len() == current.entries.len()
        && held.entries.iter().zip(&current.entries).all(|(a, b)| {
            a.path == b.path
                && match (&a.kind, &b.kind) {
                    (EntryKind::Dir(_), EntryKind::Dir(_)) => true,
                    (EntryKind::File(x), EntryKind::File(y)) => {
                        x.size == y.size && x.hash == y.hash && x.mode == y.mode
                    }
                    _ => false,
                }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkerConfig;
    use crate::index::{DirEntry, Entry, FileEntry};
    use crate::{Hash, Index};

    fn dir(path: &str) -> Entry {
        Entry {
            path: RelPath::new(path).unwrap(),
            kind: EntryKind::Dir(DirEntry { mode: 0o755 }),
        }
    }

    fn file(path: &str, content: &str) -> Entry {
        Entry {
            path: RelPath::new(path).unwrap(),
            kind: EntryKind::File(FileEntry {
                size: content.len() as u64,
                mode: 0o644,
                mtime_ns: 0,
                hash: Hash::of(content.as_bytes()),
                chunks: Vec::new(),
            }),
        }
    }

    fn index(revision: u64, mut entries: Vec<Entry>) -> Index {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Index {
            revision,
            created_unix: 0,
            chunker: ChunkerConfig::default(),
            root: None,
            entries,
            chunks: Vec::new(),
            packs: Vec::new(),
            info: Default::default(),
        }
    }

    fn old() -> Index {
        index(
            1,
            vec![
                dir("@ace"),
                dir("@ace/addons"),
                file("@ace/addons/a.pbo", "a1"),
                file("@ace/addons/b.pbo", "b1"),
                dir("@cba"),
                file("@cba/c.pbo", "c1"),
                dir("@old"),
                file("@old/x.pbo", "x"),
                dir("@same"),
                file("@same/s.pbo", "s"),
            ],
        )
    }

    fn new() -> Index {
        index(
            2,
            vec![
                dir("@ace"),
                dir("@ace/addons"),
                file("@ace/addons/a.pbo", "a2 longer"),
                file("@ace/addons/b.pbo", "b1"),
                file("@ace/addons/new.pbo", "n"),
                dir("@cba"),
                dir("@empty"),
                dir("@same"),
                file("@same/s.pbo", "s"),
            ],
        )
    }

    #[test]
    fn files_and_mods_are_added_updated_and_removed() {
        let log = changes(Some(&old()), &new());
        assert_eq!((log.from, log.to), (Some(1), 2));
        let files: Vec<(&str, Change, u64)> = log
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.change, f.size))
            .collect();
        assert_eq!(
            files,
            vec![
                ("@ace/addons/a.pbo", Change::Updated, 9),
                ("@ace/addons/new.pbo", Change::Added, 1),
                ("@cba/c.pbo", Change::Removed, 2),
                ("@old/x.pbo", Change::Removed, 1),
            ]
        );
        let mods: Vec<(&str, Change, u64, u64, u64, u64)> = log
            .mods
            .iter()
            .map(|m| {
                (
                    m.name.as_str(),
                    m.change,
                    m.files_added,
                    m.files_updated,
                    m.files_removed,
                    m.bytes_changed,
                )
            })
            .collect();
        assert_eq!(
            mods,
            vec![
                ("@ace", Change::Updated, 1, 1, 0, 10),
                ("@cba", Change::Updated, 0, 0, 1, 0),
                ("@empty", Change::Added, 0, 0, 0, 0),
                ("@old", Change::Removed, 0, 0, 1, 0),
            ]
        );
    }

    #[test]
    fn nothing_held_adds_everything_and_equal_trees_change_nothing() {
        let log = changes(None, &new());
        assert_eq!(log.from, None);
        assert!(log.files.iter().all(|f| f.change == Change::Added));
        assert_eq!(log.files.len(), 4);
        assert!(log.mods.iter().all(|m| m.change == Change::Added));
        assert_eq!(log.mods.len(), 4);

        let mut touched = new();
        touched.revision = 3;
        for e in &mut touched.entries {
            if let EntryKind::File(f) = &mut e.kind {
                f.mtime_ns = 42;
            }
        }
        let log = changes(Some(&new()), &touched);
        assert!(log.is_empty(), "{log:?}");
        assert!(same_tree(&new(), &touched));
        assert!(!same_tree(&old(), &new()));
    }

    #[test]
    fn the_summary_counts_the_whole_and_truncation_keeps_the_first() {
        let mut log = changes(Some(&old()), &new());
        let summary = log.summary();
        assert_eq!(
            summary,
            ChangeSummary {
                files_added: 1,
                files_updated: 1,
                files_removed: 2,
                bytes_changed: 10,
            }
        );
        assert!(!log.clone().truncate(10, 10));
        assert!(log.truncate(1, 2));
        assert_eq!(log.mods.len(), 1);
        assert_eq!(log.mods[0].name, "@ace");
        let paths: Vec<&str> = log.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["@ace/addons/a.pbo", "@ace/addons/new.pbo"]);
        assert_eq!(changes(None, &old()).summary().files_added, 5);
        assert_eq!(
            changes(Some(&old()), &old()).summary(),
            ChangeSummary::default()
        );
    }

    #[test]
    fn subtrees_diff_under_their_repository_paths_and_merge() {
        let ace = RelPath::new("@ace").unwrap();
        let cba = RelPath::new("@cba").unwrap();
        let mut log = changes(old().subtree(&ace).as_ref(), &new().subtree(&ace).unwrap());
        assert_eq!(log.mods.len(), 1);
        assert_eq!(log.mods[0].name, "@ace");
        assert_eq!(log.files[0].path, "@ace/addons/a.pbo");
        log.merge(changes(None, &new().subtree(&cba).unwrap()));
        let names: Vec<&str> = log.mods.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, vec!["@ace", "@cba"]);
        assert_eq!(log.mods[1].change, Change::Added);
        assert_eq!((log.from, log.to), (Some(1), 2));
    }

    /// A Windows admin renaming `@ACE/Addons` to `@ace/addons` loses no file: the changelog
    /// lists each file once, as renamed, and the mod as renamed, not removed.
    #[test]
    fn a_rename_only_in_case_is_one_change_not_a_removal() {
        let before = index(
            1,
            vec![
                dir("@ACE"),
                dir("@ACE/Addons"),
                file("@ACE/Addons/a.pbo", "a"),
                file("@ACE/Addons/b.pbo", "b"),
                dir("@cba"),
                file("@cba/X.pbo", "x1"),
                file("@cba/x.PBO", "x2"),
            ],
        );
        let after = index(
            2,
            vec![
                dir("@ace"),
                dir("@ace/addons"),
                file("@ace/addons/a.pbo", "a"),
                file("@ace/addons/b.pbo", "b changed"),
                dir("@cba"),
                file("@cba/x.pbo", "x1"),
            ],
        );
        let log = changes(Some(&before), &after);
        let files: Vec<(&str, Change, Option<&str>)> = log
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.change, f.renamed_from.as_deref()))
            .collect();
        assert_eq!(
            files,
            [
                (
                    "@ace/addons/a.pbo",
                    Change::Updated,
                    Some("@ACE/Addons/a.pbo")
                ),
                (
                    "@ace/addons/b.pbo",
                    Change::Updated,
                    Some("@ACE/Addons/b.pbo")
                ),
                // Two old names fold to the new one: which became it is unknown.
                ("@cba/X.pbo", Change::Removed, None),
                ("@cba/x.PBO", Change::Removed, None),
                ("@cba/x.pbo", Change::Added, None),
            ]
        );
        let mods: Vec<(&str, Change, Option<&str>, u64)> = log
            .mods
            .iter()
            .map(|m| {
                (
                    m.name.as_str(),
                    m.change,
                    m.renamed_from.as_deref(),
                    m.files_removed,
                )
            })
            .collect();
        assert_eq!(
            mods,
            [
                ("@ace", Change::Updated, Some("@ACE"), 0),
                ("@cba", Change::Updated, None, 2),
            ]
        );
        let summary = log.summary();
        assert_eq!(
            (
                summary.files_added,
                summary.files_updated,
                summary.files_removed
            ),
            (1, 2, 2)
        );
        // Older peers read a changelog without the field.
        let json = serde_json::to_value(&log.files[4]).unwrap();
        assert!(json.get("renamed_from").is_none(), "{json}");
    }
}
