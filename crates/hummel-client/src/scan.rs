//! What is in DEST now: [`walk`] lists it without following symlinks ([`LocalTree`]), and
//! [`survey`] learns the content of the files that matter ([`LocalContent`]): hashes from the
//! stat cache where it can be trusted, hashing where it cannot (unless the file still has the
//! size and mtime the held revision gave it, and is replaced anyway), and chunk layouts, from
//! the old and new index by file hash or by re-chunking a file being replaced.
//!
//! Everything here is blocking file I/O and CPU work; call it from `spawn_blocking`.
//! `.hummel` at the top of DEST is never listed.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;

use rayon::prelude::*;

use hummel_core::index::RESERVED_TOP_NAME;
use hummel_core::{ChunkerConfig, EntryKind, FileEntry, Hash, Index, chunk_stream};

use crate::SyncError;
use crate::state::{CachedStat, StatCache};

/// The stat fields the cache compares, plus the mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status change time, ns since the epoch.
    pub ctime_ns: i64,
    /// Inode number.
    pub ino: u64,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
}

impl FileStat {
    /// From `lstat`/`fstat` metadata (on Windows: no inode, the creation time for ctime, the
    /// read-only attribute as the mode; see `platform`).
    pub fn from_metadata(m: &fs::Metadata) -> FileStat {
        crate::platform::file_stat(m)
    }
}

/// One entry found in DEST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalKind {
    /// A regular file.
    File(FileStat),
    /// A real directory (not a symlink to one).
    Dir {
        /// Permission bits.
        mode: u32,
    },
    /// A symbolic link (never followed).
    Symlink,
    /// A socket, FIFO, device ...
    Other,
}

impl LocalKind {
    /// `file`, `directory`, `symlink` or `special file`.
    pub fn name(&self) -> &'static str {
        match self {
            LocalKind::File(_) => "file",
            LocalKind::Dir { .. } => "directory",
            LocalKind::Symlink => "symlink",
            LocalKind::Other => "special file",
        }
    }
}

/// What a walk found below DEST (except `.hummel`), by path relative to DEST.
///
/// Compact, because it has an entry per file: a file whose stat matches its stat-cache entry
/// is only a mark on that entry (its mode, 2 bytes), everything else (directories, symlinks,
/// files the cache does not vouch for) is listed. At 500,000 unchanged files this is 1 MB, not
/// the ~75 MB of a map of paths.
#[derive(Clone, Debug, Default)]
pub struct LocalTree {
    /// The held stat cache the walk compared files with.
    cache: Arc<StatCache>,
    /// Per cache position: the mode of the file found there with the cached stat, or
    /// [`NOT_FOUND`].
    modes: Vec<u16>,
    /// Cache positions marked in `modes`.
    found: usize,
    /// Everything else, sorted by path.
    others: Vec<(PathBuf, LocalKind)>,
}

/// A cache position whose file the walk did not find as cached.
const NOT_FOUND: u16 = u16::MAX;

impl LocalTree {
    /// A tree of `entries` (for tests and callers without a cache).
    pub fn from_entries(entries: impl IntoIterator<Item = (PathBuf, LocalKind)>) -> LocalTree {
        let mut others: Vec<(PathBuf, LocalKind)> = entries.into_iter().collect();
        others.sort_by(|a, b| a.0.cmp(&b.0));
        others.dedup_by(|a, b| a.0 == b.0);
        LocalTree {
            others,
            ..LocalTree::default()
        }
    }

    /// The entry at a repository path.
    pub fn get(&self, path: &str) -> Option<LocalKind> {
        if let Some((i, c)) = self.cached(path) {
            return Some(LocalKind::File(c.file_stat(self.modes[i])));
        }
        self.other(Path::new(path)).copied()
    }

    /// The hash and stat of the file at `path`, when the stat cache vouches for it.
    pub fn cached_file(&self, path: &str) -> Option<(Hash, FileStat)> {
        self.cached(path)
            .map(|(i, c)| (c.hash, c.file_stat(self.modes[i])))
    }

    /// Files the stat cache vouches for.
    pub fn vouched_count(&self) -> usize {
        self.found
    }

    /// The cache position and entry of `path`, when the walk found it as cached.
    fn cached(&self, path: &str) -> Option<(usize, &CachedStat)> {
        self.cache
            .get(path)
            .filter(|(i, _)| self.modes.get(*i).is_some_and(|&m| m != NOT_FOUND))
    }

    /// An entry the cache does not vouch for.
    fn other(&self, path: &Path) -> Option<&LocalKind> {
        self.others
            .binary_search_by(|(p, _)| p.as_path().cmp(path))
            .ok()
            .map(|k| &self.others[k].1)
    }

    /// Entries found.
    pub fn len(&self) -> usize {
        self.found + self.others.len()
    }

    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Files, symlinks and special files found (everything but directories).
    pub fn non_dirs(&self) -> usize {
        self.found
            + self
                .others
                .iter()
                .filter(|(_, k)| !matches!(k, LocalKind::Dir { .. }))
                .count()
    }

    /// Every entry: those the cache vouches for (by path), then the others (by path).
    pub fn iter(&self) -> impl Iterator<Item = (&Path, LocalKind)> {
        let cached = (0..self.cache.len())
            .filter(|&i| self.modes[i] != NOT_FOUND)
            .map(|i| {
                let c = self.cache.stat(i);
                (
                    Path::new(self.cache.path(i)),
                    LocalKind::File(c.file_stat(self.modes[i])),
                )
            });
        cached.chain(self.others.iter().map(|(p, k)| (p.as_path(), *k)))
    }

    /// Files the stat cache vouches for: path and hash, by path.
    pub fn cached_files(&self) -> impl Iterator<Item = (&str, Hash)> {
        (0..self.cache.len())
            .filter(|&i| self.modes[i] != NOT_FOUND)
            .map(|i| (self.cache.path(i), self.cache.stat(i).hash))
    }

    /// Adds an entry the cache does not vouch for (tests build trees with it).
    #[cfg(test)]
    pub(crate) fn insert(&mut self, path: PathBuf, kind: LocalKind) {
        match self.others.binary_search_by(|(p, _)| p.cmp(&path)) {
            Ok(k) => self.others[k].1 = kind,
            Err(k) => self.others.insert(k, (path, kind)),
        }
    }

    /// Adds what another walk of other top-level names with the same cache found.
    pub fn merge(&mut self, other: LocalTree) {
        if self.modes.is_empty() {
            self.modes = other.modes;
            self.found = other.found;
        } else {
            for (i, m) in other.modes.into_iter().enumerate() {
                if m != NOT_FOUND && self.modes[i] == NOT_FOUND {
                    self.modes[i] = m;
                    self.found += 1;
                }
            }
        }
        self.others.extend(other.others);
        self.others.sort_by(|a, b| a.0.cmp(&b.0));
        self.others.dedup_by(|a, b| a.0 == b.0);
    }
}

/// Directories listed at once: a cold walk waits on the disk, not the cores (22,004 files from
/// a cold cache: 8 threads ~1.0 s, 16 ~0.9 s, 32 no better).
const WALK_THREADS: usize = 16;

/// Which top-level entries of DEST a walk looks at: Hummel's own (the ownership rule); any
/// other entry of DEST is never listed, so never read, changed or removed.
pub type Tops = std::collections::BTreeSet<String>;

/// Lists the entries of DEST named in `tops`, and everything below them, without following
/// symlinks, comparing every file with its entry in `cache` (see [`LocalTree`]). A missing
/// DEST is an empty tree.
pub fn walk(dest: &Path, tops: &Tops, cache: Arc<StatCache>) -> Result<LocalTree, SyncError> {
    let mut tree = LocalTree {
        modes: vec![NOT_FOUND; cache.len()],
        cache,
        ..LocalTree::default()
    };
    match fs::metadata(dest) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(SyncError::Destination {
                path: dest.to_path_buf(),
                reason: "is not a directory".into(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(tree),
        Err(e) => return Err(SyncError::local("stat", dest, e)),
    }
    if tops.is_empty() {
        return Ok(tree);
    }
    // Level by level, the directories of one level listed in parallel: a walk is bound by
    // syscall and disk latency, so several listings in flight finish far sooner than one.
    let mut top = list_dir(dest, Path::new(""))?;
    top.retain(|(p, _)| p.to_str().is_some_and(|s| tops.contains(s)));
    let mut level = tree.take(top);
    while !level.is_empty() {
        // Files the cache vouches for become marks (position, mode), not paths.
        type Found = (Vec<(usize, u16)>, Vec<(PathBuf, LocalKind)>);
        let found: Mutex<Found> = Mutex::new((Vec::new(), Vec::new()));
        crate::assemble::for_each_io_on(WALK_THREADS, &level, |_, rel_dir| {
            let (mut marks, mut rest) = (Vec::new(), Vec::new());
            for (p, k) in list_dir(dest, rel_dir)? {
                match tree.vouched(&p, &k) {
                    Some(mark) => marks.push(mark),
                    None => rest.push((p, k)),
                }
            }
            let mut found = found.lock().expect("not poisoned");
            found.0.extend(marks);
            found.1.extend(rest);
            Ok(())
        })?;
        let (marks, rest) = found.into_inner().expect("not poisoned");
        for (i, mode) in marks {
            tree.modes[i] = mode;
        }
        level = tree.take(rest);
    }
    tree.others.sort_by(|a, b| a.0.cmp(&b.0));
    tree.others.shrink_to_fit();
    tree.found = tree.modes.iter().filter(|&&m| m != NOT_FOUND).count();
    Ok(tree)
}

impl LocalTree {
    /// The cache position and mode of `kind` at `path` when it is a file with the stat its
    /// cache entry has (the walk's threads share `&self`; the mark is set after the level).
    fn vouched(&self, path: &Path, kind: &LocalKind) -> Option<(usize, u16)> {
        let LocalKind::File(st) = kind else {
            return None;
        };
        let (i, c) = self.cache.get(path.to_str()?)?;
        c.matches(st).then_some((i, st.mode as u16))
    }

    /// Takes one level of a walk: marks vouched files, keeps the rest; returns the directories
    /// to list next.
    fn take(&mut self, found: Vec<(PathBuf, LocalKind)>) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for (p, k) in found {
            if let Some((i, mode)) = self.vouched(&p, &k) {
                self.modes[i] = mode;
                continue;
            }
            if matches!(k, LocalKind::Dir { .. }) {
                dirs.push(p.clone());
            }
            self.others.push((p, k));
        }
        dirs
    }
}

/// The entries of one directory of DEST (`rel_dir` relative to it), never following symlinks.
fn list_dir(dest: &Path, rel_dir: &Path) -> Result<Vec<(PathBuf, LocalKind)>, SyncError> {
    let dir = crate::platform::under(dest, rel_dir);
    let rd = fs::read_dir(&dir).map_err(|e| SyncError::local("list", &dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| SyncError::local("list", &dir, e))?;
        let name = entry.file_name();
        if rel_dir.as_os_str().is_empty() && name == RESERVED_TOP_NAME {
            continue;
        }
        let rel = crate::platform::rel_join(rel_dir, &name);
        // DirEntry::metadata does not follow symlinks.
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(SyncError::local("stat", &dir.join(&name), e)),
        };
        let ft = meta.file_type();
        let kind = if ft.is_symlink() {
            LocalKind::Symlink
        } else if ft.is_dir() {
            LocalKind::Dir {
                mode: crate::platform::dir_mode(&meta),
            }
        } else if ft.is_file() {
            LocalKind::File(FileStat::from_metadata(&meta))
        } else {
            LocalKind::Other
        };
        out.push((rel, kind));
    }
    Ok(out)
}

/// Hashes a file; returns its hash and its `fstat` taken before reading.
pub fn hash_file(path: &Path) -> io::Result<(Hash, FileStat)> {
    let file = File::open(path)?;
    let stat = FileStat::from_metadata(&file.metadata()?);
    Ok((hash_open_file(&file, stat.size)?, stat))
}

/// Files at least this large are hashed by [`hash_open_file`] on every core.
const PARALLEL_HASH_MIN: u64 = 32 << 20;

/// Blocks read ahead of the hashing of a large file.
const HASH_BLOCK: usize = 1 << 20;

/// BLAKE3 of what `file` holds from its current position (`size`: its expected length, only
/// used to choose how). A large file is read on one thread in [`HASH_BLOCK`]s while the block
/// before is hashed on all cores (rayon); at most three blocks are in memory. A single 512 MiB
/// file from a cold cache: 0.73 s read-then-hash on one thread, ~0.3 s this way (the disk
/// reads it in 0.27 s).
pub(crate) fn hash_open_file(file: &File, size: u64) -> io::Result<Hash> {
    let mut hasher = blake3::Hasher::new();
    if size < PARALLEL_HASH_MIN {
        hasher.update_reader(file)?;
        return Ok(hasher.finalize().into());
    }
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(1);
    let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || -> io::Result<()> {
            let mut file = file;
            loop {
                let mut buf = empty_rx.try_recv().unwrap_or_default();
                buf.resize(HASH_BLOCK, 0);
                let mut n = 0;
                while n < buf.len() {
                    match io::Read::read(&mut file, &mut buf[n..]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                buf.truncate(n);
                let last = n < HASH_BLOCK;
                if n > 0 && full_tx.send(buf).is_err() {
                    return Ok(());
                }
                if last {
                    return Ok(());
                }
            }
        });
        for buf in full_rx {
            hasher.update_rayon(&buf);
            let _ = empty_tx.send(buf);
        }
        reader.join().expect("hash reader thread panicked")
    })?;
    Ok(hasher.finalize().into())
}

/// One chunk of a local file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalChunk {
    /// Offset in the file.
    pub offset: u64,
    /// Plain length.
    pub len: u32,
    /// Chunk id.
    pub hash: Hash,
}

/// Cuts a local file into chunks with `config`: its hash, `fstat` and chunk layout.
pub fn chunk_file(path: &Path, config: &ChunkerConfig) -> io::Result<KnownFile> {
    let file = File::open(path)?;
    let stat = FileStat::from_metadata(&file.metadata()?);
    let mut layout = Vec::new();
    let digest = chunk_stream::<_, io::Error, _>(config, file, |c| {
        layout.push(LocalChunk {
            offset: c.offset,
            len: c.data.len() as u32,
            hash: c.hash,
        });
        Ok(())
    })?;
    Ok(KnownFile {
        hash: digest.hash,
        stat,
        chunks: Some(Arc::new(layout)),
    })
}

/// The chunk layout, trimmed to the chunks in `useful` (offsets stay those of the whole file),
/// of every file of `index` that holds any of them, by file hash.
pub fn layouts_from_index(
    index: &Index,
    useful: &HashSet<Hash>,
    out: &mut HashMap<Hash, Arc<Vec<LocalChunk>>>,
) {
    for (_, f) in index.files() {
        if out.contains_key(&f.hash) {
            continue;
        }
        let mut offset = 0u64;
        let mut layout = Vec::new();
        for &ci in &f.chunks {
            let c = &index.chunks[ci as usize];
            if useful.contains(&c.hash) {
                layout.push(LocalChunk {
                    offset,
                    len: c.len,
                    hash: c.hash,
                });
            }
            offset += c.len as u64;
        }
        if !layout.is_empty() {
            out.insert(f.hash, Arc::new(layout));
        }
    }
}

/// Keeps only the chunks of `layout` in `useful`.
fn retain_useful(layout: &mut Option<Arc<Vec<LocalChunk>>>, useful: &HashSet<Hash>) {
    if let Some(l) = layout
        && l.iter().any(|c| !useful.contains(&c.hash))
    {
        *l = Arc::new(
            l.iter()
                .filter(|c| useful.contains(&c.hash))
                .copied()
                .collect(),
        );
    }
}

/// What is known about the content of a local file.
#[derive(Clone, Debug)]
pub struct KnownFile {
    /// Its hash.
    pub hash: Hash,
    /// The stat the hash belongs to.
    pub stat: FileStat,
    /// Its chunk layout, when known.
    pub chunks: Option<Arc<Vec<LocalChunk>>>,
}

/// What a run learnt about the content of local files, beyond what the stat cache vouches
/// for (that is in the [`LocalTree`]).
#[derive(Clone, Debug, Default)]
pub struct LocalContent {
    /// Files outside the cache whose content this run learnt (hashed, re-chunked or presumed),
    /// by path relative to DEST.
    pub learnt: HashMap<PathBuf, KnownFile>,
    /// Chunk layouts by file hash, from the indexes, trimmed to the chunks worth copying (those
    /// of the files to write); only contents that hold any are listed.
    pub layouts: HashMap<Hash, Arc<Vec<LocalChunk>>>,
    /// Files hashed in this run (the rest came from the cache).
    pub hashed: u64,
    /// Files re-chunked in this run.
    pub rechunked: u64,
    /// Files taken to hold the held revision's content without reading them (see [`survey`]).
    pub presumed: u64,
}

impl LocalContent {
    /// The hash and stat of the local file at `path`, when its content is known.
    pub fn known(&self, tree: &LocalTree, path: &str) -> Option<(Hash, FileStat)> {
        if let Some(k) = self.learnt.get(Path::new(path)) {
            return Some((k.hash, k.stat));
        }
        tree.cached_file(path)
    }

    /// The chunks worth copying of the local file at `path` with content `hash`, when known.
    fn layout(&self, path: &Path, hash: &Hash) -> Option<&Arc<Vec<LocalChunk>>> {
        self.learnt
            .get(path)
            .and_then(|k| k.chunks.as_ref())
            .or_else(|| self.layouts.get(hash))
    }

    /// Local files that hold chunks worth copying, with those chunks, by path.
    pub fn sources<'a>(&'a self, tree: &'a LocalTree) -> Vec<(&'a Path, &'a [LocalChunk])> {
        let mut out: Vec<(&Path, &[LocalChunk])> = Vec::new();
        for (p, hash) in tree.cached_files() {
            if let Some(l) = self.layouts.get(&hash) {
                out.push((Path::new(p), l.as_slice()));
            }
        }
        for (p, k) in &self.learnt {
            if let Some(l) = self.layout(p, &k.hash) {
                out.push((p.as_path(), l.as_slice()));
            }
        }
        out.retain(|(_, l)| !l.is_empty());
        out.sort_by(|a, b| a.0.cmp(b.0));
        out
    }
}

/// Whether a local file with `stat`, outside the stat cache, is taken to hold `held` (the
/// entry of the revision DEST held) without reading it, because it is replaced by `wanted`
/// anyway: it has the size and mtime a sync of `held` gave it, and `wanted` differs in content
/// and in size or mtime (a run interrupted after placing `wanted` leaves that file with
/// `wanted`'s mtime: it is hashed, found in place and kept).
fn presumed_held(stat: &FileStat, held: &FileEntry, wanted: &FileEntry) -> bool {
    held.hash != wanted.hash
        && stat.size == held.size
        && stat.mtime_ns == held.mtime_ns
        && (held.size != wanted.size || held.mtime_ns != wanted.mtime_ns)
}

/// Learns the content of the local files that matter: every regular file at a path of `new`
/// that the stat cache (in `tree`) does not vouch for is hashed (in parallel), except one that
/// still has the size and mtime the held revision `old` gave it and is replaced anyway
/// ([`presumed_held`]): it is taken to hold `old`'s content, so that it is read once, not
/// twice; its chunks are verified as they are copied (`assemble::copy_local`) and downloaded
/// instead where they differ. Then layouts: by file hash from `new` and `old`, else by
/// re-chunking files being replaced. Unreadable files are left unknown (they will be
/// rewritten), never fatal.
///
/// `old` needs to hold only the entries that differ from `new`: the rest are in `new`.
pub fn survey(dest: &Path, tree: &LocalTree, new: &Index, old: Option<&Index>) -> LocalContent {
    let mut content = LocalContent::default();
    // Files the new index wants that we cannot vouch for. A file of the wrong size is re-chunked
    // straight away (it will be replaced); one of the right size is hashed first (likely equal).
    let mut unknown: Vec<(PathBuf, bool)> = Vec::new();
    for (p, f) in new.files() {
        if tree.cached_file(p.as_str()).is_some() {
            continue;
        }
        let rel = PathBuf::from(p.as_str());
        let Some(&LocalKind::File(st)) = tree.other(&rel) else {
            continue;
        };
        let held = old.and_then(|o| o.get(p)).and_then(|e| match &e.kind {
            EntryKind::File(h) => Some(h),
            EntryKind::Dir(_) => None,
        });
        match held {
            Some(h) if presumed_held(&st, h, f) => {
                content.presumed += 1;
                let k = KnownFile {
                    hash: h.hash,
                    stat: st,
                    chunks: None,
                };
                content.learnt.insert(rel, k);
            }
            _ => unknown.push((rel, st.size == f.size)),
        }
    }
    let results: Vec<(PathBuf, io::Result<KnownFile>, bool)> = unknown
        .into_par_iter()
        .map(|(rel, same_size)| {
            let path = crate::platform::under(dest, &rel);
            if same_size {
                let r = hash_file(&path).map(|(hash, stat)| KnownFile {
                    hash,
                    stat,
                    chunks: None,
                });
                (rel, r, false)
            } else {
                (rel, chunk_file(&path, &new.chunker), true)
            }
        })
        .collect();
    for (rel, r, chunked) in results {
        match r {
            Ok(k) => {
                content.hashed += 1;
                content.rechunked += chunked as u64;
                content.learnt.insert(rel, k);
            }
            Err(e) => tracing::warn!(path = %rel.display(), "cannot read local file: {e}"),
        }
    }

    // No local file known (a first sync): no layout to learn.
    if tree.vouched_count() == 0 && content.learnt.is_empty() {
        return content;
    }
    // Chunks worth finding locally: those of the files that will be written. Layouts are
    // trimmed to them, so memory follows the size of the change, not of the tree.
    let useful: HashSet<Hash> = new
        .files()
        .filter(|(p, f)| content.known(tree, p.as_str()).map(|k| k.0) != Some(f.hash))
        .flat_map(|(_, f)| f.chunks.iter().map(|&ci| new.chunks[ci as usize].hash))
        .collect();
    if useful.is_empty() {
        for k in content.learnt.values_mut() {
            k.chunks = None;
        }
        return content;
    }

    // Layouts by file hash from the indexes.
    layouts_from_index(new, &useful, &mut content.layouts);
    if let Some(old) = old {
        layouts_from_index(old, &useful, &mut content.layouts);
    }
    for k in content.learnt.values_mut() {
        retain_useful(&mut k.chunks, &useful);
    }

    // Files being replaced whose layout is unknown: re-chunk them. A content an index lists
    // has a known layout, with nothing worth copying when it is not in `layouts`.
    let replaced: Vec<(PathBuf, Hash)> = new
        .files()
        .filter_map(|(p, f)| {
            let (hash, stat) = content.known(tree, p.as_str())?;
            let rel = PathBuf::from(p.as_str());
            (hash != f.hash && stat.size > 0 && content.layout(&rel, &hash).is_none())
                .then_some((rel, hash))
        })
        .collect();
    let candidates: HashSet<Hash> = replaced.iter().map(|(_, h)| *h).collect();
    let listed: HashSet<Hash> = new
        .files()
        .chain(old.into_iter().flat_map(|o| o.files()))
        .map(|(_, f)| f.hash)
        .filter(|h| candidates.contains(h))
        .collect();
    let rechunk: Vec<PathBuf> = replaced
        .into_iter()
        .filter(|(_, h)| !listed.contains(h))
        .map(|(rel, _)| rel)
        .collect();
    let results: Vec<(PathBuf, io::Result<KnownFile>)> = rechunk
        .into_par_iter()
        .map(|rel| {
            let r = chunk_file(&crate::platform::under(dest, &rel), &new.chunker);
            (rel, r)
        })
        .collect();
    for (rel, r) in results {
        match r {
            Ok(mut k) => {
                content.rechunked += 1;
                retain_useful(&mut k.chunks, &useful);
                content.learnt.insert(rel, k);
            }
            Err(e) => {
                // It is replaced anyway; it only cannot serve as a source.
                tracing::warn!(path = %rel.display(), "cannot read local file: {e}");
            }
        }
    }
    content
}

/// The no-op test: every file of the held stat cache (the one `tree` was walked with) stats
/// identical, every directory of the held revision is a real directory, and (unless
/// `keep_extra`) nothing else is in DEST.
pub fn unchanged_since(dirs: &[String], tree: &LocalTree, keep_extra: bool) -> bool {
    let files_ok = tree.found == tree.cache.len();
    let dirs_ok = dirs
        .iter()
        .all(|d| matches!(tree.other(Path::new(d)), Some(LocalKind::Dir { .. })));
    files_ok && dirs_ok && (keep_extra || tree.others.len() == dirs.len())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn large_files_hash_the_same_in_parallel() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("big");
        // Past the parallel threshold and not a whole number of read blocks.
        let data: Vec<u8> = (0..(PARALLEL_HASH_MIN as usize + HASH_BLOCK / 3))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        fs::write(&path, &data).unwrap();
        let (hash, stat) = hash_file(&path).unwrap();
        assert_eq!(stat.size, data.len() as u64);
        assert_eq!(hash, Hash::of(&data));
        let small = d.path().join("small");
        fs::write(&small, &data[..1000]).unwrap();
        assert_eq!(hash_file(&small).unwrap().0, Hash::of(&data[..1000]));
    }

    #[test]
    fn only_a_file_as_the_held_revision_left_it_is_presumed() {
        let entry = |hash: &[u8], size: u64, mtime_ns: i64| FileEntry {
            size,
            mode: 0o644,
            mtime_ns,
            hash: Hash::of(hash),
            chunks: vec![],
        };
        let stat = |size: u64, mtime_ns: i64| FileStat {
            size,
            mtime_ns,
            ctime_ns: 1,
            ino: 1,
            mode: 0o644,
        };
        let held = entry(b"old", 100, 10);
        // Replaced by content of another size, or another mtime: presumed.
        assert!(presumed_held(&stat(100, 10), &held, &entry(b"new", 90, 10)));
        assert!(presumed_held(
            &stat(100, 10),
            &held,
            &entry(b"new", 100, 20)
        ));
        // Not as the held revision left it: hashed.
        assert!(!presumed_held(
            &stat(100, 11),
            &held,
            &entry(b"new", 90, 10)
        ));
        assert!(!presumed_held(&stat(99, 10), &held, &entry(b"new", 90, 10)));
        // Unchanged in the index: hashed (it may well be in place).
        assert!(!presumed_held(
            &stat(100, 10),
            &held,
            &entry(b"old", 100, 10)
        ));
        // Same size and mtime in both revisions: the file cannot tell which it holds.
        assert!(!presumed_held(
            &stat(100, 10),
            &held,
            &entry(b"new", 100, 10)
        ));
        // An interrupted run left the new version (its mtime): hashed, found in place.
        assert!(!presumed_held(&stat(90, 20), &held, &entry(b"new", 90, 20)));
    }

    /// Every top-level name of `dir`.
    fn all_tops(dir: &Path) -> Tops {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    fn names(t: &LocalTree) -> Vec<String> {
        t.iter()
            .map(|(p, k)| format!("{} {}", p.display(), k.name()))
            .collect()
    }

    #[test]
    fn walk_never_lists_below_a_top_level_entry_it_does_not_manage() {
        let d = tempfile::tempdir().unwrap();
        for p in ["@ours/a", "@theirs/b", ".ssh/c"] {
            fs::create_dir_all(d.path().join(p)).unwrap();
        }
        fs::write(d.path().join("notes.txt"), b"x").unwrap();
        let managed = Tops::from(["@ours".into(), "gone".into()]);
        let t = walk(d.path(), &managed, Default::default()).unwrap();
        assert_eq!(names(&t), ["@ours directory", "@ours/a directory"]);
        assert!(
            walk(d.path(), &Tops::new(), Default::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn walk_lists_without_following_symlinks_and_skips_state_dir() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), b"s").unwrap();
        fs::create_dir_all(d.path().join("a/b")).unwrap();
        fs::create_dir_all(d.path().join(".hummel/tmp")).unwrap();
        fs::write(d.path().join("a/f"), b"hello").unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("a/link")).unwrap();
        let t = walk(d.path(), &all_tops(d.path()), Default::default()).unwrap();
        assert_eq!(
            names(&t),
            ["a directory", "a/b directory", "a/f file", "a/link symlink"]
        );
        let missing = d.path().join("missing");
        let t = walk(&missing, &Tops::from(["a".into()]), Default::default()).unwrap();
        assert!(t.is_empty());
    }

    /// A cache of the files at `paths` below `dir` as they are now, each with hash `H(path)`.
    fn cache_of(dir: &Path, paths: &[&str]) -> Arc<StatCache> {
        Arc::new(
            paths
                .iter()
                .map(|p| {
                    let (_, st) = hash_file(&dir.join(p)).unwrap();
                    (p.to_string(), CachedStat::new(&st, Hash::of(p.as_bytes())))
                })
                .collect(),
        )
    }

    /// Files whose stat matches the cache are marks, not paths, yet read back as files with
    /// their stat and mode, and their hash is the cache's; a touched one is listed for hashing.
    #[test]
    fn the_walk_marks_files_the_cache_vouches_for() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("m/sub")).unwrap();
        for p in ["m/a", "m/sub/b", "m/sub/c"] {
            fs::write(d.path().join(p), p).unwrap();
        }
        fs::set_permissions(d.path().join("m/a"), fs::Permissions::from_mode(0o640)).unwrap();
        let mut cache = Arc::unwrap_or_clone(cache_of(d.path(), &["m/a", "m/sub/b", "m/sub/c"]));
        let gone = *cache.stat(0);
        assert!(cache.push("m/vanished", gone));
        let cache = Arc::new(cache);
        std::thread::sleep(std::time::Duration::from_millis(5));
        fs::write(d.path().join("m/sub/c"), b"changed").unwrap();
        let t = walk(d.path(), &all_tops(d.path()), cache).unwrap();
        assert_eq!(t.vouched_count(), 2);
        assert_eq!(t.len(), 5);
        assert_eq!(t.non_dirs(), 3);
        assert_eq!(t.cached_file("m/a").unwrap().0, Hash::of(b"m/a"));
        assert_eq!(t.cached_file("m/a").unwrap().1.mode, 0o640);
        assert!(t.cached_file("m/sub/c").is_none());
        assert!(matches!(t.get("m/sub/c"), Some(LocalKind::File(st)) if st.size == 7));
        assert!(matches!(t.get("m/a"), Some(LocalKind::File(st)) if st.mode == 0o640));
        assert!(t.get("m/vanished").is_none());
        assert_eq!(
            names(&t),
            [
                "m/a file",
                "m/sub/b file",
                "m directory",
                "m/sub directory",
                "m/sub/c file"
            ]
        );
    }

    #[test]
    fn noop_test_sees_touched_and_extra_files() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("dir")).unwrap();
        fs::write(d.path().join("dir/f"), b"x").unwrap();
        let cache = cache_of(d.path(), &["dir/f"]);
        let dirs = vec!["dir".to_string()];
        let t = walk(d.path(), &all_tops(d.path()), cache.clone()).unwrap();
        assert!(unchanged_since(&dirs, &t, false));
        // Someone else's entry next to the managed ones is none of the sync's business.
        fs::write(d.path().join("theirs"), b"").unwrap();
        let managed = Tops::from(["dir".to_string()]);
        let t1 = walk(d.path(), &managed, cache.clone()).unwrap();
        assert!(unchanged_since(&dirs, &t1, false));
        fs::write(d.path().join("dir/extra"), b"").unwrap();
        let t2 = walk(d.path(), &managed, cache.clone()).unwrap();
        assert!(!unchanged_since(&dirs, &t2, false));
        assert!(unchanged_since(&dirs, &t2, true));
        std::thread::sleep(std::time::Duration::from_millis(5));
        fs::write(d.path().join("dir/f"), b"y").unwrap();
        let t3 = walk(d.path(), &managed, cache.clone()).unwrap();
        assert!(!unchanged_since(&dirs, &t3, true));
        // A directory of the held revision gone: not unchanged either.
        let t4 = walk(d.path(), &managed, cache).unwrap();
        assert!(!unchanged_since(&["dir".into(), "lost".into()], &t4, true));
    }
}
