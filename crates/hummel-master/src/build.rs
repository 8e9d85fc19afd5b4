//! The build pipeline: walk → reuse unchanged files → chunk, hash, compress → pack → index.
//!
//! [`prepare`] runs on the caller's (blocking) thread and drives rayon:
//!
//! 1. [`walk`] lists the repository with `std::fs`. Symlinks are skipped with a warning (clients
//!    would delete what they point to), or followed with `follow_symlinks`: a folder already on
//!    the path from the root (its device and inode) is skipped as a loop, and a tree deeper than
//!    [`MAX_DEPTH`] fails the build. Special files, any `.hummel` folder and the master's own
//!    data folder are skipped with a warning; an invalid name ([`RelPath`] rules) fails the
//!    build. Names some clients cannot hold (Windows' reserved names, trailing dots and
//!    spaces, `<>:"|?*`, names differing only in case, paths over 260 characters) are
//!    published with a warning each ([`warn_unportable`]).
//!    Then the mass-delete guard ([`check_mass_delete`]): a repository folder that is missing or
//!    holds no file, or a tree that removes more than half of the previous revision's files or
//!    bytes, fails the build unless the request confirmed it (`allow_mass_delete`). An
//!    unmounted or half-copied folder must not become a revision that makes every client
//!    delete its copies.
//! 2. A file whose path, size and mtime match the previous revision keeps its entry unread,
//!    unless its mtime is within [`RACY_MARGIN_SECS`] of the previous build's start (it may have
//!    changed while being read without its mtime moving; git's "racily clean" rule).
//! 3. Other files are chunked in parallel (one file per rayon task, one `ChunkCompressor` per
//!    thread). A file whose size, mtime or inode differ between the stat before and after the
//!    read, or that gave other than its size in bytes, changed while it was read: it is read
//!    again, [`READ_ATTEMPTS`] times at most, then the build fails naming it. No entry ever
//!    holds a torn mixture of two versions. A chunk already published (the database's chunk
//!    table) or already claimed by another task of this build is not stored again; new chunks
//!    go over a bounded channel to a single pack-writer thread, which seals a pack at the
//!    target size and commits it to the [`BlobStore`] (verify, fsync, rename).
//! 4. The new [`Index`] is assembled (sorted entries, unique chunk table, sorted pack table)
//!    with its info section: the configured name and description, and the sets file read
//!    now (`crate::sets`; a bad one fails the build naming its line). When it equals the
//!    previous one, info included, nothing is published.
//!
//! Publishing (index file, one SQLite transaction, in-memory state) belongs to
//! [`crate::master`]. Progress is reported through the atomics of a [`BuildRun`]. The pack
//! writer ([`write_packs`]) and [`finalize`] are also the background repack's
//! (`crate::repack`).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use hummel_core::codec::{ChunkCompressor, DEFAULT_ZSTD_LEVEL};
use hummel_core::index::{IndexError, RESERVED_TOP_NAME};
use hummel_core::pack::{DEFAULT_PACK_TARGET, PackWriter};
use hummel_core::relpath::InvalidPath;
use hummel_core::{
    ChunkLocation, ChunkerConfig, Codec, DirEntry, Entry, EntryKind, FileEntry, Hash, Index,
    PackInfo, RelPath, chunk_stream,
};
use hummel_proto::api::{BuildState, BuildStatus};
use hummel_store::{BlobStore, StoreError, TempBlob};
use rayon::prelude::*;

use crate::db::Db;
use crate::error::MasterError;
use crate::lock;
use crate::revision::LoadedRevision;

/// At most this many warnings are kept per build; the rest are counted.
const MAX_WARNINGS: usize = 200;
/// Files modified less than this before the previous build started are read again.
const RACY_MARGIN_SECS: i64 = 2;
/// Stored chunks in flight between the chunking threads and the pack writer.
pub(crate) const CHANNEL_DEPTH: usize = 64;
/// Reads of a file that keeps changing before the build gives up.
pub(crate) const READ_ATTEMPTS: u32 = 3;
/// Deepest folder nesting the walk goes to (followed symlinks can nest without end).
pub(crate) const MAX_DEPTH: usize = 128;

/// Why a build failed. The message is one line and names the path or object involved.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("invalid name in the repository: {0}")]
    InvalidName(#[from] InvalidPath),
    #[error("pack store: {0}")]
    Store(#[from] StoreError),
    #[error("writing a pack: {0}")]
    PackWrite(io::Error),
    #[error("starting the compressor: {0}")]
    Compressor(io::Error),
    #[error("the pack writer stopped")]
    WriterStopped,
    #[error("chunk {0} has no known location")]
    MissingChunk(Hash),
    #[error("pack {0} is not known")]
    MissingPack(u32),
    #[error("pack numbers exhausted")]
    PackNumbers,
    #[error("new index is invalid: {0}")]
    Index(#[from] IndexError),
    #[error("{0}")]
    Master(#[from] MasterError),
    #[error("a build thread panicked")]
    Panicked,
    #[error("stopped: the master is shutting down; the current revision stays")]
    Stopped,
    #[error("{0}")]
    MassDelete(MassDelete),
    #[error("{0}")]
    Sets(#[from] crate::sets::SetsError),
    #[error(
        "{path} kept changing while it was read ({attempts} attempts); finish copying it and build again"
    )]
    KeptChanging { path: RelPath, attempts: u32 },
    #[error(
        "{path} lies more than {MAX_DEPTH} folders deep; does a symlink make the tree endless?"
    )]
    TooDeep { path: PathBuf },
    #[error(
        "refusing to publish: cannot list the repository folder {path}: {source}; fix its mount or permissions and build again"
    )]
    RepoUnreadable { path: PathBuf, source: io::Error },
    #[error(
        "refusing to build: this master's tree is fed by `hummel push`; a folder build would undo the pushed tree (see README, \"Push\")"
    )]
    FedByPushes,
}

/// What the repository folder looked like when the mass-delete guard refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Folder {
    /// The folder does not exist.
    Missing,
    /// It exists and holds no file (folders only, or nothing).
    Empty,
    /// It holds files, but far fewer than the previous revision.
    Shrunk,
}

/// A build the master refuses to publish without the admin's confirmation (one line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MassDelete {
    pub repo: PathBuf,
    pub folder: Folder,
    /// The current revision, if any.
    pub revision: Option<u64>,
    pub files_before: u64,
    pub files_removed: u64,
    pub bytes_before: u64,
    pub bytes_removed: u64,
}

/// The admin's way out, named in every refusal.
const CONFIRM_HINT: &str =
    "with `hummel build --allow-mass-delete` (or tick \"allow a mass delete\" on the dashboard)";

fn percent(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        return 0;
    }
    u64::try_from(u128::from(part) * 100 / u128::from(whole)).unwrap_or(100)
}

impl MassDelete {
    /// What the guard found, without the advice: "the build removes 201 of 201 files ...".
    pub(crate) fn finding(&self) -> String {
        let repo = self.repo.display();
        let found = match self.folder {
            Folder::Missing => "is missing",
            Folder::Empty => "holds no files",
            Folder::Shrunk => "holds files",
        };
        let Some(revision) = self.revision else {
            return format!(
                "the repository folder {repo} {found} and no revision is published yet"
            );
        };
        let folder = match self.folder {
            Folder::Shrunk => String::new(),
            _ => format!("the repository folder {repo} {found}, so "),
        };
        format!(
            "{folder}the build removes {} of {} files ({}%) and {} of {} ({}%) of revision \
             {revision}",
            self.files_removed,
            self.files_before,
            percent(self.files_removed, self.files_before),
            crate::dashboard::human_bytes(self.bytes_removed),
            crate::dashboard::human_bytes(self.bytes_before),
            percent(self.bytes_removed, self.bytes_before),
        )
    }
}

impl std::fmt::Display for MassDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let finding = self.finding();
        if self.revision.is_none() {
            write!(
                f,
                "refusing to publish: {finding}, so there is nothing to publish; add files, or \
                 re-run {CONFIRM_HINT} to publish an empty revision"
            )
        } else {
            write!(
                f,
                "refusing to publish: {finding}; is the repository folder mounted and complete? \
                 Re-run {CONFIRM_HINT} to publish it anyway"
            )
        }
    }
}

/// The mass-delete guard, on the walked tree before any file is read: `Err` when publishing it
/// needs the admin's confirmation. `files` are the (path, size) pairs found, `missing` says the
/// folder does not exist. A previous revision without files loses nothing.
pub(crate) fn check_mass_delete<'a>(
    repo: &Path,
    previous: Option<&Index>,
    files: impl Iterator<Item = (&'a RelPath, u64)>,
    missing: bool,
) -> Result<(), MassDelete> {
    let now: HashMap<&RelPath, u64> = files.collect();
    let folder = if missing {
        Folder::Missing
    } else if now.is_empty() {
        Folder::Empty
    } else {
        Folder::Shrunk
    };
    let mut refusal = MassDelete {
        repo: repo.to_path_buf(),
        folder,
        revision: previous.map(|p| p.revision),
        files_before: 0,
        files_removed: 0,
        bytes_before: 0,
        bytes_removed: 0,
    };
    let Some(previous) = previous else {
        return if now.is_empty() { Err(refusal) } else { Ok(()) };
    };
    for (path, old) in previous.files() {
        refusal.files_before += 1;
        refusal.bytes_before += old.size;
        match now.get(path) {
            // Truncated files lose bytes too (a copy that failed half way).
            Some(&size) => refusal.bytes_removed += old.size.saturating_sub(size),
            None => {
                refusal.files_removed += 1;
                refusal.bytes_removed += old.size;
            }
        }
    }
    let lost_files = refusal.files_removed.saturating_mul(2) > refusal.files_before;
    let lost_bytes = refusal.bytes_removed.saturating_mul(2) > refusal.bytes_before;
    if refusal.files_before > 0 && (now.is_empty() || lost_files || lost_bytes) {
        return Err(refusal);
    }
    Ok(())
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> BuildError + '_ {
    move |source| BuildError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// Tunables of the pipeline (tests use small packs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BuildOptions {
    pub chunker: ChunkerConfig,
    pub pack_target: u64,
    pub zstd_level: i32,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            chunker: ChunkerConfig::default(),
            pack_target: DEFAULT_PACK_TARGET,
            zstd_level: DEFAULT_ZSTD_LEVEL,
        }
    }
}

/// Live state of one build: progress counters and, once finished, its outcome.
#[derive(Debug)]
pub(crate) struct BuildRun {
    pub id: u64,
    pub started_unix: i64,
    /// The request confirmed a mass delete (`POST /build?allow_mass_delete=true`).
    pub allow_mass_delete: bool,
    pub files_total: AtomicU64,
    pub files_done: AtomicU64,
    pub bytes_total: AtomicU64,
    pub bytes_done: AtomicU64,
    pub files_reused: AtomicU64,
    pub packs_written: AtomicU64,
    /// Set when the master shuts down: the build stops at its next file or chunk, or before it
    /// publishes, and publishes nothing.
    cancelled: AtomicBool,
    outcome: Mutex<Outcome>,
}

#[derive(Debug)]
struct Outcome {
    state: BuildState,
    revision: Option<u64>,
    error: Option<String>,
    finished_unix: Option<i64>,
    warnings: Vec<String>,
    omitted_warnings: u64,
}

impl BuildRun {
    pub(crate) fn new(id: u64, started_unix: i64, allow_mass_delete: bool) -> BuildRun {
        BuildRun {
            id,
            started_unix,
            allow_mass_delete,
            files_total: AtomicU64::new(0),
            files_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            files_reused: AtomicU64::new(0),
            packs_written: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
            outcome: Mutex::new(Outcome {
                state: BuildState::Running,
                revision: None,
                error: None,
                finished_unix: None,
                warnings: Vec::new(),
                omitted_warnings: 0,
            }),
        }
    }

    /// A finished build loaded from the database.
    pub(crate) fn from_status(s: &BuildStatus) -> BuildRun {
        let run = BuildRun::new(s.id, s.started_unix, false);
        run.files_total.store(s.files_total, Ordering::Relaxed);
        run.files_done.store(s.files_done, Ordering::Relaxed);
        run.bytes_total.store(s.bytes_total, Ordering::Relaxed);
        run.bytes_done.store(s.bytes_done, Ordering::Relaxed);
        run.files_reused.store(s.files_reused, Ordering::Relaxed);
        run.packs_written.store(s.packs_written, Ordering::Relaxed);
        {
            let mut o = lock(&run.outcome);
            o.state = s.state;
            o.revision = s.revision;
            o.error = s.error.clone();
            o.finished_unix = s.finished_unix;
            o.warnings = s.warnings.clone();
        }
        run
    }

    /// Stops the build at its next check (the master is shutting down).
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// [`BuildRun::cancel`] was called: an `Err(BuildError::Stopped)`.
    pub(crate) fn check_cancelled(&self) -> Result<(), BuildError> {
        if self.cancelled.load(Ordering::SeqCst) {
            Err(BuildError::Stopped)
        } else {
            Ok(())
        }
    }

    pub(crate) fn state(&self) -> BuildState {
        lock(&self.outcome).state
    }

    /// Records a non-fatal finding.
    pub(crate) fn warn(&self, message: String) {
        tracing::warn!(build = self.id, "{message}");
        let mut o = lock(&self.outcome);
        if o.warnings.len() < MAX_WARNINGS {
            o.warnings.push(message);
        } else {
            o.omitted_warnings += 1;
        }
    }

    /// Marks the build finished.
    pub(crate) fn finish(&self, result: Result<u64, String>, finished_unix: i64) {
        let mut o = lock(&self.outcome);
        o.finished_unix = Some(finished_unix);
        match result {
            Ok(revision) => {
                o.state = BuildState::Succeeded;
                o.revision = Some(revision);
            }
            Err(message) => {
                o.state = BuildState::Failed;
                o.error = Some(message);
            }
        }
    }

    /// A snapshot for the API.
    pub(crate) fn status(&self) -> BuildStatus {
        let o = lock(&self.outcome);
        let mut warnings = o.warnings.clone();
        if o.omitted_warnings > 0 {
            warnings.push(format!("... and {} more warnings", o.omitted_warnings));
        }
        BuildStatus {
            id: self.id,
            state: o.state,
            revision: o.revision,
            error: o.error.clone(),
            files_total: self.files_total.load(Ordering::Relaxed),
            files_done: self.files_done.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            files_reused: self.files_reused.load(Ordering::Relaxed),
            packs_written: self.packs_written.load(Ordering::Relaxed),
            started_unix: self.started_unix,
            finished_unix: o.finished_unix,
            warnings,
        }
    }
}

/// What a build starts from.
pub(crate) struct BuildInputs<'a> {
    pub repo: &'a Path,
    pub data_dir: &'a Path,
    pub db_path: &'a Path,
    pub store: &'a BlobStore,
    pub previous: Option<&'a LoadedRevision>,
    /// Every published pack, by number.
    pub packs: &'a HashMap<u32, PackInfo>,
    pub next_pack_number: u32,
    pub options: BuildOptions,
    /// The admin confirmed a mass delete: the guard's refusal becomes a warning.
    pub allow_mass_delete: bool,
    /// Publish what symlinks point to (files and folders) instead of skipping them.
    pub follow_symlinks: bool,
    /// The repository's name, description and sets file.
    pub info: &'a crate::config::InfoConfig,
}

/// A new tree ready to publish (revision number and time not yet set).
#[derive(Debug)]
pub(crate) struct Prepared {
    pub index: Index,
    pub new_packs: Vec<PackInfo>,
    pub new_chunks: Vec<ChunkLocation>,
    /// The mass-delete guard refused the tree and the admin's confirmation let it through.
    pub mass_delete_confirmed: bool,
}

/// What [`prepare`] found.
#[derive(Debug)]
pub(crate) enum Preparation {
    /// The tree equals the previous revision; nothing to publish.
    Unchanged,
    /// Something changed (boxed: an index is far larger than nothing).
    Changed(Box<Prepared>),
}

/// Walks, chunks and packs the repository. CPU- and I/O-bound: call from a blocking thread.
pub(crate) fn prepare(inputs: &BuildInputs<'_>, run: &BuildRun) -> Result<Preparation, BuildError> {
    if crate::push::fed_by_pushes(inputs.data_dir) {
        return Err(BuildError::FedByPushes);
    }
    let unreadable = |source| BuildError::RepoUnreadable {
        path: inputs.repo.to_path_buf(),
        source,
    };
    let repo = match fs::canonicalize(inputs.repo) {
        Ok(repo) => Some(repo),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(unreadable(e)),
    };
    let data = fs::canonicalize(inputs.data_dir).ok();
    let tree = match &repo {
        Some(repo) => {
            // The folder itself must list: an error there says nothing about its files.
            fs::read_dir(repo).map_err(unreadable)?;
            walk(repo, data.as_deref(), inputs.follow_symlinks, run)?
        }
        None => Tree::default(),
    };
    warn_unportable(&tree, run);
    // The info section first: a bad sets file fails the build before any file is read.
    let info = {
        let tops: HashSet<&str> = tree
            .dirs
            .iter()
            .map(|(p, _)| p.as_str())
            .filter(|p| !p.contains('/'))
            .collect();
        crate::sets::read_info(inputs.info, inputs.data_dir, &tops)?
    };
    let previous_index = inputs.previous.map(|p| p.index.as_ref());
    let guard = check_mass_delete(
        inputs.repo,
        previous_index,
        tree.files.iter().map(|f| (&f.rel, f.size)),
        repo.is_none(),
    );
    let mass_delete_confirmed = match guard {
        Ok(()) => false,
        Err(refusal) if inputs.allow_mass_delete => {
            run.warn(format!(
                "published with the admin's mass-delete confirmation: {}",
                refusal.finding()
            ));
            true
        }
        Err(refusal) => return Err(BuildError::MassDelete(refusal)),
    };

    let mut built = Vec::with_capacity(tree.files.len());
    let mut to_read = Vec::new();
    for f in tree.files {
        match reuse(inputs.previous, &f)? {
            Some(file) => {
                run.files_reused.fetch_add(1, Ordering::Relaxed);
                run.files_done.fetch_add(1, Ordering::Relaxed);
                run.bytes_done.fetch_add(f.size, Ordering::Relaxed);
                built.push(file);
            }
            None => to_read.push(f),
        }
    }

    let known = if to_read.is_empty() {
        HashMap::new()
    } else {
        Db::open_reader(inputs.db_path)?.load_chunks()?
    };
    let written = read_and_pack(inputs, run, &to_read, &known, &mut built)?;

    built.sort_by(|a, b| a.rel.cmp(&b.rel));
    let mut index = assemble(
        inputs.options.chunker,
        tree.dirs,
        built,
        &known,
        &written,
        inputs.packs,
    )?;
    index.info = info;
    if let Some(prev) = inputs.previous
        && prev.index.root.is_none()
        && prev.index.info == index.info
        && prev.index.chunker == index.chunker
        && prev.index.entries == index.entries
        && prev.index.chunks == index.chunks
        && prev.index.packs == index.packs
    {
        return Ok(Preparation::Unchanged);
    }
    let mut new_chunks: Vec<ChunkLocation> = written.chunks.into_values().collect();
    new_chunks.sort_by_key(|c| (c.pack, c.offset));
    Ok(Preparation::Changed(Box::new(Prepared {
        index,
        new_packs: written.packs,
        new_chunks,
        mass_delete_confirmed,
    })))
}

/// Sets the revision number and time, validates and encodes. Returns the encoded bytes and the
/// index identity (BLAKE3 of the body). CPU-bound.
pub(crate) fn finalize(
    index: &mut Index,
    revision: u64,
    created_unix: i64,
) -> Result<(Vec<u8>, Hash), BuildError> {
    index.revision = revision;
    index.created_unix = created_unix;
    index.validate()?;
    let encoded = hummel_core::index::encode(index);
    let hash = crate::revision::body_hash(&encoded)
        .ok_or_else(|| IndexError::Invalid("encoded index has no body".into()))?;
    Ok((encoded, hash))
}

/// A regular file found by the walk.
#[derive(Debug)]
struct WalkedFile {
    rel: RelPath,
    abs: PathBuf,
    size: u64,
    mode: u32,
    mtime_ns: i64,
    /// Reached through a symlink: stat its target.
    followed: bool,
}

/// What says a file did not change: size, mtime and identity.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: i64,
    id: Option<(u64, u64)>,
}

impl Stamp {
    fn of(md: &Metadata) -> Stamp {
        Stamp {
            size: md.len(),
            mtime_ns: mtime_ns_of(md),
            id: file_id(md),
        }
    }
}

/// (device, inode).
#[cfg(unix)]
fn file_id(md: &Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((md.dev(), md.ino()))
}

#[cfg(not(unix))]
fn file_id(_: &Metadata) -> Option<(u64, u64)> {
    None
}

/// A folder to list, with the identities of the folders from the root down to it.
struct PendingDir {
    abs: PathBuf,
    rel: PathBuf,
    depth: usize,
    ancestors: Vec<(u64, u64)>,
}

#[derive(Debug, Default)]
struct Tree {
    dirs: Vec<(RelPath, u32)>,
    files: Vec<WalkedFile>,
}

#[cfg(unix)]
fn mode_of(md: &Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    md.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn mode_of(md: &Metadata) -> u32 {
    match (md.is_dir(), md.permissions().readonly()) {
        (true, _) => 0o755,
        (false, false) => 0o644,
        (false, true) => 0o444,
    }
}

#[cfg(unix)]
fn mtime_ns_of(md: &Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    md.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(md.mtime_nsec())
}

#[cfg(not(unix))]
fn mtime_ns_of(md: &Metadata) -> i64 {
    md.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

/// Lists the tree below `repo` (canonical). `skip` is the master's data folder (canonical).
/// With `follow`, symlinks count as what they point to.
fn walk(
    repo: &Path,
    skip: Option<&Path>,
    follow: bool,
    run: &BuildRun,
) -> Result<Tree, BuildError> {
    let mut tree = Tree::default();
    let root = fs::metadata(repo).map_err(read_err(repo))?;
    let mut stack = vec![PendingDir {
        abs: repo.to_path_buf(),
        rel: PathBuf::new(),
        depth: 0,
        ancestors: file_id(&root).into_iter().collect(),
    }];
    while let Some(dir) = stack.pop() {
        let listing = fs::read_dir(&dir.abs).map_err(read_err(&dir.abs))?;
        for entry in listing {
            let entry = entry.map_err(read_err(&dir.abs))?;
            let name = entry.file_name();
            let abs = entry.path();
            let rel = dir.rel.join(&name);
            // Reserved at every depth: a client syncing the subtree above it keeps its state there.
            if name == RESERVED_TOP_NAME {
                run.warn(format!(
                    "skipped {}: the name {RESERVED_TOP_NAME} is reserved for client state",
                    rel.display()
                ));
                continue;
            }
            let kind = entry.file_type().map_err(read_err(&abs))?;
            let followed = kind.is_symlink();
            let md = if !followed {
                fs::symlink_metadata(&abs).map_err(read_err(&abs))?
            } else if !follow {
                run.warn(format!(
                    "skipped symlink {}: clients will delete it from their copies; use \
                     --follow-symlinks to publish its target",
                    rel.display()
                ));
                continue;
            } else {
                match fs::metadata(&abs) {
                    Ok(md) => md,
                    Err(e) => {
                        run.warn(format!(
                            "skipped symlink {}: its target cannot be read ({e}); clients will \
                             delete it from their copies",
                            rel.display()
                        ));
                        continue;
                    }
                }
            };
            if md.is_dir() {
                let target = if followed {
                    fs::canonicalize(&abs).ok()
                } else {
                    Some(abs.clone())
                };
                if skip.is_some() && target.as_deref() == skip {
                    run.warn(format!(
                        "skipped {}: the master's data folder",
                        rel.display()
                    ));
                    continue;
                }
                let id = file_id(&md);
                if let Some(id) = id
                    && dir.ancestors.contains(&id)
                {
                    run.warn(format!(
                        "skipped {}: it leads back to a folder above it (a symlink loop)",
                        rel.display()
                    ));
                    continue;
                }
                if dir.depth >= MAX_DEPTH {
                    return Err(BuildError::TooDeep { path: rel });
                }
                let path = RelPath::from_path(&rel)?;
                tree.dirs.push((path, mode_of(&md)));
                let mut ancestors = dir.ancestors.clone();
                ancestors.extend(id);
                stack.push(PendingDir {
                    abs,
                    rel,
                    depth: dir.depth + 1,
                    ancestors,
                });
            } else if md.is_file() {
                let path = RelPath::from_path(&rel)?;
                run.files_total.fetch_add(1, Ordering::Relaxed);
                run.bytes_total.fetch_add(md.len(), Ordering::Relaxed);
                tree.files.push(WalkedFile {
                    rel: path,
                    abs,
                    size: md.len(),
                    mode: mode_of(&md),
                    mtime_ns: mtime_ns_of(&md),
                    followed,
                });
            } else {
                run.warn(format!("skipped special file {}", rel.display()));
            }
        }
    }
    Ok(tree)
}

/// Warns about every name of `tree` that some clients' file systems cannot hold
/// ([`hummel_core::portable`]): names Windows refuses, names of one folder that differ only in
/// case, paths over 260 characters. They are published all the same (Linux clients sync them);
/// a client that cannot hold one refuses the sync, naming it.
fn warn_unportable(tree: &Tree, run: &BuildRun) {
    use hummel_core::portable::{case_collisions, long_for_windows, windows_problems};
    let mut paths: Vec<&RelPath> = tree
        .dirs
        .iter()
        .map(|(p, _)| p)
        .chain(tree.files.iter().map(|f| &f.rel))
        .collect();
    paths.sort_unstable();
    for (path, why) in windows_problems(paths.iter().copied()) {
        run.warn(format!(
            "{path}: {why}; Windows clients refuse to sync until it is renamed"
        ));
    }
    for (a, b) in case_collisions(paths.iter().copied()) {
        run.warn(format!(
            "{a} and {b} differ only in case; clients on Windows and macOS refuse to sync \
             until one is renamed"
        ));
    }
    for path in long_for_windows(paths.iter().copied()) {
        run.warn(format!(
            "{path}: longer than 260 characters; Windows clients sync it, but Explorer and \
             many games cannot open it"
        ));
    }
}

/// A file of the new revision.
#[derive(Debug)]
struct BuiltFile {
    rel: RelPath,
    size: u64,
    mode: u32,
    mtime_ns: i64,
    hash: Hash,
    chunks: FileChunks,
}

#[derive(Debug)]
enum FileChunks {
    /// Taken from the previous revision.
    Located(Vec<ChunkLocation>),
    /// Just chunked; located through the chunk table or this build's packs.
    Hashes(Vec<Hash>),
}

/// The previous revision's entry for `f` when path, size and mtime match (mode may change).
fn reuse(
    previous: Option<&LoadedRevision>,
    f: &WalkedFile,
) -> Result<Option<BuiltFile>, BuildError> {
    let Some(prev) = previous else {
        return Ok(None);
    };
    let Some(Entry {
        kind: EntryKind::File(old),
        ..
    }) = prev.index.get(&f.rel)
    else {
        return Ok(None);
    };
    if old.size != f.size || old.mtime_ns != f.mtime_ns {
        return Ok(None);
    }
    // "Racily clean": modified around the time the previous build ran, the file may have
    // changed after it was read without its mtime changing (coarse timestamps). Read it again.
    let trusted_before = prev
        .row
        .build_started_unix
        .saturating_sub(RACY_MARGIN_SECS)
        .saturating_mul(1_000_000_000);
    if old.mtime_ns >= trusted_before {
        return Ok(None);
    }
    let chunks = old
        .chunks
        .iter()
        .map(|&ci| {
            prev.index
                .chunks
                .get(ci as usize)
                .copied()
                .ok_or(BuildError::MissingChunk(old.hash))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(BuiltFile {
        rel: f.rel.clone(),
        size: old.size,
        mode: f.mode,
        mtime_ns: f.mtime_ns,
        hash: old.hash,
        chunks: FileChunks::Located(chunks),
    }))
}

/// A compressed chunk on its way to the pack writer.
pub(crate) struct StoredChunk {
    pub hash: Hash,
    pub codec: Codec,
    pub stored: Vec<u8>,
    pub len: u32,
}

/// Packs sealed by this build (or repack).
#[derive(Debug, Default)]
pub(crate) struct Written {
    pub packs: Vec<PackInfo>,
    pub chunks: HashMap<Hash, ChunkLocation>,
}

/// Chunks `files` in parallel, storing new chunks through one pack-writer thread. Appends the
/// results to `built`.
fn read_and_pack(
    inputs: &BuildInputs<'_>,
    run: &BuildRun,
    files: &[WalkedFile],
    known: &HashMap<Hash, ChunkLocation>,
    built: &mut Vec<BuiltFile>,
) -> Result<Written, BuildError> {
    if files.is_empty() {
        return Ok(Written::default());
    }
    let claimed = Mutex::new(HashSet::new());
    let (tx, rx) = sync_channel::<StoredChunk>(CHANNEL_DEPTH);
    let (read, written) = std::thread::scope(|scope| {
        let writer = std::thread::Builder::new()
            .name("hummel-pack-writer".into())
            .spawn_scoped(scope, || {
                write_packs(
                    rx,
                    inputs.store,
                    inputs.next_pack_number,
                    inputs.options.pack_target,
                    &run.packs_written,
                )
            });
        let writer = match writer {
            Ok(w) => w,
            Err(e) => return (Err(BuildError::PackWrite(e)), Ok(Written::default())),
        };
        let sink = ChunkSink {
            chunker: inputs.options.chunker,
            level: inputs.options.zstd_level,
            known,
            claimed: &claimed,
            tx: &tx,
            run,
        };
        let read: Result<Vec<BuiltFile>, BuildError> =
            files.par_iter().map(|f| sink.read_file(f)).collect();
        drop(tx);
        let written = writer.join().unwrap_or(Err(BuildError::Panicked));
        (read, written)
    });
    match (read, written) {
        (Ok(files), Ok(written)) => {
            built.extend(files);
            Ok(written)
        }
        // The writer's own error explains why the readers saw it stop.
        (Err(BuildError::WriterStopped), Err(e)) => Err(e),
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, ChunkCompressor)>> = const { RefCell::new(None) };
}

/// Compresses with this thread's compressor (created on first use).
fn compress(level: i32, data: &[u8]) -> io::Result<(Codec, Vec<u8>)> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match &mut *slot {
            Some((l, c)) if *l == level => c,
            other => &mut other.insert((level, ChunkCompressor::new(level)?)).1,
        };
        Ok(compressor.compress(data))
    })
}

/// Why chunking one file stopped.
#[derive(Debug)]
enum SinkError {
    Io(io::Error),
    Compressor(io::Error),
    WriterStopped,
    Stopped,
}

impl From<io::Error> for SinkError {
    fn from(e: io::Error) -> Self {
        SinkError::Io(e)
    }
}

/// Shared by the chunking tasks.
struct ChunkSink<'a> {
    chunker: ChunkerConfig,
    level: i32,
    known: &'a HashMap<Hash, ChunkLocation>,
    claimed: &'a Mutex<HashSet<Hash>>,
    tx: &'a SyncSender<StoredChunk>,
    run: &'a BuildRun,
}

impl ChunkSink<'_> {
    /// Reads `f` until two stats around a read agree with each other and with the bytes read.
    fn read_file(&self, f: &WalkedFile) -> Result<BuiltFile, BuildError> {
        for attempt in 1..=READ_ATTEMPTS {
            self.run.check_cancelled()?;
            if let Some(built) = self.read_once(f)? {
                self.run.files_done.fetch_add(1, Ordering::Relaxed);
                return Ok(built);
            }
            tracing::debug!(build = self.run.id, path = %f.rel, attempt, "file changed while read");
        }
        Err(BuildError::KeptChanging {
            path: f.rel.clone(),
            attempts: READ_ATTEMPTS,
        })
    }

    /// One read of `f`; `None` when it changed meanwhile. Chunks already sent stay stored
    /// (unreferenced unless another file has them).
    fn read_once(&self, f: &WalkedFile) -> Result<Option<BuiltFile>, BuildError> {
        let stat = |p: &Path| {
            if f.followed {
                fs::metadata(p)
            } else {
                fs::symlink_metadata(p)
            }
        };
        let before = stat(&f.abs).map_err(read_err(&f.abs))?;
        if !before.is_file() {
            return Ok(None);
        }
        let file = File::open(&f.abs).map_err(read_err(&f.abs))?;
        // Replaced between the stat and the open?
        let opened = file.metadata().map_err(read_err(&f.abs))?;
        let mut hashes = Vec::new();
        let mut read = 0u64;
        // One byte more than the stat said tells a growing file, and a file growing faster
        // than it is read cannot keep the build reading.
        let bounded = io::Read::take(file, before.len().saturating_add(1));
        let digest = chunk_stream::<_, SinkError, _>(&self.chunker, bounded, |c| {
            if self.run.check_cancelled().is_err() {
                return Err(SinkError::Stopped);
            }
            let n = c.data.len() as u64;
            read += n;
            self.run.bytes_done.fetch_add(n, Ordering::Relaxed);
            hashes.push(c.hash);
            if self.known.contains_key(&c.hash) || !lock(self.claimed).insert(c.hash) {
                return Ok(());
            }
            let len = u32::try_from(c.data.len())
                .map_err(|_| SinkError::Io(io::Error::other("chunk larger than 4 GiB")))?;
            let (codec, stored) = compress(self.level, c.data).map_err(SinkError::Compressor)?;
            self.tx
                .send(StoredChunk {
                    hash: c.hash,
                    codec,
                    stored,
                    len,
                })
                .map_err(|_| SinkError::WriterStopped)
        })
        .map_err(|e| match e {
            SinkError::Io(source) => BuildError::Read {
                path: f.abs.clone(),
                source,
            },
            SinkError::Compressor(e) => BuildError::Compressor(e),
            SinkError::WriterStopped => BuildError::WriterStopped,
            SinkError::Stopped => BuildError::Stopped,
        })?;
        #[cfg(test)]
        read_hook::after_read(&f.abs);
        let after = stat(&f.abs).map_err(read_err(&f.abs))?;
        let stamp = Stamp::of(&before);
        if Stamp::of(&opened) != stamp || Stamp::of(&after) != stamp || digest.size != stamp.size {
            self.run.bytes_done.fetch_sub(read, Ordering::Relaxed);
            return Ok(None);
        }
        Ok(Some(BuiltFile {
            rel: f.rel.clone(),
            size: digest.size,
            mode: mode_of(&before),
            mtime_ns: stamp.mtime_ns,
            hash: digest.hash,
            chunks: FileChunks::Hashes(hashes),
        }))
    }
}

/// A pack being written to a store temp file.
struct OpenPack {
    writer: PackWriter<BufWriter<File>>,
    path: PathBuf,
}

/// The pack-writer thread: appends stored chunks, seals packs at `target` bytes, numbered from
/// `first_number`, and counts them in `packs_written`. Also the repack's writer.
pub(crate) fn write_packs(
    rx: Receiver<StoredChunk>,
    store: &BlobStore,
    first_number: u32,
    target: u64,
    packs_written: &AtomicU64,
) -> Result<Written, BuildError> {
    // Sealing a pack (table of contents, re-hash, fsync, rename) takes tens of milliseconds;
    // done inline it would stall every compressing thread behind the full channel. A sealer
    // thread takes full packs while this one fills the next.
    let (seal_tx, seal_rx) = sync_channel::<(OpenPack, u32)>(2);
    std::thread::scope(|scope| {
        let sealer = std::thread::Builder::new()
            .name("hummel-pack-sealer".into())
            .spawn_scoped(scope, || {
                let mut out = Written::default();
                let mut failed = None;
                for (pack, number) in seal_rx {
                    if failed.is_some() {
                        let _ = fs::remove_file(&pack.path);
                        continue;
                    }
                    match seal(pack, number, store, &mut out) {
                        Ok(()) => {
                            packs_written.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failed = Some(e),
                    }
                }
                match failed {
                    Some(e) => Err(e),
                    None => Ok(out),
                }
            })
            .map_err(BuildError::PackWrite)?;
        let mut open: Option<OpenPack> = None;
        let mut next = first_number;
        let filled = (|| {
            for chunk in rx {
                let pack = match &mut open {
                    Some(p) => p,
                    empty => {
                        let temp = store.temp()?;
                        let writer = PackWriter::new(BufWriter::with_capacity(1 << 20, temp.file))
                            .map_err(BuildError::PackWrite)?;
                        empty.insert(OpenPack {
                            writer,
                            path: temp.path,
                        })
                    }
                };
                pack.writer
                    .add(chunk.hash, chunk.codec, &chunk.stored, chunk.len)
                    .map_err(BuildError::PackWrite)?;
                if pack.writer.len() >= target
                    && let Some(full) = open.take()
                {
                    let number = next;
                    next = next.checked_add(1).ok_or(BuildError::PackNumbers)?;
                    seal_tx
                        .send((full, number))
                        .map_err(|_| BuildError::WriterStopped)?;
                }
            }
            if let Some(last) = open.take() {
                seal_tx
                    .send((last, next))
                    .map_err(|_| BuildError::WriterStopped)?;
            }
            Ok(())
        })();
        drop(seal_tx);
        if let Some(p) = open {
            let _ = fs::remove_file(&p.path);
        }
        let sealed = sealer.join().unwrap_or(Err(BuildError::Panicked));
        match (filled, sealed) {
            (Ok(()), Ok(out)) => Ok(out),
            // The sealer's own error explains why the writer saw it stop.
            (Err(BuildError::WriterStopped), Err(e)) => Err(e),
            (Err(e), _) | (Ok(()), Err(e)) => Err(e),
        }
    })
}

/// Finishes a pack and commits it to the store as pack `number`.
fn seal(
    pack: OpenPack,
    number: u32,
    store: &BlobStore,
    out: &mut Written,
) -> Result<(), BuildError> {
    let path = pack.path;
    let finished = match pack.writer.finish() {
        Ok(f) => f,
        Err(e) => {
            let _ = fs::remove_file(&path);
            return Err(BuildError::PackWrite(e));
        }
    };
    let file = match finished.writer.into_inner() {
        Ok(f) => f,
        Err(e) => {
            let _ = fs::remove_file(&path);
            return Err(BuildError::PackWrite(e.into_error()));
        }
    };
    store.commit(TempBlob { file, path }, &finished.hash)?;
    tracing::debug!(pack = number, hash = %finished.hash.short(), size = finished.size, "sealed pack");
    for e in finished.entries {
        out.chunks.insert(
            e.hash,
            ChunkLocation {
                hash: e.hash,
                pack: number,
                offset: e.offset,
                stored_len: e.stored_len,
                len: e.len,
                codec: e.codec,
            },
        );
    }
    out.packs.push(PackInfo {
        number,
        hash: finished.hash,
        size: finished.size,
    });
    Ok(())
}

/// Builds the index: entries sorted by path, chunk table in first-use order, packs by number.
fn assemble(
    chunker: ChunkerConfig,
    dirs: Vec<(RelPath, u32)>,
    files: Vec<BuiltFile>,
    known: &HashMap<Hash, ChunkLocation>,
    written: &Written,
    packs: &HashMap<u32, PackInfo>,
) -> Result<Index, BuildError> {
    let mut chunks: Vec<ChunkLocation> = Vec::new();
    let mut positions: HashMap<Hash, u32> = HashMap::new();
    let mut position_of = |loc: ChunkLocation| -> u32 {
        *positions.entry(loc.hash).or_insert_with(|| {
            chunks.push(loc);
            (chunks.len() - 1) as u32
        })
    };
    let mut entries = Vec::with_capacity(dirs.len() + files.len());
    for f in files {
        let list = match f.chunks {
            FileChunks::Located(locs) => locs.into_iter().map(&mut position_of).collect(),
            FileChunks::Hashes(hashes) => hashes
                .into_iter()
                .map(|h| {
                    written
                        .chunks
                        .get(&h)
                        .or_else(|| known.get(&h))
                        .copied()
                        .map(&mut position_of)
                        .ok_or(BuildError::MissingChunk(h))
                })
                .collect::<Result<Vec<u32>, _>>()?,
        };
        entries.push(Entry {
            path: f.rel,
            kind: EntryKind::File(FileEntry {
                size: f.size,
                mode: f.mode,
                mtime_ns: f.mtime_ns,
                hash: f.hash,
                chunks: list,
            }),
        });
    }
    entries.extend(dirs.into_iter().map(|(path, mode)| Entry {
        path,
        kind: EntryKind::Dir(DirEntry { mode }),
    }));
    entries.sort_by(|a, b| a.path.as_str().cmp(b.path.as_str()));

    let used: BTreeSet<u32> = chunks.iter().map(|c| c.pack).collect();
    let new_packs: HashMap<u32, PackInfo> = written.packs.iter().map(|p| (p.number, *p)).collect();
    let pack_table = used
        .into_iter()
        .map(|n| {
            new_packs
                .get(&n)
                .or_else(|| packs.get(&n))
                .copied()
                .ok_or(BuildError::MissingPack(n))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Index {
        revision: 0,
        created_unix: 0,
        chunker,
        root: None,
        entries,
        chunks,
        packs: pack_table,
        info: Default::default(),
    })
}

/// Tests change a file at the moment the build has read it.
#[cfg(test)]
pub(crate) mod read_hook {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    type Hook = Box<dyn FnMut() + Send>;

    static HOOKS: Mutex<Vec<(PathBuf, Hook)>> = Mutex::new(Vec::new());

    /// Runs `hook` each time a build has read `path` (as the walk names it: below the
    /// canonical repository folder), before its second stat.
    pub(crate) fn on_read(path: PathBuf, hook: Hook) {
        crate::lock(&HOOKS).push((path, hook));
    }

    pub(super) fn after_read(path: &Path) {
        for (p, hook) in crate::lock(&HOOKS).iter_mut() {
            if p == path {
                hook();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An index of files `name → size` (no chunks: the guard looks at paths and sizes only).
    fn index(revision: u64, files: &[(&str, u64)]) -> Index {
        let entries = files
            .iter()
            .map(|&(name, size)| Entry {
                path: RelPath::new(name).unwrap(),
                kind: EntryKind::File(FileEntry {
                    size,
                    mode: 0o644,
                    mtime_ns: 0,
                    hash: Hash([0; 32]),
                    chunks: Vec::new(),
                }),
            })
            .collect();
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

    fn walked(files: &[(&str, u64)]) -> Vec<(RelPath, u64)> {
        files
            .iter()
            .map(|&(n, s)| (RelPath::new(n).unwrap(), s))
            .collect()
    }

    fn check(
        previous: Option<&Index>,
        now: &[(&str, u64)],
        missing: bool,
    ) -> Result<(), MassDelete> {
        let now = walked(now);
        check_mass_delete(
            Path::new("/srv/mods"),
            previous,
            now.iter().map(|(p, s)| (p, *s)),
            missing,
        )
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("f{i}")).collect()
    }

    #[test]
    fn an_empty_or_missing_folder_is_refused_over_a_revision_with_files() {
        let names = names(201);
        let files: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 10)).collect();
        let prev = index(20_261_202_014_530, &files);
        let empty = check(Some(&prev), &[], false).unwrap_err();
        assert_eq!(
            (empty.folder, empty.files_removed, empty.files_before),
            (Folder::Empty, 201, 201)
        );
        let line = empty.to_string();
        assert!(
            line.starts_with(
                "refusing to publish: the repository folder /srv/mods holds no files, so the \
                 build removes 201 of 201 files (100%) and 2.0 KiB of 2.0 KiB (100%) of \
                 revision 20261202014530; is the repository folder mounted and complete? \
                 Re-run with `hummel build --allow-mass-delete`"
            ),
            "{line}"
        );
        assert!(!line.contains('\n'));
        let missing = check(Some(&prev), &[], true).unwrap_err();
        assert_eq!(missing.folder, Folder::Missing);
        assert!(
            missing.to_string().contains("/srv/mods is missing"),
            "{missing}"
        );
        // A revision without files loses nothing.
        assert_eq!(check(Some(&index(5, &[])), &[], false), Ok(()));
    }

    #[test]
    fn the_first_build_of_an_empty_folder_is_refused() {
        let refusal = check(None, &[], false).unwrap_err();
        let line = refusal.to_string();
        assert!(line.contains("no revision is published yet"), "{line}");
        assert!(line.contains("nothing to publish"), "{line}");
        assert!(line.contains("--allow-mass-delete"), "{line}");
        assert_eq!(check(None, &[("a", 1)], false), Ok(()));
    }

    #[test]
    fn removing_more_than_half_of_the_files_or_bytes_is_refused() {
        let names = names(10);
        let files: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 100)).collect();
        let prev = index(7, &files);
        // Half the files go: allowed; six of ten: refused.
        assert_eq!(check(Some(&prev), &files[5..], false), Ok(()));
        let r = check(Some(&prev), &files[6..], false).unwrap_err();
        assert_eq!(
            (r.folder, r.files_removed, r.bytes_removed),
            (Folder::Shrunk, 6, 600)
        );
        assert!(
            r.to_string()
                .starts_with("refusing to publish: the build removes 6 of 10 files (60%)"),
            "{r}"
        );
        // New files elsewhere do not make up for the loss.
        let mut renamed: Vec<(&str, u64)> = files[6..].to_vec();
        renamed.extend([
            ("g0", 100),
            ("g1", 100),
            ("g2", 100),
            ("g3", 100),
            ("g4", 100),
        ]);
        assert!(check(Some(&prev), &renamed, false).is_err());
        // One big file truncated: few files, most bytes.
        let big = index(7, &[("big", 1000), ("a", 1), ("b", 1)]);
        let r = check(Some(&big), &[("big", 100), ("a", 1), ("b", 1)], false).unwrap_err();
        assert_eq!((r.files_removed, r.bytes_removed), (0, 900));
        // Two of three files gone is refused, even when the bytes grow.
        assert_eq!(
            check(Some(&big), &[("big", 5000), ("c", 1)], false),
            Err(MassDelete {
                repo: "/srv/mods".into(),
                folder: Folder::Shrunk,
                revision: Some(7),
                files_before: 3,
                files_removed: 2,
                bytes_before: 1002,
                bytes_removed: 2,
            })
        );
        // Growing and adding is never refused.
        assert_eq!(
            check(
                Some(&big),
                &[("big", 5000), ("a", 1), ("b", 0), ("c", 1)],
                false
            ),
            Ok(())
        );
    }
}
