//! [`Index`]: an immutable, numbered revision of the repository tree, or a subtree of one.
//!
//! An index lists every directory (so empty folders are part of the tree) and every file with
//! its size, mode, mtime, BLAKE3 file hash and chunk list. Chunk lists are indexes into the
//! index's own chunk table, which says where each chunk lives: pack number, offset, stored
//! length, plain length and codec. Pack numbers are the master's enumeration of packs (the
//! seed's "enumeration instead of hashes"); the pack table maps them to pack hashes.
//!
//! # Envelope (format version 2)
//!
//! ```text
//! "HUMLIDX\0" | u32 LE format version | u32 LE flags (0) | u64 LE body length
//! body: zstd(postcard(Index))
//! u32 LE signature length | signature bytes (empty for now; signs the body)
//! ```
//!
//! Format 2 appends the info section ([`RepoInfo`]: name, description, sets) to format 1's
//! body; a format-1 index is still read, as one whose info says nothing.
//!
//! The identity of an index is the BLAKE3 of its body. [`decode`] bounds every size and runs
//! [`Index::validate`] before anything else may look at the index.

use std::collections::HashMap;
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::chunk::{ChunkerConfig, MAX_CHUNK_SIZE};
use crate::info::RepoInfo;
use crate::{Codec, Hash, RelPath};

/// First bytes of every encoded index.
pub const INDEX_MAGIC: &[u8; 8] = b"HUMLIDX\0";
/// The index format this code writes (it reads this one and format 1).
pub const INDEX_FORMAT_VERSION: u32 = 2;
/// The first index format, without the info section: still read.
pub const INDEX_FORMAT_V1: u32 = 1;
/// Largest encoded body a decoder accepts.
pub const MAX_INDEX_BODY: u64 = 256 << 20;
/// Largest decoded body a decoder accepts.
pub const MAX_INDEX_PLAIN: u64 = 1 << 30;
/// Largest signature a decoder accepts.
pub const MAX_SIGNATURE: u32 = 4096;
/// The client keeps its state here, below the destination; no index may use this name at its top.
pub const RESERVED_TOP_NAME: &str = ".hummel";

/// A revision, or a subtree of one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Revision number; grows with every build.
    pub revision: u64,
    /// When the build finished (seconds since the epoch).
    pub created_unix: i64,
    /// How files were cut into chunks.
    pub chunker: ChunkerConfig,
    /// The subtree this index covers (`None`: the whole repository). Entry paths are relative to it.
    pub root: Option<RelPath>,
    /// Directories and files, sorted by path, unique.
    pub entries: Vec<Entry>,
    /// Every chunk the files use, unique by hash.
    pub chunks: Vec<ChunkLocation>,
    /// Every pack the chunks live in, sorted by number.
    pub packs: Vec<PackInfo>,
    /// The repository's name, description and sets (format 2; empty in a format-1 index).
    /// The same in every subtree of a revision.
    pub info: RepoInfo,
}

/// Format 1 of [`Index`]: without the info section (read, never written).
#[derive(Deserialize)]
struct IndexV1 {
    revision: u64,
    created_unix: i64,
    chunker: ChunkerConfig,
    root: Option<RelPath>,
    entries: Vec<Entry>,
    chunks: Vec<ChunkLocation>,
    packs: Vec<PackInfo>,
}

impl From<IndexV1> for Index {
    fn from(v1: IndexV1) -> Index {
        Index {
            revision: v1.revision,
            created_unix: v1.created_unix,
            chunker: v1.chunker,
            root: v1.root,
            entries: v1.entries,
            chunks: v1.chunks,
            packs: v1.packs,
            info: RepoInfo::default(),
        }
    }
}

/// One directory or file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Path relative to the index root.
    pub path: RelPath,
    /// What it is.
    pub kind: EntryKind,
}

/// Directory or file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A directory.
    Dir(DirEntry),
    /// A regular file.
    File(FileEntry),
}

/// A directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// Unix permission bits.
    pub mode: u32,
}

/// A regular file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Size in bytes.
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// BLAKE3 of the content.
    pub hash: Hash,
    /// Positions in [`Index::chunks`], in file order.
    pub chunks: Vec<u32>,
}

/// Where a chunk lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkLocation {
    /// Chunk id.
    pub hash: Hash,
    /// Pack number.
    pub pack: u32,
    /// Offset in the pack.
    pub offset: u64,
    /// Stored length.
    pub stored_len: u32,
    /// Plain length.
    pub len: u32,
    /// Storage codec.
    pub codec: Codec,
}

/// A pack, by number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackInfo {
    /// The master's number for it.
    pub number: u32,
    /// BLAKE3 of the pack.
    pub hash: Hash,
    /// Size in bytes.
    pub size: u64,
}

/// An index that was refused.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Not an index, truncated, or too large.
    #[error("invalid index: {0}")]
    Invalid(String),
    /// Written by a newer Hummel.
    #[error(
        "index format version {0} is not supported (this build reads {INDEX_FORMAT_V1} and {INDEX_FORMAT_VERSION})"
    )]
    Version(u32),
    /// Decodes, but breaks a rule.
    #[error("inconsistent index: {0}")]
    Inconsistent(String),
}

impl Index {
    /// Files only.
    pub fn files(&self) -> impl Iterator<Item = (&RelPath, &FileEntry)> {
        self.entries.iter().filter_map(|e| match &e.kind {
            EntryKind::File(f) => Some((&e.path, f)),
            EntryKind::Dir(_) => None,
        })
    }

    /// Number of files.
    pub fn file_count(&self) -> usize {
        self.files().count()
    }

    /// Sum of file sizes.
    pub fn total_size(&self) -> u64 {
        self.files().map(|(_, f)| f.size).sum()
    }

    /// The entry at `path`, if any.
    pub fn get(&self, path: &RelPath) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(path.as_str()))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The pack with `number`, if listed.
    pub fn pack(&self, number: u32) -> Option<&PackInfo> {
        self.packs
            .binary_search_by_key(&number, |p| p.number)
            .ok()
            .map(|i| &self.packs[i])
    }

    /// The entries of this index that `newer` does not have as they are here (missing there,
    /// or a file with other content, size, mode or mtime), with their own chunk and pack
    /// tables: what a client held and will no longer, kept to find local data. Takes this
    /// index apart; the result is not validated (parents may be missing). CPU-bound (linear).
    pub fn lost_to(self, newer: &Index) -> Index {
        let kept = |e: &Entry| match (newer.get(&e.path).map(|n| &n.kind), &e.kind) {
            (Some(EntryKind::Dir(_)), EntryKind::Dir(_)) => true,
            (Some(EntryKind::File(n)), EntryKind::File(f)) => {
                (n.hash, n.size, n.mode, n.mtime_ns) == (f.hash, f.size, f.mode, f.mtime_ns)
            }
            _ => false,
        };
        let mut entries: Vec<Entry> = self.entries.into_iter().filter(|e| !kept(e)).collect();
        let chunks = own_chunks(&mut entries, &self.chunks);
        let packs = packs_of(&chunks, &[&self.packs]);
        Index {
            revision: self.revision,
            created_unix: self.created_unix,
            chunker: self.chunker,
            root: self.root,
            entries,
            chunks,
            packs,
            info: self.info,
        }
    }

    /// Checks every rule a decoder relies on: sorted unique valid paths, each parent present as a
    /// directory, chunk lists in range and summing to the file size, chunks unique by id and
    /// inside listed packs, sizes within bounds. CPU-bound (linear).
    pub fn validate(&self) -> Result<(), IndexError> {
        let bad = |m: String| Err(IndexError::Inconsistent(m));
        if self.chunker.validate().is_err() {
            return bad("chunker parameters out of range".into());
        }
        if let Err(e) = self.info.validate() {
            return bad(format!("info section: {e}"));
        }
        for w in self.packs.windows(2) {
            if w[0].number >= w[1].number {
                return bad("pack table not sorted".into());
            }
        }
        let mut ids: std::collections::HashSet<&Hash> =
            std::collections::HashSet::with_capacity(self.chunks.len());
        for (i, c) in self.chunks.iter().enumerate() {
            if !ids.insert(&c.hash) {
                return bad(format!("chunk {i} is listed twice ({})", c.hash));
            }
            let Some(p) = self.pack(c.pack) else {
                return bad(format!("chunk {i} refers to unknown pack {}", c.pack));
            };
            if c.len > MAX_CHUNK_SIZE || c.len == 0 {
                return bad(format!("chunk {i} has size {}", c.len));
            }
            let max_stored = c.len as u64 + c.len as u64 / 128 + 1024;
            if c.stored_len as u64 > max_stored || (c.codec == Codec::Raw && c.stored_len != c.len)
            {
                return bad(format!("chunk {i} has stored size {}", c.stored_len));
            }
            if c.offset
                .checked_add(c.stored_len as u64)
                .is_none_or(|end| end > p.size)
            {
                return bad(format!("chunk {i} lies outside pack {}", c.pack));
            }
        }
        let mut dirs: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 && self.entries[i - 1].path.as_str() >= e.path.as_str() {
                return bad(format!("entries not sorted or duplicated at {}", e.path));
            }
            if e.path.components().next() == Some(RESERVED_TOP_NAME) {
                return bad(format!(
                    "{} uses the reserved name {RESERVED_TOP_NAME}",
                    e.path
                ));
            }
            if let Some(parent) = e.path.parent()
                && !dirs.contains(parent.as_str())
            {
                return bad(format!("{} has no parent directory entry", e.path));
            }
            match &e.kind {
                EntryKind::Dir(_) => {
                    dirs.insert(e.path.as_str());
                }
                EntryKind::File(f) => {
                    let mut sum = 0u64;
                    for &ci in &f.chunks {
                        match self.chunks.get(ci as usize) {
                            Some(c) => sum += c.len as u64,
                            None => {
                                return bad(format!(
                                    "{} refers to chunk {ci} out of range",
                                    e.path
                                ));
                            }
                        }
                    }
                    if sum != f.size {
                        return bad(format!(
                            "{}: chunks sum to {sum}, file size is {}",
                            e.path, f.size
                        ));
                    }
                }
            }
        }
        // A sorted list puts "a/b" after "a.txt" but a parent is always a prefix, and prefixes sort
        // first, so the single pass above has seen every parent before its children.
        Ok(())
    }

    /// The subtree below `dir`, re-rooted so that its paths are relative to `dir`, with only the
    /// chunks and packs it uses. `None` when `dir` is not a directory of this index.
    pub fn subtree(&self, dir: &RelPath) -> Option<Index> {
        match self.get(dir) {
            Some(Entry {
                kind: EntryKind::Dir(_),
                ..
            }) => {}
            _ => return None,
        }
        let mut chunk_map: HashMap<u32, u32> = HashMap::new();
        let mut chunks = Vec::new();
        let mut entries = Vec::new();
        for e in &self.entries {
            let Some(rel) = e.path.strip_dir(dir) else {
                continue;
            };
            let kind = match &e.kind {
                EntryKind::Dir(d) => EntryKind::Dir(d.clone()),
                EntryKind::File(f) => {
                    let mut f = f.clone();
                    for ci in &mut f.chunks {
                        let next = chunks.len() as u32;
                        let new = *chunk_map.entry(*ci).or_insert_with(|| {
                            chunks.push(self.chunks[*ci as usize]);
                            next
                        });
                        *ci = new;
                    }
                    EntryKind::File(f)
                }
            };
            entries.push(Entry { path: rel, kind });
        }
        // "a/b" strip "a" keeps order except where a sibling like "a.x" sorted between; re-sort.
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let used: std::collections::BTreeSet<u32> =
            chunks.iter().map(|c: &ChunkLocation| c.pack).collect();
        let packs = self
            .packs
            .iter()
            .filter(|p| used.contains(&p.number))
            .copied()
            .collect();
        let root = match &self.root {
            Some(r) => r.join(dir),
            None => dir.clone(),
        };
        Some(Index {
            revision: self.revision,
            created_unix: self.created_unix,
            chunker: self.chunker,
            root: Some(root),
            entries,
            chunks,
            packs,
            info: self.info.clone(),
        })
    }
}

impl Index {
    /// The directories `dirs` with everything below them, at their own paths (the root stays),
    /// and their ancestors' directory entries, with only the chunks and packs they use: what a
    /// client syncing several subtrees into one folder applies. Errs with the first of `dirs`
    /// that is not a directory of this index. CPU-bound (linear).
    pub fn select(&self, dirs: &[RelPath]) -> Result<Index, RelPath> {
        let mut keep: std::collections::BTreeSet<&str> = Default::default();
        for d in dirs {
            match self.get(d) {
                Some(Entry {
                    kind: EntryKind::Dir(_),
                    ..
                }) => {}
                _ => return Err(d.clone()),
            }
            let mut up = d.parent();
            while let Some(p) = up {
                if let Some(e) = self.get(&p) {
                    keep.insert(e.path.as_str());
                }
                up = p.parent();
            }
        }
        let under = |path: &str| {
            dirs.iter().any(|d| {
                path == d.as_str()
                    || (path.starts_with(d.as_str()) && path.as_bytes()[d.as_str().len()] == b'/')
            })
        };
        let mut entries: Vec<Entry> = self
            .entries
            .iter()
            .filter(|e| keep.contains(e.path.as_str()) || under(e.path.as_str()))
            .cloned()
            .collect();
        let chunks = own_chunks(&mut entries, &self.chunks);
        let packs = packs_of(&chunks, &[&self.packs]);
        Ok(Index {
            revision: self.revision,
            created_unix: self.created_unix,
            chunker: self.chunker,
            root: self.root.clone(),
            entries,
            chunks,
            packs,
            info: self.info.clone(),
        })
    }
}

/// Gives `entries`, whose chunk lists point into `table`, a chunk table of their own: the
/// chunks they use, in first-use order, with the lists renumbered in place.
pub(crate) fn own_chunks(entries: &mut [Entry], table: &[ChunkLocation]) -> Vec<ChunkLocation> {
    let mut own: HashMap<u32, u32> = HashMap::new();
    let mut chunks = Vec::new();
    for e in entries {
        if let EntryKind::File(f) = &mut e.kind {
            for ci in &mut f.chunks {
                *ci = *own.entry(*ci).or_insert_with(|| {
                    chunks.push(table[*ci as usize]);
                    (chunks.len() - 1) as u32
                });
            }
        }
    }
    chunks
}

/// The packs `chunks` live in, from the pack tables `known` (later tables win), by number.
pub(crate) fn packs_of(chunks: &[ChunkLocation], known: &[&[PackInfo]]) -> Vec<PackInfo> {
    let used: std::collections::BTreeSet<u32> = chunks.iter().map(|c| c.pack).collect();
    let mut by_number: std::collections::BTreeMap<u32, PackInfo> = Default::default();
    for table in known {
        for p in table.iter().filter(|p| used.contains(&p.number)) {
            by_number.insert(p.number, *p);
        }
    }
    by_number.into_values().collect()
}

/// Encodes an index into its versioned envelope (no signature yet). CPU-bound.
pub fn encode(index: &Index) -> Vec<u8> {
    seal_envelope(
        INDEX_MAGIC,
        INDEX_FORMAT_VERSION,
        &postcard::to_stdvec(index).expect("index serialises"),
    )
}

/// The zstd level of [`encode_to`]. An index is mostly BLAKE3 hashes, which no level
/// compresses: level 1 costs a third of level 3's time for a body ~9 % larger (measured on a
/// 20,000-file index: 1.77 MB instead of 1.62).
pub const HELD_INDEX_LEVEL: i32 = 1;

/// Encodes an index into its envelope as [`encode`] does, streaming (at [`HELD_INDEX_LEVEL`]): neither the plain nor the
/// compressed body is held in memory (~44 MB and more at 500,000 files), which suits a client
/// keeping an index it rebuilt. The body may differ in bytes from [`encode`]'s (a streamed
/// zstd frame), never in what it decodes to. CPU-bound.
pub fn encode_to<W: std::io::Write + std::io::Seek>(
    index: &Index,
    out: &mut W,
) -> std::io::Result<()> {
    use std::io::SeekFrom;
    out.write_all(INDEX_MAGIC)?;
    out.write_all(&INDEX_FORMAT_VERSION.to_le_bytes())?;
    out.write_all(&0u32.to_le_bytes())?;
    let length_at = out.stream_position()?;
    out.write_all(&0u64.to_le_bytes())?;
    let body_start = out.stream_position()?;
    let mut encoder =
        zstd::stream::write::Encoder::new(std::io::BufWriter::new(&mut *out), HELD_INDEX_LEVEL)?;
    postcard::to_io(index, &mut encoder).map_err(std::io::Error::other)?;
    std::io::Write::flush(&mut encoder.finish()?)?;
    let body_end = out.stream_position()?;
    out.write_all(&0u32.to_le_bytes())?;
    let end = out.stream_position()?;
    out.seek(SeekFrom::Start(length_at))?;
    out.write_all(&(body_end - body_start).to_le_bytes())?;
    out.seek(SeekFrom::Start(end))?;
    Ok(())
}

/// Decodes and validates an encoded index; returns it with its identity (BLAKE3 of the body).
/// Every size is bounded. CPU-bound.
///
/// The body is decoded as it is decompressed, so the decompressed bytes (as large as the index
/// itself: ~100 MB at 500,000 files) are never held, not even to name the path at fault when
/// it fails: a small body that decompresses to a gigabyte costs no more than its index.
pub fn decode(bytes: &[u8]) -> Result<(Index, Hash), IndexError> {
    let (version, body) = envelope_body(INDEX_MAGIC, INDEX_VERSIONS, bytes, "")?;
    let index: Index = if version == INDEX_FORMAT_V1 {
        decode_streaming::<IndexV1>(body).map(Index::from)
    } else {
        decode_streaming(body)
    }
    .map_err(|e| explain_undecodable(body, e))?;
    index.validate()?;
    Ok((index, Hash::of(body)))
}

/// [`decode`] from a reader (a file): the encoded bytes are never held whole either, only
/// hashed as they pass. Returns the index and its identity.
pub fn decode_from<R: Read>(mut reader: R) -> Result<(Index, Hash), IndexError> {
    let invalid = |m: &str| IndexError::Invalid(m.to_string());
    let mut head = [0u8; 24];
    reader
        .read_exact(&mut head)
        .map_err(|_| invalid("bad magic or truncated"))?;
    if &head[..8] != INDEX_MAGIC {
        return Err(invalid("bad magic or truncated"));
    }
    let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    if !INDEX_VERSIONS.contains(&version) {
        return Err(IndexError::Version(version));
    }
    let body_len = u64::from_le_bytes(head[16..24].try_into().expect("8 bytes"));
    if body_len > MAX_INDEX_BODY {
        return Err(invalid("body length out of bounds"));
    }
    let mut body = HashingReader {
        inner: (&mut reader).take(body_len),
        hasher: blake3::Hasher::new(),
        read: 0,
    };
    let index: Result<Index, _> = (|| {
        let decoder = zstd::stream::read::Decoder::new(&mut body)
            .map_err(|_| postcard::Error::DeserializeUnexpectedEnd)?;
        let reader = std::io::BufReader::with_capacity(1 << 18, decoder.take(MAX_INDEX_PLAIN));
        let mut scratch = vec![0u8; DECODE_SCRATCH];
        if version == INDEX_FORMAT_V1 {
            postcard::from_io::<IndexV1, _>((reader, &mut scratch[..])).map(|(v, _)| v.into())
        } else {
            postcard::from_io((reader, &mut scratch[..])).map(|(v, _)| v)
        }
    })();
    let index = index.map_err(|e| invalid(&format!("undecodable body: {e}")))?;
    // What the decoder did not need of the body still counts for its identity.
    std::io::copy(&mut body, &mut std::io::sink()).map_err(|_| invalid("truncated body"))?;
    if body.read != body_len {
        return Err(invalid("truncated body"));
    }
    let id: Hash = body.hasher.finalize().into();
    let mut sig_len = [0u8; 4];
    reader
        .read_exact(&mut sig_len)
        .map_err(|_| invalid("signature length out of bounds"))?;
    let sig_len = u32::from_le_bytes(sig_len);
    if sig_len > MAX_SIGNATURE {
        return Err(invalid("signature length out of bounds"));
    }
    let mut sig = Vec::new();
    (&mut reader)
        .take(u64::from(sig_len) + 1)
        .read_to_end(&mut sig)
        .map_err(|_| invalid("signature length out of bounds"))?;
    if sig.len() != sig_len as usize {
        return Err(invalid("signature length out of bounds"));
    }
    index.validate()?;
    Ok((index, id))
}

/// A reader that hashes (and counts) what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    read: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Largest single item (a path, a hash) the streaming decoder reads at once; paths are at most
/// 4096 bytes.
const DECODE_SCRATCH: usize = 64 << 10;

/// Decodes postcard from the zstd `body` as it is decompressed, reading at most
/// [`MAX_INDEX_PLAIN`] bytes of it.
pub(crate) fn decode_streaming<T: serde::de::DeserializeOwned>(
    body: &[u8],
) -> Result<T, postcard::Error> {
    let decoder = zstd::stream::read::Decoder::with_buffer(body)
        .map_err(|_| postcard::Error::DeserializeUnexpectedEnd)?;
    // postcard reads a byte at a time: buffer the decompressed stream.
    let reader = std::io::BufReader::with_capacity(1 << 18, decoder.take(MAX_INDEX_PLAIN));
    let mut scratch = vec![0u8; DECODE_SCRATCH];
    let (value, _) = postcard::from_io((reader, &mut scratch[..]))?;
    Ok(value)
}

/// The index formats [`decode`] reads.
const INDEX_VERSIONS: &[u32] = &[INDEX_FORMAT_V1, INDEX_FORMAT_VERSION];

/// The envelope shared by indexes and index deltas: `magic | u32 version | u32 flags |
/// u64 body length | zstd(plain) | u32 signature length | signature` (no signature yet).
pub(crate) fn seal_envelope(magic: &[u8; 8], version: u32, plain: &[u8]) -> Vec<u8> {
    let body = zstd::bulk::compress(plain, 3).expect("zstd compresses in memory");
    let mut out = Vec::with_capacity(body.len() + 28);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&0u32.to_le_bytes());
    out
}

/// Checks an envelope with `magic` and one of `versions`, and returns its version and
/// compressed body. Every size is bounded; `what` prefixes error messages.
pub(crate) fn envelope_body<'a>(
    magic: &[u8; 8],
    versions: &[u32],
    bytes: &'a [u8],
    what: &str,
) -> Result<(u32, &'a [u8]), IndexError> {
    let invalid = |m: &str| IndexError::Invalid(format!("{what}{m}"));
    if bytes.len() < 28 || &bytes[..8] != magic {
        return Err(invalid("bad magic or truncated"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if !versions.contains(&version) {
        return Err(IndexError::Version(version));
    }
    let body_len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    if body_len > MAX_INDEX_BODY || 24 + body_len + 4 > bytes.len() as u64 {
        return Err(invalid("body length out of bounds"));
    }
    let body = &bytes[24..24 + body_len as usize];
    let rest = &bytes[24 + body_len as usize..];
    let sig_len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
    if sig_len > MAX_SIGNATURE || rest.len() != 4 + sig_len as usize {
        return Err(invalid("signature length out of bounds"));
    }
    Ok((version, body))
}

/// The decompressed `body`, at most [`MAX_INDEX_PLAIN`] bytes.
#[cfg(test)]
fn decompress(body: &[u8], what: &str) -> Result<Vec<u8>, IndexError> {
    let invalid = |m: &str| IndexError::Invalid(format!("{what}{m}"));
    let mut plain = Vec::new();
    zstd::stream::read::Decoder::new(body)
        .map_err(|_| invalid("undecodable body"))?
        .take(MAX_INDEX_PLAIN + 1)
        .read_to_end(&mut plain)
        .map_err(|_| invalid("undecodable body"))?;
    if plain.len() as u64 > MAX_INDEX_PLAIN {
        return Err(invalid("decoded body too large"));
    }
    Ok(plain)
}

/// The start of [`Index`] with paths as plain strings, to name the path that failed validation
/// (postcard drops the message of a custom deserialisation error).
#[derive(Deserialize)]
struct RawIndex {
    _revision: u64,
    _created_unix: i64,
    _chunker: ChunkerConfig,
    root: Option<String>,
    entries: FirstBadPath,
}

#[derive(Deserialize)]
struct RawEntry {
    path: String,
    _kind: EntryKind,
}

/// The first entry path [`RelPath`] refuses, found as the entries stream by: nothing else is
/// kept, and decoding stops there.
struct FirstBadPath(Option<crate::relpath::InvalidPath>);

impl<'de> Deserialize<'de> for FirstBadPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = FirstBadPath;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("index entries")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<FirstBadPath, A::Error> {
                while let Some(e) = seq.next_element::<RawEntry>()? {
                    if let Err(bad) = RelPath::new(&e.path) {
                        return Ok(FirstBadPath(Some(bad)));
                    }
                }
                Ok(FirstBadPath(None))
            }
        }
        d.deserialize_seq(Entries)
    }
}

/// Why `body` did not decode: the path at fault if a path is, found by decoding the body again
/// as it streams by, keeping nothing.
fn explain_undecodable(body: &[u8], err: postcard::Error) -> IndexError {
    if let Ok(raw) = decode_streaming::<RawIndex>(body) {
        if let Some(Err(bad)) = raw.root.as_deref().map(RelPath::new) {
            return IndexError::Inconsistent(bad.to_string());
        }
        if let Some(bad) = raw.entries.0 {
            return IndexError::Inconsistent(bad.to_string());
        }
    }
    IndexError::Invalid(format!("undecodable body: {err}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn rp(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    pub(crate) fn sample() -> Index {
        let c = |n: u8, pack: u32, offset: u64, len: u32| ChunkLocation {
            hash: Hash::of(&[n]),
            pack,
            offset,
            stored_len: len,
            len,
            codec: Codec::Raw,
        };
        let file = |size, chunks: Vec<u32>| {
            EntryKind::File(FileEntry {
                size,
                mode: 0o644,
                mtime_ns: 1_700_000_000_000_000_000,
                hash: Hash::of(&size.to_le_bytes()),
                chunks,
            })
        };
        let dir = || EntryKind::Dir(DirEntry { mode: 0o755 });
        Index {
            revision: 7,
            created_unix: 1_700_000_000,
            chunker: ChunkerConfig::default(),
            root: None,
            entries: vec![
                Entry {
                    path: rp("a"),
                    kind: dir(),
                },
                Entry {
                    path: rp("a/empty"),
                    kind: dir(),
                },
                Entry {
                    path: rp("a/x.bin"),
                    kind: file(300, vec![0, 1]),
                },
                Entry {
                    path: rp("a/z"),
                    kind: file(0, vec![]),
                },
                Entry {
                    path: rp("b.txt"),
                    kind: file(200, vec![2]),
                },
            ],
            chunks: vec![c(0, 1, 16, 100), c(1, 1, 116, 200), c(2, 2, 16, 200)],
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
            info: RepoInfo::default(),
        }
    }

    /// What a held index loses to a newer one: the changed and removed files, resolvable on
    /// their own; unchanged entries are not kept.
    #[test]
    fn lost_to_keeps_only_what_the_newer_index_lacks() {
        let old = sample();
        let mut newer = old.clone();
        let files: Vec<usize> = (0..newer.entries.len())
            .filter(|&i| matches!(newer.entries[i].kind, EntryKind::File(_)))
            .collect();
        assert!(files.len() >= 2, "the sample has two files");
        if let EntryKind::File(f) = &mut newer.entries[files[0]].kind {
            f.mtime_ns += 1;
        }
        let removed = newer.entries.remove(files[1]);
        let changed = newer.entries[files[0]].path.clone();
        let lost = old.clone().lost_to(&newer);
        let paths: Vec<&RelPath> = lost.entries.iter().map(|e| &e.path).collect();
        let mut want = vec![&changed, &removed.path];
        want.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        assert_eq!(paths, want);
        for e in &lost.entries {
            let (EntryKind::File(f), Some(EntryKind::File(o))) =
                (&e.kind, old.get(&e.path).map(|x| &x.kind))
            else {
                panic!("files only")
            };
            let hashes = |i: &Index, f: &FileEntry| -> Vec<Hash> {
                f.chunks
                    .iter()
                    .map(|&c| i.chunks[c as usize].hash)
                    .collect()
            };
            assert_eq!(hashes(&lost, f), hashes(&old, o));
            for &c in &f.chunks {
                assert!(lost.pack(lost.chunks[c as usize].pack).is_some());
            }
        }
        assert!(old.clone().lost_to(&old).entries.is_empty());
    }

    #[test]
    fn round_trip() {
        let idx = sample();
        idx.validate().unwrap();
        let bytes = encode(&idx);
        let (back, id) = decode(&bytes).unwrap();
        assert_eq!(back, idx);
        assert_eq!(decode(&encode(&back)).unwrap().1, id);
        // Streamed into a file (here: a cursor after other bytes), it decodes the same.
        let mut out = std::io::Cursor::new(b"prefix".to_vec());
        out.set_position(6);
        encode_to(&idx, &mut out).unwrap();
        let streamed = out.into_inner();
        assert_eq!(decode(&streamed[6..]).unwrap().0, idx);
        // Read back from a reader: the same index and identity as from memory; truncated,
        // extended or bit-flipped bytes refused.
        let from = |b: &[u8]| decode_from(std::io::Cursor::new(b.to_vec()));
        assert_eq!(from(&bytes).unwrap(), (idx.clone(), id));
        assert_eq!(from(&streamed[6..]).unwrap().0, idx);
        assert!(from(&bytes[..bytes.len() - 1]).is_err());
        assert!(from(&[&bytes[..], b"x"].concat()).is_err());
        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        assert!(from(&flipped).is_err() || from(&flipped).unwrap().1 != id);
    }

    /// The streaming decoder reads what the in-memory encoding wrote, for an index far larger
    /// than its buffers (longest paths included), and its bytes are those of postcard.
    #[test]
    fn a_large_index_decodes_as_it_is_decompressed() {
        let mut idx = sample();
        let long = "d".repeat(255);
        let mut dirs = vec![format!("a/{long}")];
        for _ in 0..14 {
            let next = format!("{}/{long}", dirs.last().unwrap());
            dirs.push(next);
        }
        for d in &dirs {
            idx.entries.push(Entry {
                path: rp(d),
                kind: EntryKind::Dir(DirEntry { mode: 0o755 }),
            });
        }
        let deepest = dirs.last().unwrap().clone();
        for i in 0..20_000u32 {
            idx.entries.push(Entry {
                path: rp(&format!("{deepest}/f{i:05}")),
                kind: EntryKind::File(FileEntry {
                    size: 200,
                    mode: 0o644,
                    mtime_ns: i as i64,
                    hash: Hash::of(&i.to_le_bytes()),
                    chunks: vec![2],
                }),
            });
        }
        idx.entries.sort_by(|a, b| a.path.cmp(&b.path));
        idx.validate().unwrap();
        let bytes = encode(&idx);
        let (back, _) = decode(&bytes).unwrap();
        assert_eq!(back, idx);
        let plain = decompress(
            envelope_body(INDEX_MAGIC, INDEX_VERSIONS, &bytes, "")
                .unwrap()
                .1,
            "",
        )
        .unwrap();
        assert!(plain.len() > 4 * DECODE_SCRATCH, "{} bytes", plain.len());
        assert_eq!(postcard::from_bytes::<Index>(&plain).unwrap(), idx);
    }

    #[test]
    fn refuses_other_versions_and_truncation() {
        let mut bytes = encode(&sample());
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&bytes[..20]).is_err());
        bytes[8] = 3;
        assert!(matches!(decode(&bytes), Err(IndexError::Version(3))));
    }

    #[test]
    fn a_bad_path_is_named() {
        // Encode an index whose path bypassed RelPath validation.
        #[derive(Serialize)]
        struct Evil {
            revision: u64,
            created_unix: i64,
            chunker: ChunkerConfig,
            root: Option<String>,
            entries: Vec<(String, EntryKind)>,
            chunks: Vec<ChunkLocation>,
            packs: Vec<PackInfo>,
        }
        let evil = Evil {
            revision: 1,
            created_unix: 0,
            chunker: ChunkerConfig::default(),
            root: None,
            entries: vec![(
                "../../etc/passwd".into(),
                EntryKind::File(FileEntry {
                    size: 0,
                    mode: 0o644,
                    mtime_ns: 0,
                    hash: Hash::of(b""),
                    chunks: vec![],
                }),
            )],
            chunks: vec![],
            packs: vec![],
        };
        let plain = postcard::to_stdvec(&evil).unwrap();
        let body = zstd::bulk::compress(&plain, 3).unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(INDEX_MAGIC);
        bytes.extend_from_slice(&INDEX_FORMAT_V1.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&0u32.to_le_bytes());
        let err = decode(&bytes).unwrap_err().to_string();
        assert!(err.contains("../../etc/passwd"), "{err}");
    }

    #[test]
    fn validate_catches_inconsistency() {
        let mut idx = sample();
        idx.entries.swap(0, 1);
        assert!(idx.validate().is_err());

        let mut idx = sample();
        idx.entries.remove(0); // parent "a" missing
        assert!(idx.validate().is_err());

        let mut idx = sample();
        if let EntryKind::File(f) = &mut idx.entries[2].kind {
            f.size += 1;
        }
        assert!(idx.validate().is_err());

        let mut idx = sample();
        idx.chunks[0].offset = 999;
        assert!(idx.validate().is_err());

        let mut idx = sample();
        idx.entries.insert(
            0,
            Entry {
                path: rp(".hummel"),
                kind: EntryKind::Dir(DirEntry { mode: 0o755 }),
            },
        );
        assert!(idx.validate().is_err());
    }

    /// Fuzzing found it: a chunk table listing one id at two places validated, but tables are
    /// unique by id everywhere else (a delta's rebuild keeps the first place, so an index could
    /// not even be rebuilt from the delta to itself).
    #[test]
    fn a_chunk_listed_twice_is_refused() {
        let mut idx = sample();
        idx.chunks[1].hash = idx.chunks[0].hash;
        idx.chunks[1].len = 100;
        idx.chunks[1].stored_len = 100;
        if let EntryKind::File(f) = &mut idx.entries[2].kind {
            f.size = 200;
        }
        let err = idx.validate().unwrap_err().to_string();
        assert!(err.contains("listed twice"), "{err}");
        assert!(decode(&encode(&idx)).is_err());
    }

    /// Format 2 carries the info section, in every subtree too; a format-1 body (the same
    /// without it) still reads, as an index whose info says nothing; a bad info is refused.
    #[test]
    fn format_2_carries_the_info_and_format_1_still_reads() {
        let mut idx = sample();
        idx.info = crate::info::tests::sample_info();
        let bytes = encode(&idx);
        assert_eq!(&bytes[8..12], &2u32.to_le_bytes());
        let (back, _) = decode(&bytes).unwrap();
        assert_eq!(back, idx);
        let from = decode_from(std::io::Cursor::new(bytes.clone())).unwrap().0;
        assert_eq!(from, idx);
        assert_eq!(idx.subtree(&rp("a")).unwrap().info, idx.info);

        #[derive(Serialize)]
        struct V1<'a> {
            revision: u64,
            created_unix: i64,
            chunker: ChunkerConfig,
            root: &'a Option<RelPath>,
            entries: &'a [Entry],
            chunks: &'a [ChunkLocation],
            packs: &'a [PackInfo],
        }
        let v1 = V1 {
            revision: idx.revision,
            created_unix: idx.created_unix,
            chunker: idx.chunker,
            root: &idx.root,
            entries: &idx.entries,
            chunks: &idx.chunks,
            packs: &idx.packs,
        };
        let old = seal_envelope(INDEX_MAGIC, 1, &postcard::to_stdvec(&v1).unwrap());
        let (back, _) = decode(&old).unwrap();
        assert_eq!(back, sample());
        assert_eq!(decode_from(std::io::Cursor::new(old)).unwrap().0, sample());

        let mut bad = idx.clone();
        bad.info.sets.push(bad.info.sets[0].clone());
        assert!(
            decode(&encode(&bad))
                .unwrap_err()
                .to_string()
                .contains("info")
        );
    }

    /// A selection keeps its folders at their paths, with their ancestors, and only the
    /// chunks and packs they use.
    #[test]
    fn select_keeps_folders_in_place() {
        let idx = sample();
        let sel = idx.select(&[rp("a/empty")]).unwrap();
        sel.validate().unwrap();
        let paths: Vec<_> = sel.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a", "a/empty"]);
        assert!(sel.chunks.is_empty() && sel.packs.is_empty());
        let sel = idx.select(&[rp("a")]).unwrap();
        sel.validate().unwrap();
        let paths: Vec<_> = sel.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a", "a/empty", "a/x.bin", "a/z"]);
        assert_eq!((sel.chunks.len(), sel.packs.len()), (2, 1));
        assert_eq!(
            idx.select(&[rp("a"), rp("b.txt")]).unwrap_err(),
            rp("b.txt")
        );
        assert_eq!(idx.select(&[rp("nope")]).unwrap_err(), rp("nope"));
    }

    #[test]
    fn subtree_is_rerooted_and_minimal() {
        let idx = sample();
        let sub = idx.subtree(&rp("a")).unwrap();
        sub.validate().unwrap();
        let paths: Vec<_> = sub.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["empty", "x.bin", "z"]);
        assert_eq!(sub.chunks.len(), 2);
        assert_eq!(sub.packs.len(), 1);
        assert_eq!(sub.root.as_ref().unwrap().as_str(), "a");
        assert!(idx.subtree(&rp("b.txt")).is_none());
        assert!(idx.subtree(&rp("nope")).is_none());
    }
}
