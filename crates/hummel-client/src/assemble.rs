//! Carrying out a [`SyncPlan`] on disk: temp files, local chunk copies, sealing, and the final
//! burst that makes DEST the new revision.
//!
//! 1. [`Staging::new`] names one temp file per [`SyncPlan::writes`] in `.hummel/tmp/` by its
//!    content hash; [`Staging::resume`] deletes what no write wants and takes over every chunk
//!    an interrupted run verified and wrote (re-hashed). Temp files are created by their first
//!    write ([`TargetWriter`]), files without chunks by [`seal`].
//! 2. [`copy_local`]: chunks read from local files (before anything is renamed), re-hashed, and
//!    written to every target that still lacks them; a chunk that does not match its id is
//!    handed back for download.
//! 3. (downloads: [`crate::fetch`], writing through [`TargetWriter`].)
//! 4. [`seal`]: every chunk of every temp file written (each was verified on its way in), mode,
//!    mtime, then one `syncfs` (Linux; elsewhere each file is flushed, see `crate::platform`).
//! 5. [`apply`]: directories (a symlink or file where a directory belongs is removed, never
//!    followed), renames in one burst (over read-only files too; a file another program holds
//!    open is retried, then [`SyncError::InUse`]), `syncfs` (or a flush per folder), metadata
//!    fixes, then deletes of extras, then final directory modes.
//!
//! Steps 1–4 touch only `.hummel/tmp/`. If any fails (or the process is killed), DEST is as it
//! was and the temp files stay, holding only verified chunks, for the next run to resume;
//! nothing incomplete is ever renamed. All functions here block: call them from
//! `spawn_blocking`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::report::Meter;
use rayon::prelude::*;

use hummel_core::{FileEntry, Hash, Index};

use crate::SyncError;
use crate::plan::{FileWrite, LocalCopy, SyncPlan, Target, TargetTable};
use crate::platform;

/// The temp files of a sync, one per [`SyncPlan::writes`], same order, and which of their
/// chunks have been written.
///
/// A temp file is named by the content it will hold, `tmp/<file hash hex>.part` (the k-th
/// further write of the same content in one plan: `<hex>.<k>.part`), so the name stays the
/// same from one run to the next whatever else changed, and a run can resume what an
/// interrupted one left: [`Staging::resume`] checks every chunk slot of such a file against its
/// id and counts the verified ones as written. Names are computed from the index, not stored:
/// 4 bytes per write instead of a `PathBuf`.
#[derive(Debug)]
pub(crate) struct Staging {
    tmp: PathBuf,
    index: Arc<Index>,
    /// Per write: its position in [`Index::entries`] (the file hash names its temp file).
    entries: Vec<u32>,
    /// `(write, k)` for the k-th further write of the same content (k ≥ 1), by write.
    copies: Vec<(u32, u32)>,
    /// One flag per [`Target::slot`]: set once that chunk is in its temp file, verified.
    placed: Vec<AtomicBool>,
    /// Some slot was found written by [`Staging::resume`].
    resumed: AtomicBool,
}

/// What [`Staging::resume`] found in the temp files of earlier runs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resumed {
    /// Temp files kept (some of their chunks may still be missing).
    pub(crate) files: u64,
    /// Chunk slots found verified.
    pub(crate) chunks: u64,
    /// Plain bytes of those chunks.
    pub(crate) bytes: u64,
    /// Temp files deleted because no write of this plan wants them.
    pub(crate) deleted: u64,
}

/// The file entry of write `file` of a staging's `entries`.
fn w_file<'i>(index: &'i Index, entries: &[u32], file: u32) -> &'i FileEntry {
    crate::plan::file_entry(index, entries[file as usize]).1
}

/// The temp file name of the `copy`-th write (0: the first) of content `hash` in a plan.
fn temp_name(hash: &Hash, copy: u32) -> String {
    if copy == 0 {
        format!("{}.part", hash.to_hex())
    } else {
        format!("{}.{copy}.part", hash.to_hex())
    }
}

/// The inverse of [`temp_name`]; `None` for any other name, also one that only parses like
/// it (`<hex>.01.part`, `<hex>.+1.part`): such a file would never be resumed nor deleted by
/// name, since both use the name [`temp_name`] gives.
fn parse_temp_name(name: &str) -> Option<(Hash, u32)> {
    let stem = name.strip_suffix(".part")?;
    let (hex, copy) = match stem.split_once('.') {
        Some((hex, k)) => (hex, k.parse::<u32>().ok().filter(|&k| k > 0)?),
        None => (stem, 0),
    };
    let hash: Hash = hex.parse().ok()?;
    (temp_name(&hash, copy) == name).then_some((hash, copy))
}

impl Staging {
    /// The temp files of `writes` (of `index`) in `tmp` (nothing is created yet).
    pub(crate) fn new(tmp: &Path, writes: &[FileWrite], index: Arc<Index>) -> Staging {
        let slots = writes.iter().map(|w| w.slots.end).max().unwrap_or(0);
        let entries: Vec<u32> = writes.iter().map(|w| w.entry).collect();
        let hash = |i: u32| &w_file(&index, &entries, i).hash;
        // Copy numbers of equal contents, in plan order: positions sorted by (hash, position).
        let mut order: Vec<u32> = (0..writes.len() as u32).collect();
        order.sort_unstable_by_key(|&i| (*hash(i), i));
        let mut copies = Vec::new();
        let mut copy = 0;
        for pair in order.windows(2) {
            copy = if hash(pair[0]) == hash(pair[1]) {
                copy + 1
            } else {
                0
            };
            if copy > 0 {
                copies.push((pair[1], copy));
            }
        }
        copies.sort_unstable();
        drop(order);
        Staging {
            tmp: tmp.to_path_buf(),
            index,
            entries,
            copies,
            placed: (0..slots).map(|_| AtomicBool::new(false)).collect(),
            resumed: AtomicBool::new(false),
        }
    }

    /// The content hash and copy number naming the temp file of write `file`.
    fn name(&self, file: u32) -> (Hash, u32) {
        let hash = w_file(&self.index, &self.entries, file).hash;
        let copy = self
            .copies
            .binary_search_by_key(&file, |(w, _)| *w)
            .map_or(0, |k| self.copies[k].1);
        (hash, copy)
    }

    /// True when [`Staging::resume`] found any chunk written by an earlier run.
    pub(crate) fn resumed_any(&self) -> bool {
        self.resumed.load(Ordering::Acquire)
    }

    /// The temp file of write `file` (position in [`SyncPlan::writes`]).
    pub(crate) fn path(&self, file: u32) -> PathBuf {
        let (hash, copy) = self.name(file);
        self.tmp.join(temp_name(&hash, copy))
    }

    /// True once the chunk of `slot` is in its temp file, verified.
    pub(crate) fn is_placed(&self, slot: u32) -> bool {
        self.placed
            .get(slot as usize)
            .is_some_and(|f| f.load(Ordering::Acquire))
    }

    /// True when some of `targets` still lacks its chunk.
    pub(crate) fn wants(&self, targets: &[Target]) -> bool {
        targets.iter().any(|t| !self.is_placed(t.slot))
    }

    /// Takes over what earlier runs left in `tmp/`: deletes every entry no write of this plan
    /// wants, and in each temp file one does, reads every chunk slot that lies inside the file
    /// and holds data (holes of the sparse file are skipped without reading), hashes it, and
    /// marks it written when it matches its chunk id. Nothing is created or written.
    /// Unreadable files count as empty; they are rewritten.
    pub(crate) fn resume(&self, writes: &[FileWrite]) -> Result<Resumed, SyncError> {
        let mut out = Resumed::default();
        let listing = match fs::read_dir(&self.tmp) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(SyncError::local("list", &self.tmp, e)),
        };
        let mut found: Vec<((Hash, u32), bool)> = Vec::new();
        for entry in listing {
            let entry = entry.map_err(|e| SyncError::local("list", &self.tmp, e))?;
            let name = entry.file_name();
            match name.to_str().and_then(parse_temp_name) {
                Some(key) => found.push((key, false)),
                None => {
                    let path = entry.path();
                    remove_entry(&path).map_err(|e| SyncError::local("remove", &path, e))?;
                    out.deleted += 1;
                }
            }
        }
        if found.is_empty() {
            return Ok(out);
        }
        found.sort_unstable_by_key(|(k, _)| *k);
        let mut kept: Vec<u32> = Vec::new();
        for i in 0..self.entries.len() as u32 {
            if let Ok(k) = found.binary_search_by_key(&self.name(i), |(k, _)| *k) {
                found[k].1 = true;
                kept.push(i);
            }
        }
        for ((hash, copy), used) in &found {
            if !used {
                let path = self.tmp.join(temp_name(hash, *copy));
                remove_entry(&path).map_err(|e| SyncError::local("remove", &path, e))?;
                out.deleted += 1;
            }
        }
        drop(found);
        let chunks = AtomicU64::new(0);
        let bytes = AtomicU64::new(0);
        for_each_io(&kept, |_, &i| {
            let (c, b) = self.survey(i, &writes[i as usize]);
            chunks.fetch_add(c, Ordering::Relaxed);
            bytes.fetch_add(b, Ordering::Relaxed);
            Ok(())
        })?;
        out.files = kept.len() as u64;
        out.chunks = chunks.into_inner();
        out.bytes = bytes.into_inner();
        self.resumed.store(out.chunks > 0, Ordering::Release);
        Ok(out)
    }

    /// Checks the chunk slots of one kept temp file; returns the chunks and bytes verified.
    fn survey(&self, i: u32, w: &FileWrite) -> (u64, u64) {
        let path = self.path(i);
        let index = &*self.index;
        let (_, f) = w.file(index);
        if f.chunks.len() != w.slots.len() {
            return (0, 0);
        }
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) => {
                tracing::debug!(path = %path.display(), "temp file unreadable, rewriting it: {e}");
                return (0, 0);
            }
        };
        let Ok(m) = file.metadata() else {
            return (0, 0);
        };
        // A sealed temp file of a read-only file, kept by a run that failed later: writable
        // for us again. One longer than its content (never written so): cut to size.
        let fixed = (|| {
            platform::make_temp_writable(&path, &m)?;
            if m.len() > f.size {
                File::options().write(true).open(&path)?.set_len(f.size)?;
            }
            Ok::<(), io::Error>(())
        })();
        if let Err(e) = fixed {
            tracing::debug!(path = %path.display(), "temp file unusable, rewriting it: {e}");
            let _ = fs::remove_file(&path);
            return (0, 0);
        }
        let len = m.len().min(f.size);
        let (mut chunks, mut bytes) = (0, 0);
        let mut buf = Vec::new();
        let mut offset = 0u64;
        for (slot, &ci) in w.slots.clone().zip(&f.chunks) {
            let c = &index.chunks[ci as usize];
            let end = offset + u64::from(c.len);
            if end <= len && holds_data(&file, offset, end) {
                buf.resize(c.len as usize, 0);
                if platform::read_exact_at(&file, &mut buf, offset).is_ok()
                    && Hash::of(&buf) == c.hash
                {
                    self.placed[slot as usize].store(true, Ordering::Release);
                    chunks += 1;
                    bytes += u64::from(c.len);
                }
            }
            offset = end;
        }
        (chunks, bytes)
    }
}

/// True when `file` may hold data somewhere in `[start, end)`: false only when the file system
/// says the whole span is a hole (never written). Where `SEEK_DATA` is not supported, true.
fn holds_data(file: &File, start: u64, end: u64) -> bool {
    #[cfg(target_os = "linux")]
    {
        match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(start)) {
            Ok(data) => data < end,
            Err(rustix::io::Errno::NXIO) => false,
            Err(_) => true,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, start, end);
        true
    }
}

/// Removes every entry of `tmp` (best effort): after a successful sync nothing in it is
/// wanted any more.
pub(crate) fn clear_tmp(tmp: &Path) {
    if let Ok(rd) = fs::read_dir(tmp) {
        for e in rd.flatten() {
            let _ = remove_entry(&e.path());
        }
    }
}

/// Threads for latency-bound file operations (create, fsync): more than the cores, since they
/// mostly wait on the file system.
const IO_THREADS: usize = 8;

/// Runs `f` on every item from [`IO_THREADS`] scoped threads; the first error wins.
pub(crate) fn for_each_io<T: Sync>(
    items: &[T],
    f: impl Fn(usize, &T) -> Result<(), SyncError> + Sync,
) -> Result<(), SyncError> {
    for_each_io_on(IO_THREADS, items, f)
}

/// [`for_each_io`] on `threads` threads.
pub(crate) fn for_each_io_on<T: Sync>(
    threads: usize,
    items: &[T],
    f: impl Fn(usize, &T) -> Result<(), SyncError> + Sync,
) -> Result<(), SyncError> {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<SyncError>> = Mutex::new(None);
    let threads = threads.min(items.len());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items.len() {
                        break;
                    }
                    if let Err(e) = f(i, &items[i]) {
                        failed.lock().expect("not poisoned").get_or_insert(e);
                        next.store(items.len(), Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
    });
    match failed.into_inner().expect("not poisoned") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Temp files one [`TargetWriter`] keeps open at most. Every writer (one per request batch
/// being written, one per local copy part) stays within this, so the open files of a sync are
/// bounded by a constant, whatever the number of files in flight: a batch of 1 MiB of small
/// files touches hundreds of them.
const WRITER_OPEN_FILES: usize = 16;

/// Writes verified plain chunk bytes to temp files and marks their targets written, keeping
/// at most [`WRITER_OPEN_FILES`] of them open, with the span it wrote in each.
pub(crate) struct TargetWriter<'a> {
    staging: &'a Staging,
    /// Oldest first; the oldest is closed (after starting its writeback) to open another.
    open: Vec<(u32, File, Span)>,
}

/// The bytes `[start, end)` of a file that one writer touched.
#[derive(Clone, Copy)]
struct Span {
    start: u64,
    end: u64,
}

impl<'a> TargetWriter<'a> {
    pub(crate) fn new(staging: &'a Staging) -> Self {
        TargetWriter {
            staging,
            open: Vec::with_capacity(WRITER_OPEN_FILES),
        }
    }

    /// Asks the kernel to start writing what this writer wrote to disk now, without waiting.
    ///
    /// The final `syncfs` then finds little left to flush: without this the kernel starts
    /// writeback only once gigabytes are dirty, and a large sync spent its last seconds
    /// waiting for the disk while nothing else ran. `POSIX_FADV_DONTNEED` starts asynchronous
    /// writeback of dirty pages (and drops clean ones, already on disk). Best effort.
    pub(crate) fn start_writeback(&self) {
        for (_, file, span) in &self.open {
            writeback(file, *span);
        }
    }

    /// Writes `data`, already verified as the chunk of `targets`, at every target that does
    /// not hold it yet, creating the temp file on its first write (the file system keeps
    /// what was never written as holes). A write that outlives a failed run is harmless: the
    /// file is named by its content, and the bytes are verified chunks of it.
    pub(crate) fn write(&mut self, targets: &[Target], data: &[u8]) -> Result<(), SyncError> {
        for t in targets {
            if self.staging.is_placed(t.slot) {
                continue;
            }
            let end = t.offset + data.len() as u64;
            let k = match self.open.iter().position(|(f, _, _)| *f == t.file) {
                Some(k) => k,
                None => {
                    if self.open.len() >= WRITER_OPEN_FILES {
                        let (_, file, span) = self.open.remove(0);
                        writeback(&file, span);
                    }
                    let path = self.staging.path(t.file);
                    let file = File::options()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&path)
                        .map_err(|e| SyncError::local("open", &path, e))?;
                    let span = Span {
                        start: t.offset,
                        end,
                    };
                    self.open.push((t.file, file, span));
                    self.open.len() - 1
                }
            };
            let (_, file, span) = &mut self.open[k];
            platform::write_all_at(file, data, t.offset)
                .map_err(|e| SyncError::local("write", &self.staging.path(t.file), e))?;
            span.start = span.start.min(t.offset);
            span.end = span.end.max(end);
            if let Some(flag) = self.staging.placed.get(t.slot as usize) {
                flag.store(true, Ordering::Release);
            }
        }
        Ok(())
    }
}

/// Starts asynchronous writeback of `span` of `file` (see [`TargetWriter::start_writeback`]).
fn writeback(file: &File, span: Span) {
    #[cfg(target_os = "linux")]
    {
        let len = std::num::NonZeroU64::new(span.end - span.start);
        if len.is_some() {
            let _ = rustix::fs::fadvise(file, span.start, len, rustix::fs::Advice::DontNeed);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, span);
}

/// What [`copy_local`] did.
#[derive(Debug, Default)]
pub(crate) struct CopyOutcome {
    /// Chunks (positions in [`Index::chunks`]) whose local copy could not be used.
    pub(crate) failed: Vec<u32>,
    /// Plain bytes written from local data.
    pub(crate) bytes: u64,
    /// Chunks copied.
    pub(crate) chunks: u64,
}

/// Bytes of local copies one thread takes at a time.
const COPY_PART: u64 = 32 << 20;

/// Copies chunks from local files into the temp files (those whose every target holds its
/// chunk already, resumed from an earlier run, are skipped). Every chunk is re-hashed after reading;
/// an unreadable source or a mismatch puts the chunk in [`CopyOutcome::failed`]. Only a failure
/// to write a temp file is an error. Parallel over parts of up to [`COPY_PART`] bytes of each
/// source file.
pub(crate) fn copy_local(
    dest: &Path,
    copies: &[LocalCopy],
    index: &Index,
    targets: &TargetTable,
    staging: &Staging,
    progress: &Meter,
) -> Result<CopyOutcome, SyncError> {
    let mut by_source: BTreeMap<&Path, Vec<&LocalCopy>> = BTreeMap::new();
    let wanted = |c: &&LocalCopy| targets.get(&c.chunk).is_some_and(|t| staging.wants(t));
    for c in copies.iter().filter(wanted) {
        by_source.entry(&c.source).or_default().push(c);
    }
    // Work items of at most COPY_PART bytes, so one large source keeps every core busy.
    let mut parts: Vec<(&Path, Vec<&LocalCopy>)> = Vec::new();
    for (source, mut copies) in by_source {
        copies.sort_by_key(|c| c.offset);
        let mut part = Vec::new();
        let mut bytes = 0u64;
        for c in copies {
            part.push(c);
            bytes += u64::from(c.len);
            if bytes >= COPY_PART {
                parts.push((source, std::mem::take(&mut part)));
                bytes = 0;
            }
        }
        if !part.is_empty() {
            parts.push((source, part));
        }
    }
    let outcomes: Vec<Result<CopyOutcome, SyncError>> = parts
        .into_par_iter()
        .map(|(source, copies)| {
            let mut out = CopyOutcome::default();
            let path = platform::under(dest, source);
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(path = %path.display(), "local source unreadable, downloading instead: {e}");
                    out.failed.extend(copies.iter().map(|c| c.chunk));
                    return Ok(out);
                }
            };
            let mut writer = TargetWriter::new(staging);
            let mut buf = Vec::new();
            for c in copies {
                let expected = &index.chunks[c.chunk as usize];
                buf.resize(c.len as usize, 0);
                let ok = match platform::read_exact_at(&file, &mut buf, c.offset) {
                    Ok(()) => Hash::of(&buf) == expected.hash,
                    Err(_) => false,
                };
                if !ok {
                    tracing::debug!(path = %path.display(), chunk = %expected.hash.short(), "local chunk changed, downloading instead");
                    out.failed.push(c.chunk);
                    continue;
                }
                let t = targets.get(&c.chunk).unwrap_or(&[]);
                writer.write(t, &buf)?;
                let written = buf.len() as u64 * t.len() as u64;
                progress.inc(written);
                out.bytes += written;
                out.chunks += 1;
            }
            writer.start_writeback();
            Ok(out)
        })
        .collect();
    let mut total = CopyOutcome::default();
    for o in outcomes {
        let o = o?;
        total.failed.extend(o.failed);
        total.bytes += o.bytes;
        total.chunks += o.chunks;
    }
    Ok(total)
}

/// A `SystemTime` from nanoseconds since the epoch (negative: before it).
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) fn system_time(ns: i64) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

/// Makes everything written below `dir` durable where one call can (`syncfs` on Linux);
/// `false` where each file and folder is flushed instead ([`platform::FLUSH_PER_FILE`]).
fn sync_filesystem(dir: &Path) -> Result<bool, SyncError> {
    platform::sync_filesystem(dir).map_err(|e| SyncError::local("sync the filesystem of", dir, e))
}

/// Checks that every chunk of every temp file was written, sets mtime and mode, then makes
/// them all durable (one `syncfs` on Linux, a flush per file elsewhere: `fsync`, or
/// `FlushFileBuffers` on Windows). Parallel ([`IO_THREADS`]).
///
/// The files are not hashed again: each chunk was verified against its BLAKE3 id on its way
/// in (download or local copy) and the index's chunk lists add up to its file sizes, so a
/// file whose chunks are all in place is the file the index describes. Reading every file back
/// cost ~10% of all CPU with eight clients on two cores; `hummel verify` re-hashes on demand.
pub(crate) fn seal(
    writes: &[FileWrite],
    staging: &Staging,
    tmp_dir: &Path,
) -> Result<(), SyncError> {
    seal_files(writes, staging)?;
    if !writes.is_empty() && !sync_filesystem(tmp_dir)? {
        tracing::debug!(
            files = writes.len(),
            "temp files made durable, file by file"
        );
    }
    Ok(())
}

fn seal_files(writes: &[FileWrite], staging: &Staging) -> Result<(), SyncError> {
    let index = &*staging.index;
    for_each_io(writes, |i, w| {
        let (rel, f) = w.file(index);
        let path = &staging.path(i as u32);
        let io = |op| move |e: io::Error| SyncError::local(op, path, e);
        let missing = staging.placed[w.slots.start as usize..w.slots.end as usize]
            .iter()
            .filter(|f| !f.load(Ordering::Acquire))
            .count();
        if missing > 0 {
            return Err(SyncError::Incomplete {
                path: rel.to_string(),
                missing: missing as u32,
            });
        }
        // A file without chunks was never written: create it. Any other exists, at its full
        // size (its last chunk ends there; resumed ones were cut to size).
        if w.slots.is_empty() {
            File::create(path).map_err(io("create"))?;
        }
        // Linux: by path, two calls per file instead of open, two calls and close; the flush is
        // one syncfs after all of them.
        platform::set_file_meta(path, f.mtime_ns, f.mode, platform::FLUSH_PER_FILE)
            .map_err(io("set mode and mtime of"))?;
        Ok(())
    })
}

/// What [`apply`] did.
#[derive(Debug, Default)]
pub(crate) struct ApplyOutcome {
    pub(crate) dirs_created: u64,
    pub(crate) files_deleted: u64,
    pub(crate) dirs_deleted: u64,
}

/// Removes whatever is at `path` without following symlinks (read-only files too). Missing is
/// fine.
fn remove_entry(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => platform::remove_dir_all(path).map(|()| true),
        Ok(m) if m.file_type().is_symlink() => platform::remove_symlink(path, &m).map(|()| true),
        Ok(_) => platform::remove_file(path).map(|()| true),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// The error of `op` on `path`: [`SyncError::InUse`] when another program holds the file open
/// (Windows, after the retries of the platform layer).
fn local_or_in_use(op: &'static str, path: &Path, e: io::Error) -> SyncError {
    if platform::is_in_use(&e) {
        SyncError::InUse {
            op,
            path: path.to_path_buf(),
            source: e,
        }
    } else {
        SyncError::local(op, path, e)
    }
}

/// Makes DEST the new revision: directories, renames, metadata fixes, deletes, directory modes.
/// `case_blind`: DEST's file system does not tell case apart. Call only after every temp file
/// is sealed.
pub(crate) fn apply(
    dest: &Path,
    plan: &SyncPlan,
    staging: &Staging,
    case_blind: bool,
) -> Result<ApplyOutcome, SyncError> {
    let mut out = ApplyOutcome::default();
    let index = &*staging.index;
    // On a file system that does not tell case apart, an extra whose name differs only in case
    // from an index entry (`Addons/X.pbo` where the revision now has `addons/x.pbo`) is that
    // entry: deleting it after the renames would delete what they placed. It is renamed to the
    // index's case first (deepest first, so each rename changes one name) and kept.
    let renamed_case = if case_blind {
        rename_case_only(dest, plan, index)?
    } else {
        HashSet::new()
    };
    // Folders whose entries change: flushed after the renames where files are flushed one by
    // one (Linux: one syncfs instead).
    let mut parents = BTreeSet::new();

    // Directories, parents first. Anything else in the way (a symlink above all) is removed
    // so that nothing below can be written through it. Kept writable for us until the end.
    for d in &plan.dirs {
        let (rel, mode) = d.dir(index);
        let path = rel.to_path(dest);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                platform::make_dir_writable(&path, platform::dir_mode(&m))
                    .map_err(|e| SyncError::local("set mode of", &path, e))?;
                continue;
            }
            Ok(_) => {
                tracing::info!(path = %path.display(), "removing non-directory where the index has a directory");
                remove_entry(&path).map_err(|e| local_or_in_use("remove", &path, e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SyncError::local("stat", &path, e)),
        }
        fs::create_dir(&path).map_err(|e| SyncError::local("create", &path, e))?;
        platform::set_dir_mode(&path, mode | 0o700)
            .map_err(|e| SyncError::local("set mode of", &path, e))?;
        parents.insert(path.parent().unwrap_or(dest).to_path_buf());
        out.dirs_created += 1;
    }

    // The burst: every verified temp file to its final name (over a read-only file too).
    for (i, w) in plan.writes.iter().enumerate() {
        let tmp = staging.path(i as u32);
        let path = w.file(index).0.to_path(dest);
        if let Ok(m) = fs::symlink_metadata(&path)
            && (m.is_dir() || m.file_type().is_symlink())
        {
            remove_entry(&path).map_err(|e| local_or_in_use("remove", &path, e))?;
        }
        crate::failpoint::hit("rename");
        platform::replace(&tmp, &path).map_err(|e| local_or_in_use("replace", &path, e))?;
        parents.insert(path.parent().unwrap_or(dest).to_path_buf());
    }
    if !parents.is_empty() && !sync_filesystem(dest)? {
        for dir in &parents {
            platform::flush_dir(dir).map_err(|e| SyncError::local("flush", dir, e))?;
        }
        tracing::debug!(
            folders = parents.len(),
            "renames made durable, folder by folder"
        );
    }

    // Right content, wrong mode or mtime.
    for m in &plan.touch {
        let (rel, f) = m.file(index);
        let path = rel.to_path(dest);
        platform::set_file_meta(&path, f.mtime_ns, f.mode, false)
            .map_err(|e| SyncError::local("set mode and mtime of", &path, e))?;
    }

    // Extras, deepest first, only now that everything else succeeded.
    for r in plan
        .deletes
        .iter()
        .filter(|r| !renamed_case.contains(&r.path))
    {
        let path = platform::under(dest, &r.path);
        crate::failpoint::hit("delete");
        if remove_entry(&path).map_err(|e| local_or_in_use("delete", &path, e))? {
            if r.is_dir() {
                out.dirs_deleted += 1;
            } else {
                out.files_deleted += 1;
            }
        }
    }

    // Final directory modes, deepest first.
    for d in plan.dirs.iter().rev() {
        let (rel, mode) = d.dir(index);
        let path = rel.to_path(dest);
        let current = platform::dir_mode(
            &fs::symlink_metadata(&path).map_err(|e| SyncError::local("stat", &path, e))?,
        );
        if !platform::dir_mode_matches(current, mode) {
            platform::set_dir_mode(&path, mode)
                .map_err(|e| SyncError::local("set mode of", &path, e))?;
        }
    }
    Ok(out)
}

/// Renames every extra of `plan` whose path differs only in case from an entry of `index` to
/// that entry's case (its last name only: the extras come deepest first); returns their paths.
fn rename_case_only(
    dest: &Path,
    plan: &SyncPlan,
    index: &Index,
) -> Result<HashSet<PathBuf>, SyncError> {
    use hummel_core::portable::case_fold;
    let mut renamed = HashSet::new();
    if plan.deletes.is_empty() {
        return Ok(renamed);
    }
    let wanted: HashMap<String, &str> = index
        .entries
        .iter()
        .map(|e| (case_fold(e.path.as_str()), e.path.as_str()))
        .collect();
    for r in &plan.deletes {
        let Some(rel) = r.path.to_str() else { continue };
        let Some(&target) = wanted.get(&case_fold(rel)) else {
            continue;
        };
        let from = platform::under(dest, &r.path);
        let name = target.rsplit('/').next().unwrap_or(target);
        let to = from.with_file_name(name);
        tracing::info!(
            from = rel,
            to = target,
            "renaming an entry whose name changed only in case"
        );
        // Through a name of its own: a rename to the same name in another case is the same
        // file, which some file systems (Wine's, among others) take as nothing to do.
        let between = from.with_file_name(format!(".{name}.hummel-case"));
        fs::rename(&from, &between).map_err(|e| local_or_in_use("rename", &from, e))?;
        fs::rename(&between, &to).map_err(|e| local_or_in_use("rename", &between, e))?;
        renamed.insert(r.path.clone());
    }
    Ok(renamed)
}

#[cfg(all(test, unix))]
mod tests {
    use std::fs::Permissions;
    use std::os::unix::fs::{FileExt, PermissionsExt};

    use hummel_core::{ChunkLocation, ChunkerConfig, Codec, DirEntry, Entry, EntryKind, RelPath};

    use super::*;
    use crate::plan::{DirAction, Removal};

    fn rp(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    /// A file entry of an index.
    fn file(
        path: &str,
        size: u64,
        mode: u32,
        mtime_ns: i64,
        hash: Hash,
        chunks: Vec<u32>,
    ) -> Entry {
        Entry {
            path: rp(path),
            kind: EntryKind::File(FileEntry {
                size,
                mode,
                mtime_ns,
                hash,
                chunks,
            }),
        }
    }

    fn index_of(entries: Vec<Entry>, chunks: Vec<ChunkLocation>) -> Arc<Index> {
        Arc::new(Index {
            revision: 1,
            created_unix: 0,
            chunker: ChunkerConfig::default(),
            root: None,
            entries,
            chunks,
            packs: vec![],
            info: Default::default(),
        })
    }

    /// A stored-raw chunk of `data` in pack 1.
    fn raw_chunk(data: &[u8]) -> ChunkLocation {
        ChunkLocation {
            hash: Hash::of(data),
            pack: 1,
            offset: 0,
            stored_len: data.len() as u32,
            len: data.len() as u32,
            codec: Codec::Raw,
        }
    }

    #[test]
    fn local_copies_are_rehashed_and_bad_ones_handed_back() {
        let dest = tempfile::tempdir().unwrap();
        let tmp = dest.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        fs::write(dest.path().join("src"), b"aaaabbbb").unwrap();
        // "out" is bbbb bbbb cccc: chunk 0 twice, then chunk 1.
        let out_file = file(
            "out",
            12,
            0o600,
            1_500_000_000_000_000_000,
            Hash::of(b"bbbbbbbbcccc"),
            vec![0, 0, 1],
        );
        let index = index_of(vec![out_file], vec![raw_chunk(b"bbbb"), raw_chunk(b"cccc")]);
        let writes = vec![FileWrite {
            entry: 0,
            slots: 0..3,
        }];
        let staging = Staging::new(&tmp, &writes, index.clone());
        let target = |offset, slot| Target {
            file: 0,
            offset,
            slot,
        };
        let targets = TargetTable::new(vec![
            (1, target(8, 2)),
            (0, target(0, 0)),
            (0, target(4, 1)),
        ]);
        let copies = vec![
            LocalCopy {
                source: "src".into(),
                offset: 4,
                len: 4,
                chunk: 0,
            },
            // The plan thought "cccc" was at offset 0; the file says otherwise.
            LocalCopy {
                source: "src".into(),
                offset: 0,
                len: 4,
                chunk: 1,
            },
        ];
        let out = copy_local(
            dest.path(),
            &copies,
            &index,
            &targets,
            &staging,
            &Meter::new(false, 0, None),
        )
        .unwrap();
        assert_eq!(out.failed, [1]);
        assert_eq!((out.bytes, out.chunks), (8, 1));
        // The chunk handed back is not in the file yet: sealing it now is refused.
        assert!(matches!(
            seal(&writes, &staging, dest.path()),
            Err(SyncError::Incomplete { missing: 1, .. })
        ));
        // Once it is written (as a download would), the file seals.
        TargetWriter::new(&staging)
            .write(targets.get(&1).unwrap(), b"cccc")
            .unwrap();
        seal(&writes, &staging, dest.path()).unwrap();
        assert_eq!(fs::read(staging.path(0)).unwrap(), b"bbbbbbbbcccc");
        let m = fs::metadata(staging.path(0)).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            m.modified().unwrap(),
            system_time(1_500_000_000_000_000_000)
        );
    }

    #[test]
    fn apply_replaces_what_is_in_the_way_without_following_symlinks() {
        let dest = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let tmp = dest.path().join(".hummel/tmp");
        fs::create_dir_all(&tmp).unwrap();
        // "d" should be a directory but is a symlink out; "f" should be a file but is a directory.
        std::os::unix::fs::symlink(outside.path(), dest.path().join("d")).unwrap();
        fs::create_dir_all(dest.path().join("f/inner")).unwrap();
        fs::write(dest.path().join("f/inner/x"), b"x").unwrap();
        fs::write(dest.path().join("extra"), b"x").unwrap();
        let index = index_of(
            vec![
                Entry {
                    path: rp("d"),
                    kind: EntryKind::Dir(DirEntry { mode: 0o750 }),
                },
                file("d/file", 2, 0o644, 0, Hash::of(b"hi"), vec![]),
                file("f", 0, 0o644, 0, Hash::of(b""), vec![]),
            ],
            vec![],
        );
        let writes = vec![
            FileWrite {
                entry: 1,
                slots: 0..0,
            },
            FileWrite {
                entry: 2,
                slots: 0..0,
            },
        ];
        let staging = Staging::new(&tmp, &writes, index);
        fs::write(staging.path(0), b"hi").unwrap();
        fs::write(staging.path(1), b"").unwrap();
        let plan = SyncPlan {
            dirs: vec![DirAction {
                entry: 0,
                create: true,
            }],
            writes,
            deletes: vec![
                Removal {
                    path: "f/inner/x".into(),
                    kind: "file",
                },
                Removal {
                    path: "f/inner".into(),
                    kind: "directory",
                },
                Removal {
                    path: "extra".into(),
                    kind: "file",
                },
            ],
            ..SyncPlan::default()
        };
        let out = apply(dest.path(), &plan, &staging, false).unwrap();
        assert_eq!(out.dirs_created, 1);
        assert_eq!(
            out.files_deleted, 1,
            "only 'extra' was still there to delete"
        );
        let d = fs::symlink_metadata(dest.path().join("d")).unwrap();
        assert!(d.is_dir());
        assert_eq!(d.permissions().mode() & 0o777, 0o750);
        assert_eq!(fs::read(dest.path().join("d/file")).unwrap(), b"hi");
        assert!(
            fs::symlink_metadata(dest.path().join("f"))
                .unwrap()
                .is_file()
        );
        assert!(!dest.path().join("extra").exists());
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    }
    #[test]
    fn temp_names_follow_content_and_round_trip() {
        let h = Hash::of(b"x");
        assert_eq!(temp_name(&h, 0), format!("{}.part", h.to_hex()));
        assert_eq!(parse_temp_name(&temp_name(&h, 0)), Some((h, 0)));
        assert_eq!(parse_temp_name(&temp_name(&h, 3)), Some((h, 3)));
        for other in [
            "0.part",
            "x.part",
            &format!("{}.0.part", h.to_hex()),
            &format!("{}.01.part", h.to_hex()),
            &format!("{}.+1.part", h.to_hex()),
            "lock",
        ] {
            assert_eq!(parse_temp_name(other), None, "{other}");
        }
        let upper = format!("{}.part", h.to_hex().to_uppercase());
        assert_eq!(parse_temp_name(&upper), None);
        // Two writes of one content get two temp files, numbered in plan order.
        let index = index_of(
            vec![
                file("a", 1, 0o644, 0, h, vec![]),
                file("b", 1, 0o644, 0, Hash::of(b"y"), vec![]),
                file("c", 1, 0o644, 0, h, vec![]),
            ],
            vec![],
        );
        let writes: Vec<FileWrite> = (0..3)
            .map(|entry| FileWrite { entry, slots: 0..0 })
            .collect();
        let staging = Staging::new(Path::new("t"), &writes, index);
        assert_eq!(staging.path(0), Path::new("t").join(temp_name(&h, 0)));
        assert_eq!(staging.path(2), Path::new("t").join(temp_name(&h, 1)));
    }

    #[test]
    fn resume_keeps_verified_chunks_and_drops_the_rest() {
        let dest = tempfile::tempdir().unwrap();
        let tmp = dest.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let content = b"aaaabbbbcccc";
        let index = index_of(
            vec![file("x", 12, 0o444, 0, Hash::of(content), vec![0, 1, 2])],
            vec![raw_chunk(b"aaaa"), raw_chunk(b"bbbb"), raw_chunk(b"cccc")],
        );
        let writes = vec![FileWrite {
            entry: 0,
            slots: 0..3,
        }];
        let targets = TargetTable::new(
            [(0u32, 0u32), (1, 1), (2, 2)]
                .into_iter()
                .map(|(ci, slot)| {
                    let offset = u64::from(slot) * 4;
                    (
                        ci,
                        Target {
                            file: 0,
                            offset,
                            slot,
                        },
                    )
                })
                .collect(),
        );
        // An earlier run: chunk 0 written, chunk 1 torn (a kill mid-write), chunk 2 never
        // written (a hole); plus a temp file of content no longer wanted and a stray file.
        let f = File::create(Staging::new(&tmp, &writes, index.clone()).path(0)).unwrap();
        f.set_len(12).unwrap();
        f.write_all_at(b"aaaa", 0).unwrap();
        f.write_all_at(b"bbXX", 4).unwrap();
        f.set_permissions(Permissions::from_mode(0o444)).unwrap();
        drop(f);
        fs::write(tmp.join(temp_name(&Hash::of(b"gone"), 0)), b"old").unwrap();
        fs::write(tmp.join("7.part"), b"old naming").unwrap();

        let staging = Staging::new(&tmp, &writes, index.clone());
        let resumed = staging.resume(&writes).unwrap();
        assert_eq!(
            resumed,
            Resumed {
                files: 1,
                chunks: 1,
                bytes: 4,
                deleted: 2
            }
        );
        assert!(staging.resumed_any());
        assert!(staging.is_placed(0) && !staging.is_placed(1) && !staging.is_placed(2));
        assert!(
            !staging.wants(targets.get(&0).unwrap()) && staging.wants(targets.get(&1).unwrap())
        );
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 1);
        // The rest arrives; a chunk already there is not written again.
        let mut writer = TargetWriter::new(&staging);
        writer.write(targets.get(&0).unwrap(), b"!!!!").unwrap();
        writer.write(targets.get(&1).unwrap(), b"bbbb").unwrap();
        writer.write(targets.get(&2).unwrap(), b"cccc").unwrap();
        drop(writer);
        seal(&writes, &staging, &tmp).unwrap();
        assert_eq!(fs::read(staging.path(0)).unwrap(), content);

        // A sealed file kept by a run that failed later is taken over whole.
        let again = Staging::new(&tmp, &writes, index.clone());
        let resumed = again.resume(&writes).unwrap();
        assert_eq!((resumed.chunks, resumed.bytes), (3, 12));
        seal(&writes, &again, &tmp).unwrap();
        assert_eq!(fs::read(again.path(0)).unwrap(), content);
    }
}
