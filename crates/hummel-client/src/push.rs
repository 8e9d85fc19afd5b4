//! `hummel push`'s engine: publish a local folder at a prefix of a master's repository,
//! uploading only the chunks the master lacks, reading every file once.
//!
//! The entry point is [`push()`] ([`PushOptions`] → [`PushReport`]); its failures are
//! [`PushError`]s, one line each.
//!
//! # Flow
//! 1. The master's parameters (chunker, zstd level, pack target, current revision: the push's
//!    base) from an empty missing query, then `walk`: every folder and regular file below
//!    the local folder (a symlink or special file fails the push naming it; a top-level
//!    `.hummel` is skipped), with each file's size and mtime.
//! 2. One pass over the files (`Pipeline`, on one worker thread per core, at most
//!    `WORKERS_MAX`, inside one blocking task, off the runtime). Each worker takes the next
//!    file and reads it straight into its *window* (one buffer per worker, reused for every
//!    window), where it is cut with the master's chunker and chunks and file are hashed in
//!    the same pass, a read step at a time while the bytes are in cache. A window holds
//!    at most [`WINDOW_BYTES`] of chunk bytes (less with
//!    more than two workers: `WINDOWS_BYTES_TOTAL` shared; never less than the chunker's
//!    largest chunk) or [`MAX_PUSH_MISSING`] ids, filled across files. A full window (and
//!    the last one) is settled: its ids not yet claimed are sent to the master (`POST /api/v1/push/missing`
//!    with the push id and prefix, from the worker thread through the runtime's handle); each
//!    chunk the master lacks is *claimed* in a set shared by the workers (so a chunk in two
//!    files, or twice in one, goes up once), the claimed ones are compressed at the master's
//!    zstd level on all cores (rayon) from where they lie in the window, which is then reused.
//!    The compressed batch goes to the packer thread.
//! 3. The packer appends batches to a pack of the usual format and seals it at the master's
//!    pack target; sealed packs go to the runtime, which uploads several at once
//!    (`PUT /api/v1/push/packs/{hash}?push=ID`). The master verifies and stages each; a push
//!    that stops here resumes where it stopped (the next missing query no longer lists staged
//!    chunks).
//! 4. The manifest (paths, modes, sizes, mtimes, file hashes, chunk lists, in path order) is
//!    published with the base revision and the push id; the master refuses it when someone
//!    else changed the prefix since.
//!
//! # Why windows, and what they cost
//! The master must be asked before compressing (compressing what it holds is most of the CPU
//! of a small change), and the chunks must not be read twice (the old two-pass push read and
//! chunked every file again to compress what was missing). A window holds the chunks between
//! cutting and asking, so every byte is read, cut and hashed once, and only missing chunks are
//! compressed. Windows span files, so a tree of small files asks once per window, not per
//! file; 32 MiB is ~500 ids of 64 KiB chunks, one round trip per 32 MiB read.
//!
//! # Bounds
//! Memory is bounded by windows and packs, never by file size: per worker one window buffer
//! (its chunk bytes, plus less than a chunk read and not yet cut, plus a read step) and its
//! compressed batch (the windows' chunk bytes together at most `WINDOWS_BYTES_TOTAL`);
//! the batch the packer is taking (`BATCHES_QUEUED` more per worker); one open pack;
//! `PACKS_QUEUED` sealed packs and [`UPLOADS_AT_ONCE`] uploading (each at most the master's
//! pack target, itself capped at half of [`MAX_PUSH_PACK`], plus one chunk, so a pack never
//! exceeds what the master takes).
//! The claimed set and the manifest grow with the number of chunks (32 bytes an id), as the
//! published index does.
//!
//! # A file that changes while it is pushed
//! Chunks and file hash come from the same read, so what is published is always consistent
//! with what is uploaded. A file written to while it is read would be published torn
//! (partly old, partly new), so after its last byte the open file's size and mtime must still
//! be the walk's (which the manifest names) and the bytes read its size; otherwise the push
//! fails with [`PushError::Changed`].
//!
//! # Test hooks (environment)
//! - `HUMMEL_PUSH_STOP_AFTER_PACKS=N`: the push fails after uploading N packs, as an
//!   interrupted one ([`PushError::Stopped`]).
//! - `HUMMEL_PUSH_BEFORE_PUBLISH=PATH`: before publishing, the push creates
//!   `PATH.waiting.PID` and waits (a minute at most) until `PATH` exists: two pushes made on
//!   the same base publish when the test says.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hummel_core::chunk::Cutter;
use hummel_core::codec::ChunkCompressor;
use hummel_core::index::RESERVED_TOP_NAME;
use hummel_core::pack::PackWriter;
use hummel_core::{ChunkerConfig, Codec, Hash, RelPath};
use hummel_net::MasterApi;
use hummel_proto::api::{
    MAX_PUSH_MISSING, MAX_PUSH_PACK, PushDir, PushFile, PushMissingRequest, PushMissingResponse,
    PushPublishRequest,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;

pub use crate::error::PushError;

/// Chunk bytes a worker holds between cutting them and asking the master about them, at most...
pub const WINDOW_BYTES: u64 = 32 << 20;
/// ... and all workers together at most (more workers, smaller windows, down to
/// `WINDOW_BYTES_MIN`).
const WINDOWS_BYTES_TOTAL: u64 = 64 << 20;
/// The smallest window the workers share `WINDOWS_BYTES_TOTAL` into.
const WINDOW_BYTES_MIN: u64 = 8 << 20;
/// Workers at most: cutting and hashing run ~400 MB/s a core, and compression uses every core
/// (rayon) whatever their number, so more would only hold more windows.
const WORKERS_MAX: usize = 8;
/// Bytes read from a file at once: they are cut and hashed while still in the CPU's cache.
const READ_STEP: usize = 1 << 20;
/// Packs uploaded at once.
pub const UPLOADS_AT_ONCE: usize = 4;
/// Compressed batches waiting for the packer, per worker (0: a worker hands its batch to the
/// packer and waits for it to be taken; packing a batch is a copy and a hash, so the wait is
/// short, and no finished window sits in memory twice).
const BATCHES_QUEUED: usize = 0;
/// Sealed packs waiting for an upload slot.
const PACKS_QUEUED: usize = 2;
/// Test hook: the push fails after uploading this many packs (an interrupted push).
const STOP_AFTER_PACKS_ENV: &str = "HUMMEL_PUSH_STOP_AFTER_PACKS";
/// Test hook: before publishing, the push creates `PATH.waiting.PID` and waits (a minute at
/// most) until `PATH` exists.
const BEFORE_PUBLISH_ENV: &str = "HUMMEL_PUSH_BEFORE_PUBLISH";
/// How long `BEFORE_PUBLISH_ENV` waits at most.
const BEFORE_PUBLISH_WAIT: Duration = Duration::from_secs(60);

/// What a push is asked to do. The master (URL, write token, TLS) is the [`MasterApi`]
/// handed to [`push()`].
#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    /// The folder to publish.
    pub local_dir: PathBuf,
    /// Where in the repository it goes (`None`: the whole repository).
    pub prefix: Option<RelPath>,
    /// The new revision's message (the master's default when `None`).
    pub message: Option<String>,
    /// Ask and check everything; upload and publish nothing.
    pub dry_run: bool,
    /// Publish even if it removes most of the current revision's files or bytes.
    pub allow_mass_delete: bool,
    /// Draw a progress line on stderr while reading and uploading.
    pub progress: bool,
}

/// What a push did (`hummel push --json` prints it).
#[derive(Clone, Debug, Serialize)]
pub struct PushReport {
    /// The revision published (`None`: a dry run, or nothing changed).
    pub revision: Option<u64>,
    /// The revision the push read.
    pub base: Option<u64>,
    /// The current revision when nothing was published.
    pub current: Option<u64>,
    /// The push's id, as the master's status shows it.
    pub push: String,
    /// Chunks the master lacked when the push asked (what a dry run would upload).
    pub chunks_missing: u64,
    /// Bytes of packs uploaded.
    pub bytes_uploaded: u64,
    /// Chunks in those packs.
    pub chunks_uploaded: u64,
    /// Packs uploaded.
    pub packs_uploaded: u64,
    /// Bytes read from the local folder.
    pub bytes_read: u64,
    /// From start to publish.
    pub duration_ms: u64,
    /// Nothing was uploaded or published.
    pub dry_run: bool,
    /// What the publish changes (or would).
    pub files_added: u64,
    /// ...
    pub files_updated: u64,
    /// ...
    pub files_removed: u64,
}

/// A new push id: [`hummel_proto::api::PUSH_ID_LEN`] random lowercase hex characters.
pub fn new_push_id() -> String {
    let bytes: [u8; hummel_proto::api::PUSH_ID_LEN / 2] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file found below the local folder.
#[derive(Clone, Debug)]
pub(crate) struct LocalFile {
    /// Relative path, `/`-separated.
    pub(crate) rel: String,
    /// Where it is.
    pub(crate) abs: PathBuf,
    /// Unix permission bits.
    pub(crate) mode: u32,
    /// Size when walked.
    pub(crate) size: u64,
    /// Modification time when walked, nanoseconds since the epoch.
    pub(crate) mtime_ns: i64,
}

#[cfg(unix)]
fn mode_of(md: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    md.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn mode_of(md: &fs::Metadata) -> u32 {
    if md.is_dir() { 0o755 } else { 0o644 }
}

fn mtime_ns_of(md: &fs::Metadata) -> i64 {
    md.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Every folder and regular file below `root`, by relative path. CPU and file work; call from
/// a blocking context.
pub(crate) fn walk(root: &Path) -> Result<(Vec<PushDir>, Vec<LocalFile>), PushError> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let list = fs::read_dir(&dir).map_err(|e| PushError::local("list", &dir, e))?;
        for e in list {
            let e = e.map_err(|e| PushError::local("list", &dir, e))?;
            let name = e
                .file_name()
                .into_string()
                .map_err(|n| PushError::BadName {
                    path: dir.display().to_string(),
                    reason: format!("not a UTF-8 name: {n:?}"),
                })?;
            if rel.is_empty() && name == RESERVED_TOP_NAME {
                continue;
            }
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            RelPath::new(&child).map_err(|err| PushError::BadName {
                path: child.clone(),
                reason: err.to_string(),
            })?;
            let abs = e.path();
            let md = fs::symlink_metadata(&abs).map_err(|e| PushError::local("stat", &abs, e))?;
            if md.is_dir() {
                dirs.push(PushDir {
                    path: child.clone(),
                    mode: mode_of(&md),
                });
                stack.push((abs, child));
            } else if md.is_file() {
                files.push(LocalFile {
                    rel: child,
                    abs,
                    mode: mode_of(&md),
                    size: md.len(),
                    mtime_ns: mtime_ns_of(&md),
                });
            } else {
                return Err(PushError::Unsupported { path: abs });
            }
        }
    }
    dirs.sort_by(|a, b| a.path.cmp(&b.path));
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok((dirs, files))
}

/// What the pipeline asks the master while it reads: which of these chunks it lacks (called
/// from worker threads; blocks).
pub(crate) trait MissingChunks: Sync {
    /// The ones of `chunks` (at most [`MAX_PUSH_MISSING`]) the master holds in neither a
    /// published nor a staged pack.
    fn missing(&self, chunks: Vec<Hash>) -> Result<Vec<Hash>, PushError>;
}

/// [`MissingChunks`] over HTTP, naming the push: the worker thread waits on the runtime.
struct AskMaster {
    api: MasterApi,
    runtime: tokio::runtime::Handle,
    push: String,
    prefix: Option<String>,
}

impl AskMaster {
    fn request(&self, chunks: Vec<Hash>) -> PushMissingRequest {
        PushMissingRequest {
            chunks,
            push: Some(self.push.clone()),
            prefix: self.prefix.clone(),
        }
    }
}

impl MissingChunks for AskMaster {
    fn missing(&self, chunks: Vec<Hash>) -> Result<Vec<Hash>, PushError> {
        let request = self.request(chunks);
        let answer = self
            .runtime
            .block_on(self.api.push_missing(&request))
            .map_err(|e| PushError::master(&self.api, e))?;
        Ok(answer.missing)
    }
}

/// How the pipeline cuts, compresses and packs (from the master's parameters).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PipelineParams {
    pub(crate) chunker: ChunkerConfig,
    pub(crate) zstd_level: i32,
    pub(crate) pack_target: u64,
    /// False for a dry run: ask and count, compress and pack nothing.
    pub(crate) upload: bool,
}

/// The pipeline's bounds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Chunk bytes in a window (raised to the chunker's largest chunk).
    pub(crate) window_bytes: u64,
    /// Ids in a window (at most [`MAX_PUSH_MISSING`]).
    pub(crate) window_chunks: usize,
    /// Worker threads.
    pub(crate) workers: usize,
}

impl Default for Limits {
    /// One worker per core (at most `WORKERS_MAX`), sharing `WINDOWS_BYTES_TOTAL`.
    fn default() -> Limits {
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, WORKERS_MAX);
        Limits {
            window_bytes: (WINDOWS_BYTES_TOTAL / workers as u64)
                .clamp(WINDOW_BYTES_MIN, WINDOW_BYTES),
            window_chunks: MAX_PUSH_MISSING,
            workers,
        }
    }
}

/// A sealed pack on its way to the master.
#[derive(Debug)]
pub(crate) struct SealedPack {
    pub(crate) hash: Hash,
    pub(crate) bytes: PackBytes,
    pub(crate) chunks: u64,
}

/// Pack buffers whose packs went up, kept for the next packs. A pack buffer is as large as
/// the master's pack target (16 MiB), and a fresh one costs a page fault and a zeroed page
/// per 4 KiB written, then an unmapping, on every pack (about a tenth of the push's CPU).
/// It keeps no more buffers than were ever in use at once.
#[derive(Clone, Debug, Default)]
struct PackBuffers(Arc<Mutex<Vec<Vec<u8>>>>);

impl PackBuffers {
    /// An empty buffer of at least `capacity` bytes.
    fn take(&self, capacity: usize) -> Vec<u8> {
        let mut buf = self
            .0
            .lock()
            .expect("pack buffers")
            .pop()
            .unwrap_or_default();
        buf.clear();
        buf.reserve(capacity);
        buf
    }
}

/// A sealed pack's bytes; dropped (uploaded, or the push failed), its buffer goes back to
/// the [`PackBuffers`] it came from.
#[derive(Debug)]
pub(crate) struct PackBytes {
    buf: Vec<u8>,
    home: PackBuffers,
}

impl std::ops::Deref for PackBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf
    }
}

impl AsRef<[u8]> for PackBytes {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for PackBytes {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.capacity() > 0 {
            self.home.0.lock().expect("pack buffers").push(buf);
        }
    }
}

/// What the pass over the files produced.
#[derive(Debug)]
pub(crate) struct PipelineOutcome {
    /// Every file, in path order.
    pub(crate) manifest: Vec<PushFile>,
    /// Chunks the master lacked (each counted once).
    pub(crate) chunks_missing: u64,
    /// Bytes read.
    pub(crate) bytes_read: u64,
    /// The most chunk bytes one window held.
    pub(crate) peak_window_bytes: u64,
}

/// A compressed chunk on its way into a pack.
struct Stored {
    hash: Hash,
    codec: Codec,
    bytes: Vec<u8>,
    len: u32,
}

/// A worker's window: chunks cut and not yet settled, where they were read. `buf[..cut]`
/// holds the window's chunks (`chunks` names them), `buf[cut..filled]` bytes read and not yet
/// cut (less than a chunk's worth between reads). One buffer per worker, reused for every
/// window: each byte is copied once, from the file into here, and cut, hashed and compressed
/// where it lies.
struct Window {
    buf: Vec<u8>,
    chunks: Vec<(Hash, Range<usize>)>,
    cut: usize,
    filled: usize,
}

impl Window {
    /// A window for `window_bytes` of chunks (the worker's bound, at least a chunk), chunks of
    /// at most `max` bytes, and reads of `READ_STEP`.
    fn new(window_bytes: usize, max: usize) -> Window {
        Window {
            buf: vec![0; window_bytes + max + READ_STEP],
            chunks: Vec::new(),
            cut: 0,
            filled: 0,
        }
    }

    /// Forgets the settled chunks and moves what is read and not yet cut to the front.
    fn clear(&mut self) {
        self.chunks.clear();
        self.buf.copy_within(self.cut..self.filled, 0);
        self.filled -= self.cut;
        self.cut = 0;
    }
}

/// The one pass over the files: shared state of the workers.
struct Pipeline<'a> {
    files: &'a [LocalFile],
    params: PipelineParams,
    limits: Limits,
    cutter: Cutter,
    master: &'a dyn MissingChunks,
    /// Chunks some worker has taken on uploading (or counted, in a dry run).
    claimed: Mutex<HashSet<Hash>>,
    next: AtomicUsize,
    /// Set on the first failure: the others stop at their next chunk.
    stop: AtomicBool,
    bytes_read: AtomicU64,
    peak_window: AtomicU64,
    /// Chunks claimed so far (for the progress line while the pass runs).
    claimed_count: &'a AtomicU64,
    progress: &'a ProgressBar,
}

thread_local! {
    /// One zstd context per thread and level (rayon's threads compress for every worker).
    static COMPRESSOR: std::cell::RefCell<Option<(i32, ChunkCompressor)>> =
        const { std::cell::RefCell::new(None) };
}

/// Compresses one chunk with this thread's compressor at `level`.
fn compress(level: i32, hash: Hash, data: &[u8]) -> Result<Stored, PushError> {
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let compressor = match &mut *cell {
            Some((l, c)) if *l == level => c,
            slot => {
                let c = ChunkCompressor::new(level).map_err(|e| PushError::Parameters {
                    reason: format!("zstd level {level}: {e}"),
                })?;
                &mut slot.insert((level, c)).1
            }
        };
        let (codec, bytes) = compressor.compress(data);
        Ok(Stored {
            hash,
            codec,
            bytes,
            len: u32::try_from(data.len())
                .map_err(|_| PushError::Internal("chunk over 4 GiB".into()))?,
        })
    })
}

impl Pipeline<'_> {
    /// A worker: files until none is left, then its last window.
    fn work(&self, batches: &SyncSender<Vec<Stored>>) -> Result<Vec<(usize, PushFile)>, PushError> {
        let mut window = Window::new(self.window_bytes(), self.cutter.max());
        let mut done = Vec::new();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(PushError::Cancelled);
            }
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(f) = self.files.get(i) else { break };
            done.push((i, self.read(f, &mut window, batches)?));
        }
        self.settle(&mut window, batches)?;
        Ok(done)
    }

    /// Chunk bytes in a window at most: the limit, and never less than a chunk.
    fn window_bytes(&self) -> usize {
        usize::try_from(self.limits.window_bytes)
            .unwrap_or(usize::MAX)
            .clamp(self.cutter.max(), usize::MAX / 4)
    }

    /// Reads, cuts and hashes one file into `window`, settling it as it fills.
    fn read(
        &self,
        f: &LocalFile,
        window: &mut Window,
        batches: &SyncSender<Vec<Stored>>,
    ) -> Result<PushFile, PushError> {
        let mut file = File::open(&f.abs).map_err(|e| PushError::local("read", &f.abs, e))?;
        let window_bytes = self.window_bytes();
        let window_chunks = self.limits.window_chunks.clamp(1, MAX_PUSH_MISSING);
        let mut chunks = Vec::new();
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        let mut last = false;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(PushError::Cancelled);
            }
            while let Some(len) = self
                .cutter
                .cut(&window.buf[window.cut..window.filled], last)
            {
                if !window.chunks.is_empty()
                    && (window.cut + len > window_bytes || window.chunks.len() >= window_chunks)
                {
                    self.settle(window, batches)?;
                    continue;
                }
                let at = window.cut..window.cut + len;
                let data = &window.buf[at.clone()];
                let hash = Hash::of(data);
                hasher.update(data);
                chunks.push(hash);
                window.chunks.push((hash, at));
                window.cut += len;
                size += len as u64;
                self.peak_window
                    .fetch_max(window.cut as u64, Ordering::Relaxed);
                self.bytes_read.fetch_add(len as u64, Ordering::Relaxed);
                self.progress.inc(len as u64);
            }
            if last {
                break;
            }
            // Less than a chunk is left uncut, so the buffer has room for a read step.
            let end = (window.filled + READ_STEP).min(window.buf.len());
            match file.read(&mut window.buf[window.filled..end]) {
                Ok(0) => last = true,
                Ok(n) => window.filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(PushError::local("read", &f.abs, e)),
            }
        }
        let now = file
            .metadata()
            .map_err(|e| PushError::local("stat", &f.abs, e))?;
        if size != f.size || now.len() != f.size || mtime_ns_of(&now) != f.mtime_ns {
            return Err(PushError::Changed {
                path: f.abs.clone(),
            });
        }
        Ok(PushFile {
            path: f.rel.clone(),
            size,
            mode: f.mode,
            mtime_ns: f.mtime_ns,
            hash: hasher.finalize().into(),
            chunks,
        })
    }

    /// Asks the master about the window's unclaimed ids, claims what it lacks, compresses the
    /// claimed chunks and hands them to the packer; the window is empty afterwards.
    fn settle(
        &self,
        window: &mut Window,
        batches: &SyncSender<Vec<Stored>>,
    ) -> Result<(), PushError> {
        let batch = self.claim_and_compress(window);
        window.clear();
        match batch? {
            Some(batch) => batches.send(batch).map_err(|_| PushError::Cancelled),
            None => Ok(()),
        }
    }

    /// The chunks of `window` the master lacks and no other window took, claimed and
    /// compressed (`None`: nothing to upload).
    fn claim_and_compress(&self, window: &Window) -> Result<Option<Vec<Stored>>, PushError> {
        let chunks = &window.chunks;
        if chunks.is_empty() {
            return Ok(None);
        }
        let ask: Vec<Hash> = {
            let claimed = self.claimed.lock().expect("claimed");
            let mut seen = HashSet::with_capacity(chunks.len());
            chunks
                .iter()
                .map(|(h, _)| *h)
                .filter(|h| !claimed.contains(h) && seen.insert(*h))
                .collect()
        };
        if ask.is_empty() {
            return Ok(None);
        }
        let missing: HashSet<Hash> = self.master.missing(ask)?.into_iter().collect();
        let mine: Vec<&(Hash, Range<usize>)> = {
            let mut claimed = self.claimed.lock().expect("claimed");
            chunks
                .iter()
                .filter(|(h, _)| missing.contains(h) && claimed.insert(*h))
                .collect()
        };
        self.claimed_count
            .fetch_add(mine.len() as u64, Ordering::Relaxed);
        if mine.is_empty() || !self.params.upload {
            return Ok(None);
        }
        let level = self.params.zstd_level;
        mine.into_par_iter()
            .map(|(hash, at)| compress(level, *hash, &window.buf[at.clone()]))
            .collect::<Result<Vec<Stored>, PushError>>()
            .map(Some)
    }
}

/// The packer: batches into packs of `target` bytes, each handed to `sink` when sealed. When
/// the workers stopped on a failure, the last pack is not sealed.
fn pack(
    batches: Receiver<Vec<Stored>>,
    target: u64,
    stop: &AtomicBool,
    sink: &mut (dyn FnMut(SealedPack) -> Result<(), PushError> + Send),
) -> Result<(), PushError> {
    let capacity = usize::try_from(target.min(MAX_PUSH_PACK)).unwrap_or(0) + (1 << 20);
    let internal = |e: std::io::Error| PushError::Internal(format!("pack writer: {e}"));
    let buffers = PackBuffers::default();
    let mut open: Option<(PackWriter<Vec<u8>>, u64)> = None;
    let mut seal = |w: PackWriter<Vec<u8>>, chunks: u64| -> Result<(), PushError> {
        let done = w.finish().map_err(internal)?;
        sink(SealedPack {
            hash: done.hash,
            bytes: PackBytes {
                buf: done.writer,
                home: buffers.clone(),
            },
            chunks,
        })
    };
    for batch in batches {
        for c in batch {
            let (w, count) = match &mut open {
                Some(o) => o,
                empty => empty.insert((
                    PackWriter::new(buffers.take(capacity)).map_err(internal)?,
                    0,
                )),
            };
            w.add(c.hash, c.codec, &c.bytes, c.len).map_err(internal)?;
            *count += 1;
            if w.len() >= target
                && let Some((full, n)) = open.take()
            {
                seal(full, n)?;
            }
        }
    }
    if stop.load(Ordering::Relaxed) {
        return Err(PushError::Cancelled);
    }
    if let Some((last, n)) = open.take() {
        seal(last, n)?;
    }
    Ok(())
}

/// Reads every file once: manifest, missing chunks asked and claimed, claimed chunks
/// compressed and packed, each sealed pack handed to `sink` (on the packer thread). Blocks;
/// call from a blocking context. The first failure stops the workers; it is the one returned
/// (not the [`PushError::Cancelled`] of the others).
pub(crate) fn run_pipeline(
    files: &[LocalFile],
    params: PipelineParams,
    limits: Limits,
    master: &dyn MissingChunks,
    progress: &ProgressBar,
    claimed_count: &AtomicU64,
    mut sink: impl FnMut(SealedPack) -> Result<(), PushError> + Send,
) -> Result<PipelineOutcome, PushError> {
    let workers = limits.workers.clamp(1, files.len().max(1));
    let pipeline = Pipeline {
        files,
        params,
        limits,
        cutter: Cutter::new(&params.chunker),
        master,
        claimed: Mutex::new(HashSet::new()),
        next: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        bytes_read: AtomicU64::new(0),
        peak_window: AtomicU64::new(0),
        claimed_count,
        progress,
    };
    let (batch_tx, batch_rx) = sync_channel::<Vec<Stored>>(BATCHES_QUEUED * workers);
    // A pack closes once it reaches the target, with the chunk that crossed it (at most
    // MAX_CHUNK_SIZE, a quarter of MAX_PUSH_PACK) and its table of contents.
    let target = params.pack_target.clamp(1, MAX_PUSH_PACK / 2);
    let mut failures: Vec<PushError> = Vec::new();
    let mut manifest: Vec<Option<PushFile>> = vec![None; files.len()];
    std::thread::scope(|s| {
        let pipeline = &pipeline;
        let packer = s.spawn(move || {
            let r = pack(batch_rx, target, &pipeline.stop, &mut sink);
            if r.is_err() {
                pipeline.stop.store(true, Ordering::Relaxed);
            }
            r
        });
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let tx = batch_tx.clone();
                s.spawn(move || {
                    let r = pipeline.work(&tx);
                    if r.is_err() {
                        pipeline.stop.store(true, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        drop(batch_tx);
        for h in handles {
            match h.join() {
                Ok(Ok(done)) => {
                    for (i, f) in done {
                        manifest[i] = Some(f);
                    }
                }
                Ok(Err(e)) => failures.push(e),
                Err(_) => failures.push(PushError::Internal("a push worker panicked".into())),
            }
        }
        match packer.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e),
            Err(_) => failures.push(PushError::Internal("the pack writer panicked".into())),
        }
    });
    if !failures.is_empty() {
        let first = failures
            .iter()
            .position(|e| !matches!(e, PushError::Cancelled))
            .unwrap_or(0);
        return Err(failures.swap_remove(first));
    }
    let manifest = manifest
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| PushError::Internal("a file was left unread".into()))?;
    let chunks_missing = pipeline.claimed.lock().expect("claimed").len() as u64;
    Ok(PipelineOutcome {
        manifest,
        chunks_missing,
        bytes_read: pipeline.bytes_read.load(Ordering::Relaxed),
        peak_window_bytes: pipeline.peak_window.load(Ordering::Relaxed),
    })
}

/// The master's parameters, checked before anything is cut with them.
fn checked(params: &PushMissingResponse, api: &MasterApi) -> Result<(), PushError> {
    params
        .chunker
        .validate()
        .map_err(|e| PushError::Parameters {
            reason: format!("master {}: {e}", api.base()),
        })?;
    if params.pack_target == 0 {
        return Err(PushError::Parameters {
            reason: format!("master {}: a pack target of 0 bytes", api.base()),
        });
    }
    Ok(())
}

/// The progress line: bytes read of the folder's bytes, and what went up.
fn progress_bar(enabled: bool, total: u64) -> ProgressBar {
    if !enabled || total == 0 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] [{wide_bar}] read {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}; {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The `BEFORE_PUBLISH_ENV` hook.
async fn before_publish_hook() -> Result<(), PushError> {
    let Some(gate) = std::env::var_os(BEFORE_PUBLISH_ENV).map(PathBuf::from) else {
        return Ok(());
    };
    let mut waiting = gate.clone().into_os_string();
    waiting.push(format!(".waiting.{}", std::process::id()));
    let waiting = PathBuf::from(waiting);
    fs::write(&waiting, b"").map_err(|e| PushError::local("create", &waiting, e))?;
    let start = Instant::now();
    while !gate.exists() {
        if start.elapsed() > BEFORE_PUBLISH_WAIT {
            return Err(PushError::Hook(format!(
                "{BEFORE_PUBLISH_ENV}: {} never appeared",
                gate.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Uploads what the pipeline packs, [`UPLOADS_AT_ONCE`] at a time, until it is done or
/// something fails; returns (bytes, chunks, packs) uploaded.
async fn upload(
    api: &MasterApi,
    push_id: &str,
    mut packs: tokio::sync::mpsc::Receiver<SealedPack>,
    stop_after: Option<u64>,
    progress: &ProgressBar,
    missing_so_far: impl Fn() -> u64,
) -> Result<(u64, u64, u64), PushError> {
    let (mut bytes, mut chunks, mut count) = (0u64, 0u64, 0u64);
    let mut uploads = tokio::task::JoinSet::new();
    let mut failure: Option<PushError> = None;
    let mut note = |result: Result<Result<(u64, u64), PushError>, tokio::task::JoinError>,
                    failure: &mut Option<PushError>| {
        match result {
            Ok(Ok((b, c))) => {
                bytes += b;
                chunks += c;
                progress.set_message(format!(
                    "uploaded {chunks} of {} missing chunks so far ({} compressed)",
                    missing_so_far(),
                    crate::space::human(bytes)
                ));
            }
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(e) => {
                failure.get_or_insert(PushError::Internal(format!("upload task failed: {e}")));
            }
        }
    };
    while let Some(pack) = packs.recv().await {
        while uploads.len() >= UPLOADS_AT_ONCE {
            if let Some(done) = uploads.join_next().await {
                note(done, &mut failure);
            }
        }
        if failure.is_some() || stop_after.is_some_and(|n| count >= n) {
            break;
        }
        count += 1;
        let api = api.clone();
        let push_id = push_id.to_string();
        uploads.spawn(async move {
            let (b, c) = (pack.bytes.len() as u64, pack.chunks);
            // The buffer goes back to the packer when the request is done with it.
            let body = bytes::Bytes::from_owner(pack.bytes);
            api.push_pack(&pack.hash, body, Some(&push_id))
                .await
                .map_err(|e| PushError::master(&api, e))?;
            Ok((b, c))
        });
    }
    drop(packs);
    while let Some(done) = uploads.join_next().await {
        note(done, &mut failure);
    }
    if let Some(n) = stop_after.filter(|&n| count >= n) {
        return Err(PushError::Stopped { packs: n });
    }
    match failure {
        Some(e) => Err(e),
        None => Ok((bytes, chunks, count)),
    }
}

/// `hummel push`: publishes `opts.local_dir` at `opts.prefix` of `master`'s repository,
/// uploading only the chunks it lacks (see the module map). `master` carries the write token.
pub async fn push(master: &MasterApi, opts: PushOptions) -> Result<PushReport, PushError> {
    let started = Instant::now();
    let push_id = new_push_id();
    let prefix = opts.prefix.as_ref().map(|p| p.as_str().to_string());
    let root = opts.local_dir.clone();
    if !fs::metadata(&root).is_ok_and(|m| m.is_dir()) {
        return Err(PushError::NotAFolder { path: root });
    }
    let ask = AskMaster {
        api: master.clone(),
        runtime: tokio::runtime::Handle::current(),
        push: push_id.clone(),
        prefix: prefix.clone(),
    };
    let params = master
        .push_missing(&ask.request(Vec::new()))
        .await
        .map_err(|e| PushError::master(master, e))?;
    checked(&params, master)?;
    let (dirs, files) = tokio::task::spawn_blocking(move || walk(&root))
        .await
        .map_err(|e| PushError::Internal(format!("walk task failed: {e}")))??;
    let total: u64 = files.iter().map(|f| f.size).sum();
    let bar = progress_bar(opts.progress, total);

    let pipeline_params = PipelineParams {
        chunker: params.chunker,
        zstd_level: params.zstd_level,
        pack_target: params.pack_target,
        upload: !opts.dry_run,
    };
    let stop_after: Option<u64> = std::env::var(STOP_AFTER_PACKS_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    let (pack_tx, pack_rx) = tokio::sync::mpsc::channel::<SealedPack>(PACKS_QUEUED);
    let claimed_so_far = Arc::new(AtomicU64::new(0));
    let producer = {
        let bar = bar.clone();
        let claimed = Arc::clone(&claimed_so_far);
        tokio::task::spawn_blocking(move || {
            run_pipeline(
                &files,
                pipeline_params,
                Limits::default(),
                &ask,
                &bar,
                &claimed,
                |p| pack_tx.blocking_send(p).map_err(|_| PushError::Cancelled),
            )
        })
    };
    let uploaded = upload(master, &push_id, pack_rx, stop_after, &bar, || {
        claimed_so_far.load(Ordering::Relaxed)
    })
    .await;
    let produced = producer
        .await
        .map_err(|e| PushError::Internal(format!("push worker task failed: {e}")));
    bar.finish_and_clear();
    // The upload side's failure is the cause when both failed (the pipeline then only saw
    // its packs refused).
    let (bytes_uploaded, chunks_uploaded, packs_uploaded) = uploaded?;
    let outcome = produced??;
    tracing::debug!(
        push = %push_id,
        bytes_read = outcome.bytes_read,
        chunks_missing = outcome.chunks_missing,
        peak_window = outcome.peak_window_bytes,
        packs_uploaded,
        "pushed chunks"
    );

    let request = PushPublishRequest {
        base: params.revision,
        prefix,
        dirs,
        files: outcome.manifest,
        message: opts.message,
        dry_run: opts.dry_run,
        allow_mass_delete: opts.allow_mass_delete,
        push: Some(push_id.clone()),
    };
    before_publish_hook().await?;
    let done = master
        .push_publish(&request)
        .await
        .map_err(|e| PushError::master(master, e))?;
    Ok(PushReport {
        revision: done.revision,
        base: params.revision,
        current: done.current,
        push: push_id,
        chunks_missing: outcome.chunks_missing,
        bytes_uploaded,
        chunks_uploaded,
        packs_uploaded,
        bytes_read: outcome.bytes_read,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        dry_run: opts.dry_run,
        files_added: done.changes.files_added,
        files_updated: done.changes.files_updated,
        files_removed: done.changes.files_removed,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use hummel_core::chunk_stream;
    use hummel_core::codec::decode_chunk;
    use hummel_core::pack::read_toc;

    use super::*;

    /// A master in memory: the chunks it holds, what it was asked, and the packs it received
    /// (each read and every chunk decoded and checked, as the master stages them).
    #[derive(Default)]
    struct MemoryMaster {
        held: Mutex<HashSet<Hash>>,
        queries: Mutex<Vec<Vec<Hash>>>,
        uploaded: Mutex<Vec<Hash>>,
        packs: Mutex<Vec<u64>>,
        refuse: bool,
        /// Staged chunks count as held (as the master's do); false: it keeps saying a chunk
        /// is missing, as it does while the pack holding it is still on its way.
        forgetful: bool,
    }

    impl MissingChunks for MemoryMaster {
        fn missing(&self, chunks: Vec<Hash>) -> Result<Vec<Hash>, PushError> {
            if self.refuse {
                return Err(PushError::Hook("the master is down".into()));
            }
            self.queries.lock().unwrap().push(chunks.clone());
            let held = self.held.lock().unwrap();
            Ok(chunks.into_iter().filter(|h| !held.contains(h)).collect())
        }
    }

    impl MemoryMaster {
        fn stage(&self, pack: SealedPack) -> Result<(), PushError> {
            assert_eq!(
                Hash::of(&pack.bytes),
                pack.hash,
                "a pack is named by its hash"
            );
            let toc = read_toc(Cursor::new(&pack.bytes), pack.bytes.len() as u64).unwrap();
            assert_eq!(toc.len() as u64, pack.chunks);
            for e in toc {
                let stored = &pack.bytes[e.offset as usize..][..e.stored_len as usize];
                decode_chunk(e.codec, stored, e.len, &e.hash).unwrap();
                self.uploaded.lock().unwrap().push(e.hash);
                if !self.forgetful {
                    self.held.lock().unwrap().insert(e.hash);
                }
            }
            self.packs.lock().unwrap().push(pack.bytes.len() as u64);
            Ok(())
        }
    }

    /// `len` pseudo-random bytes from `seed` (BLAKE3's output stream: incompressible).
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut out = vec![0u8; len];
        let mut h = blake3::Hasher::new();
        h.update(&seed.to_le_bytes());
        h.finalize_xof().fill(&mut out);
        out
    }

    fn params(upload: bool) -> PipelineParams {
        PipelineParams {
            chunker: ChunkerConfig::default(),
            zstd_level: 3,
            pack_target: 256 << 10,
            upload,
        }
    }

    fn limits(window_bytes: u64, window_chunks: usize) -> Limits {
        Limits {
            window_bytes,
            window_chunks,
            workers: 3,
        }
    }

    fn run(
        root: &Path,
        params: PipelineParams,
        limits: Limits,
        master: &MemoryMaster,
    ) -> Result<PipelineOutcome, PushError> {
        let (_, files) = walk(root).unwrap();
        run_pipeline(
            &files,
            params,
            limits,
            master,
            &ProgressBar::hidden(),
            &AtomicU64::new(0),
            |p| master.stage(p),
        )
    }

    fn chunk_ids(data: &[u8]) -> Vec<Hash> {
        let mut ids = Vec::new();
        chunk_stream::<_, std::io::Error, _>(&ChunkerConfig::default(), data, |c| {
            ids.push(c.hash);
            Ok(())
        })
        .unwrap();
        ids
    }

    #[test]
    fn a_chunk_in_two_files_goes_up_once_and_the_manifest_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let a = noise(1 << 20, 1);
        let mut c = noise(700 << 10, 2);
        c.extend_from_slice(&a);
        c.extend_from_slice(&a);
        fs::create_dir_all(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("a.bin"), &a).unwrap();
        fs::write(dir.path().join("sub/b.bin"), &a).unwrap();
        fs::write(dir.path().join("sub/c.bin"), &c).unwrap();
        fs::write(dir.path().join("empty"), b"").unwrap();
        // The master says "missing" for a chunk until the end: only the claims keep it from
        // going up once per copy (a, sub/b, and twice in sub/c).
        let master = MemoryMaster {
            forgetful: true,
            ..Default::default()
        };
        let out = run(dir.path(), params(true), limits(300 << 10, 64), &master).unwrap();

        let paths: Vec<_> = out.manifest.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a.bin", "empty", "sub/b.bin", "sub/c.bin"]);
        for (f, data) in out.manifest.iter().zip([&a, &Vec::new(), &a, &c]) {
            assert_eq!(f.hash, Hash::of(data), "{}", f.path);
            assert_eq!(f.size, data.len() as u64);
            assert_eq!(f.chunks, chunk_ids(data), "{}", f.path);
        }
        let uploaded = master.uploaded.lock().unwrap().clone();
        let unique: HashSet<Hash> = uploaded.iter().copied().collect();
        assert_eq!(unique.len(), uploaded.len(), "a chunk went up twice");
        let wanted: HashSet<Hash> = out.manifest.iter().flat_map(|f| f.chunks.clone()).collect();
        assert_eq!(unique, wanted);
        assert_eq!(out.chunks_missing, wanted.len() as u64);
        assert_eq!(out.bytes_read, (4 << 20) + (700 << 10));
        // Packs close at the target (plus the chunk that crossed it).
        // One worker, one window holding every copy: the claims alone keep each chunk to one
        // upload.
        let master = MemoryMaster {
            forgetful: true,
            ..Default::default()
        };
        let one = Limits {
            workers: 1,
            ..Limits::default()
        };
        let again = run(dir.path(), params(true), one, &master).unwrap();
        assert_eq!(master.queries.lock().unwrap().len(), 1);
        let uploaded = master.uploaded.lock().unwrap().clone();
        assert_eq!(uploaded.len(), wanted.len(), "a chunk went up twice");
        assert_eq!(again.chunks_missing, wanted.len() as u64);
        let packs = master.packs.lock().unwrap();
        assert!(packs.len() > 3, "{packs:?}");
        assert!(
            packs.iter().all(|&n| n < (256 << 10) + (256 << 10) + 4096),
            "{packs:?}"
        );
    }

    #[test]
    fn only_what_the_master_lacks_goes_up() {
        let dir = tempfile::tempdir().unwrap();
        let a = noise(900 << 10, 3);
        let b = noise(900 << 10, 4);
        fs::write(dir.path().join("a"), &a).unwrap();
        fs::write(dir.path().join("b"), &b).unwrap();
        let master = MemoryMaster::default();
        master.held.lock().unwrap().extend(chunk_ids(&a));
        let out = run(dir.path(), params(true), Limits::default(), &master).unwrap();
        let uploaded: HashSet<Hash> = master.uploaded.lock().unwrap().iter().copied().collect();
        let of_b: HashSet<Hash> = chunk_ids(&b).into_iter().collect();
        assert_eq!(uploaded, of_b);
        assert_eq!(out.chunks_missing, of_b.len() as u64);

        // Again: nothing missing, nothing packed; a dry run packs nothing either.
        let before = master.packs.lock().unwrap().len();
        let again = run(dir.path(), params(true), Limits::default(), &master).unwrap();
        assert_eq!(again.chunks_missing, 0);
        let fresh = MemoryMaster::default();
        let dry = run(dir.path(), params(false), Limits::default(), &fresh).unwrap();
        assert_eq!(
            dry.chunks_missing,
            (chunk_ids(&a).len() + of_b.len()) as u64
        );
        assert!(fresh.packs.lock().unwrap().is_empty());
        assert_eq!(master.packs.lock().unwrap().len(), before);
    }

    #[test]
    fn windows_stay_within_their_bound_across_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("big"), noise(6 << 20, 5)).unwrap();
        for i in 0..20u64 {
            fs::write(
                dir.path().join(format!("small{i:02}")),
                noise(10_000, 100 + i),
            )
            .unwrap();
        }
        let master = MemoryMaster::default();
        let window = 1 << 20;
        let out = run(dir.path(), params(true), limits(window, 12), &master).unwrap();
        assert!(out.peak_window_bytes <= window, "{}", out.peak_window_bytes);
        let queries = master.queries.lock().unwrap();
        assert!(queries.iter().all(|q| !q.is_empty() && q.len() <= 12));
        assert!(queries.len() >= 6, "{} queries", queries.len());
        // The small files share windows: fewer queries than files.
        let all: usize = queries.iter().map(Vec::len).sum();
        assert_eq!(all as u64, out.chunks_missing, "each id asked once");
        // A window never holds less than the chunker's largest chunk.
        let tiny = MemoryMaster::default();
        let out = run(dir.path(), params(false), limits(1, 100), &tiny).unwrap();
        assert!(out.peak_window_bytes <= 256 << 10);
        assert!(out.peak_window_bytes > 1);
    }

    #[test]
    fn a_file_changed_after_the_walk_fails_the_push() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        fs::write(&path, noise(300 << 10, 6)).unwrap();
        let (_, files) = walk(dir.path()).unwrap();
        let push = |files: &[LocalFile]| {
            let master = MemoryMaster::default();
            run_pipeline(
                files,
                params(true),
                Limits::default(),
                &master,
                &ProgressBar::hidden(),
                &AtomicU64::new(0),
                |p| master.stage(p),
            )
        };
        // Grown.
        fs::write(&path, noise(301 << 10, 6)).unwrap();
        let err = push(&files).unwrap_err();
        assert!(
            matches!(&err, PushError::Changed { path: p } if *p == path),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("changed while it was pushed"),
            "{err}"
        );
        // Same size, written again (a later mtime).
        fs::write(&path, noise(300 << 10, 7)).unwrap();
        let later = std::time::SystemTime::UNIX_EPOCH
            + Duration::from_nanos(files[0].mtime_ns as u64)
            + Duration::from_secs(5);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let err = push(&files).unwrap_err();
        assert!(matches!(err, PushError::Changed { .. }), "{err:?}");
        // Walked again: fine.
        let (_, files) = walk(dir.path()).unwrap();
        assert_eq!(push(&files).unwrap().manifest.len(), 1);
    }

    #[test]
    fn the_first_failure_is_the_one_reported() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..6u64 {
            fs::write(dir.path().join(format!("f{i}")), noise(200 << 10, i)).unwrap();
        }
        let master = MemoryMaster {
            refuse: true,
            ..Default::default()
        };
        let err = run(dir.path(), params(true), limits(64 << 10, 4), &master).unwrap_err();
        assert!(
            matches!(&err, PushError::Hook(m) if m == "the master is down"),
            "{err:?}"
        );
        // A sink that refuses (the uploads stopped): the pass stops, nothing else claimed.
        let master = MemoryMaster::default();
        let (_, files) = walk(dir.path()).unwrap();
        let err = run_pipeline(
            &files,
            params(true),
            limits(64 << 10, 4),
            &master,
            &ProgressBar::hidden(),
            &AtomicU64::new(0),
            |_| Err(PushError::Stopped { packs: 0 }),
        )
        .unwrap_err();
        assert!(matches!(err, PushError::Stopped { .. }), "{err:?}");
    }

    /// A pack's buffer comes back for the next pack once the upload lets go of it: as
    /// `PackBytes` dropped, and as the `Bytes` the upload sends, when its last clone goes.
    #[test]
    fn pack_buffers_come_back_when_their_pack_is_done_with() {
        let pool = PackBuffers::default();
        let mut buf = pool.take(1 << 20);
        buf.extend_from_slice(b"a sealed pack");
        let at = buf.as_ptr();
        drop(PackBytes {
            buf,
            home: pool.clone(),
        });
        let again = pool.take(1 << 20);
        assert_eq!(again.as_ptr(), at, "a fresh buffer instead of the old one");
        assert!(again.is_empty());
        let sent = bytes::Bytes::from_owner(PackBytes {
            buf: again,
            home: pool.clone(),
        });
        let retried = sent.clone();
        drop(sent);
        assert!(pool.0.lock().unwrap().is_empty(), "back while still sent");
        drop(retried);
        assert_eq!(pool.0.lock().unwrap().len(), 1);
        let third = pool.take(1 << 20);
        assert_eq!(third.as_ptr(), at);
    }

    #[test]
    fn push_ids_are_random_and_well_formed() {
        let (a, b) = (new_push_id(), new_push_id());
        assert!(hummel_proto::api::valid_push_id(&a), "{a}");
        assert!(hummel_proto::api::valid_push_id(&b), "{b}");
        assert_ne!(a, b);
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_fails_the_walk_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("x"), b"x").unwrap();
        std::os::unix::fs::symlink("x", dir.path().join("link")).unwrap();
        fs::create_dir_all(dir.path().join(".hummel")).unwrap();
        let err = walk(dir.path()).unwrap_err();
        assert!(
            err.to_string().ends_with(
                "link is a symlink or special file; a push holds folders and regular files only"
            ),
            "{err}"
        );
        fs::remove_file(dir.path().join("link")).unwrap();
        let (dirs, files) = walk(dir.path()).unwrap();
        assert!(dirs.is_empty(), "the top-level .hummel is skipped");
        assert_eq!(files.len(), 1);
    }
}
