//! [`SyncPlan`]: what a sync will do, as plain data, computed before anything is written.
//!
//! [`SyncPlan::build`] compares the new [`Index`] with what [`crate::scan`] found in DEST and
//! decides, per file: unchanged (maybe only its mode or mtime fixed), or written; per chunk of a
//! written file: copied from local data ([`LocalCopy`]: any local file whose chunk layout is
//! known, including files about to be replaced or deleted, so renames cost nothing) or
//! downloaded ([`RangeRequest`], chunks of one pack coalesced by [`coalesce`]); and which local
//! entries are in the way ([`SyncPlan::conflicts`]) or extra ([`SyncPlan::deletes`]).
//!
//! The planner does no I/O. `--dry-run` returns [`SyncPlan::summary`]; execution
//! (`assemble`, `fetch`) only carries the plan out.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use hummel_core::{EntryKind, FileEntry, Hash, Index, RelPath};

use crate::scan::{LocalContent, LocalKind, LocalTree};

/// Chunks of one pack separated by at most this many bytes share a request.
pub const MAX_RANGE_GAP: u64 = 64 << 10;
/// A coalesced request covers at most this many bytes (a single larger chunk gets its own).
pub const MAX_RANGE_LEN: u64 = 16 << 20;

/// Where a chunk's plain bytes go: file `file` (position in [`SyncPlan::writes`]) at `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Position in [`SyncPlan::writes`].
    pub file: u32,
    /// Offset in that file.
    pub offset: u64,
    /// Position among all targets of the plan: the flag set once this target is written.
    #[serde(skip)]
    pub slot: u32,
}

/// A directory of the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DirAction {
    /// Position in [`Index::entries`].
    pub entry: u32,
    /// Not there yet as a real directory.
    pub create: bool,
}

/// A file whose content is right but whose mode or mtime is not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MetaFix {
    /// Position in [`Index::entries`]: the mode and mtime to set are the index's.
    pub entry: u32,
}

/// A file to (re)write: assembled in a temp file, verified, renamed into place.
///
/// Path, size, mode, mtime and hash are the index entry's, not copied: a plan costs 12 bytes
/// per file written (a first sync of 500,000 files), not ~140.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileWrite {
    /// Position in [`Index::entries`].
    pub entry: u32,
    /// The slots of its targets, one per chunk in file order ([`Target::slot`]).
    #[serde(skip)]
    pub slots: std::ops::Range<u32>,
}

impl FileWrite {
    /// The path and file entry of the index this write makes.
    pub fn file<'i>(&self, index: &'i Index) -> (&'i RelPath, &'i FileEntry) {
        file_entry(index, self.entry)
    }
}

impl MetaFix {
    /// The path and file entry of the index whose mode and mtime are set.
    pub fn file<'i>(&self, index: &'i Index) -> (&'i RelPath, &'i FileEntry) {
        file_entry(index, self.entry)
    }
}

impl DirAction {
    /// The path of the directory and its mode (`& 0o7777`).
    pub fn dir<'i>(&self, index: &'i Index) -> (&'i RelPath, u32) {
        let e = &index.entries[self.entry as usize];
        match &e.kind {
            EntryKind::Dir(d) => (&e.path, d.mode & 0o7777),
            EntryKind::File(_) => panic!("a plan names file {} as a directory", e.path),
        }
    }
}

/// The path and file of entry `entry` of `index`, which a plan of that index names as a file.
pub fn file_entry(index: &Index, entry: u32) -> (&RelPath, &FileEntry) {
    let e = &index.entries[entry as usize];
    match &e.kind {
        EntryKind::File(f) => (&e.path, f),
        EntryKind::Dir(_) => panic!("a plan names directory {} as a file", e.path),
    }
}

/// Where each needed chunk goes, flat and sorted by chunk: 20 bytes per target, where a map
/// with a `Vec` per chunk took ~77. Built once per plan, read by every writer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetTable {
    /// Chunk positions in [`Index::chunks`], ascending; one per target.
    chunks: Vec<u32>,
    /// The targets, parallel to `chunks`.
    targets: Vec<Target>,
}

impl TargetTable {
    /// The table of `(chunk, target)` pairs, in any order.
    pub fn new(mut pairs: Vec<(u32, Target)>) -> TargetTable {
        pairs.sort_unstable_by_key(|(c, t)| (*c, t.slot));
        let mut table = TargetTable {
            chunks: Vec::with_capacity(pairs.len()),
            targets: Vec::with_capacity(pairs.len()),
        };
        for (c, t) in pairs {
            table.chunks.push(c);
            table.targets.push(t);
        }
        table
    }

    /// The targets of chunk `chunk` (position in [`Index::chunks`]), if it is needed.
    pub fn get(&self, chunk: &u32) -> Option<&[Target]> {
        let start = self.chunks.partition_point(|c| c < chunk);
        let end = start + self.chunks[start..].partition_point(|c| c == chunk);
        (end > start).then(|| &self.targets[start..end])
    }

    /// Every needed chunk with its targets, by chunk.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &[Target])> {
        let mut start = 0;
        std::iter::from_fn(move || {
            let &chunk = self.chunks.get(start)?;
            let end = start + self.chunks[start..].partition_point(|&c| c == chunk);
            let out = (chunk, &self.targets[start..end]);
            start = end;
            Some(out)
        })
    }

    /// Distinct chunks needed.
    pub fn chunk_count(&self) -> usize {
        self.iter().count()
    }
}

/// A chunk taken from a local file (re-hashed when read; a mismatch falls back to download).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LocalCopy {
    /// Source file, relative to DEST.
    #[serde(serialize_with = "ser_path")]
    pub source: PathBuf,
    /// Offset of the chunk in the source.
    pub offset: u64,
    /// Plain length.
    pub len: u32,
    /// Position of the chunk in [`Index::chunks`].
    pub chunk: u32,
}

/// One HTTP range request: a run of chunks of one pack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RangeRequest {
    /// Pack number.
    pub pack: u32,
    /// First byte in the pack.
    pub start: u64,
    /// Bytes requested.
    pub len: u64,
    /// Positions in [`Index::chunks`] of the chunks inside, by offset.
    pub chunks: Vec<u32>,
}

/// A local entry to remove.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Removal {
    /// Path relative to DEST.
    #[serde(serialize_with = "ser_path")]
    pub path: PathBuf,
    /// What it is (`file`, `directory`, `symlink`, `special file`).
    pub kind: &'static str,
}

impl Removal {
    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == "directory"
    }
}

/// The whole plan.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SyncPlan {
    /// Revision being synced.
    pub revision: u64,
    /// The directories of the index that `apply` looks at, parents first: those to create,
    /// those whose mode differs, and every ancestor of a path written, removed or in the way
    /// (checked right before the renames, made writable, given their mode at the end). A
    /// directory as the index wants it with nothing changing below is left alone.
    pub dirs: Vec<DirAction>,
    /// Files already right (positions in [`Index::entries`]).
    pub unchanged: Vec<u32>,
    /// Files with the right content but the wrong mode or mtime.
    pub touch: Vec<MetaFix>,
    /// Files to write.
    pub writes: Vec<FileWrite>,
    /// Chunks to copy from local files.
    pub copies: Vec<LocalCopy>,
    /// Range requests to download the other chunks.
    pub downloads: Vec<RangeRequest>,
    /// For every needed chunk (position in [`Index::chunks`]), where it goes.
    #[serde(skip)]
    pub targets: TargetTable,
    /// Local entries where the index needs something of another kind (removed even with
    /// `--keep-extra`, right before the renames).
    pub conflicts: Vec<Removal>,
    /// Local entries not in the index, deepest first (empty with `--keep-extra`).
    pub deletes: Vec<Removal>,
    /// Plain bytes of the files to write.
    pub bytes_to_write: u64,
    /// Stored bytes to download (range lengths).
    pub bytes_to_download: u64,
    /// Plain bytes copied from local files.
    pub bytes_to_reuse: u64,
}

/// The plan in numbers and path lists: what `--dry-run` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SyncPlanSummary {
    /// Revision that would be synced.
    pub revision: u64,
    /// DEST already holds this revision (no index was fetched).
    pub no_op: bool,
    /// Files to write.
    pub files_to_write: u64,
    /// Files already right.
    pub files_unchanged: u64,
    /// Files whose mode or mtime would be fixed.
    pub files_to_touch: u64,
    /// Files, symlinks and special files to delete.
    pub files_to_delete: u64,
    /// Directories to create.
    pub dirs_to_create: u64,
    /// Directories to delete.
    pub dirs_to_delete: u64,
    /// Plain bytes to write.
    pub bytes_to_write: u64,
    /// Stored bytes to download.
    pub bytes_to_download: u64,
    /// Plain bytes to copy from local files.
    pub bytes_to_reuse: u64,
    /// Distinct chunks to download.
    pub chunks_to_download: u64,
    /// Distinct chunks to copy locally.
    pub chunks_to_reuse: u64,
    /// HTTP range requests.
    pub requests: u64,
    /// Paths to write.
    pub write: Vec<String>,
    /// Paths to delete (and entries in the way).
    pub delete: Vec<String>,
    /// Directories to create.
    pub create_dirs: Vec<String>,
    /// Top-level entries DEST already had that this sync takes over (a first sync into a
    /// folder that holds some of the repository's names): they become exact copies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adopted: Vec<String>,
    /// Why the sync itself would refuse this plan (a mass delete or a rollback not allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The fingerprint of the master's signing key that signed the revision.
    #[serde(default)]
    pub signing_key: String,
    /// How that key came to be trusted (see `SyncReport::signing_key_trust`); a dry run
    /// pins nothing.
    #[serde(default)]
    pub signing_key_trust: crate::KeyTrust,
}

fn ser_path<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

impl SyncPlan {
    /// Plans the sync of `index` into a DEST that holds `tree`, whose file contents are
    /// described by `content`. Pure: no I/O.
    pub fn build(
        index: &Index,
        tree: &LocalTree,
        content: &LocalContent,
        keep_extra: bool,
    ) -> SyncPlan {
        let mut plan = SyncPlan {
            revision: index.revision,
            ..SyncPlan::default()
        };
        // Parallel to plan.dirs: a directory DEST has with the index's mode.
        let mut settled: Vec<bool> = Vec::new();
        let mut targets: Vec<(u32, Target)> = Vec::new();
        for (entry, e) in (0u32..).zip(&index.entries) {
            let local = tree.get(e.path.as_str());
            match &e.kind {
                EntryKind::Dir(d) => {
                    let is_dir = matches!(local, Some(LocalKind::Dir { .. }));
                    if let Some(k) = local.filter(|_| !is_dir) {
                        plan.conflicts.push(Removal {
                            path: PathBuf::from(e.path.as_str()),
                            kind: k.name(),
                        });
                    }
                    settled.push(matches!(local, Some(LocalKind::Dir { mode })
                            if crate::platform::dir_mode_matches(mode, d.mode)));
                    plan.dirs.push(DirAction {
                        entry,
                        create: !is_dir,
                    });
                }
                EntryKind::File(f) => {
                    let mode = f.mode & 0o7777;
                    if let Some(LocalKind::File(_)) = local
                        && let Some((hash, stat)) = content.known(tree, e.path.as_str())
                        && hash == f.hash
                    {
                        plan.unchanged.push(entry);
                        if !crate::platform::mtime_matches(stat.mtime_ns, f.mtime_ns)
                            || !crate::platform::mode_matches(stat.mode, mode)
                        {
                            plan.touch.push(MetaFix { entry });
                        }
                        continue;
                    }
                    if let Some(
                        k @ (LocalKind::Dir { .. } | LocalKind::Symlink | LocalKind::Other),
                    ) = local
                    {
                        plan.conflicts.push(Removal {
                            path: PathBuf::from(e.path.as_str()),
                            kind: k.name(),
                        });
                    }
                    let file = plan.writes.len() as u32;
                    let first_slot = plan.writes.last().map_or(0, |w| w.slots.end);
                    let mut offset = 0u64;
                    for (slot, &ci) in (first_slot..).zip(&f.chunks) {
                        targets.push((ci, Target { file, offset, slot }));
                        offset += index.chunks[ci as usize].len as u64;
                    }
                    plan.bytes_to_write += f.size;
                    plan.writes.push(FileWrite {
                        entry,
                        slots: first_slot..first_slot + f.chunks.len() as u32,
                    });
                }
            }
        }
        plan.targets = TargetTable::new(targets);

        // Local sources of the needed chunks: the first local file (sorted paths, so the plan
        // is deterministic) whose known layout has the chunk. Keyed by the chunks local files
        // hold (layouts are trimmed to the useful ones), not by every chunk needed: a first
        // sync of 500,000 files builds no map at all.
        let mut sources: HashMap<Hash, (&Path, u64, u32)> = HashMap::new();
        for (path, layout) in content.sources(tree) {
            for c in layout {
                sources.entry(c.hash).or_insert((path, c.offset, c.len));
            }
        }
        let mut to_download = Vec::new();
        for (ci, targets) in plan.targets.iter() {
            let chunk = &index.chunks[ci as usize];
            match sources.get(&chunk.hash) {
                Some(&(path, offset, len)) if len == chunk.len && len > 0 => {
                    plan.bytes_to_reuse += len as u64 * targets.len() as u64;
                    plan.copies.push(LocalCopy {
                        source: path.to_path_buf(),
                        offset,
                        len,
                        chunk: ci,
                    });
                }
                _ => to_download.push(ci),
            }
        }
        plan.downloads = coalesce(index, to_download, MAX_RANGE_GAP, MAX_RANGE_LEN);
        plan.bytes_to_download = plan.downloads.iter().map(|r| r.len).sum();

        if !keep_extra {
            for (path, kind) in tree.iter() {
                let in_index = path
                    .to_str()
                    .and_then(|s| RelPath::new(s).ok())
                    .is_some_and(|p| index.get(&p).is_some());
                if !in_index {
                    plan.deletes.push(Removal {
                        path: path.to_path_buf(),
                        kind: kind.name(),
                    });
                }
            }
            plan.deletes.sort_by(|a, b| {
                let depth = |p: &Path| p.components().count();
                depth(&b.path)
                    .cmp(&depth(&a.path))
                    .then_with(|| a.path.cmp(&b.path))
            });
        }

        if settled.iter().any(|&s| s) {
            let touched: Vec<&Path> = plan
                .writes
                .iter()
                .map(|w| Path::new(w.file(index).0.as_str()))
                .chain(plan.deletes.iter().map(|r| r.path.as_path()))
                .chain(plan.conflicts.iter().map(|r| r.path.as_path()))
                .collect();
            let mut above: HashSet<&Path> = HashSet::new();
            for p in touched {
                for a in p.ancestors().skip(1) {
                    if !above.insert(a) {
                        break;
                    }
                }
            }
            let dirs = std::mem::take(&mut plan.dirs);
            plan.dirs = dirs
                .into_iter()
                .zip(settled)
                .filter(|(d, settled)| {
                    !settled || above.contains(Path::new(d.dir(index).0.as_str()))
                })
                .map(|(d, _)| d)
                .collect();
        }
        plan
    }

    /// Files (and symlinks, special files) the plan deletes.
    pub fn files_deleted(&self) -> u64 {
        self.deletes.iter().filter(|d| !d.is_dir()).count() as u64
    }

    /// `Some((deleting, holding))` when the plan deletes more than half of the files that
    /// DEST holds in what Hummel manages (`tree`): a mass delete, which needs the admin's
    /// confirmation in the revision or the user's `--allow-mass-delete`.
    pub fn mass_delete(&self, tree: &LocalTree) -> Option<(u64, u64)> {
        let holding = tree.non_dirs() as u64;
        let deleting = self.files_deleted();
        (deleting > 0 && deleting * 2 > holding).then_some((deleting, holding))
    }

    /// The paths the plan removes: extras, then entries in the way that are not extras.
    pub fn removed_paths(&self) -> Vec<String> {
        let lossy = |r: &Removal| r.path.to_string_lossy().into_owned();
        let mut delete: Vec<String> = self.deletes.iter().map(lossy).collect();
        delete.extend(
            self.conflicts
                .iter()
                .filter(|c| !self.deletes.iter().any(|d| d.path == c.path))
                .map(lossy),
        );
        delete
    }

    /// Counts and path lists (`index`: the one planned for).
    pub fn summary(&self, index: &Index) -> SyncPlanSummary {
        let delete = self.removed_paths();
        SyncPlanSummary {
            revision: self.revision,
            no_op: false,
            files_to_write: self.writes.len() as u64,
            files_unchanged: self.unchanged.len() as u64,
            files_to_touch: self.touch.len() as u64,
            files_to_delete: self.files_deleted(),
            dirs_to_create: self.dirs.iter().filter(|d| d.create).count() as u64,
            dirs_to_delete: self.deletes.iter().filter(|d| d.is_dir()).count() as u64,
            bytes_to_write: self.bytes_to_write,
            bytes_to_download: self.bytes_to_download,
            bytes_to_reuse: self.bytes_to_reuse,
            chunks_to_download: self.downloads.iter().map(|r| r.chunks.len() as u64).sum(),
            chunks_to_reuse: self.copies.len() as u64,
            requests: self.downloads.len() as u64,
            write: self
                .writes
                .iter()
                .map(|w| w.file(index).0.to_string())
                .collect(),
            delete,
            create_dirs: self
                .dirs
                .iter()
                .filter(|d| d.create)
                .map(|d| d.dir(index).0.to_string())
                .collect(),
            adopted: Vec::new(),
            refused: None,
            signing_key: String::new(),
            signing_key_trust: crate::KeyTrust::default(),
        }
    }
}

/// Groups chunks (positions in [`Index::chunks`]) by pack and merges chunks of one pack that
/// are adjacent or at most `max_gap` bytes apart into one request of at most `max_len` bytes
/// (a single chunk larger than that still gets its own request). Requests are sorted by pack
/// and offset.
pub fn coalesce(
    index: &Index,
    mut chunks: Vec<u32>,
    max_gap: u64,
    max_len: u64,
) -> Vec<RangeRequest> {
    let loc = |ci: u32| &index.chunks[ci as usize];
    chunks.sort_by_key(|&ci| (loc(ci).pack, loc(ci).offset, ci));
    chunks.dedup();
    let mut out: Vec<RangeRequest> = Vec::new();
    for ci in chunks {
        let c = loc(ci);
        let end = c.offset + c.stored_len as u64;
        if let Some(last) = out.last_mut()
            && last.pack == c.pack
        {
            let last_end = last.start + last.len;
            let new_end = last_end.max(end);
            if c.offset.saturating_sub(last_end) <= max_gap && new_end - last.start <= max_len {
                last.len = new_end - last.start;
                last.chunks.push(ci);
                continue;
            }
        }
        out.push(RangeRequest {
            pack: c.pack,
            start: c.offset,
            len: c.stored_len as u64,
            chunks: vec![ci],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hummel_core::{ChunkLocation, ChunkerConfig, Codec, DirEntry, Entry, FileEntry, PackInfo};

    use super::*;
    use crate::scan::{FileStat, KnownFile, LocalChunk};

    fn rp(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn chunk(n: u8, pack: u32, offset: u64, len: u32) -> ChunkLocation {
        ChunkLocation {
            hash: Hash::of(&[n]),
            pack,
            offset,
            stored_len: len,
            len,
            codec: Codec::Raw,
        }
    }

    fn file(path: &str, index_chunks: &[ChunkLocation], chunks: Vec<u32>) -> Entry {
        let size = chunks
            .iter()
            .map(|&c| index_chunks[c as usize].len as u64)
            .sum();
        Entry {
            path: rp(path),
            kind: EntryKind::File(FileEntry {
                size,
                mode: 0o644,
                mtime_ns: 1_000,
                hash: Hash::of(format!("{chunks:?}").as_bytes()),
                chunks,
            }),
        }
    }

    /// Chunks 0,1 in pack 1 (adjacent), 2 in pack 2; files a/x = [0,1], b = [2], a/dup = [0].
    fn index() -> Index {
        let chunks = vec![
            chunk(0, 1, 16, 100),
            chunk(1, 1, 116, 200),
            chunk(2, 2, 16, 300),
        ];
        let entries = vec![
            Entry {
                path: rp("a"),
                kind: EntryKind::Dir(DirEntry { mode: 0o755 }),
            },
            file("a/dup", &chunks, vec![0]),
            file("a/x", &chunks, vec![0, 1]),
            file("b", &chunks, vec![2]),
        ];
        Index {
            revision: 3,
            created_unix: 0,
            chunker: ChunkerConfig::default(),
            root: None,
            entries,
            chunks,
            packs: vec![
                PackInfo {
                    number: 1,
                    hash: Hash::of(b"p1"),
                    size: 1000,
                },
                PackInfo {
                    number: 2,
                    hash: Hash::of(b"p2"),
                    size: 1000,
                },
            ],
            info: Default::default(),
        }
    }

    fn stat(size: u64) -> FileStat {
        FileStat {
            size,
            mtime_ns: 1_000,
            ctime_ns: 1,
            ino: 1,
            mode: 0o644,
        }
    }

    fn file_hash(index: &Index, path: &str) -> Hash {
        match &index.get(&rp(path)).unwrap().kind {
            EntryKind::File(f) => f.hash,
            _ => unreachable!(),
        }
    }

    fn layout(index: &Index, chunks: &[u32]) -> Arc<Vec<LocalChunk>> {
        let mut off = 0;
        Arc::new(
            chunks
                .iter()
                .map(|&c| {
                    let l = &index.chunks[c as usize];
                    let lc = LocalChunk {
                        offset: off,
                        len: l.len,
                        hash: l.hash,
                    };
                    off += l.len as u64;
                    lc
                })
                .collect(),
        )
    }

    /// DEST holds `path` of `index` as it should be, made of `chunks`.
    fn hold_in_place(
        index: &Index,
        tree: &mut LocalTree,
        content: &mut LocalContent,
        path: &str,
        chunks: &[u32],
    ) {
        let size = layout(index, chunks).iter().map(|l| l.len as u64).sum();
        tree.insert(path.into(), LocalKind::File(stat(size)));
        content.learnt.insert(
            path.into(),
            KnownFile {
                hash: file_hash(index, path),
                stat: stat(size),
                chunks: Some(layout(index, chunks)),
            },
        );
    }

    #[test]
    fn empty_dest_downloads_everything_coalesced() {
        let idx = index();
        let plan = SyncPlan::build(&idx, &LocalTree::default(), &LocalContent::default(), false);
        assert_eq!(plan.writes.len(), 3);
        assert!(plan.unchanged.is_empty() && plan.copies.is_empty() && plan.deletes.is_empty());
        assert_eq!(
            plan.downloads,
            vec![
                RangeRequest {
                    pack: 1,
                    start: 16,
                    len: 300,
                    chunks: vec![0, 1]
                },
                RangeRequest {
                    pack: 2,
                    start: 16,
                    len: 300,
                    chunks: vec![2]
                },
            ]
        );
        // Chunk 0 goes to a/dup and a/x.
        assert_eq!(plan.targets.get(&0).unwrap().len(), 2);
        assert_eq!(plan.bytes_to_download, 600);
        assert_eq!(plan.bytes_to_write, 100 + 300 + 300);
        let s = plan.summary(&idx);
        assert_eq!((s.files_to_write, s.dirs_to_create, s.requests), (3, 1, 2));
    }

    #[test]
    fn unchanged_files_are_left_alone_and_extras_deleted_deepest_first() {
        let idx = index();
        let mut tree = LocalTree::default();
        let mut content = LocalContent::default();
        tree.insert("a".into(), LocalKind::Dir { mode: 0o755 });
        for (p, c) in [("a/dup", vec![0]), ("a/x", vec![0, 1]), ("b", vec![2])] {
            hold_in_place(&idx, &mut tree, &mut content, p, &c);
        }
        tree.insert("old".into(), LocalKind::Dir { mode: 0o755 });
        tree.insert("old/deep".into(), LocalKind::File(stat(1)));
        tree.insert("zlink".into(), LocalKind::Symlink);
        let plan = SyncPlan::build(&idx, &tree, &content, false);
        assert_eq!(plan.unchanged.len(), 3);
        assert!(plan.writes.is_empty() && plan.downloads.is_empty() && plan.touch.is_empty());
        let dels: Vec<_> = plan.deletes.iter().map(|d| d.path.clone()).collect();
        assert_eq!(
            dels,
            [PathBuf::from("old/deep"), "old".into(), "zlink".into()]
        );
        let s = plan.summary(&idx);
        assert_eq!((s.files_to_delete, s.dirs_to_delete), (2, 1));
        let kept = SyncPlan::build(&idx, &tree, &content, true);
        assert!(kept.deletes.is_empty());
        // 2 of the 5 files (a symlink counts) held: not a mass delete.
        assert_eq!(plan.mass_delete(&tree), None);
    }

    #[test]
    fn deleting_more_than_half_of_the_files_held_is_a_mass_delete() {
        let idx = index();
        let mut tree = LocalTree::default();
        let mut content = LocalContent::default();
        hold_in_place(&idx, &mut tree, &mut content, "b", &[2]);
        for i in 0..2 {
            tree.insert(format!("gone{i}").into(), LocalKind::File(stat(1)));
        }
        // Deleting 2 of 3: refused without a confirmation.
        let plan = SyncPlan::build(&idx, &tree, &content, false);
        assert_eq!(plan.mass_delete(&tree), Some((2, 3)));
        // Exactly half is not more than half.
        tree.insert("also held".into(), LocalKind::File(stat(1)));
        let mut plan = SyncPlan::build(&idx, &tree, &content, false);
        plan.deletes.retain(|d| d.path != Path::new("also held"));
        assert_eq!(plan.mass_delete(&tree), None);
        // Nothing held, nothing deleted: nothing to refuse.
        let empty = SyncPlan::build(&idx, &LocalTree::default(), &content, false);
        assert_eq!(empty.mass_delete(&LocalTree::default()), None);
    }

    #[test]
    fn only_directories_something_happens_in_or_to_are_looked_at() {
        let mut idx = index();
        let dir = |p: &str, mode: u32| Entry {
            path: rp(p),
            kind: EntryKind::Dir(DirEntry { mode }),
        };
        idx.entries.insert(1, dir("a/q", 0o755));
        idx.entries.push(dir("c", 0o700));
        idx.entries.push(dir("c/d", 0o755));
        idx.entries.push(dir("e", 0o755));
        idx.entries
            .sort_by(|x, y| x.path.as_str().cmp(y.path.as_str()));
        let mut tree = LocalTree::default();
        let mut content = LocalContent::default();
        for (p, mode) in [("a", 0o755), ("a/q", 0o755), ("c", 0o755), ("c/d", 0o755)] {
            tree.insert(p.into(), LocalKind::Dir { mode });
        }
        // a/dup and b are in place; a/x is missing; c/d holds an extra file; e is missing.
        for (p, c) in [("a/dup", vec![0]), ("b", vec![2])] {
            hold_in_place(&idx, &mut tree, &mut content, p, &c);
        }
        tree.insert("c/d/extra".into(), LocalKind::File(stat(1)));
        let plan = SyncPlan::build(&idx, &tree, &content, false);
        let dirs: Vec<(&str, bool)> = plan
            .dirs
            .iter()
            .map(|d| (d.dir(&idx).0.as_str(), d.create))
            .collect();
        // a: above a/x (written); c: its mode differs; c/d: above the extra; e: created.
        // a/q is as the index wants it and nothing happens below it.
        assert_eq!(
            dirs,
            [("a", false), ("c", false), ("c/d", false), ("e", true)]
        );
        // With nothing settled (an empty DEST), every directory is created.
        let fresh = SyncPlan::build(&idx, &LocalTree::default(), &LocalContent::default(), false);
        assert_eq!(fresh.dirs.len(), 5);
    }

    #[test]
    fn renamed_file_is_reused_locally() {
        let idx = index();
        // The content of a/x sits at "renamed" (an extra, to be deleted); b is missing.
        let mut tree = LocalTree::default();
        let mut content = LocalContent::default();
        tree.insert("renamed".into(), LocalKind::File(stat(300)));
        content.learnt.insert(
            "renamed".into(),
            KnownFile {
                hash: file_hash(&idx, "a/x"),
                stat: stat(300),
                chunks: Some(layout(&idx, &[0, 1])),
            },
        );
        let plan = SyncPlan::build(&idx, &tree, &content, false);
        assert_eq!(plan.writes.len(), 3);
        let copied: Vec<u32> = plan.copies.iter().map(|c| c.chunk).collect();
        assert_eq!(copied, [0, 1]);
        assert_eq!(plan.copies[1].offset, 100);
        assert_eq!(plan.bytes_to_reuse, 100 * 2 + 200);
        assert_eq!(plan.downloads.len(), 1);
        assert_eq!(plan.downloads[0].pack, 2);
        assert_eq!(plan.deletes[0].path, PathBuf::from("renamed"));
        // The directory "a" is missing and gets created.
        assert!(plan.dirs[0].create);
    }

    #[test]
    fn things_in_the_way_are_conflicts_and_metadata_drift_is_touched() {
        let idx = index();
        let mut tree = LocalTree::default();
        let mut content = LocalContent::default();
        tree.insert("a".into(), LocalKind::Symlink);
        tree.insert("b".into(), LocalKind::File(stat(300)));
        let mut st = stat(300);
        st.mode = 0o600;
        content.learnt.insert(
            "b".into(),
            KnownFile {
                hash: file_hash(&idx, "b"),
                stat: st,
                chunks: None,
            },
        );
        let plan = SyncPlan::build(&idx, &tree, &content, true);
        assert_eq!(plan.conflicts.len(), 1);
        assert_eq!(plan.conflicts[0].kind, "symlink");
        assert_eq!(plan.unchanged, vec![3]);
        assert_eq!(plan.touch.len(), 1);
        assert_eq!(plan.touch[0].file(&idx).1.mode & 0o7777, 0o644);
    }

    #[test]
    fn coalescing_respects_gap_and_size_limits() {
        let mut idx = index();
        idx.chunks = vec![
            chunk(0, 7, 0, 100),
            chunk(1, 7, 100, 100),   // adjacent
            chunk(2, 7, 250, 100),   // gap 50
            chunk(3, 7, 1000, 100),  // gap 650
            chunk(4, 8, 1100, 100),  // other pack
            chunk(5, 7, 1100, 5000), // would make the run too long
        ];
        let r = coalesce(&idx, vec![5, 3, 4, 2, 1, 0, 1], 64, 4000);
        let runs: Vec<(u32, u64, u64, Vec<u32>)> = r
            .into_iter()
            .map(|r| (r.pack, r.start, r.len, r.chunks))
            .collect();
        assert_eq!(
            runs,
            vec![
                (7, 0, 350, vec![0, 1, 2]),
                (7, 1000, 100, vec![3]),
                (7, 1100, 5000, vec![5]),
                (8, 1100, 100, vec![4]),
            ]
        );
        // With a generous limit everything in pack 7 is one request.
        let r = coalesce(&idx, vec![0, 1, 2, 3, 5], 1 << 20, 1 << 20);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].start, r[0].len), (0, 6100));
    }
}
