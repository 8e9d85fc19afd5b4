//! [`IndexDelta`]: what changed in a subtree between two revisions, so that a client holding
//! revision M fetches only the changed entries to reach revision N, not the whole index.
//!
//! The master computes a delta with [`IndexDelta::between`]; the client rebuilds N with
//! [`IndexDelta::apply`] on the index it holds. The rebuilt index must have exactly the entries
//! of N: the delta carries [`entries_digest`] of N, the client recomputes it over what it built,
//! and refuses the result on any difference (it then fetches the whole index).
//!
//! # Envelope (format version 1)
//!
//! The same as an index's (`docs/FORMATS.md`), with the magic `"HUMLIDXD"`:
//! `magic | u32 version | u32 flags | u64 body length | zstd(postcard(IndexDelta)) | u32 sig len | sig`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::chunk::ChunkerConfig;
use crate::index::{
    ChunkLocation, Entry, EntryKind, FileEntry, Index, IndexError, PackInfo, decode_streaming,
    envelope_body, own_chunks, packs_of, seal_envelope,
};
use crate::{Hash, RelPath};

/// First bytes of every encoded delta.
pub const DELTA_MAGIC: &[u8; 8] = b"HUMLIDXD";
/// The delta format this code writes and reads (it carries no info section: see
/// [`IndexDelta::apply`]).
pub const DELTA_FORMAT_VERSION: u32 = 1;

/// Chunk references the runs of a delta's patches may build beyond twice those the base and the
/// delta list (65,536 copies of 64 KiB chunks are 4 GiB of new content). A delta needing more
/// is refused, and the client fetches the whole index instead; so the memory a delta makes the
/// client spend stays proportional to what it holds and what it received (3.5 MiB besides).
pub const PATCH_SLACK: u64 = 1 << 16;

/// The changes from one revision of a subtree to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexDelta {
    /// The revision the client must hold.
    pub base_revision: u64,
    /// The revision this delta leads to.
    pub revision: u64,
    /// When `revision` was built.
    pub created_unix: i64,
    /// The chunker of `revision` (the base must have used the same).
    pub chunker: ChunkerConfig,
    /// The subtree (same for both).
    pub root: Option<RelPath>,
    /// Paths of the base that `revision` no longer has.
    pub removed: Vec<RelPath>,
    /// Entries that are new or differ, sorted by path; file chunk lists index into `chunks`,
    /// except for files listed in `patches`, whose chunk lists are empty here.
    pub upserted: Vec<Entry>,
    /// Changed files whose chunk list is described as runs over the base file's list.
    pub patches: Vec<FilePatch>,
    /// Locations of the chunks the upserted files use.
    pub chunks: Vec<ChunkLocation>,
    /// Packs those chunks live in, sorted by number.
    pub packs: Vec<PackInfo>,
    /// [`entries_digest`] of `revision`: what the rebuilt index must match.
    pub entries_digest: Hash,
}

/// The chunk list of a changed file, as runs: most of a large file's chunks are the ones it
/// had, so only the runs and the new chunks travel, not a location per chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePatch {
    /// Position of the file in [`IndexDelta::upserted`].
    pub entry: u32,
    /// The file's chunks, in order.
    pub runs: Vec<ChunkRun>,
}

/// A run of a patched file's chunk list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkRun {
    /// `count` chunks of the base file's list, from position `from`.
    Old {
        /// First position in the base file's chunk list.
        from: u32,
        /// How many.
        count: u32,
    },
    /// `count` chunks of [`IndexDelta::chunks`], from position `from`.
    New {
        /// First position in the delta's chunk table.
        from: u32,
        /// How many.
        count: u32,
    },
}

/// Describes `new` as runs over `old` (same chunk location = same chunk), adding the chunks
/// `old` lacks to `table`. Returns `None` when that would not be shorter than listing them.
fn runs_over(
    old: &[ChunkLocation],
    new: &[ChunkLocation],
    table: &mut ChunkTable,
) -> Option<Vec<ChunkRun>> {
    let mut first_at: HashMap<Hash, u32> = HashMap::new();
    for (i, c) in old.iter().enumerate() {
        first_at.entry(c.hash).or_insert(i as u32);
    }
    let mut runs: Vec<ChunkRun> = Vec::new();
    for c in new {
        let at = first_at
            .get(&c.hash)
            .copied()
            .filter(|&j| old[j as usize] == *c);
        match (at, runs.last_mut()) {
            // Continue a copy run when the next old chunk is the one wanted.
            (Some(_), Some(ChunkRun::Old { from, count }))
                if old.get((*from + *count) as usize) == Some(c) =>
            {
                *count += 1;
            }
            (Some(j), _) => runs.push(ChunkRun::Old { from: j, count: 1 }),
            (None, last) => {
                let pos = table.add(*c);
                match last {
                    Some(ChunkRun::New { from, count }) if *from + *count == pos => *count += 1,
                    _ => runs.push(ChunkRun::New {
                        from: pos,
                        count: 1,
                    }),
                }
            }
        }
    }
    (runs.len() * 2 < new.len()).then_some(runs)
}

/// A file or directory with its chunk locations resolved, comparable across indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Resolved {
    Dir(u32),
    File {
        size: u64,
        mode: u32,
        mtime_ns: i64,
        hash: Hash,
        chunks: Vec<ChunkLocation>,
    },
}

fn resolve(index: &Index, kind: &EntryKind) -> Resolved {
    match kind {
        EntryKind::Dir(d) => Resolved::Dir(d.mode),
        EntryKind::File(f) => Resolved::File {
            size: f.size,
            mode: f.mode,
            mtime_ns: f.mtime_ns,
            hash: f.hash,
            chunks: f
                .chunks
                .iter()
                .map(|&ci| index.chunks[ci as usize])
                .collect(),
        },
    }
}

/// A digest of an index's entries with their chunk locations resolved: equal digests mean the
/// same tree, the same content and the same places to fetch it from, however the chunk tables
/// are ordered. CPU-bound (linear).
pub fn entries_digest(index: &Index) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"hummel entries v1\0");
    for e in &index.entries {
        h.update(e.path.as_str().as_bytes());
        h.update(&[0]);
        match resolve(index, &e.kind) {
            Resolved::Dir(mode) => {
                h.update(b"d");
                h.update(&mode.to_le_bytes());
            }
            Resolved::File {
                size,
                mode,
                mtime_ns,
                hash,
                chunks,
            } => {
                h.update(b"f");
                h.update(&size.to_le_bytes());
                h.update(&mode.to_le_bytes());
                h.update(&mtime_ns.to_le_bytes());
                h.update(hash.as_bytes());
                h.update(&(chunks.len() as u64).to_le_bytes());
                for c in chunks {
                    h.update(c.hash.as_bytes());
                    h.update(&c.pack.to_le_bytes());
                    h.update(&c.offset.to_le_bytes());
                    h.update(&c.stored_len.to_le_bytes());
                    h.update(&c.len.to_le_bytes());
                    h.update(&[c.codec as u8]);
                }
            }
        }
    }
    h.finalize().into()
}

/// Collects chunk locations into a table without duplicates, remembering each one's position.
#[derive(Default)]
struct ChunkTable {
    chunks: Vec<ChunkLocation>,
    positions: HashMap<Hash, u32>,
}

impl ChunkTable {
    fn add(&mut self, c: ChunkLocation) -> u32 {
        *self.positions.entry(c.hash).or_insert_with(|| {
            self.chunks.push(c);
            (self.chunks.len() - 1) as u32
        })
    }

    /// Forgets the chunks added after the first `len`.
    fn truncate(&mut self, len: usize) {
        for c in self.chunks.drain(len..) {
            self.positions.remove(&c.hash);
        }
    }

    fn entry(&mut self, path: RelPath, r: &Resolved) -> Entry {
        let kind = match r {
            Resolved::Dir(mode) => EntryKind::Dir(crate::index::DirEntry { mode: *mode }),
            Resolved::File {
                size,
                mode,
                mtime_ns,
                hash,
                chunks,
            } => EntryKind::File(FileEntry {
                size: *size,
                mode: *mode,
                mtime_ns: *mtime_ns,
                hash: *hash,
                chunks: chunks.iter().map(|c| self.add(*c)).collect(),
            }),
        };
        Entry { path, kind }
    }

    fn packs(&self, known: &[&[PackInfo]]) -> Vec<PackInfo> {
        packs_of(&self.chunks, known)
    }
}

impl IndexDelta {
    /// The changes from `base` to `target`, or `None` when they cannot be expressed as a delta
    /// (different subtree or chunker). CPU-bound (linear).
    pub fn between(base: &Index, target: &Index) -> Option<IndexDelta> {
        if base.root != target.root || base.chunker != target.chunker {
            return None;
        }
        let old: HashMap<&str, Resolved> = base
            .entries
            .iter()
            .map(|e| (e.path.as_str(), resolve(base, &e.kind)))
            .collect();
        let mut table = ChunkTable::default();
        let mut upserted = Vec::new();
        let mut patches = Vec::new();
        for e in &target.entries {
            let r = resolve(target, &e.kind);
            let before = old.get(e.path.as_str());
            if before == Some(&r) {
                continue;
            }
            if let (
                Some(Resolved::File {
                    chunks: old_chunks, ..
                }),
                Resolved::File {
                    size,
                    mode,
                    mtime_ns,
                    hash,
                    chunks,
                },
            ) = (before, &r)
            {
                let mark = table.chunks.len();
                if let Some(runs) = runs_over(old_chunks, chunks, &mut table) {
                    patches.push(FilePatch {
                        entry: upserted.len() as u32,
                        runs,
                    });
                    upserted.push(Entry {
                        path: e.path.clone(),
                        kind: EntryKind::File(FileEntry {
                            size: *size,
                            mode: *mode,
                            mtime_ns: *mtime_ns,
                            hash: *hash,
                            chunks: Vec::new(),
                        }),
                    });
                    continue;
                }
                table.truncate(mark);
            }
            upserted.push(table.entry(e.path.clone(), &r));
        }
        let removed = base
            .entries
            .iter()
            .filter(|e| target.get(&e.path).is_none())
            .map(|e| e.path.clone())
            .collect();
        let packs = table.packs(&[&target.packs]);
        Some(IndexDelta {
            base_revision: base.revision,
            revision: target.revision,
            created_unix: target.created_unix,
            chunker: target.chunker,
            root: target.root.clone(),
            removed,
            upserted,
            patches,
            chunks: table.chunks,
            packs,
            entries_digest: entries_digest(target),
        })
    }

    /// Rebuilds the target revision from `base`; refuses a delta for another base, a result that
    /// does not validate, or one whose entries differ from what the master described.
    /// CPU-bound (linear). See [`IndexDelta::apply_owned`].
    pub fn apply(&self, base: &Index) -> Result<Index, IndexError> {
        self.apply_owned(base.clone()).map(|(index, _)| index)
    }

    /// [`IndexDelta::apply`], taking `base` apart instead of copying it: the rebuilt index keeps
    /// `base`'s entries and chunk table where they did not change, so the two never take memory
    /// at once (~100 MB each at 500,000 files). Returns the rebuilt index and what `base` had
    /// that it no longer has: the entries removed or replaced (sorted, with their own chunk and
    /// pack tables; not validated: parents may be missing). CPU-bound (linear).
    pub fn apply_owned(&self, base: Index) -> Result<(Index, Index), IndexError> {
        let bad = |m: &str| Err(IndexError::Inconsistent(format!("index delta: {m}")));
        if base.revision != self.base_revision
            || base.root != self.root
            || base.chunker != self.chunker
        {
            return bad("it is not for the index held");
        }
        for e in &self.upserted {
            if let EntryKind::File(f) = &e.kind
                && f.chunks.iter().any(|&ci| ci as usize >= self.chunks.len())
            {
                return bad("chunk reference out of range");
            }
        }
        let base_file = |path: &RelPath| {
            base.entries
                .binary_search_by(|e| e.path.as_str().cmp(path.as_str()))
                .ok()
                .and_then(|k| match &base.entries[k].kind {
                    EntryKind::File(f) => Some(f),
                    EntryKind::Dir(_) => None,
                })
        };
        // The chunk lists of the upserted entries, resolved to locations.
        let mut lists: Vec<Option<Vec<ChunkLocation>>> = self
            .upserted
            .iter()
            .map(|e| match &e.kind {
                EntryKind::File(f) => Some(
                    f.chunks
                        .iter()
                        .map(|&ci| self.chunks[ci as usize])
                        .collect(),
                ),
                EntryKind::Dir(_) => None,
            })
            .collect();
        // A run costs a few bytes but may copy a whole chunk list, so what the runs may build
        // is bounded by what the base and the delta list themselves (honest patches copy about
        // the base's chunks once), not by the file sizes they claim.
        let listed = |entries: &[Entry]| -> u64 {
            entries
                .iter()
                .map(|e| match &e.kind {
                    EntryKind::File(f) => f.chunks.len() as u64,
                    EntryKind::Dir(_) => 0,
                })
                .sum()
        };
        let mut budget = 2 * (listed(&base.entries) + listed(&self.upserted))
            + 2 * self.chunks.len() as u64
            + PATCH_SLACK;
        let mut previous = None;
        for p in &self.patches {
            if previous.is_some_and(|prev| prev >= p.entry) {
                return bad("patches not sorted by entry or duplicated");
            }
            previous = Some(p.entry);
            let Some(e) = self.upserted.get(p.entry as usize) else {
                return bad("patch for an entry that does not exist");
            };
            if !matches!(e.kind, EntryKind::File(_)) {
                return bad("patch for a directory");
            }
            let Some(old) = base_file(&e.path) else {
                return bad("patch for a file the base does not have");
            };
            let mut list = Vec::new();
            for run in &p.runs {
                let (from, count, from_base) = match *run {
                    ChunkRun::Old { from, count } => (from, count, true),
                    ChunkRun::New { from, count } => (from, count, false),
                };
                let range = from as usize..(from as usize).saturating_add(count as usize);
                let len = if from_base {
                    old.chunks.get(range.clone()).map(<[u32]>::len)
                } else {
                    self.chunks.get(range.clone()).map(<[ChunkLocation]>::len)
                };
                let Some(len) = len else {
                    return bad("chunk run out of range");
                };
                budget = match budget.checked_sub(len as u64) {
                    Some(left) => left,
                    None => return bad("its runs describe more chunks than it could hold"),
                };
                if from_base {
                    list.extend(old.chunks[range].iter().map(|&ci| base.chunks[ci as usize]));
                } else {
                    list.extend_from_slice(&self.chunks[range]);
                }
            }
            if let Some(slot) = lists.get_mut(p.entry as usize) {
                *slot = Some(list);
            }
        }

        // The chunk table: `base`'s, in place, with the chunks it lacks appended.
        let Index {
            entries: base_entries,
            chunks: mut table,
            packs: base_packs,
            revision: base_revision,
            created_unix: base_created,
            info: base_info,
            ..
        } = base;
        let mut positions: HashMap<Hash, u32> = lists
            .iter()
            .flatten()
            .flatten()
            .map(|c| (c.hash, u32::MAX))
            .collect();
        for (i, c) in table.iter().enumerate() {
            if let Some(p) = positions.get_mut(&c.hash)
                && *p == u32::MAX
            {
                *p = i as u32;
            }
        }
        let mut upserts: Vec<Entry> = Vec::with_capacity(self.upserted.len());
        for (e, list) in self.upserted.iter().zip(lists) {
            let kind = match (&e.kind, list) {
                (EntryKind::File(f), Some(list)) => EntryKind::File(FileEntry {
                    size: f.size,
                    mode: f.mode,
                    mtime_ns: f.mtime_ns,
                    hash: f.hash,
                    chunks: list
                        .iter()
                        .map(|c| {
                            let p = positions.get_mut(&c.hash).expect("listed above");
                            if *p == u32::MAX {
                                *p = table.len() as u32;
                                table.push(*c);
                            }
                            *p
                        })
                        .collect(),
                }),
                (kind, _) => kind.clone(),
            };
            upserts.push(Entry {
                path: e.path.clone(),
                kind,
            });
        }
        drop(positions);
        // In place: removals, then upserts over the entries they replace, then new paths
        // appended and sorted in. A second vector of entries would double the peak.
        let mut entries = base_entries;
        let mut removed: Vec<&str> = self.removed.iter().map(RelPath::as_str).collect();
        removed.sort_unstable();
        let mut replaced: Vec<Entry> = if removed.is_empty() {
            Vec::new()
        } else {
            entries
                .extract_if(.., |e| removed.binary_search(&e.path.as_str()).is_ok())
                .collect()
        };
        let mut inserted = Vec::new();
        for u in upserts {
            match entries.binary_search_by(|e| e.path.as_str().cmp(u.path.as_str())) {
                Ok(k) => replaced.push(std::mem::replace(&mut entries[k], u)),
                Err(_) => inserted.push(u),
            }
        }
        if !inserted.is_empty() {
            entries.extend(inserted);
            entries.sort_unstable_by(|a, b| a.path.as_str().cmp(b.path.as_str()));
            entries.dedup_by(|a, b| a.path == b.path);
        }
        replaced.sort_unstable_by(|a, b| a.path.as_str().cmp(b.path.as_str()));

        // What `base` had and the rebuilt index lacks, with its own tables.
        let remnant = {
            let chunks = own_chunks(&mut replaced, &table);
            let packs = packs_of(&chunks, &[&base_packs]);
            Index {
                revision: base_revision,
                created_unix: base_created,
                chunker: self.chunker,
                root: self.root.clone(),
                entries: replaced,
                chunks,
                packs,
                info: base_info.clone(),
            }
        };

        // Only the chunks some entry uses stay, in their order.
        let mut used = vec![false; table.len()];
        for e in &entries {
            if let EntryKind::File(f) = &e.kind {
                for &ci in &f.chunks {
                    used[ci as usize] = true;
                }
            }
        }
        let mut renumber = vec![u32::MAX; table.len()];
        let mut kept = 0u32;
        for (i, u) in used.iter().enumerate() {
            if *u {
                renumber[i] = kept;
                kept += 1;
            }
        }
        let mut i = 0;
        table.retain(|_| {
            i += 1;
            used[i - 1]
        });
        table.shrink_to_fit();
        drop(used);
        for e in &mut entries {
            if let EntryKind::File(f) = &mut e.kind {
                for ci in &mut f.chunks {
                    *ci = renumber[*ci as usize];
                }
            }
        }
        drop(renumber);
        let packs = packs_of(&table, &[&base_packs, &self.packs]);
        let index = Index {
            revision: self.revision,
            created_unix: self.created_unix,
            chunker: self.chunker,
            root: self.root.clone(),
            entries,
            chunks: table,
            packs,
            // A delta (format 1) carries no info section: the base's is kept, and a revision
            // whose info changed leads to another tree digest than the signed one, so the
            // client fetches the whole index instead.
            info: base_info,
        };
        index.validate()?;
        if entries_digest(&index) != self.entries_digest {
            return bad("the rebuilt index differs from the revision described");
        }
        Ok((index, remnant))
    }
}

/// Encodes a delta into its versioned envelope. CPU-bound.
pub fn encode_delta(delta: &IndexDelta) -> Vec<u8> {
    seal_envelope(
        DELTA_MAGIC,
        DELTA_FORMAT_VERSION,
        &postcard::to_stdvec(delta).expect("delta serialises"),
    )
}

/// True if `bytes` start like an encoded delta.
pub fn is_delta(bytes: &[u8]) -> bool {
    bytes.starts_with(DELTA_MAGIC)
}

/// Decodes an encoded delta; every size is bounded, and the body is decoded as it is
/// decompressed (a small body that decompresses to a gigabyte is never held). CPU-bound.
pub fn decode_delta(bytes: &[u8]) -> Result<IndexDelta, IndexError> {
    let (_, body) = envelope_body(DELTA_MAGIC, &[DELTA_FORMAT_VERSION], bytes, "index delta: ")?;
    decode_streaming(body)
        .map_err(|e| IndexError::Invalid(format!("index delta: undecodable body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Codec;
    use crate::index::DirEntry;
    use proptest::prelude::*;

    fn rp(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    /// An index from (path, Some(content seed) for a file / None for a dir); each file is one
    /// chunk per 100 bytes of its size, in pack `1 + seed % 3`.
    fn index_of(revision: u64, tree: &[(&str, Option<(u64, u8)>)]) -> Index {
        let mut table = ChunkTable::default();
        let mut entries = Vec::new();
        let mut sorted: Vec<_> = tree.to_vec();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        for (path, file) in sorted {
            let r = match file {
                None => Resolved::Dir(0o755),
                Some((size, seed)) => {
                    let chunks = (0..size.div_ceil(100))
                        .map(|i| ChunkLocation {
                            // Content-addressed: the id determines the length.
                            hash: Hash::of(&[&[seed, i as u8][..], &size.to_le_bytes()].concat()),
                            pack: 1 + u32::from(seed % 3),
                            offset: 16 + i * 100,
                            stored_len: (size - i * 100).min(100) as u32,
                            len: (size - i * 100).min(100) as u32,
                            codec: Codec::Raw,
                        })
                        .collect();
                    Resolved::File {
                        size,
                        mode: 0o644,
                        mtime_ns: i64::from(seed),
                        hash: Hash::of(&[seed]),
                        chunks,
                    }
                }
            };
            entries.push(table.entry(rp(path), &r));
        }
        let packs = (1..=3)
            .map(|n| PackInfo {
                number: n,
                hash: Hash::of(&n.to_le_bytes()),
                size: 1 << 20,
            })
            .filter(|p| table.chunks.iter().any(|c| c.pack == p.number))
            .collect();
        let idx = Index {
            revision,
            created_unix: revision as i64,
            chunker: ChunkerConfig::default(),
            root: None,
            entries,
            chunks: table.chunks,
            packs,
            info: Default::default(),
        };
        idx.validate().unwrap();
        idx
    }

    #[test]
    fn small_change_small_delta_and_exact_rebuild() {
        let a = index_of(
            1,
            &[
                ("d", None),
                ("d/x", Some((250, 1))),
                ("d/y", Some((300, 2))),
                ("z", Some((0, 3))),
                ("gone", Some((50, 4))),
            ],
        );
        let b = index_of(
            2,
            &[
                ("d", None),
                ("d/x", Some((250, 1))),
                ("d/y", Some((320, 9))),
                ("z", Some((0, 3))),
                ("new", None),
                ("new/f", Some((10, 5))),
            ],
        );
        let d = IndexDelta::between(&a, &b).unwrap();
        let paths: Vec<_> = d.upserted.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["d/y", "new", "new/f"]);
        assert_eq!(d.removed, [rp("gone")]);
        let rebuilt = d.apply(&a).unwrap();
        assert_eq!(entries_digest(&rebuilt), entries_digest(&b));
        // Taking the base apart gives the same index, and what the base lost, resolvable.
        let (owned, remnant) = d.apply_owned(a.clone()).unwrap();
        assert_eq!(owned, rebuilt);
        let lost: Vec<_> = remnant.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(lost, ["d/y", "gone"]);
        for e in &remnant.entries {
            let was = a.get(&e.path).unwrap();
            assert_eq!(resolve(&remnant, &e.kind), resolve(&a, &was.kind));
        }
        assert_eq!(remnant.revision, 1);
        let bytes = encode_delta(&d);
        assert!(is_delta(&bytes));
        assert_eq!(decode_delta(&bytes).unwrap(), d);
    }

    #[test]
    fn refuses_the_wrong_base_and_tampering() {
        let a = index_of(1, &[("x", Some((100, 1)))]);
        let b = index_of(2, &[("x", Some((100, 2)))]);
        let c = index_of(3, &[("x", Some((100, 3)))]);
        let d = IndexDelta::between(&a, &b).unwrap();
        assert!(d.apply(&c).is_err());
        let mut t = d.clone();
        if let EntryKind::File(f) = &mut t.upserted[0].kind {
            f.mtime_ns += 1;
        }
        assert!(
            t.apply(&a).is_err(),
            "entries differing from the digest are refused"
        );
        let mut t = d.clone();
        t.chunks.clear();
        assert!(t.apply(&a).is_err());
        let mut t = d;
        t.upserted.push(Entry {
            path: rp("orphan/child"),
            kind: EntryKind::Dir(DirEntry { mode: 0o755 }),
        });
        assert!(t.apply(&a).is_err());
    }

    /// A one-file index whose chunks are `ids` (each 100 bytes, in pack 1).
    fn one_file(revision: u64, ids: &[u32]) -> Index {
        let mut table = ChunkTable::default();
        let chunks: Vec<ChunkLocation> = ids
            .iter()
            .map(|&id| ChunkLocation {
                hash: Hash::of(&id.to_le_bytes()),
                pack: 1,
                offset: 16 + u64::from(id) * 100,
                stored_len: 100,
                len: 100,
                codec: Codec::Raw,
            })
            .collect();
        let r = Resolved::File {
            size: 100 * ids.len() as u64,
            mode: 0o644,
            mtime_ns: revision as i64,
            hash: Hash::of(&revision.to_le_bytes()),
            chunks,
        };
        let entries = vec![table.entry(rp("big.pbo"), &r)];
        let idx = Index {
            revision,
            created_unix: 0,
            chunker: ChunkerConfig::default(),
            root: None,
            entries,
            chunks: table.chunks,
            packs: vec![PackInfo {
                number: 1,
                hash: Hash::of(b"p"),
                size: 1 << 20,
            }],
            info: Default::default(),
        };
        idx.validate().unwrap();
        idx
    }

    #[test]
    fn a_changed_chunk_in_a_large_file_travels_alone() {
        let old: Vec<u32> = (0..100).collect();
        let mut new = old.clone();
        new[50] = 1000; // one chunk replaced in the middle
        new.insert(70, 1001); // one inserted further on
        let (a, b) = (one_file(1, &old), one_file(2, &new));
        let d = IndexDelta::between(&a, &b).unwrap();
        assert_eq!(d.chunks.len(), 2, "only the new chunks travel");
        assert_eq!(d.patches.len(), 1);
        assert_eq!(d.patches[0].runs.len(), 5, "{:?}", d.patches[0].runs);
        let rebuilt = d.apply(&a).unwrap();
        assert_eq!(entries_digest(&rebuilt), entries_digest(&b));
        assert!(
            encode_delta(&d).len() < 400,
            "{} bytes",
            encode_delta(&d).len()
        );
        // A run reaching past the base file is refused.
        let mut bad = d.clone();
        bad.patches[0].runs[0] = ChunkRun::Old {
            from: 90,
            count: 50,
        };
        assert!(bad.apply(&a).is_err());
    }

    /// Fuzzing's allocation check: runs cost a few bytes each but may copy a whole chunk list,
    /// so 40,000 runs of 5 bytes described 1.6 million chunk locations (90 MB) that were built
    /// before the size check refused them; a larger base file made it terabytes. Now the runs
    /// are bounded by what the base and the delta list, and refused before they are built.
    #[test]
    fn runs_cannot_describe_more_chunks_than_base_and_delta_hold() {
        let ids: Vec<u32> = (0..40).collect();
        let mut changed = ids.clone();
        changed[20] = 1000;
        let (a, b) = (one_file(1, &ids), one_file(2, &changed));
        let d = IndexDelta::between(&a, &b).unwrap();
        assert_eq!(d.patches.len(), 1);
        let mut bomb = d.clone();
        bomb.patches[0].runs = vec![ChunkRun::Old { from: 0, count: 40 }; 40_000];
        if let EntryKind::File(f) = &mut bomb.upserted[0].kind {
            f.size = 100 * 40 * 40_000;
        }
        let bytes = encode_delta(&bomb);
        assert!(bytes.len() < 1000, "{} bytes", bytes.len());
        let err = decode_delta(&bytes).unwrap().apply(&a).unwrap_err();
        assert!(err.to_string().contains("more chunks than"), "{err}");
        // A patch listed twice, or one for a directory, is refused too.
        let mut twice = d.clone();
        twice.patches.push(twice.patches[0].clone());
        assert!(twice.apply(&a).is_err());
        // The honest delta still rebuilds.
        assert_eq!(entries_digest(&d.apply(&a).unwrap()), entries_digest(&b));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// For any two trees, applying the delta to the first rebuilds the second exactly.
        #[test]
        fn apply_between_is_identity(
            a in proptest::collection::btree_map("[a-c]{1,2}", proptest::option::of((0u64..400, 0u8..6)), 0..12),
            b in proptest::collection::btree_map("[a-c]{1,2}", proptest::option::of((0u64..400, 0u8..6)), 0..12),
        ) {
            // Flat trees (no folders) keep parents valid; folders are covered above.
            let a: Vec<(&str, Option<(u64, u8)>)> = a.iter().map(|(k, v)| (k.as_str(), Some(v.unwrap_or((0, 0))))).collect();
            let b: Vec<(&str, Option<(u64, u8)>)> = b.iter().map(|(k, v)| (k.as_str(), Some(v.unwrap_or((0, 0))))).collect();
            let (ia, ib) = (index_of(1, &a), index_of(2, &b));
            let d = IndexDelta::between(&ia, &ib).unwrap();
            let (rebuilt, remnant) = d.apply_owned(ia.clone()).unwrap();
            prop_assert_eq!(entries_digest(&rebuilt), entries_digest(&ib));
            prop_assert_eq!(rebuilt.entries.len(), ib.entries.len());
            // Every chunk of the rebuilt table is used, once.
            let used: std::collections::BTreeSet<u32> = rebuilt.files().flat_map(|(_, f)| f.chunks.iter().copied()).collect();
            prop_assert_eq!(used.len(), rebuilt.chunks.len());
            // The remnant is exactly what the first tree had and the second has not, as it was.
            let lost: Vec<&str> = ia.entries.iter().filter(|e| ib.get(&e.path).map(|n| resolve(&ib, &n.kind)) != Some(resolve(&ia, &e.kind))).map(|e| e.path.as_str()).collect();
            let got: Vec<&str> = remnant.entries.iter().map(|e| e.path.as_str()).collect();
            prop_assert_eq!(got, lost);
            for e in &remnant.entries {
                prop_assert_eq!(resolve(&remnant, &e.kind), resolve(&ia, &ia.get(&e.path).unwrap().kind));
            }
        }
    }
}
